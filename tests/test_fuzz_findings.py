"""Findings of an adversarial fuzzing pass (scalar loops mixed with array blocks,
primitives, replay, second order, odd inputs).

Tests marked in their docstring as BUG fail on the snapshot they were written
against and assert the correct behaviour; the others are regression guards for
tricky combinations that were verified to work.
"""
import math
import pickle
import threading

import numpy as np
import pytest

import fastad as fad
from fastad._tape import release_memory
from conftest import fd_grad, fd_jacobian


# ---------------------------------------------------------------------------
# confirmed bugs
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


@pytest.mark.parametrize("fn, ref", [
    (fad.sigmoid, lambda t: 1.0 / (1.0 + np.exp(-t))),
    (fad.softplus, lambda t: np.log1p(np.exp(t))),
    (fad.relu, lambda t: np.maximum(t, 0.0)),
    (fad.erf, np.vectorize(math.erf)),
])
@pytest.mark.parametrize("layout", ["transposed", "fortran", "reversed"])
def test_table_functions_on_non_c_contiguous_ndarrays(fn, ref, layout):
    """BUG: fad.sigmoid/softplus/relu/erf on a plain ndarray that is not
    C-contiguous return uninitialised memory: _var._table fills
    `np.empty_like(arr).reshape(-1)`, which for an F-ordered `out` is a copy,
    so `out` itself is never written (and the element order would be wrong)."""
    a = np.arange(6.0).reshape(2, 3) - 2.5
    x = {"transposed": a.T, "fortran": np.asfortranarray(a), "reversed": a[:, ::-1]}[layout]
    np.testing.assert_allclose(fn(x), ref(x), rtol=1e-12, atol=1e-15)


def test_check_grad_on_function_using_sigmoid_of_a_transpose():
    """BUG (consequence of the one above): check_grad evaluates f on plain
    ndarrays, so a correct gradient is reported as off by about 0.2."""
    assert fad.check_grad(lambda a: fad.sum(fad.sigmoid(a.T)), np.ones((2, 3))) < 1e-6


def test_zero_directions_jvp_and_zero_seeds_vjp_through_array_blocks():
    """BUG: k = 0 stacked directions/seeds work on scalar tapes (an empty
    (0,) + shape result) but crash inside array blocks with NumPy's
    'cannot reshape array of size 0 into shape (-1,0)' (Elementwise.tangent,
    Operand.add_adjoint reshape(-1, k))."""
    f = lambda a: a * 2.0                      # noqa: E731
    _, jv = fad.jvp(f, np.ones(3), np.zeros((0, 3)))
    assert jv.shape == (0, 3)
    _, pullback = fad.vjp(f, np.ones(3))
    assert pullback(np.zeros((0, 3))).shape == (0, 3)


def test_abs_derivative_at_nan_agrees_between_scalar_and_array_paths():
    """BUG (minor): d|x|/dx at NaN is 0.0 from the scalar op table
    (FAD_ABS in csrc/fastad_ops.h: neither x > 0 nor x < 0) but NaN from the
    array twin (np.sign), so the same function has two gradients; NaN should
    propagate, as with NumPy."""
    g_scalar = fad.grad(lambda a: fad.abs(a))(float("nan"))
    g_array = fad.grad(lambda a: fad.sum(fad.abs(a)))(np.array([np.nan]))
    assert math.isnan(g_array[0])
    assert math.isnan(g_scalar)


def test_has_aux_returns_values_not_dead_tape_vars():
    """BUG (JAX semantics): with has_aux, an aux that holds intermediate Vars /
    Arrays is handed back as objects of an ended recording: float(aux) raises
    'cannot be converted ... while it is being differentiated' and
    aux + 1 raises TapeError.  JAX returns the concrete values."""
    def f(x):
        y = x * x
        return y + 1.0, y

    g, aux = fad.grad(f, has_aux=True)(3.0)
    assert g == 6.0
    assert float(aux) == 9.0


# ---------------------------------------------------------------------------
# verified tricky combinations (regression guards; these pass)
# ---------------------------------------------------------------------------

