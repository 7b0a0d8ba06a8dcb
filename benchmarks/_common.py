"""Shared by the benchmark scripts: the timing rule and the Rosenbrock loop."""
import time

import numpy as np


def median_time(fn, reps=9):
    """Median wall time of fn() over reps calls (time.perf_counter)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def rosen(x):
    """Extended Rosenbrock as a scalar loop (works on floats, Vars and Arrays)."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (1 - x[i]) ** 2 + 100 * (x[i + 1] - x[i] ** 2) ** 2
    return s


def rosen_grad(x):
    """Its analytic gradient."""
    g = np.zeros_like(x)
    g[:-1] = -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g
