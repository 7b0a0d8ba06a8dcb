"""Shared by the benchmark scripts: the timing rule, the Rosenbrock loop, the
classifier network, and loading a fastad build from a checkout (to compare
two builds in one process)."""
import os
import sys
import time

import numpy as np


def load_build(root):
    """fastad as built in checkout `root`, as a fresh import (each build keeps
    the modules it was imported with, so two builds can run side by side)."""
    for k in list(sys.modules):
        if k == "fastad" or k.startswith("fastad."):
            del sys.modules[k]
    sys.path.insert(0, os.path.abspath(root))
    try:
        import fastad
    finally:
        sys.path.pop(0)
    if not os.path.abspath(fastad.__file__).startswith(os.path.abspath(root)):
        raise RuntimeError(f"{root}: imported {fastad.__file__} instead")
    return fastad


def median_time(fn, reps=9):
    """Median wall time of fn() over reps calls (time.perf_counter)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_medians(fns, rounds, clock=time.perf_counter):
    """{name: median seconds of one call of fns[name]()}, the calls
    interleaved round by round (a, b, c, a, b, c, ...) so that a change of
    machine speed hits every side alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def rosen(x):
    """Extended Rosenbrock as a scalar loop (works on floats, Vars and Arrays)."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
    return s


def rosen_products(x):
    """The same loop with products (the form whose recording cost shows:
    Python's float ** is slow)."""
    s = 0.0
    for i in range(len(x) - 1):
        a = 1.0 - x[i]
        b = x[i + 1] - x[i] * x[i]
        s = s + a * a + 100.0 * (b * b)
    return s


def rosen_grad(x):
    """Its analytic gradient."""
    g = np.zeros_like(x)
    g[:-1] = -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


def rosen_hess(x):
    """Its analytic Hessian, dense."""
    n = x.size
    H = np.zeros((n, n))
    i = np.arange(n - 1)
    H[i, i] += 2 - 400 * (x[1:] - x[:-1] ** 2) + 800 * x[:-1] ** 2
    H[i + 1, i + 1] += 200
    H[i, i + 1] = H[i + 1, i] = -400 * x[:-1]
    return H


def classifier(sizes, batch, seed=0):
    """A classifier network as users write it: data X, one-hot labels Y, the
    parameters as a list of (W, b), make_loss(np) (tanh layers, softmax
    cross-entropy, written once for a NumPy namespace: numpy or
    autograd.numpy) and the hand-written backprop of that loss."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0]))
    Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    params = [(rng.standard_normal((m, n)) / np.sqrt(m), 0.1 * rng.standard_normal(n))
              for m, n in zip(sizes[:-1], sizes[1:])]

    def make_loss(xp):
        def loss(params):
            h = X
            for W, b in params[:-1]:
                h = xp.tanh(h @ W + b)
            W, b = params[-1]
            logits = h @ W + b
            log_norm = xp.log(xp.sum(xp.exp(logits), axis=1, keepdims=True))
            return -xp.sum(Y * (logits - log_norm)) / batch
        return loss

    def backprop(params):
        hs = [X]
        for W, b in params[:-1]:
            hs.append(np.tanh(hs[-1] @ W + b))
        W, b = params[-1]
        logits = hs[-1] @ W + b
        e = np.exp(logits)
        zbar = (e / e.sum(axis=1, keepdims=True) - Y) / batch
        grads = []
        for i in range(len(params) - 1, -1, -1):
            W, b = params[i]
            grads.append((hs[i].T @ zbar, zbar.sum(0)))
            if i:
                zbar = (zbar @ W.T) * (1 - hs[i] * hs[i])
        return grads[::-1]

    return X, Y, params, make_loss, backprop


class Progress(object):
    """Progress lines on stderr with elapsed time and an estimate of time left.

    ``weights`` are the expected relative costs of the steps (1 each when
    omitted); the estimate scales the time spent so far by the weight left.
    """

    def __init__(self, label, weights, enabled=True):
        import sys
        self.out = sys.stderr
        self.label = label
        self.weights = [float(w) for w in weights]
        self.done = 0.0
        self.i = 0
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def step(self, what):
        """Announce the next step (call before running it)."""
        if self.enabled:
            el = time.perf_counter() - self.t0
            total = sum(self.weights)
            if self.done > 0:
                eta = "~%.0f s left" % (el * (total - self.done) / self.done)
            else:
                eta = "estimating"
            self.out.write("[%s %6.1fs] %d/%d %s (%s)\n"
                           % (self.label, el, self.i + 1, len(self.weights), what, eta))
            self.out.flush()
        if self.i < len(self.weights):
            self.done += self.weights[self.i]
        self.i += 1
