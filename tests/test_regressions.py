"""Regressions found in review."""
import numpy as np

import fastad as fad
from conftest import fd_grad, rosen_loop


def test_block_state_survives_tape_growth():
    # Matmul kept views of its operands in the tape's value buffer, which is
    # reallocated when the tape grows: the pullback then read freed memory.
    keep = fad.record(lambda x: x[0] * 2.0, np.ones(1))   # a live tape: the next one starts small

    def f(a):
        M = fad.reshape(a, (2, 2))
        s = fad.sum(M @ M)
        for i in range(2000):
            s = s + 1e-3 * a[i % 4]
        return s

    a = np.array([0.5, -0.25, 1.0, 2.0])
    g = fad.grad(f)(a)
    fd = fd_grad(lambda b: np.sum((lambda M: M @ M)(b.reshape(2, 2))), a, relative=False) \
        + 1e-3 * 500
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    assert keep(np.ones(1)) == 2.0


def test_recorded_constant_is_owned_by_the_tape():
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    tape = fad.record(lambda x: fad.sum(W @ x), np.ones(2))
    W[0, 0] = 100.0                      # the caller reuses its array
    np.testing.assert_allclose(tape.gradient(np.ones(2)), [4.0, 6.0])


def test_tape_point_keeps_adjoints_consistent():
    # TapePoint caches the adjoints and second partials after its first product
    from scipy.optimize import rosen_der, rosen_hess_prod

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 12)
    tape = fad.record(rosen_loop, x)
    x2 = x + 0.1
    p = tape.at(x2)
    for _ in range(3):
        v = rng.standard_normal(12)
        np.testing.assert_allclose(p.hvp(v), rosen_hess_prod(x2, v), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(p.gradient(), rosen_der(x2), rtol=1e-12, atol=1e-10)
    V = rng.standard_normal((4, 12))
    np.testing.assert_allclose(p.hvp(V), [rosen_hess_prod(x2, v) for v in V], rtol=1e-12, atol=1e-10)
    q = tape.at(x)            # another point on the same tape does not disturb p
    np.testing.assert_allclose(q.gradient(), rosen_der(x), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(p.hvp(V[0]), rosen_hess_prod(x2, V[0]), rtol=1e-12, atol=1e-10)


def test_tape_point_jvp_matches_replayed_jvp():
    A = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])

    def f(x):
        return np.tanh(A @ x) * x[0]
    x = np.array([0.3, -0.2, 0.8])
    tape = fad.record(f, x)
    x2 = x + 0.05
    V = np.eye(3)
    J = np.stack([tape.jvp(x2, v) for v in V], axis=1)
    p = tape.at(x2)
    np.testing.assert_allclose(p.jvp(V).T, J, rtol=1e-13)
    # the analytic Jacobian: d/dx [tanh(A x) x0]
    t = np.tanh(A @ x2)
    expect = (1 - t ** 2)[:, None] * A * x2[0]
    expect[:, 0] += t
    np.testing.assert_allclose(J, expect, rtol=1e-12)


def test_ndarray_methods_common_in_numpy_code():
    A = np.array([[1.0, 5.0, 2.0], [4.0, 0.5, 3.0]])

    def f(a):
        b = a.copy().astype(np.float64)
        return b.max() + fad.sum(b.max(axis=0)) + b.min(axis=1, keepdims=True)[1, 0]
    g = fad.grad(f)(A)
    expect = np.zeros_like(A)
    expect[0, 1] += 1          # global max
    expect[1, 0] += 1          # column maxima: 4, 5, 3
    expect[0, 1] += 1
    expect[1, 2] += 1
    expect[1, 1] += 1          # row minimum of row 1
    np.testing.assert_array_equal(g, expect)
    import pytest
    with pytest.raises(TypeError, match="astype"):
        fad.grad(lambda a: fad.sum(a.astype(np.int64)))(A)


def test_replayed_gradients_leave_no_residue_in_reused_buffers():
    # the gradient sweep clears each adjoint as it consumes it, so the work
    # buffer is all zeros between calls; an inf adjoint through a constant
    # node (a0 pointing at itself) must not leave a NaN behind
    def f(x):
        s = fad.stack([fad.sqrt(x[0]), 2.0])     # 2.0 is a CONST node
        return fad.sum(s * fad.sqrt(x[1]))
    tape = fad.record(f, np.array([1.0, 1.0]))
    with np.errstate(all="ignore"):
        g0 = tape.gradient(np.array([0.0, 0.0]))   # infinities flow everywhere
    assert np.isnan(g0).any() or np.isinf(g0).any()
    for x in (np.array([4.0, 9.0]), np.array([1.0, 4.0])):
        a, b = x
        expect = [0.5 / np.sqrt(a) * np.sqrt(b), (np.sqrt(a) + 2.0) * 0.5 / np.sqrt(b)]
        np.testing.assert_allclose(tape.gradient(x), expect, rtol=1e-14)
