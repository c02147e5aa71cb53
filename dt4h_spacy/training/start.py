"""The checkpoint a ``spacy train`` run starts from when there is no trained one yet.

spaCy's loop fine-tunes what the component loads (``paths.checkpoint``), so training from a
base encoder with fresh heads, or adding a head for a new language to a trained
checkpoint, is one small step before it (``dt4h-spacy init-checkpoint``). The tests' and
the demo's random tiny models come from the same function.
"""

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from transformers import AutoModel

from ..checkpoint import save_checkpoint
from ..errors import CheckpointError
from ..labels import default_labels
from ..model import MultiTaskTokenClassifier, init_heads, load_base_model, load_network

DEFAULT_TASKS = ("disease_es_ner", "disease_it_ner", "disease_ro_ner")
PathLike = Union[str, Path]


def start_network(
    base_model: PathLike,
    tasks: Sequence[str] = DEFAULT_TASKS,
    seed: int = 0,
    pretrained: bool = False,
    init_from: Optional[PathLike] = None,
) -> MultiTaskTokenClassifier:
    """The network a run starts from, in training mode.

    ``init_from`` (a checkpoint): its encoder and every head it has, plus a fresh head for
    each of ``tasks`` it lacks. Otherwise the encoder is ``base_model``'s pretrained weights
    (``pretrained``, the authors' start) or random from ``seed`` (the same weights under
    every transformers version), with fresh heads. A head's labels are its entity's BIO tags.
    """
    sizes = {task: len(default_labels(task)) for task in tasks}
    if init_from is not None:
        model, _, schemes = load_network(init_from, base_model)
        fresh = {task: n for task, n in sizes.items() if task not in model.classifiers}
        for task, n in sizes.items():
            if task in schemes and len(schemes[task].labels) != n:
                raise CheckpointError(
                    f"Head {task!r} of {init_from} predicts {len(schemes[task].labels)} labels, a {task} head "
                    f"needs {n}. Name a new head (--tasks) instead."
                )
        _add_heads(model, fresh, seed)
        return model.train()
    config, _ = load_base_model(base_model)
    if not pretrained:
        return MultiTaskTokenClassifier.from_config(config, sizes, seed=seed).train()
    try:
        encoder = AutoModel.from_pretrained(base_model)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"Could not load pretrained encoder weights from {base_model!r}: {err}. Offline, save the model once "
            "with `.save_pretrained(dir)` and pass that folder; for random weights leave out --pretrained."
        ) from err
    model = MultiTaskTokenClassifier(encoder, {}, dropout=0.1)
    _add_heads(model, sizes, seed)
    return model.train()


def _add_heads(model: MultiTaskTokenClassifier, sizes: Mapping[str, int], seed: int) -> None:
    """Fresh heads for ``model``, drawn from ``seed``."""
    hidden = model.encoder.config.hidden_size
    heads = {task: torch.nn.Linear(hidden, n) for task, n in sizes.items()}
    init_heads(heads, torch.Generator().manual_seed(seed))
    for task in sorted(heads):
        model.classifiers[task] = heads[task]


def write_start_checkpoint(
    base_model: PathLike,
    output: PathLike,
    tasks: Sequence[str] = DEFAULT_TASKS,
    seed: int = 0,
    pretrained: bool = False,
    init_from: Optional[PathLike] = None,
) -> Tuple[str, ...]:
    """:func:`start_network` saved in the published ``.pt`` layout (``encoder.*`` +
    ``classifiers.<head>.*``); returns the heads written."""
    model = start_network(base_model, tasks, seed, pretrained, init_from)
    save_checkpoint(model.state_dict(), output)
    return model.tasks
