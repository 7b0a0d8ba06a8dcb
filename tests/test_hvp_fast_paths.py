"""The Hessian-vector product's fast paths (issue #19, item 4).

Scalar tapes with one direction: the replay pushes the tangent along and
zeroes the second-order sweep's rows (threaded one-lane kernels).  Tapes with
blocks: element-wise blocks run forward-over-reverse in one C pass
(fastad._second), write their operands' rows where nothing wrote them yet,
skip zero adjoint tangents; a replay pushes the direction through them in
the same pass as their values.  Every answer here is checked against an
independent one: a hand-written Hessian or central differences of a
hand-written gradient.
"""
import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_close, fd_jacobian
from fastad._blocks import OP_CODE
from fastad._second import second_step, tangent_one, value_tangent

RNG = np.random.default_rng(19)


# ---------------------------------------------------------------- the kernels

def _sz(p, q):
    """The strong-zero product, elementwise (the reference)."""
    p, q = np.broadcast_arrays(np.asarray(p, float), np.asarray(q, float))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((p == 0) | (q == 0), 0.0, p * q)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("assign", [0, 15])
def test_second_step_mul_matches_the_hand_formula(k, assign):
    n = 257
    x, y = RNG.standard_normal(n), RNG.standard_normal(n)
    tx, ty = RNG.standard_normal((n, k)), RNG.standard_normal((n, k))
    g, gd = RNG.standard_normal(n), RNG.standard_normal((n, k))
    old = [RNG.standard_normal(s) for s in (n, (n, k), n, (n, k))]
    out = [a.copy() for a in old]
    second_step(OP_CODE["mul"], n, k, x, y, x * y, tx, ty, g, gd, *out, assign=assign)
    # d(xy)/dx = y, d(xy)/dy = x, f_xx = f_yy = 0, f_xy = 1
    ax, ay = _sz(y, g), _sz(x, g)
    atx = _sz(y[:, None], gd) + _sz(g[:, None], _sz(1.0, ty))
    aty = _sz(x[:, None], gd) + _sz(g[:, None], _sz(1.0, tx))
    base = [np.zeros_like(o) if assign else o for o in old]
    close(out[0], base[0] + ax)
    close(out[1], base[1] + atx)
    close(out[2], base[2] + ay)
    close(out[3], base[3] + aty)


def test_second_step_unary_and_constant_operands():
    n = 100
    x = RNG.uniform(0.5, 2.0, n)
    tx, g, gd = RNG.standard_normal(n), RNG.standard_normal(n), RNG.standard_normal(n)
    adj, adt = np.zeros(n), np.zeros(n)
    v = np.log(x)
    second_step(OP_CODE["log"], n, 1, x, None, v, tx, None, g, gd, adj, adt, None, None)
    close(adj, g / x)
    close(adt, gd / x + g * (-1.0 / x ** 2) * tx)
    # c / y with the constant c = 3 (one number, stride 0): d/dy = -c/y^2, d2/dy2 = 2c/y^3
    y = RNG.uniform(0.5, 2.0, n)
    ty = RNG.standard_normal(n)
    adj, adt = np.zeros(n), np.zeros(n)
    second_step(OP_CODE["div"], n, 1, 3.0, y, 3.0 / y, None, ty, g, gd, None, None, adj, adt)
    close(adj, -3.0 / y ** 2 * g)
    close(adt, -3.0 / y ** 2 * gd + g * (6.0 / y ** 3) * ty)


def test_second_step_zero_gd_and_first_order_only():
    n = 64
    x, y = RNG.standard_normal(n), RNG.standard_normal(n)
    tx, ty, g = RNG.standard_normal(n), RNG.standard_normal(n), RNG.standard_normal(n)
    adj_x, adt_x, adj_y, adt_y = (RNG.standard_normal(n) for _ in range(4))
    before = [a.copy() for a in (adj_x, adt_x, adj_y, adt_y)]
    second_step(OP_CODE["mul"], n, 1, x, y, x * y, tx, ty, g, None,
                adj_x, adt_x, adj_y, adt_y)          # gd None: zeros
    close(adj_x, before[0] + y * g)
    close(adt_x, before[1] + g * ty)
    close(adj_y, before[2] + x * g)
    close(adt_y, before[3] + g * tx)
    a, b = RNG.standard_normal(n), RNG.standard_normal(n)
    a0, b0 = a.copy(), b.copy()
    second_step(OP_CODE["add"], n, 1, x, y, x + y, None, None, g, None, a, None, b, None)
    close(a, a0 + g)                                  # adjoints alone
    close(b, b0 + g)


