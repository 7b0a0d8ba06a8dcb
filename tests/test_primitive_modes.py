"""Custom primitives with only one rule work in every mode (issue #17, item 3).

A primitive with only a vjp rule gets forward mode (jvp, jacfwd,
jacobian(mode="fwd"), tape.jvp) and second order (hvp, hessian) by
transposing its pullback, which is linear in ybar; one with only a jvp rule
gets reverse mode (grad, vjp, jacrev) and second order by transposing its
pushforward.  Every answer is compared with the same primitive given both
rules, and with an independent one: a formula, or central finite
differences of the same function on plain NumPy numbers.  Errors are raised
only when no rule can be derived.
"""
import re
import threading
from collections import Counter

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_close, fd_hessian, fd_jacobian, softmax_np

RULES = ("vjp", "jvp")          # the one rule the primitive under test has


# ---------------------------------------------------------------------------
# primitives, each built with the rules asked for ("both", "vjp" or "jvp")
# ---------------------------------------------------------------------------

def _register(prim, rules, vjp, jvp, vectorized=False, calls=None):
    calls = Counter() if calls is None else calls

    def counted(kind, rule):
        def r(*a, **kw):
            calls[kind] += 1
            d = a[0]
            if any(isinstance(e, (fad.Var, fad.Array))
                   for e in (d if isinstance(d, tuple) else (d,))):
                calls[kind + " traced"] += 1      # recorded (to be transposed or differentiated)
            return rule(*a, **kw)
        return r
    if rules in ("both", "vjp"):
        prim.defvjp(counted("vjp", vjp), vectorized=vectorized)
    if rules in ("both", "jvp"):
        prim.defjvp(counted("jvp", jvp), vectorized=vectorized)
    prim.calls = calls
    return prim


def make_scalar(rules, calls=None):
    """Two scalar arguments and a keyword constant: y = scale * a^2 sin(b)."""
    @fad.primitive
    def sq_sin(a, b, *, scale=1.0):
        return scale * a * a * np.sin(b)

    def vjp(ybar, y, a, b, *, scale=1.0):
        return ybar * scale * 2 * a * np.sin(b), ybar * scale * a * a * np.cos(b)

    def jvp(dots, y, a, b, *, scale=1.0):
        ad, bd = dots
        out = 0.0
        if ad is not None:
            out = out + scale * 2 * a * np.sin(b) * ad
        if bd is not None:
            out = out + scale * a * a * np.cos(b) * bd
        return out
    return _register(sq_sin, rules, vjp, jvp, calls=calls)


def make_softmax(rules, vectorized=False, calls=None):
    """R^n -> R^n: J = diag(y) - y y^T."""
    @fad.primitive
    def softmax(x):
        e = np.exp(x - np.max(x))
        return e / np.sum(e)

    if vectorized:          # k stacked seeds / directions on a leading axis
        def vjp(ybar, y, x):
            return y * (ybar - np.sum(ybar * y, axis=-1, keepdims=True))
        jvp = vjp
    else:
        def vjp(ybar, y, x):
            return y * (ybar - np.sum(ybar * y))
        jvp = vjp
    return _register(softmax, rules, vjp, jvp, vectorized, calls)


def make_layer(rules, vectorized=False, calls=None):
    """Two array arguments and a keyword constant: y = tanh(W @ v + shift), W (m, n)."""
    @fad.primitive
    def layer(W, v, *, shift=0.0):
        return np.tanh(W @ v + shift)

    if vectorized:
        def vjp(ybar, y, W, v, *, shift=0.0):
            g = ybar * (1 - y * y)                     # (k, m)
            return np.einsum("km,n->kmn", g, v), g @ W

        def jvp(dots, y, W, v, *, shift=0.0):
            Wd, vd = dots
            out = 0.0
            if Wd is not None:
                out = out + np.einsum("kmn,n->km", Wd, v)
            if vd is not None:
                out = out + vd @ W.T
            return (1 - y * y) * out
    else:
        def vjp(ybar, y, W, v, *, shift=0.0):
            g = ybar * (1 - y * y)
            return np.outer(g, v), W.T @ g

        def jvp(dots, y, W, v, *, shift=0.0):
            Wd, vd = dots
            out = 0.0
            if Wd is not None:
                out = out + Wd @ v
            if vd is not None:
                out = out + W @ vd
            return (1 - y * y) * out
    return _register(layer, rules, vjp, jvp, vectorized, calls)


