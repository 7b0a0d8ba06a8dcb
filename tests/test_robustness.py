"""Long tapes, many recordings (memory stays flat) and concurrent recordings from threads."""
import gc
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastad as fad
from conftest import close


# ---------------------------------------------------------------------------
# long sequential chains: no recursion in the sweep
# ---------------------------------------------------------------------------

def test_200k_op_affine_chain():
    n = 100_000  # two ops per step: 200,000 ops
    a = 1.0000001

    def f(x):
        for _ in range(n):
            x = x * a + 0.1
        return x

    v, g = fad.value_and_grad(f)(0.5)
    # x_n = a^n x_0 + 0.1 (a^n - 1) / (a - 1): derivative a^n
    expected_g = a ** n
    close(g, expected_g, rtol=1e-9, atol=1e-15)
    expected_v = a ** n * 0.5 + 0.1 * (a ** n - 1.0) / (a - 1.0)
    close(v, expected_v, rtol=1e-6, atol=1e-15)


def test_200k_op_sin_chain():
    n = 200_000

    def f(x):
        for _ in range(n):
            x = fad.sin(x)
        return x

    x0 = 1.3
    g = fad.grad(f)(x0)
    # chain rule: product of cos(x_k) along the float trajectory
    x, prod = x0, 1.0
    for _ in range(n):
        prod *= math.cos(x)
        x = math.sin(x)
    close(g, prod, rtol=1e-9, atol=1e-15)


def test_long_array_loop_sum_of_squares():
    n = 100_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)

    def f(a):
        s = 0.0
        for i in range(n):
            s = s + a[i] * a[i]
        return s

    v, g = fad.value_and_grad(f)(x)
    close(v, float(np.sum(x * x)), rtol=1e-10, atol=1e-15)
    close(g, 2.0 * x, atol=1e-15)


def test_deep_chain_then_short_recordings_still_work():
    # after a huge tape, small recordings are unaffected
    assert fad.grad(lambda x: sum(x * 1.0 for _ in range(50_000)))(1.0) == 50_000.0
    assert fad.grad(lambda x: x * x + 3 * x)(1.5) == 6.0


# ---------------------------------------------------------------------------
# memory stays flat over many recordings
# ---------------------------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def test_memory_flat_over_one_million_small_recordings():
    g = fad.grad(lambda x: x * x + 3 * x)
    for _ in range(100_000):  # warm-up: pools, caches, allocator high-water marks
        g(1.5)
    gc.collect()
    before = _rss_bytes()
    last = None
    for _ in range(1_000_000):
        last = g(1.5)
    gc.collect()
    after = _rss_bytes()
    assert last == 6.0
    growth_mb = (after - before) / 2 ** 20
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB over 1,000,000 recordings"


def test_memory_flat_over_array_recordings_and_failures():
    x = np.linspace(-1.0, 1.0, 20)

    def f(a):
        s = 0.0
        for i in range(20):
            s = s + fad.sin(a[i]) * a[i]
        return s

    def bad(a):
        a[0] * a[1]
        raise KeyError("x")

    g = fad.grad(f)
    gb = fad.grad(bad)

    def run(k):
        for _ in range(k):
            g(x)
            try:
                gb(x)
            except KeyError:
                pass

    run(10_000)
    gc.collect()
    before = _rss_bytes()
    run(100_000)
    gc.collect()
    after = _rss_bytes()
    close(g(x), np.cos(x) * x + np.sin(x), atol=1e-15)
    growth_mb = (after - before) / 2 ** 20
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB over 100,000 array recordings"


# ---------------------------------------------------------------------------
# threads: each thread records on its own tape
# ---------------------------------------------------------------------------

def _poly_case(x):
    def f(x):
        s = 0.0
        for k in range(1, 200):
            s = s + x ** 2 * (1.0 / k)
            if k == 100:
                time.sleep(0)  # let another thread record in the middle of this recording
        return s

    expected = sum(2.0 * x / k for k in range(1, 200))
    return fad.grad(f)(x), expected


