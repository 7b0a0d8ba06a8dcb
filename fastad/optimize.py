"""Hessian-free Newton-Krylov optimization on one recorded tape.

The notes: Newton's method solves H p = -g with a Krylov method that only
needs products H v, and forward-over-reverse gives H v for about the cost of
a few gradients, so H is never formed.  Here the objective is recorded once
and replayed at every iterate (re-recorded when a recorded branch changes);
at an iterate the tape is replayed once (`Tape.at`) and every CG step is one
second-order sweep.

    fad.minimize(f, x0)          trust-region Newton with Steihaug-Toint CG
    fad.root(F, x0)              Jacobian-free Newton-Krylov (GMRES on J v)
    fad.optimize.objective(f, x0) -> (fun, jac, hessp) for scipy.optimize
"""
import numpy as np

from fastad._kernels import SparseMatvec, cg_direction, cg_step
from fastad._nested import has_traced
from fastad._var import current_tape
from fastad.errors import BranchChangedError, TapeError
from fastad.sparse import HessianPlan, tape_hessian_plan
from fastad.transforms import record

__all__ = ["minimize", "root", "objective", "OptimizeResult"]


class OptimizeResult(dict):
    """The result: .x .fun .jac .nit .nfev .nhvp .success .message (a dict too)."""

    __getattr__ = dict.__getitem__

    def __repr__(self):
        keys = ("success", "message", "fun", "nit", "nfev", "nhvp", "x")
        return "OptimizeResult(\n" + "".join(
            f"  {k}={self[k]!r},\n" for k in keys if k in self) + ")"


def _start(x0, who):
    """x0 as a float64 array; traced values of a transform running now are refused."""
    if has_traced(x0):
        raise TypeError(f"fastad.{who}: x0 holds values traced by the enclosing "
                        f"{_NOT_THROUGH}")
    return np.array(x0, dtype=np.float64)


_NOT_THROUGH = ("transform (fad.grad, jvp, ...): fastad does not differentiate through "
                "an iterative solve, whose result is the end of its iterations, not a "
                "recorded computation. Solve with plain numbers (.value), so the "
                "solution is a constant to the transform, or differentiate the "
                "solution implicitly (at a root x*(a) of F: dx*/da = -(dF/dx)^-1 dF/da; "
                "at a minimizer, F is the gradient)")


def _own_tape(f, x, who):
    """record(f, x) for a solver, which runs f on a tape of its own."""
    try:
        return record(f, x)
    except TapeError as e:
        # (the enclosing transform's tape is current again once record is done)
        if isinstance(e, BranchChangedError) or current_tape() is None:
            raise
        raise TapeError(f"fastad.{who}: f uses values traced by the enclosing "
                        f"{_NOT_THROUGH}") from e


