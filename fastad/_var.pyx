# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The user-facing types: scalar Var, Array of slots, and the math functions.

Recording speed is the product, so every overload runs here in compiled
code: one op-table evaluation, one tape append, one small object.  A Var
holds no Python references (value, slot, recording id), so the cyclic GC
never tracks it and never walks the live tape.
"""
cimport cython
from cpython.long cimport PyLong_AsSsize_t, PyLong_AsDouble
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.ref cimport Py_REFCNT
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int32_t, int64_t, uint8_t

from fastad._kernels import OP_NAMES
from fastad._recorder import slot_range
from fastad._tape cimport *   # Tape, TapeBuf, tape_push, fad_eval and the FAD_* op codes

import numbers
import functools
import numpy as np
cimport numpy as cnp

from fastad.errors import TapeError

cnp.import_array()

# The recording in progress on this thread: each thread records on its own
# tape.  The buffer pointer is what the overloads use; the Tape object (a
# borrowed reference, kept alive by the transform that records) is for the
# rare places that need it.
cdef extern from *:
    """
    /* initial-exec: a direct %fs-relative load instead of a call to
       __tls_get_addr on every operation (a few bytes of static TLS) */
    #if defined(__GNUC__) && !defined(_WIN32)
    #define FASTAD_TLS __thread __attribute__((tls_model("initial-exec")))
    #else
    #define FASTAD_TLS __thread
    #endif
    static FASTAD_TLS void *fastad_current_buf = NULL;
    static FASTAD_TLS void *fastad_current_obj = NULL;
    static inline void *fastad_get_current(void) { return fastad_current_buf; }
    static inline void *fastad_get_current_obj(void) { return fastad_current_obj; }
    static inline void fastad_set_current(void *buf, void *obj) {
        fastad_current_buf = buf; fastad_current_obj = obj;
    }
    """
    void* fastad_get_current() nogil
    void* fastad_get_current_obj() nogil
    void fastad_set_current(void* buf, void* obj) nogil

_FLOAT64 = np.dtype(np.float64)    # the dtype of every value on the tape
cdef int64_t _last_id = 0   # recording ids; bumped under the GIL

cdef class Var
cdef class Array


# ---------------------------------------------------------------- recording

# the recordings in progress (in any thread): id -> the ident of its thread
cdef dict _running = {}


def begin_recording(Tape tape):
    """Make `tape` this thread's recording; returns a token for end_recording."""
    global _last_id
    if tape._out is not None:
        raise TapeError("fastad: this Tape is recorded already; record a new one")
    _last_id += 1
    tape.buf.id = _last_id
    tape.recording = True
    _running[_last_id] = PyThread_get_thread_ident()
    cdef size_t prev = <size_t>fastad_get_current_obj()
    fastad_set_current(&tape.buf, <void*>tape)
    return prev


def end_recording(size_t token):
    """Restore the recording that was current before begin_recording."""
    cdef void* ending = fastad_get_current_obj()
    if ending != NULL:
        (<Tape>ending).recording = False
        _running.pop((<Tape>ending).buf.id, None)
    if token == 0:
        fastad_set_current(NULL, NULL)
    else:
        fastad_set_current(&(<Tape><void*>token).buf, <void*>token)


def current_tape():
    """This thread's recording in progress (a Tape), or None."""
    cdef void* cur = fastad_get_current_obj()
    return None if cur == NULL else <Tape>cur


def is_traced(Tape tape, object x):
    """x is a Var or an Array of `tape`."""
    if type(x) is Var:
        return (<Var>x).tid == tape.buf.id
    if type(x) is Array:
        return (<Array>x).tid == tape.buf.id
    return False


cdef Tape _tape_object(TapeBuf* t):
    """The Tape object of the current recording (t must be current)."""
    return <Tape>fastad_get_current_obj()


cdef inline TapeBuf* _current(int64_t tid) except NULL:
    cdef TapeBuf* t = <TapeBuf*>fastad_get_current()
    if t != NULL and t.id == tid:
        return t
    return _not_current(t, tid)


cdef TapeBuf* _not_current(TapeBuf* t, int64_t tid) except NULL:
    """The error for a Var/Array whose recording is not this thread's current one."""
    owner = _running.get(tid)
    if owner is not None and owner != PyThread_get_thread_ident():
        raise TapeError(
            "fastad: this Var/Array belongs to a recording running in another thread; "
            "a recording is per thread (each thread has its own tape), so Vars and "
            "Arrays work only in the thread that called fad.grad / fad.record: "
            "give worker threads plain numbers (.value), or record in the worker")
    if owner is None:
        raise TapeError(
            "fastad: this Var/Array belongs to a recording that has ended; "
            "Vars and Arrays are only valid inside the function being "
            "differentiated (keep .value if you need the numbers afterwards)")
    raise TapeError(
        "fastad: this Var/Array belongs to another recording than the one "
        "running now; values of two recordings cannot be mixed (fad.record and the "
        "sparse routines make a tape of their own, which cannot see an enclosing "
        "transform's values; fad.grad, value_and_grad, jvp, vjp, jacobian, hessian "
        "and hvp nest inside one another)")


# Vars come and go once per operation: a free list of their memory, filled
# by fastad_var_dealloc (Var's tp_dealloc, set at import, end of this file).
# A Var holds no references and is not tracked by the GC, so its memory is
# all there is.
cdef extern from *:
    """
    #define FASTAD_VAR_FREE 1024
    static PyObject *fastad_var_free[FASTAD_VAR_FREE];
    static int fastad_var_nfree = 0;
    static PyTypeObject *fastad_var_type = NULL;

    /* Var's layout (checked against Cython's at import: fastad_var_check) */
    typedef struct { PyObject_HEAD double value; Py_ssize_t slot; int64_t tid; } fastad_var_t;

    /* The free list relies on the GIL; a debug build (reference totals,
       the list of all objects) or a free-threaded one takes the general
       path (PyObject_Init). */
    #if defined(Py_GIL_DISABLED) || defined(Py_REF_DEBUG) || defined(Py_TRACE_REFS)
    #define FASTAD_VAR_PLAIN_INIT 1
    #else
    #define FASTAD_VAR_PLAIN_INIT 0
    #endif
    /* a new Var (a new reference; NULL with MemoryError) */
    static inline PyObject *fastad_var_new(double v, Py_ssize_t slot, int64_t tid) {
        PyObject *o;
    #if FASTAD_VAR_PLAIN_INIT
        if (!(o = (PyObject *)PyObject_Malloc(sizeof(fastad_var_t))))
            return PyErr_NoMemory();
        PyObject_Init(o, fastad_var_type);
    #else
        if (fastad_var_nfree)
            o = fastad_var_free[--fastad_var_nfree];
        else if (!(o = (PyObject *)PyObject_Malloc(sizeof(fastad_var_t))))
            return PyErr_NoMemory();
        Py_SET_TYPE(o, fastad_var_type);
        Py_SET_REFCNT(o, 1);
    #endif
        ((fastad_var_t *)o)->value = v;
        ((fastad_var_t *)o)->slot = slot;
        ((fastad_var_t *)o)->tid = tid;
        return o;
    }
    static int fastad_var_check(PyObject *o, void *value, void *slot, void *tid) {
        if (Py_TYPE(o)->tp_basicsize != sizeof(fastad_var_t)
                || (char *)value - (char *)o != offsetof(fastad_var_t, value)
                || (char *)slot - (char *)o != offsetof(fastad_var_t, slot)
                || (char *)tid - (char *)o != offsetof(fastad_var_t, tid)) {
            PyErr_SetString(PyExc_RuntimeError, "fastad: Var's layout is not the one expected");
            return -1;
        }
        return 0;
    }
    static void fastad_var_dealloc(PyObject *o) {
        if (!FASTAD_VAR_PLAIN_INIT && fastad_var_nfree < FASTAD_VAR_FREE)
            fastad_var_free[fastad_var_nfree++] = o;
        else
            PyObject_Free(o);
    }
    /* Var's slots, set once at import (before any Var exists): its own
       memory handling, and number slots that go straight to the fast path
       instead of Cython's wrappers (which try __mul__, then __rmul__, with
       a subtype check between) */
    static int fastad_var_init_type(PyObject *tp, void *add, void *sub, void *mul,
                                    void *div, void *neg, void *pow) {
        PyTypeObject *t = (PyTypeObject *)tp;
        if (PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE) || !t->tp_as_number) {
            PyErr_SetString(PyExc_RuntimeError, "fastad: Var is not the static type expected");
            return -1;
        }
        fastad_var_type = t;
        t->tp_dealloc = fastad_var_dealloc;
        t->tp_free = PyObject_Free;
        t->tp_as_number->nb_add = (binaryfunc)add;
        t->tp_as_number->nb_subtract = (binaryfunc)sub;
        t->tp_as_number->nb_multiply = (binaryfunc)mul;
        t->tp_as_number->nb_true_divide = (binaryfunc)div;
        t->tp_as_number->nb_negative = (unaryfunc)neg;
        t->tp_as_number->nb_power = (ternaryfunc)pow;
        PyType_Modified(t);
        return 0;
    }

    /* Array's item lookup: ints on a 1-d Array go to the fast path, the
       rest to Cython's __getitem__ */
    static binaryfunc fastad_array_getitem_orig = NULL;
    static PyObject *fastad_array_getitem_slow(PyObject *a, PyObject *k) {
        return fastad_array_getitem_orig(a, k);
    }
    static void fastad_array_init_type(PyObject *tp, void *getitem) {
        PyTypeObject *t = (PyTypeObject *)tp;
        fastad_array_getitem_orig = t->tp_as_mapping->mp_subscript;
        t->tp_as_mapping->mp_subscript = (binaryfunc)getitem;
        PyType_Modified(t);
    }
    """
    object fastad_var_new(double v, Py_ssize_t slot, int64_t tid)
    int fastad_var_check(object o, void* value, void* slot, void* tid) except -1
    int fastad_var_init_type(object tp, void* add, void* sub, void* mul, void* div,
                             void* neg, void* pow) except -1
    object fastad_array_getitem_slow(object a, object k)
    void fastad_array_init_type(object tp, void* getitem)


