"""Evaluate a tape, or any function of one point, over many points with Dask.

    import fastad as fad
    import fastad.dask as fdask
    from dask.distributed import Client

    client = Client()                           # or Client("scheduler-address:8786")
    tape = fad.record(f, x0)
    G = fdask.map_tape(tape, X, "gradient")     # X (b,) + x0.shape, NumPy or Dask
    G.compute()                                 # (b,) + x0.shape

`map_tape` ships the tape to each worker once (client.scatter with
broadcast=True: the tasks hold a reference to it, not its bytes), maps the
batched replay (`tape.gradient(X, batch=True)` and its siblings) over the
chunks of X along its first axis, and returns a Dask array.  Each task runs
one chunk in compiled code on `threads` threads (1 by default: Dask already
runs one task per worker thread).  `map_points` does the same for any
function of one point (`fad.grad(f)`, `fad.hessian(f)`, ...), called point by
point in each task; recording a tape once and using map_tape is much faster
when f's branches do not depend on x.

Without a Dask client running, the local Dask scheduler is used (the tape is
then one key of the graph, which every task reads).  Needs
`pip install "fastad[dask]"` (or `pip install "dask[distributed]"`); this
module imports Dask only when called.
"""
import numpy as np

__all__ = ["map_tape", "map_points"]

_METHODS = ("value", "gradient", "jvp", "vjp", "hvp", "jacobian")


def _dask():
    """dask.array and dask.distributed's client (None if there is none or
    distributed is missing), or an ImportError saying how to install Dask."""
    try:
        import dask.array as da
    except ImportError as e:
        raise ImportError(
            "fastad.dask needs Dask: pip install \"fastad[dask]\" "
            "(or pip install \"dask[distributed]\")") from e
    try:
        from distributed import get_client
        client = get_client()
    except (ImportError, ValueError):
        client = None
    return da, client


def _points_array(da, X, name, chunk_size, b=None):
    """X (NumPy or Dask) as a Dask array chunked along its first axis only."""
    if isinstance(X, da.Array):
        if X.ndim == 0:
            raise ValueError(f"fastad.dask: {name} must have a leading axis of points, "
                             f"got a 0-d array")
        arr = X.rechunk({i: -1 for i in range(1, X.ndim)})
        if chunk_size is not None:
            arr = arr.rechunk({0: chunk_size})
    else:
        a = np.asarray(X)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"fastad.dask: {name} must be real numbers, got dtype {a.dtype}")
        if a.ndim == 0:
            raise ValueError(f"fastad.dask: {name} must have a leading axis of points, "
                             f"got a 0-d array")
        if chunk_size is None:
            chunk_size = max(1, min(a.shape[0], 1000))
        arr = da.from_array(np.asarray(a, dtype=np.float64),
                            chunks=(chunk_size,) + a.shape[1:])
    if b is not None and arr.shape[0] != b:
        raise ValueError(f"fastad.dask: {name} has {arr.shape[0]} points but X has {b}")
    return arr.astype(np.float64)


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"fastad.dask: chunk_size must be a positive integer, "
                         f"got {chunk_size!r}")
    return int(chunk_size)


def _ship(da, client, obj):
    """obj on every worker once: a broadcast scatter (distributed), or one
    graph key every task reads (the local scheduler)."""
    if client is not None:
        # (hash=False: a fresh key per call; a key shared with a previous call
        # can be released by that call's cleanup just as this one uses it)
        return client.scatter(obj, broadcast=True, hash=False)
    import dask
    return dask.delayed(obj, pure=True)


def _result_shape(tape, method, stacked_k):
    """The trailing shape of one point's result."""
    ins = () if tape.in_shape is None else tuple(tape.in_shape)
    outs = tuple(tape.out_shape)
    lead = () if stacked_k is None else (stacked_k,)
    return {"value": outs, "gradient": ins, "jvp": lead + outs, "vjp": lead + ins,
            "hvp": lead + ins, "jacobian": outs + ins}[method]


