"""A fair, fast pure-Python reverse-mode tape (the benchmark baseline).

This is *not* a straw man: it is the design a careful Python programmer would
write when performance matters, and the one fastad compiles.

* ``Var`` has ``__slots__ = ('value', 'index')``: a float and an int, no
  references to other nodes, so the graph is not a web of Python objects.
* The tape is a module-level Wengert list stored as four flat parallel lists:
  ``_A`` / ``_B`` (argument slot indices) and ``_PA`` / ``_PB`` (local
  partials d node / d arg, computed at record time).  Every node has exactly
  two argument entries; unary nodes and leaves point the second (or both)
  at slot 0, a dummy sink whose adjoint is never read.
* The reverse sweep is one plain ``for`` loop over reversed, zipped flat lists
  with a flat adjoint list: no recursion, no topological sort, no per-node
  method calls.

Only what the benchmarks need (and a bit more) is implemented: + - * / **,
unary -, +, abs, comparisons (on values), and the math functions in ``m``
below (which also accept plain numbers).  ``grad(f)(x)`` accepts a float, a
list, or a 1-D / 2-D ndarray; arrays arrive in ``f`` as (nested) Python lists
of Vars, so ``x[i]``, ``x[i][j]`` and ``len(x)`` work.

Not thread-safe (one module-level tape) and not re-entrant (no nested grad).
Values follow Python float semantics: domain errors (log of a negative, 1/0)
raise like ``math`` does instead of giving NumPy's nan/inf as fastad does.
"""

import math
import types

__all__ = ["Var", "grad", "value_and_grad", "m", "self_check", "tape_len",
           "record_gradient_parts"]

# ---------------------------------------------------------------- the tape
# Slot 0 is the dummy sink.  Lists are cleared in place (never rebound), so
# the cached bound ``append`` methods below stay valid.
_A = []    # first argument slot
_PA = []   # d node / d first argument
_B = []    # second argument slot
_PB = []   # d node / d second argument

_A_app = _A.append
_PA_app = _PA.append
_B_app = _B.append
_PB_app = _PB.append

_recording = False


def _reset():
    del _A[:], _PA[:], _B[:], _PB[:]
    # slot 0: sink
    _A_app(0); _PA_app(0.0); _B_app(0); _PB_app(0.0)


def tape_len():
    """Number of slots on the current/last tape (including the sink and leaves)."""
    return len(_A)


_exp = math.exp
_log = math.log
_sin = math.sin
_cos = math.cos
_tanh = math.tanh
_sqrt = math.sqrt


