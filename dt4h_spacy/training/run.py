"""``train(config, output)``: spaCy's own ``train``, the package's one training loop, plus what
the authors' data needs. The CLI's ``dt4h-spacy train`` and the demo both call it; it needs
no CLI library."""

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..checkpoint import is_spacy_pipeline
from .corpora import convert_texts, needs_conversion
from .export import export_checkpoint

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


def started_from_pipeline(overrides: Mapping[str, Any], start_dir: Path) -> Dict[str, Any]:
    """``overrides`` with a saved pipeline given as ``paths.checkpoint`` (``out/model-last``
    of an earlier run: spaCy cannot resume one, but a new run can start from its weights)
    replaced by its network in the published layout, and ``paths.base_model`` by its own
    encoder config and tokenizer, both written under ``start_dir``."""
    result = dict(overrides)
    value = result.get("paths.checkpoint")
    if isinstance(value, (str, Path)) and is_spacy_pipeline(Path(value)):
        export_checkpoint(Path(value), start_dir / "model.pt", base_model_dir=start_dir / "base")
        result["paths.checkpoint"] = str(start_dir / "model.pt")
        result["paths.base_model"] = str(start_dir / "base")
    return result


def train(config: Union[str, Path], output: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> Path:
    """Run ``spacy train config --output output`` with ``overrides`` (``{"paths.train": …}``),
    converting a ``paths.train``/``paths.dev`` folder of annotated texts into
    ``output/corpus/`` first, and a saved pipeline given as ``paths.checkpoint`` into
    ``output/start/`` (see :func:`started_from_pipeline`); returns ``output/model-best``."""
    from spacy.cli.train import train as spacy_train

    output = Path(output)
    overrides = started_from_pipeline(converted_corpora(overrides or {}, output / "corpus"), output / "start")
    spacy_train(Path(config), output, overrides=overrides)
    return output / "model-best"
