"""Nested transforms (issue #17): every transform composes with every other.

grad(grad(f)) to the eighth order, mixed partials, Hessians and third and
fourth derivatives as compositions (jacfwd(jacrev(f)), hessian(grad ...)),
jvp/vjp and their pullbacks composed, perturbation confusion, nesting over
Arrays and block operations (physics-informed losses over a network's
weights), pytrees, has_aux, several threads at once, and the errors.
Primitives, sparse routines, Tape methods inside transforms and replayed
nested recordings: test_nested_integration.py.

Every expected value is independent of fastad: a derivative written out by
hand, or central finite differences of a plain-NumPy function (conftest).
Where a result is also compared with fad.hessian, that is a second check,
never the only one.
"""
import math

import numpy as np
import pytest
from scipy.optimize import rosen_hess

import fastad as fad
from conftest import (close, fd_close, fd_grad, fd_grad_leaves, fd_jacobian, rng_for, rosen_loop,
                      rosen_vec, run_in_threads)

RT = dict(rtol=1e-10, atol=1e-10)       # exact AD against a formula, up to rounding


def nest_grad(f, k):
    """grad applied k times."""
    for _ in range(k):
        f = fad.grad(f)
    return f


# ---------------------------------------------------------------------------
# orders 1-4 of scalar functions by nesting grad
# ---------------------------------------------------------------------------

def tanh_derivs(x):
    t = math.tanh(x)
    s = 1.0 - t * t
    return [t, s, -2.0 * t * s, s * (6.0 * t * t - 2.0), 8.0 * t * s * (2.0 - 3.0 * t * t)]


def exp_derivs(x):
    return [math.exp(x)] * 5


def rational_derivs(x):
    # (x^2 + 3) / (x + 1) = x - 1 + 4 / (x + 1)
    u = x + 1.0
    out = [(x * x + 3.0) / u, 1.0 - 4.0 / u ** 2]
    for k in (2, 3, 4):
        out.append(4.0 * (-1) ** k * math.factorial(k) / u ** (k + 1))
    return out


def pow35_derivs(x):
    out, c, p = [], 1.0, 3.5
    for k in range(5):
        out.append(c * x ** (p - k))
        c *= p - k
    return out


def sinexp_derivs(x):
    # (e^x sin x)^(k) = 2^(k/2) e^x sin(x + k pi/4)
    return [2.0 ** (k / 2) * math.exp(x) * math.sin(x + k * math.pi / 4) for k in range(5)]


SCALAR_CASES = {
    "tanh": (fad.tanh, tanh_derivs, [-2.0, -0.6, 0.0, 0.35, 1.4]),
    "exp": (fad.exp, exp_derivs, [-1.5, 0.0, 0.8]),
    "rational": (lambda x: (x * x + 3.0) / (x + 1.0), rational_derivs, [-3.0, -0.5, 0.7, 2.5]),
    "pow3.5": (lambda x: x ** 3.5, pow35_derivs, [0.4, 1.0, 2.3]),
    "sin*exp": (lambda x: fad.sin(x) * fad.exp(x), sinexp_derivs, [-1.3, -0.2, 0.9, 2.0]),
}


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", list(SCALAR_CASES))
def test_scalar_derivatives_by_nested_grad(name, order):
    f, derivs, points = SCALAR_CASES[name]
    df = nest_grad(f, order)
    for x in points:
        got = df(x)
        close(got, derivs(x)[order], **RT)


def test_nested_grad_of_a_float_returns_a_float():
    g2 = fad.grad(fad.grad(fad.tanh))(0.3)
    assert isinstance(g2, float), type(g2)
    close(g2, tanh_derivs(0.3)[2], **RT)


def test_eighth_derivative_of_sin():
    d = nest_grad(fad.sin, 8)
    for x in (0.3, -1.2):
        close(d(x), math.sin(x), **RT)
    close(nest_grad(fad.sin, 6)(0.3), -math.sin(0.3), **RT)


def test_inner_grad_returns_traced_values():
    """An inner grad hands back values the outer transform differentiates."""
    seen = []

    def f(x):
        g = fad.grad(lambda y: y ** 3)(x)
        seen.append(isinstance(g, (fad.Var, fad.Array)))
        return g

    close(fad.grad(f)(2.0), 12.0, **RT)
    assert seen == [True]


def test_value_and_grad_and_jvp_of_grad_scalar():
    x = 0.7
    d = tanh_derivs(x)
    v, g = fad.value_and_grad(fad.grad(fad.tanh))(x)
    close(v, d[1], **RT)
    close(g, d[2], **RT)
    y, t = fad.jvp(fad.grad(fad.tanh), x, 2.0)
    close(y, d[1], **RT)
    close(t, 2.0 * d[2], **RT)
    close(fad.hessian(fad.grad(fad.tanh))(x), d[3], **RT)


# ---------------------------------------------------------------------------
# mixed partials in several variables
# ---------------------------------------------------------------------------

