"""``dt4h-spacy visualize``: a standalone displaCy page of a pipeline's predictions.

Reading predictions in context is the quickest way to see what a model gets wrong, so
the page shows each document whole, under its name, with the entities highlighted by
displaCy. It is one self-contained HTML file (inline styles, UTF-8 declared, no scripts or
external resources), so it opens from disk or a CI artifact in any browser.
"""

import html
import warnings
from pathlib import Path
from typing import Annotated, Iterable, List, Optional, Sequence, Tuple

import spacy
import typer
from spacy import displacy
from spacy.language import Language
from spacy.tokens import Doc

from .checkpoint import check_pipeline_folder
from .component import DiseaseRecognizer
from .filenames import lang_from_filename
from .textfiles import Failure, atomic_write, find_txt_files, read_documents

COLORS = {"DISEASE": "#f7a8a8", "SYMPTOM": "#a8d8f7", "PROCEDURE": "#b8f0b0"}

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


def render_page(docs: Sequence[Tuple[str, Doc]], title: str) -> str:
    """The HTML page: one section per ``(name, doc)``, entities as displaCy ``<mark>`` elements."""
    sections = []
    labels = sorted({ent.label_ for _, doc in docs for ent in doc.ents})
    options = {"ents": labels, "colors": COLORS}
    for name, doc in docs:
        entry = {
            "text": doc.text,
            "ents": [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in doc.ents],
        }
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W006\]")  # a document without entities is fine here
            content = displacy.render(entry, style="ent", manual=True, options=options, jupyter=False)
        count = f"{len(doc.ents)} entit{'y' if len(doc.ents) == 1 else 'ies'}"
        sections.append(SECTION.format(anchor=html.escape(name, quote=True), name=html.escape(name),
                                       count=count, content=content))
    n_ents = sum(len(doc.ents) for _, doc in docs)
    summary = f"{len(docs)} document{'s' if len(docs) != 1 else ''}, {n_ents} entities."
    lang = html.escape(docs[0][1].lang_ if docs else "en", quote=True)
    return PAGE.format(lang=lang, title=html.escape(title), summary=summary, sections="\n".join(sections))


def annotate_files(nlp: Language, paths: Sequence[Path], lang: str, failures: List[Failure]) -> Tuple[List[Tuple[str, Doc]], List[str]]:
    """``(name, doc)`` for every readable file the pipeline serves, plus the names it skipped.

    A file's language is ``lang``, or with ``auto`` the one in its MultiClinNER name (else the
    pipeline's); files in a language the pipeline has no head for are skipped, so one folder
    of mixed languages can be shown language by language.
    """
    served = set()
    for _, component in nlp.pipeline:
        if isinstance(component, DiseaseRecognizer):
            served |= set(component.languages)
    skipped: List[str] = []

    def docs() -> Iterable[Tuple[Doc, str]]:
        for item in read_documents(paths):
            if isinstance(item, Failure):
                failures.append(item)
                continue
            doc_lang = (lang_from_filename(item.name) or nlp.lang) if lang == "auto" else lang
            if served and doc_lang not in served:
                skipped.append(item.name)
                continue
            doc = nlp.make_doc(item.text)
            doc._.dt4h_lang = doc_lang
            yield doc, item.name

    annotated = [(name, doc) for doc, name in nlp.pipe(docs(), as_tuples=True)]
    return annotated, skipped


def visualize_command(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT_DIR", help="Folder of UTF-8 .txt files.", show_default=False)],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="HTML file to write.", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="A saved spaCy pipeline folder or an installed pipeline package.",
                                       show_default=False)],
    lang: Annotated[str, typer.Option(
        "--lang", help="Language of the texts, or auto: from MultiClinNER file names. Files in a "
                       "language the pipeline has no head for are skipped.")] = "auto",
    title: Annotated[Optional[str], typer.Option(help="Page title. Default: the pipeline's name.", show_default=False)] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also read .txt files in subfolders.")] = False,
) -> None:
    """Write a standalone HTML page showing the entities the pipeline finds in each text.

    One section per document, titled with the file name, entities highlighted by displaCy.
    Exit code 1 if a file could not be read or no document could be shown, 2 for an unusable model.
    """
    try:
        paths, failures = find_txt_files(input_dir, recursive)
    except OSError as err:
        raise typer.BadParameter(str(err), param_hint="INPUT_DIR") from err
    try:
        check_pipeline_folder(Path(model))
        nlp = spacy.load(model)
    except (OSError, ValueError) as err:
        typer.echo(f"error: cannot load pipeline {model}: {err}", err=True)
        raise typer.Exit(2) from err
    docs, skipped = annotate_files(nlp, paths, lang, failures)
    for failure in failures:
        typer.echo(f"error: skipped {failure}", err=True)
    if not docs:
        typer.echo(f"error: no document of {input_dir} in a language the pipeline serves; nothing written.", err=True)
        raise typer.Exit(1)
    page_title = title or f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', 'pipeline')} predictions"
    with atomic_write(output) as handle:
        handle.write(render_page(sorted(docs, key=lambda item: item[0]), page_title))
    note = f", {len(skipped)} skipped (language not served)" if skipped else ""
    typer.echo(f"{len(docs)} documents, {sum(len(d.ents) for _, d in docs)} entities -> {output}{note}")
    if failures:
        raise typer.Exit(1)
