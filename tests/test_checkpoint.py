"""fad.scan and fad.checkpoint: checkpointed time stepping and recomputed functions
(fastad/checkpointing.py, fastad/_scan.pyx).

References: the same loop written in plain Python and differentiated without
checkpoints (every step on the tape), analytic derivatives of a linear
recurrence, central differences, and the dynamic program of the optimal
checkpoint schedule."""
import functools
import pickle

import numpy as np
import pytest

import fastad as fad
from fastad import checkpointing as ck
from fastad._scan import StepKernel
from conftest import close, fd_close, fd_grad

H = 0.01
TH = np.array([10.0, 28.0, 8.0 / 3.0, 1.0, 1.0, 1.0])     # sigma, rho, beta, x0, y0, z0


# ---------------------------------------------------------------- the loops

def lorenz(s, p):
    x, y, z = s
    sigma, rho, beta = p
    return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]


def rk4(s, p):
    k1 = lorenz(s, p)
    k2 = lorenz([s[i] + H / 2 * k1[i] for i in range(3)], p)
    k3 = lorenz([s[i] + H / 2 * k2[i] for i in range(3)], p)
    k4 = lorenz([s[i] + H * k3[i] for i in range(3)], p)
    return [s[i] + H / 6 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]) for i in range(3)]


def lorenz_plain(th, n):
    s, p = [th[3], th[4], th[5]], [th[0], th[1], th[2]]
    for _ in range(n):
        s = rk4(s, p)
    return s


def lorenz_loss_plain(th, n):
    s = lorenz_plain(th, n)
    return s[0] + 2 * s[1] + 3 * s[2]


def lorenz_loss_scan(th, n, checkpoints=None):
    s = fad.scan(rk4, th[3:], n, th[:3], checkpoints=checkpoints)
    return s[0] + 2 * s[1] + 3 * s[2]


def rosen_step(c, p):
    """Gradient descent on the Rosenbrock function, summing the function along
    the way: carry (x, y, sum), params (a, b, learning rate)."""
    x, y, acc = c
    a, b, lr = p
    r = y - x * x
    f = (a - x) ** 2 + b * r * r
    return [x - lr * (-2 * (a - x) - 4 * b * x * r), y - lr * (2 * b * r), acc + f]


RP = np.array([1.0, 100.0, 1e-3, -1.2, 1.0, 0.0])          # a, b, lr, x0, y0, acc0


def rosen_plain(q, n):
    c, p = [q[3], q[4], q[5]], [q[0], q[1], q[2]]
    for _ in range(n):
        c = rosen_step(c, p)
    return c[2] + c[0] * c[1]


def rosen_scan(q, n, checkpoints=None):
    c = fad.scan(rosen_step, q[3:], n, q[:3], checkpoints=checkpoints)
    return c[2] + c[0] * c[1]


def rel_close(got, want, rtol=1e-12):
    """Equal to rounding, relative to the largest entry (chaotic loops have
    entries of very different sizes)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1e-300) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


BUDGETS = [1, 2, 3, 5, 8, None]


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 40])
@pytest.mark.parametrize("checkpoints", BUDGETS + ["more"])
def test_lorenz_gradient_equals_uncheckpointed(n, checkpoints):
    c = n + 5 if checkpoints == "more" else checkpoints
    want = fad.grad(lorenz_loss_plain)(TH, n)
    got = fad.grad(lorenz_loss_scan)(TH, n, c)
    rel_close(got, want)
    v, g = fad.value_and_grad(lorenz_loss_scan)(TH, n, c)
    rel_close(g, want)
    close(v, lorenz_loss_plain(TH, n))


@pytest.mark.parametrize("n", [0, 1, 2, 9, 60])
@pytest.mark.parametrize("checkpoints", BUDGETS + ["more"])
def test_rosenbrock_gradient_equals_uncheckpointed(n, checkpoints):
    c = n + 1 if checkpoints == "more" else checkpoints
    rel_close(fad.grad(rosen_scan)(RP, n, c), fad.grad(rosen_plain)(RP, n))


def test_long_loop_many_schedules():
    """500 steps under budgets whose schedules recurse several levels deep."""
    want = fad.grad(lorenz_loss_plain)(TH, 500)
    for c in (2, 4, 11, 30, 499, 500, 501):
        rel_close(fad.grad(lorenz_loss_scan)(TH, 500, c), want, 1e-11)


def test_gradient_against_finite_differences():
    g = fad.grad(lorenz_loss_scan)(TH, 30, 3)
    fd_close(g, fd_grad(lambda t: lorenz_loss_plain(t, 30), TH, h=1e-6), rtol=1e-6,
             atol=1e-6, scale_atol=True)


def test_linear_recurrence_analytic():
    """c' = a c + b: c_n = a^n c0 + b (a^n - 1) / (a - 1)."""
    n, a, b, c0 = 25, 1.03, 0.5, 2.0

    def f(q):
        return fad.scan(lambda c, p: p[0] * c + p[1], q[2], n, q[:2], checkpoints=4)

    q = np.array([a, b, c0])
    an = a ** n
    dc_da = n * a ** (n - 1) * c0 + b * (n * a ** (n - 1) * (a - 1) - (an - 1)) / (a - 1) ** 2
    close(f(q).value if hasattr(f(q), "value") else f(q), an * c0 + b * (an - 1) / (a - 1))
    close(fad.grad(f)(q), [dc_da, (an - 1) / (a - 1), an], rtol=1e-12)


