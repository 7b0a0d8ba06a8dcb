# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# fastad-build: role=graph
"""Graph coloring for sparse Jacobians and Hessians, with direct recovery.

Vocabulary of ColPack and of Gebremedhin, Manne, Pothen, "What color is your
Jacobian?  Graph coloring for computing derivatives", SIAM Review 47 (2005):

* column coloring: a distance-2 coloring of the column vertices of the
  bipartite graph of J (columns j, l conflict when a row has nonzeros in
  both).  One forward sweep with the seed S (n x p, S[j, color[j]] = 1)
  gives B = J S and every nonzero is read back as J[i, j] = B[i, color[j]].
* row coloring: the same on J^T; C = W^T J with W[i, row_color[i]] = 1.
* star coloring of a symmetric pattern (Hessians): greedy Algorithm 4.1 of
  Gebremedhin, Tarafdar, Manne, Pothen, "New acyclic and star coloring
  algorithms with application to computing Hessians", SIAM J. Sci. Comput.
  29 (2007), the version that maintains the collection of two-colored stars
  (O(sum of squared degrees)), not the simpler restricted star coloring.
* bicolor: a bidirectional partition (some rows reversed, the rest of the
  entries forward) with direct recovery, Coleman-Verma style thresholds.

Patterns are CSR: ``indptr`` (m+1), ``indices`` (sorted in each row, no
duplicates), ``shape = (m, n)``.  Any integer dtype is accepted; inputs are
checked at the Python edge (ValueError naming the problem), then the loops
below run without checks on int64 copies.  Colors are int32, 0..p-1.

Coloring works on a generic "vertex / net" bipartite structure: vertex v
belongs to the nets vnets[vptr[v]:vptr[v+1]], net i holds the vertices
nverts[nptr[i]:nptr[i+1]]; two vertices conflict when they share a net.
Columns of J: vertices = columns (CSC), nets = rows (CSR).  Rows of J: the
transpose.  The distance-1 graph of a symmetric pattern (orderings for star
coloring) is the same structure with vertex v in the single net v.
"""
import operator

import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t

ctypedef int64_t idx_t

ORDERINGS = ("natural", "largest_first", "smallest_last", "incidence_degree")
cdef dict _ORDER_CODE = {"natural": 0, "largest_first": 1,
                         "smallest_last": 2, "incidence_degree": 3, "best": 4}
cdef idx_t NO_LIMIT = 1 << 62
# bicolor: at most this many row-nnz thresholds are tried.
cdef Py_ssize_t MAX_THRESHOLDS = 20

__all__ = ["color_columns", "color_rows", "column_ordering", "star_color", "bicolor",
           "recover_columns", "recover_rows", "recover_star",
           "star_recovery_plan", "StarRecoveryPlan",
           "recover_bidirectional", "seed_matrix", "check_coloring",
           "ORDERINGS"]


# ================================================================ input checks

