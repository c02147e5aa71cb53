"""``dt4h-spacy visualize``: a standalone displaCy page of a pipeline's predictions.

Reading predictions in context is the quickest way to see what a model gets wrong, so
the page shows each document whole, under its name, with the entities highlighted by
displaCy. It is one self-contained HTML file (inline styles, UTF-8 declared, no scripts or
external resources), so it opens from disk or a CI artifact in any browser.
"""

import html
import sys
import warnings
from pathlib import Path
from typing import Annotated, List, Optional, Sequence, Tuple

import typer
from spacy import displacy
from spacy.tokens import Doc, Span
from tqdm import tqdm

from .batch import (
    BaseModelOption,
    CheckpointOption,
    EncodingOption,
    FallbackLangOption,
    InputArgument,
    LangOption,
    ModelOption,
    RecursiveOption,
    annotate,
    error,
    find_inputs,
    load_pipelines,
    prepare_output,
    report_failures,
    spans_keys_of,
)
from .colors import DISPLACY_COLORS
from .textfiles import atomic_write

PAGE = """<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
</head>
<body style="font-size: 16px; font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; padding: 2rem; max-width: 60rem; margin: auto">
<h1>{title}</h1>
<p>{summary}</p>
{sections}
</body>
</html>
"""

SECTION = """<section id="{anchor}" style="margin-bottom: 3rem">
<h2 style="font-size: 1.1rem; border-bottom: 1px solid #ccc">{name} <small style="color: #666">({count})</small></h2>
{content}
</section>"""


def render_page(docs: Sequence[Tuple[str, Doc]], title: str, spans_keys: Optional[Sequence[str]] = None) -> str:
    """The HTML page: one section per ``(name, doc)``, entities as displaCy ``<mark>`` elements;
    with ``spans_keys``, every span of those ``doc.spans`` groups instead, overlapping ones
    stacked (displaCy ``style="span"``), as multilabel checkpoints tag them."""
    sections = []
    found = {name: _shown_spans(doc, spans_keys) for name, doc in docs}
    labels = sorted({span.label_ for spans in found.values() for span in spans})
    options = {"ents": labels, "colors": DISPLACY_COLORS}
    for name, doc in docs:
        spans = found[name]
        if spans_keys is None:
            style, entry = "ent", {
                "text": doc.text,
                "ents": [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in spans],
            }
        else:
            style, entry = "span", {
                "text": doc.text,
                "tokens": [token.text for token in doc],
                "spans": [{"start_token": s.start, "end_token": s.end, "label": s.label_} for s in spans],
            }
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W(006|117)\]")  # a document without entities is fine here
            content = displacy.render(entry, style=style, manual=True, options=options, jupyter=False)
        count = f"{len(spans)} entit{'y' if len(spans) == 1 else 'ies'}"
        sections.append(SECTION.format(anchor=html.escape(name, quote=True), name=html.escape(name),
                                       count=count, content=content))
    n_ents = sum(len(spans) for spans in found.values())
    summary = f"{len(docs)} document{'s' if len(docs) != 1 else ''}, {n_ents} entities."
    lang = html.escape(docs[0][1].lang_ if docs else "en", quote=True)
    return PAGE.format(lang=lang, title=html.escape(title), summary=summary, sections="\n".join(sections))


def _shown_spans(doc: Doc, spans_keys: Optional[Sequence[str]]) -> List[Span]:
    if spans_keys is None:
        return list(doc.ents)
    return sorted((s for key in spans_keys if key in doc.spans for s in doc.spans[key]),
                  key=lambda s: (s.start, s.end, s.label_))


def visualize_command(
    source: InputArgument,
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="HTML file to write; missing folders are created.",
                                           show_default=False)],
    lang: LangOption = "auto",
    fallback_lang: FallbackLangOption = None,
    checkpoint: CheckpointOption = None,
    base_model: BaseModelOption = None,
    model: ModelOption = None,
    encoding: EncodingOption = "utf-8",
    title: Annotated[Optional[str], typer.Option(help="Page title. Default: the pipeline's name.", show_default=False)] = None,
    spans: Annotated[bool, typer.Option(
        "--spans", help="Draw every predicted span, overlapping labels stacked (displaCy style=\"span\"), instead "
                        "of the non-overlapping doc.ents.")] = False,
    recursive: RecursiveOption = False,
) -> None:
    """Write a standalone HTML page showing the entities the model finds in INPUT (a .txt file or a folder).

    One section per document, titled with the file name, entities highlighted by displaCy.
    Files are read and routed to a language exactly as by predict: one that cannot be read,
    has no language under --lang auto, or is in a language the model has no head for is
    reported and skipped. Exit code 1 if a file was skipped or no document could be shown,
    2 for an unusable model.
    """
    groups, failures, total = find_inputs(source, lang, recursive, encoding)
    prepare_output(output)
    pipelines = load_pipelines(groups, lang, model, checkpoint, base_model, {}, failures, fallback_lang)
    with tqdm(total=total, unit="file", file=sys.stderr, disable=not sys.stderr.isatty()) as progress:
        docs = list(annotate(pipelines, groups, failures, progress, encoding))
    report_failures(failures)
    if not docs:
        error(f"no document of {source} could be annotated; nothing written.")
        raise typer.Exit(1)
    nlp = next(iter(pipelines.values()))
    page_title = title or f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', 'pipeline')} predictions"
    with atomic_write(output) as handle:
        handle.write(render_page(sorted(docs, key=lambda item: item[0]), page_title, spans_keys_of(nlp) if spans else None))
    typer.echo(f"{len(docs)} documents, {sum(len(d.ents) for _, d in docs)} entities -> {output}")
    if failures:
        raise typer.Exit(1)
