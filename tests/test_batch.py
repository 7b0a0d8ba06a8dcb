"""Batched replay: Tape methods with batch=True (fastad._batching, fastad._batch).

Every batched result is compared with the single-point method at each
point, bit for bit (the batch runs the same kernels in the same order), and
the Rosenbrock gradients also with the hand-written gradient.  Tapes of
scalar nodes take the compiled, threaded path; tapes with array blocks the
loop; both are covered, with pytrees, branch changes inside the batch,
workers = 1, 2 and 3, and empty batches.
"""
import numpy as np
import pytest

import fastad as fad
from conftest import leaves_of, rng_for, rosen_grad_np, rosen_loop

WORKERS = [1, 2, 3]


def same(a, b):
    """Bit for bit (NaN where NaN), leaf by leaf, the same structure and dtypes."""
    if isinstance(a, tuple) and not isinstance(b, tuple):
        raise AssertionError((type(a), type(b)))
    la, lb = leaves_of(a), leaves_of(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        assert np.array_equal(x, y, equal_nan=True), (x, y)


def stack(results):
    """Single-point results stacked along a new leading axis, leaf by leaf."""
    r0 = results[0]
    if isinstance(r0, dict):
        return {k: stack([r[k] for r in results]) for k in r0}
    if isinstance(r0, (list, tuple)) and not isinstance(r0, np.ndarray):
        return type(r0)(stack([r[i] for r in results]) for i in range(len(r0)))
    return np.stack([np.asarray(r) for r in results])


def point(X, i):
    """Point i of a batch (every leaf's row i)."""
    if isinstance(X, dict):
        return {k: point(v, i) for k, v in X.items()}
    if isinstance(X, (list, tuple)):
        return type(X)(point(v, i) for v in X)
    return X[i:i + 1].reshape(X.shape[1:])     # (a 0-d array, not a NumPy scalar)


def check_all(tape, X, V, Ybar, workers):
    """Every batched method against the single-point one."""
    b = len(leaves_of(X)[0])
    pts = [point(X, i) for i in range(b)]
    kw = dict(batch=True, workers=workers)
    same(tape(X, **kw), stack([tape(p) for p in pts]))
    same(tape.jvp(X, V, **kw), stack([tape.jvp(p, point(V, i)) for i, p in enumerate(pts)]))
    same(tape.vjp(X, Ybar, **kw),
         stack([tape.vjp(p, point(Ybar, i)) for i, p in enumerate(pts)]))
    for mode in ("fwd", "rev", "auto"):
        same(tape.jacobian(X, mode, **kw), stack([tape.jacobian(p, mode) for p in pts]))
    if tape.out_shape == () and tape.out_tree is None:
        vals, grads = tape.value_and_gradient(X, **kw)
        same(vals, np.array([tape(p) for p in pts]))
        same(grads, stack([tape.gradient(p) for p in pts]))
        same(tape.gradient(X, **kw), grads)
        same(tape.hvp(X, V, **kw), stack([tape.hvp(p, point(V, i)) for i, p in enumerate(pts)]))


# ---------------------------------------------------------------- tapes

def vec_out(x):
    return fad.stack([x[0] * x[1], fad.sin(x[1]) + x[2], x[0] / x[2], fad.exp(x[0] - x[1])])


def blocks_f(x):
    W = np.arange(12.0).reshape(4, 3) / 10.0
    return fad.sum(fad.tanh(W @ x) ** 2) + x[0] * x[2]


def blocks_vec(x):
    W = np.arange(12.0).reshape(4, 3) / 10.0
    return fad.tanh(W @ x) * x[1]


@pytest.mark.parametrize("workers", WORKERS)
def test_rosenbrock_all_methods(workers):
    rng = rng_for("rosen", workers)
    tape = fad.record(rosen_loop, rng.uniform(0.5, 1.5, 6))
    X = rng.uniform(-1.5, 1.5, (9, 6))
    V = rng.normal(size=(9, 6))
    check_all(tape, X, V, rng.normal(size=9), workers)
    # k directions per point
    Vk = rng.normal(size=(9, 3, 6))
    same(tape.hvp(X, Vk, batch=True, workers=workers),
         stack([tape.hvp(x, v) for x, v in zip(X, Vk)]))
    same(tape.jvp(X, Vk, batch=True, workers=workers),
         stack([tape.jvp(x, v) for x, v in zip(X, Vk)]))


def test_gradient_against_the_formula():
    rng = rng_for("formula")
    tape = fad.record(rosen_loop, rng.uniform(0.5, 1.5, 40))
    X = rng.uniform(-1.5, 1.5, (700, 40))     # large enough for two threads
    G = tape.gradient(X, batch=True, workers=2)
    assert G.shape == (700, 40)
    np.testing.assert_allclose(G, [rosen_grad_np(x) for x in X], rtol=1e-12, atol=1e-9)
    vals, G2 = tape.value_and_gradient(X, batch=True, workers=2)
    same(G2, G)
    np.testing.assert_allclose(
        vals, [np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2) for x in X],
        rtol=1e-13)


