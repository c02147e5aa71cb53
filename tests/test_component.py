"""The component against a plain one-doc-at-a-time reference, and against a trained model."""

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Span
from spacy.training import Example
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

LINE_BREAKS = {chr(c) for c in range(0x3000) if len(f"a{chr(c)}b".splitlines()) > 1}

TEXTS = {
    "es": [
        "Paciente con miocarditis aguda y fibrilación auricular.",
        "Antecedentes: diabetes mellitus (tipo 2), hipertensión arterial; dislipemia.\nSin alergias.",
        "Se diagnosticó insuficiencia\r\ncardíaca congestiva  con   disnea de esfuerzo ...",
        "",
        "   \n\t ",
        "«Dolor torácico» - 3 episodios [2019]; ¿infarto? ¡No!",
    ],
    "it": [
        "Paziente di 67 anni con infarto miocardico acuto e scompenso cardiaco.",
        "Si osserva fibrillazione atriale permanente,\n\ninsufficienza mitralica severa.",
        "Anamnesi: diabete mellito; ipertensione arteriosa (2015) e broncopneumopatia cronica!",
    ],
    "ro": [
        "Pacient în vârstă de 61 de ani cu infarct miocardic acut și fibrilație atrială.",
        "Se constată insuficiență cardiacă congestivă\nși hipertensiune arterială.",
        "Antecedente: diabet zaharat tip 2 — boală pulmonară obstructivă cronică (BPOC).",
    ],
}


class AuthorsModule(nn.Module):
    """Built as the authors build theirs: AutoModel encoder, dropout, ModuleDict of heads."""

    def __init__(self, base_model, tasks):
        super().__init__()
        self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(base_model))
        self.dropout = nn.Dropout(0.1)
        hidden = self.encoder.config.hidden_size
        self.classifiers = nn.ModuleDict({task: nn.Linear(hidden, 3) for task in tasks})

    def forward(self, input_ids, attention_mask, task):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.classifiers[task](self.dropout(out.last_hidden_state))


def first_subword_logits(module, tokenizer, words, task):
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        logits = module(enc["input_ids"], enc["attention_mask"], task)[0]
    firsts = {}
    for pos, wid in enumerate(enc.word_ids()):
        if wid is not None and wid not in firsts:
            firsts[wid] = pos
    return logits[[firsts[i] for i in range(len(words))]]


def reference_entities(doc, module, tokenizer, task):
    """The spec, written out plainly for one short doc (no windows, no batching)."""
    words = [t for t in doc if not t.is_space]
    if not words:
        return []
    labels = ["B-DISEASE", "I-DISEASE", "O"]
    tags = [labels[i] for i in first_subword_logits(module, tokenizer, [w.text for w in words], task).argmax(-1)]
    entities, current = [], None
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            if current:
                entities.append(current)
            current = [i, i + 1]
        elif tag.startswith("I-"):
            if current:
                current[1] = i + 1
        elif current:
            entities.append(current)
            current = None
    if current:
        entities.append(current)
    pieces = []
    for start, end in entities:
        lo = start
        for i in range(start + 1, end):
            gap = doc.text[words[i - 1].idx + len(words[i - 1]) : words[i].idx]
            if LINE_BREAKS & set(gap):
                pieces.append((lo, i))
                lo = i
        pieces.append((lo, end))
    spans = []
    for lo, hi in pieces:
        while lo < hi and words[lo].is_punct:
            lo += 1
        while lo < hi and words[hi - 1].is_punct:
            hi -= 1
        if lo < hi:
            spans.append((words[lo].idx, words[hi - 1].idx + len(words[hi - 1]), "DISEASE"))
    return spans


def ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


@pytest.fixture(scope="module")
def authors_module(tiny_base_model, tiny_checkpoint):
    module = AuthorsModule(tiny_base_model, ["disease_es_ner", "disease_it_ner", "disease_ro_ner"])
    module.load_state_dict(torch.load(tiny_checkpoint, weights_only=True))
    return module.eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_base_model):
    return AutoTokenizer.from_pretrained(tiny_base_model)


