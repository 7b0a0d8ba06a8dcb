"""Repeated forward sparse Jacobians of array code keep the tangents of
blocks the seeds alone decide (fastad._blocks.TangentFold): the results
must equal a full sweep and the dense Jacobian at every new point."""
import sys
import threading

import numpy as np
import pytest

import fastad as fad
from fastad.sparse import JacobianPlan

pytest.importorskip("scipy.sparse")

A = np.random.default_rng(5).normal(size=(9, 9)) * (np.abs(np.arange(9)[:, None] - np.arange(9)) < 2)


def bratu(x):
    h2 = 1.0 / (len(x) + 1) ** 2
    xp = fad.concatenate([np.zeros(1), x, np.zeros(1)])
    return xp[:-2] - 2 * x + xp[2:] + h2 * np.exp(x)


def linear_only(x):                       # every block constant: nothing re-swept
    xp = fad.concatenate([np.ones(1), x, np.ones(1)])
    return 3.0 * (xp[:-2] - xp[2:]) / 2.0 + x


def nonlinear_first(x):                   # the varying block feeds linear ones
    y = np.sin(x)
    return (y[1:] - y[:-1]) * 4.0 - x[1:]


def banded_matmul(x):                     # constant matrix @ active vector
    return A @ x + x * x


def broadcast_mix(x):
    m = fad.reshape(x, (3, 3))
    return fad.reshape(m * np.arange(1.0, 4.0) + np.tanh(m) - m.sum(axis=0), (9,))


def gathered(x):
    return x[::2] * x[1::2][:4].sum() + x[np.array([8, 0, 4, 2, 6])]


def with_comparison(x):                   # a recorded branch: re-checked on replay
    y = fad.where(x > 0, x * x, -x)
    return y[1:] + 2 * y[:-1]


def with_scalars(x):                      # scalar nodes and blocks: no fold
    s = x[0] * x[1]
    return x * 2.0 + s


def bratu_loop(x):                        # scalar nodes only: a ScalarFold
    n = len(x)
    h2 = 1.0 / (n + 1) ** 2
    out = []
    for i in range(n):
        left = x[i - 1] if i > 0 else 0.0
        right = x[i + 1] if i < n - 1 else 0.0
        out.append(left - 2 * x[i] + right + h2 * fad.exp(x[i]))
    return fad.stack(out)


def loop_mixed(x):                        # fixed, varying and branching nodes
    out = []
    for i in range(len(x) - 1):
        a = 3.0 * x[i] - x[i + 1] / 2.0
        b = fad.sin(a) * x[i] if x[i] > 0.5 else a - 1.0
        out.append(b + 2 * a + fad.sqrt(x[i + 1]))
    out.append(x[0] * 1.0)                # linear in an input: fixed
    return fad.stack(out)


def chains_both_sides(x):                 # two chains meet in one add
    return np.exp(x[:-1]) * 2.0 + 3.0 * np.sin(np.tanh(x[1:]))


def exp_of_scaled(x):                     # the chain ends at a kept block: tangents 3
    return np.exp(3.0 * x) + x


def scaled_by_array(x):                   # a constant array partial on a changing chain
    return np.exp(x) * np.arange(1.0, len(x) + 1.0) + 2.0 * x


def chain_read_twice(x):                  # sin(x) is read by two blocks: kept
    s = np.sin(x)
    return fad.concatenate([np.exp(s) * 2.0 + s, s * s])


def chain_into_output(x):                 # an intermediate is also an output
    e = np.exp(x) * 0.5
    return fad.concatenate([e, -np.sqrt(e) + x])


def chain_with_zero_partials(x):          # 0 * sqrt(x) at x = 0: an exact zero
    return 0.0 * np.sqrt(x * x) + np.log1p(x * x) * x


def identity_and_exp(x):                  # outputs that are input slots
    return fad.concatenate([x, np.exp(x)])


def constant_rows(x):                     # outputs that are constants
    return fad.concatenate([np.ones(2), x * 2.0])


def chain_to_a_reshaped_output(x):        # every block varies; the chain still folds
    return fad.reshape(np.sin(np.exp(x) * 3.0), (3, 3))


def sum_output(x):
    return fad.reshape(fad.sum(np.exp(x)), (1,))


def matmul_both_active(x):
    m = fad.reshape(x, (3, 3))
    return fad.reshape(m @ m, (9,))


