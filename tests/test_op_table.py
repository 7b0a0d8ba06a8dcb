"""The op table in csrc/fastad_ops.h: first and second partials against
central differences of the table's own values, and the flags against them."""
import math

import numpy as np
import pytest

from fastad._tape import (FIRST_CMP, OP_FLAGS, OP_NAMES, op_eval, op_second)

BINARY, UNARY, HAS_C, ZD, Z00, Z01, Z11, CMP = 1, 2, 4, 8, 16, 32, 64, 128

# a point inside each op's domain, away from kinks: (x, y, c)
POINT = {
    "pow": (1.3, 0.7, 0), "arctan2": (0.4, 1.1, 0), "hypot": (0.4, -1.1, 0),
    "maximum": (0.4, 0.1, 0), "minimum": (0.4, 0.1, 0),
    "pow_c": (1.3, 0, 2.5), "c_pow": (0.7, 0, 1.8), "c_div": (1.3, 0, 2.0),
    "div_c": (1.3, 0, 2.0), "arctan2_c": (0.4, 0, 1.1), "c_arctan2": (0.4, 0, 1.1),
    "hypot_c": (0.4, 0, -1.1), "maximum_c": (0.4, 0, 0.1), "minimum_c": (0.4, 0, 0.1),
    "arcsin": (0.3, 0, 0), "arccos": (0.3, 0, 0), "log": (1.3, 0, 0), "log2": (1.3, 0, 0),
    "log10": (1.3, 0, 0), "sqrt": (1.3, 0, 0), "log1p": (0.3, 0, 0), "div": (0.7, 1.3, 0),
}


def _fd(fun, x, h=1e-6):
    return (fun(x + h) - fun(x - h)) / (2 * h)


def test_names_flags_and_comparisons_are_consistent():
    assert len(OP_NAMES) == len(OP_FLAGS) == len(set(OP_NAMES))
    for i, fl in enumerate(OP_FLAGS):
        assert bool(fl & CMP) == (i >= FIRST_CMP), OP_NAMES[i]
        assert not (fl & BINARY and fl & UNARY), OP_NAMES[i]


@pytest.mark.parametrize("op", [i for i, n in enumerate(OP_NAMES) if n not in ("input", "block")])
def test_partials_match_differences_of_values(op):
    name, fl = OP_NAMES[op], OP_FLAGS[op]
    x, y, c = POINT.get(name, (0.37, -0.61, 1.7))
    if name in ("c_sub", "add_c", "sub_c", "mul_c"):
        c = 1.7
    v, d0, d1 = op_eval(op, x, y, c)
    xx, xy, yy = op_second(op, x, y, c)
    assert math.isclose(d0, _fd(lambda t: op_eval(op, t, y, c)[0], x), rel_tol=1e-6, abs_tol=1e-8), name
    assert math.isclose(xx, _fd(lambda t: op_eval(op, t, y, c)[1], x), rel_tol=1e-5, abs_tol=1e-7), name
    if fl & BINARY:
        assert math.isclose(d1, _fd(lambda t: op_eval(op, x, t, c)[0], y), rel_tol=1e-6, abs_tol=1e-8), name
        assert math.isclose(xy, _fd(lambda t: op_eval(op, x, t, c)[1], y), rel_tol=1e-5, abs_tol=1e-7), name
        assert math.isclose(yy, _fd(lambda t: op_eval(op, x, t, c)[2], y), rel_tol=1e-5, abs_tol=1e-7), name
    else:
        assert d1 == c, f"{name}: a unary op must hand its constant back in d1"
        assert xy == 0.0 and yy == 0.0, name
    # the zero flags are promises the sparsity sweeps will rely on
    if fl & ZD:
        assert d0 == 0.0 and (not fl & BINARY or d1 == 0.0), name
    if fl & Z00:
        assert xx == 0.0, name
    if fl & Z01:
        assert xy == 0.0, name
    if fl & Z11:
        assert yy == 0.0, name