def test_first_subword_probabilities_match_the_authors_module(make_nlp, authors_module, tokenizer):
    nlp = make_nlp("es")
    tagger = nlp.get_pipe("dt4h_disease").tagger
    words = ["Paciente", "con", "miocarditis", "aguda", "y", "fibrilación", "auricular", "."]
    for task in ("disease_es_ner", "disease_it_ner", "disease_ro_ner"):
        expected = torch.softmax(first_subword_logits(authors_module, tokenizer, words, task), -1).numpy()
        (probs,) = tagger.predict([words], [task])
        numpy.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("lang", ["es", "it", "ro"])
def test_component_equals_reference_batched_and_unbatched(make_nlp, authors_module, tokenizer, lang):
    nlp = make_nlp(lang, batch_size=2)
    task = f"disease_{lang}_ner"
    expected = [reference_entities(nlp.make_doc(t), authors_module, tokenizer, task) for t in TEXTS[lang]]
    assert sum(map(len, expected)) > 0, "the random model should tag something to compare"
    one_by_one = [ents(nlp(t)) for t in TEXTS[lang]]
    batched = [ents(d) for d in nlp.pipe(TEXTS[lang], batch_size=4)]
    assert one_by_one == expected
    assert batched == expected


def test_spans_are_exact_and_never_cross_lines(make_nlp):
    nlp = make_nlp("es")
    for text in TEXTS["es"] + TEXTS["it"] + TEXTS["ro"]:
        doc = nlp(text)
        for e in doc.ents:
            assert e.text == doc.text[e.start_char : e.end_char]
            assert not LINE_BREAKS & set(e.text)
            assert not e[0].is_punct and not e[-1].is_punct
            assert 0.0 < e._.dt4h_score <= 1.0


def test_entity_scores_are_mean_word_probabilities(make_nlp):
    nlp = make_nlp("es")
    doc = nlp(next(t for t in TEXTS["es"] if nlp(t).ents))
    component = nlp.get_pipe("dt4h_disease")
    words = [t for t in doc if not t.is_space]
    (probs,) = component.tagger.predict([[w.text for w in words]], ["disease_es_ner"])
    index = {w.i: k for k, w in enumerate(words)}
    for e in doc.ents:
        rows = [index[t.i] for t in e]
        assert e._.dt4h_score == pytest.approx(float(probs[rows].max(axis=1).mean()), rel=1e-5)


def test_existing_entities_are_kept_unless_overwrite(make_nlp):
    nlp = make_nlp("es")
    text = next(t for t in TEXTS["es"] if nlp(t).ents)
    start, end, _ = ents(nlp(text))[0]
    for overwrite in (False, True):
        nlp = make_nlp("es", overwrite_ents=overwrite)
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(start, end, label="GOLD")]
        doc = nlp.get_pipe("dt4h_disease")(doc)
        labels = {(e.start_char, e.end_char): e.label_ for e in doc.ents}
        assert labels[(start, end)] == ("DISEASE" if overwrite else "GOLD")


def test_head_follows_doc_language_and_dt4h_lang(make_nlp):
    nlp = make_nlp("xx", unsupported="raise")
    text = TEXTS["ro"][0]
    with pytest.raises(ValueError, match="no head for language 'xx'.*'es', 'it', 'ro'"):
        nlp(text)
    for lang in ("es", "it", "ro"):
        doc = nlp.make_doc(text)
        doc._.dt4h_lang = lang
        assert ents(nlp.get_pipe("dt4h_disease")(doc)) == ents(make_nlp("xx", tasks={"xx": f"disease_{lang}_ner"})(text))


def test_five_thousand_word_document_gets_a_label_for_every_word(make_nlp):
    nlp = make_nlp("es", max_length=64, stride=16)
    words = ("insuficiencia cardíaca congestiva con disnea y dolor torácico " * 625).split()
    component = nlp.get_pipe("dt4h_disease")
    (probs,) = component.tagger.predict([words], ["disease_es_ner"])
    assert probs.shape == (5000, 3)
    # the "no subword" default is an exact one-hot O; a model's softmax never is
    assert (probs.max(axis=1) < 1.0).all()
    doc = nlp(" ".join(words))
    assert len(doc) == 5000 and doc.ents


