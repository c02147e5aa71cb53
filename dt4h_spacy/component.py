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
import torch
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch
from thinc.api import Model, Optimizer
from transformers import AutoConfig, AutoTokenizer

from . import extensions  # noqa: F401 - registers doc._.dt4h_lang, doc._.dt4h_chars, span._.dt4h_score
from . import stages
from .authors import CharEntity, authors_entities
from .checkpoint import load_checkpoint_file, save_checkpoint
from .errors import CheckpointError, TrainingDataError, UnsupportedLanguageError
from .gold import TrainingBatch, annotated, describe, example_language, example_units, training_batch
from .inference import WordTagger, torch_device
from .labels import HeadRoutes, LabelScheme
from .model import MultiTaskTokenClassifier, load_network, model_from_state_dict
from .network import thinc_network, unloaded_network
from .settings import (  # noqa: F401 - the option constants are part of this module's interface
    COMPAT_MODES,
    DEFAULT_CHECKPOINT,
    DEFAULT_SPANS_KEY,
    UNSUPPORTED_POLICIES,
    DiseaseSettings,
    default_config,
    with_settings_signature,
)
from .spans import make_spans, non_overlapping
from .stages import DocWords

WEIGHTS_FILE = "model.safetensors"
FACTORY = "dt4h_disease"
DEFAULT_CONFIG: Dict[str, Any] = default_config()


