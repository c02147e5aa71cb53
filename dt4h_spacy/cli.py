"""``dt4h-spacy``: annotate folders of clinical text, score against the shared task, build corpora.

One function per command; options shared by several commands are defined once, in
:mod:`dt4h_spacy.cli_options` (the input reading and annotating that predict and visualize
share is :mod:`dt4h_spacy.batch`), so new commands reuse them. Exit codes: 0 success, 1 some input could
not be used (reported, the rest was still processed), 2 bad options or an unusable model,
130 interrupted (Ctrl-C) before the output was complete, which is then left as it was.
"""

import json
import os
import warnings
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from . import __version__
from .batch import (
    Pipelines,
    context_config,
    error,
    model_label,
    open_source,
    prepare_output,
    report_failures,
)
from .cli_options import (
    BaseModelOption,
    BatchSizeOption,
    CheckpointOption,
    ContextOption,
    ContextRulesOption,
    DelimiterOption,
    DeviceOption,
    EncodingOption,
    FallbackLangOption,
    IdColumnOption,
    InputArgument,
    KeepColumnsOption,
    LangColumnOption,
    LangOption,
    ModelOption,
    QuietOption,
    RecursiveOption,
    TextColumnOption,
    package_errors,
)
from .component import COMPAT_MODES
from .corpus import (
    build_docbins,
    read_brat_corpus,
    read_iob_csv,
    read_source_corpus,
    write_docbins,
)
from .engines.local import local_engine
from .errors import CheckpointError, EvaluationError, RecordError
from .evaluate.official import evaluate, format_table, strict_errors
from .evaluate.context import evaluate_context, format_context_table, read_qualified
from .inference import PRECISION_CHOICES
from .io.cdm import RECORD_FIELDS
from .io.parts import content_identity
from .io.sinks import CDM_SUFFIX, output_kind, read_output
from .io.tables import Columns, is_table, table_columns
from .run import run_job
from .runtime import default_threads
from .serve.limits import ServeSettings
from .textfiles import atomic_write
from .training.command import TRAIN_CONTEXT, init_checkpoint_command, train_command
from .io.records import tsv_header, tsv_row
from .tsv import TSVError, format_rows
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


Precision = Enum("Precision", {name: name for name in PRECISION_CHOICES}, type=str)  # the component's precisions
Compat = Enum("Compat", {name: name for name in COMPAT_MODES}, type=str)  # the component's reading modes


class EngineName(str, Enum):
    """Where the annotate step runs (:mod:`dt4h_spacy.engines`)."""

    local = "local"
    ray = "ray"


