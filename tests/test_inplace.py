"""In-place steps of fad.grad, gradients handed over without a copy, and
the reverse sweep's cotangent hand-off between block nodes.

Part 1 and 2, in-place steps: fad.grad records for one reverse sweep
(Tape.single_sweep), so an element-wise op whose operand is the last
block's output, referenced by nothing but the caller's expression, writes
its values over that operand's slots (as NumPy does with temporaries).
fad.vjp never does (it keeps every value), so the two must agree bit for
bit; f must run once in ordinary Python code, a conflicting use must lead
to a correct gradient via re-recording, and central finite differences
must agree.

Part 3, handed-over gradients: an argument's gradient may be the blocks'
cotangent array itself (no copy), and tanh's pullback writes over its
cotangent in place: each gradient is the caller's own array, nothing else
shares its memory, and results equal the pullbacks that copy (fad.vjp).

Part 4, the hand-off: block nodes (element-wise ops, matmul, sum) hand
their operands' cotangents straight to the block that produced them when
that block is "sealed": every use of its output slots is as a whole operand
of a later element-wise / matmul / sum block (reshape included).  A sealed
block's rows of the adjoint buffer are neither zeroed nor read, so any path
that reads them by mistake sees garbage.  Any other use "escapes" the block
(an element taken as a Var, a slice / transpose / fancy view used as an
operand, `fad.where` with an array condition, `fad.stack` /
`fad.concatenate`, `np.max`, a custom primitive, or a seeded output), and
its cotangent then goes through the buffer.  These tests mix both kinds of
use in every order and check the derivatives against independent answers:
central finite differences of the same code run on plain NumPy arrays, or
hand-written formulas.

Most checks of part 4 first fill the pooled scratch buffers with nonzero
numbers (`_poison`), so a sweep that reads rows it did not zero gets
garbage rather than a lucky zero.
"""
import ctypes
import functools
import itertools
import operator
import pickle
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastad as fad
from fastad import transforms
from fastad._var import Array, consume, temp_refs
from conftest import close, fd_close, fd_grad, fd_jacobian, rosen_grad_np, rosen_loop


# ===========================================================================
# 1. in-place steps: element-wise operations write over dead temporaries
# ===========================================================================

rng = np.random.default_rng(7)
X = rng.standard_normal((5, 3))
W0 = rng.standard_normal((3, 4)) * 0.5


def _tape(f, *args):
    """The tape fad.grad records for f (single sweep, in-place steps)."""
    tape, _slot, _aux = transforms._recorded_output(f, args, {}, tuple(range(len(args))),
                                                    False, True)
    return tape


def _kept_grads(f, *args):
    """The gradients from a tape that keeps every value (no in-place steps)."""
    nums = tuple(range(len(args)))
    tape, slot, _aux = transforms._recorded_output(f, args, {}, nums, False, False)
    assert not any(b.overwritten for b in tape.blocks)
    return transforms._input_gradients(tape, slot)


def _kinds(f, *args):
    """(block kind, start, overwritten) per block of fad.grad's tape."""
    return [(getattr(b, "name", type(b).__name__), b.start, b.overwritten)
            for b in _tape(f, *args).blocks]


def _same_as_vjp(f, w=W0):
    g = fad.grad(f)(w)
    _, pullback = fad.vjp(f, w)
    np.testing.assert_array_equal(g, pullback(1.0))
    assert fad.check_grad(f, w) < 1e-6
    return g


# ---------------------------------------------------------------- which steps

def test_the_notes_network_writes_the_hidden_layer_once():
    """h = tanh(x W1 + b1): matmul, bias and tanh share one region of slots,
    and the gradient is still the notes' backprop, exactly."""
    x = rng.standard_normal((6, 3))
    t = rng.standard_normal((6, 2))
    params = (rng.standard_normal((3, 8)), rng.standard_normal(8),
              rng.standard_normal((8, 2)), rng.standard_normal(2))

    def loss(W1, b1, W2, b2):
        h = np.tanh(np.matmul(x, W1) + b1)
        r = np.matmul(h, W2) + b2 - t
        return 0.5 * np.sum(r * r)

    kinds = _kinds(loss, *params)
    assert [k for k, _, _ in kinds] == ["Matmul", "add", "tanh", "Matmul", "add", "sub",
                                       "square", "Sum"]
    assert len({s for k, s, _ in kinds[:3]}) == 1 and len({s for k, s, _ in kinds[3:6]}) == 1
    assert [o for _, _, o in kinds] == [True, True, False, True, True, False, False, False]
    W1, b1, W2, b2 = params
    z = x @ W1 + b1
    h = np.tanh(z)
    ybar = h @ W2 + b2 - t
    zbar = (ybar @ W2.T) * (1 - h * h)
    got = fad.grad(loss, argnums=(0, 1, 2, 3))(*params)
    for g, want in zip(got, (x.T @ zbar, zbar.sum(0), h.T @ ybar, ybar.sum(0))):
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-14)
    for g, want in zip(got, _kept_grads(loss, *params)):
        np.testing.assert_array_equal(g, want)


def test_every_path_was_measured():
    """Operators and ufuncs, each position, one or two Arrays (index 5, the
    second operand of a unary ufunc, does not exist)."""
    refs = temp_refs()
    assert refs[5] == 0 and all(r > 0 for i, r in enumerate(refs) if i != 5)


@pytest.mark.parametrize("step", [
    lambda x, t: np.add(x, t), lambda x, t: np.subtract(x, t), lambda x, t: np.add(t, x),
    lambda x, t: x + t, lambda x, t: t - x, lambda x, t: np.add(x[::-1], t),
    lambda x, t: np.add(x, t, out=None), lambda x, t: np.add(1.0, t), lambda x, t: -t,
    lambda x, t: np.tanh(t), lambda x, t: t * 2.0])
def test_a_live_local_is_never_written_over(step):
    """A named Array is live, in any position of an operator or a ufunc, with
    or without another Array beside it (NumPy holds one reference fewer of
    the second Array of a class): f runs once and keeps what it holds."""
    calls, kept = [], []

    def f(x):
        calls.append(1)
        t = np.tanh(x) * 2.0            # the last block, named
        y = step(x, t)
        kept.append(t)
        return fad.sum(y * 1.5)
    x = np.array([0.3, -0.7, 1.1, 0.5])
    g = fad.grad(f)(x)
    assert len(calls) == 1
    np.testing.assert_allclose(kept[0].value, np.tanh(x) * 2.0, rtol=1e-15)
    _, pullback = fad.vjp(f, x)
    np.testing.assert_array_equal(g, pullback(1.0))


def test_a_named_intermediate_is_not_written_over():
    def f(w):
        t = X @ w
        u = t + 1.0          # t is still named: kept
        return fad.sum(u * u) + fad.sum(np.sin(t))
    assert not any(o for _, _, o in _kinds(f, W0))
    _same_as_vjp(f)


def test_outputs_the_sweep_reads_are_not_written_over():
    """tanh's and exp's sweeps read their own outputs: never overwritten."""
    def f(w):
        return fad.sum(np.exp(np.tanh(X @ w) * 3.0) + 1.0)
    kinds = _kinds(f, W0)
    assert [(k, o) for k, _, o in kinds] == [("Matmul", True), ("tanh", False), ("mul", True),
                                             ("exp", False), ("add", False), ("Sum", False)]
    _same_as_vjp(f)


def test_a_product_of_two_active_operands_keeps_them():
    """x * y reads both operands in its sweep: neither is written over."""
    def f(w):
        return fad.sum((X @ w) * np.sin(X @ w))
    assert not any(o for _, _, o in _kinds(f, W0))
    _same_as_vjp(f)


