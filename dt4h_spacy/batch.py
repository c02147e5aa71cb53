"""What ``predict`` and ``visualize`` share: their options, finding and routing the input
texts, loading the model and annotating.

Both commands read inputs the same way, so a folder (or file) that works for one works for
the other, and the same problems are reported the same way; each command then only writes
its own output (a TSV, an HTML page). The options are declared here once, as ``Annotated``
aliases, so the two commands cannot drift apart.
"""

import os
import re
import sys
import warnings
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc

from .checkpoint import check_pipeline_folder
from .component import DEFAULT_SPANS_KEY, FACTORY, DiseaseRecognizer
from .filenames import lang_from_filename, spacy_lang
from .langdetect import Undetectable, route, serving_language
from .textfiles import Failure, check_encoding, find_txt_files, read_documents
from .tsv import Mention

LANG_CODE = re.compile(r"^[a-z]{2,3}$")


def normalize_lang(value: str) -> str:
    """``ES``, ``es_ES`` and ``es-ES`` → ``es``, as spaCy and Hugging Face users write them;
    ``auto`` and ``detect`` stay. Anything else is refused with the codes to use."""
    code = value.strip().lower().replace("_", "-").split("-")[0]
    if code in ("auto", "detect") or LANG_CODE.match(code):
        return code
    raise typer.BadParameter(f"{value!r} is not a language code; use es, it, ro (a language the model has a head "
                             "for), auto or detect.")


def _fallback_lang(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    code = normalize_lang(value)
    if code in ("auto", "detect"):
        raise typer.BadParameter("give a language code, e.g. --fallback-lang es.")
    return code


def _encoding(value: str) -> str:
    try:
        return check_encoding(value)
    except LookupError as err:
        raise typer.BadParameter(str(err)) from err


InputArgument = Annotated[Path, typer.Argument(
    metavar="INPUT", help="A .txt file, or a folder of them (.txt in any case, e.g. A.TXT).", show_default=False)]
LangOption = Annotated[str, typer.Option(
    "--lang", callback=normalize_lang,
    help="Language of the texts: es, it, ro (ES, es_ES, es-ES also accepted); auto to read it from "
         "MultiClinNER file names (MultiClinNER-es-test-disease-00019.txt -> es) and detect it in the text of "
         "other files; detect to detect it in every text (needs dt4h_spacy[langdetect]).")]
FallbackLangOption = Annotated[Optional[str], typer.Option(
    "--fallback-lang", callback=_fallback_lang,
    help="Annotate files found (by name or detection) to be in a language the model has no head for as this "
         "language, instead of skipping them.", show_default=False)]
RecursiveOption = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also read .txt files in subfolders (symlinked folders are not followed).")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bar and no summary; problems are still reported on stderr.")]
EncodingOption = Annotated[str, typer.Option(
    "--encoding", callback=_encoding,
    help="Encoding of the .txt files, e.g. cp1252 or latin-1 for many hospital exports. Offsets index the "
         "decoded text.")]
CheckpointOption = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="DT4H multi-task .pt file (or a Hugging Face repo id, which needs network). "
                         "Default: the published es-it-ro disease model.", show_default=False)]
BaseModelOption = Annotated[Optional[str], typer.Option(
    "--base-model", help="Folder (or hub id) with the encoder config and tokenizer the checkpoint was trained "
                         "from. Default: FacebookAI/xlm-roberta-base.", show_default=False)]
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", help="A saved spaCy pipeline folder (nlp.to_disk) or an installed pipeline package, instead of "
                    "--checkpoint/--base-model.", show_default=False)]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Documents per batch.")]
DeviceOption = Annotated[str, typer.Option("--device", help="Where the network runs: cpu, cuda, cuda:N or auto.")]


def error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def report_failures(failures: List[Failure]) -> None:
    for failure in failures:
        error(f"skipped {failure}")


# ------------------------------------------------------------------ inputs and languages


