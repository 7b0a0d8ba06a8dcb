"""fad.grad / fad.value_and_grad / fad.check_grad, the Array front end and the Var operators.

Every gradient is compared with an analytic formula written out in the test.

A docstring that starts with BUG describes the bug its test was written
against (fixed since: the test asserts the correct behaviour).
"""
import math

import numpy as np
import pytest

import fastad as fad
from conftest import close, rosen_grad_np, rosen_loop, rosen_np


# ---------------------------------------------------------------------------
# public names
# ---------------------------------------------------------------------------

PUBLIC = [
    "grad", "value_and_grad", "check_grad", "Var", "Array", "Tape", "TapeError",
    "BranchChangedError",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh",
    "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt", "square", "abs", "sign",
    "power", "hypot", "maximum", "minimum", "where", "sigmoid", "softplus", "relu", "erf",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists(name):
    assert hasattr(fad, name), f"fad.{name} missing"


def test_tape_error_is_runtime_error():
    assert issubclass(fad.TapeError, RuntimeError)
    assert issubclass(fad.BranchChangedError, Exception)


# ---------------------------------------------------------------------------
# input kinds and returned types / shapes
# ---------------------------------------------------------------------------

def test_float_input_arrives_as_var_and_grad_is_python_float():
    seen = {}

    def f(x):
        seen["is_var"] = isinstance(x, fad.Var)
        seen["value"] = x.value
        seen["value_type"] = type(x.value)
        return x * x * x

    g = fad.grad(f)(1.5)
    assert seen == {"is_var": True, "value": 1.5, "value_type": float}
    assert type(g) is float
    close(g, 3 * 1.5 ** 2, atol=1e-15)


def test_int_input_is_converted_to_float():
    seen = {}

    def f(x):
        seen["is_var"] = isinstance(x, fad.Var)
        seen["value"] = x.value
        seen["value_type"] = type(x.value)
        return x * x + 3 * x

    g = fad.grad(f)(3)
    assert seen == {"is_var": True, "value": 3.0, "value_type": float}
    assert type(g) is float
    assert g == 9.0


def test_numpy_float64_scalar_input():
    g = fad.grad(lambda x: x * x)(np.float64(1.5))
    close(float(np.asarray(g)), 3.0, atol=1e-15)


def test_1d_ndarray_input():
    seen = {}

    def f(a):
        seen["is_array"] = isinstance(a, fad.Array)
        seen["shape"] = a.shape
        return a[0] * a[1] + a[2] * a[2] * a[2]

    x = np.array([2.0, -3.0, 0.5])
    g = fad.grad(f)(x)
    assert seen == {"is_array": True, "shape": (3,)}
    assert isinstance(g, np.ndarray)
    assert g.shape == (3,) and g.dtype == np.float64
    close(g, [-3.0, 2.0, 3 * 0.25], atol=1e-15)


def test_2d_ndarray_input_determinant():
    M = np.array([[1.5, -2.0], [0.25, 3.0]])

    def det(a):
        return a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]

    g = fad.grad(det)(M)
    assert isinstance(g, np.ndarray) and g.shape == (2, 2) and g.dtype == np.float64
    # d det / dM = cofactor matrix
    close(g, [[M[1, 1], -M[1, 0]], [-M[0, 1], M[0, 0]]], atol=1e-15)


def test_3d_ndarray_input_shape():
    x = np.arange(24.0).reshape(2, 3, 4) / 10.0

    def f(a):
        return a[1, 2, 3] * a[0, 0, 0] + a[1, 0, 2]

    g = fad.grad(f)(x)
    expected = np.zeros_like(x)
    expected[1, 2, 3] = x[0, 0, 0]
    expected[0, 0, 0] = x[1, 2, 3]
    expected[1, 0, 2] = 1.0
    assert g.shape == (2, 3, 4)
    close(g, expected, atol=1e-15)


def test_0d_ndarray_input():
    seen = {}

    def f(a):
        seen["is_array"] = isinstance(a, fad.Array)
        seen["shape"] = a.shape
        seen["value"] = np.asarray(a.value).copy()
        return a

    g = fad.grad(f)(np.array(2.5))
    assert seen["is_array"] is True
    assert seen["shape"] == ()
    assert seen["value"].shape == () and float(seen["value"]) == 2.5
    assert isinstance(g, np.ndarray) and g.shape == () and g.dtype == np.float64
    assert float(g) == 1.0


def test_0d_ndarray_constant_output_gives_zero_0d():
    g = fad.grad(lambda a: 4.0)(np.array(1.0))
    assert isinstance(g, np.ndarray) and g.shape == ()
    assert float(g) == 0.0


def test_0d_array_value_and_grad_value_is_python_float():
    v, g = fad.value_and_grad(lambda a: a)(np.array(-1.25))
    assert type(v) is float and v == -1.25
    assert g.shape == () and float(g) == 1.0


