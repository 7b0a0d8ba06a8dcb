"""Nothing a user can reach from plain Python corrupts memory: internals that
once crashed the interpreter are now private, read-only or checked."""
import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastad as fad


def _tape():
    return fad.record(lambda x: x[0] * fad.sin(x[1]) + x[2] * x[3], np.arange(4.0))


def test_out_slots_cannot_be_pointed_outside_the_tape():
    t = _tape()
    with pytest.raises(AttributeError):
        t.out_slots = np.array(10**9)
    slots = t.out_slots                 # a copy: writing to it changes nothing
    slots[...] = 10**9
    assert t(np.arange(4.0)) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="output slots"):
        t._set_outputs(np.array(10**9))
    np.testing.assert_allclose(t.gradient(np.arange(4.0)), [np.sin(1.0), 0.0, 3.0, 2.0])


@pytest.mark.parametrize("call", [
    lambda t: t.add_inputs(np.ones(10**6)),
    lambda t: t.push_const(1.0),
    lambda t: t.push_consts(np.ones(5)),
    lambda t: t.open_block(10**6),
    lambda t: t.note_input(0, 4),
])
def test_a_recorded_tape_cannot_grow(call):
    t = _tape()
    view = t.recorded_values()
    with pytest.raises(fad.TapeError, match="not being recorded"):
        call(t)
    assert view[3] == 3.0             # the view still reads the tape's memory
    np.testing.assert_allclose(t.gradient(np.arange(4.0)), [np.sin(1.0), 0.0, 3.0, 2.0])


def test_an_input_shape_that_disagrees_with_the_inputs_is_refused():
    t = _tape()
    t.in_shape = (1,)
    with pytest.raises(ValueError, match="4 inputs"):
        t.gradient(np.ones(1))


def test_a_new_tape_cannot_grow_outside_a_recording():
    t = fad.Tape()
    with pytest.raises(fad.TapeError, match="not being recorded"):
        t.add_inputs(np.ones(3))
    assert len(t) == 0


def test_a_recorded_tape_cannot_be_recorded_again():
    from fastad.transforms import _record
    t = _tape()
    with pytest.raises(fad.TapeError, match="recorded already"):
        _record(lambda x: x * 2.0, (1.0,), {}, (0,), tape=t)
    assert fad.grad(lambda x: x * 2.0)(1.0) == 2.0      # and recording still works


def test_recorded_values_keep_their_tape_alive():
    view = _tape().recorded_values()
    gc.collect()
    fad.grad(lambda x: fad.sum(x * x))(np.ones(1000))   # reuses freed tape memory, if any
    np.testing.assert_array_equal(view[:4], np.arange(4.0))


def test_an_array_not_made_by_fastad_raises():
    a = fad.Array.__new__(fad.Array)
    for use in (lambda: a.value, lambda: a[0], lambda: a.idx):
        with pytest.raises(fad.TapeError, match="not made by fastad"):
            use()
    assert "not made by fastad" in repr(a)
    with pytest.raises((fad.TapeError, TypeError)):
        a + 1.0
    v = fad.Var.__new__(fad.Var)
    with pytest.raises(fad.TapeError):
        v * 2.0


def test_array_has_no_public_tape():
    def f(x):
        assert not hasattr(x, "tape")
        return fad.sum(x)
    assert fad.grad(f)(np.ones(3)).tolist() == [1.0, 1.0, 1.0]


def test_the_reproducers_do_not_crash_a_fresh_interpreter():
    # each line once crashed the interpreter; in a child, so a crash fails one test
    code = textwrap.dedent("""
        import numpy as np, fastad as fad
        t = fad.record(lambda x: x[0] * fad.sin(x[1]) + x[2] * x[3], np.arange(4.0))
        for attempt in (
            lambda: setattr(t, "out_slots", np.array(10**9)),
            lambda: t.add_inputs(np.ones(10**6)),
            lambda: fad.Array.__new__(fad.Array).value,
        ):
            try:
                attempt()
            except Exception:
                pass
        v = fad.record(lambda x: x * 2.0, np.ones(3)).recorded_values()
        import gc; gc.collect()
        print(float(v.sum()), float(t.gradient(np.arange(4.0))[0]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "9.0"
