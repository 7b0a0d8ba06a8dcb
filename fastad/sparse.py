"""Sparse Jacobians and Hessians: sparsity detection, coloring, compressed sweeps.

The notes: columns of J that share no row are structurally orthogonal, so
one tangent sweep with their sum as the direction gives all of them at once;
color the column intersection graph, sweep once per color (all colors in one
multi-direction sweep) and read every nonzero back.  In reverse mode the same
holds for rows and seeds.  A few dense rows and dense columns (an arrowhead)
defeat both, but not the two together: rows that are dense go to a reverse
sweep, the rest to a forward sweep (a bidirectional partition).

    fad.jacobian_sparsity(f)(x)    boolean scipy.sparse.csr_matrix
    fad.hessian_sparsity(f)(x)     boolean scipy.sparse.csr_matrix
    fad.sparse_jacobian(f)(x)      scipy.sparse.csr_matrix
    fad.sparse_hessian(f)(x)       scipy.sparse.csr_matrix
    fad.color_jacobian(pattern, partition="column" | "row" | "bidirectional")
    fad.color_hessian(pattern)     star coloring of a symmetric pattern
    tape.sparse_jacobian(x), tape.sparse_hessian(x): pattern and coloring are
    kept on the tape, so a call at a new x only sweeps and decompresses.

Patterns are structural: they come from the op table's flags along the
recorded path, so they hold wherever the tape replays.  SciPy is needed only
for the returned matrices.
"""
import numpy as np

from fastad import _coloring, _nested, _sparsity, _tape
from fastad._blocks import Elementwise, Sum, TangentFold
from fastad._fold import ScalarFold
from fastad._kernels import gather_flat
from fastad._tape import FWD_LANE_COST, REV_LANE_COST
from fastad._recording import record
from fastad._validate import check_sparse

__all__ = ["jacobian_sparsity", "hessian_sparsity", "sparse_jacobian", "sparse_hessian",
           "color_jacobian", "color_hessian", "JacobianPlan", "HessianPlan"]

PARTITIONS = ("column", "row", "bidirectional")


def _numbers_only(who, x):
    """The sparse routines return SciPy matrices, which cannot hold traced values."""
    if _nested.has_traced(x):
        raise TypeError(
            f"fastad.{who} takes numbers, not the traced values of a transform in "
            f"progress: its result is a scipy.sparse matrix, which fastad cannot "
            f"differentiate; inside a transform use fad.jacobian or fad.hessian "
            f"(they nest)")


def _scipy_sparse():
    try:
        import scipy.sparse
    except ImportError:
        raise ImportError("fastad: sparse Jacobians and Hessians are scipy.sparse "
                          "matrices; install SciPy (pip install scipy)") from None
    return scipy.sparse


# ---------------------------------------------------------------- patterns

def _propagate(tape, hessian, budget=None):
    if tape.out_slots is None:
        raise ValueError("fastad: this tape has no outputs (record it with fad.record)")
    blocks = _descriptions(tape) if tape.blocks else []
    return _sparsity.propagate(tape, tape.out_slots, blocks, hessian, budget)


def tape_patterns(tape, hessian=False):
    """(Jacobian pattern, Hessian pattern or None) of a tape as CSR triples
    (indptr, indices, shape); kept on the tape."""
    cache = _cache(tape)
    key = "hessian_pattern" if hessian else "jacobian_pattern"
    if key not in cache:
        (jp, ji), hes = _propagate(tape, hessian)
        cache["jacobian_pattern"] = (jp, ji, (tape.n_outputs, tape.n_inputs))
        if hessian:
            hp, hi = hes
            cache["hessian_pattern"] = (hp, hi, (tape.n_inputs, tape.n_inputs))
    return cache["jacobian_pattern"], cache.get("hessian_pattern")


def _cache(tape):
    if tape.sparse_cache is None:
        tape.sparse_cache = {}
    return tape.sparse_cache


def _csr_result(data, plan):
    """A csr_matrix of a plan's pattern with its own index arrays.  Given
    int32 indices and indptr SciPy neither scans nor converts them, which
    otherwise costs a pass over the indices on every call; the plan keeps
    them in that dtype, so a call only copies them."""
    sp = _scipy_sparse()
    idx = getattr(plan, "_csr_index", None)
    if idx is None:
        shape = plan.shape
        dt = np.int32 if max(max(shape, default=0), plan.indices.size) < 2 ** 31 else np.int64
        idx = plan._csr_index = (plan.indices.astype(dt), plan.indptr.astype(dt))
    return sp.csr_matrix((data, idx[0].copy(), idx[1].copy()), shape=plan.shape)


