"""Scoring: :mod:`.official` reproduces the MultiClinAI scorer's NER numbers (``evaluate``),
:mod:`.context` scores the qualifiers of mentions both sides share (``evaluate-context``)."""
