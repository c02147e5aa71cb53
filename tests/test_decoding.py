import numpy
import pytest

from dt4h_spacy.decoding import decode_bio
from dt4h_spacy.labels import HeadRoutes, LabelScheme, default_labels, entity_from_task, lang_from_task, tasks_by_lang

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


def test_tasks_by_lang_skips_unnamed_and_rejects_two_heads_of_one_type():
    assert tasks_by_lang(["disease_es_ner", "disease", "disease_it_ner", "symptom_es_ner"]) == {
        "es": ("disease_es_ner", "symptom_es_ner"),
        "it": ("disease_it_ner",),
    }
    with pytest.raises(ValueError, match="both tag DISEASE in language 'es'"):
        tasks_by_lang(["disease_es_ner", "Disease_es_ner"])


def test_head_routes_serve_named_languages_and_every_language_with_unnamed_heads():
    routes = HeadRoutes.for_heads(["disease_es_ner", "symptom", "procedure"])
    assert routes.heads_for("es") == ("disease_es_ner", "procedure", "symptom")
    assert routes.heads_for("en") == ("procedure", "symptom") and routes.every_language
    assert HeadRoutes.for_heads(["disease_es_ner", "symptom"], heads=["symptom"]).heads_for("es") == ("symptom",)
    explicit = HeadRoutes.for_heads(["disease_es_ner", "symptom"], tasks={"xx": ["disease_es_ner", "symptom"]})
    assert explicit.heads_for("xx") == ("disease_es_ner", "symptom") and explicit.heads_for("es") == ()
    assert HeadRoutes.from_json(routes.to_json()) == routes
    assert HeadRoutes.from_json({"es": "disease_es_ner"}) == HeadRoutes({"es": ("disease_es_ner",)})  # saved before
    with pytest.raises(ValueError, match=r"heads \['sign'\]"):
        HeadRoutes.for_heads(["symptom"], heads=["sign"])


def test_a_czech_head_reads_documents_spacy_and_the_language_detector_call_cs():
    routes = HeadRoutes.for_heads(["disease_cz_ner", "disease_es_ner"])
    assert routes.heads_for("cs") == routes.heads_for("cz") == ("disease_cz_ner",)
    assert routes.heads_for("ca") == ()


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
