"""Checkpointed time stepping, fad.scan, and recomputed functions, fad.checkpoint.

    carry = fad.scan(step, init, length, params, checkpoints=None)
    y = fad.checkpoint(f)(*args)        # f's operations recomputed, not stored

runs `carry = step(carry, params)` `length` times and returns the last
carry.  Inside fad.grad, fad.value_and_grad, fad.record (and the other
transforms) the whole loop is one node of the tape, so reverse mode does not
keep a tape of every step: it keeps at most `checkpoints` carries and
recomputes the steps between them in the reverse sweep, placed by binomial
checkpointing (Griewank's revolve), which does the fewest recomputations
possible for that memory.

How: `step` is recorded once, on a small tape, at (init, params).  The
forward loop replays that tape `length` times in compiled code (no Python
per step); the reverse sweep replays one step at its stored input and pulls
the cotangent back through it, recomputing inputs from checkpoints.

Names: as jax.lax.scan, `init` is the carry and `length` the number of
steps, but `step(carry, params)` returns the new carry only (no per-step
outputs `ys`, which would cost memory in proportion to `length`), and
`params` is the same at every step (there are no per-step `xs`); gradients
flow to both `init` and `params`.  `checkpoints` is the memory budget that
jax.checkpoint and torch.utils.checkpoint leave to the user.

The step: scalar operations (`x, y, z = carry`, arithmetic on the Vars,
returning a list or array of the new values) replay in compiled code with
no Python per step.  A step with array operations (`carry + h * k1` on an
Array) works too, replayed through its tape's methods one step at a time
(Python per step: several times slower), for first order and forward mode;
second order through it raises NotImplementedError.

Rules (each is checked, with an error naming it):
- the step returns the new carry only, with as many numbers as init;
- the step's branches must not change along the loop: its comparisons are
  recorded at step 0 and re-checked at every step (and at every replay of
  an outer tape); one that comes out otherwise raises
  fad.BranchChangedError naming the step (use fad.where for a smooth
  choice, or a plain Python loop).  fad.scan does not re-record the step:
  its schedule replays steps in any order, so one tape must describe them all;
- the step may not read concrete values (.value) of its inputs;
- everything the step differentiates must come in through `carry` or
  `params`: a traced value it closes over raises fad.TapeError.

Forward mode (jvp, jacfwd) pushes tangents through the steps alongside the
values (no checkpoints needed); second order (hvp, hessian) runs
forward-over-reverse steps, the carry's tangents checkpointed with it.
"""
import functools
import math
import numbers

import numpy as np

from fastad import _blocks as B
from fastad._recording import record
from fastad._scan import StepKernel
from fastad.arrays import _operands, _push
from fastad.errors import TapeError

__all__ = ["scan", "checkpoint", "revolve_cost", "DEFAULT_CHECKPOINT_BYTES"]

# The default budget: every carry when they fit in this, else as many as fit.
DEFAULT_CHECKPOINT_BYTES = 1 << 27


# ---------------------------------------------------------------- revolve

def _beta(s, r):
    """beta(s, r) = C(s + r, s): the most steps s checkpoints reverse with r
    forward sweeps at most (Griewank)."""
    return math.comb(s + r, s) if r >= 0 else 0


def _reps(l, s):
    """The repetition number r: beta(s, r - 1) < l <= beta(s, r)."""
    r = 0
    while _beta(s, r) < l:
        r += 1
    return r


def revolve_cost(length, checkpoints):
    """Forward steps that fad.scan's reverse sweep recomputes for `length`
    steps and `checkpoints` stored carries: r l - beta(s + 1, r - 1) with
    s = checkpoints (Griewank & Walther's minimum), l (l - 1) / 2 for one."""
    l, s = int(length), int(checkpoints)
    if l <= 1:
        return 0
    r = _reps(l, s)
    return r * l - _beta(s + 1, r - 1)


def _split(l, c):
    """Where to place the next checkpoint in a segment of l steps with c free
    checkpoints (s = c + 1 counting the segment's start): the largest m in
    Griewank's optimal range (checked against the dynamic program in the tests)."""
    s = c + 1
    r = _reps(l, s)
    return min(_beta(s, r - 1), l - _beta(s - 1, r - 1), l - 1)


