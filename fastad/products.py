"""Products of arrays: einsum and what is built on it (outer, inner, vdot,
kron, tensordot, matmul and dot on stacks of matrices).

Every product is a chain of two-operand contractions, each one `Einsum`
block (2-D matmul keeps the BLAS `Matmul` block).  Before a contraction,
repeated labels within an operand ('ii->i') take a diagonal and size-1
broadcast axes are dropped, both by rearranging slot numbers (no node), and
labels no one else needs are summed out (a `Sum` block).  So inside a block
each operand's labels are distinct and each of them appears in the other
operand or in the output: the pullback to an operand is then one
contraction of the cotangent with the other operand, with the k seeds as one
more label, and it runs on NumPy's matmul (BLAS).
"""
import functools
import math
import numbers
import string
import sys

import numpy as np

from fastad import _blocks as B
from fastad import arrays
from fastad._kernels import all_finite
from fastad._var import Array, Var, active_info, make_array

__all__ = ["einsum", "outer", "inner", "vdot", "kron", "tensordot", "matmul", "dot"]

_ELL = "..."          # the ellipsis in a parsed label list


# ---------------------------------------------------------------- contraction

def _contract(a, la, b, lb, lo, out=None):
    """einsum(la,lb->lo) of ndarrays a and b with distinct labels each, on
    matmul: labels of a and b missing from lo are summed.  With `out`
    (C-contiguous, lo's shape) the result is written there."""
    sum_a, pa, sa3, sum_b, pb, sb3, nb, direct, shape, perm = \
        _layout(tuple(la), tuple(lb), tuple(lo), a.shape, b.shape)
    if sum_a:
        a = a.sum(axis=sum_a)
    if sum_b:
        b = b.sum(axis=sum_b)
    am = a.transpose(pa).reshape(sa3)
    bm = b.transpose(pb).reshape(sb3)
    if out is not None and direct:          # straight into out: no copy
        if nb == 1:
            np.matmul(am[0], bm[0], out=out.reshape(sa3[1], sb3[2]))
        else:
            np.matmul(am, bm, out=out.reshape(nb, sa3[1], sb3[2]))
        return out
    c = (am[0] @ bm[0]) if nb == 1 else np.matmul(am, bm)
    c = c.reshape(shape).transpose(perm)
    if out is not None:
        out[...] = c
    return c


