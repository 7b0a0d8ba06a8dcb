"""Shape, assembly, indexing, sorting and arrays built from traced numbers
(fastad.shaping, Array indexing, object arrays of Vars), in every mode.

Each function under test is written with NumPy's own names, so the same
code runs on plain ndarrays: finite differences of that plain function are
the independent reference.  All these functions are piecewise linear, so
the Hessian of s(x) = sum(w * f(x)**2) is 2 J^T diag(w) J with J the
finite-difference Jacobian: a second reference that does not go through
fastad.
"""
import numpy as np
import pytest

import fastad as fad
from conftest import close, dense, fd_close, fd_grad, fd_hessian, fd_jacobian, rng_for

K = 3     # seeds / directions at once


def _point(shape, *key):
    """Distinct values (no ties: sort and clip stay differentiable)."""
    rng = rng_for("shaping", *key)
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2.0 + rng.uniform(0.1, 0.4, n)).reshape(shape)


def check_all_modes(f, x, key):
    """f (NumPy code, piecewise linear) against finite differences in every mode."""
    y = np.asarray(f(x), dtype=np.float64)
    J = fd_jacobian(f, x)
    Jm = J.reshape(y.size, x.size)
    rng = rng_for("modes", key)
    # value and reverse mode with k seeds
    value, pullback = fad.vjp(f, x)
    close(np.asarray(value, dtype=float), y)
    W = rng.standard_normal((K,) + y.shape)
    fd_close(pullback(W), (W.reshape(K, -1) @ Jm).reshape((K,) + x.shape))
    fd_close(fad.jacrev(f)(x), J)
    # forward mode with k directions
    V = rng.standard_normal((K,) + x.shape)
    _, tangents = fad.jvp(f, x, V)
    fd_close(tangents, (V.reshape(K, -1) @ Jm.T).reshape((K,) + y.shape))
    fd_close(fad.jacfwd(f)(x), J)
    # second order of s(x) = sum(w f(x)^2): 2 J^T diag(w) J
    w = rng.uniform(0.5, 1.5, y.shape)

    def s(z):
        return np.sum(w * f(z) ** 2)
    H = 2 * Jm.T @ (w.reshape(-1, 1) * Jm)
    fd_close(fad.hessian(s)(x).reshape(x.size, x.size), H, atol=1e-6, scale_atol=True)
    fd_close(fad.hvp(s, x, V).reshape(K, -1), V.reshape(K, -1) @ H, atol=1e-6, scale_atol=True)
    # replay at a nearby point (same order, same branches)
    tape = fad.record(s, x)
    x1 = x + rng.uniform(-0.01, 0.01, x.shape)
    fd_close(tape.gradient(x1), fd_grad(s, x1), atol=1e-6, scale_atol=True)
    # sparsity: the pattern holds every true nonzero; the sparse Jacobian is the dense one
    if y.size and x.size:
        pattern = dense(fad.jacobian_sparsity(f)(x)).astype(bool)
        assert pattern.shape == Jm.shape
        assert not (np.abs(Jm) > 1e-6)[~pattern].any()
        fd_close(dense(fad.sparse_jacobian(f)(x)), Jm)