def _bool_csr(triple):
    sp = _scipy_sparse()
    indptr, indices, shape = triple
    return sp.csr_matrix((np.ones(indices.size, dtype=bool), indices, indptr), shape=shape)


def jacobian_sparsity(f):
    """f -> function of x giving the Jacobian's pattern, a boolean
    scipy.sparse.csr_matrix of shape (out.size, x.size), by index-set
    propagation over the tape recorded at x."""
    def pattern_f(x):
        _numbers_only("jacobian_sparsity", x)
        return _bool_csr(tape_patterns(record(f, x))[0])
    return pattern_f


def hessian_sparsity(f):
    """f -> function of x giving the Hessian's pattern of scalar f, a boolean
    symmetric scipy.sparse.csr_matrix (x.size, x.size), from the op table's
    second-derivative flags (nonlinear interaction domains)."""
    def pattern_f(x):
        _numbers_only("hessian_sparsity", x)
        tape = record(f, x)
        _need_scalar(tape, "hessian_sparsity")
        return _bool_csr(tape_patterns(tape, hessian=True)[1])
    return pattern_f


def _need_scalar(tape, who):
    if tape.n_outputs != 1 or tape.out_shape != ():
        raise ValueError(f"fastad.{who} needs f to return a scalar, but it returned shape "
                         f"{tape.out_shape}; use fad.sparse_jacobian for vector outputs")


# ---------------------------------------------------------------- coloring

def _csr_of(pattern, who):
    """(indptr, indices, shape) of a scipy.sparse matrix or dense array pattern."""
    if isinstance(pattern, tuple) and len(pattern) == 3:
        return pattern          # (fastad._coloring checks these)
    if hasattr(pattern, "tocsr"):
        check_sparse(pattern, who)      # before SciPy's compiled code trusts it
        m = pattern.tocsr()
        m.sum_duplicates()
        m.sort_indices()
        m.eliminate_zeros()
        return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.shape
    a = np.asarray(pattern)
    if a.ndim != 2:
        raise ValueError(f"fastad: a sparsity pattern must be 2-D, got shape {a.shape}")
    rows, cols = np.nonzero(a)
    indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int32), a.shape


def color_jacobian(pattern, partition="column", ordering="best"):
    """Colors for a Jacobian pattern (scipy.sparse matrix or dense array).

    partition "column": distance-2 coloring of the column intersection graph
    (one forward lane per color); "row": the same for rows (one reverse lane
    per color); "bidirectional": (column colors, row colors) where -1 marks
    a column or row left out of that sweep.  ordering: "natural",
    "largest_first", "smallest_last", "incidence_degree" or "best" (the
    fewest colors of the three greedy orderings)."""
    indptr, indices, shape = _csr_of(pattern, "fastad.color_jacobian")
    if partition == "column":
        return _coloring.color_columns(indptr, indices, shape, ordering)
    if partition == "row":
        return _coloring.color_rows(indptr, indices, shape, ordering)
    if partition == "bidirectional":
        return _coloring.bicolor(indptr, indices, shape)
    raise ValueError(f"fastad.color_jacobian: partition must be one of {PARTITIONS}, "
                     f"got {partition!r}")


def color_hessian(pattern, ordering="best"):
    """Star coloring of a symmetric pattern: H S for the seed S of these
    colors determines every nonzero of H directly."""
    indptr, indices, shape = _csr_of(pattern, "fastad.color_hessian")
    if shape[0] != shape[1]:
        raise ValueError(f"fastad.color_hessian: a Hessian pattern is square, got {shape}")
    return _coloring.star_color(indptr, indices, shape[0], ordering)


def _n_colors(colors):
    return int(colors.max()) + 1 if colors.size and colors.max() >= 0 else 0