@pytest.mark.parametrize("method", ["value", "gradient", "jvp", "vjp", "hvp", "jacobian"])
def test_threads_change_nothing(method):
    """A long batch on 1, 2 and 3 threads: the same bits."""
    rng = rng_for("threads", method)
    tape = fad.record(rosen_loop, rng.uniform(0.5, 1.5, 30))
    X = rng.uniform(-1.5, 1.5, (500, 30))
    V = rng.normal(size=(500, 2, 30))
    call = {"value": lambda w: tape(X, batch=True, workers=w),
            "gradient": lambda w: tape.gradient(X, batch=True, workers=w),
            "jvp": lambda w: tape.jvp(X, V, batch=True, workers=w),
            "vjp": lambda w: tape.vjp(X, V[:, :, 0], batch=True, workers=w),
            "hvp": lambda w: tape.hvp(X, V, batch=True, workers=w),
            "jacobian": lambda w: tape.jacobian(X, batch=True, workers=w)}[method]
    ref = call(1)
    for w in (2, 3, None):
        same(call(w), ref)
    if method == "gradient":
        same(ref, stack([tape.gradient(x) for x in X]))


@pytest.mark.parametrize("workers", [1, 2])
def test_vector_output(workers):
    rng = rng_for("vec", workers)
    tape = fad.record(vec_out, rng.uniform(0.5, 1.5, 3))
    X = rng.uniform(0.5, 1.5, (8, 3))
    check_all(tape, X, rng.normal(size=(8, 3)), rng.normal(size=(8, 4)), workers)
    same(tape.vjp(X, rng.normal(size=(8, 5, 4)), batch=True).shape, (8, 5, 3))
    J = tape.jacobian(X, batch=True, workers=workers)
    assert J.shape == (8, 4, 3)


def test_tape_recorded_at_a_float():
    tape = fad.record(lambda x: fad.sin(x) * x ** 2, 0.3)
    X = np.linspace(-2, 2, 11)
    g = tape.gradient(X, batch=True)
    assert g.shape == (11,)
    same(g, np.array([tape.gradient(float(x)) for x in X]))
    np.testing.assert_allclose(g, np.cos(X) * X ** 2 + 2 * X * np.sin(X), rtol=1e-13,
                               atol=1e-15)
    same(tape(X, batch=True), np.array([tape(float(x)) for x in X]))
    same(tape.hvp(X, np.ones(11), batch=True),
         np.array([tape.hvp(float(x), 1.0) for x in X]))
    same(tape.jacobian(X, batch=True), np.array([tape.jacobian(float(x)) for x in X]))


@pytest.mark.parametrize("workers", [1, 2])
def test_array_block_tapes(workers):
    """Tapes with array blocks loop over single-point calls: the same results."""
    rng = rng_for("blocks", workers)
    tape = fad.record(blocks_f, rng.normal(size=3))
    assert tape.blocks
    X = rng.normal(size=(6, 3))
    check_all(tape, X, rng.normal(size=(6, 3)), rng.normal(size=6), workers)
    tv = fad.record(blocks_vec, rng.normal(size=3))
    check_all(tv, X, rng.normal(size=(6, 3)), rng.normal(size=(6, 4)), workers)


def tree_f(p):
    a, (b, c) = p["a"], p["bc"]
    return a[0] * b + fad.sin(c) * a[1] - a[0] * a[1]


