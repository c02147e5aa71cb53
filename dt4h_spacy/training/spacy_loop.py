"""What ``spacy train`` needs beyond spaCy's own parts to run the authors' recipe.

* ``dt4h.Corpus.v1``: spaCy's ``Corpus`` reader, plus what a multilingual DT4H corpus
  needs: the predicted doc keeps the corpus doc's language (``doc._.dt4h_lang``, which
  ``dt4h-spacy convert`` stores), so it is routed to its language's head, and its tokens
  (see :func:`corpus_tokens`); ``unit = "sentence"`` yields one example per sentence, the
  authors' training unit (cut never inside a gold entity, as in prediction).
* ``dt4h.task_batches.v1``: the authors' batch order: every batch of one language's
  examples, then the next language's (languages in sorted order, as the authors' es, it,
  ro), ``size`` examples per batch. spaCy's loop shuffles the examples of each epoch
  before they reach the batcher.

Both are registered through entry points (``spacy_readers``, ``spacy_batchers``), so a
config names them without ``--code``.
"""

from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Union

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Corpus, Example
from spacy.util import registry

from .. import extensions  # noqa: F401 - registers doc._.dt4h_lang
from ..gold import example_language
from ..sentences import sentence_starts
from ..spans import word_tokens

UNITS = ("doc", "sentence")


def sentence_docs(doc: Doc) -> List[Doc]:
    """``doc`` cut into one doc per sentence (at :func:`sentence_starts`, never inside an
    entity), each keeping its entities and ``doc._.dt4h_lang``."""
    words = word_tokens(doc)
    if not len(words):
        return []
    inside = numpy.array([doc[i].ent_iob_ == "I" for i in words.tolist()], dtype=bool)
    firsts = words[sentence_starts(doc, words, inside)].tolist()
    pieces = []
    for start, end in zip(firsts, firsts[1:] + [len(doc)]):
        piece = doc[start:end].as_doc()
        piece._.dt4h_lang = doc._.dt4h_lang
        pieces.append(piece)
    return pieces


def corpus_tokens(nlp: Language, reference: Doc) -> Doc:
    """The doc to predict on: the corpus doc's own tokens (those of its language's tokenizer,
    which ``convert`` snapped the mentions to; an ``xx`` pipeline's tokenizer splits some
    differently) and its language, without its annotations."""
    doc = Doc(nlp.vocab, words=[t.text for t in reference], spaces=[bool(t.whitespace_) for t in reference])
    doc._.dt4h_lang = reference._.dt4h_lang
    return doc


@registry.readers("dt4h.Corpus.v1")
def dt4h_corpus(
    path: Union[str, Path],
    unit: str = "doc",
    max_length: int = 0,
    limit: int = 0,
    shuffle: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """Examples of a ``.spacy`` file or folder (see the module's docstring for ``unit``)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}.")
    if not Path(path).exists():
        raise FileNotFoundError(
            f"Corpus {path} not found. Create it with `dt4h-spacy convert` (a folder of <lang>.spacy files) "
            "or fix the path ([paths] train / dev)."
        )
    corpus = Corpus(path, max_length=max_length, limit=limit, shuffle=shuffle)

    def read(nlp: Language) -> Iterator[Example]:
        for example in corpus(nlp):
            references = [example.reference] if unit == "doc" else sentence_docs(example.reference)
            for reference in references:
                yield Example(corpus_tokens(nlp, reference), reference)

    return read


@registry.batchers("dt4h.task_batches.v1")
def task_batches(size: int = 32) -> Callable[[Iterable[Example]], Iterator[List[Example]]]:
    """The authors' order: all batches of one language (one head), then the next."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}.")

    def batch(examples: Iterable[Example]) -> Iterator[List[Example]]:
        by_lang: Dict[str, List[Example]] = {}
        for example in examples:
            by_lang.setdefault(example_language(example), []).append(example)
        for lang in sorted(by_lang):
            group = by_lang[lang]
            for start in range(0, len(group), size):
                yield group[start : start + size]

    return batch
