"""fastad._coloring: sparse Jacobian / Hessian coloring and direct recovery.

Every coloring is checked by an independent slow Python implementation of
its definition (written here, not calling the module): column coloring = no
row holds two columns of one color; row coloring = the transpose; star
coloring = distance-1 and no path on four vertices with two colors;
bidirectional = every entry is the only one of its color group where it is
read.  Recovery is checked bitwise against the matrix that made B and C.
"""
import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from fastad import _coloring as col
from conftest import n_colors

ORDERINGS = ("natural", "largest_first", "smallest_last", "incidence_degree")
ALL_ORDERINGS = ORDERINGS + ("best",)


# ---------------------------------------------------------------- patterns

def csr(A):
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    A.sort_indices()
    return A


def tridiagonal(n):
    return csr(sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1],
                        shape=(n, n)))


def five_point(k):
    T = sp.diags([np.ones(k - 1), np.ones(k), np.ones(k - 1)], [-1, 0, 1], shape=(k, k))
    I = sp.eye(k)
    return csr(sp.kron(T, I) + sp.kron(I, T))


def arrowhead(n):
    r = np.concatenate([np.zeros(n, dtype=np.int64), np.arange(1, n), np.arange(1, n)])
    c = np.concatenate([np.arange(n), np.zeros(n - 1, dtype=np.int64), np.arange(1, n)])
    return csr(sp.coo_matrix((np.ones(r.size), (r, c)), shape=(n, n)))


def random_pattern(m, n, density, seed, dense_rows=0, dense_cols=0):
    rng = np.random.default_rng(seed)
    M = rng.random((m, n)) < density
    for i in rng.choice(m, size=min(dense_rows, m), replace=False) if m else []:
        M[i, :] = rng.random(n) < 0.9
    for j in rng.choice(n, size=min(dense_cols, n), replace=False) if n else []:
        M[:, j] = rng.random(m) < 0.9
    return csr(M.astype(np.float64))


def random_symmetric(n, density, seed, diagonal=True):
    rng = np.random.default_rng(seed)
    M = rng.random((n, n)) < density
    M = M | M.T
    np.fill_diagonal(M, diagonal)
    return csr(M.astype(np.float64))


def with_values(P, seed):
    """A matrix with pattern P and random nonzero values."""
    rng = np.random.default_rng(seed)
    J = P.copy().astype(np.float64)
    J.data = rng.uniform(0.5, 2.0, J.nnz) * rng.choice([-1.0, 1.0], J.nnz)
    return J


def args(P):
    return P.indptr, P.indices, P.shape


# ---------------------------------------------------------------- slow checks

def rows_of(P):
    return [list(P.indices[P.indptr[i]:P.indptr[i + 1]]) for i in range(P.shape[0])]


def slow_column_ok(P, colors):
    for row in rows_of(P):
        seen = set()
        for j in row:
            c = int(colors[j])
            if c < 0 or c in seen:
                return False
            seen.add(c)
    return True


def slow_row_ok(P, row_colors):
    return slow_column_ok(csr(P.T), row_colors)


def slow_star_ok(P, colors):
    """Distance-1 coloring with no two-colored path a-b-c-d on 4 vertices."""
    n = P.shape[0]
    adj = [set(r) - {i} for i, r in enumerate(rows_of(P))]
    if any(int(c) < 0 for c in colors):
        return False
    for b in range(n):
        for c in adj[b]:
            if colors[b] == colors[c]:
                return False
    for b in range(n):
        for c in adj[b]:
            for a in adj[b] - {c}:
                if colors[a] != colors[c]:
                    continue
                for d in adj[c] - {b}:
                    if d != a and colors[d] == colors[b]:
                        return False
    return True


def slow_bidirectional_ok(P, cc, rc):
    rows = rows_of(P)
    cols = rows_of(csr(P.T))
    for i, row in enumerate(rows):
        for j in row:
            if rc[i] >= 0:
                if any(r != i and rc[r] == rc[i] for r in cols[j]):
                    return False
            else:
                if cc[j] < 0 or any(l != j and cc[l] == cc[j] for l in row):
                    return False
    return True


