"""Tables of documents (Parquet, CSV, TSV, JSON lines) read as a stream of documents.

An EHR extract of millions of notes does not fit in memory, so tables are read in record
batches (Arrow), a few thousand rows at a time, and each row becomes a
:class:`~dt4h_spacy.textfiles.Document` named by its id. A row that cannot be used (no id, no
text, an id seen before, a malformed CSV line or JSON line) becomes a
:class:`~dt4h_spacy.textfiles.Failure` naming the table and the row number (1 = the first
row after the header), and the rest is still read.
"""

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet

from ..textfiles import decoding_advice
from .records import Document, Failure

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
BATCH_ROWS = 1024
DELIMITERS = (",", ";", "\t", "|")  # what spreadsheets export: Spanish and Italian ones write ";"


class TableError(ValueError):
    """A table that cannot be read at all (missing column, unreadable file); the message says why."""


@dataclass(frozen=True)
class Columns:
    """Which columns hold a document's id, its text and (optionally) its language, and the
    columns ``keep`` carried to every mention of the document (``--keep-columns``)."""

    id: str = "id"
    text: str = "text"
    lang: Optional[str] = None
    keep: Tuple[str, ...] = ()

    @property
    def names(self) -> List[str]:
        own = [self.id, self.text] + ([self.lang] if self.lang else [])
        return own + [name for name in self.keep if name not in own]


def parquet_parts(path: Path) -> List[Path]:
    """The ``.parquet`` files of a folder of parts (sorted), or the file itself."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".parquet" and p.is_file())
    return [path]


def is_table(path: Path) -> bool:
    """Whether INPUT is a table: a file with a table suffix, or a folder of Parquet parts
    and no ``.txt`` files."""
    if path.is_dir():
        names = [p.name.lower() for p in path.iterdir()]
        return any(n.endswith(".parquet") for n in names) and not any(n.endswith(".txt") for n in names)
    return path.suffix.lower() in TABLE_SUFFIXES


def row_document(values: Dict[str, Any], columns: Columns, where: str) -> Union[Document, Failure]:
    """One row as a document, or the reason it cannot be one. Ids are read as text, so
    ``7`` and ``"7"`` name the same document; an empty text is a (empty) document."""
    doc_id, text = values.get(columns.id), values.get(columns.text)
    if doc_id is None or str(doc_id).strip() == "":
        return Failure(where, f"missing id (column {columns.id!r})")
    if text is None:
        return Failure(where, f"missing text (column {columns.text!r})")
    if not isinstance(text, str):
        return Failure(where, f"text (column {columns.text!r}) is {type(text).__name__}, not a string")
    lang = values.get(columns.lang) if columns.lang else None
    return Document(str(doc_id), where, text, str(lang) if lang not in (None, "") else None,
                    {name: values.get(name) for name in columns.keep})


def check_columns(found: Sequence[str], columns: Columns, source: Union[Path, str]) -> None:
    """Raise :class:`TableError` naming the columns ``columns`` needs that ``found`` lacks."""
    missing = [name for name in columns.names if name not in found]
    if not missing:
        return
    if len(found) == 1 and any(d in found[0] for d in DELIMITERS):
        guess = next(d for d in DELIMITERS if d in found[0])
        raise TableError(f"{source} has one column {found[0]!r}: its fields are not separated by the delimiter "
                         f"used; pass --delimiter {guess!r}.")
    options = {**{name: "--keep-columns" for name in columns.keep}, columns.id: "--id-column",
               columns.text: "--text-column", columns.lang: "--lang-column"}
    raise TableError(f"{source} has no column {', '.join(repr(m) for m in missing)} (it has "
                     f"{', '.join(found) or 'none'}); name the right one with "
                     f"{', '.join(options[m] for m in missing)}.")


def csv_delimiter(path: Path, encoding: str = "utf-8", given: Optional[str] = None) -> str:
    """The field delimiter of a CSV/TSV table: ``given``, a tab for ``.tsv``, else the one of
    :data:`DELIMITERS` its header line holds most often (a comma when it holds none)."""
    if given is not None:
        return given
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError as err:
        raise TableError(f"cannot read {path}: {err.strerror or err}") from err
    header = head.decode(encoding, errors="replace").split("\n", 1)[0]
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def decoding_error(path: Path, encoding: str) -> Optional[str]:
    """Where ``path`` first fails to decode as ``encoding``, as a one-line message naming the
    byte offset, the line and ``--encoding``; None when it decodes (or cannot be read)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                pending = decoder.getstate()[0]  # the start of a character cut by the last chunk
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    start = offset - len(pending) + err.start
                    lines += chunk[:max(0, start - offset)].count(b"\n")
                    byte = (pending + chunk)[err.start]
                    return (f"{path} is not valid {encoding} at byte offset {start} (line {lines}, byte "
                            f"0x{byte:02x}); {decoding_advice(encoding)}")
                offset += len(chunk)
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return f"{path} is not valid {encoding}: it ends inside a character; {decoding_advice(encoding)}"
    except OSError:
        return None
    return None


