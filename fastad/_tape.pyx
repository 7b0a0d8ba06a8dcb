# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The tape: contiguous typed storage of the Wengert list and its sweeps.

Node i writes slot i.  Inputs come first (op INPUT), then one node per
elementary operation, in recording order.  Per node: an op code (1 byte),
a fad_node {p0, p1, a0, a1} (24 bytes) and a value (8 bytes).
"""
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import bisect
import math

import numpy as np
cimport numpy as cnp

from fastad.errors import BranchChangedError, TapeError
from fastad._sweeps cimport (FORWARD, REVERSE, SECOND, Sweep, needed_mask, run, run_released,
                             second_partials, sweep_over)
from fastad._kernels import gather_flat
# the op table as Python data, and its maps: defined in fastad._kernels
from fastad._kernels import FIRST_CMP, OP_FLAGS, OP_NAMES, op_eval, op_map, op_map2, op_second

from cpython.ref cimport Py_INCREF
cnp.import_array()

# Tangent/adjoint lanes per multi-direction sweep when computing Jacobians.
cdef Py_ssize_t MAX_CHUNK = 128
cdef Py_ssize_t CHUNK_DOUBLES = 8 * 1024 * 1024


# ---------------------------------------------------------------- work buffers

cdef class Work:
    """Per-call buffers of a replay, so threads can replay one tape at once."""

    def __dealloc__(self):
        free(self.val)
        free(self.node)
        free(self.adj)

    cdef object zeros(self, Py_ssize_t rows, Py_ssize_t k, int which=0):
        """A zeroed (rows, k) array in reusable scratch memory number `which` (0-2)."""
        out = self.scratch_array(rows, k, which)
        out.fill(0.0)
        return out

    cdef object scratch_array(self, Py_ssize_t rows, Py_ssize_t k, int which=0):
        """The same, not zeroed."""
        cdef Py_ssize_t m = rows * k
        if self.scratch is None:
            self.scratch = [None, None, None]
        buf = self.scratch[which]
        if buf is None or buf.shape[0] < m:
            buf = self.scratch[which] = np.empty(max(m, 1024))
        return buf[:m].reshape(rows, k)

    cdef int ensure(self, Py_ssize_t n) except -1:
        if n <= self.cap:
            return 0
        free(self.val)
        free(self.node)
        free(self.adj)
        self.val = <double*>malloc(n * sizeof(double))
        self.node = <fad_node*>malloc(n * sizeof(fad_node))
        self.adj = <double*>calloc(n, sizeof(double))   # kept all zeros at rest
        if self.val == NULL or self.node == NULL or self.adj == NULL:
            self.cap = 0
            raise MemoryError()
        self.cap = n
        return 0


class InputSlab:
    """An array argument's input slots as a producer of cotangents, like a
    sealed block (see Cotangents and Tape.note_input)."""
    __slots__ = ("start", "stop", "sealed")
    overwritten = False             # (inputs never are)

    def __init__(self, start, stop):
        self.start, self.stop, self.sealed = start, stop, True

    def __getstate__(self):         # (every pickle protocol: it has __slots__)
        return (self.start, self.stop, self.sealed)

    def __setstate__(self, state):
        self.start, self.stop, self.sealed = state


cdef class Cotangents:
    """A reverse sweep's hand-off of cotangent arrays between blocks.

    A block whose outputs only ever feed later blocks whole (sealed while
    recording; see Tape._note_block) gets its cotangent from those blocks as
    an array, not through the slot-indexed adjoint buffer: no zero fill, no
    scatter-add, no read-back, the rows of the buffer are never touched.
    That is how hand-written backprop passes arrays between layers."""
    cdef readonly set sealed       # the sealed blocks of this sweep
    cdef dict pending              # sealed block -> its cotangent so far
    cdef set owned                 # blocks whose pending cotangent nothing else holds

    def __cinit__(self, set sealed):
        self.sealed = sealed
        self.pending = {}
        self.owned = set()

    def take(self, blk, adj):
        """blk's cotangent as (size, k) rows, or None when it is zero."""
        return self.take_owned(blk, adj)[0]

    def take_owned(self, blk, adj):
        """(take(blk, adj), whether the taker may write over it: an array
        that nothing else holds, as a fresh temporary)."""
        if blk in self.sealed:
            owned = blk in self.owned
            self.owned.discard(blk)
            return self.pending.pop(blk, None), owned
        return adj[blk.start:blk.stop], False

    def give(self, blk, g, bint owned=False):
        """Add g (any shape of blk's size, with a trailing lane axis) to
        sealed blk's cotangent; False if blk is not sealed (use the buffer).
        `owned`: nothing else holds g (the giver made it for blk alone)."""
        if blk not in self.sealed:
            return False
        prev = self.pending.get(blk)
        if prev is None:
            self.pending[blk] = g
            if owned:
                self.owned.add(blk)
        else:       # out of place: g or prev may be a view of something live
            k = g.shape[g.ndim - 1]
            self.pending[blk] = prev.reshape(-1, k) + g.reshape(-1, k)
            self.owned.add(blk)
        return True


cdef int _seed_rows(object tan, object seeds, Py_ssize_t lo) except -1:
    """tan[:lo] = seeds.T for (k, lo) seeds: a block copy when seeds is the
    transpose of a C-ordered (lo, k) array (how sparse plans keep them)."""
    st = seeds.T
    if type(st) is np.ndarray and st.dtype == np.float64 and st.flags.c_contiguous:
        tan[:lo] = st
    else:
        tan[:lo] = np.ascontiguousarray(seeds, dtype=np.float64).T
    return 0


cdef object _iota = np.arange(1 << 16, dtype=np.intp)
_iota.flags.writeable = False


def slot_range(Py_ssize_t first, Py_ssize_t m):
    """Slot numbers first .. first+m-1 as a read-only view of one shared
    arange, so naming a block's outputs costs nothing per element."""
    global _iota
    if first + m > _iota.shape[0]:
        _iota = np.arange(max(2 * _iota.shape[0], first + m), dtype=np.intp)
        _iota.flags.writeable = False
    return _iota[first:first + m]


cdef list _work_pool = []     # free Work buffers (list.pop/append are atomic under the GIL)


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


cdef object _view(double* p, Py_ssize_t n, object owner):
    """A NumPy view of n doubles at p, which `owner` (its base: the view
    keeps it alive, and _detach sees a view) owns."""
    if n == 0:
        return np.zeros(0)
    cdef cnp.npy_intp dims = n
    cdef cnp.ndarray a = cnp.PyArray_SimpleNewFromData(1, &dims, cnp.NPY_DOUBLE, p)  # (a memoryview: 4x)
    Py_INCREF(owner)
    cnp.PyArray_SetBaseObject(a, owner)
    return a


def _rebuild(bytes op, bytes node, bytes val, Py_ssize_t n_inputs, list inputs,
             in_shape, out_slots, list blocks=None):
    """Unpickle a Tape."""
    cdef Tape t = Tape()
    cdef Py_ssize_t n = len(op)
    if len(node) != n * sizeof(fad_node) or len(val) != n * sizeof(double):
        raise ValueError("fastad: corrupt pickled Tape (sizes disagree)")
    t.reserve(n)
    if n:
        memcpy(t.buf.op, <const char*>op, n)
        memcpy(t.buf.node, <const char*>node, n * sizeof(fad_node))
        memcpy(t.buf.val, <const char*>val, n * sizeof(double))
    t.buf.n = n
    t.n_inputs = n_inputs
    t.inputs = inputs
    t.in_shape = in_shape
    t._out = out_slots
    t.blocks = blocks or []
    return t


