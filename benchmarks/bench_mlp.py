"""Matrix-form network gradient: fastad against hand-written NumPy backprop.

MLP, batch 256, 64 -> 512 -> 10, tanh hidden layer, squared loss; the
gradient with respect to all weights and biases.  The same plain-NumPy
loss function runs under fad.grad, and (when installed; never required)
under autograd, PyTorch and JAX.  Medians of interleaved repeats, in one run,
at NumPy's default BLAS threads and again in child processes with one BLAS
thread (PyTorch always runs with one thread here): with glibc's allocator
as it comes, and with its thresholds fixed (below).

    python benchmarks/bench_mlp.py [--quick]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import fastad as fad

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 64))
T = rng.standard_normal((256, 10))
PARAMS = (rng.standard_normal((64, 512)) * 0.1, rng.standard_normal(512) * 0.1,
          rng.standard_normal((512, 10)) * 0.1, rng.standard_normal(10) * 0.1)


def loss(W1, b1, W2, b2):
    """Plain NumPy: runs on ndarrays, fad.Arrays and autograd's boxes alike."""
    h = np.tanh(np.matmul(X, W1) + b1)
    r = np.matmul(h, W2) + b2 - T
    return 0.5 * np.sum(r * r)


def backprop(W1, b1, W2, b2):
    """The notes' formulas, by hand."""
    z = X @ W1 + b1
    h = np.tanh(z)
    ybar = h @ W2 + b2 - T
    hbar = ybar @ W2.T
    zbar = hbar * (1 - h * h)
    return X.T @ zbar, zbar.sum(0), h.T @ ybar, ybar.sum(0)


PEER_NAMES = {"autograd": "autograd", "torch": "PyTorch (eager, 1 thread)",
              "jax": "JAX (jit)"}


def _peers(only=None):
    """name -> gradient function for the peers that are installed (None for
    the others); `only`: just that PEER_NAMES key, nothing else imported."""
    peers = {}
    if only in (None, "autograd"):
        try:
            import autograd
            import autograd.numpy as anp

            def aloss(W1, b1, W2, b2):
                h = anp.tanh(anp.matmul(X, W1) + b1)
                r = anp.matmul(h, W2) + b2 - T
                return 0.5 * anp.sum(r * r)
            peers[PEER_NAMES["autograd"]] = autograd.grad(aloss, argnum=(0, 1, 2, 3))
        except ImportError:
            peers[PEER_NAMES["autograd"]] = None
    if only in (None, "torch"):
        try:
            import torch
            torch.set_num_threads(1)
            Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)

            def tgrad(W1, b1, W2, b2):
                ps = [torch.from_numpy(p).requires_grad_() for p in (W1, b1, W2, b2)]
                h = torch.tanh(Xt @ ps[0] + ps[1])
                r = h @ ps[2] + ps[3] - Tt
                (0.5 * (r * r).sum()).backward()
                return tuple(p.grad.numpy() for p in ps)
            peers[PEER_NAMES["torch"]] = tgrad
        except ImportError:
            peers[PEER_NAMES["torch"]] = None
    if only in (None, "jax"):
        try:
            import jax
            import jax.numpy as jnp
            jax.config.update("jax_enable_x64", True)

            def jloss(W1, b1, W2, b2):
                h = jnp.tanh(X @ W1 + b1)
                r = h @ W2 + b2 - T
                return 0.5 * jnp.sum(r * r)
            jgrad = jax.jit(jax.grad(jloss, argnums=(0, 1, 2, 3)))
            # wait for the result: JAX dispatches asynchronously, and its
            # computation would otherwise run on beside the next tool's timing
            peers[PEER_NAMES["jax"]] = lambda *p: jax.block_until_ready(jgrad(*p))
        except ImportError:
            peers[PEER_NAMES["jax"]] = None
    return peers


ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# glibc returns freed memory above its (moving) thresholds to the system and
# faults it in again on the next allocation: whether a tool pays those page
# faults depends on what ran before it (here the hand-written backprop took
# 1.6 ms in some runs and 2.7 ms in others).  Fixed thresholds keep freed
# memory in the heap, so every tool runs without them.
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "1073741824",
                    "MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_TOP_PAD_": "268435456"}


HAND = "hand-written NumPy backprop"


