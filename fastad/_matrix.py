"""Helpers for fastad.linalg's rules: stacks of matrices, traced (fastad
Arrays, when a rule is differentiated for second derivatives) or not."""
import numpy as np

from fastad import arrays
from fastad._var import Array, Var, make_array
from fastad.arrays import reshape

LinAlgError = np.linalg.LinAlgError


def _traced(x):
    return type(x) is Array or type(x) is Var


def _val(x):
    return np.asarray(x.value if _traced(x) else x, dtype=np.float64)


def _T(a):
    """Swap the last two axes."""
    axes = list(range(np.ndim(a)))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return np.transpose(a, axes)


def _broadcast(a, shape):
    if not _traced(a):
        return np.broadcast_to(a, shape)
    tape, idx, _, _ = arrays._slots(a)
    return make_array(tape, np.ascontiguousarray(np.broadcast_to(idx, shape)))


def _mm(a, b):
    """a @ b for stacks of matrices (NumPy's broadcasting), traced or not."""
    if not (_traced(a) or _traced(b)):
        return np.matmul(a, b)
    sa, sb = np.shape(a), np.shape(b)
    if len(sa) <= 2 and len(sb) <= 2:
        return arrays.matmul(a, b)
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    out = batch + (sa[-2], sb[-1])
    if 0 in out:
        return np.zeros(out)
    a, b = _broadcast(a, batch + sa[-2:]), _broadcast(b, batch + sb[-2:])
    return reshape(arrays.stack([arrays.matmul(a[i], b[i]) for i in np.ndindex(batch)]), out)


def _sum_to(x, shape):
    """Sum x, of shape (k,) + broadcast shape, to (k,) + shape: over the axes
    `shape` was broadcast along (the seed axis k stays)."""
    xs = np.shape(x)
    lead = len(xs) - 1 - len(shape)
    axes = tuple(range(1, 1 + lead)) + tuple(1 + lead + i for i, s in enumerate(shape)
                                             if s == 1 and xs[1 + lead + i] != 1)
    if axes:
        x = np.sum(x, axis=axes, keepdims=True)
    return reshape(x, xs[:1] + tuple(shape)) if np.shape(x) != xs[:1] + tuple(shape) else x


def _diag(m):
    """The diagonals of a stack of square matrices."""
    return np.sum(m * np.eye(np.shape(m)[-1]), axis=-1)


def _tri_grad(G, lower=True):
    """The gradient for a function of one triangle of a symmetric matrix,
    from G with dA-derivative <G, dA> for symmetric dA."""
    n = np.shape(G)[-1]
    mask = np.tril(np.ones((n, n)), -1) if lower else np.triu(np.ones((n, n)), 1)
    return (G + _T(G)) * mask + G * np.eye(n)


def _sym_from(dA, lower=True):
    """The symmetric matrix NumPy sees from one triangle (traced or not)."""
    n = np.shape(dA)[-1]
    t = dA * (np.tril(np.ones((n, n)), -1) if lower else np.triu(np.ones((n, n)), 1))
    return t + _T(t) + dA * np.eye(n)


def _square(name, a):
    s = np.shape(a)
    if len(s) < 2 or s[-1] != s[-2]:
        raise LinAlgError(f"fastad.linalg.{name}: expected a square matrix or a stack of "
                          f"them (shape (..., n, n)), got shape {s}")


def _matrix(name, a):
    if np.ndim(a) < 2:
        raise LinAlgError(f"fastad.linalg.{name}: expected a matrix or a stack of them "
                          f"(shape (..., m, n)), got shape {np.shape(a)}")


def _gaps(w):
    """F[i, j] = 1 / (w_j - w_i) off the diagonal, and the mask `same` of the
    pairs i != j with equal values (F is 0 there)."""
    wv = _val(w)
    n = wv.shape[-1]
    d = wv[..., None, :] - wv[..., :, None]
    scale = np.max(np.abs(wv), axis=-1, keepdims=True)[..., None] if n else 0.0
    same = (np.abs(d) <= 64 * np.finfo(float).eps * scale) & ~np.eye(n, dtype=bool)
    off = (~np.eye(n, dtype=bool) & ~same).astype(float)
    F = off / (w[..., None, :] - w[..., :, None] + (1.0 - off))   # nothing divides by 0
    return F, same


def _nan_where(x, bad):
    """x, with NaN in the matrices where `bad` holds (undefined derivatives)."""
    if not np.any(bad):
        return x
    return x * np.where(bad, np.nan, 1.0)[..., None, None]


def _undefined(same, X):
    """Which matrices of the stack depend on a non-unique eigenvector basis."""
    return np.any(same & (_val(X) != 0), axis=(-2, -1))


def _per_matrix(out_size):
    """A sparsity rule for a primitive of one stack of matrices: each matrix's
    outputs (out_size(m, n) of them) depend on that matrix only."""
    def rule(shape):
        m, n = shape[-2:]
        count = int(np.prod(shape[:-2], dtype=np.int64))
        return np.kron(np.eye(count, dtype=bool), np.ones((out_size(m, n), m * n), dtype=bool))
    return rule