class JacobianPlan:
    """What a sparse Jacobian of one tape needs besides the sweeps: the
    pattern, the partition chosen and its colors and seeds."""

    def __init__(self, tape, mode="auto", ordering="best"):
        if mode not in ("auto", "fwd", "rev", "bidirectional"):
            raise ValueError("fastad.sparse_jacobian: mode must be 'auto', 'fwd', 'rev' "
                             f"or 'bidirectional', got {mode!r}")
        self.indptr, self.indices, self.shape = tape_patterns(tape)[0]
        m, n = self.shape
        csr = (self.indptr, self.indices, self.shape)
        row_nnz = np.diff(self.indptr)
        col_nnz = np.bincount(self.indices, minlength=n)
        # a one-sided coloring needs at least as many colors as the densest
        # row (columns) or column (rows), and costs about the sum of squares
        # of those counts: skip it when a bicoloring is bound to win anyway
        nnz = max(int(self.indices.size), 1)
        heavy_col = float(np.dot(row_nnz, row_nnz)) > 64.0 * nnz + 1e6
        heavy_row = float(np.dot(col_nnz, col_nnz)) > 64.0 * nnz + 1e6
        lb_col, lb_row = int(row_nnz.max(initial=0)), int(col_nnz.max(initial=0))
        cands = {}
        if mode == "fwd" or (mode == "auto" and not heavy_col):
            cands["fwd"] = (_coloring.color_columns(*csr, ordering), None)
        # no row coloring can beat a column coloring already at its lower bound
        # unless the rows' own bound is lower after weighting
        col_optimal = "fwd" in cands and _n_colors(cands["fwd"][0]) <= lb_col \
            and lb_col * FWD_LANE_COST <= lb_row * REV_LANE_COST
        if mode == "rev" or (mode == "auto" and not heavy_row and not col_optimal):
            cands["rev"] = (None, _coloring.color_rows(*csr, ordering))
        if mode == "bidirectional" or (mode == "auto" and (
                not cands or self._worth_bicoloring(cands, row_nnz, col_nnz))):
            cands["bidirectional"] = _coloring.bicolor(*csr, ordering=ordering)
        self.mode = min(cands, key=lambda k: self._cost(*cands[k]))
        self.col_colors, self.row_colors = cands[self.mode]
        self.n_fwd = _n_colors(self.col_colors) if self.col_colors is not None else 0
        self.n_rev = _n_colors(self.row_colors) if self.row_colors is not None else 0
        if self.indices.size == 0:
            self.n_fwd = self.n_rev = 0
        # (p, n) and (q, m) views of C-ordered (n, p) and (m, q) seed matrices:
        # the sweeps copy them into their slot-major buffers as one block
        self.col_seeds = (_coloring.seed_matrix(self.col_colors, self.n_fwd).T
                          if self.n_fwd else None)
        self.row_seeds = (_coloring.seed_matrix(self.row_colors, self.n_rev).T
                          if self.n_rev else None)
        self._gathers(tape)

    def _gathers(self, tape):
        """Where each nonzero sits in the sweeps' slot-major buffers: J[i, j]
        read forward is lane col_colors[j] of output i's slot; read in
        reverse, lane row_colors[i] of input j's slot (inputs are slots 0..n-1)."""
        m, n = self.shape
        rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(self.indptr))
        cols = self.indices.astype(np.int64)
        out_slots = np.asarray(tape.out_slots, dtype=np.int64).reshape(-1)
        if self.mode == "fwd":
            rev = np.zeros(rows.size, dtype=bool)
        elif self.mode == "rev":
            rev = np.ones(rows.size, dtype=bool)
        else:
            rev = self.row_colors[rows] >= 0
        fwd = ~rev
        self.fwd_pos, self.rev_pos = np.flatnonzero(fwd), np.flatnonzero(rev)
        self.fwd_src = out_slots[rows[fwd]] * self.n_fwd + self.col_colors[cols[fwd]] \
            if self.n_fwd else None
        self.rev_src = cols[rev] * self.n_rev + self.row_colors[rows[rev]] \
            if self.n_rev else None

    @staticmethod
    def _cost(col, row):
        return ((_n_colors(col) if col is not None else 0) * FWD_LANE_COST
                + (_n_colors(row) if row is not None else 0) * REV_LANE_COST)

    def _worth_bicoloring(self, cands, row_nnz, col_nnz):
        """Bicoloring pays when a few dense rows or columns inflate the
        one-sided colorings well above their lower bounds (max nonzeros in a
        row for columns, in a column for rows)."""
        best = min(self._cost(*c) for c in cands.values())
        bound = min(row_nnz.max(initial=0), col_nnz.max(initial=0))
        if best > 2 * max(bound, 1) or best > 16:
            return True
        # a few rows or columns far denser than the rest (an arrowhead): each
        # one-sided coloring is stuck at the dense line's length
        dense = [c.max() > 2 * np.median(c) + 2 for c in (row_nnz, col_nnz) if c.size]
        return best > 2 and any(dense)

    @property
    def sweeps(self):
        """Lanes per evaluation: (forward directions, reverse seeds)."""
        return self.n_fwd, self.n_rev

    _folded = None          # forward sweeps: a ScalarFold or TangentFold, or False
    _evaluations = 0

    def _fold(self, tape, x):
        """(fold, data): the tape's forward sweep with this plan's seeds,
        keeping the tangents the seeds alone decide (fold None: sweep
        everything); data, when this call made the fold at x, is the answer
        read from its first full sweep before other threads can sweep into
        it.  Made at the second evaluation: a plan used once
        (fad.sparse_jacobian(f)(x) records a new tape per call) would only
        pay for it."""
        self._evaluations += 1
        if self._folded is not None or self._evaluations < 2:
            return self._folded or None, None
        fold = False
        if not tape.blocks or tape._constant_slots() is not None:
            fold = (TangentFold if tape.blocks else ScalarFold)(tape, self.col_seeds, x)
            if fold.useful:
                fold.fuse(tape, self.fwd_src, self.indptr)
            else:
                fold = False
        data = gather_flat(fold.tangents, self.fwd_src) if fold else None
        self._folded = fold
        return fold or None, data

    def evaluate(self, tape, x):
        _scipy_sparse()          # before sweeping: say how to install it
        if self.indices.size == 0:              # nothing to sweep for
            tape(x)                             # but the point must be on the recorded path
            return _csr_result(np.zeros(0), self)
        fold, f = self._fold(tape, x) if self.rev_pos.size == 0 else (None, None)
        r = None
        if fold is not None and f is None:      # (f set: the fold was made here at x)
            f = fold.sweep(tape, x, self.fwd_src)
        elif fold is None:
            f, r = tape._sparse_sweeps(x, self.col_seeds if self.fwd_pos.size else None,
                                       self.fwd_src, self.row_seeds if self.rev_pos.size else None,
                                       self.rev_src)
        if self.rev_pos.size == 0:
            data = f
        elif self.fwd_pos.size == 0:
            data = r
        else:
            data = np.empty(self.indices.size)
            data[self.fwd_pos] = f
            data[self.rev_pos] = r
        return _csr_result(data, self)