def f2(x, y):
    return fad.sin(x * y) + x ** 2 * y ** 3


def f2_partials(x, y):
    s, c = math.sin(x * y), math.cos(x * y)
    return dict(
        fxx=-y * y * s + 2 * y ** 3,
        fxy=c - x * y * s + 6 * x * y * y,
        fyy=-x * x * s + 6 * x * x * y,
        fxyy=-2 * x * s - x * x * y * c + 12 * x * y,
    )


@pytest.mark.parametrize("x, y", [(0.4, 1.3), (-1.1, 0.6), (2.0, -0.5)])
def test_mixed_partials_by_argnums(x, y):
    p = f2_partials(x, y)
    close(fad.grad(fad.grad(f2, 0), 1)(x, y), p["fxy"], **RT)
    close(fad.grad(fad.grad(f2, 1), 0)(x, y), p["fxy"], **RT)
    close(fad.grad(fad.grad(f2, 0), 0)(x, y), p["fxx"], **RT)
    close(fad.grad(fad.grad(f2, 1), 1)(x, y), p["fyy"], **RT)
    gxx, gxy = fad.grad(fad.grad(f2, 0), argnums=(0, 1))(x, y)
    close(gxx, p["fxx"], **RT)
    close(gxy, p["fxy"], **RT)
    hxy, hyy = fad.grad(lambda a, b: fad.grad(f2, argnums=(0, 1))(a, b)[1], argnums=(0, 1))(x, y)
    close(hxy, p["fxy"], **RT)
    close(hyy, p["fyy"], **RT)
    close(fad.grad(fad.grad(fad.grad(f2, 0), 1), 1)(x, y), p["fxyy"], **RT)


# fq: exp(a.x) + x^T A x / 2 + sum(x^4) / 4, with A not symmetric
QA = np.array([0.3, -0.5, 0.8])
QM = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.4, 0.7, 1.0]])


def fq(x):
    return fad.exp(x @ QA) + 0.5 * (x @ (QM @ x)) + fad.sum(x ** 4) / 4.0


def fq_grad(x):
    return math.exp(x @ QA) * QA + 0.5 * (QM + QM.T) @ x + x ** 3


def fq_hess(x):
    return math.exp(x @ QA) * np.outer(QA, QA) + 0.5 * (QM + QM.T) + np.diag(3 * x ** 2)


def fq_third(x):
    T = math.exp(x @ QA) * np.einsum("i,j,k->ijk", QA, QA, QA)
    T[np.arange(3), np.arange(3), np.arange(3)] += 6 * x
    return T


def test_grad_of_gradient_dot_v_is_hessian_times_v():
    rng = rng_for("grad-dot-v")
    for _ in range(3):
        x, v = rng.uniform(-1, 1, 3), rng.standard_normal(3)
        close(fad.grad(lambda z: fad.grad(fq)(z) @ v)(x), fq_hess(x) @ v, **RT)


