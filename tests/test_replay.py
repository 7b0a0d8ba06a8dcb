"""Record once, differentiate many: fad.record and the replayable fad.Tape.

Replayed values and derivatives at new points are checked against
hand-written formulas (Rosenbrock and its residuals, the notes' logistic
regression); branch changes (of every kind, in a program that mixes
them), wrong shapes, pickling, printing, drawing, threads, scalar inputs
and constant outputs are covered too.
"""
import math
import pickle
import re
import threading

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_grad, random_points, rosen_grad_np, rosen_np, run_in_threads


# ---------------------------------------------------------------------------
# extended (chained) Rosenbrock, written as a scalar loop
# ---------------------------------------------------------------------------

def rosen(x):
    s = 0.0
    for i in range(len(x) - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s = s + 100.0 * a * a + b * b
    return s


def residuals(x):
    """Rosenbrock residuals r (length 2(n-1)): rosen(x) = sum r^2."""
    out = []
    for i in range(len(x) - 1):
        out.append(10.0 * (x[i + 1] - x[i] ** 2))
        out.append(1.0 - x[i])
    return out


def residuals_np(x):
    r = np.empty(2 * (len(x) - 1))
    r[0::2] = 10.0 * (x[1:] - x[:-1] ** 2)
    r[1::2] = 1.0 - x[:-1]
    return r


def residuals_jac(x):
    n = len(x)
    J = np.zeros((2 * (n - 1), n))
    for i in range(n - 1):
        J[2 * i, i] = -20.0 * x[i]
        J[2 * i, i + 1] = 10.0
        J[2 * i + 1, i] = -1.0
    return J


def test_rosenbrock_formulas_agree_with_finite_differences():
    # the hand-written reference gradient itself, against central differences
    x = np.array([0.3, -1.1, 0.8, 1.7, -0.4])
    fd = fd_grad(rosen_np, x, relative=False)
    close(rosen_grad_np(x), fd, rtol=1e-6, atol=1e-5)
    close(rosen_np(x), sum(r * r for r in residuals_np(x)))


def test_replay_value_gradient_rosenbrock_many_points():
    n = 10
    x0 = np.linspace(-1.0, 1.5, n)
    tape = fad.record(rosen, x0)
    assert tape.n_inputs == n and tape.n_outputs == 1
    pts = random_points(n, 40, 1, lo=-2.0, hi=2.0)
    grads = []
    for p in pts:
        close(tape(p), rosen_np(p))
        g = tape.gradient(p)
        assert g.shape == (n,)
        close(g, rosen_grad_np(p))
        v, g2 = tape.value_and_gradient(p)
        close(v, rosen_np(p))
        close(g2, rosen_grad_np(p))
        grads.append(g)
    # returned arrays are not overwritten by later replays
    for p, g in zip(pts, grads):
        close(g, rosen_grad_np(p))
    # and the recorded point still replays correctly
    close(tape(x0), rosen_np(x0))
    close(tape.gradient(x0), rosen_grad_np(x0))


def test_replay_accepts_lists_ints_and_noncontiguous_arrays():
    tape = fad.record(rosen, np.array([0.5, 0.5, 0.5]))
    close(tape.gradient([1, 2, 3]), rosen_grad_np(np.array([1.0, 2.0, 3.0])))
    big = np.arange(6.0) / 4.0
    p = big[::2]                       # strided view
    assert not p.flags["C_CONTIGUOUS"]
    close(tape(p), rosen_np(p.copy()))
    close(tape.gradient(p), rosen_grad_np(p.copy()))


def test_replay_long_rosenbrock():
    """About 32,000 ops: long enough for the sweeps that release the GIL."""
    n = 4000
    tape = fad.record(rosen, np.full(n, 0.5))
    assert len(tape) > 20000
    for p in random_points(n, 4, 2, lo=-2.0, hi=2.0):
        v, g = tape.value_and_gradient(p)
        close(v, rosen_np(p), rtol=1e-11)
        close(g, rosen_grad_np(p), rtol=1e-11)
        d = np.sin(np.arange(n))
        close(tape.jvp(p, d), rosen_grad_np(p) @ d, rtol=1e-10)


def test_replay_scalar_output_jvp_vjp_jacobian():
    n = 6
    tape = fad.record(rosen, np.zeros(n))
    rng = np.random.default_rng(3)
    for p in random_points(n, 5, 4, lo=-2.0, hi=2.0):
        g = rosen_grad_np(p)
        v = rng.standard_normal(n)
        close(tape.jvp(p, v), g @ v)
        V = rng.standard_normal((3, n))
        close(tape.jvp(p, V), V @ g)
        close(tape.vjp(p, 2.5), 2.5 * g)
        close(tape.vjp(p, np.array([1.0, -2.0])), np.stack([g, -2.0 * g]))
        for mode in ("fwd", "rev", "auto"):
            J = tape.jacobian(p, mode=mode)
            assert J.shape == (n,)
            close(J, g)


def test_replay_vector_output_jvp_vjp_jacobian():
    n = 7
    tape = fad.record(residuals, np.ones(n))
    assert tape.n_outputs == 2 * (n - 1)
    rng = np.random.default_rng(5)
    for p in random_points(n, 6, 6, lo=-2.0, hi=2.0):
        J = residuals_jac(p)
        close(tape(p), residuals_np(p))
        v = rng.standard_normal(n)
        u = rng.standard_normal(2 * (n - 1))
        close(tape.jvp(p, v), J @ v)
        close(tape.vjp(p, u), u @ J)
        V = rng.standard_normal((4, n))
        U = rng.standard_normal((3, 2 * (n - 1)))
        close(tape.jvp(p, V), V @ J.T)
        close(tape.vjp(p, U), U @ J)
        for mode in ("fwd", "rev", "auto"):
            close(tape.jacobian(p, mode=mode), J)


def test_tape_point_jvp_matches_replayed_jvp():
    A = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])

    def f(x):
        return np.tanh(A @ x) * x[0]
    x = np.array([0.3, -0.2, 0.8])
    tape = fad.record(f, x)
    x2 = x + 0.05
    V = np.eye(3)
    J = np.stack([tape.jvp(x2, v) for v in V], axis=1)
    p = tape.at(x2)
    np.testing.assert_allclose(p.jvp(V).T, J, rtol=1e-13)
    # the analytic Jacobian: d/dx [tanh(A x) x0]
    t = np.tanh(A @ x2)
    expect = (1 - t ** 2)[:, None] * A * x2[0]
    expect[:, 0] += t
    np.testing.assert_allclose(J, expect, rtol=1e-12)


