"""fastad stand-ins for the autograd test helpers the ported tests call.

The ported tests (benchmarks/peer/suite/) call `check_grads`, `combo_check`,
`grad`, `value_and_grad` and the `numpy_utils` helpers exactly as autograd's
own tests do; here they check fastad against central finite differences of
the same function run on plain NumPy values (no autograd needed).

check_grads(fun, argnum=None, modes=("fwd", "rev"), order=2)(*args, **kw),
for each differentiated argument x (argnum, or else every float-valued
positional argument), at a random direction u, output cotangent w and
second direction v:
  value  fastad's f(x) equals NumPy's f(x) (rtol 1e-8);
  rev    <u, fad.vjp(f, x)[1](w)>  vs  <w, FD(f; x, u)>          (as autograd)
  fwd    fad.jvp(f, x, u)          vs  FD(f; x, u), element-wise
and with order >= 2, on the scalar g(x) = <w, f(x)>:
  rev    fad.hvp(g, x, u)          vs  FD(x -> fad.vjp(f, x)[1](w); x, u)
         and, for x.size <= 16, fad.hessian(g)(x) @ u vs the same FD
  fwd    <v, fad.hvp(g, x, u)>     vs  <w, FD(x -> fad.jvp(f, x, v); x, u)>
Orders above 2 are checked as order 2 (nested transforms are issue #17).
With REPLAY (run.py --replay; not part of autograd's checks), also:
  replay fad.record(g, x).gradient(x1) at a nearby x1 equals a fresh
         recording's gradient at x1 (a replay may refuse with TapeError).
With LANES (run.py --lanes): vjp with 3 seeds and jvp with 3 directions at
once equal, lane by lane, one at a time (array inputs and outputs only).
FD(f; x, u) = (f(x + eps u/2) - f(x - eps u/2)) / eps with eps = 1e-6, as
autograd; a mismatch is retried with eps 1e-4, 1e-5 and 1e-7 before it
counts (rounding and curvature both move FD, a wrong rule does not).
Agreement: |a - b| <= ATOL + RTOL * scale, scale the size of the terms.
"""
import itertools

import numpy as np

import fastad as fad

ATOL = 1e-6
RTOL = 1e-5
EPS = 1e-6
RETRY_EPS = (1e-4, 1e-5, 1e-7)
HESSIAN_MAX_SIZE = 16
REPLAY = False  # also check record/replay (run.py --replay): not autograd's
LANES = False   # also check k seeds / directions at once (run.py --lanes)


class WrongDerivative(AssertionError):
    """fastad's value or derivative disagrees with NumPy / finite differences."""


class StructureMismatch(Exception):
    """The derivative's numbers agree but come back in another structure
    (e.g. one stacked array for a tuple of arrays): a missing feature."""


class Stats:
    """What the current test did (reset by the runner before each test)."""
    checks = 0          # check_grads calls on real inputs
    complex_skipped = 0  # check_grads calls skipped because an input is complex
    replay_refused = 0   # replays that raised TapeError (allowed)
    rng = np.random.default_rng(0)  # directions and cotangents

    @classmethod
    def reset(cls, seed=0):
        cls.checks = 0
        cls.complex_skipped = 0
        cls.replay_refused = 0
        cls.rng = np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# inputs and outputs may be (nested) tuples/lists/dicts of arrays: flattened
# in order for the comparisons
# ---------------------------------------------------------------------------

def _is_tree(y):
    return isinstance(y, (tuple, list, dict))


def _leaves(y):
    if isinstance(y, dict):
        return [leaf for k in sorted(y) for leaf in _leaves(y[k])]
    if isinstance(y, (tuple, list)):
        return [leaf for item in y for leaf in _leaves(item)]
    return [y]


def _tmap(fn, *trees):
    t = trees[0]
    if isinstance(t, dict):
        return {k: _tmap(fn, *(tr[k] for tr in trees)) for k in t}
    if isinstance(t, (tuple, list)):
        items = [_tmap(fn, *items) for items in zip(*trees)]
        return type(t)(*items) if hasattr(t, "_fields") else type(t)(items)  # namedtuples too
    return fn(*trees)


