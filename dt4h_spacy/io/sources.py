"""INPUT as a stream of documents: a ``.txt`` file, a folder of them, or a table.

Both kinds give :class:`~dt4h_spacy.textfiles.Document` items (or
:class:`~dt4h_spacy.textfiles.Failure` items for what cannot be used) to the same annotate
step, so everything after reading is one path whatever the input.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import pyarrow

from ..textfiles import find_txt_files, read_documents
from .parts import content_identity
from .records import Document, Failure
from .tables import (
    Columns,
    check_table,
    count_rows,
    csv_delimiter,
    is_table,
    kept_schema,
    parquet_parts,
    read_table,
)


def _stamp(path: Path) -> List[object]:
    """A text file's resolved path, size and modification time (None for one that cannot be read)."""
    try:
        info = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


@dataclass
class Source:
    """What INPUT holds and how to read it; ``columns`` is None for text files, ``delimiter``
    is a CSV/TSV table's (as given, or found in its header)."""

    path: Path
    columns: Optional[Columns] = None
    recursive: bool = False
    encoding: str = "utf-8"
    paths: List[Path] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    delimiter: str = ","

    @classmethod
    def open(cls, path: Path, columns: Columns, recursive: bool = False, encoding: str = "utf-8",
             delimiter: Optional[str] = None) -> "Source":
        """The source at ``path``; ``encoding`` decodes text files and CSV/TSV/JSON-lines
        tables, ``delimiter`` (None: found in the header) splits CSV/TSV ones. Raises
        ``OSError`` when INPUT is unusable, ``FileNotFoundError`` when it holds nothing to
        read, :class:`~dt4h_spacy.io.tables.TableError` for a table that cannot be read (the
        messages say why)."""
        if path.exists() and is_table(path):
            if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
                delimiter = csv_delimiter(path, encoding, delimiter)
            check_table(path, columns, encoding, delimiter or ",")
            return cls(path, columns, encoding=encoding, delimiter=delimiter or ",")
        paths, failures = find_txt_files(path, recursive)
        if not paths and not failures:
            hint = "" if recursive else " (use --recursive to include subfolders)"
            raise FileNotFoundError(f"no .txt files in {path}{hint}.")
        return cls(path, None, recursive, encoding, paths, failures)

    @property
    def total(self) -> Optional[int]:
        """Documents in INPUT when known without reading it (text files, Parquet)."""
        return len(self.paths) + len(self.failures) if self.columns is None else count_rows(self.path)

    def documents(self) -> Iterator[Union[Document, Failure]]:
        """Every document in order, and a failure for each one that cannot be read."""
        if self.columns is None:
            yield from self.failures
            yield from read_documents(self.paths, self.encoding)
        else:
            yield from read_table(self.path, self.columns, self.encoding, self.delimiter)

    def kept_schema(self) -> pyarrow.Schema:
        """Names and Arrow types of the columns kept beside each mention (none for text files)."""
        return pyarrow.schema([]) if self.columns is None else kept_schema(self.path, self.columns)

    def describe(self) -> Dict[str, object]:
        """What decides which documents a run reads (recorded to check a ``--resume``)."""
        if self.columns is None:  # many small files: their sizes and times
            content: object = [_stamp(p) for p in self.paths]
        else:
            content = [content_identity(str(part)) for part in parquet_parts(self.path)]
        return {"input": str(self.path.resolve()), "input_content": content,
                "columns": None if self.columns is None else self.columns.names,
                "recursive": self.recursive, "encoding": self.encoding, "delimiter": self.delimiter}
