"""tape.save(path) and fad.load_tape(path): a Tape as plain arrays and a JSON
header in an .npz file, loaded with allow_pickle=False, so loading runs no
code from the file.  Block records are tagged JSON (their classes picked from
fastad's own, primitives named by module and qualified name and found among
modules already imported); everything is then checked by fastad._validate
as an unpickled tape is."""
import json
import sys

import numpy as np

from fastad import _blocks as B
from fastad._tape import _rebuild, provide_io
from fastad._validate import NODE_DTYPE, CorruptTape, _bad, _block_classes, check_parts, check_trees

FORMAT, VERSION = "fastad-tape", 1
MAX_HEADER = 64 << 20


class _Encoder:
    def __init__(self):
        self.arrays = {}
        P, classes = _block_classes()
        self.P = P
        self.names = {c: f"{c.__module__}.{c.__qualname__}" for c in classes}
        self.block_no = {}          # id(block) -> its number (operands' links)

    def array(self, a):
        if a.dtype.kind not in "biuf" or a.dtype.hasobject:
            raise TypeError(f"fastad: tape.save cannot store an array of dtype {a.dtype}")
        key = f"b{len(self.arrays)}"
        self.arrays[key] = np.array(a, order="C")      # (0-d stays 0-d)
        return {"array": key}

    def enc(self, v, where):
        P = self.P
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return {"float": repr(float(v))}      # (inf and nan too)
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.ndarray):
            return self.array(v)
        if isinstance(v, tuple):
            return {"tuple": [self.enc(e, where) for e in v]}
        if isinstance(v, list):
            return {"list": [self.enc(e, where) for e in v]}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError(f"fastad: tape.save: {where} has a dict with non-string keys")
            return {"dict": [[k, self.enc(e, where)] for k, e in v.items()]}
        if type(v) is B.Operand:
            st = v.__getstate__()
            src = st.pop("src", None)
            if type(src).__name__ == "InputSlab":
                st["src"] = {"slab": [int(src.start), int(src.stop)]}
            elif src is not None and id(src) in self.block_no:
                st["src"] = {"blockref": self.block_no[id(src)]}
            return {"operand": self.enc(st, where)}
        if isinstance(v, P.Primitive):
            return {"primitive": P.reference_of(v)}
        if type(v) in self.names:
            st = dict(vars(v))
            return {"block": self.names[type(v)], "state": self.enc(st, f"block {v.describe()}")}
        raise TypeError(f"fastad: tape.save cannot store {where}: it holds a "
                        f"{type(v).__name__}; pickle the tape instead (trusted use only)")


def save_tape(tape, path):
    """Write `tape` to `path` (an .npz file; see fad.load_tape)."""
    op, node, val, n_inputs, inputs, in_shape, out, blocks, *rest = tape._reduce_parts()[1]
    e = _Encoder()
    nodes = np.frombuffer(node, dtype=NODE_DTYPE)
    value_read, in_tree, out_tree = (list(rest) + [None] * 3)[:3]
    header = {"format": FORMAT, "version": VERSION, "n_inputs": int(n_inputs),
              # op codes are positions in the op table, which grows: the names
              # let a later fastad map them (see _op_codes)
              "ops": list(B.OP_NAMES),
              "inputs": e.enc(list(inputs), "the inputs"),
              "in_shape": e.enc(in_shape, "in_shape"),
              "value_read": value_read, "blocks": [],
              "in_tree": _tree_to_json(in_tree, "the input structure"),
              "out_tree": _tree_to_json(out_tree, "the output structure")}
    for i, b in enumerate(blocks):
        header["blocks"].append(e.enc(b, f"block {i}"))
        e.block_no[id(b)] = i
    arrays = dict(e.arrays)
    arrays.update(op=np.frombuffer(op, dtype=np.uint8), val=np.frombuffer(val, dtype="<f8"),
                  a0=np.ascontiguousarray(nodes["a0"]), a1=np.ascontiguousarray(nodes["a1"]),
                  p0=np.ascontiguousarray(nodes["p0"]), p1=np.ascontiguousarray(nodes["p1"]),
                  out=np.asarray(out, dtype=np.int64))
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    if hasattr(path, "write"):
        np.savez(path, **arrays)
    else:
        with open(path, "wb") as fh:       # (np.savez would append .npz to a bare name)
            np.savez(fh, **arrays)


