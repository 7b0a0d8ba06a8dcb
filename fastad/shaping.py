"""Shape, assembly, selection and sorting of fad.Array: NumPy's functions.

A fad.Array is an ndarray of slot numbers, so rearranging an Array is the
same NumPy function applied to its slots: nothing is recorded and every mode
(reverse, forward, second order, sparsity, replay) follows.  Zeros NumPy
introduces (pad, tril, diag of a 1-D array) are CONST slots.  Sorting and
arg-selection depend on values: they record a check that replay repeats
(fad.BranchChangedError where the order or the choice differs).

Each function also takes plain numbers and ndarrays (then it is NumPy).
"""
import operator

import numpy as np

from fastad import _blocks as B
from fastad import _var
from fastad.arrays import _slot_parts, _slots, _push, implements, reshape
from fastad.arrays import compare as _compare
from fastad._var import Array, Var, active_info, make_array
from fastad.errors import BranchChangedError

__all__ = [
    "squeeze", "expand_dims", "swapaxes", "moveaxis", "atleast_1d", "atleast_2d",
    "atleast_3d", "ravel", "tile", "repeat", "roll", "flip", "fliplr", "flipud", "rot90",
    "pad", "clip", "diag", "diagonal", "tril", "triu", "split", "array_split", "hsplit",
    "vsplit", "dsplit", "vstack", "hstack", "dstack", "column_stack", "broadcast_to",
    "take", "take_along_axis", "append", "insert", "delete", "real", "imag",
    "sort", "argsort", "argmax", "argmin", "partition", "argpartition", "rollaxis",
    "real_if_close", "angle", "select", "broadcast_arrays", "block",
    "linspace",
]


def _traced(a):
    return type(a) in (Var, Array) or (type(a) is np.ndarray and a.dtype == object) or \
        (isinstance(a, (list, tuple)) and _slots(a)[0] is not None)


def _rearrange(np_fn, keeps_unique=True):
    """fn(a, ...) = np_fn on a's slots: one operand, no node."""
    def fn(a, *args, **kwargs):
        if not _traced(a):
            return np_fn(a, *args, **kwargs)
        tape, idx, cstart, unique = _slots(a)
        out = np_fn(idx, *args, **kwargs)
        return make_array(tape, out, -1, bool(unique) and keeps_unique)
    fn.__name__ = fn.__qualname__ = np_fn.__name__
    fn.__doc__ = f"np.{np_fn.__name__} of an Array: its slots rearranged (no tape node)."
    return fn


def _reshaping(np_fn):
    """fn(a, ...) = np_fn where it only changes the shape: a reshape, which
    keeps a run of slots a run (blocks then read it as one slice)."""
    def fn(a, *args, **kwargs):
        if not _traced(a):
            return np_fn(a, *args, **kwargs)
        idx = _slots(a)[1]
        return reshape(a, np.shape(np_fn(idx, *args, **kwargs)))
    fn.__name__ = fn.__qualname__ = np_fn.__name__
    fn.__doc__ = f"np.{np_fn.__name__} of an Array: a reshape (no tape node)."
    return fn


def _joining(np_fn, name):
    """fn(seq, ...) = np_fn on the slots of the items (constants get CONST slots)."""
    def fn(tup, *args, **kwargs):
        tape, parts = _slot_parts(tup, name)
        out = np_fn(parts, *args, **kwargs)
        return out if tape is None else make_array(tape, out)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"np.{name} of Arrays, Vars and constants: their slots joined (no tape node)."
    return fn


def _splitting(np_fn):
    """fn(a, ...) = np_fn on a's slots: a list of Arrays (no node)."""
    def fn(a, *args, **kwargs):
        if not _traced(a):
            return np_fn(a, *args, **kwargs)
        tape, idx, cstart, unique = _slots(a)
        return [make_array(tape, p, -1, bool(unique)) for p in np_fn(idx, *args, **kwargs)]
    fn.__name__ = fn.__qualname__ = np_fn.__name__
    fn.__doc__ = f"np.{np_fn.__name__} of an Array: Arrays over its slots (no tape node)."
    return fn


def _atleast(np_fn):
    one = _reshaping(np_fn)

    def fn(*arys):
        res = [one(a) for a in arys]
        return res[0] if len(res) == 1 else tuple(res)
    fn.__name__ = fn.__qualname__ = np_fn.__name__
    fn.__doc__ = f"np.{np_fn.__name__} of Arrays: reshapes (no tape node)."
    return fn