def test_mixed_partials_of_two_array_arguments():
    def f(a, b):
        return fad.sum(fad.tanh(a * b)) + (a @ b) ** 2

    def grad_a_np(a, b):
        return b * (1 - np.tanh(a * b) ** 2) + 2 * (a @ b) * b

    rng = rng_for("two-arrays")
    a, b, u = rng.uniform(-1, 1, 4), rng.uniform(-1, 1, 4), rng.standard_normal(4)
    got = fad.grad(lambda bb: fad.grad(f, 0)(a, bb) @ u)(b)
    fd_close(got, fd_grad(lambda bb: grad_a_np(a, bb) @ u, b), rtol=1e-7, atol=1e-8)
    ga, gb = fad.grad(lambda aa, bb: fad.grad(f, 0)(aa, bb) @ u, argnums=(0, 1))(a, b)
    fd_close(ga, fd_grad(lambda aa: grad_a_np(aa, b) @ u, a), rtol=1e-7, atol=1e-8)
    fd_close(gb, got, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Hessians as compositions of first-order transforms
# ---------------------------------------------------------------------------

COMPOSITIONS = {
    "jacfwd(jacrev)": lambda f: fad.jacfwd(fad.jacrev(f)),
    "jacrev(jacfwd)": lambda f: fad.jacrev(fad.jacfwd(f)),
    "jacfwd(grad)": lambda f: fad.jacfwd(fad.grad(f)),
    "jacrev(grad)": lambda f: fad.jacrev(fad.grad(f)),
    "jacobian(grad)": lambda f: fad.jacobian(fad.grad(f)),
    "jacobian fwd(rev)": lambda f: fad.jacobian(fad.jacobian(f, mode="rev"), mode="fwd"),
}

HESS_CASES = {
    "fq": (fq, fq_hess, 3),
    "rosen loop": (rosen_loop, rosen_hess, 6),
    "rosen vec": (rosen_vec, rosen_hess, 6),
}


@pytest.mark.parametrize("case", list(HESS_CASES))
@pytest.mark.parametrize("comp", list(COMPOSITIONS))
def test_composed_hessian(comp, case):
    f, hess, n = HESS_CASES[case]
    x = rng_for(comp, case).uniform(-1.2, 1.2, n)
    H = COMPOSITIONS[comp](f)(x)
    assert np.shape(H) == (n, n)
    close(H, hess(x), **RT)
    close(H, fad.hessian(f)(x), **RT)


# fc: a symmetric cubic form plus sum(x^4) / 12: third derivative C_ijk + 2 x_i [i=j=k]
_rng = np.random.default_rng(17)
_C = _rng.standard_normal((4, 4, 4))
CC = sum(np.transpose(_C, p) for p in
         [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6.0


def fc(x):
    return x @ ((CC @ x) @ x) / 6.0 + fad.sum(x ** 4) / 12.0


def fc_grad(x):
    return np.einsum("ijk,j,k->i", CC, x, x) / 2.0 + x ** 3 / 3.0


def fc_hess(x):
    return CC @ x + np.diag(x ** 2)


def fc_third(x):
    T = CC.copy()
    T[np.arange(4), np.arange(4), np.arange(4)] += 2 * x
    return T


def test_third_derivative_tensors():
    x = np.array([0.5, -1.0, 0.3, 1.2])
    w = np.array([1.0, -2.0, 0.5, 0.25])
    T = fc_third(x)
    close(fad.jacfwd(fad.hessian(fc))(x), T, **RT)
    close(fad.jacfwd(fad.jacfwd(fad.grad(fc)))(x), T, **RT)
    close(fad.jacrev(fad.jacrev(fad.grad(fc)))(x), T, **RT)
    close(fad.hessian(lambda z: fad.grad(fc)(z) @ w)(x), np.einsum("ijk,i->jk", T, w), **RT)


def test_fourth_derivative_tensor():
    x = np.array([0.5, -1.0, 0.3, 1.2])
    Q = np.zeros((4,) * 4)
    Q[np.arange(4), np.arange(4), np.arange(4), np.arange(4)] = 2.0
    close(fad.jacfwd(fad.jacfwd(fad.hessian(fc)))(x), Q, **RT)
    close(fad.jacrev(fad.jacfwd(fad.jacrev(fad.grad(fc))))(x), Q, **RT)


def test_hvp_of_functions_that_use_grad():
    rng = rng_for("hvp-of-grad")
    x, v, w = rng.uniform(-1, 1, 4), rng.standard_normal(4), rng.standard_normal(4)
    T, H, g = fc_third(x), fc_hess(x), fc_grad(x)
    close(fad.hvp(lambda z: fad.grad(fc)(z) @ w, x, v), np.einsum("ijk,i,j->k", T, w, v), **RT)
    # phi = |grad fc|^2 / 2: Hessian H H + sum_k g_k T_k
    phi = lambda z: 0.5 * fad.sum(fad.grad(fc)(z) ** 2)   # noqa: E731
    Hphi = H @ H + np.einsum("k,kij->ij", g, T)
    close(fad.hvp(phi, x, v), Hphi @ v, **RT)
    V = rng.standard_normal((3, 4))             # k directions at once
    close(fad.hvp(phi, x, V), V @ Hphi, **RT)
    close(fad.hessian(phi)(x), Hphi, **RT)


# ---------------------------------------------------------------------------
# jvp and vjp composed
# ---------------------------------------------------------------------------

FA = np.array([[0.5, -1.0, 0.3, 0.0], [1.2, 0.4, -0.7, 0.9], [-0.3, 0.8, 0.6, -1.1]])


def F(x):               # R^4 -> R^3, J = diag(cos(A x)) A
    return fad.sin(FA @ x)


@pytest.mark.parametrize("comp", ["jacfwd(jacrev)", "jacrev(jacrev)", "jacfwd(jacfwd)", "jacrev(jacfwd)"])
def test_second_derivative_of_a_vector_function(comp):
    outer, inner = comp[:-1].split("(")
    x = np.array([0.3, -0.8, 1.1, 0.2])
    z = FA @ x
    # d^2 sin(A x)_i / dx_j dx_k = -sin(z_i) A_ij A_ik
    T = -np.sin(z)[:, None, None] * FA[:, :, None] * FA[:, None, :]
    got = getattr(fad, outer)(getattr(fad, inner)(F))(x)
    assert got.shape == (3, 4, 4)
    close(got, T, **RT)


def test_jvp_of_grad_is_hessian_vector_product():
    rng = rng_for("jvp-grad")
    x, v = rng.uniform(-1, 1, 3), rng.standard_normal(3)
    g, Hv = fad.jvp(fad.grad(fq), x, v)
    close(g, fq_grad(x), **RT)
    close(Hv, fq_hess(x) @ v, **RT)
    V = rng.standard_normal((2, 3))
    g, HV = fad.jvp(fad.grad(fq), x, V)
    close(HV, V @ fq_hess(x), **RT)


def test_jvp_of_jvp_is_second_directional_derivative():
    x, v = np.array([0.2, -0.4, 0.9]), np.array([1.0, 0.5, -2.0])
    _, vHv = fad.jvp(lambda z: fad.jvp(fq, z, v)[1], x, v)
    close(vHv, v @ fq_hess(x) @ v, **RT)


def test_vjp_of_a_jvp():
    rng = rng_for("vjp-jvp")
    x, v, u = rng.uniform(-1, 1, 4), rng.standard_normal(4), rng.standard_normal(3)
    z = FA @ x
    y, pullback = fad.vjp(lambda t: fad.jvp(F, t, v)[1], x)
    close(y, np.cos(z) * (FA @ v), **RT)                    # J v
    close(pullback(u), FA.T @ (-u * np.sin(z) * (FA @ v)), **RT)
    U = rng.standard_normal((2, 3))
    close(pullback(U), np.stack([pullback(U[0]), pullback(U[1])]), **RT)


def test_jvp_of_a_pullback():
    rng = rng_for("jvp-vjp")
    x, v, u = rng.uniform(-1, 1, 4), rng.standard_normal(4), rng.standard_normal(3)
    z = FA @ x

    def JTu(t):
        return fad.vjp(F, t)[1](u)

    y, t = fad.jvp(JTu, x, v)
    close(y, FA.T @ (np.cos(z) * u), **RT)
    close(t, FA.T @ (-np.sin(z) * u * (FA @ v)), **RT)


def test_transforms_of_the_pullback_itself():
    """A pullback from fad.vjp is linear in its cotangent: its Jacobian is J^T."""
    x = np.array([0.3, -0.8, 1.1, 0.2])
    J = np.cos(FA @ x)[:, None] * FA
    _, pullback = fad.vjp(F, x)
    close(fad.jacfwd(pullback)(np.ones(3)), J.T, **RT)
    close(fad.jacrev(pullback)(np.ones(3)), J.T, **RT)
    w = np.array([0.5, 1.0, -1.0, 2.0])
    close(fad.grad(lambda u: pullback(u) @ w)(np.zeros(3)), J @ w, **RT)


def test_stacked_seeds_and_directions_inside_grad():
    """k seeds or directions at once (the contract's (k,) + shape) inside an outer transform."""
    x = np.array([0.3, -0.8, 1.1, 0.2])
    U = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    V = np.array([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, -1.0, 0.5]])

    def jac_np(z):
        return np.cos(FA @ z)[:, None] * FA

    # sum over seeds of U_k J = (sum_k U_k) J, likewise J V_k
    fd_close(fad.grad(lambda z: fad.sum(fad.vjp(F, z)[1](U)))(x),
             fd_grad(lambda z: np.sum(U.sum(0) @ jac_np(z)), x), rtol=1e-7, atol=1e-8)
    fd_close(fad.grad(lambda z: fad.sum(fad.jvp(F, z, V)[1]))(x),
             fd_grad(lambda z: np.sum(jac_np(z) @ V.sum(0)), x), rtol=1e-7, atol=1e-8)
    # sum of hvp(f, z, e_i) over all i = H 1: its gradient is the third derivative contracted twice
    y = np.array([0.2, -0.4, 0.9])
    close(fad.grad(lambda z: fad.sum(fad.hvp(fq, z, np.eye(3))))(y),
          np.einsum("ijk->k", fq_third(y)), **RT)


def test_grad_of_value_and_grad():
    x = 0.6
    d = sinexp_derivs(x)
    # d/dx [f(x) f'(x)] = f'^2 + f f''
    got = fad.grad(lambda t: fad.value_and_grad(lambda s: fad.sin(s) * fad.exp(s))(t)[0]
                   * fad.value_and_grad(lambda s: fad.sin(s) * fad.exp(s))(t)[1])(x)
    close(got, d[1] ** 2 + d[0] * d[2], **RT)


# ---------------------------------------------------------------------------
# perturbation confusion (Siskind & Pearlmutter 2005; Manzyuk et al. 2019)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("x0", [1.0, -2.5, 0.0, 7.0])
def test_classic_perturbation_confusion(x0):
    # D (lambda x. x * (D (lambda y. x + y) 1)) x0 = 1, not 2
    close(fad.grad(lambda x: x * fad.grad(lambda y: x + y)(1.0))(x0), 1.0, **RT)
    # the same in forward mode, and mixed
    close(fad.jvp(lambda x: x * fad.jvp(lambda y: x + y, 1.0, 1.0)[1], x0, 1.0)[1], 1.0, **RT)
    close(fad.grad(lambda x: x * fad.jvp(lambda y: x + y, 1.0, 1.0)[1])(x0), 1.0, **RT)
    close(fad.jvp(lambda x: x * fad.grad(lambda y: x + y)(1.0), x0, 1.0)[1], 1.0, **RT)
    close(fad.jacfwd(lambda x: x * fad.jacrev(lambda y: x + y)(1.0))(x0), 1.0, **RT)


@pytest.mark.parametrize("x0", [1.0, -0.7, 3.0])
def test_closures_over_the_outer_variable(x0):
    # D (lambda x. D (x *) 2) x0 = 1
    close(fad.grad(lambda x: fad.grad(lambda y: x * y)(2.0))(x0), 1.0, **RT)
    # d/dx [x * d/dy (x y)] = d/dx x^2 = 2x
    close(fad.grad(lambda x: x * fad.grad(lambda y: x * y)(3.0))(x0), 2 * x0, **RT)
    # the inner derivative taken at the outer variable: d/dx [x cos(x^2)]
    close(fad.grad(lambda x: fad.grad(lambda y: fad.sin(x * y))(x))(x0),
          math.cos(x0 ** 2) - 2 * x0 ** 2 * math.sin(x0 ** 2), **RT)
    # an inner function that ignores its own variable
    close(fad.grad(lambda x: fad.grad(lambda y: x ** 2)(1.0))(x0), 0.0, **RT)


@pytest.mark.parametrize("x0, y0", [(1.0, 1.0), (0.5, -2.0)])
def test_three_levels_of_closures(x0, y0):
    # d/dx [x d/dy [y d/dz (x + y + z)]] = 1
    close(fad.grad(lambda x: x * fad.grad(
        lambda y: y * fad.grad(lambda z: x + y + z)(1.0))(y0))(x0), 1.0, **RT)
    # d/dx [x d/dy [x y d/dz (x y z)]] at y0 = d/dx [2 x^3 y0] = 6 x^2 y0
    close(fad.grad(lambda x: x * fad.grad(
        lambda y: x * y * fad.grad(lambda z: x * y * z)(0.5))(y0))(x0), 6 * x0 ** 2 * y0, **RT)


def test_derivative_operator_of_a_shift():
    """After Manzyuk et al.: with s u f x = f (x + u), D s 0 is the derivative
    operator, so (D s 0)((D s 0) exp) = exp''; the two derivative calculations
    use one lambda and must still not share a perturbation."""
    def D_s0(f):                       # (D s 0) f = lambda x. d/du f(x + u) at u = 0
        return lambda x: fad.grad(lambda u: f(x + u))(0.0)

    for x in (1.0, -0.5):
        close(D_s0(fad.exp)(x), math.exp(x), **RT)
        close(D_s0(D_s0(fad.exp))(x), math.exp(x), **RT)
        close(D_s0(D_s0(fad.sin))(x), -math.sin(x), **RT)
        close(D_s0(D_s0(D_s0(fad.sin)))(x), -math.cos(x), **RT)


def test_one_gradient_function_used_at_two_levels():
    g = fad.grad(lambda t: t ** 3)               # 3 t^2
    # d/dx [g(x) g(2x)] = d/dx 36 x^4 = 144 x^3
    close(fad.grad(lambda x: g(x) * g(2.0 * x))(0.7), 144 * 0.7 ** 3, **RT)
    close(fad.grad(g)(0.7), 6 * 0.7, **RT)
    close(g(0.7), 3 * 0.49, **RT)                 # still first order afterwards


def test_closure_over_an_outer_array():
    a0 = np.array([0.5, -1.0, 2.0])
    y0 = np.array([1.5, 0.3, -0.4])
    c = np.array([1.0, 2.0, -1.0])
    # inner gradient 2 a y0; outer d/da [sum(2 a y0 c)] = 2 y0 c
    got = fad.grad(lambda a: fad.sum(fad.grad(lambda y: fad.sum(a * y ** 2))(y0) * c))(a0)
    close(got, 2 * y0 * c, **RT)
    # the inner input is the outer variable: inner 2 a a = 2 a^2, outer 4 a c
    got = fad.grad(lambda a: fad.sum(fad.grad(lambda y: fad.sum(a * y ** 2))(a) * c))(a0)
    close(got, 4 * a0 * c, **RT)


# ---------------------------------------------------------------------------
# Arrays and block operations
# ---------------------------------------------------------------------------

def test_matmul_weights_outside_input_gradient_inside():
    rng = rng_for("matmul-nested")
    W0, x0 = rng.standard_normal((3, 4)), rng.standard_normal(4)

    def loss(W):
        return fad.sum(fad.grad(lambda x: fad.sum(fad.tanh(W @ x)))(x0) ** 2)

    def loss_np(W):
        return float(np.sum((W.T @ (1 - np.tanh(W @ x0) ** 2)) ** 2))

    close(loss(W0), loss_np(W0), **RT)
    fd_close(fad.grad(loss)(W0), fd_grad(loss_np, W0), rtol=1e-7, atol=1e-8)


def test_sums_and_means():
    x = np.array([0.3, -1.2, 0.8, 2.0])
    c = np.array([1.0, -2.0, 0.5, 3.0])
    n = x.size
    # grad mean(x^3) = 3 x^2 / n; d/dx [c . that] = 6 x c / n
    close(fad.grad(lambda z: fad.grad(lambda t: fad.mean(t ** 3))(z) @ c)(x), 6 * x * c / n, **RT)
    close(fad.grad(lambda z: np.sum(fad.grad(lambda t: np.mean(t ** 3))(z) * c))(x),
          6 * x * c / n, **RT)
    close(fad.jacfwd(fad.grad(lambda t: fad.sum(t) ** 2))(x), np.full((n, n), 2.0), **RT)


def test_reductions_max_prod_cumsum():
    x = np.array([0.3, -1.2, 0.8, 2.0])
    v = np.array([1.0, -2.0, 0.5, 3.0])
    # max(x^2) is unique at index 3: gradient 2 x_3 e_3, Hessian 2 e_3 e_3^T
    H = np.zeros((4, 4))
    H[3, 3] = 2.0
    close(fad.jacfwd(fad.grad(lambda t: np.max(t * t)))(x), H, **RT)
    close(fad.grad(lambda t: fad.grad(lambda s: fad.max(s * s))(t) @ v)(x), H @ v, **RT)
    # prod: H_ij = prod / (x_i x_j) off the diagonal, 0 on it
    p = np.prod(x)
    Hp = p / np.outer(x, x)
    np.fill_diagonal(Hp, 0.0)
    close(fad.grad(lambda t: fad.grad(np.prod)(t) @ v)(x), Hp @ v, **RT)
    close(fad.jacrev(fad.grad(fad.prod))(x), Hp, **RT)
    # sum(cumsum(x)^2) = |L x|^2: Hessian 2 L^T L
    L = np.tril(np.ones((4, 4)))
    close(fad.jacfwd(fad.grad(lambda t: np.sum(np.cumsum(t) ** 2)))(x), 2 * L.T @ L, **RT)
    close(fad.grad(lambda t: fad.grad(lambda s: fad.sum(fad.cumsum(s) ** 2))(t) @ v)(x),
          2 * L.T @ L @ v, **RT)


def test_elementwise_ufuncs():
    x = np.array([0.3, 1.2, 0.8, 2.0])

    def f(t):
        return np.sum(np.sin(t) * np.exp(t)) + np.sum(np.log(t)) + np.sum(np.sqrt(t))

    diag = 2 * np.exp(x) * np.cos(x) - 1 / x ** 2 - 0.25 * x ** -1.5
    close(fad.jacfwd(fad.grad(f))(x), np.diag(diag), **RT)
    close(fad.hessian(f)(x), np.diag(diag), **RT)
    third = 2 * np.exp(x) * (np.cos(x) - np.sin(x)) + 2 / x ** 3 + 0.375 * x ** -2.5
    close(fad.grad(lambda t: fad.grad(lambda s: fad.grad(f)(s) @ np.ones(4))(t) @ np.ones(4))(x),
          third, **RT)


def test_indexing_and_reshape():
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])

    def f(t):                 # t of shape (2, 3)
        flat = fad.reshape(t, (6,))
        return fad.sum(t[0] * t[1]) + flat[2] ** 3 + fad.sum(flat[::2] ** 2)

    H = np.zeros((6, 6))
    for j in range(3):
        H[j, 3 + j] = H[3 + j, j] = 1.0
    H[2, 2] += 6 * x.reshape(-1)[2]
    for i in (0, 2, 4):
        H[i, i] += 2.0
    got = fad.jacfwd(fad.grad(f))(x)
    assert got.shape == (2, 3, 2, 3)
    close(got.reshape(6, 6), H, **RT)
    close(fad.jacrev(fad.grad(f))(x).reshape(6, 6), H, **RT)