def test_first_and_last_steps_are_reversed_once():
    """A step counter in the carry makes every step different: the gradient
    w.r.t. w weighs step t by cos(w t), so a step reversed at the wrong
    state, twice or never (first or last segment) changes it."""
    n = 23

    def step(c, p):
        t, acc = c
        return [t + 1.0, acc + fad.sin(p * t) * (t + 1.0)]

    def f(w, checkpoints):
        return fad.scan(step, np.array([0.0, 0.0]), n, w, checkpoints=checkpoints)[1]

    want = sum(np.cos(0.3 * t) * t * (t + 1.0) for t in range(n))
    for c in (1, 2, 3, 4, 6, 22, 23, 100):
        close(fad.grad(f)(0.3, c), want)


def test_multiple_seeds_and_pytree_shapes():
    """k adjoint lanes at once (jacrev), a 2-D carry, a scalar carry."""
    def vec_scan(th):
        return fad.scan(rk4, th[3:], 15, th[:3], checkpoints=3)

    def vec_plain(th):
        return fad.stack(lorenz_plain(th, 15))

    rel_close(fad.jacrev(vec_scan)(TH), fad.jacrev(vec_plain)(TH))

    def step2(c, p):               # a (2, 2) carry
        return [[c[0][0] * p + c[1][1], c[0][1] - 0.1 * c[0][0]],
                [c[1][0] * c[0][1] * 0.5, c[1][1] * 0.9]]
    init = np.array([[1.0, 0.5], [0.25, 2.0]])

    def loop(p):
        c = [list(r) for r in init]
        for _ in range(6):
            c = step2(c, p)
        return c[0][0] + c[0][1] * c[1][0] - c[1][1]

    def sc(p):
        c = fad.scan(step2, init, 6, p, checkpoints=2)
        assert c.shape == (2, 2)
        return c[0, 0] + c[0, 1] * c[1, 0] - c[1, 1]

    rel_close(fad.grad(sc)(0.7), fad.grad(loop)(0.7))

    def sq(c, p):
        return c - 0.1 * (c * c - p)

    def sq_loop(p):
        c = 1.0
        for _ in range(30):
            c = sq(c, p)
        return c

    rel_close(fad.grad(lambda p: fad.scan(sq, 1.0, 30, p, checkpoints=2))(2.0),
              fad.grad(sq_loop)(2.0))
    assert isinstance(fad.scan(sq, 1.0, 3, 2.0), float)


def test_no_params_and_constant_params():
    def step(c, p):
        assert p is None
        return [c[0] * 0.9 + c[1], c[1] * c[0] * 0.1]

    def loop(c0):
        c = [c0[0], c0[1]]
        for _ in range(12):
            c = step(c, None)
        return c[0] + c[1]

    x = np.array([0.3, 0.8])
    rel_close(fad.grad(lambda c: fad.sum(fad.scan(step, c, 12, checkpoints=3)))(x),
              fad.grad(loop)(x))
    # params constant, init traced; init constant, params traced
    g = fad.grad(lambda t: lorenz_loss_plain(np.concatenate([TH[:3], t]), 10))(TH[3:])
    rel_close(fad.grad(lambda t: fad.sum(fad.scan(rk4, t, 10, TH[:3], checkpoints=2)
                                         * np.array([1.0, 2.0, 3.0])))(TH[3:]), g)
    g = fad.grad(lambda p: lorenz_loss_plain(np.concatenate([p, TH[3:]]), 10))(TH[:3])
    rel_close(fad.grad(lambda p: fad.sum(fad.scan(rk4, TH[3:], 10, p, checkpoints=2)
                                         * np.array([1.0, 2.0, 3.0])))(TH[:3]), g)