@app.command("predict")
@package_errors
def predict_command(
    source: InputArgument,
    output: Annotated[Path, typer.Argument(
        metavar="OUTPUT", help="File to write, by extension: .tsv (MultiClinAI TSV: filename label start_span end_span "
                               "text; also any other name), .jsonl or .parquet (one row per mention: id label start "
                               "end text score), .cdm.jsonl (one DT4H CDM object per document; a table's columns "
                               "named like CDM record fields, e.g. patient_id, fill its record_metadata), .html (a displaCy "
                               "page). Missing folders are created.",
        show_default=False)],
    lang: LangOption = "auto",
    fallback_lang: FallbackLangOption = None,
    id_column: IdColumnOption = Columns.id,
    text_column: TextColumnOption = Columns.text,
    lang_column: LangColumnOption = None,
    keep_columns: KeepColumnsOption = None,
    checkpoint: CheckpointOption = None,
    base_model: BaseModelOption = None,
    model: ModelOption = None,
    encoding: EncodingOption = "utf-8",
    delimiter: DelimiterOption = None,
    min_score: Annotated[float, typer.Option(
        "--min-score", min=0.0, max=1.0,
        help="Drop mentions whose score (mean probability of their words' labels) is below this.")] = 0.0,
    with_scores: Annotated[bool, typer.Option(
        "--with-scores", help="Add a score column after text (TSV; .jsonl and .parquet always have it).")] = False,
    context: ContextOption = False,
    context_rules: ContextRulesOption = None,
    context_columns: Annotated[bool, typer.Option(
        "--context-columns", help="TSV: add the negated, uncertain, hypothetical, historical, family columns (after "
                                  "text and score). Implies --context.")] = False,
    batch_size: BatchSizeOption = 32,
    device: DeviceOption = "cpu",
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="int8 dynamic quantization of the encoder (CPU only; 1.4-2.2x faster depending on the CPU, "
                             "1.5x on a quiet AMD EPYC; see the README).")] = False,
    precision: Annotated[Precision, typer.Option(
        "--precision", help="Autocast precision: fp16 needs CUDA; bf16 works on GPUs and recent CPUs.")] = Precision.fp32,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="torch threads in this process. Default: the cores it may use (CPU affinity, a "
                                 "cgroup quota); with --n-process, one per worker.", show_default=False)] = None,
    n_process: Annotated[int, typer.Option(
        "--n-process", min=1, help="Worker processes (spaCy's nlp.pipe n_process); each runs torch on one thread.")] = 1,
    cpu_workers: Annotated[int, typer.Option(
        "--cpu-workers", min=0, help="CPU processes that tokenize, window, decode and write spans, feeding the network "
                                     "in this process (e.g. on --device cuda); with --engine ray, CPU actors per CPU "
                                     "step feeding the --workers actors, which then only run the network. 0: none. "
                                     "Not with --n-process or --compat authors.")] = 0,
    compat: Annotated[Compat, typer.Option(
        "--compat", help="words: label spaCy's tokens (default). authors: the authors' published script, "
                         "exactly (raw text, its windows and vote; mentions may cross lines).")] = Compat.words,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run into the same OUTPUT: documents already committed (in "
                         "OUTPUT.parts/) are not annotated again.")] = False,
    commit_every: Annotated[int, typer.Option(
        "--commit-every", min=1, help="Commit progress (for --resume) every this many documents, and at least every "
                                      "minute.")] = 256,
    engine: Annotated[EngineName, typer.Option(
        "--engine", help="local: this process (--n-process). ray: Ray Data with an actor pool of pipelines "
                         "(pip install '.[ray]' in the dt4h_spacy folder), on a local Ray or the cluster of --ray-address.")
    ] = EngineName.local,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Ray actors, each holding one pipeline (with "
                                                                   "--cpu-workers: running its networks only).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(
        "--gpus-per-worker", min=0.0, help="GPUs each Ray actor reserves (e.g. 1, or 0.5 to share one); use with "
                                           "--device cuda.")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(
        "--cpus-per-worker", min=0.0, help="CPUs each Ray actor reserves; its torch threads unless --threads.")] = 1.0,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to join (ray://host:10001 or auto). Default: a "
                                                    "local Ray on this machine.", show_default=False)] = None,
    recursive: RecursiveOption = False,
    quiet: QuietOption = False,
) -> None:
    """Annotate INPUT (.txt files or a table of documents) and write the mentions to OUTPUT.

    Offsets index each document's own characters (files decoded with --encoding, line
    endings as stored, a leading BOM dropped). A file or table row that cannot be read, has no
    id or text, repeats an id, has no language under --lang auto, or is in a language the model
    has no head for is reported and skipped; the others are still written. OUTPUT appears
    only when complete. Exit code 1 if any document failed.
    """
    opened = open_source(source, lang, recursive, encoding,
                         Columns(id_column, text_column, lang_column, keep_columns or ()), delimiter)
    prepare_output(output)
    kind = output_kind(output)
    if kind == CDM_SUFFIX and opened.columns is not None:  # record_metadata from the columns named like its fields
        named = [name for name in table_columns(opened.path, encoding, opened.delimiter)
                 if name in RECORD_FIELDS and name not in opened.columns.names]
        opened.columns = replace(opened.columns, keep=opened.columns.keep + tuple(named))
    if keep_columns and kind not in (".jsonl", ".parquet", CDM_SUFFIX):
        raise typer.BadParameter(f"kept columns are written to a .jsonl, .parquet or .cdm.jsonl OUTPUT, not {kind}.",
                                 param_hint="--keep-columns")
    settings = {"device": device, "threshold": min_score, "quantize": quantize,
                "precision": precision.value, "num_threads": threads, "compat": compat.value}
    qualifiers = context_config(context or context_columns, context_rules)
    pipelines = Pipelines(lang, model, checkpoint, base_model, settings, fallback_lang, qualifiers)
    job = {**opened.describe(), "lang": lang, "fallback_lang": fallback_lang, "model": content_identity(model),
           "checkpoint": content_identity(checkpoint), "base_model": content_identity(base_model),
           "min_score": min_score, "compat": compat.value, "context": qualifiers}
    if engine is EngineName.ray:
        if kind in (".html", CDM_SUFFIX):  # its results carry mentions, not the documents' text
            raise typer.BadParameter("--engine ray writes mentions (.tsv, .jsonl, .parquet), not a page or CDM "
                                     "objects; use --engine local for those.", param_hint="--engine")
        from .engines.ray import ray_engine

        annotate = ray_engine(pipelines, batch_size, workers, gpus_per_worker, cpus_per_worker, ray_address,
                              quiet, cpu_workers)
    else:
        if cpu_workers and (n_process > 1 or compat is Compat.authors):
            raise typer.BadParameter("--cpu-workers runs the words reading in one network process; drop "
                                     "--n-process and --compat authors, or --cpu-workers.", param_hint="--cpu-workers")
        annotate = local_engine(pipelines, batch_size, n_process, cpu_workers)
    with_context = qualifiers is not None and (kind != ".tsv" or context_columns)
    outcome = run_job(opened, output, kind, annotate, job, with_scores=with_scores, with_context=with_context,
                      resume=resume, commit_every=commit_every, quiet=quiet, title=lambda: f"{source.name} predictions",
                      model_name=model_label(model, checkpoint))
    if not quiet:
        unit = "files" if opened.columns is None else "documents"
        typer.echo(f"{outcome.read} {unit} read, {len(outcome.failures)} failed, {outcome.mentions} mentions "
                   f"{'already in' if outcome.already_complete else 'written to'} {output}")
    if outcome.failures:
        raise typer.Exit(1)