def test_strong_zeros_of_where_survive_nesting():
    """The side of where that was not selected contributes exactly 0 at every
    order, even where its own derivatives are inf or NaN (sqrt at x <= 0)."""
    f = lambda x: fad.where(x > 0, fad.sqrt(x), x * x)   # noqa: E731
    for k, expect in [(1, -2.0), (2, 2.0), (3, 0.0), (4, 0.0)]:
        close(nest_grad(f, k)(-1.0), expect, rtol=0, atol=0)
    close(nest_grad(f, 2)(4.0), -0.25 * 4.0 ** -1.5, **RT)
    g = lambda x: fad.sum(fad.where(x > 0, fad.sqrt(x), 0.0))   # noqa: E731
    x = np.array([-1.0, 4.0, 0.0])
    H = np.diag([0.0, -0.25 * 4.0 ** -1.5, 0.0])
    close(fad.jacfwd(fad.grad(g))(x), H, rtol=1e-12, atol=0)
    close(fad.jacrev(fad.grad(g))(x), H, rtol=1e-12, atol=0)


def test_in_place_operators_under_nesting():
    def f(x):
        y = x * 1.0
        y += x ** 2
        y *= x            # y = x^2 + x^3
        y -= 1.0
        return fad.sum(y)

    x = np.array([0.3, -0.8, 1.1, 0.2])
    close(fad.jacfwd(fad.grad(f))(x), np.diag(2 + 6 * x), **RT)
    close(fad.grad(lambda z: fad.grad(f)(z) @ np.ones(4))(x), 2 + 6 * x, **RT)


