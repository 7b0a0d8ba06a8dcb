"""Run autograd's NumPy derivative tests (ported in suite/) against fastad.

    cd <worktree> && python benchmarks/peer/run.py [-k SUBSTR] [--list-failures]
                                                   [-j N] [--timeout S] [--json FILE]
                                                   [--numpy-only] [--replay] [--lanes]

Imports fastad from the current directory (run it from a worktree root).
Each test runs in its own forked process with a time limit, so one failure,
hang or crash does not stop the others.  Results:
  pass    every check agreed with finite differences;
  error   fastad raised (grouped by message; missing NumPy functions counted);
  wrong   a value or derivative disagreed with NumPy / finite differences,
          or an assertion of the test itself failed: the worst outcome;
  skipped complex-only tests, and autograd-specific ones (SKIP below).
The checks themselves are in peer_util.py.
"""
import argparse
import collections
import faulthandler
import importlib
import itertools
import json
import os
import re
import select
import signal
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "suite")

# The NumPy suite (the acceptance measure of issue #16); SciPy's, and the
# tests of transforms on NumPy code (graphs: derivatives of derivatives, issue
# #17; jacobian; direct: grad against a known number) are reported apart.
NUMPY_FILES = ["numpy", "systematic", "linalg", "binary_ops", "scalar_ops", "truediv"]
OTHER_FILES = {"scipy": "scipy", "graphs": "transforms", "jacobian": "transforms",
               "direct": "transforms"}

# Tests left out: autograd's own API or behaviour with no fastad meaning.
SKIP = {
    "numpy::test_numpy_version": "checks autograd.numpy re-exports NumPy's version",
    "numpy::test_make_diagonal": "np.make_diagonal is autograd's own function, not NumPy's",
    "scipy::test_convolve_generalization": "autograd.scipy.signal.convolve's own axes=/dot_axes= API",
    "scipy::test_convolve": "autograd.scipy.signal.convolve's own axes=/dot_axes= API",
    "scipy::test_convolve_2d": "autograd.scipy.signal.convolve's own axes=/dot_axes= API",
    "scipy::test_convolve_ignore": "autograd.scipy.signal.convolve's own axes=/dot_axes= API",
    "scipy::test_convolve_ignore_dot": "autograd.scipy.signal.convolve's own axes=/dot_axes= API",
    "graphs::test_assignment_raises_error": "expects item assignment into a traced array to raise "
                                            "(autograd cannot record it; fastad records it)",
    "graphs::test_complex_mutating_outgrad_from_indexing": "complex intermediate values",
    "direct::test_deriv": "autograd's deriv, which fastad does not have",
    "direct::test_grad_complex_output": "complex output",
    "direct::test_holomorphic_grad": "complex (autograd's holomorphic_grad)",
    "linalg::test_eig_real": "complex intermediate values (np.linalg.eig of a nonsymmetric "
                             "real matrix; the test differentiates np.abs of them)",
}

# Tests whose own assertions are about something other than a derivative's
# value: their failure is an error (a missing feature), not a wrong derivative.
NOT_DERIVATIVE_ASSERTS = {
    "numpy::test_astype": "the gradient's dtype (float32 input, float32 gradient)",
    "numpy::test_scalar_array_box_attributes": "shape/ndim/size/dtype of a traced scalar",
    "numpy::test_len": "len() of a traced array",
}


def _setup_path():
    cwd = os.getcwd()
    for p in (SUITE, HERE, cwd):
        if p not in sys.path:
            sys.path.insert(0, p)
    # the worktree's fastad first
    sys.path.remove(cwd)
    sys.path.insert(0, cwd)


def _param_cases(fn):
    """pytest.mark.parametrize expanded: [(id suffix, kwargs)]."""
    marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
    if not marks:
        return [("", {})]
    per_mark = []
    for m in marks:
        names = m.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        cases = []
        for vals in m.args[1]:
            vals = vals.values if hasattr(vals, "values") and not isinstance(vals, dict) else vals
            vals = (vals,) if len(names) == 1 else tuple(vals)
            cases.append(("-".join(str(v) for v in vals), dict(zip(names, vals))))
        per_mark.append(cases)
    out = []
    for combo in itertools.product(*per_mark):
        out.append(("[" + "-".join(c[0] for c in combo) + "]",
                    {k: v for c in combo for k, v in c[1].items()}))
    return out


def collect(files=None):
    """[(test id, group, function, kwargs)] for every ported test."""
    _setup_path()
    warnings.simplefilter("ignore")
    tests = []
    for name in files or NUMPY_FILES + list(OTHER_FILES):
        mod = importlib.import_module("ag_" + name)
        group = OTHER_FILES.get(name, "numpy")
        for attr, fn in vars(mod).items():
            if attr.startswith("test_") and callable(fn) and getattr(fn, "__module__", None) == mod.__name__:
                for suffix, kwargs in _param_cases(fn):
                    tests.append((f"{name}::{attr}{suffix}", group, fn, kwargs))
    return tests