def _index_array(a, name):
    """1-D contiguous int64 copy (or view) of an integer array."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got {arr.ndim}-D")
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind in "fiub":
            return np.zeros(0, dtype=np.int64)
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size \
            and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _nonneg_int(x, name):
    try:
        v = operator.index(x)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {x!r}") from None
    if v < 0:
        raise ValueError(f"{name} must be non-negative, got {v}")
    return v


def _parse_shape(shape):
    try:
        m, n = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (m, n), got {shape!r}") from None
    return _nonneg_int(m, "shape[0]"), _nonneg_int(n, "shape[1]")


def _parse_square(n):
    """star functions take n or (n, n)."""
    if isinstance(n, tuple) or isinstance(n, list):
        m, k = _parse_shape(n)
        if m != k:
            raise ValueError(f"a symmetric pattern must be square, got shape {tuple(n)}")
        return m
    return _nonneg_int(n, "n")


cdef int _check_csr_c(const idx_t[::1] ip, const idx_t[::1] ix, idx_t m, idx_t n,
                      idx_t* info) noexcept nogil:
    cdef idx_t i, a, j, prev
    if ip[0] != 0:
        info[0] = ip[0]
        return 1
    for i in range(m):
        if ip[i + 1] < ip[i]:
            info[0] = i
            return 2
    if ip[m] != ix.shape[0]:
        return 3
    for i in range(m):
        prev = -1
        for a in range(ip[i], ip[i + 1]):
            j = ix[a]
            info[0] = i
            info[1] = a
            info[2] = j
            info[3] = prev
            if j < 0 or j >= n:
                return 4
            if j == prev:
                return 5
            if j < prev:
                return 6
            prev = j
    return 0


def _check_csr(indptr, indices, idx_t m, idx_t n):
    """Validated int64 (indptr, indices) for an m x n CSR pattern."""
    ip = _index_array(indptr, "indptr")
    ix = _index_array(indices, "indices")
    if ip.shape[0] != m + 1:
        raise ValueError(f"indptr has length {ip.shape[0]}, expected m + 1 = {m + 1} "
                         f"for shape ({m}, {n})")
    cdef idx_t info[4]
    info[0] = info[1] = info[2] = info[3] = 0
    cdef int code = _check_csr_c(ip, ix, m, n, info)
    if code == 1:
        raise ValueError(f"indptr[0] must be 0, got {info[0]}")
    if code == 2:
        raise ValueError(f"indptr must be non-decreasing: indptr[{info[0] + 1}] = "
                         f"{ip[info[0] + 1]} < indptr[{info[0]}] = {ip[info[0]]}")
    if code == 3:
        raise ValueError(f"indptr[-1] = {ip[m]} does not match len(indices) = {ix.shape[0]}")
    if code == 4:
        raise ValueError(f"column index out of range: indices[{info[1]}] = {info[2]} "
                         f"in row {info[0]}, expected 0 <= index < n = {n}")
    if code == 5:
        raise ValueError(f"duplicate column index {info[2]} in row {info[0]} "
                         f"(indices[{info[1]}])")
    if code == 6:
        raise ValueError(f"indices are not sorted in row {info[0]}: indices[{info[1]}] = "
                         f"{info[2]} follows {info[3]}")
    return ip, ix


def _color_array(colors, idx_t n, name):
    c = _index_array(colors, name)
    if c.shape[0] != n:
        raise ValueError(f"{name} has length {c.shape[0]}, expected {n}")
    return c


def _compact(c):
    """Colors renumbered 0..k-1 (order kept, negatives stay -1), so that work
    arrays indexed by color stay O(len(c)) whatever the color values."""
    if c.shape[0] == 0 or int(c.max()) < c.shape[0]:
        return c
    uniq, inv = np.unique(c, return_inverse=True)
    out = inv.astype(np.int64) - int(np.count_nonzero(uniq < 0))
    out[c < 0] = -1
    return np.ascontiguousarray(out)


def _dense2(B, name, rows=None, cols=None):
    arr = np.asarray(B)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {arr.ndim}-D")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real array, got dtype {arr.dtype}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {rows}")
    if cols is not None and arr.shape[1] != cols:
        raise ValueError(f"{name} has {arr.shape[1]} columns, expected {cols}")
    return np.ascontiguousarray(arr, dtype=np.float64)


# ================================================================ graph helpers

cdef void _transpose_c(idx_t m, idx_t n, const idx_t[::1] ip, const idx_t[::1] ix,
                       idx_t[::1] tp, idx_t[::1] tx) noexcept nogil:
    """CSC of an m x n CSR pattern (row indices come out sorted)."""
    cdef idx_t i, a, j, nnz = ip[m]
    for j in range(n + 1):
        tp[j] = 0
    for a in range(nnz):
        tp[ix[a] + 1] += 1
    for j in range(n):
        tp[j + 1] += tp[j]
    for i in range(m):
        for a in range(ip[i], ip[i + 1]):
            j = ix[a]
            tx[tp[j]] = i
            tp[j] += 1
    j = n
    while j > 0:
        tp[j] = tp[j - 1]
        j -= 1
    tp[0] = 0


def _transpose(idx_t m, idx_t n, ip, ix):
    tp = np.empty(n + 1, dtype=np.int64)
    tx = np.empty(ix.shape[0], dtype=np.int64)
    _transpose_c(m, n, ip, ix, tp, tx)
    return tp, tx


cdef idx_t _sym_mirror_c(idx_t n, const idx_t[::1] ip, const idx_t[::1] ix,
                         idx_t[::1] mirror, idx_t[::1] edge, idx_t[::1] pos,
                         idx_t* info) noexcept nogil:
    """Pair entry (v, w) with (w, v); number the undirected edges.

    Returns the number of edges, or -1 if the pattern is not symmetric
    (info = the entry whose mirror is missing).
    """
    cdef idx_t v, w, a, b, ne = 0
    for v in range(n):
        pos[v] = ip[v]
    for v in range(n):
        for a in range(ip[v], ip[v + 1]):
            w = ix[a]
            if w < v:
                continue
            if w == v:
                mirror[a] = a
                edge[a] = -1
                continue
            # the lower entries of row w come in increasing order of v
            b = pos[w]
            if b >= ip[w + 1] or ix[b] != v:
                info[0] = v
                info[1] = w
                return -1
            mirror[a] = b
            mirror[b] = a
            edge[a] = ne
            edge[b] = ne
            ne += 1
            pos[w] = b + 1
    for w in range(n):
        b = pos[w]
        if b < ip[w + 1] and ix[b] < w:
            info[0] = w
            info[1] = ix[b]
            return -1
    return ne


def _sym_structure(idx_t n, ip, ix):
    mirror = np.empty(ix.shape[0], dtype=np.int64)
    edge = np.empty(ix.shape[0], dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    cdef idx_t info[2]
    info[0] = info[1] = 0
    cdef idx_t ne = _sym_mirror_c(n, ip, ix, mirror, edge, pos, info)
    if ne < 0:
        raise ValueError(f"pattern is not symmetric: entry ({info[0]}, {info[1]}) "
                         f"is present but ({info[1]}, {info[0]}) is not")
    return mirror, edge, ne


# ================================================================ orderings

cdef idx_t _degrees_c(idx_t nv, const idx_t[::1] vptr, const idx_t[::1] vnets,
                      const idx_t[::1] nptr, const idx_t[::1] nverts,
                      idx_t[::1] deg, idx_t[::1] stamp) noexcept nogil:
    """Degree of every vertex in the conflict graph, without building it.

    The stamp array marks the vertices already counted for the current v.
    Returns the maximum degree.
    """
    cdef idx_t v, a, b, i, u, cnt, maxdeg = 0
    for v in range(nv):
        stamp[v] = -1
    for v in range(nv):
        stamp[v] = v
        cnt = 0
        for a in range(vptr[v], vptr[v + 1]):
            i = vnets[a]
            for b in range(nptr[i], nptr[i + 1]):
                u = nverts[b]
                if stamp[u] != v:
                    stamp[u] = v
                    cnt += 1
        deg[v] = cnt
        if cnt > maxdeg:
            maxdeg = cnt
    return maxdeg


cdef void _order_lf_c(idx_t nv, const idx_t[::1] deg, idx_t maxdeg,
                      idx_t[::1] order, idx_t[::1] cnt) noexcept nogil:
    """Largest first: counting sort by degree, descending; ties by index."""
    cdef idx_t v, d, s = 0, t
    for d in range(maxdeg + 2):
        cnt[d] = 0
    for v in range(nv):
        cnt[maxdeg - deg[v]] += 1
    for d in range(maxdeg + 1):
        t = cnt[d]
        cnt[d] = s
        s += t
    for v in range(nv):
        d = maxdeg - deg[v]
        order[cnt[d]] = v
        cnt[d] += 1


# (raw pointers: a memoryview argument costs an atomic acquire per call)
cdef inline void _unlink(idx_t v, idx_t b, idx_t* head, idx_t* nxt,
                         idx_t* prv) noexcept nogil:
    if prv[v] >= 0:
        nxt[prv[v]] = nxt[v]
    else:
        head[b] = nxt[v]
    if nxt[v] >= 0:
        prv[nxt[v]] = prv[v]


cdef inline void _unlink_q(idx_t v, idx_t b, idx_t* head, idx_t* tail, idx_t* nxt,
                           idx_t* prv) noexcept nogil:
    if prv[v] >= 0:
        nxt[prv[v]] = nxt[v]
    else:
        head[b] = nxt[v]
    if nxt[v] >= 0:
        prv[nxt[v]] = prv[v]
    else:
        tail[b] = prv[v]


cdef inline void _append(idx_t v, idx_t b, idx_t* head, idx_t* tail, idx_t* nxt,
                         idx_t* prv) noexcept nogil:
    nxt[v] = -1
    prv[v] = tail[b]
    if tail[b] >= 0:
        nxt[tail[b]] = v
    else:
        head[b] = v
    tail[b] = v


cdef inline void _push(idx_t v, idx_t b, idx_t* head, idx_t* nxt,
                       idx_t* prv) noexcept nogil:
    nxt[v] = head[b]
    prv[v] = -1
    if head[b] >= 0:
        prv[head[b]] = v
    head[b] = v


cdef void _order_sl_c(idx_t nv, const idx_t[::1] vptr, const idx_t[::1] vnets,
                      const idx_t[::1] nptr, const idx_t[::1] nverts,
                      const idx_t[::1] deg0, idx_t maxdeg, idx_t[::1] order,
                      idx_t[::1] deg, idx_t[::1] head, idx_t[::1] nxt,
                      idx_t[::1] prv, idx_t[::1] stamp) noexcept nogil:
    """Smallest last: repeatedly remove a vertex of minimum current degree;
    the ordering is the reverse removal order.  Bucket queue, O(edges)."""
    cdef idx_t* hp = &head[0]
    cdef idx_t* np_ = &nxt[0]
    cdef idx_t* pp = &prv[0]
    cdef idx_t v, u, a, b, i, k, mind = 0
    for k in range(maxdeg + 1):
        head[k] = -1
    for v in range(nv):
        deg[v] = deg0[v]
        stamp[v] = -1
        _push(v, deg[v], hp, np_, pp)
    k = nv - 1
    while k >= 0:
        while head[mind] < 0:
            mind += 1
        v = head[mind]
        _unlink(v, mind, hp, np_, pp)
        deg[v] = -1                       # removed
        order[k] = v
        for a in range(vptr[v], vptr[v + 1]):
            i = vnets[a]
            for b in range(nptr[i], nptr[i + 1]):
                u = nverts[b]
                if deg[u] >= 0 and stamp[u] != v:
                    stamp[u] = v
                    _unlink(u, deg[u], hp, np_, pp)
                    deg[u] -= 1
                    _push(u, deg[u], hp, np_, pp)
        # neighbours lost one each: the minimum dropped by at most one
        if mind > 0:
            mind -= 1
        k -= 1


cdef void _order_id_c(idx_t nv, const idx_t[::1] vptr, const idx_t[::1] vnets,
                      const idx_t[::1] nptr, const idx_t[::1] nverts,
                      const idx_t[::1] lf_order, idx_t[::1] order,
                      idx_t[::1] inc, idx_t[::1] head, idx_t[::1] nxt,
                      idx_t[::1] prv, idx_t[::1] stamp, idx_t[::1] tail) noexcept nogil:
    """Incidence degree: repeatedly take the vertex with the most already
    ordered neighbours; ties first-come first-served, starting from the
    largest degree.  Bucket queue, O(edges)."""
    cdef idx_t* hp = &head[0]
    cdef idx_t* tp = &tail[0]
    cdef idx_t* np_ = &nxt[0]
    cdef idx_t* pp = &prv[0]
    cdef idx_t v, u, a, b, i, k, maxi = 0
    for k in range(nv + 1):
        head[k] = -1
        tail[k] = -1
    for k in range(nv):
        v = lf_order[k]
        inc[v] = 0
        stamp[v] = -1
        _append(v, 0, hp, tp, np_, pp)
    for k in range(nv):
        while head[maxi] < 0:
            maxi -= 1
        v = head[maxi]
        _unlink_q(v, maxi, hp, tp, np_, pp)
        inc[v] = -1                       # ordered
        order[k] = v
        for a in range(vptr[v], vptr[v + 1]):
            i = vnets[a]
            for b in range(nptr[i], nptr[i + 1]):
                u = nverts[b]
                if inc[u] >= 0 and stamp[u] != v:
                    stamp[u] = v
                    _unlink_q(u, inc[u], hp, tp, np_, pp)
                    inc[u] += 1
                    _append(u, inc[u], hp, tp, np_, pp)
        # neighbours gained one each: the maximum grew by at most one
        if maxi < nv - 1:
            maxi += 1


cdef class _Orderer:
    """Work arrays for the orderings of one vertex/net structure."""
    cdef idx_t nv, maxdeg
    cdef object vptr, vnets, nptr, nverts
    cdef idx_t[::1] deg, w1, w2, w3, w4, w5, w6, lf
    cdef bint have_deg, have_lf

    def __init__(self, idx_t nv, vptr, vnets, nptr, nverts):
        self.nv = nv
        self.vptr, self.vnets, self.nptr, self.nverts = vptr, vnets, nptr, nverts
        self.have_deg = False
        self.have_lf = False
        self.w1 = np.empty(nv + 2, dtype=np.int64)
        self.w2 = np.empty(nv + 2, dtype=np.int64)
        self.w3 = np.empty(nv + 2, dtype=np.int64)
        self.w4 = np.empty(nv + 2, dtype=np.int64)
        self.w5 = np.empty(nv + 2, dtype=np.int64)
        self.w6 = np.empty(nv + 2, dtype=np.int64)

    cdef void _need_deg(self):
        cdef const idx_t[::1] vptr = self.vptr
        cdef const idx_t[::1] vnets = self.vnets
        cdef const idx_t[::1] nptr = self.nptr
        cdef const idx_t[::1] nverts = self.nverts
        if not self.have_deg:
            self.deg = np.empty(self.nv + 1, dtype=np.int64)
            with nogil:
                self.maxdeg = _degrees_c(self.nv, vptr, vnets, nptr, nverts,
                                         self.deg, self.w1)
            self.have_deg = True

    cdef void _need_lf(self):
        self._need_deg()
        if not self.have_lf:
            self.lf = np.empty(self.nv + 1, dtype=np.int64)
            with nogil:
                _order_lf_c(self.nv, self.deg, self.maxdeg, self.lf, self.w1)
            self.have_lf = True

    def order(self, int code):
        cdef const idx_t[::1] vptr = self.vptr
        cdef const idx_t[::1] vnets = self.vnets
        cdef const idx_t[::1] nptr = self.nptr
        cdef const idx_t[::1] nverts = self.nverts
        out = np.empty(self.nv, dtype=np.int64)
        cdef idx_t[::1] o = out
        if code == 0:
            out[:] = np.arange(self.nv, dtype=np.int64)
        elif code == 1:
            self._need_lf()
            out[:] = np.asarray(self.lf)[:self.nv]
        elif code == 2:
            self._need_deg()
            with nogil:
                _order_sl_c(self.nv, vptr, vnets, nptr, nverts, self.deg, self.maxdeg,
                            o, self.w1, self.w2, self.w3, self.w4, self.w5)
        elif code == 3:
            self._need_lf()
            with nogil:
                _order_id_c(self.nv, vptr, vnets, nptr, nverts, self.lf, o,
                            self.w1, self.w2, self.w3, self.w4, self.w5, self.w6)
        else:
            raise ValueError(code)
        return out


def _ordering_code(ordering):
    try:
        return _ORDER_CODE[ordering]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ordering {ordering!r}; expected one of "
                         f"{ORDERINGS + ('best',)}") from None


# ================================================================ distance-2 coloring

cdef inline idx_t _first_fit(const idx_t* forb, idx_t v) noexcept nogil:
    """The smallest color not stamped forbidden for vertex v (greedy's choice)."""
    cdef idx_t c = 0
    while forb[c] == v:
        c += 1
    return c


cdef idx_t _greedy_d2_c(idx_t nv, const idx_t[::1] order,
                        const idx_t[::1] vptr, const idx_t[::1] vnets,
                        const idx_t[::1] nptr, const idx_t[::1] nverts,
                        int32_t[::1] color, idx_t[::1] forb,
                        idx_t limit) noexcept nogil:
    """Greedy distance-2 coloring in the given order.

    forbidden colors are stamped with the current vertex.  A vertex in no
    net gets -1.  Returns the number of colors, or -1 as soon as more than
    ``limit`` colors would be needed.
    """
    cdef idx_t k, v, a, b, i, c, ncol = 0
    cdef int32_t cu
    for v in range(nv):
        color[v] = -1
        forb[v] = -1
    forb[nv] = -1
    for k in range(nv):
        v = order[k]
        if vptr[v] == vptr[v + 1]:
            continue
        for a in range(vptr[v], vptr[v + 1]):
            i = vnets[a]
            for b in range(nptr[i], nptr[i + 1]):
                cu = color[nverts[b]]
                if cu >= 0:
                    forb[cu] = v
        c = _first_fit(&forb[0], v)
        if c >= limit:
            return -1
        color[v] = <int32_t>c
        ncol = max(ncol, c + 1)
    return ncol


def _d2_color(idx_t nv, vptr, vnets, nptr, nverts, int code, idx_t limit=NO_LIMIT):
    """(colors, ncolors) of a distance-2 coloring; (None, -1) when every
    ordering tried needs more than ``limit`` colors."""
    if vnets.shape[0] == 0:               # no vertex in any net
        return np.full(nv, -1, dtype=np.int32), 0
    orderer = _Orderer(nv, vptr, vnets, nptr, nverts)
    # natural first: cheapest, and optimal on banded patterns, where the
    # clique bound then stops the search
    codes = [0, 2, 3, 1] if code == 4 else [code]
    color = np.empty(nv, dtype=np.int32)
    forb = np.empty(nv + 1, dtype=np.int64)
    best, best_n = None, -1
    # the vertices of one net form a clique: no coloring beats the largest net
    cdef idx_t lower = int(np.diff(nptr).max()) if nptr.shape[0] > 1 else 0
    cdef idx_t ncol
    cdef const idx_t[::1] vp = vptr
    cdef const idx_t[::1] vn = vnets
    cdef const idx_t[::1] np_ = nptr
    cdef const idx_t[::1] nvt = nverts
    cdef const idx_t[::1] o
    cdef int32_t[::1] cv = color
    cdef idx_t[::1] fv = forb
    for c in codes:
        o = orderer.order(c)
        with nogil:
            ncol = _greedy_d2_c(nv, o, vp, vn, np_, nvt, cv, fv, limit)
        if ncol >= 0:
            best, best_n = color.copy(), ncol
            if ncol <= lower:
                break                     # optimal
            limit = ncol - 1              # the next ordering must do better
    return best, best_n


def _column_structure(idx_t m, idx_t n, ip, ix):
    """(vptr, vnets, nptr, nverts) with columns as vertices, rows as nets."""
    tp, tx = _transpose(m, n, ip, ix)
    return tp, tx, ip, ix


def color_columns(indptr, indices, shape, ordering="best"):
    """Distance-2 coloring of the column intersection graph of a CSR pattern.

    Columns of one color share no row, so B = J @ seed_matrix(colors) holds
    every nonzero of J (see recover_columns).  ``ordering``: "natural",
    "largest_first", "smallest_last", "incidence_degree", or "best" (all four,
    natural included, keeping the fewest colors; stops early when one meets
    the lower bound, the longest row).  Columns without
    nonzeros get color 0.  Returns an int32 array of length n.
    """
    m, n = _parse_shape(shape)
    code = _ordering_code(ordering)
    ip, ix = _check_csr(indptr, indices, m, n)
    vptr, vnets, nptr, nverts = _column_structure(m, n, ip, ix)
    colors, _ = _d2_color(n, vptr, vnets, nptr, nverts, code)
    colors[colors < 0] = 0
    return colors


def column_ordering(indptr, indices, shape, ordering):
    """The order in which color_columns visits the columns for one of the
    ORDERINGS (degrees are in the column intersection graph).  int64."""
    m, n = _parse_shape(shape)
    code = _ordering_code(ordering)
    if code == 4:
        raise ValueError("column_ordering needs a single ordering, not 'best'")
    ip, ix = _check_csr(indptr, indices, m, n)
    vptr, vnets, nptr, nverts = _column_structure(m, n, ip, ix)
    return _Orderer(n, vptr, vnets, nptr, nverts).order(code)


def color_rows(indptr, indices, shape, ordering="best"):
    """Distance-2 coloring of the row intersection graph (rows that share a
    column get different colors): C = seed_matrix(row_colors).T @ J holds
    every nonzero of J (see recover_rows).  Rows without nonzeros get 0."""
    m, n = _parse_shape(shape)
    code = _ordering_code(ordering)
    ip, ix = _check_csr(indptr, indices, m, n)
    tp, tx = _transpose(m, n, ip, ix)
    colors, _ = _d2_color(m, ip, ix, tp, tx, code)
    colors[colors < 0] = 0
    return colors


# ================================================================ star coloring

cdef inline void _treat(idx_t v, idx_t q, const idx_t* ip, const idx_t* ix,
                        const int32_t* color, idx_t* forb,
                        idx_t* treated) noexcept nogil:
    """Forbid for v the colors of all colored neighbours of q."""
    cdef idx_t b, x
    cdef int32_t cx
    for b in range(ip[q], ip[q + 1]):
        x = ix[b]
        if x == q:
            continue
        cx = color[x]
        if cx >= 0:
            forb[cx] = v
    treated[q] = v


cdef idx_t _star_c(idx_t n, const idx_t[::1] order, const idx_t[::1] ip,
                   const idx_t[::1] ix, const idx_t[::1] edge,
                   int32_t[::1] color, idx_t[::1] forb, idx_t[::1] fn_v,
                   idx_t[::1] fn_w, idx_t[::1] fn_e, idx_t[::1] treated,
                   idx_t[::1] star, idx_t[::1] hub, idx_t limit) noexcept nogil:
    """Greedy star coloring, GTMP 2007 Algorithm 4.1 (two-colored stars).

    Every edge belongs to a two-colored star (star[edge]); hub[s] is the
    star's center, or -1 while the star is a single edge.  fn_* [c] is the
    first neighbour (and edge) of color c met from the current vertex.
    Returns the number of colors, or -1 when more than ``limit`` are needed.
    """
    cdef idx_t k, v, w, x, a, b, q, s, c, ncol = 0, nstars = 0
    cdef int32_t cw, cx
    cdef bint found
    for v in range(n):
        color[v] = -1
        treated[v] = -1
    for v in range(n + 1):
        forb[v] = -1
        fn_v[v] = -1
        fn_w[v] = -1
        fn_e[v] = -1
    for k in range(n):
        v = order[k]
        for a in range(ip[v], ip[v + 1]):
            w = ix[a]
            if w == v:
                continue
            cw = color[w]
            if cw < 0:
                continue
            forb[cw] = v
            if fn_v[cw] == v:
                # Case 1: v already has a neighbour q of color cw, so v would
                # be the hub of a two-colored star: no neighbour of q or w
                # may share v's color.
                q = fn_w[cw]
                if treated[q] != v:
                    _treat(v, q, &ip[0], &ix[0], &color[0], &forb[0], &treated[0])
                _treat(v, w, &ip[0], &ix[0], &color[0], &forb[0], &treated[0])
            else:
                fn_v[cw] = v
                fn_w[cw] = w
                fn_e[cw] = edge[a]
                # Case 2: w is a leaf of a star whose hub x is colored; then
                # v - w - x - (another leaf) would be two-colored.
                for b in range(ip[w], ip[w + 1]):
                    x = ix[b]
                    if x == w or x == v:
                        continue
                    cx = color[x]
                    if cx >= 0 and hub[star[edge[b]]] == x:
                        forb[cx] = v
        c = _first_fit(&forb[0], v)
        if c >= limit:
            return -1
        color[v] = <int32_t>c
        ncol = max(ncol, c + 1)
        # update the collection of two-colored stars with the edges at v
        for a in range(ip[v], ip[v + 1]):
            w = ix[a]
            if w == v:
                continue
            cw = color[w]
            if cw < 0:
                continue
            found = False
            for b in range(ip[w], ip[w + 1]):
                x = ix[b]
                if x == w or x == v:
                    continue
                if color[x] == c:
                    # v - w - x with color[v] == color[x]: w is the hub
                    s = star[edge[b]]
                    hub[s] = w
                    star[edge[a]] = s
                    found = True
                    break
            if not found:
                if fn_v[cw] == v and fn_w[cw] != w:
                    # v has two neighbours of color cw: v is the hub
                    s = star[fn_e[cw]]
                    hub[s] = v
                    star[edge[a]] = s
                else:
                    s = nstars
                    nstars += 1
                    hub[s] = -1
                    star[edge[a]] = s
    return ncol


def _star_run(idx_t n, ip, ix, edge, idx_t ne, int code, idx_t limit=NO_LIMIT):
    # orderings use distance-1 degrees: vertex v lies in the single net v
    ident = np.arange(n + 1, dtype=np.int64)
    orderer = _Orderer(n, ident, ident[:n], ip, ix)
    # natural first: cheapest, and optimal on banded patterns, where the
    # clique bound then stops the search
    codes = [0, 2, 3, 1] if code == 4 else [code]
    color = np.empty(n, dtype=np.int32)
    forb = np.empty(n + 1, dtype=np.int64)
    fn_v = np.empty(n + 1, dtype=np.int64)
    fn_w = np.empty(n + 1, dtype=np.int64)
    fn_e = np.empty(n + 1, dtype=np.int64)
    treated = np.empty(n, dtype=np.int64)
    star = np.empty(max(ne, 1), dtype=np.int64)
    hub = np.empty(max(ne, 1), dtype=np.int64)
    best, best_n = None, -1
    cdef idx_t ncol
    cdef const idx_t[::1] o
    cdef const idx_t[::1] ipv = ip
    cdef const idx_t[::1] ixv = ix
    cdef const idx_t[::1] ev = edge
    cdef int32_t[::1] cv = color
    cdef idx_t[::1] fv = forb, a1 = fn_v, a2 = fn_w, a3 = fn_e, tv = treated
    cdef idx_t[::1] sv = star, hv = hub
    # a lower bound to stop at: 3 colors where some edge joins two vertices
    # of degree >= 2 (a path on four vertices or a triangle: neither has a
    # star coloring with two), else 2 with any edge (stars), else 1
    cdef idx_t lower = 1 if n else 0, v, p, w, d
    degree = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.int64)
    cdef idx_t[::1] dg = degree, sn = seen
    for v in range(n):                  # distinct neighbours: an entry may be stored twice
        d = 0
        for p in range(ipv[v], ipv[v + 1]):
            w = ixv[p]
            if w != v and sn[w] != v + 1:
                sn[w] = v + 1
                d += 1
        dg[v] = d
        if d and lower < 2:
            lower = 2
    for v in range(n):
        if dg[v] < 2:
            continue
        for p in range(ipv[v], ipv[v + 1]):
            w = ixv[p]
            if w != v and dg[w] >= 2:
                lower = 3
                break
        if lower == 3:
            break
    for c in codes:
        o = orderer.order(c)
        with nogil:
            ncol = _star_c(n, o, ipv, ixv, ev, cv, fv, a1, a2, a3, tv, sv, hv, limit)
        if ncol >= 0:
            best, best_n = color.copy(), ncol
            if ncol <= lower:
                break                     # optimal
            limit = ncol - 1
    return best, best_n