def _medians(quick, tools):
    """Median seconds per tool (name -> function or None), interleaved
    repeats; each tool's gradients are checked against the hand-written ones."""
    reps = 15 if quick else 101
    ref = backprop(*PARAMS)
    for name, fn in tools.items():
        if fn is not None:
            got = fn(*PARAMS)
            for a, b in zip(got, ref):
                np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{name} disagrees with backprop")
    live = [n for n, fn in tools.items() if fn is not None]
    times = {n: [] for n in live}
    for _ in range(reps):            # interleaved, so drifts hit every tool alike
        for n in live:
            t0 = time.perf_counter()
            tools[n](*PARAMS)
            times[n].append(time.perf_counter() - t0)
    return {n: float(np.median(t)) for n, t in times.items()}


def _tools(only=None):
    tools = {HAND: backprop}
    if only in (None, "fastad"):
        tools["fastad"] = fad.grad(loss, argnums=(0, 1, 2, 3))
    if only != "fastad":
        tools.update(_peers(only))
    return tools


_TITLE = "MLP batch 256, 64 -> 512 -> 10, tanh, squared loss, gradient wrt all weights"


def _table(quick):
    """Every tool in this process, interleaved."""
    tools = _tools()
    med = _medians(quick, tools)
    base = med[HAND]
    rows = ["| tool | ms (median) | / hand-written backprop |", "|---|---:|---:|"]
    for n, fn in tools.items():
        if fn is None:
            rows.append(f"| {n} | not installed | |")
        else:
            rows.append(f"| {n} | {med[n] * 1e3:.3f} | {med[n] / base:.2f}x |")
    return (f"{_TITLE} (BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')})\n\n"
            + "\n".join(rows))


def _pair(quick, key):
    """{tool: ms, hand: ms} for the hand-written backprop and one tool, alone in
    this process (as JSON for the parent)."""
    tools = _tools(key)
    name = [n for n in tools if n != HAND][0]
    if tools[name] is None:
        return {"tool": name, "ms": None, "hand_ms": None}
    med = _medians(quick, tools)
    return {"tool": name, "ms": med[name] * 1e3, "hand_ms": med[HAND] * 1e3}


def _pairs_table(quick, env):
    """One child process per tool, each beside the hand-written backprop only:
    no tool runs with another framework's threads and caches in its process."""
    rows = ["| tool | ms (median) | hand-written backprop, same process, ms | "
            "/ hand-written backprop |", "|---|---:|---:|---:|"]
    for key in ("fastad",) + tuple(PEER_NAMES):
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--pair", key]
                               + (["--quick"] if quick else []),
                               env=dict(os.environ, **env), capture_output=True, text=True,
                               check=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        if r["ms"] is None:
            rows.append(f"| {r['tool']} | not installed | | |")
        else:
            rows.append(f"| {r['tool']} | {r['ms']:.3f} | {r['hand_ms']:.3f} | "
                        f"{r['ms'] / r['hand_ms']:.2f}x |")
    return "\n".join(rows)


def run(quick=False, one_thread_too=True):
    """Every tool in this process at NumPy's default BLAS threads; then, with
    one BLAS thread (as PyTorch runs here), each tool in a child process of
    its own beside the hand-written backprop, with glibc's allocator as it
    comes and steady (threads and allocator are set before NumPy loads)."""
    text = _table(quick)
    if one_thread_too and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        text = ("Default BLAS threads, every tool in one process:\n\n" + text
                + f"\n\n{_TITLE}; one BLAS thread (OPENBLAS_NUM_THREADS=1), each tool in "
                "its own process beside the hand-written backprop:\n\n"
                + _pairs_table(quick, ONE_THREAD)
                + "\n\nThe same with a steady allocator (glibc's MALLOC_MMAP_THRESHOLD_, "
                "MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ fixed, so no tool pays page "
                "faults that depend on what ran before it):\n\n"
                + _pairs_table(quick, dict(ONE_THREAD, **STEADY_ALLOCATOR)))
    return text


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", action="store_true", help="this process's table only")
    ap.add_argument("--pair", choices=("fastad",) + tuple(PEER_NAMES),
                    help="the hand-written backprop and this tool only (JSON)")
    args = ap.parse_args()
    if args.pair:
        print(json.dumps(_pair(args.quick, args.pair)))
    else:
        print(_table(args.quick) if args.table else run(args.quick))
