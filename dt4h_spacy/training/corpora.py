"""The authors' data (a folder of ``.txt`` with a mentions TSV or brat ``.ann`` files) as the
DocBins ``spacy train`` reads, so ``dt4h-spacy train`` and the demo accept it as it comes."""

from pathlib import Path
from typing import Dict, Optional, Union

from ..corpus import build_docbins, read_brat_corpus, read_tsv_corpus, write_docbins
from ..errors import TrainingDataError

MENTIONS_FILE = "mentions.tsv"


def needs_conversion(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a folder of annotated texts rather than ``.spacy`` files."""
    path = Path(path)
    return path.is_dir() and not any(path.rglob("*.spacy")) and any(path.rglob("*.txt"))


def convert_texts(source: Path, output_dir: Path, entity: Optional[str] = None) -> Dict[str, Path]:
    """``source``'s texts (searched recursively) with ``source/mentions.tsv`` or, without
    it, brat ``.ann`` files beside them → ``output_dir/<lang>.spacy``, as ``dt4h-spacy
    convert`` writes them. A file that cannot be used stops it: training on part of a
    corpus without saying so would be worse."""
    mentions = source / MENTIONS_FILE
    items = (read_tsv_corpus(source, mentions, recursive=True) if mentions.is_file()
             else read_brat_corpus(source, recursive=True))
    conversion = build_docbins(items, entity=entity)
    if conversion.failures:
        raise TrainingDataError(
            f"{source}: {conversion.failures[0]}. Fix it, or convert with `dt4h-spacy convert` "
            "(which skips and reports such files) and pass the .spacy folder."
        )
    if not conversion.docs:
        raise TrainingDataError(f"{source} holds no annotated text (.txt with {MENTIONS_FILE} or .ann files).")
    return write_docbins(conversion, output_dir)