def test_second_step_overlapping_operand_rows_add_up():
    # x[:-1] * x[1:] over one buffer: the rows overlap, every update lands
    n = 50
    buf = RNG.standard_normal(n + 1)
    tan = RNG.standard_normal(n + 1)
    g, gd = RNG.standard_normal(n), RNG.standard_normal(n)
    adj, adt = np.zeros(n + 1), np.zeros(n + 1)
    x, y = buf[:-1], buf[1:]
    second_step(OP_CODE["mul"], n, 1, x, y, x * y, tan[:-1], tan[1:], g, gd,
                adj[:-1], adt[:-1], adj[1:], adt[1:])
    want_adj, want_adt = np.zeros(n + 1), np.zeros(n + 1)
    want_adj[:-1] += y * g
    want_adj[1:] += x * g
    want_adt[:-1] += y * gd + g * tan[1:]
    want_adt[1:] += x * gd + g * tan[:-1]
    close(adj, want_adj)
    close(adt, want_adt)
    # the same rows for both operands (x * x): x's assignment, then y's addition
    adj, adt = np.full(n, np.nan), np.full(n, np.nan)
    t = tan[:n].copy()
    second_step(OP_CODE["mul"], n, 1, x, x, x * x, t, t, g, gd, adj, adt, adj, adt, assign=3)
    close(adj, 2 * x * g)
    close(adt, 2 * x * gd + 2 * g * t)


def test_second_step_strong_zeros():
    # sqrt at 0: an inf partial and second partial, a zero adjoint and tangent
    n = 4
    x = np.array([0.0, 0.0, 1.0, 4.0])
    v = np.sqrt(x)
    g = np.array([0.0, 1.0, 1.0, 0.0])
    gd = np.zeros(n)
    tx = np.array([1.0, 0.0, 1.0, 1.0])
    adj, adt = np.zeros(n), np.zeros(n)
    with np.errstate(all="raise"):
        second_step(OP_CODE["sqrt"], n, 1, x, None, v, tx, None, g, gd, adj, adt, None, None)
    assert adj[0] == 0.0 and np.isinf(adj[1])         # 0 * inf is 0; 1 * inf stays inf
    assert adt[0] == 0.0 and adt[1] == 0.0            # zero g, zero tangent: exact zeros
    close(adt[2:], [-0.25, 0.0])


def test_value_tangent_and_tangent_one():
    n = 300
    x, y = RNG.uniform(0.5, 2.0, n), RNG.uniform(0.5, 2.0, n)
    tx, ty = RNG.standard_normal(n), RNG.standard_normal(n)
    v, t = np.empty(n), np.empty(n)
    assert value_tangent(OP_CODE["div"], n, x, y, tx, ty, v, t)
    close(v, x / y)
    close(t, tx / y - x / y ** 2 * ty)
    t2 = np.empty(n)
    assert tangent_one(OP_CODE["div"], n, x, y, x / y, tx, ty, t2)
    close(t2, t)
    assert value_tangent(OP_CODE["sub"], n, 1.0, y, None, ty, v, t)    # 1 - y
    close(v, 1.0 - y)
    close(t, -ty)
    assert value_tangent(OP_CODE["square"], n, x, None, tx, None, v, t)
    close(v, x * x)
    close(t, 2 * x * tx)
    # an op without a fast path says so and writes nothing
    v[:] = t[:] = 7.0
    assert not value_tangent(OP_CODE["arctan2"], n, x, y, tx, ty, v, t)
    assert not tangent_one(OP_CODE["arctan2"], n, x, y, v, tx, ty, t)
    assert (v == 7.0).all() and (t == 7.0).all()


def _hot_ops():
    """(name, op, binary) of the ops with one-lane fast paths (value_tangent
    accepts exactly those)."""
    from fastad._kernels import FLAG, OP_FLAGS, OP_NAMES
    out = []
    one = np.ones(1)
    for op, name in enumerate(OP_NAMES):
        fl = OP_FLAGS[op]
        if fl & (FLAG["CMP"] | FLAG["BLOCK"]) or not fl & (FLAG["BINARY"] | FLAG["UNARY"]):
            continue
        binary = bool(fl & FLAG["BINARY"])
        if value_tangent(op, 1, one, one if binary else None, one, one if binary else None,
                         np.empty(1), np.empty(1)):
            out.append((name, op, binary))
    return out


