"""Whole-array operations on fad.Array (block nodes and slot views), and
NumPy parity: plain NumPy code run on fad.Array gives NumPy's values and
shapes.

Every gradient here is checked against an independent answer: a formula
written out by hand in NumPy, or central finite differences of the same
function evaluated with plain NumPy (never through fastad).
"""
import math
import pickle

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_close, fd_grad, fd_jacobian, rng_for, softmax_np


# ---------------------------------------------------------------------------
# binary operations with broadcasting over all pairs of shapes
# ---------------------------------------------------------------------------

# "var": a Python float (a Var inside f); "0d": a 0-d ndarray (a 0-d operand)
SHAPES = {"var": None, "0d": (), "6": (6,), "7x6": (7, 6), "1x6": (1, 6)}

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.true_divide),
    "pow": (lambda a, b: a ** b, np.power),
    "maximum": (fad.maximum, np.maximum),
    "minimum": (fad.minimum, np.minimum),
    "arctan2": (fad.arctan2, np.arctan2),
    "hypot": (fad.hypot, np.hypot),
}


def _operand(rng, kind, offset, signed):
    """Values on a 0.1 grid shifted by offset (0.03 for a, 0.07 for b), so
    that |a - b| >= 0.04 wherever the signs agree: no ties for max/min."""
    shape = SHAPES[kind]
    size = 1 if shape is None else int(np.prod(shape, dtype=np.int64))
    v = 0.5 + 0.1 * rng.integers(0, 15, size) + offset
    if signed:
        v = v * rng.choice([-1.0, 1.0], size)
    if shape is None:
        return float(v[0])
    return v.reshape(shape)


@pytest.mark.parametrize("mode", ["both", "a_const", "b_const"])
@pytest.mark.parametrize("kb", list(SHAPES))
@pytest.mark.parametrize("ka", list(SHAPES))
@pytest.mark.parametrize("op", list(BINARY))
def test_binary_broadcasting_gradient(op, ka, kb, mode):
    rng = rng_for(op, ka, kb, mode)
    fop, npop = BINARY[op]
    a = _operand(rng, ka, 0.03, signed=False)          # pow needs positive bases
    if op == "pow":
        b = 0.1 * rng.integers(-15, 16, () if SHAPES[kb] is None else SHAPES[kb]) + 0.05
        b = float(b) if SHAPES[kb] is None else b
    else:
        b = _operand(rng, kb, 0.07, signed=True)
    out_shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    W = rng.standard_normal(out_shape)
    W = float(W) if out_shape == () else W

    def ref(a, b):
        return float(np.sum(npop(a, b) * W))

    expected_value = ref(a, b)
    ga_fd = fd_grad(lambda a_: ref(a_, b), a)
    gb_fd = fd_grad(lambda b_: ref(a, b_), b)

    if mode == "both":
        value, (ga, gb) = fad.value_and_grad(lambda a, b: fad.sum(fop(a, b) * W),
                                             argnums=(0, 1))(a, b)
    elif mode == "b_const":
        value, ga = fad.value_and_grad(lambda a: fad.sum(fop(a, b) * W))(a)
        gb = None
    else:
        value, gb = fad.value_and_grad(lambda b: fad.sum(fop(a, b) * W))(b)
        ga = None
    close(value, expected_value, rtol=1e-12, atol=1e-12)
    for g, g_fd, x in ((ga, ga_fd, a), (gb, gb_fd, b)):
        if g is None:
            continue
        if isinstance(x, float):
            assert isinstance(g, float), type(g)
        else:
            assert isinstance(g, np.ndarray) and g.shape == x.shape, (np.shape(g), x.shape)
        fd_close(g, g_fd)


def test_binary_broadcast_gradient_matches_hand_formula():
    """A (7,6) * (1,6) + (6,) with a hand-derived gradient (unbroadcasting sums)."""
    rng = rng_for("hand")
    A, r, v = rng.standard_normal((7, 6)), rng.standard_normal((1, 6)), rng.standard_normal(6)
    W = rng.standard_normal((7, 6))
    gA, gr, gv = fad.grad(lambda A, r, v: fad.sum((A * r + v) * W), argnums=(0, 1, 2))(A, r, v)
    close(gA, W * r)
    close(gr, np.sum(W * A, axis=0, keepdims=True))
    close(gv, np.sum(W, axis=0))


# ---------------------------------------------------------------------------
# unary functions elementwise
# ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf)

# name -> (fastad function, plain NumPy reference, sampling interval)
UNARY = {
    "sin": (fad.sin, np.sin, (-3, 3)),
    "cos": (fad.cos, np.cos, (-3, 3)),
    "tan": (fad.tan, np.tan, (-1.2, 1.2)),
    "arcsin": (fad.arcsin, np.arcsin, (-0.9, 0.9)),
    "arccos": (fad.arccos, np.arccos, (-0.9, 0.9)),
    "arctan": (fad.arctan, np.arctan, (-3, 3)),
    "sinh": (fad.sinh, np.sinh, (-2, 2)),
    "cosh": (fad.cosh, np.cosh, (-2, 2)),
    "tanh": (fad.tanh, np.tanh, (-2, 2)),
    "exp": (fad.exp, np.exp, (-2, 2)),
    "expm1": (fad.expm1, np.expm1, (-2, 2)),
    "log": (fad.log, np.log, (0.2, 3)),
    "log1p": (fad.log1p, np.log1p, (-0.7, 3)),
    "log2": (fad.log2, np.log2, (0.2, 3)),
    "log10": (fad.log10, np.log10, (0.2, 3)),
    "sqrt": (fad.sqrt, np.sqrt, (0.2, 3)),
    "square": (fad.square, np.square, (-3, 3)),
    "abs": (fad.abs, np.abs, (-3, 3)),
    "sign": (fad.sign, np.sign, (-3, 3)),
    "sigmoid": (fad.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), (-4, 4)),
    "softplus": (fad.softplus, lambda x: np.log1p(np.exp(x)), (-4, 4)),
    "relu": (fad.relu, lambda x: np.maximum(x, 0.0), (-3, 3)),
    "erf": (fad.erf, _erf, (-2, 2)),
    "neg": (lambda x: -x, np.negative, (-3, 3)),
}


def _away_from_zero(x):
    """Keep |x| >= 0.05 so that abs, sign and relu are smooth under the FD step."""
    return np.where(np.abs(x) < 0.05, 0.05 * np.sign(x) + (x == 0) * 0.05, x)


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_elementwise_gradient(name):
    fn, ref, (lo, hi) = UNARY[name]
    rng = rng_for("unary", name)
    X = _away_from_zero(rng.uniform(lo, hi, (3, 4)))
    W = rng.standard_normal((3, 4))
    value, g = fad.value_and_grad(lambda a: fad.sum(fn(a) * W))(X)
    close(value, np.sum(ref(X) * W), rtol=1e-12, atol=1e-12)
    assert g.shape == (3, 4)
    fd_close(g, fd_grad(lambda x: np.sum(ref(x) * W), X))


NP_UFUNCS = ["sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
             "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt", "square", "abs",
             "sign", "negative"]


@pytest.mark.parametrize("name", NP_UFUNCS)
def test_numpy_ufunc_on_array_matches_fastad_function(name):
    """np.<ufunc>(a) on an Array gives the same values and gradient as fad.<fn>(a)."""
    key = {"negative": "neg"}.get(name, name)
    fn, ref, (lo, hi) = UNARY[key]
    rng = rng_for("npufunc", name)
    X = _away_from_zero(rng.uniform(lo, hi, (3, 4)))
    W = rng.standard_normal((3, 4))
    npf = getattr(np, name)
    v1, g1 = fad.value_and_grad(lambda a: fad.sum(npf(a) * W))(X)
    close(v1, np.sum(ref(X) * W))
    fd_close(g1, fd_grad(lambda x: np.sum(ref(x) * W), X))
    v2, g2 = fad.value_and_grad(lambda a: fad.sum(fn(a) * W))(X)
    close(g1, g2, rtol=1e-14, atol=0)


