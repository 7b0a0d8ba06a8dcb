# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=python  (see ROLES in setup.py)
"""The tape's storage and its recording: the Recorder.

Node i writes slot i.  Inputs come first (op INPUT), then one node per
elementary operation, in recording order.  Per node: an op code (1 byte),
a fad_node {p0, p1, a0, a1} (24 bytes) and a value (8 bytes).  An array
operation is a block (fastad._blocks): its output slots have op BLOCK and
the block object does its own sweeps.

Recording (fastad._var, fastad.arrays, fastad.primitives) appends nodes and
blocks, and keeps the book of the cotangent hand-off between blocks
(Cotangents); after it, a tape is read-only.  The Player (fastad._player)
replays and sweeps it; the Tape (fastad._tape) is the public face.
"""
from libc.stdlib cimport free
from libc.string cimport memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import bisect

import numpy as np
cimport numpy as cnp
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from fastad._kernels import OP_FLAGS, OP_NAMES
from fastad.errors import TapeError

cnp.import_array()


class InputSlab:
    """An array argument's input slots as a producer of cotangents, like a
    sealed block (see Cotangents and Recorder.note_input)."""
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
    recording; see Recorder._note_block) gets its cotangent from those blocks as
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


cdef object view_of(double* p, Py_ssize_t n, object owner):
    """A NumPy view of n doubles at p, which `owner` (its base: the view
    keeps it alive, and _detach sees a view) owns."""
    if n == 0:
        return np.zeros(0)
    cdef cnp.npy_intp dims = n
    cdef cnp.ndarray a = cnp.PyArray_SimpleNewFromData(1, &dims, cnp.NPY_DOUBLE, p)  # (a memoryview: 4x)
    Py_INCREF(owner)
    cnp.PyArray_SetBaseObject(a, owner)
    return a


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


