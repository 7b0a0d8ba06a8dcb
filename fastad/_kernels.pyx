# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The op table's names and flags, and the small C kernels of array blocks.

The op table as Python sees it (OP_NAMES, OP_FLAGS, FLAG, op_eval and
op_second for one op; fastad._elementwise maps it over arrays) and the
loops that fastad._blocks runs per
block instead of several NumPy passes: scatter-adds, gathers, tangents and
second-order steps combined row by row with strong zeros (fastad._sweeps),
and a sparse Jacobian's fixed gathers.  Nothing here knows the tape.
"""
from libc.math cimport isfinite
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint64_t

import numpy as np
cimport numpy as cnp

from fastad._ops cimport *      # fad_eval, fad_second, fad_map, FAD_*
from fastad._sweeps cimport sz, sz_lanes

cnp.import_array()

# The op table as Python data (str(tape), array blocks, tests)
OP_NAMES = tuple(fad_op_name[i].decode() for i in range(FAD_NUM_OPS))
OP_FLAGS = tuple(fad_op_flags[i] for i in range(FAD_NUM_OPS))
OP_UFUNCS = tuple(fad_op_ufunc[i].decode() for i in range(FAD_NUM_OPS))
# the first partials' C source, per op: (d/dx, d/dy)
OP_PARTIAL_SOURCES = tuple((fad_op_d0_source[i].decode(), fad_op_d1_source[i].decode())
                           for i in range(FAD_NUM_OPS))
# the flag bits of OP_FLAGS, by name (csrc/fastad_ops.h)
FLAG = dict(BINARY=FAD_BINARY, UNARY=FAD_UNARY, HAS_C=FAD_HAS_C, ZD=FAD_ZD, Z00=FAD_Z00,
            Z01=FAD_Z01, Z11=FAD_Z11, CMP=FAD_CMP, BLOCK=FAD_BLOCKF, CP=FAD_CP, COMM=FAD_COMM,
            D0X=FAD_D0X, D0Y=FAD_D0Y, D0V=FAD_D0V, D1X=FAD_D1X, D1Y=FAD_D1Y, D1V=FAD_D1V)
FIRST_CMP = FAD_FIRST_CMP


cdef inline double* _dptr(cnp.ndarray a):
    return <double*>cnp.PyArray_DATA(a)


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


def add_rows(dst, idx, g):
    """dst[idx[i], :] += g[i, :] in order (repeated rows add up): the
    scatter of a gathered operand's adjoints.  NumPy's fancy `+=` takes
    several times longer and np.add.at longer still."""
    cdef double[:, ::1] d = dst
    cdef const Py_ssize_t[::1] ix = np.ascontiguousarray(idx, dtype=np.intp).reshape(-1)
    cdef Py_ssize_t m = ix.shape[0], k = d.shape[1], i, j, r
    cdef const double[:, ::1] gv = np.ascontiguousarray(
        np.broadcast_to(g, (m, k)) if np.ndim(g) < 2 else np.reshape(g, (m, k)), dtype=np.float64)
    for i in range(m):
        if not 0 <= ix[i] < d.shape[0]:
            raise IndexError(f"add_rows: row {ix[i]} outside 0..{d.shape[0] - 1}")
    with nogil:
        for i in range(m):
            r = ix[i]
            for j in range(k):
                d[r, j] += gv[i, j]


def gather_flat(src, idx):
    """src.reshape(-1)[idx] for intp idx: a sparse Jacobian's or Hessian's
    nonzeros read from a sweep buffer (NumPy's take is several times slower)."""
    cdef const double[::1] sv = np.ascontiguousarray(src, dtype=np.float64).reshape(-1)
    cdef const Py_ssize_t[::1] iv = np.ascontiguousarray(idx, dtype=np.intp).reshape(-1)
    cdef Py_ssize_t m = iv.shape[0], size = sv.shape[0], i, j, bad = -1
    out = np.empty(m)
    cdef double[::1] ov = out
    with nogil:
        for i in range(m):
            j = iv[i]
            if <size_t>j >= <size_t>size:
                bad = i
                break
            ov[i] = sv[j]
    if bad >= 0:
        raise IndexError(f"gather_flat: index {iv[bad]} out of range for {size} values")
    return out


cdef class _Terms:
    """The one or two (partial, lanes) terms of combine_rows and
    combine_gather as pointers: a partial is a scalar (c) or one per row
    (dp); lanes are (rows, k), C order.  A missing second term is a zero
    partial over the first term's lanes."""
    cdef const double* dp[2]
    cdef const double* tp[2]
    cdef double c[2]
    cdef Py_ssize_t k
    cdef list keep

    def __cinit__(self, str who, d0, t0, d1, t1, Py_ssize_t rows, str rows_are):
        self.keep = []
        self.k = -1
        cdef Py_ssize_t n, k
        for n in range(2):
            self.dp[n] = NULL
            self.c[n] = 0.0
        for n, (d, t) in enumerate(((d0, t0), (d1, t1))[:1 if t1 is None else 2]):
            ta = np.ascontiguousarray(t, dtype=np.float64)
            k = ta.shape[ta.ndim - 1] if ta.ndim >= 2 else -1
            if k < 0 or ta.size != rows * k or (self.k >= 0 and k != self.k):
                raise ValueError(f"{who}: tangents must be (rows, k), rows as {rows_are}")
            self.k = k
            self.keep.append(ta)
            self.tp[n] = <const double*>cnp.PyArray_DATA(ta)
            if np.ndim(d) == 0:
                self.c[n] = d
            else:
                da = np.ascontiguousarray(d, dtype=np.float64).reshape(-1)
                if da.shape[0] != rows:
                    raise ValueError(f"{who}: one partial per row expected")
                self.keep.append(da)
                self.dp[n] = <const double*>cnp.PyArray_DATA(da)
        if t1 is None:
            self.tp[1] = self.tp[0]


def combine_rows(d0, t0, d1, t1, out):
    """out[i, :] = d0[i] t0[i, :] + d1[i] t1[i, :] in one pass (d a scalar or
    one partial per row; d1, t1 None for one term), with rows_times' strong
    zeros: an element-wise block's tangent from its operands' rows."""
    if out.ndim < 2 or not out.flags.c_contiguous:
        raise ValueError("combine_rows: out must be a C-contiguous (rows, k) array")
    cdef Py_ssize_t rows = out.shape[0], size = out.size, k
    for t in (t0, t1):
        if t is not None and np.size(t) != size:
            raise ValueError("combine_rows: operand and out sizes differ")
    if size == 0:
        return out
    cdef _Terms T = _Terms("combine_rows", d0, t0, d1, t1, rows, "out")
    k = T.k
    cdef double* o = <double*>cnp.PyArray_DATA(out)
    with nogil:
        if k == 1:
            _combine(o, T.dp[0], T.c[0], T.tp[0], T.dp[1], T.c[1], T.tp[1], rows, 1)
        elif k == 2:
            _combine(o, T.dp[0], T.c[0], T.tp[0], T.dp[1], T.c[1], T.tp[1], rows, 2)
        elif k == 3:
            _combine(o, T.dp[0], T.c[0], T.tp[0], T.dp[1], T.c[1], T.tp[1], rows, 3)
        elif k == 4:
            _combine(o, T.dp[0], T.c[0], T.tp[0], T.dp[1], T.c[1], T.tp[1], rows, 4)
        else:
            _combine(o, T.dp[0], T.c[0], T.tp[0], T.dp[1], T.c[1], T.tp[1], rows, k)
    return out


cdef inline void _combine(double* o, const double* d0, double c0, const double* t0,
                          const double* d1, double c1, const double* t1,
                          Py_ssize_t rows, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows):
        sz_lanes(o + i * k, d0[i] if d0 != NULL else c0, t0 + i * k,
               d1[i] if d1 != NULL else c1, t1 + i * k, k)


def combine_gather(d0, t0, d1, t1, indptr, lanes):
    """combine_rows, read straight at a sparse Jacobian's nonzeros instead
    of written out: data[p] = d0[i] t0[i, lanes[p]] + d1[i] t1[i, lanes[p]]
    for p in indptr[i] .. indptr[i+1]-1 (row i of the Jacobian is row i of
    the block), with the same strong zeros."""
    cdef const int64_t[::1] ip = np.ascontiguousarray(indptr, dtype=np.int64)
    cdef const int32_t[::1] ln = np.ascontiguousarray(lanes, dtype=np.int32)
    cdef Py_ssize_t rows = ip.shape[0] - 1, i, p, k
    cdef _Terms T = _Terms("combine_gather", d0, t0, d1, t1, rows, "indptr")
    k = T.k
    if rows < 0 or ln.shape[0] != (ip[rows] if rows > 0 else 0):
        raise ValueError("combine_gather: one lane per nonzero expected")
    for p in range(ln.shape[0]):
        if not 0 <= ln[p] < k:
            raise ValueError(f"combine_gather: lane {ln[p]} out of range for {k} lanes")
    out = np.empty(ln.shape[0])
    cdef double* o = <double*>cnp.PyArray_DATA(out)
    cdef const double* d0p = T.dp[0]
    cdef const double* d1p = T.dp[1]
    cdef const double* t0p = T.tp[0]
    cdef const double* t1p = T.tp[1]
    cdef double c0 = T.c[0], c1 = T.c[1], a, b
    cdef Py_ssize_t lane
    with nogil:
        for i in range(rows):
            a = d0p[i] if d0p != NULL else c0
            b = d1p[i] if d1p != NULL else c1
            if a != 0.0 and b != 0.0 and isfinite(a) and isfinite(b):
                for p in range(ip[i], ip[i + 1]):
                    lane = i * k + ln[p]
                    o[p] = a * t0p[lane] + b * t1p[lane]
            else:
                for p in range(ip[i], ip[i + 1]):
                    lane = i * k + ln[p]
                    sz_lanes(&o[p], a, t0p + lane, b, t1p + lane, 1)
    return out


cdef const double* _rows_of(object v, Py_ssize_t n, list keep, Py_ssize_t* stride,
                            double* box, str who) except? NULL:
    """A partial as a pointer: one per row (stride 1) or a scalar (stride 0)."""
    if np.ndim(v) == 0:
        box[0] = v
        stride[0] = 0
        return box
    a = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"{who} has {a.shape[0]} rows, not {n}")
    keep.append(a)
    stride[0] = 1
    return <const double*>cnp.PyArray_DATA(a)


