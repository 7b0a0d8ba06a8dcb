"""Second adversarial round: confirmed bugs (failing until fixed) and guards.

Bugs found (each test's docstring says what is wrong and what is right):
- the mixed second partial of x**y (both operands on the tape) is 0 at y == 0
  instead of 1/x (csrc/fastad_ops.h, fad_second, case FAD_POW);
- sigmoid' (and sigmoid'', softplus'') lose all accuracy for large positive x:
  v * (1 - v) cancels to exactly 0 though the true value is about exp(-x)
  (csrc/fastad_ops.h, fad_eval/fad_second, FAD_SIGMOID / FAD_SOFTPLUS).

The guard tests pin down tricky behaviour verified to be right in this round:
the error contract on every entry point, replay of mixed programs (scalar
branches, array comparisons, np.max, primitives, blocks) at unchanged and
changed branches, failures inside rules/recordings, and threads.
"""
import math
import threading

import numpy as np
import pytest

import fastad as fad
from conftest import fd_grad, fd_jacobian


# ------------------------------------------------------------------ bugs


def _x_pow_y(z):
    return z[0] ** z[1]


def _x_pow_y_array(z):
    return fad.sum(z[:1] ** z[1:])


@pytest.mark.parametrize("f", [_x_pow_y, _x_pow_y_array], ids=["scalar", "array"])
def test_pow_mixed_second_partial_at_zero_exponent(f):
    """BUG: d2(x**y)/dxdy at y == 0 is returned as 0; it is x**(y-1) (1 + y ln x)
    = 1/x there.  fad_second(FAD_POW) sets dxy = 0 whenever y == 0 (copying the
    d0 convention for x**0), so every Hessian path (fad.hessian, fad.hvp,
    Tape.hessian, Tape.at().hvp, array blocks via op_map2) is wrong and the
    Hessian disagrees with the Jacobian of fad.grad.
    Minimal input: f(z) = z[0] ** z[1] at z = (2, 0): H[0, 1] must be 0.5."""
    x = np.array([2.0, 0.0])
    expected = np.array([[0.0, 0.5], [0.5, math.log(2.0) ** 2]])
    # the Jacobian of the (correct) gradient agrees with the analytic Hessian
    g = fad.grad(f)
    col1 = fd_jacobian(g, x, relative=False)[:, 1]
    np.testing.assert_allclose(col1, expected[:, 1], atol=1e-6)
    np.testing.assert_allclose(fad.hessian(f)(x), expected, atol=1e-12)
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.hessian(x), expected, atol=1e-12)
    np.testing.assert_allclose(tape.at(x).hvp(np.array([0.0, 1.0])), expected[1], atol=1e-12)
    np.testing.assert_allclose(fad.hvp(f, x, np.array([0.0, 1.0])), expected[1], atol=1e-12)


def test_sigmoid_derivative_large_positive_argument():
    """BUG: fad.sigmoid'(40) is exactly 0 while sigmoid'(-40) = 4.25e-18 (the
    derivative is even: both must be exp(-40)/(1+exp(-40))**2).  The op table
    computes d0 = v * (1 - v) with v = sigmoid(40) == 1.0 in double, which
    cancels; sigmoid(x) * sigmoid(-x) is exact.  Same for the scalar node and
    the array block (op_map)."""
    expected = math.exp(-40.0) / (1.0 + math.exp(-40.0)) ** 2
    assert fad.grad(fad.sigmoid)(-40.0) == pytest.approx(expected, rel=1e-12, abs=0)
    assert fad.grad(fad.sigmoid)(40.0) == pytest.approx(expected, rel=1e-12, abs=0)
    ga = fad.grad(lambda z: fad.sum(fad.sigmoid(z)))(np.array([40.0, -40.0]))
    np.testing.assert_allclose(ga, [expected, expected], rtol=1e-12)


def test_sigmoid_and_softplus_second_derivative_large_positive_argument():
    """BUG: sigmoid''(40) and softplus''(40) are returned as exactly 0.
    softplus'' = sigmoid' = exp(-40)/(1+exp(-40))**2 ~ 4.25e-18 (the value at
    -40 is right), sigmoid''(40) = sigmoid'(40) (1 - 2 sigmoid(40)) ~ -4.25e-18.
    fad_second computes them from v * (1 - v), which cancels for v == 1.0."""
    s1 = math.exp(-40.0) / (1.0 + math.exp(-40.0)) ** 2
    h_sp = fad.hessian(lambda z: fad.softplus(z[0]))(np.array([40.0]))[0, 0]
    assert h_sp == pytest.approx(s1, rel=1e-10, abs=0)
    h_sg = fad.hessian(lambda z: fad.sigmoid(z[0]))(np.array([40.0]))[0, 0]
    assert h_sg == pytest.approx(-s1, rel=1e-10, abs=0)


