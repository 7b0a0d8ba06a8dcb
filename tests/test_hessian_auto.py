"""fad.hessian / tape.hessian choose between the dense sweep (one direction
per input) and the star-colored sweep (one direction per color) by
themselves (issue #19, item 5); method="auto" | "dense" | "colored".

Every Hessian is checked against the dense path (to rounding) and against
an independent answer: an analytic formula or central differences."""
import numpy as np
import pytest

import fastad as fad
from fastad import _sparsity
from fastad import sparse as fsparse
from fastad.errors import BranchChangedError

from conftest import (close, fd_close, fd_hessian, rosen_hess_np as rosen_hess,
                      rosen_products, rosen_vec)

N = 120         # large enough for method="auto" to look for a pattern




def banded(x):              # pentadiagonal Hessian
    s = 0.0
    for i in range(len(x) - 2):
        s = s + fad.sin(x[i] * x[i + 2]) + x[i + 1] * x[i] ** 2
    return s


def arrow(x):               # x[0] couples with everything: an arrowhead
    s = 0.0
    for i in range(1, len(x)):
        s = s + fad.exp(0.1 * x[0] * x[i]) + x[i] ** 3
    return s


def block_diag(x):          # 4 x 4 dense blocks
    s = 0.0
    for k in range(0, len(x), 4):
        b = x[k:k + 4]
        s = s + fad.log(1.0 + fad.sum(b * b)) + fad.prod(fad.cos(b))
    return s


W = np.random.default_rng(19).standard_normal((N, N)) / np.sqrt(N)


def dense_tanh(x):
    return fad.sum(fad.tanh(W @ x))


def dense_tanh_hess(x):
    t = np.tanh(W @ x)
    return W.T @ np.diag(-2 * t * (1 - t * t)) @ W


def point(n=N, seed=0):
    return np.random.default_rng(seed).uniform(-1.2, 1.2, n)


SPARSE = [rosen_products, rosen_vec, banded, arrow, block_diag]


def chosen(tape):
    """What method="auto" chose on this tape: 'colored' or 'dense'."""
    plan = tape.sparse_cache.get("hessian_auto")
    return "colored" if isinstance(plan, fsparse.HessianPlan) else "dense"


@pytest.mark.parametrize("f", SPARSE, ids=lambda f: f.__name__)
def test_auto_takes_the_colored_sweep_on_sparse_hessians(f):
    x = point()
    dense = fad.hessian(f, method="dense")(x)
    close(fad.hessian(f)(x), dense, rtol=1e-12, atol=1e-12)
    close(fad.hessian(f, method="colored")(x), dense, rtol=1e-12, atol=1e-12)
    tape = fad.record(f, x)
    close(tape.hessian(x), dense, rtol=1e-12, atol=1e-12)
    assert chosen(tape) == "colored"
    assert tape.sparse_cache["hessian_auto"].n_colors <= N // 2