cdef class FixedGather:
    """A sparse Jacobian's nonzeros read from a last block whose operands'
    tangents the seeds alone decide (see TangentFold.fuse_output): their
    values at the nonzeros are kept, so a call is

        data = base;  data[pos[q]] += (prod of the term's factors)[rows[q]] * g[q]

    for each term whose partial changes (the constant ones are in base).
    The index arrays are checked once here, the calls run unchecked; the
    first term is merged into the copy of base (one pass over the result)."""
    cdef readonly object base
    cdef list terms                # (pos int32 ascending, rows int32 or None: q, g or None: 1)
    cdef readonly Py_ssize_t n_rows

    def __init__(self, base, terms, Py_ssize_t n_rows):
        self.base = np.array(base, dtype=np.float64).reshape(-1)
        self.n_rows = n_rows
        self.terms = []
        cdef Py_ssize_t size = self.base.shape[0]
        for pos, rows, g in terms:
            pos = np.array(pos, dtype=np.int32).reshape(-1)
            rows = np.array(rows, dtype=np.int32).reshape(-1)
            m = pos.shape[0]
            if rows.shape[0] != m or (g is not None and np.size(g) != m):
                raise ValueError("FixedGather: pos, rows and g need one entry per nonzero")
            if m and (pos[0] < 0 or pos[m - 1] >= size or (m > 1 and (np.diff(pos) <= 0).any())):
                raise IndexError(f"FixedGather: positions must ascend within 0..{size - 1}")
            if m and (rows.min() < 0 or rows.max() >= n_rows):
                raise IndexError(f"FixedGather: a row is out of range for {n_rows} rows")
            if m == n_rows and (rows == np.arange(m, dtype=np.int32)).all():
                rows = None
            self.terms.append((pos, rows, None if g is None else
                               np.array(g, dtype=np.float64).reshape(-1)))

    def __call__(self, factors):
        """factors: per term, its partials innermost first, each a scalar or
        one per row.  Each nonzero's kept tangent g is multiplied by them in
        that order, as a sweep multiplies a chain, and a zero factor (or
        product) passes nothing even against an inf or NaN one."""
        if len(factors) != len(self.terms):
            raise ValueError(f"FixedGather: {len(self.terms)} terms, {len(factors)} given")
        out = np.empty_like(self.base)
        cdef double* o = <double*>cnp.PyArray_DATA(out)
        cdef const double* b = <const double*>cnp.PyArray_DATA(self.base)
        cdef Py_ssize_t size = self.base.shape[0], done = 0, t = 0
        cdef const int32_t* pp
        cdef const int32_t* rp
        cdef const double* gp
        cdef const double* fp[8]           # a partial per row, or &fc[f] with stride 0
        cdef double fc[8]
        cdef Py_ssize_t st[8]
        cdef Py_ssize_t nf, q, m, f, r, p
        cdef double a
        for (pos, rows, g), fs in zip(self.terms, factors):
            if len(fs) > 8:
                raise ValueError("FixedGather: at most 8 partials per term")
            nf, keep = 0, []
            for d in fs:
                if np.ndim(d) == 0 and d == 1.0:     # x * 1 is x, even for inf and NaN
                    continue
                fp[nf] = _rows_of(d, self.n_rows, keep, &st[nf], &fc[nf], "FixedGather: a partial")
                nf += 1
            m = (<cnp.ndarray>pos).shape[0]
            pp = <const int32_t*>cnp.PyArray_DATA(pos)
            rp = NULL if rows is None else <const int32_t*>cnp.PyArray_DATA(rows)
            gp = NULL if g is None else <const double*>cnp.PyArray_DATA(g)
            with nogil:
                for q in range(m):
                    p = pp[q]
                    if t == 0:                   # copy base up to here (first term only)
                        if p - done > 32:
                            memcpy(o + done, b + done, (p - done) * sizeof(double))
                        else:                    # short gaps: no call per position
                            while done < p:
                                o[done] = b[done]
                                done += 1
                        o[p] = b[p]
                        done = p + 1
                    r = q if rp == NULL else rp[q]
                    a = 1.0 if gp == NULL else gp[q]
                    for f in range(nf):
                        a = sz(a, fp[f][r * st[f]])
                        if a == 0.0:
                            break
                    if a != 0.0:
                        o[p] += a
                if t == 0 and done < size:       # the rest of base, before other terms add in
                    memcpy(o + done, b + done, (size - done) * sizeof(double))
                    done = size
            t += 1
        if done < size:
            memcpy(o + done, b + done, (size - done) * sizeof(double))
        return out


