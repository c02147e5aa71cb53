"""The ``dt4h_disease`` spaCy component.

It reads a doc's non-whitespace tokens as words, routes the doc to the heads of its
language (``doc._.dt4h_lang`` or ``doc.lang_``; heads named by entity type alone read every
language), runs all of them on one encoder pass, and writes every span to
``doc.spans[spans_key]`` and a non-overlapping selection to ``doc.ents``; with
``compat="authors"`` it reads the raw text as the authors' script does (:mod:`.authors`).
A doc in a language no head reads is handled by the ``unsupported`` policy, one doc at a
time, so it never costs the rest of its batch (``warn``/``skip``: left untouched).
The network is loaded lazily, on first use or ``nlp.initialize()``, so ``spacy.load`` of a
saved pipeline never touches the original checkpoint, the base model or the network.
"""

import shutil
import tempfile
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.util import minibatch
from transformers import AutoConfig, AutoTokenizer

from . import extensions  # noqa: F401 - registers doc._.dt4h_lang, doc._.dt4h_chars, span._.dt4h_score
from .authors import CharEntity, authors_entities
from .checkpoint import load_checkpoint_file, save_checkpoint
from .errors import CheckpointError, UnsupportedLanguageError
from .inference import WordTagger, torch_device
from .labels import HeadRoutes, LabelScheme
from .model import MultiTaskTokenClassifier, load_network, model_from_state_dict
from .sentences import sentence_starts
from .settings import (  # noqa: F401 - the option constants are part of this module's interface
    COMPAT_MODES,
    DEFAULT_CHECKPOINT,
    DEFAULT_SPANS_KEY,
    UNSUPPORTED_POLICIES,
    DiseaseSettings,
    default_config,
    with_settings_signature,
)
from .spans import non_overlapping, predicted_spans, word_texts, word_tokens

WEIGHTS_FILE = "model.safetensors"
FACTORY = "dt4h_disease"
DEFAULT_CONFIG: Dict[str, Any] = default_config()


@dataclass(frozen=True)
class DocPrediction:
    """What :meth:`DiseaseRecognizer.predict` found in one doc, before anything is written."""

    words: numpy.ndarray  # token index of each word the network read
    probs: Dict[str, numpy.ndarray]  # head → (n_words, n_labels) probabilities (compat="words")
    entities: Optional[List[CharEntity]] = None  # compat="authors": the authors' script's entities


@dataclass(frozen=True)
class DiseaseBatch:
    """:meth:`DiseaseRecognizer.predict`'s result, one entry per doc; ``None`` for a doc whose
    language no head reads (``unsupported`` skip/warn), which ``set_annotations`` leaves alone."""

    docs: List[Optional[DocPrediction]]


