"""In-place steps of fad.grad, case by case: chains, shapes, C callers, conflicts.

fad.grad writes element-wise results over dead temporaries; fad.vjp never
does, so the two must agree bit for bit, f must run once in ordinary Python
code, and a conflicting use must lead to a correct gradient via re-recording.
"""
import ctypes
import functools
import itertools
import operator
import sys
import threading

import numpy as np
import pytest

import fastad as fad
from fastad._var import Array
from conftest import fd_jacobian

X = np.array([0.3, -0.7, 1.1, 0.5])
MASK = np.array([True, False, True, False])


def _counted(f):
    calls = [0]
    tapes = []

    def g(x, *rest):
        calls[0] += 1
        tapes.append(x.tape if type(x) is Array else fad._var.tape_of(x))
        return f(x, *rest)
    return g, calls, tapes


def _check(f, x=X, inplace=None, fd=True):
    """grad == vjp bit for bit, f run once, finite differences agree."""
    g, calls, tapes = _counted(f)
    got = fad.grad(g)(x)
    ref = fad.vjp(f, x)[1](1.0)
    np.testing.assert_array_equal(got, ref)
    assert calls[0] == 1
    if inplace is not None:
        n = sum(b.overwritten for b in tapes[-1].blocks)
        assert (n > 0) == inplace, n
    if fd:
        assert fad.check_grad(f, x) < 1e-6


# ------------------------------------------------------------ chains and shapes

CASES = {
    "chain": (lambda x: fad.sum(np.tanh(-(x * 2.0 + 1.0) - 0.5) * 3.0), True),
    "exp over temp": (lambda x: fad.sum(np.exp(x * 2.0) + 2.0), True),
    "tanh of tanh": (lambda x: fad.sum(np.tanh(np.tanh(x * 1.0))), True),
    "seed element of in-place block": (lambda x: (x * 2.0 + 1.0)[1], True),
    "seed elements of two in-place blocks":
        (lambda x: (-(x * 2.0 + 1.0))[1] * (x * 3.0 + 2.0)[2], True),
    "both operands temporaries": (lambda x: fad.sum((x * x) - (x * 3.0)), True),
    "matmul output overwritten":
        (lambda x: fad.sum(np.tanh(x.reshape(2, 2) @ x.reshape(2, 2) + 1.0)), True),
    "sum(axis) output overwritten":
        (lambda x: fad.sum(np.tanh(x.reshape(2, 2).sum(axis=0) * 2.0)), True),
    "mean(axis) output overwritten":
        (lambda x: fad.sum(fad.mean(x.reshape(2, 2) * x.reshape(2, 2), axis=0) - 1.0), True),
    "dot output overwritten": (lambda x: fad.sum(np.dot(x.reshape(2, 2), x[:2]) - 1.0), True),
    "where of temps": (lambda x: fad.sum(fad.where(MASK, x * 2.0 + 1.0, 0.0) * 2.0), True),
    "maximum of temp": (lambda x: fad.sum(np.maximum(x * 2.0 + 1.0, 0.0) * 2.0), True),
    "comparison of temp": (lambda x: fad.sum(fad.where((x * 2.0 + 1.0) > 0, x, -x) * 2.0), True),
    "stack / concatenate":
        (lambda x: fad.sum(fad.concatenate([x * 2.0 + 1.0, fad.stack([x * 3.0, x])[0]]) + 1.0),
         True),
    "broadcast other operand": (lambda x: fad.sum(x.reshape(2, 2) * 2.0 + x[:2]), True),
    "broadcast temp operand": (lambda x: fad.sum((x[:2] * 2.0) + x.reshape(2, 2)), False),
    "int / 0-d / array constants":
        (lambda x: fad.sum((x * np.float64(2) + np.array(1.0)) / np.arange(1.0, 5.0) * 3 - 4),
         True),
    "reflected constants": (lambda x: fad.sum(1.0 - (2.0 / (x * x + 1.0))), True),
    "ufuncs": (lambda x: fad.sum(np.negative(np.add(np.multiply(x, 2.0), 1.0))), True),
    "reflected ufuncs": (lambda x: fad.sum(np.subtract(1.0, np.multiply(2.0, x))), True),
    "size 1": (lambda x: fad.sum(np.tanh(x[:1] * 2.0 + 1.0)), False),
    "size 2": (lambda x: fad.sum(np.tanh(x[:2] * 2.0 + 1.0)), True),
    "size 2 seed element": (lambda x: (x[:2] * 2.0 + 1.0)[0], True),
    "x is y": (lambda x: fad.sum((lambda t: t + t)(x * 2.0)), False),
    "view of temp": (lambda x: fad.sum((x * 2.0)[::-1] + 1.0), False),
    "transpose of temp": (lambda x: fad.sum((x.reshape(2, 2) * 2.0).T + 1.0), False),
    "Vars of a temp": (lambda x: (x * 2.0)[0] + (x * 2.0)[1], False),
    "Var plus temp": (lambda x: fad.sum(fad.sum(x) + (x * 2.0)), True),
    "zero-size temp": (lambda x: fad.sum(x[:0] * 2.0 + 1.0) + fad.sum(-(x * 2.0) + 1.0), True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_chain_matches_vjp(name):
    f, inplace = CASES[name]
    _check(f, inplace=inplace)


@fad.primitive
def _cube(a):
    return a ** 3


@_cube.defvjp
def _(g, y, a):
    return (3 * a ** 2 * g,)


def test_primitive_in_chain():
    _check(lambda x: fad.sum(_cube(x * 2.0 + 1.0) + 1.0), inplace=True)
    _check(lambda x: fad.sum(-(_cube(x) * 2.0) + 1.0), inplace=True)


def test_scalar_input_and_argnums():
    _check(lambda s: fad.sum(np.tanh(s * np.arange(4.0) + 1.0) - s), x=0.7, inplace=True)
    y = np.array([1.0, 2.0, 3.0, 4.0])

    def f(a, b):
        return fad.sum(-(a * 2.0 + b) + 1.0) * fad.sum(np.tanh(b - a))
    ga, gb = fad.grad(f, argnums=(0, 1))(X, y)
    np.testing.assert_array_equal(ga, fad.vjp(lambda a: f(a, y), X)[1](1.0))
    np.testing.assert_array_equal(gb, fad.vjp(lambda b: f(X, b), y)[1](1.0))


# ------------------------------------------------------------ calls from C code

C_CASES = {
    "reduce list": lambda x: fad.sum(functools.reduce(operator.add, [x * float(i) for i in range(3)])),
    "reduce gen": lambda x: fad.sum(functools.reduce(operator.add, (x * float(i) for i in range(3)))),
    "reduce np.add": lambda x: fad.sum(functools.reduce(np.add, (x * float(i) for i in range(3)))),
    "sum list": lambda x: fad.sum(sum([x * float(i) for i in range(3)])),
    "sum gen": lambda x: fad.sum(sum(x * float(i) for i in range(3))),
    "accumulate": lambda x: fad.sum(list(itertools.accumulate(x * float(i) for i in range(3)))[-1]),
    "map": lambda x: fad.sum(fad.stack(list(map(operator.add, (x * 1.0, x * 2.0), (x * 3.0, x))))),
    "starmap": lambda x: fad.sum(fad.stack(list(itertools.starmap(operator.sub, [(x * 1.0, 2.0)])))),
}


@pytest.mark.parametrize("name", sorted(C_CASES))
def test_c_callers(name):
    _check(C_CASES[name])


# ------------------------------------------------------------ has_aux, value_and_grad

def test_has_aux_temporaries():
    def f(x):
        s = fad.sum(np.tanh(x * 2.0 + 1.0))
        return s, [(x * 3.0) + 1.0, -(x * 4.0), {"a": np.exp(x * 0.5)}]
    g, aux = fad.grad(f, has_aux=True)(X)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: f(x)[0], X)[1](1.0))
    np.testing.assert_array_equal(aux[0], X * 3.0 + 1.0)
    np.testing.assert_array_equal(aux[1], -(X * 4.0))
    np.testing.assert_array_equal(aux[2]["a"], np.exp(X * 0.5))
    (v, aux2), g2 = fad.value_and_grad(f, has_aux=True)(X)
    assert v == fad.vjp(lambda x: f(x)[0], X)[0]
    np.testing.assert_array_equal(g2, g)


