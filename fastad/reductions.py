"""Reductions and scans on fad.Array: prod, cumsum, cumprod, var, std, ptp,
trace, diff, average, and max/min over several axes.

cumsum, cumprod and prod are one block node each (below); the others are
compositions of existing operations (sums, slices, element-wise ops), so
every mode comes with them.  All take plain numbers and ndarrays too (then
they are NumPy).

Conventions where NumPy says nothing about derivatives:
- max/min (and so ptp): the derivative goes to the first extreme element in
  C order over the reduced axes (as np.argmax); a replay where another
  element wins raises fad.BranchChangedError.
- prod/cumprod are exact at zeros (no division by x): the partial of a
  product is the product of the other factors, from prefix and suffix products.
- std at a point of zero spread has an infinite derivative (sqrt'(0) = inf),
  as d/dx sqrt(x) at 0; over one element (ddof = 0) std is 0 everywhere and
  so are its derivatives.
- sum/prod over an empty axis are constants (0 and 1) on the tape.
- nansum, nanprod, nanmean, nanmax, nanmin, nanvar, nanstd, nancumsum,
  nancumprod, nan_to_num: NaNs (and for nan_to_num infinities) get derivative 0;
  where they are is a recorded comparison, re-checked on replay.
"""
import builtins
import math
import numbers

import numpy as np

from fastad import _blocks as B
from fastad import arrays as A
from fastad._kernels import all_finite
from fastad._var import make_array, value_of

__all__ = ["prod", "cumsum", "cumprod", "cumulative_sum", "cumulative_prod", "var", "std",
           "ptp", "trace", "diff", "average", "amax", "amin", "max", "min", "nansum",
           "nanprod", "nanmean", "nanmax", "nanmin", "nanvar", "nanstd", "nancumsum",
           "nancumprod", "nan_to_num"]


# ---------------------------------------------------------------- helpers

