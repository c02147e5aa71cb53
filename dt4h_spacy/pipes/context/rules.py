"""ConText rules as data: one JSON file per language, one rule per object.

A file looks like ``{"language": "es", "rules": [{"literal": "sin", "category":
"NEGATED_EXISTENCE", "direction": "FORWARD"}, ...]}``. A rule has a ``literal`` (matched
case-insensitively, token by token) or a ``pattern`` (a spaCy ``Matcher`` token pattern),
a ``category``, a ``direction`` (implied for ``PSEUDO`` and ``TERMINATE``), an optional
``max_scope`` in tokens (0: only the trigger's own words past its head, so "sin cambios"
negates the changes and not what follows) and an optional ``comment``. A termination may be
a ``conjunction`` ("y", "o"): it ends every scope except those of triggers marked ``lists``,
which govern a coordinated list ("niega síncope y hemoptisis", "hemocultivos y urocultivos
negativos"). Errors name the file and the line the rule starts on, because rule files are
edited by hand.
"""

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ...errors import ContextRulesError

CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL", "FAMILY", "PSEUDO",
              "TERMINATE")
DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO")
# The span attribute each qualifying category sets (medspaCy's names).
ATTRIBUTES: Dict[str, str] = {"NEGATED_EXISTENCE": "is_negated", "POSSIBLE_EXISTENCE": "is_uncertain",
                              "HYPOTHETICAL": "is_hypothetical", "HISTORICAL": "is_historical", "FAMILY": "is_family"}
IMPLIED_DIRECTIONS = {"PSEUDO": "PSEUDO", "TERMINATE": "TERMINATE"}
KEYS = ("literal", "pattern", "category", "direction", "max_scope", "lists", "conjunction", "comment")
PACKAGED_LANGUAGES = ("es", "it", "ro")


@dataclass(frozen=True)
class ContextRule:
    """One trigger: what to match, what it means, which way its scope runs."""

    category: str
    direction: str
    literal: Optional[str] = None
    pattern: Optional[Tuple[Dict[str, Any], ...]] = None
    max_scope: Optional[int] = None
    lists: bool = False
    conjunction: bool = False
    source: str = field(default="", compare=False)

    def to_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"category": self.category, "direction": self.direction}
        if self.literal is not None:
            data["literal"] = self.literal
        if self.pattern is not None:
            data["pattern"] = list(self.pattern)
        if self.max_scope is not None:
            data["max_scope"] = self.max_scope
        if self.lists:
            data["lists"] = True
        if self.conjunction:
            data["conjunction"] = True
        return data


def packaged_rules_path(lang: str) -> Path:
    """Where the rules shipped for ``lang`` live (they may not exist)."""
    return Path(str(resources.files(__package__).joinpath("rules", f"{lang}.json")))


