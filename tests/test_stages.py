"""The tagger's named stages (dt4h_spacy.stages) and the array steps of the lean CPU path."""

import pickle
import re

import numpy
import pytest
import spacy
from spacy.tokens import Doc

from dt4h_spacy import stages
from dt4h_spacy.decoding import decode_bio
from dt4h_spacy.labels import BEGIN, INSIDE, LabelScheme
from dt4h_spacy.spans import LINE_BREAK, entity_bounds, line_break_before, make_spans, word_tokens
from dt4h_spacy.testing import clinical_case


def test_stages_run_apart_and_pickled_give_what_pipe_gives(make_nlp, trained_checkpoint):
    """Each stage's result crosses a process boundary (pickle) and the chain ends in the spans
    ``nlp.pipe`` writes: same tokens, labels and scores, bit for bit."""
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=40, stride=8, batch_size=3)
    texts = [clinical_case(seed, paragraphs=5) for seed in range(4)] + ["", "Paciente con diabetes\naguda."]
    expected = [[(s.start, s.end, s.label_, s._.dt4h_score) for s in doc.spans["dt4h"]] for doc in nlp.pipe(texts)]
    tagger = nlp.get_pipe("dt4h_disease").tagger
    docs = [nlp.make_doc(text) for text in texts]
    heads = [("disease_es_ner",)] * len(docs)
    prepared = pickle.loads(pickle.dumps(stages.preprocess(docs, heads, tagger.tokenizer, 40, 8)))
    probs = stages.outside_probs([d.n_words for d in prepared.docs], heads, tagger.schemes)
    tagger.ready()
    for members, batch in stages.batches(prepared.windows, heads, tagger):
        out = pickle.loads(pickle.dumps(stages.forward(tagger, batch)))
        stages.scatter(probs, members, batch, out)
    got = []
    for doc, read, doc_probs in zip(docs, prepared.docs, probs):
        entities = pickle.loads(pickle.dumps(stages.postprocess(read, doc_probs, tagger.schemes)))
        spans = make_spans(doc, entities.starts, entities.ends, entities.labels, entities.scores)
        got.append([(s.start, s.end, s.label_, s._.dt4h_score) for s in spans])
    assert got == expected
    assert sum(map(len, got)) >= 10, "the trained model should find diseases"
    assert len(prepared.windows) > 2 * len(texts), "the texts must need several windows"


def reference_decode(label_ids, scheme, orphan_i="ignore"):
    """The authors' loop, word by word, as the package decoded before it went to arrays."""
    entities, open_type, start, end = [], "", -1, -1
    for i, label in enumerate(label_ids.tolist()):
        kind, etype = scheme.kinds[label], scheme.types[label]
        if kind == 0:
            if open_type:
                entities.append((start, end, open_type))
            open_type = ""
        elif kind == INSIDE and open_type == etype:
            end = i + 1
        elif kind == BEGIN or (kind == INSIDE and orphan_i == "begin"):
            if open_type:
                entities.append((start, end, open_type))
            open_type, start, end = etype, i, i + 1
    if open_type:
        entities.append((start, end, open_type))
    return entities


@pytest.mark.parametrize("labels", [
    ("B-DISEASE", "I-DISEASE", "O"),
    ("B-DISEASE", "B-SYMPTOM", "I-DISEASE", "I-SYMPTOM", "O"),
    ("O", "I-A", "B-A", "B-B", "I-B", "I-C", "B-C"),
])
@pytest.mark.parametrize("orphan_i", ["ignore", "begin"])
def test_array_decoding_equals_the_word_by_word_loop(labels, orphan_i):
    scheme = LabelScheme(labels)
    rng = numpy.random.default_rng(len(labels))
    for _ in range(2000):
        label_ids = rng.integers(0, len(labels), rng.integers(0, 25))
        assert decode_bio(label_ids, scheme, orphan_i) == reference_decode(label_ids, scheme, orphan_i), label_ids


def text_line_breaks(doc, words):
    """Line breaks searched in ``doc.text``, as the package found them before."""
    breaks = numpy.array([m.start() for m in LINE_BREAK.finditer(doc.text)], dtype=numpy.int64)
    if not len(words) or not len(breaks):
        return numpy.zeros(len(words), dtype=bool)
    starts = numpy.array([doc[i].idx for i in words])
    prev_ends = numpy.r_[0, [doc[i].idx + len(doc[i]) for i in words[:-1]]]
    return numpy.searchsorted(breaks, starts) > numpy.searchsorted(breaks, prev_ends)


def test_line_breaks_from_whitespace_tokens_equal_a_search_of_the_text():
    nlp = spacy.blank("es")
    texts = [clinical_case(seed, paragraphs=4) for seed in range(5)] + [
        "", "\n", "\nDolor", "Dolor\r\ntos  \u2028fiebre\x0cdisnea \x85 ok\n\n", "a \n b\u2029c\x1cd", "sin\vsalto",
    ]
    docs = [nlp.make_doc(text) for text in texts]
    docs.append(Doc(nlp.vocab, words=["Dolor", "\n", "tos", " ", "fiebre", "\r\n"], spaces=[True, False, True, False,
                                                                                             False, False]))
    for doc in docs:
        words = word_tokens(doc)
        assert line_break_before(doc, words).tolist() == text_line_breaks(doc, words).tolist(), doc.text
    assert sum(line_break_before(d, word_tokens(d)).sum() for d in docs) > 20


def test_entity_pieces_are_cut_at_breaks_trimmed_and_scored_as_numpy_means():
    confidence = numpy.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], dtype=numpy.float32)
    breaks = numpy.array([0, 0, 1, 0, 0, 0, 1], dtype=bool)
    punct = numpy.array([1, 0, 0, 0, 1, 0, 1], dtype=bool)
    lo, hi, labels, scores = entity_bounds([(0, 5, "D"), (5, 7, "S")], confidence, breaks, punct)
    # (0, 5): ". w | w w ." -> [1, 2) and [2, 4); (5, 7): "w | ." -> [5, 6), the "." piece is dropped
    assert list(zip(lo.tolist(), hi.tolist(), labels)) == [(1, 2, "D"), (2, 4, "D"), (5, 6, "S")]
    assert scores.tolist() == [confidence[a:b].mean() for a, b in zip(lo, hi)]
    rng = numpy.random.default_rng(0)
    values = rng.random(400).astype(numpy.float32)
    entities = [(a, a + n, "D") for a, n in zip(range(0, 400, 20), range(1, 21))]
    lo, hi, _, scores = entity_bounds(entities, values, numpy.zeros(400, bool), numpy.zeros(400, bool))
    assert scores.tolist() == [float(values[a:b].mean()) for a, b, _ in entities]  # bit-equal, not approx


def test_words_texts_and_sentences_come_from_the_doc_arrays():
    nlp = spacy.blank("es")
    doc = nlp.make_doc("Dolor torácico.  Disnea\nsin fiebre; (tos) seca!")
    read = stages.read_words(doc, ("disease_es_ner",))
    assert read.texts == [t.text for t in doc if not t.is_space]
    assert [read.texts[i] for i in numpy.flatnonzero(read.starts)] == ["Dolor", "Disnea", "sin"]
    assert [read.texts[i] for i in numpy.flatnonzero(read.punct)] == [".", ";", "(", ")", "!"]
    assert not re.search(r"\s", "".join(read.texts))
