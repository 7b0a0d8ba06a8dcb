"""Where the time of fad.grad on a scalar loop goes, per operation (issue #19).

    python benchmarks/breakdown_recording.py [--loop rosen|logreg|lorenz] [--seconds S] [BUILD_ROOT ...]

For each build (default: this checkout), runs fad.grad(f)(x) of one loop of
benchmarks/bench_recording.py in a child process under `perf record`
(Linux perf must be installed), sorts the samples by symbol into the pieces
below, and prints ns per recorded operation for each piece: a piece's share
of the samples times the median CPU time of a call (measured in the same
child, after perf attaches), divided by the tape's nodes.  A first row gives
the same loop on plain floats.

Pieces: the interpreter (bytecode loop, frames: what floats pay too);
number-protocol dispatch (PyNumber_*, the subtype check, Cython's slot
wrappers and operator methods); operand checks and conversions; finding the
current recording (the thread-local); value, partials and appending the
node; allocating and freeing Vars; x[i] on an Array; the reverse sweep
(and zeroing adjoints); the kernel (page faults); the rest (grad's set-up,
Python's allocator for ints/floats, GC).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

CHILD = r"""
import sys, time, statistics
sys.path.insert(0, {here!r})
from bench_recording import load, workloads
fad = load({root!r})
wls = workloads(fad.sigmoid)
ff, fx, mk, x, check = wls[{loop!r}]
if {floats!r}:
    run, nodes = (lambda: ff(fx)), len(fad.record(mk(fad), x))
else:
    g = fad.grad(mk(fad))
    run, nodes = (lambda: g(x)), len(fad.record(mk(fad), x))
ts = []
end = time.time() + {seconds}
while time.time() < end:
    t0 = time.process_time(); run(); ts.append(time.process_time() - t0)
print("RESULT", statistics.median(ts), nodes)
"""

PIECES = [
    ("sweep", r"_reverse|_sweeps|_player|memset"),
    ("Array x[i]", r"Array|array_getitem|PyObject_GetItem|_norm|_var_at|_touch|PyLong_AsSsize_t"),
    ("find the recording", r"_current|tls_get_addr|get_current"),
    ("alloc/free result", r"_new\b|tp_new_6fastad_4_var_Var|tp_dealloc_6fastad_4_var_Var|var_dealloc|"
                          r"PyObject_Init|_Py_NewReference|object_dealloc|_PyFloat_ExactDealloc|"
                          r"float_dealloc|PyFloat_FromDouble"),
    ("eval + append node", r"__pyx_f_6fastad_4_var__bin\b|__pyx_f_6fastad_4_var__un\b|fad_eval|tape_push|"
                           r"__pyx_f_6fastad_4_var__nb_|_unary\b"),
    ("operand checks", r"_binary\b|_num\b|_plain|_kind|PyLong_AsDouble|PyFloat_AsDouble"),
    ("number dispatch", r"PyNumber_|PyType_IsSubtype|__pyx_nb_|__pyx_pw_6fastad_4_var_3Var|"
                        r"__pyx_pf_6fastad_4_var_3Var|binary_op|float_(add|sub|mul|div)|long_mul|"
                        r"__Pyx_PyObject_Call|CyFunction|_unary_function|cfunction_vectorcall"),
    ("interpreter", r"_PyEval_EvalFrameDefault|_PyFrame|frame|_PyObject_Free|_PyObject_Malloc|"
                    r"PyLong_FromLong|_PyLong_Add|float_sub|rangeiter|tuple|"
                    r"unicodekeys_lookup|_Py_dict_lookup|visit_|gc_"),
    ("kernel", r"\[k\]"),
]


def profile(root, loop, seconds, floats=False):
    code = CHILD.format(here=_HERE, root=root, loop=loop, seconds=seconds, floats=floats)
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        script = os.path.join(d, "child.py")
        with open(script, "w") as fh:
            fh.write(code)
        out = subprocess.run(["perf", "record", "-q", "-o", data, sys.executable, script],
                             capture_output=True, text=True, cwd=_HERE)
        m = re.search(r"RESULT (\S+) (\d+)", out.stdout)
        if not m:
            raise RuntimeError(out.stdout + out.stderr)
        t, nodes = float(m.group(1)), int(m.group(2))
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                              "--sort", "sym"], capture_output=True, text=True).stdout
    shares = {name: 0.0 for name, _ in PIECES}
    shares["rest"] = 0.0
    rest = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        for name, pat in PIECES:
            if re.search(pat, sym):
                shares[name] += pct
                break
        else:
            shares["rest"] += pct
            rest.append((pct, sym.strip()))
    total = sum(shares.values())
    return t, nodes, {k: v / total for k, v in shares.items()}, sorted(rest, reverse=True)[:8]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*")
    ap.add_argument("--loop", default="rosen")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--reps", type=int, default=31)
    a = ap.parse_args()
    roots = a.roots or [os.path.dirname(_HERE)]
    cols = [("floats", os.path.abspath(roots[0]))] + [(r, os.path.abspath(r)) for r in roots]
    # the times: interleaved in one process (perf's children run at
    # different moments of a shared machine); perf gives only the shares
    import bench_recording
    rows = bench_recording.run(roots, a.reps, time.process_time, [a.loop])
    t_float, t_root = rows[a.loop]
    times = {"floats": t_float}
    times.update({r: t_root[r] for r in roots})
    res = {}
    for label, root in cols:
        res[label] = profile(root, a.loop, a.seconds, label == "floats")
    nodes = res[roots[0]][1]
    names = [n for n, _ in PIECES] + ["rest"]
    print()
    print(f"{a.loop}: ns per tape node ({nodes} nodes; median CPU time of interleaved calls "
          "x the piece's share of perf samples)")
    print("| piece | " + " | ".join(label for label, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{res[label][2][n] * times[label] / nodes * 1e9:.1f}"
                                       for label, _ in cols) + " |")
    print("| **total** | " + " | ".join(f"{times[label] / nodes * 1e9:.1f}"
                                        for label, _ in cols) + " |")
    print("| ratio to floats | " + " | ".join(f"{times[label] / t_float:.2f}x"
                                             for label, _ in cols) + " |")
    for label, _ in cols:
        print(f"rest of {label}: " + ", ".join(f"{s} {p:.1f}%" for p, s in res[label][3]))


if __name__ == "__main__":
    main()
