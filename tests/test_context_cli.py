"""``predict --context`` / ``visualize --context``: the qualifiers reach every output, and the
TSV keeps its five columns unless asked."""

import json

import pyarrow.parquet
import pytest
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.tsv import COLUMNS, QUALIFIERS, read_mentions

NOTES = {
    "MultiClinNER-es-test-disease-00001": "El paciente presenta diabetes . Sin neumonía .",
    "MultiClinNER-it-test-disease-00001": "Il paziente presenta ipertensione . Non polmonite .",
    "MultiClinNER-ro-test-disease-00001": "Pacientul prezintă diabet . Fără pneumonie .",
}
NEGATED = {"diabetes": False, "neumonía": True, "ipertensione": False, "polmonite": True, "diabet": False,
           "pneumonie": True}


@pytest.fixture
def notes(tmp_path):
    source = tmp_path / "notes.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in NOTES.items()),
                      encoding="utf-8")
    return source


@pytest.fixture
def model_args(trained_checkpoint, tiny_base_model):
    return ["--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model)]


def predict(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_jsonl_and_parquet_gain_the_qualifier_columns(notes, tmp_path, model_args):
    predict(notes, tmp_path / "out.jsonl", *model_args, "--context")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {row["text"]: row["negated"] for row in rows} == NEGATED
    assert list(rows[0]) == ["id", "label", "start", "end", "text", "score", *QUALIFIERS]
    assert not any(row[name] for row in rows for name in QUALIFIERS if name != "negated")
    predict(notes, tmp_path / "out.parquet", *model_args, "--context")
    table = pyarrow.parquet.read_table(tmp_path / "out.parquet")
    assert table.schema.names[-5:] == list(QUALIFIERS) and str(table.schema.field("negated").type) == "bool"
    assert dict(zip(table.column("text").to_pylist(), table.column("negated").to_pylist())) == NEGATED
    predict(notes, tmp_path / "plain.jsonl", *model_args)
    assert "negated" not in (tmp_path / "plain.jsonl").read_text(encoding="utf-8")


def test_the_tsv_keeps_five_columns_unless_context_columns(notes, tmp_path, model_args):
    predict(notes, tmp_path / "five.tsv", *model_args, "--context")
    assert (tmp_path / "five.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t") == list(COLUMNS)
    predict(notes, tmp_path / "ten.tsv", *model_args, "--context-columns")
    assert (tmp_path / "ten.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t") == [*COLUMNS, *QUALIFIERS]
    assert {m.text: m.negated for m in read_mentions(tmp_path / "ten.tsv")} == NEGATED
    assert read_mentions(tmp_path / "ten.tsv") == read_mentions(tmp_path / "five.tsv")


def test_context_rules_extend_the_rules_and_a_bad_file_names_its_line(notes, tmp_path, model_args):
    rules = tmp_path / "mine.json"
    rules.write_text('{"language": "es", "rules": [\n {"literal": "presenta", "category": "FAMILY", '
                     '"direction": "FORWARD"}\n]}\n', encoding="utf-8")
    predict(notes, tmp_path / "out.jsonl", *model_args, "--context-rules", rules)
    rows = {json.loads(line)["text"]: json.loads(line) for line in (tmp_path / "out.jsonl").open(encoding="utf-8")}
    assert rows["diabetes"]["family"] and not rows["ipertensione"]["family"]
    rules.write_text('{"language": "es", "rules": [\n {"literal": "x", "category": "NEGATION"}\n]}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(notes), str(tmp_path / "bad.jsonl"), *model_args,
                                      "--context-rules", str(rules)])
    assert result.exit_code == 2
    assert f"error: {rules} line 2: unknown category 'NEGATION'" in result.stderr


def test_the_html_page_shows_qualified_labels(tmp_path, model_args):
    note = tmp_path / "MultiClinNER-es-test-disease-00001.txt"
    note.write_text(NOTES["MultiClinNER-es-test-disease-00001"], encoding="utf-8")
    result = CliRunner().invoke(app, ["visualize", str(note), str(tmp_path / "page.html"), *model_args, "--context"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "DISEASE (neg)" in page and page.count("DISEASE (neg)") == 1