# ------------------------------------------------------------------ guards: op table


def test_guard_pow_negative_base_integer_exponent():
    """x**3 at x < 0 (scalar node, array block, second order) is finite and right."""
    assert fad.grad(lambda x: x ** 3)(-2.0) == 12.0
    np.testing.assert_array_equal(fad.grad(lambda x: fad.sum(x ** 3))(np.array([-2.0, -1.0])), [12.0, 3.0])
    np.testing.assert_array_equal(fad.hessian(lambda x: fad.sum(x ** 3))(np.array([-2.0, -1.0])),
                                  [[-12.0, 0.0], [0.0, -6.0]])
    # an exponent on the tape: d/dx stays finite even though d/dy is NaN at x < 0
    g = fad.grad(_x_pow_y)(np.array([-2.0, 3.0]))
    assert g[0] == 12.0


def test_guard_pow_zero_conventions():
    assert fad.grad(lambda x: x ** 0)(0.0) == 0.0
    assert fad.grad(lambda x: x ** 1)(0.0) == 1.0
    np.testing.assert_array_equal(fad.grad(lambda x: fad.sum(x ** 0))(np.zeros(2)), [0.0, 0.0])
    assert fad.grad(lambda y: 0.0 ** y)(2.0) == 0.0
    assert fad.hessian(lambda x: x[0] ** 0)(np.zeros(1))[0, 0] == 0.0


def test_guard_nonsmooth_points_scalar_and_array_agree():
    z = np.zeros(2)
    np.testing.assert_array_equal(fad.grad(lambda v: fad.hypot(v[0], v[1]))(z), [0.0, 0.0])
    np.testing.assert_array_equal(fad.grad(lambda v: fad.sum(fad.hypot(v[:1], v[1:])))(z), [0.0, 0.0])
    one = np.ones(2)
    np.testing.assert_array_equal(fad.grad(lambda v: fad.maximum(v[0], v[1]))(one), [0.5, 0.5])
    np.testing.assert_array_equal(fad.grad(lambda v: np.sum(np.maximum(v[:1], v[1:])))(one), [0.5, 0.5])
    np.testing.assert_array_equal(fad.grad(lambda v: fad.minimum(v[0], 1.0))(one), [0.5, 0.0])
    for x in (800.0, -800.0):
        assert fad.grad(fad.sigmoid)(x) == 0.0
        assert np.isfinite(fad.softplus(x))
    assert fad.grad(fad.softplus)(800.0) == 1.0
    for x in (1e-20, -1e-20, 0.0, -0.0):
        assert fad.grad(fad.log1p)(x) == 1.0 and fad.grad(fad.expm1)(x) == 1.0


# ------------------------------------------------------------------ guards: errors


_X = np.array([0.5, -0.3])

_ENTRY = {
    "grad": lambda f: fad.grad(f)(_X),
    "value_and_grad": lambda f: fad.value_and_grad(f)(_X),
    "jvp": lambda f: fad.jvp(f, _X, _X),
    "vjp": lambda f: fad.vjp(f, _X),
    "jacfwd": lambda f: fad.jacfwd(f)(_X),
    "jacrev": lambda f: fad.jacrev(f)(_X),
    "hvp": lambda f: fad.hvp(f, _X, _X),
    "hessian": lambda f: fad.hessian(f)(_X),
    "record": lambda f: fad.record(f, _X),
    "minimize": lambda f: fad.minimize(f, _X),
    "objective": lambda f: fad.optimize.objective(f, _X),
}


@pytest.mark.parametrize("entry", sorted(_ENTRY))
def test_guard_float_and_math_raise_typeerror_everywhere(entry):
    for bad in (lambda z: float(z[0]), lambda z: math.sin(z[0]), lambda z: math.exp(z[1])):
        with pytest.raises(TypeError, match="fastad"):
            _ENTRY[entry](bad)
        np.testing.assert_array_equal(fad.grad(lambda z: fad.sum(z * z))(_X), 2 * _X)


