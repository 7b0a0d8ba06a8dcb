"""NumPy's element-wise API beyond the op table's entries, on Vars and Arrays.

The op table (csrc/fastad_ops.h) defines the differentiable ufuncs
(np.remainder, np.floor, np.arccosh, ...).  This module adds what is not one
table entry: aliases (np.radians is np.deg2rad), functions that NumPy does
not implement as ufuncs (np.round with decimals, np.sinc, np.fix; np.real,
np.imag, np.angle, np.nan_to_num are in fastad.shaping), ufuncs whose
derivative is trivial on real input (np.conjugate) and the tests that return
plain booleans: np.isnan, np.isinf and np.isfinite are recorded as
comparisons (x != x, |x| == inf, x - x == 0), so a replay whose outcome would
differ raises fad.BranchChangedError; np.signbit is not recorded (no
comparison tells -0.0 from 0.0).
"""
import operator

import numpy as np

from fastad import arrays
from fastad._var import FUNCTIONS, UFUNC_OPS, Array, Var, active_info

__all__ = ["mod", "round", "around", "fix", "conj", "conjugate", "isfinite", "isnan", "isinf",
           "signbit"]

mod = FUNCTIONS["remainder"]       # np.mod is np.remainder

# ufuncs that are another name for a table entry
UFUNC_OPS[np.radians] = "deg2rad"
UFUNC_OPS[np.degrees] = "rad2deg"


def _active(x):
    return active_info(x) is not None or (
        isinstance(x, (list, tuple)) and arrays._has_active(x))


def around(a, decimals=0, out=None):
    """np.round(a, decimals): NumPy's steps (scale, rint, scale back), so the
    same numbers; derivative 0."""
    if out is not None:
        raise TypeError("fastad: np.round with out= is not supported on fastad arrays")
    try:
        decimals = operator.index(decimals)
    except TypeError:
        raise TypeError(f"fastad: np.round needs an integer number of decimals, "
                        f"got {type(decimals).__name__}") from None
    if not _active(a):
        return np.round(a, decimals)
    ew = arrays.elementwise
    if decimals == 0:
        return ew("rint", a)
    if decimals > 0:
        f = 10.0 ** decimals
        return ew("div", ew("rint", ew("mul", a, f)), f)
    f = 10.0 ** -decimals
    return ew("mul", ew("rint", ew("div", a, f)), f)


round = around  # noqa: A001 - NumPy's name


def fix(x, out=None):
    """np.fix: round toward zero (np.trunc); derivative 0."""
    if out is not None:
        raise TypeError("fastad: np.fix with out= is not supported on fastad arrays")
    return FUNCTIONS["trunc"](x)


def conjugate(x):
    """The complex conjugate of real input: x itself."""
    return x if _active(x) else np.conjugate(x)


conj = conjugate


def _compare(kind, x, y):
    """x (kind) y recorded: a bool for a Var, a boolean ndarray for an Array."""
    if type(x) is Var:
        return np.bool_(x != y if kind == "ne" else x == y)
    return arrays.compare(kind, x, y)


def isnan(x):
    """np.isnan, recorded as x != x."""
    return _compare("ne", x, x) if type(x) in (Var, Array) else np.isnan(x)


def isinf(x):
    """np.isinf, recorded as |x| == inf."""
    return _compare("eq", abs(x), np.inf) if type(x) in (Var, Array) else np.isinf(x)


def isfinite(x):
    """np.isfinite, recorded as x - x == 0 (NaN for inf and NaN)."""
    return _compare("eq", x - x, 0.0) if type(x) in (Var, Array) else np.isfinite(x)


def signbit(x):
    """np.signbit of the values (not recorded: no comparison tells -0.0 from 0.0)."""
    return np.signbit(x.value if type(x) in (Var, Array) else x)


def _divmod(x, y):
    return arrays.elementwise("floor_divide", x, y), arrays.elementwise("remainder", x, y)


arrays.UFUNC_HANDLERS.update({
    np.conjugate: conjugate, np.isfinite: isfinite, np.isnan: isnan, np.isinf: isinf,
    np.signbit: signbit, np.divmod: _divmod,
})
arrays.implements(np.round, around, "round", allowed=("decimals", "out"), method=True)
arrays.implements(np.around, around, "around", allowed=("decimals", "out"))
arrays.implements(np.fix, fix, "fix", allowed=("out",))
arrays.implements(np.sinc, FUNCTIONS["sinc"], "sinc")
arrays.METHODS["conj"] = arrays.METHODS["conjugate"] = conjugate
