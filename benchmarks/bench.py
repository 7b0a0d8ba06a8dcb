"""Benchmarks: fastad against plain floats and a fair pure-Python tape.

Every workload is written ONCE as a plain Python function ``f(m, x)`` where
``m`` is a math namespace (``m.sigmoid``, ``m.exp``, ...):

* ``FLOAT``          -- plain Python floats (functions from :mod:`math`);
* ``_purepy.m``      -- the pure-Python Wengert-list tape (``benchmarks/_purepy.py``);
* ``fastad`` itself  -- ``fad.sigmoid`` etc. work on Vars and on floats.

``x`` is a flat 1-D array of parameters that the workload indexes with
``x[k]`` and ``len(x)`` only, so the same code runs on a list of floats, a
list of purepy Vars and a ``fad.Array``.

``run(quick)`` returns a markdown table; progress goes to stderr.
``python benchmarks/bench.py [--quick]`` prints it (``benchmarks/run.py``
runs it in the suite); ``python benchmarks/bench.py --self-check``
validates the workloads and the pure tape against analytic /
finite-difference gradients without fastad (before it builds, too).
"""

import gc
import math
import os
import statistics
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _purepy as P  # noqa: E402  (benchmarks/_purepy.py, beside this file)


__all__ = ["FLOAT", "WORKLOADS", "rosenbrock", "logreg", "mlp", "lorenz_rk4", "lorenz_rk4_step",
           "make_workloads", "run", "self_check", "BenchmarkError"]


class BenchmarkError(AssertionError):
    """Raised by run() when fastad disagrees with the pure-Python tape or fails."""


# ------------------------------------------------------- float namespace
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


FLOAT = types.SimpleNamespace(
    exp=math.exp, log=math.log, sin=math.sin, cos=math.cos, tanh=math.tanh,
    sqrt=math.sqrt, sigmoid=_sigmoid, name="float")


# ============================================================ workloads
# Each is plain Python; only m.<function>, x[k], len(x) and + - * / ** are used.

