"""The dt4h-spacy command line, the folder reading it relies on, and the bundled examples."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from typer.testing import CliRunner

import dt4h_spacy
from dt4h_spacy.batch import normalize_lang
from dt4h_spacy.cli import app
from dt4h_spacy.evaluate.official import evaluate_files
from dt4h_spacy.filenames import lang_from_filename
from dt4h_spacy.io import sources
from dt4h_spacy.io.records import span_mention
from dt4h_spacy.textfiles import (
    Document,
    Failure,
    document_name,
    find_txt_files,
    read_documents,
    read_text,
)
from dt4h_spacy.tsv import Mention, format_mentions, read_mentions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEADER = "filename\tlabel\tstart_span\tend_span\ttext\n"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def example_texts():
    return {p.name[:-4]: read_text(p) for p in sorted(EXAMPLES.glob("*.txt"))}


# ------------------------------------------------------------------------ examples


def test_example_gold_offsets_index_the_files_as_stored():
    texts = example_texts()
    gold = read_mentions(EXAMPLES / "gold.tsv")
    assert len(gold) == 19
    for row in gold:
        assert texts[row.filename][row.start:row.end] == row.text, row


def test_examples_cover_the_awkward_cases():
    raw = {p.name: p.read_bytes() for p in EXAMPLES.glob("*.txt")}
    assert any(b"\r\n" in data for data in raw.values()), "CRLF lost: check .gitattributes (examples/*.txt -text)"
    assert any("\u00a0" in d.decode() and any(ord(c) > 0xFFFF for c in d.decode()) for d in raw.values())
    assert any(data == b"" for data in raw.values())
    langs = [lang_from_filename(name) for name in raw]
    assert all(langs.count(lang) >= 2 for lang in ("es", "it", "ro")) and None not in langs


# ------------------------------------------------------------------- reading folders


def test_find_txt_files_sorted_skipping_directories(tmp_path):
    for name in ("b.txt", "a.txt", "notes.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "dir.txt").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("x")
    assert find_txt_files(tmp_path) == ([tmp_path / "a.txt", tmp_path / "b.txt"], [])
    found, failures = find_txt_files(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.txt", "b.txt", "sub/c.txt"]


def test_find_txt_files_survives_symlink_loops_and_reports_broken_links(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    os.symlink(tmp_path, tmp_path / "loop")
    os.symlink(tmp_path / "missing", tmp_path / "gone.txt")
    os.symlink(tmp_path / "self.txt", tmp_path / "self.txt")
    found, _ = find_txt_files(tmp_path, recursive=True)
    assert [p.name for p in found] == ["a.txt", "gone.txt", "self.txt"]
    results = list(read_documents(found))
    assert isinstance(results[0], Document)
    assert [r.reason.split(" (")[0] for r in results[1:]] == ["cannot read", "cannot read"]


def test_input_is_a_txt_file_or_a_folder_and_txt_matches_in_any_case(tmp_path):
    with pytest.raises(FileNotFoundError, match="Input not found"):
        find_txt_files(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="neither a .txt file nor a folder"):
        find_txt_files(tmp_path / "file")
    (tmp_path / "A.TXT").write_text("x")
    assert find_txt_files(tmp_path / "A.TXT") == ([tmp_path / "A.TXT"], [])
    assert find_txt_files(tmp_path) == ([tmp_path / "A.TXT"], [])
    assert document_name(tmp_path / "A.TXT") == "A"


def test_read_text_keeps_line_endings_and_drops_the_bom(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffasma\r\nfiebre\r".encode())
    assert read_text(tmp_path / "a.txt") == "asma\r\nfiebre\r"


def test_undecodable_and_special_files_fail_with_reasons(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("diabetes mellitus ".encode() + "años".encode("latin-1"))
    os.mkfifo(tmp_path / "pipe.txt")
    results = list(read_documents([tmp_path / "latin1.txt", tmp_path / "pipe.txt"]))
    assert [str(r) for r in results] == [
        f"{tmp_path / 'latin1.txt'}: not valid UTF-8 (byte 0xf1 at byte offset 19); pass --encoding cp1252 if it is "
        "a Windows/Latin-1 export, or re-save the file as UTF-8",
        f"{tmp_path / 'pipe.txt'}: not a regular file",
    ]


def test_same_document_name_in_two_folders_is_a_failure(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "doc.txt").write_text(sub)
    found, _ = find_txt_files(tmp_path, recursive=True)
    first, second = read_documents(found)
    assert first == Document("doc", tmp_path / "a" / "doc.txt", "a")
    assert isinstance(second, Failure) and "same document name 'doc'" in second.reason


# ------------------------------------------------------------------------- predict


def ent_rows(name, doc):
    """``doc.ents`` as the rows predict writes: each mention's own characters (span._.dt4h_offsets)."""
    return [span_mention(name, e) for e in doc.ents]


