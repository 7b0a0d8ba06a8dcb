"""Batched Tape methods: `tape.gradient(X, batch=True)` and its siblings.

With batch=True a Tape method takes b points stacked along a new leading
axis, as `jax.vmap` of that method would: X of shape (b,) + x.shape (for a
pytree x, every leaf with the leading b), and the results come back with
the same leading axis.  The directions of jvp and hvp and the cotangents of
vjp are batched too, one per point ((b,) + x.shape) or k per point
((b, k) + x.shape).  The flag makes the reading explicit: a tape recorded at
a vector of 5 and a batch of 5 scalars would otherwise look alike.

Tapes of scalar nodes sweep the batch in compiled code on `workers`
threads without the GIL (fastad._batch); tapes with array blocks or that
read a value while recording call NumPy or Python in their sweeps, and are
batched by a loop over single-point calls in this thread.  Either way each
point's result is bit for bit what the single-point method returns.

Plain Python; the Tape's methods hand over here (fastad._tape.provide).
"""
import numbers
import os

import numpy as np

from fastad import _batch, _pytree, _tape
from fastad.errors import BranchChangedError

__all__ = ["batched", "default_workers"]

_KIND = {"value": _batch.VALUE, "value_and_gradient": _batch.GRAD, "gradient": _batch.GRAD,
         "jvp": _batch.JVP, "vjp": _batch.VJP, "hvp": _batch.HVP}
_ON_BRANCH = ("raise", "mask")


def default_workers():
    """The cores this process may run on (its CPU affinity where the system
    says, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_options(method, workers, on_branch_change):
    """workers as an int >= 1 (None: all cores), on_branch_change checked."""
    if workers is None:
        workers = default_workers()
    elif isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
        raise TypeError(f"fastad.Tape.{method}: workers must be a positive integer "
                        f"(threads) or None for all cores, got {workers!r}")
    elif workers < 1:
        raise ValueError(f"fastad.Tape.{method}: workers must be at least 1, got {workers}")
    if on_branch_change not in _ON_BRANCH:
        raise ValueError(f"fastad.Tape.{method}: on_branch_change must be 'raise' or "
                         f"'mask', got {on_branch_change!r}")
    return int(workers), on_branch_change


# ---------------------------------------------------------------- inputs

def _real(a, who):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        if a.dtype.kind == "c":
            raise TypeError(f"{who} must be real numbers, got complex values (fastad "
                            f"differentiates real functions)")
        raise TypeError(f"{who} must be real numbers, got dtype {a.dtype}")
    return a


def _leaf_shapes(tree, shape):
    if tree is None:
        return [() if shape is None else tuple(shape)]
    return [tree._shape_of(i) for i in range(tree.n_leaves)]


def _leaves(tree, x, who):
    if tree is None:
        return [x]
    leaves, node = _pytree.flatten(x, who)
    if node != tree.node:
        raise ValueError(f"{who} has the structure {_pytree._node_str(node)} but the tape "
                         f"was recorded at {_pytree._node_str(tree.node)}")
    return leaves


def _where(tree, i):
    return "" if tree is None else tree._where(i)


def _stack_flat(tree, shape, x, who, b, lanes):
    """x in the structure (tree, or a plain `shape`) with every leaf of shape
    (b,) + leaf shape, or with lanes, (b, k) + leaf shape as well ->
    (b, k, size) float64 and whether the k axis was given."""
    shapes = _leaf_shapes(tree, shape)
    arrs = [_real(a, f"{who}{_where(tree, i)}") for i, a in
            enumerate(_leaves(tree, x, who))]
    size = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    ks = []
    for i, (a, s) in enumerate(zip(arrs, shapes)):
        lead = a.shape[:a.ndim - len(s)] if a.ndim >= len(s) else None
        if lead is not None and a.shape[len(lead):] != s:
            lead = None
        if lead is not None and b is not None and (not lead or lead[0] != b):
            lead = None
        if lead is None or not (len(lead) == 1 or (lanes and len(lead) == 2)):
            want = f"({'b' if b is None else b},) + {s}"
            if lanes:
                want += f" or ({'b' if b is None else b}, k) + {s}"
            hint = ""
            if a.shape == s:
                hint = (" (that is one point's shape: batch=True wants the points "
                        "stacked along a new leading axis, as jax.vmap does)")
            raise ValueError(f"{who}{_where(tree, i)} must have shape {want}, "
                             f"got {a.shape}{hint}")
        ks.append(lead)
    if not ks:
        raise ValueError(f"{who}: the tape has no inputs, so there is no batch to read")
    if len(set(ks)) > 1:
        each = ", ".join(f"{who}{_where(tree, i)} has {lead}" for i, lead in enumerate(ks))
        raise ValueError(f"{who}: the leaves' leading axes differ ({each}); they "
                         f"must all be the same (b,) or (b, k)")
    lead = ks[0]
    bb, k = lead[0], (lead[1] if len(lead) == 2 else 1)
    if len(arrs) == 1 and arrs[0].dtype == np.float64 and arrs[0].flags.c_contiguous:
        return arrs[0].reshape(bb, k, size), len(lead) == 2     # (a view: the sweep only reads it)
    out = np.empty((bb, k, size))
    off = 0
    for a, s in zip(arrs, shapes):
        n = int(np.prod(s, dtype=np.int64))
        out[:, :, off:off + n] = a.reshape(bb, k, n)
        off += n
    return out, len(lead) == 2


# ---------------------------------------------------------------- results

def _split(tree, shape, arr, lead):
    """(lead..., size) -> the structure, each leaf with the leading axes `lead`."""
    if tree is None:
        return arr.reshape(lead + (() if shape is None else tuple(shape)))
    leaves = []
    for s, dt, off, n in zip(tree.shapes, tree.dtypes, tree.offsets, tree.sizes):
        v = arr[..., off:off + n].reshape(lead + (() if s is None else s))
        leaves.append(v if dt is None else v.astype(dt))
    return tree.unflatten(leaves)


def _jacobian_split(tape, J):
    """(b, m, n) -> (b,) + out.shape + x.shape, or for pytrees the output's
    structure of the input's structure of (b,) + out_leaf + in_leaf blocks."""
    b = J.shape[0]
    if tape.in_tree is None and tape.out_tree is None:
        ins = () if tape.in_shape is None else tuple(tape.in_shape)
        return J.reshape((b,) + tuple(tape.out_shape) + ins)
    rows = _pytree._tree_or_leaf(tape.out_tree, tape.out_shape)
    cols = _pytree._tree_or_leaf(tape.in_tree, tape.in_shape)
    out = []
    for s, off, n in zip(rows.shapes, rows.offsets, rows.sizes):
        rs = () if s is None else s
        inner = []
        for t, dt, o2, n2 in zip(cols.shapes, cols.dtypes, cols.offsets, cols.sizes):
            blk = J[:, off:off + n, o2:o2 + n2].reshape((b,) + rs + (() if t is None else t))
            inner.append(blk if dt is None else blk.astype(dt))
        out.append(cols.unflatten(inner))
    return rows.unflatten(out)


