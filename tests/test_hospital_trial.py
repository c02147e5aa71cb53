"""Issue 23's hospital trial, end to end, as a new user runs it from the README.

One EHR-like extract (Spanish case reports, Italian, Romanian, English and French notes, an
empty, a blank, a null and a 47,000-character note, a duplicate id, a row without id, integer
``patient_id``/``admission_id``), written as Parquet, as a Windows-1252 semicolon CSV and as a
folder of Parquet parts, goes through a saved two-component pipeline (a per-language disease
checkpoint beside a multilabel one, ``two_component_pipeline``). Every run must account for
every row (annotated, or reported by its row number with a reason), give the Python
pipeline's spans, and say each problem in one line without a traceback."""

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import pyarrow
import pyarrow.parquet
import pytest
import spacy
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.testing import clinical_case

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The trained tiny model's words: the disease component tags each language's own; the
# multilabel "family" component's disease head tags the Spanish ones in every language.
DESIGNED = {
    "es-designed": ("es", "Varón de 71 años con neumonía y scompenso; cu infarct."),
    "it-designed": ("it", "Paziente con scompenso e neumonía, oggi."),
    "en-designed": ("en", "The patient presents with neumonía and heart failure."),
    "fr-designed": ("fr", "Le patient présente une pneumonie et une insuffisance cardiaque."),
}
EXPECTED_DESIGNED = {
    "es-designed": [("disease", "neumonía"), ("family", "neumonía")],
    "it-designed": [("disease", "scompenso"), ("family", "neumonía")],
    "en-designed": [("family", "neumonía")],
    "fr-designed": [],
}
SCHEMA = pyarrow.schema([("patient_id", pyarrow.int32()), ("admission_id", pyarrow.int64()),
                         ("note_id", pyarrow.string()), ("lang", pyarrow.string()), ("text", pyarrow.string())])
COLUMNS = ["--id-column", "note_id", "--lang-column", "lang", "--keep-columns", "patient_id,admission_id"]

def long_note() -> str:
    text, seed = "", 100
    while len(text) < 47_000:
        text += clinical_case(seed, paragraphs=4) + "\n"
        seed += 1
    return text[:47_000]


