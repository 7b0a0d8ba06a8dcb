# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Folded forward sweeps of a tape of scalar nodes (a sparse Jacobian's
compressed sweep with fixed seeds).

A fold, scalar (ScalarFold, here) or of blocks (fastad._blocks.TangentFold),
is made once per sparse plan and then used at many points, through one
interface (what fastad.sparse uses):

    fold = Fold(tape, seeds, x)         seeds (k, n_inputs); the first sweep, at x
    fold.useful                         False: folding saves nothing here
    fold.tangents                       the (slots, k) tangent buffer of that sweep
    fold.fuse(tape, gather, indptr)     read the Jacobian's nonzeros (gather
                                        positions of the buffer) more directly
    fold.sweep(tape, x, gather)         the nonzeros at x

A fold asks the tape only for replays (fastad._tape); the tape never calls a
fold.
"""
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import threading

import numpy as np
cimport numpy as cnp

from fastad._ops cimport *      # fad_node, fad_eval, fad_op_flags, FAD_*
from fastad._sweeps cimport (FORWARD, SWEEP_TANGENT, SWEEP_VALUE, Sweep, fold_mask, run, sz,
                             sweep_over)
from fastad._player cimport Player, Work
from fastad._kernels import FixedGather, gather_flat
from fastad.errors import BranchChangedError

cnp.import_array()


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


class kept:
    """`with kept(tangents, lock) as tan`: a fold's kept tangents to sweep
    into, or a copy of them while another thread holds the lock (the rows a
    sweep reads but does not write never change, so a copy taken mid-sweep
    is as good)."""
    __slots__ = ("tangents", "lock", "mine")

    def __init__(self, tangents, lock):
        self.tangents, self.lock, self.mine = tangents, lock, False

    def __enter__(self):
        self.mine = self.lock.acquire(False)
        return self.tangents if self.mine else self.tangents.copy()

    def __exit__(self, *exc):
        if self.mine:
            self.lock.release()
        return False


cdef class ScalarFold:
    """A forward sweep with a fixed seed matrix over a tape of scalar nodes
    (a sparse Jacobian's compressed sweep): the tangents the seeds alone
    decide are computed once, at the first point, and kept; later points
    redo only what fold_mask marks.  In the Bratu loop, x[i-1] - 2 x[i] +
    x[i+1] is fixed and only exp, its scaling and the last add are swept."""
    cdef readonly object mask          # uint8 per slot: SWEEP_VALUE | SWEEP_TANGENT
    cdef readonly object tangents      # (slots, k) kept tangents
    cdef readonly Py_ssize_t k
    cdef object lock
    cdef readonly object fixed         # a FixedGather of the nonzeros (fuse_output), or None
    cdef object vslots                 # int32: the SWEEP_VALUE slots, in order
    cdef object chain_ptr, chain_at    # per changing term, where its partials are in vslots
    cdef object chain_t, chain_c       # ... its kept tangent and constant partials
    cdef object _gather                # the gather fuse_output was made for
    cdef object v_op, v_a0, v_a1, v_c, v_rec    # the SWEEP_VALUE nodes, compacted (fuse_output)

    def __init__(self, Player tape, seeds, x):
        cdef Py_ssize_t n = tape.buf.n
        outs = np.ascontiguousarray(tape.out_slots.reshape(-1), dtype=np.intp)
        self.mask = np.empty(max(n, 1), dtype=np.uint8)
        fixed = np.empty(max(n, 1), dtype=np.uint8)
        fold_mask(tape.buf.op, tape.buf.node, <uint8_t*>cnp.PyArray_DATA(self.mask),
                  <uint8_t*>cnp.PyArray_DATA(fixed), <Py_ssize_t*>cnp.PyArray_DATA(outs),
                  outs.shape[0], tape.n_inputs, n)
        self.k = seeds.shape[0]
        self.tangents = tape._full_tangents(x, seeds)
        self.lock = threading.Lock()

    def fuse_output(self, Player tape, gather):
        """Read the Jacobian's nonzeros without sweeping any tangent lanes, when
        each is a kept tangent or a node with constant partials over kept
        tangents and unary chains of swept nodes that end at kept ones (exp
        and its scaling, added to x[i-1] - 2 x[i] + x[i+1], in the Bratu loop):
        the kept parts go into a FixedGather, and a call replays the values
        and multiplies each chain's changing partials.  Leaves self.fixed None
        where that does not describe the tape."""
        cdef cnp.ndarray g = np.ascontiguousarray(gather, dtype=np.int64).reshape(-1)
        cdef cnp.ndarray tan = self.tangents
        cdef Py_ssize_t m = g.shape[0], k = self.k, n = tape.buf.n, p, s, lane, j, a
        cdef const int64_t* gp = <const int64_t*>cnp.PyArray_DATA(g)
        cdef const double* tp = _dptr(tan)
        cdef const uint8_t* mp = <const uint8_t*>cnp.PyArray_DATA(self.mask)
        cdef const uint8_t* op = tape.buf.op
        cdef const fad_node* nd = tape.buf.node
        cdef int fl
        cdef double c, t
        self.fixed = None
        if m == 0 or tan.shape[0] * k <= g.max() or g.min() < 0:
            return
        vslots = np.flatnonzero(self.mask & SWEEP_VALUE).astype(np.int32)
        cdef cnp.ndarray vindex = np.full(max(n, 1), -1, dtype=np.int32)
        vindex[vslots] = np.arange(vslots.shape[0], dtype=np.int32)
        cdef const int32_t* vi = <const int32_t*>cnp.PyArray_DATA(vindex)
        cdef cnp.ndarray base = np.zeros(m)
        cdef double* bp = _dptr(base)
        # per changing term q: its kept tangent ts[q], then the partials from
        # the output's own down to the innermost of its chain, at[e] >= 0 a
        # changing one (its index in vslots), -1 a constant cs[e]; a call
        # multiplies them innermost first, as the sweep does
        pos, rows, ptr, at, ts, consts = ([], []), ([], []), [0], [], [], {}
        cdef bint zero, varying
        cdef Py_ssize_t e
        for p in range(m):
            s = gp[p] // k
            lane = gp[p] - s * k
            if not mp[s] & SWEEP_TANGENT:            # a kept tangent
                bp[p] = tp[gp[p]]
                continue
            fl = fad_op_flags[op[s]]
            if not fl & FAD_CP:
                return                              # the output's own partials change
            for j in range(2 if fl & FAD_BINARY and nd[s].a1 >= 0 else 1):
                a = nd[s].a0 if j == 0 else nd[s].a1
                c = nd[s].p0 if j == 0 else nd[s].p1
                ta, tc = [-1], [c]                  # this term, outermost first
                zero, varying = c == 0.0, False
                while not zero and mp[a] & SWEEP_TANGENT:      # down a chain of swept nodes
                    fl = fad_op_flags[op[a]]
                    if fl & FAD_BINARY and nd[a].a1 >= 0:
                        return                      # two operands: not a chain
                    if fl & FAD_CP:
                        ta.append(-1)
                        tc.append(nd[a].p0)
                        zero = nd[a].p0 == 0.0
                    else:
                        ta.append(vi[a])
                        tc.append(0.0)
                        varying = True
                    a = nd[a].a0
                t = tp[a * k + lane]
                if zero or t == 0.0:                # a zero partial or lane passes nothing
                    continue
                if not varying:                     # constant all the way: kept
                    for e in range(len(tc) - 1, -1, -1):
                        t = sz(t, tc[e])
                    bp[p] += t
                    continue
                while ta[len(ta) - 1] < 0:          # constants below the first changing
                    t = t * tc.pop()                # partial: applied now, in order
                    ta.pop()
                for e in range(len(ta)):            # constants: an index into consts;
                    if ta[e] >= 0:                  # ones dropped (x * 1 is x)
                        at.append(ta[e])
                    elif tc[e] != 1.0:
                        at.append(-1 - consts.setdefault(tc[e], len(consts)))
                pos[j].append(p)
                rows[j].append(len(ts))
                ts.append(t)
                ptr.append(len(at))
        if len(ts) >= 2 ** 31:
            return
        self.fixed = FixedGather(base, [(pos[0], rows[0], None), (pos[1], rows[1], None)],
                                 len(ts))
        self._gather = gather
        self.chain_t = np.array(ts, dtype=np.float64)
        self.chain_c = np.array(sorted(consts, key=consts.get), dtype=np.float64)
        self.vslots = vslots
        self.chain_ptr = np.array(ptr, dtype=np.int32)
        self.chain_at = np.array(at, dtype=np.int32)
        # the value nodes in order, their operands renumbered (>= 0: a value
        # node, -2 - j: input j, -1: none), so a call reads them in one
        # stream instead of one cache line per node of the tape
        cdef Py_ssize_t nv = vslots.shape[0], i, lo = tape.n_inputs
        cdef int32_t r
        self.v_op = np.empty(nv, dtype=np.uint8)
        self.v_a0 = np.empty(nv, dtype=np.int32)
        self.v_a1 = np.empty(nv, dtype=np.int32)
        self.v_c = np.empty(nv)
        self.v_rec = np.empty(nv)
        cdef uint8_t[::1] vop = self.v_op
        cdef int32_t[::1] va0 = self.v_a0
        cdef int32_t[::1] va1 = self.v_a1
        cdef double[::1] vc = self.v_c
        cdef double[::1] vrec = self.v_rec
        cdef const int32_t* vsp = <const int32_t*>cnp.PyArray_DATA(vslots)
        for j in range(nv):
            i = vsp[j]
            vop[j] = op[i]
            vc[j] = nd[i].c
            vrec[j] = tape.buf.val[i]
            for a in range(2):
                r = nd[i].a0 if a == 0 else nd[i].a1
                if r < 0:
                    r = -1
                elif r < lo:
                    r = -2 - r
                elif r == i:                  # a constant reads itself: its c is its value
                    r = -1
                else:
                    r = vi[r]
                    if r < 0:
                        self.fixed = None     # (cannot happen: fold_mask marks them)
                        return
                if a == 0:
                    va0[j] = r
                else:
                    va1[j] = r

    cdef object _fixed_sweep(self, Player tape, x):
        """The nonzeros through self.fixed: a replay of the values the chains
        and comparisons need, then the products of the chains' partials."""
        cdef cnp.ndarray flat = tape._flat_input(x)
        cdef Py_ssize_t nv = self.vslots.shape[0], j, q, r = -1
        cdef Py_ssize_t nt = self.chain_ptr.shape[0] - 1
        cdef const double* xin = _dptr(flat)
        cdef const uint8_t* vop = <const uint8_t*>cnp.PyArray_DATA(self.v_op)
        cdef const int32_t* va0 = <const int32_t*>cnp.PyArray_DATA(self.v_a0)
        cdef const int32_t* va1 = <const int32_t*>cnp.PyArray_DATA(self.v_a1)
        cdef const double* vc = _dptr(self.v_c)
        cdef const double* vrec = _dptr(self.v_rec)
        cdef const int32_t* cp = <const int32_t*>cnp.PyArray_DATA(self.chain_ptr)
        cdef const int32_t* ca = <const int32_t*>cnp.PyArray_DATA(self.chain_at)
        cdef const double* cc = _dptr(self.chain_c)
        cdef const double* ct = _dptr(self.chain_t)
        cdef cnp.ndarray cv = np.empty(max(nv, 1)), dv = np.empty(max(nv, 1))
        cdef cnp.ndarray f = np.empty(max(nt, 1))
        cdef double* vp = _dptr(cv)
        cdef double* dp = _dptr(dv)
        cdef double* fp = _dptr(f)
        cdef double v, d0, d1, a, x0, x1
        cdef int o
        cdef int32_t a0, a1
        with nogil:
            for j in range(nv):
                o = vop[j]
                a0 = va0[j]
                a1 = va1[j]
                x0 = vp[a0] if a0 >= 0 else (xin[-2 - a0] if a0 <= -2 else 0.0)
                x1 = vp[a1] if a1 >= 0 else (xin[-2 - a1] if a1 <= -2 else 0.0)
                v = fad_eval(o, x0, x1, vc[j], &d0, &d1)
                if o >= FAD_FIRST_CMP and v != vrec[j]:
                    r = j
                    break
                vp[j] = v
                dp[j] = d0
            if r < 0:
                for q in range(nt):     # innermost first; a zero partial or lane passes 0
                    a = ct[q]
                    for j in range(cp[q + 1] - 1, cp[q] - 1, -1):
                        a = sz(a, dp[ca[j]] if ca[j] >= 0 else cc[-1 - ca[j]])
                        if a == 0.0:
                            break
                    fp[q] = a
        if r >= 0:
            raise BranchChangedError(tape._branch_message(self.vslots[r]))
        f = f[:nt]
        return self.fixed([[f], [f]])

    useful = True           # (a fold of scalar nodes always saves sweeping)

    def fuse(self, Player tape, gather, indptr):
        """Read the nonzeros at `gather` without a tangent buffer where the
        tape allows it (fuse_output)."""
        self.fuse_output(tape, gather)

    @property
    def counts(self):
        """(slots swept for tangents, slots whose value is computed)."""
        m = self.mask
        return int(np.count_nonzero(m & SWEEP_TANGENT)), int(np.count_nonzero(m & SWEEP_VALUE))

    def sweep(self, Player tape, x, gather):
        """The kept and swept tangents at x, at the gather positions (those
        fuse_output was given, when it made self.fixed)."""
        if self.fixed is not None and gather is self._gather:
            return self._fixed_sweep(tape, x)
        cdef cnp.ndarray flat = tape._flat_input(x)
        cdef Py_ssize_t lo = tape.n_inputs, n = tape.buf.n, r
        cdef Work w = tape._acquire()
        cdef Sweep s = sweep_over(tape.buf.op, tape.buf.node, self.k, lo, n)
        s.mask = <const uint8_t*>cnp.PyArray_DATA(self.mask)
        s.recorded = tape.buf.val
        s.val = w.val
        try:
            if lo:
                memcpy(w.val, _dptr(flat), lo * sizeof(double))
            with kept(self.tangents, self.lock) as tan:
                s.tan = _dptr(tan)
                with nogil:
                    r = run(FORWARD, &s)
                if r >= 0:
                    raise BranchChangedError(tape._branch_message(r))
                return gather_flat(tan, gather)
        finally:
            tape._release(w)
