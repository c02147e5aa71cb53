"""The DT4H family: multilabel heads serving every language, single-task Hugging Face
checkpoints, every span in ``doc.spans`` and a non-overlapping ``doc.ents``.

The multilabel fixture is the trained tiny model with its heads renamed: ``disease`` tags
Spanish diseases, ``symptom`` Italian ones, ``procedure`` Romanian ones, whatever the text's
language, so each head's spans are known exactly.
"""

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Span
from transformers import AutoModelForTokenClassification, AutoTokenizer

from dt4h_spacy.decoding import decode_bio
from dt4h_spacy.errors import CheckpointError
from dt4h_spacy.labels import LabelScheme
from dt4h_spacy.model import load_network
from dt4h_spacy.spans import entity_spans, non_overlapping, word_texts, word_tokens

# Clinical-case-like passages: sentences, punctuation, a paragraph break, and words of the
# other languages' heads, so that every head has something to tag in every language.
TEXTS = {
    "es": "El paciente presenta miocarditis aguda y dolor hoy.\n\nHoy diabetes, polmonite e infarct.",
    "it": "Il paziente presenta scompenso e ipertensione acuta oggi.\nDolore con polmonite (e diabet).",
    "ro": "Pacientul prezintă infarct acut și diabet azi.\n\nDurere cu neumonía, la pneumonie.",
}
EXPECTED = {
    "es": [("miocarditis aguda", "DISEASE"), ("aguda", "PROCEDURE"), ("diabetes", "DISEASE"),
           ("polmonite", "SYMPTOM"), ("infarct", "PROCEDURE")],
    "it": [("scompenso", "SYMPTOM"), ("ipertensione acuta", "SYMPTOM"), ("polmonite", "SYMPTOM"),
           ("diabet", "PROCEDURE")],
    "ro": [("infarct acut", "PROCEDURE"), ("acut", "SYMPTOM"), ("diabet", "PROCEDURE"), ("neumonía", "DISEASE"),
           ("pneumonie", "PROCEDURE")],
}
HEADS = ("disease", "procedure", "symptom")


def triples(spans):
    return [(s.start_char, s.end_char, s.label_) for s in spans]


def plain_spans(checkpoint, base_model, doc, task):
    """One head at a time, the plain way: one forward of the whole text, first-subword argmax."""
    model, tokenizer, schemes = load_network(checkpoint, base_model)
    words = word_tokens(doc)
    enc = tokenizer(word_texts(doc, words), is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(enc["input_ids"], enc["attention_mask"], task)[0], dim=-1).numpy()
    firsts = {}
    for pos, wid in enumerate(enc.word_ids()):
        firsts.setdefault(wid, pos)
    word_probs = probs[[firsts[i] for i in range(len(words))]]
    label_ids = word_probs.argmax(axis=1)
    confidence = word_probs[numpy.arange(len(label_ids)), label_ids]
    return entity_spans(doc, words, decode_bio(label_ids, schemes[task]), confidence)


@pytest.mark.parametrize("lang", ["es", "it", "ro"])
def test_multilabel_heads_serve_every_language_and_equal_one_head_at_a_time(
    make_nlp, multilabel_checkpoint, tiny_base_model, lang
):
    nlp = make_nlp(lang, checkpoint=multilabel_checkpoint)
    doc = nlp(TEXTS[lang])
    spans = list(doc.spans["dt4h"])
    assert sorted((s.text, s.label_) for s in spans) == sorted(EXPECTED[lang])
    reference = [s for task in HEADS for s in plain_spans(multilabel_checkpoint, tiny_base_model, doc, task)]
    assert sorted(triples(spans)) == sorted(triples(reference))
    scores = {(s.start_char, s.end_char, s.label_): s._.dt4h_score for s in reference}
    for span in spans:
        assert span._.dt4h_score == pytest.approx(scores[(span.start_char, span.end_char, span.label_)], abs=1e-5)
    assert triples(doc.ents) == triples(non_overlapping(spans))
    taken = [i for e in doc.ents for i in range(e.start, e.end)]
    assert len(taken) == len(set(taken))
    assert len(spans) - len(doc.ents) == {"es": 1, "it": 0, "ro": 1}[lang]  # "aguda"/"acut" lose to longer spans
    component = nlp.get_pipe("dt4h_disease")
    assert component.labels == ("DISEASE", "PROCEDURE", "SYMPTOM")
    assert component.every_language and component.languages == {}


