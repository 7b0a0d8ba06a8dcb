"""np.linalg on fastad arrays (fastad.linalg): every function against finite
differences of plain NumPy, in reverse mode (k seeds), forward mode (k
directions), to second order, on a replayed tape and for sparsity; the
conventions at degenerate points; the errors.

Eigenvectors and singular vectors are compared with their signs fixed by a
constant (the sign of one row at the point), which makes them locally
unique functions of the matrix."""
import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_close, fd_grad, fd_hessian, fd_jacobian, rng_for

L = np.linalg


def _v(x):
    return getattr(x, "value", x)


def _fix(V, ref=None):
    """V with each column's sign fixed (first row nonnegative at the point)."""
    s = np.sign(_v(V if ref is None else ref)[..., :1, :])
    return V * np.where(s == 0, 1.0, s)


def _mat(rng, shape, shift=3.0):
    """A well-conditioned matrix (stack): random plus shift on the diagonal."""
    a = rng.normal(size=shape)
    if shape[-1] == shape[-2]:
        a = a + shift * np.eye(shape[-1])
    return a


def _spd(rng, shape):
    """Symmetric positive definite with well separated eigenvalues."""
    n = shape[-1]
    Q = np.linalg.qr(rng.normal(size=shape))[0]
    w = np.arange(1, n + 1) * 1.5 + rng.uniform(0, 0.3, size=shape[:-1])
    return (Q * w[..., None, :]) @ np.swapaxes(Q, -1, -2)


def _flat_cat(*parts):
    return np.concatenate([np.ravel(p) for p in parts])


def _split(x, *shapes):
    out, pos = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(np.reshape(x[pos:pos + n], s))
        pos += n
    return out


def _svd_fixed(A):
    U, s, Vh = L.svd(A, full_matrices=False)
    sg = np.sign(_v(U)[..., :1, :])
    return _flat_cat(U * sg, s, Vh * np.swapaxes(sg, -1, -2))


def _cat(*parts):
    """Concatenate the ravelled parts (Arrays or ndarrays)."""
    return np.concatenate([np.reshape(p, (-1,)) for p in parts])