def star_color(indptr, indices, n, ordering="best"):
    """Star coloring of a symmetric n x n pattern (a Hessian's), for direct
    symmetric recovery with recover_star.

    Greedy Algorithm 4.1 of Gebremedhin, Tarafdar, Manne, Pothen (SIAM J.
    Sci. Comput. 2007), which maintains the two-colored stars; orderings use
    the degree in the adjacency graph.  The diagonal is treated as present
    whether stored or not.  The pattern must be symmetric (ValueError).
    Returns int32 colors of length n.
    """
    n = _parse_square(n)
    code = _ordering_code(ordering)
    ip, ix = _check_csr(indptr, indices, n, n)
    mirror, edge, ne = _sym_structure(n, ip, ix)
    colors, _ = _star_run(n, ip, ix, edge, ne, code)
    return colors


# ================================================================ bicolor

def _masked_csr(ip, ix, rownnz, keep):
    """The CSR pattern with the rows where ``keep`` is False emptied."""
    if keep.all():
        return ip, ix
    counts = np.where(keep, rownnz, 0)
    sub_ip = np.zeros(ip.shape[0], dtype=np.int64)
    np.cumsum(counts, out=sub_ip[1:])
    sub_ix = np.ascontiguousarray(ix[np.repeat(keep, rownnz)])
    return sub_ip, sub_ix


