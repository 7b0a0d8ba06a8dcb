/*
 * The scalar functions behind the op table's entries (csrc/fastad_ops.h):
 * stable forms (sigmoid, logaddexp, xlogy), the one-sided conventions at
 * kinks and jumps, and the special functions (erfinv, digamma, ndtr and
 * friends).  The table's value and partial expressions call them by name;
 * nested transforms translate those calls to Python (fastad._nested), so a
 * new helper here needs its traced twin there.
 */
#ifndef FASTAD_SPECIAL_H
#define FASTAD_SPECIAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define FAD_LN2 0.69314718055994530942
#define FAD_LN10 2.30258509299404568402
#define FAD_2_SQRTPI 1.12837916709551257390

/* The special functions' long bodies are called, not inlined: inlined into
   every generated loop (each op x mode x stride) they made one module take
   most of the build's time, and each costs far more than a call anyway. */
#if defined(__GNUC__) || defined(__clang__)
#define FAD_COLD static __attribute__((noinline, unused))
#define FAD_INLINE static inline __attribute__((always_inline, unused))
#else
#define FAD_COLD static
#define FAD_INLINE static inline
#endif

static inline double fad_sq(double t) { return t * t; }

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

/* sign with NaN passed through (abs' and sign share it; abs'(0) = 0) */
static inline double fad_sign(double x)
{
    return (x > 0) ? 1.0 : ((x < 0) ? -1.0 : ((x == 0) ? 0.0 : x));
}

/* max/min propagate NaN like numpy.maximum; ties split the derivative. */
static inline double fad_max(double x, double y)
{
    if (x > y) return x;
    if (x < y) return y;
    return (x != x) ? x : y;
}

static inline double fad_min(double x, double y)
{
    if (x < y) return x;
    if (x > y) return y;
    return (x != x) ? x : y;
}

static inline double fad_max_d(double x, double y)
{
    return (x > y) ? 1.0 : ((x < y) ? 0.0 : 0.5);
}

static inline double fad_logaddexp(double x, double y)
{
    if (x == y) return x + FAD_LN2;      /* also -inf, -inf and inf, inf */
    return fmax(x, y) + log1p(exp(-fabs(x - y)));
}

/* ---- helpers of the ops added for NumPy's and SciPy's ufuncs (issue #16) ---- */

#define FAD_PI 3.14159265358979323846
#define FAD_LOG2E 1.44269504088896340736
#define FAD_SQRT_2PI 2.50662827463100050242   /* sqrt(2 pi) */
#define FAD_LN_SQRT_2PI 0.91893853320467274178 /* log(sqrt(2 pi)) */
#define FAD_SQRTPI_2 0.88622692545275801365   /* sqrt(pi) / 2 */

/* fmax/fmin ignore a NaN operand: the other one is the value and gets the
 * derivative; ties split it, as for maximum/minimum. */
static inline double fad_fmax_d(double x, double y)
{
    if (x > y) return 1.0;
    if (x < y) return 0.0;
    if (x == y) return 0.5;
    if (x != x) return (y != y) ? 0.5 : 0.0;
    return 1.0;
}

static inline double fad_logaddexp2(double x, double y)
{
    /* NumPy's npy_logaddexp2, step for step */
    double t;
    if (x == y) return x + 1.0;
    t = x - y;
    if (t > 0) return x + FAD_LOG2E * log1p(exp2(-t));
    if (t <= 0) return y + FAD_LOG2E * log1p(exp2(t));
    return t;
}

/* NumPy's npy_divmod: the floor quotient, and the remainder with the sign of
 * b, so arrays (NumPy's loops) and scalars (this table) agree bit for bit. */
static inline double fad_divmod(double a, double b, double *modulus)
{
    double mod = fmod(a, b), div, floordiv;
    if (!b) { *modulus = mod; return a / b; }
    div = (a - mod) / b;
    if (mod) {
        if ((b < 0) != (mod < 0)) { mod += b; div -= 1.0; }
    } else {
        mod = copysign(0.0, b);
    }
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, a / b);
    }
    *modulus = mod;
    return floordiv;
}