# name -> (f of one flat or shaped array, point maker)
def _cases():
    c = {}
    for shape in [(3, 3), (2, 3, 3), (1, 1)]:
        c[f"inv{shape}"] = (lambda A: L.inv(A), lambda r, s=shape: _mat(r, s))
        c[f"det{shape}"] = (lambda A: L.det(A), lambda r, s=shape: _mat(r, s))
        c[f"slogdet{shape}"] = (lambda A: L.slogdet(A)[1], lambda r, s=shape: -_mat(r, s))
        c[f"cholesky{shape}"] = (lambda A: L.cholesky(A), lambda r, s=shape: _spd(r, s))
    c["slogdet_negative_det"] = (lambda A: L.slogdet(A).logabsdet,
                                 lambda r: _mat(r, (3, 3)) * np.array([[-1.0], [1], [1]]))
    c["slogdet_det"] = (lambda A: (lambda r: r.sign * np.exp(r.logabsdet))(L.slogdet(A)),
                        lambda r: _mat(r, (2, 3, 3)) * np.array([[[-1.0], [1], [1]]]))
    c["cholesky_upper"] = (lambda A: L.cholesky(A, upper=True), lambda r: _spd(r, (3, 3)))
    c["cholesky_batched_upper"] = (lambda A: L.cholesky(A, upper=True),
                                   lambda r: _spd(r, (2, 3, 3)))
    # solve: A and b packed in one vector
    for sa, sb in [((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (2, 3, 2)),
                   ((2, 3, 3), (3, 1)), ((3, 3), (2, 3, 2)), ((2, 3, 3), (3,))]:
        def f(x, sa=sa, sb=sb):
            A, b = _split(x, sa, sb)
            return L.solve(A + 5 * np.eye(3), b)
        c[f"solve{sa}{sb}"] = (f, lambda r, sa=sa, sb=sb:
                               r.normal(size=int(np.prod(sa) + np.prod(sb))))
    for shape in [(3, 3), (2, 4, 4)]:
        for uplo in "LU":
            c[f"eigh{shape}{uplo}"] = (
                lambda A, u=uplo: _cat(L.eigh(A, u)[0], _fix(L.eigh(A, u)[1])),
                lambda r, s=shape: _spd(r, s))
        c[f"eigvalsh{shape}"] = (lambda A: L.eigvalsh(A), lambda r, s=shape: _spd(r, s))
    c["eigh_reconstruct"] = (lambda A: (lambda w, V: (V * np.exp(w)[None, :]) @ V.T)(*L.eigh(A)),
                             lambda r: _spd(r, (3, 3)))
    for shape in [(3, 3), (4, 3), (3, 4), (2, 4, 3), (2, 2, 3), (4, 1)]:
        c[f"svd{shape}"] = (_svd_fixed, lambda r, s=shape: r.normal(size=s))
        c[f"svdvals{shape}"] = (lambda A: L.svd(A, compute_uv=False),
                                lambda r, s=shape: r.normal(size=s))
        c[f"pinv{shape}"] = (lambda A: L.pinv(A), lambda r, s=shape: r.normal(size=s))
    for shape in [(3, 3), (4, 3), (2, 3, 4)]:      # sign-invariant: replayable
        c[f"svd_invariant{shape}"] = (lambda A: (lambda U, s, Vh: _cat(U * U, s, Vh * Vh))(
            *L.svd(A, full_matrices=False)), lambda r, s=shape: r.normal(size=s))
        c[f"eigh_invariant{shape[:-1] + shape[-1:] * 2}"] = (
            lambda A: (lambda w, V: _cat(w, V * V))(*L.eigh(A)),
            lambda r, s=shape[:-1] + shape[-1:] * 2: _spd(r, s))
    def _sym_indef(r, s):
        S = _spd(r, s)
        return S - 4.0 * np.eye(s[-1])          # symmetric, eigenvalues of both signs
    c["svd_hermitian"] = (lambda A: (lambda U, s, Vh: _cat(U * U, s, Vh * Vh))(
        *L.svd(A, hermitian=True)), lambda r: _sym_indef(r, (3, 3)))
    c["pinv_hermitian"] = (lambda A: L.pinv(A, hermitian=True), lambda r: _sym_indef(r, (2, 3, 3)))
    c["svd_square_full"] = (lambda A: _cat(*L.svd(A)[1:2]), lambda r: r.normal(size=(3, 3)))
    for shape in [(3, 3), (4, 3), (3, 5), (2, 4, 3), (2, 2, 4)]:
        c[f"qr{shape}"] = (lambda A: _cat(*L.qr(A)), lambda r, s=shape: _mat(r, s))
        c[f"qr_r{shape}"] = (lambda A: L.qr(A, mode="r"), lambda r, s=shape: _mat(r, s))
    for n in [0, 1, 2, 3, -1, -2]:
        c[f"matrix_power{n}"] = (lambda A, n=n: L.matrix_power(A, n),
                                 lambda r: _mat(r, (3, 3)) / 3)
    c["matrix_power_batched"] = (lambda A: L.matrix_power(A, 3), lambda r: _mat(r, (2, 2, 2)) / 3)
    c["multi_dot"] = (lambda x: L.multi_dot([x[:3], np.reshape(x[3:12], (3, 3)),
                                             np.reshape(x[12:18], (3, 2))]),
                      lambda r: r.normal(size=18))
    c["lstsq"] = (lambda x: (lambda res: _cat(res[0], res[1]))(
        L.lstsq(np.reshape(x[:12], (4, 3)), np.reshape(x[12:], (4, 2)), rcond=None)),
        lambda r: r.normal(size=20))
    c["lstsq_vector"] = (lambda x: L.lstsq(np.reshape(x[:12], (4, 3)), x[12:], rcond=None)[0],
                         lambda r: r.normal(size=16))
    c["cond"] = (lambda A: L.cond(A), lambda r: _mat(r, (3, 3)))
    c["cond-2_batched"] = (lambda A: L.cond(A, -2), lambda r: _mat(r, (2, 3, 3)))
    c["cond_fro_batched"] = (lambda A: L.cond(A, "fro"), lambda r: _mat(r, (2, 3, 3)))
    c["cond_1"] = (lambda A: L.cond(A, 1), lambda r: _mat(r, (3, 3)))
    c["vector_norm_axes"] = (lambda x: L.vector_norm(x, axis=(0, 2), ord=3, keepdims=True),
                             lambda r: r.normal(size=(2, 3, 4)))
    c["vector_norm_all"] = (lambda x: L.vector_norm(x), lambda r: r.normal(size=(2, 3)))
    c["vector_norm_inf_axis"] = (lambda x: L.vector_norm(x, axis=-1, ord=np.inf),
                                 lambda r: r.normal(size=(2, 3)))
    c["matrix_norm_nuc"] = (lambda x: L.matrix_norm(x, ord="nuc"),
                            lambda r: r.normal(size=(2, 3, 4)))
    c["matrix_norm_fro_keepdims"] = (lambda x: L.matrix_norm(x, keepdims=True),
                                     lambda r: r.normal(size=(2, 3, 4)))
    def _real_spectrum(r, shape):
        n = shape[-1]
        S = r.normal(size=shape) + 3 * np.eye(n)
        w = np.arange(n) * 1.3 - 1.0 + r.uniform(0, 0.2, size=shape[:-1])
        return (S * w[..., None, :]) @ np.linalg.inv(S)
    for shape in [(3, 3), (2, 4, 4)]:
        c[f"eig{shape}"] = (lambda A: (lambda w, V: _cat(w, _fix(V)))(*L.eig(A)),
                            lambda r, s=shape: _real_spectrum(r, s))
        c[f"eigvals{shape}"] = (lambda A: L.eigvals(A), lambda r, s=shape: _real_spectrum(r, s))
    c["tensorinv"] = (lambda A: L.tensorinv(A, ind=1), lambda r: _mat(r, (6, 6)).reshape(6, 2, 3))
    c["tensorsolve"] = (lambda x: L.tensorsolve(np.reshape(x[:36], (2, 3, 2, 3))
                                                + np.eye(6).reshape(2, 3, 2, 3) * 3,
                                                np.reshape(x[36:], (2, 3))),
                        lambda r: r.normal(size=42))
    c["tensorsolve_axes"] = (lambda A: L.tensorsolve(A, np.arange(6.0).reshape(2, 3), axes=(0,)),
                             lambda r: np.moveaxis(_mat(r, (6, 6)).reshape(2, 3, 2, 3), 3, 0))
    return c


CASES = _cases()


def _point(name):
    return CASES[name][1](rng_for("linalg", name))


@pytest.mark.parametrize("name", sorted(CASES))
def test_reverse_and_forward_match_fd(name):
    f, _ = CASES[name]
    x = _point(name)
    J = fd_jacobian(lambda z: np.asarray(f(z)), x)
    fd_close(fad.jacrev(f)(x), J, rtol=1e-5, atol=1e-6, scale_atol=True)
    fd_close(fad.jacfwd(f)(x), J, rtol=1e-5, atol=1e-6, scale_atol=True)
    # k seeds / k directions in one sweep
    y0 = np.asarray(f(x))
    rng = rng_for("seeds", name)
    seeds = rng.normal(size=(3,) + y0.shape)
    dirs = rng.normal(size=(2,) + x.shape)
    y, pullback = fad.vjp(f, x)
    close(y, y0, rtol=1e-13, atol=1e-13)
    Jm = J.reshape(y0.size, x.size)
    fd_close(pullback(seeds), (seeds.reshape(3, -1) @ Jm).reshape((3,) + x.shape),
             rtol=1e-5, atol=1e-6, scale_atol=True)
    _, t = fad.jvp(f, x, dirs)
    fd_close(t, (dirs.reshape(2, -1) @ Jm.T).reshape((2,) + y0.shape),
             rtol=1e-5, atol=1e-6, scale_atol=True)


def _loss(name):
    f, _ = CASES[name]
    x = _point(name)
    w = rng_for("weights", name).normal(size=np.shape(f(x)))
    return (lambda z: np.sum(np.sin(f(z)) * w)), x


# second order and replay on a subset that covers every function (and the slower ones once)
SECOND = [n for n in sorted(CASES) if not n.startswith(("svdvals(2", "svd(2", "pinv(2", "qr_r"))]


@pytest.mark.parametrize("name", SECOND)
def test_second_order_matches_fd_of_gradient(name):
    loss, x = _loss(name)
    H = fd_hessian(loss, x)
    fd_close(fad.hessian(loss)(x), H, rtol=1e-5, atol=1e-6, scale_atol=True)
    v = rng_for("hvp", name).normal(size=x.shape)
    fd_close(fad.hvp(loss, x, v), (H.reshape(x.size, x.size) @ v.ravel()).reshape(x.shape),
             rtol=1e-5, atol=1e-6, scale_atol=True)


# eigenvectors with their signs fixed at the point are not replayable
# (LAPACK may flip a sign at the new point): the sign-invariant cases are
@pytest.mark.parametrize("name", [n for n in sorted(CASES)
                                  if not n.startswith(("eigh(", "svd(", "eig("))])
def test_replay_at_a_new_point(name):
    loss, x = _loss(name)
    x1 = x + 0.01 * rng_for("move", name).normal(size=x.shape)
    tape = fad.record(loss, x)
    close(tape(x1), loss(x1), rtol=1e-12, atol=1e-12)
    fd_close(tape.gradient(x1), fd_grad(loss, x1), rtol=1e-5, atol=1e-6, scale_atol=True)


@pytest.mark.parametrize("name", ["inv(2, 3, 3)", "det(2, 3, 3)", "cholesky(2, 3, 3)",
                                  "eigh(2, 4, 4)L", "svd(2, 4, 3)", "qr(2, 4, 3)",
                                  "solve(2, 3, 3)(2, 3, 2)", "pinv(4, 3)", "eig(2, 4, 4)"])
def test_sparsity_covers_the_jacobian(name):
    f, _ = CASES[name]
    x = _point(name)
    J = fad.jacobian(f)(x).reshape(-1, x.size)
    pat = fad.jacobian_sparsity(f)(x).toarray()
    assert pat.shape == J.shape
    assert np.all(pat[np.abs(J) > 1e-12])
    close(fad.sparse_jacobian(f)(x).toarray(), J, rtol=1e-12, atol=1e-12)
    if name.startswith(("inv(2", "det(2", "cholesky(2")):
        # a stack: each matrix's outputs depend on that matrix only
        half_out, half_in = J.shape[0] // 2, x.size // 2
        assert not pat[:half_out, half_in:].any() and not pat[half_out:, :half_in].any()


# ---------------------------------------------------------------- norm

NORM_CASES = [
    ((5,), None, None, False), ((5,), 2, None, False), ((5,), 1, None, False),
    ((5,), np.inf, None, False), ((5,), -np.inf, None, False), ((5,), 3, None, False),
    ((5,), 0.5, None, False), ((5,), -1, None, False), ((5,), 1, 0, True),
    ((5,), 0, None, False), ((2, 3), 0, 1, True), ((), None, None, False),
    ((3, 4), None, None, False), ((3, 4), None, None, True), ((3, 4), "fro", None, False),
    ((3, 4), "nuc", None, False), ((3, 4), 2, None, False), ((3, 4), -2, None, False),
    ((3, 4), 1, None, False), ((3, 4), -1, None, False), ((3, 4), np.inf, None, False),
    ((3, 4), -np.inf, None, True), ((3, 4), None, 1, False), ((3, 4), 3, -1, True),
    ((3, 4), np.inf, 0, False), ((2, 3, 4), None, (0, 2), False),
    ((2, 3, 4), "fro", (-1, -3), True), ((2, 3, 4), 2, (2, 1), False),
    ((2, 3, 4), "nuc", (1, 2), True), ((2, 3, 4), 1, (0, 1), True),
    ((2, 3, 4), -np.inf, (2, 0), False), ((2, 3, 4), None, -2, False),
    ((2, 3, 4), None, None, False), ((2, 3, 4), 1, (1,), True),
]


@pytest.mark.parametrize("shape,ord,axis,keepdims", NORM_CASES)
def test_norm_matches_numpy_and_fd(shape, ord, axis, keepdims):
    x = rng_for("norm", shape, ord, axis, keepdims).normal(size=shape)
    f = lambda z: L.norm(z, ord, axis, keepdims)
    fz = lambda z: L.norm(z, ord=ord, axis=axis, keepdims=keepdims)
    expected = np.linalg.norm(x, ord, axis, keepdims)
    J = fd_jacobian(lambda z: np.asarray(f(z)), x)
    close(fad.jacobian(f)(x).shape, J.shape)
    fd_close(fad.jacrev(fz)(x), J, rtol=1e-5, atol=1e-6)
    fd_close(fad.jacfwd(f)(x), J, rtol=1e-5, atol=1e-6)
    y, _ = fad.vjp(f, x)
    close(y, expected, rtol=1e-13)
    assert np.shape(y) == np.shape(expected)
    loss = lambda z: np.sum(np.asarray(f(z)) ** 2) if not isinstance(z, (fad.Var, fad.Array)) else np.sum(f(z) ** 2)
    fd_close(fad.hessian(loss)(x), fd_hessian(loss, x), rtol=1e-5, atol=1e-6, scale_atol=True)
    tape = fad.record(loss, x)
    x1 = x * 1.01
    fd_close(tape.gradient(x1), fd_grad(loss, x1), rtol=1e-5, atol=1e-6)
    pat = fad.jacobian_sparsity(f)(x).toarray()
    assert np.all(pat[np.abs(J.reshape(pat.shape)) > 1e-9])


def test_norm_euclidean_sparsity_is_per_row():
    x = rng_for("rows").normal(size=(3, 4))
    pat = fad.jacobian_sparsity(lambda z: L.norm(z, axis=1))(x).toarray()
    close(pat, np.kron(np.eye(3), np.ones((1, 4))))


def test_norm_at_zero_has_zero_derivative():
    z = np.zeros(4)
    for ord in [None, 2, 1, 3, np.inf]:
        assert np.all(fad.grad(lambda x: L.norm(x, ord))(z) == 0.0)
        assert np.all(fad.jacfwd(lambda x: L.norm(x, ord))(z) == 0.0)
    rows = np.array([[0.0, 0.0], [3.0, 4.0]])
    close(fad.jacrev(lambda x: L.norm(x, axis=1))(rows),
          np.array([[[0, 0], [0, 0]], [[0, 0], [0.6, 0.8]]]))
    assert np.all(np.isfinite(fad.hessian(lambda x: L.norm(x) ** 2 + L.norm(x))(z)))


def test_norm_empty_and_scalar():
    e = np.zeros((0, 3))
    close(fad.jacobian(lambda x: L.norm(x, axis=0))(e), np.zeros((3, 0, 3)))
    assert fad.grad(lambda t: L.norm(t))(-2.0) == -1.0
    assert fad.grad(lambda x: fad.norm(x * x))(3.0) == 6.0


# ---------------------------------------------------------------- degenerate points

def test_det_gradient_at_a_singular_matrix_is_the_cofactor_matrix():
    A = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])   # rank 2
    cof = np.array([[4 - 0, -(2 - 6), 0 - 4], [-(2 - 0), 1 - 3, -(0 - 2)],
                    [12 - 12, -(6 - 6), 4 - 4]], dtype=float)
    close(fad.grad(L.det)(A), cof, atol=1e-12)
    close(fad.jacfwd(L.det)(A), cof, atol=1e-12)
    fd_close(fad.grad(L.det)(A), fd_grad(L.det, A))
    Z = np.zeros((3, 3))
    close(fad.grad(L.det)(Z), np.zeros((3, 3)))
    with pytest.raises(NotImplementedError, match="singular"):
        fad.hessian(L.det)(A)
    close(fad.grad(L.det)(np.eye(2)), np.eye(2))


