"""Custom primitives: @fad.primitive with defvjp/defjvp rules, and the dogfood fad.solve / fad.norm.

Every derivative is compared with an independent answer (a formula written out
by hand, or central finite differences of the same function run on plain
NumPy numbers, where a primitive simply calls its function).  Rule calls are
counted, so a test also sees that the registered rule is what computed a result.

A docstring that starts with BUG describes the bug its test was written
against (fixed since: the test asserts the correct behaviour).
"""
import math
import pickle
import re
from collections import Counter

import numpy as np
import pytest

import fastad as fad
from fastad._tape import release_memory
from conftest import close, fd_close, fd_jacobian, softmax_np


def lse_np(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def softmax_jac(x):
    s = softmax_np(x)
    return np.diag(s) - np.outer(s, s)


# ---------------------------------------------------------------------------
# primitive factories (a fresh primitive per test, with call counters)
# ---------------------------------------------------------------------------

def make_lse(calls, vjp_factor=1.0, jvp=True):
    """The DESIGN.md logsumexp example; vjp_factor != 1 makes the rule deliberately 'wrong'."""
    @fad.primitive
    def logsumexp(x):
        calls["fn"] += 1
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    @logsumexp.defvjp
    def _(ybar, y, x):
        calls["vjp"] += 1
        return vjp_factor * ybar * np.exp(x - y)

    if jvp:
        @logsumexp.defjvp
        def _(xdot, y, x):
            calls["jvp"] += 1
            return np.sum(xdot * np.exp(x - y))
    return logsumexp


def make_softmax(calls, vjp_vectorized=False, jvp_vectorized=False, jvp=True):
    """A vector-output primitive: y = softmax(x), J = diag(y) - y y^T."""
    @fad.primitive
    def softmax(x):
        calls["fn"] += 1
        e = np.exp(x - np.max(x))
        return e / np.sum(e)

    if vjp_vectorized:
        def vjp(ybar, y, x):
            calls["vjp"] += 1
            calls["vjp_shape"] = ybar.shape
            return y * (ybar - np.sum(ybar * y, axis=-1, keepdims=True))
    else:
        def vjp(ybar, y, x):
            calls["vjp"] += 1
            assert ybar.shape == y.shape
            return y * (ybar - np.dot(ybar, y))
    softmax.defvjp(vjp, vectorized=vjp_vectorized)

    if jvp:
        if jvp_vectorized:
            @softmax.defjvp(vectorized=True)
            def _(xdot, y, x):
                calls["jvp"] += 1
                calls["jvp_shape"] = xdot.shape
                return y * (xdot - np.sum(xdot * y, axis=-1, keepdims=True))
        else:
            @softmax.defjvp
            def _(xdot, y, x):
                calls["jvp"] += 1
                assert xdot.shape == x.shape
                return y * (xdot - np.dot(xdot, y))
    return softmax


def make_hypot(calls, seen=None, b_grad=True):
    """A scalar primitive of two arguments with a keyword constant: scale * hypot(a, b)."""
    seen = [] if seen is None else seen

    @fad.primitive
    def shypot(a, b, *, scale=1.0):
        calls["fn"] += 1
        seen.append(("fn", scale))
        return scale * math.hypot(a, b)

    @shypot.defvjp
    def shypot_vjp(ybar, y, a, b, *, scale=1.0):
        calls["vjp"] += 1
        seen.append(("vjp", scale))
        r = math.hypot(a, b)
        return ybar * scale * a / r, (ybar * scale * b / r if b_grad else None)

    @shypot.defjvp
    def shypot_jvp(xdot, y, a, b, *, scale=1.0):
        calls["jvp"] += 1
        seen.append(("jvp", scale))
        ad, bd = xdot
        r = math.hypot(a, b)
        out = 0.0
        if ad is not None:
            out += scale * a / r * ad
        if bd is not None:
            out += scale * b / r * bd
        return out
    return shypot


def make_affine(calls, seen=None, v_grad=True):
    """An array primitive of two arguments with a keyword constant: W @ v + shift."""
    seen = [] if seen is None else seen

    @fad.primitive
    def affine(W, v, *, shift=0.0):
        calls["fn"] += 1
        seen.append(("fn", shift))
        return W @ v + shift

    @affine.defvjp
    def affine_vjp(ybar, y, W, v, *, shift=0.0):
        calls["vjp"] += 1
        seen.append(("vjp", shift))
        return np.outer(ybar, v), (W.T @ ybar if v_grad else None)

    @affine.defjvp
    def affine_jvp(xdot, y, W, v, *, shift=0.0):
        calls["jvp"] += 1
        seen.append(("jvp", shift))
        Wd, vd = xdot
        out = np.zeros_like(y)
        if Wd is not None:
            out = out + Wd @ v
        if vd is not None:
            out = out + W @ vd
        return out
    return affine


def assert_still_works():
    """A fresh recording gives analytic answers, with and without a primitive."""
    assert fad.grad(lambda x: x * x * x)(2.0) == 12.0
    g = fad.grad(lambda a: a[0] * fad.sin(a[1]))(np.array([2.0, 0.5]))
    close(g, [math.sin(0.5), 2.0 * math.cos(0.5)], rtol=1e-14)
    calls = Counter()
    lse = make_lse(calls)
    x = np.array([0.3, -1.0, 2.0])
    close(fad.grad(lse)(x), softmax_np(x), rtol=1e-13)
    close(fad.jvp(lse, x, np.ones(3))[1], 1.0, rtol=1e-13)
    assert calls["vjp"] == 1 and calls["jvp"] == 1


# ---------------------------------------------------------------------------
# the DESIGN.md example
# ---------------------------------------------------------------------------

X5 = np.array([0.5, -1.25, 2.0, 0.0, 1.5])


def test_logsumexp_gradient_is_softmax_computed_by_the_rule():
    calls = Counter()
    lse = make_lse(calls)
    v, g = fad.value_and_grad(lse)(X5)
    close(v, lse_np(X5), rtol=1e-15)
    close(g, softmax_np(X5), rtol=1e-14)
    assert calls == Counter(fn=1, vjp=1)          # one evaluation, one pullback, no jvp


def test_logsumexp_gradient_reflects_a_deliberately_doubled_rule():
    calls = Counter()
    lse2 = make_lse(calls, vjp_factor=2.0)
    close(fad.grad(lse2)(X5), 2.0 * softmax_np(X5), rtol=1e-14)
    assert calls["vjp"] == 1
    # inside more code: d/dx [3 lse(x) + sum x] with the doubled rule
    close(fad.grad(lambda x: 3.0 * lse2(x) + fad.sum(x))(X5), 6.0 * softmax_np(X5) + 1.0,
          rtol=1e-14)


def test_logsumexp_forward_mode_uses_the_jvp_rule():
    calls = Counter()
    lse = make_lse(calls)
    v = np.array([1.0, 2.0, -1.0, 0.5, 3.0])
    y, t = fad.jvp(lse, X5, v)
    close(y, lse_np(X5), rtol=1e-15)
    close(t, softmax_np(X5) @ v, rtol=1e-14)
    assert calls["jvp"] == 1 and calls["vjp"] == 0
    close(fad.jacfwd(lse)(X5), softmax_np(X5), rtol=1e-14)
    close(fad.jacrev(lse)(X5), softmax_np(X5), rtol=1e-14)


def test_primitive_on_plain_numbers_just_calls_the_function():
    calls = Counter()
    lse = make_lse(calls)
    assert lse(X5) == lse_np(X5)
    assert calls == Counter(fn=1)                 # no rule is involved
    hyp = make_hypot(calls)
    assert hyp(3.0, 4.0, scale=2.0) == 10.0
    assert hyp(3, 4) == 5.0
    # a primitive without any rule works on numbers too
    plain = fad.primitive(lambda x: 2.0 * x)
    assert plain(4.0) == 8.0
    close(plain(np.array([1.0, 2.0])), [2.0, 4.0])


def test_registration_forms_and_repr():
    @fad.primitive
    def cube(x):
        return x ** 3

    def cube_vjp(ybar, y, x):
        return 3.0 * x ** 2 * ybar
    assert cube.defvjp(cube_vjp) is cube_vjp              # plain call returns the rule
    assert cube.__name__ == "cube" and "cube" in repr(cube)
    close(fad.grad(cube)(2.0), 12.0)
    close(fad.grad(lambda a: fad.sum(cube(a)))(np.array([1.0, -2.0])), [3.0, 12.0])

    @cube.defjvp(vectorized=False)                        # decorator with arguments
    def cube_jvp(xdot, y, x):
        return 3.0 * x ** 2 * xdot
    assert cube_jvp.__name__ == "cube_jvp"
    close(fad.jvp(cube, 2.0, 1.5)[1], 18.0)
    with pytest.raises(TypeError, match="cube"):
        cube.defvjp(42)
    with pytest.raises(TypeError, match="cube"):
        cube.defjvp("not a rule")


# ---------------------------------------------------------------------------
# several arguments, None cotangents, keyword constants
# ---------------------------------------------------------------------------

def test_two_scalar_arguments_with_keyword_constant_reach_fn_and_both_rules():
    calls, seen = Counter(), []
    hyp = make_hypot(calls, seen)
    a, b, s = 3.0, -4.0, 2.5
    (ga, gb) = fad.grad(lambda p, q: hyp(p, q, scale=s), argnums=(0, 1))(a, b)
    close(ga, s * a / 5.0)
    close(gb, s * b / 5.0)
    assert calls["vjp"] == 1
    assert seen == [("fn", s), ("vjp", s)]
    seen.clear()
    # forward mode: a tangent for the active argument, None for the constant one
    y, t = fad.jvp(lambda p: hyp(p, b, scale=s), a, 1.0)
    close(y, s * 5.0)
    close(t, s * a / 5.0)
    y, t = fad.jvp(lambda q: hyp(a, q, scale=s), b, 2.0)
    close(t, 2.0 * s * b / 5.0)
    assert ("jvp", s) in seen and all(k == s for _, k in seen)


def test_none_cotangent_means_zero_gradient_scalar_arguments():
    calls = Counter()
    hyp = make_hypot(calls, b_grad=False)
    ga, gb = fad.grad(lambda p, q: hyp(p, q) + 2.0 * q, argnums=(0, 1))(3.0, 4.0)
    close(ga, 0.6)
    assert gb == 2.0                 # only the explicit 2 q term


def test_two_array_arguments_with_keyword_constant():
    calls, seen = Counter(), []
    aff = make_affine(calls, seen)
    rng = np.random.default_rng(0)
    W, v, w = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    shift = np.array([0.5, -1.0, 2.0])

    def f(W_, v_):
        return fad.sum(w * aff(W_, v_, shift=shift) ** 2)

    def f_np(W_, v_):
        return np.sum(w * (W_ @ v_ + shift) ** 2)

    gW, gv = fad.grad(f, argnums=(0, 1))(W, v)
    r = W @ v + shift
    close(gW, np.outer(2 * w * r, v), rtol=1e-13)
    close(gv, W.T @ (2 * w * r), rtol=1e-13)
    fd_close(gW, fd_jacobian(lambda W_: f_np(W_, v), W))
    fd_close(gv, fd_jacobian(lambda v_: f_np(W, v_), v))
    assert calls["vjp"] == 1
    # (keyword arrays are snapshotted when recorded: equal values, not the same object)
    assert all(np.array_equal(k, shift) for _, k in seen) and len(seen) == 2
    assert [t for t, _ in seen] == ["fn", "vjp"]
    # jvp with only v active: W arrives as a constant, its tangent is None
    seen.clear()
    d = rng.normal(size=4)
    y, t = fad.jvp(lambda v_: aff(W, v_, shift=shift), v, d)
    close(y, r, rtol=1e-14)
    close(t, W @ d, rtol=1e-14)
    assert seen[-1][0] == "jvp" and np.array_equal(seen[-1][1], shift)


def test_none_cotangent_means_zero_gradient_array_arguments():
    calls = Counter()
    aff = make_affine(calls, v_grad=False)
    W, v = np.arange(6.0).reshape(2, 3), np.array([1.0, -1.0, 2.0])
    gW, gv = fad.grad(lambda W_, v_: fad.sum(aff(W_, v_)), argnums=(0, 1))(W, v)
    close(gW, np.outer(np.ones(2), v))
    assert gv.shape == (3,) and np.all(gv == 0.0)


def test_mixed_var_and_constant_arguments():
    """A Var next to an ndarray constant (the array path), a float and an int constant."""
    calls = Counter()
    aff = make_affine(calls)
    W = np.array([[1.0, 2.0], [0.5, -3.0]])
    g = fad.grad(lambda v: fad.sum(aff(W, v) * np.array([1.0, 2.0])))(np.array([0.3, 0.7]))
    close(g, W.T @ np.array([1.0, 2.0]))
    hyp = make_hypot(calls)
    close(fad.grad(lambda p: hyp(p, 4))(3.0), 0.6)
    close(fad.grad(lambda p: hyp(4.0, p, scale=3))(3.0), 1.8)
    close(fad.grad(lambda p: hyp(p, np.float64(4.0)))(3.0), 0.6)


@pytest.mark.parametrize("bad", ["var", "array"])
def test_active_keyword_argument_is_type_error(bad):
    calls = Counter()
    hyp = make_hypot(calls)
    aff = make_affine(calls)
    if bad == "var":
        f, x = (lambda p: hyp(1.0, 2.0, scale=p)), 3.0
    else:
        f, x = (lambda s: fad.sum(aff(np.eye(2), np.ones(2), shift=s))), np.ones(2)
    with pytest.raises(TypeError) as ei:
        fad.grad(f)(x)
    msg = str(ei.value)
    assert "keyword" in msg and ("shypot" in msg or "affine" in msg)
    assert_still_works()


# ---------------------------------------------------------------------------
# inside scalar loops and inside array code
# ---------------------------------------------------------------------------

def test_scalar_primitive_in_a_loop_against_finite_differences():
    calls = Counter()
    hyp = make_hypot(calls)

    def f(x):
        s = 0.0
        for i in range(len(x) - 1):
            s = s + fad.sin(x[i]) * hyp(x[i], x[i + 1] * x[i + 1] + 1.0, scale=0.5)
            s = s + hyp(x[i], 2)
        return s

    x = np.array([0.3, -1.2, 0.8, 2.0, -0.4])
    calls.clear()
    g = fad.grad(f)(x)
    assert calls["vjp"] == 2 * (len(x) - 1)
    fd_close(g, fd_jacobian(f, x))
    # the same at another point, through the jvp rule
    x2 = np.array([1.0, 0.5, -0.7, 0.2, 1.1])
    d = np.array([0.3, -1.0, 0.5, 2.0, 1.0])
    fd_close(fad.jvp(f, x2, d)[1], fd_jacobian(f, x2) @ d)


def test_scalar_primitive_on_var_list_outputs_jacobian():
    calls = Counter()
    hyp = make_hypot(calls)

    def f(x):
        return fad.stack([hyp(x[0], x[1]), hyp(x[1], x[2], scale=2.0), x[0] * hyp(x[2], 1.0)])

    x = np.array([1.0, 2.0, -2.0])
    J = fd_jacobian(f, x)
    fd_close(fad.jacrev(f)(x), J)
    fd_close(fad.jacfwd(f)(x), J)


def test_array_primitives_in_numpy_code_against_finite_differences():
    calls = Counter()
    lse = make_lse(calls)
    sm = make_softmax(calls)
    rng = np.random.default_rng(1)
    W1, W2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 5))
    c = np.array([1.0, -2.0, 0.5, 3.0, 1.5])

    def f(x):
        h = np.tanh(W1 @ x)
        z = W2 @ sm(h * 2.0)
        return lse(z) + fad.sum(sm(h) * c) + lse(x[::2])        # x[::2]: a strided slice

    x = rng.normal(size=4)
    g = fad.grad(f)(x)
    fd_close(g, fd_jacobian(f, x))
    assert calls["vjp"] == 4
    d = rng.normal(size=4)
    fd_close(fad.jvp(f, x, d)[1], fd_jacobian(f, x) @ d)


