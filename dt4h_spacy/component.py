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
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.util import minibatch
from transformers import AutoConfig, AutoTokenizer

from . import extensions  # noqa: F401 - registers doc._.dt4h_lang, doc._.dt4h_chars, span._.dt4h_score
from .authors import CharEntity, authors_entities
from .checkpoint import load_checkpoint_file, save_checkpoint
from .decoding import ORPHAN_I_MODES
from .errors import CheckpointError, UnsupportedLanguageError
from .inference import WordTagger, check_speed_options, torch_device
from .labels import HeadRoutes, LabelScheme
from .model import MultiTaskTokenClassifier, load_network, model_from_state_dict
from .sentences import sentence_starts
from .spans import non_overlapping, predicted_spans, word_texts, word_tokens
from .windows import check_window_settings

DEFAULT_CHECKPOINT = "BSC-NLP4BIA/DT4H_XLM-R_mtl_es-it-ro_disease"
DEFAULT_SPANS_KEY = "dt4h"
WEIGHTS_FILE = "model.safetensors"

FACTORY = "dt4h_disease"
COMPAT_MODES = ("words", "authors")
UNSUPPORTED_POLICIES = ("raise", "skip", "warn")

DEFAULT_CONFIG: Dict[str, Any] = {
    "checkpoint": DEFAULT_CHECKPOINT,
    "checkpoint_file": None,
    "base_model": None,
    "tasks": None,
    "heads": None,
    "labels": None,
    "spans_key": DEFAULT_SPANS_KEY,
    "orphan_i": "ignore",
    "compat": "words",
    "overwrite_ents": False,
    "threshold": 0.0,
    "batch_size": None,
    "max_batch_subwords": 16384,
    "max_length": 512,
    "stride": 128,
    "device": "cpu",
    "precision": "fp32",
    "quantize": False,
    "num_threads": None,
    "allow_unsafe_pickle": False,
    "unsupported": "warn",
    "scorer": {"@scorers": "spacy.ner_scorer.v1"},
}


