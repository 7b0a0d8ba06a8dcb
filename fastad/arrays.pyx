# cython: boundscheck=True, wraparound=True, cdivision=False
# (plain Python semantics: this module is Python code compiled for speed)
# fastad-build: role=python  (see ROLES in setup.py)
"""Whole-array operations on fad.Array: NumPy semantics, one block node each.

Element-wise operations, reductions and matmul record one block node
(fastad._blocks); indexing, reshaping, transposing, stacking and `where`
only rearrange slot numbers and record nothing.  Every function also takes
plain numbers and ndarrays (then it is NumPy), Vars, and lists of these.
"""
import math
import numbers
import sys

import numpy as np

from fastad import _blocks as B
from fastad._blocks import slots_operand as _slots_operand   # (every block's operands)
from fastad import _var
from fastad._var import OP_FUNCTIONS, UFUNC_OPS, Array, Var, active_info, consume, make_array
from fastad.errors import TapeError

__all__ = ["elementwise", "power", "compare", "where", "matmul", "dot", "sum",
           "mean", "logsumexp", "reshape", "transpose", "stack", "concatenate",
           "amax", "amin", "apply_ufunc", "apply_function"]


# ---------------------------------------------------------------- operands

def _operands(objs):
    """(tape or None, [Operand]) for Vars, Arrays, numbers and ndarrays."""
    tape, ops = None, []
    for o in objs:
        if type(o) is float or type(o) is int:      # (the common constants, checked first)
            ops.append(B.Operand(None, o))
            continue
        if type(o) is not Array and isinstance(o, (list, tuple)) and _has_active(o):
            o = stack(o)
        if type(o) is np.ndarray and o.dtype is _OBJECT:
            o = from_objects(o)          # np.array([x[0], x[1]]): one stacked Array
        info = active_info(o)
        if info is None:
            arr = np.asarray(o)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"fastad: cannot combine an Array with {type(o).__name__}"
                                + (f" of dtype {arr.dtype}" if arr.dtype != object else ""))
            ops.append(B.Operand(value=arr))
            continue
        t, idx, start, unique = info
        if tape is None:
            tape = t
        elif t is not tape:
            raise TapeError("fastad: cannot combine arrays from two different recordings")
        ops.append(_slots_operand(idx, start, unique))
    return tape, ops


_OBJECT = np.dtype(object)     # (a singleton: `is` is the cheap test)


def from_objects(arr):
    """An object ndarray (np.array([x[0], 2.0, x[1]]), np.r_[...]) as one Array
    over its elements' slots (numbers get CONST slots); a plain float ndarray
    when nothing in it is traced."""
    flat = arr.reshape(-1).tolist()
    for item in flat:
        if type(item) is Array and item.ndim:
            raise TypeError(
                "fastad: an object array whose elements are arrays (of shapes "
                f"{sorted({np.shape(_slots(i)[1]) for i in flat})}) cannot become one "
                "array; build it with fad.stack or np.concatenate instead")
    if not any(type(item) in (Var, Array) for item in flat):
        try:
            return np.array(flat, dtype=np.float64).reshape(arr.shape)
        except (TypeError, ValueError):
            raise TypeError("fastad: an object array must hold Vars and real numbers, "
                            f"got {sorted({type(i).__name__ for i in flat})}") from None
    if not flat:
        return np.zeros(arr.shape)
    return reshape(_var.stack(flat), arr.shape)


def _has_active(seq):
    return any(type(o) in (Var, Array) or (isinstance(o, (list, tuple)) and _has_active(o))
               for o in seq)


def _push(tape, block):
    """Record block: compute straight into its new slots; returns its output."""
    shape = block.shape
    size = math.prod(shape)
    out = tape.open_block(size).reshape(shape)
    block.state = _detach(block.compute(tape.recorded_values(), out))
    slots = tape.close_block(block, size).reshape(shape)
    return make_array(tape, slots, block.start if size else -1, True, True)