def test_unary_elementwise_analytic_derivatives():
    """A few derivatives by formula rather than differences."""
    X = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    close(fad.grad(lambda a: fad.sum(fad.tanh(a)))(X), 1 - np.tanh(X) ** 2)
    close(fad.grad(lambda a: fad.sum(fad.exp(a)))(X), np.exp(X))
    s = 1 / (1 + np.exp(-X))
    close(fad.grad(lambda a: fad.sum(fad.sigmoid(a)))(X), s * (1 - s))
    close(fad.grad(lambda a: fad.sum(fad.softplus(a)))(X), s)
    close(fad.grad(lambda a: fad.sum(fad.erf(a)))(X), 2 / np.sqrt(np.pi) * np.exp(-X ** 2))
    close(fad.grad(lambda a: fad.sum(fad.arctan(a)))(X), 1 / (1 + X ** 2))


# ---------------------------------------------------------------------------
# matmul / dot
# ---------------------------------------------------------------------------

MATMUL_STYLES = {
    "@": lambda a, b: a @ b,
    "fad.matmul": fad.matmul,
    "fad.dot": fad.dot,
    "np.matmul": np.matmul,
    "np.dot": np.dot,
}

# case -> (shape of A, shape of B, function (A, B, W) -> (dA, dB) of sum(W * (A @ B)))
MATMUL_CASES = {
    "2d@2d": ((3, 4), (4, 5), lambda A, B, W: (W @ B.T, A.T @ W)),
    "2d@1d": ((3, 4), (4,), lambda A, B, W: (np.outer(W, B), A.T @ W)),
    "1d@2d": ((4,), (4, 5), lambda A, B, W: (B @ W, np.outer(A, W))),
    "1d@1d": ((4,), (4,), lambda A, B, W: (W * B, W * A)),
}


@pytest.mark.parametrize("active", ["both", "left", "right"])
@pytest.mark.parametrize("style", list(MATMUL_STYLES))
@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul_gradient_analytic(case, style, active):
    sa, sb, formula = MATMUL_CASES[case]
    rng = rng_for("matmul", case, style, active)
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    out_shape = np.matmul(A, B).shape
    W = rng.standard_normal(out_shape)
    W = float(W) if out_shape == () else W
    mm = MATMUL_STYLES[style]
    dA, dB = formula(A, B, W)
    if active == "both":
        value, (gA, gB) = fad.value_and_grad(lambda A, B: fad.sum(mm(A, B) * W),
                                             argnums=(0, 1))(A, B)
        close(gA, dA)
        close(gB, dB)
    elif active == "left":     # Array @ constant ndarray
        value, gA = fad.value_and_grad(lambda A: fad.sum(mm(A, B) * W))(A)
        close(gA, dA)
    else:                      # constant ndarray @ Array
        value, gB = fad.value_and_grad(lambda B: fad.sum(mm(A, B) * W))(B)
        close(gB, dB)
    close(value, np.sum(np.matmul(A, B) * W))


def test_matmul_value_is_an_array_of_the_right_shape():
    A, B = np.arange(12.0).reshape(3, 4), np.arange(20.0).reshape(4, 5)
    seen = {}

    def f(A, B):
        C = A @ B
        seen["shape"], seen["value"] = C.shape, C.value
        v = A[0] @ B[:, 0]
        seen["v"] = v.value
        return fad.sum(C)
    fad.grad(f, argnums=(0, 1))(A, B)
    assert seen["shape"] == (3, 5)
    close(seen["value"], A @ B)
    close(seen["v"], A[0] @ B[:, 0])


def test_transpose_in_matmul():
    rng = rng_for("T")
    A, B, W = rng.standard_normal((4, 3)), rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    gA, gB = fad.grad(lambda A, B: fad.sum(W * (A.T @ B)), argnums=(0, 1))(A, B)
    close(gA, B @ W.T)
    close(gB, A @ W)
    # x^T A x, with A.T and .transpose(): gradient (A + A^T) x
    M, x = rng.standard_normal((5, 5)), rng.standard_normal(5)
    close(fad.grad(lambda x: x @ (M @ x))(x), (M + M.T) @ x)
    gM = fad.grad(lambda M: x @ (M.T @ x) + fad.sum(M.transpose() * W[0, 0]))(M)
    close(gM, np.outer(x, x) + W[0, 0])


def test_matmul_chain_matches_hand_backprop():
    """sum(W * (A @ B @ C)) through two blocks with all three active."""
    rng = rng_for("chain")
    A, B, C = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    W = rng.standard_normal((2, 5))
    gA, gB, gC = fad.grad(lambda A, B, C: fad.sum(W * (A @ B @ C)), argnums=(0, 1, 2))(A, B, C)
    close(gA, W @ (B @ C).T)
    close(gB, A.T @ W @ C.T)
    close(gC, (A @ B).T @ W)


def test_matmul_same_array_on_both_sides():
    """A @ A: both contributions to the same slots add up."""
    rng = rng_for("AA")
    A, W = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    close(fad.grad(lambda A: fad.sum(W * (A @ A)))(A), W @ A.T + A.T @ W)


# ---------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("how", ["fad", "method", "np"])
def test_sum_and_mean(how, axis, keepdims):
    rng = rng_for("sum", how, axis, keepdims)
    X = rng.standard_normal((3, 4))
    out = np.sum(X, axis=axis, keepdims=keepdims)
    W = rng.standard_normal(np.shape(out))
    count = X.size // np.size(out)
    # d/dX sum(W * sum(X**2, axis)) = 2 X * W broadcast back over the summed axes
    Wb = np.broadcast_to(W if keepdims or axis is None else np.expand_dims(W, axis), X.shape)

    def red(kind, a):
        if how == "fad":
            return getattr(fad, kind)(a, axis=axis, keepdims=keepdims)
        if how == "method":
            return getattr(a, kind)(axis=axis, keepdims=keepdims)
        return getattr(np, kind)(a, axis=axis, keepdims=keepdims)

    def f(kind):
        def g(a):
            r = red(kind, a * a)
            assert np.shape(r.value) == np.shape(out)
            return fad.sum(W * r)
        return g
    vs, gs = fad.value_and_grad(f("sum"))(X)
    close(vs, np.sum(W * np.sum(X * X, axis=axis, keepdims=keepdims)))
    close(gs, 2 * X * Wb)
    vm, gm = fad.value_and_grad(f("mean"))(X)
    close(vm, np.sum(W * np.mean(X * X, axis=axis, keepdims=keepdims)))
    close(gm, 2 * X * Wb / count)


@pytest.mark.parametrize("shift", [0.0, 1000.0])
def test_logsumexp_axis_none(shift):
    X = rng_for("lse").standard_normal((3, 4)) + shift
    value, g = fad.value_and_grad(lambda a: fad.logsumexp(a))(X)
    m = np.max(X)
    close(value, m + np.log(np.sum(np.exp(X - m))))
    close(g, softmax_np(X))
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("shift", [0.0, -800.0])
def test_logsumexp_axis_1(shift):
    rng = rng_for("lse1")
    X = rng.standard_normal((3, 4)) + shift
    w = rng.standard_normal(3)
    value, g = fad.value_and_grad(lambda a: fad.sum(w * fad.logsumexp(a, axis=1)))(X)
    m = np.max(X, axis=1, keepdims=True)
    close(value, np.sum(w * (m[:, 0] + np.log(np.sum(np.exp(X - m), axis=1)))))
    close(g, w[:, None] * softmax_np(X, axis=1))
    fd_close(g, fd_grad(lambda x: np.sum(w * np.log(np.sum(np.exp(x), axis=1))), X - shift))


def test_logsumexp_on_1d_and_a_vector_of_outputs():
    x = np.array([0.3, -1.2, 2.0, 0.5])
    close(fad.grad(fad.logsumexp)(x), softmax_np(x))
    # jacobian of the row-wise logsumexp: row i is softmax of row i, zeros elsewhere
    X = rng_for("lsej").standard_normal((3, 4))
    J = fad.jacobian(lambda a: fad.logsumexp(a, axis=1))(X)
    expected = np.zeros((3, 3, 4))
    for i in range(3):
        expected[i, i] = softmax_np(X[i])
    close(J, expected)