def _thresholds(vals):
    """At most MAX_THRESHOLDS of the sorted distinct row lengths: the largest
    ones (where dense rows live) and an even spread over the rest."""
    k = vals.shape[0]
    if k <= MAX_THRESHOLDS:
        return [int(v) for v in vals]
    top = 8
    spread = np.unique(np.linspace(0, k - 1 - top, MAX_THRESHOLDS - top).round().astype(np.int64))
    idx = sorted(set(spread.tolist()) | set(range(k - top, k)))
    return [int(vals[i]) for i in idx]


def bicolor(indptr, indices, shape, ordering="best"):
    """Bidirectional partition with direct recovery (Coleman-Verma style).

    For a threshold t, the rows with more than t nonzeros form the reverse
    set R: their entries come from a row coloring of the rows of R (two rows
    of R conflict when they share a column), the other entries from a column
    coloring in which columns conflict only through rows outside R.  The
    thresholds tried are the distinct row lengths (at most ~20 of them), plus
    "no row reversed" (plain column coloring) and "every row reversed"
    (plain row coloring); the partition with the fewest colors in total is
    returned.  Candidates whose lower bound (longest forward row + most R
    rows in a column) cannot beat the best so far are skipped, and colorings
    stop as soon as they exceed the budget.

    Returns (col_colors, row_colors), int32; a column with no nonzero outside
    R has color -1 (in no forward seed), a row not in R has color -1.
    """
    m, n = _parse_shape(shape)
    code = _ordering_code(ordering)
    ip, ix = _check_csr(indptr, indices, m, n)
    rownnz = np.diff(ip)
    nnz = ix.shape[0]
    if nnz == 0:
        return np.full(n, -1, dtype=np.int32), np.full(m, -1, dtype=np.int32)
    vals = np.unique(rownnz[rownnz > 0])
    cands = [-1] + _thresholds(vals)      # t = vals[-1]: R empty (column coloring)
    ent_len = np.repeat(rownnz, rownnz)
    bounds = []
    for t in cands:
        lb_f = int(vals[vals <= t].max()) if t >= vals[0] else 0
        in_r = ent_len > t
        lb_r = int(np.bincount(ix[in_r], minlength=1).max()) if in_r.any() else 0
        bounds.append((lb_f + lb_r, lb_r, t))
    bounds.sort()
    best = None
    best_total = NO_LIMIT
    for lb, lb_r, t in bounds:
        if lb >= best_total:
            continue
        in_r = rownnz > t
        # forward part: columns of the rows outside R
        f_ip, f_ix = _masked_csr(ip, ix, rownnz, ~in_r)
        tp, tx = _transpose(m, n, f_ip, f_ix)
        col_colors, p_f = _d2_color(n, tp, tx, f_ip, f_ix, code,
                                    best_total - lb_r - 1)
        if col_colors is None:
            continue
        # reverse part: rows of R
        r_ip, r_ix = _masked_csr(ip, ix, rownnz, in_r)
        tp, tx = _transpose(m, n, r_ip, r_ix)
        row_colors, p_r = _d2_color(m, r_ip, r_ix, tp, tx, code,
                                    best_total - p_f - 1)
        if row_colors is None:
            continue
        if p_f + p_r < best_total:
            best_total = p_f + p_r
            best = (col_colors, row_colors)
    return best


