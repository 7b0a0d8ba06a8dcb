"""fad.minimize (trust-region Newton-Krylov on tape HVPs), fad.optimize.objective
(fun, jac, hessp for scipy.optimize.minimize) and fad.root (Jacobian-free
Newton-Krylov).

Answers are independent of fastad: the known minimizer of Rosenbrock (all
ones), np.linalg.solve for a quadratic, scipy.optimize.rosen / rosen_der /
rosen_hess_prod, the Bratu residual evaluated with plain NumPy and its
closed-form continuous solution, scipy.linalg.sqrtm, roots known in closed form.
"""
import math
import re

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize as so

import fastad as fad
from conftest import rosen_loop, rosen_products, rosen_vec


def spd(n, seed):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, n))
    return Q @ Q.T + n * np.eye(n), rng.normal(size=n)


# ---------------------------------------------------------------------------
# fad.minimize
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("f", [rosen_vec, rosen_loop], ids=["vectorized", "loop"])
def test_minimize_rosenbrock_200(f):
    x0 = np.tile([-1.2, 1.0], 100)
    res = fad.minimize(f, x0)
    assert res.success, res.message
    assert isinstance(res.message, str) and res.message
    assert res.x.shape == (200,)
    assert np.max(np.abs(res.x - 1.0)) < 1e-6
    assert res.nit > 0 and res.nhvp > 0 and res.nfev > 0
    assert res.nhvp >= res.nit          # at least one CG step (H v) per iteration
    assert res.nfev <= res.nit + 1
    assert 0.0 <= res.fun < 1e-10
    np.testing.assert_allclose(res.fun, so.rosen(res.x), rtol=1e-8, atol=1e-20)
    assert res.jac.shape == (200,)
    assert np.max(np.abs(res.jac)) <= 1e-8
    np.testing.assert_allclose(res.jac, so.rosen_der(res.x), rtol=1e-8, atol=1e-12)
    assert res.retraces == 0
    # OptimizeResult is also a dict
    assert res["x"] is res.x and res["nit"] == res.nit
    assert x0[0] == -1.2                # x0 not modified


def test_minimize_quadratic_one_newton_step():
    A, b = spd(6, 1)
    res = fad.minimize(lambda x: 0.5 * x @ A @ x - b @ x, np.zeros(6),
                       initial_radius=1e6, cg_rtol=1e-12)
    assert res.success, res.message
    assert res.nit == 1
    x_star = np.linalg.solve(A, b)
    np.testing.assert_allclose(res.x, x_star, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.fun, -0.5 * b @ x_star, rtol=1e-12)
    assert 1 <= res.nhvp <= 7            # CG on a 6x6 SPD system: at most n (+ roundoff) steps
    np.testing.assert_allclose(res.jac, A @ res.x - b, atol=1e-10)


def test_minimize_quadratic_scalar_loop_form():
    A, b = spd(4, 2)

    def f(x):
        s = 0.0
        for i in range(4):
            s = s - b[i] * x[i]
            for j in range(4):
                s = s + 0.5 * A[i, j] * x[i] * x[j]
        return s
    res = fad.minimize(f, np.ones(4), initial_radius=1e6, cg_rtol=1e-12)
    assert res.success and res.nit == 1
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)


def test_minimize_callback_once_per_iteration():
    calls = []
    res = fad.minimize(rosen_vec, np.tile([-1.2, 1.0], 3), callback=lambda x: calls.append(x))
    assert res.success
    assert len(calls) == res.nit > 1
    for c in calls:
        assert isinstance(c, np.ndarray) and c.shape == (6,)
    np.testing.assert_array_equal(calls[-1], res.x)
    # the iterates are copies, not one buffer mutated in place
    assert len({c.tobytes() for c in calls}) > 1
    assert not any(c is res.x for c in calls)


def test_minimize_verbose_prints_one_line_per_iteration(capsys):
    res = fad.minimize(rosen_vec, np.tile([-1.2, 1.0], 3), verbose=True)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    it_lines = [ln for ln in lines if re.match(r"\s*\d+\s", ln)]
    assert len(it_lines) == res.nit
    assert [int(ln.split()[0]) for ln in it_lines] == list(range(1, res.nit + 1))
    assert len(lines) - len(it_lines) <= 1     # at most a header besides
    # the last printed f is the result's
    assert float(it_lines[-1].split()[1]) == pytest.approx(res.fun, rel=1e-5, abs=1e-12)
    # and quiet by default
    fad.minimize(rosen_vec, np.tile([-1.2, 1.0], 3))
    assert capsys.readouterr().out == ""


