"""autograd's NumPy derivative tests (benchmarks/peer/) run against fastad.

One case per ported test.  A test that fails today because fastad lacks
something is a strict xfail with its reason in XFAIL (the one place to edit:
remove an entry when the feature lands; a strict xfail that passes fails the
run and says so).  An xfail only covers fastad raising an error: a wrong
value or derivative always fails.  Beyond autograd's checks, each test also
checks replay and k-lane sweeps (peer_util REPLAY, LANES).
"""
import fnmatch
import importlib.util
import os
import sys
import warnings

import numpy as np
import pytest

PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "benchmarks", "peer")
sys.path.insert(0, PEER)
import peer_util  # noqa: E402

# run.py under a name of its own ("run" is too common a module name)
_spec = importlib.util.spec_from_file_location("peer_run", os.path.join(PEER, "run.py"))
peer_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_run)

# reason -> test ids (fnmatch patterns) that fail for that reason today
XFAIL = {
    "not planned: scipy.linalg.sqrtm converts its input with np.asarray":
        ["scipy::test_sqrtm"],
    "by design: a list of numbers is read as one array, so its gradient is an ndarray "
    "(autograd returns a list)":
        ["numpy::test_simple_append_list", "numpy::test_simple_append_list_2D"],
    "by design: np.int64(traced array) would drop the derivatives (a clear TypeError)":
        ["numpy::test_cast_to_int"],
    "by design: a traced scalar has no dtype (NumPy's object-array var/std read it)":
        ["numpy::test_scalar_array_box_attributes"],
    "by design (JAX's rule): grad needs a 0-d output, not a size-1 array": [
        "graphs::test_singleton_array_output*", "jacobian::test_jacobian_against_grad"],
    "not planned (#16): SciPy functions that are not ufuncs (stats, logsumexp, integrate, "
    "linalg, polygamma, multigammaln)": [
        "scipy::test_chi2_*", "scipy::test_beta_*", "scipy::test_gamma_*", "scipy::test_norm_*",
        "scipy::test_poisson_*", "scipy::test_t_*", "scipy::test_mvn_*", "scipy::test_dirichlet_*",
        "scipy::test_logsumexp*", "scipy::test_odeint", "scipy::test_solve_sylvester",
        "scipy::test_solve_banded", "scipy::test_polygamma", "scipy::test_multigammaln"],
}


class PeerError(Exception):
    """fastad raised while a peer test ran (the kind of failure XFAIL covers)."""


def _xfail_reason(tid):
    for reason, patterns in XFAIL.items():
        if any(fnmatch.fnmatchcase(tid, p) for p in patterns):
            return reason
    return None


def _cases():
    out = []
    for tid, group, fn, kwargs in peer_run.collect():
        marks = []
        if tid in peer_run.SKIP:
            marks.append(pytest.mark.skip(reason=peer_run.SKIP[tid]))
        else:
            reason = _xfail_reason(tid)
            if reason:
                marks.append(pytest.mark.xfail(strict=True, raises=PeerError, reason=reason))
        out.append(pytest.param(tid, fn, kwargs, id=tid, marks=marks))
    return out


CASES = _cases()