# ---------------------------------------------------------------------------
# recorded comparisons: a different branch is detected, never silently wrong
# ---------------------------------------------------------------------------

def branchy(x):
    if x[0] > 0:
        return x[0] ** 2 * x[1]
    else:
        return -x[0] * x[1] ** 3


def branchy_pos(p):
    return p[0] ** 2 * p[1], np.array([2 * p[0] * p[1], p[0] ** 2])


def branchy_neg(p):
    return -p[0] * p[1] ** 3, np.array([-p[1] ** 3, -3 * p[0] * p[1] ** 2])


def _replay_calls(tape, p):
    """Every replaying entry point of a scalar-output tape at p."""
    return [lambda: tape(p), lambda: tape.gradient(p),
            lambda: tape.value_and_gradient(p),
            lambda: tape.jvp(p, np.ones(2)), lambda: tape.vjp(p, 1.0),
            lambda: tape.jacobian(p), lambda: tape.jacobian(p, mode="fwd"),
            lambda: tape.jacobian(p, mode="rev")]


def test_if_branch_change_raises_and_tape_stays_usable():
    tape = fad.record(branchy, np.array([1.5, 0.7]))
    # inputs are slots 0, 1; the comparison x[0] > 0 is the first operation
    for bad in ([-0.5, 0.7], [-2.0, 3.0]):
        for call in _replay_calls(tape, np.array(bad)):
            with pytest.raises(fad.BranchChangedError) as info:
                call()
            assert isinstance(info.value, fad.TapeError)
            assert re.search(r"\bslot 2\b", str(info.value)), str(info.value)
        # afterwards, points on the recorded branch still give the right answer
        for good in ([0.3, -1.2], [2.5, 0.4]):
            p = np.array(good)
            val, grad = branchy_pos(p)
            close(tape(p), val)
            close(tape.gradient(p), grad)
            close(tape.value_and_gradient(p)[1], grad)
            close(tape.jvp(p, np.array([1.0, -1.0])), grad @ np.array([1.0, -1.0]))
            close(tape.jacobian(p), grad)


