"""The CLI's side of the shared options and errors: ``Annotated`` aliases for the options
``predict`` and ``visualize`` share (declared once, so the commands cannot drift apart), and
the one place where the package's errors become typer's messages and exit codes.

Below the CLI (:mod:`dt4h_spacy.batch`, :mod:`dt4h_spacy.run`, :mod:`dt4h_spacy.engines`)
bad values raise :class:`~dt4h_spacy.errors.UsageError` or
:class:`~dt4h_spacy.errors.RunError`; nothing there imports typer.
"""

import functools
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional, TypeVar

import typer

from .batch import delimiter_char, encoding_name, error, fallback_lang, kept_columns, normalize_lang
from .errors import RunError, UsageError

T = TypeVar("T")


def _checked(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """An option callback that gives ``check``'s :class:`UsageError` as typer's BadParameter
    (click names the option in the message)."""

    @functools.wraps(check)
    def callback(value: Any) -> T:
        try:
            return check(value)
        except UsageError as err:
            raise typer.BadParameter(str(err)) from err

    return callback


def package_errors(command: Callable[..., T]) -> Callable[..., T]:
    """A command whose package errors become the CLI's: a :class:`UsageError` is a usage
    message naming its option (exit code 2), a :class:`RunError` one ``error:`` line and its
    exit code."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except UsageError as err:
            raise typer.BadParameter(str(err), param_hint=err.option) from err
        except RunError as err:
            error(str(err))
            raise typer.Exit(err.exit_code) from None

    return run


InputArgument = Annotated[Path, typer.Argument(
    metavar="INPUT", help="A .txt file, or a folder of them (.txt in any case, e.g. A.TXT); or a table: .parquet, "
                          ".csv, .tsv, .jsonl, or a folder of Parquet parts.", show_default=False)]
IdColumnOption = Annotated[str, typer.Option("--id-column", help="Table column with each document's id (its name "
                                                                 "in the output).")]
TextColumnOption = Annotated[str, typer.Option("--text-column", help="Table column with each document's text.")]
LangColumnOption = Annotated[Optional[str], typer.Option(
    "--lang-column", help="Table column with each document's language (es, it, ro; es_ES etc. accepted); an empty "
                          "value falls back to --lang. Default: --lang for every row.", show_default=False)]
LangOption = Annotated[str, typer.Option(
    "--lang", callback=_checked(normalize_lang),
    help="Language of the texts: es, it, ro (ES, es_ES, es-ES also accepted); auto to read it from "
         "MultiClinNER file names (MultiClinNER-es-test-disease-00019.txt -> es) and detect it in the text of "
         "other documents; detect to detect it in every text (py3langid).")]
FallbackLangOption = Annotated[Optional[str], typer.Option(
    "--fallback-lang", callback=_checked(fallback_lang),
    help="Annotate documents found (by name or detection) to be in a language the model has no head for as this "
         "language, instead of skipping them.", show_default=False)]
RecursiveOption = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also read .txt files in subfolders (symlinked folders are not followed).")]
KeepColumnsOption = Annotated[Optional[str], typer.Option(
    "--keep-columns", callback=_checked(kept_columns), metavar="COLUMNS",
    help="Table columns to copy beside every mention of their document, comma-separated, e.g. "
         "patient_id,admission_id (.jsonl/.parquet OUTPUT; Parquet keeps their types, CSV values are text).",
    show_default=False)]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bar and no summary; problems are still reported on stderr.")]
EncodingOption = Annotated[str, typer.Option(
    "--encoding", callback=_checked(encoding_name),
    help="Encoding of the .txt files and of CSV, TSV and JSON-lines tables, e.g. cp1252 or latin-1 for many "
         "hospital exports. Offsets index the decoded text.")]
DelimiterOption = Annotated[Optional[str], typer.Option(
    "--delimiter", callback=_checked(delimiter_char),
    help="Field delimiter of a CSV table, e.g. ';' (Spanish and Italian spreadsheets) or '\\t'. Default: the one "
         "of , ; tab | that its header line holds most often (tab for .tsv).", show_default=False)]
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
ContextOption = Annotated[bool, typer.Option(
    "--context", help="Qualify each mention with the dt4h_context pipe (ConText rules for es, it, ro): negated, "
                      "uncertain, hypothetical, historical, family columns in .jsonl/.parquet (TSV: with "
                      "--context-columns), labels such as DISEASE (neg) in HTML.")]
ContextRulesOption = Annotated[Optional[List[Path]], typer.Option(
    "--context-rules", exists=True, dir_okay=False, metavar="FILE",
    help="A ConText rule file (JSON, see README) that extends the packaged rules; repeat for several. Implies "
         "--context.", show_default=False)]
