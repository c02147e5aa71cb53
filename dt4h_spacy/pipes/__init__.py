"""spaCy pipes of the package, one folder each (``factory.py`` registers, the class holds the defaults)."""
