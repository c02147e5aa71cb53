"""``python -m dt4h_spacy`` runs the ``dt4h-spacy`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
