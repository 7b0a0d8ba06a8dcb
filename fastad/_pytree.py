"""Pytrees: arguments and outputs made of nested tuples, lists and dicts.

As in JAX, a pytree is a leaf or a tuple, list, namedtuple or dict (keys in
sorted order) of pytrees; None is an empty subtree.  Leaves are numbers and
arrays.  One exception keeps NumPy's reading of nested lists: a list or
tuple holding only numbers (at any depth) is one array leaf, so
`fad.grad(f)([1.0, 2.0])` still gives an ndarray (and an output list of
scalars is still one vector).

`flatten` gives (leaves, Tree); the Tree rebuilds the structure from
leaves and converts between it and the tape's flat (k, n) buffers.  Each
leaf becomes its own input on the tape (no concatenation on the way in;
the gradient's sweep hands each leaf's cotangent back).  A float16/float32
leaf gets its gradient in its own dtype; the tape computes in float64.

Plain Python (imported by fastad._recording and, lazily, by the Tape).
"""
import itertools
import math
import numbers

import numpy as np

__all__ = ["flatten", "Tree", "is_plain"]

# structure nodes: LEAF, NONE, or (kind, aux, children) for containers
LEAF = "*"
NONE = None


def is_plain(x):
    """True for what needs no tree: a float, an int, a float64/int/bool ndarray."""
    t = type(x)
    if t is float or t is int:
        return True
    return t is np.ndarray and (x.dtype.kind in "biu" or x.dtype == np.float64)


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


_CONTAINERS = (np.ndarray, dict)   # a list/tuple starting with one is no scalar nest


def _scalar_nest(x, atoms):
    """x is a number (or an `atoms` instance) or a list/tuple of such, at any depth."""
    t = type(x)
    if t is float or t is int:
        return True
    if t is np.ndarray or t is dict or x is None:      # (the common cases, quickly)
        return False
    if t is list or t is tuple:
        for o in x:                 # (a loop: all() over a generator costs twice this)
            if not _scalar_nest(o, atoms):
                return False
        return True
    if isinstance(x, (numbers.Number, np.generic)) and not isinstance(x, complex):
        return True
    return atoms is not None and isinstance(x, atoms)


_KEY_FORMATS = ("[{!r}]", "[{}]", ".{}")      # a dict key, a list index, a field


def _path(path):
    """A path kept as nested (parent, key, format) triples (cheap to make:
    the text is formatted only for a message) as text."""
    keys = []
    while path is not None:
        path, key, fmt = path
        keys.append(_KEY_FORMATS[fmt].format(key))
    return "".join(reversed(keys)) or "(the root)"


def _sorted_keys(d, who, path):
    try:
        return sorted(d)
    except TypeError:
        raise TypeError(f"{who}: the dict at {_path(path)} has keys that cannot be "
                        f"sorted ({', '.join(repr(k) for k in d)}); pytree dicts need "
                        f"sortable keys (as in JAX)") from None


def flatten(x, who="fastad", atoms=None, leaf_ok=None):
    """(leaves, structure) of pytree x.  `atoms`: extra scalar leaf types (Var
    for outputs), part of scalar nests; `leaf_ok(leaf)`: False makes a
    TypeError naming the leaf's path."""
    leaves = []
    return leaves, _walk(x, None, leaves, who, atoms, leaf_ok)


def _walk(o, path, leaves, who, atoms, leaf_ok):
    # a module-level function, not a closure over itself: a recursive closure
    # is a reference cycle that every call would leave to the garbage collector
    t = type(o)
    if t is np.ndarray and o.dtype.kind in "biuf":      # the common leaf
        leaves.append(o)
        return LEAF
    if o is None:
        return NONE
    if isinstance(o, dict):
        keys = _sorted_keys(o, who, path)
        return ("dict", tuple(keys),
                tuple([_walk(o[k], (path, k, 0), leaves, who, atoms, leaf_ok)
                       for k in keys]))
    if t is tuple or t is list:
        if (o and type(o[0]) in _CONTAINERS) or not _scalar_nest(o, atoms):
            children = []
            for i, v in enumerate(o):
                if type(v) is np.ndarray and v.dtype.kind in "biuf":   # (a leaf: no call)
                    leaves.append(v)
                    children.append(LEAF)
                else:
                    children.append(_walk(v, (path, i, 1), leaves, who, atoms, leaf_ok))
            return (t.__name__, None, tuple(children))
    elif _is_namedtuple(o):
        return ("namedtuple", t, tuple([
            _walk(v, (path, name, 2), leaves, who, atoms, leaf_ok)
            for name, v in zip(t._fields, o)]))
    elif isinstance(o, (list, tuple)):
        raise TypeError(f"{who}: the value at {_path(path)} is a "
                        f"{t.__name__}, a subclass of {t.__mro__[1].__name__} "
                        f"that fastad cannot rebuild; use a tuple, list, dict or "
                        f"namedtuple")
    if leaf_ok is not None and not leaf_ok(o):
        raise TypeError(f"{who}: the leaf at {_path(path)} is {_describe(o)}; "
                        f"leaves must be real numbers or arrays of them "
                        f"(in tuples, lists, dicts or namedtuples)")
    leaves.append(o)
    return LEAF


