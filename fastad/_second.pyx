# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=vector
"""Forward-over-reverse of an element-wise block in one pass over memory.

For z = f(x, y) elementwise, with zbar the block's adjoint (g), zbar' its k
tangents (gd) and x', y' the operands' tangents:

    xbar  += f_x zbar
    xbar' += f_x zbar' + zbar (f_xx x' + f_xy y')      (and so for y)

The partials and second partials come inline from the op table (FAD_OPS in
csrc/fastad_ops.h), one loop per op, so no partial or second-partial array
is ever allocated: the step reads x, y, v, the tangents and g, gd once and
updates the operands' rows of adj and adt in place.  Every product obeys
the strong-zero rule, with the additions in the order of the scalar sweep.
"""
import numpy as np
cimport numpy as cnp

from fastad._ops cimport FAD_NUM_OPS, FAD_HAS_C, fad_op_flags, fad_op_name
from fastad._kernels import FLAG, OP_FLAGS

cnp.import_array()

cdef extern from *:
    """
    #include "fastad_ops.h"
    /* The strong zeros' selects (a product computed, then dropped where a
       factor is zero) vectorize only when the compiler may assume floating
       point does not trap; nothing here enables traps, and no value changes
       (NaN, inf and signed zeros as before).  GCC only: Clang if-converts
       these loops as they are.  Nor does GCC vectorize loops it guesses are
       cold, and its guessed branch probabilities make the specialized loops
       below, deep in the if-chains that pick them, look cold (most of the
       one-lane loops were left scalar: 2-4x slower); without the guess every
       loop counts as hot.  (Then the dominator pass threads a strong zero of
       a constant partial, sub's -1 times zbar', into two stores, which leave
       the loop scalar: off too.) */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize ("no-trapping-math", "no-guess-branch-probability", \\
                          "no-tree-dominator-opts")
    #endif
    #define FAD_SZ2_(p, q) ((((p) == 0.0) | ((q) == 0.0)) ? 0.0 : (p) * (q))
    #if defined(__GNUC__) && !defined(__clang__)
    #define FAD_IVDEP_ _Pragma("GCC ivdep")
    #else
    #define FAD_IVDEP_
    #endif

    /* One operand's share: a[i] += sz(d, g), at[i, :] += sz(d, gd) +
       sz(g, sz(s0, t0) + sz(s1, t1)); t0 / t1 NULL for an inactive operand. */
    #define FAD_SECOND_ROW_(K, a, at, d, s0, s1, AA, AT)                           \\
        (a)[i] = ((AA) ? 0.0 : (a)[i]) + FAD_SZ2_(d, gi);                          \\
        for (j = 0; (at) != NULL && j < (K); j++) {                                \\
            double r_ = gd != NULL ? FAD_SZ2_(d, gd[i * (K) + j]) : 0.0;           \\
            if (gi != 0.0 && (tx != NULL || ty != NULL)) {                         \\
                double cx_ = tx != NULL ? FAD_SZ2_(s0, tx[i * (K) + j]) : 0.0;     \\
                double cy_ = ty != NULL ? FAD_SZ2_(s1, ty[i * (K) + j]) : 0.0;     \\
                r_ = r_ + FAD_SZ2_(gi, cx_ + cy_);                                 \\
            }                                                                      \\
            (at)[i * (K) + j] = ((AT) ? 0.0 : (at)[i * (K) + j]) + r_;             \\
        }

    #define FAD_SECOND_LOOP_(K, fl, D0, D1, XX, XY, YY)                            \\
        for (i = 0; i < n; i++) {                                                  \\
            const double x = xp[i * sx], y = yp[i * sy], v = vp[i * sv];           \\
            const double gi = g[i];                                                \\
            (void)x; (void)y; (void)v;                                             \\
            if (ax != NULL) {                                                      \\
                double d_ = (D0), s0_ = 0.0, s1_ = 0.0;                            \\
                if (gi != 0.0) {                                                   \\
                    s0_ = ((fl) & FAD_Z00) ? 0.0 : (XX);                           \\
                    s1_ = ((fl) & FAD_Z01) ? 0.0 : (XY);                           \\
                }                                                                  \\
                FAD_SECOND_ROW_(K, ax, atx, d_, s0_, s1_, asg & 1, asg & 2)        \\
            }                                                                      \\
            if (ay != NULL) {                                                      \\
                double d_ = (D1), s0_ = 0.0, s1_ = 0.0;                            \\
                if (gi != 0.0) {                                                   \\
                    s0_ = ((fl) & FAD_Z01) ? 0.0 : (XY);                           \\
                    s1_ = ((fl) & FAD_Z11) ? 0.0 : (YY);                           \\
                }                                                                  \\
                FAD_SECOND_ROW_(K, ay, aty, d_, s0_, s1_, asg & 4, asg & 8)        \\
            }                                                                      \\
        }

    /* One lane, a common (FAD_HOT) op, the operands' activity fixed (XA,
       YA), an inactive operand's stride (CS: 0 or 1) and whether gd is
       zeros (GZ) too, every load unconditional: no test in the loop but the strong
       zeros' selects, and no loop-carried dependency (the rows written are
       adj's and adt's, the rows read val's, tan's and the block's own; x's
       and y's rows do not overlap, the caller checks), so the compiler may
       vectorize it.  (An inactive zbar term adds an exact +0.0 where the
       general loop skips it.) */
    #define FAD_SECOND_K1_(fl, D0, D1, XX, XY, YY, XA, YA, CS, GZ, AS)             \\
        FAD_IVDEP_                                                                 \\
        for (i = 0; i < n; i++) {                                                  \\
            const double x = xp[(XA) ? i : i * (CS)], y = yp[(YA) ? i : i * (CS)]; \\
            const double v = vp[i];                                                \\
            const double gi = g[i], gdi = (GZ) ? 0.0 : gd[i];                      \\
            const double tX = (XA) ? tx[i] : 0.0, tY = (YA) ? ty[i] : 0.0;         \\
            (void)x; (void)y; (void)v;                                             \\
            if (XA) {                                                              \\
                const double d_ = (D0);                                            \\
                const double s0_ = ((fl) & FAD_Z00) ? 0.0 : (XX);                  \\
                const double s1_ = (!(YA) || ((fl) & FAD_Z01)) ? 0.0 : (XY);       \\
                const double o_ = ax[i], ot_ = atx[i];                             \\
                ax[i] = (((AS) & 1) ? 0.0 : o_) + FAD_SZ2_(d_, gi);                 \\
                atx[i] = (((AS) & 2) ? 0.0 : ot_) + ((GZ) ? 0.0 : FAD_SZ2_(d_, gdi)) + \\
                    FAD_SZ2_(gi, FAD_SZ2_(s0_, tX) + FAD_SZ2_(s1_, tY));           \\
            }                                                                      \\
            if (YA) {                                                              \\
                const double d_ = (D1);                                            \\
                const double s0_ = (!(XA) || ((fl) & FAD_Z01)) ? 0.0 : (XY);       \\
                const double s1_ = ((fl) & FAD_Z11) ? 0.0 : (YY);                  \\
                const double o_ = ay[i], ot_ = aty[i];                             \\
                ay[i] = (((AS) & 4) ? 0.0 : o_) + FAD_SZ2_(d_, gi);                 \\
                aty[i] = (((AS) & 8) ? 0.0 : ot_) + ((GZ) ? 0.0 : FAD_SZ2_(d_, gdi)) + \\
                    FAD_SZ2_(gi, FAD_SZ2_(s0_, tX) + FAD_SZ2_(s1_, tY));           \\
            }                                                                      \\
        }
    /* One lane, first order only (zero gd, a linear block: fastad._player's
       run leaves the operands' adjoint tangents alone), as FAD_SECOND_K1_. */
    #define FAD_SECOND_K1N_(fl, D0, D1, XA, YA, CS, AS)                            \\
        FAD_IVDEP_                                                                 \\
        for (i = 0; i < n; i++) {                                                  \\
            const double x = xp[(XA) ? i : i * (CS)], y = yp[(YA) ? i : i * (CS)]; \\
            const double v = vp[i];                                                \\
            const double gi = g[i];                                                \\
            (void)x; (void)y; (void)v;                                             \\
            if (XA) {                                                              \\
                const double o_ = ax[i];                                           \\
                ax[i] = (((AS) & 1) ? 0.0 : o_) + FAD_SZ2_((D0), gi);               \\
            }                                                                      \\
            if (YA) {                                                              \\
                const double o_ = ay[i];                                           \\
                ay[i] = (((AS) & 4) ? 0.0 : o_) + FAD_SZ2_((D1), gi);               \\
            }                                                                      \\
        }
    /* asg stays a variable in these loops: constant-asg copies (no load of
       a row about to be written over) took 7 of _second's 16 s of compile
       time and made no measurable difference to HVPs (0.96-0.99x without). */
    #define FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, XA, YA, CS)                    \\
        if (gd == NULL) { FAD_SECOND_K1_(fl, D0, D1, XX, XY, YY, XA, YA, CS, 1, asg) } \\
        else { FAD_SECOND_K1_(fl, D0, D1, XX, XY, YY, XA, YA, CS, 0, asg) }

    /* x, y, v: values at strides sx, sy, sv (0 broadcasts one number); tx,
       ty: (n, k) tangents of the active operands (NULL: inactive); g (n),
       gd (n, k): the block's adjoints and their tangents; ax, atx / ay, aty:
       the operands' rows of adj (n) and adt (n, k), NULL where inactive;
       asg bits 1, 2, 4, 8: assign (not add to) x's adj, x's adt, y's adj,
       y's adt rows (rows nothing wrote yet: no zero fill first).
       Rows of x and y may overlap (x * x, x[:-1] * x[1:]): each update is a
       read-modify-write of its own, and nothing updated is read as input.
       The ops that take a constant (FAD_HAS_C) have no loops here: an array
       block passes its constants as operands, and the caller refuses them.
       A one-operand op has its specialized loops for x alone (y absent,
       stride 0); any other layout takes the general loop: the loops for an
       active y would be dead code that only costs compile time.  One
       function per op, called through a table, as fad_map in fastad_ops.h. */
    #define FAD_SECOND_FN_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                  \\
    static void fad_second_##E(ptrdiff_t n, ptrdiff_t k,                           \\
                               const double *xp, ptrdiff_t sx,                     \\
                               const double *yp, ptrdiff_t sy,                     \\
                               const double *vp, ptrdiff_t sv,                     \\
                               const double *tx, const double *ty,                 \\
                               const double *g, const double *gd,                  \\
                               double *ax, double *atx, double *ay, double *aty,   \\
                               int asg)                                            \\
    {                                                                              \\
        ptrdiff_t i, j;                                                            \\
        const double c = 0.0;   /* (an array block's constants are operands) */    \\
        (void)c;                                                                   \\
        if ((fl) & FAD_HAS_C) return;  /* not an array op: no loops emitted */     \\
        if (((fl) & FAD_HOT) && k == 1 && sv == 1 && gd == NULL &&                 \\
                tx == NULL && ty == NULL && atx == NULL && aty == NULL &&          \\
                (ax == NULL || sx == 1) && (ay == NULL || sy == 1) &&              \\
                (ax == NULL || ay == NULL || ax + n <= ay || ay + n <= ax) &&      \\
                (((fl) & FAD_BINARY) || (ay == NULL && sy == 0))) {                \\
            if (((fl) & FAD_BINARY) && ax != NULL && ay != NULL)                   \\
                { FAD_SECOND_K1N_(fl, D0, D1, 1, 1, 1, asg) }                      \\
            else if (ax != NULL && sy == 0)                                        \\
                { FAD_SECOND_K1N_(fl, D0, D1, 1, 0, 0, asg) }                      \\
            else if (((fl) & FAD_BINARY) && ax != NULL)                            \\
                { FAD_SECOND_K1N_(fl, D0, D1, 1, 0, 1, asg) }                      \\
            else if (((fl) & FAD_BINARY) && ay != NULL && sx == 0)                 \\
                { FAD_SECOND_K1N_(fl, D0, D1, 0, 1, 0, asg) }                      \\
            else if (((fl) & FAD_BINARY) && ay != NULL)                            \\
                { FAD_SECOND_K1N_(fl, D0, D1, 0, 1, 1, asg) }                      \\
        }                                                                          \\
        else if (!((fl) & FAD_HOT) ||                                              \\
                k != 1 || sv != 1 || (tx == NULL) != (ax == NULL) ||               \\
                (ty == NULL) != (ay == NULL) || (atx == NULL) != (ax == NULL) ||   \\
                (aty == NULL) != (ay == NULL) || (ax != NULL && sx != 1) ||        \\
                (ay != NULL && sy != 1) || (!((fl) & FAD_BINARY) && (ay != NULL || sy != 0))) \\
            { FAD_SECOND_LOOP_(k, fl, D0, D1, XX, XY, YY) }                        \\
        else if (((fl) & FAD_BINARY) && ax != NULL && ay != NULL) {                \\
            if (ax + n <= ay || ay + n <= ax)                                      \\
                { FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, 1, 1, 1) }               \\
            else { FAD_SECOND_LOOP_(1, fl, D0, D1, XX, XY, YY) }                   \\
        }                                                                          \\
        else if (ax != NULL && sy == 0)                                            \\
            { FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, 1, 0, 0) }                   \\
        else if (((fl) & FAD_BINARY) && ax != NULL)                                \\
            { FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, 1, 0, 1) }                   \\
        else if (((fl) & FAD_BINARY) && ay != NULL && sx == 0)                     \\
            { FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, 0, 1, 0) }                   \\
        else if (((fl) & FAD_BINARY) && ay != NULL)                                \\
            { FAD_SECOND_K1G_(fl, D0, D1, XX, XY, YY, 0, 1, 1) }                   \\
    }
    FAD_OPS(FAD_SECOND_FN_)
    #undef FAD_SECOND_FN_
    typedef void (*fad_second_fn)(ptrdiff_t, ptrdiff_t, const double *, ptrdiff_t,
                                  const double *, ptrdiff_t, const double *, ptrdiff_t,
                                  const double *, const double *, const double *,
                                  const double *, double *, double *, double *, double *,
                                  int);
    #define FAD_PTR_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) fad_second_##E,
    static const fad_second_fn fad_second_table[FAD_NUM_OPS] = {FAD_OPS(FAD_PTR_)};
    #undef FAD_PTR_
    static void fad_second_step(int op, ptrdiff_t n, ptrdiff_t k,
                                const double *xp, ptrdiff_t sx,
                                const double *yp, ptrdiff_t sy,
                                const double *vp, ptrdiff_t sv,
                                const double *tx, const double *ty,
                                const double *g, const double *gd,
                                double *ax, double *atx, double *ay, double *aty,
                                int asg)
    {
        if (op >= 0 && op < FAD_NUM_OPS)
            fad_second_table[op](n, k, xp, sx, yp, sy, vp, sv, tx, ty, g, gd,
                                 ax, atx, ay, aty, asg);
    }
    /* The layouts the one-lane loops specialize, for fad_value_tangent and
       fad_tangent_one alike: LOOP(fl, V, D0, D1, XA, YA, CS) per layout (a
       one-operand op has x alone); 0 for the other ops and layouts, which
       the caller sweeps its general way. */
    #define FAD_LANE_CASE_(LOOP, E, fl, V, D0, D1)                                 \\
        case FAD_##E:                                                              \\
            if (!((fl) & FAD_HOT) || ((fl) & (FAD_CMP | FAD_BLOCKF | FAD_HAS_C)))  \\
                return 0;                                                          \\
            if (((fl) & FAD_BINARY) && tx != NULL && ty != NULL && sx == 1 && sy == 1) \\
                { LOOP(fl, V, D0, D1, 1, 1, 1) }                                   \\
            else if (tx != NULL && ty == NULL && sx == 1 && sy == 0)               \\
                { LOOP(fl, V, D0, D1, 1, 0, 0) }                                   \\
            else if (((fl) & FAD_BINARY) && tx != NULL && ty == NULL && sx == 1 && sy == 1) \\
                { LOOP(fl, V, D0, D1, 1, 0, 1) }                                   \\
            else if (((fl) & FAD_BINARY) && tx == NULL && ty != NULL && sx == 0 && sy == 1) \\
                { LOOP(fl, V, D0, D1, 0, 1, 0) }                                   \\
            else if (((fl) & FAD_BINARY) && tx == NULL && ty != NULL && sx == 1 && sy == 1) \\
                { LOOP(fl, V, D0, D1, 0, 1, 1) }                                   \\
            else return 0;                                                         \\
            return 1;
    /* Values and one tangent lane of an element-wise block in one pass (a
       replay that pushes a direction along): v = f(x, y), t = sz(f_x, x') +
       sz(f_y, y'); a common (FAD_HOT) op only (returns 0 for the others),
       XA / YA whether x / y are on the tape (their tangents tx / ty), CS an
       inactive operand's stride. */
    #define FAD_VT_LOOP_(fl, V, D0, D1, XA, YA, CS)                                \\
        FAD_IVDEP_                                                                 \\
        for (i = 0; i < n; i++) {                                                  \\
            const double x = xp[(XA) ? i : i * (CS)], y = yp[(YA) ? i : i * (CS)]; \\
            const double v = (V);                                                  \\
            (void)x; (void)y;                                                      \\
            vo[i] = v;                                                             \\
            to[i] = ((XA) ? FAD_SZ2_((D0), tx[i]) : 0.0) +                         \\
                    ((YA) ? FAD_SZ2_((D1), ty[i]) : 0.0);                          \\
        }
    static int fad_value_tangent(int op, ptrdiff_t n, const double *xp, ptrdiff_t sx,
                                 const double *yp, ptrdiff_t sy,
                                 const double *tx, const double *ty,
                                 double *vo, double *to)
    {
        ptrdiff_t i;
        const double c = 0.0;
        (void)c;
        switch (op) {
    #define FAD_VT_CASE_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \\
        FAD_LANE_CASE_(FAD_VT_LOOP_, E, fl, V, D0, D1)
        FAD_OPS(FAD_VT_CASE_)
    #undef FAD_VT_CASE_
        default: return 0;
        }
    }
    /* One tangent lane of an element-wise block whose values are known:
       t = sz(f_x, x') + sz(f_y, y'), the partials from x, y and v (a sweep
       at the recorded point); as fad_value_tangent (0 for other ops). */
    #define FAD_T_LOOP_(fl, V, D0, D1, XA, YA, CS)  /* (V unused) */               \\
        FAD_IVDEP_                                                                 \\
        for (i = 0; i < n; i++) {                                                  \\
            const double x = xp[(XA) ? i : i * (CS)], y = yp[(YA) ? i : i * (CS)]; \\
            const double v = vp[i];                                                \\
            (void)x; (void)y; (void)v;                                             \\
            to[i] = ((XA) ? FAD_SZ2_((D0), tx[i]) : 0.0) +                         \\
                    ((YA) ? FAD_SZ2_((D1), ty[i]) : 0.0);                          \\
        }
    static int fad_tangent_one(int op, ptrdiff_t n, const double *xp, ptrdiff_t sx,
                               const double *yp, ptrdiff_t sy, const double *vp,
                               const double *tx, const double *ty, double *to)
    {
        ptrdiff_t i;
        const double c = 0.0;
        (void)c;
        switch (op) {
    #define FAD_T_CASE_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \\
        FAD_LANE_CASE_(FAD_T_LOOP_, E, fl, V, D0, D1)
        FAD_OPS(FAD_T_CASE_)
    #undef FAD_T_CASE_
        default: return 0;
        }
    }
    #undef FAD_LANE_CASE_
    #undef FAD_T_LOOP_
    #undef FAD_VT_LOOP_
    #undef FAD_SECOND_LOOP_
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    #undef FAD_SECOND_K1_
    #undef FAD_SECOND_K1G_
    #undef FAD_SECOND_K1N_
    #undef FAD_SECOND_ROW_
    """
    int fad_tangent_one(int op, Py_ssize_t n, const double* xp, Py_ssize_t sx,
                        const double* yp, Py_ssize_t sy, const double* vp,
                        const double* tx, const double* ty, double* to) nogil
    int fad_value_tangent(int op, Py_ssize_t n, const double* xp, Py_ssize_t sx,
                          const double* yp, Py_ssize_t sy, const double* tx, const double* ty,
                          double* vo, double* to) nogil
    void fad_second_step(int op, Py_ssize_t n, Py_ssize_t k,
                         const double* xp, Py_ssize_t sx, const double* yp, Py_ssize_t sy,
                         const double* vp, Py_ssize_t sv, const double* tx, const double* ty,
                         const double* g, const double* gd,
                         double* ax, double* atx, double* ay, double* aty, int asg) nogil


