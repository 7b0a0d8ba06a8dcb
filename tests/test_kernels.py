"""The small C kernels the array blocks use (fastad._kernels), against NumPy."""
import numpy as np
import pytest

from fastad._kernels import OP_NAMES, add_rows, rows_times
from fastad._elementwise import times_partial


def test_rows_times_matches_numpy_and_keeps_strong_zeros():
    rng = np.random.default_rng(0)
    d = rng.normal(size=7)
    t = rng.normal(size=(7, 3))
    np.testing.assert_array_equal(rows_times(d, t), d[:, None] * t)
    out = np.ones((7, 3))
    rows_times(d, t, out, True)
    np.testing.assert_array_equal(out, 1.0 + d[:, None] * t)
    d[2], d[4] = np.inf, np.nan
    t[2, 1] = t[4, 0] = 0.0
    r = rows_times(d, t)
    assert r[2, 1] == 0.0 and r[4, 0] == 0.0          # zero lanes stay exact zeros
    assert np.isinf(r[2, 0]) and np.isnan(r[4, 1])
    with pytest.raises(ValueError, match="lanes"):
        rows_times(np.ones(4), np.ones(7))
    with pytest.raises(ValueError, match="contiguous"):
        rows_times(np.ones(3), np.ones((3, 2)), np.ones((2, 3)).T)