def test_plain_values_without_tracing():
    got = fad.scan(rk4, TH[3:], 200, TH[:3])
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    close(got, lorenz_plain(TH, 200))
    close(fad.scan(rk4, TH[3:], 0, TH[:3]), TH[3:])


# ---------------------------------------------------------------- replay and modes

def test_record_and_replay_at_a_new_point():
    tape = fad.record(lambda t: lorenz_loss_scan(t, 40, 3), TH)
    for th in (TH, TH * 1.01, TH + np.array([0.5, -1.0, 0.1, 0.2, -0.3, 0.4])):
        rel_close(tape.gradient(th), fad.grad(lorenz_loss_plain)(th, 40))
        close(tape(th), lorenz_loss_plain(th, 40))
    again = pickle.loads(pickle.dumps(tape))
    rel_close(again.gradient(TH * 1.02), fad.grad(lorenz_loss_plain)(TH * 1.02, 40))


def test_forward_mode_and_second_order():
    n = 20
    v = np.linspace(-1.0, 1.0, 6)

    def vec_scan(th):
        return fad.scan(rk4, th[3:], n, th[:3], checkpoints=3)

    def vec_plain(th):
        return fad.stack(lorenz_plain(th, n))

    rel_close(fad.jacfwd(vec_scan)(TH), fad.jacrev(vec_plain)(TH))
    rel_close(fad.jvp(vec_scan, TH, v)[1], fad.jvp(vec_plain, TH, v)[1])
    for c in (1, 2, 3, 25):
        rel_close(fad.hvp(lambda t: lorenz_loss_scan(t, n, c), TH, v),
                  fad.hvp(lambda t: lorenz_loss_plain(t, n), TH, v))
    rel_close(fad.hessian(lambda q: rosen_scan(q, 30, 4))(RP),
              fad.hessian(lambda q: rosen_plain(q, 30))(RP))
    tape = fad.record(lambda t: lorenz_loss_scan(t, n, 2), TH)
    rel_close(tape.hvp(TH * 1.01, v), fad.hvp(lambda t: lorenz_loss_plain(t, n), TH * 1.01, v))


# ---------------------------------------------------------------- the schedule

@functools.lru_cache(None)
def _dp(l, c):
    """Fewest forward steps to reverse l steps keeping c more carries than
    the segment's start (the recursion fad.scan's schedule follows)."""
    if l == 1:
        return 0
    if c == 0:
        return l * (l - 1) // 2
    if l <= c + 2:
        return l - 1
    return min(m + _dp(l - m, c - 1) + _dp(m, c) for m in range(1, l))


def test_revolve_cost_is_the_optimum():
    for s in range(1, 7):
        for l in range(1, 90):
            assert ck.revolve_cost(l, s) == _dp(l, s - 1), (l, s)


def test_split_is_optimal():
    for c in range(1, 7):
        for l in range(c + 3, 90):
            m = ck._split(l, c)
            assert 1 <= m < l
            assert m + _dp(l - m, c - 1) + _dp(m, c) == _dp(l, c), (l, c, m)


@pytest.mark.parametrize("n,c", [(1, 1), (2, 1), (10, 1), (10, 2), (50, 3), (200, 5),
                                 (100, 100), (100, 99), (100, 1000), (1000, 12)])
def test_schedule_replays_the_minimum(n, c):
    """Steps replayed by a forward loop and its reverse: the optimum + 1
    (the forward does the schedule's first descent and reaches step n), and
    the forward's pass over a last segment that is recomputed without
    checkpoints (budget exhausted: it keeps nothing of it)."""
    tape = fad.record(lambda z: rosen_step(z[:3], z[3:]), RP[[3, 4, 5, 0, 1, 2]])
    kern = StepKernel(tape, 3)
    kern.set_params(RP[:3])
    state = RP[3:].copy()
    plan = ck._forward(kern, state, n, c)
    cbar, pbar = np.ones((3, 1)), np.zeros((3, 1))
    kern.begin_reverse(cbar, pbar)
    ck._reverse(kern, plan, n)
    last = n - plan.lo
    again = last - 1 if plan.c == 0 and not ck._keeps(last, 0) else 0
    assert kern.steps_run == ck.revolve_cost(n, c) + 1 + again
    # the checkpoints kept at once never exceed the budget (+1 being advanced)
    assert len(plan.stack) + (0 if plan.stored is None else len(plan.stored)) <= c + 1


# ---------------------------------------------------------------- errors

