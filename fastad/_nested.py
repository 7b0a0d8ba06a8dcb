"""Nested transforms: a transform called while another one records.

`fad.grad(f)(x)` inside a function being differentiated (or recorded) does
not make a tape of its own.  It records f on the tape in progress, after
fresh copies of its arguments, and then records its own reverse sweep over
the nodes f added, as ordinary operations on that same tape (as PyTorch's
create_graph does).  The result is traced: the outer transform
differentiates it like anything else, so transforms nest to any order, and
a recorded nested tape replays with its branch checks.

Perturbation confusion cannot happen: the inner sweep starts at the inner
arguments' fresh copies and visits only the nodes recorded after them, so a
value of the outer computation that f closes over is a constant to it, and
the outer sweep still sees every path through it.

The sweep's partials are the op table's (csrc/fastad_ops.h), evaluated on
traced values so that they can be differentiated again; an array block
states its pullback as traced NumPy code (`traced_rule` below); a custom
primitive's vjp rule is run on traced values.  jvp is the transpose of that
recorded pullback (linear in its seed), so blocks need no second rule.
"""
import bisect
import math
import re

import numpy as np

from fastad import _blocks as B
from fastad import _tape
from fastad.arrays import sum as _asum
from fastad.checkpointing import ScanBlock
from fastad.primitives import PrimitiveBlock, _traced as _traced_results
from fastad.products import Einsum
from fastad.reductions import Cumprod, Cumsum, Prod
from fastad._kernels import FLAG, OP_FLAGS, OP_NAMES, OP_PARTIAL_SOURCES
from fastad._pytree import LEAF, _unflatten, flatten, input_leaf_ok
from fastad._recorder import slot_range
from fastad._var import (Array, Var, current_tape, is_traced, make_array, output_slots,
                         value_of, var_at)
from fastad import _var
from fastad.errors import TapeError

_BLOCK = OP_NAMES.index("block")
_ZD, _BIN, _HAS_C = FLAG["ZD"], FLAG["BINARY"], FLAG["HAS_C"]


# ------------------------------------------------- the op table's partials, traced

def _values(a):
    return value_of(a) if type(a) in (Var, Array) else a


def _pw(fn):
    """A piecewise-constant helper of the table: computed on values (its own
    derivative is zero, so it never needs a node)."""
    def on_values(*args):
        r = fn(*[np.asarray(_values(a), dtype=np.float64) for a in args])
        return float(r) if np.ndim(r) == 0 else r
    return on_values


def _max_d(x, y):
    return np.where(x > y, 1.0, np.where(x < y, 0.0, 0.5))


def _fmax_d(x, y):
    d = np.where(x > y, 1.0, np.where(x < y, 0.0, 0.5))
    return np.where(np.isnan(x) & ~np.isnan(y), 0.0, np.where(np.isnan(y) & ~np.isnan(x), 1.0, d))


def _sign(x):
    return np.where(np.isnan(x), x, np.sign(x))


def _copysign_d(x, y):
    return np.where(np.signbit(y), -_sign(x), _sign(x))


def _fmod_q(a, b):
    return np.rint((a - np.fmod(a, b)) / b)


def _sinc_d(x, order):
    # sinc'(x) = (cos(pi x) - sinc(x)) / x, and -pi^2 x / 3 near 0 (right
    # to second order there)
    small = abs(_values(x)) < 1e-4
    if np.ndim(small) == 0:
        if small:
            return -(math.pi ** 2 / 3.0) * x
        return (_var.cos(math.pi * x) - _var.sinc(x)) / x
    safe = np.where(small, 1.0, x)
    return np.where(small, -(math.pi ** 2 / 3.0) * x,
                    (np.cos(math.pi * safe) - np.sinc(safe)) / safe)


def _log_ndtr_d(x, v, order):
    return _var.exp(-0.5 * x * x - v) / math.sqrt(2.0 * math.pi)


def _polygamma(n, x):
    if n == 0:
        return _var.digamma(x)
    raise NotImplementedError(
        "fastad: differentiating digamma's derivative needs trigamma, which fastad "
        "does not have (a third derivative of gammaln, a second of digamma)")


def _where(cond, a, b):
    if np.ndim(cond) == 0:
        return a if cond else b
    return np.where(cond, a, b)


