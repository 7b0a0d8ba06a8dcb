"""Sparse Jacobians and Hessians: patterns, colorings, compressed sweeps (fastad.sparse),
and the folds that let repeated forward Jacobians skip what the seeds decide."""
import sys
import threading

import numpy as np
import pytest

import fastad as fad
from conftest import dense, fd_jacobian, rosen_loop

sp = pytest.importorskip("scipy.sparse")
from scipy.optimize import rosen_hess  # noqa: E402

from fastad.sparse import JacobianPlan  # noqa: E402


# ---------------------------------------------------------------- test functions

def bratu_loop(x, lam=1.0):
    """Bratu residual, scalar loop: tridiagonal Jacobian."""
    n = len(x)
    h2 = 1.0 / (n + 1) ** 2
    out = []
    for i in range(n):
        left = x[i - 1] if i > 0 else 0.0
        right = x[i + 1] if i < n - 1 else 0.0
        out.append(left - 2 * x[i] + right + h2 * lam * fad.exp(x[i]))
    return fad.stack(out)


def bratu_arrays(x, lam=1.0):
    """The same residual with array operations."""
    h2 = 1.0 / (len(x) + 1) ** 2
    xp = fad.concatenate([np.zeros(1), x, np.zeros(1)])
    return xp[:-2] - 2 * x + xp[2:] + h2 * lam * np.exp(x)


def bratu_numpy(x, lam=1.0):
    h2 = 1.0 / (len(x) + 1) ** 2
    xp = np.concatenate([[0.0], x, [0.0]])
    return xp[:-2] - 2 * x + xp[2:] + h2 * lam * np.exp(x)


def bratu_jacobian(x, lam=1.0):
    n = len(x)
    h2 = 1.0 / (n + 1) ** 2
    J = np.diag(-2.0 + h2 * lam * np.exp(x))
    J += np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    return J


def laplace2d(x, m=6):
    """A five-point Laplacian on an m x m grid with a cubic nonlinearity."""
    u = fad.reshape(x, (m, m))
    up = fad.concatenate([np.zeros((1, m)), u, np.zeros((1, m))], axis=0)
    up = fad.concatenate([np.zeros((m + 2, 1)), up, np.zeros((m + 2, 1))], axis=1)
    r = up[:-2, 1:-1] + up[2:, 1:-1] + up[1:-1, :-2] + up[1:-1, 2:] - 4 * u + u ** 3
    return fad.reshape(r, (m * m,))


def arrowhead(x):
    """Dense first row and column plus the diagonal."""
    head = fad.reshape(fad.sum(x * x), (1,))
    return fad.concatenate([head, x[0] * x[1:] + np.sin(x[1:])])


def rosen_arrays(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


# ---------------------------------------------------------------- patterns

@pytest.mark.parametrize("f", [bratu_loop, bratu_arrays], ids=["loop", "arrays"])
def test_bratu_pattern_is_exactly_tridiagonal(f):
    n = 9
    P = fad.jacobian_sparsity(f)(np.linspace(0.1, 0.9, n))
    assert P.dtype == bool and P.shape == (n, n)
    expected = (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1)
    np.testing.assert_array_equal(P.toarray(), expected)


def test_patterns_are_structural_not_values():
    # x * y at y = 0 has a zero partial in x, but the entry is in the pattern
    def f(x):
        return fad.stack([x[0] * x[1], fad.sign(x[2]) + x[1]])
    P = fad.jacobian_sparsity(f)(np.array([2.0, 0.0, 1.0])).toarray()
    np.testing.assert_array_equal(P, [[True, True, False], [False, True, False]])


def test_hessian_pattern_of_rosenbrock_is_tridiagonal():
    n = 8
    for f in (rosen_loop, rosen_arrays):
        P = fad.hessian_sparsity(f)(np.full(n, 0.5)).toarray()
        expected = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1
        np.testing.assert_array_equal(P, expected, err_msg=f.__name__)


def test_hessian_pattern_from_second_derivative_flags():
    # linear terms add nothing, x0*x1 couples 0 and 1, exp(x2) is diagonal,
    # x3 appears only linearly
    def f(x):
        return 3 * x[0] + x[0] * x[1] + fad.exp(x[2]) + 2 * x[3] - x[1]
    P = fad.hessian_sparsity(f)(np.ones(4)).toarray()
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 1] = expected[1, 0] = expected[2, 2] = True
    np.testing.assert_array_equal(P, expected)


