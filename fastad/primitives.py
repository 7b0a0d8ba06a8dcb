"""Custom primitives: your own functions with your own derivative rules.

    @fad.primitive
    def f(x, y, *, scale=1.0): ...          # numeric code on floats / ndarrays

    @f.defvjp
    def f_vjp(ybar, y, x, y_, *, scale=1.0):   # the pullback B_f^x(ybar)
        return xbar, ybar_y                  # one cotangent per positional argument

    @f.defjvp
    def f_jvp(xdot, y, x, y_, *, scale=1.0):   # xdot: one tangent per argument
        return ydot

Both rules take the incoming derivative first, then the output, then the
inputs (and the keyword constants).  A tuple holds one cotangent/tangent per
positional argument when there are several; None means "no gradient" (a
cotangent) or "not perturbed" (a tangent).  Registered with
`vectorized=True`, a rule receives k stacked seeds/directions along a
leading axis and returns them stacked; otherwise fastad calls it once per seed.

Called on Vars/Arrays, a primitive evaluates on their values and records one
block node; the reverse sweep calls the vjp rule, forward mode the jvp rule,
and a replay calls the function again at the new values.  One rule is
enough: the other is its transpose (see "transposition" below), so a
primitive with only a vjp rule works in forward mode and under hvp/hessian,
and one with only a jvp rule in reverse mode.
"""
import functools
import math
import pickle
import numbers
import weakref

import numpy as np

from fastad import _blocks as B
from fastad import _primcall
from fastad._recording import _output_value, record
from fastad._var import Var, tape_of, value_of, var_at
from fastad.errors import TapeError
from fastad.arrays import _operands, _push, concatenate, from_objects, reshape
from fastad.arrays import sum as _sum

__all__ = ["primitive", "Primitive"]


def _is_numeric(v):
    return isinstance(v, numbers.Real) or (isinstance(v, np.ndarray) and v.dtype.kind in "biuf")


def _rule_with_tangents(prim, ybar, y, args, kwargs, dots, k):
    """Forward-over-reverse through a primitive: run its vjp rule under fad.jvp.

    The rule is ordinary NumPy code, so fastad records it like any function of
    (ybar, y, *args) and pushes k directions (ybar', y', *args') through it.
    Returns (cotangents, their k tangents), one entry per argument (None for
    no gradient)."""
    parts = [np.asarray(ybar, dtype=np.float64), np.asarray(y, dtype=np.float64)] + \
        [np.asarray(a, dtype=np.float64) for a in args]
    shapes = [p.shape for p in parts]
    sizes = [p.size for p in parts]
    offsets = np.cumsum([0] + sizes)
    arg_shapes = shapes[2:]
    z0 = np.concatenate([p.reshape(-1) for p in parts])
    V = np.concatenate([np.reshape(d, (k, -1)) if d is not None else np.zeros((k, n))
                        for d, n in zip(dots, sizes)], axis=1)

    def piece(z, i):
        if shapes[i] == ():
            return z[int(offsets[i])]
        return z[int(offsets[i]):int(offsets[i + 1])].reshape(shapes[i])

    def rule_of(z):
        ps = [piece(z, i) for i in range(len(parts))]
        yb = ps[0]
        if prim.vjp_vectorized:       # one seed, with the leading seed axis
            yb = yb[None] if shapes[0] != () else z[0:1]
        cots = prim.vjp_rule(yb, ps[1], *ps[2:], **kwargs)
        if len(args) == 1 and not isinstance(cots, tuple):
            cots = (cots,)
        flat = []
        for c, shape in zip(cots, arg_shapes):
            if c is None:
                flat.append(np.zeros(int(np.prod(shape, dtype=np.int64))))
            else:
                flat.append(reshape(c, (-1,)))
        return concatenate(flat) if flat else np.zeros(0)

    try:
        tape = record(rule_of, z0)          # (fad.jvp, without the transforms above here)
        c0, cd = _output_value(tape), tape._jvp(None, V)
    except (TypeError, NotImplementedError) as e:
        raise NotImplementedError(
            f"fastad: second derivatives through primitive '{prim.name}' need its vjp "
            f"rule to be differentiable by fastad (NumPy code on its inputs), but "
            f"differentiating it failed: {e}") from e
    c0 = np.asarray(c0, dtype=np.float64).reshape(-1)
    cd = np.asarray(cd, dtype=np.float64).reshape(k, -1)
    out0, outd, pos = [], [], 0
    for shape in arg_shapes:
        n = int(np.prod(shape, dtype=np.int64))
        out0.append(c0[pos:pos + n].reshape(shape))
        outd.append(cd[:, pos:pos + n].reshape((k,) + tuple(shape)))
        pos += n
    return out0, outd


# ---------------------------------------------------------------- transposition
# A primitive with one rule gets the other from it: the pullback is linear in
# ybar and the pushforward in xdot, so each is the transpose of the other,
#     J v   = transpose(ybar -> vjp_rule(ybar, y, *args)) applied to v,
#     J^T w = transpose(xdot -> jvp_rule(xdot, y, *args)) applied to w.
# A map with a one-element input (a scalar output's pullback, the pushforward
# of one scalar argument) is its matrix, from one plain rule call.  Otherwise
# fastad records the rule as a function of that input (y and the arguments
# are constants) and pulls the k directions back through the recording in one
# multi-seeded reverse sweep; the recording is kept per block and point (one
# entry: the recorded point's state is the same object on every sweep, so a
# jacobian's or hessian's chunks, and all k lanes, share one recording).
# A vectorized rule builds a small map's matrix in one call instead (kept the
# same way), and a scalar primitive takes its partials from one plain call.

