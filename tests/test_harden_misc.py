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
