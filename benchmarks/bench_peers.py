#!/usr/bin/env python
"""fastad against its peers: one suite over the workloads of issues #2 to #7.

    python benchmarks/bench_peers.py [--quick] [--only NAME,...] [--no-progress]

Tools (rows): fastad, the pure-Python tape (benchmarks/_purepy.py) and, when
installed, autograd, PyTorch (eager), JAX without jit, JAX with jit (the
steady-state call; trace + compile time in its own column) and CasADi (time
to build the expression graph and its Function in its own column, the
Function's evaluation as the time).  Peers are optional benchmark extras
(``pip install ".[bench]"``, PyTorch separately: ``pip install torch``); a
peer that is not importable is a "not installed" row, a peer that cannot
express a workload an "n/a" row with the reason in a footnote.

Every time is a median of interleaved repeats measured in the same run, with
the ratio ``tool / fastad`` (> 1: fastad is faster) against fastad at the
same problem size.  Every tool's answer (gradient, Hessian, Jacobian,
minimizer) is compared with fastad's: max |a - b| / max |b|; above 1e-8 the
row is marked FAIL, the problem is listed under PROBLEMS and ``run`` raises
``BenchmarkError`` (the tables attached as ``.table``) after building them.
Where a formula exists, fastad's own answer is also checked against it.

Workloads (--only takes these names): rosen_loop, rosen_vec, logreg,
mlp_scalar, mlp_matrix, lorenz, replay, hessian, hvp, newton_krylov,
sparse_jacobian.

Threads: PyTorch runs with torch.set_num_threads(1); JAX is imported with
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false (single-threaded Eigen) when
this module imports it first; NumPy's OpenBLAS (fastad's, autograd's and the
hand-written backprop's matrix products) is set to 1 thread through its
``openblas_set_num_threads`` where the library is found, and put back when
``run`` returns.  The header says what took effect.
"""

