# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batched replay of a tape of scalar nodes: b points swept in compiled code,
split over threads that run without the GIL.

Values, gradients, and jvps and hvps with one direction a point sweep
DEF_LANES points side by side (_lanes): one op-table loop (fad_map) per node
for all of them, and per point the single-point sweeps' arithmetic in their
order, with their strong-zero tests.  The other kinds take one point at a
time through the single-point method's own kernels (fastad._sweeps).
Either way each result is bit for bit what that method returns.  Each
thread has its own value, partial and lane buffers; threads take blocks of
points from a shared counter (a core slowed by another process takes fewer).
Tapes with array blocks or a value read are batched by fastad._batching
(a loop over single-point calls): their sweeps call NumPy and Python.

The shapes here are flat: X (b, n_inputs), seeds (b, k, n_inputs) or
(b, k, n_outputs); the structure of x and of the output is _batching's.
"""
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport isfinite
from libc.string cimport memcpy, memset
from libc.stdint cimport int32_t, int64_t, uint8_t

import threading

import numpy as np
cimport numpy as cnp

from fastad._player cimport Player
from fastad._recorder cimport fad_node
from fastad._ops cimport (FAD_FIRST_CMP, FAD_HOT, FAD_MAP_SECOND, FAD_MAP_VALUES, FAD_Z00,
                          FAD_Z01, FAD_Z11, fad_map, fad_node_eval, fad_op_flags)
from fastad._sweeps cimport FORWARD, REVERSE, SECOND, Sweep, needed_mask, run, sweep_over, sz

cnp.import_array()

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <windows.h>
    static long long fastad_fetch_add(volatile long long* p, long long d) {
        return InterlockedExchangeAdd64(p, d);
    }
    #else
    static long long fastad_fetch_add(volatile long long* p, long long d) {
        return __atomic_fetch_add(p, d, __ATOMIC_RELAXED);
    }
    #endif
    """
    long long fastad_fetch_add(long long* p, long long d) nogil


# what a batch computes per point (the Tape method it stands for)
cdef enum:
    VALUE           # tape(x): the outputs
    GRAD            # tape.value_and_gradient(x): value, then gradient
    JVP             # tape.jvp(x, v): k tangents
    VJP             # tape.vjp(x, ybar): k cotangents
    HVP             # tape.hvp(x, v): k directions
    JAC_FWD         # tape.jacobian(x, "fwd")
    JAC_REV         # tape.jacobian(x, "rev")

# the same, for Python (fastad._batching, Tape._point_flat)
globals().update(VALUE=VALUE, GRAD=GRAD, JVP=JVP, VJP=VJP, HVP=HVP, JAC_FWD=JAC_FWD,
                 JAC_REV=JAC_REV)


cdef struct Job:
    int kind
    const uint8_t* op
    const fad_node* nd          # the recorded nodes (partials of a partial replay)
    const double* recorded      # recorded values: comparisons are checked against them
    const uint8_t* needed       # JVP: the forward mask of a replay of partials only
    const Py_ssize_t* outs      # output slots, flat
    Py_ssize_t n, lo, hi        # slots, inputs, sweep top (kind-dependent)
    Py_ssize_t m, k, slot       # outputs, lanes, the scalar output's slot
    Py_ssize_t width, chunk     # Jacobians: columns/rows, lanes per sweep
    Py_ssize_t b, block         # points, points taken at once
    Py_ssize_t lanes            # points swept side by side (0: one at a time)
    const double* X             # (b, lo)
    const double* S             # (b, k, lo) or (b, k, m)
    double* Y                   # results
    double* V                   # GRAD: values (b)
    int64_t* status             # per point: -1 replayed, else the changed comparison's slot
    long long next              # the next point to take (shared by the threads)


cdef struct Bufs:               # one thread's
    double* val
    fad_node* node
    double* adj
    double* tan
    double* adt
    double* lv                  # lanes: values, partials and adjoints, slot-major
    double* lp0
    double* lp1
    double* la                  # (zeros at rest)
    double* lt                  # HVP: tangents, and the adjoints' tangents
    double* ld
    double* s3                  # HVP: one node's second partials, 3 lanes' rows
    double* zero                # a lane's worth of zeros (unary ops' y)
    int64_t* fail