def _tape_block(*parts, block_info=None):
    """One chunk (2-d views of X and V, then tape, method, mode, threads,
    on_branch_change and the arrays' point shapes): the batched method, flat
    rows (plus an ok column for 'mask')."""
    tape, method, mode, threads, on_branch, shapes = parts[-6:]
    arrays = [a.reshape((a.shape[0],) + tuple(sh)) for a, sh in zip(parts[:-6], shapes)]
    x = arrays[0]
    s = arrays[1] if len(arrays) > 1 else None
    start = block_info[0]["array-location"][0][0] if block_info else 0
    kw = dict(batch=True, workers=threads, on_branch_change="mask")
    if method == "value":
        res, ok = tape(x, **kw)
    elif method == "gradient":
        res, ok = tape.gradient(x, **kw)
    elif method == "jacobian":
        res, ok = tape.jacobian(x, mode, **kw)
    else:
        res, ok = getattr(tape, method)(x, s, **kw)
    res = np.asarray(res, dtype=np.float64)
    res = res.reshape(x.shape[0], int(np.prod(res.shape[1:], dtype=np.int64)))
    if on_branch == "raise" and not ok.all():
        p = int(np.argmin(ok))
        try:                                # the point's own message
            tape(x[p:p + 1], batch=True)
            msg = "its recorded comparisons come out otherwise"
        except Exception as e:              # noqa: BLE001 - its text is the message
            msg = str(e).split(": ", 2)[-1]
        from fastad.errors import BranchChangedError
        raise BranchChangedError(f"fastad.dask: point {start + p} of X takes another "
                                 f"branch: {msg}")
    if on_branch == "mask":
        res = np.concatenate([res, ok.astype(np.float64)[:, None]], axis=1)
    return res


def map_tape(tape, X, method="gradient", V=None, *, mode="auto", client=None,
             chunk_size=None, threads=1, on_branch_change="raise"):
    """tape.<method>(X, batch=True) over the chunks of X on a Dask cluster.

    tape: a fad.Tape with array (not pytree) input and output.
    X: (b,) + x.shape, a NumPy or Dask array; chunked along its first axis
    (chunk_size points per task; a Dask array keeps its chunks unless
    chunk_size is given; NumPy: 1,000 by default).
    method: 'value' (tape(x)), 'gradient', 'jvp', 'vjp', 'hvp' or 'jacobian'.
    V: for jvp and hvp the directions, for vjp the cotangents, one per point
    ((b,) + shape) or k per point ((b, k) + shape), chunked as X.
    mode: the Jacobian's ('auto', 'fwd', 'rev').
    client: a dask.distributed Client (default: the current one; none:
    Dask's local scheduler); the tape is scattered to it, so compute the
    result there (`.compute()` when it is the default client, else
    `client.compute(result)`).  A NumPy X travels inside the graph; for
    large X, make it a Dask array on the cluster first (client.scatter,
    da.from_array of data the workers can read, or .persist()).  threads: the batch's threads in each task.
    on_branch_change: 'raise' (a BranchChangedError naming the point when
    the result is computed: the first in its chunk of the chunk that failed
    first, as the chunks run in parallel) or 'mask': then returns (result, ok) with ok a
    boolean Dask array of the points that replayed (the others' rows NaN);
    compute both together (dask.compute(result, ok)) to run the tasks once.

    Returns a Dask array of shape (b,) + the method's shape for one point
    (as tape.<method>(X, batch=True) returns)."""
    import fastad as fad
    da, current = _dask()
    client = client if client is not None else current
    if not isinstance(tape, fad.Tape):
        raise TypeError(f"fastad.dask.map_tape: tape must be a fad.Tape (fad.record(f, x)), "
                        f"got {type(tape).__name__}; for any function use map_points")
    if method not in _METHODS:
        raise ValueError(f"fastad.dask.map_tape: method must be one of {_METHODS}, "
                         f"got {method!r}")
    if tape.in_tree is not None or tape.out_tree is not None:
        raise ValueError("fastad.dask.map_tape: the tape's input or output is a pytree; "
                         "Dask arrays hold arrays: record f at an array x with an array output")
    if on_branch_change not in ("raise", "mask"):
        raise ValueError(f"fastad.dask.map_tape: on_branch_change must be 'raise' or 'mask', "
                         f"got {on_branch_change!r}")
    chunk_size = _check_chunk_size(chunk_size)
    fad._batching.check_options("map_tape", threads, on_branch_change)
    if method == "jacobian":
        fad._tape.choose_mode(mode, 1, 1)           # (checks it)
    ins = () if tape.in_shape is None else tuple(tape.in_shape)
    Xd = _points_array(da, X, "X", chunk_size)
    if Xd.shape[1:] != ins:
        raise ValueError(f"fastad.dask.map_tape: X must have shape (b,) + {ins}, "
                         f"got {Xd.shape}")
    b = Xd.shape[0]
    stacked_k = None
    args = [Xd]
    if method in ("jvp", "vjp", "hvp"):
        if V is None:
            raise ValueError(f"fastad.dask.map_tape: method {method!r} needs V "
                             f"({'cotangents' if method == 'vjp' else 'directions'})")
        want = tuple(tape.out_shape) if method == "vjp" else ins
        Vd = _points_array(da, V, "V", None, b).rechunk({0: Xd.chunks[0]})
        if Vd.shape[1:] == want:
            pass
        elif Vd.ndim == len(want) + 2 and Vd.shape[2:] == want:
            stacked_k = Vd.shape[1]
        else:
            raise ValueError(f"fastad.dask.map_tape: V must have shape (b,) + {want} or "
                             f"(b, k) + {want}, got {Vd.shape}")
        # the points' axes line up with X's: (b, [k,] ...) -> one index per axis
        args.append(Vd)
    elif V is not None:
        raise ValueError(f"fastad.dask.map_tape: method {method!r} takes no V")
    shape = _result_shape(tape, method, stacked_k)
    size = int(np.prod(shape, dtype=np.int64))
    width = size + (1 if on_branch_change == "mask" else 0)
    shipped = _ship(da, client, tape)
    # 2-d views (points, numbers): one block per chunk of points, aligned
    flats = [a.reshape((b, int(np.prod(a.shape[1:], dtype=np.int64)))) for a in args]
    shapes = [a.shape[1:] for a in args]
    flat = da.map_blocks(_tape_block, *flats, shipped, method, mode, threads, on_branch_change,
                         shapes, chunks=(Xd.chunks[0], (width,)), dtype=np.float64,
                         meta=np.empty((0, 0)))
    res = flat[:, :size].reshape((b,) + shape)
    if on_branch_change == "mask":
        return res, flat[:, size] != 0.0
    return res


