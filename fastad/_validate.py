"""Validation of everything a Tape is rebuilt from (unpickling, fad.load_tape).

The sweeps run over raw memory with no bounds checks, so a damaged or
hostile file must be refused here, before any sweep can run: op codes,
argument slots (each an earlier slot), n_inputs, output slots, and the
block records (their slot ranges and every tape slot they read).
`check_parts` is the one gate; fastad._tape._rebuild calls it.
"""
import math

import numpy as np

from fastad import _blocks as B
from fastad._kernels import OP_FLAGS, OP_NAMES

NODE_DTYPE = np.dtype([("p0", "<f8"), ("p1", "<f8"), ("a0", "<i4"), ("a1", "<i4")])
OP = {name: i for i, name in enumerate(OP_NAMES)}
N_OPS = len(OP_NAMES)
_BINARY, _UNARY = 0x01, 0x02
_FLAGS = np.array(OP_FLAGS, dtype=np.int64)
MAX_NODES = 2**31 - 1


class CorruptTape(ValueError):
    """Tape data (a pickle or a saved file) that fastad refuses to load."""


def _bad(msg):
    raise CorruptTape(f"fastad: corrupt or invalid Tape data: {msg}")


def _int(v, what, lo=0, hi=MAX_NODES):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        _bad(f"{what} must be an integer, got {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        _bad(f"{what} = {v} is outside [{lo}, {hi}]")
    return v


def _shape(s, what, allow_none=False):
    if s is None and allow_none:
        return None
    if not isinstance(s, tuple):
        _bad(f"{what} must be a tuple, got {type(s).__name__}")
    if len(s) > 32:
        _bad(f"{what} has {len(s)} dimensions")
    out = tuple(_int(d, f"{what} entry") for d in s)
    if math.prod(out) > MAX_NODES:
        _bad(f"{what} {out} is too large")
    return out


def _buffer(b, dtype, what):
    """bytes (a pickle) or a 1-D array (a saved file) as a 1-D array of dtype."""
    if isinstance(b, (bytes, bytearray)):
        if len(b) % dtype.itemsize:
            _bad(f"sizes disagree (the {what} take {len(b)} bytes, not a multiple "
                 f"of {dtype.itemsize})")
        return np.frombuffer(b, dtype=dtype)
    if not isinstance(b, np.ndarray) or b.dtype != dtype or b.ndim != 1:
        _bad(f"the {what} must be bytes or a 1-D array of {dtype}")
    return b


def check_nodes(op, node, val, n_inputs):
    """(op, node, val) as arrays, checked: op codes known; inputs first;
    every argument slot an earlier slot (a constant's: itself)."""
    op = _buffer(op, np.dtype(np.uint8), "op codes")
    node = _buffer(node, NODE_DTYPE, "nodes")
    val = _buffer(val, np.dtype("<f8"), "values")
    n = op.shape[0]
    if node.shape != (n,) or val.shape != (n,):
        _bad(f"sizes disagree ({n} op codes, {node.shape[0]} nodes, {val.shape[0]} values)")
    n_inputs = _int(n_inputs, "n_inputs", 0, n)
    if n and int(op.max()) >= N_OPS:
        i = int(np.argmax(op >= N_OPS))
        _bad(f"slot {i} has unknown op code {int(op[i])}")
    is_input = op == OP["input"]
    if not is_input[:n_inputs].all():
        _bad(f"slot {int(np.argmin(is_input[:n_inputs]))} is one of the {n_inputs} "
             f"inputs but its op is {OP_NAMES[op[np.argmin(is_input[:n_inputs])]]}")
    if is_input[n_inputs:].any():
        _bad(f"slot {n_inputs + int(np.argmax(is_input[n_inputs:]))} is an input "
             f"after the first {n_inputs}")
    i = np.arange(n)
    a0, a1 = node["a0"].astype(np.int64), node["a1"].astype(np.int64)
    fl = _FLAGS[op]
    binary = (fl & _BINARY) != 0
    unary = (fl & _UNARY) != 0
    const = op == OP["const"]
    block = op == OP["block"]
    bad = np.zeros(n, dtype=bool)
    bad |= (binary | unary) & ((a0 < 0) | (a0 >= i))
    bad |= binary & ((a1 < 0) | (a1 >= i))
    bad |= unary & (a1 != -1)
    bad |= const & ((a0 != i) | (a1 != -1))
    bad |= ~(binary | unary | const | block | is_input)
    bad[:n_inputs] = False
    if bad.any():
        j = int(np.argmax(bad))
        _bad(f"slot {j} ({OP_NAMES[op[j]]}) has argument slots ({int(a0[j])}, "
             f"{int(a1[j])}); each must be an earlier slot")
    # what the recorder leaves unwritten, made definite (no sweep reads it)
    node = node.copy()
    node["a0"][is_input | block] = i[is_input | block]
    node["a1"][is_input | block] = -1
    return op, node, np.ascontiguousarray(val, dtype=np.float64), n_inputs


def check_parts(op, node, val, n_inputs, inputs, in_shape, out_slots, blocks):
    """All parts of a Tape, checked and normalized; raises CorruptTape."""
    op, node, val, n_inputs = check_nodes(op, node, val, n_inputs)
    n = op.shape[0]
    if not isinstance(inputs, list):
        _bad(f"inputs must be a list, got {type(inputs).__name__}")
    checked, first_free = [], 0
    for entry in inputs:
        if not (isinstance(entry, tuple) and len(entry) == 3):
            _bad("each input record must be (argnum, shape, first slot)")
        argnum = _int(entry[0], "argnum", 0, 1 << 20)
        shape = _shape(entry[1], "input shape", allow_none=True)
        first = _int(entry[2], "input first slot", 0, n)
        size = 1 if shape is None else math.prod(shape)
        if first != first_free or first + size > n_inputs:
            _bad(f"input record {entry!r} does not continue the inputs at slot {first_free}")
        first_free = first + size
        checked.append((argnum, shape, first))
    if first_free != n_inputs:
        _bad(f"the input records cover {first_free} slots but n_inputs is {n_inputs}")
    in_shape = _shape(in_shape, "in_shape", allow_none=True)
    if in_shape is None:
        if n_inputs != 1 and len(checked) <= 1:
            _bad(f"a tape recorded at a float has 1 input, not {n_inputs}")
    elif math.prod(in_shape) != n_inputs:
        _bad(f"in_shape {in_shape} does not hold the {n_inputs} inputs")
    if out_slots is not None:
        if not isinstance(out_slots, np.ndarray) or out_slots.dtype.kind not in "iu":
            _bad("the output slots must be an integer array")
        _shape(out_slots.shape, "output shape")
        out_slots = np.array(out_slots, dtype=np.intp)
        if out_slots.size and (out_slots.min() < 0 or out_slots.max() >= n):
            _bad(f"an output slot is outside the tape's {n} slots")
    blocks = check_blocks(blocks if blocks is not None else [], op, node, n_inputs)
    return op, node, val, n_inputs, checked, in_shape, out_slots, blocks


# ---------------------------------------------------------------- blocks

def _block_classes():
    """fastad's block classes: every subclass of Block defined in a fastad
    module (those of other modules get the generic checks of check_blocks:
    slot range, shape, operands; the ones _check_kind knows get theirs too)."""
    from fastad import primitives as P
    found, todo = set(), [B.Block]
    while todo:
        for c in todo.pop().__subclasses__():
            if c not in found:
                todo.append(c)
                if c.__module__.startswith("fastad.") and c is not B.Check:
                    found.add(c)
    return P, found


def check_operand(o, below, what):
    """An Operand reading slots below `below` (or a float64 constant), made consistent."""
    if type(o) is not B.Operand:
        _bad(f"{what} is a {type(o).__name__}, not an operand")
    idx = getattr(o, "idx", None)
    if idx is None:
        c = getattr(o, "const", None)
        if not (isinstance(c, np.ndarray) and c.dtype == np.float64):
            _bad(f"{what} is neither tape slots nor a float64 constant")
        _shape(c.shape, f"{what} shape")
        o.const, o.shape, o.flat, o.start, o.unique, o.src = c, c.shape, None, -1, True, None
        return o
    if not isinstance(idx, np.ndarray) or idx.dtype.kind not in "iu":
        _bad(f"{what} slots must be an integer array")
    shape = _shape(idx.shape, f"{what} shape")
    flat = np.array(idx, dtype=np.intp).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= below):
        _bad(f"{what} reads a slot outside 0 .. {below - 1} (a block reads earlier slots)")
    start = getattr(o, "start", -1)
    if not isinstance(start, (int, np.integer)) or start < 0 or \
            not np.array_equal(flat, np.arange(start, start + flat.size)):
        start = -1
    o.idx, o.flat, o.shape, o.const = flat.reshape(shape), flat, shape, None
    o.start = int(start)
    o.unique = True if start >= 0 else B._all_distinct(flat)
    return o