def test_else_branch_recorded_then_if_side_raises():
    tape = fad.record(branchy, np.array([-1.0, 0.5]))
    p = np.array([-0.3, 1.7])
    val, grad = branchy_neg(p)
    close(tape(p), val)
    close(tape.gradient(p), grad)
    with pytest.raises(fad.BranchChangedError, match=r"slot 2\b"):
        tape.gradient(np.array([0.1, 1.7]))
    close(tape.gradient(p), grad)


def where_fn(x):
    return fad.where(x[0] > 0, fad.sqrt(x[0]) * x[1], x[1] ** 2 + x[0])


@pytest.mark.parametrize("start, same, other", [
    ([0.8, 1.5], [2.0, -0.5], [-0.8, 1.5]),
    ([-0.8, 1.5], [-3.0, 0.25], [0.8, 1.5]),
])
def test_where_branch_change_raises(start, same, other):
    def expected(p):
        if p[0] > 0:
            return math.sqrt(p[0]) * p[1], np.array([0.5 * p[1] / math.sqrt(p[0]),
                                                      math.sqrt(p[0])])
        return p[1] ** 2 + p[0], np.array([1.0, 2 * p[1]])

    tape = fad.record(where_fn, np.array(start))
    with pytest.raises(fad.BranchChangedError) as info:
        tape.value_and_gradient(np.array(other))
    assert re.search(r"\bslot 2\b", str(info.value)), str(info.value)
    with pytest.raises(fad.BranchChangedError):
        tape(np.array(other))
    p = np.array(same)
    v, g = tape.value_and_gradient(p)
    ev, eg = expected(p)
    close(v, ev)
    close(g, eg)
    assert np.all(np.isfinite(g))


def test_loop_count_change_raises_naming_the_comparison_slot():
    """while x[0] > k: y = y * x[1] -- the number of iterations is data dependent.

    Recorded at x[0] = 2.5: slots v2 = (x0 > 0) True, v3 = y*x1, v4 = (x0 > 1)
    True, v5, v6 = (x0 > 2) True, v7, v8 = (x0 > 3) False; output x1^4."""
    def f(x):
        y = x[1]
        k = 0
        while x[0] > k:
            y = y * x[1]
            k += 1
        return y

    tape = fad.record(f, np.array([2.5, 1.3]))
    assert len(tape) == 7
    p = np.array([2.9, -0.6])
    close(tape(p), p[1] ** 4)
    close(tape.gradient(p), np.array([0.0, 4 * p[1] ** 3]))
    with pytest.raises(fad.BranchChangedError, match=r"slot 8\b"):
        tape(np.array([3.5, 1.3]))     # one more iteration
    with pytest.raises(fad.BranchChangedError, match=r"slot 6\b"):
        tape(np.array([1.5, 1.3]))     # one fewer
    close(tape.gradient(p), np.array([0.0, 4 * p[1] ** 3]))


def test_branch_change_detected_on_a_long_tape():
    """The comparison is the last of ~24k slots (the replay runs without the GIL)."""
    n = 3000

    def f(x):
        s = rosen(x)
        return s if x[n - 1] > 0 else -s

    tape = fad.record(f, np.full(n, 0.5))
    assert len(tape) > 20000
    last = tape.n_inputs + len(tape) - 1          # the comparison was recorded last
    p = np.random.default_rng(9).uniform(-2, 2, n)
    p[-1] = -0.25
    with pytest.raises(fad.BranchChangedError, match=rf"slot {last}\b"):
        tape.value_and_gradient(p)
    p[-1] = 0.25
    v, g = tape.value_and_gradient(p)
    close(v, rosen_np(p), rtol=1e-11)
    close(g, rosen_grad_np(p), rtol=1e-11)