def test_linalg_under_nesting():
    M = np.array([[3.0, 0.5, 0.2], [0.5, 2.0, 0.1], [0.2, 0.1, 1.5]])
    b = np.array([1.0, -1.0, 0.5])
    p0 = np.array([0.1, 0.2, 0.3])

    def s(p):                 # 1^T (M + diag p)^-1 b
        return fad.sum(fad.solve(M + fad.stack([p[0], p[1], p[2]]) * np.eye(3), b))

    def s_grad_np(p):         # -lambda_i u_i with u = K^-1 b, lambda = K^-T 1
        K = M + np.diag(p)
        return -np.linalg.solve(K.T, np.ones(3)) * np.linalg.solve(K, b)

    fd_close(fad.jacfwd(fad.grad(s))(p0), fd_jacobian(s_grad_np, p0), rtol=1e-7, atol=1e-8)
    x = np.array([0.3, -0.8, 1.1, 0.2])
    r = np.linalg.norm(x)
    close(fad.jacfwd(fad.grad(fad.norm))(x), (np.eye(4) - np.outer(x, x) / r ** 2) / r, **RT)


# a tiny tanh MLP, R^2 -> R^2, and physics-informed losses over its weights

def _mlp_params(seed, hidden=5, n_out=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((hidden, 2)) * 0.8, rng.standard_normal(hidden) * 0.3,
            rng.standard_normal((n_out, hidden)) * 0.8, rng.standard_normal(n_out) * 0.3)