def test_max_min_selection_axis_none():
    X = np.array([[1.0, 5.0, -2.0], [5.0, 0.5, -3.0]])   # max 5 twice: the first wins
    gmax = fad.grad(lambda a: np.max(a))(X)
    gmin = fad.grad(lambda a: np.min(a) * 2.0)(X)
    close(gmax, [[0, 1, 0], [0, 0, 0]], rtol=0, atol=0)
    close(gmin, [[0, 0, 0], [0, 0, 2]], rtol=0, atol=0)
    close(fad.grad(lambda a: np.amax(a * a))(X), [[0, 10, 0], [0, 0, 0]], rtol=0, atol=0)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_max_min_selection_along_axis(axis, keepdims):
    rng = rng_for("maxax", axis, keepdims)
    X = rng.permutation(12).astype(float).reshape(3, 4) - 5.0   # distinct values
    for npf, arg in ((np.max, np.argmax), (np.min, np.argmin)):
        ref = npf(X, axis=axis, keepdims=keepdims)
        W = rng.standard_normal(ref.shape)
        value, g = fad.value_and_grad(lambda a: fad.sum(W * npf(a, axis=axis, keepdims=keepdims)))(X)
        close(value, np.sum(W * ref))
        expected = np.zeros_like(X)
        k = arg(X, axis=axis)
        Wf = W.reshape(-1)
        for j in range(k.size):
            if axis == 0:
                expected[k[j], j] += Wf[j]
            else:
                expected[j, k[j]] += Wf[j]
        close(g, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# structural operations: views and slot rearrangements
# ---------------------------------------------------------------------------

def test_reshape_variants():
    rng = rng_for("reshape")
    X = rng.standard_normal((3, 4))
    W = rng.standard_normal((2, 6))
    expected = 2 * X * W.reshape(3, 4)
    for rs in (lambda a: a.reshape(2, 6), lambda a: a.reshape((2, 6)),
               lambda a: a.reshape(-1, 6), lambda a: np.reshape(a, (2, 6)),
               lambda a: fad.reshape(a, (2, 6)), lambda a: a.ravel().reshape(2, 6),
               lambda a: a.reshape(12).reshape(2, 6)):
        close(fad.grad(lambda a: fad.sum(W * rs(a) ** 2))(X), expected)


def test_transpose_3d_axes():
    rng = rng_for("transpose3")
    X = rng.standard_normal((2, 3, 4))
    axes = (2, 0, 1)
    W = rng.standard_normal((4, 2, 3))
    inv = np.argsort(axes)
    expected = np.cos(X) * np.transpose(W, inv)
    for tr in (lambda a: a.transpose(axes), lambda a: a.transpose(*axes),
               lambda a: np.transpose(a, axes), lambda a: fad.transpose(a, axes)):
        close(fad.grad(lambda a: fad.sum(W * fad.sin(tr(a))))(X), expected)
    W2 = rng.standard_normal((4, 3, 2))
    close(fad.grad(lambda a: fad.sum(W2 * a.T))(X), np.transpose(W2))


@pytest.mark.parametrize("key", [
    (slice(1, 9, 3),), (slice(None, None, -2),), (slice(7, 0, -3),)], ids=["1:9:3", "::-2", "7:0:-3"])
def test_slicing_with_steps_1d(key):
    rng = rng_for("slice", str(key))
    x = rng.standard_normal(10)
    n = x[key].size
    W = rng.standard_normal(n)
    g = fad.grad(lambda a: fad.sum(W * fad.sin(a[key])))(x)
    expected = np.zeros(10)
    expected[key] = W * np.cos(x[key])
    close(g, expected)


def test_slicing_with_steps_2d():
    rng = rng_for("slice2")
    X = rng.standard_normal((5, 6))
    key = (slice(None, None, 2), slice(1, None, 2))
    W = rng.standard_normal(X[key].shape)
    g = fad.grad(lambda a: fad.sum(W * a[key] ** 3) + fad.sum(a[-1, ::-1] * 0.5))(X)
    expected = np.zeros_like(X)
    expected[key] = 3 * X[key] ** 2 * W
    expected[-1, :] += 0.5
    close(g, expected)


def test_fancy_indexing_with_repeats_accumulates():
    rng = rng_for("fancy")
    x = rng.standard_normal(6)
    idx = np.array([0, 2, 2, 5, 0, 0])
    W = rng.standard_normal(6)
    g = fad.grad(lambda a: fad.sum(W * a[idx] ** 2))(x)
    expected = np.zeros(6)
    np.add.at(expected, idx, 2 * x[idx] * W)
    close(g, expected)
    # a list index, and 2-D rows picked with repeats, through a matmul
    g2 = fad.grad(lambda a: fad.sum(fad.exp(a[[1, 1, 3]])))(x)
    close(g2, np.array([0, 2 * np.exp(x[1]), 0, np.exp(x[3]), 0, 0]))
    X = rng.standard_normal((4, 3))
    v = rng.standard_normal(3)
    rows = [3, 0, 3, 3]
    gX = fad.grad(lambda A: fad.sum(A[rows] @ v))(X)
    expected = np.zeros_like(X)
    for r in rows:
        expected[r] += v
    close(gX, expected)


def test_boolean_mask_indexing():
    x = np.array([1.0, -2.0, 3.0, -4.0, 5.0])
    mask = x > 0
    close(fad.grad(lambda a: fad.sum(a[mask] ** 2))(x), np.where(mask, 2 * x, 0.0))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack(axis):
    rng = rng_for("stack", axis)
    a, b = rng.standard_normal(4), rng.standard_normal(4)
    S = np.stack([a, b * b, 2 * a], axis=axis)
    W = rng.standard_normal(S.shape)
    for st in (fad.stack, np.stack):
        value, (ga, gb) = fad.value_and_grad(
            lambda a, b: fad.sum(W * st([a, b * b, 2 * a], axis=axis)), argnums=(0, 1))(a, b)
        close(value, np.sum(W * S))
        Wm = np.moveaxis(W, axis, 0)
        close(ga, Wm[0] + 2 * Wm[2])
        close(gb, 2 * b * Wm[1])


def test_stack_with_constants_and_vars():
    x = np.array([1.5, -0.5])
    W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # rows: x, a constant row, and a row of two Vars
    g = fad.grad(lambda a: fad.sum(W * fad.stack([a, np.array([7.0, 8.0]), [a[1], a[0] * a[0]]])))(x)
    close(g, W[0] + np.array([2 * x[0] * W[2, 1], W[2, 0]]))


@pytest.mark.parametrize("axis", [0, 1])
def test_concatenate(axis):
    rng = rng_for("concat", axis)
    A, B = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    const = np.ones((2, 3))
    C = np.concatenate([A, const, B ** 2, A], axis=axis)
    W = rng.standard_normal(C.shape)
    parts = np.split(W, 4, axis=axis)
    for cat in (fad.concatenate, np.concatenate):
        value, (gA, gB) = fad.value_and_grad(
            lambda A, B: fad.sum(W * cat([A, const, B ** 2, A], axis=axis)), argnums=(0, 1))(A, B)
        close(value, np.sum(W * C))
        close(gA, parts[0] + parts[3])
        close(gB, 2 * B * parts[2])


def test_concatenate_1d_slices():
    x = np.arange(1.0, 6.0)
    W = np.arange(10.0, 16.0)
    g = fad.grad(lambda a: fad.sum(W * fad.concatenate([a[:3], a[2:] * a[2:]])))(x)
    expected = np.zeros(5)
    expected[:3] += W[:3]
    expected[2:] += 2 * x[2:] * W[3:]
    close(g, expected)


def test_where_strong_zeros():
    x = np.array([0.0, -1.0, 4.0, 0.25, -2.0, 9.0, 0.0])
    g = fad.grad(lambda a: fad.sum(fad.where(a > 0, fad.sqrt(a), 0.0)))(x)
    expected = np.array([0.0, 0.0, 0.25, 1.0, 0.0, 1.0 / 6.0, 0.0])
    assert not np.any(np.isnan(g)), g
    close(g, expected, rtol=1e-15, atol=0)
    # log of negatives is NaN on the unselected side: still exact zeros, finite value
    value, g2 = fad.value_and_grad(lambda a: fad.sum(fad.where(a > 0, fad.log(a), a * 3.0)))(x[1:])
    close(value, np.sum(np.where(x[1:] > 0, np.log(np.abs(x[1:]) + (x[1:] <= 0)), 3 * x[1:])))
    close(g2, np.where(x[1:] > 0, 1 / np.where(x[1:] > 0, x[1:], 1), 3.0), rtol=1e-15, atol=0)
    # forward mode through the same where: the tangent is exact zero where not selected
    _, t = fad.jvp(lambda a: fad.where(a > 0, fad.sqrt(a), 0.0), x, np.ones_like(x))
    assert not np.any(np.isnan(t)), t
    close(t, expected, rtol=1e-15, atol=0)


def test_where_two_active_sides_and_constant_condition():
    rng = rng_for("where2")
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    cond = rng.random((3, 4)) > 0.5
    ga, gb = fad.grad(lambda a, b: fad.sum(fad.where(cond, a * a, fad.sin(b))), argnums=(0, 1))(a, b)
    close(ga, np.where(cond, 2 * a, 0.0), rtol=0, atol=0)
    close(gb, np.where(cond, 0.0, np.cos(b)), rtol=0, atol=0)
    # broadcasting condition (1, 4) against (3, 4) sides, through np.where
    c1 = np.array([[True, False, False, True]])
    g = fad.grad(lambda a: fad.sum(np.where(c1, a, 2.0 * a)))(a)
    close(g, np.broadcast_to(np.where(c1, 1.0, 2.0), (3, 4)), rtol=0, atol=0)


def test_where_rejects_an_active_condition():
    with pytest.raises(TypeError):
        fad.grad(lambda a: fad.sum(fad.where(a, a, 0.0)))(np.ones(3))


# ---------------------------------------------------------------------------
# mixed scalar / block code
# ---------------------------------------------------------------------------

def test_scalar_loop_over_block_result():
    rng = rng_for("mix1")
    A, x = rng.standard_normal((6, 4)), rng.standard_normal(4)

    def f(x):
        h = np.tanh(A @ x)
        s = 0
        for i in range(len(h)):
            s = s + h[i] ** 3
        return s
    value, g = fad.value_and_grad(f)(x)
    h = np.tanh(A @ x)
    close(value, np.sum(h ** 3))
    close(g, A.T @ (3 * h ** 2 * (1 - h ** 2)))


def test_block_ops_on_vars_built_in_a_loop():
    rng = rng_for("mix2")
    x, W, A = rng.standard_normal(5), rng.standard_normal(4), rng.standard_normal((3, 4))

    def f(x):
        vs = []
        for i in range(4):
            vs.append(x[i] * x[i + 1])        # scalar Var nodes
        v = fad.stack(vs)                      # -> Array
        return fad.sum(W * np.exp(v)) + fad.sum(A @ v)
    value, g = fad.value_and_grad(f)(x)
    v = x[:4] * x[1:]
    close(value, np.sum(W * np.exp(v)) + np.sum(A @ v))
    dv = W * np.exp(v) + A.sum(axis=0)
    expected = np.zeros(5)
    expected[:4] += dv * x[1:]
    expected[1:] += dv * x[:4]
    close(g, expected)


def test_block_scalar_block_interleaved():
    """block -> scalar loop -> stack -> block -> scalar."""
    rng = rng_for("mix3")
    A, B, x = rng.standard_normal((4, 3)), rng.standard_normal((2, 4)), rng.standard_normal(3)

    def f(x):
        h = fad.sin(A @ x)                               # block
        u = [h[i] * h[(i + 1) % 4] for i in range(4)]    # scalar Vars
        y = np.tanh(B @ fad.stack(u))                    # block on a stack of Vars
        return y[0] * y[1] + y[0]                        # scalar again

    z = A @ x
    h = np.sin(z)
    u = h * np.roll(h, -1)
    y = np.tanh(B @ u)
    dy = np.array([y[1] + 1.0, y[0]])
    du = B.T @ (dy * (1 - y ** 2))
    dh = du * np.roll(h, -1) + np.roll(du * h, 1)
    expected = A.T @ (dh * np.cos(z))
    value, g = fad.value_and_grad(f)(x)
    close(value, y[0] * y[1] + y[0])
    close(g, expected)
    fd_close(g, fd_grad(lambda x: (lambda y: y[0] * y[1] + y[0])(
        np.tanh(B @ (np.sin(A @ x) * np.roll(np.sin(A @ x), -1)))), x))


def test_matmul_with_a_list_of_vars():
    A = np.array([[1.0, 2.0], [3.0, -1.0]])
    x = np.array([0.5, 2.0])
    g = fad.grad(lambda x: fad.sum(fad.matmul(A, [x[0] * x[1], x[1]])))(x)
    # sum(A @ [x0 x1, x1]) = (a00+a10) x0 x1 + (a01+a11) x1
    close(g, [4.0 * x[1], 4.0 * x[0] + 1.0])


def test_scalar_loop_over_2d_block_result():
    rng = rng_for("mix4")
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def f(A):
        C = A @ B
        s = 0.0
        for i in range(3):
            for j in range(2):
                s = s + fad.sin(C[i, j])
        return s
    close(fad.grad(f)(A), np.cos(A @ B) @ B.T)


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


# ---------------------------------------------------------------------------
# NumPy interop
# ---------------------------------------------------------------------------

def test_numpy_functions_on_arrays():
    rng = rng_for("interop")
    X, M = rng.standard_normal((3, 4)), rng.standard_normal((4, 3))
    w3, w4 = rng.standard_normal(3), rng.standard_normal(4)
    close(fad.grad(lambda a: np.sum(np.tanh(a)))(X), 1 - np.tanh(X) ** 2)
    close(fad.grad(lambda a: np.sum(np.exp(a)))(X), np.exp(X))
    close(fad.grad(lambda a: np.sum(w4 * np.sum(a, axis=0)))(X), np.broadcast_to(w4, (3, 4)))
    close(fad.grad(lambda a: np.mean(a * a))(X), 2 * X / 12)
    close(fad.grad(lambda a: np.sum(w3 * np.mean(a, axis=1)))(X), np.broadcast_to(w3[:, None] / 4, (3, 4)))
    close(fad.grad(lambda a: np.sum(np.dot(a, M)))(X), np.broadcast_to(M.sum(axis=1), (3, 4)))
    close(fad.grad(lambda a: np.sum(np.matmul(M, a)))(X), np.broadcast_to(M.sum(axis=0)[:, None], (3, 4)))
    close(fad.grad(lambda a: np.dot(w3, np.dot(a, w4)))(X), np.outer(w3, w4))
    close(fad.grad(lambda a: np.sum(np.where(X > 0, a, -a)))(X), np.where(X > 0, 1.0, -1.0))
    close(fad.grad(lambda a: np.sum(np.maximum(a, 0.0) * 3.0))(X), np.where(X > 0, 3.0, 0.0))
    close(fad.grad(lambda a: np.sum(np.minimum(a, 0.0)))(X), np.where(X < 0, 1.0, 0.0))
    close(fad.grad(lambda a: np.sum(w4 * np.concatenate([a, a * 2.0], axis=0)[4]))(X),
          np.vstack([np.zeros((1, 4)), 2 * w4, np.zeros((1, 4))]))
    close(fad.grad(lambda a: np.sum(np.stack([a, a * a], axis=0)[1]))(X), 2 * X)
    close(fad.grad(lambda a: np.sum(np.reshape(a, (4, 3)) * M))(X), M.reshape(3, 4))
    close(fad.grad(lambda a: np.sum(np.transpose(a) * M))(X), M.T)


def test_ndarray_and_array_in_either_order():
    rng = rng_for("either")
    X, C = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    c = rng.standard_normal(4)
    gl = fad.grad(lambda a: fad.sum((C + a) * (c - a) / (2.0 + C * C)))(X)
    gr = fad.grad(lambda a: fad.sum((a + C) * (-(a - c)) / (C * C + 2.0)))(X)
    expected = ((c - X) - (C + X)) / (2.0 + C * C)
    close(gl, expected)
    close(gr, expected)
    # ndarray on the left of ** and / with the Array as exponent / divisor
    b = np.array([1.5, 2.0, 0.5, 3.0])
    x = np.array([0.3, -0.7, 1.1, 2.0])
    close(fad.grad(lambda a: fad.sum(b ** a))(x), np.log(b) * b ** x)
    close(fad.grad(lambda a: fad.sum(b / (a + 3.0)))(x), -b / (x + 3.0) ** 2)


def test_unsupported_numpy_function_raises_naming_it():
    with pytest.raises(TypeError, match="histogram"):
        fad.grad(lambda a: np.sum(np.histogram(a)[0]))(np.ones(4))
    with pytest.raises(TypeError, match="searchsorted"):
        fad.grad(lambda a: np.sum(np.searchsorted(a, 0.5)))(np.ones(4))
    # the library stays usable afterwards
    close(fad.grad(lambda a: np.sum(a * a))(np.arange(3.0)), [0.0, 2.0, 4.0])


def test_item_assignment_raises_type_error():
    def f(a):
        a[0] = 1.0
        return fad.sum(a)
    with pytest.raises(TypeError):
        fad.grad(f)(np.ones(3))

    def g(a):
        a[1:] = a[:-1]
        return fad.sum(a)
    with pytest.raises(TypeError):
        fad.grad(g)(np.ones(3))


def test_array_cannot_silently_become_an_ndarray():
    with pytest.raises(TypeError):
        fad.grad(lambda a: float(np.asarray(a).sum()))(np.ones(3))


def test_numpy_sum_of_zero_d_results():
    """A 0-d ndarray input is an ndarray: NumPy-style code on it must work.

    (x ** 2 of a 0-d Array is recorded as a scalar node; np.sum of it must
    still be the same number and derivative.)"""
    x = np.array(1.5)
    value, g = fad.value_and_grad(lambda a: np.sum(a ** 2) + np.sum(np.sin(a)))(x)
    close(value, 2.25 + np.sin(1.5))
    close(g, 3.0 + np.cos(1.5))


def test_ndarray_methods_common_in_numpy_code():
    A = np.array([[1.0, 5.0, 2.0], [4.0, 0.5, 3.0]])

    def f(a):
        b = a.copy().astype(np.float64)
        return b.max() + fad.sum(b.max(axis=0)) + b.min(axis=1, keepdims=True)[1, 0]
    g = fad.grad(f)(A)
    expect = np.zeros_like(A)
    expect[0, 1] += 1          # global max
    expect[1, 0] += 1          # column maxima: 4, 5, 3
    expect[0, 1] += 1
    expect[1, 2] += 1
    expect[1, 1] += 1          # row minimum of row 1
    np.testing.assert_array_equal(g, expect)
    import pytest
    with pytest.raises(TypeError, match="astype"):
        fad.grad(lambda a: fad.sum(a.astype(np.int64)))(A)


# ---------------------------------------------------------------------------
# NumPy parity: plain NumPy code run on fad.Array must give NumPy's values and
# shapes, and derivatives that match central finite differences
# ---------------------------------------------------------------------------

def _check_parity(f, x):
    """f's value (seen inside the recording) and Jacobian (both modes) agree with NumPy/FD."""
    y0 = np.asarray(f(x), dtype=float)
    Jfd = fd_jacobian(f, x, relative=False)
    seen = {}

    def g(a):
        out = f(a)
        seen["value"] = np.asarray(out.value)
        return out

    J = fad.jacobian(g, mode="rev")(x)
    assert seen["value"].shape == y0.shape
    np.testing.assert_allclose(seen["value"], y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(J, Jfd, atol=1e-5)
    np.testing.assert_allclose(fad.jacobian(f, mode="fwd")(x), Jfd, atol=1e-5)


X5 = np.array([0.3, -1.2, 0.7, 2.1, -0.4])
X34 = np.arange(12.0).reshape(3, 4) / 7.0 - 0.8
X234 = np.sin(np.arange(24.0)).reshape(2, 3, 4)


# parity bugs found by probing (fixed since: each docstring says what was wrong)

def test_hstack_with_zero_d_items_follows_numpy():
    """np.hstack of a 1-D Array with a scalar (a Var or a float) crashes.

    NumPy's hstack applies atleast_1d to every item, so
    np.hstack([x, x[0]]) and np.hstack([x, 1.0]) have shape (n + 1,) and
    np.hstack([x[0], x[1]]) has shape (2,).  fastad's _hstack (arrays.py:358)
    only uses axis 0 when *every* item is 1-D; with a 0-d item it picks axis=1
    and raises numpy's AxisError "axis 1 is out of bounds", and two Vars raise
    "zero-dimensional arrays cannot be concatenated"."""
    _check_parity(lambda a: np.hstack([a, a[0]]), X5)
    _check_parity(lambda a: np.hstack([a, 1.0]), X5)
    _check_parity(lambda a: np.hstack([a[0], a[1] * 2.0]), X5)


def test_vstack_of_vars_follows_numpy():
    """np.vstack([x[0], x[1]]) raises "zero-dimensional arrays cannot be
    concatenated"; NumPy (atleast_2d on each item) gives shape (2, 1).
    fastad's _vstack (arrays.py:363-364) reshapes only 1-D items to (1, -1)."""
    _check_parity(lambda a: np.vstack([a[0], a[1] * 2.0]), X5)


def test_pow_with_modulo_is_not_silently_ignored():
    """pow(a, 2, 5) on a fad.Array silently returns a ** 2 (the modulo is
    dropped by Array.__pow__, _var.pyx:468); NumPy raises TypeError for a
    three-argument pow on an ndarray, and fastad's own Var.__pow__ refuses a
    modulo too.  A silently wrong value is worse than an error."""
    with pytest.raises(TypeError):
        pow(X5, 2, 5)                  # NumPy's behaviour
    with pytest.raises(TypeError):
        fad.jacobian(lambda a: pow(a, 2, 5))(X5)


def test_positional_dtype_is_not_taken_as_keepdims():
    """NumPy's positional order is sum(a, axis, dtype, out, keepdims) and
    ndarray.sum/mean(axis, dtype, ...).  fastad's sum/mean (arrays.py:180,
    191; _var.pyx:498, 501) take (axis, keepdims), so a positional dtype lands
    in keepdims and NumPy later fails with the baffling
    "'type' object cannot be interpreted as an integer" (or
    "'NoneType' ..." for a.mean(0, None)).  Either compute the NumPy result
    or raise a TypeError that names dtype."""
    cases = [lambda a: np.sum(a, 1, np.float64), lambda a: a.mean(0, None)]
    for f in cases:
        try:
            J = fad.jacobian(f)(X34)
        except TypeError as e:
            assert "dtype" in str(e), f"unclear error: {e}"
        else:
            assert J.shape == np.shape(f(X34)) + X34.shape


def test_np_where_single_argument_error_is_clear():
    """np.where(cond) with one argument (NumPy: the indices of the nonzero
    elements) on a fad.Array raises Python's
    "where() missing 2 required positional arguments: 'a' and 'b'", which
    says nothing about fastad or what to use instead (arrays.py:376 wraps
    fastad.where, which needs three arguments).  Expected: a TypeError that
    names np.where and fastad (like every other unsupported NumPy call)."""
    with pytest.raises(TypeError, match="fastad"):
        fad.grad(lambda a: np.sum(a[np.where(a)[0]]))(X5)


# edge cases that worked when probed

@pytest.mark.parametrize("f, x", [
    (lambda a: a + np.linspace(0, 1, 4).reshape(1, 4), X34[:, :1]),   # (3,1)+(1,4)
    (lambda a: a * a.T, X34[:, :1]),                                   # (3,1)*(1,3)
    (lambda a: np.arange(10.0).reshape(2, 5) - a, X5),                 # (2,5)-(5,)
    (lambda a: X5 / a, np.array(1.5)),                                 # (5,) / 0-d Array
    (lambda a: X34 / a[1], X5),                                        # 2-D / Var
    (lambda a: a[0] ** np.abs(X34), X5),                               # Var ** 2-D
    (lambda a: np.abs(a) ** a, X5),                                    # Array ** Array
    (lambda a: np.abs(a) ** 0.5, X5),
    (lambda a: 2.0 ** a, X5),
    (lambda a: abs(-a), X34),
])
def test_broadcasting_and_powers(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("axis", [None, -1, -2, (0, 2), (-1, 0), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_mean_axis_tuples(axis, keepdims):
    _check_parity(lambda a: np.sum(a ** 3, axis=axis, keepdims=keepdims), X234)
    _check_parity(lambda a: np.mean(a ** 3, axis=axis, keepdims=keepdims), X234)


@pytest.mark.parametrize("f, x", [
    (lambda a: a[::-2] * 1.0, X5),
    (lambda a: a[..., 1] * a[0, ...].sum(), X234),
    (lambda a: a[None, :] * a[:, np.newaxis], X5),
    (lambda a: a[a > 0] ** 2, X5),
    (lambda a: a[np.array([0, 0, 2, 2, 2])] * a[[1, 1, 1, 1, 1]], X5),
    (lambda a: fad.stack([a[1][2], a[1, 2], a[-1][-2]]) if not isinstance(a, np.ndarray)
     else np.stack([a[1][2], a[1, 2], a[-1][-2]]), X34),
    (lambda a: (a @ a.T)[:, 1] + (a * 2)[::-1, 0], X34),
    (lambda a: a[:, ::-1, [0, 3]] * 2.0, X234),
])
def test_indexing(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("f, x", [
    (lambda a: np.dot(a, a), X5),
    (lambda a: np.dot(a, X34[0]), X34),
    (lambda a: np.where(a > 0, a, 0.0), X5),
    (lambda a: np.maximum(a, X34[0]), X34),
    (lambda a: np.concatenate([a, a ** 2], axis=-1), X34),
    (lambda a: np.stack([a, 2 * a], axis=1), X34),
    (lambda a: np.reshape(a, -1) * 1.0, X34),
    (lambda a: np.transpose(a, (2, 0, 1)) * 1.0, X234),
    (lambda a: np.max(a, axis=-1, keepdims=True) + np.min(a, axis=0).sum(), X34),
    (lambda a: np.squeeze(np.expand_dims(a, 1), axis=1) * 1.0, X34),
    (lambda a: np.vstack([a, 2 * a]) + np.hstack([a, a])[3:8], X5),
    (lambda a: np.linalg.norm(a), X34),
])
def test_numpy_functions(f, x):
    _check_parity(f, x)


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_axis_matches_reference(axis, keepdims):
    def ref(x):
        m = np.max(x, axis=axis, keepdims=True)
        r = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return r if keepdims else np.squeeze(r, axis=axis)

    _check_parity(lambda a: ref(a) if isinstance(a, np.ndarray)
                  else fad.logsumexp(a, axis=axis, keepdims=keepdims), X34)


def test_result_types():
    with pytest.raises(ValueError, match="jacobian"):
        fad.grad(lambda a: np.sum(a, keepdims=True))(X5)          # shape (1,)
    g = fad.grad(lambda a: np.reshape(np.sum(a, keepdims=True), ()))(X5)  # shape ()
    np.testing.assert_allclose(g, np.ones(5))

    def f(a):
        s = np.sum(a)                        # a reduction to a scalar is a Var
        assert type(s) is fad.Var and isinstance(s.value, float)
        assert a.value.shape == a.shape == (5,)
        return fad.exp(s) if s > 0 else abs(s) ** 0.5
    assert X5.sum() > 0
    np.testing.assert_allclose(fad.grad(f)(X5), np.full(5, np.exp(X5.sum())))


# ---------------------------------------------------------------------------
# multi-seeded vjp, multi-direction jvp, jacobian modes through array blocks
# ---------------------------------------------------------------------------

def test_multiseed_vjp_through_matmul_vector_input():
    rng = rng_for("vjp")
    m, n = 4, 5
    A, x = rng.standard_normal((m, n)), rng.standard_normal(n)
    y, pullback = fad.vjp(lambda x: np.tanh(A @ x), x)
    t = np.tanh(A @ x)
    close(y, t)
    J = (1 - t ** 2)[:, None] * A
    multi = pullback(np.eye(m))
    assert multi.shape == (m, n)
    singles = np.stack([pullback(e) for e in np.eye(m)])
    close(multi, singles, rtol=1e-14, atol=1e-15)
    close(multi, J)
    S = rng.standard_normal((7, m))
    close(pullback(S), S @ J)


def test_multiseed_vjp_through_matmul_matrix_input():
    """f(W) = W @ X with W active: k seeds pulled through one GEMM."""
    rng = rng_for("vjpW")
    W, X = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    y, pullback = fad.vjp(lambda W: np.sin(W @ X), W)
    Z = W @ X
    close(y, np.sin(Z))
    seeds = rng.standard_normal((6, 3, 5))
    got = pullback(seeds)
    assert got.shape == (6, 3, 4)
    for k in range(6):
        close(got[k], (seeds[k] * np.cos(Z)) @ X.T)
        close(got[k], pullback(seeds[k]), rtol=1e-14, atol=1e-15)
    # full Jacobian by identity seeds: d y_ij / d W_kl = delta_ik cos(Z_ij) X_lj
    eye = np.eye(15).reshape(15, 3, 5)
    Jrows = pullback(eye).reshape(3, 5, 3, 4)
    expected = np.einsum("ik,ij,lj->ijkl", np.eye(3), np.cos(Z), X)
    close(Jrows, expected)


def test_multidirection_jvp_through_matmul():
    rng = rng_for("jvp")
    A, x = rng.standard_normal((4, 5)), rng.standard_normal(5)
    f = lambda x: np.tanh(A @ x) * fad.sum(x * x)  # noqa: E731
    t = np.tanh(A @ x)
    s = np.sum(x * x)
    J = s * (1 - t ** 2)[:, None] * A + np.outer(t, 2 * x)
    V = rng.standard_normal((3, 5))
    y, JV = fad.jvp(f, x, V)
    close(y, t * s)
    assert JV.shape == (3, 4)
    singles = np.stack([fad.jvp(f, x, v)[1] for v in V])
    close(JV, singles, rtol=1e-14, atol=1e-15)
    close(JV, V @ J.T)


def test_multidirection_jvp_matrix_input():
    rng = rng_for("jvpW")
    W, X = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    V = rng.standard_normal((5, 3, 4))
    y, JV = fad.jvp(lambda W: (W @ X) ** 2, W, V)
    Z = W @ X
    assert JV.shape == (5, 3, 2)
    for k in range(5):
        close(JV[k], 2 * Z * (V[k] @ X))


def test_jacobian_fwd_equals_rev_for_array_function():
    rng = rng_for("jac")
    A, x = rng.standard_normal((5, 5)), rng.standard_normal(5)
    f = lambda x: np.tanh(A @ x) + x ** 2  # noqa: E731
    t = np.tanh(A @ x)
    expected = (1 - t ** 2)[:, None] * A + np.diag(2 * x)
    Jf = fad.jacobian(f, mode="fwd")(x)
    Jr = fad.jacobian(f, mode="rev")(x)
    Ja = fad.jacobian(f)(x)
    close(Jf, expected)
    close(Jr, expected)
    close(Ja, expected)
    close(fad.jacfwd(f)(x), fad.jacrev(f)(x))


def test_jacobian_of_matrix_function_fwd_equals_rev():
    rng = rng_for("jac2")
    X, B = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    f = lambda X: fad.exp(X @ B) / fad.sum(X)  # noqa: E731
    Jf = fad.jacobian(f, mode="fwd")(X)
    Jr = fad.jacobian(f, mode="rev")(X)
    assert Jf.shape == (3, 4, 3, 2)
    close(Jf, Jr, rtol=1e-12, atol=1e-14)
    E, S = np.exp(X @ B), np.sum(X)
    expected = np.einsum("ik,lj->ijkl", np.eye(3), B)[...] * (E / S)[:, :, None, None] \
        - (E / S ** 2)[:, :, None, None] * np.ones((3, 2))
    close(Jf, expected)


# ---------------------------------------------------------------------------
# replay of block nodes
# ---------------------------------------------------------------------------

_RA = np.array([[0.5, -1.0, 0.3, 0.8], [1.2, 0.4, -0.7, 0.1], [-0.3, 0.9, 0.6, -1.1]])
_RB = np.array([[0.2, -0.4, 1.0, 0.0, 0.3], [-0.5, 0.1, 0.7, -0.2, 0.9], [0.6, 0.6, -0.3, 0.4, -1.0]])


def replay_f(x):
    h = np.tanh(_RA @ x)                      # matmul + tanh blocks
    M = h[:, None] + _RB                      # broadcasting add
    s = fad.sum(M * M)
    r = fad.where(x > 0, x ** 2, -0.5 * x)    # recorded comparison
    return s + fad.sum(r)


def replay_f_np(x):
    h = np.tanh(_RA @ x)
    return np.sum((h[:, None] + _RB) ** 2) + np.sum(np.where(x > 0, x ** 2, -0.5 * x))


def replay_grad(x):
    h = np.tanh(_RA @ x)
    dh = 2 * np.sum(h[:, None] + _RB, axis=1)
    return _RA.T @ (dh * (1 - h ** 2)) + np.where(x > 0, 2 * x, -0.5)


def replay_vec(x):
    return np.tanh(_RA @ x) * fad.sum(fad.where(x > 0, x, 0.1 * x)) + _RB[:, 0]


def replay_vec_jac(x):
    t = np.tanh(_RA @ x)
    s = np.sum(np.where(x > 0, x, 0.1 * x))
    return s * (1 - t ** 2)[:, None] * _RA + np.outer(t, np.where(x > 0, 1.0, 0.1))


X0 = np.array([0.7, -0.4, 1.3, -0.9])
X2 = np.array([0.2, -1.5, 0.6, -0.1])     # same sign pattern
X3 = np.array([0.2, 0.5, 0.6, -0.1])      # element 1 flips sign


def test_replay_scalar_tape_matches_fresh_derivatives():
    tape = fad.record(replay_f, X0)
    close(tape(X0), replay_f_np(X0))
    close(tape(X2), replay_f_np(X2))
    g = tape.gradient(X2)
    close(g, replay_grad(X2))
    close(g, fad.grad(replay_f)(X2), rtol=1e-14, atol=1e-15)
    v, g2 = tape.value_and_gradient(X2)
    close(v, replay_f_np(X2))
    close(g2, g, rtol=0, atol=0)
    V = np.array([[1.0, 0, 0, 0], [0.3, -0.2, 0.5, 1.0]])
    close(tape.jvp(X2, V), V @ replay_grad(X2))
    close(tape.jvp(X2, V[1]), V[1] @ replay_grad(X2))
    close(tape.vjp(X2, 2.0), 2.0 * replay_grad(X2))
    close(tape.jacobian(X2), replay_grad(X2))
    # and back at the recorded point
    close(tape.gradient(X0), replay_grad(X0))


def test_replay_vector_tape_matches_fresh_jacobian():
    tape = fad.record(replay_vec, X0)
    J2 = replay_vec_jac(X2)
    close(tape(X2), np.tanh(_RA @ X2) * np.sum(np.where(X2 > 0, X2, 0.1 * X2)) + _RB[:, 0])
    for mode in ("fwd", "rev", "auto"):
        close(tape.jacobian(X2, mode=mode), J2)
    close(tape.jacobian(X2), fad.jacobian(replay_vec)(X2), rtol=1e-14, atol=1e-15)
    V = np.random.default_rng(1).standard_normal((3, 4))
    close(tape.jvp(X2, V), V @ J2.T)
    Y = np.random.default_rng(2).standard_normal((5, 3))
    close(tape.vjp(X2, Y), Y @ J2)
    close(tape.vjp(X2, Y[0]), Y[0] @ J2)
    _, pb = fad.vjp(replay_vec, X2)
    close(tape.vjp(X2, Y), pb(Y), rtol=1e-14, atol=1e-15)


def test_replay_branch_change_raises_then_tape_still_works():
    tape = fad.record(replay_f, X0)
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(X3)
    with pytest.raises(fad.BranchChangedError):
        tape(X3)
    with pytest.raises(fad.BranchChangedError):
        tape.jacobian(X3)
    close(tape.gradient(X2), replay_grad(X2))
    close(tape(X2), replay_f_np(X2))
    # a fresh recording at X3 is right there
    close(fad.grad(replay_f)(X3), replay_grad(X3))


def test_replay_max_selection_change_raises():
    f = lambda x: np.max(x) * fad.sum(x)  # noqa: E731
    tape = fad.record(f, np.array([1.0, 3.0, 2.0]))
    close(tape.gradient(np.array([0.5, 4.0, 1.0])), [4.0, 4.0 + 5.5, 4.0])
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(np.array([5.0, 3.0, 2.0]))
    close(tape.gradient(np.array([0.0, 1.0, 0.5])), [1.0, 1.0 + 1.5, 1.0])


def test_replay_pickle_round_trip_with_blocks():
    tape = fad.record(replay_f, X0)
    tape2 = pickle.loads(pickle.dumps(tape))
    close(tape2(X2), replay_f_np(X2))
    close(tape2.gradient(X2), replay_grad(X2))
    close(tape2.jacobian(X2), replay_grad(X2))
    with pytest.raises(fad.BranchChangedError):
        tape2.gradient(X3)
    close(tape2.gradient(X0), replay_grad(X0))
    vt = pickle.loads(pickle.dumps(fad.record(replay_vec, X0)))
    close(vt.jacobian(X2, mode="rev"), replay_vec_jac(X2))
    close(vt.jacobian(X2, mode="fwd"), replay_vec_jac(X2))


# ---------------------------------------------------------------------------
# more block kinds together; transposed and broadcast slot views
# ---------------------------------------------------------------------------

def _many(x, lib):
    """One function using most block and view kinds; lib is fad or a NumPy shim."""
    X = x.reshape(3, 4)
    s = lib.sum(X * X, axis=0)
    m = np.max(X, axis=1)
    w = lib.where(X[0] > 0, X[1], X[2] * 3.0)
    st = lib.stack([s[:3], m, w[1:]])
    c = lib.concatenate([st.reshape(-1), X[[0, 0, 2], [1, 1, 3]], lib.logsumexp(X, axis=0)])
    return np.tanh(c) * 2.0 + c[::-1]


class _NumpyLib:
    sum = staticmethod(np.sum)
    where = staticmethod(np.where)
    stack = staticmethod(np.stack)
    concatenate = staticmethod(np.concatenate)

    @staticmethod
    def logsumexp(X, axis):
        return np.log(np.sum(np.exp(X), axis=axis))


def test_jacobian_many_block_kinds_fwd_rev_and_differences():
    x = rng_for("many").standard_normal(12)
    f = lambda x: _many(x, fad)  # noqa: E731
    Jf = fad.jacobian(f, mode="fwd")(x)
    Jr = fad.jacobian(f, mode="rev")(x)
    assert Jf.shape == (16, 12)
    close(Jf, Jr, rtol=1e-12, atol=1e-14)
    Jfd = np.stack([fd_grad(lambda x_: _many(x_, _NumpyLib)[i], x) for i in range(16)])
    fd_close(Jf, Jfd)
    # and replayed at a nearby point with the same branches
    x2 = x + 1e-3 * rng_for("many2").standard_normal(12)
    tape = fad.record(f, x)
    close(tape(x2), _many(x2, _NumpyLib), rtol=1e-12, atol=1e-14)
    close(tape.jacobian(x2), fad.jacobian(f, mode="rev")(x2), rtol=1e-12, atol=1e-14)


def test_multiseed_vjp_and_jvp_through_transposed_active_operand():
    rng = rng_for("vjpT")
    A, x = rng.standard_normal((4, 3)), rng.standard_normal(4)
    f = lambda A: np.sin(A.T @ x)  # noqa: E731
    z = A.T @ x
    # d y_j / d A_ik = cos(z_j) delta_jk x_i
    J = np.einsum("j,jk,i->jik", np.cos(z), np.eye(3), x)
    y, pb = fad.vjp(f, A)
    close(pb(np.eye(3)), J)
    close(pb(np.eye(3)), np.stack([pb(e) for e in np.eye(3)]), rtol=1e-14, atol=1e-15)
    V = rng.standard_normal((2, 4, 3))
    _, JV = fad.jvp(f, A, V)
    close(JV, np.einsum("jik,vik->vj", J, V))
    close(fad.jacobian(f, mode="fwd")(A), J)
    close(fad.jacobian(f, mode="rev")(A), J)


def test_scalar_base_power_and_unary_operators_on_arrays():
    a = np.array([0.3, 1.2, -0.5])
    close(fad.grad(lambda a: fad.sum(2.0 ** a))(a), np.log(2.0) * 2.0 ** a)
    close(fad.grad(lambda a: fad.sum(a ** 3.0))(a), 3 * a ** 2)
    close(fad.grad(lambda a: fad.sum(-a + abs(a) * 2.0 + (+a) * 5.0))(a), -1 + 2 * np.sign(a) + 5)


def test_where_with_broadcast_condition_repeats_slots():
    a = np.array([0.3, 1.2, -0.5])
    cond = np.array([[True, False, True], [False, False, True]])
    close(fad.grad(lambda a: fad.sum(fad.where(cond, a, 2.0 * a)))(a), [3.0, 4.0, 2.0])
    # and in reverse with k seeds, where repeated slots must add in every lane
    _, pb = fad.vjp(lambda a: fad.where(cond, a, a * a), a)
    seeds = np.arange(12.0).reshape(2, 2, 3)
    for k in range(2):
        S = seeds[k]
        expected = np.where(cond, S, 2 * a * S).sum(axis=0)
        close(pb(seeds)[k], expected)


def test_replay_elementwise_maximum_follows_the_new_point():
    """np.maximum is an element-wise op (no recorded comparison): replay at a
    point where the other side wins gives that side's derivative."""
    f = lambda x: fad.sum(np.maximum(x, 0.0) * x)  # noqa: E731
    tape = fad.record(f, np.array([1.0, -1.0, 2.0]))
    x2 = np.array([-1.0, 2.0, 3.0])
    close(tape(x2), 4.0 + 9.0)
    close(tape.gradient(x2), [0.0, 4.0, 6.0])
    close(tape.gradient(x2), fad.grad(f)(x2))


def test_replay_comparison_between_two_active_arrays():
    f = lambda x: fad.sum(fad.where(x[:2] > x[2:], x[:2] * x[2:], x[:2] - x[2:]))  # noqa: E731
    x0 = np.array([3.0, 0.0, 1.0, 2.0])      # 3 > 1 True, 0 > 2 False
    tape = fad.record(f, x0)
    x2 = np.array([5.0, -1.0, 2.0, 4.0])
    close(tape.gradient(x2), [2.0, 1.0, 5.0, -1.0])
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(np.array([5.0, 3.0, 2.0, 1.0]))   # second comparison flips
    with pytest.raises(fad.BranchChangedError):
        tape(np.array([0.5, -1.0, 2.0, 4.0]))           # first comparison flips
    close(tape.gradient(x0), [1.0, 1.0, 3.0, -1.0])


def test_replay_pickle_round_trip_with_selection():
    g = lambda x: fad.sum(np.max(x, axis=0) * np.array([1.0, 2.0]))  # noqa: E731
    X0 = np.arange(6.0).reshape(3, 2)
    tape = pickle.loads(pickle.dumps(fad.record(g, X0)))
    close(tape.gradient(2 * X0), [[0, 0], [0, 0], [1, 2]])
    close(tape(2 * X0), 8.0 + 2 * 10.0)
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(-X0)
    close(tape.gradient(X0 + 1), [[0, 0], [0, 0], [1, 2]])


def test_unknown_ndarray_method_is_an_attribute_error_naming_it():
    import fastad as fad

    def f(x):
        with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
            x.frobnicate()
        return fad.sum(x)
    np.testing.assert_array_equal(fad.grad(f)(np.ones(3)), np.ones(3))


def test_mm_strong_checks_the_smaller_of_result_and_factors():
    # an outer product (factors of 20 numbers, result of 100) checks the
    # factors; a dot of long rows checks the result.  Either way a zero
    # against an inf is an exact zero and finite input gives NumPy's product
    from fastad._blocks import _mm_strong
    rng = np.random.default_rng(5)
    for X, Y in ((rng.standard_normal((10, 1)), rng.standard_normal((1, 10))),
                 (rng.standard_normal((2, 50)), rng.standard_normal((50, 3))),
                 (rng.standard_normal((6, 4)).T, rng.standard_normal((5, 6)).T)):
        np.testing.assert_array_equal(_mm_strong(X, Y), X @ Y)
    X = np.arange(1.0, 11.0).reshape(10, 1)
    Y = np.arange(1.0, 11.0).reshape(1, 10)
    X[3, 0], Y[0, 5] = np.inf, 0.0
    with np.errstate(invalid="ignore"):
        want = X @ Y
    want[3, 5] = 0.0                         # inf * 0: strong zero, not NaN
    got = _mm_strong(X, Y)
    np.testing.assert_array_equal(got, want)
    assert np.isposinf(got[3, 0]) and not np.isnan(got).any()
    big = np.full((1, 2), 1e200)                 # finite factors that overflow: NumPy's inf
    np.testing.assert_array_equal(_mm_strong(big.T, big), np.full((2, 2), np.inf))
    # the long-row case with an inf against zeros only
    X = np.ones((2, 50))
    Y = np.ones((50, 3))
    X[1, 7], Y[7, :] = np.inf, 0.0
    np.testing.assert_array_equal(_mm_strong(X, Y), np.full((2, 3), 49.0))


def test_matmul_keeps_strong_zeros():
    # a row of the constant matrix that where() does not select holds inf:
    # its zero cotangent (and zero tangents) pass nothing, as element-wise ops do
    A = np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 1.0], [4.0, 5.0, 6.0]])
    mask = np.array([True, False, True])
    f = lambda x: fad.sum(fad.where(mask, A @ x, 0.0) * np.array([1.0, 1.0, 2.0]))
    x = np.array([0.5, -1.0, 2.0])
    want = A[0] + 2 * A[2]
    close(fad.grad(f)(x), want)
    close(fad.vjp(lambda x: fad.where(mask, A @ x, 0.0), x)[1](np.array([[1.0, 0.0, 2.0],
                                                                        [0.0, 0.0, 1.0]])),
          [want, A[2]])
    # forward: a zero tangent through the inf column of a constant
    g = lambda x: fad.where(np.array([False, True]), np.array([[np.inf, 1.0], [0.0, 2.0]]) @ x, 0.0)
    close(fad.jvp(g, np.array([1.0, 1.0]), np.array([0.0, 1.0]))[1], [0.0, 2.0])
    # the matrix active too
    h = lambda W: fad.where(np.array([True, False]), W @ np.array([1.0, 2.0]), 0.0)
    close(fad.jacrev(h)(np.ones((2, 2))), [[[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])


def test_operand_is_compiled_and_pickles_at_every_protocol():
    # Operand is a compiled class: its constructor, slots_operand's fast path and
    # pickling (every protocol; object.__new__ cannot make it) agree field by field
    import pickle
    from fastad._blocks import Operand, slots_operand
    idx = np.arange(5, 11, dtype=np.intp).reshape(2, 3)
    made, fast = Operand(idx, None, 5, True), slots_operand(idx, 5, True)
    const = Operand(None, np.arange(4.0))
    for o in (made, fast, const):
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(o, protocol=proto))
            for f in Operand.__slots__:
                a, b = getattr(o, f), getattr(back, f)
                assert type(a) is type(b) and (np.array_equal(a, b) if isinstance(a, np.ndarray)
                                               else a == b), (f, proto)
    for f in Operand.__slots__:
        a, b = getattr(made, f), getattr(fast, f)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, f
    assert made.flat.shape == (6,) and made.active and not const.active
    assert const.const is not None and const.start == -1 and const.unique is True
    spread = Operand(np.array([[3, 1], [1, 2]]))           # a repeated slot: not unique
    assert spread.unique is False and spread.start == -1 and spread.flat.tolist() == [3, 1, 1, 2]
    with pytest.raises(AttributeError):
        made.extra = 1                                    # fixed fields, as with __slots__