def _value(leaf):
    return getattr(leaf, "value", leaf)


def _flat(y):
    leaves = [np.asarray(_value(leaf), dtype=np.float64).reshape(-1) for leaf in _leaves(y)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def _shapes(y):
    return [np.shape(_value(leaf)) for leaf in _leaves(y)]


def _like(y, rng):
    """Random numbers with y's structure (floats for scalars)."""
    def one(leaf):
        shape = np.shape(_value(leaf))
        return float(rng.standard_normal()) if shape == () else rng.standard_normal(shape)
    return _tmap(one, y)


def _is_complex(a):
    return any(np.iscomplexobj(_value(leaf)) for leaf in _leaves(a))


def _is_float(a):
    def one(leaf):
        if isinstance(leaf, (bool, np.bool_)):
            return False
        if isinstance(leaf, float):
            return True
        return isinstance(leaf, (np.ndarray, np.floating)) and np.asarray(leaf).dtype.kind == "f"
    leaves = _leaves(a)
    return bool(leaves) and all(one(leaf) for leaf in leaves)


def _shift(x, u, h):
    return _tmap(lambda a, b: a + h * b, x, u)


def _agree(a, b, scale):
    return abs(a - b) <= ATOL + RTOL * scale


def _noise(yscale, eps):
    """Rounding error of a central difference of values of size yscale."""
    return 4e-16 * yscale / eps


def _fd(f, x, u, eps):
    return (_flat(f(_shift(x, u, eps / 2))) - _flat(f(_shift(x, u, -eps / 2)))) / eps


def _checked(name, ok_at, detail):
    """Pass when ok_at(eps) holds for the standard step or any retry step."""
    for eps in (EPS,) + RETRY_EPS:
        if ok_at(eps):
            return
    raise WrongDerivative(f"{name}: {detail()}")


# ---------------------------------------------------------------------------
# check_grads
# ---------------------------------------------------------------------------

def _argnums(argnum, args):
    if argnum is None:
        # every float argument; autograd's default, argument 0, if none is
        return tuple(i for i, a in enumerate(args) if _is_float(a)) or (0,)
    if isinstance(argnum, int):
        return (argnum,)
    return tuple(argnum)


def _check_one(fun, args, kwargs, i, modes, order, rng):
    x0 = args[i]

    def f(x):
        a = list(args)
        a[i] = x
        return fun(*a, **kwargs)

    shape = _shapes(x0) if _is_tree(x0) else np.shape(x0)
    where = f"{getattr(fun, '__name__', 'f')} w.r.t. argument {i} (shape {shape})"
    y0 = f(x0)
    y0_flat = _flat(y0)
    w = _like(y0, rng)
    w_flat = _flat(w)
    u = _like(x0, rng)
    u_flat = _flat(u)
    yscale = float(np.max(np.abs(y0_flat), initial=0.0))

    if "rev" in modes:
        y, pullback = fad.vjp(f, x0)
        _check_value(where, y, y0_flat)
        g = pullback(w)
        mismatch = _shapes(g) != _shapes(x0)
        g = _flat(g)
        if mismatch and g.size != u_flat.size:
            raise WrongDerivative(f"{where}: vjp has shape(s) {_shapes(pullback(w))}, "
                                  f"expected {_shapes(x0)}")
        exact = float(np.dot(u_flat, g))
        scale = float(np.dot(np.abs(u_flat), np.abs(g)))
        _checked(f"{where}: rev (vjp)",
                 lambda eps: _agree(exact, float(np.dot(w_flat, _fd(f, x0, u, eps))),
                                    scale + np.sum(np.abs(w_flat)) * _noise(yscale, eps) / RTOL),
                 lambda: f"vjp gives <u, vjp(w)> = {exact!r}, finite differences "
                         f"<w, J u> = {float(np.dot(w_flat, _fd(f, x0, u, EPS)))!r}")
        if mismatch:
            raise StructureMismatch(
                f"vjp w.r.t. a {type(x0).__name__} of shapes {_shapes(x0)} comes back with "
                f"shape(s) {_shapes(pullback(w))} (the numbers agree)")
    if "fwd" in modes:
        y, jv = fad.jvp(f, x0, u)
        _check_value(where, y, y0_flat)
        jv = _flat(jv)
        if jv.shape != y0_flat.shape:
            raise WrongDerivative(f"{where}: jvp has {jv.size} numbers, expected {y0_flat.size}")

        def fwd_ok(eps):
            fd = _fd(f, x0, u, eps)
            return bool(np.all(np.abs(jv - fd) <= ATOL + RTOL * np.maximum(np.abs(fd), np.abs(jv))
                               + _noise(yscale, eps)))
        _checked(f"{where}: fwd (jvp)", fwd_ok,
                 lambda: f"max |jvp - FD| = {float(np.max(np.abs(jv - _fd(f, x0, u, EPS)), initial=0))!r}")
    if order >= 2:
        _check_second(f, x0, y0, w, w_flat, u, u_flat, modes, where, rng)
    if REPLAY:
        _check_replay(f, x0, w, where, rng)
    if LANES:
        _check_lanes(f, x0, y0, modes, where, rng)
    Stats.checks += 1


def _check_value(where, y, y0_flat):
    got = _flat(y)
    # values may be computed another way than NumPy's (rounding only)
    atol = 1e-10 * (1.0 + float(np.max(np.abs(y0_flat), initial=0.0, where=np.isfinite(y0_flat))))
    if got.shape != y0_flat.shape or not np.allclose(got, y0_flat, rtol=1e-8, atol=atol, equal_nan=True):
        raise WrongDerivative(f"{where}: value {got!r} differs from NumPy's {y0_flat!r}")


def _dotted(f, w):
    """x -> <w, f(x)>, a scalar function fastad can differentiate."""
    w_leaves = [np.asarray(leaf, dtype=np.float64) for leaf in _leaves(w)]

    def g(x):
        total = 0.0
        for leaf, wl in zip(_leaves(f(x)), w_leaves):
            total = total + np.sum(leaf * wl)
        return total
    return g


def _check_lanes(f, x0, y0, modes, where, rng, k=3):
    """k seeds (vjp) and k directions (jvp) at once give, lane by lane, what
    one at a time gives (itself checked against finite differences)."""
    if _is_tree(x0) or _is_tree(y0):
        return
    if "rev" in modes:
        W = np.stack([np.asarray(_like(y0, rng), dtype=np.float64) for _ in range(k)])
        pullback = fad.vjp(f, x0)[1]
        G = np.asarray(pullback(W))
        for j in range(k):
            one = np.asarray(pullback(W[j]))
            if G.shape != (k,) + one.shape or not np.allclose(G[j], one, rtol=1e-10, atol=1e-12):
                raise WrongDerivative(f"{where}: vjp with {k} seeds, lane {j}: "
                                      f"{G[j] if G.shape[:1] == (k,) else G!r} differs from one seed's {one!r}")
    if "fwd" in modes:
        U = np.stack([np.asarray(_like(x0, rng), dtype=np.float64) for _ in range(k)])
        JV = np.asarray(fad.jvp(f, x0, U)[1])
        for j in range(k):
            one = np.asarray(fad.jvp(f, x0, U[j] if U.ndim > 1 else float(U[j]))[1])
            if JV.shape != (k,) + one.shape or not np.allclose(JV[j], one, rtol=1e-10, atol=1e-12):
                raise WrongDerivative(f"{where}: jvp with {k} directions, lane {j}: "
                                      f"{JV[j] if JV.shape[:1] == (k,) else JV!r} differs from one "
                                      f"direction's {one!r}")


def _check_replay(f, x0, w, where, rng):
    """The gradient of <w, f> recorded at x0 and replayed at a nearby x1
    equals a fresh recording's at x1.  A replay that refuses (the branch
    or a value read while recording changed) is the contract, not wrong."""
    tape = fad.record(_dotted(f, w), x0)
    x1 = _shift(x0, _like(x0, rng), 1e-2)
    try:
        got = _flat(tape.gradient(x1))
    except fad.TapeError:           # BranchChangedError too
        Stats.replay_refused += 1
        return
    want = _flat(fad.vjp(f, x1)[1](w))
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-8,
                                                  atol=1e-10 * (1 + np.max(np.abs(want), initial=0))):
        raise WrongDerivative(f"{where}: replayed gradient {got!r} differs from a fresh "
                              f"recording's {want!r}")


