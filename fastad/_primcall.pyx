# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=python  (see ROLES in setup.py)
"""The hot path of a custom primitive (fastad.primitives), compiled.

Recording one call and pulling one cotangent back cost about 3 us (a scalar
call) and 11 us (an 8-element array) in Python, almost all of it
interpreter overhead around a few dozen numbers: argument checks, building
lists and NumPy views, `ndarray.any()`, fancy indexing of the adjoint
buffer.  This module does the common case in C:

* `PrimitiveCore.__call__` is `Primitive.__call__`: positional arguments
  that are Vars, Arrays, floats or ints and no keyword arguments are
  recorded here; any other call goes to `Primitive._call` (the general
  path, in Python);
* `scalar_reverse` / `array_reverse` are the `reverse` of
  ScalarPrimitiveBlock / PrimitiveBlock for one seed and a vjp rule that is
  not vectorized; the other cases go to their `_reverse_general`.

Every check of the general path is kept (same errors): a result that is not
a float64 ndarray of the right shape is handed to the Python code that
checks it.  The blocks recorded are the same objects with the same
attributes as the general path's (saved tapes and validation see no
difference).
"""
from libc.string cimport memcpy

cimport cython

import numpy as np
cimport numpy as cnp

from fastad._recorder cimport Recorder
from fastad._var import Array, Var, active_info, make_array, tape_of, value_of, var_at
from fastad._blocks import Operand, slots_operand
from fastad.errors import TapeError

cnp.import_array()

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)

cdef object _ScalarBlock = None       # fastad.primitives.ScalarPrimitiveBlock
cdef object _ArrayBlock = None        # fastad.primitives.PrimitiveBlock
cdef object _new = object.__new__
cdef object _ndarray = np.ndarray     # (np.ndarray is a module lookup per use)


def bind(scalar_block, array_block):
    """The block classes (defined in fastad.primitives, which imports this)."""
    global _ScalarBlock, _ArrayBlock
    _ScalarBlock, _ArrayBlock = scalar_block, array_block


# ---------------------------------------------------------------- recording

@cython.auto_pickle(False)
cdef class PrimitiveCore:
    """The base of fastad.primitives.Primitive: the function and its rules as
    C fields (the hot path reads them per call), and the call itself."""
    cdef public object fn, vjp_rule, jvp_rule
    cdef public bint vjp_vectorized, jvp_vectorized

    def __call__(self, *args, **kwargs):
        """Record one call (see the module doc)."""
        cdef bint scalar = True, active = False
        if kwargs:
            return self._call(args, kwargs)
        for a in args:
            t = type(a)
            if t is Var:
                active = True
            elif t is Array:
                active = True
                scalar = False
            elif t is not float and t is not int:
                return self._call(args, kwargs)
        if not active:
            return self._call(args, kwargs)
        if scalar:
            return _record_scalar(self, args)
        return _record_array(self, args)


cdef inline int _need_a_rule(PrimitiveCore prim) except -1:
    if prim.vjp_rule is None and prim.jvp_rule is None:
        prim._need_a_rule()              # (raises its error)
    return 0


cdef inline void _untrack(object o) noexcept:
    """o holds numbers (floats, ints, None, ndarrays) only, so it can be in no
    reference cycle: the collector need not walk it.  A tape keeps a few
    such objects per block, and every collection walked them all (a fifth
    of the time of a primitive call in a loop went to the collector)."""
    PyObject_GC_UnTrack(<void*>o)