def test_array_primitive_on_repeated_slots_adds_up():
    calls = Counter()
    lse = make_lse(calls)

    def f(x):
        return lse(fad.stack([x[0], x[1], x[0], 2.0 * x[1], x[2]]))

    x = np.array([0.1, 0.4, -0.3])
    s = softmax_np(np.array([0.1, 0.4, 0.1, 0.8, -0.3]))
    close(fad.grad(f)(x), [s[0] + s[2], s[1] + 2 * s[3], s[4]], rtol=1e-13)
    fd_close(fad.grad(f)(x), fd_jacobian(f, x))


def test_array_primitive_arguments_survive_tape_growth():
    """The recorded arguments of a primitive must stay valid after the tape grows.

    A new tape reuses a spare buffer left by an earlier one; holding one tape
    makes the next recording start small and grow (reallocating) while more
    operations are recorded after the primitive, as it does in a fresh process."""
    calls = Counter()
    lse = make_lse(calls)
    x = np.array([0.1, -0.3, 0.7, 0.2])
    n_loop, c = 600, 1e-3
    counts = np.bincount(np.arange(n_loop) % 4, minlength=4)

    def f(a):
        s = lse(a)                   # the rule needs x at the recorded point
        t = 0.0
        for i in range(n_loop):
            t = t + a[i % 4] * c
        return s + t

    expected = softmax_np(x) + c * counts
    keep = fad.record(lambda a: a * 2.0, np.ones(2))    # noqa: F841 - holds the spare buffer
    close(fad.grad(f)(x), expected, rtol=1e-12)
    keep = fad.record(lambda a: a * 2.0, np.ones(2))    # noqa: F841
    v = np.array([1.0, 0.0, -1.0, 2.0])
    close(fad.jvp(f, x, v)[1], expected @ v, rtol=1e-12)
    del keep