def run_one(fn, kwargs, tid=""):
    """Run one test in this process: a result dict."""
    import numpy as np
    import peer_util
    peer_util.Stats.reset()
    np.random.seed(42)  # as autograd's conftest
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    res = {"status": "pass", "message": ""}
    try:
        with np.errstate(all="ignore"):
            fn(**kwargs)
        if peer_util.Stats.checks == 0 and peer_util.Stats.complex_skipped > 0:
            res = {"status": "skipped", "message": "complex inputs only"}
    except peer_util.WrongDerivative as e:
        res = {"status": "wrong", "message": str(e)}
    except peer_util.StructureMismatch as e:
        res = {"status": "error", "message": f"StructureMismatch: {e}", "where": _where(e)}
    except AssertionError as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        what = f"({os.path.basename(tb.filename)}:{tb.lineno}: {tb.line}) {e}"
        if tid in NOT_DERIVATIVE_ASSERTS:
            res = {"status": "error", "message": f"AssertionError on {NOT_DERIVATIVE_ASSERTS[tid]} {what}",
                   "where": _where(e)}
        else:
            res = {"status": "wrong", "message": f"assertion failed in the test {what}"}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every failure is a result (pytest.fail too)
        if type(e).__name__ == "Skipped":
            res = {"status": "skipped", "message": str(e)}
        else:
            res = {"status": "error", "message": f"{type(e).__name__}: {e}", "where": _where(e)}
    res["checks"] = peer_util.Stats.checks
    if peer_util.Stats.replay_refused:
        res["replay_refused"] = peer_util.Stats.replay_refused
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _where(e):
    tb = traceback.extract_tb(e.__traceback__)
    return f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""


def run_all(tests, jobs=2, timeout=120.0, progress=True):
    """Fork one child per test, at most `jobs` at a time: {id: result}."""
    results = {}
    pending = list(tests)
    running = {}   # pid -> (id, read fd, start, buffer)
    while pending or running:
        while pending and len(running) < jobs:
            tid, group, fn, kwargs = pending.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                faulthandler.disable()  # a crash is reported by the parent
                try:
                    res = run_one(fn, kwargs, tid)
                except BaseException as e:  # noqa: BLE001
                    res = {"status": "error", "message": f"{type(e).__name__}: {e}"}
                data = json.dumps(res, default=str).encode()
                with os.fdopen(w, "wb") as fh:
                    fh.write(data)
                os._exit(0)
            os.close(w)
            running[pid] = [tid, r, time.monotonic(), b""]
        fds = {v[1]: pid for pid, v in running.items()}
        ready, _, _ = select.select(list(fds), [], [], 0.5)
        for fd in ready:
            pid = fds[fd]
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[pid][3] += chunk
                continue
            tid, _, start, buf = running.pop(pid)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            try:
                res = json.loads(buf.decode())
            except ValueError:
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                res = {"status": "error", "message": f"crash: the test process died "
                       f"(signal {sig}, status {status})"}
            results[tid] = res
            if progress:
                print({"pass": ".", "error": "E", "wrong": "W", "skipped": "s"}[res["status"]],
                      end="", flush=True)
        now = time.monotonic()
        for pid, (tid, fd, start, buf) in list(running.items()):
            if now - start > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(fd)
                del running[pid]
                results[tid] = {"status": "error", "message": f"timeout: more than {timeout:g} s"}
                if progress:
                    print("T", end="", flush=True)
    if progress:
        print()
    return results


# ---------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------

_MISSING = [
    re.compile(r"np\.([\w.]+) with ([\w, ]+) is not supported"),
    re.compile(r"np\.([\w.]+) is not supported"),
]
_MISSING_UFUNC = re.compile(r"NumPy's ([\w.]+)(?: with keyword arguments \[[^\]]*\])? is not supported")


def error_key(msg):
    """The message that groups errors: first line, without the list of what
    is supported, numbers in shapes kept (they often name the case)."""
    first = msg.splitlines()[0] if msg else ""
    if first.startswith("StructureMismatch"):
        return ("StructureMismatch: the gradient w.r.t. a tuple/list of arrays comes back "
                "as one stacked array (pytree inputs, #16 item 2); the numbers agree")
    first = re.sub(r"; supported: .*", "", first)
    first = re.sub(r"0x[0-9a-f]+", "0x..", first)
    return first[:160]


