"""Gradients handed over without a copy, and cotangents written over in place
(tanh's pullback): each gradient is the caller's own array, nothing else
shares its memory, and results equal the pullbacks that copy (fad.vjp)."""
import numpy as np
import pytest

import fastad as fad

rng = np.random.default_rng(11)
X = rng.standard_normal((4, 3))
Y = rng.standard_normal((4, 3))
C = rng.standard_normal((4, 3))
W = rng.standard_normal((3, 5))
ROW = rng.standard_normal(3)


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
    lambda x: fad.sum(x * C),
    lambda x: fad.sum(np.tanh(x + C)),
    lambda x: fad.sum(np.tanh(C - x) * C),
    lambda x: fad.sum(np.tanh(np.tanh(x) * C)),
    lambda x: fad.sum(np.tanh(x @ W)),
    lambda x: fad.sum(np.tanh(W.T @ np.tanh(x).T)),
    lambda x: (lambda t: fad.sum(np.tanh(t + t)))(np.tanh(x)),
    lambda x: fad.sum(np.tanh(x + ROW) * np.tanh(x * ROW)),
    lambda x: fad.mean(np.tanh(fad.mean(np.tanh(x), axis=0) - 1.0)),
    lambda x: fad.sum(np.tanh(fad.sum(np.tanh(x), axis=1, keepdims=True) * x)),
    lambda x: fad.sum(np.tanh(fad.sum(np.tanh(x), axis=()))),
    lambda x: fad.sum(np.tanh(_pexp(np.tanh(x)) * C)),
    lambda x: np.tanh(x * C)[1, 2] + fad.sum(np.tanh(x)),
]


@pytest.mark.parametrize("f", FS)
def test_handed_gradient_is_private_and_exact(f):
    consts = [C, W, ROW]
    keep = [a.copy() for a in consts]
    x = X.copy()
    g = fad.grad(f)(x)
    want = fad.vjp(f, X)[1](1.0)
    np.testing.assert_array_equal(g, want)
    assert fad.check_grad(f, X) < 1e-6
    assert g.flags.writeable and g.flags.c_contiguous
    for a in consts + [x] + _KEPT:
        assert not np.shares_memory(g, a)
    g[...] = 1e300                                  # the caller's to change
    for a, k in zip(consts, keep):
        np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(fad.grad(f)(X), want)
    np.testing.assert_array_equal(fad.record(f, X).gradient(X), want)


@pytest.mark.parametrize("f", [
    lambda x, y: fad.sum(np.tanh(x + y)),
    lambda x, y: fad.sum(np.tanh(x * y)),
    lambda x, y: fad.sum(x * y),
    lambda x, y: fad.sum(np.tanh(np.tanh(x) @ np.tanh(y).T)),
    lambda x, y: fad.mean(np.tanh(x) * y),
])
def test_two_arguments_match_per_argument_vjp(f):
    gx, gy = fad.grad(f, argnums=(0, 1))(X, Y)
    np.testing.assert_array_equal(gx, fad.vjp(lambda a: f(a, Y), X)[1](1.0))
    np.testing.assert_array_equal(gy, fad.vjp(lambda b: f(X, b), Y)[1](1.0))
    assert not np.shares_memory(gx, gy)
    gy2, gx2 = fad.grad(f, argnums=(1, 0))(X, Y)
    np.testing.assert_array_equal(gx2, gx)
    np.testing.assert_array_equal(gy2, gy)


def test_multi_seed_vjp_with_tanh_in_place_matches_single_seeds():
    def f(x):
        return np.tanh(np.tanh(np.tanh(x) * C) @ W)
    _, pb = fad.vjp(f, X)
    seeds = rng.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(pb(seeds), np.stack([pb(s) for s in seeds]))
