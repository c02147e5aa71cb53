"""Documents in a language a component has no head for: the ``unsupported`` policy decides
per document, so one such note never costs the rest of its batch or the run (issue 23, 4/5)."""

import json
import warnings

import pyarrow
import pyarrow.parquet
import pytest
import spacy
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.errors import UnsupportedLanguageError

# The trained tiny model's words: each language's head tags its own; the multilabel
# "disease" head tags the Spanish words whatever the document's language.
TEXT = "con neumonía con scompenso cu infarct"
BY_LANG = {"es": ["neumonía"], "it": ["scompenso"], "ro": ["infarct"]}


def routed_docs(nlp, langs):
    docs = []
    for lang in langs:
        doc = nlp.make_doc(TEXT)
        doc._.dt4h_lang = lang
        docs.append(doc)
    return docs


def found(docs, key="dt4h"):
    return [[s.text for s in doc.spans[key]] if key in doc.spans else None for doc in docs]


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_unserved_doc_is_left_untouched_and_the_rest_of_the_batch_annotated(make_nlp, trained_checkpoint, policy):
    nlp = make_nlp("xx", checkpoint=trained_checkpoint, unsupported=policy)
    docs = routed_docs(nlp, ["es", "en", "it", "ro"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(nlp.get_pipe("dt4h_disease").pipe(docs, batch_size=4))
    assert out == docs
    assert found(out) == [BY_LANG["es"], None, BY_LANG["it"], BY_LANG["ro"]]
    assert out[1].ents == ()
    messages = [str(w.message) for w in caught if "no head for language 'en'" in str(w.message)]
    assert len(messages) == (1 if policy == "warn" else 0)


def test_default_policy_warns_and_nlp_pipe_yields_every_doc(make_nlp, trained_checkpoint):
    nlp = make_nlp("xx", checkpoint=trained_checkpoint)
    assert nlp.get_pipe("dt4h_disease").cfg["unsupported"] == "warn"
    with pytest.warns(UserWarning, match="no head for language 'xx'"):
        docs = list(nlp.pipe([TEXT] * 3))
    assert found(docs) == [None, None, None]


def test_raise_policy_hands_only_the_unserved_doc_to_the_error_handler(make_nlp, trained_checkpoint):
    nlp = make_nlp("xx", checkpoint=trained_checkpoint, unsupported="raise")
    component = nlp.get_pipe("dt4h_disease")
    with pytest.raises(UnsupportedLanguageError, match="no head for language 'en'"):
        component(routed_docs(nlp, ["en"])[0])
    handed = []
    component.set_error_handler(lambda name, proc, docs, err: handed.append(([d._.dt4h_lang for d in docs], err)))
    out = list(component.pipe(routed_docs(nlp, ["es", "en", "it"])))
    assert found(out) == [BY_LANG["es"], None, BY_LANG["it"]]
    assert [(langs, type(err)) for langs, err in handed] == [(["en"], UnsupportedLanguageError)]


def test_unknown_policy_is_refused(make_nlp):
    with pytest.raises(ValueError, match="unsupported must be one of"):
        make_nlp("es", unsupported="ignore")


@pytest.fixture(scope="module")
def two_components(two_component_pipeline):
    """A per-language disease checkpoint beside a multilabel one that serves every language."""
    return spacy.load(two_component_pipeline), two_component_pipeline


def test_two_components_each_serve_the_docs_they_can(two_components):
    nlp, _ = two_components
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = list(nlp.pipe(routed_docs(nlp, ["it", "en", "es"]), batch_size=8))
    assert found(docs, "disease") == [BY_LANG["it"], None, BY_LANG["es"]]
    assert found(docs, "family") == [["neumonía"]] * 3


def test_predict_writes_every_note_when_one_component_cannot_serve_one(tmp_path, two_components):
    _, pipeline = two_components
    notes = [{"id": "nota-es", "text": TEXT, "lang": "es"}, {"id": "note-en", "text": TEXT, "lang": "en"},
             {"id": "nota-it", "text": TEXT, "lang": "it"}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(notes), tmp_path / "notes.parquet")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "notes.parquet"), str(tmp_path / "out.jsonl"),
                                      "--model", str(pipeline), "--lang-column", "lang", "--lang", "es"])
    assert result.exit_code == 0, result.output
    assert ("warning: note-en is in en, which the disease component(s) have no head for; annotated by family only"
            in result.stderr)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    got = sorted((row["id"], row["label"], row["text"]) for row in rows)
    assert got == sorted([("nota-es", "DISEASE", "neumonía"), ("nota-es", "DISEASE", "neumonía"),
                          ("note-en", "DISEASE", "neumonía"),
                          ("nota-it", "DISEASE", "scompenso"), ("nota-it", "DISEASE", "neumonía")])
