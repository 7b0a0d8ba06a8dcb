"""Products (fastad.products): einsum, outer, inner, vdot, kron, tensordot,
and matmul/dot on stacks of matrices.

Every derivative is checked against central finite differences of the same
function evaluated with plain NumPy (never through fastad): first
derivatives in reverse (k seeds), forward (k directions), replay and sparse
modes, second derivatives against second differences of the plain function.
"""
import pickle

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_close, fd_grad, fd_jacobian, rng_for


def fd_hessian_np(f, x, h=1e-4):
    """Second central differences of the plain scalar function f (no fastad)."""
    n = x.size
    H = np.empty((n, n))
    E = np.eye(n) * h
    for i in range(n):
        for j in range(i, n):
            v = (f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j])
                 + f(x - E[i] - E[j])) / (4 * h * h)
            H[i, j] = H[j, i] = v
    return H


def _builder(shapes, values, active):
    """build(x) -> operands: the active ones cut from the vector x, the
    others the constants in values."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]

    def build(x):
        ops, pos = [], 0
        for i, (s, n) in enumerate(zip(shapes, sizes)):
            if i in active:
                ops.append(np.reshape(x[pos:pos + n], s))
                pos += n
            else:
                ops.append(values[i])
        return ops
    x0 = np.concatenate([values[i].reshape(-1) for i in active]) if active else np.zeros(0)
    return build, x0


def check_all_modes(fn, shapes, active, key, second=True, sparsity=True):
    """fn(*operands) (NumPy code) differentiated in every mode with respect to
    the operands in `active` (packed into one vector), against finite
    differences of fn on plain ndarrays."""
    rng = rng_for(*key)
    values = [rng.uniform(-1.5, 1.5, s) for s in shapes]
    build, x0 = _builder(shapes, values, active)
    f = lambda x: fn(*build(x))                              # noqa: E731
    f_np = lambda x: np.asarray(fn(*build(x)), dtype=float)  # noqa: E731
    y0 = f_np(x0)
    n = x0.size
    J = fd_jacobian(f_np, x0).reshape(y0.size, n)
    # value
    y, pull = fad.vjp(f, x0)
    close(np.asarray(y, dtype=float), y0, rtol=1e-12, atol=1e-12)
    assert np.shape(y) == y0.shape
    # reverse, k = 3 seeds
    seeds = rng.normal(size=(3,) + y0.shape)
    fd_close(pull(seeds).reshape(3, n), seeds.reshape(3, -1) @ J, scale_atol=True)
    fd_close(pull(seeds[0]).reshape(n), seeds[0].reshape(-1) @ J, scale_atol=True)
    # forward, k = 2 directions; jacfwd and jacrev
    V = rng.normal(size=(2, n))
    _, t = fad.jvp(f, x0, V)
    fd_close(np.reshape(t, (2, -1)), (J @ V.T).T, scale_atol=True)
    fd_close(fad.jacfwd(f)(x0).reshape(y0.size, n), J, scale_atol=True)
    fd_close(fad.jacrev(f)(x0).reshape(y0.size, n), J, scale_atol=True)
    # replay at a new point
    s = lambda x: fad.sum(fad.sin(f(x)))                    # noqa: E731
    s_np = lambda x: float(np.sum(np.sin(f_np(x))))         # noqa: E731
    x1 = x0 + rng.uniform(-0.3, 0.3, n)
    tape = fad.record(s, x0)
    fd_close(tape.gradient(x1), fd_grad(s_np, x1), scale_atol=True)
    if sparsity and y0.size:
        pat = fad.jacobian_sparsity(f)(x0).toarray()
        assert pat.shape == (y0.size, n)
        assert not (np.abs(J) > 1e-7)[~pat].any(), "a nonzero outside the pattern"
        fd_close(fad.sparse_jacobian(f)(x0).toarray(), J, scale_atol=True)
    if second and n:
        H = fd_hessian_np(s_np, x0)
        fd_close(fad.hessian(s)(x0).reshape(n, n), H, rtol=1e-5, atol=1e-5, scale_atol=True)
        W = rng.normal(size=(2, n))
        fd_close(np.reshape(fad.hvp(s, x0, W), (2, n)), (H @ W.T).T, rtol=1e-5, atol=1e-5,
                 scale_atol=True)
        if sparsity:
            hpat = fad.hessian_sparsity(s)(x0).toarray()
            assert not (np.abs(H) > 1e-4)[~hpat].any(), "a Hessian nonzero outside the pattern"
            # the plain sum: the product's own (bilinear) curvature is all there is
            u = lambda x: fad.sum(f(x)) + 0.0                  # noqa: E731
            H = fd_hessian_np(lambda x: float(np.sum(f_np(x))), x0)
            fd_close(fad.hessian(u)(x0).reshape(n, n), H, rtol=1e-5, atol=1e-5, scale_atol=True)
            hpat = fad.hessian_sparsity(u)(x0).toarray()
            assert not (np.abs(H) > 1e-4)[~hpat].any(), "a Hessian nonzero outside the pattern"


# ---------------------------------------------------------------------------
# einsum: every operand active alone, and all together
# ---------------------------------------------------------------------------

EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 2)]),
    ("ij,jk", [(2, 3), (3, 2)]),                      # implicit output
    ("bij,bjk->bik", [(2, 3, 2), (2, 2, 3)]),
    ("ij,kj->ki", [(2, 3), (4, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(4, 4)]),                                  # trace, implicit
    ("iij->j", [(2, 2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ijk->kj", [(2, 3, 2)]),
    ("i,j->ij", [(3,), (2,)]),
    ("i,i", [(4,), (4,)]),
    ("i,i->i", [(4,), (4,)]),
    ("ij,ij->i", [(3, 2), (3, 2)]),
    ("ab,cd->", [(2, 2), (3, 1)]),
    ("ij,j->i", [(2, 1), (3,)]),                       # size-1 broadcast of a label
    ("...ij,...jk", [(2, 1, 2, 3), (3, 3, 2)]),         # broadcast batch axes
    ("...i,...i->...", [(2, 3), (3,)]),
    ("i...->...", [(2, 3)]),
    ("ii,ij->j", [(3, 3), (3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
    ("ij,jk,kl,lm->im", [(2, 2), (2, 3), (3, 2), (2, 2)]),
    ("i,ij,j", [(2,), (2, 3), (3,)]),
    (",ij->ij", [(), (2, 2)]),                         # a 0-d operand
    ("ijk,ikl->jl", [(2, 2, 2), (2, 2, 3)]),
    ("bA,AC", [(2, 3), (3, 4)]),                       # implicit: 'Cb' (A-Z before a-z)
]


@pytest.mark.parametrize("spec,shapes", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum_each_operand(spec, shapes):
    for i in range(len(shapes)):
        check_all_modes(lambda *ops: np.einsum(spec, *ops), shapes, [i], (spec, i),
                        second=i == 0)


@pytest.mark.parametrize("spec,shapes", [e for e in EINSUM if len(e[1]) > 1],
                         ids=[e[0] for e in EINSUM if len(e[1]) > 1])
def test_einsum_all_operands_active(spec, shapes):
    check_all_modes(lambda *ops: np.einsum(spec, *ops), shapes, list(range(len(shapes))),
                    (spec, "all"))


def test_einsum_same_operand_twice():
    # x.x: the two operands share slots; d2/dx2 (x.x) = 2 I
    x = np.array([0.3, -1.2, 2.0])
    close(fad.grad(lambda x: fad.einsum("i,i", x, x))(x), 2 * x)
    close(fad.hessian(lambda x: np.einsum("i,i->", x, x))(x), 2 * np.eye(3))
    A = rng_for("twice").normal(size=(3, 3))
    # x^T A x: gradient (A + A^T) x, Hessian A + A^T
    q = lambda x: np.einsum("i,ij,j", x, A, x)     # noqa: E731
    close(fad.grad(q)(x), (A + A.T) @ x)
    close(fad.hessian(q)(x), A + A.T)
    # patterns: x x^T depends on x_i and x_j; x.x has a diagonal Hessian
    pat = fad.jacobian_sparsity(lambda x: np.einsum("i,j->ij", x, x))(x).toarray()
    expect = np.zeros((3, 3, 3), dtype=bool)
    for i in range(3):
        expect[i, :, i] = expect[:, i, i] = True
    assert (pat == expect.reshape(9, 3)).all()
    assert (fad.hessian_sparsity(lambda x: np.einsum("i,i", x, x))(x).toarray() == np.eye(3)).all()


@pytest.mark.parametrize("optimize", [False, True, "greedy", "optimal",
                                      ["einsum_path", (2, 3), (0, 1), (0, 1)],
                                      ["einsum_path", (3, 1), (2, 0, 1)],      # a 3-ary step
                                      ["einsum_path", (0,), (0, 1, 2, 3)]])
def test_einsum_optimize(optimize):
    shapes = [(2, 3), (3, 4), (4, 2), (2,)]
    spec = "ij,jk,kl,l->i"
    check_all_modes(lambda *ops: np.einsum(spec, *ops, optimize=optimize), shapes, [0, 2],
                    ("opt", str(optimize)), second=False)


def test_einsum_sublist_form():
    rng = rng_for("sublist")
    A, B = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    f = lambda a: np.einsum(a, [0, 1], B, [1, 2], [2, 0])     # noqa: E731
    close(f(A), np.einsum(A, [0, 1], B, [1, 2], [2, 0]))
    fd_close(fad.jacfwd(f)(A), fd_jacobian(f, A))
    g = lambda a: np.einsum(a, [Ellipsis, 1], B, [1, 2])       # noqa: E731
    fd_close(fad.jacrev(g)(A), fd_jacobian(g, A))


def test_einsum_values_match_numpy_and_constants_pass_through():
    rng = rng_for("values")
    for spec, shapes in EINSUM:
        vals = [rng.normal(size=s) for s in shapes]
        close(fad.einsum(spec, *vals), np.einsum(spec, *vals))   # plain NumPy
        got = fad.jacfwd(lambda x: np.einsum(spec, x, *vals[1:]))(vals[0])
        assert got.shape == np.einsum(spec, *vals).shape + vals[0].shape


def test_einsum_var_operands():
    # Vars (scalars on the tape) and lists of them are operands too
    def f(x):
        s = x[0] * x[1]
        return fad.sum(np.einsum(",i->i", s, [x[1], x[2], s]))
    f_np = lambda x: np.sum(x[0] * x[1] * np.array([x[1], x[2], x[0] * x[1]]))  # noqa: E731
    x = np.array([0.5, -1.5, 2.0])
    fd_close(fad.grad(f)(x), fd_grad(f_np, x))


@pytest.mark.parametrize("spec,shapes", [
    ("ij,jk->ik", [(0, 3), (3, 2)]),
    ("ij,jk->ik", [(2, 0), (0, 3)]),          # an empty sum: zeros
    ("i,i", [(0,), (0,)]),
    ("ii->i", [(0, 0)]),
    ("bij,bjk->bik", [(0, 2, 3), (0, 3, 2)]),
    ("bij,bjk->bik", [(2, 2, 0), (2, 0, 3)]),
])
def test_einsum_empty(spec, shapes):
    rng = rng_for("empty", spec, shapes)
    vals = [rng.normal(size=s) for s in shapes]
    ref = np.einsum(spec, *vals)
    for i in range(len(vals)):
        def f(x, i=i):
            return np.einsum(spec, *(vals[:i] + [x] + vals[i + 1:]))
        J = fad.jacfwd(f)(vals[i])
        assert J.shape == ref.shape + vals[i].shape and not J.any()
        close(fad.jacrev(f)(vals[i]), J)
        g = fad.grad(lambda x: fad.sum(f(x)) + 1.0)(vals[i])
        assert g.shape == vals[i].shape and not g.any()
        assert fad.jacobian_sparsity(f)(vals[i]).nnz == 0


# ---------------------------------------------------------------------------
# the functions built on einsum
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [((3,), (2,)), ((2, 2), (3,)), ((), (3,)), ((2, 1), (1, 2))])
def test_outer(sa, sb):
    check_all_modes(np.outer, [sa, sb], [0, 1], ("outer", sa, sb))
    check_all_modes(fad.outer, [sa, sb], [1], ("fad.outer", sa, sb), second=False)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3,)), ((2, 3), (4, 3)),
                                   ((2, 1, 2), (3, 2)), ((), (2, 2)), ((2,), ())])
def test_inner(sa, sb):
    check_all_modes(np.inner, [sa, sb], [0, 1], ("inner", sa, sb))
    check_all_modes(fad.inner, [sa, sb], [0], ("fad.inner", sa, sb), second=False)


@pytest.mark.parametrize("sa,sb", [((4,), (4,)), ((2, 3), (6,)), ((2, 2), (2, 2))])
def test_vdot(sa, sb):
    check_all_modes(np.vdot, [sa, sb], [0, 1], ("vdot", sa, sb))
    check_all_modes(fad.vdot, [sa, sb], [1], ("fad.vdot", sa, sb), second=False)


@pytest.mark.parametrize("sa,sb", [((2,), (3,)), ((2, 2), (2, 3)), ((2, 3), (2,)),
                                   ((2,), (2, 2)), ((), (2, 2)), ((1, 2, 2), (2, 1))])
def test_kron(sa, sb):
    check_all_modes(np.kron, [sa, sb], [0, 1], ("kron", sa, sb))
    check_all_modes(fad.kron, [sa, sb], [0], ("fad.kron", sa, sb), second=False)


@pytest.mark.parametrize("sa,sb,axes", [
    ((2, 3, 4), (3, 4, 2), 2),
    ((2, 3), (3, 2), 1),
    ((2, 2), (3,), 0),
    ((2, 3, 4), (4, 3, 2), ([1, 2], [1, 0])),
    ((2, 3, 4), (4, 2), (-1, 0)),
    ((3, 2), (2, 3), ([0, 1], [1, 0])),
    ((2, 3), (2, 3), ([-2, -1], [-2, -1])),
])
def test_tensordot(sa, sb, axes):
    f = lambda a, b: np.tensordot(a, b, axes=axes)     # noqa: E731
    check_all_modes(f, [sa, sb], [0, 1], ("tensordot", sa, sb, str(axes)))
    g = lambda a, b: fad.tensordot(a, b, axes)         # noqa: E731
    check_all_modes(g, [sa, sb], [1], ("fad.tensordot", sa, sb, str(axes)), second=False)


MATMUL = [
    ((2, 2, 3), (2, 3, 2)),
    ((2, 2, 3), (3, 2)),              # a stack times one matrix
    ((2, 3), (2, 3, 2)),
    ((2, 1, 2, 3), (3, 3, 2)),        # the batch axes broadcast
    ((3,), (2, 3, 2)),                # 1-D operands are vectors
    ((2, 2, 3), (3,)),
    ((1, 2, 2), (2, 2)),
]


@pytest.mark.parametrize("sa,sb", MATMUL)
def test_matmul_stacks(sa, sb):
    check_all_modes(lambda a, b: a @ b, [sa, sb], [0, 1], ("@", sa, sb))
    check_all_modes(np.matmul, [sa, sb], [0], ("np.matmul", sa, sb), second=False)
    check_all_modes(fad.matmul, [sa, sb], [1], ("fad.matmul", sa, sb), second=False)


@pytest.mark.parametrize("sa,sb", [((2, 2, 3), (3, 2)), ((2, 2, 3), (3,)),
                                   ((2, 3), (2, 3, 2)), ((2, 2, 2), (2, 2, 3)), ((3,), (2, 3, 2))])
def test_dot_nd(sa, sb):
    check_all_modes(np.dot, [sa, sb], [0, 1], ("dot", sa, sb))
    check_all_modes(lambda a, b: a.dot(b), [sa, sb], [0], ("a.dot", sa, sb), second=False)
    check_all_modes(fad.dot, [sa, sb], [1], ("fad.dot", sa, sb), second=False)


def test_matmul_2d_keeps_blas_block():
    # 2-D @ stays one Matmul block (the benchmarks' path); stacks are einsum blocks
    x = np.ones((3, 4))
    t = fad.record(lambda a: fad.sum(a @ np.ones((4, 2))), x)
    assert "matmul" in str(t) and "einsum" not in str(t)
    t = fad.record(lambda a: fad.sum(np.reshape(a, (1, 3, 4)) @ np.ones((4, 2))), x)
    assert "einsum" in str(t)


def test_tape_with_einsum_pickles_and_replays():
    rng = rng_for("pickle")
    B = rng.normal(size=(3, 2))
    f = lambda a: fad.sum(fad.tanh(np.einsum("bij,jk->bik", a, B)))     # noqa: E731
    f_np = lambda a: np.sum(np.tanh(np.einsum("bij,jk->bik", a, B)))   # noqa: E731
    x0, x1 = rng.normal(size=(2, 2, 3)), rng.normal(size=(2, 2, 3))
    t = pickle.loads(pickle.dumps(fad.record(f, x0)))
    fd_close(t.gradient(x1), fd_grad(f_np, x1))
    close(t(x1), f_np(x1))


def test_products_of_constants_are_numpy():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(3.0)
    close(fad.einsum("ij,j", a, b), a @ b)
    close(fad.outer(b, b), np.outer(b, b))
    close(fad.inner(a, b), np.inner(a, b))
    close(fad.vdot(a, a), np.vdot(a, a))
    close(fad.kron(a, b), np.kron(a, b))
    close(fad.tensordot(a, a, ([0, 1], [0, 1])), np.tensordot(a, a, ([0, 1], [0, 1])))


# ---------------------------------------------------------------------------
# errors: clear messages, and fastad keeps working
# ---------------------------------------------------------------------------

ERRORS = [
    (lambda x: np.einsum("ij,jk->ik", x, np.ones((4, 2))), ValueError, "label 'j'"),
    (lambda x: np.einsum("ij,jk", x), ValueError, "names 2 operands"),
    (lambda x: np.einsum("ijk", x), ValueError, "operand 0 has 2 dimensions"),
    (lambda x: np.einsum("i1", x), ValueError, "invalid subscript '1'"),
    (lambda x: np.einsum("ij->iz", x), ValueError, "output label 'z'"),
    (lambda x: np.einsum("ij->ii", x), ValueError, "repeats in the output"),
    (lambda x: np.einsum("i.j", x), ValueError, "ellipsis"),
    (lambda x: np.einsum("ii->i", x[:1]), ValueError, "repeated label 'i' has sizes"),
    (lambda x: np.einsum("...j->j", x), ValueError, "no '...'"),
    (lambda x: np.einsum("ij->i->j", x), ValueError, "more than one '->'"),
    (lambda x: np.einsum("ij", x, out=np.zeros((2, 3))), TypeError, "out="),
    (lambda x: np.einsum("ij", x, dtype=np.float32), TypeError, "dtype"),
    (lambda x: np.reshape(x, (1, 2, 3)) @ np.ones((4, 2)), ValueError, "do not align"),
    (lambda x: np.matmul(np.reshape(x, (2, 1, 3)), np.ones((3, 3, 2))), ValueError,
     "do not broadcast"),
    (lambda x: np.matmul(x[0, 0], np.ones((2, 2, 2))), ValueError, "at least one dimension"),
    (lambda x: np.tensordot(x, np.ones((2, 3)), axes=3), ValueError, "invalid axes"),
    (lambda x: np.tensordot(x, np.ones((2, 3)), axes=([0], [1])), ValueError, "shape mismatch"),
    (lambda x: np.tensordot(x, np.ones((2, 3)), axes=([0, 1], [0])), ValueError, "invalid axes"),
    (lambda x: np.vdot(x, np.ones(5)), ValueError, "different sizes"),
    (lambda x: np.inner(x, np.ones(2)), ValueError, "last axes"),
    (lambda x: np.dot(np.reshape(x, (1, 2, 3)), np.ones((2, 2))), ValueError, "do not align"),
    (lambda x: fad.outer(x, "abc"), TypeError, "not str"),
    (lambda x: np.outer(x, np.ones(2), out=np.zeros((6, 2))), TypeError, "out="),
    (lambda x: np.einsum("ij", x, order="C", bogus=1), TypeError, "bogus"),
    (lambda x: np.einsum(x, [0, 60]), ValueError, "invalid subscript 60"),
    (lambda x: np.einsum("i...j...", x), ValueError, "more than one ellipsis"),
    (lambda x: fad.einsum(), TypeError, "no subscripts"),
    (lambda x: np.einsum(x), ValueError, "subscripts .* are missing"),
]


@pytest.mark.parametrize("bad,exc,words", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors_are_clear_and_fastad_keeps_working(bad, exc, words):
    x = np.arange(6.0).reshape(2, 3)
    with pytest.raises(exc, match=words.replace("(", r"\(")) as info:
        fad.grad(lambda a: fad.sum(bad(a)))(x)
    assert "fastad" in str(info.value) or "np." in str(info.value)
    B = np.ones((3, 2))
    close(fad.grad(lambda a: fad.sum(np.einsum("ij,jk->ik", a, B)))(x), np.full((2, 3), 2.0))


@pytest.mark.parametrize("sa,sb", [((2, 0), (0, 3)), ((0,), (0, 2)), ((2, 0), (0,)),
                                   ((0, 2), (2, 3))])
def test_matmul_2d_empty(sa, sb):
    # an empty sum gives zeros (and an empty Jacobian pattern), as NumPy's matmul
    b = np.ones(sb)
    f = lambda a: a @ b                          # noqa: E731
    a = np.ones(sa)
    ref = np.ones(sa) @ b
    J = fad.jacfwd(f)(a)
    assert J.shape == ref.shape + sa and not J.any()
    close(fad.jacrev(f)(a), J)
    assert fad.jacobian_sparsity(f)(a).nnz == 0


def test_strong_zeros():
    # the unselected side of a where contributes exactly 0 to every derivative,
    # though its partial (an element of A) is inf
    A = np.array([[np.inf, 1.0, 2.0], [3.0, 4.0, 5.0]]).T.copy()     # stored as (3, 2)
    mask = np.array([False, True])
    x = np.array([1.0, 2.0, 3.0])
    E = lambda x: np.einsum("ji,j->i", A, x)                          # noqa: E731
    f = lambda x: fad.where(mask, E(x), 0.0)                           # noqa: E731
    J = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 5.0]])
    with np.errstate(invalid="ignore"):
        close(fad.jacrev(f)(x), J)
        close(fad.jacfwd(f)(x), J)
        close(fad.vjp(f, x)[1](np.array([[1.0, 2.0], [0.0, -1.0]])), [2 * J[1], -J[1]])
        close(fad.sparse_jacobian(f)(x).toarray(), J)
        close(fad.hessian(lambda x: fad.sum(f(x) ** 2))(x), 2 * np.outer(J[1], J[1]))
        close(fad.record(lambda x: fad.sum(f(x)), x).gradient(x + 1.0), J[1])
        # where the inf is selected, it propagates as in NumPy
        g = fad.grad(lambda x: fad.sum(E(x)))(x)
    assert g[0] == np.inf and np.isfinite(g[1:]).all()


# np.cross: bilinear, so the Jacobian is checked against finite differences
# and the Hessian of w . cross(a, b) against exact second differences
@pytest.mark.parametrize("sa,sb,kw", [
    ((4, 3), (3,), {}), ((3,), (4, 3), {}), ((4, 2), (3,), {}), ((2,), (2,), {}),
    ((3, 5), (3, 5), {"axisa": 0, "axisb": 0, "axisc": 0}), ((2, 3, 4), (2, 3, 4), {"axis": 1}),
    ((5, 2), (5, 3), {"axisc": 0}),
])
@pytest.mark.filterwarnings("ignore:Arrays of 2-dimensional vectors:DeprecationWarning")
def test_cross_every_mode(sa, sb, kw):
    rng = rng_for("cross", sa, sb, kw)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    try:                       # the reference: NumPy >= 2.5 refuses 2-vectors
        np.cross(a, b, **kw)
    except ValueError:
        pytest.skip("this NumPy has no cross product of 2-vectors to compare with")
    na = a.size
    both = lambda x: np.cross(x[:na].reshape(sa), x[na:].reshape(sb), **kw)
    for f, x0 in ((lambda x: np.cross(x.reshape(sa), b, **kw), a.ravel()),
                  (lambda x: np.cross(a, x.reshape(sb), **kw), b.ravel()),
                  (both, np.r_[a.ravel(), b.ravel()])):
        J = fd_jacobian(f, x0)
        fd_close(fad.jacrev(f)(x0), J)
        fd_close(fad.jacfwd(f)(x0), J)
    x0 = np.r_[a.ravel(), b.ravel()]
    w = rng.standard_normal(np.shape(both(x0)))
    g = lambda x: float(np.sum(both(x) * w))
    n, e = x0.size, np.eye(x0.size)
    H = np.array([[g(x0 + e[i] + e[j]) - g(x0 + e[i]) - g(x0 + e[j]) + g(x0)
                   for j in range(n)] for i in range(n)])
    close(fad.hessian(lambda x: fad.sum(both(x) * w))(x0), H, rtol=1e-9, atol=1e-9)


def test_cross_errors():
    with pytest.raises(ValueError, match="2 or 3 components"):
        fad.grad(lambda x: fad.sum(np.cross(x, x)))(np.ones(4))
    close(fad.grad(lambda x: fad.sum(np.cross(x, [0.0, 0.0, 1.0])))(np.ones(3)), [-1.0, 1.0, 0.0])
