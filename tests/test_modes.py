"""Forward, reverse and auto modes: Jacobians, jvp/vjp, k directions/seeds, shapes.

Every Jacobian is checked against an independent answer: a Jacobian written
out by hand, and/or central finite differences of a pure-NumPy twin of the
function (the functions below take the math module as a parameter, so the
same source runs on fastad Vars and on plain NumPy floats).

A docstring that starts with BUG describes the bug its test was written
against (fixed since: the test asserts the correct behaviour).
"""
import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_jacobian, random_points

MODES = ["fwd", "rev", "auto"]


# ---------------------------------------------------------------------------
# small maps with hand-written Jacobians
# ---------------------------------------------------------------------------

def polar(x, m=fad):
    r, th = x[0], x[1]
    return [r * m.cos(th), r * m.sin(th)]


def polar_jac(x):
    r, th = x
    return np.array([[np.cos(th), -r * np.sin(th)],
                     [np.sin(th), r * np.cos(th)]])


def map32(x, m=fad):
    """R^2 -> R^3."""
    x0, x1 = x[0], x[1]
    return [x0 * x1, m.sin(x0) * m.exp(x1), x0 ** 2 + m.tanh(x1)]


def map32_jac(x):
    x0, x1 = x
    return np.array([[x1, x0],
                     [np.cos(x0) * np.exp(x1), np.sin(x0) * np.exp(x1)],
                     [2 * x0, 1.0 - np.tanh(x1) ** 2]])


def map23(x, m=fad):
    """R^3 -> R^2."""
    x0, x1, x2 = x[0], x[1], x[2]
    return [x0 * x1 * x2, m.exp(x0) + m.sin(x1 * x2)]


def map23_jac(x):
    x0, x1, x2 = x
    c = np.cos(x1 * x2)
    return np.array([[x1 * x2, x0 * x2, x0 * x1],
                     [np.exp(x0), x2 * c, x1 * c]])