Row = Tuple[str, Union[Dict[str, Any], str]]  # (where, the row's values or why it is unusable)


def _parquet_file(part: Path) -> pyarrow.parquet.ParquetFile:
    try:
        return pyarrow.parquet.ParquetFile(part)
    except (OSError, pyarrow.ArrowException) as err:
        raise TableError(f"cannot read {part} as Parquet: {err}") from err


def csv_read_options(encoding: str = "utf-8") -> pyarrow.csv.ReadOptions:
    """How Arrow reads a CSV/TSV table: decoded from ``encoding``, one thread, 1 MB blocks."""
    return pyarrow.csv.ReadOptions(use_threads=False, block_size=1 << 20, encoding=encoding)


def csv_parse_options(delimiter: str, on_invalid: Any = None) -> pyarrow.csv.ParseOptions:
    """How Arrow splits a CSV/TSV table: quoted values may span lines."""
    return pyarrow.csv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid)


def table_error(path: Path, encoding: str, err: Exception) -> TableError:
    """A CSV/TSV table that Arrow could not read: where it stops decoding when that is the
    cause (Arrow's own message names neither the byte nor the option), else Arrow's reason."""
    if isinstance(err, UnicodeError) or "UTF8" in str(err):
        located = decoding_error(path, encoding)
        if located is not None:
            return TableError(located)
    return TableError(f"cannot read {path} as {path.suffix[1:].upper() or 'CSV'}: {err}")


def _csv_header(path: Path, encoding: str, delimiter: str) -> List[str]:
    """The column names of a CSV/TSV table, read with Python's csv module.

    Not with an Arrow reader opened only for its schema: that reader's read-ahead, in an Arrow
    I/O thread, keeps the last reference to the Python row handler, and when a bad column ends
    the command at once that thread frees it while Python exits and the process aborts
    (SIGABRT, ``terminate called without an active exception``)."""
    decoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding  # as Arrow: BOM skipped
    try:
        with open(path, "rb") as handle:
            head = io.TextIOWrapper(io.BytesIO(handle.read(1 << 16)), encoding=decoding, errors="replace",
                                    newline="")
            header = next(csv.reader(head, delimiter=delimiter), [])
    except OSError as err:
        raise TableError(f"cannot read {path}: {err.strerror or err}") from err
    except csv.Error as err:
        raise TableError(f"cannot read {path} as {path.suffix[1:].upper()}: {err}") from err
    if any("\ufffd" in name for name in header):  # rows further on are checked as they are read
        raise table_error(path, encoding, UnicodeError())
    return header