def test_zero_d_array_input_keeps_zero_d_shapes():
    f = lambda a: fad.sin(a) * a                         # noqa: E731
    x = np.array(0.7)
    g = fad.grad(f)(x)
    assert isinstance(g, np.ndarray) and g.shape == ()
    h = fad.hessian(f)(x)
    assert h.shape == ()
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.gradient(x), g)
    np.testing.assert_allclose(tape.at(x).hvp(np.array(1.0)), h)
    np.testing.assert_allclose(fad.hvp(f, x, np.ones(2)), [h, h])


def test_list_input_becomes_array():
    seen = {}

    def f(a):
        seen["is_array"] = isinstance(a, fad.Array)
        seen["shape"] = a.shape
        return a[0] * a[1] * a[2]

    g = fad.grad(f)([2, 3.0, -1])
    assert seen == {"is_array": True, "shape": (3,)}
    assert isinstance(g, np.ndarray) and g.shape == (3,) and g.dtype == np.float64
    close(g, [-3.0, -2.0, 6.0], atol=1e-15)


def test_int_ndarray_input_converted_to_float64():
    seen = {}

    def f(a):
        seen["value"] = a.value
        return a[0] * a[1]

    g = fad.grad(f)(np.array([3, 4]))
    assert seen["value"].dtype == np.float64
    assert g.dtype == np.float64
    close(g, [4.0, 3.0], atol=1e-15)


def test_input_array_not_modified_and_not_aliased():
    x = np.array([1.0, 2.0, 3.0])
    keep = x.copy()
    g = fad.grad(lambda a: a[0] * a[1] * a[2])(x)
    np.testing.assert_array_equal(x, keep)
    assert not np.shares_memory(g, x)
    close(g, [6.0, 3.0, 2.0], atol=1e-15)


def test_fortran_order_input_gradient_placement():
    M = np.arange(6.0).reshape(2, 3).T  # shape (3, 2), F-contiguous
    assert not M.flags.c_contiguous

    def f(a):
        return a[0, 1] + 10.0 * a[2, 0] * a[1, 1]

    g = fad.grad(f)(M)
    expected = np.zeros((3, 2))
    expected[0, 1] = 1.0
    expected[2, 0] = 10.0 * M[1, 1]
    expected[1, 1] = 10.0 * M[2, 0]
    close(g, expected, atol=1e-15)


def test_strided_input_gradient_placement():
    x = np.arange(10.0)[::3]  # [0, 3, 6, 9], non-contiguous view
    g = fad.grad(lambda a: a[1] * a[3])(x)
    close(g, [0.0, 9.0, 0.0, 3.0], atol=1e-15)


def test_fortran_ordered_and_strided_inputs_and_directions():
    A = np.arange(6.0).reshape(2, 3)
    g = fad.grad(lambda a: fad.sum(a * A))(np.asfortranarray(np.ones((2, 3))))
    np.testing.assert_array_equal(g, A)
    tape = fad.record(lambda a: fad.sum(a[0] * np.arange(3.0)) + a[1, 2] ** 2, np.ones((2, 3)))
    np.testing.assert_allclose(tape.gradient(np.asfortranarray(A)), [[0, 1, 2], [0, 0, 10]])
    _, jv = fad.jvp(lambda a: a.T * 1.0, np.ones((2, 3)), np.asfortranarray(A))
    np.testing.assert_array_equal(jv, A.T)
    np.testing.assert_allclose(fad.hvp(lambda a: fad.sum(a ** 3), np.ones((2, 3)), np.asfortranarray(A)),
                               6 * A)
    np.testing.assert_allclose(fad.grad(lambda a: fad.sum(a ** 2))(np.arange(10.0)[::-2]),
                               2 * np.arange(10.0)[::-2])


def test_float32_input_gives_float32_gradient():
    # the tape computes in float64; the gradient has the input's dtype (#16)
    x = np.array([1.5, 2.0], dtype=np.float32)
    g = fad.grad(lambda a: a[0] * a[1])(x)
    assert g.dtype == np.float32
    close(g, [2.0, 1.5], atol=1e-15)


def test_read_only_input_array():
    x = np.array([1.5, 2.0, -1.0])
    x.flags.writeable = False
    g = fad.grad(lambda a: a[0] * a[1] * a[2])(x)
    close(g, [-2.0, -1.5, 3.0], atol=1e-15)


def test_broadcast_view_input_array():
    # np.broadcast_to gives a read-only, zero-stride view
    x = np.broadcast_to(np.array([1.0, 2.0]), (3, 2))
    g = fad.grad(lambda a: a[0, 0] * a[2, 1])(x)
    close(g, [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]], atol=1e-15)


def test_numpy_integer_index():
    x = np.array([1.0, 2.0, 3.0])

    def f(a):
        s = 0.0
        for i in np.arange(3):
            s = s + a[i] * a[i]
        return s

    close(fad.grad(f)(x), 2.0 * x, atol=1e-15)


def test_gradients_are_fresh_arrays():
    g = fad.grad(lambda a: a[0] * a[1])
    g1 = g(np.array([1.0, 2.0]))
    g2 = g(np.array([5.0, 7.0]))
    assert not np.shares_memory(g1, g2)
    close(g1, [2.0, 1.0], atol=1e-15)
    close(g2, [7.0, 5.0], atol=1e-15)