# ---------------------------------------------------------------- color counts

@pytest.mark.parametrize("ordering", ALL_ORDERINGS)
def test_tridiagonal_three_colors(ordering):
    P = tridiagonal(1000)
    c = col.color_columns(*args(P), ordering=ordering)
    assert c.dtype == np.int32 and c.shape == (1000,)
    assert n_colors(c) == 3 and slow_column_ok(P, c)
    r = col.color_rows(*args(P), ordering=ordering)
    assert n_colors(r) == 3 and slow_row_ok(P, r)
    s = col.star_color(P.indptr, P.indices, 1000, ordering=ordering)
    assert n_colors(s) == 3 and slow_star_ok(P, s)


def test_five_point_stencil():
    P = five_point(30)
    counts = {o: n_colors(col.color_columns(*args(P), ordering=o)) for o in ALL_ORDERINGS}
    stars = {o: n_colors(col.star_color(P.indptr, P.indices, 900, ordering=o))
             for o in ALL_ORDERINGS}
    print("\n5-point 30x30 column colors:", counts, "star colors:", stars)
    assert counts["best"] == 5                  # optimal: each row has 5 entries
    assert all(v >= 5 for v in counts.values())
    assert stars["best"] <= 5
    for o in ALL_ORDERINGS:
        assert slow_column_ok(P, col.color_columns(*args(P), ordering=o))
        assert slow_star_ok(P, col.star_color(P.indptr, P.indices, 900, ordering=o))


def test_arrowhead_needs_bidirectional():
    n = 1000
    P = arrowhead(n)
    for o in ALL_ORDERINGS:
        assert n_colors(col.color_columns(*args(P), ordering=o)) == n
        assert n_colors(col.color_rows(*args(P), ordering=o)) == n
    cc, rc = col.bicolor(*args(P))
    assert cc.dtype == np.int32 and rc.dtype == np.int32
    assert n_colors(cc) + n_colors(rc) <= 3
    assert rc[0] == 0 and np.all(rc[1:] == -1)   # the dense row goes in reverse
    assert slow_bidirectional_ok(P, cc, rc)
    # the symmetric arrowhead is also cheap for star coloring (hub vertex 0)
    s = col.star_color(P.indptr, P.indices, n)
    assert n_colors(s) == 2 and slow_star_ok(P, s)


def test_dense_and_diagonal():
    D = csr(np.ones((20, 30)))
    assert n_colors(col.color_columns(*args(D))) == 30
    assert n_colors(col.color_rows(*args(D))) == 20
    cc, rc = col.bicolor(*args(D))
    assert n_colors(cc) + n_colors(rc) == 20
    S = csr(np.ones((15, 15)))
    assert n_colors(col.star_color(S.indptr, S.indices, 15)) == 15
    E = csr(sp.eye(50))
    for o in ALL_ORDERINGS:
        assert n_colors(col.color_columns(*args(E), ordering=o)) == 1
        assert n_colors(col.color_rows(*args(E), ordering=o)) == 1
        assert n_colors(col.star_color(E.indptr, E.indices, 50, ordering=o)) == 1
    cc, rc = col.bicolor(*args(E))
    assert n_colors(cc) + n_colors(rc) == 1