def second_rows(d, a, tx, b, ty, g, gd, adj_rows, adt_rows):
    """One operand's share of an element-wise block's forward-over-reverse
    step, in one pass over its n rows and k lanes:

        adj_rows[i]    += d[i] g[i]
        adt_rows[i, :] += d[i] gd[i, :] + g[i] (a[i] tx[i, :] + b[i] ty[i, :])

    d, a, b: partial, and second partials against this operand's and the
    other operand's tangents, each a scalar or one per row (a, b may be
    None: 0); tx, ty: (n, k) tangents or None; g: (n,) adjoint; gd: (n, k)
    adjoint tangents.  Every product is an exact zero where a factor is
    zero (strong zeros), as in the sweeps.  adj_rows (n, 1) and adt_rows
    (n, k) must be C-contiguous float64 arrays."""
    if not (isinstance(adj_rows, np.ndarray) and isinstance(adt_rows, np.ndarray)
            and adj_rows.dtype == np.float64 and adt_rows.dtype == np.float64
            and adj_rows.flags.c_contiguous and adt_rows.flags.c_contiguous):
        raise ValueError("second_rows: adj_rows and adt_rows must be C-contiguous float64")
    cdef Py_ssize_t n = adj_rows.size, k = adt_rows.size // n if n else 0, i, j
    if adt_rows.size != n * k or (n and k == 0):
        raise ValueError("second_rows: adt_rows must be (n, k) for n adjoint rows")
    keep = []
    cdef Py_ssize_t sd, sa, sb, sg, sx, sy, sgd
    cdef double bd, ba, bb, bg, bx, by, bgd
    cdef const double* dp = _rows_of(d, n, keep, &sd, &bd, "second_rows: d")
    cdef const double* ap = _rows_of(0.0 if a is None else a, n, keep, &sa, &ba, "second_rows: a")
    cdef const double* bp = _rows_of(0.0 if b is None else b, n, keep, &sb, &bb, "second_rows: b")
    cdef const double* gp = _rows_of(g, n, keep, &sg, &bg, "second_rows: g")
    cdef const double* gdp = _rows_of(gd, n * k, keep, &sgd, &bgd, "second_rows: gd")
    cdef const double* xp = NULL
    cdef const double* yp = NULL
    if tx is not None and a is not None:
        xp = _rows_of(tx, n * k, keep, &sx, &bx, "second_rows: tx")
    if ty is not None and b is not None:
        yp = _rows_of(ty, n * k, keep, &sy, &by, "second_rows: ty")
    cdef double* jo = <double*>cnp.PyArray_DATA(adj_rows)
    cdef double* to = <double*>cnp.PyArray_DATA(adt_rows)
    cdef double di, gi, ai, bi, c, cx, cy
    with nogil:
        for i in range(n):
            di = dp[i * sd]
            gi = gp[i * sg]
            ai = ap[i * sa]
            bi = bp[i * sb]
            jo[i] += sz(di, gi)
            for j in range(k):
                c = sz(di, gdp[(i * k + j) * sgd])
                if gi != 0.0 and (xp != NULL or yp != NULL):
                    cx = sz(ai, xp[(i * k + j) * sx]) if xp != NULL else 0.0
                    cy = sz(bi, yp[(i * k + j) * sy]) if yp != NULL else 0.0
                    c = c + sz(gi, cx + cy)
                to[i * k + j] += c
    return None


