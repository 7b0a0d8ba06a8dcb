"""Reductions and scans (fastad.reductions): prod, cumsum, cumprod, var, std,
max/min/amax/amin over several axes, ptp, trace, diff, average, and sum/mean
with tuple axes, in every mode, against finite differences of the same code
run on plain ndarrays (then it is NumPy)."""
import numpy as np
import pytest

import fastad as fad
from fastad import reductions as R
from conftest import close, fd_close, fd_grad, fd_hessian, fd_jacobian, rng_for


def _point(shape, key, zeros=0, lo=0.5, hi=1.5):
    """A random point with distinct entries of random sign, `zeros` of them 0."""
    rng = rng_for(*key)
    x = rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)
    flat = x.reshape(-1)
    if zeros:
        flat[rng.choice(flat.size, zeros, replace=False)] = 0.0
    return x


def _weights(shape, key):
    return rng_for("w", *key).uniform(-1.0, 1.0, shape)


def _scalarize(f, w):
    """A nonlinear scalar of f at a nonlinear function of x (so second order
    sees f's curvature, and its first derivatives feed the curvature of the
    map before it)."""
    def s(x):
        y = f(x + 0.1 * x * x)
        return np.sum(w * np.sin(y)) if np.ndim(w) else w * np.sin(y)
    return s


def check_modes(f, x, key, k=3, hessian=True, sparse=True, replay_step=1e-3, rtol=1e-6):
    """f against central differences of f on ndarrays: reverse (k seeds),
    forward (k directions), second order, replay at a new point, sparsity."""
    y0 = np.asarray(f(x), dtype=np.float64)
    J = fd_jacobian(f, x)
    Jm = J.reshape(y0.size, x.size)
    rng = rng_for("modes", *key)
    # reverse: jacrev and a k-seeded pullback
    fd_close(fad.jacrev(f)(x), J, rtol=rtol, atol=1e-7)
    y, pull = fad.vjp(f, x)
    fd_close(np.asarray(y.value if hasattr(y, "value") else y), y0, rtol=1e-12, atol=1e-12)
    seeds = rng.normal(size=(k,) + y0.shape)
    fd_close(np.asarray(pull(seeds)).reshape(k, -1), seeds.reshape(k, -1) @ Jm, atol=1e-6)
    # forward: jacfwd and k directions
    fd_close(fad.jacfwd(f)(x), J, rtol=rtol, atol=1e-7)
    dirs = rng.normal(size=(k,) + x.shape)
    _, tang = fad.jvp(f, x, dirs)
    fd_close(np.asarray(tang).reshape(k, -1), dirs.reshape(k, -1) @ Jm.T, atol=1e-6)
    w = _weights(y0.shape, key)
    s = _scalarize(f, w)
    if hessian and x.size:
        H = fd_hessian(s, x).reshape(x.size, x.size)
        fd_close(fad.hessian(s)(x).reshape(x.size, x.size), H, rtol=1e-5, atol=1e-5)
        fd_close(np.asarray(fad.hvp(s, x, dirs)).reshape(k, -1), dirs.reshape(k, -1) @ H,
                 rtol=1e-5, atol=1e-5)
        pat = fad.hessian_sparsity(s)(x).toarray()
        assert pat[np.abs(H) > 1e-6].all(), "Hessian pattern misses a nonzero"
    # replay at a nearby point (the same max/min elements win there)
    t = fad.record(s, x)
    x1 = x + replay_step * rng.normal(size=x.shape)
    fd_close(t(x1), s(x1), rtol=1e-12, atol=1e-12)
    fd_close(t.gradient(x1), fd_grad(s, x1), rtol=rtol, atol=1e-7)
    if sparse and y0.size and x.size:
        flat = (lambda z: fad.reshape(f(z), (-1,))) if y0.ndim != 1 else f
        pat = fad.jacobian_sparsity(flat)(x).toarray()
        assert pat.shape == Jm.shape
        assert pat[np.abs(Jm) > 1e-8].all(), "Jacobian pattern misses a nonzero"
        fd_close(fad.sparse_jacobian(flat)(x).toarray(), Jm, rtol=rtol, atol=1e-7)
    return J


# ---------------------------------------------------------------- cumsum

