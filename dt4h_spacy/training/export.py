"""A trained pipeline's network → the published ``.pt`` layout (``dt4h-spacy export``)."""

from pathlib import Path
from typing import List, Optional

import spacy

from ..checkpoint import check_pipeline_folder, save_checkpoint
from ..component import DiseaseRecognizer
from ..errors import CheckpointError


def export_checkpoint(
    pipeline: Path, output: Path, component: Optional[str] = None, base_model_dir: Optional[Path] = None
) -> List[str]:
    """Write the network of a saved pipeline's ``dt4h_disease`` component to ``output`` in the
    published checkpoint layout (``torch.save`` of ``encoder.*`` + ``classifiers.<head>.*``,
    the authors' ``MultiTaskNERModel.state_dict()``), so a model fine-tuned with ``spacy
    train`` loads in the authors' code and as any component's ``checkpoint``. With
    ``base_model_dir``, also the encoder config and tokenizer, the ``base_model`` to pass
    with it offline. Returns the heads written."""
    check_pipeline_folder(Path(pipeline))
    nlp = spacy.load(pipeline)
    found = {name: pipe for name, pipe in nlp.pipeline if isinstance(pipe, DiseaseRecognizer)}
    if component is not None and component not in found:
        raise CheckpointError(f"{pipeline} has no dt4h_disease component named {component!r}; it has {sorted(found)}.")
    if component is None and len(found) != 1:
        raise CheckpointError(
            f"{pipeline} has {len(found)} dt4h_disease components ({sorted(found)}); name one with --component."
        )
    recognizer = found[component] if component is not None else next(iter(found.values()))
    tagger = recognizer.tagger
    save_checkpoint(tagger.state_dict(), output)
    if base_model_dir is not None:
        tagger.model.encoder.config.save_pretrained(base_model_dir)
        tagger.tokenizer.save_pretrained(base_model_dir)
    return list(tagger.model.tasks)
