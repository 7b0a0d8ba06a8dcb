# cython: boundscheck=True, wraparound=True, cdivision=False
# (plain Python semantics: this module is Python code compiled for speed)
# fastad-build: role=python  (see ROLES in setup.py)
"""Block nodes: one tape node per array operation, differentiated with NumPy.

A block owns a contiguous range of output slots [start, stop) on the tape.
The scalar sweeps skip those slots and call the block instead:

    compute(val, out) -> state  outputs into `out` (a view of the block's own
                               slots, so results land on the tape without a copy);
                               state holds what the sweeps need (partials, operands)
    forward(val) -> state      the same at a replay, into val[start:stop]
    reverse(val, state, adj, k)   adj is (slots, k), slot-major: pull the block's
                               k cotangents back onto its operands' slots
    tangent(val, state, tan, k)   push its operands' k tangents to its slots

so one NumPy/BLAS call serves all k seeds or directions.  Element-wise
blocks take values and partials from the op table (fastad._elementwise).
"""
import math

import numpy as np

from fastad import _elementwise as _ew
from fastad._fold import kept
from fastad._second import ElementwiseSecond
from fastad._kernels import (FLAG, OP_FLAGS, OP_NAMES, OP_UFUNCS, OP_PARTIAL_SOURCES, FixedGather, add_rows,
                             all_finite, combine_gather, combine_rows, gather_flat, op_eval,
                             broadcast_view, rows_times, rows_view, second_rows)
from fastad._var import Array, Var
from fastad.errors import BranchChangedError

OP_CODE = {name: i for i, name in enumerate(OP_NAMES)}
LINEAR = FLAG["Z00"] | FLAG["Z01"] | FLAG["Z11"]


def is_active(v):
    """True for fastad Vars and Arrays (values on a tape)."""
    return type(v) in (Var, Array)


def _all_distinct(a):
    """No value repeats (a sort: np.unique is several times slower here)."""
    if a.size < 2:
        return True
    b = np.sort(a)
    return not (b[1:] == b[:-1]).any()


cimport cython


@cython.auto_pickle(False)
cdef class Operand:
    """One input of a block: tape slots (`idx`, any shape) or a constant array."""

    # a compiled class: every block records one or two, and here their fields
    # are set in C (a Python class with __slots__ sets each through a descriptor)
    cdef public object shape, idx, const, flat, start, unique, src
    # the fields by name (pickling, fastad._serialize)
    __slots__ = ("shape", "idx", "const", "flat", "start", "unique", "src")

    def __init__(self, idx=None, value=None, start=-1, unique=None):
        self.src = None       # the block whose whole output this is (set by the Tape)
        if idx is not None:
            self.idx = idx
            self.const = None
            self.shape = idx.shape
            self.start = start            # >= 0: the slots are start .. start+size-1 in order
            if start >= 0:                # (a C-ordered intp view already: a run of slots)
                self.flat = idx if type(idx) is np.ndarray and idx.ndim == 1 else idx.reshape(-1)
                self.unique = True
                return
            self.flat = np.ascontiguousarray(idx, dtype=np.intp).reshape(-1)
            if unique is None:
                unique = _all_distinct(self.flat)
            self.unique = bool(unique)
        else:
            self.idx = self.flat = None
            # a copy: the caller may reuse its array before the sweep reads it
            self.const = np.array(value, dtype=np.float64)
            self.shape = self.const.shape
            self.start = -1
            self.unique = True

    @property
    def active(self):
        return self.idx is not None

    def value(self, val):
        if self.idx is None:
            return self.const
        if self.start >= 0:
            return rows_view(val, self.start, self.shape)
        return val[self.flat].reshape(self.shape)

    def tangent(self, tan, k):
        """The operand's k tangents, shape + (k,)."""
        if self.start >= 0:
            return rows_view(tan, self.start, self.shape + (k,))
        return np.take(tan, self.flat, axis=0).reshape(self.shape + (k,))   # 4x tan[flat]

    def add_adjoint(self, adj, g, k, cot=None, owned=None):
        """adj[slots] += g, g of shape + (k,); repeated slots add up.  With cot
        (a Cotangents), g goes straight to a sealed producer instead, which
        may write over it if `owned` (default: g owns its memory, so it was
        made for this operand alone)."""
        if cot is not None and self.src is not None and cot.give(
                self.src, g, (type(g) is np.ndarray and g.base is None) if owned is None
                else owned):
            return
        g = g.reshape(-1, k)
        if self.start >= 0:
            adj[self.start:self.start + self.flat.size] += g
        else:
            add_rows(adj, self.flat, g)

    def sources(self):
        if self.idx is None:
            return []
        if self.start >= 0:
            return [self.start]
        return sorted(set(self.flat[:64].tolist()))

    def __getstate__(self):
        return {"shape": self.shape, "idx": self.idx, "const": self.const, "flat": self.flat,
                "start": self.start, "unique": self.unique, "src": self.src}

    def __setstate__(self, state):
        self.src = None
        for k, v in state.items():
            setattr(self, k, v)

    def __reduce__(self):         # (every pickle protocol: object.__new__ cannot make it)
        return (_operand_from_state, (self.__getstate__(),))


def _operand_from_state(state):
    o = Operand.__new__(Operand)
    o.__setstate__(state)
    return o


def slots_operand(idx, Py_ssize_t start, unique):
    """The operand of traced slots idx (active_info's start and unique): a
    run of slots (start >= 0) made at a fraction of the cost of Operand's
    __init__ (an operand of every block recorded), else Operand()."""
    if start >= 0 and type(idx) is np.ndarray:
        return _run_operand(idx, start)
    return Operand(idx, None, start, True if unique else None)


cdef Operand _run_operand(idx, Py_ssize_t start):
    """Operand(idx, None, start, True) for a run of slots, its fields set here."""
    cdef Operand o = Operand.__new__(Operand)
    o.src = None
    o.idx = idx
    o.const = None
    o.shape = idx.shape
    o.flat = idx if idx.ndim == 1 else idx.reshape(-1)
    o.start = start
    o.unique = True
    return o


