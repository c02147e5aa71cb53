"""``predict --keep-columns``: a table's own columns (patient_id, admission_id…) beside every
mention of their document, in the table's types, through resume parts and both writers
(issue 23, 12)."""

import datetime
import json
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.io.parts import Parts
from dt4h_spacy.io.tables import Columns, kept_schema, read_table
from dt4h_spacy.textfiles import Document
from dt4h_spacy.tsv import Mention

NOTES = [
    {"id": "nota-1", "text": "El paciente presenta miocarditis aguda y dolor.", "patient_id": 1001,
     "admission_id": "A-7", "lang": "es", "admitted": datetime.date(2026, 11, 30)},
    {"id": "nota-2", "text": "La paciente presenta dolor hoy.", "patient_id": 1002, "admission_id": None,
     "lang": "es", "admitted": datetime.date(2026, 12, 1)},
    {"id": "nota-3", "text": "Hoy la paciente presenta diabetes, con neumonía.", "patient_id": 1001,
     "admission_id": "A-9", "lang": "es", "admitted": datetime.date(2026, 12, 2)},
]
EXPECTED = [("nota-1", "miocarditis aguda", 1001, "A-7"), ("nota-3", "diabetes", 1001, "A-9"),
            ("nota-3", "neumonía", 1001, "A-9")]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_args(trained_checkpoint, tiny_base_model):
    return ("--lang", "es", "--checkpoint", trained_checkpoint, "--base-model", tiny_base_model)


@pytest.fixture
def parquet_notes(tmp_path) -> Path:
    table = pyarrow.Table.from_pylist(NOTES).cast(pyarrow.schema([
        ("id", pyarrow.string()), ("text", pyarrow.string()), ("patient_id", pyarrow.int32()),
        ("admission_id", pyarrow.string()), ("lang", pyarrow.string()), ("admitted", pyarrow.date32())]))
    pyarrow.parquet.write_table(table, tmp_path / "notes.parquet")
    return tmp_path / "notes.parquet"