def _objects(text: str, where: str) -> Iterator[Tuple[int, Any]]:
    """Each element of the file's ``rules`` array with the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ContextRulesError(f"{where} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise ContextRulesError(f"{where} line 1: expected an object with a \"rules\" list, "
                                "e.g. {\"language\": \"es\", \"rules\": [...]}")
    index = text.index("[", text.index('"rules"')) + 1
    for _ in document["rules"]:
        while text[index] in " \t\r\n,":
            index += 1
        value, end = decoder.raw_decode(text, index)
        yield text.count("\n", 0, index) + 1, value
        index = end


def parse_rule(data: Any, where: str) -> ContextRule:
    """One rule object, checked; errors begin with ``where`` (file and line)."""
    if not isinstance(data, dict):
        raise ContextRulesError(f"{where}: a rule must be an object, got {json.dumps(data)[:60]}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ContextRulesError(f"{where}: unknown key(s) {unknown}; a rule has {', '.join(KEYS)}")
    category = str(data.get("category", "")).upper()
    if category not in CATEGORIES:
        raise ContextRulesError(f"{where}: unknown category {data.get('category')!r}; use one of {', '.join(CATEGORIES)}")
    direction = str(data.get("direction", IMPLIED_DIRECTIONS.get(category, ""))).upper()
    if direction not in DIRECTIONS:
        raise ContextRulesError(f"{where}: unknown direction {data.get('direction')!r}; use one of "
                                f"{', '.join(DIRECTIONS)}")
    if (category in IMPLIED_DIRECTIONS) != (direction in IMPLIED_DIRECTIONS.values()) or \
            IMPLIED_DIRECTIONS.get(category, direction) != direction:
        raise ContextRulesError(f"{where}: category {category} cannot have direction {direction}; PSEUDO and "
                                "TERMINATE rules take their own direction, the others FORWARD, BACKWARD or BIDIRECTIONAL")
    literal, pattern = data.get("literal"), data.get("pattern")
    if (literal is None) == (pattern is None):
        raise ContextRulesError(f"{where}: give exactly one of \"literal\" (a phrase) or \"pattern\" (a spaCy "
                                "Matcher token pattern)")
    if literal is not None and (not isinstance(literal, str) or not literal.strip()):
        raise ContextRulesError(f"{where}: literal must be a non-empty string, got {literal!r}")
    if pattern is not None:
        from spacy.matcher import Matcher
        from spacy.vocab import Vocab

        if not isinstance(pattern, list) or not pattern or not all(isinstance(t, dict) for t in pattern):
            raise ContextRulesError(f"{where}: pattern must be a non-empty list of token objects, such as "
                                    "[{\"LOWER\": \"no\"}, {\"LOWER\": \"se\"}]")
        try:
            Matcher(Vocab(), validate=True).add("check", [pattern])
        except Exception as err:  # spaCy raises MatchPatternError or ValueError with its own details
            raise ContextRulesError(f"{where}: malformed pattern ({' '.join(str(err).split())[:300]})") from None
    max_scope = data.get("max_scope")
    if max_scope is not None and (isinstance(max_scope, bool) or not isinstance(max_scope, int) or max_scope < 0):
        raise ContextRulesError(f"{where}: max_scope must be a whole number of tokens >= 0, got {max_scope!r}")
    for key, allowed in (("lists", category in ATTRIBUTES), ("conjunction", category == "TERMINATE")):
        if key in data and not isinstance(data[key], bool):
            raise ContextRulesError(f"{where}: {key} must be true or false, got {data[key]!r}")
        if data.get(key) and not allowed:
            raise ContextRulesError(f"{where}: {key} is for " + ("qualifying triggers" if key == "lists" else
                                                                  "TERMINATE rules") + f", not {category}")
    return ContextRule(category, direction, literal.strip() if literal is not None else None,
                       tuple(pattern) if pattern is not None else None, max_scope, bool(data.get("lists")),
                       bool(data.get("conjunction")), source=where)


def read_rule_file(path: Union[str, Path]) -> Tuple[Optional[str], List[ContextRule]]:
    """The ``language`` a file declares (or None) and its rules, checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ContextRulesError(f"{path}: cannot read the context rule file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ContextRulesError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    rules = [parse_rule(data, f"{path} line {line}") for line, data in _objects(text, str(path))]
    language = json.loads(text).get("language")
    return (str(language) if language is not None else None), rules


def load_rules(languages: Sequence[str], rule_files: Sequence[Union[str, Path]] = (),
               default_rules: bool = True) -> Dict[str, List[ContextRule]]:
    """The rules per language: the packaged file of each of ``languages`` (``default_rules``),
    then each of ``rule_files`` added to the language it declares (a file without a
    ``language`` extends every language). A language left without rules is an error."""
    rules: Dict[str, List[ContextRule]] = {lang: [] for lang in languages}
    if default_rules:
        for lang in languages:
            path = packaged_rules_path(lang)
            if path.is_file():
                rules[lang].extend(read_rule_file(path)[1])
    for path in rule_files:
        language, extra = read_rule_file(path)
        targets = [language] if language is not None else list(rules)
        for lang in targets:
            rules.setdefault(lang, []).extend(extra)
    empty = [lang for lang, found in rules.items() if not found]
    if empty or not rules:
        raise ContextRulesError(
            f"No context rules for language(s) {empty or list(languages)}: rules ship for {', '.join(PACKAGED_LANGUAGES)}. "
            "Pass `languages` among those, or your own rule files with `rule_files` "
            "(JSON: {\"language\": \"xx\", \"rules\": [...]}).")
    return rules
