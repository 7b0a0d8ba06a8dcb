"""Scaling: record, sweep and replay cost against tape length (10^3 to 10^8 ops).

    python benchmarks/bench_scaling.py [--quick] [--max-ops 1e8] [--outdir DIR] [--no-plot]

The extended Rosenbrock scalar loop (8 ops per element, n chosen so that
len(tape) is exactly 10^3, 10^4, ... ops) is recorded with fad.record, then
timed per size:
- record: fad.record(rosen, x), median of repeats (a recording reuses the
  previous tape's buffers when they are at most 8M slots, as in a loop of
  grad calls), and the first recording of the size (after gc.collect() and
  fastad._tape.release_memory(), so it maps fresh memory; one sample);
- sweep: the reverse sweep alone at the recorded point
  (tape.input_adjoints(out_slot), what fad.grad runs; adjoint zeroing included);
- gradient: replayed gradient at a new point, tape.gradient(x2);
- value: forward replay of the value only, tape(x2);
- bytes/op: tape.nbytes / len(tape) (op codes, nodes and values; the inputs'
  slots included) and the growth of peak RSS (/proc/self/status VmHWM, reset
  through /proc/self/clear_refs) during that first recording, per op.
Wall-clock medians (the rule of _common.median_time), and beside them the
process's CPU time (getrusage user + system) of the same samples: system time
is page faults on fresh tape memory, and wall time above CPU time is time
spent waiting for a core on a busy machine.
Every size checks the replayed gradient and the sweep's adjoints against the
analytic gradient and the replayed value against a plain-float evaluation
(rtol 1e-9); a mismatch raises.  A linearity table fits t = t0 + c * ops
(relative least squares) and log t = b log ops + a, and gives the ratio of
ns/op at the largest size to ns/op at 10^4.

--quick: up to 10^6 ops, 3 repeats (a few seconds).  The default run goes to
10^7 ops; 10^8 only with --max-ops 1e8 and enough MemAvailable (130 bytes
per op, 13 GB: the tape, the replay buffers and a second recording; the peak
RSS of a 10^8 run was 12.1 GB).  Writes scaling.md and, if
matplotlib is installed (the optional `bench` extra), scaling_time.png and
scaling_ns_per_op.png to --outdir (default benchmarks/results/; a --quick run
writes nothing unless --outdir is given, so it never overwrites the full
run's committed results).
"""
import argparse
import datetime
import gc
import os
import sys
import time

import numpy as np

try:
    import resource
except ImportError:      # not POSIX: no CPU-time columns
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fastad as fad  # noqa: E402
from _common import Progress, rosen, rosen_grad  # noqa: E402

OPS_PER_ELEMENT = 8          # rosen: 8 tape ops per loop iteration
RESULTS = os.path.join(HERE, "results")
BYTES_PER_OP_NEEDED = 130    # tape (~37 B/op) + replay buffers (~45 B/op) + a recording; 12.1 GB seen at 10^8
TARGETS = {"sweep": 3.0, "gradient": 4.4, "bytes": 48.0}   # shared/DESIGN.md
PHASES = ("record", "sweep", "gradient", "value")
# rough ns/op of each phase, for the progress estimate only
_PHASE_NS = {"first": 60.0, "record": 60.0, "sweep": 5.0, "gradient": 10.0, "value": 6.0,
             "check": 120.0}
_MIN_SAMPLE_OPS = 200_000    # small tapes: loop calls so one timed sample covers this many ops
_MIN_SAMPLE_OPS_FULL = 1_000_000
_STEP_FLOOR_NS = 2e6         # per-step fixed cost in the progress estimate (calls, checks)


class ScalingError(AssertionError):
    """A replayed gradient, sweep or value disagrees with the analytic one."""


# ------------------------------------------------------------------ memory
def _status_kb():
    """VmRSS and VmHWM of this process in kB (from /proc/self/status; {} elsewhere)."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def mem_available():
    """MemAvailable from /proc/meminfo in bytes, or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return None


def _release():
    gc.collect()
    rel = getattr(getattr(fad, "_tape", None), "release_memory", None)
    if rel is not None:
        rel()