_NS = {
    "cos": _var.cos, "sin": _var.sin, "cosh": _var.cosh, "sinh": _var.sinh,
    "exp": _var.exp, "log": _var.log, "log1p": _var.log1p, "sqrt": _var.sqrt,
    "pow": lambda a, b: a ** b, "fad_sq": lambda t: t * t,
    "fad_sigmoid": _var.sigmoid,
    "fad_sigmoid_d": lambda x: _var.sigmoid(x) * _var.sigmoid(-x),
    "fad_max_d": _pw(_max_d), "fad_fmax_d": _pw(_fmax_d), "fad_sign": _pw(_sign),
    "fad_copysign_d": _pw(_copysign_d), "fad_floordiv": _pw(np.floor_divide),
    "fad_fmod_q": _pw(_fmod_q), "fad_sinc_d": _sinc_d, "fad_log_ndtr_d": _log_ndtr_d,
    "fad_polygamma": _polygamma, "_where": _where,
    "FAD_LN2": math.log(2.0), "FAD_LN10": math.log(10.0), "FAD_PI": math.pi,
    "FAD_2_SQRTPI": 2.0 / math.sqrt(math.pi), "FAD_SQRT_2PI": math.sqrt(2.0 * math.pi),
    "FAD_SQRTPI_2": math.sqrt(math.pi) / 2.0,
}


def _split_top(s, ch):
    """Index of the first `ch` outside parentheses, or -1."""
    depth = 0
    for i, c in enumerate(s):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == ch and depth == 0:
            return i
    return -1


def _wrapped(s):
    """s is one parenthesized group."""
    if not (s.startswith("(") and s.endswith(")")):
        return False
    depth = 0
    for i, c in enumerate(s):
        depth += (c == "(") - (c == ")")
        if depth == 0 and i < len(s) - 1:
            return False
    return True


def _python(src, arrays):
    """A C partial of the table as a Python expression (ternaries become
    conditionals, or _where over arrays)."""
    s = src.strip()
    if _wrapped(s):
        return "(" + _python(s[1:-1], arrays) + ")"
    q = _split_top(s, "?")
    if q < 0:
        if "?" in s:
            raise ValueError(f"fastad: cannot translate the partial {src!r}")
        return s
    rest = s[q + 1:]
    depth = nest = 0        # the ':' that closes this '?' (nested ternaries inside)
    for i, c in enumerate(rest):
        depth += (c == "(") - (c == ")")
        if depth == 0 and c == "?":
            nest += 1
        elif depth == 0 and c == ":":
            if nest == 0:
                break
            nest -= 1
    cond, a, b = (_python(p, arrays) for p in (s[:q], rest[:i], rest[i + 1:]))
    if arrays:
        return f"_where({cond}, {a}, {b})"
    return f"(({a}) if ({cond}) else ({b}))"


_NUMBER = re.compile(r"^-?\d+(\.\d*)?$")


def _partial_fn(src, arrays):
    """(constant, None) for a constant partial, else (None, fn(x, y, v, c))."""
    s = src.strip()
    if _NUMBER.match(s):
        return float(s), None
    code = compile(f"lambda x, y, v, c: {_python(s, arrays)}", f"<partial {src}>", "eval")
    return None, eval(code, dict(_NS))


def _op_partials(arrays):
    table = []
    for op, (d0, d1) in enumerate(OP_PARTIAL_SOURCES):
        table.append(tuple(_partial_fn(d, arrays) for d in (d0, d1)))
    return table


_SCALAR = _op_partials(False)


def _kinds():
    """Per op and operand, what its partial is, for _var.traced_sweep."""
    kind = np.full(2 * len(OP_PARTIAL_SOURCES), 8, dtype=np.int8)
    const = np.zeros(kind.size)
    for op, srcs in enumerate(OP_PARTIAL_SOURCES):
        for j, src in enumerate(srcs):
            s, at = src.strip(), 2 * op + j
            if s == "c":
                kind[at] = 4
            elif s in ("x", "y", "v"):
                kind[at] = 5 + "xyv".index(s)
            elif _NUMBER.match(s):
                d = float(s)
                kind[at] = 0 if d == 0.0 else 1 if d == 1.0 else 2 if d == -1.0 else 3
                const[at] = d
    return kind, const


_KIND, _CONST = _kinds()
_ARRAY = _op_partials(True)


def op_partial(op, i, x, y, v, c=0.0, arrays=False):
    """Partial i of op at traced (or plain) x, y, v, c: a number or traced."""
    const, fn = (_ARRAY if arrays else _SCALAR)[op][i]
    return const if fn is None else fn(x, y, v, c)