def _push_over(tape, block, prev, dead):
    """Record block over the slots of prev, the last block, whose output
    `dead` (a fresh Array) dies with this operation: the block writes its
    values over prev's, in cache, as NumPy does with temporaries.  Only on
    a tape for one reverse sweep (fad.grad); see Tape.overwrite_block."""
    consume(dead)
    out = tape.recorded_values()[prev.start:prev.stop].reshape(block.shape)
    block.state = _detach(block.compute(tape.recorded_values(), out))
    slots = tape.overwrite_block(block, prev).reshape(block.shape)
    return make_array(tape, slots, block.start, True, True)


def _overwritable(tape, block, ops, shape, dead):
    """(position, block) of an operand whose block an element-wise op may
    write over, or None: a dead temporary that no partial of the op reads
    (the op table says which values its partials read)."""
    bits = block.overwritable_operands() & dead
    for i in (1, 0):          # the later operand first: more likely the last block
        o = ops[i] if i < len(ops) else None
        if bits & (1 << i) and o is not None and o.start >= 0 and o.shape == shape:
            prev = tape.overwritable(o.start, o.flat.size)
            if prev is not None:
                return i, prev
    return None


_PLAIN = (str, float, int, type(None))


def _detach(state):
    """The state with its views copied: views into the tape's value buffer would
    dangle once the tape grows (it is reallocated)."""
    if state is None:           # (most blocks: they read their operands back from the tape)
        return None
    t = type(state)
    if t is tuple and len(state) == 2 and type(state[0]) in _PLAIN and type(state[1]) in _PLAIN:
        return state                          # an element-wise block's markers, numbers
    if t is np.ndarray:
        return state if state.base is None else state.copy()
    if t is tuple or t is list:
        if all(type(s) is not np.ndarray or s.base is None for s in state) \
                and not any(type(s) in (tuple, list) for s in state):
            return state                      # scalars, markers, owned arrays: as they are
        return t([_detach(s) for s in state])
    return state


def _shape_of(ops):
    """NumPy's broadcast shape of the operands (the common cases without the
    general machinery, which costs microseconds per call)."""
    if len(ops) == 1:
        return ops[0].shape
    a, b = ops[0].shape, ops[1].shape
    if a == b or not b:
        return a
    if not a:
        return b
    if len(b) < len(a) and a[len(a) - len(b):] == b:      # a bias row and the like
        return a
    if len(a) < len(b) and b[len(b) - len(a):] == a:
        return b
    if len(a) == len(b):               # (2, 3) with (2, 1), (1, 3): no call into NumPy
        out = []
        for m, n in zip(a, b):
            if m == n or n == 1:
                out.append(m)
            elif m == 1:
                out.append(n)
            else:
                break
        else:
            return tuple(out)
    return np.broadcast_shapes(a, b)


def _slots_of(tape, op):
    """Slot numbers for an operand; constants get CONST nodes."""
    return op.idx if op.active else tape.push_consts(op.const)


# ---------------------------------------------------------------- element-wise

def elementwise(name, x, y=None, dead=0):
    """op `name` (an op-table name) of x, or of x and y with NumPy broadcasting.

    `dead` (bits 1, 2 for x, y) marks fresh Arrays that die with the operation
    (see fastad._var.Array): on a tape for one sweep, the op may write over one."""
    objs = (x,) if y is None else (x, y)
    tape, ops = _operands(objs)
    if tape is None:
        v = B.op_values(name, *[o.const for o in ops])
        return float(v) if np.ndim(v) == 0 else np.array(v)
    if name == "mul" and x is y and type(x) is Array:
        name, ops = "square", ops[:1]            # d(x x) = 2x dx, read back in one pass
        y = None
    shape = _shape_of(ops)
    if shape == ():   # all scalars: an ordinary scalar node
        args = [make_array(tape, o.idx) if o.active else float(o.const) for o in ops]
        return OP_FUNCTIONS[name](*args)
    block = B.Elementwise(name, ops[0], ops[1] if y is not None else None, shape)
    if dead and x is not y and tape.single_sweep:
        over = _overwritable(tape, block, ops, shape, dead)
        if over is not None:
            return _push_over(tape, block, over[1], objs[over[0]])
    return _push(tape, block)


def power(x, y):
    """x ** y; a constant exponent 2 is a square (the common case, and cheaper)."""
    if active_info(y) is None and np.ndim(y) == 0 and not isinstance(y, (list, tuple)) \
            and float(y) == 2.0:
        return elementwise("square", x)
    return elementwise("pow", x, y)


