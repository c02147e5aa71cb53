"""Tables in (Parquet, CSV, TSV, JSON lines, a folder of Parquet parts) and outputs by
extension: the same rows as the .txt route, bad rows reported by number and skipped."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pyarrow
import pyarrow.parquet
import pytest
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.io.tables import Columns, TableError, read_table
from dt4h_spacy.textfiles import Document, Failure
from dt4h_spacy.tsv import Mention, read_mentions

# Clinical-case-like notes in the trained tiny model's words: paragraphs, punctuation, a
# quote and a comma (CSV quoting), CRLF, and one note several 32-subword windows long.
NOTES: Dict[str, str] = {
    "MultiClinNER-es-test-disease-00001": "El paciente presenta miocarditis aguda y dolor.\n\nHoy la paciente presenta "
                                          "diabetes, con neumonía.\n",
    "MultiClinNER-es-test-disease-00002": "La paciente presenta dolor hoy.\r\nEl paciente presenta \"neumonía\" y "
                                          "diabetes.",
    "MultiClinNER-it-test-disease-00001": "Il paziente presenta scompenso e dolore.\nOggi la paziente presenta "
                                          "ipertensione, con polmonite acuta.",
    "MultiClinNER-ro-test-disease-00001": " ".join(["Pacientul prezintă infarct acut cu durere azi."] * 12),
    "MultiClinNER-ro-test-disease-00002": "",
}
EXPECTED_TEXTS = {"miocarditis aguda", "diabetes", "neumonía", "scompenso", "ipertensione", "polmonite acuta",
                  "infarct acut"}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_table(path: Path, rows: List[Dict[str, object]]) -> Path:
    """``rows`` as the table format of ``path``'s suffix (a folder: two Parquet parts)."""
    if path.suffix == ".parquet":
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    elif path.suffix in (".csv", ".tsv"):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        path.mkdir()
        half = len(rows) // 2
        for number, part in enumerate((rows[:half], rows[half:])):
            pyarrow.parquet.write_table(pyarrow.Table.from_pylist(part), path / f"part-{number}.parquet")
    return path


@pytest.fixture(scope="module")
def model_args(trained_checkpoint, tiny_base_model):
    return ("--checkpoint", trained_checkpoint, "--base-model", tiny_base_model)


@pytest.fixture(scope="module")
def txt_rows(tmp_path_factory, model_args) -> List[Mention]:
    """What the .txt route writes for NOTES (with scores)."""
    root = tmp_path_factory.mktemp("txt")
    (root / "in").mkdir()
    for name, text in NOTES.items():
        (root / "in" / f"{name}.txt").write_bytes(text.encode("utf-8"))
    result = run("predict", root / "in", root / "out.tsv", *model_args, "--with-scores")
    assert result.exit_code == 0, result.output
    rows = read_mentions(root / "out.tsv")
    assert {m.text for m in rows} == EXPECTED_TEXTS
    assert sum(m.text == "infarct acut" for m in rows) == 12  # every window of the long note
    with open(root / "out.tsv", encoding="utf-8") as handle:
        scores = [float(line.rstrip("\n").split("\t")[-1]) for line in list(handle)[1:]]
    return [Mention(m.filename, m.label, m.start, m.end, m.text, score) for m, score in zip(rows, scores)]


@pytest.mark.parametrize("table", ["notes.parquet", "notes.csv", "notes.tsv", "notes.jsonl", "parts"])
def test_a_table_gives_the_rows_of_the_txt_route(table, tmp_path, txt_rows, model_args):
    rows = [{"id": name, "text": text} for name, text in NOTES.items()]
    source = write_table(tmp_path / table, rows)
    result = run("predict", source, tmp_path / "out.tsv", *model_args)
    assert result.exit_code == 0, result.output
    assert f"{len(NOTES)} documents read, 0 failed, {len(txt_rows)} mentions written" in result.stdout
    assert read_mentions(tmp_path / "out.tsv") == txt_rows


def test_csv_reads_quoted_multi_line_texts_as_one_row(tmp_path):
    source = tmp_path / "notes.csv"
    source.write_text('id,text\n7,"Primera línea,\nsegunda ""línea"".\r\n"\n8,otra\n', encoding="utf-8", newline="")
    assert list(read_table(source, Columns())) == [
        Document("7", f"{source} row 1", 'Primera línea,\nsegunda "línea".\r\n'),
        Document("8", f"{source} row 2", "otra"),
    ]