def test_guard_stale_values_raise_tape_error():
    keep = []
    fad.grad(lambda z: (keep.append(z), z[0] * z[1])[1])(_X)
    stale = keep[0]
    uses = [
        lambda z: fad.sum(z * stale), lambda z: z[0] * stale[0],
        lambda z: fad.sum(fad.where(np.array([True, False]), z, stale)),
        lambda z: z[0] if stale[0] > 0 else z[1],
        lambda z: fad.norm(stale) + z[0], lambda z: fad.sum(np.eye(2) @ stale) + z[0],
        lambda z: np.max(stale) + z[0], lambda z: stale[0],
    ]
    for use in uses:
        with pytest.raises(fad.TapeError):
            fad.grad(use)(_X)
    for bad in (lambda: stale + 1, lambda: np.sin(stale), lambda: fad.sin(stale[0])):
        with pytest.raises(fad.TapeError):
            bad()
    with pytest.raises(fad.TapeError):
        fad.jacobian(lambda z: stale)(_X)
    np.testing.assert_array_equal(fad.grad(lambda z: fad.sum(z * z))(_X), 2 * _X)


def test_guard_nested_differentiation():
    with pytest.raises(NotImplementedError, match="hessian"):
        fad.grad(lambda z: fad.grad(lambda w: w[0] * w[1])(z).sum())(_X)
    with pytest.raises(NotImplementedError):
        fad.grad(lambda z: fad.hvp(lambda w: fad.sum(w ** 3), z, z).sum())(_X)
    # an independent inner differentiation inside f is fine
    g = fad.grad(lambda z: z[0] * fad.grad(lambda w: fad.sum(w * w))(np.ones(2))[0] + z[1] * z[1])(_X)
    np.testing.assert_array_equal(g, [2.0, 2 * _X[1]])


def test_guard_non_scalar_output_errors():
    vec = lambda z: z * 2  # noqa: E731
    for call in (lambda: fad.grad(vec)(_X), lambda: fad.value_and_grad(vec)(_X),
                 lambda: fad.hvp(vec, _X, _X), lambda: fad.hessian(vec)(_X),
                 lambda: fad.record(vec, _X).gradient(_X),
                 lambda: fad.record(vec, _X).at(_X).gradient(),
                 lambda: fad.minimize(vec, _X)):
        with pytest.raises(ValueError):
            call()


# ------------------------------------------------------------------ guards: replay mixtures


@fad.primitive
def _cube(x):
    return x ** 3


@_cube.defvjp
def _(ybar, y, x):
    return ybar * 3 * x ** 2


@_cube.defjvp
def _(xdot, y, x):
    return 3 * x ** 2 * xdot


def _mixed(x):
    a = np.tanh(x) * 2.0
    s = 0.0
    for i in range(len(x)):
        if x[i] > 0:
            s = s + a[i] * x[i]
        else:
            s = s - fad.sin(x[i])
    m = np.max(x)
    w = fad.where(x > 0.1, x ** 2, -x)
    return s + m * fad.sum(w) + fad.sum(_cube(x)) + fad.maximum(x[0], x[1])


_X0 = np.array([0.5, -0.3, 0.8, 0.05])
_X1 = _X0 + np.array([0.01, -0.02, 0.03, 0.01])


def test_guard_mixed_replay_all_entry_points_agree():
    tape = fad.record(_mixed, _X0)
    g = fad.grad(_mixed)(_X1)
    H = fad.hessian(_mixed)(_X1)
    v = np.array([1.0, 2.0, -1.0, 0.5])
    V = np.stack([v, 2 * v])
    np.testing.assert_allclose(tape.gradient(_X1), g, atol=1e-13)
    np.testing.assert_allclose(tape.hessian(_X1), H, atol=1e-12)
    np.testing.assert_allclose(tape.hvp(_X1, v), H @ v, atol=1e-12)
    np.testing.assert_allclose(tape.hvp(_X1, V), V @ H, atol=1e-12)
    pt = tape.at(_X1)
    np.testing.assert_allclose(pt.gradient(), g, atol=1e-13)
    np.testing.assert_allclose(pt.hvp(v), H @ v, atol=1e-12)
    np.testing.assert_allclose(pt.hvp(V), V @ H, atol=1e-12)
    assert pt.jvp(v) == pytest.approx(g @ v, abs=1e-12)
    assert tape.jvp(_X1, v) == pytest.approx(g @ v, abs=1e-12)
    np.testing.assert_allclose(tape.vjp(_X1, 2.0), 2 * g, atol=1e-12)
    np.testing.assert_allclose(tape.jacobian(_X1, "fwd"), g, atol=1e-12)
    np.testing.assert_allclose(tape.jacobian(_X1, "rev"), g, atol=1e-12)
    # finite differences of the replayed value
    fd = fd_grad(tape, _X1, relative=False)
    np.testing.assert_allclose(fd, g, atol=1e-6)


