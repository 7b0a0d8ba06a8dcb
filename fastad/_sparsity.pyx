# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sparsity detection on a recorded tape, by index-set propagation.

Every slot gets the set of inputs it depends on (its "index domain"),
propagated forward through the op table's flags: an op whose first partials
vanish (FAD_ZD: sign, comparisons, constants) passes nothing on.  The rows of
the Jacobian pattern are the outputs' sets.  For the Hessian, each input j
also collects its "nonlinear interaction domain" N_j (Walther, 2008): a node
nonlinear in x (not FAD_Z00) joins every pair of X(x); a nonzero mixed
partial (not FAD_Z01) joins X(x) with X(y); then H_jl can only be nonzero
where l is in N_j.  Both are structural (from flags, not from the values at
the recorded point), so a replay elsewhere on the same path never has a
nonzero outside the pattern.

Blocks describe themselves (fastad._blocks.Block.sparsity): element-wise
blocks as one scalar op per element; others as dependency lists over the
tape's slots and "virtual" sets (for example, the row sets of a matmul
operand), plus pairs of sets whose elements interact nonlinearly.

Sets live in one growing int32 pool.  A node whose operand dies there (its
last use) takes the operand's storage over instead of copying it, and sets
may hold duplicates until they have doubled since the last clean-up, so a
long accumulation (s = s + t_i) costs O(n), not O(n^2).
"""
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np

from fastad._tape cimport (Tape, fad_node, fad_op_flags, FAD_BLOCK, FAD_INPUT,
                           FAD_BINARY, FAD_ZD, FAD_Z00, FAD_Z01, FAD_Z11)

cdef int64_t NEVER = (<int64_t>1) << 62


cdef struct Sets:
    int32_t* pool
    int64_t used, cap
    int64_t* off        # per set: where its elements start in the pool
    int32_t* size       # elements (duplicates allowed)
    int32_t* room       # capacity at off
    int32_t* clean      # size after the last de-duplication
    int64_t n


cdef int sets_init(Sets* s, int64_t n, int64_t pool_cap) except -1:
    s.n = n
    s.used = 0
    s.cap = max(pool_cap, 1024)
    s.pool = <int32_t*>malloc(s.cap * sizeof(int32_t))
    s.off = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
    s.size = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    s.room = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    s.clean = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    if s.pool == NULL or s.off == NULL or s.size == NULL or s.room == NULL or s.clean == NULL:
        raise MemoryError()
    cdef int64_t i
    for i in range(n):
        s.off[i] = 0
        s.size[i] = 0
        s.room[i] = 0
        s.clean[i] = 0
    return 0


cdef void sets_free(Sets* s) noexcept:
    free(s.pool)
    free(s.off)
    free(s.size)
    free(s.room)
    free(s.clean)


cdef int reserve(Sets* s, int64_t i, int64_t need) except -1:
    """Room in set i for `need` more elements (moves it to the pool's end)."""
    cdef int64_t want = s.size[i] + need
    if want <= s.room[i]:
        return 0
    if want > 2147483647:
        raise MemoryError("fastad: an index set outgrew 2**31 entries")
    cdef int64_t room = max(2 * want, 4)
    room = min(room, 2147483647)
    if s.used + room > s.cap:
        while s.used + room > s.cap:
            s.cap *= 2
        s.pool = <int32_t*>realloc(s.pool, s.cap * sizeof(int32_t))
        if s.pool == NULL:
            raise MemoryError()
    if s.size[i]:
        memcpy(s.pool + s.used, s.pool + s.off[i], s.size[i] * sizeof(int32_t))
    s.off[i] = s.used
    s.room[i] = <int32_t>room
    s.used += room
    return 0


cdef int append(Sets* dst, int64_t i, Sets* src, int64_t j) except -1:
    """dst[i] += src[j] (duplicates allowed)."""
    cdef int32_t m = src.size[j]
    if m == 0:
        return 0
    reserve(dst, i, m)
    # reserve may move dst's pool; src may be the same structure
    memcpy(dst.pool + dst.off[i] + dst.size[i], src.pool + src.off[j], m * sizeof(int32_t))
    dst.size[i] += m
    return 0


cdef void dedupe(Sets* s, int64_t i, int32_t* stamp, int32_t* tick) noexcept:
    cdef int32_t* p = s.pool + s.off[i]
    cdef int32_t k, m = 0, e
    tick[0] += 1
    cdef int32_t t = tick[0]
    for k in range(s.size[i]):
        e = p[k]
        if stamp[e] != t:
            stamp[e] = t
            p[m] = e
            m += 1
    s.size[i] = m
    s.clean[i] = m


cdef inline void tidy(Sets* s, int64_t i, int32_t* stamp, int32_t* tick) noexcept:
    if s.size[i] > 2 * max(s.clean[i], 8):
        dedupe(s, i, stamp, tick)


cdef struct Ctx:
    Sets X               # per slot (and virtual set): the inputs it depends on
    Sets N               # per input: its nonlinear interaction domain
    int64_t* last        # per slot: the last node that reads it (NEVER: keep)
    int32_t* stamp
    int32_t tick
    bint hessian
    int64_t budget       # interaction entries allowed (< 0: no limit)


cdef int take_or_copy(Ctx* c, int64_t i, int64_t a, int64_t now) except -1:
    """X[i] = X[a]: taken over if a dies at node `now`, else copied."""
    cdef Sets* X = &c.X
    if c.last[a] == now and a != i:
        X.off[i], X.size[i], X.room[i], X.clean[i] = X.off[a], X.size[a], X.room[a], X.clean[a]
        X.size[a] = 0
        X.room[a] = 0
        X.clean[a] = 0
        return 0
    X.size[i] = 0
    X.room[i] = 0
    X.clean[i] = 0
    append(X, i, X, a)
    return 0


cdef int interact(Ctx* c, int64_t a, int64_t b) except -1:
    """Every input in X[a] interacts with every input in X[b] (and back)."""
    cdef Sets* X = &c.X
    cdef int64_t k, j
    cdef int32_t m = X.size[a]
    for k in range(m):
        j = X.pool[X.off[a] + k]
        append_from_x(c, j, b)
    if a != b:
        for k in range(X.size[b]):
            j = X.pool[X.off[b] + k]
            append_from_x(c, j, a)
    return 0


cdef int append_from_x(Ctx* c, int64_t j, int64_t a) except -1:
    """N[j] += X[a]."""
    cdef int32_t m = c.X.size[a]
    if m == 0:
        return 0
    if c.budget >= 0:
        c.budget -= m
        if c.budget < 0:
            raise OverBudget()
    reserve(&c.N, j, m)
    memcpy(c.N.pool + c.N.off[j] + c.N.size[j], c.X.pool + c.X.off[a], m * sizeof(int32_t))
    c.N.size[j] += m
    tidy(&c.N, j, c.stamp, &c.tick)
    return 0


cdef int scalar_node(Ctx* c, int64_t i, int op, int64_t a0, int64_t a1) except -1:
    """Slot i = op(a0, a1) (a1 < 0: no second tape operand)."""
    cdef int fl = fad_op_flags[op]
    cdef Sets* X = &c.X
    if fl & FAD_ZD or a0 < 0:
        X.size[i] = 0
        X.room[i] = 0
        X.clean[i] = 0
        return 0
    if c.hessian:
        if not (fl & FAD_Z00):
            interact(c, a0, a0)
        if a1 >= 0:
            if not (fl & FAD_Z01):
                interact(c, a0, a1)
            if not (fl & FAD_Z11):
                interact(c, a1, a1)
    if a1 >= 0 and a1 != a0 and c.last[a1] == i and c.last[a0] != i:
        a0, a1 = a1, a0       # take over the dying operand's storage
    take_or_copy(c, i, a0, i)
    if a1 >= 0 and a1 != a0:
        append(X, i, X, a1)
        if c.last[a1] == i:
            X.size[a1] = 0
    tidy(X, i, c.stamp, &c.tick)
    return 0


cdef int union_list(Ctx* c, int64_t i, const int64_t* deps, int64_t m) except -1:
    """X[i] = union of X[deps]."""
    cdef Sets* X = &c.X
    cdef int64_t k
    X.size[i] = 0
    X.room[i] = 0
    X.clean[i] = 0
    for k in range(m):
        if deps[k] >= 0:
            append(X, i, X, deps[k])
            tidy(X, i, c.stamp, &c.tick)
    return 0


cdef object to_csr(Sets* s, const int64_t* rows, int64_t m, int32_t* stamp, int32_t* tick):
    """Rows `rows` of s as CSR (indptr int64, indices int32), sorted, no duplicates."""
    cdef int64_t r, total = 0
    for r in range(m):
        if rows[r] >= 0:
            dedupe(s, rows[r], stamp, tick)
            total += s.size[rows[r]]
    indptr = np.zeros(m + 1, dtype=np.int64)
    indices = np.empty(total, dtype=np.int32)
    cdef int64_t[::1] ip = indptr
    cdef int32_t[::1] ix = indices
    cdef int64_t pos = 0, k
    for r in range(m):
        if rows[r] >= 0:
            for k in range(s.size[rows[r]]):
                ix[pos + k] = s.pool[s.off[rows[r]] + k]
            if s.size[rows[r]] > 1:
                qsort(&ix[pos], s.size[rows[r]], sizeof(int32_t), _cmp_int32)
            pos += s.size[rows[r]]
        ip[r + 1] = pos
    return indptr, indices


cdef int _cmp_int32(const void* a, const void* b) noexcept nogil:
    cdef int32_t x = (<const int32_t*>a)[0], y = (<const int32_t*>b)[0]
    return (x > y) - (x < y)


class OverBudget(Exception):
    """propagate's interaction budget ran out (a dense Hessian, most likely)."""


def propagate(Tape tape, out_slots, list blocks, bint hessian=False, budget=None):
    """Index sets over `tape`: the Jacobian pattern of out_slots (CSR), and
    with `hessian` also the Hessian pattern (n_inputs x n_inputs CSR).

    `blocks` holds each block's description (Block.sparsity()), in tape order:
    a dict with "start", "stop", "n_virtual" and either "op", "a0", "a1"
    (one op per element; -1 for a constant operand) or "virt_ptr"/"virt_idx"
    (virtual sets as lists of slots; index >= 0 is a slot, -2 - v is virtual
    set v), "out_ptr"/"out_idx" (each output's list), and "pairs"
    (an (m, 2) array of sets that interact nonlinearly).

    budget: the most interaction entries to collect (before de-duplication);
    past it propagate returns None.  A dense Hessian collects about n entries
    per nonlinear node, so a caller choosing between a dense and a colored
    Hessian can stop early at a small fraction of the dense sweep's cost."""
    cdef Py_ssize_t n = tape.buf.n, n_in = tape.n_inputs
    cdef int64_t nvirt = 0, i, k, a0, a1, b, s0, s1, vbase
    for d in blocks:
        nvirt += d["n_virtual"]
    cdef Ctx c
    c.hessian = hessian
    c.budget = -1 if budget is None else max(<int64_t>budget, 0)
    c.tick = 0
    c.last = NULL
    c.stamp = NULL
    sets_init(&c.X, n + nvirt, 2 * n + 1024)
    sets_init(&c.N, n_in if hessian else 0, 4 * n_in + 1024 if hessian else 16)
    cdef const uint8_t* op = tape.buf.op
    cdef const fad_node* nd = tape.buf.node
    cdef const int64_t[::1] dv
    cdef int32_t[::1] pv
    try:
        c.last = <int64_t*>malloc(max(n + nvirt, 1) * sizeof(int64_t))
        c.stamp = <int32_t*>malloc(max(n_in, 1) * sizeof(int32_t))
        if c.last == NULL or c.stamp == NULL:
            raise MemoryError()
        for i in range(n_in):
            c.stamp[i] = 0
        # last readers: scalar nodes by their index; anything a block reads,
        # the outputs and virtual sets are kept (never taken over)
        for i in range(n + nvirt):
            c.last[i] = -1
        for i in range(n_in, n):
            if op[i] == FAD_BLOCK:
                continue
            if nd[i].a0 >= 0 and nd[i].a0 != i:
                c.last[nd[i].a0] = i
            if fad_op_flags[op[i]] & FAD_BINARY and nd[i].a1 >= 0:
                c.last[nd[i].a1] = i
        for d in blocks:
            for key in ("a0", "a1", "virt_idx", "out_idx", "pairs"):
                arr = d.get(key)
                if arr is not None and len(arr):
                    dv = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
                    if key in ("a0", "a1"):
                        # element e of an element-wise block reads a0[e], a1[e]
                        # at node start + e: its set can be taken over there
                        s0 = d["start"]
                        for k in range(dv.shape[0]):
                            if dv[k] >= 0 and c.last[dv[k]] < s0 + k:
                                c.last[dv[k]] = s0 + k
                        continue
                    for k in range(dv.shape[0]):
                        if dv[k] >= 0:
                            c.last[dv[k]] = NEVER
        outs = np.ascontiguousarray(np.asarray(out_slots, dtype=np.int64).reshape(-1))
        dv = outs
        for k in range(dv.shape[0]):
            c.last[dv[k]] = NEVER
        for i in range(n, n + nvirt):
            c.last[i] = NEVER

        for i in range(n_in):
            reserve(&c.X, i, 1)
            c.X.pool[c.X.off[i]] = <int32_t>i
            c.X.size[i] = 1
            c.X.clean[i] = 1
        bi = 0
        vbase = n
        i = n_in
        while i < n:
            if op[i] != FAD_BLOCK:
                a1 = nd[i].a1 if fad_op_flags[op[i]] & FAD_BINARY else -1
                a0 = nd[i].a0 if nd[i].a0 != i else -1       # a CONST points at itself
                scalar_node(&c, i, op[i], a0, a1)
                i += 1
                continue
            d = blocks[bi]
            bi += 1
            s0, s1 = d["start"], d["stop"]
            if s0 != i:
                raise RuntimeError(f"fastad: sparsity: block at {s0}, expected {i}")
            _block(&c, d, s0, s1, vbase)
            vbase += d["n_virtual"]
            i = s1 if s1 > i else i + 1

        dv = outs
        jac = to_csr(&c.X, &dv[0] if dv.shape[0] else NULL, dv.shape[0], c.stamp, &c.tick)
        if not hessian:
            return jac, None
        rows = np.arange(n_in, dtype=np.int64)
        dv = rows
        hes = to_csr(&c.N, &dv[0] if n_in else NULL, n_in, c.stamp, &c.tick)
        return jac, hes
    except OverBudget:
        return None
    finally:
        sets_free(&c.X)
        sets_free(&c.N)
        free(c.last)
        free(c.stamp)


cdef int _block(Ctx* c, dict d, int64_t s0, int64_t s1, int64_t vbase) except -1:
    cdef const int64_t[::1] A0, A1, P, I
    cdef int64_t e, k, m, a, b
    cdef int opc
    cdef const int64_t[:, ::1] pairs
    if "op" in d:
        opc = d["op"]
        A0 = np.ascontiguousarray(d["a0"], dtype=np.int64)
        A1 = np.ascontiguousarray(d["a1"], dtype=np.int64) if d.get("a1") is not None \
            else np.full(s1 - s0, -1, dtype=np.int64)
        for e in range(s1 - s0):
            a, b = A0[e], A1[e]
            if a < 0 and b >= 0:
                a, b = b, -1
                # a constant first operand: the op's flags for y apply to x here
                _elem_swapped(c, s0 + e, opc, a)
                continue
            scalar_node(c, s0 + e, opc, a, b)
        return 0
    if d["n_virtual"]:
        P = np.ascontiguousarray(d["virt_ptr"], dtype=np.int64)
        I = _resolve(d["virt_idx"], vbase)
        for e in range(d["n_virtual"]):
            union_list(c, vbase + e, &I[P[e]] if P[e + 1] > P[e] else NULL, P[e + 1] - P[e])
    P = np.ascontiguousarray(d["out_ptr"], dtype=np.int64)
    I = _resolve(d["out_idx"], vbase)
    for e in range(s1 - s0):
        union_list(c, s0 + e, &I[P[e]] if P[e + 1] > P[e] else NULL, P[e + 1] - P[e])
    if c.hessian and d.get("pairs") is not None and len(d["pairs"]):
        pairs = _resolve(d["pairs"], vbase).reshape(-1, 2).copy()
        for k in range(pairs.shape[0]):
            if pairs[k, 0] >= 0 and pairs[k, 1] >= 0:
                interact(c, pairs[k, 0], pairs[k, 1])
    return 0


cdef int _elem_swapped(Ctx* c, int64_t i, int opc, int64_t y) except -1:
    """Slot i = op(const, y): first-order like a unary op; nonlinear in y
    unless the op's d2/dy2 vanishes."""
    cdef int fl = fad_op_flags[opc]
    if fl & FAD_ZD:
        c.X.size[i] = 0
        return 0
    if c.hessian and not (fl & FAD_Z11):
        interact(c, y, y)
    c.X.size[i] = 0
    c.X.room[i] = 0
    c.X.clean[i] = 0
    append(&c.X, i, &c.X, y)
    return 0


cdef object _resolve(arr, int64_t vbase):
    """Slot numbers as they are, virtual set v (stored as -2 - v) as vbase + v."""
    a = np.array(arr, dtype=np.int64).reshape(-1)
    virt = a <= -2
    a[virt] = vbase + (-2 - a[virt])
    return a