def _strong(a, la, b, lb, lo):
    """_contract for the sweeps, with strong zeros: a product with a zero
    factor is an exact zero even where the other factor is inf or NaN (a
    zero cotangent or tangent passes nothing, as in the element-wise rules).
    The check is one pass over the result (all_finite); only a non-finite
    result pays more."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = _contract(a, la, b, lb, lo)
        if all_finite(r):
            return r
        fa, fb = np.isfinite(a), np.isfinite(b)
        if fa.all() and fb.all():
            return r                          # an overflow: no zero was involved
        nz_a, nz_b = (a != 0).astype(float), (b != 0).astype(float)
        # where some nonzero product has a non-finite factor, the result is
        # what NumPy gives; elsewhere the finite factors alone decide it
        hit = _contract(nz_a * ~fa, la, nz_b, lb, lo) + _contract(nz_a, la, nz_b * ~fb, lb, lo)
        exact = _contract(np.where(fa, a, 0.0), la, np.where(fb, b, 0.0), lb, lo)
        return np.where(hit > 0, r, exact)


@functools.lru_cache(maxsize=1024)
def _layout(la, lb, lo, sha, shb):
    """How _contract runs: axes summed first, the transposes and shapes that
    make it one (batched) matmul, and the transpose of its result."""
    sum_a = tuple(i for i, l in enumerate(la) if l not in lb and l not in lo)
    sum_b = tuple(i for i, l in enumerate(lb) if l not in la and l not in lo)
    size = dict(zip(la, sha))
    size.update(zip(lb, shb))
    la = [l for i, l in enumerate(la) if i not in sum_a]
    lb = [l for i, l in enumerate(lb) if i not in sum_b]
    batch = [l for l in lo if l in la and l in lb]
    fa = [l for l in lo if l in la and l not in lb]
    fb = [l for l in lo if l in lb and l not in la]
    con = [l for l in la if l in lb and l not in lo]
    nb, na, nc, nf = (math.prod(size[l] for l in g) for g in (batch, fa, con, fb))
    got = batch + fa + fb
    return (sum_a, tuple(la.index(l) for l in batch + fa + con), (nb, na, nc),
            sum_b, tuple(lb.index(l) for l in batch + con + fb), (nb, nc, nf),
            nb, got == list(lo), tuple(size[l] for l in got), tuple(got.index(l) for l in lo))


class Einsum(B.Block):
    """z = einsum(sx,sy->so) of two operands, each with distinct labels that
    all appear in the other operand or in the output (see the module
    docstring).  Bilinear: every rule is one contraction per active operand,
    all k seeds or directions at once (label "k")."""

    def __init__(self, x, y, lx, ly, lo, shape):
        self.x, self.y, self.shape = x, y, tuple(shape)
        # labels as small integers; the lanes (k seeds or directions) get the next
        names = {}
        for l in list(lx) + list(ly) + list(lo):
            names.setdefault(l, len(names))
        self.lx, self.ly, self.lo = ([names[l] for l in s] for s in (lx, ly, lo))
        self.lane = len(names)

    def operands(self):
        return (self.x, self.y)

    def describe(self):
        ch = string.ascii_lowercase.replace("k", "") + string.ascii_uppercase
        s = ["".join(ch[i] if i < len(ch) else f"({i})" for i in ls)
             for ls in (self.lx, self.ly, self.lo)]
        return f"einsum[{s[0]},{s[1]}->{s[2]}]"

    def _values(self, val):
        return self.x.value(val), self.y.value(val)

    def compute(self, val, out):
        X, Y = self._values(val)
        _contract(X, self.lx, Y, self.ly, self.lo, out)
        return None

    def keeps_output(self):
        return False

    def constant_partials(self):
        return not (self.x.active and self.y.active)

    def _pull(self, G, lg, other, lother, mine):
        """The cotangent of the operand with labels `mine` (lanes last)."""
        if G.shape[-1] == 1:      # one seed: no lane axis in the way of BLAS's layout
            return _strong(G[..., 0], lg[:-1], other, lother, mine)[..., None]
        return _strong(G, lg, other, lother, mine + [self.lane])

    def reverse(self, val, state, adj, k):
        G = adj[self.start:self.stop]
        if not G.any():
            return
        G = G.reshape(self.shape + (k,))
        X, Y = self._values(val)
        lg = self.lo + [self.lane]
        if self.x.active:
            self.x.add_adjoint(adj, self._pull(G, lg, Y, self.ly, self.lx), k)
        if self.y.active:
            self.y.add_adjoint(adj, self._pull(G, lg, X, self.lx, self.ly), k)

    def tangent(self, val, state, tan, k):
        X, Y = self._values(val)
        L = [self.lane]
        t = np.zeros(self.shape + (k,))
        if self.x.active:
            t += _strong(self.x.tangent(tan, k), self.lx + L, Y, self.ly, self.lo + L)
        if self.y.active:
            t += _strong(X, self.lx, self.y.tangent(tan, k), self.ly + L, self.lo + L)
        tan[self.start:self.stop] = t.reshape(-1, k)

    def reverse2(self, val, state, tan, adj, adt, k):
        """Bilinear: xbar' = pull(zbar', y) + pull(zbar, y'), and alike for y."""
        X, Y = self._values(val)
        L = [self.lane]
        lg = self.lo + L
        G = adj[self.start:self.stop].reshape(self.shape + (1,))
        Gd = adt[self.start:self.stop].reshape(self.shape + (k,))
        Xd = self.x.tangent(tan, k) if self.x.active else None
        Yd = self.y.tangent(tan, k) if self.y.active else None
        G0 = G[..., 0]
        for o, lm, other, lother, od in ((self.x, self.lx, Y, self.ly, Yd),
                                         (self.y, self.ly, X, self.lx, Xd)):
            if not o.active:
                continue
            o.add_adjoint(adj, self._pull(G, lg, other, lother, lm), 1)
            d = self._pull(Gd, lg, other, lother, lm)
            if od is not None:
                d = d + _strong(G0, self.lo, od, lother + L, lm + L)
            o.add_adjoint(adt, d, k)

    def sparsity(self):
        """z[o] depends on the elements of x (and of y) that agree with o on
        their shared labels: one virtual set per such group, each gathered
        once.  x and y elements interact where they agree on the labels x
        and y share."""
        size = dict(zip(self.lo, self.shape))
        ops = [(o, l) for o, l in ((self.x, self.lx), (self.y, self.ly)) if o.active]
        for o, l in ops:
            size.update(zip(l, o.shape))
        lists, outs, v = [], [], 0
        for o, l in ops:
            keep = [m for m in self.lo if m in l]
            groups = _group(o.idx, l, keep, size)
            lists.append(groups)
            ids = np.arange(groups.shape[0]).reshape([size[m] if m in l else 1 for m in self.lo])
            outs.append(np.broadcast_to(ids, self.shape).reshape(-1) + v)
            v += groups.shape[0]
        pairs = None
        if len(ops) == 2:
            shared = [m for m in self.lx if m in self.ly]
            gx = _group(self.x.idx, self.lx, shared, size)
            gy = _group(self.y.idx, self.ly, shared, size)
            lists += [gx, gy]
            n = gx.shape[0]
            pairs = B._virtual(np.stack([np.arange(n) + v, np.arange(n) + v + n], axis=1))
            v += 2 * n
        vp, vi = _csr(lists)
        m = self.stop - self.start
        op = np.arange(m + 1, dtype=np.int64) * len(outs)
        oi = B._virtual(np.stack(outs, axis=1).reshape(-1)) if outs else np.zeros(0, np.int64)
        return B._deps(self, v, vp, vi, op, oi, pairs)


def _group(idx, labels, keep, size):
    """Slots idx (axes `labels`) as rows, one per value of the labels `keep`."""
    rest = [m for m in labels if m not in keep]
    t = np.transpose(idx, [labels.index(m) for m in keep + rest])
    return t.reshape(math.prod(size[m] for m in keep), math.prod(size[m] for m in rest))


def _csr(groups):
    """Lists (rows of 2-D arrays, lengths differing between arrays) as (ptr, idx)."""
    ptrs, idxs, off = [np.zeros(1, np.int64)], [], 0
    for g in groups:
        m, k = g.shape
        ptrs.append(np.arange(1, m + 1, dtype=np.int64) * k + off)
        idxs.append(np.asarray(g, np.int64).reshape(-1))
        off += m * k
    return np.concatenate(ptrs), (np.concatenate(idxs) if idxs else np.zeros(0, np.int64))


# ---------------------------------------------------------------- operands

def _shape(a):
    """The shape of a Var, an Array, a number, an ndarray or a (nested) list."""
    t = type(a)
    if t is Array or t is np.ndarray:
        return a.shape
    if t is Var or t is float or t is int:
        return ()
    return np.shape(arrays._slots(a)[1])


def _as_operand(a):
    """An Array or Var as it is; anything else as a float64 ndarray."""
    if type(a) in (Array, Var):
        return a
    if isinstance(a, (list, tuple)) and arrays._has_active(a):
        return arrays.stack(a)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"fastad: products take numbers and arrays, not {type(a).__name__}"
                        + (f" of dtype {arr.dtype}" if arr.dtype != object else ""))
    return arr.astype(np.float64, copy=False)


