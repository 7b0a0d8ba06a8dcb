# The op table (csrc/fastad_ops.h) as Cython sees it: the bottom layer,
# cimported by the tape, the sweeps, the array-block kernels and the Vars.
from libc.stdint cimport int32_t, uint8_t

cdef extern from "fastad_ops.h" nogil:
    # the op table (csrc/fastad_ops.h); p1 and c share storage (a unary
    # node's constant)
    ctypedef struct fad_node:
        double p0
        double p1
        double c
        int32_t a0
        int32_t a1
    # Only the ops that Cython code names are listed; everything else reaches
    # an op through the table (fad_op_name, fad_op_function, fad_op_ufunc),
    # so a new op needs nothing here.
    enum:
        FAD_INPUT, FAD_CONST, FAD_BLOCK, FAD_ADD, FAD_SUB, FAD_MUL, FAD_DIV, FAD_POW,
        FAD_ADD_C, FAD_SUB_C, FAD_SUB_CX, FAD_MUL_C, FAD_DIV_C, FAD_DIV_CX, FAD_POW_C,
        FAD_POW_CX, FAD_REMAINDER, FAD_REMAINDER_C, FAD_REMAINDER_CX, FAD_FLOORDIV,
        FAD_FLOORDIV_C, FAD_FLOORDIV_CX, FAD_FLOOR, FAD_CEIL, FAD_TRUNC, FAD_RINT,
        FAD_NEG, FAD_ABS, FAD_LT, FAD_LE, FAD_EQ, FAD_NE, FAD_LT_C, FAD_LE_C,
        FAD_GT_C, FAD_GE_C, FAD_EQ_C, FAD_NE_C, FAD_NUM_OPS, FAD_FIRST_CMP
    enum:
        FAD_BINARY, FAD_UNARY, FAD_HAS_C, FAD_ZD, FAD_Z00, FAD_Z01, FAD_Z11, FAD_CMP, FAD_BLOCKF,
        FAD_CP, FAD_COMM, FAD_D0X, FAD_D0Y, FAD_D0V, FAD_D1X, FAD_D1Y, FAD_D1V, FAD_HOT
    const char* fad_op_name[]
    const char* fad_op_function[]
    const char* fad_op_ufunc[]
    const int fad_op_flags[]
    const char* fad_op_d0_source[]
    const char* fad_op_d1_source[]
    double fad_eval(int op, double x, double y, double c, double* d0, double* d1)
    double fad_node_eval(int op, double x, double y, double c, double* p0, double* p1_or_c)
    Py_ssize_t fad_replay_nodes(const uint8_t* op, const fad_node* nd, const double* recorded,
                                double* val, fad_node* out, Py_ssize_t lo, Py_ssize_t hi)
    void fad_second(int op, double x, double y, double c, double v,
                    double* dxx, double* dxy, double* dyy)
    enum:
        FAD_MAP_VALUES, FAD_MAP_SECOND, FAD_MAP_PARTIALS
    void fad_map(int op, int mode, Py_ssize_t n, const double* xp, Py_ssize_t sx,
                 const double* yp, Py_ssize_t sy, double c, const double* val,
                 Py_ssize_t sv, double* o0, double* o1, double* o2)
    void fad_times_partial(int op, int which, Py_ssize_t n, Py_ssize_t k,
                           const double* xp, Py_ssize_t sx, const double* yp, Py_ssize_t sy,
                           double c, const double* vp, Py_ssize_t sv, const double* t,
                           double* out, int accumulate)
