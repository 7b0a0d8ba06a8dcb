"""Regenerate suite/ from autograd's tests (run once; the output is committed).

    python benchmarks/peer/port.py /path/to/autograd-checkout

Only imports are rewritten (autograd.numpy -> numpy, autograd's test helpers
-> peer_util); test bodies are autograd's, unchanged but for PATCHES.  Which tests are left
out, and why, is SKIP in run.py; complex inputs are skipped by peer_util.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ["test_numpy", "test_systematic", "test_linalg", "test_binary_ops",
         "test_scalar_ops", "test_truediv", "test_scipy", "test_graphs",
         "test_jacobian", "test_direct"]

RULES = [
    (r"^(\s*)import autograd\.numpy\.random as npr$", r"\1import numpy.random as npr"),
    (r"^(\s*)import autograd\.numpy as np$", r"\1import numpy as np"),
    (r"^(\s*)from autograd import tuple$", r"\1pass  # autograd.tuple: the builtin tuple"),
    (r"^(\s*)from autograd import ((?:grad|value_and_grad|jacobian|deriv|holomorphic_grad)"
     r"(?:, (?:grad|value_and_grad|jacobian|deriv|holomorphic_grad))*)$",
     r"\1from peer_util import \2"),
    (r"^(\s*)from autograd\.test_util import (.*)$", r"\1from peer_util import \2"),
    (r"^(\s*)from numpy_utils import (.*)$", r"\1from peer_util import \2"),
    (r"^(\s*)from test_binary_ops import (.*)$", r"\1from ag_binary_ops import \2"),
    (r"^(\s*)import autograd\.scipy\.stats\.multivariate_normal as mvn$",
     r"\1from scipy.stats import multivariate_normal as mvn"),
    (r"^(\s*)import autograd\.scipy\.(\S+) as (\S+)$", r"\1import scipy.\2 as \3"),
    (r"autograd\.scipy\.signal\.convolve", r"scipy.signal.convolve"),
    (r"^(\s*)import autograd\.scipy\.signal$", r"\1import scipy.signal"),
    (r"^(\s*)from autograd\.scipy import (.*)$", r"\1from scipy import \2"),
]


# Edits beyond imports (file, old, new): autograd-only helpers the tests
# call, removed where the result is unused, else spelled in NumPy.
PATCHES = [
    ("test_numpy", """    D = np.random.randn(4, 4)
    A = np.make_diagonal(D, axis1=-1, axis2=-2)
    check_grads(fun)(D)

    D = np.random.randn(3, 4, 4)
    A = np.make_diagonal(D, axis1=-1, axis2=-2)
    check_grads(fun)(D)""", """    D = np.random.randn(4, 4)
    # PORT: unused call of autograd's np.make_diagonal removed
    check_grads(fun)(D)

    D = np.random.randn(3, 4, 4)
    # PORT: unused call of autograd's np.make_diagonal removed
    check_grads(fun)(D)"""),
    ("test_linalg", "        return np.linalg.pinv(np.linalg._dot(np.linalg.T(x), x))",
     "        # PORT: autograd's np.linalg._dot(np.linalg.T(x), x) in NumPy\n"
     "        return np.linalg.pinv(np.matmul(np.swapaxes(x, -1, -2), x))"),
]


def port(src, name):
    for file, old, new in PATCHES:
        if file == name:
            assert old in src, f"{name}: patch target not found"
            src = src.replace(old, new)
    out = []
    in_string = False
    for line in src.splitlines():
        for pat, rep in RULES:
            line = re.sub(pat, rep, line)
        if not in_string and re.search(r"\bautograd\b", line.split("#")[0]):
            line += "  # PORT: autograd-specific"
        if line.count('"""') % 2:
            in_string = not in_string
        out.append(line)
    head = (f'"""Ported from HIPS/autograd tests/{name}.py (MIT licence, (c) the autograd\n'
            f'authors) by benchmarks/peer/port.py: imports rewritten, bodies unchanged\n'
            f'except PATCHES in port.py."""\n')
    return head + "\n".join(out) + "\n"


def main(repo):
    os.makedirs(os.path.join(HERE, "suite"), exist_ok=True)
    rev = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    for name in FILES:
        src = subprocess.run(["git", "-C", repo, "show", f"HEAD:tests/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        dest = os.path.join(HERE, "suite", "ag_" + name[len("test_"):] + ".py")
        with open(dest, "w") as fh:
            fh.write(port(src, name))
    with open(os.path.join(HERE, "suite", "SOURCE"), "w") as fh:
        fh.write(f"HIPS/autograd {rev}\n")


if __name__ == "__main__":
    main(sys.argv[1])