def _no_active(name, what, value):
    if _traced(value):
        raise TypeError(f"fastad: np.{name}: {what} must be constant (plain integers "
                        f"or ndarrays), not a {type(value).__name__} on the tape")


# ---------------------------------------------------------------- shape only

squeeze = _reshaping(np.squeeze)
expand_dims = _reshaping(np.expand_dims)
atleast_1d = _atleast(np.atleast_1d)
atleast_2d = _atleast(np.atleast_2d)
atleast_3d = _atleast(np.atleast_3d)


def ravel(a, order="C"):
    """np.ravel: a reshape in C order; other orders rearrange the slots (whose
    layout follows NumPy's views, so "K" and "A" read them as NumPy would)."""
    if not _traced(a):
        return np.ravel(a, order)
    if order == "C":
        return reshape(a, -1)
    return _rearrange(np.ravel)(a, order)


def flatten(a, order="C"):
    """ndarray.flatten: the same slots, flat (an Array is immutable: no copy needed)."""
    return ravel(a, order)


# ---------------------------------------------------------------- permutations

swapaxes = _rearrange(np.swapaxes)
moveaxis = _rearrange(np.moveaxis)
rollaxis = _rearrange(np.rollaxis)
roll = _rearrange(np.roll)
flip = _rearrange(np.flip)
fliplr = _rearrange(np.fliplr)
flipud = _rearrange(np.flipud)
rot90 = _rearrange(np.rot90)
diagonal = _rearrange(np.diagonal)
delete = _rearrange(np.delete)
split = _splitting(np.split)
array_split = _splitting(np.array_split)
hsplit = _splitting(np.hsplit)
vsplit = _splitting(np.vsplit)
dsplit = _splitting(np.dsplit)

# ---------------------------------------------------------------- copies of slots

tile = _rearrange(np.tile, keeps_unique=False)
_repeat = _rearrange(np.repeat, keeps_unique=False)
_broadcast_to = _rearrange(lambda a, shape: np.array(np.broadcast_to(a, shape)),
                           keeps_unique=False)
_take = _rearrange(np.take, keeps_unique=False)
_take_along_axis = _rearrange(np.take_along_axis, keeps_unique=False)


def repeat(a, repeats, axis=None):
    """np.repeat: each slot repeated (no tape node)."""
    _no_active("repeat", "repeats", repeats)
    return _repeat(a, repeats, axis)


def broadcast_to(array, shape):
    """np.broadcast_to: the slots repeated to `shape` (no tape node)."""
    return _broadcast_to(array, shape)


def take(a, indices, axis=None, mode="raise"):
    """np.take with constant indices (no tape node)."""
    _no_active("take", "indices", indices)
    return _take(a, indices, axis=axis, mode=mode)


def take_along_axis(arr, indices, axis=-1):
    """np.take_along_axis with constant indices (no tape node)."""
    _no_active("take_along_axis", "indices", indices)
    return _take_along_axis(arr, indices, axis)


vstack = _joining(np.vstack, "vstack")
hstack = _joining(np.hstack, "hstack")
dstack = _joining(np.dstack, "dstack")
column_stack = _joining(np.column_stack, "column_stack")


def broadcast_arrays(*args):
    """np.broadcast_arrays: each argument's slots repeated to the common shape."""
    shape = np.broadcast_shapes(*(np.shape(_slots(a)[1]) for a in args))
    return tuple(broadcast_to(a, shape) if _traced(a) else np.broadcast_to(a, shape)
                 for a in args)