@pytest.mark.parametrize("f", [rosen_products, rosen_vec], ids=lambda f: f.__name__)
def test_rosenbrock_against_the_formula(f):
    x = point(seed=3)
    close(fad.hessian(f)(x), rosen_hess(x), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("f", [banded, arrow, block_diag], ids=lambda f: f.__name__)
def test_sparse_hessians_against_finite_differences(f):
    x = point(seed=4)
    fd_close(fad.hessian(f)(x), fd_hessian(f, x), rtol=1e-5, atol=1e-6, scale_atol=True)


def test_dense_hessian_stays_dense_and_stops_looking_early():
    x = point(seed=1)
    want = dense_tanh_hess(x)
    for method in ("auto", "dense", "colored"):
        close(fad.hessian(dense_tanh, method=method)(x), want, rtol=1e-10, atol=1e-12)
    tape = fad.record(dense_tanh, x)
    close(tape.hessian(x), want, rtol=1e-10, atol=1e-12)
    assert chosen(tape) == "dense"
    # the pattern search gave up within its budget: no pattern was kept
    assert "hessian_pattern" not in tape.sparse_cache


def test_propagate_budget():
    x = point()
    tape = fad.record(dense_tanh, x)
    blocks = [b.sparsity() for b in tape.blocks if b.stop > b.start]
    assert _sparsity.propagate(tape, tape.out_slots, blocks, True, 100) is None
    full = _sparsity.propagate(tape, tape.out_slots, blocks, True)
    assert full[1][1].size == N * N
    tape = fad.record(rosen_products, x)
    got = _sparsity.propagate(tape, tape.out_slots, [], True, 10 * N)
    assert got is not None and got[1][1].size == 3 * N - 2


def test_small_inputs_go_dense_without_looking():
    x = point(8)
    tape = fad.record(rosen_products, x)
    close(tape.hessian(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert chosen(tape) == "dense" and "hessian_pattern" not in tape.sparse_cache
    close(tape.hessian(x, method="colored"), rosen_hess(x), rtol=1e-12, atol=1e-10)


def test_scalar_input_and_zero_hessian():
    assert fad.hessian(lambda t: t ** 3)(2.0) == pytest.approx(12.0, rel=1e-14)
    assert fad.hessian(lambda t: t ** 3, method="colored")(2.0) == pytest.approx(12.0, rel=1e-14)
    lin = lambda x: fad.sum(3.0 * x) + x[0]                 # noqa: E731
    x = point()
    for method in ("auto", "colored"):
        H = fad.hessian(lin, method=method)(x)
        assert H.shape == (N, N) and not H.any()


def test_matrix_shaped_input():
    X = point(N).reshape(10, 12)
    f = lambda X: rosen_vec(X.reshape(-1))                  # noqa: E731
    H = fad.hessian(f)(X)
    assert H.shape == (10, 12, 10, 12)
    close(H.reshape(N, N), rosen_hess(X.reshape(-1)), rtol=1e-12, atol=1e-10)
    close(H, fad.hessian(f, method="dense")(X), rtol=1e-12, atol=1e-12)


def tree_f(p):
    z = fad.concatenate([p["a"], p["b"]])
    return rosen_vec(z) + p["c"] * p["a"][0] ** 2


def test_pytree_input():
    p = {"a": point(60, 5), "b": point(60, 6), "c": 0.7}
    for method in ("auto", "colored"):
        H = fad.hessian(tree_f, method=method)(p)
        Hd = fad.hessian(tree_f, method="dense")(p)
        for r in ("a", "b", "c"):
            for c in ("a", "b", "c"):
                close(H[r][c], Hd[r][c], rtol=1e-12, atol=1e-12)
    z = np.concatenate([p["a"], p["b"]])
    ref = rosen_hess(z)
    ref[0, 0] += 2 * p["c"]
    H = fad.hessian(tree_f)(p)
    close(H["a"]["b"], ref[:60, 60:], rtol=1e-12, atol=1e-10)
    close(H["a"]["a"], ref[:60, :60], rtol=1e-12, atol=1e-10)
    close(H["c"]["a"], np.eye(1, 60)[0] * 2 * p["a"][0], rtol=1e-12, atol=1e-12)
    assert np.shape(H["c"]["c"]) == ()
    tape = fad.record(tree_f, p)
    tape.hessian(p)
    assert chosen(tape) == "colored"


def test_replayed_tape_keeps_its_plan_at_new_points():
    tape = fad.record(rosen_products, point(seed=7))
    for seed in range(8, 12):
        x = point(seed=seed)
        close(tape.hessian(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
        close(tape.hessian(x), tape.hessian(x, method="dense"), rtol=1e-12, atol=1e-12)
    assert chosen(tape) == "colored"


def branchy(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (x[i] * x[i + 1] if x[i] > 0 else x[i] ** 3)
    return s


def test_branch_change_on_replay_raises():
    x = np.abs(point(400, seed=2)) + 0.1
    tape = fad.record(branchy, x)
    H = tape.hessian(x)
    close(H, tape.hessian(x, method="dense"), rtol=1e-12, atol=1e-12)
    assert chosen(tape) == "colored"
    y = x.copy()
    y[3] = -0.5
    for method in ("auto", "colored", "dense"):
        with pytest.raises(BranchChangedError):
            tape.hessian(y, method=method)
    # a linear tape (no colors, no sweep) still checks the point
    lin = fad.record(lambda x: fad.sum(x) if x[0] > 0 else -fad.sum(x), x)
    assert not lin.hessian(x, method="colored").any()
    with pytest.raises(BranchChangedError):
        lin.hessian(-x, method="colored")
    # the tape still works afterwards
    close(tape.hessian(x), H, rtol=1e-12, atol=1e-12)


def test_colored_path_needs_no_scipy(monkeypatch):
    def no_scipy():
        raise ImportError("no scipy here")
    monkeypatch.setattr(fsparse, "_scipy_sparse", no_scipy)
    x = point()
    close(fad.hessian(rosen_products, method="colored")(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    tape = fad.record(banded, x)
    close(tape.hessian(x), fad.hessian(banded, method="dense")(x), rtol=1e-12, atol=1e-12)
    assert chosen(tape) == "colored"


def test_large_sparse_hessian_uses_three_colors():
    x = point(2000, 9)
    tape = fad.record(rosen_products, x)
    close(tape.hessian(x), rosen_hess(x), rtol=1e-12, atol=1e-9)
    assert tape.sparse_cache["hessian_auto"].n_colors == 3


@pytest.mark.parametrize("method", ["sparse", "Dense", None, 3, ""])
def test_bad_method(method):
    with pytest.raises(ValueError, match="method must be one of"):
        fad.hessian(rosen_products, method=method)
    tape = fad.record(rosen_products, point())
    with pytest.raises(ValueError, match=r"fastad.Tape.hessian: method must be one of .*'colored'"):
        tape.hessian(point(), method=method)


@pytest.mark.parametrize("method", ["auto", "dense", "colored"])
def test_non_scalar_output_says_so(method):
    tape = fad.record(lambda x: x * x, point())
    with pytest.raises(ValueError, match="Hessians need a scalar output"):
        tape.hessian(point(), method=method)


def test_hessian_function_remembers_a_dense_hessian(monkeypatch):
    fsparse.forget_plans()          # (earlier tests' structures are kept there)
    calls = []
    real = fsparse._propagate
    monkeypatch.setattr(fsparse, "_propagate",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    V = np.random.default_rng(5).standard_normal((120, 120)) / 11.0
    hd = fad.hessian(lambda x: fad.sum(fad.tanh(V @ x)))     # large enough to search
    hs = fad.hessian(rosen_products)
    for seed in range(3):
        x, y = point(seed=seed), point(120, seed)
        t = np.tanh(V @ y)
        close(hd(y), V.T @ np.diag(-2 * t * (1 - t * t)) @ V, rtol=1e-10, atol=1e-12)
        close(hs(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    # the dense one searched once; the sparse one once too: the later tapes
    # have the same structure and reuse the plan
    assert len(calls) == 1 + 1
    # another structure (another n, another branch) finds its own pattern
    x = point(150, 1)
    close(hs(x), rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert len(calls) == 3
    br = fad.hessian(branchy)
    y = np.abs(point(400, seed=2)) + 0.1
    z = y.copy()
    z[3] = -0.5
    for p in (y, z, y):
        close(br(p), fad.hessian(branchy, method="dense")(p), rtol=1e-12, atol=1e-12)
    # y's structure, met again after z's, is found among the recent plans
    assert len(calls) == 5