cdef inline Var _new(double v, Py_ssize_t slot, int64_t tid):
    return <Var>fastad_var_new(v, slot, tid)


cdef inline Var _un(int op, Var x, double c):
    cdef TapeBuf* t = _current(x.tid)
    cdef double d0, d1
    cdef double v = fad_eval(op, x.value, 0.0, c, &d0, &d1)
    return _new(v, tape_push(t, op, <int32_t>x.slot, -1, d0, c, v), x.tid)


cdef inline Var _bin(int op, Var x, Var y):
    cdef TapeBuf* t = _current(x.tid)
    if y.tid != x.tid:
        _not_current(t, y.tid)       # (x's recording is the current one)
    cdef double d0, d1
    cdef double v = fad_eval(op, x.value, y.value, 0.0, &d0, &d1)
    return _new(v, tape_push(t, op, <int32_t>x.slot, <int32_t>y.slot, d0, d1, v),
                x.tid)


cdef bint _num(object o, double* out) except -1:
    """Store o as a double if it is a real number (not a Var); else False."""
    if type(o) is float:
        out[0] = PyFloat_AS_DOUBLE(o)
        return True
    if type(o) is int:
        out[0] = PyLong_AsDouble(o)
        return True
    if isinstance(o, float) or isinstance(o, numbers.Real) or isinstance(o, np.bool_):
        out[0] = float(o)
        return True
    if isinstance(o, np.ndarray) and (<cnp.ndarray>o).ndim == 0 and o.dtype.kind in "biuf":
        out[0] = float(o)
        return True
    return False


cdef inline object _binary(object a, object b, int vv, int xc, int cx):
    """a (op) b where a or b is a Var; NotImplemented for other operands."""
    cdef double c
    if type(a) is Var:
        if type(b) is Var:
            return _bin(vv, <Var>a, <Var>b)
        if _num(b, &c):
            return _un(xc, <Var>a, c)
    elif type(b) is Var and _num(a, &c):
        return _un(cx, <Var>b, c)
    return NotImplemented


# ----------------------------------------------- the operators' fast path
# Var's number slots (set at import, see fastad_var_init_type): Var (op)
# Var and Var (op) float/int on this thread's recording, with room on the
# tape, in one inlined step; everything else (other operands, a full tape,
# the errors) goes through _binary.

cdef inline bint _plain(object o, double* c) except -1:
    """o is a float or an int (stored in c)."""
    if type(o) is float:
        c[0] = PyFloat_AS_DOUBLE(o)
        return True
    if type(o) is int:
        c[0] = PyLong_AsDouble(o)
        return True
    return False


cdef inline Py_ssize_t _put(TapeBuf* t, int op, Py_ssize_t a0, Py_ssize_t a1,
                            double p0, double p1, double v) noexcept:
    """tape_push on a tape with room (t.n < t.cap)."""
    cdef Py_ssize_t i = t.n
    t.op[i] = <uint8_t>op
    cdef fad_node* nd = &t.node[i]
    nd.p0 = p0
    nd.p1 = p1
    nd.a0 = <int32_t>a0
    nd.a1 = <int32_t>a1
    t.val[i] = v
    t.n = i + 1
    return i


cdef inline int _kind(object a, object b, TapeBuf** tp, double* c) except -1:
    """Which fast case a (op) b is: 1 Var (op) Var, 2 Var (op) number,
    3 number (op) Var, all on this thread's recording with room on its tape
    (*tp); 0 anything else."""
    cdef TapeBuf* t = <TapeBuf*>fastad_get_current()
    tp[0] = t
    if t == NULL or t.n >= t.cap:
        return 0
    if type(a) is Var:
        if (<Var>a).tid != t.id:
            return 0
        if type(b) is Var:
            return 1 if (<Var>b).tid == t.id else 0
        return 2 if _plain(b, c) else 0
    if type(b) is Var and (<Var>b).tid == t.id and _plain(a, c):
        return 3
    return 0


# One function per operator, so that fad_eval sees a constant op and folds
# to the op's two or three lines (a shared function did not inline).
cdef object _nb_add(object a, object b):
    cdef TapeBuf* t
    cdef double c, d0, d1, v
    cdef int k = _kind(a, b, &t, &c)
    if k == 1:
        v = fad_eval(FAD_ADD, (<Var>a).value, (<Var>b).value, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_ADD, (<Var>a).slot, (<Var>b).slot, d0, d1, v), t.id)
    if k == 2:
        v = fad_eval(FAD_ADD_C, (<Var>a).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_ADD_C, (<Var>a).slot, -1, d0, c, v), t.id)
    if k == 3:
        v = fad_eval(FAD_ADD_C, (<Var>b).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_ADD_C, (<Var>b).slot, -1, d0, c, v), t.id)
    return _binary(a, b, FAD_ADD, FAD_ADD_C, FAD_ADD_C)


cdef object _nb_sub(object a, object b):
    cdef TapeBuf* t
    cdef double c, d0, d1, v
    cdef int k = _kind(a, b, &t, &c)
    if k == 1:
        v = fad_eval(FAD_SUB, (<Var>a).value, (<Var>b).value, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_SUB, (<Var>a).slot, (<Var>b).slot, d0, d1, v), t.id)
    if k == 2:
        v = fad_eval(FAD_SUB_C, (<Var>a).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_SUB_C, (<Var>a).slot, -1, d0, c, v), t.id)
    if k == 3:
        v = fad_eval(FAD_SUB_CX, (<Var>b).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_SUB_CX, (<Var>b).slot, -1, d0, c, v), t.id)
    return _binary(a, b, FAD_SUB, FAD_SUB_C, FAD_SUB_CX)


