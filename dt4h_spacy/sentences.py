"""Doc → where its sentences start, over the words the model reads.

Prediction packs whole sentences into encoder windows and training cuts its units at the
same places, so both read sentences exactly alike: the doc's own sentences when a pipe set
them, otherwise a new sentence after ``.``, ``!`` or ``?`` and at every line break (how
clinical notes are written).
"""

from typing import Optional

import numpy
from spacy.attrs import ORTH, SENT_START
from spacy.strings import get_string_id
from spacy.tokens import Doc

from .spans import line_break_before

SENTENCE_END = frozenset({".", "!", "?"})
_SENTENCE_END_IDS = numpy.array([get_string_id(s) for s in sorted(SENTENCE_END)], dtype=numpy.uint64)


def sentence_starts(
    doc: Doc, words: numpy.ndarray, inside: Optional[numpy.ndarray] = None, breaks: Optional[numpy.ndarray] = None
) -> numpy.ndarray:
    """Whether each of ``words`` (token indices) opens a sentence; the first always does.

    ``inside`` (training: the word is ``I-`` of an entity) forbids a start there, so a gold
    entity is never cut in two. ``breaks`` is :func:`~dt4h_spacy.spans.line_break_before`
    when the caller has it already.
    """
    if not len(words):
        return numpy.zeros(0, dtype=bool)
    if doc.has_annotation("SENT_START"):
        sentence_of_token = numpy.cumsum(doc.to_array(SENT_START) == 1)
        ids = sentence_of_token[words]
        starts = numpy.r_[True, ids[1:] != ids[:-1]]
    else:
        orth = doc.to_array(ORTH).astype(numpy.uint64)[words]
        after_end = numpy.r_[False, numpy.isin(orth[:-1], _SENTENCE_END_IDS)]
        starts = after_end | (line_break_before(doc, words) if breaks is None else breaks)
    if inside is not None:
        starts &= ~inside
    starts[0] = True
    return starts
