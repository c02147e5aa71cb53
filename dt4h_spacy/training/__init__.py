"""Multi-task training of the DT4H model: ``dt4h-spacy train CONFIG`` and its Python API.

A config (spaCy's format, see ``configs/``) names a model (``[model]``), one section per
task (``[tasks.<head name>]``: train/dev ``DocBin``s from ``dt4h-spacy convert``) and the
loop (``[training]``). Adding a head is adding a ``[tasks.*]`` section; training some of
them is ``--tasks`` (``train(..., tasks=[...])``), with no edit to the config.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

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
    "select_tasks",
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


def select_tasks(config: Config, tasks: Sequence[str]) -> None:
    """Drop the ``[tasks.*]`` sections not named in ``tasks``, so only those heads train.

    Fine-tuning on one language should not need the other languages' data, nor an edited
    config; the saved ``config.cfg`` then says exactly what was trained.
    """
    available = sorted(config.get("tasks", {}))
    if not tasks:
        raise ValueError(f"No task named to train; the config's tasks are {available}.")
    unknown = [task for task in tasks if task not in available]
    if unknown:
        raise ValueError(
            f"Unknown task(s) {unknown}: the config's tasks ([tasks.<name>] sections) are {available}. "
            "Name some of those, or add a section for a new head."
        )
    for task in available:
        if task not in tasks:
            del config["tasks"][task]


def train(
    config: Union[Config, str, Path],
    output_dir: Union[str, Path],
    *,
    overrides: Optional[Dict[str, Any]] = None,
    tasks: Optional[Sequence[str]] = None,
    resume: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train as the config says; write checkpoints, ``config.cfg`` and the pipelines.

    ``output_dir`` gets ``best/model.pt`` and ``last/model.pt`` (the authors' ``.pt`` layout),
    ``last/trainer_state.pt`` (for ``resume``), ``scores.jsonl``, ``pipelines/<task>/`` and
    ``pipelines/multilingual/`` (see :func:`write_pipelines`). ``tasks`` trains only those of
    the config's ``[tasks.*]`` heads; a checkpoint's other heads are kept as they were.
    """
    if isinstance(config, Config):
        config = load_config_from_str(config.to_str(), overrides=overrides or {}, interpolate=False)
    else:
        config = load_config(config, overrides=overrides or {}, interpolate=False)
    if tasks is not None:
        select_tasks(config, tasks)
    resolved = registry.resolve(config, validate=True)
    seed = int(resolved["system"]["seed"])
    spec: ModelSpec = resolved["model"]
    settings: TrainerSettings = resolved["training"]
    corpora: Dict[str, TaskCorpus] = dict(resolved["tasks"])
    if not corpora:
        raise ValueError("The config has no [tasks.<name>] section: name at least one head and its data.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config.to_disk(output_dir / "config.cfg")
    fix_random_seed(seed)
    model, tokenizer = spec.build({task: len(default_labels(task)) for task in sorted(corpora)}, seed)
    prepared = prepare_tasks(corpora, tokenizer, settings)
    trainer = MultiTaskTrainer(settings, model, tokenizer, prepared, output_dir, seed, log)
    result = trainer.fit(resume=resume)
    result.pipelines = write_pipelines(
        result.best_checkpoint, spec.base_model, corpora, output_dir / "pipelines", result.best_scores,
        settings.max_length, settings.stride,
    )
    return result
