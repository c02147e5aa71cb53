"""``dt4h-spacy``: annotate folders of clinical text, score against the shared task, build corpora.

One function per command; options shared by several commands are defined once, in
:mod:`dt4h_spacy.batch` (with the input reading and annotating that predict and visualize
share), so new commands reuse them. Exit codes: 0 success, 1 some input could
not be used (reported, the rest was still processed), 2 bad options or an unusable model,
130 interrupted (Ctrl-C) before the output was complete, which is then left as it was.
"""

import json
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterator, List, Optional

import typer
from tqdm import tqdm

from . import __version__
from .batch import (
    BaseModelOption,
    BatchSizeOption,
    CheckpointOption,
    DeviceOption,
    EncodingOption,
    FallbackLangOption,
    InputArgument,
    LangOption,
    ModelOption,
    QuietOption,
    RecursiveOption,
    annotate,
    doc_mentions,
    error,
    find_inputs,
    load_pipelines,
    prepare_output,
    report_failures,
    spans_keys_of,
)
from .component import COMPAT_MODES
from .corpus import build_docbins, read_brat_corpus, read_iob_csv, read_tsv_corpus, write_docbins
from .errors import EvaluationError
from .evaluate import evaluate, format_table, strict_errors
from .inference import PRECISIONS
from .textfiles import atomic_write
from .training.command import TRAIN_CONTEXT, train_command
from .tsv import COLUMNS, Mention, TSVError, format_rows, read_mentions, write_mentions
from .visualize import visualize_command

app = typer.Typer(
    name="dt4h-spacy",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

EntityOption = Annotated[Optional[str], typer.Option(
    "--entity", help="Keep only mentions of this label (e.g. DISEASE); labels are case-sensitive.")]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"dt4h-spacy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Clinical disease NER with the DT4H multi-task model, in MultiClinAI shared-task formats."""


# --------------------------------------------------------------------------- predict


Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)  # the component's precisions
Compat = Enum("Compat", {name: name for name in COMPAT_MODES}, type=str)  # the component's reading modes


@app.command("predict")
def predict_command(
    source: InputArgument,
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="MultiClinAI TSV to write (filename label start_span end_span text); "
                                           "missing folders are created.", show_default=False)],
    lang: LangOption = "auto",
    fallback_lang: FallbackLangOption = None,
    checkpoint: CheckpointOption = None,
    base_model: BaseModelOption = None,
    model: ModelOption = None,
    encoding: EncodingOption = "utf-8",
    min_score: Annotated[float, typer.Option(
        "--min-score", min=0.0, max=1.0,
        help="Drop mentions whose score (mean probability of their words' labels) is below this.")] = 0.0,
    with_scores: Annotated[bool, typer.Option(
        "--with-scores", help="Add a score column after text.")] = False,
    batch_size: BatchSizeOption = 32,
    device: DeviceOption = "cpu",
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="int8 dynamic quantization of the encoder (CPU only; about 2x faster).")] = False,
    precision: Annotated[Precision, typer.Option(
        "--precision", help="Autocast precision: fp16 needs CUDA; bf16 works on GPUs and recent CPUs.")] = Precision.fp32,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="torch threads in this process. Default: torch's.", show_default=False)] = None,
    n_process: Annotated[int, typer.Option(
        "--n-process", min=1, help="Worker processes (spaCy's nlp.pipe n_process); each runs torch on one thread.")] = 1,
    compat: Annotated[Compat, typer.Option(
        "--compat", help="words: label spaCy's tokens (default). authors: the authors' published script, "
                         "exactly (raw text, its windows and vote; mentions may cross lines).")] = Compat.words,
    recursive: RecursiveOption = False,
    quiet: QuietOption = False,
) -> None:
    """Annotate INPUT (a .txt file or a folder of them) and write the mentions as a MultiClinAI TSV.

    Offsets index each file's own characters (decoded with --encoding, line endings as
    stored, a leading BOM dropped). A file that cannot be read, has no language under
    --lang auto, or is in a language the model has no head for is reported and skipped; the
    others are still written. The TSV appears only when complete. Exit code 1 if any file failed.
    """
    groups, failures, total = find_inputs(source, lang, recursive, encoding)
    prepare_output(output)
    settings = {"batch_size": batch_size, "device": device, "threshold": min_score, "quantize": quantize,
                "precision": precision.value, "num_threads": threads, "compat": compat.value}
    pipelines = load_pipelines(groups, lang, model, checkpoint, base_model, settings, failures, fallback_lang)
    keys = spans_keys_of(next(iter(pipelines.values()))) if pipelines else []

    mentions: List[Mention] = []
    read = 0
    try:
        with tqdm(total=total, unit="file", file=sys.stderr, disable=quiet or not sys.stderr.isatty()) as progress:
            for name, doc in annotate(pipelines, groups, failures, progress, encoding, batch_size, n_process):
                read += 1
                mentions.extend(doc_mentions(name, doc, keys))
        report_failures(failures)
        try:
            write_mentions(output, mentions, with_scores)
        except OSError as err:
            error(f"cannot write {output}: {err}")
            raise typer.Exit(1) from err
    except KeyboardInterrupt:
        error(f"interrupted; {output} was not written (a previous file there is unchanged).")
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
        error(str(err))
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
            handle.write(format_rows((*COLUMNS, "error"), [(m.filename, m.label, m.start, m.end, m.text, kind) for kind, m in found]))
        typer.echo(f"{len(found)} errors written to {errors}", err=True)


