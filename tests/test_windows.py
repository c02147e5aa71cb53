import numpy
import pytest
import spacy
from transformers import AutoTokenizer

from dt4h_spacy.sentences import sentence_starts
from dt4h_spacy.spans import word_tokens
from dt4h_spacy.windows import (
    EncodedWords,
    Window,
    encode_words,
    make_windows,
    plan_batches,
    sentence_cuts,
    window_bounds,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_base_model):
    return AutoTokenizer.from_pretrained(tiny_base_model)


def test_first_subword_of_each_word(tokenizer):
    words = ["Paciente", "con", "miocarditis", "aguda"]
    (enc,) = encode_words(tokenizer, [words])
    full = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    word_ids = full.word_ids()
    expected = [word_ids.index(i) for i in range(len(words))]
    assert enc.first_subword.tolist() == expected
    assert enc.subword_ids.tolist() == full["input_ids"]


def test_empty_documents_encode_to_nothing(tokenizer):
    empty, one = encode_words(tokenizer, [[], ["dolor"]])
    assert empty.n_words == 0 and len(empty.subword_ids) == 0
    assert one.n_words == 1 and one.first_subword.tolist() == [0]


def test_window_bounds_cover_everything_with_the_requested_overlap():
    assert window_bounds(10, 20, 5) == [(0, 10)]
    bounds = window_bounds(100, 40, 10)
    assert bounds == [(0, 40), (30, 70), (60, 100)]
    assert window_bounds(41, 40, 10) == [(0, 40), (1, 41)]


def test_every_word_of_a_long_document_is_owned_once_at_its_most_central_window(tokenizer):
    words = ["insuficiencia", "cardíaca", "y", "dolor", "torácico"] * 1000
    (enc,) = encode_words(tokenizer, [words])
    windows = make_windows([enc], max_length=66, stride=16, cls_id=0, sep_id=2)
    owned = numpy.concatenate([w.words for w in windows])
    assert sorted(owned.tolist()) == list(range(len(words)))
    for w in windows:
        assert len(w.input_ids) <= 66 and w.input_ids[0] == 0 and w.input_ids[-1] == 2
        # the owned words' first subwords sit where the windows say they sit
        start = enc.first_subword[w.words] - w.positions + 1
        assert len(set(start.tolist())) == 1
        assert (w.input_ids[w.positions] == enc.subword_ids[enc.first_subword[w.words]]).all()
    # interior windows keep their owned words away from both cut edges
    for w in windows[1:-1]:
        assert w.positions.min() >= 8 and w.positions.max() <= 66 - 2 - 8


def test_stride_must_leave_room(tokenizer):
    (enc,) = encode_words(tokenizer, [["dolor"]])
    with pytest.raises(ValueError, match="stride"):
        make_windows([enc], max_length=10, stride=8, cls_id=0, sep_id=2)


def test_batches_respect_count_and_subword_budget(tokenizer):
    docs = [["dolor"] * n for n in (3, 50, 7, 20, 1, 33)]
    windows = make_windows(encode_words(tokenizer, docs), 512, 128, 0, 2)
    batches = list(plan_batches(windows, batch_size=2, max_batch_subwords=80))
    assert sorted(i for b in batches for i in b) == list(range(len(windows)))
    for batch in batches:
        lengths = [len(windows[i].input_ids) for i in batch]
        assert len(batch) <= 2
        assert len(batch) == 1 or len(batch) * max(lengths) <= 80
        assert lengths == sorted(lengths, reverse=True)


def sentence_encoding(lengths):
    """A document of sentences of ``lengths`` words, each word one subword of its own."""
    n = sum(lengths)
    starts = numpy.zeros(n, dtype=bool)
    starts[numpy.cumsum([0] + list(lengths[:-1]))] = True
    return EncodedWords(numpy.arange(10, 10 + n, dtype=numpy.int64), numpy.arange(n, dtype=numpy.int64)), starts


