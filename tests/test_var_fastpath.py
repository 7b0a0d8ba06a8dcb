"""Issue #19, item 1: Var's operators run from its number slots (a fast path
for Var and float/int operands on this thread's recording, the general path
for the rest), Var memory comes from a free list, and x[i] on a 1-d Array
reads the slot directly.  Every operand combination, the errors, the tape
growing past its capacity, and steady memory."""
import operator
import threading

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_grad, rosen_products

OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
       "div": operator.truediv, "pow": operator.pow}
# d(a op b)/da, d(a op b)/db
PARTIALS = {"add": lambda a, b: (1.0, 1.0), "sub": lambda a, b: (1.0, -1.0),
            "mul": lambda a, b: (b, a), "div": lambda a, b: (1.0 / b, -a / b ** 2),
            "pow": lambda a, b: (b * a ** (b - 1), a ** b * np.log(a) if a > 0 else np.nan)}
CONSTANTS = [2.5, 3, -7, np.float64(1.75), np.int64(4), True, np.array(0.5)]


@pytest.mark.parametrize("name", list(OPS))
def test_var_op_var(name):
    op = OPS[name]
    a, b = 1.3, -0.7
    g = fad.grad(lambda x: op(x[0], x[1]))(np.array([a, b]))
    close(g, PARTIALS[name](a, b))
    # the same Var on both sides
    close(fad.grad(lambda x: op(x, x * 1.0))(a),
          sum(PARTIALS[name](a, a)) if name != "sub" else 0.0)


def test_pow_with_a_modulus_is_refused():
    with pytest.raises(TypeError, match="unsupported operand"):
        fad.grad(lambda x: pow(x, 2, 3))(1.5)