# One spare set of tape buffers, kept when a tape dies and handed to the next
# one: a loop of recordings (grad in an optimizer) then reuses memory that is
# already mapped, instead of faulting in fresh pages every call, which costs
# a TLB shootdown per page once NumPy's BLAS threads exist.  Both functions
# run under the GIL (from __cinit__/__dealloc__), so no lock is needed.
cdef TapeBuf _spare
memset(&_spare, 0, sizeof(TapeBuf))
cdef Py_ssize_t SPARE_MAX_SLOTS = 8 * 1024 * 1024   # keep at most ~264 MB


cdef void _take_spare(TapeBuf* t) noexcept:
    if _spare.cap:
        t.op, t.node, t.val, t.cap = _spare.op, _spare.node, _spare.val, _spare.cap
        memset(&_spare, 0, sizeof(TapeBuf))


cdef void _give_spare(TapeBuf* t) noexcept:
    if t.cap > _spare.cap and t.cap <= SPARE_MAX_SLOTS:
        free(_spare.op)
        free(_spare.node)
        free(_spare.val)
        _spare.op, _spare.node, _spare.val, _spare.cap = t.op, t.node, t.val, t.cap
    else:
        free(t.op)
        free(t.node)
        free(t.val)
    memset(t, 0, sizeof(TapeBuf))


def release_memory():
    """Free the spare tape buffers fastad keeps for the next recording."""
    free(_spare.op)
    free(_spare.node)
    free(_spare.val)
    memset(&_spare, 0, sizeof(TapeBuf))