def rows_times(d, t, out=None, bint accumulate=False, double scale=1.0):
    """out[i, :] (+)= (scale d[i]) * t[i, :] for t of d's size times k lanes:
    a partial times k tangents or cotangents, where NumPy's d[..., None] * t
    runs an inner loop of length k (scale: a square's 2x without an array
    for it).  A zero lane stays an exact zero where the partial is inf or
    NaN (strong zeros).  Returns out, shaped like t."""
    cdef const double[::1] dv = np.ascontiguousarray(d, dtype=np.float64).reshape(-1)
    cdef Py_ssize_t m = dv.shape[0]
    ta = np.ascontiguousarray(t, dtype=np.float64)
    if m == 0 and ta.size == 0:             # an empty block
        return np.empty(ta.shape) if out is None else out
    if m == 0 or ta.size % m:
        raise ValueError(f"rows_times: {ta.size} lanes for {m} partials")
    cdef Py_ssize_t k = ta.size // m, i, j
    cdef const double[::1] tv = ta.reshape(-1)
    if out is None:
        out = np.empty(ta.shape)
        accumulate = False
    elif not out.flags.c_contiguous or out.size != ta.size:
        raise ValueError("rows_times: out must be C-contiguous and as large as t")
    cdef double[::1] ov = out.reshape(-1)
    cdef double di
    with nogil:
        for i in range(m):
            di = scale * dv[i]
            if di == 0.0:                   # a zero partial is an exact zero
                if not accumulate:
                    for j in range(k):
                        ov[i * k + j] = 0.0
            elif isfinite(di):
                if accumulate:
                    for j in range(k):
                        ov[i * k + j] += di * tv[i * k + j]
                else:
                    for j in range(k):
                        ov[i * k + j] = di * tv[i * k + j]
            else:
                for j in range(k):
                    if tv[i * k + j] != 0.0:
                        if accumulate:
                            ov[i * k + j] += di * tv[i * k + j]
                        else:
                            ov[i * k + j] = di * tv[i * k + j]
                    elif not accumulate:
                        ov[i * k + j] = 0.0
    return out