def test_matmul_pattern():
    A = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])

    def f(x):
        return A @ fad.tanh(x)         # a constant matrix: its dense structure counts
    P = fad.jacobian_sparsity(f)(np.ones(3)).toarray()
    assert P.all()

    def g(x):
        W = fad.reshape(x[:4], (2, 2))
        return fad.reshape(W @ W, (4,))
    P = fad.jacobian_sparsity(g)(np.arange(1.0, 5.0)).toarray()
    J = fd_jacobian(lambda v: (v[:4].reshape(2, 2) @ v[:4].reshape(2, 2)).reshape(-1),
                    np.arange(1.0, 5.0), relative=False)
    assert (P | (J == 0)).all()             # every nonzero is in the pattern


# ---------------------------------------------------------------- sparse == dense

@pytest.mark.parametrize("mode", ["auto", "fwd", "rev", "bidirectional"])
@pytest.mark.parametrize("f", [bratu_loop, bratu_arrays, laplace2d, arrowhead],
                         ids=["bratu-loop", "bratu-arrays", "laplace2d", "arrowhead"])
def test_sparse_jacobian_equals_dense(f, mode):
    rng = np.random.default_rng(1)
    n = 36
    x = rng.uniform(0.1, 1.0, n)
    J = fad.sparse_jacobian(f, mode=mode)(x)
    Jd = fad.jacobian(f)(x)
    assert J.shape == Jd.shape
    np.testing.assert_allclose(dense(J), Jd, rtol=1e-13, atol=1e-15)
    # every stored entry is in the pattern and every nonzero is stored
    P = fad.jacobian_sparsity(f)(x)
    assert not (dense(J) != 0)[~P.toarray()].any()
    assert J.nnz == P.nnz


