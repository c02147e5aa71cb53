"""``compat="authors"``: the authors' published inference script, reproduced exactly.

The reference below is a plain transcription of ``predict_entities`` in the authors'
``inference_scripts/predict_mentions_mtl_local.py``: one window at a time through
``model(...)``, no batching, their vote and trim written out as they are.
"""

import unicodedata
from collections import Counter, defaultdict

import pytest
import spacy
import torch
from spacy.tokens import Doc
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.testing import clinical_case
from dt4h_spacy.tsv import Mention, format_mentions, sort_key

ID2LABEL = {0: "B-DISEASE", 1: "I-DISEASE", 2: "O"}
NEAR_TIE = 1e-4


def reference_entities(txt, task, model, tokenizer, max_length, stride):
    """Their procedure for one text; also the smallest top-2 logit margin it relied on."""
    enc = tokenizer(txt, return_tensors="pt", truncation=True, max_length=max_length,
                    return_offsets_mapping=True, return_overflowing_tokens=True, stride=stride,
                    padding="max_length")
    span_votes = defaultdict(list)
    margin = float("inf")
    for w in range(enc["input_ids"].shape[0]):
        offset_mapping = enc["offset_mapping"][w].tolist()
        word_ids = enc.word_ids(batch_index=w)
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"][w].unsqueeze(0),
                           attention_mask=enc["attention_mask"][w].unsqueeze(0), task=task)
        pred_ids = torch.argmax(logits, dim=-1).squeeze(0).tolist()
        top2 = logits[0].topk(2, dim=-1).values
        word_to_indices = defaultdict(list)
        for i, wid in enumerate(word_ids):
            if wid is not None:
                word_to_indices[wid].append(i)
        for wid in sorted(word_to_indices):
            idxs = word_to_indices[wid]
            s_ch, e_ch = offset_mapping[idxs[0]][0], offset_mapping[idxs[-1]][1]
            if s_ch == 0 and e_ch == 0:
                continue
            span_votes[(s_ch, e_ch)].append(ID2LABEL.get(pred_ids[idxs[0]], "O"))
            margin = min(margin, float(top2[idxs[0], 0] - top2[idxs[0], 1]))
    final_words = []
    for (s_ch, e_ch), labels in span_votes.items():
        counts = Counter(labels).most_common()
        top_labels = [lab for lab, cnt in counts if cnt == counts[0][1]]
        if len(top_labels) > 1 and "O" in top_labels:
            top_labels.remove("O")
        final_words.append((s_ch, e_ch, top_labels[0]))
    final_words.sort(key=lambda x: (x[0], x[1]))

    entities = []

    def flush(etype, start, end):
        if etype is None:
            return
        while start < end and txt[start].isspace():
            start += 1
        while start < end and txt[end - 1].isspace():
            end -= 1
        while start < end and unicodedata.category(txt[start]).startswith("P"):
            start += 1
        while start < end and unicodedata.category(txt[end - 1]).startswith("P"):
            end -= 1
        if start < end:
            entities.append((start, end, etype))

    current, start, end = None, None, None
    for s_ch, e_ch, raw in final_words:
        if raw.startswith("B-"):
            flush(current, start, end)
            current, start, end = raw[2:], s_ch, e_ch
        elif raw.startswith("I-"):
            if current == raw[2:]:
                end = e_ch
        else:
            flush(current, start, end)
            current, start, end = None, None, None
    flush(current, start, end)
    return entities, margin


TEXTS = [clinical_case(seed) for seed in range(4)] + [
    "Paciente con diabetes\naguda, miocarditis y (neumonía).",
    "",
    "  \n ",
    "diabetes",
]


@pytest.fixture(scope="module")
def make_authors_nlp(tiny_base_model, trained_checkpoint):
    def make(**config):
        nlp = spacy.blank("es")
        nlp.add_pipe("dt4h_disease", config={"checkpoint": str(trained_checkpoint),
                                             "base_model": str(tiny_base_model), "compat": "authors", **config})
        return nlp

    return make


def assert_agrees(found, expected, margin):
    assert found == expected or margin < NEAR_TIE, (found, expected)


