"""The tagger's work in named stages, so an engine can run the CPU ones apart from the device one.

- :func:`preprocess` (CPU): docs → words (:func:`read_words`, from the doc's arrays) →
  subwords → windows (:func:`prepare`);
- :func:`collate` (CPU): windows → one padded :class:`~dt4h_spacy.windows.WindowBatch`, the
  one collation of prediction, the authors' reading mode and training;
- :func:`forward` (device): a batch → per-head word probabilities, scattered back to their
  documents by :func:`scatter`. :func:`run_sets` runs the windows of several document sets
  (several workers' chunks, a Ray batch of them) in one batch plan, as a GPU wants them; a
  batch the device has no memory for is run again in halves (:func:`forward_fitting`);
- :func:`postprocess` (CPU): probabilities → labels → entities as token ranges with scores
  (:class:`DocEntities`), which :func:`~dt4h_spacy.spans.make_spans` turns into spans.

Every stage's result is a plain dataclass of numpy arrays, strings and tuples: picklable,
so worker processes can hand them on. :meth:`~dt4h_spacy.component.DiseaseRecognizer.pipe`
runs the stages in order.
"""

import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import torch
from spacy.attrs import IS_PUNCT, IS_SPACE, ORTH
from spacy.tokens import Doc
from transformers import PreTrainedTokenizerFast

from .decoding import decode_bio
from .errors import DeviceMemoryError
from .labels import LabelScheme
from .sentences import sentence_starts
from .spans import entity_bounds, glued_words, line_break_before
from .windows import Window, WindowBatch, collate_windows, encode_words, make_windows, plan_batches

if TYPE_CHECKING:  # the tagger runs these stages; they only call its methods
    from .inference import WordTagger