def expected_rows(make_nlp, folder, lang=None, **config):
    """What the Python component gives for each readable text, as TSV rows (with scores)."""
    rows = []
    pipelines = {}
    for path in sorted(folder.glob("*.txt")):
        try:
            text = read_text(path)
        except Exception:
            continue
        doc_lang = lang or lang_from_filename(path.name)
        nlp = pipelines.setdefault(doc_lang, make_nlp(doc_lang, **config))
        doc = nlp(text)
        rows += ent_rows(path.name[:-4], doc)
    return sorted(rows, key=lambda m: (m.filename, m.start, m.end))


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("*.tsv"))
    (folder / "MultiClinNER-es-test-disease-00099.txt").write_bytes(b"Paciente con \xff\xfe asma")
    (folder / "MultiClinNER-it-test-disease-00099.txt").write_bytes("\ufeffPaziente con diabete.".encode())
    return folder


def test_predict_writes_every_readable_file_and_reports_the_rest(corpus, tmp_path, tiny_checkpoint,
                                                                 tiny_base_model, make_nlp):
    out = tmp_path / "out.tsv"
    result = run("predict", corpus, out, "--lang", "auto", "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model, "--batch-size", 3)
    assert result.exit_code == 1, result.output
    assert "MultiClinNER-es-test-disease-00099.txt: not valid UTF-8 (byte 0xff at byte offset 13)" in result.stderr
    assert "8 files read, 1 failed" in result.stdout

    assert out.read_text(encoding="utf-8").startswith(HEADER)
    rows = read_mentions(out)
    assert rows == expected_rows(make_nlp, corpus)
    assert rows, "the tiny random model tags something, so this comparison means something"
    texts = {p.name[:-4]: read_text(p) for p in corpus.glob("*.txt") if b"\xff" not in p.read_bytes()}
    assert all(texts[r.filename][r.start:r.end] == r.text for r in rows)
    assert rows == sorted(rows, key=lambda m: (m.filename, m.start))
    assert sorted(os.listdir(tmp_path)) == ["in", "out.tsv", "out.tsv.job.json"]  # no temporary file left behind


def test_predict_with_a_saved_pipeline_and_explicit_language(tmp_path, make_nlp):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "nota1.txt").write_bytes("Paciente con diabetes mellitus tipo 2.\r\nSin fiebre.".encode())
    (folder / "nota2.txt").write_text("")
    nlp = make_nlp("es")
    nlp.to_disk(tmp_path / "pipeline")
    out = tmp_path / "out.tsv"
    result = run("predict", folder, out, "--model", tmp_path / "pipeline", "--lang", "es", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert read_mentions(out) == expected_rows(make_nlp, folder, lang="es")


@pytest.fixture
def mixed_folder(tmp_path):
    """A Spanish file, one whose name carries no language, one in a language the model lacks."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "MultiClinNER-es-test-disease-1.txt").write_text("Paciente con diabetes mellitus y asma.")
    (folder / "nota.txt").write_text("asma")
    (folder / "MultiClinNER-en-test-disease-1.txt").write_text("asthma")
    return folder


NO_LANGUAGE = ("nota.txt: no MultiClinNER name like MultiClinNER-es-test-disease-00019.txt and too little text to "
               "identify its language (4 letters, at least 12 needed); pass the language, e.g. --lang es")
NO_HEAD = ("MultiClinNER-en-test-disease-1.txt: the model has no head for language 'en' (it serves es, it, ro); "
           "pass --fallback-lang with one of them to annotate it anyway")


@pytest.mark.parametrize("command, output", [("predict", "out.tsv"), ("visualize", "page.html")])
def test_auto_reports_files_without_language_or_head_and_processes_the_rest(
        command, output, mixed_folder, tmp_path, tiny_checkpoint, tiny_base_model, make_nlp):
    result = run(command, mixed_folder, tmp_path / output, "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model)
    assert result.exit_code == 1, result.output
    assert f"error: skipped {mixed_folder / NO_LANGUAGE}" in result.stderr
    assert f"error: skipped {mixed_folder / NO_HEAD}" in result.stderr
    assert result.stderr.count("error: skipped") == 2
    if command == "predict":
        assert "1 files read, 2 failed" in result.stdout
        expected = [r for r in expected_rows(make_nlp, mixed_folder, lang="es") if r.filename.startswith("MultiClinNER-es")]
        assert read_mentions(tmp_path / output) == expected
    else:
        assert "1 documents" in result.stdout and (tmp_path / output).exists()


def test_auto_loads_no_model_when_no_file_carries_a_language(tmp_path):
    (tmp_path / "nota.txt").write_text("asma")
    result = run("predict", tmp_path, tmp_path / "out" / "out.tsv", "--checkpoint", tmp_path / "missing.pt")
    assert result.exit_code == 1 and NO_LANGUAGE in result.stderr and "missing.pt" not in result.output
    assert read_mentions(tmp_path / "out" / "out.tsv") == []


@pytest.mark.parametrize("command", ["predict", "visualize"])
def test_an_explicit_language_the_model_has_no_head_for_is_an_option_error(command, tmp_path, tiny_checkpoint,
                                                                            tiny_base_model):
    (tmp_path / "note.txt").write_text("asthma")
    result = run(command, tmp_path, tmp_path / "out", "--lang", "EN", "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model)
    assert result.exit_code == 2
    assert "no head for language 'en'; it serves es, it, ro" in result.output


@pytest.mark.parametrize("value", ["es", "ES", "es_ES", "es-ES", " Es-es "])
def test_lang_is_normalised_as_spacy_and_hugging_face_users_write_it(value):
    assert normalize_lang(value) == "es"
    assert normalize_lang("AUTO") == "auto"


def test_predict_reads_one_file_in_any_case_creates_the_output_folder_and_warns_on_a_contradicting_lang(
        tmp_path, tiny_checkpoint, tiny_base_model, make_nlp):
    source = tmp_path / "MultiClinNER-es-test-disease-7.TXT"
    source.write_text("Paciente con diabetes mellitus y asma.")
    out = tmp_path / "new" / "sub" / "out.tsv"
    result = run("predict", source, out, "--lang", "it_IT", "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model)
    assert result.exit_code == 0, result.output
    assert ("warning: --lang it, but 1 file(s) are named as es: MultiClinNER-es-test-disease-7.TXT; they are "
            "annotated as it") in result.stderr
    doc = make_nlp("it")(read_text(source))
    assert read_mentions(out) == ent_rows("MultiClinNER-es-test-disease-7", doc)
    assert "1 files read, 0 failed" in result.stdout


def test_encoding_decodes_hospital_exports_and_names_the_way_out(tmp_path, tiny_checkpoint, tiny_base_model,
                                                                  make_nlp):
    text = "Paciente de 54 años con neumonía y diabetes."
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "MultiClinNER-es-test-disease-1.txt").write_bytes(text.encode("cp1252"))
    args = ("predict", tmp_path / "in", tmp_path / "out.tsv", "--checkpoint", tiny_checkpoint,
            "--base-model", tiny_base_model)
    refused = run(*args)
    assert refused.exit_code == 1
    assert "not valid UTF-8 (byte 0xf1 at byte offset 16); pass --encoding cp1252" in refused.stderr
    result = run(*args, "--encoding", "cp1252")
    assert result.exit_code == 0, result.output
    rows = read_mentions(tmp_path / "out.tsv")
    assert rows == ent_rows("MultiClinNER-es-test-disease-1", make_nlp("es")(text))
    assert all(text[r.start:r.end] == r.text for r in rows)
    assert run(*args, "--encoding", "klingon").exit_code == 2


def test_min_score_and_with_scores(tmp_path, tiny_checkpoint, tiny_base_model, make_nlp, corpus):
    args = ("predict", corpus, tmp_path / "all.tsv", "--checkpoint", tiny_checkpoint, "--base-model", tiny_base_model,
            "--with-scores")
    assert run(*args).exit_code == 1  # the corpus holds one undecodable file
    lines = (tmp_path / "all.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER.rstrip("\n") + "\tscore"
    rows = read_mentions(tmp_path / "all.tsv")  # columns found by header name: the score column is ignored
    expected = expected_rows(make_nlp, corpus)
    assert rows == expected
    assert [line.split("\t")[-1] for line in lines[1:]] == [f"{m.score:.4f}" for m in expected]
    assert json.loads(run("evaluate", tmp_path / "all.tsv", tmp_path / "all.tsv", "--json").stdout)["strict"]["f1"] == 1.0

    threshold = sorted(m.score for m in expected)[len(expected) // 2]
    result = run("predict", corpus, tmp_path / "kept.tsv", "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model, "--min-score", threshold)
    assert result.exit_code == 1
    kept = read_mentions(tmp_path / "kept.tsv")
    assert kept == expected_rows(make_nlp, corpus, threshold=threshold)
    assert 0 < len(kept) < len(rows)
    assert run("predict", corpus, tmp_path / "x.tsv", "--min-score", "1.5").exit_code == 2


def test_speed_options_reach_the_component(tmp_path, corpus, tiny_checkpoint, tiny_base_model, make_nlp):
    threads = torch.get_num_threads()
    try:
        result = run("predict", corpus, tmp_path / "int8.tsv", "--checkpoint", tiny_checkpoint,
                     "--base-model", tiny_base_model, "--quantize", "--threads", 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 1, result.output
    rows = []
    for lang in ("es", "it", "ro"):
        nlp = make_nlp(lang, quantize=True)
        for path in sorted(corpus.glob(f"MultiClinNER-{lang}-*.txt")):
            if b"\xff" not in path.read_bytes():
                rows += ent_rows(path.name[:-4], nlp(read_text(path)))
    assert read_mentions(tmp_path / "int8.tsv") == sorted(rows, key=lambda m: (m.filename, m.start, m.end))
    refused = run("predict", corpus, tmp_path / "fp16.tsv", "--checkpoint", tiny_checkpoint,
                  "--base-model", tiny_base_model, "--precision", "fp16")
    assert refused.exit_code == 2 and "precision='fp16' needs a CUDA device" in refused.stderr


def test_predict_n_process_gives_the_same_rows_without_the_tokenizers_fork_warning(tmp_path, corpus, tiny_checkpoint,
                                                                                   tiny_base_model, make_nlp):
    """In its own process: spaCy forks the workers, which must not happen inside the test runner."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    command = [sys.executable, "-m", "dt4h_spacy", "predict", str(corpus), str(tmp_path / "out.tsv"),
               "--checkpoint", str(tiny_checkpoint), "--base-model", str(tiny_base_model), "--n-process", "2",
               "--batch-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr  # the corpus holds one undecodable file
    assert "huggingface/tokenizers" not in result.stderr  # the fork warning of older tokenizers releases
    assert read_mentions(tmp_path / "out.tsv") == expected_rows(make_nlp, corpus)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"dt4h-spacy {dt4h_spacy.__version__}\n"


def test_quantize_help_gives_the_speed_up_the_readme_measured():
    help_text = " ".join(run("predict", "--help").output.split())
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "1.5× on a quiet AMD EPYC" in readme
    assert "1.4-2.2x faster depending on the CPU, 1.5x on a quiet AMD EPYC" in help_text


@pytest.mark.parametrize("extra, message", [
    (["--model", "m", "--checkpoint", "c"], "use either --model or --checkpoint/--base-model"),
    (["--lang", "spanish"], "'spanish' is not a language code"),
    (["--delimiter", ";;"], "';;' is not a delimiter; give one character"),
])
def test_predict_option_errors(tmp_path, extra, message):
    (tmp_path / "MultiClinNER-es-x-1.txt").write_text("asma")
    result = run("predict", tmp_path, tmp_path / "out.tsv", *extra)
    assert result.exit_code == 2 and message in result.output


def test_predict_needs_text_files(tmp_path):
    result = run("predict", tmp_path, tmp_path / "out.tsv")
    assert result.exit_code == 2 and "no .txt files in" in result.output and "--recursive" in result.output


def test_predict_missing_checkpoint_is_a_clear_error(tmp_path, tiny_base_model):
    (tmp_path / "MultiClinNER-es-x-1.txt").write_text("asma")
    result = run("predict", tmp_path, tmp_path / "out.tsv", "--checkpoint", tmp_path / "nope.pt",
                 "--base-model", tiny_base_model)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "nope.pt" in result.stderr  # the core's message, no traceback


def test_interrupted_predict_leaves_no_output(corpus, tmp_path, tiny_checkpoint, tiny_base_model, monkeypatch):
    real = sources.read_documents

    def interrupted(paths, encoding):
        items = real(paths, encoding)
        yield next(items)
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "read_documents", interrupted)
    result = run("predict", corpus, tmp_path / "out.tsv", "--checkpoint", tiny_checkpoint,
                 "--base-model", tiny_base_model)
    assert result.exit_code != 0
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "dt4h_spacy", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("predict", "evaluate", "convert"))


