"""Task names, head routing and BIO label schemes, as the DT4H authors define them.

A per-language head is named ``<entity>_<lang>_ner`` (``disease_es_ner``) and serves its
language; a head named by its entity type alone (``disease``, ``symptom``: the multilingual
multilabel checkpoint, or a single-task Hugging Face checkpoint) serves every language.
Label ids of a ``.pt`` head are the *sorted* label strings (``B-DISEASE``, ``I-DISEASE``,
``O``), because the authors built ``label2id`` from ``sorted(set(labels))`` in training.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy

from .filenames import spacy_lang

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


def tasks_by_lang(tasks: Iterable[str]) -> Dict[str, Tuple[str, ...]]:
    """Map each language to its heads, for heads named ``<entity>_<lang>_ner``.

    A language may have several heads (``disease_es_ner`` and ``symptom_es_ner``), one per
    entity type; two heads of one type for one language would be read twice, so that needs
    the `tasks` config to choose.
    """
    mapping: Dict[str, Dict[str, str]] = {}
    for task in sorted(tasks):
        lang = lang_from_task(task)
        if lang is None:
            continue
        entity = entity_from_task(task)
        other = mapping.setdefault(lang, {}).get(entity)
        if other is not None:
            raise ValueError(
                f"Heads {other!r} and {task!r} both tag {entity} in language {lang!r}. "
                "Choose one with the `tasks` config, e.g. tasks = {\"" + lang + "\": \"" + task + "\"}."
            )
        mapping[lang][entity] = task
    return {lang: tuple(by_entity.values()) for lang, by_entity in mapping.items()}


@dataclass(frozen=True)
class HeadRoutes:
    """Which heads read a document of each language.

    ``by_lang`` holds the heads named for a language; ``universal`` the heads named by their
    entity type alone, which read documents of every language.
    """

    by_lang: Dict[str, Tuple[str, ...]]
    universal: Tuple[str, ...] = ()

    @classmethod
    def for_heads(
        cls, available: Sequence[str], heads: Optional[Sequence[str]] = None,
        tasks: Optional[Mapping[str, Union[str, Sequence[str]]]] = None,
    ) -> "HeadRoutes":
        """Routes for a checkpoint's heads: ``heads`` selects a subset (default: all), ``tasks``
        maps languages to heads explicitly (default: from the head names)."""
        chosen = list(heads) if heads else list(available)
        unknown = sorted(set(chosen) - set(available))
        if tasks:
            explicit = {lang: (task,) if isinstance(task, str) else tuple(task) for lang, task in tasks.items()}
            unknown += sorted({t for ts in explicit.values() for t in ts} - set(available) - set(unknown))
        if unknown:
            raise ValueError(
                f"The config asks for heads {unknown} that the checkpoint does not have. "
                f"Its heads are: {sorted(available)}."
            )
        if tasks:
            return cls({lang: ts for lang, ts in explicit.items()})
        return cls(tasks_by_lang(chosen), tuple(t for t in sorted(chosen) if lang_from_task(t) is None))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HeadRoutes":
        """Routes saved by :meth:`to_json`; also the ``{lang: head}`` mapping of pipelines saved
        before heads could serve every language."""
        if "by_lang" not in data:
            return cls({lang: (task,) for lang, task in data.items()})
        return cls({lang: tuple(tasks) for lang, tasks in data["by_lang"].items()}, tuple(data["universal"]))

    def to_json(self) -> Dict[str, Any]:
        return {"by_lang": {lang: list(tasks) for lang, tasks in self.by_lang.items()},
                "universal": list(self.universal)}

    @property
    def every_language(self) -> bool:
        """Whether some head reads documents of any language."""
        return bool(self.universal)

    @property
    def heads(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys([t for ts in self.by_lang.values() for t in ts] + list(self.universal)))

    def heads_for(self, lang: str) -> Tuple[str, ...]:
        """The heads that read a document in ``lang``; empty when none does. spaCy's code for
        a head's language counts as that language (Czech heads say ``cz``, spaCy ``cs``)."""
        own = self.by_lang.get(lang) or next(
            (heads for code, heads in self.by_lang.items() if spacy_lang(code) == lang), ()
        )
        return tuple(dict.fromkeys(own + self.universal))


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

    @cached_property
    def type_names(self) -> Tuple[str, ...]:
        """The distinct entity types ('' for O first), indexed by :attr:`type_ids`."""
        return tuple(dict.fromkeys(("",) + self.types))

    @cached_property
    def type_ids(self) -> numpy.ndarray:
        """Per label id: the index of its entity type in :attr:`type_names`."""
        return numpy.array([self.type_names.index(t) for t in self.types], dtype=numpy.int64)
