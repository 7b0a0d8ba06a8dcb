"""np.linalg on fastad values: fad.linalg.<name> and np.linalg.<name> on
fastad arrays.

The factorizations (and inv, det, pinv) are primitives (fastad.primitives)
with the standard matrix-derivative rules (Giles 2008; Murray 2016 for
Cholesky; Golub & Pereyra for pinv; the SVD and QR rules as in autograd and
JAX).  Each vjp rule is written in NumPy operations fastad can record
(matrix products, element-wise arithmetic and these primitives), so second
derivatives come from differentiating the rule; each jvp rule works on
plain ndarrays.  Multiple outputs (eigh, svd, qr) are packed into one array
by the primitive and unpacked (slicing records nothing).  The rest (norm,
cond, matrix_power, multi_dot, lstsq, wide qr) is composed from those.

Stacks of matrices (leading batch dimensions) work wherever NumPy allows
them.  Conventions where NumPy's function is not differentiable:

- cholesky, eigh and eigvalsh (and svd, pinv with hermitian=True) read one
  triangle of the input only (the lower, or the one UPLO / upper= names),
  as NumPy does; the derivative is that of NumPy's function, so the other
  triangle gets a zero gradient.  For a symmetric A(theta) the chain rule
  gives the full derivative.
- eig/eigvals: real spectra only (fastad is real-valued); a complex one
  raises ValueError.
- eigenvectors (singular vectors) are not unique at a repeated eigenvalue
  (singular value): a derivative that depends on the basis there is NaN;
  derivatives of eigenvalues (singular values) alone stay finite, and so
  (in reverse mode) do those of U Vh-like functions the SVD determines.
- det at a singular matrix: the gradient is the cofactor matrix (from an
  SVD); inv, solve, slogdet raise LinAlgError there as NumPy does.
- pinv: the derivative holds where the rank is locally constant.
- norm: derivative 0 at the zero vector (all ords); max/min based ords
  (inf, -inf, matrix 1/-1/inf/-inf, 2/-2 over singular values) send it to
  the first extreme element.
- svd(full_matrices=True) of a non-square matrix, qr(mode='complete') of a
  tall one: the extra columns are not unique, so not differentiable: a
  NotImplementedError asks for the reduced form.
"""
import collections
import numbers
import operator

import numpy as np

from fastad import arrays
from fastad._matrix import (
    LinAlgError, _T, _diag, _gaps, _matrix, _mm, _nan_where, _per_matrix, _square, _sum_to,
    _sym_from, _traced, _tri_grad, _undefined, _val,
)
from fastad.arrays import reshape
from fastad.primitives import primitive

__all__ = ["solve", "inv", "det", "slogdet", "cholesky", "eigh", "eigvalsh", "eig", "eigvals",
           "svd", "svdvals", "qr", "pinv", "norm", "vector_norm", "matrix_norm", "cond",
           "matrix_rank", "matrix_power", "multi_dot", "lstsq", "tensorinv", "tensorsolve"]

SlogdetResult = collections.namedtuple("SlogdetResult", "sign logabsdet")
EighResult = collections.namedtuple("EighResult", "eigenvalues eigenvectors")
EigResult = collections.namedtuple("EigResult", "eigenvalues eigenvectors")
SVDResult = collections.namedtuple("SVDResult", "U S Vh")
QRResult = collections.namedtuple("QRResult", "Q R")
LstsqResult = collections.namedtuple("LstsqResult", "x residuals rank s")



# ---------------------------------------------------------------- solve, inv, det

@primitive
def solve(A, b):
    """x = A^{-1} b (np.linalg.solve): b of shape (..., n) when 1-D, else (..., n, m)."""
    return np.linalg.solve(A, b)


@solve.defvjp(vectorized=True)
def _solve_vjp(ybar, y, A, b):
    # bbar = A^{-T} ybar, Abar = -bbar y^T; written with solve itself and NumPy
    # operations, so fastad can differentiate this rule too (Hessians through solve).
    k, n = ybar.shape[0], A.shape[-1]
    if np.ndim(A) == 2 and np.ndim(b) <= 2:     # one factorization for all k seeds
        if y.ndim == 1:
            bbar = solve(A.T, ybar.T).T                                    # (k, n)
            return -bbar[:, :, None] * y[None, None, :], bbar
        m = y.shape[1]
        rhs = np.reshape(np.transpose(ybar, (1, 2, 0)), (n, m * k))    # k seeds side by side
        bbar = np.transpose(np.reshape(solve(A.T, rhs), (n, m, k)), (2, 0, 1))
        return -np.stack([bbar[j] @ y.T for j in range(k)]), bbar
    vec = np.ndim(b) == 1
    yb, yc = (ybar[..., None], y[..., None]) if vec else (ybar, y)
    bbar = solve(_T(A), yb)
    Abar = _sum_to(-_mm(bbar, _T(yc)), np.shape(A))
    return Abar, _sum_to(bbar[..., 0] if vec else bbar, np.shape(b))


