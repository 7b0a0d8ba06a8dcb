"""Differential operators: grad, value_and_grad, jvp, vjp, jacobian, record, check_grad.

Each call records `f` on a fresh tape (one per call and per thread), then
runs compiled sweeps over it: reverse for gradients and pullbacks, tangent
for pushforwards, k seeds or directions per sweep.

The differentiated argument may be a pytree (fastad._pytree): a float, an
array, or nested tuples, lists, namedtuples and dicts of them (None: an
empty subtree); results come back in its structure.  Tangents and cotangents
are given in the input's / output's structure; k stacked ones have a leading
axis of k on every leaf.  jacobian and vjp accept pytree outputs: the
Jacobian is the output's structure of the input's structure of blocks of
shape out_leaf.shape + in_leaf.shape (as JAX's jacrev).  float16/float32
leaves get gradients of their dtype (the tape computes in float64).
"""
import functools
import math
import numbers

import numpy as np

from fastad._recording import _output_value, _record, group_gradients, record
from fastad._tape import Tape
from fastad._tape import choose_mode
from fastad import debug as _debug
from fastad import _nested
from fastad import _memory
from fastad.sparse import HessianMemo, check_hessian_method
from fastad._var import Array, Var, output_slots, value_of

__all__ = ["grad", "value_and_grad", "check_grad", "record", "jvp", "vjp",
           "jacobian", "jacfwd", "jacrev", "hvp", "hessian"]