def test_add_rows_adds_repeated_rows_up():
    dst = np.zeros((5, 2))
    add_rows(dst, np.array([3, 1, 3]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    np.testing.assert_array_equal(dst, [[0, 0], [3, 4], [0, 0], [6, 8], [0, 0]])
    with pytest.raises(IndexError, match="row 5"):
        add_rows(dst, np.array([5]), np.ones((1, 2)))
    np.testing.assert_array_equal(dst[3], [6, 8])       # nothing added on error


def test_times_partial_is_tanh_pullback_in_one_pass():
    rng = np.random.default_rng(1)
    z = np.tanh(rng.normal(size=(4, 5)))
    g = rng.normal(size=(4, 5, 2))
    tanh = OP_NAMES.index("tanh")
    # tanh's partial read from its output z: 1 - z**2
    np.testing.assert_allclose(times_partial(tanh, 0, None, None, z, g, z.shape),
                               g * (1 - z * z)[..., None], rtol=1e-15)
    g1 = g[..., :1].copy()
    want = g1 * (1 - z * z)[..., None]
    assert times_partial(tanh, 0, None, None, z, g1, z.shape, g1) is g1     # in place
    np.testing.assert_allclose(g1, want, rtol=1e-15)
    with pytest.raises(ValueError, match="lanes"):
        times_partial(tanh, 0, None, None, np.ones(3), np.ones(7), (3,))


def test_times_partial_keeps_strong_zeros():
    # a zero lane stays an exact zero where the partial is inf (sqrt at 0)
    sqrt = OP_NAMES.index("sqrt")
    v = np.array([0.0, 4.0])
    g = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = times_partial(sqrt, 0, None, None, v, g, v.shape)
    assert out[0, 0] == 0.0 and out[0, 1] == np.inf and out[1, 0] == 0.0 and out[1, 1] == 0.125   # 0.5 / v


def test_empty_blocks_in_every_mode():
    # an element-wise op on an empty slice (a loop over zero items) is harmless
    import fastad as fad
    x = np.array([0.3, -0.7, 1.1])

    def g(x):
        e = x[:0]
        junk = fad.sin(e) * e          # noqa: F841 - recorded, never used
        return x[0] * x[1]

    def f(x):
        e = x[:0]
        return fad.sum(x * x) + fad.sum(fad.sin(e) * e) + fad.sum(fad.tanh(e)) \
            + fad.sum(fad.exp(e) * 2)
    np.testing.assert_allclose(fad.grad(g)(x), [-0.7, 0.3, 0.0])
    np.testing.assert_allclose(fad.jacrev(g)(x), [-0.7, 0.3, 0.0])
    np.testing.assert_allclose(fad.hessian(g)(x), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(fad.record(g, x).gradient(x + 1), [0.3, 1.3, 0.0])
    np.testing.assert_allclose(fad.jvp(f, x, np.ones(3))[1], 2 * x.sum())
    np.testing.assert_allclose(fad.hessian(f)(x), 2 * np.eye(3))
    np.testing.assert_allclose(fad.grad(f)(x), 2 * x)


def test_zero_partials_are_exact_zeros_in_both_modes():
    # sqrt(0 * x) is the constant 0: its derivative is 0, not 0 * inf = NaN,
    # whether written with scalars, same-shape or broadcasting arrays
    import fastad as fad
    c = np.array([0.0, 1.0])
    x = np.array([2.0, 3.0])
    want = [0.0, 0.5 / np.sqrt(3.0)]
    fa = lambda x: fad.sum(fad.sqrt(x * c))                                        # noqa: E731
    fs = lambda x: fad.sqrt(x[0] * 0.0) + fad.sqrt(x[1] * 1.0)                     # noqa: E731
    for f in (fa, fs):
        np.testing.assert_allclose(fad.grad(f)(x), want, rtol=1e-14)
        np.testing.assert_allclose(fad.jacfwd(f)(x), want, rtol=1e-14)
        np.testing.assert_allclose(fad.record(f, x).gradient(x), want, rtol=1e-14)
    fb = lambda x: fad.sum(fad.sqrt(fad.reshape(x, (2, 1)) * c.reshape(1, 2)))    # noqa: E731
    wb = [0.5 / np.sqrt(2.0), 0.5 / np.sqrt(3.0)]
    np.testing.assert_allclose(fad.grad(fb)(x), wb, rtol=1e-14)
    np.testing.assert_allclose(fad.jacfwd(fb)(x), wb, rtol=1e-14)


def test_combine_rows_is_two_partials_times_lanes_with_strong_zeros():
    from fastad._kernels import combine_rows
    rng = np.random.default_rng(3)
    d = rng.normal(size=5)
    t0, t1 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    out = np.empty((5, 3))
    np.testing.assert_allclose(combine_rows(d, t0, -2.0, t1, out), d[:, None] * t0 - 2.0 * t1,
                               rtol=1e-15)
    np.testing.assert_allclose(combine_rows(0.5, t0, None, None, out), 0.5 * t0, rtol=1e-15)
    # a zero partial against inf lanes, and zero lanes against an inf partial: exact zeros
    got = combine_rows(np.array([0.0, np.inf]), np.array([[np.inf, 1.0], [0.0, 2.0]]),
                       None, None, np.empty((2, 2)))
    np.testing.assert_array_equal(got, [[0.0, 0.0], [0.0, np.inf]])
    assert combine_rows(1.0, np.zeros((0, 3)), None, None, np.empty((0, 3))).shape == (0, 3)


def test_combine_rows_checks_its_shapes():
    from fastad._kernels import combine_rows
    with pytest.raises(ValueError, match="sizes differ"):
        combine_rows(1.0, np.ones((4, 3)), None, None, np.empty((5, 3)))
    with pytest.raises(ValueError, match="one partial per row"):
        combine_rows(np.ones(4), np.ones((5, 3)), None, None, np.empty((5, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        combine_rows(1.0, np.ones((3, 5)), None, None, np.empty((5, 3)).T)


def test_combine_gather_reads_the_combination_at_the_nonzeros():
    from fastad._kernels import combine_gather, combine_rows
    rng = np.random.default_rng(4)
    d = rng.normal(size=4)
    t0, t1 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    indptr = np.array([0, 2, 2, 5, 6])
    lanes = np.array([2, 0, 1, 0, 2, 1])
    full = combine_rows(d, t0, 1.5, t1, np.empty((4, 3)))
    rows = np.repeat(np.arange(4), np.diff(indptr))
    np.testing.assert_allclose(combine_gather(d, t0, 1.5, t1, indptr, lanes),
                               full[rows, lanes], rtol=1e-15)
    got = combine_gather(np.array([0.0, np.inf]), np.array([[np.inf], [0.0]]), None, None,
                         np.array([0, 1, 2]), np.array([0, 0]))
    np.testing.assert_array_equal(got, [0.0, 0.0])          # strong zeros both ways


def test_fixed_gather_adds_the_changing_terms_to_the_kept_base():
    from fastad._kernels import FixedGather
    base = np.arange(8.0)
    # term 0: rows 0..3 at positions 1, 3, 4, 7 with g; term 1: rows 0, 2 at 0, 7
    fg = FixedGather(base, [([1, 3, 4, 7], [0, 1, 2, 3], [2.0, 1.0, -1.0, 0.5]),
                            ([0, 7], [0, 2], None)], 4)
    d = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.array([10.0, 20.0, 30.0, 40.0])
    want = base.copy()
    want[[1, 3, 4, 7]] += 3.0 * d * e * [2.0, 1.0, -1.0, 0.5]
    want[[0, 7]] += 0.5 * d[[0, 2]]
    np.testing.assert_allclose(fg([[3.0, d, e], [0.5, d]]), want, rtol=1e-15)
    np.testing.assert_array_equal(base, np.arange(8.0))          # the base is kept
    # a zero factor passes nothing, even against inf or NaN (strong zeros)
    got = fg([[1.0, np.array([0.0, np.inf, 1.0, 1.0]), np.array([np.nan, 0.0, 1.0, 1.0])],
              [0.0, np.full(4, np.inf)]])
    np.testing.assert_array_equal(got, base + [0, 0, 0, 0, -1.0, 0, 0, 0.5])
    # the identity rows need no row array; positions after the first term's
    # last one still get the later terms
    fg = FixedGather(np.zeros(3), [([0, 1], [0, 1], None), ([2], [1], None)], 2)
    np.testing.assert_array_equal(fg([[np.array([1.0, 2.0])], [np.array([5.0, 7.0])]]),
                                  [1.0, 2.0, 7.0])


def test_fixed_gather_checks_its_arrays_once_and_the_partials_every_call():
    from fastad._kernels import FixedGather
    with pytest.raises(IndexError, match="ascend within 0..3"):
        FixedGather(np.zeros(4), [([0, 4], [0, 1], None)], 2)
    with pytest.raises(IndexError, match="ascend"):
        FixedGather(np.zeros(4), [([2, 1], [0, 1], None)], 2)
    with pytest.raises(IndexError, match="row is out of range for 2 rows"):
        FixedGather(np.zeros(4), [([0, 1], [0, 2], None)], 2)
    with pytest.raises(ValueError, match="one entry per nonzero"):
        FixedGather(np.zeros(4), [([0, 1], [0], None)], 2)
    fg = FixedGather(np.zeros(4), [([0, 1], [0, 1], None)], 2)
    with pytest.raises(ValueError, match="1 terms, 2 given"):
        fg([[1.0], [1.0]])
    with pytest.raises(ValueError, match="a partial has 3 rows, not 2"):
        fg([[np.ones(3)]])
    np.testing.assert_array_equal(fg([[np.array([2.0, 3.0])]]), [2.0, 3.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at most 8 partials"):
        fg([[1.0] * 9])


def test_fixed_gather_multiplies_in_the_order_given_like_a_sweep():
    """g first, then the partials innermost first: 1e-200 * 1e-200 underflows
    to 0 before the inf, as in the sweep, so the term passes nothing."""
    from fastad._kernels import FixedGather
    fg = FixedGather(np.ones(1), [([0], [0], [1.0])], 1)
    np.testing.assert_array_equal(fg([[1e-200, 1e-200, np.inf]]), [1.0])
    np.testing.assert_array_equal(fg([[np.inf, 1e-200, 1e-200]]), [np.inf])


def test_combine_gather_checks_lanes_and_shapes():
    from fastad._kernels import combine_gather
    t = np.ones((2, 3))
    with pytest.raises(ValueError, match="lane 3 out of range"):
        combine_gather(1.0, t, None, None, np.array([0, 1, 2]), np.array([0, 3]))
    with pytest.raises(ValueError, match="one lane per nonzero"):
        combine_gather(1.0, t, None, None, np.array([0, 1, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="rows as indptr"):
        combine_gather(1.0, np.ones((3, 3)), None, None, np.array([0, 1, 2]), np.array([0, 1]))


def _second_rows_reference(d, a, tx, b, ty, g, gd):
    """The NumPy steps Elementwise.reverse2 takes, with its strong zeros."""
    def sz(p, q):
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where((np.asarray(p) == 0) | (np.asarray(q) == 0), 0.0, p * q)
    n, k = gd.shape
    d, a, b = (np.broadcast_to(v, (n,)) if v is not None else None for v in (d, a, b))
    adj = sz(d, g)
    cx = sz(a[:, None], tx) if a is not None and tx is not None else 0.0
    cy = sz(b[:, None], ty) if b is not None and ty is not None else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        extra = np.where(g[:, None] != 0, g[:, None] * (cx + cy), 0.0)
    return adj, sz(d[:, None], gd) + extra


@pytest.mark.parametrize("k", [1, 3])
def test_second_rows_is_reverse2_in_one_pass(k):
    from fastad._kernels import second_rows
    rng = np.random.default_rng(7)
    n = 9
    d, a, b = rng.normal(size=n), rng.normal(size=n), 1.5
    g, gd = rng.normal(size=n), rng.normal(size=(n, k))
    tx, ty = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    d[0], g[1], a[2], tx[3, 0], gd[4, 0] = np.inf, 0.0, np.nan, 0.0, 0.0   # strong zeros
    g[2] = 0.0
    d[5] = 0.0
    for args in ((d, a, tx, b, ty), (d, a, tx, None, None), (2.0, None, None, None, None),
                 (d, 0.5, tx, b, None)):
        adj0, adt0 = rng.normal(size=(n, 1)), rng.normal(size=(n, k))
        adj, adt = adj0.copy(), adt0.copy()
        second_rows(*args, g, gd, adj, adt)
        want_adj, want_adt = _second_rows_reference(*args, g, gd)
        np.testing.assert_array_equal(adj, adj0 + want_adj[:, None])
        np.testing.assert_array_equal(adt, adt0 + want_adt)


def test_second_rows_checks_its_arrays():
    from fastad._kernels import second_rows
    adj, adt = np.zeros((4, 1)), np.zeros((4, 2))
    with pytest.raises(ValueError, match="C-contiguous float64"):
        second_rows(1.0, None, None, None, None, np.ones(4), np.ones((4, 2)), adj, adt.T)
    with pytest.raises(ValueError, match="d has 3 rows, not 4"):
        second_rows(np.ones(3), None, None, None, None, np.ones(4), np.ones((4, 2)), adj, adt)
    with pytest.raises(ValueError, match="gd has 6 rows, not 8"):
        second_rows(1.0, None, None, None, None, np.ones(4), np.ones((3, 2)), adj, adt)
    with pytest.raises(ValueError, match="must be \\(n, k\\)"):
        second_rows(1.0, None, None, None, None, np.ones(4), np.ones((4, 2)), adj, np.zeros(7))


def _lanes_reference(d, t, out, accumulate):
    """out (+)= d * t over the lanes with strong zeros, in NumPy."""
    q = d[:, None] * t
    q[(d[:, None] == 0.0) | (t == 0.0)] = 0.0
    return out + q if accumulate else q


@pytest.mark.parametrize("k", [1, 3])
def test_times_partial_every_op_every_path(k):
    # every op, operand, accumulate flag and broadcast stride, over more
    # elements than a kernel working in chunks would take at once (256 or
    # so), against the op's partials from fad_map (a separate loop) times the
    # lanes in NumPy; the points include 0 and values outside some domains
    # (inf and NaN partials)
    from fastad._elementwise import op_map, partials
    from fastad._kernels import OP_FLAGS, FLAG
    rng = np.random.default_rng(2)
    n = 601
    x = rng.uniform(-1.5, 1.5, n)
    x[::7] = 0.0
    y = rng.uniform(-1.5, 1.5, n)
    y[::11] = 0.0
    t = rng.normal(size=(n, k))
    t[::5] = 0.0
    for op, name in enumerate(OP_NAMES):
        if name in ("input", "block") or OP_FLAGS[op] & FLAG["HAS_C"]:
            continue          # (an array block passes constants as operands)
        binary = OP_FLAGS[op] & FLAG["BINARY"]
        for xs, ys in ((x, y), (x, y[3:4]), (x[2:3], y)) if binary else ((x, 0.5),):
            with np.errstate(all="ignore"):
                v = op_map(op, xs, ys)[0]
                shape = v.shape
                ref = partials(op, xs, ys, v, shape)
            for which in (0, 1) if binary else (0,):
                d = ref[which].reshape(-1)
                tt = t[:d.size]
                for accumulate in (False, True):
                    start = rng.normal(size=tt.shape)
                    out = start.copy()
                    with np.errstate(all="ignore"):
                        got = times_partial(op, which, xs, ys, v, tt, shape, out, accumulate)
                        want = _lanes_reference(d, tt, start, accumulate)
                    assert got is out
                    np.testing.assert_array_equal(got, want, err_msg=f"{name} which={which} "
                                                  f"acc={accumulate} k={k}")
                # in place over the lanes (out is t)
                tin = tt.copy()
                with np.errstate(all="ignore"):
                    times_partial(op, which, xs, ys, v, tin, shape, tin)
                    np.testing.assert_array_equal(tin, _lanes_reference(d, tt, 0.0, False),
                                                  err_msg=f"{name} in place")


def test_array_kernels_refuse_the_ops_that_take_a_constant():
    # the array kernels emit no loops for them (compile time); asking for one
    # is an error naming the op, not a silent no-op, and the kernels stay usable
    from fastad._kernels import OP_FLAGS, FLAG
    from fastad._second import second_step
    with_c = [op for op, name in enumerate(OP_NAMES) if OP_FLAGS[op] & FLAG["HAS_C"]]
    assert OP_NAMES.index("mul_c") in with_c and OP_NAMES.index("mul") not in with_c
    a = np.ones(4)
    for op in with_c:
        with pytest.raises(ValueError, match=f"times_partial: {OP_NAMES[op]} takes a constant"):
            times_partial(op, 0, a, None, a, a, (4,))
        with pytest.raises(ValueError, match=f"second_step: {OP_NAMES[op]} takes a constant"):
            second_step(op, 4, 1, a, None, a, a, None, a, None, np.zeros(4), np.zeros(4),
                        None, None)
    mul = OP_NAMES.index("mul")
    np.testing.assert_array_equal(times_partial(mul, 0, a, 3.0 * a, 3.0 * a, a, (4,)), 3.0 * a)
    # nor for an operand the op does not have (a one-operand op's loops are x's alone)
    for op, which in ((OP_NAMES.index("tanh"), 1), (mul, 2), (mul, -1)):
        with pytest.raises(ValueError, match=f"times_partial: {OP_NAMES[op]} has no operand {which}"):
            times_partial(op, which, a, a, a, a, (4,))
    np.testing.assert_array_equal(times_partial(mul, 1, 2.0 * a, a, 2.0 * a, a, (4,)), 2.0 * a)


def test_all_finite_small_and_large_arrays():
    from fastad._kernels import all_finite
    for n in (0, 1, 7, 4096, 4097, 100_000):     # the C loop, and NumPy's sum above 4096
        a = np.linspace(-1e300, 1e300, n)
        assert all_finite(a)
        if n:
            for bad in (np.inf, -np.inf, np.nan):
                b = a.copy()
                b[n // 2] = bad
                assert not all_finite(b)
    assert all_finite(np.array([5e-324, -0.0]))            # subnormals and -0 are finite
    assert not all_finite(np.array([np.inf]).astype(">f8"))  # byte-swapped: NumPy's path
    assert not all_finite(np.full((3, 4), np.nan)[:, ::2])    # strided: NumPy's path


def test_all_finite_every_position_layout_and_size_against_numpy():
    # the C loop runs four lanes and a tail, and releases the GIL from
    # 65536 elements: a bad value anywhere, in either order, is seen
    from fastad._kernels import all_finite
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 6, 9, 4095, 65535, 65536, 65537, 157_003):
        a = rng.standard_normal(n) * 1e307
        a[0] = np.finfo(np.float64).max                  # the largest exponent that is finite
        assert all_finite(a) == bool(np.isfinite(a).all())
        for pos in {0, 1, 2, 3, n // 2, n - 4, n - 3, n - 2, n - 1} - {p for p in range(-4, 0)}:
            if 0 <= pos < n:
                for bad in (np.inf, -np.inf, np.nan, -np.nan):
                    b = a.copy()
                    b[pos] = bad
                    assert not all_finite(b), (n, pos, bad)
    m = rng.standard_normal((300, 7))
    assert all_finite(m.T) and m.T.flags.f_contiguous       # Fortran order: the C loop too
    m[123, 4] = np.nan
    assert not all_finite(m.T)
    assert not all_finite(np.asfortranarray(m))


def test_rows_view_is_a_slice_reshaped():
    from fastad._kernels import rows_view
    val = np.arange(20.0)
    v = rows_view(val, 3, (2, 4))
    np.testing.assert_array_equal(v, val[3:11].reshape(2, 4))
    v[0, 0] = -1.0                          # a view: writes reach the buffer
    assert val[3] == -1.0
    adj = np.arange(24.0).reshape(12, 2)    # (rows, k): the shape counts the lanes
    np.testing.assert_array_equal(rows_view(adj, 5, (3, 2)), adj[5:8].reshape(3, 2))
    ro = np.arange(6.0)
    ro.flags.writeable = False
    assert not rows_view(ro, 0, (2, 3)).flags.writeable
    assert rows_view(val, 20, (0,)).shape == (0,)
    with pytest.raises(ValueError):         # past the end: as slicing then reshaping
        rows_view(val, 18, (2, 2))
    np.testing.assert_array_equal(rows_view(np.arange(10), 2, (2, 2)), [[2, 3], [4, 5]])


def test_broadcast_view_matches_numpy():
    from fastad._kernels import broadcast_view
    g = np.arange(6.0).reshape(1, 3, 2)
    v = broadcast_view(g, (4, 3, 2))
    np.testing.assert_array_equal(v, np.broadcast_to(g, (4, 3, 2)))
    assert not v.flags.writeable and v.strides[0] == 0
    assert broadcast_view(g, (4, 2, 2)) is None           # not broadcastable: NumPy decides
    assert broadcast_view(g.T, (2, 3, 1)) is None          # not C-contiguous
    assert broadcast_view(g, (3, 2)) is None               # other number of axes
