"""Checkpointed time stepping (fad.scan): the gradient of a long Lorenz-63 RK4
integration with respect to its 6 parameters (sigma, rho, beta, x0, y0, z0).

    python benchmarks/bench_checkpoint.py [--quick] [--out FILE]

Every configuration runs in a fresh subprocess so that its peak memory
(resource.getrusage(RUSAGE_SELF).ru_maxrss) is its own; "RSS before" is the
process after importing NumPy and fastad.  Tables:

1. target: fad.scan's gradient at N = 10^7 steps (default budget) first
   (its peak RSS), then in the same process, interleaved rounds (a, b, c,
   a, b, c, ...): the uncheckpointed replayed gradient (tape.gradient on a
   tape of 10^6 steps, recorded once), fad.grad of the plain loop at 10^6
   steps (record + sweep), and fad.scan's gradient at 10^7 again.  Ratios
   of medians, per step.
2. budgets: fad.scan's gradient at 10^7 steps with `checkpoints` from all
   the steps down to 10^3: time per step, peak RSS, the forward steps the
   reverse sweep recomputes (revolve_cost / N), and the largest relative
   difference from the gradient with every carry kept.
3. memory against steps, with and without checkpointing.

--quick divides every size by 100 (a smoke run: seconds).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

H = 1e-6            # small enough that 10^7 steps (t = 10) keep the gradient finite
TH = [10.0, 28.0, 8.0 / 3.0, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------- the workload

def lorenz(s, p):
    x, y, z = s
    sigma, rho, beta = p
    return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]


def rk4(s, p):
    k1 = lorenz(s, p)
    k2 = lorenz([s[i] + H / 2 * k1[i] for i in range(3)], p)
    k3 = lorenz([s[i] + H / 2 * k2[i] for i in range(3)], p)
    k4 = lorenz([s[i] + H * k3[i] for i in range(3)], p)
    return [s[i] + H / 6 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]) for i in range(3)]


def loss_plain(th, n):
    s, p = [th[3], th[4], th[5]], [th[0], th[1], th[2]]
    for _ in range(n):
        s = rk4(s, p)
    return s[0] + 2 * s[1] + 3 * s[2]


def loss_scan(th, n, checkpoints=None):
    import fastad as fad
    s = fad.scan(rk4, th[3:], n, th[:3], checkpoints=checkpoints)
    return s[0] + 2 * s[1] + 3 * s[2]


# ---------------------------------------------------------------- children

def _rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # kB on Linux


def _timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def child(kind, n, checkpoints, n_ref, rounds):
    sys.path.insert(0, ROOT)
    import fastad as fad
    from fastad import checkpointing as ck
    th = np.array(TH)
    fad.grad(loss_scan)(th, 10)            # first-call costs out of the timings
    out = {"kind": kind, "n": n, "rss_before_mb": _rss_mb()}
    if kind == "plain":
        t, g = _timed(lambda: fad.grad(loss_plain)(th, n))
        out.update(seconds=t, peak_mb=_rss_mb(), grad=g.tolist())
    elif kind == "scan":
        c = checkpoints if checkpoints else ck.default_checkpoints(n, 3)
        t, g = _timed(lambda: fad.grad(loss_scan)(th, n, c))
        out.update(seconds=t, peak_mb=_rss_mb(), grad=g.tolist(), checkpoints=c,
                   recompute=ck.revolve_cost(n, c) / max(n, 1))
    elif kind == "target":
        c = ck.default_checkpoints(n, 3)
        t, g = _timed(lambda: fad.grad(loss_scan)(th, n, c))
        out.update(seconds=t, peak_mb=_rss_mb(), grad=g.tolist(), checkpoints=c,
                   recompute=ck.revolve_cost(n, c) / n)
        t_rec, tape = _timed(lambda: fad.record(lambda q: loss_plain(q, n_ref), th))
        out["record_ref_s"] = t_rec
        out["ops_per_step"] = len(tape) / n_ref
        ts = {"replay": [], "grad": [], "scan": [t]}
        g_ref = None
        for _ in range(rounds):
            tr, g_ref = _timed(lambda: tape.gradient(th))
            ts["replay"].append(tr)
            ts["grad"].append(_timed(lambda: fad.grad(loss_plain)(th, n_ref))[0])
            ts["scan"].append(_timed(lambda: fad.grad(loss_scan)(th, n, c))[0])
            # the scan at n_ref, against the replayed tape (same point)
        g_small = fad.grad(loss_scan)(th, n_ref, c)
        out.update(times=ts, n_ref=n_ref, peak_after_mb=_rss_mb(),
                   err_ref=float(np.max(np.abs(g_small - g_ref)) / np.max(np.abs(g_ref))))
    elif kind == "tradeoff":
        ts = {str(c): [] for c in checkpoints}
        for _ in range(rounds):
            for c in checkpoints:
                ts[str(c)].append(_timed(lambda: fad.grad(loss_scan)(th, n, c))[0])
        out.update(times=ts)
    print(json.dumps(out))


def run_child(*args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise RuntimeError(f"child {args} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- tables

def _pow10(v):
    k = int(round(np.log10(v))) if v > 0 else 0
    return "10^%d" % k if v > 0 and 10 ** k == v else "{:,}".format(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)
    if args.child:
        child(*json.loads(args.child))
        return 0
    div = 100 if args.quick else 1
    N, NREF = 10 ** 7 // div, 10 ** 6 // div
    L = []

    def emit(s=""):
        print(s, flush=True)
        L.append(s)

    emit("Lorenz-63, RK4 (h = %g), gradient of x + 2y + 3z at the last step w.r.t. "
         "(sigma, rho, beta, x0, y0, z0). Each row a fresh process; peak = ru_maxrss." % H)
    emit()
    t = run_child("target", N, None, NREF, args.rounds)
    ts = {k: float(np.median(v)) for k, v in t["times"].items()}
    per = {"replay": ts["replay"] / NREF, "grad": ts["grad"] / NREF, "scan": ts["scan"] / N}
    emit("### Target: %s steps checkpointed against the uncheckpointed tape at %s steps"
         % (_pow10(N), _pow10(NREF)))
    emit()
    emit("%.1f tape ops per step. Medians of %d interleaved rounds in one process "
         "(fad.scan's first call included); the scan's peak RSS measured before the "
         "uncheckpointed tape was recorded." % (t["ops_per_step"], args.rounds))
    emit()
    emit("| gradient | steps | time | ns per step | ratio (per step) to fad.scan | peak RSS |")
    emit("|---|---:|---:|---:|---:|---:|")
    emit("| fad.scan, default budget (%s checkpoints) | %s | %.2f s | %.0f | 1.00 | %.0f MB |"
         % ("{:,}".format(t["checkpoints"]), _pow10(N), ts["scan"], per["scan"] * 1e9,
            t["peak_mb"]))
    emit("| tape.gradient, uncheckpointed tape (recorded once, %.1f s) | %s | %.2f s | %.0f | "
         "%.2f | %.0f MB (whole process) |" % (t["record_ref_s"], _pow10(NREF), ts["replay"],
                                               per["replay"] * 1e9, per["replay"] / per["scan"],
                                               t["peak_after_mb"]))
    emit("| fad.grad of the plain loop (record + sweep) | %s | %.2f s | %.0f | %.2f | |"
         % (_pow10(NREF), ts["grad"], per["grad"] * 1e9, per["grad"] / per["scan"]))
    emit()
    emit("fad.scan per step / tape.gradient per step: **%.2fx** (target <= 3x); "
         "peak RSS of the %s-step scan: **%.0f MB** (target < 1 GB; %.0f MB before). "
         "fad.scan at %s steps against tape.gradient: max relative difference %.1e."
         % (per["scan"] / per["replay"], _pow10(N), t["peak_mb"], t["rss_before_mb"],
            _pow10(NREF), t["err_ref"]))
    emit()

    emit("### Memory/time trade-off")
    emit()
    budgets = [N, N // 10, N // 100, N // 1000, N // 10000]
    small = [max(10, NREF // 10 ** k) for k in range(5)]
    tr = run_child("tradeoff", NREF, small, 0, args.rounds)
    med = {int(c): float(np.median(v)) for c, v in tr["times"].items()}
    emit("Peak RSS and one timed run at %s steps, each budget in its own process; "
         "ns per step at %s steps with the budget scaled down 10x: medians of %d "
         "interleaved rounds in one process, and their ratio to keeping every carry."
         % (_pow10(N), _pow10(NREF), args.rounds))
    emit()
    emit("| checkpoints at %s | carries' memory | schedule's forward steps / N (revolve_cost) | "
         "peak RSS | one run | ns per step | max rel. difference to all kept | "
         "checkpoints at %s | ns per step (interleaved) | ratio |" % (_pow10(N), _pow10(NREF)))
    emit("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = None
    for c, cs in zip(budgets, small):
        r = run_child("scan", N, c, 0, 0)
        g = np.array(r["grad"])
        if ref is None:
            ref = g
        emit("| %s | %.1f MB | %.2f | %.0f MB | %.2f s | %.0f | %.1e | %s | %.0f | %.2f |" % (
            "{:,}".format(c), c * 24 / 1e6, r["recompute"], r["peak_mb"], r["seconds"],
            r["seconds"] / N * 1e9, float(np.max(np.abs(g - ref)) / np.max(np.abs(ref))),
            "{:,}".format(cs), med[cs] / NREF * 1e9, med[cs] / med[small[0]]))
    emit()

    emit("### Peak memory against steps")
    emit()
    emit("| steps | tape ops | uncheckpointed fad.grad: peak RSS | time | fad.scan (default "
         "budget): peak RSS | time |")
    emit("|---:|---:|---:|---:|---:|---:|")
    ops = t["ops_per_step"]
    for n in [10 ** k // div for k in (4, 5, 6, 7)]:
        s = run_child("scan", n, None, 0, 0)
        if n <= NREF:
            p = run_child("plain", n, None, 0, 0)
            pl = "%.0f MB | %.2f s" % (p["peak_mb"], p["seconds"])
        else:
            pl = "not run (~%.0f GB at 37 B/op) | " % (n * ops * 37 / 1e9)
        emit("| %s | %s | %s | %.0f MB | %.2f s |" % (
            _pow10(n), "{:,}".format(int(round(n * ops))), pl, s["peak_mb"], s["seconds"]))
    emit()
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(L) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