def _mul(a, b):
    """a * b where a zero factor gives an exact zero, even against inf or NaN
    (strong zeros, as the sweeps treat a zero partial or cotangent)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = a * b
    if all_finite(r):
        return r
    with np.errstate(invalid="ignore"):
        return np.where((a == 0) | (b == 0), 0.0, r)


def _check_axis(name, axis, ndim):
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"fastad.{name}: axis must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"fastad.{name}: axis {axis} is out of bounds for an array "
                         f"of dimension {ndim}")
    return int(axis) % ndim


def _active(a):
    """(tape, slots) of an active operand, (None, float64 ndarray) of a constant."""
    tape, idx, _, _ = A._slots(a)
    return tape, idx


def _as_array(a):
    """An Array for a traced operand given as a list of Vars and the like."""
    if isinstance(a, (list, tuple)):
        tape, idx = _active(a)
        if tape is not None:
            return make_array(tape, idx)
    return a


def _front(idx, axes):
    """Slots with `axes` moved to the front and merged into one: (M,) + rest."""
    rest = tuple(n for i, n in enumerate(idx.shape) if i not in axes)
    m = math.prod(idx.shape[i] for i in axes)
    return np.moveaxis(idx, axes, tuple(range(len(axes)))).reshape((m,) + rest)


def _operand(idx):
    """An Operand over slots idx; a run of consecutive slots is marked as one
    (the sweeps then read and write it as a slice)."""
    idx = np.ascontiguousarray(idx, dtype=np.intp)
    flat = idx.reshape(-1)
    if flat.size and flat[-1] - flat[0] == flat.size - 1 and \
            (flat.size == 1 or (np.diff(flat) == 1).all()):
        return B.Operand(idx=idx, start=int(flat[0]))
    return B.Operand(idx=idx)


def _chain_lists(x_flat, start, rest):
    """Sparsity lists of a scan over axis 0, outputs laid out (M,) + rest:
    output e reads x[e] and the previous output along the axis, e - rest."""
    n = x_flat.size
    e = np.arange(n, dtype=np.int64)
    two = e >= rest
    counts = 1 + two
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.empty(int(ptr[-1]), np.int64)
    idx[ptr[:-1]] = x_flat
    idx[ptr[:-1][two] + 1] = start + e[two] - rest
    return ptr, idx


# ---------------------------------------------------------------- blocks

class _Scan(B.Block):
    """A scan over axis 0 of an operand laid out (M,) + rest; outputs alike."""

    def __init__(self, x):
        self.x, self.shape = x, x.shape

    def operands(self):
        return (self.x,)

    def describe(self):
        return f"{self.kind}{list(self.shape)}(axis=0)"

    def _g(self, adj, k):
        return adj[self.start:self.stop].reshape(self.shape + (k,))

    def _rest(self):
        return math.prod(self.shape[1:])


class Cumsum(_Scan):
    """y = cumsum(x) along axis 0: linear; pulled back by a reversed cumsum."""

    kind = "cumsum"

    def compute(self, val, out):
        np.cumsum(self.x.value(val), axis=0, out=out)
        return None

    def keeps_output(self):
        return False

    def constant_partials(self):
        return True

    def sparsity(self):
        """Output i along the axis depends on x[0..i]: lower-triangular (a chain)."""
        op, oi = _chain_lists(self.x.flat, self.start, self._rest())
        return B._deps(self, 0, None, None, op, oi)

    def reverse(self, val, state, adj, k):
        g = self._g(adj, k)
        if g.size and g.any():
            self.x.add_adjoint(adj, np.cumsum(g[::-1], axis=0)[::-1], k)

    def reverse2(self, val, state, tan, adj, adt, k):
        self.reverse(val, state, adj, 1)       # linear: no curvature term
        self.reverse(val, state, adt, k)

    def tangent(self, val, state, tan, k):
        t = self.x.tangent(tan, k)
        tan[self.start:self.stop] = np.cumsum(t, axis=0).reshape(-1, k)


def _excl_prefix(x):
    """P[j] = x[0] ... x[j-1] along axis 0 (P[0] = 1), no division."""
    p = np.ones_like(x)
    if x.shape[0] > 1:
        np.cumprod(x[:-1], axis=0, out=p[1:])
    return p


def _excl_suffix(x):
    """Q[j] = x[j+1] ... x[M-1] along axis 0 (Q[M-1] = 1), no division."""
    return _excl_prefix(x[::-1])[::-1]


def _affine_scan(a, b):
    """z[0] = b[0], z[i] = a[i] z[i-1] + b[i] along axis 0 (a broadcasts
    against b; a[0] is not read).  Hillis-Steele doubling: log2(M) vectorized
    steps of multiplies and adds (the composition of affine maps is
    associative), no division, so zeros are exact."""
    z = np.array(np.broadcast_to(b, np.broadcast_shapes(np.shape(a), np.shape(b))),
                 dtype=np.float64)
    c = np.array(np.broadcast_to(a, np.shape(a)), dtype=np.float64)   # the maps' slopes
    m, d = z.shape[0], 1
    while d < m:
        # z[i] <- c[i] z[i-d] + z[i]; c[i] <- c[i] c[i-d], from the old values
        z[d:] += _mul(c[d:], z[:-d])
        if 2 * d < m:
            c[d:] = _mul(c[d:], c[:-d])
        d *= 2
    return z


def _affine_scan_back(a, b):
    """z[M-1] = b[M-1], z[j] = a[j+1] z[j+1] + b[j]: the scan from the end."""
    r = np.empty_like(a) if np.ndim(a) else a
    if np.ndim(a):
        r[0] = 0.0                      # (not read)
        r[1:] = a[::-1][:-1]
    return _affine_scan(r, b[::-1])[::-1]


def _prefix_tangent(x, t, p):
    """Tangents (lanes last) of the exclusive prefix products p of x along
    axis 0: Pd[0] = 0, Pd[j+1] = x[j] Pd[j] + P[j] t[j] (the product rule)."""
    pd = np.zeros(t.shape)
    if x.shape[0] > 1:
        pd[1:] = _affine_scan(x[:-1][..., None], _mul(p[:-1][..., None], t[:-1]))
    return pd


class Prod(B.Block):
    """y = prod(x) over axis 0 of an operand laid out (M,) + rest.  The partial
    for x[j] is the product of the others, prefix times suffix products, so
    zeros are exact (one zero: only its own partial is nonzero; two: none)."""

    def __init__(self, x):
        self.x, self.shape = x, x.shape[1:]

    def operands(self):
        return (self.x,)

    def describe(self):
        return f"prod{list(self.x.shape)}(axis=0)"

    def compute(self, val, out):
        np.prod(self.x.value(val), axis=0, out=out)
        return None

    def keeps_output(self):
        return False

    def _others(self, X):
        return _mul(_excl_prefix(X), _excl_suffix(X))

    def sparsity(self):
        """Output r depends on its column x[:, r]; pairs of distinct factors
        interact.  Exact through prefix sets (virtual) for short columns;
        a long column is taken as interacting with itself."""
        m = self.x.shape[0]
        r = math.prod(self.shape)
        cols = self.x.flat.reshape(m, r).T.astype(np.int64)          # (r, m)
        if m < 2:
            op, oi = B._lists(cols)
            return B._deps(self, 0, None, None, op, oi)
        if m > 64:
            op, oi = B._lists(cols)
            outs = self.start + np.arange(r, dtype=np.int64)
            return B._deps(self, 0, None, None, op, oi, pairs=np.stack([outs, outs], axis=1))
        # virtual set (r, j) = x[0..j, r], number r * m + j; pairs (set (r, j-1), x[j, r])
        v = np.arange(r * m, dtype=np.int64).reshape(r, m)
        first = np.stack([cols[:, 0], cols[:, 0]], axis=1)     # (set (r, 0): x[0, r], twice)
        rest = np.stack([B._virtual(v[:, :-1]), cols[:, 1:]], axis=2)   # (r, m-1, 2)
        rows = np.concatenate([first[:, None, :], rest], axis=1).reshape(r * m, 2)
        vp, vi = B._lists(rows)
        op, oi = B._lists(B._virtual(v[:, -1:]))
        pairs = np.stack([B._virtual(v[:, :-1]).reshape(-1), cols[:, 1:].reshape(-1)], axis=1)
        return B._deps(self, r * m, vp, vi, op, oi, pairs)

    def reverse(self, val, state, adj, k):
        g = adj[self.start:self.stop].reshape(self.shape + (k,))
        if g.size and g.any():
            E = self._others(self.x.value(val))
            self.x.add_adjoint(adj, _mul(E[..., None], g[None]), k)

    def tangent(self, val, state, tan, k):
        E = self._others(self.x.value(val))
        t = self.x.tangent(tan, k)
        tan[self.start:self.stop] = np.sum(_mul(E[..., None], t), axis=0).reshape(-1, k)

    def reverse2(self, val, state, tan, adj, adt, k):
        """xbar = g E; its tangent gd E + g Ed, with Ed the product rule over
        the prefix and suffix products (exact at zeros)."""
        X = self.x.value(val)
        g = adj[self.start:self.stop].reshape(self.shape)
        gd = adt[self.start:self.stop].reshape(self.shape + (k,))
        P, Q = _excl_prefix(X), _excl_suffix(X)
        E = _mul(P, Q)
        if g.size and g.any():
            self.x.add_adjoint(adj, _mul(E, g[None])[..., None], 1)
        t = self.x.tangent(tan, k)
        Pd = _prefix_tangent(X, t, P)
        Qd = _prefix_tangent(X[::-1], t[::-1], Q[::-1])[::-1]
        Ed = _mul(Pd, Q[..., None]) + _mul(P[..., None], Qd)
        tot = _mul(E[..., None], gd[None]) + _mul(g[None][..., None], Ed)
        self.x.add_adjoint(adt, tot, k)


class Cumprod(_Scan):
    """y = cumprod(x) along axis 0.  By the product rule on y[i] = y[i-1] x[i]:
    going back, S[j] = g[j] + x[j+1] S[j+1] and xbar[j] = y[j-1] S[j];
    going forward, yd[i] = x[i] yd[i-1] + y[i-1] xd[i].  Both recurrences
    multiply only, so zeros are exact."""

    kind = "cumprod"

    def compute(self, val, out):
        np.cumprod(self.x.value(val), axis=0, out=out)
        return None

    def sparsity(self):
        """Output i depends on x[0..i] (a chain); y[i-1] and x[i] interact."""
        n, rest = self.x.flat.size, self._rest()
        op, oi = _chain_lists(self.x.flat, self.start, rest)
        e = np.arange(rest, n, dtype=np.int64)
        pairs = np.stack([self.start + e - rest, self.x.flat[rest:].astype(np.int64)], axis=1)
        return B._deps(self, 0, None, None, op, oi, pairs)

    def _prev(self, val):
        """y[j-1] along axis 0 (1 for j = 0): the exclusive prefix products."""
        y = val[self.start:self.stop].reshape(self.shape)
        p = np.ones(self.shape)
        p[1:] = y[:-1]
        return p

    @staticmethod
    def _suffix(X, g):
        """S[j] = g[j] + x[j+1] S[j+1] (g with lanes last)."""
        return _affine_scan_back(X[..., None], g)

    def reverse(self, val, state, adj, k):
        g = self._g(adj, k)
        if not (g.size and g.any()):
            return
        S = self._suffix(self.x.value(val), g)
        self.x.add_adjoint(adj, _mul(self._prev(val)[..., None], S), k)

    def _tangents(self, val, t):
        """yd (lanes last) from the operand's tangents t."""
        X = self.x.value(val)
        y = val[self.start:self.stop].reshape(self.shape)
        p = np.ones(self.shape)
        p[1:] = y[:-1]
        return _affine_scan(X[..., None], _mul(p[..., None], t))

    def tangent(self, val, state, tan, k):
        yd = self._tangents(val, self.x.tangent(tan, k))
        tan[self.start:self.stop] = yd.reshape(-1, k)

    def reverse2(self, val, state, tan, adj, adt, k):
        """The tangents of the reverse recurrence: Sd[j] = gd[j] + xd[j+1] S[j+1]
        + x[j+1] Sd[j+1]; xbar' = yd[j-1] S[j] + y[j-1] Sd[j]."""
        X = self.x.value(val)
        g = self._g(adj, 1)
        gd = self._g(adt, k)
        t = self.x.tangent(tan, k)
        P = self._prev(val)
        S = self._suffix(X, g)                          # (M, ..., 1)
        if g.any():
            self.x.add_adjoint(adj, _mul(P[..., None], S), 1)
        b = np.array(gd, dtype=np.float64)
        b[:-1] += _mul(t[1:], S[1:])
        Sd = _affine_scan_back(X[..., None], b)
        yd = self._tangents(val, t)
        Pd = np.zeros_like(yd)
        Pd[1:] = yd[:-1]
        self.x.add_adjoint(adt, _mul(Pd, S) + _mul(P[..., None], Sd), k)


