"""Exceptions that name the problem and the way out."""


class CheckpointError(ValueError):
    """A checkpoint or base model cannot be used as given."""