def test_broadcast_operands_are_not_written_over():
    """Only an operand of the output's shape is written over (the bias row is
    read, the product written over)."""
    b = rng.standard_normal(4)

    def f(w):
        return fad.sum(np.tanh((w[0] * 2.0) + (X @ w)))
    _same_as_vjp(f)

    def g(w, b):
        return fad.sum(np.tanh(b + X @ w))
    kinds = _kinds(g, W0, b)
    assert kinds[0][2] and kinds[0][1] == kinds[1][1]
    for got, want in zip(fad.grad(g, argnums=(0, 1))(W0, b), _kept_grads(g, W0, b)):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- gradients

def _seed_inside(w):
    return np.tanh(X @ w + 1.0)[0, 2]


def _seed_inside_linear(w):
    return (X @ w - 1.0)[4, 3]


def _scalar_reads_after(w):
    h = np.tanh(X @ w - 0.5)
    return h[0, 1] * h[2, 2] + fad.sum(h)


def _both_temporaries(w):
    return fad.sum(np.exp((X @ w) + (X @ w * 2.0)))


def _constants_both_sides(w):
    return fad.sum(np.tanh(2.0 * (X @ w) / 3.0 - 1.0) + (1.0 - (X @ w)))


def _negations(w):
    return fad.sum(np.exp(-(-(X @ w))))


def _reduced_then_shifted(w):
    return fad.sum(np.tanh(np.sum(X @ w, axis=0) + 0.5))


def _square_then_shifted(w):
    return fad.sum(np.sqrt((X @ w) * (X @ w) + 1.0))


def _mean_of_chain(w):
    return np.mean(np.tanh(np.exp(np.tanh(X @ w) - 1.0) + 2.0))


def _loop_of_updates(w):
    h = X @ w
    for _ in range(3):
        h = np.tanh(h @ np.eye(4) * 0.9 + 0.1)
    return fad.sum(h)


def _where_after(w):
    z = X @ w + 0.3
    return fad.sum(fad.where(z > 0, z, 0.0)) + fad.sum(np.tanh(X @ w + 0.1))


def _tiny(w):
    return fad.sum(np.tanh(w[0, :2] * 1.0 + 1.0))


@pytest.mark.parametrize("f", [_seed_inside, _seed_inside_linear, _scalar_reads_after,
                               _both_temporaries, _constants_both_sides, _negations,
                               _reduced_then_shifted, _square_then_shifted, _mean_of_chain,
                               _loop_of_updates, _where_after, _tiny])
def test_gradient_equals_the_kept_tape(f):
    _same_as_vjp(f)


def test_reduce_from_c_code_consumes_its_accumulator():
    """functools.reduce holds its running sum alone: written over, correctly."""
    import functools
    import operator

    def f(w):
        parts = [np.sin(X @ w), np.cos(X @ w), X @ w]
        return fad.sum(functools.reduce(operator.add, parts) * 0.5)
    _same_as_vjp(f)


def test_has_aux_returns_values():
    def f(w):
        h = np.tanh(X @ w + 1.0)
        return fad.sum(h - 2.0), h
    g, aux = fad.grad(f, has_aux=True)(W0)
    np.testing.assert_allclose(aux, np.tanh(X @ W0 + 1.0), rtol=1e-15)
    _, pullback = fad.vjp(lambda w: f(w)[0], W0)
    np.testing.assert_array_equal(g, pullback(1.0))


# ---------------------------------------------------------------- the safety net

def _misjudge(t, calls):
    """Mark t written over, on the first recording only, as an in-place step
    would after misjudging it dead (a tuple passed as *args, or C code,
    holding its only reference makes the count look like a temporary's)."""
    if len(calls) == 1:
        consume(t)


def test_a_written_over_array_used_again_records_again():
    calls = []

    def f(w):
        calls.append(1)
        t = X @ w
        u = t + 1.0
        _misjudge(t, calls)
        return fad.sum(u * u) + fad.sum(t * 3.0)     # t again: a conflict
    g = fad.grad(f)(W0)
    assert len(calls) == 2
    _, pullback = fad.vjp(f, W0)
    np.testing.assert_array_equal(g, pullback(1.0))
    assert fad.check_grad(f, W0) < 1e-6


def test_a_conflict_caught_inside_f_still_records_again():
    calls = []

    def f(w):
        calls.append(1)
        t = X @ w
        u = np.tanh(t)
        _misjudge(t, calls)
        try:
            extra = fad.sum(t)
        except fad.TapeError:
            extra = 0.0                  # f swallows it: fad.grad must not
        return fad.sum(u) + extra
    g = fad.grad(f)(W0)
    assert len(calls) == 2
    want = X.T @ (1.0 - np.tanh(X @ W0) ** 2) + X.T @ np.ones((5, 4))
    np.testing.assert_allclose(g, want, rtol=1e-12)


def test_value_and_grad_after_a_conflict_and_after_an_error():
    def bad(w):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        fad.grad(bad)(W0)

    calls = []

    def f(w):
        calls.append(1)
        t = X @ w
        u = -t
        _misjudge(t, calls)
        return fad.sum(u * t)
    v, g = fad.value_and_grad(f)(W0)
    assert v == pytest.approx(-np.sum((X @ W0) ** 2))
    np.testing.assert_allclose(g, -2.0 * X.T @ (X @ W0), rtol=1e-12)
    _same_as_vjp(_negations)             # and the library works normally after


def test_other_transforms_keep_every_value():
    """Replayable tapes never write over: fad.record replays at new points."""
    tape = fad.record(_mean_of_chain, W0)
    assert not any(b.overwritten for b in tape.blocks)
    w1 = W0 + 0.1
    np.testing.assert_allclose(tape.gradient(w1), fad.grad(_mean_of_chain)(w1), rtol=1e-13)


def test_repeated_grads_hold_memory_steady():
    import tracemalloc
    g = fad.grad(_loop_of_updates)
    # NumPy keeps freed small buffers for reuse, and tracemalloc counts the
    # ones it took while tracing: warm up until that pool is settled
    for _ in range(2000):
        g(W0)
    tracemalloc.start()
    g(W0)
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(300):
        g(W0)
    last, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert last - first < 64 * 1024


# ===========================================================================
# 2. in-place steps case by case: chains, shapes, C callers, conflicts
# ===========================================================================

X4 = np.array([0.3, -0.7, 1.1, 0.5])
MASK4 = np.array([True, False, True, False])


def _counted(f):
    calls = [0]
    tapes = []

    def g(x, *rest):
        calls[0] += 1
        tapes.append(fad._var.active_info(x)[0])
        return f(x, *rest)
    return g, calls, tapes


def _check(f, x=X4, inplace=None, fd=True):
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
    "where of temps": (lambda x: fad.sum(fad.where(MASK4, x * 2.0 + 1.0, 0.0) * 2.0), True),
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
    ga, gb = fad.grad(f, argnums=(0, 1))(X4, y)
    np.testing.assert_array_equal(ga, fad.vjp(lambda a: f(a, y), X4)[1](1.0))
    np.testing.assert_array_equal(gb, fad.vjp(lambda b: f(X4, b), y)[1](1.0))


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
    g, aux = fad.grad(f, has_aux=True)(X4)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: f(x)[0], X4)[1](1.0))
    np.testing.assert_array_equal(aux[0], X4 * 3.0 + 1.0)
    np.testing.assert_array_equal(aux[1], -(X4 * 4.0))
    np.testing.assert_array_equal(aux[2]["a"], np.exp(X4 * 0.5))
    (v, aux2), g2 = fad.value_and_grad(f, has_aux=True)(X4)
    assert v == fad.vjp(lambda x: f(x)[0], X4)[0]
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
    "where": lambda t, x: fad.sum(fad.where(MASK4, t, 0.0)),
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
    g = fad.grad(f)(X4)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: f(x, False), X4)[1](1.0))
    assert calls[0] == 2          # recorded again, without in-place steps