# ------------------------------------------------------------- the traced sweep

def _times(g, d):
    """g * d with the pass-throughs that need no node."""
    if type(d) is float:
        if d == 1.0:
            return g
        if d == -1.0:
            return -g
        if d == 0.0:
            return None
    return g * d


class _Sweep:
    """Records, on `tape`, the reverse sweep over its slots [lo, hi): per
    slot its adjoint's slot (-1: zero).  See pullback."""

    def __init__(self, tape, lo):
        self.tape = tape
        self.lo = lo
        self.hi = tape.n_nodes
        self.adj = np.full(self.hi - lo, -1, dtype=np.intp)
        self._zero = -1
        tape.single_sweep = False          # the values the partials read must stay

    def zero(self):
        if self._zero < 0:
            self._zero = self.tape.push_const(0.0)
        return self._zero

    def _slots(self, g):
        return output_slots(self.tape, g)

    def add_value(self, flat, g, unique=False):
        """adjoint[flat] += g, a traced value or numbers of flat's size."""
        self.add_slots(flat, self._slots(g), unique)

    def add_slots(self, flat, gs, unique=False):
        """adjoint[flat] += the values at slots gs, elementwise; slots below
        lo are the outer computation's; `unique`: no slot repeats in flat."""
        gs = np.asarray(gs, dtype=np.intp).reshape(-1)
        if gs.size == 1 and flat.size > 1:
            gs = np.broadcast_to(gs, flat.shape)
        keep = flat >= self.lo
        if not keep.all():
            flat, gs = flat[keep], gs[keep]
        if flat.size == 0:
            return
        if not unique and flat.size > 1:
            uniq, inv = np.unique(flat, return_inverse=True)
        else:
            uniq = flat
        if uniq.size < flat.size:          # a slot read twice: add its parts first
            parts = [[] for _ in range(uniq.size)]
            for j, q in zip(inv.reshape(-1), gs):
                parts[j].append(int(q))
            tot = []
            for p in parts:
                acc = var_at(self.tape, p[0])
                for q in p[1:]:
                    acc = acc + var_at(self.tape, q)
                tot.append(acc.slot)
            flat, gs = uniq, np.array(tot, dtype=np.intp)
        j = flat - self.lo
        cur = self.adj[j]
        has = cur >= 0
        if has.any():
            if has.size == 1:
                s = (var_at(self.tape, int(cur[0])) + var_at(self.tape, int(gs[0]))).slot
                self.adj[j] = s
                return
            summed = make_array(self.tape, cur[has]) + make_array(self.tape, gs[has])
            gs = gs.copy()
            gs[has] = self._slots(summed)
        self.adj[j] = gs

    def seed(self, out_slots, seed_slots):
        flat = np.asarray(out_slots, dtype=np.intp).reshape(-1)
        self.add_slots(flat, seed_slots)

    def run(self):
        tape, lo = self.tape, self.lo
        blocks = tape.blocks
        bi = bisect.bisect_left([b.start for b in blocks], lo)
        own = [b for b in blocks[bi:] if b.stop > b.start]
        stops = [b.stop - 1 for b in own]

        def block(i):
            blk = own[bisect.bisect_left(stops, i)]
            self._block(blk)
            return blk.start

        def partial(op, j, x0, x1, i, c):
            return _SCALAR[op][j][1](var_at(tape, x0), var_at(tape, x1) if x1 >= 0 else None,
                                     var_at(tape, i), c)
        _var.traced_sweep(tape, lo, self.hi, self.adj, _KIND, _CONST, partial, block)

    def _scalar_primitive(self, blk, g):
        tape = self.tape
        vals = [c if s is None else var_at(tape, s) for s, c in zip(blk.slots, blk.consts)]
        cots = _vjp_rule(blk.prim, g, var_at(tape, blk.start), vals, blk.kwargs)
        for s, c in zip(blk.slots, cots):
            if s is not None and c is not None:
                self.add_value(np.array([s], dtype=np.intp), c)

    def _block(self, blk):
        span = self.adj[blk.start - self.lo:blk.stop - self.lo]
        if (span < 0).all():
            return
        tape = self.tape
        if (span < 0).any():
            span = np.where(span < 0, self.zero(), span)
        g = make_array(tape, span.reshape(blk.shape))
        if hasattr(blk, "slots"):          # a primitive on scalars (ScalarPrimitiveBlock)
            return self._scalar_primitive(blk, g)
        ops = blk.operands()
        vals = [make_array(tape, o.idx) if o.active else o.const for o in ops]
        out = make_array(tape, slot_range(blk.start, blk.stop - blk.start).reshape(blk.shape))
        rule = _rule_for(blk)
        cots = rule(blk, vals, out, g)
        for o, ct in zip(ops, cots):
            if o.active and ct is not None:
                self.add_value(o.flat, ct, o.unique)


