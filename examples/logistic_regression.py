"""Logistic regression fitted by gradient descent, gradients from fad.grad.

The parameters are a tuple (w, b); fad.grad returns the gradient as a
tuple of the same shapes.

    python examples/logistic_regression.py
"""
import numpy as np

import fastad as fad


def make_data(n=200, d=5, seed=0):
    """Points X (n, d) and labels y in {-1, +1} from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w_true = rng.standard_normal(d)
    y = np.where(X @ w_true + 0.3 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


def loss(params, X, y, lam=1e-2):
    """Mean logistic loss log(1 + exp(-y (X w + b))) plus an L2 penalty on w."""
    w, b = params
    z = X @ w + b
    return np.mean(np.log1p(np.exp(-y * z))) + lam * np.sum(w * w)


def init_params(d):
    return (np.zeros(d), 0.0)


def train(X, y, steps=100, lr=0.5):
    grad_loss = fad.grad(loss)
    w, b = init_params(X.shape[1])
    for _ in range(steps):
        gw, gb = grad_loss((w, b), X, y)
        w, b = w - lr * gw, b - lr * gb
    return w, b


def main():
    X, y = make_data()
    params = init_params(X.shape[1])
    print(f"initial loss {loss(params, X, y):.4f}")
    w, b = train(X, y)
    accuracy = np.mean(np.sign(X @ w + b) == y)
    print(f"final loss {loss((w, b), X, y):.4f}, training accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
