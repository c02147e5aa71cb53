"""Annotated docs → per-task training windows with subword targets, and the epoch plan.

Training must see words exactly as prediction does, or the model learns one thing and is
asked another: words are the component's words (:func:`~dt4h_spacy.spans.word_tokens`),
aligned to subwords by :mod:`dt4h_spacy.windows` (a word's label sits on its first subword,
every other position is ignored with -100, as in the authors' ``tokenize_and_align_labels``),
and units longer than the encoder are cut into the same windows as at prediction time
instead of being truncated.
"""

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy
import torch
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab
from transformers import PreTrainedTokenizerFast

from ..sentences import sentence_starts
from ..spans import word_texts, word_tokens
from ..windows import encode_words, make_windows, pad_ids

IGNORE_INDEX = -100
UNITS = ("sentence", "doc")
TASK_SAMPLING = ("sequential", "proportional", "temperature")


@dataclass(frozen=True)
class Unit:
    """One training sequence: words with their label ids (sentence or document)."""

    words: Tuple[str, ...]
    labels: Tuple[int, ...]


@dataclass
class Example:
    """One encoder window: ids with the specials, and a target per position."""

    input_ids: numpy.ndarray
    targets: numpy.ndarray


@dataclass
class Batch:
    """Padded tensors of one task's examples."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.targets.to(device))


def read_docs(path: Union[str, Path], vocab: Vocab) -> List[Doc]:
    """Docs of a ``.spacy`` file, or of every ``*.spacy`` in a folder (sorted by name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus {path} not found. Create it with `dt4h-spacy convert` (one .spacy file per "
            "language) or fix the path in the config's [tasks] section."
        )
    files = sorted(path.glob("*.spacy")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"Corpus folder {path} holds no .spacy files.")
    docs: List[Doc] = []
    for file in files:
        docs.extend(DocBin().from_disk(file).get_docs(vocab))
    return docs


def word_label_ids(doc: Doc, words: numpy.ndarray, label2id: Mapping[str, int], task: str) -> numpy.ndarray:
    """The BIO label id of each word, from ``doc.ents``."""
    ids = numpy.empty(len(words), dtype=numpy.int64)
    for k, i in enumerate(words.tolist()):
        token = doc[i]
        label = f"{token.ent_iob_}-{token.ent_type_}" if token.ent_iob_ in ("B", "I") else "O"
        if label not in label2id:
            raise ValueError(
                f"Task {task!r} predicts {sorted(label2id)}, but a training document has an entity "
                f"labelled {token.ent_type_!r} ({doc[i].text!r}). Convert with `--entity` to keep one "
                "label, or name the task after the entity (<entity>_<lang>_ner)."
            )
        ids[k] = label2id[label]
    return ids


def doc_units(doc: Doc, label2id: Mapping[str, int], task: str, unit: str = "sentence") -> List[Unit]:
    """Split a doc into training units (sentences, the authors' unit, or the whole doc)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}.")
    words = word_tokens(doc)
    if not len(words):
        return []
    labels = word_label_ids(doc, words, label2id, task)
    texts = word_texts(doc, words)
    if unit == "doc":
        return [Unit(tuple(texts), tuple(labels.tolist()))]
    is_inside = numpy.zeros(len(label2id), dtype=bool)
    for label, i in label2id.items():
        is_inside[i] = label.startswith("I-")
    inside = is_inside[labels]
    cuts = numpy.flatnonzero(sentence_starts(doc, words, inside)).tolist() + [len(words)]
    return [
        Unit(tuple(texts[a:b]), tuple(labels[a:b].tolist())) for a, b in zip(cuts[:-1], cuts[1:])
    ]


def encode_examples(
    tokenizer: PreTrainedTokenizerFast,
    units: Sequence[Unit],
    max_length: int = 512,
    stride: int = 128,
) -> List[Example]:
    """Word labels → subword targets: THE alignment of training, shared with inference.

    Each word's label goes on its first subword inside the window that owns the word; all
    other positions (specials, continuation subwords, context words owned by another
    window) are ``IGNORE_INDEX``.
    """
    encoded = encode_words(tokenizer, [unit.words for unit in units])
    windows = make_windows(encoded, max_length, stride, tokenizer.cls_token_id, tokenizer.sep_token_id)
    examples = []
    for window in windows:
        targets = numpy.full(len(window.input_ids), IGNORE_INDEX, dtype=numpy.int64)
        targets[window.positions] = numpy.asarray(units[window.doc].labels, dtype=numpy.int64)[window.words]
        examples.append(Example(window.input_ids, targets))
    return examples


def collate(examples: Sequence[Example], pad_token_id: int) -> Batch:
    """Pad to the longest example (padding is masked and ignored by the loss)."""
    ids, mask = pad_ids([example.input_ids for example in examples], pad_token_id)
    targets = numpy.full(ids.shape, IGNORE_INDEX, dtype=numpy.int64)
    for row, example in enumerate(examples):
        targets[row, : len(example.targets)] = example.targets
    return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(targets))


def _shuffled_batches(n_examples: int, batch_size: int, rng: random.Random) -> List[List[int]]:
    order = list(range(n_examples))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]


def epoch_plan(
    sizes: Mapping[str, int],
    batch_size: int,
    seed: int,
    epoch: int,
    sampling: str = "sequential",
    temperature: float = 1.0,
) -> List[Tuple[str, List[int]]]:
    """The (task, example indices) of every step of one epoch, a pure function of its inputs.

    Being a pure function of (seed, epoch) is what makes a resumed run replay the same
    batches. ``sequential`` is the authors' loop: every batch of the first task, then the
    next (tasks in the order given). ``proportional`` draws a task per step with probability
    proportional to its number of batches, ``temperature`` proportional to that number to
    the power 1/T (T > 1 evens out small and large tasks; a task drawn more often than it
    has batches starts a freshly shuffled pass). Every mode runs the same number of steps.
    """
    if sampling not in TASK_SAMPLING:
        raise ValueError(f"task_sampling must be one of {TASK_SAMPLING}, got {sampling!r}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    tasks = [task for task, n in sizes.items() if n > 0]
    passes: Dict[Tuple[str, int], List[List[int]]] = {}

    def batches(task: str, n_pass: int) -> List[List[int]]:
        if (task, n_pass) not in passes:
            rng = random.Random(f"{seed}:{epoch}:{task}:{n_pass}")
            passes[(task, n_pass)] = _shuffled_batches(sizes[task], batch_size, rng)
        return passes[(task, n_pass)]

    if sampling == "sequential":
        return [(task, batch) for task in tasks for batch in batches(task, 0)]
    counts = {task: len(batches(task, 0)) for task in tasks}
    power = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = [counts[task] ** power for task in tasks]
    drawn = random.Random(f"{seed}:{epoch}:tasks").choices(tasks, weights=weights, k=sum(counts.values()))
    seen: Dict[str, int] = dict.fromkeys(tasks, 0)
    plan = []
    for task in drawn:
        n_pass, k = divmod(seen[task], counts[task])
        plan.append((task, batches(task, n_pass)[k]))
        seen[task] += 1
    return plan
