# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# fastad-build: role=api  (see ROLES in setup.py)
"""The Tape: a recorded Wengert list and its documented API.

    tape(x), tape.gradient(x), value_and_gradient, jvp, vjp, jacobian, hvp,
    hessian, sparse_jacobian, sparse_hessian, at; len(tape), n_inputs,
    n_outputs, str(tape), to_dot(); pickling

The layers under it: fastad._recorder (storage and recording), then
fastad._player (Work buffers, replays, sweeps over segments and blocks), on
the kernels of fastad._sweeps.  TapePoint is a tape replayed at one x.
"""
from libc.string cimport memset, memcpy

import numpy as np
cimport numpy as cnp

from fastad._sweeps cimport (FORWARD, REVERSE, SECOND, Sweep, run, run_released,
                             second_partials, sweep_over)
from fastad._kernels import gather_flat
from fastad.errors import BranchChangedError, TapeError
# where these used to be: pickles name fastad._tape.InputSlab (blocks' operands)
from fastad._recorder import Cotangents, InputSlab, slot_range  # noqa: F401
from fastad._memory import release as _release_cache
from fastad._recorder import release_memory as _release_spare
from fastad._player import Player  # noqa: F401
from fastad import _batch as _kinds     # the batch kinds (fastad._batching's loop)
# the op table as Python data, and its maps (fastad._kernels)
from fastad._kernels import FIRST_CMP, OP_FLAGS, OP_NAMES, op_eval, op_second  # noqa: F401

cnp.import_array()

# Tangent/adjoint lanes per multi-direction sweep when computing Jacobians.
cdef Py_ssize_t MAX_CHUNK = 128
cdef Py_ssize_t CHUNK_DOUBLES = 8 * 1024 * 1024


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


# Tape methods whose work is done above the tape: sparse_jacobian and
# sparse_hessian need colorings, the blocks' folds and SciPy (fastad.sparse).
# fastad.sparse provides them when it is imported (the package imports it),
# so this module imports nothing above it.
cdef dict _methods = {}


def provide(name, fn):
    """Make fn(tape, ...) what Tape.<name>(...) does (name: 'sparse_jacobian'
    or 'sparse_hessian', called by fastad.sparse, with 'hessian_plan', the
    colored Hessian's plan; 'batch', the methods with batch=True, by
    fastad._batching; 'traced', the methods on traced values, by fastad._nested)."""
    if name not in ("sparse_jacobian", "sparse_hessian", "hessian_plan", "batch", "traced"):
        raise ValueError(f"fastad: no Tape method {name!r} is provided from outside")
    _methods[name] = fn


# the save format and the checks of everything a tape is rebuilt from
# (fastad._serialize, fastad._validate): above this module, so they hand
# themselves in (provide_io) rather than being imported here
_io = {}


def provide_io(**fns):
    _io.update(fns)


cdef inline bint _traced(object x) except -1:
    """x holds values of the recording in progress (a Tape method called
    inside a transform: fastad._nested retraces the recorded function)."""
    if type(x) is np.ndarray or type(x) is float:
        return False
    fn = _methods.get("traced")
    return fn is not None and fn(None, None, x)


cdef object _provided(str name):
    fn = _methods.get(name)
    if fn is None:
        raise RuntimeError(f"fastad: Tape.{name} comes from a module (fastad.sparse, "
                           f"fastad._batching) that is not loaded; import fastad")
    return fn