def test_numpy_scalar_constant_output():
    g = fad.grad(lambda x: np.float64(2.0))(1.0)
    assert g == 0.0


# ---------------------------------------------------------------------------
# argnums, pass-through, has_aux, value_and_grad
# ---------------------------------------------------------------------------

def f3(x, y, z):
    return x * y * y + fad.sin(z)


def test_argnums_int():
    x, y, z = 2.0, 3.0, 0.4
    assert fad.grad(f3)(x, y, z) == y * y
    assert fad.grad(f3, argnums=1)(x, y, z) == 2 * x * y
    close(fad.grad(f3, argnums=2)(x, y, z), math.cos(z), atol=1e-15)


def test_argnums_tuple_and_order():
    x, y, z = 2.0, 3.0, 0.4
    g = fad.grad(f3, argnums=(0, 2))(x, y, z)
    assert isinstance(g, tuple) and len(g) == 2
    close(g[0], y * y, atol=1e-15)
    close(g[1], math.cos(z), atol=1e-15)
    g = fad.grad(f3, argnums=(2, 0))(x, y, z)
    close(g[0], math.cos(z), atol=1e-15)
    close(g[1], y * y, atol=1e-15)
    g = fad.grad(f3, argnums=(1,))(x, y, z)
    assert isinstance(g, tuple) and len(g) == 1
    close(g[0], 2 * x * y, atol=1e-15)
    g = fad.grad(f3, argnums=(0, 1, 2))(x, y, z)
    assert all(type(gi) is float for gi in g)
    close(g, [y * y, 2 * x * y, math.cos(z)], atol=1e-15)


def test_argnums_tuple_mixed_float_and_array():
    def f(s, a):
        return s * a[0] + s * s * a[1]

    s, a = 1.5, np.array([2.0, -1.0])
    gs, ga = fad.grad(f, argnums=(0, 1))(s, a)
    assert type(gs) is float
    assert isinstance(ga, np.ndarray) and ga.shape == (2,)
    close(gs, a[0] + 2 * s * a[1], atol=1e-15)
    close(ga, [s, s * s], atol=1e-15)


def test_non_differentiated_args_passed_unchanged():
    sentinel = object()
    label = "hello"
    arr = np.array([1.0, 2.0])
    plain = 2.5
    seen = {}

    def f(x, obj, s, a, p):
        seen["obj"] = obj is sentinel
        seen["s"] = s is label
        seen["a"] = a is arr
        seen["p_is_var"] = isinstance(p, fad.Var)
        seen["p"] = p is plain
        return x * a[1] * p

    g = fad.grad(f)(3.0, sentinel, label, arr, plain)
    assert seen == {"obj": True, "s": True, "a": True, "p_is_var": False, "p": True}
    assert g == 2.0 * 2.5


def test_has_aux_grad():
    aux_obj = {"k": [1, 2]}

    def f(x):
        return x * x, aux_obj

    g, aux = fad.grad(f, has_aux=True)(3.0)
    assert aux is aux_obj
    assert type(g) is float and g == 6.0


def test_has_aux_with_argnums_tuple():
    def f(x, y):
        return x * y, "aux"

    (gx, gy), aux = fad.grad(f, argnums=(0, 1), has_aux=True)(2.0, 5.0)
    assert aux == "aux"
    assert (gx, gy) == (5.0, 2.0)


def test_value_and_grad():
    v, g = fad.value_and_grad(lambda x: fad.sin(x) * x)(0.5)
    assert type(v) is float and type(g) is float
    close(v, math.sin(0.5) * 0.5, atol=1e-15)
    close(g, math.cos(0.5) * 0.5 + math.sin(0.5), atol=1e-15)


def test_value_and_grad_array_and_argnums():
    def f(a, s):
        return a[0] * s + a[1] * a[1]

    v, (ga, gs) = fad.value_and_grad(f, argnums=(0, 1))(np.array([2.0, 3.0]), 4.0)
    assert type(v) is float and v == 17.0
    close(ga, [4.0, 6.0], atol=1e-15)
    assert gs == 2.0


def test_value_and_grad_has_aux():
    def f(x):
        return fad.exp(x), ("aux", 1)

    (v, aux), g = fad.value_and_grad(f, has_aux=True)(0.3)
    assert aux == ("aux", 1)
    assert type(v) is float
    close(v, math.exp(0.3), atol=1e-15)
    close(g, math.exp(0.3), atol=1e-15)


def test_has_aux_returns_values_not_dead_tape_vars():
    """BUG (JAX semantics): with has_aux, an aux that holds intermediate Vars /
    Arrays is handed back as objects of an ended recording: float(aux) raises
    'cannot be converted ... while it is being differentiated' and
    aux + 1 raises TapeError.  JAX returns the concrete values."""
    def f(x):
        y = x * x
        return y + 1.0, y

    g, aux = fad.grad(f, has_aux=True)(3.0)
    assert g == 6.0
    assert float(aux) == 9.0