def test_consumed_array_returned_as_aux_rerecords():
    def f(x):
        t = x * 2.0
        r = _forced(operator.add, t, 1.0)
        return fad.sum(r * r), t
    g, aux = fad.grad(f, has_aux=True)(X4)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: fad.sum((x * 2.0 + 1.0) ** 2), X4)[1](1.0))
    np.testing.assert_array_equal(aux, X4 * 2.0)


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
    g = fad.grad(f)(X4)
    np.testing.assert_array_equal(g, fad.vjp(lambda x: fad.sum((x * 2.0 + 1.0) * (x * 6.0)),
                                             X4)[1](1.0))
    assert calls[0] == 2


def test_object_ndarray_of_arrays():
    """NumPy's object loops hold the only reference (C code reusing it)."""
    def f(x):
        objs = np.empty(2, dtype=object)
        objs[0] = x * 2.0
        objs[1] = x * 3.0
        r = objs + 1.0
        return fad.sum(r[0] * r[1]) + fad.sum(objs[1])
    np.testing.assert_array_equal(fad.grad(f)(X4), fad.vjp(f, X4)[1](1.0))


# ------------------------------------------------------------ robustness

def test_exception_inside_f_then_next_call():
    def bad(x):
        _ = -(x * 2.0 + 1.0)
        raise ValueError("boom")
    with pytest.raises(ValueError):
        fad.grad(bad)(X4)
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
    res = fad.minimize(lambda x: fad.sum((x * 2.0 - 1.0) * (x * 2.0 - 1.0)), X4)
    np.testing.assert_allclose(res.x, 0.5, atol=1e-6)
    assert fad.check_grad(lambda x: fad.sum(np.exp(-(x * x) + 1.0) * 2.0), X4) < 1e-6


def test_second_order_with_zero_size_blocks():
    """_second_run's skip test changed (blk.start > hi): Compare/Selection
    blocks (size 0) share a start with the next block."""
    def f(x):
        y = fad.where(x > 0, x * x, -x) * 2.0
        return fad.sum(y * np.max(x) + np.tanh(y))
    h = fad.hessian(f)(X4)
    fd = fd_jacobian(fad.grad(f), X4, relative=False).T
    np.testing.assert_allclose(h, fd, atol=1e-5)


# ===========================================================================
# 3. gradients handed over without a copy, cotangents written over in place
# ===========================================================================

def test_gradients_handed_over_are_owned_and_distinct():
    """An argument's gradient may be the blocks' cotangent array itself (no
    copy): each is a separate, writeable array the caller owns."""
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((3, 4))

    def f(x, y):
        return fad.sum(np.tanh(x + y))      # one owned cotangent reaches x and y
    gx, gy = fad.grad(f, argnums=(0, 1))(a, b)
    assert gx is not gy and not np.shares_memory(gx, gy)
    np.testing.assert_array_equal(gx, gy)
    want = 1 - np.tanh(a + b) ** 2
    np.testing.assert_allclose(gx, want, rtol=1e-13)
    gx[...] = 0.0                           # the caller's to change
    np.testing.assert_allclose(gy, want, rtol=1e-13)
    gx2, _ = fad.grad(f, argnums=(0, 1))(a, b)
    np.testing.assert_allclose(gx2, want, rtol=1e-13)


@pytest.mark.parametrize("f", [
    lambda x: fad.sum(x),                           # a read-only broadcast cotangent
    lambda x: fad.sum(x + 0.0),                     # passed through unchanged
    lambda x: fad.sum((x + x) * 2.0),               # one operand twice
    lambda x: fad.sum(x @ np.eye(4)) + x[0, 0],     # a scalar read as well
    lambda x: fad.sum(np.tanh(x)[::-1]),            # through a view
])
def test_handed_over_gradients_are_writeable_and_right(f):
    x = rng.standard_normal((3, 4))
    g = fad.grad(f)(x)
    assert g.shape == x.shape and g.flags.writeable and g.flags.c_contiguous
    _, pullback = fad.vjp(f, x)
    np.testing.assert_array_equal(g, pullback(1.0))
    g += 1.0
    np.testing.assert_array_equal(fad.grad(f)(x), pullback(1.0))


def test_a_shared_cotangent_is_not_written_over():
    """tanh's pullback writes over its cotangent only when nothing else holds
    it: here one array reaches both tanh blocks through the sum."""
    M = rng.standard_normal((4, 2))

    def f(w):
        return fad.sum(np.sin((np.tanh(X @ w) + np.tanh(X @ w * 2.0)) @ M))
    z1, z2 = np.tanh(X @ W0), np.tanh(X @ W0 * 2.0)
    gbar = np.cos((z1 + z2) @ M) @ M.T
    want = X.T @ (gbar * (1 - z1 ** 2)) + 2.0 * X.T @ (gbar * (1 - z2 ** 2))
    np.testing.assert_allclose(_same_as_vjp(f), want, rtol=1e-12)


rng11 = np.random.default_rng(11)
X43 = rng11.standard_normal((4, 3))
Y43 = rng11.standard_normal((4, 3))
C43 = rng11.standard_normal((4, 3))
W35 = rng11.standard_normal((3, 5))
ROW3 = rng11.standard_normal(3)


@fad.primitive
def _pexp(a):
    return np.exp(a)


_KEPT = []


@_pexp.defvjp
def _pexp_vjp(g, y, a):
    r = g * y
    _KEPT.append(r)            # a rule's output the user keeps
    return r


FS = [
    lambda x: fad.sum(x * C43),
    lambda x: fad.sum(np.tanh(x + C43)),
    lambda x: fad.sum(np.tanh(C43 - x) * C43),
    lambda x: fad.sum(np.tanh(np.tanh(x) * C43)),
    lambda x: fad.sum(np.tanh(x @ W35)),
    lambda x: fad.sum(np.tanh(W35.T @ np.tanh(x).T)),
    lambda x: (lambda t: fad.sum(np.tanh(t + t)))(np.tanh(x)),
    lambda x: fad.sum(np.tanh(x + ROW3) * np.tanh(x * ROW3)),
    lambda x: fad.mean(np.tanh(fad.mean(np.tanh(x), axis=0) - 1.0)),
    lambda x: fad.sum(np.tanh(fad.sum(np.tanh(x), axis=1, keepdims=True) * x)),
    lambda x: fad.sum(np.tanh(fad.sum(np.tanh(x), axis=()))),
    lambda x: fad.sum(np.tanh(_pexp(np.tanh(x)) * C43)),
    lambda x: np.tanh(x * C43)[1, 2] + fad.sum(np.tanh(x)),
]


@pytest.mark.parametrize("f", FS)
def test_handed_gradient_is_private_and_exact(f):
    consts = [C43, W35, ROW3]
    keep = [a.copy() for a in consts]
    x = X43.copy()
    g = fad.grad(f)(x)
    want = fad.vjp(f, X43)[1](1.0)
    np.testing.assert_array_equal(g, want)
    assert fad.check_grad(f, X43) < 1e-6
    assert g.flags.writeable and g.flags.c_contiguous
    for a in consts + [x] + _KEPT:
        assert not np.shares_memory(g, a)
    g[...] = 1e300                                  # the caller's to change
    for a, k in zip(consts, keep):
        np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(fad.grad(f)(X43), want)
    np.testing.assert_array_equal(fad.record(f, X43).gradient(X43), want)


