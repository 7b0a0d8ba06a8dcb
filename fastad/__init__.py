"""fastad: automatic differentiation of plain Python and NumPy code on a compiled tape."""
from fastad._tape import Tape
from fastad import _var
# Var, Array, where, stack and fad.<function> for every op-table entry that
# names one (fad.sin, fad.hypot, ...): generated from csrc/fastad_ops.h
from fastad._var import *  # noqa: F401,F403
from fastad._var import absolute as abs  # noqa: A001 - the public name is fad.abs
from fastad.arrays import (  # noqa: A004 - NumPy's names
    sum, mean, dot, matmul, logsumexp, concatenate, reshape, transpose,
)
from fastad.errors import TapeError, BranchChangedError
from fastad.primitives import primitive
from fastad.linalg import solve, norm
from fastad import optimize
from fastad.optimize import minimize, root
from fastad.transforms import (
    grad, value_and_grad, check_grad, record, jvp, vjp, jacobian, jacfwd, jacrev,
    hvp, hessian,
)
from fastad.sparse import (
    jacobian_sparsity, hessian_sparsity, sparse_jacobian, sparse_hessian,
    color_jacobian, color_hessian,
)

__version__ = "0.1.0"


def _check_compiled():
    """In a source checkout, warn when a compiled .py module is older than its
    source (the edit would not run until the extensions are rebuilt)."""
    import os
    import warnings
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(os.path.dirname(here), "setup.py")):
        return
    from fastad import _blocks, arrays
    for mod in (_blocks, arrays):
        src = os.path.join(here, mod.__name__.rsplit(".", 1)[1] + ".py")
        if mod.__file__ != src and os.path.exists(src) and \
                os.path.getmtime(src) > os.path.getmtime(mod.__file__):
            warnings.warn(f"fastad: {src} is newer than its compiled module; rebuild "
                          "with `python setup.py build_ext --inplace` (or pip install -e .)",
                          RuntimeWarning, stacklevel=2)


_check_compiled()

__all__ = _var.__all__ + [
    "grad", "value_and_grad", "check_grad", "record", "jvp", "vjp",
    "jacobian", "jacfwd", "jacrev", "hvp", "hessian",
    "Tape", "TapeError", "BranchChangedError", "abs", "sum", "mean", "dot", "matmul",
    "logsumexp", "concatenate", "reshape", "transpose", "primitive", "solve", "norm",
    "minimize", "root", "optimize", "jacobian_sparsity", "hessian_sparsity",
    "sparse_jacobian", "sparse_hessian", "color_jacobian", "color_hessian",
]
