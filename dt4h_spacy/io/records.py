"""The records every reader and writer shares, and each output's row of a mention, in one place.

A :class:`Document` is a document as read, a :class:`Failure` one that could not be used, a
:class:`Mention` one predicted or gold mention, an :class:`AnnotatedDoc` a document after
annotation. Mention ↔ row is spelled only here: the MultiClinAI TSV's columns
(:data:`TSV_COLUMNS`, :func:`tsv_row`), the JSONL/Parquet row (:data:`FIELDS`,
:data:`SCHEMA`, :func:`mention_record` and back, :func:`record_mention`), the compact row
that run parts and Ray results carry (:func:`mention_values` and back), and a spaCy span's
mention (:func:`span_mention`). Nothing here reads files or knows the model.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow

from ..errors import RecordError

if TYPE_CHECKING:
    from spacy.tokens import Span

# What the dt4h_context component says of a mention (medspaCy's names without ``is_``).
QUALIFIERS = ("negated", "uncertain", "hypothetical", "historical", "family")

# The MultiClinAI TSV: its five columns, then (on request) the score and the qualifiers.
TSV_COLUMNS = ("filename", "label", "start_span", "end_span", "text")
SCORE_COLUMN = "score"

# One JSONL/Parquet row per mention: these fields, then (``--context``) the qualifiers, then
# the document's kept columns (``--keep-columns``), which must not reuse these names.
FIELDS = ("id", "label", "start", "end", "text", "score")
SCHEMA = pyarrow.schema([("id", pyarrow.string()), ("label", pyarrow.string()), ("start", pyarrow.int64()),
                         ("end", pyarrow.int64()), ("text", pyarrow.string()), ("score", pyarrow.float64())])
CONTEXT_SCHEMA = pyarrow.schema([(name, pyarrow.bool_()) for name in QUALIFIERS])
RESERVED = FIELDS + QUALIFIERS


@dataclass(frozen=True)
class Document:
    """A document as read: ``name`` is the TSV's filename (a file's name without ``.txt``, a
    table row's id), ``path`` says where it came from (a file, or ``table.csv row 7``),
    ``lang`` is the language its table row gives, if any, and ``metadata`` the values of the
    row's kept columns (``--keep-columns``: ``patient_id``…) as read, ints still ints."""

    name: str
    path: Union[str, Path]
    text: str
    lang: Optional[str] = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Failure:
    """A file, folder or table row that could not be used, with a reason a person can act on."""

    path: Union[str, Path]
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Mention:
    """One row of a MultiClinAI TSV. ``start``/``end`` are character offsets, end exclusive.

    ``score`` (the model's confidence, if known) and the :data:`QUALIFIERS` (``None`` when
    no context component looked at the mention) are written only on request and are no part
    of a mention's identity: a negated mention is still the same mention for NER scoring.
    Nor is ``metadata``, its document's kept columns (``--keep-columns``, one mapping shared
    by all the document's mentions), which the JSONL and Parquet outputs write beside each row.
    """

    filename: str
    label: str
    start: int
    end: int
    text: str
    score: Optional[float] = field(default=None, compare=False)
    negated: Optional[bool] = field(default=None, compare=False)
    uncertain: Optional[bool] = field(default=None, compare=False)
    hypothetical: Optional[bool] = field(default=None, compare=False)
    historical: Optional[bool] = field(default=None, compare=False)
    family: Optional[bool] = field(default=None, compare=False)
    metadata: Optional[Mapping[str, Any]] = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> Tuple[str, str, int, int]:
        """What identifies a mention for scoring (the text column is not scored)."""
        return (self.filename, self.label, self.start, self.end)

    @property
    def qualifiers(self) -> Dict[str, Optional[bool]]:
        """The :data:`QUALIFIERS` by name, in that order."""
        return {name: getattr(self, name) for name in QUALIFIERS}

    @property
    def values(self) -> Tuple[object, ...]:
        """Every field in declaration order: ``Mention(*m.values) == m`` with all fields kept."""
        return (self.filename, self.label, self.start, self.end, self.text, self.score,
                self.negated, self.uncertain, self.hypothetical, self.historical, self.family, self.metadata)


@dataclass(frozen=True)
class AnnotatedDoc:
    """A document after annotation: what every sink needs (the HTML page also the text);
    ``path`` and ``metadata`` (its kept columns) as in :class:`Document`."""

    name: str
    text: str
    lang: str
    mentions: List[Mention]
    path: Union[str, Path] = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def sort_key(mention: Mention) -> Tuple[str, int, int, str, str]:
    """Rows in output order: by filename, then start (end, label, text only break ties)."""
    return (mention.filename, mention.start, mention.end, mention.label, mention.text)