cdef object _nb_mul(object a, object b):
    cdef TapeBuf* t
    cdef double c, d0, d1, v
    cdef int k = _kind(a, b, &t, &c)
    if k == 1:
        v = fad_eval(FAD_MUL, (<Var>a).value, (<Var>b).value, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_MUL, (<Var>a).slot, (<Var>b).slot, d0, d1, v), t.id)
    if k == 2:
        v = fad_eval(FAD_MUL_C, (<Var>a).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_MUL_C, (<Var>a).slot, -1, d0, c, v), t.id)
    if k == 3:
        v = fad_eval(FAD_MUL_C, (<Var>b).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_MUL_C, (<Var>b).slot, -1, d0, c, v), t.id)
    return _binary(a, b, FAD_MUL, FAD_MUL_C, FAD_MUL_C)


cdef object _nb_div(object a, object b):
    cdef TapeBuf* t
    cdef double c, d0, d1, v
    cdef int k = _kind(a, b, &t, &c)
    if k == 1:
        v = fad_eval(FAD_DIV, (<Var>a).value, (<Var>b).value, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_DIV, (<Var>a).slot, (<Var>b).slot, d0, d1, v), t.id)
    if k == 2:
        v = fad_eval(FAD_DIV_C, (<Var>a).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_DIV_C, (<Var>a).slot, -1, d0, c, v), t.id)
    if k == 3:
        v = fad_eval(FAD_DIV_CX, (<Var>b).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_DIV_CX, (<Var>b).slot, -1, d0, c, v), t.id)
    return _binary(a, b, FAD_DIV, FAD_DIV_C, FAD_DIV_CX)


cdef object _nb_pow(object a, object b, object m):
    cdef TapeBuf* t
    cdef double c, d0, d1, v
    cdef int k = _kind(a, b, &t, &c) if m is None else -1
    if k == 1:
        v = fad_eval(FAD_POW, (<Var>a).value, (<Var>b).value, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_POW, (<Var>a).slot, (<Var>b).slot, d0, d1, v), t.id)
    if k == 2:
        v = fad_eval(FAD_POW_C, (<Var>a).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_POW_C, (<Var>a).slot, -1, d0, c, v), t.id)
    if k == 3:
        v = fad_eval(FAD_POW_CX, (<Var>b).value, 0.0, c, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_POW_CX, (<Var>b).slot, -1, d0, c, v), t.id)
    if m is not None:
        return NotImplemented
    return _binary(a, b, FAD_POW, FAD_POW_C, FAD_POW_CX)


cdef object _nb_neg(object a):
    cdef TapeBuf* t = <TapeBuf*>fastad_get_current()
    cdef double d0, d1, v
    if t != NULL and t.n < t.cap and (<Var>a).tid == t.id:
        v = fad_eval(FAD_NEG, (<Var>a).value, 0.0, 0.0, &d0, &d1)
        return fastad_var_new(v, _put(t, FAD_NEG, (<Var>a).slot, -1, d0, 0.0, v), t.id)
    return _un(FAD_NEG, <Var>a, 0.0)


cdef enum:
    CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_EQ, CMP_NE
# op for a (kind) b with b on the tape (GT/GE are swapped to LT/LE) or constant
cdef int[6] _CMP_VV = [FAD_LT, FAD_LE, -1, -1, FAD_EQ, FAD_NE]
cdef int[6] _CMP_VC = [FAD_LT_C, FAD_LE_C, FAD_GT_C, FAD_GE_C, FAD_EQ_C, FAD_NE_C]


cdef object _compare(Var a, object b, int kind):
    """Record the comparison a (kind) b and return its outcome as a bool."""
    cdef TapeBuf* t = _current(a.tid)
    cdef double c, d0, d1, v
    cdef Var y
    cdef int op
    if type(b) is Var:
        y = <Var>b
        if y.tid != a.tid:
            _not_current(t, y.tid)
        # a > b is b < a: four ops cover the six comparisons
        if kind == CMP_GT or kind == CMP_GE:
            op = FAD_LT if kind == CMP_GT else FAD_LE
            v = fad_eval(op, y.value, a.value, 0.0, &d0, &d1)
            tape_push(t, op, <int32_t>y.slot, <int32_t>a.slot, d0, d1, v)
        else:
            op = _CMP_VV[kind]
            v = fad_eval(op, a.value, y.value, 0.0, &d0, &d1)
            tape_push(t, op, <int32_t>a.slot, <int32_t>y.slot, d0, d1, v)
        return v != 0.0
    if not _num(b, &c):
        return NotImplemented
    op = _CMP_VC[kind]
    v = fad_eval(op, a.value, 0.0, c, &d0, &d1)
    tape_push(t, op, <int32_t>a.slot, -1, d0, c, v)
    return v != 0.0


_NO_PICKLE = ("fastad: a Var/Array only names slots of one recording and cannot be "
              "pickled; pickle its .value, or record a fad.Tape (which pickles)")

_NO_FLOAT = ("fastad: a Var cannot be converted to a plain number while it is "
             "being differentiated, since that would silently drop its "
             "derivative. Use the fastad functions (fad.sin, fad.exp, ... "
             "instead of math.sin, math.exp, ...) or v.value for the number "
             "(a recording that reads .value replays only at its own x: the "
             "number may steer f where the tape cannot check; compare Vars, "
             "x > 0, to branch).")


_FASTAD_DIR = None


def _where_read():
    """file:line of the user code that read .value (the first frame outside fastad)."""
    import os
    import sys
    global _FASTAD_DIR
    if _FASTAD_DIR is None:
        _FASTAD_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
    f = sys._getframe(0)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_FASTAD_DIR):
        f = f.f_back
    if f is None:
        return ".value read"
    return f".value read at {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


cdef int _note_value_read(int64_t tid) except -1:
    """A Python read of a value of the recording running in this thread marks it."""
    cdef void* cur = fastad_get_current_obj()
    if cur == NULL:
        return 0
    cdef Tape t = <Tape>cur
    if t.buf.id == tid and t.value_read is None:
        t.value_read = _where_read()
    return 0


def value_of(x):
    """The number(s) of a Var or Array for fastad's own code: no mark."""
    if type(x) is Var:
        return (<Var>x).value
    return (<Array>x)._values()