def test_var_var_comparison_branch_change():
    def f(x):
        return x[0] * x[2] if x[0] > x[1] else x[1] * x[2]

    tape = fad.record(f, np.array([2.0, 1.0, 3.0]))
    close(tape.gradient(np.array([5.0, -1.0, 0.5])), np.array([0.5, 0.0, 5.0]))
    with pytest.raises(fad.BranchChangedError, match=r"slot 3\b"):
        tape.gradient(np.array([1.0, 2.0, 3.0]))
    close(tape.gradient(np.array([5.0, -1.0, 0.5])), np.array([0.5, 0.0, 5.0]))


def test_replayed_array_comparison_branch_change_then_tape_still_works():
    def f(a):
        if (a > 0).all():
            return fad.sum(np.sqrt(a))
        return fad.sum(a * a)

    tape = fad.record(f, np.ones(3))
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(np.array([1.0, -1.0, 1.0]))
    with pytest.raises(fad.BranchChangedError):
        tape.at(np.array([1.0, -1.0, 1.0]))
    np.testing.assert_allclose(tape.gradient(np.full(3, 4.0)), np.full(3, 0.25))


# ---------------------------------------------------------------------------
# a program mixing scalar branches, array comparisons, np.max, a primitive
# and blocks: every entry point agrees, and detects every kind of branch
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# wrong input shapes
# ---------------------------------------------------------------------------

def test_wrong_shape_raises_value_error():
    tape = fad.record(rosen, np.array([0.1, 0.2, 0.3]))
    for bad in (np.zeros(4), np.zeros(2), np.zeros((3, 1)), np.zeros((1, 3)), 1.0,
                np.zeros(0)):
        with pytest.raises(ValueError):
            tape(bad)
        with pytest.raises(ValueError):
            tape.gradient(bad)
        with pytest.raises(ValueError):
            tape.value_and_gradient(bad)
        with pytest.raises(ValueError):
            tape.jvp(bad, np.ones(3))
        with pytest.raises(ValueError):
            tape.vjp(bad, 1.0)
        with pytest.raises(ValueError):
            tape.jacobian(bad)
    p = np.array([0.4, -0.2, 1.1])
    close(tape.gradient(p), rosen_grad_np(p))


def test_wrong_shape_for_scalar_and_matrix_tapes():
    tape = fad.record(lambda x: x * x, 1.5)
    with pytest.raises(ValueError):
        tape(np.ones(2))
    close(tape(3.0), 9.0)
    tape2 = fad.record(lambda X: X[0, 1] * X[1, 0], np.ones((2, 2)))
    with pytest.raises(ValueError):
        tape2(np.ones(4))
    with pytest.raises(ValueError):
        tape2(np.ones((2, 2)).T[:, :1])
    close(tape2.gradient(np.array([[1.0, 2.0], [3.0, 4.0]])),
          np.array([[0.0, 3.0], [2.0, 0.0]]))


# ---------------------------------------------------------------------------
# pickling
# ---------------------------------------------------------------------------

def test_pickle_round_trip_scalar_tape():
    n = 8
    tape = fad.record(rosen, np.linspace(-1, 1, n))
    tape2 = pickle.loads(pickle.dumps(tape))
    assert isinstance(tape2, fad.Tape)
    assert len(tape2) == len(tape)
    assert tape2.n_inputs == tape.n_inputs == n
    assert tape2.n_outputs == tape.n_outputs == 1
    assert str(tape2) == str(tape)
    for p in random_points(n, 10, 7, lo=-2.0, hi=2.0):
        g1 = tape.gradient(p)
        g2 = tape2.gradient(p)
        np.testing.assert_array_equal(g2, g1)
        close(g2, rosen_grad_np(p))
        assert tape2(p) == tape(p)
    # protocol 0 too, and a pickled copy of a copy
    tape3 = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(tape, protocol=0))))
    p = np.arange(n) / 7.0
    np.testing.assert_array_equal(tape3.gradient(p), tape.gradient(p))


