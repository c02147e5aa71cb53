"""Entity word ranges → spaCy spans on the document's own tokens.

Each entity is cut at every line break between its words (a MultiClinAI TSV row holds one
line), then stripped of leading and trailing punctuation tokens. Its edges then follow the
text's own words, as the authors' script reads whitespace-separated words: an entity never
starts inside a run of letters and digits that spaCy split ("18cm" gives no mention "cm")
and one that ends inside such a run takes all of it. Spans are token-aligned, so their text
always equals the document's slice; where an edge token carries punctuation ("C.", "dL."),
``span._.dt4h_offsets`` holds the mention without it, trimmed as the authors trim (:func:`trim`).
"""

import bisect
import re
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import unicodedata

import numpy
from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.tokens import Doc, Span

from . import extensions  # noqa: F401 - registers span._.dt4h_score and span._.dt4h_offsets
from .decoding import WordEntity, decode_bio
from .labels import LabelScheme

T = TypeVar("T")

LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def word_tokens(doc: Doc) -> numpy.ndarray:
    """Indices of the tokens the model reads: every token that is not whitespace only."""
    return numpy.flatnonzero(doc.to_array(IS_SPACE) == 0).astype(numpy.int64)


def word_texts(doc: Doc, words: numpy.ndarray) -> List[str]:
    """The strings the tokenizer sees for ``words``."""
    return [doc[i].text for i in words.tolist()]


def line_break_before(doc: Doc, words: numpy.ndarray) -> numpy.ndarray:
    """For each word, whether a line break separates it from the previous word."""
    breaks = numpy.array([m.start() for m in LINE_BREAK.finditer(doc.text)], dtype=numpy.int64)
    if not len(words) or not len(breaks):
        return numpy.zeros(len(words), dtype=bool)
    offsets = doc.to_array([IDX, LENGTH]).astype(numpy.int64)[words]
    starts = offsets[:, 0]
    prev_ends = numpy.r_[0, (offsets[:, 0] + offsets[:, 1])[:-1]]
    return numpy.searchsorted(breaks, starts) > numpy.searchsorted(breaks, prev_ends)


def trim(text: str, start: int, end: int) -> Tuple[int, int]:
    """The authors' trim: whitespace off both ends, then Unicode punctuation (``P*``)."""
    while start < end and text[start].isspace():
        start += 1
    while start < end and text[end - 1].isspace():
        end -= 1
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while start < end and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return start, end


def inside_run(text: str, at: int) -> bool:
    """Whether offset ``at`` falls between two letters/digits (a word the text does not separate)."""
    return 0 < at < len(text) and text[at - 1].isalnum() and text[at].isalnum()


def _whole_words(doc: Doc, words: numpy.ndarray, lo: int, hi: int) -> Tuple[int, int, int]:
    """``lo``/``hi`` moved so the entity neither starts nor ends inside a run of letters/digits:
    a start inside one drops the words up to the run's end (the authors' script labels such a
    word by its first piece, which is outside the entity); an end inside one takes the run's
    remaining words. Also returns where the words the model labelled end, for the score."""
    text = doc.text
    while lo < hi and inside_run(text, doc[int(words[lo])].idx):
        lo += 1
    labelled = hi
    while lo < hi < len(words) and inside_run(text, doc[int(words[hi - 1])].idx + len(doc[int(words[hi - 1])])):
        hi += 1
    return lo, hi, labelled


def entity_spans(
    doc: Doc,
    words: numpy.ndarray,
    entities: Sequence[WordEntity],
    confidence: numpy.ndarray,
) -> List[Span]:
    """Spans for ``entities`` (word ranges), each with ``span._.dt4h_score`` set."""
    if not entities:
        return []
    cut = line_break_before(doc, words)
    spans: List[Span] = []
    for start, end, label in entities:
        pieces = numpy.flatnonzero(cut[start + 1 : end]) + start + 1
        for lo, hi in zip([start, *pieces.tolist()], [*pieces.tolist(), end]):
            while lo < hi and doc[int(words[lo])].is_punct:
                lo += 1
            while lo < hi and doc[int(words[hi - 1])].is_punct:
                hi -= 1
            lo, hi, labelled = _whole_words(doc, words, lo, hi)
            if lo >= hi:
                continue
            span = Span(doc, int(words[lo]), int(words[hi - 1]) + 1, label=label)
            offsets = trim(doc.text, span.start_char, span.end_char)
            if offsets[0] >= offsets[1]:
                continue
            span._.dt4h_score = float(confidence[lo:labelled].mean())
            if offsets != (span.start_char, span.end_char):
                span._.dt4h_offsets = offsets
            spans.append(span)
    return spans


def predicted_spans(
    doc: Doc, words: numpy.ndarray, probs: numpy.ndarray, scheme: LabelScheme, orphan_i: str = "ignore"
) -> List[Span]:
    """The entities a ``(n_words, n_labels)`` probability table stands for.

    Each word takes its most probable label; ``span._.dt4h_score`` is the mean of those
    probabilities over the span's words.
    """
    label_ids = probs.argmax(axis=1)
    confidence = probs[numpy.arange(len(label_ids)), label_ids]
    return entity_spans(doc, words, decode_bio(label_ids, scheme, orphan_i), confidence)


def _span_bounds(span: Span) -> Tuple[int, int, Optional[float]]:
    return span.start_char, span.end_char, span._.dt4h_score


def non_overlapping(
    spans: Sequence[T], bounds: Callable[[T], Tuple[int, int, Optional[float]]] = _span_bounds
) -> List[T]:
    """The spans ``doc.ents`` can hold, by one rule: the longer span (in characters) wins an
    overlap, then the higher score, then the earlier one; in document order. ``bounds`` gives
    an item's ``(start_char, end_char, score)``, so rows (a page's mentions) follow the same rule.

    Heads of different entity types may tag overlapping text ("dolor torácico" a symptom,
    "torácico" inside a procedure); ``doc.spans`` keeps them all.
    """
    boxes = [(bounds(item), item) for item in spans]
    boxes.sort(key=lambda box: (box[0][0] - box[0][1], -(box[0][2] or 0.0), box[0][0]))
    starts: List[int] = []
    ends: List[int] = []
    kept: List[T] = []
    for (start, end, _), item in boxes:
        at = bisect.bisect_right(starts, start)
        if (at and ends[at - 1] > start) or (at < len(starts) and starts[at] < end):
            continue
        starts.insert(at, start)
        ends.insert(at, end)
        kept.insert(at, item)
    return kept