@cython.final
@cython.auto_pickle(False)
cdef class Var:
    """A scalar on the tape: a value, its slot, and its recording's id."""
    # the number this Var stands for: a C field for fastad's own code; a read
    # from Python (v.value, through __getattr__) marks its recording
    cdef double value
    cdef readonly Py_ssize_t slot
    cdef int64_t tid

    def __init__(self, *args, **kwargs):
        raise TypeError("fastad.Var is created by fad.grad and friends, not directly")

    def __repr__(self):
        return f"Var({self.value!r})"

    # A Var names a slot of one live recording: copies are the Var itself,
    # and it cannot travel to another process.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError(_NO_PICKLE)

    def __format__(self, spec):
        return format(self.value, spec)


    # arithmetic: + - * / ** and unary - run from the number slots set at
    # import (_nb_add ...); these methods serve explicit calls (v.__add__(w))
    # and the other operators.  Cython 3 calls __add__ with self first,
    # __radd__ reflected
    def __add__(self, o): return _binary(self, o, FAD_ADD, FAD_ADD_C, FAD_ADD_C)
    def __radd__(self, o): return _binary(o, self, FAD_ADD, FAD_ADD_C, FAD_ADD_C)
    def __sub__(self, o): return _binary(self, o, FAD_SUB, FAD_SUB_C, FAD_SUB_CX)
    def __rsub__(self, o): return _binary(o, self, FAD_SUB, FAD_SUB_C, FAD_SUB_CX)
    def __mul__(self, o): return _binary(self, o, FAD_MUL, FAD_MUL_C, FAD_MUL_C)
    def __rmul__(self, o): return _binary(o, self, FAD_MUL, FAD_MUL_C, FAD_MUL_C)
    def __truediv__(self, o): return _binary(self, o, FAD_DIV, FAD_DIV_C, FAD_DIV_CX)
    def __rtruediv__(self, o): return _binary(o, self, FAD_DIV, FAD_DIV_C, FAD_DIV_CX)

    def __pow__(self, o, mod):
        if mod is not None:
            return NotImplemented
        return _binary(self, o, FAD_POW, FAD_POW_C, FAD_POW_CX)

    def __rpow__(self, o, mod):
        if mod is not None:
            return NotImplemented
        return _binary(o, self, FAD_POW, FAD_POW_C, FAD_POW_CX)

    # % and // with NumPy's conventions (np.remainder, np.floor_divide)
    def __mod__(self, o): return _binary(self, o, FAD_REMAINDER, FAD_REMAINDER_C, FAD_REMAINDER_CX)
    def __rmod__(self, o): return _binary(o, self, FAD_REMAINDER, FAD_REMAINDER_C, FAD_REMAINDER_CX)
    def __floordiv__(self, o): return _binary(self, o, FAD_FLOORDIV, FAD_FLOORDIV_C, FAD_FLOORDIV_CX)
    def __rfloordiv__(self, o): return _binary(o, self, FAD_FLOORDIV, FAD_FLOORDIV_C, FAD_FLOORDIV_CX)

    def __divmod__(self, o):
        q = _binary(self, o, FAD_FLOORDIV, FAD_FLOORDIV_C, FAD_FLOORDIV_CX)
        return q if q is NotImplemented else (
            q, _binary(self, o, FAD_REMAINDER, FAD_REMAINDER_C, FAD_REMAINDER_CX))

    def __rdivmod__(self, o):
        q = _binary(o, self, FAD_FLOORDIV, FAD_FLOORDIV_C, FAD_FLOORDIV_CX)
        return q if q is NotImplemented else (
            q, _binary(o, self, FAD_REMAINDER, FAD_REMAINDER_C, FAD_REMAINDER_CX))

    def __neg__(self): return _un(FAD_NEG, self, 0.0)
    def __pos__(self): return self
    def __abs__(self): return _un(FAD_ABS, self, 0.0)

    # math.floor(v), math.ceil(v), math.trunc(v), round(v[, n]): recorded Vars
    # (derivative 0) rather than ints, so a replay recomputes them; round
    # rounds half to even and, with n digits, scales as np.round does
    def __floor__(self): return _un(FAD_FLOOR, self, 0.0)
    def __ceil__(self): return _un(FAD_CEIL, self, 0.0)
    def __trunc__(self): return _un(FAD_TRUNC, self, 0.0)

    def __round__(self, ndigits=None):
        if ndigits is None or ndigits == 0:
            return _un(FAD_RINT, self, 0.0)
        cdef double f = 10.0 ** abs(int(ndigits))
        if ndigits > 0:
            return _un(FAD_RINT, self * f, 0.0) / f
        return _un(FAD_RINT, self / f, 0.0) * f

    def __lt__(self, o): return _compare(self, o, CMP_LT)
    def __le__(self, o): return _compare(self, o, CMP_LE)
    def __gt__(self, o): return _compare(self, o, CMP_GT)
    def __ge__(self, o): return _compare(self, o, CMP_GE)
    def __eq__(self, o): return _compare(self, o, CMP_EQ)
    def __ne__(self, o): return _compare(self, o, CMP_NE)

    def __float__(self): raise TypeError(_NO_FLOAT)
    def __int__(self): raise TypeError(_NO_FLOAT)
    def __index__(self): raise TypeError(_NO_FLOAT)
    def __complex__(self): raise TypeError(_NO_FLOAT)

    def __bool__(self):
        raise TypeError(
            "fastad: the truth value of a Var is not defined; compare it "
            "explicitly (v > 0, v != 0), which is recorded on the tape")

    # a Var is a 0-d array (NumPy code asks x.shape, x.ndim, ...)
    @property
    def shape(self):
        return ()

    @property
    def ndim(self):
        return 0

    @property
    def size(self):
        return 1

    # (no .dtype: NumPy's object-array code, np.var among it, would then
    # convert a Var with arrmean.dtype.type(arrmean))

    def __getattr__(self, name):
        # .value from Python marks the recording (compiled code reads the
        # C field); NumPy's ufuncs on an object ndarray (np.exp(np.array([x[0],
        # x[1]]))) call the method of each element named like the ufunc
        if name == "value":
            _note_value_read(self.tid)
            return self.value
        fn = _OBJECT_METHODS.get(name)
        if fn is None:
            raise AttributeError(f"'fastad.Var' object has no attribute {name!r}")
        return functools.partial(fn, self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _dispatch_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        # np.sum(v), np.mean(v), np.stack([v, w]), ...: a Var is a 0-d array
        return _arr().apply_function(func, args, kwargs)


# ---------------------------------------------------------------- arrays

cdef object _array_getitem(object self, object key):
    """Array's mp_subscript (set at import): x[i] on a 1-d Array whose
    elements were handed out before (noted) in a few loads; the rest
    through Array.__getitem__."""
    cdef Py_ssize_t i, slot
    if type(key) is int and (<Array>self).nd == 1 and (<Array>self).noted \
            and not (<Array>self).consumed:
        i = <Py_ssize_t>key       # (Cython reads a one-digit int inline)
        if i < 0:
            i += (<Array>self).n0
        if 0 <= i < (<Array>self).n0:
            (<Array>self).fresh = False
            slot = (<Py_ssize_t*>((<Array>self).data + i * (<Array>self).s0))[0]
            return fastad_var_new((<Array>self).tape.buf.val[slot], slot, (<Array>self).tid)
    return fastad_array_getitem_slow(self, key)


cdef Array _make_array(Tape tape, int64_t tid, object idx):
    cdef Array a = Array.__new__(Array)
    cdef cnp.ndarray ix = <cnp.ndarray>idx
    a.tape = tape
    a.tid = tid
    a.ix = ix
    a.cstart = -1
    a.unique = False
    a.nd = ix.ndim
    a.data = <char*>cnp.PyArray_DATA(ix)
    a.n0 = ix.shape[0] if a.nd >= 1 else 1
    a.s0 = ix.strides[0] if a.nd >= 1 else 0
    a.n1 = ix.shape[1] if a.nd >= 2 else 1
    a.s1 = ix.strides[1] if a.nd >= 2 else 0
    return a


cdef inline Py_ssize_t _norm(Py_ssize_t i, Py_ssize_t n, int axis) except -1:
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError(f"index {i if i >= 0 else i - n} is out of bounds for "
                         f"axis {axis} with size {n}")
    return i


cdef bint _traced_index(object key):
    """A Var or Array in an index (x[v], x[v, 0], x[[v]])."""
    if type(key) is Var or type(key) is Array:
        return True
    if type(key) is tuple or type(key) is list:
        for k in key:
            if type(k) is Var or type(k) is Array or \
                    (type(k) is list and _traced_index(k)):
                return True
    return False


cdef bint _basic_index(object key):
    """True for keys made of ints, slices, Ellipsis and None (views never repeat slots)."""
    items = key if type(key) is tuple else (key,)
    for k in items:
        if not (k is None or k is Ellipsis or type(k) is slice or isinstance(k, (int, np.integer))):
            return False
    return True


# The array operations (fastad.arrays): what operators and NumPy functions on
# Arrays (and on Vars mixed with arrays) do.  They record blocks
# (fastad._blocks), which sit above Var and Array, so fastad.arrays hands
# itself to this module when it is imported (the package imports it) rather
# than this module importing it.
cdef object _arrays = None


def provide_array_operations(ops):
    """Called by fastad.arrays: `ops` (the module) has elementwise, power,
    compare, matmul, dot, sum, mean, amax, amin, reshape, transpose, stack,
    where, apply_ufunc and apply_function."""
    global _arrays
    _arrays = ops


# In-place steps need to know when an operand dies with the operation: a
# fresh Array referenced only by the caller's expression.  Its reference
# count then has a fixed value, which depends on the path (an operator, or
# NumPy's ufunc dispatch, which holds references of its own, one fewer for
# the second Array of a class).  _calibrate measures it for each path and
# position from Python code, and also the count of a live local variable:
# where the two agree (an interpreter that borrows references of locals),
# that path never counts as dead.  Index 2 * kind + position, kinds: an
# operator (0; 1 with two Arrays), a unary ufunc (2), a binary ufunc (3; 4
# with two Arrays); 0 = never dead.
cdef Py_ssize_t[10] _temp_refs = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
cdef Py_ssize_t[10] _seen = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
cdef bint _calibrating = False


cdef inline int _dead(object x, object y, int kind):
    """Bits 1, 2: x, y are fresh Arrays that die with the operation."""
    cdef bint ax = type(x) is Array, ay = type(y) is Array
    if ax and ay and kind != 2:
        kind += 1
    if _calibrating:                # the counts, as this very path sees them
        if ax:
            _seen[2 * kind] = Py_REFCNT(x)
        if ay:
            _seen[2 * kind + 1] = Py_REFCNT(y)
        return 0
    cdef int d = 0
    if ax and (<Array>x).fresh and Py_REFCNT(x) == _temp_refs[2 * kind]:
        d = 1
    if ay and (<Array>y).fresh and Py_REFCNT(y) == _temp_refs[2 * kind + 1]:
        d |= 2
    return d


cdef object _op(str name, object x, object y):
    """An operator on Arrays: fastad.arrays.elementwise, told which operand dies."""
    cdef int d = _dead(x, y, 0)
    if _calibrating:
        return None
    return _arr().elementwise(name, x, y, d)


cdef inline object _arr():
    """The array operations (see provide_array_operations)."""
    if _arrays is None:
        raise RuntimeError("fastad: the array operations (fastad.arrays) are not "
                           "loaded; import fastad")
    return _arrays


def make_array(Tape tape, object idx, Py_ssize_t cstart=-1, bint unique=False,
               bint fresh=False):
    """An Array (or a Var, for a 0-d idx) over slots `idx` of the current recording;
    `fresh` for a block's output (the only object naming its slots, for now)."""
    cdef cnp.ndarray ix = idx if type(idx) is np.ndarray and \
        cnp.PyArray_TYPE(<cnp.ndarray>idx) == cnp.NPY_INTP and \
        cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>idx) else np.asarray(idx, dtype=np.intp)
    cdef Py_ssize_t s
    if ix.ndim == 0:
        s = int(ix)
        tape.escape(s, s)
        return _new(tape.buf.val[s], s, tape.buf.id)
    cdef Array a = _make_array(tape, tape.buf.id, ix)
    a.cstart = cstart
    a.unique = unique or cstart >= 0
    a.fresh = fresh
    return a


