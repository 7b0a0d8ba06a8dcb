"""The compiled pieces of fad.minimize's sparse-Hessian path (issue #19,
item 6): the CSR product with a kept pattern, Steihaug-CG's fused vector
updates, and the gradient carried by the Hessian's sweep.  Answers come from
scipy (csr @ v, rosen_der, rosen_hess), plain NumPy and the Rosenbrock
formula."""
import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sps

import fastad as fad
from fastad._kernels import SparseMatvec, cg_direction, cg_step
from fastad.optimize import _sparse_hessian_at

from conftest import rosen_products, rosen_vec


def random_csr(m, n, density, seed):
    A = sps.random(m, n, density=density, random_state=seed, format="csr")
    A.sort_indices()
    return A


@pytest.mark.parametrize("shape,density", [((7, 7), 0.4), ((30, 11), 0.2), ((5, 40), 0.05),
                                           ((4, 4), 0.0)])
def test_sparse_matvec_against_scipy(shape, density):
    A = random_csr(*shape, density, seed=shape[0])
    mv = SparseMatvec(A.indptr, A.indices, A.shape)
    assert (mv.n_rows, mv.n_cols, mv.nnz) == (shape[0], shape[1], A.nnz)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(shape[1])
        data = rng.standard_normal(A.nnz)
        B = sps.csr_matrix((data, A.indices, A.indptr), shape=A.shape)
        np.testing.assert_allclose(mv.matvec(data, v), B @ v, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(mv.matvec(data, v), B.toarray() @ v, rtol=1e-13, atol=1e-13)


def test_sparse_matvec_checks_the_pattern_once_and_sizes_every_call():
    A = random_csr(6, 6, 0.5, seed=3)
    with pytest.raises(ValueError, match="indptr must have 7 entries"):
        SparseMatvec(A.indptr[:-1], A.indices, A.shape)
    bad = A.indptr.copy()
    bad[2], bad[3] = bad[3], bad[2] - 1
    with pytest.raises(ValueError, match="indptr must rise"):
        SparseMatvec(bad, A.indices, A.shape)
    with pytest.raises(ValueError, match="indptr must rise"):
        SparseMatvec(A.indptr, A.indices[:-1], A.shape)
    idx = A.indices.copy()
    idx[0] = 6
    with pytest.raises(ValueError, match="column index lies outside 0..5"):
        SparseMatvec(A.indptr, idx, A.shape)
    idx[0] = -1
    with pytest.raises(ValueError, match="column index lies outside"):
        SparseMatvec(A.indptr, idx, A.shape)
    mv = SparseMatvec(A.indptr, A.indices, A.shape)
    with pytest.raises(ValueError, match="values and a vector"):
        mv.matvec(np.ones(A.nnz + 1), np.ones(6))
    with pytest.raises(ValueError, match="values and a vector"):
        mv.matvec(np.ones(A.nnz), np.ones(5))
    # and keeps working
    np.testing.assert_allclose(mv.matvec(A.data, np.ones(6)), A @ np.ones(6), rtol=1e-14)


def test_cg_step_and_direction_against_numpy():
    rng = np.random.default_rng(2)
    z, r, d, hd = (rng.standard_normal(50) for _ in range(4))
    z0, r0, d0 = z.copy(), r.copy(), d.copy()
    rr = cg_step(z, r, d, hd, 0.3)
    np.testing.assert_allclose(z, z0 + 0.3 * d, rtol=1e-15)
    np.testing.assert_allclose(r, r0 + 0.3 * hd, rtol=1e-15)
    np.testing.assert_allclose(rr, r @ r, rtol=1e-13)
    cg_direction(d, r, 0.7)
    np.testing.assert_allclose(d, 0.7 * d0 - r, rtol=1e-15)
    with pytest.raises(ValueError, match="differ in length"):
        cg_step(z, r[:-1], d, hd, 1.0)
    with pytest.raises(ValueError, match="differ in length"):
        cg_direction(d, r[:-1], 1.0)


def rosen_hess(x):
    return so.rosen_hess(x)


@pytest.mark.parametrize("f", [rosen_products, rosen_vec], ids=["loop", "vectorized"])
def test_sparse_hessian_at_a_point_with_and_without_the_gradient(f):
    x = np.random.default_rng(4).uniform(-1.2, 1.2, 80)
    tape = fad.record(f, x)
    y = np.random.default_rng(5).uniform(-1.2, 1.2, 80)     # another point on the tape
    v = np.random.default_rng(6).standard_normal(80)
    mv, data = _sparse_hessian_at(tape.at(y))
    np.testing.assert_allclose(mv.matvec(data, v), rosen_hess(y) @ v, rtol=1e-12, atol=1e-10)
    (mv2, data2), g = _sparse_hessian_at(tape.at(y), gradient=True)
    assert mv2 is mv                                       # the pattern's product is kept
    np.testing.assert_allclose(data2, data, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(g, so.rosen_der(y), rtol=1e-12, atol=1e-10)
    # the nonzeros are the Hessian's, in the plan's CSR order
    plan = tape.sparse_cache["hessian_plan"]
    H = sps.csr_matrix((data2, plan.indices, plan.indptr), shape=plan.shape).toarray()
    np.testing.assert_allclose(H, rosen_hess(y), rtol=1e-12, atol=1e-10)


def test_gradient_hvp_gather_refuses_a_vector_output():
    x = np.ones(20)
    tape = fad.record(lambda x: x * x, x)
    with pytest.raises(ValueError, match="gradient needs a scalar output"):
        tape.at(x)._gradient_hvp_gather(np.ones((1, 20)), np.zeros(1, dtype=np.intp))


@pytest.mark.parametrize("f", [rosen_products, rosen_vec], ids=["loop", "vectorized"])
def test_minimize_sparse_path_agrees_with_hessian_free(f):
    x0 = np.tile([-1.2, 1.0], 100)
    sparse = fad.minimize(f, x0, hessian="sparse", maxiter=5000)
    free = fad.minimize(f, x0, hessian="hvp", maxiter=5000)
    for res in (sparse, free):
        assert res.success, res.message
        np.testing.assert_allclose(res.x, np.ones(200), rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.jac, so.rosen_der(res.x), rtol=0, atol=1e-9)
    assert sparse.nhess > 0 and free.nhess == 0
    # the same method, products formed two ways: the same path up to rounding
    assert abs(sparse.nit - free.nit) <= max(5, free.nit // 20)