# ================================================================ recovery

def seed_matrix(colors, p=None):
    """Dense n x p float64 seed: S[j, colors[j]] = 1; rows with color -1 are
    zero.  p defaults to max(colors) + 1."""
    c = _index_array(colors, "colors")
    n = c.shape[0]
    cmax = int(c.max()) if n else -1
    if p is None:
        p = cmax + 1
    p = _nonneg_int(p, "p")
    if n and int(c.min()) < -1:
        j = int(np.argmin(c))
        raise ValueError(f"colors[{j}] = {c[j]} is negative (only -1 = unseeded is allowed)")
    if cmax >= p:
        j = int(np.argmax(c))
        raise ValueError(f"colors[{j}] = {c[j]} is out of range for p = {p} seed columns")
    S = np.zeros((n, p), dtype=np.float64)
    rows = np.nonzero(c >= 0)[0]
    S[rows, c[rows]] = 1.0
    return S


def _check_colors_range(c, idx_t p, name, what, allow_unseeded=False):
    """Colors index ``p`` columns of B (or rows of C): 0 <= color < p
    (-1 also allowed, meaning unseeded, when ``allow_unseeded``)."""
    if c.shape[0] == 0:
        return
    lo = -1 if allow_unseeded else 0
    cmin = int(c.min())
    if cmin < lo:
        j = int(np.argmin(c))
        raise ValueError(f"{name}[{j}] = {cmin} is negative"
                         + (" (only -1 = unseeded is allowed)" if allow_unseeded else ""))
    cmax = int(c.max())
    if cmax >= p:
        j = int(np.argmax(c))
        raise ValueError(f"{name}[{j}] = {cmax} is too large: {what} = {p}")