def branchy(c, p):
    return c * p if c < 1.5 else c


def test_branch_change_along_the_loop():
    with pytest.raises(fad.BranchChangedError, match="at step 3 "):
        fad.scan(branchy, 1.0, 10, 1.2)
    with pytest.raises(fad.BranchChangedError, match="at step 3 "):
        fad.grad(lambda p: fad.scan(branchy, 1.0, 10, p, checkpoints=3))(1.2)
    assert fad.scan(branchy, 1.0, 3, 1.2) == pytest.approx(1.2 ** 3)
    # recorded where every step keeps the branch; a replay where step 2 does not
    tape = fad.record(lambda p: fad.scan(branchy, 1.0, 3, p), 1.1)
    close(tape.gradient(1.05), 3 * 1.05 ** 2)
    with pytest.raises(fad.BranchChangedError, match="at step 2 "):
        tape.gradient(1.3)
    close(tape.gradient(1.1), 3 * 1.1 ** 2)     # still usable


def test_bad_arguments():
    step = lambda c, p: c * p  # noqa: E731
    with pytest.raises(TypeError, match="step must be a function"):
        fad.scan(3, 1.0, 2, 2.0)
    with pytest.raises(ValueError, match="length must be at least 0"):
        fad.scan(step, 1.0, -1, 2.0)
    with pytest.raises(TypeError, match="length must be an int"):
        fad.scan(step, 1.0, 2.5, 2.0)
    with pytest.raises(TypeError, match="length must be an int"):
        fad.scan(step, 1.0, True, 2.0)
    with pytest.raises(ValueError, match="checkpoints must be at least 1"):
        fad.scan(step, 1.0, 2, 2.0, checkpoints=0)
    with pytest.raises(TypeError, match="checkpoints must be an int"):
        fad.scan(step, 1.0, 2, 2.0, checkpoints="all")
    with pytest.raises(TypeError, match="init must be a float"):
        fad.scan(step, "a", 2, 2.0)
    with pytest.raises(TypeError, match="params must be real numbers"):
        fad.scan(step, 1.0, 2, np.array(["x"]))
    with pytest.raises(ValueError, match="init is empty"):
        fad.scan(step, [], 2, 2.0)


def test_bad_steps():
    with pytest.raises(ValueError, match="step returned 1 numbers"):
        fad.scan(lambda c, q: [c[0] * q], [1.0, 2.0], 3, 2.0)
    with pytest.raises(ValueError, match="returned a pair"):
        fad.scan(lambda c, q: (c, c), [1.0, 2.0, 3.0], 3, 2.0)
    with pytest.raises(ValueError, match="read a concrete value"):
        fad.scan(lambda c, q: c * (2 if c.value > 0 else 1), 1.0, 3, 2.0)
    with pytest.raises(fad.TapeError, match="pass everything the step differentiates"):
        fad.grad(lambda p: fad.scan(lambda c, q: c * p, 1.0, 3, 2.0))(1.2)
    with pytest.raises(ZeroDivisionError):
        fad.scan(lambda c, q: c / 0.0 if False else 1 / 0, 1.0, 3, 2.0)
    # the library stays usable
    close(fad.grad(lambda p: fad.scan(lambda c, q: c * q, 1.0, 3, p))(2.0), 12.0)


# ---------------------------------------------------------------- array steps

def _field(s, p):
    x, y, z = s[0], s[1], s[2]
    return fad.stack([p[0] * (y - x), x * (p[1] - z) - y, x * y - p[2] * z])


def rk4_arrays(s, p):
    """The RK4 step on Arrays (element-wise blocks on the step's tape)."""
    k1 = _field(s, p)
    k2 = _field(s + H / 2 * k1, p)
    k3 = _field(s + H / 2 * k2, p)
    k4 = _field(s + H * k3, p)
    return s + H / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_array_step_first_order_and_forward_mode():
    w = np.array([1.0, 2.0, 3.0])

    def plain(th):
        s = th[3:]
        for _ in range(25):
            s = rk4_arrays(s, th[:3])
        return fad.sum(s * w)

    def sc(th, c):
        return fad.sum(fad.scan(rk4_arrays, th[3:], 25, th[:3], checkpoints=c) * w)

    want = fad.grad(plain)(TH)
    rel_close(want, fad.grad(lorenz_loss_plain)(TH, 25))      # the same loop
    for c in (1, 3, 30):
        rel_close(fad.grad(sc)(TH, c), want)
    v = np.linspace(-1.0, 1.0, 6)
    rel_close(fad.jvp(lambda t: sc(t, 3), TH, v)[1], fad.jvp(plain, TH, v)[1])
    close(fad.scan(rk4_arrays, TH[3:], 25, TH[:3]), lorenz_plain(TH, 25))
    with pytest.raises(NotImplementedError, match="second derivatives .* scalar operations"):
        fad.hvp(lambda t: sc(t, 3), TH, v)