def _rearrange(a, fn):
    """fn applied to a's values (a constant) or to its slot numbers (no node)."""
    info = active_info(a)
    if info is None:
        return fn(np.asarray(a))
    return make_array(info[0], fn(info[1]))


def _is_active(a):
    return type(a) in (Array, Var)


def _pair(x, y, step):
    """One contraction of two prepared operands (see the module docstring)."""
    lx, ly, lo, shape, blas = step
    if not (_is_active(x) or _is_active(y)):
        return _contract(np.asarray(x), lx, np.asarray(y), ly, lo)
    if blas:            # 2-D matmul or its 1-D forms: the BLAS block of fastad.arrays
        return arrays.matmul(x, y)
    tape, (ox, oy) = arrays._operands((x, y))
    return arrays._push(tape, Einsum(ox, oy, lx, ly, lo, shape))


# ---------------------------------------------------------------- einsum

def _labels(spec, what):
    """A subscripts string (or sublist) as a list of labels, "..." kept as _ELL."""
    if isinstance(spec, str):
        out, i = [], 0
        while i < len(spec):
            c = spec[i]
            if c == ".":
                if spec[i:i + 3] != "...":
                    raise ValueError(f"fastad.einsum: a '.' in {what} {spec!r} that is not "
                                     "part of an ellipsis '...'")
                out.append(_ELL)
                i += 3
                continue
            if c not in string.ascii_letters:
                raise ValueError(f"fastad.einsum: invalid subscript {c!r} in {what} {spec!r} "
                                 "(letters a-z, A-Z and '...' only)")
            out.append(c)
            i += 1
    else:
        out = []
        for s in spec:
            if s is Ellipsis:
                out.append(_ELL)
            elif isinstance(s, numbers.Integral) and 0 <= s < 52:
                out.append(string.ascii_uppercase[s] if s < 26 else string.ascii_lowercase[s - 26])
            else:
                raise ValueError(f"fastad.einsum: invalid subscript {s!r} in {what} "
                                 "(integers 0-51 and Ellipsis only)")
    if out.count(_ELL) > 1:
        raise ValueError(f"fastad.einsum: more than one ellipsis in {what}")
    return out


