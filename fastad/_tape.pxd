# The public Tape (fastad/_tape.pyx): a Player (fastad/_player.pxd) with the
# documented API.  `from fastad._tape cimport *` gives the whole stack: Tape,
# Player, Work, Recorder, TapeBuf, tape_push and the op table.
from fastad._player cimport *


cdef class Tape(Player):
    pass
