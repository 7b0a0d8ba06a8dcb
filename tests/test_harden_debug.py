"""Issue #18, item 4: the strong-zero rule stays (zero cotangents pass an exact
0, inf and NaN partials included), and fad.debug_nans names the operation
where an inf or NaN partial met a zero cotangent."""
import numpy as np
import pytest

import fastad as fad
from conftest import fd_grad


def softplus_naive(z):
    return np.sum(np.log1p(np.exp(z)))


def scalar_naive(x):
    return fad.log1p(fad.exp(x[0])) + x[1] * 2.0


def exp_over_exp(x):
    return np.sum(np.exp(x) / np.exp(x)) + x[0]


CASES = [(softplus_naive, np.array([1.0, 800.0]), r"exp\[2\]\[1\] = inf", "log1p"),
         (scalar_naive, np.array([800.0, 1.0]), r"exp\(v0\) = inf", "log1p"),
         (exp_over_exp, np.array([900.0, 1.0]), r"exp", "div")]


def test_the_rule_without_the_option():
    """The documented rule: the overflowed side passes an exact 0 (not NaN)."""
    g = fad.grad(softplus_naive)(np.array([1.0, 800.0]))
    np.testing.assert_allclose(g, [1.0 / (1.0 + np.exp(-1.0)), 0.0], rtol=1e-12)
    assert not fad.debug_nans(False)          # off by default


@pytest.mark.parametrize("f,x,what,reader", CASES, ids=[c[0].__name__ for c in CASES])
def test_debug_nans_names_the_operation(f, x, what, reader):
    with fad.debug_nans():
        with pytest.raises(FloatingPointError, match=what) as info:
            fad.grad(f)(x)
        assert f"read by: {reader}" in str(info.value)
        with pytest.raises(FloatingPointError, match="debug_nans"):
            fad.value_and_grad(f)(x)
        # where nothing overflows, the option changes nothing
        x1 = np.array([0.3, -0.2])
        np.testing.assert_allclose(fad.grad(f)(x1), fd_grad(f, x1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fad.grad(f)(x1), fd_grad(f, x1), rtol=1e-6, atol=1e-7)
    fad.grad(f)(x)                            # off again: no exception


def test_debug_nans_as_a_switch():
    prev = fad.debug_nans(True)
    try:
        assert not prev
        with pytest.raises(FloatingPointError):
            fad.grad(softplus_naive)(np.array([1.0, 800.0]))
        g = fad.grad(lambda z: np.sum(fad.softplus(z)))(np.array([1.0, 800.0]))
        np.testing.assert_allclose(g, [1.0 / (1.0 + np.exp(-1.0)), 1.0], rtol=1e-12)
    finally:
        fad.debug_nans(False)
    fad.grad(softplus_naive)(np.array([1.0, 800.0]))


def test_debug_nans_flags_the_where_trick_too():
    """The option reports every strong zero over an inf partial; on an
    unselected side of fad.where that is the intended one (the message says so)."""
    f = lambda x: np.sum(fad.where(x > 0, np.sqrt(np.abs(x)), 0.0))  # noqa: E731
    x = np.array([0.0, 4.0])
    np.testing.assert_allclose(fad.grad(f)(x), [0.0, 0.25])
    with fad.debug_nans():
        with pytest.raises(FloatingPointError, match="unselected side of fad.where"):
            fad.grad(f)(x)