cdef Py_ssize_t _replay(const Job* j, Bufs* w, Py_ssize_t p) noexcept nogil:
    """Values and partials at point p into w (Player._replay, no blocks)."""
    if j.lo:
        memcpy(w.val, j.X + p * j.lo, j.lo * sizeof(double))
    cdef Sweep s = sweep_over(j.op, j.nd, 1, j.lo, j.n)
    s.recorded = j.recorded
    s.val = w.val
    s.out = w.node
    return run(FORWARD, &s)


cdef Py_ssize_t _point(const Job* j, Bufs* w, Py_ssize_t p) noexcept nogil:
    """One point: what the single-point method does, into row p of Y."""
    cdef Py_ssize_t lo = j.lo, k = j.k, m = j.m, hi = j.hi, r, i, q, o, c0, kk
    cdef Sweep s
    cdef double* y
    cdef const double* sd
    if j.kind == JVP:               # Player._replay_tangents (values=False)
        if lo:
            memcpy(w.val, j.X + p * lo, lo * sizeof(double))
        sd = j.S + p * k * lo
        for i in range(lo):
            for q in range(k):
                w.tan[i * k + q] = sd[q * lo + i]
        s = sweep_over(j.op, j.nd, k, lo, j.n)
        s.recorded = j.recorded
        s.val = w.val
        s.mask = j.needed
        s.tan = w.tan
        r = run(FORWARD, &s)
        if r >= 0:
            return r
        y = j.Y + p * k * m
        for q in range(k):
            for o in range(m):
                y[q * m + o] = w.tan[j.outs[o] * k + q]
        return -1
    r = _replay(j, w, p)
    if r >= 0:
        return r
    if j.kind == VALUE:             # Player._gather
        y = j.Y + p * m
        for o in range(m):
            y[o] = w.val[j.outs[o]]
    elif j.kind == GRAD:            # Tape.value_and_gradient, a tape of scalar nodes
        s = sweep_over(j.op, w.node, 1, lo, j.slot + 1)
        s.adj = w.adj
        s.clear = True
        w.adj[j.slot] += 1.0
        run(REVERSE, &s)
        memcpy(j.Y + p * lo, w.adj, lo * sizeof(double))
        memset(w.adj, 0, lo * sizeof(double))
        j.V[p] = w.val[j.slot]
    elif j.kind == VJP:             # Player._adjoints
        memset(w.adj, 0, hi * k * sizeof(double))
        sd = j.S + p * k * m
        for o in range(m):
            for q in range(k):
                w.adj[j.outs[o] * k + q] += sd[q * m + o]
        s = sweep_over(j.op, w.node, k, lo, hi)
        s.adj = w.adj
        run(REVERSE, &s)
        y = j.Y + p * k * lo
        for q in range(k):
            for i in range(lo):
                y[q * lo + i] = w.adj[i * k + q]
    elif j.kind == HVP:             # Tape._hvp_seeds
        sd = j.S + p * k * lo
        for i in range(lo):
            for q in range(k):
                w.tan[i * k + q] = sd[q * lo + i]
        s = sweep_over(j.op, w.node, k, lo, hi)
        s.tan = w.tan
        run(FORWARD, &s)
        memset(w.adj, 0, hi * sizeof(double))
        memset(w.adt, 0, hi * k * sizeof(double))
        w.adj[j.slot] = 1.0
        s = sweep_over(j.op, w.node, k, lo, hi)
        s.val = w.val
        s.tan = w.tan
        s.adj = w.adj
        s.adt = w.adt
        run(SECOND, &s)
        y = j.Y + p * k * lo
        for q in range(k):
            for i in range(lo):
                y[q * lo + i] = w.adt[i * k + q]
    elif j.kind == JAC_FWD:         # Tape._jacobian, mode "fwd": J (m, lo)
        y = j.Y + p * m * lo
        c0 = 0
        while c0 < j.width:
            kk = min(j.chunk, j.width - c0)
            for i in range(lo):
                for q in range(kk):
                    w.tan[i * kk + q] = 1.0 if i == c0 + q else 0.0
            s = sweep_over(j.op, w.node, kk, lo, hi)
            s.tan = w.tan
            run(FORWARD, &s)
            for o in range(m):
                for q in range(kk):
                    y[o * lo + c0 + q] = w.tan[j.outs[o] * kk + q]
            c0 += kk
    elif j.kind == JAC_REV:         # Tape._jacobian, mode "rev"
        y = j.Y + p * m * lo
        c0 = 0
        while c0 < j.width:
            kk = min(j.chunk, j.width - c0)
            memset(w.adj, 0, hi * kk * sizeof(double))
            for o in range(m):
                for q in range(kk):
                    w.adj[j.outs[o] * kk + q] += 1.0 if o == c0 + q else 0.0
            s = sweep_over(j.op, w.node, kk, lo, hi)
            s.adj = w.adj
            run(REVERSE, &s)
            for q in range(kk):
                for i in range(lo):
                    y[(c0 + q) * lo + i] = w.adj[i * kk + q]
            c0 += kk
    return -1