def consume(Array a):
    """a is a dead temporary whose slots a block is about to write over
    (see Tape.overwrite_block): any later use of it is a conflict."""
    a.consumed = True
    a.fresh = False


cdef inline Py_ssize_t _push_op(TapeBuf* t, int op, Py_ssize_t a, Py_ssize_t b,
                                double c) except -1:
    """Append op(val[a], val[b]) (b < 0: unary with constant c); its slot."""
    cdef double d0, d1
    cdef double v = fad_eval(op, t.val[a], t.val[b] if b >= 0 else 0.0, c, &d0, &d1)
    if b >= 0:
        return tape_push(t, op, <int32_t>a, <int32_t>b, d0, d1, v)
    return tape_push(t, op, <int32_t>a, -1, d0, c, v)


def traced_sweep(Tape tape, Py_ssize_t lo, Py_ssize_t hi, cnp.intp_t[::1] adj,
                 const signed char[::1] kind, const double[::1] const, object partial,
                 object block):
    """Record the reverse sweep over the scalar nodes at slots [lo, hi) on
    `tape` itself (fastad._nested): adj[i - lo] is slot i's adjoint's slot
    (-1: zero).  Per op and operand, kind[2 op + j] says what the partial
    is: 0 zero, 1 one, 2 minus one, 3 const[2 op + j], 4 the node's constant,
    5/6/7 the value at x/y/the node itself, 8 traced code:
    partial(op, j, a0, a1, i, c) returns it.  At a block's last slot,
    block(i) pulls it back and returns its first slot."""
    cdef void* cur_buf = fastad_get_current()
    if cur_buf == NULL or (<TapeBuf*>cur_buf).id != tape.buf.id:
        raise TapeError("fastad: a nested sweep records on the recording in progress")
    if not (0 <= lo <= hi <= tape.buf.n) or adj.shape[0] < hi - lo or \
            kind.shape[0] < 2 * FAD_NUM_OPS or const.shape[0] < 2 * FAD_NUM_OPS:
        raise ValueError("fastad: traced_sweep: bad ranges")
    cdef TapeBuf* t = &tape.buf
    cdef Py_ssize_t i = hi - 1, q, r, cur, src
    cdef int op, j, fl, kd
    cdef Py_ssize_t arg[2]
    cdef double c, c2
    cdef object d
    while i >= lo:
        op = t.op[i]
        if op == FAD_BLOCK:
            i = <Py_ssize_t>block(i) - 1
            continue
        q = adj[i - lo]
        fl = fad_op_flags[op]
        if q < 0 or (fl & FAD_ZD) or op == FAD_INPUT:
            i -= 1
            continue
        arg[0] = t.node[i].a0
        arg[1] = t.node[i].a1 if (fl & FAD_BINARY) else -1
        c = 0.0 if (fl & FAD_BINARY) else t.node[i].p1
        for j in range(2):
            src = arg[j]
            if src < lo:
                continue
            kd = kind[2 * op + j]
            if kd == 0:
                continue
            elif kd == 1:
                r = q
            elif kd == 2:
                r = _push_op(t, FAD_NEG, q, -1, 0.0)
            elif kd == 3:
                r = _push_op(t, FAD_MUL_C, q, -1, const[2 * op + j])
            elif kd == 4:
                r = q if c == 1.0 else _push_op(t, FAD_MUL_C, q, -1, c)
            elif kd == 8:
                d = partial(op, j, arg[0], arg[1], i, c)
                if type(d) is Var:
                    r = _push_op(t, FAD_MUL, q, (<Var>d).slot, 0.0)
                else:
                    c2 = float(d)
                    if c2 == 0.0:
                        continue
                    r = q if c2 == 1.0 else _push_op(t, FAD_MUL_C, q, -1, c2)
            else:
                r = _push_op(t, FAD_MUL, q, arg[0] if kd == 5 else (arg[1] if kd == 6 else i), 0.0)
            cur = adj[src - lo]
            adj[src - lo] = r if cur < 0 else _push_op(t, FAD_ADD, cur, r, 0.0)
        i -= 1
    return None


def tape_of(Var v):
    """The Tape a Var of the current recording lives on (TapeError otherwise)."""
    return _tape_object(_current(v.tid))


def var_at(Tape tape, Py_ssize_t s):
    """The Var for slot s of the current recording on `tape`."""
    return _new(tape.buf.val[s], s, tape.buf.id)


def temp_refs():
    """The measured reference counts of a dead temporary (see _temp_refs)."""
    return [_temp_refs[i] for i in range(10)]


_CALIBRATION = """
def temps(new, np):
    new() + 1.0; 1.0 + new(); new() + new()
    np.negative(new()); np.add(new(), 1.0); np.add(1.0, new()); np.add(new(), new())

def lives(new, np):
    a = new(); b = new()
    a + 1.0; 1.0 + a; a + b
    np.negative(a); np.add(a, 1.0); np.add(1.0, a); np.add(a, b)
"""


def _calibrate():
    """Measure _temp_refs from Python code (see there)."""
    global _calibrating
    cdef Py_ssize_t i
    cdef Py_ssize_t[10] temp
    code = {}
    exec(_CALIBRATION, code)
    _calibrating = True
    try:
        code["temps"](lambda: Array.__new__(Array), np)
        for i in range(10):
            temp[i] = _seen[i]
            _seen[i] = 0
        code["lives"](lambda: Array.__new__(Array), np)
    finally:
        _calibrating = False
    for i in range(10):
        _temp_refs[i] = temp[i] if temp[i] != _seen[i] else 0