def test_jsonl_and_parquet_outputs_hold_one_row_per_mention(tmp_path, txt_rows, model_args):
    source = write_table(tmp_path / "notes.parquet", [{"id": n, "text": t} for n, t in NOTES.items()])
    expected = [{"id": m.filename, "label": m.label, "start": m.start, "end": m.end, "text": m.text} for m in txt_rows]
    for output in ("out.jsonl", "out.parquet"):
        result = run("predict", source, tmp_path / output, *model_args)
        assert result.exit_code == 0, result.output
        if output.endswith(".jsonl"):
            got = [json.loads(line) for line in (tmp_path / output).read_text(encoding="utf-8").splitlines()]
        else:
            got = pyarrow.parquet.read_table(tmp_path / output).to_pylist()
        assert [{k: v for k, v in row.items() if k != "score"} for row in got] == expected
        assert [round(row["score"], 4) for row in got] == [m.score for m in txt_rows]


def test_a_language_column_routes_rows_whose_ids_carry_no_language(tmp_path, txt_rows, model_args):
    rows = [{"id": f"nota-{n}", "text": text, "lengua": name.split("-")[1].upper() + "_X"}
            for n, (name, text) in enumerate(NOTES.items())]
    source = write_table(tmp_path / "notes.jsonl", rows)
    result = run("predict", source, tmp_path / "out.tsv", *model_args, "--lang-column", "lengua")
    assert result.exit_code == 0, result.output
    renamed = {name: f"nota-{n}" for n, name in enumerate(NOTES)}
    assert read_mentions(tmp_path / "out.tsv") == [
        Mention(renamed[m.filename], m.label, m.start, m.end, m.text) for m in txt_rows]


def test_bad_rows_are_reported_by_number_and_the_rest_is_written(tmp_path, txt_rows, model_args):
    good = list(NOTES.items())
    source = tmp_path / "notes.csv"
    lines = ["id,text,lang"]
    lines.append(f'{good[0][0]},"{good[0][1]}",es')  # row 1, two lines long
    lines.append(',"El paciente presenta diabetes.",es')  # row 2: no id
    lines.append(f'{good[0][0]},"otra vez",es')  # row 3: the id of row 1
    lines.append('nota-en,"The patient has asthma.",en')  # row 4: no English head
    lines.append('roto,"sin lengua"')  # row 5: a field short
    lines.append(f'{good[2][0]},"{good[2][1]}",it')  # row 6
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("predict", source, tmp_path / "out.tsv", *model_args, "--lang-column", "lang")
    assert result.exit_code == 1, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: skipped {source} row 2: missing id (column 'id')",
        f"error: skipped {source} row 3: duplicate id '{good[0][0]}' (first at {source} row 1); ids name the "
        "documents in the output, so each must be unique",
        f"error: skipped {source} row 4: the model has no head for language 'en' (it serves es, it, ro); pass --fallback-lang "
        "with one of them to annotate it anyway",
        f"error: skipped {source} row 5: expected 3 fields like the header, got 2",
    ]
    assert "2 documents read, 4 failed" in result.stdout
    assert read_mentions(tmp_path / "out.tsv") == [m for m in txt_rows if m.filename in (good[0][0], good[2][0])]


def test_missing_values_in_parquet_and_bad_json_lines_are_rows_too(tmp_path):
    parquet = write_table(tmp_path / "notes.parquet", [{"id": "a", "text": None}, {"id": None, "text": "x"}])
    assert [str(item) for item in read_table(parquet, Columns())] == [
        f"{parquet} row 1: missing text (column 'text')", f"{parquet} row 2: missing id (column 'id')"]
    numbered = write_table(tmp_path / "numbered.parquet", [{"id": 3, "text": "y"}])
    assert list(read_table(numbered, Columns())) == [Document("3", f"{numbered} row 1", "y")]
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text('{"id": "a", "text": "x"}\n{"id": "b", \n["c"]\n{"id": "d", "text": 5}\n', encoding="utf-8")
    items = list(read_table(jsonl, Columns()))
    assert isinstance(items[0], Document) and all(isinstance(item, Failure) for item in items[1:])
    assert [item.path for item in items] == [f"{jsonl} row {n}" for n in (1, 2, 3, 4)]
    assert items[1].reason.startswith("not valid JSON") and items[2].reason == "not a JSON object"
    assert items[3].reason == "text (column 'text') is int, not a string"


