"""A recurrent network (Elman RNN) with its parameters in a dict.

h_t = tanh(x_t Wx + h_{t-1} Wh + b), y_t = h_t Wy + by; the loss is the mean
squared error of the outputs against targets.  fad.grad returns a dict with
the same keys.

    python examples/rnn.py
"""
import numpy as np

import fastad as fad


def init_params(n_in, n_hidden, n_out, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "Wx": rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in),
        "Wh": rng.standard_normal((n_hidden, n_hidden)) / np.sqrt(n_hidden),
        "b": np.zeros(n_hidden),
        "Wy": rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden),
        "by": np.zeros(n_out),
    }


def run(params, xs):
    """Outputs (T, batch, n_out) for inputs xs (T, batch, n_in), from h = 0."""
    h = np.zeros((xs.shape[1], params["Wh"].shape[0]))
    ys = []
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ params["Wx"] + h @ params["Wh"] + params["b"])
        ys.append(h @ params["Wy"] + params["by"])
    return np.stack(ys)


def loss(params, xs, targets):
    r = run(params, xs) - targets
    return np.sum(r * r) / r.size


def make_data(T=12, batch=8, n_in=3, n_out=2, seed=1):
    """Noisy sine waves in, the same waves shifted one step out."""
    rng = np.random.default_rng(seed)
    t = np.arange(T + 1)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (1, batch, 1))
    freq = np.linspace(0.3, 0.6, n_in)[None, None, :]
    waves = np.sin(freq * t + phase) + 0.05 * rng.standard_normal((T + 1, batch, n_in))
    return waves[:-1], waves[1:, :, :n_out]


def main():
    xs, targets = make_data()
    params = init_params(xs.shape[2], 16, targets.shape[2])
    grad_loss = fad.value_and_grad(loss)
    for step in range(60):
        value, g = grad_loss(params, xs, targets)
        params = {k: params[k] - 0.1 * g[k] for k in params}
        if step % 20 == 0:
            print(f"step {step:3d}  loss {value:.4f}")
    print(f"final loss {loss(params, xs, targets):.4f}")


if __name__ == "__main__":
    main()
