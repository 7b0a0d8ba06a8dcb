"""Overhead of a custom primitive: record + pullback of one call, beyond the rule's work.

A primitive with trivial numeric code and a trivial rule is called N times in
one recording (on a scalar Var and on a length-8 Array), then pulled back
with fad.grad; the time per call is split into recording (timed inside f)
and the rest (the pullback, plus fad.grad's fixed cost / N).  For scale: a
plain Python function call, and the built-in fad.sin on a Var and on an
Array of 8.  The cases alternate in rounds (a, b, c, ..., a, b, c, ...) and
each row is a median; times are the thread's CPU time, which other
processes on the machine disturb less than wall time.

    python benchmarks/bench_primitives.py
    python benchmarks/bench_primitives.py --against /path/to/other/checkout

--against imports a second fastad build (another checkout, built in place)
in the same process and alternates between the two: the ratio column is
other / this.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_build  # noqa: E402

N = 2000


def _cases(fad, n=N):
    """name -> (run(), last recording time); each run() does n calls."""
    @fad.primitive
    def ident(x):
        return x

    @ident.defvjp
    def _(ybar, y, x):
        return ybar

    rec = {}

    def timed(name, step, reduce):
        def f(x):
            t0 = time.thread_time()
            for _ in range(n):
                x = step(x)
            rec[name] = time.thread_time() - t0
            return reduce(x)
        return fad.grad(f)

    def plain(x):
        return x

    def loop_plain(x=0.3):
        for _ in range(n):
            x = plain(x)
        return x

    s, a = 0.3, np.full(8, 0.3)
    g_sin = timed("sin_var", fad.sin, lambda x: x)
    g_sin8 = timed("sin_arr", fad.sin, fad.sum)
    g_prim = timed("prim_var", ident, lambda x: x)
    g_prim8 = timed("prim_arr", ident, fad.sum)
    assert g_prim(s) == 1.0 and np.array_equal(g_prim8(a), np.ones(8))
    return {"plain": (loop_plain, None),
            "sin_var": (lambda: g_sin(s), rec),
            "sin_arr": (lambda: g_sin8(a), rec),
            "prim_var": (lambda: g_prim(s), rec),
            "prim_arr": (lambda: g_prim8(a), rec)}


LABELS = {"plain": "plain Python function call",
          "sin_var": "fad.sin on a Var (record + sweep)",
          "sin_arr": "fad.sin on an Array of 8 (record + sweep)",
          "prim_var": "primitive on a Var (record + pullback)",
          "prim_arr": "primitive on an Array of 8 (record + pullback)"}


def _measure(sides, rounds, n=N):
    """sides: {label: cases}; per side and case, median (total, record) per call."""
    tot = {(s, c): [] for s in sides for c in LABELS}
    rec = {(s, c): [] for s in sides for c in LABELS}
    order = list(sides.items())
    for i in range(rounds):
        for c in LABELS:
            for s, cases in (order if i % 2 == 0 else order[::-1]):   # (no side always first)
                run, r = cases[c]
                t0 = time.thread_time()
                run()
                tot[s, c].append((time.thread_time() - t0) / n)
                if r is not None:
                    rec[s, c].append(r[c] / n)
    med = statistics.median
    return {k: (med(tot[k]), med(rec[k]) if rec[k] else None) for k in tot}


def run(rounds=15):
    import fastad as fad
    m = _measure({"this": _cases(fad)}, rounds)
    rows = ["| per call | total us | record us | pullback + fixed us |",
            "|---|---:|---:|---:|"]
    for c, label in LABELS.items():
        t, r = m["this", c]
        rows.append(f"| {label} | {t * 1e6:.3f} | "
                    + ("" if r is None else f"{r * 1e6:.3f} | {(t - r) * 1e6:.3f}")
                    + (" | |" if r is None else " |"))
    return "\n".join(rows)


def run_against(other, rounds=21):
    import os
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"other": _cases(load_build(other)), "this": _cases(load_build(here))}
    m = _measure(sides, rounds)
    rows = [f"this: {here}  other: {other}", "",
            "| per call (us) | other total | this total | other / this | other record | "
            "this record | other pullback + fixed | this pullback + fixed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c, label in LABELS.items():
        (to, ro), (tt, rt) = m["other", c], m["this", c]
        cells = [f"{to * 1e6:.3f}", f"{tt * 1e6:.3f}", f"{to / tt:.2f}x"]
        if ro is not None:
            cells += [f"{ro * 1e6:.3f}", f"{rt * 1e6:.3f}",
                      f"{(to - ro) * 1e6:.3f}", f"{(tt - rt) * 1e6:.3f}"]
        else:
            cells += [""] * 4
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="PATH",
                    help="another fastad checkout, built in place, to alternate with")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    if args.against:
        print(run_against(args.against, args.rounds or 21))
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        print(run(args.rounds or 15))