@pytest.mark.parametrize("f", [
    lambda x, y: fad.sum(np.tanh(x + y)),
    lambda x, y: fad.sum(np.tanh(x * y)),
    lambda x, y: fad.sum(x * y),
    lambda x, y: fad.sum(np.tanh(np.tanh(x) @ np.tanh(y).T)),
    lambda x, y: fad.mean(np.tanh(x) * y),
])
def test_two_arguments_match_per_argument_vjp(f):
    gx, gy = fad.grad(f, argnums=(0, 1))(X43, Y43)
    np.testing.assert_array_equal(gx, fad.vjp(lambda a: f(a, Y43), X43)[1](1.0))
    np.testing.assert_array_equal(gy, fad.vjp(lambda b: f(X43, b), Y43)[1](1.0))
    assert not np.shares_memory(gx, gy)
    gy2, gx2 = fad.grad(f, argnums=(1, 0))(X43, Y43)
    np.testing.assert_array_equal(gx2, gx)
    np.testing.assert_array_equal(gy2, gy)


def test_multi_seed_vjp_with_tanh_in_place_matches_single_seeds():
    def f(x):
        return np.tanh(np.tanh(np.tanh(x) * C43) @ W35)
    _, pb = fad.vjp(f, X43)
    seeds = rng11.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(pb(seeds), np.stack([pb(s) for s in seeds]))


# ===========================================================================
# 4. the cotangent hand-off between block nodes
# ===========================================================================

# ---------------------------------------------------------------------------
# references and helpers
# ---------------------------------------------------------------------------

def _big(x):
    """A block-heavy function of a 40-vector (about 3,300 slots)."""
    H = np.tanh(x.reshape(40, 1) * x.reshape(1, 40))
    return np.sin(H) * 2.0 + H


_BIG_X = np.linspace(-1.3, 1.7, 40)
_BIG_TAPE = fad.record(_big, _BIG_X)
_BIG_V = np.random.default_rng(99).normal(size=(16, 40)) + 3.0


def _poison():
    """Leave nonzero numbers in the scratch memory of the pooled work buffers
    the next sweeps will use (a wide tangent sweep writes tangents there), so
    a reverse sweep that fails to zero the rows it reads sees garbage."""
    fad.jvp(_big, _BIG_X, _BIG_V)          # at the recorded point: the pool's top buffer
    _BIG_TAPE.jvp(_BIG_X + 0.01, _BIG_V)   # replayed: the top two buffers


def _near(x, rng, scale=1e-3):
    """A nearby point (small enough not to flip a recorded max/comparison)."""
    return x + scale * rng.normal(size=np.shape(x))


def check_scalar(f, x, seed=0, n_points=3, scale=1e-3):
    """Every reverse path of a scalar f against central differences: fad.grad,
    value_and_grad, the recorded tape replayed at several points (against
    fad.grad there too), its vjp with seed 1, and Tape.at(x).gradient()."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    _poison()
    g = fad.grad(f)(x)
    fd_close(g, fd_grad(f, x))
    _poison()
    v, g2 = fad.value_and_grad(f)(x)
    close(v, float(f(x)), atol=1e-13)
    close(g2, g, atol=1e-13)
    tape = fad.record(f, x)
    for _ in range(n_points):
        x2 = _near(x, rng, scale)
        _poison()
        v, g = tape.value_and_gradient(x2)
        close(v, float(f(x2)), atol=1e-13)
        ref = fd_grad(f, x2)
        fd_close(g, ref)
        close(g, fad.grad(f)(x2), rtol=1e-11, atol=1e-12)
        _poison()
        fd_close(tape.vjp(x2, 1.0), ref)
        _poison()
        fd_close(tape.at(x2).gradient(), ref)
    return tape


def check_vector(f, x, seed=0, k=3, scale=1e-3):
    """Every reverse path of a vector-valued f against a finite-difference
    Jacobian: reverse-mode jacobian, vjp with one and with k stacked seeds,
    and the same on the recorded tape replayed elsewhere."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    J = fd_jacobian(f, x)
    out_shape = J.shape[:J.ndim - x.ndim]
    Jm = J.reshape(int(np.prod(out_shape, dtype=int)), x.size)
    _poison()
    fd_close(fad.jacobian(f, mode="rev")(x), J)
    fd_close(fad.jacobian(f, mode="fwd")(x), J)
    y, pullback = fad.vjp(f, x)
    close(y, np.asarray(f(x)), atol=1e-13)
    Y = rng.normal(size=(k,) + out_shape)
    _poison()
    fd_close(pullback(Y), (Y.reshape(k, -1) @ Jm).reshape((k,) + x.shape))
    _poison()
    fd_close(pullback(Y[1]), (Y[1].reshape(-1) @ Jm).reshape(x.shape))
    tape = fad.record(f, x)
    for _ in range(2):
        x2 = _near(x, rng, scale)
        J2 = fd_jacobian(f, x2)
        J2m = J2.reshape(Jm.shape)
        _poison()
        fd_close(tape.jacobian(x2, mode="rev"), J2)
        _poison()
        fd_close(tape.vjp(x2, Y), (Y.reshape(k, -1) @ J2m).reshape((k,) + x.shape))
        close(tape(x2), np.asarray(f(x2)), atol=1e-13)
    return tape


RNG = np.random.default_rng(20261126)
X6 = RNG.normal(size=6) * 0.8
W6 = RNG.normal(size=(6, 6)) * 0.6
W64 = RNG.normal(size=(6, 4)) * 0.6
A23 = RNG.normal(size=(2, 3))
A32 = RNG.normal(size=(3, 2))
X5 = RNG.normal(size=5) * 0.8
MASK6 = np.array([True, False, True, True, False, True])


# ---------------------------------------------------------------------------
# 4.1 one block output used whole by a block and element-wise by scalar code
# ---------------------------------------------------------------------------

def whole_then_elements(x):
    h = np.tanh(x * 2.0)
    return np.sum(h * h) + h[3] * h[0]


def elements_then_whole(x):
    h = np.tanh(x * 2.0)
    e = h[3] * h[0]
    return e + np.sum(h * h)


def elements_between_blocks(x):
    h = np.tanh(x * 2.0)
    a = np.sum(np.sin(h))
    e = h[5] - h[1] * h[2]
    return a + e * np.sum(h * x)


def element_int64_index(x):
    h = np.sin(x) * 1.5
    i = np.int64(4)
    return np.sum(np.tanh(h)) + h[i] * h[np.int64(1)]


def element_by_iteration(x):
    h = np.tanh(x) * 0.7
    s = 0.0
    for v in h:             # every element as a Var
        s = s + v * v
    return s + np.sum(np.exp(h))


def element_scalar_fed_back(x):
    # an element of h scales a later block that feeds h's consumer chain
    h = np.tanh(W6 @ x)
    s = h[2]
    return np.sum(np.sin(h * s) * h)


def element_of_reshaped_block(x):
    h = np.tanh(x * 1.2)
    return np.sum(np.sin(h) * h) + h.reshape(2, 3)[1, 2] * h.reshape(3, 2)[0, 1]


def element_of_slice_view(x):
    h = np.sin(W6 @ x)
    tail = h[2:]
    return np.sum(h * h) + tail[1] * tail[3]


def element_of_concatenation(x):
    h = np.tanh(x * 0.8)
    g = np.sin(h) * 2.0
    c = fad.concatenate([h, g])          # spans two blocks; only g's slot is taken
    return np.sum(h * g) + np.sum(np.exp(g)) + c[8] * c[10]


def element_of_stack(x):
    h = np.sin(x)
    g = np.tanh(h * 1.5)
    S = fad.stack([h, g])
    return np.sum(g @ W6) + np.sum(h * h) + S[1, 2] - S[1, 5] * 0.5


def element_by_0d_reshape(x):
    h = np.tanh(x) * 1.3
    return np.sum(np.exp(h)) + h[4:5].reshape(()) * 2.0


@pytest.mark.parametrize("f", [whole_then_elements, elements_then_whole,
                               elements_between_blocks, element_int64_index,
                               element_by_iteration, element_scalar_fed_back,
                               element_of_reshaped_block, element_of_slice_view,
                               element_of_concatenation, element_of_stack,
                               element_by_0d_reshape],
                         ids=lambda f: f.__name__)
