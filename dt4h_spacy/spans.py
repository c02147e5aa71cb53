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
import unicodedata
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy
from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, LENGTH, ORTH, SPACY
from spacy.strings import StringStore
from spacy.tokens import Doc, Span

from .decoding import WordEntity, decode_bio
from .extensions import offsets_key, score_key
from .labels import LabelScheme

T = TypeVar("T")

LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def word_tokens(doc: Doc) -> numpy.ndarray:
    """Indices of the tokens the model reads: every token that is not whitespace only."""
    return numpy.flatnonzero(doc.to_array(IS_SPACE) == 0).astype(numpy.int64)


def word_texts(doc: Doc, words: numpy.ndarray) -> List[str]:
    """The strings the tokenizer sees for ``words`` (read from the string store: no Token objects)."""
    strings = doc.vocab.strings
    return [strings[orth] for orth in doc.to_array(ORTH)[words].tolist()]


def line_break_before(doc: Doc, words: numpy.ndarray) -> numpy.ndarray:
    """For each word, whether a line break separates it from the previous word.

    spaCy keeps every whitespace but a single space in whitespace tokens, so only those are
    searched: ``doc.text`` is not rebuilt, and a long note costs one pass over its few
    whitespace tokens.
    """
    out = numpy.zeros(len(words), dtype=bool)
    if not len(words):
        return out
    spaces = numpy.flatnonzero(doc.to_array(IS_SPACE)).tolist()
    breaking = [i for i in spaces if LINE_BREAK.search(doc[i].text)]
    if breaking:
        after = numpy.searchsorted(words, breaking)  # the word each breaking whitespace precedes
        out[after[after < len(words)]] = True
    return out


def punct_words(doc: Doc, words: numpy.ndarray) -> numpy.ndarray:
    """For each word, whether it is a punctuation token (trimmed off an entity's edges)."""
    return doc.to_array(IS_PUNCT)[words].astype(bool)


def glued_words(doc: Doc, words: numpy.ndarray) -> numpy.ndarray:
    """For each word, whether it continues a run of letters/digits that the previous token
    began: a word the text does not separate ("18cm" is spaCy's ``18`` ``cm``). Read from the
    token arrays and the string store (``doc.text`` is rebuilt on every access)."""
    out = numpy.zeros(len(words), dtype=bool)
    if not len(words):
        return out
    orth, spaced = doc.to_array([ORTH, SPACY]).T
    strings = doc.vocab.strings
    touching = numpy.flatnonzero((words > 0) & (spaced[numpy.maximum(words - 1, 0)] == 0))
    after_alnum = per_string(strings, orth[words[touching] - 1], lambda text: text[-1:].isalnum())
    alnum = per_string(strings, orth[words[touching]], lambda text: text[:1].isalnum())
    out[touching] = after_alnum & alnum
    return out


def per_string(strings: StringStore, orths: numpy.ndarray, test: Callable[[str], bool]) -> numpy.ndarray:
    """``test`` of the string of each of ``orths``, run once per distinct string: a doc's
    tokens repeat few strings, so the Python work is per word type, not per token."""
    if not len(orths):
        return numpy.zeros(0, dtype=bool)
    distinct, where = numpy.unique(orths, return_inverse=True)
    return numpy.array([test(strings[orth]) for orth in distinct.tolist()], dtype=bool)[where.reshape(-1)]


def entity_bounds(
    entities: Sequence[WordEntity], confidence: numpy.ndarray, breaks: numpy.ndarray, punct: numpy.ndarray,
    glued: Optional[numpy.ndarray] = None,
) -> Tuple[numpy.ndarray, numpy.ndarray, List[str], numpy.ndarray]:
    """``entities`` (disjoint word ranges in order) cut at line breaks and trimmed of edge
    punctuation, in array steps: ``[lo, hi)`` word ranges, their labels and scores (the mean
    of ``confidence`` over each range, as float32 as numpy's ``mean`` gives it).

    With ``glued`` (:func:`glued_words`) the edges follow the text's words: a range starting
    inside a run of letters/digits starts after it (the authors' script labels such a word by
    its first piece, which is outside the entity), one ending inside takes the rest of the run;
    the score stays the mean over the words the model labelled."""
    empty = numpy.zeros(0, dtype=numpy.int64)
    if not len(entities):
        return empty, empty, [], numpy.zeros(0, dtype=numpy.float32)
    n = len(confidence)
    starts = numpy.array([e[0] for e in entities], dtype=numpy.int64)
    ends = numpy.array([e[1] for e in entities], dtype=numpy.int64)
    cuts = numpy.flatnonzero(breaks)
    inside = numpy.searchsorted(starts, cuts, side="right") - 1  # the entity starting last before
    cuts = cuts[(inside >= 0) & (cuts > starts[inside]) & (cuts < ends[inside])]
    lo = numpy.union1d(starts, cuts)
    piece_of = numpy.searchsorted(starts, lo, side="right") - 1
    hi = numpy.minimum(numpy.r_[lo[1:], n], ends[piece_of])
    readable = numpy.flatnonzero(~punct)
    lo_trimmed = numpy.r_[readable, n][numpy.searchsorted(readable, lo)]
    hi_trimmed = numpy.r_[-1, readable][numpy.searchsorted(readable, hi)] + 1
    kept = lo_trimmed < hi_trimmed
    lo, hi, piece_of = lo_trimmed[kept], hi_trimmed[kept], piece_of[kept]
    labelled = hi
    if glued is not None and glued.any():
        free = numpy.flatnonzero(~glued)  # the words that begin a run
        after = numpy.r_[free, n]
        lo, hi = after[numpy.searchsorted(free, lo)], after[numpy.searchsorted(free, hi)]
        kept = lo < labelled
        lo, hi, labelled, piece_of = lo[kept], hi[kept], labelled[kept], piece_of[kept]
    scores = _range_means(confidence.astype(numpy.float32, copy=False), lo, labelled)
    return lo, hi, [entities[i][2] for i in piece_of.tolist()], scores