@solve.defjvp(vectorized=True)
def _solve_jvp(xdot, y, A, b):
    Adot, bdot = xdot
    vec = np.ndim(b) == 1
    yc = y[..., None] if vec else y
    k = (Adot if Adot is not None else bdot).shape[0]

    def lift(d, x):       # (k,) + x's shape -> aligned with y's batch axes
        return d.reshape((k,) + (1,) * (np.ndim(yc) - np.ndim(x) - vec) + np.shape(x))
    rhs = np.zeros((k,) + yc.shape) if bdot is None else lift(bdot, b)
    if vec and bdot is not None:
        rhs = rhs[..., None]
    if Adot is not None:
        rhs = rhs - lift(Adot, A) @ yc
    rhs = np.broadcast_to(rhs, (k,) + yc.shape)
    if yc.ndim == 2:           # one factorization for all k directions
        n = A.shape[0]
        flat = np.moveaxis(rhs, 0, -1).reshape(n, -1)
        out = np.moveaxis(np.linalg.solve(A, flat).reshape(yc.shape + (k,)), -1, 0)
    else:
        out = np.linalg.solve(A, rhs)
    return out[..., 0] if vec else out


def _solve(a, b):
    _square("solve", a)
    n = np.shape(a)[-1]
    sb = np.shape(b)
    if len(sb) == 0 or (sb[-1] if len(sb) == 1 else sb[-2]) != n:
        raise LinAlgError(f"fastad.linalg.solve: b of shape {sb} does not match a of shape "
                          f"{np.shape(a)} (b must be (..., {n}) when 1-D, else (..., {n}, m))")
    return solve(a, b)


@primitive
def _inv(a):
    return np.linalg.inv(a)


_inv.defsparsity(_per_matrix(lambda m, n: m * n))


@_inv.defvjp(vectorized=True)
def _inv_vjp(ybar, y, a):
    yT = _T(y)
    return -_mm(_mm(yT, ybar), yT)


@_inv.defjvp(vectorized=True)
def _inv_jvp(adot, y, a):
    return -(y @ adot @ y)


def inv(a):
    """The inverse of a square matrix (or of each in a stack)."""
    _square("inv", a)
    return _inv(a)


def _cofactor(a, d):
    """d(det a)/da (ndarrays): det(a) a^{-T}, or from an SVD where a is singular."""
    if np.all(d != 0):
        return d[..., None, None] * np.swapaxes(np.linalg.inv(a), -1, -2)
    U, s, Vh = np.linalg.svd(a)
    n = s.shape[-1]
    others = np.prod(np.where(np.eye(n, dtype=bool), 1.0, s[..., None, :]), axis=-1)
    sign = np.linalg.det(U) * np.linalg.det(Vh)
    return sign[..., None, None] * ((U * others[..., None, :]) @ Vh)


@primitive
def _det(a):
    return np.linalg.det(a)


_det.defsparsity(_per_matrix(lambda m, n: 1))


@_det.defvjp(vectorized=True)
def _det_vjp(ybar, y, a):
    ybar = reshape(ybar, np.shape(ybar) + (1, 1))
    if not _traced(a):
        return ybar * _cofactor(a, np.asarray(y))
    if np.any(_val(y) == 0):
        raise NotImplementedError("fastad.linalg.det: second derivatives at a singular "
                                  "matrix are not supported")
    return ybar * reshape(y, np.shape(y) + (1, 1)) * _T(_inv(a))


@_det.defjvp(vectorized=True)
def _det_jvp(adot, y, a):
    return np.sum(_cofactor(a, np.asarray(y)) * adot, axis=(-2, -1))


def det(a):
    """The determinant (of each matrix in a stack)."""
    _square("det", a)
    return _det(a)


@primitive
def _logabsdet(a):
    return np.linalg.slogdet(a)[1]


_logabsdet.defsparsity(_per_matrix(lambda m, n: 1))


@_logabsdet.defvjp(vectorized=True)
def _logabsdet_vjp(ybar, y, a):
    return reshape(ybar, np.shape(ybar) + (1, 1)) * _T(_inv(a))


@_logabsdet.defjvp(vectorized=True)
def _logabsdet_jvp(adot, y, a):
    return np.sum(np.swapaxes(np.linalg.inv(a), -1, -2) * adot, axis=(-2, -1))


@primitive
def _detsign(a):
    return np.linalg.slogdet(a)[0]


_detsign.defsparsity(lambda shape: None)     # piecewise constant: depends on nothing


@_detsign.defvjp(vectorized=True)
def _detsign_vjp(ybar, y, a):
    return np.zeros((np.shape(ybar)[0],) + np.shape(a))


@_detsign.defjvp(vectorized=True)
def _detsign_jvp(adot, y, a):
    return np.zeros((adot.shape[0],) + np.shape(y))


def slogdet(a):
    """(sign, log|det|): the sign has derivative 0 (and is recomputed at a replay)."""
    _square("slogdet", a)
    return SlogdetResult(_detsign(a), _logabsdet(a))


# ---------------------------------------------------------------- cholesky

def _phi(X):
    """The lower triangle with the diagonal halved."""
    n = np.shape(X)[-1]
    return X * (np.tril(np.ones((n, n))) - 0.5 * np.eye(n))


@primitive
def _cholesky(a):
    return np.linalg.cholesky(a)


_cholesky.defsparsity(_per_matrix(lambda m, n: m * n))


@_cholesky.defvjp(vectorized=True)
def _cholesky_vjp(ybar, L, a):
    # Murray (2016): Abar = L^{-T} Phi(L^T Lbar) L^{-1}, on the lower triangle
    Li = _inv(L)
    S = _mm(_mm(_T(Li), _phi(_mm(_T(L), ybar))), Li)
    return _tri_grad(S)