def test_block_output_used_whole_and_elementwise(f):
    check_scalar(f, X6)


def test_whole_and_elementwise_analytic():
    """s = sum(h*h) + h[3]*h[0], h = tanh(2x): ds/dx = 2(1-h^2)(2h + e3 h0 + e0 h3)."""
    for f in (whole_then_elements, elements_then_whole):
        x = X6.copy()
        h = np.tanh(2 * x)
        hbar = 2 * h
        hbar[3] += h[0]
        hbar[0] += h[3]
        expected = 2 * (1 - h * h) * hbar
        _poison()
        close(fad.grad(f)(x), expected, atol=1e-13)
        tape = fad.record(f, x)
        for t in (0.1, -0.2, 0.3):
            x2 = x + t
            h = np.tanh(2 * x2)
            hbar = 2 * h
            hbar[3] += h[0]
            hbar[0] += h[3]
            _poison()
            close(tape.gradient(x2), 2 * (1 - h * h) * hbar, atol=1e-13)


def _chain_with_one_escape(which, pos, how):
    """Ten blocks, each consumed whole by the next and by a sum; only block
    `which` also has its element `pos` taken as a Var (`how`: a[i] notes the
    whole array, a[np.int64(i)] and a 0-d reshape only that one slot)."""
    def f(x):
        h = x
        total = 0.0
        for i in range(10):
            h = np.tanh(h * 1.1 + 0.05 * i)
            total = total + np.sum(h * float(i + 1))
            if i == which:
                if how == "int":
                    e = h[pos]
                elif how == "int64":
                    e = h[np.int64(pos)]
                else:
                    e = h[pos:pos + 1].reshape(())
                total = total + e * 3.0
        return total + np.sum(h * h)
    return f


@pytest.mark.parametrize("how", ["int", "int64", "0d"])
@pytest.mark.parametrize("which", [0, 4, 9])
@pytest.mark.parametrize("pos", [0, 3, 5])
def test_one_escape_among_many_sealed_blocks(which, pos, how):
    """Escaping exactly the right block: the first, a middle or the last of
    many, by its first, a middle or its last slot."""
    check_scalar(_chain_with_one_escape(which, pos, how), X6, n_points=1)


def elements_of_2d_block(X):
    H = np.tanh(A32 @ X)                     # (3, 4) block
    s = np.sum(np.sin(H) * H)
    rows = 0.0
    for row in H:                            # rows are views: elements through them
        rows = rows + row[0] * row[3]
    return s + H[1, 2] * H[2, 1] + H[np.int64(0), 3] + rows


def whole_2d_then_single_element(X):
    H = np.tanh(A32 @ X)
    return np.sum(H @ X.T) + H[2, 3]


@pytest.mark.parametrize("f", [elements_of_2d_block, whole_2d_then_single_element],
                         ids=lambda f: f.__name__)
def test_2d_block_elements(f):
    check_scalar(f, np.random.default_rng(5).normal(size=(2, 4)))


# ---------------------------------------------------------------------------
# 4.2 the same array twice in one block, and in several consumer blocks
# ---------------------------------------------------------------------------

def same_array_twice_mul(x):
    h = np.tanh(W6 @ x)
    return np.sum(h * h)


def same_array_twice_add(x):
    h = np.sin(x * 1.3)
    return np.sum(np.tanh(h + h) * (h - 0.5 * h))


def two_consumer_blocks(x):
    h = np.tanh(x)
    return np.sum(h) + np.sum(h @ W6)


def three_consumer_blocks(x):
    h = np.tanh(W6 @ x)
    a = np.exp(h * 0.5)
    b = h.reshape(2, 3) @ A32
    c = np.sum(h * x)
    return np.sum(a) + np.sum(b * b) + c


def consumer_chain_with_reuse(x):
    h = np.tanh(x)
    g = np.sin(h) * h          # h twice in different blocks
    k = g @ W6 + h             # g and h again
    return np.sum(k * g)


def matmul_of_block_with_itself(x):
    H = np.tanh(x.reshape(3, 3) * 1.2)
    return np.sum(np.sin(H @ H) * H)      # both matmul operands are H, whole


@pytest.mark.parametrize("f", [same_array_twice_mul, same_array_twice_add,
                               two_consumer_blocks, three_consumer_blocks,
                               consumer_chain_with_reuse, matmul_of_block_with_itself],
                         ids=lambda f: f.__name__)
def test_reuse_accumulates(f):
    check_scalar(f, np.linspace(-1.0, 1.3, 9) if f is matmul_of_block_with_itself else X6)


def test_matmul_of_block_with_itself_vector_output():
    """Both operands of one matmul are the same sealed block; k seeds give the
    two cotangents in different layouts, which must add up slot for slot."""
    def f(x):
        H = np.tanh(x.reshape(3, 3) * 1.2)
        return np.tanh(H @ H) * 2.0

    check_vector(f, np.linspace(-1.0, 1.3, 9), k=2)


def test_reuse_analytic():
    """sum(h*h), h = tanh(Wx): 2 W^T (h (1-h^2)); sum(h) + sum(h @ V), h = tanh(x):
    (1-h^2)(1 + V 1)."""
    for x in (X6, X6 + 0.3, X6 - 0.7):
        h = np.tanh(W6 @ x)
        _poison()
        close(fad.grad(same_array_twice_mul)(x), W6.T @ (2 * h * (1 - h * h)), atol=1e-13)
        h = np.tanh(x)
        _poison()
        close(fad.grad(two_consumer_blocks)(x), (1 - h * h) * (1 + W6.sum(axis=1)), atol=1e-13)
    tape = fad.record(same_array_twice_mul, X6)
    for t in (0.2, -0.4, 0.9):
        h = np.tanh(W6 @ (X6 + t))
        _poison()
        close(tape.gradient(X6 + t), W6.T @ (2 * h * (1 - h * h)), atol=1e-13)


# ---------------------------------------------------------------------------
# 4.3 links and escapes: reshape, transpose, slices, where, stack, concatenate, max
# ---------------------------------------------------------------------------

def reshape_into_matmul(x):
    return np.sum(np.tanh(np.tanh(x).reshape(2, 3) @ A32))


def reshape_both_ways(x):
    h = np.sin(x * 1.1)
    m = h.reshape(3, 2) * A32
    return np.sum(np.tanh(m.reshape(6) + h))


def transpose_of_block(x):
    h = np.tanh(x * 1.5).reshape(2, 3)
    return np.sum(np.tanh(h.T @ A23) * h.T.T.reshape(3, 2).sum(axis=1, keepdims=True))


def transpose_1d_like(x):
    h = np.tanh(x).reshape(6, 1)
    return np.sum(np.sin(h.T * 2.0) @ W6)


def slice_of_block(x):
    h = np.sin(x)
    return np.sum(np.tanh(h[1:]) * h[:-1]) + np.sum(h * h)


def strided_and_reversed_slices(x):
    h = np.tanh(W6 @ x)
    return np.sum(h[::2] * h[1::2]) + np.sum(h[::-1] * h)


def fancy_index_of_block(x):
    h = np.tanh(x * 0.9)
    idx = np.array([0, 2, 2, 5])
    return np.sum(np.sin(h[idx]) * h[[1, 1, 3, 4]]) + np.sum(h * 3.0)


def where_of_block(x):
    h = np.sin(x * 3.0)
    return np.sum(fad.where(MASK6, h, 0.0) ** 2) + np.sum(h * x)


def where_on_block_comparison(x):
    h = np.tanh(W6 @ x)
    return np.sum(fad.where(h > 0.0, h, 0.1 * h) * h)


