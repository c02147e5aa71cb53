"""The config's building blocks, registered under versioned names.

A training config names these functions (``@architectures = "dt4h.MultiTaskTokenClassifier.v1"``
…), so every hyper-parameter lives in one file and can be overridden on the command line,
as with ``spacy train``. A changed behaviour gets a new version (``.v2``), never a silent
change, so an old config keeps meaning what it meant.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

from spacy.util import registry
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerFast

from ..errors import CheckpointError
from ..filenames import spacy_lang
from ..labels import lang_from_task
from ..model import MultiTaskTokenClassifier, load_base_model, load_network
from .data import TASK_SAMPLING, UNITS

LR_DECAYS = ("constant", "linear")
BEST_METRICS = ("strict", "char_f1")


@dataclass(frozen=True)
class TaskCorpus:
    """Where one head's data lives; the head's name is the config section's name."""

    train: Path
    dev: Optional[Path] = None
    lang: Optional[str] = None

    def spacy_lang(self, task: str) -> str:
        """The spaCy language of this task's pipeline (``cz`` → ``cs``, as in convert)."""
        lang = self.lang or lang_from_task(task)
        if lang is None:
            raise ValueError(
                f"Task {task!r} names no language (<entity>_<lang>_ner); set `lang` in its "
                f"[tasks.{task}] section."
            )
        return spacy_lang(lang)


@registry.readers("dt4h.TaskCorpus.v1")
def task_corpus(train: str, dev: Optional[str] = None, lang: Optional[str] = None) -> TaskCorpus:
    """A task's train (and optional dev) ``DocBin`` file or folder, from ``dt4h-spacy convert``."""
    return TaskCorpus(Path(train), Path(dev) if dev else None, lang)


@dataclass(frozen=True)
class ModelSpec:
    """How to build the network once the heads are known (they come from the tasks)."""

    base_model: str
    pretrained: bool = True
    dropout: float = 0.1
    init_checkpoint: Optional[str] = None
    allow_unsafe_pickle: bool = False

    def build(self, heads: Mapping[str, int], seed: int = 0) -> Tuple[MultiTaskTokenClassifier, PreTrainedTokenizerFast]:
        """The network in training mode and its tokenizer.

        From ``init_checkpoint``: its encoder and *all* its heads are kept (fine-tuning the
        published model keeps every language), heads it lacks are added fresh. Otherwise
        the encoder is the pretrained base model (the authors' start) or, with
        ``pretrained = false``, randomly initialised from the base model's config and ``seed``
        (the same weights whatever transformers version is installed).
        """
        if self.init_checkpoint:
            path = self.init_checkpoint
            model, tokenizer, _ = load_network(path, self.base_model, allow_unsafe_pickle=self.allow_unsafe_pickle)
            config = model.encoder.config
            model.dropout.p = self.dropout
            for task, n_labels in heads.items():
                if task not in model.classifiers:
                    model.classifiers[task] = nn.Linear(config.hidden_size, n_labels)
                elif model.classifiers[task].out_features != n_labels:
                    raise CheckpointError(
                        f"Head {task!r} of {path} predicts {model.classifiers[task].out_features} "
                        f"labels, the task needs {n_labels}. Rename the task to train a new head."
                    )
            return model.train(), tokenizer
        config, tokenizer = load_base_model(self.base_model)
        if self.pretrained:
            try:
                encoder = AutoModel.from_pretrained(self.base_model)
            except (OSError, ValueError) as err:
                raise CheckpointError(
                    f"Could not load pretrained encoder weights from {self.base_model!r}: {err}. "
                    "Offline, save the model once with `.save_pretrained(dir)` and point "
                    "`paths.base_model` at it; to start from random weights set "
                    "`model.pretrained = false`."
                ) from err
            model = MultiTaskTokenClassifier(encoder, heads, self.dropout)
        else:
            model = MultiTaskTokenClassifier.from_config(config, heads, self.dropout, seed=seed)
        return model.train(), tokenizer


@registry.architectures("dt4h.MultiTaskTokenClassifier.v1")
def multitask_token_classifier(
    base_model: str,
    pretrained: bool = True,
    dropout: float = 0.1,
    init_checkpoint: Optional[str] = None,
    allow_unsafe_pickle: bool = False,
) -> ModelSpec:
    """One shared encoder, dropout, one linear head per task: the authors' ``MultiTaskNERModel``."""
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    return ModelSpec(str(base_model), pretrained, dropout, init_checkpoint or None, allow_unsafe_pickle)


@dataclass(frozen=True)
class TrainerSettings:
    """Every knob of the loop. Defaults are the authors' recipe; the rest is off by default."""

    epochs: int = 10
    batch_size: int = 32
    max_length: int = 512
    stride: int = 128
    unit: str = "sentence"
    learning_rate: float = 2e-5
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    task_sampling: str = "sequential"
    temperature: float = 1.0
    warmup_ratio: float = 0.0
    lr_decay: str = "constant"
    max_grad_norm: Optional[float] = None
    mixed_precision: bool = True
    device: str = "auto"
    cpu_threads: int = 0
    eval_frequency: int = 0
    eval_batch_size: int = 32
    best_metric: str = "strict"

    def __post_init__(self) -> None:
        checks = {
            "unit": (self.unit, UNITS),
            "task_sampling": (self.task_sampling, TASK_SAMPLING),
            "lr_decay": (self.lr_decay, LR_DECAYS),
            "best_metric": (self.best_metric, BEST_METRICS),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {value!r}.")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("training.epochs, batch_size and eval_batch_size must be at least 1.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.cpu_threads < 0:
            raise ValueError("training.cpu_threads must be 0 (torch's default) or a positive count.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("training.max_grad_norm must be positive, or null for no clipping.")


@registry.misc("dt4h.MultiTaskTrainer.v1")
def multitask_trainer(
    epochs: int = 10,
    batch_size: int = 32,
    max_length: int = 512,
    stride: int = 128,
    unit: str = "sentence",
    learning_rate: float = 2e-5,
    adam_eps: float = 1e-8,
    weight_decay: float = 0.01,
    task_sampling: str = "sequential",
    temperature: float = 1.0,
    warmup_ratio: float = 0.0,
    lr_decay: str = "constant",
    max_grad_norm: Optional[float] = None,
    mixed_precision: bool = True,
    device: str = "auto",
    cpu_threads: int = 0,
    eval_frequency: int = 0,
    eval_batch_size: int = 32,
    best_metric: str = "strict",
) -> TrainerSettings:
    """The authors' loop (AdamW, one task's batches after another) plus opt-in improvements.

    ``weight_decay = 0.01`` is torch's AdamW default, which the authors used.
    ``eval_frequency = 0`` evaluates (and saves the resumable checkpoint) after each epoch.
    ``cpu_threads = 0`` keeps torch's thread count; small models on a busy CPU train much
    faster with 1, because idle threads spin waiting for each other.
    """
    return TrainerSettings(**locals())


def lr_factor(step: int, total: int, warmup_ratio: float, decay: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``."""
    warmup = int(round(total * warmup_ratio))
    if step < warmup:
        return (step + 1) / warmup
    if decay == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 1.0

