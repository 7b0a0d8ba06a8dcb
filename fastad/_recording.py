"""Recording a function on a tape: the core of fad.record and of every
transform (fastad.transforms), here below them so that primitives can
record their rules too (second derivatives through a primitive).
"""
import numpy as np

from fastad._pytree import LEAF, Tree, flatten, input_leaf_ok, is_plain
from fastad._tape import Tape
from fastad._var import Array, Var, begin_recording, end_recording, make_input, output_slots


def _input(tape, x, k, trees):
    """Argument k on the tape: one input per leaf of a pytree (each its own
    block, no concatenation); its Tree goes to trees[k] unless x is plain."""
    if is_plain(x) or type(x) is Var or type(x) is Array:     # (make_input's errors)
        return make_input(tape, x, k)
    leaves, node = flatten(x, f"fastad: argument {k}", leaf_ok=_input_leaf_ok)
    tree = Tree.of_inputs(node, leaves)
    if node == LEAF and tree.dtypes[0] is None:
        return make_input(tape, x, k)             # a list of numbers, a float32 scalar...
    trees[k] = tree
    return tree.unflatten([make_input(tape, v, k) for v in leaves])


def _input_leaf_ok(o):
    return type(o) is Var or type(o) is Array or input_leaf_ok(o)


def _record(f, args, kwargs, argnums, tape=None, trees=None):
    """Run f with the argnums arguments on a new tape (or `tape`, empty);
    returns (tape, f's output).  `trees` (a dict) receives the Tree of each
    argument that is a pytree (or a float16/32 array)."""
    tape = Tape() if tape is None else tape
    trees = {} if trees is None else trees
    token = begin_recording(tape)
    try:
        args = list(args)
        for k in argnums:
            args[k] = _input(tape, args[k], k, trees)
        out = f(*args, **kwargs)
    finally:
        end_recording(token)
    return tape, out


def group_gradients(grads, nums, trees):
    """Per-input gradients (tape.input_gradients) -> one per argument in
    argnums, in its structure and dtype."""
    out, i = [], 0
    for k in nums:
        tree = trees.get(k)
        if tree is None:
            out.append(grads[i])
            i += 1
            continue
        n = tree.n_leaves
        out.append(tree.unflatten([g if dt is None else
                                   (dt.type(g) if s is None else g.astype(dt))
                                   for g, s, dt in zip(grads[i:i + n], tree.shapes,
                                                       tree.dtypes)]))
        i += n
    return out


def _output_leaf_ok(o):
    return isinstance(o, (Var, Array, np.ndarray, list, tuple)) or input_leaf_ok(o)


def set_outputs(tape, out):
    """Make f's output (a Var, an Array, numbers, or a pytree of them) the
    tape's outputs; a pytree's leaves are laid end to end (tape.out_tree)."""
    if isinstance(out, dict) or (isinstance(out, (list, tuple)) and (
            hasattr(type(out), "_fields") or not _scalar_output(out))):
        leaves, node = flatten(out, "fastad: f's output", atoms=Var, leaf_ok=_output_leaf_ok)
        parts = [output_slots(tape, v) for v in leaves]
        tape.out_tree = Tree(node, [None if p.ndim == 0 else p.shape for p in parts],
                             [None] * len(parts))
        tape._set_outputs(np.concatenate([p.reshape(-1) for p in parts])
                          if parts else np.zeros(0, dtype=np.intp))
    else:
        tape._set_outputs(output_slots(tape, out))


def _scalar_output(out):
    """A list/tuple of Vars and numbers (at any depth): one stacked vector, as before."""
    return flatten(out, "", atoms=Var)[1] == LEAF


def record(f, x):
    """Record f at x on a replayable fad.Tape (record once, differentiate many times).

    x may be a float, an array or a pytree (nested tuples, lists, dicts of
    them); the tape replays at new inputs of x's structure and shapes without
    Python in the loop: tape(x), tape.gradient(x), tape.value_and_gradient(x),
    tape.jvp(x, v), tape.vjp(x, ybar), tape.jacobian(x).  Comparisons made while
    recording are re-checked on replay; a different outcome raises
    fad.BranchChangedError.
    """
    trees = {}
    tape, out = _record(f, (x,), {}, (0,), trees=trees)
    set_outputs(tape, out)
    tree = trees.get(0)
    if tree is not None:
        tape.in_tree = tree
        tape.in_shape = (tree.size,)
    else:
        tape.in_shape = tape.inputs[0][1]
    tape.f = f
    return tape


def _output_value(tape):
    vals = tape.values()[tape.out_slots]
    if tape.out_tree is not None:
        return tape.out_tree.split(np.reshape(vals, (1, -1)), False)
    return float(vals) if tape.out_slots.ndim == 0 else vals