# -------------------------------------------------------------------------- evaluate


@app.command("evaluate")
def evaluate_command(
    gold: Annotated[Path, typer.Argument(
        metavar="GOLD", help="Gold mentions: a MultiClinAI TSV (or DisTEMIST's columns), or a .jsonl/.parquet with "
                             "predict's mention columns (id, label, start, end).", show_default=False)],
    pred: Annotated[Path, typer.Argument(
        metavar="PRED", help="Predicted mentions: predict's .tsv, .jsonl or .parquet OUTPUT.", show_default=False)],
    entity: EntityOption = None,
    only_gold_docs: Annotated[bool, typer.Option(
        "--only-gold-docs", help="Score only the documents GOLD has mentions of (predictions on a whole extract "
                                 "against gold for part of it); the table says how many predicted documents were "
                                 "left out.")] = False,
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
    File names match with or without .txt; GOLD may use DisTEMIST columns; .jsonl and
    .parquet files are read by predict's columns (id as the file name). Exit code 1 for a
    malformed file (the message names the line or row) or files that share no document.
    """
    try:
        gold_rows = read_output(gold)
        pred_rows = read_output(pred)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(gold_rows, pred_rows, entity, only_gold_docs)
    except (TSVError, RecordError, EvaluationError) as err:
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
        found = strict_errors(gold_rows, pred_rows, entity, only_gold_docs)
        with atomic_write(errors) as handle:
            handle.write(format_rows((*tsv_header(), "error"), [(*tsv_row(m), kind) for kind, m in found]))
        typer.echo(f"{len(found)} errors written to {errors}", err=True)


@app.command("evaluate-context")
def evaluate_context_command(
    gold: Annotated[Path, typer.Argument(
        metavar="GOLD", help="Gold mentions with qualifiers: TSV with negated/uncertain/... columns, JSONL, Parquet, or brat "
                             "(.ann file or folder, attribute lines such as 'A1<TAB>Negated T3').", show_default=False)],
    pred: Annotated[Path, typer.Argument(
        metavar="PRED", help="Predictions: predict --context's .jsonl or .parquet, or a TSV written with --context-columns.",
        show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the metrics JSON to this file.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics JSON instead of the table.")] = False,
) -> None:
    """Score the qualifiers of PRED against GOLD: P/R/F1 of negated, uncertain, hypothetical,
    historical and family per language, on the mentions present in both (same document and
    offsets). Exit code 1 for a malformed file (the message names the line) or no shared mention.
    """
    try:
        result = evaluate_context(read_qualified(gold), read_qualified(pred))
    except EvaluationError as err:
        error(str(err))
        raise typer.Exit(1) from err
    text = json.dumps(result, indent=2, ensure_ascii=False)
    typer.echo(text if as_json else format_context_table(result), nl=as_json)
    if output is not None:
        with atomic_write(output) as handle:
            handle.write(text + "\n")
        typer.echo(f"metrics written to {output}", err=True)


# --------------------------------------------------------------------------- convert


class CorpusFormat(str, Enum):
    """Source formats ``convert`` reads; each maps to one reader in :mod:`dt4h_spacy.corpus`."""

    auto = "auto"
    tsv = "tsv"
    brat = "brat"
    iob = "iob"


def _read_corpus(fmt: CorpusFormat, source: Path, mentions: Optional[Path], recursive: bool, encoding: str,
                 lang: str, columns: Columns, delimiter: Optional[str]) -> Iterator[Any]:
    """The reader for ``fmt``; a new format is one more reader and one more branch here."""
    table = fmt is not CorpusFormat.iob and source.exists() and is_table(source)
    if fmt is CorpusFormat.auto:
        fmt = CorpusFormat.tsv if mentions is not None or table else CorpusFormat.brat
    if fmt is CorpusFormat.tsv:
        if mentions is None:
            what = "a table's mentions come from" if table else "the tsv format needs"
            raise typer.BadParameter(f"{what} --mentions MENTIONS.tsv (filename: the document's name or id).",
                                     param_hint="--mentions")
        return read_source_corpus(open_source(source, lang, recursive, encoding, columns, delimiter), mentions)
    if fmt is CorpusFormat.brat:
        return read_brat_corpus(source, recursive, encoding)
    return read_iob_csv(source)


@app.command("convert")
@package_errors
def convert_command(
    source: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Folder of .txt files (with .ann files beside them for brat); a table of documents "
                              "(.parquet, .csv, .tsv, .jsonl, a folder of Parquet parts) read as predict reads it, "
                              "with --mentions; or for iob a CSV file or folder of CSVs.", show_default=False)],
    output_dir: Annotated[Path, typer.Argument(
        metavar="OUTPUT_DIR", help="Folder for the DocBin files, one <lang>.spacy per language.", show_default=False)],
    mentions: Annotated[Optional[Path], typer.Option(
        "--mentions", help="TSV of mentions (MultiClinAI columns, or DisTEMIST's off0/off1/span) for the .txt files "
                           "or the table's rows (filename = the row's id).", show_default=False)] = None,
    fmt: Annotated[CorpusFormat, typer.Option(
        "--format",
        help="tsv: .txt files or a table + --mentions TSV; brat: .txt + .ann; iob: the DT4H authors' token CSVs "
             "(ner,start,end,token; blank line between sentences; needs --lang). auto: tsv with --mentions or a "
             "table, else brat.")] = CorpusFormat.auto,
    lang: LangOption = "auto",
    id_column: IdColumnOption = Columns.id,
    text_column: TextColumnOption = Columns.text,
    lang_column: LangColumnOption = None,
    delimiter: DelimiterOption = None,
    entity: EntityOption = None,
    recursive: RecursiveOption = False,
    encoding: EncodingOption = "utf-8",
    reanchor: Annotated[bool, typer.Option(
        "--reanchor", help="Move a mention whose text differs from the file at its offsets to the nearest exact "
                           "occurrence of its text, instead of dropping it.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Turn annotated texts into spaCy training data (DocBin per language).

    The .txt files (and CSV/TSV/JSON-lines tables) are decoded with --encoding and mention
    offsets index the decoded text (mention TSVs, .ann and IOB files are read as UTF-8). Each
    document's language is chosen as by predict (a table's --lang-column, else --lang; auto:
    the MultiClinNER name, else detected; detect: detected) and kept in the DocBin; its text is
    tokenized with that language's spaCy tokenizer. Mentions off token boundaries are snapped outwards,
    overlapping ones keep the longest; every snapped or
    dropped mention is counted in the summary. A mention whose text differs from the file
    at its offsets is dropped (or, with --reanchor, moved) and listed by file and offset.
    Exit code 1 if any file could not be used or any mention was dropped for its text.
    """
    if fmt is CorpusFormat.iob and lang in ("auto", "detect"):
        raise typer.BadParameter("iob CSVs carry no MultiClinNER document names and sentences too short to detect a "
                                 "language in; pass the language, e.g. --lang es.", param_hint="--lang")
    items = _read_corpus(fmt, source, mentions, recursive, encoding, lang,
                         Columns(id_column, text_column, lang_column), delimiter)
    try:
        conversion = build_docbins(items, lang=lang, entity=entity, reanchor=reanchor)
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


# ----------------------------------------------------------------------------- serve


@app.command("serve")
@package_errors
def serve_command(
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    base_model: BaseModelOption = None,
    context: Annotated[bool, typer.Option(
        "--context", help="Add the dt4h_context pipe, so negation=true reports negation and uncertainty (else they "
                          "are null).")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to bind; 127.0.0.1 keeps the service on this "
                                                     "machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes, each loading the model once "
                                                                  "(CPU hosts: about one per 1-2 cores).")] = 1,
    device: DeviceOption = "cpu",
    api_key_file: Annotated[Optional[Path], typer.Option(
        "--api-key-file", exists=True, dir_okay=False, help="File holding the API key every request but GET / must "
                                                            "send as 'Authorization: Bearer KEY' (else 401).",
        show_default=False)] = None,
    log_text: Annotated[bool, typer.Option(
        "--log-text", help="Log the note text of each request. Off: notes are patient data; only counts and "
                           "timings are logged.")] = False,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1, help="Largest request body (413 above; "
                                                                               "default 10 MiB).")] = ServeSettings.max_body_bytes,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars", min=1, help="Longest document, in characters "
                                                                               "(413 above).")] = ServeSettings.max_text_chars,
    max_documents: Annotated[int, typer.Option("--max-documents", min=1, help="Most documents per request (413 "
                                                                             "above).")] = ServeSettings.max_documents,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most documents per nlp.pipe call, gathered "
                                                                     "across requests.")] = ServeSettings.max_batch,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, help="How long a request waits for others "
                                                                             "to share its batch.")] = ServeSettings.max_wait_ms,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, help="Requests waiting for the model per worker; "
                                                                       "beyond it 503 with Retry-After.")] = ServeSettings.queue_size,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds a request may take, queueing "
                                                                       "included (504 after).")] = ServeSettings.timeout_s,
) -> None:
    """Serve the model over HTTP: the DT4H annotation service's contract (CogStack envelope in,
    DT4H CDM out) on POST /process_bulk, predict's rows on POST /annotate, GET / and /health,
    OpenAPI docs at /docs. Requests arriving together share one nlp.pipe call. SIGTERM or
    Ctrl-C stops accepting, finishes the requests in flight, then exits.
    """
    try:
        import uvicorn
    except ImportError:
        error("serve needs FastAPI and uvicorn: pip install '.[serve]' in the dt4h_spacy folder.")
        raise typer.Exit(2) from None
    if model is not None and (checkpoint or base_model):
        raise typer.BadParameter("use either --model or --checkpoint/--base-model, not both.", param_hint="--model")
    settings = ServeSettings(model, checkpoint, base_model, context, device, max_body_bytes, max_text_chars,
                             max_documents, max_batch, max_wait_ms, queue_size, timeout, log_text,
                             None if api_key_file is None else str(api_key_file))
    os.environ.update(settings.to_environment())
    if workers > 1:  # each worker process starts torch with its share of the cores, not all of them
        os.environ.setdefault("OMP_NUM_THREADS", str(default_threads(workers)))
    uvicorn.run("dt4h_spacy.serve.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="info")


# ------------------------------------------------------------- train, visualize
# (their logic lives in dt4h_spacy.training and dt4h_spacy.visualize)

app.command("train", context_settings=TRAIN_CONTEXT)(train_command)
app.command("init-checkpoint")(init_checkpoint_command)


@app.command("export")
def export_command(
    pipeline: Annotated[Path, typer.Argument(metavar="PIPELINE", help="Saved pipeline, e.g. out/model-best of spacy train.",
                                             show_default=False)],
    output: Annotated[Path, typer.Argument(metavar="MODEL_PT", help="Checkpoint file to write (.pt, or .safetensors).",
                                           show_default=False)],
    component: Annotated[Optional[str], typer.Option(
        "--component", help="The dt4h_disease component to export, when the pipeline has several.",
        show_default=False)] = None,
    base_model_dir: Annotated[Optional[Path], typer.Option(
        "--base-model-dir", help="Also write the encoder config and tokenizer here (the base_model to load it with "
                                 "offline).", show_default=False)] = None,
) -> None:
    """Write a pipeline's DT4H network in the published checkpoint layout (the authors' .pt)."""
    from .training.export import export_checkpoint

    try:
        heads = export_checkpoint(pipeline, output, component, base_model_dir)
    except (CheckpointError, OSError) as err:
        error(str(err))
        raise typer.Exit(2) from err
    typer.echo(f"{output}: heads {', '.join(heads)}")
app.command("visualize")(package_errors(visualize_command))


def main() -> None:
    """Entry point for ``python -m dt4h_spacy``."""
    app(prog_name="dt4h-spacy")
