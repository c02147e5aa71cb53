"""spaCy component for BSC-NLP4BIA's multi-task clinical NER checkpoints (DT4H XLM-R)."""

import os
import sys
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# OpenMP threads waiting for work spin on their core (GNU libgomp's default); beside other
# work they take the CPU from the thread that holds the work, and on a busy machine a run went
# 10-40x slower than on one thread (issue 23, benchmarks/threads.py). PASSIVE waiting sleeps
# instead. libgomp reads it once, when torch loads it, so it is set here, before the CLI (or a
# script importing this package first) imports torch; a value the user set is kept.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
