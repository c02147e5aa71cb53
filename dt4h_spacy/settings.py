"""The ``dt4h_disease`` component's options, written once.

:class:`DiseaseSettings` is the single source: the factory's signature (which spaCy
validates a config against), ``DEFAULT_CONFIG``, the component's ``cfg`` and the README's
configuration table are all derived from it or tested against it, so an option added here
is an option everywhere.
"""

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Union, get_type_hints

from .decoding import ORPHAN_I_MODES
from .inference import check_speed_options, torch_device
from .windows import check_window_settings

DEFAULT_CHECKPOINT = "BSC-NLP4BIA/DT4H_XLM-R_mtl_es-it-ro_disease"
DEFAULT_SPANS_KEY = "dt4h"
COMPAT_MODES = ("words", "authors")
UNSUPPORTED_POLICIES = ("raise", "skip", "warn")
SCORER = {"@scorers": "spacy.ner_scorer.v1"}
# The settings of a process that runs the CPU steps only (tokenizer, windows, decoding; the
# network's forward pass runs elsewhere): its copy of the weights stays on the CPU, as stored.
CPU_STEPS: Dict[str, Any] = {"device": "cpu", "precision": "fp32", "quantize": False}


@dataclass(frozen=True)
class DiseaseSettings:
    """Every option of ``dt4h_disease``, in the order of the README table; checked on creation."""

    checkpoint: str = DEFAULT_CHECKPOINT
    checkpoint_file: Optional[str] = None
    base_model: Optional[str] = None
    tasks: Optional[Dict[str, Union[str, List[str]]]] = None
    heads: Optional[List[str]] = None
    labels: Optional[List[str]] = None
    spans_key: str = DEFAULT_SPANS_KEY
    orphan_i: str = "ignore"
    compat: str = "words"
    overwrite_ents: bool = False
    threshold: float = 0.0
    batch_size: Optional[int] = None
    max_batch_subwords: Optional[int] = 16384
    max_length: int = 512
    stride: int = 128
    device: str = "cpu"
    precision: str = "fp32"
    quantize: bool = False
    num_threads: Optional[int] = None
    allow_unsafe_pickle: bool = False
    unsupported: str = "warn"

    def __post_init__(self) -> None:
        # Copies, so a caller's list or dict cannot change the settings afterwards.
        for name in ("heads", "labels"):
            value = getattr(self, name)
            object.__setattr__(self, name, list(value) if value else None)
        object.__setattr__(self, "tasks", dict(self.tasks) if self.tasks else None)
        choices = {"orphan_i": ORPHAN_I_MODES, "compat": COMPAT_MODES, "unsupported": UNSUPPORTED_POLICIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.compat == "authors" and self.orphan_i != "ignore":
            raise ValueError(
                "compat='authors' reads BIO as the authors' script does (orphan_i='ignore'); "
                f"drop orphan_i={self.orphan_i!r} or use compat='words'."
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (a span._.dt4h_score), got {self.threshold}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (or null: by device), got {self.batch_size}.")
        if self.max_batch_subwords is not None and self.max_batch_subwords < 1:
            raise ValueError(
                f"max_batch_subwords must be at least 1 (or null for no cap), got {self.max_batch_subwords}."
            )
        if not self.spans_key:
            raise ValueError("spans_key must name a doc.spans group, e.g. 'dt4h'.")
        check_window_settings(self.max_length, self.stride)
        if self.device != "auto":  # "auto" is only known at load time, where the check runs again
            check_speed_options(torch_device(self.device), self.precision, self.quantize, self.num_threads)

    def to_cfg(self) -> Dict[str, Any]:
        """The settings as plain data (the component's ``cfg``, a config block)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "DiseaseSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "DiseaseSettings":
        """Settings from a ``cfg``; keys that are not options (e.g. ``scorer``) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})


def default_config() -> Dict[str, Any]:
    """The factory's ``default_config``: every option's default, plus the scorer."""
    return {**DiseaseSettings().to_cfg(), "scorer": dict(SCORER)}


def with_settings_signature(factory: Callable) -> Callable:
    """Give ``factory(nlp, name, *, scorer, **options)`` a signature naming each option with
    its type, so spaCy validates a config's values (``threshold = "high"`` is refused) and
    lists the options, while the options themselves are written only in :class:`DiseaseSettings`."""
    from spacy.language import Language

    hints = get_type_hints(DiseaseSettings)
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("nlp", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Language),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        *(inspect.Parameter(f.name, keyword, annotation=hints[f.name]) for f in dataclasses.fields(DiseaseSettings)),
        inspect.Parameter("scorer", keyword, annotation=Optional[Callable]),
    ]
    factory.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return factory