cdef void _lanes_second(const Job* j, Bufs* w, Py_ssize_t p0, Py_ssize_t cnt) noexcept nogil:
    """HVP's reverse sweep for the lanes of _lanes (values, partials and
    tangents in place): fastad._sweeps._second, one lane a point, in
    propagate mode; the second partials from the op table's loop over the
    lanes, used only where the single-point sweep computes them."""
    cdef Py_ssize_t L = j.lanes, lo = j.lo, hi = j.hi, i, q
    cdef const fad_node* nd = j.nd
    cdef double* lv = w.lv
    cdef double* lp0 = w.lp0
    cdef double* lp1 = w.lp1
    cdef double* adj = w.la
    cdef double* adt = w.ld
    cdef double* tan = w.lt
    cdef double* S0 = w.s3
    cdef double* S1 = w.s3 + L
    cdef double* S2 = w.s3 + 2 * L
    cdef double g, gd1, p, xx, xy, yy, tx, ty
    cdef int32_t a0, a1
    cdef int o
    cdef bint linear
    memset(adj, 0, hi * L * sizeof(double))
    memset(adt, 0, hi * L * sizeof(double))
    for q in range(L):
        adj[j.slot * L + q] = 1.0
    for i in range(hi - 1, lo - 1, -1):
        o = j.op[i]
        a0 = nd[i].a0
        a1 = nd[i].a1
        linear = (fad_op_flags[o] & (FAD_Z00 | FAD_Z01 | FAD_Z11)) == (FAD_Z00 | FAD_Z01 | FAD_Z11)
        if not linear:
            if a1 >= 0:
                fad_map(o, FAD_MAP_SECOND, L, lv + a0 * L, 1, lv + a1 * L, 1, 0.0,
                        lv + i * L, 1, S0, S1, S2)
            else:
                fad_map(o, FAD_MAP_SECOND, L, lv + a0 * L, 1, w.zero, 1, nd[i].c,
                        lv + i * L, 1, S0, S1, S2)
        for q in range(L):
            g = adj[i * L + q]
            gd1 = adt[i * L + q]
            if g == 0.0 and gd1 == 0.0:
                continue
            xx = xy = yy = 0.0
            if g != 0.0 and not linear:
                xx = S0[q]
                xy = S1[q]
                yy = S2[q]
            p = lp0[i * L + q]
            tx = tan[a0 * L + q]
            ty = tan[a1 * L + q] if a1 >= 0 else 0.0
            adj[a0 * L + q] += sz(p, g)
            if gd1 != 0.0:
                adt[a0 * L + q] += sz(p, gd1)
            if g != 0.0:
                if xx != 0.0 or xy != 0.0:
                    adt[a0 * L + q] += sz(g, sz(xx, tx) + sz(xy, ty))
            if a1 >= 0:
                p = lp1[i * L + q]
                adj[a1 * L + q] += sz(p, g)
                if gd1 != 0.0:
                    adt[a1 * L + q] += sz(p, gd1)
                if xy != 0.0 or yy != 0.0:
                    adt[a1 * L + q] += sz(g, sz(xy, tx) + sz(yy, ty))
    for q in range(cnt):
        j.status[p0 + q] = w.fail[q]
        for i in range(lo):
            j.Y[(p0 + q) * lo + i] = adt[i * L + q]