@_cholesky.defjvp(vectorized=True)
def _cholesky_jvp(adot, L, a):
    Li = np.linalg.inv(L)
    return L @ _phi(Li @ _sym_from(adot) @ np.swapaxes(Li, -1, -2))


def cholesky(a, upper=False):
    """The Cholesky factor L (a = L L^T) from the lower triangle of a; with
    upper=True, U = L^T from the upper triangle."""
    _square("cholesky", a)
    if upper:
        return _T(_cholesky(_T(a)))
    return _cholesky(a)


# ---------------------------------------------------------------- eigh

@primitive
def _eigh(a, *, UPLO="L"):
    w, V = np.linalg.eigh(a, UPLO)
    return np.concatenate([w[..., None, :], V], axis=-2)


_eigh.defsparsity(_per_matrix(lambda m, n: (n + 1) * n))


@_eigh.defvjp(vectorized=True)
def _eigh_vjp(ybar, y, a, *, UPLO="L"):
    n = np.shape(a)[-1]
    w, V = y[..., 0, :], y[..., 1:, :]
    wb, Vb = ybar[..., 0, :], ybar[..., 1:, :]
    F, same = _gaps(w)
    X = _mm(_T(V), Vb)
    G = _mm(_mm(V, wb[..., None, :] * np.eye(n) + F * X), _T(V))
    return _nan_where(_tri_grad(G, UPLO.upper() == "L"), _undefined(same, X))


@_eigh.defjvp(vectorized=True)
def _eigh_jvp(adot, y, a, *, UPLO="L"):
    w, V = y[..., 0, :], y[..., 1:, :]
    F, same = _gaps(w)
    X = np.swapaxes(V, -1, -2) @ _sym_from(adot, UPLO.upper() == "L") @ V
    dV = _nan_where(V @ (F * X), _undefined(same, X))
    return np.concatenate([_diag(X)[..., None, :], dV], axis=-2)


def eigh(a, UPLO="L"):
    """(eigenvalues, eigenvectors) of a symmetric matrix from one triangle of it."""
    _square("eigh", a)
    if UPLO not in ("L", "U", "l", "u"):
        raise ValueError(f"fastad.linalg.eigh: UPLO must be 'L' or 'U', got {UPLO!r}")
    p = _eigh(a, UPLO=UPLO.upper())
    return EighResult(p[..., 0, :], p[..., 1:, :])


def eigvalsh(a, UPLO="L"):
    """The eigenvalues of a symmetric matrix, ascending."""
    return eigh(a, UPLO)[0]


# ---------------------------------------------------------------- eig (real spectra)

@primitive
def _eig(a):
    w, V = np.linalg.eig(a)
    if np.iscomplexobj(w) and not (w.imag == 0).all():
        raise ValueError(f"fastad.linalg.eig: the matrix (shape {a.shape}) has complex "
                         f"eigenvalues; fastad's values are real, so only matrices with a "
                         f"real spectrum are supported")
    # (NumPy >= 2.5 returns complex arrays even for a real spectrum)
    return np.concatenate([w.real[..., None, :], V.real], axis=-2)


_eig.defsparsity(_per_matrix(lambda m, n: (n + 1) * n))


@_eig.defvjp(vectorized=True)
def _eig_vjp(ybar, y, a):
    # A V = V diag(w), unit columns: Abar = V^{-T} (diag(wbar) + F o (V^T Vbar')) V^T,
    # Vbar' = Vbar without what the normalization takes away
    n = np.shape(a)[-1]
    w, V = y[..., 0, :], y[..., 1:, :]
    wb, Vb = ybar[..., 0, :], ybar[..., 1:, :]
    F, same = _gaps(w)
    Vb = Vb - V * reshape(_diag(_mm(_T(V), Vb)), np.shape(Vb)[:-2] + (1, n))
    X = _mm(_T(V), Vb)
    G = _mm(_mm(_T(_inv(V)), wb[..., None, :] * np.eye(n) + F * X), _T(V))
    return _nan_where(G, _undefined(same, X))


@_eig.defjvp(vectorized=True)
def _eig_jvp(adot, y, a):
    w, V = y[..., 0, :], y[..., 1:, :]
    F, same = _gaps(w)
    W = np.linalg.inv(V) @ adot @ V
    dV = V @ (F * W)
    dV = dV - V * _diag(np.swapaxes(V, -1, -2) @ dV)[..., None, :]
    return np.concatenate([_diag(W)[..., None, :], _nan_where(dV, _undefined(same, W))],
                          axis=-2)


def eig(a):
    """(eigenvalues, eigenvectors) of a matrix with real eigenvalues (NumPy's
    order and unit-norm columns); complex spectra raise ValueError."""
    _square("eig", a)
    if not _traced(a):
        return np.linalg.eig(a)
    p = _eig(a)
    return EigResult(p[..., 0, :], p[..., 1:, :])


def eigvals(a):
    """The eigenvalues of a matrix with real eigenvalues."""
    return eig(a)[0]


# ---------------------------------------------------------------- svd

