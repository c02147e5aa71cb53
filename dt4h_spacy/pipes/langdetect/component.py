"""The ``dt4h_langdetect`` pipe: sets ``doc._.dt4h_lang`` for an ``xx`` pipeline, whose DT4H
component routes each doc to the head of that language."""

from typing import Optional, Sequence

from spacy.tokens import Doc

from ... import extensions  # noqa: F401 - registers doc._.dt4h_lang
from ...filenames import spacy_lang
from .detect import DETECTABLE, Undetectable, check_languages, detect_language


class LanguageTagger:
    """Sets ``doc._.dt4h_lang`` to the detected language. A doc that already has one keeps it
    unless ``overwrite``; one too short to tell gets ``fallback`` (None: the doc's own ``lang_``
    is used)."""

    def __init__(self, name: str, *, languages: Sequence[str] = DETECTABLE, fallback: Optional[str] = None,
                 overwrite: bool = False) -> None:
        self.name = name
        self.languages = check_languages(languages)
        self.fallback = fallback
        self.overwrite = overwrite

    def __call__(self, doc: Doc) -> Doc:
        if doc._.dt4h_lang is not None and not self.overwrite:
            return doc
        try:
            doc._.dt4h_lang = spacy_lang(detect_language(doc.text, self.languages))
        except Undetectable:
            doc._.dt4h_lang = self.fallback
        return doc