def test_all_heads_read_one_encoder_pass_per_window(make_nlp, multilabel_checkpoint, trained_checkpoint):
    text = " ".join([TEXTS["es"].replace("\n", " ")] * 6)
    calls = {}
    for name, checkpoint in (("multilabel", multilabel_checkpoint), ("one head", trained_checkpoint)):
        nlp = make_nlp("es", checkpoint=checkpoint, max_length=24, stride=8, batch_size=1)
        model = nlp.get_pipe("dt4h_disease").tagger.model
        encode = model.encode
        calls[name] = 0

        def counted(*args, _encode=encode, _name=name, **kwargs):
            calls[_name] += 1
            return _encode(*args, **kwargs)

        model.encode = counted
        nlp(text)
    assert calls["one head"] > 3  # several windows, one pass each
    assert calls["multilabel"] == calls["one head"]


def test_several_windows_give_each_heads_own_spans(make_nlp, multilabel_checkpoint):
    """A long passage, cut into windows: the spans of all heads at once are the union of
    the spans of each head selected alone (the `heads` config)."""
    text = "\n\n".join(TEXTS.values()) * 3
    settings = {"checkpoint": multilabel_checkpoint, "max_length": 24, "stride": 8}
    def spans(**config):
        doc = make_nlp("xx", **settings, **config)(text)
        return triples(doc.spans["dt4h"])

    together = spans()
    alone = [t for head in HEADS for t in spans(heads=[head])]
    assert sorted(together) == sorted(alone)
    assert {label for _, _, label in together} == {"DISEASE", "SYMPTOM", "PROCEDURE"}


def test_heads_config_selects_a_subset(make_nlp, multilabel_checkpoint):
    nlp = make_nlp("it", checkpoint=multilabel_checkpoint, heads=["symptom"])
    doc = nlp(TEXTS["it"])
    assert [(s.text, s.label_) for s in doc.spans["dt4h"]] == [
        ("scompenso", "SYMPTOM"), ("ipertensione acuta", "SYMPTOM"), ("polmonite", "SYMPTOM")]
    assert nlp.get_pipe("dt4h_disease").labels == ("SYMPTOM",)


def test_unknown_head_in_config_names_the_heads(make_nlp, multilabel_checkpoint):
    nlp = make_nlp("es", checkpoint=multilabel_checkpoint, heads=["sign"])
    with pytest.raises(CheckpointError, match=r"heads \['sign'\].*\['disease', 'procedure', 'symptom'\].*`heads`"):
        nlp("texto")


def test_per_language_checkpoint_spans_equal_the_new_ents(make_nlp, trained_checkpoint):
    for lang, text in TEXTS.items():
        doc = make_nlp(lang, checkpoint=trained_checkpoint)(text)
        assert doc.ents and triples(doc.spans["dt4h"]) == triples(doc.ents)
        assert [s._.dt4h_score for s in doc.spans["dt4h"]] == [e._.dt4h_score for e in doc.ents]


def test_ents_rule_longer_first_then_higher_score_and_existing_ents_are_kept(make_nlp, multilabel_checkpoint):
    doc = spacy.blank("es")("dolor torácico opresivo hoy")
    spans = [Span(doc, 0, 2, "SYMPTOM"), Span(doc, 1, 2, "PROCEDURE"), Span(doc, 0, 2, "DISEASE"), Span(doc, 3, 4, "X")]
    for span, score in zip(spans, (0.6, 0.99, 0.7, 0.5)):
        span._.dt4h_score = score
    assert [s._.dt4h_score for s in spans] == [0.6, 0.99, 0.7, 0.5]  # same offsets, own score per label
    assert triples(non_overlapping(spans)) == [(0, 14, "DISEASE"), (24, 27, "X")]
    longer = Span(doc, 1, 4, "PROCEDURE")
    longer._.dt4h_score = 0.1
    assert triples(non_overlapping([*spans, longer])) == [(6, 27, "PROCEDURE")]

    text = TEXTS["es"]
    for overwrite, expected in ((False, ("miocarditis", "GOLD")), (True, ("miocarditis aguda", "DISEASE"))):
        nlp = make_nlp("es", checkpoint=multilabel_checkpoint, overwrite_ents=overwrite)
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(text.index("miocarditis"), text.index("miocarditis") + 11, "GOLD")]
        doc = nlp(doc)
        assert (doc.ents[0].text, doc.ents[0].label_) == expected
        assert len(doc.spans["dt4h"]) == len(EXPECTED["es"])


