"""Nested transforms (issue #17) against fastad's own second-order routes and peers.

Is the nested form of something fastad has a fast route for at most a few
times slower?  Per workload, the same function f under

  * fastad: grad(grad(f)) or jacfwd(grad(f)), jacrev(grad(f)),
    grad(grad(f) . v) and jvp(grad(f), x, v) -- beside fad.hessian(f) and
    fad.hvp(f, x, v) (forward-over-reverse on one tape), and a recorded
    nested tape replayed (record(grad(f)).jacobian) beside tape.hessian;
  * JAX without and with jit, autograd and PyTorch when importable: their
    double backward and their Hessians (optional peers, never dependencies).

Workloads: a scalar 22-operation expression and a scalar loop of 1,000
operations (grad(grad(f)) of a float), the extended Rosenbrock function as a
scalar loop and with array operations at n = 10 and 100, and sum(tanh(W x))
with W 40 x 30.  Each table is one process's medians of interleaved repeats
(a, b, c, a, b, c, ...; timeit-style calibrated inner loops for fast calls),
with the ratio to the row it is measured against (its "against" column).
Every answer is checked against a formula (rtol 1e-8) before timing; a call
that raises is listed with its error and not timed (until issue #17 lands,
fastad's nested forms raise).  OpenBLAS and XLA run one thread (2 noisy cores).

    python benchmarks/bench_nested.py [--quick] [--only NAME,...] [--no-peers]

Workload names: expr22 loop1000 rosen_loop10 rosen_vec10 rosen_loop100 rosen_vec100 tanh_mv.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # before NumPy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, ROOT)
import fastad as fad  # noqa: E402

HESS = "fad.hessian(f)"
HVP = "fad.hvp(f, x, v)"
REPLAY = "record(f).hessian"


# ---------------------------------------------------------------------------
# the functions, written once for a namespace m (fastad, jax.numpy, autograd.numpy, torch)
# ---------------------------------------------------------------------------

def expr22(x, m):
    a = m.sin(x) * m.exp(-x * x)
    b = m.log(1.0 + x * x) * m.tanh(x)
    c = x ** 3 / (1.0 + x ** 2)
    d = m.sqrt(1.0 + x ** 4) - m.cos(x) * x
    return a + b + c + d


def expr22_d2(x):
    """Its second derivative, by hand (the check)."""
    e = math.exp(-x * x)
    a = (-math.sin(x) - 4 * x * math.cos(x) + (4 * x * x - 2) * math.sin(x)) * e
    L, dL, d2L = math.log(1 + x * x), 2 * x / (1 + x * x), (2 - 2 * x * x) / (1 + x * x) ** 2
    t = math.tanh(x)
    s = 1 - t * t
    b = d2L * t + 2 * dL * s + L * (-2 * t * s)
    c = 2 * x * (3 - x * x) / (1 + x * x) ** 3          # (x - x / (1 + x^2))''
    q = 1 + x ** 4
    d = 6 * x * x / q ** 0.5 - 4 * x ** 6 / q ** 1.5 + x * math.cos(x) + 2 * math.sin(x)
    return a + b + c + d


def loop1000(x, m):
    s = x
    for _ in range(250):                  # 4 operations a step
        s = m.sin(s) * 0.5 + x * 0.3
    return s


def loop1000_d2(x):
    """Forward recurrences of s, s', s'' (the check)."""
    s, d1, d2 = x, 1.0, 0.0
    for _ in range(250):
        s, d1, d2 = (math.sin(s) * 0.5 + x * 0.3, math.cos(s) * d1 * 0.5 + 0.3,
                     0.5 * (math.cos(s) * d2 - math.sin(s) * d1 * d1))
    return d2


def rosen_loop(x, m):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
    return s


def rosen_vec(x, m):
    return m.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


W_TANH = np.random.default_rng(17).standard_normal((40, 30)) / math.sqrt(30)


def tanh_mv(x, m):
    W = getattr(m, "_W", W_TANH)        # torch's namespace holds W as a tensor
    return m.sum(m.tanh(m.matmul(W, x)))


def tanh_mv_hess(x):
    t = np.tanh(W_TANH @ x)
    return W_TANH.T @ ((-2 * t * (1 - t * t))[:, None] * W_TANH)


# ---------------------------------------------------------------------------
# the tools: name -> (function of the point, what it is measured against)
# ---------------------------------------------------------------------------

def fastad_scalar(f):
    g = lambda x: f(x, fad)             # noqa: E731
    return {HESS: (fad.hessian(g), None),
            "fad.grad(fad.grad(f))": (fad.grad(fad.grad(g)), HESS),
            "fad.jacfwd(fad.grad(f))": (fad.jacfwd(fad.grad(g)), HESS)}