class Block:
    """Base: a tape node over an array of slots; see the module docstring."""

    start = stop = 0
    shape = ()
    state = None                      # the state at the recorded point
    handoff = False                   # reverse takes a Cotangents (see fastad._tape)
    sealed = False                    # set by the Tape: cotangents handed over directly
    overwritten = False               # set by the Tape: a later block wrote over its outputs

    def compute(self, val, out):
        """Write the outputs into out (shaped like the block); return the state."""
        raise NotImplementedError

    def forward(self, val):
        return self.compute(val, val[self.start:self.stop].reshape(self.shape))

    def operands(self):
        return ()

    def keeps_output(self):
        """True when the block's sweeps read its own output values (so no
        later block may write over them; see Tape.overwrite_block)."""
        return True

    def cotangent(self, adj, k, cot):
        """The block's cotangent, shape + (k,), or None when it is zero."""
        if cot is None:
            return rows_view(adj, self.start, self.shape + (k,))
        g = cot.take(self, adj)
        return None if g is None else g.reshape(self.shape + (k,))

    def sources(self):
        return [s for o in self.operands() for s in o.sources()]

    def dependency_slots(self):
        """Every tape slot the block reads (for sparsity detection)."""
        flats = [o.flat for o in self.operands() if o.active]
        return np.concatenate(flats) if flats else np.zeros(0, dtype=np.intp)

    def constant_partials(self):
        """True when the block's partials do not depend on the point (a linear
        map): its recorded state then serves any replay's tangents."""
        return False

    def sparsity(self):
        """How outputs depend on slots (see fastad._sparsity.propagate).  This
        default is dense: every output depends on every slot read, and they
        all interact nonlinearly (right for any block; exact for few)."""
        size = self.stop - self.start
        deps = self.dependency_slots()
        if deps.size == 0:
            return _deps(self, 0, None, None, np.zeros(size + 1, np.int64), np.zeros(0, np.int64))
        return _deps(self, 1, np.array([0, deps.size]), deps, np.arange(size + 1),
                     np.full(size, _virtual(0)), pairs=[[_virtual(0), _virtual(0)]])


def _virtual(v):
    """How a block's sparsity description names its virtual set v."""
    return -2 - v


def _deps(blk, n_virtual, virt_ptr, virt_idx, out_ptr, out_idx, pairs=None):
    return {"start": blk.start, "stop": blk.stop, "n_virtual": n_virtual,
            "virt_ptr": virt_ptr, "virt_idx": virt_idx, "out_ptr": out_ptr,
            "out_idx": out_idx, "pairs": None if pairs is None else np.asarray(pairs, np.int64)}


def _lists(rows):
    """Equal-length lists (a 2-D array, one list per row) as (ptr, idx)."""
    rows = np.asarray(rows, dtype=np.int64)
    m, k = rows.shape
    if k == 0:          # (a sum over an empty slice: outputs that depend on nothing)
        return np.zeros(m + 1, dtype=np.int64), rows.reshape(-1)
    return np.arange(0, (m + 1) * k, k, dtype=np.int64)[:m + 1], rows.reshape(-1)


def _lists_of(groups):
    """Several groups of equal-length lists (2-D arrays, lengths differing
    between groups) as one (ptr, idx)."""
    ptrs, idxs, off = [np.zeros(1, np.int64)], [], 0
    for g in groups:
        p, i = _lists(g)
        ptrs.append(p[1:] + off)
        idxs.append(i)
        off += i.size
    return np.concatenate(ptrs), (np.concatenate(idxs) if idxs else np.zeros(0, np.int64))


def _broadcast(g, shape):
    """np.broadcast_to(g, shape) (read-only) for g of shape's length, a
    quarter of the cost: a strided view, no iterator (made in C for a
    contiguous float64 g, the common case)."""
    view = broadcast_view(g, shape)
    if view is not None:
        return view
    g = np.ascontiguousarray(g)
    strides = tuple([0 if n == 1 and m != 1 else st
                     for n, m, st in zip(g.shape, shape, g.strides)])
    view = np.ndarray(shape, g.dtype, g, 0, strides)
    view.flags.writeable = False
    return view


def _unbroadcast(g, shape, k):
    """Sum g (out_shape + (k,)) down to shape + (k,), undoing NumPy broadcasting."""
    if g.shape[:-1] == shape:           # (the common case: nothing was broadcast)
        return g
    target = tuple(shape) + (k,)
    while g.ndim > len(target):
        g = g.sum(axis=0)
    for ax, n in enumerate(target[:-1]):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def _scalar(d):
    """A partial that is one number (np.ndim(d) == 0 without its Python-level call)."""
    return type(d) is not np.ndarray or d.ndim == 0


def _times(d, g):
    """d * g over k lanes (g has a trailing lane axis); zero lanes of g stay
    exact zeros where d is inf or NaN (strong zeros)."""
    if _scalar(d):
        if d == 1.0:
            return g
        if d == -1.0:
            return -g
        if d == 0.0:                    # a zero partial is an exact zero
            return np.zeros(np.shape(g))
        if math.isfinite(d):
            return g * d
    elif d.shape == g.shape[:-1]:
        return rows_times(d, g)          # one C pass, strong zeros included
    else:
        token = _quiet()
        try:
            r = g * d[..., None]
        finally:
            _loud(token)
        # finite products: the common case costs one cheap pass instead of a check of d
        if all_finite(r):
            return r
    dd = d if _scalar(d) else d[..., None]
    with np.errstate(invalid="ignore"):
        return np.where((g != 0) & (dd != 0), g * dd, 0.0)


def _curvature(a, t):
    """a * t (second partial times tangent, lanes last) with exact zeros
    where either factor is zero (the other may be inf or NaN); 0.0 when a
    or t is absent or a is the constant 0."""
    if t is None or a is None or (np.ndim(a) == 0 and a == 0.0):
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        r = t * (a if np.ndim(a) == 0 else a[..., None])
    if all_finite(r):
        return r
    aa = np.broadcast_to(a if np.ndim(a) == 0 else a[..., None], np.broadcast_shapes(np.shape(r)))
    with np.errstate(invalid="ignore"):
        return np.where((t != 0) & (aa != 0), r, 0.0)


try:        # np.errstate(all="ignore") is a Python-level context manager: set
    # NumPy's error-state context variable directly where it is there to set
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
    _IGNORE_ALL = _make_extobj(all="ignore")
except (ImportError, TypeError):                    # pragma: no cover (other NumPy)
    _extobj_contextvar = None