def test_negative_steps_fancy_repeats_and_views_mixed_with_scalar_loop():
    def f(a, np_=False):
        M = np if np_ else fad
        t = M.sum(np.sin(a[::-1, ::-2]) * a[:, 1::2])
        t = t + M.sum(a[[0, 0, 2], :] ** 3)
        t = t + M.sum((a.T.reshape(2, 6) @ a.reshape(6, 2)) ** 2) * 0.01
        for i in range(3):
            t = t + a[i, i] * a[0, -1 - i]
        return t

    x = np.random.default_rng(0).standard_normal((3, 4))
    ref = fd_grad(lambda a: f(a, True), x, relative=False)
    np.testing.assert_allclose(fad.grad(f)(x), ref, rtol=1e-5, atol=1e-6)
    tape = pickle.loads(pickle.dumps(fad.record(f, x + 0.3)))
    np.testing.assert_allclose(tape.gradient(x), ref, rtol=1e-5, atol=1e-6)


def test_hessian_through_where_broadcast_and_reductions_matches_replay_and_at():
    def f(a):
        w = fad.where(a > 0, a, a[0])
        return fad.sum(w ** 3) + fad.sum(a.mean(axis=0) * a.mean(axis=-1, keepdims=True)) \
            + fad.sum(np.max(a, axis=1) ** 2)

    x = np.random.default_rng(1).standard_normal((3, 4))
    H = fad.hessian(f)(x)
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.hessian(x), H, rtol=1e-12, atol=1e-14)
    V = np.random.default_rng(2).standard_normal((3, 3, 4))
    np.testing.assert_allclose(tape.at(x).hvp(V), np.einsum("ijkl,nkl->nij", H, V),
                               rtol=1e-10, atol=1e-12)
    # the Hessian is the derivative of the gradient
    Hd = fd_jacobian(fad.grad(f), x, relative=False)
    np.testing.assert_allclose(H, Hd, rtol=1e-5, atol=1e-6)


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


