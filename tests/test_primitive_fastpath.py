"""The compiled path of a primitive call (fastad/_primcall.pyx).

Calls on Vars, Arrays and numbers without keywords are recorded in C, and a
one-seed pullback through a looped vjp rule runs in C; everything else goes
to the Python code in fastad.primitives.  These tests check that the two
paths record the same blocks, that gradients through the C path match
formulas written out by hand, and that its checks raise the general path's
errors.
"""
import gc
import weakref

import numpy as np
import pytest

import fastad as fad
from fastad import _primcall, primitives as P
from fastad._var import active_info, tape_of
from conftest import close


def counted(fn, vjp, calls):
    prim = fad.primitive(fn)

    @prim.defvjp
    def _(*a):
        calls["vjp"] += 1
        return vjp(*a)
    return prim


# ---------------------------------------------------------------- same blocks

def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and np.shape(a) == np.shape(b) and \
            np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if type(a).__name__ == "Operand":
        sa, sb = a.__getstate__(), b.__getstate__()
        return type(b) is type(a) and sa.keys() == sb.keys() and \
            all(_same(sa[k], sb[k]) for k in sa)
    return type(a) is type(b) and (a is b or a == b)


def _two_blocks(prim, args):
    """The blocks recorded for prim(*args) by the C path and by the general one."""
    got = []

    def f(x):
        a = [x if s == "x" else x[s] if not isinstance(s, float) else s for s in args]
        tape = tape_of(a[0]) if type(a[0]) is fad.Var else active_info(a[0])[0]
        fast = prim(*a)
        general = prim._call(tuple(a), {})
        got.extend(tape.blocks[-2:])
        return fad.sum(fast) + fad.sum(general)

    fad.grad(f)(np.linspace(0.2, 0.9, 6))
    return got


@pytest.mark.parametrize("args", [
    (0,), (0, 2.5), (1, 3),                     # scalars: ScalarPrimitiveBlock
    ("x",), (slice(1, 4), 2.0), (slice(0, 6, 2),), (0, slice(2, 5)),   # PrimitiveBlock
])
def test_the_c_path_records_the_blocks_the_general_path_records(args):
    prim = fad.primitive(lambda *a: sum(np.sin(v) for v in a) * 1.0)

    def vjp(g, y, *a):
        c = tuple(g * np.cos(v) if np.ndim(v) else np.sum(g * np.cos(v)) for v in a)
        return c if len(a) > 1 else c[0]
    prim.defvjp(vjp)
    fast, general = _two_blocks(prim, args)
    assert type(fast) is type(general)
    df, dg = vars(fast), vars(general)
    assert df.keys() == dg.keys()
    for k in df:
        if k in ("start", "stop"):
            assert df[k] - fast.start == dg[k] - general.start
        else:
            assert _same(df[k], dg[k]), k


# ---------------------------------------------------------------- gradients

def test_scalar_call_with_a_constant_and_two_vars():
    calls = {"vjp": 0}
    f = counted(lambda a, c, b: a * a * c + np.sin(b) * a,
                lambda g, y, a, c, b: (g * (2 * a * c + np.sin(b)), None, g * np.cos(b) * a),
                calls)
    x = np.array([0.7, -1.3])
    got = fad.grad(lambda x: f(x[0], 3, x[1]) * 2.0)(x)
    a, b = x
    close(got, 2.0 * np.array([2 * a * 3 + np.sin(b), np.cos(b) * a]))
    assert calls["vjp"] == 1


def test_array_call_on_strided_repeated_and_mixed_arguments():
    # x[::2] is not a run of slots; x[[0, 0, 3]] repeats slot 0 (its cotangents add up)
    calls = {"vjp": 0}
    f = counted(lambda u, v, s, c: u * v * s + c,
                lambda g, y, u, v, s, c: (g * v * s, g * u * s, np.sum(g * u * v), None),
                calls)
    x = np.array([0.5, -0.2, 1.1, 0.9, 2.0, -0.7])

    def h(x):
        return fad.sum(f(x[::2], x[[0, 0, 3]], x[5], 2) ** 2)

    u, v, s = x[::2], x[[0, 0, 3]], x[5]
    r = u * v * s + 2
    want = np.zeros(6)
    np.add.at(want, [0, 2, 4], 2 * r * v * s)
    np.add.at(want, [0, 0, 3], 2 * r * u * s)
    want[5] += np.sum(2 * r * u * v)
    close(fad.grad(h)(x), want)
    assert calls["vjp"] == 1


def test_rule_results_the_c_path_does_not_take_are_converted_by_the_general_check():
    # an int and a float32 array, a Python int: _check_cots makes them float64
    f = fad.primitive(lambda u, v: u * v)
    f.defvjp(lambda g, y, u, v: (np.array([1, 2, 3]), (g * u).astype(np.float32)))
    x = np.array([1.0, 2.0, 3.0])
    got = fad.grad(lambda x: fad.sum(f(x, 2.0 * x)))(x)
    close(got, np.array([1.0, 2.0, 3.0]) + 2.0 * x)

    s = fad.primitive(lambda a: 3.0 * a)
    s.defvjp(lambda g, y, a: int(3 * g))          # (g = 2.0 here)
    assert fad.grad(lambda x: s(x) * 2.0)(0.4) == 6.0