# Per op, from the table: the NumPy ufunc that computes its values over arrays
# (SIMD loops; the C table where there is none), and what its partials read.
_UFUNC = [getattr(np, u) if u else None for u in OP_UFUNCS]
_READS = [tuple(tuple(fl & FLAG[f"D{i}{w}"] != 0 for w in "XYV") for i in (0, 1))
          for fl in OP_FLAGS]
# per op and partial: 0, 1, 2 where the partial is x, y or v itself, else -1
_PASS = [tuple("xyv".find(d) if len(d) == 1 else -1 for d in srcs)
         for srcs in OP_PARTIAL_SOURCES]


def _ignoring_fp_errors(fn, *args):
    token = _quiet()
    try:
        return fn(*args)
    finally:
        _loud(token)


_ADD_REDUCE = np.add.reduce
_MATMUL = np.matmul             # (out positional: no keyword parsing)
_cv_set = _cv_reset = None
if _extobj_contextvar is not None:
    _cv_set, _cv_reset = _extobj_contextvar.set, _extobj_contextvar.reset


cdef object _quiet():
    """Ignore NumPy's floating-point errors until _loud(token): np.errstate
    without its Python-level context manager (a microsecond a block)."""
    if _cv_set is not None:
        return _cv_set(_IGNORE_ALL)
    state = np.errstate(all="ignore")
    state.__enter__()
    return state


cdef int _loud(object token) except -1:
    if _cv_reset is not None:
        _cv_reset(token)
    else:
        token.__exit__(None, None, None)
    return 0


def _values_into(op, x, y, out):
    uf = _UFUNC[op]
    if uf is None:
        _ew.values(op, x, y, out)
    elif y is None:
        uf(x, out)            # (out positional: no keyword parsing)
    else:
        uf(x, y, out=out)     # (positional, np.maximum warns: deprecated)
    return out


def op_values(name, x, y=None):
    """Op `name` elementwise on plain numbers/ndarrays (NumPy's broadcasting)."""
    shape = np.broadcast_shapes(np.shape(x), np.shape(y)) if y is not None else np.shape(x)
    return _ignoring_fp_errors(_values_into, OP_CODE[name], x, y, np.empty(shape))


def _case_table(fn):
    """Per op, fn(reads, active) for each case of Elementwise._active_case:
    reads[i] is what operand i's partial reads, active which operands are."""
    table = []
    for reads in _READS:
        row = []
        for case in range(8):
            n = 2 if case & 4 else 1
            row.append(fn(reads[:n], [bool(case >> i & 1) for i in range(n)]))
        table.append(tuple(row))
    return tuple(table)


# whether an active operand's partial reads the block's output; which
# operands no active operand's partial reads (bits), per op and case
_KEEPS = _case_table(lambda reads, active: any(r[2] for r, a in zip(reads, active) if a))
_OVERWRITABLE = _case_table(lambda reads, active: sum(
    1 << i for i in range(len(reads)) if not any(r[i] for r, a in zip(reads, active) if a)))


cdef object _fixed_partial(int op, int i, x, y):
    """Elementwise's partial for operand i when it reads no array (a number), else None."""
    rx, ry, rv = (<tuple>_READS[op])[i]
    if rv or (rx and (x.idx is not None or x.const.ndim != 0)) or \
            (ry and (y.idx is not None or y.const.ndim != 0)):
        return None
    return op_eval(op, float(x.const) if rx else 0.0, float(y.const) if ry else 0.0)[1 + i]


