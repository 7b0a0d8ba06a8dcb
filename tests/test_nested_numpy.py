"""Nested transforms through NumPy's API: an inner grad records its sweep
through every kind of block (linalg primitives, reductions, products,
shaping, selections), and the outer transform differentiates it.  The
answers are checked against fad.hessian, whose forward-over-reverse sweep
shares no code with the nested one, and the third order against finite
differences of fad.hvp."""
import numpy as np
import pytest

import fastad as fad

rng = np.random.default_rng(0)
x0 = rng.uniform(0.2, 0.9, 9)
M = lambda x: np.reshape(x, (3, 3))                       # noqa: E731
SP = lambda x: M(x) @ M(x).T + 3 * np.eye(3)              # noqa: E731
cases = {
 "solve": lambda x: np.sum(np.linalg.solve(SP(x), np.ones(3))),
 "inv": lambda x: np.sum(np.linalg.inv(SP(x)) ** 2),
 "det": lambda x: np.linalg.det(M(x) + 2 * np.eye(3)),
 "slogdet": lambda x: np.linalg.slogdet(SP(x))[1],
 "cholesky": lambda x: np.sum(np.linalg.cholesky(SP(x)) ** 3),
 "eigh": lambda x: np.sum(np.linalg.eigh(SP(x))[0] ** 2),
 "svd": lambda x: np.sum(np.linalg.svd(M(x) + np.diag([3., 2, 1]))[1] ** 3),
 "qr": lambda x: np.sum(np.linalg.qr(M(x) + 2 * np.eye(3))[1] ** 2),
 "pinv": lambda x: np.sum(np.linalg.pinv(M(x) + 2 * np.eye(3)) ** 2),
 "norm": lambda x: np.linalg.norm(M(x)) ** 3,
 "norm2": lambda x: np.linalg.norm(x, 3),
 "max": lambda x: np.max(x ** 2),
 "sort": lambda x: np.sum(np.sort(x) * np.arange(9.0)) ** 2,
 "prod": lambda x: np.prod(x),
 "cumsum": lambda x: np.sum(np.cumsum(x) ** 3),
 "cumprod": lambda x: np.sum(np.cumprod(x)),
 "einsum": lambda x: np.einsum("ij,jk,ki->", M(x), M(x), M(x)),
 "matmul3d": lambda x: np.sum((np.reshape(x[:8], (2, 2, 2)) @ np.reshape(x[:8], (2, 2, 2))) ** 2),
 "outer": lambda x: np.sum(np.outer(x, x) ** 2),
 "var": lambda x: np.var(x) * np.std(x),
 "take/fancy": lambda x: np.sum(x[[0, 0, 3]] ** 3 * x[np.array([1, 2, 2])]),
 "where": lambda x: np.sum(np.where(x > 0.5, x ** 3, np.sin(x))),
 "concat": lambda x: np.sum(np.concatenate([x, x ** 2]) ** 2),
 "mean-axis": lambda x: np.sum(np.mean(M(x) ** 2, axis=0) ** 2),
 "logsumexp": lambda x: fad.logsumexp(x * x),
 "tile/repeat": lambda x: np.sum(np.tile(x, 2) * np.repeat(x, 2) ** 2),
 "pad/roll": lambda x: np.sum(np.roll(np.pad(x, 1), 2) ** 3),
 "clip": lambda x: np.sum(np.clip(x, 0.3, 0.8) ** 3),
 "diff": lambda x: np.sum(np.diff(x) ** 3),
 "trace/diag": lambda x: np.trace(M(x) @ M(x)) + np.sum(np.diag(M(x)) ** 3),
 "tensordot": lambda x: np.sum(np.tensordot(M(x), M(x), axes=1) ** 2),
 "kron": lambda x: np.sum(np.kron(x[:2], x[2:4]) ** 2),
 "mean-broadcast": lambda x: np.sum((M(x) - np.mean(M(x), axis=1, keepdims=True)) ** 2),
 "maximum": lambda x: np.sum(np.maximum(x, 0.5) ** 2),
 # fad.checkpoint(f): nested, f is recorded again on traced values
 "checkpoint": lambda x: fad.checkpoint(lambda a, b: np.sum(np.sin(a) * b) ** 2)(x[:4], x[4:8]),
 # a checkpointed scan: nested, its steps are unrolled on the tape
 "scan": lambda x: np.sum(fad.scan(lambda c, p: [c[0] + 0.1 * p[0] * c[1] * c[0],
                                                 c[1] - 0.1 * p[1] * fad.sin(c[0])],
                                   x[:2], 7, x[2:4]) ** 2) + x[4] * x[5],
}


# fad.hessian / hvp do not go through fad.checkpoint: compare with f itself
REFERENCE = {"checkpoint": lambda x: np.sum(np.sin(x[:4]) * x[4:8]) ** 2}


@pytest.mark.parametrize("name", sorted(cases))
def test_nested_second_order_equals_hessian(name):
    f = cases[name]
    H = fad.hessian(REFERENCE.get(name, f))(x0)
    scale = max(1.0, np.max(np.abs(H)))
    np.testing.assert_allclose(fad.jacfwd(fad.grad(f))(x0), H, rtol=0, atol=1e-9 * scale)
    w = np.arange(9.0)
    np.testing.assert_allclose(fad.grad(lambda x: fad.grad(f)(x) @ w)(x0), H @ w,
                               rtol=0, atol=1e-9 * scale * 9)


@pytest.mark.parametrize("name", ["solve", "cholesky", "eigh", "einsum", "cumprod", "prod",
                                  "det", "norm", "sort", "logsumexp", "scan",
                                  "checkpoint"])
def test_nested_third_order_against_differences(name):
    f = cases[name]
    v, w = np.linspace(-1, 1, 9), np.cos(np.arange(9.0))

    def third(x):
        return fad.grad(lambda z: fad.grad(f)(z) @ v)(x) @ w
    f = REFERENCE.get(name, f)
    h = 1e-5
    fd = np.array([(fad.hvp(f, x0 + h * e, v) @ w - fad.hvp(f, x0 - h * e, v) @ w) / (2 * h)
                   for e in np.eye(9)])
    np.testing.assert_allclose(fad.grad(third)(x0), fd, rtol=1e-5, atol=1e-6 * max(1, np.abs(fd).max()))