class HessianPlan:
    """The Hessian's pattern and its star coloring, for one tape."""

    def __init__(self, tape, ordering="best"):
        _need_scalar(tape, "sparse_hessian")
        self.indptr, self.indices, self.shape = tape_patterns(tape, hessian=True)[1]
        self.colors = _coloring.star_color(self.indptr, self.indices, self.shape[0], ordering)
        self.n_colors = _n_colors(self.colors)
        self.seeds = _coloring.seed_matrix(self.colors, self.n_colors).T.copy()   # (p, n)
        plan = _coloring.star_recovery_plan(self.indptr, self.indices, self.shape[0],
                                            self.colors)
        # H S [i, c] is lane c of input i's slot in the slot-major buffer
        self.src = np.asarray(plan.src_row, np.int64) * self.n_colors + np.asarray(plan.src_col)

    def dense(self, tape, x):
        """The Hessian at x (None: the recorded point) as a dense (n, n)
        array: the compressed sweep and a scatter, without SciPy."""
        n = self.shape[0]
        H = np.zeros((n, n))
        if self.n_colors == 0:
            if x is not None:
                tape(x)                 # the point must be on the recorded path
            return H
        flat = getattr(self, "_flat", None)
        if flat is None:
            rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.indptr))
            flat = self._flat = rows * n + self.indices
        H.reshape(-1)[flat] = tape._hvp_seeds(x, self.seeds, True, gather=self.src)
        return H

    def values_at(self, tape, x, point=None):
        """The nonzeros (in the pattern's CSR order) at x, or at a TapePoint."""
        if self.n_colors == 0:
            return np.zeros(self.indices.size)
        seeds = self.seeds.reshape((self.n_colors,) + tuple(tape.in_shape or ()))
        return point._hvp_gather(seeds, self.src) if point is not None \
            else tape._hvp(x, seeds, False, None, self.src)

    def evaluate(self, tape, x, point=None):
        _scipy_sparse()          # before sweeping: say how to install it
        return _csr_result(self.values_at(tape, x, point), self)


