# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The tape: contiguous typed storage of the Wengert list and its sweeps.

Node i writes slot i.  Inputs come first (op INPUT), then one node per
elementary operation, in recording order.  Per node: an op code (1 byte),
a fad_node {p0, p1, a0, a1} (24 bytes) and a value (8 bytes).
"""
from libc.stdlib cimport free
from libc.string cimport memset
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

OP_NAMES = tuple(fad_op_name[i].decode() for i in range(FAD_NUM_OPS))
OP_FLAGS = tuple(fad_op_flags[i] for i in range(FAD_NUM_OPS))
# Long sweeps release the GIL; tiny ones are not worth the switch.
cdef Py_ssize_t NOGIL_MIN = 20000


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


cdef class Tape:
    """A recorded Wengert list.

    Built by the transforms while `f` runs; `len(tape)` is the number of
    operations (input nodes excluded)."""

    def __cinit__(self):
        memset(&self.buf, 0, sizeof(TapeBuf))
        self.inputs = []
        self.n_inputs = 0
        self.output = None

    def __dealloc__(self):
        free(self.buf.op)
        free(self.buf.node)
        free(self.buf.val)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        if self.buf.n + extra > self.buf.cap:
            tape_grow(&self.buf, self.buf.n + extra)
        return 0

    def add_inputs(self, double[::1] values not None):
        """Append one INPUT node per value; returns the first slot."""
        cdef Py_ssize_t k, m = values.shape[0], first = self.buf.n
        self.reserve(m)
        for k in range(m):
            tape_push(&self.buf, FAD_INPUT, -1, -1, 0.0, 0.0, values[k])
        self.n_inputs += m
        return first

    def __len__(self):
        return self.buf.n - self.n_inputs

    @property
    def n_nodes(self):
        """Number of slots, inputs included."""
        return self.buf.n

    @property
    def nbytes(self):
        """Bytes of tape storage in use (op codes, nodes, values)."""
        return self.buf.n * (sizeof(uint8_t) + sizeof(fad_node) + sizeof(double))

    def values(self):
        """A copy of every slot's value."""
        cdef cnp.ndarray out = np.empty(self.buf.n, dtype=np.float64)
        cdef double* o = <double*>cnp.PyArray_DATA(out)
        cdef Py_ssize_t i
        for i in range(self.buf.n):
            o[i] = self.buf.val[i]
        return out

    def reverse(self, Py_ssize_t out_slot, double seed=1.0):
        """Adjoints of all slots for one output slot seeded with `seed`."""
        if not 0 <= out_slot < self.buf.n:
            raise IndexError(f"output slot {out_slot} is not on the tape "
                             f"({self.buf.n} slots)")
        cdef cnp.ndarray adj_arr = np.zeros(self.buf.n, dtype=np.float64)
        cdef double* adj = <double*>cnp.PyArray_DATA(adj_arr)
        adj[out_slot] = seed
        cdef Py_ssize_t lo = self.n_inputs
        if out_slot - lo >= NOGIL_MIN:
            with nogil:
                reverse_scalar(self.buf.node, adj, out_slot, lo)
        else:
            reverse_scalar(self.buf.node, adj, out_slot, lo)
        return adj_arr

    def input_adjoints(self, Py_ssize_t out_slot, double seed=1.0):
        """Adjoints of the input slots only (a fresh array of n_inputs)."""
        return self.reverse(out_slot, seed)[:self.n_inputs].copy()

    def node(self, Py_ssize_t i):
        """(op name, a0, a1, p0, p1, value) of slot i, for inspection."""
        if not 0 <= i < self.buf.n:
            raise IndexError(f"slot {i} is not on the tape ({self.buf.n} slots)")
        cdef fad_node nd = self.buf.node[i]
        return (OP_NAMES[self.buf.op[i]], nd.a0, nd.a1, nd.p0, nd.p1,
                self.buf.val[i])

    def __str__(self):
        cdef Py_ssize_t i
        lines = [f"fastad.Tape: {self.n_inputs} inputs, {len(self)} operations"]
        for i in range(self.buf.n):
            name, a0, a1, p0, p1, v = self.node(i)
            fl = OP_FLAGS[self.buf.op[i]]
            if self.buf.op[i] == FAD_INPUT:
                lines.append(f"  v{i} = input".ljust(34) + f"# {v!r}")
                continue
            if fl & FAD_BINARY:
                args = f"v{a0}, v{a1}"
            elif fl & FAD_CONST:
                args = f"v{a0}, {p1!r}"
            else:
                args = f"v{a0}"
            lines.append(f"  v{i} = {name}({args})".ljust(34) + f"# {v!r}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"<fastad.Tape: {self.n_inputs} inputs, {len(self)} operations>")
