"""Overhead of a custom primitive: record + pullback of one call, beyond the rule's work.

A primitive with trivial numeric code and a trivial rule is called N times in
one recording (on a scalar Var and on a length-8 Array), then pulled back; the
time per call is compared with a plain Python function call and with the
built-in fad.sin on a Var.  Medians of repeats, side by side in one run.

    python benchmarks/bench_primitives.py
"""
import os
import sys

import numpy as np

import fastad as fad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time  # noqa: E402


def plain(x):
    return x


@fad.primitive
def ident(x):
    return x


@ident.defvjp
def _(ybar, y, x):
    return ybar



def run(n=2000):
    def loop_prim(x):
        for _ in range(n):
            x = ident(x)
        return fad.sum(x) if isinstance(x, fad.Array) else x

    def loop_sin(x):
        for _ in range(n):
            x = fad.sin(x)
        return x

    def loop_plain(x):
        for _ in range(n):
            x = plain(x)
        return x

    assert fad.grad(loop_prim)(0.3) == 1.0
    t_plain = median_time(lambda: loop_plain(0.3)) / n
    t_scalar = median_time(lambda: fad.grad(loop_prim)(0.3)) / n
    t_array = median_time(lambda: fad.grad(loop_prim)(np.ones(8))) / n
    t_sin = median_time(lambda: fad.grad(loop_sin)(0.3)) / n
    rows = ["| per call | us |", "|---|---:|",
            f"| plain Python function call | {t_plain * 1e6:.3f} |",
            f"| fad.sin on a Var (record + sweep) | {t_sin * 1e6:.3f} |",
            f"| primitive on a Var (record + pullback) | {t_scalar * 1e6:.2f} |",
            f"| primitive on an Array of 8 (record + pullback) | {t_array * 1e6:.2f} |"]
    return "\n".join(rows)


if __name__ == "__main__":
    print(run())
