"""Color counts: fastad's coloring against ColPack on the same patterns (optional).

    python benchmarks/bench_colpack.py

Needs g++ and Debian's libcolpack-dev (apt-get install libcolpack-dev); without
them it prints "ColPack not installed".  Never a dependency of fastad.
For each pattern: the best count over ColPack's orderings (natural,
largest-first, smallest-last, incidence-degree; dynamic largest-first too for
bicoloring, counted as the sizes of its two seed matrices) and fastad's
"best" ordering (fad.color_jacobian / fad.color_hessian).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import fastad as fad

HERE = os.path.dirname(os.path.abspath(__file__))


def _build(tmp):
    if shutil.which("g++") is None or not os.path.exists("/usr/include/ColPack/ColPackHeaders.h"):
        return None
    exe = os.path.join(tmp, "colpack_colors")
    r = subprocess.run(["g++", "-O2", "-o", exe, os.path.join(HERE, "colpack_colors.cpp"),
                        "-lColPack", "-fopenmp"], capture_output=True, text=True)
    return exe if r.returncode == 0 else None


def _colpack(exe, tmp, P):
    path = os.path.join(tmp, "pattern.txt")
    P = P.tocsr()
    with open(path, "w") as fh:
        fh.write(f"{P.shape[0]} {P.shape[1]}\n")
        for i in range(P.shape[0]):
            cols = P.indices[P.indptr[i]:P.indptr[i + 1]]
            fh.write(f"{len(cols)} " + " ".join(map(str, cols)) + "\n")
    # one thread: ColPack's OpenMP code gives different counts from run to run otherwise
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([exe, path], capture_output=True, text=True, check=True, env=env).stdout
    best = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("column", "row", "star", "bicolor"):
            best[parts[0]] = min(best.get(parts[0], 1 << 30), int(parts[2]))
    return best


def _ncolors(c):
    return int(c.max()) + 1 if c.size and c.max() >= 0 else 0


def _fastad(P, symmetric):
    cc, rc = fad.color_jacobian(P, "bidirectional")
    res = {"column": _ncolors(fad.color_jacobian(P, "column")),
           "row": _ncolors(fad.color_jacobian(P, "row")),
           "bicolor": _ncolors(cc) + _ncolors(rc)}
    if symmetric:
        res["star"] = _ncolors(fad.color_hessian(P))
    return res


def _patterns():
    import scipy.sparse as sp
    n = 100_000
    tri = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1], format="csr")
    m = 316
    lap = sp.kronsum(sp.diags([np.ones(m - 1), np.ones(m), np.ones(m - 1)], [-1, 0, 1]),
                     sp.diags([np.ones(m - 1), np.ones(m), np.ones(m - 1)], [-1, 0, 1]),
                     format="csr")
    a = 2_000       # one-sided colorings of an arrowhead are O(n^2) in both tools
    arrow = sp.lil_matrix((a, a), dtype=bool)
    arrow[0, :] = True
    arrow[:, 0] = True
    arrow.setdiag(True)
    rng = np.random.default_rng(0)
    rnd = sp.random(2_000, 2_000, density=5 / 2_000, random_state=rng, format="csr")
    rnd = rnd + sp.identity(2_000, format="csr")
    sym = rnd + rnd.T
    rosen = fad.hessian_sparsity(lambda x: fad.sum(100 * (x[1:] - x[:-1] ** 2) ** 2
                                                   + (1 - x[:-1]) ** 2))(np.zeros(10_000))
    return [("tridiagonal (Bratu), n = 100,000", tri, True),
            ("five-point stencil 316 x 316", lap, True),
            ("arrowhead, n = 2,000", arrow.tocsr(), True),
            ("random 2,000 x 2,000, 5 per row + diagonal", rnd.tocsr(), False),
            ("random symmetric 2,000, ~11 per row", sym.tocsr(), True),
            ("extended Rosenbrock Hessian, n = 10,000", rosen, True)]


def run():
    tmp = tempfile.mkdtemp()
    try:
        exe = _build(tmp)
        if exe is None:
            return "ColPack not installed (apt-get install libcolpack-dev), or g++ missing"
        rows = ["| pattern | column: ColPack / fastad | row | bidirectional (lanes) | star |",
                "|---|---:|---:|---:|---:|"]
        for name, P, symmetric in _patterns():
            P = (P != 0).astype(bool).tocsr()
            P.sort_indices()
            cp, fa = _colpack(exe, tmp, P), _fastad(P, symmetric)
            cells = [f"{cp[k]} / {fa[k]}" if k in fa else "" for k in ("column", "row", "bicolor", "star")]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(print(run()))