def loop_linear(x):                       # no node varies: nothing swept
    return fad.stack([x[i] - 2 * x[i - 1] + 1.0 for i in range(1, len(x))])


def loop_chains_both_sides(x):            # two changing chains into one scalar add
    return fad.stack([fad.exp(x[i]) + fad.sin(x[i] * 2.0) for i in range(len(x))])


def loop_shared_lanes(x):                 # a chain from a node read in every lane
    s = x[0] + x[1] + x[2]
    return fad.stack([fad.exp(s) * 0.5 + fad.sin(x[i]) for i in range(len(x))])


def long_chain(x):                        # more partials than FixedGather multiplies in
    v = x
    for _ in range(9):
        v = np.sin(v)
    return v + x


def chain_through_a_view(x):              # sin's output read whole but as (1, n)
    return np.sin(x)[None] * 2.0


def chain_through_a_reshape(x):           # ... or as (n, 1)
    return np.sin(x).reshape(len(x), 1) * 2.0


CASES = [bratu, linear_only, nonlinear_first, banded_matmul, broadcast_mix, gathered,
         with_comparison, with_scalars, bratu_loop, loop_mixed, loop_linear,
         chains_both_sides, exp_of_scaled, scaled_by_array, chain_read_twice, chain_into_output, chain_with_zero_partials,
         identity_and_exp, constant_rows, chain_to_a_reshaped_output, sum_output,
         matmul_both_active, loop_chains_both_sides, loop_shared_lanes, long_chain,
         chain_through_a_view, chain_through_a_reshape]


def _full(tape, plan, x):
    f, _ = tape._sparse_sweeps(x, plan.col_seeds, plan.fwd_src, None, None)
    return f


def _folded(f, x, mode="fwd"):
    """f recorded at x, and its plan after the second call (which makes the fold)."""
    tape = fad.record(f, x)
    tape.sparse_jacobian(x, mode=mode)
    tape.sparse_jacobian(x, mode=mode)
    return tape, tape.sparse_cache[("jacobian_plan", mode)]


@pytest.mark.parametrize("f", CASES, ids=lambda f: f.__name__)
def test_repeated_calls_equal_a_full_sweep_and_the_dense_jacobian(f):
    rng = np.random.default_rng(1)
    x0 = rng.uniform(0.2, 1.0, 9)
    if f is loop_mixed:
        x0 = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4])
    tape = fad.record(f, x0)
    J0 = tape.sparse_jacobian(x0, mode="fwd")
    np.testing.assert_allclose(J0.toarray(), fad.jacobian(f)(x0).reshape(J0.shape), rtol=1e-13,
                               atol=1e-15)
    plan = tape.sparse_cache[("jacobian_plan", "fwd")]
    for _ in range(4):
        x = rng.uniform(0.2, 1.0, 9)
        if f is loop_mixed:                # the same branches
            x = x0 + rng.uniform(-0.04, 0.04, 9)
        J = tape.sparse_jacobian(x, mode="fwd")
        # chains multiply partials first: equal up to rounding
        np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15, atol=0)
        np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x).reshape(J.shape), rtol=1e-13,
                                   atol=1e-15)


def test_the_fold_is_made_at_the_second_call_and_skips_what_the_seeds_decide():
    x = np.linspace(0.1, 1.0, 50)
    tape = fad.record(bratu, x)
    tape.sparse_jacobian(x)
    assert tape.sparse_cache[("jacobian_plan", "auto")]._folded is None
    tape.sparse_jacobian(x)
    fold = tape.sparse_cache[("jacobian_plan", "auto")]._folded
    names = [b.name for b in tape.blocks]
    assert names == ["mul", "sub", "add", "exp", "mul", "add"]
    assert fold.run_forward == [3]            # only exp's value is replayed
    assert fold.run_tangent == [3, 4, 5]      # the blocks after exp
    plan = JacobianPlan(fad.record(with_scalars, x[:9]), "fwd")
    assert plan._fold(fad.record(with_scalars, x[:9]), x[:9]) == (None, None)
    assert plan._fold(fad.record(with_scalars, x[:9]), x[:9]) == (None, None)


