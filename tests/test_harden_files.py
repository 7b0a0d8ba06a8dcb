"""Issue #18, item 1: damaged or hostile tapes (pickles and saved files) raise
cleanly before any sweep runs; tape.save / fad.load_tape run no code from
the file; a primitive that cannot be found by name fails when written."""
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastad as fad
from conftest import close, fd_grad, fd_jacobian
from fastad import _validate as V
from fastad._tape import _rebuild

HERE = os.path.dirname(os.path.abspath(__file__))


@fad.primitive
def hcube(x):
    return x ** 3


hcube.defvjp(lambda ybar, y, x: ybar * 3.0 * x ** 2)
hcube.defjvp(lambda xdot, y, x: 3.0 * x ** 2 * xdot)

_W = np.array([[1.0, -0.5, 0.25], [0.3, 0.2, -1.0]])


def f_scalar(x):
    return x[0] * np.sin(x[1]) + x[2] * x[3] + (x[0] > -5.0)


def f_blocks(x):
    return np.sum(np.tanh(_W @ x) ** 2) + np.sum(np.where(x > 0, x, 0.1 * x))


def f_prim(x):
    return np.sum(hcube(x)) + hcube(x[0]) * x[1]


def f_max(x):
    return np.max(x) * np.sum(x) + np.sum(x * x, axis=0)[0]


def f_vec(x):
    return np.exp(x) * 2.0 + fad.stack([x[0], 1.0, x[2]])


PROGRAMS = [
    (f_scalar, np.array([0.3, 1.1, -0.7, 2.0])),
    (f_blocks, np.array([0.5, -1.2, 2.0])),
    (f_prim, np.array([0.5, -1.2, 2.0])),
    (f_max, np.array([[1.0, 2.0], [3.0, 0.5]])),
]
IDS = ["scalar", "blocks", "primitive", "max"]


def _roundtrip_save(t):
    buf = io.BytesIO()
    t.save(buf)
    return fad.load_tape(io.BytesIO(buf.getvalue()))


def _parts(t):
    return list(pickle.loads(pickle.dumps(t._reduce_parts()[1])))


def _nodes(parts):
    return np.frombuffer(parts[1], dtype=V.NODE_DTYPE).copy()


# ------------------------------------------------------------ save / load

@pytest.mark.parametrize("f,x0", PROGRAMS, ids=IDS)
@pytest.mark.parametrize("how", ["save", "pickle", "path"])
def test_saved_tape_replays_like_the_function(f, x0, how, tmp_path):
    t = fad.record(f, x0)
    if how == "save":
        t2 = _roundtrip_save(t)
    elif how == "path":
        p = tmp_path / "tape.fad"
        t.save(str(p))
        t2 = fad.load_tape(str(p))
        assert p.exists() and not (tmp_path / "tape.fad.npz").exists()
    else:
        t2 = pickle.loads(pickle.dumps(t))
    x1 = x0 * 0.9 + 0.05        # same branches, a new point
    close(t2(x1), f(x1))
    fd = fd_grad(f, x1)
    np.testing.assert_allclose(t2.gradient(x1), fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t2.jvp(x1, np.ones_like(x1)), np.sum(fd), rtol=1e-6, atol=1e-7)
    H = t2.hessian(x1)
    Hfd = fd_jacobian(lambda z: fd_grad(f, z, h=1e-4), x1, h=1e-4)
    np.testing.assert_allclose(H.reshape(x1.size, x1.size), Hfd.reshape(x1.size, x1.size),
                               rtol=1e-4, atol=1e-4)


def test_saved_vector_tape_jacobian():
    x0 = np.array([0.5, -1.2, 2.0])
    t2 = _roundtrip_save(fad.record(f_vec, x0))
    x1 = np.array([0.4, 0.3, -0.2])
    J = fd_jacobian(f_vec, x1)
    np.testing.assert_allclose(t2.jacobian(x1, mode="rev"), J, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t2.jacobian(x1, mode="fwd"), J, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t2.sparse_jacobian(x1).toarray(), J, rtol=1e-6, atol=1e-7)


def test_saved_tape_at_a_float_and_branch_check():
    t2 = _roundtrip_save(fad.record(lambda x: x * x if x > 0 else -x, 1.5))
    close(t2.gradient(2.0), 4.0)
    with pytest.raises(fad.BranchChangedError):
        t2.gradient(-1.0)