SMALL = {
    "polar": (polar, polar_jac, [[1.5, 0.3], [0.7, -2.1], [2.0, 3.0], [0.4, 1.1]]),
    "map32": (map32, map32_jac, [[0.7, -1.3], [2.0, 0.4], [-0.5, 1.1], [1.2, 0.0]]),
    "map23": (map23, map23_jac, [[0.3, -0.8, 1.7], [1.1, 0.5, -0.2], [-1.0, 2.0, 0.6],
                                 [0.2, 0.9, 1.4]]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_jacobian_fad_jacobian(name, mode):
    f, jac, points = SMALL[name]
    for p in points:
        x = np.array(p)
        J = fad.jacobian(f, mode=mode)(x)
        expected = jac(x)
        assert J.shape == expected.shape
        close(J, expected)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_jacobian_jacfwd_jacrev_default(name):
    f, jac, points = SMALL[name]
    for p in points:
        x = np.array(p)
        expected = jac(x)
        close(fad.jacfwd(f)(x), expected)
        close(fad.jacrev(f)(x), expected)
        close(fad.jacobian(f)(x), expected)   # mode="auto" by default


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_jacobian_tape_replay(name, mode):
    f, jac, points = SMALL[name]
    tape = fad.record(f, np.array(points[0]))
    for p in points[1:] + points[:1]:
        x = np.array(p)
        close(tape.jacobian(x, mode=mode), jac(x))
        close(tape.jacobian(x), jac(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_jacobian_matches_finite_differences(name):
    f, jac, points = SMALL[name]
    f_np = lambda x: np.asarray(f(x, m=np))  # noqa: E731
    for p in points:
        x = np.array(p)
        fd = fd_jacobian(f_np, x)
        close(jac(x), fd, rtol=1e-6, atol=1e-7)    # the hand-written Jacobian itself
        for mode in MODES:
            close(fad.jacobian(f, mode=mode)(x), fd, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# tall (n=10 -> m=40) and wide (n=40 -> m=10) functions
# ---------------------------------------------------------------------------

_rng = np.random.default_rng(20240611)
A_TALL = _rng.standard_normal((40, 10)) / 3.0
B_WIDE = _rng.standard_normal((10, 40)) / 6.0
A_ROWS = A_TALL.tolist()
B_ROWS = B_WIDE.tolist()


def tall(x, m=fad):
    """y_i = sin(A_i . x) x[i % 10] + 0.1 x[(i + 3) % 10]^2,  i < 40."""
    n = 10
    out = []
    for i in range(40):
        s = x[0] * A_ROWS[i][0]
        for j in range(1, n):
            s = s + x[j] * A_ROWS[i][j]
        out.append(m.sin(s) * x[i % n] + 0.1 * x[(i + 3) % n] ** 2)
    return out


def tall_jac(x):
    n = 10
    s = A_TALL @ x
    J = np.cos(s)[:, None] * A_TALL * np.array([x[i % n] for i in range(40)])[:, None]
    for i in range(40):
        J[i, i % n] += np.sin(s[i])
        J[i, (i + 3) % n] += 0.2 * x[(i + 3) % n]
    return J


def wide(x, m=fad):
    """y_i = exp(0.1 B_i . x) + x[i] x[i + 30],  i < 10."""
    out = []
    for i in range(10):
        s = x[0] * B_ROWS[i][0]
        for j in range(1, 40):
            s = s + x[j] * B_ROWS[i][j]
        out.append(m.exp(0.1 * s) + x[i] * x[i + 30])
    return out


def wide_jac(x):
    s = B_WIDE @ x
    J = 0.1 * np.exp(0.1 * s)[:, None] * B_WIDE
    for i in range(10):
        J[i, i] += x[i + 30]
        J[i, i + 30] += x[i]
    return J


BIG = {"tall": (tall, tall_jac, 10, 40), "wide": (wide, wide_jac, 40, 10)}


@pytest.mark.parametrize("name", sorted(BIG))
def test_tall_wide_fwd_equals_rev_equals_fd(name):
    f, jac, n, m = BIG[name]
    f_np = lambda x: np.asarray(f(x, m=np))  # noqa: E731
    for x in random_points(n, 3, 1):
        Jf = fad.jacfwd(f)(x)
        Jr = fad.jacrev(f)(x)
        Ja = fad.jacobian(f)(x)
        assert Jf.shape == Jr.shape == Ja.shape == (m, n)
        close(Jf, Jr)
        close(Ja, Jf)
        close(Jf, jac(x))
        fd = fd_jacobian(f_np, x)
        close(Jf, fd, rtol=1e-6, atol=1e-7)
        close(Jr, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(BIG))
def test_tall_wide_replayed_modes_agree(name):
    f, jac, n, m = BIG[name]
    pts = random_points(n, 5, 2)
    tape = fad.record(f, pts[0])
    assert tape.n_inputs == n and tape.n_outputs == m
    for x in pts[1:]:
        expected = jac(x)
        for mode in MODES:
            close(tape.jacobian(x, mode=mode), expected)


def test_chunked_reverse_many_outputs():
    """300 outputs: the reverse-mode Jacobian needs several seed chunks."""
    c = [0.01 * (i + 1) for i in range(300)]

    def f(x):
        return [x[0] * fad.sin(ci * x[1]) + ci * x[2] ** 2 for ci in c]

    def jac(x):
        ca = np.array(c)
        return np.stack([np.sin(ca * x[1]), x[0] * ca * np.cos(ca * x[1]),
                         2 * x[2] * ca], axis=1)

    x = np.array([0.8, -1.7, 0.6])
    for mode in MODES:
        close(fad.jacobian(f, mode=mode)(x), jac(x))
    y, pb = fad.vjp(f, x)
    close(pb(np.eye(300)), jac(x))
    x2 = np.array([-0.4, 2.2, 1.3])
    tape = fad.record(f, x)
    close(tape.jacobian(x2, mode="rev"), jac(x2))
    close(tape.vjp(x2, np.eye(300)), jac(x2))


def test_chunked_forward_many_inputs():
    """300 inputs: the forward-mode Jacobian needs several direction chunks."""
    c = [0.5 + 0.01 * j for j in range(300)]

    def f(x):
        a = x[0] * x[0] * c[0]
        b = fad.sin(x[0])
        for j in range(1, 300):
            a = a + x[j] * x[j] * c[j]
            b = b + fad.sin(x[j])
        return [a, b]

    def jac(x):
        return np.stack([2 * np.array(c) * x, np.cos(x)])

    x = np.random.default_rng(3).uniform(-2, 2, 300)
    for mode in MODES:
        close(fad.jacobian(f, mode=mode)(x), jac(x))
    y, Jt = fad.jvp(f, x, np.eye(300))
    close(Jt, jac(x).T)
    x2 = np.random.default_rng(4).uniform(-2, 2, 300)
    tape = fad.record(f, x)
    close(tape.jacobian(x2, mode="fwd"), jac(x2))
    close(tape.jvp(x2, np.eye(300)), jac(x2).T)


# ---------------------------------------------------------------------------
# jvp / vjp: duality, k directions and k seeds, identity seeds
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BIG))
def test_duality_u_Jv_equals_uJ_v(name):
    f, jac, n, m = BIG[name]
    rng = np.random.default_rng(5)
    for x in random_points(n, 4, 6):
        u = rng.standard_normal(m)
        v = rng.standard_normal(n)
        y1, Jv = fad.jvp(f, x, v)
        y2, pb = fad.vjp(f, x)
        uJ = pb(u)
        assert Jv.shape == (m,) and uJ.shape == (n,)
        close(y1, np.asarray(f(x, m=np)))
        close(y2, np.asarray(f(x, m=np)))
        lhs, rhs = float(np.dot(u, Jv)), float(np.dot(uJ, v))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
        close(Jv, jac(x) @ v)
        close(uJ, u @ jac(x))


@pytest.mark.parametrize("name", sorted(BIG))
def test_duality_replayed(name):
    f, jac, n, m = BIG[name]
    rng = np.random.default_rng(7)
    pts = random_points(n, 4, 8)
    tape = fad.record(f, pts[0])
    for x in pts[1:]:
        u = rng.standard_normal(m)
        v = rng.standard_normal(n)
        Jv = tape.jvp(x, v)
        uJ = tape.vjp(x, u)
        lhs, rhs = float(np.dot(u, Jv)), float(np.dot(uJ, v))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
        close(Jv, jac(x) @ v)
        close(uJ, u @ jac(x))


@pytest.mark.parametrize("name", sorted(BIG))
def test_k_direction_jvp_equals_k_single_jvps(name):
    f, jac, n, m = BIG[name]
    x = random_points(n, 1, 9)[0]
    V = np.random.default_rng(10).standard_normal((5, n))
    y, JV = fad.jvp(f, x, V)
    assert JV.shape == (5, m)
    singles = np.stack([fad.jvp(f, x, V[k])[1] for k in range(5)])
    close(JV, singles)
    close(JV, V @ jac(x).T)
    # replayed at another point
    x2 = random_points(n, 1, 11)[0]
    tape = fad.record(f, x)
    JV2 = tape.jvp(x2, V)
    assert JV2.shape == (5, m)
    close(JV2, np.stack([tape.jvp(x2, V[k]) for k in range(5)]))
    close(JV2, V @ jac(x2).T)


@pytest.mark.parametrize("name", sorted(BIG))
def test_k_seed_vjp_equals_k_single_vjps(name):
    f, jac, n, m = BIG[name]
    x = random_points(n, 1, 12)[0]
    U = np.random.default_rng(13).standard_normal((6, m))
    y, pb = fad.vjp(f, x)
    UJ = pb(U)
    assert UJ.shape == (6, n)
    close(UJ, np.stack([pb(U[k]) for k in range(6)]))
    close(UJ, U @ jac(x))
    # the pullback is reusable: calling it again gives the same numbers
    close(pb(U), UJ, rtol=0, atol=0)
    x2 = random_points(n, 1, 14)[0]
    tape = fad.record(f, x)
    UJ2 = tape.vjp(x2, U)
    assert UJ2.shape == (6, n)
    close(UJ2, np.stack([tape.vjp(x2, U[k]) for k in range(6)]))
    close(UJ2, U @ jac(x2))


@pytest.mark.parametrize("name", sorted(BIG) + sorted(SMALL))
def test_identity_seeds_give_jacobian_rows(name):
    if name in BIG:
        f, jac, n, m = BIG[name]
        x = random_points(n, 1, 15)[0]
    else:
        f, jac, points = SMALL[name]
        x = np.array(points[1])
        m, n = jac(x).shape
    y, pb = fad.vjp(f, x)
    close(pb(np.eye(m)), jac(x))
    for i in range(m):   # row by row
        close(pb(np.eye(m)[i]), jac(x)[i])
    y, JT = fad.jvp(f, x, np.eye(n))
    close(JT, jac(x).T)
    tape = fad.record(f, x)
    close(tape.vjp(x, np.eye(m)), jac(x))
    close(tape.jvp(x, np.eye(n)), jac(x).T)


def test_repeated_output_slot_adds_up():
    """f returns the same Var twice: both rows equal, and seeds on it add up."""
    def f(x):
        v = x[0] * fad.sin(x[1])
        return [v, v, x[1]]

    def jac(x):
        r = [np.sin(x[1]), x[0] * np.cos(x[1])]
        return np.array([r, r, [0.0, 1.0]])

    x = np.array([1.3, 0.4])
    for mode in MODES:
        close(fad.jacobian(f, mode=mode)(x), jac(x))
    ybar = np.array([2.0, -0.5, 3.0])
    _, pb = fad.vjp(f, x)
    close(pb(ybar), ybar @ jac(x))
    close(pb(np.eye(3)), jac(x))


def test_output_is_input_array_and_slice_view():
    x = np.array([0.5, -1.0, 2.0, 3.5])
    for mode in MODES:
        close(fad.jacobian(lambda a: a, mode=mode)(x), np.eye(4))
        close(fad.jacobian(lambda a: a[::-1], mode=mode)(x), np.eye(4)[::-1])
        close(fad.jacobian(lambda a: a[1:3], mode=mode)(x), np.eye(4)[1:3])
    tape = fad.record(lambda a: a[::-1], x)
    x2 = np.array([9.0, 8.0, 7.0, 6.0])
    close(tape(x2), x2[::-1])
    close(tape.vjp(x2, np.array([1.0, 2.0, 3.0, 4.0])), np.array([4.0, 3.0, 2.0, 1.0]))


def test_zero_directions_jvp_and_zero_seeds_vjp_through_array_blocks():
    """BUG: k = 0 stacked directions/seeds work on scalar tapes (an empty
    (0,) + shape result) but crash inside array blocks with NumPy's
    'cannot reshape array of size 0 into shape (-1,0)' (Elementwise.tangent,
    Operand.add_adjoint reshape(-1, k))."""
    f = lambda a: a * 2.0                      # noqa: E731
    _, jv = fad.jvp(f, np.ones(3), np.zeros((0, 3)))
    assert jv.shape == (0, 3)
    _, pullback = fad.vjp(f, np.ones(3))
    assert pullback(np.zeros((0, 3))).shape == (0, 3)


# ---------------------------------------------------------------------------
# shapes: out.shape + x.shape
# ---------------------------------------------------------------------------

def mat_fn(X):
    """X (2, 3) -> Y (3, 2), Y[a, b] = X[b, a]^2 + X[0, 0] X[1, 2] (list of lists)."""
    c = X[0, 0] * X[1, 2]
    return [[X[b, a] ** 2 + c for b in range(2)] for a in range(3)]


def mat_fn_stacked(X):
    """The same map, built with fad.stack of fad.stack."""
    c = X[0, 0] * X[1, 2]
    return fad.stack([fad.stack([X[b, a] ** 2 + c for b in range(2)]) for a in range(3)])


def mat_fn_np(X):
    return X.T ** 2 + X[0, 0] * X[1, 2]


def mat_jac(X):
    J = np.zeros((3, 2, 2, 3))
    for a in range(3):
        for b in range(2):
            J[a, b, b, a] += 2 * X[b, a]
            J[a, b, 0, 0] += X[1, 2]
            J[a, b, 1, 2] += X[0, 0]
    return J


@pytest.mark.parametrize("fn", [mat_fn, mat_fn_stacked])
@pytest.mark.parametrize("mode", MODES)
def test_2d_input_2d_output_jacobian(fn, mode):
    X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]])
    J = fad.jacobian(fn, mode=mode)(X)
    assert J.shape == (3, 2, 2, 3)
    close(J, mat_jac(X))
    close(mat_jac(X), fd_jacobian(mat_fn_np, X), rtol=1e-6, atol=1e-7)
    X2 = np.array([[1.1, 0.2, -0.4], [-2.0, 0.9, 1.6]])
    tape = fad.record(fn, X)
    assert tape.n_inputs == 6 and tape.n_outputs == 6
    close(tape(X2), mat_fn_np(X2))
    J2 = tape.jacobian(X2, mode=mode)
    assert J2.shape == (3, 2, 2, 3)
    close(J2, mat_jac(X2))


