"""The component's options are written once (DiseaseSettings), and predict/set_annotations
follow spaCy's pipe contract (issue 24)."""

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest
from thinc.api import ConfigValidationError

from dt4h_spacy.component import DEFAULT_CONFIG, DiseaseBatch, make_dt4h_disease
from dt4h_spacy.settings import DiseaseSettings

README = Path(__file__).resolve().parent.parent / "README.md"
FIELDS = [f.name for f in dataclasses.fields(DiseaseSettings)]


def readme_options():
    """option → default, from the README's configuration table."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Configuration"):text.index("### How predictions are made")]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, flags=re.MULTILINE)
    return dict(rows)


def test_factory_signature_default_config_and_cfg_come_from_the_settings(make_nlp):
    params = inspect.signature(make_dt4h_disease).parameters
    assert list(params) == ["nlp", "name", *FIELDS, "scorer"]
    assert list(DEFAULT_CONFIG) == [*FIELDS, "scorer"]
    assert {k: DEFAULT_CONFIG[k] for k in FIELDS} == DiseaseSettings().to_cfg()
    component = make_nlp("es", stride=32).get_pipe("dt4h_disease")
    assert component.settings.stride == 32
    assert component.cfg == component.settings.to_cfg()


def test_the_readme_table_lists_every_option_with_its_default():
    documented = readme_options()
    assert list(documented) == FIELDS
    for name, default in documented.items():
        assert json.loads(default) == getattr(DiseaseSettings(), name), name


def test_spacy_validates_option_types_from_the_settings(make_nlp):
    with pytest.raises(ConfigValidationError, match="threshold"):
        make_nlp("es", threshold="high")
    with pytest.raises(ValueError, match="unsupported must be one of"):
        make_nlp("es", unsupported="ignore")


def test_predict_leaves_docs_alone_and_set_annotations_writes_what_a_call_writes(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint)
    component = nlp.get_pipe("dt4h_disease")
    text = "Paciente con neumonía y diabetes."
    doc = nlp.make_doc(text)
    batch = component.predict([doc])
    assert isinstance(batch, DiseaseBatch) and len(batch.docs) == 1
    assert doc.ents == () and "dt4h" not in doc.spans
    component.set_annotations([doc], batch)
    called = nlp(text)
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
        (e.start_char, e.end_char, e.label_) for e in called.ents
    ]
    assert [e.text for e in doc.ents] == ["neumonía", "diabetes"]
