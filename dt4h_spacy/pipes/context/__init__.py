"""``dt4h_context``: ConText qualifiers (negated, uncertain, hypothetical, historical, family)
for clinical mentions in es, it and ro. Importing this package registers the factory."""

from .component import ContextQualifier
from .factory import FACTORY, make_dt4h_context

__all__ = ["FACTORY", "ContextQualifier", "make_dt4h_context"]