cdef object _record_scalar(PrimitiveCore prim, tuple args):
    tape = None
    cdef list vals = [], slots = [], consts = []
    for a in args:
        if type(a) is Var:
            t = tape_of(a)               # this thread's recording, or TapeError
            if tape is not None and t is not tape:
                raise TapeError("fastad: cannot combine Vars from two different recordings")
            tape = t
            vals.append(value_of(a))
            slots.append(a.slot)
            consts.append(None)
        else:
            v = float(a)
            vals.append(v)
            slots.append(None)
            consts.append(v)
    _need_a_rule(prim)
    y = prim.fn(*vals)
    if type(y) is not float:
        return prim._finish_scalar(tape, args, vals, {}, y)
    _untrack(vals)
    _untrack(slots)
    _untrack(consts)
    state = (y, vals)
    _untrack(state)
    blk = _new(_ScalarBlock)
    blk.prim = prim
    blk.slots = slots
    blk.consts = consts
    blk.kwargs = {}
    blk.state = state
    return var_at(tape, tape.push_scalar_block(blk, y))


cdef object _values(Recorder rec, o):
    """An active operand's values, an owned array shaped like its slots."""
    cdef cnp.ndarray idx = o.idx
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(idx), cnp.PyArray_DIMS(idx),
                                             cnp.NPY_DOUBLE, 0)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(idx), start = o.start, i, s
    cdef double* dst = <double*>cnp.PyArray_DATA(out)
    cdef cnp.ndarray flat
    cdef cnp.intp_t* fp
    if start >= 0:
        if start + size > rec.buf.n:
            raise IndexError("fastad: an operand's slots lie beyond the tape")
        if size:
            memcpy(dst, rec.buf.val + start, size * sizeof(double))
        return out
    flat = o.flat                       # (contiguous intp: see Operand)
    if cnp.PyArray_TYPE(flat) != cnp.NPY_INTP or not cnp.PyArray_IS_C_CONTIGUOUS(flat) \
            or cnp.PyArray_SIZE(flat) != size:
        raise TypeError("fastad: malformed operand slots")
    fp = <cnp.intp_t*>cnp.PyArray_DATA(flat)
    for i in range(size):
        s = fp[i]
        if s < 0 or s >= rec.buf.n:
            raise IndexError("fastad: an operand's slots lie beyond the tape")
        dst[i] = rec.buf.val[s]
    return out


cdef object _record_array(PrimitiveCore prim, tuple args):
    tape = None
    cdef list ops = [], vals
    for a in args:
        if type(a) is float or type(a) is int:
            ops.append(Operand(None, a))
            continue
        info = active_info(a)            # (tape, slots, first slot, unique), or TapeError
        t = info[0]
        if tape is None:
            tape = t
        elif t is not tape:
            raise TapeError("fastad: cannot combine arrays from two different recordings")
        ops.append(slots_operand(info[1], info[2], info[3]))
    cdef Recorder rec = <Recorder?>tape
    vals = [o.const if o.idx is None else _values(rec, o) for o in ops]
    _need_a_rule(prim)
    y = prim.fn(*vals)
    if type(y) is not _ndarray or cnp.PyArray_TYPE(<cnp.ndarray>y) != cnp.NPY_DOUBLE \
            or cnp.PyArray_NDIM(<cnp.ndarray>y) == 0:
        return prim._finish_array(tape, ops, {}, y)
    # own it: it may be an argument, or something the function keeps
    cdef cnp.ndarray yc = cnp.PyArray_NewCopy(<cnp.ndarray>y, cnp.NPY_CORDER)
    cdef Py_ssize_t m = cnp.PyArray_SIZE(yc)
    shape = (<object>yc).shape
    blk = _new(_ArrayBlock)
    blk.prim = prim
    blk.ops = ops
    blk.kwargs = {}
    blk.shape = shape
    blk._first = None
    blk.scalar = False
    # (the operands hold slot numbers and constants: no cycle; `src` stays
    # None, the tape links it for blocks that take a cotangent hand-off)
    for o in ops:
        _untrack(o)
    _untrack(ops)
    _untrack(vals)
    state = (yc, vals)
    _untrack(state)
    blk.state = state
    rec._recording_only()
    rec.reserve(m)
    cdef Py_ssize_t first = rec.buf.n
    if m:
        memcpy(rec.buf.val + first, cnp.PyArray_DATA(yc), m * sizeof(double))
    slots = tape.close_block(blk, m)
    if cnp.PyArray_NDIM(yc) != 1:
        slots = slots.reshape(shape)
    return make_array(tape, slots, first if m else -1, True, True)


