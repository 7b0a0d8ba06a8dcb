"""Batched replay (tape.gradient(X, batch=True)) against a Python loop of
single-point calls: the Rosenbrock loop tape, n = 1,000 inputs, b = 1,000
points, workers = 1 and 2.  Interleaved medians: the variants run in turn,
round after round, in one process (the machine is shared), and the table
gives throughput ratios to the loop.

    python benchmarks/bench_batch.py [--n 1000] [--b 1000] [--rounds 15]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastad as fad  # noqa: E402 - this checkout's, not an installed one


def rosenbrock(x):
    s = 0
    for i in range(len(x) - 1):
        a = 1 - x[i]
        b = x[i + 1] - x[i] * x[i]
        s = s + a * a + 100.0 * (b * b)
    return s


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--b", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--method", default="gradient",
                    choices=["gradient", "value", "hvp", "jvp"])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    tape = fad.record(rosenbrock, rng.uniform(0.5, 1.5, args.n))
    X = rng.uniform(0.5, 1.5, (args.b, args.n))
    V = rng.normal(size=X.shape)
    if args.method == "gradient":
        loop = lambda: [tape.gradient(x) for x in X]                    # noqa: E731
        batch = lambda w: tape.gradient(X, batch=True, workers=w)       # noqa: E731
    elif args.method == "value":
        loop = lambda: [tape(x) for x in X]                             # noqa: E731
        batch = lambda w: tape(X, batch=True, workers=w)                # noqa: E731
    elif args.method == "hvp":
        loop = lambda: [tape.hvp(x, v) for x, v in zip(X, V)]           # noqa: E731
        batch = lambda w: tape.hvp(X, V, batch=True, workers=w)         # noqa: E731
    else:
        loop = lambda: [tape.jvp(x, v) for x, v in zip(X, V)]           # noqa: E731
        batch = lambda w: tape.jvp(X, V, batch=True, workers=w)         # noqa: E731
    variants = {"loop of single-point calls": loop,
                "batch=True, workers=1": lambda: batch(1),
                "batch=True, workers=2": lambda: batch(2)}
    ref = np.asarray(loop())
    for name, fn in variants.items():         # warm up; and the results agree
        assert np.array_equal(np.asarray(fn()), ref), name
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["loop of single-point calls"])
    print(f"tape.{args.method}: Rosenbrock loop, n = {args.n} ({len(tape)} operations), "
          f"b = {args.b} points, {args.rounds} interleaved rounds")
    print()
    print("| variant | median time per batch | points/s | throughput vs loop |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.1f} ms | {args.b / med:,.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