def check_table(path: Path, columns: Columns, encoding: str = "utf-8", delimiter: str = ",") -> None:
    """Raise :class:`TableError` when the table cannot be read at all or lacks a column
    (JSON lines are checked row by row)."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        parts = parquet_parts(path)
        if not parts:
            raise TableError(f"no .parquet files in {path}.")
        for part in parts:
            check_columns(_parquet_file(part).schema_arrow.names, columns, part)
    elif suffix != ".jsonl":
        check_columns(_csv_header(path, encoding, delimiter), columns, path)


def table_columns(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> List[str]:
    """A table's column names: Parquet's schema, a CSV/TSV header, the keys of the first JSON
    line that is an object."""
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return list(_parquet_file(parquet_parts(path)[0]).schema_arrow.names)
    if path.suffix.lower() == ".jsonl":
        return next((list(values) for _, values in _jsonl_rows(path, Columns(), encoding) if isinstance(values, dict)),
                    [])
    return _csv_header(path, encoding, delimiter)


def _batch_rows(batches: Iterable[pyarrow.RecordBatch], name: object) -> Iterator[Row]:
    """Arrow record batches' rows, numbered across batches, in their own types (an integer id
    stays one until it names a document)."""
    number = 0
    for batch in batches:
        for values in batch.to_pylist():
            number += 1
            yield f"{name} row {number}", values


def _parquet_rows(part: Path, columns: Columns, encoding: str = "utf-8", delimiter: str = ",") -> Iterator[Row]:
    return _batch_rows(_parquet_file(part).iter_batches(batch_size=BATCH_ROWS, columns=columns.names), part)


def _csv_rows(path: Path, columns: Columns, encoding: str = "utf-8", delimiter: str = ",") -> Iterator[Row]:
    """CSV/TSV rows; quoted values may span lines. A line with the wrong number of fields
    is a failure (pyarrow skips it and tells us its number); text that does not decode
    stops the table with a :class:`TableError` saying where."""
    skipped: Dict[int, str] = {}

    def on_invalid(row: Any) -> str:
        skipped[row.number - 1] = f"expected {row.expected_columns} fields like the header, got {row.actual_columns}"
        return "skip"

    number = 0
    try:
        reader = pyarrow.csv.open_csv(
            path, read_options=csv_read_options(encoding), parse_options=csv_parse_options(delimiter, on_invalid),
            convert_options=pyarrow.csv.ConvertOptions(include_columns=columns.names,
                                                       column_types={n: pyarrow.string() for n in columns.names}))
        for batch in reader:
            for values in batch.to_pylist():
                number += 1
                while number in skipped:
                    yield f"{path} row {number}", skipped.pop(number)
                    number += 1
                yield f"{path} row {number}", values
    except (OSError, UnicodeError, pyarrow.ArrowException) as err:
        raise table_error(path, encoding, err) from err
    for row in sorted(skipped):
        yield f"{path} row {row}", skipped[row]


def _jsonl_rows(path: Path, columns: Columns, encoding: str = "utf-8", delimiter: str = ",") -> Iterator[Row]:
    """JSON lines, parsed line by line: Arrow's JSON reader stops at the first bad line,
    and one bad line must cost only itself."""
    try:
        handle = open(path, encoding=encoding)
    except OSError as err:
        raise TableError(f"cannot read {path}: {err.strerror or err}") from err
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    values = json.loads(line)
                except ValueError as err:
                    yield f"{path} row {number}", f"not valid JSON ({err})"
                    continue
                yield f"{path} row {number}", values if isinstance(values, dict) else "not a JSON object"
        except UnicodeDecodeError as err:
            raise table_error(path, encoding, err) from err


RowReader = Callable[[Path, Columns, str, str], Iterator[Row]]
ROW_READERS: Dict[str, RowReader] = {".parquet": _parquet_rows, ".csv": _csv_rows, ".tsv": _csv_rows,
                                     ".jsonl": _jsonl_rows}


def file_items(path: Path, columns: Columns, encoding: str = "utf-8",
               delimiter: str = ",") -> Iterator[Union[Document, Failure]]:
    """Each row of one table file (a folder's parts are files: :func:`parquet_parts`) as a
    document, or a failure naming the file and row: the one suffix → reader dispatch that
    both engines read through, so they give the same rows and the same messages. An id
    repeated across rows is left to :class:`FirstSeen`, which needs the whole table."""
    reader = ROW_READERS.get(path.suffix.lower(), _csv_rows)
    for where, values in reader(path, columns, encoding, delimiter):
        yield Failure(where, values) if isinstance(values, str) else row_document(values, columns, where)


def read_table(path: Path, columns: Columns, encoding: str = "utf-8",
               delimiter: str = ",") -> Iterator[Union[Document, Failure]]:
    """Each row of the table at ``path`` (see :func:`check_table`) as a document or a
    failure, in table order; CSV, TSV and JSON lines are decoded from ``encoding``, CSV and
    TSV split at ``delimiter`` (see :func:`csv_delimiter`)."""
    first_seen = FirstSeen()
    for file in parquet_parts(path):
        yield from map(first_seen, file_items(file, columns, encoding, delimiter))


def as_arrow(table: Any) -> pyarrow.Table:
    """A table held in memory as Arrow: a ``pyarrow.Table`` or record batch, a pandas
    ``DataFrame`` (its index left out), or a mapping of columns (a Ray Data numpy batch)."""
    if isinstance(table, pyarrow.Table):
        return table
    if isinstance(table, pyarrow.RecordBatch):
        return pyarrow.Table.from_batches([table])
    if hasattr(table, "columns") and hasattr(table, "iloc"):  # pandas, without importing it
        return pyarrow.Table.from_pandas(table, preserve_index=False)
    if isinstance(table, dict):
        return pyarrow.table({name: list(values) for name, values in table.items()})
    raise TableError(f"cannot read a {type(table).__name__} as a table; give a pyarrow.Table, a pandas DataFrame or "
                     "the path of a .parquet, .csv, .tsv or .jsonl table.")


def arrow_items(table: pyarrow.Table, columns: Columns, name: str = "table") -> Iterator[Union[Document, Failure]]:
    """Each row of an Arrow table in memory as a document or a failure (``name row N``), read
    as a Parquet file's rows are (:func:`check_columns` first)."""
    first_seen = FirstSeen()
    for where, values in _batch_rows(table.select(columns.names).to_batches(BATCH_ROWS), name):
        yield first_seen(row_document(values, columns, where))


def arrow_kept_schema(schema: pyarrow.Schema, columns: Columns) -> pyarrow.Schema:
    """The kept columns' types in ``schema`` (text for a column of nulls only), as outputs write them."""
    found = {name: schema.field(name).type for name in columns.keep if name in schema.names}
    return pyarrow.schema([(name, found.get(name) if found.get(name) not in (None, pyarrow.null())
                            else pyarrow.string()) for name in columns.keep])


class FirstSeen:
    """Turns a document whose id was seen before into a failure that points at the first."""

    def __init__(self) -> None:
        self.seen: Dict[str, str] = {}

    def __call__(self, item: Union[Document, Failure]) -> Union[Document, Failure]:
        if isinstance(item, Failure):
            return item
        first = self.seen.setdefault(item.name, str(item.path))
        if first != str(item.path):
            return Failure(item.path, f"duplicate id {item.name!r} (first at {first}); ids name the documents in "
                                      "the output, so each must be unique")
        return item


def kept_schema(path: Path, columns: Columns) -> pyarrow.Schema:
    """The Arrow types of the kept columns, so outputs write them as the table holds them:
    a Parquet table's own types; JSON lines' as Arrow infers them from the first block
    (text where it cannot); CSV/TSV values are text ("00123" keeps its zeros)."""
    if not columns.keep:
        return pyarrow.schema([])
    schema = pyarrow.schema([])
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        schema = _parquet_file(parquet_parts(path)[0]).schema_arrow
    elif suffix == ".jsonl":
        try:
            with pyarrow.json.open_json(path) as reader:
                schema = reader.schema
        except (OSError, pyarrow.ArrowException):
            pass
    return arrow_kept_schema(schema, columns)


def count_rows(path: Path) -> Optional[int]:
    """Rows of a Parquet table, from its metadata without reading it; None for other formats."""
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return sum(pyarrow.parquet.ParquetFile(p).metadata.num_rows for p in parquet_parts(path))
    return None