# ------------------------------------------------------------------------ evaluate


def write_pair(tmp_path, gold_rows, pred_rows):
    (tmp_path / "gold.tsv").write_text(format_mentions(gold_rows))
    (tmp_path / "pred.tsv").write_text(format_mentions(pred_rows))
    return tmp_path / "gold.tsv", tmp_path / "pred.tsv"


def test_evaluate_prints_the_official_json(tmp_path):
    gold, pred = write_pair(tmp_path, [Mention("doc1.txt", "DISEASE", 10, 18, "diabetes"),
                                       Mention("doc2.txt", "DISEASE", 5, 13, "influenza")],
                            [Mention("doc1.txt", "DISEASE", 10, 18, "diabetes"),
                             Mention("doc2.txt", "DISEASE", 5, 12, "influenz"),
                             Mention("doc2.txt", "DISEASE", 100, 110, "fake")])
    result = run("evaluate", gold, pred, "--entity", "DISEASE", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["strict"] == {"precision": 0.3333, "recall": 0.5, "f1": 0.4, "tp": 1, "fp": 2, "fn": 1}
    assert printed["char_f1"] == {"precision": 0.6444, "recall": 0.9667, "f1": 0.7733, "n_gold": 2, "n_pred": 3}
    assert list(printed) == ["entity", "strict", "char_f1", "per_lang", "per_label", "per_file"]


def test_evaluate_prints_a_table_and_writes_the_full_json_with_o(tmp_path):
    gold, pred = write_pair(tmp_path, read_mentions(EXAMPLES / "gold.tsv"), read_mentions(EXAMPLES / "gold.tsv")[:10])
    result = run("evaluate", gold, pred, "-o", tmp_path / "metrics.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(evaluate_files(gold, pred)))
    assert result.stdout.splitlines() == [
        "| language | strict P | strict R | strict F1 | char P | char R | char F1 | gold | predicted |",
        "|---|---|---|---|---|---|---|---|---|",
        "| es | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 7 | 7 |",
        "| it | 1.0000 | 0.5000 | 0.6667 | 1.0000 | 0.5000 | 0.6667 | 6 | 3 |",
        "| ro | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 6 | 0 |",
        "| **all** | 1.0000 | 0.5263 | 0.6897 | 1.0000 | 0.5263 | 0.6897 | 19 | 10 |",
    ]
    assert "per_file" not in result.stdout and f"metrics written to {tmp_path / 'metrics.json'}" in result.stderr


def test_evaluate_errors_lists_false_positives_and_negatives_with_their_text(tmp_path):
    gold, pred = write_pair(tmp_path, [Mention("doc1", "DISEASE", 10, 18, "diabetes"),
                                       Mention("doc1", "DISEASE", 30, 35, "asma\tx"),
                                       Mention("doc2", "DISEASE", 0, 4, "gota")],
                            [Mention("doc1.txt", "DISEASE", 10, 18, "diabetes"),
                             Mention("doc1.txt", "DISEASE", 29, 35, " asma\tx"),
                             Mention("doc2.txt", "DISEASE", 0, 4, "gota"),
                             Mention("doc2.txt", "DISEASE", 0, 4, "gota")])
    result = run("evaluate", gold, pred, "--errors", tmp_path / "errors.tsv")
    assert result.exit_code == 0, result.output
    assert "2 errors written to" in result.stderr
    assert (tmp_path / "errors.tsv").read_text(encoding="utf-8").splitlines() == [
        "filename\tlabel\tstart_span\tend_span\ttext\terror",
        'doc1\tDISEASE\t29\t35\t" asma\tx"\tFP',
        'doc1\tDISEASE\t30\t35\t"asma\tx"\tFN',
    ]


def test_evaluate_bad_row_names_the_line(tmp_path):
    (tmp_path / "gold.tsv").write_text(HEADER + "d\tDISEASE\t0\t4\tasma\nd\tDISEASE\t15\t12\tx\n")
    (tmp_path / "pred.tsv").write_text(HEADER)
    result = run("evaluate", tmp_path / "gold.tsv", tmp_path / "pred.tsv")
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'gold.tsv'} line 3: end_span (12) <= start_span (15)" in result.stderr


def test_evaluate_matches_names_with_or_without_txt(tmp_path):
    gold, pred = write_pair(tmp_path, [Mention("doc1.txt", "DISEASE", 0, 4, "asma")],
                            [Mention("doc1", "DISEASE", 0, 4, "asma")])
    result = run("evaluate", gold, pred, "--json")
    assert result.exit_code == 0 and not result.stderr
    assert json.loads(result.stdout)["strict"]["f1"] == 1.0


def test_evaluate_fails_when_gold_and_predictions_share_no_document(tmp_path):
    gold, pred = write_pair(tmp_path, [Mention("doc1", "DISEASE", 0, 4, "asma")],
                            [Mention("other", "DISEASE", 0, 4, "asma")])
    result = run("evaluate", gold, pred)
    assert result.exit_code == 1 and not result.stdout
    assert "error: Gold and predictions share no document" in result.stderr


# ------------------------------------------------------------------------- convert


def test_convert_examples(tmp_path):
    result = run("convert", EXAMPLES, tmp_path / "corpus", "--mentions", EXAMPLES / "gold.tsv")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["es.spacy", "it.spacy", "ro.spacy"]
    assert "es: 2 documents, 7 mentions -> 7 entities, 0 snapped to token boundaries, 0 dropped" in result.stdout
    docs = list(spacy.tokens.DocBin().from_disk(tmp_path / "corpus" / "it.spacy").get_docs(spacy.blank("it").vocab))
    assert [e.text for d in docs for e in d.ents] == ["cirrosi epatica", "epatite\u00a0C cronica", "splenomegalia",
                                                       "scompenso cardiaco congestizio", "insufficienza renale cronica",
                                                       "carcinoma mammario"]


def test_convert_decodes_the_texts_with_the_encoding_given(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "MultiClinNER-es-train-disease-1.txt").write_bytes("Niño con neumonía.".encode("cp1252"))
    (tmp_path / "m.tsv").write_text(HEADER + "MultiClinNER-es-train-disease-1\tDISEASE\t9\t17\tneumonía\n")
    refused = run("convert", folder, tmp_path / "out", "--mentions", tmp_path / "m.tsv")
    assert refused.exit_code == 1 and "not valid UTF-8 (byte 0xf1 at byte offset 2); pass --encoding cp1252" in refused.stderr
    result = run("convert", folder, tmp_path / "out", "--mentions", tmp_path / "m.tsv", "--encoding", "cp1252")
    assert result.exit_code == 0, result.output
    docs = list(spacy.tokens.DocBin().from_disk(tmp_path / "out" / "es.spacy").get_docs(spacy.blank("es").vocab))
    assert [e.text for e in docs[0].ents] == ["neumonía"]


def test_convert_reports_snapped_and_failed(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "MultiClinNER-es-train-disease-1.txt").write_text("Paciente con diabetes.")
    (folder / "MultiClinNER-es-train-disease-2.txt").write_bytes(b"\xff")
    (tmp_path / "m.tsv").write_text(HEADER + "MultiClinNER-es-train-disease-1\tDISEASE\t14\t20\tiabete\n")
    result = run("convert", folder, tmp_path / "out", "--mentions", tmp_path / "m.tsv")
    assert result.exit_code == 1
    assert "MultiClinNER-es-train-disease-2.txt: not valid UTF-8" in result.stderr
    assert "es: 1 documents, 1 mentions -> 1 entities, 1 snapped to token boundaries, 0 dropped" in result.stdout
    assert (tmp_path / "out" / "es.spacy").exists()


def test_convert_drops_and_lists_a_mention_whose_text_does_not_match_unless_reanchored(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "MultiClinNER-es-train-disease-1.txt").write_text("Describimos un caso de brucelosis aguda.")
    (tmp_path / "m.tsv").write_text(HEADER + "MultiClinNER-es-train-disease-1\tDISEASE\t5\t15\tbrucelosis\n")
    result = run("convert", folder, tmp_path / "out", "--mentions", tmp_path / "m.tsv")
    assert result.exit_code == 1
    assert ("mention MultiClinNER-es-train-disease-1 5-15: the source says 'brucelosis', the text has "
            "'ibimos un '; dropped") in result.stderr
    assert "1 mentions -> 0 entities" in result.stdout
    moved = run("convert", folder, tmp_path / "moved", "--mentions", tmp_path / "m.tsv", "--reanchor")
    assert moved.exit_code == 0, moved.output
    assert "moved to 23-33" in moved.stderr and "1 moved to the nearest exact occurrence" in moved.stdout
    docs = list(spacy.tokens.DocBin().from_disk(tmp_path / "moved" / "es.spacy").get_docs(spacy.blank("es").vocab))
    assert [e.text for e in docs[0].ents] == ["brucelosis"]


def test_convert_brat_without_ann_files_converts_nothing(tmp_path):
    (tmp_path / "MultiClinNER-es-train-disease-1.txt").write_text("asma")
    result = run("convert", tmp_path, tmp_path / "out")
    assert result.exit_code == 1
    assert "MultiClinNER-es-train-disease-1.ann: cannot read" in result.stderr
    assert "no documents converted" in result.stderr and not (tmp_path / "out").exists()


def test_convert_iob_needs_a_language_and_then_converts(tmp_path):
    (tmp_path / "es-disease-fold_1-train.csv").write_text("O,0,3,Con\nB-DISEASE,4,8,asma\n\nO,0,3,Sin\n")
    refused = run("convert", tmp_path / "es-disease-fold_1-train.csv", tmp_path / "out", "--format", "iob")
    assert refused.exit_code == 2 and "--lang es" in refused.output
    result = run("convert", tmp_path / "es-disease-fold_1-train.csv", tmp_path / "out", "--format", "iob", "--lang", "es")
    assert result.exit_code == 0, result.output
    assert "es: 2 documents, 1 mentions -> 1 entities" in result.stdout


def test_convert_unknown_language_is_a_clear_error(tmp_path):
    (tmp_path / "MultiClinNER-qq-train-disease-1.txt").write_text("asma")
    (tmp_path / "MultiClinNER-qq-train-disease-1.ann").write_text("")
    result = run("convert", tmp_path, tmp_path / "out")
    assert result.exit_code == 2 and "spaCy has no tokenizer for language 'qq'" in result.stderr


def test_predict_refuses_a_folder_as_output(tmp_path):
    (tmp_path / "MultiClinNER-es-x-1.txt").write_text("asma")
    result = run("predict", tmp_path, tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.output