def test_bratu_jacobian_against_formula():
    x = np.linspace(0.0, 1.0, 12)
    np.testing.assert_allclose(dense(fad.sparse_jacobian(bratu_loop)(x)), bratu_jacobian(x),
                               rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(fd_jacobian(bratu_numpy, x, relative=False), bratu_jacobian(x),
                               atol=1e-7)


@pytest.mark.parametrize("f", [rosen_loop, rosen_arrays], ids=["loop", "arrays"])
def test_sparse_hessian_equals_rosen_hess(f):
    x = np.linspace(-1.2, 1.3, 20)
    H = fad.sparse_hessian(f)(x)
    np.testing.assert_allclose(dense(H), rosen_hess(x), rtol=1e-13, atol=1e-12)


def test_sparse_hessian_mixed_function():
    def f(x):
        return fad.sum(fad.exp(x[:-1] * x[1:])) + fad.sin(x[0]) * x[-1] + fad.sum(x ** 3)
    x = np.linspace(0.1, 0.8, 7)
    np.testing.assert_allclose(dense(fad.sparse_hessian(f)(x)), fad.hessian(f)(x),
                               rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- colors and sweeps

def test_color_counts_and_sweeps():
    n = 60
    x = np.linspace(0.1, 1.0, n)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    assert sum(plan.sweeps) == 3

    m = 12      # greedy colorings of very small grids (6 x 6, 8 x 8) need 6
    tape = fad.record(lambda v: laplace2d(v, m), np.full(m * m, 0.3))
    tape.sparse_jacobian(np.full(m * m, 0.3))
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    assert sum(plan.sweeps) <= 5

    tape = fad.record(arrowhead, x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    assert plan.mode == "bidirectional" and sum(plan.sweeps) <= 3

    tape = fad.record(rosen_loop, x)
    tape.sparse_hessian(x)
    assert tape.sparse_cache["hessian_plan"].n_colors == 3


def test_color_jacobian_on_user_patterns():
    n = 50
    tri = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1]).tocsr()
    c = fad.color_jacobian(tri)
    assert c.max() + 1 == 3
    # structurally orthogonal: no two columns of one color share a row
    for i in range(n):
        cols = tri.indices[tri.indptr[i]:tri.indptr[i + 1]]
        assert len(set(c[cols])) == len(cols)
    r = fad.color_jacobian(tri.toarray(), partition="row")
    assert r.max() + 1 == 3
    arrow = np.eye(n, dtype=bool)
    arrow[0, :] = arrow[:, 0] = True
    cc, rc = fad.color_jacobian(arrow, partition="bidirectional")
    assert (cc.max() + 1) + (rc.max() + 1) <= 3
    s = fad.color_hessian(tri)
    assert s.max() + 1 == 3
    with pytest.raises(ValueError, match="partition"):
        fad.color_jacobian(tri, partition="diagonal")
    with pytest.raises(ValueError, match="square"):
        fad.color_hessian(np.ones((3, 4), dtype=bool))


def test_tape_repeats_at_new_points_reuse_the_plan():
    n = 30
    x = np.linspace(0.1, 1.0, n)
    tape = fad.record(bratu_arrays, x)
    J0 = tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    for shift in (0.3, -0.2, 1.0):
        J = tape.sparse_jacobian(x + shift)
        assert tape.sparse_cache[("jacobian_plan", "auto")] is plan
        np.testing.assert_allclose(dense(J), bratu_jacobian(x + shift), rtol=1e-13, atol=1e-14)
    assert J0.nnz == 3 * n - 2
    tape = fad.record(rosen_loop, x)
    for shift in (0.0, 0.5):
        np.testing.assert_allclose(dense(tape.sparse_hessian(x + shift)), rosen_hess(x + shift),
                                   rtol=1e-13, atol=1e-11)


def test_replay_on_another_branch_raises():
    def f(x):
        return fad.stack([x[0] * x[1] if x[0] > 0 else -x[1], x[1] ** 2])
    tape = fad.record(f, np.array([1.0, 2.0]))
    tape.sparse_jacobian(np.array([1.0, 2.0]))
    with pytest.raises(fad.BranchChangedError):
        tape.sparse_jacobian(np.array([-1.0, 2.0]))
    # and the tape still works where the branch holds
    np.testing.assert_allclose(dense(tape.sparse_jacobian(np.array([3.0, 2.0]))),
                               [[2.0, 3.0], [0.0, 4.0]])


def test_multi_argument_shapes_and_matrix_inputs():
    def f(X):
        return fad.reshape(X[:, 1:] * X[:, :-1], (-1,))
    X = np.arange(1.0, 13.0).reshape(3, 4)
    J = fad.sparse_jacobian(f)(X)
    np.testing.assert_allclose(dense(J), fad.jacobian(f)(X).reshape(9, 12))


# ---------------------------------------------------------------- errors

def test_errors():
    with pytest.raises(ValueError, match="mode"):
        fad.sparse_jacobian(bratu_loop, mode="sideways")
    with pytest.raises(ValueError, match="scalar"):
        fad.sparse_hessian(bratu_loop)(np.ones(4))
    with pytest.raises(ValueError, match="scalar"):
        fad.hessian_sparsity(bratu_loop)(np.ones(4))
    tape = fad.record(bratu_loop, np.ones(4))
    with pytest.raises(ValueError, match="mode"):
        tape.sparse_jacobian(np.ones(4), mode="both")
    # the library is fine afterwards
    np.testing.assert_allclose(dense(tape.sparse_jacobian(np.ones(4))), bratu_jacobian(np.ones(4)))


# ---------------------------------------------------------------- minimize with a sparse Hessian

@pytest.mark.parametrize("hessian", ["auto", "hvp", "sparse"])
def test_minimize_hessian_modes(hessian):
    x0 = np.tile([-1.2, 1.0], 40)
    r = fad.minimize(rosen_loop, x0, hessian=hessian)
    assert r.success, r.message
    np.testing.assert_allclose(r.x, 1.0, atol=1e-6)
    if hessian == "sparse" or hessian == "auto":
        assert r.nhess >= 1
    else:
        assert r.nhess == 0
    with pytest.raises(ValueError, match="hessian"):
        fad.minimize(rosen_loop, x0, hessian="dense")


# ---------------------------------------------------------------- primitives

@fad.primitive
def soft(x):
    """softplus, elementwise, as a primitive"""
    return np.log1p(np.exp(x))


@soft.defvjp
def _(ybar, y, x):
    return ybar / (1 + np.exp(-x))


@soft.defjvp
def _(xdot, y, x):
    return xdot / (1 + np.exp(-x))


@fad.primitive
def soft_declared(x):
    return np.log1p(np.exp(x))


soft_declared.defvjp(lambda ybar, y, x: ybar / (1 + np.exp(-x)))
soft_declared.defjvp(lambda xdot, y, x: xdot / (1 + np.exp(-x)))
soft_declared.defsparsity(lambda shape: sp.identity(int(np.prod(shape)), format="csr"))


def test_primitive_patterns_dense_unless_declared():
    x = np.linspace(-1.0, 1.0, 6)
    P = fad.jacobian_sparsity(lambda v: soft(v) * 2.0)(x).toarray()
    assert P.all()                                   # no pattern declared: dense
    P = fad.jacobian_sparsity(lambda v: soft_declared(v) * 2.0)(x).toarray()
    np.testing.assert_array_equal(P, np.eye(6, dtype=bool))
    H = fad.hessian_sparsity(lambda v: fad.sum(soft_declared(v)))(x).toarray()
    np.testing.assert_array_equal(H, np.eye(6, dtype=bool))
    J = fad.sparse_jacobian(lambda v: soft_declared(v) + v[::-1])(x)
    np.testing.assert_allclose(dense(J), np.diag(1 / (1 + np.exp(-x))) + np.eye(6)[::-1],
                               rtol=1e-14)
    tape = fad.record(lambda v: soft_declared(v) * v, x)
    tape.sparse_jacobian(x)
    assert sum(tape.sparse_cache[("jacobian_plan", "auto")].sweeps) == 1


def test_primitive_pattern_errors_name_the_primitive():
    @fad.primitive
    def wrong(x):
        return 2 * x
    wrong.defvjp(lambda ybar, y, x: 2 * ybar)
    wrong.defsparsity(lambda shape: np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="'wrong'.*shape"):
        fad.jacobian_sparsity(lambda v: wrong(v))(np.ones(3))
    with pytest.raises(TypeError, match="callable"):
        wrong.defsparsity(3)
    assert fad.jacobian_sparsity(lambda v: v * 2)(np.ones(3)).nnz == 3


# ---------------------------------------------------------------- replays that want tangents only

def _mixed(x):
    a = 2.0 * x[0] - x[1] + 3.0          # linear chain feeding a nonlinear op
    b = fad.exp(a) * (x[2] - 1.0)
    c = fad.maximum(x[0] + 1.0, x[1] * 0.5)   # value-dependent partials
    d = (x[3] + x[0]) / 4.0
    e = -d + fad.sign(x[1]) + 7.0
    s = x[2] - x[3] if x[0] + x[3] > 0 else x[3] - x[2]   # a comparison on a linear value
    return fad.stack([b, c, d * e, s, a])


def test_tape_jvp_and_sparse_jacobian_at_new_points_skip_only_unread_values():
    x0 = np.array([0.3, -0.4, 1.2, 0.5])
    tape = fad.record(_mixed, x0)
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = x0 + rng.uniform(-0.2, 0.2, 4)
        J = fad.jacobian(_mixed)(x)
        V = rng.normal(size=(3, 4))
        np.testing.assert_allclose(tape.jvp(x, V), V @ J.T, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(tape.jvp(x, V[0]), J @ V[0], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(dense(tape.sparse_jacobian(x, mode="fwd")), J,
                                   rtol=1e-13, atol=1e-14)
    with pytest.raises(fad.BranchChangedError):
        tape.jvp(np.array([-1.0, -0.4, 1.2, 0.5]), np.ones(4))   # x0 + x3 < 0
    np.testing.assert_allclose(tape(x0), _mixed_values(x0))


def _mixed_values(x):
    a = 2.0 * x[0] - x[1] + 3.0
    d = (x[3] + x[0]) / 4.0
    return np.array([np.exp(a) * (x[2] - 1.0), max(x[0] + 1.0, x[1] * 0.5),
                     d * (-d + np.sign(x[1]) + 7.0), x[2] - x[3], a])


def test_pickled_tape_and_threads():
    import pickle
    import threading
    x = np.linspace(0.1, 1.0, 40)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    copy = pickle.loads(pickle.dumps(tape))          # the plan is not pickled: found again
    np.testing.assert_allclose(dense(copy.sparse_jacobian(x + 0.2)), bratu_jacobian(x + 0.2),
                               rtol=1e-13, atol=1e-14)
    results, errors = {}, []

    def work(i):
        try:
            results[i] = dense(tape.sparse_jacobian(x + 0.01 * i))
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_allclose(results[i], bratu_jacobian(x + 0.01 * i), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------- folds of repeated Jacobians
#
# Repeated forward sparse Jacobians of array code keep the tangents of blocks
# the seeds alone decide (fastad._blocks.TangentFold; scalar tapes make a
# ScalarFold): the results must equal a full sweep and the dense Jacobian at
# every new point.  bratu_arrays and bratu_loop (above) are the blocks and
# the scalar-node versions of one residual.

BANDED = np.random.default_rng(5).normal(size=(9, 9)) \
    * (np.abs(np.arange(9)[:, None] - np.arange(9)) < 2)


def linear_only(x):                       # every block constant: nothing re-swept
    xp = fad.concatenate([np.ones(1), x, np.ones(1)])
    return 3.0 * (xp[:-2] - xp[2:]) / 2.0 + x


def nonlinear_first(x):                   # the varying block feeds linear ones
    y = np.sin(x)
    return (y[1:] - y[:-1]) * 4.0 - x[1:]


def banded_matmul(x):                     # constant matrix @ active vector
    return BANDED @ x + x * x


def broadcast_mix(x):
    m = fad.reshape(x, (3, 3))
    return fad.reshape(m * np.arange(1.0, 4.0) + np.tanh(m) - m.sum(axis=0), (9,))


def gathered(x):
    return x[::2] * x[1::2][:4].sum() + x[np.array([8, 0, 4, 2, 6])]


def with_comparison(x):                   # a recorded branch: re-checked on replay
    y = fad.where(x > 0, x * x, -x)
    return y[1:] + 2 * y[:-1]


def with_scalars(x):                      # scalar nodes and blocks: no fold
    s = x[0] * x[1]
    return x * 2.0 + s


def loop_mixed(x):                        # fixed, varying and branching nodes
    out = []
    for i in range(len(x) - 1):
        a = 3.0 * x[i] - x[i + 1] / 2.0
        b = fad.sin(a) * x[i] if x[i] > 0.5 else a - 1.0
        out.append(b + 2 * a + fad.sqrt(x[i + 1]))
    out.append(x[0] * 1.0)                # linear in an input: fixed
    return fad.stack(out)


def chains_both_sides(x):                 # two chains meet in one add
    return np.exp(x[:-1]) * 2.0 + 3.0 * np.sin(np.tanh(x[1:]))


def exp_of_scaled(x):                     # the chain ends at a kept block: tangents 3
    return np.exp(3.0 * x) + x


def scaled_by_array(x):                   # a constant array partial on a changing chain
    return np.exp(x) * np.arange(1.0, len(x) + 1.0) + 2.0 * x


def chain_read_twice(x):                  # sin(x) is read by two blocks: kept
    s = np.sin(x)
    return fad.concatenate([np.exp(s) * 2.0 + s, s * s])


def chain_into_output(x):                 # an intermediate is also an output
    e = np.exp(x) * 0.5
    return fad.concatenate([e, -np.sqrt(e) + x])


def chain_with_zero_partials(x):          # 0 * sqrt(x) at x = 0: an exact zero
    return 0.0 * np.sqrt(x * x) + np.log1p(x * x) * x


def identity_and_exp(x):                  # outputs that are input slots
    return fad.concatenate([x, np.exp(x)])


def constant_rows(x):                     # outputs that are constants
    return fad.concatenate([np.ones(2), x * 2.0])


def chain_to_a_reshaped_output(x):        # every block varies; the chain still folds
    return fad.reshape(np.sin(np.exp(x) * 3.0), (3, 3))


def sum_output(x):
    return fad.reshape(fad.sum(np.exp(x)), (1,))


def matmul_both_active(x):
    m = fad.reshape(x, (3, 3))
    return fad.reshape(m @ m, (9,))


def loop_linear(x):                       # no node varies: nothing swept
    return fad.stack([x[i] - 2 * x[i - 1] + 1.0 for i in range(1, len(x))])


def loop_chains_both_sides(x):            # two changing chains into one scalar add
    return fad.stack([fad.exp(x[i]) + fad.sin(x[i] * 2.0) for i in range(len(x))])


def loop_shared_lanes(x):                 # a chain from a node read in every lane
    s = x[0] + x[1] + x[2]
    return fad.stack([fad.exp(s) * 0.5 + fad.sin(x[i]) for i in range(len(x))])


def long_chain(x):                        # more partials than FixedGather multiplies in
    v = x
    for _ in range(9):
        v = np.sin(v)
    return v + x


def chain_through_a_view(x):              # sin's output read whole but as (1, n)
    return np.sin(x)[None] * 2.0


def chain_through_a_reshape(x):           # ... or as (n, 1)
    return np.sin(x).reshape(len(x), 1) * 2.0


FOLD_CASES = [bratu_arrays, linear_only, nonlinear_first, banded_matmul, broadcast_mix, gathered,
              with_comparison, with_scalars, bratu_loop, loop_mixed, loop_linear,
              chains_both_sides, exp_of_scaled, scaled_by_array, chain_read_twice,
              chain_into_output, chain_with_zero_partials,
              identity_and_exp, constant_rows, chain_to_a_reshaped_output, sum_output,
              matmul_both_active, loop_chains_both_sides, loop_shared_lanes, long_chain,
              chain_through_a_view, chain_through_a_reshape]


def _full(tape, plan, x):
    f, _ = tape._sparse_sweeps(x, plan.col_seeds, plan.fwd_src, None, None)
    return f


def _folded(f, x, mode="fwd"):
    """f recorded at x, and its plan after the second call (which makes the fold)."""
    tape = fad.record(f, x)
    tape.sparse_jacobian(x, mode=mode)
    tape.sparse_jacobian(x, mode=mode)
    return tape, tape.sparse_cache[("jacobian_plan", mode)]


@pytest.mark.parametrize("f", FOLD_CASES, ids=lambda f: f.__name__)
def test_repeated_calls_equal_a_full_sweep_and_the_dense_jacobian(f):
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0.2, 1.0, 9)
    if f is loop_mixed:
        x0 = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4])
    tape = fad.record(f, x0)
    J0 = tape.sparse_jacobian(x0, mode="fwd")
    np.testing.assert_allclose(J0.toarray(), fad.jacobian(f)(x0).reshape(J0.shape), rtol=1e-13,
                               atol=1e-15)
    plan = tape.sparse_cache[("jacobian_plan", "fwd")]
    for _ in range(4):
        x = rng.uniform(0.2, 1.0, 9)
        if f is loop_mixed:                # the same branches
            x = x0 + rng.uniform(-0.04, 0.04, 9)
        J = tape.sparse_jacobian(x, mode="fwd")
        # chains multiply partials first: equal up to rounding
        np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15, atol=0)
        np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x).reshape(J.shape), rtol=1e-13,
                                   atol=1e-15)


