"""The custom attributes the package's components set, registered once on import.

``span._.dt4h_score`` is stored per span *and label*: spaCy keys a span attribute by its
offsets alone, so a symptom and a disease head tagging the same words would otherwise
share one score in ``doc.spans``.

``span._.dt4h_offsets`` is stored the same way: the characters of the mention a span stands
for, which differ from the span's own where its edge token carries punctuation
("Hepatitis C." is a span; the mention is "Hepatitis C").
"""

from typing import Optional, Tuple

from spacy.tokens import Doc, Span

SCORE = "dt4h_score"
OFFSETS = "dt4h_offsets"


def score_key(start_char: int, end_char: int, label: str) -> Tuple[str, int, int, str]:
    """Where ``doc.user_data`` keeps the score of the span with these offsets and label."""
    return (SCORE, start_char, end_char, label)


def _score_key(span: Span) -> Tuple[str, int, int, str]:
    return score_key(span.start_char, span.end_char, span.label_)


def get_score(span: Span) -> Optional[float]:
    """The probability-based score of ``span``'s label over its words; None if it was not predicted."""
    return span.doc.user_data.get(_score_key(span))


def set_score(span: Span, value: Optional[float]) -> None:
    span.doc.user_data[_score_key(span)] = value


def offsets_key(start_char: int, end_char: int, label: str) -> Tuple[str, int, int, str]:
    """Where ``doc.user_data`` keeps the mention offsets of the span with these offsets and label."""
    return (OFFSETS, start_char, end_char, label)


def _offsets_key(span: Span) -> Tuple[str, int, int, str]:
    return offsets_key(span.start_char, span.end_char, span.label_)


def get_offsets(span: Span) -> Tuple[int, int]:
    """``(start, end)`` characters of the mention ``span`` stands for: its own unless set."""
    return span.doc.user_data.get(_offsets_key(span), (span.start_char, span.end_char))


def set_offsets(span: Span, value: Tuple[int, int]) -> None:
    span.doc.user_data[_offsets_key(span)] = tuple(value)


for _attr in ("dt4h_lang", "dt4h_chars"):
    if not Doc.has_extension(_attr):
        Doc.set_extension(_attr, default=None)
if not Span.has_extension(SCORE):
    Span.set_extension(SCORE, getter=get_score, setter=set_score)
if not Span.has_extension(OFFSETS):
    Span.set_extension(OFFSETS, getter=get_offsets, setter=set_offsets)
