"""Where annotations go, chosen by OUTPUT's extension.

``.tsv`` is the MultiClinAI TSV (filename = the document's name or id); ``.jsonl`` and
``.parquet`` hold one row per mention with ``id, label, start, end, text, score``; ``.html``
is a displaCy page of the documents. The mention writers take rows already in output order
and write them one at a time to a temporary file that replaces OUTPUT once complete, so
memory stays flat and an interrupted run never leaves a truncated OUTPUT.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Union

import pyarrow
import pyarrow.parquet

from ..textfiles import atomic_write
from ..tsv import Mention, write_sorted_mentions
from .html import render_page

FIELDS = ("id", "label", "start", "end", "text", "score")
SCHEMA = pyarrow.schema([("id", pyarrow.string()), ("label", pyarrow.string()), ("start", pyarrow.int64()),
                         ("end", pyarrow.int64()), ("text", pyarrow.string()), ("score", pyarrow.float64())])
PARQUET_ROWS = 65536


@dataclass(frozen=True)
class AnnotatedDoc:
    """A document after annotation: what every sink needs (the HTML page also the text);
    ``path`` is where it came from, as in :class:`~dt4h_spacy.textfiles.Document`."""

    name: str
    text: str
    lang: str
    mentions: List[Mention]
    path: Union[str, Path] = ""


def _record(m: Mention) -> Dict[str, object]:
    return dict(zip(FIELDS, (m.filename, m.label, m.start, m.end, m.text, m.score)))


def write_jsonl(path: Path, mentions: Iterable[Mention], with_scores: bool = True) -> int:
    """One JSON object per mention and line (UTF-8, non-ASCII kept as is)."""
    count = 0
    with atomic_write(path) as handle:
        for mention in mentions:
            handle.write(json.dumps(_record(mention), ensure_ascii=False) + "\n")
            count += 1
    return count


def write_parquet(path: Path, mentions: Iterable[Mention], with_scores: bool = True) -> int:
    """One Parquet row per mention, written in row groups of :data:`PARQUET_ROWS`."""
    count = 0
    with atomic_write(path, binary=True) as handle:
        with pyarrow.parquet.ParquetWriter(handle, SCHEMA) as writer:
            chunk: List[Dict[str, object]] = []
            for mention in mentions:
                chunk.append(_record(mention))
                if len(chunk) == PARQUET_ROWS:
                    writer.write_table(pyarrow.Table.from_pylist(chunk, schema=SCHEMA))
                    count += len(chunk)
                    chunk = []
            writer.write_table(pyarrow.Table.from_pylist(chunk, schema=SCHEMA))
            count += len(chunk)
    return count


MentionWriter = Callable[[Path, Iterable[Mention], bool], int]
MENTION_WRITERS: Dict[str, MentionWriter] = {".tsv": write_sorted_mentions, ".jsonl": write_jsonl,
                                             ".parquet": write_parquet}
HTML_SUFFIXES = (".html", ".htm")


def output_kind(path: Path) -> str:
    """What to write to OUTPUT, from its extension: ``.jsonl``, ``.parquet``, ``.html``, or
    else (``.tsv`` and any other name, as before there were other outputs) ``.tsv``."""
    suffix = path.suffix.lower()
    return ".html" if suffix in HTML_SUFFIXES else suffix if suffix in MENTION_WRITERS else ".tsv"


def write_html(path: Path, documents: Sequence[AnnotatedDoc], title: str, spans: bool = False) -> None:
    """The standalone displaCy page of ``documents``, sorted by name (see :func:`.html.render_page`)."""
    with atomic_write(path) as handle:
        handle.write(render_page(sorted(documents, key=lambda d: d.name), title, spans))
