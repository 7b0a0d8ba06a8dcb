"""Per-operation overhead on small arrays: fad.grad beside autograd (and JAX
and PyTorch in eager mode, when installed; none is a dependency).

One function of an 8-element array with 8 array operations (ufuncs, a
product with a constant vector, a cumulative sum, a reduction), written once
per library's NumPy namespace; each side's time per gradient call and per
operation, medians of interleaved repeats (a, b, c, a, b, c, ...) in one
process, beside the plain NumPy evaluation of the same function.

    python benchmarks/bench_small_ops.py [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as onp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
import fastad as fad  # noqa: E402

N_OPS = 8
X0 = onp.linspace(0.1, 0.8, 8)
W = onp.linspace(1.0, 2.0, 8)


def make(np, w=W):
    def f(x):
        a = np.sin(x) * x                 # 2
        b = np.exp(-x) + 1.0              # 2
        c = np.cumsum(a / b, 0)           # 2 (axis positional: torch calls it dim)
        return np.sum(c * w)              # 2
    return f


def sides():
    out = [("numpy (value only)", lambda f=make(onp): f(X0)),
           ("fastad fad.grad", lambda g=fad.grad(make(onp)): g(X0))]
    try:
        import autograd
        import autograd.numpy as anp
        out.append(("autograd grad", lambda g=autograd.grad(make(anp)): g(X0)))
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        g = jax.grad(make(jnp))
        out.append(("jax grad (no jit)", lambda: g(X0).block_until_ready()))
    except ImportError:
        pass
    try:
        import torch

        def tgrad(x=torch.tensor(X0, requires_grad=True)):
            x.grad = None
            make(torch, torch.tensor(W))(x).backward()
            return x.grad
        out.append(("pytorch backward", tgrad))
    except ImportError:
        pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    rounds = 300 if args.quick else 3000
    fns = sides()
    ref = fad.grad(make(onp))(X0)
    times = {name: [] for name, _ in fns}
    for name, fn in fns:
        for _ in range(20):
            fn()                          # warm up (JAX traces on the first call)
    for _ in range(rounds):
        for name, fn in fns:              # interleaved
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"| side ({N_OPS} array ops on 8 elements) | per call, us | per op, us | / fastad |")
    print("|---|---:|---:|---:|")
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    for name, _ in fns:
        print(f"| {name} | {med[name]:.1f} | {med[name] / N_OPS:.2f} | "
              f"{med[name] / med['fastad fad.grad']:.2f} |")
    assert onp.all(onp.isfinite(ref))


if __name__ == "__main__":
    main()