# ---------------------------------------------------------------- scans and products

def _scan(name, block, npfn, a, axis, dtype, out):
    A._float_only(name, dtype, out)
    tape, idx, cstart, _ = A._slots(a)
    if tape is None:
        return npfn(idx, axis=axis)
    if axis is None:
        idx, axis = idx.reshape(-1), 0
    elif idx.ndim == 0:
        raise ValueError(f"fastad.{name}: axis {axis} is out of bounds for a 0-d array")
    ax = _check_axis(name, axis, idx.ndim)
    if idx.size == 0:
        return make_array(tape, idx)          # nothing to scan: the empty array itself
    if ax == 0:        # (the common case: no axis to move, and a run of slots stays one)
        x = B.Operand(idx=idx, start=cstart) if cstart >= 0 else _operand(idx)
        return A._push(tape, block(x))
    r = A._push(tape, block(_operand(np.moveaxis(idx, ax, 0))))
    return make_array(tape, np.moveaxis(r.idx, 0, ax))


def cumsum(a, axis=None, dtype=None, out=None):
    """Cumulative sum along axis (of the flattened array by default); one block."""
    return _scan("cumsum", Cumsum, np.cumsum, a, axis, dtype, out)


def cumprod(a, axis=None, dtype=None, out=None):
    """Cumulative product along axis (flattened by default); exact at zeros."""
    return _scan("cumprod", Cumprod, np.cumprod, a, axis, dtype, out)


