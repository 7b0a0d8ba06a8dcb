"""The tape itself: what a recording owns, how array code is laid out on
it, the pooled buffers its sweeps reuse, and Vars and Arrays that leave it.

A docstring that starts with BUG describes the bug its test was written
against (fixed since: the test asserts the correct behaviour).
"""
import warnings

import numpy as np
import pytest

import fastad as fad
from conftest import fd_grad


# ---------------------------------------------------------------------------
# a recording owns what it records: constants and the values blocks read back
# ---------------------------------------------------------------------------

def test_grad_reads_constant_operand_of_mul_at_record_time_not_sweep_time():
    """BUG: fad.grad does not own the constants it records (fad.record copies
    them, transforms._record does not), and Elementwise mul/Matmul read their
    partials back from the operand at sweep time.  A NumPy buffer reused inside
    f (a very common loop pattern) gives a silently wrong gradient:
    expected [3, 6], got [6, 9] (3x the last buffer)."""
    def f(x):
        buf = np.empty(2)
        s = 0.0
        for i in range(3):
            buf[:] = [i, i + 1]
            s = s + fad.sum(x * buf)
        return s

    np.testing.assert_allclose(fad.grad(f)(np.ones(2)), [3.0, 6.0])


def test_grad_reads_constant_matrix_of_matmul_at_record_time():
    """BUG: same as above for W @ x: W is overwritten after use inside f and
    the pullback W.T @ ybar reads the new W (expected [4, 6], got [0, 0])."""
    def f(x):
        W = np.array([[1.0, 2.0], [3.0, 4.0]])
        y = W @ x
        W[:] = 0.0
        return fad.sum(y)

    np.testing.assert_allclose(fad.grad(f)(np.ones(2)), [4.0, 6.0])


def test_recorded_constant_is_owned_by_the_tape():
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    tape = fad.record(lambda x: fad.sum(W @ x), np.ones(2))
    W[0, 0] = 100.0                      # the caller reuses its array
    np.testing.assert_allclose(tape.gradient(np.ones(2)), [4.0, 6.0])


def test_block_state_survives_tape_growth():
    # Matmul kept views of its operands in the tape's value buffer, which is
    # reallocated when the tape grows: the pullback then read freed memory.
    keep = fad.record(lambda x: x[0] * 2.0, np.ones(1))   # a live tape: the next one starts small

    def f(a):
        M = fad.reshape(a, (2, 2))
        s = fad.sum(M @ M)
        for i in range(2000):
            s = s + 1e-3 * a[i % 4]
        return s

    a = np.array([0.5, -0.25, 1.0, 2.0])
    g = fad.grad(f)(a)
    fd = fd_grad(lambda b: np.sum((lambda M: M @ M)(b.reshape(2, 2))), a, relative=False) \
        + 1e-3 * 500
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    assert keep(np.ones(1)) == 2.0


# ---------------------------------------------------------------------------
# how array code is laid out on the tape
# ---------------------------------------------------------------------------

def test_an_array_times_itself_is_one_square_block():
    """x * x of one Array records a square (one partial, 2x, read back in one
    pass); a copy of the same slots still records a product.  Both give 2x."""
    x = np.array([[0.5, -1.5, 2.0], [3.0, -0.25, 1.0]])
    tape = fad.record(lambda a: np.sum(a * a), x)
    assert [b.name for b in tape.blocks if hasattr(b, "name")] == ["square"]
    np.testing.assert_array_equal(tape.gradient(x), 2 * x)
    tape = fad.record(lambda a: np.sum(a * a[:, :]), x)
    assert [b.name for b in tape.blocks if hasattr(b, "name")] == ["mul"]
    np.testing.assert_array_equal(tape.gradient(x), 2 * x)
    np.testing.assert_allclose(fad.hessian(lambda a: np.sum(a * a))(x[0]), 2 * np.eye(3))
    # its one-pass sweeps, also for a gathered operand, in both modes
    v = x.reshape(-1)
    for mode in ("fwd", "rev"):
        np.testing.assert_array_equal(fad.jacobian(lambda a: a ** 2, mode=mode)(v), np.diag(2 * v))
        want = np.zeros((3, 6))
        want[np.arange(3), np.arange(0, 6, 2)] = 2 * v[::2]
        np.testing.assert_array_equal(fad.jacobian(lambda a: a[::2] ** 2, mode=mode)(v), want)