@pytest.mark.parametrize("name,op,binary", _hot_ops())
def test_one_lane_loops_match_the_general_loop(name, op, binary):
    # The one-lane loops (k = 1, operands on the tape) are compiled to SIMD
    # code; the general loop (k lanes) is scalar.  Lane 0 of a k = 2 run
    # with both lanes equal must match, special values included (strong
    # zeros, inf and NaN in the same places), over a length with a vector
    # body and a scalar tail.  (Up to rounding: the one-lane loops add the
    # old adjoint tangent first.)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -3.0, np.inf, -np.inf, np.nan, 1e-300])
    n = 3 * special.size + 4
    x = np.resize(special, n)
    y = np.resize(special[::-1], n) if binary else None
    tx, ty, g, gd = (RNG.standard_normal(n) for _ in range(4))
    g[::5] = 0.0
    gd[::7] = 0.0
    tx[::3] = 0.0
    ty[1::4] = np.inf
    with np.errstate(all="ignore"):
        v, t = np.empty(n), np.empty(n)
        assert value_tangent(op, n, x, y, tx, ty if binary else None, v, t)
        for assign in (0, 15):
            for first_order in (False, True):
                one = [RNG.standard_normal(n) for _ in range(4)]
                two = [np.repeat(a[:, None], 2, axis=1) for a in one]
                two[0], two[2] = one[0].copy(), one[2].copy()   # adj rows: one lane
                if not binary:
                    one[2] = one[3] = two[2] = two[3] = None
                if first_order:
                    one[1] = one[3] = two[1] = two[3] = None
                lane = (lambda a: None if a is None or first_order else
                        np.repeat(a[:, None], 2, axis=1))
                second_step(op, n, 1, x, y, v, None if first_order else tx,
                            None if first_order or not binary else ty, g,
                            None if first_order else gd, *one, assign=assign)
                second_step(op, n, 2, x, y, v, lane(tx), lane(ty) if binary else None, g,
                            lane(gd), *two, assign=assign)
                for a, b in zip(one, two):
                    if a is None:
                        continue
                    if b.ndim == 2:
                        np.testing.assert_array_equal(b[:, 0], b[:, 1])
                        b = b[:, 0]
                    close(a, b, rtol=1e-13, atol=1e-13)


def test_kernel_errors_name_what_is_wrong():
    n = 5
    a = np.zeros(n)
    with pytest.raises(ValueError, match="no op"):
        second_step(10_000, n, 1, a, None, a, a, None, a, a, a, a, None, None)
    with pytest.raises(ValueError, match="adj_x must be a C-contiguous float64 array of 5"):
        second_step(OP_CODE["square"], n, 1, a, None, a, a, None, a, a, np.zeros(4), a,
                    None, None)
    with pytest.raises(ValueError, match="adt rows need its adj rows"):
        second_step(OP_CODE["square"], n, 1, a, None, a, a, None, a, a, None, a, None, None)
    with pytest.raises(ValueError, match="g is required"):
        second_step(OP_CODE["square"], n, 1, a, None, a, a, None, None, a, a, a, None, None)
    with pytest.raises(ValueError, match="3 values for 5 elements"):
        second_step(OP_CODE["mul"], n, 1, a, np.zeros(3), a, a, None, a, a, a, a, None, None)
    with pytest.raises(ValueError, match="k = 0"):
        second_step(OP_CODE["square"], n, 0, a, None, a, a, None, a, a, a, a, None, None)
    with pytest.raises(ValueError, match="v_out and t_out are required"):
        value_tangent(OP_CODE["square"], n, a, None, a, None, None, a)
    with pytest.raises(ValueError, match="tangent_one: tx must be"):
        tangent_one(OP_CODE["square"], n, a, None, a, np.zeros(n, dtype=np.float32), None, a)


# ---------------------------------------------------------------- through tapes