static inline double fad_remainder(double a, double b)
{
    double m;
    if (!b) return fmod(a, b);
    fad_divmod(a, b, &m);
    return m;
}

static inline double fad_floordiv(double a, double b)
{
    double m;
    if (!b) return a / b;
    return fad_divmod(a, b, &m);
}

/* the integer q with fmod(a, b) = a - q b (q = trunc(a / b), made exact) */
static inline double fad_fmod_q(double a, double b)
{
    return rint((a - fmod(a, b)) / b);
}

static inline double fad_heaviside(double x, double h)
{
    if (x != x) return x;
    if (x == 0) return h;
    return (x < 0) ? 0.0 : 1.0;
}

/* d copysign(x, y) / dx = sign(x) times y's sign: |x|'s convention at 0 */
static inline double fad_copysign_d(double x, double y)
{
    return signbit(y) ? -fad_sign(x) : fad_sign(x);
}

/* NumPy's normalized sinc(x) = sin(pi x) / (pi x), and its derivatives:
 * a series in t = pi x for |t| < 4 (no cancellation near 0), closed forms
 * outside. */
static inline double fad_sinc(double x)
{
    double t;
    if (x == 0) return 1.0;
    t = FAD_PI * x;
    return sin(t) / t;
}

FAD_COLD double fad_sinc_d(double x, int order)
{
    double t = FAD_PI * x, u, e, s1 = 0.0, s2 = 0.0, st;
    int n;
    if (fabs(t) < 4.0) {
        /* e_n = (-1)^n t^(2n-2) / (2n+1)!:  s' = t sum 2n e_n,
           s'' = sum 2n (2n-1) e_n */
        u = t * t;
        e = -1.0 / 6.0;
        for (n = 1; n <= 20; n++) {
            if (n > 1) e *= -u / ((2.0 * n) * (2.0 * n + 1.0));
            s1 += 2.0 * n * e;
            s2 += 2.0 * n * (2.0 * n - 1.0) * e;
        }
        s1 *= t;
    } else {
        st = sin(t) / t;
        s1 = (cos(t) - st) / t;
        s2 = -st - 2.0 * s1 / t;
    }
    return (order == 1) ? FAD_PI * s1 : FAD_PI * FAD_PI * s2;
}

/* logit as SciPy computes it (precise near 1/2) */
static inline double fad_logit(double x)
{
    double s;
    if (x < 0.3 || x > 0.65) return log(x / (1.0 - x));
    s = 2.0 * (x - 0.5);
    return log1p(s) - log1p(-s);
}

/* y >= 0 with erf(y) = a and erfc(y) = q, a + q = 1, both given exactly
 * where they matter: an initial guess (Giles 2010 for moderate tails, the
 * asymptotic expansion of erfc beyond), then Halley steps on erf (a <= 1/2)
 * or on erfc (the tail: relative accuracy in q), to full precision. */
FAD_COLD double fad_erfinv_core(double a, double q)
{
    double w = -log(q * (1.0 + a)), y, p, f, d, t;
    int i;
    if (w < 5.0) {
        w -= 2.5;
        p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w;
        p = -3.5233877e-06 + p * w;
        p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w;
        p = -0.00125372503 + p * w;
        p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w;
        p = 1.50140941 + p * w;
        y = p * a;
    } else if (w < 16.0) {
        w = sqrt(w) - 3.0;
        p = -0.000200214257;
        p = 0.000100950558 + p * w;
        p = 0.00134934322 + p * w;
        p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w;
        p = -0.0076224613 + p * w;
        p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w;
        p = 2.83297682 + p * w;
        y = p * a;
    } else {
        t = -log(q);           /* erfc(y) ~ exp(-y^2) / (y sqrt(pi)) */
        y = sqrt(t - 0.5 * log(FAD_PI * t));
    }
    for (i = 0; i < 12; i++) {
        f = (a <= 0.5) ? erf(y) - a : q - erfc(y);
        p = FAD_2_SQRTPI * exp(-y * y);
        if (p == 0.0) break;                    /* (denormal q: as far as it goes) */
        d = f / p;                              /* Newton's step f / f' */
        d = d / (1.0 + y * d);                  /* Halley's (f'' = -2 y f') */
        y -= d;
        if (!(fabs(d) > 1e-15 * fabs(y))) break;
    }
    return y;
}

