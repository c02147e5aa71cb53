"""spaCy ``Example``s → the windows and targets the component's ``update`` trains on.

Training reads words exactly as prediction does (:func:`~dt4h_spacy.spans.word_tokens` of
the predicted doc, the same subword alignment and windows): a word's gold BIO tag sits on
its first subword, as in the authors' ``tokenize_and_align_labels``, and the loss looks at
nothing else. A doc is cut into sentences (never inside a gold entity), each its own
sequence, as the authors trained; a sentence longer than a window is read in overlapping
windows and each word is trained once, in the window that owns it.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from spacy.training import Example
from transformers import PreTrainedTokenizerFast

from .errors import TrainingDataError
from .labels import LabelScheme
from .sentences import sentence_starts
from .spans import word_texts, word_tokens
from .windows import WindowBatch, collate_windows, encode_words, make_windows


@dataclass(frozen=True)
class GoldUnit:
    """One training sequence: a sentence's words, their gold BIO tags, the heads that learn them."""

    texts: Tuple[str, ...]
    tags: Tuple[str, ...]
    heads: Tuple[str, ...]


@dataclass(frozen=True)
class TrainingBatch:
    """Collated windows and, per head, the gold label id of each word it reads (in order)."""

    windows: WindowBatch
    targets: Dict[str, numpy.ndarray]

    @property
    def n_words(self) -> int:
        return sum(len(t) for t in self.targets.values())


def example_language(example: Example) -> str:
    """The language a training doc is routed by: the corpus's ``doc._.dt4h_lang`` (kept by
    ``dt4h-spacy convert``), else the predicted doc's, else the pipeline's language."""
    return example.reference._.dt4h_lang or example.predicted._.dt4h_lang or example.predicted.lang_


def annotated(example: Example) -> bool:
    """Whether the example's gold says where entities are (else it teaches nothing, as for spaCy's ner)."""
    return example.reference.has_annotation("ENT_IOB")


def describe(doc: Doc, index: int) -> str:
    """How an error names a training doc: its position in the corpus and its first words."""
    start = " ".join(doc.text.split()[:6])
    return f"training doc {index} ({start!r}…)"


def gold_tags(example: Example, words: numpy.ndarray, index: int) -> List[str]:
    """The gold BIO tag of each of ``words`` (token indices of the predicted doc)."""
    predicted = example.predicted
    tags = ["O"] * len(predicted)
    for ent in example.reference.ents:
        span = predicted.char_span(ent.start_char, ent.end_char, label=ent.label_)
        if span is None:
            raise TrainingDataError(
                f"{describe(predicted, index)}: gold span {ent.text!r} (characters {ent.start_char}-{ent.end_char}) "
                "does not start and end on a token of the pipeline's tokenizer. Convert the corpus with "
                "`dt4h-spacy convert` (it snaps mentions to token boundaries) using the pipeline's language."
            )
        tags[span.start] = f"B-{ent.label_}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{ent.label_}"
    return [tags[i] for i in words.tolist()]


def check_labels(tags: Iterable[str], heads: Sequence[str], schemes: Mapping[str, LabelScheme], where: str) -> None:
    """Every gold entity type must be predicted by some head the doc is routed to."""
    known = {t for task in heads for t in schemes[task].entity_types}
    unknown = sorted({tag[2:] for tag in tags if tag != "O"} - known)
    if unknown:
        raise TrainingDataError(
            f"{where}: gold entity label(s) {unknown} are predicted by none of its heads {list(heads)} "
            f"(they predict {sorted(known)}). Convert with `--entity {sorted(known)[0] if known else 'LABEL'}`, or "
            "route the doc to a head for that label with the `tasks` option."
        )


def gold_units(doc: Doc, words: numpy.ndarray, tags: Sequence[str], heads: Tuple[str, ...]) -> List[GoldUnit]:
    """``doc``'s words cut into sentences, never inside a gold entity."""
    if not len(words):
        return []
    inside = numpy.array([tag.startswith("I-") for tag in tags], dtype=bool)
    cuts = numpy.flatnonzero(sentence_starts(doc, words, inside)).tolist() + [len(words)]
    texts = word_texts(doc, words)
    return [GoldUnit(tuple(texts[a:b]), tuple(tags[a:b]), heads) for a, b in zip(cuts[:-1], cuts[1:])]


def head_targets(tags: Sequence[str], scheme: LabelScheme) -> numpy.ndarray:
    """Label ids of ``tags`` in ``scheme``; a type the head does not predict is ``O`` for it
    (another head of the doc learns it, see :func:`check_labels`)."""
    ids = {label: i for i, label in enumerate(scheme.labels)}
    outside = ids["O"]
    return numpy.array([ids.get(tag, outside) for tag in tags], dtype=numpy.int64)


def training_batch(
    units: Sequence[GoldUnit],
    tokenizer: PreTrainedTokenizerFast,
    schemes: Mapping[str, LabelScheme],
    max_length: int,
    stride: int,
) -> Optional[TrainingBatch]:
    """Windows of ``units`` and the targets of each head; None when no word has a subword."""
    encoded = encode_words(tokenizer, [unit.texts for unit in units])
    windows = make_windows(encoded, max_length, stride, tokenizer.cls_token_id, tokenizer.sep_token_id)
    if not windows:
        return None
    batch = collate_windows(windows, [units[w.doc].heads for w in windows], tokenizer.pad_token_id)
    targets = {}
    for task, members in batch.members.items():
        parts = []
        for r in members:
            window = windows[r]
            unit_targets = head_targets(units[window.doc].tags, schemes[task])
            parts.append(unit_targets[window.words])
        targets[task] = numpy.concatenate(parts)
    return TrainingBatch(batch, targets)


def example_units(
    example: Example, index: int, heads: Tuple[str, ...], schemes: Mapping[str, LabelScheme]
) -> List[GoldUnit]:
    """One example's training units, after checking its gold spans and labels."""
    doc = example.predicted
    words = word_tokens(doc)
    tags = gold_tags(example, words, index)
    check_labels(tags, heads, schemes, describe(doc, index))
    return gold_units(doc, words, tags, heads)