@Language.factory(
    FACTORY,
    assigns=["doc.ents", "doc.spans", "token.ent_iob", "token.ent_type", "span._.dt4h_score", "doc._.dt4h_chars"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_dt4h_disease(
    nlp: Language,
    name: str,
    checkpoint: str,
    checkpoint_file: Optional[str],
    base_model: Optional[str],
    tasks: Optional[Dict[str, Union[str, List[str]]]],
    heads: Optional[List[str]],
    labels: Optional[List[str]],
    spans_key: str,
    orphan_i: str,
    compat: str,
    overwrite_ents: bool,
    threshold: float,
    batch_size: Optional[int],
    max_batch_subwords: Optional[int],
    max_length: int,
    stride: int,
    device: str,
    precision: str,
    quantize: bool,
    num_threads: Optional[int],
    allow_unsafe_pickle: bool,
    unsupported: str,
    scorer: Optional[Callable],
) -> "DiseaseRecognizer":
    return DiseaseRecognizer(
        nlp.vocab,
        name,
        checkpoint=checkpoint,
        checkpoint_file=checkpoint_file,
        base_model=base_model,
        tasks=tasks,
        heads=heads,
        labels=labels,
        spans_key=spans_key,
        orphan_i=orphan_i,
        compat=compat,
        overwrite_ents=overwrite_ents,
        threshold=threshold,
        batch_size=batch_size,
        max_batch_subwords=max_batch_subwords,
        max_length=max_length,
        stride=stride,
        device=device,
        precision=precision,
        quantize=quantize,
        num_threads=num_threads,
        allow_unsafe_pickle=allow_unsafe_pickle,
        unsupported=unsupported,
        scorer=scorer,
    )


class DiseaseRecognizer(Pipe):
    """Sets ``doc.spans[spans_key]`` and ``doc.ents`` from a DT4H checkpoint (multi-task ``.pt``,
    multilabel ``.pt`` or single-task Hugging Face folder)."""

    def __init__(
        self,
        vocab,
        name: str = "dt4h_disease",
        *,
        checkpoint: str = DEFAULT_CHECKPOINT,
        checkpoint_file: Optional[str] = None,
        base_model: Optional[str] = None,
        tasks: Optional[Dict[str, Union[str, List[str]]]] = None,
        heads: Optional[Sequence[str]] = None,
        labels: Optional[Sequence[str]] = None,
        spans_key: str = DEFAULT_SPANS_KEY,
        orphan_i: str = "ignore",
        compat: str = "words",
        overwrite_ents: bool = False,
        threshold: float = 0.0,
        batch_size: Optional[int] = None,
        max_batch_subwords: Optional[int] = 16384,
        max_length: int = 512,
        stride: int = 128,
        device: str = "cpu",
        precision: str = "fp32",
        quantize: bool = False,
        num_threads: Optional[int] = None,
        allow_unsafe_pickle: bool = False,
        unsupported: str = "warn",
        scorer: Optional[Callable] = None,
    ) -> None:
        if orphan_i not in ORPHAN_I_MODES:
            raise ValueError(f"orphan_i must be one of {ORPHAN_I_MODES}, got {orphan_i!r}.")
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}.")
        if unsupported not in UNSUPPORTED_POLICIES:
            raise ValueError(f"unsupported must be one of {UNSUPPORTED_POLICIES}, got {unsupported!r}.")
        if compat == "authors" and orphan_i != "ignore":
            raise ValueError(
                "compat='authors' reads BIO as the authors' script does (orphan_i='ignore'); "
                f"drop orphan_i={orphan_i!r} or use compat='words'."
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (a span._.dt4h_score), got {threshold}.")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (or null: by device), got {batch_size}.")
        if max_batch_subwords is not None and max_batch_subwords < 1:
            raise ValueError(f"max_batch_subwords must be at least 1 (or null for no cap), got {max_batch_subwords}.")
        if not spans_key:
            raise ValueError("spans_key must name a doc.spans group, e.g. 'dt4h'.")
        check_window_settings(max_length, stride)
        if device != "auto":  # "auto" is only known at load time, where the check runs again
            check_speed_options(torch_device(device), precision, quantize, num_threads)
        self.vocab = vocab
        self.name = name
        self.cfg: Dict[str, Any] = {
            "checkpoint": checkpoint,
            "checkpoint_file": checkpoint_file,
            "base_model": base_model,
            "tasks": dict(tasks) if tasks else None,
            "heads": list(heads) if heads else None,
            "labels": list(labels) if labels else None,
            "spans_key": spans_key,
            "orphan_i": orphan_i,
            "compat": compat,
            "overwrite_ents": overwrite_ents,
            "threshold": threshold,
            "batch_size": batch_size,
            "max_batch_subwords": max_batch_subwords,
            "max_length": max_length,
            "stride": stride,
            "device": device,
            "precision": precision,
            "quantize": quantize,
            "num_threads": num_threads,
            "allow_unsafe_pickle": allow_unsafe_pickle,
            "unsupported": unsupported,
        }
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
        model, tokenizer, schemes = load_network(
            self.cfg["checkpoint"], self.cfg["base_model"], self.cfg["checkpoint_file"], self.cfg["labels"],
            allow_unsafe_pickle=self.cfg["allow_unsafe_pickle"], mmap=True,
        )
        try:
            routes = HeadRoutes.for_heads(model.tasks, self.cfg["heads"], self.cfg["tasks"])
        except ValueError as err:
            raise CheckpointError(f"{err} Fix the `heads` or `tasks` config.") from err
        return model, tokenizer, schemes, routes

    def _install(self, model: MultiTaskTokenClassifier, tokenizer, schemes: Dict[str, LabelScheme], routes: HeadRoutes) -> None:
        # `tagger` reads `_tagger` without the lock, so it is published last: a thread that
        # sees the network must also see its routes.
        tagger = WordTagger(
            model=model,
            tokenizer=tokenizer,
            schemes=schemes,
            max_length=self.cfg["max_length"],
            stride=self.cfg["stride"],
            batch_size=self.cfg["batch_size"],
            max_batch_subwords=self.cfg["max_batch_subwords"],
            device=torch_device(self.cfg["device"]),
            precision=self.cfg["precision"],
            quantize=self.cfg["quantize"],
            num_threads=self.cfg["num_threads"],
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
        heads = self._heads_for(doc)
        if heads:
            self._annotate([doc], [heads])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Every doc of ``stream``, in order; a doc whose language no head reads goes to the
        ``unsupported`` policy (``raise``: to the error handler) on its own, so the rest of
        its batch is still annotated."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            served: List[Tuple[Doc, Tuple[str, ...]]] = []
            for doc in docs:
                try:
                    heads = self._heads_for(doc)
                except UnsupportedLanguageError as err:
                    error_handler(self.name, self, [doc], err)
                    continue
                if heads:
                    served.append((doc, heads))
            if served:
                try:
                    self._annotate([doc for doc, _ in served], [heads for _, heads in served])
                except Exception as err:
                    error_handler(self.name, self, [doc for doc, _ in served], err)
            yield from docs

    def _annotate(self, docs: Sequence[Doc], heads: Sequence[Tuple[str, ...]]) -> None:
        tagger = self.tagger
        if self.cfg["compat"] == "authors":
            self._annotate_as_authors(docs, heads)
            return
        words = [word_tokens(doc) for doc in docs]
        texts = [word_texts(doc, w) for doc, w in zip(docs, words)]
        starts = [sentence_starts(doc, w) for doc, w in zip(docs, words)]
        threshold = self.cfg["threshold"]
        for doc, w, by_head in zip(docs, words, tagger.predict_heads(texts, heads, starts)):
            spans = [
                span
                for task, probs in by_head.items()
                for span in predicted_spans(doc, w, probs, tagger.schemes[task], self.cfg["orphan_i"])
                if span._.dt4h_score >= threshold
            ]
            self._set_spans(doc, sorted(spans, key=lambda s: (s.start, s.end, s.label_)))

    def _annotate_as_authors(self, docs: Sequence[Doc], heads: Sequence[Sequence[str]]) -> None:
        """Entities by the authors' script on the raw text: exact offsets in
        ``doc._.dt4h_chars``; ``doc.spans`` and ``doc.ents`` hold them widened to token
        boundaries (``doc.ents`` only a non-overlapping selection)."""
        threshold = self.cfg["threshold"]
        found = authors_entities(self.tagger, [doc.text for doc in docs], heads)
        for doc, entities in zip(docs, found):
            kept = [entity for entity in entities if entity.score >= threshold]
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
        if self.cfg["unsupported"] == "raise":
            raise UnsupportedLanguageError(message + ".")
        if self.cfg["unsupported"] == "warn":
            warnings.warn(message + "; such docs are left unannotated (unsupported='skip' silences this).",
                          stacklevel=2)
        return ()

    def _set_spans(self, doc: Doc, spans: List[Span]) -> List[Span]:
        """All ``spans`` to ``doc.spans[spans_key]``; those of :func:`non_overlapping` to
        ``doc.ents`` (see :meth:`_set_ents`), which are returned."""
        doc.spans[self.cfg["spans_key"]] = spans
        selected = non_overlapping(spans)
        self._set_ents(doc, selected)
        return selected

    def _set_ents(self, doc: Doc, spans: List[Span]) -> None:
        """Merge new, non-overlapping spans with existing ones; existing win unless ``overwrite_ents``."""
        if not spans:
            return
        keep, add = (spans, list(doc.ents)) if self.cfg["overwrite_ents"] else (list(doc.ents), spans)
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