def block(arrays):
    """np.block of Arrays, Vars and constants (nested lists): their slots assembled."""
    tape = None

    def leaves(x):
        nonlocal tape
        if type(x) is list:
            return [leaves(i) for i in x]
        t, idx, cstart, unique = _slots(x)
        if t is None:
            return ("const", idx)
        tape = t
        return ("slots", idx)
    tree = leaves(arrays)
    if tape is None:
        return np.block(arrays)

    def slots(x):
        if type(x) is list:
            return [slots(i) for i in x]
        return x[1] if x[0] == "slots" else tape.push_consts(x[1])
    return make_array(tape, np.block(slots(tree)))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """np.linspace with traced end points: start + i (stop - start) / div."""
    if not (_traced(start) or _traced(stop)):
        return np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"fastad: np.linspace: dtype must be float64 (values on the tape "
                        f"are), got {dtype!r}")
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    ndim = len(np.broadcast_shapes(np.shape(_slots(start)[1]), np.shape(_slots(stop)[1])))
    div = num - 1 if endpoint else num
    t = np.arange(num, dtype=np.float64).reshape((-1,) + (1,) * ndim)
    delta = _var.FUNCTIONS["subtract"](stop, start)
    step = delta / div if div > 0 else np.nan
    y = (t * step if div > 0 else t * delta) + start
    if endpoint and num > 1:
        last = (np.arange(num) == num - 1).reshape(t.shape)
        y = _var.where(last, broadcast_to(stop, y.shape) if _traced(stop)
                       else np.broadcast_to(stop, y.shape), y)
    if axis != 0:
        y = moveaxis(y, 0, axis)
    return (y, step) if retstep else y


def append(arr, values, axis=None):
    """np.append: the slots of both joined (constants get CONST slots)."""
    tape, (a, v) = _slot_parts([arr, values], "append")
    out = np.append(a, v, axis=axis)
    return out if tape is None else make_array(tape, out)


def insert(arr, obj, values, axis=None):
    """np.insert with constant positions `obj` (values may be on the tape)."""
    _no_active("insert", "obj", obj)
    tape, (a, v) = _slot_parts([arr, values], "insert")
    out = np.insert(a, obj, v, axis=axis)
    return out if tape is None else make_array(tape, out)


# ---------------------------------------------------------------- with zeros

def _with_zeros(a, np_fn, *args, **kwargs):
    """np_fn of a's slots where np_fn also puts zeros: those get one CONST
    slot holding 0.0 (np_fn sees slot + 1, so its zeros are the new ones)."""
    tape, idx, cstart, unique = _slots(a)
    out = np_fn(idx + 1, *args, **kwargs)
    zero = out == 0
    if zero.any():
        out = np.where(zero, int(tape.push_consts(np.zeros(1))[0]) + 1, out)
    return make_array(tape, out - 1, -1, bool(unique) and not zero.any())


def tril(m, k=0):
    """np.tril: the slots below diagonal k, zeros (a constant) above."""
    return _with_zeros(m, np.tril, k) if _traced(m) else np.tril(m, k)


def triu(m, k=0):
    """np.triu: the slots above diagonal k, zeros (a constant) below."""
    return _with_zeros(m, np.triu, k) if _traced(m) else np.triu(m, k)


def diag(v, k=0):
    """np.diag: the diagonal of a 2-D Array, or a 2-D Array with v on its diagonal."""
    return _with_zeros(v, np.diag, k) if _traced(v) else np.diag(v, k)


_PAD_COPYING = ("constant", "edge", "wrap", "reflect", "symmetric")


def pad(array, pad_width, mode="constant", **kwargs):
    """np.pad in the modes that copy elements: constant (constant_values: numbers),
    edge, wrap, reflect and symmetric (reflect_type="even")."""
    if not _traced(array):
        return np.pad(array, pad_width, mode, **kwargs)
    if mode not in _PAD_COPYING:
        raise TypeError(f"fastad: np.pad with mode={mode!r} is not supported on fastad "
                        f"arrays (supported: {', '.join(_PAD_COPYING)})")
    allowed = {"constant": ("constant_values",), "reflect": ("reflect_type",),
               "symmetric": ("reflect_type",)}.get(mode, ())
    for key, value in kwargs.items():
        if key not in allowed:
            raise TypeError(f"fastad: np.pad with mode={mode!r} takes no keyword {key!r}")
        if key == "reflect_type" and value != "even":
            raise TypeError(f"fastad: np.pad with reflect_type={value!r} is not supported "
                            "on fastad arrays (only 'even', which copies elements)")
    _no_active("pad", "pad_width", pad_width)
    tape, idx, cstart, unique = _slots(array)
    if mode != "constant":
        return make_array(tape, np.pad(idx, pad_width, mode, **kwargs), -1, False)
    cv = kwargs.get("constant_values", 0)
    _no_active("pad", "constant_values", cv)
    out = np.pad(idx + 1, pad_width)                   # new positions hold 0
    new = out == 0
    values = np.pad(np.zeros(idx.shape), pad_width, constant_values=cv)[new]
    uniq, inverse = np.unique(values, return_inverse=True)
    out[new] = tape.push_consts(uniq)[inverse] + 1
    return make_array(tape, out - 1, -1, False)


def clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None):  # noqa: A002
    """np.clip as fad.maximum/fad.minimum: bounds may be Arrays too, and replay
    recomputes which side each element is on."""
    if out is not None:
        raise TypeError("fastad: np.clip with out= is not supported (arrays on the tape "
                        "are immutable)")
    if a_min is not None and min is not None or a_max is not None and max is not None:
        raise TypeError("fastad: np.clip: give a_min or min (a_max or max), not both")
    lo = a_min if a_min is not None else min
    hi = a_max if a_max is not None else max
    if not any(_traced(v) for v in (a, lo, hi)):
        return np.clip(a, lo, hi)
    r = a
    if lo is not None:
        r = _var.FUNCTIONS["maximum"](r, lo)
    if hi is not None:
        r = _var.FUNCTIONS["minimum"](r, hi)
    return r


# ---------------------------------------------------------------- real/imag

def real(val):
    """np.real of real values: the values themselves."""
    return val


def imag(val):
    """np.imag of real values: zeros, a constant."""
    return np.zeros(np.shape(_slots(val)[1])) if _traced(val) else np.imag(val)


def real_if_close(a, tol=100):
    """np.real_if_close of real values: the values themselves."""
    return a


def angle(z, deg=False):
    """np.angle of real values: 0 or pi (180 with deg), a constant; the sign
    test is a recorded comparison, so replay re-checks it."""
    if not _traced(z):
        return np.angle(z, deg)
    return np.where(_compare("lt", z, 0.0), 180.0 if deg else np.pi, 0.0)


def select(condlist, choicelist, default=0):
    """np.select as nested fad.where (conditions: boolean arrays, such as
    recorded comparisons)."""
    if len(condlist) != len(choicelist):
        raise ValueError("fastad: np.select: condlist and choicelist must have the same length")
    for c in condlist:
        if type(c) in (Var, Array):
            raise TypeError("fastad: np.select needs boolean conditions (such as x > 0), "
                            f"not a {type(c).__name__}")
    r = default
    for cond, choice in zip(condlist[::-1], choicelist[::-1]):
        r = _var.where(np.asarray(cond, dtype=bool), choice, r)
    if not _traced(r):
        return np.select(condlist, choicelist, default)
    shape = np.broadcast_shapes(*(np.shape(_slots(v)[1]) for v in
                                  list(condlist) + list(choicelist) + [default]))
    return broadcast_to(r, shape)


# ---------------------------------------------------------------- sort and arg-selection

class Ordering(B.Check):
    """A sort's permutation, re-checked on replay: it must still sort x."""

    def __init__(self, x, axis, perm, name, kth=None):
        self.x, self.axis, self.perm, self.name, self.kth = x, axis, perm, name, kth

    def operands(self):
        return (self.x,)

    def describe(self):
        return f"{self.name}{list(self.x.shape)}"

    def forward(self, val):
        v = np.take_along_axis(self.x.value(val), self.perm, self.axis)
        n = v.shape[self.axis]
        if self.kth is None:
            ok = _in_order(np.take(v, np.arange(n - 1), self.axis),
                           np.take(v, np.arange(1, n), self.axis)).all()
        else:
            # a partition leaves each side in an order of NumPy's choosing, which
            # moves with the values: only the very same permutation replays as f
            ok = np.array_equal(np.argpartition(self.x.value(val), self.kth, self.axis),
                                self.perm)
        if not ok:
            raise BranchChangedError(
                f"fastad: the {self.name} recorded before slot {self.start} orders the "
                f"elements differently at the new input, so this tape does not describe "
                f"the function there. Record a new tape at this input with fad.record(f, x).")
        return None


def _in_order(lo, hi):
    return (hi >= lo) | np.isnan(hi)                   # NumPy sorts NaN last


def _values_of(a, name):
    """(tape, idx, values, Operand) of an Array, Var or object array."""
    tape, idx, cstart, unique = _slots(a)
    values = tape.recorded_values()[idx]
    o = B.Operand(idx=idx, start=cstart, unique=True if unique else None)
    return tape, idx, values, o