# ---------------------------------------------------------------------------
# check_grad
# ---------------------------------------------------------------------------

def test_check_grad_scalar_smooth():
    c = fad.check_grad(lambda x: fad.sin(x) * x + x ** 3, 0.7)
    assert isinstance(c, float)
    assert math.isfinite(c) and 0.0 <= c < 1e-6


def test_check_grad_array_smooth():
    def f(a):
        return a[0] ** 2 * fad.exp(a[1]) + fad.tanh(a[2] * a[0])

    c = fad.check_grad(f, np.array([0.3, -0.2, 1.1]))
    assert isinstance(c, float)
    assert math.isfinite(c) and 0.0 <= c < 1e-6


def test_check_grad_eps_keyword():
    c = fad.check_grad(lambda x: fad.log(1.0 + x * x), 1.3, eps=1e-5)
    assert isinstance(c, float)
    assert 0.0 <= c < 1e-6


def test_check_grad_on_function_using_sigmoid_of_a_transpose():
    """BUG (consequence of the one above): check_grad evaluates f on plain
    ndarrays, so a correct gradient is reported as off by about 0.2."""
    assert fad.check_grad(lambda a: fad.sum(fad.sigmoid(a.T)), np.ones((2, 3))) < 1e-6


# ---------------------------------------------------------------------------
# constant output
# ---------------------------------------------------------------------------

def test_constant_output_float_input():
    g = fad.grad(lambda x: 3.0)(2.0)
    assert type(g) is float and g == 0.0
    g = fad.grad(lambda x: 7)(2.0)
    assert type(g) is float and g == 0.0


def test_constant_output_array_input():
    g = fad.grad(lambda a: 1.5)(np.ones((2, 3)))
    assert isinstance(g, np.ndarray) and g.shape == (2, 3)
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_constant_output_from_math_on_numbers():
    g = fad.grad(lambda x: fad.sin(1.0) + 2)(0.5)
    assert g == 0.0


def test_constant_output_value_and_grad():
    v, g = fad.value_and_grad(lambda x: 2)(1.0)
    assert v == 2.0 and type(v) is float
    assert g == 0.0