def test_pickle_round_trip_vector_and_branch_tapes():
    n = 5
    tape = fad.record(residuals, np.ones(n))
    tape2 = pickle.loads(pickle.dumps(tape))
    assert (len(tape2), tape2.n_inputs, tape2.n_outputs) == (len(tape), n, 2 * (n - 1))
    for p in random_points(n, 4, 8, lo=-2.0, hi=2.0):
        np.testing.assert_array_equal(tape2.jacobian(p), tape.jacobian(p))
        close(tape2.jacobian(p, mode="fwd"), residuals_jac(p))
        close(tape2(p), residuals_np(p))
    bt = pickle.loads(pickle.dumps(fad.record(branchy, np.array([1.5, 0.7]))))
    with pytest.raises(fad.BranchChangedError):
        bt.gradient(np.array([-1.0, 0.7]))
    close(bt.gradient(np.array([0.5, 2.0])), branchy_pos(np.array([0.5, 2.0]))[1])


def test_pickle_round_trip_scalar_input_and_matrix_input():
    t1 = pickle.loads(pickle.dumps(fad.record(lambda x: fad.sin(x) * x, 0.4)))
    x = 1.1
    close(t1.gradient(x), math.cos(x) * x + math.sin(x))
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    t2 = pickle.loads(pickle.dumps(fad.record(lambda X: X[0, 1] * X[1, 0], X)))
    close(t2.gradient(X), np.array([[0.0, 3.0], [2.0, 0.0]]))


# ---------------------------------------------------------------------------
# seeing the tape: str() and to_dot(), on the notes' logistic regression
# ---------------------------------------------------------------------------

X_DATA, T_DATA, LAM = 1.5, 1.0, 0.1


def lreg(p):
    w, b = p[0], p[1]
    z = w * X_DATA + b
    y = fad.sigmoid(z)
    L = 0.5 * (y - T_DATA) ** 2
    R = 0.5 * w ** 2
    return L + LAM * R


def lreg_notes(w, b):
    """Values and the notes' reverse sweep, on floats."""
    z = w * X_DATA + b
    y = 1.0 / (1.0 + math.exp(-z))
    L = 0.5 * (y - T_DATA) ** 2
    R = 0.5 * w ** 2
    Lreg = L + LAM * R
    y_bar = y - T_DATA
    z_bar = y_bar * y * (1.0 - y)
    return dict(z=z, y=y, L=L, R=R, Lreg=Lreg,
                grad=np.array([z_bar * X_DATA + LAM * w, z_bar]))


def test_logistic_regression_replay_matches_notes_adjoints():
    tape = fad.record(lreg, np.array([0.5, -0.3]))
    for w, b in [(0.5, -0.3), (-1.3, 0.8), (2.0, 2.0), (0.0, -4.0)]:
        ref = lreg_notes(w, b)
        v, g = tape.value_and_gradient(np.array([w, b]))
        close(v, ref["Lreg"])
        close(g, ref["grad"])


def _slot_lines(text):
    return [ln for ln in text.splitlines() if re.match(r"^\s*v\d+\s*=", ln)]


def test_str_lists_one_line_per_slot_and_marks_inputs_outputs():
    w, b = 0.5, -0.3
    tape = fad.record(lreg, np.array([w, b]))
    # the notes' Wengert list: w*x, +b, sigmoid, -t, ^2, *1/2, w^2, *1/2, *lam, +
    assert len(tape) == 10
    assert tape.n_inputs == 2 and tape.n_outputs == 1
    text = str(tape)
    lines = _slot_lines(text)
    assert len(lines) == tape.n_inputs + len(tape)
    assert [int(re.match(r"^\s*v(\d+)", ln).group(1)) for ln in lines] == list(range(12))
    inputs = [ln for ln in lines if "<- input" in ln]
    outputs = [ln for ln in lines if "-> output" in ln]
    assert len(inputs) == 2 and lines[0] in inputs and lines[1] in inputs
    assert len(outputs) == 1 and outputs[0] == lines[-1]
    ref = lreg_notes(w, b)

    def recorded_value(line):
        return float(re.search(r"#\s*([-+0-9.eEinfa]+)", line).group(1))

    close(recorded_value(lines[0]), w)
    close(recorded_value(lines[1]), b)
    close(recorded_value(lines[-1]), ref["Lreg"])
    sig = [ln for ln in lines if "sigmoid" in ln]
    assert len(sig) == 1
    close(recorded_value(sig[0]), ref["y"])
    # every recorded intermediate of the notes appears among the slot values
    values = [recorded_value(ln) for ln in lines]
    for key in ("z", "y", "L", "R", "Lreg"):
        assert any(abs(v - ref[key]) <= 1e-12 * max(1.0, abs(ref[key])) for v in values), key