def _pullback(tape, lo, out_slots, seed, wrt_slots):
    """Record the reverse sweep of the nodes at slots >= lo, seeded with
    `seed` (slots, a traced value or numbers, of out_slots' shape) at
    out_slots; returns the adjoints' slots at wrt_slots (-1: zero)."""
    sw = _Sweep(tape, lo)
    if np.size(out_slots) == 1 and np.size(seed) == 1:        # (a gradient's seed)
        o = int(np.reshape(out_slots, -1)[0])
        if o >= lo:
            sw.adj[o - lo] = int(np.reshape(seed, -1)[0])
    else:
        sw.seed(out_slots, seed)
    sw.run()
    # the sweep's scalar nodes read block slots (var_at): those blocks must
    # take their cotangents from the adjoint buffer, not a hand-off
    tape._read_all(tape.n_nodes)
    wrt = np.asarray(wrt_slots, dtype=np.intp)
    res = np.full(wrt.shape, -1, dtype=np.intp)
    inside = wrt >= lo
    res[inside] = sw.adj[wrt[inside] - lo]
    return res


# ---------------------------------------------------- block rules, as traced code

_RULES = {}


def traced_rule(cls):
    """Register fn(block, operand values, output, cotangent) -> cotangents
    (one per operand, None for none) as cls's pullback on traced values."""
    def register(fn):
        _RULES[cls] = fn
        return fn
    return register


def _rule_for(blk):
    for cls in type(blk).__mro__:
        fn = _RULES.get(cls)
        if fn is not None:
            return fn
    raise NotImplementedError(
        f"fastad: a nested transform differentiates through {blk.describe()}, "
        f"whose pullback has no traced form yet ({type(blk).__name__}); "
        f"use fad.hessian / fad.hvp for second derivatives through it")


def unbroadcast(g, shape):
    """Sum traced g down to `shape` (undo NumPy broadcasting)."""
    shape = tuple(shape)
    if tuple(np.shape(g)) == shape:
        return g
    while np.ndim(g) > len(shape):
        g = _sum(g, 0)
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and np.shape(g)[a] != 1)
    if axes:
        g = _sum(g, axes, keepdims=True)
    return g


def _sum(g, axis, keepdims=False):
    return _asum(g, axis=axis, keepdims=keepdims)


@traced_rule(B.Elementwise)
def _elementwise(blk, vals, out, g):
    x = vals[0]
    y = vals[1] if len(vals) > 1 else None
    c = 0.0
    res = []
    for i, o in enumerate(blk.operands()):
        if not o.active:
            res.append(None)
            continue
        d = op_partial(blk.op, i, x, y, out, c, arrays=True)
        if type(d) is float:
            t = _times(g, d)
        else:
            t = g * d
        res.append(None if t is None else unbroadcast(t, o.shape))
    return res


@traced_rule(B.Matmul)
def _matmul(blk, vals, out, g):
    A, Bm = np.reshape(vals[0], blk.sa), np.reshape(vals[1], blk.sb)
    G = np.reshape(g, (blk.sa[0], blk.sb[1]))
    ga = np.reshape(G @ np.transpose(Bm), blk.a.shape) if blk.a.active else None
    gb = np.reshape(np.transpose(A) @ G, blk.b.shape) if blk.b.active else None
    return ga, gb


@traced_rule(B.Sum)
def _sum_rule(blk, vals, out, g):
    shape = blk.x.shape
    if blk.axis is None:
        axes = tuple(range(len(shape)))
    else:
        axes = tuple(a % len(shape) for a in np.atleast_1d(blk.axis))
    if not blk.keepdims:
        kept = [1 if a in axes else n for a, n in enumerate(shape)]
        g = np.reshape(g, tuple(kept))
    return (np.broadcast_to(g, shape),)


@traced_rule(B.Check)
def _check(blk, vals, out, g):
    return [None] * len(blk.operands())


def _leading(g):
    """g with a leading axis of one seed (a vectorized rule's layout)."""
    return _var.stack([g]) if type(g) is Var else g[None]


