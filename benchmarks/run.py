#!/usr/bin/env python
"""Run the fastad benchmark suite and print markdown tables.

    python benchmarks/run.py [--all] [--quick] [--no-progress] [--out FILE]

Without --all: fastad against plain floats and the pure-Python tape, replay,
the matrix-form network, primitives, second order and sparse Jacobians.
--all adds the peers (autograd, PyTorch, JAX, CasADi when installed), the
scaling run (10^3 to 10^7 ops, plots), Newton-Krylov against SciPy and
ColPack's color counts (when installed).
A full `--all` run writes its tables to benchmarks/results/suite.md and the
scaling tables and plots beside it; --quick writes nothing unless --out.

Exit status 1 if fastad's answers disagree with the pure-Python tape or a
peer, or a fastad call fails (the tables are still printed, with PROBLEMS).
"""

import argparse
import datetime
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")


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


def sections(quick, full_suite, outdir):
    """(title, expected seconds, function returning markdown) in suite order;
    the seconds are from a run on the 2-core VM (they weigh the time-left
    estimate)."""
    import bench_mlp
    import bench_pytree
    import bench_primitives
    import bench_replay
    import bench_second
    import bench_sparse
    import bench

    out = [
        ("fastad against plain floats and the pure-Python tape (bench.py)",
         2 if quick else 35, lambda: bench.run(quick=quick, progress=False)),
        ("Record once, differentiate many (bench_replay.py)", 1,
         lambda: bench_replay.run(quick=quick)),
        ("Matrix-form network (bench_mlp.py)", 4 if quick else 12,
         lambda: bench_mlp.run(quick=quick)),
        ("Network with pytree parameters (bench_pytree.py)", 5 if quick else 30,
         lambda: bench_pytree.run(quick=quick)),
        ("Custom primitives (bench_primitives.py)", 0.5, bench_primitives.run),
        ("Second order (bench_second.py)", 0.5, bench_second.run),
        ("Sparse Jacobians and Hessians by coloring (bench_sparse.py)", 1 if quick else 13,
         lambda: bench_sparse.run(quick=quick)),
    ]
    if not full_suite:
        return out
    import bench_colpack
    import bench_optimize
    import bench_peers
    import bench_scaling
    out += [
        ("Against the peers (bench_peers.py)", 60 if quick else 205,
         lambda: bench_peers.run(quick=quick, progress=False)),
        ("Scaling with tape length (bench_scaling.py)", 1 if quick else 10,
         lambda: bench_scaling.run(quick=quick, progress=False, outdir=outdir)),
        ("Newton-Krylov against SciPy (bench_optimize.py)", 2 if quick else 17,
         lambda: bench_optimize.run(n=500 if quick else 2000)),
        ("Colors against ColPack (bench_colpack.py)", 2 if quick else 6, bench_colpack.run),
    ]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true",
                    help="the whole suite: peers, scaling, Newton-Krylov, ColPack")
    ap.add_argument("--quick", action="store_true", help="few repeats, smaller sizes")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--out", help="also write the tables to this file")
    args = ap.parse_args(argv)

    # before anything imports JAX (bench_mlp does): one Eigen thread, as bench_peers wants
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    for p in (ROOT, HERE):          # run from a checkout without installing
        if p not in sys.path:
            sys.path.insert(0, p)
    import fastad
    import bench
    from _common import Progress

    header = machine_info() + " | fastad %s | %s" % (
        getattr(fastad, "__version__", "?"), datetime.date.today().isoformat())
    writes = args.all and not args.quick
    outdir = RESULTS if writes else None
    todo = sections(args.quick, args.all, outdir)
    prog = Progress("suite", [w for _, w, _ in todo], enabled=not args.no_progress)
    parts, problems = [header, ""], []
    print(header + "\n", flush=True)
    t0 = time.perf_counter()
    for title, _, fn in todo:
        prog.step(title)
        try:
            table = fn()
        except ImportError as e:        # an optional package (SciPy for sparse results)
            table = f"skipped: {e}"
        except (bench.BenchmarkError, AssertionError) as e:
            table = getattr(e, "table", None) or f"FAILED: {e}"
            problems.append(f"{title}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        parts += [f"## {title}", "", table, ""]
        print("\n".join(parts[-4:]), flush=True)
    if not args.all:
        print("More: python benchmarks/run.py --all (peers, scaling, Newton-Krylov, ColPack)")
    elapsed = time.perf_counter() - t0
    parts.append(f"Suite time: {elapsed:.0f} s.")
    if problems:
        parts += ["", "## PROBLEMS", ""] + [f"- {p}" for p in problems]
    text = "\n".join(parts) + "\n"
    if writes:       # the peers' tables also on their own, as bench_peers.py writes them
        peers = [parts[i + 2] for i, p in enumerate(parts) if p.startswith("## Against the peers")]
        if peers:
            with open(os.path.join(RESULTS, "peers.md"), "w") as fh:
                fh.write(header + "\n\n" + peers[0] + "\n")
    for path in filter(None, (args.out, os.path.join(RESULTS, "suite.md") if writes else None)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        sys.stderr.write(f"wrote {path}\n")
    if problems:
        sys.stderr.write("\nBENCHMARK FAILED:\n" + "\n".join(problems) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
