/*
 * fastad's table of elementary operations: the ONE place an op is defined.
 *
 * Each FAD_OPS entry is one op, with everything derived from it:
 *
 *   X(ENUM, "name", "function", "ufunc", flags,
 *     value, d0, d1, dxx, dxy, dyy)
 *
 *   "name"      the op's name on the tape (str(tape), array blocks)
 *   "function"  the public fad.<function> it is recorded by ("" for none)
 *   "ufunc"     the NumPy ufunc it stands for ("" for none): np.<ufunc> on
 *               Vars and Arrays records it, and array blocks compute its
 *               values with that ufunc
 *   value       f(x, y, c) as a C expression
 *   d0, d1      df/dx, df/dy; they may read v, the value
 *   dxx .. dyy  the second partials; they may read v
 *
 * Everything else is generated from the entries: the enum, name, flag and
 * ufunc tables, fad_eval (value and first partials), fad_second (second
 * partials) and the element-wise kernels of array blocks (fad_map), so a
 * new op is one entry here; tests/test_op_table.py walks the table and
 * checks every op in every mode.  The flag FAD_HOT marks the common ops that
 * the scalar replay and recording dispatch inline (see fad_eval); it changes
 * no result, only where an op's code sits.
 *
 * Operand convention: a node has up to two tape arguments x (slot a0) and
 * y (slot a1) and, for the *_C / *_CX variants, a constant c.  As in CppAD,
 * variants are split by operand kind so no sweep tests for constants:
 *   OP     f(x, y)      both operands on the tape; its function is fad.<function>
 *   OP_C   f(x, c)      constant on the right, named "<name>_c"
 *   OP_CX  f(c, x)      constant on the left, named "c_<name>" (for a
 *                       commutative op, FAD_COMM, OP_C serves both sides)
 * A unary node has a1 == -1 and keeps its constant c in the node's `c`
 * field, which shares storage with p1 (a unary node has no second partial).
 * A CONST node (a constant output, or a constant stacked with Vars) points
 * a0 at itself with p0 = 0, so every sweep handles it like a unary op.
 */
#ifndef FASTAD_OPS_H
#define FASTAD_OPS_H

#include <math.h>
#include <stddef.h>
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
#define FAD_COMM 0x400  /* commutative: f(c, x) is the OP_C variant f(x, c) */
/* What the first partials read (for the ops that name a function: array
 * blocks compute partials in their sweeps from these values, and may write
 * an output over an operand that no partial reads; tests check the flags) */
#define FAD_D0X 0x800   /* df/dx reads x */
#define FAD_D0Y 0x1000  /* df/dx reads y */
#define FAD_D0V 0x2000  /* df/dx reads the value v */
#define FAD_D1X 0x4000  /* df/dy reads x */
#define FAD_D1Y 0x8000  /* df/dy reads y */
#define FAD_D1V 0x10000 /* df/dy reads v */
/* A common op: fad_eval and fad_node_eval dispatch it in a small switch
 * inlined at the call site (the scalar replay loop, recording); the other
 * ops go through one call to the switch over every op.  That switch is too
 * large to inline, and the call it then took for every node tripled the
 * replay's time per node (issue #19). */
#define FAD_HOT 0x20000
#define FAD_DX (FAD_D0X)
#define FAD_DV (FAD_D0V)
#define FAD_DXY (FAD_D0X | FAD_D0Y | FAD_D1X | FAD_D1Y)

#define FAD_LIN (FAD_Z00 | FAD_Z01 | FAD_Z11)
#define FAD_U (FAD_UNARY | FAD_Z01 | FAD_Z11)
#define FAD_UC (FAD_U | FAD_HAS_C)
#define FAD_B FAD_BINARY
#define FAD_CMPF (FAD_CMP | FAD_ZD | FAD_LIN)

#include "fastad_special.h"   /* the scalar functions the entries call */

/*
 * The table.  One-sided conventions: abs'(0) = 0, sign' = 0, relu'(0) = 0,
 * sqrt'(0) = cbrt'(0) = inf, max/min and fmax/fmin ties 0.5 each (fmax/fmin:
 * a NaN operand gets 0, the other 1), d(x**y)/dy = 0 where x**y == 0,
 * d(x**0)/dx = 0; floor, ceil, trunc, rint, floor_divide, sign and heaviside
 * in x have derivative 0 (also at their jumps); remainder and fmod have
 * d/dx = 1 and d/dy = -floor(x/y) resp. -trunc(x/y) (the right-hand limit
 * at a jump, for y > 0); copysign'(0) = 0 like abs; d heaviside(x, h)/dh =
 * 1 at x == 0 only; xlogy/xlog1py are 0 at x == 0 with d/dy = 0 there and
 * d/dx = log(y) resp. log1p(y) (as JAX).  Comparisons are the last ops, so sweeps spot
 * them with one test (FAD_FIRST_CMP).
 */