class Elementwise(ElementwiseSecond, Block):
    """z = op(x) or op(x, y) elementwise with broadcasting, any op of the table.

    Values come from the op's NumPy ufunc (or the C table); the partials are
    not kept: each sweep computes them from the operands' values and the
    block's own (csrc's fad_times_partial, fused with the sweep where nothing
    is broadcast), so the block holds no state and a table entry is all an op
    needs."""

    handoff = True

    def __init__(self, name, x, y, shape):
        self.name, self.x, self.y = name, x, y
        self.shape = shape if type(shape) is tuple else tuple(shape)
        op = self.op = OP_CODE[name]
        # per operand, its partial when that reads no array (x + y, 2.0 * x):
        # a number, fixed at recording; None where a sweep computes it
        if y is None:
            self.fixed = (_fixed_partial(op, 0, x, None),)
        else:
            self.fixed = (_fixed_partial(op, 0, x, y), _fixed_partial(op, 1, x, y))

    def operands(self):
        return (self.x,) if self.y is None else (self.x, self.y)

    def describe(self):
        return f"{self.name}{list(self.shape)}"

    def compute(self, val, out):
        yv = None if self.y is None else self.y.value(val)
        xv = self.x.value(val)
        token = _quiet()
        try:
            _values_into(self.op, xv, yv, out)
        finally:
            _loud(token)
        return None

    def _reads(self, i):
        """(x, y, v): which values the partial for operand i reads."""
        return _READS[self.op][i]

    def _active_case(self):
        """Which operands are active: bit 0 x, bit 1 y; bit 2 set for a binary op."""
        y = self.y
        if y is None:
            return self.x.idx is not None
        return 4 | (self.x.idx is not None) | ((y.idx is not None) << 1)

    def keeps_output(self):
        return _KEEPS[self.op][self._active_case()]

    def overwritable_operands(self):
        """Bits 1, 2: operands x, y whose memory this block may write its
        output over (no partial it computes reads that operand's values)."""
        return _OVERWRITABLE[self.op][self._active_case()]

    def active_operands(self):
        return [o for o in self.operands() if o.active]

    def active_partials(self, val, state):
        """(operand, partial) of the active operands."""
        return [(o, d) for o, d in zip(self.operands(), self._partials(val, state)) if o.active]

    def constant_partials(self):
        """Its active operands' partials read no active operand and no output."""
        ops = self.operands()
        for i, o in enumerate(ops):
            if o.active:
                rx, ry, rv = self._reads(i)
                if rv or (rx and ops[0].active) or (ry and ops[1].active):
                    return False
        return True

    def sparsity(self):
        """One scalar op per element: the op table's flags decide."""
        def slots(o):
            if o is None:
                return None
            if not o.active:
                return np.full(self.stop - self.start, -1, dtype=np.int64)
            return np.broadcast_to(o.idx, self.shape).reshape(-1)
        return {"start": self.start, "stop": self.stop, "n_virtual": 0,
                "op": self.op, "a0": slots(self.x), "a1": slots(self.y)}

    def _own(self, val):
        return rows_view(val, self.start, self.shape)

    def _inputs(self, val, i):
        """(x, y, v) values the partial for operand i reads (None: not read)."""
        rx, ry, rv = self._reads(i)
        return (self.x.value(val) if rx else None,
                self.y.value(val) if ry else None,
                self._own(val) if rv else None)

    def _partial(self, val, i):
        """The partial for operand i: a number where it reads no array, else
        an array of the block's shape."""
        d = self.fixed[i]
        if d is not None:
            return d
        x, y, v = self._inputs(val, i)
        src = _PASS[self.op][i]
        if src >= 0:           # the partial is x, y or v itself (exp: v): no pass
            return np.broadcast_to((x, y, v)[src], self.shape)
        return _ew.partials(self.op, x, y, v, self.shape, i == 0, i == 1)[i]

    def _partials(self, val, state=None):
        return [self._partial(val, i) if o.active else None
                for i, o in enumerate(self.operands())]

    def _fused(self, val, i, operand):
        """(x, y, v) for operand i's pullback or push in one C pass, or None
        where its partial is a number or something is broadcast."""
        shape = self.shape
        if self.fixed[i] is not None or operand.shape != shape:
            return None
        rx, ry, rv = (<tuple>_READS[self.op])[i]       # (_inputs, inline: once a block)
        xv = yv = vv = None
        if rx:
            xv = self.x.value(val)
            if xv.shape != shape and xv.ndim != 0:
                return None
        if ry:
            yv = self.y.value(val)
            if yv.shape != shape and yv.ndim != 0:
                return None
        if rv:
            vv = rows_view(val, self.start, shape)
        return xv, yv, vv

    def reverse(self, val, state, adj, k, cot=None):
        x, y = self.x, self.y
        xa = x.idx is not None
        if y is None or not (xa and y.idx is not None):     # one pullback: it may write over g
            i, operand = (0, x) if xa else (1, y)
            g, owned = (adj[self.start:self.stop], False) if cot is None else \
                cot.take_owned(self, adj)
            if g is None:
                return
            xyv = self._fused(val, i, operand)
            if xyv is not None:
                r = _ew.times_partial(self.op, i, xyv[0], xyv[1], xyv[2], g, self.shape,
                                      g if owned else None)
                operand.add_adjoint(adj, r.reshape(self.shape + (k,)), k, cot, owned or None)
            else:
                g = g.reshape(self.shape + (k,))
                d = self._partial(val, i)
                operand.add_adjoint(adj, _unbroadcast(_times(d, g), operand.shape, k), k, cot)
            return
        g = self.cotangent(adj, k, cot)
        if g is None:
            return
        for i, operand in ((0, x), (1, y)):
            xyv = self._fused(val, i, operand)
            if xyv is not None:
                operand.add_adjoint(adj, _ew.times_partial(self.op, i, xyv[0], xyv[1], xyv[2],
                                                           g, self.shape), k, cot)
            else:
                d = self._partial(val, i)
                operand.add_adjoint(adj, _unbroadcast(_times(d, g), operand.shape, k), k, cot)

    def _second(self, val):
        """(f_xx, f_xy, f_yy) elementwise, 0.0 where the table's flags say a
        second partial vanishes or no active operand pair needs it, or None
        when nothing is left (linear in the active operands)."""
        fl = OP_FLAGS[self.op]
        xa, ya = self.x.active, self.y is not None and self.y.active
        need = (xa and not fl & FLAG["Z00"], xa and ya and not fl & FLAG["Z01"],
                ya and not fl & FLAG["Z11"])
        if not any(need):
            return None
        yv = None if self.y is None else self.y.value(val)
        second = _ew.second(self.op, self.x.value(val), yv, self._own(val), self.shape)
        return tuple(s if n else 0.0 for s, n in zip(second, need))

    def reverse2(self, val, state, tan, adj, adt, k):
        """Second order (forward-over-reverse): for z = f(x, y),
        xbar' += f_x zbar' + zbar (f_xx x' + f_xy y'), and alike for y."""
        if self._fused_second(val, tan, adj, adt, k) is not None:
            return
        g = adj[self.start:self.stop].reshape(self.shape + (1,))
        gd = adt[self.start:self.stop].reshape(self.shape + (k,))
        second = self._second(val)
        tx = self.x.tangent(tan, k) if self.x.active else None
        ty = self.y.tangent(tan, k) if self.y is not None and self.y.active else None
        pairs = ((None, None), (None, None)) if second is None else \
            ((second[0], second[1]), (second[1], second[2]))
        n = self.stop - self.start
        for operand, d, (a, b) in zip(self.operands(), self._partials(val), pairs):
            if not operand.active:
                continue
            flat = (a is None or tx is None or (_scalar(a) and a == 0.0)) and \
                (b is None or ty is None or (_scalar(b) and b == 0.0))     # no curvature
            if not flat and operand.start >= 0 and operand.shape == self.shape and \
                    all(v is None or _scalar(v) or v.size == n for v in (d, a, b)) and \
                    all(t is None or t.size == n * k for t in (tx, ty)):
                # a nonlinear op over a run of slots, no broadcasting: one C pass
                # (a linear one is two NumPy passes as it is)
                rows = slice(operand.start, operand.start + n)
                second_rows(d, a, tx, b, ty, g.reshape(-1), gd, adj[rows], adt[rows])
                continue
            operand.add_adjoint(adj, _unbroadcast(_times(d, g), operand.shape, 1), 1)
            tot = _times(d, gd)
            if second is not None:
                curv = _curvature(a, tx) + _curvature(b, ty)
                if np.ndim(curv):
                    with np.errstate(invalid="ignore", over="ignore"):
                        extra = g * curv
                    if not all_finite(extra):
                        # strong zeros: a zero zbar, or a zero curvature term
                        # under an inf zbar, is an exact zero
                        extra = np.where((g != 0) & (curv != 0), extra, 0.0)
                    tot = tot + extra
            tot = np.broadcast_to(tot, self.shape + (k,))
            operand.add_adjoint(adt, _unbroadcast(tot, operand.shape, k), k)

    def tangent(self, val, state, tan, k):
        """Straight into the block's rows of tan: d0 x' (+ d1 y'), in place,
        one C pass per operand where nothing is broadcast.  A zero partial
        passes nothing, even an inf or NaN tangent (strong zeros)."""
        dest = tan[self.start:self.stop].reshape(self.shape + (k,))
        first = True
        terms = []
        for i, operand in enumerate(self.operands()):
            if not operand.active:
                continue
            t = operand.tangent(tan, k)
            xyv = self._fused(val, i, operand)
            if xyv is not None:
                _ew.times_partial(self.op, i, xyv[0], xyv[1], xyv[2], t, self.shape, dest,
                                  not first)
                first = False
            else:
                terms.append((self._partial(val, i), t))
        if not terms:
            if first:
                dest[...] = 0.0
            return
        with np.errstate(invalid="ignore", over="ignore"):
            if first and len(terms) == 2 and all(_scalar(d) and abs(d) == 1.0 for d, _ in terms) \
                    and all(t.shape == dest.shape for _, t in terms):
                (d0, t0), (d1, t1) = terms            # x' +- y': one pass
                (np.add if d0 == d1 else np.subtract)(t0, t1, out=dest)
                if d0 == -1.0:
                    np.negative(dest, out=dest)
                return
            for d, t in terms:
                r = _times(d, t)
                if first:
                    dest[...] = np.broadcast_to(r, dest.shape)
                    first = False
                else:
                    dest += r


