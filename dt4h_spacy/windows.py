"""Words → subwords → encoder-sized windows, and back.

This is the one place that aligns words with subwords: a word is represented by its
*first* subword (as in the authors' training). A document's sentences are packed whole
into windows of at most ``max_length`` subwords, so every subword is computed once and
every word sees at least its whole sentence (the model was trained on single sentences).
Only a sentence longer than a window is cut into overlapping windows; each of its words is
read from the window where it sits most centrally, so it has the most context on both sides.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
from transformers import PreTrainedTokenizerFast


@dataclass
class EncodedWords:
    """One word list as subwords (no special tokens)."""

    subword_ids: numpy.ndarray  # (n_subwords,)
    first_subword: numpy.ndarray  # (n_words,) index into subword_ids; -1 for a word with no subword

    @property
    def n_words(self) -> int:
        return len(self.first_subword)


@dataclass
class Window:
    """A slice of one document's subwords that fits the encoder, plus the words it answers for."""

    doc: int
    input_ids: numpy.ndarray  # with the special tokens
    positions: numpy.ndarray  # position, inside input_ids, of each owned word's first subword
    words: numpy.ndarray  # index of each owned word in the document's word list


def encode_words(tokenizer: PreTrainedTokenizerFast, docs: Sequence[Sequence[str]]) -> List[EncodedWords]:
    """Tokenize many word lists in one call to the Rust tokenizer."""
    if not docs:
        return []
    nonempty = [i for i, words in enumerate(docs) if words]
    batch = tokenizer(
        [list(docs[i]) for i in nonempty],
        is_split_into_words=True,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "longer than the maximum" warning: long documents are windowed
    )
    encoded = [EncodedWords(numpy.zeros(0, numpy.int64), numpy.zeros(0, numpy.int64)) for _ in docs]
    for row, i in enumerate(nonempty):
        ids = numpy.asarray(batch["input_ids"][row], dtype=numpy.int64)
        listed = batch.word_ids(row)  # no special tokens were added, so every subword has a word
        word_ids = numpy.array(listed if None not in listed else [-1 if w is None else w for w in listed],
                               dtype=numpy.int64)
        first = numpy.full(len(docs[i]), -1, dtype=numpy.int64)
        starts = numpy.flatnonzero(numpy.r_[True, word_ids[1:] != word_ids[:-1]] & (word_ids >= 0))
        first[word_ids[starts]] = starts
        encoded[i] = EncodedWords(ids, first)
    return encoded


def window_bounds(n_subwords: int, size: int, stride: int) -> List[tuple]:
    """``[start, end)`` subword ranges of ``size`` that overlap by ``stride``."""
    if n_subwords <= size:
        return [(0, n_subwords)]
    step = size - stride
    starts = list(range(0, n_subwords - size, step)) + [n_subwords - size]
    return [(start, start + size) for start in starts]


def check_window_settings(max_length: int, stride: int) -> None:
    """Raise for a window size and overlap that cannot cut a document; the component calls
    this when it is built, so a bad config fails at ``add_pipe``, not on the first document."""
    size = max_length - 2
    if size < 1 or not 0 <= stride < size:
        raise ValueError(
            f"stride ({stride}) must be at least 0 and smaller than max_length - 2 ({size}), "
            f"and max_length ({max_length}) at least 3: the two special tokens take 2 places."
        )


def sentence_cuts(enc: EncodedWords, starts: Optional[numpy.ndarray]) -> numpy.ndarray:
    """Subword offsets where sentences begin, with 0 and the end: always at word boundaries.

    ``starts`` flags each word that opens a sentence; ``None`` makes the document one
    sentence (a training unit). A sentence whose first words have no subword begins at its
    next word that has one.
    """
    n = len(enc.subword_ids)
    if starts is None:
        return numpy.array([0, n], dtype=numpy.int64)
    if len(starts) != enc.n_words:
        raise ValueError(f"sentence starts cover {len(starts)} words, the document has {enc.n_words}.")
    readable = numpy.flatnonzero(enc.first_subword >= 0)
    following = numpy.searchsorted(readable, numpy.flatnonzero(starts))
    cuts = numpy.r_[enc.first_subword[readable], n][following]
    return numpy.unique(numpy.r_[0, cuts, n])


def pack_sentences(cuts: numpy.ndarray, size: int) -> Iterator[Tuple[int, int]]:
    """``[lo, hi)`` subword pieces: as many whole sentences as fit ``size``, or one longer sentence.

    Greedy, in document order: a piece ends at the last sentence end that still fits.
    """
    lo, n = 0, int(cuts[-1])
    while lo < n:
        hi = int(cuts[numpy.searchsorted(cuts, lo + size, side="right") - 1])
        if hi <= lo:  # the sentence at lo alone is longer than a window
            hi = int(cuts[numpy.searchsorted(cuts, lo, side="right")])
        yield lo, hi
        lo = hi


def make_windows(
    encoded: Sequence[EncodedWords],
    max_length: int,
    stride: int,
    cls_id: int,
    sep_id: int,
    sentence_starts: Optional[Sequence[Optional[numpy.ndarray]]] = None,
) -> List[Window]:
    """Cut every document into windows of at most ``max_length`` ids (specials included).

    ``sentence_starts[d]`` flags the words of document ``d`` that open a sentence (``None``,
    or no list at all: the document is one sentence). Sentences are packed whole; only one
    longer than a window gets overlapping windows of its own.
    """
    check_window_settings(max_length, stride)
    size = max_length - 2
    windows: List[Window] = []
    for doc, enc in enumerate(encoded):
        words = numpy.flatnonzero(enc.first_subword >= 0)
        if not len(words):
            continue
        first = enc.first_subword[words]
        starts = None if sentence_starts is None else sentence_starts[doc]
        for lo, hi in pack_sentences(sentence_cuts(enc, starts), size):
            a, b = numpy.searchsorted(first, [lo, hi])
            piece_words, piece_first = words[a:b], first[a:b] - lo
            bounds = window_bounds(hi - lo, size, stride)
            owner = _most_central(piece_first, bounds, hi - lo)
            for k, (start, end) in enumerate(bounds):
                owned = owner == k
                if not owned.any():
                    continue
                ids = numpy.concatenate(([cls_id], enc.subword_ids[lo + start : lo + end], [sep_id]))
                windows.append(Window(doc, ids, piece_first[owned] - start + 1, piece_words[owned]))
    return windows