def _describe(o):
    if isinstance(o, np.ndarray):
        return f"an ndarray of dtype {o.dtype}"
    return f"a {type(o).__name__}"


def input_leaf_ok(o):
    """An input leaf: a real number or an array (or numeric nest) of real numbers."""
    if isinstance(o, np.ndarray):
        return o.dtype.kind in "biuf"
    if isinstance(o, (list, tuple)):
        return True          # a scalar nest (np.asarray checks it further)
    return isinstance(o, (numbers.Real, np.bool_)) or \
        (isinstance(o, np.generic) and o.dtype.kind in "biuf")


def _unflatten(node, it):
    if node is NONE:
        return None
    if node is LEAF:
        return next(it)
    kind, aux, children = node
    vals = [_unflatten(c, it) for c in children]
    if kind == "dict":
        return dict(zip(aux, vals))
    if kind == "namedtuple":
        return aux(*vals)
    return tuple(vals) if kind == "tuple" else vals


def _node_str(node):
    if node is NONE:
        return "None"
    if node is LEAF:
        return "*"
    kind, aux, children = node
    inner = [_node_str(c) for c in children]
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {s}" for k, s in zip(aux, inner)) + "}"
    if kind == "namedtuple":
        return aux.__name__ + "(" + ", ".join(inner) + ")"
    if kind == "tuple":
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
    return "[" + ", ".join(inner) + "]"


_FLOAT64 = np.dtype(np.float64)     # (a singleton: `is` is the cheap test)


def _result_dtype(leaf):
    """float16/float32 leaves keep their dtype; everything else gets float64."""
    if type(leaf) is float:
        return None
    dt = getattr(leaf, "dtype", None)
    if dt is not None and dt.kind == "f" and dt.itemsize < 8:
        return dt
    return None