def test_the_fold_is_made_at_the_second_call_and_skips_what_the_seeds_decide():
    x = np.linspace(0.1, 1.0, 50)
    tape = fad.record(bratu_arrays, x)
    tape.sparse_jacobian(x)
    assert tape.sparse_cache[("jacobian_plan", "auto")]._folded is None
    tape.sparse_jacobian(x)
    fold = tape.sparse_cache[("jacobian_plan", "auto")]._folded
    names = [b.name for b in tape.blocks]
    assert names == ["mul", "sub", "add", "exp", "mul", "add"]
    assert fold.run_forward == [3]            # only exp's value is replayed
    assert fold.run_tangent == [3, 4, 5]      # the blocks after exp
    plan = JacobianPlan(fad.record(with_scalars, x[:9]), "fwd")
    assert plan._fold(fad.record(with_scalars, x[:9]), x[:9]) == (None, None)
    assert plan._fold(fad.record(with_scalars, x[:9]), x[:9]) == (None, None)


def test_unary_chains_are_not_swept_but_shared_or_output_blocks_are():
    x = np.linspace(0.1, 1.0, 20)

    def fold_of(f, x=x):
        tape, plan = _folded(f, x)
        return tape, plan._folded

    tape, fold = fold_of(bratu_arrays)
    assert fold.eliminated == {3, 4}              # exp and the scaling
    assert fold.chains == {5: [[], [4, 3]]}       # the last add reads through both
    assert fold.fused[0] == 5                     # ... straight at the nonzeros
    assert fold.fixed is not None                 # ... and its operands' tangents are kept
    tape, fold = fold_of(chain_into_output)
    assert fold.fused is None and fold.fixed is None     # two blocks make the output
    for f in (chains_both_sides, exp_of_scaled, scaled_by_array):
        assert fold_of(f)[1].fixed is not None
    assert fold_of(banded_matmul, x[:9])[1].fixed is not None    # x * x is a square: a chain
    for f in (nonlinear_first, gathered, with_comparison):    # a read tangent changes
        fold = fold_of(f, x[:9])[1]
        assert fold.fused is not None and fold.fixed is None
    tape, fold = fold_of(chains_both_sides)
    names = {bi: tape.blocks[bi].name for bi in fold.eliminated}
    assert sorted(names.values()) == ["exp", "mul", "mul", "sin", "tanh"]
    tape, fold = fold_of(chain_read_twice)
    assert "sin" not in {tape.blocks[bi].name for bi in fold.eliminated}
    tape, fold = fold_of(chain_into_output)
    assert not any(tape.blocks[bi].name == "mul" and tape.blocks[bi].shape == (20,)
                   and bi < 3 for bi in fold.eliminated)     # e is an output