def _parse(args):
    """(operands, (labels per operand), output labels or None) of einsum's arguments."""
    if not args:
        raise TypeError("fastad.einsum: no subscripts and operands given")
    if isinstance(args[0], str):
        ins, out = _parse_spec(args[0])
        ops = list(args[1:])
        if len(ins) != len(ops):
            raise ValueError(f"fastad.einsum: {args[0]!r} names {len(ins)} operands, "
                             f"but {len(ops)} were given")
        return ops, ins, out
    if len(args) < 2:
        raise ValueError("fastad.einsum: subscripts (a string first, or a sublist after "
                         "each operand) are missing")
    ops, subs = list(args[0::2]), list(args[1::2])
    out = None
    if len(ops) > len(subs):          # einsum(a, sa, b, sb, out_sublist): odd count
        out = tuple(_labels(ops.pop(), "the output sublist"))
    return ops, tuple(tuple(_labels(s, "a sublist")) for s in subs), out


@functools.lru_cache(maxsize=256)
def _parse_spec(spec):
    spec = spec.replace(" ", "")
    if spec.count("->") > 1:
        raise ValueError(f"fastad.einsum: more than one '->' in {spec!r}")
    ins, out = spec.split("->") if "->" in spec else (spec, None)
    return tuple(tuple(_labels(s, "the subscripts")) for s in ins.split(",")), \
        None if out is None else tuple(_labels(out, "the output subscripts"))


