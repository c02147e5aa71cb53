"""``dt4h-spacy``: annotate folders of clinical text, score against the shared task, build corpora.

One function per command; options shared by several commands are defined once below so
new commands (train, visualize, …) reuse them. Exit codes: 0 success, 1 some input could
not be used (reported, the rest was still processed), 2 bad options or an unusable model,
130 interrupted (Ctrl-C) before the output was complete, which is then left as it was.
"""

import json
import os
import re
import sys
import warnings
from collections import defaultdict
from dataclasses import astuple
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Dict, Iterator, List, Optional, Tuple

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from .checkpoint import check_pipeline_folder
from .component import DiseaseRecognizer
from .corpus import build_docbins, read_brat_corpus, read_iob_csv, read_tsv_corpus, write_docbins
from .errors import EvaluationError
from .evaluate import evaluate, format_table, strict_errors
from .filenames import lang_from_filename, spacy_lang
from .textfiles import Failure, atomic_write, find_txt_files, read_documents
from .training.command import TRAIN_CONTEXT, train_command
from .tsv import COLUMNS, Mention, TSVError, format_rows, read_mentions, write_mentions
from .visualize import visualize_command

FACTORY = "dt4h_disease"
LANG_CODE = re.compile(r"^(auto|[a-z]{2,3})$")

app = typer.Typer(
    name="dt4h-spacy",
    help="Clinical disease NER with the DT4H multi-task model, in MultiClinAI shared-task formats.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _check_lang(value: str) -> str:
    if not LANG_CODE.match(value):
        raise typer.BadParameter(f"{value!r} is not a language code; use es, it, ro or auto.")
    return value


LangOption = Annotated[str, typer.Option(
    "--lang", callback=_check_lang,
    help="Language of the texts: es, it, ro, or auto to read it from MultiClinNER file names "
         "(MultiClinNER-es-test-disease-00019.txt -> es).")]
RecursiveOption = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also read .txt files in subfolders (symlinked folders are not followed).")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bar and no summary; problems are still reported on stderr.")]
EntityOption = Annotated[Optional[str], typer.Option(
    "--entity", help="Keep only mentions of this label (e.g. DISEASE); labels are case-sensitive.")]


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _report_failures(failures: List[Failure]) -> None:
    for failure in failures:
        _error(f"skipped {failure}")


# --------------------------------------------------------------------------- predict


def _doc_langs(paths: List[Path], lang: str) -> Dict[str, List[Path]]:
    """Files grouped by the language whose head annotates them; ``auto`` reads file names."""
    if lang != "auto":
        return {lang: paths} if paths else {}
    groups: Dict[str, List[Path]] = defaultdict(list)
    missing = []
    for path in paths:
        code = lang_from_filename(path.name)
        if code is None:
            missing.append(path.name)
        else:
            groups[code].append(path)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise typer.BadParameter(
            f"'auto' needs MultiClinNER file names like MultiClinNER-es-test-disease-00019.txt, "
            f"but {len(missing)} file(s) carry no language: {shown}. Pass the language, e.g. --lang es.",
            param_hint="--lang")
    return dict(groups)


