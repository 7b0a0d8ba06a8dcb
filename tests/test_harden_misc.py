"""Issue #18, items 6 and 8: array keyword arguments of a primitive are
snapshotted when recorded; pooled replay buffers shrink when their tape goes
and release_memory() returns memory."""
import gc
import pickle

import numpy as np
import pytest

import fastad as fad
from conftest import fd_grad


@fad.primitive
def wsum(x, w=None, extra=()):
    s = np.sum(np.asarray(w) * x)
    for e in extra:
        s = s + np.sum(np.asarray(e) * x)
    return s


def _wsum_vjp(ybar, y, x, w=None, extra=()):
    g = np.asarray(w) * np.ones_like(x)
    for e in extra:
        g = g + np.asarray(e)
    return ybar * g


wsum.defvjp(_wsum_vjp)
wsum.defjvp(lambda xdot, y, x, w=None, extra=(): np.sum(_wsum_vjp(1.0, y, x, w, extra) * xdot))


@fad.primitive
def wscale(x, w=None, table=None):
    return x * float(np.sum(w)) + float(table["b"][0])


wscale.defvjp(lambda ybar, y, x, w=None, table=None: ybar * float(np.sum(w)))
wscale.defjvp(lambda xdot, y, x, w=None, table=None: xdot * float(np.sum(w)))

X0 = np.array([1.0, 1.0])
X1 = np.array([2.0, 3.0])


def _cases():
    """(kwargs maker, f of the kwargs, a mutation of the kwargs)."""
    def arr():
        w = np.array([1.0, 2.0])
        return {"w": w}, lambda k: (lambda x: wsum(x, w=k["w"]) * x[0]), \
            lambda k: k["w"].__setitem__(slice(None), 100.0)

    def nested():
        k = {"w": np.array([1.0, 2.0]), "extra": [np.array([0.5, 0.0])]}
        return k, lambda k: (lambda x: wsum(x, **k) * x[1]), \
            lambda k: k["extra"][0].__setitem__(0, -7.0)

    def scalar():
        k = {"w": np.array([1.0, 2.0]), "table": {"b": np.array([0.25])}}
        return k, lambda k: (lambda x: wscale(x[0], **k) * x[1]), \
            lambda k: (k["w"].fill(9.0), k["table"]["b"].fill(5.0))

    def view_kwarg():
        base = np.array([1.0, 2.0, 3.0])
        return {"w": base[:2], "base": base}, \
            lambda k: (lambda x: wsum(x, w=k["w"]) + x[0] * x[1]), \
            lambda k: k["base"].__setitem__(slice(None), 0.0)
    return {"array": arr, "nested": nested, "scalar_primitive": scalar, "view": view_kwarg}


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("sweep", ["value", "gradient", "jvp", "hvp", "pickle"])
def test_keyword_arrays_are_snapshotted(name, sweep):
    kw, make, mutate = _cases()[name]()
    keep = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    if name == "nested":
        keep["extra"] = [e.copy() for e in kw["extra"]]
    if name == "scalar_primitive":
        keep["table"] = {"b": kw["table"]["b"].copy()}
    f_rec = make(kw)
    if name == "view":
        f_ref = make({"w": keep["base"][:2].copy()})
    else:
        f_ref = make(keep)
    t = fad.record(f_rec, X0)
    mutate(kw)                                   # after recording: must not reach the tape
    if sweep == "value":
        np.testing.assert_allclose(t(X1), f_ref(X1), rtol=1e-12)
    elif sweep == "gradient":
        np.testing.assert_allclose(t.gradient(X1), fd_grad(f_ref, X1), rtol=1e-6, atol=1e-7)
    elif sweep == "jvp":
        v = np.array([0.3, -1.0])
        np.testing.assert_allclose(t.jvp(X1, v), fd_grad(f_ref, X1) @ v, rtol=1e-6, atol=1e-7)
    elif sweep == "hvp":
        v = np.array([1.0, 0.5])
        Hv = (fd_grad(f_ref, X1 + 1e-4 * v) - fd_grad(f_ref, X1 - 1e-4 * v)) / 2e-4
        np.testing.assert_allclose(t.hvp(X1, v), Hv, rtol=1e-4, atol=1e-4)
    else:
        t2 = pickle.loads(pickle.dumps(t))
        np.testing.assert_allclose(t2.gradient(X1), fd_grad(f_ref, X1), rtol=1e-6, atol=1e-7)


def test_keyword_scalars_and_other_objects_pass_as_given():
    marker = object()

    @fad.primitive
    def tagged(x, tag=None, n=1):
        assert tag is marker
        return x * n

    tagged.defvjp(lambda ybar, y, x, tag=None, n=1: ybar * n)
    np.testing.assert_allclose(fad.grad(lambda x: tagged(x, tag=marker, n=3))(2.0), 3.0)


# ------------------------------------------------------------ pooled buffers (item 8)

def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def _big(x):
    y = np.sin(x) * x
    return np.sum((np.exp(-y * y) + y) ** 2)


def test_pooled_buffers_shrink_when_their_tape_goes():
    import threading
    from fastad._player import pooled_work_slots
    fad.release_memory()
    x = np.linspace(-1.0, 1.0, 150_000)
    t = fad.record(_big, x)
    n = t.n_nodes
    hv = []

    def work():
        hv.append(t.hvp(x, np.ones_like(x)))
    ths = [threading.Thread(target=work) for _ in range(3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    big = [s for s in pooled_work_slots() if s >= n]
    assert big                                     # pooled for the next replay of t
    # a smaller tape that takes a big buffer from the pool does not put it back
    small = fad.record(_big, x[:100])
    small.hvp(x[:100], np.ones(100))
    assert len([s for s in pooled_work_slots() if s >= n]) < len(big)
    t.gradient(x)
    del t
    gc.collect()
    # one is kept as a spare for the next tape of this size (a loop of fad.grad)
    assert len([s for s in pooled_work_slots() if s >= n // 2]) == 1
    fad.release_memory()
    assert pooled_work_slots() == []
    # the answers were right: H v of sum(g(x)^2)... checked against finite differences
    v = np.ones(5)
    xs = x[:5].copy()
    g = lambda z: fd_grad(_big, z)  # noqa: E731
    Hv = (g(xs + 1e-4 * v) - g(xs - 1e-4 * v)) / 2e-4
    np.testing.assert_allclose(fad.hvp(_big, xs, v), Hv, rtol=1e-4, atol=1e-4)


def test_release_memory_returns_memory():
    import threading
    fad.release_memory()
    gc.collect()
    x = np.linspace(-1.0, 1.0, 200_000)
    t = fad.record(_big, x)
    base = _rss_mb()

    def work():
        t.hvp(x, np.ones_like(x))
    ths = [threading.Thread(target=work) for _ in range(3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    peak = _rss_mb()
    expected = 3 * t.n_nodes * 40 / 2**20          # three Work buffers of 40 bytes a slot
    assert peak - base > 0.5 * expected
    del t, ths
    gc.collect()
    fad.release_memory()
    after = _rss_mb()
    assert after < base + 0.25 * expected, (base, peak, after)
    fad.release_memory()                           # twice is fine; fastad keeps working
    np.testing.assert_allclose(fad.grad(_big)(x[:3]), fd_grad(_big, x[:3]), rtol=1e-6, atol=1e-7)