cdef void _lanes(const Job* j, Bufs* w, Py_ssize_t p0, Py_ssize_t cnt) noexcept nogil:
    """Points p0 .. p0+cnt-1 side by side (VALUE, GRAD; JVP and HVP with one
    direction a point): each node's op runs
    over the L lanes in one call of the op table's loop (fad_map), so the
    per-node dispatch is paid once for L points.  Per lane, the arithmetic
    and its order are the single-point replay's and reverse sweep's (same
    expressions; a lane's adjoints accumulate in the same node order, with
    the same strong-zero tests), so the results are the same bits.  Unused
    lanes (cnt < L) repeat the last point."""
    cdef Py_ssize_t L = j.lanes, lo = j.lo, i, q, o
    cdef const fad_node* nd = j.nd
    cdef double* lv = w.lv
    cdef double* lp0 = w.lp0
    cdef double* lp1 = w.lp1
    cdef double* la = w.la
    cdef double* g
    cdef double* src
    cdef double* xs
    cdef double* ys
    cdef double* vs
    cdef double* ps0
    cdef double* ps1
    cdef double gq, pp, r, t, d0, d1
    cdef const double* yv
    cdef int32_t a0, a1
    cdef double rec
    cdef bint jvp = j.kind == JVP or j.kind == HVP
    cdef double* lt = la if j.kind == JVP else w.lt     # tangents
    for q in range(L):
        w.fail[q] = -1
        yv = j.X + (p0 + min(q, cnt - 1)) * lo
        for i in range(lo):
            lv[i * L + q] = yv[i]
        if jvp:                         # one direction a point
            yv = j.S + (p0 + min(q, cnt - 1)) * lo
            for i in range(lo):
                lt[i * L + q] = yv[i]
    for i in range(lo, j.n):            # the replay (Player._forward_seg)
        a0 = nd[i].a0
        a1 = nd[i].a1
        o = j.op[i]
        if fad_op_flags[o] & FAD_HOT:   # the single-point replay's own inline switch
            xs = lv + a0 * L
            ys = lv + a1 * L if a1 >= 0 else w.zero
            vs = lv + i * L
            if j.kind == VALUE:
                for q in range(L):
                    vs[q] = fad_node_eval(o, xs[q], ys[q], nd[i].c, &d0, &d1)
            else:
                ps0 = lp0 + i * L
                ps1 = lp1 + i * L
                for q in range(L):
                    vs[q] = fad_node_eval(o, xs[q], ys[q], nd[i].c, &ps0[q], &ps1[q])
        else:
            fad_map(o, FAD_MAP_VALUES, L, lv + a0 * L, 1,
                    lv + a1 * L if a1 >= 0 else w.zero, 1, nd[i].c, NULL, 0,
                    lv + i * L, NULL if j.kind == VALUE else lp0 + i * L,
                    NULL if j.kind == VALUE else lp1 + i * L)
        if j.op[i] >= FAD_FIRST_CMP:
            rec = j.recorded[i]
            for q in range(L):
                if lv[i * L + q] != rec and w.fail[q] < 0:
                    w.fail[q] = i
        if jvp:                         # fastad._sweeps._tangent, one lane
            for q in range(L):
                r = 0.0
                t = lt[a0 * L + q] if a0 != i else 0.0
                pp = lp0[i * L + q]
                if t != 0.0 and pp != 0.0:
                    r = pp * t
                if a1 >= 0:
                    t = lt[a1 * L + q]
                    pp = lp1[i * L + q]
                    if t != 0.0 and pp != 0.0:
                        r += pp * t
                lt[i * L + q] = r
    if j.kind == HVP:
        _lanes_second(j, w, p0, cnt)
        return
    if j.kind == JVP or j.kind == VALUE:    # the outputs' tangents or values
        src = la if j.kind == JVP else lv
        for q in range(cnt):
            j.status[p0 + q] = w.fail[q]
            for o in range(j.m):
                j.Y[(p0 + q) * j.m + o] = src[j.outs[o] * L + q]
        return
    for q in range(L):                  # GRAD: Tape.value_and_gradient's reverse sweep
        la[j.slot * L + q] += 1.0
    for i in range(j.slot, lo - 1, -1):
        g = la + i * L
        a0 = nd[i].a0
        a1 = nd[i].a1
        for q in range(L):              # fastad._sweeps._pull, one lane, with clear
            gq = g[q]
            if gq == 0.0:
                continue
            if isfinite(gq):
                la[a0 * L + q] += lp0[i * L + q] * gq
                if a1 >= 0:
                    la[a1 * L + q] += lp1[i * L + q] * gq
            else:
                pp = lp0[i * L + q]
                la[a0 * L + q] += 0.0 if pp == 0.0 else pp * gq
                if a1 >= 0:
                    pp = lp1[i * L + q]
                    la[a1 * L + q] += 0.0 if pp == 0.0 else pp * gq
            g[q] = 0.0
    for q in range(cnt):
        j.status[p0 + q] = w.fail[q]
        j.V[p0 + q] = lv[j.slot * L + q]
        for i in range(lo):
            j.Y[(p0 + q) * lo + i] = la[i * L + q]
    memset(la, 0, lo * L * sizeof(double))


