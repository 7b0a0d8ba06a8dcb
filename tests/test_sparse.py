"""Sparse Jacobians and Hessians: patterns, colorings, compressed sweeps (fastad.sparse)."""
import numpy as np
import pytest

import fastad as fad
from conftest import dense, fd_jacobian, rosen_loop

sp = pytest.importorskip("scipy.sparse")
from scipy.optimize import rosen_hess  # noqa: E402


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