cdef void _gather_cols_c(idx_t m, const idx_t[::1] ip, const idx_t[::1] ix,
                         const idx_t[::1] col, const double[:, ::1] B,
                         double[::1] out) noexcept nogil:
    cdef idx_t i, a
    for i in range(m):
        for a in range(ip[i], ip[i + 1]):
            out[a] = B[i, col[ix[a]]]


cdef void _gather_rows_c(idx_t m, const idx_t[::1] ip, const idx_t[::1] ix,
                         const idx_t[::1] row, const double[:, ::1] C,
                         double[::1] out) noexcept nogil:
    cdef idx_t i, a, r
    for i in range(m):
        r = row[i]
        for a in range(ip[i], ip[i + 1]):
            out[a] = C[r, ix[a]]


def recover_columns(indptr, indices, shape, colors, B):
    """CSR data of J from B = J @ seed_matrix(colors) (m x p):
    J[i, j] = B[i, colors[j]]."""
    m, n = _parse_shape(shape)
    ip, ix = _check_csr(indptr, indices, m, n)
    c = _color_array(colors, n, "colors")
    Bv = _dense2(B, "B", m)
    _check_colors_range(c, Bv.shape[1], "colors", "B (m x p) has p")
    out = np.empty(ix.shape[0], dtype=np.float64)
    _gather_cols_c(m, ip, ix, c, Bv, out)
    return out