# ---------------------------------------------------------------- the loop

def _point_x(tape, row):
    """One point's x (the recorded structure) from its flat row."""
    if tape.in_tree is None:
        return float(row[0]) if tape.in_shape is None else row.reshape(tape.in_shape)
    t = tape.in_tree
    return t.unflatten([float(row[off]) if s is None else row[off:off + n].reshape(s)
                        for s, off, n in zip(t.shapes, t.offsets, t.sizes)])


def _loop(tape, kind, X, S, mode, stop_at_error):
    """The batch by single-point calls, flat (as fastad._batch.run_batch);
    stop_at_error: the first point that does not replay ends it."""
    b = X.shape[0]
    status = np.full(b, -1, dtype=np.int64)
    errors = {}
    lo, m = tape.n_inputs, tape.n_outputs
    k = 1 if S is None else S.shape[1]
    Y = np.full({_batch.VALUE: (b, m), _batch.GRAD: (b, lo), _batch.JVP: (b, k, m),
                 _batch.VJP: (b, k, lo), _batch.HVP: (b, k, lo)}.get(kind, (b, m, lo)), np.nan)
    V = np.full(b, np.nan) if kind == _batch.GRAD else None
    for p in range(b):
        try:
            r = tape._point_flat(kind, _point_x(tape, X[p]),
                                 None if S is None else S[p], mode)
        except BranchChangedError as e:
            status[p] = 0
            errors[p] = e
            if stop_at_error:
                break
            continue
        if kind == _batch.GRAD:
            V[p], Y[p] = r
        else:
            Y[p] = r
    return Y, V, status, errors


