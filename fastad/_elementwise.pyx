# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=vector
"""The op table over arrays: the kernels of element-wise array blocks.

Values, first and second partials of any op-table entry over NumPy arrays
(operands broadcast to the block's shape), and the pullback or push of one
operand in one pass: a partial, computed inline from the operands' values
and the block's own, times k lanes of cotangents or tangents, with strong
zeros.  So an element-wise block keeps no partials between its sweeps, and a
new table entry works on arrays with no code here.
"""
import numpy as np
cimport numpy as cnp

from fastad._ops cimport (fad_map, fad_times_partial, FAD_MAP_VALUES, FAD_MAP_SECOND,
                           FAD_MAP_PARTIALS, FAD_NUM_OPS, FAD_HAS_C, FAD_BINARY, fad_op_flags,
                           fad_op_name)

cnp.import_array()

cdef cnp.ndarray _ZERO = np.zeros(1)


cdef cnp.ndarray _flat(object a, object shape, Py_ssize_t* stride):
    """a's numbers as C-contiguous float64: one number (stride 0) or
    broadcast to `shape` (stride 1)."""
    cdef cnp.ndarray arr = _ZERO if a is None else _float64(a)
    if cnp.PyArray_SIZE(arr) == 1:
        stride[0] = 0
        return arr if cnp.PyArray_IS_C_CONTIGUOUS(arr) else np.ascontiguousarray(arr)
    stride[0] = 1
    if (<object>arr).shape != shape:
        arr = np.broadcast_to(arr, shape)
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        arr = np.ascontiguousarray(arr)
    return arr


cdef inline cnp.ndarray _float64(object a):
    """a as a float64 ndarray (itself when it is one: np.asarray's keyword
    call costs more than these arrays' data)."""
    if type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE and \
            cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):
        return <cnp.ndarray>a
    return np.asarray(a, dtype=np.float64)


cdef inline double* _data(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


cdef int _check(int op) except -1:
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"no op {op}")
    return 0


def values(int op, x, y, cnp.ndarray out not None):
    """op(x, y) elementwise into `out` (C-contiguous float64 of the
    broadcast shape); y None for a unary op."""
    _check(op)
    if not cnp.PyArray_IS_C_CONTIGUOUS(out) or out.dtype != np.float64:
        raise ValueError("values: out must be C-contiguous float64")
    cdef Py_ssize_t sx, sy, n = cnp.PyArray_SIZE(out)
    shape = (<object>out).shape
    cdef cnp.ndarray xa = _flat(x, shape, &sx), ya = _flat(y, shape, &sy)
    cdef double* xp = _data(xa)
    cdef double* yp = _data(ya)
    cdef double* op_ = _data(out)
    with nogil:
        fad_map(op, FAD_MAP_VALUES, n, xp, sx, yp, sy, 0.0, NULL, 0, op_, NULL, NULL)
    return out


cdef tuple _operands(object x, object y, object v, object shape, Py_ssize_t* n,
                     Py_ssize_t* sx, Py_ssize_t* sy, Py_ssize_t* sv):
    """x, y, v as _flat arrays over `shape` (n elements), with their strides."""
    n[0] = 1
    for m in shape:
        n[0] *= m
    return _flat(x, shape, sx), _flat(y, shape, sy), _flat(v, shape, sv)


def partials(int op, x, y, v, shape, bint want0=True, bint want1=True):
    """(df/dx, df/dy) elementwise, arrays of `shape` (None where not wanted),
    from the operands x, y and the values v = op(x, y)."""
    _check(op)
    shape = tuple(shape)
    cdef Py_ssize_t n, sx, sy, sv
    xa, ya, va = _operands(x, y, v, shape, &n, &sx, &sy, &sv)
    cdef cnp.ndarray d0 = np.empty(shape) if want0 else None
    cdef cnp.ndarray d1 = np.empty(shape) if want1 else None
    cdef double* xp = _data(xa)
    cdef double* yp = _data(ya)
    cdef double* vp = _data(va)
    cdef double* p0 = _data(d0) if want0 else NULL
    cdef double* p1 = _data(d1) if want1 else NULL
    with nogil:
        fad_map(op, FAD_MAP_PARTIALS, n, xp, sx, yp, sy, 0.0, vp, sv, NULL, p0, p1)
    return d0, d1