@pytest.mark.parametrize("c", CONSTANTS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("name", list(OPS))
def test_var_op_constant_both_sides(name, c):
    op = OPS[name]
    a = 1.3
    cv = float(c)
    close(fad.grad(lambda x: op(x, c))(a), PARTIALS[name](a, cv)[0])
    close(fad.grad(lambda x: op(c, x))(a), PARTIALS[name](cv, a)[1])
    with np.errstate(invalid="ignore"):     # (-7.0) ** 1.3: NaN, as NumPy
        close(fad.value_and_grad(lambda x: op(x, c))(a)[0], op(np.float64(a), cv))
        close(fad.value_and_grad(lambda x: op(c, x))(a)[0], op(np.float64(cv), a))


def test_negation_and_in_place_operators():
    def f(x):
        s = -x[0]
        s += x[1]
        s *= x[0]
        s -= 2
        s /= x[1]
        return -s
    x = np.array([0.9, 1.6])
    close(fad.grad(f)(x), fd_grad(f, x), rtol=1e-7, atol=1e-8)


def test_division_by_zero_follows_numpy():
    with np.errstate(divide="ignore", invalid="ignore"):
        v, g = fad.value_and_grad(lambda x: x / 0.0)(1.0)
    assert v == np.inf and g == np.inf


def test_big_ints_and_other_operands():
    with pytest.raises(OverflowError):
        fad.grad(lambda x: x * 10 ** 400)(1.0)
    with pytest.raises(TypeError):
        fad.grad(lambda x: x * "a")(1.0)
    with pytest.raises(TypeError):
        fad.grad(lambda x: None - x)(1.0)
    # a Var with an ndarray or an Array: elementwise, through the general path
    close(fad.grad(lambda x: np.sum(x[0] * np.array([1.0, 2.0])))(np.array([3.0, 4.0])),
          [3.0, 0.0])
    close(fad.grad(lambda x: np.sum(x - x[1]))(np.array([3.0, 4.0, 5.0])),
          [1.0, -2.0, 1.0])
    fad.grad(lambda x: x * x)(1.0)        # still works


def test_the_tape_grows_past_its_capacity():
    # many doublings of the tape (it starts at 256 nodes): each full tape goes
    # through the general path once, which grows it
    f = rosen_products
    x = np.random.default_rng(3).uniform(-1, 1, 5000)
    a, c = x[:-1], x[1:]
    g = np.zeros_like(x)
    g[:-1] += -2 * (1 - a) - 400 * a * (c - a * a)
    g[1:] += 200 * (c - a * a)
    close(fad.grad(f)(x), g, rtol=1e-12, atol=1e-10)


def test_array_items():
    x = np.array([1.0, 2.0, 3.0])

    def f(x):
        return x[0] * x[-1] + x[-3] * x[2] + x[np.int64(1)]
    close(fad.grad(f)(x), [6.0, 1.0, 2.0])
    with pytest.raises(IndexError, match="out of bounds"):
        fad.grad(lambda x: x[0] * x[3])(x)
    with pytest.raises(IndexError, match="out of bounds"):
        fad.grad(lambda x: x[0] * x[-4])(x)
    with pytest.raises((IndexError, OverflowError)):
        fad.grad(lambda x: x[0] * x[2 ** 70])(x)
    # 2-d: rows are Arrays
    close(fad.grad(lambda m: m[1][0] * m[0][1] + fad.sum(m[0]))(np.arange(4.0).reshape(2, 2)),
          [[1.0, 3.0], [1.0, 0.0]])


def _leak(store):
    def f(x):
        store.append(x[0])
        store.append(x[0] * x[1])
        return x[0] * x[1]
    fad.grad(f)(np.array([1.0, 2.0]))
    return store


OPERATIONS = {
    "v*c": lambda v: v * 2.0, "c*v": lambda v: 2.0 * v, "v*v": lambda v: v * v,
    "v+i": lambda v: v + 1, "c-v": lambda v: 1.0 - v, "v/c": lambda v: v / 3.0,
    "-v": lambda v: -v,
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_var_of_an_ended_recording(name):
    v = _leak([])[1]
    with pytest.raises(fad.TapeError, match="recording that has ended"):
        OPERATIONS[name](v)
    # also while another recording runs: the error names the ended one
    def g(x):
        OPERATIONS[name](v)
        return x
    with pytest.raises(fad.TapeError, match="recording that has ended"):
        fad.grad(g)(1.0)
    close(fad.grad(lambda x: x * x)(3.0), 6.0)


@pytest.mark.parametrize("name", ["v*c", "c-v", "v*v", "-v"])
def test_a_var_used_in_another_thread(name):
    errors = []

    def f(x):
        def run():
            try:
                OPERATIONS[name](x)
            except Exception as exc:   # noqa: BLE001 - handed back to the test
                errors.append(exc)
        th = threading.Thread(target=run)
        th.start()
        th.join()
        return x * x
    close(fad.grad(f)(2.0), 4.0)
    assert isinstance(errors[0], fad.TapeError)
    assert "recording running in another thread" in str(errors[0])


def test_mixing_two_recordings():
    def outer(x):
        inner_vars = []

        def inner(y):
            inner_vars.append(y)
            return y * x       # x belongs to the outer recording
        with pytest.raises(fad.TapeError):
            fad.record(inner, 1.0)
        return x * x
    close(fad.grad(outer)(2.0), 4.0)


def test_vars_free_list_keeps_memory_steady():
    def f(x):
        s = 0.0
        for i in range(len(x)):
            s = s + x[i] * x[i]
        return s
    x = np.ones(200)
    g = fad.grad(f)

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096
    for _ in range(200):
        g(x)
    before = rss()
    for _ in range(3000):         # 1.8 million operations
        g(x)
    assert rss() - before < 4 * 2 ** 20
    # a Var kept alive is still right after others were recycled
    kept = []

    def h(x):
        kept.append(x[0] * 3.0)
        return x[0] * x[1]
    fad.grad(h)(np.array([2.0, 5.0]))
    for _ in range(10):
        g(x)
    assert kept[0].value == 6.0


def test_explicit_dunder_calls_agree_with_the_operators():
    def f(x):
        a, b = x[0], x[1]
        return (a.__mul__(b) + a.__rsub__(1.0) + b.__truediv__(2) + a.__pow__(2)
                + b.__neg__() + a.__radd__(3.0))
    x = np.array([0.7, 1.9])
    close(fad.grad(f)(x), fd_grad(f, x), rtol=1e-7, atol=1e-8)
    close(fad.value_and_grad(f)(x)[0],
          0.7 * 1.9 + (1.0 - 0.7) + 1.9 / 2 + 0.7 ** 2 - 1.9 + 3.7)
