"""A network whose parameters are a pytree: fastad against autograd and backprop.

MLP 784 -> 200 -> 100 -> 10, batch 256, tanh hidden layers, softmax
cross-entropy; the parameters are a list of (W, b) tuples (178k numbers)
and the gradient comes back in that structure.  The same loss code runs
under fad.grad and autograd.grad (autograd is optional: install it to
compare; it is not a dependency), beside hand-written NumPy backprop.
Medians of interleaved repeats (a, b, c, a, b, c, ...) in one process, at
NumPy's default BLAS threads and again in a child process with one BLAS
thread (OPENBLAS_NUM_THREADS=1, set before NumPy loads).

    python benchmarks/bench_pytree.py [--quick]
"""
import argparse
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
import fastad as fad  # noqa: E402
from _common import classifier, interleaved_medians  # noqa: E402

SIZES = (784, 200, 100, 10)
BATCH = 256
X, Y, PARAMS, make_loss, backprop = classifier(SIZES, BATCH)
loss = make_loss(np)


HAND = "hand-written NumPy backprop"


def tools():
    out = {HAND: backprop, "fastad": fad.grad(loss)}
    try:
        import autograd
        import autograd.numpy as anp
        out["autograd"] = autograd.grad(make_loss(anp))
    except ImportError:
        out["autograd"] = None
    return out


def medians(quick):
    """Median seconds per tool, interleaved; every gradient checked against backprop."""
    ts = tools()
    ref = backprop(PARAMS)
    for name, fn in ts.items():
        if fn is None:
            continue
        got = fn(PARAMS)
        for (gW, gb), (rW, rb) in zip(got, ref):
            np.testing.assert_allclose(gW, rW, rtol=1e-9, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(gb, rb, rtol=1e-9, atol=1e-12, err_msg=name)
    live = {n: (lambda fn=fn: fn(PARAMS)) for n, fn in ts.items() if fn is not None}
    med = interleaved_medians(live, 15 if quick else 101)
    return {n: med.get(n) for n in ts}


def table(quick):
    med = medians(quick)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    rows = [f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, tanh, softmax cross-entropy, "
            f"parameters a list of (W, b) tuples (BLAS threads: {threads})", "",
            "| tool | ms (median) | / hand-written backprop | / autograd |",
            "|---|---:|---:|---:|"]
    for n, t in med.items():
        if t is None:
            rows.append(f"| {n} | not installed | | |")
            continue
        ag = med.get("autograd")
        rows.append(f"| {n} | {t * 1e3:.3f} | {t / med[HAND]:.2f}x | "
                    + (f"{t / ag:.2f}x |" if ag else "|"))
    return "\n".join(rows)


# glibc's allocator thresholds fixed (as bench_mlp.py's headline): otherwise a
# tool that runs after memory was given back pays its page faults again
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "1073741824",
                    "MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_TOP_PAD_": "268435456"}


def run(quick=False):
    text = table(quick)
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                       [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                 if p]))
        for extra, title in (({}, ""), (STEADY_ALLOCATOR, "Steady allocator (glibc thresholds "
                                                          "fixed), one BLAS thread:\n\n")):
            child = subprocess.run([sys.executable, os.path.abspath(__file__), "--table"]
                                   + (["--quick"] if quick else []), env=dict(env, **extra),
                                   capture_output=True, text=True, check=True)
            text += "\n\n" + title + child.stdout.strip()
    return text


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", action="store_true", help="this process's table only")
    args = ap.parse_args()
    print(table(args.quick) if args.table else run(args.quick))
