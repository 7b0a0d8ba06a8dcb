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
    # ufuncs
    "missing: np.arccosh": ["*::test_arccosh"],
    "missing: np.arctanh": ["*::test_arctanh"],
    "missing: np.deg2rad": ["*::test_deg2rad"],
    "missing: np.rad2deg": ["*::test_rad2deg"],
    "missing: np.degrees": ["*::test_degrees"],
    "missing: np.radians": ["*::test_radians"],
    "missing: np.reciprocal": ["scalar_ops::test_reciprocal"],
    "missing: np.sinc": ["scalar_ops::test_sinc"],
    "missing: np.ceil": ["systematic::test_ceil"],
    "missing: np.floor": ["systematic::test_floor"],
    "missing: np.logaddexp2": ["systematic::test_logaddexp2"],
    "missing: np.fmax": ["systematic::test_fmax"],
    "missing: np.fmin": ["systematic::test_fmin"],
    "missing: np.remainder": ["binary_ops::test_mod", "scalar_ops::test_mod_arg*",
                              "systematic::test_remainder", "systematic::test_mod",
                              "systematic::test_mod_neg"],
    "missing: the % operator": ["systematic::test_op_mod", "systematic::test_op_mod_neg"],
    "missing: np.real": ["systematic::test_real"],
    "missing: np.real_if_close": ["systematic::test_real_ic"],
    "missing: np.imag": ["systematic::test_imag"],
    "missing: np.conjugate": ["systematic::test_conj", "systematic::test_conjugate"],
    "missing: np.angle": ["systematic::test_angle"],
    "missing: np.nan_to_num": ["numpy::test_nan_to_num"],
    # reductions and scans
    "missing: np.prod": ["numpy::test_prod_*", "systematic::test_prod",
                         "numpy::test_plain_numpy_reductions_on_box"],
    "missing: np.var": ["numpy::test_var_ddof", "systematic::test_var"],
    "missing: np.std": ["numpy::test_std_ddof", "systematic::test_std"],
    "missing: np.cumsum": ["numpy::test_cumsum_*"],
    "missing: np.trace": ["numpy::test_trace*", "systematic::test_trace"],
    "missing: np.diff": ["systematic::test_diff"],
    "missing: np.gradient": ["numpy::test_gradient", "systematic::test_gradient"],
    "missing: np.sort": ["systematic::test_sort"],
    "missing: np.partition": ["systematic::test_partition"],
    # shape and assembly
    "missing: np.repeat": ["numpy::test_repeat*", "systematic::test_repeat"],
    "missing: np.tile": ["systematic::test_tile"],
    "missing: np.roll": ["numpy::test_roll*"],
    "missing: np.rot90": ["numpy::test_rot90"],
    "missing: np.flipud": ["numpy::test_flipud"],
    "missing: np.fliplr": ["numpy::test_fliplr"],
    "missing: np.clip": ["numpy::test_clip"],
    "missing: np.diag": ["numpy::test_diag", "systematic::test_diag", "systematic::test_diag_flat"],
    "missing: np.diagonal": ["numpy::test_diagonal"],
    "missing: np.tril": ["numpy::test_tril", "systematic::test_tril", "systematic::test_tril_3d",
                         "linalg::test_cholesky*"],
    "missing: np.triu": ["numpy::test_triu", "systematic::test_triu", "systematic::test_triu_3d"],
    "missing: np.swapaxes": ["systematic::test_swapaxes", "scipy::test_sqrtm"],
    "missing: np.moveaxis": ["systematic::test_moveaxis"],
    "missing: np.rollaxis": ["systematic::test_rollaxis"],
    "missing: np.atleast_1d": ["systematic::test_atleast_1d"],
    "missing: np.atleast_2d": ["systematic::test_atleast_2d"],
    "missing: np.atleast_3d": ["systematic::test_atleast_3d"],
    "missing: np.append": ["numpy::test_simple_append_*"],
    "missing: np.split": ["systematic::test_split_*"],
    "missing: np.array_split": ["systematic::test_array_split_*"],
    "missing: np.hsplit": ["systematic::test_hsplit_*"],
    "missing: np.vsplit": ["systematic::test_vsplit_*"],
    "missing: np.dsplit": ["systematic::test_dsplit_3d"],
    "missing: np.column_stack": ["systematic::test_column_stack_*"],
    "missing: np.vstack with dtype=, casting= (np.row_stack passes them)": ["systematic::test_row_stack_*"],
    "missing: np.pad": ["systematic::test_pad"],
    "missing: np.select": ["systematic::test_select"],
    "missing: np.linspace": ["numpy::test_linspace"],
    "missing: the ndarray method squeeze": ["numpy::test_squeeze_method"],
    # products
    "missing: np.outer": ["numpy::test_outer", "systematic::test_outer"],
    "missing: np.inner": ["systematic::test_inner"],
    "missing: np.kron": ["systematic::test_kron"],
    "missing: np.cross": ["systematic::test_cross"],
    "missing: np.tensordot": ["numpy::test_tensordot_kwargs_by_position", "systematic::test_tensordot_*"],
    "missing: np.einsum": ["systematic::test_einsum*"],
    "missing: matmul/dot on stacks of matrices": ["systematic::test_dot", "systematic::test_matmul",
                                                  "systematic::test_matmul_broadcast"],
    # linalg
    "missing: np.linalg.inv": ["linalg::test_inv*"],
    "missing: np.linalg.pinv": ["linalg::test_pinv"],
    "missing: np.linalg.solve": ["linalg::test_solve_*"],
    "missing: np.linalg.det": ["linalg::test_det*"],
    "missing: np.linalg.slogdet": ["linalg::test_slogdet*"],
    "missing: np.linalg.eigh": ["linalg::test_eigvalh_*"],
    "missing: np.linalg.svd": ["linalg::test_svd_*"],
    "missing: np.linalg.norm with ord=/axis=": ["linalg::test_frobenius_norm_axis", "linalg::test_norm_axis*",
                                                "linalg::test_vector_norm_ord*", "linalg::test_norm_nuclear*"],
    # values built from traced numbers, pytrees, dtypes, nesting
    "missing: np.array / np.r_ / np.c_ of traced values": [
        "numpy::test_1d_array*", "numpy::test_2d_array*", "numpy::test_array_from_*",
        "numpy::test_r_basic", "numpy::test_r_double", "numpy::test_r_node_and_const",
        "numpy::test_r_mixed", "numpy::test_r_slicing", "numpy::test_c_*",
        "numpy::test_max_equal_values_2d", "numpy::test_min_3_way_equality",
        "numpy::test_maximum_equal_values_2d", "numpy::test_std_list_of_boxes",
        "numpy::test_var_list_of_boxes", "jacobian::test_jacobian_scalar_to_vector"],
    "missing: np.int64(traced array) (an integer cast that drops derivatives)": ["numpy::test_cast_to_int"],
    "missing: pytree inputs (a tuple/list of arrays as the differentiated argument)": [
        "systematic::test_concatenate_*", "systematic::test_vstack_*", "systematic::test_hstack_*",
        "systematic::test_stack_1d"],
    "missing: float32 gradients for float32 inputs": ["numpy::test_astype"],
    "missing: shape/ndim/size/dtype on a traced scalar": ["numpy::test_scalar_array_box_attributes"],
    "missing: nested grad(grad(f)) (issue #17)": [
        "scalar_ops::test_power_arg0", "graphs::test_grad_fanout", "graphs::test_grad_identity",
        "graphs::test_hess_vector_prod", "graphs::test_third_derivative*",
        "graphs::test_enclosing_scope_ref*",
        "jacobian::test_jacobian_against_stacked_grads",  # and np.prod
        "jacobian::test_jacobian_higher_order"],  # and np.outer
    "missing: grad of a function returning a size-1 array": [
        "graphs::test_singleton_array_output*", "jacobian::test_jacobian_against_grad"],
    # SciPy
    "missing: scipy.special ufuncs (#16 item 4)": [
        "scipy::test_beta", "scipy::test_betainc", "scipy::test_betaln", "scipy::test_gammainc",
        "scipy::test_gammaincc", "scipy::test_jn", "scipy::test_yn", "scipy::test_psi",
        "scipy::test_digamma", "scipy::test_gamma", "scipy::test_gammaln", "scipy::test_gammasgn",
        "scipy::test_rgamma", "scipy::test_j0", "scipy::test_j1", "scipy::test_y0", "scipy::test_y1",
        "scipy::test_i0", "scipy::test_i1", "scipy::test_iv", "scipy::test_ive", "scipy::test_erf",
        "scipy::test_erfc", "scipy::test_erfinv", "scipy::test_erfcinv", "scipy::test_logit",
        "scipy::test_expit"],
    "not planned (#16): SciPy functions that are not ufuncs (stats, logsumexp, integrate, linalg, "
    "polygamma, multigammaln)": [
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