def extract_rows() -> List[Dict]:
    notes = [(p.name.split("-")[1], p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob("*.txt"))]
    notes += [(lang, clinical_case(seed, paragraphs=2, lang=lang)) for seed, lang in enumerate(["es", "it", "ro"] * 2)]
    rows = [{"note_id": f"n{i:03d}", "lang": lang, "text": text} for i, (lang, text) in enumerate(notes)]
    rows += [{"note_id": note_id, "lang": lang, "text": text} for note_id, (lang, text) in DESIGNED.items()]
    rows += [{"note_id": "long-es", "lang": "es", "text": long_note()},
             {"note_id": "empty", "lang": "es", "text": ""},
             {"note_id": "blank", "lang": "es", "text": " \r\n "},
             {"note_id": "null-text", "lang": "es", "text": None},
             {"note_id": "n001", "lang": "es", "text": "otra nota con el mismo id: neumonía"},
             {"note_id": "", "lang": "es", "text": "sin id: diabetes"},
             {"note_id": "dup-text", "lang": "it", "text": DESIGNED["it-designed"][1]}]
    return [{"patient_id": 7000 + i // 3, "admission_id": 9_000_000_000 + i, **row} for i, row in enumerate(rows)]


def cp1252_rows(rows: List[Dict]) -> List[Dict]:
    """The rows a Windows-1252 export can hold (Romanian ș/ț cannot be; a null text is no CSV value)."""
    out = []
    for row in rows:
        try:
            if row["text"] is not None:
                row["text"].encode("cp1252")
                out.append(row)
        except UnicodeEncodeError:
            pass
    return out


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> Tuple[Path, List[Dict]]:
    """The extract in its three forms, in one folder: extract.parquet (row groups of 4),
    extract.csv (cp1252, ';', CRLF, quoted texts) and parts/ (Parquet files of 10 rows); and
    nolang.parquet, without the language column."""
    folder = tmp_path_factory.mktemp("extract")
    rows = extract_rows()
    table = pyarrow.Table.from_pylist(rows, schema=SCHEMA)
    pyarrow.parquet.write_table(table, folder / "extract.parquet", row_group_size=4)
    pyarrow.parquet.write_table(table.drop_columns(["lang"]), folder / "nolang.parquet")
    (folder / "parts").mkdir()
    for n, start in enumerate(range(0, table.num_rows, 10)):
        pyarrow.parquet.write_table(table.slice(start, 10), folder / "parts" / f"part-{n:03d}.parquet")
    lines = ["patient_id;admission_id;note_id;lang;text"]
    for row in cp1252_rows(rows):
        text = '"' + row["text"].replace('"', '""') + '"'
        lines.append(f"{row['patient_id']};{row['admission_id']};{row['note_id']};{row['lang']};{text}")
    (folder / "extract.csv").write_bytes("\r\n".join(lines).encode("cp1252") + b"\r\n")
    return folder, rows


@pytest.fixture(scope="module")
def reference(extract, two_component_pipeline) -> List[Tuple]:
    """Every mention the Python pipeline gives the rows that are documents (the first of a
    duplicated id; not the null text nor the row without id), as (id, label, start, end, text,
    patient_id, admission_id), sorted."""
    _, rows = extract
    nlp = spacy.load(two_component_pipeline)
    seen, docs, kept = set(), [], []
    for row in rows:
        if not row["note_id"] or row["text"] is None or row["note_id"] in seen:
            continue
        seen.add(row["note_id"])
        doc = nlp.make_doc(row["text"])
        doc._.dt4h_lang = row["lang"]
        docs.append(doc)
        kept.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = list(nlp.pipe(docs))
    return sorted((row["note_id"], span.label_, span.start_char, span.end_char, span.text, row["patient_id"],
                   row["admission_id"]) for row, doc in zip(kept, docs) for key in ("disease", "family")
                  for span in doc.spans.get(key, []))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def read_rows(path: Path) -> List[Tuple]:
    if path.suffix == ".parquet":
        rows = pyarrow.parquet.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted((r["id"], r["label"], r["start"], r["end"], r["text"], r["patient_id"], r["admission_id"])
                  for r in rows)


def problems(stderr: str) -> List[str]:
    """stderr's lines; each must be one whole message, none part of a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith(("warning: ", "error: ", "resuming: ")) for line in lines), stderr
    return lines


def expected_problems(where: Dict[str, str], rows: List[Dict]) -> List[str]:
    """What a run over ``rows`` must report: the two notes only ``family`` reads, and every
    row that is no document, by the place ``where`` names (row id -> "FILE row N")."""
    row_of = {id(row): place for row, place in zip(rows, where)}
    first_n001 = next(row for row in rows if row["note_id"] == "n001")
    lines = [f"warning: {note_id} is in {lang}, which the disease component(s) have no head for; annotated by "
             "family only" for note_id, lang in (("en-designed", "en"), ("fr-designed", "fr"))]
    for row in rows:
        if row["text"] is None:
            lines.append(f"error: skipped {row_of[id(row)]}: missing text (column 'text')")
        elif not row["note_id"]:
            lines.append(f"error: skipped {row_of[id(row)]}: missing id (column 'note_id')")
        elif row["note_id"] == "n001" and row is not first_n001:
            lines.append(f"error: skipped {row_of[id(row)]}: duplicate id 'n001' (first at {row_of[id(first_n001)]}); "
                         "ids name the documents in the output, so each must be unique")
    return sorted(lines)


def test_the_extract_is_what_the_trial_needs(extract):
    folder, rows = extract
    assert {row["lang"] for row in rows} == {"es", "it", "ro", "en", "fr"}
    assert max(len(row["text"] or "") for row in rows) == 47_000
    assert 0 < len(cp1252_rows(rows)) < len(rows) - 1  # the CSV lacks the Romanian notes
    assert b"\xf1" in (folder / "extract.csv").read_bytes()  # cp1252's ñ: not UTF-8


def test_parquet_every_row_is_annotated_or_reported_with_the_pipelines_spans(
        tmp_path, monkeypatch, extract, reference, two_component_pipeline):
    folder, rows = extract
    monkeypatch.chdir(folder)
    out = tmp_path / "mentions.parquet"
    result = run("predict", "extract.parquet", out, "--model", two_component_pipeline, *COLUMNS)
    assert result.exit_code == 1, result.output
    where = [f"extract.parquet row {n}" for n in range(1, len(rows) + 1)]
    assert sorted(problems(result.stderr)) == expected_problems(where, rows)
    assert f"{len(rows) - 3} documents read, 3 failed" in result.stdout
    got = read_rows(out)
    assert got == reference
    schema = pyarrow.parquet.read_schema(out)
    assert (schema.field("patient_id").type, schema.field("admission_id").type) == (pyarrow.int32(), pyarrow.int64())
    for note_id, expected in EXPECTED_DESIGNED.items():
        assert sorted(r[4] for r in got if r[0] == note_id) == sorted(text for _, text in expected), note_id
    long_mentions = [r for r in got if r[0] == "long-es"]
    assert len(long_mentions) > 100 and max(r[3] for r in long_mentions) > 46_000  # read to its end


def test_without_a_language_column_detect_routes_every_note_and_an_empty_note_is_no_failure(
        tmp_path, monkeypatch, extract, reference, two_component_pipeline):
    """An empty or blank note has no language to detect and nothing to annotate: it is a
    document without mentions, as with a language column, not "too little text" (it was)."""
    folder, rows = extract
    monkeypatch.chdir(folder)
    out = tmp_path / "mentions.parquet"
    result = run("predict", "nolang.parquet", out, "--model", two_component_pipeline, "--lang", "detect",
                 *COLUMNS[:2], *COLUMNS[4:])
    assert result.exit_code == 1, result.output
    where = [f"nolang.parquet row {n}" for n in range(1, len(rows) + 1)]
    assert sorted(problems(result.stderr)) == expected_problems(where, rows)
    assert f"{len(rows) - 3} documents read, 3 failed" in result.stdout
    assert read_rows(out) == reference


def test_a_cp1252_semicolon_csv_reads_with_encoding_and_gives_the_parquet_rows(
        tmp_path, monkeypatch, extract, reference, two_component_pipeline):
    folder, rows = extract
    monkeypatch.chdir(folder)
    out = tmp_path / "mentions.jsonl"
    refused = run("predict", "extract.csv", out, "--model", two_component_pipeline, *COLUMNS)
    assert refused.exit_code == 2 and not out.exists()
    assert "Traceback" not in refused.output
    message = " ".join(refused.output.split())
    assert "extract.csv is not valid utf-8 at byte offset" in message and "pass --encoding cp1252" in message

    result = run("predict", "extract.csv", out, "--model", two_component_pipeline, *COLUMNS, "--encoding", "cp1252")
    assert result.exit_code == 1, result.output
    csv_rows = cp1252_rows(rows)
    where = [f"extract.csv row {n}" for n in range(1, len(csv_rows) + 1)]
    assert sorted(problems(result.stderr)) == expected_problems(where, csv_rows)
    # CSV values are text: the kept ids come back as the digits the export holds.
    ids = {row["note_id"] for row in csv_rows}
    assert read_rows(out) == [(*r[:5], str(r[5]), str(r[6])) for r in reference if r[0] in ids]


def test_ray_killed_mid_job_resumes_to_every_row_and_a_regenerated_extract_is_refused(
        tmp_path, monkeypatch, extract, reference, two_component_pipeline, kill_after_two_parts):
    folder, rows = extract
    source = tmp_path / "parts"
    shutil.copytree(folder / "parts", source)
    out = tmp_path / "mentions.parquet"
    model = os.path.relpath(two_component_pipeline, tmp_path)
    stderr = kill_after_two_parts(["predict", "parts", out.name, "--model", model, *COLUMNS, "--engine", "ray",
                                   "--workers", "1", "--batch-size", "2", "--commit-every", "2", "-q"],
                                  tmp_path / "two-parts.marker", cwd=tmp_path)
    assert "Traceback" not in stderr, stderr
    assert not out.exists()
    parts = tmp_path / "mentions.parquet.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["job.json", "part-00000001.jsonl", "part-00000002.jsonl"]
    saved = tmp_path / "saved.parts"
    shutil.copytree(parts, saved)

    # the same input and model, given by absolute paths, are the same job
    monkeypatch.chdir(tmp_path)
    result = run("predict", source.resolve(), out, "--model", Path(two_component_pipeline).resolve(), *COLUMNS,
                 "--commit-every", "2", "--resume")
    assert result.exit_code == 1, result.output
    lines = problems(result.stderr)
    assert lines[0].startswith("resuming: ") and lines[0].endswith(f"of {len(rows)} documents already written")
    assert read_rows(out) == reference
    assert not parts.exists()

    saved.rename(parts)
    last = sorted(source.iterdir())[-1]
    pyarrow.parquet.write_table(pyarrow.parquet.read_table(last).slice(1), last)  # regenerated under the same name
    before = out.read_bytes()
    refused = run("predict", "parts", out, "--model", model, *COLUMNS, "--commit-every", "2", "--resume")
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert "has changed since the run that wrote" in message and "a regenerated extract?" in message
    assert out.read_bytes() == before


def test_evaluate_scores_predicts_own_output_on_the_notes_with_gold(tmp_path, monkeypatch, extract, reference,
                                                                    two_component_pipeline):
    folder, _ = extract
    monkeypatch.chdir(folder)
    out = tmp_path / "mentions.parquet"
    assert run("predict", "extract.parquet", out, "--model", two_component_pipeline, *COLUMNS).exit_code == 1
    gold_ids = {"es-designed", "it-designed", "long-es"}
    gold = sorted({r[:5] for r in reference if r[0] in gold_ids})
    gold_path = tmp_path / "gold.tsv"
    gold_path.write_text("filename\tlabel\tstart_span\tend_span\ttext\n"
                         + "".join("\t".join(map(str, g)) + "\n" for g in gold), encoding="utf-8")
    result = run("evaluate", gold_path, out, "--only-gold-docs", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout[result.stdout.index("{"):])
    assert (scores["strict"]["f1"], scores["strict"]["tp"]) == (1.0, len(gold))
    predicted = {r[0] for r in reference}
    assert scores["left_out"] == {"documents": len(predicted - gold_ids),
                                  "mentions": len({r[:5] for r in reference if r[0] not in gold_ids})}
