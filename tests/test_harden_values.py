"""Issue #18, item 3: a recording that reads a concrete value (.value) is
marked; replaying it at another x raises fad.ValueReadError naming where the
value was read, never a silently wrong answer; minimize re-records."""
import io
import pickle

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_grad

THIS_FILE = "test_harden_values.py"


def val(v):
    """v.value on the tape, v itself on plain numbers (for finite differences)."""
    return v.value if isinstance(v, (fad.Var, fad.Array)) else v


def issue_f(x):
    return x[0] * x[1] if x[0].value > 0 else x[1]          # the issue's example


def branchy(x):
    return x[0] * x[1] if val(x[0]) > 0 else x[1]


def by_argmax(x):
    i = int(np.argmax(val(x)))
    return x[i] ** 2 + np.sum(x)


def by_index(x):
    i = int(abs(val(x[0])) * 2) % 3
    return x[i] * x[2]


def by_array_value(x):
    v = val(x * x)
    return np.sum(x ** 3) if v.sum() < 10.0 else np.sum(x)


def by_float(x):
    return x[0] * float(val(x[1]))


MARKED = [
    (branchy, np.array([0.5, 2.0]), np.array([-0.5, 2.0])),
    (by_argmax, np.array([0.5, 2.0, 1.0]), np.array([3.0, 2.0, 1.0])),
    (by_index, np.array([0.2, 2.0, 1.0]), np.array([1.2, 2.0, 1.0])),
    (by_array_value, np.array([0.5, 1.0, 1.0]), np.array([3.0, 2.0, 1.0])),
]


@pytest.mark.parametrize("f,x0,x1", MARKED, ids=[m[0].__name__ for m in MARKED])
def test_replay_after_a_value_read_raises(f, x0, x1):
    t = fad.record(f, x0)
    assert t.value_read is not None and THIS_FILE in t.value_read
    # at the recorded x the tape is right
    np.testing.assert_allclose(t.gradient(x0), fd_grad(f, x0), rtol=1e-6, atol=1e-7)
    for call in (lambda: t.gradient(x1), lambda: t(x1), lambda: t.jacobian(x1),
                 lambda: t.hvp(x1, np.ones_like(x1)), lambda: t.at(x1),
                 lambda: t.jvp(x1, np.ones_like(x1)), lambda: t.vjp(x1, 1.0),
                 lambda: t.sparse_jacobian(x1), lambda: t.value_and_gradient(x1)):
        with pytest.raises(fad.ValueReadError, match=rf"\.value read at .*{THIS_FILE}:\d+"):
            call()
    with pytest.raises(fad.BranchChangedError):      # (so code that re-records on it works)
        t.gradient(x1)
    # the fresh answer at x1, by recording again, agrees with finite differences
    np.testing.assert_allclose(fad.record(f, x1).gradient(x1), fd_grad(f, x1),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fad.grad(f)(x1), fd_grad(f, x1), rtol=1e-6, atol=1e-7)


def test_a_value_used_as_a_constant_marks_too():
    t = fad.record(by_float, np.array([0.5, 2.0]))
    close(t.gradient(np.array([0.5, 2.0])), [2.0, 0.0])      # x[1] taken as a constant there
    with pytest.raises(fad.ValueReadError, match="in val"):
        t.gradient(np.array([0.5, 3.0]))


def test_issue_example_gives_the_truth_or_raises():
    t = fad.record(issue_f, np.array([0.5, 2.0]))
    with pytest.raises(fad.TapeError, match=r"Record a new tape"):
        t.gradient(np.array([-0.5, 2.0]))
    assert t.value_read.endswith("in issue_f")
    close(fad.grad(issue_f)(np.array([-0.5, 2.0])), [0.0, 1.0])


@pytest.mark.parametrize("how", ["pickle", "save"])
def test_the_mark_survives_pickle_and_save(how):
    t = fad.record(branchy, np.array([0.5, 2.0]))
    if how == "pickle":
        t2 = pickle.loads(pickle.dumps(t))
    else:
        buf = io.BytesIO()
        t.save(buf)
        t2 = fad.load_tape(io.BytesIO(buf.getvalue()))
    assert t2.value_read == t.value_read
    close(t2.gradient(np.array([0.5, 2.0])), [2.0, 0.5])
    with pytest.raises(fad.ValueReadError):
        t2.gradient(np.array([-0.5, 2.0]))


@fad.primitive
def cube(x):
    return x ** 3


cube.defvjp(lambda ybar, y, x: ybar * 3.0 * x ** 2)
cube.defjvp(lambda xdot, y, x: 3.0 * x ** 2 * xdot)


def no_reads(x):
    s = fad.logsumexp(x) + cube(x[0]) + np.sum(cube(x)) + np.max(x)
    for i in range(len(x) - 1):
        s = s + fad.sin(x[i]) * x[i + 1] + (x[i] > 0)
    return s


def test_fastad_own_reads_do_not_mark():
    x0 = np.array([0.5, -1.0, 2.0])
    t = fad.record(no_reads, x0)
    assert t.value_read is None
    x1 = np.array([0.4, -0.9, 2.5])
    np.testing.assert_allclose(t.gradient(x1), fd_grad(no_reads, x1), rtol=1e-6, atol=1e-7)
    g, aux = fad.grad(lambda x: (no_reads(x), x[0] * 2.0), has_aux=True)(x0)
    close(aux, 1.0)
    repr(fad.record(lambda x: (repr(x), f"{x[0]:.3f}", np.sum(x))[2], x0))  # printing is fine
    t = fad.record(lambda x: (repr(x), f"{x[0]:.3f}", np.sum(x))[2], x0)
    assert t.value_read is None
    close(t.gradient(x1), [1.0, 1.0, 1.0])


def test_a_value_read_after_the_recording_marks_nothing():
    kept = []
    t = fad.record(lambda x: kept.append(x[0] * 2.0) or x[0] * x[1], np.array([1.0, 3.0]))
    assert kept[0].value == 2.0
    assert t.value_read is None
    close(t.gradient(np.array([2.0, 5.0])), [5.0, 2.0])


def test_inner_recording_reads_mark_only_the_inner_tape():
    def inner(z):
        return z * z if z.value > 0 else -z

    def outer(x):
        fad.record(inner, 1.5)          # a recording inside f: its reads are its own
        return x[0] * x[1]

    t = fad.record(outer, np.array([1.0, 2.0]))
    assert t.value_read is None


def test_float_message_says_value_replays_only_at_its_x():
    with pytest.raises(TypeError, match=r"v\.value for the number .*replays only at its own x"):
        fad.grad(lambda x: float(x) * 2.0)(1.0)
    close(fad.grad(lambda x: x * 2.0)(1.0), 2.0)      # and fastad keeps working


def test_minimize_re_records_through_value_reads():
    def f(x):
        # a piecewise objective chosen with .value: minimum at (1, -2) on the x0 > 0 piece
        if x[0].value > 0:
            return (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2
        return (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2 + 0.5 * x[0] ** 2
    res = fad.minimize(f, np.array([-3.0, 4.0]))
    assert res.success
    np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-6)