def rosenbrock(m, x):
    """Extended Rosenbrock as a scalar loop."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
    return s


def logreg(m, p, xs, ts, lam):
    """The notes' regularized logistic regression, L_reg summed over the data.

    p = [w, b];  z = w x + b, y = sigmoid(z), L = 1/2 (y - t)^2,
    R = 1/2 w^2, L_reg = L + lam R  (per data point, summed).
    """
    w = p[0]
    b = p[1]
    R = 0.5 * w ** 2
    lamR = lam * R
    s = 0.0
    for x, t in zip(xs, ts):
        z = w * x + b
        y = m.sigmoid(z)
        L = 0.5 * (y - t) ** 2
        Lreg = L + lamR
        s = s + Lreg
    return s


def mlp(m, p, X, T, nin, nh, nout):
    """Scalar-form two-layer network (the notes' z = W1 x + b1, h = sigmoid(z),
    y = W2 h + b2, L = 1/2 sum_k (y_k - t_k)^2), summed over a batch.

    p packs [W1 (nh x nin, row-major), b1 (nh), W2 (nout x nh), b2 (nout)].
    """
    oW1 = 0
    ob1 = nh * nin
    oW2 = ob1 + nh
    ob2 = oW2 + nout * nh
    L = 0.0
    for x, t in zip(X, T):
        h = []
        for i in range(nh):
            z = p[ob1 + i]
            r = oW1 + i * nin
            for j in range(nin):
                z = z + p[r + j] * x[j]
            h.append(m.sigmoid(z))
        for k in range(nout):
            y = p[ob2 + k]
            r = oW2 + k * nh
            for j in range(nh):
                y = y + p[r + j] * h[j]
            L = L + 0.5 * (y - t[k]) ** 2
    return L


def lorenz_rk4(m, p, dt, steps):
    """Final x of the Lorenz system integrated with classic RK4.

    p = [x0, y0, z0, sigma, rho, beta].
    """
    x = p[0]
    y = p[1]
    z = p[2]
    s = p[3]
    r = p[4]
    b = p[5]
    for _ in range(steps):
        x, y, z = lorenz_rk4_step(x, y, z, s, r, b, dt)
    return x


def lorenz_rk4_step(x, y, z, s, r, b, dt):
    """One classic RK4 step of the Lorenz system (arithmetic only, so it runs
    on floats, Vars, the pure tape's Vars and JAX tracers alike)."""
    h2 = 0.5 * dt
    h6 = dt / 6.0
    k1x = s * (y - x)
    k1y = x * (r - z) - y
    k1z = x * y - b * z
    xa = x + h2 * k1x
    ya = y + h2 * k1y
    za = z + h2 * k1z
    k2x = s * (ya - xa)
    k2y = xa * (r - za) - ya
    k2z = xa * ya - b * za
    xb = x + h2 * k2x
    yb = y + h2 * k2y
    zb = z + h2 * k2z
    k3x = s * (yb - xb)
    k3y = xb * (r - zb) - yb
    k3z = xb * yb - b * zb
    xc = x + dt * k3x
    yc = y + dt * k3y
    zc = z + dt * k3z
    k4x = s * (yc - xc)
    k4y = xc * (r - zc) - yc
    k4z = xc * yc - b * zc
    return (x + h6 * (k1x + 2 * k2x + 2 * k3x + k4x),
            y + h6 * (k1y + 2 * k2y + 2 * k3y + k4y),
            z + h6 * (k1z + 2 * k2z + 2 * k3z + k4z))


# ------------------------------------------------- workload instances
class Workload(object):
    """A workload bound to its data: ``fn(m, x)`` with x a flat 1-D array."""

    def __init__(self, key, name, size, fn, x0, ref_grad=None):
        self.key = key
        self.name = name
        self.size = size
        self.fn = fn
        self.x0 = np.ascontiguousarray(x0, dtype=np.float64)
        self.ref_grad = ref_grad  # analytic gradient (callable x -> ndarray) or None


def _rosen_grad(x):
    g = np.zeros_like(x)
    a, c = x[:-1], x[1:]
    g[:-1] += -2 * (1 - a) - 400 * a * (c - a ** 2)
    g[1:] += 200 * (c - a ** 2)
    return g


def make_rosenbrock(n, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.2, 1.2, n)
    return Workload("rosenbrock", "Extended Rosenbrock, scalar loop", "n=%d" % n,
                    rosenbrock, x0, _rosen_grad)


def make_logreg(npts, seed=1, lam=0.1):
    rng = np.random.default_rng(seed)
    xs_a = rng.normal(0.0, 2.0, npts)
    ts_a = (1.5 * xs_a - 0.5 + rng.normal(0.0, 1.0, npts) > 0).astype(float)
    xs, ts = xs_a.tolist(), ts_a.tolist()

    def fn(m, p):
        return logreg(m, p, xs, ts, lam)

    def ref(p):  # the notes' adjoints, vectorized
        w, b = p
        y = 1.0 / (1.0 + np.exp(-(w * xs_a + b)))
        zbar = (y - ts_a) * y * (1 - y)
        return np.array([np.sum(zbar * xs_a) + npts * lam * w, np.sum(zbar)])
    return Workload("logreg", "Logistic regression L_reg (notes), summed",
                    "%d points" % npts, fn, np.array([0.3, -0.2]), ref)


def make_mlp(nin=16, nh=32, nout=4, batch=8, seed=2):
    rng = np.random.default_rng(seed)
    X_a = rng.normal(size=(batch, nin))
    T_a = rng.normal(size=(batch, nout))
    W1 = rng.normal(0, 1 / math.sqrt(nin), (nh, nin))
    b1 = rng.normal(0, 0.1, nh)
    W2 = rng.normal(0, 1 / math.sqrt(nh), (nout, nh))
    b2 = rng.normal(0, 0.1, nout)
    p0 = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    assert p0.size == nin * nh + nh + nh * nout + nout
    X, T = X_a.tolist(), T_a.tolist()

    def fn(m, p):
        return mlp(m, p, X, T, nin, nh, nout)

    def ref(p):  # matrix-form backprop from the notes
        i = 0
        W1 = p[i:i + nh * nin].reshape(nh, nin); i += nh * nin
        b1 = p[i:i + nh]; i += nh
        W2 = p[i:i + nout * nh].reshape(nout, nh); i += nout * nh
        b2 = p[i:i + nout]
        Z = X_a @ W1.T + b1
        H = 1 / (1 + np.exp(-Z))
        Y = H @ W2.T + b2
        Ybar = Y - T_a
        W2bar = Ybar.T @ H
        b2bar = Ybar.sum(0)
        Hbar = Ybar @ W2
        Zbar = Hbar * H * (1 - H)
        W1bar = Zbar.T @ X_a
        b1bar = Zbar.sum(0)
        return np.concatenate([W1bar.ravel(), b1bar, W2bar.ravel(), b2bar])
    return Workload("mlp", "Two-layer net %d-%d-%d, scalar loops" % (nin, nh, nout),
                    "batch %d, %d params" % (batch, p0.size), fn, p0, ref)


def make_lorenz(steps=1000, dt=0.01):
    def fn(m, p):
        return lorenz_rk4(m, p, dt, steps)
    p0 = np.array([1.0, 1.0, 1.0, 10.0, 28.0, 8.0 / 3.0])
    return Workload("lorenz", "Lorenz RK4, d x(T) / d(x0,y0,z0,s,r,b)",
                    "%d steps, dt=%g" % (steps, dt), fn, p0, None)


def make_workloads():
    return [make_rosenbrock(10000), make_logreg(10000), make_mlp(), make_lorenz(1000)]


WORKLOADS = ("rosenbrock", "logreg", "mlp", "lorenz")


# ================================================================ helpers
def _fd_grad(f, x, h=1e-6):
    """Central finite differences of f (a float function of an ndarray)."""
    x = np.asarray(x, dtype=float)
    g = np.empty_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        step = h * max(1.0, abs(x[k]))
        e[k] = step
        g[k] = (f(x + e) - f(x - e)) / (2 * step)
    return g


def _rel_diff(a, b):
    """max |a - b| / max(|b|) (a scale-aware relative difference)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = max(np.max(np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def _agree(a, b, rtol=1e-9):
    """np.allclose with rtol and an atol of 1e-12 * max|b| (for near-zero entries)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return False
    atol = 1e-12 * max(float(np.max(np.abs(b))), 1e-300)
    return bool(np.allclose(a, b, rtol=rtol, atol=atol))


def self_check(verbose=True):
    """Validates purepy + workloads with no fastad: floats vs pure tape vs analytic/FD."""
    P.self_check(verbose=verbose)
    checks = [make_rosenbrock(200), make_logreg(500), make_mlp(batch=2), make_lorenz(100)]
    for wl in checks:
        x = wl.x0
        val_f = wl.fn(FLOAT, x.tolist())
        val_p, g_p = P.value_and_grad(lambda v: wl.fn(P.m, v))(x)
        assert val_p == val_f, (wl.key, val_p, val_f)
        assert isinstance(g_p, np.ndarray) and g_p.shape == x.shape, wl.key
        if wl.ref_grad is not None:
            d = _rel_diff(g_p, wl.ref_grad(x))
            assert d < 1e-12, (wl.key, "analytic", d)
            how = "analytic"
        else:
            d = _rel_diff(g_p, _fd_grad(lambda v: wl.fn(FLOAT, v.tolist()), x))
            assert d < 1e-6, (wl.key, "finite differences", d)
            how = "central FD"
        if verbose:
            print("workload %-10s %-22s purepy vs %-10s rel diff %.1e  OK"
                  % (wl.key, wl.size, how, d))
    # full-size Lorenz: compare purepy with FD too (looser: chaotic, T = 10)
    wl = make_lorenz(1000)
    g_p = P.grad(lambda v: wl.fn(P.m, v))(wl.x0)
    d = _rel_diff(g_p, _fd_grad(lambda v: wl.fn(FLOAT, v.tolist()), wl.x0, h=1e-7))
    assert d < 1e-4, ("lorenz 1000 FD", d, g_p)
    if verbose:
        print("workload lorenz     1000 steps             purepy vs central FD   rel diff %.1e  OK" % d)
        print("grad of x(T): %s" % np.array2string(g_p, precision=6))
    return True


class _Progress(object):
    def __init__(self, enabled, total):
        self.enabled = enabled
        self.total = total
        self.i = 0
        self.t0 = time.perf_counter()

    def step(self, what):
        self.i += 1
        if self.enabled:
            sys.stderr.write("[bench %6.1fs] %d/%d %s\n"
                             % (time.perf_counter() - self.t0, self.i, self.total, what))
            sys.stderr.flush()

    def note(self, what):
        if self.enabled:
            sys.stderr.write("[bench %6.1fs]      %s\n" % (time.perf_counter() - self.t0, what))
            sys.stderr.flush()


def _time(fn, repeat, min_time):
    """Median seconds per call, timeit-style: each of `repeat` samples runs fn
    `number` times, number calibrated so a sample lasts >= min_time.
    The garbage collector stays enabled (it is part of what users pay);
    gc.collect() runs before each sample."""
    gc.collect()
    t = time.perf_counter()
    fn()  # warm-up, also calibrates
    first = time.perf_counter() - t
    number = max(1, int(math.ceil(min_time / max(first, 1e-9))))
    samples = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t) / number)
    return statistics.median(samples)