def test_output_ignoring_some_array_entries():
    g = fad.grad(lambda a: a[1] * 2.0)(np.array([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(g, [0.0, 2.0, 0.0])


# ---------------------------------------------------------------------------
# extended Rosenbrock (loop over scalars)
# ---------------------------------------------------------------------------

def rosen_pairs(a):
    """Extended Rosenbrock (More, Garbow, Hillstrom): independent pairs."""
    s = 0.0
    for i in range(0, len(a), 2):
        t1 = 10.0 * (a[i + 1] - a[i] * a[i])
        t2 = 1.0 - a[i]
        s = s + t1 * t1 + t2 * t2
    return s


def rosen_pairs_grad(x):
    g = np.zeros_like(x)
    xo, xe = x[0::2], x[1::2]
    g[0::2] = -400.0 * xo * (xe - xo ** 2) - 2.0 * (1.0 - xo)
    g[1::2] = 200.0 * (xe - xo ** 2)
    return g


@pytest.mark.parametrize("n", [50, 1000])
def test_rosenbrock_chained(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1.5, 1.5, size=n)
    v, g = fad.value_and_grad(rosen_loop)(x)
    close(v, rosen_np(x), rtol=1e-11, atol=1e-15)
    assert g.shape == (n,)
    close(g, rosen_grad_np(x), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("n", [50, 1000])
def test_rosenbrock_extended_pairs(n):
    rng = np.random.default_rng(n + 1)
    x = rng.uniform(-1.5, 1.5, size=n)
    g = fad.grad(rosen_pairs)(x)
    close(g, rosen_pairs_grad(x), rtol=1e-11, atol=1e-11)


def test_rosenbrock_minimum_has_zero_gradient():
    g = fad.grad(rosen_loop)(np.ones(50))
    np.testing.assert_array_equal(g, np.zeros(50))


# ---------------------------------------------------------------------------
# Array API
# ---------------------------------------------------------------------------

def test_array_attributes_1d():
    seen = {}

    def f(a):
        seen.update(shape=a.shape, ndim=a.ndim, size=a.size, len=len(a))
        return a[0]

    g = fad.grad(f)(np.arange(5.0))
    assert seen == {"shape": (5,), "ndim": 1, "size": 5, "len": 5}
    np.testing.assert_array_equal(g, [1, 0, 0, 0, 0])


def test_array_attributes_2d():
    seen = {}

    def f(a):
        seen.update(shape=a.shape, ndim=a.ndim, size=a.size, len=len(a))
        return a[0, 0]

    fad.grad(f)(np.zeros((3, 4)))
    assert seen == {"shape": (3, 4), "ndim": 2, "size": 12, "len": 3}


def test_array_iteration_1d():
    x = np.array([0.5, -1.0, 2.0, 3.0])
    seen = {}

    def f(a):
        items = list(a)
        seen["n"] = len(items)
        seen["all_var"] = all(isinstance(v, fad.Var) for v in items)
        seen["values"] = [v.value for v in items]
        s = 0.0
        for v in a:
            s = s + v * v * v
        return s

    g = fad.grad(f)(x)
    assert seen == {"n": 4, "all_var": True, "values": list(x)}
    close(g, 3 * x ** 2, atol=1e-15)


def test_array_sum_builtin():
    x = np.array([1.0, 2.0, 3.0])
    g = fad.grad(lambda a: sum(v * v for v in a))(x)
    close(g, 2 * x, atol=1e-15)


def test_array_indexing_returns_var_and_values():
    x = np.arange(12.0).reshape(3, 4) - 5.0
    seen = {}

    def f(a):
        seen["aij"] = isinstance(a[1, 2], fad.Var) and a[1, 2].value == x[1, 2]
        row = a[1]
        seen["row_is_array"] = isinstance(row, fad.Array)
        seen["row_shape"] = row.shape
        seen["row_value"] = row.value.tolist()
        seen["row_item"] = isinstance(row[3], fad.Var) and row[3].value == x[1, 3]
        return a[1, 2] * a[2, 3]

    g = fad.grad(f)(x)
    assert seen == {"aij": True, "row_is_array": True, "row_shape": (4,),
                    "row_value": x[1].tolist(), "row_item": True}
    expected = np.zeros_like(x)
    expected[1, 2] = x[2, 3]
    expected[2, 3] = x[1, 2]
    close(g, expected, atol=1e-15)


def test_array_negative_indices():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    seen = {}

    def f(a):
        seen["v"] = (a[-1].value, a[-5].value)
        return a[-1] * 10.0 + a[-5] + a[-2] * a[-2]

    g = fad.grad(f)(x)
    assert seen["v"] == (5.0, 1.0)
    close(g, [1.0, 0.0, 0.0, 8.0, 10.0], atol=1e-15)


def test_array_negative_indices_2d():
    x = np.arange(6.0).reshape(2, 3)

    def f(a):
        return a[-1, -1] * 3.0 + a[-2, 0] + a[-1][-3] * 5.0

    g = fad.grad(f)(x)
    close(g, [[1.0, 0.0, 0.0], [5.0, 0.0, 3.0]], atol=1e-15)


def test_array_slices_are_views_1d():
    x = np.arange(6.0) + 1.0  # [1..6]
    seen = {}

    def f(a):
        s1 = a[1:3]
        s2 = a[::2]
        s3 = a[::-1]
        s4 = a[1::3]
        s5 = a[-3:]
        seen["types"] = all(isinstance(s, fad.Array) for s in (s1, s2, s3, s4, s5))
        seen["shapes"] = (s1.shape, s2.shape, s3.shape, s4.shape, s5.shape)
        seen["values"] = [s.value.tolist() for s in (s1, s2, s3, s4, s5)]
        # slice of a slice
        s6 = a[1:6][::2]  # elements 1, 3, 5
        seen["s6"] = s6.value.tolist()
        return (1.0 * s1[0] + 10.0 * s2[1] + 100.0 * s3[0] + 1000.0 * s4[1]
                + 10000.0 * s5[0] + 100000.0 * s6[1])

    g = fad.grad(f)(x)
    assert seen["types"]
    assert seen["shapes"] == ((2,), (3,), (6,), (2,), (3,))
    assert seen["values"] == [x[1:3].tolist(), x[::2].tolist(), x[::-1].tolist(),
                              x[1::3].tolist(), x[-3:].tolist()]
    assert seen["s6"] == x[1:6][::2].tolist()
    # s1[0]=a1, s2[1]=a2, s3[0]=a5, s4[1]=a4, s5[0]=a3, s6[1]=a3
    close(g, [0.0, 1.0, 10.0, 110000.0, 1000.0, 100.0], atol=1e-15)


def test_array_column_and_2d_slices():
    x = np.arange(12.0).reshape(3, 4) + 1.0
    seen = {}

    def f(a):
        col = a[:, 0]
        sub = a[::2, 1::2]
        seen["col"] = (isinstance(col, fad.Array), col.shape, col.value.tolist())
        seen["sub"] = (isinstance(sub, fad.Array), sub.shape, sub.value.tolist())
        seen["col_last"] = a[:, -1].value.tolist()
        return 2.0 * col[2] + 3.0 * sub[1, 0] + 5.0 * a[:, -1][0] + 7.0 * a[1:, 2][0]

    g = fad.grad(f)(x)
    assert seen["col"] == (True, (3,), x[:, 0].tolist())
    assert seen["sub"] == (True, (2, 2), x[::2, 1::2].tolist())
    assert seen["col_last"] == x[:, -1].tolist()
    expected = np.zeros_like(x)
    expected[2, 0] += 2.0   # col[2]
    expected[2, 1] += 3.0   # sub[1, 0]
    expected[0, 3] += 5.0   # a[:, -1][0]
    expected[1, 2] += 7.0   # a[1:, 2][0]
    close(g, expected, atol=1e-15)


def test_array_row_iteration_of_column_slice():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

    def f(a):
        s = 0.0
        for v in a[:, 1]:
            s = s + v * v
        return s

    g = fad.grad(f)(x)
    close(g, [[0.0, 4.0], [0.0, 8.0], [0.0, 12.0]], atol=1e-15)


@pytest.mark.parametrize("index", [5, -6, 100])
def test_array_index_error_1d_inside_f(index):
    x = np.arange(5.0)
    raised = []

    def f(a):
        try:
            a[index]
        except IndexError:
            raised.append(True)
        return a[1] * a[1]

    g = fad.grad(f)(x)
    assert raised == [True]
    close(g, [0.0, 2.0, 0.0, 0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("index", [(3, 0), (0, 4), (-4, 0), (0, -5)])
def test_array_index_error_2d(index):
    with pytest.raises(IndexError):
        fad.grad(lambda a: a[index])(np.zeros((3, 4)))
    # library keeps working
    close(fad.grad(lambda a: a[2, 3] * 2.0)(np.zeros((3, 4)))[2, 3], 2.0, atol=1e-15)


def test_array_row_index_error():
    with pytest.raises(IndexError):
        fad.grad(lambda a: a[3][0])(np.zeros((3, 4)))


def test_array_value_is_ndarray_copy():
    x = np.array([1.0, 2.0, 3.0])
    seen = {}

    def f(a):
        v = a.value
        seen["type"] = isinstance(v, np.ndarray)
        seen["equal"] = np.array_equal(v, x)
        v[0] = 123.0
        seen["after"] = a.value.tolist()
        seen["item_after"] = a[0].value
        return a[0] * 2.0

    g = fad.grad(f)(x)
    assert seen == {"type": True, "equal": True, "after": [1.0, 2.0, 3.0], "item_after": 1.0}
    close(g, [2.0, 0.0, 0.0], atol=1e-15)
    assert x[0] == 1.0


def test_array_value_2d_shape():
    x = np.arange(6.0).reshape(2, 3)
    seen = {}

    def f(a):
        seen["v"] = a.value
        seen["row"] = a[1].value
        return a[0, 0]

    fad.grad(f)(x)
    np.testing.assert_array_equal(seen["v"], x)
    assert seen["v"].shape == (2, 3)
    np.testing.assert_array_equal(seen["row"], x[1])


# ---------------------------------------------------------------------------
# Var operators
# ---------------------------------------------------------------------------

CONSTANTS = [3, 2.5, np.float64(2.5), np.int64(3)]
CONST_IDS = ["int", "float", "np.float64", "np.int64"]

# name: (op on (x, c), d op / dx at (x, c))
CONST_OPS = {
    "x+c": (lambda x, c: x + c, lambda x, c: 1.0),
    "c+x": (lambda x, c: c + x, lambda x, c: 1.0),
    "x-c": (lambda x, c: x - c, lambda x, c: 1.0),
    "c-x": (lambda x, c: c - x, lambda x, c: -1.0),
    "x*c": (lambda x, c: x * c, lambda x, c: float(c)),
    "c*x": (lambda x, c: c * x, lambda x, c: float(c)),
    "x/c": (lambda x, c: x / c, lambda x, c: 1.0 / c),
    "c/x": (lambda x, c: c / x, lambda x, c: -float(c) / x ** 2),
    "x**c": (lambda x, c: x ** c, lambda x, c: c * x ** (c - 1)),
    "c**x": (lambda x, c: c ** x, lambda x, c: float(c) ** x * math.log(c)),
}


@pytest.mark.parametrize("c", CONSTANTS, ids=CONST_IDS)
@pytest.mark.parametrize("name", list(CONST_OPS))
def test_var_operator_with_constant(name, c):
    op, deriv = CONST_OPS[name]
    x0 = 1.7
    seen = {}

    def f(x):
        r = op(x, c)
        seen["is_var"] = isinstance(r, fad.Var)
        return r

    v, g = fad.value_and_grad(f)(x0)
    assert seen["is_var"], f"{name} with {type(c).__name__} did not give a Var"
    close(v, float(op(x0, float(c))), atol=1e-15)
    close(g, deriv(x0, c), atol=1e-15)


VV_OPS = {
    "x+y": (lambda x, y: x + y, lambda x, y: (1.0, 1.0)),
    "x-y": (lambda x, y: x - y, lambda x, y: (1.0, -1.0)),
    "x*y": (lambda x, y: x * y, lambda x, y: (y, x)),
    "x/y": (lambda x, y: x / y, lambda x, y: (1.0 / y, -x / y ** 2)),
    "x**y": (lambda x, y: x ** y, lambda x, y: (y * x ** (y - 1), x ** y * math.log(x))),
}


@pytest.mark.parametrize("name", list(VV_OPS))
@pytest.mark.parametrize("x0,y0", [(1.7, 0.6), (0.3, -2.2), (4.0, 3.0)])
def test_var_operator_var_var(name, x0, y0):
    op, deriv = VV_OPS[name]
    v, (gx, gy) = fad.value_and_grad(op, argnums=(0, 1))(x0, y0)
    close(v, op(x0, y0), atol=1e-15)
    ex, ey = deriv(x0, y0)
    close(gx, ex, atol=1e-15)
    close(gy, ey, atol=1e-15)


def test_var_operator_same_var_twice():
    # x*x, x/x, x-x: both operand slots point to the same input
    assert fad.grad(lambda x: x * x)(3.0) == 6.0
    assert fad.grad(lambda x: x - x)(3.0) == 0.0
    close(fad.grad(lambda x: x / x)(3.0), 0.0, atol=1e-15)
    close(fad.grad(lambda x: x + x + x)(3.0), 3.0, atol=1e-15)


def test_integer_powers_at_zero_and_negative():
    # d/dx x**2 at 0 is 0 (not nan); at negative bases integer powers are fine
    assert fad.grad(lambda x: x ** 2)(0.0) == 0.0
    assert fad.grad(lambda x: x ** 3)(0.0) == 0.0
    assert fad.grad(lambda x: x ** 1)(0.0) == 1.0
    close(fad.grad(lambda x: x ** 2)(-1.5), -3.0, atol=1e-15)
    close(fad.grad(lambda x: x ** 3)(-2.0), 12.0, atol=1e-15)
    close(fad.grad(lambda x: x ** -1)(-2.0), -0.25, atol=1e-15)
    close(fad.grad(lambda x: x ** 2.0)(-1.5), -3.0, atol=1e-15)


@pytest.mark.parametrize("x0", [-2.0, -0.5, 0.75, 3.0])
def test_unary_operators(x0):
    seen = {}

    def f(x):
        n, p, a = -x, +x, abs(x)
        seen["types"] = all(isinstance(r, fad.Var) for r in (n, p, a))
        seen["values"] = (n.value, p.value, a.value)
        return 1.0 * n + 10.0 * p + 100.0 * a

    g = fad.grad(f)(x0)
    assert seen["types"]
    assert seen["values"] == (-x0, x0, abs(x0))
    close(g, -1.0 + 10.0 + 100.0 * math.copysign(1.0, x0), atol=1e-15)


def test_unary_minus_twice():
    assert fad.grad(lambda x: -(-x) * 2.0)(1.0) == 2.0


VAR = "var"


@pytest.mark.parametrize("other", [2, 2.0, np.float64(2.0), np.int64(2), VAR],
                         ids=["int", "float", "np.float64", "np.int64", "Var"])
def test_comparisons_return_python_bool(other):
    seen = {}

    def f(x, y):
        o = y if isinstance(other, str) else other
        forward = [x < o, x <= o, x > o, x >= o, x == o, x != o]
        seen["forward_types"] = [type(r) for r in forward]
        seen["forward"] = forward
        eq_self = x == x
        seen["eq_self"] = (type(eq_self), eq_self)
        return x * y

    g = fad.grad(f, argnums=(0, 1))(3.0, 2.0)
    assert seen["forward_types"] == [bool] * 6
    assert seen["forward"] == [False, False, True, True, False, True]
    assert seen["eq_self"] == (bool, True)
    assert g == (2.0, 3.0)


@pytest.mark.parametrize("other", [2, 2.0, VAR], ids=["int", "float", "Var"])
def test_comparisons_reflected_return_python_bool(other):
    seen = {}

    def f(x, y):
        o = y if isinstance(other, str) else other
        rev = [o < x, o <= x, o > x, o >= x, o == x, o != x]
        seen["types"] = [type(r) for r in rev]
        seen["rev"] = rev
        return x + y

    assert fad.grad(f, argnums=(0, 1))(3.0, 2.0) == (1.0, 1.0)
    assert seen["types"] == [bool] * 6
    assert seen["rev"] == [True, True, False, False, False, True]


@pytest.mark.parametrize("other", [np.float64(2.0), np.int64(2)], ids=["np.float64", "np.int64"])
def test_comparisons_numpy_scalar_on_left(other):
    seen = {}

    def f(x):
        rev = [other < x, other <= x, other > x, other >= x, other == x, other != x]
        seen["types_ok"] = all(isinstance(r, (bool, np.bool_)) for r in rev)
        seen["rev"] = [bool(r) for r in rev]
        return x

    fad.grad(f)(3.0)
    assert seen["types_ok"]
    assert seen["rev"] == [True, True, False, False, False, True]


def test_comparison_drives_python_branch():
    def f(x):
        if x > 1.0:
            return x * x
        return -3.0 * x

    assert fad.grad(f)(2.0) == 4.0
    assert fad.grad(f)(0.5) == -3.0


# ---------------------------------------------------------------------------
# NumPy ufunc dispatch on Var
# ---------------------------------------------------------------------------

UNARY_UFUNCS = [
    (np.sin, lambda x: math.cos(x)),
    (np.cos, lambda x: -math.sin(x)),
    (np.tan, lambda x: 1.0 / math.cos(x) ** 2),
    (np.arcsin, lambda x: 1.0 / math.sqrt(1.0 - x * x)),
    (np.arccos, lambda x: -1.0 / math.sqrt(1.0 - x * x)),
    (np.arctan, lambda x: 1.0 / (1.0 + x * x)),
    (np.sinh, lambda x: math.cosh(x)),
    (np.cosh, lambda x: math.sinh(x)),
    (np.tanh, lambda x: 1.0 / math.cosh(x) ** 2),
    (np.exp, lambda x: math.exp(x)),
    (np.expm1, lambda x: math.exp(x)),
    (np.log, lambda x: 1.0 / x),
    (np.log1p, lambda x: 1.0 / (1.0 + x)),
    (np.log2, lambda x: 1.0 / (x * math.log(2.0))),
    (np.log10, lambda x: 1.0 / (x * math.log(10.0))),
    (np.sqrt, lambda x: 0.5 / math.sqrt(x)),
    (np.square, lambda x: 2.0 * x),
    (np.absolute, lambda x: 1.0),
    (np.negative, lambda x: -1.0),
]


@pytest.mark.parametrize("ufunc,deriv", UNARY_UFUNCS, ids=[u.__name__ for u, _ in UNARY_UFUNCS])
def test_numpy_unary_ufunc_dispatch(ufunc, deriv):
    x0 = 0.6
    seen = {}

    def f(x):
        r = ufunc(x)
        seen["is_var"] = isinstance(r, fad.Var)
        return r

    v, g = fad.value_and_grad(f)(x0)
    assert seen["is_var"], f"np.{ufunc.__name__}(Var) did not give a Var"
    close(v, float(ufunc(x0)), atol=1e-15)
    close(g, deriv(x0), atol=1e-15)


BINARY_UFUNCS = [
    ("add", lambda x, y: np.add(x, y), lambda x, y: (1.0, 1.0)),
    ("subtract", lambda x, y: np.subtract(x, y), lambda x, y: (1.0, -1.0)),
    ("multiply", lambda x, y: np.multiply(x, y), lambda x, y: (y, x)),
    ("true_divide", lambda x, y: np.true_divide(x, y), lambda x, y: (1 / y, -x / y ** 2)),
    ("power", lambda x, y: np.power(x, y), lambda x, y: (y * x ** (y - 1), x ** y * math.log(x))),
    ("arctan2", lambda x, y: np.arctan2(x, y),
     lambda x, y: (y / (x * x + y * y), -x / (x * x + y * y))),
    ("hypot", lambda x, y: np.hypot(x, y),
     lambda x, y: (x / math.hypot(x, y), y / math.hypot(x, y))),
    ("maximum", lambda x, y: np.maximum(x, y), lambda x, y: (0.0, 1.0)),
    ("minimum", lambda x, y: np.minimum(x, y), lambda x, y: (1.0, 0.0)),
]


@pytest.mark.parametrize("name,op,deriv", BINARY_UFUNCS, ids=[b[0] for b in BINARY_UFUNCS])
def test_numpy_binary_ufunc_dispatch(name, op, deriv):
    x0, y0 = 0.6, 1.3
    seen = {}

    def f(x, y):
        r = op(x, y)
        seen["is_var"] = isinstance(r, fad.Var)
        return r

    v, (gx, gy) = fad.value_and_grad(f, argnums=(0, 1))(x0, y0)
    assert seen["is_var"], f"np.{name}(Var, Var) did not give a Var"
    close(v, float(op(x0, y0)), atol=1e-15)
    ex, ey = deriv(x0, y0)
    close(gx, ex, atol=1e-15)
    close(gy, ey, atol=1e-15)


def test_numpy_float64_times_var_both_orders():
    seen = {}

    def f(x):
        a = np.float64(2.0) * x
        b = x * np.float64(2.0)
        c = np.float64(1.0) + x
        d = np.float64(1.0) - x
        e = np.float64(3.0) / x
        seen["types"] = [type(r) for r in (a, b, c, d, e)]
        return a + 10.0 * b + 100.0 * c + 1000.0 * d + e

    x0 = 1.5
    g = fad.grad(f)(x0)
    assert seen["types"] == [fad.Var] * 5
    close(g, 2.0 + 20.0 + 100.0 - 1000.0 - 3.0 / x0 ** 2, atol=1e-15)


def test_numpy_ufuncs_on_array_elements():
    x = np.array([0.2, 0.9])
    g = fad.grad(lambda a: np.sin(a[0]) * np.exp(a[1]))(x)
    close(g, [math.cos(0.2) * math.exp(0.9), math.sin(0.2) * math.exp(0.9)], atol=1e-15)


def test_numpy_scalar_elements_of_plain_array_times_var():
    # a non-differentiated ndarray's elements are numpy scalars on the left of a Var
    w = np.array([0.5, -2.0, 3.0])

    def f(a, w):
        s = 0.0
        for i in range(3):
            s = s + w[i] * a[i]
        return s

    x = np.array([1.0, 2.0, 3.0])
    close(fad.grad(f)(x, w), w, atol=1e-15)
