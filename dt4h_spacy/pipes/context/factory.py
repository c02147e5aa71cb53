"""Registers ``dt4h_context``; the defaults live once, in :class:`.component.ContextQualifier`."""

import inspect
from typing import Any, Dict, List, Optional

from spacy.language import Language

from .component import ContextQualifier

FACTORY = "dt4h_context"
DEFAULT_CONFIG: Dict[str, Any] = {
    name: list(p.default) if isinstance(p.default, tuple) else p.default
    for name, p in inspect.signature(ContextQualifier.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


@Language.factory(
    FACTORY,
    assigns=["span._.is_negated", "span._.is_uncertain", "span._.is_hypothetical", "span._.is_historical",
             "span._.is_family", "span._.dt4h_cues"],
    default_config=DEFAULT_CONFIG,
)
def make_dt4h_context(nlp: Language, name: str, languages: Optional[List[str]], rule_files: List[str],
                      default_rules: bool, targets: List[str], max_scope: Optional[int],
                      terminate_on_other_categories: bool, attr: str, backend: str, tagger_model: str,
                      device: str) -> ContextQualifier:
    return ContextQualifier(nlp, name, languages=languages, rule_files=rule_files, default_rules=default_rules,
                            targets=targets, max_scope=max_scope,
                            terminate_on_other_categories=terminate_on_other_categories, attr=attr, backend=backend,
                            tagger_model=tagger_model, device=device)