def test_zero_cotangent_skips_the_rule_and_nan_reaches_it():
    for m in (1, 3):
        calls = {"vjp": 0}
        f = counted(lambda a: a * 2.0, lambda g, y, a: g * 2.0, calls)
        x = 0.5 if m == 1 else np.full(3, 0.5)
        red = (lambda v: v) if m == 1 else fad.sum
        assert np.all(fad.grad(lambda x: red(f(x)) * 0.0)(x) == 0.0)
        assert calls["vjp"] == 0                 # strong zero: not even called
        with np.errstate(invalid="ignore"):
            g = fad.grad(lambda x: red(f(x)) * np.nan)(x)
        assert np.all(np.isnan(g)) and calls["vjp"] == 1


def test_the_rule_gets_its_own_cotangent_array():
    # (a rule writing into ybar must not change what other blocks see)
    def rule(g, y, a):
        out = g * 2.0
        g[...] = 1e300
        return out
    f = fad.primitive(lambda a: a * 2.0)
    f.defvjp(rule)
    x = np.array([1.0, -2.0])
    close(fad.grad(lambda x: fad.sum(f(x) * 3.0) + fad.sum(x * 5.0))(x),
                 np.full(2, 11.0))


# ---------------------------------------------------------------- errors

def test_errors_of_the_c_path_are_the_general_paths():
    f = fad.primitive(lambda a: a * 2.0)
    with pytest.raises(TypeError, match="no derivative rule"):
        fad.grad(f)(1.0)
    with pytest.raises(TypeError, match="no derivative rule"):
        fad.grad(lambda x: fad.sum(f(x)))(np.ones(2))
    f.defvjp(lambda g, y, a: np.ones(5))
    with pytest.raises(ValueError, match=r"'<lambda>'.*shape \(5,\) for argument 0, which "
                                         r"has shape \(2,\)"):
        fad.grad(lambda x: fad.sum(f(x)))(np.ones(2))
    f.defvjp(lambda g, y, a: (g, g))
    with pytest.raises(ValueError, match=r"one cotangent per positional argument \(1"):
        fad.grad(lambda x: fad.sum(f(x)))(np.ones(2))
    with pytest.raises(ValueError, match=r"one cotangent per positional argument \(1"):
        fad.grad(f)(1.0)
    f.defvjp(lambda g, y, a: "no")
    with pytest.raises(TypeError, match="returned a str as the cotangent of argument 0"):
        fad.grad(f)(1.0)
    bad = fad.primitive(lambda a: [1.0, 2.0])
    bad.defvjp(lambda g, y, a: g)
    for x in (1.0, np.ones(2)):
        with pytest.raises(TypeError, match="must return a float or an ndarray of real"):
            fad.grad(lambda x: fad.sum(bad(x)))(x)
    # the next call works normally
    f.defvjp(lambda g, y, a: g * 2.0)
    assert fad.grad(f)(1.0) == 2.0


def test_two_recordings_in_one_call():
    f = fad.primitive(lambda a, b: a * b)
    f.defvjp(lambda g, y, a, b: (g * b, g * a))
    kept = []
    fad.grad(lambda x: kept.append(x) or x * 1.0)(1.0)
    fad.grad(lambda x: kept.append(x) or fad.sum(x))(np.ones(2))
    with pytest.raises(fad.TapeError):
        fad.grad(lambda x: f(x, kept[0]))(2.0)
    with pytest.raises(fad.TapeError):
        fad.grad(lambda x: fad.sum(f(x, kept[1])))(np.ones(2))


def test_a_block_beyond_the_adjoint_buffer_is_an_error_not_a_crash():
    f = fad.primitive(lambda a: a)
    f.defvjp(lambda g, y, a: g)
    blk = P.ScalarPrimitiveBlock(f, [10 ** 6], [None], {})
    blk.start, blk.stop = 1, 2
    adj = np.ones((4, 1))
    with pytest.raises(IndexError):
        blk.reverse(None, (1.0, [1.0]), adj, 1)
    blk.start, blk.stop = 10 ** 6, 10 ** 6 + 1
    with pytest.raises(IndexError):
        blk.reverse(None, (1.0, [1.0]), adj, 1)


# ---------------------------------------------------------------- memory

def test_blocks_keep_no_collector_tracked_number_lists_and_die_with_their_tape():
    f = fad.primitive(lambda a: a * 2.0)
    f.defvjp(lambda g, y, a: g * 2.0)
    refs = []

    def h(x):
        y = f(x[0])
        z = f(x)
        tape = tape_of(y)
        sb, ab = tape.blocks[-2:]
        assert not gc.is_tracked(sb.slots) and not gc.is_tracked(sb.consts)
        assert not gc.is_tracked(sb.state) and not gc.is_tracked(sb.state[1])
        assert not gc.is_tracked(ab.state) and not gc.is_tracked(ab.state[1])
        assert not gc.is_tracked(ab.ops) and not any(map(gc.is_tracked, ab.ops))
        refs.extend([weakref.ref(sb), weakref.ref(ab)])
        return y + fad.sum(z)

    close(fad.grad(h)(np.ones(3)), np.array([4.0, 2.0, 2.0]))
    gc.collect()
    assert all(r() is None for r in refs)


def test_primitive_is_the_compiled_core():
    assert issubclass(P.Primitive, _primcall.PrimitiveCore)
    f = fad.primitive(lambda a: a)
    assert f(3.0) == 3.0 and f.__name__ == "<lambda>"
