"""``dt4h_spacy.annotate_table``: a table of notes from Python gives exactly the rows
``predict`` writes to Parquet, on the CLI's own path."""

import warnings

import pyarrow
import pyarrow.parquet
import pytest
from typer.testing import CliRunner

import dt4h_spacy
from dt4h_spacy.cli import app
from dt4h_spacy.io.records import Failure
from dt4h_spacy.io.tables import TableError

ROWS = [
    {"id": "MultiClinNER-es-test-disease-00001", "patient_id": 1001, "text": "El paciente presenta miocarditis aguda y "
                                                                            "dolor.\n\nHoy presenta diabetes."},
    {"id": "MultiClinNER-it-test-disease-00001", "patient_id": 1002, "text": "Il paziente presenta scompenso e dolore."},
    {"id": "MultiClinNER-es-test-disease-00002", "patient_id": 1003, "text": None},  # row 3: no text
    {"id": "MultiClinNER-ro-test-disease-00001", "patient_id": 1004, "text": "Pacientul prezintă infarct acut azi."},
    {"id": "MultiClinNER-es-test-disease-00003", "patient_id": 1005, "text": "La paciente presenta neumonía."},
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained_checkpoint, tiny_base_model):
    """The trained tiny model as a saved pipeline, and the Parquet table of ROWS."""
    import spacy

    root = tmp_path_factory.mktemp("api")
    nlp = spacy.blank("xx")
    nlp.add_pipe("dt4h_disease", config={"checkpoint": str(trained_checkpoint), "base_model": str(tiny_base_model)})
    nlp.to_disk(root / "pipeline")
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(ROWS), root / "notes.parquet")
    return root


@pytest.fixture(scope="module")
def predicted(saved):
    """What ``predict --model ... --keep-columns patient_id`` writes to Parquet for ROWS."""
    result = CliRunner().invoke(app, ["predict", str(saved / "notes.parquet"), str(saved / "out.parquet"), "--model",
                                      str(saved / "pipeline"), "--keep-columns", "patient_id"])
    assert result.exit_code == 1, result.output  # row 3
    return pyarrow.parquet.read_table(saved / "out.parquet")


def test_annotate_table_gives_predicts_parquet_rows_for_a_path_an_arrow_table_and_a_dataframe(saved, predicted):
    import spacy

    nlp = spacy.load(saved / "pipeline")
    assert {"miocarditis aguda", "scompenso", "infarct acut", "neumonía"} <= set(predicted.column("text").to_pylist())
    table = pyarrow.parquet.read_table(saved / "notes.parquet")
    for given, where in ((saved / "notes.parquet", f"{saved / 'notes.parquet'} row 3"), (str(saved / "notes.parquet"),
                         f"{saved / 'notes.parquet'} row 3"), (table, "table row 3"), (table.to_pandas(), "table row 3")):
        failures = []
        got = dt4h_spacy.annotate_table(given, nlp, keep_columns=["patient_id"], failures=failures)
        assert got.equals(predicted), type(given)
        assert failures == [Failure(where, "missing text (column 'text')")]


def test_annotate_table_warns_of_a_row_it_skips_and_names_a_missing_column(saved):
    import spacy

    nlp = spacy.load(saved / "pipeline")
    with pytest.warns(UserWarning, match=r"skipped table row 3: missing text"):
        dt4h_spacy.annotate_table(pyarrow.Table.from_pylist(ROWS), nlp)
    with pytest.raises(TableError, match="the table has no column 'note'"):
        dt4h_spacy.annotate_table(pyarrow.Table.from_pylist(ROWS), nlp, text_column="note")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dt4h_spacy.annotate_table(pyarrow.Table.from_pylist(ROWS[:1]), nlp).num_rows == 2