cdef class Tape:
    """A recorded Wengert list, replayable at new inputs.

    `fad.record(f, x)` returns one.  Replays recompute values and partials
    from the op table in compiled code (no Python per scalar op; one NumPy
    call per array block); a replay whose recorded comparisons come out
    differently raises BranchChangedError.  `len(tape)` is the number of
    operations (inputs excluded; an array operation counts its elements)."""

    def __cinit__(self):
        memset(&self.buf, 0, sizeof(TapeBuf))
        _take_spare(&self.buf)
        self.inputs = []
        self.n_inputs = 0
        self.in_shape = None
        self._out = None
        self.f = None
        self.blocks = []
        self._by_start = {}
        self._sstarts = []
        self._sblocks = []
        self._slabs = []

    def __dealloc__(self):
        _give_spare(&self.buf)

    cdef int _recording_only(self) except -1:
        """Only a recording in progress grows the tape: views of a recorded
        tape's memory (recorded_values, a block's output) then stay valid."""
        if not self.recording:
            raise TapeError(
                "fastad: this Tape is not being recorded, so nothing can be added to it; "
                "tapes are made by fad.record(f, x) and are read-only afterwards")
        return 0

    cdef int reserve(self, Py_ssize_t extra) except -1:
        if self.buf.n + extra > self.buf.cap:
            tape_grow(&self.buf, self.buf.n + extra)
        return 0

    def add_inputs(self, const double[::1] values not None):
        """Append one INPUT node per value; returns the first slot."""
        self._recording_only()
        cdef Py_ssize_t m = values.shape[0], first = self.buf.n
        self.reserve(m)
        if m:
            memset(self.buf.op + first, FAD_INPUT, m)     # no sweep reads an input's node
            memcpy(self.buf.val + first, &values[0], m * sizeof(double))
        self.buf.n = first + m
        self.n_inputs += m
        return first

    def note_input(self, Py_ssize_t first, Py_ssize_t m):
        """Slots first .. first+m-1 hold one array argument: while no scalar
        node or view reads them (see escape), the gradient's sweep hands the
        blocks' cotangent arrays for it over directly (input_gradients)."""
        self._recording_only()
        cdef Py_ssize_t n = len(self._sstarts)          # (no wraparound here: no [-1])
        if m >= 2 and not self.blocks and (n == 0 or first > self._sstarts[n - 1]):
            slab = InputSlab(first, first + m)
            self._sealable(slab)
            self._slabs.append(slab)

    @property
    def sealed_inputs(self):
        """(first, stop) slots of the array arguments whose cotangents the
        gradient's sweep takes straight from the blocks (see note_input)."""
        return [(s.start, s.stop) for s in self._slabs if s.sealed]

    def push_const(self, double c):
        """Append a constant node (for constant outputs); returns its slot."""
        self._recording_only()
        cdef Py_ssize_t i = self.buf.n
        return tape_push(&self.buf, FAD_CONST, <int32_t>i, -1, 0.0, c, c)

    def push_consts(self, values):
        """Constant nodes for every value; returns their slots, shaped like values."""
        self._recording_only()
        vals = np.asarray(values, dtype=np.float64)
        cdef const double[::1] flat = np.ascontiguousarray(vals.reshape(-1))
        cdef Py_ssize_t k, i, m = flat.shape[0]
        self.reserve(m)
        first = self.buf.n
        for k in range(m):
            i = self.buf.n
            tape_push(&self.buf, FAD_CONST, <int32_t>i, -1, 0.0, flat[k], flat[k])
        return slot_range(first, m).reshape(vals.shape)

    def push_block(self, block, values):
        """Append a block node whose outputs are `values` (any shape).

        Its slots get op BLOCK; the scalar sweeps skip them and call the
        block's forward/reverse/tangent instead.  Returns the output slots."""
        self._recording_only()
        vals = np.asarray(values, dtype=np.float64)
        cdef const double[::1] flat = np.ascontiguousarray(vals.reshape(-1))
        cdef Py_ssize_t m = flat.shape[0]
        self.reserve(m)
        cdef Py_ssize_t first = self.buf.n
        # Only op and value are written: no sweep reads a block slot's node
        # (the block is found by its start, see _block_at).
        if m:
            memset(self.buf.op + first, FAD_BLOCK, m)
            memcpy(self.buf.val + first, &flat[0], m * sizeof(double))
        self.buf.n = first + m
        block.start = first
        block.stop = first + m
        self._note_block(block)
        self.blocks.append(block)
        return slot_range(first, m).reshape(vals.shape)

    def open_block(self, Py_ssize_t m):
        """Room for a block's m outputs: a view of the next m value slots.

        Nothing is recorded until close_block (so a failing block leaves
        the tape as it was)."""
        self._recording_only()
        self.reserve(m)
        if m == 0:
            return np.zeros(0)
        return _view(self.buf.val + self.buf.n, m, self)

    def close_block(self, block, Py_ssize_t m):
        """Record block over the m slots opened by open_block; returns their numbers."""
        self._recording_only()
        if self.buf.n + m > self.buf.cap:
            raise RuntimeError("fastad: close_block without open_block")
        cdef Py_ssize_t first = self.buf.n
        if m:
            memset(self.buf.op + first, FAD_BLOCK, m)
        self.buf.n = first + m
        block.start = first
        block.stop = first + m
        self._note_block(block)
        self.blocks.append(block)
        return slot_range(first, m)

    def overwritable(self, Py_ssize_t start, Py_ssize_t m):
        """The last block, if its m outputs start at `start`, nothing after it
        is recorded, it hands its cotangent over directly (sealed) and its
        sweeps do not read its own outputs: a block may then write over them
        (see overwrite_block).  None otherwise."""
        self._recording_only()
        cdef Py_ssize_t n = len(self.blocks)
        if not self.single_sweep or n == 0:
            return None
        blk = self.blocks[n - 1]
        if blk.start != start or blk.stop != start + m or blk.stop != self.buf.n \
                or not blk.sealed or self._by_start.get(start) is not blk \
                or blk.keeps_output():
            return None
        return blk

    def overwrite_block(self, block, prev):
        """Record block over the slots of prev (from overwritable), whose
        values it has written over; returns their numbers.  Only a tape
        recorded for a single reverse sweep does this: prev's values are gone,
        so it cannot be replayed, and prev takes its cotangent from block only."""
        self._recording_only()
        cdef Py_ssize_t n = len(self.blocks)
        if not self.single_sweep or n == 0 or self.blocks[n - 1] is not prev \
                or prev.stop != self.buf.n:     # (the rest was checked by overwritable)
            raise RuntimeError("fastad: overwrite_block needs the last block, overwritable")
        block.start = prev.start
        block.stop = prev.stop
        prev.overwritten = True
        self._note_block(block)
        self.blocks.append(block)
        return slot_range(block.start, block.stop - block.start)

    def push_scalar_block(self, block, double y):
        """Record a one-output block whose value y is computed; returns its slot."""
        self._recording_only()
        self.reserve(1)
        cdef Py_ssize_t first = self.buf.n
        self.buf.val[first] = y
        self.buf.op[first] = FAD_BLOCK
        self.buf.n = first + 1
        block.start = first
        block.stop = first + 1
        self._note_block(block)
        self.blocks.append(block)
        return first

    cdef int _note_block(self, object block) except -1:
        """Bookkeeping for the cotangent hand-off (see Cotangents): link each
        operand that is a whole earlier sealable block to it, and unseal the
        blocks behind any other use of their slots."""
        cdef bint handoff = getattr(block, "handoff", False)
        cdef Py_ssize_t size
        for o in block.operands():
            if o.idx is None:
                continue
            size = o.flat.shape[0]
            if size == 0:
                continue
            if o.start >= 0:
                p = self._by_start.get(o.start) if handoff else None
                if p is not None and p.stop - p.start == size:
                    o.src = p
                    continue
                self.escape(o.start, o.start + size - 1)
            else:
                self.escape(o.flat.min(), o.flat.max())
        if handoff and block.stop - block.start >= 2:
            block.sealed = True
            self._sealable(block)
        return 0

    cdef int _sealable(self, object p) except -1:
        """Register p (a block or an InputSlab, sealed) for the hand-off:
        whole reads link to it, other reads of its slots unseal it (escape)."""
        cdef Py_ssize_t n = len(self._sblocks)
        self._by_start[p.start] = p
        if n and self._sblocks[n - 1].start == p.start:   # written over the last one
            self._sblocks[n - 1] = p                      # (which no read can unseal now)
            return 0
        self._sstarts.append(p.start)
        self._sblocks.append(p)
        return 0

    cdef int escape(self, Py_ssize_t lo, Py_ssize_t hi) except -1:
        """Slots lo..hi are used other than as a whole block operand (by a
        scalar node, a view, a primitive): their blocks take cotangents from
        the adjoint buffer."""
        cdef list starts = self._sstarts
        if not starts or hi < <Py_ssize_t>starts[0]:
            return 0
        cdef Py_ssize_t i = bisect.bisect_right(starts, hi) - 1
        while i >= 0:
            blk = self._sblocks[i]
            if blk.stop <= lo:
                break
            blk.sealed = False
            i -= 1
        return 0

    cdef object _cotangents(self, double* ap, Py_ssize_t rows, Py_ssize_t k,
                            Py_ssize_t seed_lo, bint zero, list slabs=None):
        """The hand-off for a reverse sweep seeded at slots >= seed_lo; with
        `zero`, zeros the adjoint rows [0, rows) that the sweep may read,
        which excludes the sealed blocks' rows (nothing reads or writes them)
        and those of `slabs`, sealed InputSlabs taking part (below every block)."""
        sealed = set()
        cdef Py_ssize_t cur = 0, a, b
        for blk in (self.blocks if not slabs else slabs + self.blocks):
            if blk.sealed:
                if blk.overwritten:     # its rows belong to the block written over it,
                    sealed.add(blk)     # which may hold the seed
                    continue
                a, b = blk.start, blk.stop
                if b > seed_lo or b > rows:
                    break
                if zero and a > cur:
                    memset(ap + cur * k, 0, (a - cur) * k * sizeof(double))
                cur = b
                sealed.add(blk)
        if zero and rows > cur:
            memset(ap + cur * k, 0, (rows - cur) * k * sizeof(double))
        return Cotangents(sealed)

    def recorded_values(self):
        """A NumPy view of the recorded slot values; it keeps the tape alive
        (while f is being recorded it is invalid once the tape grows)."""
        return _view(self.buf.val, self.buf.n, self)

    @property
    def out_slots(self):
        """The output slots (an intp array shaped like f's output; a copy), or None."""
        return None if self._out is None else self._out.copy()

    def _set_outputs(self, slots):
        """Make `slots` (slot numbers of this tape) its outputs."""
        out = np.array(slots, dtype=np.intp)
        if out.size and (out.min() < 0 or out.max() >= self.buf.n):
            raise ValueError(f"fastad: output slots must lie in 0 .. {self.buf.n - 1}")
        self._out = out

    # ------------------------------------------------------------ facts

    def __len__(self):
        return self.buf.n - self.n_inputs

    @property
    def n_outputs(self):
        return 0 if self._out is None else self._out.size

    @property
    def out_shape(self):
        return None if self._out is None else self._out.shape

    @property
    def n_nodes(self):
        """Number of slots, inputs included."""
        return self.buf.n

    @property
    def nbytes(self):
        """Bytes of tape storage in use (op codes, nodes, values; not block state)."""
        return self.buf.n * (sizeof(uint8_t) + sizeof(fad_node) + sizeof(double))

    def values(self):
        """A copy of every slot's recorded value."""
        cdef cnp.ndarray out = np.empty(self.buf.n, dtype=np.float64)
        if self.buf.n:
            memcpy(_dptr(out), self.buf.val, self.buf.n * sizeof(double))
        return out

    def _block_at(self, Py_ssize_t i):
        """The block whose output slots hold slot i."""
        k = bisect.bisect_right([b.start for b in self.blocks], i) - 1
        while k >= 0 and self.blocks[k].stop <= i:   # skip zero-slot blocks at i
            k -= 1
        return self.blocks[k]

    def node(self, Py_ssize_t i):
        """(op name, a0, a1, p0, p1, value) of slot i, as recorded
        (a block's slots show a0 = the block's number, a1 = -1)."""
        if not 0 <= i < self.buf.n:
            raise IndexError(f"slot {i} is not on the tape ({self.buf.n} slots)")
        if self.buf.op[i] == FAD_BLOCK:
            return (OP_NAMES[FAD_BLOCK], self.blocks.index(self._block_at(i)), -1, 0.0, 0.0,
                    self.buf.val[i])
        if self.buf.op[i] == FAD_INPUT:
            return (OP_NAMES[FAD_INPUT], -1, -1, 0.0, 0.0, self.buf.val[i])
        cdef fad_node nd = self.buf.node[i]
        return (OP_NAMES[self.buf.op[i]], nd.a0, nd.a1, nd.p0, nd.p1,
                self.buf.val[i])

    # ------------------------------------------------------------ internals

    cdef Work _acquire(self):
        # Work buffers are shared by all tapes, so a fresh tape (one grad
        # call) sweeps in memory that is already mapped.
        cdef Work w = _work_pool.pop() if _work_pool else Work()
        w.ensure(self.buf.n if self.buf.n else 1)
        return w

    cdef void _release(self, Work w):
        w.states = None
        if len(_work_pool) < 4:
            _work_pool.append(w)

    cdef Py_ssize_t _out_hi(self):
        """One past the highest output slot (at least n_inputs)."""
        cdef Py_ssize_t hi = self.n_inputs
        if self._out is not None and self._out.size:
            hi = max(hi, int(self._out.max()) + 1)
        return self._top(hi)

    cdef Py_ssize_t _top(self, Py_ssize_t hi):
        """hi, moved up to the end of a block that straddles it."""
        for blk in self.blocks:
            if blk.start < hi < blk.stop:
                return blk.stop
        return hi

    def _flat_input(self, x):
        if self._out is None:
            raise ValueError("fastad: this Tape has no recorded output; make "
                             "tapes with fad.record(f, x)")
        if self.in_shape is None:
            if np.ndim(x) != 0:
                raise ValueError(f"fastad.Tape: x must be a scalar (the tape was "
                                 f"recorded at a float), got shape {np.shape(x)}")
            return np.array([x], dtype=np.float64).reshape(1)
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"fastad.Tape: x must be real numbers, got dtype {arr.dtype}")
        if arr.shape != self.in_shape:
            raise ValueError(f"fastad.Tape: x has shape {arr.shape} but the tape "
                             f"was recorded at shape {self.in_shape}")
        return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)

    cdef int _forward_seg(self, Work w, Py_ssize_t lo, Py_ssize_t hi) except -1:
        cdef Sweep s = sweep_over(self.buf.op, self.buf.node, 1, lo, hi)
        s.recorded = self.buf.val
        s.val = w.val
        s.out = w.node
        cdef Py_ssize_t r = run_released(FORWARD, &s)
        if r >= 0:
            raise BranchChangedError(self._branch_message(r))
        return 0

    cdef int _replay(self, Work w, object x) except -1:
        """Values and partials at x into w: scalar segments in C, blocks in NumPy."""
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t n = self.buf.n, lo = self.n_inputs, cur = lo
        if lo:
            memcpy(w.val, _dptr(flat), lo * sizeof(double))
        if not self.blocks:
            return self._forward_seg(w, lo, n)
        val = _view(w.val, n, w)
        w.states = []
        for blk in self.blocks:
            self._forward_seg(w, cur, blk.start)
            w.states.append(blk.forward(val))
            cur = blk.stop
        return self._forward_seg(w, cur, n)

    def _branch_message(self, Py_ssize_t r):
        was = self.buf.val[r] != 0.0
        return (f"fastad: the comparison recorded at slot {r} "
                f"({self._describe(r)}) was {was} when the tape was recorded "
                f"but is {not was} at the new input: the function takes "
                f"another branch there, so this tape does not describe it. "
                f"Record a new tape at this input with fad.record(f, x).")

    def _describe(self, Py_ssize_t i):
        name, a0, a1, p0, p1, v = self.node(i)
        op = self.buf.op[i]
        fl = OP_FLAGS[op]
        if op == FAD_INPUT:
            return "input"
        if op == FAD_CONST:
            return f"const({p1!r})"
        if op == FAD_BLOCK:
            blk = self._block_at(i)
            return f"{blk.describe()}[{i - blk.start}]"
        if fl & FAD_BINARY:
            return f"{name}(v{a0}, v{a1})"
        if fl & FAD_HAS_C:
            return f"{name}(v{a0}, {p1!r})"
        return f"{name}(v{a0})"

    cdef object _gather(self, const double* val):
        cdef const Py_ssize_t[::1] flat = np.ascontiguousarray(self._out.reshape(-1),
                                                              dtype=np.intp)
        cdef cnp.ndarray out = np.empty(flat.shape[0])
        cdef double* op = _dptr(out)
        cdef Py_ssize_t k
        for k in range(flat.shape[0]):
            op[k] = val[flat[k]]
        if self._out.ndim == 0:
            return float(out[0])
        return out.reshape(self._out.shape)

    cdef int _reverse_run(self, const fad_node* nodes, object val, list states,
                          object adj, Py_ssize_t k, Py_ssize_t hi, Py_ssize_t lo,
                          object cot=None) except -1:
        """Pull adjoints from slots hi..lo (inclusive) back; adj is (rows, k), slot-major.
        With cot (a Cotangents), sealed blocks hand their cotangents over directly."""
        cdef double* ap = _dptr(adj)
        cdef Py_ssize_t cur = hi, bi
        cdef bint big
        adj2 = adj.reshape(adj.shape[0], k)
        for bi in range(len(self.blocks) - 1, -1, -1):
            blk = self.blocks[bi]
            if blk.start > hi:      # (not cur: blocks written over one another share slots)
                continue
            if blk.stop < lo:
                break
            self._reverse_seg(nodes, ap, k, cur, blk.stop)
            if cot is not None and blk.handoff:
                blk.reverse(val, states[bi], adj2, k, cot)
            else:
                blk.reverse(val, states[bi], adj2, k)
            cur = blk.start - 1
        self._reverse_seg(nodes, ap, k, cur, lo)
        return 0

    cdef void _reverse_seg(self, const fad_node* nodes, double* ap, Py_ssize_t k,
                           Py_ssize_t hi, Py_ssize_t lo):
        cdef Sweep s = sweep_over(self.buf.op, nodes, k, lo, hi + 1)
        s.adj = ap
        run_released(REVERSE, &s)

    cdef int _tangent_run(self, const fad_node* nodes, object val, list states,
                          object tan, Py_ssize_t k, Py_ssize_t lo, Py_ssize_t hi) except -1:
        """Push tangents through slots lo..hi-1; tan is (rows, k), slot-major."""
        cdef double* tp = _dptr(tan)
        cdef Py_ssize_t cur = lo, bi
        for bi in range(len(self.blocks)):
            blk = self.blocks[bi]
            if blk.start >= hi:
                break
            if blk.start < lo:
                continue
            self._tangent_seg(nodes, tp, k, cur, blk.start)
            blk.tangent(val, states[bi], tan, k)
            cur = blk.stop
        self._tangent_seg(nodes, tp, k, cur, hi)
        return 0

    cdef void _tangent_seg(self, const fad_node* nodes, double* tp, Py_ssize_t k,
                           Py_ssize_t lo, Py_ssize_t hi):
        cdef Sweep s = sweep_over(self.buf.op, nodes, k, lo, hi)
        s.tan = tp
        run_released(FORWARD, &s)

    def _recorded_states(self):
        return [blk.state for blk in self.blocks]

    cdef object _tangents(self, const fad_node* nodes, object val, list states, object seeds,
                          object gather=None):
        """(k, n_inputs) directions -> (k, n_outputs) output tangents; with
        `gather`, the tangent buffer (slot-major, k lanes) at those flat
        positions instead (a sparse Jacobian's decompression, in one take)."""
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef Work w = self._acquire()
        try:
            tan = w.scratch_array(hi, k)        # every node and block writes its rows
            _seed_rows(tan, seeds, lo)
            self._tangent_run(nodes, val, states, tan, k, lo, hi)
            if gather is not None:
                return gather_flat(tan, gather)
            return tan[self._out.reshape(-1)].T
        finally:
            self._release(w)

    cdef object _adjoints(self, const fad_node* nodes, object val, list states, object seeds,
                          object gather=None):
        """(k, n_outputs) cotangents -> (k, n_inputs) input adjoints (with
        `gather`: the adjoint buffer at those flat positions, as _tangents)."""
        cdef cnp.ndarray sd = np.ascontiguousarray(seeds, dtype=np.float64)
        cdef Py_ssize_t k = sd.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef Work w = self._acquire()
        cdef cnp.ndarray adj = w.scratch_array(hi, k)
        cdef double* ap = _dptr(adj)
        cdef double* sp = _dptr(sd)
        cdef cnp.ndarray slots = np.ascontiguousarray(self._out.reshape(-1), dtype=np.intp)
        cdef Py_ssize_t* so = <Py_ssize_t*>cnp.PyArray_DATA(slots)
        cdef Py_ssize_t o, j, m = slots.shape[0]
        cot = self._cotangents(ap, hi, k, slots.min() if m else hi, True)
        try:
            for o in range(m):      # seeds[:, o] onto the output's slot (repeats add up)
                for j in range(k):
                    ap[so[o] * k + j] += sp[j * m + o]
            self._reverse_run(nodes, val, states, adj, k, hi - 1, lo, cot)
            if gather is not None:
                return gather_flat(adj, gather)
            return adj[:lo].T.copy()
        finally:
            self._release(w)

    def _stacked(self, v, shape, what):
        """v of `shape` or (k,) + shape -> ((k, size) array, stacked?)."""
        v = np.asarray(v, dtype=np.float64)
        shape = () if shape is None else tuple(shape)
        size = int(np.prod(shape, dtype=np.int64))
        if v.shape == shape:
            return v.reshape(1, size), False
        if v.ndim == len(shape) + 1 and v.shape[1:] == shape:
            return v.reshape(v.shape[0], size), True
        raise ValueError(f"fastad: {what} must have shape {shape} or (k,) + {shape} "
                         f"for k stacked {what}s, got {v.shape}")

    def _shape_in(self, g, stacked):
        """(k, n_inputs) -> x-shaped result(s)."""
        shape = () if self.in_shape is None else tuple(self.in_shape)
        if stacked:
            return g.reshape((g.shape[0],) + shape)
        g = g[0]
        return float(g[0]) if self.in_shape is None else g.reshape(shape)

    def _shape_out(self, t, stacked):
        shape = tuple(self._out.shape)
        if stacked:
            return t.reshape((t.shape[0],) + shape)
        t = t[0]
        return float(t[0]) if shape == () else t.reshape(shape)

    # Every public sweep works at x (replaying there) or, with x=None, at the
    # recorded point with the recorded partials (what fad.jvp/vjp use).

    def _jvp(self, x, v):
        seeds, stacked = self._stacked(v, self.in_shape, "tangent")
        if seeds.shape[0] == 0:
            return np.zeros((0,) + tuple(self._out.shape))
        return self._shape_out(self._sweep_at(x, seeds, True), stacked)

    def _vjp(self, x, ybar):
        seeds, stacked = self._stacked(ybar, self._out.shape, "cotangent")
        if seeds.shape[0] == 0:
            return np.zeros((0,) + (() if self.in_shape is None else tuple(self.in_shape)))
        return self._shape_in(self._sweep_at(x, seeds, False), stacked)

    cdef object _replay_tangents(self, Work w, x, seeds, gather, bint values=True):
        """A tape of scalar nodes replayed at x into w with k tangent lanes
        pushed along in the same pass; returns what _tangents returns.
        values=False: only the tangents are wanted, so nodes with constant
        partials compute no value unless another node reads it (w is then
        not a full replay)."""
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, n = self.buf.n, r
        cdef Sweep s = sweep_over(self.buf.op, self.buf.node, k, lo, n)
        s.recorded = self.buf.val
        s.val = w.val
        if values:
            s.out = w.node
        else:
            if self._needed is None:
                self._needed = np.empty(max(n, 1), dtype=np.uint8)
                needed_mask(self.buf.op, self.buf.node,
                            <uint8_t*>cnp.PyArray_DATA(self._needed), lo, n)
            s.mask = <const uint8_t*>cnp.PyArray_DATA(self._needed)
        cdef Work t = self._acquire()
        try:
            tan = t.scratch_array(max(n, lo), k)
            _seed_rows(tan, seeds, lo)
            if lo:
                memcpy(w.val, _dptr(flat), lo * sizeof(double))
            s.tan = _dptr(tan)
            r = run_released(FORWARD, &s)
            if r >= 0:
                raise BranchChangedError(self._branch_message(r))
            if gather is not None:
                return gather_flat(tan, gather)
            return tan[self._out.reshape(-1)].T
        finally:
            self._release(t)

    cdef object _sweep_at(self, x, seeds, bint forward):
        """Tangents (forward) or adjoints for k seeds, at x or at the recorded point."""
        cdef Work w
        if x is not None and forward and not self.blocks:
            w = self._acquire()
            try:
                return self._replay_tangents(w, x, seeds, None, False)
            finally:
                self._release(w)
        if x is None:
            val, states = self.recorded_values(), self._recorded_states()
            if forward:
                return self._tangents(self.buf.node, val, states, seeds)
            return self._adjoints(self.buf.node, val, states, seeds)
        w = self._acquire()
        try:
            self._replay(w, x)
            val = _view(w.val, self.buf.n, w)
            if forward:
                return self._tangents(w.node, val, w.states, seeds)
            return self._adjoints(w.node, val, w.states, seeds)
        finally:
            self._release(w)

    def _sparse_sweeps(self, x, fwd_seeds, fwd_gather, rev_seeds, rev_gather):
        """One replay at x, then a k-direction tangent sweep and/or a k-seed
        adjoint sweep (seeds (k, n_inputs) / (k, n_outputs), None to skip),
        each returning its buffer at the gather positions: the compressed
        sweeps of a sparse Jacobian with the decompression fused in."""
        cdef Work w = self._acquire()
        try:
            f = r = None
            if fwd_seeds is not None and not self.blocks:       # one pass over the tape
                f = self._replay_tangents(w, x, fwd_seeds, fwd_gather, rev_seeds is not None)
            else:
                self._replay(w, x)
            val = _view(w.val, self.buf.n, w)
            if fwd_seeds is not None and f is None:
                f = self._tangents(w.node, val, w.states, fwd_seeds, fwd_gather)
            if rev_seeds is not None:
                r = self._adjoints(w.node, val, w.states, rev_seeds, rev_gather)
            return f, r
        finally:
            self._release(w)

    def _constant_slots(self):
        """The constants' slots when every slot past the inputs is a block's
        or a constant's, else None."""
        cdef Py_ssize_t i
        cdef uint8_t o
        found = []
        for i in range(self.n_inputs, self.buf.n):
            o = self.buf.op[i]
            if o == FAD_CONST:
                found.append(i)
            elif o != FAD_BLOCK:
                return None
        return np.array(found, dtype=np.intp)

    def _replayed(self, x, const_slots, const_values, states, run_forward):
        """`with tape._replayed(...) as (val, states)`: a partial replay at x,
        for a fold of blocks (fastad._blocks.TangentFold): the inputs, the
        constants (const_values at const_slots) and the blocks numbered in
        run_forward replayed; the other blocks keep their `states` and their
        slots are not computed."""
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t lo = self.n_inputs
        cdef Replayed r = Replayed.__new__(Replayed)
        r.tape = self
        r.w = self._acquire()
        try:
            if lo:
                memcpy(r.w.val, _dptr(flat), lo * sizeof(double))
            val = _view(r.w.val, self.buf.n, r.w)
            val[const_slots] = const_values
            blocks = self.blocks
            states = list(states)
            for bi in run_forward:
                states[bi] = blocks[bi].forward(val)
            r.result = (val, states)
            return r
        except BaseException:
            r.__exit__(None, None, None)
            raise

    def _full_tangents(self, x, seeds):
        """Replay at x and sweep k seeds: the whole (rows, k) tangent buffer."""
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef Work w = self._acquire()
        try:
            self._replay(w, x)
            tan = np.empty((hi, k))
            _seed_rows(tan, seeds, lo)
            self._tangent_run(w.node, _view(w.val, self.buf.n, w), w.states, tan, k, lo, hi)
            return tan
        finally:
            self._release(w)

    cdef int _second_run(self, const fad_node* nodes, object val, list states, object tan,
                         object adj, object adt, Py_ssize_t k, Py_ssize_t hi,
                         Py_ssize_t lo) except -1:
        """reverse_second over slots hi..lo, blocks through their reverse2."""
        cdef Py_ssize_t cur = hi, bi
        cdef const double* vp = _dptr(val)
        for bi in range(len(self.blocks) - 1, -1, -1):
            blk = self.blocks[bi]
            if blk.start > cur:
                continue
            self._second_seg(nodes, vp, tan, adj, adt, k, cur, blk.stop)
            reverse2 = getattr(blk, "reverse2", None)
            if reverse2 is None:
                raise NotImplementedError(
                    f"fastad: second derivatives through {blk.describe()} are not "
                    f"available (no second-order rule for this block)")
            reverse2(val, states[bi], tan, adj, adt, k)
            cur = blk.start - 1
        self._second_seg(nodes, vp, tan, adj, adt, k, cur, lo)
        return 0

    cdef void _second_seg(self, const fad_node* nodes, const double* vp, object tan,
                          object adj, object adt, Py_ssize_t k, Py_ssize_t hi, Py_ssize_t lo):
        cdef Sweep s = sweep_over(self.buf.op, nodes, k, lo, hi + 1)
        s.val = <double*>vp
        s.tan = _dptr(tan)
        s.adj = _dptr(adj)
        s.adt = _dptr(adt)
        run_released(SECOND, &s)

    def at(self, x):
        """This tape replayed once at x: a TapePoint for many derivatives there
        (gradient, hvp) without replaying again (what optimizers want)."""
        return TapePoint(self, x)

    def _hvp(self, x, v, bint with_grad=False, Work point=None, gather=None):
        """H v (and the value and gradient) at x (None: the recorded point;
        `point`: a Work already replayed there)."""
        if self._out is None or self._out.ndim != 0:
            raise ValueError(
                f"fastad: Hessians need a scalar output, but this tape's output has "
                f"shape {self.out_shape}; use tape.jacobian of the gradient instead")
        seeds, stacked = self._stacked(v, self.in_shape, "direction")
        if seeds.shape[0] == 0:
            shape = () if self.in_shape is None else tuple(self.in_shape)
            return np.zeros((0,) + shape)
        cdef Work w = self._acquire()
        cdef const fad_node* nodes = self.buf.node
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, slot = int(self._out[()])
        cdef Py_ssize_t hi = self._top(max(slot + 1, lo))
        try:
            if point is not None:
                nodes = point.node
                val, states = _view(point.val, self.buf.n, point), point.states
            elif x is not None:
                self._replay(w, x)
                nodes = w.node
                val, states = _view(w.val, self.buf.n, w), w.states
            else:
                val, states = self.recorded_values(), self._recorded_states()
            tan = w.scratch_array(hi, k, 0)     # every node and block writes its rows
            tan[:lo] = seeds.T
            self._tangent_run(nodes, val, states, tan, k, lo, hi)
            adj = w.zeros(hi, 1, 1)
            adj[slot, 0] = 1.0
            adt = w.zeros(hi, k, 2)
            self._second_run(nodes, val, states, tan, adj, adt, k, hi - 1, lo)
            if gather is not None:          # H S at these flat positions (sparse Hessians)
                return gather_flat(adt, gather)
            Hv = self._shape_in(adt[:lo].T.copy(), stacked)
            if not with_grad:
                return Hv
            return float(val[slot]), self._shape_in(adj[:lo].T.copy(), False), Hv
        finally:
            self._release(w)

    def hvp(self, x, v):
        """H(x) v for a scalar output (forward-over-reverse, replayed at x);
        v of x's shape or (k,) + x.shape for k directions at once."""
        return self._hvp(x, v)

    def value_gradient_hvp(self, x, v):
        """(f(x), gradient, H(x) v) from one replay."""
        return self._hvp(x, v, True)

    def _hessian(self, x):
        cdef Py_ssize_t n = self.n_inputs, k0, k1
        chunk = max(1, min(MAX_CHUNK, CHUNK_DOUBLES // max(1, 2 * self.buf.n)))
        shape = () if self.in_shape is None else tuple(self.in_shape)
        H = np.empty((n, n))
        for k0 in range(0, n, chunk):
            k1 = min(n, k0 + chunk)
            seeds = np.zeros((k1 - k0, n))
            seeds[np.arange(k1 - k0), np.arange(k0, k1)] = 1.0
            H[k0:k1] = self._hvp(x, seeds.reshape((k1 - k0,) + shape)).reshape(k1 - k0, n)
        return H.reshape(shape + shape)

    def hessian(self, x):
        """The Hessian of a scalar output at x, shape x.shape + x.shape (replayed)."""
        return self._hessian(x)

    def _jacobian(self, x, mode):
        if mode == "auto" and not all(getattr(b, "has_tangent", True) for b in self.blocks):
            mode = "rev"    # a primitive without a jvp rule: forward mode is not available
        mode = choose_mode(mode, self.n_inputs, self.n_outputs)
        cdef Work w = None
        cdef const fad_node* nodes = self.buf.node
        cdef Py_ssize_t n_in = self.n_inputs, n_out = self.n_outputs, k0, k1, chunk
        try:
            if x is not None:
                w = self._acquire()
                self._replay(w, x)
                nodes = w.node
                val, states = _view(w.val, self.buf.n, w), w.states
            else:
                val, states = self.recorded_values(), self._recorded_states()
            J = np.empty((n_out, n_in))
            width = n_in if mode == "fwd" else n_out
            chunk = max(1, min(MAX_CHUNK, CHUNK_DOUBLES // max(1, self._out_hi())))
            for k0 in range(0, width, chunk):
                k1 = min(width, k0 + chunk)
                seeds = np.zeros((k1 - k0, width))
                seeds[np.arange(k1 - k0), np.arange(k0, k1)] = 1.0
                if mode == "fwd":
                    J[:, k0:k1] = self._tangents(nodes, val, states, seeds).T
                else:
                    J[k0:k1, :] = self._adjoints(nodes, val, states, seeds)
        finally:
            if w is not None:
                self._release(w)
        in_shape = () if self.in_shape is None else tuple(self.in_shape)
        return J.reshape(tuple(self._out.shape) + in_shape)

    # ------------------------------------------------------------ public replay

    def __call__(self, x):
        """f(x), replayed."""
        cdef Work w = self._acquire()
        try:
            self._replay(w, x)
            return self._gather(w.val)
        finally:
            self._release(w)

    def value_and_gradient(self, x):
        """(f(x), gradient) for a scalar output, replayed at x."""
        if self._out is None or self._out.ndim != 0:
            raise ValueError(
                f"fastad.Tape.gradient needs a scalar output, but this tape's "
                f"output has shape {self.out_shape}; use tape.jacobian or tape.vjp")
        cdef Py_ssize_t slot = int(self._out[()]), lo = self.n_inputs, top
        cdef Work w = self._acquire()
        cdef cnp.ndarray g = np.empty(lo)
        cdef Sweep s
        cdef double* gp = _dptr(g)
        try:
            self._replay(w, x)
            if not self.blocks:     # w.adj is all zeros at rest, and left so
                s = sweep_over(self.buf.op, w.node, 1, lo, slot + 1)
                s.adj = w.adj
                s.clear = True
                w.adj[slot] += 1.0
                run_released(REVERSE, &s)
                memcpy(gp, w.adj, lo * sizeof(double))
                memset(w.adj, 0, lo * sizeof(double))
            else:
                top = max(self._top(slot + 1), lo)
                cot = self._cotangents(w.adj, top, 1, slot, False)   # w.adj is zero at rest
                try:
                    w.adj[slot] = 1.0
                    self._reverse_run(w.node, _view(w.val, self.buf.n, w), w.states,
                                      _view(w.adj, top, w), 1, self._top(slot + 1) - 1, lo, cot)
                    if lo:
                        memcpy(gp, w.adj, lo * sizeof(double))
                finally:
                    self._cotangents(w.adj, top, 1, slot, True)    # back to all zeros
            value = w.val[slot]
        finally:
            self._release(w)
        return value, (float(g[0]) if self.in_shape is None else g.reshape(self.in_shape))

    def gradient(self, x):
        """The gradient of a scalar output, replayed at x."""
        return self.value_and_gradient(x)[1]

    def jvp(self, x, v):
        """J(x) v, with v of x's shape or (k,) + x.shape for k directions."""
        return self._jvp(x, v)

    def vjp(self, x, ybar):
        """ybar J(x), with ybar of the output's shape or (k,) + that shape."""
        return self._vjp(x, ybar)

    def jacobian(self, x, mode="auto"):
        """The Jacobian at x, shape out_shape + x.shape; mode 'fwd', 'rev' or 'auto'."""
        return self._jacobian(x, mode)

    def sparse_jacobian(self, x, mode="auto"):
        """The Jacobian at x as a scipy.sparse.csr_matrix (out.size, x.size), by
        coloring and compressed sweeps; the pattern and coloring are found on
        the first call and kept, so later calls only sweep and decompress.
        mode: 'auto', 'fwd', 'rev' or 'bidirectional' (see fastad.sparse)."""
        from fastad.sparse import tape_sparse_jacobian
        return tape_sparse_jacobian(self, x, mode)

    def sparse_hessian(self, x):
        """The Hessian at x as a scipy.sparse.csr_matrix, by star coloring and
        one forward-over-reverse sweep (pattern and coloring kept)."""
        from fastad.sparse import tape_sparse_hessian
        return tape_sparse_hessian(self, x)

    # ------------------------------------------------------------ seeing it

    def __str__(self):
        cdef Py_ssize_t i
        outs = {}
        if self._out is not None:
            for k, s in enumerate(self._out.reshape(-1).tolist()):
                outs.setdefault(s, []).append(k)
        lines = [f"fastad.Tape: {self._counts()}"]
        for i in range(self.buf.n):
            desc = f"  v{i} = {self._describe(i)}"
            note = f"# {self.buf.val[i]!r}"
            if self.buf.op[i] == FAD_INPUT:
                note += f"   <- input x{self._input_label(i)}"
            elif self.buf.op[i] >= FAD_FIRST_CMP:
                note = f"# {self.buf.val[i] != 0.0}   (comparison, checked on replay)"
            if i in outs:
                note += "   -> output" + ("" if self._out.ndim == 0
                                         else " " + ", ".join(f"y[{k}]" for k in outs[i]))
            lines.append(desc.ljust(34) + note)
        return "\n".join(lines)

    def _input_label(self, Py_ssize_t i):
        if self.in_shape is None and len(self.inputs) <= 1:
            return ""
        for argnum, shape, first in self.inputs:
            size = 1 if shape is None else int(np.prod(shape, dtype=np.int64))
            if first <= i < first + size:
                prefix = f"(arg {argnum})" if len(self.inputs) > 1 else ""
                if shape is None:
                    return prefix
                return prefix + "[" + ", ".join(str(int(j)) for j in np.unravel_index(i - first, shape)) + "]"
        return ""

    def __repr__(self):
        return f"<fastad.Tape: {self._counts()}>"

    def _counts(self):
        return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in (
            (self.n_inputs, "input"), (len(self), "operation"), (self.n_outputs, "output")))

    def to_dot(self, max_nodes=2000):
        """Graphviz source of the computational graph, edges labelled with partials.

        Array blocks are drawn as one node each, with an edge per operand."""
        cdef Py_ssize_t i
        if self.buf.n > max_nodes:
            raise ValueError(f"fastad: the tape has {self.buf.n} nodes, more than "
                             f"max_nodes={max_nodes}; pass a larger max_nodes to draw it")
        outs = set() if self._out is None else set(self._out.reshape(-1).tolist())
        lines = ["digraph fastad {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for i in range(self.buf.n):
            name, a0, a1, p0, p1, v = self.node(i)
            op = self.buf.op[i]
            if op == FAD_BLOCK:
                blk = self._block_at(i)
                if i == blk.start:
                    lines.append(f'  v{i} [label="v{blk.start}..v{blk.stop - 1} = '
                                 f'{blk.describe()}", shape=box3d];')
                    read = {self._dot_src(s) for o in blk.operands() if o.active
                            for s in o.flat.tolist()}       # an edge from every node it reads
                    lines.extend(f'  v{src} -> v{i};' for src in sorted(read))
                continue
            if op == FAD_INPUT:
                label, shape = f"x{self._input_label(i)}\\n{v:.4g}", "box"
            elif op >= FAD_FIRST_CMP:
                label, shape = f"{self._describe(i)}\\n{v != 0.0}", "diamond"
            else:
                label = f"v{i} = {name}" + (f"({p1:.4g})" if OP_FLAGS[op] & FAD_HAS_C else "")
                label += f"\\n{v:.4g}"
                shape = "doublecircle" if i in outs else "ellipse"
            style = ', style=dashed' if op >= FAD_FIRST_CMP else ''
            lines.append(f'  v{i} [label="{label}", shape={shape}{style}];')
            if op == FAD_INPUT or op == FAD_CONST:
                continue
            if op >= FAD_FIRST_CMP:
                lines.append(f'  v{self._dot_src(a0)} -> v{i} [style=dashed];')
                if a1 >= 0:
                    lines.append(f'  v{self._dot_src(a1)} -> v{i} [style=dashed];')
                continue
            lines.append(f'  v{self._dot_src(a0)} -> v{i} [label="{p0:.4g}"];')
            if a1 >= 0:
                lines.append(f'  v{self._dot_src(a1)} -> v{i} [label="{p1:.4g}"];')
        lines.append("}")
        return "\n".join(lines)

    def _dot_src(self, Py_ssize_t s):
        """The graph node standing for slot s (a block is drawn at its first slot)."""
        if self.buf.op[s] == FAD_BLOCK:
            return self._block_at(s).start
        return s

    def __reduce__(self):
        cdef Py_ssize_t n = self.buf.n
        return (_rebuild, (
            (<char*>self.buf.op)[:n] if n else b"",
            (<char*>self.buf.node)[:n * sizeof(fad_node)] if n else b"",
            (<char*>self.buf.val)[:n * sizeof(double)] if n else b"",
            self.n_inputs, list(self.inputs), self.in_shape, self._out,
            list(self.blocks)))

    def input_adjoints(self, Py_ssize_t out_slot):
        """d(output slot)/d(inputs) at the recorded point, one flat vector:
        input_gradients laid end to end."""
        cdef Py_ssize_t first
        out = np.empty(self.n_inputs)
        for (_argnum, shape, first), g in zip(self.inputs, self.input_gradients(out_slot)):
            out[first:first + (1 if shape is None else math.prod(shape))] = np.ravel(g)
        return out

    def input_gradients(self, Py_ssize_t out_slot):
        """d(output slot)/d(each differentiated argument) at the recorded point,
        in `inputs` order (a float for a number, an array of its shape for an
        array): one reverse sweep.  Sealed InputSlabs take their cotangents
        straight from the blocks; one that nothing else holds is the
        argument's gradient itself (no copy, as hand-written backprop)."""
        if not 0 <= out_slot < self.buf.n:
            raise IndexError(f"output slot {out_slot} is not on the tape "
                             f"({self.buf.n} slots)")
        cdef Py_ssize_t top = self._top(out_slot + 1), rows = max(top, self.n_inputs)
        cdef Work w = self._acquire()
        slabs = [s for s in self._slabs if s.sealed and s.stop <= out_slot]
        by_start = {s.start: s for s in slabs}
        handed = set()
        try:
            adj = w.scratch_array(rows, 1)
            cot = self._cotangents(_dptr(adj), rows, 1, out_slot, True, slabs)
            adj[out_slot, 0] = 1.0
            self._reverse_run(self.buf.node, self.recorded_values(), self._recorded_states(),
                              adj, 1, top - 1, self.n_inputs, cot)
            grads = []
            for _argnum, shape, first in self.inputs:
                if shape is None:
                    grads.append(float(adj[first, 0]))
                    continue
                size = math.prod(shape)
                slab = by_start.get(first)
                if slab is None or slab.stop != first + size:
                    grads.append(adj[first:first + size, 0].reshape(shape).copy())
                    continue
                g = cot.take(slab, adj)
                if g is None:
                    grads.append(np.zeros(shape))
                elif type(g) is np.ndarray and g.base is None and g.dtype == np.float64 \
                        and g.flags.c_contiguous and g.flags.writeable and id(g) not in handed:
                    handed.add(id(g))           # owned by no one else: hand it over
                    grads.append(g.reshape(shape))
                else:
                    grads.append(np.array(g, dtype=np.float64).reshape(shape))
            return grads
        finally:
            self._release(w)

    def reverse(self, Py_ssize_t out_slot, double seed=1.0):
        """Adjoints of all slots at the recorded point, for one output slot."""
        if not 0 <= out_slot < self.buf.n:
            raise IndexError(f"output slot {out_slot} is not on the tape "
                             f"({self.buf.n} slots)")
        cdef Py_ssize_t top = max(self._top(out_slot + 1), self.buf.n)
        cdef cnp.ndarray adj_arr = np.zeros(top, dtype=np.float64)
        adj_arr[out_slot] = seed
        self._reverse_run(self.buf.node, self.recorded_values(), self._recorded_states(),
                          adj_arr, 1, self._top(out_slot + 1) - 1, self.n_inputs)
        return adj_arr


# Relative cost of one forward lane to one reverse lane per node, measured by
# benchmarks/bench_modes.py (calibrate): a reverse lane costs ~1.3 forward lanes; "auto" picks the cheaper mode.
FWD_LANE_COST = 1.0
REV_LANE_COST = 1.3


def choose_mode(mode, Py_ssize_t n_in, Py_ssize_t n_out):
    if mode == "auto":
        return "fwd" if n_in * FWD_LANE_COST <= n_out * REV_LANE_COST else "rev"
    if mode not in ("fwd", "rev"):
        raise ValueError(f"fastad: mode must be 'fwd', 'rev' or 'auto', got {mode!r}")
    return mode


cdef class Replayed:
    """A partial replay's values and block states (see Tape._replayed), its
    Work buffer released at the end of the `with`."""
    cdef Tape tape
    cdef Work w
    cdef object result

    def __enter__(self):
        return self.result

    def __exit__(self, *exc):
        if self.w is not None:
            self.tape._release(self.w)
            self.w = None
        return False


cdef class TapePoint:
    """A tape replayed at one x (see Tape.at): its value, gradient and
    Hessian-vector products there, each without another replay.  On a tape
    of scalar nodes the adjoints and second partials are kept after the
    first product, so each further one is a tangent sweep plus one cheap
    reverse sweep (what CG in an optimizer does many times)."""
    cdef readonly Tape tape
    cdef readonly object x
    cdef Work w
    cdef object G, S          # all slots' adjoints, and 3 second partials per node

    def __init__(self, Tape tape, x):
        self.tape = tape
        self.w = tape._acquire()      # pooled: an optimizer's points reuse mapped memory
        tape._replay(self.w, x)
        self.x = np.array(x, dtype=np.float64)

    def __dealloc__(self):
        if self.w is not None and self.tape is not None:
            self.tape._release(self.w)

    @property
    def value(self):
        return self.tape._gather(self.w.val)

    def gradient(self):
        t = self.tape
        if t.out_slots.ndim != 0:
            raise ValueError("fastad: a gradient needs a scalar output; use jacobian")
        if t.blocks:
            g = t._adjoints(self.w.node, _view(self.w.val, t.buf.n, self.w), self.w.states, np.ones((1, 1)))
            return t._shape_in(g, False)
        self._adjoints_all()
        return t._shape_in(self.G[:t.n_inputs].reshape(1, -1).copy(), False)

    cdef _adjoints_all(self):
        """Every slot's adjoint for the scalar output (kept)."""
        if self.G is not None:
            return
        cdef Tape t = self.tape
        cdef Py_ssize_t slot = int(t.out_slots[()]), lo = t.n_inputs
        cdef cnp.ndarray G = self.w.zeros(max(slot + 1, lo), 1, 2).reshape(-1)
        cdef Sweep s = sweep_over(t.buf.op, self.w.node, 1, lo, slot + 1)
        s.adj = _dptr(G)
        s.adj[slot] = 1.0
        with nogil:
            run(REVERSE, &s)
        self.G = G

    def _hvp_gather(self, seeds, gather):
        """H S at this point (seeds (k,) + x.shape) at flat positions of the
        slot-major buffer: a sparse Hessian's sweep and decompression."""
        return self._hvp_at(seeds, gather)

    def vjp(self, ybar):
        """ybar J at this point; ybar of the output's shape or (k,) + that shape."""
        t = self.tape
        seeds, stacked = t._stacked(ybar, t.out_slots.shape, "cotangent")
        return t._shape_in(t._adjoints(self.w.node, _view(self.w.val, t.buf.n, self.w), self.w.states,
                                       seeds), stacked)

    def jvp(self, v):
        """J v at this point; v of x's shape or (k,) + x.shape."""
        t = self.tape
        seeds, stacked = t._stacked(v, t.in_shape, "tangent")
        return t._shape_out(t._tangents(self.w.node, _view(self.w.val, t.buf.n, self.w), self.w.states,
                                        seeds), stacked)

    def hvp(self, v):
        """H v at this point; v of x's shape or (k,) + x.shape."""
        return self._hvp_at(v, None)

    cdef object _hvp_at(self, v, gather):
        cdef Tape t = self.tape
        if t.blocks or t.out_slots is None or t.out_slots.ndim != 0:
            return t._hvp(None, v, False, self.w, gather)
        seeds, stacked = t._stacked(v, t.in_shape, "direction")
        cdef Py_ssize_t k = seeds.shape[0], lo = t.n_inputs, slot = int(t.out_slots[()])
        cdef Py_ssize_t hi = max(slot + 1, lo), j
        if k == 0:
            return t._hvp(None, v, False, self.w, gather)
        self._adjoints_all()
        cdef double* sp = NULL
        if self.S is None and k == 1:      # CG asks for many products here: keep S
            self.S = np.empty(3 * hi)
            sp = _dptr(self.S)
            with nogil:
                second_partials(t.buf.op, self.w.node, self.w.val, sp, lo, hi)
        cdef cnp.ndarray tan = self.w.scratch_array(hi, k, 0), adt = self.w.zeros(hi, k, 1)
        tan[:lo] = seeds.T
        cdef Sweep s = sweep_over(t.buf.op, self.w.node, k, lo, hi)
        cdef double* vp = self.w.val
        s.tan = _dptr(tan)
        s.adj = _dptr(self.G)
        s.adj_known = True
        s.adt = _dptr(adt)
        if self.S is not None:
            s.second = _dptr(self.S)
        with nogil:
            run(FORWARD, &s)        # (no val: tangents only, from the replayed partials)
            s.val = vp
            run(SECOND, &s)
        if gather is not None:
            return gather_flat(adt, gather)
        return t._shape_in(adt[:lo].T.copy(), stacked)
