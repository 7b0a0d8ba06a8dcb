#!/usr/bin/env python
"""Run the fastad benchmarks and print a markdown table.

    python benchmarks/run.py [--quick] [--no-progress]

Exit status 1 if fastad's gradients disagree with the pure-Python tape or a
fastad call fails (the table is still printed, with a PROBLEMS section).
"""

import argparse
import os
import platform
import sys


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info():
    import numpy as np
    ncpu = os.cpu_count()
    return ("machine: %s | CPU: %s (%s logical cores) | Python %s (%s) | NumPy %s"
            % (platform.platform(), _cpu_model(), ncpu, platform.python_version(),
               platform.python_implementation(), np.__version__))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats, < 30 s")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)

    # run from a checkout without installing: put the repository root first
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    import fastad
    from fastad import bench

    header = machine_info()
    version = getattr(fastad, "__version__", None)
    if version:
        header += " | fastad %s" % version
    try:
        table = bench.run(quick=args.quick, progress=not args.no_progress)
    except bench.BenchmarkError as e:
        print(header)
        print()
        print(getattr(e, "table", str(e)))
        sys.stdout.flush()
        sys.stderr.write("\nBENCHMARK FAILED: fastad disagrees with the pure-Python tape or errored "
                         "(see PROBLEMS above)\n")
        return 1
    print(header)
    print()
    print(table)
    print()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_mlp
    import bench_primitives
    import bench_replay
    import bench_second
    print("## Record once, differentiate many (bench_replay.py)")
    print()
    print(bench_replay.run(quick=args.quick))
    print()
    print("## Matrix-form network (bench_mlp.py)")
    print()
    print(bench_mlp.run(quick=args.quick))
    print()
    print("## Custom primitives (bench_primitives.py)")
    print()
    print(bench_primitives.run())
    print()
    print("## Second order (bench_second.py)")
    print()
    print(bench_second.run())
    print()
    import bench_sparse
    print("## Sparse Jacobians and Hessians by coloring (bench_sparse.py)")
    print()
    print(bench_sparse.run(quick=args.quick))
    print()
    print("Newton-Krylov against scipy: python benchmarks/bench_optimize.py [--n 10000]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