def test_primitive_returning_a_view_of_its_input_survives_tape_growth():
    """BUG (use after free): Primitive.__call__ evaluates fn on views into the
    tape's value buffer and only then opens the block (which may realloc the
    buffer); a primitive that returns a view of its argument (x[::-1], x.T,
    x.reshape) then copies freed memory onto the tape.  Reproduces with an
    empty spare buffer and N = 1000 (tape grows from 1024 to 2048 slots)."""
    @fad.primitive
    def flip(x):
        return x[::-1]

    @flip.defvjp
    def _(ybar, y, x):
        return ybar[::-1]

    for n in (500, 1000, 2000, 3000):
        release_memory()
        x = np.arange(n, dtype=np.float64) + 1.0
        value, pullback = fad.vjp(lambda a: flip(a), x)
        np.testing.assert_array_equal(value, x[::-1], err_msg=f"n = {n}")


# ---------------------------------------------------------------------------
# forward mode with and without a jvp rule
# ---------------------------------------------------------------------------

def test_jacfwd_equals_jacrev_equals_analytic_for_vector_primitive():
    calls = Counter()
    sm = make_softmax(calls)
    x = np.array([0.2, -0.5, 1.0, 0.3])

    def f(a):
        return sm(a * a) * 3.0

    J = 3.0 * softmax_jac(x * x) * (2 * x)[None, :]
    close(fad.jacfwd(f)(x), J, rtol=1e-13, atol=1e-15)
    assert calls["jvp"] == 4                 # looped rule: once per direction
    close(fad.jacrev(f)(x), J, rtol=1e-13, atol=1e-15)
    assert calls["vjp"] == 4                 # looped rule: once per seed
    fd_close(J, fd_jacobian(f, x))