@pytest.mark.parametrize("max_length, stride, batch_size", [(24, 6, 3), (40, 12, 32), (512, 128, 2)])
def test_component_equals_the_authors_script(make_authors_nlp, max_length, stride, batch_size):
    nlp = make_authors_nlp(max_length=max_length, stride=stride, batch_size=batch_size)
    component = nlp.get_pipe("dt4h_disease")
    texts = TEXTS if max_length < 512 else [clinical_case(10 + s, paragraphs=30) for s in range(2)] + TEXTS[4:]
    tokenizer = component.tagger.tokenizer
    docs = list(nlp.pipe(texts, batch_size=4))
    windows = 0
    for text, doc in zip(texts, docs):
        expected, margin = reference_entities(text, "disease_es_ner", component.tagger.model, tokenizer,
                                              max_length, stride)
        windows += len(tokenizer(text, truncation=True, max_length=max_length, stride=stride,
                                 return_overflowing_tokens=True)["input_ids"])
        assert_agrees([(s, e, label) for s, e, label, _ in doc._.dt4h_chars], expected, margin)
        for ent in doc.ents:  # doc.ents: the same entities on token boundaries
            assert any(ent.start_char <= s and e <= ent.end_char for s, e, _, _ in doc._.dt4h_chars)
            assert 0.0 < ent._.dt4h_score <= 1.0
    assert windows > 2 * len(texts), "the texts must need several windows"
    assert sum(len(doc._.dt4h_chars) for doc in docs) >= 10, "the trained model should find diseases"
    assert any("\n" in doc.text[s:e] for doc in docs for s, e, _, _ in doc._.dt4h_chars) or max_length == 512


def test_predict_writes_the_rows_of_the_authors_script(tmp_path, tiny_base_model, trained_checkpoint,
                                                       make_authors_nlp):
    texts = {f"case{i}": clinical_case(20 + i, paragraphs=25) for i in range(2)}
    texts["lines"] = 'Paciente con miocarditis\naguda y "neumonía" de hoy.'
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in texts.items():
        (folder / f"{name}.txt").write_bytes(text.encode("utf-8"))
    out = tmp_path / "out.tsv"
    result = CliRunner().invoke(app, ["predict", str(folder), str(out), "--lang", "es", "--compat", "authors",
                                      "--checkpoint", str(trained_checkpoint), "--base-model",
                                      str(tiny_base_model), "--quiet"])
    assert result.exit_code == 0, result.output
    component = make_authors_nlp().get_pipe("dt4h_disease")
    rows, margin = [], float("inf")
    for name, text in texts.items():
        entities, m = reference_entities(text, "disease_es_ner", component.tagger.model,
                                         component.tagger.tokenizer, 512, 128)
        margin = min(margin, m)
        rows += [Mention(name, label, s, e, text[s:e]) for s, e, label in entities]
    assert_agrees(out.read_text(encoding="utf-8"), format_mentions(sorted(rows, key=sort_key)), margin)
    assert any("\n" in row.text for row in rows), "a mention crossing a line is written quoted"


def test_entities_off_token_boundaries_are_expanded_and_counted(make_authors_nlp):
    nlp = make_authors_nlp()
    component = nlp.get_pipe("dt4h_disease")
    words = ["Paciente", "con", "diabetes,", "miocarditis", "y", "neumonía."]
    doc = nlp(Doc(nlp.vocab, words=words))
    exact = [(s, e) for s, e, _, _ in doc._.dt4h_chars]
    assert exact and all(doc.text[s:e] in {"diabetes", "miocarditis", "neumonía"} for s, e in exact)
    widened = sum(doc.text[s:e] in {"diabetes", "neumonía"} for s, e in exact)
    assert widened and component.alignment["expanded"] == widened
    assert component.alignment["entities"] == len(exact)
    assert {e.text for e in doc.ents} <= {"diabetes,", "miocarditis", "neumonía."}


def test_invalid_compat_is_refused_when_the_pipe_is_added(make_nlp):
    with pytest.raises(ValueError, match="compat must be one of"):
        make_nlp(compat="author")
    with pytest.raises(ValueError, match="orphan_i='ignore'"):
        make_nlp(compat="authors", orphan_i="begin")


def test_default_mode_sets_no_character_entities(make_nlp):
    nlp = make_nlp()
    assert nlp.get_pipe("dt4h_disease").cfg["compat"] == "words"
    assert nlp("Paciente con miocarditis aguda.")._.dt4h_chars is None


class FirstTwoWindows:
    """A tokenizer that keeps only a text's first two overflowing windows, as tokenizers 0.23.1 and
    0.23.2 do."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, texts, **kwargs):
        enc = self.tokenizer(texts, **kwargs)
        if not kwargs.get("return_overflowing_tokens"):
            return enc
        owners = list(enc["overflow_to_sample_mapping"])
        keep = [w for w, doc in enumerate(owners) if owners[:w].count(doc) < 2]
        return {key: [enc[key][w] for w in keep] for key in enc}


def test_windows_that_stop_early_are_refused_not_read(make_authors_nlp):
    nlp = make_authors_nlp(max_length=40, stride=12)
    tagger = nlp.get_pipe("dt4h_disease").tagger
    assert nlp("Paciente con diabetes.").text  # one window: nothing is missing
    tagger.tokenizer = FirstTwoWindows(tagger.tokenizer)
    with pytest.raises(RuntimeError, match=r"stop at character \d+ of a \d+-character text.*pip install -U tokenizers"):
        nlp(clinical_case(3))
