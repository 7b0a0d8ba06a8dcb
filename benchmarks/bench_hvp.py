#!/usr/bin/env python
"""Hessian-vector products: fastad against its own gradient and against the peers.

    python benchmarks/bench_hvp.py [--threads 1|default] [--ref PATH] [--rounds N]
                                   [--clock thread|wall]

Two tables (issue #19, item 4), every time a median of interleaved calls in
this one process (a, b, c, a, b, c, ...):

1. The extended Rosenbrock loop written with products, n = 10,000: the
   replayed `tape.hvp(x, v)` against the replayed `tape.gradient(x)`
   (target: at most 2.3x; ADOL-C's hess_vec is 2.4x its gradient).
2. The vectorized Rosenbrock (NumPy slices), n = 100,000: `fad.hvp(f, x, v)`
   (records f, then one forward-over-reverse sweep) and the replayed
   `tape.hvp(x, v)` against PyTorch's double backward
   (`torch.autograd.grad(..., create_graph=True)`, then the gradient of
   g . v) and JAX's jitted jvp of grad, float64.

--threads 1 (default) sets torch to one thread, JAX's Eigen to one thread
and every loaded OpenBLAS to one thread; --threads default leaves all three
as they come.  --ref PATH also loads the fastad found at PATH (another
checkout with its extensions built) and times it beside this one, rows
marked "ref".  --clock thread times each call by the thread's CPU time
(robust when other processes load the machine; every call here runs on the
calling thread), wall by time.perf_counter.  Answers are checked against
scipy.optimize.rosen_hess_prod.
"""
import argparse
import os
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, _HERE)
from _common import interleaved_medians, load_build, rosen_products  # noqa: E402


def rosen_vec(x, total):
    a = x[:-1]
    b = x[1:]
    return total((1 - a) ** 2 + 100 * (b - a ** 2) ** 2)


def _check(name, got, want):
    err = np.max(np.abs(np.asarray(got) - want)) / max(np.max(np.abs(want)), 1.0)
    if err > 1e-8:
        raise AssertionError(f"{name}: relative error {err:.2e} against rosen_hess_prod")


def scalar_table(fads, rounds, clock):
    from scipy.optimize import rosen_hess_prod
    rng = np.random.default_rng(0)
    n = 10_000
    x = rng.uniform(-1, 1, n)
    v = rng.standard_normal(n)
    want = rosen_hess_prod(x, v)
    fns = {}
    for tag, fad in fads:
        tape = fad.record(rosen_products, x)
        _check(f"{tag} tape.hvp", tape.hvp(x, v), want)
        fns[(tag, "grad")] = (lambda t=tape: t.gradient(x))
        fns[(tag, "hvp")] = (lambda t=tape: t.hvp(x, v))
    m = interleaved_medians(fns, rounds, clock)
    rows = ["| build | replayed gradient | replayed HVP | HVP / gradient |",
            "|---|---:|---:|---:|"]
    for tag, _ in fads:
        g, h = m[(tag, "grad")], m[(tag, "hvp")]
        rows.append(f"| {tag} | {g * 1e3:.3f} ms | {h * 1e3:.3f} ms | **{h / g:.2f}x** |")
    return "\n".join(rows)


def vector_table(fads, rounds, clock, with_peers=True):
    from scipy.optimize import rosen_hess_prod
    n = 100_000
    x = np.random.default_rng(1).uniform(-1, 1, n)
    v = np.random.default_rng(3).standard_normal(n)
    want = rosen_hess_prod(x, v)

    def f(z):
        return rosen_vec(z, np.sum)
    fns, labels = {}, {}
    for tag, fad in fads:
        tape = fad.record(f, x)
        _check(f"{tag} fad.hvp", fad.hvp(f, x, v), want)
        _check(f"{tag} tape.hvp", tape.hvp(x, v), want)
        fns[(tag, "fad.hvp")] = (lambda fad=fad: fad.hvp(f, x, v))
        fns[(tag, "tape.hvp")] = (lambda t=tape: t.hvp(x, v))
        fns[(tag, "tape.gradient")] = (lambda t=tape: t.gradient(x))
        fns[(tag, "record")] = (lambda fad=fad: fad.record(f, x))
        labels[(tag, "fad.hvp")] = f"fastad ({tag}) `fad.hvp(f, x, v)`"
        labels[(tag, "tape.hvp")] = f"fastad ({tag}) `tape.hvp(x, v)` (replayed)"
        labels[(tag, "tape.gradient")] = f"fastad ({tag}) `tape.gradient(x)` (replayed)"
        labels[(tag, "record")] = f"fastad ({tag}) `fad.record(f, x)` alone"
    notes = []
    if with_peers:
        try:
            import torch
            vt = torch.from_numpy(v)

            def torch_hvp():
                p = torch.from_numpy(x).requires_grad_()
                g, = torch.autograd.grad(rosen_vec(p, torch.sum), p, create_graph=True)
                hv, = torch.autograd.grad(g, p, grad_outputs=vt)
                return hv
            _check("torch", torch_hvp().numpy(), want)
            fns["torch"] = torch_hvp
            labels["torch"] = f"PyTorch {torch.__version__} double backward " \
                              f"({torch.get_num_threads()} threads)"
        except ImportError:
            notes.append("PyTorch not installed")
        try:
            import jax
            jax.config.update("jax_enable_x64", True)
            g = jax.grad(lambda z: rosen_vec(z, jax.numpy.sum))
            xj, vj = jax.numpy.asarray(x), jax.numpy.asarray(v)
            t0 = time.perf_counter()
            jh = jax.jit(lambda a, b: jax.jvp(g, (a,), (b,))[1]).lower(xj, vj).compile()
            notes.append(f"JAX jit compile: {time.perf_counter() - t0:.2f} s")
            _check("jax", np.asarray(jh(xj, vj)), want)
            fns["jax"] = lambda: jh(xj, vj).block_until_ready()
            labels["jax"] = f"JAX {jax.__version__} jit, jvp of grad"
        except ImportError:
            notes.append("JAX not installed")
    m = interleaved_medians(fns, rounds, clock)
    base = m.get("torch")
    rows = ["| n = 100,000 | time | ÷ PyTorch |", "|---|---:|---:|"]
    for k in fns:
        r = f"{m[k] / base:.2f}x" if base else ""
        rows.append(f"| {labels[k]} | {m[k] * 1e3:.3f} ms | {r} |")
    return "\n".join(rows + [""] + [f"- {s}" for s in notes])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", choices=("1", "default"), default="1")
    ap.add_argument("--ref", default=None, help="another fastad checkout to time beside this one")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--clock", choices=("thread", "wall"), default="wall")
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)
    if args.threads == "1":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    fads = []
    if args.ref:
        fads.append(("ref", load_build(os.path.abspath(args.ref))))
    fads.append(("this", load_build(_ROOT)))
    threads_note = "threads as they come"
    if args.threads == "1":
        from bench_peers import _pin_openblas
        note, _restore = _pin_openblas()
        threads_note = "torch 1 thread, JAX Eigen 1 thread; " + note
        try:
            import torch
            torch.set_num_threads(1)
        except ImportError:
            pass
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    print(f"# Hessian-vector products ({threads_note}; clock: {args.clock}; "
          f"medians of {args.rounds} interleaved rounds)\n")
    print("## Extended Rosenbrock loop (products), n = 10,000\n")
    print(scalar_table(fads, args.rounds * 5, clock))
    print("\n## Vectorized Rosenbrock, n = 100,000\n")
    print(vector_table(fads, args.rounds, clock, not args.no_peers))


if __name__ == "__main__":
    main()