class Tree:
    """A pytree's structure with its leaves' shapes (None: a scalar given as a
    number, whose results are numbers) and result dtypes (None: float64).
    Picklable (tapes keep theirs)."""

    __slots__ = ("node", "shapes", "dtypes", "sizes", "offsets", "size")

    def __init__(self, node, shapes, dtypes):
        self.node = node
        self.shapes = tuple(shapes)
        self.dtypes = tuple(dtypes)
        self.sizes = tuple(1 if s is None else math.prod(s) for s in self.shapes)
        self.offsets = tuple(itertools.accumulate(self.sizes, initial=0))[:-1]
        self.size = sum(self.sizes)

    def __getstate__(self):
        return (self.node, self.shapes, self.dtypes)

    def __setstate__(self, state):
        self.__init__(*state)

    @classmethod
    def of_inputs(cls, node, leaves):
        shapes, dtypes = [], []
        for v in leaves:
            if type(v) is np.ndarray and v.dtype is _FLOAT64:    # (the common leaf)
                shapes.append(v.shape)
                dtypes.append(None)
                continue
            shapes.append(v.shape if type(v) is np.ndarray else
                          None if not isinstance(v, (np.ndarray, list, tuple)) else np.shape(v))
            dtypes.append(_result_dtype(v))
        return cls(node, shapes, dtypes)

    @classmethod
    def leaf(cls, shape, dtype=None):
        return cls(LEAF, [None if shape is None else tuple(shape)], [dtype])

    @property
    def n_leaves(self):
        return len(self.shapes)

    def __repr__(self):
        return f"Tree({_node_str(self.node)}, shapes={list(self.shapes)})"

    def unflatten(self, leaves):
        return _unflatten(self.node, iter(leaves))

    def _leaves_like(self, x, who):
        """The leaves of x, which must have this structure."""
        leaves, node = flatten(x, who)
        if node != self.node:
            raise ValueError(f"{who} has the structure {_node_str(node)} but the tape "
                             f"was recorded at {_node_str(self.node)}")
        return leaves

    def _shape_of(self, i):
        s = self.shapes[i]
        return () if s is None else s

    def _where(self, i):
        """The path of leaf i, for messages."""
        paths = []

        def walk(node, path):
            if node is LEAF:
                paths.append(path)
            elif node is not NONE:
                kind, aux, children = node
                for j, c in enumerate(children):
                    key = (f"[{aux[j]!r}]" if kind == "dict" else
                           f".{aux._fields[j]}" if kind == "namedtuple" else f"[{j}]")
                    walk(c, path + key)
        walk(self.node, "")
        return paths[i] or "(the root)"

    def flat(self, x, who):
        """x, of this structure and these shapes, as one float64 vector."""
        leaves = self._leaves_like(x, who)
        out = np.empty(self.size)
        for i, (v, off, n) in enumerate(zip(leaves, self.offsets, self.sizes)):
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"{who}{self._where(i)} must be real numbers, "
                                f"got dtype {a.dtype}")
            if a.shape != self._shape_of(i):
                raise ValueError(f"{who}{self._where(i)} has shape {a.shape} but the "
                                 f"tape was recorded at shape {self._shape_of(i)}")
            out[off:off + n] = a.reshape(-1)
        return out

    def seeds(self, v, what):
        """v in this structure, each leaf of its shape or all with a leading
        axis of k -> ((k, size) float64, stacked?)."""
        leaves = self._leaves_like(v, f"fastad: the {what}")
        if any(np.iscomplexobj(a) for a in leaves):
            raise TypeError(f"fastad: the {what} must be real numbers, got complex values "
                            f"(fastad differentiates real functions; pass the real and "
                            f"imaginary parts as separate {what}s)")
        arrs = [np.asarray(a, dtype=np.float64) for a in leaves]
        plain = all(a.shape == self._shape_of(i) for i, a in enumerate(arrs))
        if plain:
            out = np.empty((1, self.size))
            for a, off, n in zip(arrs, self.offsets, self.sizes):
                out[0, off:off + n] = a.reshape(-1)
            return out, False
        ks = {a.shape[0] if a.ndim == len(self._shape_of(i)) + 1
              and a.shape[1:] == self._shape_of(i) else None for i, a in enumerate(arrs)}
        if len(ks) != 1 or None in ks:
            shapes = [a.shape for a in arrs]
            want = [self._shape_of(i) for i in range(len(arrs))]
            raise ValueError(f"fastad: the {what}'s leaves must have the shapes {want} "
                             f"or all (k,) + those for k stacked {what}s, got {shapes}")
        k = ks.pop()
        out = np.empty((k, self.size))
        for a, off, n in zip(arrs, self.offsets, self.sizes):
            out[:, off:off + n] = a.reshape(k, n)
        return out, True

    def split(self, g, stacked):
        """(k, size) rows -> this structure (leaves with a leading k when stacked)."""
        k = g.shape[0]
        leaves = []
        for s, dt, off, n in zip(self.shapes, self.dtypes, self.offsets, self.sizes):
            if stacked:
                v = g[:, off:off + n].reshape((k,) + (() if s is None else s))
            elif s is None:
                v = float(g[0, off])
                leaves.append(v if dt is None else dt.type(v))
                continue
            else:
                v = g[0, off:off + n].reshape(s)
            leaves.append(v if dt is None else v.astype(dt))
        return self.unflatten(leaves)


def _tree_or_leaf(tree, shape):
    return tree if tree is not None else Tree.leaf(shape)


def _cross(rows, cols, M):
    """rows' structure of (cols' structure of blocks) from M (rows.size, cols.size)."""
    out = []
    for s, off, n in zip(rows.shapes, rows.offsets, rows.sizes):
        rs = () if s is None else s
        inner = []
        for t, dt, o2, n2 in zip(cols.shapes, cols.dtypes, cols.offsets, cols.sizes):
            b = M[off:off + n, o2:o2 + n2].reshape(rs + (() if t is None else t))
            inner.append(b if dt is None else b.astype(dt))
        out.append(cols.unflatten(inner))
    return rows.unflatten(out)


def jacobian_tree(J, tape):
    """The (n_out, n_in) Jacobian in the output's structure of the input's
    structure of blocks of shape out_leaf.shape + in_leaf.shape (as JAX's
    jacrev); a plain output or input is not wrapped."""
    in_tree = _tree_or_leaf(tape.in_tree, tape.in_shape)
    out_tree = _tree_or_leaf(tape.out_tree, tape.out_shape)
    return _cross(out_tree, in_tree, J)


def hessian_tree(H, tape):
    """The (n, n) Hessian in the input's structure of the input's structure."""
    return _cross(tape.in_tree, tape.in_tree, H)