def tree_out(p):
    a, b = p["a"], p["b"]
    return {"u": a[0] * b, "v": (fad.exp(b) - a[1], a[0] + a[1])}


@pytest.mark.parametrize("workers", [1, 2])
def test_pytrees(workers):
    rng = rng_for("tree", workers)
    # (0-d arrays: a tuple of floats would be one array leaf, as in NumPy)
    tape = fad.record(tree_f, {"a": rng.normal(size=2), "bc": (np.array(0.3), np.array(0.7))})
    b = 5
    X = {"a": rng.normal(size=(b, 2)), "bc": (rng.normal(size=b), rng.normal(size=b))}
    V = {"a": rng.normal(size=(b, 2)), "bc": (rng.normal(size=b), rng.normal(size=b))}
    check_all(tape, X, V, rng.normal(size=b), workers)
    g = tape.gradient(X, batch=True, workers=workers)
    assert g["a"].shape == (b, 2) and g["bc"][0].shape == (b,)
    # pytree output
    t2 = fad.record(tree_out, {"a": rng.normal(size=2), "b": 0.5})
    X2 = {"a": rng.normal(size=(b, 2)), "b": rng.normal(size=b)}
    V2 = {"a": rng.normal(size=(b, 2)), "b": rng.normal(size=b)}
    Y2 = {"u": rng.normal(size=b), "v": rng.normal(size=(b, 2))}   # (a pair of Vars: one leaf)
    check_all(t2, X2, V2, Y2, workers)


def test_pytree_with_blocks_and_float32():
    rng = rng_for("tree32")

    def f(p):
        return fad.sum(fad.tanh(p["W"] @ p["x"])) * p["s"]

    p0 = {"W": rng.normal(size=(2, 3)).astype(np.float32), "x": rng.normal(size=3), "s": 1.5}
    tape = fad.record(f, p0)
    assert tape.blocks
    X = {"W": rng.normal(size=(4, 2, 3)).astype(np.float32), "x": rng.normal(size=(4, 3)),
         "s": rng.normal(size=4)}
    V = {"W": rng.normal(size=(4, 2, 3)), "x": rng.normal(size=(4, 3)), "s": rng.normal(size=4)}
    check_all(tape, X, V, rng.normal(size=4), 2)
    assert tape.gradient(X, batch=True)["W"].dtype == np.float32


# ---------------------------------------------------------------- branches

def branchy(x):
    return x[0] * x[1] if x[0] > 0 else x[0] - x[1]


def branchy_blocks(x):
    y = fad.sum(fad.tanh(np.eye(2) @ x))
    return y * x[1] if x[0] > 0 else y - x[1]


@pytest.mark.parametrize("f", [branchy, branchy_blocks])
@pytest.mark.parametrize("workers", [1, 2])
def test_branch_change_names_the_point(f, workers):
    tape = fad.record(f, np.array([1.0, 2.0]))
    X = np.array([[1.0, 2.0], [2.0, 3.0], [-1.0, 2.0], [3.0, 4.0], [-2.0, 1.0]])
    V = np.ones((5, 2))
    calls = [lambda **k: tape(X, **k), lambda **k: tape.gradient(X, **k),
             lambda **k: tape.value_and_gradient(X, **k), lambda **k: tape.jvp(X, V, **k),
             lambda **k: tape.vjp(X, np.ones(5), **k), lambda **k: tape.hvp(X, V, **k),
             lambda **k: tape.jacobian(X, **k), lambda **k: tape.jacobian(X, "fwd", **k)]
    good = [0, 1, 3]
    for call in calls:
        with pytest.raises(fad.BranchChangedError, match=r"point 2 of the batch \(X\[2\]\)"):
            call(batch=True, workers=workers)
        res, ok = call(batch=True, workers=workers, on_branch_change="mask")
        assert ok.dtype == bool
        assert ok.tolist() == [True, True, False, True, False]
        ref = call(batch=True, workers=workers, on_branch_change="mask")[0]
        for leaf in leaves_of(res):
            assert np.isnan(np.asarray(leaf)[~ok]).all()
        # the points that replayed: what a batch of just them gives
        Xg = X[good]
        sub = {0: lambda: tape(Xg, batch=True), 1: lambda: tape.gradient(Xg, batch=True),
               2: lambda: tape.value_and_gradient(Xg, batch=True),
               3: lambda: tape.jvp(Xg, V[good], batch=True),
               4: lambda: tape.vjp(Xg, np.ones(3), batch=True),
               5: lambda: tape.hvp(Xg, V[good], batch=True),
               6: lambda: tape.jacobian(Xg, batch=True),
               7: lambda: tape.jacobian(Xg, "fwd", batch=True)}[calls.index(call)]()
        if isinstance(res, tuple):
            for a, b_ in zip(res, sub):
                same(np.asarray(a)[ok], np.asarray(b_))
        else:
            same(res[ok], sub)
        same(ref, res)
    # the first point that changed is named, not another
    with pytest.raises(fad.BranchChangedError, match=r"point 0 of the batch") as info:
        tape.gradient(-X, batch=True, workers=workers)
    assert "comparison" in str(info.value)