def test_nlp_evaluate_reports_spacy_entity_scores(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint)
    doc = nlp.make_doc("el paciente presenta neumonía y dolor hoy")
    gold = Example.from_dict(doc, {"entities": [(21, 29, "DISEASE")]})
    scores = nlp.evaluate([gold])
    assert scores["ents_p"] == scores["ents_r"] == scores["ents_f"] == 1.0
    assert scores["ents_per_type"]["DISEASE"]["f"] == 1.0


# -- a trained tiny model: proof that routing, alignment and decoding are right ----------

TRAINED_CASES = {
    "es": [
        ("hoy la paciente presenta neumonía con dolor", ["neumonía"]),
        ("miocarditis aguda y diabetes", ["miocarditis aguda", "diabetes"]),
        ("el paciente presenta scompenso y infarct hoy", []),
    ],
    "it": [
        ("oggi il paziente presenta polmonite acuta", ["polmonite acuta"]),
        ("ipertensione e scompenso con dolore", ["ipertensione", "scompenso"]),
        ("il paziente presenta diabetes oggi", []),
    ],
    "ro": [
        ("azi pacientul prezintă pneumonie cu durere", ["pneumonie"]),
        ("infarct acut și diabet", ["infarct acut", "diabet"]),
        ("pacientul prezintă miocarditis azi", []),
    ],
}


@pytest.mark.parametrize("lang", ["es", "it", "ro"])
def test_trained_model_tags_its_own_diseases_on_unseen_sentences(make_nlp, trained_checkpoint, lang):
    nlp = make_nlp(lang, checkpoint=trained_checkpoint)
    for text, expected in TRAINED_CASES[lang]:
        doc = nlp(text)
        assert [e.text for e in doc.ents] == expected, text
        for e in doc.ents:
            assert e.start_char == text.index(e.text)


def test_trained_model_routes_each_doc_to_its_language_head(make_nlp, trained_checkpoint):
    nlp = make_nlp("xx", checkpoint=trained_checkpoint)
    text = "con neumonía con scompenso cu infarct"
    docs = []
    for lang in ("es", "it", "ro", "es"):
        doc = nlp.make_doc(text)
        doc._.dt4h_lang = lang
        docs.append(doc)
    found = [[e.text for e in d.ents] for d in nlp.get_pipe("dt4h_disease").pipe(docs)]
    assert found == [["neumonía"], ["scompenso"], ["infarct"], ["neumonía"]]


def test_line_break_inside_a_trained_entity_splits_it(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint)
    doc = nlp("el paciente presenta miocarditis\naguda hoy")
    assert [e.text for e in doc.ents] == ["miocarditis", "aguda"]


def test_span_extension_is_registered():
    assert Span.has_extension("dt4h_score")
    assert spacy.tokens.Doc.has_extension("dt4h_lang")


def test_threshold_drops_spans_scored_below_it(make_nlp):
    text = "Paciente con miocarditis aguda y fibrilación auricular.\nDiabetes mellitus tipo 2 e hipertensión."
    scores = sorted(e._.dt4h_score for e in make_nlp("es")(text).ents)
    assert len(scores) >= 2, "the tiny random model tags several spans here, so the threshold is tested"
    threshold = scores[len(scores) // 2]
    kept = make_nlp("es", threshold=threshold)(text).ents
    assert sorted(e._.dt4h_score for e in kept) == pytest.approx([s for s in scores if s >= threshold])
    assert 0 < len(kept) < len(scores)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_zero_to_one_is_refused_at_add_pipe(make_nlp, threshold):
    with pytest.raises(ValueError, match=f"threshold must be between 0 and 1 .*got {threshold}"):
        make_nlp("es", threshold=threshold)