import argparse
import gc
import math
import os
import sys
import time
import types

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
for _p in (_ROOT, _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fastad as fad  # noqa: E402
import _purepy as P  # noqa: E402
import bench as B  # noqa: E402
from _common import Progress, rosen, rosen_grad  # noqa: E402

BenchmarkError = B.BenchmarkError

TOL = 1e-8          # max relative difference to fastad's answer before FAIL
TOL_MINIMIZER = 1e-6  # minimizers: iterative, they agree to their stopping tolerance

# ----------------------------------------------------------------- peers
TOOL_LABEL = {
    "fastad": "fastad",
    "purepy": "pure-Python tape",
    "autograd": "autograd",
    "torch": "PyTorch eager (1 thread)",
    "jax": "JAX, no jit",
    "jax-jit": "JAX jit",
    "casadi": "CasADi",
    "numpy": "hand-written NumPy",
    "scipy": "scipy",
}
_MODULE_OF = {"autograd": "autograd", "torch": "torch", "jax": "jax", "jax-jit": "jax",
              "casadi": "casadi", "scipy": "scipy"}
_MODS = {}
_SETUP_NOTES = []
_JAX_FLAG = "--xla_cpu_multi_thread_eigen=false"


def _load(tool):
    """The peer's module (set up for this benchmark), or None if not importable."""
    name = _MODULE_OF.get(tool)
    if name is None:
        return True
    if name in _MODS:
        return _MODS[name]
    mod = None
    try:
        if name == "jax":
            if "jax" in sys.modules:
                note = ("JAX was imported before this module: XLA_FLAGS as found (%r)"
                        % os.environ.get("XLA_FLAGS", ""))
            else:
                flags = os.environ.get("XLA_FLAGS", "")
                if "xla_cpu_multi_thread_eigen" not in flags:
                    os.environ["XLA_FLAGS"] = (flags + " " + _JAX_FLAG).strip()
                note = "JAX imported with XLA_FLAGS=%r" % os.environ["XLA_FLAGS"]
            import jax
            _SETUP_NOTES.append(note)
            jax.config.update("jax_enable_x64", True)
            jax.config.update("jax_platforms", "cpu")
            import jax.numpy  # noqa: F401
            mod = jax
        elif name == "torch":
            import torch
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
            mod = torch
        elif name == "autograd":
            import autograd
            import autograd.numpy  # noqa: F401
            mod = autograd
        elif name == "casadi":
            import casadi
            mod = casadi
        elif name == "scipy":
            import scipy.optimize
            import scipy.sparse  # noqa: F401
            mod = scipy
    except ImportError:
        mod = None
    _MODS[name] = mod
    return mod


def _version(name):
    if _MODS.get(name, True) is None:
        return "not installed"
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:
        mod = sys.modules.get(name)
        return getattr(mod, "__version__", "?") if mod is not None else "not installed"


def _pin_openblas():
    """Set every loaded OpenBLAS to 1 thread (what threadpoolctl does).

    Returns (note, restore) where restore() puts the previous counts back."""
    import ctypes
    paths = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                p = line.split()[-1]
                if "openblas" in os.path.basename(p).lower() and ".so" in p:
                    paths.add(p)
    except OSError:
        return "OpenBLAS threads not pinned (no /proc/self/maps)", lambda: None
    done, undo = [], []
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                set_ = getattr(lib, prefix + "set_num_threads" + suffix, None)
                get_ = getattr(lib, prefix + "get_num_threads" + suffix, None)
                if set_ is not None and get_ is not None:
                    get_.restype = ctypes.c_int
                    before = get_()
                    set_(1)
                    undo.append((set_, before))
                    done.append("%s (was %d)" % (os.path.basename(p), before))
                    break
            else:
                continue
            break
    if not done:
        return "OpenBLAS threads not pinned (no OpenBLAS library found loaded)", lambda: None

    def restore():
        for set_, before in undo:
            set_(before)
    return "OpenBLAS set to 1 thread: %s" % ", ".join(done), restore


# -------------------------------------------------- math namespaces
def _ns_autograd():
    anp = _load("autograd").numpy
    return types.SimpleNamespace(exp=anp.exp, log=anp.log, sin=anp.sin, cos=anp.cos,
                                 tanh=anp.tanh, sqrt=anp.sqrt,
                                 sigmoid=lambda z: 1.0 / (1.0 + anp.exp(-z)))


def _ns_torch():
    torch = _load("torch")
    return types.SimpleNamespace(exp=torch.exp, log=torch.log, sin=torch.sin, cos=torch.cos,
                                 tanh=torch.tanh, sqrt=torch.sqrt, sigmoid=torch.sigmoid)


def _ns_jax():
    jax = _load("jax")
    jnp = jax.numpy
    return types.SimpleNamespace(exp=jnp.exp, log=jnp.log, sin=jnp.sin, cos=jnp.cos,
                                 tanh=jnp.tanh, sqrt=jnp.sqrt, sigmoid=jax.nn.sigmoid)


def _ns_casadi():
    ca = _load("casadi")
    return types.SimpleNamespace(exp=ca.exp, log=ca.log, sin=ca.sin, cos=ca.cos,
                                 tanh=ca.tanh, sqrt=ca.sqrt,
                                 sigmoid=lambda z: 1.0 / (1.0 + ca.exp(-z)))


class NA(Exception):
    """The tool cannot express this workload (the message is the footnote)."""


# ------------------------------------------------------- answers
def _np(a):
    """An answer as a flat float64 ndarray (or a scipy.sparse matrix, kept sparse)."""
    try:
        import scipy.sparse as sp
        if sp.issparse(a):
            return sp.csr_matrix(a, dtype=float)
    except ImportError:
        pass
    if isinstance(a, (tuple, list)):
        return np.concatenate([_np(b).ravel() for b in a]) if len(a) else np.zeros(0)
    mod = type(a).__module__
    if mod.startswith("torch"):
        return a.detach().numpy().astype(float).ravel()
    if mod.startswith("casadi"):
        if a.numel() > 10 ** 6:  # too big to densify (the 100k x 100k Jacobian)
            return _np(a.sparse())
        return np.asarray(a.full(), dtype=float).ravel()
    return np.asarray(a, dtype=float).ravel()


def _rel_diff(a, b):
    """max |a - b| / max |b|, also for two scipy.sparse matrices (patterns may differ)."""
    if hasattr(a, "tocsr") != hasattr(b, "tocsr"):  # one sparse, one dense: compare densely
        a = a.toarray() if hasattr(a, "tocsr") else a
        b = b.toarray() if hasattr(b, "tocsr") else b
    if hasattr(a, "tocsr"):
        if a.shape != b.shape:
            return float("inf")
        d = abs(a - b)
        num = d.max() if d.nnz else 0.0
        den = abs(b).max() if b.nnz else 0.0
        return float(num) / max(float(den), 1e-300)
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _block(a):
    """Wait for JAX's asynchronous dispatch."""
    if type(a).__module__.startswith("jax") or isinstance(a, (list, tuple)):
        jax = sys.modules.get("jax")
        if jax is not None:
            jax.block_until_ready(a)
    return a


# ------------------------------------------------------------- entries
class Entry(object):
    """One row: a tool computing a workload's answer at some size.

    build() -> (call, setup_seconds or None); may raise NA.  call() returns the
    answer.  cost: rough (one-time s, s per call) in full mode, for the
    progress line's estimate of time left.  ref: this is fastad's reference answer at its size.  check:
    optional fn(answer ndarray) -> rel diff against a formula (fastad only).
    """

    def __init__(self, tool, build, size, label=None, ref=False, setup_kind=None,
                 check=None, cost=(0.0, 0.002), describe=None, tol=TOL, note=None, compare=True,
                 check_tol=TOL, check_name="formula", needs=()):
        self.tool = tool
        self.build = build
        self.size = size
        self.label = label or TOOL_LABEL[tool]
        self.ref = ref
        self.setup_kind = setup_kind
        self.check = check
        self.cost = cost  # expected (one-time s, s per call) in full mode: progress weights
        self.describe = describe
        self.tol = tol
        self.note = note
        self.compare = compare
        self.check_tol = check_tol
        self.check_name = check_name
        self.needs = tuple(needs)  # other optional modules the row needs (e.g. scipy)


def _untimed(build):
    def b():
        return build(), None
    return b


def _jax_compile(fn, *args):
    """jit fn, trace + lower + compile for args; returns (compiled call, seconds)."""
    jax = _load("jax")
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


class Ctx(object):
    def __init__(self, quick, progress):
        self.quick = quick
        self.rounds = 5 if quick else 11
        self.min_rounds = 3
        self.min_time = 0.005 if quick else 0.02
        self.cell_budget = 1.5 if quick else 5.0
        self.progress = progress
        self.problems = []
        self.cache = {}
        self.prog = None

    def cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def _fmt_ms(t):
    if t is None:
        return ""
    ms = t * 1e3
    if ms >= 100:
        return "%.0f" % ms
    if ms >= 1:
        return "%.2f" % ms
    return "%.3f" % ms


def _fmt_setup(t, kind):
    if t is None:
        return ""
    s = ("%.2f s" % t) if t >= 1 else ("%.1f ms" % (t * 1e3) if t >= 1e-3 else "%.3f ms" % (t * 1e3))
    return "%s %s" % (kind or "setup", s)


def _fmt_ratio(r):
    if r is None:
        return ""
    return "%.2fx" % r if r < 100 else "%.0fx" % r


def _time_group(ctx, live):
    """Interleaved medians: live is a list of (row, call, first_seconds)."""
    plan = []
    for row, call, first in live:
        if first < 0.1:
            gc.collect()
            t0 = time.perf_counter()
            _block(call())
            t1 = time.perf_counter() - t0
            number = max(1, int(math.ceil(ctx.min_time / max(t1, 1e-7))))
        else:
            t1, number = first, 1
        est = t1 * number
        rounds = max(ctx.min_rounds, min(ctx.rounds, int(ctx.cell_budget / max(est, 1e-9))))
        plan.append((row, call, number, rounds))
    samples = [[] for _ in plan]
    failed = set()
    for r in range(max([p[3] for p in plan] or [0])):
        gc.collect()
        for k, (row, call, number, rounds) in enumerate(plan):
            if r >= rounds or k in failed:
                continue
            try:
                t0 = time.perf_counter()
                for _ in range(number):
                    out = call()
                _block(out)
                samples[k].append((time.perf_counter() - t0) / number)
            except Exception as ex:  # worked once, then failed: report it
                failed.add(k)
                row["timing_error"] = "%s: %s" % (type(ex).__name__, str(ex)[:300])
    for (row, call, number, rounds), s in zip(plan, samples):
        row["t"] = float(np.median(s)) if s else None
        row["reps"] = len(s)


def _spec(key, title, entries, size_name="n", extra_lines=()):
    return dict(key=key, title=title, entries=entries, size_name=size_name,
                extra_lines=list(extra_lines))


def _run_group(ctx, key, title, entries, size_name="n", extra_lines=()):
    """Builds, checks and times the entries; returns the markdown section."""
    rows = []
    refs = {}
    notes = []
    live = []
    for e in entries:
        row = {"e": e, "label": e.label, "size": e.size, "t": None, "setup": None,
               "status": "", "diff": None, "ans": None}
        rows.append(row)
        if ctx.prog is not None:
            ctx.prog.step("%s: %s (%s = %s)" % (key, e.label, size_name, _fmt_size(e.size)))
        if not _load(e.tool):
            row["status"] = "not installed"
            continue
        missing = [m for m in e.needs if not _load(m)]
        if missing:
            row["status"] = "not installed"
            notes.append((row, "needs %s, which is not installed" % ", ".join(missing)))
            continue
        try:
            call, setup = e.build()
            row["setup"] = setup
            t0 = time.perf_counter()
            raw = _block(call())
            first = time.perf_counter() - t0
            if e.describe is not None:
                row["label"] = e.label + e.describe(raw)
            row["ans"] = _np(raw)
        except NA as ex:
            row["status"] = "n/a"
            notes.append((row, str(ex)))
            continue
        except Exception as ex:  # a peer or fastad failed: report, don't hide
            row["status"] = "**ERROR**"
            msg = "%s / %s (%s=%s): %s: %s" % (title, e.label, size_name, _fmt_size(e.size),
                                             type(ex).__name__, ex)
            ctx.problems.append(msg)
            notes.append((row, "%s: %s" % (type(ex).__name__, str(ex)[:300])))
            continue
        if e.note:
            notes.append((row, e.note))
        if e.ref:
            refs[e.size] = row
        if e.check is not None:
            try:
                d = e.check(row["ans"])
            except ImportError as ex:  # the formula needs an extra (scipy) that is missing
                e.check = None
                notes.append((row, "not checked against the formula: %s" % ex))
                d = 0.0
            row["check"] = d
            if not d <= e.check_tol:
                row["status"] = "**FAIL vs formula**"
                ctx.problems.append("%s / %s (%s=%s): off the formula by %.2e (rel)"
                                    % (title, row["label"], size_name, _fmt_size(e.size), d))
        live.append((row, call, first))
    # agreement with fastad at the same size
    for row in rows:
        e = row["e"]
        if row["ans"] is None or e.ref or not e.compare:
            continue
        ref = refs.get(e.size)
        if ref is None:
            row["status"] = row["status"] or "no fastad reference"
            continue
        d = _rel_diff(row["ans"], ref["ans"])
        row["diff"] = d
        if not d <= e.tol:
            row["status"] = "**FAIL**"
            ctx.problems.append("%s / %s (%s=%s): differs from fastad by %.2e (rel), tolerance %.0e"
                                % (title, row["label"], size_name, _fmt_size(e.size), d, e.tol))
    if ctx.prog is not None:
        ctx.prog.step("%s: timing %d tools (interleaved medians)" % (key, len(live)))
    _time_group(ctx, live)
    for row in rows:
        if row.get("timing_error"):
            row["status"] = "**ERROR**"
            notes.append((row, "while timing: " + row["timing_error"]))
            ctx.problems.append("%s / %s (%s=%s): failed while timing: %s"
                                % (title, row["label"], size_name, _fmt_size(row["size"]),
                                   row["timing_error"]))
    # the table
    multi = len({r["size"] for r in rows}) > 1
    L = ["### " + title, ""]
    L.extend(extra_lines)
    if extra_lines:
        L.append("")
    L.append("| tool | %s | median ms | tool / fastad | one-time cost (apart) | agrees: max rel diff vs fastad |"
             % size_name)
    L.append("|---|---:|---:|---:|---|---|")
    foot = {}
    for row in rows:
        e = row["e"]
        label = row["label"]
        for r2, text in notes:
            if r2 is row:
                if text not in foot:
                    foot[text] = len(foot) + 1
                label += " [%d]" % foot[text]
        if row["status"] in ("not installed", "n/a") or row["status"].startswith("**ERROR"):
            L.append("| %s | %s | %s | | | |" % (label, _fmt_size(e.size), row["status"]))
            continue
        ref = refs.get(e.size)
        ratio = None
        if ref is not None and ref["t"] and row["t"] is not None:
            ratio = row["t"] / ref["t"]
        if e.ref:
            agree = "reference" + (" (%s = %s)" % (size_name, _fmt_size(e.size)) if multi else "")
            if e.check is not None:
                agree += "; %s %.1e" % (e.check_name, row["check"])
            if row["status"]:
                agree += " " + row["status"]
        else:
            if not e.compare:
                agree = "(not compared)"
            else:
                agree = "n/a" if row["diff"] is None else "%.1e" % row["diff"]
                agree += " " + (row["status"] or "ok")
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            label, _fmt_size(e.size), _fmt_ms(row["t"]), _fmt_ratio(ratio),
            _fmt_setup(row["setup"], e.setup_kind), agree.strip()))
    if foot:
        L.append("")
        for text, k in sorted(foot.items(), key=lambda kv: kv[1]):
            L.append("[%d] %s  " % (k, text))
    return "\n".join(L)