def test_sentences_are_packed_whole_and_each_subword_is_read_once():
    rng = numpy.random.default_rng(0)
    lengths = rng.integers(3, 40, size=200).tolist()
    enc, starts = sentence_encoding(lengths)
    windows = make_windows([enc], max_length=66, stride=16, cls_id=0, sep_id=2, sentence_starts=[starts])
    sentence = numpy.cumsum(starts) - 1
    assert sorted(numpy.concatenate([w.words for w in windows]).tolist()) == list(range(len(sentence)))
    assert sum(len(w.input_ids) for w in windows) == len(enc.subword_ids) + 2 * len(windows)
    for k, w in enumerate(windows):
        assert len(w.input_ids) <= 66 and w.input_ids[0] == 0 and w.input_ids[-1] == 2
        assert (w.input_ids[1:-1] == enc.subword_ids[w.words]).all()  # its own words, nothing else
        held = sentence[w.words]
        assert (numpy.bincount(sentence)[numpy.unique(held)] == numpy.bincount(held)[numpy.unique(held)]).all()
        if k + 1 < len(windows):  # greedy: the next sentence did not fit
            assert len(w.input_ids) - 2 + lengths[sentence[windows[k + 1].words[0]]] > 64


def test_an_over_long_sentence_alone_gets_overlapping_windows_and_every_word_a_label():
    lengths = [10, 20, 300, 15, 5]
    enc, starts = sentence_encoding(lengths)
    windows = make_windows([enc], max_length=66, stride=16, cls_id=0, sep_id=2, sentence_starts=[starts])
    assert sorted(numpy.concatenate([w.words for w in windows]).tolist()) == list(range(sum(lengths)))
    long_lo, long_hi = 30, 330
    inside = [w for w in windows if long_lo <= w.words[0] < long_hi]
    assert [len(w.input_ids) for w in windows] == [32, 66, 66, 66, 66, 66, 66, 22]
    for w in inside:  # only the long sentence's subwords, cut into stride-16 overlapping windows
        ids = w.input_ids[1:-1]
        assert ids[0] >= 10 + long_lo and ids[-1] < 10 + long_hi
    assert inside[0].input_ids[1] == 10 + long_lo and inside[-1].input_ids[-2] == 10 + long_hi - 1
    assert (inside[1].input_ids[1] - inside[0].input_ids[1]) == 64 - 16
    # owned words of the cut windows stay away from cut edges (most-central rule)
    for w in inside[1:-1]:
        assert w.positions.min() >= 8 and w.positions.max() <= 64 - 8


def test_a_sentence_opening_with_words_without_subwords_starts_at_its_next_subword():
    enc = EncodedWords(numpy.arange(6, dtype=numpy.int64), numpy.array([0, 2, -1, -1, 3, 5, -1]))
    starts = numpy.array([True, False, True, False, False, True, True])
    assert sentence_cuts(enc, starts).tolist() == [0, 3, 5, 6]
    assert sentence_cuts(enc, None).tolist() == [0, 6]
    with pytest.raises(ValueError, match="sentence starts cover 3 words, the document has 7"):
        sentence_cuts(enc, starts[:3])


def test_sentences_come_from_the_pipeline_when_it_set_them():
    nlp = spacy.blank("es")
    text = "Dolor torácico. Disnea\nsin fiebre; tos seca! ¿Fiebre? no"
    doc = nlp.make_doc(text)
    words = word_tokens(doc)
    opened = [doc[i].text for i in words[sentence_starts(doc, words)]]
    assert opened == ["Dolor", "Disnea", "sin", "¿", "no"]
    nlp.add_pipe("sentencizer", config={"punct_chars": [";"]})
    doc = nlp(text)
    assert [doc[i].text for i in words[sentence_starts(doc, words)]] == ["Dolor", "tos"]


def test_batches_keep_padding_small():
    lengths = [512] * 5 + [500, 300, 290, 40, 38, 12]
    windows = [Window(0, numpy.zeros(n, dtype=numpy.int64), numpy.zeros(0), numpy.zeros(0)) for n in lengths]
    batches = list(plan_batches(windows, batch_size=32, max_batch_subwords=None))
    assert [[lengths[i] for i in b] for b in batches] == [[512] * 5 + [500, 300, 290], [40, 38], [12]]
    for batch in batches:  # at most 1/8 of each forward pass is padding
        assert len(batch) * lengths[batch[0]] - sum(lengths[i] for i in batch) <= len(batch) * lengths[batch[0]] / 8