def _operands_in(v, depth=0):
    """Every Operand in an attribute value (through tuples, lists, dicts)."""
    if depth > 8:
        _bad("block attributes nest too deeply")
    if type(v) is B.Operand:
        yield v
    elif isinstance(v, (tuple, list)):
        for e in v:
            yield from _operands_in(e, depth + 1)
    elif isinstance(v, dict):
        for e in v.values():
            yield from _operands_in(e, depth + 1)


def check_blocks(blocks, op, node, n_inputs):
    """Blocks in slot order over exactly the BLOCK slots, each reading earlier slots."""
    P, classes = _block_classes()
    n = op.shape[0]
    if not isinstance(blocks, list):
        _bad(f"blocks must be a list, got {type(blocks).__name__}")
    covered = np.zeros(n, dtype=bool)
    prev_stop = 0
    for bi, blk in enumerate(blocks):
        what = f"block {bi}"
        if type(blk) not in classes:
            _bad(f"{what} is a {type(blk).__name__}, not a fastad block")
        d = getattr(blk, "__dict__", None)
        if d is None:
            _bad(f"{what} has no state")
        start = _int(d.get("start", -1), f"{what} start", 0, n)
        stop = _int(d.get("stop", -1), f"{what} stop", start, n)
        if start < prev_stop:
            _bad(f"{what} starts at slot {start}, inside the block before it")
        prev_stop = stop
        shape = _shape(d.get("shape", type(blk).shape), f"{what} shape")
        blk.shape = shape
        if isinstance(blk, B.Check):
            if stop != start or shape != (0,):
                _bad(f"{what} (a check) must own no slots")
        elif math.prod(shape) != stop - start:
            _bad(f"{what} has shape {shape} but owns {stop - start} slots")
        covered[start:stop] = True
        for name in ("sealed", "overwritten"):
            if name in d and not isinstance(d[name], bool):
                _bad(f"{what} {name} must be a bool")
        if d.get("overwritten"):
            _bad(f"{what} was written over (a one-sweep tape cannot be saved)")
        for j, o in enumerate(_operands_in(list(d.values()))):
            check_operand(o, start, f"{what} operand {j}")
        _check_kind(blk, d, start, what, P)
    is_block = op == OP["block"]
    if not np.array_equal(covered, is_block):
        j = int(np.argmax(covered != is_block))
        _bad(f"slot {j} is {'not ' if is_block[j] else ''}a block slot, but "
             f"{'is' if covered[j] else 'is not'} owned by a block")
    _check_handoff(blocks, op, node, n_inputs, P)
    return blocks


