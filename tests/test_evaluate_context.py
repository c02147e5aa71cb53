"""evaluate-context: qualifier P/R/F1 on the mentions both files share, from TSV, JSONL and brat."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.errors import EvaluationError
from dt4h_spacy.evaluate.context import evaluate_context, read_qualified
from dt4h_spacy.tsv import Mention, write_mentions

ES = "MultiClinNER-es-test-disease-00001"
IT = "MultiClinNER-it-test-disease-00001"


def test_brat_gold_against_jsonl_predictions(tmp_path):
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / f"{ES}.ann").write_text("T1\tDISO 0 5\tasma\nT2\tDISO 10 18\tneumonía\nT3\tDISO 20 25\tgota\n"
                                    "A1\tNegated T2\nA2\tUncertain T3\nR1\tScope Arg1:T1 Arg2:T2\n", encoding="utf-8")
    (gold / f"{IT}.ann").write_text("T1\tDISO 0 5\tasma\nA1\tNegation T1\n", encoding="utf-8")
    rows = [{"id": ES, "label": "DISEASE", "start": 0, "end": 5, "negated": True, "uncertain": False},
            {"id": ES, "label": "DISEASE", "start": 10, "end": 18, "negated": True, "uncertain": False},
            {"id": ES, "label": "DISEASE", "start": 20, "end": 25, "negated": False, "uncertain": True},
            {"id": ES, "label": "DISEASE", "start": 40, "end": 45, "negated": True, "uncertain": True},  # not in gold
            {"id": IT, "label": "DISEASE", "start": 0, "end": 5, "negated": False, "uncertain": None}]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = evaluate_context(read_qualified(gold), read_qualified(pred))
    assert result["mentions"] == {"gold": 4, "pred": 5, "shared": 4}
    es, it, every = (result["per_lang"][k] for k in ("es", "it", "all"))
    assert (es["negated"]["tp"], es["negated"]["fp"], es["negated"]["fn"]) == (1, 1, 0)
    assert es["negated"]["precision"] == 0.5 and es["negated"]["recall"] == 1.0
    assert es["uncertain"]["f1"] == 1.0
    assert (it["negated"]["fn"], it["uncertain"]["tp"] + it["uncertain"]["tn"]) == (1, 0)  # unknown: not counted
    assert every["negated"]["tp"] == 1 and every["negated"]["fn"] == 1 and every["mentions"] == 4
    result = CliRunner().invoke(app, ["evaluate-context", str(gold), str(pred), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "| es | negated | 1 | 0.500 | 1.000 | 0.667 |" in result.stdout
    assert json.loads((tmp_path / "m.json").read_text())["per_lang"]["it"]["negated"]["fn"] == 1


def test_tsv_with_qualifier_columns_scores_against_itself(tmp_path):
    mentions = [Mention(ES, "DISEASE", 0, 4, "asma", negated=True, family=False),
                Mention(ES, "DISEASE", 5, 9, "gota", negated=False, family=True)]
    write_mentions(tmp_path / "g.tsv", mentions, with_context=True)
    result = evaluate_context(read_qualified(tmp_path / "g.tsv"), mentions)
    assert result["per_lang"]["es"]["negated"]["f1"] == 1.0 and result["per_lang"]["es"]["family"]["f1"] == 1.0
    assert result["per_lang"]["es"]["hypothetical"]["tp"] + result["per_lang"]["es"]["hypothetical"]["tn"] == 0


def test_bad_inputs_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.ann"
    bad.write_text("T1\tDISO 0 5\tasma\nA1 Negated\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=r"bad.ann line 2: malformed attribute"):
        read_qualified(bad)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "start": 0, "end": 2}\n{"id": "a", "start": 3, "end": 4, "negated": "maybe"}\n')
    with pytest.raises(EvaluationError, match=r"rows.jsonl line 2: negated 'maybe' is not a yes/no value"):
        read_qualified(rows)
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "b", "start": 0, "end": 2, "negated": true}\n')
    result = CliRunner().invoke(app, ["evaluate-context", str(rows.with_name("x.jsonl")), str(other)])
    assert result.exit_code == 1 and "x.jsonl: no such file or folder" in result.stderr
    rows.write_text('{"id": "a", "start": 0, "end": 2, "negated": false}\n')
    result = CliRunner().invoke(app, ["evaluate-context", str(rows), str(other)])
    assert result.exit_code == 1 and "share no mention" in result.stderr


def test_predicts_context_parquet_reads_as_its_jsonl(tmp_path, tiny_checkpoint, tiny_base_model):
    examples = Path(__file__).resolve().parent.parent / "examples"
    for suffix in (".jsonl", ".parquet"):
        result = CliRunner().invoke(app, ["predict", str(examples), str(tmp_path / f"out{suffix}"), "--context", "-q",
                                          "--checkpoint", str(tiny_checkpoint), "--base-model", str(tiny_base_model)])
        assert result.exit_code == 0, result.output
    as_jsonl, as_parquet = (read_qualified(tmp_path / f"out{suffix}") for suffix in (".jsonl", ".parquet"))
    assert as_jsonl and [m.values for m in as_parquet] == [m.values for m in as_jsonl]
    assert all(m.negated is not None for m in as_parquet)
    assert evaluate_context(as_parquet, as_jsonl) == evaluate_context(as_jsonl, as_jsonl)