def make_solve(rules, calls=None):
    """A linalg-like rule: y = A^-1 b; b_bar = A^-T y_bar, A_bar = -b_bar y^T."""
    @fad.primitive
    def lsolve(A, b):
        return np.linalg.solve(A, b)

    def vjp(ybar, y, A, b):
        bbar = np.linalg.solve(A.T, ybar)
        return -np.outer(bbar, y), bbar

    def jvp(dots, y, A, b):
        Ad, bd = dots
        rhs = 0.0
        if bd is not None:
            rhs = rhs + bd
        if Ad is not None:
            rhs = rhs - Ad @ y
        return np.linalg.solve(A, rhs)
    return _register(lsolve, rules, vjp, jvp, calls=calls)


def make_rounded(rules, calls=None):
    """A None cotangent: y = x * round(c), no gradient for c (the rules say so)."""
    @fad.primitive
    def rounded(x, c):
        return x * np.round(c)

    def vjp(ybar, y, x, c):
        return ybar * np.round(c), None

    def jvp(dots, y, x, c):
        xd, _ = dots
        return 0.0 * y if xd is None else xd * np.round(c)
    return _register(rounded, rules, vjp, jvp, calls=calls)


# Each case: (name, make(rules) -> f(x) on a flat vector, the same on NumPy, x)
A0 = np.array([[3.0, 0.5, -0.2], [0.4, 2.5, 0.3], [-0.1, 0.6, 4.0]])
W0 = np.array([[0.3, -0.5, 0.8, 0.1], [0.7, 0.2, -0.4, 0.6], [-0.2, 0.9, 0.5, -0.3]])


def scalar_case(rules):
    p = make_scalar(rules)
    # in a scalar loop (the lean ScalarPrimitiveBlock), one argument a constant once
    return lambda x: fad.stack([p(x[0], x[1], scale=1.5), p(x[1] * x[2], 0.7),
                                x[0] * p(x[2], x[0])])


def scalar_np(x):
    f = lambda a, b, scale=1.0: scale * a * a * np.sin(b)
    return np.array([f(x[0], x[1], scale=1.5), f(x[1] * x[2], 0.7), x[0] * f(x[2], x[0])])


def softmax_case(rules, vectorized=False):
    p = make_softmax(rules, vectorized)
    return lambda x: p(x * x) * np.arange(1.0, x.size + 1)


def softmax_ref(x):
    return softmax_np(x * x) * np.arange(1.0, x.size + 1)


def layer_case(rules, vectorized=False):
    p = make_layer(rules, vectorized)

    def f(z):
        W = fad.reshape(z[:12], (3, 4))
        return p(W, z[12:] * 2.0, shift=SHIFT)
    return f


SHIFT = np.array([0.1, -0.3, 0.2])


def layer_np(z):
    return np.tanh(z[:12].reshape(3, 4) @ (z[12:] * 2.0) + SHIFT)


def constant_case(rules, vectorized=False):
    p = make_layer(rules, vectorized)
    return lambda v: p(W0, v * 2.0, shift=SHIFT)        # W a constant: no tangent for it


def constant_np(v):
    return np.tanh(W0 @ (v * 2.0) + SHIFT)


def solve_case(rules):
    p = make_solve(rules)

    def f(z):
        return p(fad.reshape(z[:9], (3, 3)) + 2.0 * np.eye(3), z[9:] ** 2)
    return f


def solve_np(z):
    return np.linalg.solve(z[:9].reshape(3, 3) + 2.0 * np.eye(3), z[9:] ** 2)


