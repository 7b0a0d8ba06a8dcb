"""Forward vs reverse Jacobians: calibrates jacobian(mode="auto").

A tall function (n = 10 inputs, m = 1000 outputs) and a wide one (n = 1000,
m = 10), each recorded once; the Jacobian is timed in all three modes at the
recorded point, medians side by side.  `python benchmarks/bench_modes.py`
"""
import os
import sys

import numpy as np

import fastad as fad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time  # noqa: E402


def tall(x):
    # m = 1000 outputs, each mixing all n = 10 inputs
    n = len(x)
    out = []
    for i in range(1000):
        a = x[i % n]
        b = x[(3 * i + 1) % n]
        out.append(fad.sin(a * b) + fad.exp(0.01 * a) * b)
    return out


def wide(x):
    # m = 10 outputs, each a sum over 100 of the n = 1000 inputs
    out = []
    for j in range(10):
        s = 0.0
        for i in range(j, len(x), 10):
            s = s + fad.tanh(x[i]) * x[(i + 1) % len(x)]
        out.append(s)
    return out



def run():
    rng = np.random.default_rng(0)
    rows = ["| function | n | m | fwd ms | rev ms | auto ms | auto / best |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f, n in (("tall", tall, 10), ("wide", wide, 1000)):
        x = rng.uniform(-1, 1, n)
        tape = fad.record(f, x)
        J = {m: tape.jacobian(x, mode=m) for m in ("fwd", "rev", "auto")}
        assert np.allclose(J["fwd"], J["rev"]) and np.allclose(J["auto"], J["rev"])
        t = {m: median_time(lambda m=m: tape.jacobian(x, mode=m)) for m in ("fwd", "rev", "auto")}
        best = min(t["fwd"], t["rev"])
        rows.append(f"| {name} | {n} | {tape.n_outputs} | {t['fwd'] * 1e3:.3f} | "
                    f"{t['rev'] * 1e3:.3f} | {t['auto'] * 1e3:.3f} | {t['auto'] / best:.2f}x |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(run())


def square(x):
    # n = m = 200: same lane count both ways, so the time ratio is the lane-cost ratio
    n = len(x)
    return [fad.sin(x[i] * x[(i + 7) % n]) + x[(i + 1) % n] * x[(5 * i) % n] for i in range(n)]


def calibrate():
    """Time per forward lane / time per reverse lane on a square Jacobian."""
    x = np.random.default_rng(1).uniform(-1, 1, 200)
    tape = fad.record(square, x)
    tf = median_time(lambda: tape.jacobian(x, mode="fwd"))
    tr = median_time(lambda: tape.jacobian(x, mode="rev"))
    return tf, tr