def _expand(shapes, labels, out):
    """Ellipses replaced by labels of their own; the output's labels; sizes."""
    nell = []
    for i, (ls, sh) in enumerate(zip(labels, shapes)):
        named = len(ls) - (_ELL in ls)
        if (_ELL in ls and named > len(sh)) or (_ELL not in ls and named != len(sh)):
            raise ValueError(f"fastad.einsum: operand {i} has {len(sh)} dimensions "
                             f"(shape {sh}) but its subscripts name {named}")
        nell.append(len(sh) - named if _ELL in ls else 0)
    m = max(nell, default=0)
    ell = [("...", j) for j in range(m)]
    full = []
    for ls, n in zip(labels, nell):
        ls = list(ls)
        j = ls.index(_ELL) if _ELL in ls else len(ls)
        full.append(ls[:j] + ell[m - n:] + ls[j + 1:])
    if out is None:                   # implicit: broadcast axes, then labels used once
        counts = {}
        for ls in full:
            for l in ls:
                counts[l] = counts.get(l, 0) + 1
        out = ell + sorted(l for l, c in counts.items() if c == 1 and type(l) is str)
    else:
        if _ELL not in out and m:
            raise ValueError("fastad.einsum: the operands have broadcast ('...') axes but "
                             "the output subscripts have no '...'")
        out = list(out)
        j = out.index(_ELL) if _ELL in out else len(out)
        out = out[:j] + ell + out[j + 1:]
        if len(set(out)) != len(out):
            raise ValueError("fastad.einsum: a label repeats in the output subscripts")
        used = {l for ls in full for l in ls}
        for l in out:
            if l not in used:
                raise ValueError(f"fastad.einsum: output label {l!r} is in no operand")
    size = {}
    for i, (ls, sh) in enumerate(zip(full, shapes)):
        for l, n in zip(ls, sh):
            if size.get(l, 1) == 1:
                size[l] = n
            elif n != 1 and n != size[l]:
                raise ValueError(f"fastad.einsum: label {l if type(l) is str else '...'!r} "
                                 f"has size {size[l]} and size {n} (operand {i}, shape {sh})")
    return shapes, full, out, size


def _prepare(ls, sh, size):
    """How an operand with labels ls and shape sh is prepared: (the einsum
    spec of its diagonals or None, size-1 broadcast axes to drop, labels
    after), so that its labels are distinct."""
    uniq = list(dict.fromkeys(ls))
    diag = None
    if len(uniq) < len(ls):
        for l in uniq:
            dims = {n for m, n in zip(ls, sh) if m == l}
            if len(dims) > 1:
                raise ValueError(f"fastad.einsum: repeated label {l!r} has sizes {sorted(dims)} "
                                 "in one operand")
        ch = {l: string.ascii_letters[i] for i, l in enumerate(uniq)}
        diag = "".join(ch[l] for l in ls) + "->" + "".join(ch[l] for l in uniq)
        dims = dict(zip(ls, sh))
        sh = tuple(dims[l] for l in uniq)
        ls = uniq
    drop = tuple(i for i, (l, n) in enumerate(zip(ls, sh)) if n == 1 and size[l] != 1)
    return diag, drop, [l for i, l in enumerate(ls) if i not in drop]


def _path(items, size, optimize):
    """Pairs to contract, in order: np.einsum_path's, greedy unless optimize
    names another (even for optimize=False: a pair at a time, a poor order
    could make huge intermediates)."""
    n = len(items)
    if n <= 2:
        return [(0, 1)] * (n - 1)
    names = {}
    for ls in items:
        for l in ls:
            names.setdefault(l, string.ascii_letters[len(names)])
    spec = ",".join("".join(names[l] for l in ls) for ls in items)
    views = [np.broadcast_to(0.0, [size[l] for l in ls]) for ls in items]
    how = list(optimize) if isinstance(optimize, tuple) else \
        optimize if isinstance(optimize, str) and optimize != "einsum_path" else "greedy"
    path = np.einsum_path(spec, *views, optimize=how)[0]
    pairs = []
    for c in path[1:]:            # n-ary steps as pairs, each result last (NumPy's order)
        c, m = list(c), n
        if len(c) == 1:
            pairs.append((c[0], None))          # moves to the end
            continue
        for _ in range(len(c) - 1):
            a, b = c[0], c[1]
            pairs.append((a, b))
            c = [i - (i > a) - (i > b) for i in c[2:]] + [m - 2]
            m -= 1
        n = m
    return pairs


