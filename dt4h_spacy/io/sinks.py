"""Where annotations go, chosen by OUTPUT's extension, and reading the mention outputs back.

``.tsv`` is the MultiClinAI TSV (filename = the document's name or id); ``.jsonl`` and
``.parquet`` hold one row per mention with ``id, label, start, end, text, score``, then
(``--context``) ``negated, uncertain, hypothetical, historical, family``, then the document's kept columns (``--keep-columns``), Parquet in their Arrow types; ``.html``
is a displaCy page of the documents. The mention writers take rows already in output order
and write them one at a time to a temporary file that replaces OUTPUT once complete, so
memory stays flat and an interrupted run never leaves a truncated OUTPUT. :func:`read_output`
reads a ``.tsv``, ``.jsonl`` or ``.parquet`` OUTPUT back as mentions (``evaluate`` scores them).
"""

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import pyarrow
import pyarrow.parquet

from ..errors import RecordError
from ..textfiles import atomic_write
from ..tsv import read_mentions, write_sorted_mentions
from .html import render_page
from .records import (
    CONTEXT_SCHEMA,
    FIELDS,
    QUALIFIERS,
    RESERVED,
    SCHEMA,
    AnnotatedDoc,
    Mention,
    mention_record,
    record_mention,
)

PARQUET_ROWS = 65536


