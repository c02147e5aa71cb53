"""Exceptions that name the problem and the way out."""


class CheckpointError(ValueError):
    """A checkpoint or base model cannot be used as given."""


class EvaluationError(ValueError):
    """Gold and predictions that cannot be scored against each other."""


class UnsupportedLanguageError(ValueError):
    """A document in a language none of a component's heads reads (``unsupported="raise"``)."""


class ContextRulesError(ValueError):
    """A context rule file (or rule set) that cannot be used; the message names the file and line."""


class TrainingDataError(ValueError):
    """A training corpus the component cannot learn from as given (named doc, and how to fix it)."""


class RecordError(ValueError):
    """A mention row (JSONL/Parquet) that cannot be read back; the message names where it is and what is wrong."""
