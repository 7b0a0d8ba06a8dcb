"""Second order: fad.hessian, fad.hvp, Tape.hvp / Tape.hessian / Tape.at, and
second derivatives through primitives (forward-over-reverse).

Every Hessian is compared with an independent answer: scipy.optimize.rosen_hess
/ rosen_hess_prod, a formula written out by hand, a closed form (A^T A,
X^T diag(s(1-s)) X, diag(s) - s s^T, 2 A^-T A^-1, ...) or central finite
differences of fad.grad (a first-order result, tested elsewhere).

A docstring that starts with BUG describes the bug its test was written
against (fixed since: the test asserts the correct behaviour).
"""
import math

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

import fastad as fad
from conftest import (close, fd_close, fd_hessian, fd_jacobian, rosen_loop, rosen_vec,
                      sigmoid_np, softmax_np)


def still_works():
    """The library is usable after an error."""
    close(fad.grad(lambda x: x * x * x)(2.0), 12.0, rtol=1e-10, atol=1e-10)
    close(fad.hessian(lambda x: x[0] ** 2 * x[1])(np.array([3.0, 5.0])),
          [[10.0, 6.0], [6.0, 0.0]], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# extended Rosenbrock against scipy
# ---------------------------------------------------------------------------

ROSENS = [pytest.param(rosen_loop, id="loop"), pytest.param(rosen_vec, id="vectorized")]


@pytest.mark.parametrize("f", ROSENS)
@pytest.mark.parametrize("n", [8, 30])
def test_rosenbrock_hessian_matches_scipy(f, n):
    rng = np.random.default_rng(n)
    for x in (rng.normal(size=n), np.tile([-1.2, 1.0], n // 2), np.ones(n)):
        H = fad.hessian(f)(x)
        assert H.shape == (n, n)
        close(H, rosen_hess(x), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("f", ROSENS)
@pytest.mark.parametrize("n", [8, 30])
def test_rosenbrock_hvp_single_direction_matches_scipy(f, n):
    rng = np.random.default_rng(100 + n)
    x, v = rng.normal(size=n), rng.normal(size=n)
    Hv = fad.hvp(f, x, v)
    assert Hv.shape == (n,)
    close(Hv, rosen_hess_prod(x, v), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("f", ROSENS)
@pytest.mark.parametrize("n", [8, 30])
def test_rosenbrock_hvp_five_directions_at_once(f, n):
    rng = np.random.default_rng(200 + n)
    x, V = rng.normal(size=n), rng.normal(size=(5, n))
    HV = fad.hvp(f, x, V)
    assert HV.shape == (5, n)
    for j in range(5):
        close(HV[j], rosen_hess_prod(x, V[j]), rtol=1e-12, atol=1e-9)
        close(HV[j], fad.hvp(f, x, V[j]), rtol=1e-13, atol=1e-12)


def test_hessian_of_rosenbrock_scalar_input_value_is_consistent():
    # scalar f of a float: the Hessian is a float-shaped number
    h = fad.hessian(lambda t: 100.0 * (1.5 - t ** 2) ** 2 + (1.0 - t) ** 2)(0.8)
    assert np.shape(h) == ()
    # d2/dt2 = 100 * (12 t^2 - 4 * 1.5) + 2
    close(h, 100.0 * (12 * 0.8 ** 2 - 6.0) + 2.0, rtol=1e-10, atol=1e-10)


def test_hvp_with_matrix_shaped_input():
    # f(W) = sum(tanh(W)^2) elementwise -> Hessian diagonal in W's elements
    rng = np.random.default_rng(7)
    W, V = rng.normal(size=(3, 4)), rng.normal(size=(6, 3, 4))
    t = np.tanh(W)
    d2 = 2 * (1 - t ** 2) ** 2 - 4 * t ** 2 * (1 - t ** 2)   # (tanh^2)''
    out = fad.hvp(lambda w: fad.sum(fad.tanh(w) ** 2), W, V)
    assert out.shape == (6, 3, 4)
    close(out, d2[None] * V, rtol=1e-12, atol=1e-12)
    H = fad.hessian(lambda w: fad.sum(fad.tanh(w) ** 2))(W)
    assert H.shape == (3, 4, 3, 4)
    close(H.reshape(12, 12), np.diag(d2.reshape(-1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("f", ROSENS)
def test_rosenbrock_hessian_larger_than_one_chunk(f):
    # n = 300 > 128 directions: the Hessian is assembled from several chunks
    x = np.random.default_rng(300).normal(size=300)
    close(fad.hessian(f)(x), rosen_hess(x), rtol=1e-12, atol=1e-9)


def test_hvp_shapes_and_errors():
    f = lambda x: fad.sum(x ** 3)
    x = np.array([1.0, 2.0, 3.0])
    close(fad.hvp(lambda t: t ** 3, 2.0, 1.5), 18.0, rtol=1e-10, atol=1e-10)
    close(fad.hvp(lambda t: t ** 3, 2.0, np.array([1.0, 2.0])), [12.0, 24.0],
          rtol=1e-10, atol=1e-10)
    out = fad.hvp(f, x, x[None])
    assert out.shape == (1, 3)
    close(out[0], 6 * x * x, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="direction"):
        fad.hvp(f, x, np.ones(4))
    with pytest.raises(ValueError, match="direction"):
        fad.hvp(f, x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="scalar"):
        fad.hessian(lambda x: x ** 2)(x)
    with pytest.raises(ValueError, match="scalar"):
        fad.hvp(lambda x: x ** 2, x, x)
    tape = fad.record(f, x)
    with pytest.raises(ValueError, match="shape"):
        tape.hessian(np.ones(4))
    with pytest.raises(ValueError, match="direction"):
        tape.at(x).hvp(np.ones(2))
    # integer and list inputs are converted to float64
    close(fad.hessian(lambda x: x[0] ** 2 * x[1])(np.array([1, 2])), [[4.0, 2.0], [2.0, 0.0]],
          rtol=1e-10, atol=1e-10)
    close(fad.hessian(lambda x: x[0] * x[1])([1.0, 2.0]), [[0.0, 1.0], [1.0, 0.0]],
          rtol=1e-10, atol=1e-10)
    # linear and constant functions have a zero Hessian
    close(fad.hessian(lambda x: x[0] + 2.0 * fad.sum(x))(x), np.zeros((3, 3)), rtol=0, atol=0)
    close(fad.hessian(lambda x: 3.0)(x), np.zeros((3, 3)), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# array blocks: matmul, dot, concatenate, stack, reshape, selections, where
# ---------------------------------------------------------------------------

def test_block_second_order_rules():
    rng = np.random.default_rng(5)
    n = 5
    x, M = rng.normal(size=n), rng.normal(size=(n, n))
    ones = np.ones(n)
    close(fad.hessian(lambda x: x @ M @ x)(x), M + M.T, rtol=1e-12, atol=1e-12)
    close(fad.hessian(lambda x: fad.dot(x, x) * fad.sum(x))(x),
          2 * x.sum() * np.eye(n) + 2 * (np.outer(x, ones) + np.outer(ones, x)),
          rtol=1e-12, atol=1e-12)
    close(fad.hessian(lambda x: fad.sum(fad.concatenate([x, x ** 2]) ** 2))(x),
          np.diag(2 + 12 * x ** 2), rtol=1e-12, atol=1e-12)
    close(fad.hessian(lambda x: fad.sum(fad.stack([x, x ** 2]) ** 2))(x),
          np.diag(2 + 12 * x ** 2), rtol=1e-12, atol=1e-12)
    close(fad.hessian(lambda x: fad.mean(x ** 3))(x), np.diag(6 * x / n), rtol=1e-12, atol=1e-14)
    close(fad.hessian(lambda x: fad.sum(x * x[::-1]))(x), 2 * np.fliplr(np.eye(n)),
          rtol=0, atol=1e-14)
    # sum(R^T @ y), R = reshape(x[:4], (2, 2)), y = x[:2]: x0 (x0 + x1) + x1 (x2 + x3)
    H = np.zeros((n, n))
    H[0, 0] = 2.0
    H[0, 1] = H[1, 0] = H[1, 2] = H[2, 1] = H[1, 3] = H[3, 1] = 1.0
    close(fad.hessian(lambda x: fad.sum(fad.transpose(fad.reshape(x[:4], (2, 2))) @ x[:2]))(x),
          H, rtol=0, atol=1e-14)
    # a selection (max) picks one element: its curvature only
    i = int(np.argmax(x ** 2))
    close(fad.hessian(lambda x: np.max(x ** 2))(x), 2.0 * np.diag(np.arange(n) == i),
          rtol=0, atol=1e-14)
    # matmul of two inputs: f(z) = sum((A B)^2), A = z[:6] (2x3), B = z[6:] (3x2)
    f = lambda z: fad.sum((fad.reshape(z[:6], (2, 3)) @ fad.reshape(z[6:], (3, 2))) ** 2)
    z = rng.normal(size=12)
    fd_close(fad.hessian(f)(z), fd_hessian(f, z), atol=1e-6, scale_atol=True)


@pytest.mark.parametrize("form", ["array", "scalar"])
def test_where_sqrt_strong_zero_hessian(form):
    # the classic where(x > 0, sqrt(x), 0): the unselected side contributes exactly 0
    x = np.array([1.0, -2.0, 4.0, 0.0, -0.5])
    if form == "array":
        f = lambda x: fad.sum(fad.where(x > 0, fad.sqrt(x), 0.0))
    else:
        f = lambda x: sum(fad.where(x[i] > 0, fad.sqrt(x[i]), 0.0) for i in range(5))
    expected = np.diag([-0.25, 0.0, -0.25 * 4.0 ** -1.5, 0.0, 0.0])
    with np.errstate(all="ignore"):
        H = fad.hessian(f)(x)
        Hv = fad.hvp(f, x, np.ones(5))
    close(H, expected, rtol=0, atol=0)
    close(Hv, expected @ np.ones(5), rtol=0, atol=0)


def test_where_sqrt_hessian_emits_no_runtime_warning():
    # grad and hvp of this function are silent; the Hessian should be too
    import warnings
    x = np.array([1.0, -2.0, 4.0, 0.0, -0.5])
    f = lambda x: fad.sum(fad.where(x > 0, fad.sqrt(x), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fad.grad(f)(x)
        fad.hvp(f, x, np.ones(5))
        fad.hessian(f)(x)


def test_second_order_zero_direction_is_a_strong_zero_like_in_jvp():
    """BUG: f(x) = sqrt(x0) + x1**2 at x0 = 0 is separable, so H[1, 0] must
    equal H[0, 1] = 0 and H e1 = [0, 2].  jvp treats a zero tangent as a strong
    zero (forward_tangent / _axpy skip it even where sqrt' = inf), but
    reverse_second (k = 1 and k lanes) and Elementwise.reverse2 compute
    g * (f_xx * 0) = g * (-inf * 0) = NaN, so the Hessian is not even
    symmetric: got [[-inf, 0], [nan, 2]]."""
    x = np.array([0.0, 1.0])
    e1 = np.array([0.0, 1.0])
    for f in (lambda x: fad.sqrt(x[0]) + x[1] ** 2,                 # scalar nodes
              lambda x: fad.sum(fad.sqrt(x[:1])) + x[1] ** 2):       # an array block
        with np.errstate(all="ignore"):
            assert fad.jvp(f, x, e1)[1] == 2.0                        # first order: fine
            H = fad.hessian(f)(x)
            assert H[0, 1] == 0.0
            assert H[1, 0] == 0.0
            np.testing.assert_array_equal(fad.hvp(f, x, e1), [0.0, 2.0])


def test_pickled_tape_replays_hessian():
    import pickle
    x = np.array([0.3, -1.2, 0.8])
    tape = fad.record(mixed, np.abs(x) + 0.5)
    tape2 = pickle.loads(pickle.dumps(tape))
    x2 = np.array([0.9, 0.4, 1.7])
    close(tape2.hessian(x2), mixed_hessian(x2), rtol=1e-12, atol=1e-12)
    close(tape2.at(x2).hvp(np.ones(3)), mixed_hessian(x2) @ np.ones(3), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# an analytic Hessian written out by hand
# ---------------------------------------------------------------------------

def mixed(x):
    x0, x1, x2 = x[0], x[1], x[2]
    return (fad.exp(x0 * x1) + fad.sin(x1) * fad.log(x2) + x0 ** 3 / x2
            + fad.arctan2(x0, x2) + fad.sqrt(x0 ** 2 + x1 ** 2) + fad.tanh(x0 - x2) * x1 ** 2)


def mixed_hessian(x):
    x0, x1, x2 = (float(v) for v in x)
    H = np.zeros((3, 3))
    # exp(x0 x1)
    e = math.exp(x0 * x1)
    H[0, 0] += e * x1 ** 2
    H[1, 1] += e * x0 ** 2
    H[0, 1] += e * (1 + x0 * x1)
    # sin(x1) log(x2)
    H[1, 1] += -math.sin(x1) * math.log(x2)
    H[1, 2] += math.cos(x1) / x2
    H[2, 2] += -math.sin(x1) / x2 ** 2
    # x0^3 / x2
    H[0, 0] += 6 * x0 / x2
    H[0, 2] += -3 * x0 ** 2 / x2 ** 2
    H[2, 2] += 2 * x0 ** 3 / x2 ** 3
    # arctan2(a, b) with a = x0, b = x2
    r2 = x0 ** 2 + x2 ** 2
    H[0, 0] += -2 * x0 * x2 / r2 ** 2
    H[2, 2] += 2 * x0 * x2 / r2 ** 2
    H[0, 2] += (x0 ** 2 - x2 ** 2) / r2 ** 2
    # sqrt(x0^2 + x1^2)
    r = math.hypot(x0, x1)
    H[0, 0] += x1 ** 2 / r ** 3
    H[1, 1] += x0 ** 2 / r ** 3
    H[0, 1] += -x0 * x1 / r ** 3
    # tanh(x0 - x2) x1^2
    t = math.tanh(x0 - x2)
    t1, t2 = 1 - t * t, -2 * t * (1 - t * t)
    H[0, 0] += x1 ** 2 * t2
    H[2, 2] += x1 ** 2 * t2
    H[0, 2] += -x1 ** 2 * t2
    H[0, 1] += 2 * x1 * t1
    H[1, 2] += -2 * x1 * t1
    H[1, 1] += 2 * t
    return np.triu(H) + np.triu(H, 1).T


@pytest.mark.parametrize("x", [[0.7, -0.4, 1.9], [-1.1, 0.3, 0.6], [0.2, 1.3, 3.0]])
def test_mixed_transcendental_hessian_by_hand(x):
    x = np.array(x)
    expected = mixed_hessian(x)
    close(fad.hessian(mixed)(x), expected, rtol=1e-12, atol=1e-12)
    # the same function through NumPy ufuncs on Vars
    def mixed_np(x):
        x0, x1, x2 = x[0], x[1], x[2]
        return (np.exp(x0 * x1) + np.sin(x1) * np.log(x2) + x0 ** 3 / x2
                + np.arctan2(x0, x2) + np.sqrt(x0 ** 2 + x1 ** 2) + np.tanh(x0 - x2) * x1 ** 2)
    close(fad.hessian(mixed_np)(x), expected, rtol=1e-12, atol=1e-12)
    v = np.array([0.3, -1.2, 0.5])
    close(fad.hvp(mixed, x, v), expected @ v, rtol=1e-12, atol=1e-12)


def test_mixed_hand_formula_agrees_with_finite_differences():
    # guards the hand formula itself
    x = np.array([0.7, -0.4, 1.9])
    fd_close(mixed_hessian(x), fd_hessian(mixed, x), atol=1e-6, scale_atol=True)


# ---------------------------------------------------------------------------
# every math function's second derivative
# ---------------------------------------------------------------------------

def _s(z):
    return 1 / (1 + math.exp(-z))


UNARY = [
    # name, function, f'' formula, points
    ("sin", fad.sin, lambda x: -math.sin(x), [-2.0, 0.3, 1.4]),
    ("cos", fad.cos, lambda x: -math.cos(x), [-2.0, 0.3, 1.4]),
    ("tan", fad.tan, lambda x: 2 * math.tan(x) * (1 + math.tan(x) ** 2), [-1.0, 0.3, 1.2]),
    ("arcsin", fad.arcsin, lambda x: x / (1 - x * x) ** 1.5, [-0.7, 0.2, 0.9]),
    ("arccos", fad.arccos, lambda x: -x / (1 - x * x) ** 1.5, [-0.7, 0.2, 0.9]),
    ("arctan", fad.arctan, lambda x: -2 * x / (1 + x * x) ** 2, [-2.0, 0.3, 1.4]),
    ("sinh", fad.sinh, math.sinh, [-2.0, 0.3, 1.4]),
    ("cosh", fad.cosh, math.cosh, [-2.0, 0.3, 1.4]),
    ("tanh", fad.tanh, lambda x: -2 * math.tanh(x) * (1 - math.tanh(x) ** 2), [-2.0, 0.3, 1.4]),
    ("exp", fad.exp, math.exp, [-2.0, 0.3, 1.4]),
    ("expm1", fad.expm1, math.exp, [-2.0, 1e-3, 1.4]),
    ("log", fad.log, lambda x: -1 / x ** 2, [0.1, 0.8, 5.0]),
    ("log1p", fad.log1p, lambda x: -1 / (1 + x) ** 2, [-0.5, 1e-3, 5.0]),
    ("log2", fad.log2, lambda x: -1 / (x * x * math.log(2)), [0.1, 0.8, 5.0]),
    ("log10", fad.log10, lambda x: -1 / (x * x * math.log(10)), [0.1, 0.8, 5.0]),
    ("sqrt", fad.sqrt, lambda x: -0.25 * x ** -1.5, [0.1, 0.8, 5.0]),
    ("square", fad.square, lambda x: 2.0, [-2.0, 0.3, 1.4]),
    ("abs", fad.abs, lambda x: 0.0, [-2.0, 0.3, 1.4]),
    ("sign", fad.sign, lambda x: 0.0, [-2.0, 0.3, 1.4]),
    ("relu", fad.relu, lambda x: 0.0, [-2.0, 0.3, 1.4]),
    ("sigmoid", fad.sigmoid, lambda x: _s(x) * (1 - _s(x)) * (1 - 2 * _s(x)), [-2.0, 0.3, 1.4]),
    ("softplus", fad.softplus, lambda x: _s(x) * (1 - _s(x)), [-2.0, 0.3, 1.4]),
    ("erf", fad.erf, lambda x: -2 * x * 2 / math.sqrt(math.pi) * math.exp(-x * x),
     [-1.5, 0.3, 1.1]),
    ("neg", lambda t: -t, lambda x: 0.0, [-2.0, 0.3]),
    ("pow3.5", lambda t: t ** 3.5, lambda x: 3.5 * 2.5 * x ** 1.5, [0.4, 2.0]),
    ("pow-2", lambda t: t ** -2, lambda x: 6 * x ** -4, [-1.5, 0.4, 2.0]),
    ("pow_int3", lambda t: t ** 3, lambda x: 6 * x, [-1.5, 0.4, 2.0]),
    ("power", lambda t: fad.power(t, 2.5), lambda x: 2.5 * 1.5 * x ** 0.5, [0.4, 2.0]),
    ("rpow", lambda t: 3.0 ** t, lambda x: math.log(3.0) ** 2 * 3.0 ** x, [-1.0, 0.5, 2.0]),
    ("recip", lambda t: 2.0 / t, lambda x: 4.0 / x ** 3, [-1.5, 0.4, 2.0]),
]


@pytest.mark.parametrize("name,fn,d2,points", UNARY, ids=[u[0] for u in UNARY])
def test_unary_second_derivative_scalar(name, fn, d2, points):
    for p in points:
        H = fad.hessian(lambda x: fn(x[0]))(np.array([p]))
        assert H.shape == (1, 1)
        close(H[0, 0], d2(p), rtol=1e-11, atol=1e-12)
        # a float input
        close(fad.hessian(fn)(p), d2(p), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name,fn,d2,points", UNARY, ids=[u[0] for u in UNARY])
def test_unary_second_derivative_array_block(name, fn, d2, points):
    x = np.array(points, dtype=np.float64)
    H = fad.hessian(lambda a: fad.sum(fn(a) * np.arange(1.0, len(points) + 1)))(x)
    expected = np.diag([d2(p) * (i + 1) for i, p in enumerate(points)])
    close(H, expected, rtol=1e-11, atol=1e-12)


def _pow_hess(x, y):
    return np.array([[y * (y - 1) * x ** (y - 2), x ** (y - 1) * (1 + y * math.log(x))],
                     [x ** (y - 1) * (1 + y * math.log(x)), x ** y * math.log(x) ** 2]])


def _atan2_hess(a, b):
    r2 = a * a + b * b
    return np.array([[-2 * a * b, a * a - b * b], [a * a - b * b, 2 * a * b]]) / r2 ** 2


def _hypot_hess(a, b):
    r = math.hypot(a, b)
    return np.array([[b * b, -a * b], [-a * b, a * a]]) / r ** 3


BINARY = [
    ("pow", lambda a, b: a ** b, _pow_hess, [(1.3, 2.7), (0.6, -1.4), (2.0, 0.5)]),
    ("power", fad.power, _pow_hess, [(1.3, 2.7), (0.6, -1.4)]),
    ("arctan2", fad.arctan2, _atan2_hess, [(0.4, 1.3), (-1.2, 0.5), (0.7, -2.0)]),
    ("hypot", fad.hypot, _hypot_hess, [(0.4, 1.3), (-1.2, 0.5), (3.0, -4.0)]),
    ("mul", lambda a, b: a * b, lambda a, b: np.array([[0.0, 1.0], [1.0, 0.0]]),
     [(0.4, 1.3), (-1.2, 0.5)]),
    ("div", lambda a, b: a / b,
     lambda a, b: np.array([[0.0, -1 / b ** 2], [-1 / b ** 2, 2 * a / b ** 3]]),
     [(0.4, 1.3), (-1.2, 0.5), (2.0, -3.0)]),
    ("sub", lambda a, b: a - b, lambda a, b: np.zeros((2, 2)), [(0.4, 1.3)]),
    ("maximum", lambda a, b: fad.maximum(a * a, b), lambda a, b: np.diag([2.0, 0.0]),
     [(2.0, 1.0)]),
    ("minimum", lambda a, b: fad.minimum(a * a, b * b * b),
     lambda a, b: np.diag([0.0, 6 * b]), [(2.0, 1.0)]),
]


@pytest.mark.parametrize("name,fn,hess,points", BINARY, ids=[b[0] for b in BINARY])
def test_binary_second_derivatives_scalar(name, fn, hess, points):
    for a, b in points:
        H = fad.hessian(lambda x: fn(x[0], x[1]))(np.array([a, b]))
        close(H, hess(a, b), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name,fn,hess,points", BINARY, ids=[b[0] for b in BINARY])
def test_binary_second_derivatives_array_block(name, fn, hess, points):
    # z = [a_1..a_m, b_1..b_m]; f = sum(fn(a, b)): 2x2 blocks on the diagonals
    m = len(points)
    z = np.array([p[0] for p in points] + [p[1] for p in points])
    H = fad.hessian(lambda z: fad.sum(fn(z[:m], z[m:])))(z)
    expected = np.zeros((2 * m, 2 * m))
    for i, (a, b) in enumerate(points):
        h = hess(a, b)
        for r in range(2):
            for c in range(2):
                expected[i + r * m, i + c * m] = h[r, c]
    close(H, expected, rtol=1e-11, atol=1e-12)


def test_binary_with_constant_operands():
    # x ** c, c ** x, arctan2(c, x), hypot(x, c), x / c, c / x with c a constant
    x = np.array([0.8, 1.7])
    f = lambda x: (x[0] ** 1.5 + 2.0 ** x[1] + fad.arctan2(0.5, x[0]) + fad.hypot(x[1], 2.0)
                   + x[0] / 3.0 + 4.0 / x[1])
    a, b = 0.8, 1.7
    h00 = 1.5 * 0.5 * a ** -0.5 + _atan2_hess(0.5, a)[1, 1]
    h11 = math.log(2.0) ** 2 * 2.0 ** b + _hypot_hess(b, 2.0)[0, 0] + 8.0 / b ** 3
    close(fad.hessian(f)(x), np.diag([h00, h11]), rtol=1e-12, atol=1e-12)


def _x_pow_y(z):
    return z[0] ** z[1]


def _x_pow_y_array(z):
    return fad.sum(z[:1] ** z[1:])


@pytest.mark.parametrize("f", [_x_pow_y, _x_pow_y_array], ids=["scalar", "array"])
def test_pow_mixed_second_partial_at_zero_exponent(f):
    """BUG: d2(x**y)/dxdy at y == 0 is returned as 0; it is x**(y-1) (1 + y ln x)
    = 1/x there.  fad_second(FAD_POW) sets dxy = 0 whenever y == 0 (copying the
    d0 convention for x**0), so every Hessian path (fad.hessian, fad.hvp,
    Tape.hessian, Tape.at().hvp, array blocks via op_map2) is wrong and the
    Hessian disagrees with the Jacobian of fad.grad.
    Minimal input: f(z) = z[0] ** z[1] at z = (2, 0): H[0, 1] must be 0.5."""
    x = np.array([2.0, 0.0])
    expected = np.array([[0.0, 0.5], [0.5, math.log(2.0) ** 2]])
    # the Jacobian of the (correct) gradient agrees with the analytic Hessian
    g = fad.grad(f)
    col1 = fd_jacobian(g, x, relative=False)[:, 1]
    np.testing.assert_allclose(col1, expected[:, 1], atol=1e-6)
    np.testing.assert_allclose(fad.hessian(f)(x), expected, atol=1e-12)
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.hessian(x), expected, atol=1e-12)
    np.testing.assert_allclose(tape.at(x).hvp(np.array([0.0, 1.0])), expected[1], atol=1e-12)
    np.testing.assert_allclose(fad.hvp(f, x, np.array([0.0, 1.0])), expected[1], atol=1e-12)


def test_guard_pow_negative_base_integer_exponent():
    """x**3 at x < 0 (scalar node, array block, second order) is finite and right."""
    assert fad.grad(lambda x: x ** 3)(-2.0) == 12.0
    np.testing.assert_array_equal(fad.grad(lambda x: fad.sum(x ** 3))(np.array([-2.0, -1.0])), [12.0, 3.0])
    np.testing.assert_array_equal(fad.hessian(lambda x: fad.sum(x ** 3))(np.array([-2.0, -1.0])),
                                  [[-12.0, 0.0], [0.0, -6.0]])
    # an exponent on the tape: d/dx stays finite even though d/dy is NaN at x < 0
    g = fad.grad(_x_pow_y)(np.array([-2.0, 3.0]))
    assert g[0] == 12.0


def test_sigmoid_and_softplus_second_derivative_large_positive_argument():
    """BUG: sigmoid''(40) and softplus''(40) are returned as exactly 0.
    softplus'' = sigmoid' = exp(-40)/(1+exp(-40))**2 ~ 4.25e-18 (the value at
    -40 is right), sigmoid''(40) = sigmoid'(40) (1 - 2 sigmoid(40)) ~ -4.25e-18.
    fad_second computes them from v * (1 - v), which cancels for v == 1.0."""
    s1 = math.exp(-40.0) / (1.0 + math.exp(-40.0)) ** 2
    h_sp = fad.hessian(lambda z: fad.softplus(z[0]))(np.array([40.0]))[0, 0]
    assert h_sp == pytest.approx(s1, rel=1e-10, abs=0)
    h_sg = fad.hessian(lambda z: fad.sigmoid(z[0]))(np.array([40.0]))[0, 0]
    assert h_sg == pytest.approx(-s1, rel=1e-10, abs=0)


# ---------------------------------------------------------------------------
# losses with closed-form Hessians
# ---------------------------------------------------------------------------

def test_least_squares_hessian_is_AtA():
    rng = np.random.default_rng(11)
    A, b, w = rng.normal(size=(9, 5)), rng.normal(size=9), rng.normal(size=5)
    f = lambda w: 0.5 * fad.sum((A @ w - b) ** 2)
    close(fad.hessian(f)(w), A.T @ A, rtol=1e-12, atol=1e-12)
    V = rng.normal(size=(3, 5))
    close(fad.hvp(f, w, V), V @ (A.T @ A), rtol=1e-12, atol=1e-12)


def test_network_loss_hessian_wrt_weight_matrix_is_kron():
    # L(W) = 0.5 ||W X - T||_F^2, W (m, n): Hessian = kron(I_m, X X^T) (row-major W)
    rng = np.random.default_rng(12)
    m, n, B = 3, 4, 6
    X, T, W = rng.normal(size=(n, B)), rng.normal(size=(m, B)), rng.normal(size=(m, n))
    f = lambda W: 0.5 * fad.sum((W @ X - T) ** 2)
    H = fad.hessian(f)(W)
    assert H.shape == (m, n, m, n)
    close(H.reshape(m * n, m * n), np.kron(np.eye(m), X @ X.T), rtol=1e-12, atol=1e-12)
    # one sample, scalar-loop form of the same loss with a single input vector x
    x, t = X[:, 0], T[:, 0]

    def loop(Wf):
        s = 0.0
        for i in range(m):
            r = -t[i]
            for j in range(n):
                r = r + Wf[i * n + j] * x[j]
            s = s + 0.5 * r * r
        return s
    close(fad.hessian(loop)(W.reshape(-1)), np.kron(np.eye(m), np.outer(x, x)),
          rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["log_exp", "softplus", "loop"])
def test_logistic_loss_hessian(form):
    rng = np.random.default_rng(13)
    N, d = 20, 4
    X = rng.normal(size=(N, d))
    y = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    w = rng.normal(size=d) * 0.7
    if form == "log_exp":
        f = lambda w: fad.sum(fad.log(1.0 + fad.exp(-y * (X @ w))))
    elif form == "softplus":
        f = lambda w: fad.sum(fad.softplus(-y * (X @ w)))
    else:
        def f(w):
            s = 0.0
            for i in range(N):
                z = 0.0
                for j in range(d):
                    z = z + X[i, j] * w[j]
                s = s + fad.log(1.0 + fad.exp(-y[i] * z))
            return s
    s = sigmoid_np(X @ w)
    expected = X.T @ np.diag(s * (1 - s)) @ X
    close(fad.hessian(f)(w), expected, rtol=1e-11, atol=1e-12)
    v = rng.normal(size=d)
    close(fad.hvp(f, w, v), expected @ v, rtol=1e-11, atol=1e-12)


def test_two_layer_network_hessian_against_finite_differences():
    rng = np.random.default_rng(14)
    X, t = rng.normal(size=(5, 3)), rng.normal(size=5)
    shapes = [(3, 4), (4,), (4,), ()]

    def unpack(p):
        out, pos = [], 0
        for s in shapes:
            k = int(np.prod(s))
            out.append(p[pos] if s == () else p[pos:pos + k].reshape(s))
            pos += k
        return out

    def loss(p):
        W1, b1, w2, b2 = unpack(p)
        h = fad.tanh(X @ W1 + b1)
        return 0.5 * fad.sum((h @ w2 + b2 - t) ** 2)
    p = rng.normal(size=21) * 0.5
    fd_close(fad.hessian(loss)(p), fd_hessian(loss, p), atol=1e-6, scale_atol=True)


# ---------------------------------------------------------------------------
# replay: Tape.hvp / Tape.hessian / Tape.at
# ---------------------------------------------------------------------------

def branchy(x):
    s = fad.sum(fad.sin(x) * x ** 2)
    if x[0] > 0:
        s = s + x[0] ** 3 * x[1]
    else:
        s = s - fad.exp(x[1]) * x[0] ** 2
    return s


@pytest.mark.parametrize("f", [rosen_loop, rosen_vec, mixed, branchy],
                         ids=["rosen_loop", "rosen_vec", "mixed", "branchy"])
def test_replayed_hvp_and_hessian_equal_fresh(f):
    rng = np.random.default_rng(21)
    n = 3 if f is mixed else 6
    x0 = np.abs(rng.normal(size=n)) + 0.3
    tape = fad.record(f, x0)
    for _ in range(3):
        x = np.abs(rng.normal(size=n)) + 0.2
        v, V = rng.normal(size=n), rng.normal(size=(4, n))
        H = fad.hessian(f)(x)
        close(tape.hessian(x), H, rtol=1e-13, atol=1e-13)
        close(tape.hvp(x, v), fad.hvp(f, x, v), rtol=1e-13, atol=1e-13)
        close(tape.hvp(x, V), V @ H.T, rtol=1e-12, atol=1e-12)
        val, g, Hv = tape.value_gradient_hvp(x, v)
        close(val, float(np.asarray(f(x))) if f is not rosen_vec else rosen(x),
              rtol=1e-13, atol=1e-10)
        close(g, fad.grad(f)(x), rtol=1e-13, atol=1e-13)
        close(Hv, H @ v, rtol=1e-12, atol=1e-12)
    if f in (rosen_loop, rosen_vec):
        x = rng.normal(size=n)
        close(tape.hessian(x), rosen_hess(x), rtol=1e-12, atol=1e-9)
        close(tape.hvp(x, v), rosen_hess_prod(x, v), rtol=1e-12, atol=1e-9)
    # the recording point itself is still right after all the replays
    close(tape.hessian(x0), fad.hessian(f)(x0), rtol=1e-13, atol=1e-13)


def test_branch_change_raises_for_hvp_hessian_and_at():
    x_pos = np.array([0.5, 0.2, 1.0])
    x_neg = np.array([-0.5, 0.2, 1.0])
    tape = fad.record(branchy, x_pos)
    v = np.array([1.0, -1.0, 0.5])
    with pytest.raises(fad.BranchChangedError):
        tape.hvp(x_neg, v)
    with pytest.raises(fad.BranchChangedError):
        tape.hvp(x_neg, np.stack([v, v]))
    with pytest.raises(fad.BranchChangedError):
        tape.hessian(x_neg)
    with pytest.raises(fad.BranchChangedError):
        tape.value_gradient_hvp(x_neg, v)
    with pytest.raises(fad.BranchChangedError):
        tape.at(x_neg)
    # the tape still works on its own branch, and a fresh recording on the other
    x2 = np.array([1.5, -0.3, 0.4])
    close(tape.hvp(x2, v), fad.hvp(branchy, x2, v), rtol=1e-13, atol=1e-13)
    close(fad.hessian(branchy)(x_neg), fd_hessian(branchy, x_neg), rtol=1e-6, atol=1e-6)


def test_branch_change_raises_for_array_comparison():
    f = lambda x: fad.sum(fad.where(x > 0, x ** 3, -x ** 2))
    tape = fad.record(f, np.array([1.0, -2.0]))
    close(tape.hessian(np.array([2.0, -1.0])), np.diag([12.0, -2.0]), rtol=1e-10, atol=1e-10)
    with pytest.raises(fad.BranchChangedError):
        tape.hvp(np.array([-1.0, -2.0]), np.array([1.0, 0.0]))


@pytest.mark.parametrize("f", [rosen_loop, rosen_vec, mixed], ids=["loop", "vec", "mixed"])
def test_tape_point_value_gradient_hvp(f):
    rng = np.random.default_rng(31)
    n = 3 if f is mixed else 7
    x0 = np.abs(rng.normal(size=n)) + 0.3
    x1 = np.abs(rng.normal(size=n)) + 0.3
    tape = fad.record(f, x0)
    p = tape.at(x1)
    close(p.x, x1, rtol=0, atol=0)
    close(p.value, fad.value_and_grad(f)(x1)[0], rtol=1e-13, atol=1e-10)
    g = p.gradient()
    close(g, fad.grad(f)(x1), rtol=1e-13, atol=1e-13)
    v, V = rng.normal(size=n), rng.normal(size=(5, n))
    Hv = p.hvp(v)
    close(Hv, fad.hvp(f, x1, v), rtol=1e-13, atol=1e-13)
    HV = p.hvp(V)
    assert HV.shape == (5, n)
    close(HV, fad.hvp(f, x1, V), rtol=1e-13, atol=1e-13)
    # other replays of the same tape in between do not disturb the point
    x2 = np.abs(rng.normal(size=n)) + 0.3
    q = tape.at(x2)
    tape.hvp(x2, v)
    tape.gradient(x2)
    close(p.hvp(v), Hv, rtol=0, atol=0)
    close(p.gradient(), g, rtol=0, atol=0)
    close(q.hvp(v), fad.hvp(f, x2, v), rtol=1e-13, atol=1e-13)
    if f is not mixed:
        close(p.gradient(), rosen_der(x1), rtol=1e-12, atol=1e-9)
        close(p.hvp(v), rosen_hess_prod(x1, v), rtol=1e-12, atol=1e-9)


def test_tape_point_keeps_adjoints_consistent():
    # TapePoint caches the adjoints and second partials after its first product
    from scipy.optimize import rosen_der, rosen_hess_prod

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 12)
    tape = fad.record(rosen_loop, x)
    x2 = x + 0.1
    p = tape.at(x2)
    for _ in range(3):
        v = rng.standard_normal(12)
        np.testing.assert_allclose(p.hvp(v), rosen_hess_prod(x2, v), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(p.gradient(), rosen_der(x2), rtol=1e-12, atol=1e-10)
    V = rng.standard_normal((4, 12))
    np.testing.assert_allclose(p.hvp(V), [rosen_hess_prod(x2, v) for v in V], rtol=1e-12, atol=1e-10)
    q = tape.at(x)            # another point on the same tape does not disturb p
    np.testing.assert_allclose(q.gradient(), rosen_der(x), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(p.hvp(V[0]), rosen_hess_prod(x2, V[0]), rtol=1e-12, atol=1e-10)


def test_hessian_through_where_broadcast_and_reductions_matches_replay_and_at():
    def f(a):
        w = fad.where(a > 0, a, a[0])
        return fad.sum(w ** 3) + fad.sum(a.mean(axis=0) * a.mean(axis=-1, keepdims=True)) \
            + fad.sum(np.max(a, axis=1) ** 2)

    x = np.random.default_rng(1).standard_normal((3, 4))
    H = fad.hessian(f)(x)
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.hessian(x), H, rtol=1e-12, atol=1e-14)
    V = np.random.default_rng(2).standard_normal((3, 3, 4))
    np.testing.assert_allclose(tape.at(x).hvp(V), np.einsum("ijkl,nkl->nij", H, V),
                               rtol=1e-10, atol=1e-12)
    # the Hessian is the derivative of the gradient
    Hd = fd_jacobian(fad.grad(f), x, relative=False)
    np.testing.assert_allclose(H, Hd, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# primitives: second order through the vjp rule
# ---------------------------------------------------------------------------

def make_lse(vectorized=False, with_jvp=True, name="logsumexp"):
    def logsumexp(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))
    logsumexp.__name__ = logsumexp.__qualname__ = name
    prim = fad.primitive(logsumexp)

    if vectorized:
        @prim.defvjp(vectorized=True)
        def _(ybar, y, x):
            return np.reshape(ybar, (-1, 1)) * np.exp(x - y)
    else:
        @prim.defvjp
        def _(ybar, y, x):
            return ybar * np.exp(x - y)

    if with_jvp:
        @prim.defjvp
        def _(xdot, y, x):
            return np.sum(xdot * np.exp(x - y))
    return prim


@pytest.mark.parametrize("vectorized", [False, True], ids=["rule", "vectorized_rule"])
def test_logsumexp_primitive_hessian_is_softmax_jacobian(vectorized):
    lse = make_lse(vectorized)
    rng = np.random.default_rng(41)
    for x in (rng.normal(size=5), np.array([1000.0, 1001.0, 999.5]), np.zeros(4)):
        s = softmax_np(x)
        expected = np.diag(s) - np.outer(s, s)
        close(fad.hessian(lse)(x), expected, rtol=1e-12, atol=1e-14)
        V = rng.normal(size=(3, x.size))
        close(fad.hvp(lse, x, V), V @ expected, rtol=1e-12, atol=1e-14)
        close(fad.hvp(lse, x, V[0]), expected @ V[0], rtol=1e-12, atol=1e-14)


def test_logsumexp_primitive_composed_and_builtin():
    lse = make_lse()
    rng = np.random.default_rng(42)
    A, x = rng.normal(size=(6, 4)), rng.normal(size=4)
    s = softmax_np(A @ x)
    expected = A.T @ (np.diag(s) - np.outer(s, s)) @ A
    close(fad.hessian(lambda x: lse(A @ x))(x), expected, rtol=1e-11, atol=1e-13)
    close(fad.hessian(lambda x: fad.logsumexp(A @ x))(x), expected, rtol=1e-11, atol=1e-13)
    # a primitive on a replayed tape at a new point
    tape = fad.record(lambda x: lse(A @ x) + fad.sum(x ** 2), x)
    x2 = rng.normal(size=4)
    s2 = softmax_np(A @ x2)
    close(tape.hessian(x2), A.T @ (np.diag(s2) - np.outer(s2, s2)) @ A + 2 * np.eye(4),
          rtol=1e-11, atol=1e-13)


def test_primitive_in_scalar_loop_second_order():
    @fad.primitive
    def cube(t):
        return t ** 3

    @cube.defvjp
    def _(ybar, y, t):
        return 3.0 * ybar * t * t

    @cube.defjvp
    def _(tdot, y, t):
        return 3.0 * t * t * tdot

    f = lambda x: cube(x[0]) * x[1] + cube(x[1] * 2.0)
    x = np.array([0.7, -1.3])
    a, b = x
    expected = np.array([[6 * a * b, 3 * a * a], [3 * a * a, 48 * b]])
    close(fad.hessian(f)(x), expected, rtol=1e-12, atol=1e-12)


def test_primitive_without_jvp_rule_hessian_transposes_the_vjp_rule():
    """Formerly a NotImplementedError: the tangent sweep now transposes the
    vjp rule (issue #17; more in tests/test_primitive_modes.py)."""
    lse = make_lse(with_jvp=False, name="lse_nojvp")
    x = np.array([0.1, 0.2, 0.3])
    close(fad.grad(lse)(x), softmax_np(x), rtol=1e-12, atol=1e-10)
    s = softmax_np(x)
    close(fad.hessian(lse)(x), np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-14)
    still_works()


def test_solve_hessian_wrt_b():
    rng = np.random.default_rng(51)
    n = 5
    A = rng.normal(size=(n, n)) + n * np.eye(n)
    b = rng.normal(size=n)
    Ainv = np.linalg.inv(A)
    expected = 2 * Ainv.T @ Ainv
    f = lambda b: fad.sum(fad.solve(A, b) ** 2)
    close(fad.hessian(f)(b), expected, rtol=1e-10, atol=1e-12)
    v = rng.normal(size=(3, n))
    close(fad.hvp(f, b, v), v @ expected.T, rtol=1e-10, atol=1e-12)


def test_solve_hessian_wrt_A_and_multiple_rhs_against_finite_differences():
    rng = np.random.default_rng(52)
    n = 3
    A = rng.normal(size=(n, n)) + n * np.eye(n)
    b = rng.normal(size=n)
    B = rng.normal(size=(n, 2))
    f = lambda A: fad.sum(fad.solve(A, b) ** 2)
    H = fad.hessian(f)(A)
    assert H.shape == (n, n, n, n)
    fd_close(H, fd_hessian(f, A), atol=1e-6, scale_atol=True)
    g = lambda A: fad.sum(fad.sin(fad.solve(A, B)))
    fd_close(fad.hessian(g)(A), fd_hessian(g, A), atol=1e-6, scale_atol=True)
    # both A and b at once: z = [A.ravel(), b]
    h = lambda z: fad.sum(fad.solve(fad.reshape(z[:n * n], (n, n)), z[n * n:]) ** 2)
    z = np.concatenate([A.ravel(), b])
    fd_close(fad.hessian(h)(z), fd_hessian(h, z), atol=1e-6, scale_atol=True)


def test_norm_hessian():
    rng = np.random.default_rng(53)
    x = rng.normal(size=4)
    r = np.linalg.norm(x)
    expected = (np.eye(4) - np.outer(x, x) / r ** 2) / r
    close(fad.hessian(fad.norm)(x), expected, rtol=1e-12, atol=1e-12)
    close(fad.hessian(lambda x: fad.norm(x) ** 2)(x), 2 * np.eye(4), rtol=1e-12, atol=1e-12)
    A, t = rng.normal(size=(5, 4)), rng.normal(size=5)
    f = lambda x: fad.norm(A @ x - t) + fad.norm(x) ** 3
    fd_close(fad.hessian(f)(x), fd_hessian(f, x), atol=1e-6, scale_atol=True)
    W = rng.normal(size=(2, 3))
    g = lambda W: fad.norm(fad.tanh(W))
    fd_close(fad.hessian(g)(W), fd_hessian(g, W), atol=1e-6, scale_atol=True)


def test_primitive_rule_using_inv_raises_naming_primitive():
    @fad.primitive
    def inv_trace(A):
        return float(np.trace(np.linalg.inv(A)))

    @inv_trace.defvjp
    def _(ybar, y, A):
        Ai = np.linalg.inv(np.asarray(A))   # np.asarray: not differentiable by fastad
        return -ybar * (Ai @ Ai).T

    @inv_trace.defjvp
    def _(Adot, y, A):
        Ai = np.linalg.inv(A)
        return -np.trace(Ai @ Adot @ Ai)

    A = np.array([[3.0, 1.0], [0.5, 2.0]])
    Ai = np.linalg.inv(A)
    close(fad.grad(inv_trace)(A), -(Ai @ Ai).T, rtol=1e-12, atol=1e-10)   # first order is fine
    with pytest.raises(NotImplementedError, match="inv_trace"):
        fad.hessian(inv_trace)(A)
    with pytest.raises(NotImplementedError, match="inv_trace"):
        fad.hvp(inv_trace, A, np.eye(2))
    still_works()
    close(fad.grad(inv_trace)(A), -(Ai @ Ai).T, rtol=1e-12, atol=1e-10)


def test_primitive_rule_using_float_raises_naming_primitive():
    @fad.primitive
    def sq_float(t):
        return t * t

    @sq_float.defvjp
    def _(ybar, y, t):
        return 2.0 * float(t) * ybar        # float() of a Var cannot be differentiated

    @sq_float.defjvp
    def _(tdot, y, t):
        return 2.0 * t * tdot

    close(fad.grad(lambda x: sq_float(x[0]) * x[1])(np.array([3.0, 2.0])), [12.0, 9.0],
          rtol=1e-10, atol=1e-10)
    with pytest.raises(NotImplementedError, match="sq_float"):
        fad.hessian(lambda x: sq_float(x[0]) * x[1])(np.array([3.0, 2.0]))
    with pytest.raises(NotImplementedError, match="sq_float"):
        fad.hessian(sq_float)(3.0)
    still_works()


@fad.primitive
def _psqrt(x):
    return np.sqrt(x)


@_psqrt.defvjp
def _psqrt_vjp(ybar, y, x):
    return ybar * 0.5 / np.sqrt(x)


@_psqrt.defjvp
def _psqrt_jvp(xdot, y, x):
    return xdot * 0.5 / np.sqrt(x)


def test_hessian_strong_zero_for_unselected_scalar_primitive():
    """BUG: the classic `where(x > 0, sqrt(x), 0)` with sqrt as a custom
    primitive: the gradient is right (PrimitiveBlock/ScalarPrimitiveBlock.reverse
    skip a zero cotangent: 'the rule is not even called'), but reverse2 has no
    such skip and calls the rule at x = -1 with ybar = 0, so 0 * NaN poisons
    the Hessian: expected [[0, 0], [0, 2]], got [[nan, 0], [0, 2]]."""
    def f(x):
        return fad.where(x[0] > 0, _psqrt(x[0]), 0.0) + x[1] ** 2

    x = np.array([-1.0, 2.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fad.grad(f)(x), [0.0, 4.0])
        np.testing.assert_array_equal(fad.hessian(f)(x), [[0.0, 0.0], [0.0, 2.0]])
        np.testing.assert_array_equal(fad.record(f, x).at(x).hvp(np.array([1.0, 0.0])), [0.0, 0.0])


def test_hessian_strong_zero_for_array_primitive_with_zero_cotangent():
    """BUG: same for an array primitive whose whole cotangent is zero
    (multiplied by 0.0): grad is [8, -2] but the Hessian comes out
    [[2, nan], [0, nan]] (not even symmetric) instead of diag(2, 2)."""
    def f(x):
        return fad.sum(_psqrt(x) * 0.0 + x ** 2)

    x = np.array([4.0, -1.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fad.grad(f)(x), [8.0, -2.0])
        np.testing.assert_array_equal(fad.hessian(f)(x), np.diag([2.0, 2.0]))


# ---------------------------------------------------------------------------
# nested grad: unchanged contract
# ---------------------------------------------------------------------------

def test_nested_grad_equals_hessian():
    close(fad.grad(fad.grad(lambda x: x ** 3))(2.0), 12.0, rtol=1e-14, atol=0)
    inner = fad.grad(lambda a: fad.sum(a ** 3))
    x = np.array([1.0, 2.0])
    close(fad.grad(lambda a: fad.sum(inner(a)))(x), 6 * x, rtol=1e-14, atol=0)
    close(fad.hessian(lambda a: fad.sum(inner(a)))(x), np.diag([6.0, 6.0]), rtol=1e-14, atol=0)
    still_works()
    # and the supported way gives the answer nested grad would have
    close(fad.hessian(lambda x: x ** 3)(2.0), 12.0, rtol=1e-10, atol=1e-10)