cdef cnp.ndarray _ZERO = np.zeros(1)


cdef cnp.ndarray _values(object a, Py_ssize_t n, Py_ssize_t* stride, str who):
    """a as C-contiguous float64: one number (stride 0) or n of them (stride 1)."""
    cdef cnp.ndarray arr = _ZERO if a is None else np.asarray(a, dtype=np.float64)
    cdef Py_ssize_t m = cnp.PyArray_SIZE(arr)
    if m == 1:
        stride[0] = 0
    elif m == n:
        stride[0] = 1
    else:
        raise ValueError(f"{who}: {m} values for {n} elements")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        arr = np.ascontiguousarray(arr)
    return arr


cdef double* _rows(object a, Py_ssize_t m, str what) except? NULL:
    """The data of a C-contiguous float64 array of m numbers, or NULL for None."""
    if a is None:
        return NULL
    if type(a) is not np.ndarray or (<cnp.ndarray>a).dtype != np.float64 or \
            not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a) or \
            cnp.PyArray_SIZE(<cnp.ndarray>a) != m:
        raise ValueError(f"{what} must be a C-contiguous float64 array of {m} numbers")
    return <double*>cnp.PyArray_DATA(<cnp.ndarray>a)


def second_step(int op, Py_ssize_t n, Py_ssize_t k, x, y, v, tx, ty, g, gd,
                adj_x, adt_x, adj_y, adt_y, int assign=0):
    """An element-wise block's forward-over-reverse step in one pass (see
    the module docstring): x, y, v values (None, one number or n numbers;
    y None for a unary op), tx, ty the active operands' (n, k) tangents,
    g (n,), gd (n, k) (None: zeros); adj_x (n,), adt_x (n, k) the rows of
    operand x (None when x is a constant; adt_x None alone: leave x's adjoint
    tangents alone), and so for y.  Arrays of rows must be C-contiguous
    float64, adj, adt, tan and the values distinct arrays.  assign: bits
    1, 2, 4, 8 write adj_x, adt_x, adj_y, adt_y rather than add to them
    (rows that hold nothing yet; y's rows added to x's where they are the
    same rows)."""
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"second_step: no op {op}")
    if fad_op_flags[op] & FAD_HAS_C:
        raise ValueError(f"second_step: {fad_op_name[op].decode()} takes a constant; "
                         "an array block passes its constants as operands")
    if n < 0 or k < 1:
        raise ValueError(f"second_step: n = {n}, k = {k}")
    cdef Py_ssize_t sx, sy, sv
    cdef cnp.ndarray xa = _values(x, n, &sx, "second_step"), \
        ya = _values(y, n, &sy, "second_step"), va = _values(v, n, &sv, "second_step")
    cdef const double* txp = _rows(tx, n * k, "second_step: tx")
    cdef const double* typ = _rows(ty, n * k, "second_step: ty")
    cdef const double* gp = _rows(g, n, "second_step: g")
    cdef const double* gdp = _rows(gd, n * k, "second_step: gd")
    cdef double* axp = _rows(adj_x, n, "second_step: adj_x")
    cdef double* atxp = _rows(adt_x, n * k, "second_step: adt_x")
    cdef double* ayp = _rows(adj_y, n, "second_step: adj_y")
    cdef double* atyp = _rows(adt_y, n * k, "second_step: adt_y")
    if gp == NULL or (axp == NULL and atxp != NULL) or (ayp == NULL and atyp != NULL):
        raise ValueError("second_step: g is required, and an operand's adt rows need "
                         "its adj rows")
    cdef const double* xp = <double*>cnp.PyArray_DATA(xa)
    cdef const double* yp = <double*>cnp.PyArray_DATA(ya)
    cdef const double* vp = <double*>cnp.PyArray_DATA(va)
    with nogil:
        fad_second_step(op, n, k, xp, sx, yp, sy, vp, sv, txp, typ, gp, gdp,
                        axp, atxp, ayp, atyp, assign)


