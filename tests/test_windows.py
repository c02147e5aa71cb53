import numpy
import pytest
from transformers import AutoTokenizer

from dt4h_spacy.windows import encode_words, make_windows, plan_batches, window_bounds


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
