"""The lecture notes' worked examples, checked against the notes' hand-derived adjoints.

Logistic regression (the notes' Wengert list):

    z = w x + b,  y = sigmoid(z),  L = 1/2 (y - t)^2,  R = 1/2 w^2,  Lreg = L + lam R

    Lreg_bar = 1, R_bar = lam, L_bar = 1, y_bar = (y - t), z_bar = y_bar sigmoid'(z),
    w_bar = z_bar x + R_bar w,  b_bar = z_bar

Two-layer network in scalar form:

    z_i = sum_j W1_ij x_j + b1_i,  h_i = sigmoid(z_i),  y_i = sum_j W2_ij h_j + b2_i,
    L = 1/2 sum_k (y_k - t_k)^2

    y_bar_i = (y_i - t_i), W2_bar_ij = y_bar_i h_j, b2_bar_i = y_bar_i,
    h_bar_i = sum_k y_bar_k W2_ki, z_bar_i = h_bar_i sigmoid'(z_i),
    W1_bar_ij = z_bar_i x_j, b1_bar_i = z_bar_i

The same network in matrix form (z = W1 x + b1, h = sigmoid(z), y = W2 h + b2,
L = 1/2 ||y - t||^2) is checked against the notes' backprop formulas, and a
batched MLP written in plain NumPy against a hand-written NumPy backprop; the
scalar-loop forms give the same gradients as the matrix forms.
"""
import math

import numpy as np
import pytest

import fastad as fad
from conftest import close, sigmoid_np


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# ---------------------------------------------------------------------------
# single data point logistic regression
# ---------------------------------------------------------------------------

def lreg_fad(w, b, x, t, lam):
    z = w * x + b
    y = fad.sigmoid(z)
    L = 0.5 * (y - t) ** 2
    R = 0.5 * w ** 2
    return L + lam * R


def lreg_fad_explicit_sigmoid(w, b, x, t, lam):
    # the same program with sigmoid written out and squares as products
    z = w * x + b
    y = 1.0 / (1.0 + fad.exp(-z))
    L = 0.5 * (y - t) * (y - t)
    R = 0.5 * w * w
    return L + lam * R


def notes_adjoints(w, b, x, t, lam):
    """The reverse sweep exactly as written in the notes, on plain floats."""
    z = w * x + b
    y = _sigmoid(z)
    L = 0.5 * (y - t) ** 2
    R = 0.5 * w ** 2
    Lreg = L + lam * R
    Lreg_bar = 1.0
    R_bar = Lreg_bar * lam
    L_bar = Lreg_bar
    y_bar = L_bar * (y - t)
    z_bar = y_bar * (y * (1.0 - y))  # sigmoid'(z) = sigmoid(z) (1 - sigmoid(z))
    w_bar = z_bar * x + R_bar * w
    b_bar = z_bar
    x_bar = z_bar * w
    t_bar = -y_bar
    lam_bar = R
    return dict(Lreg=Lreg, w=w_bar, b=b_bar, x=x_bar, t=t_bar, lam=lam_bar)


CASES = [
    (0.5, -0.3, 1.2, 1.0, 0.1),
    (-1.3, 0.8, -0.7, 0.0, 0.01),
    (2.0, 0.0, 3.0, 0.5, 1.0),
    (0.0, 0.0, 0.0, 1.0, 0.0),
    (0.25, 1.5, -2.0, 1.0, 0.3),
    (1, 2, -1, 0, 2),  # ints everywhere: int inputs arrive as Vars, ints pass through
]


