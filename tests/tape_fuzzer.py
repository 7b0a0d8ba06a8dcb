"""Damage saved tapes and pickled tapes at random; every case must end in a
result or a clean exception, never a crash.  Run as a script (the tests run
it in a subprocess, so a crash is seen rather than killing pytest):

    python tests/tape_fuzzer.py SECONDS [SEED]

prints one JSON line {class: cases tried}; before each case the class and
case number go to the file named by $TAPE_FUZZ_LOG (to name a crashing case);
TAPE_FUZZ_DUMP=N writes case N's damaged pickle (a pickle_bytes case) to
/tmp/fuzz_case.pkl and stops, to reproduce it.
Classes: pickle_bytes, pickle_ops, pickle_slots, pickle_sizes, pickle_blocks,
save_bytes, save_ops, save_slots, save_sizes, save_blocks, save_header.
"""
import copy
import io
import json
import os
import pickle
import sys
import time

import numpy as np

# this worktree's fastad (a script's sys.path starts at tests/)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastad as fad  # noqa: E402
from fastad import _serialize as S  # noqa: E402
from fastad import _validate as V  # noqa: E402
from fastad._tape import _rebuild  # noqa: E402


@fad.primitive
def fuzz_cube(x):
    return x ** 3


fuzz_cube.defvjp(lambda ybar, y, x: ybar * 3.0 * x ** 2)
fuzz_cube.defjvp(lambda xdot, y, x: 3.0 * x ** 2 * xdot)

_W = np.array([[1.0, -0.5, 0.25], [0.3, 0.2, -1.0]])


def _programs():
    x3 = np.array([0.5, -1.2, 2.0])
    return [
        (lambda x: x[0] * fad.sin(x[1]) + x[2] * x[3] + (x[0] > 1.0), np.arange(4.0)),
        (lambda x: fad.sum(fad.tanh(_W @ x) ** 2) + fad.sum(fad.where(x > 0, x, 0.1 * x)),
         x3),
        (lambda x: np.max(x) * fad.sum(x) + fad.sum(x * x, axis=0)[0], np.array([[1.0, 2.0],
                                                                              [3.0, 0.5]])),
        (lambda x: fad.sum(fuzz_cube(x)) + fuzz_cube(x[0]) * x[1], x3),
        (lambda x: fad.exp(x) * 2.0 + fad.stack([x[0], 1.0, x[2]]), x3),
        (lambda x: fad.sqrt(x * x + 1.0) / (x + 3.0), 0.7),
        # blocks of the NumPy API (scans, products, orderings, linalg) and a pytree input
        (lambda x: np.sum(np.cumsum(x) * np.prod(x)) + np.einsum("i,j->", x, x)
         + np.sort(x)[0], x3),
        (lambda x: np.sum(np.linalg.inv(np.reshape(x, (2, 2)) + 3 * np.eye(2))),
         np.array([0.5, -0.2, 0.1, 0.4])),
        (lambda p: np.sum(p["w"] * p["v"][0]) + p["v"][1] ** 2,
         {"w": x3, "v": (x3 + 1.0, 0.5)}),
    ]