def recover_rows(indptr, indices, shape, row_colors, C):
    """CSR data of J from C = seed_matrix(row_colors).T @ J (q x n):
    J[i, j] = C[row_colors[i], j]."""
    m, n = _parse_shape(shape)
    ip, ix = _check_csr(indptr, indices, m, n)
    r = _color_array(row_colors, m, "row_colors")
    Cv = _dense2(C, "C", cols=n)
    _check_colors_range(r, Cv.shape[0], "row_colors", "C (q x n) has q")
    out = np.empty(ix.shape[0], dtype=np.float64)
    _gather_rows_c(m, ip, ix, r, Cv, out)
    return out


cdef idx_t _bidir_c(idx_t m, const idx_t[::1] ip, const idx_t[::1] ix,
                    const idx_t[::1] col, const idx_t[::1] row,
                    const double[:, ::1] B, const double[:, ::1] C,
                    double[::1] out) noexcept nogil:
    cdef idx_t i, a, r
    for i in range(m):
        r = row[i]
        if r >= 0:
            for a in range(ip[i], ip[i + 1]):
                out[a] = C[r, ix[a]]
        else:
            for a in range(ip[i], ip[i + 1]):
                if col[ix[a]] < 0:
                    return a
                out[a] = B[i, col[ix[a]]]
    return -1


def recover_bidirectional(indptr, indices, shape, col_colors, row_colors, B, C):
    """CSR data of J from a bidirectional partition (see bicolor):
    B = J @ seed_matrix(col_colors) (m x p), C = seed_matrix(row_colors).T @ J
    (q x n).  Entries of rows with a row color come from C, the others from
    B; B or C may be None when no color of that kind is used."""
    m, n = _parse_shape(shape)
    ip, ix = _check_csr(indptr, indices, m, n)
    cc = _color_array(col_colors, n, "col_colors")
    rc = _color_array(row_colors, m, "row_colors")
    Bv = np.zeros((m, 0)) if B is None else _dense2(B, "B", m)
    Cv = np.zeros((0, n)) if C is None else _dense2(C, "C", cols=n)
    _check_colors_range(cc, Bv.shape[1], "col_colors", "B (m x p) has p",
                        allow_unseeded=True)
    _check_colors_range(rc, Cv.shape[0], "row_colors", "C (q x n) has q",
                        allow_unseeded=True)
    out = np.empty(ix.shape[0], dtype=np.float64)
    cdef idx_t bad = _bidir_c(m, ip, ix, cc, rc, Bv, Cv, out)
    if bad >= 0:
        i = int(np.searchsorted(ip, bad, side="right")) - 1
        raise ValueError(f"entry ({i}, {ix[bad]}) is in neither seed: row {i} has "
                         f"row color -1 and column {ix[bad]} has column color -1")
    return out


# ---------------------------------------------------------------- star recovery

cdef void _unique_c(idx_t n, const idx_t[::1] ip, const idx_t[::1] ix,
                    const idx_t[::1] color, idx_t[::1] mark, idx_t[::1] cnt,
                    int8_t[::1] uniq) noexcept nogil:
    """uniq[a] for entry a = (i, j): color[j] occurs once in row i plus i."""
    cdef idx_t i, a, u, c
    for c in range(mark.shape[0]):
        mark[c] = -1
    for i in range(n):
        c = color[i]
        mark[c] = i
        cnt[c] = 1
        for a in range(ip[i], ip[i + 1]):
            u = ix[a]
            if u == i:
                continue
            c = color[u]
            if mark[c] != i:
                mark[c] = i
                cnt[c] = 1
            else:
                cnt[c] += 1
        for a in range(ip[i], ip[i + 1]):
            uniq[a] = cnt[color[ix[a]]] == 1


cdef idx_t _star_plan_c(idx_t n, const idx_t[::1] ip, const idx_t[::1] ix,
                        const idx_t[::1] color, const idx_t[::1] mirror,
                        const int8_t[::1] uniq, idx_t[::1] src_r,
                        idx_t[::1] src_c) noexcept nogil:
    cdef idx_t i, a, j
    for i in range(n):
        for a in range(ip[i], ip[i + 1]):
            j = ix[a]
            if uniq[a]:
                src_r[a] = i
                src_c[a] = color[j]
            elif uniq[mirror[a]]:
                src_r[a] = j
                src_c[a] = color[i]
            else:
                return a
    return -1