cdef void _points(Job* j, Bufs* w) noexcept nogil:
    """Take blocks of points until none is left."""
    cdef Py_ssize_t p0, p
    while True:
        p0 = <Py_ssize_t>fastad_fetch_add(&j.next, j.block)
        if p0 >= j.b:
            return
        if j.lanes:
            p = p0
            while p < min(p0 + j.block, j.b):
                _lanes(j, w, p, min(j.lanes, j.b - p))
                p += j.lanes
        else:
            for p in range(p0, min(p0 + j.block, j.b)):
                j.status[p] = _point(j, w, p)


cdef class _Worker:
    """One thread's buffers; run() sweeps its share of the batch without the GIL."""
    cdef Job* job
    cdef Bufs w
    cdef object owner       # keeps the arrays behind job alive

    def __dealloc__(self):
        free(self.w.val)
        free(self.w.node)
        free(self.w.adj)
        free(self.w.tan)
        free(self.w.adt)
        free(self.w.lv)
        free(self.w.lp0)
        free(self.w.lp1)
        free(self.w.la)
        free(self.w.zero)
        free(self.w.fail)
        free(self.w.lt)
        free(self.w.ld)
        free(self.w.s3)

    cdef int alloc(self, Py_ssize_t n, Py_ssize_t n_adj, Py_ssize_t n_tan,
                   Py_ssize_t n_adt) except -1:
        # at least one element each: malloc(0) may return NULL
        self.w.val = <double*>malloc(max(n, 1) * sizeof(double))
        self.w.node = <fad_node*>malloc(max(n, 1) * sizeof(fad_node))
        self.w.adj = <double*>calloc(max(n_adj, 1), sizeof(double))   # GRAD: zeros at rest
        self.w.tan = <double*>malloc(max(n_tan, 1) * sizeof(double))
        self.w.adt = <double*>malloc(max(n_adt, 1) * sizeof(double))
        if not (self.w.val and self.w.node and self.w.adj and self.w.tan and self.w.adt):
            raise MemoryError("fastad: not enough memory for the batch's work buffers")
        return 0

    cdef int alloc_lanes(self, Py_ssize_t n, Py_ssize_t L) except -1:
        self.w.lv = <double*>malloc(n * L * sizeof(double))
        self.w.lp0 = <double*>malloc(n * L * sizeof(double))
        self.w.lp1 = <double*>malloc(n * L * sizeof(double))
        self.w.la = <double*>calloc(n * L, sizeof(double))
        self.w.zero = <double*>calloc(L, sizeof(double))
        self.w.fail = <int64_t*>malloc(L * sizeof(int64_t))
        self.w.lt = <double*>malloc(n * L * sizeof(double))
        self.w.ld = <double*>malloc(n * L * sizeof(double))
        self.w.s3 = <double*>malloc(3 * L * sizeof(double))
        if not (self.w.lv and self.w.lp0 and self.w.lp1 and self.w.la and self.w.zero
                and self.w.fail and self.w.lt and self.w.ld and self.w.s3):
            raise MemoryError("fastad: not enough memory for the batch's work buffers")
        return 0

    def run(self):
        with nogil:
            _points(self.job, &self.w)


