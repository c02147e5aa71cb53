"""Exceptions that name the problem and the way out.

Everything below the CLI raises these; :mod:`dt4h_spacy.cli_options` turns them into the
commands' messages and exit codes, so engines and scripts work without the CLI library.
"""

from typing import Any, Optional, Tuple


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


class UsageError(Exception):
    """An option, INPUT or OUTPUT that cannot be used as given; ``option`` names it (``--resume``,
    ``INPUT``), so the CLI's usage message points at it (exit code 2)."""

    def __init__(self, message: str, option: Optional[str] = None) -> None:
        super().__init__(message)
        self.option = option

    def __reduce__(self) -> Tuple[Any, ...]:  # keeps ``option`` when Ray sends it from a worker
        return type(self), (str(self), self.option)


class RunError(RuntimeError):
    """A run that cannot go on (an unusable model, an OUTPUT that cannot be written, an
    interruption); ``exit_code`` is the CLI's: 1 input could not be used, 2 model or input
    unusable, 130 interrupted."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (str(self), self.exit_code)


class WorkerError(RuntimeError):
    """A CPU worker process (``--cpu-workers``) that died or failed; the message names it and what to do."""


class DeviceMemoryError(RunError):
    """A GPU without the memory for even one window (a larger batch is retried in halves first);
    the run stops with its committed parts kept for ``--resume`` (exit code 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message, exit_code)