# --------------------------------------------------------------------------- convert


class CorpusFormat(str, Enum):
    """Source formats ``convert`` reads; each maps to one reader in :mod:`dt4h_spacy.corpus`."""

    auto = "auto"
    tsv = "tsv"
    brat = "brat"
    iob = "iob"


def _read_corpus(fmt: CorpusFormat, source: Path, mentions: Optional[Path], recursive: bool,
                 encoding: str) -> Iterator[Any]:
    """The reader for ``fmt``; a new format is one more reader and one more branch here."""
    if fmt is CorpusFormat.auto:
        fmt = CorpusFormat.tsv if mentions is not None else CorpusFormat.brat
    if fmt is CorpusFormat.tsv:
        if mentions is None:
            raise typer.BadParameter("the tsv format needs --mentions MENTIONS.tsv.", param_hint="--format")
        return read_tsv_corpus(source, mentions, recursive, encoding)
    if fmt is CorpusFormat.brat:
        return read_brat_corpus(source, recursive, encoding)
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
    encoding: EncodingOption = "utf-8",
    reanchor: Annotated[bool, typer.Option(
        "--reanchor", help="Move a mention whose text differs from the file at its offsets to the nearest exact "
                           "occurrence of its text, instead of dropping it.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Turn annotated texts into spaCy training data (DocBin per language).

    The .txt files are decoded with --encoding and mention offsets index the decoded text
    (mention TSVs, .ann and IOB files are read as UTF-8). Each text is tokenized with its
    language's spaCy tokenizer. Mentions off token boundaries are snapped outwards,
    overlapping ones keep the longest; every snapped or
    dropped mention is counted in the summary. A mention whose text differs from the file
    at its offsets is dropped (or, with --reanchor, moved) and listed by file and offset.
    Exit code 1 if any file could not be used or any mention was dropped for its text.
    """
    if fmt is CorpusFormat.iob and lang == "auto":
        raise typer.BadParameter("iob CSVs carry no MultiClinNER document names; pass the language, e.g. --lang es.",
                                 param_hint="--lang")
    try:
        conversion = build_docbins(_read_corpus(fmt, source, mentions, recursive, encoding), lang=lang, entity=entity,
                                   reanchor=reanchor)
    except TSVError as err:
        error(str(err))
        raise typer.Exit(1) from err
    except ValueError as err:
        error(str(err))
        raise typer.Exit(2) from err
    except OSError as err:
        raise typer.BadParameter(str(err), param_hint="INPUT") from err
    report_failures(conversion.failures)
    if not conversion.docs:
        error(f"no documents converted from {source}; nothing written.")
        raise typer.Exit(1)
    try:
        written = write_docbins(conversion, output_dir)
    except OSError as err:
        error(f"cannot write into {output_dir}: {err}")
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