cdef object _c(object a, dtype=np.float64):
    return np.ascontiguousarray(a, dtype=dtype)


# Points swept side by side by VALUE, GRAD, JVP and HVP (k = 1): enough to pay a node's
# dispatch once for several points, few enough that a thread's lane buffers
# (48 bytes per slot and lane) stay in cache on tapes of some 10^4 nodes.
cdef Py_ssize_t DEF_LANES = 8
# per thread; larger tapes sweep one point at a time (their nodes no longer
# fit a cache anyway, and a lane buffer would multiply the replay's memory)
cdef Py_ssize_t LANE_BYTES = 32 * 1024 * 1024


def run_batch(Player tape, int kind, X, S=None, Py_ssize_t workers=1, Py_ssize_t chunk=0,
              Py_ssize_t lanes=-1):
    """Sweep the batch: X (b, n_inputs) float64; S the seeds (b, k, n_inputs)
    (JVP, HVP) or (b, k, n_outputs) (VJP).  Returns (Y, V, status): Y the
    results (VALUE (b, m); GRAD (b, n_inputs) and the values V (b,); JVP
    (b, k, m); VJP, HVP (b, k, n_inputs); JAC_* (b, m, n_inputs)), status
    (b,) int64: -1 where the point replayed, else the slot of the recorded
    comparison that came out otherwise (that point's row of Y is garbage).
    For tapes of scalar nodes only (no blocks); chunk: Jacobian lanes per
    sweep; lanes: points side by side for VALUE, GRAD, and JVP and HVP with one
    direction a point (-1: DEF_LANES, 0:
    one point at a time; the same results either way)."""
    if tape.blocks:
        raise ValueError("fastad: run_batch is for tapes of scalar nodes (no array blocks)")
    cdef cnp.ndarray Xa = _c(X)
    cdef Py_ssize_t lo = tape.n_inputs, n = tape.buf.n
    if Xa.ndim != 2 or Xa.shape[1] != lo:
        raise ValueError(f"fastad: X must be (b, {lo}), got {np.shape(Xa)}")
    cdef Py_ssize_t b = Xa.shape[0]
    cdef cnp.ndarray outs = _c(tape._out.reshape(-1), np.intp)
    cdef Py_ssize_t m = outs.shape[0], k = 1, hi = 0, slot = 0
    cdef Py_ssize_t n_adj = 0, n_tan = 0, n_adt = 0
    cdef cnp.ndarray Sa = None, Y, V = None
    if kind in (JVP, VJP, HVP):
        Sa = _c(S)
        if Sa.ndim != 3 or Sa.shape[0] != b or Sa.shape[2] != (m if kind == VJP else lo):
            raise ValueError(f"fastad: bad seeds' shape {np.shape(Sa)}")
        k = Sa.shape[1]
    if m and kind != HVP:
        hi = max(lo, int(outs.max()) + 1)       # Recorder._out_hi, no blocks
    else:
        hi = lo
    if kind == GRAD or kind == HVP:
        if tape._out.ndim != 0:
            raise ValueError("fastad: a gradient or Hessian needs a scalar output")
        slot = int(outs[0])
        if kind == HVP:
            hi = max(slot + 1, lo)
    if kind == VALUE:
        Y = np.empty((b, m))
    elif kind == GRAD:
        Y = np.empty((b, lo))
        V = np.empty(b)
        n_adj = n
    elif kind == JVP:
        Y = np.empty((b, k, m))
        n_tan = max(n, lo) * k
        if tape._needed is None:
            tape._needed = np.empty(max(n, 1), dtype=np.uint8)
            needed_mask(tape.buf.op, tape.buf.node,
                        <uint8_t*>cnp.PyArray_DATA(tape._needed), lo, n)
    elif kind == VJP:
        Y = np.empty((b, k, lo))
        n_adj = hi * k
    elif kind == HVP:
        Y = np.empty((b, k, lo))
        n_tan = n_adt = hi * k
        n_adj = hi
    elif kind == JAC_FWD or kind == JAC_REV:
        Y = np.empty((b, m, lo))
        if chunk < 1:
            raise ValueError("fastad: chunk must be positive")
        if kind == JAC_FWD:
            n_tan = hi * min(chunk, max(lo, 1))
        else:
            n_adj = hi * min(chunk, max(m, 1))
    else:
        raise ValueError(f"fastad: unknown batch kind {kind}")
    cdef cnp.ndarray status = np.full(b, -1, dtype=np.int64)
    if b == 0:
        return Y, V, status
    cdef Job job
    memset(&job, 0, sizeof(Job))
    job.kind = kind
    job.op = tape.buf.op
    job.nd = tape.buf.node
    job.recorded = tape.buf.val
    job.needed = <const uint8_t*>cnp.PyArray_DATA(tape._needed) if kind == JVP else NULL
    job.outs = <const Py_ssize_t*>cnp.PyArray_DATA(outs)
    job.n = n
    job.lo = lo
    job.hi = hi
    job.m = m
    job.k = k
    job.slot = slot
    job.width = lo if kind == JAC_FWD else m
    job.chunk = chunk
    job.b = b
    job.X = <const double*>cnp.PyArray_DATA(Xa)
    job.S = <const double*>cnp.PyArray_DATA(Sa) if Sa is not None else NULL
    job.Y = <double*>cnp.PyArray_DATA(Y)
    job.V = <double*>cnp.PyArray_DATA(V) if V is not None else NULL
    job.status = <int64_t*>cnp.PyArray_DATA(status)
    job.next = 0
    if lanes < 0:           # lane buffers (48 bytes a slot and lane) of at most LANE_BYTES
        lanes = min(DEF_LANES, LANE_BYTES // (48 * max(n, 1)))
    job.lanes = lanes if (kind == VALUE or kind == GRAD or ((kind == JVP or kind == HVP)
                                                            and k == 1)) and lanes > 1 else 0
    workers = max(1, min(workers, b))
    # blocks of points small enough to balance the threads, large enough that
    # the shared counter is touched rarely (with lanes: whole lane groups)
    job.block = max(1, min(64, b // (8 * workers)))
    if job.lanes:
        job.block = max(1, (job.block + job.lanes - 1) // job.lanes) * job.lanes
    cdef list pool = []
    cdef _Worker wk
    for _ in range(workers):
        wk = _Worker()
        wk.alloc(max(n, lo), n_adj, n_tan, n_adt)
        if job.lanes:
            wk.alloc_lanes(max(n, lo, 1), job.lanes)
        wk.job = &job
        wk.owner = (tape, Xa, Sa, Y, V, status, outs)
        pool.append(wk)
    threads = [threading.Thread(target=w.run, daemon=True) for w in pool[1:]]
    try:
        for t in threads:
            t.start()
    finally:
        (<_Worker>pool[0]).run()        # this thread takes its share too
        for t in threads:
            if t.ident is not None:
                t.join()
    return Y, V, status
