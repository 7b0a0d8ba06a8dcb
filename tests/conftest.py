"""Helpers shared by the test files.

pytest loads this module first and puts tests/ on sys.path (the default
"prepend" import mode; tests/ is not a package), so a test file takes what
it needs with ``from conftest import close, fd_grad, ...``.

Everything here is independent of fastad except fd_hessian (central
differences of fad.grad): the references a test checks fastad against must
not go through fastad.

Tolerances and steps are parameters, not constants: where the copies these
replace used other defaults, the calls pass their own values.
"""
import math
import zlib

import numpy as np

# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------


def close(got, expected, rtol=1e-12, atol=1e-12):
    """got equals expected up to rounding (an answer computed another way)."""
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def fd_close(got, expected, rtol=1e-6, atol=1e-7, scale_atol=False):
    """got agrees with a finite-difference estimate.  With scale_atol, atol is
    relative to the largest |expected| (at least 1)."""
    if scale_atol:
        atol = atol * max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# central finite differences
# ---------------------------------------------------------------------------

def _step(h, v, relative):
    return h * max(1.0, abs(float(v))) if relative else h


def fd_grad(f, x, h=1e-6, relative=True):
    """Central differences of the scalar function f at x.

    x is a number (f is called with floats, the result is a float) or an
    ndarray (f is called with arrays of x's shape, the result has x's shape).
    The step is h * max(1, |x_i|), or h itself with relative=False."""
    scalar = not isinstance(x, np.ndarray)
    x0 = np.array(x, dtype=np.float64)
    flat = x0.reshape(-1)
    g = np.empty(flat.size)
    for i in range(flat.size):
        step = _step(h, flat[i], relative)
        xp, xm = flat.copy(), flat.copy()
        xp[i] += step
        xm[i] -= step
        if scalar:
            fp, fm = f(float(xp[0])), f(float(xm[0]))
        else:
            fp, fm = f(xp.reshape(x0.shape)), f(xm.reshape(x0.shape))
        g[i] = (float(fp) - float(fm)) / (2 * step)
    return float(g[0]) if scalar else g.reshape(x0.shape)


def fd_grad_leaves(f, leaves, h=1e-6, relative=True):
    """Central differences of the scalar f(tuple of arrays) with respect to
    each array: a list, one gradient per leaf (the others held fixed)."""
    out = []
    for i, leaf in enumerate(leaves):
        def fi(a, i=i):
            p = list(leaves)
            p[i] = a
            return f(tuple(p))
        out.append(fd_grad(fi, np.array(leaf, dtype=np.float64), h=h, relative=relative))
    return out


def fd_jacobian(f, x, h=1e-6, relative=True):
    """Central differences of f (arrays in, array-like out): shape out.shape + x.shape.

    The step is h * max(1, |x_i|), or h itself with relative=False."""
    x = np.array(x, dtype=np.float64)
    y0 = np.asarray(f(x), dtype=np.float64)
    J = np.empty(y0.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        step = _step(h, x[idx], relative)
        xp, xm = x.copy(), x.copy()
        xp[idx] += step
        xm[idx] -= step
        J[(Ellipsis,) + idx] = (np.asarray(f(xp), dtype=np.float64)
                                - np.asarray(f(xm), dtype=np.float64)) / (2 * step)
    return J


def fd_hessian(f, x, h=1e-5, relative=True):
    """Central differences of fad.grad(f): shape x.shape + x.shape, symmetrized."""
    import fastad as fad
    x = np.array(x, dtype=np.float64)
    H = fd_jacobian(fad.grad(f), x, h=h, relative=relative)
    n = x.size
    Hm = H.reshape(n, n)
    return (0.5 * (Hm + Hm.T)).reshape(x.shape + x.shape)


# ---------------------------------------------------------------------------
# random points
# ---------------------------------------------------------------------------

def rng_for(*key):
    """A generator seeded by the test's parameters (stable across runs)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random_points(n, count, seed, lo=-1.5, hi=1.5):
    """count points of R^n, uniform in [lo, hi), from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, n) for _ in range(count)]


# ---------------------------------------------------------------------------
# plain references
# ---------------------------------------------------------------------------

def sigmoid_float(x):
    """The logistic function of a float, without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def softplus_float(x):
    """log(1 + exp(x)) of a float, without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid_np(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax_np(x, axis=None):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# the extended (chained) Rosenbrock function, sum of
# 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2

def rosen_loop(x):
    """A loop over scalars (Vars inside fastad)."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosen_products(x):
    """The same loop written with products (Python's float ** is slow, so
    this is the form whose recording cost shows)."""
    s = 0.0
    for i in range(len(x) - 1):
        a = 1 - x[i]
        b = x[i + 1] - x[i] * x[i]
        s = s + a * a + 100.0 * (b * b)
    return s


def rosen_vec(x):
    """Whole-array operations."""
    import fastad as fad
    return fad.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosen_np(x):
    """The value, in plain NumPy."""
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rosen_grad_np(x):
    """The gradient, written out by hand."""
    g = np.zeros_like(x)
    a = x[1:] - x[:-1] ** 2
    g[:-1] += -400.0 * x[:-1] * a - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * a
    return g


def rosen_hess_np(x):
    """The Hessian, written out by hand (independent of fastad and SciPy)."""
    n = x.size
    H = np.zeros((n, n))
    i = np.arange(n - 1)
    H[i, i] += 2 - 400 * (x[1:] - x[:-1] ** 2) + 800 * x[:-1] ** 2
    H[i + 1, i + 1] += 200
    H[i, i + 1] = H[i + 1, i] = -400 * x[:-1]
    return H


# ---------------------------------------------------------------------------
# sparse results and colorings
# ---------------------------------------------------------------------------

def dense(m):
    """The dense array of a CSR result (which it must be)."""
    import scipy.sparse as sp
    assert sp.issparse(m) and m.format == "csr", type(m)
    return m.toarray()


def n_colors(c):
    """The number of colors of a coloring (-1 marks an uncolored index)."""
    c = np.asarray(c)
    return int(c.max()) + 1 if c.size and c.max() >= 0 else 0


# ---------------------------------------------------------------------------
# pytrees
# ---------------------------------------------------------------------------

def leaves_of(t):
    """The leaves of a tree of dicts (sorted keys), lists and tuples; None is empty."""
    if t is None:
        return []
    if isinstance(t, dict):
        return [v for k in sorted(t) for v in leaves_of(t[k])]
    if isinstance(t, (list, tuple)):
        return [v for o in t for v in leaves_of(o)]
    return [t]


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

def run_in_threads(work, nthreads=4):
    """work(tid) in nthreads threads started together (a barrier); the results in tid order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    barrier = threading.Barrier(nthreads, timeout=60)

    def run(tid):
        barrier.wait()
        return work(tid)

    with ThreadPoolExecutor(max_workers=nthreads) as ex:
        return list(ex.map(run, range(nthreads)))