def _check_handoff(blocks, op, node, n_inputs, P):
    """The cotangent hand-off (fastad._recorder.Cotangents) trusts two marks:
    a sealed block is read only whole, by block operands linked to it (src).
    Keep a link only where it names that block (or an input slab), and
    unseal any block read otherwise: the adjoint buffer is always right."""
    from fastad._recorder import InputSlab
    n = op.shape[0]
    owner = np.full(n, -1, dtype=np.intp)
    for bi, blk in enumerate(blocks):
        owner[blk.start:blk.stop] = bi
        if not isinstance(blk.__dict__.get("sealed", False), bool) or \
                not getattr(type(blk), "handoff", False):
            blk.sealed = False
    fl = _FLAGS[op]
    scalar = np.nonzero(((fl & (_BINARY | _UNARY)) != 0) & (np.arange(n) >= n_inputs))[0]
    reads = [node["a0"][scalar], node["a1"][scalar][node["a1"][scalar] >= 0]]
    unseal = set(np.unique(owner[np.concatenate(reads).astype(np.intp)]).tolist()) \
        if n else set()
    for blk in blocks:
        if type(blk) is P.ScalarPrimitiveBlock:
            unseal.update(int(owner[s]) for s in blk.slots if s is not None)
        handoff = getattr(type(blk), "handoff", False)
        for o in _operands_in(list(vars(blk).values())):
            src = getattr(o, "src", None)
            o.src = None
            if o.idx is None or o.flat.size == 0:
                continue
            if handoff and o.start >= 0:
                size = o.flat.size
                if type(src) is InputSlab and isinstance(src.start, int) and \
                        src.start == o.start and src.stop == o.start + size <= n_inputs:
                    src.sealed = True
                    o.src = src
                    continue
                b = int(owner[o.start])
                if b >= 0 and src is blocks[b] and src.start == o.start and \
                        src.stop == o.start + size:
                    o.src = src
                    continue
            unseal.update(np.unique(owner[o.flat]).tolist())
    unseal.discard(-1)
    for b in unseal:
        blocks[b].sealed = False


