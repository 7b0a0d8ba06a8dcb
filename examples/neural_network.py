"""A small neural network classifier trained with a hand-written Adam.

The parameters are a list of (W, b) tuples, one per layer, exactly as one
would write it with NumPy; fad.grad returns the gradient in the same
structure.

    python examples/neural_network.py
"""
import numpy as np

import fastad as fad


def init_params(sizes, seed=0):
    """[(W, b), ...] for layers sizes[0] -> sizes[1] -> ... (scaled normal init)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((m, n)) / np.sqrt(m), np.zeros(n))
            for m, n in zip(sizes[:-1], sizes[1:])]


def predict(params, X):
    """Logits: tanh hidden layers, a linear last layer."""
    h = X
    for W, b in params[:-1]:
        h = np.tanh(h @ W + b)
    W, b = params[-1]
    return h @ W + b


def loss(params, X, Y):
    """Mean softmax cross-entropy; Y holds one-hot labels."""
    logits = predict(params, X)
    log_norm = np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -np.sum(Y * (logits - log_norm)) / X.shape[0]


def make_data(n=128, d=4, classes=3, seed=1):
    """Points around `classes` random centres, with one-hot labels."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, d))
    labels = rng.integers(0, classes, n)
    X = centres[labels] + rng.standard_normal((n, d))
    return X, np.eye(classes)[labels]


def tree_map(fn, *trees):
    """fn applied leaf by leaf to lists of (W, b) tuples."""
    return [tuple(fn(*leaves) for leaves in zip(*layers)) for layers in zip(*trees)]


def adam(grad_fn, params, steps, lr=0.05, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma and Ba) on a list of (W, b) tuples."""
    m = tree_map(np.zeros_like, params)
    v = tree_map(np.zeros_like, params)
    for t in range(1, steps + 1):
        g = grad_fn(params)
        m = tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        params = tree_map(
            lambda p, m_, v_: p - lr * (m_ / (1 - b1 ** t)) / (np.sqrt(v_ / (1 - b2 ** t)) + eps),
            params, m, v)
    return params


def main():
    X, Y = make_data()
    params = init_params([X.shape[1], 16, 16, Y.shape[1]])
    print(f"initial loss {loss(params, X, Y):.4f}")
    params = adam(lambda p: fad.grad(loss)(p, X, Y), params, steps=50)
    accuracy = np.mean(np.argmax(predict(params, X), axis=1) == np.argmax(Y, axis=1))
    print(f"loss after 50 Adam steps {loss(params, X, Y):.4f}, "
          f"training accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