PTS = [np.array([0.2, -0.5]), np.array([-0.8, 0.4]), np.array([0.6, 0.9])]


def mlp(params, x):
    W1, b1, W2, b2 = params
    return W2 @ fad.tanh(W1 @ x + b1) + b2


def source(x):
    return math.sin(x[0]) * x[1]


def divergence_loss(params, mode):
    total = 0.0
    for x in PTS:
        J = fad.jacobian(lambda z: mlp(params, z), mode=mode)(x)
        total = total + (J[0, 0] + J[1, 1] - source(x)) ** 2 + 0.1 * fad.sum(mlp(params, x) ** 2)
    return total


def divergence_loss_np(params):
    W1, b1, W2, b2 = params
    total = 0.0
    for x in PTS:
        h = np.tanh(W1 @ x + b1)
        J = W2 @ ((1 - h ** 2)[:, None] * W1)
        total += (np.trace(J) - source(x)) ** 2 + 0.1 * np.sum((W2 @ h + b2) ** 2)
    return total


def laplacian_loss(params):
    total = 0.0
    for x in PTS:
        H = fad.hessian(lambda z: mlp(params, z)[0])(x)
        total = total + (H[0, 0] + H[1, 1] - source(x)) ** 2
    return total


def laplacian_loss_np(params):
    W1, b1, W2, _ = params
    total = 0.0
    for x in PTS:
        t = np.tanh(W1 @ x + b1)
        lap = np.sum(W2[0] * (-2 * t * (1 - t ** 2)) * np.sum(W1 ** 2, axis=1))
        total += (lap - source(x)) ** 2
    return total