def test_chains_keep_strong_zeros_at_nonfinite_partials():
    x = np.array([0.0, 0.5, 0.0, 1.5, 2.0, 0.0, 3.0, 0.25, 1.0])
    tape, plan = _folded(chain_with_zero_partials, x + 1.0)
    J = tape.sparse_jacobian(x, mode="fwd")       # sqrt'(0) = inf, times 0
    assert np.isfinite(J.data).all()
    np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15)
    np.testing.assert_allclose(J.diagonal(), np.log1p(x * x) + 2 * x * x / (1 + x * x),
                               rtol=1e-13)
    # the same through a FixedGather: 0 * sqrt'(0) is 0, sqrt'(0) alone is inf
    with np.errstate(divide="ignore"):
        inf_at_0 = 1.0 / np.sqrt(x) + 1.0
    for f, want in ((lambda x: 0.0 * np.sqrt(x) + x, np.ones_like(x)),
                    (lambda x: np.sqrt(x) * 2.0 + x, inf_at_0)):
        tape, plan = _folded(f, x + 1.0)
        assert plan._folded.fixed is not None
        with np.errstate(divide="ignore"):
            J = tape.sparse_jacobian(x, mode="fwd")
            np.testing.assert_array_equal(J.diagonal(), want)
            np.testing.assert_array_equal(J.data, _full(tape, plan, x))      # one answer
            np.testing.assert_array_equal(np.diag(fad.jacobian(f, mode="fwd")(x)), want)