def test_unary_chains_are_not_swept_but_shared_or_output_blocks_are():
    x = np.linspace(0.1, 1.0, 20)

    def fold_of(f, x=x):
        tape, plan = _folded(f, x)
        return tape, plan._folded

    tape, fold = fold_of(bratu)
    assert fold.eliminated == {3, 4}              # exp and the scaling
    assert fold.chains == {5: [[], [4, 3]]}       # the last add reads through both
    assert fold.fused[0] == 5                     # ... straight at the nonzeros
    assert fold.fixed is not None                 # ... and its operands' tangents are kept
    tape, fold = fold_of(chain_into_output)
    assert fold.fused is None and fold.fixed is None     # two blocks make the output
    for f in (chains_both_sides, exp_of_scaled, scaled_by_array):
        assert fold_of(f)[1].fixed is not None
    assert fold_of(banded_matmul, x[:9])[1].fixed is not None    # x * x is a square: a chain
    for f in (nonlinear_first, gathered, with_comparison):    # a read tangent changes
        fold = fold_of(f, x[:9])[1]
        assert fold.fused is not None and fold.fixed is None
    tape, fold = fold_of(chains_both_sides)
    names = {bi: tape.blocks[bi].name for bi in fold.eliminated}
    assert sorted(names.values()) == ["exp", "mul", "mul", "sin", "tanh"]
    tape, fold = fold_of(chain_read_twice)
    assert "sin" not in {tape.blocks[bi].name for bi in fold.eliminated}
    tape, fold = fold_of(chain_into_output)
    assert not any(tape.blocks[bi].name == "mul" and tape.blocks[bi].shape == (20,)
                   and bi < 3 for bi in fold.eliminated)     # e is an output


def test_chains_keep_strong_zeros_at_nonfinite_partials():
    x = np.array([0.0, 0.5, 0.0, 1.5, 2.0, 0.0, 3.0, 0.25, 1.0])
    tape, plan = _folded(chain_with_zero_partials, x + 1.0)
    J = tape.sparse_jacobian(x, mode="fwd")       # sqrt'(0) = inf, times 0
    assert np.isfinite(J.data).all()
    np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15)
    np.testing.assert_allclose(J.diagonal(), np.log1p(x * x) + 2 * x * x / (1 + x * x),
                               rtol=1e-13)
    # the same through a FixedGather: 0 * sqrt'(0) is 0, sqrt'(0) alone is inf
    with np.errstate(divide="ignore"):
        inf_at_0 = 1.0 / np.sqrt(x) + 1.0
    for f, want in ((lambda x: 0.0 * np.sqrt(x) + x, np.ones_like(x)),
                    (lambda x: np.sqrt(x) * 2.0 + x, inf_at_0)):
        tape, plan = _folded(f, x + 1.0)
        assert plan._folded.fixed is not None
        with np.errstate(divide="ignore"):
            J = tape.sparse_jacobian(x, mode="fwd")
            np.testing.assert_array_equal(J.diagonal(), want)
            np.testing.assert_array_equal(J.data, _full(tape, plan, x))      # one answer
            np.testing.assert_array_equal(np.diag(fad.jacobian(f, mode="fwd")(x)), want)


def test_the_scalar_fold_sweeps_only_the_nodes_after_exp():
    x = np.linspace(0.1, 1.0, 50)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    tape.sparse_jacobian(x)
    fold = tape.sparse_cache[("jacobian_plan", "auto")]._folded
    # per element exp, h2 * exp and the last add push lanes; only exp (and
    # the input it reads) needs a value
    assert fold.counts == (3 * 50, 50)
    lin = fad.record(loop_linear, x)
    lin.sparse_jacobian(x)
    lin.sparse_jacobian(x)
    assert lin.sparse_cache[("jacobian_plan", "auto")]._folded.counts == (0, 0)


def loop_branch_chain(x):                 # a comparison and unary chains: nonzeros read directly
    out = [x[0] * 3.0]
    for i in range(1, len(x)):
        c = fad.exp(x[i]) * 0.5 if x[i] > 0.5 else fad.sin(x[i]) - 1.0
        out.append(x[i - 1] - 2.0 * x[i] + c)
    return fad.stack(out)


