"""fad.hessian(f)(x) called the way users call it (a new function and a new
recording every call) keeps the plans of recently seen tape structures
(fastad.sparse._PLANS): a tape with the same ops on the same operands reuses
the pattern and coloring; any other structure finds its own.  The cache
changes speed, never values: every Hessian here is checked against the
Rosenbrock formula, scipy's rosen_hess or central differences."""
import threading

import numpy as np
import pytest

import fastad as fad
from fastad import sparse as fsparse

from conftest import (close, fd_close, fd_hessian, rosen_hess_np as rosen_hess,
                      rosen_products, rosen_vec)

N = 120


def point(n=N, seed=0):
    return np.random.default_rng(seed).uniform(-1.2, 1.2, n)


@pytest.fixture
def searches(monkeypatch):
    """The pattern searches (index-set propagations) run from here on."""
    fsparse.forget_plans()
    calls = []
    real = fsparse._propagate
    monkeypatch.setattr(fsparse, "_propagate", lambda *a, **k: calls.append(1) or real(*a, **k))
    yield calls
    fsparse.forget_plans()


@pytest.mark.parametrize("f", [rosen_products, rosen_vec], ids=["loop", "vectorized"])
def test_fresh_calls_reuse_the_plan_and_stay_exact(f, searches):
    for seed in range(4):
        x = point(seed=seed)
        close(fad.hessian(f)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 1
    # and against scipy's own Hessian
    from scipy.optimize import rosen_hess as scipy_rosen_hess
    x = point(seed=9)
    close(fad.hessian(f)(x), scipy_rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 1


def test_loop_and_vectorized_tapes_do_not_share_a_plan(searches):
    x = point(seed=1)
    close(fad.hessian(rosen_products)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    close(fad.hessian(rosen_vec)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 2


def chain(k):
    """x[i] interacting with x[i + k] (around the end): the same ops on other
    operands, so tapes of the same length."""
    def f(x):
        s = 0.0
        n = len(x)
        for i in range(n):
            s = s + x[i] * x[i] * x[(i + k) % n]
        return s
    return f


def chain_hess(x, k):
    n = x.size
    H = np.zeros((n, n))
    i = np.arange(n)
    j = (i + k) % n
    np.add.at(H, (i, i), 2 * x[j])
    np.add.at(H, (i, j), 2 * x[i])
    np.add.at(H, (j, i), 2 * x[i])
    return H


def test_same_ops_on_other_operands_find_their_own_pattern(searches):
    x = point(400, seed=2)            # (long enough for "auto" to look for a pattern)
    for k in (1, 2, 5, 1, 2):
        close(fad.hessian(chain(k))(x), chain_hess(x, k), rtol=1e-12, atol=1e-12)
    assert len(searches) == 3
    t1, t2 = fad.record(chain(1), x), fad.record(chain(2), x)
    assert len(t1) == len(t2) and fsparse._structure_key(t1) != fsparse._structure_key(t2)
    assert fsparse._structure_key(t1) == fsparse._structure_key(fad.record(chain(1), point(400, 3)))


def branchy(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (x[i] * x[i + 1] if x[i] > 0 else x[i] ** 3)
    return s


def branchy_hess(x):
    n = x.size
    H = np.zeros((n, n))
    for i in range(n - 1):
        if x[i] > 0:
            H[i, i + 1] += 1.0
            H[i + 1, i] += 1.0
        else:
            H[i, i] += 6 * x[i]
    return H


def test_another_branch_is_another_structure(searches):
    y = np.abs(point(400, seed=4)) + 0.1
    z = y.copy()
    z[3] = -0.5
    for p in (y, z, y, z):
        close(fad.hessian(branchy)(p), branchy_hess(p), rtol=1e-12, atol=1e-12)
    assert len(searches) == 2
    fd_close(fad.hessian(branchy)(z[:40]), fd_hessian(branchy, z[:40]), rtol=1e-5, atol=1e-6,
             scale_atol=True)


def test_other_sizes_and_shapes_are_other_structures(searches):
    for n in (100, 140, 100):
        x = point(n, seed=n)
        close(fad.hessian(rosen_vec)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    X = point(120, seed=60).reshape(10, 12)
    H = fad.hessian(lambda X: rosen_vec(X.reshape(-1)))(X)
    assert H.shape == (10, 12, 10, 12)
    close(H.reshape(120, 120), rosen_hess(X.reshape(-1)), rtol=1e-12, atol=1e-10)
    assert len(searches) == 3


def test_a_dense_hessian_is_searched_once_across_fresh_calls(searches):
    V = np.random.default_rng(5).standard_normal((N, N)) / 11.0

    def f(x):
        return fad.sum(fad.tanh(V @ x))
    for seed in range(3):
        x = point(seed=seed)
        t = np.tanh(V @ x)
        close(fad.hessian(f)(x), V.T @ np.diag(-2 * t * (1 - t * t)) @ V, rtol=1e-10,
              atol=1e-12)
    assert len(searches) == 1


@pytest.mark.parametrize("f", [rosen_products, rosen_vec], ids=["loop", "vectorized"])
def test_sparse_hessian_shares_the_kept_plans(f, searches):
    pytest.importorskip("scipy")
    for seed in range(3):                       # its own plan, kept for the next call
        x = point(seed=seed)
        close(fad.sparse_hessian(f)(x).toarray(), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 1
    x = point(seed=4)                           # and fad.hessian finds it too
    close(fad.hessian(f)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 1
    fsparse.forget_plans()                      # fad.hessian's plan, found by sparse_hessian
    fad.hessian(f)(x)
    close(fad.sparse_hessian(f)(point(seed=5)).toarray(), rosen_hess(point(seed=5)),
          rtol=1e-12, atol=1e-10)
    assert len(searches) == 2


def test_sparse_hessian_keeps_no_plan_that_auto_would_sweep_densely(searches):
    pytest.importorskip("scipy")
    V = np.random.default_rng(5).standard_normal((N, N)) / 11.0

    def f(x):
        return fad.sum(fad.tanh(V @ x))
    x = point(seed=1)
    t = np.tanh(V @ x)
    want = V.T @ np.diag(-2 * t * (1 - t * t)) @ V
    close(fad.sparse_hessian(f)(x).toarray(), want, rtol=1e-10, atol=1e-12)
    assert fsparse._PLANS == {}                 # (a colored sweep of n colors would be slower)
    close(fad.hessian(f)(x), want, rtol=1e-10, atol=1e-12)
    assert list(fsparse._PLANS.values()) == [False]
    close(fad.sparse_hessian(f)(x).toarray(), want, rtol=1e-10, atol=1e-12)


def test_method_overrides_the_kept_plan(searches):
    x = point(seed=6)
    fad.hessian(rosen_products)(x)
    for method in ("dense", "colored"):
        close(fad.hessian(rosen_products, method=method)(x), rosen_hess(x), rtol=1e-12,
              atol=1e-10)
    tape = fad.record(rosen_products, x)
    close(tape.hessian(x, method="dense"), rosen_hess(x), rtol=1e-12, atol=1e-10)


def test_the_cache_is_bounded(searches, monkeypatch):
    monkeypatch.setattr(fsparse, "PLAN_CACHE_ENTRIES", 3)
    for n in range(200, 210):
        x = point(n, seed=n)
        close(fad.hessian(rosen_products)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
        assert len(fsparse._PLANS) == min(n - 199, 3)
    assert len(searches) == 10
    assert fsparse._plan_bytes[0] == sum(fsparse._key_bytes(k) for k in fsparse._PLANS)
    x = point(209, seed=209)                 # the newest is still there
    close(fad.hessian(rosen_products)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    x = point(200, seed=200)                 # the oldest is not
    close(fad.hessian(rosen_products)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 11
    # a key larger than a quarter of the byte budget is not kept
    monkeypatch.setattr(fsparse, "PLAN_CACHE_BYTES", 1000)
    fsparse.forget_plans()
    x = point(seed=7)
    close(fad.hessian(rosen_products)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(searches) == 12 and not fsparse._PLANS


def test_fresh_calls_from_threads(searches):
    xs = [point(seed=s) for s in range(8)]
    out = [None] * len(xs)

    def work(i):
        f = rosen_products if i % 2 else rosen_vec
        for _ in range(3):
            out[i] = fad.hessian(f)(xs[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, H in zip(xs, out):
        close(H, rosen_hess(x), rtol=1e-12, atol=1e-10)


def test_structure_bytes_zero_the_unused_operands():
    x = point(seed=8)
    a, b = fad.record(rosen_vec, x), fad.record(rosen_vec, point(seed=9))
    assert a._structure() == b._structure()
    n = a.n_nodes
    s = np.frombuffer(a._structure(), dtype=np.uint8)
    assert s.size == 9 * n
    ops, operands = s[:n], np.frombuffer(a._structure()[n:], dtype=np.int32).reshape(n, 2)
    first_op = a.n_inputs
    assert not operands[:first_op].any()          # input slots
    assert a.node(first_op)[0] == "block"
    assert not operands[first_op:first_op + N - 1].any()
    assert ops.size == n


def shifted(k):
    """sum(x[i]^2 x[i + k]) with slices: the same blocks on other slots."""
    def f(x):
        return fad.sum(x[:-3] ** 2 * x[k:len(x) - 3 + k])
    return f


def shifted_hess(x, k):
    n = x.size
    H = np.zeros((n, n))
    i = np.arange(n - 3)
    np.add.at(H, (i, i), 2 * x[i + k])
    np.add.at(H, (i, i + k), 2 * x[i])
    np.add.at(H, (i + k, i), 2 * x[i])
    return H


def permuted(seed):
    perm = np.random.default_rng(seed).permutation(N)

    def f(x):
        return fad.sum(x[perm][:-1] ** 2 * x[1:])
    return f, perm


def test_array_blocks_on_other_slots_are_other_structures(searches):
    x = point(seed=10)
    keys = set()
    for k in (1, 2, 3, 1):
        close(fad.hessian(shifted(k))(x), shifted_hess(x, k), rtol=1e-12, atol=1e-12)
        keys.add(fsparse._structure_key(fad.record(shifted(k), x)))
    assert len(keys) == 3 and len(searches) == 3
    # gathered operands (not runs of slots) are keyed by their slots
    for seed in (1, 2, 1):
        f, perm = permuted(seed)
        fd_close(fad.hessian(f)(x), fd_hessian(f, x), rtol=1e-5, atol=1e-6, scale_atol=True)
    assert len(searches) == 5


def _n_colors(c):
    return int(np.max(c)) + 1 if c.size else 0


@pytest.mark.parametrize("name,edges,n,want", [
    ("path (tridiagonal)", [(i, i + 1) for i in range(9)], 10, 3),
    ("star", [(0, i) for i in range(1, 8)], 8, 2),
    ("diagonal only", [], 6, 1),
    ("triangle", [(0, 1), (1, 2), (0, 2)], 3, 3),
    ("two stars", [(0, 1), (0, 2), (3, 4), (3, 5)], 6, 2),
])
def test_best_star_coloring_stops_at_its_lower_bound_and_is_valid(name, edges, n, want):
    """ordering="best" stops once a coloring meets the lower bound (3 with a
    path on four vertices or a triangle, 2 with any edge, else 1); the
    colors must still be a star coloring, and no ordering may do better."""
    from fastad import _coloring
    import scipy.sparse as sps
    rows = [i for i, j in edges] + [j for i, j in edges] + list(range(n))
    cols = [j for i, j in edges] + [i for i, j in edges] + list(range(n))
    P = sps.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    P.sort_indices()
    c = _coloring.star_color(P.indptr, P.indices, n, "best")
    assert _n_colors(c) == want
    assert _coloring.check_coloring(P.indptr, P.indices, (n, n), c, "star")
    for o in ("natural", "largest_first", "smallest_last", "incidence_degree"):
        assert _n_colors(_coloring.star_color(P.indptr, P.indices, n, o)) >= want
