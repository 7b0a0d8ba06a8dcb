"""The lecture notes' neural networks, differentiated by fastad.

The two-layer network in matrix form (z = W1 x + b1, h = sigmoid(z),
y = W2 h + b2, L = 1/2 ||y - t||^2) is checked against the notes' backprop
formulas; a batched MLP written in plain NumPy is checked against a
hand-written NumPy backprop; the scalar-loop forms give the same gradients
as the matrix forms.
"""
import numpy as np
import pytest

import fastad as fad
from conftest import close, sigmoid_np


# ---------------------------------------------------------------------------
# the notes' two-layer network, one sample
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