def _need(d, names, what):
    for name in names:
        if name not in d:
            _bad(f"{what} has no {name!r}")


def _check_kind(blk, d, start, what, P):
    """The fields of each kind of block that the sweeps trust."""
    t = type(blk)
    if t is B.Elementwise:
        _need(d, ("name", "x", "y", "op", "fixed"), what)
        if d["name"] not in B.OP_CODE or OP_FLAGS[B.OP_CODE[d["name"]]] & (_BINARY | _UNARY) == 0:
            _bad(f"{what} names no element-wise op: {d['name']!r}")
        if type(d["x"]) is not B.Operand or not (d["y"] is None or type(d["y"]) is B.Operand):
            _bad(f"{what} operands are not operands")
        shapes = [o.shape for o in blk.operands()]
        if np.broadcast_shapes(*shapes) != blk.shape:
            _bad(f"{what} shape {blk.shape} is not its operands' {shapes} broadcast")
        B.Elementwise.__init__(blk, d["name"], d["x"], d["y"], blk.shape)   # op, fixed anew
    elif t is B.Matmul:
        _need(d, ("a", "b"), what)
        a, b = d["a"], d["b"]
        if type(a) is not B.Operand or type(b) is not B.Operand or \
                not 1 <= len(a.shape) <= 2 or not 1 <= len(b.shape) <= 2:
            _bad(f"{what} needs 1-D or 2-D operands")
        sa, sb = B._as2d(a.shape, True), B._as2d(b.shape, False)
        want = tuple(s for s, keep in ((sa[0], len(a.shape) == 2), (sb[1], len(b.shape) == 2))
                     if keep)
        if sa[1] != sb[0] or want != blk.shape:
            _bad(f"{what} multiplies {a.shape} by {b.shape} into {blk.shape}")
        B.Matmul.__init__(blk, a, b, blk.shape)
    elif t is B.Sum:
        _need(d, ("x", "axis", "keepdims"), what)
        x, axis = d["x"], d["axis"]
        if type(x) is not B.Operand or not isinstance(d["keepdims"], bool):
            _bad(f"{what} is malformed")
        nd = len(x.shape)
        if axis is not None:
            if not isinstance(axis, tuple):
                _bad(f"{what} axis must be a tuple or None")
            axis = tuple(_int(a, f"{what} axis", 0, max(nd - 1, 0)) for a in axis)
            if len(set(axis)) != len(axis) or (nd == 0 and axis):
                _bad(f"{what} axis {axis} is not valid for shape {x.shape}")
        want = np.sum(np.broadcast_to(0.0, x.shape), axis=axis, keepdims=d["keepdims"]).shape
        if want != blk.shape:
            _bad(f"{what} sums {x.shape} over {axis} into {blk.shape}")
        blk.axis = axis
    elif t is B.Compare:
        _need(d, ("kind", "x", "y", "outcome"), what)
        if d["kind"] not in B.CMP_UFUNCS or not isinstance(d["outcome"], np.ndarray):
            _bad(f"{what} is malformed")
    elif t is B.Selection:
        _need(d, ("x", "axis", "chosen", "name"), what)
        if d["name"] not in ("max", "min") or not isinstance(d["chosen"], np.ndarray):
            _bad(f"{what} is malformed")
        if d["axis"] is not None:
            _int(d["axis"], f"{what} axis", 0, max(len(d["x"].shape) - 1, 0))
    elif t is P.PrimitiveBlock:
        _need(d, ("prim", "ops", "kwargs"), what)
        if not isinstance(d["prim"], P.Primitive) or not isinstance(d["kwargs"], dict) or \
                not isinstance(d["ops"], (list, tuple)) or \
                any(type(o) is not B.Operand for o in d["ops"]):
            _bad(f"{what} (a primitive call) is malformed")
        blk.scalar = blk.shape == () and all(o.shape == () for o in d["ops"])
    elif t is P.ScalarPrimitiveBlock:
        _need(d, ("prim", "slots", "consts", "kwargs"), what)
        slots, consts = d["slots"], d["consts"]
        if not isinstance(d["prim"], P.Primitive) or not isinstance(d["kwargs"], dict) or \
                not isinstance(slots, list) or not isinstance(consts, list) or \
                len(slots) != len(consts) or blk.shape != ():
            _bad(f"{what} (a primitive call) is malformed")
        blk.slots = [None if s is None else _int(s, f"{what} argument slot", 0, start - 1)
                     for s in slots]