def _cumulative(name, fn, init, a, axis, dtype, out, include_initial):
    """NumPy 2's cumulative_sum/cumulative_prod: axis needed beyond 1-D;
    include_initial puts the identity first along the axis."""
    tape, idx = _active(a)
    if tape is None:
        return getattr(np, name)(idx, axis=axis, dtype=dtype, include_initial=include_initial)
    if axis is None:
        if idx.ndim != 1:
            raise ValueError(f"fastad.{name}: axis is required for arrays of more than "
                             f"one dimension, got shape {idx.shape}")
        axis = 0
    r = fn(a, axis=axis, dtype=dtype, out=out)
    if not include_initial:
        return r
    ax = _check_axis(name, axis, idx.ndim)
    first = tape.push_consts(np.full(idx.shape[:ax] + (1,) + idx.shape[ax + 1:], init))
    return make_array(tape, np.concatenate([first, _active(r)[1]], axis=ax))


def cumulative_sum(x, axis=None, dtype=None, out=None, include_initial=False):
    """np.cumulative_sum: cumsum, with an optional leading 0."""
    return _cumulative("cumulative_sum", cumsum, 0.0, x, axis, dtype, out, include_initial)


def cumulative_prod(x, axis=None, dtype=None, out=None, include_initial=False):
    """np.cumulative_prod: cumprod, with an optional leading 1."""
    return _cumulative("cumulative_prod", cumprod, 1.0, x, axis, dtype, out, include_initial)


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    """Product over axis (int, tuple or None); one block, exact at zeros."""
    A._float_only("prod", dtype, out)
    tape, idx = _active(a)
    if tape is None:
        return np.prod(idx, axis=axis, keepdims=keepdims)
    axes = A._axes(axis, idx.ndim)
    kept = tuple(1 if i in axes else n for i, n in enumerate(idx.shape))
    front = _front(idx, axes)
    if front.shape[0] == 0:      # an empty product: ones that depend on nothing
        r = make_array(tape, tape.push_consts(np.ones(front.shape[1:])))
        return A.reshape(r, kept) if keepdims else r
    r = A._push(tape, Prod(_operand(front)))
    return A.reshape(r, kept) if keepdims else r


# ---------------------------------------------------------------- compositions

def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    """Variance, sum((a - mean)^2) / (N - ddof), over axis (int, tuple or None)."""
    A._float_only("var", dtype, out)
    tape, idx = _active(a)
    if tape is None:
        return np.var(idx, axis=axis, ddof=ddof, keepdims=keepdims)
    n = math.prod(idx.shape[i] for i in A._axes(axis, idx.ndim))
    a = make_array(tape, idx)
    d = A.elementwise("sub", a, A.mean(a, axis=axis, keepdims=True))
    s = A.sum(A.elementwise("square", d), axis=axis, keepdims=keepdims)
    with np.errstate(divide="ignore", invalid="ignore"):
        return A.elementwise("div", s, float(builtins.max(n - ddof, 0)))


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    """Standard deviation, sqrt(var); its derivative is infinite where var is 0."""
    A._float_only("std", dtype, out)
    tape, idx = _active(a)
    if tape is None:
        return np.std(idx, axis=axis, ddof=ddof, keepdims=keepdims)
    v = var(a, axis=axis, ddof=ddof, keepdims=keepdims)
    if math.prod(idx.shape[i] for i in A._axes(axis, idx.ndim)) == 1 and ddof == 0:
        return v      # one element: var is 0 everywhere, and so is std (no sqrt'(0))
    return A.elementwise("sqrt", v)


