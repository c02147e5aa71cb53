"""The service's settings: limits, batching and what it may log, in one frozen object.

They travel to uvicorn's worker processes as JSON in :data:`ENVIRONMENT_VARIABLE` (workers
import the app by name, so they cannot be handed Python objects).
"""

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

ENVIRONMENT_VARIABLE = "DT4H_SPACY_SERVE"
MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """What the service loads and how much it accepts. The defaults are those of ``serve --help``."""

    model: Optional[str] = None
    checkpoint: Optional[str] = None
    base_model: Optional[str] = None
    context: bool = False
    device: str = "cpu"
    max_body_bytes: int = 10 * MIB  # 413 above this
    max_text_chars: int = 1_000_000  # per document; 413 above this
    max_documents: int = 1000  # per request; 413 above this
    max_batch: int = 32  # documents per nlp.pipe call across requests
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for others
    queue_size: int = 256  # requests waiting for the model; 503 + Retry-After beyond
    timeout_s: float = 120.0  # per request, queueing included; 504 after it
    log_text: bool = False  # log note text (patient data): never unless asked
    api_key_file: Optional[str] = None  # Bearer key required on every route but GET /

    def to_environment(self) -> Dict[str, str]:
        return {ENVIRONMENT_VARIABLE: json.dumps(asdict(self))}

    @classmethod
    def from_environment(cls, environ: Any = os.environ) -> "ServeSettings":
        return cls(**json.loads(environ.get(ENVIRONMENT_VARIABLE, "{}")))


def read_api_key(path: str) -> str:
    """The key in ``path`` (surrounding whitespace dropped); a ValueError naming the file when it is empty."""
    with open(path, encoding="utf-8") as handle:
        key = handle.read().strip()
    if not key:
        raise ValueError(f"{path} holds no API key; write the key (one line) into it.")
    return key