def test_value_read_tape_replays_only_at_its_point():
    def f(x):
        return x[0] * x[1] if x[0].value > 0 else x[0]

    x0 = np.array([1.0, 2.0])
    tape = fad.record(f, x0)
    X = np.array([x0, x0, [3.0, 1.0]])
    with pytest.raises(fad.ValueReadError, match=r"point 2 of the batch"):
        tape.gradient(X, batch=True)
    g, ok = tape.gradient(X, batch=True, on_branch_change="mask")
    assert ok.tolist() == [True, True, False]
    same(g[:2], np.array([tape.gradient(x0)] * 2))


def test_nan_input_stays_in_its_point():
    tape = fad.record(rosen_loop, np.ones(4))
    X = np.ones((3, 4))
    X[1, 2] = np.nan
    G = tape.gradient(X, batch=True)
    same(G, stack([tape.gradient(x) for x in X]))
    assert np.isnan(G[1]).any() and not np.isnan(G[[0, 2]]).any()


# ---------------------------------------------------------------- empty batches

def test_empty_batch():
    tape = fad.record(rosen_loop, np.ones(4))
    E = np.zeros((0, 4))
    assert tape(E, batch=True).shape == (0,)
    assert tape.gradient(E, batch=True).shape == (0, 4)
    v, g = tape.value_and_gradient(E, batch=True)
    assert v.shape == (0,) and g.shape == (0, 4)
    assert tape.jvp(E, E, batch=True).shape == (0,)
    assert tape.jvp(E, np.zeros((0, 3, 4)), batch=True).shape == (0, 3)
    assert tape.vjp(E, np.zeros(0), batch=True).shape == (0, 4)
    assert tape.hvp(E, E, batch=True).shape == (0, 4)
    assert tape.jacobian(E, batch=True).shape == (0, 4)
    res, ok = tape.gradient(E, batch=True, on_branch_change="mask")
    assert res.shape == (0, 4) and ok.shape == (0,)
    tb = fad.record(blocks_vec, np.ones(3))
    assert tb.jacobian(np.zeros((0, 3)), batch=True).shape == (0, 4, 3)
    assert tb(np.zeros((0, 3)), batch=True).shape == (0, 4)


def test_zero_directions_per_point():
    tape = fad.record(vec_out, np.ones(3))
    X = np.ones((2, 3))
    assert tape.jvp(X, np.zeros((2, 0, 3)), batch=True).shape == (2, 0, 4)
    assert tape.vjp(X, np.zeros((2, 0, 4)), batch=True).shape == (2, 0, 3)


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def rtape():
    return fad.record(rosen_loop, np.ones(4))


def test_bad_shapes(rtape):
    with pytest.raises(ValueError, match=r"one point's shape"):
        rtape.gradient(np.ones(4), batch=True)
    with pytest.raises(ValueError, match=r"must have shape \(b,\) \+ \(4,\), got \(3, 5\)"):
        rtape.gradient(np.ones((3, 5)), batch=True)
    with pytest.raises(ValueError, match=r"must have shape"):
        rtape(np.ones((2, 3, 4)), batch=True)
    with pytest.raises(ValueError, match=r"V must have shape \(3,\) \+ \(4,\)"):
        rtape.hvp(np.ones((3, 4)), np.ones((2, 4)), batch=True)      # another b
    with pytest.raises(ValueError, match=r"V must have shape"):
        rtape.jvp(np.ones((3, 4)), np.ones((3, 2, 5)), batch=True)
    with pytest.raises(ValueError, match=r"Ybar must have shape \(3,\) \+ \(\)"):
        rtape.vjp(np.ones((3, 4)), np.ones((3, 4, 2, 1)), batch=True)
    tv = fad.record(vec_out, np.ones(3))
    with pytest.raises(ValueError, match=r"scalar output.*shape \(4,\)"):
        tv.gradient(np.ones((2, 3)), batch=True)
    with pytest.raises(ValueError, match=r"scalar output"):
        tv.hvp(np.ones((2, 3)), np.ones((2, 3)), batch=True)