cdef class Tape(Player):
    """A recorded Wengert list, replayable at new inputs.

    `fad.record(f, x)` returns one.  Replays recompute values and partials
    from the op table in compiled code (no Python per scalar op; one NumPy
    call per array block); a replay whose recorded comparisons come out
    differently raises BranchChangedError.  `len(tape)` is the number of
    operations (inputs excluded; an array operation counts its elements).

    Batches: every method below that takes x also takes b points at once
    with batch=True, as `jax.vmap` of the method would: X of shape
    (b,) + x.shape (for a pytree x, each leaf with that leading axis), and
    the results with the same leading axis; the directions of jvp/hvp and
    the cotangents of vjp are per point ((b,) + shape, or (b, k) + shape for
    k per point).  A tape of scalar nodes sweeps the batch in compiled code
    on `workers` threads (default: all cores) without the GIL; a tape with
    array blocks loops over the points in this thread.  A point whose
    recorded comparisons come out otherwise raises BranchChangedError naming
    its index; with on_branch_change="mask" the call returns (results, ok),
    ok a boolean array of the points that replayed (the others' rows NaN)."""

    def __call__(self, x, *, batch=False, workers=None, on_branch_change="raise"):
        """f(x), replayed.  batch=True: X (b,) + x.shape -> (b,) + out.shape
        (see the class docstring for workers= and on_branch_change=)."""
        if batch:
            return _provided("batch")(self, "value", x, None, "auto", workers,
                                      on_branch_change)
        _unbatched("__call__", workers, on_branch_change)
        if _traced(x):
            return _methods["traced"](self, "__call__", x)
        cdef Work w = self._acquire()
        try:
            self._replay(w, x)
            out = self._gather(w.val)
        finally:
            self._release(w)
        if self.out_tree is not None:
            return self.out_tree.split(np.reshape(out, (1, -1)), False)
        return out

    def _flat_input(self, x):
        if self.in_tree is not None:
            if self._out is None:
                return Player._flat_input(self, x)      # (its error)
            return self.in_tree.flat(x, "fastad.Tape: x")
        return Player._flat_input(self, x)

    def value_and_gradient(self, x, *, batch=False, workers=None, on_branch_change="raise"):
        """(f(x), gradient) for a scalar output, replayed at x.  batch=True:
        X (b,) + x.shape -> (values (b,), gradients (b,) + x.shape)."""
        if batch:
            return _provided("batch")(self, "value_and_gradient", x, None, "auto", workers,
                                      on_branch_change)
        _unbatched("value_and_gradient", workers, on_branch_change)
        if _traced(x):
            return _methods["traced"](self, "value_and_gradient", x)
        self._need_output("gradient")
        if self._out.ndim != 0:
            raise ValueError(
                f"fastad.Tape.gradient needs a scalar output, but this tape's "
                f"output has shape {self.out_shape}; use tape.jacobian or tape.vjp")
        cdef Py_ssize_t slot = int(self._out[()]), lo = self.n_inputs, top
        cdef Work w = self._acquire()
        cdef cnp.ndarray g = np.empty(lo)
        cdef Sweep s
        cdef double* gp = _dptr(g)
        try:
            self._replay(w, x)
            if not self.blocks:     # w.adj is all zeros at rest, and left so
                s = sweep_over(self.buf.op, w.node, 1, lo, slot + 1)
                s.adj = w.adj
                s.clear = True
                w.adj[slot] += 1.0
                run_released(REVERSE, &s)
                memcpy(gp, w.adj, lo * sizeof(double))
                memset(w.adj, 0, lo * sizeof(double))
            else:
                top = max(self._top(slot + 1), lo)
                cot = self._cotangents(w.adj, top, 1, slot, False)   # w.adj is zero at rest
                try:
                    w.adj[slot] = 1.0
                    self._reverse_run(w.node, view_of(w.val, self.buf.n, w), w.states,
                                      view_of(w.adj, top, w), 1, self._top(slot + 1) - 1, lo, cot)
                    if lo:
                        memcpy(gp, w.adj, lo * sizeof(double))
                finally:
                    self._cotangents(w.adj, top, 1, slot, True)    # back to all zeros
            value = w.val[slot]
        finally:
            self._release(w)
        if self.in_tree is not None:
            return value, self.in_tree.split(g.reshape(1, lo), False)
        return value, (float(g[0]) if self.in_shape is None else g.reshape(self.in_shape))

    def gradient(self, x, *, batch=False, workers=None, on_branch_change="raise"):
        """The gradient of a scalar output, replayed at x.  batch=True:
        X (b,) + x.shape -> (b,) + x.shape."""
        if batch:
            return _provided("batch")(self, "gradient", x, None, "auto", workers,
                                      on_branch_change)
        _unbatched("gradient", workers, on_branch_change)
        if _traced(x):
            return _methods["traced"](self, "gradient", x)
        return self.value_and_gradient(x)[1]

    def jvp(self, x, v, *, batch=False, workers=None, on_branch_change="raise"):
        """J(x) v, with v of x's shape or (k,) + x.shape for k directions.
        batch=True: X (b,) + x.shape, V (b,) + x.shape or (b, k) + x.shape
        -> (b,) + out.shape or (b, k) + out.shape."""
        if batch:
            return _provided("batch")(self, "jvp", x, v, "auto", workers, on_branch_change)
        _unbatched("jvp", workers, on_branch_change)
        if _traced(x) or _traced(v):
            return _methods["traced"](self, "jvp", x, v)
        return self._jvp(x, v)

    def vjp(self, x, ybar, *, batch=False, workers=None, on_branch_change="raise"):
        """ybar J(x), with ybar of the output's shape or (k,) + that shape.
        batch=True: X (b,) + x.shape, Ybar (b,) + out.shape or (b, k) +
        out.shape -> (b,) + x.shape or (b, k) + x.shape."""
        if batch:
            return _provided("batch")(self, "vjp", x, ybar, "auto", workers, on_branch_change)
        _unbatched("vjp", workers, on_branch_change)
        if _traced(x) or _traced(ybar):
            return _methods["traced"](self, "vjp", x, ybar)
        return self._vjp(x, ybar)

    def jacobian(self, x, mode="auto", *, batch=False, workers=None,
                 on_branch_change="raise"):
        """The Jacobian at x, shape out_shape + x.shape; mode 'fwd', 'rev' or 'auto'.
        batch=True: X (b,) + x.shape -> (b,) + out_shape + x.shape."""
        if batch:
            return _provided("batch")(self, "jacobian", x, None, mode, workers,
                                      on_branch_change)
        _unbatched("jacobian", workers, on_branch_change)
        if _traced(x):
            return _methods["traced"](self, "jacobian", x, mode)
        return self._jacobian(x, mode)

    def hvp(self, x, v, *, batch=False, workers=None, on_branch_change="raise"):
        """H(x) v for a scalar output (forward-over-reverse, replayed at x);
        v of x's shape or (k,) + x.shape for k directions at once.
        batch=True: X (b,) + x.shape, V (b,) + x.shape or (b, k) + x.shape."""
        if batch:
            return _provided("batch")(self, "hvp", x, v, "auto", workers, on_branch_change)
        _unbatched("hvp", workers, on_branch_change)
        if _traced(x) or _traced(v):
            return _methods["traced"](self, "hvp", x, v)
        return self._hvp(x, v)

    def hessian(self, x, method="auto"):
        """The Hessian of a scalar output at x, shape x.shape + x.shape (replayed).

        method "dense" sweeps one direction per input (forward-over-reverse,
        in chunks); "colored" finds the Hessian's pattern on the tape, star
        colors it and sweeps one direction per color; "auto" (default) takes
        the colored sweep when the pattern needs at most half as many colors
        as inputs, giving up the search early on a dense Hessian.  The
        pattern, coloring and choice are kept on the tape."""
        if _traced(x):
            return _methods["traced"](self, "hessian", x)
        return self._hessian(x, method)

    def sparse_jacobian(self, x, mode="auto"):
        """The Jacobian at x as a scipy.sparse.csr_matrix (out.size, x.size), by
        coloring and compressed sweeps; the pattern and coloring are found on
        the first call and kept, so later calls only sweep and decompress.
        mode: 'auto', 'fwd', 'rev' or 'bidirectional' (see fastad.sparse)."""
        return _provided("sparse_jacobian")(self, x, mode)

    def sparse_hessian(self, x):
        """The Hessian at x as a scipy.sparse.csr_matrix, by star coloring and
        one forward-over-reverse sweep (pattern and coloring kept)."""
        return _provided("sparse_hessian")(self, x)

    def at(self, x):
        """This tape replayed once at x: a TapePoint for many derivatives there
        (gradient, hvp) without replaying again (what optimizers want)."""
        return TapePoint(self, x)

    def __len__(self):
        return self.buf.n - self.n_inputs

    @property
    def n_outputs(self):
        return 0 if self._out is None else self._out.size

    def __str__(self):
        cdef Py_ssize_t i
        outs = {}
        if self._out is not None:
            for k, s in enumerate(self._out.reshape(-1).tolist()):
                outs.setdefault(s, []).append(k)
        lines = [f"fastad.Tape: {self._counts()}"]
        for i in range(self.buf.n):
            desc = f"  v{i} = {self._describe(i)}"
            note = f"# {self.buf.val[i]!r}"
            if self.buf.op[i] == FAD_INPUT:
                note += f"   <- input x{self._input_label(i)}"
            elif self.buf.op[i] >= FAD_FIRST_CMP:
                note = f"# {self.buf.val[i] != 0.0}   (comparison, checked on replay)"
            if i in outs:
                note += "   -> output" + ("" if self._out.ndim == 0
                                         else " " + ", ".join(f"y[{k}]" for k in outs[i]))
            lines.append(desc.ljust(34) + note)
        return "\n".join(lines)

    def __repr__(self):
        return f"<fastad.Tape: {self._counts()}>"

    def to_dot(self, max_nodes=2000):
        """Graphviz source of the computational graph, edges labelled with partials.

        Array blocks are drawn as one node each, with an edge per operand."""
        cdef Py_ssize_t i
        if self.buf.n > max_nodes:
            raise ValueError(f"fastad: the tape has {self.buf.n} nodes, more than "
                             f"max_nodes={max_nodes}; pass a larger max_nodes to draw it")
        outs = set() if self._out is None else set(self._out.reshape(-1).tolist())
        lines = ["digraph fastad {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for i in range(self.buf.n):
            name, a0, a1, p0, p1, v = self.node(i)
            op = self.buf.op[i]
            if op == FAD_BLOCK:
                blk = self._block_at(i)
                if i == blk.start:
                    lines.append(f'  v{i} [label="v{blk.start}..v{blk.stop - 1} = '
                                 f'{blk.describe()}", shape=box3d];')
                    read = {self._dot_src(s) for o in blk.operands() if o.active
                            for s in o.flat.tolist()}       # an edge from every node it reads
                    lines.extend(f'  v{src} -> v{i};' for src in sorted(read))
                continue
            if op == FAD_INPUT:
                label, shape = f"x{self._input_label(i)}\\n{v:.4g}", "box"
            elif op >= FAD_FIRST_CMP:
                label, shape = f"{self._describe(i)}\\n{v != 0.0}", "diamond"
            else:
                label = f"v{i} = {name}" + (f"({p1:.4g})" if OP_FLAGS[op] & FAD_HAS_C else "")
                label += f"\\n{v:.4g}"
                shape = "doublecircle" if i in outs else "ellipse"
            style = ', style=dashed' if op >= FAD_FIRST_CMP else ''
            lines.append(f'  v{i} [label="{label}", shape={shape}{style}];')
            if op == FAD_INPUT or op == FAD_CONST:
                continue
            if op >= FAD_FIRST_CMP:
                lines.append(f'  v{self._dot_src(a0)} -> v{i} [style=dashed];')
                if a1 >= 0:
                    lines.append(f'  v{self._dot_src(a1)} -> v{i} [style=dashed];')
                continue
            lines.append(f'  v{self._dot_src(a0)} -> v{i} [label="{p0:.4g}"];')
            if a1 >= 0:
                lines.append(f'  v{self._dot_src(a1)} -> v{i} [label="{p1:.4g}"];')
        lines.append("}")
        return "\n".join(lines)

    def __reduce__(self):
        # As the save format's bytes (unpickled through the checks of
        # fad.load_tape, with no NumPy pickles inside); a tape holding what
        # that format cannot store (a primitive's keyword argument of another
        # type, say) pickles as its parts instead.
        try:
            return (_io["load_saved"], (_io["saved_bytes"](self),))
        except TypeError:
            return self._reduce_parts()

    def _reduce_parts(self):
        cdef Py_ssize_t n = self.buf.n
        return (_rebuild, (
            (<char*>self.buf.op)[:n] if n else b"",
            (<char*>self.buf.node)[:n * sizeof(fad_node)] if n else b"",
            (<char*>self.buf.val)[:n * sizeof(double)] if n else b"",
            self.n_inputs, list(self.inputs), self.in_shape, self._out,
            list(self.blocks), self.value_read, self.in_tree, self.out_tree))

    def save(self, path):
        """Write the tape to `path` in a format that loads without running code
        (fad.load_tape): plain arrays and a checked header.  Pickles of tapes,
        like all pickles, are for trusted data only."""
        _io["save_tape"](self, path)

    # ------------------------------------------------------------ implementation
    # Every sweep works at x (replaying there) or, with x=None, at the
    # recorded point with the recorded partials (what fad.jvp/vjp use).

    def _need_output(self, what):
        if self._out is None:
            raise ValueError(f"fastad.Tape.{what}: this Tape has no recorded output; "
                             f"make tapes with fad.record(f, x)")

    def _stacked(self, v, shape, what):
        """v of `shape` or (k,) + shape -> ((k, size) array, stacked?)."""
        self._need_output(what)
        if np.iscomplexobj(v):
            raise TypeError(f"fastad: the {what} must be real numbers, got complex "
                            f"values (fastad differentiates real functions; pass the real "
                            f"and imaginary parts as separate {what}s)")
        v = np.asarray(v, dtype=np.float64)
        shape = () if shape is None else tuple(shape)
        size = int(np.prod(shape, dtype=np.int64))
        if v.shape == shape:
            return v.reshape(1, size), False
        if v.ndim == len(shape) + 1 and v.shape[1:] == shape:
            return v.reshape(v.shape[0], size), True
        raise ValueError(f"fastad: {what} must have shape {shape} or (k,) + {shape} "
                         f"for k stacked {what}s, got {v.shape}")

    def _stacked_in(self, v, what):
        """v in x's structure (or with k stacked) -> ((k, n_inputs), stacked?)."""
        if self.in_tree is not None:
            self._need_output(what)
            return self.in_tree.seeds(v, what)
        return self._stacked(v, self.in_shape, what)

    def _stacked_out(self, v, what):
        if self.out_tree is not None:
            self._need_output(what)
            return self.out_tree.seeds(v, what)
        return self._stacked(v, self._out.shape, what)

    def _shape_in(self, g, stacked):
        """(k, n_inputs) -> x-shaped result(s)."""
        if self.in_tree is not None:
            return self.in_tree.split(g, stacked)
        shape = () if self.in_shape is None else tuple(self.in_shape)
        if stacked:
            return g.reshape((g.shape[0],) + shape)
        g = g[0]
        return float(g[0]) if self.in_shape is None else g.reshape(shape)

    def _shape_out(self, t, stacked):
        if self.out_tree is not None:
            return self.out_tree.split(t, stacked)
        shape = tuple(self._out.shape)
        if stacked:
            return t.reshape((t.shape[0],) + shape)
        t = t[0]
        return float(t[0]) if shape == () else t.reshape(shape)

    def _jvp(self, x, v):
        seeds, stacked = self._stacked_in(v, "tangent")
        if seeds.shape[0] == 0:
            return self._shape_out(np.zeros((0, self.n_outputs)), True)
        return self._shape_out(self._sweep_at(x, seeds, True), stacked)

    def _vjp(self, x, ybar):
        self._need_output("vjp")
        seeds, stacked = self._stacked_out(ybar, "cotangent")
        if seeds.shape[0] == 0:
            return self._shape_in(np.zeros((0, self.n_inputs)), True)
        return self._shape_in(self._sweep_at(x, seeds, False), stacked)

    def _jacobian(self, x, mode):
        J = self._jacobian_matrix(x, mode)
        if self.in_tree is not None or self.out_tree is not None:
            return _pytree().jacobian_tree(J, self)
        in_shape = () if self.in_shape is None else tuple(self.in_shape)
        return J.reshape(tuple(self._out.shape) + in_shape)

    def _jacobian_chunk(self):
        """Lanes per sweep of a Jacobian."""
        return max(1, min(MAX_CHUNK, CHUNK_DOUBLES // max(1, self._out_hi())))

    def _point_flat(self, int kind, x, seeds, mode):
        """One point of a batch, flat (fastad._batching's loop): kind a
        fastad._batch.Kind; seeds (k, n_inputs) or (k, n_outputs)."""
        cdef Work w
        if kind == _kinds.VALUE:
            w = self._acquire()
            try:
                self._replay(w, x)
                return np.ravel(self._gather(w.val))
            finally:
                self._release(w)
        if kind == _kinds.GRAD:
            value, g = self.value_and_gradient(x)
            return value, self._stacked_in(g, "gradient")[0][0]
        if kind in (_kinds.JVP, _kinds.VJP) and seeds.shape[0] == 0:
            return np.zeros((0, self.n_outputs if kind == _kinds.JVP else self.n_inputs))
        if kind == _kinds.JVP or kind == _kinds.VJP:
            return self._sweep_at(x, np.ascontiguousarray(seeds), kind == _kinds.JVP)
        if kind == _kinds.HVP:
            return self._hvp_seeds(x, np.ascontiguousarray(seeds), True, raw=True)
        return self._jacobian_matrix(x, mode)       # JAC_FWD, JAC_REV (mode resolved)

    def _jacobian_matrix(self, x, mode):
        """The Jacobian at x as an (n_outputs, n_inputs) array."""
        if mode == "auto" and not all(getattr(b, "has_tangent", True) for b in self.blocks):
            mode = "rev"    # a primitive without a jvp rule: forward mode is not available
        mode = choose_mode(mode, self.n_inputs, self.n_outputs)
        cdef Work w = None
        cdef const fad_node* nodes = self.buf.node
        cdef Py_ssize_t n_in = self.n_inputs, n_out = self.n_outputs, k0, k1, chunk
        try:
            if x is not None:
                w = self._acquire()
                self._replay(w, x)
                nodes = w.node
                val, states = view_of(w.val, self.buf.n, w), w.states
            else:
                val, states = self.recorded_values(), self._recorded_states()
            J = np.empty((n_out, n_in))
            width = n_in if mode == "fwd" else n_out
            chunk = self._jacobian_chunk()
            for k0 in range(0, width, chunk):
                k1 = min(width, k0 + chunk)
                seeds = np.zeros((k1 - k0, width))
                seeds[np.arange(k1 - k0), np.arange(k0, k1)] = 1.0
                if mode == "fwd":
                    J[:, k0:k1] = self._tangents(nodes, val, states, seeds).T
                else:
                    J[k0:k1, :] = self._adjoints(nodes, val, states, seeds)
        finally:
            if w is not None:
                self._release(w)
        return J

    def _hvp(self, x, v, bint with_grad=False, Work point=None, gather=None):
        """H v (and the value and gradient) at x (None: the recorded point;
        `point`: a Work already replayed there)."""
        if gather is not None:      # (sparse Hessians: flat seeds)
            seeds, stacked = self._stacked(v, self.in_shape, "direction")
        else:
            seeds, stacked = self._stacked_in(v, "direction")
        return self._hvp_seeds(x, seeds, stacked, with_grad, point, gather)

    def _hvp_seeds(self, x, seeds, stacked, bint with_grad=False, Work point=None,
                   gather=None, bint raw=False):
        """_hvp for (k, n_inputs) seeds; raw: H S as a (k, n_inputs) array."""
        self._need_output("hvp")
        if self._out is None or self._out.ndim != 0 or self.out_tree is not None:
            raise ValueError(
                f"fastad: Hessians need a scalar output, but this tape's output has "
                f"shape {self.out_shape}; use tape.jacobian of the gradient instead")
        if seeds.shape[0] == 0:
            return seeds.copy() if raw else self._shape_in(np.zeros((0, self.n_inputs)), True)
        cdef Work w = self._acquire()
        cdef const fad_node* nodes = self.buf.node
        cdef Py_ssize_t k = seeds.shape[0], lo = self.n_inputs, slot = int(self._out[()])
        cdef Py_ssize_t hi = self._top(max(slot + 1, lo)), n = self.buf.n, r
        cdef cnp.ndarray flat
        cdef Sweep s
        try:
            if point is None and x is not None and not self.blocks and k == 1:
                # scalar nodes, one direction: the replay pushes the tangent
                # along (one pass over the tape instead of two)
                # and zeroes the second-order sweep's rows of adj and adt
                flat = self._flat_input(x)
                tan = w.scratch_array(max(n, lo), 1, 0)
                adj = w.scratch_array(max(n, lo), 1, 1)
                adt = w.scratch_array(max(n, lo), 1, 2)
                tan[:lo] = seeds.T
                adj[:lo] = 0.0
                adt[:lo] = 0.0
                if lo:
                    memcpy(w.val, _dptr(flat), lo * sizeof(double))
                s = sweep_over(self.buf.op, self.buf.node, 1, lo, n)
                s.recorded = self.buf.val
                s.val = w.val
                s.out = w.node
                s.tan = _dptr(tan)
                s.adj = _dptr(adj)
                s.adt = _dptr(adt)
                r = run_released(FORWARD, &s)
                if r >= 0:
                    raise BranchChangedError(self._branch_message(r))
                nodes = w.node
                val, states = view_of(w.val, n, w), None
            else:
                tan = w.scratch_array(hi, k, 0)     # every node and block writes its rows
                tan[:lo] = seeds.T
                if point is None and x is not None:     # one pass per block where it can
                    val = self._replay_tangent(w, x, tan, k, hi)
                    nodes = w.node
                    states = w.states
                else:
                    if point is not None:
                        nodes = point.node
                        val, states = view_of(point.val, self.buf.n, point), point.states
                    else:
                        val, states = self.recorded_values(), self._recorded_states()
                    self._tangent_run(nodes, val, states, tan, k, lo, hi)
                if gather is None and self.blocks:     # (blocks' rows left undefined)
                    adj = w.scratch_array(hi, 1, 1)
                    adt = w.scratch_array(hi, k, 2)
                    self._second_lazy(point if point is not None else
                                      (w if x is not None else None),
                                      val, states, tan, adj, adt, k, hi - 1, lo, slot)
                else:
                    adj = w.zeros(hi, 1, 1)
                    adt = w.zeros(hi, k, 2)
            if gather is not None or not self.blocks:
                adj[slot, 0] = 1.0
                self._second_run(nodes, val, states, tan, adj, adt, k, hi - 1, lo)
            if gather is not None:          # H S at these flat positions (sparse Hessians)
                if not with_grad:
                    return gather_flat(adt, gather)
                return (float(val[slot]), self._shape_in(adj[:lo].T.copy(), False),
                        gather_flat(adt, gather))
            if raw:
                return adt[:lo].T.copy()
            Hv = self._shape_in(adt[:lo].T.copy(), stacked)
            if not with_grad:
                return Hv
            return float(val[slot]), self._shape_in(adj[:lo].T.copy(), False), Hv
        finally:
            self._release(w)

    def value_gradient_hvp(self, x, v):
        """(f(x), gradient, H(x) v) from one replay."""
        return self._hvp(x, v, True)

    def _hessian(self, x, method="auto"):
        self._need_output("hessian")
        cdef Py_ssize_t n = self.n_inputs, k0, k1
        plan = None
        if method != "dense":       # (fastad.sparse checks the method)
            plan = _provided("hessian_plan")(self, method)
        shape = () if self.in_shape is None else tuple(self.in_shape)
        if plan is not None:
            H = plan.dense(self, x)
        else:
            chunk = max(1, min(MAX_CHUNK, CHUNK_DOUBLES // max(1, 2 * self.buf.n)))
            H = np.empty((n, n))
            for k0 in range(0, n, chunk):
                k1 = min(n, k0 + chunk)
                seeds = np.zeros((k1 - k0, n))
                seeds[np.arange(k1 - k0), np.arange(k0, k1)] = 1.0
                H[k0:k1] = self._hvp_seeds(x, seeds, True, raw=True)
        if self.in_tree is not None:
            return _pytree().hessian_tree(H, self)
        return H.reshape(shape + shape)

    def _counts(self):
        return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in (
            (self.n_inputs, "input"), (len(self), "operation"), (self.n_outputs, "output")))

    def _input_label(self, Py_ssize_t i):
        if self.in_shape is None and len(self.inputs) <= 1:
            return ""
        for j, (argnum, shape, first) in enumerate(self.inputs):
            size = 1 if shape is None else int(np.prod(shape, dtype=np.int64))
            if first <= i < first + size:
                if self.in_tree is not None:        # the leaf's path: x['W'][0]...
                    prefix = self.in_tree._where(j).replace("(the root)", "")
                else:
                    prefix = f"(arg {argnum})" if len(self.inputs) > 1 else ""
                if shape is None:
                    return prefix
                return prefix + "[" + ", ".join(str(int(j)) for j in np.unravel_index(i - first, shape)) + "]"
        return ""

    def _dot_src(self, Py_ssize_t s):
        """The graph node standing for slot s (a block is drawn at its first slot)."""
        if self.buf.op[s] == FAD_BLOCK:
            return self._block_at(s).start
        return s


def _rebuild(op, node, val, n_inputs, inputs, in_shape, out_slots, blocks=None,
             value_read=None, in_tree=None, out_tree=None):
    """Unpickle (or load) a Tape: every part is checked first (fastad._validate),
    so damaged data raises instead of reaching the sweeps."""
    if value_read is not None and not isinstance(value_read, str):
        raise _io["CorruptTape"]("fastad: corrupt or invalid Tape data: value_read must be a string")
    opa, nodea, vala, n_inputs, inputs, in_shape, out_slots, blocks = _io["check_parts"](
        op, node, val, n_inputs, inputs, in_shape, out_slots, blocks)
    _io["check_trees"](in_tree, out_tree, n_inputs, out_slots)
    cdef Tape t = Tape()
    cdef Py_ssize_t n = opa.shape[0]
    opa = np.ascontiguousarray(opa)
    nodea = np.ascontiguousarray(nodea)
    vala = np.ascontiguousarray(vala)
    t.reserve(n)
    if n:
        memcpy(t.buf.op, cnp.PyArray_DATA(opa), n)
        memcpy(t.buf.node, cnp.PyArray_DATA(nodea), n * sizeof(fad_node))
        memcpy(t.buf.val, cnp.PyArray_DATA(vala), n * sizeof(double))
    t.buf.n = n
    t.n_inputs = n_inputs
    t.inputs = inputs
    t.in_shape = in_shape
    t._out = out_slots
    t.blocks = blocks
    t.value_read = value_read
    t.in_tree = in_tree
    t.out_tree = out_tree
    return t


def release_memory():
    """Return the memory fastad keeps for reuse to the system: the spare tape
    buffers of the next recording, the pooled replay buffers (fastad keeps
    them only while they fit the tapes in use) and the freed blocks of NumPy
    arrays made under the transforms (up to 128 MB).  A tape's memory itself
    goes with the tape, and with every Var or Array still referring to it."""
    from fastad._player import release_work
    _release_spare()
    release_work(False)
    _release_cache()           # last: the pooled buffers' arrays come back to it
    release_work(True)


# Relative cost of one forward lane to one reverse lane per node, measured by
# benchmarks/bench_modes.py (calibrate): a reverse lane costs ~1.3 forward lanes; "auto" picks the cheaper mode.
FWD_LANE_COST = 1.0
REV_LANE_COST = 1.3


def choose_mode(mode, Py_ssize_t n_in, Py_ssize_t n_out):
    if mode == "auto":
        return "fwd" if n_in * FWD_LANE_COST <= n_out * REV_LANE_COST else "rev"
    if mode not in ("fwd", "rev"):
        raise ValueError(f"fastad: mode must be 'fwd', 'rev' or 'auto', got {mode!r}")
    return mode


def _unbatched(method, workers, on_branch_change):
    """workers= and on_branch_change= without batch=True: an error, not ignored."""
    if workers is not None or on_branch_change != "raise":
        raise ValueError(f"fastad.Tape.{method}: workers= and on_branch_change= apply to "
                         f"a batch of points; pass batch=True with X of shape (b,) + x.shape")


def _pytree():
    """fastad._pytree (imported on first use: it is plain Python above nothing)."""
    import fastad._pytree as m
    return m


cdef class TapePoint:
    """A tape replayed at one x (see Tape.at): its value, gradient and
    Hessian-vector products there, each without another replay.  On a tape
    of scalar nodes the adjoints and second partials are kept after the
    first product, so each further one is a tangent sweep plus one cheap
    reverse sweep (what CG in an optimizer does many times)."""
    cdef readonly Tape tape
    cdef readonly object x
    cdef Work w
    cdef object G, S          # all slots' adjoints, and 3 second partials per node

    def __init__(self, Tape tape, x):
        self.tape = tape
        self.w = tape._acquire()      # pooled: an optimizer's points reuse mapped memory
        tape._replay(self.w, x)
        self.x = x if tape.in_tree is not None else np.array(x, dtype=np.float64)

    def __dealloc__(self):
        if self.w is not None and self.tape is not None:
            self.tape._release(self.w)

    @property
    def value(self):
        out = self.tape._gather(self.w.val)
        if self.tape.out_tree is not None:
            return self.tape.out_tree.split(np.reshape(out, (1, -1)), False)
        return out

    def gradient(self):
        t = self.tape
        if t.out_slots.ndim != 0:
            raise ValueError("fastad: a gradient needs a scalar output; use jacobian")
        if t.blocks:
            g = t._adjoints(self.w.node, view_of(self.w.val, t.buf.n, self.w), self.w.states, np.ones((1, 1)))
            return t._shape_in(g, False)
        self._adjoints_all()
        return t._shape_in(self.G[:t.n_inputs].reshape(1, -1).copy(), False)

    cdef _adjoints_all(self):
        """Every slot's adjoint for the scalar output (kept)."""
        if self.G is not None:
            return
        cdef Tape t = self.tape
        cdef Py_ssize_t slot = int(t.out_slots[()]), lo = t.n_inputs
        cdef cnp.ndarray G = self.w.zeros(max(slot + 1, lo), 1, 2).reshape(-1)
        cdef Sweep s = sweep_over(t.buf.op, self.w.node, 1, lo, slot + 1)
        s.adj = _dptr(G)
        s.adj[slot] = 1.0
        with nogil:
            run(REVERSE, &s)
        self.G = G

    def _hvp_gather(self, seeds, gather):
        """H S at this point (seeds (k,) + x.shape) at flat positions of the
        slot-major buffer: a sparse Hessian's sweep and decompression."""
        return self._hvp_at(seeds, gather)

    def _gradient_hvp_gather(self, seeds, gather):
        """(gradient, _hvp_gather(seeds, gather)) from one second-order sweep
        that carries the adjoints along: an optimizer wants both at each
        accepted point, and a separate gradient is another pass over the tape."""
        t = self.tape
        if t.out_slots is None or t.out_slots.ndim != 0:
            raise ValueError("fastad: a gradient needs a scalar output; use jacobian")
        flat, _ = t._stacked(seeds, t.in_shape, "direction")
        if flat.shape[0] == 0:
            return self.gradient(), np.zeros(0)
        _, g, data = t._hvp_seeds(None, flat, True, True, self.w, gather)
        return g, data

    def vjp(self, ybar):
        """ybar J at this point; ybar of the output's shape or (k,) + that shape."""
        t = self.tape
        seeds, stacked = t._stacked_out(ybar, "cotangent")
        return t._shape_in(t._adjoints(self.w.node, view_of(self.w.val, t.buf.n, self.w), self.w.states,
                                       seeds), stacked)

    def jvp(self, v):
        """J v at this point; v of x's shape or (k,) + x.shape."""
        t = self.tape
        seeds, stacked = t._stacked_in(v, "tangent")
        return t._shape_out(t._tangents(self.w.node, view_of(self.w.val, t.buf.n, self.w), self.w.states,
                                        seeds), stacked)

    def hvp(self, v):
        """H v at this point; v of x's shape or (k,) + x.shape."""
        return self._hvp_at(v, None)

    cdef object _hvp_at(self, v, gather):
        cdef Tape t = self.tape
        if t.blocks or t.out_slots is None or t.out_slots.ndim != 0:
            return t._hvp(None, v, False, self.w, gather)
        if gather is not None:
            seeds, stacked = t._stacked(v, t.in_shape, "direction")
        else:
            seeds, stacked = t._stacked_in(v, "direction")
        cdef Py_ssize_t k = seeds.shape[0], lo = t.n_inputs, slot = int(t.out_slots[()])
        cdef Py_ssize_t hi = max(slot + 1, lo), j
        if k == 0:
            return t._hvp(None, v, False, self.w, gather)
        self._adjoints_all()
        cdef double* sp = NULL
        if self.S is None and k == 1:      # CG asks for many products here: keep S
            self.S = np.empty(3 * hi)
            sp = _dptr(self.S)
            with nogil:
                second_partials(t.buf.op, self.w.node, self.w.val, sp, lo, hi)
        cdef cnp.ndarray tan = self.w.scratch_array(hi, k, 0), adt = self.w.zeros(hi, k, 1)
        tan[:lo] = seeds.T
        cdef Sweep s = sweep_over(t.buf.op, self.w.node, k, lo, hi)
        cdef double* vp = self.w.val
        s.tan = _dptr(tan)
        s.adj = _dptr(self.G)
        s.adj_known = True
        s.adt = _dptr(adt)
        if self.S is not None:
            s.second = _dptr(self.S)
        with nogil:
            run(FORWARD, &s)        # (no val: tangents only, from the replayed partials)
            s.val = vp
            run(SECOND, &s)
        if gather is not None:
            return gather_flat(adt, gather)
        return t._shape_in(adt[:lo].T.copy(), stacked)