def _map(int op, int mode, x, y, v, shape, double c=0.0):
    """fad_map over arrays of `shape`: three new arrays."""
    _check(op)
    shape = tuple(shape)
    cdef Py_ssize_t n, sx, sy, sv
    xa, ya, va = _operands(x, y, v, shape, &n, &sx, &sy, &sv)
    cdef cnp.ndarray o0 = np.empty(shape), o1 = np.empty(shape), o2 = np.empty(shape)
    cdef double* xp = _data(xa)
    cdef double* yp = _data(ya)
    cdef double* vp = _data(va)
    cdef double* q0 = _data(o0)
    cdef double* q1 = _data(o1)
    cdef double* q2 = _data(o2)
    with nogil:
        fad_map(op, mode, n, xp, sx, yp, sy, c, vp, sv, q0, q1, q2)
    return o0, o1, o2


def second(int op, x, y, v, shape):
    """(d2f/dx2, d2f/dxdy, d2f/dy2) elementwise, arrays of `shape`, from x, y
    and the values v."""
    return _map(op, FAD_MAP_SECOND, x, y, v, shape)


def op_map(int op, x, y=None, double c=0.0):
    """The op table over arrays, x and y broadcast: (values, d/dx, d/dy)."""
    shape = np.broadcast_shapes(np.shape(x), np.shape(y)) if y is not None else np.shape(x)
    return _map(op, FAD_MAP_VALUES, x, y, None, shape, c)


def op_map2(int op, x, y=None, double c=0.0):
    """The op table's second partials over arrays: (d2/dx2, d2/dxdy, d2/dy2)."""
    v = op_map(op, x, y, c)[0]
    return _map(op, FAD_MAP_SECOND, x, y, v, v.shape, c)


def times_partial(int op, int which, x, y, v, t, shape, out=None, bint accumulate=False):
    """out (+)= d * t in one pass, d = df/dx (which 0) or df/dy (which 1)
    elementwise from x, y and the values v (each None, one number or of the
    block's `shape`), t the block's shape + (k,) lanes.  A zero partial or
    lane gives an exact zero (strong zeros).  out may be t itself; returns out.
    Not for the ops that take a constant (an array block's constants are
    operands)."""
    _check(op)
    if fad_op_flags[op] & FAD_HAS_C:
        raise ValueError(f"times_partial: {fad_op_name[op].decode()} takes a constant; "
                         "an array block passes its constants as operands")
    if which != 0 and not (which == 1 and fad_op_flags[op] & FAD_BINARY):
        raise ValueError(f"times_partial: {fad_op_name[op].decode()} has no operand {which}")
    if type(shape) is not tuple:
        shape = tuple(shape)
    cdef Py_ssize_t n, sx, sy, sv
    xa, ya, va = _operands(x, y, v, shape, &n, &sx, &sy, &sv)
    cdef cnp.ndarray ta = _float64(t)
    if not cnp.PyArray_IS_C_CONTIGUOUS(ta):
        ta = np.ascontiguousarray(ta)
    cdef Py_ssize_t m = cnp.PyArray_SIZE(ta)
    if n == 0:
        return np.empty((<object>ta).shape) if out is None else out
    if m % n:
        raise ValueError(f"times_partial: {m} lanes for {n} elements")
    cdef Py_ssize_t k = m // n
    cdef cnp.ndarray oa
    if out is None:
        oa = np.empty((<object>ta).shape)
        accumulate = False
    else:
        oa = out
        if not cnp.PyArray_IS_C_CONTIGUOUS(oa) or cnp.PyArray_SIZE(oa) != m or \
                cnp.PyArray_TYPE(oa) != cnp.NPY_DOUBLE:
            raise ValueError("times_partial: out must be C-contiguous float64, as large as t")
    cdef double* xp = _data(xa)
    cdef double* yp = _data(ya)
    cdef double* vp = _data(va)
    cdef double* tp = _data(ta)
    cdef double* outp = _data(oa)
    with nogil:
        fad_times_partial(op, which, n, k, xp, sx, yp, sy, 0.0, vp, sv, tp, outp, accumulate)
    return oa
