"""Language codes carried by MultiClinNER document names.

The shared task names documents ``MultiClinNER-<lang>-<split>-<entity>-<number>``
(``MultiClinNER-es-test-disease-00019``), so a folder that mixes languages can be routed
to the right head without a side file.
"""

import re
from pathlib import PurePath
from typing import Optional

MULTICLINNER_NAME = re.compile(r"^MultiClinNER[-_](?P<lang>[A-Za-z]{2,3})(?=[-_.]|$)", re.IGNORECASE)

# Codes the shared task writes differently from spaCy: its Czech is "cz", spaCy's is "cs".
SPACY_LANGS = {"cz": "cs"}


def lang_from_filename(name: str) -> Optional[str]:
    """``MultiClinNER-es-test-disease-00019(.txt)`` → ``"es"``; None when the name has none.

    Only the last path component is looked at, so ``corpus/MultiClinNER-it-…`` works
    whatever the folders above are called. The code is returned lower-cased as written in the
    name (the task writes Czech as ``cz``, not ISO ``cs``).
    """
    match = MULTICLINNER_NAME.match(PurePath(name).name)
    return match.group("lang").lower() if match else None


def spacy_lang(code: str) -> str:
    """The spaCy language (tokenizer) for a shared-task language code."""
    return SPACY_LANGS.get(code, code)