def active_info(object obj):
    """(tape, idx, cstart, unique) for a Var/Array of this thread's recording, else None.

    Raises TapeError for a Var/Array whose recording has ended or is not current."""
    cdef Var v
    cdef Array a
    if type(obj) is Var:
        v = <Var>obj
        return (_tape_object(_current(v.tid)), np.array(v.slot, dtype=np.intp), v.slot, True)
    if type(obj) is Array:
        a = <Array>obj
        _current(a.tid)
        a._touch()
        return (a.tape, a.ix, a.cstart, a.unique)
    return None


@cython.auto_pickle(False)
cdef class Array:
    """An array of tape slots (any shape); elements are Vars at zero cost.

    Indexing with integers gives a Var (no tape node); slicing gives an Array
    view of the same slots.  Whole-array arithmetic is not available yet."""
    cdef Tape tape
    cdef int64_t tid
    cdef object ix             # ndarray of slot numbers, with this array's shape
    cdef public Py_ssize_t cstart   # >= 0: idx is cstart, cstart+1, ... in C order
    cdef public bint unique         # True: no slot repeats (False: not known)
    cdef char* data
    cdef Py_ssize_t n0, s0, n1, s1
    cdef int nd
    cdef bint noted                 # its elements were handed out as Vars (Tape.escape)
    # In-place steps (Tape.single_sweep): a block's output Array is `fresh`
    # until its slots are handed to anything (an operand, a view, a Var).  A
    # fresh Array that only the caller's temporaries reference is dead after
    # the operation, which may then write over its slots; it is `consumed`,
    # and using it again (possible where the only other reference was
    # borrowed: a tuple passed as *args, a C caller) is a conflict: fad.grad
    # records again without in-place steps.
    cdef bint fresh
    cdef bint consumed

    def __init__(self, *args, **kwargs):
        raise TypeError("fastad.Array is created by fad.grad and friends, not directly")

    cdef inline int _touch(self) except -1:
        """Its slots are handed out: no longer fresh (and a conflict if consumed)."""
        if self.tape is None:
            raise TapeError("fastad: this Array was not made by fastad (fastad.Array is "
                            "created by fad.grad and friends, not directly)")
        if self.consumed:
            self.tape.conflict = True
            raise TapeError("fastad: this Array was written over by a later step of "
                            "fad.grad, which took it for a dead temporary (a tuple passed "
                            "as *args or C code held its only reference); fad.grad "
                            "then records f again without in-place steps")
        self.fresh = False
        return 0

    @property
    def idx(self):
        """The slot numbers, an intp ndarray of this array's shape."""
        self._touch()
        return self.ix

    @property
    def shape(self):
        return self.ix.shape

    @property
    def ndim(self):
        return self.nd

    @property
    def dtype(self):
        return _FLOAT64

    @property
    def size(self):
        return self.ix.size

    @property
    def value(self):
        """A copy of the numbers, as an ndarray of this shape.  Read while
        recording, it marks the tape (replays at other inputs then raise
        fad.ValueReadError: the numbers may steer f unrecorded)."""
        self._touch()
        _note_value_read(self.tid)
        return self._values()

    def _values(self):
        """The numbers, for fastad's own code (no mark)."""
        self._touch()
        if self.tape.buf.n == 0:
            return np.zeros(self.ix.shape)
        cdef double[::1] vals = <double[:self.tape.buf.n]>self.tape.buf.val
        return np.asarray(vals)[self.ix]

    def __len__(self):
        if self.nd == 0:
            raise TypeError("len() of a 0-d fastad.Array")
        return self.n0

    def __iter__(self):
        if self.nd == 0:
            raise TypeError("iteration over a 0-d fastad.Array")
        cdef Py_ssize_t i
        for i in range(self.n0):
            yield self[i]

    cdef int _note(self) except -1:
        """Scalar nodes may use these slots now: their blocks cannot hand
        cotangents over directly (once per Array)."""
        self.noted = True
        if self.cstart >= 0:
            self.tape.escape(self.cstart, self.cstart + self.ix.size - 1)
        elif self.ix.size:
            self.tape.escape(self.ix.min(), self.ix.max())
        return 0

    cdef Var _var_at(self, Py_ssize_t off):
        cdef Py_ssize_t slot = (<Py_ssize_t*>(self.data + off))[0]
        if not self.noted:
            self._note()
        return _new(self.tape.buf.val[slot], slot, self.tid)

    def __getitem__(self, key):
        cdef Py_ssize_t i, j
        self._touch()
        if type(key) is int:
            if self.nd == 1:
                i = _norm(PyLong_AsSsize_t(key), self.n0, 0)
                return self._var_at(i * self.s0)
        elif type(key) is tuple and self.nd == 2 and len(<tuple>key) == 2:
            k0 = (<tuple>key)[0]
            k1 = (<tuple>key)[1]
            if type(k0) is int and type(k1) is int:
                i = _norm(PyLong_AsSsize_t(k0), self.n0, 0)
                j = _norm(PyLong_AsSsize_t(k1), self.n1, 1)
                return self._var_at(i * self.s0 + j * self.s1)
        if _traced_index(key):
            raise TypeError("fastad: an array cannot be indexed by a Var or Array (an "
                            "index computed from traced values); indices must be plain "
                            "integers, slices, integer or boolean ndarrays (x[x > 0] "
                            "works: a comparison gives a boolean ndarray)")
        sub = self.ix[key]
        cdef Array view
        if isinstance(sub, np.ndarray) and (<cnp.ndarray>sub).ndim > 0:
            view = _make_array(self.tape, self.tid, sub)
            basic = _basic_index(key)
            view.unique = self.unique and basic
            # a C-contiguous view of a C-contiguous run of slots is a run too
            # (x[1:], x[:-1], rows): blocks then read it as one slice
            if basic and self.cstart >= 0 and (<cnp.ndarray>sub).size and \
                    cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>self.ix) and \
                    cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>sub):
                view.cstart = (<Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>sub))[0]
            return view
        i = int(sub)
        self.tape.escape(i, i)
        return _new(self.tape.buf.val[i], i, self.tid)

    def __setitem__(self, key, value):
        raise TypeError(
            "fastad.Array does not support item assignment: values on the tape "
            "are immutable. Build a new value instead, e.g. with fad.where or "
            "by collecting Vars in a list (fad.stack / fad.concatenate for arrays)")

    def __repr__(self):
        if self.tape is None:
            return "Array(<not made by fastad>)"
        return f"Array(shape={self.ix.shape}, value={self._values()!r})"

    def __copy__(self):
        return self          # immutable: a copy is the same slots

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError(_NO_PICKLE)

    # whole-array arithmetic: block nodes (fastad.arrays / fastad._blocks)
    def __add__(self, o): return _op("add", self, o)
    def __radd__(self, o): return _op("add", o, self)
    def __sub__(self, o): return _op("sub", self, o)
    def __rsub__(self, o): return _op("sub", o, self)
    def __mul__(self, o): return _op("mul", self, o)
    def __rmul__(self, o): return _op("mul", o, self)
    def __truediv__(self, o): return _op("div", self, o)
    def __rtruediv__(self, o): return _op("div", o, self)
    def __pow__(self, o, mod):
        return NotImplemented if mod is not None else _arr().power(self, o)

    def __rpow__(self, o, mod):
        return NotImplemented if mod is not None else _arr().power(o, self)
    def __mod__(self, o): return _op("remainder", self, o)
    def __rmod__(self, o): return _op("remainder", o, self)
    def __floordiv__(self, o): return _op("floor_divide", self, o)
    def __rfloordiv__(self, o): return _op("floor_divide", o, self)
    def __divmod__(self, o): return (_arr().elementwise("floor_divide", self, o),
                                     _arr().elementwise("remainder", self, o))
    def __rdivmod__(self, o): return (_arr().elementwise("floor_divide", o, self),
                                      _arr().elementwise("remainder", o, self))
    def __matmul__(self, o): return _arr().matmul(self, o)
    def __rmatmul__(self, o): return _arr().matmul(o, self)
    def __neg__(self): return _op("neg", self, None)
    def __pos__(self): return self
    def __abs__(self): return _arr().elementwise("abs", self)
    def __lt__(self, o): return _arr().compare("lt", self, o)
    def __le__(self, o): return _arr().compare("le", self, o)
    def __gt__(self, o): return _arr().compare("gt", self, o)
    def __ge__(self, o): return _arr().compare("ge", self, o)
    def __eq__(self, o): return _arr().compare("eq", self, o)
    def __ne__(self, o): return _arr().compare("ne", self, o)

    @property
    def T(self):
        return _arr().transpose(self)

    def transpose(self, *axes):
        return _arr().transpose(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else (axes or None))

    def reshape(self, *shape):
        return _arr().reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self):
        return _arr().reshape(self, -1)

    def flatten(self):
        return _arr().reshape(self, -1)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return _arr().sum(self, axis, dtype, out, keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return _arr().mean(self, axis, dtype, out, keepdims)

    def max(self, axis=None, keepdims=False):
        return _arr().amax(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _arr().amin(self, axis=axis, keepdims=keepdims)

    def copy(self):
        return self          # immutable: the same slots

    def astype(self, dtype, copy=True):
        if np.dtype(dtype) != np.float64:
            raise TypeError(f"fastad: an Array holds float64 values on the tape; "
                            f"astype({dtype!r}) would drop its derivatives")
        return self

    def dot(self, o):
        return _arr().dot(self, o)

    def __getattr__(self, name):
        # the other ndarray methods: those NumPy functions fastad.arrays
        # registered as methods (a.cumsum(axis=0) is np.cumsum(a, axis=0))
        fn = _arr().METHODS.get(name)
        if fn is None:
            raise AttributeError(f"'fastad.Array' object has no attribute {name!r}"
                                 + ("" if name.startswith("_") else
                                    " (an ndarray method fastad does not support)"))
        return functools.partial(fn, self)

    def __float__(self): raise TypeError(_NO_FLOAT)
    def __int__(self): raise TypeError(_NO_FLOAT)
    def __index__(self): raise TypeError(_NO_FLOAT)

    def __bool__(self):
        raise TypeError("fastad: the truth value of an Array is not defined")

    def __array__(self, dtype=None, copy=None):
        # np.array(a), np.asarray(a), np.r_[a, ...] (NumPy does not dispatch
        # these): an object ndarray of the elements as Vars, which fastad
        # turns back into one Array when it reaches an operation
        if (dtype is None or np.dtype(dtype) == object) and copy is not False:
            self._touch()
            out = np.empty(self.ix.shape, dtype=object)
            flat = out.reshape(-1)
            slots = self.ix.reshape(-1)
            if not self.noted:
                self._note()
            for i in range(flat.shape[0]):
                flat[i] = _new(self.tape.buf.val[slots[i]], slots[i], self.tid)
            return out
        raise TypeError(
            "fastad: converting a fastad.Array to an ndarray"
            + (f" of dtype {np.dtype(dtype)}" if dtype is not None else " without a copy")
            + " would drop its derivatives; use a.value for the numbers")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        cdef Py_ssize_t n = len(inputs)
        dead = 0
        if 1 <= n <= 2 and not kwargs:
            dead = _dead(inputs[0], inputs[1] if n == 2 else None, n + 1)
            if _calibrating:
                return None
        return _arr().apply_ufunc(ufunc, method, inputs, kwargs, dead)

    def __array_function__(self, func, types, args, kwargs):
        return _arr().apply_function(func, args, kwargs)


def make_input(Tape tape, object x, int argnum):
    """Put argument `argnum` on the tape; returns the Var or Array f receives."""
    cdef TapeBuf* t = &tape.buf
    cdef double c
    cdef Py_ssize_t first
    if type(x) is Var or type(x) is Array:
        raise NotImplementedError(
            "fastad: fad.record (and the sparse routines) make a tape of their own and "
            "take numbers, not the Vars/Arrays of a transform in progress; inside a "
            "transform use fad.grad, jvp, vjp, jacobian, hessian or hvp, which nest "
            "(record the outer function instead to replay the whole)")
    if not isinstance(x, (np.ndarray, list, tuple)) and _num(x, &c):
        first = tape_push(t, FAD_INPUT, -1, -1, 0.0, 0.0, c)
        tape.n_inputs += 1
        tape.inputs.append((argnum, None, first))
        return _new(c, first, t.id)
    if type(x) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_DOUBLE and \
            cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x):
        arr = x                                           # (the common case: as it is)
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"fastad: argument {argnum} must be a real number or an array of "
                f"real numbers (float64 is used), got {type(x).__name__} "
                f"of dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float64, order="C")   # add_inputs copies; 0-d kept 0-d
    first = tape.add_inputs(arr.reshape(-1))
    tape.note_input(first, arr.size)
    tape.inputs.append((argnum, arr.shape, first))
    cdef Array a = _make_array(tape, t.id, slot_range(first, arr.size).reshape(arr.shape))
    a.cstart = first
    a.unique = True
    return a


def output_slots(Tape tape, object out):
    """Slots of f's output as an intp ndarray of the output's shape.

    Accepts a Var, an Array, numbers/ndarrays (constants get CONST nodes) and
    (nested) lists/tuples of these with equal shapes."""
    cdef bint was = tape.recording
    tape.recording = True          # (constants in the output are its last nodes)
    try:
        return _output_slots(tape, out)
    finally:
        tape.recording = was


cdef object _output_slots(Tape tape, object out):
    cdef Var v
    cdef Array a
    if type(out) is Var:
        v = <Var>out
        if v.tid != tape.buf.id:
            raise TapeError("fastad: f returned a Var from another recording")
        return np.array(v.slot, dtype=np.intp)
    if type(out) is Array:
        a = <Array>out
        if a.tid != tape.buf.id:
            raise TapeError("fastad: f returned an Array from another recording")
        a._touch()
        return np.array(a.ix, dtype=np.intp)
    if isinstance(out, (list, tuple)):
        parts = [_output_slots(tape, o) for o in out]
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"fastad: f returned a {type(out).__name__} whose "
                             f"items have different shapes {sorted(shapes)}")
        return np.stack(parts) if parts else np.zeros(0, dtype=np.intp)
    if type(out) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>out) == cnp.NPY_OBJECT:
        # np.array([x[0], x[1]]): the slots of its elements (numbers: constants)
        parts = [_output_slots(tape, o) for o in out.reshape(-1)]
        if any(p.ndim for p in parts):
            raise ValueError("fastad: f returned an object array whose elements are "
                             "arrays; stack them (fad.stack) or return a list")
        return np.array(parts, dtype=np.intp).reshape(out.shape)
    if isinstance(out, (np.ndarray, numbers.Number)) and np.asarray(out).dtype.kind in "biuf":
        vals = np.asarray(out, dtype=np.float64)
        return np.array([tape.push_const(c) for c in vals.reshape(-1)],
                        dtype=np.intp).reshape(vals.shape)
    raise TypeError(f"fastad: f must return a Var, an Array, numbers or a "
                    f"list/tuple of them, but it returned {type(out).__name__}")


