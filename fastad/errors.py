"""Exceptions fastad raises beyond the built-in ones."""


class TapeError(RuntimeError):
    """A Var or Array was used outside its recording, or two recordings were mixed."""


class BranchChangedError(TapeError):
    """A replayed tape's recorded comparison came out differently at the new input."""


class ValueReadError(BranchChangedError):
    """A tape whose recording read a concrete value (.value, so its path may
    depend on the numbers unrecorded) was replayed at another input."""
