"""NumPy-parity probes: plain NumPy code run on fad.Array must give NumPy's
values and shapes, and derivatives that match central finite differences.

The first group are failing tests for confirmed parity bugs; the rest are
guards for edge cases that work today (broadcasting, indexing, reductions
over axis tuples, logsumexp, result types).
"""
import numpy as np
import pytest

import fastad as fad
from conftest import fd_jacobian


def _check_parity(f, x):
    """f's value (seen inside the recording) and Jacobian (both modes) agree with NumPy/FD."""
    y0 = np.asarray(f(x), dtype=float)
    Jfd = fd_jacobian(f, x, relative=False)
    seen = {}

    def g(a):
        out = f(a)
        seen["value"] = np.asarray(out.value)
        return out

    J = fad.jacobian(g, mode="rev")(x)
    assert seen["value"].shape == y0.shape
    np.testing.assert_allclose(seen["value"], y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(J, Jfd, atol=1e-5)
    np.testing.assert_allclose(fad.jacobian(f, mode="fwd")(x), Jfd, atol=1e-5)


X5 = np.array([0.3, -1.2, 0.7, 2.1, -0.4])
X34 = np.arange(12.0).reshape(3, 4) / 7.0 - 0.8
X234 = np.sin(np.arange(24.0)).reshape(2, 3, 4)


# ====================================================================== bugs

def test_hstack_with_zero_d_items_follows_numpy():
    """np.hstack of a 1-D Array with a scalar (a Var or a float) crashes.

    NumPy's hstack applies atleast_1d to every item, so
    np.hstack([x, x[0]]) and np.hstack([x, 1.0]) have shape (n + 1,) and
    np.hstack([x[0], x[1]]) has shape (2,).  fastad's _hstack (arrays.py:358)
    only uses axis 0 when *every* item is 1-D; with a 0-d item it picks axis=1
    and raises numpy's AxisError "axis 1 is out of bounds", and two Vars raise
    "zero-dimensional arrays cannot be concatenated"."""
    _check_parity(lambda a: np.hstack([a, a[0]]), X5)
    _check_parity(lambda a: np.hstack([a, 1.0]), X5)
    _check_parity(lambda a: np.hstack([a[0], a[1] * 2.0]), X5)


def test_vstack_of_vars_follows_numpy():
    """np.vstack([x[0], x[1]]) raises "zero-dimensional arrays cannot be
    concatenated"; NumPy (atleast_2d on each item) gives shape (2, 1).
    fastad's _vstack (arrays.py:363-364) reshapes only 1-D items to (1, -1)."""
    _check_parity(lambda a: np.vstack([a[0], a[1] * 2.0]), X5)


def test_pow_with_modulo_is_not_silently_ignored():
    """pow(a, 2, 5) on a fad.Array silently returns a ** 2 (the modulo is
    dropped by Array.__pow__, _var.pyx:468); NumPy raises TypeError for a
    three-argument pow on an ndarray, and fastad's own Var.__pow__ refuses a
    modulo too.  A silently wrong value is worse than an error."""
    with pytest.raises(TypeError):
        pow(X5, 2, 5)                  # NumPy's behaviour
    with pytest.raises(TypeError):
        fad.jacobian(lambda a: pow(a, 2, 5))(X5)


def test_positional_dtype_is_not_taken_as_keepdims():
    """NumPy's positional order is sum(a, axis, dtype, out, keepdims) and
    ndarray.sum/mean(axis, dtype, ...).  fastad's sum/mean (arrays.py:180,
    191; _var.pyx:498, 501) take (axis, keepdims), so a positional dtype lands
    in keepdims and NumPy later fails with the baffling
    "'type' object cannot be interpreted as an integer" (or
    "'NoneType' ..." for a.mean(0, None)).  Either compute the NumPy result
    or raise a TypeError that names dtype."""
    cases = [lambda a: np.sum(a, 1, np.float64), lambda a: a.mean(0, None)]
    for f in cases:
        try:
            J = fad.jacobian(f)(X34)
        except TypeError as e:
            assert "dtype" in str(e), f"unclear error: {e}"
        else:
            assert J.shape == np.shape(f(X34)) + X34.shape


def test_np_where_single_argument_error_is_clear():
    """np.where(cond) with one argument (NumPy: the indices of the nonzero
    elements) on a fad.Array raises Python's
    "where() missing 2 required positional arguments: 'a' and 'b'", which
    says nothing about fastad or what to use instead (arrays.py:376 wraps
    fastad.where, which needs three arguments).  Expected: a TypeError that
    names np.where and fastad (like every other unsupported NumPy call)."""
    with pytest.raises(TypeError, match="fastad"):
        fad.grad(lambda a: np.sum(a[np.where(a)[0]]))(X5)


# ====================================================================== guards

@pytest.mark.parametrize("f, x", [
    (lambda a: a + np.linspace(0, 1, 4).reshape(1, 4), X34[:, :1]),   # (3,1)+(1,4)
    (lambda a: a * a.T, X34[:, :1]),                                   # (3,1)*(1,3)
    (lambda a: np.arange(10.0).reshape(2, 5) - a, X5),                 # (2,5)-(5,)
    (lambda a: X5 / a, np.array(1.5)),                                 # (5,) / 0-d Array
    (lambda a: X34 / a[1], X5),                                        # 2-D / Var
    (lambda a: a[0] ** np.abs(X34), X5),                               # Var ** 2-D
    (lambda a: np.abs(a) ** a, X5),                                    # Array ** Array
    (lambda a: np.abs(a) ** 0.5, X5),
    (lambda a: 2.0 ** a, X5),
    (lambda a: abs(-a), X34),
])
def test_broadcasting_and_powers(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("axis", [None, -1, -2, (0, 2), (-1, 0), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_mean_axis_tuples(axis, keepdims):
    _check_parity(lambda a: np.sum(a ** 3, axis=axis, keepdims=keepdims), X234)
    _check_parity(lambda a: np.mean(a ** 3, axis=axis, keepdims=keepdims), X234)


@pytest.mark.parametrize("f, x", [
    (lambda a: a[::-2] * 1.0, X5),
    (lambda a: a[..., 1] * a[0, ...].sum(), X234),
    (lambda a: a[None, :] * a[:, np.newaxis], X5),
    (lambda a: a[a > 0] ** 2, X5),
    (lambda a: a[np.array([0, 0, 2, 2, 2])] * a[[1, 1, 1, 1, 1]], X5),
    (lambda a: fad.stack([a[1][2], a[1, 2], a[-1][-2]]) if not isinstance(a, np.ndarray)
     else np.stack([a[1][2], a[1, 2], a[-1][-2]]), X34),
    (lambda a: (a @ a.T)[:, 1] + (a * 2)[::-1, 0], X34),
    (lambda a: a[:, ::-1, [0, 3]] * 2.0, X234),
])
def test_indexing(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("f, x", [
    (lambda a: np.dot(a, a), X5),
    (lambda a: np.dot(a, X34[0]), X34),
    (lambda a: np.where(a > 0, a, 0.0), X5),
    (lambda a: np.maximum(a, X34[0]), X34),
    (lambda a: np.concatenate([a, a ** 2], axis=-1), X34),
    (lambda a: np.stack([a, 2 * a], axis=1), X34),
    (lambda a: np.reshape(a, -1) * 1.0, X34),
    (lambda a: np.transpose(a, (2, 0, 1)) * 1.0, X234),
    (lambda a: np.max(a, axis=-1, keepdims=True) + np.min(a, axis=0).sum(), X34),
    (lambda a: np.squeeze(np.expand_dims(a, 1), axis=1) * 1.0, X34),
    (lambda a: np.vstack([a, 2 * a]) + np.hstack([a, a])[3:8], X5),
    (lambda a: np.linalg.norm(a), X34),
])
def test_numpy_functions(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_axis_matches_reference(axis, keepdims):
    def ref(x):
        m = np.max(x, axis=axis, keepdims=True)
        r = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return r if keepdims else np.squeeze(r, axis=axis)

    _check_parity(lambda a: ref(a) if isinstance(a, np.ndarray)
                  else fad.logsumexp(a, axis=axis, keepdims=keepdims), X34)


def test_result_types():
    with pytest.raises(ValueError, match="jacobian"):
        fad.grad(lambda a: np.sum(a, keepdims=True))(X5)          # shape (1,)
    g = fad.grad(lambda a: np.reshape(np.sum(a, keepdims=True), ()))(X5)  # shape ()
    np.testing.assert_allclose(g, np.ones(5))

    def f(a):
        s = np.sum(a)                        # a reduction to a scalar is a Var
        assert type(s) is fad.Var and isinstance(s.value, float)
        assert a.value.shape == a.shape == (5,)
        return fad.exp(s) if s > 0 else abs(s) ** 0.5
    assert X5.sum() > 0
    np.testing.assert_allclose(fad.grad(f)(X5), np.full(5, np.exp(X5.sum())))