def _mm_strong(X, Y):
    """X @ Y with strong zeros: a product with a zero factor is an exact zero
    even where the other factor is inf or NaN (a zero cotangent or tangent
    passes nothing, as in the element-wise rules).  The check reads the
    result or both factors, whichever is smaller (finite factors make NumPy's
    product the answer: an overflow involves no zero); only a non-finite
    one pays more."""
    token = _quiet()
    try:
        r = X @ Y
        if X.size + Y.size < r.size:
            if all_finite(X) and all_finite(Y):
                return r
        elif all_finite(r):
            return r
        fx, fy = np.isfinite(X), np.isfinite(Y)
        if fx.all() and fy.all():
            return r                          # an overflow: no zero was involved
        nx, ny = (X != 0).astype(float), (Y != 0).astype(float)
        # where a nonzero product has a non-finite factor the result is NumPy's;
        # elsewhere the finite factors alone decide it
        hit = (nx * ~fx) @ ny + nx @ (ny * ~fy)
        exact = np.where(fx, X, 0.0) @ np.where(fy, Y, 0.0)
        return np.where(hit > 0, r, exact)
    finally:
        _loud(token)


def _value_as(o, val, shape):
    """o.value(val).reshape(shape): one view for a run of slots."""
    if o.idx is not None and o.start >= 0:
        return rows_view(val, o.start, shape)
    return o.value(val).reshape(shape)


def _as2d(shape, left):
    """matmul's promotion of a 1-D operand: (K,) -> (1, K) on the left, (K, 1) on the right."""
    if len(shape) == 2:
        return shape
    return (1, shape[0]) if left else (shape[0], 1)


class Matmul(Block):
    """C = A @ B for 1-D/2-D A, B.  Going back: Abar = Cbar B^T, Bbar = A^T Cbar,
    one matrix-matrix product each for all k seeds (BLAS3)."""

    handoff = True

    def __init__(self, a, b, shape):
        self.a, self.b, self.shape = a, b, tuple(shape)
        self.sa, self.sb = _as2d(a.shape, True), _as2d(b.shape, False)

    def operands(self):
        return (self.a, self.b)

    def describe(self):
        return f"matmul{list(self.a.shape)}x{list(self.b.shape)}"

    def compute(self, val, out):
        A, B = self._ab(val)
        _MATMUL(A, B, out if out.ndim == 2 else out.reshape(A.shape[0], B.shape[1]))
        return None      # the sweeps read A and B back from the slots

    def _ab(self, val):
        return _value_as(self.a, val, self.sa), _value_as(self.b, val, self.sb)

    def keeps_output(self):
        return False

    def constant_partials(self):
        return not (self.a.active and self.b.active)

    def sparsity(self):
        """C[i, j] depends on row i of A and column j of B (virtual sets, so
        each is gathered once); C = A B is bilinear, so column k of A
        interacts with row k of B."""
        (M, K), N = self.sa, self.sb[1]
        A = self.a.idx.reshape(self.sa) if self.a.active else None
        Bm = self.b.idx.reshape(self.sb) if self.b.active else None
        lists, outs, v = [], [], 0
        if A is not None:
            lists.append(A)                                   # rows of A: sets 0 .. M-1
            outs.append(np.repeat(np.arange(M), N) + v)
            v += M
        if Bm is not None:
            lists.append(Bm.T)                                # columns of B
            outs.append(np.tile(np.arange(N), M) + v)
            v += N
        pairs = None
        if A is not None and Bm is not None:
            lists.append(A.T)                                 # columns of A
            lists.append(Bm)                                  # rows of B
            pairs = np.stack([np.arange(K) + v, np.arange(K) + v + K], axis=1)
            v += 2 * K
            pairs = _virtual(pairs)
        vp, vi = _lists_of(lists)
        op, oi = _lists(_virtual(np.stack(outs, axis=1)))
        return _deps(self, v, vp, vi, op, oi, pairs)

    def reverse(self, val, state, adj, k, cot=None):
        G = self.cotangent(adj, k, cot)
        if G is None:
            return
        A, B = self._ab(val)
        M, N = A.shape[0], B.shape[1]
        G = G.reshape(M, N, k)
        if self.a.idx is not None:
            if k == 1:
                Abar = _mm_strong(G[:, :, 0], B.T)[:, :, None]
            else:   # (M k, N) x (N, K) -> (M, k, K), one GEMM
                Abar = _mm_strong(G.transpose(0, 2, 1).reshape(M * k, N), B.T).reshape(
                    M, k, B.shape[0]).transpose(0, 2, 1)
            self.a.add_adjoint(adj, Abar, k, cot)
        if self.b.idx is not None:   # (K, M) @ (M, N*k): one GEMM, already slot-major for B
            self.b.add_adjoint(adj, _mm_strong(A.T, G.reshape(M, N * k)), k, cot)

    def reverse2(self, val, state, tan, adj, adt, k):
        """C = A B is bilinear: Abar' = Cbar' B^T + Cbar B'^T, Bbar' = A^T Cbar' + A'^T Cbar."""
        A, B = self._ab(val)
        M, K, N = A.shape[0], A.shape[1], B.shape[1]
        G = adj[self.start:self.stop].reshape(M, N)
        Gd = adt[self.start:self.stop].reshape(M, N, k)
        Adot = self.a.tangent(tan, k).reshape(M, K, k) if self.a.active else None
        Bdot = self.b.tangent(tan, k).reshape(K, N, k) if self.b.active else None
        if self.a.active:
            self.a.add_adjoint(adj, (G @ B.T)[..., None], 1)
            Ad = np.einsum("mnj,kn->mkj", Gd, B)
            if Bdot is not None:
                Ad += np.einsum("mn,knj->mkj", G, Bdot)
            self.a.add_adjoint(adt, Ad, k)
        if self.b.active:
            self.b.add_adjoint(adj, (A.T @ G)[..., None], 1)
            Bd = np.einsum("mk,mnj->knj", A, Gd)
            if Adot is not None:
                Bd += np.einsum("mkj,mn->knj", Adot, G)
            self.b.add_adjoint(adt, Bd, k)

    def tangent(self, val, state, tan, k):
        A, B = self._ab(val)
        M, N = A.shape[0], B.shape[1]
        t = np.zeros((M, N, k))
        if self.a.active:
            Adot = self.a.tangent(tan, k).reshape(M, A.shape[1], k)
            t += _mm_strong(Adot.transpose(0, 2, 1).reshape(M * k, A.shape[1]), B).reshape(
                M, k, N).transpose(0, 2, 1)
        if self.b.active:
            Bdot = self.b.tangent(tan, k).reshape(B.shape[0], N * k)
            t += _mm_strong(A, Bdot).reshape(M, N, k)
        tan[self.start:self.stop] = t.reshape(-1, k)


