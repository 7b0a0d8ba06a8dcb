# The tape's storage and its recording (fastad/_recorder.pyx): the Recorder is
# the base of the Player (replays and sweeps) and of the public Tape.
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport realloc

from fastad._ops cimport *   # fad_node, fad_eval, fad_second, fad_map, FAD_*

# Slots are int32 in the node arrays: a tape holds at most 2**31 - 1 nodes.
cdef enum:
    FAD_MAX_NODES = 2147483647

cdef struct TapeBuf:
    int64_t id          # recording id: Vars carry it, so stale or foreign Vars are caught
    Py_ssize_t n        # nodes (= slots) in use
    Py_ssize_t cap
    uint8_t* op
    fad_node* node
    double* val


cdef object view_of(double* p, Py_ssize_t n, object owner)


cdef class Recorder:
    cdef TapeBuf buf
    cdef readonly list inputs      # per differentiated argument: (argnum, shape, first slot)
    cdef readonly Py_ssize_t n_inputs
    cdef public object in_shape    # shape of the recorded x (None: a float)
    cdef object _out               # intp ndarray of output slots, shaped like the output
    cdef bint recording            # being recorded: only then may the tape grow
    cdef public object f           # the recorded function (for retracing); not pickled
    cdef public list blocks        # block nodes (fastad._blocks.Block) in slot order
    cdef public object sparse_cache   # fastad.sparse: patterns and colorings (not pickled)
    cdef public object value_read  # where f read a concrete value (.value) while recording,
                                   # or None: then the tape replays only at the recorded x
    cdef dict _by_start            # while recording: start -> sealable block
    cdef list _sstarts, _sblocks   # while recording: sealable blocks and their starts
    cdef list _slabs               # the array inputs as sealable producers (InputSlab)
    cdef public bint single_sweep  # recorded for one reverse sweep, then dropped (fad.grad):
                                   # blocks may write over a dead temporary's slots
    cdef public bint conflict      # an overwritten temporary was used again: record anew
    cdef int _recording_only(self) except -1
    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int _note_block(self, object block) except -1
    cdef int _sealable(self, object p) except -1
    cdef int escape(self, Py_ssize_t lo, Py_ssize_t hi) except -1
    cdef object _cotangents(self, double* ap, Py_ssize_t rows, Py_ssize_t k,
                            Py_ssize_t seed_lo, bint zero, list slabs=*)
    cdef Py_ssize_t _out_hi(self)
    cdef Py_ssize_t _top(self, Py_ssize_t hi)


cdef inline int tape_grow(TapeBuf* t, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = t.cap * 2 if t.cap else 256
    while cap < need:
        cap *= 2
    if cap > FAD_MAX_NODES:
        cap = FAD_MAX_NODES
        if cap < need:
            raise MemoryError("fastad: a tape holds at most 2**31 - 1 operations")
    cdef uint8_t* op = <uint8_t*>realloc(t.op, cap * sizeof(uint8_t))
    if op == NULL:
        raise MemoryError()
    t.op = op
    cdef fad_node* node = <fad_node*>realloc(t.node, cap * sizeof(fad_node))
    if node == NULL:
        raise MemoryError()
    t.node = node
    cdef double* val = <double*>realloc(t.val, cap * sizeof(double))
    if val == NULL:
        raise MemoryError()
    t.val = val
    t.cap = cap
    return 0


cdef inline Py_ssize_t tape_push(TapeBuf* t, int op, int32_t a0, int32_t a1,
                                 double p0, double p1, double v) except -1:
    cdef Py_ssize_t i = t.n
    if i == t.cap:
        tape_grow(t, i + 1)
    t.op[i] = <uint8_t>op
    cdef fad_node* nd = &t.node[i]
    nd.p0 = p0
    nd.p1 = p1
    nd.a0 = a0
    nd.a1 = a1
    t.val[i] = v
    t.n = i + 1
    return i