# ---------------------------------------------------------------- dense Hessians

HESSIAN_METHODS = ("auto", "dense", "colored")

# method="auto" looks for a pattern only where the search (a fixed cost, a
# description per block, a pass over the tape) is at most 1/8 of the dense
# sweep it might replace, by this estimate in ns (measured here: the
# Rosenbrock loop breaks even near n = 100; sum(tanh(W @ x)) at n = 50 costs
# 0.35 ms dense, 0.16 ms to search): dense n * (3 len + 2000 blocks),
# search 20000 + 15000 blocks + 10 len.
HESSIAN_AUTO_MIN_INPUTS = 16


def _worth_searching(tape):
    n, length, blocks = tape.n_inputs, len(tape), len(tape.blocks)
    dense = n * (3.0 * length + 2000.0 * blocks)
    search = 20000.0 + 15000.0 * blocks + 10.0 * length
    return n >= HESSIAN_AUTO_MIN_INPUTS and 8.0 * search <= dense


# The pattern search gives up after collecting n * len(tape) / this many
# interaction entries: a dense Hessian collects about n per nonlinear node,
# and the dense sweep costs about n lanes per node, so the search costs a
# small fraction of the sweep it would not save.
HESSIAN_AUTO_BUDGET_DIVISOR = 16
# ... and takes the colored sweep when it needs at most this fraction of the
# n directions of the dense sweep (benchmarks/bench_hessian.py).
HESSIAN_AUTO_MAX_COLOR_FRACTION = 0.5


def check_hessian_method(method, who="fastad.hessian"):
    if not isinstance(method, str) or method not in HESSIAN_METHODS:
        raise ValueError(f"{who}: method must be one of {HESSIAN_METHODS}, got {method!r}")