def test_2d_jvp_vjp_shapes():
    X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]])
    J = mat_jac(X)
    rng = np.random.default_rng(16)
    v = rng.standard_normal((2, 3))
    V = rng.standard_normal((4, 2, 3))
    ybar = rng.standard_normal((3, 2))
    Ybar = rng.standard_normal((5, 3, 2))
    y, Jv = fad.jvp(mat_fn, X, v)
    assert y.shape == (3, 2) and Jv.shape == (3, 2)
    close(y, mat_fn_np(X))
    close(Jv, np.einsum("abcd,cd->ab", J, v))
    _, JV = fad.jvp(mat_fn, X, V)
    assert JV.shape == (4, 3, 2)
    close(JV, np.einsum("abcd,kcd->kab", J, V))
    _, pb = fad.vjp(mat_fn, X)
    g = pb(ybar)
    assert g.shape == (2, 3)
    close(g, np.einsum("ab,abcd->cd", ybar, J))
    G = pb(Ybar)
    assert G.shape == (5, 2, 3)
    close(G, np.einsum("kab,abcd->kcd", Ybar, J))
    tape = fad.record(mat_fn, X)
    assert tape.jvp(X, V).shape == (4, 3, 2)
    assert tape.vjp(X, Ybar).shape == (5, 2, 3)
    close(tape.vjp(X, Ybar), G)


