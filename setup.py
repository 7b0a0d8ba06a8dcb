"""Build the Cython extensions; metadata lives in pyproject.toml.

Every fastad/*.pyx is an extension module (a new one needs no edit here);
the .py modules stay plain Python.  The build:

* pipelines Cython with the C compiler: this process turns one .pyx after
  another into C, longest compile first, and each module goes to the C
  compiler (one per core) as soon as its C exists;
* compiles each module at the optimization level of its role (ROLES below,
  declared in the module's first lines; -O3 when it says nothing);
* puts Cython's runtime support shared by the modules (typed memoryviews,
  argument parsing, function objects) in one module, fastad._cyutility,
  compiled once instead of in every module (Cython >= 3.1): a module that
  uses a memoryview compiles in 30-75% less time;
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
import re
import sys
import sysconfig

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

if sys.platform == "win32":
    BASE = []
    ROLES = {"kernel": ["/O2"], "python": ["/O2"], "api": ["/O2"], "graph": ["/O2"],
             "vector": ["/O2"]}
else:
    # No -ffast-math: it would break NaN/inf propagation.
    # -g0: no debug information (Python's own CFLAGS ask for -g): it took a
    # third of the compile time and 85% of the modules' size.
    # -fno-unswitch-loops: the op table's generated loops (one per op and
    # mode) were cloned per branch; this halves _elementwise's compile time
    # (46 -> 22 s) at the same speed (chain, hvp, loop gradients: 0.97-1.02x).
    BASE = ["-fno-unswitch-loops", "-fno-strict-aliasing", "-g0"]
    if os.environ.get("FASTAD_NATIVE"):
        BASE.append("-march=native")
    ROLES = {
        # C loops over the tape, the op table or index arrays: the product
        "kernel": ["-O3"],
        # Cython whose lines call into the interpreter or NumPy: Python code
        # compiled by Cython (fastad._blocks, fastad.arrays), the public API
        # around the sweeps (fastad._tape: argument checks and shaping,
        # dispatch), the replay driver (fastad._player), the recorder's
        # storage (fastad._recorder), a primitive's call path
        # (fastad._primcall) and Cython's shared runtime (fastad._cyutility).
        # Optimizing harder buys little, and -O1 compiles in half -O2's time
        # (_blocks 14-16 -> 7.4 s).  Interleaved, gradients of a 4-3-3-2 and a
        # 64-32-10 network, of sin over 8 numbers and a small tape's
        # replayed gradient took 0.99-1.03x their -O2 time; at -O1 instead of
        # -O3, _player, _recorder, _primcall and _cyutility ran the same
        # instructions (within 0.5%, counted by callgrind) on gradients of
        # networks and loops, replays, HVPs, Hessians, primitives and minimize
        "python": ["-O1"],
        "api": ["-O1"],
        # loops over graphs and index arrays (fastad._coloring): nothing for
        # -O3's vectorizer; -O2 compiles in about 80% of its time, and star,
        # column, row and bidirectional colorings of 10^5 vertices took
        # 0.89-1.01x their -O3 time (interleaved)
        "graph": ["-O2"],
        # loops the vectorizer must reach, in a module of many instances
        # (fastad._second: per op, operand layout and adjoint case;
        # fastad._elementwise: per op and mode): -O2 with the vectorizer at
        # its full cost model compiles in two thirds (_second) and half
        # (_elementwise) of -O3's time; _elementwise's pullbacks took 0.76-1.01x
        # -O3's time with one lane and 0.96-1.05x with three (7 ops, 10^3 and
        # 10^5 elements; not add's, 1.46x, which blocks do not run there)
        "vector": ["-O2", "-ftree-vectorize", "-fvect-cost-model=dynamic"],
    }
DEFAULT_ROLE = "kernel"  # a module that declares no role keeps full speed
ROLE_LINE = re.compile(r"#\s*fastad-build:\s*role\s*=\s*(\w+)")

DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
              "cdivision": True}
# NumPy's C API as of 1.23, the oldest NumPy fastad supports (pyproject.toml):
# older NumPy 2.x headers hide newer functions (PyDataMem_SetHandler, 1.22)
# unless the target says so
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
          ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]
# every .pyx cimports from these (a header or .pxd edit rebuilds them all)
DEPENDS = sorted(glob.glob("csrc/*.h") + glob.glob("fastad/*.pxd"))
SHARED = "fastad._cyutility"


def _role(pyx):
    """The role a module declares in its first lines (DEFAULT_ROLE if none)."""
    with open(pyx, encoding="utf-8") as fh:
        for _, line in zip(range(5), fh):
            m = ROLE_LINE.match(line)
            if m:
                if m.group(1) not in ROLES:
                    raise SystemExit(f"{pyx}: unknown build role {m.group(1)!r}; "
                                     f"known: {', '.join(sorted(ROLES))}")
                return m.group(1)
    return DEFAULT_ROLE


def _shared_utility():
    """Cython >= 3.1 can put its runtime support in one shared module."""
    import Cython
    return tuple(int(p) for p in re.findall(r"\d+", Cython.__version__)[:2]) >= (3, 1)


def _extension(pyx):
    return Extension("fastad." + os.path.splitext(os.path.basename(pyx))[0], [pyx],
                     include_dirs=["csrc", np.get_include()],
                     extra_compile_args=ROLES[_role(pyx)] + BASE,
                     define_macros=MACROS, depends=DEPENDS)


extensions = [
    _extension(pyx)
    # the longest compiles first, so that two cores finish together:
    # _elementwise is a small .pyx but holds the op table's generated loops
    for pyx in sorted(glob.glob("fastad/*.pyx"),
                      key=lambda p: (p != "fastad/_elementwise.pyx", -os.path.getsize(p), p))
]
if _shared_utility():
    # generated by Cython (no .pyx); compiled early, while the first .pyx is
    # still being translated; role "python" (argument parsing, function
    # objects, memoryview set-up)
    shared = Extension(SHARED, [SHARED.replace(".", "/") + ".c"],
                       extra_compile_args=ROLES["python"] + BASE)
    extensions.insert(0, shared)


def _build_config():
    """What the compiled modules depend on besides their sources."""
    import Cython
    env = {k: os.environ[k] for k in ("CC", "CFLAGS", "CPPFLAGS", "LDFLAGS")
           if k in os.environ}
    return {"cython": Cython.__version__, "numpy": np.__version__,
            "directives": DIRECTIVES, "macros": MACROS, "env": env,
            "compile_args": {e.name: e.extra_compile_args for e in extensions}}


def _newer(sources, target):
    """True when target is missing or older than one of sources."""
    return not os.path.exists(target) or \
        max(os.path.getmtime(s) for s in sources) > os.path.getmtime(target)


class BuildExt(build_ext):
    """Pipelined, parallel, incremental build_ext with a persistent build directory."""

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

    def get_source_files(self):
        # the shared module's C is generated: not a source (sdist)
        return [s for s in super().get_source_files() if os.path.exists(s)]

    def build_extensions(self):
        from concurrent.futures import ThreadPoolExecutor

        from Cython.Build import cythonize

        stamp = os.path.join(self.build_temp, "fastad-build-config.json")
        config = _build_config()
        try:
            with open(stamp) as fh:
                same_config = json.load(fh) == json.loads(json.dumps(config))
        except (OSError, ValueError):
            same_config = False
        shared = [ext.name for ext in self.extensions if ext.name == SHARED]

        def stale(ext):
            if self.force or not same_config:
                return True
            if ext.name == SHARED:  # depends on Cython only (in the config)
                return not os.path.exists(self.get_ext_fullpath(ext.name))
            return _newer(ext.sources + ext.depends, self.get_ext_fullpath(ext.name))

        todo = [ext for ext in self.extensions if stale(ext)]
        for ext in self.extensions:
            if ext not in todo:
                print(f"{ext.name} is up to date")
        # Cython runs here, one module at a time, in compile order; the C
        # compiler runs in threads (subprocesses: no GIL), so Cython's work
        # overlaps with compiling instead of being a barrier before it.
        # The staleness test is ours, not Cython's: its own counts its bundled
        # .pxd files, new in every isolated build environment.
        options = {"shared_utility_qualified_name": shared[0]} if shared else {}
        with ThreadPoolExecutor(max(1, self.parallel)) as pool:
            jobs = []
            for ext in todo:
                (done,) = cythonize([ext], compiler_directives=DIRECTIVES, force=True,
                                    quiet=True, **options)
                ext.sources = done.sources  # the fresh .c
                jobs.append(pool.submit(self.build_extension, ext))
            for job in jobs:
                job.result()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as fh:
            json.dump(config, fh, indent=1)


setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