def _costs(entries, table):
    """Set Entry.cost from {tool or 'fori': (one-time s, s per call)}."""
    for e in entries:
        key = "fori" if "fori_loop" in e.label else e.tool
        if key in table and not e.ref:
            e.cost = table[key]
    return entries


def _weights(ctx, entries):
    """Progress weights (expected seconds): one per row (build + first call), then the timing."""
    ws = [b + t for b, t in (e.cost for e in entries)]
    timing = 0.0
    for b, t in (e.cost for e in entries):
        est = max(t, ctx.min_time)
        timing += est * max(ctx.min_rounds, min(ctx.rounds, ctx.cell_budget / est)) + 2 * t
    return ws + [timing]


def _fmt_size(s):
    if isinstance(s, int):
        return "{:,}".format(s)
    return str(s)


# ================================================================ helpers
_X_CACHE = {}


def _rosen_x(n, shift=0.0):
    key = (n, shift)
    if key not in _X_CACHE:
        x = np.random.default_rng(0).uniform(-1.2, 1.2, n)
        if shift:
            x = x + shift * np.random.default_rng(1).standard_normal(n)
        _X_CACHE[key] = x
    return _X_CACHE[key]


def _check_vs(formula, x):
    """check(answer) -> rel diff of answer against formula(x)."""
    return lambda ans: _rel_diff(ans, _np(formula(x)))


def rosen_vec(x, total):
    """Extended Rosenbrock with array slices; total is the array library's sum."""
    a = x[:-1]
    b = x[1:]
    return total((1 - a) ** 2 + 100 * (b - a ** 2) ** 2)


def _jit_scalar_loop(ctx, key, fn_at, s):
    """jax.jit(jax.grad) of the Python loop f(m, x) on a jnp array (compiled once a run)."""
    def make():
        jax = _load("jax")
        f, x0 = fn_at(s)
        ns = _ns_jax()
        return _jax_compile(jax.grad(lambda v: f(ns, v)), jax.numpy.asarray(x0))
    return ctx.cached(("jax-jit", key, s), make)


def _jit_fori(ctx, key, fn_at, s, make_fori):
    def make():
        jax = _load("jax")
        return _jax_compile(jax.grad(make_fori(s)), jax.numpy.asarray(fn_at(s)[1]))
    return ctx.cached(("jax-fori", key, s), make)


def _casadi_scalar_loop(ctx, key, fn_at, s):
    """CasADi SX graph of f(m, x) on the elements of a symbol, and its gradient Function."""
    def make():
        ca = _load("casadi")
        f, x0 = fn_at(s)
        ns = _ns_casadi()
        t0 = time.perf_counter()
        X = ca.SX.sym("x", len(x0))
        expr = f(ns, ca.vertsplit(X))
        F = ca.Function("g", [X], [ca.gradient(expr, X)])
        return F, time.perf_counter() - t0
    return ctx.cached(("casadi", key, s), make)


# -- per-tool gradient of a scalar-loop function f(m, x) where x is indexed x[k]
def _scalar_loop_entries(ctx, key, fn_at, sizes, fastad_check=None, fori=None):
    """Entries for a scalar-loop workload.

    fn_at(size) -> (f(m, x), x0); sizes: dict tool -> size (missing: skipped).
    fori: optional (size, builder(size) -> jax function of a jnp array) for a
    lax.fori_loop rewrite under jit.
    """
    out = []
    main = sizes["fastad"]
    ref_sizes = sorted({s for s in sizes.values()}, key=lambda s: (s != main, s))

    def fastad_entry(size, ref=True):
        f, x0 = fn_at(size)
        g = fad.grad(lambda v: f(fad, v))
        chk = _check_vs(fastad_check, x0) if (fastad_check is not None) else None
        return Entry("fastad", _untimed(lambda: (lambda: g(x0))), size, ref=ref, check=chk)
    for s in ref_sizes:
        out.append(fastad_entry(s))
        if s != main:
            out[-1].label = "fastad (reference at this size)"

    if "purepy" in sizes:
        s = sizes["purepy"]
        f, x0 = fn_at(s)
        gp = P.grad(lambda v: f(P.m, v))
        out.append(Entry("purepy", _untimed(lambda: (lambda: gp(x0))), s))

    if "autograd" in sizes:
        s = sizes["autograd"]

        def b_ag(s=s):
            f, x0 = fn_at(s)
            ns = _ns_autograd()
            g = _load("autograd").grad(lambda v: f(ns, v))
            return lambda: g(x0)
        out.append(Entry("autograd", _untimed(b_ag), s))

    if "torch" in sizes:
        s = sizes["torch"]

        def b_t(s=s):
            torch = _load("torch")
            f, x0 = fn_at(s)
            ns = _ns_torch()

            def call():
                p = torch.from_numpy(x0).requires_grad_()
                f(ns, p.unbind()).backward()
                return p.grad
            return call
        out.append(Entry("torch", _untimed(b_t), s))

    if "jax" in sizes:
        s = sizes["jax"]

        def b_j(s=s):
            jax = _load("jax")
            f, x0 = fn_at(s)
            ns = _ns_jax()
            g = jax.grad(lambda v: f(ns, v))
            xl = [float(v) for v in x0]
            return lambda: g(xl)
        out.append(Entry("jax", _untimed(b_j), s))

    if "jax-jit" in sizes:
        s = sizes["jax-jit"]

        def b_jj(s=s):
            c, t = _jit_scalar_loop(ctx, key, fn_at, s)
            xj = _load("jax").numpy.asarray(fn_at(s)[1])
            return (lambda: c(xj)), t
        out.append(Entry("jax-jit", b_jj, s, label="JAX jit, Python loop unrolled by tracing",
                         setup_kind="trace+compile"))

    if fori is not None and "jax-jit" in sizes:
        s, make_fori = fori

        def b_jf(s=s):
            c, t = _jit_fori(ctx, key, fn_at, s, make_fori)
            xj = _load("jax").numpy.asarray(fn_at(s)[1])
            return (lambda: c(xj)), t
        out.append(Entry("jax-jit", b_jf, s, label="JAX jit, loop rewritten as lax.fori_loop",
                         setup_kind="trace+compile"))

    if "casadi" in sizes:
        s = sizes["casadi"]

        def b_ca(s=s):
            F, t = _casadi_scalar_loop(ctx, key, fn_at, s)
            x0 = fn_at(s)[1]
            return (lambda: F(x0)), t
        out.append(Entry("casadi", b_ca, s, label="CasADi SX, gradient Function evaluated",
                         setup_kind="build"))
    return out


# ============================================================== workloads
def _rosen_loop_m(m, x):
    return rosen(x)


def _rosen_fn_at(s):
    return _rosen_loop_m, _rosen_x(s)


def _rosen_fori(s):
    """The idiomatic JAX form of the loop: lax.fori_loop with dynamic x[i]."""
    jax = _load("jax")

    def f(x):
        def body(i, acc):
            return acc + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
        return jax.lax.fori_loop(0, x.shape[0] - 1, body, 0.0)
    return f