def test_the_scalar_fold_sweeps_only_the_nodes_after_exp():
    x = np.linspace(0.1, 1.0, 50)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    tape.sparse_jacobian(x)
    fold = tape.sparse_cache[("jacobian_plan", "auto")]._folded
    # per element exp, h2 * exp and the last add push lanes; only exp (and
    # the input it reads) needs a value
    assert fold.counts == (3 * 50, 50)
    lin = fad.record(loop_linear, x)
    lin.sparse_jacobian(x)
    lin.sparse_jacobian(x)
    assert lin.sparse_cache[("jacobian_plan", "auto")]._folded.counts == (0, 0)


def loop_branch_chain(x):                 # a comparison and unary chains: nonzeros read directly
    out = [x[0] * 3.0]
    for i in range(1, len(x)):
        c = fad.exp(x[i]) * 0.5 if x[i] > 0.5 else fad.sin(x[i]) - 1.0
        out.append(x[i - 1] - 2.0 * x[i] + c)
    return fad.stack(out)


def test_scalar_tapes_read_the_nonzeros_without_sweeping_lanes_when_they_can():
    x0 = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4])
    for f, fixed in ((bratu_loop, True), (loop_linear, True), (loop_branch_chain, True),
                     (loop_mixed, False)):          # loop_mixed: sin(a) * x[i], two operands
        tape, plan = _folded(f, x0)
        assert (plan._folded.fixed is not None) == fixed, f.__name__
        x = x0 + 0.01
        J = tape.sparse_jacobian(x, mode="fwd")
        np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15, atol=0)
        np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x), rtol=1e-13, atol=1e-15)
    bad = x0.copy()
    bad[1] = 0.6                                    # exp instead of sin at x[1]
    tape_b, _ = _folded(loop_branch_chain, x0)
    with pytest.raises(fad.BranchChangedError):
        tape_b.sparse_jacobian(bad, mode="fwd")
    J = tape_b.sparse_jacobian(x0 - 0.01, mode="fwd")
    np.testing.assert_allclose(J.toarray(), fad.jacobian(loop_branch_chain)(x0 - 0.01), rtol=1e-13)
    # strong zeros along a chain: 0 * sqrt'(0) is 0, sqrt'(0) alone is inf
    z = np.array([0.0, 0.5, 0.0, 2.0])
    for f, want in ((lambda x: fad.stack([x[i] + 0.0 * fad.sqrt(x[i]) for i in range(4)]),
                     np.ones(4)),
                    (lambda x: fad.stack([fad.sqrt(x[i]) * 2.0 + x[i] for i in range(4)]),
                     [np.inf, 1 / np.sqrt(0.5) + 1, np.inf, 1 / np.sqrt(2.0) + 1])):
        tape, plan = _folded(f, z + 1.0)
        assert plan._folded.fixed is not None
        np.testing.assert_allclose(tape.sparse_jacobian(z, mode="fwd").diagonal(), want,
                                   rtol=1e-15)
    # cos'(sqrt(0)) = 0 against sqrt'(0) = inf, both changing partials
    f = lambda x: fad.stack([fad.cos(fad.sqrt(x[i])) + x[i] for i in range(4)])   # noqa: E731
    tape, plan = _folded(f, z + 1.0)
    assert plan._folded.fixed is not None
    J = tape.sparse_jacobian(z, mode="fwd")
    np.testing.assert_array_equal(J.data, _full(tape, plan, z))
    assert J.diagonal()[0] == 1.0