def test_inv_of_a_singular_matrix_raises_linalgerror():
    with pytest.raises(np.linalg.LinAlgError):
        fad.grad(lambda A: np.sum(L.inv(A)))(np.ones((2, 2)))
    close(fad.grad(lambda A: np.sum(L.inv(A)))(np.eye(2)), -np.ones((2, 2)))


def test_eigh_repeated_eigenvalues():
    A = np.diag([1.0, 1.0, 2.0])
    # eigenvalues alone: finite (trace, and the split of the repeated pair)
    close(fad.grad(lambda A: np.sum(L.eigvalsh(A)))(A), np.eye(3), atol=1e-12)
    close(fad.grad(lambda A: L.eigvalsh(A)[2])(A), np.diag([0.0, 0.0, 1.0]), atol=1e-12)
    close(fad.jacfwd(lambda A: L.eigvalsh(A))(A)[2], np.diag([0.0, 0.0, 1.0]), atol=1e-12)
    # an eigenvector within the repeated pair is not unique: NaN
    g = fad.grad(lambda A: L.eigh(A)[1][1, 0])(A)
    assert np.all(np.isnan(g))
    t = fad.jvp(lambda A: L.eigh(A)[1], A, np.ones((3, 3)))[1]
    assert np.isnan(t).any()
    # the eigenvector of the simple eigenvalue is fine
    g = fad.grad(lambda A: np.sum(L.eigh(A)[1][:, 2] ** 2 * np.array([1.0, 2.0, 3.0])))(A)
    assert np.all(np.isfinite(g))