def test_forward_mode_without_jvp_rule_transposes_the_vjp_rule():
    """Forward mode through a primitive with only a vjp rule: the pullback is
    linear in ybar, so J v comes from transposing it (issue #17; formerly a
    NotImplementedError).  More in tests/test_primitive_modes.py."""
    calls = Counter()
    lse = make_lse(calls, jvp=False)
    v = np.linspace(-1.0, 1.0, 5)
    close(fad.jvp(lse, X5, v)[1], softmax_np(X5) @ v, rtol=1e-13, atol=1e-15)
    close(fad.jacfwd(lse)(X5), softmax_np(X5), rtol=1e-13, atol=1e-15)
    close(fad.jacobian(lse, mode="fwd")(X5), softmax_np(X5), rtol=1e-13, atol=1e-15)
    tape = fad.record(lse, X5)
    close(tape.jvp(X5 + 1.0, v), softmax_np(X5 + 1.0) @ v, rtol=1e-13, atol=1e-15)
    assert calls["jvp"] == 0 and calls["vjp"] > 0
    close(fad.grad(lse)(X5), softmax_np(X5), rtol=1e-14)
    close(tape.gradient(X5 + 1.0), softmax_np(X5 + 1.0), rtol=1e-14)
    assert_still_works()

    # scalar path (a primitive on Vars) too
    @fad.primitive
    def twice(x):
        return 2.0 * x
    twice.defvjp(lambda ybar, y, x: 2.0 * ybar)
    close(fad.jvp(lambda x: twice(x) * x, 3.0, 1.0)[1], 12.0)
    close(fad.grad(lambda x: twice(x) * x)(3.0), 12.0)
    assert_still_works()


def test_jacobian_auto_falls_back_to_reverse_without_jvp_rule():
    # R^2 -> R^8: auto chooses forward mode when it can (seen by the jvp rule being called)
    def g(sm):
        def f(a):
            return sm(fad.concatenate([a, 2.0 * a, a * a, a - 1.0]))
        return f

    x = np.array([0.4, -0.2])

    def f_np(a):
        return softmax_np(np.concatenate([a, 2.0 * a, a * a, a - 1.0]))

    J = fd_jacobian(f_np, x)
    with_jvp = Counter()
    fd_close(fad.jacobian(g(make_softmax(with_jvp)))(x), J)
    assert with_jvp["jvp"] > 0, "precondition: auto picks forward mode for this shape"
    without = Counter()
    sm = make_softmax(without, jvp=False)
    fd_close(fad.jacobian(g(sm))(x), J)
    fd_close(fad.jacobian(g(sm), mode="auto")(x), J)
    assert without["vjp"] > 0
    tape = fad.record(g(sm), x)
    fd_close(tape.jacobian(x + 0.1), fd_jacobian(f_np, x + 0.1))
    # forward mode itself transposes the vjp rule (issue #17)
    fd_close(tape.jacobian(x, mode="fwd"), J)


# ---------------------------------------------------------------------------
# multi-seed vjp and k-direction jvp, vectorized and looped rules
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("vectorized", [False, True])
def test_multi_seed_pullback_of_vector_primitive(vectorized):
    calls = Counter()
    sm = make_softmax(calls, vjp_vectorized=vectorized)
    x = np.array([0.2, -0.5, 1.0, 0.3])
    y, pullback = fad.vjp(lambda a: sm(a) * 2.0, x)
    close(y, 2.0 * softmax_np(x), rtol=1e-15)
    calls.clear()
    close(pullback(np.eye(4)), 2.0 * softmax_jac(x), rtol=1e-13, atol=1e-15)
    if vectorized:
        assert calls["vjp"] == 1 and calls["vjp_shape"] == (4, 4)
    else:
        assert calls["vjp"] == 4
    seeds = np.array([[1.0, 2.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 3.0, 0.0]])
    close(pullback(seeds), seeds @ (2.0 * softmax_jac(x)), rtol=1e-13, atol=1e-15)
    close(pullback(seeds[0]), seeds[0] @ (2.0 * softmax_jac(x)), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("vectorized", [False, True])
def test_k_direction_jvp_of_vector_primitive(vectorized):
    calls = Counter()
    sm = make_softmax(calls, jvp_vectorized=vectorized)
    x = np.array([0.2, -0.5, 1.0, 0.3])
    V = np.array([[1.0, 0.0, 0.0, 2.0], [0.5, -1.0, 0.25, 0.0], [0.0, 3.0, 1.0, 1.0]])
    y, T = fad.jvp(lambda a: sm(a) + a, x, V)
    close(y, softmax_np(x) + x, rtol=1e-15)
    close(T, V @ (softmax_jac(x) + np.eye(4)).T, rtol=1e-13, atol=1e-15)
    if vectorized:
        assert calls["jvp"] == 1 and calls["jvp_shape"] == (3, 4)
    else:
        assert calls["jvp"] == 3


@pytest.mark.parametrize("vectorized", [False, True])
def test_multi_seed_and_multi_direction_scalar_path(vectorized):
    """Scalar primitives (the lean path) with k seeds / directions."""
    calls = Counter()

    @fad.primitive
    def smul(a, b, *, p=1.0):
        calls["fn"] += 1
        return p * a * b

    if vectorized:
        @smul.defvjp(vectorized=True)
        def _(ybar, y, a, b, *, p=1.0):
            calls["vjp"] += 1
            assert np.shape(ybar) == (np.size(ybar),)
            return p * b * ybar, p * a * ybar

        @smul.defjvp(vectorized=True)
        def _(xdot, y, a, b, *, p=1.0):
            calls["jvp"] += 1
            ad, bd = xdot
            out = 0.0
            if ad is not None:
                out = out + p * b * ad
            if bd is not None:
                out = out + p * a * bd
            return out
    else:
        @smul.defvjp
        def _(ybar, y, a, b, *, p=1.0):
            calls["vjp"] += 1
            assert np.ndim(ybar) == 0
            return p * b * ybar, p * a * ybar

        @smul.defjvp
        def _(xdot, y, a, b, *, p=1.0):
            calls["jvp"] += 1
            ad, bd = xdot
            out = 0.0
            if ad is not None:
                out = out + p * b * ad
            if bd is not None:
                out = out + p * a * bd
            return out

    def f(x):
        return fad.stack([smul(x[0], x[1], p=2.0), smul(x[1], 3.0), smul(x[2], x[0]) + x[1]])

    x = np.array([1.5, -2.0, 0.5])
    J = np.array([[2 * x[1], 2 * x[0], 0.0],
                  [0.0, 3.0, 0.0],
                  [x[2], 1.0, x[0]]])
    fd_close(J, fd_jacobian(f, x))
    y, pullback = fad.vjp(f, x)
    close(pullback(np.eye(3)), J)
    close(fad.jacrev(f)(x), J)
    close(fad.jacfwd(f)(x), J)
    V = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    close(fad.jvp(f, x, V)[1], V @ J.T)
    # scalar output, one seed
    close(fad.grad(lambda x: smul(x[0], x[1], p=2.0) * smul(x[2], 2.0))(x),
          [4 * x[1] * x[2], 4 * x[0] * x[2], 4 * x[0] * x[1]])


# ---------------------------------------------------------------------------
# replay: record once, differentiate at new points
# ---------------------------------------------------------------------------

def test_replay_calls_the_function_again_scalar_output():
    calls = Counter()
    lse = make_lse(calls)
    x0 = np.array([0.1, 0.2, 0.3])
    tape = fad.record(lambda a: lse(a * 2.0) + fad.sum(a), x0)
    assert calls["fn"] == 1
    for x in (np.array([1.0, -2.0, 0.5]), np.array([3.0, 3.0, -4.0])):
        before = calls["fn"]
        close(tape(x), lse_np(2 * x) + x.sum(), rtol=1e-14)
        assert calls["fn"] == before + 1
        close(tape.gradient(x), 2.0 * softmax_np(2 * x) + 1.0, rtol=1e-13)
        v, g = tape.value_and_gradient(x)
        close(v, lse_np(2 * x) + x.sum(), rtol=1e-14)
        close(g, 2.0 * softmax_np(2 * x) + 1.0, rtol=1e-13)
        d = np.array([1.0, 0.0, -1.0])
        close(tape.jvp(x, d), (2.0 * softmax_np(2 * x) + 1.0) @ d, rtol=1e-13, atol=1e-15)
        close(tape.jacobian(x), 2.0 * softmax_np(2 * x) + 1.0, rtol=1e-13)


def test_replay_with_array_output_primitive():
    calls = Counter()
    sm = make_softmax(calls)
    x0 = np.array([0.1, 0.2, 0.3, 0.4])
    tape = fad.record(lambda a: sm(a) * 2.0 - a, x0)
    for x in (np.array([1.0, -2.0, 0.5, 0.0]), np.array([-1.0, 0.3, 2.0, 1.0])):
        J = 2.0 * softmax_jac(x) - np.eye(4)
        before = calls["fn"]
        close(tape(x), 2.0 * softmax_np(x) - x, rtol=1e-14)
        assert calls["fn"] == before + 1
        close(tape.jacobian(x), J, rtol=1e-13, atol=1e-15)
        close(tape.jacobian(x, mode="fwd"), J, rtol=1e-13, atol=1e-15)
        close(tape.jacobian(x, mode="rev"), J, rtol=1e-13, atol=1e-15)
        close(tape.vjp(x, np.eye(4)), J, rtol=1e-13, atol=1e-15)
        V = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, -1.0, 3.0]])
        close(tape.jvp(x, V), V @ J.T, rtol=1e-13, atol=1e-15)
    # the recorded point is unaffected by the replays
    y, pullback = fad.vjp(lambda a: sm(a) * 2.0 - a, x0)
    close(pullback(np.eye(4)), 2.0 * softmax_jac(x0) - np.eye(4), rtol=1e-13, atol=1e-15)