def _plan(labels, lo, shapes, optimize):
    """The steps of an einsum, from its labels and shapes alone (cached):
    per operand (diagonal spec, axes to drop, axes to sum), the pairs to
    contract (positions, labels, shape, whether a BLAS matmul does it), and
    the final (axes to sum, transpose)."""
    _, labels, lo, size = _expand(shapes, labels, lo)
    preps, items = [], []
    for ls, sh in zip(labels, shapes):
        diag, drop, ls = _prepare(ls, sh, size)
        preps.append([diag, drop, (), ls])
        items.append(ls)
    for i, p in enumerate(preps):
        needed = set(lo).union(*(ls for j, ls in enumerate(items) if j != i))
        p[2] = tuple(n for n, l in enumerate(items[i]) if l not in needed)
        items[i] = [l for l in items[i] if l in needed]
    steps = []
    for i, j in _path(items, size, optimize):
        if j is None:
            steps.append((i, None, None))
            items = [ls for n, ls in enumerate(items) if n != i] + [items[i]]
            continue
        lx, ly = items[i], items[j]
        rest = [ls for n, ls in enumerate(items) if n not in (i, j)]
        needed = set(lo).union(*rest)
        lz = [l for l in dict.fromkeys(lx + ly) if l in needed]
        blas = len(set(lx + ly)) == len(lx) + len(ly) - 1 and len(lz) == len(lx) + len(ly) - 2 \
            and lx and ly and lx[-1] == ly[0] and lz == lx[:-1] + ly[1:] \
            and len(lx) <= 2 and len(ly) <= 2 and size[lx[-1]] > 0
        steps.append((i, j, (lx, ly, lz, tuple(size[m] for m in lz), blas)))
        items = rest + [lz]
    lz, = items
    total = tuple(n for n, l in enumerate(lz) if l not in lo)
    lz = [l for l in lz if l in lo]
    perm = None if lz == lo else tuple(lz.index(l) for l in lo)
    return preps, steps, total, perm


_plans = functools.lru_cache(maxsize=512)(_plan)


def _sum(a, axes):
    return arrays.sum(a, axis=axes) if _is_active(a) else np.sum(a, axis=axes)


def einsum(*args, optimize=False, out=None, dtype=None, order="K", casting="safe"):
    """np.einsum on fastad values: explicit or implicit output, '...', repeated
    labels (diagonals), any number of operands; `optimize` orders the
    contractions as np.einsum_path does."""
    if out is not None:
        raise TypeError("fastad.einsum: out= is not supported (arrays on the tape are immutable)")
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError("fastad.einsum: dtype must be float64 (values on the tape are), "
                        f"got {dtype!r}")
    ops, labels, lo = _parse(args)
    ops = [_as_operand(o) for o in ops]
    if not any(_is_active(o) for o in ops):
        return np.einsum(*args, optimize=optimize)
    shapes = tuple(_shape(o) for o in ops)
    if isinstance(optimize, list):
        optimize = tuple(tuple(p) if isinstance(p, list) else p for p in optimize)
    try:
        preps, steps, total, perm = _plans(labels, lo, shapes, optimize)
    except TypeError:               # an optimize= that is no key (a dict, say)
        preps, steps, total, perm = _plan(labels, lo, shapes, optimize)
    items = []
    for o, (diag, drop, axes, _) in zip(ops, preps):
        if diag is not None:
            o = _rearrange(o, lambda v: np.einsum(diag, v))
        if drop:
            o = _rearrange(o, lambda v: np.squeeze(v, axis=drop))
        items.append(_sum(o, axes) if axes else o)
    for i, j, step in steps:
        z = items[i] if j is None else _pair(items[i], items[j], step)
        items = [it for n, it in enumerate(items) if n not in (i, j)] + [z]
    z, = items
    if total:
        z = _sum(z, total)
    return z if perm is None else _rearrange(z, lambda v: np.transpose(v, perm))


# ---------------------------------------------------------------- built on einsum

def outer(a, b, out=None):
    """np.outer: both operands flattened, every product a_i b_j."""
    if out is not None:
        raise TypeError("fastad.outer: out= is not supported (arrays on the tape are immutable)")
    return einsum("i,j->ij", arrays.reshape(_as_operand(a), -1), arrays.reshape(_as_operand(b), -1))


