"""NumPy's element-wise ufuncs and SciPy's special functions on Vars and Arrays.

Values against NumPy/SciPy; derivatives against finite differences of the
plain-NumPy function or against the analytic formula (computed with SciPy),
in reverse, forward (k directions), second order, replay and sparsity.
tests/test_op_table.py walks every table entry in every mode as well.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import fastad as fad
from conftest import fd_grad, fd_jacobian, rng_for

sp = pytest.importorskip("scipy.special")

PI = math.pi


# ---------------------------------------------------------------- helpers

def check_all_modes(f, x0, x1=None, rtol=1e-6, atol=1e-7, fd=None):
    """f: an array function (Vars/Arrays inside, plain NumPy outside) of x0.

    Its Jacobian by reverse (k seeds) and forward (k directions) mode, the
    Hessian of w . f, replay at x1 and the sparsity pattern, all against
    central differences of the plain-NumPy f (or of `fd`)."""
    plain = fd or f
    x0 = np.asarray(x0, dtype=float)
    x1 = x0 * 0.97 + 0.01 if x1 is None else np.asarray(x1, dtype=float)
    y0 = np.asarray(plain(x0))
    J = fd_jacobian(lambda z: np.asarray(plain(z)), x0)
    Jm = J.reshape(y0.size, x0.size)
    rng = rng_for(repr(x0))
    # values and reverse/forward Jacobians
    np.testing.assert_allclose(np.asarray(fad.jacrev(f)(x0)).reshape(Jm.shape), Jm,
                               rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(fad.jacfwd(f)(x0)).reshape(Jm.shape), Jm,
                               rtol=rtol, atol=atol)
    V = rng.standard_normal((3,) + x0.shape)
    y, JV = fad.jvp(f, x0, V)
    np.testing.assert_allclose(y, y0, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(JV).reshape(3, -1), V.reshape(3, -1) @ Jm.T,
                               rtol=rtol, atol=atol)
    Ybar = rng.standard_normal((2,) + y0.shape)
    _, pull = fad.vjp(f, x0)
    np.testing.assert_allclose(np.asarray(pull(Ybar)).reshape(2, -1),
                               Ybar.reshape(2, -1) @ Jm, rtol=rtol, atol=atol)
    # replay at another point
    tape = fad.record(f, x0)
    np.testing.assert_allclose(tape(x1), np.asarray(plain(x1)), rtol=1e-13, atol=1e-15)
    J1 = fd_jacobian(lambda z: np.asarray(plain(z)), x1).reshape(y0.size, x0.size)
    np.testing.assert_allclose(np.asarray(tape.jacobian(x1)).reshape(J1.shape), J1,
                               rtol=rtol, atol=atol)
    # second order: w . f
    w = rng.standard_normal(y0.shape)
    s = lambda z: fad.sum(f(z) * w)                       # noqa: E731
    g_plain = lambda z: (fd_jacobian(lambda t: np.asarray(plain(t)), z)   # noqa: E731
                         .reshape(y0.size, -1).T @ w.reshape(-1)).reshape(x0.shape)
    H = fd_jacobian(fad.grad(s), x0, h=1e-5).reshape(x0.size, x0.size)
    np.testing.assert_allclose(fad.grad(s)(x0), g_plain(x0), rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(fad.hessian(s)(x0)).reshape(H.shape), H,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fad.hvp(s, x0, V)).reshape(3, -1),
                               V.reshape(3, -1) @ H.T, rtol=1e-5, atol=1e-6)
    # sparsity: covers every nonzero; the sparse Jacobian is the dense one
    if y0.size and x0.size:
        pat = fad.jacobian_sparsity(f)(x0).toarray()
        assert not (np.abs(Jm) > 1e-10)[~pat].any()
        np.testing.assert_allclose(fad.sparse_jacobian(f)(x0).toarray(), Jm,
                                   rtol=rtol, atol=atol)


# ---------------------------------------------------------------- NumPy ufuncs: values

GRID = np.array([-7.5, -3.0, -2.5, -1.0, -0.7, -0.0, 0.0, 0.3, 1.0, 2.5, 3.0, 7.25, np.inf,
                 -np.inf, np.nan])
UNARY = [np.reciprocal, np.arccosh, np.arctanh, np.deg2rad, np.rad2deg, np.radians, np.degrees,
         np.floor, np.ceil, np.trunc, np.rint, np.fabs, np.square, np.sign, np.negative,
         np.positive, np.sinc, np.fix, np.exp2, np.cbrt, np.arcsinh]
BINARY = [np.remainder, np.mod, np.fmod, np.floor_divide, np.fmax, np.fmin, np.copysign,
          np.heaviside, np.logaddexp2, np.logaddexp, np.maximum, np.minimum, np.float_power]


def _grid_values(fn, *args):
    # the values a function gives Vars (the op table) and Arrays (NumPy or the table)
    with np.errstate(all="ignore"):
        return fn(*args)


@pytest.mark.parametrize("uf", UNARY, ids=lambda u: u.__name__)
def test_unary_values_match_numpy_on_vars_and_arrays(uf):
    with np.errstate(all="ignore"):
        ref = uf(GRID)
        arr = fad.record(lambda x: uf(x), GRID)(GRID)
        scal = fad.record(lambda x: fad.stack([uf(x[i]) for i in range(GRID.size)]), GRID)(GRID)
    np.testing.assert_allclose(arr, ref, rtol=1e-15, atol=0)
    np.testing.assert_allclose(scal, ref, rtol=1e-15, atol=0)
    # the sign of zero too, where NumPy gives one
    assert (np.signbit(arr) == np.signbit(ref))[~np.isnan(ref)].all()


@pytest.mark.parametrize("uf", BINARY, ids=lambda u: u.__name__)
def test_binary_values_match_numpy_with_all_sign_combinations(uf):
    x, y = (a.ravel() for a in np.meshgrid(GRID, GRID))
    z = np.concatenate([x, y])
    n = x.size
    with np.errstate(all="ignore"):
        ref = uf(x, y)
        arr = fad.record(lambda z: uf(z[:n], z[n:]), z)(z)
        scal = fad.record(lambda z: fad.stack([uf(z[i], z[n + i]) for i in range(n)]), z)(z)
        const_r = fad.record(lambda z: fad.stack([uf(z[i], float(y[i])) for i in range(n)]), x)(x)
        const_l = fad.record(lambda z: fad.stack([uf(float(x[i]), z[i]) for i in range(n)]), y)(y)
    for got in (arr, scal, const_r, const_l):
        np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
        # the sign of a zero too; but a commutative op with the constant on the
        # left is recorded as op(x, c), which on a tie of zeros gives c's sign
        known = ~np.isnan(ref) & ((got is not const_l) | (x != y))
        assert (np.signbit(got) == np.signbit(ref))[known].all()


def test_math_floor_ceil_trunc_round_of_a_var_are_recorded():
    def f(v):
        return math.floor(v) + math.ceil(v) * 10 + math.trunc(v) * 100 + round(v) * 1000 \
            + round(v, 1) * 1e4 + round(v * 100, -1) + v
    for x in (2.37, -2.37, 2.5, 3.5, -0.25):
        want = (math.floor(x) + math.ceil(x) * 10 + math.trunc(x) * 100 + np.rint(x) * 1000
                + np.round(x, 1) * 1e4 + np.round(x * 100, -1) + x)
        assert fad.record(f, 1.1)(x) == want
        assert fad.grad(f)(x) == 1.0


def test_fad_functions_on_plain_numbers_are_numpy():
    assert fad.remainder(-7.0, 3.0) == np.remainder(-7.0, 3.0) == 2.0
    assert fad.fmod(-7.0, 3.0) == -1.0
    assert fad.floor_divide(-7.0, 3.0) == -3.0
    assert fad.mod is fad.remainder
    assert fad.sinc(0.0) == 1.0
    np.testing.assert_array_equal(fad.rint(np.array([0.5, 1.5, 2.5, -0.5])), [0, 2, 2, -0])
    np.testing.assert_array_equal(fad.round(np.array([1.25, 2.675]), 2), np.round([1.25, 2.675], 2))
    assert fad.heaviside(0.0, 0.3) == 0.3


# ---------------------------------------------------------------- %, //, divmod

@pytest.mark.parametrize("x, y", [(7.3, 2.0), (-7.3, 2.0), (7.3, -2.0), (-7.3, -2.0),
                                  (0.4, 3.0), (-0.4, 3.0), (5.5, 0.75)])
def test_mod_operator_on_vars_follows_numpy_and_differentiates(x, y):
    f = lambda v: v[0] % v[1]                         # noqa: E731
    v0 = np.array([x, y])
    assert fad.record(f, v0)(v0) == np.remainder(x, y) == x % y
    g = fad.grad(f)(v0)
    np.testing.assert_allclose(g, [1.0, -np.floor(x / y)], rtol=0)
    np.testing.assert_allclose(g, fd_grad(lambda v: np.remainder(v[0], v[1]), v0), rtol=1e-6)
    # constant on either side
    assert fad.grad(lambda a: a % y)(x) == 1.0
    assert fad.grad(lambda b: x % b)(y) == -np.floor(x / y)
    # fmod: the sign of x, d/dy = -trunc(x/y)
    g = fad.grad(lambda v: np.fmod(v[0], v[1]))(v0)
    np.testing.assert_allclose(g, [1.0, -np.trunc(x / y)], rtol=0)
    # // has derivative 0; divmod is both
    assert fad.grad(lambda v: v[0] // v[1])(v0).tolist() == [0.0, 0.0]
    q, r = fad.record(lambda v: fad.stack(list(divmod(v[0], v[1]))), v0)(v0)
    assert (q, r) == divmod(x, y)
    q, r = fad.record(lambda b: fad.stack(list(divmod(x, b))), y)(y)
    assert (q, r) == divmod(x, y)


@pytest.mark.parametrize("shape_x, shape_y", [((5,), (5,)), ((2, 3), (3,)), ((2, 3), ()),
                                               ((4, 1), (1, 3))])
def test_mod_floordiv_divmod_on_arrays(shape_x, shape_y):
    rng = rng_for(shape_x, shape_y)
    x = rng.uniform(-6, 6, shape_x)
    y = rng.choice([-1.0, 1.0], shape_y) * rng.uniform(0.7, 2.0, shape_y)
    nx = x.size
    z0 = np.concatenate([x.ravel(), np.ravel(y)])

    def split(z):
        return z[:nx].reshape(shape_x), z[nx:].reshape(shape_y)

    for f in (lambda z: split(z)[0] % split(z)[1], lambda z: np.mod(*split(z)),
              lambda z: np.fmod(*split(z)), lambda z: split(z)[0] % 1.5,
              lambda z: 4.0 % split(z)[1], lambda z: np.divmod(*split(z))[1]):
        check_all_modes(f, z0, x1=z0 * 1.0001)
    q = fad.record(lambda z: split(z)[0] // split(z)[1], z0)(z0)
    np.testing.assert_array_equal(q, x // y)
    assert not fad.jacobian(lambda z: split(z)[0] // split(z)[1])(z0).any()
    q, r = divmod(fad.record(lambda z: z, x)(x), 1.5)
    assert fad.jacobian_sparsity(lambda z: divmod(z, 1.5)[0])(x).nnz == 0


# ---------------------------------------------------------------- the other NumPy ufuncs: derivatives

SMOOTH_UNARY = [
    (np.reciprocal, lambda x: -1 / x ** 2, lambda x: 2 / x ** 3, np.array([0.3, -2.0, 5.0])),
    (np.arccosh, lambda x: 1 / np.sqrt(x * x - 1), lambda x: -x / (x * x - 1) ** 1.5,
     np.array([1.2, 3.0, 40.0])),
    (np.arctanh, lambda x: 1 / (1 - x * x), lambda x: 2 * x / (1 - x * x) ** 2,
     np.array([-0.9, 0.1, 0.6])),
    (np.deg2rad, lambda x: np.full_like(x, PI / 180), lambda x: 0 * x, np.array([-30.0, 45.0])),
    (np.rad2deg, lambda x: np.full_like(x, 180 / PI), lambda x: 0 * x, np.array([-1.0, 2.0])),
    (np.radians, lambda x: np.full_like(x, PI / 180), lambda x: 0 * x, np.array([10.0])),
    (np.degrees, lambda x: np.full_like(x, 180 / PI), lambda x: 0 * x, np.array([0.5])),
    (np.sinc, lambda x: (np.cos(PI * x) - np.sinc(x)) / x,
     lambda x: -PI ** 2 * np.sinc(x) - 2 * (np.cos(PI * x) - np.sinc(x)) / x ** 2,
     np.array([-2.7, -0.4, 0.05, 1.3, 9.1])),
    (np.exp2, lambda x: np.log(2) * 2 ** x, lambda x: np.log(2) ** 2 * 2 ** x, np.array([-1.0, 3.0])),
    (np.cbrt, lambda x: np.cbrt(x) / (3 * x), lambda x: -2 * np.cbrt(x) / (9 * x * x),
     np.array([-8.0, 0.3])),
    (np.arcsinh, lambda x: 1 / np.sqrt(1 + x * x), lambda x: -x / (1 + x * x) ** 1.5,
     np.array([-3.0, 0.2])),
]


@pytest.mark.parametrize("uf, d1, d2, xs", SMOOTH_UNARY, ids=[c[0].__name__ for c in SMOOTH_UNARY])
def test_unary_derivatives_against_formulas(uf, d1, d2, xs):
    for x in xs:
        assert math.isclose(fad.grad(lambda v: uf(v))(x), d1(x), rel_tol=1e-13, abs_tol=1e-15)
        h = fad.hessian(lambda v: uf(v[0]))(np.array([x]))[0, 0]
        assert math.isclose(h, d2(x), rel_tol=1e-12, abs_tol=1e-14)
    check_all_modes(lambda z: uf(z), xs)
    check_all_modes(lambda z: fad.stack([uf(z[i]) for i in range(z.size)]), xs)
    check_all_modes(lambda z: uf(z.reshape(1, -1) * np.ones((2, 1))), xs)


def test_sinc_at_zero_and_near_it():
    # value 1, derivative 0, second derivative -pi^2/3 at 0; no cancellation near 0
    assert fad.grad(lambda x: np.sinc(x))(0.0) == 0.0
    assert math.isclose(fad.hessian(lambda v: np.sinc(v[0]))(np.zeros(1))[0, 0], -PI ** 2 / 3,
                        rel_tol=1e-15)
    for x in (1e-9, 1e-5, 1e-3, 0.1, 1.2, 1.3, 3.0):
        t = PI * x
        if x < 2:           # the Taylor series (its alternating terms lose digits beyond)
            d1 = PI * sum((-1) ** n * 2 * n * t ** (2 * n - 1) / math.factorial(2 * n + 1)
                          for n in range(1, 30))
            d2 = PI ** 2 * sum((-1) ** n * 2 * n * (2 * n - 1) * t ** (2 * n - 2)
                               / math.factorial(2 * n + 1) for n in range(1, 30))
        else:               # the closed forms f' = (cos(pi x) - f) / x, f'' = (-pi sin(pi x) - 2 f') / x
            d1 = (math.cos(t) - math.sin(t) / t) / x
            d2 = (-PI * math.sin(t) - 2 * d1) / x
        assert math.isclose(fad.grad(lambda v: np.sinc(v))(x), d1, rel_tol=1e-13)
        assert math.isclose(fad.hessian(lambda v: np.sinc(v[0]))(np.array([x]))[0, 0], d2,
                            rel_tol=1e-12)
    # continuous across the switch between series and closed form (|pi x| = 4)
    for x in (4 / PI - 1e-12, 4 / PI + 1e-12):
        assert math.isclose(fad.grad(np.sinc)(x), (np.cos(PI * x) - np.sinc(x)) / x, rel_tol=1e-9)


@pytest.mark.parametrize("uf", [np.floor, np.ceil, np.trunc, np.rint, np.fix, np.sign],
                         ids=lambda u: u.__name__)
def test_piecewise_constant_ufuncs_have_zero_derivative(uf):
    x = np.array([-2.5, -1.2, 0.0, 0.5, 1.5, 3.7])
    f = lambda z: uf(z) * 2.0 + z           # noqa: E731 - only z contributes
    np.testing.assert_array_equal(fad.jacobian(f)(x), np.eye(6))
    x1 = x + 0.6
    np.testing.assert_array_equal(fad.record(f, x)(x1), uf(x1) * 2 + x1)
    assert fad.jacobian_sparsity(lambda z: uf(z))(x).nnz == 0
    assert fad.grad(lambda v: uf(v))(1.3) == 0.0


@pytest.mark.parametrize("decimals", [0, 1, 2, -1, -2])
def test_round_with_decimals(decimals):
    x = np.array([1234.5678, -0.125, 2.675, 15.0, -250.0])
    for fn in (lambda z: np.round(z, decimals), lambda z: np.around(z, decimals=decimals),
               lambda z: z.round(decimals), lambda z: fad.round(z, decimals)):
        tape = fad.record(fn, x)
        np.testing.assert_array_equal(tape(x), np.round(x, decimals))
        np.testing.assert_array_equal(tape(x * 1.37), np.round(x * 1.37, decimals))
        assert not fad.jacobian(fn)(x).any()
    assert fad.grad(lambda v: np.round(v, decimals) + v)(2.345) == 1.0
    assert fad.record(lambda v: np.round(v, decimals), 2.345)(2.345) == np.round(2.345, decimals)


def test_round_errors_are_clear_and_fastad_keeps_working():
    with pytest.raises(TypeError, match="round.*integer number of decimals"):
        fad.grad(lambda x: fad.sum(np.round(x, 1.5)))(np.ones(2))
    with pytest.raises(TypeError, match="np.round with out="):
        fad.grad(lambda x: fad.sum(np.round(x, 1, out=np.empty(2))))(np.ones(2))
    with pytest.raises(TypeError, match="np.fix with out="):
        fad.grad(lambda x: fad.sum(np.fix(x, out=np.empty(2))))(np.ones(2))
    assert fad.grad(lambda x: fad.sum(x * x))(np.ones(2)).tolist() == [2.0, 2.0]


def test_real_imag_conj_on_real_input():
    x = np.array([1.5, -2.0, 0.25])
    f = lambda z: np.real(z) * 2 + np.conj(z) * z + np.conjugate(z) + z.conj() + np.imag(z)  # noqa
    check_all_modes(f, x)
    assert fad.grad(lambda v: np.real(v) + np.imag(v) + np.conjugate(v))(1.5) == 2.0
    y = fad.record(lambda z: np.imag(z[0]) + z[1], x)(x)
    assert y == x[1]


def test_value_tests_return_plain_booleans():
    x = np.array([1.0, np.inf, -np.inf, np.nan, -0.0])
    seen = {}

    def f(z):
        for uf in (np.isfinite, np.isnan, np.isinf, np.signbit):
            seen[uf.__name__] = (uf(z), uf(z[4]))
        return fad.sum(z[:1])

    fad.grad(f)(x)
    for uf in (np.isfinite, np.isnan, np.isinf, np.signbit):
        arr, one = seen[uf.__name__]
        assert type(arr) is np.ndarray and arr.dtype == bool
        np.testing.assert_array_equal(arr, uf(x))
        assert isinstance(one, np.bool_) and one == uf(x[4])
    assert fad.ufuncs.isnan(float("nan")) and not fad.ufuncs.isfinite(np.inf)


def test_maximum_minimum_fmax_fmin_ties_and_nan():
    # ties split the derivative 0.5/0.5; fmax/fmin give a NaN operand 0
    for uf in (np.maximum, np.minimum, np.fmax, np.fmin):
        assert fad.grad(lambda v: uf(v[0], v[1]))(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]
        assert fad.grad(lambda v: fad.sum(uf(v, 2.0)))(np.array([2.0])).tolist() == [0.5]
    g = fad.grad(lambda v: np.fmax(v[0], v[1]))(np.array([np.nan, 3.0]))
    assert g.tolist() == [0.0, 1.0]
    g = fad.grad(lambda v: fad.sum(np.fmin(v, np.array([1.0, np.nan]))))(np.array([3.0, 5.0]))
    assert g.tolist() == [0.0, 1.0]
    rng = rng_for("fmax")
    z = rng.standard_normal(8)
    check_all_modes(lambda v: np.fmax(v[:4], v[4:]), z)
    check_all_modes(lambda v: np.fmin(v[:4], v[4:]) + np.fmin(1.5, v[:4]), z)
    check_all_modes(lambda v: np.logaddexp2(v[:4], v[4:]) + np.logaddexp2(v[:4], 0.3)
                    + np.logaddexp2(-1.0, v[4:]), z)


def test_copysign_and_heaviside():
    # copysign(x, y) = |x| sign(y): d/dx = sign(x) sign(y) (0 at x = 0, as abs); d/dy = 0
    for x, y, dx in [(1.5, 2.0, 1.0), (1.5, -2.0, -1.0), (-1.5, 2.0, -1.0), (-1.5, -0.0, 1.0),
                     (0.0, -1.0, 0.0)]:
        g = fad.grad(lambda v: np.copysign(v[0], v[1]))(np.array([x, y]))
        assert g.tolist() == [dx, 0.0]
        assert fad.grad(lambda a: np.copysign(a, y))(x) == dx
        assert fad.grad(lambda b: np.copysign(x, b))(y) == 0.0
    z = np.array([0.7, -1.2, 2.0, 0.3, -0.4, 1.1])
    check_all_modes(lambda v: np.copysign(v[:3], v[3:]), z)
    # heaviside(x, h): 0 / h / 1; d/dx = 0, d/dh = 1 where x == 0 only
    g = fad.grad(lambda v: fad.sum(np.heaviside(v[:3], v[3:])))(
        np.array([-1.0, 0.0, 2.0, 0.2, 0.3, 0.4]))
    assert g.tolist() == [0, 0, 0, 0, 1, 0]
    assert fad.grad(lambda h: np.heaviside(0.0, h))(0.5) == 1.0
    assert fad.grad(lambda x: np.heaviside(x, 0.5))(0.0) == 0.0
    # with a constant h, a scalar node has no dependence (an Array's pattern is
    # the conservative one of the binary op: its flags cannot say d/dx == 0 only)
    assert fad.jacobian_sparsity(lambda v: fad.stack([np.heaviside(v[i], 0.5)
                                                      for i in range(6)]))(z).nnz == 0


def test_float_power_square_fabs_positive_negative():
    x = np.array([0.7, 1.3, 2.2])
    check_all_modes(lambda z: np.float_power(z, 2.5) + np.float_power(1.7, z)
                    + np.float_power(z, z), x)
    check_all_modes(lambda z: np.square(z) + np.fabs(-z) + np.positive(z) + np.negative(z), x)


def test_var_operators_with_ndarrays_broadcast():
    x0 = np.array([3.7, -2.2])
    y = np.array([[1.5, -2.0, 0.5]])
    f = lambda v: v[0] % y + y % v[1] + v[0] // y   # noqa: E731
    check_all_modes(f, x0, x1=x0 + 1e-3)


# ---------------------------------------------------------------- SciPy: values

def _wide(lo, hi, n=400):
    return np.linspace(lo, hi, n)


SCIPY_VALUES = [
    ("erf", _wide(-6, 6), 1e-15),
    ("erfc", _wide(-6, 27), 1e-13),
    ("erfinv", np.concatenate([_wide(-1, 1)[1:-1], [1e-300, -1e-30, 1e-10, 0.5, 1 - 1e-16,
                                                    -1 + 1e-12, 0.999999]]), 1e-14),
    ("erfcinv", np.concatenate([_wide(0, 2)[1:-1], 10.0 ** -np.arange(1, 300, 7.0),
                                2 - 10.0 ** -np.arange(1, 16.0), [1.0]]), 1e-14),
    # ndtr's tail is ill-conditioned (relative error ~ x^2 eps from x / sqrt(2)):
    # fastad and SciPy each err by ~1e-13 at x = -36 (checked with mpmath)
    ("ndtr", _wide(-37, 9), 3e-13),       # (SciPy flushes the denormals below -37.5)
    ("log_ndtr", np.concatenate([_wide(-1e4, 8), _wide(-40, 10), [-1e150, 20.0]]), 3e-14),
    ("ndtri", np.concatenate([_wide(0, 1)[1:-1], 10.0 ** -np.arange(1, 300, 7.0),
                              1 - 10.0 ** -np.arange(1, 16.0)]), 1e-14),
    ("gammaln", np.concatenate([_wide(1e-8, 60), [1e-300, 1e5, 1e300]]), 1e-14),
    ("digamma", np.concatenate([_wide(0.01, 1.2), _wide(1.7, 50), [1e-12, 1e10, 1e300]]), 1e-14),
    ("logit", _wide(0, 1)[1:-1], 1e-13),   # (SciPy 1.13 differs by 2e-14 near 1/2)
    ("expit", _wide(-700, 700), 1e-15),
]


@pytest.mark.parametrize("name, x, rtol", SCIPY_VALUES, ids=[c[0] for c in SCIPY_VALUES])
def test_special_values_match_scipy(name, x, rtol):
    uf = getattr(sp, name)
    ref = uf(x)
    for got in (fad.record(lambda z: uf(z), x)(x),                       # Array
                np.array([fad.record(lambda v: uf(v), t)(t) for t in x[::7]]),   # Var
                getattr(fad.special, name)(x)):                          # without a tape
        r = ref if got.size == ref.size else ref[::7]
        np.testing.assert_allclose(got, r, rtol=rtol, atol=1e-300)


def test_digamma_near_its_roots_and_poles():
    # relative accuracy near its positive root (a Taylor series there: SciPy
    # does the same); on the negative axis as far as the condition allows (x
    # near a pole or a root: its relative error in x is amplified)
    x0 = 1.4616321449683622
    x = np.concatenate([np.linspace(1.0, 2.0, 301), x0 + np.array([-1e-9, 1e-12, 0.0, 3e-15])])
    np.testing.assert_allclose(fad.digamma(x), sp.digamma(x), rtol=5e-15, atol=0)
    x = np.linspace(-9.9, -0.05, 400)
    cond = np.abs(x * sp.polygamma(1, x) / sp.digamma(x))
    err = np.abs(fad.digamma(x) - sp.digamma(x)) / np.abs(sp.digamma(x))
    assert (err <= 1e-15 * (10 + cond)).all()


def test_special_edge_values_match_scipy():
    cases = {
        "erfinv": [-1.0, 1.0, 0.0, -0.0, 1.5, np.nan], "erfcinv": [0.0, 2.0, 1.0, -0.1, 2.1],
        "ndtri": [0.0, 1.0, 0.5, 1.5], "logit": [0.0, 1.0, 0.5], "digamma": [0.0, -1.0, -3.0],
        "gammaln": [0.0, -1.0, -2.5], "log_ndtr": [-np.inf, np.inf], "ndtr": [np.inf, -np.inf],
    }
    with np.errstate(all="ignore"):
        for name, xs in cases.items():
            xs = np.array(xs)
            np.testing.assert_allclose(getattr(fad.special, name)(xs), getattr(sp, name)(xs),
                                       rtol=1e-14, err_msg=name)
    assert fad.xlogy(0.0, 0.0) == 0.0 == sp.xlogy(0.0, 0.0)
    assert fad.xlog1py(0.0, -1.0) == 0.0
    assert np.isnan(fad.xlogy(0.0, np.nan))


def test_xlogy_xlog1py_values_match_scipy():
    rng = rng_for("xlogy")
    x = np.concatenate([rng.uniform(-3, 3, 50), np.zeros(5)])
    y = np.concatenate([rng.uniform(0.01, 5, 50), [0.0, 1.0, 2.0, 1e-300, 7.0]])
    for name in ("xlogy", "xlog1py"):
        uf = getattr(sp, name)
        np.testing.assert_allclose(fad.record(lambda z: uf(z[:55], z[55:]), np.r_[x, y])(np.r_[x, y]),
                                   uf(x, y), rtol=1e-15)


# ---------------------------------------------------------------- SciPy: derivatives

def _d_erfinv(x):
    return math.sqrt(PI) / 2 * np.exp(sp.erfinv(x) ** 2)


def _phi(x):
    return np.exp(-x * x / 2) / math.sqrt(2 * PI)


SCIPY_DERIVS = [
    ("expit", lambda x: np.exp(-abs(x)) / (1 + np.exp(-abs(x))) ** 2,
     lambda x: np.exp(-abs(x)) / (1 + np.exp(-abs(x))) ** 2 * -np.tanh(x / 2),
     [-30, -2.0, 0.0, 0.7, 40.0]),
    ("logit", lambda x: 1 / (x * (1 - x)), lambda x: (2 * x - 1) / (x * (1 - x)) ** 2,
     [1e-6, 0.2, 0.5, 0.9]),
    ("erf", lambda x: 2 / math.sqrt(PI) * np.exp(-x * x),
     lambda x: -4 * x / math.sqrt(PI) * np.exp(-x * x), [-3.0, 0.0, 0.5, 2.0]),
    ("erfc", lambda x: -2 / math.sqrt(PI) * np.exp(-x * x),
     lambda x: 4 * x / math.sqrt(PI) * np.exp(-x * x), [-3.0, 0.0, 0.5, 2.0]),
    ("erfinv", _d_erfinv, lambda x: 2 * sp.erfinv(x) * _d_erfinv(x) ** 2,
     [-0.999, -0.3, 0.0, 0.6, 1 - 1e-10]),
    ("erfcinv", lambda x: -math.sqrt(PI) / 2 * np.exp(sp.erfcinv(x) ** 2),
     lambda x: PI / 2 * sp.erfcinv(x) * np.exp(2 * sp.erfcinv(x) ** 2),
     [1e-8, 0.3, 1.0, 1.7, 1.999]),
    ("ndtr", _phi, lambda x: -x * _phi(x), [-9.0, -1.0, 0.0, 2.0]),
    ("log_ndtr", lambda x: _phi(x) / sp.ndtr(x),
     lambda x: -_phi(x) / sp.ndtr(x) * (x + _phi(x) / sp.ndtr(x)), [-15.0, -3.0, 0.0, 1.0, 5.0]),
    ("ndtri", lambda x: 1 / _phi(sp.ndtri(x)), lambda x: sp.ndtri(x) / _phi(sp.ndtri(x)) ** 2,
     [1e-10, 0.1, 0.5, 0.97]),
    ("gammaln", sp.digamma, lambda x: sp.polygamma(1, x), [1e-3, 0.5, 1.0, 3.7, 120.0, -2.5]),
    ("digamma", lambda x: sp.polygamma(1, x), lambda x: sp.polygamma(2, x),
     [1e-3, 0.5, 1.46, 3.7, 20.0, 1e4]),
]


@pytest.mark.parametrize("name, d1, d2, xs", SCIPY_DERIVS, ids=[c[0] for c in SCIPY_DERIVS])
def test_special_derivatives_against_formulas(name, d1, d2, xs):
    uf = getattr(sp, name)
    xs = np.array(xs, dtype=float)
    for x in xs:
        assert math.isclose(fad.grad(lambda v: uf(v))(x), d1(x), rel_tol=1e-12), x
        assert math.isclose(fad.hessian(lambda v: uf(v[0]))(np.array([x]))[0, 0], d2(x),
                            rel_tol=1e-10, abs_tol=1e-300), x
    np.testing.assert_allclose(fad.grad(lambda z: fad.sum(uf(z)))(xs), d1(xs), rtol=1e-12)
    np.testing.assert_allclose(np.diag(fad.hessian(lambda z: fad.sum(uf(z)))(xs)), d2(xs),
                               rtol=1e-10)


def test_log_ndtr_far_tail_derivatives():
    # phi/Phi ~ -x and its derivative ~ -1 + 1/x^2: no cancellation far out
    for x in (-25.0, -1e3, -1e8):
        s = sum((-1) ** k * math.prod(range(1, 2 * k, 2)) / x ** (2 * k) for k in range(1, 15))
        d = -x / (1 + s)
        assert math.isclose(fad.grad(lambda v: sp.log_ndtr(v))(x), d, rel_tol=1e-14)
        h = fad.hessian(lambda v: sp.log_ndtr(v[0]))(np.array([x]))[0, 0]
        assert math.isclose(h, -d * x * s / (1 + s), rel_tol=1e-13)
        assert -1.0 <= h < -0.99


# unary functions of SciPy in every mode on arrays, scalars and broadcast shapes
SCIPY_POINTS = {
    "expit": [-2.0, 0.3, 1.1], "logit": [0.2, 0.45, 0.8], "erf": [-0.8, 0.1, 1.2],
    "erfc": [-0.8, 0.1, 1.2], "erfinv": [-0.7, 0.2, 0.9], "erfcinv": [0.2, 0.9, 1.6],
    "ndtr": [-1.5, 0.2, 2.0], "log_ndtr": [-4.0, 0.2, 2.0], "ndtri": [0.05, 0.5, 0.9],
    "gammaln": [0.4, 1.7, 6.0], "digamma": [0.4, 1.7, 6.0], "psi": [0.8, 2.5, 9.0],
    "log_expit": [-3.0, 0.5, 4.0], "exp2": [-1.0, 0.5, 2.0], "log1p": [0.2, 1.0, 3.0],
}


@pytest.mark.parametrize("name", sorted(SCIPY_POINTS))
def test_special_unary_in_every_mode(name):
    uf = getattr(sp, name)
    x = np.array(SCIPY_POINTS[name])
    check_all_modes(lambda z: uf(z), x)
    check_all_modes(lambda z: fad.stack([uf(z[i]) for i in range(3)]), x)
    check_all_modes(lambda z: uf(z.reshape(3, 1) * np.ones((1, 2))) * 2.0, x)


@pytest.mark.parametrize("name", ["xlogy", "xlog1py"])
def test_xlogy_xlog1py_in_every_mode_and_at_zero(name):
    uf = getattr(sp, name)
    x = np.array([0.3, -1.2, 2.0])
    y = np.array([0.7, 1.5, 3.0])
    z = np.r_[x, y]
    check_all_modes(lambda v: uf(v[:3], v[3:]), z)
    check_all_modes(lambda v: uf(v[:3], 2.0) + uf(1.5, v[3:]) + uf(v[0], v[3:]), z)
    check_all_modes(lambda v: fad.stack([uf(v[i], v[3 + i]) for i in range(3)]), z)
    log = np.log if name == "xlogy" else np.log1p
    one = 0.0 if name == "xlogy" else 1.0
    # at x = 0 the value is 0 for every y, so d/dy = 0; d/dx = log(y) (as JAX)
    for yv in (0.5, 2.0):
        g = fad.grad(lambda v: uf(v[0], v[1]))(np.array([0.0, yv]))
        np.testing.assert_allclose(g, [log(yv), 0.0], rtol=1e-15)
        assert fad.grad(lambda b: uf(0.0, b))(yv) == 0.0
        assert math.isclose(fad.grad(lambda a: uf(a, yv))(0.0), log(yv), rel_tol=1e-15)
    g = fad.grad(lambda v: uf(v[0], v[1]))(np.array([0.0, -one]))
    assert g[0] == -np.inf and g[1] == 0.0
    H = fad.hessian(lambda v: uf(v[0], v[1]))(np.array([0.0, 2.0]))
    np.testing.assert_allclose(H, [[0.0, 1 / (one + 2.0)], [1 / (one + 2.0), 0.0]], rtol=1e-15)


def test_special_functions_without_scipy_names():
    # fad.<name> and fastad.special work on Vars and plain numbers alike
    x = np.array([0.2, 0.7])
    np.testing.assert_allclose(fad.grad(lambda z: fad.sum(fad.special.erfinv(z)))(x),
                               _d_erfinv(x), rtol=1e-13)
    assert fad.special.psi is fad.digamma and fad.special.expit is fad.sigmoid
    assert math.isclose(fad.ndtri(0.975), sp.ndtri(0.975), rel_tol=1e-15)


def test_unsupported_scipy_ufunc_is_a_clear_error_and_fastad_keeps_working():
    with pytest.raises(TypeError, match="struve is not supported"):
        fad.grad(lambda x: fad.sum(sp.struve(1.0, x)))(np.ones(2))
    with pytest.raises(TypeError, match="struve"):
        fad.grad(lambda x: sp.struve(1.0, x))(1.5)
    with pytest.raises(TypeError, match="keyword"):
        fad.grad(lambda x: fad.sum(sp.erf(x, out=np.empty(2))))(np.ones(2))
    assert fad.grad(lambda x: sp.erf(x))(0.0) == pytest.approx(2 / math.sqrt(PI), rel=1e-15)


_LAZY = """
import sys
import numpy as np
import fastad as fad
assert "scipy" not in sys.modules, "fastad imported SciPy"
import scipy.special as sp
g = fad.grad(lambda x: fad.sum(sp.erfinv(x)))(np.array([0.1, 0.5]))
print(repr([g.tolist(), float(fad.grad(lambda v: sp.gammaln(v))(2.5))]))
"""


def test_scipy_stays_optional_and_is_mapped_on_first_use():
    out = subprocess.run([sys.executable, "-c", _LAZY], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(fad.__file__).parent.parent))
    assert out.returncode == 0, out.stderr
    g, dg = eval(out.stdout)
    np.testing.assert_allclose(g, _d_erfinv(np.array([0.1, 0.5])), rtol=1e-13)
    assert math.isclose(dg, sp.digamma(2.5), rel_tol=1e-14)


# ---------------------------------------------------------------- SciPy's values with fastad's rules

def _dfd(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


BESSEL_LIKE = [("gamma", (), [0.4, 1.7, 3.2, -0.5]), ("rgamma", (), [0.4, 1.7, 3.2, -1.5]),
               ("j0", (), [0.3, 2.0, 7.5]), ("j1", (), [0.0, 2.0, 7.5]),
               ("y0", (), [0.3, 2.0, 7.5]), ("y1", (), [0.3, 2.0, 7.5]),
               ("i0", (), [0.0, 2.0, -3.0]), ("i1", (), [0.0, 2.0, -3.0]),
               ("k0", (), [0.3, 2.0, 7.5]), ("k1", (), [0.3, 2.0, 7.5]),
               ("jv", (np.array([0.5, 1.0, 2.5]),), [0.3, 2.0, 7.5]),
               ("jn", (np.array([0.0, 1.0, 3.0]),), [0.3, 2.0, 7.5]),
               ("yv", (np.array([0.5, 1.0, 2.5]),), [0.3, 2.0, 7.5]),
               ("yn", (np.array([0.0, 1.0, 3.0]),), [0.3, 2.0, 7.5]),
               ("iv", (np.array([0.5, 1.0, 2.0]),), [0.3, 2.0, -7.5]),
               ("ive", (np.array([0.5, 1.0, 2.0]),), [0.3, 2.0, -7.5]),
               ("kv", (np.array([0.5, 1.0, 2.5]),), [0.3, 2.0, 7.5]),
               ("gammainc", (np.array([0.5, 1.0, 2.5]),), [0.3, 2.0, 7.5]),
               ("gammaincc", (np.array([0.5, 1.0, 2.5]),), [0.3, 2.0, 7.5]),
               ("betainc", (np.array([0.5, 1.0, 2.5]), np.array([1.5, 2.0, 0.7])),
                [0.3, 0.6, 0.95])]


@pytest.mark.parametrize("name, params, xs", BESSEL_LIKE, ids=[c[0] for c in BESSEL_LIKE])
def test_scipy_valued_functions_in_every_mode(name, params, xs):
    uf = getattr(sp, name)
    x = np.array(xs)
    f = lambda z: uf(*params, z)                  # noqa: E731
    np.testing.assert_array_equal(fad.record(f, x)(x), uf(*params, x))
    check_all_modes(f, x, x1=x * 1.01)
    # scalar Vars, and a parameter broadcast against a scalar x
    for i, t in enumerate(xs):
        p = tuple(q[i] for q in params)
        g = fad.grad(lambda v: uf(*p, v))(t)
        assert math.isclose(g, _dfd(lambda s: uf(*p, s), t), rel_tol=1e-7, abs_tol=1e-9)
    if params:
        check_all_modes(lambda z: uf(*params, z[0]), x[:1])


def test_gamma_beta_betaln_gammasgn():
    a = np.array([0.7, 1.5, 4.0])
    b = np.array([2.0, 0.3, 1.1])
    check_all_modes(lambda z: sp.beta(z[:3], z[3:]), np.r_[a, b])
    check_all_modes(lambda z: sp.betaln(z[:3], z[3:]) + sp.beta(z[:3], 2.0), np.r_[a, b])
    x = np.array([-2.5, -1.5, -0.5, 0.5, 2.5])
    np.testing.assert_array_equal(fad.record(lambda z: sp.gammasgn(z), x)(x), sp.gammasgn(x))
    assert not fad.jacobian(lambda z: sp.gammasgn(z))(x).any()
    np.testing.assert_allclose(fad.grad(lambda z: fad.sum(sp.gamma(z)))(x),
                               sp.gamma(x) * sp.digamma(x), rtol=1e-13)


def test_constant_arguments_of_scipy_valued_functions_are_enforced():
    with pytest.raises(TypeError, match="jv is differentiable in its last argument only"):
        fad.grad(lambda v: fad.sum(sp.jv(v, 2.0)))(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="gammainc is differentiable in its last argument only"):
        fad.grad(lambda a: sp.gammainc(a, 2.0))(1.5)
    with pytest.raises(TypeError, match="betainc takes 3 arguments"):
        fad.special.betainc(1.0, fad.grad(lambda x: x)(1.0))
    assert fad.grad(lambda x: sp.j0(x))(1.0) == pytest.approx(-sp.j1(1.0), rel=1e-15)


def test_scipy_valued_primitives_replay_and_pickle():
    import pickle
    x = np.array([0.5, 1.5])
    tape = pickle.loads(pickle.dumps(fad.record(lambda z: fad.sum(sp.jv(1.0, z) * sp.gamma(z)), x)))
    x1 = np.array([0.7, 2.5])
    assert math.isclose(tape(x1), np.sum(sp.jv(1.0, x1) * sp.gamma(x1)), rel_tol=1e-15)
    np.testing.assert_allclose(tape.gradient(x1),
                               fd_grad(lambda z: np.sum(sp.jv(1.0, z) * sp.gamma(z)), x1), rtol=1e-7)


# ---------------------------------------------------------------- angle, real_if_close, nan_to_num, recorded tests

def test_angle_real_if_close_nan_to_num():
    x = np.array([1.5, -2.0, 0.25])
    check_all_modes(lambda z: np.angle(z) + np.angle(z, deg=True) + np.real_if_close(z), x)
    np.testing.assert_array_equal(fad.record(lambda z: np.angle(z, deg=True), x)(x),
                                  np.angle(x, deg=True))
    y = np.array([1.0, -2.0, 0.0, 4.0])
    f = lambda z: np.nan_to_num(np.log(z), nan=-1.0, neginf=-7.0) * 2.0   # noqa: E731
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(fad.record(f, y)(y), np.nan_to_num(np.log(y), nan=-1.0,
                                                                           neginf=-7.0) * 2.0)
        np.testing.assert_allclose(fad.jacobian(f)(y), np.diag([2.0, 0.0, 0.0, 0.5]))
        assert fad.grad(lambda v: np.nan_to_num(np.log(v)))(-1.0) == 0.0


def test_isnan_isinf_isfinite_are_recorded_so_a_replay_checks_them():
    x = np.array([1.0, 2.0, 3.0])
    for test in (np.isnan, np.isinf, lambda z: ~np.isfinite(z)):
        tape = fad.record(lambda z: fad.sum(np.where(test(z), 0.0, z)), x)
        assert tape(x * 2) == 12.0
        with pytest.raises(fad.BranchChangedError):
            tape(np.array([1.0, np.inf, np.nan]))
    tape = fad.record(lambda v: v * 2 if not np.isnan(v) else v, 1.0)
    with pytest.raises(fad.BranchChangedError):
        tape(np.nan)
    assert tape(3.0) == 6.0