@pytest.mark.parametrize("xb", [
    np.array([0.5, 0.3, 0.8, 0.05]),     # scalar `if x[i] > 0`
    np.array([0.5, -0.3, 0.4, 0.05]),    # np.max picks another element
    np.array([0.5, -0.3, 0.8, 0.2]),     # array comparison x > 0.1
], ids=["scalar_if", "np_max", "array_cmp"])
def test_guard_mixed_replay_branch_change_detected_everywhere(xb):
    tape = fad.record(_mixed, _X0)
    v = np.ones(4)
    calls = [lambda: tape(xb), lambda: tape.gradient(xb), lambda: tape.value_and_gradient(xb),
             lambda: tape.jvp(xb, v), lambda: tape.vjp(xb, 1.0),
             lambda: tape.jacobian(xb, "fwd"), lambda: tape.jacobian(xb, "rev"),
             lambda: tape.hvp(xb, v), lambda: tape.hessian(xb), lambda: tape.at(xb),
             lambda: tape.value_gradient_hvp(xb, v)]
    for call in calls:
        with pytest.raises(fad.BranchChangedError):
            call()
    np.testing.assert_allclose(tape.gradient(_X1), fad.grad(_mixed)(_X1), atol=1e-13)


# ------------------------------------------------------------------ guards: failures, memory, threads


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


def test_guard_failed_recordings_then_exact_gradient():
    W = np.ones((5, 2000))

    def bad(z):
        a = np.tanh(z @ W)
        s = fad.sum(a * a)
        for i in range(50):
            s = s + z[i % 5] * 1e300 * 1e300
        raise KeyError("mid-recording")

    x = np.linspace(-1, 1, 5) * 0.01
    for _ in range(20):
        with pytest.raises(KeyError):
            fad.grad(bad)(x)
    ref = (1 - np.tanh(x @ W) ** 2) @ W.T
    ref[0] += x[1]
    ref[1] += x[0]
    g = fad.grad(lambda z: fad.sum(np.tanh(z @ W)) + z[0] * z[1])(x)
    np.testing.assert_array_equal(g, ref)
    t = fad.record(lambda z: fad.sum(np.tanh(z)) if z[0] > 0 else z[1], np.ones(3000))
    for _ in range(50):
        with pytest.raises(fad.BranchChangedError):
            t.gradient(-np.ones(3000))
        with pytest.raises(fad.BranchChangedError):
            t.at(-np.ones(3000))
    np.testing.assert_array_equal(t.gradient(np.ones(3000)), np.full(3000, 1 - np.tanh(1.0) ** 2))


def test_guard_threads_record_and_replay_mixed():
    rng = np.random.default_rng(0)
    pts = [_X0 + 0.005 * rng.standard_normal(4) for _ in range(6)]
    ref = [(fad.grad(_mixed)(p), fad.hessian(_mixed)(p)) for p in pts]
    tape = fad.record(_mixed, _X0)
    errors = []

    def work(tid):
        try:
            for it in range(6):
                j = (tid + it) % len(pts)
                p = pts[j]
                if not np.allclose(fad.grad(_mixed)(p), ref[j][0], atol=1e-12):
                    errors.append(("grad", tid))
                if not np.allclose(tape.gradient(p), ref[j][0], atol=1e-12):
                    errors.append(("tape.gradient", tid))
                pt = tape.at(p)
                e = np.eye(4)[j % 4]
                if not np.allclose(pt.hvp(e), ref[j][1][j % 4], atol=1e-10):
                    errors.append(("at.hvp", tid))
                with pytest.raises(fad.BranchChangedError):
                    tape.gradient(-p)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(("exception", tid, repr(e)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