def write_jsonl(path: Path, mentions: Iterable[Mention], with_scores: bool = True,
                kept: Optional[pyarrow.Schema] = None, with_context: bool = False) -> int:
    """One JSON object per mention and line (UTF-8, non-ASCII kept as is), with the
    ``kept`` columns of its document last (dates and other non-JSON values as text)."""
    names = kept.names if kept is not None else []
    count = 0
    with atomic_write(path) as handle:
        for mention in mentions:
            handle.write(json.dumps(mention_record(mention, names, with_context), ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def mention_schema(kept: Optional[pyarrow.Schema] = None, with_context: bool = False) -> pyarrow.Schema:
    """The columns of a Parquet OUTPUT: :data:`SCHEMA`, the qualifiers (``with_context``), the ``kept`` columns."""
    return pyarrow.unify_schemas([SCHEMA] + ([CONTEXT_SCHEMA] if with_context else [])
                                 + ([kept] if kept is not None else []))


def mention_table(mentions: Iterable[Mention], kept: Optional[pyarrow.Schema] = None,
                  with_context: bool = False) -> pyarrow.Table:
    """``mentions`` as one Arrow table with the rows and types :func:`write_parquet` writes."""
    schema = mention_schema(kept, with_context)
    names = kept.names if kept is not None else []
    return _arrow_rows([mention_record(m, names, with_context) for m in mentions], schema)


def write_parquet(path: Path, mentions: Iterable[Mention], with_scores: bool = True,
                  kept: Optional[pyarrow.Schema] = None, with_context: bool = False) -> int:
    """One Parquet row per mention, written in row groups of :data:`PARQUET_ROWS`, with the
    qualifiers (``with_context``) and the ``kept`` columns of its document last, in their Arrow types."""
    schema = mention_schema(kept, with_context)
    first_kept = len(FIELDS) + (len(QUALIFIERS) if with_context else 0)
    count = 0
    with atomic_write(path, binary=True) as handle:
        with pyarrow.parquet.ParquetWriter(handle, schema) as writer:
            chunk: List[Dict[str, object]] = []
            for mention in mentions:
                chunk.append(mention_record(mention, schema.names[first_kept:], with_context))
                if len(chunk) == PARQUET_ROWS:
                    writer.write_table(_arrow_rows(chunk, schema))
                    count += len(chunk)
                    chunk = []
            writer.write_table(_arrow_rows(chunk, schema))
            count += len(chunk)
    return count


def _arrow_rows(records: List[Dict[str, object]], schema: pyarrow.Schema) -> pyarrow.Table:
    """``records`` as a table of ``schema``. A kept value that came back from a resume part
    as JSON text (a date, a timestamp) is cast from that text to its column's type."""
    columns = []
    for item in schema:
        values = [record[item.name] for record in records]
        try:
            columns.append(pyarrow.array(values, type=item.type))
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
            text = pyarrow.array([None if v is None else str(v) for v in values], type=pyarrow.string())
            columns.append(text.cast(item.type))
    return pyarrow.Table.from_arrays(columns, schema=schema)


def write_tsv(path: Path, mentions: Iterable[Mention], with_scores: bool = False,
              kept: Optional[pyarrow.Schema] = None, with_context: bool = False) -> int:
    """The MultiClinAI TSV: its own five columns, the score and qualifier columns only on request
    (``predict`` refuses kept columns for it)."""
    return write_sorted_mentions(path, mentions, with_scores, with_context)


MentionWriter = Callable[[Path, Iterable[Mention], bool, Optional[pyarrow.Schema], bool], int]
MENTION_WRITERS: Dict[str, MentionWriter] = {".tsv": write_tsv, ".jsonl": write_jsonl, ".parquet": write_parquet}
HTML_SUFFIXES = (".html", ".htm")
CDM_SUFFIX = ".cdm.jsonl"  # one DT4H CDM object per document (dt4h_spacy.io.cdm)


def output_kind(path: Path) -> str:
    """What to write to OUTPUT, from its extension: ``.cdm.jsonl``, ``.jsonl``, ``.parquet``,
    ``.html``, or else (``.tsv`` and any other name, as before there were other outputs) ``.tsv``."""
    if path.name.lower().endswith(CDM_SUFFIX):
        return CDM_SUFFIX
    suffix = path.suffix.lower()
    return ".html" if suffix in HTML_SUFFIXES else suffix if suffix in MENTION_WRITERS else ".tsv"


def write_html(path: Path, documents: Sequence[AnnotatedDoc], title: str, spans: bool = False) -> None:
    """The standalone displaCy page of ``documents``, sorted by name (see :func:`.html.render_page`)."""
    with atomic_write(path) as handle:
        handle.write(render_page(sorted(documents, key=lambda d: d.name), title, spans))


# ------------------------------------------------------------------ reading mentions back


def read_jsonl(path: Path, row_mention: Callable[[Mapping[str, Any], str], Mention] = record_mention) -> List[Mention]:
    """The mentions of a ``.jsonl`` OUTPUT, in file order (kept columns left out); blank lines
    are skipped; ``row_mention(object, where)`` reads each line's object. Raises
    :class:`~dt4h_spacy.errors.RecordError` naming the line of a bad row."""
    mentions: List[Mention] = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise RecordError(f"{where}: not JSON ({err}); each line must be one mention object") from None
                if not isinstance(record, dict):
                    raise RecordError(f"{where}: not a JSON object; each line must be one mention object")
                mentions.append(row_mention(record, where))
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise RecordError(f"{path}: cannot read ({err.strerror or err})") from None
    return mentions


def read_parquet(path: Path, row_mention: Callable[[Mapping[str, Any], str], Mention] = record_mention) -> List[Mention]:
    """The mentions of a ``.parquet`` OUTPUT, in row order; ``row_mention(row, where)`` reads
    each row (by default only the mention columns are read)."""
    try:
        table = pyarrow.parquet.ParquetFile(path)
    except (OSError, pyarrow.ArrowInvalid) as err:
        raise RecordError(f"{path}: cannot read it as Parquet ({err})") from None
    names = table.schema_arrow.names
    columns = [name for name in names if name in RESERVED or name == "filename"] if row_mention is record_mention \
        else names
    mentions: List[Mention] = []
    for batch in table.iter_batches(columns=columns):
        for record in batch.to_pylist():
            mentions.append(row_mention(record, f"{path} row {len(mentions) + 1}"))
    return mentions


def read_tsv(path: Path) -> List[Mention]:
    """The mentions of a MultiClinAI TSV (or one in DisTEMIST's columns)."""
    return read_mentions(path, aliases=True)


MENTION_READERS: Dict[str, Callable[[Path], List[Mention]]] = {".tsv": read_tsv, ".jsonl": read_jsonl,
                                                              ".parquet": read_parquet}


def read_output(path: Path) -> List[Mention]:
    """The mentions of a file ``predict`` writes (by extension, as :func:`output_kind` chooses),
    or of any file with the same columns. Raises :class:`~dt4h_spacy.errors.RecordError` (or
    :class:`~dt4h_spacy.tsv.TSVError`) naming the file and row of what cannot be read."""
    kind = output_kind(path)
    if kind not in MENTION_READERS:
        what = "one CDM object per document" if kind == CDM_SUFFIX else "a displaCy page"
        raise RecordError(f"{path}: a {kind} file holds {what}, not mention rows; give a .tsv, .jsonl or .parquet "
                          "file (predict writes them by OUTPUT's extension)")
    return MENTION_READERS[kind](path)