def w_rosen_loop(ctx):
    q = ctx.quick
    n = 2000 if q else 10000
    n_jit = 200 if q else 1000
    n_jax = 50 if q else 200

    sizes = {"fastad": n, "purepy": n, "autograd": n, "torch": n, "jax": n_jax,
             "jax-jit": n_jit, "casadi": n}
    entries = _scalar_loop_entries(ctx, "rosen_loop", _rosen_fn_at, sizes, fastad_check=rosen_grad,
                                   fori=(n, _rosen_fori))
    _costs(entries, {"purepy": (0, 0.04), "autograd": (0, 3.9), "torch": (0, 0.9),
                     "jax": (0, 0.7), "jax-jit": (24, 0.002), "fori": (0.12, 0.0001),
                     "casadi": (1.4, 0.001)})
    for e in entries:
        if e.tool == "torch":
            e.note = ("torch: the loop runs over `x.unbind()` (one node for all elements); "
                      "indexing `x[i]` instead builds one select node per use, each of whose "
                      "backward allocates an n-vector.")
        if e.tool == "autograd":
            e.note = ("autograd has no unbind: every `x[i]` on the ArrayBox is a node whose "
                      "backward allocates and adds an n-vector (O(n) per index).")
        if e.tool == "jax":
            e.note = ("JAX without jit costs ~2-4 ms per loop iteration of eager grad (about 0.4 ms "
                      "per primitive), so n is reduced; x is passed as a list of Python floats "
                      "(a pytree of scalar leaves): indexing a jnp array eagerly is ~10x slower.")
        if e.label.startswith("JAX jit, Python"):
            e.note = ("XLA's compile time grows faster than linearly in the unrolled graph: "
                      "measured on this machine, trace+compile takes ~1 s at n = 100, ~20 s at "
                      "n = 1,000 and, measured once outside the suite, 67 s trace + 255 s "
                      "compile (over 5 GB of memory) at n = 10,000, whose compiled gradient "
                      "then takes ~125 ms a call; so n = %s here. The steady-state call of "
                      "the unrolled scalar graph grows faster than n too." % _fmt_size(n_jit))
        if e.label.startswith("JAX jit, loop"):
            e.note = ("the idiomatic JAX rewrite of the same loop (`lax.fori_loop` with "
                      "`x[i]` dynamic indexing): not the same Python code, compiled to one XLA "
                      "while loop; grad of it stores the loop's residuals.")
        if e.tool == "casadi":
            e.note = ("CasADi's evaluation replays a prebuilt graph (no recording per call), "
                      "so compare it with fastad's replayed `tape.gradient` (see the replay table); "
                      "its build column is the graph + gradient + Function construction.")
    return _spec("rosen_loop", "1a. Extended Rosenbrock, scalar loop: gradient",
                      entries, extra_lines=[
                          "Plain Python `for i in range(len(x) - 1)` loop (`benchmarks/_common.py` "
                          "`rosen`), gradient at a random point in [-1.2, 1.2]^n; fastad: "
                          "`fad.grad(rosen)(x)` (record + reverse sweep)."])


def w_rosen_vec(ctx):
    n = 20000 if ctx.quick else 100000
    x0 = _rosen_x(n)
    E = []

    g = fad.grad(lambda x: rosen_vec(x, np.sum))
    E.append(Entry("fastad", _untimed(lambda: (lambda: g(x0))), n, ref=True,
                   check=_check_vs(rosen_grad, x0)))

    def b_pp():
        raise NA("the pure-Python tape has scalar Vars only, no array operations")
    E.append(Entry("purepy", b_pp, n))

    def b_ag():
        ag = _load("autograd")
        ga = ag.grad(lambda x: rosen_vec(x, ag.numpy.sum))
        return lambda: ga(x0)
    E.append(Entry("autograd", _untimed(b_ag), n))

    def b_t():
        torch = _load("torch")

        def call():
            p = torch.from_numpy(x0).requires_grad_()
            rosen_vec(p, torch.sum).backward()
            return p.grad
        return call
    E.append(Entry("torch", _untimed(b_t), n))

    def b_j():
        jax = _load("jax")
        gj = jax.grad(lambda x: rosen_vec(x, jax.numpy.sum))
        xj = jax.numpy.asarray(x0)
        return lambda: gj(xj)
    E.append(Entry("jax", _untimed(b_j), n))

    def b_jj():
        jax = _load("jax")
        xj = jax.numpy.asarray(x0)
        c, t = _jax_compile(jax.grad(lambda x: rosen_vec(x, jax.numpy.sum)), xj)
        return (lambda: c(xj)), t
    E.append(Entry("jax-jit", b_jj, n, setup_kind="trace+compile"))

    def b_ca():
        ca = _load("casadi")
        t0 = time.perf_counter()
        X = ca.MX.sym("x", n)
        F = ca.Function("g", [X], [ca.gradient(rosen_vec(X, ca.sum1), X)])
        t = time.perf_counter() - t0
        return (lambda: F(x0)), t
    E.append(Entry("casadi", b_ca, n, label="CasADi MX, gradient Function evaluated",
                   setup_kind="build"))
    return _spec("rosen_vec", "1b. Extended Rosenbrock with NumPy slices: gradient", E,
                      extra_lines=["`sum((1 - x[:-1])**2 + 100*(x[1:] - x[:-1]**2)**2)` written "
                                   "with each library's arrays (fastad: plain `np.sum` on a "
                                   "`fad.Array`)."])


_LOGREG = {}


def _logreg_wl(npts):
    if npts not in _LOGREG:
        _LOGREG[npts] = B.make_logreg(npts)
    return _LOGREG[npts]