def test_gradients_of_array_arguments_used_whole_come_straight_from_the_blocks():
    """An argument every block reads whole takes its gradient from their
    cotangent arrays (no adjoint rows); one also read by a scalar node or a
    view goes through the adjoint buffer.  Both must be right, a repeated
    use must add up, an unused argument must get zeros, and the gradients
    handed back must not share memory."""
    rng = np.random.default_rng(3)
    W, b, c, u = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=2)
    X = rng.normal(size=(5, 4))

    def f(W, b, c, u):
        h = np.tanh(X @ W + b)
        return np.sum(h * h) + np.sum(b * 3.0) + np.sum(c[1:] * 2.0) + c[0] * W[0, 0] * 0.0

    tape = fad.record(lambda W: f(W, b, c, u), W)
    assert tape.sealed_inputs == []                      # W[0, 0] is read by a scalar node
    _, g = fad.value_and_grad(f, argnums=(0, 1, 2, 3))(W, b, c, u)
    h = np.tanh(X @ W + b)
    zbar = 2 * h * (1 - h * h)
    np.testing.assert_allclose(g[0], X.T @ zbar, rtol=1e-13)
    np.testing.assert_allclose(g[1], zbar.sum(0) + 3.0, rtol=1e-13)
    np.testing.assert_array_equal(g[2], [0.0, 2.0, 2.0])
    np.testing.assert_array_equal(g[3], [0.0, 0.0])

    def whole(W, b, u):
        return np.sum(np.tanh(X @ W + b)) + np.sum(b + b) + np.sum(W * 0.5)

    from fastad.transforms import _record
    tape, _ = _record(whole, (W, b, u), {}, (0, 1, 2))
    assert tape.sealed_inputs == [(0, 12), (12, 15), (15, 17)]
    gW, gb, gu = fad.grad(whole, argnums=(0, 1, 2))(W, b, u)
    h = np.tanh(X @ W + b)
    np.testing.assert_allclose(gW, X.T @ (1 - h * h) + 0.5, rtol=1e-13)
    np.testing.assert_allclose(gb, (1 - h * h).sum(0) + 2.0, rtol=1e-13)
    np.testing.assert_array_equal(gu, [0.0, 0.0])        # not used at all
    ga, gb2 = fad.grad(lambda a, b: np.sum(a + b), argnums=(0, 1))(np.ones(3), np.ones(3))
    ga[0] = 7.0
    np.testing.assert_array_equal(gb2, np.ones(3))       # their own memory


def test_contiguous_views_are_read_as_slot_runs_and_others_are_not():
    """x[1:], x[:-1] and row blocks of a run of slots are runs too (blocks read
    them as one slice); reversed, strided, column and fancy views are not."""
    seen = {}

    def f(x):
        X = fad.reshape(x, (4, 6))
        for name, v in {"x[1:]": x[1:], "x[:-1]": x[:-1], "X[1:3]": X[1:3], "X[2]": X[2],
                        "x[::-1]": x[::-1], "x[::2]": x[::2], "X[:, 1:]": X[:, 1:],
                        "x[[0, 0, 2]]": x[[0, 0, 2]], "x[x.value > 0]": x[x.value > 0]}.items():
            seen[name] = v.cstart
        a, b = x[:-1], x[1:]
        return np.sum(100.0 * (b - a ** 2) ** 2 + (1.0 - a) ** 2) + np.sum(X[1:3] * X[2:4])

    x = np.linspace(-1.0, 1.3, 24)
    g = fad.grad(f)(x)
    assert seen == {"x[1:]": 1, "x[:-1]": 0, "X[1:3]": 6, "X[2]": 12, "x[::-1]": -1,
                    "x[::2]": -1, "X[:, 1:]": -1, "x[[0, 0, 2]]": -1, "x[x.value > 0]": -1}
    want = np.zeros_like(x)
    want[:-1] = -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    want[1:] += 200 * (x[1:] - x[:-1] ** 2)
    want[6:18] += x[12:24]
    want[12:24] += x[6:18]
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)


def test_recording_leaves_numpy_error_state_and_warnings_alone():
    """Blocks compute with floating-point errors ignored (inf and NaN are
    values like any other) and restore the caller's error state."""
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = fad.grad(lambda a: np.sum(a * 1e308 + a / 0.0 - np.log(a - 2.0)))(np.ones(3))
    assert np.geterr() == before
    np.testing.assert_array_equal(g, np.inf)       # 1e308 + 1/0 + 1
    with np.errstate(over="raise"):
        fad.grad(lambda a: np.sum(a * 1e308))(np.full(2, 10.0))
        with pytest.raises(FloatingPointError):
            np.ones(1) * 1e308 * 10.0


# ---------------------------------------------------------------------------
# pooled work buffers: a sweep leaves them clean and never reads stale rows
# ---------------------------------------------------------------------------

def test_replayed_gradient_with_blocks_zeroes_adjoints_of_later_inputs():
    """BUG: tape.gradient on a tape that has a block node, whose output is an
    input slot other than the last one (f returns x[0]), returns uninitialised
    memory for the inputs after it: Tape.value_and_gradient zeroes only
    `_top(slot + 1)` adjoints but copies out all n_inputs of them."""
    def f(x):
        _unused = x * 2.0          # any array block puts the tape on the block path
        return x[0]

    tape = fad.record(f, np.arange(5.0))
    # leave non-zero numbers in the pooled work buffers
    other = fad.record(lambda x: fad.sum(x * x), np.arange(5.0))
    other.gradient(np.arange(5.0) + 3.0)
    np.testing.assert_array_equal(tape.gradient(np.arange(5.0) + 1.0), [1.0, 0, 0, 0, 0])
    value, g = tape.value_and_gradient(np.arange(5.0) + 1.0)
    assert value == 1.0
    np.testing.assert_array_equal(g, [1.0, 0, 0, 0, 0])