def compare(kind, x, y):
    """Elementwise comparison: a boolean ndarray, recorded so replay re-checks it."""
    tape, ops = _operands((x, y))
    val = None if tape is None else tape.recorded_values()
    xv, yv = (o.value(val) if o.active else o.const for o in ops)
    with np.errstate(invalid="ignore"):
        outcome = np.asarray(B.CMP_UFUNCS[kind](xv, yv))
    if tape is not None:
        _push(tape, B.Compare(kind, ops[0], ops[1], outcome))
    return outcome


def where(cond, a, b):
    """Elements of a where cond, else of b: selects slots, records nothing.

    The side not selected contributes an exact zero to every derivative."""
    if type(cond) in (Var, Array):
        raise TypeError("fastad.where needs a boolean condition (such as x > 0), "
                        f"not a {type(cond).__name__}")
    cond = np.asarray(cond, dtype=bool)
    tape, ops = _operands((a, b))
    if tape is None:
        return np.where(cond, ops[0].const, ops[1].const)
    ia, ib = (_slots_of(tape, o) for o in ops)
    return make_array(tape, np.where(cond, ia, ib))


# ---------------------------------------------------------------- linear algebra

# matmul/dot beyond 2-D: fastad.products hands them in (provide_products);
# it sits above this module, so no import here
_products = None


def provide_products(module):
    global _products
    _products = module


def matmul(a, b):
    """a @ b (NumPy's rules); 1-D and 2-D operands are one BLAS block node,
    stacks of matrices go to fastad.products."""
    tape, (oa, ob) = _operands((a, b))
    if tape is None:
        return np.matmul(oa.const, ob.const)
    if len(oa.shape) not in (1, 2) or len(ob.shape) not in (1, 2) or \
            oa.shape[-1] == 0 or ob.shape[0] == 0:
        return _products.matmul(a, b)     # (an empty sum too: zeros, no BLAS block)
    sa, sb = B._as2d(oa.shape, True), B._as2d(ob.shape, False)
    if sa[1] != sb[0]:
        raise ValueError(f"fastad.matmul: shapes {oa.shape} and {ob.shape} do not align "
                         f"({sa[1]} != {sb[0]})")
    shape = ((sa[0],) if len(oa.shape) == 2 else ()) + ((sb[1],) if len(ob.shape) == 2 else ())
    return _push(tape, B.Matmul(oa, ob, shape))


def dot(a, b):
    """np.dot: matmul for 1-D and 2-D operands; more dimensions go to fastad.products."""
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return elementwise("mul", a, b)
    if np.ndim(a) > 2 or np.ndim(b) > 2:
        return _products.dot(a, b)
    return matmul(a, b)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:      # (the common case)
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"fastad: axis {ax} is out of bounds for an array of dimension {ndim}")
        out.append(int(ax) % ndim)
    return tuple(sorted(set(out)))


def _float_only(name, dtype, out):
    """NumPy's (axis, dtype, out, keepdims) order: only float64 and no out= here."""
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"fastad.{name}: dtype must be float64 (values on the tape are), "
                        f"got {dtype!r}")
    if out is not None:
        raise TypeError(f"fastad.{name}: out= is not supported (arrays on the tape are immutable)")


def sum(a, axis=None, dtype=None, out=None, keepdims=False):  # noqa: A001 - NumPy's name
    """Sum over axis (all by default); one block node."""
    _float_only("sum", dtype, out)
    tape, (o,) = _operands((a,))
    if tape is None:
        return np.sum(o.const, axis=axis, keepdims=keepdims)
    axes = _axes(axis, len(o.shape))
    shape = tuple([1 if ax in axes else n for ax, n in enumerate(o.shape)]) if keepdims \
        else tuple([n for ax, n in enumerate(o.shape) if ax not in axes])
    if o.flat.size == 0:      # an empty sum: zeros that depend on nothing
        return make_array(tape, tape.push_consts(np.zeros(shape)))
    return _push(tape, B.Sum(o, axes, keepdims, shape))


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    """Mean over axis (all by default)."""
    _float_only("mean", dtype, out)
    shape = np.shape(a) if active_info(a) is None else active_info(a)[1].shape
    count = int(np.prod([shape[ax] for ax in _axes(axis, len(shape))], dtype=np.int64))
    # the sum is a temporary no one else holds: the division may write over it
    return elementwise("div", sum(a, axis=axis, keepdims=keepdims), float(count), 1)


