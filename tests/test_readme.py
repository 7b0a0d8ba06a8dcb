"""The README's code runs as written (so the docs cannot rot)."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run_and_give_the_gradients_they_claim():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    ns = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), ns)
    # the Rosenbrock example: recorded and replayed gradients are the analytic ones
    x = ns["x"] + 0.1
    g = np.zeros_like(x)
    g[:-1] = -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    np.testing.assert_allclose(ns["g2"], g, rtol=1e-12)
    # the sparse Jacobian example: tridiagonal, diagonal -2 + h^2 exp(u), off-diagonals 1
    u = ns["u"] + 0.1
    h2 = 1.0 / (u.size + 1) ** 2
    J2 = ns["J2"]
    assert J2.nnz == 3 * u.size - 2
    np.testing.assert_allclose(J2.diagonal(), -2 + h2 * np.exp(u), rtol=1e-14)
    np.testing.assert_allclose(J2.diagonal(1), 1.0)
    np.testing.assert_allclose(J2.diagonal(-1), 1.0)
    # the primitive example: d/dx logsumexp(tanh(x)) = softmax(tanh x) * (1 - tanh^2 x)
    t = np.tanh(np.array([0.1, 0.5, -0.3]))
    np.testing.assert_allclose(ns["g"], np.exp(t) / np.exp(t).sum() * (1 - t ** 2), rtol=1e-12)