def inner(a, b):
    """np.inner: sums over the last axes of a and b (a product for a scalar)."""
    sa, sb = _shape(a), _shape(b)
    if not sa or not sb:
        return arrays.elementwise("mul", _as_operand(a), _as_operand(b))
    if sa[-1] != sb[-1]:
        raise ValueError(f"fastad.inner: the last axes of shapes {sa} and {sb} differ")
    la = list(string.ascii_lowercase[:len(sa) - 1])
    lb = list(string.ascii_uppercase[:len(sb) - 1])
    return einsum(a, _ints(la + ["z"]), b, _ints(lb + ["z"]), _ints(la + lb))


def _ints(letters):
    """Letters as einsum sublist integers (A-Z: 0-25, a-z: 26-51)."""
    return [string.ascii_uppercase.index(c) if c.isupper() else 26 + string.ascii_lowercase.index(c)
            for c in letters]


def vdot(a, b):
    """np.vdot: the dot product of the flattened operands (real values)."""
    sa, sb = _shape(a), _shape(b)
    if math.prod(sa) != math.prod(sb):
        raise ValueError(f"fastad.vdot: operands of shapes {sa} and {sb} have different sizes")
    return einsum("i,i->", arrays.reshape(_as_operand(a), -1), arrays.reshape(_as_operand(b), -1))


def kron(a, b):
    """np.kron: the Kronecker product (block i of the result is a_i * b)."""
    sa, sb = _shape(a), _shape(b)
    n = max(len(sa), len(sb))
    a = arrays.reshape(_as_operand(a), (1,) * (n - len(sa)) + tuple(sa))
    b = arrays.reshape(_as_operand(b), (1,) * (n - len(sb)) + tuple(sb))
    sa, sb = _shape(a), _shape(b)
    la, lb = _ints(string.ascii_lowercase[:n]), _ints(string.ascii_uppercase[:n])
    z = einsum(a, la, b, lb, [c for pair in zip(la, lb) for c in pair])
    return arrays.reshape(z, tuple(p * q for p, q in zip(sa, sb)))


def tensordot(a, b, axes=2):
    """np.tensordot: sums over `axes` (the last n of a with the first n of b,
    or a pair of axis sequences)."""
    sa, sb = _shape(a), _shape(b)
    try:
        if isinstance(axes, numbers.Integral):
            n = int(axes)
            if n < 0 or n > min(len(sa), len(sb)):
                raise ValueError
            xa, xb = list(range(len(sa) - n, len(sa))), list(range(n))
        else:
            xa, xb = axes
            xa = [xa] if isinstance(xa, numbers.Integral) else list(xa)
            xb = [xb] if isinstance(xb, numbers.Integral) else list(xb)
            if len(xa) != len(xb):
                raise ValueError
            xa = [int(i) + len(sa) if i < 0 else int(i) for i in xa]
            xb = [int(i) + len(sb) if i < 0 else int(i) for i in xb]
            if any(not 0 <= i < len(sa) for i in xa) or any(not 0 <= i < len(sb) for i in xb) \
                    or len(set(xa)) < len(xa) or len(set(xb)) < len(xb):
                raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"fastad.tensordot: invalid axes {axes!r} for shapes {sa} "
                         f"and {sb}") from None
    for i, j in zip(xa, xb):
        if sa[i] != sb[j]:
            raise ValueError(f"fastad.tensordot: shape mismatch for sum: axis {i} of {sa} "
                             f"and axis {j} of {sb}")
    la = list(range(len(sa)))
    lb = list(range(len(sa), len(sa) + len(sb)))
    for i, j in zip(xa, xb):
        lb[j] = la[i]
    lo = [l for i, l in enumerate(la) if i not in xa] + [l for j, l in enumerate(lb) if j not in xb]
    if len(sa) + len(sb) > 52:
        raise ValueError("fastad.tensordot: more than 52 axes in all")
    return einsum(a, la, b, lb, lo)