cdef class StarRecoveryPlan:
    """Where each nonzero of a symmetric pattern is read in B = H @ S:
    B[src_row[a], src_col[a]].  Built once by star_recovery_plan; then
    recover_star(..., plan=plan) is a plain gather."""
    cdef readonly idx_t n, nnz, p
    cdef readonly object src_row, src_col
    cdef readonly object _indptr, _indices

    def __repr__(self):
        return f"<StarRecoveryPlan n={self.n} nnz={self.nnz} p>={self.p}>"


def star_recovery_plan(indptr, indices, n, colors):
    """Decide, for every nonzero (i, j) of a symmetric pattern, whether it is
    read as B[i, colors[j]] (no other vertex of row i plus i has colors[j])
    or as B[j, colors[i]].  ValueError if neither works (not a star
    coloring) or the pattern is not symmetric."""
    n = _parse_square(n)
    ip, ix = _check_csr(indptr, indices, n, n)
    c = _color_array(colors, n, "colors")
    if n and int(c.min()) < 0:
        j = int(np.argmin(c))
        raise ValueError(f"colors[{j}] = {c[j]} is negative")
    ncol = int(c.max()) + 1 if n else 0
    mirror, edge, ne = _sym_structure(n, ip, ix)
    uniq = np.empty(ix.shape[0], dtype=np.int8)
    src_r = np.empty(ix.shape[0], dtype=np.int64)
    src_c = np.empty(ix.shape[0], dtype=np.int64)
    cc = _compact(c)
    mark = np.empty(n, dtype=np.int64)
    cnt = np.empty(n, dtype=np.int64)
    _unique_c(n, ip, ix, cc, mark, cnt, uniq)
    cdef idx_t bad = _star_plan_c(n, ip, ix, c, mirror, uniq, src_r, src_c)
    if bad >= 0:
        i = int(np.searchsorted(ip, bad, side="right")) - 1
        j = int(ix[bad])
        raise ValueError(f"colors are not a star coloring: entry ({i}, {j}) cannot be "
                         f"recovered (color {c[j]} repeats in row {i} and color {c[i]} "
                         f"repeats in row {j})")
    cdef StarRecoveryPlan plan = StarRecoveryPlan.__new__(StarRecoveryPlan)
    plan.n = n
    plan.nnz = ix.shape[0]
    plan.p = ncol
    plan.src_row = src_r
    plan.src_col = src_c
    plan._indptr = ip
    plan._indices = ix
    return plan


cdef void _gather_plan_c(idx_t nnz, const idx_t[::1] r, const idx_t[::1] c,
                         const double[:, ::1] B, double[::1] out) noexcept nogil:
    cdef idx_t a
    for a in range(nnz):
        out[a] = B[r[a], c[a]]


def recover_star(indptr, indices, n, colors, B, plan=None):
    """CSR data of a symmetric H from B = H @ seed_matrix(colors) (n x p),
    colors a star coloring: H[i, j] = B[i, colors[j]] when no other vertex
    of row i (i included) has colors[j], else B[j, colors[i]].

    The choice is made once per entry (star_recovery_plan); pass ``plan`` to
    reuse it, then a call is a gather."""
    n = _parse_square(n)
    Bv = _dense2(B, "B", n)
    if plan is None:
        cols = _color_array(colors, n, "colors")
        _check_colors_range(cols, Bv.shape[1], "colors", "B (n x p) has p")
        plan = star_recovery_plan(indptr, indices, n, cols)
    elif not isinstance(plan, StarRecoveryPlan) or plan.n != n:
        raise ValueError("plan does not belong to this pattern")
    if Bv.shape[1] < plan.p:
        raise ValueError(f"B has {Bv.shape[1]} columns, the coloring uses {plan.p} colors")
    out = np.empty(plan.nnz, dtype=np.float64)
    cdef const idx_t[::1] r = plan.src_row
    cdef const idx_t[::1] c = plan.src_col
    cdef const double[:, ::1] bv = Bv
    cdef double[::1] ov = out
    cdef idx_t nnz = plan.nnz
    with nogil:
        _gather_plan_c(nnz, r, c, bv, ov)
    return out


# ================================================================ checks

cdef bint _check_d2_c(idx_t nv, const idx_t[::1] nptr, const idx_t[::1] nverts,
                      const idx_t[::1] color, idx_t[::1] mark) noexcept nogil:
    """Every net's vertices carry distinct, non-negative colors."""
    cdef idx_t i, b, c
    for i in range(mark.shape[0]):
        mark[i] = -1
    for i in range(nptr.shape[0] - 1):
        for b in range(nptr[i], nptr[i + 1]):
            c = color[nverts[b]]
            if c < 0 or mark[c] == i:
                return False
            mark[c] = i
    return True


def check_coloring(indptr, indices, shape, colors, kind):
    """True when ``colors`` is a valid coloring of the pattern.

    kind "column": no row holds two columns of one color (columns with
    nonzeros need a color >= 0); "row": no column holds two rows of one
    color; "star": a star coloring of the symmetric pattern (shape = n or
    (n, n)), i.e. every nonzero is directly recoverable."""
    if kind == "star":
        n = _parse_square(shape)
        ip, ix = _check_csr(indptr, indices, n, n)
        c = _color_array(colors, n, "colors")
        if n and int(c.min()) < 0:
            return False
        mirror, edge, ne = _sym_structure(n, ip, ix)
        # distance-1: adjacent vertices differ
        rows = np.repeat(np.arange(n), np.diff(ip))
        off = rows != ix
        if np.any(c[rows[off]] == c[ix[off]]):
            return False
        try:
            star_recovery_plan(ip, ix, n, c)
        except ValueError:
            return False
        return True
    m, n = _parse_shape(shape)
    ip, ix = _check_csr(indptr, indices, m, n)
    if kind == "column":
        c = _compact(_color_array(colors, n, "colors"))
        mark = np.empty(n, dtype=np.int64)
        return bool(_check_d2_c(n, ip, ix, c, mark))
    if kind == "row":
        c = _compact(_color_array(colors, m, "colors"))
        tp, tx = _transpose(m, n, ip, ix)
        mark = np.empty(m, dtype=np.int64)
        return bool(_check_d2_c(m, tp, tx, c, mark))
    raise ValueError(f"unknown kind {kind!r}; expected 'column', 'row' or 'star'")