def test_direct_reads_multiply_in_the_sweeps_order_with_its_strong_zeros():
    """The fused scalar path multiplies a chain's partials innermost first,
    as the sweep does, so extreme magnitudes over- and underflow alike, and
    a zero partial passes nothing even under a constant inf."""
    cases = [
        (lambda x: fad.stack([(fad.exp(x[i]) * 0.0) * np.inf + x[i] for i in range(3)]),
         np.array([0.5, 1.0, 2.0])),
        (lambda x: fad.stack([fad.exp(x[i] * 1e200) * 1e200 + x[i] for i in range(3)]),
         np.array([-6.9e-198, 1e-201, -5e-198])),
        (lambda x: fad.stack([fad.sqrt(fad.exp(x[i]) * 1e-200) + x[i] for i in range(3)]),
         np.array([-460.0, -1.0, 0.5])),
        (lambda x: np.sqrt(np.exp(x) * 1e-200) + x, np.array([-460.0, -1.0, 0.5])),   # blocks
        (lambda x: np.exp(x * 1e200) * 1e200 + x, np.array([-6.9e-198, 1e-201, -5e-198])),
    ]
    for f, x in cases:
        tape = fad.record(f, x)
        for _ in range(2):
            tape.sparse_jacobian(x, mode="fwd")
        plan = tape.sparse_cache[("jacobian_plan", "fwd")]
        assert plan._folded.fixed is not None
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(tape.sparse_jacobian(x, mode="fwd").data,
                                          _full(tape, plan, x))
            np.testing.assert_array_equal(tape.sparse_jacobian(x, mode="fwd").toarray(),
                                          fad.jacobian(f, mode="fwd")(x))