#define FAD_OPS(X)                                                              \
    X(INPUT, "input", "", "", FAD_ZD | FAD_LIN | FAD_CP,                        \
      x, 0.0, 0.0, 0.0, 0.0, 0.0)                                               \
    X(CONST, "const", "", "", FAD_HOT | FAD_HAS_C | FAD_ZD | FAD_LIN | FAD_CP,  \
      c, 0.0, 0.0, 0.0, 0.0, 0.0)                                               \
    X(BLOCK, "block", "", "", FAD_BLOCKF,                                       \
      x, 0.0, 0.0, 0.0, 0.0, 0.0)                                               \
    /* binary: both operands on the tape */                                     \
    X(ADD, "add", "add", "add", FAD_HOT | FAD_B | FAD_LIN | FAD_CP | FAD_COMM,  \
      x + y, 1.0, 1.0, 0.0, 0.0, 0.0)                                           \
    X(SUB, "sub", "subtract", "subtract", FAD_HOT | FAD_B | FAD_LIN | FAD_CP,   \
      x - y, 1.0, -1.0, 0.0, 0.0, 0.0)                                          \
    X(MUL, "mul", "multiply", "multiply", FAD_HOT | FAD_B | FAD_Z00 | FAD_Z11 | FAD_COMM | FAD_D0Y | FAD_D1X, \
      x * y, y, x, 0.0, 1.0, 0.0)                                               \
    X(DIV, "div", "divide", "true_divide", FAD_HOT | FAD_B | FAD_Z00 | FAD_D0Y | FAD_D1Y | FAD_D1V,           \
      x / y, 1.0 / y, -v / y, 0.0, -1.0 / (y * y), 2.0 * v / (y * y))           \
    X(POW, "pow", "power", "power", FAD_B | FAD_D0X | FAD_D0Y | FAD_D1X | FAD_D1V,                                      \
      pow(x, y),                                                                \
      (y == 0.0) ? 0.0 : y * pow(x, y - 1.0),                                   \
      (v == 0.0) ? 0.0 : v * log(x),                                            \
      (y == 0.0 || y == 1.0) ? 0.0 : y * (y - 1.0) * pow(x, y - 2.0),           \
      pow(x, y - 1.0) * (1.0 + y * log(x)),     /* 1/x at y = 0 */              \
      (v == 0.0) ? 0.0 : v * log(x) * log(x))                                   \
    X(ATAN2, "arctan2", "arctan2", "arctan2", FAD_B | FAD_DXY,                            \
      atan2(x, y), y / (x * x + y * y), -x / (x * x + y * y),                   \
      -2.0 * x * y / fad_sq(x * x + y * y),                                     \
      (x * x - y * y) / fad_sq(x * x + y * y),                                  \
      2.0 * x * y / fad_sq(x * x + y * y))                                      \
    X(HYPOT, "hypot", "hypot", "hypot", FAD_B | FAD_COMM | FAD_D0X | FAD_D0V | FAD_D1Y | FAD_D1V,                       \
      hypot(x, y), (v == 0.0) ? 0.0 : x / v, (v == 0.0) ? 0.0 : y / v,          \
      (v == 0.0) ? 0.0 : y * y / (v * v * v),                                   \
      (v == 0.0) ? 0.0 : -x * y / (v * v * v),                                  \
      (v == 0.0) ? 0.0 : x * x / (v * v * v))                                   \
    X(MAX, "maximum", "maximum", "maximum", FAD_B | FAD_LIN | FAD_COMM | FAD_DXY,         \
      fad_max(x, y), fad_max_d(x, y), 1.0 - fad_max_d(x, y), 0.0, 0.0, 0.0)     \
    X(MIN, "minimum", "minimum", "minimum", FAD_B | FAD_LIN | FAD_COMM | FAD_DXY,         \
      fad_min(x, y), fad_max_d(y, x), 1.0 - fad_max_d(y, x), 0.0, 0.0, 0.0)     \
    X(LOGADDEXP, "logaddexp", "logaddexp", "logaddexp", FAD_B | FAD_COMM | FAD_DXY,       \
      fad_logaddexp(x, y), fad_sigmoid(x - y), fad_sigmoid(y - x),              \
      fad_sigmoid_d(x - y), -fad_sigmoid_d(x - y), fad_sigmoid_d(x - y))        \
    X(LOGADDEXP2, "logaddexp2", "logaddexp2", "logaddexp2", FAD_B | FAD_COMM | FAD_DXY,  \
      fad_logaddexp2(x, y), fad_sigmoid((x - y) * FAD_LN2), fad_sigmoid((y - x) * FAD_LN2), \
      FAD_LN2 * fad_sigmoid_d((x - y) * FAD_LN2), -FAD_LN2 * fad_sigmoid_d((x - y) * FAD_LN2), \
      FAD_LN2 * fad_sigmoid_d((x - y) * FAD_LN2))                              \
    X(FMAX, "fmax", "fmax", "fmax", FAD_B | FAD_LIN | FAD_COMM | FAD_DXY,       \
      fmax(x, y), fad_fmax_d(x, y), 1.0 - fad_fmax_d(x, y), 0.0, 0.0, 0.0)     \
    X(FMIN, "fmin", "fmin", "fmin", FAD_B | FAD_LIN | FAD_COMM | FAD_DXY,       \
      fmin(x, y), fad_fmax_d(-x, -y), 1.0 - fad_fmax_d(-x, -y), 0.0, 0.0, 0.0)  \
    X(REMAINDER, "remainder", "remainder", "remainder", FAD_B | FAD_LIN | FAD_D1X | FAD_D1Y, \
      fad_remainder(x, y), 1.0, -fad_floordiv(x, y), 0.0, 0.0, 0.0)            \
    X(FMOD, "fmod", "fmod", "fmod", FAD_B | FAD_LIN | FAD_D1X | FAD_D1Y,        \
      fmod(x, y), 1.0, -fad_fmod_q(x, y), 0.0, 0.0, 0.0)                       \
    X(FLOORDIV, "floor_divide", "floor_divide", "floor_divide",                 \
      FAD_B | FAD_ZD | FAD_LIN | FAD_CP,                                        \
      fad_floordiv(x, y), 0.0, 0.0, 0.0, 0.0, 0.0)                              \
    X(COPYSIGN, "copysign", "copysign", "copysign", FAD_B | FAD_LIN | FAD_D0X | FAD_D0Y, \
      copysign(x, y), fad_copysign_d(x, y), 0.0, 0.0, 0.0, 0.0)                \
    X(HEAVISIDE, "heaviside", "heaviside", "heaviside", FAD_B | FAD_LIN | FAD_D1X, \
      fad_heaviside(x, y), 0.0, (x == 0) ? 1.0 : 0.0, 0.0, 0.0, 0.0)            \
    X(XLOGY, "xlogy", "xlogy", "", FAD_B | FAD_Z00 | FAD_D0Y | FAD_D1X | FAD_D1Y, \
      fad_xlogy(x, y), log(y), (x == 0) ? 0.0 : x / y,                          \
      0.0, 1.0 / y, (x == 0) ? 0.0 : -x / (y * y))                              \
    X(XLOG1PY, "xlog1py", "xlog1py", "", FAD_B | FAD_Z00 | FAD_D0Y | FAD_D1X | FAD_D1Y, \
      fad_xlog1py(x, y), log1p(y), (x == 0) ? 0.0 : x / (1.0 + y),              \
      0.0, 1.0 / (1.0 + y), (x == 0) ? 0.0 : -x / fad_sq(1.0 + y))              \
    /* f(x, c) and f(c, x): a constant operand */                               \
    X(ADD_C, "add_c", "", "", FAD_HOT | FAD_UC | FAD_LIN | FAD_CP,              \
      x + c, 1.0, 0.0, 0.0, 0.0, 0.0)                                           \
    X(SUB_C, "sub_c", "", "", FAD_HOT | FAD_UC | FAD_LIN | FAD_CP,              \
      x - c, 1.0, 0.0, 0.0, 0.0, 0.0)                                           \
    X(SUB_CX, "c_sub", "", "", FAD_HOT | FAD_UC | FAD_LIN | FAD_CP,             \
      c - x, -1.0, 0.0, 0.0, 0.0, 0.0)                                          \
    X(MUL_C, "mul_c", "", "", FAD_HOT | FAD_UC | FAD_LIN | FAD_CP,              \
      x * c, c, 0.0, 0.0, 0.0, 0.0)                                             \
    X(DIV_C, "div_c", "", "", FAD_HOT | FAD_UC | FAD_LIN | FAD_CP,              \
      x / c, 1.0 / c, 0.0, 0.0, 0.0, 0.0)                                       \
    X(DIV_CX, "c_div", "", "", FAD_HOT | FAD_UC,                                \
      c / x, -v / x, 0.0, 2.0 * v / (x * x), 0.0, 0.0)                          \
    X(POW_C, "pow_c", "", "", FAD_HOT | FAD_UC,           /* the common square: no pow() */\
      (c == 2.0) ? x * x : pow(x, c),                                           \
      (c == 2.0) ? 2.0 * x : ((c == 0.0) ? 0.0 : c * pow(x, c - 1.0)), 0.0,     \
      (c == 2.0) ? 2.0 : ((c == 0.0 || c == 1.0) ? 0.0                          \
                                                 : c * (c - 1.0) * pow(x, c - 2.0)), \
      0.0, 0.0)                                                                 \
    X(POW_CX, "c_pow", "", "", FAD_UC,                                          \
      pow(c, x), (v == 0.0) ? 0.0 : v * log(c), 0.0,                            \
      (v == 0.0) ? 0.0 : v * log(c) * log(c), 0.0, 0.0)                         \
    X(ATAN2_C, "arctan2_c", "", "", FAD_UC,                                     \
      atan2(x, c), c / (x * x + c * c), 0.0,                                    \
      -2.0 * x * c / fad_sq(x * x + c * c), 0.0, 0.0)                           \
    X(ATAN2_CX, "c_arctan2", "", "", FAD_UC,                                    \
      atan2(c, x), -c / (x * x + c * c), 0.0,                                   \
      2.0 * x * c / fad_sq(x * x + c * c), 0.0, 0.0)                            \
    X(HYPOT_C, "hypot_c", "", "", FAD_UC,                                       \
      hypot(x, c), (v == 0.0) ? 0.0 : x / v, 0.0,                               \
      (v == 0.0) ? 0.0 : c * c / (v * v * v), 0.0, 0.0)                         \
    X(MAX_C, "maximum_c", "", "", FAD_UC | FAD_LIN,                             \
      fad_max(x, c), fad_max_d(x, c), 0.0, 0.0, 0.0, 0.0)                       \
    X(MIN_C, "minimum_c", "", "", FAD_UC | FAD_LIN,                             \
      fad_min(x, c), fad_max_d(c, x), 0.0, 0.0, 0.0, 0.0)                       \
    X(LOGADDEXP_C, "logaddexp_c", "", "", FAD_UC,                               \
      fad_logaddexp(x, c), fad_sigmoid(x - c), 0.0,                             \
      fad_sigmoid_d(x - c), 0.0, 0.0)                                           \
    X(LOGADDEXP2_C, "logaddexp2_c", "", "", FAD_UC,                             \
      fad_logaddexp2(x, c), fad_sigmoid((x - c) * FAD_LN2), 0.0,                \
      FAD_LN2 * fad_sigmoid_d((x - c) * FAD_LN2), 0.0, 0.0)                     \
    X(FMAX_C, "fmax_c", "", "", FAD_UC | FAD_LIN,                               \
      fmax(x, c), fad_fmax_d(x, c), 0.0, 0.0, 0.0, 0.0)                         \
    X(FMIN_C, "fmin_c", "", "", FAD_UC | FAD_LIN,                               \
      fmin(x, c), fad_fmax_d(-x, -c), 0.0, 0.0, 0.0, 0.0)                       \
    X(REMAINDER_C, "remainder_c", "", "", FAD_UC | FAD_LIN | FAD_CP,            \
      fad_remainder(x, c), 1.0, 0.0, 0.0, 0.0, 0.0)                             \
    X(REMAINDER_CX, "c_remainder", "", "", FAD_UC | FAD_LIN,                    \
      fad_remainder(c, x), -fad_floordiv(c, x), 0.0, 0.0, 0.0, 0.0)             \
    X(FMOD_C, "fmod_c", "", "", FAD_UC | FAD_LIN | FAD_CP,                      \
      fmod(x, c), 1.0, 0.0, 0.0, 0.0, 0.0)                                      \
    X(FMOD_CX, "c_fmod", "", "", FAD_UC | FAD_LIN,                              \
      fmod(c, x), -fad_fmod_q(c, x), 0.0, 0.0, 0.0, 0.0)                        \
    X(FLOORDIV_C, "floor_divide_c", "", "", FAD_UC | FAD_ZD | FAD_LIN | FAD_CP, \
      fad_floordiv(x, c), 0.0, 0.0, 0.0, 0.0, 0.0)                              \
    X(FLOORDIV_CX, "c_floor_divide", "", "", FAD_UC | FAD_ZD | FAD_LIN | FAD_CP, \
      fad_floordiv(c, x), 0.0, 0.0, 0.0, 0.0, 0.0)                              \
    X(COPYSIGN_C, "copysign_c", "", "", FAD_UC | FAD_LIN,                       \
      copysign(x, c), fad_copysign_d(x, c), 0.0, 0.0, 0.0, 0.0)                 \
    X(COPYSIGN_CX, "c_copysign", "", "", FAD_UC | FAD_ZD | FAD_LIN | FAD_CP,    \
      copysign(c, x), 0.0, 0.0, 0.0, 0.0, 0.0)                                  \
    X(HEAVISIDE_C, "heaviside_c", "", "", FAD_UC | FAD_ZD | FAD_LIN | FAD_CP,   \
      fad_heaviside(x, c), 0.0, 0.0, 0.0, 0.0, 0.0)                             \
    X(HEAVISIDE_CX, "c_heaviside", "", "", FAD_UC | FAD_LIN | FAD_CP,           \
      fad_heaviside(c, x), (c == 0) ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0)            \
    X(XLOGY_C, "xlogy_c", "", "", FAD_UC | FAD_LIN | FAD_CP,                    \
      fad_xlogy(x, c), log(c), 0.0, 0.0, 0.0, 0.0)                              \
    X(XLOGY_CX, "c_xlogy", "", "", FAD_UC,                                      \
      fad_xlogy(c, x), (c == 0) ? 0.0 : c / x, 0.0,                             \
      (c == 0) ? 0.0 : -c / (x * x), 0.0, 0.0)                                  \
    X(XLOG1PY_C, "xlog1py_c", "", "", FAD_UC | FAD_LIN | FAD_CP,                \
      fad_xlog1py(x, c), log1p(c), 0.0, 0.0, 0.0, 0.0)                          \
    X(XLOG1PY_CX, "c_xlog1py", "", "", FAD_UC,                                  \
      fad_xlog1py(c, x), (c == 0) ? 0.0 : c / (1.0 + x), 0.0,                   \
      (c == 0) ? 0.0 : -c / fad_sq(1.0 + x), 0.0, 0.0)                          \
    /* unary */                                                                 \
    X(NEG, "neg", "negative", "negative", FAD_HOT | FAD_U | FAD_LIN | FAD_CP,   \
      -x, -1.0, 0.0, 0.0, 0.0, 0.0)                                             \
    X(ABS, "abs", "absolute", "absolute", FAD_U | FAD_LIN | FAD_DX,                      \
      fabs(x), fad_sign(x), 0.0, 0.0, 0.0, 0.0)                                 \
    X(SIGN, "sign", "sign", "sign", FAD_U | FAD_ZD | FAD_LIN | FAD_CP,          \
      fad_sign(x), 0.0, 0.0, 0.0, 0.0, 0.0)                                     \
    X(SIN, "sin", "sin", "sin", FAD_HOT | FAD_U | FAD_DX, sin(x), cos(x), 0.0, -v, 0.0, 0.0)       \
    X(COS, "cos", "cos", "cos", FAD_HOT | FAD_U | FAD_DX, cos(x), -sin(x), 0.0, -v, 0.0, 0.0)      \
    X(TAN, "tan", "tan", "tan", FAD_U | FAD_DV,                                          \
      tan(x), 1.0 + v * v, 0.0, 2.0 * v * (1.0 + v * v), 0.0, 0.0)              \
    X(ASIN, "arcsin", "arcsin", "arcsin", FAD_U | FAD_DX,                                \
      asin(x), 1.0 / sqrt(1.0 - x * x), 0.0,                                    \
      x / ((1.0 - x * x) * sqrt(1.0 - x * x)), 0.0, 0.0)                        \
    X(ACOS, "arccos", "arccos", "arccos", FAD_U | FAD_DX,                                \
      acos(x), -1.0 / sqrt(1.0 - x * x), 0.0,                                   \
      -x / ((1.0 - x * x) * sqrt(1.0 - x * x)), 0.0, 0.0)                       \
    X(ATAN, "arctan", "arctan", "arctan", FAD_U | FAD_DX,                                \
      atan(x), 1.0 / (1.0 + x * x), 0.0, -2.0 * x / fad_sq(1.0 + x * x), 0.0, 0.0) \
    X(SINH, "sinh", "sinh", "sinh", FAD_U | FAD_DX, sinh(x), cosh(x), 0.0, v, 0.0, 0.0)  \
    X(ARCSINH, "arcsinh", "arcsinh", "arcsinh", FAD_U | FAD_DX,                 \
      asinh(x), 1.0 / sqrt(1.0 + x * x), 0.0,                                   \
      -x / ((1.0 + x * x) * sqrt(1.0 + x * x)), 0.0, 0.0)                       \
    X(COSH, "cosh", "cosh", "cosh", FAD_U | FAD_DX, cosh(x), sinh(x), 0.0, v, 0.0, 0.0)  \
    X(TANH, "tanh", "tanh", "tanh", FAD_HOT | FAD_U | FAD_DV,                            \
      tanh(x), 1.0 - v * v, 0.0, -2.0 * v * (1.0 - v * v), 0.0, 0.0)            \
    X(EXP, "exp", "exp", "exp", FAD_HOT | FAD_U | FAD_DV, exp(x), v, 0.0, v, 0.0, 0.0)   \
    X(EXP2, "exp2", "exp2", "exp2", FAD_U | FAD_DV,                             \
      exp2(x), v * FAD_LN2, 0.0, v * FAD_LN2 * FAD_LN2, 0.0, 0.0)               \
    X(EXPM1, "expm1", "expm1", "expm1", FAD_U | FAD_DV,                                  \
      expm1(x), v + 1.0, 0.0, v + 1.0, 0.0, 0.0)                                \
    X(LOG, "log", "log", "log", FAD_HOT | FAD_U | FAD_DX,                                \
      log(x), 1.0 / x, 0.0, -1.0 / (x * x), 0.0, 0.0)                           \
    X(LOG1P, "log1p", "log1p", "log1p", FAD_U | FAD_DX,                                  \
      log1p(x), 1.0 / (1.0 + x), 0.0, -1.0 / fad_sq(1.0 + x), 0.0, 0.0)         \
    X(LOG2, "log2", "log2", "log2", FAD_U | FAD_DX,                                      \
      log2(x), 1.0 / (x * FAD_LN2), 0.0, -1.0 / (x * x * FAD_LN2), 0.0, 0.0)    \
    X(LOG10, "log10", "log10", "log10", FAD_U | FAD_DX,                                  \
      log10(x), 1.0 / (x * FAD_LN10), 0.0, -1.0 / (x * x * FAD_LN10), 0.0, 0.0) \
    X(SQRT, "sqrt", "sqrt", "sqrt", FAD_HOT | FAD_U | FAD_DV,                            \
      sqrt(x), 0.5 / v, 0.0, -0.25 / (v * v * v), 0.0, 0.0)                     \
    X(CBRT, "cbrt", "cbrt", "cbrt", FAD_U | FAD_DV,                                      \
      cbrt(x), 1.0 / (3.0 * v * v), 0.0, -2.0 / (9.0 * v * v * v * v * v), 0.0, 0.0) \
    X(SQUARE, "square", "square", "square", FAD_HOT | FAD_U | FAD_DX,                    \
      x * x, 2.0 * x, 0.0, 2.0, 0.0, 0.0)                                       \
    X(SIGMOID, "sigmoid", "sigmoid", "", FAD_U | FAD_DX,                                 \
      fad_sigmoid(x), fad_sigmoid_d(x), 0.0,                                    \
      fad_sigmoid_d(x) * (1.0 - 2.0 * v), 0.0, 0.0)                             \
    X(SOFTPLUS, "softplus", "softplus", "", FAD_U | FAD_DX,                              \
      log1p(exp(-fabs(x))) + (x > 0 ? x : 0.0), fad_sigmoid(x), 0.0,            \
      fad_sigmoid_d(x), 0.0, 0.0)                                               \
    X(RELU, "relu", "relu", "", FAD_U | FAD_LIN | FAD_DX,                                \
      (x > 0 || x != x) ? x : 0.0, (x > 0) ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0)     \
    X(ERF, "erf", "erf", "", FAD_U | FAD_DX,                                             \
      erf(x), FAD_2_SQRTPI * exp(-x * x), 0.0,                                  \
      -2.0 * x * FAD_2_SQRTPI * exp(-x * x), 0.0, 0.0)                          \
    X(RECIPROCAL, "reciprocal", "reciprocal", "reciprocal", FAD_U | FAD_DV,     \
      1.0 / x, -v * v, 0.0, 2.0 * v * v * v, 0.0, 0.0)                          \
    X(ARCCOSH, "arccosh", "arccosh", "arccosh", FAD_U | FAD_DX,                 \
      acosh(x), 1.0 / sqrt((x - 1.0) * (x + 1.0)), 0.0,                         \
      -x / ((x - 1.0) * (x + 1.0) * sqrt((x - 1.0) * (x + 1.0))), 0.0, 0.0)     \
    X(ARCTANH, "arctanh", "arctanh", "arctanh", FAD_U | FAD_DX,                 \
      atanh(x), 1.0 / ((1.0 - x) * (1.0 + x)), 0.0,                             \
      2.0 * x / fad_sq((1.0 - x) * (1.0 + x)), 0.0, 0.0)                        \
    X(DEG2RAD, "deg2rad", "deg2rad", "deg2rad", FAD_U | FAD_LIN | FAD_CP,       \
      x * (FAD_PI / 180.0), FAD_PI / 180.0, 0.0, 0.0, 0.0, 0.0)                 \
    X(RAD2DEG, "rad2deg", "rad2deg", "rad2deg", FAD_U | FAD_LIN | FAD_CP,       \
      x * (180.0 / FAD_PI), 180.0 / FAD_PI, 0.0, 0.0, 0.0, 0.0)                 \
    X(FLOOR, "floor", "floor", "floor", FAD_U | FAD_ZD | FAD_LIN | FAD_CP,      \
      floor(x), 0.0, 0.0, 0.0, 0.0, 0.0)                                        \
    X(CEIL, "ceil", "ceil", "ceil", FAD_U | FAD_ZD | FAD_LIN | FAD_CP,          \
      ceil(x), 0.0, 0.0, 0.0, 0.0, 0.0)                                         \
    X(TRUNC, "trunc", "trunc", "trunc", FAD_U | FAD_ZD | FAD_LIN | FAD_CP,      \
      trunc(x), 0.0, 0.0, 0.0, 0.0, 0.0)                                        \
    X(RINT, "rint", "rint", "rint", FAD_U | FAD_ZD | FAD_LIN | FAD_CP,          \
      rint(x), 0.0, 0.0, 0.0, 0.0, 0.0)                                         \
    X(SINC, "sinc", "sinc", "", FAD_U | FAD_DX,                                 \
      fad_sinc(x), fad_sinc_d(x, 1), 0.0, fad_sinc_d(x, 2), 0.0, 0.0)           \
    X(LOGIT, "logit", "logit", "", FAD_U | FAD_DX,                              \
      fad_logit(x), 1.0 / (x * (1.0 - x)), 0.0,                                 \
      (2.0 * x - 1.0) / fad_sq(x * (1.0 - x)), 0.0, 0.0)                        \
    X(ERFC, "erfc", "erfc", "", FAD_U | FAD_DX,                                 \
      erfc(x), -FAD_2_SQRTPI * exp(-x * x), 0.0,                                \
      2.0 * x * FAD_2_SQRTPI * exp(-x * x), 0.0, 0.0)                           \
    X(ERFINV, "erfinv", "erfinv", "", FAD_U | FAD_DV,                           \
      fad_erfinv(x), FAD_SQRTPI_2 * exp(v * v), 0.0,                            \
      2.0 * v * fad_sq(FAD_SQRTPI_2 * exp(v * v)), 0.0, 0.0)                    \
    X(ERFCINV, "erfcinv", "erfcinv", "", FAD_U | FAD_DV,                        \
      fad_erfcinv(x), -FAD_SQRTPI_2 * exp(v * v), 0.0,                          \
      2.0 * v * fad_sq(FAD_SQRTPI_2 * exp(v * v)), 0.0, 0.0)                    \
    X(NDTR, "ndtr", "ndtr", "", FAD_U | FAD_DX,                                 \
      fad_ndtr(x), exp(-0.5 * x * x) / FAD_SQRT_2PI, 0.0,                       \
      -x * exp(-0.5 * x * x) / FAD_SQRT_2PI, 0.0, 0.0)                          \
    X(LOG_NDTR, "log_ndtr", "log_ndtr", "", FAD_U | FAD_D0X | FAD_D0V,          \
      fad_log_ndtr(x), fad_log_ndtr_d(x, v, 1), 0.0, fad_log_ndtr_d(x, v, 2), 0.0, 0.0) \
    X(NDTRI, "ndtri", "ndtri", "", FAD_U | FAD_DV,                              \
      fad_ndtri(x), FAD_SQRT_2PI * exp(0.5 * v * v), 0.0,                       \
      v * fad_sq(FAD_SQRT_2PI * exp(0.5 * v * v)), 0.0, 0.0)                    \
    X(GAMMALN, "gammaln", "gammaln", "", FAD_U | FAD_DX,                        \
      lgamma(x), fad_polygamma(0, x), 0.0, fad_polygamma(1, x), 0.0, 0.0)      \
    X(DIGAMMA, "digamma", "digamma", "", FAD_U | FAD_DX,                        \
      fad_polygamma(0, x), fad_polygamma(1, x), 0.0, fad_polygamma(2, x), 0.0, 0.0) \
    /* comparisons: x (op) y, x (op) c; a > b is recorded as b < a */           \
    X(LT, "lt", "", "less", FAD_B | FAD_CMPF, x < y, 0.0, 0.0, 0.0, 0.0, 0.0)   \
    X(LE, "le", "", "less_equal", FAD_B | FAD_CMPF, x <= y, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(EQ, "eq", "", "equal", FAD_B | FAD_CMPF, x == y, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(NE, "ne", "", "not_equal", FAD_B | FAD_CMPF, x != y, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(LT_C, "lt_c", "", "", FAD_UC | FAD_CMPF, x < c, 0.0, 0.0, 0.0, 0.0, 0.0)  \
    X(LE_C, "le_c", "", "", FAD_UC | FAD_CMPF, x <= c, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(GT_C, "gt_c", "", "greater", FAD_UC | FAD_CMPF, x > c, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(GE_C, "ge_c", "", "greater_equal", FAD_UC | FAD_CMPF,                     \
      x >= c, 0.0, 0.0, 0.0, 0.0, 0.0)                                          \
    X(EQ_C, "eq_c", "", "", FAD_UC | FAD_CMPF, x == c, 0.0, 0.0, 0.0, 0.0, 0.0) \
    X(NE_C, "ne_c", "", "", FAD_UC | FAD_CMPF, x != c, 0.0, 0.0, 0.0, 0.0, 0.0)

#define FAD_ENUM_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) FAD_##E,
enum fad_op { FAD_OPS(FAD_ENUM_) FAD_NUM_OPS };
#undef FAD_ENUM_

#define FAD_NAME_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) s,
static const char *const fad_op_name[FAD_NUM_OPS] = {FAD_OPS(FAD_NAME_)};
#undef FAD_NAME_

#define FAD_FUNC_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) f,
static const char *const fad_op_function[FAD_NUM_OPS] = {FAD_OPS(FAD_FUNC_)};
#undef FAD_FUNC_

#define FAD_UFUNC_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) u,
static const char *const fad_op_ufunc[FAD_NUM_OPS] = {FAD_OPS(FAD_UFUNC_)};
#undef FAD_UFUNC_

#define FAD_FLAGS_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) (fl),
static const int fad_op_flags[FAD_NUM_OPS] = {FAD_OPS(FAD_FLAGS_)};
#undef FAD_FLAGS_

/* The first partials' source text: lets array code pass an operand's or the
   output's values through where a partial is one of them (exp: "v"). */
#define FAD_D0SRC_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) #D0,
static const char *const fad_op_d0_source[FAD_NUM_OPS] = {FAD_OPS(FAD_D0SRC_)};
#undef FAD_D0SRC_
#define FAD_D1SRC_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) #D1,
static const char *const fad_op_d1_source[FAD_NUM_OPS] = {FAD_OPS(FAD_D1SRC_)};
#undef FAD_D1SRC_

#define FAD_FIRST_CMP FAD_LT

/* One node of the tape: local partials and argument slots.  The value of
 * node i lives in a separate array so sweeps that need only partials stay
 * in 24 bytes per node.  A unary node has a1 == -1 and its constant in c. */
typedef struct {
    double p0;
    union { double p1; double c; };
    int32_t a0, a1;
} fad_node;

/* Value and first partials of op at (x, y, c); *d1 is 0 for unary ops.
 * fad_eval_all switches over every op; fad_eval (below) handles the FAD_HOT
 * ops inline and calls it for the rest. */
FAD_COLD double fad_eval_all(int op, double x, double y, double c,
                             double *d0, double *d1)
{
    double v;
    switch (op) {
#define FAD_EVAL_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    case FAD_##E: v = (V); *d0 = (D0); *d1 = (D1); return v;
    FAD_OPS(FAD_EVAL_)
#undef FAD_EVAL_
    default: *d0 = 0.0; *d1 = 0.0; return x;
    }
}

/* The switch cases of the FAD_HOT ops only: (fl) is a constant, so every
 * other case folds to a break (to the call), and its code is never emitted. */
#define FAD_HOT_EVAL_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    case FAD_##E:                                                              \
        if ((fl) & FAD_HOT) { v = (V); *d0 = (D0); *d1 = (D1); return v; }    \
        break;

FAD_INLINE double fad_eval(int op, double x, double y, double c,
                           double *d0, double *d1)
{
    double v;
    switch (op) {
    FAD_OPS(FAD_HOT_EVAL_)
    default: break;
    }
    {
        double q0, q1;      /* (not d0, d1: their address would keep the
                               caller's partials in memory on the inline path) */
        v = fad_eval_all(op, x, y, c, &q0, &q1);
        *d0 = q0;
        *d1 = q1;
        return v;
    }
}
#undef FAD_HOT_EVAL_

/* A node's value and stored fields at (x, y, c) (replay): p0 = df/dx, and
 * the field that p1 and c share gets df/dy for a binary node, c for a unary
 * one (which the switch folds per op: no test at run time).  As fad_eval:
 * the FAD_HOT ops inline, the others through fad_node_eval_all. */
#define FAD_NODE_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    v = (V); *p0 = (D0); *p1_or_c = ((fl) & FAD_BINARY) ? (D1) : c; return v;

FAD_COLD double fad_node_eval_all(int op, double x, double y, double c,
                                  double *p0, double *p1_or_c)
{
    double v;
    switch (op) {
#define FAD_NODE_ALL_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    case FAD_##E: FAD_NODE_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)
    FAD_OPS(FAD_NODE_ALL_)
#undef FAD_NODE_ALL_
    default: *p0 = 0.0; *p1_or_c = c; return x;
    }
}

FAD_INLINE double fad_node_eval(int op, double x, double y, double c,
                                double *p0, double *p1_or_c)
{
    double v;
    switch (op) {
#define FAD_NODE_HOT_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    case FAD_##E:                                                              \
        if ((fl) & FAD_HOT) { FAD_NODE_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) } \
        break;
    FAD_OPS(FAD_NODE_HOT_)
#undef FAD_NODE_HOT_
    default: break;
    }
    {
        double q0, q1;
        v = fad_node_eval_all(op, x, y, c, &q0, &q1);
        *p0 = q0;
        *p1_or_c = q1;
        return v;
    }
}
#undef FAD_NODE_

/*
 * The scalar replay with one lane (tape(x), tape.gradient(x)): for i = lo ..
 * hi-1 the value val[i] and the node's fields into out[i] (fad_node_eval),
 * stopping at a comparison that comes out otherwise than recorded (returns
 * its slot; -1 when none).  With GCC or Clang it is threaded code: each
 * FAD_HOT op's code ends in its own jump to the next node's op (labels as
 * values), and reads its operands as its kind says (no test of a1); the
 * other ops share one call to fad_node_eval_all.  This restored the replay's
 * speed from before the table grew (issue #19): a loop around fad_node_eval
 * with the FAD_HOT ops inline took ~1.2x its time per node.  Elsewhere (and
 * with FAD_PORTABLE_DISPATCH defined) it is that loop.
 */
static inline ptrdiff_t fad_replay_nodes(const uint8_t *op, const fad_node *nd,
                                         const double *recorded, double *val,
                                         fad_node *out, ptrdiff_t lo, ptrdiff_t hi)
{
    ptrdiff_t i = lo;
    double x, y, v, d0, d1;
    int32_t a0, a1;
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FAD_PORTABLE_DISPATCH)
    /* one entry per uint8_t op code: a code past the table is replayed as
       fad_node_eval_all replays it (its default case) */
#define FAD_TARGET_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) [FAD_##E] = &&fad_op_##E,
    static const void *const target[256] = {
        [0 ... 255] = &&fad_cold,
        FAD_OPS(FAD_TARGET_)
    };
#undef FAD_TARGET_
#define FAD_STORE_NEXT_                                                        \
    val[i] = v; out[i].p0 = d0; out[i].p1 = d1; out[i].a0 = a0; out[i].a1 = a1; \
    if (++i >= hi) return -1;                                                  \
    a0 = nd[i].a0; a1 = nd[i].a1;                                              \
    goto *target[op[i]];
#define FAD_THREAD_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                     \
    fad_op_##E:                                                                \
    if ((fl) & FAD_HOT) {                                                      \
        const double c = nd[i].c;                                              \
        x = val[a0];                                                           \
        y = ((fl) & FAD_BINARY) ? val[a1] : 0.0;                               \
        v = (V); d0 = (D0); d1 = ((fl) & FAD_BINARY) ? (D1) : c;               \
        (void)c; (void)y;                                                      \
        if (((fl) & FAD_CMP) && v != recorded[i]) return i;                    \
        FAD_STORE_NEXT_                                                        \
    }                                                                          \
    goto fad_cold;
    if (i >= hi) return -1;
    a0 = nd[i].a0; a1 = nd[i].a1;
    goto *target[op[i]];
    FAD_OPS(FAD_THREAD_)
fad_cold:
    {
        double q0, q1;
        x = val[a0];
        y = (a1 >= 0) ? val[a1] : 0.0;
        v = fad_node_eval_all(op[i], x, y, nd[i].c, &q0, &q1);
        if (op[i] >= FAD_FIRST_CMP && v != recorded[i]) return i;
        d0 = q0;
        d1 = q1;
    }
    FAD_STORE_NEXT_
#undef FAD_THREAD_
#undef FAD_STORE_NEXT_
#else
    for (; i < hi; i++) {
        int o = op[i];
        a0 = nd[i].a0;
        a1 = nd[i].a1;
        x = val[a0];
        y = (a1 >= 0) ? val[a1] : 0.0;
        v = fad_node_eval(o, x, y, nd[i].c, &d0, &d1);
        if (o >= FAD_FIRST_CMP && v != recorded[i]) return i;
        val[i] = v; out[i].p0 = d0; out[i].p1 = d1; out[i].a0 = a0; out[i].a1 = a1;
    }
    return -1;
#endif
}

/* Second partials of op at (x, y, c) with value v = f(x, y, c); as
 * fad_eval, the FAD_HOT ops inline and the others through fad_second_all. */
FAD_COLD void fad_second_all(int op, double x, double y, double c, double v,
                             double *dxx, double *dxy, double *dyy)
{
    switch (op) {
#define FAD_SECOND_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) \
    case FAD_##E: *dxx = (XX); *dxy = (XY); *dyy = (YY); return;
    FAD_OPS(FAD_SECOND_)
#undef FAD_SECOND_
    default: *dxx = 0.0; *dxy = 0.0; *dyy = 0.0; return;
    }
}

FAD_INLINE void fad_second(int op, double x, double y, double c, double v,
                           double *dxx, double *dxy, double *dyy)
{
    switch (op) {
#define FAD_SECOND_HOT_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                 \
    case FAD_##E:                                                              \
        if ((fl) & FAD_HOT) { *dxx = (XX); *dxy = (XY); *dyy = (YY); return; } \
        break;
    FAD_OPS(FAD_SECOND_HOT_)
#undef FAD_SECOND_HOT_
    default: break;
    }
    {
        double q0, q1, q2;      /* (as in fad_eval) */
        fad_second_all(op, x, y, c, v, &q0, &q1, &q2);
        *dxx = q0;
        *dxy = q1;
        *dyy = q2;
    }
}

/*
 * The table over n elements (array blocks): x[i * sx], y[i * sy] (a stride
 * of 0 broadcasts one number).  mode FAD_MAP_VALUES: values into o0 and
 * first partials into o1, o2; FAD_MAP_PARTIALS: first partials into o1, o2
 * with v read from val[i * sv]; FAD_MAP_SECOND: second partials into o0,
 * o1, o2, v from val.  Any output may be NULL.  One loop per op, so the
 * compiler sees each op's expressions inline.
 */
enum { FAD_MAP_VALUES = 0, FAD_MAP_SECOND = 1, FAD_MAP_PARTIALS = 2 };

/* One function per op (a switch over all ops in one function made the
 * compiler's dataflow passes, superlinear in a function's size, the larger
 * part of this loop's compile time), called through a table. */
typedef void (*fad_map_fn)(int mode, ptrdiff_t n, const double *xp, ptrdiff_t sx,
                           const double *yp, ptrdiff_t sy, double c,
                           const double *val, ptrdiff_t sv,
                           double *o0, double *o1, double *o2);
#define FAD_MAP_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                        \
static inline void fad_map_##E(int mode, ptrdiff_t n, const double *xp,        \
                               ptrdiff_t sx, const double *yp, ptrdiff_t sy,   \
                               double c, const double *val, ptrdiff_t sv,      \
                               double *o0, double *o1, double *o2)             \
{                                                                              \
    ptrdiff_t i;                                                               \
    double x, y, v;                                                            \
    for (i = 0; i < n; i++) {                                                  \
        x = xp[i * sx]; y = yp[i * sy];                                        \
        if (mode == FAD_MAP_SECOND) {                                          \
            v = val[i * sv];                                                   \
            if (o0) o0[i] = (XX);                                              \
            if (o1) o1[i] = (XY);                                              \
            if (o2) o2[i] = (YY);                                              \
        } else {                                                               \
            if (mode == FAD_MAP_VALUES) {                                      \
                v = (V);                                                       \
                if (o0) o0[i] = v;                                             \
            } else {                                                           \
                v = val[i * sv];                                               \
            }                                                                  \
            if (o1) o1[i] = (D0);                                              \
            if (o2) o2[i] = (D1);                                              \
        }                                                                      \
    }                                                                          \
    (void)c; (void)x; (void)y; (void)v;                                        \
}
FAD_OPS(FAD_MAP_)
#undef FAD_MAP_
#define FAD_MAP_PTR_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) fad_map_##E,

static inline void fad_map(int op, int mode, ptrdiff_t n, const double *xp,
                           ptrdiff_t sx, const double *yp, ptrdiff_t sy, double c,
                           const double *val, ptrdiff_t sv,
                           double *o0, double *o1, double *o2)
{
    static const fad_map_fn table[FAD_NUM_OPS] = {FAD_OPS(FAD_MAP_PTR_)};
    if (op >= 0 && op < FAD_NUM_OPS)
        table[op](mode, n, xp, sx, yp, sy, c, val, sv, o0, o1, o2);
}
#undef FAD_MAP_PTR_

/*
 * An array block's partial times k lanes, in one pass: out[i k + j] (+)=
 * d(i) t[i k + j], where d is df/dx (which == 0) or df/dy (which == 1)
 * computed inline from x[i sx], y[i sy], c and v[i sv].  This is both the
 * pullback (t: cotangents) and the push forward (t: tangents) of one
 * operand.  Strong zeros: a zero partial, or a zero lane, gives an exact
 * zero even where the other factor is inf or NaN.  out may be t.  The ops
 * that take a constant (FAD_HAS_C) are left out: an array block passes its
 * constants as operands (a stride of 0), and their loops would only cost
 * compile time; the caller refuses them, and which == 1 for a one-operand op.
 */
typedef void (*fad_times_fn)(int which, ptrdiff_t n, ptrdiff_t k,
                             const double *xp, ptrdiff_t sx,
                             const double *yp, ptrdiff_t sy, double c,
                             const double *vp, ptrdiff_t sv,
                             const double *t, double *out, int accumulate);
#define FAD_LANE1_(D, ACC)                                                     \
    {                                                                          \
        const double *xq = xp, *yq = yp, *vq = vp;                             \
        for (i = 0; i < n; i++, xq += sx, yq += sy, vq += sv) {                \
            x = *xq; y = *yq; v = *vq;                                         \
            d = (D);                                                           \
            q = d * t[i];                                                      \
            out[i] = ACC ((q != q && (d == 0.0 || t[i] == 0.0)) ? 0.0 : q);    \
        }                                                                      \
    }
#define FAD_TIMES_(E, s, f, u, fl, V, D0, D1, XX, XY, YY)                      \
static inline void fad_times_##E(int which, ptrdiff_t n, ptrdiff_t k,          \
                                 const double *xp, ptrdiff_t sx,               \
                                 const double *yp, ptrdiff_t sy, double c,     \
                                 const double *vp, ptrdiff_t sv,               \
                                 const double *t, double *out, int accumulate) \
{                                                                              \
    ptrdiff_t i, j;                                                            \
    double x, y, v, d, q;                                                      \
    if ((fl) & FAD_HAS_C) return;   /* not an array op: no loops emitted */    \
    if (k == 1) {             /* one lane: a select, no branch per element */  \
        if (((fl) & FAD_BINARY) && which) {                                    \
            if (accumulate) FAD_LANE1_(D1, out[i] +) else FAD_LANE1_(D1, )      \
        } else {                                                               \
            if (accumulate) FAD_LANE1_(D0, out[i] +) else FAD_LANE1_(D0, )      \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    for (i = 0; i < n; i++) {                                                  \
        x = xp[i * sx]; y = yp[i * sy]; v = vp[i * sv];                        \
        d = (((fl) & FAD_BINARY) && which) ? (D1) : (D0);                      \
        if (d == 0.0) {                                                        \
            if (!accumulate) for (j = 0; j < k; j++) out[i * k + j] = 0.0;     \
        } else if (isfinite(d)) {                                              \
            if (accumulate) for (j = 0; j < k; j++) out[i * k + j] += d * t[i * k + j]; \
            else for (j = 0; j < k; j++) out[i * k + j] = d * t[i * k + j];    \
        } else {                                                               \
            for (j = 0; j < k; j++) {                                          \
                q = t[i * k + j];                                              \
                q = (q == 0.0) ? 0.0 : d * q;                                  \
                if (accumulate) out[i * k + j] += q; else out[i * k + j] = q;  \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    (void)c; (void)x; (void)y; (void)v;                                        \
}
FAD_OPS(FAD_TIMES_)
#undef FAD_TIMES_
#undef FAD_LANE1_
#define FAD_TIMES_PTR_(E, s, f, u, fl, V, D0, D1, XX, XY, YY) fad_times_##E,

static inline void fad_times_partial(int op, int which, ptrdiff_t n, ptrdiff_t k,
                                     const double *xp, ptrdiff_t sx,
                                     const double *yp, ptrdiff_t sy, double c,
                                     const double *vp, ptrdiff_t sv,
                                     const double *t, double *out, int accumulate)
{
    static const fad_times_fn table[FAD_NUM_OPS] = {FAD_OPS(FAD_TIMES_PTR_)};
    if (op >= 0 && op < FAD_NUM_OPS)
        table[op](which, n, k, xp, sx, yp, sy, c, vp, sv, t, out, accumulate);
}
#undef FAD_TIMES_PTR_

#endif /* FASTAD_OPS_H */
