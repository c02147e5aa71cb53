"""``dt4h_langdetect``: which language a clinical note is written in, offline (:mod:`.detect`),
and the pipe that sets ``doc._.dt4h_lang`` (:mod:`.component`). Importing this package
registers the factory."""

from .component import LanguageTagger
from .factory import FACTORY, make_language_tagger

__all__ = ["FACTORY", "LanguageTagger", "make_language_tagger"]
