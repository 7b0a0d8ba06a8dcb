# The strong-zero rule and the lane helpers built on it: inline, so the
# sweeps (fastad._sweeps) and the array-block kernels (fastad._kernels) that
# cimport them compile them into their own loops.
from libc.math cimport isfinite


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
    if not (isfinite(s0) and isfinite(s1)):
        for j in range(k):
            out[j] += g * (sz(s0, t0[j]) + sz(s1, t1[j]))
    elif s1 == 0.0:
        for j in range(k):
            out[j] += (g * s0) * t0[j]
    elif s0 == 0.0:
        for j in range(k):
            out[j] += (g * s1) * t1[j]
    else:
        for j in range(k):
            out[j] += g * (s0 * t0[j] + s1 * t1[j])
