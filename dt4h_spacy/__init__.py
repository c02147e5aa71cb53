"""spaCy component for BSC-NLP4BIA's multi-task clinical NER checkpoints (DT4H XLM-R)."""

from .component import DEFAULT_BASE_MODEL, DEFAULT_CHECKPOINT, DiseaseRecognizer, make_dt4h_disease
from .errors import CheckpointError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_MODEL",
    "DEFAULT_CHECKPOINT",
    "CheckpointError",
    "DiseaseRecognizer",
    "make_dt4h_disease",
    "__version__",
]