def _import_fastad():
    try:
        import fastad as fad
        fad.grad  # noqa: B018
        return fad, None
    except Exception as e:  # report, don't hide
        return None, "%s: %s" % (type(e).__name__, e)


def _fmt_ms(t):
    if t is None:
        return "n/a"
    if t < 1e-3:
        return "%.3f" % (t * 1e3)
    return "%.2f" % (t * 1e3)


def _fmt_ratio(r):
    return "n/a" if r is None else ("%.2fx" % r if r < 100 else "%.0fx" % r)


def _purepy_tape_stats(wl, repeat, min_time):
    """Records wl on the pure tape; returns (n_slots, sweep s, bytes/slot)."""
    nslots, out, _ = P.record_gradient_parts(lambda v: wl.fn(P.m, v), wl.x0)
    try:
        t_sweep = _time(lambda: P._reverse(out), repeat, min_time)
        seen = set()
        nbytes = 0
        for lst in (P._A, P._PA, P._B, P._PB):
            nbytes += sys.getsizeof(lst)
            for o in lst:
                if id(o) not in seen:
                    seen.add(id(o))
                    nbytes += sys.getsizeof(o)
    finally:
        P._reset()
    return nslots, t_sweep, nbytes / float(nslots)


def _fastad_record(fad, f, x0):
    """Record f once; returns (tape, output slot, how)."""
    tape = fad.record(f, x0)
    return tape, int(tape.out_slots), "fad.record"