FAD_COLD double fad_erfinv(double x)
{
    double a = fabs(x);
    if (!(a < 1.0)) return (a == 1.0) ? copysign(INFINITY, x) : NAN;
    if (a == 0.0) return x;
    return copysign(fad_erfinv_core(a, 1.0 - a), x);
}

FAD_COLD double fad_erfcinv(double q)
{
    if (!(q > 0.0 && q < 2.0)) {
        if (q == 0.0) return INFINITY;
        if (q == 2.0) return -INFINITY;
        return NAN;
    }
    if (q == 1.0) return 0.0;
    if (q < 1.0) return fad_erfinv_core(1.0 - q, q);
    q = 2.0 - q;                                 /* exact for q in [1, 2] */
    return -fad_erfinv_core(1.0 - q, q);
}

/* The standard normal CDF, as SciPy (Cephes) computes it */
FAD_COLD double fad_ndtr(double x)
{
    double t = x * 0.70710678118654752440, z = fabs(t), y;
    if (x != x) return x;
    if (z < 0.70710678118654752440) return 0.5 + 0.5 * erf(t);
    y = 0.5 * erfc(z);
    return (t > 0) ? 1.0 - y : y;
}

FAD_COLD double fad_ndtri(double p)
{
    if (!(p > 0.0 && p < 1.0)) {
        if (p == 0.0) return -INFINITY;
        if (p == 1.0) return INFINITY;
        return NAN;
    }
    return -1.41421356237309504880 * fad_erfcinv(2.0 * p);
}

/* s with Phi(x) = phi(x) (1 + s) / (-x) for x < -20: the asymptotic series
 * -1/x^2 + 3/x^4 - 15/x^6 ..., converged to double precision there */
FAD_COLD double fad_mills_s(double x)
{
    double z = 1.0 / (x * x), term = 1.0, s = 0.0;
    int k;
    for (k = 1; k <= 14; k++) {
        term *= -(2.0 * k - 1.0) * z;
        s += term;
    }
    return s;
}

FAD_COLD double fad_log_ndtr(double x)
{
    double t = x * 0.70710678118654752440;
    if (x != x) return x;
    if (x < -20.0)
        return -0.5 * x * x - log(-x) - FAD_LN_SQRT_2PI + log1p(fad_mills_s(x));
    if (x < -1.0) return log(0.5 * erfc(-t));
    return log1p(-0.5 * erfc(t));
}

/* log_ndtr'(x) = phi(x) / Phi(x) (order 1) and its derivative -d (x + d)
 * (order 2); v = log_ndtr(x); the asymptotic form where x + d cancels */
FAD_COLD double fad_log_ndtr_d(double x, double v, int order)
{
    double s, d;
    if (x < -20.0) {
        s = fad_mills_s(x);
        d = -x / (1.0 + s);
        return (order == 1) ? d : -d * x * s / (1.0 + s);
    }
    d = exp(-0.5 * x * x - FAD_LN_SQRT_2PI - v);
    return (order == 1) ? d : -d * (x + d);
}

/* digamma near its positive root x0: the Taylor series sum c_n (x - x0)^n,
 * c_n = psi^(n)(x0) / n! (computed with mpmath to 60 digits), for relative
 * accuracy where the recurrence below leaves only absolute accuracy */
static const double fad_digamma_root_c[40] = {
    0.9676722454476212, -0.4427631689835921, 0.258499760955651, -0.16394270544240652,
    0.10782405069126237, -0.07219956125645471, 0.04880428816414311, -0.03316112647484736,
    0.022597648232218104, -0.01542476590494896, 0.010538791616612175, -0.007204534386356869,
    0.004926781395729853, -0.003369801655439328, 0.002305126326734928, -0.0015769367714301972,
    0.0010788252019162967, -0.0007380709389960052, 0.000504953265834602, -0.0003454680251063077,
    0.00023635601564027053, -0.00016170622091974803, 0.0001106337276874741, -7.569179582195066e-05,
    5.178575795222081e-05, -3.5430070947659604e-05, 2.424006611860132e-05, -1.6584242271854135e-05,
    1.134638458466385e-05, -7.762817668462094e-06, 5.3110609208898636e-06, -3.6336507898010456e-06,
    2.486022733129538e-06, -1.7008538854332607e-06, 1.1636675363548843e-06, -7.96142543124197e-07,
    5.446941930669446e-07, -3.7266161283438227e-07, 2.549626552021554e-07, -1.7443695117727745e-07
};

