"""Entity word ranges → spaCy spans on the document's own tokens.

Each entity is cut at every line break between its words (a MultiClinAI TSV row holds one
line), then stripped of leading and trailing punctuation tokens, as the authors trim edge
punctuation. Spans are token-aligned, so their text always equals the document's slice.
"""

import bisect
import re
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy
from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.tokens import Doc, Span

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
            if lo < hi:
                span = Span(doc, int(words[lo]), int(words[hi - 1]) + 1, label=label)
                span._.dt4h_score = float(confidence[lo:hi].mean())
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
