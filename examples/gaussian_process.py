"""Gaussian-process regression: fit the kernel's hyperparameters by
minimizing the negative log marginal likelihood.

The hyperparameters are a dict of floats (logarithms, so they stay
positive); the likelihood uses np.linalg.cholesky, solve and slogdet.

    python examples/gaussian_process.py
"""
import numpy as np

import fastad as fad


def make_data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n))
    y = np.sin(2 * x) + 0.1 * rng.standard_normal(n)
    return x, y


def kernel(params, x):
    """Squared-exponential covariance plus noise on the diagonal."""
    sqdist = (x[:, None] - x[None, :]) ** 2
    amp, length = np.exp(2 * params["log_amp"]), np.exp(params["log_length"])
    noise = np.exp(2 * params["log_noise"])
    return amp * np.exp(-0.5 * sqdist / length ** 2) + (noise + 1e-8) * np.eye(x.size)


def neg_log_marginal_likelihood(params, x, y):
    """0.5 y^T K^-1 y + 0.5 log det K + n/2 log(2 pi), with K = L L^T."""
    K = kernel(params, x)
    L = np.linalg.cholesky(K)
    z = np.linalg.solve(L, y)             # K^-1 = L^-T L^-1, so y^T K^-1 y = |z|^2
    sign, logdet = np.linalg.slogdet(K)
    return 0.5 * np.sum(z * z) + 0.5 * logdet + 0.5 * x.size * np.log(2 * np.pi)


def fit(x, y, steps=100, lr=0.02):
    params = {"log_amp": 0.0, "log_length": 0.0, "log_noise": -1.0}
    grad_nll = fad.grad(neg_log_marginal_likelihood)
    for _ in range(steps):
        g = grad_nll(params, x, y)
        params = {k: params[k] - lr * g[k] for k in params}
    return params


def main():
    x, y = make_data()
    params = {"log_amp": 0.0, "log_length": 0.0, "log_noise": -1.0}
    print(f"initial -log p(y) {neg_log_marginal_likelihood(params, x, y):.4f}")
    params = fit(x, y)
    print(f"fitted -log p(y) {neg_log_marginal_likelihood(params, x, y):.4f}, "
          + ", ".join(f"{k} = {v:.3f}" for k, v in params.items()))


if __name__ == "__main__":
    main()