cdef class SparseMatvec:
    """Products with a sparse matrix of one pattern (CSR indptr, indices,
    shape) and changing values: an optimizer's Hessian, formed at each
    iterate by star coloring and multiplied by CG several times there.  The
    pattern is checked once; a product checks sizes only (a scipy csr @ v
    spends several microseconds in Python per call, and building the csr
    at each iterate more)."""
    cdef const int64_t[::1] ip
    cdef const int64_t[::1] ix
    cdef readonly Py_ssize_t n_rows, n_cols, nnz

    def __init__(self, indptr, indices, shape):
        ip = np.ascontiguousarray(indptr, dtype=np.int64)
        ix = np.ascontiguousarray(indices, dtype=np.int64)
        m, n = (int(s) for s in shape)
        if ip.ndim != 1 or ix.ndim != 1 or m < 0 or n < 0 or ip.shape[0] != m + 1:
            raise ValueError(f"SparseMatvec: indptr must have {m + 1} entries for "
                             f"{m} rows, got shape {ip.shape}")
        if ip[0] != 0 or ip[m] != ix.shape[0] or (m and np.any(ip[1:] < ip[:-1])):
            raise ValueError("SparseMatvec: indptr must rise from 0 to the number of indices")
        if ix.shape[0] and (ix.min() < 0 or ix.max() >= n):
            raise ValueError(f"SparseMatvec: a column index lies outside 0..{n - 1}")
        self.ip, self.ix = ip, ix
        self.n_rows, self.n_cols, self.nnz = m, n, ix.shape[0]

    def matvec(self, data, v):
        """A v for the matrix with these nonzeros (data, in the pattern's order)."""
        cdef const double[::1] dv = np.ascontiguousarray(data, dtype=np.float64).reshape(-1)
        cdef const double[::1] vv = np.ascontiguousarray(v, dtype=np.float64).reshape(-1)
        if dv.shape[0] != self.nnz or vv.shape[0] != self.n_cols:
            raise ValueError(f"SparseMatvec: {dv.shape[0]} values and a vector of "
                             f"{vv.shape[0]} for {self.nnz} nonzeros and {self.n_cols} columns")
        out = np.empty(self.n_rows)
        cdef double[::1] ov = out
        cdef Py_ssize_t i, p
        cdef double s
        with nogil:
            for i in range(self.n_rows):
                s = 0.0
                for p in range(self.ip[i], self.ip[i + 1]):
                    s = s + dv[p] * vv[self.ix[p]]
                ov[i] = s
        return out