def test_bad_dtypes(rtape):
    with pytest.raises(TypeError, match=r"X must be real numbers, got complex"):
        rtape.gradient(np.ones((2, 4), dtype=complex), batch=True)
    with pytest.raises(TypeError, match=r"X must be real numbers, got dtype <U"):
        rtape.gradient(np.full((2, 4), "a"), batch=True)
    with pytest.raises(TypeError, match=r"V must be real numbers"):
        rtape.hvp(np.ones((2, 4)), np.ones((2, 4), dtype=complex), batch=True)


@pytest.mark.parametrize("workers, exc", [(0, ValueError), (-1, ValueError),
                                          (1.5, TypeError), (True, TypeError),
                                          ("2", TypeError), (float("inf"), TypeError),
                                          (float("nan"), TypeError)])
def test_bad_workers(rtape, workers, exc):
    with pytest.raises(exc, match=r"workers must be"):
        rtape.gradient(np.ones((2, 4)), batch=True, workers=workers)


def test_numpy_integer_workers(rtape):
    same(rtape.gradient(np.ones((2, 4)), batch=True, workers=np.int64(2)),
         rtape.gradient(np.ones((2, 4)), batch=True, workers=1))


def test_bad_options(rtape):
    with pytest.raises(ValueError, match=r"on_branch_change must be 'raise' or 'mask'"):
        rtape.gradient(np.ones((2, 4)), batch=True, on_branch_change="skip")
    for kw in ({"workers": 2}, {"on_branch_change": "mask"}):
        with pytest.raises(ValueError, match=r"pass batch=True"):
            rtape.gradient(np.ones(4), **kw)
        with pytest.raises(ValueError, match=r"pass batch=True"):
            rtape(np.ones(4), **kw)


def test_bad_pytrees():
    tape = fad.record(tree_f, {"a": np.ones(2), "bc": (np.array(0.3), np.array(0.7))})
    with pytest.raises(ValueError, match=r"structure"):
        tape.gradient({"a": np.ones((3, 2)), "bc": np.ones(3)}, batch=True)
    with pytest.raises(ValueError, match=r"leading axes differ .*X\['bc'\]\[1\] has \(4,\)"):
        tape.gradient({"a": np.ones((3, 2)), "bc": (np.ones(3), np.ones(4))}, batch=True)
    with pytest.raises(ValueError, match=r"X\['a'\] must have shape"):
        tape.gradient({"a": np.ones(2), "bc": (np.array(0.3), np.array(0.7))}, batch=True)


def test_tape_still_works_after_errors(rtape):
    for bad in (np.ones(4), np.ones((2, 5))):
        with pytest.raises(ValueError):
            rtape.gradient(bad, batch=True)
    x = np.array([0.5, 1.0, 1.5, 2.0])
    same(rtape.gradient(x[None], batch=True)[0], rtape.gradient(x))


def test_pickled_tape_batches():
    import pickle
    tape = fad.record(rosen_loop, np.ones(5))
    t2 = pickle.loads(pickle.dumps(tape))
    X = rng_for("pickle").normal(size=(4, 5))
    same(t2.gradient(X, batch=True), tape.gradient(X, batch=True))


# ---------------------------------------------------------------- every op

def _op_cases():
    from test_op_table import CASES
    return [c for c in CASES if c[2].startswith("scalar")]


OP_CASES = _op_cases()