@dataclass(frozen=True)
class DocPrediction:
    """What :meth:`DiseaseRecognizer.predict` found in one doc, before anything is written."""

    words: numpy.ndarray  # token index of each word the network read
    probs: Dict[str, numpy.ndarray]  # head → (n_words, n_labels) probabilities (compat="words")
    entities: Optional[List[CharEntity]] = None  # compat="authors": the authors' script's entities
    read: Optional[DocWords] = None  # compat="words": the preprocess stage's words, for postprocess


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
        self._network: Optional[Model] = None
        self._unloaded = unloaded_network()
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

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None) -> None:
        """Load the checkpoint now rather than on the first document; with ``get_examples``
        (``spacy train``), check the whole training corpus before any step: a doc whose
        language has no head, a gold span off the tokens, a label no head predicts, or no
        doc at all is a :class:`TrainingDataError` naming the doc and the way out."""
        self.tagger  # noqa: B018 - loading is the side effect wanted here
        if get_examples is None:
            return
        n_docs = 0
        for index, example in enumerate(get_examples()):
            n_docs += 1
            if annotated(example):  # spaCy's placeholder when called without data has none
                example_units(example, index, self._training_heads(example, index), self.tagger.schemes)
        if not n_docs:
            raise TrainingDataError(
                f"The training corpus of {self.name} holds no document. Check [paths] train "
                "(a .spacy file or folder from `dt4h-spacy convert`)."
            )

    @property
    def model(self) -> Model:
        """The network as a thinc model (see :mod:`.network`). Before the network is loaded
        (``initialize``, ``from_disk`` or the first doc) a stand-in: spaCy looks at a pipe's
        model in places (``nlp.pipe(n_process=2)`` asks whether it is on a GPU) that must
        not load a network into the parent process."""
        tagger = self._tagger
        if tagger is None:
            return self._unloaded
        if self._network is None:
            with self._lock:
                if self._network is None:
                    self._network = thinc_network(tagger.model, tagger.device)
        return self._network

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
        self._network = None  # rebuilt around the new network on first use
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
                    if self.heads_for(doc):
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
        heads = [self.heads_for(doc) for doc in docs]
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
        prepared = self.preprocess([docs[i] for i in served], [heads[i] for i in served])
        tagger.ready()
        return self.batch_of(len(docs), served, prepared, stages.run(tagger, prepared))

    def preprocess(self, docs: Sequence[Doc], heads: Sequence[Tuple[str, ...]]) -> stages.Prepared:
        """The CPU stage before the network (``compat="words"``): ``docs`` read by ``heads[i]``
        as words, subwords and windows. Needs the tokenizer, not the network's forward pass, so
        a CPU worker process runs it (:mod:`dt4h_spacy.engines.workers`)."""
        tagger = self.tagger
        return stages.preprocess(docs, heads, tagger.tokenizer, tagger.max_length, tagger.stride)

    def batch_of(self, n_docs: int, served: Sequence[int], prepared: stages.Prepared,
                 probs: Sequence[Dict[str, numpy.ndarray]]) -> DiseaseBatch:
        """The :class:`DiseaseBatch` of ``n_docs`` docs whose ``served`` ones were prepared
        (:meth:`preprocess`) and run through the network (``probs``, from :func:`~dt4h_spacy.stages.run`)."""
        found: List[Optional[DocPrediction]] = [None] * n_docs
        for i, read, by_head in zip(served, prepared.docs, probs):
            found[i] = DocPrediction(read.tokens, by_head, read=read)
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
            read = prediction.read
            if read is None:  # a batch built by hand: words and probabilities only
                read = stages.read_words(doc, tuple(prediction.probs))
            entities = stages.postprocess(read, prediction.probs, self.tagger.schemes, self.settings.orphan_i,
                                          threshold)
            spans = make_spans(doc, entities.starts, entities.ends, entities.labels, entities.scores)
            apart = bool((entities.starts[1:] >= entities.ends[:-1]).all())  # in order, no shared token
            self._set_spans(doc, spans, None if apart else entities.scores.tolist(), apart)

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

    # -- training ----------------------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """One step of spaCy's loop: the authors' loss on ``examples``, each doc's words
        trained on the heads of its language; ``drop`` is the dropout before the heads."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        tagger = self.tagger
        if tagger.quantize:
            raise ValueError(f"{self.name} cannot train an int8-quantized network; set quantize = false.")
        network = self.model
        units = [
            unit
            for index, example in enumerate(examples)
            if annotated(example)
            for unit in example_units(example, index, self._training_heads(example, index), tagger.schemes)
        ]
        batch = training_batch(units, tagger.tokenizer, tagger.schemes, self.settings.max_length, self.settings.stride)
        if batch is None:
            return losses
        tagger.model.dropout.p = drop
        logits, backprop = network.begin_update(batch.windows)
        loss, d_logits = self.get_loss(examples, (logits, batch))
        backprop(d_logits)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Tuple[Dict[str, Any], TrainingBatch]) -> Tuple[float, Dict[str, Any]]:
        """The authors' loss: cross-entropy of each word's first subword, averaged over the
        words of the batch (every head's together); returns it and its gradient per head."""
        logits, batch = scores
        loss, grads = 0.0, {}
        for task, task_logits in logits.items():
            leaf = task_logits.detach().requires_grad_()
            target = torch.from_numpy(batch.targets[task]).to(leaf.device)
            task_loss = torch.nn.functional.cross_entropy(leaf, target, reduction="sum") / batch.n_words
            task_loss.backward()
            grads[task] = leaf.grad
            loss += float(task_loss.detach())
        return loss, grads

    def finish_update(self, sgd: Optimizer) -> None:
        """Step, then forget the gradients: a head no batch reached since keeps its weights
        (thinc would otherwise decay and move it on a zero gradient)."""
        self.model.finish_update(sgd)
        for param in self.tagger.model.parameters():
            param.grad = None

    def _training_heads(self, example: Example, index: int) -> Tuple[str, ...]:
        lang = example_language(example)
        heads = self._routes.heads_for(lang)
        if not heads:
            raise TrainingDataError(
                f"{describe(example.predicted, index)} is in {lang!r}, which no head of {self.name} reads "
                f"(it serves {sorted(self._routes.by_lang)}). Set its doc._.dt4h_lang (`dt4h-spacy convert` "
                "keeps each doc's language), or map the language to a head with the `tasks` option."
            )
        return heads

    @staticmethod
    def _token_span(doc: Doc, entity: CharEntity) -> Span:
        span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode="expand")
        span._.dt4h_score = entity.score
        return span

    def heads_for(self, doc: Doc) -> Tuple[str, ...]:
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

    def _set_spans(self, doc: Doc, spans: List[Span], scores: Optional[List[float]] = None,
                   apart: bool = False) -> List[Span]:
        """All ``spans`` to ``doc.spans[spans_key]``; those of :func:`non_overlapping` to
        ``doc.ents`` (see :meth:`_set_ents`), which are returned. ``scores``: the spans' own,
        when known, so they are not read back through ``span._``; ``apart``: the spans are
        known to be in order and share no token, so all are selected."""
        doc.spans[self.settings.spans_key] = spans
        if apart:
            selected = list(spans)
        elif scores is None:
            selected = non_overlapping(spans)
        else:
            bounds = [(span.start_char, span.end_char, score) for span, score in zip(spans, scores)]
            selected = [spans[k] for k in non_overlapping(range(len(spans)), bounds.__getitem__)]
        self._set_ents(doc, selected)
        return selected

    def _set_ents(self, doc: Doc, spans: List[Span]) -> None:
        """Merge new, non-overlapping spans with existing ones; existing win unless ``overwrite_ents``."""
        if not spans:
            return
        keep, add = (spans, list(doc.ents)) if self.settings.overwrite_ents else (list(doc.ents), spans)
        merged = keep + [add[k] for k in numpy.flatnonzero(_untouched(keep, add, len(doc))).tolist()]
        doc.set_ents(sorted(merged, key=lambda s: s.start), default="outside")  # what `doc.ents = ...` does

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
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_network", "_unloaded")}
        return (_unpickle, (type(self), self.name, state))


def _untouched(keep: Sequence[Span], add: Sequence[Span], n_tokens: int) -> numpy.ndarray:
    """For each span of ``add``, whether it shares no token with any span of ``keep``."""
    if not keep:
        return numpy.ones(len(add), dtype=bool)
    edges = numpy.zeros(n_tokens + 1, dtype=numpy.int64)
    numpy.add.at(edges, [s.start for s in keep], 1)
    numpy.add.at(edges, [s.end for s in keep], -1)
    taken = numpy.r_[0, numpy.cumsum(numpy.cumsum(edges)[:n_tokens] > 0)]
    starts = numpy.array([s.start for s in add], dtype=numpy.int64)
    ends = numpy.array([s.end for s in add], dtype=numpy.int64)
    return taken[ends] == taken[starts]


def _unpickle(cls: type, name: str, state: Dict[str, Any]) -> DiseaseRecognizer:
    component = cls.__new__(cls)
    component.name = name
    component.__dict__.update(state)
    component._lock = threading.Lock()
    component._network = None
    component._unloaded = unloaded_network()
    return component