def _svd_unpack(p, m, n):
    k = min(m, n)
    b = np.shape(p)[:-1]
    return (reshape(p[..., :m * k], b + (m, k)), p[..., m * k:m * k + k],
            reshape(p[..., m * k + k:], b + (k, n)))


@primitive
def _svd(a, *, hermitian=False):
    U, s, Vh = np.linalg.svd(a, full_matrices=False, hermitian=hermitian)
    b = a.shape[:-2]
    return np.concatenate([U.reshape(b + (U.shape[-2] * U.shape[-1],)), s,
                           Vh.reshape(b + (Vh.shape[-2] * Vh.shape[-1],))], axis=-1)


def _safe_over(num, s):
    """num / s (s along the last axis); 0 where s = 0 and num = 0, NaN where only s = 0."""
    sv = _val(s)
    zero = (sv == 0).astype(float)
    if not np.any(zero):
        return num / s[..., None, :]
    q = num / (s + zero)[..., None, :]
    bad = (zero[..., None, :] != 0) & (_val(num) != 0)
    return q * np.where(bad, np.nan, 1.0)


_svd.defsparsity(_per_matrix(lambda m, n: (m + n + 1) * min(m, n)))


def _svd_gaps(s):
    """The SVD's rotation coefficients: Omega_U = (G1*P + G2*Q)/2, Omega_V =
    (G1*P - G2*Q)/2 with P, Q the symmetric and antisymmetric parts of 2 U^T dA V,
    G1[i, j] = 1/(s_j - s_i), G2[i, j] = 1/(s_i + s_j) off the diagonal.  At a
    repeated singular value G1 is infinite (0 here, with the mask `same`), G2
    finite unless both are 0 (then 0, with the mask `zsum`)."""
    G1, same = _gaps(s)
    sv = _val(s)
    k = sv.shape[-1]
    off = ~np.eye(k, dtype=bool)
    zsum = off & ((sv[..., None, :] + sv[..., :, None]) == 0)
    ok = (off & ~zsum).astype(float)
    G2 = ok / (s[..., None, :] + s[..., :, None] + (1.0 - ok))
    return G1, same, G2, zsum


@_svd.defvjp(vectorized=True)
def _svd_vjp(ybar, y, a, *, hermitian=False):
    m, n = np.shape(a)[-2:]
    k = min(m, n)
    U, s, Vh = _svd_unpack(y, m, n)
    gU, gs, gVh = _svd_unpack(ybar, m, n)
    V, gV = _T(Vh), _T(gVh)
    G1, same, G2, zsum = _svd_gaps(s)
    UtgU, VtgV = _mm(_T(U), gU), _mm(_T(V), gV)
    Ju, Jv = UtgU - _T(UtgU), VtgV - _T(VtgV)
    t = 0.5 * (G1 * (Ju + Jv) + G2 * (Ju - Jv)) + gs[..., None, :] * np.eye(k)
    out = _mm(_mm(U, t), Vh)
    if m > k:
        out = out + _mm(_safe_over(gU - _mm(U, _mm(_T(U), gU)), s), Vh)
    if n > k:
        out = out + _mm(U, _T(_safe_over(gV - _mm(V, _mm(Vh, gV)), s)))
    if hermitian:           # NumPy's hermitian SVD reads the lower triangle only
        out = _tri_grad(out)
    return _nan_where(out, _undefined(same, Ju + Jv) | _undefined(zsum, Ju - Jv))


@_svd.defjvp(vectorized=True)
def _svd_jvp(adot, y, a, *, hermitian=False):
    m, n = a.shape[-2:]
    U, s, Vh = _svd_unpack(y, m, n)
    V = np.swapaxes(Vh, -1, -2)
    G1, same, G2, zsum = _svd_gaps(s)
    if hermitian:
        adot = _sym_from(adot)
    dS = np.swapaxes(U, -1, -2) @ adot @ V
    P, Q = dS + np.swapaxes(dS, -1, -2), dS - np.swapaxes(dS, -1, -2)
    dU, dV = U @ (0.5 * (G1 * P + G2 * Q)), V @ (0.5 * (G1 * P - G2 * Q))
    bad = _undefined(same, P) | _undefined(zsum, Q)
    if m > n:
        dAV = adot @ V
        dU = dU + _safe_over(dAV - U @ (np.swapaxes(U, -1, -2) @ dAV), s)
    if n > m:
        dAU = np.swapaxes(adot, -1, -2) @ U
        dV = dV + _safe_over(dAU - V @ (Vh @ dAU), s)
    dU, dV = _nan_where(dU, bad), _nan_where(dV, bad)
    b = dS.shape[:-2]
    return np.concatenate([dU.reshape(b + (dU.shape[-2] * dU.shape[-1],)), _diag(dS),
                           np.swapaxes(dV, -1, -2).reshape(b + (dV.shape[-2] * dV.shape[-1],))],
                          axis=-1)


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """U, S, Vh (or S alone with compute_uv=False).  Derivatives need the
    reduced U, Vh of a non-square matrix (full_matrices=False)."""
    _matrix("svd", a)
    m, n = np.shape(a)[-2:]
    if compute_uv and full_matrices and m != n:
        if not _traced(a):
            return np.linalg.svd(a, full_matrices=True, hermitian=hermitian)
        raise NotImplementedError(
            f"fastad.linalg.svd: the full U, Vh of a non-square matrix (shape {np.shape(a)}) "
            f"are not unique, so they have no derivative; pass full_matrices=False (or "
            f"compute_uv=False for the singular values alone)")
    U, s, Vh = _svd_unpack(_svd(a, hermitian=bool(hermitian)), m, n)
    return SVDResult(U, s, Vh) if compute_uv else s