def test_replay_scalar_primitive_in_a_loop():
    calls = Counter()
    hyp = make_hypot(calls)

    def f(x):
        s = 0.0
        for i in range(len(x) - 1):
            s = s + hyp(x[i], x[i + 1], scale=2.0) * x[i]
        return s

    tape = fad.record(f, np.array([1.0, 2.0, 3.0, 4.0]))
    n0 = calls["fn"]
    x = np.array([0.5, -1.5, 2.0, 0.25])
    close(tape(x), f(x), rtol=1e-14)
    assert calls["fn"] == n0 + 2 * 3
    fd_close(tape.gradient(x), fd_jacobian(f, x))
    fd_close(tape.jvp(x, np.ones(4)), fd_jacobian(f, x).sum())


def test_tape_listing_names_the_primitive():
    calls = Counter()
    lse = make_lse(calls)
    tape = fad.record(lambda a: lse(a) * 2.0, np.array([1.0, 2.0]))
    assert "logsumexp" in str(tape)
    assert "logsumexp" in tape.to_dot()


def test_primitives_scalar_and_vectorized_in_loop_jacobian_hessian_replay():
    @fad.primitive
    def cube(x, *, s=1.0):
        return s * x ** 3

    @cube.defvjp
    def _(yb, y, x, *, s=1.0):
        return yb * 3 * s * x ** 2

    @cube.defjvp
    def _(xd, y, x, *, s=1.0):
        return xd * 3 * s * x ** 2

    def f(x):
        s = 0.0
        for i in range(3):
            s = s + cube(x[i], s=0.5) * x[i + 1]
        return fad.stack([s, fad.norm(x[:3] - x[1:]) * x[0],
                          cube(x[2] + x[3], s=2.0) + fad.sum(cube(x))])

    def fn(x):
        return np.array([sum(0.5 * x[i] ** 3 * x[i + 1] for i in range(3)),
                         np.linalg.norm(x[:3] - x[1:]) * x[0],
                         2 * (x[2] + x[3]) ** 3 + np.sum(x ** 3)])

    x = np.array([0.3, -0.7, 1.1, 0.5])
    J = fd_jacobian(fn, x, relative=False)
    np.testing.assert_allclose(fad.jacrev(f)(x), J, atol=1e-6)
    np.testing.assert_allclose(fad.jacfwd(f)(x), J, atol=1e-6)
    tape = fad.record(f, x + 0.1)
    Y = np.random.default_rng(1).standard_normal((5, 3))
    V = np.random.default_rng(2).standard_normal((5, 4))
    np.testing.assert_allclose(tape.vjp(x, Y), Y @ J, atol=1e-6)
    np.testing.assert_allclose(tape.jvp(x, V), V @ J.T, atol=1e-6)
    w = np.array([1.0, -2.0, 0.5])
    g = lambda z: fad.sum(f(z) * w)                     # noqa: E731
    H = fad.hessian(g)(x)
    Hd = fd_jacobian(fad.grad(g), x, relative=False).T
    np.testing.assert_allclose(H, Hd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fad.record(g, x + 0.2).hessian(x), H, rtol=1e-10, atol=1e-12)