def test_empty_arrays_and_constant_outputs_everywhere():
    e = np.zeros(0)
    assert fad.grad(lambda a: fad.sum(np.sin(a)))(e).shape == (0,)
    assert fad.jacfwd(lambda a: np.sin(a))(np.zeros((2, 0))).shape == (2, 0, 2, 0)
    assert fad.jacrev(lambda a: np.sin(a))(np.zeros((2, 0))).shape == (2, 0, 2, 0)
    assert fad.hessian(lambda a: fad.sum(a ** 3))(e).shape == (0, 0)
    assert fad.jacobian(lambda a: np.ones((2, 0)) @ a.reshape(0, 3))(e).shape == (2, 3, 0)
    np.testing.assert_array_equal(fad.jacobian(lambda a: a[:0] * 2)(np.ones(3)), np.zeros((0, 3)))
    x = np.array([1.0, 2.0, 3.0])
    tape = fad.record(lambda a: [a[0] * a[1], 2.0, a[2]], x)
    np.testing.assert_allclose(tape.jacobian(x + 1), [[3, 2, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(tape.vjp(x + 1, np.ones((2, 3))), [[3, 2, 1], [3, 2, 1]])
    t0 = fad.record(lambda a: 3.0, x)
    np.testing.assert_array_equal(t0.hessian(x), np.zeros((3, 3)))
    np.testing.assert_array_equal(t0.at(x).hvp(np.ones(3)), np.zeros(3))


def test_zero_d_array_input_keeps_zero_d_shapes():
    f = lambda a: fad.sin(a) * a                         # noqa: E731
    x = np.array(0.7)
    g = fad.grad(f)(x)
    assert isinstance(g, np.ndarray) and g.shape == ()
    h = fad.hessian(f)(x)
    assert h.shape == ()
    tape = fad.record(f, x)
    np.testing.assert_allclose(tape.gradient(x), g)
    np.testing.assert_allclose(tape.at(x).hvp(np.array(1.0)), h)
    np.testing.assert_allclose(fad.hvp(f, x, np.ones(2)), [h, h])


def test_fortran_ordered_and_strided_inputs_and_directions():
    A = np.arange(6.0).reshape(2, 3)
    g = fad.grad(lambda a: fad.sum(a * A))(np.asfortranarray(np.ones((2, 3))))
    np.testing.assert_array_equal(g, A)
    tape = fad.record(lambda a: fad.sum(a[0] * np.arange(3.0)) + a[1, 2] ** 2, np.ones((2, 3)))
    np.testing.assert_allclose(tape.gradient(np.asfortranarray(A)), [[0, 1, 2], [0, 0, 10]])
    _, jv = fad.jvp(lambda a: a.T * 1.0, np.ones((2, 3)), np.asfortranarray(A))
    np.testing.assert_array_equal(jv, A.T)
    np.testing.assert_allclose(fad.hvp(lambda a: fad.sum(a ** 3), np.ones((2, 3)), np.asfortranarray(A)),
                               6 * A)
    np.testing.assert_allclose(fad.grad(lambda a: fad.sum(a ** 2))(np.arange(10.0)[::-2]),
                               2 * np.arange(10.0)[::-2])


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
# more confirmed bugs
# ---------------------------------------------------------------------------

@fad.primitive
def _psqrt(x):
    return np.sqrt(x)


@_psqrt.defvjp
def _psqrt_vjp(ybar, y, x):
    return ybar * 0.5 / np.sqrt(x)


@_psqrt.defjvp
def _psqrt_jvp(xdot, y, x):
    return xdot * 0.5 / np.sqrt(x)


def test_hessian_strong_zero_for_unselected_scalar_primitive():
    """BUG: the classic `where(x > 0, sqrt(x), 0)` with sqrt as a custom
    primitive: the gradient is right (PrimitiveBlock/ScalarPrimitiveBlock.reverse
    skip a zero cotangent: 'the rule is not even called'), but reverse2 has no
    such skip and calls the rule at x = -1 with ybar = 0, so 0 * NaN poisons
    the Hessian: expected [[0, 0], [0, 2]], got [[nan, 0], [0, 2]]."""
    def f(x):
        return fad.where(x[0] > 0, _psqrt(x[0]), 0.0) + x[1] ** 2

    x = np.array([-1.0, 2.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fad.grad(f)(x), [0.0, 4.0])
        np.testing.assert_array_equal(fad.hessian(f)(x), [[0.0, 0.0], [0.0, 2.0]])
        np.testing.assert_array_equal(fad.record(f, x).at(x).hvp(np.array([1.0, 0.0])), [0.0, 0.0])


def test_hessian_strong_zero_for_array_primitive_with_zero_cotangent():
    """BUG: same for an array primitive whose whole cotangent is zero
    (multiplied by 0.0): grad is [8, -2] but the Hessian comes out
    [[2, nan], [0, nan]] (not even symmetric) instead of diag(2, 2)."""
    def f(x):
        return fad.sum(_psqrt(x) * 0.0 + x ** 2)

    x = np.array([4.0, -1.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fad.grad(f)(x), [8.0, -2.0])
        np.testing.assert_array_equal(fad.hessian(f)(x), np.diag([2.0, 2.0]))


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


def test_second_order_zero_direction_is_a_strong_zero_like_in_jvp():
    """BUG: f(x) = sqrt(x0) + x1**2 at x0 = 0 is separable, so H[1, 0] must
    equal H[0, 1] = 0 and H e1 = [0, 2].  jvp treats a zero tangent as a strong
    zero (forward_tangent / _axpy skip it even where sqrt' = inf), but
    reverse_second (k = 1 and k lanes) and Elementwise.reverse2 compute
    g * (f_xx * 0) = g * (-inf * 0) = NaN, so the Hessian is not even
    symmetric: got [[-inf, 0], [nan, 2]]."""
    x = np.array([0.0, 1.0])
    e1 = np.array([0.0, 1.0])
    for f in (lambda x: fad.sqrt(x[0]) + x[1] ** 2,                 # scalar nodes
              lambda x: fad.sum(fad.sqrt(x[:1])) + x[1] ** 2):       # an array block
        with np.errstate(all="ignore"):
            assert fad.jvp(f, x, e1)[1] == 2.0                        # first order: fine
            H = fad.hessian(f)(x)
            assert H[0, 1] == 0.0
            assert H[1, 0] == 0.0
            np.testing.assert_array_equal(fad.hvp(f, x, e1), [0.0, 2.0])


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