def test_eig_repeated_eigenvalues():
    A = np.diag([1.0, 1.0, 2.0])
    close(fad.grad(lambda A: np.sum(L.eigvals(A)))(A), np.eye(3), atol=1e-12)
    assert np.isnan(fad.grad(lambda A: L.eig(A)[1][1, 0])(A)).all()


def test_svd_repeated_singular_values():
    A = np.eye(3)
    close(fad.grad(lambda A: np.sum(L.svd(A, compute_uv=False)))(A), np.eye(3), atol=1e-12)
    assert np.isnan(fad.grad(lambda A: L.svd(A)[0][0, 1])(A)).all()
    close(fad.grad(lambda A: np.sum(L.svd(A)[1]))(2 * A), np.eye(3), atol=1e-12)
    # the polar factor U Vh is smooth at a repeated singular value: reverse mode
    # gets it (only U - V rotations matter); forward mode cannot tell and gives NaN
    W = np.arange(9.0).reshape(3, 3)
    polar = lambda A: np.sum(W * (lambda U, s, Vh: U @ Vh)(*L.svd(A)))
    for A in [np.eye(3), np.diag([2.0, 2.0, 1.0])]:
        fd_close(fad.grad(polar)(A), fd_grad(polar, A))
        assert np.isnan(fad.jacfwd(polar)(A)[0, 1])
    D = np.diag([2.0, 2.0, 1.0])      # directions off the repeated pair: finite
    fd_close(fad.jacfwd(polar)(D)[2, 0], fd_grad(polar, D)[2, 0])


