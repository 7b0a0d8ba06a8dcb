"""Linear algebra on fastad values: solve and norm, primitives with their
own derivative rules (fastad.primitives), and what np.linalg.norm does on
fastad arrays.
"""
import numpy as np

from fastad import arrays
from fastad.arrays import reshape
from fastad.primitives import primitive

__all__ = ["solve", "norm"]


@primitive
def solve(A, b):
    """x = A^{-1} b (np.linalg.solve), for b of shape (n,) or (n, m)."""
    return np.linalg.solve(A, b)


@solve.defvjp(vectorized=True)
def _solve_vjp(ybar, y, A, b):
    # One transposed solve for all k seeds: bbar = A^{-T} ybar, Abar = -bbar y^T.
    # Written with solve itself and NumPy operations, so fastad can
    # differentiate this rule too (Hessians through solve).
    k, n = ybar.shape[0], A.shape[0]
    if y.ndim == 1:
        bbar = solve(A.T, ybar.T).T                                    # (k, n)
        return -bbar[:, :, None] * y[None, None, :], bbar
    m = y.shape[1]
    rhs = np.reshape(np.transpose(ybar, (1, 2, 0)), (n, m * k))        # k seeds side by side
    bbar = np.transpose(np.reshape(solve(A.T, rhs), (n, m, k)), (2, 0, 1))
    return -np.stack([bbar[j] @ y.T for j in range(k)]), bbar


@solve.defjvp(vectorized=True)
def _solve_jvp(xdot, y, A, b):
    Adot, bdot = xdot
    k = (Adot if Adot is not None else bdot).shape[0]
    rhs = np.zeros((k,) + y.shape) if bdot is None else bdot.copy()
    if Adot is not None:
        rhs -= Adot @ y if y.ndim == 2 else np.einsum("kij,j->ki", Adot, y)
    n = A.shape[0]
    flat = np.moveaxis(rhs, 0, -1).reshape(n, -1)
    return np.moveaxis(np.linalg.solve(A, flat).reshape(y.shape + (k,)), -1, 0)


@primitive
def norm(x):
    """The Euclidean norm of x (all elements); its derivative at 0 is taken as 0."""
    return float(np.sqrt(np.sum(np.square(x))))


@norm.defvjp(vectorized=True)
def _norm_vjp(ybar, y, x):
    # x / |x| per seed (0 at x = 0); NumPy operations only, so Hessians work too
    shape = np.shape(x)
    if y == 0:
        return np.zeros((np.shape(ybar)[0],) + shape)
    return np.reshape(ybar, (-1,) + (1,) * len(shape)) * reshape(x / y, (1,) + shape)


@norm.defjvp(vectorized=True)
def _norm_jvp(xdot, y, x):
    if y == 0:
        return np.zeros(xdot.shape[0])
    return np.tensordot(xdot, np.asarray(x), axes=np.ndim(x)) / y


arrays.implements(np.linalg.norm, lambda x: norm(x), "linalg.norm")
