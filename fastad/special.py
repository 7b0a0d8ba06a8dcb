"""SciPy's special functions on fastad Vars and Arrays.

scipy.special's functions are NumPy ufuncs, so `scipy.special.erf(x)` on a
Var or Array reaches fastad's __array_ufunc__; the ones below are op-table
entries (csrc/fastad_ops.h, with C implementations where libm has none:
erfinv, erfcinv, ndtr, log_ndtr, ndtri, digamma and its derivatives).  SciPy
stays optional: this module never imports it.  It maps SciPy's ufuncs when
scipy.special is already imported, or on the first unknown ufunc after it is
(fastad.arrays.UFUNC_LOADERS).  The same functions without SciPy:
fastad.special.erfinv(x), ... (also fad.erfinv, ...).

Left out: gamma, beta and other functions whose sign changes make a log-form
composition fragile; polygamma(n, x) (a Python function, not a ufunc, in
SciPy; its n = 0, 1, 2 are digamma's value and derivatives here).
"""
import sys

import numpy as np

from fastad import arrays
from fastad._var import FUNCTIONS, UFUNC_OPS

__all__ = ["expit", "logit", "log_expit", "erf", "erfc", "erfinv", "erfcinv", "ndtr",
           "log_ndtr", "ndtri", "gammaln", "digamma", "psi", "xlogy", "xlog1py",
           "register"]

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
        uf = getattr(sp, "log_expit", None)
        if isinstance(uf, np.ufunc):
            arrays.UFUNC_HANDLERS[uf] = log_expit
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