def rounded_case(rules):
    p = make_rounded(rules)
    return lambda z: p(z[:3] * z[3], z[3])


def rounded_np(z):
    return z[:3] * z[3] * np.round(z[3])


RNG = np.random.default_rng(1717)
CASES = {
    "scalar": (scalar_case, scalar_np, np.array([0.7, -1.1, 0.4])),
    "softmax": (softmax_case, softmax_ref, RNG.normal(size=5)),
    "softmax_vectorized": (lambda r: softmax_case(r, True), softmax_ref, RNG.normal(size=5)),
    "two_arrays": (layer_case, layer_np, np.concatenate([W0.ravel(), RNG.normal(size=4) * 0.4])),
    "two_arrays_vectorized": (lambda r: layer_case(r, True), layer_np,
                              np.concatenate([W0.ravel(), RNG.normal(size=4) * 0.4])),
    "constant_argument": (constant_case, constant_np, RNG.normal(size=4)),
    "constant_argument_vectorized": (lambda r: constant_case(r, True), constant_np,
                                     RNG.normal(size=4)),
    "solve": (solve_case, solve_np, np.concatenate([A0.ravel(), [0.5, -1.0, 1.5]])),
    "none_cotangent": (rounded_case, rounded_np, np.array([0.4, -0.8, 1.3, 2.2])),
}


def objective(f):
    """A scalar function of the primitive's outputs, for Hessians."""
    def s(x):
        y = f(x)
        return fad.sum(fad.sin(y) * np.linspace(0.5, 1.5, np.shape(y)[0])) + fad.sum(x * x * x) / 7
    return s


def objective_np(f):
    def s(x):
        y = f(x)
        return np.sum(np.sin(y) * np.linspace(0.5, 1.5, y.shape[0])) + np.sum(x ** 3) / 7
    return s