def test_a_fused_scalar_fold_answers_other_gathers_by_sweeping():
    x = np.linspace(0.1, 1.0, 12)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    fold = plan._folded
    assert fold.fixed is not None
    other = plan.fwd_src[::-1].copy()               # not the gather it was fused for
    np.testing.assert_array_equal(fold.sweep(tape, x + 0.1, other),
                                  _full(tape, plan, x + 0.1)[::-1])


@pytest.mark.parametrize("f, x, at, bad", [
    (loop_mixed, np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4]), 1, 0.6),
    (with_comparison, np.linspace(0.1, 0.9, 9), 3, -0.5)], ids=["scalars", "blocks"])
def test_a_changed_branch_raises_and_the_tape_stays_usable(f, x, at, bad):
    tape = fad.record(f, x)
    tape.sparse_jacobian(x, mode="fwd")
    y = x.copy()
    y[at] = bad
    with pytest.raises(fad.BranchChangedError):
        tape.sparse_jacobian(y, mode="fwd")
    J = tape.sparse_jacobian(x + 0.01, mode="fwd")
    np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x + 0.01), rtol=1e-13)


def test_linear_function_checks_its_input_and_answers_without_sweeping():
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(linear_only, x)
    J0 = tape.sparse_jacobian(x, mode="fwd")
    tape.sparse_jacobian(x, mode="fwd")
    fold = tape.sparse_cache[("jacobian_plan", "fwd")]._folded
    assert fold.run_tangent == [] and fold.run_forward == []
    np.testing.assert_array_equal(tape.sparse_jacobian(x * 7, mode="fwd").toarray(), J0.toarray())
    with pytest.raises(ValueError, match="shape"):
        tape.sparse_jacobian(np.ones(4), mode="fwd")


def test_nonfinite_points_match_the_full_sweep():
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(bratu_arrays, x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    loop = fad.record(bratu_loop, x)
    loop.sparse_jacobian(x)
    lplan = loop.sparse_cache[("jacobian_plan", "auto")]
    for bad in (np.inf, -np.inf, np.nan, 800.0):
        y = x.copy()
        y[4] = bad
        np.testing.assert_allclose(tape.sparse_jacobian(y).data, _full(tape, plan, y), rtol=1e-15)
        np.testing.assert_array_equal(loop.sparse_jacobian(y).data, _full(loop, lplan, y))


def test_results_own_their_index_arrays():
    """A caller editing one result in place cannot corrupt later ones."""
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(bratu_arrays, x)
    J = tape.sparse_jacobian(x)
    J.data[:] = 0.0
    J.eliminate_zeros()
    J.indices[:] = 0
    J2 = tape.sparse_jacobian(x + 0.1)
    np.testing.assert_allclose(J2.toarray(), fad.jacobian(bratu_arrays)(x + 0.1), rtol=1e-13)
    H = fad.record(lambda v: fad.sum(v ** 4), x)
    S = H.sparse_hessian(x)
    S.indices[:] = 0
    np.testing.assert_allclose(H.sparse_hessian(x).toarray(), np.diag(12 * x ** 2), rtol=1e-13)


def loop_products(x):                     # two changing operands: lanes are swept
    return fad.stack([fad.sin(x[i]) * x[i + 1] - x[i] for i in range(len(x) - 1)])


@pytest.mark.parametrize("f", [bratu_arrays, bratu_loop, nonlinear_first, loop_products],
                         ids=["blocks, read directly", "scalars, read directly",
                              "blocks, swept", "scalars, swept"])
def test_threads_sharing_one_plan_get_their_own_answers(f):
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)           # interleave the threads inside the sweeps
    try:
        _threads_sharing_one_plan(f)
    finally:
        sys.setswitchinterval(old)


def _threads_sharing_one_plan(f):
    x = np.linspace(0.1, 0.9, 20000)
    tape = fad.record(f, x)
    tape.sparse_jacobian(x)
    points = [x + 0.01 * i for i in range(8)]
    want = [tape._sparse_sweeps(p, *_plan_args(tape)) [0] for p in points]
    got = [None] * len(points)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = tape.sparse_jacobian(points[i]).data
                if not np.array_equal(got[i], want[i]):
                    errors.append(i)
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(points))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _plan_args(tape):
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    return plan.col_seeds, plan.fwd_src, None, None
