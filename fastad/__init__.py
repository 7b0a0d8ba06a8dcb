"""fastad: automatic differentiation of plain Python and NumPy code on a compiled tape."""
from fastad._tape import Tape, release_memory
from fastad import _var
# Var, Array, where, stack and fad.<function> for every op-table entry that
# names one (fad.sin, fad.hypot, ...): generated from csrc/fastad_ops.h
from fastad._var import *  # noqa: F401,F403
from fastad._var import absolute as abs  # noqa: A001 - the public name is fad.abs
from fastad.arrays import (  # noqa: A004 - NumPy's names
    sum, mean, dot, matmul, logsumexp, concatenate, reshape, transpose,
)
from fastad.errors import TapeError, BranchChangedError, ValueReadError
from fastad.primitives import primitive
from fastad._serialize import load_tape
from fastad.debug import debug_nans
from fastad.linalg import solve, norm
from fastad.reductions import prod, cumsum, cumprod, var, std, ptp, trace, diff, average, amax, amin, max, min  # noqa: A004
from fastad.products import einsum, outer, inner, vdot, kron, tensordot
from fastad import shaping  # noqa: F401 - registers NumPy's shape/assembly/sort functions
from fastad.ufuncs import mod, round, around  # noqa: A001 - NumPy's names (and fastad.special)
from fastad import special
from fastad import optimize
from fastad.optimize import minimize, root
from fastad.transforms import (
    grad, value_and_grad, check_grad, record, jvp, vjp, jacobian, jacfwd, jacrev,
    hvp, hessian,
)
from fastad.checkpointing import scan, checkpoint
from fastad.sparse import (
    jacobian_sparsity, hessian_sparsity, sparse_jacobian, sparse_hessian,
    color_jacobian, color_hessian,
)
from fastad import _batching  # noqa: F401 - the Tape methods' batch=True

__version__ = "0.1.0"

__all__ = _var.__all__ + [
    "grad", "value_and_grad", "check_grad", "record", "jvp", "vjp",
    "jacobian", "jacfwd", "jacrev", "hvp", "hessian",
    "Tape", "TapeError", "BranchChangedError", "ValueReadError", "abs", "sum", "mean", "dot", "matmul",
    "logsumexp", "concatenate", "reshape", "transpose", "primitive", "solve", "norm",
    "minimize", "root", "optimize", "jacobian_sparsity", "hessian_sparsity",
    "sparse_jacobian", "sparse_hessian", "color_jacobian", "color_hessian", "load_tape",
    "release_memory", "debug_nans",
    "prod", "cumsum", "cumprod", "var", "std", "ptp", "trace", "diff", "average",
    "amax", "amin",
    "einsum", "outer", "inner", "vdot", "kron", "tensordot",
]
__all__ += ["mod", "special", "scan", "checkpoint"]  # (fad.round and fad.around: not for import *)