def test_stl_checkpoint_loads_with_the_same_call_and_tags_what_its_logits_say(make_nlp, stl_checkpoint, trained_checkpoint):
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_disease", config={"checkpoint": str(stl_checkpoint)})  # base_model: the checkpoint itself
    component = nlp.get_pipe("dt4h_disease")
    doc = nlp(TEXTS["es"])
    assert [(e.text, e.label_) for e in doc.ents] == [("miocarditis aguda", "DISEASE"), ("diabetes", "DISEASE")]
    assert component.tagger.schemes == {"disease": LabelScheme(("O", "B-DISEASE", "I-DISEASE"))}
    assert component.every_language

    # its own logits, read by transformers' own class: first subword's argmax, id2label's order
    hf = AutoModelForTokenClassification.from_pretrained(stl_checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(stl_checkpoint)
    words = word_tokens(doc)
    enc = tokenizer(word_texts(doc, words), is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**enc).logits[0]
    firsts = {}
    for pos, wid in enumerate(enc.word_ids()):
        firsts.setdefault(wid, pos)
    labels = [hf.config.id2label[int(logits[firsts[i]].argmax())] for i in range(len(words))]
    tagged = [doc[int(words[i])].text for i, label in enumerate(labels) if label != "O"]
    assert tagged == ["miocarditis", "aguda", "diabetes"]
    # the same weights as the Spanish head of the .pt, so the same entities on every language's text
    pt = make_nlp("xx", checkpoint=trained_checkpoint, tasks={"xx": "disease_es_ner"})
    for text in TEXTS.values():
        assert triples(nlp(text).ents) == triples(pt(text).ents)


def test_stl_checkpoint_whose_config_does_not_fit_its_classifier_is_refused(tmp_path, stl_checkpoint):
    import json
    import shutil

    broken = shutil.copytree(stl_checkpoint, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["id2label"] = {"0": "O", "1": "B-DISEASE"}
    (broken / "config.json").write_text(json.dumps(config))
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_disease", config={"checkpoint": str(broken)})
    with pytest.raises(CheckpointError, match=r"classifier predicts 3 labels but config.json lists 2"):
        nlp.initialize()


@pytest.mark.parametrize("kind", ["multilabel", "stl"])
def test_to_disk_and_back_keeps_every_span(tmp_path, make_nlp, multilabel_checkpoint, stl_checkpoint, kind):
    if kind == "multilabel":
        nlp = make_nlp("xx", checkpoint=multilabel_checkpoint, spans_key="family")
    else:
        nlp = spacy.blank("xx")
        nlp.add_pipe("dt4h_disease", config={"checkpoint": str(stl_checkpoint), "spans_key": "family"})
    texts = list(TEXTS.values())
    expected = [[(t, s._.dt4h_score) for t, s in zip(triples(d.spans["family"]), d.spans["family"])]
                for d in nlp.pipe(texts)]
    assert any(expected)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    got = [[(t, s._.dt4h_score) for t, s in zip(triples(d.spans["family"]), d.spans["family"])]
           for d in loaded.pipe(texts)]
    assert got == expected
    assert loaded.get_pipe("dt4h_disease").every_language


def test_two_checkpoints_side_by_side(make_nlp, trained_checkpoint, stl_checkpoint, multilabel_checkpoint, tiny_base_model):
    """The disease .pt and the multilabel file as two components with their own spans keys."""
    nlp = spacy.blank("it")
    nlp.add_pipe("dt4h_disease", name="disease", config={
        "checkpoint": str(trained_checkpoint), "base_model": str(tiny_base_model), "spans_key": "disease"})
    nlp.add_pipe("dt4h_disease", name="family", config={
        "checkpoint": str(multilabel_checkpoint), "base_model": str(tiny_base_model), "spans_key": "family",
        "heads": ["procedure"]})
    doc = nlp(TEXTS["it"])
    assert [(s.text, s.label_) for s in doc.spans["disease"]] == [
        ("scompenso", "DISEASE"), ("ipertensione acuta", "DISEASE"), ("polmonite", "DISEASE")]
    assert [(s.text, s.label_) for s in doc.spans["family"]] == [("diabet", "PROCEDURE")]
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("scompenso", "DISEASE"), ("ipertensione acuta", "DISEASE"), ("polmonite", "DISEASE"), ("diabet", "PROCEDURE")]


def test_authors_reading_runs_every_head_too(make_nlp, multilabel_checkpoint):
    nlp = make_nlp("es", checkpoint=multilabel_checkpoint, compat="authors")
    doc = nlp(TEXTS["es"])
    found = sorted((doc.text[start:end], label) for start, end, label, _ in doc._.dt4h_chars)
    assert found == sorted(EXPECTED["es"])
    assert sorted((s.text, s.label_) for s in doc.spans["dt4h"]) == sorted(EXPECTED["es"])
    assert triples(doc.ents) == triples(non_overlapping(doc.spans["dt4h"]))


def test_visualize_spans_draws_every_span_overlaps_stacked(tmp_path, multilabel_checkpoint, tiny_base_model):
    from typer.testing import CliRunner

    from dt4h_spacy.cli import app

    (tmp_path / "nota.txt").write_text(TEXTS["es"], encoding="utf-8")
    args = ["visualize", str(tmp_path / "nota.txt"), "", "--lang", "es", "--checkpoint", str(multilabel_checkpoint),
            "--base-model", str(tiny_base_model)]
    pages = {}
    for flag in ("", "--spans"):
        args[2] = str(tmp_path / f"page{flag}.html")
        result = CliRunner().invoke(app, args + ([flag] if flag else []))
        assert result.exit_code == 0, result.output
        pages[flag] = (tmp_path / f"page{flag}.html").read_text(encoding="utf-8")
    assert "(5 entities)" in pages["--spans"] and "(4 entities)" in pages[""]
    assert 'class="spans"' in pages["--spans"] and 'class="spans"' not in pages[""]
    assert pages["--spans"].count("PROCEDURE") == 2 and pages[""].count("PROCEDURE") == 1  # "aguda" stacked


def test_readme_example_of_two_checkpoints_runs(trained_checkpoint, multilabel_checkpoint, tiny_base_model):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("#### Several checkpoints in one pipeline"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]
    for placeholder, path in (("path/to/DT4H_XLM-R_mtl_es-it-ro_disease.pt", trained_checkpoint),
                              ("path/to/DT4H_XLM-R_mtl_multilingual_multilabel.pt", multilabel_checkpoint),
                              ("path/to/xlm-roberta-base", tiny_base_model)):
        assert placeholder in code
        code = code.replace(placeholder, str(path))
    namespace = {}
    exec(code.replace("print(", "found = ("), namespace)  # noqa: S102 - the README's own example
    doc = namespace["doc"]
    assert [(s.text, s.label_) for s in doc.spans["disease"]] == [("miocarditis aguda", "DISEASE")]
    assert [(s.text, s.label_) for s in doc.spans["symptom"]] == []
    assert [(e.text, e.label_) for e in doc.ents] == [("miocarditis aguda", "DISEASE")]
    doc = namespace["nlp"]("El paciente presenta miocarditis aguda con polmonite hoy.")  # the tiny symptom head's word
    assert [(s.text, s.label_) for s in doc.spans["symptom"]] == [("polmonite", "SYMPTOM")]
    assert [(e.text, e.label_) for e in doc.ents] == [("miocarditis aguda", "DISEASE"), ("polmonite", "SYMPTOM")]
