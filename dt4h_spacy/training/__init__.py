"""Multi-task training of the DT4H model: ``dt4h-spacy train CONFIG`` and its Python API.

A config (spaCy's format, see ``configs/``) names a model (``[model]``), one section per
task (``[tasks.<head name>]``: train/dev ``DocBin``s from ``dt4h-spacy convert``) and the
loop (``[training]``). Adding a head is adding a ``[tasks.*]`` section.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import spacy
from spacy.util import fix_random_seed, load_config, load_config_from_str, registry
from thinc.api import Config
from transformers import PreTrainedTokenizerFast

from ..labels import default_labels, entity_from_task
from .data import doc_units, encode_examples, read_docs
from .export import write_pipelines
from .loop import MultiTaskTrainer, TaskData, TrainResult, training_step
from .blocks import ModelSpec, TaskCorpus, TrainerSettings

__all__ = [
    "ModelSpec",
    "MultiTaskTrainer",
    "TaskCorpus",
    "TaskData",
    "TrainResult",
    "TrainerSettings",
    "prepare_tasks",
    "train",
    "training_step",
]


def prepare_tasks(
    tasks: Mapping[str, TaskCorpus], tokenizer: PreTrainedTokenizerFast, settings: TrainerSettings
) -> Dict[str, TaskData]:
    """Read each task's corpus into training windows and dev docs, tasks sorted by name.

    Sorted, so the authors' task order (es, it, ro) does not depend on how a config lists them.
    """
    prepared: Dict[str, TaskData] = {}
    for task in sorted(tasks):
        corpus = tasks[task]
        labels = default_labels(task)
        label2id = {label: i for i, label in enumerate(labels)}
        vocab = spacy.blank(corpus.spacy_lang(task)).vocab
        units = [u for doc in read_docs(corpus.train, vocab) for u in doc_units(doc, label2id, task, settings.unit)]
        dev_docs = read_docs(corpus.dev, vocab) if corpus.dev else []
        foreign = sorted({e.label_ for doc in dev_docs for e in doc.ents} - {entity_from_task(task)})
        if foreign:
            raise ValueError(
                f"Dev data of task {task!r} has entity labels {foreign}; the head predicts only "
                f"{entity_from_task(task)}. Convert with `--entity {entity_from_task(task)}`."
            )
        examples = encode_examples(tokenizer, units, settings.max_length, settings.stride)
        prepared[task] = TaskData(labels, examples, dev_docs)
    return prepared


def train(
    config: Union[Config, str, Path],
    output_dir: Union[str, Path],
    *,
    overrides: Optional[Dict[str, Any]] = None,
    resume: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train as the config says; write checkpoints, ``config.cfg`` and one pipeline per task.

    ``output_dir`` gets ``best/model.pt`` and ``last/model.pt`` (the authors' ``.pt`` layout),
    ``last/trainer_state.pt`` (for ``resume``), ``scores.jsonl`` and ``pipelines/<task>/``.
    """
    if isinstance(config, Config):
        config = load_config_from_str(config.to_str(), overrides=overrides or {}, interpolate=False)
    else:
        config = load_config(config, overrides=overrides or {}, interpolate=False)
    resolved = registry.resolve(config, validate=True)
    seed = int(resolved["system"]["seed"])
    spec: ModelSpec = resolved["model"]
    settings: TrainerSettings = resolved["training"]
    tasks: Dict[str, TaskCorpus] = dict(resolved["tasks"])
    if not tasks:
        raise ValueError("The config has no [tasks.<name>] section: name at least one head and its data.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config.to_disk(output_dir / "config.cfg")
    fix_random_seed(seed)
    model, tokenizer = spec.build({task: len(default_labels(task)) for task in sorted(tasks)}, seed)
    prepared = prepare_tasks(tasks, tokenizer, settings)
    trainer = MultiTaskTrainer(settings, model, tokenizer, prepared, output_dir, seed, log)
    result = trainer.fit(resume=resume)
    result.pipelines = write_pipelines(
        result.best_checkpoint, spec.base_model, tasks, output_dir / "pipelines", result.best_scores,
        settings.max_length, settings.stride,
    )
    return result