def _order(a, axis, kind, name):
    """(tape, slots, permutation) of a sort along axis (None: flattened); the
    permutation is recorded for replay."""
    if axis is None:
        a = reshape(a, -1)
        axis = -1
    tape, idx, values, o = _values_of(a, name)
    if idx.ndim == 0:
        raise np.exceptions.AxisError(f"fastad: np.{name} of a 0-d array needs axis=None")
    perm = np.argsort(values, axis=axis, kind=kind)
    if idx.size and idx.shape[axis] > 1:
        _push(tape, Ordering(o, axis, perm, name))
    return tape, idx, perm, axis


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.sort: the slots in sorted order; replay checks the order still holds."""
    if not _traced(a):
        return np.sort(a, axis=axis, kind=kind, order=order, stable=stable)
    _sort_options("sort", order, stable)
    tape, idx, perm, axis = _order(a, axis, kind, "sort")
    return make_array(tape, np.take_along_axis(idx, perm, axis))


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """np.argsort: plain integers; replay checks the order still holds."""
    if not _traced(a):
        return np.argsort(a, axis=axis, kind=kind, order=order, stable=stable)
    _sort_options("argsort", order, stable)
    return _order(a, axis, kind, "argsort")[2]


def _partitioned(a, kth, axis, kind, order, name):
    """(tape, slots, permutation, axis) of np.argpartition, recorded for replay."""
    if order is not None:
        raise TypeError(f"fastad: np.{name} with order= (structured arrays) is not "
                        "supported on fastad arrays")
    _no_active(name, "kth", kth)
    if axis is None:
        a, axis = reshape(a, -1), -1
    tape, idx, values, o = _values_of(a, name)
    perm = np.argpartition(values, kth, axis=axis, kind=kind)
    n = idx.shape[axis]
    kths = sorted({int(k) % n for k in np.ravel(kth)})
    if idx.size:
        _push(tape, Ordering(o, axis, perm, name, kths))
    return tape, idx, perm, axis


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """np.partition: the slots partitioned around kth; replay re-checks it."""
    if not _traced(a):
        return np.partition(a, kth, axis=axis, kind=kind, order=order)
    tape, idx, perm, axis = _partitioned(a, kth, axis, kind, order, "partition")
    return make_array(tape, np.take_along_axis(idx, perm, axis))


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """np.argpartition: plain integers; replay re-checks the partition."""
    if not _traced(a):
        return np.argpartition(a, kth, axis=axis, kind=kind, order=order)
    return _partitioned(a, kth, axis, kind, order, "argpartition")[2]


def _sort_options(name, order, stable):
    if order is not None:
        raise TypeError(f"fastad: np.{name} with order= (structured arrays) is not "
                        "supported on fastad arrays")
    if stable is not None and not stable:
        raise TypeError(f"fastad: np.{name} with stable={stable!r} is not supported")


def _arg(a, axis, keepdims, name):
    pick = np.argmax if name == "max" else np.argmin
    if not _traced(a):
        return pick(a, axis=axis, keepdims=bool(keepdims))
    tape, idx, values, o = _values_of(a, "arg" + name)
    if values.size == 0:
        return pick(values, axis=axis)                # NumPy's error for an empty array
    if axis is None:
        k = pick(values.reshape(-1))
        _push(tape, B.Selection(o, None, np.array(k), name))
        return np.full((1,) * idx.ndim, k) if keepdims else k
    ax = int(axis)
    if not -idx.ndim <= ax < idx.ndim:
        raise np.exceptions.AxisError(ax, idx.ndim)
    ax %= idx.ndim
    k = np.expand_dims(pick(values, axis=ax), ax)
    _push(tape, B.Selection(o, ax, k, name))
    return k if keepdims else np.squeeze(k, axis=ax)


def argmax(a, axis=None, out=None, *, keepdims=False):
    """np.argmax: plain integers; replay checks the same element is largest."""
    if out is not None:
        raise TypeError("fastad: np.argmax with out= is not supported on fastad arrays")
    return _arg(a, axis, keepdims, "max")


def argmin(a, axis=None, out=None, *, keepdims=False):
    """np.argmin: plain integers; replay checks the same element is smallest."""
    if out is not None:
        raise TypeError("fastad: np.argmin with out= is not supported on fastad arrays")
    return _arg(a, axis, keepdims, "min")


def _sort_in_place(a, *args, **kwargs):
    raise TypeError("fastad: a.sort() and a.partition() work in place, but an Array "
                    "on the tape is immutable; use b = np.sort(a) (np.partition) instead")


# ---------------------------------------------------------------- registration

def _same(a):
    return a


def _register():
    m = True
    implements(np.squeeze, squeeze, "squeeze", ("axis",), method=m)
    implements(np.expand_dims, expand_dims, "expand_dims", ("axis",))
    implements(np.swapaxes, swapaxes, "swapaxes", ("axis1", "axis2"), method=m)
    implements(np.moveaxis, moveaxis, "moveaxis", ("source", "destination"))
    implements(np.rollaxis, rollaxis, "rollaxis", ("axis", "start"))
    implements(np.atleast_1d, atleast_1d, "atleast_1d")
    implements(np.atleast_2d, atleast_2d, "atleast_2d")
    implements(np.atleast_3d, atleast_3d, "atleast_3d")
    implements(np.ravel, ravel, "ravel", ("order",))
    implements(np.tile, tile, "tile", ("reps",))
    implements(np.repeat, repeat, "repeat", ("repeats", "axis"), method=m)
    implements(np.roll, roll, "roll", ("shift", "axis"))
    implements(np.flip, flip, "flip", ("axis",))
    implements(np.fliplr, fliplr, "fliplr")
    implements(np.flipud, flipud, "flipud")
    implements(np.rot90, rot90, "rot90", ("k", "axes"))
    implements(np.pad, pad, "pad", ("pad_width", "mode", "constant_values", "reflect_type"))
    implements(np.clip, clip, "clip", ("a_min", "a_max", "out", "min", "max"), method=m)
    implements(np.diag, diag, "diag", ("k",))
    implements(np.diagonal, diagonal, "diagonal", ("offset", "axis1", "axis2"), method=m)
    implements(np.tril, tril, "tril", ("k",))
    implements(np.triu, triu, "triu", ("k",))
    implements(np.split, split, "split", ("indices_or_sections", "axis"))
    implements(np.array_split, array_split, "array_split", ("indices_or_sections", "axis"))
    implements(np.hsplit, hsplit, "hsplit", ("indices_or_sections",))
    implements(np.vsplit, vsplit, "vsplit", ("indices_or_sections",))
    implements(np.dsplit, dsplit, "dsplit", ("indices_or_sections",))
    implements(np.vstack, vstack, "vstack")
    implements(np.hstack, hstack, "hstack")
    implements(np.dstack, dstack, "dstack")
    implements(np.column_stack, column_stack, "column_stack")
    if hasattr(np, "row_stack"):
        implements(np.row_stack, vstack, "row_stack")
    implements(np.broadcast_to, broadcast_to, "broadcast_to", ("shape",))
    implements(np.take, take, "take", ("indices", "axis", "mode"), method=m)
    implements(np.take_along_axis, take_along_axis, "take_along_axis", ("indices", "axis"))
    implements(np.append, append, "append", ("values", "axis"))
    implements(np.broadcast_arrays, broadcast_arrays, "broadcast_arrays")
    implements(np.block, block, "block")
    implements(np.linspace, linspace, "linspace",
               ("num", "endpoint", "retstep", "dtype", "axis"))
    implements(np.insert, insert, "insert", ("obj", "values", "axis"))
    implements(np.delete, delete, "delete", ("obj", "axis"))
    implements(np.copy, _same, "copy")
    implements(np.real, real, "real")
    implements(np.imag, imag, "imag")
    implements(np.real_if_close, real_if_close, "real_if_close", ("tol",))
    implements(np.angle, angle, "angle", ("deg",))
    implements(np.select, select, "select", ("default",))
    implements(np.partition, partition, "partition", ("kth", "axis", "kind", "order"))
    implements(np.argpartition, argpartition, "argpartition", ("kth", "axis", "kind", "order"),
               method=m)
    implements(np.sort, sort, "sort", ("axis", "kind", "order", "stable"))
    implements(np.argsort, argsort, "argsort", ("axis", "kind", "order", "stable"), method=m)
    implements(np.argmax, argmax, "argmax", ("axis", "out", "keepdims"), method=m)
    implements(np.argmin, argmin, "argmin", ("axis", "out", "keepdims"), method=m)
    from fastad import arrays
    arrays.METHODS["sort"] = arrays.METHODS["partition"] = _sort_in_place


_register()
