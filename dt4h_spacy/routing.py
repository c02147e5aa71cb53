"""Which language's head annotates a document: the one decision, made in one place.

Every input route (a folder of ``.txt``, a table with or without a language column) and
both engines ask :func:`route_language`; knowing a language from a MultiClinNER file name or
identifying it in the text is :func:`dt4h_spacy.pipes.langdetect.detect.route`.
"""

import re
from typing import Optional

from .pipes.langdetect.detect import Undetectable, route

LANG_CODE = re.compile(r"^[a-z]{2,3}$")


class RoutingError(ValueError):
    """A document no head can be chosen for; the message says how to give one."""


def language_code(value: str) -> Optional[str]:
    """``ES``, ``es_ES`` and ``es-ES`` → ``es``, as spaCy and Hugging Face users write them;
    ``auto`` and ``detect`` stay; None for anything that is not a language code."""
    code = value.strip().lower().replace("_", "-").split("-")[0]
    return code if code in ("auto", "detect") or LANG_CODE.match(code) else None


def route_language(name: str, text: str, row_lang: Optional[str], lang: str) -> str:
    """The language of document ``name``: its table row's language when the table has a
    language column, else ``--lang``, else (``auto``) the language of its MultiClinNER name,
    else (``auto``, ``detect``) the language identified in ``text``.

    Raises :class:`RoutingError`; ImportError for ``detect`` without the identifier.
    """
    if row_lang is not None:
        code = language_code(row_lang)
        if code is None or code in ("auto", "detect"):
            raise RoutingError(f"language {row_lang!r} is not a language code such as es, it or ro")
        return code
    routed = route(name, lambda: text, lang)
    if isinstance(routed, Undetectable):
        raise RoutingError(str(routed))
    return routed