# ---------------------------------------------------------------- entry point

def batched(tape, method, X, seeds=None, mode="auto", workers=None,
            on_branch_change="raise"):
    """Tape.<method>(X, [seeds,] batch=True, ...): see the module docstring."""
    name = "__call__" if method == "value" else method
    workers, on_branch = check_options(name, workers, on_branch_change)
    tape._need_output(name)
    who = f"fastad.Tape.{name}(batch=True): X"
    Xf, _ = _stack_flat(tape.in_tree, tape.in_shape, X, who, None, False)
    Xf = Xf[:, 0, :]
    b = Xf.shape[0]
    lead = (b,)
    S = None
    stacked = False
    if method == "jacobian":
        if mode == "auto" and not all(getattr(bl, "has_tangent", True) for bl in tape.blocks):
            mode = "rev"
        mode = _tape.choose_mode(mode, tape.n_inputs, tape.n_outputs)
        kind = _batch.JAC_FWD if mode == "fwd" else _batch.JAC_REV
    else:
        kind = _KIND[method]
    if kind in (_batch.GRAD, _batch.HVP):
        if tape.out_slots.ndim != 0 or tape.out_tree is not None:
            raise ValueError(f"fastad.Tape.{method} needs a scalar output, but this tape's "
                             f"output has shape {tape.out_shape}; use tape.jacobian or "
                             f"tape.vjp (batch=True)")
    if kind in (_batch.JVP, _batch.HVP, _batch.VJP):
        what = {_batch.JVP: "V", _batch.HVP: "V", _batch.VJP: "Ybar"}[kind]
        who_s = f"fastad.Tape.{name}(batch=True): {what}"
        if kind == _batch.VJP:
            S, stacked = _stack_flat(tape.out_tree, tape.out_shape, seeds, who_s, b, True)
        else:
            S, stacked = _stack_flat(tape.in_tree, tape.in_shape, seeds, who_s, b, True)
        if stacked:
            lead = (b, S.shape[1])
    errors = {}
    if not tape.blocks and tape.value_read is None:
        chunk = 0
        if kind in (_batch.JAC_FWD, _batch.JAC_REV):
            chunk = tape._jacobian_chunk()
        # tiny batches: a thread costs more than it saves
        if b * max(len(tape), 1) * (1 if S is None else S.shape[1]) < 20000:
            workers = 1
        Y, V, status = _batch.run_batch(tape, kind, Xf, S, workers, chunk)
    else:
        Y, V, status = _batch_loop(tape, kind, Xf, S, mode, errors, on_branch == "raise")
    ok = status < 0
    if not ok.all():
        if on_branch == "raise":
            p = int(np.argmin(ok))
            if p in errors:
                e = errors[p]
                raise type(e)(f"fastad: point {p} of the batch (X[{p}]): "
                              f"{_unprefixed(str(e))}") from None
            raise BranchChangedError(
                f"fastad: point {p} of the batch (X[{p}]) takes another branch: "
                f"{_unprefixed(tape._branch_message(int(status[p])))}")
        Y[~ok] = np.nan
        if V is not None:
            V[~ok] = np.nan
    if kind == _batch.VALUE:
        res = _split(tape.out_tree, tape.out_shape, Y, lead)
    elif kind == _batch.GRAD:
        g = _split(tape.in_tree, tape.in_shape, Y, lead)
        res = g if method == "gradient" else (V, g)
    elif kind == _batch.JVP:
        res = _split(tape.out_tree, tape.out_shape, Y if stacked else Y[:, 0], lead)
    elif kind in (_batch.VJP, _batch.HVP):
        res = _split(tape.in_tree, tape.in_shape, Y if stacked else Y[:, 0], lead)
    else:
        res = _jacobian_split(tape, Y)
    if on_branch == "mask":
        return res, ok
    return res


def _unprefixed(msg):
    return msg[len("fastad: "):] if msg.startswith("fastad: ") else msg


def _batch_loop(tape, kind, Xf, S, mode, errors, stop_at_error):
    Y, V, status, errs = _loop(tape, kind, Xf, S, mode, stop_at_error)
    errors.update(errs)
    return Y, V, status


_tape.provide("batch", batched)
