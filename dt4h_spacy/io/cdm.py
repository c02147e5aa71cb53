"""DT4H Common Data Model (CDM v2) objects: what the DT4H annotation service answers per document.

One CDM object per document, with ``nlp_output.record_metadata`` (the caller's record fields,
the text and when and by what it was processed), ``nlp_output.annotations`` (one per mention)
and ``nlp_service_info``. Both ``dt4h-spacy serve`` and ``predict … out.cdm.jsonl`` build them
here, so the service and the batch output cannot drift apart.

Field names follow nlp4bia-bsc/dt4h-annotation-api: ``concept_class`` is a CDM class
(``DISEASE`` → ``disorder/disease``; labels without a CDM class are lower-cased),
``extraction_confidence`` and ``concept_confidence`` the model's score of the mention (there is
no entity linking here), ``negation``/``uncertainty`` ``"yes"``/``"no"``, or ``null`` when no
context component assessed the mention.
"""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from .. import __version__
from ..textfiles import atomic_write
from .records import AnnotatedDoc, Mention

PIPELINE_NAME = "dt4h_spacy"

# The caller's fields of ``record_metadata`` (a CogStack footer's keys, a table's columns).
RECORD_FIELDS = (
    "clinical_site_id", "patient_id", "admission_id", "admission_date", "admission_type", "record_id",
    "record_type", "record_format", "record_creation_date", "record_lastupdate_date", "record_character_encoding",
    "record_extraction_date", "report_section", "report_language", "deidentified", "deidentification_pipeline_name",
    "deidentification_pipeline_version",
)
CONCEPT_CLASSES = {
    "DISEASE": "disorder/disease", "ENFERMEDAD": "disorder/disease", "SYMPTOM": "symptom", "SINTOMA": "symptom",
    "PROCEDURE": "procedure", "PROCEDIMIENTO": "procedure", "MEDICATION": "medication", "MEDICAMENTO": "medication",
}


def concept_class(label: str) -> str:
    """The CDM ``concept_class`` of a model label."""
    return CONCEPT_CLASSES.get(label.upper(), label.lower())


def _yes_no(value: Optional[bool]) -> Optional[str]:
    return None if value is None else "yes" if value else "no"


def cdm_annotation(mention: Mention, qualifiers: bool = True) -> Dict[str, Any]:
    """One CDM annotation; ``qualifiers`` False reports negation and uncertainty as not assessed."""
    return {
        "concept_class": concept_class(mention.label),
        "start_offset": mention.start,
        "end_offset": mention.end,
        "concept_mention_string": mention.text,
        "extraction_confidence": mention.score,
        "concept_confidence": mention.score,
        "ner_component_type": "transformer",
        "ner_component_version": __version__,
        "negation": _yes_no(mention.negated) if qualifiers else None,
        "negation_confidence": None,
        "uncertainty": _yes_no(mention.uncertain) if qualifiers else None,
        "uncertainty_confidence": None,
    }


def record_metadata(text: str, name: str, lang: Optional[str], fields: Mapping[str, Any],
                    processed: Optional[str] = None) -> Dict[str, Any]:
    """The record's CDM fields from ``fields`` (other keys are ignored, as the DT4H service
    does), ``record_id`` defaulting to the document's id and ``report_language`` to the
    language it was annotated as."""
    record = {key: fields.get(key) for key in RECORD_FIELDS}
    if record["record_id"] is None:
        record["record_id"] = name
    if record["report_language"] is None:
        record["report_language"] = lang
    record.update(text=text, nlp_processing_date=processed or now(), nlp_processing_pipeline_name=PIPELINE_NAME,
                  nlp_processing_pipeline_version=__version__)
    return record


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def service_info(model: str) -> Dict[str, str]:
    return {"service_app_name": "dt4h-spacy", "service_language": "en", "service_version": __version__,
            "service_model": model}


def cdm_object(document: AnnotatedDoc, model: str, qualifiers: bool = True, fields: Optional[Mapping[str, Any]] = None,
               processed: Optional[str] = None) -> Dict[str, Any]:
    """The CDM object of an annotated document; ``fields`` default to its kept columns."""
    chosen = document.metadata if fields is None else fields
    return {
        "nlp_output": {
            "record_metadata": record_metadata(document.text, document.name, document.lang, chosen, processed),
            "annotations": [cdm_annotation(m, qualifiers) for m in document.mentions],
            "processing_success": True,
        },
        "nlp_service_info": service_info(model),
    }


def cdm_failure(text: str, name: str, message: str, model: str, fields: Mapping[str, Any],
                processed: Optional[str] = None) -> Dict[str, Any]:
    """The CDM object of a document that could not be annotated: no annotations,
    ``processing_success`` false and the reason in ``processing_message``."""
    return {
        "nlp_output": {
            "record_metadata": record_metadata(text, name, None, fields, processed),
            "annotations": [],
            "processing_success": False,
            "processing_message": message,
        },
        "nlp_service_info": service_info(model),
    }


def write_cdm_jsonl(path: Path, documents: Iterable[AnnotatedDoc], model: str, qualifiers: bool) -> int:
    """One CDM object per document and line, in input order; returns the mentions written."""
    count = 0
    with atomic_write(path) as handle:
        for document in documents:
            handle.write(json.dumps(cdm_object(document, model, qualifiers), ensure_ascii=False, default=str) + "\n")
            count += len(document.mentions)
    return count