def logsumexp(a, axis=None, keepdims=False):
    """log(sum(exp(a))) over axis, computed stably (shifted by the max, a constant)."""
    if isinstance(a, (list, tuple)):
        a = stack(a)
    info = active_info(a)
    if info is None:
        x = np.asarray(a, dtype=np.float64)
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        r = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return r if keepdims else (np.squeeze(r, axis=axis) if axis is not None else float(r.reshape(())))
    values = np.asarray(_var.value_of(a))
    m = np.max(values, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    r = elementwise("add", elementwise("log", sum(elementwise("exp", elementwise("sub", a, m)),
                                                  axis=axis, keepdims=True)), m)
    if keepdims:
        return r
    if axis is None:
        return reshape(r, ())
    return reshape(r, np.squeeze(m, axis=axis).shape)


# ---------------------------------------------------------------- rearranging (no nodes)

def _slots(a):
    """(tape, idx, cstart, unique) of an active operand; (None, ndarray, -1, True) for a constant."""
    if isinstance(a, (list, tuple)) and _has_active(a):
        a = stack(a)
    elif type(a) is np.ndarray and a.dtype is _OBJECT:
        a = from_objects(a)
    info = active_info(a)
    if info is None:
        return None, np.asarray(a, dtype=np.float64), -1, True
    return info


def reshape(a, shape):
    tape, idx, cstart, unique = _slots(a)
    if tape is None:
        return np.reshape(idx, shape)
    return make_array(tape, idx.reshape(shape), cstart, unique)


def transpose(a, axes=None):
    tape, idx, cstart, unique = _slots(a)
    if tape is None:
        return np.transpose(idx, axes)
    return make_array(tape, np.transpose(idx, axes), -1, unique)


def _slot_parts(seq, what):
    seq = list(seq)
    if not seq:
        raise ValueError(f"fastad.{what} needs at least one array")
    tape, ops = _operands(seq)
    if tape is None:
        return None, [o.const for o in ops]
    return tape, [_slots_of(tape, o) for o in ops]


def stack(seq, axis=0):
    """Stack Vars, Arrays and numbers of equal shape along a new axis (no node)."""
    tape, parts = _slot_parts(seq, "stack")
    if tape is None:
        return np.stack(parts, axis=axis)
    shapes = {p.shape for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"fastad.stack: all items must have the same shape, got {sorted(shapes)}")
    return make_array(tape, np.stack(parts, axis=axis))


def concatenate(seq, axis=0):
    """Join Arrays (and ndarrays) along an existing axis (no node)."""
    tape, parts = _slot_parts(seq, "concatenate")
    if tape is None:
        return np.concatenate(parts, axis=axis)
    return make_array(tape, np.concatenate(parts, axis=axis))


def _select(a, axis, keepdims, pick, name):
    """max/min by selecting slots; replay re-checks the selection."""
    tape, idx, cstart, unique = _slots(a)
    if tape is None:
        return getattr(np, name)(idx, axis=axis, keepdims=keepdims)
    values = tape.recorded_values()[idx]
    o = _slots_operand(idx, cstart, unique)
    reduced = values.shape if axis is None else \
        [values.shape[ax] for ax in _axes(axis, values.ndim)]
    if 0 in reduced:
        raise ValueError(f"fastad.{name}: the {name}imum of an empty array (shape "
                         f"{values.shape}, axis={axis}) is not defined, as in NumPy")
    if axis is None:
        k = int(pick(values.reshape(-1)))
        _push(tape, B.Selection(o, None, np.array(k), name))
        sel = idx.reshape(-1)[k]
        return make_array(tape, sel.reshape((1,) * idx.ndim) if keepdims else sel)
    ax = _axes(axis, values.ndim)
    if len(ax) != 1:
        # several axes: move them last as one axis and pick along it (slots
        # only); ties go to the first element in C order over those axes
        rest = tuple(n for i, n in enumerate(idx.shape) if i not in ax)
        flat = np.moveaxis(idx, ax, tuple(range(-len(ax), 0))).reshape(
            rest + (math.prod(idx.shape[i] for i in ax),))
        r = _select(make_array(tape, flat, -1, unique), -1, False, pick, name)
        if keepdims:
            return reshape(r, tuple(1 if i in ax else n for i, n in enumerate(idx.shape)))
        return r
    ax = ax[0]
    k = np.expand_dims(pick(values, axis=ax), ax)
    _push(tape, B.Selection(o, ax, k, name))
    sel = np.take_along_axis(idx, k, axis=ax)
    return make_array(tape, sel if keepdims else np.squeeze(sel, axis=ax))


def amax(a, axis=None, keepdims=False):
    """Maximum: the derivative goes to the (first) largest element."""
    return _select(a, axis, keepdims, np.argmax, "max")


def amin(a, axis=None, keepdims=False):
    """Minimum: the derivative goes to the (first) smallest element."""
    return _select(a, axis, keepdims, np.argmin, "min")


# ---------------------------------------------------------------- NumPy protocols

# NumPy ufuncs beyond the op table, handled by modules above this one
# (fastad.ufuncs: np.isfinite, np.conjugate, ...): ufunc -> function of the
# inputs; and loaders called with an unknown ufunc, which return True where
# they registered it (fastad.special maps SciPy's ufuncs when SciPy is used)
UFUNC_HANDLERS = {}
UFUNC_LOADERS = []

_POWERS = (np.power, np.float_power)
_UFUNC_CMP = {np.less: "lt", np.less_equal: "le", np.greater: "gt",
              np.greater_equal: "ge", np.equal: "eq", np.not_equal: "ne"}


def apply_ufunc(ufunc, method, inputs, kwargs, dead=0):
    """NumPy's __array_ufunc__ for Arrays (and Vars mixed with ndarrays);
    `dead` as for elementwise."""
    if method != "__call__" or kwargs:
        raise TypeError(
            f"fastad: NumPy's {ufunc.__name__}"
            f"{'' if method == '__call__' else '.' + method}"
            f"{' with keyword arguments ' + str(sorted(kwargs)) if kwargs else ''} "
            f"is not supported on fastad arrays")
    if ufunc in _POWERS:
        return power(*inputs)
    if ufunc in UFUNC_OPS:          # the op table's ufuncs (fastad._var)
        return elementwise(UFUNC_OPS[ufunc], inputs[0], inputs[1] if len(inputs) > 1 else None,
                           dead)
    if ufunc in _UFUNC_CMP:
        return compare(_UFUNC_CMP[ufunc], *inputs)
    if ufunc is np.matmul:
        return matmul(*inputs)
    if ufunc is np.positive:
        return inputs[0]
    handler = UFUNC_HANDLERS.get(ufunc)
    if handler is not None:
        return handler(*inputs)
    for load in UFUNC_LOADERS:
        if load(ufunc):
            return apply_ufunc(ufunc, method, inputs, kwargs, dead)
    raise TypeError(f"fastad: NumPy's {ufunc.__name__} is not supported on fastad "
                    f"arrays; see fastad.arrays for what is")


_NO_DEFAULT = object()
_DEFAULTS = {}


def _defaults(func):
    """{keyword: NumPy's default} of a NumPy function (cached; {} if unknown)."""
    d = _DEFAULTS.get(func)
    if d is None:
        import inspect
        try:
            params = inspect.signature(func).parameters.values()
            d = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        except (TypeError, ValueError):
            # a C function without a signature (np.concatenate on NumPy 2.0):
            # the keywords whose default is the same wherever NumPy has them
            d = {"out": None, "dtype": None, "casting": "same_kind"}
        _DEFAULTS[func] = d
    return d


def _is_default(value, default):
    if value is default:
        return True
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:
        return False


def _no_extra(name, kwargs, allowed, func=None):
    """Keyword arguments other than `allowed` are accepted where their value is
    NumPy's default (np.vstack(seq, dtype=None)); any other value is a TypeError
    naming the function and the keyword."""
    if not kwargs:
        return kwargs
    bad = [k for k in kwargs if k not in allowed]
    if not bad:
        return kwargs
    defaults = _defaults(func) if func is not None else {}
    kept = dict(kwargs)
    for k in bad:
        if _is_default(kwargs[k], defaults.get(k, _NO_DEFAULT)):
            del kept[k]
        else:
            raise TypeError(f"fastad: np.{name} with {k}={kwargs[k]!r} is not supported on "
                            f"fastad arrays" + (f" (only {k}={defaults[k]!r}, NumPy's default)"
                                                if k in defaults and defaults[k] is not np._NoValue
                                                else ""))
    return kept


def _wrap(fn, name, allowed=(), func=None):
    """fn as the handler of NumPy's `func`: keyword arguments that are not
    `allowed` must have NumPy's default value, and are dropped."""
    allowed = frozenset(allowed)

    def handler(*args, **kwargs):
        if kwargs:
            kwargs = _no_extra(name, kwargs, allowed, func)
        return fn(*args, **kwargs)
    return handler


def _np_where(cond, *branches):
    if len(branches) != 2:
        raise TypeError("fastad: np.where with one argument (the indices of nonzero "
                        "elements) is not supported on fastad arrays; use "
                        "np.nonzero(a.value)")
    return where(cond, *branches)




# ndarray methods beyond those fastad.Array defines: name -> function of the
# array first (fastad._var.Array.__getattr__)
METHODS = {}


def implements(func, fn, name, allowed=(), method=False):
    """Make fn what NumPy's `func` does on fastad arrays (__array_function__),
    with keyword arguments `allowed`: for operations defined above this
    module (fastad.linalg registers np.linalg.norm).  With method=True,
    `a.<name>(...)` calls it too, as the ndarray method of that name."""
    _FUNCTIONS[func] = handler = _wrap(fn, name, allowed, func)
    if method:
        METHODS[name] = handler


def _np_name(func):
    """np.sum, np.linalg.svd: the name a user calls it by."""
    mod = getattr(func, "__module__", None) or "numpy"
    sub = mod.split(".")[1] if mod.startswith("numpy.") and not mod.split(".")[1].startswith("_") else ""
    return f"np.{sub + '.' if sub else ''}{func.__name__}"


_FUNCTIONS = {}


def _register():
    """The NumPy functions this module implements (fastad.shaping registers
    squeeze, ravel, hstack and the other rearranging ones)."""
    implements(np.sum, sum, "sum", ("axis", "dtype", "out", "keepdims"))
    implements(np.mean, mean, "mean", ("axis", "dtype", "out", "keepdims"))
    implements(np.dot, dot, "dot")
    implements(np.reshape, lambda a, shape=None, newshape=None:
               reshape(a, shape if shape is not None else newshape), "reshape", ("shape", "newshape"))
    implements(np.transpose, transpose, "transpose", ("axes",))
    implements(np.concatenate, concatenate, "concatenate", ("axis",))
    implements(np.stack, stack, "stack", ("axis",))
    implements(np.where, _np_where, "where")
    implements(np.max, amax, "max", ("axis", "keepdims"))
    implements(np.min, amin, "min", ("axis", "keepdims"))
    implements(np.amax, amax, "amax", ("axis", "keepdims"))
    implements(np.amin, amin, "amin", ("axis", "keepdims"))
    _FUNCTIONS[np.shape] = lambda a: np.shape(_slots(a)[1])
    _FUNCTIONS[np.ndim] = lambda a: np.ndim(_slots(a)[1])
    _FUNCTIONS[np.size] = lambda a, axis=None: np.size(_slots(a)[1], axis)
    _FUNCTIONS[np.zeros_like] = lambda a, **kw: np.zeros(np.shape(_slots(a)[1]))
    _FUNCTIONS[np.ones_like] = lambda a, **kw: np.ones(np.shape(_slots(a)[1]))


_register()


def apply_function(func, args, kwargs):
    """NumPy's __array_function__ for Arrays."""
    handler = _FUNCTIONS.get(func)
    if handler is None:
        raise TypeError(
            f"fastad: {_np_name(func)} is not supported on fastad.Array; supported: "
            + ", ".join(sorted(_np_name(f) for f in _FUNCTIONS))
            + " and the element-wise ufuncs")
    return handler(*args, **kwargs)


# Operators and NumPy functions on Arrays and Vars come here (see
# fastad._var.provide_array_operations).
_var.provide_array_operations(sys.modules[__name__])
