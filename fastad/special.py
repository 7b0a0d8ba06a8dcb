"""SciPy's special functions on fastad Vars and Arrays.

scipy.special's functions are NumPy ufuncs, so `scipy.special.erf(x)` on a
Var or Array reaches fastad's __array_ufunc__; the ones below are op-table
entries (csrc/fastad_ops.h, with C implementations in csrc/fastad_special.h
where libm has none: erfinv, erfcinv, ndtr, log_ndtr, ndtri, digamma and its
derivatives).  SciPy stays optional: this module never imports it.  It maps SciPy's ufuncs when
scipy.special is already imported, or on the first unknown ufunc after it is
(fastad.arrays.UFUNC_LOADERS).  The same functions without SciPy:
fastad.special.erfinv(x), ... (also fad.erfinv, ...).

Further ufuncs take SciPy's values and are primitives (fastad.primitive)
whose derivative rules are written with these functions, so they work in
every mode and to second order: gamma, rgamma, gammasgn (derivative 0),
beta, betaln, the Bessel functions j0 j1 y0 y1 i0 i1 k0 k1 jv jn yv yn iv
ive kv (in x; the order is a constant), gammainc and gammaincc (in x; a is
a constant), betainc (in x; a and b are constants).  A derivative with
respect to an argument these treat as constant is a TypeError, never a
silent zero.

Left out: polygamma(n, x) and multigammaln (Python functions in SciPy that
convert their input with np.asarray, so fastad never sees the call; digamma's
derivatives are polygamma(1, x) and polygamma(2, x) here); the derivatives
in the order of Bessel functions and in a, b of the incomplete gamma and beta
functions; scipy.special.logsumexp (use fad.logsumexp); scipy.stats.
"""
import sys

import numpy as np

from fastad import arrays
from fastad._var import FUNCTIONS, UFUNC_OPS, active_info
from fastad.primitives import primitive

__all__ = ["expit", "logit", "log_expit", "erf", "erfc", "erfinv", "erfcinv", "ndtr",
           "log_ndtr", "ndtri", "gammaln", "digamma", "psi", "xlogy", "xlog1py",
           "gamma", "rgamma", "gammasgn", "beta", "betaln", "j0", "j1", "y0", "y1", "i0",
           "i1", "k0", "k1", "jv", "jn", "yv", "yn", "iv", "ive", "kv", "gammainc",
           "gammaincc", "betainc", "register"]

# scipy.special's name -> the op table's
SCIPY_OPS = {
    "expit": "sigmoid", "logit": "logit", "erf": "erf", "erfc": "erfc", "erfinv": "erfinv",
    "erfcinv": "erfcinv", "ndtr": "ndtr", "log_ndtr": "log_ndtr", "ndtri": "ndtri",
    "gammaln": "gammaln", "digamma": "digamma", "psi": "digamma", "xlogy": "xlogy",
    "xlog1py": "xlog1py", "expm1": "expm1", "log1p": "log1p", "exp2": "exp2", "cbrt": "cbrt",
}

expit = FUNCTIONS["sigmoid"]
logit, erf, erfc, erfinv, erfcinv, ndtr, log_ndtr, ndtri, gammaln, digamma, xlogy, xlog1py = (
    FUNCTIONS[n] for n in ("logit", "erf", "erfc", "erfinv", "erfcinv", "ndtr", "log_ndtr",
                           "ndtri", "gammaln", "digamma", "xlogy", "xlog1py"))
psi = digamma


def log_expit(x):
    """log(expit(x)) = -softplus(-x), without underflow."""
    neg = FUNCTIONS["negative"]
    return neg(FUNCTIONS["softplus"](neg(x)))


# ---------------------------------------------------------------- SciPy's values

def _sp():
    import scipy.special            # (only called once SciPy is in use)
    return scipy.special


def _diagonal(shape):
    import scipy.sparse
    return scipy.sparse.identity(int(np.prod(shape, dtype=np.int64)), dtype=bool, format="csr")


def _elementwise_primitive(name, value, deriv):
    """The primitive x -> value(x, *params) element-wise, params constants
    (keyword p), its derivative deriv(x, *params) written with fastad's
    functions (so differentiable again: second order)."""
    def fn(x, p=()):
        return value(x, *p)
    fn.__name__ = fn.__qualname__ = f"_{name}_primitive"
    fn.__module__ = __name__
    prim = primitive(fn)

    @prim.defvjp
    def _vjp(ybar, y, x, p=()):
        return ybar * deriv(x, *p)

    @prim.defjvp
    def _jvp(xdot, y, x, p=()):
        return xdot * deriv(x, *p)

    prim.defsparsity(_diagonal)
    globals()[fn.__name__] = prim            # (pickled by reference)
    return prim


def _shape(a):
    return np.shape(arrays._slots(a)[1]) if active_info(a) is not None else np.shape(a)


def _in_x(name, value, deriv, n_params=0):
    """fastad's scipy.special.<name>(*params, x): differentiable in x only."""
    prim = _elementwise_primitive(name, value, deriv)

    def f(*args):
        if len(args) != n_params + 1:
            raise TypeError(f"fastad: scipy.special.{name} takes {n_params + 1} "
                            f"argument{'s' if n_params else ''}, got {len(args)}")
        *params, x = args
        for i, q in enumerate(params):
            if active_info(q) is not None or (isinstance(q, (list, tuple))
                                              and arrays._has_active(q)):
                raise TypeError(f"fastad: scipy.special.{name} is differentiable in its "
                                f"last argument only; argument {i} must be a constant")
        params = tuple(np.asarray(q, dtype=np.float64) for q in params)
        if active_info(x) is None:
            return value(x, *params)
        shape = np.broadcast_shapes(_shape(x), *[q.shape for q in params])
        if _shape(x) != shape:
            x = x * np.ones(shape)
        return prim(x, p=params)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"scipy.special.{name} (SciPy's values), differentiable in x."
    return f


