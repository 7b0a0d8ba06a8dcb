"""Fixed per-block cost of array-mode gradients: fad.grad of a tiny network
(4-3-3-2, batch 2, the loss of a classifier: matmul, bias add, tanh, exp,
sum over an axis, log, ...) beside the hand-written NumPy backprop, medians
of interleaved repeats in one process.  At this size the arithmetic is
negligible, so (fastad - backprop) / blocks recorded is the Python-level
cost of recording a block and running its pullback.

    python benchmarks/bench_block_overhead.py [--reps N] [--profile]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
import fastad as fad  # noqa: E402

SIZES = (4, 3, 3, 2)
BATCH = 2
rng = np.random.default_rng(0)
X = rng.standard_normal((BATCH, SIZES[0]))
Y = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], BATCH)]
P = [(rng.standard_normal((m, n)) / np.sqrt(m), 0.1 * rng.standard_normal(n))
     for m, n in zip(SIZES[:-1], SIZES[1:])]


def loss(params):
    h = X
    for W, b in params[:-1]:
        h = np.tanh(h @ W + b)
    W, b = params[-1]
    logits = h @ W + b
    log_norm = np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -np.sum(Y * (logits - log_norm)) / BATCH


def backprop(params):
    hs = [X]
    for W, b in params[:-1]:
        hs.append(np.tanh(hs[-1] @ W + b))
    W, b = params[-1]
    logits = hs[-1] @ W + b
    e = np.exp(logits)
    zbar = (e / e.sum(axis=1, keepdims=True) - Y) / BATCH
    grads = []
    for i in range(len(params) - 1, -1, -1):
        W, b = params[i]
        grads.append((hs[i].T @ zbar, zbar.sum(0)))
        if i:
            zbar = (zbar @ W.T) * (1 - hs[i] * hs[i])
    return grads[::-1]


def n_blocks():
    """Blocks the loss records (scalar nodes are not counted)."""
    return len(fad.record(loss, P).blocks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2001)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    g = fad.grad(loss)
    for (a, b), (c, d) in zip(g(P), backprop(P)):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b, d, rtol=1e-10, atol=1e-13)
    if args.profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(args.reps):
            g(P)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(30)
        return
    nb = n_blocks()
    sides = {"hand backprop": lambda: backprop(P), "fad.grad": lambda: g(P)}
    ts = {k: [] for k in sides}
    for _ in range(20):
        for f in sides.values():
            f()
    for _ in range(args.reps):
        for k, f in sides.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in ts.items()}
    for k, m in med.items():
        print(f"{k:16s} {m * 1e6:8.1f} us  {m / med['hand backprop']:6.2f}x hand")
    print(f"blocks recorded  {nb}; fastad's cost over backprop per block: "
          f"{(med['fad.grad'] - med['hand backprop']) / nb * 1e6:.2f} us")


if __name__ == "__main__":
    main()
