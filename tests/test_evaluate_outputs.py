"""``evaluate`` reads predict's own outputs (.tsv, .jsonl, .parquet) as PRED and as GOLD, and
``--only-gold-docs`` scores only the documents the gold has mentions of."""

import json
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.evaluate.official import evaluate, format_table
from dt4h_spacy.tsv import Mention, format_mentions, read_mentions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_checkpoint, tiny_base_model):
    """predict's three mention outputs of the examples, written by predict itself."""
    folder = tmp_path_factory.mktemp("outputs")
    for suffix in (".tsv", ".jsonl", ".parquet"):
        result = run("predict", EXAMPLES, folder / f"out{suffix}", "--checkpoint", tiny_checkpoint,
                     "--base-model", tiny_base_model, "-q")
        assert result.exit_code == 0, result.output
    assert read_mentions(folder / "out.tsv"), "the tiny model tags something, so the scores mean something"
    return folder


def scores(gold, pred, *extra):
    result = run("evaluate", gold, pred, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_evaluate_scores_predicts_jsonl_and_parquet_as_its_tsv(outputs, suffix):
    assert scores(EXAMPLES / "gold.tsv", outputs / f"out{suffix}") == scores(EXAMPLES / "gold.tsv", outputs / "out.tsv")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_jsonl_or_parquet_with_the_mention_columns_is_gold(outputs, suffix):
    as_gold = scores(outputs / f"out{suffix}", outputs / "out.tsv")
    assert as_gold == scores(outputs / "out.tsv", outputs / "out.tsv") and as_gold["strict"]["f1"] == 1.0
    assert as_gold["strict"]["tp"] == len(read_mentions(outputs / "out.tsv"))


def test_a_bad_jsonl_line_or_parquet_row_is_named(tmp_path):
    good = json.dumps({"id": "d", "label": "DISEASE", "start": 0, "end": 4, "text": "asma", "score": 0.9})
    (tmp_path / "pred.jsonl").write_text(good + "\n\n{not json\n", encoding="utf-8")
    (tmp_path / "gold.tsv").write_text(format_mentions([Mention("d", "DISEASE", 0, 4, "asma")]))
    result = run("evaluate", tmp_path / "gold.tsv", tmp_path / "pred.jsonl")
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {tmp_path / 'pred.jsonl'} line 3: not JSON")
    pyarrow.parquet.write_table(pyarrow.table({"id": ["d", "d"], "start": [0, 5], "end": [4, 9]}), tmp_path / "p.parquet")
    result = run("evaluate", tmp_path / "gold.tsv", tmp_path / "p.parquet")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'p.parquet'} row 1: no label; a mention row needs id")
    (tmp_path / "page.html").write_text("<html></html>")
    result = run("evaluate", tmp_path / "gold.tsv", tmp_path / "page.html")
    assert result.exit_code == 1 and "a .html file holds a displaCy page, not mention rows; give a .tsv" in result.stderr
    (tmp_path / "out.cdm.jsonl").write_text("{}\n")
    result = run("evaluate", tmp_path / "gold.tsv", tmp_path / "out.cdm.jsonl")
    assert result.exit_code == 1 and "holds one CDM object per document, not mention rows" in result.stderr


GOLD = [Mention("a", "DISEASE", 0, 4, "asma"), Mention("b.txt", "DISEASE", 10, 15, "gripe"),
        Mention("b", "SYMPTOM", 20, 25, "fiebre")]
PRED = [Mention("a.txt", "DISEASE", 0, 4, "asma"), Mention("b", "DISEASE", 11, 15, "ripe"),
        Mention("c", "DISEASE", 0, 3, "tos"), Mention("c", "DISEASE", 5, 9, "gota"), Mention("d", "SYMPTOM", 1, 2, "x"),
        Mention("d", "SYMPTOM", 1, 2, "x")]


def test_only_gold_docs_scores_as_if_the_other_documents_were_not_predicted():
    kept = [m for m in PRED if m.filename.replace(".txt", "") in ("a", "b")]
    result = evaluate(GOLD, PRED, only_gold_docs=True)
    assert result.pop("left_out") == {"documents": 2, "mentions": 3}  # d's duplicate counts once, as it is scored
    assert result == evaluate(GOLD, kept) and result != evaluate(GOLD, PRED)
    assert "left_out" not in evaluate(GOLD, PRED)
    assert evaluate(GOLD, PRED, "DISEASE", only_gold_docs=True)["left_out"] == {"documents": 1, "mentions": 2}


def test_only_gold_docs_on_the_command_line_says_what_it_left_out(tmp_path):
    (tmp_path / "gold.tsv").write_text(format_mentions(GOLD))
    (tmp_path / "pred.tsv").write_text(format_mentions(PRED))
    table = run("evaluate", tmp_path / "gold.tsv", tmp_path / "pred.tsv", "--only-gold-docs",
                "--errors", tmp_path / "errors.tsv")
    assert table.exit_code == 0, table.output
    assert table.stdout == format_table(evaluate(GOLD, PRED, only_gold_docs=True))
    assert ("Scored only the documents with gold mentions (--only-gold-docs): 2 predicted document(s) with 3 "
            "mention(s) left out.") in table.stdout
    errors = (tmp_path / "errors.tsv").read_text(encoding="utf-8")
    assert "\tFP" in errors and not any(line.startswith(("c\t", "d\t")) for line in errors.splitlines())
    assert scores(tmp_path / "gold.tsv", tmp_path / "pred.tsv", "--only-gold-docs")["left_out"]["documents"] == 2