# ----------------------------------------------------------------------- mention <-> row


def mention_values(mention: Mention, with_name: bool = True) -> Tuple[object, ...]:
    """The compact row that run parts (and, without the name, Ray results) carry: every field."""
    return mention.values if with_name else mention.values[1:]


def values_mention(values: Sequence[Any], name: Optional[str] = None) -> Mention:
    """:func:`mention_values` back; ``name`` when the row was written without it."""
    return Mention(*values) if name is None else Mention(name, *values)


def mention_record(mention: Mention, kept: Sequence[str] = (), with_context: bool = False) -> Dict[str, object]:
    """The JSONL/Parquet row of a mention: :data:`FIELDS`, the qualifiers (``with_context``),
    then its document's ``kept`` columns (``None`` where it has none)."""
    m = mention
    record = dict(zip(FIELDS, (m.filename, m.label, m.start, m.end, m.text, m.score)))
    if with_context:
        record.update(m.qualifiers)
    metadata = m.metadata or {}
    record.update((name, metadata.get(name)) for name in kept)
    return record


def record_mention(record: Mapping[str, Any], where: str) -> Mention:
    """:func:`mention_record` back: a JSONL/Parquet row (``id``, or a TSV's ``filename``;
    ``label``, ``start``, ``end``; ``text``, ``score`` and the qualifiers where present) as a
    mention. Other columns (kept ones) are left out. Raises :class:`RecordError` naming ``where``."""
    name = record.get("id", record.get("filename"))
    missing = [column for column, value in (("id", name), ("label", record.get("label"))) if value in (None, "")]
    missing += [column for column in ("start", "end") if record.get(column) is None]
    if missing:
        raise RecordError(f"{where}: no {', '.join(missing)}; a mention row needs id (or filename), label, start "
                          f"and end, as predict writes them")
    try:
        start, end = int(record["start"]), int(record["end"])
        score = None if record.get("score") is None else float(record["score"])
    except (TypeError, ValueError) as err:
        raise RecordError(f"{where}: start, end and score must be numbers ({err})") from None
    if start < 0 or end <= start:
        raise RecordError(f"{where}: start {start}, end {end} is not a non-empty span")
    flags = {q: record.get(q) for q in QUALIFIERS}
    wrong = [q for q, value in flags.items() if value is not None and not isinstance(value, bool)]
    if wrong:
        raise RecordError(f"{where}: {wrong[0]} {flags[wrong[0]]!r} is not true, false or null")
    return Mention(str(name), str(record["label"]), start, end, str(record.get("text") or ""), score, **flags)


def tsv_header(with_scores: bool = False, with_context: bool = False) -> Tuple[str, ...]:
    """The TSV's header: :data:`TSV_COLUMNS`, then ``score`` and the qualifiers on request."""
    return (*TSV_COLUMNS, *((SCORE_COLUMN,) if with_scores else ()), *(QUALIFIERS if with_context else ()))


def _flag(value: Optional[bool]) -> str:
    return "" if value is None else "true" if value else "false"


def tsv_row(mention: Mention, with_scores: bool = False, with_context: bool = False) -> Tuple[object, ...]:
    """The TSV row of a mention under :func:`tsv_header`: the score with 4 decimals, the
    qualifiers ``true``/``false``, each empty when unknown."""
    m = mention
    row: Tuple[object, ...] = (m.filename, m.label, m.start, m.end, m.text)
    if with_scores:
        row = (*row, "" if m.score is None else f"{m.score:.4f}")
    if with_context:
        row = (*row, *(_flag(value) for value in m.qualifiers.values()))
    return row


def span_mention(name: str, span: "Span", qualifiers: Optional[Mapping[str, bool]] = None) -> Mention:
    """The mention of a predicted spaCy span of document ``name``: its label, its mention's
    characters (``span._.dt4h_offsets``: without the punctuation its edge token carries) and
    ``span._.dt4h_score``, with its ``qualifiers`` (see :data:`QUALIFIERS`). The text is sliced
    from the span's own: ``doc.text`` is rebuilt on every access, per mention quadratic."""
    start, end = span._.dt4h_offsets
    text = span.text[start - span.start_char : end - span.start_char]
    return Mention(name, span.label_, start, end, text, span._.dt4h_score, **(qualifiers or {}))