def test_str_marks_every_output_of_a_vector_tape():
    tape = fad.record(lambda x: [x[0] * x[1], fad.exp(x[0]), x[1]], np.array([1.0, 2.0]))
    lines = _slot_lines(str(tape))
    assert len(lines) == tape.n_inputs + len(tape) == 4
    assert sum("<- input" in ln for ln in lines) == 2
    # x[1] is both an input and an output
    assert sum("-> output" in ln for ln in lines) == 3
    assert "-> output" in lines[1] and "<- input" in lines[1]


def _dot_edges(dot):
    return [(int(a), int(b)) for a, b in re.findall(r"\bv(\d+)\s*->\s*v(\d+)", dot)]


def test_to_dot_has_one_edge_per_argument():
    # x0*x1 (2 args), sin(x0) (1 arg), add (2 args): 5 edges
    def f(x):
        return x[0] * x[1] + fad.sin(x[0])

    x = np.array([0.5, 2.0])
    tape = fad.record(f, x)
    dot = tape.to_dot()
    assert dot.lstrip().startswith("digraph")
    assert dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    edges = _dot_edges(dot)
    assert sorted(edges) == sorted([(0, 2), (1, 2), (0, 3), (2, 4), (3, 4)])
    # edges carry the local partials at the recorded point
    partial = {(0, 2): x[1], (1, 2): x[0], (0, 3): math.cos(x[0]), (2, 4): 1.0, (3, 4): 1.0}
    for a, b_, lab in re.findall(r"\bv(\d+)\s*->\s*v(\d+)\s*\[label=\"([^\"]+)\"", dot):
        close(float(lab), partial[(int(a), int(b_))], rtol=1e-3)
    # every node is declared
    for i in range(tape.n_inputs + len(tape)):
        assert re.search(rf"^\s*v{i}\s*\[", dot, re.M), i


def test_to_dot_logistic_regression_edges():
    tape = fad.record(lreg, np.array([0.5, -0.3]))
    dot = tape.to_dot()
    assert dot.lstrip().startswith("digraph")
    edges = _dot_edges(dot)
    # the notes' graph: binary ops w*x+b and L+lam R have two arguments, the
    # other eight operations one each: 12 edges, no duplicates
    assert len(edges) == 12 == len(set(edges))
    for i in range(2, 12):
        name, a0, a1, *_ = tape.node(i)
        assert (a0, i) in edges
        if a1 >= 0:
            assert (a1, i) in edges
    assert all(b >= 2 and a < b for a, b in edges)
    # the output feeds nothing, the inputs are fed by nothing
    assert not any(a == 11 for a, _ in edges)
    assert not any(b in (0, 1) for _, b in edges)


# ---------------------------------------------------------------------------
# replay from several threads at once
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 3000])   # 3000: ~24k ops, sweeps release the GIL
def test_threads_replay_same_tape(n):
    tape = fad.record(rosen, np.full(n, 0.3))

    def work(tid):
        rng = np.random.default_rng(1000 + tid)
        d = np.cos(np.arange(n) + tid)
        for _ in range(50):
            p = rng.uniform(-2, 2, n)
            g_ref = rosen_grad_np(p)
            v, g = tape.value_and_gradient(p)
            close(v, rosen_np(p), rtol=1e-11)
            close(g, g_ref, rtol=1e-11)
            close(tape(p), rosen_np(p), rtol=1e-11)
            close(tape.jvp(p, d), g_ref @ d, rtol=1e-10, atol=1e-9)
        return 50

    assert run_in_threads(work) == [50, 50, 50, 50]