def _keeps(l, c):
    """A segment of l steps with c free checkpoints is reversed by keeping
    all its states (l - 1 rows; the segment's start is the c + 1-th)."""
    return l <= c + 2


def _descend(kernel, stack, frames, lo, hi, c):
    """Place checkpoints from stack[-1] (the state at lo) towards hi until the
    segment (lo, hi) is a base case; frames remember the left parts."""
    while hi - lo > 1 and c > 0 and not _keeps(hi - lo, c):
        m = _split(hi - lo, c)
        st = stack[-1].copy()
        kernel.advance(st, m, lo)
        stack.append(st)
        frames.append((lo, lo + m, c))
        lo, c = lo + m, c - 1
    return lo, c


class _Plan:
    """What the forward loop left for the reverse: the checkpoints of the
    schedule's first descent, and the last segment's states when kept."""
    __slots__ = ("stack", "frames", "lo", "c", "stored")

    def __init__(self, stack, frames, lo, c, stored):
        self.stack, self.frames, self.lo, self.c, self.stored = stack, frames, lo, c, stored


def _forward(kernel, state, n, checkpoints):
    """Run n steps from state (in place); returns the _Plan for a reverse."""
    stack, frames = [state.copy()], []
    if n == 0:
        return _Plan(stack, frames, 0, checkpoints - 1, None)
    lo, c = _descend(kernel, stack, frames, 0, n, checkpoints - 1)
    l = n - lo
    state[:] = stack[-1]
    stored = None
    if _keeps(l, c) and l > 1:
        stored = np.empty((l - 1, state.shape[0]))
    kernel.advance(state, l, lo, stored)
    return _Plan(stack, frames, lo, c, stored)


def _reverse(kernel, plan, n):
    """The reverse sweep over all n steps (the kernel's accumulators set)."""
    if n == 0:
        return
    stack, frames = list(plan.stack), list(plan.frames)
    lo, hi, c, stored = plan.lo, n, plan.c, plan.stored
    # the forward's kept states serve one reverse: held longer, they and the
    # next segment's would exceed the budget (a second reverse recomputes them)
    plan.stored = None
    while True:
        l = hi - lo
        kernel.reverse_segment(stack[-1], l, lo, stored, _keeps(l, c))
        stored = None
        if not frames:
            return
        stack.pop()
        lo, hi, c = frames.pop()
        lo, c = _descend(kernel, stack, frames, lo, hi, c)


# ---------------------------------------------------------------- array steps

class PyStepKernel:
    """StepKernel's interface for a step tape with array blocks: each step is
    a replay through the Tape's methods (Python per step, NumPy per block),
    so such a scan is slower than a scalar one but keeps the same schedule.
    First order and forward mode only."""

    def __init__(self, tape, nc):
        if tape.out_tree is not None:
            raise NotImplementedError(
                "fastad.scan: a step with array operations must return one array "
                "(or a list of scalars), not a nested structure")
        self.tape, self.nc = tape, nc
        self.npar = tape.n_inputs - nc
        self.kt = 0
        self.steps_run = 0
        self.second = False

    def set_params(self, p, pdot=None):
        self.p = np.array(p, dtype=np.float64).reshape(-1)
        self.pdot = None if pdot is None else np.array(pdot, dtype=np.float64)
        self.kt = 0 if pdot is None else self.pdot.shape[1]

    def _z(self, c):
        return np.concatenate([c, self.p])

    def _call(self, fn, step, *args):
        from fastad.errors import BranchChangedError
        try:
            return fn(*args)
        except BranchChangedError as e:
            raise BranchChangedError(
                f"fastad.scan: at step {step} the step function takes another branch than "
                f"when it was recorded (at step 0): {e}") from None

    def _fwd(self, state, step):
        nc, kt = self.nc, self.kt
        z = self._z(state[:nc])
        new = np.asarray(self._call(self.tape, step, z), dtype=np.float64).reshape(-1)
        if kt:
            V = np.concatenate([state[nc:].reshape(nc, kt), self.pdot], axis=0).T
            d = np.asarray(self.tape.jvp(z, V)).reshape(kt, nc)
            state[nc:] = d.T.reshape(-1)
        state[:nc] = new
        self.steps_run += 1

    def advance(self, state, steps, step0=0, store=None):
        for i in range(steps):
            self._fwd(state, step0 + i)
            if store is not None and i < len(store):
                store[i] = state

    def begin_reverse(self, cbar, pbar, cbard=None, pbard=None):
        if cbard is not None:
            raise NotImplementedError(
                "fastad.scan: second derivatives (hvp, hessian) through a scan need a step "
                "of scalar operations (x, y, z = carry ...); this step records array "
                "operations")
        self.cbar, self.pbar = cbar, pbar

    def _back(self, state, step):
        k = self.cbar.shape[1]
        out_shape = tuple(self.tape.out_slots.shape)
        ybar = self.cbar.T.reshape((k,) + out_shape)
        zbar = np.asarray(self._call(self.tape.vjp, step, self._z(state[:self.nc]), ybar))
        zbar = zbar.reshape(k, -1)
        self.cbar[...] = zbar[:, :self.nc].T
        self.pbar += zbar[:, self.nc:].T

    def reverse_segment(self, state, l, step0, stored=None, keep=True):
        if keep:
            if stored is None:
                stored = np.empty((l - 1, state.shape[0]))
                self.advance(state.copy(), l - 1, step0, stored)
            for i in range(l - 1, -1, -1):
                self._back(stored[i - 1] if i else state, step0 + i)
            return
        for i in range(l - 1, -1, -1):
            w = state.copy()
            self.advance(w, i, step0)
            self._back(w, step0 + i)