def _most_central(first: numpy.ndarray, bounds: Sequence[tuple], n_subwords: int) -> numpy.ndarray:
    """For each word, the window whose nearest *cut* edge is farthest from it (first on ties).

    A sentence's own start and end are not cuts: nothing of it was hidden from the model there.
    Windows are sorted, so only the few that hold a word are compared: memory stays linear
    in the document (a windows x words matrix needs tens of GB for a 5 MB file).
    """
    if len(bounds) == 1:  # the usual piece: whole sentences in one window, which owns every word
        return numpy.zeros(len(first), dtype=numpy.int64)
    starts = numpy.array([b[0] for b in bounds])
    ends = numpy.array([b[1] for b in bounds])
    big = numpy.iinfo(numpy.int64).max
    lo = numpy.searchsorted(ends, first, side="right")  # first window ending after the word
    hi = numpy.searchsorted(starts, first, side="right") - 1  # last window starting at or before it
    best = lo.copy()
    best_margin = numpy.full(len(first), -1, dtype=numpy.int64)
    for offset in range(int((hi - lo).max(initial=0)) + 1):
        k = numpy.minimum(lo + offset, hi)
        left = numpy.where(starts[k] > 0, first - starts[k], big)
        right = numpy.where(ends[k] < n_subwords, ends[k] - 1 - first, big)
        margin = numpy.where(lo + offset <= hi, numpy.minimum(left, right), -1)
        better = margin > best_margin
        best[better] = k[better]
        best_margin[better] = margin[better]
    return best


def plan_batches(
    windows: Sequence[Window], batch_size: int, max_batch_subwords: Optional[int], max_padding: float = 0.125
) -> Iterator[List[int]]:
    """Group windows of similar length so padding stays small.

    Longest first, so the first batch shows at once whether memory suffices. A batch also
    closes before a window that would make more than ``max_padding`` of its positions
    padding: packed documents end in a short window, and padding it to a full one costs as
    much as a full one.
    """
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    batch: List[int] = []
    filled = 0
    for i in order:
        length = len(windows[i].input_ids)
        longest = len(windows[batch[0]].input_ids) if batch else length
        padded = (len(batch) + 1) * longest
        full = batch and (
            len(batch) >= batch_size
            or (max_batch_subwords is not None and padded > max_batch_subwords)
            or padded - filled - length > max_padding * padded
        )
        if full:
            yield batch
            batch, filled = [], 0
        batch.append(i)
        filled += length
    if batch:
        yield batch


@dataclass
class WindowBatch:
    """Windows padded into one encoder pass, and which of its words each head reads.

    The one collation of the package: prediction (:class:`~dt4h_spacy.inference.WordTagger`)
    and training (the component's ``update``) both feed it to
    :meth:`~dt4h_spacy.model.MultiTaskTokenClassifier.word_logits`.
    """

    input_ids: numpy.ndarray  # (n_windows, longest) int64, padded
    attention_mask: numpy.ndarray  # (n_windows, longest) int64
    rows: numpy.ndarray  # (n_words,) window of each owned word, windows in order
    cols: numpy.ndarray  # (n_words,) position of its first subword in that window
    selected: Dict[str, numpy.ndarray]  # head → indices into the n_words it reads
    members: Dict[str, List[int]]  # head → the windows it reads, in order


def pad_ids(
    sequences: Sequence[numpy.ndarray], pad_token_id: int, length: Optional[int] = None
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Id sequences padded to the longest (or to ``length``), and their attention mask (int64,
    as the encoder takes them)."""
    longest = max(len(ids) for ids in sequences) if length is None else length
    padded = numpy.full((len(sequences), longest), pad_token_id, dtype=numpy.int64)
    mask = numpy.zeros((len(sequences), longest), dtype=numpy.int64)
    for row, ids in enumerate(sequences):
        padded[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return padded, mask


def collate_windows(
    windows: Sequence[Window], heads: Sequence[Sequence[str]], pad_token_id: int, length: Optional[int] = None
) -> WindowBatch:
    """Pad ``windows`` to the longest (or to ``length``: the authors pad every window to
    ``max_length``); window ``w`` is read by the heads ``heads[w]``."""
    ids, mask = pad_ids([w.input_ids for w in windows], pad_token_id, length)
    rows = numpy.concatenate([numpy.full(len(w.positions), r, dtype=numpy.int64) for r, w in enumerate(windows)])
    cols = numpy.concatenate([w.positions for w in windows]).astype(numpy.int64)
    offsets = numpy.cumsum([0] + [len(w.positions) for w in windows])
    selected: Dict[str, numpy.ndarray] = {}
    members: Dict[str, List[int]] = {}
    for task in dict.fromkeys(task for window_heads in heads for task in window_heads):
        members[task] = [r for r, window_heads in enumerate(heads) if task in window_heads]
        selected[task] = numpy.concatenate(
            [numpy.arange(offsets[r], offsets[r + 1], dtype=numpy.int64) for r in members[task]]
        )
    return WindowBatch(ids, mask, rows, cols, selected, members)