def cg_step(double[::1] z, double[::1] r, const double[::1] d, const double[::1] hd,
            double alpha):
    """z += alpha d and r += alpha hd in one pass; returns r . r (a CG step's
    vector work: NumPy takes four passes and two temporaries)."""
    cdef Py_ssize_t i, n = z.shape[0]
    if r.shape[0] != n or d.shape[0] != n or hd.shape[0] != n:
        raise ValueError("cg_step: the vectors differ in length")
    cdef double rr = 0.0
    with nogil:
        for i in range(n):
            z[i] += alpha * d[i]
            r[i] += alpha * hd[i]
            rr += r[i] * r[i]
    return rr


def cg_direction(double[::1] d, const double[::1] r, double beta):
    """d = beta d - r in place (CG's next direction)."""
    cdef Py_ssize_t i, n = d.shape[0]
    if r.shape[0] != n:
        raise ValueError("cg_direction: the vectors differ in length")
    with nogil:
        for i in range(n):
            d[i] = beta * d[i] - r[i]


cdef extern from *:
    """
    #define FAD_EXP_BITS 0x7FF0000000000000ULL
    #define FAD_EXP_ONE  0x0010000000000000ULL
    """
    const uint64_t FAD_EXP_BITS
    const uint64_t FAD_EXP_ONE


cdef uint64_t _non_finite(const uint64_t* q, Py_ssize_t n) noexcept nogil:
    """Nonzero when some double of q[0:n] is inf or NaN (every exponent bit set)."""
    # (q & EXP) + 2**52 carries into the sign bit exactly when every exponent
    # bit is set: an and, an add and an or per element, which the vectorizer
    # takes at SSE2 (a compare of 64-bit lanes needs SSE4.1); four
    # accumulators, four independent chains
    cdef uint64_t b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef Py_ssize_t i, m = n - n % 4
    for i in range(0, m, 4):
        b0 |= (q[i] & FAD_EXP_BITS) + FAD_EXP_ONE
        b1 |= (q[i + 1] & FAD_EXP_BITS) + FAD_EXP_ONE
        b2 |= (q[i + 2] & FAD_EXP_BITS) + FAD_EXP_ONE
        b3 |= (q[i + 3] & FAD_EXP_BITS) + FAD_EXP_ONE
    for i in range(m, n):
        b0 |= (q[i] & FAD_EXP_BITS) + FAD_EXP_ONE
    return (b0 | b1 | b2 | b3) >> 63