def stack_of_blocks(x):
    h, g = np.sin(x), np.cos(x)
    return np.sum(np.tanh(fad.stack([h, g])) @ W6) + np.sum(h * g)


def concatenate_of_blocks(x):
    h, g = np.sin(x), np.tanh(x * 2.0)
    return np.sum(np.tanh(fad.concatenate([h, g])) * 2.0) + np.sum(g)


def max_of_block(x):
    h = np.sin(x * 1.7)
    return np.max(h) * np.sum(h * h)


def amax_axis_of_block(x):
    H = np.tanh(x.reshape(2, 3) * A23)
    return np.sum(np.max(H, axis=0) * 2.0) + np.sum(H * H) + np.min(H)


def reshape_of_view_of_block(x):
    h = np.tanh(x * 1.2)
    return np.sum(np.tanh(h[:4].reshape(2, 2) @ A23[:, :2]) * h[2:].reshape(2, 2))


LINK_CASES = [reshape_into_matmul, reshape_both_ways, transpose_of_block,
              transpose_1d_like, slice_of_block, strided_and_reversed_slices,
              fancy_index_of_block, where_of_block, where_on_block_comparison,
              stack_of_blocks, concatenate_of_blocks, max_of_block,
              amax_axis_of_block, reshape_of_view_of_block]


@pytest.mark.parametrize("f", LINK_CASES, ids=lambda f: f.__name__)
def test_links_and_escapes(f):
    check_scalar(f, X6)


def test_reshape_link_analytic():
    """sum(tanh(reshape(tanh x) @ A)): zbar = 1 - z^2, hbar = zbar A^T, xbar = hbar (1-h^2)."""
    for x in (X6, X6 * 0.5 - 0.2):
        h = np.tanh(x)
        z = np.tanh(h.reshape(2, 3) @ A32)
        hbar = ((1 - z * z) @ A32.T).reshape(6)
        _poison()
        close(fad.grad(reshape_into_matmul)(x), hbar * (1 - h * h), atol=1e-13)


# ---------------------------------------------------------------------------
# 4.4 vector outputs: the seeded block and its producers
# ---------------------------------------------------------------------------

W56 = RNG.normal(size=(5, 6)) * 0.7
W77 = RNG.normal(size=(7, 7)) * 0.5
W75 = RNG.normal(size=(7, 5)) * 0.7


def tanh_layer_times_two(x):
    return np.tanh(W56 @ x) * 2


def slice_of_big_intermediate(x):
    big = np.tanh(W77 @ np.tanh(W75 @ x))
    return big[2:5]


def strided_slice_of_big_intermediate(x):
    big = np.tanh(W77 @ np.sin(W75 @ x)) * 3.0
    return big[1:6:2]


def output_2d_block(x):
    H = np.tanh(W75 @ x).reshape(7, 1) * x[:3].reshape(1, 3)   # x[:3] is an input view
    return np.sin(H) + H


def output_and_consumer(x):
    h = np.tanh(W75 @ x)
    return fad.concatenate([h * 2.0, h])          # h seeded and consumed


def output_later_block_first(x):
    h = np.tanh(W75 @ x)
    g = np.sin(x) * 2.0
    return fad.concatenate([g, h])


def output_list_of_elements(x):
    h = np.tanh(W75 @ x)
    return [h[0] * h[1], np.sum(h * h), h[6]]


def output_sum_axis(x):
    H = np.tanh(x.reshape(5, 1) * x.reshape(1, 5))
    return np.sum(H * H, axis=0) + H[0]


@pytest.mark.parametrize("f", [tanh_layer_times_two, slice_of_big_intermediate,
                               strided_slice_of_big_intermediate, output_2d_block,
                               output_and_consumer, output_later_block_first,
                               output_list_of_elements, output_sum_axis],
                         ids=lambda f: f.__name__)
def test_vector_outputs(f):
    check_vector(f, X6 if f is tanh_layer_times_two else X5)


def test_tanh_layer_jacobian_analytic():
    """J = 2 diag(1 - h^2) W for f(x) = 2 tanh(Wx)."""
    tape = fad.record(tanh_layer_times_two, X6)
    for x in (X6, X6 + 0.25, X6 - 0.5):
        h = np.tanh(W56 @ x)
        J = 2 * (1 - h * h)[:, None] * W56
        _poison()
        close(fad.jacobian(tanh_layer_times_two, mode="rev")(x), J, atol=1e-13)
        _poison()
        close(tape.jacobian(x, mode="rev"), J, atol=1e-13)
        Y = np.random.default_rng(1).normal(size=(3, 5))
        _, pullback = fad.vjp(tanh_layer_times_two, x)
        _poison()
        close(pullback(Y), Y @ J, atol=1e-13)
        _poison()
        close(tape.vjp(x, Y), Y @ J, atol=1e-13)


def test_wide_jacobian_chunks():
    """More outputs than one chunk of reverse lanes (128): several sweeps, each
    with its own zeroing of the reused buffer."""
    W = np.random.default_rng(7).normal(size=(150, 4)) * 0.5

    def f(x):
        h = np.tanh(W @ x)
        return np.sin(h) * h

    x = np.array([0.3, -0.2, 0.5, 0.1])
    h = np.tanh(W @ x)
    J = ((np.cos(h) * h + np.sin(h)) * (1 - h * h))[:, None] * W
    _poison()
    close(fad.jacobian(f, mode="rev")(x), J, atol=1e-13)
    tape = fad.record(f, x)
    _poison()
    close(tape.jacobian(x, mode="rev"), J, atol=1e-13)


def test_sparse_jacobian_reverse_sweeps():
    """Compressed reverse sweeps (several seeds summed per lane) through sealed
    and escaped blocks, read back at the input rows."""
    pytest.importorskip("scipy")

    def f(x):
        h = np.tanh(x * 2.0)
        g = np.sin(h) * h
        return fad.concatenate([g * 3.0, h[1:] * h[:-1] + g[0], np.sum(g * x, keepdims=True)])

    x = np.linspace(-1.0, 1.0, 8)
    J = fd_jacobian(f, x)
    for mode in ("rev", "bidirectional", "auto"):
        _poison()
        fd_close(fad.sparse_jacobian(f, mode=mode)(x).toarray(), J)
    tape = fad.record(f, x)
    for t in (0.05, -0.1):
        _poison()
        fd_close(tape.sparse_jacobian(x + t, mode="rev").toarray(), fd_jacobian(f, x + t))


# ---------------------------------------------------------------------------
# 4.5 replays: pooled buffers back to zeros, interleaved tapes, pickled tapes
# ---------------------------------------------------------------------------

def mixed_program(x):
    h = np.tanh(W6 @ x)
    g = np.sin(h) * h
    e = h[1] * g[4]
    k = np.sum(g @ W6 * h)
    return k + e + np.sum(np.exp(0.3 * g))


def test_replay_three_times_in_a_row():
    x = X6.copy()
    tape = fad.record(mixed_program, x)
    _poison()
    for x2 in (x + 0.05, x - 0.3, x * 1.5):
        v, g = tape.value_and_gradient(x2)
        close(v, mixed_program(x2), atol=1e-13)
        close(g, fad.grad(mixed_program)(x2), rtol=1e-11, atol=1e-12)
        fd_close(g, fd_grad(mixed_program, x2))
    # and the same point again gives the same numbers, bit for bit
    g1 = tape.gradient(x + 0.05)
    g2 = tape.gradient(x + 0.05)
    assert np.array_equal(g1, g2)


def test_interleaved_tapes():
    tape_a = fad.record(mixed_program, X6)
    tape_b = fad.record(three_consumer_blocks, X6)
    tape_c = fad.record(whole_then_elements, X6)
    for t in (0.1, -0.2, 0.35):
        for tape, f in ((tape_a, mixed_program), (tape_b, three_consumer_blocks),
                        (tape_c, whole_then_elements), (tape_a, mixed_program)):
            v, g = tape.value_and_gradient(X6 + t)
            close(v, f(X6 + t), atol=1e-13)
            fd_close(g, fd_grad(f, X6 + t))