def abs_like(x):
    # (x0 - 2)^2 + sum((x[1:] - 0.5)^2) + 0.5 |x0|, |x0| written as an if/else
    s = (x[0] - 2.0) ** 2 + fad.sum((x[1:] - 0.5) ** 2)
    if x[0] > 0:
        s = s + 0.5 * x[0]
    else:
        s = s - 0.5 * x[0]
    return s


def test_minimize_branch_change_retraces_and_converges():
    res = fad.minimize(abs_like, np.array([-3.0, 1.0, 2.0]))
    assert res.success, res.message
    # 2 (x0 - 2) + 0.5 = 0 on the x0 > 0 side
    np.testing.assert_allclose(res.x, [1.75, 0.5, 0.5], atol=1e-8)
    np.testing.assert_allclose(res.fun, 0.25 ** 2 + 0.5 * 1.75, rtol=1e-12)
    assert res.retraces >= 1


def test_minimize_matrix_shaped_and_float_inputs():
    rng = np.random.default_rng(3)
    T = rng.normal(size=(2, 3))
    res = fad.minimize(lambda X: fad.sum((X - T) ** 2) + fad.sum(X ** 4), np.zeros((2, 3)))
    assert res.success
    assert res.x.shape == (2, 3) and res.jac.shape == (2, 3)
    # stationarity, checked with NumPy: 2 (X - T) + 4 X^3 = 0
    np.testing.assert_allclose(2 * (res.x - T) + 4 * res.x ** 3, 0.0, atol=1e-8)


def test_minimize_errors_and_maxiter():
    with pytest.raises(ValueError, match="method"):
        fad.minimize(rosen_vec, np.zeros(3), method="bfgs")
    with pytest.raises(ValueError):
        fad.minimize(lambda x: x ** 2, np.ones(3))       # not a scalar
    res = fad.minimize(rosen_vec, np.tile([-1.2, 1.0], 5), maxiter=3)
    assert not res.success
    assert res.nit == 3
    assert "iteration" in res.message
    # the library still works after the errors
    assert fad.minimize(rosen_vec, np.tile([-1.2, 1.0], 2)).success


def test_minimize_through_a_primitive():
    @fad.primitive
    def lse(z):
        m = np.max(z)
        return m + np.log(np.sum(np.exp(z - m)))

    @lse.defvjp
    def _(ybar, y, z):
        return ybar * np.exp(z - y)

    @lse.defjvp
    def _(zdot, y, z):
        return np.sum(zdot * np.exp(z - y))

    rng = np.random.default_rng(4)
    A = rng.normal(size=(7, 4))
    res = fad.minimize(lambda x: lse(A @ x) + 0.5 * fad.sum(x ** 2), np.ones(4))
    assert res.success, res.message
    s = np.exp(A @ res.x - np.max(A @ res.x))
    s /= s.sum()
    np.testing.assert_allclose(A.T @ s + res.x, 0.0, atol=1e-8)   # gradient, by hand


@pytest.mark.parametrize("offset", [10.0, 1000.0])
def test_minimize_rosenbrock_with_nonzero_minimum_value(offset):
    # Adding a constant does not move the minimizer; gtol is on the gradient,
    # which is unchanged.  Near the optimum the predicted decrease of a Newton
    # step falls below the rounding of f, which must not stop the iteration.
    res = fad.minimize(lambda x: rosen_vec(x) + offset, np.tile([-1.2, 1.0], 5))
    assert res.success, (res.message, np.max(np.abs(res.jac)))
    assert np.max(np.abs(res.jac)) <= 1e-8
    assert np.max(np.abs(res.x - 1.0)) < 1e-6


def test_minimize_one_dimensional_convex():
    # f = (x - 3)^2 + exp(x): minimizer solves 2 (x - 3) + exp(x) = 0
    x_star = so.brentq(lambda t: 2 * (t - 3) + math.exp(t), 0.0, 3.0, xtol=1e-15)
    res = fad.minimize(lambda x: (x[0] - 3.0) ** 2 + fad.exp(x[0]), np.array([0.0]))
    np.testing.assert_allclose(res.x, [x_star], rtol=1e-8)
    assert res.success, (res.message, res.jac)