def _fastad_tape_stats(fad, wl, repeat, min_time):
    """Optional internals, all behind hasattr/getattr guards.

    Returns a dict of strings; 'n/a' where the library does not expose it."""
    out = {"ops": "n/a", "replay": "n/a", "replay_ns": "n/a", "sweep_ns": "n/a",
           "bytes": "n/a", "bytes_how": ""}
    f = lambda v: wl.fn(fad, v)  # noqa: E731
    try:
        tape, slot, how = _fastad_record(fad, f, wl.x0)
    except LookupError as e:
        out["note"] = str(e)
        return out
    except Exception as e:
        out["note"] = "recording a tape failed: %s: %s" % (type(e).__name__, e)
        out["replay_wrong"] = True
        out["replay"] = out["note"]
        return out
    out["note"] = "tape obtained via %s" % how
    nops = nnodes = None
    try:
        nops = len(tape)
        nnodes = getattr(tape, "n_nodes", None)
        out["ops"] = "%d ops" % nops + (" + %d inputs" % (nnodes - nops) if nnodes else "")
    except Exception:
        pass
    # replayed gradient (record once, differentiate many times)
    if hasattr(tape, "gradient"):
        try:
            g = np.asarray(tape.gradient(wl.x0))
            ok = wl.ref_grad is None or _rel_diff(g, wl.ref_grad(wl.x0)) < 1e-12
            t = _time(lambda: tape.gradient(wl.x0), repeat, min_time)
            out["replay"] = _fmt_ms(t) + " ms" + ("" if ok else " (WRONG GRADIENT)")
            if not ok:
                out["replay_wrong"] = True
            if nops:
                out["replay_ns"] = "%.2f" % (t * 1e9 / nops)
        except Exception as e:
            out["replay"] = "error: %s: %s" % (type(e).__name__, e)
            out["replay_wrong"] = True
    # the reverse sweep alone, at the recorded point (Tape.reverse(out_slot) -> adjoints)
    adj = tape.reverse(slot)
    ok = _rel_diff(adj[:wl.x0.size], wl.ref_grad(wl.x0)) < 1e-12
    t = _time(lambda: tape.reverse(slot), repeat, min_time)
    out["sweep_ns"] = "%.2f%s" % (t * 1e9 / nops, "" if ok else " (adjoints WRONG)")
    for name in ("nbytes", "memory_bytes", "bytes_used", "memory_usage", "sizeof"):
        v = getattr(tape, name, None)
        if callable(v):
            try:
                v = v()
            except Exception:
                v = None
        if isinstance(v, (int, float)) and (nnodes or nops):
            out["bytes"] = "%.1f" % (v / float(nnodes or nops))
            out["bytes_how"] = "tape.%s / %s" % (name, "n_nodes" if nnodes else "len(tape)")
            break
    return out