def missing_name(msg):
    for pat in _MISSING:
        m = pat.search(msg)
        if m:
            name = m.group(1)
            if m.lastindex and m.lastindex >= 2:
                name += f" (with {m.group(2)})"
            return qualified(name)
    m = _MISSING_UFUNC.search(msg)
    if m:
        import numpy as np
        name = m.group(1)
        if isinstance(getattr(np, name, None), np.ufunc):
            return "np." + name
        return "scipy.special." + name
    return None


def qualified(name):
    """np.X, np.linalg.X or scipy.special.X for a bare function name."""
    import numpy as np
    if "." in name.split(" ")[0]:
        return name if name.startswith("np.") else "np." + name
    base = name.split(" ")[0]
    if hasattr(np, base):
        return "np." + name
    if hasattr(np.linalg, base):
        return "np.linalg." + name
    try:
        import scipy.special
        if hasattr(scipy.special, base):
            return "scipy.special." + name
    except ImportError:
        pass
    return name


def summarize(results, tests, list_failures=False):
    lines = []
    groups = collections.OrderedDict((g, []) for g in ["numpy", "scipy", "transforms"])
    for tid, group, _, _ in tests:
        if tid in results:
            groups[group].append(tid)
    for group, ids in groups.items():
        if not ids:
            continue
        by = collections.defaultdict(list)
        for tid in ids:
            by[results[tid]["status"]].append(tid)
        real = len(ids) - len(by["skipped"])
        npass = len(by["pass"])
        pct = 100.0 * npass / real if real else 0.0
        lines.append(f"## {group}: {real} real-valued tests: {npass} pass ({pct:.1f}%), "
                     f"{len(by['error'])} error, {len(by['wrong'])} WRONG; "
                     f"{len(by['skipped'])} skipped")
        checks = sum(results[t].get("checks", 0) for t in ids)
        refused = sum(results[t].get("replay_refused", 0) for t in ids)
        lines.append(f"({checks} check_grads calls completed"
                     + (f"; {refused} replays refused with TapeError" if refused else "") + ")")
        lines.append("")
        if by["wrong"]:
            lines.append("### WRONG (value or derivative disagrees with finite differences)")
            for tid in by["wrong"]:
                lines.append(f"- {tid}: {results[tid]['message'][:400]}")
            lines.append("")
        missing = collections.defaultdict(list)
        errors = collections.defaultdict(list)
        for tid in by["error"]:
            msg = results[tid]["message"]
            name = missing_name(msg)
            if name:
                missing[name].append(tid)
            else:
                errors[error_key(msg)].append(tid)
        if missing:
            lines.append(f"### Missing NumPy functions ({len(missing)} distinct; tests failing on each)")
            for name, ids_ in sorted(missing.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"- {name}: {len(ids_)}" + (f"  ({', '.join(ids_)})" if list_failures else ""))
            lines.append("")
        if errors:
            lines.append("### Other errors (grouped by message)")
            for key, ids_ in sorted(errors.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"- [{len(ids_)}] {key}")
                if list_failures:
                    for tid in ids_:
                        lines.append(f"    - {tid} ({results[tid].get('where', '')})")
            lines.append("")
        if by["skipped"] and list_failures:
            lines.append("### Skipped")
            for tid in by["skipped"]:
                lines.append(f"- {tid}: {results[tid]['message']}")
            lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", dest="substr", help="only tests whose id contains this")
    ap.add_argument("--list-failures", action="store_true", help="name every failing test")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="tests run at once (default 2)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per test (default 120)")
    ap.add_argument("--json", help="write every result to this file")
    ap.add_argument("--replay", action="store_true",
                    help="also check record/replay at a nearby point (a mismatch is WRONG)")
    ap.add_argument("--lanes", action="store_true",
                    help="also check vjp/jvp with 3 seeds/directions at once against one at a time")
    ap.add_argument("--numpy-only", action="store_true", help="only the NumPy group (no scipy, transforms)")
    args = ap.parse_args(argv)
    tests = collect(NUMPY_FILES if args.numpy_only else None)
    if args.replay:
        import peer_util
        peer_util.REPLAY = True  # the forked children inherit it
    if args.lanes:
        import peer_util
        peer_util.LANES = True
    results = {tid: {"status": "skipped", "message": SKIP[tid]} for tid, *_ in tests if tid in SKIP}
    todo = [t for t in tests if t[0] not in SKIP and (not args.substr or args.substr in t[0])]
    if args.substr:
        tests = [t for t in tests if args.substr in t[0]]
        results = {k: v for k, v in results.items() if args.substr in k}
    t0 = time.monotonic()
    results.update(run_all(todo, jobs=args.jobs, timeout=args.timeout))
    import fastad
    print(f"fastad from {os.path.dirname(fastad.__file__)}")
    print(summarize(results, tests, args.list_failures))
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
