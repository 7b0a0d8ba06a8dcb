"""Random straight-line programs: fad.grad against central finite differences.

Hypothesis builds a Wengert list over a few inputs from a safe op set (every op is smooth
everywhere on the reals and keeps values modest), runs it once through fastad and many times on
plain floats with the `math` module (the finite-difference reference never touches fastad).
"""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastad as fad
from conftest import sigmoid_float, softplus_float


# (name, fastad version, plain-float version); operator-only ops share one lambda
UNARY_OPS = [
    ("sin", lambda a: fad.sin(a), math.sin),
    ("cos", lambda a: fad.cos(a), math.cos),
    ("tanh", lambda a: fad.tanh(a), math.tanh),
    ("arctan", lambda a: fad.arctan(a), math.atan),
    ("exp_tanh", lambda a: fad.exp(fad.tanh(a)), lambda a: math.exp(math.tanh(a))),
    ("expm1_tanh", lambda a: fad.expm1(fad.tanh(a)), lambda a: math.expm1(math.tanh(a))),
    ("log_1p_sq", lambda a: fad.log(1.0 + a * a), lambda a: math.log(1.0 + a * a)),
    ("log1p_sq", lambda a: fad.log1p(fad.square(a)), lambda a: math.log1p(a * a)),
    ("log2_2p_sin", lambda a: fad.log2(2.0 + fad.sin(a)), lambda a: math.log2(2.0 + math.sin(a))),
    ("log10_1p_sq", lambda a: fad.log10(1.0 + a * a), lambda a: math.log10(1.0 + a * a)),
    ("sqrt_1p_sq", lambda a: fad.sqrt(1.0 + a * a), lambda a: math.sqrt(1.0 + a * a)),
    ("sigmoid", lambda a: fad.sigmoid(a), sigmoid_float),
    ("softplus", lambda a: fad.softplus(a), softplus_float),
    ("erf", lambda a: fad.erf(a), math.erf),
    ("arcsin_tanh", lambda a: fad.arcsin(0.9 * fad.tanh(a)), lambda a: math.asin(0.9 * math.tanh(a))),
    ("arccos_tanh", lambda a: fad.arccos(0.9 * fad.tanh(a)), lambda a: math.acos(0.9 * math.tanh(a))),
    ("tan_tanh", lambda a: fad.tan(fad.tanh(a)), lambda a: math.tan(math.tanh(a))),
    ("sinh_tanh", lambda a: fad.sinh(fad.tanh(a)), lambda a: math.sinh(math.tanh(a))),
    ("cosh_tanh", lambda a: fad.cosh(fad.tanh(a)), lambda a: math.cosh(math.tanh(a))),
    ("square_sin", lambda a: fad.square(fad.sin(a)), lambda a: math.sin(a) ** 2),
    ("cube_tanh", lambda a: fad.tanh(a) ** 3, lambda a: math.tanh(a) ** 3),
    ("neg", lambda a: -a, lambda a: -a),
    ("affine", lambda a: 0.5 * a + 1.0, lambda a: 0.5 * a + 1.0),
    ("rsub", lambda a: 2 - a, lambda a: 2 - a),
    ("rdiv", lambda a: 1.0 / (1.0 + a * a), lambda a: 1.0 / (1.0 + a * a)),
    ("rpow", lambda a: 1.5 ** fad.sin(a), lambda a: 1.5 ** math.sin(a)),
]

BINARY_OPS = [
    ("add", lambda a, b: a + b, lambda a, b: a + b),
    ("sub", lambda a, b: a - b, lambda a, b: a - b),
    ("mul_sin", lambda a, b: fad.sin(a) * b, lambda a, b: math.sin(a) * b),
    ("mul_tanh", lambda a, b: fad.tanh(a * b), lambda a, b: math.tanh(a * b)),
    ("div", lambda a, b: a / (1.0 + b * b), lambda a, b: a / (1.0 + b * b)),
    ("arctan2", lambda a, b: fad.arctan2(a, 1.0 + b * b), lambda a, b: math.atan2(a, 1.0 + b * b)),
    ("hypot", lambda a, b: fad.hypot(a, 1.0 + b * b), lambda a, b: math.hypot(a, 1.0 + b * b)),
    ("power", lambda a, b: fad.power(1.0 + a * a, fad.tanh(b)),
     lambda a, b: (1.0 + a * a) ** math.tanh(b)),
    ("pow_op", lambda a, b: (2.0 + fad.sin(a)) ** fad.cos(b),
     lambda a, b: (2.0 + math.sin(a)) ** math.cos(b)),
    ("mul_bounded", lambda a, b: fad.tanh(a) * fad.arctan(b),
     lambda a, b: math.tanh(a) * math.atan(b)),
]