@pytest.mark.parametrize("program", [lreg_fad, lreg_fad_explicit_sigmoid])
@pytest.mark.parametrize("case", CASES)
def test_logistic_grad_w_b_matches_notes_adjoints(program, case):
    w, b, x, t, lam = case
    expected = notes_adjoints(*case)
    gw, gb = fad.grad(program, argnums=(0, 1))(w, b, x, t, lam)
    assert type(gw) is float and type(gb) is float
    close(gw, expected["w"], atol=1e-15)
    close(gb, expected["b"], atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_logistic_value_and_grad(case):
    expected = notes_adjoints(*case)
    value, (gw, gb) = fad.value_and_grad(lreg_fad, argnums=(0, 1))(*case)
    assert type(value) is float
    close(value, expected["Lreg"], atol=1e-15)
    close(gw, expected["w"], atol=1e-15)
    close(gb, expected["b"], atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_logistic_grad_all_five_inputs(case):
    """x, t and lam are inputs too: x_bar = z_bar w, t_bar = -(y - t), lam_bar = R."""
    expected = notes_adjoints(*case)
    grads = fad.grad(lreg_fad, argnums=(0, 1, 2, 3, 4))(*case)
    assert isinstance(grads, tuple) and len(grads) == 5
    for got, key in zip(grads, ["w", "b", "x", "t", "lam"]):
        close(got, expected[key], atol=1e-15)


@pytest.mark.parametrize("case", CASES[:4])
def test_logistic_single_argnum_w(case):
    expected = notes_adjoints(*case)
    gw = fad.grad(lreg_fad)(*case)  # argnums=0 by default
    close(gw, expected["w"], atol=1e-15)
    gb = fad.grad(lreg_fad, argnums=1)(*case)
    close(gb, expected["b"], atol=1e-15)


def test_logistic_params_as_ndarray():
    """theta = [w, b] as a 1-D array; the gradient is the ndarray [w_bar, b_bar]."""
    w, b, x, t, lam = 0.7, -0.2, 1.4, 1.0, 0.05

    def f(theta, x, t, lam):
        return lreg_fad(theta[0], theta[1], x, t, lam)

    g = fad.grad(f)(np.array([w, b]), x, t, lam)
    expected = notes_adjoints(w, b, x, t, lam)
    assert isinstance(g, np.ndarray) and g.shape == (2,)
    close(g, [expected["w"], expected["b"]], atol=1e-15)


# ---------------------------------------------------------------------------
# summed over many data points
# ---------------------------------------------------------------------------

def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=n)
    ts = (rng.uniform(size=n) < sigmoid_np(1.3 * xs - 0.4)).astype(float)
    return xs, ts


def summed_loss(w, b, xs, ts, lam):
    total = 0.0
    for i in range(len(xs)):
        z = w * xs[i] + b
        y = fad.sigmoid(z)
        total = total + 0.5 * (y - ts[i]) ** 2
    return total + lam * (0.5 * w * w)


def summed_expected(w, b, xs, ts, lam):
    wbar = 0.0
    bbar = 0.0
    xbar = np.zeros(len(xs))
    value = 0.0
    for i in range(len(xs)):
        z = w * xs[i] + b
        y = _sigmoid(z)
        value += 0.5 * (y - ts[i]) ** 2
        ybar = y - ts[i]
        zbar = ybar * y * (1.0 - y)
        wbar += zbar * xs[i]
        bbar += zbar
        xbar[i] = zbar * w
    value += lam * 0.5 * w * w
    wbar += lam * w
    return value, wbar, bbar, xbar


@pytest.mark.parametrize("w,b,lam", [(0.3, 0.1, 0.01), (-1.0, 0.5, 0.0), (2.5, -1.5, 1.0)])
def test_logistic_summed_over_data(w, b, lam):
    xs, ts = _data()
    value, wbar, bbar, _ = summed_expected(w, b, xs, ts, lam)
    v, (gw, gb) = fad.value_and_grad(summed_loss, argnums=(0, 1))(w, b, xs, ts, lam)
    # sums of many terms of both signs: allow for summation-order rounding
    scale = float(np.sum(np.abs(xs))) + len(xs)
    close(v, value, rtol=1e-12, atol=1e-14 * scale)
    close(gw, wbar, rtol=1e-12, atol=1e-14 * scale)
    close(gb, bbar, rtol=1e-12, atol=1e-14 * scale)


def test_logistic_summed_grad_wrt_data_array():
    """Differentiate with respect to the data: x_bar_i = z_bar_i w, an ndarray like xs."""
    w, b, lam = 0.8, -0.3, 0.1
    xs, ts = _data(n=150, seed=3)
    _, _, _, xbar = summed_expected(w, b, xs, ts, lam)
    g = fad.grad(summed_loss, argnums=2)(w, b, xs, ts, lam)
    assert isinstance(g, np.ndarray) and g.shape == xs.shape and g.dtype == np.float64
    close(g, xbar, atol=1e-15)


def test_logistic_gradient_descent_decreases_loss():
    """A few gradient steps with fad.grad reduce the loss (and track the hand-derived path)."""
    xs, ts = _data(n=100, seed=7)
    lam = 0.01
    w, b = 0.0, 0.0
    w_ref, b_ref = 0.0, 0.0
    g = fad.grad(summed_loss, argnums=(0, 1))
    first = summed_expected(w, b, xs, ts, lam)[0]
    for _ in range(20):
        gw, gb = g(w, b, xs, ts, lam)
        w, b = w - 0.05 * gw, b - 0.05 * gb
        _, ew, eb, _ = summed_expected(w_ref, b_ref, xs, ts, lam)
        w_ref, b_ref = w_ref - 0.05 * ew, b_ref - 0.05 * eb
    assert summed_expected(w, b, xs, ts, lam)[0] < first
    close(w, w_ref, rtol=1e-10, atol=1e-15)
    close(b, b_ref, rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------------------
# the two-layer network, written in the notes' scalar form
# ---------------------------------------------------------------------------

def network_loss(W1, b1, W2, b2, x, t):
    H, D = W1.shape
    O = W2.shape[0]
    h = []
    for i in range(H):
        z = b1[i]
        for j in range(D):
            z = z + W1[i, j] * x[j]
        h.append(fad.sigmoid(z))
    L = 0.0
    for i in range(O):
        y = b2[i]
        for j in range(H):
            y = y + W2[i, j] * h[j]
        L = L + 0.5 * (y - t[i]) ** 2
    return L


def network_expected(W1, b1, W2, b2, x, t):
    """The notes' scalar backprop formulas, looped exactly as written."""
    H, D = W1.shape
    O = W2.shape[0]
    z = [b1[i] + sum(W1[i, j] * x[j] for j in range(D)) for i in range(H)]
    h = [_sigmoid(zi) for zi in z]
    y = [b2[i] + sum(W2[i, j] * h[j] for j in range(H)) for i in range(O)]
    L = 0.5 * sum((y[k] - t[k]) ** 2 for k in range(O))
    L_bar = 1.0
    y_bar = [L_bar * (y[i] - t[i]) for i in range(O)]
    W2_bar = np.array([[y_bar[i] * h[j] for j in range(H)] for i in range(O)])
    b2_bar = np.array(y_bar)
    h_bar = [sum(y_bar[k] * W2[k, i] for k in range(O)) for i in range(H)]
    z_bar = [h_bar[i] * h[i] * (1.0 - h[i]) for i in range(H)]
    W1_bar = np.array([[z_bar[i] * x[j] for j in range(D)] for i in range(H)])
    b1_bar = np.array(z_bar)
    x_bar = np.array([sum(z_bar[i] * W1[i, j] for i in range(H)) for j in range(D)])
    return L, W1_bar, b1_bar, W2_bar, b2_bar, x_bar


def _network_params(D=4, H=5, O=3, seed=11):
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(H, D))
    b1 = rng.normal(size=H)
    W2 = rng.normal(size=(O, H))
    b2 = rng.normal(size=O)
    x = rng.normal(size=D)
    t = rng.normal(size=O)
    return W1, b1, W2, b2, x, t


@pytest.mark.parametrize("dims,seed", [((4, 5, 3), 11), ((1, 1, 1), 2), ((3, 7, 2), 5)])
def test_two_layer_network_matches_notes_backprop(dims, seed):
    D, H, O = dims
    W1, b1, W2, b2, x, t = _network_params(D, H, O, seed)
    L, eW1, eb1, eW2, eb2, _ = network_expected(W1, b1, W2, b2, x, t)
    value, grads = fad.value_and_grad(network_loss, argnums=(0, 1, 2, 3))(W1, b1, W2, b2, x, t)
    gW1, gb1, gW2, gb2 = grads
    close(value, L, atol=1e-15)
    for got, exp, like in [(gW1, eW1, W1), (gb1, eb1, b1), (gW2, eW2, W2), (gb2, eb2, b2)]:
        assert isinstance(got, np.ndarray)
        assert got.shape == like.shape
        close(got, exp, atol=1e-15)


def test_two_layer_network_matrix_form_agrees():
    """Same gradient as the notes' linear-algebra form: W2_bar = y_bar h^T, W1_bar = z_bar x^T."""
    W1, b1, W2, b2, x, t = _network_params(6, 4, 2, seed=21)
    z = W1 @ x + b1
    h = sigmoid_np(z)
    y = W2 @ h + b2
    y_bar = y - t
    h_bar = W2.T @ y_bar
    z_bar = h_bar * h * (1.0 - h)
    gW1, gb1, gW2, gb2 = fad.grad(network_loss, argnums=(0, 1, 2, 3))(W1, b1, W2, b2, x, t)
    close(gW2, np.outer(y_bar, h), atol=1e-15)
    close(gb2, y_bar, atol=1e-15)
    close(gW1, np.outer(z_bar, x), atol=1e-15)
    close(gb1, z_bar, atol=1e-15)


def test_two_layer_network_grad_wrt_input_x():
    W1, b1, W2, b2, x, t = _network_params(4, 5, 3, seed=13)
    *_, ex = network_expected(W1, b1, W2, b2, x, t)
    gx = fad.grad(network_loss, argnums=4)(W1, b1, W2, b2, x, t)
    assert isinstance(gx, np.ndarray) and gx.shape == x.shape
    close(gx, ex, atol=1e-15)


# ---------------------------------------------------------------------------
# the notes' two-layer network in matrix form, one sample
# ---------------------------------------------------------------------------

@pytest.fixture
def net():
    rng = np.random.default_rng(20240607)
    return dict(W1=rng.standard_normal((5, 4)), b1=rng.standard_normal(5),
                W2=rng.standard_normal((3, 5)), b2=rng.standard_normal(3),
                x=rng.standard_normal(4), t=rng.standard_normal(3))


def loss_matrix(W1, b1, W2, b2, x, t):
    z = W1 @ x + b1
    h = fad.sigmoid(z)
    y = W2 @ h + b2
    return 0.5 * fad.sum((y - t) ** 2)


def loss_scalar(W1, b1, W2, b2, x, t):
    """The notes' scalar form: z_i = sum_j W1_ij x_j + b1_i, ... with a[i, j] indexing."""
    n_h, n_in = W1.shape
    n_out = W2.shape[0]
    h = []
    for i in range(n_h):
        z = b1[i]
        for j in range(n_in):
            z = z + W1[i, j] * x[j]
        h.append(fad.sigmoid(z))
    L = 0.0
    for k in range(n_out):
        y = b2[k]
        for i in range(n_h):
            y = y + W2[k, i] * h[i]
        L = L + 0.5 * (y - t[k]) ** 2
    return L


def notes_backprop(W1, b1, W2, b2, x, t):
    """The notes' formulas: W2bar = ybar h^T, b2bar = ybar, hbar = W2^T ybar,
    zbar = hbar .* sigmoid'(z), W1bar = zbar x^T, b1bar = zbar."""
    z = W1 @ x + b1
    s = sigmoid_np(z)
    y = W2 @ s + b2
    L = 0.5 * np.sum((y - t) ** 2)
    ybar = y - t
    W2bar = np.outer(ybar, s)
    b2bar = ybar
    hbar = W2.T @ ybar
    zbar = hbar * s * (1 - s)
    W1bar = np.outer(zbar, x)
    b1bar = zbar
    xbar = W1.T @ zbar
    return L, (W1bar, b1bar, W2bar, b2bar), xbar


def test_two_layer_network_matches_notes_formulas(net):
    args = (net["W1"], net["b1"], net["W2"], net["b2"], net["x"], net["t"])
    L, expected, _ = notes_backprop(*args)
    value, grads = fad.value_and_grad(loss_matrix, argnums=(0, 1, 2, 3))(*args)
    close(value, L, atol=1e-14)
    assert isinstance(grads, tuple) and len(grads) == 4
    for g, e in zip(grads, expected):
        assert g.shape == e.shape
        close(g, e, rtol=1e-12, atol=1e-14)


def test_two_layer_network_input_gradient(net):
    args = (net["W1"], net["b1"], net["W2"], net["b2"], net["x"], net["t"])
    _, _, xbar = notes_backprop(*args)
    close(fad.grad(loss_matrix, argnums=4)(*args), xbar, atol=1e-14)
    # and with every argument at once, including the target: tbar = -(y - t)
    grads = fad.grad(loss_matrix, argnums=(0, 1, 2, 3, 4, 5))(*args)
    y = net["W2"] @ sigmoid_np(net["W1"] @ net["x"] + net["b1"]) + net["b2"]
    close(grads[4], xbar, atol=1e-14)
    close(grads[5], -(y - net["t"]), atol=1e-14)


def test_two_layer_network_numpy_spelling(net):
    """The same loss spelled with NumPy calls (np.matmul, np.sum, np.exp)."""
    def loss_np(W1, b1, W2, b2, x, t):
        z = np.matmul(W1, x) + b1
        h = 1.0 / (1.0 + np.exp(-z))
        y = np.dot(W2, h) + b2
        return 0.5 * np.sum(np.square(y - t))
    args = (net["W1"], net["b1"], net["W2"], net["b2"], net["x"], net["t"])
    close(loss_np(*args), notes_backprop(*args)[0], atol=1e-14)     # runs on plain arrays too
    grads = fad.grad(loss_np, argnums=(0, 1, 2, 3))(*args)
    for g, e in zip(grads, notes_backprop(*args)[1]):
        close(g, e, rtol=1e-12, atol=1e-14)


def test_two_layer_network_scalar_loops_equal_matrix_form(net):
    args = (net["W1"], net["b1"], net["W2"], net["b2"], net["x"], net["t"])
    vs, gs = fad.value_and_grad(loss_scalar, argnums=(0, 1, 2, 3))(*args)
    vm, gm = fad.value_and_grad(loss_matrix, argnums=(0, 1, 2, 3))(*args)
    close(vs, vm, atol=1e-14)
    for a, b, e in zip(gs, gm, notes_backprop(*args)[1]):
        close(a, b, rtol=1e-12, atol=1e-14)
        close(a, e, rtol=1e-12, atol=1e-14)


def test_two_layer_network_replayed_over_samples(net):
    """Record once on one sample's parameters, replay the W1 gradient at others."""
    x, t = net["x"], net["t"]

    def loss_W1(W1):
        return loss_matrix(W1, net["b1"], net["W2"], net["b2"], x, t)
    tape = fad.record(loss_W1, net["W1"])
    rng = np.random.default_rng(7)
    for _ in range(3):
        W1 = rng.standard_normal((5, 4))
        L, (W1bar, _, _, _), _ = notes_backprop(W1, net["b1"], net["W2"], net["b2"], x, t)
        close(tape(W1), L, atol=1e-14)
        close(tape.gradient(W1), W1bar, atol=1e-14)


# ---------------------------------------------------------------------------
# batched MLP in plain NumPy: 32 samples, 8 -> 16 -> 3, tanh hidden, squared loss
# ---------------------------------------------------------------------------

def mlp_loss(W1, b1, W2, b2, X, T):
    """Plain NumPy; runs unchanged on ndarrays and under fad.grad."""
    H = np.tanh(np.matmul(X, W1) + b1)
    Y = np.matmul(H, W2) + b2
    return 0.5 * np.sum((Y - T) ** 2) / X.shape[0]


def mlp_backprop(W1, b1, W2, b2, X, T):
    n = X.shape[0]
    H = np.tanh(X @ W1 + b1)
    Y = H @ W2 + b2
    L = 0.5 * np.sum((Y - T) ** 2) / n
    dY = (Y - T) / n
    dW2 = H.T @ dY
    db2 = dY.sum(axis=0)
    dH = dY @ W2.T
    dZ = dH * (1 - H ** 2)
    dW1 = X.T @ dZ
    db1 = dZ.sum(axis=0)
    dX = dZ @ W1.T
    return L, (dW1, db1, dW2, db2), dX


@pytest.fixture
def mlp():
    rng = np.random.default_rng(11)
    return (rng.standard_normal((8, 16)) / 3, rng.standard_normal(16) / 3,
            rng.standard_normal((16, 3)) / 4, rng.standard_normal(3) / 4,
            rng.standard_normal((32, 8)), rng.standard_normal((32, 3)))


def test_batched_mlp_plain_numpy_under_grad(mlp):
    L, expected, _ = mlp_backprop(*mlp)
    out = mlp_loss(*mlp)                              # plain NumPy result
    assert isinstance(out, float)
    close(out, L, atol=1e-14)
    value, grads = fad.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3))(*mlp)
    close(value, L, rtol=1e-12, atol=1e-14)
    for g, e in zip(grads, expected):
        assert g.shape == e.shape
        close(g, e, rtol=1e-10, atol=1e-13)