def _letters(labels):
    return "".join(chr(ord("a") + i) if i < 26 else chr(ord("A") + i - 26) for i in labels)


# products, reductions and primitives

@traced_rule(Einsum)
def _einsum(blk, vals, out, g):
    X, Y = vals
    sx, sy, so = _letters(blk.lx), _letters(blk.ly), _letters(blk.lo)
    gx = np.einsum(f"{so},{sy}->{sx}", g, Y) if blk.x.active else None
    gy = np.einsum(f"{so},{sx}->{sy}", g, X) if blk.y.active else None
    return gx, gy

@traced_rule(Cumsum)
def _cumsum(blk, vals, out, g):
    return (np.flip(np.cumsum(np.flip(g, 0), axis=0), 0),)

@traced_rule(Prod)
def _prod(blk, vals, out, g):
    (x,) = vals
    m = blk.x.shape[0]
    if m == 0:
        return (None,)
    ones = np.ones((1,) + tuple(blk.x.shape[1:]))
    before = np.concatenate([ones, np.cumprod(x[:-1], axis=0)], axis=0) if m > 1 else ones
    rx = np.flip(x, 0)
    after = np.flip(np.concatenate([ones, np.cumprod(rx[:-1], axis=0)], axis=0), 0) \
        if m > 1 else ones
    return (np.reshape(g, (1,) + tuple(blk.shape)) * before * after,)

@traced_rule(Cumprod)
def _cumprod(blk, vals, out, g):
    # S[j] = g[j] + x[j+1] S[j+1]; xbar[j] = y[j-1] S[j] (y[-1] = 1)
    (x,) = vals
    m = blk.x.shape[0]
    if m == 0:
        return (None,)
    rows = [None] * m
    acc = g[m - 1]
    for j in range(m - 1, -1, -1):
        if j < m - 1:
            acc = g[j] + x[j + 1] * acc
        rows[j] = acc if j == 0 else out[j - 1] * acc
    return (_var.stack(rows) if np.ndim(rows[0]) == 0 else np.stack(rows),)

@traced_rule(PrimitiveBlock)
def _primitive(blk, vals, out, g):
    f = getattr(blk.prim, "recompute", None)
    if f is not None:           # fad.checkpoint(f): f recorded again, here on traced values
        kwargs = blk.kwargs
        cots = vjp(current_tape(), lambda a: f(*a, **kwargs), tuple(vals))[1](g)
        return [None if type(c) is float and c == 0.0 else c for c in cots]
    return _vjp_rule(blk.prim, g, out, vals, blk.kwargs)


@traced_rule(ScanBlock)
def _scan(blk, vals, out, g):
    # unrolled: the step's tape retraced on traced values at every step
    # (its branches re-checked); the memory a checkpointed sweep saves is
    # spent here, as a nested transform records every step
    def unrolled(cp):
        c, p = np.reshape(cp[0], (-1,)), np.reshape(cp[1], (-1,))
        for _ in range(blk.length):
            c = np.reshape(blk.step_tape(np.concatenate([c, p])), (-1,))
        return c
    _, pb = vjp(current_tape(), unrolled, tuple(vals))
    cots = pb(np.reshape(g, (-1,)))
    return [None if not o.active or type(c) is float else np.reshape(c, o.shape)
            for c, o in zip(cots, blk.operands())]


def _vjp_rule(prim, g, out, vals, kwargs):
    """A primitive's vjp rule on traced values: one cotangent (or None) per
    positional argument."""
    if prim.vjp_rule is None:
        raise NotImplementedError(
            f"fastad: primitive '{prim.name}' has no vjp rule, which a nested "
            f"transform needs to differentiate through it")
    cots = prim.vjp_rule(_leading(g) if prim.vjp_vectorized else g, out, *vals, **kwargs)
    if len(vals) == 1 and not isinstance(cots, tuple):
        cots = (cots,)
    if not isinstance(cots, (tuple, list)) or len(cots) != len(vals):
        raise ValueError(f"fastad: the vjp rule of primitive '{prim.name}' must return "
                         f"one cotangent per positional argument ({len(vals)})")
    if prim.vjp_vectorized:
        cots = [None if c is None else c[0] for c in cots]
    return _traced_results(prim, "vjp", cots, [np.shape(v) for v in vals])


# ----------------------------------------------------------- the nested transforms