def test_threads_replay_same_vector_tape():
    n = 40
    tape = fad.record(residuals, np.ones(n))

    def work(tid):
        rng = np.random.default_rng(2000 + tid)
        for _ in range(50):
            p = rng.uniform(-2, 2, n)
            J = residuals_jac(p)
            close(tape.jacobian(p, mode="rev"), J)
            close(tape.jacobian(p, mode="fwd"), J)
            U = rng.standard_normal((3, 2 * (n - 1)))
            close(tape.vjp(p, U), U @ J)
        return 50

    assert run_in_threads(work) == [50, 50, 50, 50]


def test_threads_branch_errors_do_not_disturb_other_threads():
    tape = fad.record(branchy, np.array([1.0, 1.0]))

    def work(tid):
        rng = np.random.default_rng(3000 + tid)
        raised = 0
        for _ in range(50):
            p = rng.uniform(-2, 2, 2)
            if p[0] > 0:
                val, grad = branchy_pos(p)
                v, g = tape.value_and_gradient(p)
                close(v, val)
                close(g, grad)
            else:
                with pytest.raises(fad.BranchChangedError):
                    tape.value_and_gradient(p)
                raised += 1
        return raised

    raised = run_in_threads(work)
    assert sum(raised) > 0


def test_threads_replay_one_pickled_tape_with_blocks_and_primitives():
    W = np.random.default_rng(0).standard_normal((5, 5))

    def f(x):
        h = np.tanh(W @ x)
        s = fad.sum(h * h) + fad.norm(x) + fad.logsumexp(h)
        for i in range(4):
            s = s + fad.sin(x[i] * x[i + 1])
        return s

    x0 = np.linspace(-1, 1, 5)
    tape = pickle.loads(pickle.dumps(fad.record(f, x0)))
    pts = [x0 + 0.01 * k for k in range(10)]
    ref = [(fad.grad(f)(p), fad.hessian(f)(p)) for p in pts]
    errors = []

    def work():
        for _ in range(3):
            for p, (g, H) in zip(pts, ref):
                ok = (np.allclose(tape.gradient(p), g, rtol=1e-12)
                      and np.allclose(tape.hessian(p), H, rtol=1e-10, atol=1e-12)
                      and np.allclose(tape.at(p).hvp(np.ones(5)), H.sum(1), rtol=1e-10, atol=1e-12))
                if not ok:
                    errors.append(p)
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


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


# ---------------------------------------------------------------------------
# a scalar float input
# ---------------------------------------------------------------------------

def test_scalar_float_input_record_gradient_jvp_vjp():
    def f(x):
        return fad.sin(x) * x ** 2

    def df(x):
        return math.cos(x) * x ** 2 + 2 * x * math.sin(x)

    tape = fad.record(f, 0.7)
    assert tape.n_inputs == 1 and tape.n_outputs == 1
    for x in (0.7, 1.3, -2.2, 0.0):
        v = tape(x)
        close(v, math.sin(x) * x ** 2)
        g = tape.gradient(x)
        assert np.ndim(g) == 0
        close(g, df(x))
        v2, g2 = tape.value_and_gradient(x)
        close(v2, math.sin(x) * x ** 2)
        close(g2, df(x))
        close(tape.jvp(x, 2.0), 2.0 * df(x))
        close(tape.vjp(x, -1.5), -1.5 * df(x))
        jv = tape.jvp(x, np.array([1.0, 2.0, 3.0]))      # 3 directions
        assert np.shape(jv) == (3,)
        close(jv, np.array([1.0, 2.0, 3.0]) * df(x))
        close(tape.vjp(x, np.array([1.0, -1.0])), np.array([1.0, -1.0]) * df(x))
        close(tape.jacobian(x), df(x))
    # module-level transforms with a float
    y, t = fad.jvp(f, 1.3, 1.0)
    close(y, math.sin(1.3) * 1.69)
    close(t, df(1.3))
    y, pb = fad.vjp(f, 1.3)
    close(pb(1.0), df(1.3))
    close(pb(3.0), 3.0 * df(1.3))