def test_cholesky_and_eigh_read_one_triangle():
    rng = rng_for("tri")
    A = _spd(rng, (3, 3))
    for f, lower in [(lambda A: np.sum(L.cholesky(A) ** 2), True),
                     (lambda A: np.sum(L.cholesky(A, upper=True) ** 2), False),
                     (lambda A: L.eigvalsh(A) @ np.array([1.0, 2.0, 4.0]), True),
                     (lambda A: L.eigvalsh(A, UPLO="U") @ np.array([1.0, 2.0, 4.0]), False)]:
        g = fad.grad(f)(A)
        zero = np.triu(np.ones((3, 3)), 1) if lower else np.tril(np.ones((3, 3)), -1)
        assert np.all(g[zero == 1] == 0.0)
        fd_close(g, fd_grad(f, A), rtol=1e-6, atol=1e-7)
    # a symmetric parametrization: the chain rule gives the symmetric derivative
    S = lambda p: np.reshape(p, (3, 3)) + np.reshape(p, (3, 3)).T
    p = rng.normal(size=9) * 0.1 + np.eye(3).ravel()
    h = lambda p: np.sum(L.cholesky(S(p)) ** 3)
    fd_close(fad.grad(h)(p), fd_grad(h, p), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("m", [2, 5, 7])
def test_pinv_rank_deficient_and_repeated_singular_values(m):
    # x^T x: (m, m) of rank min(m, 5); the rank is constant nearby
    x = rng_for("pinvrank", m).normal(size=(5, m))
    f = lambda x: np.linalg.pinv(x.T @ x)
    J = fd_jacobian(f, x)
    fd_close(fad.jacrev(f)(x), J, rtol=1e-5, atol=1e-6, scale_atol=True)
    fd_close(fad.jacfwd(f)(x), J, rtol=1e-5, atol=1e-6, scale_atol=True)
    loss = lambda x: np.sum(np.sin(f(x)))
    fd_close(fad.hessian(loss)(x), fd_hessian(loss, x), rtol=1e-4, atol=1e-5, scale_atol=True)
    # at the identity (all singular values equal) pinv is the inverse: finite
    g = lambda A: np.sum(np.sin(L.pinv(A)) * np.arange(1.0, 10.0).reshape(3, 3))
    fd_close(fad.grad(g)(np.eye(3)), fd_grad(g, np.eye(3)))


EMPTY = [
    (lambda A: L.inv(A), (0, 0)), (lambda A: L.inv(A), (0, 3, 3)), (lambda A: L.det(A), (0, 0)),
    (lambda A: L.det(A), (0, 2, 2)), (lambda A: L.slogdet(A)[1], (0, 2, 2)),
    (lambda A: L.cholesky(A), (0, 0)), (lambda A: L.eigh(A)[1], (0, 3, 3)),
    (lambda A: L.svd(A, compute_uv=False), (0, 3, 2)),
    (lambda A: L.svd(A, compute_uv=False), (3, 0)),
    (lambda A: L.svd(A, full_matrices=False)[2], (0, 3)), (lambda A: L.qr(A)[0], (0, 3, 2)),
    (lambda A: L.qr(A)[1], (3, 0)), (lambda A: L.pinv(A), (0, 3, 2)), (lambda A: L.pinv(A), (3, 0)),
    (lambda A: L.norm(A), (0, 3)), (lambda A: L.norm(A, axis=0), (0, 3)),
    (lambda A: L.norm(A, 1, axis=1), (0, 3)), (lambda A: L.solve(A, np.reshape(A, (0,))), (0, 0)),
]


@pytest.mark.parametrize("i", range(len(EMPTY)))
def test_empty_inputs_give_numpys_shapes(i):
    f, shape = EMPTY[i]
    x = np.zeros(shape)
    y = np.asarray(f(x))
    for J in (fad.jacrev(f)(x), fad.jacfwd(f)(x)):
        assert J.shape == y.shape + x.shape
        assert np.all(J == 0)


def test_hessian_sparsity_of_a_stack_is_per_matrix():
    A = _mat(rng_for("hs"), (3, 2, 2))
    f = lambda A: np.sum(L.det(A) ** 2) + np.sum(L.inv(A))
    pat = fad.hessian_sparsity(f)(A).toarray()
    H = fad.hessian(f)(A).reshape(12, 12)
    assert np.all(pat[np.abs(H) > 1e-12])
    blocks = np.kron(np.eye(3), np.ones((4, 4)))
    assert not pat[blocks == 0].any()
    fd_close(H, fd_hessian(f, A).reshape(12, 12), rtol=1e-5, atol=1e-6, scale_atol=True)


def test_slogdet_sign_is_recomputed_at_a_replay():
    A = np.diag([1.0, 2.0, 3.0])
    f = lambda A: (lambda r: r.sign * np.exp(r.logabsdet))(L.slogdet(A))
    tape = fad.record(f, A)
    B = np.diag([-1.0, 2.0, 3.0])
    close(tape(B), -6.0)
    close(tape.gradient(B), np.linalg.det(B) * np.linalg.inv(B).T)
    assert fad.jacobian_sparsity(lambda A: L.slogdet(A)[0])(A).nnz == 0


def test_matrix_rank_is_a_plain_integer():
    A = np.array([[1.0, 2.0], [2.0, 4.0]])
    close(fad.grad(lambda A: np.linalg.matrix_rank(A) * np.sum(A))(A), np.ones((2, 2)))
    close(fad.grad(lambda A: np.linalg.matrix_rank(A) * np.sum(A))(np.eye(2)), 2 * np.ones((2, 2)))


# ---------------------------------------------------------------- results and errors

def test_results_match_numpy_and_are_named():
    rng = rng_for("named")
    A = _spd(rng, (3, 3))
    seen = {}

    def f(A):
        r = L.slogdet(A)
        e = L.eigh(A)
        s = L.svd(A)
        q = L.qr(A)
        seen.update(sign=_v(r.sign), w=e.eigenvalues.value, V=e.eigenvectors.value,
                    S=s.S.value, U=s.U.value, Q=q.Q.value, R=q.R.value)
        return r.logabsdet
    fad.grad(f)(A)
    w, V = np.linalg.eigh(A)
    U, S, _ = np.linalg.svd(A)
    Q, R = np.linalg.qr(A)
    assert seen["sign"] == 1.0
    close(seen["w"], w, rtol=1e-14)
    close(seen["V"], V, rtol=1e-14)
    close(seen["S"], S, rtol=1e-14)
    close(seen["U"], U, rtol=1e-14)
    close(seen["Q"], Q, rtol=1e-14)
    close(seen["R"], R, rtol=1e-14)


def test_plain_arrays_are_just_numpy():
    rng = rng_for("plain")
    A = _spd(rng, (3, 3))
    close(fad.linalg.inv(A), np.linalg.inv(A))
    close(fad.linalg.det(A), np.linalg.det(A))
    close(fad.linalg.cholesky(A), np.linalg.cholesky(A))
    close(fad.linalg.norm(A, "nuc"), np.linalg.norm(A, "nuc"))
    close(fad.linalg.pinv(A), np.linalg.pinv(A))
    close(fad.linalg.svd(A)[1], np.linalg.svd(A)[1])
    close(fad.linalg.matrix_power(A, -2), np.linalg.matrix_power(A, -2))


def test_wide_qr_matches_numpy():
    A = rng_for("wide").normal(size=(2, 3, 5))
    out = {}
    fad.grad(lambda A: np.sum(L.qr(A)[1]) + 0 * np.sum(out.setdefault("qr", L.qr(A))[0]))(A)
    Q, R = np.linalg.qr(A)
    close(out["qr"][0].value, Q, rtol=1e-13, atol=1e-14)
    close(out["qr"][1].value, R, rtol=1e-13, atol=1e-14)


def _still_works():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    close(fad.grad(lambda A: L.det(A))(A), np.array([[3.0, -1.0], [-1.0, 2.0]]))


@pytest.mark.parametrize("call,exc,match", [
    (lambda A: L.inv(A[0]), np.linalg.LinAlgError, r"inv.*shape \(3,\)"),
    (lambda A: L.det(A[:, :2]), np.linalg.LinAlgError, r"det.*square.*\(3, 2\)"),
    (lambda A: L.cholesky(A[:2]), np.linalg.LinAlgError, r"cholesky.*\(2, 3\)"),
    (lambda A: L.eigh(A, "X"), ValueError, "UPLO"),
    (lambda A: L.solve(A, A[0, :2]), np.linalg.LinAlgError, r"solve.*\(2,\)"),
    (lambda A: L.svd(A[:2]), NotImplementedError, "full_matrices=False"),
    (lambda A: L.qr(np.concatenate([A, A]), mode="complete"), NotImplementedError, "reduced"),
    (lambda A: L.qr(A, mode="raw"), NotImplementedError, "raw"),
    (lambda A: L.qr(A, mode="bogus"), ValueError, "mode"),
    (lambda A: L.matrix_power(A, 1.5), TypeError, "integer"),
    (lambda A: L.norm(A, "bogus"), ValueError, "order"),
    (lambda A: L.norm(A, 2, axis=(0, 0)), ValueError, "axis"),
    (lambda A: L.norm(A, 2, axis=5), ValueError, "out of bounds"),
    (lambda A: L.norm(np.reshape(A, (1, 3, 3)), 2), ValueError, "dimensions"),
    (lambda A: L.norm(A[0, 0], 1), ValueError, "dimensions"),
    (lambda A: L.multi_dot([A]), ValueError, "two"),
    (lambda A: L.multi_dot([A, np.reshape(A, (1, 3, 3))]), ValueError, "array 1"),
    (lambda A: L.eigvals(A[:2, :2] * np.array([[1.0, 1.0], [-1.0, 1.0]])), ValueError,
     "complex eigenvalues"),
    (lambda A: L.eig(A[:2]), np.linalg.LinAlgError, r"eig.*\(2, 3\)"),
    (lambda A: L.lstsq(A, A[:2]), np.linalg.LinAlgError, r"lstsq.*\(2, 3\)"),
    (lambda A: L.vector_norm(A, axis=(0, 3)), ValueError, "axis 3"),
    (lambda A: L.matrix_norm(A[0]), np.linalg.LinAlgError, r"matrix_norm.*\(3,\)"),
    (lambda A: L.norm(A[0], "nuc"), ValueError, "'nuc' for vectors"),
    (lambda A: L.cond(A[:2], "fro"), np.linalg.LinAlgError, r"cond.*\(2, 3\)"),
    (lambda A: L.pinv(A[0]), np.linalg.LinAlgError, r"pinv.*\(3,\)"),
])
def test_errors_are_clear_and_fastad_keeps_working(call, exc, match):
    A = np.eye(3) + 0.1
    with pytest.raises(exc, match=match):
        fad.grad(lambda A: np.sum(call(A)))(A)
    _still_works()


def test_numpy2_aliases():
    rng = rng_for("aliases")
    A, B = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    W = rng.normal(size=(3, 3))
    if hasattr(np.linalg, "matmul"):
        close(fad.grad(lambda A: np.sum(W * np.linalg.matmul(A, B)))(A), W @ B.T)
        close(fad.grad(lambda A: np.sum(W[0] * np.linalg.vecdot(A, B)))(A), W[0][:, None] * B)
        close(fad.grad(lambda A: np.sum(W * np.linalg.matrix_transpose(A)))(A), W.T)
        close(fad.grad(lambda A: np.linalg.vector_norm(A))(A), A / np.linalg.norm(A))


def test_pickled_tape_replays():
    import pickle
    A = _spd(rng_for("pickle"), (3, 3))

    def f(A):
        w, V = L.eigh(A)
        return (np.sum(w * V[0] ** 2) + L.norm(A, "nuc") + np.sum(L.cholesky(A))
                + L.slogdet(A)[1] + np.sum(L.qr(A)[1]) + L.norm(A[0]) + np.sum(L.pinv(A)))
    tape = fad.record(f, A)
    tape2 = pickle.loads(pickle.dumps(tape))
    B = A + 0.01 * np.diag([1.0, 2.0, 3.0])
    close(tape2(B), f(B), rtol=1e-12)
    close(tape2.gradient(B), tape.gradient(B), rtol=1e-13, atol=1e-13)
    fd_close(tape2.gradient(B), fd_grad(f, B), rtol=1e-5, atol=1e-6)