@pytest.mark.parametrize("mode", ["fwd", "rev", "auto"])
def test_loss_with_network_jacobian_over_weights(mode):
    params = _mlp_params(3)
    close(divergence_loss(params, mode), divergence_loss_np(params), **RT)
    got = fad.grad(lambda p: divergence_loss(p, mode))(params)
    assert isinstance(got, tuple) and len(got) == 4
    for g, r, p in zip(got, fd_grad_leaves(divergence_loss_np, params), params):
        assert np.shape(g) == p.shape
        fd_close(g, r, rtol=1e-6, atol=1e-7, scale_atol=True)


def test_loss_with_network_laplacian_over_weights():
    params = _mlp_params(4, n_out=1)
    close(laplacian_loss(params), laplacian_loss_np(params), **RT)
    got = fad.grad(laplacian_loss)(params)
    for g, r in zip(got, fd_grad_leaves(laplacian_loss_np, params)):
        fd_close(g, r, rtol=1e-6, atol=1e-7, scale_atol=True)


def test_pytree_inside_and_outside():
    p0 = {"w": np.array([0.4, -0.3, 1.1]), "b": 0.7}
    v = {"w": np.array([1.0, 0.5, -1.0]), "b": 2.0}

    def f(p):
        return fad.sum(fad.tanh(p["w"] * p["b"])) + p["b"] ** 3

    def g_np(w, b):           # the gradient as one flat vector (w, b)
        s = 1 - np.tanh(w * b) ** 2
        return np.concatenate([s * b, [np.sum(s * w) + 3 * b * b]])

    def hv(p):
        g = fad.grad(f)(p)
        return g["w"] @ v["w"] + g["b"] * v["b"]

    got = fad.grad(hv)(p0)
    assert set(got) == {"w", "b"}
    z = np.concatenate([p0["w"], [p0["b"]]])
    vz = np.concatenate([v["w"], [v["b"]]])
    ref = fd_grad(lambda t: g_np(t[:3], t[3]) @ vz, z)
    fd_close(got["w"], ref[:3], rtol=1e-7, atol=1e-8)
    fd_close(got["b"], ref[3], rtol=1e-7, atol=1e-8)
    hvp = fad.hvp(f, p0, v)
    close(hvp["w"], got["w"], **RT)
    close(hvp["b"], got["b"], **RT)