def svdvals(x):
    """The singular values, descending."""
    return svd(x, compute_uv=False)


# ---------------------------------------------------------------- qr

@primitive
def _qr(a):
    Q, R = np.linalg.qr(a)
    b = a.shape[:-2]
    return np.concatenate([Q.reshape(b + (Q.shape[-2] * Q.shape[-1],)),
                           R.reshape(b + (R.shape[-2] * R.shape[-1],))], axis=-1)


def _qr_unpack(p, m, n):
    b = np.shape(p)[:-1]
    return reshape(p[..., :m * n], b + (m, n)), reshape(p[..., m * n:], b + (n, n))


_qr.defsparsity(_per_matrix(lambda m, n: (m + n) * n))


@_qr.defvjp(vectorized=True)
def _qr_vjp(ybar, y, a):
    # m >= n: M = R gR^T - gQ^T Q, b = gQ + Q copyltu(M), Abar = b R^{-T}
    m, n = np.shape(a)[-2:]
    Q, R = _qr_unpack(y, m, n)
    gQ, gR = _qr_unpack(ybar, m, n)
    M = _mm(R, _T(gR)) - _mm(_T(gQ), Q)
    low = np.tril(np.ones((n, n)), -1)
    b = gQ + _mm(Q, M * (low + np.eye(n)) + _T(M * low))
    return _mm(b, _T(_inv(R)))


@_qr.defjvp(vectorized=True)
def _qr_jvp(adot, y, a):
    m, n = a.shape[-2:]
    Q, R = _qr_unpack(y, m, n)
    dArinv = adot @ np.linalg.inv(R)
    qt = np.swapaxes(Q, -1, -2) @ dArinv
    low = np.tril(qt, -1)
    do = low - np.swapaxes(low, -1, -2)
    dQ = Q @ (do - qt) + dArinv
    dR = (qt - do) @ R
    b = dQ.shape[:-2]
    return np.concatenate([dQ.reshape(b + (m * n,)), dR.reshape(b + (n * n,))], axis=-1)


def qr(a, mode="reduced"):
    """Q, R (mode 'reduced', or 'complete' where that is the same), or R alone
    (mode 'r')."""
    _matrix("qr", a)
    if mode not in ("reduced", "complete", "r", "raw"):
        raise ValueError(f"fastad.linalg.qr: unrecognized mode {mode!r}")
    if not _traced(a):
        return np.linalg.qr(a, mode)
    m, n = np.shape(a)[-2:]
    if mode == "raw" or (mode == "complete" and m > n):
        raise NotImplementedError(
            f"fastad.linalg.qr: mode {mode!r} of a matrix of shape {np.shape(a)} has no "
            f"derivative (the extra columns of Q are not unique); use mode='reduced'")
    if m >= n:
        Q, R = _qr_unpack(_qr(a), m, n)
    else:     # wide: the QR of the leading square block, then R's right part is Q^T a
        Q, R1 = _qr_unpack(_qr(a[..., :m]), m, m)
        R = arrays.concatenate([R1, _mm(_T(Q), a[..., m:])], axis=-1)
    return R if mode == "r" else QRResult(Q, R)


# ---------------------------------------------------------------- composed

@primitive
def _pinv(a, *, rcond=1e-15, hermitian=False):
    return np.linalg.pinv(a, rcond, hermitian)


_pinv.defsparsity(_per_matrix(lambda m, n: m * n))


@_pinv.defvjp(vectorized=True)
def _pinv_vjp(ybar, P, a, *, rcond=1e-15, hermitian=False):
    # the transpose of Golub & Pereyra's dP = -P dA P + P P^T dA^T (I - A P)
    # + (I - P A) dA^T P^T P (valid where the rank is locally constant)
    m, n = np.shape(a)[-2:]
    if hermitian:
        a = _sym_from(a)
    PT, yT = _T(P), _T(ybar)
    Q = np.eye(m) - _mm(a, P)
    R = np.eye(n) - _mm(P, a)
    g = -_mm(_mm(PT, ybar), PT) + _mm(_mm(Q, yT), _mm(P, PT)) + _mm(_mm(PT, P), _mm(yT, R))
    return _tri_grad(g) if hermitian else g     # hermitian: NumPy reads the lower triangle


@_pinv.defjvp(vectorized=True)
def _pinv_jvp(adot, P, a, *, rcond=1e-15, hermitian=False):
    m, n = a.shape[-2:]
    if hermitian:
        a, adot = _sym_from(a), _sym_from(adot)
    PT, dT = np.swapaxes(P, -1, -2), np.swapaxes(adot, -1, -2)
    return (-P @ adot @ P + (P @ PT) @ dT @ (np.eye(m) - a @ P)
            + (np.eye(n) - P @ a) @ dT @ (PT @ P))