def _kernel_for(tape, nc):
    return PyStepKernel(tape, nc) if tape.blocks else StepKernel(tape, nc)


# ---------------------------------------------------------------- the node

class ScanBlock(B.Block):
    """fad.scan on a tape: operands (init, params), output the last carry."""

    def __init__(self, step_tape, nc, length, checkpoints, ops, shape):
        self.step_tape, self.nc, self.length = step_tape, nc, length
        self.checkpoints, self.ops, self.shape = checkpoints, ops, shape

    def operands(self):
        return tuple(self.ops)

    def describe(self):
        return f"scan({self.length} steps, {self.checkpoints} checkpoints)"

    has_tangent = True

    def _inputs(self, val):
        c0, p = (np.array(o.value(val) if o.active else o.const, dtype=np.float64).reshape(-1)
                 for o in self.ops)
        return c0, p

    def _kernel(self, p, pdot=None):
        # one per call: a Tape may be replayed from several threads at once
        k = _kernel_for(self.step_tape, self.nc)
        k.set_params(p, pdot)
        return k

    def compute(self, val, out):
        c0, p = self._inputs(val)
        kern = self._kernel(p)
        state = c0.copy()
        plan = _forward(kern, state, self.length, self.checkpoints)
        out[...] = state.reshape(self.shape)
        return c0, p, plan

    def _add(self, adj, cbar, pbar, k):
        for o, g in zip(self.ops, (cbar, pbar)):
            if o.active:
                o.add_adjoint(adj, g.reshape(o.shape + (k,)), k)

    def reverse(self, val, state, adj, k, cot=None):
        g = np.asarray(adj[self.start:self.stop]).reshape(self.nc, k)
        if not g.any():
            return
        c0, p, plan = state
        kern = self._kernel(p)
        cbar = np.array(g, dtype=np.float64)
        pbar = np.zeros((p.size, k))
        kern.begin_reverse(cbar, pbar)
        _reverse(kern, plan, self.length)
        self._add(adj, cbar, pbar, k)

    def _tangents(self, tan, k):
        return [np.zeros((o.const.size, k)) if not o.active else
                np.ascontiguousarray(o.tangent(tan, k), dtype=np.float64).reshape(-1, k)
                for o in self.ops]

    def tangent(self, val, state, tan, k):
        c0, p = state[0], state[1]
        cdot, pdot = self._tangents(tan, k)
        kern = self._kernel(p, pdot)
        st = np.concatenate([c0, cdot.reshape(-1)])
        kern.advance(st, self.length, 0)
        tan[self.start:self.stop] = st[self.nc:].reshape(self.nc, k)

    def reverse2(self, val, state, tan, adj, adt, k):
        g = np.array(adj[self.start:self.stop], dtype=np.float64).reshape(self.nc)
        gd = np.array(adt[self.start:self.stop], dtype=np.float64).reshape(self.nc, k)
        if not g.any() and not gd.any():
            return
        c0, p = state[0], state[1]
        cdot, pdot = self._tangents(tan, k)
        kern = self._kernel(p, pdot)
        st = np.concatenate([c0, cdot.reshape(-1)])
        plan = _forward(kern, st, self.length, self.checkpoints)
        pbar, pbard = np.zeros(p.size), np.zeros((p.size, k))
        kern.begin_reverse(g, pbar, gd, pbard)
        _reverse(kern, plan, self.length)
        for o, a, b in zip(self.ops, (g, pbar), (gd, pbard)):
            if o.active:
                o.add_adjoint(adj, a.reshape(o.shape + (1,)), 1)
                o.add_adjoint(adt, b.reshape(o.shape + (k,)), k)

    def __getstate__(self):
        return dict(self.__dict__)