@pytest.mark.parametrize("tid, fn, kwargs", CASES)
def test_peer(tid, fn, kwargs, monkeypatch):
    # fastad's own contract on top of autograd's checks: replay at a nearby
    # point, and k seeds/directions at once (run.py --replay --lanes)
    monkeypatch.setattr(peer_util, "REPLAY", True)
    monkeypatch.setattr(peer_util, "LANES", True)
    peer_util.Stats.reset()
    np.random.seed(42)  # as autograd's conftest
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            fn(**kwargs)
    except peer_util.WrongDerivative:
        raise
    except AssertionError as e:
        if tid in peer_run.NOT_DERIVATIVE_ASSERTS:
            raise PeerError(f"{peer_run.NOT_DERIVATIVE_ASSERTS[tid]}: {e}") from None
        raise
    except AttributeError as e:
        if "module 'numpy' has no attribute" in str(e):      # (np.row_stack: gone in NumPy 2.5)
            pytest.skip(f"this NumPy lacks what the test calls: {e}")
        raise PeerError(f"AttributeError at {peer_run._where(e)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - fastad raised: an xfail may cover it
        # not chained: pytest formats every xfail's traceback, and a chained one
        # costs more than the test; the message says where it was raised
        raise PeerError(f"{type(e).__name__} at {peer_run._where(e)}: {e}") from None
    if peer_util.Stats.checks == 0 and peer_util.Stats.complex_skipped:
        pytest.skip("complex inputs only")


def test_xfail_entries_all_used():
    """Every XFAIL pattern names at least one ported test (no stale entries)."""
    ids = [c.values[0] for c in CASES]
    unused = [p for ps in XFAIL.values() for p in ps
              if not any(fnmatch.fnmatchcase(t, p) for t in ids)]
    assert not unused


# ---------------------------------------------------------------------------
# the harness can fail: each check catches a derivative that is slightly off
# ---------------------------------------------------------------------------

def _sin_with(vjp_factor=1.0, jvp_factor=1.0):
    import fastad as fad

    @fad.primitive
    def f(x):
        return np.sin(x)

    @f.defvjp
    def _(ybar, y, x):
        return ybar * np.cos(x) * vjp_factor

    @f.defjvp
    def _(xdot, y, x):
        return xdot * np.cos(x) * jvp_factor
    return f


X = np.linspace(0.1, 1.0, 5)


def test_harness_passes_right_derivatives():
    peer_util.check_grads(lambda x, y: np.sin(x) * np.dot(x, y) ** 2)(X, X[::-1].copy())
    peer_util.check_grads(_sin_with(), modes=["rev"], order=1)(X)


@pytest.mark.parametrize("modes, vjp_factor, jvp_factor", [
    (["rev"], 1.001, 1.0), (["fwd"], 1.0, 1.001)])
def test_harness_catches_wrong_first_order(modes, vjp_factor, jvp_factor):
    with pytest.raises(peer_util.WrongDerivative, match=modes[0]):
        peer_util.check_grads(_sin_with(vjp_factor, jvp_factor), modes=modes, order=1)(X)


@pytest.mark.parametrize("modes, fn", [(["rev"], "hvp"), (["rev"], "hessian"), (["fwd"], "hvp")])
def test_harness_catches_wrong_second_order(monkeypatch, modes, fn):
    import fastad as fad
    real = getattr(fad, fn)
    if fn == "hvp":
        monkeypatch.setattr(peer_util.fad, "hvp", lambda f, x, v: 1.001 * real(f, x, v))
    else:
        monkeypatch.setattr(peer_util.fad, "hessian", lambda f: lambda x: 1.001 * real(f)(x))
    with pytest.raises(peer_util.WrongDerivative, match="order 2|hessian"):
        peer_util.check_grads(lambda x: np.sin(x) * x ** 2, modes=modes)(X)


def test_harness_catches_wrong_value(monkeypatch):
    import fastad as fad
    real = fad.vjp

    def off_vjp(f, x):
        y, pb = real(f, x)
        return y * 1.001, pb
    monkeypatch.setattr(peer_util.fad, "vjp", off_vjp)
    with pytest.raises(peer_util.WrongDerivative, match="value"):
        peer_util.check_grads(np.sin, modes=["rev"], order=1)(X)


# ---------------------------------------------------------------------------
# the runner: isolation, time limit, classification, summary
# ---------------------------------------------------------------------------

def _hangs():
    import time
    time.sleep(60)


def _crashes():
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)


def _missing_function():
    peer_util.check_grads(lambda x: np.histogram(x)[0] * 1.0)(X)


def _missing_ufunc():
    peer_util.check_grads(lambda x: np.sum(np.spacing(x)))(X)


def _wrong():
    peer_util.check_grads(_sin_with(vjp_factor=1.01), modes=["rev"], order=1)(X)


def _wrong_assert():
    assert peer_util.grad(lambda x: x * x)(3.0) == 7.0


def _complex_only():
    peer_util.check_grads(np.sin)(X + 1j)


def _passes():
    peer_util.check_grads(np.sin)(X)