def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    """The pseudo-inverse (NumPy's, singular values at most rcond * max(s)
    counted as 0); differentiable where the rank is locally constant."""
    _matrix("pinv", a)
    if not _traced(a):
        return np.linalg.pinv(a, rcond, hermitian) if rtol is None else \
            np.linalg.pinv(a, hermitian=hermitian, rtol=rtol)
    if rcond is None:
        rcond = 1e-15 if rtol is None else rtol
    return _pinv(a, rcond=rcond, hermitian=bool(hermitian))


def matrix_power(a, n):
    """a to the integer power n (n < 0: of the inverse), by repeated squaring."""
    _square("matrix_power", a)
    if not isinstance(n, numbers.Integral):
        raise TypeError(f"fastad.linalg.matrix_power: the exponent must be an integer, "
                        f"got {n!r}")
    if not _traced(a):
        return np.linalg.matrix_power(a, n)
    n = operator.index(n)
    if n == 0:
        return np.broadcast_to(np.eye(np.shape(a)[-1]), np.shape(a)).copy()
    if n < 0:
        a, n = inv(a), -n
    out = None
    while n:
        if n & 1:
            out = a if out is None else _mm(out, a)
        n >>= 1
        if n:
            a = _mm(a, a)
    return out


def multi_dot(arrays_, *, out=None):
    """np.dot of several arrays in a row (the first and last may be 1-D)."""
    if out is not None:
        raise TypeError("fastad.linalg.multi_dot: out= is not supported on fastad arrays")
    if len(arrays_) < 2:
        raise ValueError("fastad.linalg.multi_dot: expecting at least two arrays")
    for i, x in enumerate(arrays_):
        nd = np.ndim(x)
        if nd != 2 and not (nd == 1 and i in (0, len(arrays_) - 1)):
            raise ValueError(f"fastad.linalg.multi_dot: array {i} has shape {np.shape(x)}; "
                             f"expected 2-D (the first and last may be 1-D)")
    res = arrays_[0]
    for x in arrays_[1:]:
        res = arrays.dot(res, x)
    return res


def lstsq(a, b, rcond=None):
    """(x, residuals, rank, s) as NumPy gives them; x = pinv(a) b."""
    if not (_traced(a) or _traced(b)):
        return np.linalg.lstsq(a, b, rcond=rcond)
    if np.ndim(a) != 2 or np.ndim(b) not in (1, 2) or np.shape(b)[0] != np.shape(a)[0]:
        raise LinAlgError(f"fastad.linalg.lstsq: a must be 2-D (m, n) and b (m,) or (m, k); "
                          f"got shapes {np.shape(a)} and {np.shape(b)}")
    m, n = np.shape(a)
    if rcond is None:
        rcond = np.finfo(float).eps * max(m, n)
    s = svdvals(a)
    # the rank: a recorded comparison, so a replay where it changes raises
    rank = int(np.sum(arrays.compare("gt", s, rcond * s[0]))) if np.size(s) else 0
    x = arrays.dot(pinv(a, rcond=rcond), b)
    if rank == n and m > n:
        r = b - arrays.dot(a, x)
        resid = np.sum(r * r, axis=0)
        resid = reshape(resid, (1,)) if np.ndim(b) == 1 else resid
    else:
        resid = np.zeros(0)
    return LstsqResult(x, resid, rank, s)


# ---------------------------------------------------------------- norm

@primitive
def _euclid(x):
    """sqrt(sum(x^2)) over the last axis (of all of a scalar)."""
    if np.ndim(x) == 0:
        return float(abs(x))
    return np.sqrt(np.sum(np.square(x), axis=-1))


@_euclid.defvjp(vectorized=True)
def _euclid_vjp(ybar, y, x):
    # x / |x| per seed, 0 at x = 0
    if np.ndim(x) == 0:
        return ybar * float(np.sign(_val(x)))
    zero = (_val(y) == 0).astype(float)
    yy = y + zero if np.any(zero) else y
    return reshape(ybar, np.shape(ybar) + (1,)) * (x / reshape(yy, np.shape(y) + (1,)))


@_euclid.defjvp(vectorized=True)
def _euclid_jvp(xdot, y, x):
    if np.ndim(x) == 0:
        return xdot * (0.0 if y == 0 else np.sign(x))
    yy = np.where(y == 0, 1.0, y)
    return np.sum(xdot * (x / yy[..., None]), axis=-1)


@_euclid.defsparsity
def _euclid_sparsity(shape):
    if len(shape) == 0:
        return np.ones((1, 1), dtype=bool)
    r = shape[-1]
    out = int(np.prod(shape[:-1], dtype=np.int64))
    return np.kron(np.eye(out, dtype=bool), np.ones((1, r), dtype=bool))


def _axes_last(x, axes, keepdims):
    """x with `axes` moved to the end and flattened into one (records nothing),
    and the shape of the result's reduced form."""
    nd = np.ndim(x)
    rest = [i for i in range(nd) if i not in axes]
    shape = np.shape(x)
    y = np.transpose(x, rest + list(axes))
    y = reshape(y, tuple(shape[i] for i in rest) + (-1,))
    kept = tuple(1 if i in axes else shape[i] for i in range(nd))
    return y, (kept if keepdims else tuple(shape[i] for i in rest))


def _euclidean(x, axes, keepdims):
    y, out = _axes_last(x, axes, keepdims)
    if np.shape(y)[-1] == 0:
        return np.zeros(out)
    return reshape(_euclid(y), out)