def _component_overrides(model_dir: Path, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Config overrides that apply ``overrides`` to every dt4h_disease component of a saved pipeline."""
    config = spacy.util.load_config(model_dir / "config.cfg")
    names = [name for name, block in config.get("components", {}).items() if block.get("factory") == FACTORY]
    return {f"components.{name}.{key}": value for name in names for key, value in overrides.items()}


def _load_pipelines(langs: List[str], model_dir: Optional[Path], config: Dict[str, Any],
                    runtime: Dict[str, Any]) -> Dict[str, Language]:
    """One pipeline per language, all sharing one loaded network.

    With ``--model`` the saved pipeline serves every language (docs are routed by
    ``doc._.dt4h_lang``). Otherwise each language gets ``spacy.blank(lang)`` for its own
    tokenizer, and the component built for the first is sourced into the others.
    """
    if model_dir is not None:
        check_pipeline_folder(model_dir)
        nlp = spacy.load(model_dir, config=_component_overrides(model_dir, runtime))
        return {lang: nlp for lang in langs}
    pipelines: Dict[str, Language] = {}
    for lang in langs:
        nlp = spacy.blank(spacy_lang(lang))
        if not pipelines:
            nlp.add_pipe(FACTORY, config={**config, **runtime})
        else:
            with warnings.catch_warnings():  # W113: blank pipelines have no vectors to differ in
                warnings.filterwarnings("ignore", message=r".*\[W113\]")
                nlp.add_pipe(FACTORY, source=next(iter(pipelines.values())))
        pipelines[lang] = nlp
    return pipelines


def _lift_length_limit(nlp: Language) -> None:
    """Accept files of any length when the pipeline is only dt4h_disease.

    spaCy refuses texts over ``nlp.max_length`` (1M characters) to protect the memory of its
    parser and NER; dt4h_disease reads any length in windows, so for it the limit would only
    turn a long clinical record into a failure.
    """
    if all(isinstance(component, DiseaseRecognizer) for _, component in nlp.pipeline):
        nlp.max_length = sys.maxsize


def _check_languages(pipelines: Dict[str, Language]) -> None:
    """Load the network now and refuse languages it has no head for, before reading any file."""
    for lang, nlp in pipelines.items():
        for _, component in nlp.pipeline:
            if isinstance(component, DiseaseRecognizer) and lang not in component.languages:
                served = component.languages
                raise typer.BadParameter(
                    f"the model has no head for language {lang!r}; it serves {', '.join(sorted(served))}.",
                    param_hint="--lang")


def _annotate(pipelines: Dict[str, Language], groups: Dict[str, List[Path]], batch_size: int,
              failures: List[Failure], progress: Any) -> Iterator[Tuple[str, Doc]]:
    """(name, annotated doc) for every readable file; unreadable ones go to ``failures``."""
    for lang, paths in groups.items():
        nlp = pipelines[lang]

        def docs() -> Iterator[Tuple[Doc, str]]:
            for item in read_documents(paths):
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

        for doc, name in nlp.pipe(docs(), as_tuples=True, batch_size=batch_size):
            progress.update(1)
            yield name, doc


@app.command("predict")
def predict_command(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT_DIR", help="Folder of UTF-8 .txt files to annotate.", show_default=False)],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="MultiClinAI TSV to write (filename label start_span end_span text).",
                                           show_default=False)],
    lang: LangOption = "auto",
    checkpoint: Annotated[Optional[str], typer.Option(
        help="DT4H multi-task .pt file (or a Hugging Face repo id, which needs network). "
             "Default: the published es-it-ro disease model.", show_default=False)] = None,
    base_model: Annotated[Optional[str], typer.Option(
        help="Folder (or hub id) with the encoder config and tokenizer the checkpoint was trained from. "
             "Default: FacebookAI/xlm-roberta-base.", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="A saved spaCy pipeline folder (nlp.to_disk) to use instead of --checkpoint/--base-model.",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents per batch.")] = 32,
    device: Annotated[str, typer.Option(help="Where the network runs: cpu, cuda, cuda:N or auto.")] = "cpu",
    recursive: RecursiveOption = False,
    quiet: QuietOption = False,
) -> None:
    """Annotate every .txt in INPUT_DIR and write the mentions as a MultiClinAI TSV.

    Offsets index each file's own characters (UTF-8, line endings as stored, a leading BOM
    dropped). A file that cannot be read is reported and skipped; the others are still
    written. The TSV appears only when complete. Exit code 1 if any file failed.
    """
    if model is not None and (checkpoint or base_model):
        raise typer.BadParameter("use either --model or --checkpoint/--base-model, not both.", param_hint="--model")
    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; give the path of the TSV file to write.", param_hint="OUTPUT")
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
        raise typer.BadParameter(f"cannot write into {output.parent}: it does not exist or is not writable.",
                                 param_hint="OUTPUT")
    try:
        paths, failures = find_txt_files(input_dir, recursive)
    except OSError as err:
        raise typer.BadParameter(str(err), param_hint="INPUT_DIR") from err
    if not paths and not failures:
        hint = "" if recursive else " (use --recursive to include subfolders)"
        raise typer.BadParameter(f"no .txt files in {input_dir}{hint}.", param_hint="INPUT_DIR")
    groups = _doc_langs(paths, lang)
    config = {key: value for key, value in (("checkpoint", checkpoint), ("base_model", base_model)) if value}
    try:
        pipelines = _load_pipelines(sorted(groups), model, config, {"batch_size": batch_size, "device": device})
        _check_languages(pipelines)
    except (ImportError, OSError, ValueError) as err:  # CheckpointError is a ValueError; E048 an ImportError
        _error(str(err))
        raise typer.Exit(2) from err
    for nlp in pipelines.values():
        _lift_length_limit(nlp)

    mentions: List[Mention] = []
    read = 0
    try:
        with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=quiet or not sys.stderr.isatty()) as progress:
            for name, doc in _annotate(pipelines, groups, batch_size, failures, progress):
                read += 1
                mentions.extend(Mention(name, ent.label_, ent.start_char, ent.end_char, ent.text) for ent in doc.ents)
        _report_failures(failures)
        try:
            write_mentions(output, mentions)
        except OSError as err:
            _error(f"cannot write {output}: {err}")
            raise typer.Exit(1) from err
    except KeyboardInterrupt:
        _error(f"interrupted; {output} was not written (a previous file there is unchanged).")
        raise typer.Exit(130) from None
    if not quiet:
        typer.echo(f"{read} files read, {len(failures)} failed, {len(mentions)} mentions written to {output}")
    if failures:
        raise typer.Exit(1)


# -------------------------------------------------------------------------- evaluate


@app.command("evaluate")
def evaluate_command(
    gold: Annotated[Path, typer.Argument(metavar="GOLD", help="Gold MultiClinAI TSV.", show_default=False)],
    pred: Annotated[Path, typer.Argument(metavar="PRED", help="Predicted MultiClinAI TSV.", show_default=False)],
    entity: EntityOption = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the full metrics JSON (official keys, per_lang, per_file) to this file.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the full metrics JSON instead of the table.")] = False,
    errors: Annotated[Optional[Path], typer.Option(
        "--errors", help="Write the strict false positives (FP) and false negatives (FN) with their text to "
                         "this TSV, for error analysis.", show_default=False)] = None,
) -> None:
    """Score PRED against GOLD exactly as the MultiClinAI official scorer does.

    Prints a per-language table of strict and character-overlap P/R/F1. Strict: exact
    (filename, label, start, end), one-to-one. char_f1: best character-overlap F1 per gold
    span (recall) and per predicted span (precision). Duplicate predictions count once.
    File names match with or without .txt; GOLD may use DisTEMIST columns. Exit code 1 for
    a malformed file (the message names the line) or files that share no document.
    """
    try:
        gold_rows = read_mentions(gold, aliases=True)
        pred_rows = read_mentions(pred, aliases=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(gold_rows, pred_rows, entity)
    except (TSVError, EvaluationError) as err:
        _error(str(err))
        raise typer.Exit(1) from err
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    typer.echo(text if as_json else format_table(result), nl=as_json)
    if output is not None:
        with atomic_write(output) as handle:
            handle.write(text + "\n")
        typer.echo(f"metrics written to {output}", err=True)
    if errors is not None:
        found = strict_errors(gold_rows, pred_rows, entity)
        with atomic_write(errors) as handle:
            handle.write(format_rows((*COLUMNS, "error"), [(*astuple(m), kind) for kind, m in found]))
        typer.echo(f"{len(found)} errors written to {errors}", err=True)


# --------------------------------------------------------------------------- convert


class CorpusFormat(str, Enum):
    """Source formats ``convert`` reads; each maps to one reader in :mod:`dt4h_spacy.corpus`."""

    auto = "auto"
    tsv = "tsv"
    brat = "brat"
    iob = "iob"


def _read_corpus(fmt: CorpusFormat, source: Path, mentions: Optional[Path], recursive: bool) -> Iterator[Any]:
    """The reader for ``fmt``; a new format is one more reader and one more branch here."""
    if fmt is CorpusFormat.auto:
        fmt = CorpusFormat.tsv if mentions is not None else CorpusFormat.brat
    if fmt is CorpusFormat.tsv:
        if mentions is None:
            raise typer.BadParameter("the tsv format needs --mentions MENTIONS.tsv.", param_hint="--format")
        return read_tsv_corpus(source, mentions, recursive)
    if fmt is CorpusFormat.brat:
        return read_brat_corpus(source, recursive)
    return read_iob_csv(source)


@app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Folder of .txt files (with .ann files beside them for brat), or for iob a CSV file "
                              "or folder of CSVs.", show_default=False)],
    output_dir: Annotated[Path, typer.Argument(
        metavar="OUTPUT_DIR", help="Folder for the DocBin files, one <lang>.spacy per language.", show_default=False)],
    mentions: Annotated[Optional[Path], typer.Option(
        "--mentions", help="TSV of mentions (MultiClinAI columns, or DisTEMIST's off0/off1/span) for the .txt files.",
        show_default=False)] = None,
    fmt: Annotated[CorpusFormat, typer.Option(
        "--format",
        help="tsv: .txt files + --mentions TSV; brat: .txt + .ann; iob: the DT4H authors' token CSVs "
             "(ner,start,end,token; blank line between sentences; needs --lang). auto: tsv with --mentions, "
             "else brat.")] = CorpusFormat.auto,
    lang: LangOption = "auto",
    entity: EntityOption = None,
    recursive: RecursiveOption = False,
    reanchor: Annotated[bool, typer.Option(
        "--reanchor", help="Move a mention whose text differs from the file at its offsets to the nearest exact "
                           "occurrence of its text, instead of dropping it.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Turn annotated texts into spaCy training data (DocBin per language).

    Each text is tokenized with its language's spaCy tokenizer. Mentions off token
    boundaries are snapped outwards, overlapping ones keep the longest; every snapped or
    dropped mention is counted in the summary. A mention whose text differs from the file
    at its offsets is dropped (or, with --reanchor, moved) and listed by file and offset.
    Exit code 1 if any file could not be used or any mention was dropped for its text.
    """
    if fmt is CorpusFormat.iob and lang == "auto":
        raise typer.BadParameter("iob CSVs carry no MultiClinNER document names; pass the language, e.g. --lang es.",
                                 param_hint="--lang")
    try:
        conversion = build_docbins(_read_corpus(fmt, source, mentions, recursive), lang=lang, entity=entity,
                                   reanchor=reanchor)
    except TSVError as err:
        _error(str(err))
        raise typer.Exit(1) from err
    except ValueError as err:
        _error(str(err))
        raise typer.Exit(2) from err
    except OSError as err:
        raise typer.BadParameter(str(err), param_hint="INPUT") from err
    _report_failures(conversion.failures)
    if not conversion.docs:
        _error(f"no documents converted from {source}; nothing written.")
        raise typer.Exit(1)
    try:
        written = write_docbins(conversion, output_dir)
    except OSError as err:
        _error(f"cannot write into {output_dir}: {err}")
        raise typer.Exit(1) from err
    if not quiet:
        for doc_lang, path in written.items():
            typer.echo(f"{doc_lang}: {conversion.stats[doc_lang].summary()} -> {path}")
    for stats in conversion.stats.values():
        for line in stats.mismatches:
            typer.echo(f"mention {line}", err=True)
    mismatched = sum(s.dropped["text differs from the file at its offsets"] for s in conversion.stats.values())
    if conversion.failures or mismatched:
        raise typer.Exit(1)


# ------------------------------------------------------------- train, visualize
# (their logic lives in dt4h_spacy.training and dt4h_spacy.visualize)

app.command("train", context_settings=TRAIN_CONTEXT)(train_command)
app.command("visualize")(visualize_command)


def main() -> None:
    """Entry point for ``python -m dt4h_spacy``."""
    app(prog_name="dt4h-spacy")
