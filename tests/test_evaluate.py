"""The scorer against hand-computed cases, the official README example and a direct
transcription of the official definitions."""

import json
import warnings
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dt4h_spacy.errors import EvaluationError
from dt4h_spacy.evaluate.official import evaluate, evaluate_files, format_table, pair_score, strict_errors
from dt4h_spacy.filenames import lang_from_filename
from dt4h_spacy.tsv import Mention, TSVError, format_mentions

D, S = "DISEASE", "SYMPTOM"


def m(filename, label, start, end):
    return Mention(filename, label, start, end, "x")


def official_keys(result):
    return {key: result[key] for key in ("entity", "strict", "char_f1")}


# The rows of assets/gold_standard.tsv and assets/dummy.tsv in nlp4bia-bsc/MultiClinAIEval, and
# the output its README publishes for `--pred assets/dummy.tsv --entity DISEASE`.
README_GOLD = [m("doc1.txt", D, 10, 18), m("doc1.txt", S, 40, 45), m("doc1.txt", "PROCEDURE", 60, 67),
               m("doc2.txt", D, 5, 13), m("doc2.txt", S, 30, 38), m("doc2.txt", "PROCEDURE", 50, 57)]
README_PRED = [m("doc1.txt", D, 10, 18), m("doc2.txt", D, 5, 12), m("doc2.txt", D, 100, 110),
               m("doc1.txt", S, 40, 45), m("doc1.txt", "PROCEDURE", 60, 67), m("doc2.txt", "PROCEDURE", 50, 57)]
README_OUTPUT = {
    "entity": "DISEASE",
    "strict": {"precision": 0.3333, "recall": 0.5, "f1": 0.4, "tp": 1, "fp": 2, "fn": 1},
    "char_f1": {"precision": 0.6444, "recall": 0.9667, "f1": 0.7733, "n_gold": 2, "n_pred": 3},
}


def test_reproduces_the_official_readme_example():
    assert official_keys(evaluate(README_GOLD, README_PRED, "DISEASE")) == README_OUTPUT


def test_reproduces_the_official_readme_example_from_files(tmp_path):
    (tmp_path / "gold_standard.tsv").write_text(format_mentions(README_GOLD))
    (tmp_path / "dummy.tsv").write_text(format_mentions(README_PRED))
    result = evaluate_files(tmp_path / "gold_standard.tsv", tmp_path / "dummy.tsv", entity="DISEASE")
    assert json.loads(json.dumps(official_keys(result))) == README_OUTPUT


def test_all_labels_of_the_readme_files():
    # doc1: 3 exact; doc2: PROCEDURE exact, DISEASE 5-12 vs 5-13 = 2*7/15, SYMPTOM missed,
    # DISEASE 100-110 spurious. char recall = (4 + 14/15) / 6, precision the same / 6.
    result = evaluate(README_GOLD, README_PRED)
    assert result["strict"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "tp": 4, "fp": 2, "fn": 2}
    assert result["char_f1"] == {"precision": 0.8222, "recall": 0.8222, "f1": 0.8222, "n_gold": 6, "n_pred": 6}


ES, IT, OTHER = "MultiClinNER-es-test-disease-00001", "MultiClinNER-it-test-disease-00001", "doc3"
GOLD = [
    m(ES, D, 0, 10),  # partly found by 5-15: o=5 -> P=R=1/2 -> 1/2
    m(ES, D, 20, 24), m(ES, D, 26, 30),  # both inside one prediction 20-30: o=4, R=1, P=2/5 -> 4/7 each
    m(ES, D, 40, 44),  # exact, predicted twice
    m(ES, S, 50, 54),  # predicted with the wrong label
    m(IT, D, 0, 5),  # file with no predictions
]
PRED = [m(ES, D, 5, 15), m(ES, D, 20, 30), m(ES, D, 40, 44), m(ES, D, 40, 44), m(ES, D, 50, 54),
        m(OTHER, D, 0, 3)]  # a file with no gold


def test_hand_computed_small_corpus():
    result = evaluate(GOLD, PRED)
    # Strict: only 40-44 matches; the duplicate prediction counts once, so 5 predictions.
    assert result["strict"] == {"precision": 0.2, "recall": 0.1667, "f1": 0.1818, "tp": 1, "fp": 4, "fn": 5}
    # Recall: (1/2 + 4/7 + 4/7 + 1 + 0 + 0) / 6 = 37/84; precision: (1/2 + 4/7 + 1 + 0 + 0) / 5 = 29/70;
    # F1 = 2146/5026.
    assert result["char_f1"] == {"precision": 0.4143, "recall": 0.4405, "f1": 0.427, "n_gold": 6, "n_pred": 5}


def test_entity_filter_drops_other_labels_from_both_sides():
    result = evaluate(GOLD, PRED, entity=D)
    assert result["entity"] == D
    assert result["strict"] == {"precision": 0.2, "recall": 0.2, "f1": 0.2, "tp": 1, "fp": 4, "fn": 4}
    # Recall 37/70, precision 29/70, F1 = 2*29*37 / (70*66).
    assert result["char_f1"] == {"precision": 0.4143, "recall": 0.5286, "f1": 0.4645, "n_gold": 5, "n_pred": 5}


