/*
 * fastad's table of elementary operations: the ONE place an op is defined.
 *
 * Every sweep (recording, reverse, replay/tangent, second order, sparsity)
 * takes an op's value and partials from here.  Adding an op is one FAD_OPS
 * entry plus its case in fad_eval and fad_second.
 *
 * Operand convention: a node has up to two tape arguments x (slot a0) and
 * y (slot a1) and, for the *_C / *_CX variants, a constant c.  As in CppAD,
 * variants are split by operand kind so no sweep tests for constants:
 *   OP     f(x, y)      both operands on the tape
 *   OP_C   f(x, c)      constant on the right
 *   OP_CX  f(c, x)      constant on the left (only for non-commutative ops)
 * A unary node keeps its constant in the p1 field of the node (it has no
 * second partial), so fad_eval returns c through *d1 for unary ops: the
 * caller can store (d0, d1) into (p0, p1) without caring about arity.
 * A CONST node (a constant output, or a constant stacked with Vars) points
 * a0 at itself with p0 = 0, so every sweep handles it like a unary op.
 */
#ifndef FASTAD_OPS_H
#define FASTAD_OPS_H

#include <math.h>
#include <stdint.h>

/* Flags.  FAD_Z* say which derivatives vanish identically; they drive
 * Jacobian and Hessian sparsity detection. */
#define FAD_BINARY 0x01 /* two tape arguments (x, y) */
#define FAD_UNARY 0x02  /* one tape argument (x) */
#define FAD_HAS_C 0x04  /* uses the constant c */
#define FAD_ZD 0x08     /* all first partials are zero (piecewise constant) */
#define FAD_Z00 0x10    /* d2f/dx2 == 0 */
#define FAD_Z01 0x20    /* d2f/dxdy == 0 */
#define FAD_Z11 0x40    /* d2f/dy2 == 0 */
#define FAD_CMP 0x80    /* comparison: value 1.0/0.0, checked on replay */
#define FAD_BLOCKF 0x100 /* slot of a block (array or primitive) node: the
                            scalar sweeps never visit it; the block's own
                            NumPy code computes and differentiates it */
#define FAD_CP 0x200    /* first partials are constants (the same at every
                           point): a replay that only needs partials skips
                           the node's value unless something reads it */

#define FAD_LIN (FAD_Z00 | FAD_Z01 | FAD_Z11)
#define FAD_U (FAD_UNARY | FAD_Z01 | FAD_Z11)
#define FAD_UC (FAD_U | FAD_HAS_C)
#define FAD_B FAD_BINARY