def value_tangent(int op, Py_ssize_t n, x, y, tx, ty, v_out, t_out):
    """An element-wise block's values and one tangent lane in one pass:
    v_out = op(x, y), t_out = sz(d0, tx) + sz(d1, ty), for x, y values
    (one number or n; y None for a unary op) and tx, ty the active operands'
    n tangents (None for a constant).  Only the table's common (FAD_HOT)
    ops: returns False, having written nothing, for the others (NumPy's
    ufuncs compute those faster than the table's scalar code)."""
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"value_tangent: no op {op}")
    if n < 0:
        raise ValueError(f"value_tangent: n = {n}")
    cdef Py_ssize_t sx, sy
    cdef cnp.ndarray xa = _values(x, n, &sx, "value_tangent"), \
        ya = _values(y, n, &sy, "value_tangent")
    cdef const double* txp = _rows(tx, n, "value_tangent: tx")
    cdef const double* typ = _rows(ty, n, "value_tangent: ty")
    cdef double* vp = _rows(v_out, n, "value_tangent: v_out")
    cdef double* tp = _rows(t_out, n, "value_tangent: t_out")
    if vp == NULL or tp == NULL:
        raise ValueError("value_tangent: v_out and t_out are required")
    cdef const double* xp = <double*>cnp.PyArray_DATA(xa)
    cdef const double* yp = <double*>cnp.PyArray_DATA(ya)
    cdef int done
    if n == 1:                  # (one number: a stride of 0 or 1 reads the same)
        sx = 1 if txp != NULL or sx else 0
        sy = 1 if typ != NULL or sy else 0
    with nogil:
        done = fad_value_tangent(op, n, xp, sx, yp, sy, txp, typ, vp, tp)
    return bool(done)