# ------------------------------------------------------------ a live operand is never written over

LIVE_EXPRS = ["t + 1.0", "1.0 - t", "-t", "t * 3", "t / 2.0", "np.add(t, 1.0)", "np.add(1.0, t)",
              "np.negative(t)", "np.tanh(t)", "np.exp(t)", "arr + t", "np.float64(2.0) * t",
              "operator.add(t, 1.0)", "functools.reduce(operator.add, [t, 1.0])",
              "np.add(t, x)", "np.add(x, t)", "np.subtract(x, t)", "np.add(u, t)",
              "np.add(x[::-1], t)", "np.add(x, t, out=None)"]


@pytest.mark.parametrize("expr", LIVE_EXPRS)
def test_live_local_is_not_consumed(expr):
    """t is a live local variable used again after `expr`: f must run once
    (no false "dead" temporary, hence no conflict and no second recording)."""
    src = f"""
def f(x):
    u = x * 3.0
    t = x * 2.0
    r = {expr}
    return fad.sum(r) + fad.sum(t * 1.0)
"""
    ns = dict(np=np, fad=fad, operator=operator, functools=functools, arr=np.ones(4))
    exec(src, ns)
    _check(ns["f"], fd=False)


# ------------------------------------------------------------ conflicts: a consumed Array used again

def _forced(op, t, *rest):
    """op(t, *rest) with t looking dead (reference count 1 inside op)."""
    p = ctypes.py_object(t)
    holder = (t,) + rest
    n = sys.getrefcount(t) - 1
    for _ in range(n - 1):
        ctypes.pythonapi.Py_DecRef(p)
    try:
        return op(*holder)
    finally:
        for _ in range(n - 1):
            ctypes.pythonapi.Py_IncRef(p)