def test_table_values_match_numpy():
    x = np.linspace(-0.9, 0.9, 7)
    for name, ref in [("sin", np.sin), ("tanh", np.tanh), ("exp", np.exp), ("arctan", np.arctan),
                      ("erf", np.vectorize(math.erf)), ("sigmoid", lambda t: 1 / (1 + np.exp(-t))),
                      ("softplus", lambda t: np.log1p(np.exp(t))), ("relu", lambda t: np.maximum(t, 0))]:
        op = OP_NAMES.index(name)
        got = np.array([op_eval(op, t)[0] for t in x])
        np.testing.assert_allclose(got, ref(x), rtol=1e-14, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("name", sorted(__import__("fastad._blocks", fromlist=["TWINS"]).TWINS))
def test_numpy_twins_agree_with_the_c_table(name):
    # array blocks use NumPy versions of these hot ops; the C table is the reference
    from fastad import _blocks as B
    from fastad._tape import op_map
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 2.0, (4, 5)) * rng.choice([-1, 1], (4, 5))
    if name in ("log", "sqrt"):
        x = np.abs(x)
    x[0, 0] = 0.0 if name in ("abs", "relu", "square", "neg", "sin", "cos", "tanh", "exp") else x[0, 0]
    y = rng.uniform(0.5, 2.0, (4, 5))
    binary = OP_FLAGS[OP_NAMES.index(name)] & BINARY
    v, d0, d1 = B.op_values(name, x, y if binary else None)
    cv, c0, c1 = op_map(OP_NAMES.index(name), x, y if binary else None)

    def resolve(d):
        return np.broadcast_to(B.resolve_marker(d, x, y, v), x.shape)
    np.testing.assert_allclose(v, cv, rtol=2e-15, atol=0, err_msg=name)
    np.testing.assert_allclose(resolve(d0), c0, rtol=2e-15, atol=0, err_msg=name)
    if binary:
        np.testing.assert_allclose(resolve(d1), c1, rtol=2e-15, atol=0, err_msg=name)


@pytest.mark.parametrize("name", sorted(__import__("fastad._blocks", fromlist=["SECOND_TWINS"]).SECOND_TWINS))
def test_numpy_second_partials_agree_with_the_c_table(name):
    # array blocks take these second partials from their output z, not the C table
    from fastad import _blocks as B
    from fastad._tape import op_map, op_map2
    rng = np.random.default_rng(8)
    x = rng.uniform(-2.0, 2.0, (3, 4))
    y = rng.uniform(0.5, 2.0, (3, 4))
    binary = OP_FLAGS[OP_NAMES.index(name)] & BINARY
    code = OP_NAMES.index(name)
    z = op_map(code, x, y if binary else None)[0]
    got = B.SECOND_TWINS[name](z)
    want = op_map2(code, x, y if binary else None)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.broadcast_to(g, x.shape), w, rtol=1e-14, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("name", sorted(__import__("fastad._blocks", fromlist=["LINEAR_OPS"]).LINEAR_OPS))
def test_ops_treated_as_linear_have_zero_second_partials(name):
    from fastad import _blocks as B  # noqa: F401
    assert OP_FLAGS[OP_NAMES.index(name)] & (Z00 | Z01 | Z11) == (Z00 | Z01 | Z11)


CP = 0x200


@pytest.mark.parametrize("name", [n for n in OP_NAMES if OP_FLAGS[OP_NAMES.index(n)] & CP
                                  and n not in ("input", "block")])
def test_constant_partial_flag_means_partials_do_not_depend_on_the_point(name):
    # replays that only want tangents take these partials from the recording
    op = OP_NAMES.index(name)
    rng = np.random.default_rng(3)
    c = 1.7
    ref = op_eval(op, 0.3, -0.8, c)[1:]
    for _ in range(20):
        x, y = rng.uniform(-5, 5, 2)
        assert op_eval(op, x, y, c)[1:] == ref, name


def test_nonlinear_ops_are_not_flagged_constant_partial():
    for name in ("mul", "div", "exp", "maximum", "abs", "relu", "maximum_c", "c_div", "pow_c"):
        assert not OP_FLAGS[OP_NAMES.index(name)] & CP, name
