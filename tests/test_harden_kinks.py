"""Issue #18, item 5: one strong-zero rule in every second-order path, scalar
and array: at a kink (sqrt'(0) = inf upstream of a zero partial) Hessians
are symmetric with no NaN, hvp agrees with the Hessian's rows, and the
second-order sweep's gradient agrees with the first-order one."""
import numpy as np
import pytest

import fastad as fad

X0 = np.array([0.0, 1.0])


def scalar_kink(x):
    return fad.sqrt(x[0] ** 2) + x[1] ** 2


def array_kink(x):
    return np.sum(np.sqrt(x[:1] ** 2)) + np.sum(x[1:] ** 2)


def mixed_kink(x):
    return np.sum(np.sqrt(x[:1] * x[:1])) * 1.0 + x[1] ** 2 + x[0] * 0.0


def product_kink(x):
    return fad.sqrt(x[0] * x[0]) * x[1] + x[1] ** 2


def broadcast_kink(x):
    return np.sum(np.sqrt(x[:1] ** 2) * np.ones((2, 1))) / 2.0 + x[1] ** 2


FUNCS = [scalar_kink, array_kink, mixed_kink, product_kink, broadcast_kink]
# the curvature away from the kink, in x[1] (the x[0] row/column are the kink's)
H11 = {"scalar_kink": 2.0, "array_kink": 2.0, "mixed_kink": 2.0, "product_kink": 2.0,
       "broadcast_kink": 2.0}


@pytest.mark.parametrize("f", FUNCS, ids=[f.__name__ for f in FUNCS])
def test_hessian_at_a_kink_is_symmetric_without_nan(f):
    H = fad.hessian(f)(X0)
    assert not np.isnan(H).any(), H
    assert H[0, 1] == H[1, 0]
    assert H[1, 1] == H11[f.__name__]
    Ht = fad.record(f, X0).hessian(X0)
    np.testing.assert_array_equal(Ht, H)
    Hs = fad.sparse_hessian(f)(X0).toarray()
    assert not np.isnan(Hs).any() and Hs[1, 1] == H11[f.__name__]


@pytest.mark.parametrize("f", FUNCS, ids=[f.__name__ for f in FUNCS])
def test_hvp_agrees_with_the_hessian_and_first_order(f):
    H = fad.hessian(f)(X0)
    for j, v in enumerate(np.eye(2)):
        hv = fad.hvp(f, X0, v)
        assert not np.isnan(hv).any()
        np.testing.assert_array_equal(hv, H[:, j])      # (inf included: the kink's own)
    hv2 = fad.hvp(f, X0, np.eye(2))            # two lanes at once: the same rows
    np.testing.assert_array_equal(hv2[1], fad.hvp(f, X0, np.array([0.0, 1.0])))
    # the gradient of the second-order sweep is the first-order gradient
    t = fad.record(f, X0)
    val, g, _ = t.value_gradient_hvp(X0, np.array([0.0, 1.0]))
    np.testing.assert_array_equal(g, fad.grad(f)(X0))
    assert not np.isnan(g).any()


def test_the_issue_example():
    H = fad.hessian(scalar_kink)(X0)
    assert H[0, 1] == 0.0 and H[1, 0] == 0.0 and H[1, 1] == 2.0
    np.testing.assert_array_equal(fad.hvp(scalar_kink, X0, np.array([0.0, 1.0])), [0.0, 2.0])


def test_away_from_the_kink_nothing_changes():
    """Finite differences of the gradient at smooth points (the rule only acts at kinks)."""
    from conftest import fd_jacobian
    for f in FUNCS:
        x = np.array([0.7, -1.3])
        H = fad.hessian(f)(x)
        Hfd = fd_jacobian(fad.grad(f), x, h=1e-6)
        np.testing.assert_allclose(H, Hfd, rtol=1e-6, atol=1e-6)


def test_where_branch_second_order_still_strong_zero():
    f = lambda x: np.sum(fad.where(x > 0, np.sqrt(np.abs(x)), 0.0)) + x[1] ** 2  # noqa: E731
    x = np.array([0.0, 1.0])
    H = fad.hessian(f)(x)
    assert not np.isnan(H).any()
    assert H[0, 0] == 0.0 and H[0, 1] == H[1, 0] == 0.0