SHAPE_CASES = {
    # name: (f, x, analytic Jacobian, expected shape)
    "float->vector": (lambda x: [fad.sin(x), x * x * x], 0.8,
                      np.array([np.cos(0.8), 3 * 0.8 ** 2]), (2,)),
    "vector->scalar": (lambda x: x[0] * x[1], np.array([2.0, -3.0]),
                       np.array([-3.0, 2.0]), (2,)),
    "float->float": (lambda x: x * fad.exp(x), 0.3,
                     np.array(np.exp(0.3) * 1.3), ()),
    "matrix->scalar": (lambda X: X[0, 0] * X[1, 1] - X[0, 1] * X[1, 0],
                       np.array([[1.0, 2.0], [3.0, 4.0]]),
                       np.array([[4.0, -3.0], [-2.0, 1.0]]), (2, 2)),
    "vector->matrix": (lambda x: [[x[0] * x[1], x[2]], [x[1] ** 2, 1.0 - x[0]]],
                       np.array([1.5, -0.5, 2.0]),
                       np.array([[[-0.5, 1.5, 0.0], [0.0, 0.0, 1.0]],
                                 [[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]]), (2, 2, 3)),
    "0d-array->vector": (lambda x: [fad.sin(x[()]), x[()] ** 2], np.array(0.4),
                         np.array([np.cos(0.4), 0.8]), (2,)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_jacobian_shape_is_out_shape_plus_x_shape(name, mode):
    f, x, expected, shape = SHAPE_CASES[name]
    J = fad.jacobian(f, mode=mode)(x)
    assert np.shape(J) == shape
    close(J, expected)
    tape = fad.record(f, x)
    J2 = tape.jacobian(x, mode=mode)
    assert np.shape(J2) == shape
    close(J2, expected)


def test_empty_arrays_and_constant_outputs_everywhere():
    e = np.zeros(0)
    assert fad.grad(lambda a: fad.sum(np.sin(a)))(e).shape == (0,)
    assert fad.jacfwd(lambda a: np.sin(a))(np.zeros((2, 0))).shape == (2, 0, 2, 0)
    assert fad.jacrev(lambda a: np.sin(a))(np.zeros((2, 0))).shape == (2, 0, 2, 0)
    assert fad.hessian(lambda a: fad.sum(a ** 3))(e).shape == (0, 0)
    assert fad.jacobian(lambda a: np.ones((2, 0)) @ a.reshape(0, 3))(e).shape == (2, 3, 0)
    np.testing.assert_array_equal(fad.jacobian(lambda a: a[:0] * 2)(np.ones(3)), np.zeros((0, 3)))
    x = np.array([1.0, 2.0, 3.0])
    tape = fad.record(lambda a: [a[0] * a[1], 2.0, a[2]], x)
    np.testing.assert_allclose(tape.jacobian(x + 1), [[3, 2, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(tape.vjp(x + 1, np.ones((2, 3))), [[3, 2, 1], [3, 2, 1]])
    t0 = fad.record(lambda a: 3.0, x)
    np.testing.assert_array_equal(t0.hessian(x), np.zeros((3, 3)))
    np.testing.assert_array_equal(t0.at(x).hvp(np.ones(3)), np.zeros(3))


# ---------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------

def test_bogus_mode_raises_value_error():
    x = np.array([1.5, 0.3])
    with pytest.raises(ValueError, match="mode"):
        fad.jacobian(polar, mode="bogus")(x)
    tape = fad.record(polar, x)
    with pytest.raises(ValueError, match="mode"):
        tape.jacobian(x, mode="bogus")
    # the tape is still fine afterwards
    close(tape.jacobian(x, mode="rev"), polar_jac(x))


def test_vjp_wrong_ybar_shape_raises_value_error():
    x = np.array([0.7, -1.3])       # map32: 2 inputs -> 3 outputs
    y, pb = fad.vjp(map32, x)
    tape = fad.record(map32, x)
    for bad in (np.ones(2), np.ones(4), np.ones((3, 1)), np.ones((2, 4)),
                np.ones((2, 3, 1)), 1.0):
        with pytest.raises(ValueError):
            pb(bad)
        with pytest.raises(ValueError):
            tape.vjp(x, bad)
    # still usable
    close(pb(np.array([1.0, 2.0, 3.0])), np.array([1.0, 2.0, 3.0]) @ map32_jac(x))
    close(tape.vjp(x, np.eye(3)), map32_jac(x))


def test_jvp_wrong_v_shape_raises_value_error():
    x = np.array([0.3, -0.8, 1.7])  # map23: 3 inputs -> 2 outputs
    tape = fad.record(map23, x)
    for bad in (np.ones(2), np.ones(4), np.ones((3, 1)), np.ones((2, 2)),
                np.ones((2, 3, 1)), 1.0):
        with pytest.raises(ValueError):
            fad.jvp(map23, x, bad)
        with pytest.raises(ValueError):
            tape.jvp(x, bad)
    v = np.array([1.0, -1.0, 0.5])
    close(tape.jvp(x, v), map23_jac(x) @ v)
    close(fad.jvp(map23, x, v)[1], map23_jac(x) @ v)