def jsonl_rows(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_documents_carry_their_kept_columns_as_read(parquet_notes):
    documents = list(read_table(parquet_notes, Columns(keep=("patient_id", "admission_id"))))
    assert [d.metadata for d in documents] == [{"patient_id": 1001, "admission_id": "A-7"},
                                               {"patient_id": 1002, "admission_id": None},
                                               {"patient_id": 1001, "admission_id": "A-9"}]
    assert documents[0] == Document("nota-1", f"{parquet_notes} row 1", NOTES[0]["text"])  # not part of identity
    assert kept_schema(parquet_notes, Columns(keep=("patient_id", "admitted"))) == pyarrow.schema(
        [("patient_id", pyarrow.int32()), ("admitted", pyarrow.date32())])


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_predict_writes_kept_columns_beside_each_mention_in_their_types(tmp_path, parquet_notes, model_args, suffix):
    out = tmp_path / f"out{suffix}"
    result = run("predict", parquet_notes, out, *model_args, "--keep-columns", "patient_id,admission_id,admitted")
    assert result.exit_code == 0, result.output
    if suffix == ".parquet":
        table = pyarrow.parquet.read_table(out)
        assert table.schema.names == ["id", "label", "start", "end", "text", "score", "patient_id", "admission_id",
                                      "admitted"]
        assert table.schema.field("patient_id").type == pyarrow.int32()
        assert table.schema.field("admitted").type == pyarrow.date32()
        rows = table.to_pylist()
    else:
        rows = jsonl_rows(out)
        assert [row["admitted"] for row in rows] == ["2026-11-30", "2026-12-02", "2026-12-02"]
    assert [(r["id"], r["text"], r["patient_id"], r["admission_id"]) for r in rows] == EXPECTED
    assert all(type(r["patient_id"]) is int for r in rows)


def test_kept_columns_survive_resume_parts(tmp_path):
    store = Parts(tmp_path / "out.jsonl", {"job": 1})
    store.open(resume=False)
    kept = {"patient_id": 7, "admission_id": "A-1"}
    store.commit(["a", "b"], [Mention("a", "DISEASE", 0, 3, "abc", 0.9, metadata=kept)], {"a": kept, "b": {"patient_id": 8}})
    resumed = Parts(tmp_path / "out.jsonl", {"job": 1})
    assert resumed.open(resume=True) == {"a", "b"}
    [mention] = resumed.merged([])
    assert mention.metadata == kept and type(mention.metadata["patient_id"]) is int
    assert dict(resumed.metadata()) == {"a": kept, "b": {"patient_id": 8}}


def test_a_resumed_run_keeps_the_columns_of_both_halves(tmp_path, parquet_notes, model_args, monkeypatch):
    out = tmp_path / "out.parquet"
    args = ["predict", parquet_notes, out, *model_args, "--keep-columns", "patient_id,admitted", "--commit-every", "1"]
    whole = run(*args)
    assert whole.exit_code == 0, whole.output
    expected = pyarrow.parquet.read_table(out)
    out.unlink()
    commit = Parts.commit

    def commit_once_then_interrupt(self, *rest):
        commit(self, *rest)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Parts, "commit", commit_once_then_interrupt)
        interrupted = run(*args)
    assert interrupted.exit_code == 130 and not out.exists()
    resumed = run(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 1 of 3 documents already written" in resumed.stderr
    assert pyarrow.parquet.read_table(out).equals(expected)


def test_csv_values_are_kept_as_text_with_their_zeros(tmp_path, model_args):
    source = tmp_path / "notes.csv"
    source.write_text("id,text,patient_id\nnota-1,El paciente presenta miocarditis aguda.,00123\n", encoding="utf-8")
    result = run("predict", source, tmp_path / "out.jsonl", *model_args, "--keep-columns", "patient_id")
    assert result.exit_code == 0, result.output
    assert [(r["text"], r["patient_id"]) for r in jsonl_rows(tmp_path / "out.jsonl")] == [
        ("miocarditis aguda", "00123")]


def test_jsonl_input_keeps_integer_ids_integers_in_parquet(tmp_path, model_args):
    source = tmp_path / "notes.jsonl"
    source.write_text("".join(json.dumps({k: NOTES[n][k] for k in ("id", "text", "patient_id")}) + "\n"
                              for n in range(3)), encoding="utf-8")
    result = run("predict", source, tmp_path / "out.parquet", *model_args, "--keep-columns", "patient_id")
    assert result.exit_code == 0, result.output
    table = pyarrow.parquet.read_table(tmp_path / "out.parquet")
    assert table.schema.field("patient_id").type == pyarrow.int64()
    assert table.column("patient_id").to_pylist() == [1001, 1001, 1001]


@pytest.mark.parametrize("args, message", [
    (["out.tsv", "--keep-columns", "patient_id"], "kept columns are written to a .jsonl, .parquet or .cdm.jsonl OUTPUT"),
    (["out.jsonl", "--keep-columns", "text"], "'text' would overwrite the mention field"),
    (["out.jsonl", "--keep-columns", "patient"], "no column 'patient'"),
])
def test_unusable_kept_columns_are_refused_with_the_way_out(tmp_path, parquet_notes, model_args, args, message):
    result = run("predict", parquet_notes, tmp_path / args[0], *model_args, *args[1:])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    if "patient" in args:
        assert "--keep-columns" in result.output


def test_ray_engine_keeps_the_columns_of_the_local_engine(tmp_path, parquet_notes, model_args):
    ray = pytest.importorskip("ray")
    args = ["predict", parquet_notes, None, *model_args, "--keep-columns", "patient_id,admission_id,admitted"]
    local = run(*[tmp_path / "local.parquet" if a is None else a for a in args])
    assert local.exit_code == 0, local.output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run(*[tmp_path / "ray.parquet" if a is None else a for a in args], "--engine", "ray")
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert pyarrow.parquet.read_table(tmp_path / "ray.parquet").equals(
        pyarrow.parquet.read_table(tmp_path / "local.parquet"))
