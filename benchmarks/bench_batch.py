"""Batched replay (tape.gradient(X, batch=True)) against a Python loop of
single-point calls: the Rosenbrock loop tape, n = 1,000 inputs, b = 1,000
points, workers = 1 and 2.  Interleaved medians: the variants run in turn,
round after round, in one process (the machine is shared), and the table
gives throughput ratios to the loop.

    python benchmarks/bench_batch.py [--n 1000] [--b 1000] [--rounds 15]
    python benchmarks/bench_batch.py --dask [--b 4000] [--chunk 250]

--dask: fastad.dask.map_tape on a LocalCluster of 1 and 2 worker
processes (one thread each) against the local batch (workers=1), and the
per-task overhead: a batch of tiny chunks of a tiny tape, time per task.
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
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--method", default="gradient",
                    choices=["gradient", "value", "hvp", "jvp"])
    args = ap.parse_args(argv)
    if args.dask:
        return bench_dask(args)
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


def bench_dask(args):
    from dask.distributed import Client, LocalCluster

    import fastad.dask as fdask
    rng = np.random.default_rng(0)
    tape = fad.record(rosenbrock, rng.uniform(0.5, 1.5, args.n))
    X = rng.uniform(0.5, 1.5, (args.b, args.n))
    small = fad.record(rosenbrock, np.ones(3))
    Xs = np.ones((400, 3))
    ref = tape.gradient(X, batch=True, workers=1)
    clusters = {w: LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                dashboard_address=None) for w in (1, 2)}
    clients = {w: Client(c, set_as_default=False) for w, c in clusters.items()}
    try:
        import dask.array as da
        # X on each cluster beforehand, as data that lives there would be
        Xd = {w: c.persist(da.from_array(X, chunks=(args.chunk, args.n)))
              for w, c in clients.items()}

        def on(w):
            G = fdask.map_tape(tape, Xd[w], "gradient", client=clients[w])
            return clients[w].compute(G).result()

        def tiny(w):        # 400 tasks of one point each
            G = fdask.map_tape(small, Xs, "gradient", chunk_size=1, client=clients[w])
            return clients[w].compute(G).result()

        def plain(w):       # the same 400 tasks doing x * 2: Dask's own cost
            G = da.from_array(Xs, chunks=(1, 3)).map_blocks(np.multiply, 2.0)
            return clients[w].compute(G).result()

        variants = {"local batch, workers=1 (no Dask)":
                    lambda: tape.gradient(X, batch=True, workers=1),
                    "Dask, 1 worker process": lambda: on(1),
                    "Dask, 2 worker processes": lambda: on(2)}
        for name, fn in variants.items():
            assert np.array_equal(fn(), ref), name
        tiny(1), tiny(2), plain(1), plain(2)
        times = {name: [] for name in variants}
        ttimes = {1: [], 2: []}
        ptimes = {1: [], 2: []}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            for w in (1, 2):
                t0 = time.perf_counter()
                tiny(w)
                ttimes[w].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                plain(w)
                ptimes[w].append(time.perf_counter() - t0)
    finally:
        for c in clients.values():
            c.close()
        for c in clusters.values():
            c.close()
    base = statistics.median(times["local batch, workers=1 (no Dask)"])
    print(f"fastad.dask.map_tape(tape, X, 'gradient'): Rosenbrock loop, n = {args.n} "
          f"({len(tape)} operations), b = {args.b} points in chunks of {args.chunk} "
          f"({-(-args.b // args.chunk)} tasks), {args.rounds} interleaved rounds")
    print()
    print("| variant | median time | points/s | throughput vs local batch |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.1f} ms | {args.b / med:,.0f} | {base / med:.2f}x |")
    print()
    print("Per-task overhead: 400 tasks of one point of a 3-input tape")
    print()
    print("| cluster | map_tape: 400 tasks | per task | plain Dask x * 2: per task |")
    print("|---|---:|---:|---:|")
    for w, ts in ttimes.items():
        med = statistics.median(ts)
        pm = statistics.median(ptimes[w])
        print(f"| {w} worker process{'es' if w > 1 else ''} | {med * 1e3:.0f} ms | "
              f"{med / 400 * 1e3:.2f} ms | {pm / 400 * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