# name, function of x (NumPy code), shape of x
CASES = [
    ("squeeze", lambda x: np.squeeze(x), (1, 3, 1)),
    ("squeeze_axis", lambda x: np.squeeze(x, axis=-1), (2, 3, 1)),
    ("squeeze_tuple", lambda x: np.squeeze(x, axis=(0, 2)), (1, 3, 1)),
    ("squeeze_method", lambda x: x.squeeze(0), (1, 4)),
    ("expand_dims", lambda x: np.expand_dims(x, -1), (2, 3)),
    ("expand_dims_tuple", lambda x: np.expand_dims(x, (0, 2)), (2, 3)),
    ("swapaxes", lambda x: np.swapaxes(x, 0, -1), (2, 3, 2)),
    ("swapaxes_method", lambda x: x.swapaxes(1, 0), (2, 3)),
    ("moveaxis", lambda x: np.moveaxis(x, 0, -1), (2, 3, 2)),
    ("moveaxis_tuple", lambda x: np.moveaxis(x, (0, 1), (-1, 0)), (2, 3, 2)),
    ("atleast_1d", lambda x: np.atleast_1d(x[0, 0]) * 2.0, (2, 2)),
    ("atleast_2d", lambda x: np.atleast_2d(x), (4,)),
    ("atleast_3d_1d", lambda x: np.atleast_3d(x), (4,)),
    ("atleast_3d_2d", lambda x: np.atleast_3d(x), (2, 3)),
    ("atleast_many", lambda x: np.concatenate([a.ravel() for a in np.atleast_2d(x[0], x)]), (3,)),
    ("ravel", lambda x: np.ravel(x), (2, 3)),
    ("ravel_F", lambda x: np.ravel(x, order="F"), (2, 3)),
    ("ravel_transposed", lambda x: np.ravel(x.T), (2, 3)),
    ("ravel_K_transposed", lambda x: np.ravel(x.T, order="K"), (2, 3)),
    ("ravel_A_transposed", lambda x: np.ravel(x.T, order="A"), (2, 3)),
    ("flatten", lambda x: x.T.flatten(), (2, 3)),
    ("tile", lambda x: np.tile(x, (2, 1)), (2, 3)),
    ("tile_int", lambda x: np.tile(x, 3), (3,)),
    ("repeat", lambda x: np.repeat(x, 2), (2, 2)),
    ("repeat_axis", lambda x: np.repeat(x, [1, 0, 2], axis=-1), (2, 3)),
    ("repeat_method", lambda x: x.repeat(2, axis=0), (2, 3)),
    ("roll", lambda x: np.roll(x, 2), (2, 3)),
    ("roll_axis", lambda x: np.roll(x, -1, axis=1), (2, 3)),
    ("roll_tuple", lambda x: np.roll(x, (1, 2), axis=(0, 1)), (2, 3)),
    ("flip", lambda x: np.flip(x), (2, 3)),
    ("flip_axis", lambda x: np.flip(x, axis=-1), (2, 3)),
    ("fliplr", lambda x: np.fliplr(x), (2, 3)),
    ("flipud", lambda x: np.flipud(x), (3,)),
    ("rot90", lambda x: np.rot90(x), (2, 3)),
    ("rot90_k", lambda x: np.rot90(x, -1, axes=(1, 2)), (2, 2, 3)),
    ("pad", lambda x: np.pad(x, 1), (2, 3)),
    ("pad_values", lambda x: np.pad(x, ((1, 0), (0, 2)), constant_values=((1.5, 2), (3, -4))), (2, 3)),
    ("pad_1d", lambda x: np.pad(x, (2, 1), constant_values=7.0), (3,)),
    ("pad_edge", lambda x: np.pad(x, 2, mode="edge"), (2, 3)),
    ("pad_reflect", lambda x: np.pad(x, ((1, 1), (2, 0)), mode="reflect"), (3, 3)),
    ("pad_symmetric", lambda x: np.pad(x, 2, mode="symmetric"), (3,)),
    ("pad_wrap", lambda x: np.pad(x, 1, mode="wrap"), (2, 3)),
    ("clip", lambda x: np.clip(x, -1.0, 1.0), (2, 3)),
    ("clip_lower", lambda x: np.clip(x, -1.0, None), (5,)),
    # np.clip(x, max=...) is NumPy >= 2.1
    ("clip_upper_kw", lambda x: np.clip(x, None, 0.5) if np.__version__ < "2.1"
     else np.clip(x, max=0.5), (5,)),
    ("clip_method", lambda x: x.clip(-1.0, 2.0), (2, 3)),
    ("clip_array_bounds", lambda x: np.clip(x, np.array([-1.0, 0.0, -2.0]), 1.5), (2, 3)),
    ("clip_active_bounds", lambda x: np.clip(x[0], x[1] - 3.0, x[1] + 0.5), (2, 3)),
    ("diag_1d", lambda x: np.diag(x), (3,)),
    ("diag_1d_k", lambda x: np.diag(x, -2), (3,)),
    ("diag_2d", lambda x: np.diag(x), (3, 3)),
    ("diag_2d_k", lambda x: np.diag(x, 1), (3, 4)),
    ("diagonal", lambda x: np.diagonal(x), (3, 4)),
    ("diagonal_axes", lambda x: np.diagonal(x, 1, axis1=0, axis2=2), (3, 2, 4)),
    ("diagonal_method", lambda x: x.diagonal(-1), (3, 3)),
    ("tril", lambda x: np.tril(x), (3, 3)),
    ("tril_k", lambda x: np.tril(x, -1), (3, 4)),
    ("tril_1d", lambda x: np.tril(x), (3,)),
    ("triu", lambda x: np.triu(x, 1), (2, 3, 3)),
    ("split", lambda x: np.split(x, 3)[1], (6,)),
    ("split_indices", lambda x: np.split(x, [1, 2], axis=1)[2], (2, 4)),
    ("array_split", lambda x: np.array_split(x, 4)[0], (6,)),
    ("hsplit", lambda x: np.hsplit(x, 2)[1], (2, 4)),
    ("vsplit", lambda x: np.vsplit(x, [1])[1], (3, 2)),
    ("dsplit", lambda x: np.dsplit(x, 2)[0], (2, 1, 4)),
    ("vstack", lambda x: np.vstack([x, x[0], np.ones(3)]), (2, 3)),
    ("vstack_1d", lambda x: np.vstack((x, 2 * x)), (3,)),
    ("hstack", lambda x: np.hstack([x, x[:, :1], np.zeros((2, 1))]), (2, 3)),
    ("hstack_0d", lambda x: np.hstack([x[0], x[1:], 3.0]), (3,)),
    ("dstack", lambda x: np.dstack([x, x * 2]), (2, 3)),
    ("column_stack", lambda x: np.column_stack([x, x[::-1], np.arange(3.0)]), (3,)),
    ("concatenate_axis", lambda x: np.concatenate([x, x[:, ::-1]], axis=-1), (2, 3)),
    ("concatenate_none", lambda x: np.concatenate([x, x], axis=None), (2, 3)),
    ("stack_axis", lambda x: np.stack([x, 2 * x], axis=-1), (2, 3)),
    ("broadcast_to", lambda x: np.broadcast_to(x, (2, 3)), (3,)),
    ("broadcast_to_col", lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    ("take", lambda x: np.take(x, [0, 0, 4]), (2, 3)),
    ("take_axis", lambda x: np.take(x, [2, -1, 0], axis=-1), (2, 3)),
    ("take_method", lambda x: x.take(np.array([[1, 1], [0, 2]])), (3,)),
    ("take_wrap", lambda x: np.take(x, [4, -5], mode="wrap"), (3,)),
    ("take_along_axis", lambda x: np.take_along_axis(x, np.array([[0, 2, 2], [1, 0, 1]]), axis=1),
     (2, 3)),
    ("take_along_axis_0", lambda x: np.take_along_axis(x, np.array([[1, 0, 1]]), axis=0), (2, 3)),
    ("append", lambda x: np.append(x, [1.0, 2.0]), (2, 2)),
    ("append_axis", lambda x: np.append(x, x[:1], axis=0), (2, 2)),
    ("insert", lambda x: np.insert(x, 1, 5.0), (3,)),
    ("insert_traced", lambda x: np.insert(x, [0, 2], x[:2] * 3.0), (3,)),
    ("insert_axis", lambda x: np.insert(x, 1, x[:, 0], axis=1), (2, 3)),
    ("delete", lambda x: np.delete(x, [0, 2]), (4,)),
    ("delete_axis", lambda x: np.delete(x, 1, axis=-1), (2, 3)),
    ("copy", lambda x: np.copy(x), (2, 3)),
    ("real_imag", lambda x: np.real(x) * 2.0 + np.imag(x), (2, 3)),
    ("sort", lambda x: np.sort(x), (5,)),
    ("sort_axis0", lambda x: np.sort(x, axis=0), (3, 2)),
    ("sort_neg_axis", lambda x: np.sort(x, axis=-2), (2, 3, 2)),
    ("sort_none", lambda x: np.sort(x, axis=None), (2, 3)),
    ("sort_stable", lambda x: np.sort(x, kind="stable"), (2, 3)),
    ("sorted_by_argsort", lambda x: x[np.argsort(x)], (5,)),
    ("argsort_axis", lambda x: np.take_along_axis(x, np.argsort(x, axis=0), axis=0), (3, 2)),
    ("argmax", lambda x: x[np.argmax(x)] - x, (4,)),
    ("argmax_axis", lambda x: np.take_along_axis(x, np.argmax(x, axis=1, keepdims=True), 1),
     (3, 2)),
    ("argmin_method", lambda x: x.ravel()[x.argmin()] + x, (2, 2)),
    ("argmin_axis0", lambda x: x[np.argmin(x, axis=0), [0, 1, 2]], (2, 3)),
    ("rollaxis", lambda x: np.rollaxis(x, 2, 0), (2, 3, 4)),
    ("partition", lambda x: np.partition(x, 3), (7,)),
    ("partition_kths", lambda x: np.partition(x, [0, 3, -1]), (7,)),
    ("partition_axis", lambda x: np.partition(x, 1, axis=0), (3, 2)),
    ("partition_none", lambda x: np.partition(x, 2, axis=None), (2, 3)),
    ("argpartition", lambda x: x[np.argpartition(x, 2)], (5,)),
    ("argpartition_method", lambda x: x[x.argpartition(-2)], (5,)),
    ("angle", lambda x: np.angle(x) + np.angle(x, deg=True) * x, (5,)),
    ("nan_to_num", lambda x: np.nan_to_num(x * np.array([1.0, np.nan, np.inf, -np.inf]),
                                           nan=2.0, posinf=5.0, neginf=-4.0), (4,)),
    ("select", lambda x: np.select([x > 0, x < -1], [x, 2 * x], default=1.5), (2, 3)),
    ("select_broadcast", lambda x: np.select([x[0] > 0, x[1] > 0], [x[1], 3.0], default=x[:1]),
     (2, 3)),
    ("real_if_close", lambda x: np.real_if_close(x) * 2.0, (3,)),
    ("broadcast_arrays", lambda x: np.stack(np.broadcast_arrays(x[:2, None], x[2:], 1.0)), (5,)),
    ("block", lambda x: np.block([[x[:2, :2], np.ones((2, 1))], [x[2:, :2] * 2.0, x[2:, 2:]]]),
     (3, 3)),
    ("block_1d", lambda x: np.block([x[:2], 3.0, x[1:]]), (3,)),
    ("linspace", lambda x: np.linspace(x[0], x[1], 5), (2,)),
    ("linspace_open", lambda x: np.linspace(x[0], 4.0, 4, endpoint=False), (2,)),
    ("linspace_one", lambda x: np.linspace(x[0], x[1], 1), (2,)),
    ("linspace_arrays_axis", lambda x: np.linspace(x[:2], x[2:], 3, axis=-1), (4,)),
    ("linspace_retstep", lambda x: np.linspace(-1.0, x[0], 3, retstep=True)[1] + x, (2,)),
    # indexing
    ("index_negative", lambda x: x[-1] - x[-2, ::-1], (3, 2)),
    ("fancy_list", lambda x: x[[0, 0, 2]], (4,)),
    ("fancy_array_2d", lambda x: x[np.array([[1, 1], [0, 3]])], (4,)),
    ("fancy_negative", lambda x: x[[-1, -1, 0]], (4,)),
    ("fancy_rows", lambda x: x[[1, 0, 1]], (2, 3)),
    ("fancy_mixed", lambda x: x[:, [2, 0, 2]], (2, 3)),
    ("fancy_pair", lambda x: x[[0, 1, 1], [2, 0, 0]], (2, 3)),
    ("fancy_int_and_list", lambda x: x[1, [0, 2, 2]], (2, 3)),
    ("fancy_none_ellipsis", lambda x: x[None, ..., [1, 1]], (2, 3)),
    ("fancy_slice_array_slice", lambda x: x[1:, [0, 0], ::-1], (3, 2, 2)),
    ("bool_mask", lambda x: x[np.array([True, False, True, True])], (4,)),
    ("bool_mask_rows", lambda x: x[np.array([False, True, True])], (3, 2)),
    ("bool_mask_2d", lambda x: x[x > 0], (2, 3)),
    ("bool_recorded", lambda x: x[x > x.mean()] * 2.0, (5,)),
    ("bool_mixed", lambda x: x[:, np.array([True, False, True])], (2, 3)),
    ("ellipsis", lambda x: x[..., 0], (2, 2, 3)),
]


@pytest.mark.parametrize("name, f, shape", CASES, ids=[c[0] for c in CASES])
def test_function_in_every_mode(name, f, shape):
    check_all_modes(f, _point(shape, name), name)


# ---------------------------------------------------------------- values and edge cases

@pytest.mark.parametrize("f, shape", [
    (lambda x: np.linspace(x[0], x[1], 0), (2,)),
    (lambda x: np.flip(x, 0), (0, 3)),
    (lambda x: np.squeeze(x, 0), (1, 0)),
    (lambda x: np.pad(x, 1), (0,)),
    (lambda x: np.concatenate([x, x]), (0, 2)),
    (lambda x: x[np.zeros(3, dtype=bool)], (3,)),
    (lambda x: x[[]], (3,)),
    (lambda x: np.repeat(x, 0), (3,)),
    (lambda x: np.sort(x), (0,)),
    (lambda x: np.tile(x, 0), (2,)),
    (lambda x: np.split(x, 2)[0], (0,)),
])
def test_empty_results_have_numpy_shapes(f, shape):
    x = np.zeros(shape)
    J = fad.jacobian(f)(x)
    assert J.shape == np.shape(f(x)) + shape
    assert not J.any()


def test_results_match_numpy_values_and_types():
    x = _point((2, 3), "values")
    checks = [
        lambda a: np.atleast_1d(a[0, 0]), lambda a: np.atleast_3d(a),
        lambda a: np.split(a, 3, axis=1), lambda a: np.array_split(a.ravel(), 4),
        lambda a: np.diag(a[0]), lambda a: np.pad(a, 1, constant_values=-3.0),
    ]
    for f in checks:
        seen = {}

        def g(a):
            r = f(a)
            parts = r if isinstance(r, (list, tuple)) else [r]
            seen["shapes"] = [p.shape for p in parts]
            seen["values"] = [p.value for p in parts]
            return np.concatenate([np.ravel(p) for p in parts])
        fad.jacobian(g)(x)
        want = f(x)
        want = want if isinstance(want, (list, tuple)) else [want]
        assert seen["shapes"] == [w.shape for w in want]
        for got, w in zip(seen["values"], want):
            close(got, w)


def test_arg_functions_return_plain_integers():
    x = _point((3, 4), "args")
    seen = {}

    def f(a):
        seen["argmax"] = np.argmax(a)
        seen["argmax0"] = np.argmax(a, axis=0)
        seen["argmin_kd"] = np.argmin(a, axis=-1, keepdims=True)
        seen["argmin_none_kd"] = np.argmin(a, keepdims=True)
        seen["argsort"] = np.argsort(a, axis=None)
        seen["argsort1"] = a.argsort()
        return np.sum(a)
    fad.grad(f)(x)
    expected = {"argmax": np.argmax(x), "argmax0": np.argmax(x, axis=0),
                "argmin_kd": np.argmin(x, axis=-1, keepdims=True),
                "argmin_none_kd": np.argmin(x, keepdims=True),
                "argsort": np.argsort(x, axis=None), "argsort1": np.argsort(x)}
    for k, v in expected.items():
        assert type(seen[k]) is type(v) or isinstance(seen[k], np.integer), k
        assert np.array_equal(seen[k], v), k
        assert np.shape(seen[k]) == np.shape(v), k


def test_sort_of_a_var_and_a_constant():
    # a Var is 0-d: sort needs an axis (NumPy's rule); with axis=None it is one element
    g = fad.grad(lambda x: np.sum(np.sort(x[0], axis=None) * 3.0))(np.array([2.0, 1.0]))
    close(g, [3.0, 0.0])
    with pytest.raises(np.exceptions.AxisError):
        fad.grad(lambda x: np.sum(np.sort(x[0])))(np.array([2.0, 1.0]))
    close(fad.shaping.sort([3.0, 1.0, 2.0]), [1.0, 2.0, 3.0])


def test_repeated_indices_accumulate_in_reverse_mode():
    x = np.array([1.0, 2.0, 3.0])
    close(fad.grad(lambda a: np.sum(a[[0, 0, 0, 2]] * np.array([1.0, 2.0, 3.0, 4.0])))(x),
          [6.0, 0.0, 4.0])
    close(fad.grad(lambda a: np.sum(np.tile(a, 3) ** 2))(x), 6 * x)
    close(fad.grad(lambda a: np.sum(np.broadcast_to(a, (4, 3))))(x), [4.0, 4.0, 4.0])


def test_plain_inputs_are_numpy():
    s = fad.shaping
    x = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(s.pad(x, 1), np.pad(x, 1))
    assert np.array_equal(s.tril(x), np.tril(x))
    assert np.array_equal(s.clip(x, 1, 4), np.clip(x, 1, 4))
    assert np.array_equal(s.sort(x[:, ::-1]), np.sort(x[:, ::-1]))
    assert np.array_equal(s.argmax(x, axis=1), np.argmax(x, axis=1))
    assert np.array_equal(s.take(x, [1, 4]), np.take(x, [1, 4]))
    assert [p.shape for p in s.split(x, 3, axis=1)] == [(2, 1)] * 3
    assert np.array_equal(s.hstack([x, x]), np.hstack([x, x]))


# ---------------------------------------------------------------- replay re-checks decisions

@pytest.mark.parametrize("f, x0, x_same, x_other", [
    (lambda x: np.sum(np.sort(x) * np.arange(3.0)), [3.0, 1.0, 2.0], [3.5, 0.5, 2.0], [1.0, 2.0, 3.0]),
    (lambda x: np.sum(np.sort(x, axis=0)[0]), [[1.0, 4.0], [2.0, 3.0]], [[1.5, 4.0], [2.0, 3.0]],
     [[1.0, 3.0], [2.0, 4.0]]),
    (lambda x: np.sum(x[np.argsort(x)] * np.arange(3.0)), [3.0, 1.0, 2.0], [3.1, 1.0, 2.0],
     [3.0, 2.5, 2.0]),
    (lambda x: x[np.argmax(x)] ** 2, [1.0, 5.0, 2.0], [1.0, 4.0, 2.0], [1.0, 5.0, 6.0]),
    (lambda x: np.sum(x[np.argmin(x, axis=1), [0, 1]]), [[1.0, 4.0], [2.0, 3.0]],
     [[1.0, 4.0], [2.0, 5.0]], [[3.0, 2.0], [2.0, 3.0]]),
    (lambda x: np.sum(x[x > 0] ** 2), [1.0, -2.0, 3.0], [2.0, -1.0, 3.0], [1.0, 2.0, 3.0]),
    (lambda x: np.sum(np.partition(x, 0)[:1] ** 2), [3.0, 1.0, 2.0], [3.0, 1.5, 2.0], [1.0, 3.0, 2.0]),
    (lambda x: x[np.argpartition(x, 2)[2]] ** 2, [3.0, 1.0, 2.0], [3.5, 1.0, 2.0], [1.0, 2.0, 3.0]),
    (lambda x: np.sum(np.angle(x) * x), [1.0, -2.0], [2.0, -1.0], [1.0, 2.0]),
    (lambda x: np.sum(np.select([x > 0], [x ** 2], default=-x)), [1.0, -2.0], [2.0, -1.0],
     [-1.0, 2.0]),
    (lambda x: np.sum(np.nan_to_num(x * np.array([1.0, np.inf]), posinf=3.0, neginf=-3.0) ** 2),
     [1.0, 2.0], [1.5, 2.5], [1.0, -2.0]),
    (lambda x: np.sum(np.clip(x, -1.0, 1.0) ** 2), [0.5, -2.0, 3.0], [-0.5, -2.0, 3.0],
     [2.0, 0.0, 0.5]),
])
def test_replay_follows_or_raises_where_the_decision_changes(f, x0, x_same, x_other):
    x0, x_same, x_other = (np.array(v) for v in (x0, x_same, x_other))
    tape = fad.record(f, x0)
    fd_close(tape.gradient(x_same), fd_grad(f, x_same))
    if "clip" in repr(f.__code__.co_names):
        # clip is fad.maximum/minimum: replay recomputes the side, no decision to re-check
        fd_close(tape.gradient(x_other), fd_grad(f, x_other))
        return
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(x_other)
    fd_close(tape.gradient(x_same), fd_grad(f, x_same))      # the tape still works


def test_sort_with_nan_replays_like_numpy():
    f = lambda x: np.sum(np.sort(x) * np.arange(3.0))    # noqa: E731
    tape = fad.record(f, np.array([2.0, np.nan, 1.0]))
    close(tape.gradient(np.array([3.0, np.nan, 1.0])), [1.0, 2.0, 0.0])


# ---------------------------------------------------------------- arrays built from traced numbers

OBJECT_CASES = [
    ("np_array", lambda x: np.sum(np.array([x[0] * x[1], x[2]]) ** 2)),
    ("np_array_mixed_floats", lambda x: np.sum(np.array([x[0], 2.0, x[1] * x[2]]) * x)),
    ("nested_lists", lambda x: np.sum(np.array([[x[0], x[1]], [1.5, x[2]]]) @ x[:2])),
    ("list_to_fad_sum", lambda x: fad.sum([[x[0] * x[1], x[2]], [x[1], 1.0]])),
    ("to_fad_function", lambda x: np.sum(fad.sin(np.array([x[0], x[1] * 2.0])))),
    ("to_fad_binary", lambda x: np.sum(fad.hypot(np.array([x[0], x[1]]), [x[2], 1.0]))),
    ("to_ufunc", lambda x: np.sum(np.multiply(np.array([x[0], x[1]]), x[1:]))),
    ("matmul_ndarray", lambda x: np.sum(np.array([[1.0, 2.0], [3.0, -1.0]]) @ np.array([x[0], x[2]]) * x[1])),
    ("matmul_array", lambda x: x[:2] @ np.array([x[2], x[0] ** 2])),
    ("dot", lambda x: np.dot(np.array([x[2], x[0]]), x[:2])),
    ("concatenate", lambda x: np.sum(np.concatenate([np.array([x[0] ** 2, 1.0]), x]) ** 2)),
    ("asarray", lambda x: np.sum(np.asarray(x) * x)),
    ("ascontiguousarray", lambda x: np.sum(np.ascontiguousarray(x[::-1]) @ x)),
    ("np_array_of_arrays", lambda x: np.sum(np.array([x[:2], x[1:] ** 2]) @ x[:2])),
    ("np_array_mixed_items", lambda x: np.sum(np.array([x[:2], [1.0, x[2]]]) ** 2)),
    ("r_", lambda x: np.sum(np.r_[x[0], 3.0, x[1:] * x[0]] ** 2)),
    ("r_arrays", lambda x: np.sum(np.r_[x, x[:1] * 2.0] * np.arange(4.0))),
    ("c_", lambda x: np.sum(np.c_[x, x ** 2] @ np.array([1.0, -0.5]))),
    ("stack_of_object", lambda x: np.sum(np.stack([np.array([x[0], x[1]]), x[1:]]) ** 3)),
    ("where", lambda x: np.sum(np.where([True, False], np.array([x[0], x[1]]), x[1:]) ** 2)),
    ("ufunc_on_object_array", lambda x: np.sum(np.exp(np.array([x[0], x[1] * 2.0])))),
    ("binary_ufunc_on_object_array", lambda x: np.sum(np.arctan2(np.array([x[0], x[1]]), x[2]))),
    ("var_of_list", lambda x: np.var([x[0], x[1] * x[2], 3.0])),
    ("std_of_object_array", lambda x: np.std(np.array([x[0], x[1], x[2] ** 2]), ddof=1)),
]


@pytest.mark.parametrize("name, f", OBJECT_CASES, ids=[c[0] for c in OBJECT_CASES])
def test_arrays_built_from_traced_numbers(name, f):
    x = np.array([0.7, -1.3, 0.4])
    value, g = fad.value_and_grad(f)(x)
    close(value, f(x))
    fd_close(g, fd_grad(f, x), atol=1e-6)
    fd_close(fad.hessian(f)(x), fd_hessian(f, x), rtol=1e-5, atol=1e-5)
    tape = fad.record(f, x)
    x1 = x + 0.05
    fd_close(tape.gradient(x1), fd_grad(f, x1), atol=1e-6)
    _, tangents = fad.jvp(f, x, np.eye(3))
    fd_close(tangents, fd_grad(f, x), atol=1e-6)


@pytest.mark.parametrize("f", [
    lambda x: np.array([x[0] * x[1], 2.0, x[2]]),
    lambda x: np.array([[x[0], x[1]], [x[2] ** 2, 0.5]]),
    lambda x: np.r_[x[0], x[1:] * 3.0],
    lambda x: np.c_[x, x * x],
    lambda x: np.asarray(x),
])
def test_object_array_outputs(f):
    x = np.array([0.7, -1.3, 0.4])
    fd_close(fad.jacobian(f)(x), fd_jacobian(f, x), atol=1e-6)
    fd_close(fad.jacfwd(f)(x), fd_jacobian(f, x), atol=1e-6)
    fd_close(dense(fad.sparse_jacobian(f)(x)),
             fd_jacobian(f, x).reshape(-1, 3), atol=1e-6)


def test_object_array_without_traced_numbers_is_a_constant():
    g = fad.grad(lambda x: np.sum(x * np.array([1.0, 2.0], dtype=object)))(np.ones(2))
    close(g, [1.0, 2.0])


def test_object_array_of_arrays_gives_a_clear_error():
    def f(x):
        obj = np.empty(2, dtype=object)
        obj[0], obj[1] = x[:2], x[1:]
        return np.sum(obj * x[:2])
    with pytest.raises(TypeError, match="elements are arrays.*fad.stack"):
        fad.grad(f)(np.ones(3))
    with pytest.raises(TypeError, match="str"):
        fad.grad(lambda x: np.sum(x * np.array(["a", x[0]], dtype=object)))(np.ones(2))
    close(fad.grad(lambda x: np.sum(x * x))(np.ones(2)), [2.0, 2.0])


def test_conversion_to_a_numeric_ndarray_still_raises():
    for conv in (lambda a: np.asarray(a, dtype=np.float64), lambda a: np.array(a, dtype=float),
                 lambda a: np.asarray(a).astype(float)):
        with pytest.raises(TypeError, match="derivatives|fad.sin|value"):
            fad.grad(lambda a: np.sum(conv(a)))(np.ones(3))


def test_object_array_elements_have_the_methods_numpy_calls():
    # np.exp on an object ndarray calls each element's .exp(): a Var has those
    # of the ufuncs fastad supports, and no others
    seen = {}

    def f(a):
        seen["has"] = [hasattr(a[0], n) for n in ("exp", "arctan2", "conjugate", "dtype",
                                                  "cumsum", "__array__")]
        return np.sum(a)
    fad.grad(f)(np.ones(2))
    assert seen["has"] == [True, True, True, False, False, False]
    # a ufunc without an object loop (SciPy's) still fails, with NumPy's message naming it
    special = pytest.importorskip("scipy.special")
    with pytest.raises(TypeError, match="gamma"):
        fad.grad(lambda a: np.sum(special.gamma(np.array([a[0], a[1]]))))(np.ones(2))


# ---------------------------------------------------------------- keywords and errors

def test_keywords_at_numpy_defaults_are_accepted():
    x = _point((2, 3), "kw")
    cases = [
        lambda a: np.vstack([a, a], dtype=None, casting="same_kind"),
        lambda a: np.hstack([a, a], dtype=None),
        lambda a: np.concatenate([a, a], axis=1, out=None, dtype=None, casting="same_kind"),
        lambda a: np.stack([a, a], out=None),
        lambda a: np.ravel(a, order="C"),
        lambda a: np.take(a, [1, 2], out=None),
        lambda a: np.copy(a, order="K", subok=False),
        lambda a: np.broadcast_to(a, (2, 2, 3), subok=False),
        lambda a: np.clip(a, -1.0, 1.0, out=None),
        lambda a: np.transpose(a, axes=None),
    ]
    for f in cases:
        fd_close(fad.jacobian(f)(x), fd_jacobian(f, x))


@pytest.mark.parametrize("call, words", [
    (lambda a: np.vstack([a, a], dtype=np.float32), ["vstack", "dtype"]),
    (lambda a: np.hstack([a, a], casting="unsafe"), ["hstack", "casting"]),
    (lambda a: np.concatenate([a, a], out=np.empty((4, 3))), ["concatenate", "out"]),
    (lambda a: np.sum(a, initial=1.0), ["sum", "initial"]),
    (lambda a: np.copy(a, order="F"), ["copy", "order"]),
    (lambda a: np.pad(a, 1, mode="mean"), ["pad", "mode"]),
    (lambda a: np.pad(a, 1, mode="reflect", reflect_type="odd"), ["pad", "reflect_type"]),
    (lambda a: np.pad(a, 1, constant_values=a[0, 0]), ["pad", "constant_values"]),
    (lambda a: np.take(a, np.array([0]), out=np.empty(1)), ["take", "out"]),
    (lambda a: np.repeat(a, a[0, 0]), ["repeat", "repeats"]),
    (lambda a: np.clip(a, 0.0, 1.0, out=np.empty((2, 3))), ["clip", "out"]),
    (lambda a: np.sort(a, order="f"), ["sort", "order"]),
    (lambda a: np.argmax(a, out=np.empty(1, dtype=int)), ["argmax", "out"]),
    (lambda a: a.sort(), ["sort", "in place"]),
    (lambda a: a.partition(1), ["partition", "in place"]),
    (lambda a: np.linspace(a[0, 0], 1.0, 3, dtype=np.float32), ["linspace", "dtype"]),
    (lambda a: a[a[0, 0]], ["indexed", "Var"]),
    (lambda a: a[1, a[0, 0]], ["indexed", "Var"]),
    (lambda a: a[[a[0, 0]]], ["indexed", "Var"]),
    (lambda a: a[a[0]], ["indexed", "Array"]),
    (lambda a: np.take(a, a[0]), ["take", "indices"]),
    (lambda a: np.insert(a, a[0, 0], 1.0), ["insert", "obj"]),
])
def test_unsupported_arguments_raise_clear_type_errors(call, words):
    x = _point((2, 3), "errors")
    with pytest.raises(TypeError) as info:
        fad.grad(lambda a: np.sum(call(a)))(x)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    # the library keeps working
    close(fad.grad(lambda a: np.sum(np.flip(a) * 2.0))(x), np.full((2, 3), 2.0))


def test_numpy_errors_stay_numpy_errors():
    x = _point((2, 3), "numpy errors")
    with pytest.raises(ValueError):
        fad.grad(lambda a: np.sum(np.split(a, 4, axis=1)[0]))(x)
    with pytest.raises(IndexError):
        fad.grad(lambda a: np.sum(a[[0, 5]]))(x)
    with pytest.raises(ValueError):
        fad.grad(lambda a: np.sum(np.argmax(a[:0])))(x)
    with pytest.raises(ValueError):
        fad.grad(lambda a: np.sum(np.broadcast_to(a, (3, 3))))(x)


def test_pickled_tape_keeps_its_order_checks():
    import pickle
    f = lambda x: np.sum(np.sort(x) * np.arange(3.0)) + x[np.argmax(x)] \
        + np.sum(np.partition(x, 0)[:1])    # noqa: E731
    tape = pickle.loads(pickle.dumps(fad.record(f, np.array([3.0, 1.0, 2.0]))))
    x1 = np.array([3.5, 1.0, 2.0])
    fd_close(tape.gradient(x1), fd_grad(f, x1))
    with pytest.raises(fad.BranchChangedError):
        tape.gradient(np.array([1.0, 2.0, 3.0]))


def test_a_var_looks_like_a_zero_d_array():
    seen = {}

    def f(x):
        v = x[0]
        seen["var"] = (v.shape, v.ndim, v.size)
        seen["array"] = (x.shape, x.ndim, x.size, x.dtype)
        return v ** 2
    close(fad.grad(f)(np.array([3.0, 1.0])), [6.0, 0.0])
    assert seen["var"] == ((), 0, 1)
    assert seen["array"] == ((2,), 1, 2, np.float64)
    close(fad.grad(lambda x: x ** 2 if x.shape == () else 0.0)(3.0), 6.0)


def test_partition_replays_only_where_it_computes_what_numpy_does():
    # a partition leaves each side in an order NumPy chooses; a replay that
    # would reuse another order must refuse rather than answer differently
    rng = np.random.default_rng(7)
    w = rng.standard_normal(9)

    def g(x):
        return np.sum(np.partition(x, 4) * w)
    refused = 0
    for _ in range(100):
        x0 = rng.standard_normal(9)
        tape = fad.record(g, x0)
        x1 = x0 + 1e-2 * rng.standard_normal(9)
        try:
            got = tape(x1)
        except fad.BranchChangedError:
            refused += 1
            continue
        assert got == pytest.approx(g(x1), rel=1e-14, abs=1e-14)
        np.testing.assert_allclose(tape.gradient(x1), w[np.argsort(np.argpartition(x1, 4))])
    assert 0 < refused < 100