def test_load_tape_refuses_what_is_not_a_tape(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="load_tape"):
        fad.load_tape(str(p))
    np.savez(str(tmp_path / "other.npz"), a=np.arange(3))
    with pytest.raises(ValueError, match="missing"):
        fad.load_tape(str(tmp_path / "other.npz"))
    with pytest.raises(ValueError, match="load_tape"):
        fad.load_tape(str(tmp_path / "absent.npz"))


def _edit_saved(t, edit):
    buf = io.BytesIO()
    t.save(buf)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes())
    edit(arrays, header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return io.BytesIO(out.getvalue())


def test_load_tape_runs_no_code_and_imports_nothing():
    t = fad.record(f_prim, np.array([0.5, -1.2, 2.0]))

    def to_os_system(arrays, header):
        s = json.dumps(header).replace(json.dumps([__name__, "hcube"]), '["os", "system"]')
        header.clear()
        header.update(json.loads(s))

    with pytest.raises(ValueError, match="os.system is not a fastad primitive"):
        fad.load_tape(_edit_saved(t, to_os_system))

    def to_unimported(arrays, header):
        s = json.dumps(header).replace(json.dumps([__name__, "hcube"]),
                                       '["antigravity", "fly"]')
        header.clear()
        header.update(json.loads(s))

    with pytest.raises(ValueError, match="not imported"):
        fad.load_tape(_edit_saved(t, to_unimported))
    assert "antigravity" not in sys.modules

    def object_array(arrays, header):
        arrays["b0"] = np.array([1, "x"], dtype=object)

    with pytest.raises(ValueError):                     # allow_pickle=False
        fad.load_tape(_edit_saved(t, object_array))

    def unknown_block(arrays, header):
        header["blocks"][0]["block"] = "Popen"

    with pytest.raises(ValueError, match="unknown block kind"):
        fad.load_tape(_edit_saved(t, unknown_block))


@pytest.mark.parametrize("key,value,match", [
    ("version", 99, "version"),
    ("format", "zip", "not a fastad tape"),
    ("n_inputs", 999, "n_inputs"),
    ("n_inputs", "3", "integer"),
    ("in_shape", {"tuple": [7]}, "in_shape"),
    ("blocks", {"list": []}, "blocks must be a list"),
])
def test_load_tape_checks_the_header(key, value, match):
    t = fad.record(f_blocks, np.array([0.5, -1.2, 2.0]))
    with pytest.raises(ValueError, match=match):
        fad.load_tape(_edit_saved(t, lambda a, h: h.__setitem__(key, value)))
    close(t.gradient(np.array([0.5, -1.2, 2.0])), fd_grad(f_blocks, np.array([0.5, -1.2, 2.0])),
          rtol=1e-6, atol=1e-7)


def test_saved_op_codes_follow_their_names():
    # a file written by a fastad whose op table had another order (ops are
    # added over time) loads by the ops' names, scalar nodes and element-wise
    # blocks alike
    x = np.array([0.5, -1.2, 2.0])
    t = fad.record(f_blocks, x)
    t2 = fad.record(f_scalar, PROGRAMS[0][1])
    for tape, at in ((t, x), (t2, PROGRAMS[0][1])):
        def permuted(arrays, header):
            names = header["ops"]
            order = list(range(len(names)))[::-1]          # new code -> old code
            where = {old: new for new, old in enumerate(order)}
            header["ops"] = [names[old] for old in order]
            arrays["op"] = np.array([where[c] for c in arrays["op"]], dtype=np.uint8)
            for b in header["blocks"]:                     # a stale code in a block: remapped
                if "op" in b.get("state", {}):
                    b["state"]["op"] = 0
        back = fad.load_tape(_edit_saved(tape, permuted))
        close(back.gradient(at), tape.gradient(at), rtol=1e-15, atol=0)
        close(back(at), tape(at), rtol=1e-15, atol=0)

    def unknown(arrays, header):
        header["ops"][int(arrays["op"][-1])] = "teleport"

    with pytest.raises(ValueError, match="teleport"):
        fad.load_tape(_edit_saved(t2, unknown))


# ------------------------------------------------------------ the checks, one class each

def _load(parts):
    return _rebuild(*parts)


def test_unknown_op_code_is_refused():
    parts = _parts(fad.record(f_scalar, PROGRAMS[0][1]))
    op = bytearray(parts[0])
    op[6] = 250
    parts[0] = bytes(op)
    with pytest.raises(ValueError, match="unknown op code 250"):
        _load(parts)


@pytest.mark.parametrize("field,value", [("a0", 9), ("a1", 5), ("a0", -1), ("a1", 2**31 - 1),
                                         ("a1", -7)])
def test_argument_slots_must_be_earlier(field, value):
    parts = _parts(fad.record(f_scalar, PROGRAMS[0][1]))
    node = _nodes(parts)
    node[field][5] = value              # slot 5: mul(v0, v4)
    parts[1] = node.tobytes()
    with pytest.raises(ValueError, match="slot 5 .* earlier slot"):
        _load(parts)


def test_unary_and_const_nodes_are_checked():
    t = fad.record(lambda x: fad.sin(x[0]) + fad.stack([x[1], 2.0]).sum(), np.array([1.0, 2.0]))
    parts = _parts(t)
    names = [t.node(i)[0] for i in range(t.n_nodes)]
    node = _nodes(parts)
    node["a1"][names.index("sin")] = 0          # a unary node with a second argument
    with pytest.raises(ValueError, match="earlier slot"):
        _load(parts[:1] + [node.tobytes()] + parts[2:])
    node = _nodes(parts)
    node["a0"][names.index("const")] = 0        # a constant must point at itself
    with pytest.raises(ValueError, match="earlier slot"):
        _load(parts[:1] + [node.tobytes()] + parts[2:])


@pytest.mark.parametrize("n_inputs,match", [(5, "inputs"), (3, "input after"), (-1, "n_inputs"),
                                            (10**6, "n_inputs")])
def test_n_inputs_is_checked(n_inputs, match):
    parts = _parts(fad.record(f_scalar, PROGRAMS[0][1]))
    parts[3] = n_inputs
    with pytest.raises(ValueError, match=match):
        _load(parts)


@pytest.mark.parametrize("out", [np.array(10**6), np.array(-1), np.array(2.5), "3"])
def test_output_slots_are_checked(out):
    parts = _parts(fad.record(f_scalar, PROGRAMS[0][1]))
    parts[6] = out
    with pytest.raises(ValueError, match="output slot"):
        _load(parts)


@pytest.mark.parametrize("cut", ["op", "node", "val"])
def test_buffer_sizes_must_agree(cut):
    parts = _parts(fad.record(f_scalar, PROGRAMS[0][1]))
    i = ["op", "node", "val"].index(cut)
    parts[i] = parts[i][:-3]
    with pytest.raises(ValueError, match="sizes disagree"):
        _load(parts)


def test_block_records_are_checked():
    base = fad.record(f_blocks, np.array([0.5, -1.2, 2.0]))

    def damaged(edit):
        parts = _parts(base)
        edit(parts[7])
        return parts

    def operand_slot(blocks):
        idx = blocks[0].b.idx.copy()
        idx[0] = 10**6
        blocks[0].b.idx = idx

    def forward_read(blocks):           # a block reading its own (later) slots
        idx = blocks[1].x.idx.copy()
        idx[0] = blocks[1].start
        blocks[1].x.idx = idx

    cases = [
        (lambda b: setattr(b[0], "stop", b[0].stop + 1), "shape|block slot|inside"),
        (lambda b: setattr(b[0], "start", -3), "start"),
        (lambda b: b.pop(0), "owned by a block"),
        (lambda b: b.reverse(), "inside the block before"),
        (lambda b: setattr(b[1], "shape", (7,)), "shape"),
        (operand_slot, "reads a slot outside"),
        (forward_read, "reads a slot outside"),
        (lambda b: setattr(b[1], "name", "system"), "element-wise op"),
        (lambda b: b.__setitem__(0, object()), "not a fastad block"),
    ]
    for edit, match in cases:
        with pytest.raises(ValueError, match=match):
            _load(damaged(edit))
    x1 = np.array([0.4, -1.0, 1.5])
    np.testing.assert_allclose(base.gradient(x1), fd_grad(f_blocks, x1), rtol=1e-6, atol=1e-7)


def test_scalar_primitive_slots_are_checked():
    t = fad.record(lambda x: hcube(x[0]) * x[1], np.array([0.5, 2.0]))
    parts = _parts(t)
    blk = parts[7][0]
    blk.slots = [blk.start + 5]
    with pytest.raises(ValueError, match="argument slot"):
        _load(parts)


def test_a_sealed_block_read_otherwise_is_unsealed():
    """A damaged hand-off mark costs speed, never the right answer."""
    x0 = np.array([0.5, -1.2, 2.0])
    parts = _parts(fad.record(f_blocks, x0))
    for blk in parts[7]:
        blk.sealed = True
        for o in blk.operands():
            o.src = parts[7][0]           # links to the wrong producer
    t = _load(parts)
    x1 = np.array([0.4, -1.0, 1.5])
    np.testing.assert_allclose(t.gradient(x1), fd_grad(f_blocks, x1), rtol=1e-6, atol=1e-7)


def test_flipped_bytes_of_the_issue_example_raise_or_replay():
    t = fad.record(lambda x: x[0] * fad.sin(x[1]) + x[2] * x[3], np.arange(4.0))
    data = pickle.dumps(t)
    rng = np.random.default_rng(18)
    raised = 0
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(3):
            bad[rng.integers(len(bad))] ^= 0xFF
        try:
            pickle.loads(bytes(bad)).gradient(np.arange(4.0))
        except Exception:
            raised += 1
    assert raised > 0
    close(t.gradient(np.arange(4.0)), [np.sin(1.0), 0.0, 3.0, 2.0])


# ------------------------------------------------------------ primitives by name

def test_lambda_or_local_primitive_fails_at_dumps_naming_it():
    lam = fad.primitive(lambda x: x * 2.0)
    lam.defvjp(lambda ybar, y, x: 2.0 * ybar)

    @fad.primitive
    def local_double(x):
        return x * 2.0

    local_double.defvjp(lambda ybar, y, x: 2.0 * ybar)
    for prim, name in ((lam, "<lambda>"), (local_double, "local_double")):
        t = fad.record(lambda x: prim(x[0]) + prim(x) @ x, np.array([1.0, 2.0]))
        with pytest.raises(pickle.PicklingError, match=f"primitive '{name}'"):
            pickle.dumps(t)
        with pytest.raises(pickle.PicklingError, match="module level"):
            t.save(io.BytesIO())
    t = fad.record(lambda x: hcube(x[0]) * x[1], np.array([0.5, 2.0]))
    close(pickle.loads(pickle.dumps(t)).gradient(np.array([1.0, 2.0])), [6.0, 1.0])


# ------------------------------------------------------------ the fuzzer

def run_fuzzer(seconds, seed, tmp_path):
    log = tmp_path / f"fuzz{seed}.log"
    env = dict(os.environ, TAPE_FUZZ_LOG=str(log))
    r = subprocess.run([sys.executable, os.path.join(HERE, "tape_fuzzer.py"), str(seconds),
                        str(seed)], capture_output=True, text=True, env=env,
                       timeout=seconds + 120)
    last = log.read_text().splitlines()[-1:] if log.exists() else []
    assert r.returncode == 0, f"the fuzzer died ({r.returncode}) at {last}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_fuzz_damaged_tapes_never_crash(tmp_path):
    report = run_fuzzer(6, 20261207, tmp_path)
    assert all(n > 0 for n in report["tried"].values()), report
    assert len(report["tried"]) == 11


def test_a_tape_pickle_holds_no_numpy_pickles():
    """A pickled tape is its saved bytes: unpickling it goes through load_tape's
    checks and never through NumPy's own array/dtype unpickling."""
    for f, x0 in PROGRAMS:
        data = pickle.dumps(fad.record(f, x0))
        assert b"numpy" not in data and b"_load_saved" in data
        close(pickle.loads(data)(x0), f(x0))


def test_a_tape_the_save_format_cannot_hold_still_pickles():
    marker = object()

    @fad.primitive
    def tagged(x, tag=None):
        return x * 2.0

    tagged.defvjp(lambda ybar, y, x, tag=None: 2.0 * ybar)
    globals()["tagged_module_level"] = tagged      # findable by name for the pickle
    tagged.fn.__qualname__ = "tagged_module_level"
    try:
        t = fad.record(lambda x: tagged(x[0], tag=marker) * x[1], np.array([1.0, 3.0]))
        with pytest.raises(TypeError, match="cannot store"):
            t.save(io.BytesIO())
        data = pickle.dumps(t)                         # as its parts (trusted use)
        assert b"_rebuild" in data
        close(pickle.loads(data).gradient(np.array([2.0, 5.0])), [10.0, 4.0])
        t2 = fad.record(lambda x: tagged(x[0], tag=(1, "a")) * x[1], np.array([1.0, 3.0]))
        close(pickle.loads(pickle.dumps(t2)).gradient(np.array([2.0, 5.0])), [10.0, 4.0])
    finally:
        del globals()["tagged_module_level"]
