"""Which language's head annotates a document: the one decision, made in one place.

Every input route (a folder of ``.txt``, a table with or without a language column) and
both engines ask :func:`route_language`, so a new way of knowing a document's language
(e.g. identifying it from the text) is one more branch here and reaches them all.
"""

import re
from typing import Optional

from .filenames import lang_from_filename

LANG_CODE = re.compile(r"^[a-z]{2,3}$")
NO_NAME_LANGUAGE = ("--lang auto needs a MultiClinNER name like MultiClinNER-es-test-disease-00019.txt; "
                    "pass the language, e.g. --lang es")


class RoutingError(ValueError):
    """A document no head can be chosen for; the message says how to give one."""


def language_code(value: str) -> Optional[str]:
    """``ES``, ``es_ES`` and ``es-ES`` → ``es``, as spaCy and Hugging Face users write them;
    ``auto`` stays; None for anything that is not a language code."""
    code = value.strip().lower().replace("_", "-").split("-")[0]
    return code if code == "auto" or LANG_CODE.match(code) else None


def route_language(name: str, text: str, row_lang: Optional[str], lang: str) -> str:
    """The language of document ``name``: its table row's language when the table has a
    language column, else ``--lang``, else (``auto``) the language of its MultiClinNER name.

    ``text`` is what a language identifier would read. Raises :class:`RoutingError`.
    """
    if row_lang is not None:
        code = language_code(row_lang)
        if code is None or code == "auto":
            raise RoutingError(f"language {row_lang!r} is not a language code such as es, it or ro")
        return code
    if lang != "auto":
        return lang
    code = lang_from_filename(name)
    if code is None:
        raise RoutingError(NO_NAME_LANGUAGE)
    return code
