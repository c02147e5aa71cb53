"""``train(config, output)``: spaCy's own ``train``, the package's one training loop, plus what
the authors' data needs. The CLI's ``dt4h-spacy train`` and the demo both call it; it needs
no CLI library."""

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from .corpora import convert_texts, needs_conversion

CORPUS_PATHS = ("paths.train", "paths.dev")


def converted_corpora(overrides: Mapping[str, Any], corpus_dir: Path) -> Dict[str, Any]:
    """``overrides`` with each corpus path that is a folder of annotated texts replaced by
    its DocBins, written under ``corpus_dir/<train|dev>``."""
    result = dict(overrides)
    for key in CORPUS_PATHS:
        value = result.get(key)
        if isinstance(value, (str, Path)) and needs_conversion(value):
            target = corpus_dir / key.split(".")[1]
            convert_texts(Path(value), target)
            result[key] = str(target)
    return result


def train(config: Union[str, Path], output: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> Path:
    """Run ``spacy train config --output output`` with ``overrides`` (``{"paths.train": …}``),
    converting a ``paths.train``/``paths.dev`` folder of annotated texts into
    ``output/corpus/`` first; returns ``output/model-best``."""
    from spacy.cli.train import train as spacy_train

    output = Path(output)
    spacy_train(Path(config), output, overrides=converted_corpora(overrides or {}, output / "corpus"))
    return output / "model-best"