def test_scalar_tape_after_block_tapes_sees_a_clean_buffer():
    """The scalar-only sweep trusts the pooled adjoint buffer to be all zeros
    at rest: after gradients of block tapes (sealed and unsealed rows) and a
    failed sweep, a Rosenbrock loop tape must still get its exact gradient."""
    xr = np.linspace(-0.8, 1.1, 300)
    t_rosen = fad.record(rosen_loop, xr)

    big_w = np.random.default_rng(3).normal(size=(60, 60)) * 0.2

    def blocks(x):
        h = np.tanh(big_w @ x[:60])
        g = np.sin(h) * h
        return np.sum(g @ big_w) + h[7] * g[3] + np.sum(x * x)

    t_blocks = fad.record(blocks, xr)
    for k in range(3):
        x2 = xr + 0.01 * k
        t_blocks.value_and_gradient(x2)
        close(t_rosen.gradient(x2), rosen_grad_np(x2), rtol=1e-12, atol=1e-9)
        t_blocks.gradient(x2 * 0.5)
        g = t_rosen.gradient(x2 * 0.5)
        close(g, rosen_grad_np(x2 * 0.5), rtol=1e-12, atol=1e-9)


def test_failed_sweep_leaves_a_clean_buffer():
    calls = {"n": 0}

    @fad.primitive
    def fragile(x):
        return np.sin(x)

    @fragile.defvjp
    def _(ybar, y, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("vjp rule failed")
        return ybar * np.cos(x)

    def f(x):
        h = np.tanh(x * 2.0)
        u = np.tanh(fragile(h * h) @ W6)
        return np.sum(u * h) + np.sum(np.exp(h))

    tape = fad.record(f, X6)
    tape.gradient(X6)
    with pytest.raises(RuntimeError, match="vjp rule failed"):
        tape.gradient(X6 + 0.1)
    fd_close(tape.gradient(X6 + 0.2), fd_grad(f, X6 + 0.2))
    xr = np.linspace(-0.5, 0.9, 50)
    close(fad.record(rosen_loop, xr).gradient(xr), rosen_grad_np(xr), atol=1e-10)
    check_scalar(mixed_program, X6, n_points=1)


def test_pickled_tape_replays():
    tape = fad.record(mixed_program, X6)
    copy = pickle.loads(pickle.dumps(tape))
    for x2 in (X6 + 0.1, X6 - 0.2, X6 * 0.7):
        _poison()
        v, g = copy.value_and_gradient(x2)
        close(v, mixed_program(x2), atol=1e-13)
        close(g, tape.gradient(x2), atol=1e-13)
        fd_close(g, fd_grad(mixed_program, x2))
    vtape = fad.record(output_and_consumer, X6[:5])
    vcopy = pickle.loads(pickle.dumps(vtape))
    Y = np.random.default_rng(2).normal(size=(3, 14))
    x2 = X6[:5] + 0.1
    _poison()
    close(vcopy.vjp(x2, Y), vtape.vjp(x2, Y), atol=1e-13)
    fd_close(vcopy.vjp(x2, Y), Y @ fd_jacobian(output_and_consumer, x2))


def test_pickled_long_chain():
    """A long chain of sealed blocks, each linked to the previous one."""
    def f(x):
        h = x
        for _ in range(400):
            h = np.tanh(h) * 1.01
        return np.sum(h * h)

    x = np.linspace(-1.0, 1.0, 4)
    tape = fad.record(f, x)
    copy = pickle.loads(pickle.dumps(tape))
    fd_close(copy.gradient(x), fd_grad(f, x))
    close(copy.gradient(x + 0.1), tape.gradient(x + 0.1), atol=1e-13)


def test_replays_from_threads():
    tape = fad.record(mixed_program, X6)
    pts = [X6 + 0.01 * i for i in range(12)]
    refs = [fad.grad(mixed_program)(p) for p in pts]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(tape.gradient, pts * 3))
    for g, r in zip(got, refs * 3):
        close(g, r, rtol=1e-11, atol=1e-12)


# ---------------------------------------------------------------------------
# 4.6 custom primitives next to blocks
# ---------------------------------------------------------------------------

