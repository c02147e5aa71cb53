"""dt4h_spacy.io.records: each row of a mention reads back as the mention it was written from."""

import json

import pytest
import spacy

from dt4h_spacy import extensions  # noqa: F401 - registers span._.dt4h_score
from dt4h_spacy.errors import RecordError
from dt4h_spacy.io.records import (
    FIELDS,
    QUALIFIERS,
    SCHEMA,
    Mention,
    mention_record,
    mention_values,
    record_mention,
    span_mention,
    tsv_header,
    tsv_row,
    values_mention,
)
from dt4h_spacy.tsv import format_mentions, parse_mentions

QUALIFIED = Mention("doc1", "DISEASE", 3, 11, 'dia\t"betes"', 0.87654, negated=True, uncertain=False,
                    metadata={"patient_id": 7})


def test_compact_values_round_trip_every_field_through_json():
    again = values_mention(json.loads(json.dumps(mention_values(QUALIFIED))))
    assert again.values == QUALIFIED.values
    nameless = values_mention(json.loads(json.dumps(mention_values(QUALIFIED, with_name=False))), "doc1")
    assert nameless.values == QUALIFIED.values


def test_table_record_round_trips_and_has_the_schema_columns():
    record = mention_record(QUALIFIED, kept=("patient_id",), with_context=True)
    assert list(record) == [*FIELDS, *QUALIFIERS, "patient_id"] and list(FIELDS) == SCHEMA.names
    back = record_mention(json.loads(json.dumps(record)), "out.jsonl line 1")
    assert back.values[:-1] == QUALIFIED.values[:-1] and back.metadata is None


def test_a_record_without_qualifier_fields_reads_them_as_unknown():
    back = record_mention(mention_record(QUALIFIED), "x")
    assert back.qualifiers == dict.fromkeys(QUALIFIERS) and back.score == QUALIFIED.score


@pytest.mark.parametrize("record, message", [
    ({"label": "D", "start": 1, "end": 2}, "x row 3: no id; a mention row needs id (or filename), label"),
    ({"id": "a", "start": 1, "end": 2}, "x row 3: no label"),
    ({"id": "a", "label": "D", "start": "one", "end": 2}, "x row 3: start, end and score must be numbers"),
    ({"id": "a", "label": "D", "start": 4, "end": 2}, "x row 3: start 4, end 2 is not a non-empty span"),
    ({"id": "a", "label": "D", "start": 1, "end": 2, "negated": "maybe"}, "x row 3: negated 'maybe' is not true"),
])
def test_a_bad_record_is_refused_naming_where(record, message):
    with pytest.raises(RecordError) as caught:
        record_mention(record, "x row 3")
    assert str(caught.value).startswith(message)


def test_tsv_row_reads_back_through_the_tsv_reader():
    assert tsv_header(True, True) == ("filename", "label", "start_span", "end_span", "text", "score", *QUALIFIERS)
    assert tsv_row(QUALIFIED, True, True)[5:] == ("0.8765", "true", "false", "", "", "")
    back = parse_mentions(format_mentions([QUALIFIED], with_context=True).splitlines(keepends=True))
    assert back == [QUALIFIED] and back[0].qualifiers == QUALIFIED.qualifiers and back[0].text == QUALIFIED.text


def test_span_mention_takes_the_span_characters_score_and_qualifiers():
    doc = spacy.blank("es")("Paciente con diabetes tipo 2.")
    span = doc.char_span(13, 28, label="DISEASE")
    span._.dt4h_score = 0.5
    got = span_mention("n1", span, {"negated": False})
    assert got.values[:7] == ("n1", "DISEASE", 13, 28, "diabetes tipo 2", 0.5, False)