class _Decoder:
    def __init__(self, arrays, allow_import=False):
        self.arrays = arrays
        self.allow_import = allow_import
        self.P, classes = _block_classes()
        self.classes = {f"{c.__module__}.{c.__qualname__}": c for c in classes}
        self.depth = 0
        self.blocks = []            # decoded so far (operands link to earlier ones)

    def dec(self, v):
        self.depth += 1
        try:
            if self.depth > 64:
                _bad("the header nests too deeply")
            return self._dec(v)
        finally:
            self.depth -= 1

    def _dec(self, v):
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, dict) and len(v) in (1, 2):
            (tag, x), *rest = v.items()
            if tag == "float" and isinstance(x, str) and not rest:
                try:
                    return float(x)
                except ValueError:
                    _bad(f"bad number {x[:40]!r}")
            if tag == "array" and not rest:
                a = self.arrays.get(x) if isinstance(x, str) and x.startswith("b") else None
                if a is None:
                    _bad(f"the header names a missing array {str(x)[:40]!r}")
                return a.copy()
            if tag == "tuple" and isinstance(x, list) and not rest:
                return tuple(self.dec(e) for e in x)
            if tag == "list" and isinstance(x, list) and not rest:
                return [self.dec(e) for e in x]
            if tag == "dict" and isinstance(x, list) and not rest:
                out = {}
                for kv in x:
                    if not (isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str)):
                        _bad("bad dict entry in the header")
                    out[kv[0]] = self.dec(kv[1])
                return out
            if tag == "blockref" and isinstance(x, int) and not rest:
                if not 0 <= x < len(self.blocks):
                    _bad("an operand links to a block that is not before it")
                return self.blocks[x]
            if tag == "slab" and isinstance(x, list) and len(x) == 2 and not rest:
                from fastad._recorder import InputSlab
                return InputSlab(*(int(self.dec(e)) if isinstance(e, int) else _bad("bad slab")
                                   for e in x))
            if tag == "operand" and not rest:
                st = self.dec(x)
                if not isinstance(st, dict) or not set(st) <= set(B.Operand.__slots__):
                    _bad("bad operand record")
                o = B.Operand.__new__(B.Operand)
                o.__setstate__(st)
                return o
            if tag == "primitive" and not rest:
                return self.primitive(x)
            if tag == "block" and rest and rest[0][0] == "state":
                cls = self.classes.get(x) if isinstance(x, str) else None
                if cls is None:
                    _bad(f"unknown block kind {str(x)[:40]!r}")
                st = self.dec(rest[0][1])
                if not isinstance(st, dict):
                    _bad("bad block record")
                blk = cls.__new__(cls)
                vars(blk).update(st)
                return blk
        _bad(f"unreadable header value {str(v)[:60]!r}")

    def primitive(self, ref):
        """A primitive by (module, qualname), among modules already imported."""
        if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(r, str) for r in ref)):
            _bad("bad primitive reference")
        module, qualname = self.P._MOVED.get(tuple(ref), ref[0]), ref[1]
        obj = sys.modules.get(module)
        if obj is None and self.allow_import:          # (a pickle: trusted)
            try:
                obj = self.P._lookup(module, qualname)
                return obj if isinstance(obj, self.P.Primitive) else \
                    _bad(f"{module}.{qualname} is not a fastad primitive")
            except ImportError:
                obj = None
        if obj is None:
            raise CorruptTape(f"fastad.load_tape: the tape calls primitive {qualname!r} "
                              f"from module {module!r}, which is not imported; import it "
                              f"first (loading a tape imports nothing)")
        for part in qualname.split("."):
            obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
        if not isinstance(obj, self.P.Primitive):
            raise CorruptTape(f"fastad.load_tape: {module}.{qualname} is not a fastad primitive")
        return obj


def saved_bytes(tape):
    """The tape in the save format, as bytes (what a pickle of a Tape holds)."""
    import io
    buf = io.BytesIO()
    save_tape(tape, buf)
    return buf.getvalue()


