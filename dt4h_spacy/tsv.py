"""The MultiClinAI mention TSV: ``filename  label  start_span  end_span  text``.

The official scorer reads these files with ``pandas.read_csv(sep="\\t")``, so we read them
the way pandas does for such files (double-quote quoting with ``""`` escapes, blank lines
skipped, columns found by header name, extra columns ignored) without depending on pandas,
and add what it lacks: errors that name the file and line of a malformed row.

We write with one clear rule that both pandas and :func:`read_mentions` read back exactly:
a field is quoted (``"…"``, inner ``"`` doubled) when it contains a tab, a quote, ``\\n``
or ``\\r``. (Python's ``csv`` writer leaves a lone ``\\r`` unquoted, which splits the row
for every reader, so we do not rely on it.)
"""

import csv
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .io.records import QUALIFIERS, TSV_COLUMNS, Mention, sort_key, tsv_header, tsv_row
from .textfiles import atomic_write

COLUMNS = TSV_COLUMNS
TRUE_VALUES = ("true", "1", "yes", "y", "t")
FALSE_VALUES = ("false", "0", "no", "n", "f")

# Other corpora of the same family name the columns differently (DisTEMIST: off0/off1/span).
COLUMN_ALIASES: Mapping[str, str] = {"off0": "start_span", "off1": "end_span", "span": "text"}

NEEDS_QUOTES = ("\t", '"', "\n", "\r")


class TSVError(ValueError):
    """A mention TSV that cannot be used as given; the message names the file and line."""


def _parse_offset(value: str, column: str, where: str) -> int:
    """An offset as pandas would accept it for ``astype(int)``: ``12`` or ``12.0``."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        raise TSVError(f"{where}: {column} {value!r} is not an integer character offset") from None
    if not number.is_integer():
        raise TSVError(f"{where}: {column} {value!r} is not a whole number")
    return int(number)


def parse_flag(value: str, column: str, where: str) -> Optional[bool]:
    """A qualifier cell: empty is unknown (``None``); true/false as pandas or people write them."""
    text = value.strip().lower()
    if not text:
        return None
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise TSVError(f"{where}: {column} {value!r} is not a yes/no value; write true or false (or leave it empty)")


def _header_index(header: Sequence[str], source: str, aliases: bool) -> Dict[str, int]:
    names = [COLUMN_ALIASES.get(name, name) if aliases else name for name in header]
    index: Dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(name, position)
    missing = [column for column in COLUMNS if column not in index]
    if missing:
        hint = " (or DisTEMIST's off0, off1, span)" if aliases else ""
        raise TSVError(
            f"{source} line 1: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'nothing'}. "
            f"The first line must be the tab-separated header {chr(9).join(COLUMNS)!r}{hint}."
        )
    return index


def parse_mentions(lines: Iterable[str], source: str = "<tsv>", aliases: bool = False) -> List[Mention]:
    """Parse TSV text (an open file or list of lines, read with ``newline=""``) into mentions.

    ``aliases=True`` also accepts DisTEMIST column names (``off0``, ``off1``, ``span``).
    :data:`QUALIFIERS` columns, where the header has them, fill those fields.
    Raises :class:`TSVError` naming ``source`` and the (first) line of a bad row.
    """
    reader = csv.reader(lines, delimiter="\t", quotechar='"', doublequote=True, strict=False)
    index: Optional[Dict[str, int]] = None
    width = 0
    mentions: List[Mention] = []
    previous_end = 0
    for row in reader:
        first_line, previous_end = previous_end + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # pandas skips blank lines
        if index is None:
            index, width = _header_index(row, source, aliases), len(row)
            continue
        where = f"{source} line {first_line}"
        if len(row) != width:
            raise TSVError(
                f"{where}: expected {width} tab-separated fields like the header, got {len(row)}. "
                "Check for a missing or extra tab; a text containing tabs or quotes must be quoted."
            )
        filename, label = row[index["filename"]], row[index["label"]]
        if not filename or not label:
            raise TSVError(f"{where}: empty {'filename' if not filename else 'label'}")
        start = _parse_offset(row[index["start_span"]], "start_span", where)
        end = _parse_offset(row[index["end_span"]], "end_span", where)
        if start < 0:
            raise TSVError(f"{where}: start_span ({start}) is negative")
        if end <= start:
            raise TSVError(f"{where}: end_span ({end}) <= start_span ({start}); spans must be non-empty")
        flags = {name: parse_flag(row[index[name]], name, where) for name in QUALIFIERS if name in index}
        mentions.append(Mention(filename, label, start, end, row[index["text"]], **flags))
    if index is None:
        raise TSVError(f"{source}: empty file; expected the header {chr(9).join(COLUMNS)!r}")
    return mentions


def read_mentions(path: Union[str, Path], aliases: bool = False) -> List[Mention]:
    """Read a mention TSV (UTF-8, BOM allowed), in file order. See :func:`parse_mentions`."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return parse_mentions(handle, source=str(path), aliases=aliases)
    except UnicodeDecodeError as err:
        raise TSVError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}); re-save it as UTF-8") from err
    except OSError as err:
        raise TSVError(f"{path}: cannot read ({err.strerror or err})") from err


def _field(value: object) -> str:
    text = str(value)
    if any(char in text for char in NEEDS_QUOTES):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_rows(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Tab-separated text, header first, each field quoted by the rule above."""
    lines = ["\t".join(columns)]
    lines.extend("\t".join(_field(value) for value in row) for row in rows)
    return "\n".join(lines) + "\n"


def format_mentions(mentions: Iterable[Mention], with_scores: bool = False, with_context: bool = False) -> str:
    """The TSV text for ``mentions`` (header included), in the order given; ``with_scores``
    adds a ``score`` column (4 decimals, empty when unknown) after ``text``, ``with_context``
    the :data:`QUALIFIERS` columns (``true``/``false``, empty when unknown) after those."""
    return format_rows(tsv_header(with_scores, with_context), (tsv_row(m, with_scores, with_context) for m in mentions))


def write_sorted_mentions(path: Union[str, Path], mentions: Iterable[Mention], with_scores: bool = False,
                          with_context: bool = False) -> int:
    """Write ``mentions`` in the order given, one row at a time (memory stays flat), atomically
    (see :func:`atomic_write`); returns how many were written. Columns as in :func:`format_mentions`."""
    count = 0
    with atomic_write(path) as handle:
        handle.write("\t".join(tsv_header(with_scores, with_context)) + "\n")
        for mention in mentions:
            handle.write("\t".join(_field(value) for value in tsv_row(mention, with_scores, with_context)) + "\n")
            count += 1
    return count


def write_mentions(path: Union[str, Path], mentions: Iterable[Mention], with_scores: bool = False,
                   with_context: bool = False) -> None:
    """Write ``mentions`` sorted by filename then start, atomically (see :func:`atomic_write`)."""
    write_sorted_mentions(path, sorted(mentions, key=sort_key), with_scores, with_context)
