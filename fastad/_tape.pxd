# The public Tape (fastad/_tape.pyx): a Player (fastad/_player.pxd) with the
# documented API.  `from fastad._tape cimport *` gives the whole stack: Tape,
# Player, Work, Recorder, TapeBuf, tape_push and the op table.
from fastad._player cimport *


cdef class Tape(Player):
    # fastad._pytree.Tree of the recorded x / output when it is a pytree (or a
    # float32 array), else None; in_shape / out_shape are then the flat ones
    cdef public object in_tree, out_tree