def test_scalar_tapes_read_the_nonzeros_without_sweeping_lanes_when_they_can():
    x0 = np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4])
    for f, fixed in ((bratu_loop, True), (loop_linear, True), (loop_branch_chain, True),
                     (loop_mixed, False)):          # loop_mixed: sin(a) * x[i], two operands
        tape, plan = _folded(f, x0)
        assert (plan._folded.fixed is not None) == fixed, f.__name__
        x = x0 + 0.01
        J = tape.sparse_jacobian(x, mode="fwd")
        np.testing.assert_allclose(J.data, _full(tape, plan, x), rtol=1e-15, atol=0)
        np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x), rtol=1e-13, atol=1e-15)
    bad = x0.copy()
    bad[1] = 0.6                                    # exp instead of sin at x[1]
    tape_b, _ = _folded(loop_branch_chain, x0)
    with pytest.raises(fad.BranchChangedError):
        tape_b.sparse_jacobian(bad, mode="fwd")
    J = tape_b.sparse_jacobian(x0 - 0.01, mode="fwd")
    np.testing.assert_allclose(J.toarray(), fad.jacobian(loop_branch_chain)(x0 - 0.01), rtol=1e-13)
    # strong zeros along a chain: 0 * sqrt'(0) is 0, sqrt'(0) alone is inf
    z = np.array([0.0, 0.5, 0.0, 2.0])
    for f, want in ((lambda x: fad.stack([x[i] + 0.0 * fad.sqrt(x[i]) for i in range(4)]),
                     np.ones(4)),
                    (lambda x: fad.stack([fad.sqrt(x[i]) * 2.0 + x[i] for i in range(4)]),
                     [np.inf, 1 / np.sqrt(0.5) + 1, np.inf, 1 / np.sqrt(2.0) + 1])):
        tape, plan = _folded(f, z + 1.0)
        assert plan._folded.fixed is not None
        np.testing.assert_allclose(tape.sparse_jacobian(z, mode="fwd").diagonal(), want,
                                   rtol=1e-15)
    # cos'(sqrt(0)) = 0 against sqrt'(0) = inf, both changing partials
    f = lambda x: fad.stack([fad.cos(fad.sqrt(x[i])) + x[i] for i in range(4)])   # noqa: E731
    tape, plan = _folded(f, z + 1.0)
    assert plan._folded.fixed is not None
    J = tape.sparse_jacobian(z, mode="fwd")
    np.testing.assert_array_equal(J.data, _full(tape, plan, z))
    assert J.diagonal()[0] == 1.0


def test_direct_reads_multiply_in_the_sweeps_order_with_its_strong_zeros():
    """The fused scalar path multiplies a chain's partials innermost first,
    as the sweep does, so extreme magnitudes over- and underflow alike, and
    a zero partial passes nothing even under a constant inf."""
    cases = [
        (lambda x: fad.stack([(fad.exp(x[i]) * 0.0) * np.inf + x[i] for i in range(3)]),
         np.array([0.5, 1.0, 2.0])),
        (lambda x: fad.stack([fad.exp(x[i] * 1e200) * 1e200 + x[i] for i in range(3)]),
         np.array([-6.9e-198, 1e-201, -5e-198])),
        (lambda x: fad.stack([fad.sqrt(fad.exp(x[i]) * 1e-200) + x[i] for i in range(3)]),
         np.array([-460.0, -1.0, 0.5])),
        (lambda x: np.sqrt(np.exp(x) * 1e-200) + x, np.array([-460.0, -1.0, 0.5])),   # blocks
        (lambda x: np.exp(x * 1e200) * 1e200 + x, np.array([-6.9e-198, 1e-201, -5e-198])),
    ]
    for f, x in cases:
        tape = fad.record(f, x)
        for _ in range(2):
            tape.sparse_jacobian(x, mode="fwd")
        plan = tape.sparse_cache[("jacobian_plan", "fwd")]
        assert plan._folded.fixed is not None
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(tape.sparse_jacobian(x, mode="fwd").data,
                                          _full(tape, plan, x))
            np.testing.assert_array_equal(tape.sparse_jacobian(x, mode="fwd").toarray(),
                                          fad.jacobian(f, mode="fwd")(x))