def _neg_half_sum(f, g):
    return (f + g) * -0.5


gamma = _in_x("gamma", lambda x: _sp().gamma(x), lambda x: gamma(x) * digamma(x))
rgamma = _in_x("rgamma", lambda x: _sp().rgamma(x), lambda x: -rgamma(x) * digamma(x))
gammasgn = _in_x("gammasgn", lambda x: _sp().gammasgn(x), lambda x: np.zeros(_shape(x)))
j0 = _in_x("j0", lambda x: _sp().j0(x), lambda x: -j1(x))
j1 = _in_x("j1", lambda x: _sp().j1(x), lambda x: (j0(x) - jv(2.0, x)) * 0.5)
y0 = _in_x("y0", lambda x: _sp().y0(x), lambda x: -y1(x))
y1 = _in_x("y1", lambda x: _sp().y1(x), lambda x: (y0(x) - yv(2.0, x)) * 0.5)
i0 = _in_x("i0", lambda x: _sp().i0(x), lambda x: i1(x))
i1 = _in_x("i1", lambda x: _sp().i1(x), lambda x: (i0(x) + iv(2.0, x)) * 0.5)
k0 = _in_x("k0", lambda x: _sp().k0(x), lambda x: -k1(x))
k1 = _in_x("k1", lambda x: _sp().k1(x), lambda x: _neg_half_sum(k0(x), kv(2.0, x)))
jv = _in_x("jv", lambda x, v: _sp().jv(v, x),
           lambda x, v: (jv(v - 1, x) - jv(v + 1, x)) * 0.5, 1)
yv = _in_x("yv", lambda x, v: _sp().yv(v, x),
           lambda x, v: (yv(v - 1, x) - yv(v + 1, x)) * 0.5, 1)
iv = _in_x("iv", lambda x, v: _sp().iv(v, x),
           lambda x, v: (iv(v - 1, x) + iv(v + 1, x)) * 0.5, 1)
kv = _in_x("kv", lambda x, v: _sp().kv(v, x),
           lambda x, v: _neg_half_sum(kv(v - 1, x), kv(v + 1, x)), 1)
ive = _in_x("ive", lambda x, v: _sp().ive(v, x),
            lambda x, v: (ive(v - 1, x) + ive(v + 1, x)) * 0.5
            - FUNCTIONS["sign"](x) * ive(v, x), 1)
jn = _in_x("jn", lambda x, n: _sp().jv(n, x), lambda x, n: (jv(n - 1, x) - jv(n + 1, x)) * 0.5, 1)
yn = _in_x("yn", lambda x, n: _sp().yn(np.asarray(n).astype(int), x),
           lambda x, n: (yv(n - 1, x) - yv(n + 1, x)) * 0.5, 1)
gammainc = _in_x("gammainc", lambda x, a: _sp().gammainc(a, x),
                 lambda x, a: FUNCTIONS["exp"](xlogy(a - 1, x) - x - gammaln(a)), 1)
gammaincc = _in_x("gammaincc", lambda x, a: _sp().gammaincc(a, x),
                  lambda x, a: -FUNCTIONS["exp"](xlogy(a - 1, x) - x - gammaln(a)), 1)


def betaln(a, b):
    """log|B(a, b)| = gammaln(a) + gammaln(b) - gammaln(a + b)."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def beta(a, b):
    """B(a, b) = Gamma(a) Gamma(b) / Gamma(a + b)."""
    return gamma(a) * gamma(b) * rgamma(a + b)


betainc = _in_x("betainc", lambda x, a, b: _sp().betainc(a, b, x),
                lambda x, a, b: FUNCTIONS["exp"](xlogy(a - 1, x) + xlog1py(b - 1, -x)
                                                 - betaln(a, b)), 2)

_HANDLERS = {name: globals()[name] for name in (
    "log_expit", "gamma", "rgamma", "gammasgn", "beta", "betaln", "j0", "j1", "y0", "y1", "i0",
    "i1", "k0", "k1", "jv", "jn", "yv", "yn", "iv", "ive", "kv", "gammainc", "gammaincc",
    "betainc")}

_registered = False


def register():
    """Map scipy.special's ufuncs to the op table (once); False if SciPy is not imported."""
    global _registered
    sp = sys.modules.get("scipy.special")
    if sp is None:
        return False
    if not _registered:
        for name, op in SCIPY_OPS.items():
            uf = getattr(sp, name, None)
            if isinstance(uf, np.ufunc):
                UFUNC_OPS.setdefault(uf, op)
        for name, fn in _HANDLERS.items():
            uf = getattr(sp, name, None)
            if isinstance(uf, np.ufunc):
                arrays.UFUNC_HANDLERS.setdefault(uf, fn)
        _registered = True
    return True


def _load(ufunc):
    """An unknown ufunc reached fastad: map SciPy's now if it has been imported."""
    if _registered or "scipy.special" not in sys.modules:
        return False
    register()
    return ufunc in UFUNC_OPS or ufunc in arrays.UFUNC_HANDLERS


arrays.UFUNC_LOADERS.append(_load)
register()
