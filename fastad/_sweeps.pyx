# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The scalar sweeps: loops over the tape's node arrays, with no Python.

Three sweeps, as in CppAD's forward, reverse and forward-over-reverse
sweeps, each one kernel for any number k of directions (lanes):

  FORWARD  a replay (values and partials from the op table, comparisons
           checked against the recorded outcome) and/or k tangent lanes;
           a per-slot mask restricts it (a replay of partials only, a
           sparse Jacobian's folded sweep)
  REVERSE  k adjoint lanes pulled back through the partials
  SECOND   adjoints and their k tangents (Hessian-vector products), the
           second partials from the op table or a cache

run() is the one dispatch: it picks the kernel's specialization for the
sweep's mode and lane count from a table.  For k = 1 .. 4 the lane count is
a compile-time constant of the specialization, so the compiler unrolls the
lane loops, and k = 1 has single-lane steps.  Every product of a partial and
a lane obeys the strong-zero rule (sz, _sweeps.pxd).  The Tape
(fastad._tape) owns the buffers, and runs the blocks in between.
"""
from libc.string cimport memset
from libc.stdint cimport int32_t, uint8_t

from fastad._ops cimport *      # fad_eval, fad_second, fad_op_flags, FAD_*


# Compile-time parameters of the kernels, as fused-type tags: one C function
# per combination used.  Lanes: k = 1 .. 4 a constant, or k from the Sweep.
# The modes pick what a sweep reads and writes, so a loop carries no code it
# does not run.  The tags are one C type, so all specializations share one
# C signature and sit in one table.
cdef extern from *:
    """
    struct fad_sweep_tag;
    typedef struct fad_sweep_tag fad_lanes1, fad_lanes2, fad_lanes3, fad_lanes4, fad_lanesk,
        fad_replay, fad_tangents, fad_both, fad_masked, fad_pull,
        fad_propagate, fad_known, fad_cached;
    """
    ctypedef struct fad_lanes1:
        pass
    ctypedef struct fad_lanes2:
        pass
    ctypedef struct fad_lanes3:
        pass
    ctypedef struct fad_lanes4:
        pass
    ctypedef struct fad_lanesk:
        pass
    ctypedef struct fad_replay:       # FORWARD: values and partials (into out)
        pass
    ctypedef struct fad_tangents:     # FORWARD: tangents, from the partials in nd
        pass
    ctypedef struct fad_both:         # FORWARD: values, partials (into out) and tangents
        pass
    ctypedef struct fad_masked:       # FORWARD: what the mask says, per slot
        pass
    ctypedef struct fad_pull:         # REVERSE
        pass
    ctypedef struct fad_propagate:    # SECOND: adjoints and their tangents
        pass
    ctypedef struct fad_known:        # SECOND: the adjoints' tangents, the adjoints given
        pass
    ctypedef struct fad_cached:       # SECOND: ... and the second partials given
        pass

# One lane, threaded code (GCC, Clang): the replay with its tangent pushed
# along (forward BOTH, k = 1) and the forward-over-reverse sweep (SECOND
# propagate, k = 1), each op's code specialized from the op table as
# fad_replay_nodes does: an op's vanishing second partials (FAD_Z*) and
# its arity are compile-time constants, so mul's curvature step is two
# products and add's none.  Elsewhere the Cython kernels below serve.
cdef extern from *:
    """
    #include "fastad_ops.h"
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(FAD_PORTABLE_DISPATCH)
    #define FAD_THREADED_SWEEPS 1
    #define FAD_SZ1_(p, q) ((((p) == 0.0) | ((q) == 0.0)) ? 0.0 : (p) * (q))

    /* val, out, tng[i] for i = lo .. hi-1: fad_replay_nodes plus
       tng[i] = sz(d0, tng[a0]) + sz(d1, tng[a1]) (no tangent where the
       partials vanish by definition: constants, comparisons); z0[i] and
       z1[i] zeroed on the way unless NULL (the second-order sweep's
       accumulators: cheaper here, in the pass, than a memset of their own).
       Returns -1 or the first comparison slot whose outcome changed. */
    static ptrdiff_t fad_replay_tangent_nodes(const uint8_t *op, const fad_node *nd,
                                              const double *recorded, double *val,
                                              fad_node *out, double *tng,
                                              double *z0, double *z1,
                                              ptrdiff_t lo, ptrdiff_t hi)
    {
        ptrdiff_t i = lo;
        double x, y, v, d0, d1, t;
        int32_t a0, a1;
    #define FAD_TARGET_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) [FAD_##E] = &&fad_rt_##E,
        static const void *const target[256] = {
            [0 ... 255] = &&fad_rt_cold,
            FAD_OPS(FAD_TARGET_)
        };
    #undef FAD_TARGET_
    #define FAD_RT_NEXT_                                                           \\
        val[i] = v; out[i].p0 = d0; out[i].p1 = d1; out[i].a0 = a0; out[i].a1 = a1; \\
        tng[i] = t;                                                                \\
        if (z0 != NULL) { z0[i] = 0.0; z1[i] = 0.0; }                              \\
        if (++i >= hi) return -1;                                                  \\
        a0 = nd[i].a0; a1 = nd[i].a1;                                              \\
        goto *target[op[i]];
    #define FAD_RT_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                         \\
        fad_rt_##E:                                                                \\
        if ((fl) & FAD_HOT) {                                                      \\
            const double c = nd[i].c;                                              \\
            x = val[a0];                                                           \\
            y = ((fl) & FAD_BINARY) ? val[a1] : 0.0;                               \\
            v = (V); d0 = (D0); d1 = ((fl) & FAD_BINARY) ? (D1) : c;               \\
            (void)c; (void)y;                                                      \\
            if (((fl) & FAD_CMP) && v != recorded[i]) return i;                    \\
            if ((fl) & FAD_ZD) t = 0.0;                                            \\
            else if ((fl) & FAD_BINARY)                                            \\
                t = FAD_SZ1_(d0, tng[a0]) + FAD_SZ1_(d1, tng[a1]);                 \\
            else t = FAD_SZ1_(d0, tng[a0]);                                        \\
            FAD_RT_NEXT_                                                           \\
        }                                                                          \\
        goto fad_rt_cold;
        if (i >= hi) return -1;
        a0 = nd[i].a0; a1 = nd[i].a1;
        goto *target[op[i]];
        FAD_OPS(FAD_RT_)
    fad_rt_cold:
        {
            double q0, q1;
            int o = op[i];
            x = val[a0];
            y = (a1 >= 0) ? val[a1] : 0.0;
            v = fad_node_eval_all(o, x, y, nd[i].c, &q0, &q1);
            if (o >= FAD_FIRST_CMP && v != recorded[i]) return i;
            d0 = q0;
            d1 = q1;
            t = (a0 != i) ? FAD_SZ1_(d0, tng[a0]) : 0.0;   /* (a constant reads itself) */
            if (a1 >= 0) t += FAD_SZ1_(d1, tng[a1]);
        }
        FAD_RT_NEXT_
    #undef FAD_RT_
    #undef FAD_RT_NEXT_
    }

    /* Forward-over-reverse with one lane for i = hi-1 down to lo (see
       _second): adj the adjoints, adt their tangents, tan the forward
       tangents; a slot with zero adjoint and zero tangent is skipped, and
       so is every op whose partials vanish by definition.  The additions
       keep the Cython kernel's order. */
    static void fad_second_nodes(const uint8_t *op, const fad_node *nd, const double *val,
                                 const double *tng, double *adj, double *adt,
                                 ptrdiff_t lo, ptrdiff_t hi)
    {
        ptrdiff_t i = hi;
        double g, gd, p0, p1, tx, ty, xx, xy, yy;
        int32_t a0, a1;
    #define FAD_TARGET_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) [FAD_##E] = &&fad_so_##E,
        static const void *const target[256] = {
            [0 ... 255] = &&fad_so_cold,
            FAD_OPS(FAD_TARGET_)
        };
    #undef FAD_TARGET_
    #define FAD_SO_NEXT_                                                           \\
        for (;;) {                                                                 \\
            if (--i < lo) return;                                                  \\
            g = adj[i]; gd = adt[i];                                               \\
            if (g != 0.0 || gd != 0.0) break;                                      \\
        }                                                                          \\
        goto *target[op[i]];
    /* the updates of operand a (partial p, curvature s0 tx + s1 ty) */
    #define FAD_SO_PUSH_(a, p, s0, s1)                                             \\
        adj[a] += FAD_SZ1_(p, g);                                                  \\
        if (gd != 0.0) adt[a] += FAD_SZ1_(p, gd);                                  \\
        if (g != 0.0 && ((s0) != 0.0 || (s1) != 0.0))                              \\
            adt[a] += FAD_SZ1_(g, FAD_SZ1_(s0, tx) + FAD_SZ1_(s1, ty));
    #define FAD_SO_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                         \\
        fad_so_##E:                                                                \\
        if ((fl) & FAD_HOT) {                                                      \\
            if (!((fl) & FAD_ZD)) {                                                \\
                a0 = nd[i].a0;                                                     \\
                p0 = nd[i].p0;                                                     \\
                a1 = ((fl) & FAD_BINARY) ? nd[i].a1 : 0;                           \\
                xx = xy = yy = 0.0;                                                \\
                if ((~(fl) & FAD_LIN) && g != 0.0) {                               \\
                    const double x = val[a0];                                      \\
                    const double y = ((fl) & FAD_BINARY) ? val[a1] : 0.0;          \\
                    const double c = ((fl) & FAD_BINARY) ? 0.0 : nd[i].c;          \\
                    const double v = val[i];                                       \\
                    (void)x; (void)y; (void)c; (void)v;                            \\
                    xx = ((fl) & FAD_Z00) ? 0.0 : (XX);                            \\
                    xy = ((fl) & FAD_Z01) ? 0.0 : (XY);                            \\
                    yy = ((fl) & FAD_Z11) ? 0.0 : (YY);                            \\
                }                                                                  \\
                tx = tng[a0];                                                      \\
                ty = ((fl) & FAD_BINARY) ? tng[a1] : 0.0;                          \\
                FAD_SO_PUSH_(a0, p0, xx, xy)                                       \\
                if ((fl) & FAD_BINARY) {                                           \\
                    p1 = nd[i].p1;                                                 \\
                    FAD_SO_PUSH_(a1, p1, xy, yy)                                   \\
                }                                                                  \\
            }                                                                      \\
            FAD_SO_NEXT_                                                           \\
        }                                                                          \\
        goto fad_so_cold;
        FAD_SO_NEXT_
        FAD_OPS(FAD_SO_)
    fad_so_cold:
        {
            int o = op[i];
            a0 = nd[i].a0;
            a1 = nd[i].a1;
            p0 = nd[i].p0;
            xx = xy = yy = 0.0;
            if (g != 0.0 && (fad_op_flags[o] & FAD_LIN) != FAD_LIN) {
                double q0, q1, q2;
                fad_second_all(o, val[a0], (a1 >= 0) ? val[a1] : 0.0,
                               (a1 >= 0) ? 0.0 : nd[i].c, val[i], &q0, &q1, &q2);
                xx = q0; xy = q1; yy = q2;
            }
            tx = tng[a0];
            ty = (a1 >= 0) ? tng[a1] : 0.0;
            FAD_SO_PUSH_(a0, p0, xx, xy)
            if (a1 >= 0) {
                p1 = nd[i].p1;
                FAD_SO_PUSH_(a1, p1, xy, yy)
            }
        }
        FAD_SO_NEXT_
    #undef FAD_SO_
    #undef FAD_SO_PUSH_
    #undef FAD_SO_NEXT_
    }
    #else
    #define FAD_THREADED_SWEEPS 0
    static ptrdiff_t fad_replay_tangent_nodes(const uint8_t *op, const fad_node *nd,
                                              const double *recorded, double *val,
                                              fad_node *out, double *tng,
                                              double *z0, double *z1,
                                              ptrdiff_t lo, ptrdiff_t hi) { return -1; }
    static void fad_second_nodes(const uint8_t *op, const fad_node *nd, const double *val,
                                 const double *tng, double *adj, double *adt,
                                 ptrdiff_t lo, ptrdiff_t hi) { }
    #endif
    """
    enum:
        FAD_THREADED_SWEEPS
    Py_ssize_t fad_replay_tangent_nodes(const uint8_t* op, const fad_node* nd,
                                        const double* recorded, double* val, fad_node* out,
                                        double* tan, double* z0, double* z1,
                                        Py_ssize_t lo, Py_ssize_t hi) nogil
    void fad_second_nodes(const uint8_t* op, const fad_node* nd, const double* val,
                          const double* tan, double* adj, double* adt,
                          Py_ssize_t lo, Py_ssize_t hi) nogil


ctypedef fused Lanes:
    fad_lanes1
    fad_lanes2
    fad_lanes3
    fad_lanes4
    fad_lanesk

ctypedef fused Forward:             # (a replay alone: _replay, below)
    fad_tangents
    fad_both
    fad_masked

ctypedef fused Second:
    fad_propagate
    fad_known
    fad_cached


cdef inline Py_ssize_t _lanes(Lanes* tag, Py_ssize_t k) noexcept nogil:
    if Lanes is fad_lanes1:
        return 1
    elif Lanes is fad_lanes2:
        return 2
    elif Lanes is fad_lanes3:
        return 3
    elif Lanes is fad_lanes4:
        return 4
    else:
        return k


cdef inline bint _linear(int o) noexcept nogil:
    """All second partials of op o vanish identically."""
    return (fad_op_flags[o] & (FAD_Z00 | FAD_Z01 | FAD_Z11)) == (FAD_Z00 | FAD_Z01 | FAD_Z11)


# ---------------------------------------------------------------- dispatch

cdef Sweep sweep_over(const uint8_t* op, const fad_node* nd, Py_ssize_t k,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """A Sweep of slots lo .. hi-1 with k lanes and no buffers yet."""
    cdef Sweep s
    memset(&s, 0, sizeof(Sweep))
    s.op = op
    s.nd = nd
    s.k = k
    s.lo = lo
    s.hi = hi
    return s


ctypedef Py_ssize_t (*kernel_fn)(fad_lanes1*, fad_replay*, const Sweep*) noexcept nogil

cdef enum:                  # the table's rows: a kernel in one mode
    REPLAY, TANGENTS, BOTH, MASKED, PULL, PROPAGATE, KNOWN, CACHED, N_MODES

# [mode][k if k <= 4 else 0]; called only through here, so each
# specialization stays its own function with its helpers inlined
cdef kernel_fn _KERNELS[N_MODES][5]


cdef void _register(Lanes* lanes, int col) noexcept:
    _KERNELS[REPLAY][col] = <kernel_fn>_replay                          # (no lanes)
    _KERNELS[TANGENTS][col] = <kernel_fn>_forward[Lanes, fad_tangents]
    _KERNELS[BOTH][col] = <kernel_fn>_forward[Lanes, fad_both]
    _KERNELS[MASKED][col] = <kernel_fn>_forward[Lanes, fad_masked]
    _KERNELS[PULL][col] = <kernel_fn>_reverse[Lanes]
    _KERNELS[PROPAGATE][col] = <kernel_fn>_second[Lanes, fad_propagate]
    _KERNELS[KNOWN][col] = <kernel_fn>_second[Lanes, fad_known]
    _KERNELS[CACHED][col] = <kernel_fn>_second[Lanes, fad_cached]


_register(<fad_lanesk*>NULL, 0)
_register(<fad_lanes1*>NULL, 1)
_register(<fad_lanes2*>NULL, 2)
_register(<fad_lanes3*>NULL, 3)
_register(<fad_lanes4*>NULL, 4)


cdef Py_ssize_t run(Kernel kernel, Sweep* s) noexcept nogil:
    """Run a sweep.  Returns -1, or (FORWARD with values) the first
    comparison slot whose outcome differs from the recorded one."""
    cdef int mode
    if s.hi <= s.lo:
        return -1
    if kernel == FORWARD:
        mode = MASKED if s.mask != NULL else (REPLAY if s.tan == NULL else
                                               (TANGENTS if s.val == NULL else BOTH))
        if mode == BOTH and s.k == 1 and s.out != NULL and FAD_THREADED_SWEEPS:
            # (adj and adt given: zeroed on the way, for a second-order sweep)
            return fad_replay_tangent_nodes(s.op, s.nd, s.recorded, s.val, s.out, s.tan,
                                            s.adj, s.adt if s.adj != NULL else NULL,
                                            s.lo, s.hi)
    elif kernel == REVERSE:
        mode = PULL
    else:
        mode = CACHED if s.second != NULL else (KNOWN if s.adj_known else PROPAGATE)
        if mode == PROPAGATE and s.k == 1 and FAD_THREADED_SWEEPS:
            fad_second_nodes(s.op, s.nd, s.val, s.tan, s.adj, s.adt, s.lo, s.hi)
            return -1
    return _KERNELS[mode][s.k if s.k <= 4 else 0](NULL, NULL, s)


cdef Py_ssize_t run_released(Kernel kernel, Sweep* s) noexcept:
    """run, with the GIL released when the sweep is long (called holding it)."""
    cdef Py_ssize_t r
    if (s.hi - s.lo) * s.k >= NOGIL_MIN:
        with nogil:
            r = run(kernel, s)
        return r
    return run(kernel, s)


# ---------------------------------------------------------------- forward

cdef Py_ssize_t _replay(fad_lanes1* lanes, fad_replay* mode, const Sweep* s) noexcept nogil:
    """Values and partials (into out) of slots lo .. hi-1, comparisons checked:
    the op table's own replay loop (threaded code; see fad_replay_nodes).
    Returns -1 or the first comparison slot that changed."""
    return fad_replay_nodes(s.op, s.nd, s.recorded, s.val, s.out, s.lo, s.hi)


cdef inline void _tangent(Lanes* lanes, double* tan, Py_ssize_t k, Py_ssize_t i,
                          int32_t a0, double d0, int32_t a1, double d1) noexcept nogil:
    """tan[i] = sz(d0, tan[a0]) + sz(d1, tan[a1]) over the lanes.  A CONST
    reads itself and has no tangent; a comparison's partials are zeros
    (FAD_ZD), so its tangent is an exact zero."""
    cdef double r, t
    if Lanes is fad_lanes1:
        r = 0.0
        t = tan[a0] if a0 != i else 0.0
        if t != 0.0 and d0 != 0.0:
            r = d0 * t
        if a1 >= 0:
            t = tan[a1]
            if t != 0.0 and d1 != 0.0:
                r += d1 * t
        tan[i] = r
    else:
        sz_lanes(tan + i * k, d0 if a0 != i else 0.0, tan + a0 * k, d1 if a1 >= 0 else 0.0,
                 tan + (a1 if a1 >= 0 else a0) * k, k)


cdef Py_ssize_t _forward(Lanes* lanes, Forward* mode, const Sweep* s) noexcept nogil:
    """For i = lo .. hi-1: the value val[i] and partials (d0, d1) from the
    op table, written to out (both; masked: where SWEEP_VALUE, the
    recorded partials elsewhere), and the tangent lanes
    tan[i] = d0 tan[a0] + d1 tan[a1] (tangents, both; masked: where
    SWEEP_TANGENT).  Returns -1 or the first comparison slot that changed."""
    cdef Py_ssize_t k = _lanes(lanes, s.k), i
    cdef const uint8_t* op = s.op
    cdef const fad_node* nd = s.nd
    cdef const uint8_t* mask = s.mask
    cdef const double* recorded = s.recorded
    cdef double* val = s.val
    cdef fad_node* out = s.out
    cdef double* tan = s.tan
    cdef uint8_t m = SWEEP_VALUE | SWEEP_TANGENT
    cdef int o
    cdef int32_t a0, a1
    cdef double v, d0, d1
    for i in range(s.lo, s.hi):
        if Forward is fad_masked:
            m = mask[i]
            if m == 0:
                continue
        a0 = nd[i].a0
        a1 = nd[i].a1
        if Forward is fad_tangents or (Forward is fad_masked and not m & SWEEP_VALUE):
            d0 = nd[i].p0                   # the partials at hand
            d1 = nd[i].p1
        else:
            o = op[i]
            # (d1 is c for a unary node: what its node stores there)
            v = fad_node_eval(o, val[a0], val[a1] if a1 >= 0 else 0.0, nd[i].c, &d0, &d1)
            if o >= FAD_FIRST_CMP and v != recorded[i]:
                return i
            val[i] = v
            if Forward is not fad_masked:
                out[i].p0 = d0
                out[i].p1 = d1
                out[i].a0 = a0
                out[i].a1 = a1
        if m & SWEEP_TANGENT:
            _tangent(lanes, tan, k, i, a0, d0, a1, d1)
    return -1


cdef void needed_mask(const uint8_t* op, const fad_node* nd, uint8_t* mask,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """The forward mask of a replay that wants tangents only: every slot
    pushes its tangent, and computes its value (SWEEP_VALUE) only where its
    partials depend on values (not FAD_CP), it is a comparison (re-checked)
    or another such slot reads it; the other slots' partials are the
    recorded ones.  Slots below lo (inputs) are 0."""
    cdef Py_ssize_t i
    cdef int o, fl
    cdef int32_t a0, a1
    for i in range(hi):
        mask[i] = 0                     # 4 while sweeping: a value someone reads
    for i in range(hi - 1, lo - 1, -1):
        o = op[i]
        if o == FAD_BLOCK:
            continue
        fl = fad_op_flags[o]
        if mask[i] & 4 or not (fl & FAD_CP) or o >= FAD_FIRST_CMP:
            mask[i] |= SWEEP_VALUE
            a0 = nd[i].a0
            a1 = nd[i].a1
            if a0 >= 0 and a0 != i:
                mask[a0] |= 4
            if a1 >= 0 and fl & FAD_BINARY:
                mask[a1] |= 4
    for i in range(hi):
        mask[i] = 0 if i < lo else (mask[i] & SWEEP_VALUE) | SWEEP_TANGENT


cdef void fold_mask(const uint8_t* op, const fad_node* nd, uint8_t* mask, uint8_t* fixed,
                    const Py_ssize_t* outs, Py_ssize_t n_outs, Py_ssize_t lo,
                    Py_ssize_t n) noexcept nogil:
    """The forward mask of a sweep with fixed seeds at a new point (a sparse
    Jacobian's folded sweep; fastad._fold).  A node with constant partials
    whose operands have fixed tangents has a fixed tangent (the seeds alone
    decide it); only the other nodes an output needs push lanes
    (SWEEP_TANGENT), and only values their partials or a comparison read
    are computed (SWEEP_VALUE)."""
    cdef Py_ssize_t i, j
    cdef int o, fl
    cdef int32_t a0, a1
    for i in range(lo):
        fixed[i] = 1
        mask[i] = 0
    for i in range(lo, n):
        mask[i] = 0
        o = op[i]
        fl = fad_op_flags[o]
        a0 = nd[i].a0
        a1 = nd[i].a1
        if o == FAD_CONST or o >= FAD_FIRST_CMP:
            fixed[i] = 1                                  # no tangent at all
        elif fl & FAD_CP:
            fixed[i] = fixed[a0] and not (a1 >= 0 and fl & FAD_BINARY and not fixed[a1])
        else:
            fixed[i] = 0
    for j in range(n_outs):
        mask[outs[j]] |= 4                                # 4: an output needs its tangent
    for i in range(n - 1, lo - 1, -1):
        o = op[i]
        fl = fad_op_flags[o]
        a0 = nd[i].a0
        a1 = nd[i].a1
        if mask[i] & 4 and not fixed[i]:
            mask[i] |= SWEEP_TANGENT
            mask[a0] |= 4
            if a1 >= 0 and fl & FAD_BINARY:
                mask[a1] |= 4
            if not (fl & FAD_CP):
                mask[i] |= SWEEP_VALUE
        if o >= FAD_FIRST_CMP:
            mask[i] |= SWEEP_VALUE
        if mask[i] & SWEEP_VALUE and a0 != i:
            mask[a0] |= SWEEP_VALUE
            if a1 >= 0 and fl & FAD_BINARY:
                mask[a1] |= SWEEP_VALUE
    for i in range(n):
        mask[i] = 0 if i < lo else mask[i] & (SWEEP_VALUE | SWEEP_TANGENT)


# ---------------------------------------------------------------- reverse

cdef inline void _pull(Lanes* lanes, const fad_node* nd, double* adj, Py_ssize_t k,
                       Py_ssize_t i, bint clear) noexcept nogil:
    """Row i of adj (k lanes) pulled back: adj[a0] += sz(p0, adj[i]),
    adj[a1] += sz(p1, adj[i]); a zero row is skipped.  With clear, row i is
    zeroed after (after: a CONST points a0 at itself)."""
    cdef double* g = adj + i * k
    cdef double g1
    cdef Py_ssize_t j
    cdef int32_t a1
    if Lanes is fad_lanes1:
        g1 = g[0]
        if g1 == 0.0:
            return
        a1 = nd[i].a1
        if isfinite(g1):                # then sz(p, g1) is p g1
            adj[nd[i].a0] += nd[i].p0 * g1
            if a1 >= 0:
                adj[a1] += nd[i].p1 * g1
        else:
            adj[nd[i].a0] += sz(nd[i].p0, g1)
            if a1 >= 0:
                adj[a1] += sz(nd[i].p1, g1)
    else:
        for j in range(k):
            if g[j] != 0.0:
                break
        else:
            return
        sz_axpy(adj + nd[i].a0 * k, nd[i].p0, g, k)
        a1 = nd[i].a1
        if a1 >= 0:
            sz_axpy(adj + a1 * k, nd[i].p1, g, k)
    if clear:
        for j in range(k):
            g[j] = 0.0


cdef Py_ssize_t _reverse(Lanes* lanes, fad_pull* mode, const Sweep* s) noexcept nogil:
    """adj[a] += p adj[i] (k lanes) for i = hi-1 down to lo.  A zero row
    is skipped, so an unselected branch contributes an exact zero even where
    its own partial is inf or NaN.  With `clear`, each row is zeroed once
    pulled back (a gradient then leaves adj as it found it, all zeros)."""
    cdef Py_ssize_t k = _lanes(lanes, s.k), i
    cdef const fad_node* nd = s.nd
    cdef double* adj = s.adj
    if s.clear:
        for i in range(s.hi - 1, s.lo - 1, -1):
            _pull(lanes, nd, adj, k, i, True)
    else:
        for i in range(s.hi - 1, s.lo - 1, -1):
            _pull(lanes, nd, adj, k, i, False)
    return -1


# ---------------------------------------------------------------- second order

cdef void second_partials(const uint8_t* op, const fad_node* nd, const double* val,
                          double* S, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """S[3i:3i+3] = (f_xx, f_xy, f_yy) of node i, zero for linear ops."""
    cdef Py_ssize_t i
    cdef int o
    cdef int32_t a1
    for i in range(lo, hi):
        o = op[i]
        S[3 * i] = S[3 * i + 1] = S[3 * i + 2] = 0.0
        if _linear(o):
            continue
        a1 = nd[i].a1
        if a1 >= 0:
            fad_second(o, val[nd[i].a0], val[a1], 0.0, val[i], &S[3 * i], &S[3 * i + 1], &S[3 * i + 2])
        else:
            fad_second(o, val[nd[i].a0], 0.0, nd[i].c, val[i], &S[3 * i], &S[3 * i + 1], &S[3 * i + 2])


cdef Py_ssize_t _second(Lanes* lanes, Second* mode, const Sweep* s) noexcept nogil:
    """Forward-over-reverse for i = hi-1 down to lo: for z = f(x, y),

        xbar  += f_x zbar
        xbar' += f_x zbar' + zbar (f_xx x' + f_xy y')      (and so for y)

    with zbar the adjoint (adj, one lane), zbar' its k tangents (adt) and
    x', y' the forward tangents (tan); the second partials come from the op
    table at val (propagate, known) or from `second` (cached).  The adjoints
    are the gradient and their tangents H v.  Known, cached: adj holds every
    adjoint already and only adt moves.  (Each mode keeps its order of
    additions.)  Every product obeys the strong-zero rule
    (sz), as the first-order sweeps do: an inf adjoint (sqrt'(0) upstream)
    passes nothing through a zero partial or a zero curvature term, so the
    Hessian stays symmetric and its gradient agrees with the first-order one."""
    cdef Py_ssize_t k = _lanes(lanes, s.k), i, j
    cdef const uint8_t* op = s.op
    cdef const fad_node* nd = s.nd
    cdef const double* val = s.val
    cdef const double* tan = s.tan
    cdef const double* S = s.second
    cdef double* adj = s.adj
    cdef double* adt = s.adt
    cdef double g, gd1, p0, p1, xx, xy, yy, tx, ty
    cdef double* gd
    cdef const double* t0
    cdef const double* t1
    cdef bint any_gd
    cdef int32_t a0, a1
    if Lanes is fad_lanes1:             # one lane: scalar steps
        for i in range(s.hi - 1, s.lo - 1, -1):
            g = adj[i]
            gd1 = adt[i]
            if Second is fad_cached:
                xx = S[3 * i]
                xy = S[3 * i + 1]
                yy = S[3 * i + 2]
                if gd1 == 0.0 and (g == 0.0 or (xx == 0.0 and xy == 0.0 and yy == 0.0)):
                    continue
            else:
                if g == 0.0 and gd1 == 0.0:
                    continue
                xx = xy = yy = 0.0
                if g != 0.0 and not _linear(op[i]):
                    if nd[i].a1 >= 0:
                        fad_second(op[i], val[nd[i].a0], val[nd[i].a1], 0.0, val[i], &xx, &xy, &yy)
                    else:
                        fad_second(op[i], val[nd[i].a0], 0.0, nd[i].c, val[i], &xx, &xy, &yy)
                if Second is fad_known:
                    if gd1 == 0.0 and xx == 0.0 and xy == 0.0 and yy == 0.0:
                        continue
            a0 = nd[i].a0
            a1 = nd[i].a1
            p0 = nd[i].p0
            tx = tan[a0]
            ty = tan[a1] if a1 >= 0 else 0.0
            if Second is fad_propagate:
                adj[a0] += sz(p0, g)
            if gd1 != 0.0:
                adt[a0] += sz(p0, gd1)
                if Second is not fad_propagate and a1 >= 0:
                    adt[a1] += sz(nd[i].p1, gd1)
            if g != 0.0:
                if xx != 0.0 or xy != 0.0:
                    adt[a0] += sz(g, sz(xx, tx) + sz(xy, ty))
                if Second is not fad_propagate and a1 >= 0 and (xy != 0.0 or yy != 0.0):
                    adt[a1] += sz(g, sz(xy, tx) + sz(yy, ty))
            if Second is fad_propagate and a1 >= 0:
                p1 = nd[i].p1
                adj[a1] += sz(p1, g)
                if gd1 != 0.0:
                    adt[a1] += sz(p1, gd1)
                if xy != 0.0 or yy != 0.0:
                    adt[a1] += sz(g, sz(xy, tx) + sz(yy, ty))
    else:                               # k lanes
        for i in range(s.hi - 1, s.lo - 1, -1):
            g = adj[i]
            gd = adt + i * k
            any_gd = False
            for j in range(k):
                if gd[j] != 0.0:
                    any_gd = True
                    break
            if g == 0.0 and not any_gd:
                continue
            xx = xy = yy = 0.0
            if g != 0.0:
                if Second is fad_cached:
                    xx = S[3 * i]
                    xy = S[3 * i + 1]
                    yy = S[3 * i + 2]
                elif not _linear(op[i]):
                    if nd[i].a1 >= 0:
                        fad_second(op[i], val[nd[i].a0], val[nd[i].a1], 0.0, val[i], &xx, &xy, &yy)
                    else:
                        fad_second(op[i], val[nd[i].a0], 0.0, nd[i].c, val[i], &xx, &xy, &yy)
                if Second is not fad_propagate:     # nothing else to pass on
                    if not any_gd and xx == 0.0 and xy == 0.0 and yy == 0.0:
                        continue
            a0 = nd[i].a0
            a1 = nd[i].a1
            p0 = nd[i].p0
            p1 = nd[i].p1 if a1 >= 0 else 0.0
            t0 = tan + a0 * k
            t1 = tan + a1 * k if a1 >= 0 else t0
            if Second is fad_propagate:
                adj[a0] += sz(p0, g)
            if any_gd:
                sz_axpy(adt + a0 * k, p0, gd, k)
                if Second is not fad_propagate and a1 >= 0:
                    sz_axpy(adt + a1 * k, p1, gd, k)
            sz_curv_lanes(adt + a0 * k, g, xx, t0, xy, t1, k)
            if a1 >= 0:
                if Second is fad_propagate:
                    adj[a1] += sz(p1, g)
                    if any_gd:
                        sz_axpy(adt + a1 * k, p1, gd, k)
                sz_curv_lanes(adt + a1 * k, g, xy, t0, yy, t1, k)
    return -1
