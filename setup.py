"""Build the Cython extensions; metadata lives in pyproject.toml.

Every fastad/*.pyx is an extension module (a new one needs no edit here);
the .py modules stay plain Python.  The build:

* compiles the extensions in parallel, one per core, longest first;
* cythonizes and compiles only what is out of date: an extension is rebuilt
  when its .pyx, a fastad/*.pxd or a csrc/*.h is newer than the built
  module, or when the build configuration (flags, Cython, NumPy) changed;
* keeps its output in build/ for editable installs too (setuptools would
  build those in a temporary directory), so `pip install -e ".[test]"`
  after `pip install -e .` reuses the compiled modules instead of
  compiling everything again.
"""
import glob
import json
import os
import sys
import sysconfig

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

if sys.platform == "win32":
    opt = ["/O2"]
else:
    # -O3 for the sweeps; no -ffast-math: it would break NaN/inf propagation.
    # -g0: no debug information (Python's own CFLAGS ask for -g): it took a
    # third of the compile time and 85% of the modules' size.
    # -fno-unswitch-loops: the op table's generated loops (one per op and
    # mode) were cloned per branch; this halves _elementwise's compile time
    # (46 -> 22 s) at the same speed (chain, hvp, loop gradients: 0.97-1.02x).
    opt = ["-O3", "-fno-unswitch-loops", "-fno-strict-aliasing", "-g0"]
    if os.environ.get("FASTAD_NATIVE"):
        opt.append("-march=native")

DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
              "cdivision": True}
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
# every .pyx cimports from these (a header or .pxd edit rebuilds them all)
DEPENDS = sorted(glob.glob("csrc/*.h") + glob.glob("fastad/*.pxd"))

extensions = [
    Extension("fastad." + os.path.splitext(os.path.basename(pyx))[0], [pyx],
              include_dirs=["csrc", np.get_include()], extra_compile_args=opt,
              define_macros=MACROS, depends=DEPENDS)
    # the longest compiles first, so that two cores finish together:
    # _elementwise is a small .pyx but holds the op table's generated loops
    for pyx in sorted(glob.glob("fastad/*.pyx"),
                      key=lambda p: (p != "fastad/_elementwise.pyx", -os.path.getsize(p), p))
]


def _build_config():
    """What the compiled modules depend on besides their sources."""
    import Cython
    env = {k: os.environ[k] for k in ("CC", "CFLAGS", "CPPFLAGS", "LDFLAGS")
           if k in os.environ}
    return {"cython": Cython.__version__, "numpy": np.__version__,
            "directives": DIRECTIVES, "compile_args": opt, "macros": MACROS, "env": env}


def _newer(sources, target):
    """True when target is missing or older than one of sources."""
    return not os.path.exists(target) or \
        max(os.path.getmtime(s) for s in sources) > os.path.getmtime(target)


class BuildExt(build_ext):
    """Parallel, incremental build_ext with a persistent build directory."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1
        if getattr(self, "editable_mode", False):
            # pip install -e: setuptools points build_lib and build_temp at
            # temporary directories; build in build/ (as `python setup.py
            # build_ext` and `pip install .` do) so that the next editable
            # install finds the modules up to date.  They are still copied
            # into fastad/.
            tag = f".{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
            if sysconfig.get_config_var("Py_GIL_DISABLED"):
                tag += "t"
            self.build_lib = os.path.join("build", "lib" + tag)
            self.build_temp = os.path.join("build", "temp" + tag)

    def build_extensions(self):
        from Cython.Build import cythonize

        stamp = os.path.join(self.build_temp, "fastad-build-config.json")
        config = _build_config()
        try:
            with open(stamp) as fh:
                same_config = json.load(fh) == json.loads(json.dumps(config))
        except (OSError, ValueError):
            same_config = False
        stale = [ext for ext in self.extensions
                 if self.force or not same_config
                 or _newer(ext.sources + ext.depends, self.get_ext_fullpath(ext.name))]
        for ext in self.extensions:
            if ext not in stale:
                print(f"{ext.name} is up to date")
        if stale:
            # Decided here, not by Cython: its staleness test also counts its
            # own bundled .pxd files, new in every isolated build environment.
            done = {ext.name: ext for ext in cythonize(
                stale, compiler_directives=DIRECTIVES, force=True,
                nthreads=min(self.parallel, len(stale)))}
            for ext in stale:
                ext.sources = done[ext.name].sources  # the fresh .c
            saved, self.extensions = self.extensions, stale
            try:
                super().build_extensions()  # self.parallel threads, in list order
            finally:
                self.extensions = saved
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as fh:
            json.dump(config, fh, indent=1)


setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