def all_finite(a):
    """True when every element of a float64 array is finite.  One C pass over
    a contiguous array, C or Fortran order (measured: a third of NumPy's
    call on 4096 elements, 0.85x its sum on 157k); NumPy's sum for other
    layouts, where False may also mean that a finite sum overflowed (the
    callers' exact path then decides)."""
    cdef const uint64_t* q
    cdef Py_ssize_t n
    cdef uint64_t bad
    if type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE and \
            (cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a) or cnp.PyArray_IS_F_CONTIGUOUS(<cnp.ndarray>a)) \
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):
        # (one block of memory either way: a transposed factor, W.T, too)
        q = <const uint64_t*>cnp.PyArray_DATA(<cnp.ndarray>a)
        n = cnp.PyArray_SIZE(<cnp.ndarray>a)
        if n < 65536:
            return _non_finite(q, n) == 0
        with nogil:
            bad = _non_finite(q, n)
        return bad == 0
    return bool(np.isfinite(np.add.reduce(a, axis=None)))


def rows_view(cnp.ndarray base not None, Py_ssize_t start, tuple shape):
    """base[start:start + n].reshape(shape) for a C-contiguous float64 base
    of rows (1-D, or (rows, k): then shape counts the lanes too), made in
    one step in C: slicing and reshaping make two views through NumPy's
    Python-level calls, a cost blocks pay on every operand."""
    cdef Py_ssize_t i, nd = len(shape), size = 1, row = 1
    cdef cnp.npy_intp dims[8]
    if nd > 8 or cnp.PyArray_TYPE(base) != cnp.NPY_DOUBLE or \
            not cnp.PyArray_IS_C_CONTIGUOUS(base) or cnp.PyArray_NDIM(base) < 1:
        return _rows_view_py(base, start, shape)
    for i in range(nd):
        dims[i] = shape[i]
        if dims[i] < 0:
            return _rows_view_py(base, start, shape)
        size *= dims[i]
    for i in range(1, cnp.PyArray_NDIM(base)):
        row *= cnp.PyArray_DIMS(base)[i]
    if row == 0 or size % row or start < 0 or start + size // row > cnp.PyArray_DIMS(base)[0]:
        return _rows_view_py(base, start, shape)
    cdef cnp.ndarray out = cnp.PyArray_SimpleNewFromData(
        <int>nd, dims, cnp.NPY_DOUBLE, <double*>cnp.PyArray_DATA(base) + start * row)
    cnp.set_array_base(out, base)
    if not cnp.PyArray_ISWRITEABLE(base):
        cnp.PyArray_CLEARFLAGS(out, cnp.NPY_ARRAY_WRITEABLE)
    return out


def _rows_view_py(base, start, shape):
    rows = 1
    for n in shape:
        rows *= n
    row = 1
    for n in base.shape[1:]:
        row *= n
    return base[start:start + (rows // row if row else 0)].reshape(shape)


def broadcast_view(g, tuple shape):
    """A read-only view of g (C-contiguous float64, as many axes as shape)
    broadcast to shape (stride 0 along its axes of length 1), made in C; None
    where g is not such an array (the caller goes through NumPy)."""
    cdef Py_ssize_t i, nd = len(shape)
    cdef cnp.npy_intp dims[8]
    cdef cnp.npy_intp strides[8]
    if type(g) is not cnp.ndarray or nd > 8 or cnp.PyArray_NDIM(<cnp.ndarray>g) != nd or \
            cnp.PyArray_TYPE(<cnp.ndarray>g) != cnp.NPY_DOUBLE or \
            not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>g) or \
            not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>g):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>g
    for i in range(nd):
        dims[i] = shape[i]
        if cnp.PyArray_DIMS(a)[i] == dims[i]:
            strides[i] = cnp.PyArray_STRIDES(a)[i]
        elif cnp.PyArray_DIMS(a)[i] == 1:
            strides[i] = 0
        else:
            return None
    cdef cnp.ndarray out = cnp.PyArray_New(cnp.ndarray, <int>nd, dims, cnp.NPY_DOUBLE, strides,
                                           cnp.PyArray_DATA(a), 0, 0, None)
    cnp.set_array_base(out, a)
    return out