class Sum(Block):
    """Sum over axes (a linear block: no state)."""

    handoff = True

    def __init__(self, x, axis, keepdims, shape):
        self.x, self.axis, self.keepdims, self.shape = x, axis, keepdims, tuple(shape)

    def operands(self):
        return (self.x,)

    def describe(self):
        return f"sum{list(self.x.shape)}" + ("" if self.axis is None else f"(axis={self.axis})")

    def compute(self, val, out):
        # (the ufunc's reduce itself: np.sum's dispatch and wrapper cost more than the data)
        _ADD_REDUCE(self.x.value(val), self.axis, None, out, self.keepdims)
        return None

    def keeps_output(self):
        return False

    def constant_partials(self):
        return True

    def sparsity(self):
        """Each output depends on the elements summed into it (linear)."""
        axes = tuple(range(len(self.x.shape))) if self.axis is None else tuple(self.axis)
        idx = np.moveaxis(self.x.idx, axes, tuple(range(-len(axes), 0)))
        size = self.stop - self.start
        op, oi = _lists(idx.reshape(size, idx.size // size) if size else np.zeros((0, 1)))
        return _deps(self, 0, None, None, op, oi)

    def _expand(self, g, k):
        """g (shape + (k,)) -> x.shape + (k,) by broadcasting along the summed axes."""
        if not self.keepdims:
            axes = range(len(self.x.shape)) if self.axis is None else self.axis
            g = g.reshape(tuple([1 if ax in axes else n for ax, n in enumerate(self.x.shape)])
                          + (k,))
        return _broadcast(g, self.x.shape + (k,))

    def reverse(self, val, state, adj, k, cot=None):
        g = self.cotangent(adj, k, cot)
        if g is not None:
            self.x.add_adjoint(adj, self._expand(g, k), k, cot)

    def reverse2(self, val, state, tan, adj, adt, k):
        self.reverse(val, state, adj, 1)
        self.reverse(val, state, adt, k)

    second_linear = True        # reverse2_gd_zero writes no adjoint tangents

    def reverse2_gd_zero(self, val, state, tan, adj, adt, k):
        """reverse2 with zero adjoint tangents (see Elementwise's): linear,
        so only the adjoints move."""
        self.reverse(val, state, adj, 1)
        return False

    def tangent(self, val, state, tan, k):
        t = self.x.tangent(tan, k)
        axis = tuple(range(len(self.x.shape))) if self.axis is None else self.axis
        tan[self.start:self.stop] = np.sum(t, axis=axis, keepdims=self.keepdims).reshape(-1, k)


CMP_UFUNCS = {"lt": np.less, "le": np.less_equal, "gt": np.greater,
              "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal}


class Check(Block):
    """A block with no outputs and no derivative: replay re-checks a decision
    taken while recording (a comparison, a max) and raises if it changes."""

    shape = (0,)
    handoff = True          # adds nothing to any adjoint

    def compute(self, val, out):
        return None

    def reverse(self, val, state, adj, k, cot=None):
        pass

    def reverse2(self, val, state, tan, adj, adt, k):
        pass

    def tangent(self, val, state, tan, k):
        pass


class Compare(Check):
    """An elementwise comparison of arrays, re-checked on replay."""

    def __init__(self, kind, x, y, outcome):
        self.kind, self.x, self.y, self.outcome = kind, x, y, outcome

    def operands(self):
        return (self.x, self.y)

    def describe(self):
        return f"{self.kind}{list(self.outcome.shape)}"

    def forward(self, val):
        with np.errstate(all="ignore"):
            now = CMP_UFUNCS[self.kind](self.x.value(val), self.y.value(val))
        if not np.array_equal(now, self.outcome):
            where = np.argwhere(now != self.outcome)[0]
            raise BranchChangedError(
                f"fastad: the array comparison {self.kind} recorded before slot "
                f"{self.start} changed at element {tuple(int(i) for i in where)} "
                f"(was {bool(self.outcome[tuple(where)])}) at the new input: the "
                f"function takes another branch there, so this tape does not "
                f"describe it. Record a new tape at this input with fad.record(f, x).")
        return None


class Selection(Check):
    """max/min as the choice of a slot, re-checked on replay."""

    def __init__(self, x, axis, chosen, name):
        self.x, self.axis, self.chosen, self.name = x, axis, chosen, name

    def operands(self):
        return (self.x,)

    def describe(self):
        return f"arg{self.name}{list(self.x.shape)}"

    def forward(self, val):
        values = self.x.value(val)
        pick = np.argmax if self.name == "max" else np.argmin
        if self.axis is None:
            now = np.array(pick(values.reshape(-1)))
        else:
            now = np.expand_dims(pick(values, axis=self.axis), self.axis)
        if not np.array_equal(now, self.chosen):
            raise BranchChangedError(
                f"fastad: the {self.name} recorded before slot {self.start} picks "
                f"another element at the new input, so this tape does not describe "
                f"the function there. Record a new tape at this input with fad.record(f, x).")
        return None


class TangentFold:
    """A forward sweep with a fixed seed matrix (a sparse Jacobian's
    compressed sweep) over a tape of blocks and constants.

    A block with constant partials whose operands have constant tangents
    has constant tangents itself: the seeds alone decide them.  They are
    computed once, at the first point, and kept in `buffer`; a later call
    recomputes only the other blocks' tangents, and replays only the values
    their partials read and the comparisons re-checked.  In `x[:-2] - 2*x[1:-1]
    + x[2:] + h * exp(x)` only the three blocks after exp are swept again."""

    def __init__(self, tape, seeds, x):
        import threading
        blocks = tape.blocks
        n = tape.n_nodes
        self.k = seeds.shape[0]
        self.const_slots = tape._constant_slots()
        self.const_values = tape.recorded_values()[self.const_slots].copy()
        owner = np.full(n, -1, dtype=np.intp)
        for bi, blk in enumerate(blocks):
            owner[blk.start:blk.stop] = bi
        deps = []
        readers = [[] for _ in blocks]      # per block: (reader, operand) taking it whole
        for ri, blk in enumerate(blocks):
            reads = np.zeros(len(blocks) + 1, dtype=bool)     # block index + 1; 0: none
            for oi, o in enumerate(blk.operands()):
                if o.active:
                    slots = owner[o.start:o.start + o.flat.size] if o.start >= 0 else owner[o.flat]
                    mine = np.zeros(len(blocks) + 1, dtype=bool)
                    mine[slots + 1] = True
                    reads |= mine
                    p = owner[o.start] if o.start >= 0 and o.flat.size else -1
                    # whole and in its shape: a chain multiplies row by row
                    whole = p >= 0 and blocks[p].start == o.start and \
                        blocks[p].stop - blocks[p].start == o.flat.size and \
                        o.shape == blocks[p].shape
                    for q in np.flatnonzero(mine[1:]):
                        if q != p or not whole or isinstance(blk, Check):
                            readers[q].append(None)            # read otherwise
                        else:
                            readers[p].append((ri, oi))
            deps.append(np.flatnonzero(reads[1:]).tolist())
        const_tan = []
        for bi, blk in enumerate(blocks):
            const_tan.append(isinstance(blk, Check) or (
                blk.constant_partials() and all(const_tan[d] for d in deps[bi])))
        outs = np.asarray(tape.out_slots, dtype=np.intp).reshape(-1)
        need_tan = np.zeros(len(blocks), dtype=bool)
        need_tan[np.unique(owner[outs][owner[outs] >= 0])] = True
        need_val = np.zeros(len(blocks), dtype=bool)
        for bi in range(len(blocks) - 1, -1, -1):
            blk = blocks[bi]
            if need_tan[bi] and not const_tan[bi]:
                need_tan[deps[bi]] = True
                if not blk.constant_partials():
                    need_val[bi] = True
            if isinstance(blk, Check):
                need_val[bi] = True
            if need_val[bi]:
                need_val[deps[bi]] = True
        self.run_tangent = [bi for bi in range(len(blocks)) if need_tan[bi] and not const_tan[bi]]
        self.run_forward = [bi for bi in range(len(blocks)) if need_val[bi]]
        self._chains(blocks, readers, set(owner[outs][owner[outs] >= 0].tolist()))
        self.states = tape._recorded_states()
        self.useful = len(self.run_forward) < len(blocks) or bool(self.eliminated) or \
            len(self.run_tangent) < sum(not isinstance(b, Check) for b in blocks)
        self.tangents = tape._full_tangents(x, seeds) if self.useful else None
        self.fused = self.fixed = None      # see fuse_output
        self._lock = threading.Lock()

    def _chains(self, blocks, readers, outputs):
        """Unary element-wise blocks read whole by one element-wise block are
        not swept: their reader takes the product of the partials along the
        chain (exp then a scaling in the Bratu residual), so their tangent
        rows are never written or read.  self.chains: reader -> per active
        operand, the eliminated blocks from the reader back."""
        run = set(self.run_tangent)

        def rowwise(bi):         # element-wise, no broadcasting of its active operands
            b = blocks[bi]
            return bi in run and type(b) is Elementwise and all(
                o.shape == b.shape for o in b.operands() if o.active)

        def eliminable(bi):
            b = blocks[bi]
            r = readers[bi]
            return rowwise(bi) and bi not in outputs and len(b.active_operands()) == 1 \
                and len(r) == 1 and r[0] is not None and rowwise(r[0][0])

        self.eliminated = {bi for bi in self.run_tangent if eliminable(bi)}
        owner = {b.start: bi for bi, b in enumerate(blocks) if b.stop > b.start}
        self.chains = {}
        for bi in self.run_tangent:
            if bi in self.eliminated or not rowwise(bi):
                continue
            per_operand, found = [], False
            for o in blocks[bi].active_operands():
                chain, p = [], owner.get(o.start)
                while p in self.eliminated and blocks[p].shape == o.shape:
                    chain.append(p)
                    o = blocks[p].active_operands()[0]
                    p = owner.get(o.start)
                per_operand.append(chain)
                found = found or bool(chain)
            if found:
                self.chains[bi] = per_operand

    def fuse_output(self, blocks, gather, indptr, out_slots, val):
        """When the Jacobian's rows are exactly the last swept block's rows, in
        order, read its tangents at the nonzeros instead of writing them out
        (combine_gather): lanes[p] is nonzero p's lane.  val: the recorded
        values (for the constant partials)."""
        self.fused = self.fixed = None
        if not self.run_tangent or gather is None:
            return
        bi = self.run_tangent[-1]
        b = blocks[bi]
        outs = np.asarray(out_slots, dtype=np.int64).reshape(-1)
        if bi in self.eliminated or type(b) is not Elementwise or \
                any(o.shape != b.shape for o in b.active_operands()) or \
                outs.size != b.stop - b.start or \
                not np.array_equal(outs, np.arange(b.start, b.stop)):
            return
        rows = np.repeat(np.arange(outs.size, dtype=np.int64), np.diff(indptr))
        self.fused = (bi, (gather - (b.start + rows) * self.k).astype(np.int32),
                      np.asarray(indptr, dtype=np.int64))
        self.fixed = self._fixed_gather(blocks, bi, rows, self.fused[1], val)

    def _terms(self, blocks, bi, val, states):
        """The last block's terms: per active operand, after the eliminated
        chains, (operand whose tangents it reads, [partials to multiply],
        [the blocks they come from])."""
        blk = blocks[bi]
        chains = self.chains.get(bi) or [()] * len(blk.active_operands())
        terms = []
        for (o, d), chain in zip(blk.active_partials(val, states[bi]), chains):
            factors, owners = [d], [bi]
            for p in chain:
                (o, dp), = blocks[p].active_partials(val, states[p])
                factors.append(dp)
                owners.append(p)
            terms.append((o, factors, owners))
        return terms

    def _fixed_gather(self, blocks, bi, rows, lanes, val):
        """When no tangent the last block reads changes from call to call, its
        nonzeros' tangents are fixed too: a FixedGather keeps them, and a call
        only multiplies in the partials that change (the exp values of the
        Bratu residual), with no tangent buffer at all."""
        moving = np.zeros(blocks[-1].stop, dtype=bool)
        for p in self.run_tangent:
            moving[blocks[p].start:blocks[p].stop] = True
        terms = self._terms(blocks, bi, val, self.states)
        for o, _, _ in terms:
            if (o.start >= 0 and moving[o.start:o.start + o.flat.size].any()) or \
                    (o.start < 0 and moving[o.flat[o.flat < moving.size]].any()):
                return None
        base = np.zeros(lanes.size)
        varying, self._varying = [], []
        for i, (o, factors, owners) in enumerate(terms):
            g = o.tangent(self.tangents, self.k).reshape(-1, self.k)[rows, lanes]
            if all(blocks[p].constant_partials() for p in owners):
                for d in factors[::-1]:          # innermost first, as the sweep
                    if not _scalar(d):
                        d = np.broadcast_to(d, blocks[bi].shape).reshape(-1)[rows]
                    with np.errstate(invalid="ignore", over="ignore"):
                        g = np.where((g == 0.0) | (d == 0.0), 0.0, g * d)
                base += g
            elif len(factors) > 8:
                return None                 # more than FixedGather multiplies in
            else:
                nz = np.flatnonzero(g)
                varying.append((nz, rows[nz], None if (g[nz] == 1.0).all() else g[nz]))
                self._varying.append(i)
        return FixedGather(base, varying, blocks[bi].stop - blocks[bi].start)

    def fixed_data(self, blocks, val, states):
        """The Jacobian's nonzeros through the FixedGather (see _fixed_gather)."""
        bi = self.fused[0]
        shape, rows = blocks[bi].shape, self.fixed.n_rows
        terms = self._terms(blocks, bi, val, states)
        return self.fixed([[d if np.ndim(d) == 0 or np.size(d) == rows else
                            np.broadcast_to(d, shape).reshape(-1) for d in terms[i][1][::-1]]
                           for i in self._varying])     # innermost first, as the sweep

    def fuse(self, tape, gather, indptr):
        """fuse_output for this tape (the interface of folds, fastad._fold)."""
        self.fuse_output(tape.blocks, gather, indptr, tape.out_slots, tape.recorded_values())

    def sweep(self, tape, x, gather):
        """The Jacobian's nonzeros at x (the gather positions of the
        tangents); as ScalarFold.sweep.  Only the values some changing block
        reads are replayed and only those blocks are swept."""
        with tape._replayed(x, self.const_slots, self.const_values, self.states,
                            self.run_forward) as (val, states):
            blocks = tape.blocks
            if self.fixed is not None:            # no tangent buffer to sweep
                return self.fixed_data(blocks, val, states)
            with self.buffer() as tan:
                data = self.sweep_blocks(blocks, val, states, tan)
                return data if data is not None else gather_flat(tan, gather)

    def sweep_blocks(self, blocks, val, states, tan):
        """The blocks' tangents that change, into tan; with a fused output
        (fuse_output), returns the Jacobian's nonzeros, else None."""
        fused = self.fused
        for bi in self.run_tangent:
            if bi in self.eliminated:
                continue
            chains = self.chains.get(bi)
            last = fused is not None and bi == fused[0]
            if chains is None and not last:
                blocks[bi].tangent(val, states[bi], tan, self.k)
                continue
            blk = blocks[bi]
            terms = []
            for (o, d), chain in zip(blk.active_partials(val, states[bi]),
                                     chains or [()] * len(blk.active_operands())):
                for p in chain:
                    (o, dp), = blocks[p].active_partials(val, states[p])
                    d = _chain_partial(d, dp)
                terms.append((d, o.tangent(tan, self.k)))
            (d0, t0), (d1, t1) = terms if len(terms) == 2 else (terms[0], (None, None))
            if last:
                k = self.k
                return combine_gather(d0, t0.reshape(-1, k), d1,
                                      None if t1 is None else t1.reshape(-1, k),
                                      fused[2], fused[1])
            combine_rows(d0, t0, d1, t1, tan[blk.start:blk.stop])
        return None

    def buffer(self):
        """The kept tangents to sweep into: the buffer itself, or a copy of
        it while another thread holds it."""
        return kept(self.tangents, self._lock)


def _chain_partial(outer, inner):
    """outer * inner elementwise, where a zero factor gives an exact zero even
    against an inf/NaN one (a zero partial passes nothing, as in the sweeps)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = outer * inner
    if np.ndim(r) == 0:
        return 0.0 if outer == 0.0 or inner == 0.0 else float(r)
    if all_finite(r):
        return r
    return np.where((np.asarray(outer) == 0.0) | (np.asarray(inner) == 0.0), 0.0, r)