def matmul(a, b):
    """a @ b with NumPy's rules: stacks of matrices broadcast over the
    leading axes, a 1-D operand is a vector (its axis removed afterwards)."""
    sa, sb = _shape(a), _shape(b)
    if not sa or not sb:
        raise ValueError("fastad.matmul: the operands must have at least one dimension, "
                         f"got shapes {sa} and {sb} (use * for scalars)")
    ka = sa[-1]
    kb = sb[0] if len(sb) == 1 else sb[-2]
    if len(sa) <= 2 and len(sb) <= 2 and ka != 0 and kb != 0:
        return arrays.matmul(a, b)          # the BLAS block
    if ka != kb:
        raise ValueError(f"fastad.matmul: shapes {sa} and {sb} do not align ({ka} != {kb})")
    ba, bb = sa[:-2], sb[:-2]
    try:
        np.broadcast_shapes(ba, bb)
    except ValueError:
        raise ValueError(f"fastad.matmul: the stacks of shapes {sa} and {sb} do not "
                         "broadcast") from None
    spec_a = "...ij" if len(sa) >= 2 else "j"
    spec_b = "...jk" if len(sb) >= 2 else "j"
    spec_o = "..." + ("i" if len(sa) >= 2 else "") + ("k" if len(sb) >= 2 else "")
    return einsum(f"{spec_a},{spec_b}->{spec_o}", a, b)


def dot(a, b, out=None):
    """np.dot: a product for a scalar, matmul up to 2-D, else a sum over the
    last axis of a and the second-to-last of b (the last for 1-D b)."""
    if out is not None:
        raise TypeError("fastad.dot: out= is not supported (arrays on the tape are immutable)")
    sa, sb = _shape(a), _shape(b)
    if not sa or not sb:
        return arrays.elementwise("mul", _as_operand(a), _as_operand(b))
    if len(sa) <= 2 and len(sb) <= 2:
        return arrays.matmul(a, b)
    j = 0 if len(sb) == 1 else len(sb) - 2
    if sa[-1] != sb[j]:
        raise ValueError(f"fastad.dot: shapes {sa} and {sb} do not align ({sa[-1]} != {sb[j]})")
    return tensordot(a, b, ([len(sa) - 1], [j]))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """np.cross of 2- or 3-vectors along the given axes (broadcast elsewhere):
    products and differences of components."""
    def traced(o):
        return active_info(o) is not None or \
            (isinstance(o, (list, tuple)) and arrays._has_active(o))
    if not (traced(a) or traced(b)):
        return np.cross(a, b, axisa, axisb, axisc, axis)
    if axis is not None:
        axisa = axisb = axisc = axis
    a = np.moveaxis(_as_operand(a), axisa, -1)
    b = np.moveaxis(_as_operand(b), axisb, -1)
    na, nb = _shape(a)[-1:], _shape(b)[-1:]
    if na not in ((2,), (3,)) or nb not in ((2,), (3,)):
        raise ValueError(f"fastad.cross: the vectors must have 2 or 3 components, got "
                         f"{na[0] if na else 0} and {nb[0] if nb else 0}")
    a0, a1 = a[..., 0], a[..., 1]
    b0, b1 = b[..., 0], b[..., 1]
    z = a0 * b1 - a1 * b0
    if na == nb == (2,):
        return z
    a2 = a[..., 2] if na == (3,) else 0.0
    b2 = b[..., 2] if nb == (3,) else 0.0
    comps = [a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, z]
    shape = np.broadcast_shapes(*[_shape(p) for p in comps])
    c = arrays.stack([np.broadcast_to(p, shape) for p in comps], axis=-1)
    return np.moveaxis(c, -1, axisc)


arrays.implements(np.einsum, einsum, "einsum",
                  ("optimize", "out", "dtype", "order", "casting"))
arrays.implements(np.outer, outer, "outer", ("out",))
arrays.implements(np.inner, inner, "inner")
arrays.implements(np.vdot, vdot, "vdot")
arrays.implements(np.kron, kron, "kron")
arrays.implements(np.tensordot, tensordot, "tensordot", ("axes",))
arrays.implements(np.dot, dot, "dot", ("out",))
arrays.implements(np.cross, cross, "cross", ("axisa", "axisb", "axisc", "axis"))
arrays.provide_products(sys.modules[__name__])