# ================================================================== run
def run(quick=False, progress=True, strict=True):
    """Runs all workloads; returns a markdown table (str).

    quick: 3 repeats (>= 5 ms each), same problem sizes; full: 21 repeats
    (>= 50 ms each) plus a Rosenbrock scaling section.
    strict: raise BenchmarkError (with the table in the message) if fastad's
    gradient disagrees with the pure tape (rtol 1e-9) or any fastad call fails.
    """
    repeat, min_time = (3, 0.005) if quick else (21, 0.05)
    fad, fad_err = _import_fastad()
    wls = make_workloads()
    scaling = [] if quick else [make_rosenbrock(1000), make_rosenbrock(100000)]
    total = 3 * len(wls) + 2 + 3 * len(scaling)
    prog = _Progress(progress, total)
    problems = []
    rows = []
    purepy_stats = fad_stats = None

    for wl in wls + scaling:
        x0 = wl.x0
        xl = x0.tolist()
        label = "%s (%s)" % (wl.key, wl.size)
        row = {"wl": wl}
        # (a) plain floats
        prog.step("%s: plain float evaluation" % label)
        f_float = lambda: wl.fn(FLOAT, xl)  # noqa: E731
        val_float = f_float()
        row["t_float"] = _time(f_float, repeat, min_time)
        # (b) pure-Python tape
        prog.step("%s: pure-Python tape gradient" % label)
        g_pp_fn = P.grad(lambda v: wl.fn(P.m, v))
        g_pp = g_pp_fn(x0)
        row["t_pp"] = _time(lambda: g_pp_fn(x0), repeat, min_time)
        row["nslots"] = None
        if wl.ref_grad is not None:
            d = _rel_diff(g_pp, wl.ref_grad(x0))
            if d > 1e-11:  # our own baseline must be right, or nothing means anything
                raise BenchmarkError("purepy gradient of %s is off the analytic one by %.2e" % (label, d))
        # (c) fastad
        prog.step("%s: fastad gradient" % label)
        row["t_fad"] = None
        row["diff"] = None
        row["status"] = ""
        if fad is None:
            row["status"] = "fastad unavailable"
        else:
            try:
                g_fad_fn = fad.grad(lambda v: wl.fn(fad, v))
                g_fad = g_fad_fn(x0)
                if not isinstance(g_fad, np.ndarray) or g_fad.shape != x0.shape:
                    raise BenchmarkError("fad.grad returned %r (type %s) instead of an ndarray of shape %s"
                                         % (getattr(g_fad, "shape", g_fad), type(g_fad).__name__, x0.shape))
                row["diff"] = _rel_diff(g_fad, g_pp)
                if not _agree(g_fad, g_pp):
                    bad = np.argmax(np.abs(np.asarray(g_fad, float) - g_pp))
                    msg = ("MISMATCH %s: fad.grad and purepy disagree (rtol 1e-9); max rel diff %.3e; "
                           "worst index %d: fastad %r vs purepy %r"
                           % (label, row["diff"], bad, float(g_fad.flat[bad]), float(g_pp.flat[bad])))
                    problems.append(msg)
                    row["status"] = "**MISMATCH**"
                    prog.note(msg)
                if hasattr(fad, "value_and_grad"):
                    val_fad = fad.value_and_grad(lambda v: wl.fn(fad, v))(x0)[0]
                    if not (isinstance(val_fad, float)
                            and abs(val_fad - val_float) <= 1e-9 * abs(val_float) + 1e-300):
                        msg = ("VALUE MISMATCH %s: fad.value_and_grad value %r vs plain float %r"
                               % (label, val_fad, val_float))
                        problems.append(msg)
                        row["status"] = "**VALUE MISMATCH**"
                        prog.note(msg)
                row["t_fad"] = _time(lambda: g_fad_fn(x0), repeat, min_time)
            except Exception as e:
                msg = "ERROR %s: fastad raised %s: %s" % (label, type(e).__name__, e)
                problems.append(msg)
                row["status"] = "**ERROR** %s" % type(e).__name__
                prog.note(msg)
        rows.append(row)

        if wl is wls[0]:  # Rosenbrock n=10000: tape internals
            prog.step("%s: pure-Python tape sweep / memory" % label)
            purepy_stats = _purepy_tape_stats(wl, repeat, min_time)
            row["nslots"] = purepy_stats[0]
            prog.step("%s: fastad tape internals (if exposed)" % label)
            if fad is not None:
                try:
                    fad_stats = _fastad_tape_stats(fad, wl, repeat, min_time)
                    if fad_stats.get("replay_wrong"):
                        msg = "fastad tape.gradient for %s: %s" % (label, fad_stats["replay"])
                        problems.append(msg)
                        prog.note(msg)
                except Exception as e:
                    msg = "ERROR %s tape internals: %s: %s" % (label, type(e).__name__, e)
                    problems.append(msg)
                    prog.note(msg)

    # ---------------------------------------------------------- the table
    L = []
    L.append("mode: %s -- median of %d repeats (each >= %g ms, timeit-style, perf_counter, gc enabled); "
             "times in ms; problem sizes identical in quick and full mode"
             % ("QUICK" if quick else "full", repeat, min_time * 1e3))
    if fad is None:
        L.append("")
        L.append("**fastad could not be imported: %s**" % fad_err)
    L.append("")
    head = ("| workload | size | plain float | purepy grad | fastad grad | fastad / float "
            "| purepy / fastad | purepy / float | max rel diff fastad vs purepy | status |")
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    L.append(head)
    L.append(sep)

    def table_row(row):
        wl = row["wl"]
        tf, tp, ta = row["t_float"], row["t_pp"], row["t_fad"]
        return ("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            wl.name, wl.size, _fmt_ms(tf), _fmt_ms(tp), _fmt_ms(ta),
            _fmt_ratio(ta / tf if ta else None), _fmt_ratio(tp / ta if ta else None),
            _fmt_ratio(tp / tf), "n/a" if row["diff"] is None else "%.1e" % row["diff"],
            row["status"] or "ok"))

    for row in rows[:len(wls)]:
        L.append(table_row(row))
    if scaling:
        L.append("")
        L.append("Scaling (Rosenbrock at other n; per-op cost should stay flat):")
        L.append("")
        L.append(head)
        L.append(sep)
        for row in sorted([rows[0]] + rows[len(wls):], key=lambda r: r["wl"].x0.size):
            L.append(table_row(row))

    L.append("")
    L.append("Rosenbrock n=10000 tape internals:")
    L.append("")
    L.append("| quantity | fastad | purepy | contract (DESIGN.md) |")
    L.append("|---|---:|---:|---:|")
    fs = fad_stats or {}
    if purepy_stats:
        nslots, t_sweep, bps = purepy_stats
        nleaves = rows[0]["wl"].x0.size
        pp_ops = "%d ops + %d leaves" % (nslots - 1 - nleaves, nleaves)
        pp_sweep, pp_bytes = "%.1f" % (t_sweep * 1e9 / (nslots - 1)), "%.0f" % bps
    else:
        pp_ops = pp_sweep = pp_bytes = "n/a"
    L.append("| tape nodes: `len(tape)` / purepy slots | %s | %s | ~90k |" % (
        fs.get("ops", "n/a"), pp_ops))
    L.append("| reverse sweep only, ns per node swept (incl. adjoint allocation) | %s | %s | <= 3 |"
             % (fs.get("sweep_ns", "n/a"), pp_sweep))
    L.append("| replayed gradient `tape.gradient(x)` | %s | n/a | <= 0.35 ms |" % fs.get("replay", "n/a"))
    L.append("| replayed gradient, ns per op | %s | n/a | ~4.4 |" % fs.get("replay_ns", "n/a"))
    L.append("| tape bytes per node (slot, inputs included) | %s | %s (lists + float/int objects) | <= 48 |" % (
        fs.get("bytes", "n/a") + (" (%s)" % fs["bytes_how"] if fs.get("bytes_how") else ""), pp_bytes))
    r0 = rows[0]
    if r0["t_fad"]:
        L.append("| grad / plain-float time | %.2fx | %.1fx | <= 2x |" % (
            r0["t_fad"] / r0["t_float"], r0["t_pp"] / r0["t_float"]))
        L.append("| purepy / fastad | %.1fx | | >= 20x |" % (r0["t_pp"] / r0["t_fad"]))
    if fs.get("note"):
        L.append("")
        L.append("note: %s" % fs["note"])
    if problems:
        L.append("")
        L.append("PROBLEMS:")
        for p in problems:
            L.append("- " + p)
    table = "\n".join(L)
    prog.note("done")
    if strict and problems:
        err = BenchmarkError("fastad benchmark found problems:\n" + "\n".join(problems)
                             + "\n\n" + table)
        err.table = table
        raise err
    return table


if __name__ == "__main__":
    if "--self-check" in sys.argv:
        self_check(verbose=True)
    else:
        print(run(quick="--quick" in sys.argv))
