"""A standalone displaCy page of annotated documents.

Reading predictions in context is the quickest way to see what a model gets wrong, so the
page shows each document whole, under its name, with its mentions highlighted by displaCy.
It is one self-contained HTML file (inline styles, UTF-8 declared, no scripts or external
resources), so it opens from disk or a CI artifact in any browser.
"""

import html
import warnings
from typing import TYPE_CHECKING, Sequence

from spacy import displacy

from ..colors import DISPLACY_COLORS

if TYPE_CHECKING:
    from .sinks import AnnotatedDoc

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


def render_page(documents: Sequence["AnnotatedDoc"], title: str) -> str:
    """The HTML page: one section per document, mentions as displaCy ``<mark>`` elements."""
    sections = []
    labels = sorted({m.label for d in documents for m in d.mentions})
    options = {"ents": labels, "colors": DISPLACY_COLORS}
    for document in documents:
        entry = {"text": document.text,
                 "ents": [{"start": m.start, "end": m.end, "label": m.label} for m in document.mentions]}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W006\]")  # a document without entities is fine here
            content = displacy.render(entry, style="ent", manual=True, options=options, jupyter=False)
        n = len(document.mentions)
        sections.append(SECTION.format(anchor=html.escape(document.name, quote=True), name=html.escape(document.name),
                                       count=f"{n} entit{'y' if n == 1 else 'ies'}", content=content))
    n_ents = sum(len(d.mentions) for d in documents)
    summary = f"{len(documents)} document{'s' if len(documents) != 1 else ''}, {n_ents} entities."
    lang = html.escape(documents[0].lang if documents else "en", quote=True)
    return PAGE.format(lang=lang, title=html.escape(title), summary=summary, sections="\n".join(sections))