def caching(fn):
    """fn with fastad's allocator for NumPy data in place while it runs
    (fastad._memory: freed blocks are kept for the next call, so repeated
    calls do not fault in fresh pages).  A plain Python closure, so that
    transformed functions still pickle by value."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        previous = _memory.install()
        try:
            return fn(*args, **kwargs)
        finally:
            _memory.restore(previous)
    return run


def _argnums_tuple(argnums, nargs):
    if type(argnums) is int and -nargs <= argnums < nargs:       # the common cases
        return True, (argnums % nargs,)
    if type(argnums) is tuple and 0 < len(argnums) <= nargs and \
            all(type(k) is int and 0 <= k < nargs for k in argnums) and \
            len(set(argnums)) == len(argnums):
        return False, argnums
    single = isinstance(argnums, numbers.Integral)
    if not single and not isinstance(argnums, (tuple, list)):
        raise TypeError(f"fastad: argnums must be an int or a tuple of ints, got "
                        f"{argnums!r} ({type(argnums).__name__})")
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError("fastad: argnums must name at least one argument")
    out = []
    for k in nums:
        if not isinstance(k, numbers.Integral):
            raise TypeError(f"fastad: argnums must be ints, got {k!r}")
        if not -nargs <= k < nargs:
            raise ValueError(
                f"fastad: argnums={argnums!r} but f was called with {nargs} "
                f"positional argument(s)")
        out.append(int(k) % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"fastad: argnums={argnums!r} names an argument twice")
    return single, tuple(out)


def _split_aux(out, has_aux):
    value, aux = _nested.split_aux(out, has_aux)
    return value, (None if aux is None else _values(aux))


def _values(obj):
    """aux as numbers: Vars and Arrays of the finished recording become their values."""
    if isinstance(obj, (Var, Array)):
        return value_of(obj)
    if isinstance(obj, (list, tuple)):
        vals = [_values(o) for o in obj]
        if all(v is o for v, o in zip(vals, obj)):
            return obj                        # nothing on the tape inside: as given
        return type(obj)(vals) if type(obj) in (list, tuple) else type(obj)(*vals)
    if isinstance(obj, dict):
        vals = {k: _values(v) for k, v in obj.items()}
        return obj if all(vals[k] is v for k, v in obj.items()) else vals
    return obj


def _input_gradients(tape, slot):
    """Per differentiated argument, its gradient (float or ndarray), in argnums order."""
    if _debug.enabled():
        _debug.check(tape, slot)
    return tape.input_gradients(slot)


def _scalar_slot(tape, out, who):
    return int(_nested.scalar_slot(tape, out, who))


def _recorded_output(f, args, kwargs, nums, has_aux, single_sweep, trees=None):
    """(tape, output slot, aux) for a gradient; None when an in-place step
    conflicted (code that held an Array's only reference, such as a tuple
    passed as *args or a C caller, used it after an operation wrote over
    it): then record again, keeping every value."""
    tape = Tape()
    # the tape serves one reverse sweep and is dropped: element-wise steps
    # may write over dead temporaries (see Tape.overwrite_block)
    tape.single_sweep = single_sweep
    try:
        _, out = _record(f, args, kwargs, nums, tape, trees)
        out, aux = _split_aux(out, has_aux)
        slot = _scalar_slot(tape, out, "grad")
    except Exception:         # (TapeError, unless f turned it into another)
        if tape.conflict:
            return None
        raise
    if tape.conflict:         # (f caught the error itself)
        return None
    return tape, slot, aux


@caching
def _value_and_grad(f, argnums, has_aux, args, kwargs, inplace=None):
    """`inplace`, a one-item list per grad(f): False once f's recording
    conflicted, so that f, which evidently holds references the in-place
    step cannot see, is not run twice on every later call."""
    single, nums = _argnums_tuple(argnums, len(args))
    outer = _nested.recording()
    if outer is not None:          # inside another transform: record on its tape
        value, aux, grads = _nested.value_and_grad(outer, f, args, kwargs, nums, has_aux)
        return value, aux, (grads[0] if single else tuple(grads))
    got = None
    trees = {}
    if inplace is None or inplace[0]:
        got = _recorded_output(f, args, kwargs, nums, has_aux, not _debug.enabled(), trees)
        if got is None and inplace is not None:
            inplace[0] = False
    if got is None:
        trees.clear()
        got = _recorded_output(f, args, kwargs, nums, has_aux, False, trees)
    tape, slot, aux = got
    grads = _input_gradients(tape, slot)
    if trees:
        grads = group_gradients(grads, nums, trees)
    return tape.node(slot)[5], aux, (grads[0] if single else tuple(grads))


def grad(f, argnums=0, has_aux=False):
    """The gradient of scalar-valued `f` with respect to argument(s) `argnums`.

    `grad(f)(x)` has the shape of x (a float for a float), or x's structure
    when x is a pytree (a tuple, list or dict of arrays...).  With a tuple
    argnums it returns a tuple; with has_aux, f returns (value, aux) and you
    get (gradient, aux).

    The tape serves one reverse sweep, so element-wise steps write over
    temporaries nothing else references, as NumPy does (docs/guide.md,
    section 6); if code holding an Array's only reference (a tuple passed as
    *args, a C caller) uses it again
    after such a step, f is recorded once more without them (so f runs twice
    on that call), and later calls of this grad(f) do without them.
    """
    inplace = [True]

    @functools.wraps(f)
    def grad_f(*args, **kwargs):
        _, aux, g = _value_and_grad(f, argnums, has_aux, args, kwargs, inplace)
        return (g, aux) if has_aux else g
    return grad_f


def value_and_grad(f, argnums=0, has_aux=False):
    """Like grad, but returns (f(x), gradient); ((f(x), aux), gradient) with has_aux."""
    inplace = [True]

    @functools.wraps(f)
    def value_and_grad_f(*args, **kwargs):
        value, aux, g = _value_and_grad(f, argnums, has_aux, args, kwargs, inplace)
        return ((value, aux) if has_aux else value), g
    return value_and_grad_f


@caching
def jvp(f, x, v):
    """(f(x), J(x) v): one tangent sweep carrying every direction.

    v has x's shape (structure), or (k,) + x.shape for k directions (then
    J v has a leading axis of k; for a pytree, every leaf has one)."""
    outer = _nested.recording()
    if outer is not None:
        return _nested.jvp(outer, f, x, v)
    tape = record(f, x)
    return _output_value(tape), tape._jvp(None, v)


def vjp(f, x):
    """(f(x), pullback), pullback(ybar) = ybar J(x).

    ybar has the output's shape (structure), or (k,) + that shape for k seeds
    (for a pytree output, on every leaf), pulled
    back in one multi-seeded reverse sweep.  The pullback can be called
    many times."""
    outer = _nested.recording()
    if outer is not None:
        return _nested.vjp(outer, f, x)
    tape = caching(record)(f, x)

    @caching
    def pullback(ybar):
        if _nested.has_traced(ybar):      # inside another transform: record it there
            return _nested.vjp(_nested.recording(), f, x)[1](ybar)
        return tape._vjp(None, ybar)
    pullback.tape = tape
    return _output_value(tape), pullback


def jacobian(f, mode="auto"):
    """The Jacobian of f, shape out.shape + x.shape (pytrees: the output's
    structure of x's structure of such blocks).

    mode "fwd" sweeps one tangent lane per input, "rev" one adjoint lane per
    output, in chunks; "auto" picks the one with fewer lanes (weighted by
    their measured costs: see fastad._tape.choose_mode)."""
    choose_mode(mode, 1, 1)  # validate early

    @caching
    def jac_f(x):
        outer = _nested.recording()
        if outer is not None:
            return _nested.jacobian(outer, f, x)
        return record(f, x)._jacobian(None, mode)
    return jac_f


def jacfwd(f):
    """jacobian(f, mode="fwd")."""
    return jacobian(f, mode="fwd")


def jacrev(f):
    """jacobian(f, mode="rev")."""
    return jacobian(f, mode="rev")


@caching
def hvp(f, x, v):
    """H(x) v for scalar f, by forward-over-reverse (one tangent sweep, one
    second-order reverse sweep); v of x's shape, or (k,) + x.shape."""
    outer = _nested.recording()
    if outer is not None:
        return _nested.hvp(outer, f, x, v)
    return record(f, x)._hvp(None, v)


def hessian(f, method="auto"):
    """The Hessian of scalar f, shape x.shape + x.shape (a pytree x: x's
    structure of x's structure of blocks), by forward-over-reverse.

    method "dense" sweeps one direction per input (in chunks); "colored"
    finds the pattern on the tape, star colors it and sweeps one direction
    per color; "auto" takes "colored" when that needs at most half as many
    directions, and stops looking early on dense Hessians (Tape.hessian).
    For a scipy.sparse result use fad.sparse_hessian.

    Each call records f anew; "auto" remembers across the calls of this
    function when f's Hessian was dense, and the plan of the last tape to
    reuse on a tape of the same structure (fastad.sparse.HessianMemo)."""
    check_hessian_method(method)
    memo = HessianMemo(method)

    @caching
    def hess_f(x):
        outer = _nested.recording()
        if outer is not None:
            return _nested.hessian(outer, f, x)
        return memo.hessian(record(f, x))
    return hess_f


def check_grad(f, x, *args, eps=1e-6, **kwargs):
    """Max abs difference between fad.grad(f)(x) and central finite differences.

    f is evaluated on plain numbers for the differences; the step for
    element i is eps * max(1, |x_i|).  Extra arguments are passed to f
    unchanged.
    """
    scalar = isinstance(x, numbers.Real) and not isinstance(x, np.ndarray)
    x0 = np.array(x, dtype=np.float64)
    g = np.asarray(grad(f)(float(x0) if scalar else x0, *args, **kwargs), dtype=np.float64)
    fd = np.empty(x0.size)
    flat = x0.reshape(-1)
    for i in range(flat.size):
        h = eps * max(1.0, abs(flat[i]))
        xp, xm = flat.copy(), flat.copy()
        xp[i] += h
        xm[i] -= h
        if scalar:
            fp, fm = f(float(xp[0]), *args, **kwargs), f(float(xm[0]), *args, **kwargs)
        else:
            fp = f(xp.reshape(x0.shape), *args, **kwargs)
            fm = f(xm.reshape(x0.shape), *args, **kwargs)
        fd[i] = (float(fp) - float(fm)) / (2 * h)
    if fd.size == 0:
        return 0.0
    return float(np.max(np.abs(g.reshape(-1) - fd)))
