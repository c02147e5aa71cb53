"""Task names and BIO label schemes, as the DT4H authors define them.

A head is named ``<entity>_<lang>_ner`` (``disease_es_ner``). Its label ids are the
*sorted* label strings (``B-DISEASE``, ``I-DISEASE``, ``O``), because the authors built
``label2id`` from ``sorted(set(labels))`` in training.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy

TASK_PATTERN = re.compile(r"^(?P<entity>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_(?P<lang>[a-z]{2,3})_ner$")

OUTSIDE = 0
BEGIN = 1
INSIDE = 2


def entity_from_task(task: str) -> str:
    """``disease_es_ner`` → ``DISEASE``; a bare name (``symptom``) is its own entity."""
    match = TASK_PATTERN.match(task)
    if match:
        return match.group("entity").upper()
    if task.endswith("_ner"):
        task = task[: -len("_ner")]
    return task.upper()


def lang_from_task(task: str) -> Optional[str]:
    """``disease_es_ner`` → ``es``; None for a head that names no language."""
    match = TASK_PATTERN.match(task)
    return match.group("lang") if match else None


def default_labels(task: str) -> Tuple[str, ...]:
    entity = entity_from_task(task)
    return tuple(sorted((f"B-{entity}", f"I-{entity}", "O")))


def tasks_by_lang(tasks: Iterable[str]) -> Dict[str, str]:
    """Map each language to its head, for heads named ``<entity>_<lang>_ner``."""
    mapping: Dict[str, str] = {}
    for task in sorted(tasks):
        lang = lang_from_task(task)
        if lang is None:
            continue
        if lang in mapping:
            raise ValueError(
                f"Heads {mapping[lang]!r} and {task!r} both serve language {lang!r}. "
                "Choose one with the `tasks` config, e.g. tasks = {\"" + lang + "\": \"" + task + "\"}."
            )
        mapping[lang] = task
    return mapping


@dataclass(frozen=True)
class LabelScheme:
    """BIO labels of one head, with per-id lookup arrays so decoding needs no string work."""

    labels: Tuple[str, ...]

    def __post_init__(self) -> None:
        for label in self.labels:
            if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2):
                raise ValueError(
                    f"Label {label!r} is not BIO. Labels must be 'O', 'B-<TYPE>' or 'I-<TYPE>' "
                    f"(got {list(self.labels)})."
                )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Labels must be unique, got {list(self.labels)}.")
        if "O" not in self.labels:
            # a word the tokenizer drops entirely is labelled O, so every head needs one
            raise ValueError(f"Labels must include 'O' (outside any entity), got {list(self.labels)}.")

    @classmethod
    def for_task(cls, task: str, labels: Optional[Sequence[str]] = None) -> "LabelScheme":
        return cls(tuple(labels) if labels else default_labels(task))

    @property
    def entity_types(self) -> Tuple[str, ...]:
        return tuple(sorted({label[2:] for label in self.labels if label != "O"}))

    @cached_property
    def kinds(self) -> numpy.ndarray:
        """Per label id: OUTSIDE, BEGIN or INSIDE."""
        prefix = {"O": OUTSIDE, "B": BEGIN, "I": INSIDE}
        return numpy.array([prefix[label[0]] for label in self.labels], dtype=numpy.int8)

    @cached_property
    def types(self) -> Tuple[str, ...]:
        """Per label id: the entity type ('' for O)."""
        return tuple(label[2:] for label in self.labels)