def _rosen_vec(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _rosen_hvp(x, v):
    from scipy.optimize import rosen_hess_prod
    return rosen_hess_prod(x, v)


@pytest.mark.parametrize("n", [2, 3, 50])
def test_vectorized_rosenbrock_hvp_every_path(n):
    x = RNG.uniform(-1, 1, n)
    v = RNG.standard_normal(n)
    want = _rosen_hvp(x, v)
    tape = fad.record(_rosen_vec, x)
    close(fad.hvp(_rosen_vec, x, v), want, rtol=1e-11, atol=1e-11)     # recorded point
    x2 = RNG.uniform(-1, 1, n)
    close(tape.hvp(x2, v), _rosen_hvp(x2, v), rtol=1e-11, atol=1e-11)   # replayed
    close(tape.at(x2).hvp(v), _rosen_hvp(x2, v), rtol=1e-11, atol=1e-11)
    V = RNG.standard_normal((3, n))                                     # k lanes
    close(tape.hvp(x2, V), np.stack([_rosen_hvp(x2, w) for w in V]), rtol=1e-11, atol=1e-11)
    val, g, hv = tape.value_gradient_hvp(x2, v)
    from scipy.optimize import rosen, rosen_der
    close(val, rosen(x2))
    close(g, rosen_der(x2))
    close(hv, _rosen_hvp(x2, v), rtol=1e-11, atol=1e-11)


def _blocks_then_scalars(x):
    # a scalar node after the blocks (the run's tracking stops there), a
    # block used twice, one whose output nothing uses, x * x (one operand twice)
    a = np.sin(x) * x
    b = a * a
    dead = np.exp(x)        # noqa: F841  (on the tape, not in the output)
    s = np.sum(b + a[::-1] * 0.5)
    return s * s + x[0] * 3.0


def _blocks_then_scalars_grad(x):
    a = np.sin(x) * x
    da = np.cos(x) * x + np.sin(x)
    s = np.sum(a * a + a[::-1] * 0.5)
    ds = 2 * a * da + 0.5 * da            # d s / d x_i (a[::-1] sums the same elements)
    g = 2 * s * ds
    g[0] += 3.0
    return g


@pytest.mark.parametrize("n", [1, 7])
def test_hvp_through_blocks_and_scalar_nodes(n):
    x = RNG.uniform(-1, 1, n)
    v = RNG.standard_normal(n)
    H = fd_jacobian(_blocks_then_scalars_grad, x)
    fd_close(fad.hvp(_blocks_then_scalars, x, v), H @ v, scale_atol=True)
    tape = fad.record(_blocks_then_scalars, x)
    fd_close(tape.hvp(x, v), H @ v, scale_atol=True)
    fd_close(tape.hessian(x), H, scale_atol=True)


def _overlapping(x):
    y = x[:-1] * x[1:]                    # operands overlapping each other
    z = y * y + np.exp(x[1:]) * x[:-1]    # a block output consumed twice
    return np.sum(z / (2.0 + x[:-1] ** 2))


def test_hvp_overlapping_and_shared_operands_match_finite_differences():
    n = 9
    x = RNG.uniform(-1, 1, n)
    v = RNG.standard_normal(n)
    g = fad.grad(_overlapping)
    H = fd_jacobian(g, x)
    fd_close(fad.hvp(_overlapping, x, v), H @ v, scale_atol=True)
    tape = fad.record(_overlapping, x)
    x2 = x + 0.1
    H2 = fd_jacobian(g, x2)
    fd_close(tape.hvp(x2, v), H2 @ v, scale_atol=True)
    fd_close(tape.hvp(x2, np.stack([v, -2 * v])), np.stack([H2 @ v, -2 * H2 @ v]),
             scale_atol=True)


def _scalar_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        a = 1.0 - x[i]
        b = x[i + 1] - x[i] * x[i]
        s = s + a * a + 100.0 * (b * b)
    # ops off the threaded fast path too (arctan2, hypot), a constant, a comparison
    s = s + fad.arctan2(x[0], 2.0 + x[1] * x[1]) + fad.hypot(x[0], x[1])
    if x[0] > -5.0:
        s = s + 2.5
    return s


def _scalar_loop_grad(x):
    from scipy.optimize import rosen_der
    g = rosen_der(x).copy()
    x0, x1 = x[0], x[1]
    d = 2.0 + x1 * x1
    r = x0 * x0 + d * d
    g[0] += d / r + x0 / np.hypot(x0, x1)
    g[1] += -x0 * 2 * x1 / r + x1 / np.hypot(x0, x1)
    return g


def test_scalar_tape_hvp_one_pass_replay():
    n = 30
    x = RNG.uniform(-1, 1, n)
    v = RNG.standard_normal(n)
    tape = fad.record(_scalar_loop, x)
    x2 = RNG.uniform(-1, 1, n)
    H = fd_jacobian(_scalar_loop_grad, x2)
    fd_close(tape.hvp(x2, v), H @ v, scale_atol=True)
    fd_close(fad.hvp(_scalar_loop, x2, v), H @ v, scale_atol=True)
    val, g, hv = tape.value_gradient_hvp(x2, v)
    close(g, _scalar_loop_grad(x2), rtol=1e-10, atol=1e-10)
    # one direction and the same one among several agree to the last bit
    hv2 = tape.hvp(x2, np.stack([v, v]))
    np.testing.assert_array_equal(hv2[0], tape.hvp(x2, v))
    # the replay still checks the recorded comparison
    x3 = x2.copy()
    x3[0] = -6.0
    with pytest.raises(fad.BranchChangedError):
        tape.hvp(x3, v)
    fd_close(tape.hvp(x2, v), H @ v, scale_atol=True)        # and works after it


def test_scalar_hvp_zero_direction_and_repeated_calls_keep_buffers_clean():
    n = 20
    x = RNG.uniform(-1, 1, n)
    tape = fad.record(_scalar_loop, x)
    np.testing.assert_array_equal(tape.hvp(x, np.zeros(n)), np.zeros(n))
    v = RNG.standard_normal(n)
    first = tape.hvp(x, v)
    for _ in range(3):
        tape.gradient(x)
        np.testing.assert_array_equal(tape.hvp(x, v), first)
    vt = fad.record(_rosen_vec, x)
    first = vt.hvp(x, v)
    for _ in range(3):
        vt.gradient(x + 0.5)
        vt.hvp(x + 0.25, -v)
        np.testing.assert_array_equal(vt.hvp(x, v), first)
