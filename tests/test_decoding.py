import numpy
import pytest

from dt4h_spacy.decoding import decode_bio
from dt4h_spacy.labels import LabelScheme, default_labels, entity_from_task, lang_from_task, tasks_by_lang

DISEASE = LabelScheme(default_labels("disease_es_ner"))
TWO_TYPES = LabelScheme(("B-DISEASE", "B-SYMPTOM", "I-DISEASE", "I-SYMPTOM", "O"))


def ids(scheme: LabelScheme, tags: str) -> numpy.ndarray:
    return numpy.array([scheme.labels.index(t) for t in tags.split()])


def test_label_ids_are_sorted_strings():
    assert default_labels("disease_es_ner") == ("B-DISEASE", "I-DISEASE", "O")
    assert default_labels("symptom_nl_ner") == ("B-SYMPTOM", "I-SYMPTOM", "O")


@pytest.mark.parametrize(
    "task,entity,lang",
    [
        ("disease_es_ner", "DISEASE", "es"),
        ("procedure_ro_ner", "PROCEDURE", "ro"),
        ("symptom", "SYMPTOM", None),
        ("disease_ner", "DISEASE", None),
    ],
)
def test_task_names(task, entity, lang):
    assert entity_from_task(task) == entity
    assert lang_from_task(task) == lang


def test_tasks_by_lang_skips_unnamed_and_rejects_duplicates():
    assert tasks_by_lang(["disease_es_ner", "disease", "disease_it_ner"]) == {
        "es": "disease_es_ner",
        "it": "disease_it_ner",
    }
    with pytest.raises(ValueError, match="both serve language 'es'"):
        tasks_by_lang(["disease_es_ner", "symptom_es_ner"])


@pytest.mark.parametrize(
    "tags,expected",
    [
        ("O O O", []),
        ("B-DISEASE I-DISEASE O", [(0, 2, "DISEASE")]),
        ("B-DISEASE B-DISEASE I-DISEASE", [(0, 1, "DISEASE"), (1, 3, "DISEASE")]),
        ("I-DISEASE I-DISEASE O B-DISEASE", [(3, 4, "DISEASE")]),
        ("B-DISEASE O I-DISEASE", [(0, 1, "DISEASE")]),
        ("O B-DISEASE I-DISEASE I-DISEASE", [(1, 4, "DISEASE")]),
    ],
)
def test_authors_reading_ignores_orphan_inside(tags, expected):
    assert decode_bio(ids(DISEASE, tags), DISEASE) == expected


@pytest.mark.parametrize(
    "tags,expected",
    [
        ("I-DISEASE I-DISEASE O B-DISEASE", [(0, 2, "DISEASE"), (3, 4, "DISEASE")]),
        ("B-DISEASE O I-DISEASE", [(0, 1, "DISEASE"), (2, 3, "DISEASE")]),
        ("B-DISEASE I-DISEASE", [(0, 2, "DISEASE")]),
    ],
)
def test_begin_reading_opens_on_orphan_inside(tags, expected):
    assert decode_bio(ids(DISEASE, tags), DISEASE, orphan_i="begin") == expected


def test_other_type_inside_is_skipped_without_closing():
    # The authors' loop leaves the open entity untouched on a foreign I- and lets a later
    # I- of the open type extend across it.
    tags = ids(TWO_TYPES, "B-DISEASE I-SYMPTOM I-DISEASE O B-SYMPTOM I-SYMPTOM")
    assert decode_bio(tags, TWO_TYPES) == [(0, 3, "DISEASE"), (4, 6, "SYMPTOM")]
    assert decode_bio(tags, TWO_TYPES, orphan_i="begin") == [
        (0, 1, "DISEASE"),
        (1, 2, "SYMPTOM"),
        (2, 3, "DISEASE"),
        (4, 6, "SYMPTOM"),
    ]


def test_unknown_mode_and_non_bio_labels_are_rejected():
    with pytest.raises(ValueError, match="orphan_i"):
        decode_bio(ids(DISEASE, "O"), DISEASE, orphan_i="conll")
    with pytest.raises(ValueError, match="not BIO"):
        LabelScheme(("DISEASE", "O", "I-DISEASE"))
