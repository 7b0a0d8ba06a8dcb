# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled steps of fad.scan (fastad.checkpointing): a step tape of
scalar ops replayed many times, its outputs fed back to its inputs.

A StepKernel owns its own value, partial and lane buffers (so several can
replay one step tape at once) and runs, with the GIL released and no
Python per step:

  advance            k steps forward from a state (the carry, and with kt
                     tangent lanes the carry's tangents), optionally
                     keeping every intermediate state (a checkpoint row)
  reverse_segment    the reverse sweep over l steps from a stored state,
                     either keeping all l states (enough memory) or
                     recomputing each from the segment's start (none):
                     revolve's two base cases (fastad.checkpointing drives
                     the recursion between them)

A reverse step replays one step at its stored input (values and partials)
and pulls the carry's cotangent back through it: first order (k adjoint
lanes), or forward-over-reverse (one adjoint lane and kt adjoint tangents,
the carry's and parameters' tangents replayed alongside).
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp

from fastad._tape cimport Tape, TapeBuf, fad_node
from fastad._sweeps cimport FORWARD, REVERSE, SECOND, Sweep, run, sweep_over
from fastad.errors import BranchChangedError

cnp.import_array()


cdef class StepKernel:
    """Replays of one step tape (inputs: carry then parameters; outputs: the
    new carry).  Bounds are checked here, at the Python edge; the loops do not."""
    cdef Tape tape
    cdef readonly Py_ssize_t n, nin, nc, npar
    cdef Py_ssize_t* outs
    cdef fad_node* node          # partials of the last replayed step
    cdef double* val
    cdef double* tan             # kt tangent lanes per slot (kt > 0)
    cdef double* adj             # ka adjoint lanes per slot
    cdef double* adt             # kt adjoint tangents per slot (second order)
    cdef readonly Py_ssize_t kt, ka
    cdef bint second             # reverse steps are forward-over-reverse
    # the reverse's accumulators (owned by the caller; kept alive here)
    cdef object _bufs
    cdef double* cbar            # carry cotangent: nc x ka, or (second) nc
    cdef double* pbar            # parameter cotangent: npar x ka, or (second) npar
    cdef double* cbard           # second: the carry cotangent's tangents, nc x kt
    cdef double* pbard           # second: the parameters', npar x kt
    cdef readonly Py_ssize_t bad_step, bad_slot
    cdef readonly long long steps_run      # forward steps replayed (for tests, benchmarks)

    def __cinit__(self, Tape tape, Py_ssize_t nc):
        if tape.blocks:
            raise ValueError("fastad.scan: the step recorded array operations")
        outs = np.ascontiguousarray(tape.out_slots, dtype=np.intp).reshape(-1)
        if nc < 0 or nc > tape.n_inputs or outs.shape[0] != nc:
            raise ValueError(f"fastad.scan: the step has {outs.shape[0]} outputs for a "
                             f"carry of {nc} numbers")
        self.tape = tape
        self.n = tape.buf.n
        self.nin = tape.n_inputs
        self.nc = nc
        self.npar = self.nin - nc
        cdef Py_ssize_t n = self.n if self.n else 1, j
        self.outs = <Py_ssize_t*>malloc((nc if nc else 1) * sizeof(Py_ssize_t))
        self.node = <fad_node*>malloc(n * sizeof(fad_node))
        self.val = <double*>malloc(n * sizeof(double))
        if self.outs == NULL or self.node == NULL or self.val == NULL:
            raise MemoryError()
        for j in range(nc):
            if not 0 <= outs[j] < self.n:
                raise ValueError("fastad.scan: an output slot is out of range")
            self.outs[j] = outs[j]
        memcpy(self.val, tape.buf.val, self.n * sizeof(double))
        memcpy(self.node, tape.buf.node, self.n * sizeof(fad_node))

    def __dealloc__(self):
        free(self.outs)
        free(self.node)
        free(self.val)
        free(self.tan)
        free(self.adj)
        free(self.adt)

    cdef int _lanes(self, Py_ssize_t kt, Py_ssize_t ka) except -1:
        cdef Py_ssize_t n = self.n if self.n else 1
        if kt != self.kt:
            free(self.tan)
            free(self.adt)
            self.tan = self.adt = NULL
            self.kt = 0
            if kt:
                self.tan = <double*>malloc(n * kt * sizeof(double))
                self.adt = <double*>malloc(n * kt * sizeof(double))
                if self.tan == NULL or self.adt == NULL:
                    raise MemoryError()
                memset(self.tan, 0, n * kt * sizeof(double))
            self.kt = kt
        if ka != self.ka:
            free(self.adj)
            self.adj = <double*>malloc(n * (ka if ka else 1) * sizeof(double))
            if self.adj == NULL:
                raise MemoryError()
            self.ka = ka
        return 0

    def set_params(self, p, pdot=None):
        """Parameters (npar numbers) and, for kt tangent lanes, their
        tangents (npar, kt); sets the kernel's tangent lane count."""
        cdef const double[::1] pv = np.ascontiguousarray(p, dtype=np.float64).reshape(-1)
        if pv.shape[0] != self.npar:
            raise ValueError(f"fastad.scan: {pv.shape[0]} parameters, the step has {self.npar}")
        cdef Py_ssize_t j, l, kt = 0
        if self.npar:
            memcpy(self.val + self.nc, &pv[0], self.npar * sizeof(double))
        cdef const double[:, ::1] pd
        if pdot is not None:
            pd = np.ascontiguousarray(pdot, dtype=np.float64)
            kt = pd.shape[1]
            if pd.shape[0] != self.npar:
                raise ValueError("fastad.scan: parameter tangents of the wrong shape")
        self._lanes(kt, self.ka if self.ka else 1)
        for j in range(self.npar):
            for l in range(kt):
                self.tan[(self.nc + j) * kt + l] = pd[j, l]
        return None

    # ------------------------------------------------------------ one step

    cdef Py_ssize_t _fwd(self, double* state) noexcept nogil:
        """One step from state (nc values, then nc x kt tangents) to the next,
        in place; -1, or the step tape's comparison slot that changed."""
        cdef Py_ssize_t nc = self.nc, kt = self.kt, j, l
        cdef const Py_ssize_t* outs = self.outs
        cdef Sweep s = sweep_over(self.tape.buf.op, self.tape.buf.node, kt if kt else 1,
                                  self.nin, self.n)
        memcpy(self.val, state, nc * sizeof(double))
        s.recorded = self.tape.buf.val
        s.val = self.val
        s.out = self.node
        if kt:
            memcpy(self.tan, state + nc, nc * kt * sizeof(double))
            s.tan = self.tan
        cdef Py_ssize_t r = run(FORWARD, &s)
        if r >= 0:
            return r
        for j in range(nc):
            state[j] = self.val[outs[j]]
        for j in range(nc):
            for l in range(kt):
                state[nc + j * kt + l] = self.tan[outs[j] * kt + l]
        self.steps_run += 1
        return -1

    cdef Py_ssize_t _back(self, const double* state) noexcept nogil:
        """The reverse of the step whose input is state: the carry cotangent
        (cbar) becomes the input carry's, the parameters' is accumulated."""
        cdef Py_ssize_t nc = self.nc, kt = self.kt, ka = self.ka, n = self.n, j, l
        cdef Py_ssize_t nin = self.nin
        cdef const Py_ssize_t* outs = self.outs
        cdef Py_ssize_t r = self._replay_at(state)
        if r >= 0:
            return r
        cdef Sweep s = sweep_over(self.tape.buf.op, self.node, ka, nin, n)
        if not self.second:
            memset(self.adj, 0, n * ka * sizeof(double))
            for j in range(nc):
                for l in range(ka):
                    self.adj[outs[j] * ka + l] += self.cbar[j * ka + l]
            s.adj = self.adj
            run(REVERSE, &s)
            memcpy(self.cbar, self.adj, nc * ka * sizeof(double))
            for j in range(self.npar * ka):
                self.pbar[j] += self.adj[nc * ka + j]
            return -1
        memset(self.adj, 0, n * sizeof(double))
        memset(self.adt, 0, n * kt * sizeof(double))
        for j in range(nc):
            self.adj[outs[j]] += self.cbar[j]
            for l in range(kt):
                self.adt[outs[j] * kt + l] += self.cbard[j * kt + l]
        s.k = kt
        s.val = self.val
        s.tan = self.tan
        s.adj = self.adj
        s.adt = self.adt
        run(SECOND, &s)
        memcpy(self.cbar, self.adj, nc * sizeof(double))
        memcpy(self.cbard, self.adt, nc * kt * sizeof(double))
        for j in range(self.npar):
            self.pbar[j] += self.adj[nc + j]
        for j in range(self.npar * kt):
            self.pbard[j] += self.adt[nc * kt + j]
        return -1

    cdef Py_ssize_t _replay_at(self, const double* state) noexcept nogil:
        """Values, partials (and tangents) of the step at state, not advancing."""
        cdef Py_ssize_t kt = self.kt
        cdef Sweep s = sweep_over(self.tape.buf.op, self.tape.buf.node, kt if kt else 1,
                                  self.nin, self.n)
        memcpy(self.val, state, self.nc * sizeof(double))
        s.recorded = self.tape.buf.val
        s.val = self.val
        s.out = self.node
        if kt:
            memcpy(self.tan, state + self.nc, self.nc * kt * sizeof(double))
            s.tan = self.tan
        return run(FORWARD, &s)

    # ------------------------------------------------------------ the Python edge

    cdef int _raise(self, Py_ssize_t step, Py_ssize_t slot) except -1:
        self.bad_step, self.bad_slot = step, slot
        was = self.tape.buf.val[slot] != 0.0
        raise BranchChangedError(
            f"fastad.scan: at step {step} the step function's comparison at slot {slot} "
            f"({self.tape._describe(slot)}) came out {not was}, but it was {was} when the "
            f"step was recorded (at step 0): the step takes another branch there, so its "
            f"tape does not describe it. fad.scan needs a step whose branches do not depend "
            f"on the carry (use fad.where for a smooth choice), or call the step in a plain "
            f"Python loop (no checkpointing) where they do.")

    cdef double* _state(self, cnp.ndarray state) except NULL:
        if state.dtype != np.float64 or not state.flags.c_contiguous or \
                state.ndim != 1 or state.shape[0] != self.nc * (1 + self.kt):
            raise ValueError("fastad.scan: internal state buffer of the wrong layout")
        return <double*>cnp.PyArray_DATA(state)

    def advance(self, cnp.ndarray state, Py_ssize_t steps, Py_ssize_t step0=0,
                cnp.ndarray store=None):
        """state advanced `steps` steps in place (step0: the index of the
        first, for messages); with store (rows >= steps - 1, the state's
        width), store[i] = the state after i + 1 steps, for i < rows."""
        cdef double* sp = self._state(state)
        cdef Py_ssize_t W = state.shape[0], rows = 0, i, r = -1
        cdef double* stp = NULL
        if steps < 0:
            raise ValueError("fastad.scan: a negative number of steps")
        if store is not None:
            if store.dtype != np.float64 or not store.flags.c_contiguous or store.ndim != 2 \
                    or store.shape[1] != W:
                raise ValueError("fastad.scan: internal store of the wrong layout")
            rows = min(store.shape[0], steps)
            stp = <double*>cnp.PyArray_DATA(store)
        with nogil:
            for i in range(steps):
                r = self._fwd(sp)
                if r >= 0:
                    break
                if i < rows:
                    memcpy(stp + i * W, sp, W * sizeof(double))
        if r >= 0:
            self._raise(step0 + i, r)
        return None

    def begin_reverse(self, cbar, pbar, cbard=None, pbard=None):
        """Accumulators of the reverse steps, updated in place: cbar (nc, ka)
        and pbar (npar, ka) for first order; with cbard (nc, kt) and pbard
        (npar, kt), forward-over-reverse (cbar and pbar then (nc,), (npar,))."""
        cdef cnp.ndarray c = cbar, p = pbar, cd, pd
        for a in (cbar, pbar, cbard, pbard):
            if a is not None and (a.dtype != np.float64 or not a.flags.c_contiguous):
                raise ValueError("fastad.scan: internal accumulator of the wrong layout")
        self.second = cbard is not None
        if self.second:
            cd, pd = cbard, pbard
            if c.size != self.nc or p.size != self.npar or cd.size != self.nc * self.kt \
                    or pd.size != self.npar * self.kt or self.kt == 0:
                raise ValueError("fastad.scan: accumulators do not match the step")
            self._lanes(self.kt, 1)
            self.cbard = <double*>cnp.PyArray_DATA(cd)
            self.pbard = <double*>cnp.PyArray_DATA(pd)
        else:
            if c.ndim != 2 or c.shape[0] != self.nc or p.ndim != 2 or \
                    p.shape[0] != self.npar or p.shape[1] != c.shape[1] or c.shape[1] < 1:
                raise ValueError("fastad.scan: accumulators do not match the step")
            self._lanes(self.kt, c.shape[1])
        self.cbar = <double*>cnp.PyArray_DATA(c)
        self.pbar = <double*>cnp.PyArray_DATA(p)
        self._bufs = (cbar, pbar, cbard, pbard)
        return None

    def reverse_segment(self, cnp.ndarray state, Py_ssize_t l, Py_ssize_t step0,
                        cnp.ndarray stored=None, bint keep=True):
        """Reverse steps step0 .. step0 + l - 1 (last first) from the stored
        state at step0.  keep: store the l - 1 later states (given in
        `stored`, when the forward already kept them) and reverse from them;
        otherwise recompute each step's input from state (l (l - 1) / 2
        steps: no memory)."""
        if self._bufs is None:
            raise ValueError("fastad.scan: begin_reverse first")
        cdef double* sp = self._state(state)
        cdef Py_ssize_t W = state.shape[0], i, j, r = -1, at = 0
        if l < 1:
            raise ValueError("fastad.scan: an empty segment")
        cdef cnp.ndarray work = np.empty(W)
        cdef double* wp = <double*>cnp.PyArray_DATA(work)
        cdef double* stp
        if keep:
            if stored is None:
                stored = np.empty((l - 1, W))
                memcpy(wp, sp, W * sizeof(double))
                stp = <double*>cnp.PyArray_DATA(stored)
                with nogil:
                    for i in range(l - 1):
                        r = self._fwd(wp)
                        if r >= 0:
                            at = step0 + i
                            break
                        memcpy(stp + i * W, wp, W * sizeof(double))
                if r >= 0:
                    self._raise(at, r)
            elif stored.dtype != np.float64 or not stored.flags.c_contiguous or \
                    stored.ndim != 2 or stored.shape[1] != W or stored.shape[0] < l - 1:
                raise ValueError("fastad.scan: internal store of the wrong layout")
            stp = <double*>cnp.PyArray_DATA(stored)
            with nogil:
                for i in range(l - 1, -1, -1):
                    r = self._back(stp + (i - 1) * W if i else sp)
                    if r >= 0:
                        at = step0 + i
                        break
            if r >= 0:
                self._raise(at, r)
            return None
        with nogil:
            for i in range(l - 1, -1, -1):
                memcpy(wp, sp, W * sizeof(double))
                for j in range(i):
                    r = self._fwd(wp)
                    if r >= 0:
                        at = step0 + j
                        break
                if r < 0:
                    r = self._back(wp)
                    at = step0 + i
                if r >= 0:
                    break
        if r >= 0:
            self._raise(at, r)
        return None