def _make_lse():
    @fad.primitive
    def lse(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    @lse.defvjp
    def _(ybar, y, x):
        return ybar * np.exp(x - y)

    @lse.defjvp
    def _(xdot, y, x):
        return np.sum(xdot * np.exp(x - y))
    return lse


def _make_softmax(vectorized):
    @fad.primitive
    def softmax(x):
        e = np.exp(x - np.max(x))
        return e / np.sum(e)

    def vjp(ybar, y, x):
        return y * (ybar - np.sum(ybar * y, axis=-1, keepdims=True))
    softmax.defvjp(vjp, vectorized=vectorized)

    @softmax.defjvp
    def _(xdot, y, x):
        return y * (xdot - np.dot(xdot, y))
    return softmax


LSE = _make_lse()
SOFTMAX = _make_softmax(False)
SOFTMAX_V = _make_softmax(True)


def primitive_of_block(x):
    h = np.tanh(W6 @ x)
    return LSE(h) + np.sum(h * h)


def block_of_primitive(x):
    s = SOFTMAX(np.sin(x) * 2.0)
    return np.sum(np.tanh(W6 @ s) * s)


def primitive_sandwich(x):
    h = np.tanh(W6 @ x)
    p = SOFTMAX_V(h * 3.0)
    return np.sum(np.tanh(p @ W6) * h) + LSE(p * h)


def primitive_and_elements(x):
    h = np.sin(x) * 1.3
    return LSE(h) * h[2] + np.sum(h * SOFTMAX(h))


@pytest.mark.parametrize("f", [primitive_of_block, block_of_primitive,
                               primitive_sandwich, primitive_and_elements],
                         ids=lambda f: f.__name__)
def test_primitives_next_to_blocks(f):
    check_scalar(f, X6)


def test_primitive_of_block_analytic():
    """lse(h) + sum(h*h), h = tanh(Wx): hbar = softmax(h) + 2h."""
    for x in (X6, X6 - 0.4):
        h = np.tanh(W6 @ x)
        e = np.exp(h - h.max())
        hbar = e / e.sum() + 2 * h
        _poison()
        close(fad.grad(primitive_of_block)(x), W6.T @ (hbar * (1 - h * h)), atol=1e-13)


@pytest.mark.parametrize("softmax", [SOFTMAX, SOFTMAX_V], ids=["looped", "vectorized"])
def test_primitive_vector_output_vjp(softmax):
    def f(x):
        p = softmax(np.tanh(W6 @ x))
        return np.tanh(p * 4.0) @ W64

    check_vector(f, X6)


# ---------------------------------------------------------------------------
# 4.7 output is an element of a block; blocks nothing depends on
# ---------------------------------------------------------------------------

def element_output(x):
    return np.tanh(x)[2]


def element_output_of_consumed_block(x):
    h = np.tanh(W6 @ x)
    g = np.sin(h) * h                 # consumes h whole, then g is indexed
    return g[4]


def dead_branch(x):
    h = np.tanh(x)
    np.sin(h) * 3.0                  # a block nothing depends on
    dead = np.exp(h) @ W6            # consumes h whole, dead
    del dead
    return np.sum(h * h)


def dead_consumer_after_output(x):
    h = np.tanh(W6 @ x)
    out = np.sum(h * x)
    np.tanh(h * 2.0)                 # recorded after the output
    return out


def dead_block_between(x):
    h = np.tanh(x * 1.4)
    unused = np.sin(h) @ W6          # sealed, dead, consumes h
    del unused
    g = np.cos(h) * h
    return np.sum(g)


@pytest.mark.parametrize("f", [element_output, element_output_of_consumed_block,
                               dead_branch, dead_consumer_after_output, dead_block_between],
                         ids=lambda f: f.__name__)
def test_element_outputs_and_dead_blocks(f):
    check_scalar(f, X6)


def test_element_output_analytic():
    for x in (X6, X6 + 1.0):
        expected = np.zeros(6)
        expected[2] = 1 - np.tanh(x[2]) ** 2
        _poison()
        close(fad.grad(element_output)(x), expected, atol=1e-13)
    tape = fad.record(element_output, X6)
    _poison()
    close(tape.gradient(X6 - 0.5), np.eye(6)[2] * (1 - np.tanh(X6[2] - 0.5) ** 2), atol=1e-13)


# ---------------------------------------------------------------------------
# 4.8 a small MLP against hand-written backprop
# ---------------------------------------------------------------------------

def test_mlp_matches_hand_written_backprop():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(7, 4))
    T = rng.normal(size=(7, 3))
    W1 = rng.normal(size=(4, 5)) * 0.5
    b1 = rng.normal(size=5) * 0.1
    W2 = rng.normal(size=(5, 3)) * 0.5
    b2 = rng.normal(size=3) * 0.1

    def loss(W1, b1, W2, b2):
        h = np.tanh(X @ W1 + b1)
        r = h @ W2 + b2 - T
        return 0.5 * np.sum(r * r)

    def backprop(W1, b1, W2, b2):
        h = np.tanh(X @ W1 + b1)
        r = h @ W2 + b2 - T
        rbar = r
        W2bar = h.T @ rbar
        b2bar = rbar.sum(axis=0)
        hbar = rbar @ W2.T
        zbar = hbar * (1 - h * h)
        W1bar = X.T @ zbar
        b1bar = zbar.sum(axis=0)
        return 0.5 * np.sum(r * r), (W1bar, b1bar, W2bar, b2bar)

    for scale in (1.0, 0.5, 1.7):
        params = (W1 * scale, b1 - scale, W2 * scale, b2 + scale)
        _poison()
        v, grads = fad.value_and_grad(loss, argnums=(0, 1, 2, 3))(*params)
        ev, egrads = backprop(*params)
        close(v, ev, atol=1e-13)
        for g, e in zip(grads, egrads):
            close(g, e, rtol=1e-12, atol=1e-12)

    # the loss in W1 alone, recorded once and replayed
    tape = fad.record(lambda w: loss(w, b1, W2, b2), W1)
    for t in (0.0, 0.1, -0.3):
        _poison()
        v, g = tape.value_and_gradient(W1 + t)
        ev, egrads = backprop(W1 + t, b1, W2, b2)
        close(v, ev, atol=1e-13)
        close(g, egrads[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# 4.9 second order on mixed code
# ---------------------------------------------------------------------------

def mixed_second_order(x):
    h = np.tanh(W6 @ x)
    g = np.sin(h) * h
    return np.sum(g * g) + h[1] * h[4] * x[0] + np.sum(np.exp(0.2 * h) * x)


@pytest.mark.parametrize("f", [mixed_second_order, whole_then_elements,
                               elements_between_blocks, primitive_of_block],
                         ids=lambda f: f.__name__)
def test_hessian_of_mixed_code(f):
    x = X6.copy()
    H = fad.hessian(f)(x)
    Hfd = fd_jacobian(fad.grad(f), x)
    np.testing.assert_allclose(H, Hfd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-12)
    V = np.random.default_rng(4).normal(size=(2, 6))
    np.testing.assert_allclose(fad.hvp(f, x, V), V @ H, rtol=1e-10, atol=1e-12)
    tape = fad.record(f, x)
    x2 = x + 1e-3
    np.testing.assert_allclose(tape.hessian(x2), fd_jacobian(fad.grad(f), x2),
                               rtol=1e-6, atol=1e-6)
    _poison()
    v, g, Hv = tape.value_gradient_hvp(x2, V[0])
    fd_close(g, fd_grad(f, x2))
    np.testing.assert_allclose(Hv, tape.hessian(x2) @ V[0], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# 4.10 random short programs
# ---------------------------------------------------------------------------

OPS = ("tanh", "sin", "mul", "add", "sum_scale", "matmul", "elem", "slice",
       "reshape", "reshape_mm", "exp")
PROG_W = np.random.default_rng(2026).normal(size=(6, 6)) * 0.5


def run_program(prog, out_kind, x):
    """A straight-line program over length-6 vectors (fastad or plain NumPy)."""
    vecs = [x]
    scalars = []
    for op, i, j in prog:
        u = vecs[i % len(vecs)]
        v = vecs[j % len(vecs)]
        if op == "tanh":
            vecs.append(np.tanh(u))
        elif op == "sin":
            vecs.append(np.sin(u))
        elif op == "exp":
            vecs.append(np.exp(0.3 * u))
        elif op == "mul":
            vecs.append(u * v)
        elif op == "add":
            vecs.append(u + 0.5 * v)
        elif op == "sum_scale":
            vecs.append(u * np.sum(v * 0.2))
        elif op == "matmul":
            vecs.append(PROG_W @ u if i % 2 else u @ PROG_W)
        elif op == "elem":
            scalars.append(u[i % 6] * v[j % 6])
        elif op == "slice":
            vecs.append(fad.concatenate([u[2:], v[:2]]) * 1.0 if i % 2 else u[::-1] * v)
        elif op == "reshape":
            vecs.append((u.reshape(2, 3) * PROG_W[:2, :3]).reshape(6))
        elif op == "reshape_mm":
            vecs.append((u.reshape(3, 2) @ PROG_W[:2, :2]).reshape(6) + v)
    last = vecs[-1]
    extra = 0.0
    for s in scalars:
        extra = extra + s
    if out_kind == "sum":
        return np.sum(last * last) + extra
    if out_kind == "elem":
        return last[j % 6] + extra
    if out_kind == "sum_elem":
        return np.sum(np.tanh(last)) + last[1] * last[4] + extra
    if out_kind == "vector":
        return last * 2.0 + extra
    return np.tanh(last)[1:4]            # "slice"


programs = st.tuples(
    st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 30), st.integers(0, 30)),
             min_size=1, max_size=7),
    st.sampled_from(["sum", "elem", "sum_elem", "vector", "slice"]),
    st.integers(0, 2**16),
)


@settings(max_examples=120, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_random_programs_against_finite_differences(p):
    prog, out_kind, seed = p
    rng = np.random.default_rng(seed)
    x = rng.normal(size=6) * 0.7

    def f(x):
        return run_program(prog, out_kind, x)

    if out_kind in ("vector", "slice"):
        J = fd_jacobian(f, x)
        Y = rng.normal(size=(3,) + J.shape[:-1])
        _poison()
        fd_close(fad.jacobian(f, mode="rev")(x), J)
        _, pullback = fad.vjp(f, x)
        _poison()
        fd_close(pullback(Y), Y.reshape(3, -1) @ J.reshape(-1, 6))
        tape = fad.record(f, x)
        x2 = x + 0.01 * rng.normal(size=6)
        _poison()
        fd_close(tape.vjp(x2, Y), Y.reshape(3, -1) @ fd_jacobian(f, x2).reshape(-1, 6))
        return
    _poison()
    fd_close(fad.grad(f)(x), fd_grad(f, x))
    tape = fad.record(f, x)
    for _ in range(2):
        x2 = x + 0.01 * rng.normal(size=6)
        _poison()
        v, g = tape.value_and_gradient(x2)
        np.testing.assert_allclose(v, f(x2), rtol=1e-12, atol=1e-12)
        fd_close(g, fd_grad(f, x2))
