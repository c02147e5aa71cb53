"""Readers and writers: where documents come from (folders of ``.txt``, tables) and where
annotations go (TSV, JSON lines, Parquet, an HTML page). Nothing here knows the model."""