# ---------------------------------------------------------------------------
# has_aux, inside and outside
# ---------------------------------------------------------------------------

def test_has_aux_inner():
    def f(x):
        return fad.sin(x) * x, "inner aux"

    def outer(x):
        g, aux = fad.grad(f, has_aux=True)(x)
        assert aux == "inner aux"
        return g

    x = 0.9
    # (x sin x)'' = 2 cos x - x sin x
    close(fad.grad(outer)(x), 2 * math.cos(x) - x * math.sin(x), **RT)


def test_has_aux_outer_carries_an_inner_gradient():
    def outer(x):
        g = fad.grad(fad.tanh)(x)
        return g * 3.0, {"first": g, "label": "x"}

    x = 0.4
    d = tanh_derivs(x)
    g2, aux = fad.grad(outer, has_aux=True)(x)
    close(g2, 3 * d[2], **RT)
    assert aux["label"] == "x"
    close(float(aux["first"]), d[1], **RT)     # concrete values, not traced ones
    (v, aux), g = fad.value_and_grad(outer, has_aux=True)(x)
    close(v, 3 * d[1], **RT)
    close(g, 3 * d[2], **RT)


# ---------------------------------------------------------------------------
# several threads at once
# ---------------------------------------------------------------------------

def _nested_work(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 3)
    t = float(rng.uniform(-1, 1))
    return [nest_grad(fad.tanh, 3)(t),
            fad.jacfwd(fad.grad(fq))(x),
            fad.grad(lambda a: a * fad.grad(lambda b: a + b)(1.0))(t),
            fad.grad(lambda p: divergence_loss(p, "rev"))(_mlp_params(seed))[0]]


def test_nested_transforms_from_several_threads():
    seeds = [11, 12, 13, 14]
    single = {s: _nested_work(s) for s in seeds}
    for s, res in single.items():           # the single-thread answers are right
        rng = np.random.default_rng(s)
        x = rng.uniform(-1, 1, 3)
        t = float(rng.uniform(-1, 1))
        close(res[0], tanh_derivs(t)[3], **RT)
        close(res[1], fq_hess(x), **RT)
        close(res[2], 1.0, **RT)

    def work(tid):
        out = []
        for _ in range(5):
            for s in seeds[tid:] + seeds[:tid]:
                out.append((s, _nested_work(s)))
        return out

    for results in run_in_threads(work, 4):
        for s, res in results:
            for a, b in zip(res, single[s]):
                close(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# errors: clear, never silently wrong, and the library stays usable
# ---------------------------------------------------------------------------

def test_inner_variable_leaked_to_the_outer_level_raises():
    box = []

    def inner(y):
        box.append(y)
        return y * y

    def outer(x):
        return fad.grad(inner)(x) + box[-1]       # box[-1]: the inner recording ended

    # never a silently wrong number: a TapeError, or the inner variable taken
    # for what it was bound to (the outer x, so d/dx [2x + x] = 3)
    try:
        got = fad.grad(outer)(1.5)
    except fad.TapeError:
        pass
    else:
        close(got, 3.0, **RT)
    close(fad.grad(fad.grad(inner))(1.5), 2.0, **RT)


def test_exception_in_an_inner_function_propagates_and_next_call_works():
    class Boom(Exception):
        pass

    def inner(y):
        raise Boom("inner")

    with pytest.raises(Boom):
        fad.grad(lambda x: fad.grad(inner)(x) * x)(1.0)
    close(fad.grad(fad.grad(fad.exp))(0.5), math.exp(0.5), **RT)


def test_inner_grad_of_a_non_scalar_output_points_to_jacobian():
    with pytest.raises(ValueError, match="jacobian"):
        fad.grad(lambda x: fad.sum(fad.grad(lambda y: y * 2.0)(x)))(np.ones(3))
    close(fad.jacfwd(fad.grad(lambda y: fad.sum(y ** 2)))(np.ones(3)), 2 * np.eye(3), **RT)