def _points_block(x, fn, in_shape, out_shape):
    x = x.reshape((x.shape[0],) + tuple(in_shape))
    out = np.empty((x.shape[0],) + out_shape)
    for p in range(x.shape[0]):
        out[p] = np.asarray(fn(x[p]), dtype=np.float64).reshape(out_shape)
    return out.reshape(x.shape[0], int(np.prod(out_shape, dtype=np.int64)))


def map_points(fn, X, *, out_shape=None, client=None, chunk_size=None):
    """fn(x) at every point of X on a Dask cluster: fn is any function of
    one point returning an array (a fastad transform such as fad.grad(f),
    fad.jacobian(f), fad.hessian(f)).  fn is shipped to each worker once;
    each task calls it point by point over its chunk.

    X: (b,) + x.shape, NumPy or Dask (chunks as in map_tape).  out_shape:
    fn's result shape (default: found by calling fn at X's first point
    here).  Returns a Dask array (b,) + out_shape."""
    da, current = _dask()
    client = client if client is not None else current
    if not callable(fn):
        raise TypeError(f"fastad.dask.map_points: fn must be callable, got {type(fn).__name__}")
    chunk_size = _check_chunk_size(chunk_size)
    Xd = _points_array(da, X, "X", chunk_size)
    if out_shape is None:
        if Xd.shape[0] == 0:
            raise ValueError("fastad.dask.map_points: X has no points, so fn's result "
                             "shape is unknown; pass out_shape")
        out_shape = np.shape(fn(np.asarray(Xd[0].compute())))
    out_shape = tuple(int(s) for s in out_shape)
    shipped = _ship(da, client, fn)
    size = int(np.prod(out_shape, dtype=np.int64))
    b = Xd.shape[0]
    X2 = Xd.reshape((b, int(np.prod(Xd.shape[1:], dtype=np.int64))))
    flat = da.map_blocks(_points_block, X2, shipped, Xd.shape[1:], out_shape,
                         chunks=(Xd.chunks[0], (size,)), dtype=np.float64,
                         meta=np.empty((0, 0)))
    return flat.reshape((b,) + out_shape)