# ------------------------------------------------------------------ timing
def _cpu():
    """(user + system, system) CPU seconds of this process so far."""
    if resource is None:
        return float("nan"), float("nan")
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime


def _per_call(fn, ops, reps, min_ops=_MIN_SAMPLE_OPS):
    """Seconds per call of fn(): medians over reps samples of wall time (the rule of
    _common.median_time), of CPU time (user + system) and of system time.

    Small calls are looped so that one sample covers at least min_ops ops."""
    number = max(1, min_ops // ops)
    wall, cpu, sys_ = [], [], []
    for _ in range(reps):
        c0, s0 = _cpu()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        t1 = time.perf_counter()
        c1, s1 = _cpu()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
        sys_.append(s1 - s0)
    return (float(np.median(wall)) / number, float(np.median(cpu)) / number,
            float(np.median(sys_)) / number)


def _reps(ops, quick):
    """(repeats of the replay timings, repeats of record)."""
    if quick:
        return 3, 3
    table = {10 ** 3: (21, 15), 10 ** 4: (21, 15), 10 ** 5: (15, 9), 10 ** 6: (9, 5),
             10 ** 7: (7, 5), 10 ** 8: (5, 3)}
    return table.get(ops, (3, 2))


def _close(a, b, rtol=1e-9):
    """(max|a - b| / max|b|, whether a matches b to rtol with atol 1e-12 * max|b|)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = float(np.max(np.abs(b))) if b.size else 1.0
    err = float(np.max(np.abs(a - b))) / (scale or 1.0)
    return err, bool(np.allclose(a, b, rtol=rtol, atol=1e-12 * scale))


def measure(ops, reps, rec_reps, prog, seed=0, min_ops=_MIN_SAMPLE_OPS):
    """One row: every phase timed at tape length `ops`; raises ScalingError on a wrong result."""
    if ops % OPS_PER_ELEMENT:
        raise ValueError("tape length must be a multiple of %d" % OPS_PER_ELEMENT)
    n = ops // OPS_PER_ELEMENT + 1
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    x2 = x + 0.01 * rng.standard_normal(n)
    tag = "10^%d ops" % round(np.log10(ops))
    row = {"ops_target": ops, "n": n, "reps": reps, "rec_reps": rec_reps}

    # first recording: fresh memory, peak RSS growth
    prog.step("%s: first record (memory)" % tag)
    _release()
    had_reset = _reset_peak()
    before = _status_kb()
    c0, s0 = _cpu()
    t0 = time.perf_counter()
    tape = fad.record(rosen, x)
    t_first = time.perf_counter() - t0
    c1, s1 = _cpu()
    after = _status_kb()
    nops = len(tape)
    if nops != ops:
        raise ScalingError("expected %d ops on the tape, got %d" % (ops, nops))
    row["ops"] = nops
    row["first_record_s"] = t_first
    row["first_record_cpu"] = c1 - c0
    row["first_record_sys"] = s1 - s0
    if "VmRSS" in before and "VmHWM" in after:
        if had_reset:
            grow = after["VmHWM"] - before["VmRSS"]
        else:    # peak not resettable: only trust a new peak
            grow = max(after["VmHWM"] - before.get("VmHWM", 0),
                       after["VmRSS"] - before["VmRSS"])
        row["rss_bytes_per_op"] = grow * 1024.0 / nops
    else:
        row["rss_bytes_per_op"] = None
    nb = getattr(tape, "nbytes", None)
    row["tape_bytes_per_op"] = (nb / float(nops)) if isinstance(nb, (int, float)) else None
    slot = int(tape.out_slots)

    # correctness: sweep adjoints at x, replayed gradient and value at x2
    prog.step("%s: check against the analytic gradient" % tag)
    g_ref2 = rosen_grad(x2)
    err_g, ok_g = _close(tape.gradient(x2), g_ref2)
    sweep_fn = getattr(tape, "input_adjoints", None)
    if sweep_fn is not None:
        err_s, ok_s = _close(sweep_fn(slot), rosen_grad(x))
    else:
        err_s, ok_s = err_g, ok_g
    v_ref = rosen(x2.tolist())
    err_v, ok_v = _close(tape(x2), v_ref)
    row["grad_err"] = max(err_g, err_s)
    row["value_err"] = err_v
    if not (ok_g and ok_s and ok_v):
        raise ScalingError(
            "fastad disagrees at %d ops (max abs error / max |reference|): replayed gradient "
            "%.3g, sweep adjoints %.3g, replayed value %.3g; rtol 1e-9" % (nops, err_g, err_s, err_v))

    # timings (record last so the timed recordings do not disturb the replay buffers)
    def timed(phase, fn, r):
        row[phase + "_s"], row[phase + "_cpu"], row[phase + "_sys"] = _per_call(fn, nops, r, min_ops)

    prog.step("%s: reverse sweep" % tag)
    if sweep_fn is not None:
        timed("sweep", lambda: sweep_fn(slot), reps)
        row["sweep_how"] = "tape.input_adjoints(out_slot)"
    else:
        timed("sweep", lambda: tape.gradient(x), reps)
        row["sweep_how"] = "tape.gradient(x) at the recorded point (no sweep-only method)"
    prog.step("%s: replayed gradient" % tag)
    timed("gradient", lambda: tape.gradient(x2), reps)
    prog.step("%s: replayed value" % tag)
    timed("value", lambda: tape(x2), reps)
    del tape
    prog.step("%s: record" % tag)
    timed("record", lambda: fad.record(rosen, x), rec_reps)
    _release()
    return row


# ------------------------------------------------------------------ analysis
def _fit(ops, t):
    """(c, t0, max relative residual) of t = t0 + c * ops by relative least squares,
    and b, the slope of log t against log ops."""
    A = np.stack([1.0 / t, ops / t], axis=1)
    (t0, c), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    resid = float(np.max(np.abs((t0 + c * ops) / t - 1)))
    b = float(np.polyfit(np.log(ops), np.log(t), 1)[0])
    return float(c), float(t0), resid, b


def linearity(rows):
    """Per phase: the fit of wall time, b of wall and CPU time, and ns/op at 10^4 (or
    the smallest size) and at the largest size, wall and CPU."""
    out = {}
    ops = np.array([r["ops"] for r in rows], dtype=float)
    ref = next((r for r in rows if r["ops"] == 10 ** 4), rows[0])
    for ph in PHASES:
        e = {"ref_ops": ref["ops"]}
        for kind, key in (("wall", "_s"), ("cpu", "_cpu")):
            t = np.array([r[ph + key] for r in rows], dtype=float)
            ok = len(rows) >= 2 and np.all(np.isfinite(t)) and np.all(t > 0)
            e[kind] = _fit(ops, t) if ok else None
            e[kind + "_ref"] = ref[ph + key] * 1e9 / ref["ops"]
            e[kind + "_max"] = rows[-1][ph + key] * 1e9 / rows[-1]["ops"]
            if len(rows) >= 2:      # the last step: flat once the tape is out of cache
                e[kind + "_prev"] = rows[-2][ph + key] * 1e9 / rows[-2]["ops"]
        out[ph] = e
    return out


def _pow10(v):
    k = int(round(np.log10(v)))
    return "10^%d" % k if 10 ** k == v else "{:,}".format(v)


def _fmt_b(v):
    return "n/a" if v is None else "%.1f" % v


def _ns(v, ops, fmt="%.2f"):
    return "n/a" if v is None or not np.isfinite(v) else fmt % (v * 1e9 / ops)


def format_table(rows, lin, notes=()):
    L = ["Extended Rosenbrock scalar loop (%d ops per element), recorded with fad.record; "
         "wall-clock medians of repeats, ns per tape op." % OPS_PER_ELEMENT, "",
         "| ops (len(tape)) | n | record ms | record ns/op | first record ns/op | "
         "sweep ns/op | replayed gradient ns/op | replayed value ns/op | tape B/op | "
         "peak RSS B/op | gradient error | repeats |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o = r["ops"]
        L.append("| %s | %s | %.3f | %s | %s | %s | %s | %s | %s | %s | %.1e | %d / %d |" % (
            _pow10(o), "{:,}".format(r["n"]), r["record_s"] * 1e3, _ns(r["record_s"], o, "%.1f"),
            _ns(r["first_record_s"], o, "%.1f"), _ns(r["sweep_s"], o), _ns(r["gradient_s"], o),
            _ns(r["value_s"], o), _fmt_b(r["tape_bytes_per_op"]), _fmt_b(r["rss_bytes_per_op"]),
            r["grad_err"], r["reps"], r["rec_reps"]))
    L += ["", "CPU time of this process (getrusage user + system, medians of the same samples), "
          "ns per op; system time is almost all page faults (fresh tape memory). "
          "Wall time above CPU time is time spent waiting for a core.", "",
          "| ops | record CPU | of which system | first record CPU | of which system | "
          "sweep CPU | replayed gradient CPU | replayed value CPU |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o = r["ops"]
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            _pow10(o), _ns(r["record_cpu"], o, "%.1f"), _ns(r["record_sys"], o, "%.1f"),
            _ns(r["first_record_cpu"], o, "%.1f"), _ns(r["first_record_sys"], o, "%.1f"),
            _ns(r["sweep_cpu"], o), _ns(r["gradient_cpu"], o), _ns(r["value_cpu"], o)))
    big = _pow10(rows[-1]["ops"])
    refs = _pow10(lin["record"]["ref_ops"])
    L += ["", "Linearity: t = t0 + c * ops fitted to wall time by relative least squares over "
          "all sizes; b = slope of log t against log ops (1 = linear cost), for wall and CPU "
          "time; ratio = ns/op at %s over ns/op at %s; last step = ns/op at %s over ns/op "
          "at the size before (wall)." % (big, refs, big), "",
          "| phase | c, ns/op | t0, us | max fit residual | b wall | b CPU | wall ns/op at %s | "
          "wall ns/op at %s | ratio wall | ratio CPU | last step | target |" % (refs, big),
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tgt = {"sweep": "<= %g ns/node" % TARGETS["sweep"],
           "gradient": "<= %g ns/op (ADOL-C)" % TARGETS["gradient"]}
    for ph in PHASES:
        e = lin[ph]
        if e["wall"] is None:
            fit = "n/a | n/a | n/a | n/a"
        else:
            c, t0, resid, b = e["wall"]
            fit = "%.2f | %.1f | %.0f%% | %.3f" % (c * 1e9, t0 * 1e6, resid * 100, b)
        bc = "n/a" if e["cpu"] is None else "%.3f" % e["cpu"][3]
        rc = e["cpu_max"] / e["cpu_ref"] if e["cpu_ref"] > 0 else float("nan")
        last = ("%.2fx" % (e["wall_max"] / e["wall_prev"])) if "wall_prev" in e else "n/a"
        L.append("| %s | %s | %s | %.2f | %.2f | %.2fx | %.2fx | %s | %s |" % (
            ph, fit, bc, e["wall_ref"], e["wall_max"], e["wall_max"] / e["wall_ref"], rc,
            last, tgt.get(ph, "")))
    L += ["", "Memory target: <= %g bytes per scalar op. tape B/op = tape.nbytes / len(tape) "
          "(op codes, nodes, values; the inputs' slots included); peak RSS B/op = growth of "
          "VmHWM during the first recording (page- and allocator-granular: meaningless for "
          "small tapes; about 3 B/op below tape B/op on big tapes because the node entries of "
          "the input slots are never written, so their pages are never faulted in). A replay also uses per-replay buffers (values, nodes, adjoints) of "
          "about 40 bytes per slot, not counted here." % TARGETS["bytes"],
          "sweep: %s. first record: one recording after release_memory() (fresh pages); "
          "record: median, reusing the previous tape's buffers up to 8M slots (2^23; the "
          "10^7 tape needs 2^24 slots of capacity, so from 10^7 ops every recording maps "
          "fresh memory)." % rows[0]["sweep_how"],
          "gradient error: max |error| / max |gradient|, worst of the replayed gradient at a "
          "new point and the sweep's adjoints at the recorded point, against the analytic "
          "gradient; the run raises unless both (and the replayed value, against plain floats) "
          "match to rtol 1e-9, atol 1e-12 max|g|."]
    L += list(notes)
    return "\n".join(L)


# ------------------------------------------------------------------ plots
def plot(rows, outdir):
    """Write scaling_time.png and scaling_ns_per_op.png; returns their paths, or None
    if matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots", file=sys.stderr)
        return None
    ops = np.array([r["ops"] for r in rows], dtype=float)
    style = {"record": ("C0", "o"), "sweep": ("C1", "s"), "gradient": ("C2", "^"),
             "value": ("C3", "D")}
    label = {"record": "record (fad.record)", "sweep": "reverse sweep only",
             "gradient": "replayed gradient (tape.gradient)", "value": "replayed value (tape(x))"}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for ph in PHASES:
        t = np.array([r[ph + "_s"] for r in rows])
        c, m = style[ph]
        ax.loglog(ops, t, marker=m, color=c, label=label[ph])
    t_ref = rows[-1]["gradient_s"]
    ax.loglog(ops, t_ref * ops / ops[-1], "k--", lw=1, label="slope 1 (linear cost)")
    ax.set_xlabel("tape length (ops)")
    ax.set_ylabel("time per call (s)")
    ax.set_title("fastad: time against tape length (extended Rosenbrock)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = os.path.join(outdir, "scaling_time.png")
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for ph in PHASES:
        ns = np.array([r[ph + "_s"] for r in rows]) * 1e9 / ops
        c, m = style[ph]
        a1.semilogx(ops, ns, marker=m, color=c, label=label[ph])
        cpu = np.array([r[ph + "_cpu"] for r in rows]) * 1e9 / ops
        if np.all(np.isfinite(cpu)):
            a1.semilogx(ops, cpu, ls="--", lw=1, color=c, alpha=0.6,
                        label="(dashed: CPU time)" if ph == PHASES[-1] else None)
    a1.axhline(TARGETS["sweep"], color=style["sweep"][0], ls=":", lw=1,
               label="sweep target %g ns/node" % TARGETS["sweep"])
    a1.axhline(TARGETS["gradient"], color=style["gradient"][0], ls=":", lw=1,
               label="ADOL-C gradient %g ns/op" % TARGETS["gradient"])
    a1.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter
    a1.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    a1.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    a1.set_xlabel("tape length (ops)")
    a1.set_ylabel("ns per op")
    a1.set_title("wall time per op (flat = linear cost)")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=7)
    tb = [r["tape_bytes_per_op"] for r in rows]
    rb = [r["rss_bytes_per_op"] for r in rows]
    if all(v is not None for v in tb):
        a2.semilogx(ops, tb, marker="o", color="C4", label="tape.nbytes / len(tape)")
    keep = [(o, v) for o, v in zip(ops, rb) if v is not None]
    if keep:
        a2.semilogx([k[0] for k in keep], [k[1] for k in keep], marker="s", color="C5",
                    label="peak RSS growth while recording / op")
    a2.axhline(TARGETS["bytes"], color="k", ls=":", lw=1,
               label="target %g B/op" % TARGETS["bytes"])
    a2.set_xlabel("tape length (ops)")
    a2.set_ylabel("bytes per op")
    a2.set_title("memory per op")
    top = max([v for v in tb + rb if v is not None] + [TARGETS["bytes"]])
    a2.set_ylim(0, min(top, 4 * TARGETS["bytes"]) * 1.15)
    a2.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    p = os.path.join(outdir, "scaling_ns_per_op.png")
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    return paths


def _machine_header():
    try:
        from run import machine_info
        head = machine_info()
    except Exception:
        import platform
        head = "machine: %s | Python %s | NumPy %s" % (
            platform.platform(), platform.python_version(), np.__version__)
    version = getattr(fad, "__version__", None)
    if version:
        head += " | fastad %s" % version
    return head


# ------------------------------------------------------------------ driver
def sizes_for(quick, max_ops):
    if max_ops is None:
        max_ops = 10 ** 6 if quick else 10 ** 7
    max_ops = int(float(max_ops))
    return [10 ** k for k in range(3, 9) if 10 ** k <= max_ops]


def run(quick=False, progress=True, outdir=None, max_ops=None, plots=True):
    """Measure every size and return the markdown tables.

    With `outdir`, also write outdir/scaling.md (machine-info header plus the
    tables) and, when `plots` and matplotlib is installed, the two PNGs."""
    sizes = sizes_for(quick, max_ops)
    notes = []
    if sizes and sizes[-1] >= 10 ** 8:
        avail = mem_available()
        need = BYTES_PER_OP_NEEDED * sizes[-1]
        if avail is not None and avail < need:
            notes.append("10^8 ops skipped: MemAvailable %.1f GB < %.1f GB needed."
                         % (avail / 1e9, need / 1e9))
            sizes = sizes[:-1]
    if not sizes:
        raise ValueError("max_ops must be at least 1000")

    min_ops = _MIN_SAMPLE_OPS if quick else _MIN_SAMPLE_OPS_FULL
    weights = []
    for ops in sizes:
        reps, rec_reps = _reps(ops, quick)
        w = max(ops, min_ops)
        weights += [_STEP_FLOOR_NS + ns for ns in (
            ops * _PHASE_NS["first"], ops * _PHASE_NS["check"],
            w * _PHASE_NS["sweep"] * reps, w * _PHASE_NS["gradient"] * reps,
            w * _PHASE_NS["value"] * reps, w * _PHASE_NS["record"] * rec_reps)]
    prog = Progress("scaling", weights, enabled=progress)
    # warm-up: first-call costs (imports, type set-up, the replay buffers) out of the 10^3 row
    warm = fad.record(rosen, np.linspace(-1, 1, 126))
    warm.gradient(np.linspace(-1, 1, 126))
    del warm
    load = _loadavg()
    if load:
        notes.append("Load average at the start: %s (1, 5, 15 min; %s logical cores)."
                     % (load, os.cpu_count()))
    t_start = time.perf_counter()
    rows = []
    for ops in sizes:
        reps, rec_reps = _reps(ops, quick)
        rows.append(measure(ops, reps, rec_reps, prog, min_ops=min_ops))
    elapsed = time.perf_counter() - t_start
    notes.append("Measured in %.1f s (%s mode: %s)." % (
        elapsed, "quick" if quick else "full",
        "3 repeats" if quick else "repeats per size in the last column, replay / record"))
    table = format_table(rows, linearity(rows), notes)

    if outdir:
        os.makedirs(outdir, exist_ok=True)
        pngs = plot(rows, outdir) if plots else None
        with open(os.path.join(outdir, "scaling.md"), "w") as fh:
            fh.write("# Scaling with tape length (benchmarks/bench_scaling.py)\n\n")
            fh.write(_machine_header() + "\n\n")
            fh.write("Generated %s by `python benchmarks/bench_scaling.py%s%s`.\n\n" % (
                datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                " --quick" if quick else "",
                "" if max_ops is None else " --max-ops %g" % float(max_ops)))
            fh.write(table + "\n")
            if pngs:
                fh.write("\n![time against tape length](scaling_time.png)\n\n"
                         "![ns per op and bytes per op](scaling_ns_per_op.png)\n")
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="up to 10^6 ops, 3 repeats")
    ap.add_argument("--max-ops", type=float, default=None,
                    help="largest tape length (default 1e7; 1e6 with --quick; 1e8 if memory allows)")
    ap.add_argument("--outdir", default=None,
                    help="where scaling.md and the PNGs go (default benchmarks/results/; "
                         "a --quick run writes nothing unless this is given)")
    ap.add_argument("--no-plot", action="store_true", help="no PNGs")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    outdir = args.outdir
    if outdir is None and not args.quick:
        outdir = RESULTS
    print(_machine_header())
    print()
    print(run(quick=args.quick, progress=not args.no_progress, outdir=outdir,
              max_ops=args.max_ops, plots=not args.no_plot))
    if outdir:
        print("\nwritten to %s" % outdir, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