cdef class Recorder:
    """The tape's storage (op codes, nodes, values; block objects) and the
    recording API.  See fastad._tape.Tape."""

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
        self.value_read = None

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

    def add_inputs(self, values):
        """Append one INPUT node per value (a 1-D float64 array); returns the first slot."""
        self._recording_only()
        cdef const double[::1] view
        cdef const double* src
        cdef Py_ssize_t m, first = self.buf.n
        if type(values) is np.ndarray and cnp.PyArray_NDIM(<cnp.ndarray>values) == 1 and \
                cnp.PyArray_TYPE(<cnp.ndarray>values) == cnp.NPY_DOUBLE and \
                cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>values) and \
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>values):
            # (its data directly: a typed memoryview costs more than a small argument)
            m = cnp.PyArray_SIZE(<cnp.ndarray>values)
            src = <const double*>cnp.PyArray_DATA(<cnp.ndarray>values)
        else:
            if values is None:
                raise TypeError("fastad: add_inputs needs an array of float64 values, not None")
            view = values
            m = view.shape[0]
            src = &view[0] if m else NULL
        self.reserve(m)
        if m:
            memset(self.buf.op + first, FAD_INPUT, m)     # no sweep reads an input's node
            memcpy(self.buf.val + first, src, m * sizeof(double))
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

    def push_copies(self, slots):
        """x * 1.0 for every slot: fresh nodes equal to them (a nested
        transform's own variables, fastad._nested); returns their slots."""
        self._recording_only()
        cdef const cnp.intp_t[::1] src = np.ascontiguousarray(np.asarray(slots, dtype=np.intp).reshape(-1))
        cdef Py_ssize_t k, m = src.shape[0], first = self.buf.n
        for k in range(m):
            if not 0 <= src[k] < self.buf.n:
                raise IndexError(f"fastad: slot {src[k]} is not on the tape")
        self.reserve(m)
        for k in range(m):
            tape_push(&self.buf, FAD_MUL_C, <int32_t>src[k], -1, 1.0, 1.0, self.buf.val[src[k]])
        return slot_range(first, m).reshape(np.shape(slots))

    def _structure(self):
        """The op codes, then each node's operands (a0, a1 as int32 pairs),
        as one bytes object: what index-set propagation over the scalar
        nodes reads (block and input slots: zeros; fastad.sparse keys Hessian plans by it).  One pass,
        without the partials and values that a pickle would copy."""
        cdef Py_ssize_t i, n = self.buf.n
        out = PyBytes_FromStringAndSize(NULL, n * (1 + 2 * sizeof(int32_t)))
        cdef char* b = PyBytes_AS_STRING(out)
        if n:
            memcpy(b, self.buf.op, n)
            b += n
            for i in range(n):
                if self.buf.op[i] == FAD_BLOCK or self.buf.op[i] == FAD_INPUT:
                    memset(b + 8 * i, 0, 8)      # (not set on these: the block says)
                else:
                    memcpy(b + 8 * i, &self.buf.node[i].a0, 4)
                    memcpy(b + 8 * i + 4, &self.buf.node[i].a1, 4)
        return out

    def _nodes(self, Py_ssize_t lo, Py_ssize_t hi):
        """Copies of (op, a0, a1, p1) for slots lo .. hi-1 (fastad._nested
        differentiates them); p1 holds a unary node's constant."""
        if not 0 <= lo <= hi <= self.buf.n:
            raise IndexError(f"fastad: slots {lo}..{hi} are not on the tape")
        cdef Py_ssize_t i, m = hi - lo
        ops = np.empty(m, dtype=np.uint8)
        a0 = np.empty(m, dtype=np.intp)
        a1 = np.empty(m, dtype=np.intp)
        p1 = np.empty(m, dtype=np.float64)
        cdef uint8_t[::1] o = ops
        cdef cnp.intp_t[::1] b0 = a0, b1 = a1
        cdef double[::1] c = p1
        for i in range(m):
            o[i] = self.buf.op[lo + i]
            b0[i] = self.buf.node[lo + i].a0
            b1[i] = self.buf.node[lo + i].a1
            c[i] = self.buf.node[lo + i].p1
        return ops, a0, a1, p1

    def _read_all(self, Py_ssize_t hi):
        """Slots 0 .. hi-1 may be read by new scalar nodes: their blocks take
        cotangents from the adjoint buffer (no hand-off)."""
        self.escape(0, hi - 1)

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
        return view_of(self.buf.val + self.buf.n, m, self)

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
        cdef Py_ssize_t size, start
        for o in block.operands():
            if o.idx is None:
                continue
            flat = o.flat
            size = cnp.PyArray_SIZE(<cnp.ndarray>flat) if type(flat) is np.ndarray else len(flat)
            if size == 0:
                continue
            start = o.start
            if start >= 0:
                p = self._by_start.get(start) if handoff else None
                if p is not None and <Py_ssize_t>p.stop - <Py_ssize_t>p.start == size:
                    o.src = p
                    continue
                self.escape(start, start + size - 1)
            else:
                self.escape(flat.min(), flat.max())
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

    def _set_outputs(self, slots):
        """Make `slots` (slot numbers of this tape) its outputs."""
        out = np.array(slots, dtype=np.intp)
        # (a loop, not out.min() and out.max(): those cost microseconds a call
        # on the one slot of a scalar output, which every transform sets)
        cdef const cnp.intp_t* p = <const cnp.intp_t*>cnp.PyArray_DATA(out)
        cdef Py_ssize_t k
        for k in range(out.size):
            if not 0 <= p[k] < self.buf.n:
                raise ValueError(f"fastad: output slots must lie in 0 .. {self.buf.n - 1}")
        self._out = out

    def recorded_values(self):
        """A NumPy view of the recorded slot values; it keeps the tape alive
        (while f is being recorded it is invalid once the tape grows)."""
        return view_of(self.buf.val, self.buf.n, self)

    def values(self):
        """A copy of every slot's recorded value."""
        cdef cnp.ndarray out = np.empty(self.buf.n, dtype=np.float64)
        if self.buf.n:
            memcpy(<double*>cnp.PyArray_DATA(out), self.buf.val, self.buf.n * sizeof(double))
        return out

    @property
    def out_slots(self):
        """The output slots (an intp array shaped like f's output; a copy), or None."""
        return None if self._out is None else self._out.copy()

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

    def _block_at(self, Py_ssize_t i):
        """The block whose output slots hold slot i."""
        k = bisect.bisect_right([b.start for b in self.blocks], i) - 1
        while k >= 0 and self.blocks[k].stop <= i:   # skip zero-slot blocks at i
            k -= 1
        return self.blocks[k]

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

    def _recorded_states(self):
        return [blk.state for blk in self.blocks]

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
