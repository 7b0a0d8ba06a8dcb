"""Nested transforms (issue #17) with the rest of fastad: custom primitives
with only a vjp rule, the sparse routines, Tape methods called inside a
function being differentiated, and recordings of nested transforms replayed
at new points (branch and value-read checks, pickling).

Expected values as in test_nested.py (whose test functions this file shares):
derivatives written out by hand, or central finite differences of plain NumPy.
"""
import math
import pickle

import numpy as np
import pytest
from scipy.optimize import rosen_der, rosen_hess

import fastad as fad
from conftest import close, fd_close, fd_grad, fd_jacobian, rng_for, rosen_loop, rosen_vec
from test_nested import (RT, F, FA, fc, fc_grad, fc_hess, fc_third, fq, fq_grad, fq_hess, fq_third,
                         nest_grad, tanh_derivs)


# ---------------------------------------------------------------------------
# custom primitives with only a vjp rule
# ---------------------------------------------------------------------------

def make_lse():
    @fad.primitive
    def lse(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    @lse.defvjp
    def _(ybar, y, x):                    # ordinary NumPy code on its arguments
        return ybar * np.exp(x - y)
    return lse


def softmax_np(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def lse_hess(x):
    s = softmax_np(x)
    return np.diag(s) - np.outer(s, s)


X3 = np.array([0.2, -0.7, 1.1])


def test_vjp_only_primitive_in_forward_mode_and_second_order():
    lse = make_lse()
    v = np.array([1.0, -0.5, 2.0])
    s, H = softmax_np(X3), lse_hess(X3)
    close(fad.jacfwd(lse)(X3), s, **RT)
    close(fad.jvp(lse, X3, v)[1], s @ v, **RT)
    close(fad.hvp(lse, X3, v), H @ v, **RT)
    close(fad.hessian(lse)(X3), H, **RT)
    close(fad.jacfwd(fad.grad(lse))(X3), H, **RT)
    close(fad.grad(lambda x: fad.grad(lse)(x) @ v)(X3), H @ v, **RT)


def test_vjp_only_primitive_third_order():
    lse = make_lse()
    v, w = np.array([1.0, -0.5, 2.0]), np.array([0.3, 0.3, -1.0])
    got = fad.grad(lambda x: fad.grad(lambda y: fad.grad(lse)(y) @ v)(x) @ w)(X3)
    fd_close(got, fd_grad(lambda x: w @ lse_hess(x) @ v, X3), rtol=1e-7, atol=1e-8)
    got = fad.jacfwd(lambda x: fad.hvp(lse, x, v))(X3)
    fd_close(got, fd_jacobian(lambda x: lse_hess(x) @ v, X3), rtol=1e-7, atol=1e-8)


def test_vjp_only_primitive_vectorized_rule():
    @fad.primitive
    def lse(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    @lse.defvjp(vectorized=True)
    def _(ybar, y, x):                    # ybar: (k,) seeds
        return ybar[:, None] * np.exp(x - y)

    v = np.array([1.0, -0.5, 2.0])
    close(fad.hvp(lse, X3, v), lse_hess(X3) @ v, **RT)
    close(fad.jacfwd(fad.grad(lse))(X3), lse_hess(X3), **RT)


def test_vjp_only_vector_primitive_under_jacfwd():
    @fad.primitive
    def softmax(x):
        return softmax_np(x)

    @softmax.defvjp
    def _(ybar, y, x):
        return y * (ybar - np.sum(ybar * y))

    close(fad.jacfwd(softmax)(X3), lse_hess(X3), **RT)
    close(fad.jacrev(softmax)(X3), lse_hess(X3), **RT)
    # second order through the rule: d/dx [softmax(x) . c]^2 ... by finite differences
    c = np.array([1.0, 2.0, -1.0])
    got = fad.hessian(lambda x: (softmax(x) @ c) ** 2)(X3)
    ref = fd_jacobian(lambda x: 2 * (softmax_np(x) @ c) * (lse_hess(x) @ c), X3)
    fd_close(got, ref, rtol=1e-7, atol=1e-8)


def test_vjp_only_primitives_with_scalar_rules_to_fourth_order():
    @fad.primitive
    def cube(x):
        return x ** 3

    @cube.defvjp
    def _(ybar, y, x):
        return ybar * 3.0 * x ** 2

    @fad.primitive
    def myexp(x):
        return np.exp(x)

    @myexp.defvjp
    def _(ybar, y, x):                    # uses the output: y must be traced too
        return ybar * y

    x = 0.8
    for k, d in enumerate([x ** 3, 3 * x ** 2, 6 * x, 6.0, 0.0]):
        if k:
            close(nest_grad(cube, k)(x), d, **RT)
            close(nest_grad(myexp, k)(x), math.exp(x), **RT)
    close(fad.hessian(myexp)(x), math.exp(x), **RT)


def test_vjp_only_primitive_of_two_arguments():
    @fad.primitive
    def scaled_sin(a, b):
        return a * np.sin(b)

    @scaled_sin.defvjp
    def _(ybar, y, a, b):
        return ybar * np.sin(b), ybar * a * np.cos(b)

    def f(z):
        return fad.sum(scaled_sin(z[:2], z[2:]))

    z = np.array([0.5, -1.5, 0.3, 2.0])
    a, b = z[:2], z[2:]
    H = np.zeros((4, 4))
    H[[0, 1], [2, 3]] = H[[2, 3], [0, 1]] = np.cos(b)
    H[[2, 3], [2, 3]] = -a * np.sin(b)
    close(fad.hessian(f)(z), H, **RT)
    close(fad.jacfwd(fad.grad(f))(z), H, **RT)
    close(fad.hvp(f, z, np.ones(4)), H @ np.ones(4), **RT)


def test_primitive_without_rules_names_itself_when_nested():
    @fad.primitive
    def norules(x):
        return x * 2.0

    with pytest.raises(Exception, match="norules") as info:
        fad.grad(fad.grad(norules))(1.0)
    assert "vjp" in str(info.value)
    with pytest.raises(Exception, match="norules"):
        fad.hvp(norules, 1.0, 1.0)


# ---------------------------------------------------------------------------
# sparse routines of functions that use an inner grad
# ---------------------------------------------------------------------------

def test_sparse_jacobian_of_a_gradient_is_the_hessian():
    x = rng_for("sparse-jac-grad").uniform(-1, 1, 12)
    S = fad.sparse_jacobian(fad.grad(rosen_loop))(x)
    assert S.format == "csr"
    close(S.toarray(), rosen_hess(x), **RT)


def test_sparsity_of_a_gradient_is_the_hessian_band():
    """A dense pattern would still give right numbers, but no sparsity: the
    pattern of a nested gradient should be as tight as fad.hessian_sparsity's."""
    x = rng_for("sparsity-grad").uniform(-1, 1, 12)
    P = fad.jacobian_sparsity(fad.grad(rosen_loop))(x).toarray()
    assert np.array_equal(P, np.abs(np.arange(12)[:, None] - np.arange(12)[None, :]) <= 1)


def test_sparse_hessian_of_a_function_using_grad():
    n = 12
    x = rng_for("sparse-hess-grad").uniform(-1, 1, n)
    # phi = |grad rosen|^2 / 2, grad phi = H g; its Hessian is pentadiagonal
    S = fad.sparse_hessian(lambda z: 0.5 * fad.sum(fad.grad(rosen_vec)(z) ** 2))(x)
    assert S.format == "csr"
    ref = fd_jacobian(lambda z: rosen_hess(z) @ rosen_der(z), x)
    fd_close(S.toarray(), 0.5 * (ref + ref.T), rtol=1e-6, atol=1e-6, scale_atol=True)
    band = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= 2
    assert not np.any(S.toarray()[~band])


SPARSE_INSIDE = {
    "fad.sparse_jacobian": lambda tape, z: fad.sparse_jacobian(F)(z),
    "fad.sparse_hessian": lambda tape, z: fad.sparse_hessian(lambda t: fad.sum(fad.sin(FA @ t)))(z),
    "tape.sparse_jacobian": lambda tape, z: tape.sparse_jacobian(z),
}


@pytest.mark.parametrize("call", list(SPARSE_INSIDE))
def test_sparse_routines_inside_grad_work_or_name_themselves(call):
    """A sparse result inside a function being differentiated: the right
    gradient, or an error that names the routine (never a stale message)."""
    tape = fad.record(F, np.zeros(4))
    x = np.array([0.3, -0.8, 1.1, 0.2])
    name = call.split(".")[1]
    if name == "sparse_jacobian":        # sum of J = diag(cos z) A
        ref = fd_grad(lambda z: np.sum(np.cos(FA @ z)[:, None] * FA), x)
    else:                                # sum of H = -A^T diag(sin z) A
        ref = fd_grad(lambda z: np.sum(FA.T @ (-np.sin(FA @ z)[:, None] * FA)), x)
    try:
        got = fad.grad(lambda z: fad.sum(SPARSE_INSIDE[call](tape, z).toarray()))(x)
    except Exception as e:               # noqa: BLE001 - any type, if it says what
        assert name in str(e), str(e)
    else:
        fd_close(got, ref, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------
# Tape methods inside transforms
# ---------------------------------------------------------------------------

def test_tape_methods_inside_grad():
    x0 = np.array([0.1, 0.2, 0.3])
    tape = fad.record(fq, x0)
    rng = rng_for("tape-inside")
    x1, v, w = rng.uniform(-1, 1, 3), rng.standard_normal(3), rng.standard_normal(3)
    H, T = fq_hess(x1), fq_third(x1)
    close(fad.grad(lambda x: tape(x))(x1), fq_grad(x1), **RT)
    close(fad.grad(lambda x: tape.gradient(x) @ w)(x1), H @ w, **RT)
    close(fad.jacfwd(tape.gradient)(x1), H, **RT)
    close(fad.jacrev(tape.gradient)(x1), H, **RT)
    close(fad.grad(lambda x: tape.value_and_gradient(x)[1] @ w)(x1), H @ w, **RT)
    # (g . v)^2 -> 2 (g . v) H v
    close(fad.grad(lambda x: tape.jvp(x, v) ** 2)(x1), 2 * (fq_grad(x1) @ v) * (H @ v), **RT)
    close(fad.grad(lambda x: tape.hvp(x, v) @ w)(x1), np.einsum("ijk,i,j->k", T, v, w), **RT)
    close(fad.jacfwd(lambda x: tape.hessian(x))(x1), T, **RT)


def test_vector_tape_jacobian_inside_grad():
    x0 = np.zeros(4)
    tape = fad.record(F, x0)
    x1 = np.array([0.3, -0.8, 1.1, 0.2])
    z = FA @ x1
    rown = np.sum(FA ** 2, axis=1)
    # |J|_F^2 = sum_i cos^2(z_i) |A_i|^2
    close(fad.grad(lambda x: fad.sum(tape.jacobian(x) ** 2))(x1), FA.T @ (-np.sin(2 * z) * rown), **RT)
    u = np.array([1.0, -1.0, 0.5])
    close(fad.jacfwd(lambda x: tape.vjp(x, u))(x1), FA.T @ np.diag(-np.sin(z) * u) @ FA, **RT)


def test_stacked_tape_seeds_inside_grad():
    tape = fad.record(F, np.zeros(4))
    x = np.array([0.3, -0.8, 1.1, 0.2])
    U = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    V = np.array([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, -1.0, 0.5]])

    def jac_np(z):
        return np.cos(FA @ z)[:, None] * FA

    fd_close(fad.grad(lambda z: fad.sum(tape.vjp(z, U)))(x),
             fd_grad(lambda z: np.sum(U.sum(0) @ jac_np(z)), x), rtol=1e-7, atol=1e-8)
    fd_close(fad.grad(lambda z: fad.sum(tape.jvp(z, V)))(x),
             fd_grad(lambda z: np.sum(jac_np(z) @ V.sum(0)), x), rtol=1e-7, atol=1e-8)


def test_tape_with_a_branch_used_inside_grad():
    def branchy(x):
        if x[0] > 0:
            return x[0] ** 3 * x[1]
        return -x[0] * x[1] ** 3

    tape = fad.record(branchy, np.array([1.0, 1.0]))
    p = np.array([0.5, 2.0])
    # Hessian of x0^3 x1 times (1, 1)
    close(fad.grad(lambda x: tape.gradient(x) @ np.ones(2))(p),
          np.array([6 * p[0] * p[1] + 3 * p[0] ** 2, 3 * p[0] ** 2]), **RT)
    with pytest.raises(fad.BranchChangedError):
        fad.grad(lambda x: tape.gradient(x) @ np.ones(2))(np.array([-0.5, 2.0]))
    close(fad.grad(lambda x: tape(x))(p), [3 * p[0] ** 2 * p[1], p[0] ** 3], **RT)


# ---------------------------------------------------------------------------
# recordings of nested transforms, replayed (with branch checks, pickled)
# ---------------------------------------------------------------------------

def test_record_of_a_gradient_replays_at_new_points():
    tape = fad.record(lambda x: fad.grad(fq)(x), np.array([0.1, 0.2, 0.3]))
    assert tape.n_inputs == 3 and tape.n_outputs == 3
    rng = rng_for("record-grad")
    for _ in range(3):
        x, v, u = rng.uniform(-1, 1, 3), rng.standard_normal(3), rng.standard_normal(3)
        H = fq_hess(x)
        close(tape(x), fq_grad(x), **RT)
        close(tape.jacobian(x), H, **RT)
        close(tape.jacobian(x, mode="fwd"), H, **RT)
        close(tape.jvp(x, v), H @ v, **RT)
        close(tape.vjp(x, u), u @ H, **RT)


def test_record_of_a_scalar_gradient_and_its_derivatives():
    tape = fad.record(lambda x: fad.grad(fad.tanh)(x), 0.3)
    for x in (-1.0, 0.7, 2.0):
        d = tanh_derivs(x)
        close(tape(x), d[1], **RT)
        close(tape.gradient(x), d[2], **RT)
        close(tape.hessian(x), d[3], **RT)


def test_record_of_a_directional_gradient_replays_to_third_order():
    w = np.array([1.0, -2.0, 0.5, 0.25])
    tape = fad.record(lambda x: fad.grad(fc)(x) @ w, np.zeros(4))
    rng = rng_for("record-third")
    for _ in range(3):
        x, v = rng.uniform(-1, 1, 4), rng.standard_normal(4)
        Tw = np.einsum("ijk,i->jk", fc_third(x), w)
        close(tape(x), fc_grad(x) @ w, **RT)
        close(tape.gradient(x), fc_hess(x) @ w, **RT)
        val, g = tape.value_and_gradient(x)
        close(val, fc_grad(x) @ w, **RT)
        close(g, fc_hess(x) @ w, **RT)
        close(tape.hvp(x, v), Tw @ v, **RT)
        close(tape.hessian(x), Tw, **RT)


def branchy(x):
    if x[0] > 0:
        return x[0] ** 3 * x[1]
    return -x[0] * x[1] ** 3


def branchy_grad(p):
    if p[0] > 0:
        return np.array([3 * p[0] ** 2 * p[1], p[0] ** 3])
    return np.array([-p[1] ** 3, -3 * p[0] * p[1] ** 2])


def test_branch_inside_the_inner_function_is_checked_on_replay():
    tape = fad.record(lambda x: fad.grad(branchy)(x), np.array([1.5, 0.7]))
    good, bad = np.array([0.5, 2.0]), np.array([-0.5, 2.0])
    close(tape(good), branchy_grad(good), **RT)
    for call in (lambda: tape(bad), lambda: tape.jacobian(bad), lambda: tape.jvp(bad, np.ones(2))):
        with pytest.raises(fad.BranchChangedError):
            call()
    close(tape(good), branchy_grad(good), **RT)          # still usable
    close(tape.jacobian(good), [[6 * good[0] * good[1], 3 * good[0] ** 2],
                                [3 * good[0] ** 2, 0.0]], **RT)


def test_branch_on_an_inner_gradient_is_checked_on_replay():
    def outer(x):
        g = fad.grad(lambda t: fad.sum(fad.sin(t)))(x)        # cos(x)
        if g[0] > 0:
            return g[0] * g[1]
        return g[0] + g[1]

    tape = fad.record(outer, np.array([0.5, 0.3]))
    p = np.array([0.2, -1.0])
    close(tape(p), math.cos(p[0]) * math.cos(p[1]), **RT)
    close(tape.gradient(p), [-math.sin(p[0]) * math.cos(p[1]), -math.cos(p[0]) * math.sin(p[1])], **RT)
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(np.array([2.5, 0.3]))               # cos(2.5) < 0


def test_value_read_in_a_nested_recording_is_never_replayed_silently():
    def inner(y):             # reads a concrete value of the inner variable
        if y.value[0] > 0:
            return fad.sum(y ** 3)
        return fad.sum(y)

    def outer(x):             # reads a concrete value of an inner gradient
        g = fad.grad(lambda t: fad.sum(t ** 3))(x)
        return fad.sum(x * g.value)

    p = np.array([-0.7, 1.0])
    for f in (lambda x: fad.grad(inner)(x), outer):
        tape = fad.record(f, np.array([0.5, 1.0]))
        with pytest.raises(fad.ValueReadError):
            tape(p)
        assert issubclass(fad.ValueReadError, fad.TapeError)


def test_pickled_nested_tapes_replay_the_same():
    w = np.array([1.0, -2.0, 0.5, 0.25])
    tapes = [fad.record(lambda x: fad.grad(fc)(x) @ w, np.zeros(4)),
             fad.record(lambda x: fad.grad(fq)(x[:3]) @ x[1:], np.full(4, 0.1)),
             fad.record(lambda x: fad.grad(branchy)(x[:2]) @ np.ones(2) + x[0] * x[2] * x[3],
                        np.array([1.5, 0.7, 0.2, 0.3]))]
    rng = rng_for("pickle")
    for tape in tapes:
        copy = pickle.loads(pickle.dumps(tape))
        assert len(copy) == len(tape)
        for _ in range(2):
            x, v = rng.uniform(0.1, 1, 4), rng.standard_normal(4)
            close(copy(x), tape(x), rtol=1e-14, atol=1e-14)
            close(copy.gradient(x), tape.gradient(x), rtol=1e-14, atol=1e-14)
            close(copy.hvp(x, v), tape.hvp(x, v), rtol=1e-14, atol=1e-14)
    x = np.array([0.4, 0.9, 0.3, 0.6])
    close(pickle.loads(pickle.dumps(tapes[0])).gradient(x), fc_hess(x) @ w, **RT)
    copy = pickle.loads(pickle.dumps(tapes[2]))
    with pytest.raises(fad.BranchChangedError):
        copy.gradient(np.array([-0.5, 0.7, 0.2, 0.3]))


def test_nested_argument_from_another_recording_is_named():
    kept = []

    def f(x):
        kept.append(x)
        return x * x
    fad.grad(f)(1.0)                      # kept[0]: a Var of a recording that has ended
    with pytest.raises(fad.TapeError, match="argument of a nested transform is a Var of "
                                            "another recording"):
        fad.grad(lambda y: fad.grad(lambda z: z * z)(kept[0]) * y)(2.0)
    assert fad.grad(fad.grad(lambda z: z ** 3))(2.0) == pytest.approx(12.0)   # still works