def _moved(x):
    """x + 0.1 (every leaf of a pytree)."""
    if isinstance(x, dict):
        return {k: _moved(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_moved(v) for v in x)
    return np.asarray(x, dtype=np.float64) + 0.1


def _exercise(t, x):
    """Every way a loaded tape can be swept."""
    out = [t(x), str(t)]
    for call in (lambda: t.gradient(x), lambda: t.jacobian(x), lambda: t.jacobian(x, "fwd"),
                 lambda: t.jvp(x, np.ones_like(x)), lambda: t.vjp(x, np.ones(t.out_shape)),
                 lambda: t.hvp(x, np.ones_like(x)), lambda: t.hessian(x),
                 lambda: t.sparse_jacobian(x), lambda: t.jvp(None, np.ones_like(x)),
                 lambda: t.to_dot()):
        try:
            out.append(call())
        except Exception:
            pass
    return out


def _parts(t):
    return list(copy.deepcopy(t._reduce_parts()[1]))


def _pickle_of(parts):
    return pickle.dumps(_Reduced(parts))


class _Reduced:
    def __init__(self, parts):
        self.parts = parts

    def __reduce__(self):
        return (_rebuild, tuple(self.parts))


def _rand_int(rng, n):
    r = rng.random()
    if r < 0.4:
        return int(rng.integers(-2, n + 3))
    if r < 0.7:
        return int(rng.choice([-1, 0, n, n - 1, 2**31 - 1, -2**31]))
    return int(rng.integers(-2**31, 2**31))


def damage_ops(parts, rng):
    op = bytearray(parts[0])
    if op:
        for _ in range(rng.integers(1, 4)):
            op[rng.integers(len(op))] = int(rng.integers(0, 256) if rng.random() < 0.5
                                           else rng.integers(0, V.N_OPS))
    parts[0] = bytes(op)


def damage_slots(parts, rng):
    node = np.frombuffer(parts[1], dtype=V.NODE_DTYPE).copy()
    n = node.shape[0]
    if n:
        for _ in range(rng.integers(1, 4)):
            node[rng.choice(["a0", "a1"])][rng.integers(n)] = _rand_int(rng, n)
    parts[1] = node.tobytes()
    if rng.random() < 0.3 and parts[6] is not None and parts[6].size:
        out = parts[6].copy()
        out.reshape(-1)[rng.integers(out.size)] = _rand_int(rng, n)
        parts[6] = out


def damage_sizes(parts, rng):
    k = rng.integers(7)
    n = len(parts[0])
    if k == 0:
        parts[3] = _rand_int(rng, n)                       # n_inputs
    elif k == 1:
        i = rng.integers(3)
        b = parts[i]
        cut = int(rng.integers(0, len(b) + 1))
        parts[i] = b[:cut] if rng.random() < 0.5 else b + bytes(rng.integers(1, 30))
    elif k == 2:
        parts[5] = None if rng.random() < 0.3 else tuple(
            int(rng.integers(-1, 6)) for _ in range(rng.integers(0, 3)))
    elif k == 3 and parts[4]:
        a, s, f = parts[4][0]
        parts[4] = [(a, s if rng.random() < 0.5 else (int(rng.integers(-1, 9)),),
                     f if rng.random() < 0.5 else _rand_int(rng, n))]
    elif k == 4 and parts[6] is not None:
        parts[6] = np.array(parts[6]).reshape(-1)[:rng.integers(0, 3)] if rng.random() < 0.5 \
            else np.array(parts[6], dtype=np.float64)
    elif k == 5:
        m = int(rng.integers(0, n + 1))
        parts[0], parts[1], parts[2] = parts[0][:m], parts[1][:m * 24], parts[2][:m * 8]
    else:
        parts[4] = [] if rng.random() < 0.5 else parts[4] * 2


def _operands(blk):
    from fastad._blocks import Operand
    found = []
    for v in vars(blk).values():
        for e in (v if isinstance(v, (list, tuple)) else (v,)):
            if type(e) is Operand:
                found.append(e)
    return found


def damage_blocks(parts, rng):
    blocks = parts[7]
    if not blocks:
        damage_slots(parts, rng)
        return
    n = len(parts[0])
    blk = blocks[rng.integers(len(blocks))]
    k = rng.integers(9)
    ops = _operands(blk)
    if k == 0:
        blk.start = _rand_int(rng, n)
    elif k == 1:
        blk.stop = _rand_int(rng, n)
    elif k == 2:
        blk.shape = tuple(int(rng.integers(0, 6)) for _ in range(rng.integers(0, 3)))
    elif k == 3 and ops:
        o = ops[rng.integers(len(ops))]
        if o.idx is not None and o.idx.size:
            idx = np.array(o.idx)
            idx.reshape(-1)[rng.integers(idx.size)] = _rand_int(rng, n)
            o.idx = idx
            if rng.random() < 0.5:
                o.flat = idx.reshape(-1)
    elif k == 4 and ops:
        o = ops[rng.integers(len(ops))]
        o.start = _rand_int(rng, n)
    elif k == 5:
        for name in ("op", "axis", "kind", "name", "slots", "keepdims", "sealed"):
            if name in vars(blk) and rng.random() < 0.5:
                setattr(blk, name, rng.choice([0, 1, -1, 99, None, (5,), "max", "sin",
                                               [n + 5], True]))
    elif k == 6:
        blocks.pop(int(rng.integers(len(blocks))))
    elif k == 7:
        i, j = rng.integers(len(blocks), size=2)
        blocks[i], blocks[j] = blocks[j], blocks[i]
    elif k == 8 and ops:
        o = ops[rng.integers(len(ops))]
        o.src = blocks[rng.integers(len(blocks))]
        o.shape = tuple(int(rng.integers(0, 4)) for _ in range(rng.integers(0, 3)))


def _flip(data, rng):
    b = bytearray(data)
    for _ in range(rng.integers(1, 5)):
        b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
    return bytes(b)


def _saved(t):
    buf = io.BytesIO()
    t.save(buf)
    return buf.getvalue()


def _resave(data, edit):
    """A saved tape with its arrays and header edited by `edit(arrays, header)`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes())
    edit(arrays, header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _saved_from_parts(parts, base):
    """A saved file whose node arrays come from (damaged) parts."""
    def edit(arrays, header):
        arrays["op"] = np.frombuffer(parts[0], dtype=np.uint8)
        node = np.frombuffer(parts[1][:len(parts[1]) // 24 * 24], dtype=V.NODE_DTYPE)
        for k in ("a0", "a1", "p0", "p1"):
            arrays[k] = np.ascontiguousarray(node[k])
        arrays["val"] = np.frombuffer(parts[2][:len(parts[2]) // 8 * 8], dtype=np.float64)
        header["n_inputs"] = parts[3]
        if parts[6] is not None and np.asarray(parts[6]).dtype.kind in "iu":
            arrays["out"] = np.asarray(parts[6], dtype=np.int64)
    return _resave(base, edit)


def _jsonish(rng, n):
    return rng.choice([None, True, -1, 0, n + 7, 2**40, "x", [], {}, {"float": "nan"},
                       {"array": "b999"}, {"tuple": [1, {"list": []}]},
                       {"block": "Sum", "state": {"dict": []}}, {"primitive": ["os", "system"]},
                       {"operand": {"dict": [["idx", {"array": "b0"}]]}}])


def damage_header(data, rng):
    def edit(arrays, header):
        n = arrays["op"].size
        k = rng.integers(5)
        if k == 0:
            key = rng.choice(["n_inputs", "inputs", "in_shape", "blocks", "version", "format"])
            header[str(key)] = _jsonish(rng, n)
        elif k == 1 and header["blocks"]:
            b = header["blocks"][rng.integers(len(header["blocks"]))]
            entries = b["state"]["dict"]
            entry = entries[rng.integers(len(entries))]
            entry[1] = _jsonish(rng, n)
        elif k == 2:
            keys = [k for k in arrays if k.startswith("b")] or ["op"]
            key = str(rng.choice(keys))
            a = arrays[key]
            arrays[key] = rng.choice([a[:0], a.astype(np.float64), np.full(3, n + 9, a.dtype),
                                      a.reshape(-1)[::-1].copy()])
        elif k == 3:
            arrays.pop(str(rng.choice(list(arrays))))
        else:
            blob = json.dumps(header)
            i = int(rng.integers(len(blob)))
            header.clear()
            try:
                header.update(json.loads(blob[:i] + "1" + blob[i + 1:]))
            except ValueError:
                header["format"] = "damaged"
    return _resave(data, edit)


def main(seconds, seed=0):
    # CPython's unpickler sizes its memo by the index a pickle names (a flipped
    # LONG_BINPUT asks for gigabytes and pages through them): bounded address
    # space makes that the MemoryError it is.  (Pickles are for trusted data;
    # fad.load_tape is the path for files from elsewhere.)
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rng = np.random.default_rng(seed)
    progs = [(fad.record(f, x), _moved(x)) for f, x in _programs()]
    pickles = [pickle.dumps(t) for t, _ in progs]
    saved = [_saved(t) for t, _ in progs]
    classes = ["pickle_bytes", "pickle_ops", "pickle_slots", "pickle_sizes", "pickle_blocks",
               "save_bytes", "save_ops", "save_slots", "save_sizes", "save_blocks",
               "save_header"]
    damagers = {"ops": damage_ops, "slots": damage_slots, "sizes": damage_sizes,
                "blocks": damage_blocks}
    counts = {c: 0 for c in classes}
    loaded = {c: 0 for c in classes}
    log = open(os.environ["TAPE_FUZZ_LOG"], "w") if os.environ.get("TAPE_FUZZ_LOG") else None
    t_end = time.time() + seconds
    case = 0
    while time.time() < t_end:
        cls = classes[case % len(classes)]
        p = int(rng.integers(len(progs)))
        t, x = progs[p]
        if log:
            log.write(f"{cls} program={p} case={case} seed={seed}\n")
            log.flush()
        case += 1
        kind, how = cls.split("_")
        try:
            if cls == "pickle_bytes":
                data = _flip(pickles[p], rng)
                if case - 1 == int(os.environ.get("TAPE_FUZZ_DUMP", -1)):
                    open("/tmp/fuzz_case.pkl", "wb").write(data)
                    return 0
                loaded_t = pickle.loads(data)
            elif cls == "save_bytes":
                loaded_t = fad.load_tape(io.BytesIO(_flip(saved[p], rng)))
            elif cls == "save_header":
                loaded_t = fad.load_tape(io.BytesIO(damage_header(saved[p], rng)))
            else:
                parts = _parts(t)
                damagers[how](parts, rng)
                if kind == "pickle":
                    loaded_t = pickle.loads(_pickle_of(parts))
                elif how == "blocks":
                    buf = io.BytesIO()
                    try:
                        S.save_tape(_Unchecked(parts), buf)
                    except Exception:
                        counts[cls] += 1
                        continue
                    loaded_t = fad.load_tape(io.BytesIO(buf.getvalue()))
                else:
                    loaded_t = fad.load_tape(io.BytesIO(_saved_from_parts(parts, saved[p])))
        except Exception:
            counts[cls] += 1
            continue
        counts[cls] += 1
        loaded[cls] += 1
        try:
            _exercise(loaded_t, x)
        except Exception:
            pass
    print(json.dumps({"tried": counts, "loaded": loaded}))
    return 0


class _Unchecked:
    """Stands in for a Tape in save_tape: its (damaged) parts as they are."""

    def __init__(self, parts):
        self.parts = parts

    def _reduce_parts(self):
        return (_rebuild, tuple(self.parts))


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
