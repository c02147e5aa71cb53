"""Tables from Python: :func:`annotate_table` gives the mention rows ``predict`` writes to
Parquet, for a table in memory (pyarrow, pandas) or a table file, on the CLI's own path
(the same readers, :class:`~dt4h_spacy.batch.Pipelines` and row builder). For Ray Data
pipelines of your own, see :class:`dt4h_spacy.engines.ray.AnnotateMentions`.
"""

import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import pyarrow
from spacy.language import Language

from .batch import Pipelines, kept_columns, uses_context
from .errors import UsageError
from .io.records import Failure, Mention, sort_key
from .io.sinks import mention_table
from .io.sources import Source
from .io.tables import Columns, arrow_items, arrow_kept_schema, as_arrow, check_columns


def annotate_table(table_or_path: Union[pyarrow.Table, str, "os.PathLike[str]", Any], nlp: Language, *,
                   id_column: str = "id", text_column: str = "text", lang_column: Optional[str] = None,
                   keep_columns: Sequence[str] = (), lang: str = "auto", fallback_lang: Optional[str] = None,
                   encoding: str = "utf-8", delimiter: Optional[str] = None, batch_size: int = 32,
                   n_process: int = 1, failures: Optional[List[Failure]] = None) -> pyarrow.Table:
    """The mentions ``nlp`` finds in a table of documents, one row per mention exactly as
    ``predict TABLE OUT.parquet --keep-columns ...`` writes them: ``id, label, start, end,
    text, score``, the qualifiers when ``nlp`` has ``dt4h_context``, then ``keep_columns`` in
    the table's types; sorted by id and offsets.

    ``table_or_path``: a ``pyarrow.Table``, a pandas ``DataFrame``, or the path of a
    ``.parquet``/``.csv``/``.tsv``/``.jsonl`` table or folder of Parquet parts (``encoding``
    and ``delimiter`` as ``--encoding``/``--delimiter``). ``lang``, ``fallback_lang`` and
    ``lang_column`` route each row as ``--lang``/``--fallback-lang``/``--lang-column`` do.
    A row that cannot be annotated (no id or text, a repeated id, a language no head serves)
    is appended to ``failures`` when given, else reported as a warning; the others are
    annotated. Raises :class:`~dt4h_spacy.io.tables.TableError` for a table that cannot be read
    or lacks a column, :class:`~dt4h_spacy.errors.UsageError` for a path that is not a table.
    """
    columns = Columns(id_column, text_column, lang_column, kept_columns(",".join(keep_columns)))
    if isinstance(table_or_path, (str, os.PathLike)):
        source = Source.open(Path(table_or_path), columns, encoding=encoding, delimiter=delimiter)
        if source.columns is None:
            raise UsageError(f"{table_or_path} is not a table (.parquet, .csv, .tsv, .jsonl or a folder of Parquet "
                             "parts); annotate text files with nlp.pipe or `dt4h-spacy predict`.")
        items, kept = source.documents(), source.kept_schema()
    else:
        table = as_arrow(table_or_path)
        check_columns(table.schema.names, columns, "the table")
        items, kept = arrow_items(table, columns), arrow_kept_schema(table.schema, columns)
    pipelines = Pipelines.of(nlp, lang, fallback_lang)
    mentions: List[Mention] = []
    for item in pipelines.annotate(items, batch_size, n_process):
        if isinstance(item, Failure):
            if failures is None:
                warnings.warn(f"skipped {item}", stacklevel=2)
            else:
                failures.append(item)
        else:
            mentions.extend(item.mentions)
    return mention_table(sorted(mentions, key=sort_key), kept, uses_context(nlp))