class _Recorded:
    """f on one tape, re-recorded where a replay takes another branch."""

    def __init__(self, f, x0, who):
        self.f = f
        self.shape = np.shape(x0)
        self.who = who
        self.tape = _own_tape(f, _start(x0, who), who)
        if self.tape.n_outputs != 1 or self.tape.out_shape != ():
            raise ValueError("fastad.minimize needs f to return a scalar")
        self.retraces = 0

    def point(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(self.shape)
        try:
            return self.tape.at(x)
        except BranchChangedError:
            self.tape = _own_tape(self.f, x, self.who)
            self.retraces += 1
            return self.tape.at(x)


def objective(f, x0, hessian="auto"):
    """(fun, jac, hessp) for scipy.optimize.minimize, backed by one replayed tape.

    fun(x) -> float, jac(x) -> ndarray, hessp(x, p) -> ndarray; the replay at
    the most recent x is shared, so fun and jac at the same x cost one replay.
    hessian as in minimize: "hvp" gives each product by forward-over-reverse,
    "sparse" from a sparse Hessian formed once per x by star coloring,
    "auto" picks "sparse" when the pattern needs few colors."""
    rec = _Recorded(f, x0, "optimize.objective")
    mode = _hessian_mode(hessian, rec)
    cache = {}

    def at(x):
        key = np.asarray(x, dtype=np.float64).tobytes()
        if cache.get("key") != key:
            cache["key"], cache["point"], cache["H"] = key, rec.point(x), None
        return cache["point"]

    def fun(x):
        return float(at(x).value)

    def jac(x):
        return np.asarray(at(x).gradient()).reshape(-1)

    def hessp(x, p):
        point = at(x)
        if mode == "sparse":
            if cache["H"] is None:
                cache["H"] = _sparse_hessian_at(point)
            return cache["H"][0].matvec(cache["H"][1], np.reshape(p, -1))
        return np.asarray(point.hvp(np.reshape(p, rec.shape))).reshape(-1)
    return fun, jac, hessp


def _steihaug(hvp, g, radius, tol, maxiter):
    """Steihaug-Toint truncated CG for min q(p) = g.p + p.Hp/2 within |p| <= radius.

    Returns (p, predicted decrease -q(p), hit the boundary, products used).
    |z|^2, z.d and |d|^2 follow CG's recurrences (Conn, Gould and Toint,
    sec. 7.5.1) and q its decrease of alpha |r|^2 / 2 per step, so a step
    costs the product, two dot products and three vector updates (two
    compiled passes, fastad._kernels.cg_step and cg_direction: at n = 1,000
    NumPy's four passes and two temporaries cost more than the product)."""
    z = np.zeros(g.size)
    r = np.array(g, dtype=np.float64).reshape(-1)
    d = -r
    rr = float(r @ r)
    zz = zd = 0.0
    dd = rr
    q = 0.0                                # the model's value at z
    r2, tol2 = radius * radius, tol * tol
    for j in range(maxiter):
        Hd = np.ascontiguousarray(hvp(d), dtype=np.float64).reshape(-1)
        dHd = float(d @ Hd)
        if dHd > 0:
            alpha = rr / dHd
            if zz + alpha * (2 * zd + alpha * dd) < r2:
                rr_next = cg_step(z, r, d, Hd, alpha)      # z += alpha d, r += alpha Hd
                q -= 0.5 * alpha * rr
                if rr_next < tol2:
                    return z, -q, False, j + 1
                zz += alpha * (2 * zd + alpha * dd)
                beta = rr_next / rr
                zd = beta * (zd + alpha * dd)
                dd = rr_next + beta * beta * dd
                cg_direction(d, r, beta)                   # d = beta d - r
                rr = rr_next
                continue
        # negative curvature, or the step leaves the region: go to its edge
        tau = (-zd + np.sqrt(max(zd * zd + dd * (r2 - zz), 0.0))) / dd
        z += tau * d
        return z, -(q - tau * rr + 0.5 * tau * tau * dHd), True, j + 1
    return z, -q, False, maxiter


def _tridiagonal_tr(alpha, beta, gnorm, radius):
    """min gnorm e1.h + h.T h/2 over |h| <= radius, T tridiagonal (alpha, beta):
    the trust-region problem in the Lanczos basis, by eigen-decomposition and
    bisection on the secular equation (Moré-Sorensen; hard case handled).
    Returns (h, lambda)."""
    m = len(alpha)
    T = np.diag(alpha) + np.diag(beta[:m - 1], 1) + np.diag(beta[:m - 1], -1)
    w, V = np.linalg.eigh(T)
    c = gnorm * V[0]                       # V.T (gnorm e1)

    def h_of(lam):
        return -(V @ (c / (w + lam)))
    lo = max(0.0, -w[0])
    if w[0] > 0:
        h = h_of(0.0)
        if np.linalg.norm(h) <= radius:
            return h, 0.0                  # interior: the Newton step in the subspace
    with np.errstate(divide="ignore", invalid="ignore"):
        h_lo = h_of(lo * (1 + 1e-12) + 1e-300)
    if not np.all(np.isfinite(h_lo)) or np.linalg.norm(h_lo) > radius:
        hi = lo + np.linalg.norm(c) / radius + abs(w[-1]) + 1.0
        lo_b = lo
        for _ in range(200):               # |h(lam)| decreases for lam > -w_min
            mid = 0.5 * (lo_b + hi)
            if np.linalg.norm(h_of(mid)) > radius:
                lo_b = mid
            else:
                hi = mid
            if hi - lo_b <= 1e-14 * max(1.0, hi):
                break
        return h_of(hi), hi
    # hard case: move along the lowest eigenvector to the boundary
    v = V[:, 0]
    a, b2, cc = v @ v, 2 * (h_lo @ v), h_lo @ h_lo - radius * radius
    tau = (-b2 + np.sqrt(max(b2 * b2 - 4 * a * cc, 0.0))) / (2 * a)
    return h_lo + tau * v, lo


def _gltr(hvp, g, radius, tol, maxiter):
    """Generalized Lanczos trust region (Gould et al.): the trust-region step
    minimised over the Krylov subspace, also on the boundary (where
    Steihaug-CG stops at its first crossing).  Returns (p, predicted
    decrease, on the boundary, products used)."""
    n = g.size
    gnorm = np.linalg.norm(g)
    m = max(1, min(maxiter, n))
    Q = np.empty((m + 1, n))
    alpha, beta = np.zeros(m), np.zeros(m + 1)
    Q[0] = g / gnorm
    h, lam, j = None, 0.0, 0
    for j in range(m):
        v = hvp(Q[j])
        alpha[j] = Q[j] @ v
        v -= alpha[j] * Q[j]
        if j:
            v -= beta[j] * Q[j - 1]
        v -= Q[:j + 1].T @ (Q[:j + 1] @ v)     # full reorthogonalisation (j is small)
        beta[j + 1] = np.linalg.norm(v)
        h, lam = _tridiagonal_tr(alpha[:j + 1], beta[1:j + 2], gnorm, radius)
        if beta[j + 1] * abs(h[-1]) <= tol or beta[j + 1] <= 1e-14 * gnorm:
            break
        Q[j + 1] = v / beta[j + 1]
    k = len(h)
    T = np.diag(alpha[:k]) + np.diag(beta[1:k], 1) + np.diag(beta[1:k], -1)
    predicted = -(gnorm * h[0] + 0.5 * h @ (T @ h))
    return Q[:k].T @ h, predicted, lam > 0, j + 1


# "auto" forms the Hessian by coloring when its pattern needs at most this
# many colors: one k-direction sweep then costs about as much as two or three
# Hessian-vector products, and CG's products become sparse matrix-vector
# products (measured on the extended Rosenbrock: benchmarks/bench_optimize.py).
SPARSE_HESSIAN_MAX_COLORS = 8


def _hessian_mode(hessian, rec):
    if hessian not in ("auto", "hvp", "sparse"):
        raise ValueError(f"fastad.minimize: hessian must be 'auto', 'hvp' or 'sparse', "
                         f"got {hessian!r}")
    if hessian != "auto":
        return hessian
    try:
        import scipy.sparse  # noqa: F401 - the sparse path returns scipy matrices
    except ImportError:
        return "hvp"
    tape = rec.tape
    if tape.n_inputs < 64:
        return "hvp"
    cache = tape.sparse_cache if tape.sparse_cache is not None else {}
    tape.sparse_cache = cache
    if "hessian_plan" not in cache:
        cache["hessian_plan"] = HessianPlan(tape)
    return "sparse" if cache["hessian_plan"].n_colors <= SPARSE_HESSIAN_MAX_COLORS else "hvp"


def _sparse_hessian_at(point, gradient=False):
    """(SparseMatvec, nonzeros): the Hessian at a TapePoint by its tape's
    star coloring (one sweep with a direction per color), multiplied by CG
    without a scipy matrix (the plan's pattern is checked once and kept).
    With gradient, ((SparseMatvec, nonzeros), gradient) from that one sweep."""
    tape = point.tape
    plan = tape_hessian_plan(tape, "colored")
    mv = getattr(plan, "_matvec", None)
    if mv is None:
        mv = plan._matvec = SparseMatvec(plan.indptr, plan.indices, plan.shape)
    if not gradient:
        return mv, plan.values_at(tape, None, point)
    if plan.n_colors == 0:
        return (mv, np.zeros(plan.indices.size)), point.gradient()
    seeds = plan.seeds.reshape((plan.n_colors,) + tuple(tape.in_shape or ()))
    g, data = point._gradient_hvp_gather(seeds, plan.src)
    return (mv, data), g


# The CG forcing term's cap and the radius's shrink factor after a poor step,
# measured on the chained Rosenbrock from (-1.2, 1, ...) (its iterations grow
# linearly with n; benchmarks/bench_minimize.py).  The textbook
# min(0.5, sqrt|g|) with a shrink of 0.25 took 4,100 iterations and 18,500
# products at n = 1,000; a cap of 0.1 and a shrink of 0.5 take about 1,830
# and 16,000 (a tighter inner solve gives longer, better steps; a milder
# shrink loses less ground after a rejected one), against scipy
# trust-krylov's 2,750 and 20,400.  With a sparse Hessian a product costs
# 1/30 of forming H, so fewer iterations win over fewer products.  For the
# first EARLY_ITERATIONS the cap stays 0.5: a tight solve far from the
# minimizer sent n = 10 to 16 into the chain's local minimum near x_1 = -1
# (where the textbook setting and trust-krylov reach all ones).
FORCING_CAP = 0.1
EARLY_FORCING_CAP = 0.5
EARLY_ITERATIONS = 10
SHRINK = 0.5


def minimize(f, x0, method="newton-krylov", gtol=1e-8, maxiter=1000, callback=None,
             verbose=False, initial_radius=1.0, max_radius=1e6, eta=0.15, max_cg=None,
             cg_rtol=None, subproblem="steihaug", hessian="auto"):
    """Minimize scalar f by trust-region Newton with Steihaug-Toint CG on H v.

    H is never formed: each CG step is one Hessian-vector product from the
    tape (forward-over-reverse), replayed at the iterate.  Stops when the
    gradient's max-norm is below gtol.  CG stops at a relative residual of
    cg_rtol (default min(0.1, sqrt|g|), 0.5 in place of 0.1 for the first
    10 iterations: a forcing term for superlinear convergence, capped low
    because each iteration costs a replay, a gradient and, with
    hessian="sparse", a Hessian, while a CG step is cheap; see FORCING_CAP).
    subproblem="gltr" solves each trust-region
    step over the whole Krylov subspace (Lanczos), also on the boundary: fewer
    iterations, more products per iteration (slower on the extended
    Rosenbrock here).

    hessian="hvp" is the Hessian-free method: every CG product is one
    forward-over-reverse sweep.  hessian="sparse" forms H at each iterate by
    star coloring (fad.sparse_hessian: one sweep with a direction per color)
    and CG multiplies with that sparse matrix.  "auto" (default) takes
    "sparse" when the pattern, found once on the tape, needs at most
    SPARSE_HESSIAN_MAX_COLORS colors and SciPy is installed.  nhvp counts
    products either way; nhess counts sparse Hessians formed.

    Returns an OptimizeResult with x, fun, jac, nit, nfev, nhvp, nhess,
    success, message (and retraces: how often a changed branch made it
    record f again)."""
    if subproblem not in ("gltr", "steihaug"):
        raise ValueError(f"fastad.minimize: subproblem must be 'gltr' or 'steihaug', got {subproblem!r}")
    if method != "newton-krylov":
        raise ValueError(f"fastad.minimize: unknown method {method!r} (use 'newton-krylov', "
                         f"or fad.optimize.objective with scipy.optimize.minimize)")
    x = _start(x0, "minimize")
    shape = x.shape
    rec = _Recorded(f, x, "minimize")
    mode = _hessian_mode(hessian, rec)
    nhess, H, H_at = 0, None, None
    # on a tape of blocks the Hessian's sweep carries the adjoints anyway, so
    # an accepted point's gradient comes with its Hessian (on scalar nodes a
    # separate gradient costs the same and is not wasted on the last point)
    fused = mode == "sparse" and bool(rec.tape.blocks)
    n = x.size
    max_cg = max_cg or max(10, min(n, 500))
    pt = rec.point(x)
    fval, g = float(pt.value), np.asarray(pt.gradient(), dtype=np.float64).reshape(-1)
    nfev, nhvp, radius = 1, 0, float(initial_radius)
    message, success, it = "maximum number of iterations reached", False, 0
    if verbose:
        print(f"{'iter':>5} {'f':>14} {'|g|_inf':>10} {'radius':>10} {'cg':>4}")
    for it in range(1, maxiter + 1):
        gmax = np.max(np.abs(g)) if n else 0.0
        if gmax <= gtol:
            message, success, it = "gradient below gtol", True, it - 1
            break
        gnorm = np.linalg.norm(g)
        point = pt
        if mode == "sparse":
            if H_at is not point:          # a rejected step keeps the point, and its H
                H, H_at = _sparse_hessian_at(point), point
                nhess += 1

            def hvp(v):
                return H[0].matvec(H[1], v)
        else:
            def hvp(v):
                return np.asarray(point.hvp(v.reshape(shape)), dtype=np.float64).reshape(-1)
        cap = EARLY_FORCING_CAP if it <= EARLY_ITERATIONS else FORCING_CAP
        rtol = min(cap, np.sqrt(gnorm)) if cg_rtol is None else cg_rtol
        if subproblem == "gltr":
            p, predicted, boundary, ncg = _gltr(hvp, g, radius, rtol * gnorm, max_cg)
        else:
            p, predicted, boundary, ncg = _steihaug(hvp, g, radius, rtol * gnorm, max_cg)
        nhvp += ncg
        x_new = x + p.reshape(shape)
        pt_new = rec.point(x_new)
        f_new = float(pt_new.value)
        nfev += 1
        actual = fval - f_new
        # near the optimum both decreases sink below the rounding error of f;
        # the usual safeguard keeps rho meaningful there instead of collapsing
        delta = 10 * np.finfo(float).eps * max(1.0, abs(fval))
        rho = (actual + delta) / (predicted + delta) if predicted > 0 else -1.0
        if rho < 0.25:
            radius = SHRINK * radius
        elif rho > 0.75 and boundary:
            radius = min(2.0 * radius, max_radius)
        if rho > eta:
            x, fval, pt = x_new, f_new, pt_new
            if fused:           # the gradient and the next Hessian from one sweep
                (H, g), H_at = _sparse_hessian_at(pt, gradient=True), pt
                nhess += 1
            else:
                g = pt.gradient()
            g = np.asarray(g, dtype=np.float64).reshape(-1)
        if verbose:
            print(f"{it:5d} {fval:14.6e} {np.max(np.abs(g)):10.3e} {radius:10.3e} {ncg:4d}")
        if callback is not None:
            callback(x.copy())
        if radius < 1e-14 * max(1.0, np.linalg.norm(x)):
            message = "trust region collapsed (no further decrease possible)"
            break
    return OptimizeResult(x=x, fun=fval, jac=g.reshape(shape), nit=it, nfev=nfev,
                          nhvp=nhvp, nhess=nhess, success=success, message=message,
                          retraces=rec.retraces)


def _gmres(matvec, b, tol, maxiter):
    """Restart-free GMRES (Arnoldi + Givens) for A x = b from x = 0."""
    n = b.size
    beta = np.linalg.norm(b)
    if beta == 0:
        return np.zeros(n), 0
    m = min(maxiter, n)
    V = np.zeros((m + 1, n))
    H = np.zeros((m + 1, m))
    cs, sn = np.zeros(m), np.zeros(m)
    e = np.zeros(m + 1)
    e[0] = beta
    V[0] = b / beta
    k = 0
    for k in range(m):
        w = matvec(V[k])
        for i in range(k + 1):                 # modified Gram-Schmidt
            H[i, k] = w @ V[i]
            w = w - H[i, k] * V[i]
        H[k + 1, k] = np.linalg.norm(w)
        if H[k + 1, k] > 0:
            V[k + 1] = w / H[k + 1, k]
        for i in range(k):                     # apply the earlier rotations
            H[i, k], H[i + 1, k] = (cs[i] * H[i, k] + sn[i] * H[i + 1, k],
                                    -sn[i] * H[i, k] + cs[i] * H[i + 1, k])
        r = np.hypot(H[k, k], H[k + 1, k])
        cs[k], sn[k] = (H[k, k] / r, H[k + 1, k] / r) if r > 0 else (1.0, 0.0)
        H[k, k], H[k + 1, k] = r, 0.0
        e[k + 1] = -sn[k] * e[k]
        e[k] = cs[k] * e[k]
        if abs(e[k + 1]) <= tol or H[k + 1, k] == 0 and r == 0:
            break
    y = np.linalg.solve(np.triu(H[:k + 1, :k + 1]) + np.eye(k + 1) * (H[:k + 1, :k + 1].diagonal() == 0),
                        e[:k + 1])
    return V[:k + 1].T @ y, k + 1


def root(F, x0, tol=1e-10, maxiter=100, krylov_maxiter=200, callback=None, verbose=False):
    """Solve F(x) = 0 by Jacobian-free Newton-Krylov: GMRES on products J v
    from the tangent sweep of one replayed tape, with a backtracking line
    search on |F|.  Returns an OptimizeResult (x, fun = F(x), nit, nfev,
    njvp, success, message)."""
    x = _start(x0, "root")
    shape = x.shape
    tape = _own_tape(F, x, "root")
    if tape.out_shape is None or tape.n_outputs != x.size:
        raise ValueError(f"fastad.root needs F to map x (size {x.size}) to an output of "
                         f"the same size, got {tape.n_outputs}")

    def residual(z):
        nonlocal tape
        try:
            return np.asarray(tape(z.reshape(shape)), dtype=np.float64).reshape(-1)
        except BranchChangedError:
            tape = _own_tape(F, z.reshape(shape), "root")
            return np.asarray(tape(z.reshape(shape)), dtype=np.float64).reshape(-1)

    Fx = residual(x)
    nfev, njvp, it = 1, 0, 0
    success, message = False, "maximum number of iterations reached"
    for it in range(1, maxiter + 1):
        fnorm = np.linalg.norm(Fx)
        if verbose:
            print(f"{it - 1:5d} |F| = {fnorm:.3e}")
        if fnorm <= tol:
            success, message, it = True, "|F(x)| below tol", it - 1
            break
        point = tape.at(x)                 # one replay per Newton step, then J v sweeps

        def jv(v):
            return np.asarray(point.jvp(v.reshape(shape)), dtype=np.float64).reshape(-1)
        step, used = _gmres(jv, -Fx, max(1e-3 * fnorm, 0.1 * tol), krylov_maxiter)
        njvp += used
        t = 1.0
        while True:                                # backtracking on |F|
            x_try = x + t * step.reshape(shape)
            F_try = residual(x_try)
            nfev += 1
            if np.linalg.norm(F_try) <= (1 - 1e-4 * t) * fnorm or t < 1e-8:
                break
            t *= 0.5
        x, Fx = x_try, F_try
        if callback is not None:
            callback(x.copy())
    return OptimizeResult(x=x, fun=Fx.reshape(tape.out_shape), nit=it, nfev=nfev,
                          njvp=njvp, success=success, message=message)