def recording():
    """The tape of this thread's recording in progress, or None."""
    return current_tape()


def _leaf_ok(o):
    return type(o) is Var or type(o) is Array or input_leaf_ok(o)


def fresh(tape, x, who="argument"):
    """x's leaves as fresh nodes on tape (copies of traced leaves, constants
    for numbers): (the traced x', its flat slots, rebuild(slots) -> x's
    structure of traced values)."""
    # the nested sweep reads the values of f's temporaries: no block may
    # write over them (see Tape.overwrite_block)
    tape.single_sweep = False
    if type(x) is Var or type(x) is float:          # the common scalar case, lean
        if type(x) is Var:
            _own(tape, x, who)
            s = int(tape.push_copies(np.array([x.slot], dtype=np.intp))[0])
        else:
            s = tape.push_const(x)
        return var_at(tape, s), np.array([s], dtype=np.intp), _scalar_rebuild(tape)
    leaves, node = flatten(x, f"fastad: {who}", atoms=Var, leaf_ok=_leaf_ok)
    new, parts, shapes = [], [], []
    for v in leaves:
        if type(v) is Var or type(v) is Array:
            _own(tape, v, who)
            src = output_slots(tape, v)
            slots = tape.push_copies(src)
            shape = None if type(v) is Var else src.shape
        else:
            arr = np.asarray(v, dtype=np.float64)
            slots = tape.push_consts(arr)
            shape = None if not isinstance(v, (np.ndarray, list, tuple)) else arr.shape
        shapes.append(shape)
        parts.append(np.asarray(slots, dtype=np.intp).reshape(-1))
        new.append(make_array(tape, np.asarray(slots, dtype=np.intp).reshape(shape or ())))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
    x_new = new[0] if node == LEAF else _unflatten(node, iter(new))
    return x_new, flat, _rebuilder(tape, node, shapes, [p.size for p in parts])


def _rebuilder(tape, node, shapes, sizes):
    """rebuild(slots) -> the pytree `node` of traced values at consecutive
    runs of slots (-1: zero), one run per leaf of `shapes` and `sizes`."""
    def rebuild(adj):
        out, at = [], 0
        for shape, n in zip(shapes, sizes):
            out.append(traced(tape, adj[at:at + n], shape))
            at += n
        return _unflatten(node, iter(out))
    return rebuild


def _own(tape, v, who):
    if not is_traced(tape, v):
        raise TapeError(
            f"fastad: the {who} of a nested transform is a {type(v).__name__} of another "
            f"recording (one that has ended, or runs in another thread); pass numbers, "
            f"or the values of the transform in progress")


def _scalar_rebuild(tape):
    def rebuild(adj):
        s = int(adj[0])
        return 0.0 if s < 0 else var_at(tape, s)
    return rebuild


def traced(tape, slots, shape):
    """Traced values at `slots` (-1: zero) with `shape` (None: a scalar)."""
    slots = np.asarray(slots, dtype=np.intp)
    if (slots < 0).all():
        return 0.0 if shape is None else np.zeros(shape)
    if (slots < 0).any():
        slots = np.where(slots < 0, tape.push_const(0.0), slots)
    if shape is None:
        return var_at(tape, int(slots.reshape(-1)[0]))
    return make_array(tape, slots.reshape(shape))


def _one(tape):
    return tape.push_const(1.0)


def scalar_slot(tape, out, who):
    """The slot array (0-d) of f's scalar output (ValueError otherwise)."""
    slots = output_slots(tape, out)
    if slots.ndim != 0:
        raise ValueError(
            f"fastad.{who} needs f to return a scalar, but it returned "
            f"{type(out).__name__} with shape {slots.shape}; use fad.jacobian "
            f"(or fad.vjp) for vector outputs")
    return slots


def split_aux(out, has_aux):
    """(value, aux) of f's output; aux as f returned it."""
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError(
            "fastad: has_aux=True requires f to return a pair (value, aux), "
            f"but it returned {type(out).__name__}")
    return out[0], out[1]