def _load_saved(data):
    """Unpickle a Tape pickled as its saved bytes: the checked load_tape path,
    so a damaged pickle meets no NumPy array or dtype unpickling (whose own
    C code does not survive every damaged state).  Primitives' modules may be
    imported here, as pickle imports what it names."""
    import io
    if not isinstance(data, bytes):
        _bad("a pickled tape holds bytes")
    return load_tape(io.BytesIO(data), _import=True)


def load_tape(path, _import=False):
    """Load a Tape written by tape.save(path).  Loading runs no code from the
    file: plain arrays (allow_pickle=False) and a JSON header, all checked
    before the tape can replay; primitives are found by name in modules
    already imported.  Damaged or hostile files raise ValueError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, EOFError, KeyError) as exc:
        raise CorruptTape(f"fastad.load_tape: cannot read {path!r} as a saved tape ({exc})") \
            from None
    except ValueError as exc:
        raise CorruptTape(f"fastad.load_tape: {path!r} is not a saved tape ({exc})") from None
    except Exception as exc:       # zipfile.BadZipFile, zlib.error, ...
        raise CorruptTape(f"fastad.load_tape: {path!r} is damaged ({type(exc).__name__}: "
                          f"{exc})") from None
    need = {"header": np.uint8, "op": np.uint8, "val": np.float64, "a0": np.int32,
            "a1": np.int32, "p0": np.float64, "p1": np.float64, "out": np.int64}
    for k, dt in need.items():
        a = arrays.get(k)
        if a is None or a.dtype != dt or (a.ndim != 1 and k != "out"):
            _bad(f"array {k!r} is missing or has the wrong type")
    raw = arrays["header"]
    if raw.size > MAX_HEADER:
        _bad("the header is too large")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        _bad("the header is not JSON")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _bad("not a fastad tape file")
    if header.get("version") != VERSION:
        _bad(f"format version {header.get('version')!r} (this fastad reads {VERSION})")
    n = arrays["op"].shape[0]
    if any(arrays[k].shape != (n,) for k in ("val", "a0", "a1", "p0", "p1")):
        _bad("the node arrays have different lengths")
    node = np.empty(n, dtype=NODE_DTYPE)
    for k in ("a0", "a1", "p0", "p1"):
        node[k] = arrays[k]
    d = _Decoder(arrays, _import)
    inputs = d.dec(header.get("inputs"))
    if isinstance(inputs, list):
        inputs = [tuple(e) if isinstance(e, list) else e for e in inputs]
    blocks = header.get("blocks")
    if not isinstance(blocks, list):
        _bad("blocks must be a list")
    for b in blocks:
        d.blocks.append(d.dec(b))
    blocks = d.blocks
    op = _op_codes(header.get("ops"), arrays["op"])
    for b in blocks:            # an element-wise block's op code, by its name
        if isinstance(b, B.Elementwise) and isinstance(getattr(b, "name", None), str):
            if b.name not in B.OP_CODE:
                _bad(f"an element-wise block names op {b.name!r}, which this fastad lacks")
            b.op = B.OP_CODE[b.name]
    return _rebuild(op, node, arrays["val"], header.get("n_inputs"), inputs,
                    d.dec(header.get("in_shape")), arrays["out"], blocks,
                    header.get("value_read"), _tree_from_json(header.get("in_tree"), _import),
                    _tree_from_json(header.get("out_tree"), _import))


def _op_codes(names, op):
    """The node op codes in this fastad's table, from the saved table's names
    (files written before the names were saved use the codes as they are)."""
    if names is None:
        return op
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or len(names) > 256:
        _bad("the op table names must be a list of at most 256 strings")
    missing = [n for n in names if n not in B.OP_CODE]
    table = np.array([B.OP_CODE.get(n, 255) for n in names] + [255] * (256 - len(names)),
                     dtype=np.uint8)
    mapped = table[op]
    if missing and (mapped == 255).any():
        bad = sorted({names[c] for c in np.unique(op) if c < len(names) and names[c] in missing})
        _bad(f"the tape uses ops this fastad does not have: {bad}")
    if len(names) < 256 and (op >= len(names)).any():
        _bad("an op code lies outside the saved op table")
    return mapped


# ---------------------------------------------------------------- pytree structures
# A Tree (fastad._pytree) as JSON: nodes "*" (a leaf), null (None), or
# {"k": kind, "c": [children]} with the dict keys (str or int) or the
# namedtuple's [module, qualname]; leaf shapes (null: a number) and dtypes.

def _tree_to_json(tree, what):
    if tree is None:
        return None

    def node(n):
        if n == "*" or n is None:
            return n
        kind, aux, children = n
        d = {"k": kind, "c": [node(c) for c in children]}
        if kind == "dict":
            if not all(type(k) in (str, int) for k in aux):
                raise TypeError(f"fastad: tape.save cannot store {what}: its dict keys "
                                f"must be strings or ints; pickle the tape instead")
            d["keys"] = list(aux)
        elif kind == "namedtuple":
            d["type"] = [aux.__module__, aux.__qualname__]
        return d
    return {"node": node(tree.node),
            "shapes": [None if s is None else [int(n) for n in s] for s in tree.shapes],
            "dtypes": [None if t is None else np.dtype(t).str for t in tree.dtypes]}


def _tree_from_json(d, allow_import=False):
    """The Tree a header describes; namedtuple types are found among modules
    already imported (imported only for a pickle, which is trusted)."""
    if d is None:
        return None
    from fastad._pytree import Tree
    depth = [0]

    def node(n):
        if n == "*" or n is None:
            return n
        depth[0] += 1
        if depth[0] > 64 or not isinstance(n, dict) or not isinstance(n.get("c"), list):
            _bad("bad pytree structure")
        kind, children = n.get("k"), tuple(node(c) for c in n["c"])
        depth[0] -= 1
        if kind in ("tuple", "list"):
            return (kind, None, children)
        if kind == "dict":
            keys = n.get("keys")
            if not (isinstance(keys, list) and len(keys) == len(children)
                    and all(type(k) in (str, int) for k in keys)):
                _bad("bad dict keys in a pytree structure")
            return (kind, tuple(keys), children)
        if kind == "namedtuple":
            ref = n.get("type")
            if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(r, str) for r in ref)):
                _bad("bad namedtuple reference")
            mod = sys.modules.get(ref[0])
            if mod is None and allow_import:
                import importlib
                mod = importlib.import_module(ref[0])
            typ = mod
            for part in ref[1].split("."):
                typ = vars(typ).get(part) if typ is not None and hasattr(typ, "__dict__") else None
            if not (isinstance(typ, type) and issubclass(typ, tuple) and hasattr(typ, "_fields")
                    and len(typ._fields) == len(children)):
                raise CorruptTape(f"fastad.load_tape: the tape's structure names the namedtuple "
                                  f"{'.'.join(ref)}, which is not found among imported modules")
            return (kind, typ, children)
        _bad("bad pytree node kind")
    if not isinstance(d, dict) or not isinstance(d.get("shapes"), list) or \
            not isinstance(d.get("dtypes"), list) or len(d["shapes"]) != len(d["dtypes"]):
        _bad("bad pytree structure")
    shapes = []
    for s in d["shapes"]:
        if s is not None and not (isinstance(s, list) and len(s) <= 32 and
                                  all(type(n) is int and 0 <= n < 2 ** 40 for n in s)):
            _bad("bad leaf shape in a pytree structure")
        shapes.append(None if s is None else tuple(s))
    dtypes = []
    for t in d["dtypes"]:
        if t is not None and t not in ("<f2", "<f4", "<f8"):
            _bad("bad leaf dtype in a pytree structure")
        dtypes.append(None if t is None else np.dtype(t))
    tree = Tree(node(d["node"]), shapes, dtypes)
    if tree.n_leaves != _count_leaves(tree.node):
        _bad("the pytree structure and its leaves disagree")
    return tree


def _count_leaves(n):
    if n == "*":
        return 1
    if n is None:
        return 0
    return sum(_count_leaves(c) for c in n[2])


provide_io(load_saved=_load_saved, saved_bytes=saved_bytes, save_tape=save_tape,
           check_parts=check_parts, check_trees=check_trees, CorruptTape=CorruptTape)
