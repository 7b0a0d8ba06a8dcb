"""Issue #18, items 2 and 7: sparse helpers refuse inconsistent CSR/CSC/BSR/COO
index arrays (before SciPy's compiled conversions trust them), and empty
slices work in every sparsity path."""
import numpy as np
import pytest
import scipy.sparse as sp

import fastad as fad
from conftest import fd_grad, fd_jacobian

X = np.array([1.0, 2.0, -0.5, 1.5])


def _pattern(fmt):
    A = sp.random(6, 6, density=0.4, random_state=3, format="csr") + sp.eye(6, format="csr")
    return A.asformat(fmt)


def _damage(A, what, value):
    if what in ("row", "col"):
        getattr(A, what)[0] = value
    else:
        getattr(A, what)[what == "indptr" and -1 or 0] = value
    return A


CASES = [("csr", "indptr", 10**6, "indptr"), ("csr", "indptr", -3, "indptr"),
         ("csr", "indices", 10**6, "indices"), ("csr", "indices", -1, "indices"),
         ("csc", "indptr", 10**6, "indptr"), ("csc", "indices", 99, "indices"),
         ("bsr", "indptr", 10**6, "indptr"), ("bsr", "indices", 7, "indices"),
         ("coo", "row", 6, "outside"), ("coo", "col", -2, "outside")]


@pytest.mark.parametrize("fmt,what,value,match", CASES)
@pytest.mark.parametrize("call", ["column", "row", "bidirectional", "hessian"])
def test_damaged_sparse_pattern_is_refused(fmt, what, value, match, call):
    A = _damage(_pattern(fmt), what, value)
    who = "color_hessian" if call == "hessian" else "color_jacobian"
    with pytest.raises(ValueError, match=f"fastad.{who}: .*{match}"):
        if call == "hessian":
            fad.color_hessian(A)
        else:
            fad.color_jacobian(A, partition=call)
    # and fastad keeps working
    colors = fad.color_jacobian(_pattern("csr"))
    assert colors.shape == (6,)


def test_indptr_that_decreases_or_has_the_wrong_length():
    A = _pattern("csr")
    A.indptr[2], A.indptr[3] = A.indptr[3], A.indptr[2] - 1
    with pytest.raises(ValueError, match="never decrease"):
        fad.color_jacobian(A)
    B = _pattern("csr")
    B.indptr = B.indptr[:-2]
    with pytest.raises(ValueError, match="indptr has length"):
        fad.color_hessian(B)


def test_valid_patterns_of_every_format_give_valid_colorings():
    for fmt in ("csr", "csc", "coo", "bsr", "lil", "dok", "dia"):
        A = _pattern(fmt)
        c = fad.color_jacobian(A)
        dense = A.toarray() != 0
        for color in np.unique(c):            # columns of one color share no row
            assert (dense[:, c == color].sum(axis=1) <= 1).all()


def test_the_issue_example_and_a_random_fuzz():
    A = sp.csr_matrix(np.eye(3))
    A.indptr[-1] = 10**6
    with pytest.raises(ValueError, match="indptr"):
        fad.color_jacobian(A)
    with pytest.raises(ValueError, match="indptr"):
        fad.color_hessian(A)
    rng = np.random.default_rng(2)
    refused = 0
    for _ in range(300):
        fmt = str(rng.choice(["csr", "csc", "coo", "bsr"]))
        A = sp.random(5, 5, density=0.5, random_state=int(rng.integers(1 << 30)), format=fmt)
        arrays = [A.row, A.col] if fmt == "coo" else [A.indptr, A.indices]
        arr = arrays[rng.integers(2)]
        if arr.size:
            arr[rng.integers(arr.size)] = rng.choice([-1, 5, 10**6, -10**6, 2])
        try:
            if rng.random() < 0.5:
                fad.color_jacobian(A, partition=str(rng.choice(["column", "row"])))
            else:
                fad.color_hessian(A)
        except ValueError:
            refused += 1
    assert refused > 100


# ------------------------------------------------------------ empty slices (item 7)

EMPTY = {
    "sum": (lambda x: np.sum(x[:0]) + np.sum(x * x), "x"),
    "sum_scaled": (lambda x: np.sum(x[:0] * 2.0) + x[0] * x[1], "x"),
    "sum_axis": (lambda x: np.sum(x[:0] ** 2, axis=0) + x[0] ** 3, "x"),
    "sum_neg_axis_2d": (lambda x: np.sum(np.sum(x.reshape(2, 2)[:, :0], axis=-1)) + np.sum(x ** 3),
                        "x"),
    "keepdims": (lambda x: np.sum(x[:0], keepdims=True)[0] + x[2] * x[3], "x"),
    "tuple_axis": (lambda x: np.sum(x.reshape(2, 2)[:0, :], axis=(0, 1)) + x[1] ** 2 * x[0], "x"),
    "matmul": (lambda x: x[:0] @ x[:0] + x[0] * x[3], "x"),
    "concat": (lambda x: np.sum(fad.concatenate([x[:0], x[1:3]]) ** 2), "x"),
    "loop_i0": (lambda x: sum(np.sum(x[:i]) * x[i] for i in range(4)), "x"),
}


@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_slices_in_every_sparsity_path(name):
    f, _ = EMPTY[name]
    g = fd_grad(f, X)
    H = fd_jacobian(lambda z: fd_grad(f, z, h=1e-5), X, h=1e-5)
    np.testing.assert_allclose(fad.grad(f)(X), g, rtol=1e-6, atol=1e-7)
    Jp = fad.jacobian_sparsity(f)(X).toarray().reshape(-1)
    assert Jp[np.abs(g) > 1e-8].all()
    np.testing.assert_allclose(fad.sparse_jacobian(f)(X).toarray().reshape(-1), g,
                               rtol=1e-6, atol=1e-7)
    Hp = fad.hessian_sparsity(f)(X).toarray()
    assert Hp[np.abs(H) > 1e-4].all()
    np.testing.assert_allclose(fad.sparse_hessian(f)(X).toarray(), H, rtol=1e-4, atol=1e-4)


def test_empty_slice_vector_output():
    f = lambda x: fad.stack([np.sum(x[:0]), x[1] * x[2], np.sum(x[2:2] * x[:0])])  # noqa: E731
    J = np.zeros((3, 4))
    J[1, 1], J[1, 2] = X[2], X[1]
    pat = fad.jacobian_sparsity(f)(X).toarray()
    assert pat[J != 0].all() and not pat[0].any() and not pat[2].any()
    np.testing.assert_allclose(fad.sparse_jacobian(f)(X).toarray(), J, rtol=1e-12)
    t = fad.record(f, X)
    np.testing.assert_allclose(t.sparse_jacobian(X + 0.25).toarray()[1, 1:3],
                               [X[2] + 0.25, X[1] + 0.25])