def test_array_step_branch_change_names_the_step():
    def step(c, p):
        return c * p if fad.sum(c) < 1.5 else c * 1.0

    with pytest.raises(fad.BranchChangedError, match="at step 3 "):
        fad.grad(lambda p: fad.sum(fad.scan(step, np.array([0.5, 0.5]), 6, p,
                                            checkpoints=2)))(1.2)


# ---------------------------------------------------------------- other paths

def test_sparse_paths_and_threads():
    """Sparse Jacobians and Hessians see the scan as one dense node; a tape
    with a scan replays from several threads at once (a kernel per call)."""
    pytest.importorskip("scipy")
    import threading

    def f(p):
        return fad.scan(lambda c, q: [q[0] * c[1], c[0] * q[1]], np.array([1.0, 2.0]), 3, p,
                        checkpoints=1)

    p = np.array([1.5, 0.5])
    # c3 = (q0^2 q1 c1, q0 q1^2 c0) from c0 = (1, 2)
    close(fad.sparse_jacobian(f)(p).toarray(),
          [[4 * p[0] * p[1], 2 * p[0] ** 2], [p[1] ** 2, 2 * p[0] * p[1]]])

    def g(q):
        return fad.sum(f(q) ** 2)

    H = fad.hessian(g)(p)
    close(fad.sparse_hessian(g)(p).toarray(), H)
    for i in range(2):          # rows of H: central differences of the gradient
        fd_close(H[i], fd_grad(lambda q: fad.grad(g)(q)[i], p), rtol=1e-6, atol=1e-6)
    tape = fad.record(lambda t: lorenz_loss_scan(t, 300, 5), TH)
    points = [TH * (1 + 0.01 * i) for i in range(4)]
    want = [fad.grad(lorenz_loss_plain)(q, 300) for q in points]
    got = [None] * 4

    def work(i):
        for _ in range(3):
            got[i] = tape.gradient(points[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g_, w in zip(got, want):
        rel_close(g_, w)


# ---------------------------------------------------------------- fad.checkpoint

W4 = np.random.default_rng(0).normal(size=(4, 4)) * 0.5


def layers(x, W):
    for _ in range(5):
        x = fad.tanh(W @ x)
    return x


def _layers_loss(x, wrap):
    b = fad.checkpoint(layers) if wrap else layers
    return fad.sum(b(b(x, W4), W4) ** 2)


def test_checkpoint_function_gradients_and_tangents():
    x = np.linspace(-1.0, 1.0, 4)
    want = fad.grad(_layers_loss)(x, False)
    fd_close(want, fd_grad(lambda t: _layers_loss(t, False), x), rtol=1e-6, atol=1e-8)
    rel_close(fad.grad(_layers_loss)(x, True), want)
    v = np.linspace(0.5, 2.0, 4)
    rel_close(fad.jvp(lambda t: _layers_loss(t, True), x, v)[1],
              fad.jvp(lambda t: _layers_loss(t, False), x, v)[1])
    # the outer tape holds one node per call instead of f's operations
    short = fad.record(lambda t: _layers_loss(t, True), x)
    assert len(short) < len(fad.record(lambda t: _layers_loss(t, False), x))
    rel_close(short.gradient(x * 0.5), fad.grad(_layers_loss)(x * 0.5, False))

    def two(a, b):
        return a * fad.sin(b) + b

    close(fad.grad(lambda q: fad.checkpoint(two)(q[0], q[1]))(np.array([1.0, 2.0])),
          [np.sin(2.0), np.cos(2.0) + 1.0])
    close(fad.grad(lambda a: fad.checkpoint(two)(a, 2.0))(1.0), np.sin(2.0))
    close(fad.checkpoint(two)(1.0, 2.0), np.sin(2.0) + 2.0)     # untraced: f itself


def test_checkpoint_function_errors():
    with pytest.raises(TypeError, match="f must be a function"):
        fad.checkpoint(3)
    x = np.linspace(-1.0, 1.0, 4)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        fad.hvp(lambda t: _layers_loss(t, True), x, x)
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(fad.record(lambda t: _layers_loss(t, True), x))
    rel_close(fad.grad(_layers_loss)(x, True), fad.grad(_layers_loss)(x, False))   # usable
