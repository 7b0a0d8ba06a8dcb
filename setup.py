"""Build the Cython extensions; metadata lives in pyproject.toml."""
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    opt = ["/O2"]
else:
    # -O3 for the sweeps; no -ffast-math: it would break NaN/inf propagation.
    opt = ["-O3", "-fno-strict-aliasing"]
    if os.environ.get("FASTAD_NATIVE"):
        opt.append("-march=native")

common = dict(
    include_dirs=["csrc", np.get_include()],
    extra_compile_args=opt,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=["csrc/fastad_ops.h", "fastad/_tape.pxd"],
)

extensions = [
    Extension("fastad._tape", ["fastad/_tape.pyx"], **common),
    Extension("fastad._var", ["fastad/_var.pyx"], **common),
    Extension("fastad._coloring", ["fastad/_coloring.pyx"], **common),
    Extension("fastad._sparsity", ["fastad/_sparsity.pyx"], **common),
    Extension("fastad._kernels", ["fastad/_kernels.pyx"], **common),
    Extension("fastad._sweeps", ["fastad/_sweeps.pyx"], **common),
    Extension("fastad._fold", ["fastad/_fold.pyx"], **common),
    Extension("fastad._recorder", ["fastad/_recorder.pyx"], **common),
    Extension("fastad._player", ["fastad/_player.pyx"], **common),
]

# plain Python compiled as is: the per-operation recording and sweep code of
# array blocks runs 15-20% faster (the .py stays the one source).  Python's
# semantics, not the kernels' unchecked indexing: x[-1] must still work.
python_modules = [
    Extension("fastad._blocks", ["fastad/_blocks.py"], **common),
    Extension("fastad.arrays", ["fastad/arrays.py"], **common),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False,
                             "wraparound": False, "cdivision": True},
    ) + cythonize(python_modules, compiler_directives={"language_level": 3}),
)
