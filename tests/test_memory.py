"""fastad's allocator for NumPy data under the transforms (fastad._memory).

Freed blocks of 64 KB and more are cached and handed out again, so these
check what a cache can get wrong: a recycled block must read as zeros where
NumPy asks for zeros, a resize must keep the data, arrays that outlive the
call must stay valid, the cache must stay bounded and empty on
fad.release_memory(), threads must not share a block, the allocator in
place before a transform must come back even when f raises, and memory
must hold steady over many calls.  Gradients are checked against
closed-form answers.
"""
import gc
import os
import threading

import numpy as np
import pytest

import fastad as fad
from fastad import _memory

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:                          # NumPy < 2
    from numpy.core.multiarray import get_handler_name


def _owner(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _tanh_loss(x):
    return np.sum(np.tanh(x) ** 2)


def _tanh_grad(x):
    t = np.tanh(x)
    return 2 * t * (1 - t * t)


def test_transforms_allocate_through_the_cache_and_restore_the_default():
    x = np.linspace(-2.0, 2.0, 100_000)
    before = get_handler_name()
    g = fad.grad(_tanh_loss)(x)
    np.testing.assert_allclose(g, _tanh_grad(x), rtol=1e-12, atol=1e-15)
    assert get_handler_name(_owner(g)) == "fastad_cache"
    assert get_handler_name() == before          # outside the call: as it was
    # also when f raises
    with pytest.raises(KeyError):
        fad.grad(lambda v: {}["missing"] + np.sum(v))(x)
    assert get_handler_name() == before
    for call in (lambda: fad.hvp(_tanh_loss, x[:1000], np.ones(1000)),
                 lambda: fad.jvp(_tanh_loss, x[:1000], np.ones(1000)),
                 lambda: fad.vjp(np.tanh, x[:1000])[1](np.ones(1000)),
                 lambda: fad.jacobian(np.tanh)(x[:300])):
        call()
        assert get_handler_name() == before


def test_recycled_blocks_read_as_zeros_and_resize_keeps_data():
    n = 300_000                                   # 2.4 MB: a cached size class
    previous = _memory.install()
    try:
        for _ in range(3):
            a = np.full(n, 7.0)                   # dirty a block, give it back
            del a
            z = np.zeros(n)                       # calloc from the cache
            assert not z.any()
            del z
        b = np.arange(n, dtype=np.float64)
        b.resize(2 * n, refcheck=False)           # realloc to a larger class
        assert np.array_equal(b[:n], np.arange(n)) and not b[n:].any()
        b.resize(n // 2, refcheck=False)          # and back down
        assert np.array_equal(b, np.arange(n // 2))
        small = np.ones(10)                       # below the cached sizes: plain malloc
        small.resize(100_000, refcheck=False)
        assert small[:10].sum() == 10.0 and not small[10:].any()
    finally:
        _memory.restore(previous)


def test_arrays_outliving_the_call_stay_valid():
    xs = [np.linspace(-1.0, 1.0, n) for n in (20_000, 50_000, 120_000)]
    grads = [fad.grad(_tanh_loss)(x) for x in xs for _ in range(3)]
    for _ in range(5):                            # later calls reuse freed blocks only
        fad.grad(_tanh_loss)(xs[-1])
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, _tanh_grad(xs[i // 3]), rtol=1e-12, atol=1e-15)


def test_cache_is_bounded_and_released():
    fad.release_memory()
    assert _memory.cached_bytes() == 0
    previous = _memory.install()
    try:
        blocks = [np.empty(int(n)) for n in np.geomspace(10_000, 8_000_000, 60)]
        del blocks                                # ~280 MB freed at once
    finally:
        _memory.restore(previous)
    assert 0 < _memory.cached_bytes() <= 128 * 2 ** 20
    fad.release_memory()
    assert _memory.cached_bytes() == 0
    x = np.linspace(-1.0, 1.0, 50_000)            # and fastad keeps working
    np.testing.assert_allclose(fad.grad(_tanh_loss)(x), _tanh_grad(x), rtol=1e-12)


def test_threads_get_blocks_of_their_own():
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=40_000 + 1_000 * k) for k in range(4)]
    out, errors = [None] * 4, []

    def work(k):
        try:
            for _ in range(30):
                out[k] = fad.grad(_tanh_loss)(xs[k])
                np.testing.assert_allclose(out[k], _tanh_grad(xs[k]), rtol=1e-12, atol=1e-15)
        except Exception as e:                    # pragma: no cover - reported below
            errors.append(e)
    ths = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert not errors, errors
    assert get_handler_name() == "default_allocator"


def test_memory_holds_steady_over_calls_of_many_sizes():
    sizes = [30_000 + 17_000 * k for k in range(12)]
    xs = [np.linspace(-1.0, 1.0, n) for n in sizes]
    g = fad.grad(_tanh_loss)

    def run(rounds):
        for _ in range(rounds):
            for x in xs:
                g(x)
    run(3)
    gc.collect()
    before = _rss_mb()
    run(25)
    gc.collect()
    growth = _rss_mb() - before
    assert growth < 40, f"RSS grew by {growth:.1f} MB over {25 * len(xs)} gradients"