@st.composite
def programs(draw):
    n_inputs = draw(st.integers(1, 3))
    n_ops = draw(st.integers(1, 10))
    ops = []
    for k in range(n_ops):
        n_avail = n_inputs + k
        # bias towards recent registers so that programs are deep, not only wide
        pick = st.one_of(st.integers(0, n_avail - 1), st.just(n_avail - 1))
        if draw(st.booleans()):
            ops.append(("u", draw(st.integers(0, len(UNARY_OPS) - 1)), draw(pick), None))
        else:
            ops.append(("b", draw(st.integers(0, len(BINARY_OPS) - 1)), draw(pick), draw(pick)))
    xs = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False),
                       min_size=n_inputs, max_size=n_inputs))
    as_array = draw(st.booleans())
    return n_inputs, ops, xs, as_array


def run(ops, inputs, use_fad):
    """Run the program; the output is the sum of all computed registers."""
    regs = list(inputs)
    for kind, k, i, j in ops:
        if kind == "u":
            fn = UNARY_OPS[k][1] if use_fad else UNARY_OPS[k][2]
            regs.append(fn(regs[i]))
        else:
            fn = BINARY_OPS[k][1] if use_fad else BINARY_OPS[k][2]
            regs.append(fn(regs[i], regs[j]))
    out = 0.0
    for r in regs[len(inputs):]:
        out = out + r
    return out, regs


def describe(ops, n_inputs):
    lines = []
    for n, (kind, k, i, j) in enumerate(ops):
        name = UNARY_OPS[k][0] if kind == "u" else BINARY_OPS[k][0]
        args = f"r{i}" if kind == "u" else f"r{i}, r{j}"
        lines.append(f"r{n_inputs + n} = {name}({args})")
    return "\n".join(lines)


def float_program(ops, xs):
    return run(ops, [float(x) for x in xs], use_fad=False)


def central_fd(ops, xs):
    """Central differences with a relative step; returns (fd gradient, rounding scale)."""
    xs = [float(x) for x in xs]
    g = np.zeros(len(xs))
    scale = 0.0
    for i in range(len(xs)):
        h = 1e-6 * max(1.0, abs(xs[i]))
        xp = list(xs)
        xm = list(xs)
        xp[i] = xs[i] + h
        xm[i] = xs[i] - h
        fp, regs_p = float_program(ops, xp)
        fm, regs_m = float_program(ops, xm)
        g[i] = (fp - fm) / (xp[i] - xm[i])
        s = sum(abs(r) for r in regs_p) + sum(abs(r) for r in regs_m)
        scale = max(scale, s / (xp[i] - xm[i]))
    return g, scale


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_program_gradient_matches_central_fd(prog):
    n_inputs, ops, xs, as_array = prog

    if as_array:
        def f(a):
            return run(ops, [a[i] for i in range(n_inputs)], use_fad=True)[0]

        value, g = fad.value_and_grad(f)(np.array(xs, dtype=float))
        assert isinstance(g, np.ndarray) and g.shape == (n_inputs,)
    else:
        def f(*args):
            return run(ops, list(args), use_fad=True)[0]

        value, g = fad.value_and_grad(f, argnums=tuple(range(n_inputs)))(*xs)
        assert isinstance(g, tuple) and len(g) == n_inputs
        g = np.array(g)

    ref_value, regs = float_program(ops, xs)
    fd, scale = central_fd(ops, xs)
    prog_text = describe(ops, n_inputs)

    value_scale = sum(abs(r) for r in regs)
    assert abs(value - ref_value) <= 1e-10 * value_scale + 1e-14, (prog_text, xs, value, ref_value)

    # FD error: truncation O(h^2) (covered by the relative term) + rounding ~ eps * |regs| / h
    tol = 1e-5 * np.abs(fd) + 1e-7 + 1e-14 * scale
    err = np.abs(g - fd)
    assert np.all(err <= tol), f"\n{prog_text}\nxs={xs}\nfad={g}\nfd={fd}\nerr={err}"


@settings(max_examples=60, deadline=None, database=None)
@given(programs())
def test_random_program_grad_is_repeatable(prog):
    """The same program twice in a row (fresh recordings) gives bit-identical gradients."""
    n_inputs, ops, xs, _ = prog

    def f(*args):
        return run(ops, list(args), use_fad=True)[0]

    g = fad.grad(f, argnums=tuple(range(n_inputs)))
    assert g(*xs) == g(*xs)


@settings(max_examples=60, deadline=None, database=None)
@given(programs(), st.integers(2, 5))
def test_random_program_summed_over_copies_is_linear(prog, copies):
    """grad of (f(x) + f(x) + ...) k times equals k * grad f (adjoints accumulate)."""
    n_inputs, ops, xs, _ = prog
    x = np.array(xs, dtype=float)

    def f1(a):
        return run(ops, [a[i] for i in range(n_inputs)], use_fad=True)[0]

    def fk(a):
        total = 0.0
        for _ in range(copies):
            total = total + f1(a)
        return total

    g1 = fad.grad(f1)(x)
    gk = fad.grad(fk)(x)
    np.testing.assert_allclose(gk, copies * g1, rtol=1e-12, atol=1e-12 * (1 + np.abs(g1).max()))