def _shown(names: List[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def group_by_language(paths: List[Path], lang: str, encoding: str = "utf-8") -> Tuple[Dict[str, List[Path]], List[Failure]]:
    """Files by the language whose head annotates them (see :func:`.langdetect.route`); a file
    without one, or that cannot be read to detect it, is a failure that names the way out."""
    groups: Dict[str, List[Path]] = defaultdict(list)
    failures: List[Failure] = []
    for path in paths:
        read: List[Any] = []
        try:
            code = route(path.name, partial(_text_of, path, encoding, read), lang)
        except ImportError as err:
            raise typer.BadParameter(str(err), param_hint="--lang") from err
        if read and isinstance(read[0], Failure):
            failures.append(read[0])
        elif isinstance(code, Undetectable):
            failures.append(Failure(path, str(code)))
        else:
            groups[code].append(path)
    return dict(groups), failures


def _text_of(path: Path, encoding: str, read: List[Any]) -> str:
    """The text of ``path`` for detection; a file that cannot be read leaves its Failure in ``read``."""
    read.extend(read_documents([path], encoding))
    return "" if isinstance(read[0], Failure) else read[0].text


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
        typer.echo(f"warning: --lang {lang}, but {len(names)} file(s) are named as {code}: {_shown(names)}; they are "
                   f"annotated as {lang} (use --lang auto to follow the names).", err=True)


def find_inputs(source: Path, lang: str, recursive: bool,
                encoding: str = "utf-8") -> Tuple[Dict[str, List[Path]], List[Failure], int]:
    """``(files by language, failures so far, number of files)`` for INPUT, or a BadParameter
    when INPUT holds nothing to read."""
    try:
        paths, failures = find_txt_files(source, recursive)
    except OSError as err:
        raise typer.BadParameter(str(err), param_hint="INPUT") from err
    if not paths and not failures:
        hint = "" if recursive else " (use --recursive to include subfolders)"
        raise typer.BadParameter(f"no .txt files in {source}{hint}.", param_hint="INPUT")
    warn_language_conflicts(paths, lang)
    groups, unrouted = group_by_language(paths, lang, encoding)
    return groups, failures + unrouted, len(paths)


def prepare_output(output: Path) -> None:
    """Refuse a folder as OUTPUT and create OUTPUT's missing parent folders."""
    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; give the path of the file to write.", param_hint="OUTPUT")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise typer.BadParameter(f"cannot create the folder {output.parent}: {err.strerror or err}.",
                                 param_hint="OUTPUT") from err
    if not os.access(output.parent, os.W_OK):
        raise typer.BadParameter(f"cannot write into {output.parent}: it is not writable.", param_hint="OUTPUT")


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


def _component_overrides(model: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Config overrides that apply ``settings`` to every dt4h_disease component of a saved pipeline."""
    config = spacy.util.load_config(_saved_config_path(model))
    names = [name for name, block in config.get("components", {}).items() if block.get("factory") == FACTORY]
    return {f"components.{name}.{key}": value for name in names for key, value in settings.items()}


def served_languages(nlp: Language) -> Optional[Set[str]]:
    """Languages the pipeline's dt4h_disease components have heads for (loading the network
    now); None for a pipeline without one, or with a head that reads every language, which
    then takes any language."""
    components = [component for _, component in nlp.pipeline if isinstance(component, DiseaseRecognizer)]
    if not components or any(component.every_language for component in components):
        return None
    return {lang for component in components for lang in component.languages}


def _lift_length_limit(nlp: Language) -> None:
    """Accept files of any length when the pipeline is only dt4h_disease.

    spaCy refuses texts over ``nlp.max_length`` (1M characters) to protect the memory of its
    parser and NER; dt4h_disease reads any length in windows, so for it the limit would only
    turn a long clinical record into a failure.
    """
    if all(isinstance(component, DiseaseRecognizer) for _, component in nlp.pipeline):
        nlp.max_length = sys.maxsize


def _language_pipeline(lang: str, source: Language) -> Language:
    """``spacy.blank(lang)`` for the language's own tokenizer, sharing ``source``'s component."""
    nlp = spacy.blank(spacy_lang(lang))
    with warnings.catch_warnings():  # W113: blank pipelines have no vectors to differ in
        warnings.filterwarnings("ignore", message=r".*\[W113\]")
        nlp.add_pipe(FACTORY, source=source)
    return nlp


def load_pipelines(groups: Dict[str, List[Path]], lang: str, model: Optional[str], checkpoint: Optional[str],
                   base_model: Optional[str], settings: Dict[str, Any], failures: List[Failure],
                   fallback: Optional[str] = None) -> Dict[str, Language]:
    """One pipeline per language of ``groups``, all sharing one loaded network.

    With ``--model`` the saved pipeline serves every language (docs are routed by
    ``doc._.dt4h_lang``); otherwise each language gets ``spacy.blank(lang)`` for its own
    tokenizer. Files of a language the model has no head for become failures, or, with
    ``fallback``, are moved to that language's group in ``groups``; an explicit ``--lang`` or
    ``fallback`` it lacks, an unusable model or mixing ``--model`` with ``--checkpoint`` is an
    error (exit code 2). Nothing is loaded when no file is left to annotate.
    """
    if model is not None and (checkpoint or base_model):
        raise typer.BadParameter("use either --model or --checkpoint/--base-model, not both.", param_hint="--model")
    if not groups:
        return {}
    try:
        if model is not None:
            check_pipeline_folder(Path(model))
            loaded = spacy.load(model, config=_component_overrides(model, settings))
        else:
            loaded = spacy.blank("xx")
            config = {key: value for key, value in (("checkpoint", checkpoint), ("base_model", base_model)) if value}
            loaded.add_pipe(FACTORY, config={**config, **settings})
        served = served_languages(loaded)
        for given, hint in ((lang, "--lang"), (fallback, "--fallback-lang")):
            if served is not None and given not in (None, "auto", "detect") and given not in served:
                raise typer.BadParameter(f"the model has no head for language {given!r}; it serves "
                                         f"{', '.join(sorted(served))}.", param_hint=hint)
        for code in list(groups):
            target = serving_language(code, served, fallback)
            if target in (code, None):
                continue
            moved = groups.pop(code)
            if target == fallback:
                typer.echo(f"warning: {len(moved)} file(s) in {code}, which the model has no head for, are annotated "
                           f"as {fallback} (--fallback-lang): {_shown([p.name for p in moved])}", err=True)
            groups.setdefault(target, []).extend(moved)
        pipelines: Dict[str, Language] = {}
        for code, paths in groups.items():
            if served is not None and code not in served:
                failures.extend(Failure(path, f"the model has no head for language {code!r} (it serves "
                                              f"{', '.join(sorted(served))}); pass --lang with one of them "
                                              "to annotate it anyway") for path in paths)
            else:
                pipelines[code] = loaded if model is not None else _language_pipeline(code, loaded)
    except (ImportError, OSError, ValueError) as err:  # CheckpointError is a ValueError; E048 an ImportError
        error(str(err))
        raise typer.Exit(2) from err
    for nlp in pipelines.values():
        _lift_length_limit(nlp)
    return pipelines


# ------------------------------------------------------------------------------ annotating


def annotate(pipelines: Dict[str, Language], groups: Dict[str, List[Path]], failures: List[Failure], progress: Any,
             encoding: str = "utf-8", batch_size: int = 32, n_process: int = 1) -> Iterator[Tuple[str, Doc]]:
    """(name, annotated doc) for every readable file; unreadable ones go to ``failures``.

    ``progress`` is a tqdm bar, advanced once per file; ``n_process`` is spaCy's
    ``nlp.pipe(n_process=…)``.
    """
    for lang, paths in groups.items():
        nlp = pipelines.get(lang)
        if nlp is None:  # no head for this language: already a failure
            continue

        def docs(nlp: Language = nlp, lang: str = lang, paths: List[Path] = paths) -> Iterator[Tuple[Doc, str]]:
            for item in read_documents(paths, encoding):
                if isinstance(item, Failure):
                    failures.append(item)
                    progress.update(1)
                    continue
                try:
                    doc = nlp.make_doc(item.text)
                except ValueError as err:  # e.g. [E088] longer than a --model pipeline's nlp.max_length
                    failures.append(Failure(item.path, str(err)))
                    progress.update(1)
                    continue
                doc._.dt4h_lang = lang
                yield doc, item.name

        for doc, name in nlp.pipe(docs(), as_tuples=True, batch_size=batch_size, n_process=n_process):
            progress.update(1)
            yield name, doc


def doc_mentions(name: str, doc: Doc, spans_keys: Sequence[str] = (DEFAULT_SPANS_KEY,)) -> Iterator[Mention]:
    """The TSV rows of an annotated doc: every span of every label in ``doc.spans[key]`` for
    each of ``spans_keys`` present (the DT4H components' ``spans_key``; see
    :func:`spans_keys_of`), else its ``doc.ents``; for a doc read with ``compat="authors"``, the
    exact character offsets of the authors' script (``doc._.dt4h_chars``), which spans can
    only hold widened to tokens."""
    if doc._.dt4h_chars is not None:
        for start, end, label, score in doc._.dt4h_chars:
            yield Mention(name, label, start, end, doc.text[start:end], score)
        return
    groups = [doc.spans[key] for key in spans_keys if key in doc.spans]
    for span in (span for group in groups for span in group) if groups else doc.ents:
        yield Mention(name, span.label_, span.start_char, span.end_char, span.text, span._.dt4h_score)


def spans_keys_of(nlp: Language) -> List[str]:
    """The ``spans_key`` of each DT4H component of ``nlp``: where :func:`doc_mentions` reads."""
    return [component.cfg["spans_key"] for _, component in nlp.pipeline if isinstance(component, DiseaseRecognizer)]