def test_empty_rows_and_columns():
    M = np.zeros((6, 7))
    M[0, 1] = M[0, 3] = M[2, 3] = M[2, 5] = M[5, 1] = 1
    P = csr(M)                                   # rows 1, 3, 4 and columns 0, 2, 4, 6 empty
    for o in ALL_ORDERINGS:
        c = col.color_columns(*args(P), ordering=o)
        assert c.shape == (7,) and np.all(c >= 0) and slow_column_ok(P, c)
        assert np.all(c[[0, 2, 4, 6]] == 0)
        r = col.color_rows(*args(P), ordering=o)
        assert r.shape == (6,) and np.all(r >= 0) and slow_row_ok(P, r)
    cc, rc = col.bicolor(*args(P))
    assert slow_bidirectional_ok(P, cc, rc)
    assert np.all(cc[[0, 2, 4, 6]] == -1)
    # all-empty and zero-size patterns
    Z = csr(np.zeros((4, 3)))
    assert np.array_equal(col.color_columns(*args(Z)), np.zeros(3, np.int32))
    assert np.array_equal(col.color_rows(*args(Z)), np.zeros(4, np.int32))
    cc, rc = col.bicolor(*args(Z))
    assert np.all(cc == -1) and np.all(rc == -1)
    assert col.recover_columns(*args(Z), np.zeros(3, int), np.zeros((4, 1))).shape == (0,)
    assert col.color_columns([0], [], (0, 5)).shape == (5,)
    assert col.color_rows([0, 0, 0], [], (2, 0)).shape == (2,)
    assert col.star_color([0], [], 0).shape == (0,)
    assert col.star_color([0, 0, 0], [], 2).tolist() == [0, 0]  # diagonal treated as present


def test_any_integer_dtype():
    P = five_point(6)
    ref = col.color_columns(*args(P))
    for dt in (np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint16, np.uint32,
               np.uint64):
        ipdt = dt if np.iinfo(dt).max >= P.nnz else np.int32   # 156 nonzeros
        c = col.color_columns(P.indptr.astype(ipdt), P.indices.astype(dt), P.shape)
        assert np.array_equal(c, ref)
    c = col.color_columns(P.indptr.tolist(), P.indices.tolist(), list(P.shape))
    assert np.array_equal(c, ref)
    # non-contiguous views are fine too
    ip2 = np.repeat(P.indptr, 2)[::2]
    assert np.array_equal(col.color_columns(ip2, P.indices, P.shape), ref)


# ---------------------------------------------------------------- validity (random)

pattern_params = st.tuples(
    st.integers(0, 24), st.integers(0, 24),
    st.sampled_from([0.02, 0.08, 0.2, 0.5, 0.9]), st.integers(0, 2**31 - 1),
    st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=120, deadline=None)
@given(pattern_params)
def test_random_column_and_row_colorings_valid(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    for o in ALL_ORDERINGS:
        c = col.color_columns(*args(P), ordering=o)
        assert c.shape == (n,) and c.dtype == np.int32
        assert slow_column_ok(P, c)
        assert col.check_coloring(*args(P), c, "column")
        if n:
            assert set(np.unique(c)) == set(range(n_colors(c)))   # 0..p-1, no gaps
        r = col.color_rows(*args(P), ordering=o)
        assert r.shape == (m,) and slow_row_ok(P, r)
        assert col.check_coloring(*args(P), r, "row")


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 28), st.sampled_from([0.03, 0.1, 0.25, 0.6]),
       st.integers(0, 2**31 - 1), st.booleans())
def test_random_star_colorings_valid(n, density, seed, diagonal):
    P = random_symmetric(n, density, seed, diagonal)
    for o in ALL_ORDERINGS:
        s = col.star_color(P.indptr, P.indices, n, ordering=o)
        assert s.shape == (n,) and s.dtype == np.int32
        assert slow_star_ok(P, s)
        assert col.check_coloring(P.indptr, P.indices, n, s, "star")


@settings(max_examples=80, deadline=None)
@given(pattern_params)
def test_random_bicolor_valid(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    cc, rc = col.bicolor(*args(P))
    assert cc.shape == (n,) and rc.shape == (m,)
    assert slow_bidirectional_ok(P, cc, rc)
    total = n_colors(cc) + n_colors(rc)
    assert total <= n_colors(col.color_columns(*args(P)))
    assert total <= n_colors(col.color_rows(*args(P)))
    # columns with no nonzero in a forward row (row color -1) are unseeded
    fwd_cols = set(P.indices[np.repeat(rc < 0, np.diff(P.indptr))].tolist())
    assert all((cc[j] >= 0) == (j in fwd_cols) for j in range(n))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.sampled_from([0.1, 0.3, 0.6]), st.integers(0, 2**31 - 1))
