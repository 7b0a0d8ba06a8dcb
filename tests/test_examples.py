"""The programs in examples/: each runs as a script, and its gradient agrees
with central finite differences of its own plain-NumPy loss."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import fastad as fad
from conftest import fd_close, leaves_of as leaves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")



def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(EXAMPLES, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rebuild(t, it):
    if isinstance(t, dict):
        return {k: rebuild(t[k], it) for k in sorted(t)}
    if isinstance(t, (list, tuple)):
        return type(t)(rebuild(o, it) for o in t)
    return next(it)


def fd_tree_grad(f, t, h=1e-6, max_per_leaf=12):
    """Central differences of scalar f at pytree t, at up to max_per_leaf
    entries of each leaf: (indices per leaf, values per leaf)."""
    ls = [np.array(v, dtype=np.float64) for v in leaves(t)]
    out = []
    for i, leaf in enumerate(ls):
        picks = np.linspace(0, leaf.size - 1, min(leaf.size, max_per_leaf)).astype(int)
        vals = []
        for j in picks:
            fs = []
            for s in (h, -h):
                moved = [v.copy() for v in ls]
                moved[i].reshape(-1)[j] += s
                tree = rebuild(t, iter([float(m) if np.ndim(v) == 0 and not
                                        isinstance(v, np.ndarray) else m
                                        for m, v in zip(moved, leaves(t))]))
                fs.append(float(f(tree)))
            vals.append((fs[0] - fs[1]) / (2 * h))
        out.append((picks, np.array(vals)))
    return out


def check_against_fd(f, params, rtol=1e-5, atol=1e-7):
    g = fad.grad(f)(params)
    for gl, (picks, vals) in zip(leaves(g), fd_tree_grad(f, params)):
        fd_close(np.ravel(gl)[picks], vals, rtol=rtol, atol=atol)
    return g


NAMES = ["logistic_regression", "neural_network", "rnn",
         "gaussian_process"]


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_as_a_script(name):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(      # this checkout's fastad
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, name + ".py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "loss" in r.stdout or "log p" in r.stdout


def test_logistic_regression_gradient():
    m = load("logistic_regression")
    X, y = m.make_data()
    params = (np.random.default_rng(3).standard_normal(X.shape[1]) * 0.5, 0.2)
    g = check_against_fd(lambda p: m.loss(p, X, y), params)
    assert isinstance(g, tuple) and isinstance(g[1], float)
    w, b = m.train(X, y, steps=30)
    assert m.loss((w, b), X, y) < m.loss(m.init_params(X.shape[1]), X, y)


def test_neural_network_gradient_and_adam():
    m = load("neural_network")
    X, Y = m.make_data()
    params = m.init_params([X.shape[1], 16, 16, Y.shape[1]])
    g = check_against_fd(lambda p: m.loss(p, X, Y), params)
    assert isinstance(g, list) and all(isinstance(layer, tuple) for layer in g)
    trained = m.adam(lambda p: fad.grad(m.loss)(p, X, Y), params, steps=20)
    assert m.loss(trained, X, Y) < 0.8 * m.loss(params, X, Y)


def test_rnn_gradient():
    m = load("rnn")
    xs, targets = m.make_data()
    params = m.init_params(xs.shape[2], 16, targets.shape[2])
    g = check_against_fd(lambda p: m.loss(p, xs, targets), params)
    assert sorted(g) == sorted(params)


def test_gaussian_process_gradient():
    m = load("gaussian_process")
    x, y = m.make_data()
    params = {"log_amp": 0.1, "log_length": -0.2, "log_noise": -1.0}
    g = check_against_fd(lambda p: m.neg_log_marginal_likelihood(p, x, y), params,
                         rtol=1e-5, atol=1e-6)
    assert sorted(g) == sorted(params)
    fitted = m.fit(x, y, steps=20)
    assert m.neg_log_marginal_likelihood(fitted, x, y) < \
        m.neg_log_marginal_likelihood({"log_amp": 0.0, "log_length": 0.0,
                                       "log_noise": -1.0}, x, y)
