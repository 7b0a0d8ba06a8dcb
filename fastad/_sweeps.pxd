# The strong-zero rule and the lane helpers built on it: inline, so the
# sweeps (fastad._sweeps) and the array-block kernels (fastad._kernels) that
# cimport them compile them into their own loops.
from libc.math cimport isfinite
from libc.stdint cimport uint8_t

from fastad._ops cimport fad_node


# ---------------------------------------------------------------- strong zeros

cdef inline double sz(double p, double q) noexcept nogil:
    """p q, but an exact 0 where either factor is 0 even when the other is
    inf or NaN: a zero cotangent or tangent passes nothing through an inf
    partial (sqrt'(0)), and a zero partial passes nothing of an inf or NaN
    lane (sign' after sqrt'(0)), so an unselected branch contributes an
    exact zero.  This is the rule; the helpers below apply it over k lanes,
    with plain products where it reduces to them (a finite nonzero factor:
    then sz(p, q) is p q for every q)."""
    return 0.0 if p == 0.0 or q == 0.0 else p * q


cdef inline void sz_axpy(double* y, double a, const double* x, Py_ssize_t k) noexcept nogil:
    """y += sz(a, x) over k lanes (y accumulates: adjoints, adjoint tangents)."""
    cdef Py_ssize_t j
    if a == 0.0:
        return
    if isfinite(a):
        for j in range(k):
            y[j] += a * x[j]
    else:
        for j in range(k):
            y[j] += sz(a, x[j])


cdef inline void sz_lanes(double* ti, double p0, const double* t0, double p1,
                          const double* t1, Py_ssize_t k) noexcept nogil:
    """ti = sz(p0, t0) + sz(p1, t1) over k lanes (a tangent from its
    operands' tangents and partials); vectorizable loops while both
    partials are finite, a zero one dropped."""
    cdef Py_ssize_t j
    if p0 != 0.0 and p1 != 0.0 and isfinite(p0) and isfinite(p1):
        for j in range(k):
            ti[j] = p0 * t0[j] + p1 * t1[j]
    elif p1 == 0.0 and p0 != 0.0 and isfinite(p0):
        for j in range(k):
            ti[j] = p0 * t0[j]
    elif p0 == 0.0 and p1 != 0.0 and isfinite(p1):
        for j in range(k):
            ti[j] = p1 * t1[j]
    else:
        for j in range(k):
            ti[j] = 0.0
        sz_axpy(ti, p0, t0, k)
        sz_axpy(ti, p1, t1, k)


cdef inline void sz_curv_lanes(double* out, double g, double s0, const double* t0,
                               double s1, const double* t1, Py_ssize_t k) noexcept nogil:
    """out += g (sz(s0, t0) + sz(s1, t1)) over k lanes: an adjoint g times
    second partials s times tangents t, the curvature term of forward-over-
    reverse.  Vectorizable loops unless a second partial is inf or NaN."""
    cdef Py_ssize_t j
    if g == 0.0 or (s0 == 0.0 and s1 == 0.0):
        return
    if not (isfinite(s0) and isfinite(s1) and isfinite(g)):
        for j in range(k):      # (an inf adjoint passes nothing of a zero term)
            out[j] += sz(g, sz(s0, t0[j]) + sz(s1, t1[j]))
    elif s1 == 0.0:
        for j in range(k):
            out[j] += (g * s0) * t0[j]
    elif s0 == 0.0:
        for j in range(k):
            out[j] += (g * s1) * t1[j]
    else:
        for j in range(k):
            out[j] += g * (s0 * t0[j] + s1 * t1[j])


# ---------------------------------------------------------------- the sweeps
# (fastad/_sweeps.pyx)  Three sweeps over the node arrays, each one kernel
# for any number k of directions (lanes, stored slot-major: row i * k):
#
#   FORWARD  values and partials (a replay) and/or k tangent lanes
#   REVERSE  k adjoint lanes
#   SECOND   forward-over-reverse: adjoints (one lane) and their k tangents
#
# A Sweep says what to read and write; NULL buffers are not used.

cdef enum:
    SWEEP_VALUE = 1     # mask bit: the forward sweep computes the node's value and partials
    SWEEP_TANGENT = 2   # mask bit: ... and pushes its tangent lanes
    NOGIL_MIN = 20000   # node-lanes from which a sweep releases the GIL

ctypedef enum Kernel:
    FORWARD
    REVERSE
    SECOND

cdef struct Sweep:
    const uint8_t* op       # op codes
    const fad_node* nd      # partials and operands (as recorded, or a replay's)
    Py_ssize_t k            # lanes
    Py_ssize_t lo, hi       # the slots lo .. hi-1 (reverse sweeps visit them backwards)
    # FORWARD
    const uint8_t* mask     # per slot SWEEP_VALUE | SWEEP_TANGENT; NULL: values if val,
                            # tangents if tan, at every slot
    const double* recorded  # recorded values: a comparison that comes out otherwise stops
    double* val             # values (read; written where SWEEP_VALUE)
    fad_node* out           # the replayed partials, or NULL
    double* tan             # tangents, k lanes (SECOND: read)
    # REVERSE and SECOND
    double* adj             # REVERSE: k lanes; SECOND: one lane
    bint clear              # REVERSE: zero each row of adj once it is pulled back
    bint adj_known          # SECOND: adj holds every slot's adjoint already (not propagated)
    double* adt             # SECOND: the adjoints' tangents, k lanes
    const double* second    # SECOND: the second partials (3 per slot, second_partials), or NULL

cdef Sweep sweep_over(const uint8_t* op, const fad_node* nd, Py_ssize_t k,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
cdef Py_ssize_t run(Kernel kernel, Sweep* s) noexcept nogil
cdef Py_ssize_t run_released(Kernel kernel, Sweep* s) noexcept

cdef void needed_mask(const uint8_t* op, const fad_node* nd, uint8_t* mask,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
cdef void fold_mask(const uint8_t* op, const fad_node* nd, uint8_t* mask, uint8_t* fixed,
                    const Py_ssize_t* outs, Py_ssize_t n_outs, Py_ssize_t lo,
                    Py_ssize_t n) noexcept nogil
cdef void second_partials(const uint8_t* op, const fad_node* nd, const double* val,
                          double* S, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