def _range_means(values: numpy.ndarray, lo: numpy.ndarray, hi: numpy.ndarray) -> numpy.ndarray:
    """``values[lo[k]:hi[k]].mean()`` for every k, one ``mean(axis=1)`` per distinct length:
    the same float32 sums as the one-by-one means (a running sum would differ in the last bit)."""
    means = numpy.zeros(len(lo), dtype=numpy.float32)
    counts = hi - lo
    for length in numpy.unique(counts).tolist():
        at = numpy.flatnonzero(counts == length)
        means[at] = values[lo[at, None] + numpy.arange(length)].mean(axis=1)
    return means


def entity_spans(
    doc: Doc,
    words: numpy.ndarray,
    entities: Sequence[WordEntity],
    confidence: numpy.ndarray,
    breaks: Optional[numpy.ndarray] = None,
    punct: Optional[numpy.ndarray] = None,
    glued: Optional[numpy.ndarray] = None,
) -> List[Span]:
    """Spans for ``entities`` (word ranges), each with ``span._.dt4h_score`` set.

    ``breaks`` (:func:`line_break_before`), ``punct`` (:func:`punct_words`) and ``glued``
    (:func:`glued_words`) are computed when not given."""
    if not entities:
        return []
    breaks = line_break_before(doc, words) if breaks is None else breaks
    punct = punct_words(doc, words) if punct is None else punct
    glued = glued_words(doc, words) if glued is None else glued
    lo, hi, labels, scores = entity_bounds(entities, confidence, breaks, punct, glued)
    return make_spans(doc, words[lo], words[hi - 1] + 1, labels, scores)


def make_spans(
    doc: Doc, starts: numpy.ndarray, ends: numpy.ndarray, labels: Sequence[str], scores: numpy.ndarray
) -> List[Span]:
    """Spans on tokens ``[starts[k], ends[k])`` with their scores, created in one pass: the
    scores go straight to where ``span._.dt4h_score`` reads them. Where an edge token carries
    punctuation, the mention's characters, trimmed as the authors trim, go to
    ``span._.dt4h_offsets``."""
    if not len(starts):
        return []
    offsets = doc.to_array([IDX, LENGTH]).astype(numpy.int64)
    start_chars = offsets[starts, 0].tolist()
    end_chars = (offsets[ends - 1, 0] + offsets[ends - 1, 1]).tolist()
    doc.user_data.update(zip(map(score_key, start_chars, end_chars, labels), scores.tolist()))
    label_ids = {label: doc.vocab.strings.add(label) for label in set(labels)}  # an id: no lookup per span
    spans = [Span(doc, s, e, label=label_ids[label]) for s, e, label in zip(starts.tolist(), ends.tolist(), labels)]
    orth, strings = doc.to_array(ORTH), doc.vocab.strings
    edged = (per_string(strings, orth[starts], lambda text: _trimmable(text[0]))
             | per_string(strings, orth[ends - 1], lambda text: _trimmable(text[-1])))
    for k in numpy.flatnonzero(edged).tolist():
        text = spans[k].text
        first, last = trim(text, 0, len(text))
        if 0 < first < last or first < last < len(text):
            doc.user_data[offsets_key(start_chars[k], end_chars[k], labels[k])] = (
                start_chars[k] + first, start_chars[k] + last)
    return spans


def _trimmable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


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
    if all(a[0][1] <= b[0][0] for a, b in zip(boxes, boxes[1:])):  # in order and apart: all kept
        return [item for _, item in boxes]
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