@pytest.mark.parametrize("shape,axis", [((5,), None), ((5,), 0), ((5,), -1), ((3, 4), 0),
                                        ((3, 4), 1), ((3, 4), -2), ((3, 4), None),
                                        ((2, 3, 2), 1), ((1,), 0)])
def test_cumsum(shape, axis):
    x = _point(shape, ("cumsum", shape, axis))
    check_modes(lambda a: np.cumsum(a, axis=axis), x, ("cumsum", shape, axis))
    # the Jacobian is lower-triangular along the axis (exact pattern)
    if axis is not None and len(shape) == 1:
        pat = fad.jacobian_sparsity(lambda a: np.cumsum(a, axis=axis))(x).toarray()
        assert (pat == np.tril(np.ones((shape[0], shape[0]), bool))).all()


def test_cumsum_method_and_fad_name():
    x = _point((3, 4), ("cumsum-m",))
    g = fad.grad(lambda a: np.sum(a.cumsum(axis=1) ** 2))(x)
    close(g, fd_grad(lambda a: np.sum(a.cumsum(axis=1) ** 2), x), rtol=1e-6, atol=1e-7)
    g2 = fad.grad(lambda a: fad.sum(fad.cumsum(a, 1) ** 2))(x)
    close(g2, g)
    # analytic: d/dx_j sum_i (cumsum x)_i = number of i >= j
    close(fad.grad(lambda a: np.sum(np.cumsum(a)))(np.ones(4)), [4.0, 3.0, 2.0, 1.0])


def test_cumsum_empty_and_scalar():
    x = np.zeros((0, 3))
    J = fad.jacobian(lambda a: np.cumsum(a, axis=0))(x)
    assert J.shape == (0, 3, 0, 3)
    J = fad.jacobian(lambda a: np.cumsum(a, axis=1))(np.zeros((2, 0)))
    assert J.shape == (2, 0, 2, 0)
    # a 0-d input with axis=None is a length-1 result (as NumPy)
    close(fad.grad(lambda a: np.sum(np.cumsum(a * 3.0)))(2.0), 3.0)


# ---------------------------------------------------------------- cumprod

@pytest.mark.parametrize("shape,axis,zeros", [((5,), None, 0), ((5,), 0, 1), ((5,), -1, 2),
                                              ((3, 4), 0, 0), ((3, 4), 1, 2), ((3, 4), None, 1),
                                              ((2, 3, 2), 1, 0), ((2, 3, 2), -1, 3), ((1,), 0, 1)])
def test_cumprod(shape, axis, zeros):
    x = _point(shape, ("cumprod", shape, axis), zeros=zeros)
    check_modes(lambda a: np.cumprod(a, axis=axis), x, ("cumprod", shape, axis))


@pytest.mark.parametrize("z", [[2], [0, 3], [1, 2], [4]])
def test_cumprod_exact_at_zeros(z):
    """Analytic: d y_i / d x_j = prod_{l <= i, l != j} x_l; with zeros
    exactly 0 or the product of the others, never NaN."""
    x = np.array([1.5, -2.0, 0.5, 3.0, -0.7])
    x[z] = 0.0
    n = x.size
    J = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            J[i, j] = np.prod([x[m] for m in range(i + 1) if m != j])
    for mode in (fad.jacrev, fad.jacfwd):
        got = mode(np.cumprod)(x)
        assert np.isfinite(got).all()
        close(got, J)
    # second order: H of sum(w * cumprod) is sum_i w_i prod_{l<=i, l != j, m}
    w = np.arange(1.0, n + 1)
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            for m in range(i + 1):
                if m != j:
                    H[j, m] += w[i] * np.prod([x[q] for q in range(i + 1) if q not in (j, m)])
    close(fad.hessian(lambda a: np.sum(w * np.cumprod(a)))(x), H)
    close(fad.hvp(lambda a: np.sum(w * np.cumprod(a)), x, np.eye(n)), H)
    pat = fad.hessian_sparsity(lambda a: np.sum(w * np.cumprod(a)))(x).toarray()
    assert pat[H != 0].all() and not pat.diagonal().any()


@pytest.mark.skipif(not hasattr(np, "cumulative_sum"), reason="NumPy < 2.1")
@pytest.mark.parametrize("name", ["cumulative_sum", "cumulative_prod"])
@pytest.mark.parametrize("shape,axis,initial", [((4,), None, False), ((4,), 0, True),
                                                ((2, 3), 1, True), ((2, 3), -2, False)])
