"""``compat="authors"``: the reading of the authors' ``predict_mentions_mtl_local.py``.

The default reading (``compat="words"``) labels spaCy's tokens; this one reproduces the
published script so its numbers can be matched exactly:

1. The raw text goes to the fast tokenizer with truncation and overflowing windows
   (``max_length``/``stride``, every window padded to ``max_length``).
2. In each window, every tokenizer word (its pre-tokenizer's unit: for XLM-R a
   whitespace-separated chunk, punctuation included) takes the argmax label of its first
   subword in that window, and is keyed by the characters from its first to its last
   subword *in that window*: a word cut by a window edge is a different key there.
3. Labels are voted per key across windows; among tied labels ``O`` is dropped, and the
   label seen first (earliest window) wins.
4. Keys sorted by ``(start, end)`` are read as BIO (``B`` opens, ``I`` extends an open entity
   of its type and is otherwise ignored, ``O`` closes); entities may cross lines.
5. Each entity is trimmed of leading/trailing whitespace, then of Unicode ``P*`` characters
   (once each, in that order); an empty one is dropped.

Entities may overlap (keys of a cut word overlap its full key), so they are returned as
character offsets; the component fits them to ``doc.ents`` separately.
"""

from collections import defaultdict
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy
import tokenizers

from .decoding import decode_bio
from .inference import WordTagger
from .labels import LabelScheme
from .spans import trim


class CharEntity(NamedTuple):
    """An entity by character offsets, end exclusive, with the mean probability of its words' labels."""

    start: int
    end: int
    label: str
    score: float


Key = Tuple[int, int]


def vote(labels: Sequence[int], probs: Sequence[float], outside: int) -> Tuple[int, float]:
    """The most frequent label (``Counter.most_common`` order: first seen wins a tie, but
    ``O`` loses one) and the mean probability of the windows that gave it."""
    counts: Dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    top = max(counts.values())
    tied = [label for label, count in counts.items() if count == top]
    if len(tied) > 1 and outside in tied:
        tied.remove(outside)
    winner = tied[0]
    return winner, float(numpy.mean([p for label, p in zip(labels, probs) if label == winner]))


def authors_entities(
    tagger: WordTagger, texts: Sequence[str], heads: Sequence[Sequence[str]]
) -> List[List[CharEntity]]:
    """The entities the authors' script finds in each text, read by each of ``heads[i]``
    (all from one encoder pass), in order of offsets."""
    if not texts:
        return []
    enc = tagger.tokenizer(
        list(texts),
        truncation=True,
        max_length=tagger.max_length,
        stride=tagger.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
        return_attention_mask=True,
        return_token_type_ids=False,
    )
    owners: List[int] = list(enc["overflow_to_sample_mapping"])
    _check_windows_cover(tagger.tokenizer, texts, owners, enc["offset_mapping"])
    keys: List[List[Key]] = []
    positions: List[numpy.ndarray] = []
    for w in range(len(owners)):
        offsets = enc["offset_mapping"][w]
        spans: Dict[int, List[int]] = {}
        for i, wid in enumerate(enc.word_ids(w)):
            if wid is not None:
                spans.setdefault(wid, []).append(i)
        window_keys, firsts = [], []
        for wid in sorted(spans):
            first, last = spans[wid][0], spans[wid][-1]
            key = (offsets[first][0], offsets[last][1])
            if key != (0, 0):
                window_keys.append(key)
                firsts.append(first)
        keys.append(window_keys)
        positions.append(numpy.asarray(firsts, dtype=numpy.int64))
    logits = tagger.window_logits(
        numpy.asarray(enc["input_ids"], dtype=numpy.int64),
        numpy.asarray(enc["attention_mask"], dtype=numpy.int64),
        positions,
        [heads[doc] for doc in owners],
    )
    votes: List[Dict[str, Dict[Key, Tuple[List[int], List[float]]]]] = [
        {task: defaultdict(lambda: ([], [])) for task in doc_heads} for doc_heads in heads
    ]
    for doc, window_keys, by_head in zip(owners, keys, logits):
        if not window_keys:
            continue
        for task, window_logits in by_head.items():
            shifted = numpy.exp(window_logits - window_logits.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
            label_ids = window_logits.argmax(axis=1)
            for key, label, row in zip(window_keys, label_ids.tolist(), probs):
                labels, confidences = votes[doc][task][key]
                labels.append(label)
                confidences.append(float(row[label]))
    return [
        sorted(entity for task, task_votes in votes[doc].items()
               for entity in _entities(text, task_votes, tagger.schemes[task]))
        for doc, text in enumerate(texts)
    ]


def _check_windows_cover(tokenizer, texts: Sequence[str], owners: Sequence[int], offsets) -> None:
    """Refuse windows that stop before a text's last subword, rather than silently drop the rest.

    tokenizers 0.23.1 and 0.23.2 return only the first two overflowing windows of a text.
    """
    ends = [0] * len(texts)
    for doc, window in zip(owners, offsets):
        ends[doc] = max([ends[doc]] + [end for _, end in window])
    for text, end in zip(texts, ends):
        rest = text[end:]
        if rest.strip() and tokenizer(rest, add_special_tokens=False)["input_ids"]:
            raise RuntimeError(
                f"The tokenizer's overflowing windows stop at character {end} of a {len(text)}-character text "
                f"(tokenizers {tokenizers.__version__}; releases 0.23.1 and 0.23.2 drop every window after the "
                "second), so compat='authors' would miss its end. Upgrade: pip install -U tokenizers"
            )


def _entities(text: str, votes: Dict[Key, Tuple[List[int], List[float]]], scheme: LabelScheme) -> List[CharEntity]:
    """Voted word labels → BIO entities → trimmed character spans."""
    if not votes:
        return []
    outside = scheme.labels.index("O")
    words = sorted(votes)
    decided = [vote(*votes[key], outside) for key in words]
    label_ids = numpy.array([label for label, _ in decided], dtype=numpy.int64)
    confidence = numpy.array([p for _, p in decided], dtype=numpy.float64)
    entities: List[CharEntity] = []
    for lo, hi, label in decode_bio(label_ids, scheme, "ignore"):
        start, end = trim(text, words[lo][0], words[hi - 1][1])
        if start < end:
            entities.append(CharEntity(start, end, label, float(confidence[lo:hi].mean())))
    return entities