@dataclass(frozen=True)
class DocWords:
    """One doc as the network reads it, and what :func:`postprocess` needs of it."""

    tokens: numpy.ndarray  # (n_words,) token index of each word (the non-whitespace tokens)
    texts: List[str]  # what the subword tokenizer reads
    starts: numpy.ndarray  # (n_words,) bool: the word opens a sentence
    breaks: numpy.ndarray  # (n_words,) bool: a line break separates it from the previous word
    punct: numpy.ndarray  # (n_words,) bool: a punctuation token, trimmed off an entity's edges
    heads: Tuple[str, ...]  # the heads that read the doc
    glued: Optional[numpy.ndarray] = None  # (n_words,) bool: continues the previous word's letters/digits

    @property
    def n_words(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class WindowSet:
    """What the forward stage needs of a set of docs: their windows (``window.doc`` indexes the
    set) and per doc the heads that read it and its word count; not the words' texts, which
    stay with the CPU stages."""

    windows: List[Window]
    heads: List[Tuple[str, ...]]
    n_words: List[int]


@dataclass(frozen=True)
class Prepared:
    """:func:`preprocess`'s result: the docs' words and the windows cut from them (``window.doc``
    indexes ``docs``)."""

    docs: List[DocWords]
    windows: List[Window]

    @property
    def window_set(self) -> WindowSet:
        return WindowSet(self.windows, [d.heads for d in self.docs], [d.n_words for d in self.docs])


@dataclass(frozen=True)
class DocEntities:
    """:func:`postprocess`'s result for one doc: entities on tokens ``[starts, ends)``, sorted by
    ``(start, end, label)``."""

    starts: numpy.ndarray  # (n,) int64 first token
    ends: numpy.ndarray  # (n,) int64 token after the last
    labels: List[str]
    scores: numpy.ndarray  # (n,) float32 mean probability of the labels over the entity's words


def read_words(doc: Doc, heads: Tuple[str, ...]) -> DocWords:
    """The doc's words, texts, sentence starts, line breaks and punctuation from one
    ``to_array`` call and the string store: no ``Doc.text``, no loop over Token objects."""
    orth, space, punct = doc.to_array([ORTH, IS_SPACE, IS_PUNCT]).T
    tokens = numpy.flatnonzero(space == 0).astype(numpy.int64)
    strings = doc.vocab.strings
    texts = [strings[o] for o in orth[tokens].tolist()]
    breaks = line_break_before(doc, tokens)
    starts = sentence_starts(doc, tokens, breaks=breaks)
    return DocWords(tokens, texts, starts, breaks, punct[tokens].astype(bool), tuple(heads), glued_words(doc, tokens))


def prepare(words: Sequence[DocWords], tokenizer: PreTrainedTokenizerFast, max_length: int, stride: int) -> Prepared:
    """Subwords of every doc in one batched tokenizer call, then sentence-packed windows."""
    encoded = encode_words(tokenizer, [w.texts for w in words])
    windows = make_windows(encoded, max_length, stride, tokenizer.cls_token_id, tokenizer.sep_token_id,
                           [w.starts for w in words])
    return Prepared(list(words), windows)


def preprocess(
    docs: Sequence[Doc], heads: Sequence[Tuple[str, ...]], tokenizer: PreTrainedTokenizerFast, max_length: int,
    stride: int,
) -> Prepared:
    """Docs → words → windows → ids, on the CPU."""
    return prepare([read_words(doc, doc_heads) for doc, doc_heads in zip(docs, heads)], tokenizer, max_length, stride)


def collate(windows: Sequence[Window], heads: Sequence[Sequence[str]], pad_token_id: int,
            length: Optional[int] = None) -> WindowBatch:
    """The one collation (see :func:`~dt4h_spacy.windows.collate_windows`)."""
    return collate_windows(windows, heads, pad_token_id, length)


def batches(windows: Sequence[Window], heads: Sequence[Tuple[str, ...]], tagger: "WordTagger",
            ) -> Iterator[Tuple[List[Window], WindowBatch]]:
    """``windows`` in the tagger's batches, each collated; ``heads[d]`` read document ``d``."""
    for planned in plan_batches(windows, tagger.batch_size, tagger.max_batch_subwords):
        members = [windows[i] for i in planned]
        yield members, collate(members, [heads[w.doc] for w in members], tagger.tokenizer.pad_token_id)


def forward(tagger: "WordTagger", batch: WindowBatch) -> Dict[str, numpy.ndarray]:
    """The device stage: head → probabilities of the words of ``batch`` it reads."""
    return tagger.forward(batch)


def outside_probs(n_words: Sequence[int], heads: Sequence[Tuple[str, ...]], schemes: Dict[str, LabelScheme],
                  ) -> List[Dict[str, numpy.ndarray]]:
    """Per doc, head → probabilities that say ``O`` for every word: what a word no window
    reads (it has no subword) keeps."""
    out = []
    for n, doc_heads in zip(n_words, heads):
        probs = {}
        for task in doc_heads:
            labels = schemes[task].labels
            probs[task] = numpy.zeros((n, len(labels)), dtype=numpy.float32)
            probs[task][:, labels.index("O")] = 1.0
        out.append(probs)
    return out


def scatter(out: List[Dict[str, numpy.ndarray]], windows: Sequence[Window], batch: WindowBatch,
            probs: Dict[str, numpy.ndarray]) -> None:
    """Write a batch's probabilities to the rows of their documents' words in ``out``."""
    for task, task_probs in probs.items():
        start = 0
        for r in batch.members[task]:
            window = windows[r]
            out[window.doc][task][window.words] = task_probs[start : start + len(window.positions)]
            start += len(window.positions)


def run_windows(tagger: "WordTagger", windows: Sequence[Window], heads: Sequence[Tuple[str, ...]],
                n_words: Sequence[int]) -> List[Dict[str, numpy.ndarray]]:
    """Collate, forward and scatter ``windows``: per doc, head → ``(n_words, n_labels)`` probabilities."""
    out = outside_probs(n_words, heads, tagger.schemes)
    for members, batch in batches(windows, heads, tagger):
        for part, part_batch, probs in forward_fitting(tagger, members, batch, heads):
            scatter(out, part, part_batch, probs)
    return out


def run(tagger: "WordTagger", prepared: Prepared) -> List[Dict[str, numpy.ndarray]]:
    """:func:`run_windows` on what :func:`preprocess` prepared."""
    return run_sets(tagger, [prepared.window_set])[0]


def run_sets(tagger: "WordTagger", sets: Sequence[WindowSet]) -> List[List[Dict[str, numpy.ndarray]]]:
    """:func:`run_windows` over the windows of all ``sets`` together, so batches are filled
    across them; per set, its docs' probabilities."""
    if len(sets) == 1:
        only = sets[0]
        return [run_windows(tagger, only.windows, only.heads, only.n_words)]
    offsets = numpy.cumsum([0] + [len(s.n_words) for s in sets]).tolist()
    windows = [replace(w, doc=w.doc + offset) for s, offset in zip(sets, offsets) for w in s.windows]
    out = run_windows(tagger, windows, [h for s in sets for h in s.heads], [n for s in sets for n in s.n_words])
    return [out[lo:hi] for lo, hi in zip(offsets, offsets[1:])]


# The batches a forward step ran: their windows, the collated batch, its probabilities.
Fitted = List[Tuple[List[Window], WindowBatch, Dict[str, numpy.ndarray]]]


def forward_fitting(tagger: "WordTagger", members: List[Window], batch: WindowBatch,
                    heads: Sequence[Tuple[str, ...]]) -> Fitted:
    """:func:`forward` of ``batch``; if the device has no memory for it, the batch again in
    halves, and the tagger's batches from then on at most half as many windows (warned as they
    shrink; a batch planned larger is split before it is tried), so a GPU shared with other
    jobs slows a run down instead of ending it. A single window that does not fit raises
    :class:`~dt4h_spacy.errors.DeviceMemoryError`, naming the way out."""
    if len(members) <= tagger.batch_size:
        try:
            return [(members, batch, forward(tagger, batch))]
        except torch.cuda.OutOfMemoryError as err:
            message = str(err).splitlines()[0] if str(err) else "out of memory"
        torch.cuda.empty_cache()  # what the failed pass allocated goes back to the device before the retry
        subwords = int(batch.input_ids.size)
        if len(members) == 1:
            raise DeviceMemoryError(
                f"the {tagger.device} device has no memory for one window of {subwords} subwords ({message}); free "
                "the device (other jobs on it), lower max_length, or run on another device")
        tagger.batch_size = len(members) // 2
        warnings.warn(f"the {tagger.device} device ran out of memory on a batch of {len(members)} windows ({subwords} "
                      f"padded subwords); retrying it in halves, and batches now hold at most {tagger.batch_size} "
                      "window(s) (a lower batch_size or max_batch_subwords avoids the retry)", RuntimeWarning,
                      stacklevel=2)
    half = len(members) // 2
    found: Fitted = []
    for part in (members[:half], members[half:]):
        part_batch = collate(part, [heads[w.doc] for w in part], tagger.tokenizer.pad_token_id)
        found += forward_fitting(tagger, part, part_batch, heads)
    return found


def postprocess(
    words: DocWords, probs: Dict[str, numpy.ndarray], schemes: Dict[str, LabelScheme], orphan_i: str = "ignore",
    threshold: float = 0.0,
) -> DocEntities:
    """Probabilities → argmax labels → BIO entities, cut at line breaks, trimmed of edge
    punctuation, scored, those under ``threshold`` dropped: all heads' together."""
    starts, ends, labels, scores = [], [], [], []
    for task, task_probs in probs.items():
        label_ids = task_probs.argmax(axis=1)
        confidence = task_probs[numpy.arange(len(label_ids)), label_ids]
        lo, hi, task_labels, task_scores = entity_bounds(
            decode_bio(label_ids, schemes[task], orphan_i), confidence, words.breaks, words.punct, words.glued)
        kept = task_scores.astype(numpy.float64) >= threshold  # as the Python floats of the scores compare
        starts.append(words.tokens[lo[kept]])
        ends.append(words.tokens[hi[kept] - 1] + 1)
        labels += [label for label, keep in zip(task_labels, kept.tolist()) if keep]
        scores.append(task_scores[kept])
    if not labels:
        empty = numpy.zeros(0, dtype=numpy.int64)
        return DocEntities(empty, empty, [], numpy.zeros(0, dtype=numpy.float32))
    all_starts, all_ends, all_scores = numpy.concatenate(starts), numpy.concatenate(ends), numpy.concatenate(scores)
    if len(probs) == 1:  # one head's entities are disjoint and in order already
        return DocEntities(all_starts, all_ends, labels, all_scores)
    keys = list(zip(all_starts.tolist(), all_ends.tolist(), labels))
    order = sorted(range(len(labels)), key=keys.__getitem__)
    return DocEntities(all_starts[order], all_ends[order], [labels[k] for k in order], all_scores[order])