# ---------------------------------------------------------------------------
# fad.optimize.objective with scipy.optimize.minimize
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("hessian", ["auto", "hvp", "sparse"])
def test_objective_values_match_scipy_rosen(hessian):
    rng = np.random.default_rng(5)
    x0 = np.tile([-1.2, 1.0], 25)
    fun, jac, hessp = fad.optimize.objective(rosen_vec, x0, hessian=hessian)
    for _ in range(3):
        x, p = rng.normal(size=50), rng.normal(size=50)
        np.testing.assert_allclose(fun(x), so.rosen(x), rtol=1e-13)
        np.testing.assert_allclose(jac(x), so.rosen_der(x), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(hessp(x, p), so.rosen_hess_prod(x, p), rtol=1e-12, atol=1e-10)
        # hessp at another x than the last fun/jac call
        y = rng.normal(size=50)
        np.testing.assert_allclose(hessp(y, p), so.rosen_hess_prod(y, p), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(jac(x), so.rosen_der(x), rtol=1e-12, atol=1e-10)
    assert isinstance(fun(x0), float)


@pytest.mark.parametrize("method,options", [("trust-krylov", {}),
                                           ("Newton-CG", {"xtol": 1e-10})])
@pytest.mark.parametrize("hessian", ["hvp", "sparse"])
def test_objective_with_scipy_minimize_rosenbrock_50(method, options, hessian):
    x0 = np.tile([-1.2, 1.0], 25)
    fun, jac, hessp = fad.optimize.objective(rosen_vec, x0, hessian=hessian)
    res = so.minimize(fun, x0, jac=jac, hessp=hessp, method=method, options=options)
    assert res.success, res.message
    assert np.max(np.abs(res.x - 1.0)) < 1e-5


@pytest.mark.parametrize("hessian", ["hvp", "sparse"])
def test_objective_rerecords_across_a_branch(hessian):
    fun, jac, hessp = fad.optimize.objective(abs_like, np.array([1.0, 0.0, 0.0]), hessian=hessian)
    x = np.array([-2.0, 1.0, 0.0])      # the other side of the recorded branch
    np.testing.assert_allclose(fun(x), 16.0 + 0.25 + 0.25 + 1.0)
    np.testing.assert_allclose(jac(x), [2 * (-4.0) - 0.5, 1.0, -1.0])
    np.testing.assert_allclose(hessp(x, np.array([1.0, 2.0, 3.0])), [2.0, 4.0, 6.0])
    res = so.minimize(fun, x, jac=jac, hessp=hessp, method="trust-krylov")
    np.testing.assert_allclose(res.x, [1.75, 0.5, 0.5], atol=1e-6)


# ---------------------------------------------------------------------------
# fad.root
# ---------------------------------------------------------------------------

N_BRATU = 50
H_BRATU = 1.0 / (N_BRATU + 1)
LAM = 1.0


def bratu_loop(u):
    out = []
    for i in range(N_BRATU):
        left = u[i - 1] if i > 0 else 0.0
        right = u[i + 1] if i < N_BRATU - 1 else 0.0
        out.append((left - 2.0 * u[i] + right) / H_BRATU ** 2 + LAM * fad.exp(u[i]))
    return out


def bratu_vec(u):
    U = fad.concatenate([np.zeros(1), u, np.zeros(1)])
    return (U[:-2] - 2.0 * U[1:-1] + U[2:]) / H_BRATU ** 2 + LAM * fad.exp(u)


def bratu_numpy(u):
    U = np.concatenate([[0.0], u, [0.0]])
    return (U[:-2] - 2.0 * U[1:-1] + U[2:]) / H_BRATU ** 2 + LAM * np.exp(u)


def bratu_exact(t):
    # u(t) = -2 log(cosh((t - 1/2) th / 2) / cosh(th / 4)), th = sqrt(2 lam) cosh(th / 4)
    th = so.brentq(lambda th: th - math.sqrt(2 * LAM) * math.cosh(th / 4), 0.1, 4.0, xtol=1e-15)
    return -2.0 * np.log(np.cosh((t - 0.5) * th / 2) / np.cosh(th / 4))


@pytest.mark.parametrize("F", [bratu_loop, bratu_vec], ids=["loop", "vectorized"])
def test_root_bratu(F):
    res = fad.root(F, np.zeros(N_BRATU))
    assert res.success, res.message
    assert res.nit > 0
    u = res.x
    assert u.shape == (N_BRATU,)
    assert np.max(np.abs(bratu_numpy(u))) < 1e-8           # residual with plain NumPy
    np.testing.assert_allclose(res.fun, bratu_numpy(u), atol=1e-9)
    np.testing.assert_allclose(u, u[::-1], atol=1e-10)     # symmetric about t = 1/2
    assert np.all(u > 0)
    # the lower solution branch, within the O(h^2) discretization error
    t = np.arange(1, N_BRATU + 1) * H_BRATU
    np.testing.assert_allclose(u, bratu_exact(t), atol=5e-4)


def test_root_bratu_loop_and_vectorized_agree():
    a = fad.root(bratu_loop, np.zeros(N_BRATU))
    b = fad.root(bratu_vec, np.zeros(N_BRATU))
    np.testing.assert_allclose(a.x, b.x, atol=1e-10)


def test_root_two_by_two_known_root():
    F = lambda z: [fad.exp(z[0]) - 2.0, z[0] + z[1] ** 3 - 9.0]
    res = fad.root(F, np.array([0.0, 1.0]))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [math.log(2.0), np.cbrt(9.0 - math.log(2.0))],
                               rtol=1e-10)
    assert np.max(np.abs(res.fun)) < 1e-10
    G = lambda z: fad.stack([z[0] ** 2 + z[1] ** 2 - 5.0, z[0] * z[1] - 2.0])
    res = fad.root(G, np.array([2.5, 0.7]))
    assert res.success
    np.testing.assert_allclose(res.x, [2.0, 1.0], rtol=1e-10)


def test_root_matrix_square_root():
    rng = np.random.default_rng(6)
    Q = rng.normal(size=(3, 3))
    M = Q @ Q.T + 3 * np.eye(3)
    res = fad.root(lambda X: X @ X - M, np.eye(3))
    assert res.success
    assert res.x.shape == (3, 3) and np.shape(res.fun) == (3, 3)
    np.testing.assert_allclose(res.x, np.real(scipy.linalg.sqrtm(M)), rtol=1e-9, atol=1e-10)


def test_root_across_a_branch():
    def F(z):
        a = z[0] - 1.0 if z[0] > 0 else 3.0 * (z[0] - 1.0)
        return [a, z[1] ** 2 - 4.0]
    res = fad.root(F, np.array([-2.0, 1.0]))
    assert res.success
    np.testing.assert_allclose(res.x, [1.0, 2.0], rtol=1e-10)


def test_root_wrong_output_size():
    with pytest.raises(ValueError, match="same size"):
        fad.root(lambda z: [z[0], z[1], z[0] * z[1]], np.ones(2))
    with pytest.raises(ValueError, match="same size"):
        fad.root(lambda z: z[0] * z[1], np.ones(2))
    with pytest.raises(ValueError):
        fad.root(lambda z: z[:2] * 2.0, np.ones(3))
    # still works
    res = fad.root(lambda z: z ** 3 - 8.0, np.array([1.0]))
    np.testing.assert_allclose(res.x, [2.0], rtol=1e-10)


def test_minimize_gltr_subproblem_converges_and_bad_subproblem_raises():
    from scipy.optimize import rosen as srosen

    x0 = np.tile([-1.2, 1.0], 25)
    res = fad.minimize(rosen_vec, x0, subproblem="gltr")
    assert res.success and np.max(np.abs(res.x - 1)) < 1e-6
    assert srosen(res.x) < 1e-12
    with pytest.raises(ValueError, match="subproblem"):
        fad.minimize(rosen_vec, x0, subproblem="dogleg")
    assert fad.minimize(rosen_vec, x0).success      # still usable


# ---------------------------------------------------------------------------
# the chained Rosenbrock at n = 1,000 (issue #19, item 6)
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("hessian", ["auto", "hvp"])
def test_minimize_chained_rosenbrock_1000_from_the_standard_start(hessian):
    # iterations grow linearly with n here (scipy's trust-krylov takes 2,749);
    # the bound is generous, the answer exact: all ones, gradient below gtol
    x0 = np.tile([-1.2, 1.0], 500)
    res = fad.minimize(rosen_products, x0, hessian=hessian, maxiter=20_000)
    assert res.success, res.message
    assert np.max(np.abs(res.jac)) <= 1e-8
    np.testing.assert_allclose(res.x, np.ones(1000), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.jac, so.rosen_der(res.x), rtol=0, atol=1e-9)
    assert res.nit <= 6000 and res.nhvp <= 60_000
    assert (res.nhess > 0) == (hessian == "auto")


def test_steihaug_predicted_decrease_and_exits():
    from fastad.optimize import _steihaug
    A, g = spd(30, 11)
    q = lambda p: g @ p + 0.5 * p @ A @ p                  # noqa: E731
    # interior: solves A p = -g to the tolerance, decrease -q(p)
    p, dec, boundary, used = _steihaug(lambda v: A @ v, g, 1e9, 1e-12, 100)
    assert not boundary and used <= 30
    np.testing.assert_allclose(p, np.linalg.solve(A, -g), rtol=1e-9)
    np.testing.assert_allclose(dec, -q(p), rtol=1e-12)
    # on the boundary: |p| = radius, the decrease still -q(p)
    r = 0.1 * np.linalg.norm(p)
    p, dec, boundary, _ = _steihaug(lambda v: A @ v, g, r, 1e-12, 100)
    assert boundary
    np.testing.assert_allclose(np.linalg.norm(p), r, rtol=1e-12)
    np.testing.assert_allclose(dec, -q(p), rtol=1e-12)
    # negative curvature: to the edge along it, decrease -q(p) > 0
    B = -np.eye(30)
    p, dec, boundary, used = _steihaug(lambda v: B @ v, g, 2.0, 1e-12, 100)
    assert boundary and used == 1
    np.testing.assert_allclose(np.linalg.norm(p), 2.0, rtol=1e-12)
    np.testing.assert_allclose(dec, -(g @ p + 0.5 * p @ B @ p), rtol=1e-12)
    assert dec > 0


# ---------------------------------------------------------------------------
# solvers inside a transform: a clear refusal, not a mixed-recordings error
# ---------------------------------------------------------------------------

def _quartic(x):
    return np.sum((x - 1.0) ** 2) + np.sum(x ** 4)


@pytest.mark.parametrize("solve,who", [
    (lambda a: fad.minimize(lambda x: _quartic(x) * a, np.zeros(3)).x, "minimize"),
    (lambda a: fad.root(lambda x: x ** 3 - a, np.ones(3)).x, "root"),
    (lambda a: fad.optimize.objective(lambda x: _quartic(x) * a, np.zeros(3))[1](np.ones(3)),
     "optimize.objective"),
])
def test_solver_closing_over_traced_values_is_refused(solve, who):
    with pytest.raises(fad.TapeError, match=rf"fastad\.{re.escape(who)}: f uses values traced "
                                            r"by the enclosing transform .*\.value"):
        fad.grad(lambda a: np.sum(solve(a)))(2.0)
    # fastad stays usable, and the same solve on plain numbers works
    assert np.allclose(fad.root(lambda x: x ** 3 - 8.0, np.ones(3)).x, 2.0)


@pytest.mark.parametrize("who", ["minimize", "root"])
def test_solver_with_traced_start_is_refused(who):
    solver = getattr(fad, who)
    fn = _quartic if who == "minimize" else (lambda x: x ** 3 - 8.0)
    with pytest.raises(TypeError, match=rf"fastad\.{who}: x0 holds values traced by the "
                                        r"enclosing transform"):
        fad.grad(lambda a: np.sum(solver(fn, np.ones(3) * a).x))(2.0)


def test_solver_on_constants_inside_a_transform():
    # a minimizer that does not depend on the differentiated value is a constant:
    # d/da [a * sum(x*)] = sum(x*), with x* the root of 2(x - 1) + 4x^3 = 0
    xs = so.brentq(lambda t: 2 * (t - 1) + 4 * t ** 3, 0.0, 1.0)
    g = fad.grad(lambda a: a * np.sum(fad.minimize(_quartic, np.zeros(3)).x))(2.0)
    assert abs(g - 3 * xs) < 1e-7