def test_check_coloring_matches_slow_check_on_arbitrary_colors(n, density, seed):
    """check_coloring against the definitions, on colorings that are often
    invalid (random colors from a small palette)."""
    rng = np.random.default_rng(seed)
    P = random_pattern(n, n + 2, density, seed)
    colors = rng.integers(0, 4, n + 2)
    assert col.check_coloring(*args(P), colors, "column") == slow_column_ok(P, colors)
    rcolors = rng.integers(0, 4, n)
    assert col.check_coloring(*args(P), rcolors, "row") == slow_row_ok(P, rcolors)
    S = random_symmetric(n, density, seed, diagonal=bool(seed % 2))
    scolors = rng.integers(0, 4, n)
    assert (col.check_coloring(S.indptr, S.indices, n, scolors, "star")
            == slow_star_ok(S, scolors))


def test_read_only_inputs_and_large_color_values():
    P = five_point(5)
    ip, ix = P.indptr.copy(), P.indices.copy()
    ip.flags.writeable = False
    ix.flags.writeable = False
    c = col.color_columns(ip, ix, P.shape)
    assert slow_column_ok(P, c)
    s = col.star_color(ip, ix, 25)
    B = col.seed_matrix(s)
    B.flags.writeable = False
    assert col.recover_star(ip, ix, 25, s, B).shape == (P.nnz,)
    # colors need not be contiguous for the checks
    big = c.astype(np.int64) * 10**12 + 7
    assert col.check_coloring(ip, ix, P.shape, big, "column")
    assert col.check_coloring(ip, ix, 25, s.astype(np.int64) * 10**12, "star")
    bad = big.copy()
    bad[1] = bad[0]
    assert col.check_coloring(ip, ix, P.shape, bad, "column") == slow_column_ok(P, bad)


def test_check_coloring_basic():
    P = tridiagonal(5)
    assert col.check_coloring(*args(P), [0, 1, 2, 0, 1], "column")
    assert not col.check_coloring(*args(P), [0, 1, 0, 1, 0], "column")
    assert not col.check_coloring(*args(P), [0, 1, -1, 0, 1], "column")
    # 0-1-0-1 along the path is distance-1 but not star
    assert not col.check_coloring(P.indptr, P.indices, 5, [0, 1, 0, 1, 0], "star")
    assert col.check_coloring(P.indptr, P.indices, (5, 5), [0, 1, 0, 2, 0], "star")
    with pytest.raises(ValueError, match="kind"):
        col.check_coloring(*args(P), [0, 1, 2, 0, 1], "diagonal")


# ---------------------------------------------------------------- orderings