def _check_second(f, x0, y0, w, w_flat, u, u_flat, modes, where, rng):
    g = _dotted(f, w)

    def fad_grad(x):
        return _flat(fad.vjp(f, x)[1](w))

    if "rev" in modes:
        hu = _flat(fad.hvp(g, x0, u))
        scale = float(np.max(np.abs(hu), initial=0.0))
        gscale = float(np.max(np.abs(fad_grad(x0)), initial=0.0))

        def rev_ok(eps):
            fd = (fad_grad(_shift(x0, u, eps / 2)) - fad_grad(_shift(x0, u, -eps / 2))) / eps
            return bool(np.all(np.abs(hu - fd) <= ATOL + RTOL * np.maximum(np.abs(fd), scale * 1e-2)
                               + _noise(gscale, eps)))
        _checked(f"{where}: order 2 rev (hvp of <w, f>)", rev_ok,
                 lambda: f"hvp {hu!r} vs FD of fastad's vjp "
                         f"{(fad_grad(_shift(x0, u, EPS / 2)) - fad_grad(_shift(x0, u, -EPS / 2))) / EPS!r}")
        if u_flat.size <= HESSIAN_MAX_SIZE and not _is_tree(x0):
            H = np.asarray(fad.hessian(g)(x0)).reshape(u_flat.size, u_flat.size)
            if not np.allclose(H @ u_flat, hu, rtol=1e-8, atol=1e-8 * (1 + scale)):
                raise WrongDerivative(f"{where}: hessian @ u {H @ u_flat!r} differs from hvp {hu!r}")
    if "fwd" in modes:
        v = _like(x0, rng)
        v_flat = _flat(v)
        exact = float(np.dot(v_flat, _flat(fad.hvp(g, x0, u))))

        def fad_jvp(x):
            return _flat(fad.jvp(f, x, v)[1])
        jscale = float(np.max(np.abs(fad_jvp(x0)), initial=0.0))

        def fwd_ok(eps):
            fd = (fad_jvp(_shift(x0, u, eps / 2)) - fad_jvp(_shift(x0, u, -eps / 2))) / eps
            terms = np.abs(w_flat * fd)
            return _agree(exact, float(np.dot(w_flat, fd)),
                          float(np.sum(terms)) + np.sum(np.abs(w_flat)) * _noise(jscale, eps) / RTOL)
        _checked(f"{where}: order 2 fwd (<v, hvp(u)>)", fwd_ok,
                 lambda: f"<v, H u> = {exact!r}")


