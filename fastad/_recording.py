"""Recording a function on a tape: the core of fad.record and of every
transform (fastad.transforms), here below them so that primitives can
record their rules too (second derivatives through a primitive).
"""
from fastad._tape import Tape
from fastad._var import begin_recording, end_recording, make_input, output_slots


def _record(f, args, kwargs, argnums, tape=None):
    """Run f with the argnums arguments on a new tape (or `tape`, empty);
    returns (tape, f's output)."""
    tape = Tape() if tape is None else tape
    token = begin_recording(tape)
    try:
        args = list(args)
        for k in argnums:
            args[k] = make_input(tape, args[k], k)
        out = f(*args, **kwargs)
    finally:
        end_recording(token)
    return tape, out


def record(f, x):
    """Record f at x on a replayable fad.Tape (record once, differentiate many times).

    The tape replays at new inputs of x's shape without Python in the loop:
    tape(x), tape.gradient(x), tape.value_and_gradient(x), tape.jvp(x, v),
    tape.vjp(x, ybar), tape.jacobian(x).  Comparisons made while recording
    are re-checked on replay; a different outcome raises fad.BranchChangedError.
    """
    tape, out = _record(f, (x,), {}, (0,))
    tape._set_outputs(output_slots(tape, out))
    tape.in_shape = tape.inputs[0][1]
    tape.f = f
    return tape


def _output_value(tape):
    vals = tape.values()[tape.out_slots]
    return float(vals) if tape.out_slots.ndim == 0 else vals