def _no_out(name, out):
    if out is not None:
        raise TypeError(f"fastad.{name}: out= is not supported (arrays on the tape are immutable)")


def amax(a, axis=None, out=None, keepdims=False):
    """Maximum over axis (int, tuple or None); the derivative goes to the
    first largest element (C order over the reduced axes)."""
    _no_out("max", out)
    return A.amax(a, axis=axis, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    """Minimum over axis; the derivative goes to the first smallest element."""
    _no_out("min", out)
    return A.amin(a, axis=axis, keepdims=keepdims)


max = amax  # noqa: A001 - NumPy's names
min = amin  # noqa: A001


def ptp(a, axis=None, out=None, keepdims=False):
    """Peak to peak, max - min over axis (the first max and first min get the derivative)."""
    _no_out("ptp", out)
    if _active(a)[0] is None:
        return np.ptp(_active(a)[1], axis=axis, keepdims=keepdims)
    a = _as_array(a)
    return A.elementwise("sub", A.amax(a, axis=axis, keepdims=keepdims),
                         A.amin(a, axis=axis, keepdims=keepdims))


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """Sum along a diagonal: the diagonal's slots, then one sum."""
    A._float_only("trace", dtype, out)
    tape, idx = _active(a)
    if tape is None:
        return np.trace(idx, offset=offset, axis1=axis1, axis2=axis2)
    if idx.ndim < 2:
        raise ValueError(f"fastad.trace: needs an array of at least 2 dimensions, "
                         f"got shape {idx.shape}")
    try:
        diag = np.diagonal(idx, offset=offset, axis1=axis1, axis2=axis2)
    except ValueError as e:
        raise ValueError(f"fastad.trace: {e}") from None
    return A.sum(make_array(tape, np.ascontiguousarray(diag)), axis=-1)


def _on_tape(tape, v):
    """Slots of v (an Array, Var or constant) on tape: constants become CONST nodes."""
    t, idx = _active(v)
    if t is None:
        return tape.push_consts(idx)
    if t is not tape:
        from fastad.errors import TapeError
        raise TapeError("fastad: cannot combine arrays from two different recordings")
    return idx


def diff(a, n=1, axis=-1, prepend=None, append=None):
    """n-th discrete difference along axis: slices and subtractions.
    prepend/append (numbers or arrays, active or not) are joined first, as NumPy does."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"fastad.diff: n must be an integer, got {n!r}")
    if n < 0:
        raise ValueError(f"fastad.diff: order n must be non-negative, got {n}")
    tape, idx = _active(a)
    if tape is None:
        tp = _active(prepend)[0] if prepend is not None else None
        ta = _active(append)[0] if append is not None else None
        tape = tp or ta
        if tape is None:
            kw = {k: v for k, v in (("prepend", prepend), ("append", append)) if v is not None}
            return np.diff(idx, n=n, axis=axis, **kw)
        idx = tape.push_consts(idx)
    if idx.ndim == 0:
        raise ValueError("fastad.diff: needs an array of at least 1 dimension, got a scalar")
    ax = _check_axis("diff", axis, idx.ndim)
    if n == 0:
        return make_array(tape, idx)
    parts = []
    for side, v in (("prepend", prepend), ("append", append)):
        if v is None:
            parts.append(None)
            continue
        s = _on_tape(tape, v)
        if s.ndim == 0:
            s = np.broadcast_to(s, idx.shape[:ax] + (1,) + idx.shape[ax + 1:])
        parts.append(s)
    seq = [p for p in (parts[0], idx, parts[1]) if p is not None]
    if len(seq) > 1:
        try:
            idx = np.concatenate(seq, axis=ax)
        except ValueError as e:
            raise ValueError(f"fastad.diff: prepend/append do not fit the array: {e}") from None
    r = make_array(tape, idx)
    for _ in range(n):
        m = r.shape[ax]
        if m == 0:
            break
        hi = [slice(None)] * r.ndim
        lo = [slice(None)] * r.ndim
        hi[ax], lo[ax] = slice(1, None), slice(None, -1)
        r = A.elementwise("sub", r[tuple(hi)], r[tuple(lo)])
    return r


def average(a, axis=None, weights=None, returned=False, keepdims=False):
    """Weighted average sum(a w) / sum(w) over axis; weights may be traced too.
    A 1-D weights array with an axis weighs along that axis, as NumPy does."""
    ta, ia = _active(a)
    tw = None if weights is None else _active(weights)[0]
    if ta is None and tw is None:
        return np.average(ia, axis=axis, weights=weights, returned=returned,
                          keepdims=keepdims)
    a, weights = _as_array(a), _as_array(weights)
    if weights is None:
        avg = A.mean(a, axis=axis, keepdims=keepdims)
        if not returned:
            return avg
        shape = np.shape(_active(avg)[1])
        n = math.prod(ia.shape) / builtins.max(math.prod(shape), 1) if ia.size else 0.0
        return avg, np.full(shape, float(n)) if shape else float(n)
    iw = _active(weights)[1]
    w = weights
    if iw.shape != ia.shape:
        if axis is None:
            raise TypeError("fastad.average: axis must be given when the shapes of "
                            f"a {ia.shape} and weights {iw.shape} differ")
        if iw.ndim != 1:
            raise TypeError(f"fastad.average: 1-D weights expected when the shapes of "
                            f"a {ia.shape} and weights {iw.shape} differ")
        if isinstance(axis, tuple) or not isinstance(axis, numbers.Integral):
            raise TypeError("fastad.average: with 1-D weights, axis must be one integer")
        ax = _check_axis("average", axis, ia.ndim)
        if iw.shape[0] != ia.shape[ax]:
            raise ValueError(f"fastad.average: length of weights {iw.shape[0]} differs "
                             f"from the length {ia.shape[ax]} of axis {axis}")
        shape = tuple(n if i == ax else 1 for i, n in enumerate(ia.shape))
        w = A.reshape(weights, shape) if tw is not None else np.reshape(iw, shape)
    if tw is not None:           # the weights' slots, broadcast (no node)
        full = make_array(tw, np.ascontiguousarray(np.broadcast_to(_active(w)[1], ia.shape)))
        wsum = A.sum(full, axis=axis, keepdims=keepdims)
    else:
        wsum = np.sum(np.broadcast_to(np.asarray(w, dtype=np.float64), ia.shape),
                      axis=axis, keepdims=keepdims)
    wv = np.asarray(value_of(wsum) if tw is not None else wsum)   # (an error check: no mark)
    if np.any(wv == 0.0):
        raise ZeroDivisionError("fastad.average: weights sum to zero, can't be normalized")
    num = A.sum(A.elementwise("mul", a, w), axis=axis, keepdims=keepdims)
    avg = A.elementwise("div", num, wsum)
    return (avg, wsum) if returned else avg


# ---------------------------------------------------------------- NaN-ignoring

def _nan_to(name, a, fill):
    """a with its NaNs replaced by fill, or None for a constant.  The NaN
    mask comes from the comparison a != a, recorded: a replay where other
    elements are NaN raises fad.BranchChangedError."""
    tape, idx = _active(a)
    if tape is None:
        return None
    a = make_array(tape, idx)
    return A.where(A.compare("ne", a, a), fill, a)


def nansum(a, axis=None, dtype=None, out=None, keepdims=False):
    """Sum treating NaNs as 0 (they get derivative 0)."""
    b = _nan_to("nansum", a, 0.0)
    if b is None:
        return np.nansum(_active(a)[1], axis=axis, dtype=dtype, keepdims=keepdims)
    return A.sum(b, axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def nanprod(a, axis=None, dtype=None, out=None, keepdims=False):
    """Product treating NaNs as 1."""
    b = _nan_to("nanprod", a, 1.0)
    if b is None:
        return np.nanprod(_active(a)[1], axis=axis, dtype=dtype, keepdims=keepdims)
    return prod(b, axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False):
    """Mean of the elements that are not NaN (NaN where there are none, as NumPy)."""
    tape, idx = _active(a)
    if tape is None:
        return np.nanmean(idx, axis=axis, dtype=dtype, keepdims=keepdims)
    A._float_only("nanmean", dtype, out)
    a = make_array(tape, idx)
    mask = A.compare("ne", a, a)
    count = np.sum(~mask, axis=axis, keepdims=keepdims).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return A.elementwise("div", A.sum(A.where(mask, 0.0, a), axis=axis, keepdims=keepdims),
                             count if np.ndim(count) else float(count))


def _nan_extreme(name, a, axis, out, keepdims, fill, pick):
    tape, idx = _active(a)
    if tape is None:
        return getattr(np, name)(idx, axis=axis, keepdims=keepdims)
    _no_out(name, out)
    a = make_array(tape, idx)
    mask = A.compare("ne", a, a)
    r = pick(A.where(mask, fill, a), axis=axis, keepdims=keepdims)
    empty = np.all(mask, axis=axis, keepdims=keepdims)
    return A.where(empty, np.nan, r) if np.any(empty) else r     # all NaN: NaN, as NumPy


def nanmax(a, axis=None, out=None, keepdims=False):
    """Maximum ignoring NaNs (the first largest element gets the derivative)."""
    return _nan_extreme("nanmax", a, axis, out, keepdims, -np.inf, A.amax)


def nanmin(a, axis=None, out=None, keepdims=False):
    """Minimum ignoring NaNs."""
    return _nan_extreme("nanmin", a, axis, out, keepdims, np.inf, A.amin)


def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    """Variance of the elements that are not NaN (NaN where fewer than ddof + 1)."""
    tape, idx = _active(a)
    if tape is None:
        return np.nanvar(idx, axis=axis, ddof=ddof, keepdims=keepdims)
    A._float_only("nanvar", dtype, out)
    a = make_array(tape, idx)
    mask = A.compare("ne", a, a)
    b = A.where(mask, 0.0, a)
    count = np.sum(~mask, axis=axis, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = A.elementwise("div", A.sum(b, axis=axis, keepdims=True), count)
        d = A.where(mask, 0.0, A.elementwise("sub", b, mean))
        s = A.sum(A.elementwise("square", d), axis=axis, keepdims=keepdims)
        dof = np.sum(~mask, axis=axis, keepdims=keepdims).astype(np.float64) - ddof
        dof = np.where(dof > 0, dof, np.nan)
        return A.elementwise("div", s, dof if np.ndim(dof) else float(dof))


def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    """Standard deviation of the elements that are not NaN."""
    tape, idx = _active(a)
    if tape is None:
        return np.nanstd(idx, axis=axis, ddof=ddof, keepdims=keepdims)
    with np.errstate(invalid="ignore"):
        return A.elementwise("sqrt", nanvar(a, axis=axis, dtype=dtype, out=out, ddof=ddof,
                                            keepdims=keepdims))


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """NaN and +-inf replaced by numbers (derivative 0 there, 1 elsewhere);
    which elements are replaced is recorded and re-checked on replay."""
    tape, idx = _active(x)
    if tape is None:
        return np.nan_to_num(idx, copy=copy, nan=nan, posinf=posinf, neginf=neginf)
    big = np.finfo(np.float64).max
    a = make_array(tape, idx)
    for bad, fill in ((A.compare("ne", a, a), nan),
                      (A.compare("eq", a, np.inf), big if posinf is None else posinf),
                      (A.compare("eq", a, -np.inf), -big if neginf is None else neginf)):
        if np.any(bad):
            a = A.where(bad, float(fill), a)
    return a


def nancumsum(a, axis=None, dtype=None, out=None):
    """Cumulative sum treating NaNs as 0."""
    b = _nan_to("nancumsum", a, 0.0)
    if b is None:
        return np.nancumsum(_active(a)[1], axis=axis, dtype=dtype)
    return cumsum(b, axis=axis, dtype=dtype, out=out)


def nancumprod(a, axis=None, dtype=None, out=None):
    """Cumulative product treating NaNs as 1."""
    b = _nan_to("nancumprod", a, 1.0)
    if b is None:
        return np.nancumprod(_active(a)[1], axis=axis, dtype=dtype)
    return cumprod(b, axis=axis, dtype=dtype, out=out)


# ---------------------------------------------------------------- registration

def _along(x, ax, sl):
    """x[..., sl, ...] with sl on axis ax."""
    return x[(slice(None),) * ax + (sl,)]


def _spacing_coefficients(h, n, ax, ndim, edge_order):
    """The constant weights of np.gradient along one axis: (interior (a, b, c)
    for f[:-2], f[1:-1], f[2:]; first-edge and last-edge weights), as NumPy
    computes them for a uniform step h or coordinates h."""
    if np.ndim(h) == 0:
        h = float(h)
        inner = (-0.5 / h, 0.0, 0.5 / h)
        if edge_order == 1:
            return inner, (-1.0 / h, 1.0 / h), (-1.0 / h, 1.0 / h)
        return inner, (-1.5 / h, 2.0 / h, -0.5 / h), (0.5 / h, -2.0 / h, 1.5 / h)
    x = np.asarray(h, dtype=np.float64)
    if x.ndim != 1 or x.size != n:
        raise ValueError(f"fastad.gradient: coordinates along axis {ax} must be 1-D of "
                         f"length {n}, got shape {x.shape}")
    dx = np.diff(x)
    d1, d2 = dx[:-1], dx[1:]
    shape = (1,) * ax + (n - 2,) + (1,) * (ndim - ax - 1)
    inner = tuple(np.reshape(w, shape) for w in
                  (-d2 / (d1 * (d1 + d2)), (d2 - d1) / (d1 * d2), d1 / (d2 * (d1 + d2))))
    if edge_order == 1:
        return inner, (-1.0 / dx[0], 1.0 / dx[0]), (-1.0 / dx[-1], 1.0 / dx[-1])
    a, b = dx[0], dx[1]
    first = (-(2 * a + b) / (a * (a + b)), (a + b) / (a * b), -a / (b * (a + b)))
    a, b = dx[-2], dx[-1]
    last = (b / (a * (a + b)), -(a + b) / (a * b), (2 * b + a) / (b * (a + b)))
    return inner, first, last


def gradient(f, *varargs, axis=None, edge_order=1):
    """np.gradient: second-order central differences inside, one-sided ones of
    order edge_order at the ends; linear in f with constant weights (the
    spacings and coordinates are constants)."""
    tape, idx = _active(f)
    if tape is None:
        return np.gradient(idx, *varargs, axis=axis, edge_order=edge_order)
    if edge_order not in (1, 2):
        raise ValueError(f"fastad.gradient: edge_order must be 1 or 2, got {edge_order!r}")
    ndim = idx.ndim
    axes = tuple(range(ndim)) if axis is None else \
        tuple(_check_axis("gradient", ax, ndim) for ax in
              ((axis,) if isinstance(axis, numbers.Integral) else axis))
    if len(varargs) == 0:
        spacing = (1.0,) * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacing = varargs * len(axes)
    elif len(varargs) == len(axes):
        spacing = varargs
    else:
        raise TypeError(f"fastad.gradient: {len(varargs)} spacings for {len(axes)} axes")
    for h in spacing:
        if A.active_info(h) is not None:
            raise TypeError("fastad.gradient: the spacing must be a constant, not a traced value")
    x = make_array(tape, idx)
    out = []
    for ax, h in zip(axes, spacing):
        n = idx.shape[ax]
        if n < edge_order + 1:
            raise ValueError(f"fastad.gradient: axis {ax} has {n} element(s); edge_order "
                             f"{edge_order} needs at least {edge_order + 1}")
        (a, b, c), first, last = _spacing_coefficients(h, n, ax, ndim, edge_order)
        parts = [sum(w * _along(x, ax, slice(k, k + 1)) for k, w in enumerate(first))]
        if n > 2:
            parts.append(a * _along(x, ax, slice(None, -2)) + b * _along(x, ax, slice(1, -1))
                         + c * _along(x, ax, slice(2, None)))
        parts.append(sum(w * _along(x, ax, slice(n - len(last) + k, n - len(last) + k + 1))
                         for k, w in enumerate(last)))
        out.append(A.concatenate(parts, axis=ax))
    if len(out) == 1:
        return out[0]
    return type(np.gradient(np.zeros((3,) * 2)))(out)       # NumPy's own container type


_KW = ("axis", "dtype", "out", "keepdims")
for _f, _fn, _name, _allowed, _method in (
        (np.prod, prod, "prod", _KW, True),
        (np.cumsum, cumsum, "cumsum", ("axis", "dtype", "out"), True),
        (np.cumprod, cumprod, "cumprod", ("axis", "dtype", "out"), True),
        (np.var, var, "var", _KW + ("ddof",), True),
        (np.std, std, "std", _KW + ("ddof",), True),
        (np.max, amax, "max", ("axis", "out", "keepdims"), False),
        (np.min, amin, "min", ("axis", "out", "keepdims"), False),
        (np.amax, amax, "amax", ("axis", "out", "keepdims"), False),
        (np.amin, amin, "amin", ("axis", "out", "keepdims"), False),
        (np.ptp, ptp, "ptp", ("axis", "out", "keepdims"), True),
        (np.trace, trace, "trace", ("offset", "axis1", "axis2", "dtype", "out"), True),
        (np.diff, diff, "diff", ("n", "axis", "prepend", "append"), False),
        (np.gradient, gradient, "gradient", ("axis", "edge_order"), False),
        (np.average, average, "average", ("axis", "weights", "returned", "keepdims"), False),
        (np.nansum, nansum, "nansum", _KW, False),
        (np.nanprod, nanprod, "nanprod", _KW, False),
        (np.nanmean, nanmean, "nanmean", _KW, False),
        (np.nanmax, nanmax, "nanmax", ("axis", "out", "keepdims"), False),
        (np.nanmin, nanmin, "nanmin", ("axis", "out", "keepdims"), False),
        (np.nanvar, nanvar, "nanvar", _KW + ("ddof",), False),
        (np.nanstd, nanstd, "nanstd", _KW + ("ddof",), False),
        (np.nan_to_num, nan_to_num, "nan_to_num", ("copy", "nan", "posinf", "neginf"), False),
        (np.nancumsum, nancumsum, "nancumsum", ("axis", "dtype", "out"), False),
        (np.nancumprod, nancumprod, "nancumprod", ("axis", "dtype", "out"), False)):
    A.implements(_f, _fn, _name, allowed=_allowed, method=_method)
for _name, _fn in (("cumulative_sum", cumulative_sum), ("cumulative_prod", cumulative_prod)):
    if hasattr(np, _name):                  # NumPy >= 2.1
        A.implements(getattr(np, _name), _fn, _name,
                     allowed=("axis", "dtype", "out", "include_initial"))