def test_runner_isolates_and_classifies():
    tests = [(name, "numpy", fn, {}) for name, fn in [
        ("t::hangs", _hangs), ("t::crashes", _crashes), ("t::missing_function", _missing_function),
        ("t::missing_ufunc", _missing_ufunc), ("t::wrong", _wrong), ("t::wrong_assert", _wrong_assert),
        ("t::complex_only", _complex_only), ("t::passes", _passes)]]
    res = peer_run.run_all(tests, jobs=2, timeout=3.0, progress=False)
    status = {tid: r["status"] for tid, r in res.items()}
    assert status == {"t::hangs": "error", "t::crashes": "error", "t::missing_function": "error",
                      "t::missing_ufunc": "error", "t::wrong": "wrong", "t::wrong_assert": "wrong",
                      "t::complex_only": "skipped", "t::passes": "pass"}
    assert res["t::hangs"]["message"].startswith("timeout")
    assert res["t::crashes"]["message"].startswith("crash")
    text = peer_run.summarize(res, tests, list_failures=True)
    assert "## numpy: 7 real-valued tests: 1 pass (14.3%), 4 error, 2 WRONG; 1 skipped" in text
    assert "- np.histogram: 1  (t::missing_function)" in text
    assert "- np.spacing: 1  (t::missing_ufunc)" in text
    assert "- t::wrong: " in text and "rev (vjp)" in text
    # fastad still works in this process
    assert peer_util.grad(lambda x: x * x)(3.0) == 6.0


def test_harness_handles_ragged_tuple_arguments():
    """Tuple/list arguments of different shapes (np.concatenate's) are
    flattened, perturbed and compared leaf by leaf."""
    x = (np.ones(1), [np.arange(3.0), 2.0])
    u = peer_util._like(x, np.random.default_rng(0))
    assert peer_util._shapes(u) == peer_util._shapes(x) == [(1,), (3,), ()]
    assert isinstance(u[1], list) and isinstance(u[1][1], float)
    shifted = peer_util._shift(x, u, 0.5)
    np.testing.assert_array_equal(peer_util._flat(shifted), peer_util._flat(x) + 0.5 * peer_util._flat(u))
    fd = peer_util._fd(lambda t: np.concatenate([t[0], t[1][0] * t[1][1]]), x, u, 1e-6)
    np.testing.assert_allclose(fd, np.concatenate([u[0], u[1][0] * 2.0 + np.arange(3.0) * u[1][1]]),
                               rtol=1e-6)
    assert peer_util._is_float(x) and not peer_util._is_float((np.ones(2), 3))
    assert peer_util._is_complex((np.ones(2), [1j]))


def test_harness_replay_check(monkeypatch):
    """--replay: a replayed gradient that differs is wrong; a refused replay is not."""
    import fastad as fad
    monkeypatch.setattr(peer_util, "REPLAY", True)
    peer_util.Stats.reset()
    peer_util.check_grads(lambda x: np.sin(x) * x ** 2, order=1)(X)
    real = fad.record

    class Off:
        def __init__(self, tape, error=None):
            self.tape, self.error = tape, error

        def gradient(self, x):
            if self.error:
                raise self.error
            return 1.001 * self.tape.gradient(x)
    monkeypatch.setattr(peer_util.fad, "record", lambda f, x: Off(real(f, x)))
    with pytest.raises(peer_util.WrongDerivative, match="replayed gradient"):
        peer_util.check_grads(np.sin, order=1)(X)
    monkeypatch.setattr(peer_util.fad, "record",
                        lambda f, x: Off(real(f, x), fad.BranchChangedError("branch")))
    peer_util.check_grads(np.sin, order=1)(X)
    assert peer_util.Stats.replay_refused == 1


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_harness_lanes_check(monkeypatch, mode):
    """--lanes: k seeds/directions at once must equal one at a time."""
    import fastad as fad
    monkeypatch.setattr(peer_util, "LANES", True)
    peer_util.check_grads(lambda x: np.sin(x) * x[::-1], modes=[mode], order=1)(X)
    real_vjp, real_jvp = fad.vjp, fad.jvp

    def off(a):     # the last lane of a k-lane result is off
        a = np.array(a, dtype=float)
        if a.ndim == 2:
            a[-1] *= 1.001
        return a

    def vjp(f, x):
        y, pb = real_vjp(f, x)
        return y, lambda w: off(pb(w))
    monkeypatch.setattr(peer_util.fad, "vjp", vjp)
    monkeypatch.setattr(peer_util.fad, "jvp", lambda f, x, v: (real_jvp(f, x, v)[0], off(real_jvp(f, x, v)[1])))
    with pytest.raises(peer_util.WrongDerivative, match="lane 2"):
        peer_util.check_grads(lambda x: np.sin(x) * x[::-1], modes=[mode], order=1)(X)