# ---------------------------------------------------------------- reverse sweep

cdef inline bint _adjoint_buffer(adj, Py_ssize_t k):
    """adj is the sweep's (slots, 1) float64 buffer: the C path applies."""
    return k == 1 and type(adj) is _ndarray and \
        cnp.PyArray_TYPE(<cnp.ndarray>adj) == cnp.NPY_DOUBLE and \
        cnp.PyArray_NDIM(<cnp.ndarray>adj) == 2 and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>adj)


cdef inline double* _row(cnp.ndarray adj, Py_ssize_t s) except NULL:
    if s < 0 or s >= cnp.PyArray_DIM(adj, 0):
        raise IndexError(f"fastad: slot {s} lies beyond the adjoint buffer")
    return <double*>(<char*>cnp.PyArray_DATA(adj) + s * cnp.PyArray_STRIDE(adj, 0))


def scalar_reverse(self, val, state, adj, k):
    """ScalarPrimitiveBlock.reverse."""
    cdef PrimitiveCore prim = <PrimitiveCore?>self.prim
    rule = prim.vjp_rule
    if rule is None or prim.vjp_vectorized or not _adjoint_buffer(adj, k):
        return self._reverse_general(val, state, adj, k)
    cdef cnp.ndarray a = <cnp.ndarray>adj
    cdef double ybar = _row(a, self.start)[0]
    if ybar == 0.0:
        return
    y, args = state
    kwargs = self.kwargs
    cots = rule(ybar, y, *args, **kwargs) if kwargs else rule(ybar, y, *args)
    cdef Py_ssize_t n = len(args), i
    if n == 1 and not isinstance(cots, tuple):
        cots = (cots,)
    if not _plain_numbers(cots, n):
        cots = prim._check_cots(cots, [()] * n, None)
    cdef double* p
    slots = self.slots
    if len(slots) != n:
        raise ValueError("fastad: a primitive block's slots do not match its arguments")
    for i in range(n):
        c = cots[i]
        if c is not None:
            s = slots[i]
            if s is not None:
                p = _row(a, s)
                p[0] += <double>c


cdef bint _plain_numbers(cots, Py_ssize_t n) except -1:
    """A tuple of n floats/ints/Nones: what _check_cots passes for scalars."""
    if not isinstance(cots, tuple) or len(cots) != n:
        return False
    for c in <tuple>cots:
        if c is not None and type(c) is not float and not isinstance(c, (float, int)):
            return False
    return True


def array_reverse(self, val, state, adj, k):
    """PrimitiveBlock.reverse."""
    cdef PrimitiveCore prim = <PrimitiveCore?>self.prim
    rule = prim.vjp_rule
    if rule is None or prim.vjp_vectorized or not _adjoint_buffer(adj, k):
        return self._reverse_general(val, state, adj, k)
    cdef cnp.ndarray a = <cnp.ndarray>adj
    cdef Py_ssize_t start = self.start, stop = self.stop, i, m = stop - start
    if m == 1 and self.scalar:           # (scalars in 0-d arrays: rare)
        return self._reverse_general(val, state, adj, k)
    if start < 0 or m < 0 or stop > cnp.PyArray_DIM(a, 0):
        raise IndexError("fastad: a block's slots lie beyond the adjoint buffer")
    cdef char* base = <char*>cnp.PyArray_DATA(a)
    cdef Py_ssize_t rs = cnp.PyArray_STRIDE(a, 0)
    for i in range(m):
        if (<double*>(base + (start + i) * rs))[0] != 0.0:     # (NaN counts)
            break
    else:
        return              # zero cotangent: the rule is not even called
    y, args = state
    cdef cnp.ndarray g
    cdef double* gp
    if m == 1 and not self.shape:
        ybar = (<double*>(base + start * rs))[0]
    else:
        if type(y) is _ndarray and cnp.PyArray_SIZE(<cnp.ndarray>y) == m and \
                cnp.PyArray_NDIM(<cnp.ndarray>y) > 0:
            # (y has the block's shape: no tuple to convert)
            g = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>y),
                                  cnp.PyArray_DIMS(<cnp.ndarray>y), cnp.NPY_DOUBLE, 0)
        else:
            g = np.empty(self.shape)
        if cnp.PyArray_SIZE(g) != m:
            raise ValueError("fastad: a primitive block's shape does not match its slots")
        gp = <double*>cnp.PyArray_DATA(g)
        for i in range(m):
            gp[i] = (<double*>(base + (start + i) * rs))[0]
        ybar = g
    kwargs = self.kwargs
    cots = rule(ybar, y, *args, **kwargs) if kwargs else rule(ybar, y, *args)
    ops = self.ops
    cdef Py_ssize_t n = len(ops)
    if n == 1 and not isinstance(cots, tuple):
        cots = (cots,)
    if not _plain_cots(cots, ops, n):
        cots = prim._check_cots(cots, [o.shape for o in ops], None)
    for i in range(n):
        c = cots[i]
        if c is not None:
            o = ops[i]
            if o.idx is not None:
                _scatter(a, o, c)


