# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=python  (see ROLES in setup.py)
"""Replays and sweeps of a recorded tape: the Player.

A replay at a new x recomputes values and partials into a Work buffer (so
threads can replay one tape at once): the scalar segments between blocks
with the op table, in compiled code with no Python per node, and each block
with its own NumPy forward; a comparison that comes out otherwise than
recorded raises BranchChangedError.  The sweeps run the kernels of
fastad._sweeps over the scalar segments and the blocks' own reverse,
tangent and second-order steps in between: tangents (forward), adjoints
(reverse, with the blocks' cotangent hand-off), and forward-over-reverse.
"""
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import math
from bisect import bisect_right

import numpy as np
cimport numpy as cnp

from fastad._sweeps cimport (FORWARD, REVERSE, SECOND, Sweep, needed_mask, run_released,
                             sweep_over)
from fastad._kernels import gather_flat
from fastad.errors import BranchChangedError, ValueReadError

cnp.import_array()


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


# ---------------------------------------------------------------- work buffers

cdef inline bint _owned_float64(cnp.ndarray g):
    """g owns its memory, float64, C-contiguous and writeable (g.flags makes
    an object per look)."""
    return cnp.PyArray_BASE(g) == NULL and cnp.PyArray_TYPE(g) == cnp.NPY_DOUBLE and cnp.PyArray_ISNOTSWAPPED(g) and \
        cnp.PyArray_IS_C_CONTIGUOUS(g) and cnp.PyArray_ISWRITEABLE(g)


cdef class Work:
    """Per-call buffers of a replay, so threads can replay one tape at once."""

    def __dealloc__(self):
        free(self.val)
        free(self.node)
        free(self.adj)

    cdef object zeros(self, Py_ssize_t rows, Py_ssize_t k, int which=0):
        """A zeroed (rows, k) array in reusable scratch memory number `which` (0-2)."""
        cdef Py_ssize_t m = rows * k
        if self.scratch is None:
            self.scratch = [None, None, None]
        buf = self.scratch[which]
        if buf is None or buf.shape[0] < m:
            # new memory comes zeroed (calloc): a fill would only fault its
            # pages in ahead of the sweep and write them twice
            buf = self.scratch[which] = np.zeros(max(m, 1024))
            return buf[:m].reshape(rows, k)
        out = buf[:m].reshape(rows, k)
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


cdef list _work_pool = []     # free Work buffers (list.pop/append are atomic under the GIL)
# A pooled buffer is kept only while it is not much larger than what the tapes
# replaying now need: big tapes' buffers go when those tapes do.
cdef Py_ssize_t POOL_SMALL = 1 << 16       # slots (~2.6 MB of buffers): always poolable
cdef Py_ssize_t SPARE_WORK_SLOTS = 8 * 1024 * 1024   # one spare up to this (as the tape's)


cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int fastad_trim(void) { return malloc_trim(0); }
    #else
    static int fastad_trim(void) { return 0; }
    #endif
    """
    int fastad_trim()


cdef Py_ssize_t _work_slots(Work w):
    """A Work's size in slots: its node buffers, and its scratch at 8 bytes a slot."""
    cdef Py_ssize_t n = w.cap
    if w.scratch is not None:
        for a in w.scratch:
            if a is not None:
                n = max(n, a.shape[0] // 5)     # (a slot's buffers take 40 bytes)
    return n


def release_work(bint trim=True):
    """Free the pooled replay buffers; with trim, hand freed heap back to the
    system (glibc keeps it otherwise)."""
    del _work_pool[:]
    if trim:
        fastad_trim()


def pooled_work_slots():
    """Sizes (in slots) of the pooled replay buffers (for tests)."""
    return [_work_slots(w) for w in _work_pool]


cdef int seed_rows(object tan, object seeds, Py_ssize_t lo) except -1:
    """tan[:lo] = seeds.T for (k, lo) seeds: a block copy when seeds is the
    transpose of a C-ordered (lo, k) array (how sparse plans keep them)."""
    st = seeds.T
    if type(st) is np.ndarray and st.dtype == np.float64 and st.flags.c_contiguous:
        tan[:lo] = st
    else:
        tan[:lo] = np.ascontiguousarray(seeds, dtype=np.float64).T
    return 0


def _no(*args):
    return False


def _producers(run, list blocks, list starts, Py_ssize_t upto):
    """The numbers (below upto) of the blocks whose slots the run (start,
    size) of slots covers in part or whole."""
    cdef Py_ssize_t a = run[0], b = run[0] + run[1], j
    out = []
    if b <= a:
        return out
    j = bisect_right(starts, b - 1, 0, upto) - 1
    while j >= 0 and blocks[j].stop > a:
        out.append(j)
        j -= 1
    return out


def _zero_rows(blk, adj, adt, bytearray ok_adj, bytearray ok_adt, Py_ssize_t j,
               bint of_adj, bint of_adt, bint force=False):
    """Zero block j's rows of adj and/or adt where they hold nothing yet
    (force: whatever they hold)."""
    if of_adj and (force or not ok_adj[j]):
        adj[blk.start:blk.stop] = 0.0
        ok_adj[j] = 1
    if of_adt and (force or not ok_adt[j]):
        adt[blk.start:blk.stop] = 0.0
        ok_adt[j] = 1


def _mark_written(blk, list blocks, list starts, Py_ssize_t upto, set dirty):
    """Add to `dirty` the numbers of the blocks (below upto) whose slots
    blk's active operands cover: their adjoint tangents may now be nonzero."""
    cdef Py_ssize_t j, a, b
    for o in blk.operands():
        if not o.active or o.flat.size == 0:
            continue
        if o.start >= 0:
            a, b = o.start, o.start + o.flat.size
        else:
            a, b = int(o.flat.min()), int(o.flat.max()) + 1
        j = bisect_right(starts, b - 1, 0, upto) - 1
        while j >= 0 and blocks[j].stop > a:
            dirty.add(j)
            j -= 1


cdef class Replayed:
    """A partial replay's values and block states (see Player._replayed), its
    Work buffer released at the end of the `with`."""
    cdef Player tape   # (declared below)
    cdef Work w
    cdef object result

    def __enter__(self):
        return self.result

    def __exit__(self, *exc):
        if self.w is not None:
            self.tape._release(self.w)
            self.w = None
        return False


cdef class Player(Recorder):
    """A Recorder that replays and sweeps; see fastad._tape.Tape."""

    cdef Work _acquire(self):
        # Work buffers are shared by all tapes, so a fresh tape (one grad
        # call) sweeps in memory that is already mapped.
        cdef Work w = _work_pool.pop() if _work_pool else Work()
        w.ensure(self.buf.n if self.buf.n else 1)
        return w

    cdef void _release(self, Work w):
        w.states = None
        if len(_work_pool) < 4 and _work_slots(w) <= max(4 * self.buf.n, POOL_SMALL):
            _work_pool.append(w)

    def __dealloc__(self):
        # the pool shrinks when its tape goes: buffers sized for a tape this
        # large or larger are dropped (a live larger tape allocates anew),
        # but one of them (up to SPARE_WORK_SLOTS) is kept, as the tape's own
        # buffers are (fastad._recorder): a loop of fad.grad calls then sweeps
        # in mapped memory, where fresh pages cost ~5 ns a slot (page faults,
        # TLB shootdowns once BLAS threads exist)
        cdef Py_ssize_t n = self.buf.n
        if _work_pool is not None and n > POOL_SMALL // 4:
            keep = [w for w in _work_pool if _work_slots(w) < n // 2]
            big = [w for w in _work_pool if _work_slots(w) >= n // 2
                   and _work_slots(w) <= SPARE_WORK_SLOTS]
            if big:
                keep.append(max(big, key=lambda w: _work_slots(w)))
            _work_pool[:] = keep

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
        flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
        if flat.size != self.n_inputs:         # (in_shape is the caller's to set)
            raise ValueError(f"fastad.Tape: x has {flat.size} numbers but the tape "
                             f"has {self.n_inputs} inputs")
        if self.value_read is not None:
            self._check_value_read(flat)
        return flat

    def _check_value_read(self, flat):
        """A recording that read .value may take another path elsewhere, unseen
        by the tape: it replays only at the very x it was recorded at."""
        if self.n_inputs and memcmp(<const void*>cnp.PyArray_DATA(flat), self.buf.val,
                                    self.n_inputs * sizeof(double)) == 0:
            return
        raise ValueReadError(
            f"fastad: this tape was recorded by a function that read a concrete value "
            f"({self.value_read}), so what it computes at another x may differ in ways "
            f"the tape cannot check; it replays only at the x it was recorded at. "
            f"Record a new tape at this x (fad.record(f, x)), or branch on a comparison "
            f"of Vars (x > 0), which is recorded and checked on replay.")

    cdef int _replay(self, Work w, object x) except -1:
        """Values and partials at x into w: scalar segments in C, blocks in NumPy."""
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t n = self.buf.n, lo = self.n_inputs, cur = lo
        if lo:
            memcpy(w.val, _dptr(flat), lo * sizeof(double))
        if not self.blocks:
            return self._forward_seg(w, lo, n)
        val = view_of(w.val, n, w)
        w.states = []
        for blk in self.blocks:
            self._forward_seg(w, cur, blk.start)
            w.states.append(blk.forward(val))
            cur = blk.stop
        return self._forward_seg(w, cur, n)

    cdef int _forward_seg(self, Work w, Py_ssize_t lo, Py_ssize_t hi) except -1:
        cdef Sweep s = sweep_over(self.buf.op, self.buf.node, 1, lo, hi)
        s.recorded = self.buf.val
        s.val = w.val
        s.out = w.node
        cdef Py_ssize_t r = run_released(FORWARD, &s)
        if r >= 0:
            raise BranchChangedError(self._branch_message(r))
        return 0

    def _branch_message(self, Py_ssize_t r):
        was = self.buf.val[r] != 0.0
        return (f"fastad: the comparison recorded at slot {r} "
                f"({self._describe(r)}) was {was} when the tape was recorded "
                f"but is {not was} at the new input: the function takes "
                f"another branch there, so this tape does not describe it. "
                f"Record a new tape at this input with fad.record(f, x).")

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
            if k != 1 or not getattr(blk, "tangent_one", _no)(val, tan):
                blk.tangent(val, states[bi], tan, k)
            cur = blk.stop
        self._tangent_seg(nodes, tp, k, cur, hi)
        return 0

    cdef void _tangent_seg(self, const fad_node* nodes, double* tp, Py_ssize_t k,
                           Py_ssize_t lo, Py_ssize_t hi):
        cdef Sweep s = sweep_over(self.buf.op, nodes, k, lo, hi)
        s.tan = tp
        run_released(FORWARD, &s)

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

    cdef int _second_run(self, const fad_node* nodes, object val, list states, object tan,
                         object adj, object adt, Py_ssize_t k, Py_ssize_t hi,
                         Py_ssize_t lo) except -1:
        """reverse_second over slots hi..lo, blocks through their reverse2.

        adt is all zeros on entry.  Until a scalar node has run, the run
        knows which blocks' rows of adt may have been written (`dirty`): a
        block whose rows nothing reached has zero adjoint tangents, and one
        with reverse2_gd_zero skips their term (a linear block then writes
        no adjoint tangents at all: the zeros of a sum's output pass down a
        linear chain without a pass over memory)."""
        cdef Py_ssize_t cur = hi, bi
        cdef const double* vp = _dptr(val)
        cdef list blocks = self.blocks
        cdef bint tracking = True
        dirty = set()
        starts = None
        for bi in range(len(blocks) - 1, -1, -1):
            blk = blocks[bi]
            if blk.start > cur:
                continue
            if cur >= blk.stop:
                self._second_seg(nodes, vp, tan, adj, adt, k, cur, blk.stop)
                tracking = False        # (scalar nodes may write anywhere below)
            reverse2 = getattr(blk, "reverse2", None)
            if reverse2 is None:
                raise NotImplementedError(
                    f"fastad: second derivatives through {blk.describe()} are not "
                    f"available (no second-order rule for this block)")
            if tracking and bi not in dirty and hasattr(blk, "reverse2_gd_zero"):
                wrote = blk.reverse2_gd_zero(val, states[bi], tan, adj, adt, k)
            else:
                reverse2(val, states[bi], tan, adj, adt, k)
                wrote = True
            if tracking and wrote:
                if starts is None:
                    starts = [b.start for b in blocks]
                    if any(starts[j] >= starts[j + 1] for j in range(len(starts) - 1)):
                        tracking = False
                if tracking:
                    _mark_written(blk, blocks, starts, bi, dirty)
            cur = blk.start - 1
        self._second_seg(nodes, vp, tan, adj, adt, k, cur, lo)
        return 0

    def _replay_tangent(self, Work w, x, tan, Py_ssize_t k, Py_ssize_t hi):
        """_replay at x into w with the tangents of tan's seeded rows pushed
        along through slots below hi (tan (rows, k), slot-major): each block
        with forward_tangent computes both in one pass over its memory, the
        others forward then tangent; scalar segments replay then push."""
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t n = self.buf.n, lo = self.n_inputs, cur = lo, a, b
        cdef double* tp = _dptr(tan)
        if lo:
            memcpy(w.val, _dptr(flat), lo * sizeof(double))
        val = view_of(w.val, n, w)
        w.states = []
        for blk in self.blocks:
            self._forward_seg(w, cur, blk.start)
            a, b = cur, min(blk.start, hi)
            if b > a:
                self._tangent_seg(w.node, tp, k, a, b)
            if blk.start >= hi:
                w.states.append(blk.forward(val))
            else:
                ft = getattr(blk, "forward_tangent", None)
                st = NotImplemented if ft is None else ft(val, tan, k)
                if st is NotImplemented:
                    st = blk.forward(val)
                    blk.tangent(val, st, tan, k)
                w.states.append(st)
            cur = blk.stop
        self._forward_seg(w, cur, n)
        if hi > cur:
            self._tangent_seg(w.node, tp, k, cur, hi)
        return val

    def _second_lazy(self, Work w, val, list states, tan, adj, adt, Py_ssize_t k,
                     Py_ssize_t hi, Py_ssize_t lo, Py_ssize_t slot):
        """_second_run over slots hi..lo for the output `slot`, on a tape with
        blocks, with adj and adt NOT zeroed first (w: the replay's nodes, or
        None for the recorded ones): rows outside blocks are zeroed here,
        and a block's rows only where something must add to them before
        anything wrote them.  Element-wise blocks write their operands' rows
        (assign) where the operand is a whole block output nothing wrote
        yet, so the sweep makes no zeroing pass over most of its memory; a
        block that nothing reached has a zero adjoint and is skipped, and one
        whose adjoint tangents nothing reached skips their term (see
        _second_run).  Afterwards only rows outside blocks are meaningful
        (the inputs', read for H v)."""
        cdef const fad_node* nodes = self.buf.node if w is None else w.node
        cdef const double* vp = _dptr(val)
        cdef list blocks = self.blocks
        cdef Py_ssize_t nb = len(blocks), bi, j, prev = 0, cur = hi, a, size
        starts = [b.start for b in blocks]
        if any(starts[j] >= starts[j + 1] or blocks[j].stop > starts[j + 1]
               for j in range(nb - 1)) or (nb and starts[0] < lo):
            adj[:hi + 1] = 0.0          # (blocks over one another, or over inputs)
            adt[:hi + 1] = 0.0
            adj[slot, 0] = 1.0
            return self._second_run(nodes, val, states, tan, adj, adt, k, hi, lo)
        for blk in blocks:              # rows outside blocks: zeros
            if blk.start > hi:
                break
            adj[prev:blk.start] = 0.0
            adt[prev:blk.start] = 0.0
            prev = blk.stop
        if prev <= hi:
            adj[prev:hi + 1] = 0.0
            adt[prev:hi + 1] = 0.0
        ok_adj = bytearray(nb)          # the block's rows hold their sums so far
        ok_adt = bytearray(nb)
        hit_adt = bytearray(nb)         # ... and something was added to its adt rows
        j = bisect_right(starts, slot) - 1
        if j >= 0 and blocks[j].stop > slot:
            _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j, True, True)
        adj[slot, 0] = 1.0
        tracking = True
        for bi in range(nb - 1, -1, -1):
            blk = blocks[bi]
            if blk.start > cur:
                continue
            if cur >= blk.stop:
                if tracking:            # scalar nodes may add to any row below
                    for j in range(bi + 1):
                        _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j, True, True)
                    tracking = False
                self._second_seg(nodes, vp, tan, adj, adt, k, cur, blk.stop)
            cur = blk.start - 1
            reverse2 = getattr(blk, "reverse2", None)
            if reverse2 is None:
                raise NotImplementedError(
                    f"fastad: second derivatives through {blk.describe()} are not "
                    f"available (no second-order rule for this block)")
            if not tracking:
                reverse2(val, states[bi], tan, adj, adt, k)
                continue
            if not ok_adj[bi]:
                continue                # nothing reached it: a zero adjoint
            gd_zero = not hit_adt[bi]
            runs = blk.fused_operands() if hasattr(blk, "fused_operands") else None
            if runs is not None:
                writes_adt = not (gd_zero and not blk._curved())
                asg = 0
                mine = [_producers(r, blocks, starts, bi) if r is not None else ()
                        for r in runs]
                for i, r in enumerate(runs):
                    if r is None:
                        continue
                    a, size = r
                    other = mine[1 - i] if len(runs) == 2 else ()
                    for j in mine[i]:
                        exact = blocks[j].start == a and blocks[j].stop == a + size
                        # x's rows first in each element: y adds to what x wrote
                        # where both are this very block output
                        free = exact and (j not in other or
                                          (i == 0 and runs[1] == r))
                        if not ok_adj[j]:
                            if free:
                                asg |= 1 << (2 * i)
                                ok_adj[j] = 1
                            else:
                                _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j, True, False)
                        if writes_adt and not ok_adt[j]:
                            if free:
                                asg |= 2 << (2 * i)
                                ok_adt[j] = 1
                            else:
                                _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j, False, True)
                if blk._fused_second(val, tan, adj, adt, k, gd_zero, asg) is not None:
                    if writes_adt:
                        for p in mine:
                            for j in p:
                                hit_adt[j] = 1
                    continue
                for i in range(len(runs)):      # (not fused after all: undo nothing,
                    if asg >> (2 * i) & 3:      # but the rows it was to write need zeros)
                        for j in mine[i]:
                            _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j,
                                       asg >> (2 * i) & 1, asg >> (2 * i) & 2, True)
            linear = getattr(blk, "second_linear", False) and gd_zero
            if gd_zero and not linear:
                _zero_rows(blk, adj, adt, ok_adj, ok_adt, bi, False, True)
            for o in blk.operands():
                if o.active:
                    r = (o.start, o.flat.size) if o.start >= 0 else \
                        (int(o.flat.min()), int(o.flat.max()) + 1 - int(o.flat.min()))
                    for j in _producers(r, blocks, starts, bi):
                        _zero_rows(blocks[j], adj, adt, ok_adj, ok_adt, j, True, not linear)
                        if not linear:
                            hit_adt[j] = 1
            if linear:
                blk.reverse2_gd_zero(val, states[bi], tan, adj, adt, k)
            else:
                reverse2(val, states[bi], tan, adj, adt, k)
        self._second_seg(nodes, vp, tan, adj, adt, k, cur, lo)

    cdef void _second_seg(self, const fad_node* nodes, const double* vp, object tan,
                          object adj, object adt, Py_ssize_t k, Py_ssize_t hi, Py_ssize_t lo):
        cdef Sweep s = sweep_over(self.buf.op, nodes, k, lo, hi + 1)
        s.val = <double*>vp
        s.tan = _dptr(tan)
        s.adj = _dptr(adj)
        s.adt = _dptr(adt)
        run_released(SECOND, &s)

    cdef object _tangents(self, const fad_node* nodes, object val, list states, object seeds,
                          object gather=None):
        """(k, n_inputs) directions -> (k, n_outputs) output tangents; with
        `gather`, the tangent buffer (slot-major, k lanes) at those flat
        positions instead (a sparse Jacobian's decompression, in one take)."""
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef Work w = self._acquire()
        try:
            tan = w.scratch_array(hi, k)        # every node and block writes its rows
            seed_rows(tan, seeds, lo)
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
            seed_rows(tan, seeds, lo)
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
            val = view_of(w.val, self.buf.n, w)
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
            val = view_of(w.val, self.buf.n, w)
            if fwd_seeds is not None and f is None:
                f = self._tangents(w.node, val, w.states, fwd_seeds, fwd_gather)
            if rev_seeds is not None:
                r = self._adjoints(w.node, val, w.states, rev_seeds, rev_gather)
            return f, r
        finally:
            self._release(w)

    def _full_tangents(self, x, seeds):
        """Replay at x and sweep k seeds: the whole (rows, k) tangent buffer."""
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef Work w = self._acquire()
        try:
            self._replay(w, x)
            tan = np.empty((hi, k))
            seed_rows(tan, seeds, lo)
            self._tangent_run(w.node, view_of(w.val, self.buf.n, w), w.states, tan, k, lo, hi)
            return tan
        finally:
            self._release(w)

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
            val = view_of(r.w.val, self.buf.n, r.w)
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
                elif type(g) is np.ndarray and _owned_float64(g) and id(g) not in handed:
                    handed.add(id(g))           # owned by no one else: hand it over
                    grads.append(g.reshape(shape))
                else:
                    grads.append(np.array(g, dtype=np.float64).reshape(shape))
            return grads
        finally:
            self._release(w)

    def input_adjoints(self, Py_ssize_t out_slot):
        """d(output slot)/d(inputs) at the recorded point, one flat vector:
        input_gradients laid end to end."""
        cdef Py_ssize_t first
        out = np.empty(self.n_inputs)
        for (_argnum, shape, first), g in zip(self.inputs, self.input_gradients(out_slot)):
            out[first:first + (1 if shape is None else math.prod(shape))] = np.ravel(g)
        return out

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
