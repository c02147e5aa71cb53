"""The ``dt4h_context`` component: is a mention negated, uncertain, hypothetical, historical,
about a family member?

ConText (Harkema et al. 2009), as medspaCy implements it for English: trigger phrases from
per-language rule files (:mod:`.rules`) are matched with spaCy's ``PhraseMatcher`` (on
``LOWER`` or ``NORM``) and ``Matcher``; where matches overlap the longest wins, so a pseudo
trigger ("no se descarta", "non escluso") blocks the shorter triggers inside it. A trigger's
scope runs forward, backward or both from it, inside its sentence, up to its ``max_scope``
tokens, and stops at a terminating phrase ("pero", "ma", "dar"; a conjunction such as "y" stops
only triggers that do not govern lists); negation and uncertainty
triggers end each other's scopes (a backward scope also stops at punctuation and at an
earlier trigger of its own category). A target
span (``doc.ents`` and/or ``doc.spans[key]``) that a scope overlaps takes that category's
attribute, and the trigger joins ``span._.dt4h_cues``. Sentences come from
``doc.sents`` when a pipe set them, else from the package's own splitter.

With ``backend="tagger"`` negation and uncertainty come from a token-classification model
in the format of BSC's negation tagger (:mod:`.tagger`); the rules still decide the other
three attributes.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy.attrs import IS_PUNCT
from spacy.language import Language
from spacy.matcher import Matcher, PhraseMatcher
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.util import minibatch

from ... import extensions  # noqa: F401 - registers doc._.dt4h_lang
from ...sentences import sentence_starts
from ...spans import word_tokens
from ...io.records import QUALIFIERS
from .rules import ATTRIBUTES, PACKAGED_LANGUAGES, ContextRule, load_rules, parse_rule

CUES = "dt4h_cues"
ENTS = "ents"
DEFAULT_TARGETS = (ENTS, "dt4h")
BACKENDS = ("rules", "tagger")
MATCH_ATTRS = ("LOWER", "NORM")
DEFAULT_TAGGER = "BSC-NLP4BIA/negation-tagger"
RULES_FILE = "rules.json"
# Negation and uncertainty end each other's scopes; who and when (family, history, hypothesis)
# do not: in "sin antecedentes de asma" the asthma is both negated and historical.
EXISTENCE = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE")

for _attr in ATTRIBUTES.values():
    if not Span.has_extension(_attr):
        Span.set_extension(_attr, default=False)
if not Span.has_extension(CUES):
    Span.set_extension(CUES, default=None)


@dataclass(frozen=True)
class Trigger:
    """A matched rule and the tokens its scope covers (``scope_start`` .. ``scope_end``, end exclusive)."""

    rule: ContextRule
    start: int
    end: int
    scope_start: int
    scope_end: int


class ContextQualifier(Pipe):
    """Sets ``span._.is_negated`` (and the other :data:`~.rules.ATTRIBUTES`) and
    ``span._.dt4h_cues`` on the target spans of each doc."""

    def __init__(self, nlp: Language, name: str = "dt4h_context", *, languages: Optional[Sequence[str]] = None,
                 rule_files: Sequence[str] = (), default_rules: bool = True,
                 targets: Sequence[str] = DEFAULT_TARGETS, max_scope: Optional[int] = 6,
                 terminate_on_other_categories: bool = True, attr: str = "LOWER", backend: str = "rules",
                 tagger_model: str = DEFAULT_TAGGER, device: str = "cpu") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        if attr not in MATCH_ATTRS:
            raise ValueError(f"attr must be one of {MATCH_ATTRS}, got {attr!r}.")
        if max_scope is not None and max_scope < 1:
            raise ValueError(f"max_scope must be None (the whole sentence) or >= 1 token, got {max_scope}.")
        if not targets:
            raise ValueError(f"targets must name doc.ents ({ENTS!r}) and/or spans keys, e.g. {list(DEFAULT_TARGETS)}.")
        if languages is None:
            languages = list(PACKAGED_LANGUAGES) if nlp.lang == "xx" else [nlp.lang]
        self.name = name
        self.vocab = nlp.vocab
        self._make_doc = nlp.make_doc
        self.cfg: Dict[str, Any] = {
            "languages": list(languages), "rule_files": [str(p) for p in rule_files], "default_rules": default_rules,
            "targets": list(targets), "max_scope": max_scope,
            "terminate_on_other_categories": terminate_on_other_categories, "attr": attr, "backend": backend,
            "tagger_model": tagger_model, "device": device,
        }
        self.set_rules(load_rules(languages, rule_files, default_rules))
        self._tagger: Any = None
        if backend == "tagger":  # loaded now, so an unusable model is an error at add_pipe
            from .tagger import NegationTagger

            self._tagger = NegationTagger.load(tagger_model, device)

    # -- rules ---------------------------------------------------------------------------
    def set_rules(self, rules: Dict[str, List[ContextRule]]) -> None:
        """Compile ``rules`` (per language) into one phrase matcher and one token matcher each,
        and (``*``) all of them together for docs in a language without its own rules."""
        self.rules = {lang: _unique(found) for lang, found in rules.items()}
        every = _unique([rule for found in self.rules.values() for rule in found])
        self._matchers: Dict[str, Tuple[PhraseMatcher, Matcher, Dict[int, ContextRule]]] = {}
        for lang, found in {**self.rules, "*": every}.items():
            phrases = PhraseMatcher(self.vocab, attr=self.cfg["attr"])
            tokens = Matcher(self.vocab)
            by_key: Dict[int, ContextRule] = {}
            for number, rule in enumerate(found):
                key = f"{self.name}:{lang}:{number}"
                by_key[self.vocab.strings.add(key)] = rule
                if rule.literal is not None:
                    phrases.add(key, [self._make_doc(rule.literal)])
                else:
                    tokens.add(key, [list(rule.pattern or ())])
            self._matchers[lang] = (phrases, tokens, by_key)

    def _matcher_for(self, doc: Doc) -> Tuple[PhraseMatcher, Matcher, Dict[int, ContextRule]]:
        """The doc's language's matchers; a doc in another language (or ``xx``) is read with
        every loaded language's rules, which rarely disagree on a clinical trigger."""
        return self._matchers.get(doc._.dt4h_lang or doc.lang_, self._matchers["*"])

    # -- prediction ----------------------------------------------------------------------
    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size):
            self.set_annotations(docs, self.predict(docs))
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> List[List[Trigger]]:
        """The triggers of each doc with their scopes (docs are left alone)."""
        triggers = [self.triggers(doc) for doc in docs]
        if self.cfg["backend"] == "tagger":
            from .tagger import tagger_triggers

            kept = [[t for t in found if t.rule.category not in ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE")]
                    for found in triggers]
            triggers = [k + learned for k, learned in zip(kept, tagger_triggers(self._tagger, docs, sentence_ids))]
        return triggers

    def triggers(self, doc: Doc) -> List[Trigger]:
        """The rule triggers of ``doc``, longest match first where they overlap, with scopes."""
        phrases, tokens, by_key = self._matcher_for(doc)
        matches = [(by_key[key], start, end) for key, start, end in phrases(doc)]
        if len(tokens):
            matches += [(by_key[key], start, end) for key, start, end in tokens(doc)]
        matches.sort(key=lambda m: (m[1] - m[2], m[1]))
        taken = numpy.zeros(len(doc) + 1, dtype=bool)
        kept: List[Tuple[ContextRule, int, int]] = []
        for rule, start, end in matches:
            if not taken[start:end].any() or (kept and (kept[-1][1], kept[-1][2]) == (start, end)):
                taken[start:end] = True  # the same words may be several rules' trigger ("sospetta" both ways)
                kept.append((rule, start, end))
        kept.sort(key=lambda m: m[1])
        if not kept:
            return []
        sentence = sentence_ids(doc)
        bounds = _sentence_bounds(sentence)
        punct = doc.to_array(IS_PUNCT).astype(bool)
        qualifying = [m for m in kept if m[0].category in ATTRIBUTES]
        stops = [m for m in kept if m[0].category == "TERMINATE"]
        found: List[Trigger] = []
        for rule, start, end in qualifying:
            first, last = bounds[sentence[start]]
            limit = rule.max_scope if rule.max_scope is not None else self.cfg["max_scope"] or len(doc)
            barriers = [(s, e) for r, s, e in stops if not (rule.lists and r.conjunction)] + (
                [(s, e) for r, s, e in qualifying if r.category != rule.category and r.category in EXISTENCE]
                if self.cfg["terminate_on_other_categories"] and rule.category in EXISTENCE else [])
            scope_start, scope_end = start, end
            if rule.direction in ("FORWARD", "BIDIRECTIONAL"):
                scope_end = min([last, end + limit] + [s for s, e in barriers if s >= end])
            if rule.direction in ("BACKWARD", "BIDIRECTIONAL"):
                # A cue after its finding follows it closely: "neumonía descartada", not "fiebre, probable".
                commas = punct[first:start].nonzero()[0]
                after_comma = first + int(commas[-1]) + 1 if len(commas) else first
                # ... and ends where an earlier trigger of its own category begins its own scope.
                same = [e for r, s, e in qualifying if r.category == rule.category and e <= start]
                scope_start = max([after_comma, start - limit] + [e for s, e in barriers if e <= start] + same)
            found.append(Trigger(rule, start, end, scope_start, scope_end))
        return found

    def targets(self, doc: Doc) -> List[Span]:
        """The spans to qualify: ``doc.ents`` and/or each ``doc.spans[key]`` named in ``targets``."""
        spans: List[Span] = []
        for target in self.cfg["targets"]:
            if target == ENTS:
                spans.extend(doc.ents)
            elif target in doc.spans:
                spans.extend(doc.spans[target])
        return spans

    def set_annotations(self, docs: Sequence[Doc], triggers: Sequence[List[Trigger]]) -> None:
        """Each target span gets every attribute (False unless a scope covers it) and its cues."""
        for doc, found in zip(docs, triggers):
            for span in self.targets(doc):
                values = dict.fromkeys(ATTRIBUTES.values(), False)
                cues: List[Span] = []
                for trigger in found:
                    covers = trigger.scope_start < span.end and span.start < trigger.scope_end
                    head_start, head_end = _head(trigger)
                    if covers and not (head_start < span.end and span.start < head_end):
                        values[ATTRIBUTES[trigger.rule.category]] = True
                        cues.append(doc[trigger.start:trigger.end])
                for attr, value in values.items():
                    span._.set(attr, value)
                span._.set(CUES, cues)

    # -- serialization -------------------------------------------------------------------
    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        """The compiled rules, so a saved pipeline needs none of the original rule files."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / RULES_FILE, self._rules_json())

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "ContextQualifier":
        self._load_rules_json(srsly.read_json(Path(path) / RULES_FILE), str(Path(path) / RULES_FILE))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return srsly.msgpack_dumps(self._rules_json())

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "ContextQualifier":
        self._load_rules_json(srsly.msgpack_loads(data), "<bytes>")
        return self

    def _rules_json(self) -> Dict[str, List[Dict[str, Any]]]:
        return {lang: [rule.to_json() for rule in found] for lang, found in self.rules.items()}

    def _load_rules_json(self, saved: Dict[str, List[Dict[str, Any]]], source: str) -> None:
        self.set_rules({lang: [parse_rule(data, f"{source} ({lang} rule {number + 1})")
                               for number, data in enumerate(found)] for lang, found in saved.items()})


def _head(trigger: Trigger) -> Tuple[int, int]:
    """The trigger tokens a target must not touch: the first word of a forward trigger, the
    last of a backward one, all of a bidirectional one. The rest of a phrase trigger is what
    its head governs: in "sin signos de TVP" and "no presenta disnea" the signs and the
    presenting are negated too, so a mention "signos de TVP" is negated."""
    if trigger.rule.direction == "FORWARD":
        return trigger.start, trigger.start + 1
    if trigger.rule.direction == "BACKWARD":
        return trigger.end - 1, trigger.end
    return trigger.start, trigger.end


def span_qualifiers(span: Span) -> Dict[str, bool]:
    """The span's attributes under the :data:`~dt4h_spacy.tsv.QUALIFIERS` names (``negated`` ...)."""
    return {name: bool(span._.get(attr)) for name, attr in zip(QUALIFIERS, ATTRIBUTES.values())}


def _unique(rules: Iterable[ContextRule]) -> List[ContextRule]:
    """``rules`` without repeats (a rule file may extend another with the same entries)."""
    seen: Dict[str, ContextRule] = {}
    for rule in rules:
        seen.setdefault(srsly.json_dumps(rule.to_json(), sort_keys=True), rule)
    return list(seen.values())


def sentence_ids(doc: Doc) -> numpy.ndarray:
    """The sentence number of each token: ``doc.sents`` when set, else the package's splitter
    (whitespace tokens belong to the sentence before them)."""
    words = word_tokens(doc)
    ids = numpy.zeros(len(doc), dtype=numpy.int64)
    if len(words):
        ids[words] = numpy.cumsum(sentence_starts(doc, words))
    return numpy.maximum.accumulate(ids) if len(ids) else ids


def _sentence_bounds(ids: numpy.ndarray) -> Dict[int, Tuple[int, int]]:
    starts = numpy.r_[0, numpy.flatnonzero(ids[1:] != ids[:-1]) + 1]
    ends = numpy.r_[starts[1:], len(ids)]
    return {int(ids[s]): (int(s), int(e)) for s, e in zip(starts, ends)}