# ---------------------------------------------------------------------------
# first order: every transform, against both rules and finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("case", list(CASES))
def test_jacobian_in_every_mode(case, rules):
    make, f_np, x = CASES[case]
    f, both = make(rules), make("both")
    J = fad.jacrev(both)(x)
    fd_close(J, fd_jacobian(f_np, x), atol=1e-7, scale_atol=True)
    close(fad.jacfwd(f)(x), J, rtol=1e-12, atol=1e-13)
    close(fad.jacrev(f)(x), J, rtol=1e-12, atol=1e-13)
    close(fad.jacobian(f, mode="fwd")(x), J, rtol=1e-12, atol=1e-13)
    close(fad.jacobian(f, mode="rev")(x), J, rtol=1e-12, atol=1e-13)
    close(fad.jacobian(f)(x), J, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("case", list(CASES))
def test_jvp_and_vjp_with_k_directions(case, rules):
    make, f_np, x = CASES[case]
    f = make(rules)
    J = fd_jacobian(f_np, x)
    rng = np.random.default_rng(len(case))
    V = rng.normal(size=(3, x.size))
    y, t = fad.jvp(f, x, V[0])
    close(y, f_np(x), rtol=1e-14, atol=1e-15)
    fd_close(t, J @ V[0], atol=1e-7, scale_atol=True)
    fd_close(fad.jvp(f, x, V)[1], V @ J.T, atol=1e-7, scale_atol=True)
    Wb = rng.normal(size=(4,) + np.shape(y))
    y2, pullback = fad.vjp(f, x)
    fd_close(pullback(Wb[0]), Wb[0] @ J, atol=1e-7, scale_atol=True)
    fd_close(pullback(Wb), Wb @ J, atol=1e-7, scale_atol=True)
    # the same from both rules, to rounding
    both = make("both")
    close(fad.jvp(f, x, V)[1], fad.jvp(both, x, V)[1], rtol=1e-12, atol=1e-13)
    close(pullback(Wb), fad.vjp(both, x)[1](Wb), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("case", list(CASES))
def test_replayed_tape_in_every_mode(case, rules):
    make, f_np, x = CASES[case]
    tape = fad.record(make(rules), x)
    both = make("both")
    rng = np.random.default_rng(7 + len(case))
    x2 = x + 0.05 * rng.normal(size=x.size)
    if case == "none_cotangent":
        x2[3] = x[3] + 0.01       # round(c) stays put (no branch on it is recorded)
    J2 = fd_jacobian(f_np, x2)
    V = rng.normal(size=(2, x.size))
    fd_close(tape.jvp(x2, V), V @ J2.T, atol=1e-7, scale_atol=True)
    close(tape.jvp(x2, V), fad.jvp(both, x2, V)[1], rtol=1e-12, atol=1e-13)
    close(tape.jacobian(x2, mode="fwd"), fad.jacrev(both)(x2), rtol=1e-12, atol=1e-13)
    close(tape.jacobian(x2, mode="rev"), fad.jacrev(both)(x2), rtol=1e-12, atol=1e-13)
    Wb = rng.normal(size=(2, J2.shape[0]))
    close(tape.vjp(x2, Wb), Wb @ fad.jacrev(both)(x2), rtol=1e-12, atol=1e-13)
    # and back at the recorded point
    close(tape.jvp(x, V[0]), fad.jvp(both, x, V[0])[1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("rules", RULES)
def test_grad_and_value_and_grad(rules):
    make, f_np, x = CASES["two_arrays"]
    s, s_np = objective(make(rules)), objective_np(f_np)
    g = fad.grad(s)(x)
    fd_close(g, fd_jacobian(s_np, x), atol=1e-7, scale_atol=True)
    v, g2 = fad.value_and_grad(s)(x)
    close(v, s_np(x), rtol=1e-14)
    close(g2, g, rtol=0, atol=0)
    close(g, fad.grad(objective(make("both")))(x), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------
# second order: hvp, hessian, tape.hvp
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("case", list(CASES))
def test_hessian_and_hvp(case, rules):
    make, f_np, x = CASES[case]
    s, s_both, s_np = objective(make(rules)), objective(make("both")), objective_np(f_np)
    H = fad.hessian(s)(x)
    # (fd_hessian differences fad.grad: here of the primitive with both rules)
    fd_close(H, fd_hessian(s_both, x), atol=1e-6, scale_atol=True)
    close(H, fad.hessian(s_both)(x), rtol=1e-11, atol=1e-12)
    close(H, H.T, rtol=1e-11, atol=1e-12)
    V = np.random.default_rng(3).normal(size=(3, x.size))
    close(fad.hvp(s, x, V), V @ H, rtol=1e-11, atol=1e-12)
    close(fad.hvp(s, x, V[1]), H @ V[1], rtol=1e-11, atol=1e-12)
    tape = fad.record(s, x)
    x2 = x + 0.01
    close(tape.hvp(x2, V), fad.hvp(s_both, x2, V), rtol=1e-11, atol=1e-12)
    close(tape.hessian(x2), fad.hessian(s_both)(x2), rtol=1e-11, atol=1e-12)
    close(tape(x2), s_np(x2), rtol=1e-13)


def test_hessian_analytic_logsumexp_vjp_only_and_jvp_only():
    for rules in RULES:
        @fad.primitive
        def lse(x):
            m = np.max(x)
            return m + np.log(np.sum(np.exp(x - m)))
        if rules == "vjp":
            lse.defvjp(lambda ybar, y, x: ybar * np.exp(x - y))
        else:
            lse.defjvp(lambda xdot, y, x: np.sum(xdot * np.exp(x - y)))
        x = np.array([0.3, -1.2, 2.0, 0.5])
        sm = softmax_np(x)
        close(fad.grad(lse)(x), sm, rtol=1e-13)
        close(fad.jacfwd(lse)(x), sm, rtol=1e-13)
        close(fad.hessian(lse)(x), np.diag(sm) - np.outer(sm, sm), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rules", RULES)
def test_hessian_analytic_solve(rules):
    """sum(solve(A, b)^2): H_b = 2 A^-T A^-1 (Hessian in b); in A by finite differences."""
    p = make_solve(rules)
    A = A0 + 2.0 * np.eye(3)
    b = np.array([0.5, -1.0, 1.5])
    Ai = np.linalg.inv(A)
    f = lambda b: fad.sum(p(A, b) ** 2)
    close(fad.hessian(f)(b), 2 * Ai.T @ Ai, rtol=1e-11, atol=1e-13)
    close(fad.jacfwd(lambda b: p(A, b))(b), Ai, rtol=1e-12, atol=1e-14)
    g = lambda Af: fad.sum(p(fad.reshape(Af, (3, 3)), b) ** 2)
    fd_close(fad.hessian(g)(A.ravel()), fd_hessian(lambda Af: fad.sum(make_solve("both")(
        fad.reshape(Af, (3, 3)), b) ** 2), A.ravel()), atol=1e-6, scale_atol=True)


@pytest.mark.parametrize("rules", RULES)
def test_hessian_analytic_scalar_loop(rules):
    """sum_i scale a_i^2 sin(a_{i+1}) over a scalar loop: the Hessian by hand."""
    p = make_scalar(rules)

    def f(x):
        out = 0.0
        for i in range(x.size - 1):
            out = out + p(x[i], x[i + 1], scale=2.0)
        return out
    x = np.array([0.4, -0.9, 1.3, 0.2])
    H = np.zeros((4, 4))
    for i in range(3):
        a, b = x[i], x[i + 1]
        H[i, i] += 2.0 * 2 * np.sin(b)
        H[i, i + 1] += 2.0 * 2 * a * np.cos(b)
        H[i + 1, i] += 2.0 * 2 * a * np.cos(b)
        H[i + 1, i + 1] += -2.0 * a * a * np.sin(b)
    close(fad.hessian(f)(x), H, rtol=1e-12, atol=1e-13)
    close(fad.hvp(f, x, np.eye(4)[:2]), H[:2], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("rules", RULES)
def test_strong_zero_for_unselected_primitive(rules):
    """where(x > 0, sqrt(x), 0) with sqrt a one-rule primitive: the unselected
    side's inf/NaN partials contribute exactly 0, as with both rules."""
    @fad.primitive
    def psqrt(x):
        return np.sqrt(x)
    if rules == "vjp":
        psqrt.defvjp(lambda ybar, y, x: ybar * 0.5 / np.sqrt(x))
    else:
        psqrt.defjvp(lambda xdot, y, x: xdot * 0.5 / np.sqrt(x))

    def f(x):
        return fad.where(x[0] > 0, psqrt(x[0]), 0.0) + x[1] ** 2
    x = np.array([-1.0, 2.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fad.grad(f)(x), [0.0, 4.0])
        np.testing.assert_array_equal(fad.jacfwd(f)(x), [0.0, 4.0])
        np.testing.assert_array_equal(fad.jvp(f, x, np.array([1.0, 0.0]))[1], 0.0)
        np.testing.assert_array_equal(fad.hessian(f)(x), [[0.0, 0.0], [0.0, 2.0]])
    close(fad.jacfwd(f)(np.array([4.0, 1.0])), [0.25, 2.0])


# ---------------------------------------------------------------------------
# how often the rules run: one recording per point serves every lane
# ---------------------------------------------------------------------------

def test_transposed_vjp_rule_is_recorded_once_per_point():
    calls = Counter()
    p = make_softmax("vjp", calls=calls)
    f = lambda x: p(x * x)
    x = np.linspace(-1.0, 1.0, 6)
    J = fad.jacfwd(f)(x)                  # 6 lanes
    assert calls["vjp"] == 1 and calls["jvp"] == 0
    fd_close(J, fd_jacobian(lambda x: softmax_np(x * x), x))
    tape = fad.record(f, x)
    calls.clear()
    V = np.eye(6)
    for _ in range(3):                    # the recorded point: its recording is kept
        close(tape._jvp(None, V), J.T, rtol=1e-13, atol=1e-15)
    assert calls["vjp"] == 1
    calls.clear()
    for x2 in (x + 0.1, x - 0.2):         # a replay: once per point
        close(tape.jvp(x2, V), fad.jacfwd(f)(x2).T, rtol=1e-13, atol=1e-15)
    assert calls["vjp"] == 4


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("vectorized", [False, True], ids=["rule", "vectorized_rule"])
def test_both_routes_of_a_transposition(rules, vectorized):
    """A few lanes through a large map record the rule; many lanes through
    a vectorized rule build the matrix from one call of unit seeds."""
    calls = Counter()
    p = make_softmax(rules, vectorized, calls)
    f = lambda x: p(x * x) * 2.0
    x = np.random.default_rng(5).normal(size=24)
    J = fd_jacobian(lambda x: softmax_np(x * x) * 2.0, x)
    V = np.random.default_rng(6).normal(size=(2, 24))
    if rules == "vjp":
        fd_close(fad.jvp(f, x, V)[1], V @ J.T)
        assert calls["vjp traced"] == 1 and calls["jvp"] == 0
        fd_close(fad.jacfwd(f)(x), J)                 # 24 lanes
    else:
        fd_close(fad.vjp(f, x)[1](V), V @ J)
        assert calls["jvp traced"] == 1 and calls["vjp"] == 0
        fd_close(fad.jacrev(f)(x), J)
    assert calls[rules + " traced"] == (1 if vectorized else 2)


def test_kept_recordings_go_with_their_tape():
    from fastad import primitives as P
    import gc
    p = make_softmax("vjp")
    x = np.linspace(-1.0, 1.0, 30)
    gc.collect()
    before = len(P._MAPS)
    tape = fad.record(lambda x: p(x * x), x)
    tape.jvp(x, np.ones(30))
    assert len(P._MAPS) == before + 1
    fad.jvp(lambda x: p(x * x), x, np.ones(30))     # a transform's own tape: gone after
    del tape
    gc.collect()
    assert len(P._MAPS) == before


@pytest.mark.parametrize("rules", RULES)
def test_sparse_jacobian_and_hessian(rules):
    p, both = make_softmax(rules), make_softmax("both")
    x = np.linspace(-1.0, 1.0, 6)
    g = lambda p: (lambda x: fad.sum(fad.sin(p(x * x))))
    close(fad.sparse_jacobian(lambda x: p(x * x))(x).toarray(),
          fad.jacrev(lambda x: both(x * x))(x), rtol=1e-12, atol=1e-14)
    close(fad.sparse_hessian(g(p))(x).toarray(), fad.hessian(g(both))(x), rtol=1e-11, atol=1e-13)


def test_scalar_output_needs_no_recording_and_rule_may_use_float():
    """A scalar output's pullback of 1 is J's row: one plain rule call, so a
    rule that only works on numbers (float(ybar)) is fine here."""
    calls = Counter()

    @fad.primitive
    def cube(t):
        return t ** 3
    cube.defvjp(lambda ybar, y, t: (calls.update(["vjp"]), 3.0 * float(ybar) * t * t)[1])
    close(fad.jvp(lambda t: cube(t) * 2.0, 1.5, 1.0)[1], 6 * 1.5 ** 2)
    close(fad.jacfwd(lambda x: cube(x[0]) * x[1])(np.array([2.0, 3.0])), [36.0, 8.0])
    assert calls["vjp"] == 2


def test_rules_on_object_arrays_of_vars_transpose():
    """np.asarray of a traced cotangent (an object array of Vars) is still
    traced: the rule transposes (and differentiates) like any other."""
    @fad.primitive
    def cs(x):
        return np.cumsum(x)
    cs.defvjp(lambda ybar, y, x: np.cumsum(np.asarray(ybar)[::-1])[::-1])

    @fad.primitive
    def cs2(x):
        return np.cumsum(x)
    cs2.defjvp(lambda xdot, y, x: np.cumsum(np.asarray(xdot)))
    x = np.array([0.5, 1.0, -2.0])
    L = np.tril(np.ones((3, 3)))
    close(fad.jacfwd(cs)(x), L)
    close(fad.jacrev(cs2)(x), L)
    for p in (cs, cs2):
        close(fad.hessian(lambda x: fad.sum(p(x) ** 2))(x), 2 * L.T @ L)


def test_from_several_threads():
    p = make_layer("vjp")
    q = make_layer("jvp")
    _, _, x = CASES["two_arrays"]
    f = lambda z: p(fad.reshape(z[:12], (3, 4)), z[12:]) + q(fad.reshape(z[:12], (3, 4)), z[12:])
    ref = fad.jacrev(f)(x)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                xi = x + 0.01 * i
                close(fad.jacfwd(f)(xi), fad.jacrev(f)(xi), rtol=1e-12, atol=1e-13)
        except Exception as e:      # (reported below)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    close(fad.jacfwd(f)(x), ref, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------
# errors: only when no rule can be derived
# ---------------------------------------------------------------------------

def still_works():
    close(fad.grad(lambda x: x * x * x)(2.0), 12.0)
    close(fad.jacfwd(CASES["softmax"][0]("vjp"))(CASES["softmax"][2]),
          fad.jacrev(CASES["softmax"][0]("both"))(CASES["softmax"][2]), rtol=1e-12, atol=1e-13)


def test_no_rule_at_all_names_both_rules():
    @fad.primitive
    def bare(x):
        return 2.0 * x
    for call in (lambda: fad.grad(lambda x: fad.sum(bare(x)))(np.ones(3)),
                 lambda: fad.jvp(bare, np.ones(3), np.ones(3)),
                 lambda: fad.grad(lambda t: bare(t) * t)(1.0)):
        with pytest.raises(TypeError, match=r"'bare'.*neither a vjp nor a jvp rule"):
            call()
    assert bare(np.ones(2)).tolist() == [2.0, 2.0]       # plain numbers: just called
    still_works()


def _vector_prim(name, rules, rule):
    def fn(x):
        return np.cumsum(x)
    fn.__name__ = fn.__qualname__ = name
    p = fad.primitive(fn)
    (p.defvjp if rules == "vjp" else p.defjvp)(rule)
    return p


def _value(a):      # .value where there is one: what a rule written for fastad might do
    return a.value if isinstance(a, (fad.Var, fad.Array)) else a


@pytest.mark.parametrize("rule, says", [
    (lambda ybar, y, x: np.cumsum(_value(ybar)[::-1])[::-1],
     r"reads a concrete value .*\.value read"),
    (lambda ybar, y, x: np.cumsum(np.real(np.fft.ifft(np.fft.fft(ybar)))[::-1])[::-1], "fft"),
    (lambda ybar, y, x: np.cumsum(np.asarray(ybar, dtype=float)[::-1])[::-1],
     "would drop its derivatives"),
], ids=["value", "fft", "asarray_float"])
def test_vjp_rule_fastad_cannot_record_names_rule_and_operation(rule, says):
    p = _vector_prim("opaque_vjp", "vjp", rule)
    x = np.array([0.5, 1.0, -2.0])
    close(fad.jacrev(p)(x), np.tril(np.ones((3, 3))))          # reverse mode is fine
    for call in (lambda: fad.jacfwd(p)(x), lambda: fad.jvp(p, x, np.ones(3)),
                 lambda: fad.record(p, x).jvp(x + 1.0, np.ones(3)),
                 lambda: fad.hessian(lambda x: fad.sum(p(x) ** 2))(x)):
        with pytest.raises(NotImplementedError) as err:
            call()
        msg = str(err.value)
        assert "'opaque_vjp' has no jvp rule" in msg and "transposing its vjp rule" in msg
        assert "@opaque_vjp.defjvp" in msg
        assert re.search(says, msg), msg
    still_works()


@pytest.mark.parametrize("rule, says", [
    (lambda xdot, y, x: np.cumsum(_value(xdot)), r"reads a concrete value .*\.value read"),
    (lambda xdot, y, x: np.cumsum(np.asarray(xdot, dtype=float)), "would drop its derivatives"),
], ids=["value", "asarray_float"])
def test_jvp_rule_fastad_cannot_record_names_rule_and_operation(rule, says):
    p = _vector_prim("opaque_jvp", "jvp", rule)
    x = np.array([0.5, 1.0, -2.0])
    close(fad.jacfwd(p)(x), np.tril(np.ones((3, 3))))           # forward mode is fine
    for call in (lambda: fad.jacrev(p)(x), lambda: fad.grad(lambda x: fad.sum(p(x) ** 2))(x),
                 lambda: fad.vjp(p, x)[1](np.ones(3))):
        with pytest.raises(NotImplementedError) as err:
            call()
        msg = str(err.value)
        assert "'opaque_jvp' has no vjp rule" in msg and "transposing its jvp rule" in msg
        assert "@opaque_jvp.defvjp" in msg
        assert re.search(says, msg), msg
    still_works()


def test_jvp_only_second_order_needs_a_differentiable_jvp_rule():
    @fad.primitive
    def sq_float(t):
        return t * t
    sq_float.defjvp(lambda tdot, y, t: 2.0 * float(t) * tdot)     # float(): numbers only
    f = lambda x: sq_float(x[0]) * x[1]
    x = np.array([3.0, 2.0])
    close(fad.grad(f)(x), [12.0, 9.0])                          # first order is fine
    close(fad.jacfwd(f)(x), [12.0, 9.0])
    with pytest.raises(NotImplementedError, match=r"'sq_float' \(which has only a jvp rule\)"):
        fad.hessian(f)(x)
    with pytest.raises(NotImplementedError, match="sq_float"):
        fad.hvp(f, x, np.ones(2))
    still_works()


@pytest.mark.parametrize("rules", RULES)
def test_traced_rule_of_the_wrong_shape_names_primitive_and_shapes(rules):
    def bad(d, y, x):
        return np.cumsum(d)[:2]
    p = _vector_prim("short", rules, bad)
    x = np.array([0.5, 1.0, -2.0])
    call = (lambda: fad.jacfwd(p)(x)) if rules == "vjp" else (lambda: fad.jacrev(p)(x))
    with pytest.raises(ValueError, match=r"'short'.*\(2,\).*\(3,\)"):
        call()
    still_works()


# ---------------------------------------------------------------------------
# a tape that went through a transposed rule still saves and pickles
# ---------------------------------------------------------------------------

@fad.primitive
def modes_softmax(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


@modes_softmax.defvjp
def _modes_softmax_vjp(ybar, y, x):
    return y * (ybar - np.sum(ybar * y))


def test_tape_with_transposed_rule_pickles_and_saves(tmp_path):
    import pickle
    f = lambda x: modes_softmax(x * x)
    x = np.array([0.2, -0.7, 1.1, 0.4])
    tape = fad.record(f, x)
    V = np.eye(4)
    J = tape._jvp(None, V).T           # fills the kept recording of the transposed rule
    fd_close(J, fd_jacobian(lambda x: softmax_np(x * x), x))
    x2 = x + 0.3
    J2 = fd_jacobian(lambda x: softmax_np(x * x), x2)
    for t in (pickle.loads(pickle.dumps(tape)), None):
        if t is None:
            tape.save(tmp_path / "t.npz")
            t = fad.load_tape(tmp_path / "t.npz")
        fd_close(t.jacobian(x2, mode="fwd"), J2)
        fd_close(t.jvp(x2, V).T, J2)
        close(t.jacobian(x, mode="fwd"), J, rtol=1e-13, atol=1e-15)
