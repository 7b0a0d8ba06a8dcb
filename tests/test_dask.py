"""fastad.dask: tapes and transforms over chunks of points on a LocalCluster
of worker processes; the results equal the local batched ones."""
import pickle
import sys

import numpy as np
import pytest

import fastad as fad
from conftest import rosen_loop

distributed = pytest.importorskip(
    "distributed", reason="dask[distributed] is not installed (pip install \"fastad[dask]\")")
import dask  # noqa: E402
import fastad.dask as fdask  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # one cluster for the module: starting one costs seconds
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def vec_out(x):
    return fad.stack([x[0] * x[1], fad.sin(x[1]) + x[2], x[0] / x[2]])


@pytest.fixture(scope="module")
def tapes():
    rng = np.random.default_rng(0)
    return {"rosen": fad.record(rosen_loop, rng.uniform(0.5, 1.5, 6)),
            "vec": fad.record(vec_out, rng.uniform(0.5, 1.5, 3)),
            "blocks": fad.record(lambda x: fad.sum(fad.tanh(np.eye(3) @ x) * x), np.ones(3))}


@pytest.mark.parametrize("name", ["rosen", "vec", "blocks"])
def test_equals_local(client, tapes, name):
    tape = tapes[name]
    rng = np.random.default_rng(1)
    n = tape.n_inputs
    X = rng.uniform(0.5, 1.5, (23, n))
    for method in ("value", "jacobian") + (("gradient",) if tape.out_shape == () else ()):
        got = fdask.map_tape(tape, X, method, chunk_size=5, client=client)
        assert got.chunks[0] == (5, 5, 5, 5, 3)
        local = tape.jacobian(X, batch=True) if method == "jacobian" else \
            tape(X, batch=True) if method == "value" else tape.gradient(X, batch=True)
        np.testing.assert_array_equal(got.compute(), local)
    V = rng.normal(size=(23, 2, n))
    np.testing.assert_array_equal(fdask.map_tape(tape, X, "jvp", V, chunk_size=5).compute(),
                                  tape.jvp(X, V, batch=True))
    Y = rng.normal(size=(23,) + tuple(tape.out_shape))
    np.testing.assert_array_equal(fdask.map_tape(tape, X, "vjp", Y, chunk_size=5).compute(),
                                  tape.vjp(X, Y, batch=True))
    if tape.out_shape == ():
        np.testing.assert_array_equal(
            fdask.map_tape(tape, X, "hvp", V[:, 0], chunk_size=5).compute(),
            tape.hvp(X, V[:, 0], batch=True))


def test_dask_array_input_and_analytic_gradient(client, tapes):
    import dask.array as da
    from conftest import rosen_grad_np
    tape = tapes["rosen"]
    X = da.random.default_rng(2).uniform(-1, 1, (40, 6), chunks=(8, 3))
    G = fdask.map_tape(tape, X, "gradient")
    Xc = X.compute()
    np.testing.assert_allclose(G.compute(), [rosen_grad_np(x) for x in Xc], rtol=1e-12,
                               atol=1e-12)


def test_tape_shipped_once(client):
    """The tasks hold a reference to the scattered tape, not its bytes."""
    tape = fad.record(rosen_loop, np.ones(2000))
    size = len(pickle.dumps(tape))
    X = np.ones((40, 2000))
    G = fdask.map_tape(tape, X, "gradient", chunk_size=2, client=client)   # 20 tasks
    import cloudpickle
    graph = dict(G.__dask_graph__())
    graph_bytes = len(cloudpickle.dumps(graph)) - X.nbytes
    assert graph_bytes < size, (graph_bytes, size)
    np.testing.assert_array_equal(G.compute(), tape.gradient(X, batch=True))


def branchy(x):
    return x[0] * x[1] if x[0] > 0 else x[0] - x[1]