def _vector_norm(x, ord, ax, keepdims):
    if ord is None or ord == 2:
        return _euclidean(x, (ax,), keepdims)
    if ord == 0:
        # (the nonzero pattern is a recorded comparison: a replay re-checks it)
        return np.sum(arrays.compare("ne", x, 0.0), axis=ax, keepdims=keepdims).astype(float)
    a = np.abs(x)
    if ord == np.inf:
        return np.max(a, axis=ax, keepdims=keepdims)
    if ord == -np.inf:
        return np.min(a, axis=ax, keepdims=keepdims)
    if ord == 1:
        return np.sum(a, axis=ax, keepdims=keepdims)
    if isinstance(ord, str):
        raise ValueError(f"fastad.linalg.norm: invalid norm order {ord!r} for vectors")
    # sum |x|^p, then the 1/p-th power: 0 (and derivative 0) where the sum is 0
    s = np.sum(a ** ord, axis=ax, keepdims=keepdims)
    z = arrays.compare("eq", s, 0.0)          # recorded: a replay re-checks it
    if np.any(z):
        return np.where(z, 0.0, (s + z.astype(float)) ** (1.0 / ord))
    return s ** (1.0 / ord)


def _matrix_norm(x, ord, axes, keepdims):
    r, c = axes
    nd = np.ndim(x)
    if ord in (None, "fro", "f"):
        return _euclidean(x, tuple(sorted(axes)), keepdims)
    if ord in (2, -2, "nuc"):
        rest = [i for i in range(nd) if i not in axes]
        s = svdvals(np.transpose(x, rest + [r, c]))
        out = np.sum(s, axis=-1) if ord == "nuc" else \
            (np.max(s, axis=-1) if ord == 2 else np.min(s, axis=-1))
        if keepdims:
            out = reshape(out, tuple(1 if i in axes else np.shape(x)[i] for i in range(nd)))
        return out
    if ord in (1, -1, np.inf, -np.inf):
        inner, outer = (r, c) if ord in (1, -1) else (c, r)
        pick = np.max if ord > 0 else np.min
        sums = np.sum(np.abs(x), axis=inner, keepdims=True)
        out = pick(sums, axis=outer, keepdims=True)
        if not keepdims:
            out = reshape(out, tuple(np.shape(x)[i] for i in range(nd) if i not in axes))
        return out
    raise ValueError(f"fastad.linalg.norm: invalid norm order {ord!r} for matrices")


def norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: vector norms (ord None/2, 1, inf, -inf, 0, any p) and
    matrix norms (None/'fro', 'nuc', 1, -1, 2, -2, inf, -inf) over `axis`
    (an int or a pair), with keepdims.  Derivative 0 at the zero vector."""
    if not _traced(x):
        return np.linalg.norm(x, ord, axis, keepdims)
    nd = np.ndim(x)
    if nd == 0:
        if axis is not None or ord is not None:
            raise ValueError(f"fastad.linalg.norm: improper number of dimensions to norm (a "
                             f"scalar with ord={ord!r}, axis={axis!r})")
        return _euclid(x)
    if axis is None:
        if ord is None:
            return _euclidean(x, tuple(range(nd)), keepdims)
        if nd == 1:
            axis = 0
        elif nd == 2:
            axis = (0, 1)
        else:
            raise ValueError(f"fastad.linalg.norm: improper number of dimensions to norm "
                             f"({nd}, shape {np.shape(x)}) with ord={ord!r} and no axis")
    if isinstance(axis, numbers.Integral) or (isinstance(axis, tuple) and len(axis) == 1):
        ax = axis[0] if isinstance(axis, tuple) else axis
        if not -nd <= ax < nd:
            raise ValueError(f"fastad.linalg.norm: axis {ax} is out of bounds for shape "
                             f"{np.shape(x)}")
        return _vector_norm(x, ord, int(ax) % nd, keepdims)
    if isinstance(axis, tuple) and len(axis) == 2:
        r, c = (int(a) % nd if -nd <= a < nd else None for a in axis)
        if r is None or c is None or r == c:
            raise ValueError(f"fastad.linalg.norm: invalid axis {axis} for shape {np.shape(x)}")
        return _matrix_norm(x, ord, (r, c), keepdims)
    raise ValueError(f"fastad.linalg.norm: axis must be None, an int or a pair, got {axis!r}")


def vector_norm(x, *, axis=None, keepdims=False, ord=2):
    """np.linalg.vector_norm: a vector norm over `axis` (None: all elements;
    a tuple: those axes together)."""
    if not _traced(x):
        return np.linalg.vector_norm(x, axis=axis, keepdims=keepdims, ord=ord)
    nd = np.ndim(x)
    if nd == 0:
        return norm(x, ord)
    axes = tuple(range(nd)) if axis is None else \
        ((axis,) if isinstance(axis, numbers.Integral) else tuple(axis))
    for ax in axes:
        if not -nd <= ax < nd:
            raise ValueError(f"fastad.linalg.vector_norm: axis {ax} is out of bounds for "
                             f"shape {np.shape(x)}")
    axes = tuple(sorted({int(a) % nd for a in axes}))
    y, out = _axes_last(x, axes, keepdims)
    return reshape(_vector_norm(y, ord, np.ndim(y) - 1, False), out)


def matrix_norm(x, *, keepdims=False, ord="fro"):
    """np.linalg.matrix_norm: a matrix norm of the last two axes."""
    _matrix("matrix_norm", x)
    return norm(x, ord, (-2, -1), keepdims)


def cond(x, p=None):
    """The condition number in norm p (None/2/-2 from the singular values)."""
    _matrix("cond", x)
    if not _traced(x):
        return np.linalg.cond(x, p)
    if p in (None, 2, -2):
        s = svdvals(x)
        return s[..., 0] / s[..., -1] if p != -2 else s[..., -1] / s[..., 0]
    _square("cond", x)
    return norm(x, p, (-2, -1)) * norm(inv(x), p, (-2, -1))


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    """The rank (an integer: no derivative), from the values."""
    kw = {} if rtol is None else {"rtol": rtol}
    return np.linalg.matrix_rank(_val(A), tol, hermitian, **kw)


def tensorinv(a, ind=2):
    """The inverse of a as a map from its first `ind` axes to the rest."""
    if not isinstance(ind, numbers.Integral) or ind <= 0:
        raise ValueError(f"fastad.linalg.tensorinv: ind must be a positive integer, got {ind!r}")
    shape = np.shape(a)
    rows = int(np.prod(shape[ind:], dtype=np.int64))
    cols = int(np.prod(shape[:ind], dtype=np.int64))
    if rows != cols:
        raise LinAlgError(f"fastad.linalg.tensorinv: a of shape {shape} with ind={ind} is not "
                          f"square ({cols} by {rows})")
    return reshape(inv(reshape(a, (rows, cols))), shape[ind:] + shape[:ind])


def tensorsolve(a, b, axes=None):
    """x with tensordot(a, x, x.ndim) = b."""
    nd = np.ndim(a)
    if axes is not None:
        order = list(range(nd))
        for k in axes:
            order.remove(k)
            order.insert(nd, k)
        a = np.transpose(a, order)
    shape = np.shape(a)[np.ndim(b):] if np.ndim(b) < nd else ()
    n = int(np.prod(shape, dtype=np.int64))
    if int(np.prod(np.shape(a), dtype=np.int64)) != n * n:
        raise LinAlgError(f"fastad.linalg.tensorsolve: a of shape {np.shape(a)} and b of shape "
                          f"{np.shape(b)}: prod(a.shape[b.ndim:]) must equal "
                          f"prod(a.shape[:b.ndim])")
    return reshape(_solve(reshape(a, (n, n)), reshape(b, (n,))), shape)


# ---------------------------------------------------------------- registration

for _np_fn, _fn, _name, _allowed in (
        (np.linalg.solve, _solve, "solve", ()),
        (np.linalg.inv, inv, "inv", ()),
        (np.linalg.det, det, "det", ()),
        (np.linalg.slogdet, slogdet, "slogdet", ()),
        (np.linalg.cholesky, cholesky, "cholesky", ("upper",)),
        (np.linalg.eigh, eigh, "eigh", ("UPLO",)),
        (np.linalg.eigvalsh, eigvalsh, "eigvalsh", ("UPLO",)),
        (np.linalg.eig, eig, "eig", ()),
        (np.linalg.eigvals, eigvals, "eigvals", ()),
        (np.linalg.svd, svd, "svd", ("full_matrices", "compute_uv", "hermitian")),
        (np.linalg.qr, qr, "qr", ("mode",)),
        (np.linalg.pinv, pinv, "pinv", ("rcond", "hermitian", "rtol")),
        (np.linalg.norm, norm, "norm", ("ord", "axis", "keepdims")),
        (np.linalg.matrix_power, matrix_power, "matrix_power", ()),
        (np.linalg.multi_dot, multi_dot, "multi_dot", ("out",)),
        (np.linalg.lstsq, lstsq, "lstsq", ("rcond",)),
        (np.linalg.tensorinv, tensorinv, "tensorinv", ("ind",)),
        (np.linalg.tensorsolve, tensorsolve, "tensorsolve", ("axes",))):
    arrays.implements(_np_fn, _fn, "linalg." + _name, _allowed)
arrays.implements(np.linalg.cond, cond, "linalg.cond", ("p",))
arrays.implements(np.linalg.matrix_rank, matrix_rank, "linalg.matrix_rank",
                  ("tol", "hermitian", "rtol"))
for _name in ("svdvals", "vector_norm", "matrix_norm"):     # NumPy 2
    if hasattr(np.linalg, _name):
        arrays.implements(getattr(np.linalg, _name), globals()[_name], "linalg." + _name,
                          ("axis", "keepdims", "ord"))

# NumPy 2's array-API names in np.linalg that are plain products/transposes
# (np.linalg.trace, diagonal, outer, tensordot, cross would forward to the
# main namespace's functions the same way once those work on fastad arrays)
_ALIASES = {
    "matmul": (lambda x1, x2: np.matmul(x1, x2), ()),
    "vecdot": (lambda x1, x2, axis=-1: np.sum(x1 * x2, axis=axis), ("axis",)),
    "matrix_transpose": (_T, ()),
}
for _name, (_fn, _allowed) in _ALIASES.items():
    if hasattr(np.linalg, _name):
        arrays.implements(getattr(np.linalg, _name), _fn, "linalg." + _name, _allowed)