def value_and_grad(tape, f, args, kwargs, nums, has_aux):
    """(value, aux, gradients per argnum) of f on the recording `tape`."""
    lo = tape.n_nodes
    args = list(args)
    rebuilds, flats = [], []
    for k in nums:
        args[k], flat, rebuild = fresh(tape, args[k])
        flats.append(flat)
        rebuilds.append(rebuild)
    out = f(*args, **kwargs)
    out, aux = split_aux(out, has_aux)
    y = scalar_slot(tape, out, "grad")
    wrt = np.concatenate(flats) if flats else np.zeros(0, dtype=np.intp)
    adj = _pullback(tape, lo, y, _one(tape), wrt)
    grads, at = [], 0
    for flat, rebuild in zip(flats, rebuilds):
        grads.append(rebuild(adj[at:at + flat.size]))
        at += flat.size
    value = out if type(out) in (Var, Array) else traced(tape, y, None)
    return value, aux, grads


def _outputs(tape, out):
    """f's output's slots and rebuild(slots) -> its structure of traced values."""
    if type(out) in (Var, Array) or not isinstance(out, (dict, list, tuple)):
        slots = output_slots(tape, out)
        shape = None if slots.ndim == 0 and type(out) is not Array else slots.shape
        return slots.reshape(-1), lambda adj: traced(tape, adj, shape), [shape]
    leaves, node = flatten(out, "fastad: f's output", atoms=Var,
                           leaf_ok=lambda o: isinstance(o, (Var, Array, np.ndarray)) or input_leaf_ok(o))
    parts = [output_slots(tape, v) for v in leaves]
    shapes = [None if p.ndim == 0 and type(v) is not Array else p.shape
              for p, v in zip(parts, leaves)]
    flat = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0, np.intp)
    return flat, _rebuilder(tape, node, shapes, [p.size for p in parts]), shapes


def _seed_slots(tape, v, shapes, who):
    """A seed/tangent for leaves of `shapes` (v: traced or numbers, the same
    structure): its flat slots."""
    if len(shapes) == 1:
        leaves = [v]
    else:
        leaves, _ = flatten(v, f"fastad: {who}", atoms=Var, leaf_ok=_leaf_ok)
    if len(leaves) != len(shapes):
        raise ValueError(f"fastad: {who} has {len(leaves)} leaves, the value has {len(shapes)}")
    parts = []
    for leaf, shape in zip(leaves, shapes):
        want = () if shape is None else tuple(shape)
        if np.shape(leaf) != want:
            raise ValueError(f"fastad: {who} has shape {np.shape(leaf)}, expected {want}")
        parts.append(output_slots(tape, leaf).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.intp)


def vjp(tape, f, x):
    """(f(x), pullback) on the recording `tape`."""
    lo = tape.n_nodes
    xn, flat, rebuild = fresh(tape, x)
    out = f(xn)
    yslots, _, shapes = _outputs(tape, out)

    def pullback(ybar):
        if current_tape() is not tape:
            raise TapeError("fastad: a nested vjp's pullback works only inside the "
                            "recording that made it")
        if len(shapes) == 1 and np.ndim(ybar) == len(shapes[0] or ()) + 1:
            # k stacked seeds: one recorded sweep each
            return _stacked([rebuild(_pullback(tape, lo, yslots,
                                               _seed_slots(tape, ybar[i], shapes, "ybar"), flat))
                             for i in range(np.shape(ybar)[0])])
        return rebuild(_pullback(tape, lo, yslots, _seed_slots(tape, ybar, shapes, "ybar"),
                                 flat))
    return out, pullback


def jvp(tape, f, x, v):
    """(f(x), J v) on the recording `tape`: the transpose of the recorded
    pullback, which is linear in its seed u."""
    lo = tape.n_nodes
    xn, flat, rebuild_x = fresh(tape, x)
    out = f(xn)
    yslots, rebuild_y, _ = _outputs(tape, out)
    xshapes = _leaf_shapes(x)
    if len(xshapes) == 1 and np.ndim(v) == len(xshapes[0] or ()) + 1:
        # k stacked directions: one transposed sweep each
        return out, _stacked([rebuild_y(_jvp_one(tape, lo, yslots, flat,
                                                 _seed_slots(tape, v[i], xshapes, "v")))
                              for i in range(np.shape(v)[0])])
    vs = _seed_slots(tape, v, xshapes, "v")
    return out, rebuild_y(_jvp_one(tape, lo, yslots, flat, vs))


def _stacked(parts):
    """k traced results (Vars or Arrays; 0.0 / zeros where nothing
    reached them) along a new leading axis."""
    if not parts:
        return np.zeros(0)
    if all(type(p) is Var or np.ndim(p) == 0 for p in parts):
        return _var.stack(parts)
    return np.stack(parts)


