"""The annotate step that ``predict``, ``visualize`` and both engines share: checking their
option values, loading the model once, routing each document to its language's head and tagging documents
in batches (:class:`Pipelines`), and the one function from an annotated doc to its rows
(:func:`doc_mentions`).

The CLI's options are declared in :mod:`dt4h_spacy.cli_options`; here bad values raise the
package's errors (:mod:`dt4h_spacy.errors`), so engines and scripts need no CLI library.
Where documents come from is :mod:`dt4h_spacy.io`, how the work is scheduled
:mod:`dt4h_spacy.engines`.
"""

import os
import sys
from collections import defaultdict, deque
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import (
    Any,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from .checkpoint import check_pipeline_folder
from .component import DEFAULT_SPANS_KEY, FACTORY, DiseaseRecognizer
from .errors import RunError, UsageError
from .filenames import lang_from_filename, spacy_lang
from .io.records import RESERVED, AnnotatedDoc, Document, Failure, Mention, span_mention
from .io.sources import Source
from .io.tables import Columns, TableError
from .pipes.langdetect.detect import check_languages, serving_language
from .pipes.context import FACTORY as CONTEXT_FACTORY
from .pipes.context import ContextQualifier
from .pipes.context.component import span_qualifiers
from .routing import RoutingError, language_code, route_language
from .settings import CPU_STEPS, DEFAULT_CHECKPOINT
from .textfiles import check_encoding


def normalize_lang(value: str) -> str:
    """``ES``, ``es_ES`` and ``es-ES`` → ``es``, as spaCy and Hugging Face users write them;
    ``auto`` and ``detect`` stay (``detect`` only where the language identifier is installed).
    Anything else is refused with the codes to use."""
    code = language_code(value)
    if code is None:
        raise UsageError(f"{value!r} is not a language code; use es, it, ro (a language the model has a "
                         "head for), auto or detect.")
    if code == "detect":
        try:
            check_languages(["es"])
        except ImportError as err:
            raise UsageError(str(err)) from err
    return code


def fallback_lang(value: Optional[str]) -> Optional[str]:
    """``--fallback-lang`` as a language code (``auto``/``detect`` name no language)."""
    if value is None:
        return None
    code = language_code(value)
    if code is None or code in ("auto", "detect"):
        raise UsageError(f"{value!r} is not a language code; give one, e.g. --fallback-lang es.")
    return code


def kept_columns(value: Optional[str]) -> Tuple[str, ...]:
    """``--keep-columns`` as names, each once; a mention field's name would be overwritten, so it is refused."""
    names = tuple(dict.fromkeys(name.strip() for name in (value or "").split(",") if name.strip()))
    taken = [name for name in names if name in RESERVED]
    if taken:
        raise UsageError(f"{', '.join(map(repr, taken))} would overwrite the mention field(s) of that name "
                         f"({', '.join(RESERVED)}); the document's id is already written as 'id'.")
    return names


def encoding_name(value: str) -> str:
    """``--encoding`` as Python's name for it, or the names to use."""
    try:
        return check_encoding(value)
    except LookupError as err:
        raise UsageError(str(err)) from err


def delimiter_char(value: Optional[str]) -> Optional[str]:
    """``--delimiter`` as one character (``\\t`` and ``tab`` name a tab)."""
    if value is None:
        return None
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1 or value in "\"\r\n":
        raise UsageError(f"{value!r} is not a delimiter; give one character, e.g. --delimiter ';'.")
    return value


def context_config(context: bool, rule_files: Optional[Sequence[Path]]) -> Optional[Dict[str, Any]]:
    """dt4h_context's config for ``--context``/``--context-rules``; None when neither is given."""
    if not context and not rule_files:
        return None
    return {"rule_files": [str(path) for path in rule_files or ()]}


def model_label(model: Optional[str], checkpoint: Optional[str]) -> str:
    """The model's name in CDM ``service_model``: the pipeline's or checkpoint's file name (never
    the server's folders), or the published checkpoint's id."""
    chosen = model or checkpoint
    return Path(chosen).name if chosen else DEFAULT_CHECKPOINT


def error(message: str) -> None:
    """One problem on stderr, as every command and engine reports it."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    """A warning on stderr: the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def report_failures(failures: List[Failure]) -> None:
    for failure in failures:
        error(f"skipped {failure}")


# ------------------------------------------------------------------ inputs and languages


def _shown(names: List[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def warn_language_conflicts(paths: List[Path], lang: str) -> None:
    """Warn when ``--lang`` contradicts the language MultiClinNER file names carry: the head
    of the wrong language gives poor entities without any error."""
    if lang in ("auto", "detect"):
        return
    named: Dict[str, List[str]] = defaultdict(list)
    for path in paths:
        code = lang_from_filename(path.name)
        if code is not None and spacy_lang(code) != spacy_lang(lang):
            named[code].append(path.name)
    for code, names in sorted(named.items()):
        warning(f"--lang {lang}, but {len(names)} file(s) are named as {code}: {_shown(names)}; they are "
                   f"annotated as {lang} (use --lang auto to follow the names).")


def open_source(source: Path, lang: str, recursive: bool, encoding: str, columns: Columns,
                delimiter: Optional[str] = None) -> Source:
    """INPUT as a :class:`~dt4h_spacy.io.sources.Source`, or a :class:`~dt4h_spacy.errors.UsageError` saying why it
    cannot be one; for text files, warn where ``--lang`` contradicts their names."""
    try:
        opened = Source.open(source, columns, recursive, encoding, delimiter)
    except (OSError, TableError) as err:
        raise UsageError(str(err), option="INPUT") from err
    if columns.lang is not None and opened.columns is None:
        raise UsageError("--lang-column is for tables; INPUT is text files.", option="--lang-column")
    if columns.keep and opened.columns is None:
        raise UsageError("--keep-columns is for tables; INPUT is text files.", option="--keep-columns")
    warn_language_conflicts(opened.paths, lang)
    return opened


def prepare_output(output: Path) -> None:
    """Refuse a folder as OUTPUT and create OUTPUT's missing parent folders."""
    if output.is_dir():
        raise UsageError(f"{output} is a folder; give the path of the file to write.", option="OUTPUT")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the folder {output.parent}: {err.strerror or err}.",
                         option="OUTPUT") from err
    if not os.access(output.parent, os.W_OK):
        raise UsageError(f"cannot write into {output.parent}: it is not writable.", option="OUTPUT")


# --------------------------------------------------------------------------------- model


def _saved_config_path(model: str) -> Path:
    """``config.cfg`` of a pipeline folder or of an installed pipeline package."""
    if Path(model).exists():
        return Path(model) / "config.cfg"
    if spacy.util.is_package(model):
        root = spacy.util.get_package_path(model)
        meta = spacy.util.get_model_meta(root)
        return root / f"{meta['lang']}_{meta['name']}-{meta['version']}" / "config.cfg"
    raise OSError(f"cannot find the pipeline {model!r}: it is neither a folder nor an installed pipeline package.")


def load_pipeline(model: str, settings: Mapping[str, Any]) -> Language:
    """A saved pipeline (folder or installed package) with ``settings`` applied to each of its
    dt4h_disease components, as config overrides."""
    config = spacy.util.load_config(_saved_config_path(model))
    names = [name for name, block in config.get("components", {}).items() if block.get("factory") == FACTORY]
    overrides = {f"components.{name}.{key}": value for name in names for key, value in settings.items()}
    return spacy.load(model, config=overrides)


def served_languages(nlp: Language) -> Optional[Set[str]]:
    """Languages the pipeline's dt4h_disease components have heads for (loading the network
    now); None for a pipeline without one, or with a head that reads every language, which
    then takes any language."""
    components = [component for _, component in nlp.pipeline if isinstance(component, DiseaseRecognizer)]
    if not components or any(component.every_language for component in components):
        return None
    return {lang for component in components for lang in component.languages}


def _lift_length_limit(nlp: Language) -> None:
    """Accept files of any length when the pipeline is only dt4h_disease (and dt4h_context).

    spaCy refuses texts over ``nlp.max_length`` (1M characters) to protect the memory of its
    parser and NER; dt4h_disease reads any length in windows, so for it the limit would only
    turn a long clinical record into a failure.
    """
    if all(isinstance(component, (DiseaseRecognizer, ContextQualifier)) for _, component in nlp.pipeline):
        nlp.max_length = sys.maxsize


DocKey = Tuple[str, Union[str, Path], Mapping[str, Any]]  # a document's name, path and metadata


class Pipelines:
    """The model, loaded once on the first document that needs it, and a tokenizer per language.

    Each document is routed (:func:`~dt4h_spacy.routing.route_language`), tokenized by its
    language's spaCy tokenizer (``--model``: the pipeline's own) and tagged by the head of its
    language; every language shares the one network. Nothing is loaded while no document
    can be routed, so a folder of unroutable files fails fast without a model. The options
    are plain values, so an engine can build the same object in another process.
    """

    def __init__(self, lang: str, model: Optional[str] = None, checkpoint: Optional[str] = None,
                 base_model: Optional[str] = None, settings: Optional[Dict[str, Any]] = None,
                 fallback: Optional[str] = None, context: Optional[Dict[str, Any]] = None) -> None:
        if model is not None and (checkpoint or base_model):
            raise UsageError("use either --model or --checkpoint/--base-model, not both.",
                             option="--model")
        self.lang, self.model, self.checkpoint, self.base_model = lang, model, checkpoint, base_model
        self.settings = dict(settings or {})
        self.fallback = fallback
        self.context = context  # dt4h_context's config (``predict --context``); None: only what the model has
        self._nlp: Optional[Language] = None
        self._served: Optional[Set[str]] = None
        self._own_tokenizer = model is not None  # a saved pipeline tokenizes with its own tokenizer
        self._languages: Dict[str, Language] = {}  # language code → the pipeline that tokenizes it

    @classmethod
    def of(cls, nlp: Language, lang: str = "auto", fallback: Optional[str] = None) -> "Pipelines":
        """Pipelines around an already loaded ``nlp`` (it tokenizes and tags every language)."""
        pipelines = cls(lang, fallback=fallback)
        pipelines._nlp, pipelines._served, pipelines._own_tokenizer = nlp, served_languages(nlp), True
        return pipelines

    def load(self) -> Language:
        """The loaded pipeline. An unusable model, or an explicit ``--lang`` it has no head
        for, raises :class:`~dt4h_spacy.errors.RunError` (exit code 2)."""
        if self._nlp is not None:
            return self._nlp
        # A component that cannot serve a document's language leaves it to the others; the
        # document is reported in make_doc (skipped there when no component serves it).
        settings = {**self.settings, "unsupported": "skip"}
        try:
            if self.model is not None:
                check_pipeline_folder(Path(self.model))
                nlp = load_pipeline(self.model, settings)
            else:
                nlp = spacy.blank("xx")
                config = {key: value for key, value in (("checkpoint", self.checkpoint),
                                                        ("base_model", self.base_model)) if value}
                nlp.add_pipe(FACTORY, config={**config, **settings})
            if self.context is not None and CONTEXT_FACTORY not in nlp.pipe_names:
                nlp.add_pipe(CONTEXT_FACTORY, config=self.context)
            served = served_languages(nlp)
        except (ImportError, OSError, ValueError) as err:  # CheckpointError is a ValueError; E048 an ImportError
            raise RunError(str(err), 2) from err
        for given, hint in ((self.lang, "--lang"), (self.fallback, "--fallback-lang")):
            if served is not None and given not in (None, "auto", "detect") and given not in served:
                raise UsageError(f"the model has no head for language {given!r}; it serves "
                                 f"{', '.join(sorted(served))}.", option=hint)
        _lift_length_limit(nlp)
        self._nlp, self._served = nlp, served
        return nlp

    def for_cpu_steps(self) -> "Pipelines":
        """These pipelines as a process that prepares windows and decodes, but never runs a
        network, loads them (:data:`~dt4h_spacy.settings.CPU_STEPS`: weights on the CPU, as stored)."""
        return Pipelines(self.lang, self.model, self.checkpoint, self.base_model, {**self.settings, **CPU_STEPS},
                         self.fallback, self.context)

    def device_components(self) -> List[str]:
        """The names of the ``dt4h_disease`` components, in pipeline order, read from the
        pipeline's config: the network is not loaded."""
        if self._nlp is not None:
            return [name for name, component in self._nlp.pipeline if isinstance(component, DiseaseRecognizer)]
        if self.model is None:
            return [FACTORY]
        try:
            config = spacy.util.load_config(_saved_config_path(self.model))
        except (OSError, ValueError) as err:
            raise RunError(str(err), 2) from err
        blocks = config.get("components", {})
        return [name for name in config["nlp"]["pipeline"] if blocks.get(name, {}).get("factory") == FACTORY]

    def _language(self, code: str) -> Language:
        """The pipeline that tokenizes documents in ``code``: the model's own (``--model``), else a blank one."""
        if code not in self._languages:
            if self._own_tokenizer:
                self._languages[code] = self.load()
            else:
                blank = spacy.blank(spacy_lang(code))
                blank.max_length = sys.maxsize  # the pipeline is only dt4h_disease (see _lift_length_limit)
                self._languages[code] = blank
        return self._languages[code]

    def restore(self, data: bytes, code: str) -> Doc:
        """A doc of language ``code`` tokenized by :meth:`make_doc` in another process and sent
        as ``Doc.to_bytes``, restored with the vocab that tokenized it (lexical attributes are
        the language's)."""
        return Doc(self._language(code).vocab).from_bytes(data)

    def make_doc(self, document: Document) -> Doc:
        """``document`` tokenized and routed (``doc._.dt4h_lang``); a :class:`RoutingError`
        when no head can take it, a ``ValueError`` when spaCy refuses the text. An empty or
        blank text that no language can be told for is a document without mentions (``xx``),
        not a failure: there is nothing to annotate in any language."""
        try:
            found = route_language(document.name, document.text, document.lang, self.lang)
        except RoutingError:
            if document.text.strip():
                raise
            doc = self._language("xx").make_doc(document.text)
            doc._.dt4h_lang = "xx"
            return doc
        self.load()
        code = serving_language(found, self._served, self.fallback)
        if code is None:
            raise RoutingError(f"the model has no head for language {found!r} (it serves "
                               f"{', '.join(sorted(self._served or ()))}); pass --fallback-lang with one of them to "
                               "annotate it anyway")
        if code == self.fallback and found != code:
            warning(f"{document.name} is in {found}, which the model has no head for; annotated as "
                       f"{code} (--fallback-lang)")
        self._report_partial_service(document.name, code)
        doc = self._language(code).make_doc(document.text)
        doc._.dt4h_lang = code
        return doc

    def _report_partial_service(self, name: str, code: str) -> None:
        """Warn when some of the pipeline's components have no head for ``code``: they leave
        document ``name`` to the components that have one."""
        components = [(n, c) for n, c in self.load().pipeline if isinstance(c, DiseaseRecognizer)]
        missing = [n for n, c in components if not c.serves(code)]
        if missing:
            serving = [n for n, c in components if c.serves(code)]
            warning(f"{name} is in {code}, which the {', '.join(missing)} component(s) have no head "
                       f"for; annotated by {', '.join(serving)} only")

    def annotate(self, items: Iterable[Union[Document, Failure]], batch_size: int = 32,
                 n_process: int = 1) -> Iterator[Union[AnnotatedDoc, Failure]]:
        """Every item annotated, or a failure (it was one already, or cannot be routed or
        tokenized), in input order for the annotated ones. ``n_process`` is spaCy's
        ``nlp.pipe(n_process=…)``."""
        failures: Deque[Failure] = deque()

        def docs() -> Iterator[Tuple[Doc, DocKey]]:
            for item in items:
                read = self.read(item)
                if isinstance(read, Failure):
                    failures.append(read)
                else:
                    yield read

        stream = docs()
        first = next(stream, None)  # loads the model, before nlp.pipe may fork its workers
        if first is not None:
            for doc, key in self.load().pipe(chain([first], stream), as_tuples=True, batch_size=batch_size,
                                             n_process=n_process):
                while failures:
                    yield failures.popleft()
                yield self.annotated(doc, key)
        yield from failures

    def read(self, item: Union[Document, Failure]) -> Union[Tuple[Doc, DocKey], Failure]:
        """``item`` as a routed doc and what :meth:`annotated` needs of it, or a failure."""
        if isinstance(item, Failure):
            return item
        try:
            return self.make_doc(item), (item.name, item.path, item.metadata)  # not the text, twice
        except ValueError as err:  # RoutingError; [E088] longer than a --model pipeline's nlp.max_length
            return Failure(item.path, str(err))

    def annotated(self, doc: Doc, key: DocKey) -> AnnotatedDoc:
        """The annotated ``doc`` as the outputs take it: its mentions, with the item's metadata."""
        name, path, metadata = key
        nlp = self.load()
        mentions = [replace(m, metadata=metadata) if metadata else m
                    for m in doc_mentions(name, doc, spans_keys_of(nlp), uses_context(nlp))]
        return AnnotatedDoc(name, doc.text, doc._.dt4h_lang, mentions, path, metadata)


def doc_mentions(name: str, doc: Doc, spans_keys: Sequence[str] = (DEFAULT_SPANS_KEY,),
                 context: bool = False) -> Iterator[Mention]:
    """The TSV rows of an annotated doc: every span of every label in ``doc.spans[key]`` for
    each of ``spans_keys`` present (the DT4H components' ``spans_key``; see
    :func:`spans_keys_of`), else its ``doc.ents``; for a doc read with ``compat="authors"``, the
    exact character offsets of the authors' script (``doc._.dt4h_chars``), which spans can
    only hold widened to tokens. A span's row has the mention's own characters
    (``span._.dt4h_offsets``: without the punctuation its edge token carries). ``context`` (a
    dt4h_context pipe ran): with the qualifiers of each span (of the widened span for the
    authors' offsets)."""
    if doc._.dt4h_chars is not None:
        text = doc.text  # rebuilt by spaCy on every access: once per doc, not per mention
        for start, end, label, score in doc._.dt4h_chars:
            flags = span_qualifiers(doc.char_span(start, end, alignment_mode="expand")) if context else {}
            yield Mention(name, label, start, end, text[start:end], score, **flags)
        return
    groups = [doc.spans[key] for key in spans_keys if key in doc.spans]
    for span in (span for group in groups for span in group) if groups else doc.ents:
        yield span_mention(name, span, span_qualifiers(span) if context else None)


def uses_context(nlp: Language) -> bool:
    """Whether ``nlp`` qualifies its mentions (has a dt4h_context pipe), so rows carry the qualifiers."""
    return any(isinstance(component, ContextQualifier) for _, component in nlp.pipeline)


def spans_keys_of(nlp: Language) -> List[str]:
    """The ``spans_key`` of each DT4H component of ``nlp``: where :func:`doc_mentions` reads."""
    return [component.cfg["spans_key"] for _, component in nlp.pipeline if isinstance(component, DiseaseRecognizer)]