# ---------------------------------------------------------------- fad.scan

def _traced(x):
    if B.is_active(x):
        return True
    if isinstance(x, (list, tuple)):
        return any(_traced(e) for e in x)
    return isinstance(x, np.ndarray) and x.dtype == object


def _numbers(x, what):
    """x (not traced) as a float64 array, shape kept; TypeError for non-numbers."""
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise TypeError(f"fastad.scan: {what} must be a float or an array of real numbers, "
                        f"got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as e:
        raise TypeError(f"fastad.scan: {what} must be a float or an array of real numbers, "
                        f"got {type(x).__name__}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"fastad.scan: {what} must be real numbers, got dtype {arr.dtype} "
                        f"({type(x).__name__})")
    return np.array(arr, dtype=np.float64)


def _count(v, what, low):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if isinstance(v, numbers.Real) and float(v).is_integer() and not isinstance(v, bool):
            v = int(v)
        else:
            raise TypeError(f"fastad.scan: {what} must be an int, got {v!r} "
                            f"({type(v).__name__})")
    v = int(v)
    if v < low:
        raise ValueError(f"fastad.scan: {what} must be at least {low}, got {v}")
    return v


def _record_step(step, c0, p, cshape, pshape, has_params):
    nc = c0.size
    z0 = np.concatenate([c0.reshape(-1), p.reshape(-1)])

    def flat_step(z):
        carry = z[0] if cshape == () else (z[:nc] if len(cshape) == 1
                                           else z[:nc].reshape(cshape))
        if not has_params:
            params = None
        elif pshape == ():
            params = z[nc]
        else:
            params = z[nc:] if len(pshape) == 1 else z[nc:].reshape(pshape)
        out = step(carry, params)
        if isinstance(out, tuple) and len(out) == 2 and cshape != (2,):
            raise ValueError(
                "fastad.scan: step returned a pair; step(carry, params) must return the "
                "new carry only (unlike jax.lax.scan, there are no per-step outputs)")
        return out

    try:
        tape = record(flat_step, z0)
    except TapeError as e:
        raise TapeError(
            f"fastad.scan: the step uses a value traced outside it ({e}); pass everything "
            f"the step differentiates through carry or params") from e
    out = tape.out_slots
    if out.size != nc or (cshape != () and tape.out_tree is None and out.shape != cshape
                          and out.size == nc and out.ndim > 1):
        raise ValueError(f"fastad.scan: step returned {out.size} numbers "
                         f"(shape {tuple(out.shape)}), but the carry has shape {cshape}: "
                         f"it must return the new carry, shaped like init")
    if tape.value_read is not None:
        raise ValueError(f"fastad.scan: the step read a concrete value "
                         f"({tape.value_read}), so its tape cannot be replayed at the "
                         f"next steps; use comparisons of Vars or fad.where instead")
    return tape


def default_checkpoints(length, nc):
    """All carries when they fit in DEFAULT_CHECKPOINT_BYTES, else as many as fit."""
    fit = max(2, DEFAULT_CHECKPOINT_BYTES // (8 * max(nc, 1)))
    return max(1, min(length, fit))


def scan(step, init, length, params=None, *, checkpoints=None):
    """carry = step(carry, params), `length` times from init; returns the last carry.

    Differentiable in init and params (reverse mode with binomial
    checkpointing; forward mode; second order).  init: a float or an array
    (the carry keeps its shape); params: None, a float or an array (given to
    every step as it is); checkpoints: how many carries the reverse sweep
    may keep (at least 1; default: all of them up to
    DEFAULT_CHECKPOINT_BYTES of memory).  See the module docstring.
    """
    if not callable(step):
        raise TypeError(f"fastad.scan: step must be a function step(carry, params), "
                        f"got {type(step).__name__}")
    length = _count(length, "length", 0)
    has_params = params is not None
    args = [init, params if has_params else np.zeros(0)]
    for i, what in ((0, "init"), (1, "params")):
        if not _traced(args[i]):
            args[i] = _numbers(args[i], what)
    tape, ops = _operands(args)
    # the values as the operands see them (not .value: that would mark the
    # outer recording as one that read a concrete value)
    vals = tape.recorded_values() if tape is not None else None
    c0, p = (np.array(o.value(vals) if o.active else o.const, dtype=np.float64) for o in ops)
    if c0.size == 0:
        raise ValueError("fastad.scan: init is empty; the carry needs at least one number")
    nc = c0.size
    if checkpoints is None:
        checkpoints = default_checkpoints(length, nc)
    else:
        checkpoints = _count(checkpoints, "checkpoints", 1)
    tape_step = _record_step(step, c0, p, c0.shape, p.shape, has_params)
    if tape is None:
        # nothing traced: the compiled loop alone, no checkpoints
        kern = _kernel_for(tape_step, nc)
        kern.set_params(p)
        state = c0.reshape(-1).copy()
        kern.advance(state, length, 0)
        return float(state[0]) if c0.shape == () else state.reshape(c0.shape)
    return _push(tape, ScanBlock(tape_step, nc, length, checkpoints, ops, c0.shape))


# ---------------------------------------------------------------- fad.checkpoint

def checkpoint(f):
    """f, recomputed instead of stored: as jax.checkpoint (remat) and
    torch.utils.checkpoint.  Called on traced values, checkpoint(f)(*args)
    evaluates f on plain numbers and puts one node on the tape that keeps
    only args and the output; the reverse sweep records f again at args
    and pulls back through that short-lived tape (forward mode: the same
    with a tangent sweep).  Memory: f's operations are never on the outer
    tape; time: f is recorded once more per reverse sweep (Python speed).

    f takes floats/arrays positionally and returns a float or an array;
    keyword arguments are constants.  Second order through it by hvp or
    hessian is not supported (NotImplementedError), but nested transforms
    (grad of grad) record f itself and differentiate it; a tape holding
    it cannot be pickled or saved (PicklingError: it refers to a primitive
    made here, not found by name)."""
    if not callable(f):
        raise TypeError(f"fastad.checkpoint: f must be a function, got {type(f).__name__}")
    from fastad.primitives import Primitive
    name = getattr(f, "__name__", "f")

    def flat_call(args, kwargs):
        shapes = [np.shape(a) for a in args]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        z = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in args]) \
            if args else np.zeros(0)
        offs = np.cumsum([0] + sizes)

        def g(zz):
            parts = []
            for s, a, b in zip(shapes, offs[:-1], offs[1:]):
                a, b = int(a), int(b)
                parts.append(zz[a] if s == () else (zz[a:b] if len(s) == 1
                                                       else zz[a:b].reshape(s)))
            return f(*parts, **kwargs)
        return g, z, shapes, sizes, offs

    def vjp_rule(ybar, y, *args, **kwargs):
        g, z, shapes, sizes, offs = flat_call(args, kwargs)
        tape = record(g, z)
        zbar = np.asarray(tape.vjp(z, ybar), dtype=np.float64).reshape(-1)
        cots = tuple(zbar[int(a):int(b)].reshape(s) if s != () else float(zbar[int(a)])
                     for s, a, b in zip(shapes, offs[:-1], offs[1:]))
        return cots if len(args) != 1 else cots[0]

    def jvp_rule(xdot, y, *args, **kwargs):
        g, z, shapes, sizes, offs = flat_call(args, kwargs)
        dots = (xdot,) if len(args) == 1 else xdot
        v = np.concatenate([np.zeros(n) if d is None else
                            np.asarray(d, dtype=np.float64).reshape(-1)
                            for d, n in zip(dots, sizes)]) if args else np.zeros(0)
        return record(g, z).jvp(z, v)

    prim = Primitive(f)
    prim.name = f"checkpoint({name})"
    prim.recompute = f        # a nested transform differentiates f itself (fastad._nested)
    prim.defvjp(vjp_rule)
    prim.defjvp(jvp_rule)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        return prim(*args, **kwargs)
    wrapped.primitive = prim
    return wrapped