def tangent_one(int op, Py_ssize_t n, x, y, v, tx, ty, t_out):
    """One tangent lane of an element-wise block in one pass: t_out =
    sz(d0, tx) + sz(d1, ty), the partials from the values x, y (one number
    or n; y None for a unary op) and v (n); tx, ty the active operands' n
    tangents (None for a constant).  The common (FAD_HOT) ops only: False,
    nothing written, for the others."""
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"tangent_one: no op {op}")
    if n < 0:
        raise ValueError(f"tangent_one: n = {n}")
    cdef Py_ssize_t sx, sy
    cdef cnp.ndarray xa = _values(x, n, &sx, "tangent_one"), \
        ya = _values(y, n, &sy, "tangent_one")
    cdef const double* vp = _rows(v, n, "tangent_one: v")
    cdef const double* txp = _rows(tx, n, "tangent_one: tx")
    cdef const double* typ = _rows(ty, n, "tangent_one: ty")
    cdef double* tp = _rows(t_out, n, "tangent_one: t_out")
    if vp == NULL or tp == NULL:
        raise ValueError("tangent_one: v and t_out are required")
    cdef const double* xp = <double*>cnp.PyArray_DATA(xa)
    cdef const double* yp = <double*>cnp.PyArray_DATA(ya)
    cdef int done
    if n == 1:
        sx = 1 if txp != NULL or sx else 0
        sy = 1 if typ != NULL or sy else 0
    with nogil:
        done = fad_tangent_one(op, n, xp, sx, yp, sy, vp, txp, typ, tp)
    return bool(done)


