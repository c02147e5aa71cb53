"""spaCy component for BSC-NLP4BIA's multi-task clinical NER checkpoints (DT4H XLM-R)."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Imported on first use: spaCy imports this package for the displaCy colours entry point on
# every entity render, which must not pull in torch and transformers.
_LAZY = {
    "DEFAULT_BASE_MODEL": "model",
    "DEFAULT_CHECKPOINT": "component",
    "DiseaseRecognizer": "component",
    "make_dt4h_disease": "component",
    "CheckpointError": "errors",
    "annotate_table": "api",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
