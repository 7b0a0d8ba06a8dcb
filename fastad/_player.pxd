# Replays and sweeps of a recorded tape (fastad/_player.pyx): the Player is
# the Recorder plus per-call Work buffers, the replay at a new x and the
# sweeps over scalar segments (fastad._sweeps) and blocks.
from fastad._recorder cimport *   # Recorder, TapeBuf, view_of, fad_node, FAD_*


cdef class Work:
    cdef double* val
    cdef fad_node* node
    cdef double* adj
    cdef Py_ssize_t cap
    cdef public list states        # per block: what its forward returned at this replay
    cdef object scratch            # reusable float64 memory for tangents/adjoints (3 arrays)
    cdef int ensure(self, Py_ssize_t n) except -1
    cdef object zeros(self, Py_ssize_t rows, Py_ssize_t k, int which=*)
    cdef object scratch_array(self, Py_ssize_t rows, Py_ssize_t k, int which=*)


cdef int seed_rows(object tan, object seeds, Py_ssize_t lo) except -1


cdef class Player(Recorder):
    cdef object _needed            # forward mask of a replay of partials only (needed_mask)
    cdef Work _acquire(self)
    cdef void _release(self, Work w)
    cdef int _replay(self, Work w, object x) except -1
    cdef int _forward_seg(self, Work w, Py_ssize_t lo, Py_ssize_t hi) except -1
    cdef object _gather(self, const double* val)
    cdef int _reverse_run(self, const fad_node* nodes, object val, list states,
                          object adj, Py_ssize_t k, Py_ssize_t hi, Py_ssize_t lo,
                          object cot=*) except -1
    cdef void _reverse_seg(self, const fad_node* nodes, double* ap, Py_ssize_t k,
                           Py_ssize_t hi, Py_ssize_t lo)
    cdef int _tangent_run(self, const fad_node* nodes, object val, list states,
                          object tan, Py_ssize_t k, Py_ssize_t lo, Py_ssize_t hi) except -1
    cdef void _tangent_seg(self, const fad_node* nodes, double* tp, Py_ssize_t k,
                           Py_ssize_t lo, Py_ssize_t hi)
    cdef int _second_run(self, const fad_node* nodes, object val, list states, object tan,
                         object adj, object adt, Py_ssize_t k, Py_ssize_t hi,
                         Py_ssize_t lo) except -1
    cdef void _second_seg(self, const fad_node* nodes, const double* vp, object tan,
                          object adj, object adt, Py_ssize_t k, Py_ssize_t hi, Py_ssize_t lo)
    cdef object _tangents(self, const fad_node* nodes, object val, list states, object seeds,
                          object gather=*)
    cdef object _adjoints(self, const fad_node* nodes, object val, list states, object seeds,
                          object gather=*)
    cdef object _replay_tangents(self, Work w, x, seeds, gather, bint values=*)
    cdef object _sweep_at(self, x, seeds, bint forward)