# ---------------------------------------------------------------- sparse patterns

def _index_vector(a, what, who):
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{who}: {what} must be a 1-D integer array, got "
                         f"{a.dtype} of shape {a.shape}")
    return a


def check_sparse(pattern, who):
    """Refuse a scipy.sparse matrix whose index arrays are inconsistent, before
    SciPy's own compiled conversions (which trust them) touch it."""
    fmt = getattr(pattern, "format", None)
    shape = getattr(pattern, "shape", None)
    if fmt is None or not isinstance(shape, tuple) or len(shape) != 2:
        return
    m, n = (int(d) for d in shape)
    if fmt in ("csr", "csc", "bsr"):
        if fmt == "bsr":
            r, c = pattern.blocksize
            if r <= 0 or c <= 0 or m % r or n % c:
                raise ValueError(f"{who}: BSR blocksize {(r, c)} does not divide shape {shape}")
            m, n = m // r, n // c
        major, minor = (m, n) if fmt != "csc" else (n, m)
        ip = _index_vector(pattern.indptr, "indptr", who)
        ix = _index_vector(pattern.indices, "indices", who)
        if ip.shape[0] != major + 1:
            raise ValueError(f"{who}: indptr has length {ip.shape[0]}, expected "
                             f"{major + 1} for a {fmt.upper()} matrix of shape {shape}")
        if ip[0] != 0 or (ip[1:] < ip[:-1]).any():
            raise ValueError(f"{who}: indptr must start at 0 and never decrease")
        nnz = int(ip[-1])
        data = np.asarray(pattern.data)
        if nnz > ix.shape[0] or nnz > data.shape[0]:
            raise ValueError(f"{who}: indptr[-1] = {nnz} but the matrix has "
                             f"{ix.shape[0]} indices and {data.shape[0]} values")
        if nnz and (ix[:nnz].min() < 0 or ix[:nnz].max() >= minor):
            raise ValueError(f"{who}: an entry of indices lies outside 0 .. {minor - 1}")
        if fmt == "bsr" and data.shape[1:] != tuple(pattern.blocksize):
            raise ValueError(f"{who}: BSR data of shape {data.shape} do not match blocksize "
                             f"{pattern.blocksize}")
    elif fmt == "coo":
        coords = getattr(pattern, "coords", None) or (pattern.row, pattern.col)
        if len(coords) != 2:
            raise ValueError(f"{who}: a pattern must be 2-D")
        row = _index_vector(coords[0], "row", who)
        col = _index_vector(coords[1], "col", who)
        if row.shape != col.shape or row.shape[0] != np.asarray(pattern.data).shape[0]:
            raise ValueError(f"{who}: COO row, col and data have different lengths")
        if row.size and (row.min() < 0 or row.max() >= m or col.min() < 0 or col.max() >= n):
            raise ValueError(f"{who}: a COO entry lies outside the shape {shape}")


def check_trees(in_tree, out_tree, n_inputs, out_slots):
    """A tape's pytree structures (fastad._pytree.Tree or None) must describe
    as many numbers as it has inputs and outputs."""
    from fastad._pytree import Tree
    for tree, what, size in ((in_tree, "input structure", n_inputs),
                             (out_tree, "output structure", int(np.size(out_slots)))):
        if tree is None:
            continue
        if type(tree) is not Tree:
            _bad(f"the {what} must be a pytree structure, got {type(tree).__name__}")
        if tree.size != size:
            _bad(f"the {what} describes {tree.size} numbers but the tape has {size}")