def check_grads(fun, argnum=None, modes=None, order=2):
    """autograd.test_util.check_grads, checked against fastad (module doc)."""
    modes = ("fwd", "rev") if modes is None else tuple(modes)

    def checker(*args, **kwargs):
        if _is_complex(args) or _is_complex(list(kwargs.values())):
            Stats.complex_skipped += 1
            return
        rng = Stats.rng
        for i in _argnums(argnum, args):
            _check_one(fun, args, kwargs, i, modes, order, rng)
    return checker


def combo_check(fun, *args, **kwargs):
    """autograd.test_util.combo_check: check_grads over all combinations."""
    def _combo_check(*arg_lists, **kwarg_lists):
        kw_items = [[(k, x) for x in xs] for k, xs in kwarg_lists.items()]
        for _args in itertools.product(*arg_lists):
            for _kwargs in itertools.product(*kw_items):
                check_grads(fun, *args, **kwargs)(*_args, **dict(_kwargs))
    return _combo_check


# ---------------------------------------------------------------------------
# autograd's transforms the tests call directly
# ---------------------------------------------------------------------------

def grad(fun, argnum=0):
    return fad.grad(fun, argnums=argnum)


def value_and_grad(fun, argnum=0):
    return fad.value_and_grad(fun, argnums=argnum)