_MAPS = weakref.WeakKeyDictionary()      # block -> (state, kind, recorded Tape or matrix)


def _size(shape):
    return math.prod(shape)


def _times(V, M):
    """V (k, n) times M^T (M: (m, n)) -> (k, m), with strong zeros: a zero entry
    of V contributes exactly 0, even against an inf or NaN of M."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = V @ M.T
        if not np.isfinite(r).all():
            r = np.where(V[:, None, :] != 0, V[:, None, :] * M[None, :, :], 0.0).sum(axis=2)
    return r


def _as_matrix(dim, other, k, vectorized):
    """Build a linear map's matrix from `dim` unit seeds (one call of a
    vectorized rule) rather than record the rule?  When that is about as
    cheap as the lanes asked for, and the matrix is not large."""
    return dim == 1 or (vectorized and dim <= max(k, 16) and dim * other <= 1 << 18)


def _cached(blk, state, kind, build):
    """The linear map `kind` of blk at state (a recorded Tape or its matrix):
    built once per point.  Weak in blk, so it goes with its tape."""
    if blk is None:
        return build()
    hit = _MAPS.get(blk)
    if hit is not None and hit[0] is state and hit[1] == kind:
        return hit[2]
    tape = build()
    _MAPS[blk] = (state, kind, tape)
    return tape


def _record_rule(prim, which, missing, fn, z0):
    """Record fn (a rule as a map of its linear input) at z0, or say in a
    NotImplementedError which rule is missing and why the other one cannot
    stand in for it."""
    try:
        tape = record(fn, z0)
    except (TypeError, NotImplementedError, AttributeError) as e:
        raise _underivable(prim, which, missing, f"{type(e).__name__}: {e}") from e
    if tape.value_read is not None:     # the map would hold a number, not its input
        raise _underivable(prim, which, missing, f"it reads a concrete value of its "
                           f"{'cotangent' if which == 'vjp' else 'tangent'} ({tape.value_read})")
    return tape


def _underivable(prim, which, missing, why):
    mode = "forward mode (jvp, jacfwd, jacobian(mode='fwd'), hvp, hessian)" \
        if missing == "jvp" else "reverse mode (grad, vjp, jacrev, hvp, hessian)"
    return NotImplementedError(
        f"fastad: primitive '{prim.name}' has no {missing} rule, and {mode} through it "
        f"derives one by transposing its {which} rule, which fastad must be able to "
        f"record as ordinary NumPy code on its {'cotangent' if which == 'vjp' else 'tangents'}; "
        f"recording the {which} rule failed: {why}. Register a {missing} rule with "
        f"@{prim.name}.def{missing}")


def _traced(prim, which, vals, wants):
    """A rule's (traced) results against the shapes they must have; an object
    ndarray of Vars (np.asarray of an Array) becomes one Array."""
    vals = list(vals)
    for i, (v, want) in enumerate(zip(vals, wants)):
        if v is None or want is None:
            continue
        if isinstance(v, np.ndarray) and v.dtype == object:
            v = vals[i] = from_objects(v)
        if not (B.is_active(v) or _is_numeric(v)):
            raise TypeError(f"fastad: the {which} rule of primitive '{prim.name}' returned "
                            f"{type(v).__name__}" + (f" for argument {i}" if which == "vjp" else "")
                            + f"; expected numbers of shape {want}")
        if tuple(np.shape(v)) != tuple(want):
            raise ValueError(
                f"fastad: the {which} rule of primitive '{prim.name}' returned "
                + (f"a cotangent of shape {tuple(np.shape(v))} for argument {i}, which needs "
                   if which == "vjp" else f"a tangent of shape {tuple(np.shape(v))}, expected ")
                + f"{tuple(want)}")
    return vals


def _flat(v, n):
    if v is None:
        return np.zeros(n)
    return reshape(v, (-1,)) if B.is_active(v) else np.reshape(np.asarray(v, np.float64), -1)


def _jvp_by_transposition(prim, y, args, kwargs, dots, k, blk=None, state=None):
    """J v for k directions from the vjp rule: (k,) + y.shape."""
    yshape = np.shape(y)
    m = _size(yshape)
    live = [i for i, d in enumerate(dots) if d is not None]
    if not live or k == 0:
        return np.zeros((k,) + yshape)
    V = np.concatenate([np.reshape(dots[i], (k, -1)) for i in live], axis=1)
    shapes = [np.shape(a) for a in args]
    vec = prim.vjp_vectorized
    if _as_matrix(m, V.shape[1], k, vec):     # J's rows: the pullbacks of the unit seeds
        def rows_of():
            rows = prim._vjp_lanes(np.eye(m).reshape((m,) + yshape), y, args, kwargs, shapes, m)
            return np.concatenate([np.zeros((m, _size(shapes[i]))) if rows[i] is None
                                   else np.reshape(rows[i], (m, -1)) for i in live], axis=1)
        M = _cached(blk, state, ("vjp matrix", tuple(live)), rows_of) if m > 1 else rows_of()
        return _times(V, M).reshape((k,) + yshape)
    wants = [((1,) if vec else ()) + tuple(s) for s in shapes]

    def pullback_of(w):
        ybar = reshape(w, ((1,) if vec else ()) + yshape)
        cots = prim.vjp_rule(ybar, y, *args, **kwargs)
        if len(args) == 1 and not isinstance(cots, tuple):
            cots = (cots,)
        if not isinstance(cots, (tuple, list)) or len(cots) != len(args):
            prim._check_cots(cots, shapes, 1 if vec else None)    # (its error)
        cots = _traced(prim, "vjp", cots, wants)
        return concatenate([_flat(cots[i], _size(shapes[i])) for i in live])

    tape = _cached(blk, state, ("vjp", tuple(live)), lambda: _record_rule(
        prim, "vjp", "jvp", pullback_of, np.ones(m)))
    return np.asarray(tape._vjp(None, V)).reshape((k,) + yshape)


def _vjp_by_transposition(prim, lanes, y, args, kwargs, shapes, k, active,
                          blk=None, state=None):
    """Cotangents of the k seeds `lanes` ((k,) + y.shape) from the jvp rule:
    one per argument, (k,) + its shape, None where inactive."""
    yshape = np.shape(y)
    live = [i for i in range(len(args)) if active is None or active[i]]
    sizes = [_size(shapes[i]) for i in live]
    n = sum(sizes)
    out = [None] * len(args)
    if not live or k == 0:
        return [np.zeros((k,) + tuple(shapes[i])) if i in live else None
                for i in range(len(args))]
    W = np.reshape(lanes, (k, -1))
    vec = prim.jvp_vectorized
    offsets = np.cumsum([0] + sizes)
    if n == len(live) and yshape == () and not vec:
        # scalars only: J's columns from one call per argument, the others None
        cols = []
        for i in live:
            e = [None] * len(args)
            e[i] = np.ones((1,) + tuple(shapes[i]))
            cols.append(prim._jvp_lanes(e, y, args, kwargs, 1).reshape(-1))
        C = _times(W, np.stack(cols))
    elif _as_matrix(n, W.shape[1], k, vec):      # J's columns: the pushforwards of unit tangents
        def cols_of():
            E = np.eye(n)
            e = [None] * len(args)
            for j, i in enumerate(live):
                e[i] = E[:, int(offsets[j]):int(offsets[j + 1])].reshape((n,) + tuple(shapes[i]))
            return prim._jvp_lanes(e, y, args, kwargs, n).reshape(n, -1)
        M = _cached(blk, state, ("jvp matrix", tuple(live)), cols_of) if n > 1 else cols_of()
        C = _times(W, M)
    else:

        def pushforward_of(z):
            xd = [None] * len(args)
            for j, i in enumerate(live):
                p = z[int(offsets[j]):int(offsets[j + 1])]
                xd[i] = reshape(p, ((1,) if vec else ()) + tuple(shapes[i]))
            ydot = prim.jvp_rule(xd[0] if len(args) == 1 else tuple(xd), y, *args, **kwargs)
            ydot, = _traced(prim, "jvp", [ydot], [((1,) if vec else ()) + yshape])
            return _flat(ydot, _size(yshape))

        tape = _cached(blk, state, ("jvp", tuple(live)), lambda: _record_rule(
            prim, "jvp", "vjp", pushforward_of, np.ones(n)))
        C = np.asarray(tape._vjp(None, W)).reshape(k, n)
    pos = 0
    for i, s in zip(live, sizes):
        out[i] = C[:, pos:pos + s].reshape((k,) + tuple(shapes[i]))
        pos += s
    return out


def _jvp_rule_with_tangents(prim, ybar, y, args, kwargs, dots, k):
    """reverse2 for a primitive with only a jvp rule: S = <ybar, jvp_rule(xdot,
    y, *args)> is linear in xdot, and its gradient in xdot is the cotangent
    J^T ybar; that gradient's tangent along (ybar', y', args') is the xdot rows
    of H (ybar', 0, y', args'): one Hessian-vector product through the
    recorded rule.  Same returns as _rule_with_tangents."""
    vec = prim.jvp_vectorized
    yshape = np.shape(y)
    live = [i for i, d in enumerate(dots[2:]) if d is not None]
    parts = [np.asarray(ybar, dtype=np.float64)] + \
        [np.ones(np.shape(args[i])) for i in live] + \
        [np.asarray(y, dtype=np.float64)] + [np.asarray(a, dtype=np.float64) for a in args]
    shapes = [p.shape for p in parts]
    sizes = [p.size for p in parts]
    offsets = np.cumsum([0] + sizes)
    nl = len(live)
    z0 = np.concatenate([p.reshape(-1) for p in parts])
    tdots = [dots[0]] + [None] * nl + [dots[1]] + list(dots[2:])
    V = np.concatenate([np.reshape(d, (k, -1)) if d is not None else np.zeros((k, n))
                        for d, n in zip(tdots, sizes)], axis=1)

    def piece(z, i):
        if shapes[i] == ():
            return z[int(offsets[i])]
        return reshape(z[int(offsets[i]):int(offsets[i + 1])], shapes[i])

    def pairing(z):
        ps = [piece(z, i) for i in range(len(parts))]
        xd = [None] * len(args)
        for j, i in enumerate(live):
            xd[i] = reshape(ps[1 + j], (1,) + shapes[1 + j]) if vec else ps[1 + j]
        ydot = prim.jvp_rule(xd[0] if len(args) == 1 else tuple(xd), ps[1 + nl],
                             *ps[2 + nl:], **kwargs)
        ydot, = _traced(prim, "jvp", [ydot], [((1,) if vec else ()) + yshape])
        if vec:
            ydot = reshape(ydot, yshape)
        return ps[0] * ydot if yshape == () else _sum(ps[0] * ydot)

    try:
        tape = record(pairing, z0)
        _, g, Hv = tape._hvp(None, V, True)
    except (TypeError, NotImplementedError) as e:
        raise NotImplementedError(
            f"fastad: second derivatives through primitive '{prim.name}' (which has only "
            f"a jvp rule) need its jvp rule to be differentiable by fastad (NumPy code on "
            f"its inputs), but differentiating it failed: {e}") from e
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    Hv = np.asarray(Hv, dtype=np.float64).reshape(k, -1)
    c0 = [np.zeros(np.shape(a)) for a in args]
    cd = [np.zeros((k,) + np.shape(a)) for a in args]
    for j, i in enumerate(live):
        lo, hi = int(offsets[1 + j]), int(offsets[2 + j])
        c0[i] = g[lo:hi].reshape(np.shape(args[i]))
        cd[i] = Hv[:, lo:hi].reshape((k,) + np.shape(args[i]))
    return c0, cd


def _with_tangents(prim, ybar, y, args, kwargs, dots, k):
    """Cotangents and their k tangents (reverse2), from whichever rule there is."""
    if prim.vjp_rule is not None:
        return _rule_with_tangents(prim, ybar, y, args, kwargs, dots, k)
    return _jvp_rule_with_tangents(prim, ybar, y, args, kwargs, dots, k)


class PrimitiveBlock(B.Block):
    """One call of a primitive on the tape."""

    def __init__(self, prim, ops, kwargs, y):
        self.prim, self.ops, self.kwargs = prim, ops, kwargs
        self.shape = np.shape(y)
        self._first = y            # the value computed while recording
        # all-scalar calls (a primitive in a scalar loop) take a lean path
        self.scalar = self.shape == () and all(o.shape == () for o in ops)

    operands = _primcall.block_operands

    def describe(self):
        return self.prim.name

    def sparsity(self):
        """The declared pattern (Primitive.defsparsity), else dense.  Each
        output gets a virtual set of the slots it depends on, and those
        interact with each other (the rule says nothing finer about H)."""
        rule = self.prim.sparsity_rule
        if rule is None:
            return super().sparsity()
        size = self.stop - self.start
        pats = rule(*[o.shape for o in self.ops])
        if not isinstance(pats, (tuple, list)):
            pats = (pats,)
        if len(pats) != len(self.ops):
            raise ValueError(f"fastad: the sparsity rule of primitive '{self.prim.name}' "
                             f"returned {len(pats)} patterns for {len(self.ops)} arguments")
        rows, slots = [], []
        for o, pat in zip(self.ops, pats):
            if pat is None or not o.active:
                continue
            n_in = int(np.prod(o.shape, dtype=np.int64))
            if hasattr(pat, "tocoo"):
                coo = pat.tocoo()
                shape, r, c = coo.shape, coo.row, coo.col
            else:
                pat = np.asarray(pat)
                shape = pat.shape
                r, c = np.nonzero(pat)
            if tuple(shape) != (size, n_in):
                raise ValueError(f"fastad: the sparsity rule of primitive '{self.prim.name}' "
                                 f"gave a pattern of shape {tuple(shape)} for an argument of "
                                 f"shape {o.shape}; expected {(size, n_in)}")
            rows.append(np.asarray(r, np.int64))
            slots.append(o.flat[np.asarray(c, np.int64)])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        sl = np.concatenate(slots) if slots else np.zeros(0, np.int64)
        order = np.argsort(r, kind="stable")
        vptr = np.zeros(size + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=size), out=vptr[1:])
        virt = B._virtual(np.arange(size))
        return B._deps(self, size, vptr, sl[order], np.arange(size + 1), virt,
                       pairs=np.stack([virt, virt], axis=1))

    def _args(self, val):
        return [o.value(val) if o.active else o.const for o in self.ops]

    def compute(self, val, out):
        args = self._args(val)
        if self.scalar:
            args = [float(a) for a in args]
        if self._first is not None:
            y, self._first = self._first, None
        else:
            y = self.prim._evaluate(args, self.kwargs)
            if np.shape(y) != self.shape:
                raise ValueError(
                    f"fastad: primitive '{self.prim.name}' returned shape {np.shape(y)} at "
                    f"a replay, but {self.shape} when it was recorded")
        out[...] = y
        return (float(y) if self.shape == () else np.array(y, dtype=np.float64), args)

    reverse = _primcall.array_reverse      # (one seed, a looped vjp rule: in C)

    def _reverse_general(self, val, state, adj, k):
        if k == 1 and not self.prim.vjp_vectorized and self.prim.vjp_rule is not None:
            if self.scalar:
                return self._reverse_scalar(state, adj)
            return self._reverse_one(state, adj)
        g = adj[self.start:self.stop].reshape(self.shape + (k,))
        if not g.any():
            return              # zero cotangent: the rule is not even called
        y, args = state
        lanes = np.moveaxis(g, -1, 0)        # (k,) + shape
        cots = self.prim._pullback(lanes, y, args, self.kwargs, [o.shape for o in self.ops], k,
                                   [o.active for o in self.ops], self, state)
        for o, c in zip(self.ops, cots):
            if c is not None and o.active:
                o.add_adjoint(adj, np.moveaxis(c, 0, -1), k)

    def _reverse_one(self, state, adj):
        """One seed, a looped rule: no lane axes to move."""
        g = adj[self.start:self.stop, 0]
        if not g.any():
            return
        y, args = state
        ybar = g.reshape(self.shape) if self.shape else float(g[0])
        cots = self.prim.vjp_rule(ybar, y, *args, **self.kwargs)
        cots = self.prim._check_cots(cots, [o.shape for o in self.ops], None)
        for o, c in zip(self.ops, cots):
            if c is not None and o.active:
                o.add_adjoint(adj, c, 1)

    def _reverse_scalar(self, state, adj):
        ybar = float(adj[self.start, 0])
        if ybar == 0.0:
            return
        y, args = state
        cots = self.prim.vjp_rule(ybar, y, *args, **self.kwargs)
        if len(self.ops) == 1 and not isinstance(cots, tuple):
            cots = (cots,)
        if not (isinstance(cots, tuple) and len(cots) == len(self.ops)
                and all(c is None or isinstance(c, (float, int)) for c in cots)):
            cots = self.prim._check_cots(cots, [()] * len(self.ops), None)
        for o, c in zip(self.ops, cots):
            if c is not None and o.idx is not None:
                adj[o.start, 0] += float(c)

    def tangent(self, val, state, tan, k):
        y, args = state
        dots = [np.moveaxis(o.tangent(tan, k), -1, 0) if o.active else None for o in self.ops]
        ydot = self.prim._pushforward(dots, y, args, self.kwargs, k, self, state)
        tan[self.start:self.stop] = np.moveaxis(ydot, 0, -1).reshape(-1, k)

    @property
    def has_tangent(self):
        # forward mode without transposing the vjp rule ("auto" then prefers
        # reverse mode, which calls the vjp rule directly)
        return self.prim.jvp_rule is not None

    def reverse2(self, val, state, tan, adj, adt, k):
        y, args = state
        g = adj[self.start:self.stop].reshape(self.shape)
        gd = np.moveaxis(adt[self.start:self.stop].reshape(self.shape + (k,)), -1, 0)
        if not g.any():
            # zero cotangent: the rule is linear in it, so only its tangents move
            # (pulled back as first-order seeds); nothing else may leak NaN/inf
            if gd.any():
                cots = self.prim._pullback(gd, y, args, self.kwargs, [o.shape for o in self.ops],
                                           k, [o.active for o in self.ops], self, state)
                for o, c in zip(self.ops, cots):
                    if c is not None and o.active:
                        o.add_adjoint(adt, np.moveaxis(c, 0, -1), k)
            return
        ydot = np.moveaxis(tan[self.start:self.stop].reshape(self.shape + (k,)), -1, 0)
        dots = [gd, ydot] + [np.moveaxis(o.tangent(tan, k), -1, 0) if o.active else None
                             for o in self.ops]
        c0, cd = _with_tangents(self.prim, g if self.shape else float(g), y, args,
                                self.kwargs, dots, k)
        for o, a, b in zip(self.ops, c0, cd):
            if o.active:
                o.add_adjoint(adj, a[..., None], 1)
                o.add_adjoint(adt, np.moveaxis(b, 0, -1), k)


def _scalar_partials(prim, y, args, kwargs, live):
    """dy/d(args[j]) for j in live, all scalars: the vjp rule's pullback of 1,
    else one jvp rule call per argument (the others None).  Rules that are
    not vectorized."""
    if prim.vjp_rule is not None:
        cots = prim.vjp_rule(1.0, y, *args, **kwargs)
        if len(args) == 1 and not isinstance(cots, tuple):
            cots = (cots,)
        if not (isinstance(cots, tuple) and len(cots) == len(args)
                and all(c is None or isinstance(c, (float, int)) for c in cots)):
            cots = prim._check_cots(cots, [()] * len(args), None)
        return [0.0 if cots[j] is None else float(cots[j]) for j in live]
    out = []
    for j in live:
        e = [None] * len(args)
        e[j] = 1.0
        d = prim.jvp_rule(e[0] if len(args) == 1 else tuple(e), y, *args, **kwargs)
        out.append(d if type(d) is float else float(prim._check_ydot(d, ())))
    return out


class ScalarPrimitiveBlock(B.Block):
    """A primitive called on scalars only (say, in a scalar loop): the lean path.

    The same rules as PrimitiveBlock, with floats instead of arrays."""

    shape = ()

    def __init__(self, prim, slots, consts, kwargs):
        self.prim, self.slots, self.consts, self.kwargs = prim, slots, consts, kwargs

    def describe(self):
        return self.prim.name

    def sources(self):
        return [s for s in self.slots if s is not None]

    def dependency_slots(self):
        return np.array(self.sources(), dtype=np.intp)

    def _args(self, val):
        return [c if s is None else float(val[s]) for s, c in zip(self.slots, self.consts)]

    def compute(self, val, out):
        args = self._args(val)
        y = self.prim._evaluate(args, self.kwargs)
        if np.shape(y) != ():
            raise ValueError(f"fastad: primitive '{self.prim.name}' returned shape "
                             f"{np.shape(y)} at a replay, but a scalar when it was recorded")
        out[...] = y
        return float(y), args

    reverse = _primcall.scalar_reverse     # (one seed, a looped vjp rule: in C)

    def _reverse_general(self, val, state, adj, k):
        y, args = state
        prim = self.prim
        if k == 1 and not prim.vjp_vectorized and prim.vjp_rule is not None:
            ybar = float(adj[self.start, 0])
            if ybar == 0.0:
                return
            cots = prim.vjp_rule(ybar, y, *args, **self.kwargs)
            if len(args) == 1 and not isinstance(cots, tuple):
                cots = (cots,)
            if not (isinstance(cots, tuple) and len(cots) == len(args)
                    and all(c is None or isinstance(c, (float, int)) for c in cots)):
                cots = prim._check_cots(cots, [()] * len(args), None)
            for s, c in zip(self.slots, cots):
                if c is not None and s is not None:
                    adj[s, 0] += c
            return
        elif k == 1 and prim.vjp_rule is None and not prim.jvp_vectorized:
            ybar = float(adj[self.start, 0])      # (jvp rule only: its partials, transposed)
            if ybar == 0.0:
                return
            live = [j for j, s in enumerate(self.slots) if s is not None]
            for j, p in zip(live, _scalar_partials(prim, y, args, self.kwargs, live)):
                adj[self.slots[j], 0] += ybar * p
            return
        else:
            lanes = np.array(adj[self.start])
            if not lanes.any():
                return
            cots = [None if c is None else c.reshape(k) for c in
                    prim._pullback(lanes, y, args, self.kwargs, [()] * len(args), k,
                                   [s is not None for s in self.slots], self, state)]
        for s, c in zip(self.slots, cots):
            if c is not None and s is not None:
                adj[s] += c

    def reverse2(self, val, state, tan, adj, adt, k):
        y, args = state
        if adj[self.start, 0] == 0.0:
            lanes = np.array(adt[self.start])
            if lanes.any():       # zero cotangent: only its tangents move (first order)
                cots = self.prim._pullback(lanes, y, args, self.kwargs, [()] * len(args), k,
                                           [s is not None for s in self.slots], self, state)
                for s, c in zip(self.slots, cots):
                    if c is not None and s is not None:
                        adt[s] += c.reshape(k)
            return
        dots = [np.array(adt[self.start]), np.array(tan[self.start])] + \
            [None if s is None else np.array(tan[s]) for s in self.slots]
        c0, cd = _with_tangents(self.prim, float(adj[self.start, 0]), y, args,
                                self.kwargs, dots, k)
        for s, a, b in zip(self.slots, c0, cd):
            if s is not None:
                adj[s, 0] += float(a)
                adt[s] += b

    def tangent(self, val, state, tan, k):
        y, args = state
        prim = self.prim
        if prim.jvp_rule is None and prim.vjp_rule is not None and not prim.vjp_vectorized:
            # vjp rule only: its pullback of 1 is the row of partials
            live = [j for j, s in enumerate(self.slots) if s is not None]
            acc = np.zeros(k)
            for j, p in zip(live, _scalar_partials(prim, y, args, self.kwargs, live)):
                t = tan[self.slots[j]]
                if math.isfinite(p):
                    acc += p * t
                else:                     # strong zeros: a zero tangent adds exactly 0
                    with np.errstate(invalid="ignore"):
                        acc += np.where(t != 0, p * t, 0.0)
            tan[self.start] = acc
            return
        dots = [None if s is None else np.array(tan[s]) for s in self.slots]
        tan[self.start] = prim._pushforward(dots, y, args, self.kwargs, k, self,
                                            state).reshape(k)

    @property
    def has_tangent(self):      # (as PrimitiveBlock.has_tangent)
        return self.prim.jvp_rule is not None


class Primitive(_primcall.PrimitiveCore):
    """A function fastad treats as one elementary operation (see the module doc).

    Its call (Primitive.__call__, from PrimitiveCore) is compiled; calls it
    does not handle come back to _call."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = getattr(fn, "__name__", "primitive")
        self.vjp_rule = self.jvp_rule = self.sparsity_rule = None
        self.vjp_vectorized = self.jvp_vectorized = False

    def __repr__(self):
        return f"<fastad.primitive {self.name}>"

    def __reduce__(self):
        # by reference, like a function: the module attribute is this object
        return (_lookup, tuple(reference_of(self)))

    # ------------------------------------------------------------ registration

    def defvjp(self, rule=None, *, vectorized=False):
        """Register the pullback rule(ybar, y, *args, **kwargs); usable as a decorator."""
        if rule is None:
            return lambda r: self.defvjp(r, vectorized=vectorized)
        if not callable(rule):
            raise TypeError(f"fastad: {self.name}.defvjp needs a callable rule, got {rule!r}")
        self.vjp_rule, self.vjp_vectorized = rule, bool(vectorized)
        return rule

    def defsparsity(self, rule):
        """Register rule(*shapes) -> one boolean pattern per positional argument,
        each of shape (output size, argument size) (a dense array or a
        scipy.sparse matrix; None: no dependence), saying which output
        elements depend on which argument elements.  Sparsity detection
        (fad.jacobian_sparsity, sparse_jacobian, hessian_sparsity) uses it;
        without it a primitive's outputs depend on all of its inputs."""
        if not callable(rule):
            raise TypeError(f"fastad: {self.name}.defsparsity needs a callable rule, got {rule!r}")
        self.sparsity_rule = rule
        return rule

    def defjvp(self, rule=None, *, vectorized=False):
        """Register the pushforward rule(xdot, y, *args, **kwargs); usable as a decorator."""
        if rule is None:
            return lambda r: self.defjvp(r, vectorized=vectorized)
        if not callable(rule):
            raise TypeError(f"fastad: {self.name}.defjvp needs a callable rule, got {rule!r}")
        self.jvp_rule, self.jvp_vectorized = rule, bool(vectorized)
        return rule

    # ------------------------------------------------------------ calling

    def _evaluate(self, args, kwargs):
        return self._checked(self.fn(*args, **kwargs))

    def _checked(self, y):
        if not _is_numeric(y):
            raise TypeError(
                f"fastad: primitive '{self.name}' must return a float or an ndarray of "
                f"real numbers, but it returned {type(y).__name__}"
                + (f" of dtype {y.dtype}" if isinstance(y, np.ndarray) else ""))
        return y

    def _call(self, args, kwargs):
        for key, v in kwargs.items():
            if B.is_active(v):
                raise TypeError(
                    f"fastad: keyword argument '{key}' of primitive '{self.name}' is a "
                    f"{type(v).__name__}, but keyword arguments are constants; pass what "
                    f"should be differentiated positionally")
        scalar = True
        tape = None
        for a in args:
            if type(a) is Var:
                t = tape_of(a)              # this thread's recording, or TapeError
                if tape is not None and t is not tape:
                    raise TapeError("fastad: cannot combine Vars from two different recordings")
                tape = t
            elif type(a) is not float and type(a) is not int:
                scalar = False
        if not scalar:
            tape, ops = _operands(args)
        if tape is None:
            return self.fn(*args, **kwargs)
        self._need_a_rule()
        if kwargs:      # constants of the tape: a later change to them must not reach it
            kwargs = {k: _snapshot(v) for k, v in kwargs.items()}
        if scalar:
            vals = [value_of(a) if type(a) is Var else float(a) for a in args]
            return self._finish_scalar(tape, args, vals, kwargs, self.fn(*vals, **kwargs))
        y = self.fn(*[o.const if not o.active else o.value(tape.recorded_values())
                      for o in ops], **kwargs)
        return self._finish_array(tape, ops, kwargs, y)

    def _finish_scalar(self, tape, args, vals, kwargs, y):
        """Record a call on scalars whose result is y (fn(*vals, **kwargs))."""
        if type(y) is not float:
            y = self._checked(y)
            if np.shape(y) != ():
                return _push(tape, PrimitiveBlock(self, _operands(args)[1], dict(kwargs), y))
            y = float(y)
        blk = ScalarPrimitiveBlock(
            self, [a.slot if type(a) is Var else None for a in args],
            [None if type(a) is Var else v for a, v in zip(args, vals)], kwargs)
        blk.state = (y, vals)
        return var_at(tape, tape.push_scalar_block(blk, y))

    def _finish_array(self, tape, ops, kwargs, y):
        """Record a call on operands ops whose result is y."""
        y = self._checked(y)
        if isinstance(y, np.ndarray):
            y = np.array(y, dtype=np.float64)   # own it: it may view the tape, which can move
        return _push(tape, PrimitiveBlock(self, ops, dict(kwargs), y))

    # ------------------------------------------------------------ rules

    def _pullback(self, lanes, y, args, kwargs, shapes, k, active=None, blk=None, state=None):
        """Cotangents per positional argument, each (k,) + its shape (or None):
        from the vjp rule, else by transposing the jvp rule (`active`: which
        arguments need one; blk and state key its recording)."""
        if self.vjp_rule is None:
            self._need_a_rule()
            return _vjp_by_transposition(self, lanes, y, args, kwargs, shapes, k, active,
                                         blk, state)
        return self._vjp_lanes(lanes, y, args, kwargs, shapes, k)

    def _need_a_rule(self):
        if self.vjp_rule is None and self.jvp_rule is None:
            raise TypeError(
                f"fastad: primitive '{self.name}' is being differentiated but has no "
                f"derivative rule (neither a vjp nor a jvp rule); register one with "
                f"@{self.name}.defvjp (or @{self.name}.defjvp)")

    def _vjp_lanes(self, lanes, y, args, kwargs, shapes, k):
        """_pullback through the vjp rule itself."""
        n = len(args)
        if self.vjp_vectorized:
            per = [self._check_cots(self.vjp_rule(lanes, y, *args, **kwargs), shapes, k)]
        else:
            per = [self._check_cots(self.vjp_rule(lanes[j] if lanes.ndim > 1 else float(lanes[j]),
                                                  y, *args, **kwargs), shapes, None)
                   for j in range(k)]
        out = []
        for i in range(n):
            if self.vjp_vectorized:
                out.append(per[0][i])
            elif all(p[i] is None for p in per):
                out.append(None)
            else:
                out.append(np.stack([np.zeros(shapes[i]) if p[i] is None else p[i] for p in per]))
        return out

    def _check_cots(self, cots, shapes, k):
        """Validate a rule's return: one cotangent per positional argument, right shapes."""
        n = len(shapes)
        if n == 1 and k is None and type(cots) is np.ndarray and cots.shape == tuple(shapes[0]) \
                and cots.dtype == np.float64:
            return [cots]                      # the common case, checked cheaply
        if n == 1 and not isinstance(cots, tuple):
            cots = (cots,)
        if not isinstance(cots, (tuple, list)) or len(cots) != n:
            got = f"{len(cots)} values" if isinstance(cots, (tuple, list)) else type(cots).__name__
            raise ValueError(
                f"fastad: the vjp rule of primitive '{self.name}' must return one cotangent "
                f"per positional argument ({n}, as a tuple), but it returned {got}")
        out = []
        for i, (c, shape) in enumerate(zip(cots, shapes)):
            if c is None:
                out.append(None)
                continue
            if not _is_numeric(c):
                raise TypeError(
                    f"fastad: the vjp rule of primitive '{self.name}' returned a "
                    f"{type(c).__name__} as the cotangent of argument {i}; expected numbers "
                    f"of shape {shape}")
            c = np.asarray(c, dtype=np.float64)
            want = shape if k is None else (k,) + tuple(shape)
            if c.shape != tuple(want):
                raise ValueError(
                    f"fastad: the vjp rule of primitive '{self.name}' returned a cotangent "
                    f"of shape {c.shape} for argument {i}, which has shape {shape}"
                    + ("" if k is None else f" (vectorized: expected {tuple(want)} for {k} seeds)"))
            out.append(c)
        return out

    def _pushforward(self, dots, y, args, kwargs, k, blk=None, state=None):
        """The output's k tangents, (k,) + y.shape, from the arguments' (k,) + shape
        ones (None: not perturbed): from the jvp rule, else by transposing the
        vjp rule (blk and state key its recording)."""
        if self.jvp_rule is None:
            self._need_a_rule()
            return _jvp_by_transposition(self, y, args, kwargs, dots, k, blk, state)
        return self._jvp_lanes(dots, y, args, kwargs, k)

    def _jvp_lanes(self, dots, y, args, kwargs, k):
        """_pushforward through the jvp rule itself."""
        one = len(args) == 1
        yshape = np.shape(y)
        if self.jvp_vectorized:
            xdot = dots[0] if one else tuple(dots)
            r = self._check_ydot(self.jvp_rule(xdot, y, *args, **kwargs), (k,) + yshape)
            return r
        rows = []
        for j in range(k):
            dj = [None if d is None else d[j] for d in dots]
            rows.append(self._check_ydot(self.jvp_rule(dj[0] if one else tuple(dj), y, *args,
                                                       **kwargs), yshape))
        return np.stack(rows) if rows else np.zeros((0,) + yshape)

    def _check_ydot(self, ydot, want):
        if not _is_numeric(ydot):
            raise TypeError(f"fastad: the jvp rule of primitive '{self.name}' returned "
                            f"{type(ydot).__name__}; expected numbers of shape {want}")
        ydot = np.asarray(ydot, dtype=np.float64)
        if ydot.shape != tuple(want):
            raise ValueError(f"fastad: the jvp rule of primitive '{self.name}' returned a "
                             f"tangent of shape {ydot.shape}, expected {tuple(want)}")
        return ydot


# primitives that moved: (module, qualname) in older pickles -> their module now
_MOVED = {("fastad.primitives", "solve"): "fastad.linalg",
          ("fastad.primitives", "norm"): "fastad.linalg"}


def reference_of(prim):
    """[module, qualname] under which prim is found again (pickles, tape.save);
    a lambda or a function defined inside another has none: PicklingError
    naming it, when the tape is written rather than when it is loaded."""
    module = getattr(prim.fn, "__module__", None)
    qualname = getattr(prim.fn, "__qualname__", None)
    try:
        found = _lookup(module, qualname) if module and qualname else None
    except Exception:
        found = None
    if found is not prim:
        raise pickle.PicklingError(
            f"fastad: primitive '{prim.name}' ({module}.{qualname}) cannot be saved: "
            f"a tape refers to its primitives by name, and this one is not found "
            f"under that name (a lambda or a function defined inside another); "
            f"define it with @fad.primitive at module level")
    return [module, qualname]


def _snapshot(v, depth=0):
    """A keyword argument as recorded: arrays (also inside lists, tuples and
    dicts) copied, as every other constant of a tape is."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if depth < 8:
        if type(v) in (list, tuple):
            return type(v)(_snapshot(e, depth + 1) for e in v)
        if type(v) is dict:
            return {k: _snapshot(e, depth + 1) for k, e in v.items()}
    return v


def _lookup(module, qualname):
    """Unpickle a Primitive: find it where it was defined."""
    import importlib
    obj = importlib.import_module(_MOVED.get((module, qualname), module))
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_primcall.bind(ScalarPrimitiveBlock, PrimitiveBlock)


def primitive(fn):
    """Make fn (numbers/ndarrays in, a float/ndarray out) a primitive of fastad."""
    return Primitive(fn)
