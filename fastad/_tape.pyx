# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The tape: contiguous typed storage of the Wengert list and its sweeps.

Node i writes slot i.  Inputs come first (op INPUT), then one node per
elementary operation, in recording order.  Per node: an op code (1 byte),
a fad_node {p0, p1, a0, a1} (24 bytes) and a value (8 bytes).
"""
from libc.stdlib cimport free, malloc
from libc.math cimport isfinite
from libc.string cimport memset, memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np
cimport numpy as cnp

from fastad.errors import BranchChangedError

cnp.import_array()

OP_NAMES = tuple(fad_op_name[i].decode() for i in range(FAD_NUM_OPS))
OP_FLAGS = tuple(fad_op_flags[i] for i in range(FAD_NUM_OPS))
FIRST_CMP = FAD_FIRST_CMP
# Long sweeps release the GIL; tiny ones are not worth the switch.
cdef Py_ssize_t NOGIL_MIN = 20000
# Tangent/adjoint lanes per multi-direction sweep when computing Jacobians.
cdef Py_ssize_t MAX_CHUNK = 128
cdef Py_ssize_t CHUNK_DOUBLES = 8 * 1024 * 1024


# ---------------------------------------------------------------- sweeps
# Each is a short loop over the node arrays; the per-op math comes from
# fad_eval (csrc/fastad_ops.h) at recording or replay time.

cdef void reverse_scalar(const fad_node* nd, double* adj,
                         Py_ssize_t hi, Py_ssize_t lo) noexcept nogil:
    """adj[a] += p * adj[i] for i = hi .. lo (inclusive), backwards.

    A zero adjoint is skipped, so an unselected branch contributes an exact
    zero even where its own partial is inf or NaN (strong zeros)."""
    cdef Py_ssize_t i
    cdef double g
    cdef int32_t a1
    for i in range(hi, lo - 1, -1):
        g = adj[i]
        if g != 0.0:
            adj[nd[i].a0] += nd[i].p0 * g
            a1 = nd[i].a1
            if a1 >= 0:
                adj[a1] += nd[i].p1 * g


cdef void _gradient_sweep(const fad_node* nd, double* adj, Py_ssize_t slot,
                          Py_ssize_t lo) noexcept nogil:
    """Adjoints of slots 0..slot for the output at `slot` seeded with 1."""
    memset(adj, 0, ((slot if slot > lo - 1 else lo - 1) + 1) * sizeof(double))
    adj[slot] = 1.0
    reverse_scalar(nd, adj, slot, lo)


cdef inline void _axpy(double* y, double a, const double* x, Py_ssize_t k) noexcept nogil:
    """y += a x over k lanes; zero lanes of x stay exact zeros when a is inf/NaN."""
    cdef Py_ssize_t j
    if isfinite(a):
        for j in range(k):
            y[j] += a * x[j]
    else:
        for j in range(k):
            if x[j] != 0.0:
                y[j] += a * x[j]


cdef void reverse_multi(const fad_node* nd, double* adj, Py_ssize_t k,
                        Py_ssize_t hi, Py_ssize_t lo) noexcept nogil:
    """k seeds at once: adjoints stored slot-major, adj[i*k + j]."""
    cdef Py_ssize_t i, j
    cdef double* g
    cdef int32_t a1
    for i in range(hi, lo - 1, -1):
        g = adj + i * k
        for j in range(k):
            if g[j] != 0.0:
                break
        else:
            continue
        _axpy(adj + nd[i].a0 * k, nd[i].p0, g, k)
        a1 = nd[i].a1
        if a1 >= 0:
            _axpy(adj + a1 * k, nd[i].p1, g, k)


cdef void forward_tangent(const fad_node* nd, double* tan, Py_ssize_t k,
                          Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """k directions at once: tan[i] = p0 tan[a0] + p1 tan[a1], slot-major."""
    cdef Py_ssize_t i, j
    cdef double* ti
    cdef int32_t a1
    for i in range(lo, hi):
        ti = tan + i * k
        for j in range(k):
            ti[j] = 0.0
        _axpy(ti, nd[i].p0, tan + nd[i].a0 * k, k)
        a1 = nd[i].a1
        if a1 >= 0:
            _axpy(ti, nd[i].p1, tan + a1 * k, k)


cdef Py_ssize_t forward_values(const uint8_t* op, const fad_node* nd,
                               const double* recorded, double* val,
                               fad_node* out, Py_ssize_t lo,
                               Py_ssize_t hi) noexcept nogil:
    """Replay: values and partials of slots lo..hi-1 from the op table.

    Returns -1, or the first comparison slot whose outcome differs from the
    recorded one (the new input takes another branch)."""
    cdef Py_ssize_t i
    cdef int o
    cdef int32_t a0, a1
    cdef double v, d0, d1
    for i in range(lo, hi):
        o = op[i]
        a0 = nd[i].a0
        a1 = nd[i].a1
        v = fad_eval(o, val[a0], val[a1] if a1 >= 0 else 0.0, nd[i].p1, &d0, &d1)
        if o >= FAD_FIRST_CMP and v != recorded[i]:
            return i
        val[i] = v
        out[i].p0 = d0
        out[i].p1 = d1
        out[i].a0 = a0
        out[i].a1 = a1
    return -1


# ---------------------------------------------------------------- work buffers

cdef class Work:
    """Per-call buffers of a replay, so threads can replay one tape at once."""

    def __dealloc__(self):
        free(self.val)
        free(self.node)
        free(self.adj)

    cdef int ensure(self, Py_ssize_t n) except -1:
        if n <= self.cap:
            return 0
        free(self.val)
        free(self.node)
        free(self.adj)
        self.val = <double*>malloc(n * sizeof(double))
        self.node = <fad_node*>malloc(n * sizeof(fad_node))
        self.adj = <double*>malloc(n * sizeof(double))
        if self.val == NULL or self.node == NULL or self.adj == NULL:
            self.cap = 0
            raise MemoryError()
        self.cap = n
        return 0


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


def _rebuild(bytes op, bytes node, bytes val, Py_ssize_t n_inputs, list inputs,
             in_shape, out_slots):
    """Unpickle a Tape."""
    cdef Tape t = Tape()
    cdef Py_ssize_t n = len(op)
    if len(node) != n * sizeof(fad_node) or len(val) != n * sizeof(double):
        raise ValueError("fastad: corrupt pickled Tape (sizes disagree)")
    t.reserve(n)
    if n:
        memcpy(t.buf.op, <const char*>op, n)
        memcpy(t.buf.node, <const char*>node, n * sizeof(fad_node))
        memcpy(t.buf.val, <const char*>val, n * sizeof(double))
    t.buf.n = n
    t.n_inputs = n_inputs
    t.inputs = inputs
    t.in_shape = in_shape
    t.out_slots = out_slots
    return t


cdef class Tape:
    """A recorded Wengert list, replayable at new inputs.

    `fad.record(f, x)` returns one.  Replays recompute values and partials
    from the op table in compiled code (no Python per op); a replay whose
    recorded comparisons come out differently raises BranchChangedError.
    `len(tape)` is the number of operations (inputs excluded)."""

    def __cinit__(self):
        memset(&self.buf, 0, sizeof(TapeBuf))
        self.inputs = []
        self.n_inputs = 0
        self.in_shape = None
        self.out_slots = None
        self.f = None
        self._pool = []

    def __dealloc__(self):
        free(self.buf.op)
        free(self.buf.node)
        free(self.buf.val)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        if self.buf.n + extra > self.buf.cap:
            tape_grow(&self.buf, self.buf.n + extra)
        return 0

    def add_inputs(self, const double[::1] values not None):
        """Append one INPUT node per value; returns the first slot."""
        cdef Py_ssize_t k, m = values.shape[0], first = self.buf.n
        self.reserve(m)
        for k in range(m):
            tape_push(&self.buf, FAD_INPUT, -1, -1, 0.0, 0.0, values[k])
        self.n_inputs += m
        return first

    def push_const(self, double c):
        """Append a constant node (for constant outputs); returns its slot."""
        cdef Py_ssize_t i = self.buf.n
        return tape_push(&self.buf, FAD_CONST, <int32_t>i, -1, 0.0, c, c)

    # ------------------------------------------------------------ facts

    def __len__(self):
        return self.buf.n - self.n_inputs

    @property
    def n_outputs(self):
        return 0 if self.out_slots is None else self.out_slots.size

    @property
    def out_shape(self):
        return None if self.out_slots is None else self.out_slots.shape

    @property
    def n_nodes(self):
        """Number of slots, inputs included."""
        return self.buf.n

    @property
    def nbytes(self):
        """Bytes of tape storage in use (op codes, nodes, values)."""
        return self.buf.n * (sizeof(uint8_t) + sizeof(fad_node) + sizeof(double))

    def values(self):
        """A copy of every slot's recorded value."""
        cdef cnp.ndarray out = np.empty(self.buf.n, dtype=np.float64)
        if self.buf.n:
            memcpy(_dptr(out), self.buf.val, self.buf.n * sizeof(double))
        return out

    def node(self, Py_ssize_t i):
        """(op name, a0, a1, p0, p1, value) of slot i, as recorded."""
        if not 0 <= i < self.buf.n:
            raise IndexError(f"slot {i} is not on the tape ({self.buf.n} slots)")
        cdef fad_node nd = self.buf.node[i]
        return (OP_NAMES[self.buf.op[i]], nd.a0, nd.a1, nd.p0, nd.p1,
                self.buf.val[i])

    # ------------------------------------------------------------ internals

    cdef Work _acquire(self):
        cdef Work w = self._pool.pop() if self._pool else Work()
        w.ensure(self.buf.n if self.buf.n else 1)
        return w

    cdef void _release(self, Work w):
        if len(self._pool) < 8:
            self._pool.append(w)

    cdef Py_ssize_t _out_hi(self):
        """One past the highest slot a sweep must cover (at least n_inputs)."""
        cdef Py_ssize_t hi = self.n_inputs
        if self.out_slots is not None and self.out_slots.size:
            hi = max(hi, int(self.out_slots.max()) + 1)
        return hi

    def _flat_input(self, x):
        if self.out_slots is None:
            raise ValueError("fastad: this Tape has no recorded output; make "
                             "tapes with fad.record(f, x)")
        if self.in_shape is None:
            if np.ndim(x) != 0:
                raise ValueError(f"fastad.Tape: x must be a scalar (the tape was "
                                 f"recorded at a float), got shape {np.shape(x)}")
            return np.array([x], dtype=np.float64).reshape(1)
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"fastad.Tape: x must be real numbers, got dtype {arr.dtype}")
        if arr.shape != self.in_shape:
            raise ValueError(f"fastad.Tape: x has shape {arr.shape} but the tape "
                             f"was recorded at shape {self.in_shape}")
        return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)

    cdef int _replay(self, Work w, object x) except -1:
        cdef cnp.ndarray flat = self._flat_input(x)
        cdef Py_ssize_t r, n = self.buf.n, lo = self.n_inputs
        if lo:
            memcpy(w.val, _dptr(flat), lo * sizeof(double))
        if n - lo >= NOGIL_MIN:
            with nogil:
                r = forward_values(self.buf.op, self.buf.node, self.buf.val,
                                   w.val, w.node, lo, n)
        else:
            r = forward_values(self.buf.op, self.buf.node, self.buf.val,
                               w.val, w.node, lo, n)
        if r >= 0:
            raise BranchChangedError(self._branch_message(r))
        return 0

    def _branch_message(self, Py_ssize_t r):
        was = self.buf.val[r] != 0.0
        return (f"fastad: the comparison recorded at slot {r} "
                f"({self._describe(r)}) was {was} when the tape was recorded "
                f"but is {not was} at the new input: the function takes "
                f"another branch there, so this tape does not describe it. "
                f"Record a new tape at this input with fad.record(f, x).")

    def _describe(self, Py_ssize_t i):
        name, a0, a1, p0, p1, v = self.node(i)
        fl = OP_FLAGS[self.buf.op[i]]
        if self.buf.op[i] == FAD_INPUT:
            return "input"
        if self.buf.op[i] == FAD_CONST:
            return f"const({p1!r})"
        if fl & FAD_BINARY:
            return f"{name}(v{a0}, v{a1})"
        if fl & FAD_HAS_C:
            return f"{name}(v{a0}, {p1!r})"
        return f"{name}(v{a0})"

    cdef object _gather(self, const double* val):
        flat = self.out_slots.reshape(-1)
        cdef cnp.ndarray out = np.empty(flat.shape[0])
        cdef Py_ssize_t k
        for k in range(flat.shape[0]):
            _dptr(out)[k] = val[<Py_ssize_t>flat[k]]
        if self.out_slots.ndim == 0:
            return float(out[0])
        return out.reshape(self.out_slots.shape)

    cdef object _tangents(self, const fad_node* nodes, object seeds):
        """(k, n_inputs) directions -> (k, n_outputs) output tangents."""
        cdef cnp.ndarray sd = np.ascontiguousarray(seeds, dtype=np.float64)
        cdef Py_ssize_t k = sd.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef cnp.ndarray tan = np.zeros((hi, k))
        tan[:lo] = sd.T
        cdef double* tp = _dptr(tan)
        if (hi - lo) * k >= NOGIL_MIN:
            with nogil:
                forward_tangent(nodes, tp, k, lo, hi)
        else:
            forward_tangent(nodes, tp, k, lo, hi)
        return tan[self.out_slots.reshape(-1)].T

    cdef object _adjoints(self, const fad_node* nodes, object seeds):
        """(k, n_outputs) cotangents -> (k, n_inputs) input adjoints."""
        cdef cnp.ndarray sd = np.ascontiguousarray(seeds, dtype=np.float64)
        cdef Py_ssize_t k = sd.shape[0], lo = self.n_inputs, hi = self._out_hi()
        cdef cnp.ndarray adj = np.zeros((hi, k))
        cdef double* ap = _dptr(adj)
        cdef double* sp = _dptr(sd)
        cdef cnp.ndarray slots = np.ascontiguousarray(self.out_slots.reshape(-1), dtype=np.intp)
        cdef Py_ssize_t* so = <Py_ssize_t*>cnp.PyArray_DATA(slots)
        cdef Py_ssize_t o, j, m = slots.shape[0]
        for o in range(m):      # seeds[:, o] onto the output's slot (repeats add up)
            for j in range(k):
                ap[so[o] * k + j] += sp[j * m + o]
        if (hi - lo) * k >= NOGIL_MIN:
            with nogil:
                if k == 1:
                    reverse_scalar(nodes, ap, hi - 1, lo)
                else:
                    reverse_multi(nodes, ap, k, hi - 1, lo)
        elif k == 1:
            reverse_scalar(nodes, ap, hi - 1, lo)
        else:
            reverse_multi(nodes, ap, k, hi - 1, lo)
        return adj[:lo].T.copy()

    def _in_size(self):
        return self.n_inputs

    def _stacked(self, v, shape, what):
        """v of `shape` or (k,) + shape -> ((k, size) array, stacked?)."""
        v = np.asarray(v, dtype=np.float64)
        shape = () if shape is None else tuple(shape)
        size = int(np.prod(shape, dtype=np.int64))
        if v.shape == shape:
            return v.reshape(1, size), False
        if v.ndim == len(shape) + 1 and v.shape[1:] == shape:
            return v.reshape(v.shape[0], size), True
        raise ValueError(f"fastad: {what} must have shape {shape} or (k,) + {shape} "
                         f"for k stacked {what}s, got {v.shape}")

    def _shape_in(self, g, stacked):
        """(k, n_inputs) -> x-shaped result(s)."""
        shape = () if self.in_shape is None else tuple(self.in_shape)
        if stacked:
            return g.reshape((g.shape[0],) + shape)
        g = g[0]
        return float(g[0]) if self.in_shape is None else g.reshape(shape)

    def _shape_out(self, t, stacked):
        shape = tuple(self.out_slots.shape)
        if stacked:
            return t.reshape((t.shape[0],) + shape)
        t = t[0]
        return float(t[0]) if shape == () else t.reshape(shape)

    # Every public sweep works at x (replaying there) or, with x=None, at the
    # recorded point with the recorded partials (what fad.jvp/vjp use).

    def _jvp(self, x, v):
        seeds, stacked = self._stacked(v, self.in_shape, "tangent")
        cdef Work w
        if x is None:
            return self._shape_out(self._tangents(self.buf.node, seeds), stacked)
        w = self._acquire()
        try:
            self._replay(w, x)
            return self._shape_out(self._tangents(w.node, seeds), stacked)
        finally:
            self._release(w)

    def _vjp(self, x, ybar):
        seeds, stacked = self._stacked(ybar, self.out_slots.shape, "cotangent")
        cdef Work w
        if x is None:
            return self._shape_in(self._adjoints(self.buf.node, seeds), stacked)
        w = self._acquire()
        try:
            self._replay(w, x)
            return self._shape_in(self._adjoints(w.node, seeds), stacked)
        finally:
            self._release(w)

    def _jacobian(self, x, mode):
        mode = choose_mode(mode, self.n_inputs, self.n_outputs)
        cdef Work w = None
        cdef const fad_node* nodes = self.buf.node
        cdef Py_ssize_t n_in = self.n_inputs, n_out = self.n_outputs, k0, k1, chunk
        try:
            if x is not None:
                w = self._acquire()
                self._replay(w, x)
                nodes = w.node
            J = np.empty((n_out, n_in))
            width = n_in if mode == "fwd" else n_out
            chunk = max(1, min(MAX_CHUNK, CHUNK_DOUBLES // max(1, self._out_hi())))
            for k0 in range(0, width, chunk):
                k1 = min(width, k0 + chunk)
                seeds = np.zeros((k1 - k0, width))
                seeds[np.arange(k1 - k0), np.arange(k0, k1)] = 1.0
                if mode == "fwd":
                    J[:, k0:k1] = self._tangents(nodes, seeds).T
                else:
                    J[k0:k1, :] = self._adjoints(nodes, seeds)
        finally:
            if w is not None:
                self._release(w)
        in_shape = () if self.in_shape is None else tuple(self.in_shape)
        return J.reshape(tuple(self.out_slots.shape) + in_shape)

    # ------------------------------------------------------------ public replay

    def __call__(self, x):
        """f(x), replayed."""
        cdef Work w = self._acquire()
        try:
            self._replay(w, x)
            return self._gather(w.val)
        finally:
            self._release(w)

    def value_and_gradient(self, x):
        """(f(x), gradient) for a scalar output, replayed at x."""
        if self.out_slots is None or self.out_slots.ndim != 0:
            raise ValueError(
                f"fastad.Tape.gradient needs a scalar output, but this tape's "
                f"output has shape {self.out_shape}; use tape.jacobian or tape.vjp")
        cdef Py_ssize_t slot = int(self.out_slots[()]), lo = self.n_inputs
        cdef Work w = self._acquire()
        cdef cnp.ndarray g
        try:
            self._replay(w, x)
            if slot - lo >= NOGIL_MIN:
                with nogil:
                    _gradient_sweep(w.node, w.adj, slot, lo)
            else:
                _gradient_sweep(w.node, w.adj, slot, lo)
            g = np.empty(lo)
            if lo:
                memcpy(_dptr(g), w.adj, lo * sizeof(double))
            value = w.val[slot]
        finally:
            self._release(w)
        return value, (float(g[0]) if self.in_shape is None else g.reshape(self.in_shape))

    def gradient(self, x):
        """The gradient of a scalar output, replayed at x."""
        return self.value_and_gradient(x)[1]

    def jvp(self, x, v):
        """J(x) v, with v of x's shape or (k,) + x.shape for k directions."""
        return self._jvp(x, v)

    def vjp(self, x, ybar):
        """ybar J(x), with ybar of the output's shape or (k,) + that shape."""
        return self._vjp(x, ybar)

    def jacobian(self, x, mode="auto"):
        """The Jacobian at x, shape out_shape + x.shape; mode 'fwd', 'rev' or 'auto'."""
        return self._jacobian(x, mode)

    # ------------------------------------------------------------ seeing it

    def __str__(self):
        cdef Py_ssize_t i
        outs = {}
        if self.out_slots is not None:
            for k, s in enumerate(self.out_slots.reshape(-1).tolist()):
                outs.setdefault(s, []).append(k)
        lines = [f"fastad.Tape: {self.n_inputs} inputs, {len(self)} operations, "
                 f"{self.n_outputs} outputs"]
        for i in range(self.buf.n):
            desc = f"  v{i} = {self._describe(i)}"
            note = f"# {self.buf.val[i]!r}"
            if self.buf.op[i] == FAD_INPUT:
                note += f"   <- input x{self._input_label(i)}"
            elif self.buf.op[i] >= FAD_FIRST_CMP:
                note = f"# {self.buf.val[i] != 0.0}   (comparison, checked on replay)"
            if i in outs:
                note += "   -> output" + ("" if self.out_slots.ndim == 0
                                         else " " + ", ".join(f"y[{k}]" for k in outs[i]))
            lines.append(desc.ljust(34) + note)
        return "\n".join(lines)

    def _input_label(self, Py_ssize_t i):
        if self.in_shape is None and len(self.inputs) <= 1:
            return ""
        for argnum, shape, first in self.inputs:
            size = 1 if shape is None else int(np.prod(shape, dtype=np.int64))
            if first <= i < first + size:
                prefix = f"(arg {argnum})" if len(self.inputs) > 1 else ""
                if shape is None:
                    return prefix
                return prefix + "[" + ", ".join(str(int(j)) for j in np.unravel_index(i - first, shape)) + "]"
        return ""

    def __repr__(self):
        return (f"<fastad.Tape: {self.n_inputs} inputs, {len(self)} operations, "
                f"{self.n_outputs} outputs>")

    def to_dot(self, max_nodes=2000):
        """Graphviz source of the computational graph, edges labelled with partials."""
        cdef Py_ssize_t i
        if self.buf.n > max_nodes:
            raise ValueError(f"fastad: the tape has {self.buf.n} nodes, more than "
                             f"max_nodes={max_nodes}; pass a larger max_nodes to draw it")
        outs = set() if self.out_slots is None else set(self.out_slots.reshape(-1).tolist())
        lines = ["digraph fastad {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for i in range(self.buf.n):
            name, a0, a1, p0, p1, v = self.node(i)
            op = self.buf.op[i]
            if op == FAD_INPUT:
                label, shape = f"x{self._input_label(i)}\\n{v:.4g}", "box"
            elif op >= FAD_FIRST_CMP:
                label, shape = f"{self._describe(i)}\\n{v != 0.0}", "diamond"
            else:
                label = f"v{i} = {name}" + (f"({p1:.4g})" if OP_FLAGS[op] & FAD_HAS_C and op != FAD_CONST
                                            else f"({p1:.4g})" if op == FAD_CONST else "")
                label += f"\\n{v:.4g}"
                shape = "doublecircle" if i in outs else "ellipse"
            style = ', style=dashed' if op >= FAD_FIRST_CMP else ''
            lines.append(f'  v{i} [label="{label}", shape={shape}{style}];')
            if op == FAD_INPUT or op == FAD_CONST:
                continue
            if op >= FAD_FIRST_CMP:
                lines.append(f'  v{a0} -> v{i} [style=dashed];')
                if a1 >= 0:
                    lines.append(f'  v{a1} -> v{i} [style=dashed];')
                continue
            lines.append(f'  v{a0} -> v{i} [label="{p0:.4g}"];')
            if a1 >= 0:
                lines.append(f'  v{a1} -> v{i} [label="{p1:.4g}"];')
        lines.append("}")
        return "\n".join(lines)

    def __reduce__(self):
        cdef Py_ssize_t n = self.buf.n
        return (_rebuild, (
            (<char*>self.buf.op)[:n] if n else b"",
            (<char*>self.buf.node)[:n * sizeof(fad_node)] if n else b"",
            (<char*>self.buf.val)[:n * sizeof(double)] if n else b"",
            self.n_inputs, list(self.inputs), self.in_shape, self.out_slots))

    def reverse(self, Py_ssize_t out_slot, double seed=1.0):
        """Adjoints of all slots at the recorded point, for one output slot."""
        if not 0 <= out_slot < self.buf.n:
            raise IndexError(f"output slot {out_slot} is not on the tape "
                             f"({self.buf.n} slots)")
        cdef cnp.ndarray adj_arr = np.zeros(self.buf.n, dtype=np.float64)
        cdef double* adj = _dptr(adj_arr)
        adj[out_slot] = seed
        cdef Py_ssize_t lo = self.n_inputs
        if out_slot - lo >= NOGIL_MIN:
            with nogil:
                reverse_scalar(self.buf.node, adj, out_slot, lo)
        else:
            reverse_scalar(self.buf.node, adj, out_slot, lo)
        return adj_arr


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


def op_eval(int op, double x, double y=0.0, double c=0.0):
    """(value, d/dx, d/dy or c) of one op-table entry (for tests and tools)."""
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"no op {op}")
    cdef double d0, d1
    cdef double v = fad_eval(op, x, y, c, &d0, &d1)
    return v, d0, d1


def op_second(int op, double x, double y=0.0, double c=0.0):
    """(d2/dx2, d2/dxdy, d2/dy2) of one op-table entry (for tests and tools)."""
    if not 0 <= op < FAD_NUM_OPS:
        raise ValueError(f"no op {op}")
    cdef double d0, d1, xx, xy, yy
    cdef double v = fad_eval(op, x, y, c, &d0, &d1)
    fad_second(op, x, y, c, v, &xx, &xy, &yy)
    return xx, xy, yy