def fastad_vector(f, x0, v):
    g = lambda x: f(x, fad)             # noqa: E731
    out = {HESS: (fad.hessian(g), None),
           "fad.jacfwd(fad.grad(f))": (fad.jacfwd(fad.grad(g)), HESS),
           "fad.jacrev(fad.grad(f))": (fad.jacrev(fad.grad(g)), HESS),
           HVP: (lambda x: fad.hvp(g, x, v), None),
           "fad.grad(grad(f) @ v)": (fad.grad(lambda x: fad.grad(g)(x) @ v), HVP),
           "fad.jvp(fad.grad(f), x, v)": (lambda x: fad.jvp(fad.grad(g), x, v)[1], HVP)}
    t_f = fad.record(g, x0)
    out[REPLAY] = (t_f.hessian, None)
    try:
        t_g = fad.record(lambda x: fad.grad(g)(x), x0)
        out["record(grad f).jacobian"] = (t_g.jacobian, REPLAY)
    except Exception as e:            # until nesting lands
        out["record(grad f).jacobian"] = (_raiser(e), REPLAY)
    return out


def _raiser(e):
    def fn(x):
        raise e
    return fn


def jax_tools(f, scalar, v):
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
    except ImportError:
        return {"JAX": None}
    g = lambda x: f(x, jnp)             # noqa: E731
    out = {}
    if scalar:
        forms = {"jax.grad(jax.grad(f))": jax.grad(jax.grad(g)), "jax.hessian(f)": jax.hessian(g)}
    else:
        forms = {"jax.hessian(f)": jax.hessian(g), "jax.jacfwd(jax.grad(f))": jax.jacfwd(jax.grad(g)),
                 "jax hvp (jvp of grad)": lambda x: jax.jvp(jax.grad(g), (x,), (v,))[1]}
    for name, fn in forms.items():
        against = HVP if "hvp" in name else HESS
        out[name] = (fn, against)
        out[name + ", jit"] = (jax.jit(fn), against)
    return out


def autograd_tools(f, scalar, v):
    try:
        import autograd
        import autograd.numpy as anp
    except ImportError:
        return {"autograd": None}
    g = lambda x: f(x, anp)             # noqa: E731
    if scalar:
        return {"autograd.grad(autograd.grad(f))": (autograd.grad(autograd.grad(g)), HESS)}
    return {"autograd.hessian(f)": (autograd.hessian(g), HESS),
            "autograd hvp (grad of grad . v)": (autograd.grad(lambda x: anp.dot(autograd.grad(g)(x), v)), HVP)}


def torch_tools(f, scalar, v):
    try:
        import torch
    except ImportError:
        return {"PyTorch": None}
    torch.set_num_threads(1)

    class M:                          # the namespace f sees
        sin, cos, exp, log, sqrt, tanh, sum, matmul = (torch.sin, torch.cos, torch.exp, torch.log,
                                                      torch.sqrt, torch.tanh, torch.sum, torch.matmul)
        _W = torch.tensor(W_TANH)

    def double_backward(x):
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(f(t, M), t, create_graph=True)
        (h,) = torch.autograd.grad(g, t)
        return h.item()

    def hessian(x):
        return torch.autograd.functional.hessian(lambda t: f(t, M),
                                                 torch.tensor(x, dtype=torch.float64)).numpy()

    def hvp(x):
        return torch.autograd.functional.hvp(lambda t: f(t, M), torch.tensor(x, dtype=torch.float64),
                                             torch.tensor(v))[1].numpy()

    if scalar:
        return {"torch double backward": (double_backward, HESS)}
    return {"torch.autograd.functional.hessian(f)": (hessian, HESS),
            "torch.autograd.functional.hvp": (hvp, HVP)}


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

def _short(e):
    msg = str(e).splitlines()[0] if str(e) else ""
    return "%s: %s" % (type(e).__name__, msg[:110] + ("..." if len(msg) > 110 else ""))