def test_a_missing_column_names_the_option_to_use(tmp_path, model_args):
    source = write_table(tmp_path / "notes.parquet", [{"note_id": "a", "body": "x"}])
    result = run("predict", source, tmp_path / "out.tsv", *model_args)
    assert result.exit_code == 2
    assert "has no column 'id', 'text' (it has note_id, body)" in result.output
    assert "--id-column, --text-column" in result.output
    result = run("predict", source, tmp_path / "out.tsv", *model_args, "--id-column", "note_id", "--text-column",
                 "body", "--lang", "es")
    assert result.exit_code == 0, result.output


def test_a_windows_1252_semicolon_csv_reads_with_encoding_and_its_delimiter_found(tmp_path, txt_rows, model_args):
    names = [name for name in NOTES if "-ro-" not in name]  # Romanian letters are not in Windows-1252
    source = tmp_path / "export.csv"
    lines = ["id;text"] + [f'{name};"{NOTES[name].replace(chr(34), 2 * chr(34))}"' for name in names]
    data = "\r\n".join(lines).encode("cp1252")
    source.write_bytes(data)
    result = run("predict", source, tmp_path / "out.tsv", *model_args, "--encoding", "cp1252")
    assert result.exit_code == 0, result.output
    assert read_mentions(tmp_path / "out.tsv") == [m for m in txt_rows if m.filename in names]

    result = run("predict", source, tmp_path / "utf8.tsv", *model_args)
    assert result.exit_code == 2
    offset = next(n for n, byte in enumerate(data) if byte > 127)
    line = data[:offset].count(b"\n") + 1
    assert result.stderr.strip().splitlines() == [
        f"error: {source} is not valid utf-8 at byte offset {offset} (line {line}, byte 0x{data[offset]:02x}); pass "
        "--encoding cp1252 if it is a Windows/Latin-1 export, or re-save the file as UTF-8"]
    assert not (tmp_path / "utf8.tsv").exists()

    result = run("predict", source, tmp_path / "comma.tsv", *model_args, "--encoding", "cp1252", "--delimiter", ",")
    assert result.exit_code == 2
    assert "has one column 'id;text'" in result.output and "pass --delimiter ';'" in result.output
    assert "--id-column" not in result.output


def test_a_byte_that_does_not_decode_far_into_a_table_is_named_by_offset_and_line(tmp_path):
    source = tmp_path / "notes.tsv"
    head = "id\ttext\n" + "".join(f"{n}\tnota {n} sin acentos\n" for n in range(60000))  # past Arrow's first block
    data = head.encode("ascii") + "60000\tañadido\n".encode("cp1252")
    source.write_bytes(data)
    offset = len(head) + len("60000\ta")
    with pytest.raises(TableError) as caught:
        list(read_table(source, Columns(), "utf-8", "\t"))
    assert str(caught.value) == (f"{source} is not valid utf-8 at byte offset {offset} (line 60002, byte 0xf1); pass "
                                 "--encoding cp1252 if it is a Windows/Latin-1 export, or re-save the file as UTF-8")
    assert list(read_table(source, Columns(), "cp1252", "\t"))[-1] == Document("60000", f"{source} row 60001", "añadido")


def test_a_csv_without_the_column_ends_with_exit_2_every_time_never_an_abort(tmp_path):
    """An Arrow reader opened for the header used to leave its read-ahead thread holding a
    Python object, and exiting at once aborted (SIGABRT) in about half the runs."""
    source = tmp_path / "notes.csv"
    source.write_text("note_id,body\na,dolor\n", encoding="utf-8")
    command = [sys.executable, "-m", "dt4h_spacy", "predict", str(source), str(tmp_path / "out.tsv"), "--lang", "es"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(run.wait(timeout=240), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert [code for code, _ in results] == [2] * 4, [err[-300:] for _, err in results]
    assert all("has no column 'id', 'text' (it has note_id, body)" in " ".join(err.split()) for _, err in results)