def stack(seq, axis=0):
    """Stack Vars, Arrays and numbers of equal shape along a new axis (no tape node)."""
    cdef Py_ssize_t i, m
    cdef Var v
    cdef int64_t tid = -1
    cdef double c
    if (axis == 0 or axis == -1) and type(seq) in (list, tuple) and len(seq):
        # the common case, a list of scalars collected in a loop: slots in one pass
        m = len(seq)
        for i in range(m):
            item = seq[i]
            if type(item) is Var:
                if tid == -1:
                    tid = (<Var>item).tid
                elif (<Var>item).tid != tid:
                    tid = -2
                    break
            elif not (type(item) is float or type(item) is int):
                tid = -2
                break
        if tid >= 0:
            tape = _tape_object(_current(tid))
            slots = np.empty(m, dtype=np.intp)
            for i in range(m):
                item = seq[i]
                if type(item) is Var:
                    slots[i] = (<Var>item).slot
                else:
                    c = item
                    slots[i] = tape.push_const(c)
            return make_array(tape, slots)
    return _arr().stack(seq, axis=axis)


# ---------------------------------------------------------------- functions
# fad.<function> for every op-table entry that names one (csrc/fastad_ops.h):
# generated here from the table, so a new op needs no code in this file.

cdef object _table(int op, object x, object y=None):
    """Op-table values on plain numbers/ndarrays (no tape), x and y broadcast."""
    cdef double d0, d1
    cdef cnp.ndarray xa, ya, out
    if y is None and type(x) is float:
        return fad_eval(op, PyFloat_AS_DOUBLE(x), 0.0, 0.0, &d0, &d1)
    xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float64),
                                 np.asarray(0.0 if y is None else y, dtype=np.float64))
    xa = np.array(xb, order="C")          # (ascontiguousarray would make 0-d 1-d)
    ya = np.array(yb, order="C")
    out = np.empty_like(xa)
    fad_map(op, FAD_MAP_VALUES, out.size, <double*>cnp.PyArray_DATA(xa), 1,
            <double*>cnp.PyArray_DATA(ya), 1, 0.0, NULL, 0, <double*>cnp.PyArray_DATA(out),
            NULL, NULL)
    return float(out) if out.ndim == 0 else out


