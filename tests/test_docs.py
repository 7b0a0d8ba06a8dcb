"""docs/guide.md and README.md run as written, and the output the guide shows
is what fastad prints.

Each `## ` section of the guide is one test: its ```python blocks run in
order in one fresh namespace (so every section is self-contained), inside a
temporary directory.  The blocks carry their own asserts against independent
answers (the notes' hand-derived adjoints, analytic formulas, SciPy, central
finite differences), so a wrong derivative fails here.  A failure names the
section and shows the block; the traceback points at the guide's own lines.
"""
import contextlib
import io
import pathlib
import re
import traceback

import numpy as np
import pytest

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guide.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NUMBER = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?")


def _sections():
    """[(heading, [(language, code, first line number of the code)])] of the guide."""
    text = GUIDE.read_text()
    heads = [(m.start(), m.group(1).strip()) for m in re.finditer(r"^## (.+)$", text, re.M)]
    out = []
    for k, (start, head) in enumerate(heads):
        stop = heads[k + 1][0] if k + 1 < len(heads) else len(text)
        blocks = []
        for m in FENCE.finditer(text, start, stop):
            line = text.count("\n", 0, m.start(2)) + 1
            blocks.append((m.group(1).strip(), m.group(2), line))
        out.append((head, blocks))
    return out


SECTIONS = _sections()
NAMES = [head for head, _ in SECTIONS]


def _code(blocks):
    return [(code, line) for lang, code, line in blocks if lang == "python"]


def _run_section(head, blocks):
    """Run a section's python blocks in one new namespace; returns (namespace, stdout)."""
    code_blocks = _code(blocks)
    if any("scipy" in code for code, _ in code_blocks):
        pytest.importorskip("scipy")
    ns = {"__name__": "__guide__"}
    out = io.StringIO()
    for k, (code, line) in enumerate(code_blocks, 1):
        # padded so that tracebacks give the guide's line numbers
        compiled = compile("\n" * (line - 1) + code, str(GUIDE), "exec")
        error = None
        try:
            with contextlib.redirect_stdout(out):
                exec(compiled, ns)
        except Exception:
            error = traceback.format_exc()
        if error is not None:
            pytest.fail(f"docs/guide.md, section {head!r}, python block {k} "
                        f"(line {line}) failed:\n\n{code}\n{error}", pytrace=False)
    return ns, out.getvalue()


def _output_difference(shown, printed, rtol=1e-13):
    """None when the printed output is the shown one, else a message naming the
    first line that differs.  Line by line, the text must be equal once numbers
    are masked, and the numbers equal to rtol (the last digit of a
    transcendental function's value may differ between C libraries)."""
    a, b = shown.strip("\n").splitlines(), printed.strip("\n").splitlines()
    for i, (la, lb) in enumerate(zip(a, b), 1):
        la, lb = la.rstrip(), lb.rstrip()
        na = [float(v) for v in NUMBER.findall(la)]
        nb = [float(v) for v in NUMBER.findall(lb)]
        if NUMBER.sub("#", la) != NUMBER.sub("#", lb) or not np.allclose(na, nb, rtol=rtol, atol=0.0):
            return f"line {i} differs:\n  shown:   {la}\n  printed: {lb}"
    if len(a) != len(b):
        return f"{len(a)} lines shown, {len(b)} printed"
    return None


def _check_shown(what, shown, printed):
    diff = _output_difference(shown, printed)
    if diff is not None:
        pytest.fail(f"docs/guide.md, {what}: the output shown is not what fastad prints "
                    f"now; {diff}\n\nprinted now:\n{printed}", pytrace=False)


def test_guide_has_the_notes_sections_in_order():
    assert len(SECTIONS) == 12
    assert [int(h.split(".")[0]) for h in NAMES] == list(range(1, 13))
    for words, head in zip(["Wengert", "Adjoints", "Forward", "Multi-seeded", "Record once",
                            "backprop", "primitives", "Sparse Jacobians", "Hessians",
                            "Newton-Krylov", "NumPy", "Nested"], NAMES):
        assert words.lower() in head.lower()


@pytest.mark.parametrize("head,blocks", SECTIONS, ids=NAMES)
def test_section_checks_itself(head, blocks):
    """Every section has runnable code that asserts something, and only
    python (run), text (output) and bash (shell) fences are used."""
    code = _code(blocks)
    assert code, f"section {head!r} has no python block"
    assert any(re.search(r"\bassert\b|assert_allclose", c) for c, _ in code), \
        f"section {head!r} checks nothing"
    for lang, text, line in blocks:
        assert lang in ("python", "text", "bash"), f"line {line}: fence {lang!r}"


@pytest.mark.parametrize("head,blocks", SECTIONS, ids=NAMES)
def test_section_runs(head, blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # blocks may write files (logistic.dot)
    ns, printed = _run_section(head, blocks)
    shown = [text for lang, text, _ in blocks if lang == "text"]
    if shown:                            # shown output is the section's printed output
        _check_shown(f"section {head!r}", "\n".join(shown), printed)


def test_logistic_wengert_list_shown_is_what_fastad_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    head, blocks = SECTIONS[0]
    shown = [t for lang, t, _ in blocks if lang == "text" and t.startswith("fastad.Tape:")]
    assert len(shown) == 1, "section 1 should show the printed tape once"
    ns, _ = _run_section(head, blocks)
    printed = str(ns["tape"])
    _check_shown("section 1, str(tape)", shown[0], printed)
    # the listing is the notes' Wengert list: z, y, L, R, L_reg in order
    ops = [ln.split("=", 1)[1].split("#")[0].split("(")[0].strip()
           for ln in printed.splitlines()[1:]]
    assert ops == ["input", "input", "mul_c", "add", "sigmoid", "sub_c", "pow_c", "mul_c",
                   "pow_c", "mul_c", "mul_c", "add"]
    assert printed.splitlines()[-1].rstrip().endswith("-> output")


# ---------------------------------------------------------------------------
# the README's code runs as written (so the docs cannot rot)
# ---------------------------------------------------------------------------

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run_and_give_the_gradients_they_claim():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    ns = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), ns)
    # the Rosenbrock example: recorded and replayed gradients are the analytic ones
    x = ns["x"] + 0.1
    g = np.zeros_like(x)
    g[:-1] = -2 * (1 - x[:-1]) - 400 * x[:-1] * (x[1:] - x[:-1] ** 2)
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    np.testing.assert_allclose(ns["g2"], g, rtol=1e-12)
    # the sparse Jacobian example: tridiagonal, diagonal -2 + h^2 exp(u), off-diagonals 1
    u = ns["u"] + 0.1
    h2 = 1.0 / (u.size + 1) ** 2
    J2 = ns["J2"]
    assert J2.nnz == 3 * u.size - 2
    np.testing.assert_allclose(J2.diagonal(), -2 + h2 * np.exp(u), rtol=1e-14)
    np.testing.assert_allclose(J2.diagonal(1), 1.0)
    np.testing.assert_allclose(J2.diagonal(-1), 1.0)
    # the primitive example: d/dx logsumexp(tanh(x)) = softmax(tanh x) * (1 - tanh^2 x)
    t = np.tanh(np.array([0.1, 0.5, -0.3]))
    np.testing.assert_allclose(ns["g"], np.exp(t) / np.exp(t).sum() * (1 - t ** 2), rtol=1e-12)
