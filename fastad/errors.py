"""Exceptions fastad raises beyond the built-in ones."""


class TapeError(RuntimeError):
    """A Var or Array was used outside its recording, or two recordings were mixed."""


class BranchChangedError(TapeError):
    """A replayed tape's recorded comparison came out differently at the new input."""
