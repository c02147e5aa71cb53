"""Mention edges (issue 23, 14): punctuation an edge token carries is trimmed as the authors
trim ("Hepatitis C." → "Hepatitis C", "mg/dL." → "mg/dL"), and no mention starts or ends
inside a run of letters/digits that the text does not separate ("18cm" gives no "cm")."""

import numpy
import pytest
import spacy

from dt4h_spacy.batch import doc_mentions
from dt4h_spacy.spans import entity_spans, trim, word_tokens

TEXT = "Paciente con Hepatitis C. Glucosa 110 mg/dL. Masa de 18cm en el hígado (neumonía) y VIH-1."


@pytest.fixture(scope="module")
def doc():
    doc = spacy.blank("es")(TEXT)
    assert "C." in [t.text for t in doc] and "dL." in [t.text for t in doc]  # spaCy keeps the period on them
    assert [t.text for t in doc][11:13] == ["18", "cm"]  # and splits 18cm
    return doc


def entity(doc, words, first, last):
    """The word range from the word whose text is ``first`` to the one whose text is ``last``."""
    texts = [doc[int(i)].text for i in words]
    start = texts.index(first)
    return (start, texts.index(last, start) + 1, "DISEASE")


def mentions(doc, *ranges, confidence=None):
    words = word_tokens(doc)
    entities = [entity(doc, words, first, last) for first, last in ranges]
    scores = numpy.linspace(0.5, 0.9, len(words)) if confidence is None else confidence
    doc.spans["dt4h"] = entity_spans(doc, words, entities, scores)
    return [(m.start, m.end, m.text) for m in doc_mentions("nota", doc)]


def test_edge_punctuation_a_token_carries_is_trimmed_from_the_mention(doc):
    found = mentions(doc, ("Hepatitis", "C."), ("mg", "dL."))
    assert found == [(TEXT.index("Hepatitis"), TEXT.index("Hepatitis C") + 11, "Hepatitis C"),
                     (TEXT.index("mg/dL"), TEXT.index("mg/dL") + 5, "mg/dL")]
    assert [s.text for s in doc.spans["dt4h"]] == ["Hepatitis C.", "mg/dL."]  # the spans stay on tokens
    for start, end, _ in found:
        assert trim(TEXT, start, end) == (start, end)


def test_no_mention_starts_inside_a_run_of_letters_and_digits(doc):
    assert mentions(doc, ("cm", "cm")) == []
    assert mentions(doc, ("cm", "hígado")) == [(TEXT.index("en el"), TEXT.index("hígado") + 6, "en el hígado")]


def test_a_mention_ending_inside_a_run_takes_the_whole_run_scored_by_its_labelled_words(doc):
    words = word_tokens(doc)
    confidence = numpy.full(len(words), 0.2)
    at = [doc[int(i)].text for i in words].index("18")
    confidence[at - 1: at + 1] = (0.6, 0.8)  # "de", "18"; "cm" was labelled O with 0.2
    assert mentions(doc, ("de", "18"), confidence=confidence) == [
        (TEXT.index("de 18cm"), TEXT.index("de 18cm") + 7, "de 18cm")]
    assert doc.spans["dt4h"][0]._.dt4h_score == pytest.approx(0.7)


def test_brackets_and_hyphens_still_separate_words(doc):
    assert mentions(doc, ("neumonía", "neumonía"), ("VIH-1", "VIH-1")) == [
        (TEXT.index("neumonía"), TEXT.index("neumonía") + 8, "neumonía"),
        (TEXT.index("VIH-1"), TEXT.index("VIH-1") + 5, "VIH-1")]


def test_trained_model_mention_loses_the_period_its_token_carries(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint)
    text = "con neumonía. Hoy diabetesC. Fin"
    doc = nlp(text)
    assert [t.text for t in doc][4] == "diabetesC."  # one token: spaCy keeps the period
    assert [s.text for s in doc.spans["dt4h"]] == ["neumonía", "diabetesC."]
    assert [(m.start, m.end, m.text) for m in doc_mentions("nota", doc)] == [
        (4, 12, "neumonía"), (18, 27, "diabetesC")]