def _jvp_one(tape, lo, yslots, flat, vs):
    """J v's slots: the recorded pullback (seed u) transposed at v."""
    mid = tape.n_nodes
    u = np.asarray(tape.push_consts(np.zeros(yslots.size)), dtype=np.intp).reshape(-1)
    xbar = _pullback(tape, lo, yslots, u, flat)
    live = xbar >= 0
    if not live.any():
        return np.full(yslots.size, -1, dtype=np.intp)
    return _pullback(tape, mid, xbar[live], vs[live], u)


def _leaf_shapes(x):
    leaves, _ = flatten(x, "fastad: x", atoms=Var, leaf_ok=_leaf_ok)
    out = []
    for v in leaves:
        if type(v) is Var or (not isinstance(v, (np.ndarray, list, tuple, Array))):
            out.append(None)
        else:
            out.append(np.shape(v))
    return out


def jacobian(tape, f, x):
    """The Jacobian of f at x on the recording `tape` (plain arrays and
    scalars; one recorded pullback per output element)."""
    if isinstance(x, (dict, list, tuple)):
        raise NotImplementedError("fastad: a nested jacobian takes a float or an array "
                                  "(not a pytree) as x")
    lo = tape.n_nodes
    xn, flat, _ = fresh(tape, x)
    out = f(xn)
    if isinstance(out, (dict, list, tuple)) and type(out) is not Array:
        out = _var.stack(list(out)) if isinstance(out, (list, tuple)) else out
    yslots = output_slots(tape, out)
    one = _one(tape)
    rows = []
    for s in yslots.reshape(-1):
        rows.append(_pullback(tape, lo, np.array([s]), np.array([one]), flat))
    xshape = () if type(xn) is Var else tuple(np.shape(xn))
    J = np.array(rows, dtype=np.intp).reshape(yslots.shape + xshape) if rows else \
        np.zeros(yslots.shape + xshape, dtype=np.intp) - 1
    return traced(tape, J, None if J.ndim == 0 else J.shape)


def _grad_of(f):
    """grad(f) for one argument, nested (called while a recording runs)."""
    def g(x):
        return value_and_grad(current_tape(), f, (x,), {}, (0,), False)[2][0]
    return g


def hessian(tape, f, x):
    return jacobian(tape, _grad_of(f), x)


def hvp(tape, f, x, v):
    return jvp(tape, _grad_of(f), x, v)[1]


# -------------------------------------------------- Tape methods on traced values

def _has_traced(x):
    t = type(x)
    if t is Var or t is Array:
        return True
    if t in (list, tuple):
        return any(_has_traced(v) for v in x)
    if t is dict:
        return any(_has_traced(v) for v in x.values())
    return False


def has_traced(x):
    """x holds values of the recording in progress."""
    return current_tape() is not None and _has_traced(x)


def tape_method(tape, name, x, *args):
    """Tape.<name>(x, ...) where x holds traced values (fastad._tape asks
    with tape None: is x traced?).  The recorded function is run again on
    x, after a replay at x's values has checked the recorded branches."""
    if tape is None:
        return current_tape() is not None and _has_traced(x)
    if tape is None or name is None:
        raise ValueError("fastad: tape_method needs a tape and a method name")
    f = tape.f
    if f is None:
        raise TapeError(
            f"fastad: Tape.{name} was called on traced values (inside a transform), "
            f"which needs the recorded function, but this tape has none (it was loaded "
            f"or unpickled); call it with numbers, or record the function again")
    tape(_plain(x))                           # BranchChangedError where it would differ
    cur = current_tape()
    if name == "__call__":
        return f(x)
    if name == "value_and_gradient":
        value, _, grads = value_and_grad(cur, f, (x,), {}, (0,), False)
        return value, grads[0]
    if name == "gradient":
        return _grad_of(f)(x)
    if name == "jvp":
        return jvp(cur, f, x, args[0])[1]
    if name == "vjp":
        return vjp(cur, f, x)[1](args[0])
    if name == "jacobian":
        return jacobian(cur, f, x)
    if name == "hvp":
        return hvp(cur, f, x, args[0])
    if name == "hessian":
        return hessian(cur, f, x)
    raise ValueError(f"fastad: no traced Tape.{name}")


def _plain(x):
    t = type(x)
    if t is Var or t is Array:
        return value_of(x)
    if t in (list, tuple):
        return t(_plain(v) for v in x)
    if t is dict:
        return {k: _plain(v) for k, v in x.items()}
    return x


_tape.provide("traced", tape_method)