def test_cumulative(name, shape, axis, initial):
    fn = getattr(np, name)
    x = _point(shape, (name, shape, axis), zeros=1)
    check_modes(lambda a: fn(a, axis=axis, include_initial=initial), x, (name, shape, axis))
    if len(shape) > 1:
        with pytest.raises(ValueError, match=f"{name}: axis is required"):
            fad.grad(lambda a: np.sum(fn(a)))(x)


@pytest.mark.parametrize("m,zeros", [(37, 0), (37, 1), (37, 5), (17, 2), (65, 0)])
def test_long_scans_against_brute_force(m, zeros):
    """Lengths that are not powers of two (the log-step scan), zeros included:
    the Jacobian and Hessians against products written out one by one."""
    x = 1.0 + 0.3 * _point((m,), ("long", m, zeros), lo=-1.0, hi=1.0)
    x[rng_for("z", m).choice(m, zeros, replace=False)] = 0.0
    # cumprod: J[i, j] = prod_{l <= i, l != j} x_l
    J = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            J[i, j] = np.prod(np.delete(x[:i + 1], j))
    close(fad.jacrev(np.cumprod)(x), J, rtol=1e-10)
    close(fad.jacfwd(np.cumprod)(x), J, rtol=1e-10)
    # prod: H[j, l] = prod of all but j and l (0 on the diagonal)
    H = np.array([[0.0 if j == l else np.prod(np.delete(x, [j, l])) for l in range(m)]
                  for j in range(m)])
    close(fad.hessian(np.prod)(x), H, rtol=1e-10)
    # second order of cumprod, through a weighted sum: sum_i w_i d2 y_i
    w = _weights((m,), ("long", m))
    v = _weights((m,), ("long-v", m))
    Hv = np.zeros(m)
    for i in range(m):
        xi = x[:i + 1]
        for j in range(i + 1):
            Hv[j] += w[i] * sum(v[l] * np.prod(np.delete(xi, [j, l]))
                                for l in range(i + 1) if l != j)
    close(fad.hvp(lambda a: np.sum(w * np.cumprod(a)), x, v), Hv, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- prod

@pytest.mark.parametrize("shape,axis,keepdims,zeros", [
    ((5,), None, False, 0), ((5,), 0, True, 1), ((5,), -1, False, 2),
    ((3, 4), 0, False, 1), ((3, 4), 1, True, 0), ((3, 4), (0, 1), False, 2),
    ((2, 3, 2), (0, 2), False, 0), ((2, 3, 2), (-1, 0), True, 1), ((2, 3, 2), None, True, 0),
    ((3, 4), (), False, 0), ((1, 3), 0, False, 1)])
def test_prod(shape, axis, keepdims, zeros):
    x = _point(shape, ("prod", shape, axis), zeros=zeros)
    f = lambda a: np.prod(a, axis=axis, keepdims=keepdims)   # noqa: E731
    check_modes(f, x, ("prod", shape, axis))
    out_shape = np.shape(np.prod(x, axis=axis, keepdims=keepdims))
    assert np.shape(fad.jacobian(f)(x)) == out_shape + shape


@pytest.mark.parametrize("z", [[], [1], [1, 3], [0, 1, 2]])
def test_prod_exact_at_zeros(z):
    """Analytic partials and second partials (products of the others)."""
    x = np.array([1.5, -2.0, 0.5, 3.0])
    x[z] = 0.0
    n = x.size
    g = np.array([np.prod(np.delete(x, j)) for j in range(n)])
    H = np.array([[0.0 if j == m else np.prod(np.delete(x, [j, m])) for m in range(n)]
                  for j in range(n)])
    close(fad.grad(np.prod)(x), g)
    close(fad.jacfwd(np.prod)(x), g)
    close(fad.hessian(np.prod)(x), H)
    close(fad.hvp(np.prod, x, np.eye(n)), H)
    t = fad.record(np.prod, x)
    x1 = x[::-1].copy()
    g1 = np.array([np.prod(np.delete(x1, j)) for j in range(n)])
    close(t.gradient(x1), g1)
    # Hessian pattern: distinct pairs only (d2/dx_j^2 of a product is 0)
    pat = fad.hessian_sparsity(np.prod)(x).toarray()
    assert (pat == ~np.eye(n, dtype=bool)).all()


def test_prod_long_column_and_method():
    x = 1.0 + 0.01 * _point((70,), ("prod-long",))
    x[5] = 0.0
    g = fad.grad(lambda a: a.prod())(x)
    close(g, [np.prod(np.delete(x, j)) for j in range(x.size)])
    pat = fad.hessian_sparsity(np.prod)(x).toarray()
    assert pat[~np.eye(x.size, dtype=bool)].all()           # a superset there


def test_prod_empty():
    x = np.zeros((0, 3))
    f = lambda a: np.sum(np.prod(a, axis=0) * np.array([1.0, 2.0, 3.0]))   # noqa: E731
    assert fad.grad(f)(x).shape == (0, 3)
    close(fad.value_and_grad(f)(x)[0], 6.0)
    J = fad.jacobian(lambda a: np.prod(a, axis=1))(np.zeros((0, 3)))
    assert J.shape == (0, 0, 3)


# ---------------------------------------------------------------- var, std

@pytest.mark.parametrize("fn", [np.var, np.std])
@pytest.mark.parametrize("shape,axis,keepdims,ddof", [
    ((5,), None, False, 0), ((5,), 0, True, 1), ((3, 4), 1, False, 0),
    ((3, 4), -2, True, 1), ((2, 3, 2), (0, 2), False, 0), ((2, 3, 2), None, True, 2)])
def test_var_std(fn, shape, axis, keepdims, ddof):
    x = _point(shape, ("var", shape, axis))
    check_modes(lambda a: fn(a, axis=axis, ddof=ddof, keepdims=keepdims), x,
                ("var", fn.__name__, shape, axis))


def test_var_std_methods_and_analytic():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    n = x.size
    close(fad.grad(lambda a: a.var())(x), 2 * (x - x.mean()) / n)
    close(fad.grad(lambda a: a.var(ddof=1))(x), 2 * (x - x.mean()) / (n - 1))
    close(fad.grad(lambda a: a.std())(x), (x - x.mean()) / (n * x.std()))
    close(fad.grad(fad.std)(x), (x - x.mean()) / (n * x.std()))


@pytest.mark.parametrize("shape,axis", [((), None), ((3, 1), 1), ((1,), 0)])
def test_std_of_one_element_is_flat(shape, axis):
    """Over one element std is 0 at every point: all derivatives are 0 (not NaN)."""
    x = _point(shape, ("std1", shape))
    f = lambda a: np.sum(np.std(a, axis=axis) * 2.0)   # noqa: E731
    close(fad.grad(f)(x), np.zeros(shape))
    close(fad.hessian(f)(x), np.zeros(shape + shape))
    close(fad.hvp(f, x, np.ones((2,) + shape)), np.zeros((2,) + shape))


# ---------------------------------------------------------------- max, min, ptp

MAXES = [(np.max, "max"), (np.min, "min"), (np.amax, "amax"), (np.amin, "amin"),
         (np.ptp, "ptp")]


@pytest.mark.parametrize("fn,name", MAXES)
@pytest.mark.parametrize("shape,axis,keepdims", [
    ((5,), None, False), ((3, 4), 0, True), ((3, 4), -1, False), ((3, 4), (0, 1), False),
    ((2, 3, 4), (0, 2), False), ((2, 3, 4), (2, -3), True), ((2, 3, 4), None, True),
    ((2, 3, 4), (1,), False)])
def test_max_min_ptp(fn, name, shape, axis, keepdims):
    x = _point(shape, (name, shape, axis))
    check_modes(lambda a: fn(a, axis=axis, keepdims=keepdims), x, (name, shape, axis),
                replay_step=1e-6)


def test_max_methods_tuple_axes_and_ties():
    x = _point((2, 3, 4), ("max-m",))
    g = fad.grad(lambda a: np.sum(a.max(axis=(0, 2)) * np.array([1.0, 2.0, 3.0])))(x)
    expected = np.zeros_like(x)
    for j, c in enumerate([1.0, 2.0, 3.0]):
        i, k = np.unravel_index(np.argmax(x[:, j, :]), (2, 4))
        expected[i, j, k] = c
    close(g, expected)
    close(fad.grad(lambda a: a.min(axis=(1, 2), keepdims=True).sum())(x).sum(), 2.0)
    # ties: the first element in C order over the reduced axes gets it all
    t = np.ones((2, 2))
    close(fad.grad(lambda a: np.max(a, axis=(0, 1)))(t), [[1.0, 0.0], [0.0, 0.0]])
    close(fad.grad(lambda a: np.min(a))(t), [[1.0, 0.0], [0.0, 0.0]])
    close(fad.grad(lambda a: np.ptp(a, axis=0).sum())(t), np.zeros((2, 2)))
    close(fad.grad(lambda a: a.ptp())(np.array([3.0, -1.0, 2.0])), [1.0, -1.0, 0.0])
    close(fad.grad(lambda a: fad.max(a) + fad.amin(a))(np.array([3.0, -1.0, 2.0])),
          [1.0, 1.0, 0.0])


@pytest.mark.parametrize("f", [lambda a: np.max(a, axis=(0, 1)),
                               lambda a: np.ptp(a, axis=(1, 0)),
                               lambda a: np.amin(a, axis=(0, 1), keepdims=True).sum()])
def test_max_replay_branch_changed(f):
    x = np.array([[1.0, 2.0], [3.0, 0.0]])
    t = fad.record(f, x)
    fd_close(t.gradient(x + 0.01), fd_grad(f, x + 0.01))
    with pytest.raises(fad.BranchChangedError):
        t.gradient(np.array([[-5.0, 2.0], [3.0, 7.0]]))
    fd_close(t.gradient(x), fd_grad(f, x))       # usable afterwards


# ---------------------------------------------------------------- trace

@pytest.mark.parametrize("shape,offset,axis1,axis2", [
    ((3, 3), 0, 0, 1), ((3, 4), 1, 0, 1), ((4, 3), -1, 0, 1), ((3, 4), 5, 0, 1),
    ((2, 3, 3), 0, 1, 2), ((3, 2, 3), 0, -1, 0), ((2, 3, 4), 1, 2, 1)])
def test_trace(shape, offset, axis1, axis2):
    x = _point(shape, ("trace", shape, offset))
    f = lambda a: np.trace(a, offset=offset, axis1=axis1, axis2=axis2)   # noqa: E731
    check_modes(f, x, ("trace", shape, offset))


def test_trace_analytic_and_method():
    x = _point((3, 3), ("trace-a",))
    close(fad.grad(lambda a: a.trace())(x), np.eye(3))
    close(fad.grad(lambda a: fad.trace(a @ a))(x), 2 * x.T)


# ---------------------------------------------------------------- diff

@pytest.mark.parametrize("shape,n,axis,pre,app", [
    ((6,), 1, -1, None, None), ((6,), 2, 0, None, None), ((3, 4), 1, 0, None, None),
    ((3, 4), 3, 1, None, None), ((3, 4), 1, -1, 0.5, None), ((3, 4), 2, 0, None, 2.0),
    ((3, 4), 1, 1, np.ones((3, 2)), -1.0), ((6,), 0, -1, None, None), ((4,), 6, 0, None, None),
    ((2, 3, 2), 1, 1, None, None)])
def test_diff(shape, n, axis, pre, app):
    x = _point(shape, ("diff", shape, n, axis))
    kw = {k: v for k, v in (("prepend", pre), ("append", app)) if v is not None}
    check_modes(lambda a: np.diff(a, n=n, axis=axis, **kw), x, ("diff", shape, n))


def test_diff_traced_prepend_and_constant_array():
    x = np.array([1.0, 4.0, 9.0])
    def f(a):
        return np.sum(np.diff(np.array([0.0, 1.0, 3.0]), prepend=a[0], append=a[2]) ** 2)
    close(fad.grad(f)(x), fd_grad(f, x), rtol=1e-6, atol=1e-7)
    f2 = lambda a: np.sum(np.diff(a, prepend=a[1:2] * 2.0) ** 2)   # noqa: E731
    close(fad.grad(f2)(x), fd_grad(f2, x), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- average

def test_average():
    x = _point((12,), ("avg",))
    cases = [
        lambda z: np.average(z[:6].reshape(2, 3)),
        lambda z: np.average(z[:6].reshape(2, 3), axis=1, keepdims=True),
        lambda z: np.average(z[:6].reshape(2, 3), axis=0, weights=np.array([1.0, 3.0])),
        lambda z: np.average(z[:6].reshape(2, 3), weights=np.arange(1.0, 7.0).reshape(2, 3)),
        # traced weights, 1-D along an axis and full
        lambda z: np.average(z[:6].reshape(2, 3), axis=1, weights=z[6:9] ** 2 + 1.0),
        lambda z: np.average(z[:6].reshape(2, 3), axis=(0, 1),
                             weights=z[6:12].reshape(2, 3) ** 2 + 0.5),
        lambda z: np.average(np.array([1.0, 2.0, 4.0]), weights=z[:3] ** 2 + 1.0),
        lambda z: np.average(z[:6].reshape(2, 3), axis=-1, weights=np.array([1.0, 2.0, 3.0]),
                             returned=True)[0],
    ]
    for i, f in enumerate(cases):
        check_modes(f, x, ("avg", i), sparse=i < 4)


def test_average_returned():
    x = _point((2, 3), ("avg-r",))
    avg, wsum = np.average(fad.jvp(lambda a: a, x, x)[0], axis=1,
                           weights=np.array([1.0, 2.0, 3.0]), returned=True)
    close(wsum, [6.0, 6.0])
    v, ws = fad.value_and_grad(lambda a: np.average(a, axis=0, returned=True)[0].sum())(x)
    close(ws, np.full((2, 3), 0.5))


# ---------------------------------------------------------------- sum, mean

@pytest.mark.parametrize("fn", [np.sum, np.mean])
@pytest.mark.parametrize("axis,keepdims", [((0, 2), False), ((2, 0), True), ((-1,), True),
                                           (None, True), ((), False)])
def test_sum_mean_tuple_axes(fn, axis, keepdims):
    x = _point((2, 3, 4), ("summean", axis))
    check_modes(lambda a: fn(a, axis=axis, keepdims=keepdims), x, ("sm", axis))


# ---------------------------------------------------------------- NaN-ignoring

NANS = np.array([[1.0, np.nan, 2.0], [-0.5, 1.5, np.nan], [np.nan, 0.7, 1.2], [2.0, 1.0, -1.0]])


@pytest.mark.parametrize("name,kw", [
    ("nansum", {}), ("nansum", {"axis": 0}), ("nansum", {"axis": (0, 1), "keepdims": True}),
    ("nanprod", {}), ("nanprod", {"axis": -1}), ("nanmean", {}), ("nanmean", {"axis": 1}),
    ("nanmean", {"axis": 0, "keepdims": True}), ("nancumsum", {}), ("nancumsum", {"axis": 0}),
    ("nancumprod", {"axis": 1}), ("nanmax", {}), ("nanmax", {"axis": 0}),
    ("nanmin", {"axis": (0, 1), "keepdims": True}), ("nanmin", {"axis": 1}),
    ("nanvar", {}), ("nanvar", {"axis": 0, "ddof": 1}), ("nanstd", {"axis": 1, "keepdims": True}),
    ("nanstd", {"axis": (1, 0), "ddof": 1})])
def test_nan_ignoring(name, kw):
    """NaNs (here from a constant factor) are skipped and get derivative 0,
    as finite differences of NumPy's own function say."""
    fn = getattr(np, name)
    x = _point(NANS.shape, (name, str(kw)))
    J = check_modes(lambda a: fn(a * NANS, **kw), x, (name, str(kw)))
    assert (J.reshape(-1, x.size)[:, np.isnan(NANS).reshape(-1)] == 0).all()


@pytest.mark.parametrize("kw", [{}, {"nan": 2.0, "posinf": 5.0}, {"neginf": -3.0}])
def test_nan_to_num(kw):
    y = np.array([0.0, np.nan, np.inf, -np.inf, 1.0])
    f = lambda a: np.sin(np.nan_to_num(a + y, **kw)) * a     # noqa: E731
    x = _point((5,), ("n2n", str(kw)))
    check_modes(f, x, ("n2n", str(kw)))
    close(fad.vjp(lambda a: np.nan_to_num(a + y, **kw), x)[0], np.nan_to_num(x + y, **kw))
    t = fad.record(lambda a: np.sum(np.nan_to_num(a)), np.array([1.0, np.inf]))
    close(t.gradient(np.array([2.0, np.inf])), [1.0, 0.0])
    with pytest.raises(fad.BranchChangedError):
        t.gradient(np.array([2.0, 3.0]))


def test_nan_mask_is_rechecked_on_replay():
    t = fad.record(lambda a: np.nansum(a ** 2), np.array([1.0, np.nan, 2.0]))
    close(t.gradient(np.array([3.0, np.nan, 1.0])), [6.0, 0.0, 2.0])
    with pytest.raises(fad.BranchChangedError):
        t.gradient(np.array([np.nan, 1.0, 2.0]))
    v, g = fad.value_and_grad(lambda a: np.nanmean(a, axis=0))(np.array([np.nan, np.nan]))
    assert np.isnan(v) and (g == 0).all()         # an all-NaN slice: NaN, as NumPy
    x = np.array([[np.nan, 1.0], [np.nan, 2.0]])
    for fn in (np.nanmax, np.nanmin, np.nanvar):
        J = fad.jacobian(lambda a: fn(a, axis=0))(x)
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            expected = fn(x, axis=0)
        close(fad.vjp(lambda a: fn(a, axis=0), x)[0], expected)
        assert (J[0] == 0).all() and np.isfinite(J[1]).all()


# ---------------------------------------------------------------- plain values, errors

def test_plain_inputs_are_numpy():
    x = _point((3, 4), ("plain",))
    for f, ref in ((fad.prod, np.prod), (fad.cumsum, np.cumsum), (fad.cumprod, np.cumprod),
                   (fad.var, np.var), (fad.std, np.std), (fad.ptp, np.ptp),
                   (fad.trace, np.trace), (fad.diff, np.diff), (fad.average, np.average),
                   (fad.amax, np.max), (fad.amin, np.min),
                   (R.nansum, np.nansum), (R.nanmean, np.nanmean), (R.nanprod, np.nanprod),
                   (R.nancumsum, np.nancumsum), (R.nancumprod, np.nancumprod),
                   (R.nanmax, np.nanmax), (R.nanmin, np.nanmin), (R.nanvar, np.nanvar),
                   (R.nanstd, np.nanstd), (R.nan_to_num, np.nan_to_num)):
        close(f(x), ref(x))
    close(fad.prod([1.0, 2.0, 3.0]), 6.0)
    close(fad.cumsum(x, axis=1), np.cumsum(x, axis=1))


def test_lists_of_vars():
    x = np.array([1.0, 2.0, 3.0])
    close(fad.grad(lambda a: fad.prod([a[0], a[1], a[2]]))(x), [6.0, 3.0, 2.0])
    close(fad.grad(lambda a: fad.var([a[0], a[1], a[2]]))(x), 2 * (x - 2.0) / 3)
    close(fad.grad(lambda a: fad.ptp([a[0], a[1], a[2]]))(x), [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("call,exc,words", [
    (lambda a: np.cumsum(a, axis=2), ValueError, ["cumsum", "axis 2"]),
    (lambda a: np.cumprod(a, axis=1.5), TypeError, ["cumprod", "axis"]),
    (lambda a: np.prod(a, axis=(0, 3)), ValueError, ["axis 3"]),
    (lambda a: np.prod(a, dtype=np.int32), TypeError, ["prod", "dtype"]),
    (lambda a: np.cumsum(a, out=np.zeros(6)), TypeError, ["cumsum", "out="]),
    (lambda a: np.var(a, out=np.zeros(2)), TypeError, ["var", "out="]),
    (lambda a: np.max(a, out=np.zeros(2)), TypeError, ["max", "out="]),
    (lambda a: np.prod(a, initial=2.0), TypeError, ["np.prod", "initial"]),
    (lambda a: np.max(a, axis=(0, 5)), ValueError, ["axis 5"]),
    (lambda a: np.diff(a, n=-1), ValueError, ["diff", "non-negative"]),
    (lambda a: np.diff(a, n=1.5), TypeError, ["diff", "integer"]),
    (lambda a: np.diff(a, axis=3), ValueError, ["diff", "axis 3"]),
    (lambda a: np.diff(a, prepend=np.ones((5, 5))), ValueError, ["diff", "prepend"]),
    (lambda a: np.trace(a[0]), ValueError, ["trace", "2 dimensions"]),
    (lambda a: np.trace(a, axis1=1, axis2=1), ValueError, ["trace"]),
    (lambda a: np.average(a, axis=1, weights=np.ones(2)), ValueError, ["average", "length"]),
    (lambda a: np.average(a, weights=np.ones(3)), TypeError, ["average", "axis"]),
    (lambda a: np.average(a, axis=0, weights=np.array([1.0, -1.0])), ZeroDivisionError,
     ["average", "zero"]),
])
def test_errors(call, exc, words):
    x = _point((2, 3), ("err",))
    with pytest.raises(exc) as info:
        fad.grad(lambda a: fad.sum(call(a)))(x)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    # fastad keeps working
    others = [np.prod(np.delete(x, j)) for j in range(x.size)]
    close(fad.grad(lambda a: np.prod(a))(x), np.reshape(others, x.shape))


def test_tape_with_scan_blocks_pickles_and_replays():
    import pickle

    def f(a):
        return np.sum(np.cumprod(a) * np.cumsum(a)) + np.prod(a[:3]) + np.var(a) + np.ptp(a)

    x = np.array([0.5, -1.2, 0.0, 2.0, 1.1])
    t = pickle.loads(pickle.dumps(fad.record(f, x)))
    x1 = x + np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    fd_close(t(x1), f(x1), rtol=1e-12, atol=1e-12)
    fd_close(t.gradient(x1), fd_grad(f, x1))
    fd_close(t.hessian(x1), fd_hessian(f, x1), rtol=1e-5, atol=1e-5)
    text = str(t)
    assert "cumprod" in text and "cumsum" in text and "prod" in text
    assert "cumprod" in t.to_dot()


# np.gradient: linear in f, so its Jacobian is the central-difference matrix;
# compared with finite differences of NumPy's own np.gradient
_COORDS = np.cumsum(np.random.default_rng(3).uniform(0.1, 1.0, 7))


@pytest.mark.parametrize("shape,args,kw", [
    ((7,), (), {}), ((7,), (0.3,), {}), ((7,), (_COORDS,), {}),
    ((7,), (), {"edge_order": 2}), ((7,), (_COORDS,), {"edge_order": 2}),
    ((4, 5), (), {}), ((4, 5), (0.5, 2.0), {}), ((4, 5), (), {"axis": 1}),
    ((4, 5), (), {"axis": -2, "edge_order": 2}), ((3, 4, 3), (), {"axis": (0, 2)}),
    ((2,), (), {}),
])
def test_gradient_every_mode(shape, args, kw):
    rng = rng_for("gradient", shape, kw)
    x0 = rng.standard_normal(shape).ravel()

    def f(x):
        r = np.gradient(x.reshape(shape), *args, **kw)
        return np.stack(r) if isinstance(r, (list, tuple)) else r
    J = fd_jacobian(f, x0)
    fd_close(fad.jacfwd(f)(x0), J)
    fd_close(fad.jacrev(f)(x0), J)
    w = rng.standard_normal(np.shape(f(x0)))
    tape = fad.record(lambda x: np.sum(f(x) * w), x0)
    fd_close(tape.gradient(x0 + 0.1), np.tensordot(w, J, w.ndim))
    pattern = fad.jacobian_sparsity(f)(x0).toarray()
    assert not (np.abs(J.reshape(-1, x0.size)) > 1e-6)[~pattern].any()


def test_gradient_errors_and_container():
    x = np.arange(4.0)

    def f(x):
        r = np.gradient(np.outer(x, x))
        assert isinstance(r, type(np.gradient(np.zeros((3, 3)))))
        return fad.sum(r[0]) + fad.sum(r[1])
    fd_close(fad.grad(f)(x), fd_grad(lambda x: sum(np.sum(g) for g in np.gradient(np.outer(x, x))), x))
    with pytest.raises(ValueError, match="edge_order must be 1 or 2"):
        fad.grad(lambda x: fad.sum(np.gradient(x, edge_order=3)))(x)
    with pytest.raises(ValueError, match="needs at least 3"):
        fad.grad(lambda x: fad.sum(np.gradient(x[:2], edge_order=2)))(x)
    with pytest.raises(ValueError, match="must be 1-D of length 4"):
        fad.grad(lambda x: fad.sum(np.gradient(x, np.arange(3.0))))(x)
    with pytest.raises(TypeError, match="spacing must be a constant"):
        fad.grad(lambda x: fad.sum(np.gradient(x, x[0])))(x)
    # sum of (x1 - x0, (x2 - x0) / 2, (x3 - x1) / 2, x3 - x2)
    close(fad.grad(lambda x: fad.sum(np.gradient(x)))(x), [-1.5, 0.5, -0.5, 1.5])
