"""Fuzzing the sparse-derivative features (fastad.sparse) against independent answers.

Random programs (seeded) mix scalar loops and array operations with mostly-local
dependencies.  Each program is an interpreter over a small op list, run either with
fastad (derivatives) or with plain NumPy/SciPy (finite-difference references), so the
FD reference never touches fastad.  Checks: sparse Jacobians in every mode equal the
dense fad.jacobian and finite differences; patterns are sound (every nonzero of a dense
Jacobian/Hessian lies in them) and the sparse results store exactly the pattern; tape
replays; the auto plan's lane count; edge cases; fad.minimize(hessian="sparse").
"""
import warnings

import numpy as np
import pytest

import fastad as fad
from conftest import dense, fd_jacobian, n_colors

sp = pytest.importorskip("scipy.sparse")
from scipy import special as _special  # noqa: E402
from scipy.optimize import minimize as _scipy_minimize  # noqa: E402

MODES = ("auto", "fwd", "rev", "bidirectional")


# ---------------------------------------------------------------- two backends

class NP:
    """Plain NumPy/SciPy versions of what the programs use (the FD reference)."""
    concatenate = staticmethod(np.concatenate)
    stack = staticmethod(np.stack)
    where = staticmethod(np.where)
    reshape = staticmethod(np.reshape)
    sum = staticmethod(np.sum)
    exp = staticmethod(np.exp)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    tanh = staticmethod(np.tanh)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    square = staticmethod(np.square)
    abs = staticmethod(np.abs)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    hypot = staticmethod(np.hypot)
    arctan2 = staticmethod(np.arctan2)
    power = staticmethod(np.power)
    sign = staticmethod(np.sign)
    erf = staticmethod(_special.erf)

    @staticmethod
    def sigmoid(a):
        return _special.expit(a)

    @staticmethod
    def softplus(a):
        return np.logaddexp(0.0, a)

    @staticmethod
    def relu(a):
        return np.maximum(a, 0.0)


FAD = fad   # the module has every name NP has

UNARY = [
    lambda B, a: B.sin(a),
    lambda B, a: B.tanh(a),
    lambda B, a: B.exp(B.tanh(a)),
    lambda B, a: B.sigmoid(a),
    lambda B, a: B.softplus(a) - 0.5,
    lambda B, a: B.erf(a),
    lambda B, a: B.sqrt(1.0 + B.square(a)),
    lambda B, a: B.log(1.0 + a * a),
    lambda B, a: B.cos(a) * 0.7,
    lambda B, a: B.power(1.0 + B.square(a), 0.75),
    lambda B, a: B.abs(a) + 0.3 * a,
    lambda B, a: B.relu(a) - 0.2 * a,
    lambda B, a: 0.5 * a - 1.0,
]

BINARY = [
    lambda B, a, b: a * b,
    lambda B, a, b: a + 0.5 * b,
    lambda B, a, b: a - b * b,
    lambda B, a, b: B.hypot(a, b) + 0.1,
    lambda B, a, b: B.arctan2(a, 1.5 + b * b),
    lambda B, a, b: B.maximum(a, b),
    lambda B, a, b: B.minimum(a, 0.3 * b),
    lambda B, a, b: a / (1.0 + b * b),
    lambda B, a, b: B.tanh(a * b) + a,
]

# scalar versions for the loop ops (the same lambdas work on Vars and floats)
SCALAR_UNARY = [
    lambda B, a: B.sin(a),
    lambda B, a: B.tanh(a),
    lambda B, a: a * a,
    lambda B, a: B.sqrt(1.0 + a * a),
    lambda B, a: B.sigmoid(a),
]