FAD_COLD double fad_digamma_near_root(double x)
{
    double h = (x - 1.4616321449683622) - 9.549995429965697e-17, p = 0.0;
    int n;
    for (n = 39; n >= 0; n--) p = p * h + fad_digamma_root_c[n];
    return p * h;
}

/* digamma and its derivatives psi^(n), n = 0, 1, 2: recurrence up to
 * x >= 15, then the asymptotic (Bernoulli) series; reflection for x < 0
 * with the argument of cot/sin reduced exactly; digamma near its positive
 * root by its Taylor series there.  At the poles: psi(+-0) =
 * -+inf as SciPy, NaN at negative integers; trigamma +inf. */
FAD_COLD double fad_polygamma(int n, double x)
{
    double r = 0.0, refl = 0.0, z2, iz, t, s, c, v;
    int reflected = 0;
    if (x != x) return x;
    if (n == 0 && fabs(x - 1.4616321449683622) < 0.45) return fad_digamma_near_root(x);
    if (x <= 0.0) {
        if (x == 0.0)
            return (n == 0) ? -1.0 / x : ((n == 1) ? INFINITY : -2.0 / (x * x * x));
        if (x == floor(x)) return (n == 1) ? INFINITY : NAN;
        t = FAD_PI * (x - rint(x));
        s = sin(t);
        c = cos(t);
        /* psi(x) = psi(1-x) - pi cot(pi x), psi1(x) = pi^2/sin^2 - psi1(1-x),
           psi2(x) = psi2(1-x) - 2 pi^3 cos/sin^3 */
        if (n == 0) refl = -FAD_PI * c / s;
        else if (n == 1) refl = FAD_PI * FAD_PI / (s * s);
        else refl = -2.0 * FAD_PI * FAD_PI * FAD_PI * c / (s * s * s);
        x = 1.0 - x;
        reflected = 1;
    }
    while (x < 15.0) {
        if (n == 0) r -= 1.0 / x;
        else if (n == 1) r += 1.0 / (x * x);
        else r -= 2.0 / (x * x * x);
        x += 1.0;
    }
    iz = 1.0 / x;
    z2 = iz * iz;
    if (n == 0)
        v = log(x) - 0.5 * iz
            - z2 * (1.0 / 12 - z2 * (1.0 / 120 - z2 * (1.0 / 252 - z2 * (1.0 / 240
              - z2 * (1.0 / 132 - z2 * (691.0 / 32760 - z2 / 12))))));
    else if (n == 1)
        v = iz + 0.5 * z2
            + iz * z2 * (1.0 / 6 - z2 * (1.0 / 30 - z2 * (1.0 / 42 - z2 * (1.0 / 30
              - z2 * (5.0 / 66 - z2 * (691.0 / 2730 - z2 * 7.0 / 6))))));
    else
        v = -z2 - z2 * iz
            - z2 * z2 * (0.5 - z2 * (1.0 / 6 - z2 * (1.0 / 6 - z2 * (3.0 / 10
              - z2 * (5.0 / 6 - z2 * (691.0 / 210 - z2 * 35.0 / 2))))));
    v += r;
    if (reflected) v = (n == 1) ? refl - v : v + refl;
    return v;
}

/* x log(y) and x log1p(y) with the value 0 at x = 0 (unless y is NaN), as
 * SciPy; d/dy = x / y is 0 at x = 0 (the function is 0 along x = 0) */
static inline double fad_xlogy(double x, double y)
{
    return (x == 0 && y == y) ? 0.0 : x * log(y);
}

static inline double fad_xlog1py(double x, double y)
{
    return (x == 0 && y == y) ? 0.0 : x * log1p(y);
}

#endif /* FASTAD_SPECIAL_H */