FORCED_OPS = {"add": (operator.add, 1.0), "sub": (operator.sub, 1.0), "neg": (operator.neg,),
              "mul": (operator.mul, 3.0), "div": (operator.truediv, 4.0), "tanh": (np.tanh,),
              "exp": (np.exp,), "np.add": (np.add, 1.0), "np.negative": (np.negative,)}

USES = {
    "arith": lambda t, x: fad.sum(t * 2.0),
    "element": lambda t, x: t[0],
    "value": lambda t, x: float(t.value[0]) * fad.sum(x),
    "sum": lambda t, x: fad.sum(t),
    "T": lambda t, x: fad.sum(t.T),
    "where": lambda t, x: fad.sum(fad.where(MASK, t, 0.0)),
    "stack": lambda t, x: fad.sum(fad.stack([t, x])),
    "fad.tanh": lambda t, x: fad.sum(fad.tanh(t)),
    "compare": lambda t, x: fad.sum(fad.where(t > 0, x, 0.0)),
    "max": lambda t, x: np.max(t),
    "iter": lambda t, x: sum(list(t)),
    "logsumexp": lambda t, x: fad.logsumexp(t),
    "matmul": lambda t, x: t @ x,
    "np.shape": lambda t, x: fad.sum(x) * float(np.shape(t)[0]),
}


@pytest.mark.parametrize("opname", sorted(FORCED_OPS))
@pytest.mark.parametrize("use", sorted(USES))
def test_consumed_array_used_again_rerecords(opname, use):
    op, *rest = FORCED_OPS[opname]
    calls = [0]

    def f(x, forced=True):
        calls[0] += forced
        t = x * 2.0 - 0.3
        r = _forced(op, t, *rest) if forced else op(t, *rest)
        return fad.sum(r * r) + USES[use](t, x)
    g = fad.grad(f)(X)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: f(x, False), X)[1](1.0))
    assert calls[0] == 2          # recorded again, without in-place steps


def test_consumed_array_returned_as_aux_rerecords():
    def f(x):
        t = x * 2.0
        r = _forced(operator.add, t, 1.0)
        return fad.sum(r * r), t
    g, aux = fad.grad(f, has_aux=True)(X)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: fad.sum((x * 2.0 + 1.0) ** 2), X)[1](1.0))
    np.testing.assert_array_equal(aux, X * 2.0)


def test_consumed_error_swallowed_by_f_rerecords():
    calls = [0]

    def f(x):
        calls[0] += 1
        t = x * 2.0
        r = _forced(operator.add, t, 1.0)
        try:
            u = t * 3.0
        except Exception:
            u = x * 7.0                # a different (wrong) value if kept
        return fad.sum(r * u)
    g = fad.grad(f)(X)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: fad.sum((x * 2.0 + 1.0) * (x * 6.0)), X)[1](1.0))
    assert calls[0] == 2


def test_object_ndarray_of_arrays():
    """NumPy's object loops hold the only reference (C code reusing it)."""
    def f(x):
        objs = np.empty(2, dtype=object)
        objs[0] = x * 2.0
        objs[1] = x * 3.0
        r = objs + 1.0
        return fad.sum(r[0] * r[1]) + fad.sum(objs[1])
    np.testing.assert_array_equal(fad.grad(f)(X), fad.vjp(f, X)[1](1.0))


# ------------------------------------------------------------ robustness

def test_exception_inside_f_then_next_call():
    def bad(x):
        _ = -(x * 2.0 + 1.0)
        raise ValueError("boom")
    with pytest.raises(ValueError):
        fad.grad(bad)(X)
    _check(CASES["chain"][0], inplace=True)


def test_threads():
    def f(x):
        r = x
        for _ in range(20):
            r = np.tanh(-(r * 1.01 + 0.1) - 0.05)
        return fad.sum(r * 3.0)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(100):
            x = rng.normal(size=7)
            if not np.array_equal(fad.grad(f)(x), fad.vjp(f, x)[1](1.0)):
                errors.append(seed)
    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_minimize_and_check_grad():
    res = fad.minimize(lambda x: fad.sum((x * 2.0 - 1.0) * (x * 2.0 - 1.0)), X)
    np.testing.assert_allclose(res.x, 0.5, atol=1e-6)
    assert fad.check_grad(lambda x: fad.sum(np.exp(-(x * x) + 1.0) * 2.0), X) < 1e-6


def test_second_order_with_zero_size_blocks():
    """_second_run's skip test changed (blk.start > hi): Compare/Selection
    blocks (size 0) share a start with the next block."""
    def f(x):
        y = fad.where(x > 0, x * x, -x) * 2.0
        return fad.sum(y * np.max(x) + np.tanh(y))
    h = fad.hessian(f)(X)
    fd = fd_jacobian(fad.grad(f), X, relative=False).T
    np.testing.assert_allclose(h, fd, atol=1e-5)
