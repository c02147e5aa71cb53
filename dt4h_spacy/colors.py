"""displaCy colours for the entity types of the DT4H checkpoints, defined once.

spaCy reads them through the ``spacy_displacy_colors`` entry point, so
``displacy.render(doc, style="ent")`` colours DISEASE, SYMPTOM and PROCEDURE in any program,
and ``dt4h-spacy visualize`` uses the same ones. This module imports nothing heavy: spaCy
loads it on every entity render, whatever the pipeline.
"""

from typing import Dict

DISPLACY_COLORS: Dict[str, str] = {"DISEASE": "#f7a8a8", "SYMPTOM": "#a8d8f7", "PROCEDURE": "#b8f0b0"}


def displacy_colors() -> Dict[str, str]:
    """Label → colour, for spaCy's ``displacy_colors`` registry."""
    return dict(DISPLACY_COLORS)
