"""Which language a clinical note is written in, offline: for routing it to a head.

Real folders of notes do not carry MultiClinNER names, so ``--lang detect`` (and ``--lang
auto`` for files without such a name) identifies each text's language, and the
``dt4h_langdetect`` pipe (:mod:`.component`) sets ``doc._.dt4h_lang`` for Python users of an
``xx`` pipeline.

The identifier is py3langid (langid.py's naive Bayes over byte n-grams, 97 languages, a
4.6 MB wheel, deterministic), restricted to the languages of the DT4H checkpoints plus their
neighbours, so that an English or Catalan note is recognised as such instead of being forced
into es/it/ro. Chosen over lingua-language-detector (96 MB wheel) and langdetect (random
unless seeded, cannot be restricted) on 64 one-sentence clinical notes in 8 languages:
py3langid 64/64 correct, lingua 61/64, langdetect 62/64; 0.3 ms, 4 ms and 80 ms a sentence
(``benchmarks/langid_compare.py``). lingua is better on three-word fragments (58/64 against
55/64), which is why a text needs :data:`MIN_LETTERS` letters before it is identified.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

from ...filenames import lang_from_filename, spacy_lang

FAMILY_LANGUAGES = ("cs", "en", "es", "it", "nl", "ro", "sv")  # served by the DT4H checkpoints
NEIGHBOURS = ("ca", "de", "fr", "pt")
DETECTABLE = tuple(sorted(FAMILY_LANGUAGES + NEIGHBOURS))
MIN_LETTERS = 12
SAMPLE_CHARS = 5000  # a note's language shows in its beginning; the rest only costs time
INSTALL_HINT = "pip install py3langid (a dependency of dt4h_spacy: reinstall it)"


class Undetectable(Exception):
    """The text has too few letters for its language to be told."""


def _ranking(text: str) -> List[str]:
    """Every language py3langid knows, most likely first.

    Picking the first of the candidates from the full ranking is the restricted argmax
    (naive Bayes scores each language on its own) and works the same in every py3langid
    version, without touching its process-wide ``set_languages``.
    """
    try:
        from py3langid.langid import rank
    except ImportError as err:
        raise ImportError(f"language detection needs py3langid: {INSTALL_HINT}, or pass the language "
                          "(--lang es).") from err
    return [str(lang) for lang, _ in rank(text)]


def check_languages(languages: Sequence[str]) -> Tuple[str, ...]:
    """``languages`` sorted, after checking that the identifier knows each (ImportError without it)."""
    unknown = sorted(set(languages) - set(_ranking("")))
    if unknown or not languages:
        raise ValueError(f"Language detection cannot identify {unknown or 'an empty list'}; give ISO 639-1 codes "
                         f"such as {list(DETECTABLE)}.")
    return tuple(sorted(set(languages)))


def detect_language(text: str, languages: Sequence[str] = DETECTABLE) -> str:
    """The most likely of ``languages`` for ``text``; :class:`Undetectable` when it has fewer than
    :data:`MIN_LETTERS` letters (a guess on "asma" would be a coin toss)."""
    sample = text[:SAMPLE_CHARS]
    letters = sum(ch.isalpha() for ch in sample)
    if letters < MIN_LETTERS:
        raise Undetectable(f"too little text to identify its language ({letters} letters, at least {MIN_LETTERS} "
                           "needed)")
    candidates = set(languages)
    return next(lang for lang in _ranking(sample) if lang in candidates)


def route(name: str, read_text: Callable[[], str], lang: str) -> Union[str, Undetectable]:
    """The language whose head annotates document ``name``: ``lang`` itself, else (``auto``) the
    language of its MultiClinNER name, else (``auto`` and ``detect``) the language detected in
    its text (read only then); an :class:`Undetectable` saying why when there is none. Without
    py3langid, ``detect`` raises ImportError; ``auto`` makes it that file's reason."""
    if lang not in ("auto", "detect"):
        return lang
    if lang == "auto":
        named = lang_from_filename(name)
        if named is not None:
            return named
    try:
        return detect_language(read_text())
    except ImportError as err:
        if lang == "detect":
            raise
        return Undetectable(f"no MultiClinNER name like MultiClinNER-es-test-disease-00019.txt, and {err}")
    except Undetectable as err:
        if lang == "auto":
            return Undetectable(f"no MultiClinNER name like MultiClinNER-es-test-disease-00019.txt and {err}; "
                                "pass the language, e.g. --lang es")
        return Undetectable(f"{err}; pass the language, e.g. --lang es")


def serving_language(code: str, served: Optional[Sequence[str]], fallback: Optional[str]) -> Optional[str]:
    """The language a document in ``code`` is annotated as: ``code`` when a head serves it (or
    ``served`` is None: the pipeline takes any language), the served code that spaCy reads as
    ``code`` (heads name Czech ``cz``, detection says ``cs``), else ``fallback`` (None: skip it)."""
    if served is None or code in served:
        return code
    return next((lang for lang in sorted(served) if spacy_lang(lang) == code), fallback)