def _auto_plan(tape):
    """The HessianPlan method="auto" uses on this tape, or False (dense)."""
    n = tape.n_inputs
    cache = _cache(tape)
    plan = cache.get("hessian_plan")
    if plan is None:
        if not _worth_searching(tape):
            return False
        if "hessian_pattern" not in cache:
            budget = max(n * len(tape) // HESSIAN_AUTO_BUDGET_DIVISOR, 4 * n + 1024)
            found = _propagate(tape, True, budget)
            if found is None:           # too many interactions: dense
                return False
            (jp, ji), (hp, hi) = found
            cache["jacobian_pattern"] = (jp, ji, (tape.n_outputs, n))
            cache["hessian_pattern"] = (hp, hi, (n, n))
        nnz = cache["hessian_pattern"][1].size
        # coloring a nearly dense pattern costs more than the sweep it saves
        if nnz > HESSIAN_AUTO_MAX_COLOR_FRACTION * n * n:
            return False
        plan = cache["hessian_plan"] = HessianPlan(tape)
    return plan if plan.n_colors <= HESSIAN_AUTO_MAX_COLOR_FRACTION * n else False


def tape_hessian_plan(tape, method):
    """Tape.hessian's choice: a HessianPlan for the colored sweep, or None
    for the dense one (also for a non-scalar output: the dense path says
    what is wrong).  The choice is kept on the tape (tape.sparse_cache)."""
    check_hessian_method(method, "fastad.Tape.hessian")
    if method == "dense" or tape.out_slots is None or tape.n_outputs != 1 \
            or tape.out_shape != () or tape.out_tree is not None:
        return None
    cache = _cache(tape)
    if method == "colored":
        if "hessian_plan" not in cache:
            cache["hessian_plan"] = HessianPlan(tape)
        return cache["hessian_plan"]
    if "hessian_auto" not in cache:
        cache["hessian_auto"] = _auto_plan(tape)
    return cache["hessian_auto"] or None


def _descriptions(tape):
    """Each block's sparsity description (Block.sparsity), kept on the tape:
    both the structure key and the pattern search read them."""
    cache = _cache(tape)
    d = cache.get("descriptions")
    if d is None:
        d = cache["descriptions"] = [b.sparsity() for b in tape.blocks if b.stop > b.start]
    return d


def _description_key(d):
    """A block's description as hashable, comparable values (arrays as their
    dtype, shape and bytes)."""
    out = []
    for name in sorted(d):
        v = d[name]
        if isinstance(v, np.ndarray):
            v = (v.dtype.str, v.shape, v.tobytes())
        elif v is not None and not isinstance(v, (int, np.integer)):
            v = repr(v)
        out.append((name, v))
    return tuple(out)


def _operand_key(o):
    if o is None:
        return None
    if o.idx is None:
        return ("const", o.shape)
    if o.start >= 0:                    # a run of consecutive slots
        return ("run", o.start, o.shape)
    return ("slots", o.shape, o.flat.tobytes())


def _block_key(b):
    """What a block's sparsity description is made from: for the common
    element-wise and sum blocks their fields (no description built, which
    costs more than the rest of the key), else the description itself."""
    t = type(b)
    if t is Elementwise:                # (description: op, x and y broadcast)
        return ("elementwise", b.start, b.stop, b.op, tuple(b.shape),
                _operand_key(b.x), _operand_key(b.y))
    if t is Sum:                        # (description: the slots summed per output)
        return ("sum", b.start, b.stop, b.axis, b.keepdims, _operand_key(b.x))
    return _description_key(b.sparsity())


def _structure_key(tape):
    """What a tape's Hessian pattern depends on, as a hashable value: its
    ops and their operands, each block's sparsity description or what it is
    made from (all that the pattern search reads), the inputs and the output."""
    if tape.out_slots is None:
        return None
    blocks = tuple(_block_key(b) for b in tape.blocks if b.stop > b.start) \
        if tape.blocks else ()
    return (tape._structure(), blocks, np.asarray(tape.out_slots, np.int64).tobytes(),
            tape.n_inputs, repr(tape.in_shape))


def _key_bytes(key):
    """About how much memory a key holds (its byte strings)."""
    return _bytes_in(key) + 64 * len(key[1])


def _bytes_in(v):
    # (module level: a recursive closure is a reference cycle per call)
    if type(v) is bytes:
        return len(v)
    if type(v) is tuple:
        return sum(_bytes_in(w) for w in v)
    return 0


# Plans (or False: dense) of recently seen tape structures, shared by every
# fad.hessian(f): a user's fad.hessian(f)(x) makes a new function per call,
# and finding the pattern and coloring it costs several times the colored
# sweep (Rosenbrock loop, n = 100: 0.2 ms against 0.03 ms).  The keys are
# whole structures (compared, not hashed alone), bounded in number and bytes.
_PLANS = {}
PLAN_CACHE_ENTRIES = 16
PLAN_CACHE_BYTES = 64 << 20
_plan_bytes = [0]


_last = [None, None]         # the last key found or kept, and its choice


def forget_plans():
    """Empty the cache of plans by structure (benchmarks time first calls so)."""
    _PLANS.clear()
    _plan_bytes[0] = 0
    _last[:] = None, None


def _cached_plan(key):
    # the same structure as last time (a loop calling fad.hessian(f)(x)):
    # comparing keys is a memcmp, where a dict lookup hashes the whole key
    last_key, last = _last
    if key == last_key:
        return last
    choice = _PLANS.get(key)
    if choice is not None:
        _last[:] = key, choice
    return choice


def _keep_plan(key, choice):
    size = _key_bytes(key)
    if size > PLAN_CACHE_BYTES // 4 or key in _PLANS:
        return
    while _PLANS and (len(_PLANS) >= PLAN_CACHE_ENTRIES
                      or _plan_bytes[0] + size > PLAN_CACHE_BYTES):
        try:                            # the oldest first (dicts keep insertion order)
            old = next(iter(_PLANS))
            del _PLANS[old]
            _plan_bytes[0] -= _key_bytes(old)
        except (StopIteration, KeyError, RuntimeError):    # (another thread got there)
            break
    _PLANS[key] = choice
    _plan_bytes[0] += size
    _last[:] = key, choice


class HessianMemo:
    """fad.hessian(f)'s memory across calls, each of which records f anew:
    once "auto" found f's Hessian dense, later calls sweep densely without
    looking; and a tape identical in structure (_structure_key: the same
    path through f) to the last one, or to one that any fad.hessian met
    recently (_PLANS), reuses its choice instead of finding the pattern and
    coloring it again.  Either affects speed, never values."""

    def __init__(self, method):
        self.method = method
        self.dense = False
        self.key = self.plan = None

    def hessian(self, tape):
        if self.method != "auto" or self.dense:
            return tape._hessian(None, "dense" if self.dense else self.method)
        key = known = None
        if _worth_searching(tape):          # (else "auto" goes dense without looking)
            key = _structure_key(tape)
        if key is not None:
            known = self.plan if key == self.key else _cached_plan(key)
        if known is not None:
            cache = _cache(tape)
            cache["hessian_auto"] = known
            if known is not False:
                cache["hessian_plan"] = known
        H = tape._hessian(None, "auto")
        choice = (tape.sparse_cache or {}).get("hessian_auto")
        if choice is False:
            self.dense = True
        if choice is not None and key is not None:
            if choice is not False:
                self.key, self.plan = key, choice
            if known is None:
                _keep_plan(key, choice)
        return H


def tape_sparse_jacobian(tape, x, mode="auto"):
    _numbers_only("Tape.sparse_jacobian", x)
    cache = _cache(tape)
    key = ("jacobian_plan", mode)
    if key not in cache:
        cache[key] = JacobianPlan(tape, mode)
    return cache[key].evaluate(tape, x)


def tape_sparse_hessian(tape, x, point=None):
    _numbers_only("Tape.sparse_hessian", x)
    cache = _cache(tape)
    if "hessian_plan" not in cache:
        cache["hessian_plan"] = HessianPlan(tape)
    return cache["hessian_plan"].evaluate(tape, x, point)


# tape.sparse_jacobian(x, mode) and tape.sparse_hessian(x)
_tape.provide("sparse_jacobian", tape_sparse_jacobian)
_tape.provide("sparse_hessian", tape_sparse_hessian)
_tape.provide("hessian_plan", tape_hessian_plan)


def sparse_jacobian(f, mode="auto"):
    """f -> function of x giving the Jacobian as a scipy.sparse.csr_matrix of
    shape (out.size, x.size): pattern by propagation, coloring, one
    compressed sweep per direction (forward, reverse or both: mode "auto"
    picks the fewest weighted lanes), and decompression."""
    if mode not in ("auto", "fwd", "rev", "bidirectional"):
        raise ValueError("fastad.sparse_jacobian: mode must be 'auto', 'fwd', 'rev' "
                         f"or 'bidirectional', got {mode!r}")

    def jac_f(x):
        _numbers_only("sparse_jacobian", x)
        return tape_sparse_jacobian(record(f, x), x, mode)
    return jac_f


def sparse_hessian(f):
    """f -> function of x giving the Hessian of scalar f as a
    scipy.sparse.csr_matrix: pattern from the op table's second-derivative
    flags, star coloring, one forward-over-reverse sweep with one direction
    per color, and direct recovery."""
    def hess_f(x):
        _numbers_only("sparse_hessian", x)
        tape = record(f, x)
        key = _structure_key(tape) if tape.n_outputs == 1 else None
        known = _cached_plan(key) if key is not None else None
        if isinstance(known, HessianPlan):     # (False: fad.hessian found it dense)
            _cache(tape)["hessian_plan"] = known
        H = tape_sparse_hessian(tape, x)
        if key is not None and known is None:
            _keep_if_auto_would(key, tape)
        return H
    return hess_f


def _keep_if_auto_would(key, tape):
    """Keep a plan that fad.sparse_hessian made for the next fresh call of
    this structure, where fad.hessian's "auto" would have made the same
    choice (the colored sweep): the cache is shared, and must not turn a
    Hessian that "auto" sweeps densely into a colored one."""
    plan, n = _cache(tape)["hessian_plan"], tape.n_inputs
    if _worth_searching(tape) and plan.indices.size <= HESSIAN_AUTO_MAX_COLOR_FRACTION * n * n \
            and plan.n_colors <= HESSIAN_AUTO_MAX_COLOR_FRACTION * n:
        _keep_plan(key, plan)
