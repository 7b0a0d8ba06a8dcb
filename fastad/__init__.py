"""fastad: automatic differentiation of plain Python and NumPy code on a compiled tape."""
from fastad._tape import Tape
from fastad._var import (
    Var, Array,
    sin, cos, tan, arcsin, arccos, arctan, arctan2, sinh, cosh, tanh,
    exp, expm1, log, log1p, log2, log10, sqrt, square, sign, power, hypot,
    maximum, minimum, where, sigmoid, softplus, relu, erf, stack,
)
from fastad._var import absolute as abs  # noqa: A001 - the public name is fad.abs
from fastad.arrays import (  # noqa: A004 - NumPy's names
    sum, mean, dot, matmul, logsumexp, concatenate, reshape, transpose,
)
from fastad.errors import TapeError, BranchChangedError
from fastad.primitives import primitive, solve, norm
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

__all__ = [
    "grad", "value_and_grad", "check_grad", "record", "jvp", "vjp",
    "jacobian", "jacfwd", "jacrev", "hvp", "hessian", "stack",
    "Var", "Array", "Tape", "TapeError", "BranchChangedError",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh",
    "cosh", "tanh", "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt",
    "square", "abs", "sign", "power", "hypot", "maximum", "minimum", "where",
    "sigmoid", "softplus", "relu", "erf", "sum", "mean", "dot", "matmul",
    "logsumexp", "concatenate", "reshape", "transpose", "primitive", "solve", "norm",
    "minimize", "root", "optimize", "jacobian_sparsity", "hessian_sparsity",
    "sparse_jacobian", "sparse_hessian", "color_jacobian", "color_hessian",
]