def test_replay_output_shape_change_is_value_error():
    @fad.primitive
    def head(x):
        return x[: int(x[0])] * 1.0
    head.defvjp(lambda ybar, y, x: np.concatenate([ybar, np.zeros(x.size - ybar.size)]))
    tape = fad.record(lambda a: fad.sum(head(a)), np.array([2.0, 1.0, 1.0]))
    close(tape.gradient(np.array([2.0, 5.0, 7.0])), [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="head"):
        tape.gradient(np.array([3.0, 1.0, 1.0]))
    close(tape.gradient(np.array([2.0, 5.0, 7.0])), [1.0, 1.0, 0.0])
    assert_still_works()


# ---------------------------------------------------------------------------
# validation errors (and the library keeps working)
# ---------------------------------------------------------------------------

def _prim_with_vjp(name, rule, vectorized=False, nargs=1):
    if nargs == 1:
        def fn(x):
            return np.sum(x * x) if np.ndim(x) else x * x
    else:
        def fn(x, y):
            return np.sum(x * y) if np.ndim(x) else x * y
    fn.__name__ = name
    p = fad.primitive(fn)
    p.defvjp(rule, vectorized=vectorized)
    return p


@pytest.mark.parametrize("path", ["array", "scalar"])
def test_wrong_cotangent_shape_is_value_error(path):
    if path == "array":
        p = _prim_with_vjp("badshape", lambda ybar, y, x, z: (z * ybar, np.ones(3)), nargs=2)
        f, x = (lambda a: p(a, 2.0 * a)), np.ones(4)
        shapes = ("(3,)", "(4,)")
        arg = "argument 1"
    else:
        p = _prim_with_vjp("badshape", lambda ybar, y, x: np.ones(2))
        f, x = (lambda a: p(a) * 2.0), 1.5
        shapes = ("(2,)", "()")
        arg = "argument 0"
    with pytest.raises(ValueError) as ei:
        fad.grad(f)(x)
    msg = str(ei.value)
    assert "badshape" in msg and arg in msg
    for s in shapes:
        assert s in msg
    assert_still_works()


def test_wrong_cotangent_shape_array_argument():
    p = _prim_with_vjp("shapecheck", lambda ybar, y, x: np.ones((2, 3)))
    with pytest.raises(ValueError) as ei:
        fad.grad(lambda a: p(a))(np.ones((3, 2)))
    msg = str(ei.value)
    assert "shapecheck" in msg and "argument 0" in msg
    assert "(2, 3)" in msg and "(3, 2)" in msg
    assert_still_works()


def test_wrong_cotangent_shape_vectorized_rule():
    # the rule forgets the leading seed axis
    p = _prim_with_vjp("vecshape", lambda ybar, y, x: 2.0 * x, vectorized=True)
    with pytest.raises(ValueError) as ei:
        fad.vjp(lambda a: p(a), np.ones(3))[1](np.ones((2,)))
    msg = str(ei.value)
    assert "vecshape" in msg and "(3,)" in msg and "(2, 3)" in msg
    assert_still_works()


@pytest.mark.parametrize("path", ["array", "scalar"])
@pytest.mark.parametrize("ret", ["one", "three"])
def test_wrong_number_of_cotangents_is_value_error(path, ret):
    if ret == "one":
        rule = lambda ybar, y, x, z: z * ybar           # noqa: E731 - a single value for two args
    else:
        rule = lambda ybar, y, x, z: (z * ybar, x * ybar, ybar)   # noqa: E731
    p = _prim_with_vjp("countcheck", rule, nargs=2)
    if path == "array":
        f, x = (lambda a: p(a, 2.0 * a)), np.ones(3)
    else:
        f, x = (lambda a: p(a, 2.0 * a)), 1.5
    with pytest.raises(ValueError, match="countcheck"):
        fad.grad(f)(x)
    assert_still_works()


@pytest.mark.parametrize("path", ["array", "scalar"])
def test_too_many_cotangents_for_one_argument_is_value_error(path):
    p = _prim_with_vjp("onearg", lambda ybar, y, x: (2.0 * x * ybar, 0.0 * x))
    x = np.ones(3) if path == "array" else 1.5
    with pytest.raises(ValueError, match="onearg"):
        fad.grad(lambda a: fad.sum(p(a)) if path == "array" else p(a))(x)
    assert_still_works()


@pytest.mark.parametrize("path", ["array", "scalar"])
@pytest.mark.parametrize("bad", ["a string", {"x": 1.0}, np.array(["a", "b", "c"])])
def test_non_numeric_cotangent_is_type_error(path, bad):
    p = _prim_with_vjp("numcheck", lambda ybar, y, x: bad)
    x = np.ones(3) if path == "array" else 1.5
    with pytest.raises(TypeError, match="numcheck"):
        fad.grad(lambda a: fad.sum(p(a)) if path == "array" else p(a))(x)
    assert_still_works()


@pytest.mark.parametrize("path", ["array", "scalar"])
@pytest.mark.parametrize("bad", ["text", None, [1.0, 2.0], np.array([1 + 2j])])
def test_non_numeric_function_output_is_type_error(path, bad):
    def weird(x):
        return bad
    p = fad.primitive(weird)
    p.defvjp(lambda ybar, y, x: x)
    x = np.ones(3) if path == "array" else 1.5
    with pytest.raises(TypeError, match="weird"):
        fad.grad(lambda a: p(a))(x)
    assert_still_works()


def test_non_numeric_function_output_at_replay_is_type_error():
    state = {"bad": False}

    @fad.primitive
    def flaky(x):
        return "oops" if state["bad"] else np.sum(x ** 2)
    flaky.defvjp(lambda ybar, y, x: 2.0 * x * ybar)
    tape = fad.record(lambda a: flaky(a) + 1.0, np.ones(2))
    state["bad"] = True
    with pytest.raises(TypeError, match="flaky"):
        tape.gradient(np.array([1.0, 2.0]))
    state["bad"] = False
    close(tape.gradient(np.array([1.0, 2.0])), [2.0, 4.0])
    assert_still_works()


@pytest.mark.parametrize("path", ["array", "scalar"])
def test_no_vjp_rule_while_differentiating_is_type_error(path):
    @fad.primitive
    def norule(x):
        return x * 3.0
    x = np.ones(3) if path == "array" else 1.5
    with pytest.raises(TypeError) as ei:
        fad.grad(lambda a: fad.sum(norule(a)) if path == "array" else norule(a))(x)
    assert "norule" in str(ei.value) and "defvjp" in str(ei.value)
    assert_still_works()
    close(norule(2.0), 6.0)                 # plain numbers still work without rules


def test_wrong_jvp_tangent_shape_is_value_error():
    calls = Counter()
    lse = make_lse(calls)
    lse.defjvp(lambda xdot, y, x: xdot * 1.0)          # returns x's shape instead of ()
    with pytest.raises(ValueError, match="logsumexp"):
        fad.jvp(lse, X5, np.ones(5))
    assert_still_works()


class RuleBoom(Exception):
    pass


@pytest.mark.parametrize("where", ["vjp-array", "vjp-scalar", "vjp-vectorized", "jvp",
                                   "fn-record", "fn-replay"])
def test_exception_inside_rule_propagates_and_library_keeps_working(where):
    boom = RuleBoom(where)
    armed = {"on": True}

    def maybe_raise():
        if armed["on"]:
            raise boom

    @fad.primitive
    def fragile(x):
        if where.startswith("fn"):
            maybe_raise()
        return np.sum(np.sin(x)) if np.ndim(x) else math.sin(x)

    def vjp(ybar, y, x):
        if where.startswith("vjp"):
            maybe_raise()
        c = np.cos(x)
        return (ybar[:, None] * c[None]) if where == "vjp-vectorized" else ybar * c
    fragile.defvjp(vjp, vectorized=(where == "vjp-vectorized"))

    @fragile.defjvp
    def _(xdot, y, x):
        if where == "jvp":
            maybe_raise()
        return np.sum(xdot * np.cos(x))

    x = 0.7 if where == "vjp-scalar" else np.array([0.3, -0.2, 1.1])
    expected = np.cos(x)
    if where == "fn-replay":
        armed["on"] = False
        tape = fad.record(fragile, x)
        armed["on"] = True
        with pytest.raises(RuleBoom) as ei:
            tape.gradient(x + 1.0)
        assert ei.value is boom
        armed["on"] = False
        close(tape.gradient(x + 1.0), np.cos(x + 1.0), rtol=1e-14)
        close(tape(x + 1.0), np.sum(np.sin(x + 1.0)), rtol=1e-14)
    else:
        with pytest.raises(RuleBoom) as ei:
            if where == "jvp":
                fad.jvp(fragile, x, np.ones(3))
            elif where == "vjp-vectorized":
                fad.vjp(fragile, x)[1](np.ones(2))
            else:
                fad.grad(fragile)(x)
        assert ei.value is boom
        armed["on"] = False
    close(fad.grad(fragile)(x), expected, rtol=1e-14)
    close(fad.jvp(fragile, x, np.ones_like(x))[1], np.sum(expected), rtol=1e-14)
    assert_still_works()


def test_guard_rule_failures_leave_pullback_and_library_usable():
    mode = {"n": 0}

    @fad.primitive
    def flaky(x):
        return np.sin(x)

    @flaky.defvjp
    def _(ybar, y, x):
        if mode["n"] == 1:
            raise RuntimeError("boom")
        if mode["n"] == 2:
            return np.ones(7)
        return ybar * np.cos(x)

    x = np.linspace(-1, 1, 5)
    f = lambda z: fad.sum(flaky(z) * z) + flaky(z[0]) * z[1]  # noqa: E731
    ref = np.sin(x) + x * np.cos(x)
    ref[0] += np.cos(x[0]) * x[1]
    ref[1] += np.sin(x[0])
    _, pb = fad.vjp(f, x)
    mode["n"] = 1
    with pytest.raises(RuntimeError):
        pb(1.0)
    mode["n"] = 2
    with pytest.raises(ValueError, match="flaky"):
        pb(1.0)
    with pytest.raises(ValueError, match="flaky"):
        fad.grad(f)(x)
    mode["n"] = 0
    np.testing.assert_allclose(pb(1.0), ref, atol=1e-15)
    np.testing.assert_allclose(pb(np.array([1.0, 2.0])), np.stack([ref, 2 * ref]), atol=1e-15)
    np.testing.assert_allclose(fad.grad(f)(x), ref, atol=1e-15)


# ---------------------------------------------------------------------------
# fad.solve and fad.norm
# ---------------------------------------------------------------------------

A3 = np.array([[4.0, 1.0, -0.5], [0.3, 3.0, 1.0], [-1.0, 0.5, 5.0]])
B1 = np.array([1.0, -2.0, 0.5])
B2 = np.array([[1.0, 0.0], [-2.0, 1.5], [0.5, 3.0]])


def test_solve_on_plain_numbers():
    close(fad.solve(A3, B1), np.linalg.solve(A3, B1))
    close(fad.solve(A3, B2), np.linalg.solve(A3, B2))


@pytest.mark.parametrize("b", [B1, B2], ids=["b1d", "b2d"])
def test_solve_grad_against_finite_differences(b):
    w = np.arange(1.0, 1.0 + b.size).reshape(b.shape)

    def f(A, b_):
        return fad.sum(w * fad.solve(A, b_)) + 0.5 * fad.sum(fad.solve(A, b_) ** 2)

    gA, gb = fad.grad(f, argnums=(0, 1))(A3, b)
    fd_close(gA, fd_jacobian(lambda A: f(A, b), A3))
    fd_close(gb, fd_jacobian(lambda b_: f(A3, b_), b))
    # analytic: with r = w + x, bbar = A^-T r, Abar = -bbar x^T
    x = np.linalg.solve(A3, b)
    bbar = np.linalg.solve(A3.T, w + x)
    close(gb, bbar, rtol=1e-12)
    close(gA, -(bbar @ x.T) if b.ndim == 2 else -np.outer(bbar, x), rtol=1e-12)


@pytest.mark.parametrize("b", [B1, B2], ids=["b1d", "b2d"])
def test_solve_jacobians_against_finite_differences(b):
    Ainv = np.linalg.inv(A3)
    JA = fd_jacobian(lambda A: np.linalg.solve(A, b), A3)
    for jac in (fad.jacfwd, fad.jacrev, fad.jacobian):
        fd_close(jac(lambda A: fad.solve(A, b))(A3), JA)
        Jb = jac(lambda b_: fad.solve(A3, b_))(b)
        if b.ndim == 1:
            close(Jb, Ainv, rtol=1e-12, atol=1e-14)
        else:  # x[i, j] depends on b[k, l] through Ainv[i, k] delta(j, l)
            close(Jb, np.einsum("ik,jl->ijkl", Ainv, np.eye(b.shape[1])), rtol=1e-12, atol=1e-14)
    close(fad.jacfwd(lambda A: fad.solve(A, b))(A3), fad.jacrev(lambda A: fad.solve(A, b))(A3),
          rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("b", [B1, B2], ids=["b1d", "b2d"])
def test_solve_with_both_arguments_active(b):
    nA = A3.size

    def f(p):
        A = fad.reshape(p[:nA], (3, 3))
        return fad.solve(A, fad.reshape(p[nA:], b.shape)) * 2.0

    def f_np(p):
        return 2.0 * np.linalg.solve(p[:nA].reshape(3, 3), p[nA:].reshape(b.shape))

    p = np.concatenate([A3.ravel(), b.ravel()])
    J = fd_jacobian(f_np, p)
    fd_close(fad.jacfwd(f)(p), J)
    fd_close(fad.jacrev(f)(p), J)
    V = np.random.default_rng(3).normal(size=(4, p.size))
    fd_close(fad.jvp(f, p, V)[1], np.einsum("kp,...p->k...", V, J))


@pytest.mark.parametrize("b", [B1, B2], ids=["b1d", "b2d"])
def test_solve_multi_seed_vjp(b):
    JA = fd_jacobian(lambda A: np.linalg.solve(A, b), A3)      # b.shape + (3, 3)
    m = b.size
    y, pullback = fad.vjp(lambda A: fad.solve(A, b), A3)
    close(y, np.linalg.solve(A3, b))
    seeds = np.eye(m).reshape((m,) + b.shape)
    fd_close(pullback(seeds), JA.reshape(m, 3, 3))
    one = np.arange(1.0, m + 1).reshape(b.shape)
    fd_close(pullback(one), np.tensordot(one, JA, axes=b.ndim))
    yb, pullback_b = fad.vjp(lambda b_: fad.solve(A3, b_), b)
    Jb = fd_jacobian(lambda b_: np.linalg.solve(A3, b_), b)
    fd_close(pullback_b(seeds), Jb.reshape((m,) + b.shape))


def test_solve_replay_at_new_matrix():
    tape = fad.record(lambda A: fad.sum(fad.solve(A, B1)), A3)
    A = A3 + np.diag([1.0, -0.5, 2.0])
    close(tape(A), np.sum(np.linalg.solve(A, B1)), rtol=1e-13)
    fd_close(tape.gradient(A), fd_jacobian(lambda M: np.sum(np.linalg.solve(M, B1)), A))


def test_vjp_pullback_of_primitive_owns_its_constant_arguments():
    """BUG: a PrimitiveBlock's state keeps (y, args) with args referencing the
    caller's constant arrays (record() copies Operand.const but not the state,
    and _detach only copies views), so the vjp rule later sees the caller's
    mutated array.  The pullback of solve(A, .) must not change when the
    caller reuses A after fad.vjp returned."""
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    expected = np.linalg.solve(A.T, np.array([1.0, 0.0]))
    _, pullback = fad.vjp(lambda b: fad.solve(A, b), np.array([1.0, 2.0]))
    A[:] = np.eye(2)
    np.testing.assert_allclose(pullback(np.array([1.0, 0.0])), expected)


@pytest.mark.parametrize("x", [np.array([3.0, -4.0, 12.0]),
                               np.array([[1.0, 2.0], [-2.0, 0.5]])], ids=["1d", "2d"])
def test_norm_gradient_is_x_over_norm(x):
    r = np.sqrt(np.sum(x * x))
    v, g = fad.value_and_grad(fad.norm)(x)
    close(v, r, rtol=1e-15)
    close(g, x / r, rtol=1e-14)
    close(fad.jacfwd(fad.norm)(x), x / r, rtol=1e-14)
    close(fad.jacrev(fad.norm)(x), x / r, rtol=1e-14)
    fd_close(g, fd_jacobian(fad.norm, x))
    # inside more code
    close(fad.grad(lambda a: fad.norm(2.0 * a) ** 2)(x), 8.0 * x, rtol=1e-13)
    assert fad.norm(x) == r


def test_norm_at_zero_has_zero_gradient():
    z = np.zeros(4)
    v, g = fad.value_and_grad(fad.norm)(z)
    assert v == 0.0
    assert g.shape == (4,) and np.all(g == 0.0) and np.all(np.isfinite(g))
    y, t = fad.jvp(fad.norm, z, np.ones(4))
    assert y == 0.0 and t == 0.0
    assert np.all(fad.jacfwd(fad.norm)(z) == 0.0)
    tape = fad.record(fad.norm, np.array([1.0, 1.0, 0.0, 0.0]))
    assert np.all(tape.gradient(z) == 0.0)
    close(tape.gradient(np.array([0.0, 3.0, 4.0, 0.0])), [0.0, 0.6, 0.8, 0.0])


def test_norm_of_a_scalar_var():
    assert fad.grad(fad.norm)(-2.0) == -1.0
    assert fad.grad(fad.norm)(0.0) == 0.0
    close(fad.grad(lambda t: fad.norm(t * t))(3.0), 6.0)


# ---------------------------------------------------------------------------
# pickling a tape that contains a primitive
# ---------------------------------------------------------------------------

@fad.primitive
def pickled_cubesum(x):
    return float(np.sum(x ** 3))


def pickled_cubesum_vjp(ybar, y, x):
    return 3.0 * x ** 2 * ybar


def pickled_cubesum_jvp(xdot, y, x):
    return np.sum(3.0 * x ** 2 * xdot)


pickled_cubesum.defvjp(pickled_cubesum_vjp)
pickled_cubesum.defjvp(pickled_cubesum_jvp)


@fad.primitive
def pickled_square(t):
    return t * t


def pickled_square_vjp(ybar, y, t):
    return 2.0 * t * ybar


pickled_square.defvjp(pickled_square_vjp)


def pickled_objective(x):
    s = 2.0 * pickled_cubesum(x) + fad.sum(x)
    for i in range(len(x)):
        s = s + pickled_square(x[i])
    return s


def test_pickled_tape_with_module_level_primitive():
    x0 = np.array([0.5, -1.0, 2.0])
    tape = fad.record(pickled_objective, x0)
    tape2 = pickle.loads(pickle.dumps(tape))
    x = np.array([1.5, 0.25, -2.0])
    expected = 6.0 * x ** 2 + 1.0 + 2.0 * x
    close(tape.gradient(x), expected, rtol=1e-14)
    close(tape2.gradient(x), expected, rtol=1e-14)
    close(tape2(x), 2.0 * np.sum(x ** 3) + np.sum(x) + np.sum(x * x), rtol=1e-14)
    close(tape2.jacobian(x0, mode="rev"), tape.gradient(x0), rtol=1e-14)


def test_pickled_tape_with_fad_solve():
    tape = fad.record(lambda A: fad.sum(fad.solve(A, B1)), A3)
    tape2 = pickle.loads(pickle.dumps(tape))
    A = A3 + np.eye(3)
    close(tape2.gradient(A), tape.gradient(A), rtol=1e-14)
    fd_close(tape2.gradient(A), fd_jacobian(lambda M: np.sum(np.linalg.solve(M, B1)), A))


def test_error_messages_name_the_primitive_in_quotes():
    """A representative message carries the primitive's name and both shapes verbatim."""
    p = _prim_with_vjp("quoted_name", lambda ybar, y, x: np.zeros(5))
    with pytest.raises(ValueError, match=re.escape("'quoted_name'")):
        fad.grad(lambda a: p(a))(np.ones(4))
    assert_still_works()