class Program:
    """A random program over a vector of even length n, built from a seed."""

    def __init__(self, seed, n=None, scalar=False, dense=0.15, steps=None, out_kind=None):
        rng = np.random.default_rng(seed)
        self.n = int(n if n is not None else 2 * rng.integers(3, 7))     # 6 .. 12, even
        self.scalar = scalar
        self.ops = []
        steps = int(steps if steps is not None else rng.integers(3, 7))
        n = self.n
        self.band = np.where(np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1,
                             rng.normal(size=(n, n)), 0.0)
        self.mix = rng.normal(size=(2, 2))
        kinds = ["unary", "binary", "shiftmul", "stencil", "loop", "band", "where",
                 "reshape_mm", "reverse", "mm2x2"]
        dense_kinds = ["x0_times", "plus_sum", "softmax", "loop_sum", "max_shift"]
        for _ in range(steps):
            nv = 1 + len(self.ops)
            if rng.random() < dense:
                kind = dense_kinds[rng.integers(len(dense_kinds))]
            else:
                kind = kinds[rng.integers(len(kinds))]
            args = tuple(int(rng.integers(nv)) for _ in range(2))
            self.ops.append((kind, args, int(rng.integers(1000)), float(rng.uniform(-0.5, 0.5))))
        if out_kind is None:
            out_kind = ("sum", "loopsum")[rng.integers(2)] if scalar else \
                ("vec", "mat", "concat", "loopstack", "diff", "pick")[rng.integers(6)]
        self.out_kind = out_kind
        self.out_args = tuple(int(rng.integers(1 + len(self.ops))) for _ in range(2))
        self.out_r = int(rng.integers(1000))

    def __repr__(self):
        return f"Program(n={self.n}, ops={self.ops}, out={self.out_kind}{self.out_args})"

    def run(self, B, x):
        n = self.n
        vs = [x]
        for kind, (i, j), r, c in self.ops:
            a, b = vs[i], vs[j]
            if kind == "unary":
                v = UNARY[r % len(UNARY)](B, a)
            elif kind == "binary":
                v = BINARY[r % len(BINARY)](B, a, b)
            elif kind == "shiftmul":
                v = B.concatenate([a[:1], a[1:] * b[:-1]])
            elif kind == "stencil":
                z = np.zeros(1)
                v = B.concatenate([z, a[:-1]]) - (2.0 + c) * a + B.concatenate([b[1:], z]) \
                    + 0.1 * B.square(a)
            elif kind == "loop":
                u = SCALAR_UNARY[r % len(SCALAR_UNARY)]
                v = B.stack([u(B, a[k]) * b[(k + 1) % n] + c * a[k] for k in range(n)])
            elif kind == "band":
                v = self.band @ B.tanh(a) + b
            elif kind == "where":
                v = B.where(a > c, B.sin(a) * b, B.square(b) - a)
            elif kind == "reshape_mm":
                M = B.reshape(a, (2, n // 2))
                v = B.reshape(self.mix @ M, (n,)) * (1.0 + 0.1 * b)
            elif kind == "mm2x2":
                W = B.reshape(a[:4], (2, 2))
                V = B.reshape(B.tanh(b[n - 4:]), (2, 2))
                v = B.concatenate([B.reshape(W @ V, (4,)), a[4:] * 0.5])
            elif kind == "reverse":
                v = a[::-1] * 0.5 + B.sin(b)
            elif kind == "x0_times":
                v = a[r % n] * b + a
            elif kind == "plus_sum":
                v = a + 0.1 * B.sum(B.tanh(b))
            elif kind == "softmax":
                e = B.exp(B.tanh(a))
                v = e / B.sum(e) * n + b
            elif kind == "loop_sum":
                s = 0.0
                for k in range(n):
                    s = s + B.sin(a[k]) * 0.1
                v = B.concatenate([B.reshape(s, (1,)) + b[:1], b[1:] * a[1:]])
            elif kind == "max_shift":
                v = a - 0.3 * np.max(b)
            else:                                   # pragma: no cover
                raise AssertionError(kind)
            vs.append(v)
        i, j = self.out_args
        a, b = vs[i], vs[j]
        k = self.out_kind
        if k == "vec":
            return a + 0.0 * b if i == j else a * 1.0 + b
        if k == "mat":
            return B.reshape(a * b, (2, n // 2))
        if k == "concat":
            return B.concatenate([a, B.sin(b[: 1 + self.out_r % (n - 1)])])
        if k == "loopstack":
            return B.stack([a[m] * b[m + 1] for m in range(n - 1)])
        if k == "diff":
            return a[1:] - b[:-1] * a[:-1]
        if k == "pick":
            return B.stack([a[m] for m in range(0, n, 2)] + [b[1] * 2.0])
        if k == "sum":
            return B.sum(B.sin(a) * b + B.square(a))
        if k == "loopsum":
            s = 0.0
            for m in range(n - 1):
                s = s + B.tanh(a[m]) * b[m + 1] + 0.5 * a[m] * a[m]
            return s
        raise AssertionError(k)                     # pragma: no cover

    def f(self, x):
        return self.run(FAD, x)

    def f_np(self, x):
        return np.asarray(self.run(NP, x), dtype=np.float64)

    def point(self, rng):
        return rng.uniform(-1.0, 1.0, self.n)


# ---------------------------------------------------------------- helpers

def dense_jac2d(f, x, mode="auto"):
    J = np.asarray(fad.jacobian(f, mode=mode)(x) if mode != "auto" else fad.jacobian(f)(x))
    return J.reshape(-1, x.size)


def fd_jacobian_2d(f_np, x, eps=1e-6):
    """Central differences with the absolute step eps, as an (out.size, x.size) matrix."""
    return fd_jacobian(f_np, x, h=eps, relative=False).reshape(-1, np.size(x))


def assert_close(A, B, rtol=1e-12, msg=""):
    A, B = np.asarray(A), np.asarray(B)
    scale = max(1.0, float(np.nanmax(np.abs(B))) if B.size and np.isfinite(B).any() else 1.0)
    np.testing.assert_allclose(A, B, rtol=rtol, atol=rtol * scale, err_msg=msg)


def assert_same_structure(M, P, msg=""):
    """M stores exactly the entries of pattern P (csr, sorted)."""
    M = M.copy()
    M.sort_indices()
    P = P.copy()
    P.sort_indices()
    assert M.shape == P.shape, msg
    np.testing.assert_array_equal(M.indptr, P.indptr, err_msg=msg)
    np.testing.assert_array_equal(M.indices, P.indices, err_msg=msg)


def assert_sound(J, P, msg=""):
    """Every nonzero (or NaN) of the dense J lies inside the boolean pattern P."""
    Pd = P.toarray() if sp.issparse(P) else np.asarray(P)
    outside = (J != 0) & ~Pd          # NaN != 0 is True: NaNs count as nonzeros
    assert not outside.any(), f"{msg}: nonzeros outside the pattern at {np.argwhere(outside)}"


def fresh_branch(tape, x):
    """True if tape replays at x (no recorded comparison changes)."""
    try:
        tape(x)
        return True
    except fad.BranchChangedError:
        return False


def auto_plan(tape):
    return tape.sparse_cache[("jacobian_plan", "auto")]


# ---------------------------------------------------------------- 1. random programs

SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_program_sparse_jacobian_all_modes(seed):
    prog = Program(seed)
    rng = np.random.default_rng(1000 + seed)
    x = prog.point(rng)
    Jd = dense_jac2d(prog.f, x)
    out = np.asarray(prog.f_np(x))
    assert Jd.shape == (out.size, x.size)
    # the dense Jacobian agrees with finite differences on plain NumPy
    Jfd = fd_jacobian_2d(prog.f_np, x)
    np.testing.assert_allclose(Jd, Jfd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(Jd).max()),
                               err_msg=repr(prog))
    P = fad.jacobian_sparsity(prog.f)(x)
    assert P.dtype == bool and P.shape == Jd.shape
    assert_sound(Jd, P, repr(prog))
    for mode in MODES:
        J = fad.sparse_jacobian(prog.f, mode=mode)(x)
        assert J.shape == Jd.shape and J.dtype == np.float64
        assert_close(dense(J), Jd, msg=f"{mode}: {prog!r}")
        assert_same_structure(J, P, f"{mode}: {prog!r}")
        np.testing.assert_allclose(dense(J), Jfd, rtol=1e-5,
                                   atol=1e-6 * max(1.0, np.abs(Jd).max()))


@pytest.mark.parametrize("seed", SEEDS[:12])
def test_random_program_pattern_sound_at_many_points(seed):
    prog = Program(seed + 500, dense=0.05)
    rng = np.random.default_rng(seed)
    x0 = prog.point(rng)
    tape = fad.record(prog.f, x0)
    P0 = fad.jacobian_sparsity(prog.f)(x0)
    for _ in range(5):
        x = prog.point(rng)
        # the pattern of a tape holds wherever the tape replays; elsewhere use x's own
        P = P0 if fresh_branch(tape, x) else fad.jacobian_sparsity(prog.f)(x)
        assert_sound(dense_jac2d(prog.f, x), P, repr(prog))
        # the same pattern again from a tape recorded at x
        assert_sound(dense_jac2d(prog.f, x, mode="rev"), fad.jacobian_sparsity(prog.f)(x))


@pytest.mark.parametrize("seed", SEEDS[:16])
def test_random_scalar_program_sparse_hessian(seed):
    prog = Program(seed + 2000, scalar=True)
    rng = np.random.default_rng(seed)
    x = prog.point(rng)
    H = fad.hessian(prog.f)(x)
    assert H.shape == (prog.n, prog.n)
    Hs = fad.sparse_hessian(prog.f)(x)
    assert Hs.shape == H.shape
    assert_close(dense(Hs), H, msg=repr(prog))
    PH = fad.hessian_sparsity(prog.f)(x)
    assert PH.dtype == bool
    np.testing.assert_array_equal(PH.toarray(), PH.toarray().T)
    assert_sound(H, PH, repr(prog))
    assert_same_structure(Hs, PH, repr(prog))
    # gradient-level: Hessian against FD of the dense gradient
    g = lambda v: np.asarray(fad.grad(prog.f)(v))   # noqa: E731
    Hfd = fd_jacobian_2d(g, x, eps=1e-5)
    np.testing.assert_allclose(H, Hfd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(H).max()))
    # scalar program: sparse_jacobian is a (1, n) gradient row
    J = fad.sparse_jacobian(prog.f)(x)
    assert J.shape == (1, prog.n)
    assert_close(dense(J)[0], fad.grad(prog.f)(x))


# ---------------------------------------------------------------- 2. replays

@pytest.mark.parametrize("seed", SEEDS[:8])
def test_tape_replays_equal_fresh_dense(seed):
    prog = Program(seed + 3000, dense=0.1)
    sprog = Program(seed + 4000, scalar=True)
    rng = np.random.default_rng(seed)
    x0 = prog.point(rng)
    y0 = sprog.point(rng)
    tJ = fad.record(prog.f, x0)
    tH = fad.record(sprog.f, y0)
    checked = 0
    for k in range(6):
        # interleave the two tapes and the modes
        x = x0 + rng.uniform(-0.05, 0.05, x0.shape) if k % 2 else prog.point(rng)
        y = y0 + rng.uniform(-0.05, 0.05, y0.shape)
        mode = MODES[k % 4]
        try:
            J = tJ.sparse_jacobian(x, mode=mode)
        except fad.BranchChangedError:
            assert not fresh_branch(tJ, x)
            continue
        assert_close(dense(J), dense_jac2d(prog.f, x), msg=f"{mode} {prog!r}")
        try:
            Hs = tH.sparse_hessian(y)
        except fad.BranchChangedError:
            continue
        assert_close(dense(Hs), fad.hessian(sprog.f)(y), msg=repr(sprog))
        checked += 1
    assert checked >= 1
    # the cached plans are reused, and the cached pattern is jacobian_sparsity's
    assert ("jacobian_plan", "auto") in tJ.sparse_cache
    P = fad.jacobian_sparsity(prog.f)(x0)
    Jt = tJ.sparse_jacobian(x0, mode="rev")
    assert_same_structure(Jt, P)


def _branchy(x):
    n = x.size
    if x[0] > 0:
        head = x[0] * x[1]
    else:
        head = -fad.sin(x[1]) + x[2]
    body = [fad.tanh(x[i]) * x[i + 1] for i in range(1, n - 1)]
    return fad.stack([head] + body + [fad.where(x[-1] > 0.5, x[-1] ** 2, x[-2])])


def test_tape_branch_change_raises_then_works():
    n = 7
    x0 = np.linspace(0.2, 0.9, n)
    tape = fad.record(_branchy, x0)
    J0 = tape.sparse_jacobian(x0)
    assert_close(dense(J0), dense_jac2d(_branchy, x0))
    H_tape = fad.record(lambda v: fad.sum(_branchy(v) ** 2), x0)
    H_tape.sparse_hessian(x0)
    bad = [x0 * np.r_[-1.0, np.ones(n - 1)], x0 * np.r_[np.ones(n - 1), 0.1]]
    for xb in bad:
        for mode in MODES:
            with pytest.raises(fad.BranchChangedError):
                tape.sparse_jacobian(xb, mode=mode)
        with pytest.raises(fad.BranchChangedError):
            H_tape.sparse_hessian(xb)
        # still fine on the recorded branch, in every mode
        for mode in MODES:
            x = x0 + 0.05 * np.cos(np.arange(n) + len(mode))
            assert_close(dense(tape.sparse_jacobian(x, mode=mode)), dense_jac2d(_branchy, x))
        x = x0 + 0.03
        assert_close(dense(H_tape.sparse_hessian(x)),
                     fad.hessian(lambda v: fad.sum(_branchy(v) ** 2))(x))


# ---------------------------------------------------------------- 3. dense rows/columns

def arrow(x):
    return fad.concatenate([fad.reshape(fad.sum(x * x), (1,)), x[0] * x[1:] + np.sin(x[1:])])


def softmax_tail(x):
    e = np.exp(x)
    return fad.concatenate([e / np.sum(e), x[1:] * x[:-1]])


def dense_col_and_rows(x):
    n = x.size
    rows = [x[0] * x[i] + x[i] ** 2 for i in range(n)]
    s = 0.0
    for i in range(n):
        s = s + fad.cos(x[i])
    return fad.stack(rows + [s, s * x[1]])


DENSE_FUNCS = [arrow, softmax_tail, dense_col_and_rows]


def _check_auto_lanes(tape, x):
    tape.sparse_jacobian(x)
    plan = auto_plan(tape)
    pattern = sp.csr_matrix((np.ones(plan.indices.size, dtype=bool), plan.indices, plan.indptr),
                            shape=plan.shape)
    cc = fad.color_jacobian(pattern, partition="column")
    rc = fad.color_jacobian(pattern, partition="row")
    best = min(n_colors(cc), 1.3 * n_colors(rc))
    assert sum(plan.sweeps) <= best + 1e-9, (plan.mode, plan.sweeps, n_colors(cc), n_colors(rc))
    return plan, pattern


@pytest.mark.parametrize("f", DENSE_FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [5, 17, 40])
def test_dense_rows_and_columns(f, n):
    rng = np.random.default_rng(n)
    x = rng.uniform(0.2, 1.0, n)
    Jd = dense_jac2d(f, x)
    for mode in MODES:
        J = fad.sparse_jacobian(f, mode=mode)(x)
        assert_close(dense(J), Jd, msg=mode)
    tape = fad.record(f, x)
    plan, pattern = _check_auto_lanes(tape, x)
    np.testing.assert_array_equal(pattern.toarray(), fad.jacobian_sparsity(f)(x).toarray())
    if f is arrow and n >= 17:
        assert plan.mode == "bidirectional" and sum(plan.sweeps) <= 3
    # bidirectional colors on the user pattern are consistent with the plan's sweep count
    bc, br = fad.color_jacobian(pattern, partition="bidirectional")
    if plan.mode == "bidirectional":
        assert sum(plan.sweeps) <= n_colors(bc) + n_colors(br)
    for mode in MODES:
        J = tape.sparse_jacobian(x + 0.1, mode=mode)
        assert_close(dense(J), dense_jac2d(f, x + 0.1), msg=mode)


class ArrowProgram:
    """A sparse random body, then a few dense rows (sums of everything), dense columns
    (x[k] * v) and softmax-like normalizations of a slice, so one-sided colorings are
    poor and bidirectional partitions pay."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.body = Program(seed + 7000, dense=0.0, out_kind="vec",
                            n=2 * int(rng.integers(5, 13)))
        self.n = self.body.n
        self.dense_rows = int(rng.integers(0, 3))
        self.dense_cols = sorted(set(rng.integers(0, self.n, int(rng.integers(0, 3))).tolist()))
        self.softmax = int(rng.integers(0, 4))          # 0: none, else a slice of that length
        if not (self.dense_rows or self.dense_cols):
            self.dense_rows = 1

    def __repr__(self):
        return (f"ArrowProgram(rows={self.dense_rows}, cols={self.dense_cols}, "
                f"softmax={self.softmax}, body={self.body!r})")

    def run(self, B, x):
        v = self.body.run(B, x)
        for k in self.dense_cols:
            v = v + x[k] * B.sin(v)
        parts = [v]
        if self.softmax:
            e = B.exp(B.tanh(v[: self.softmax + 1]))
            parts = [e / B.sum(e), v[self.softmax + 1:]]
        for r in range(self.dense_rows):
            parts.append(B.reshape(B.sum(B.tanh(x * (r + 1.0)) * v), (1,)))
        return B.concatenate(parts)

    def f(self, x):
        return self.run(FAD, x)

    def f_np(self, x):
        return np.asarray(self.run(NP, x), dtype=np.float64)


@pytest.mark.parametrize("seed", SEEDS[:16])
def test_random_dense_row_column_programs(seed):
    prog = ArrowProgram(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, prog.n)
    tape = fad.record(prog.f, x)
    plan, pattern = _check_auto_lanes(tape, x)
    Jd = dense_jac2d(prog.f, x)
    np.testing.assert_allclose(Jd, fd_jacobian_2d(prog.f_np, x), rtol=1e-5,
                               atol=1e-6 * max(1.0, np.abs(Jd).max()), err_msg=repr(prog))
    assert_sound(Jd, pattern, repr(prog))
    for mode in MODES:
        J = tape.sparse_jacobian(x, mode=mode)
        assert_close(dense(J), Jd, msg=f"{mode} {prog!r}")
        assert_same_structure(J, fad.jacobian_sparsity(prog.f)(x), mode)
    x2 = x + 0.01
    if fresh_branch(tape, x2):
        assert_close(dense(tape.sparse_jacobian(x2)), dense_jac2d(prog.f, x2), msg=repr(prog))
    # the bidirectional plan sweeps no more lanes than the bicoloring of the same pattern
    tape.sparse_jacobian(x, mode="bidirectional")
    bplan = tape.sparse_cache[("jacobian_plan", "bidirectional")]
    bc, br = fad.color_jacobian(pattern, partition="bidirectional")
    assert sum(bplan.sweeps) == n_colors(bc) + n_colors(br)


@pytest.mark.parametrize("f", [arrow, dense_col_and_rows], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [8, 16])
def test_auto_not_worse_than_bidirectional_small(f, n):
    x = np.linspace(0.1, 1.0, n)
    tape = fad.record(f, x)
    tape.sparse_jacobian(x)
    tape.sparse_jacobian(x, mode="bidirectional")
    a = auto_plan(tape).sweeps
    b = tape.sparse_cache[("jacobian_plan", "bidirectional")].sweeps
    assert a[0] + 1.3 * a[1] <= b[0] + 1.3 * b[1] + 1e-9, (a, b)


def test_dense_programs_exercise_bidirectional():
    modes = []
    for seed in SEEDS[:16]:
        prog = ArrowProgram(seed)
        x = np.random.default_rng(seed).uniform(-1.0, 1.0, prog.n)
        tape = fad.record(prog.f, x)
        tape.sparse_jacobian(x)
        modes.append(auto_plan(tape).mode)
    assert "bidirectional" in modes, modes


# ---------------------------------------------------------------- 4. edge cases

def _all_modes_equal_dense(f, x, exact=False):
    Jd = dense_jac2d(f, x)
    P = fad.jacobian_sparsity(f)(x)
    assert_sound(Jd, P)
    for mode in MODES:
        J = fad.sparse_jacobian(f, mode=mode)(x)
        assert J.shape == Jd.shape, mode
        if exact:
            np.testing.assert_array_equal(dense(J), Jd, err_msg=mode)
        else:
            assert_close(dense(J), Jd, msg=mode)
        assert_same_structure(J, P, mode)
    return Jd, P


def test_empty_columns_and_rows():
    def f(x):
        # x[3] and x[4] unused; the second output is constant; the fourth only via sign
        return fad.stack([x[0] * x[1], x[0] * 0.0 + 2.0 - x[0] * 0.0, fad.sin(x[2]),
                          fad.sign(x[1]) + 1.0, x[2] * x[0]])
    x = np.array([0.3, -0.7, 1.1, 2.0, 5.0])
    Jd, P = _all_modes_equal_dense(f, x)
    Pd = P.toarray()
    assert not Pd[:, 3:].any()                 # empty columns
    assert not Pd[3].any()                     # sign contributes nothing: an empty row
    np.testing.assert_array_equal(Jd[3], 0.0)

    def g(x):                                  # outputs independent of every input
        return fad.stack([fad.sign(x[0]), x[0] * 0.0 + 1.0 - x[0] * 0.0]) * 0.0 + 1.0
    Jd, P = _all_modes_equal_dense(g, x)
    np.testing.assert_array_equal(Jd, 0.0)

    # an empty Hessian pattern (linear or piecewise-constant f) is fine
    for lin in (lambda v: fad.sum(v) * 2.0 - v[1], lambda v: fad.sum(fad.sign(v))):
        np.testing.assert_array_equal(dense(fad.sparse_hessian(lin)(x)), np.zeros((5, 5)))
        assert fad.hessian_sparsity(lin)(x).nnz == 0


@pytest.mark.parametrize("which", ["array", "scalar"])
def test_jacobian_with_empty_pattern(which):
    x = np.array([0.3, -0.7, 1.1])

    def h(v):                                  # a constant output: sign' = 0 everywhere
        return fad.sign(v) * 2.0 if which == "array" else fad.sign(v[0])
    Jd, P = _all_modes_equal_dense(h, x)
    assert P.nnz == 0
    np.testing.assert_array_equal(Jd, 0.0)


def test_single_input_and_scalar_outputs():
    x1 = np.array([0.7])
    _all_modes_equal_dense(lambda v: fad.stack([fad.sin(v[0]), v[0] ** 3, v[0] * 0.0 + 1.0]), x1)
    _all_modes_equal_dense(lambda v: fad.exp(v) * v, x1)
    # a 0-d output: (1, n) sparse Jacobian
    x = np.linspace(0.1, 0.9, 6)

    def s(v):
        return fad.sum(fad.tanh(v[1:] * v[:-1])) + v[0]
    Jd, P = _all_modes_equal_dense(s, x)
    assert Jd.shape == (1, 6)
    # a Var input (a Python float)?  the scalar case through a length-1 array works
    Hs = fad.sparse_hessian(lambda v: fad.sin(v[0]) * v[0])(x1)
    assert_close(dense(Hs), [[2 * np.cos(0.7) - 0.7 * np.sin(0.7)]])
    # a scalar loop output
    def loop_scalar(v):
        t = 0.0
        for i in range(len(v) - 1):
            t = t + v[i] * v[i + 1]
        return t
    J = fad.sparse_jacobian(loop_scalar)(x)
    assert J.shape == (1, 6)
    assert_close(dense(J)[0], fad.grad(loop_scalar)(x))


def test_matrix_inputs_and_outputs():
    X = np.arange(1.0, 9.0).reshape(2, 4) / 7.0

    def f(X):
        # matrix-shaped input, matrix-shaped output, matmul of two slices of the input
        A = X[:, :2]
        B = X[:, 2:]
        return fad.concatenate([A * B, fad.tanh(A.T @ B)], axis=0)
    Jd = np.asarray(fad.jacobian(f)(X))
    assert Jd.shape == (4, 2, 2, 4)
    Jd2, P = _all_modes_equal_dense(f, X)
    np.testing.assert_array_equal(Jd2, Jd.reshape(8, 8))
    Jfd = fd_jacobian_2d(lambda Y: np.concatenate([Y[:, :2] * Y[:, 2:],
                                                   np.tanh(Y[:, :2].T @ Y[:, 2:])], axis=0), X)
    np.testing.assert_allclose(Jd2, Jfd, rtol=1e-6, atol=1e-8)
    X = np.arange(1.0, 13.0).reshape(3, 4) / 7.0
    # hessian of a scalar of a matrix input
    g = lambda Y: fad.sum(fad.square(Y[1:] * Y[:-1]))   # noqa: E731
    Hd = np.asarray(fad.hessian(g)(X)).reshape(12, 12)
    assert_close(dense(fad.sparse_hessian(g)(X)), Hd)
    assert_sound(Hd, fad.hessian_sparsity(g)(X))


def test_stacked_loop_outputs_and_where_with_array_condition():
    x = np.array([0.5, -0.2, 0.9, -1.3, 0.05, 0.4])

    def f(v):
        w = fad.where(v > 0, fad.exp(v) * v[::-1], fad.square(v))
        return fad.stack([w[i] * w[(i + 1) % 6] for i in range(6)])
    _all_modes_equal_dense(f, x)
    Jfd = fd_jacobian_2d(lambda v: (lambda w: w * np.roll(w, -1))(
        np.where(v > 0, np.exp(v) * v[::-1], v * v)), x)
    np.testing.assert_allclose(dense_jac2d(f, x), Jfd, rtol=1e-6, atol=1e-8)
    # the pattern follows the selected branch of each element (and the tape raises
    # when a condition element flips)
    t = fad.record(f, x)
    with pytest.raises(fad.BranchChangedError):
        t.sparse_jacobian(-x)


MATMUL_CASES = {
    "(3,2)@(2,)": lambda v: fad.reshape(v[:6], (3, 2)) @ v[6:8],
    "(2,)@(2,3)": lambda v: v[6:8] @ fad.reshape(v[:6], (2, 3)),
    "(2,)@(2,)": lambda v: fad.reshape(v[:2] @ v[2:4], (1,)),
    "(3,2)@(2,2)": lambda v: fad.reshape(fad.reshape(v[:6], (3, 2))
                                         @ fad.reshape(v[6:10], (2, 2)), (6,)),
    "(2,3)@(3,2)": lambda v: fad.reshape(fad.reshape(v[:6], (2, 3))
                                         @ fad.reshape(v[6:12], (3, 2)), (4,)),
}


def test_matmul_of_two_square_inputs():
    x = np.arange(1.0, 13.0) / 5
    f = lambda v: fad.reshape(fad.reshape(v[:4], (2, 2)) @ fad.reshape(v[4:8], (2, 2)), (4,))  # noqa: E731
    _all_modes_equal_dense(f, x)
    g = lambda v: fad.sum(f(v) ** 2)     # noqa: E731
    H = fad.hessian(g)(x)
    assert_close(dense(fad.sparse_hessian(g)(x)), H)
    assert_sound(H, fad.hessian_sparsity(g)(x))


@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul_of_two_inputs_non_square(case):
    f = MATMUL_CASES[case]
    x = np.arange(1.0, 13.0) / 5
    _all_modes_equal_dense(f, x)


def _where_sqrt(v):
    return fad.where(v > 0, fad.sqrt(v), 0.0) + fad.where(v[::-1] > 0, fad.sqrt(v[::-1]), v)


def test_inf_nan_partials_strong_zeros():
    x = np.array([0.0, 1.0, -1.0, 4.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        Jd, _ = _all_modes_equal_dense(_where_sqrt, x, exact=True)
    assert np.isfinite(Jd).all()


def _sqrt_times(v):
    # sqrt'(0) = inf times 0 and sqrt(-1) = nan: the dense result has nan/inf partials
    return fad.concatenate([fad.sqrt(v[:2]) * v[2:4], fad.power(v[4:], 0.5) + v[:1]])


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_inf_nan_partials_match_dense_of_the_same_direction(mode):
    x = np.array([0.0, 4.0, 1.0, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        Jd = dense_jac2d(_sqrt_times, x, mode=mode)
        assert not np.isfinite(Jd).all()
        J = dense(fad.sparse_jacobian(_sqrt_times, mode=mode)(x))
        P = fad.jacobian_sparsity(_sqrt_times)(x)
    np.testing.assert_array_equal(J, Jd)       # assert_array_equal: NaN == NaN
    assert_sound(Jd, P)
    # and the auto mode matches whichever dense direction it swept in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tape = fad.record(_sqrt_times, x)
        J = dense(tape.sparse_jacobian(x))
        plan = auto_plan(tape)
        if plan.mode in ("fwd", "rev"):
            np.testing.assert_array_equal(J, dense_jac2d(_sqrt_times, x, mode=plan.mode))


def _sign_sqrt(v):
    # sign' = 0 (README), so the inf partial of sqrt at 0 must not reach the output:
    # J = [[1, 0], [0, 1]] and column 1 is outside row 0's pattern
    return fad.stack([v[0] + fad.sign(fad.sqrt(v[1])), v[1]])


def _sign_sqrt_expected():
    return np.array([[1.0, 0.0], [0.0, 1.0]])


def test_sign_of_inf_partial_reverse_is_exact():
    x = np.array([1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(dense(fad.sparse_jacobian(_sign_sqrt, mode="rev")(x)),
                                      _sign_sqrt_expected())
        np.testing.assert_array_equal(dense_jac2d(_sign_sqrt, x, mode="rev"),
                                      _sign_sqrt_expected())


@pytest.mark.parametrize("mode", ["fwd", "auto", "bidirectional"])
def test_sign_of_inf_partial_forward(mode):
    x = np.array([1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        J = dense(fad.sparse_jacobian(_sign_sqrt, mode=mode)(x))
    np.testing.assert_array_equal(J, _sign_sqrt_expected())


def test_sign_of_inf_partial_dense_forward_sound():
    x = np.array([1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        Jd = dense_jac2d(_sign_sqrt, x, mode="fwd")
    assert_sound(Jd, fad.jacobian_sparsity(_sign_sqrt)(x))


# ---------------------------------------------------------------- primitives

@fad.primitive
def band_prim(x):
    """y_i = x_i * x_{i+1} (cyclic): declared cyclic-bidiagonal."""
    return x * np.roll(x, -1)


band_prim.defvjp(lambda ybar, y, x: ybar * np.roll(x, -1) + np.roll(ybar * x, 1))
band_prim.defjvp(lambda xdot, y, x: xdot * np.roll(x, -1) + x * np.roll(xdot, -1))
band_prim.defsparsity(lambda shape: (np.eye(int(np.prod(shape)), dtype=bool)
                                     | np.roll(np.eye(int(np.prod(shape)), dtype=bool), 1, axis=1)))


@fad.primitive
def undeclared_prim(x):
    return np.tanh(x)


undeclared_prim.defvjp(lambda ybar, y, x: ybar * (1 - y * y))
undeclared_prim.defjvp(lambda xdot, y, x: xdot * (1 - y * y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_primitives_in_programs(seed):
    rng = np.random.default_rng(seed)
    n = 8
    x = rng.uniform(-1, 1, n)

    def f(v):
        return band_prim(fad.sin(v)) * 2.0 + v[::-1] * 0.1

    def g(v):
        return fad.concatenate([undeclared_prim(v[:3]) * v[3], v[3:] ** 2])
    Jf, Pf = _all_modes_equal_dense(f, x)
    expected = np.eye(n, dtype=bool) | np.roll(np.eye(n, dtype=bool), 1, axis=1) \
        | np.eye(n, dtype=bool)[::-1]
    np.testing.assert_array_equal(Pf.toarray(), expected)
    np.testing.assert_allclose(Jf, fd_jacobian_2d(lambda v: np.sin(v) * np.roll(np.sin(v), -1) * 2
                                                  + v[::-1] * 0.1, x), rtol=1e-6, atol=1e-8)
    Jg, Pg = _all_modes_equal_dense(g, x)
    assert Pg.toarray()[:3, :3].all()          # undeclared: dense block


# ---------------------------------------------------------------- color_jacobian on user patterns

@pytest.mark.parametrize("seed", range(6))
def test_color_jacobian_valid_on_random_patterns(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(3, 30, 2)
    P = rng.random((m, n)) < 0.15
    P[rng.integers(m), :] = True if seed % 2 else P[0]
    cc = fad.color_jacobian(P, partition="column")
    for i in range(m):
        cols = np.flatnonzero(P[i])
        assert len(set(cc[cols].tolist())) == cols.size
    rc = fad.color_jacobian(sp.csr_matrix(P), partition="row")
    for j in range(n):
        rows = np.flatnonzero(P[:, j])
        assert len(set(rc[rows].tolist())) == rows.size
    S = P[:min(m, n), :min(m, n)]
    S = S | S.T
    hc = fad.color_hessian(S)
    # star coloring: a distance-1 coloring (off-diagonal neighbours differ)
    for i, j in zip(*np.nonzero(S)):
        if i != j:
            assert hc[i] != hc[j]


# ---------------------------------------------------------------- 5. minimize

def _tridiag_quadratic(x, d, b):
    s = 0.5 * fad.sum(d * x * x) - fad.sum(b * x)
    return s + 0.5 * fad.sum(fad.square(x[1:] - x[:-1]))


def test_minimize_sparse_quadratic():
    n = 30
    rng = np.random.default_rng(7)
    d = rng.uniform(0.5, 2.0, n)
    b = rng.normal(size=n)
    A = np.diag(d + 2.0) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)
    A[0, 0] -= 1.0
    A[-1, -1] -= 1.0
    xstar = np.linalg.solve(A, b)
    r = fad.minimize(lambda x: _tridiag_quadratic(x, d, b), np.zeros(n), hessian="sparse")
    assert r.success, r.message
    assert r.nhess >= 1
    np.testing.assert_allclose(r.x, xstar, atol=1e-7)


def _smooth_tv(x, b):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + fad.sqrt(1.0 + (x[i + 1] - x[i]) ** 2)
    return s + 0.5 * fad.sum(fad.square(x - b)) + fad.sum(fad.exp(x) - x) * 0.1


def _smooth_tv_np(x, b):
    return (np.sum(np.sqrt(1.0 + np.diff(x) ** 2)) + 0.5 * np.sum((x - b) ** 2)
            + 0.1 * np.sum(np.exp(x) - x))


def test_minimize_sparse_smooth_convex():
    n = 25
    b = np.sin(np.linspace(0, 3, n)) * 2.0
    ref = _scipy_minimize(lambda v: _smooth_tv_np(v, b), np.zeros(n),
                          jac=lambda v: np.asarray(fad.grad(lambda u: _smooth_tv(u, b))(v)),
                          method="BFGS", options={"gtol": 1e-11, "maxiter": 2000})
    r = fad.minimize(lambda x: _smooth_tv(x, b), np.zeros(n), hessian="sparse")
    assert r.success, r.message
    assert r.nhess >= 1
    np.testing.assert_allclose(r.x, ref.x, atol=1e-6)
    assert np.max(np.abs(fad.grad(lambda u: _smooth_tv(u, b))(r.x))) <= 1e-7


def test_minimize_sparse_matrix_input_separable():
    # matrix-shaped x0; minimizer of sum(cosh(X - C)) + coupling 0 at X = C
    C = np.arange(12.0).reshape(3, 4) / 10.0

    def f(X):
        D = X - C
        return fad.sum(fad.exp(D) + fad.exp(-D)) + fad.sum(fad.square(D[:, 1:] - D[:, :-1]))
    r = fad.minimize(f, np.zeros((3, 4)), hessian="sparse")
    assert r.success, r.message
    assert r.x.shape == (3, 4)
    np.testing.assert_allclose(r.x, C, atol=1e-8)
    r2 = fad.minimize(f, np.zeros((3, 4)), hessian="hvp")
    np.testing.assert_allclose(r.x, r2.x, atol=1e-8)