class ElementwiseSecond:
    """The one-pass methods of fastad._blocks.Elementwise (a mixin: the
    block has op, x, y, shape, start, stop and operands()): its second-order
    step (second_step) with the zero tracking and assignment of
    fastad._player's run, and its one-lane tangent (tangent_one) and
    replay with a tangent (value_tangent)."""

    def _curved(self):
        """True when a second partial among the active operands is not zero
        by the table's flags (the block is not linear in them)."""
        fl = OP_FLAGS[self.op]
        xa, ya = self.x.active, self.y is not None and self.y.active
        return (xa and not fl & FLAG["Z00"]) or (xa and ya and not fl & FLAG["Z01"]) or \
            (ya and not fl & FLAG["Z11"])

    def tangent_one(self, val, tan):
        """tangent with one lane in one vectorized C pass
        (fastad._second.tangent_one); False where that does not apply."""
        n = self.stop - self.start
        vals, tans = [], []
        for o in self.operands():
            if o.active:
                if o.start < 0 or o.flat.size != n:
                    return False
                vals.append(o.value(val))
                tans.append(tan[o.start:o.start + n].reshape(-1))
            else:
                c = o.const
                if c.size != 1 and c.size != n:
                    return False
                vals.append(c)
                tans.append(None)
        if type(tan) is not np.ndarray or not tan.flags.c_contiguous or \
                type(val) is not np.ndarray or not val.flags.c_contiguous:
            return False
        return tangent_one(self.op, n, vals[0], vals[1] if len(vals) > 1 else None,
                           val[self.start:self.stop], tans[0],
                           tans[1] if len(tans) > 1 else None,
                           tan[self.start:self.stop].reshape(-1))

    def forward_tangent(self, val, tan, k):
        """forward and tangent (one lane) in one pass over memory, for a
        replay that pushes a direction along (fastad._second.value_tangent):
        the state, or NotImplemented where that does not apply."""
        if k != 1:
            return NotImplemented
        n = self.stop - self.start
        vals, tans = [], []
        for o in self.operands():
            if o.active:
                if o.start < 0 or o.flat.size != n or \
                        (o.start < self.stop and self.start < o.start + n):
                    return NotImplemented
                vals.append(o.value(val))
                tans.append(tan[o.start:o.start + n].reshape(-1))
            else:
                c = o.const
                if c.size != 1 and c.size != n:
                    return NotImplemented
                vals.append(c)
                tans.append(None)
        if type(tan) is not np.ndarray or not tan.flags.c_contiguous:
            return NotImplemented
        if value_tangent(self.op, n, vals[0], vals[1] if len(vals) > 1 else None,
                         tans[0], tans[1] if len(tans) > 1 else None,
                         val[self.start:self.stop], tan[self.start:self.stop].reshape(-1)):
            return None                 # (an element-wise block keeps no state)
        return NotImplemented

    def reverse2_gd_zero(self, val, state, tan, adj, adt, k):
        """reverse2 when the block's adjoint tangents are known zeros (nothing
        reached them: fastad._player's second-order run tracks it): their
        term is skipped, and a block linear in its active operands leaves
        those operands' adjoint tangents alone.  Returns whether it wrote
        any operand's adjoint tangents."""
        wrote = self._fused_second(val, tan, adj, adt, k, True)
        if wrote is not None:
            return wrote
        self.reverse2(val, state, tan, adj, adt, k)
        return True

    def fused_operands(self):
        """The active operands' slot runs (start, size) when reverse2 can run
        as one C pass with assignment (fastad._second), else None."""
        n = self.stop - self.start
        runs = []
        for o in self.operands():
            if o.active:
                if o.start < 0 or o.flat.size != n:
                    return None
                runs.append((o.start, n))
            else:
                runs.append(None)
        return runs

    def _fused_second(self, val, tan, adj, adt, k, gd_zero=False, assign=0):
        """reverse2 in one C pass (fastad._second) where every active operand
        is a run of slots of the block's shape (fused_operands): partials
        and second partials computed inline, never stored.  None where that
        does not apply, else whether it wrote the operands' adjoint tangents.
        gd_zero: the block's adjoint tangents are zeros (not read); then
        without curvature the operands' adjoint tangents are not touched.
        assign: second_step's bits (operand rows written, not added to)."""
        n = self.stop - self.start
        ops = self.operands()
        rows = []
        for o in ops:
            if o.active:
                if o.start < 0 or o.flat.size != n:
                    return None
                rows.append(slice(o.start, o.start + n))
            else:
                rows.append(None)
        for a in (tan, adj, adt):
            if type(a) is not np.ndarray or not a.flags.c_contiguous:
                return None
        values = []
        for o in ops:
            if o.active:
                values.append(o.value(val))
            else:
                c = o.const
                values.append(c if c.size == 1 or c.shape == self.shape else
                              np.ascontiguousarray(np.broadcast_to(c, self.shape)))
        x = values[0]
        y = values[1] if len(values) > 1 else None
        rx = rows[0]
        ry = rows[1] if len(rows) > 1 else None
        own = slice(self.start, self.stop)
        if gd_zero and not self._curved():      # the adjoints alone move
            second_step(self.op, n, k, x, y, val[own], None, None, adj[own], None,
                        None if rx is None else adj[rx], None,
                        None if ry is None else adj[ry], None, assign & 5)
            return False
        second_step(self.op, n, k, x, y, val[own],
                    None if rx is None else tan[rx], None if ry is None else tan[ry],
                    adj[own], None if gd_zero else adt[own],
                    None if rx is None else adj[rx], None if rx is None else adt[rx],
                    None if ry is None else adj[ry], None if ry is None else adt[ry],
                    assign)
        return True
