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
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
import fastad as fad  # noqa: E402
from _common import classifier, interleaved_medians  # noqa: E402

SIZES = (4, 3, 3, 2)
BATCH = 2
X, Y, P, make_loss, backprop = classifier(SIZES, BATCH)
loss = make_loss(np)


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
    interleaved_medians(sides, 20)          # (warm-up)
    med = interleaved_medians(sides, args.reps)
    for k, m in med.items():
        print(f"{k:16s} {m * 1e6:8.1f} us  {m / med['hand backprop']:6.2f}x hand")
    print(f"blocks recorded  {nb}; fastad's cost over backprop per block: "
          f"{(med['fad.grad'] - med['hand backprop']) / nb * 1e6:.2f} us")


if __name__ == "__main__":
    main()