def _logreg_data(npts, seed=1):
    """The data of bench.make_logreg, as arrays (same generator calls)."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(0.0, 2.0, npts)
    ts = (1.5 * xs - 0.5 + rng.normal(0.0, 1.0, npts) > 0).astype(float)
    return xs, ts


def w_logreg(ctx):
    q = ctx.quick
    npts = 2000 if q else 10000

    def fn_at(s):
        wl = _logreg_wl(s)
        return wl.fn, wl.x0

    def fori(s):
        jax = _load("jax")
        xs, ts = _logreg_data(s)
        xs, ts = jax.numpy.asarray(xs), jax.numpy.asarray(ts)
        lam = 0.1

        def f(p):
            w, b = p[0], p[1]
            lamR = lam * (0.5 * w ** 2)

            def body(i, s_):
                y = jax.nn.sigmoid(w * xs[i] + b)
                return s_ + (0.5 * (y - ts[i]) ** 2 + lamR)
            return jax.lax.fori_loop(0, xs.shape[0], body, 0.0)
        return f
    sizes = {"fastad": npts, "purepy": npts, "autograd": npts, "torch": npts,
             "jax": 100 if q else 200, "jax-jit": 250, "casadi": npts}
    entries = _scalar_loop_entries(ctx, "logreg", fn_at, sizes, fori=(npts, fori))
    _costs(entries, {"purepy": (0, 0.033), "autograd": (0, 3.7), "torch": (0, 0.7),
                     "jax": (0, 0.5), "jax-jit": (2.3, 0.0001), "fori": (0.15, 0.0002),
                     "casadi": (1.8, 0.0005)})
    for e in entries:
        if e.tool == "jax" or e.label.startswith("JAX jit, Python"):
            e.note = ("the traced loop is reduced in size: see 1a (eager JAX ~0.4 ms per "
                      "primitive; XLA compile time superlinear in the unrolled graph).")
        if e.tool == "fastad":
            wl = _logreg_wl(e.size)
            e.check = _check_vs(wl.ref_grad, wl.x0)
    return _spec("logreg", "2. The notes' logistic regression L_reg, summed over the data: gradient wrt (w, b)",
                      entries, size_name="points",
                      extra_lines=["`bench.py` `logreg(m, p, xs, ts, lam)`: one scalar "
                                   "loop over the data points with `m.sigmoid`; lam = 0.1."])


_MLP = {}


def _mlp_wl(batch):
    if batch not in _MLP:
        _MLP[batch] = B.make_mlp(batch=batch)
    return _MLP[batch]


def w_mlp_scalar(ctx):
    q = ctx.quick

    def fn_at(s):
        wl = _mlp_wl(s)
        return wl.fn, wl.x0
    sizes = {"fastad": 8, "purepy": 8, "autograd": 8, "torch": 8, "jax": 1,
             "jax-jit": 1, "casadi": 8}
    if q:
        sizes["autograd"] = 2
    entries = _scalar_loop_entries(ctx, "mlp_scalar", fn_at, sizes)
    _costs(entries, {"purepy": (0, 0.005), "autograd": (0, 0.6), "torch": (0, 0.08),
                     "jax": (0, 0.3), "jax-jit": (5.6, 0.0003), "casadi": (0.2, 0.0002)})
    for e in entries:
        if e.tool == "fastad":
            wl = _mlp_wl(e.size)
            e.check = _check_vs(wl.ref_grad, wl.x0)
        if e.tool == "jax" or e.label.startswith("JAX jit, Python"):
            e.note = ("the traced loops are reduced in size (batch): see 1a (eager JAX ~0.4 ms per "
                      "primitive; XLA compile time superlinear in the unrolled graph); the "
                      "idiomatic JAX form of this network is the matrix form, table 3b.")
        if e.tool == "autograd":
            e.note = ("autograd: every `p[k]` on the 676-vector ArrayBox is a node whose backward "
                      "allocates a 676-vector.")
    return _spec("mlp_scalar", "3a. Two-layer network 16-32-4 in scalar loops (sigmoid, L2 loss): gradient wrt all 676 weights",
                      entries, size_name="batch",
                      extra_lines=["`bench.py` `mlp`: the notes' z = W1 x + b1, "
                                   "h = sigmoid(z), y = W2 h + b2 as nested Python loops over "
                                   "scalars, weights packed in one flat vector."])


def w_mlp_matrix(ctx):
    import bench_mlp as M
    params = M.PARAMS
    shape = "256 x 64-512-10"
    E = [Entry("fastad", _untimed(lambda: (lambda g=fad.grad(M.loss, argnums=(0, 1, 2, 3)): g(*params))),
               shape, ref=True, check=lambda a: _rel_diff(a, _np(M.backprop(*params))))]
    E.append(Entry("numpy", _untimed(lambda: (lambda: M.backprop(*params))), shape,
                   label="hand-written NumPy backprop"))

    def b_pp():
        raise NA("the pure-Python tape has scalar Vars only, no array operations")
    E.append(Entry("purepy", b_pp, shape))

    def b_ag():
        ag = _load("autograd")
        anp = ag.numpy

        def aloss(W1, b1, W2, b2):
            h = anp.tanh(anp.matmul(M.X, W1) + b1)
            r = anp.matmul(h, W2) + b2 - M.T
            return 0.5 * anp.sum(r * r)
        g = ag.grad(aloss, argnum=(0, 1, 2, 3))
        return lambda: g(*params)
    E.append(Entry("autograd", _untimed(b_ag), shape))

    def b_t():
        torch = _load("torch")
        Xt, Tt = torch.from_numpy(M.X), torch.from_numpy(M.T)

        def call():
            ps = [torch.from_numpy(p).requires_grad_() for p in params]
            h = torch.tanh(Xt @ ps[0] + ps[1])
            r = h @ ps[2] + ps[3] - Tt
            (0.5 * (r * r).sum()).backward()
            return tuple(p.grad for p in ps)
        return call
    E.append(Entry("torch", _untimed(b_t), shape))

    def jloss():
        jnp = _load("jax").numpy
        X, T = jnp.asarray(M.X), jnp.asarray(M.T)

        def f(W1, b1, W2, b2):
            h = jnp.tanh(X @ W1 + b1)
            r = h @ W2 + b2 - T
            return 0.5 * jnp.sum(r * r)
        return f

    def b_j():
        jax = _load("jax")
        g = jax.grad(jloss(), argnums=(0, 1, 2, 3))
        pj = [jax.numpy.asarray(p) for p in params]
        return lambda: g(*pj)
    E.append(Entry("jax", _untimed(b_j), shape))

    def b_jj():
        jax = _load("jax")
        pj = [jax.numpy.asarray(p) for p in params]
        c, t = _jax_compile(jax.grad(jloss(), argnums=(0, 1, 2, 3)), *pj)
        return (lambda: c(*pj)), t
    E.append(Entry("jax-jit", b_jj, shape, setup_kind="trace+compile"))

    def b_ca():
        ca = _load("casadi")
        t0 = time.perf_counter()
        W1, b1 = ca.MX.sym("W1", 64, 512), ca.MX.sym("b1", 512)
        W2, b2 = ca.MX.sym("W2", 512, 10), ca.MX.sym("b2", 10)
        nb = M.X.shape[0]
        h = ca.tanh(ca.mtimes(ca.DM(M.X), W1) + ca.repmat(b1.T, nb, 1))
        r = ca.mtimes(h, W2) + ca.repmat(b2.T, nb, 1) - ca.DM(M.T)
        L = 0.5 * ca.sumsqr(r)
        F = ca.Function("g", [W1, b1, W2, b2], [ca.gradient(L, v) for v in (W1, b1, W2, b2)])
        t = time.perf_counter() - t0
        args = [ca.DM(p) for p in params]
        return (lambda: F(*args)), t
    E.append(Entry("casadi", b_ca, shape, label="CasADi MX, gradient Function evaluated",
                   setup_kind="build",
                   note="the parameters are passed as DM (converted once, outside the timing); "
                        "the bias rows are broadcast with `repmat`."))
    return _spec("mlp_matrix", "3b. Matrix-form network (bench_mlp.py): gradient wrt W1, b1, W2, b2",
                      E, size_name="batch x layers",
                      extra_lines=["Batch 256, 64 -> 512 -> 10, tanh hidden layer, squared loss; "
                                   "plain NumPy loss (`np.matmul`, `np.tanh`, `np.sum`) under "
                                   "`fad.grad`."])


def _lorenz_fori(steps, dt=0.01):
    jax = _load("jax")

    def f(p):
        s, r, b = p[3], p[4], p[5]

        def body(_, st):
            return B.lorenz_rk4_step(*st, s, r, b, dt)
        return jax.lax.fori_loop(0, steps, body, (p[0], p[1], p[2]))[0]
    return f


_LORENZ = {}


def _lorenz_wl(steps):
    if steps not in _LORENZ:
        _LORENZ[steps] = B.make_lorenz(steps)
    return _LORENZ[steps]


def w_lorenz(ctx):
    q = ctx.quick
    steps = 300 if q else 1000

    def fn_at(s):
        wl = _lorenz_wl(s)
        return wl.fn, wl.x0
    sizes = {"fastad": steps, "purepy": steps, "autograd": steps, "torch": steps,
             "jax": 10 if q else 20, "jax-jit": 3, "casadi": steps}
    entries = _scalar_loop_entries(ctx, "lorenz", fn_at, sizes, fori=(steps, _lorenz_fori))
    _costs(entries, {"purepy": (0, 0.03), "autograd": (0, 3.1), "torch": (0, 0.6),
                     "jax": (0, 0.33), "jax-jit": (0.33, 0.005), "fori": (0.6, 0.005),
                     "casadi": (1.0, 0.0004)})
    for e in entries:
        if e.tool == "jax":
            e.note = ("the traced loop is reduced in size (steps, ~60 scalar ops each): see 1a.")
        if e.label.startswith("JAX jit, Python"):
            e.note = ("3 steps only: the compiled gradient's *run time* explodes with the number "
                      "of unrolled RK4 steps (measured here: 3 steps ~5 ms, 4 steps ~1.3 s, 5 steps "
                      "> 5 min), while compiling stays under a second. XLA's CPU fusion puts the "
                      "whole unrolled gradient into one loop fusion whose elemental code recomputes "
                      "each shared subexpression at every use, exponentially in the depth of the "
                      "chain; with `XLA_FLAGS=--xla_disable_hlo_passes=fusion` 4 and 8 steps run in "
                      "~1 ms. The forward pass alone (no grad) is not affected.")
        if e.label.startswith("JAX jit, loop"):
            e.note = ("the idiomatic JAX rewrite: one RK4 step as the body of `lax.fori_loop` "
                      "over the (x, y, z) state, same formulas in the same order.")
    return _spec("lorenz", "4. Lorenz RK4, dt = 0.01: gradient of x(T) wrt (x0, y0, z0, sigma, rho, beta)",
                      entries, size_name="steps",
                      extra_lines=["`bench.py` `lorenz_rk4`: classic RK4 as a Python loop "
                                   "over scalars (about 60 operations per step); T = 10 at 1000 "
                                   "steps, so the gradient is large (chaotic) and any "
                                   "reassociation would show in the agreement column."])


def w_replay(ctx):
    q = ctx.quick
    n = 2000 if q else 10000
    n_jit = 200 if q else 1000
    x0 = _rosen_x(n)
    E = []

    def fastad_replay(size):
        def b():
            t0 = time.perf_counter()
            tape = fad.record(rosen, _rosen_x(size))
            t = time.perf_counter() - t0
            xn = _rosen_x(size, 0.01)
            return (lambda: tape.gradient(xn)), t
        return b
    E.append(Entry("fastad", fastad_replay(n), n, label="fastad `tape.gradient(x_new)` (replay)",
                   ref=True, setup_kind="record", check=_check_vs(rosen_grad, _rosen_x(n, 0.01))))
    gf = fad.grad(rosen)
    E.append(Entry("fastad", _untimed(lambda: (lambda: gf(_rosen_x(n, 0.01)))), n,
                   label="fastad `fad.grad(rosen)(x_new)` (record + sweep)"))
    E.append(Entry("fastad", fastad_replay(n_jit), n_jit,
                   label="fastad `tape.gradient(x_new)` (reference at this size)", ref=True,
                   setup_kind="record"))

    def b_fori():
        c, t = _jit_fori(ctx, "rosen_loop", _rosen_fn_at, n, _rosen_fori)
        xn = _load("jax").numpy.asarray(_rosen_x(n, 0.01))
        return (lambda: c(xn)), t
    E.append(Entry("jax-jit", b_fori, n, label="JAX jit, `lax.fori_loop` rewrite (steady state)",
                   setup_kind="trace+compile"))

    def b_jj():
        c, t = _jit_scalar_loop(ctx, "rosen_loop", _rosen_fn_at, n_jit)
        xn = _load("jax").numpy.asarray(_rosen_x(n_jit, 0.01))
        return (lambda: c(xn)), t
    E.append(Entry("jax-jit", b_jj, n_jit, label="JAX jit, Python loop unrolled (steady state)",
                   setup_kind="trace+compile",
                   note="the unrolled loop at n = 10,000 takes over 5 minutes to trace and compile "
                        "and then ~125 ms a call (see 1a); the compiled function is shared with "
                        "table 1a (compile time measured once)."))

    def b_ca():
        F, t = _casadi_scalar_loop(ctx, "rosen_loop", _rosen_fn_at, n)
        xn = _rosen_x(n, 0.01)
        return (lambda: F(xn)), t
    E.append(Entry("casadi", b_ca, n, label="CasADi SX gradient Function evaluation",
                   setup_kind="build"))

    def b_float():
        xl = _rosen_x(n, 0.01).tolist()
        return lambda: rosen(xl)
    E.append(Entry("numpy", _untimed(b_float), n, label="plain-float evaluation of rosen (no derivative; for scale)",
                   compare=False))
    return _spec("replay", "5. Replayed gradient: record (or compile / build) once, gradient at a new point",
                      E, extra_lines=["Extended Rosenbrock loop; each tool's one-time step is "
                                      "apart, the time is one gradient at x_new = x + 0.01 N(0, 1)."])


def w_hessian(ctx):
    n = 100
    x0 = _rosen_x(n)
    E = []

    def hess_formula(x):
        from scipy.optimize import rosen_hess
        return rosen_hess(x)

    def b_tape():
        t0 = time.perf_counter()
        tape = fad.record(rosen, x0)
        t = time.perf_counter() - t0
        return (lambda: tape.hessian(x0)), t
    E.append(Entry("fastad", b_tape, n, label="fastad `tape.hessian(x)` (replayed)", ref=True,
                   setup_kind="record", check=_check_vs(hess_formula, x0)))
    hf = fad.hessian(rosen)
    E.append(Entry("fastad", _untimed(lambda: (lambda: hf(x0))), n,
                   label="fastad `fad.hessian(rosen)(x)` (record + forward-over-reverse)"))

    def b_sparse():
        _load("scipy")
        t0 = time.perf_counter()
        tape = fad.record(rosen, x0)
        tape.sparse_hessian(x0)
        t = time.perf_counter() - t0
        return (lambda: tape.sparse_hessian(x0)), t
    E.append(Entry("fastad", b_sparse, n,
                   label="fastad `tape.sparse_hessian(x)` (star coloring, repeat)",
                   setup_kind="first call", needs=("scipy",),
                   note="the sparse rows (fastad's star coloring, CasADi's symbolic pattern) compute "
                        "only the tridiagonal's nonzeros; they are compared densely."))

    def b_pp():
        raise NA("the pure-Python tape is first-order only (reverse sweep of floats)")
    E.append(Entry("purepy", b_pp, n))

    def b_ag():
        ag = _load("autograd")
        h = ag.hessian(rosen)
        return lambda: h(x0)
    E.append(Entry("autograd", _untimed(b_ag), n, label="autograd `hessian` (reverse-over-reverse)"))

    def b_t():
        torch = _load("torch")
        xt = torch.from_numpy(x0)
        return lambda: torch.autograd.functional.hessian(lambda v: rosen(v.unbind()), xt,
                                                         vectorize=True)
    E.append(Entry("torch", _untimed(b_t), n,
                   label="PyTorch `torch.autograd.functional.hessian(vectorize=True)`",
                   note="`vectorize=True` batches the n backward passes with vmap; the default "
                        "(n separate double-backward passes) measured ~40x slower here."))

    def b_j():
        jax = _load("jax")
        h = jax.hessian(rosen)
        xj = jax.numpy.asarray(x0)
        return lambda: h(xj)
    E.append(Entry("jax", _untimed(b_j), n, label="JAX `jax.hessian`, no jit"))

    def b_jj():
        jax = _load("jax")
        xj = jax.numpy.asarray(x0)
        c, t = _jax_compile(jax.hessian(rosen), xj)
        return (lambda: c(xj)), t
    E.append(Entry("jax-jit", b_jj, n, label="JAX jit `jax.hessian` (Python loop unrolled)",
                   setup_kind="trace+compile"))

    def b_ca():
        ca = _load("casadi")
        t0 = time.perf_counter()
        X = ca.SX.sym("x", n)
        H, _ = ca.hessian(rosen(ca.vertsplit(X)), X)
        F = ca.Function("H", [X], [H])
        t = time.perf_counter() - t0
        return (lambda: F(x0)), t
    E.append(Entry("casadi", b_ca, n, label="CasADi SX `hessian` Function evaluated",
                   setup_kind="build",
                   note="the sparse rows (fastad's star coloring, CasADi's symbolic pattern) compute "
                        "only the tridiagonal's nonzeros; they are compared densely."))
    _costs(E, {"autograd": (0, 0.93), "torch": (0, 0.02), "jax": (0, 1.26),
               "jax-jit": (2.25, 0.0012)})
    return _spec("hessian", "6a. Dense Hessian of the Rosenbrock loop, n = 100", E,
                      extra_lines=["fastad's answer is also checked against `scipy.optimize.rosen_hess`."])


def w_hvp(ctx):
    n = 20000 if ctx.quick else 100000
    x0 = _rosen_x(n)
    v0 = np.random.default_rng(3).standard_normal(n)

    def fv(x):
        return rosen_vec(x, np.sum)

    def hp_formula(x):
        from scipy.optimize import rosen_hess_prod
        return rosen_hess_prod(x, v0)
    E = [Entry("fastad", _untimed(lambda: (lambda: fad.hvp(fv, x0, v0))), n,
               label="fastad `fad.hvp(f, x, v)` (record + forward-over-reverse)", ref=True,
               check=_check_vs(hp_formula, x0))]

    def b_tape():
        t0 = time.perf_counter()
        tape = fad.record(fv, x0)
        t = time.perf_counter() - t0
        return (lambda: tape.hvp(x0, v0)), t
    E.append(Entry("fastad", b_tape, n, label="fastad `tape.hvp(x, v)` (replayed)",
                   setup_kind="record"))

    def b_pp():
        raise NA("the pure-Python tape is first-order only and has no array operations")
    E.append(Entry("purepy", b_pp, n))

    def b_ag():
        ag = _load("autograd")
        h = ag.hessian_vector_product(lambda x: rosen_vec(x, ag.numpy.sum))
        return lambda: h(x0, v0)
    E.append(Entry("autograd", _untimed(b_ag), n, label="autograd `hessian_vector_product` (reverse-over-reverse)"))

    def b_t():
        torch = _load("torch")
        vt = torch.from_numpy(v0)

        def call():
            p = torch.from_numpy(x0).requires_grad_()
            g, = torch.autograd.grad(rosen_vec(p, torch.sum), p, create_graph=True)
            hv, = torch.autograd.grad(g, p, grad_outputs=vt)
            return hv
        return call
    E.append(Entry("torch", _untimed(b_t), n, label="PyTorch double backward"))

    def jhvp():
        jax = _load("jax")
        g = jax.grad(lambda x: rosen_vec(x, jax.numpy.sum))
        return lambda x, v: jax.jvp(g, (x,), (v,))[1]

    def b_j():
        jax = _load("jax")
        f = jhvp()
        xj, vj = jax.numpy.asarray(x0), jax.numpy.asarray(v0)
        return lambda: f(xj, vj)
    E.append(Entry("jax", _untimed(b_j), n, label="JAX jvp of grad, no jit"))

    def b_jj():
        jax = _load("jax")
        xj, vj = jax.numpy.asarray(x0), jax.numpy.asarray(v0)
        c, t = _jax_compile(jhvp(), xj, vj)
        return (lambda: c(xj, vj)), t
    E.append(Entry("jax-jit", b_jj, n, label="JAX jit, jvp of grad", setup_kind="trace+compile"))

    def b_ca():
        ca = _load("casadi")
        t0 = time.perf_counter()
        X = ca.MX.sym("x", n)
        V = ca.MX.sym("v", n)
        hv = ca.jtimes(ca.gradient(rosen_vec(X, ca.sum1), X), X, V)
        F = ca.Function("hvp", [X, V], [hv])
        t = time.perf_counter() - t0
        return (lambda: F(x0, v0)), t
    E.append(Entry("casadi", b_ca, n, label="CasADi MX `jtimes(gradient)` Function evaluated",
                   setup_kind="build"))
    return _spec("hvp", "6b. Hessian-vector product of Rosenbrock with NumPy slices", E,
                      extra_lines=["fastad's answer is also checked against "
                                   "`scipy.optimize.rosen_hess_prod`."])


def w_newton_krylov(ctx):
    n = 200 if ctx.quick else 1000
    x0 = np.tile([-1.2, 1.0], n // 2)

    def fad_min(hessian):
        def call():
            return fad.minimize(rosen, x0, maxiter=200000, hessian=hessian)
        return call

    E = [Entry("fastad", _untimed(lambda: _Res(fad_min("hvp"))), n,
               label="fastad `fad.minimize(rosen, x0, hessian=\"hvp\")`", ref=True,
               describe=_describe_min, check=_near_ones, check_tol=1e-8,
               check_name="vs all ones"),
         Entry("fastad", _untimed(lambda: _Res(fad_min("auto"))), n,
               label="fastad `fad.minimize(rosen, x0, hessian=\"auto\")`", needs=("scipy",),
               describe=_describe_min, tol=TOL_MINIMIZER)]

    def b_sp():
        so = _load("scipy").optimize

        def call():
            return so.minimize(so.rosen, x0, jac=so.rosen_der, hessp=so.rosen_hess_prod,
                               method="trust-krylov",
                               options={"gtol": 1e-8, "maxiter": 200000})
        return _Res(call)
    E.append(Entry("scipy", _untimed(b_sp), n,
                   label="scipy `minimize(method=\"trust-krylov\")`, analytic `rosen_der` / `rosen_hess_prod`",
                   describe=_describe_min, tol=TOL_MINIMIZER))

    def b_obj():
        so = _load("scipy").optimize

        def call():
            fun, jac, hessp = fad.optimize.objective(rosen, x0)
            return so.minimize(fun, x0, jac=jac, hessp=hessp, method="trust-krylov",
                               options={"gtol": 1e-8, "maxiter": 200000})
        return _Res(call)
    E.append(Entry("scipy", _untimed(b_obj), n,
                   label="scipy trust-krylov on `fad.optimize.objective(rosen, x0)` (one tape)",
                   describe=_describe_min, tol=TOL_MINIMIZER))
    for e in E:
        e.cost = (0, 1.5)
    return _spec("newton_krylov", "7. Newton-Krylov: minimize the Rosenbrock loop from (-1.2, 1, -1.2, 1, ...)", E,
                      extra_lines=["Wall time of one whole minimization (gtol 1e-8 on the "
                                   "gradient's max-norm for fastad, scipy's gtol 1e-8). "
                                   "Agreement: minimizers against fastad's, tolerance %.0e "
                                   "(iterative solvers agree to their stopping tolerance, not "
                                   "to rounding); fastad's own minimizer is checked to be all "
                                   "ones within 1e-8." % TOL_MINIMIZER])


def _Res(call):
    """A call whose result is an OptimizeResult: answer = result.x, label gets nit."""
    def c():
        return _MinResult(call())
    return c


class _MinResult(object):
    def __init__(self, r):
        self.r = r

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.r.x, dtype=dtype or float)


def _describe_min(raw):
    r = raw.r
    extra = ""
    if getattr(r, "nhess", None):
        extra = ", %d sparse Hessians" % r.nhess
    return " -- %d iterations%s" % (r.nit, extra)


def _near_ones(ans):
    return _rel_diff(ans, np.ones_like(ans))


def _tridiag_decompress(n):
    """Index arrays to read a tridiagonal J from its 3-color compression C (n x 3,
    C[:, c] = J s_c with s_c the indicator of columns j = c mod 3)."""
    rows, cols = [], []
    for d in (-1, 0, 1):
        i = np.arange(max(0, -d), min(n, n - d))
        rows.append(i)
        cols.append(i + d)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return rows, cols, cols % 3, indptr


def w_sparse_jacobian(ctx):
    import bench_sparse as S
    n = 10000 if ctx.quick else 100000
    x0 = np.linspace(0.0, 1.0, n)
    x2 = x0 + 0.01
    seeds = np.zeros((3, n))
    for c in range(3):
        seeds[c, c::3] = 1.0
    rows, cols, colors, indptr = _tridiag_decompress(n)

    def to_csr(C):
        import scipy.sparse as sp
        C = np.asarray(C)
        return sp.csr_matrix((C[colors, rows], cols, indptr), shape=(n, n))

    def check(ans):
        import scipy.sparse as sp
        h2 = 1.0 / (n + 1) ** 2
        ref = sp.diags([np.ones(n - 1), -2 + h2 * np.exp(x2), np.ones(n - 1)], [-1, 0, 1],
                       format="csr")
        return _rel_diff(ans, ref)

    def b_tape():
        _load("scipy")
        t0 = time.perf_counter()
        tape = fad.record(S.bratu_arrays, x0)
        tape.sparse_jacobian(x0)
        t = time.perf_counter() - t0
        return (lambda: tape.sparse_jacobian(x2)), t
    E = [Entry("fastad", b_tape, n, label="fastad `tape.sparse_jacobian(x_new)` (repeat)", ref=True,
               setup_kind="first call", check=check,
               note="fastad's first call: record + sparsity detection + coloring + first sweep.")]
    sj = fad.sparse_jacobian(S.bratu_arrays)
    E.append(Entry("fastad", _untimed(lambda: (lambda: sj(x2))), n,
                   label="fastad `fad.sparse_jacobian(f)(x)` (everything, every call)"))

    def b_pp():
        raise NA("the pure-Python tape has reverse mode on scalars only, no array operations "
                 "or sparse Jacobians")
    E.append(Entry("purepy", b_pp, n))

    def b_ag():
        ag = _load("autograd")
        anp = ag.numpy

        def f(x):
            h2 = 1.0 / (len(x) + 1) ** 2
            xp = anp.concatenate([anp.zeros(1), x, anp.zeros(1)])
            return xp[:-2] - 2 * x + xp[2:] + h2 * anp.exp(x)

        def call():
            jv = ag.make_jvp(f)(x2)
            return to_csr(np.stack([jv(s)[1] for s in seeds], axis=1).T)
        return call
    E.append(Entry("autograd", _untimed(b_ag), n,
                   label="autograd `make_jvp`, 3 colored seeds (forward mode, one sweep each)"))

    def b_t():
        torch = _load("torch")
        from torch.func import jvp, vmap

        def f(x):
            h2 = 1.0 / (len(x) + 1) ** 2
            xp = torch.cat([x.new_zeros(1), x, x.new_zeros(1)])
            return xp[:-2] - 2 * x + xp[2:] + h2 * torch.exp(x)
        xt, st = torch.from_numpy(x2), torch.from_numpy(seeds)
        jv = vmap(lambda s: jvp(f, (xt,), (s,))[1])
        return lambda: to_csr(jv(st).numpy())
    E.append(Entry("torch", _untimed(b_t), n,
                   label="PyTorch `torch.func.vmap(jvp)`, 3 colored seeds"))

    def jbratu():
        jnp = _load("jax").numpy

        def f(x):
            h2 = 1.0 / (x.shape[0] + 1) ** 2
            xp = jnp.concatenate([jnp.zeros(1), x, jnp.zeros(1)])
            return xp[:-2] - 2 * x + xp[2:] + h2 * jnp.exp(x)
        return f

    def jcomp():
        jax = _load("jax")
        f = jbratu()
        return lambda x, S_: jax.vmap(lambda s: jax.jvp(f, (x,), (s,))[1])(S_)

    def b_j():
        jax = _load("jax")
        xj, sj_ = jax.numpy.asarray(x2), jax.numpy.asarray(seeds)
        jc = jcomp()
        return lambda: to_csr(jc(xj, sj_))
    E.append(Entry("jax", _untimed(b_j), n, label="JAX `vmap(jvp)`, 3 colored seeds, no jit"))

    def b_jj():
        jax = _load("jax")
        xj, sj_ = jax.numpy.asarray(x2), jax.numpy.asarray(seeds)
        c, t = _jax_compile(jcomp(), xj, sj_)
        return (lambda: to_csr(c(xj, sj_))), t
    E.append(Entry("jax-jit", b_jj, n, label="JAX jit `vmap(jvp)`, 3 colored seeds",
                   setup_kind="trace+compile",
                   note="JAX, autograd and PyTorch are given the 3-coloring of the tridiagonal "
                        "pattern by hand (the `sparsejac` package is not used); their time "
                        "includes reading the nonzeros out of the n x 3 compressed Jacobian into "
                        "a `scipy.sparse.csr_matrix` with precomputed indices."))

    def b_ca():
        ca = _load("casadi")
        t0 = time.perf_counter()
        X = ca.MX.sym("x", n)
        h2 = 1.0 / (n + 1) ** 2
        xp = ca.vertcat(ca.DM.zeros(1), X, ca.DM.zeros(1))
        r = xp[0:n] - 2 * X + xp[2:n + 2] + h2 * ca.exp(X)
        F = ca.Function("J", [X], [ca.jacobian(r, X)])
        t = time.perf_counter() - t0
        return (lambda: F(x2)), t
    E.append(Entry("casadi", b_ca, n, label="CasADi MX `jacobian` Function evaluated",
                   setup_kind="build",
                   note="CasADi finds the pattern and its coloring itself while building; its "
                        "result is a sparse DM (converting it to scipy, outside the timing, "
                        "for the check)."))
    for e in E:
        if e.tool != "purepy":
            e.needs = ("scipy",)  # the answers are scipy.sparse matrices
    return _spec("sparse_jacobian", "8. Sparse Jacobian of the Bratu residual (array operations)", E,
                      extra_lines=["`bench_sparse.py` `bratu_arrays`: -u'' = exp(u) by central "
                                   "differences, tridiagonal Jacobian (3n - 2 nonzeros), at "
                                   "x_new = linspace(0, 1, n) + 0.01; fastad's answer is also "
                                   "checked against the formula."])


WORKLOADS = [
    ("rosen_loop", w_rosen_loop),
    ("rosen_vec", w_rosen_vec),
    ("logreg", w_logreg),
    ("mlp_scalar", w_mlp_scalar),
    ("mlp_matrix", w_mlp_matrix),
    ("lorenz", w_lorenz),
    ("replay", w_replay),
    ("hessian", w_hessian),
    ("hvp", w_hvp),
    ("newton_krylov", w_newton_krylov),
    ("sparse_jacobian", w_sparse_jacobian),
]


def header():
    try:
        from run import machine_info
        info = machine_info()
    except Exception:  # run.py moved or failed: still say what we can
        import platform
        info = "machine: %s | Python %s | NumPy %s" % (platform.platform(),
                                                       platform.python_version(), np.__version__)
    return info


def run(quick=False, progress=True, only=None):
    """Runs the suite; returns markdown (str).  Raises BenchmarkError (the
    markdown attached as ``.table``) if any tool disagrees with fastad or errors."""
    names = [w[0] for w in WORKLOADS]
    if only:
        bad = [o for o in only if o not in names]
        if bad:
            raise ValueError("unknown workload(s) %s; known: %s" % (", ".join(bad), ", ".join(names)))
    chosen = [w for w in WORKLOADS if not only or w[0] in only]
    ctx = Ctx(quick, progress)
    t_start = time.perf_counter()
    for tool in ("autograd", "torch", "jax", "casadi", "scipy"):
        _load(tool)
    blas, restore_blas = _pin_openblas()
    try:
        specs = [fn(ctx) for name, fn in chosen]
        # one progress step per row (build, first call, check) and one per table's timing,
        # weighted by the seconds they are expected to take (Entry.cost)
        weights = []
        for sp in specs:
            weights.extend(_weights(ctx, sp["entries"]))
        ctx.prog = Progress("peers", weights, progress)
        sections = [_run_group(ctx, **sp) for sp in specs]
    finally:
        restore_blas()
    elapsed = time.perf_counter() - t_start
    L = [header(),
         "",
         "date: %s | mode: %s | wall time %.0f s" % (time.strftime("%Y-%m-%d %H:%M"),
                                                     "QUICK" if quick else "full", elapsed),
         "",
         "peers: autograd %s | PyTorch %s | JAX %s (jaxlib %s) | CasADi %s | SciPy %s | fastad %s"
         % (_version("autograd"), _version("torch"), _version("jax"), _version("jaxlib"),
            _version("casadi"), _version("scipy"), getattr(fad, "__version__", "?")),
         "",
         "threads: %s; %s; %s. "
         "(`intra_op_parallelism_threads` is not an XLA flag: XLA aborts on "
         "`--intra_op_parallelism_threads=1` and ignores it without the dashes, so it is not set.)"
         % ("PyTorch torch.set_num_threads(1) (and 1 inter-op thread)" if _MODS.get("torch")
            else "PyTorch not installed", "; ".join(_SETUP_NOTES) or "JAX not installed", blas),
         "",
         "Times: median ms of interleaved repeats (%d rounds at most, >= %d per tool, each "
         "sample >= %g ms by repeating fast calls, gc.collect() between rounds); 'tool / fastad' "
         "divides by fastad at the same size in the same run (> 1: fastad faster). One-time costs "
         "(JAX trace+compile, CasADi graph build, fastad recording) are apart and not in the "
         "median. Agreement: max |a - b| / max |b| against fastad's answer; FAIL above %.0e."
         % (ctx.rounds, ctx.min_rounds, ctx.min_time * 1e3, TOL),
         ""]
    L.append("\n\n".join(sections))
    if ctx.problems:
        L.append("")
        L.append("PROBLEMS:")
        for p in ctx.problems:
            L.append("- " + p)
    table = "\n".join(L)
    if progress:
        sys.stderr.write("[peers] done in %.0f s\n" % elapsed)
    if ctx.problems:
        err = BenchmarkError("bench_peers found problems:\n" + "\n".join(ctx.problems)
                             + "\n\n" + table)
        err.table = table
        raise err
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats, < 90 s")
    ap.add_argument("--only", default="", help="comma-separated workloads: "
                    + ",".join(w[0] for w in WORKLOADS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    unknown = [o for o in only or () if o not in [w[0] for w in WORKLOADS]]
    if unknown:
        ap.error("unknown workload(s) %s; known: %s"
                 % (", ".join(unknown), ", ".join(w[0] for w in WORKLOADS)))
    try:
        print(run(quick=args.quick, progress=not args.no_progress, only=only))
    except BenchmarkError as e:
        print(e.table)
        sys.stdout.flush()
        sys.stderr.write("\nBENCHMARK FAILED: a tool disagrees with fastad or errored "
                         "(see PROBLEMS above)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
