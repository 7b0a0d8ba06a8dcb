"""In-place steps in fad.grad: element-wise operations write over dead temporaries.

fad.grad records for one reverse sweep (Tape.single_sweep), so an element-wise
op whose operand is the last block's output, referenced by nothing but the
caller's expression, writes its values over that operand's slots (as NumPy
does with temporaries).  Every gradient here is compared with fad.vjp, which
keeps every value (so the two must agree to the bit), and with central
finite differences.
"""
import numpy as np
import pytest

import fastad as fad
from fastad import transforms
from fastad._var import consume, temp_refs

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
    would after misjudging it dead (C code holding its only reference can
    make the count look like a temporary's, which Python code cannot)."""
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
    for _ in range(50):
        g(W0)
    tracemalloc.start()
    g(W0)
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(300):
        g(W0)
    last, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert last - first < 64 * 1024


# ---------------------------------------------------------------- handed-over gradients

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