def test_scalar_float_input_vector_output():
    def f(x):
        return [fad.exp(x), x * x * x, 4.0]

    def jac(x):
        return np.array([math.exp(x), 3 * x * x, 0.0])

    tape = fad.record(f, 0.2)
    for x in (0.2, -1.0, 2.5):
        close(tape(x), np.array([math.exp(x), x ** 3, 4.0]))
        for mode in ("fwd", "rev", "auto"):
            J = tape.jacobian(x, mode=mode)
            assert J.shape == (3,)
            close(J, jac(x))
        close(tape.jvp(x, 0.5), 0.5 * jac(x))
        ybar = np.array([1.0, -2.0, 7.0])
        g = tape.vjp(x, ybar)
        assert np.ndim(g) == 0
        close(g, ybar @ jac(x))


# ---------------------------------------------------------------------------
# constant outputs
# ---------------------------------------------------------------------------

def test_constant_output_gives_zero_jacobian_row():
    def f(x):
        return [x[0], 2.0]

    expected = np.array([[1.0, 0.0], [0.0, 0.0]])
    x = np.array([0.4, -1.1])
    for mode in ("fwd", "rev", "auto"):
        close(fad.jacobian(f, mode=mode)(x), expected)
    tape = fad.record(f, x)
    p = np.array([3.0, 5.0])
    close(tape(p), np.array([3.0, 2.0]))
    for mode in ("fwd", "rev", "auto"):
        close(tape.jacobian(p, mode=mode), expected)
    close(tape.vjp(p, np.array([2.0, 9.0])), np.array([2.0, 0.0]))
    close(tape.jvp(p, np.array([1.0, 1.0])), np.array([1.0, 0.0]))


def test_constant_in_the_middle_of_stack():
    def f(x):
        return fad.stack([x[0] * x[1], 3.0, x[1]])

    x = np.array([2.0, -0.5])
    expected = np.array([[x[1], x[0]], [0.0, 0.0], [0.0, 1.0]])
    for mode in ("fwd", "rev", "auto"):
        close(fad.jacobian(f, mode=mode)(x), expected)
    tape = fad.record(f, x)
    p = np.array([1.5, 4.0])
    close(tape(p), np.array([6.0, 3.0, 4.0]))
    close(tape.jacobian(p), np.array([[4.0, 1.5], [0.0, 0.0], [0.0, 1.0]]))
    y, pb = fad.vjp(f, x)
    close(y, np.array([-1.0, 3.0, -0.5]))
    close(pb(np.eye(3)), expected)


def test_constant_scalar_output_has_zero_gradient():
    tape = fad.record(lambda x: 5.0, np.array([1.0, 2.0]))
    p = np.array([-3.0, 7.0])
    v, g = tape.value_and_gradient(p)
    close(v, 5.0)
    close(g, np.zeros(2))
    close(tape.jacobian(p), np.zeros(2))


def test_to_dot_draws_an_edge_from_every_element_a_block_reads():
    """An array block is one node with an edge from each node it reads:
    every input element, blocks drawn at their first slot, once each."""
    tape = fad.record(lambda X: np.sum(X * X) + np.sum(np.tanh(X[:, 0])), np.ones((2, 2)))
    edges = _dot_edges(tape.to_dot())
    assert len(edges) == len(set(edges))
    # X * X of one Array is recorded as a square
    sq, tanh = (b.start for b in tape.blocks if getattr(b, "name", "") in ("square", "tanh"))
    assert [a for a, b in edges if b == sq] == [0, 1, 2, 3]
    assert [a for a, b in edges if b == tanh] == [0, 2]       # the column X[:, 0]
    assert repr(tape) == "<fastad.Tape: 4 inputs, 9 operations, 1 output>"


def test_array_tapes_pickle_with_every_protocol():
    """Block tapes keep no recording-only links in their pickles (protocol 0
    cannot pickle them): every protocol gives a tape with the same gradient."""
    x = np.linspace(0.1, 1.0, 5)
    tape = fad.record(lambda z: np.sum(np.tanh(z) * z) + np.sum(z[1:] * z[:-1]), x)
    want = tape.gradient(x + 0.1)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(tape, protocol=protocol))
        np.testing.assert_array_equal(copy.gradient(x + 0.1), want)