cdef object _unary(int op, object x, object npfunc):
    cdef double d0, d1
    if type(x) is Var:
        return _un(op, <Var>x, 0.0)
    if type(x) is float:   # plain floats: the op table, as fast as math.sin
        return fad_eval(op, PyFloat_AS_DOUBLE(x), 0.0, 0.0, &d0, &d1)
    if type(x) is Array or _traced_container(x):
        return _arr().elementwise(OP_NAMES[op], x)
    if npfunc is None:
        return _table(op, x)
    return npfunc(np.asarray(x, dtype=np.float64))   # ints give floats, as on Vars


cdef bint _traced_container(object x):
    """An object ndarray (np.array([x[0], x[1]])) or a list/tuple: fastad.arrays
    stacks it into one Array if it holds Vars."""
    if type(x) is np.ndarray:
        return cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_OBJECT
    return type(x) is list or type(x) is tuple


cdef object _binary_fn(object a, object b, int vv, int xc, int cx, object npfunc):
    if type(a) is Array or type(b) is Array or _traced_container(a) or _traced_container(b):
        return _arr().elementwise(OP_NAMES[vv], a, b)
    if type(a) is Var or type(b) is Var:
        r = _binary(a, b, vv, xc, cx)
        if r is NotImplemented:   # a Var with an ndarray or a list: elementwise
            return _arr().elementwise(OP_NAMES[vv], a, b)
        return r
    if npfunc is None:
        return _table(vv, a, b)
    return npfunc(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _unary_function(int op, str name, object npfunc):
    def f(x):
        return _unary(op, x, npfunc)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = (f"{name}(x): the op table's {OP_NAMES[op]!r} on a Var or Array "
                 f"(recorded), or on numbers and ndarrays (plain NumPy values).")
    return f


def _binary_function(int vv, int xc, int cx, str name, object npfunc):
    def f(a, b):
        return _binary_fn(a, b, vv, xc, cx, npfunc)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = (f"{name}(a, b): the op table's {OP_NAMES[vv]!r}, elementwise with NumPy "
                 f"broadcasting; recorded when a or b is a Var or Array.")
    return f


def _make_functions():
    """fad.<function> per op-table entry, and the NumPy ufuncs that record them."""
    code = {name: i for i, name in enumerate(OP_NAMES)}
    functions, by_op, ufunc_ops = {}, {}, {}
    cdef int op, fl
    for op in range(FAD_NUM_OPS):
        fname = fad_op_function[op].decode()
        if not fname:
            continue
        uname = fad_op_ufunc[op].decode()
        npfunc = getattr(np, uname) if uname else None
        name, fl = OP_NAMES[op], fad_op_flags[op]
        if fl & FAD_BINARY:
            xc = code[name + "_c"]
            fn = _binary_function(op, xc, xc if fl & FAD_COMM else code["c_" + name],
                                  fname, npfunc)
        else:
            fn = _unary_function(op, fname, npfunc)
        functions[fname] = by_op[name] = fn
        if npfunc is not None:
            ufunc_ops[npfunc] = name
    return functions, by_op, ufunc_ops


# FUNCTIONS: public name -> function; OP_FUNCTIONS: op name -> function;
# UFUNC_OPS: NumPy ufunc -> op name (also for Arrays, in fastad.arrays)
FUNCTIONS, OP_FUNCTIONS, UFUNC_OPS = _make_functions()
UFUNC_OPS[np.fabs] = "abs"


def where(cond, a, b):
    """a where cond else b.  With a scalar condition (such as x > 0, which is
    recorded) only the selected side is on the path to the output, so the
    other contributes an exact zero even where its derivative is inf/NaN."""
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    if type(cond) is Var or type(cond) is Array:
        raise TypeError(
            "fastad.where needs a boolean condition, such as x > 0, not a "
            f"{type(cond).__name__}")
    if isinstance(cond, np.ndarray) and cond.ndim == 0:
        return a if cond else b
    return _arr().where(cond, a, b)


def _compare_fn(int kind):
    def cmp(a, b):
        if type(a) is Var:
            r = _compare(<Var>a, b, kind)
        elif type(b) is Var:
            # a < b  is  b > a
            r = _compare(<Var>b, a, (CMP_GT, CMP_GE, CMP_LT, CMP_LE, CMP_EQ, CMP_NE)[kind])
        else:
            r = NotImplemented
        if r is NotImplemented:
            raise TypeError("fastad: unsupported comparison operands")
        return r
    return cmp


# NumPy ufuncs on scalar Vars: the table's, plus aliases and comparisons
_UFUNCS = {npf: OP_FUNCTIONS[name] for npf, name in UFUNC_OPS.items()}
_UFUNCS.update({
    np.float_power: FUNCTIONS["power"], np.positive: lambda x: x,
    np.less: _compare_fn(CMP_LT), np.less_equal: _compare_fn(CMP_LE),
    np.greater: _compare_fn(CMP_GT), np.greater_equal: _compare_fn(CMP_GE),
    np.equal: _compare_fn(CMP_EQ), np.not_equal: _compare_fn(CMP_NE),
})

# Var.<ufunc name>(...): what NumPy's object loops call (see Var.__getattr__)
_OBJECT_METHODS = {npf.__name__: fn for npf, fn in _UFUNCS.items()
                   if isinstance(npf, np.ufunc) and npf.nin <= 2}
_OBJECT_METHODS.update(conjugate=lambda x: x, conj=lambda x: x)

globals().update(FUNCTIONS)
__all__ = ["Var", "Array", "where", "stack"] + list(FUNCTIONS)


cdef object _dispatch_ufunc(object ufunc, str method, tuple inputs, dict kwargs):
    fn = _UFUNCS.get(ufunc)
    if fn is None and method == "__call__" and not kwargs:
        return _arr().apply_ufunc(ufunc, method, inputs, kwargs)
    if method != "__call__" or kwargs or fn is None:
        raise TypeError(
            f"fastad: NumPy's {ufunc.__name__}"
            f"{'' if method == '__call__' else '.' + method}"
            f"{' with keyword arguments' if kwargs else ''} is not supported "
            f"on fastad Vars/Arrays; use the fastad functions (fad.sin, ...)")
    args = []
    for x in inputs:
        if type(x) is Array or (isinstance(x, np.ndarray) and (<cnp.ndarray>x).ndim != 0):
            return _arr().apply_ufunc(ufunc, method, inputs, kwargs)
        if isinstance(x, np.ndarray):
            x = x[()]
        args.append(x)
    return fn(*args)


_calibrate()


cdef int _check_layout() except -1:
    """fastad_var_new writes Var's fields by the layout it declares: check it."""
    cdef Var probe = Var.__new__(Var)
    return fastad_var_check(probe, &probe.value, &probe.slot, &probe.tid)


_check_layout()
fastad_var_init_type(Var, <void*>_nb_add, <void*>_nb_sub, <void*>_nb_mul, <void*>_nb_div,
                     <void*>_nb_neg, <void*>_nb_pow)
fastad_array_init_type(Array, <void*>_array_getitem)