def test_batched_mlp_input_gradient(mlp):
    _, _, dX = mlp_backprop(*mlp)
    close(fad.grad(mlp_loss, argnums=4)(*mlp), dX, rtol=1e-10, atol=1e-13)
    grads = fad.grad(mlp_loss, argnums=(0, 1, 2, 3, 4))(*mlp)
    close(grads[4], dX, rtol=1e-10, atol=1e-13)


def test_batched_mlp_loops_equal_matrix_form(mlp):
    """The same batched network with a[i, j] scalar loops."""
    def mlp_loops(W1, b1, W2, b2, X, T):
        n, d = X.shape
        m, k = W2.shape
        L = 0.0
        for s in range(n):
            h = []
            for i in range(m):
                z = b1[i]
                for j in range(d):
                    z = z + X[s, j] * W1[j, i]
                h.append(fad.tanh(z))
            for c in range(k):
                y = b2[c]
                for i in range(m):
                    y = y + h[i] * W2[i, c]
                L = L + 0.5 * (y - T[s, c]) ** 2
        return L / n
    vl, gl = fad.value_and_grad(mlp_loops, argnums=(0, 1, 2, 3))(*mlp)
    vm, gm = fad.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3))(*mlp)
    L, expected, _ = mlp_backprop(*mlp)
    close(vl, vm, rtol=1e-12, atol=1e-14)
    for a, b, e in zip(gl, gm, expected):
        close(a, b, rtol=1e-10, atol=1e-13)
        close(a, e, rtol=1e-10, atol=1e-13)


def test_batched_mlp_jacobian_of_outputs(mlp):
    """Jacobian of the network outputs (32, 3) w.r.t. b2 is the identity per
    sample; w.r.t. b1 it is W2^T scaled by tanh' (fwd and rev agree)."""
    W1, b1, W2, b2, X, _ = mlp

    def out_b1(b1):
        return np.matmul(np.tanh(np.matmul(X, W1) + b1), W2) + b2
    H = np.tanh(X @ W1 + b1)
    expected = np.einsum("sm,mc->scm", 1 - H ** 2, W2)
    Jf = fad.jacobian(out_b1, mode="fwd")(b1)
    Jr = fad.jacobian(out_b1, mode="rev")(b1)
    assert Jf.shape == (32, 3, 16)
    close(Jf, expected, rtol=1e-12, atol=1e-14)
    close(Jr, expected, rtol=1e-12, atol=1e-14)

    def out_b2(b2):
        return np.matmul(H, W2) + b2
    close(fad.jacobian(out_b2)(b2), np.broadcast_to(np.eye(3), (32, 3, 3)), rtol=0, atol=0)