class Var(object):
    __slots__ = ("value", "index")

    def __init__(self, value, index):
        self.value = value
        self.index = index

    def __repr__(self):
        return "Var(%r, slot=%d)" % (self.value, self.index)

    # ---- binary arithmetic ------------------------------------------------
    def __add__(self, other):
        i = len(_A)
        _A_app(self.index); _PA_app(1.0)
        if other.__class__ is Var:
            _B_app(other.index); _PB_app(1.0)
            return Var(self.value + other.value, i)
        _B_app(0); _PB_app(0.0)
        return Var(self.value + other, i)

    def __radd__(self, other):
        i = len(_A)
        _A_app(self.index); _PA_app(1.0); _B_app(0); _PB_app(0.0)
        return Var(other + self.value, i)

    def __sub__(self, other):
        i = len(_A)
        _A_app(self.index); _PA_app(1.0)
        if other.__class__ is Var:
            _B_app(other.index); _PB_app(-1.0)
            return Var(self.value - other.value, i)
        _B_app(0); _PB_app(0.0)
        return Var(self.value - other, i)

    def __rsub__(self, other):
        i = len(_A)
        _A_app(self.index); _PA_app(-1.0); _B_app(0); _PB_app(0.0)
        return Var(other - self.value, i)

    def __mul__(self, other):
        i = len(_A)
        _A_app(self.index)
        if other.__class__ is Var:
            ov = other.value
            _PA_app(ov); _B_app(other.index); _PB_app(self.value)
            return Var(self.value * ov, i)
        _PA_app(other); _B_app(0); _PB_app(0.0)
        return Var(self.value * other, i)

    def __rmul__(self, other):
        i = len(_A)
        _A_app(self.index); _PA_app(other); _B_app(0); _PB_app(0.0)
        return Var(other * self.value, i)

    def __truediv__(self, other):
        i = len(_A)
        _A_app(self.index)
        if other.__class__ is Var:
            ov = other.value
            r = 1.0 / ov
            y = self.value / ov
            _PA_app(r); _B_app(other.index); _PB_app(-y * r)
            return Var(y, i)
        _PA_app(1.0 / other); _B_app(0); _PB_app(0.0)
        return Var(self.value / other, i)

    def __rtruediv__(self, other):
        i = len(_A)
        sv = self.value
        y = other / sv
        _A_app(self.index); _PA_app(-y / sv); _B_app(0); _PB_app(0.0)
        return Var(y, i)

    def __pow__(self, other):
        i = len(_A)
        sv = self.value
        if other.__class__ is Var:
            ov = other.value
            y = sv ** ov
            _A_app(self.index); _PA_app(ov * sv ** (ov - 1.0))
            _B_app(other.index); _PB_app(y * _log(sv) if y != 0.0 else 0.0)
            return Var(y, i)
        _A_app(self.index); _B_app(0); _PB_app(0.0)
        if other == 2:
            _PA_app(2.0 * sv)
            return Var(sv * sv, i)
        _PA_app(other * sv ** (other - 1))
        return Var(sv ** other, i)

    def __rpow__(self, other):
        i = len(_A)
        y = other ** self.value
        _A_app(self.index); _PA_app(y * _log(other) if y != 0.0 else 0.0)
        _B_app(0); _PB_app(0.0)
        return Var(y, i)

    # ---- unary --------------------------------------------------------------
    def __neg__(self):
        i = len(_A)
        _A_app(self.index); _PA_app(-1.0); _B_app(0); _PB_app(0.0)
        return Var(-self.value, i)

    def __pos__(self):
        return self

    def __abs__(self):
        sv = self.value
        i = len(_A)
        _A_app(self.index)
        _PA_app(1.0 if sv > 0.0 else (-1.0 if sv < 0.0 else 0.0))
        _B_app(0); _PB_app(0.0)
        return Var(abs(sv), i)

    # ---- comparisons act on values (not recorded: no replay here) ----------
    def __lt__(self, o):
        return self.value < (o.value if o.__class__ is Var else o)

    def __le__(self, o):
        return self.value <= (o.value if o.__class__ is Var else o)

    def __gt__(self, o):
        return self.value > (o.value if o.__class__ is Var else o)

    def __ge__(self, o):
        return self.value >= (o.value if o.__class__ is Var else o)

    def __eq__(self, o):
        return self.value == (o.value if o.__class__ is Var else o)

    def __ne__(self, o):
        return self.value != (o.value if o.__class__ is Var else o)

    __hash__ = object.__hash__

    def __float__(self):
        raise TypeError("float(Var) is not differentiable; use .value")


# ----------------------------------------------------- unary math functions
def _unary(value, partial, x):
    i = len(_A)
    _A_app(x.index); _PA_app(partial); _B_app(0); _PB_app(0.0)
    return Var(value, i)


def _f_sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + _exp(-x))
    e = _exp(x)
    return e / (1.0 + e)


def exp(x):
    if x.__class__ is Var:
        y = _exp(x.value)
        return _unary(y, y, x)
    return _exp(x)


