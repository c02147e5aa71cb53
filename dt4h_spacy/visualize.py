"""``dt4h-spacy visualize``: a standalone displaCy page of a pipeline's predictions.

The page itself is :mod:`dt4h_spacy.io.html`; this command is ``predict`` writing that page,
through the same source → annotate → sink path (:func:`dt4h_spacy.run.run_job`).
"""

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .batch import Pipelines, context_config, open_source, prepare_output
from .cli_options import (
    BaseModelOption,
    CheckpointOption,
    ContextOption,
    ContextRulesOption,
    DelimiterOption,
    EncodingOption,
    FallbackLangOption,
    IdColumnOption,
    InputArgument,
    LangColumnOption,
    LangOption,
    ModelOption,
    RecursiveOption,
    TextColumnOption,
)
from .engines.local import local_engine
from .io.tables import Columns
from .run import run_job


def visualize_command(
    source: InputArgument,
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="HTML file to write; missing folders are created.",
                                           show_default=False)],
    lang: LangOption = "auto",
    fallback_lang: FallbackLangOption = None,
    id_column: IdColumnOption = Columns.id,
    text_column: TextColumnOption = Columns.text,
    lang_column: LangColumnOption = None,
    checkpoint: CheckpointOption = None,
    base_model: BaseModelOption = None,
    model: ModelOption = None,
    encoding: EncodingOption = "utf-8",
    delimiter: DelimiterOption = None,
    title: Annotated[Optional[str], typer.Option(help="Page title. Default: the pipeline's name.", show_default=False)] = None,
    spans: Annotated[bool, typer.Option(
        "--spans", help="Draw every predicted span, overlapping labels stacked (displaCy style=\"span\"), instead "
                        "of the non-overlapping ones doc.ents holds.")] = False,
    context: ContextOption = False,
    context_rules: ContextRulesOption = None,
    recursive: RecursiveOption = False,
) -> None:
    """Write a standalone HTML page showing the entities the model finds in INPUT (a .txt file, a folder, or a table).

    One section per document, titled with the file name (a table row's id), entities highlighted
    by displaCy. Documents are read and routed to a language exactly as by predict (tables with
    the same --id-column, --text-column, --lang-column, --delimiter): one that cannot be read,
    has no language under --lang auto, or is in a language the model has no head for is
    reported and skipped. Exit code 1 if a file was skipped or no document could be shown,
    2 for an unusable model.
    """
    opened = open_source(source, lang, recursive, encoding, Columns(id_column, text_column, lang_column), delimiter)
    prepare_output(output)
    pipelines = Pipelines(lang, model, checkpoint, base_model, fallback=fallback_lang,
                          context=context_config(context, context_rules))
    outcome = run_job(opened, output, ".html", local_engine(pipelines), {},
                      title=(lambda: title) if title else _default_title(pipelines), spans=spans)
    typer.echo(f"{len(outcome.documents)} documents, {outcome.mentions} entities -> {output}")
    if outcome.failures:
        raise typer.Exit(1)


def _default_title(pipelines: Pipelines) -> Callable[[], str]:
    """The pipeline's name, asked once the pipeline is loaded."""
    return lambda: f"{pipelines.load().meta.get('lang', '')}_{pipelines.load().meta.get('name', 'pipeline')} predictions"