def test_a_fused_scalar_fold_answers_other_gathers_by_sweeping():
    x = np.linspace(0.1, 1.0, 12)
    tape = fad.record(bratu_loop, x)
    tape.sparse_jacobian(x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    fold = plan._folded
    assert fold.fixed is not None
    other = plan.fwd_src[::-1].copy()               # not the gather it was fused for
    np.testing.assert_array_equal(fold.sweep(tape, x + 0.1, other),
                                  _full(tape, plan, x + 0.1)[::-1])


@pytest.mark.parametrize("f, x, at, bad", [
    (loop_mixed, np.array([0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.1, 0.95, 0.4]), 1, 0.6),
    (with_comparison, np.linspace(0.1, 0.9, 9), 3, -0.5)], ids=["scalars", "blocks"])
def test_a_changed_branch_raises_and_the_tape_stays_usable(f, x, at, bad):
    tape = fad.record(f, x)
    tape.sparse_jacobian(x, mode="fwd")
    y = x.copy()
    y[at] = bad
    with pytest.raises(fad.BranchChangedError):
        tape.sparse_jacobian(y, mode="fwd")
    J = tape.sparse_jacobian(x + 0.01, mode="fwd")
    np.testing.assert_allclose(J.toarray(), fad.jacobian(f)(x + 0.01), rtol=1e-13)


def test_linear_function_checks_its_input_and_answers_without_sweeping():
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(linear_only, x)
    J0 = tape.sparse_jacobian(x, mode="fwd")
    tape.sparse_jacobian(x, mode="fwd")
    fold = tape.sparse_cache[("jacobian_plan", "fwd")]._folded
    assert fold.run_tangent == [] and fold.run_forward == []
    np.testing.assert_array_equal(tape.sparse_jacobian(x * 7, mode="fwd").toarray(), J0.toarray())
    with pytest.raises(ValueError, match="shape"):
        tape.sparse_jacobian(np.ones(4), mode="fwd")


def test_nonfinite_points_match_the_full_sweep():
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(bratu, x)
    tape.sparse_jacobian(x)
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    loop = fad.record(bratu_loop, x)
    loop.sparse_jacobian(x)
    lplan = loop.sparse_cache[("jacobian_plan", "auto")]
    for bad in (np.inf, -np.inf, np.nan, 800.0):
        y = x.copy()
        y[4] = bad
        np.testing.assert_allclose(tape.sparse_jacobian(y).data, _full(tape, plan, y), rtol=1e-15)
        np.testing.assert_array_equal(loop.sparse_jacobian(y).data, _full(loop, lplan, y))


def test_results_own_their_index_arrays():
    """A caller editing one result in place cannot corrupt later ones."""
    x = np.linspace(0.1, 0.9, 9)
    tape = fad.record(bratu, x)
    J = tape.sparse_jacobian(x)
    J.data[:] = 0.0
    J.eliminate_zeros()
    J.indices[:] = 0
    J2 = tape.sparse_jacobian(x + 0.1)
    np.testing.assert_allclose(J2.toarray(), fad.jacobian(bratu)(x + 0.1), rtol=1e-13)
    H = fad.record(lambda v: fad.sum(v ** 4), x)
    S = H.sparse_hessian(x)
    S.indices[:] = 0
    np.testing.assert_allclose(H.sparse_hessian(x).toarray(), np.diag(12 * x ** 2), rtol=1e-13)


def loop_products(x):                     # two changing operands: lanes are swept
    return fad.stack([fad.sin(x[i]) * x[i + 1] - x[i] for i in range(len(x) - 1)])


@pytest.mark.parametrize("f", [bratu, bratu_loop, nonlinear_first, loop_products],
                         ids=["blocks, read directly", "scalars, read directly",
                              "blocks, swept", "scalars, swept"])
def test_threads_sharing_one_plan_get_their_own_answers(f):
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)           # interleave the threads inside the sweeps
    try:
        _threads_sharing_one_plan(f)
    finally:
        sys.setswitchinterval(old)


def _threads_sharing_one_plan(f):
    x = np.linspace(0.1, 0.9, 20000)
    tape = fad.record(f, x)
    tape.sparse_jacobian(x)
    points = [x + 0.01 * i for i in range(8)]
    want = [tape._sparse_sweeps(p, *_plan_args(tape)) [0] for p in points]
    got = [None] * len(points)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = tape.sparse_jacobian(points[i]).data
                if not np.array_equal(got[i], want[i]):
                    errors.append(i)
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(points))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _plan_args(tape):
    plan = tape.sparse_cache[("jacobian_plan", "auto")]
    return plan.col_seeds, plan.fwd_src, None, None
