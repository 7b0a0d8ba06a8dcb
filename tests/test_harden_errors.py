"""Issue #18, item 9: errors that say what went wrong (argnums of the wrong
type, an empty Tape, complex directions, a Var used from another thread);
after each, fastad keeps working."""
import threading

import numpy as np
import pytest

import fastad as fad
from conftest import close


def _still_works():
    close(fad.grad(lambda x: np.sum(x * x))(np.array([1.0, 2.0])), [2.0, 4.0])


@pytest.mark.parametrize("argnums", [0.0, 1.5, "0", None, {0}, np.float64(0.0)])
def test_argnums_of_the_wrong_type(argnums):
    with pytest.raises(TypeError, match="argnums must be an int or a tuple of ints"):
        fad.grad(lambda x: x * x, argnums=argnums)(1.0)
    _still_works()


def test_argnums_lists_and_numpy_ints_still_work():
    close(fad.grad(lambda x, y: x * y, argnums=[0, 1])(2.0, 3.0), (3.0, 2.0))
    close(fad.grad(lambda x, y: x * y, argnums=np.int64(1))(2.0, 3.0), 2.0)
    with pytest.raises(TypeError, match="argnums must be ints, got 1.0"):
        fad.grad(lambda x, y: x * y, argnums=(0, 1.0))(2.0, 3.0)


@pytest.mark.parametrize("call", ["hessian", "gradient", "vjp", "jvp", "hvp", "jacobian",
                                  "call", "value_and_gradient"])
def test_an_empty_tape_says_it_has_no_output(call):
    t = fad.Tape()
    x = np.ones(2)
    calls = {"hessian": lambda: t.hessian(x), "gradient": lambda: t.gradient(x),
             "vjp": lambda: t.vjp(x, np.ones(2)), "jvp": lambda: t.jvp(x, np.ones(2)),
             "hvp": lambda: t.hvp(x, np.ones(2)), "jacobian": lambda: t.jacobian(x),
             "call": lambda: t(x), "value_and_gradient": lambda: t.value_and_gradient(x)}
    with pytest.raises(ValueError, match="no recorded output.*fad.record"):
        calls[call]()
    _still_works()


COMPLEX = {
    "fad.jvp": lambda f, x: fad.jvp(f, x, np.ones(2) * 1j),
    "fad.jvp_stacked": lambda f, x: fad.jvp(f, x, np.ones((3, 2)) + 0.5j),
    "fad.vjp": lambda f, x: fad.vjp(f, x)[1](np.ones(2) * 1j),
    "fad.hvp": lambda f, x: fad.hvp(lambda z: np.sum(f(z)), x, np.ones(2) * 1j),
    "tape.jvp": lambda f, x: fad.record(f, x).jvp(x, np.array([1.0, 1j])),
    "tape.vjp": lambda f, x: fad.record(f, x).vjp(x, np.array([1j, 0])),
    "tape.hvp": lambda f, x: fad.record(lambda z: np.sum(f(z)), x).hvp(x, np.ones(2) * 1j),
}


@pytest.mark.parametrize("name", list(COMPLEX))
def test_complex_directions_are_refused(name):
    f = lambda x: x * x  # noqa: E731
    with pytest.raises(TypeError, match="must be real numbers, got complex"):
        COMPLEX[name](f, np.array([1.0, 2.0]))
    y, t = fad.jvp(f, np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    close(t, [2.0, 0.0])


def _in_worker(fn):
    """Run fn in a worker thread; return the exception it raised."""
    out = []

    def run():
        try:
            fn()
        except Exception as exc:   # noqa: BLE001 - handed back to the test
            out.append(exc)
    th = threading.Thread(target=run)
    th.start()
    th.join()
    return out[0] if out else None


@pytest.mark.parametrize("use", ["mul", "sin", "array_add", "index"])
def test_a_var_used_from_a_worker_thread(use):
    errors = []

    def f(x):
        ops = {"mul": lambda: x[0] * 2.0, "sin": lambda: fad.sin(x[1]),
               "array_add": lambda: x + 1.0, "index": lambda: x[0] * x[1]}
        errors.append(_in_worker(ops[use]))
        return np.sum(x * x)

    close(fad.grad(f)(np.array([1.0, 2.0])), [2.0, 4.0])
    assert isinstance(errors[0], fad.TapeError)
    assert "recording running in another thread" in str(errors[0])
    assert "has ended" not in str(errors[0])


def test_a_var_used_after_its_recording_still_says_ended():
    kept = []
    fad.grad(lambda x: kept.append(x) or x * x)(1.0)
    with pytest.raises(fad.TapeError, match="has ended"):
        kept[0] * 2.0
    err = _in_worker(lambda: kept[0] * 2.0)
    assert isinstance(err, fad.TapeError) and "has ended" in str(err)