@Language.factory(
    FACTORY,
    assigns=["doc.ents", "doc.spans", "token.ent_iob", "token.ent_type", "span._.dt4h_score", "doc._.dt4h_chars"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
@with_settings_signature
def make_dt4h_disease(nlp: Language, name: str, *, scorer: Optional[Callable], **options: Any) -> "DiseaseRecognizer":
    return DiseaseRecognizer(nlp.vocab, name, settings=DiseaseSettings(**options), scorer=scorer)


class DiseaseRecognizer(TrainablePipe):
    """Sets ``doc.spans[spans_key]`` and ``doc.ents`` from a DT4H checkpoint (multi-task ``.pt``,
    multilabel ``.pt`` or single-task Hugging Face folder); options in :class:`DiseaseSettings`."""

    def __init__(
        self,
        vocab,
        name: str = FACTORY,
        *,
        settings: Optional[DiseaseSettings] = None,
        scorer: Optional[Callable] = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise TypeError(f"Pass either settings or options ({sorted(options)}), not both.")
        self.settings = settings if settings is not None else DiseaseSettings(**options)
        self.vocab = vocab
        self.name = name
        self.cfg: Dict[str, Any] = self.settings.to_cfg()
        self.scorer = scorer
        # compat="authors": entities seen, and how many were widened to token boundaries or
        # left out of doc.ents for overlapping a longer one (their exact offsets stay in
        # doc._.dt4h_chars either way).
        self.alignment: Counter = Counter()
        self._tagger: Optional[WordTagger] = None
        self._routes = HeadRoutes({})
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------
    @property
    def tagger(self) -> WordTagger:
        """The loaded network; loads the checkpoint on first access."""
        if self._tagger is None:
            with self._lock:
                if self._tagger is None:
                    self._install(*self._load_from_config())
        assert self._tagger is not None
        return self._tagger

    def initialize(self, get_examples: Optional[Callable[[], Iterable]] = None, *, nlp: Optional[Language] = None) -> None:
        """Load the checkpoint now rather than on the first document."""
        self.tagger  # noqa: B018 - loading is the side effect wanted here

    def _load_from_config(self):
        s = self.settings
        model, tokenizer, schemes = load_network(
            s.checkpoint, s.base_model, s.checkpoint_file, s.labels, allow_unsafe_pickle=s.allow_unsafe_pickle, mmap=True,
        )
        try:
            routes = HeadRoutes.for_heads(model.tasks, s.heads, s.tasks)
        except ValueError as err:
            raise CheckpointError(f"{err} Fix the `heads` or `tasks` config.") from err
        return model, tokenizer, schemes, routes

    def _install(self, model: MultiTaskTokenClassifier, tokenizer, schemes: Dict[str, LabelScheme], routes: HeadRoutes) -> None:
        # `tagger` reads `_tagger` without the lock, so it is published last: a thread that
        # sees the network must also see its routes.
        s = self.settings
        tagger = WordTagger(
            model=model,
            tokenizer=tokenizer,
            schemes=schemes,
            max_length=s.max_length,
            stride=s.stride,
            batch_size=s.batch_size,
            max_batch_subwords=s.max_batch_subwords,
            device=torch_device(s.device),
            precision=s.precision,
            quantize=s.quantize,
            num_threads=s.num_threads,
        )
        self._routes = routes
        self._tagger = tagger

    # -- prediction --------------------------------------------------------------------
    @property
    def languages(self) -> Dict[str, Tuple[str, ...]]:
        """Language → heads named for it (heads of :attr:`every_language` come on top)."""
        self.tagger  # noqa: B018 - routes are known once loaded
        return dict(self._routes.by_lang)

    @property
    def every_language(self) -> bool:
        """Whether some head (named by entity type alone) reads documents of any language."""
        self.tagger  # noqa: B018 - routes are known once loaded
        return self._routes.every_language

    @property
    def labels(self) -> tuple:
        if self._tagger is None:
            return ()
        schemes = self._tagger.schemes
        return tuple(sorted({t for task in self._routes.heads for t in schemes[task].entity_types}))

    def serves(self, lang: str) -> bool:
        """Whether some head reads documents in ``lang`` (spaCy's code or the head's own)."""
        self.tagger  # noqa: B018 - routes are known once loaded
        return bool(self._routes.heads_for(lang))

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Every doc of ``stream``, in order; a doc whose language no head reads goes to the
        ``unsupported`` policy (``raise``: to the error handler) on its own, so the rest of
        its batch is still annotated."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            served: List[Doc] = []
            for doc in docs:
                try:
                    if self._heads_for(doc):
                        served.append(doc)
                except UnsupportedLanguageError as err:
                    error_handler(self.name, self, [doc], err)
            if served:
                try:
                    self.set_annotations(served, self.predict(served))
                except Exception as err:
                    error_handler(self.name, self, served, err)
            yield from docs

    def predict(self, docs: Iterable[Doc]) -> DiseaseBatch:
        """Run the network on ``docs`` and return what it found; the docs are not touched.

        Each doc is read by the heads of its language (``unsupported="raise"``: an
        :class:`UnsupportedLanguageError` for a doc that has none)."""
        docs = list(docs)
        heads = [self._heads_for(doc) for doc in docs]
        found: List[Optional[DocPrediction]] = [None] * len(docs)
        served = [i for i, doc_heads in enumerate(heads) if doc_heads]
        if not served:
            return DiseaseBatch(found)
        tagger = self.tagger
        if self.settings.compat == "authors":
            entities = authors_entities(tagger, [docs[i].text for i in served], [heads[i] for i in served])
            for i, doc_entities in zip(served, entities):
                found[i] = DocPrediction(numpy.zeros(0, numpy.int64), {}, list(doc_entities))
            return DiseaseBatch(found)
        words = [word_tokens(docs[i]) for i in served]
        texts = [word_texts(docs[i], w) for i, w in zip(served, words)]
        starts = [sentence_starts(docs[i], w) for i, w in zip(served, words)]
        for i, w, by_head in zip(served, words, tagger.predict_heads(texts, [heads[i] for i in served], starts)):
            found[i] = DocPrediction(w, by_head)
        return DiseaseBatch(found)

    def set_annotations(self, docs: Iterable[Doc], batch: DiseaseBatch) -> None:
        """Write :meth:`predict`'s ``batch`` to ``docs``: spans above ``threshold`` to
        ``doc.spans[spans_key]``, a non-overlapping selection to ``doc.ents``."""
        threshold = self.settings.threshold
        for doc, prediction in zip(docs, batch.docs):
            if prediction is None:
                continue
            if prediction.entities is not None:
                self._set_authors_entities(doc, [e for e in prediction.entities if e.score >= threshold])
                continue
            schemes = self.tagger.schemes
            spans = [
                span
                for task, probs in prediction.probs.items()
                for span in predicted_spans(doc, prediction.words, probs, schemes[task], self.settings.orphan_i)
                if span._.dt4h_score >= threshold
            ]
            self._set_spans(doc, sorted(spans, key=lambda s: (s.start, s.end, s.label_)))

    def _set_authors_entities(self, doc: Doc, kept: List[CharEntity]) -> None:
        """Entities of the authors' script on the raw text: exact offsets in
        ``doc._.dt4h_chars``; ``doc.spans`` and ``doc.ents`` hold them widened to token
        boundaries (``doc.ents`` only a non-overlapping selection)."""
        doc._.dt4h_chars = [tuple(entity) for entity in kept]
        spans = [self._token_span(doc, entity) for entity in kept]
        fitted = self._set_spans(doc, spans)
        with self._lock:
            self.alignment["entities"] += len(kept)
            self.alignment["expanded"] += sum(
                (s.start_char, s.end_char) != (e.start, e.end) for s, e in zip(spans, kept)
            )
            self.alignment["overlapping"] += len(spans) - len(fitted)

    @staticmethod
    def _token_span(doc: Doc, entity: CharEntity) -> Span:
        span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode="expand")
        span._.dt4h_score = entity.score
        return span

    def _heads_for(self, doc: Doc) -> Tuple[str, ...]:
        """The heads for ``doc``'s language; none (the doc is left untouched) when no head
        reads it and ``unsupported`` is ``skip`` or ``warn``."""
        lang = doc._.dt4h_lang or doc.lang_
        self.tagger  # noqa: B018 - routes are known once loaded
        heads = self._routes.heads_for(lang)
        if heads:
            return heads
        message = (
            f"The {self.name} component has no head for language {lang!r}; it serves "
            f"{sorted(self._routes.by_lang)}. Set doc._.dt4h_lang to one of them, or map {lang!r} to a "
            "head with the `tasks` config"
        )
        if self.settings.unsupported == "raise":
            raise UnsupportedLanguageError(message + ".")
        if self.settings.unsupported == "warn":
            warnings.warn(message + "; such docs are left unannotated (unsupported='skip' silences this).",
                          stacklevel=2)
        return ()

    def _set_spans(self, doc: Doc, spans: List[Span]) -> List[Span]:
        """All ``spans`` to ``doc.spans[spans_key]``; those of :func:`non_overlapping` to
        ``doc.ents`` (see :meth:`_set_ents`), which are returned."""
        doc.spans[self.settings.spans_key] = spans
        selected = non_overlapping(spans)
        self._set_ents(doc, selected)
        return selected

    def _set_ents(self, doc: Doc, spans: List[Span]) -> None:
        """Merge new, non-overlapping spans with existing ones; existing win unless ``overwrite_ents``."""
        if not spans:
            return
        keep, add = (spans, list(doc.ents)) if self.settings.overwrite_ents else (list(doc.ents), spans)
        taken = numpy.zeros(len(doc), dtype=bool)
        for span in keep:
            taken[span.start : span.end] = True
        merged = keep + [s for s in add if not taken[s.start : s.end].any()]
        doc.ents = sorted(merged, key=lambda s: s.start)

    # -- serialization -----------------------------------------------------------------
    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        """Weights (safetensors), encoder config, tokenizer, labels and routes: all it needs."""
        tagger = self.tagger
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(tagger.state_dict(), path / WEIGHTS_FILE)
        tagger.model.encoder.config.save_pretrained(path / "encoder")
        tagger.tokenizer.save_pretrained(path / "tokenizer")
        srsly.write_json(
            path / "cfg.json",
            {
                "routes": self._routes.to_json(),
                "labels": {task: list(s.labels) for task, s in tagger.schemes.items()},
            },
        )

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "DiseaseRecognizer":
        path = Path(path)
        saved = srsly.read_json(path / "cfg.json")
        state = load_checkpoint_file(path / WEIGHTS_FILE)
        config = AutoConfig.from_pretrained(path / "encoder")
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", use_fast=True)
        model = model_from_state_dict(state, config)
        schemes = {task: LabelScheme(tuple(labels)) for task, labels in saved["labels"].items()}
        with self._lock:
            self._install(model, tokenizer, schemes, HeadRoutes.from_json(saved["routes"]))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(tmp)
            files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "DiseaseRecognizer":
        tmp = Path(tempfile.mkdtemp())
        try:
            for name, content in srsly.msgpack_loads(data).items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(content)
            return self.from_disk(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __reduce__(self):
        # Pipe's Cython pickling would copy the lock, which cannot be pickled.
        state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
        return (_unpickle, (type(self), self.name, state))


def _unpickle(cls: type, name: str, state: Dict[str, Any]) -> DiseaseRecognizer:
    component = cls.__new__(cls)
    component.name = name
    component.__dict__.update(state)
    component._lock = threading.Lock()
    return component