@pytest.mark.parametrize("fname, op, form, f, z0", OP_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in OP_CASES])
def test_every_op_bit_for_bit(fname, op, form, f, z0):
    """Every op of the table (scalar forms), at ordinary, special and
    non-finite points: the batch (points side by side for values and
    gradients, one at a time for the rest) gives the single-point bits, and
    replays exactly where the single-point call does."""
    W = np.linspace(0.7, -1.3, 3)
    g = lambda z: fad.sum(f(z) * W)     # noqa: E731 - scalarized, for gradients and hvps
    rng = rng_for("ops", fname, form)
    pts = [z0, z0 * 0.9 + 0.03, -z0, np.zeros_like(z0), z0 * 1e3, z0 + 1.0,
           np.where(np.arange(z0.size) == 0, np.inf, z0), np.where(np.arange(z0.size) == 1, np.nan, z0)]
    pts += list(rng.uniform(-2, 2, (9, z0.size)))
    X = np.array(pts)
    V = rng.normal(size=X.shape)
    with np.errstate(all="ignore"):
        for fn in (f, g):
            tape = fad.record(fn, z0)
            calls = [("value", lambda x, v: tape(x), lambda **k: tape(X, **k)),
                     ("jvp", lambda x, v: tape.jvp(x, v), lambda **k: tape.jvp(X, V, **k)),
                     ("jacobian", lambda x, v: tape.jacobian(x),
                      lambda **k: tape.jacobian(X, **k))]
            if fn is g:
                calls += [("gradient", lambda x, v: tape.gradient(x),
                           lambda **k: tape.gradient(X, **k)),
                          ("hvp", lambda x, v: tape.hvp(x, v), lambda **k: tape.hvp(X, V, **k))]
            for name, one, many in calls:
                res, ok = many(batch=True, workers=2, on_branch_change="mask")
                for i, (x, v) in enumerate(zip(X, V)):
                    try:
                        want = one(x, v)
                    except fad.BranchChangedError:
                        assert not ok[i], (fname, form, name, i)
                        continue
                    assert ok[i], (fname, form, name, i)
                    assert np.array_equal(np.asarray(res[i]), np.asarray(want), equal_nan=True), \
                        (fname, form, name, i, res[i], want)


def test_strong_zeros_in_the_lanes():
    """An inf adjoint (sqrt'(0) upstream) passes nothing through a zero
    partial: the points side by side keep the single-point rule."""
    tape = fad.record(lambda x: fad.sqrt(x[0] * x[1]) + x[0] + fad.sqrt(x[2] * 2.0) * 0.0,
                      np.ones(3))
    X = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [4.0, 1.0, 1.0]] * 3)
    G = tape.gradient(X, batch=True)
    same(G, stack([tape.gradient(x) for x in X]))
    assert G[1].tolist() == [1.0, 0.0, 0.0]          # exact zeros, not NaN
    same(tape.gradient(X, batch=True, workers=2), G)
    for V in (np.ones_like(X), np.eye(3)[np.arange(len(X)) % 3]):
        same(tape.hvp(X, V, batch=True), np.array([tape.hvp(x, v) for x, v in zip(X, V)]))
    # an inf adjoint through a zero partial into a node with curvature
    for h in (lambda x: fad.sqrt(x[0] * x[1] ** 2) + x[2] ** 2,
              lambda x: fad.sqrt(x[1] ** 2 * x[0]) + x[2] ** 2):
        t2 = fad.record(h, np.ones(3))
        for V in (np.ones_like(X), np.eye(3)[np.arange(len(X)) % 3]):
            same(t2.hvp(X, V, batch=True), np.array([t2.hvp(x, v) for x, v in zip(X, V)]))


def test_strong_zeros_in_the_tangent_lanes():
    """A zero tangent through an inf partial (sqrt'(0)) gives an exact zero."""
    tape = fad.record(lambda x: fad.sqrt(x[0]) * 2.0 + x[1] + fad.sqrt(x[0] * x[1]), np.ones(2))
    X = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [4.0, 2.0]] * 3)
    V = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]] * 3)
    T = tape.jvp(X, V, batch=True)
    same(T, np.array([tape.jvp(x, v) for x, v in zip(X, V)]))
    assert T[1] == 1.0 and T[2] == 0.0
    same(tape.hvp(X, V, batch=True), np.array([tape.hvp(x, v) for x, v in zip(X, V)]))