@settings(max_examples=60, deadline=None)
@given(pattern_params)
def test_best_never_worse(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    best_c = n_colors(col.color_columns(*args(P), ordering="best"))
    best_r = n_colors(col.color_rows(*args(P), ordering="best"))
    for o in ORDERINGS:
        assert best_c <= n_colors(col.color_columns(*args(P), ordering=o))
        assert best_r <= n_colors(col.color_rows(*args(P), ordering=o))
    S = random_symmetric(max(m, 1), density, seed)
    best_s = n_colors(col.star_color(S.indptr, S.indices, S.shape[0], ordering="best"))
    for o in ORDERINGS:
        assert best_s <= n_colors(col.star_color(S.indptr, S.indices, S.shape[0], ordering=o))


def conflict_graph(P):
    """Column intersection graph as adjacency sets (slow, explicit)."""
    n = P.shape[1]
    adj = [set() for _ in range(n)]
    for row in rows_of(P):
        for j in row:
            adj[j].update(row)
    for j in range(n):
        adj[j].discard(j)
    return adj


@settings(max_examples=80, deadline=None)
@given(pattern_params)
def test_orderings_follow_their_definitions(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    adj = conflict_graph(P)
    deg = [len(a) for a in adj]
    for o in ORDERINGS:
        order = col.column_ordering(*args(P), o)
        assert sorted(order.tolist()) == list(range(n))
    assert col.column_ordering(*args(P), "natural").tolist() == list(range(n))
    lf = col.column_ordering(*args(P), "largest_first").tolist()
    assert [deg[v] for v in lf] == sorted(deg, reverse=True)
    # smallest last: order[k] has minimum degree in the graph of order[:k+1]
    sl = col.column_ordering(*args(P), "smallest_last").tolist()
    for k in range(n):
        alive = set(sl[:k + 1])
        d = {v: len(adj[v] & alive) for v in alive}
        assert d[sl[k]] == min(d.values())
    # incidence degree: order[k] has the most neighbours among order[:k]
    idg = col.column_ordering(*args(P), "incidence_degree").tolist()
    for k in range(n):
        done = set(idg[:k])
        inc = {v: len(adj[v] & done) for v in range(n) if v not in done}
        assert inc[idg[k]] == max(inc.values())
    with pytest.raises(ValueError, match="single ordering"):
        col.column_ordering(*args(P), "best")


def test_orderings_on_structured_patterns():
    """Color counts per ordering (printed with -s); best is the minimum."""
    pats = {"tridiagonal(1000)": tridiagonal(1000), "5-point 30x30": five_point(30),
            "random 200x150": random_pattern(200, 150, 0.03, 7)}
    for name, P in pats.items():
        cols = {o: n_colors(col.color_columns(*args(P), ordering=o)) for o in ALL_ORDERINGS}
        rows = {o: n_colors(col.color_rows(*args(P), ordering=o)) for o in ALL_ORDERINGS}
        print(f"\n{name}: columns {cols}  rows {rows}")
        assert cols["best"] == min(cols.values())
        assert rows["best"] == min(rows.values())
    for name, P in {"tridiagonal(1000)": tridiagonal(1000), "5-point 30x30": five_point(30),
                    "random sym 200": random_symmetric(200, 0.02, 3)}.items():
        stars = {o: n_colors(col.star_color(P.indptr, P.indices, P.shape[0], ordering=o))
                 for o in ALL_ORDERINGS}
        print(f"{name}: star {stars}")
        assert stars["best"] == min(stars.values())
    with pytest.raises(ValueError, match="unknown ordering"):
        col.color_columns(*args(tridiagonal(4)), ordering="random")


# ---------------------------------------------------------------- exact recovery

@settings(max_examples=60, deadline=None)
@given(pattern_params)
def test_recover_columns_and_rows_exact(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    J = with_values(P, seed + 1)
    Jd = J.toarray()
    c = col.color_columns(*args(P))
    S = col.seed_matrix(c)
    assert S.shape == (n, n_colors(c) if n else 0)
    B = Jd @ S
    data = col.recover_columns(*args(P), c, B)
    assert np.array_equal(data, J.data)          # read, never summed: bitwise equal
    rc = col.color_rows(*args(P))
    W = col.seed_matrix(rc)
    C = W.T @ Jd
    assert np.array_equal(col.recover_rows(*args(P), rc, C), J.data)


def test_recover_columns_sparse_product_and_any_B_dtype():
    P = five_point(12)
    J = with_values(P, 3)
    c = col.color_columns(*args(P))
    B = J @ col.seed_matrix(c)                   # sparse @ dense
    out = col.recover_columns(*args(P), c, B)
    assert np.array_equal(out, J.data)
    R = sp.csr_matrix((out, P.indices, P.indptr), shape=P.shape)
    assert (R != J).nnz == 0
    B32 = np.asfortranarray(B.astype(np.float32))
    assert np.array_equal(col.recover_columns(*args(P), c, B32),
                          J.data.astype(np.float32).astype(np.float64))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 28), st.sampled_from([0.03, 0.1, 0.25, 0.6]),
       st.integers(0, 2**31 - 1), st.booleans())
def test_recover_star_exact(n, density, seed, diagonal):
    P = random_symmetric(n, density, seed, diagonal)
    rng = np.random.default_rng(seed)
    Hl = sp.tril(with_values(P, seed + 5), k=-1)
    diag = rng.uniform(1, 2, n)                  # nonzero diagonal even when not stored
    H = (Hl + Hl.T + sp.diags(diag)).toarray()
    colors = col.star_color(P.indptr, P.indices, n)
    B = H @ col.seed_matrix(colors)
    data = col.recover_star(P.indptr, P.indices, n, colors, B)
    expected = H[np.repeat(np.arange(n), np.diff(P.indptr)), P.indices]
    assert np.array_equal(data, expected)
    plan = col.star_recovery_plan(P.indptr, P.indices, n, colors)
    assert np.array_equal(col.recover_star(P.indptr, P.indices, n, colors, B, plan=plan),
                          expected)


def test_recover_star_five_point_and_plan_reuse():
    P = five_point(20)
    n = P.shape[0]
    colors = col.star_color(P.indptr, P.indices, n)
    plan = col.star_recovery_plan(P.indptr, P.indices, n, colors)
    S = col.seed_matrix(colors)
    for seed in range(3):
        Hl = sp.tril(with_values(P, seed))
        H = (Hl + sp.tril(Hl, k=-1).T).toarray()
        got = col.recover_star(P.indptr, P.indices, n, colors, H @ S, plan=plan)
        assert np.array_equal(got, H[np.repeat(np.arange(n), np.diff(P.indptr)), P.indices])
    # a distance-1 coloring that is not a star coloring cannot be recovered
    T = tridiagonal(6)
    with pytest.raises(ValueError, match="not a star coloring"):
        col.star_recovery_plan(T.indptr, T.indices, 6, [0, 1, 0, 1, 0, 1])


@settings(max_examples=80, deadline=None)
@given(pattern_params)
def test_recover_bidirectional_exact(params):
    m, n, density, seed, dr, dc = params
    P = random_pattern(m, n, density, seed, dr, dc)
    J = with_values(P, seed + 2)
    Jd = J.toarray()
    cc, rc = col.bicolor(*args(P))
    B = Jd @ col.seed_matrix(cc)
    C = col.seed_matrix(rc).T @ Jd
    assert np.array_equal(col.recover_bidirectional(*args(P), cc, rc, B, C), J.data)


def test_recover_bidirectional_arrowhead():
    n = 500
    P = arrowhead(n)
    J = with_values(P, 11)
    cc, rc = col.bicolor(*args(P))
    B = J @ col.seed_matrix(cc)
    C = (col.seed_matrix(rc).T @ J.toarray())
    assert B.shape == (n, 2) and C.shape == (1, n)
    assert np.array_equal(col.recover_bidirectional(*args(P), cc, rc, B, C), J.data)
    # pure forward partition: C may be None
    c = col.color_columns(*args(tridiagonal(9)))
    T = with_values(tridiagonal(9), 1)
    out = col.recover_bidirectional(*args(T), c, np.full(9, -1), T @ col.seed_matrix(c), None)
    assert np.array_equal(out, T.data)


def test_seed_matrix():
    S = col.seed_matrix([0, 2, -1, 1])
    assert S.dtype == np.float64 and S.shape == (4, 3)
    assert np.array_equal(S, [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert col.seed_matrix([0, 0], p=3).shape == (2, 3)
    assert col.seed_matrix(np.zeros(0, dtype=np.int32)).shape == (0, 0)
    with pytest.raises(ValueError, match="out of range"):
        col.seed_matrix([0, 3], p=2)
    with pytest.raises(ValueError, match="negative"):
        col.seed_matrix([0, -2])


# ---------------------------------------------------------------- bad input

BAD_PATTERNS = [
    # (indptr, indices, shape, message)
    ([0, 2, 3], [0, 5, 1], (2, 3), "out of range"),
    ([0, 2, 3], [0, -1, 1], (2, 3), "out of range"),
    ([0, 2, 3], [2, 1, 0], (2, 3), "not sorted"),
    ([0, 2, 3], [1, 1, 0], (2, 3), "duplicate"),
    ([0, 2], [0, 1], (2, 3), "indptr has length 2"),
    ([0, 2, 3, 3], [0, 1, 1], (2, 3), "indptr has length 4"),
    ([1, 2, 3], [0, 1, 1], (2, 3), r"indptr\[0\]"),
    ([0, 2, 1], [0, 1, 1], (2, 3), "non-decreasing"),
    ([0, 2, 3], [0, 1], (2, 3), "len\\(indices\\)"),
    ([0, 2, 3], [0.0, 1.0, 1.0], (2, 3), "integer dtype"),
    ([0, 2, 3], [[0, 1, 1]], (2, 3), "1-D"),
    ([0, 2, 3], [0, 1, 1], (2,), "shape"),
    ([0, 2, 3], [0, 1, 1], (2, -3), "non-negative"),
]


@pytest.mark.parametrize("indptr, indices, shape, msg", BAD_PATTERNS)
def test_bad_patterns(indptr, indices, shape, msg):
    with pytest.raises(ValueError, match=msg):
        col.color_columns(indptr, indices, shape)
    with pytest.raises(ValueError, match=msg):
        col.color_rows(indptr, indices, shape)
    with pytest.raises(ValueError, match=msg):
        col.bicolor(indptr, indices, shape)
    with pytest.raises(ValueError, match=msg):
        col.check_coloring(indptr, indices, shape, [0, 1, 2], "column")
    with pytest.raises(ValueError, match=msg):
        col.recover_columns(indptr, indices, shape, [0, 1, 2], np.zeros((2, 3)))


def test_bad_star_input():
    with pytest.raises(ValueError, match="not symmetric"):
        col.star_color([0, 1, 1], [1], 2)        # (0, 1) without (1, 0)
    with pytest.raises(ValueError, match="not symmetric"):
        col.star_color([0, 0, 1], [0], 2)        # (1, 0) without (0, 1)
    with pytest.raises(ValueError, match="not symmetric"):
        col.star_color([0, 2, 3, 4], [1, 2, 0, 1], 3)
    with pytest.raises(ValueError, match="square"):
        col.star_color([0, 0, 0], [], (2, 3))
    with pytest.raises(ValueError, match="out of range"):
        col.star_color([0, 1, 2], [0, 2], 2)


def test_bad_colors_in_recovery():
    P = tridiagonal(4)
    ip, ix, shape = args(P)
    B = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"colors\[2\] = -1 is negative"):
        col.recover_columns(ip, ix, shape, [0, 1, -1, 0], B)
    with pytest.raises(ValueError, match=r"colors\[1\] = 3 is too large"):
        col.recover_columns(ip, ix, shape, [0, 3, 2, 0], B)
    with pytest.raises(ValueError, match="length 3, expected 4"):
        col.recover_columns(ip, ix, shape, [0, 1, 2], B)
    with pytest.raises(ValueError, match="B has 3 rows, expected 4"):
        col.recover_columns(ip, ix, shape, [0, 1, 2, 0], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        col.recover_columns(ip, ix, shape, [0, 1, 2, 0], np.zeros(4))
    with pytest.raises(ValueError, match=r"row_colors\[0\] = -1 is negative"):
        col.recover_rows(ip, ix, shape, [-1, 1, 2, 0], np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"row_colors\[3\] = 5 is too large"):
        col.recover_rows(ip, ix, shape, [0, 1, 2, 5], np.zeros((3, 4)))
    with pytest.raises(ValueError, match="C has 3 columns, expected 4"):
        col.recover_rows(ip, ix, shape, [0, 1, 2, 0], np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"colors\[0\] = -1 is negative"):
        col.recover_star(ip, ix, 4, [-1, 1, 2, 0], B)
    with pytest.raises(ValueError, match=r"colors\[3\] = 3 is too large: B \(n x p\) has p = 3"):
        col.recover_star(ip, ix, 4, [0, 1, 2, 3], B)
    plan = col.star_recovery_plan(ip, ix, 4, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="B has 3 columns, the coloring uses 4"):
        col.recover_star(ip, ix, 4, [0, 1, 2, 3], B, plan=plan)
    with pytest.raises(ValueError, match="plan does not belong"):
        col.recover_star(ip, ix, 5, [0, 1, 2, 3, 0], np.zeros((5, 4)), plan=plan)
    with pytest.raises(ValueError, match=r"col_colors\[1\] = -2 is negative"):
        col.recover_bidirectional(ip, ix, shape, [0, -2, 1, 0], [-1] * 4, B, None)
    with pytest.raises(ValueError, match=r"row_colors\[2\] = 1 is too large"):
        col.recover_bidirectional(ip, ix, shape, [0, 1, 2, 0], [-1, -1, 1, -1], B,
                                  np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"entry \(0, 1\) is in neither seed"):
        col.recover_bidirectional(ip, ix, shape, [0, -1, 2, 0], [-1] * 4, B, None)


# ---------------------------------------------------------------- timing (printed)

def test_timing_report():
    """Times at n ~ 100,000 (printed with -s; never asserted)."""
    def best_of(f, reps=3):
        t = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            r = f()
            t = min(t, time.perf_counter() - t0)
        return r, t * 1e3

    lines = []
    for name, P in [("tridiagonal n=100000", tridiagonal(100_000)),
                    ("5-point 316x316", five_point(316))]:
        ip, ix, shape = args(P)
        n = shape[1]
        for o in ALL_ORDERINGS:
            c, t = best_of(lambda: col.color_columns(ip, ix, shape, o))
            lines.append(f"{name}: color_columns[{o}] {t:.1f} ms, {n_colors(c)} colors")
        for o in ALL_ORDERINGS:
            s, t = best_of(lambda: col.star_color(ip, ix, n, o))
            lines.append(f"{name}: star_color[{o}] {t:.1f} ms, {n_colors(s)} colors")
        c = col.color_columns(ip, ix, shape)
        J = with_values(P, 0)
        B = J @ col.seed_matrix(c)
        out, t = best_of(lambda: col.recover_columns(ip, ix, shape, c, B))
        assert np.array_equal(out, J.data)
        lines.append(f"{name}: recover_columns {t:.2f} ms")
        s = col.star_color(ip, ix, n)
        plan, t = best_of(lambda: col.star_recovery_plan(ip, ix, n, s))
        lines.append(f"{name}: star_recovery_plan {t:.2f} ms")
        Bs = J @ col.seed_matrix(s)
        _, t = best_of(lambda: col.recover_star(ip, ix, n, s, Bs, plan=plan))
        lines.append(f"{name}: recover_star (plan reused) {t:.2f} ms")
        (cc, rc), t = best_of(lambda: col.bicolor(ip, ix, shape))
        lines.append(f"{name}: bicolor {t:.1f} ms, {n_colors(cc)}+{n_colors(rc)} colors")
    P = arrowhead(100_000)
    ip, ix, shape = args(P)
    (cc, rc), t = best_of(lambda: col.bicolor(ip, ix, shape))
    lines.append(f"arrowhead n=100000: bicolor {t:.1f} ms, {n_colors(cc)}+{n_colors(rc)} colors")
    J = with_values(P, 0)
    B = J @ col.seed_matrix(cc)
    C = np.asarray((sp.csr_matrix(col.seed_matrix(rc).T) @ J).todense())
    out, t = best_of(lambda: col.recover_bidirectional(ip, ix, shape, cc, rc, B, C))
    assert np.array_equal(out, J.data)
    lines.append(f"arrowhead n=100000: recover_bidirectional {t:.2f} ms")
    print("\n" + "\n".join(lines))