cdef bint _plain_cots(cots, ops, Py_ssize_t n) except -1:
    """One float64 ndarray (or None) per operand, each of its shape: what
    Primitive._check_cots would pass unchanged."""
    cdef Py_ssize_t i
    cdef cnp.ndarray ix
    if not isinstance(cots, (tuple, list)) or len(cots) != n:
        return False
    for i in range(n):
        c = cots[i]
        if c is None:
            continue
        if type(c) is not _ndarray or cnp.PyArray_TYPE(<cnp.ndarray>c) != cnp.NPY_DOUBLE:
            return False
        idx = ops[i].idx
        if type(idx) is _ndarray:        # (the operand's shape)
            ix = <cnp.ndarray>idx
            if not cnp.PyArray_SAMESHAPE(ix, <cnp.ndarray>c):
                return False
        elif (<object>c).shape != ops[i].shape:
            return False
    return True


cdef int _scatter(cnp.ndarray adj, o, c) except -1:
    """adj[o's slots, 0] += c (c: float64, shaped like the operand); repeated slots add up."""
    cdef cnp.ndarray cc = <cnp.ndarray>c
    if not cnp.PyArray_IS_C_CONTIGUOUS(cc) or cnp.PyArray_TYPE(cc) != cnp.NPY_DOUBLE:
        cc = np.ascontiguousarray(c, dtype=np.float64)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(cc), start = o.start, i, s
    cdef Py_ssize_t rows = cnp.PyArray_DIM(adj, 0), rs = cnp.PyArray_STRIDE(adj, 0)
    cdef double* cp = <double*>cnp.PyArray_DATA(cc)
    cdef char* base = <char*>cnp.PyArray_DATA(adj)
    cdef cnp.ndarray flat
    cdef cnp.intp_t* fp
    if start >= 0:
        if start + size > rows:
            raise IndexError("fastad: an operand's slots lie beyond the adjoint buffer")
        for i in range(size):
            (<double*>(base + (start + i) * rs))[0] += cp[i]
        return 0
    flat = o.flat
    if cnp.PyArray_TYPE(flat) != cnp.NPY_INTP or not cnp.PyArray_IS_C_CONTIGUOUS(flat) \
            or cnp.PyArray_SIZE(flat) != size:
        raise TypeError("fastad: malformed operand slots")
    fp = <cnp.intp_t*>cnp.PyArray_DATA(flat)
    for i in range(size):
        s = fp[i]
        if s < 0 or s >= rows:
            raise IndexError("fastad: an operand's slots lie beyond the adjoint buffer")
        (<double*>(base + s * rs))[0] += cp[i]
    return 0


def block_operands(self):
    """PrimitiveBlock.operands (the tape asks once per block recorded)."""
    return tuple(self.ops)