def _sin_case(x):
    def f(x):
        s = 0.0
        for k in range(300):
            s = s + fad.sin(x * (k + 1))
            if k == 150:
                time.sleep(0)
        return s

    expected = sum((k + 1) * math.cos(x * (k + 1)) for k in range(300))
    return fad.grad(f)(x), expected


def _array_case(x):
    v = np.array([x, 2.0 * x, -x, 0.5 + x])

    def f(a):
        s = 0.0
        for i in range(3):
            s = s + 100.0 * (a[i + 1] - a[i] ** 2) ** 2 + (1.0 - a[i]) ** 2
            time.sleep(0)
        return s

    expected = np.zeros(4)
    d = v[1:] - v[:-1] ** 2
    expected[:-1] += -400.0 * v[:-1] * d - 2.0 * (1.0 - v[:-1])
    expected[1:] += 200.0 * d
    return fad.grad(f)(v), expected


def _two_arg_case(x):
    def f(a, b):
        s = a * b
        for _ in range(100):
            s = fad.tanh(s) + a
        time.sleep(0)
        return s * b

    ga, gb = fad.grad(f, argnums=(0, 1))(x, 1.0 - x)
    # reference: forward-mode by hand along the float trajectory
    a, b = x, 1.0 - x
    s, ds_da, ds_db = a * b, b, a
    for _ in range(100):
        t = math.tanh(s)
        dt = 1.0 - t * t
        s, ds_da, ds_db = t + a, dt * ds_da + 1.0, dt * ds_db
    return np.array([ga, gb]), np.array([ds_da * b, ds_db * b + s])


CASES = [_poly_case, _sin_case, _array_case, _two_arg_case]


def _worker(case, barrier):
    barrier.wait()
    failures = []
    for j in range(200):
        x = 0.1 + 0.003 * j
        got, expected = case(x)
        if not np.allclose(got, expected, rtol=1e-10, atol=1e-12):
            failures.append((case.__name__, x, got, expected))
    return failures


def test_four_threads_concurrent_grads():
    barrier = threading.Barrier(len(CASES))
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = [pool.submit(_worker, case, barrier) for case in CASES]
        results = [fut.result(timeout=300) for fut in futures]
    failures = [f for r in results for f in r]
    assert failures == [], failures[:5]
    # and in the main thread afterwards
    assert fad.grad(lambda x: x * x + 3 * x)(1.5) == 6.0


def test_threads_same_function_concurrently():
    def f(a):
        s = 0.0
        for i in range(len(a)):
            s = s + fad.exp(a[i]) * a[i]
            if i % 50 == 0:
                time.sleep(0)
        return s

    gf = fad.grad(f)
    xs = [np.linspace(-1, 1, 200) + 0.01 * k for k in range(8)]

    def job(k):
        x = xs[k]
        out = []
        for _ in range(25):
            out.append(gf(x))
        return k, out

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(8)))
    for k, outs in results:
        expected = np.exp(xs[k]) * (1.0 + xs[k])
        for got in outs:
            close(got, expected, rtol=1e-12, atol=1e-15)


def test_var_from_other_thread_recording_is_tape_error():
    """A Var that escaped a recording in another thread cannot be used here."""
    stash = []

    def f(x):
        stash.append(x)
        return x * x

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(fad.grad(f), 2.0).result() == 4.0
    with pytest.raises(fad.TapeError):
        fad.grad(lambda y: y * stash[0])(1.0)
    assert fad.grad(lambda x: x * x + 3 * x)(1.5) == 6.0


def test_live_var_from_another_threads_recording_is_tape_error():
    """Two recordings alive at once in two threads: mixing their Vars is a TapeError."""
    box = {}
    have_var = threading.Event()
    done = threading.Event()

    def other_thread():
        def f(x):
            box["var"] = x
            have_var.set()
            done.wait(timeout=60)  # keep this recording alive while the main thread records
            return x * x
        return fad.grad(f)(3.0)

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(other_thread)
        assert have_var.wait(timeout=60)
        try:
            with pytest.raises(fad.TapeError):
                fad.grad(lambda y: y * box["var"])(2.0)
        finally:
            done.set()
        assert fut.result(timeout=60) == 6.0
    assert fad.grad(lambda x: x * x + 3 * x)(1.5) == 6.0
