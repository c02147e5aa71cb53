"""Registers ``dt4h_langdetect``; the defaults live once, in :class:`.component.LanguageTagger`."""

import inspect
from typing import Any, Dict, List, Optional

from spacy.language import Language

from .component import LanguageTagger

FACTORY = "dt4h_langdetect"
DEFAULT_CONFIG: Dict[str, Any] = {
    name: list(p.default) if isinstance(p.default, tuple) else p.default
    for name, p in inspect.signature(LanguageTagger.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


@Language.factory(FACTORY, assigns=["doc._.dt4h_lang"], default_config=DEFAULT_CONFIG)
def make_language_tagger(nlp: Language, name: str, languages: List[str], fallback: Optional[str],
                         overwrite: bool) -> LanguageTagger:
    return LanguageTagger(name, languages=languages, fallback=fallback, overwrite=overwrite)
