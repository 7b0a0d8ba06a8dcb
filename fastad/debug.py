"""fad.debug_nans: find where a strong zero met an inf or NaN partial.

fastad's rule: a zero cotangent (or tangent, or partial) is a strong zero,
an exact 0 times anything, inf and NaN included.  That is what makes the
unselected side of `where(x > 0, sqrt(x), 0)` contribute nothing.  The price:
a cotangent that is zero because a later operation overflowed also passes
nothing, so `log1p(exp(800))` differentiates to 0 (true: 1; JAX: NaN).
With the option on, fad.grad and fad.value_and_grad check each gradient
and raise FloatingPointError naming the operation where an inf or NaN
partial met a zero cotangent, and the operations that read its result.

    fad.debug_nans(True)            # on (returns the previous setting)
    with fad.debug_nans():          # on inside the block only
        fad.grad(f)(x)
"""
import numpy as np

from fastad._kernels import OP_FLAGS
from fastad._validate import NODE_DTYPE

_state = {"on": False}
_FLAGS = np.array(OP_FLAGS, dtype=np.int64)
_BINARY, _UNARY = 0x01, 0x02


class debug_nans:
    """Turn the check on (or off with enabled=False); also a context manager
    that restores the previous setting on exit."""

    def __init__(self, enabled=True):
        self.previous = _state["on"]
        _state["on"] = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state["on"] = self.previous
        return False

    def __bool__(self):
        return self.previous


def enabled():
    return _state["on"]


def _findings(tape, slot):
    """[(slot, what, readers)] where a non-finite partial met a zero cotangent."""
    from fastad._blocks import Elementwise
    adj = tape.reverse(slot)
    parts = tape._reduce_parts()[1]
    op = np.frombuffer(parts[0], dtype=np.uint8)
    node = np.frombuffer(parts[1], dtype=NODE_DTYPE)
    n = op.shape[0]
    val = tape.recorded_values()
    a = adj[:n]
    fl = _FLAGS[op]
    scalar = ((fl & (_BINARY | _UNARY)) != 0) & (np.arange(n) >= tape.n_inputs)
    binary = (fl & _BINARY) != 0
    with np.errstate(invalid="ignore"):
        bad = scalar & (a == 0) & (~np.isfinite(node["p0"]) |
                                  (binary & ~np.isfinite(node["p1"])))
    found = [(int(i), tape._describe(int(i))) for i in np.nonzero(bad)[0]]
    for blk in tape.blocks:
        if type(blk) is not Elementwise or blk.stop == blk.start:
            continue
        cot = a[blk.start:blk.stop].reshape(blk.shape)
        for d in blk._partials(val):
            if d is None:
                continue
            with np.errstate(invalid="ignore"):
                hit = (~np.isfinite(np.broadcast_to(d, blk.shape))) & (cot == 0)
            for e in np.nonzero(hit.reshape(-1))[0][:3]:
                found.append((blk.start + int(e), f"{blk.describe()}[{int(e)}]"))
    found.sort()
    out = []
    for s, what in found[:5]:
        readers = [tape._describe(int(j)) for j in np.nonzero(
            scalar & ((node["a0"] == s) | (binary & (node["a1"] == s))))[0][:3]]
        for blk in tape.blocks:
            if any(o.active and (o.flat == s).any() for o in blk.operands()):
                readers.append(blk.describe())
        out.append((s, what, readers[:3]))
    return out


def check(tape, slot, who="grad"):
    """Raise FloatingPointError if the gradient of `slot` passed a strong zero
    through an inf or NaN partial (see the module doc)."""
    found = _findings(tape, slot)
    if not found:
        return
    s, what, readers = found[0]
    v = float(tape.recorded_values()[s])
    raise FloatingPointError(
        f"fastad.{who} (debug_nans): at slot {s}, {what} = {v!r}, an inf or NaN partial "
        f"met a zero cotangent, so it passed an exact 0 (a strong zero). That is right "
        f"where the operation lies on an unselected side of fad.where; otherwise the "
        f"cotangent may be zero because an operation reading it overflowed "
        f"(read by: {', '.join(readers) or 'nothing'}), and the true derivative is "
        f"lost. {len(found)} such operation(s) found; rewrite the expression in a stable "
        f"form (e.g. fad.softplus(z) for log1p(exp(z))).")