def test_replayed_gradients_leave_no_residue_in_reused_buffers():
    # the gradient sweep clears each adjoint as it consumes it, so the work
    # buffer is all zeros between calls; an inf adjoint through a constant
    # node (a0 pointing at itself) must not leave a NaN behind
    def f(x):
        s = fad.stack([fad.sqrt(x[0]), 2.0])     # 2.0 is a CONST node
        return fad.sum(s * fad.sqrt(x[1]))
    tape = fad.record(f, np.array([1.0, 1.0]))
    with np.errstate(all="ignore"):
        g0 = tape.gradient(np.array([0.0, 0.0]))   # infinities flow everywhere
    assert np.isnan(g0).any() or np.isinf(g0).any()
    for x in (np.array([4.0, 9.0]), np.array([1.0, 4.0])):
        a, b = x
        expect = [0.5 / np.sqrt(a) * np.sqrt(b), (np.sqrt(a) + 2.0) * 0.5 / np.sqrt(b)]
        np.testing.assert_allclose(tape.gradient(x), expect, rtol=1e-14)


# ---------------------------------------------------------------------------
# Vars and Arrays copied or pickled out of their recording
# ---------------------------------------------------------------------------

_PICKLE_VAR = """
import pickle, sys, fastad as fad
box = {}
fad.grad(lambda x: box.setdefault('v', x) * 1.0)(3.0)   # the first recording of this process
sys.stdout.write(pickle.dumps(box['v']).hex())
"""

_USE_VAR = """
import pickle, sys, fastad as fad
v = pickle.loads(bytes.fromhex(sys.argv[1]))
try:
    print('grad', fad.grad(lambda y: y * v)(2.0))   # also the first recording here
except fad.TapeError:
    print('TapeError')
except TypeError:
    print('TypeError')
"""


def test_var_from_another_process_is_not_silently_aliased_to_a_slot():
    """BUG: Var is picklable (Cython auto-pickle of value, slot, tid).  Recording
    ids restart at 1 in every process, so a Var pickled out of one process's
    first recording and loaded in another is accepted by that process's first
    recording: its slot is taken as a slot of the new tape (here it aliases y,
    giving grad 5.0 instead of an error; a large slot writes out of bounds).
    Either pickling a Var or using the unpickled one must fail cleanly."""
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    a = subprocess.run([sys.executable, "-c", _PICKLE_VAR], capture_output=True, text=True,
                       env=env, cwd="/tmp")
    if a.returncode != 0:
        assert "TypeError" in a.stderr or "PicklingError" in a.stderr, a.stderr
        return                                   # pickling a Var refused: fine
    b = subprocess.run([sys.executable, "-c", _USE_VAR, a.stdout], capture_output=True,
                       text=True, env=env, cwd="/tmp")
    assert b.stdout.strip() in ("TapeError", "TypeError"), (b.stdout, b.stderr[-500:])


_COPY_ARRAY = """
import copy, pickle, sys
import numpy as np
import fastad as fad

def f(x):
    y = x * 1.0
    try:
        z = copy.copy(y) if sys.argv[1] == 'copy' else pickle.loads(pickle.dumps(y))
    except (TypeError, pickle.PicklingError):
        print('refused')
        raise SystemExit(0)
    junk = [bytes(range(1, 200)) * 3 for _ in range(100)]
    return z[1] * 2.0 + z[0]
try:
    print([float(v) for v in fad.grad(f)(np.array([1.0, 2.0, 3.0]))])
except fad.TapeError:
    print('TapeError')
"""


@pytest.mark.parametrize("how", ["copy", "pickle"])
def test_copied_or_unpickled_array_does_not_read_a_dangling_slot_pointer(how):
    """BUG (crash / silent wrong): fad.Array gets Cython's auto-pickle, which
    round-trips its `char* data` (the pointer into idx) as a bytes object cut
    at the first NUL: the copy's data points into a freed temporary.
    copy.copy(y)[1] inside f gives grad [3, 0, 0] instead of [1, 2, 0];
    pickle.loads(pickle.dumps(a))[0] segfaults.  Expected: a correct copy,
    or a clean TypeError/TapeError (run in a subprocess: it can crash)."""
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _COPY_ARRAY, how], capture_output=True,
                       text=True, env=dict(os.environ), cwd="/tmp")
    assert r.returncode == 0, f"crashed with return code {r.returncode}: {r.stderr[-500:]}"
    assert r.stdout.strip() in ("refused", "TapeError", "[1.0, 2.0, 0.0]"), r.stdout