def test_branch_change(client):
    tape = fad.record(branchy, np.array([1.0, 2.0]))
    X = np.ones((12, 2))
    X[7, 0] = -1.0
    X[9, 0] = -2.0
    # (the chunks run in parallel: the first one to fail names its point)
    with pytest.raises(fad.BranchChangedError, match=r"point (7|9) of X takes another branch"):
        fdask.map_tape(tape, X, "gradient", chunk_size=4).compute()
    g, ok = fdask.map_tape(tape, X, "gradient", chunk_size=4, on_branch_change="mask")
    g, ok = dask.compute(g, ok)
    want_ok = np.ones(12, bool)
    want_ok[[7, 9]] = False
    np.testing.assert_array_equal(ok, want_ok)
    assert np.isnan(g[~ok]).all()
    np.testing.assert_array_equal(g[ok], tape.gradient(X[ok], batch=True))


def test_map_points_transform(client):
    X = np.random.default_rng(3).normal(size=(9, 4))
    H = fdask.map_points(fad.hessian(rosen_loop), X, chunk_size=4)
    assert H.shape == (9, 4, 4)
    np.testing.assert_array_equal(H.compute(), np.stack([fad.hessian(rosen_loop)(x) for x in X]))
    g = fdask.map_points(fad.grad(rosen_loop), X, out_shape=(4,))
    np.testing.assert_array_equal(g.compute(), np.stack([fad.grad(rosen_loop)(x) for x in X]))


def test_current_client_is_the_default(client, tapes):
    tape = tapes["rosen"]
    X = np.random.default_rng(4).normal(size=(10, 6))
    G = fdask.map_tape(tape, X, "gradient", chunk_size=3)
    np.testing.assert_array_equal(G.compute(), tape.gradient(X, batch=True))


def test_local_scheduler_without_a_client(tapes, monkeypatch):
    """No client given and none current: Dask's local scheduler."""
    def no_client():
        raise ValueError("No clients found")
    monkeypatch.setattr(distributed, "get_client", no_client)
    tape = tapes["rosen"]
    X = np.random.default_rng(4).normal(size=(10, 6))
    G = fdask.map_tape(tape, X, "gradient", chunk_size=3, client=None)
    np.testing.assert_array_equal(G.compute(scheduler="threads"), tape.gradient(X, batch=True))


def test_empty(client, tapes):
    G = fdask.map_tape(tapes["rosen"], np.zeros((0, 6)), "gradient")
    assert G.shape == (0, 6)
    assert G.compute().shape == (0, 6)


def test_bad_input(client, tapes):
    tape = tapes["rosen"]
    X = np.ones((4, 6))
    with pytest.raises(ValueError, match=r"method must be one of"):
        fdask.map_tape(tape, X, "hessian")
    with pytest.raises(ValueError, match=r"X must have shape \(b,\) \+ \(6,\), got \(4, 5\)"):
        fdask.map_tape(tape, np.ones((4, 5)), "gradient")
    with pytest.raises(ValueError, match=r"needs V"):
        fdask.map_tape(tape, X, "jvp")
    with pytest.raises(ValueError, match=r"takes no V"):
        fdask.map_tape(tape, X, "gradient", X)
    with pytest.raises(ValueError, match=r"V has 3 points but X has 4"):
        fdask.map_tape(tape, X, "hvp", np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"V must have shape"):
        fdask.map_tape(tape, X, "hvp", np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        fdask.map_tape(tape, X, "gradient", chunk_size=0)
    with pytest.raises(ValueError, match=r"workers must be at least 1"):
        fdask.map_tape(tape, X, "gradient", threads=0)
    with pytest.raises(ValueError, match=r"on_branch_change"):
        fdask.map_tape(tape, X, "gradient", on_branch_change="drop")
    with pytest.raises(TypeError, match=r"must be a fad.Tape"):
        fdask.map_tape(rosen_loop, X, "gradient")
    with pytest.raises(TypeError, match=r"X must be real numbers"):
        fdask.map_tape(tape, np.full((4, 6), "a"), "gradient")
    with pytest.raises(ValueError, match=r"pytree"):
        fdask.map_tape(fad.record(lambda p: p["a"][0] * p["b"], {"a": np.ones(2), "b": 1.0}),
                       X, "gradient")
    with pytest.raises(TypeError, match=r"fn must be callable"):
        fdask.map_points(3, X)


def test_missing_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r'pip install "fastad\[dask\]"'):
        fdask.map_tape(fad.record(rosen_loop, np.ones(3)), np.ones((2, 3)))