def log(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(_log(v), 1.0 / v, x)
    return _log(x)


def sin(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(_sin(v), _cos(v), x)
    return _sin(x)


def cos(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(_cos(v), -_sin(v), x)
    return _cos(x)


def tanh(x):
    if x.__class__ is Var:
        y = _tanh(x.value)
        return _unary(y, 1.0 - y * y, x)
    return _tanh(x)


def sqrt(x):
    if x.__class__ is Var:
        y = _sqrt(x.value)
        return _unary(y, 0.5 / y if y != 0.0 else math.inf, x)
    return _sqrt(x)


def sigmoid(x):
    if x.__class__ is Var:
        y = _f_sigmoid(x.value)
        return _unary(y, y * (1.0 - y), x)
    return _f_sigmoid(x)


def square(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(v * v, 2.0 * v, x)
    return x * x


def relu(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(v if v > 0.0 else 0.0, 1.0 if v > 0.0 else 0.0, x)
    return x if x > 0.0 else 0.0


def softplus(x):
    if x.__class__ is Var:
        v = x.value
        return _unary(_f_softplus(v), _f_sigmoid(v), x)
    return _f_softplus(x)


def _f_softplus(v):
    return max(v, 0.0) + math.log1p(_exp(-abs(v)))


# The math namespace for the pure-Python tape (works on Vars and floats).
m = types.SimpleNamespace(exp=exp, log=log, sin=sin, cos=cos, tanh=tanh,
                          sqrt=sqrt, sigmoid=sigmoid, square=square,
                          relu=relu, softplus=softplus, name="purepy")


# ------------------------------------------------------------------- grad
def _reverse(out_index):
    """Reverse sweep; returns the flat adjoint list.

    A plain loop over reversed slot indices, from the output down to slot 1
    (nodes recorded after the output cannot influence it and are skipped).
    """
    A = _A; PA = _PA; B = _B; PB = _PB
    adj = [0.0] * len(A)
    adj[out_index] = 1.0
    for i in range(out_index, 0, -1):
        g = adj[i]
        if g:  # zero adjoints are strong zeros (0 * inf partial stays 0)
            adj[A[i]] += PA[i] * g
            adj[B[i]] += PB[i] * g
    return adj


def _make_inputs(x):
    """Returns (vars_structure, shape, kind)."""
    global _recording
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Var(float(x), _leaf()), None, "scalar"
    try:
        import numpy as np
        arr = np.asarray(x, dtype=float)
    except ImportError:  # pragma: no cover
        arr = None
    if arr is not None:
        if arr.ndim == 0:
            return Var(float(arr), _leaf()), (), "0d"
        if arr.ndim == 1:
            return [Var(v, _leaf()) for v in arr.tolist()], arr.shape, "nd"
        if arr.ndim == 2:
            return [[Var(v, _leaf()) for v in row] for row in arr.tolist()], arr.shape, "nd"
        raise ValueError("purepy.grad supports scalars and 1-D/2-D arrays only")
    # list without numpy
    if x and isinstance(x[0], (list, tuple)):
        return [[Var(float(v), _leaf()) for v in row] for row in x], None, "list2"
    return [Var(float(v), _leaf()) for v in x], None, "list1"


def _leaf():
    i = len(_A)
    _A_app(0); _PA_app(0.0); _B_app(0); _PB_app(0.0)
    return i


def _collect(struct, kind, shape, adj):
    if kind in ("scalar", "0d"):
        g = adj[struct.index]
        if kind == "0d":
            import numpy as np
            return np.array(g)
        return g
    if kind == "list1":
        return [adj[v.index] for v in struct]
    if kind == "list2":
        return [[adj[v.index] for v in row] for row in struct]
    import numpy as np
    if len(shape) == 1:
        return np.array([adj[v.index] for v in struct], dtype=float)
    return np.array([[adj[v.index] for v in row] for row in struct],
                    dtype=float).reshape(shape)


def value_and_grad(f):
    """value_and_grad(f)(x) -> (float value, gradient shaped like x)."""
    def vg(x):
        global _recording
        if _recording:
            raise NotImplementedError("purepy tape is not re-entrant")
        _recording = True
        try:
            _reset()
            struct, shape, kind = _make_inputs(x)
            out = f(struct)
            if out.__class__ is Var:
                adj = _reverse(out.index)
                val = out.value
            else:
                val = float(out)
                adj = [0.0] * len(_A)
            return val, _collect(struct, kind, shape, adj)
        finally:
            _recording = False
            _reset()  # free the tape memory
    return vg


def grad(f):
    """grad(f)(x): gradient of scalar f at x (float, list, 1-D or 2-D ndarray)."""
    vg = value_and_grad(f)

    def g(x):
        return vg(x)[1]
    return g


def record_gradient_parts(f, x):
    """For benchmarking: record f at x (1-D), return (n_slots, out_index, leaves).

    Leaves the tape in place so ``_reverse`` can be timed on its own; the
    caller must call ``_reset()`` afterwards.
    """
    _reset()
    struct, shape, kind = _make_inputs(x)
    out = f(struct)
    return len(_A), out.index, struct


# ------------------------------------------------------------- self-check
def self_check(verbose=False):
    """Checks purepy gradients against analytic formulas. Raises AssertionError."""
    import numpy as np

    def close(a, b, rtol=1e-12, atol=1e-12):
        a = np.asarray(a, dtype=float); b = np.asarray(b, dtype=float)
        assert a.shape == b.shape, (a.shape, b.shape)
        assert np.allclose(a, b, rtol=rtol, atol=atol), (a, b)

    # scalar rules
    x0 = 0.7
    cases = [
        (lambda x: x * x * x, 3 * x0 ** 2),
        (lambda x: 1 / x, -1 / x0 ** 2),
        (lambda x: x / (1 + x), 1 / (1 + x0) ** 2),
        (lambda x: 3 - x, -1.0),
        (lambda x: x - 3 + 2 * x, 3.0),
        (lambda x: x ** 3.5, 3.5 * x0 ** 2.5),
        (lambda x: x ** x, x0 ** x0 * (math.log(x0) + 1)),
        (lambda x: 2.0 ** x, 2.0 ** x0 * math.log(2.0)),
        (lambda x: -x + abs(x), 0.0),
        (lambda x: exp(sin(x)), math.exp(math.sin(x0)) * math.cos(x0)),
        (lambda x: log(cos(x)), -math.tan(x0)),
        (lambda x: tanh(x), 1 - math.tanh(x0) ** 2),
        (lambda x: sqrt(x), 0.5 / math.sqrt(x0)),
        (lambda x: sigmoid(x), _f_sigmoid(x0) * (1 - _f_sigmoid(x0))),
        (lambda x: softplus(x), _f_sigmoid(x0)),
        (lambda x: square(x) + relu(x), 2 * x0 + 1),
        (lambda x: 5.0, 0.0),
    ]
    for k, (f, want) in enumerate(cases):
        got = grad(f)(x0)
        assert isinstance(got, float), (k, got)
        close(got, want)
    # sigmoid at large |z| must not overflow
    close(grad(lambda x: sigmoid(x))(-800.0), 0.0)
    # arrays, 1-D and 2-D
    a = np.array([0.3, -1.2, 2.0])
    close(grad(lambda x: x[0] * x[1] + x[2] ** 2)(a), [a[1], a[0], 2 * a[2]])
    A = np.arange(6.0).reshape(2, 3) / 7
    close(grad(lambda x: x[1][2] * x[0][1] - x[0][0])(A),
          [[-1, A[1, 2], 0], [0, 0, A[0, 1]]])
    close(grad(lambda x: x[0] * x[1])([2.0, 3.0]), [3.0, 2.0])
    # the notes' logistic regression, one data point, analytic adjoints
    w, b, xd, t, lam = 0.4, -0.3, 1.7, 1.0, 0.1

    def lreg(p):
        z = p[0] * xd + p[1]
        y = sigmoid(z)
        return 0.5 * (y - t) ** 2 + lam * 0.5 * p[0] ** 2
    y = _f_sigmoid(w * xd + b)
    zbar = (y - t) * y * (1 - y)
    close(grad(lreg)(np.array([w, b])), [zbar * xd + lam * w, zbar])
    if verbose:
        print("purepy self-check OK (%d scalar cases)" % len(cases))
    return True


if __name__ == "__main__":
    self_check(verbose=True)
