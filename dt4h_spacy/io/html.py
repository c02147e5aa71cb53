"""A standalone displaCy page of annotated documents.

Reading predictions in context is the quickest way to see what a model gets wrong, so the
page shows each document whole, under its name, with its mentions highlighted by displaCy.
It is one self-contained HTML file (inline styles, UTF-8 declared, no scripts or external
resources), so it opens from disk or a CI artifact in any browser.
"""

import bisect
import html
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy import displacy

from ..colors import DISPLACY_COLORS
from ..spans import non_overlapping
from .records import AnnotatedDoc, Mention

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


def render_page(documents: Sequence[AnnotatedDoc], title: str, spans: bool = False) -> str:
    """The HTML page: one section per document. By default the mentions ``doc.ents`` would hold
    (:func:`~dt4h_spacy.spans.non_overlapping`) as displaCy ``<mark>`` elements; with ``spans``,
    every mention, overlapping ones stacked (displaCy ``style="span"``), as multilabel
    checkpoints tag them."""
    shown = {id(d): d.mentions if spans else non_overlapping(d.mentions, _bounds) for d in documents}
    labels = sorted({display_label(m) for mentions in shown.values() for m in mentions})
    colors = {label: QUALIFIED_COLOR for label in labels if label not in DISPLACY_COLORS}
    options = {"ents": labels, "colors": {**DISPLACY_COLORS, **colors}}
    sections = []
    for document in documents:
        mentions = shown[id(document)]
        style, entry = ("span", _span_entry(document.text, mentions)) if spans else ("ent", {
            "text": document.text, "ents": [{"start": m.start, "end": m.end, "label": display_label(m)} for m in mentions]})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W(006|117)\]")  # a document without entities is fine
            content = displacy.render(entry, style=style, manual=True, options=options, jupyter=False)
        n = len(mentions)
        sections.append(SECTION.format(anchor=html.escape(document.name, quote=True), name=html.escape(document.name),
                                       count=f"{n} entit{'y' if n == 1 else 'ies'}", content=content))
    n_ents = sum(len(mentions) for mentions in shown.values())
    summary = f"{len(documents)} document{'s' if len(documents) != 1 else ''}, {n_ents} entities."
    lang = html.escape(documents[0].lang if documents else "en", quote=True)
    return PAGE.format(lang=lang, title=html.escape(title), summary=summary, sections="\n".join(sections))


QUALIFIER_TAGS = {"negated": "neg", "uncertain": "unc", "hypothetical": "hyp", "historical": "hist", "family": "fam"}
QUALIFIED_COLOR = "#d9d9d9"  # a qualified mention is no plain finding: grey, whatever its type


def display_label(mention: Mention) -> str:
    """The label displaCy shows: ``DISEASE``, or ``DISEASE (neg)`` for a negated one (and so on)."""
    tags = [tag for name, tag in QUALIFIER_TAGS.items() if getattr(mention, name)]
    return f"{mention.label} ({', '.join(tags)})" if tags else mention.label


def _bounds(mention: Mention) -> Tuple[int, int, Optional[float]]:
    return mention.start, mention.end, mention.score


def _span_entry(text: str, mentions: Sequence[Mention]) -> Dict[str, Any]:
    """displaCy's manual ``span`` input: the text's whitespace-separated pieces, also cut where
    a mention starts or ends, and each mention as a range of those pieces."""
    cuts = {offset for m in mentions for offset in (m.start, m.end)}
    pieces: List[Tuple[int, int]] = []
    for match in re.finditer(r"\S+", text):
        inner = sorted(c for c in cuts if match.start() < c < match.end())
        edges = [match.start(), *inner, match.end()]
        pieces += list(zip(edges, edges[1:]))
    starts = [start for start, _ in pieces]
    return {
        "text": text,
        "tokens": [text[start:end] for start, end in pieces],
        "spans": [{"start_token": bisect.bisect_left(starts, m.start), "end_token": bisect.bisect_left(starts, m.end),
                   "label": display_label(m)} for m in mentions],
    }