def measure(tools, x, expect, quick):
    """Check every tool against expect(name), then interleaved medians.

    Returns name -> ("time", seconds) | ("error", text) | ("absent", None)."""
    res, live = {}, {}
    for name, entry in tools.items():
        if entry is None:
            res[name] = ("absent", None)
            continue
        fn = entry[0]
        try:
            t0 = time.perf_counter()
            got = fn(x)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn(x)                                   # jit: the first call compiled
            once = time.perf_counter() - t0
        except Exception as e:
            res[name] = ("error", _short(e))
            continue
        ref = expect(name)
        got = np.asarray(got, dtype=np.float64)
        if got.shape != np.shape(ref) or not np.allclose(got, ref, rtol=1e-8, atol=1e-10):
            err = np.max(np.abs(got - ref)) if got.shape == np.shape(ref) else got.shape
            res[name] = ("error", "WRONG ANSWER (max |diff| %s)" % (err,))
            continue
        number = max(1, int(2e-3 / max(once, 1e-7)))   # >= ~2 ms a sample
        live[name] = (fn, number, once, [])
    budget = 3.0 if quick else 15.0          # seconds of fast tools' samples a workload
    slow = {n for n, v in live.items() if v[2] > 0.05 * budget}
    t_fast = 0.0
    for r in range(5 if quick else 101):
        for name, (fn, number, once, samples) in live.items():
            if r >= 3 and name in slow:      # a very slow tool: the first 3 rounds only
                continue
            t0 = time.perf_counter()
            for _ in range(number):
                fn(x)
            dt = time.perf_counter() - t0
            samples.append(dt / number)
            if name not in slow:
                t_fast += dt
        if r >= 2 and t_fast > budget:
            break
    for name, (fn, number, once, samples) in live.items():
        res[name] = ("time", float(np.median(samples)), len(samples))
    return res


def table(title, tools, res):
    rows = ["### " + title, "",
            "| method | median | samples | against | ratio |", "|---|---:|---:|---|---:|"]
    for name, entry in tools.items():
        r = res[name]
        if r[0] == "absent":
            rows.append(f"| {name} | not installed | | | |")
        elif r[0] == "error":
            rows.append(f"| {name} | {r[1]} | | | |")
        else:
            against = entry[1]
            ratio = ""
            if against and res.get(against, ("",))[0] == "time":
                ratio = "%.2fx" % (r[1] / res[against][1])
            t = r[1]
            rows.append(f"| {name} | {t * 1e3:.4g} ms | {r[2]} | {against or ''} | {ratio} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------

PEERS = (jax_tools, autograd_tools, torch_tools)


def scalar_workload(title, f, d2, x):
    tools = fastad_scalar(f)
    for peer in PEERS:
        tools.update(peer(f, True, None))
    return title, tools, x, (lambda name: d2(x))


def vector_workload(title, f, hess, x, v):
    tools = fastad_vector(f, x, v)
    for peer in PEERS:
        tools.update(peer(f, False, v))
    H = hess(x)

    def expect(name):
        return H @ v if ("hvp" in name or "@ v" in name or "jvp" in name) else H
    return title, tools, x, expect


def workloads():
    from scipy.optimize import rosen_hess
    rng = np.random.default_rng(0)
    out = {
        "expr22": lambda: scalar_workload("scalar expression, 22 operations, at x = 0.7",
                                          expr22, expr22_d2, 0.7),
        "loop1000": lambda: scalar_workload("scalar loop, 1,000 operations, at x = 0.4",
                                            loop1000, loop1000_d2, 0.4),
    }
    for n in (10, 100):
        x, v = rng.uniform(-1, 1, n), rng.standard_normal(n)
        out[f"rosen_loop{n}"] = (lambda n=n, x=x, v=v: vector_workload(
            f"extended Rosenbrock as a scalar loop, n = {n}", rosen_loop, rosen_hess, x, v))
        out[f"rosen_vec{n}"] = (lambda n=n, x=x, v=v: vector_workload(
            f"extended Rosenbrock with array operations, n = {n}", rosen_vec, rosen_hess, x, v))
    x, v = rng.uniform(-1, 1, 30), rng.standard_normal(30)
    out["tanh_mv"] = lambda: vector_workload("sum(tanh(W @ x)), W 40 x 30", tanh_mv, tanh_mv_hess, x, v)
    return out


def run(quick=False, only=None):
    parts = []
    for key, make in workloads().items():
        if only and key not in only:
            continue
        sys.stderr.write(f"[bench_nested] {key}\n")
        title, tools, x, expect = make()
        parts.append(table(title, tools, measure(tools, x, expect, quick)))
    head = ("Nested transforms against fastad's one-tape routes (ratio: the row's time over "
            "the time of the row named under 'against', same run; interleaved medians; "
            "OpenBLAS threads: %s)" % os.environ.get("OPENBLAS_NUM_THREADS"))
    return head + "\n\n" + "\n\n".join(parts)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated workload names")
    ap.add_argument("--no-peers", action="store_true", help="fastad's rows only")
    a = ap.parse_args()
    if a.no_peers:
        PEERS = ()
    print(run(a.quick, a.only.split(",") if a.only else None))