def jacobian(fun, argnum=0):
    if argnum != 0:
        raise NotImplementedError("peer_util.jacobian: argnum other than 0")
    return fad.jacobian(fun)


def deriv(fun, argnum=0):
    raise NotImplementedError("autograd's deriv has no fastad counterpart (test skipped)")


def holomorphic_grad(fun, argnum=0):
    raise NotImplementedError("autograd's holomorphic_grad: complex (test skipped)")


# ---------------------------------------------------------------------------
# tests/numpy_utils.py, complex branches dropped
# ---------------------------------------------------------------------------

def stat_check(fun, test_complex=True, **kwargs):
    npr = np.random
    x = 3.5
    A = npr.randn()
    B = npr.randn(3)
    C = npr.randn(2, 3)
    D = npr.randn(1, 3)
    check = combo_check(fun, (0,), **kwargs)
    check([x, A])
    check([B, C, D], axis=[None, 0], keepdims=[True, False])
    check([C, D], axis=[None, 0, 1], keepdims=[True, False])


def transform(lims, x):
    return x * (lims[1] - lims[0]) + lims[0]


def unary_ufunc_check(fun, lims=None, test_complex=True, **kwargs):
    npr = np.random
    if lims is None:
        lims = [-2, 2]
    scalar = transform(lims, 0.4)
    vector = transform(lims, npr.rand(2))
    mat = transform(lims, npr.rand(3, 2))
    mat2 = transform(lims, npr.rand(1, 2))
    check = combo_check(fun, (0,), **kwargs)
    check([scalar, vector, mat, mat2])


def binary_ufunc_check(fun, lims_A=None, lims_B=None, test_complex=True, **kwargs):
    npr = np.random
    lims_A = [-2, 2] if lims_A is None else lims_A
    lims_B = [-2, 2] if lims_B is None else lims_B
    T_A = lambda x: transform(lims_A, x)
    T_B = lambda x: transform(lims_B, x)
    scalar = 0.6
    vector = npr.rand(2)
    mat = npr.rand(3, 2)
    mat2 = npr.rand(1, 2)
    check = combo_check(fun, (0, 1), **kwargs)
    check([T_A(scalar), T_A(vector), T_A(mat), T_A(mat2)],
          [T_B(scalar), T_B(vector), T_B(mat), T_B(mat2)])


def binary_ufunc_check_no_same_args(fun, lims_A=None, lims_B=None, test_complex=True, **kwargs):
    npr = np.random
    lims_A = [-2, 2] if lims_A is None else lims_A
    lims_B = [-2, 2] if lims_B is None else lims_B
    T_A = lambda x: transform(lims_A, x)
    T_B = lambda x: transform(lims_B, x)
    scalar1, scalar2 = 0.6, 0.7
    vector1, vector2 = npr.rand(2), npr.rand(2)
    mat11, mat12 = npr.rand(3, 2), npr.rand(3, 2)
    mat21, mat22 = npr.rand(1, 2), npr.rand(1, 2)
    check = combo_check(fun, (0, 1), **kwargs)
    check([T_A(scalar1), T_A(vector1), T_A(mat11), T_A(mat21)],
          [T_B(scalar2), T_B(vector2), T_B(mat12), T_B(mat22)])