def test_per_language_and_per_file():
    result = evaluate(GOLD, PRED)
    assert list(result["per_lang"]) == ["es", "it"]  # doc3 has no language: totals only
    assert result["per_lang"]["es"]["strict"] == {"precision": 0.25, "recall": 0.2, "f1": 0.2222, "tp": 1, "fp": 3, "fn": 4}
    assert result["per_lang"]["it"]["strict"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert result["per_lang"]["es"]["char_f1"]["recall"] == round((0.5 + 8 / 7 + 1) / 5, 4)
    assert list(result["per_file"]) == [ES, IT, OTHER]
    assert result["per_file"][OTHER]["strict"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert result["per_file"][OTHER]["char_f1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_gold": 0, "n_pred": 1}


def test_gold_duplicates_are_kept_prediction_duplicates_are_not():
    result = evaluate([m("d", D, 0, 4), m("d", D, 0, 4)], [m("d", D, 0, 4), m("d", D, 0, 4)])
    assert result["strict"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "tp": 1, "fp": 0, "fn": 1}
    assert result["char_f1"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n_gold": 2, "n_pred": 1}


def test_prediction_duplicates_differing_only_in_text_count_once():
    pred = [Mention("d", D, 0, 4, "asma"), Mention("d", D, 0, 4, "ASMA")]
    assert evaluate([m("d", D, 0, 4)], pred)["strict"]["fp"] == 0


def test_nothing_to_score_gives_zeros():
    assert official_keys(evaluate([], [])) == {
        "entity": None,
        "strict": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0},
        "char_f1": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_gold": 0, "n_pred": 0},
    }


@pytest.mark.parametrize("gold, pred, score", [
    ((0, 10), (5, 15), 0.5), ((0, 10), (10, 20), 0.0), ((0, 4), (0, 10), 4 / 7), ((2, 3), (0, 10), 2 / 11),
    ((0, 10), (0, 10), 1.0),
])
def test_pair_score(gold, pred, score):
    assert pair_score(gold, pred) == pytest.approx(score, abs=1e-12)


def test_names_match_with_or_without_txt_as_convert_accepts_both():
    result = evaluate([m("doc1.txt", D, 0, 4), m("doc2", D, 0, 4)], [m("doc1", D, 0, 4), m("doc2.txt", D, 0, 4)])
    assert result["strict"]["tp"] == 2 and result["strict"]["f1"] == 1.0
    assert sorted(result["per_file"]) == ["doc1", "doc2"]


def test_files_that_share_no_document_are_an_error_not_a_zero():
    with pytest.raises(EvaluationError, match=r"share no document \(gold e.g. 'doc1', predictions e.g. 'other'\)"):
        evaluate([m("doc1.txt", D, 0, 4)], [m("other", D, 0, 4)])
    assert evaluate([m("doc1", D, 0, 4)], [])["strict"]["fn"] == 1  # no prediction at all is a real 0


def test_gold_in_distemist_columns_is_read_as_convert_reads_it(tmp_path):
    gold = tmp_path / "gold.tsv"
    gold.write_text("filename\tmark\tlabel\toff0\toff1\tspan\ndoc1\tT1\tENFERMEDAD\t0\t4\tasma\n", encoding="utf-8")
    pred = tmp_path / "pred.tsv"
    pred.write_text("filename\tlabel\tstart_span\tend_span\ttext\ndoc1.txt\tENFERMEDAD\t0\t4\tasma\n", encoding="utf-8")
    assert evaluate_files(gold, pred)["strict"]["f1"] == 1.0


def test_warns_when_the_entity_matches_no_row():
    with pytest.warns(UserWarning, match=r"No gold rows have label 'Disease' \(labels present: DISEASE\)"):
        evaluate([m("d", D, 0, 4)], [], entity="Disease")


def test_no_warning_for_a_normal_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(GOLD, PRED, entity=D)


def test_evaluate_files_reports_bad_rows_by_line(tmp_path):
    (tmp_path / "gold.tsv").write_text("filename\tlabel\tstart_span\tend_span\ttext\nd\tDISEASE\t0\t4\tx\nd\tDISEASE\t15\t12\tx\n")
    (tmp_path / "pred.tsv").write_text("filename\tlabel\tstart_span\tend_span\ttext\n")
    with pytest.raises(TSVError, match=r"gold.tsv line 3: end_span \(12\) <= start_span \(15\)"):
        evaluate_files(tmp_path / "gold.tsv", tmp_path / "pred.tsv")


def test_lang_from_filename():
    assert lang_from_filename("MultiClinNER-es-test-disease-00019") == "es"
    assert lang_from_filename("corpus/MultiClinNER-ro-train-disease-00001.txt") == "ro"
    assert lang_from_filename("multiclinner_IT_dev_7.txt") == "it"
    assert lang_from_filename("MultiClinNER-cz-test-disease-1") == "cz"
    assert lang_from_filename("casos_clinicos_cardiologia1") is None
    assert lang_from_filename("MultiClinNER-test-disease-00019") is None
    assert lang_from_filename("MultiClinNERes-1") is None


# --- the official definitions, transcribed literally (all pairs, greedy first match) --------


def reference(gold, pred, entity=None):
    seen, unique = set(), []
    for p in pred:
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    pred = unique
    if entity:
        gold = [g for g in gold if g.label == entity]
        pred = [p for p in pred if p.label == entity]
    docs = sorted({x.filename for x in gold} | {x.filename for x in pred})
    tp = fp = fn = 0
    gold_scores, pred_scores = [], []
    for d in docs:
        g_doc = [g for g in gold if g.filename == d]
        p_doc = [p for p in pred if p.filename == d]
        used = set()
        for g in g_doc:
            for i, p in enumerate(p_doc):
                if i not in used and g.key == p.key:
                    used.add(i)
                    tp += 1
                    break
        fp += len(p_doc) - len(used)
        fn += len(g_doc) - len(used)

        def f(g, p):
            inter = max(0, min(g.end, p.end) - max(g.start, p.start))
            if g.label != p.label or inter == 0:
                return 0.0
            r, pr = inter / (g.end - g.start), inter / (p.end - p.start)
            return 2 * pr * r / (pr + r)

        gold_scores += [max([f(g, p) for p in p_doc], default=0.0) for g in g_doc]
        pred_scores += [max([f(g, p) for g in g_doc], default=0.0) for p in p_doc]

    def prf(p, r):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}

    strict = prf(tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0)
    strict.update(tp=tp, fp=fp, fn=fn)
    char = prf(sum(pred_scores) / len(pred_scores) if pred_scores else 0.0,
               sum(gold_scores) / len(gold_scores) if gold_scores else 0.0)
    char.update(n_gold=len(gold_scores), n_pred=len(pred_scores))
    return {"entity": entity, "strict": strict, "char_f1": char}


def spans(max_size):
    mention = st.builds(
        lambda f, label, start, length: Mention(f, label, start, start + length, "x"),
        st.sampled_from(["MultiClinNER-es-a-1", "MultiClinNER-ro-a-2", "doc"]), st.sampled_from([D, S]),
        st.integers(0, 40), st.integers(1, 12))
    return st.lists(mention, max_size=max_size)


@settings(max_examples=400, deadline=None)
@given(spans(14), spans(14), st.sampled_from([None, D]))
def test_matches_the_official_definitions(gold, pred, entity):
    kept = [[m for m in side if entity is None or m.label == entity] for side in (gold, pred)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if all(kept) and not {m.filename for m in kept[0]} & {m.filename for m in kept[1]}:
            with pytest.raises(EvaluationError):  # the official scorer's silent 0
                evaluate(gold, pred, entity)
            return
        result = evaluate(gold, pred, entity)
        assert official_keys(result) == reference(gold, pred, entity)
        kinds = Counter(kind for kind, _ in strict_errors(gold, pred, entity))
        assert (kinds["FP"], kinds["FN"]) == (result["strict"]["fp"], result["strict"]["fn"])


@settings(max_examples=100, deadline=None)
@given(spans(14), spans(14))
def test_per_file_metrics_are_each_files_own_evaluation(gold, pred):
    if gold and pred and not {m.filename for m in gold} & {m.filename for m in pred}:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(gold, pred)
        for name, metrics in result["per_file"].items():
            own = reference([g for g in gold if g.filename == name], [p for p in pred if p.filename == name])
            assert metrics == {"strict": own["strict"], "char_f1": own["char_f1"]}


def test_each_label_scores_as_its_own_entity_run_and_the_totals_are_their_micro_average():
    result = evaluate(README_GOLD, README_PRED)
    assert list(result["per_label"]) == [D, "PROCEDURE", S]
    for label, metrics in result["per_label"].items():
        own = evaluate(README_GOLD, README_PRED, entity=label)
        assert metrics == {"strict": own["strict"], "char_f1": own["char_f1"]}
    assert result["per_label"][D] == {k: README_OUTPUT[k] for k in ("strict", "char_f1")}
    assert sum(metrics["strict"]["tp"] for metrics in result["per_label"].values()) == result["strict"]["tp"]
    table = format_table(result)
    assert "| label | strict P" in table and "| **micro** | 0.6667 | 0.6667 | 0.6667 |" in table
    assert "| label |" not in format_table(evaluate(README_GOLD, README_PRED, entity=D))


@settings(max_examples=100, deadline=None)
@given(spans(14), spans(14))
def test_per_label_metrics_are_each_labels_entity_evaluation(gold, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if gold and pred and not {m.filename for m in gold} & {m.filename for m in pred}:
            return
        result = evaluate(gold, pred)
        for label, metrics in result["per_label"].items():
            own = reference(gold, pred, label)
            assert metrics == {"strict": own["strict"], "char_f1": own["char_f1"]}