/* X(enum name, printed name, flags) */
#define FAD_OPS(X)                                  \
    X(INPUT, "input", FAD_ZD | FAD_LIN | FAD_CP)             \
    X(CONST, "const", FAD_HAS_C | FAD_ZD | FAD_LIN | FAD_CP) \
    X(BLOCK, "block", FAD_BLOCKF)                   \
    X(ADD, "add", FAD_B | FAD_LIN | FAD_CP)         \
    X(SUB, "sub", FAD_B | FAD_LIN | FAD_CP)         \
    X(MUL, "mul", FAD_B | FAD_Z00 | FAD_Z11)        \
    X(DIV, "div", FAD_B | FAD_Z00)                  \
    X(POW, "pow", FAD_B)                            \
    X(ATAN2, "arctan2", FAD_B)                      \
    X(HYPOT, "hypot", FAD_B)                        \
    X(MAX, "maximum", FAD_B | FAD_LIN)              \
    X(MIN, "minimum", FAD_B | FAD_LIN)              \
    X(ADD_C, "add_c", FAD_UC | FAD_LIN | FAD_CP)    \
    X(SUB_C, "sub_c", FAD_UC | FAD_LIN | FAD_CP)    \
    X(SUB_CX, "c_sub", FAD_UC | FAD_LIN | FAD_CP)   \
    X(MUL_C, "mul_c", FAD_UC | FAD_LIN | FAD_CP)    \
    X(DIV_C, "div_c", FAD_UC | FAD_LIN | FAD_CP)    \
    X(DIV_CX, "c_div", FAD_UC)                      \
    X(POW_C, "pow_c", FAD_UC)                       \
    X(POW_CX, "c_pow", FAD_UC)                      \
    X(ATAN2_C, "arctan2_c", FAD_UC)                 \
    X(ATAN2_CX, "c_arctan2", FAD_UC)                \
    X(HYPOT_C, "hypot_c", FAD_UC)                   \
    X(MAX_C, "maximum_c", FAD_UC | FAD_LIN)         \
    X(MIN_C, "minimum_c", FAD_UC | FAD_LIN)         \
    X(NEG, "neg", FAD_U | FAD_LIN | FAD_CP)         \
    X(ABS, "abs", FAD_U | FAD_LIN)                  \
    X(SIGN, "sign", FAD_U | FAD_ZD | FAD_LIN | FAD_CP)\
    X(SIN, "sin", FAD_U)                            \
    X(COS, "cos", FAD_U)                            \
    X(TAN, "tan", FAD_U)                            \
    X(ASIN, "arcsin", FAD_U)                        \
    X(ACOS, "arccos", FAD_U)                        \
    X(ATAN, "arctan", FAD_U)                        \
    X(SINH, "sinh", FAD_U)                          \
    X(COSH, "cosh", FAD_U)                          \
    X(TANH, "tanh", FAD_U)                          \
    X(EXP, "exp", FAD_U)                            \
    X(EXPM1, "expm1", FAD_U)                        \
    X(LOG, "log", FAD_U)                            \
    X(LOG1P, "log1p", FAD_U)                        \
    X(LOG2, "log2", FAD_U)                          \
    X(LOG10, "log10", FAD_U)                        \
    X(SQRT, "sqrt", FAD_U)                          \
    X(SQUARE, "square", FAD_U)                      \
    X(SIGMOID, "sigmoid", FAD_U)                    \
    X(SOFTPLUS, "softplus", FAD_U)                  \
    X(RELU, "relu", FAD_U | FAD_LIN)                \
    X(ERF, "erf", FAD_U)                            \
    X(LT, "lt", FAD_B | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(LE, "le", FAD_B | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(EQ, "eq", FAD_B | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(NE, "ne", FAD_B | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(LT_C, "lt_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(LE_C, "le_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(GT_C, "gt_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(GE_C, "ge_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(EQ_C, "eq_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN) \
    X(NE_C, "ne_c", FAD_UC | FAD_CMP | FAD_ZD | FAD_LIN)

#define FAD_ENUM_(name, str, flags) FAD_##name,
enum fad_op { FAD_OPS(FAD_ENUM_) FAD_NUM_OPS };
#undef FAD_ENUM_

#define FAD_NAME_(name, str, flags) str,
static const char *const fad_op_name[FAD_NUM_OPS] = {FAD_OPS(FAD_NAME_)};
#undef FAD_NAME_

#define FAD_FLAGS_(name, str, flags) (flags),
static const int fad_op_flags[FAD_NUM_OPS] = {FAD_OPS(FAD_FLAGS_)};
#undef FAD_FLAGS_

/* Comparisons are the last ops, so sweeps spot them with one test. */
#define FAD_FIRST_CMP FAD_LT

/* One node of the tape: local partials and argument slots.  The value of
 * node i lives in a separate array so sweeps that need only partials stay
 * in 24 bytes per node.  Unary nodes have a1 == -1 and keep c in p1. */
typedef struct {
    double p0, p1;
    int32_t a0, a1;
} fad_node;

#define FAD_LN2 0.69314718055994530942
#define FAD_LN10 2.30258509299404568402
#define FAD_2_SQRTPI 1.12837916709551257390

static inline double fad_sigmoid(double x)
{
    /* never exponentiates a positive number: no overflow for large |x| */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* sigmoid'(x) = e / (1 + e)^2 with e = exp(-|x|): no cancellation in
 * s (1 - s) when s rounds to 1 for large x. */
static inline double fad_sigmoid_d(double x)
{
    double e = exp(-fabs(x));
    double t = 1.0 + e;
    return e / (t * t);
}

/* max/min propagate NaN like numpy.maximum; ties split the derivative. */
static inline double fad_max(double x, double y, double *dx)
{
    if (x > y) { *dx = 1.0; return x; }
    if (x < y) { *dx = 0.0; return y; }
    *dx = 0.5;
    return (x != x) ? x : y;
}

static inline double fad_min(double x, double y, double *dx)
{
    if (x < y) { *dx = 1.0; return x; }
    if (x > y) { *dx = 0.0; return y; }
    *dx = 0.5;
    return (x != x) ? x : y;
}

/*
 * Value and first partials of op at (x, y, c).  *d0 = df/dx; *d1 = df/dy
 * for binary ops, and *d1 = c for unary ones (see the header comment).
 * One-sided conventions: abs'(0) = 0, sign' = 0, relu'(0) = 0,
 * sqrt'(0) = inf, max/min ties 0.5 each, d(x**y)/dy = 0 where x**y == 0,
 * d(x**0)/dx = 0.
 */
static inline double fad_eval(int op, double x, double y, double c,
                              double *d0, double *d1)
{
    double v, t;
    *d1 = c;
    switch (op) {
    case FAD_ADD: *d0 = 1.0; *d1 = 1.0; return x + y;
    case FAD_SUB: *d0 = 1.0; *d1 = -1.0; return x - y;
    case FAD_MUL: *d0 = y; *d1 = x; return x * y;
    case FAD_DIV: v = x / y; *d0 = 1.0 / y; *d1 = -v / y; return v;
    case FAD_POW:
        v = pow(x, y);
        *d0 = (y == 0.0) ? 0.0 : y * pow(x, y - 1.0);
        *d1 = (v == 0.0) ? 0.0 : v * log(x);
        return v;
    case FAD_ATAN2:
        t = x * x + y * y;
        *d0 = y / t; *d1 = -x / t;
        return atan2(x, y);
    case FAD_HYPOT:
        v = hypot(x, y);
        *d0 = (v == 0.0) ? 0.0 : x / v;
        *d1 = (v == 0.0) ? 0.0 : y / v;
        return v;
    case FAD_MAX: v = fad_max(x, y, d0); *d1 = 1.0 - *d0; return v;
    case FAD_MIN: v = fad_min(x, y, d0); *d1 = 1.0 - *d0; return v;
    case FAD_ADD_C: *d0 = 1.0; return x + c;
    case FAD_SUB_C: *d0 = 1.0; return x - c;
    case FAD_SUB_CX: *d0 = -1.0; return c - x;
    case FAD_MUL_C: *d0 = c; return x * c;
    case FAD_DIV_C: *d0 = 1.0 / c; return x / c;
    case FAD_DIV_CX: v = c / x; *d0 = -v / x; return v;
    case FAD_POW_C:
        if (c == 2.0) { *d0 = 2.0 * x; return x * x; }
        *d0 = (c == 0.0) ? 0.0 : c * pow(x, c - 1.0);
        return pow(x, c);
    case FAD_POW_CX:
        v = pow(c, x);
        *d0 = (v == 0.0) ? 0.0 : v * log(c);
        return v;
    case FAD_ATAN2_C: t = x * x + c * c; *d0 = c / t; return atan2(x, c);
    case FAD_ATAN2_CX: t = x * x + c * c; *d0 = -c / t; return atan2(c, x);
    case FAD_HYPOT_C:
        v = hypot(x, c);
        *d0 = (v == 0.0) ? 0.0 : x / v;
        return v;
    case FAD_MAX_C: return fad_max(x, c, d0);
    case FAD_MIN_C: return fad_min(x, c, d0);
    case FAD_NEG: *d0 = -1.0; return -x;
    case FAD_ABS: *d0 = (x > 0) ? 1.0 : ((x < 0) ? -1.0 : ((x == 0) ? 0.0 : x)); return fabs(x);
    case FAD_SIGN:
        *d0 = 0.0;
        return (x > 0) ? 1.0 : ((x < 0) ? -1.0 : ((x == 0) ? 0.0 : x));
    case FAD_SIN: *d0 = cos(x); return sin(x);
    case FAD_COS: *d0 = -sin(x); return cos(x);
    case FAD_TAN: v = tan(x); *d0 = 1.0 + v * v; return v;
    case FAD_ASIN: *d0 = 1.0 / sqrt(1.0 - x * x); return asin(x);
    case FAD_ACOS: *d0 = -1.0 / sqrt(1.0 - x * x); return acos(x);
    case FAD_ATAN: *d0 = 1.0 / (1.0 + x * x); return atan(x);
    case FAD_SINH: *d0 = cosh(x); return sinh(x);
    case FAD_COSH: *d0 = sinh(x); return cosh(x);
    case FAD_TANH: v = tanh(x); *d0 = 1.0 - v * v; return v;
    case FAD_EXP: v = exp(x); *d0 = v; return v;
    case FAD_EXPM1: v = expm1(x); *d0 = v + 1.0; return v;
    case FAD_LOG: *d0 = 1.0 / x; return log(x);
    case FAD_LOG1P: *d0 = 1.0 / (1.0 + x); return log1p(x);
    case FAD_LOG2: *d0 = 1.0 / (x * FAD_LN2); return log2(x);
    case FAD_LOG10: *d0 = 1.0 / (x * FAD_LN10); return log10(x);
    case FAD_SQRT: v = sqrt(x); *d0 = 0.5 / v; return v;
    case FAD_SQUARE: *d0 = 2.0 * x; return x * x;
    case FAD_SIGMOID: v = fad_sigmoid(x); *d0 = fad_sigmoid_d(x); return v;
    case FAD_SOFTPLUS:
        *d0 = fad_sigmoid(x);
        return log1p(exp(-fabs(x))) + (x > 0 ? x : 0.0);
    case FAD_RELU:
        *d0 = (x > 0) ? 1.0 : 0.0;
        return (x > 0 || x != x) ? x : 0.0;
    case FAD_ERF: *d0 = FAD_2_SQRTPI * exp(-x * x); return erf(x);
    case FAD_LT: *d0 = 0.0; *d1 = 0.0; return x < y;
    case FAD_LE: *d0 = 0.0; *d1 = 0.0; return x <= y;
    case FAD_EQ: *d0 = 0.0; *d1 = 0.0; return x == y;
    case FAD_NE: *d0 = 0.0; *d1 = 0.0; return x != y;
    case FAD_LT_C: *d0 = 0.0; return x < c;
    case FAD_LE_C: *d0 = 0.0; return x <= c;
    case FAD_GT_C: *d0 = 0.0; return x > c;
    case FAD_GE_C: *d0 = 0.0; return x >= c;
    case FAD_EQ_C: *d0 = 0.0; return x == c;
    case FAD_NE_C: *d0 = 0.0; return x != c;
    case FAD_CONST: *d0 = 0.0; return c;
    default: *d0 = 0.0; return x; /* FAD_INPUT */
    }
}

/*
 * Second partials of op at (x, y, c) with value v = f(x, y, c):
 * *dxx = d2f/dx2, *dxy = d2f/dxdy, *dyy = d2f/dy2 (the last two are 0 for
 * unary ops).  Zero where the flags say so.
 */
static inline void fad_second(int op, double x, double y, double c, double v,
                              double *dxx, double *dxy, double *dyy)
{
    double t, lg;
    *dxx = 0.0; *dxy = 0.0; *dyy = 0.0;
    switch (op) {
    case FAD_MUL: *dxy = 1.0; break;
    case FAD_DIV: *dxy = -1.0 / (y * y); *dyy = 2.0 * v / (y * y); break;
    case FAD_POW:
        lg = log(x);
        *dxx = (y == 0.0 || y == 1.0) ? 0.0 : y * (y - 1.0) * pow(x, y - 2.0);
        *dxy = pow(x, y - 1.0) * (1.0 + y * lg);   /* 1/x at y = 0 */
        *dyy = (v == 0.0) ? 0.0 : v * lg * lg;
        break;
    case FAD_ATAN2:
        t = x * x + y * y; t *= t;
        *dxx = -2.0 * x * y / t; *dxy = (x * x - y * y) / t; *dyy = 2.0 * x * y / t;
        break;
    case FAD_HYPOT:
        if (v != 0.0) {
            t = v * v * v;
            *dxx = y * y / t; *dxy = -x * y / t; *dyy = x * x / t;
        }
        break;
    case FAD_DIV_CX: *dxx = 2.0 * v / (x * x); break;
    case FAD_POW_C:
        if (c == 2.0) *dxx = 2.0;   /* the common square: no pow() call */
        else *dxx = (c == 0.0 || c == 1.0) ? 0.0 : c * (c - 1.0) * pow(x, c - 2.0);
        break;
    case FAD_POW_CX: *dxx = (v == 0.0) ? 0.0 : v * log(c) * log(c); break;
    case FAD_ATAN2_C: t = x * x + c * c; *dxx = -2.0 * x * c / (t * t); break;
    case FAD_ATAN2_CX: t = x * x + c * c; *dxx = 2.0 * x * c / (t * t); break;
    case FAD_HYPOT_C: if (v != 0.0) *dxx = c * c / (v * v * v); break;
    case FAD_SIN: *dxx = -v; break;
    case FAD_COS: *dxx = -v; break;
    case FAD_TAN: *dxx = 2.0 * v * (1.0 + v * v); break;
    case FAD_ASIN: t = 1.0 - x * x; *dxx = x / (t * sqrt(t)); break;
    case FAD_ACOS: t = 1.0 - x * x; *dxx = -x / (t * sqrt(t)); break;
    case FAD_ATAN: t = 1.0 + x * x; *dxx = -2.0 * x / (t * t); break;
    case FAD_SINH: *dxx = v; break;
    case FAD_COSH: *dxx = v; break;
    case FAD_TANH: *dxx = -2.0 * v * (1.0 - v * v); break;
    case FAD_EXP: *dxx = v; break;
    case FAD_EXPM1: *dxx = v + 1.0; break;
    case FAD_LOG: *dxx = -1.0 / (x * x); break;
    case FAD_LOG1P: t = 1.0 + x; *dxx = -1.0 / (t * t); break;
    case FAD_LOG2: *dxx = -1.0 / (x * x * FAD_LN2); break;
    case FAD_LOG10: *dxx = -1.0 / (x * x * FAD_LN10); break;
    case FAD_SQRT: *dxx = -0.25 / (v * v * v); break;
    case FAD_SQUARE: *dxx = 2.0; break;
    case FAD_SIGMOID: *dxx = fad_sigmoid_d(x) * (1.0 - 2.0 * v); break;
    case FAD_SOFTPLUS: *dxx = fad_sigmoid_d(x); break;
    case FAD_ERF: *dxx = -2.0 * x * FAD_2_SQRTPI * exp(-x * x); break;
    default: break; /* linear or piecewise-constant ops */
    }
}

#endif /* FASTAD_OPS_H */
