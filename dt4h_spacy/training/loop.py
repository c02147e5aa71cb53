"""The multi-task training loop: steps, dev evaluation, best/last checkpoints, resume.

Checkpoints are the authors' ``torch.save(model.state_dict())`` (``encoder.*`` +
``classifiers.<task>.*``, plain tensors), so every ``model.pt`` written here loads in their
code and in our component alike. What resuming needs besides the weights (optimizer, step,
RNG state, best score) sits next to it in ``trainer_state.pt``, also plain data.
"""

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from spacy.tokens import Doc
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from ..checkpoint import TRAINER_STATE_FILE, load_checkpoint_file, save_checkpoint
from ..evaluate import evaluate
from ..inference import WordTagger, max_positions, torch_device
from ..labels import LabelScheme
from ..model import MultiTaskTokenClassifier
from ..sentences import sentence_starts
from ..spans import predicted_spans, word_texts, word_tokens
from ..tsv import Mention
from .data import IGNORE_INDEX, Batch, Example, collate, epoch_plan
from .blocks import TrainerSettings, lr_factor

MODEL_FILE = "model.pt"
SCORES_FILE = "scores.jsonl"


@dataclass
class TaskData:
    """One head's prepared data: training windows and dev docs."""

    labels: Sequence[str]
    examples: List[Example]
    dev_docs: List[Doc] = field(default_factory=list)


@dataclass
class TrainResult:
    """Where the run left its checkpoints, and how the best one scored."""

    best_checkpoint: Path
    last_checkpoint: Path
    best_score: Optional[float]
    best_scores: Dict[str, Any]
    steps: int
    pipelines: Dict[str, Path] = field(default_factory=dict)


def training_step(
    model: MultiTaskTokenClassifier,
    optimizer: torch.optim.Optimizer,
    task: str,
    batch: Batch,
    scaler: Optional[torch.amp.GradScaler] = None,
    max_grad_norm: Optional[float] = None,
) -> float:
    """One optimizer step on one task's batch; returns the loss.

    The authors' loss: cross-entropy over subword positions, ``-100`` ignored, under fp16
    autocast when the scaler is enabled (on GPU).
    """
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch.input_ids.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        logits = model(batch.input_ids, batch.attention_mask, task)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.item())


def dev_scores(
    model: MultiTaskTokenClassifier,
    tokenizer: PreTrainedTokenizerFast,
    task: str,
    labels: Sequence[str],
    docs: Sequence[Doc],
    settings: TrainerSettings,
    device: torch.device,
) -> Dict[str, Any]:
    """Official strict and character-overlap scores of ``task`` on its dev docs.

    Prediction goes through the component's own path (windows, BIO decoding, span
    trimming), so the dev score is the score the saved pipeline will get.
    """
    scheme = LabelScheme(tuple(labels))
    tagger = WordTagger(
        model=model, tokenizer=tokenizer, schemes={task: scheme}, max_length=settings.max_length,
        stride=settings.stride, batch_size=settings.eval_batch_size, max_batch_subwords=None, device=device,
    )
    words = [word_tokens(doc) for doc in docs]
    texts = [word_texts(doc, w) for doc, w in zip(docs, words)]
    starts = [sentence_starts(doc, w) for doc, w in zip(docs, words)]
    gold: List[Mention] = []
    pred: List[Mention] = []
    try:
        for n, (doc, w, probs) in enumerate(zip(docs, words, tagger.predict(texts, [task] * len(docs), starts))):
            name = f"dev-{n:06d}"
            gold.extend(Mention(name, e.label_, e.start_char, e.end_char, e.text) for e in doc.ents)
            for span in predicted_spans(doc, w, probs, scheme):
                pred.append(Mention(name, span.label_, span.start_char, span.end_char, span.text))
    finally:
        model.train()
    result = evaluate(gold, pred)
    return {"strict": result["strict"], "char_f1": result["char_f1"]}


class MultiTaskTrainer:
    """Runs the loop of :class:`TrainerSettings` on prepared tasks, writing into ``output_dir``.

    ``output_dir/last/`` (model + trainer state) is rewritten at every evaluation and is what
    ``resume`` continues from; ``output_dir/best/model.pt`` is the best dev score so far
    (the last weights when no task has dev data); ``scores.jsonl`` logs every evaluation.
    """

    def __init__(
        self,
        settings: TrainerSettings,
        model: MultiTaskTokenClassifier,
        tokenizer: PreTrainedTokenizerFast,
        tasks: Mapping[str, TaskData],
        output_dir: Path,
        seed: int,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        limit = max_positions(model.encoder.config)
        if settings.max_length > limit:
            raise ValueError(f"training.max_length {settings.max_length} exceeds the encoder's {limit} positions.")
        empty = [task for task, data in tasks.items() if not data.examples]
        if empty:
            raise ValueError(f"Tasks {empty} have no training examples; check their `train` corpus.")
        self.settings = settings
        self.model = model
        self.tokenizer = tokenizer
        self.tasks = dict(tasks)
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.device = torch_device(settings.device)
        self._log = log

    # -- the plan ------------------------------------------------------------------------
    def plan(self, epoch: int) -> List[tuple]:
        sizes = {task: len(data.examples) for task, data in self.tasks.items()}
        s = self.settings
        return epoch_plan(sizes, s.batch_size, self.seed, epoch, s.task_sampling, s.temperature)

    @property
    def has_dev(self) -> bool:
        return any(data.dev_docs for data in self.tasks.values())

    # -- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        threads = torch.get_num_threads()
        if self.settings.cpu_threads:
            torch.set_num_threads(self.settings.cpu_threads)
        try:
            return self._fit(resume)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, resume: bool) -> TrainResult:
        s = self.settings
        model = self.model.to(self.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, eps=s.adam_eps, weight_decay=s.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, enabled=s.mixed_precision and self.device.type == "cuda")
        steps_per_epoch = len(self.plan(0))
        total = s.epochs * steps_per_epoch
        step, best = 0, {"score": None, "scores": {}}
        if resume:
            step, best = self._restore(optimizer, scaler, steps_per_epoch)
        else:
            self._clear_previous_run()
        losses: List[float] = []
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not sys.stderr.isatty(), dynamic_ncols=True)
        plan_epoch, plan = -1, []
        try:
            while step < total:
                epoch, k = divmod(step, steps_per_epoch)
                if epoch != plan_epoch:
                    plan_epoch, plan = epoch, self.plan(epoch)
                task, indices = plan[k]
                for group in optimizer.param_groups:
                    group["lr"] = s.learning_rate * lr_factor(step, total, s.warmup_ratio, s.lr_decay)
                batch = collate([self.tasks[task].examples[i] for i in indices], self.tokenizer.pad_token_id)
                loss = training_step(model, optimizer, task, batch.to(self.device), scaler, s.max_grad_norm)
                if not math.isfinite(loss) and not scaler.is_enabled():
                    raise FloatingPointError(f"Loss became {loss} at step {step + 1} (task {task}); lower the learning rate.")
                losses.append(loss)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
                if step % steps_per_epoch == 0 or (s.eval_frequency and step % s.eval_frequency == 0):
                    record = self._checkpoint(step, step / steps_per_epoch, losses, optimizer, scaler, best)
                    losses = []
                    bar.set_postfix(loss=f"{record['loss']:.4f}", dev=_format_score(record["score"]), refresh=True)
                    self._emit(bar, _format_record(record))
        finally:
            bar.close()
        if not self.has_dev:
            self._best_path().parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.output_dir / "last" / MODEL_FILE, self._best_path())
        return TrainResult(self._best_path(), self.output_dir / "last" / MODEL_FILE, best["score"], best["scores"], step)

    def _clear_previous_run(self) -> None:
        """A fresh run must not inherit a stale best checkpoint or score log."""
        for name in ("last", "best"):
            shutil.rmtree(self.output_dir / name, ignore_errors=True)
        (self.output_dir / SCORES_FILE).unlink(missing_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _emit(self, bar: tqdm, line: str) -> None:
        if self._log is not None:
            self._log(line)
        elif bar.disable:
            print(line, file=sys.stderr, flush=True)
        else:
            bar.write(line, file=sys.stderr)

    def _best_path(self) -> Path:
        return self.output_dir / "best" / MODEL_FILE

    def evaluate(self) -> Dict[str, Dict[str, Any]]:
        """Dev scores of every task that has dev docs."""
        return {
            task: dev_scores(self.model, self.tokenizer, task, data.labels, data.dev_docs, self.settings, self.device)
            for task, data in self.tasks.items()
            if data.dev_docs
        }

    def _checkpoint(self, step: int, epoch: float, losses: List[float], optimizer, scaler, best: Dict[str, Any]) -> Dict[str, Any]:
        scores = self.evaluate()
        metric = self.settings.best_metric
        score = sum(v[metric]["f1"] for v in scores.values()) / len(scores) if scores else None
        is_best = score is not None and (best["score"] is None or score > best["score"])
        if is_best:
            best.update(score=score, scores=scores)
            tmp = self._best_path().with_name(f".{MODEL_FILE}.tmp")
            save_checkpoint(self.model.state_dict(), tmp)
            os.replace(tmp, self._best_path())
        record = {"step": step, "epoch": round(epoch, 4), "loss": sum(losses) / max(1, len(losses)),
                  "score": score, "best": is_best, "scores": scores}
        self._save_last(step, optimizer, scaler, best)
        with open(self.output_dir / SCORES_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return record

    # -- resumable state -----------------------------------------------------------------
    def _signature(self, steps_per_epoch: int) -> Dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {"tasks": sorted(self.tasks), "steps_per_epoch": steps_per_epoch, "seed": self.seed,
                "epochs": self.settings.epochs, "batch_size": self.settings.batch_size}

    def _save_last(self, step: int, optimizer, scaler, best: Dict[str, Any]) -> None:
        """Write ``last/`` beside the old one, then swap, so a crash never leaves half a checkpoint."""
        tmp = self.output_dir / ".last.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(self.model.state_dict(), tmp / MODEL_FILE)
        state = {
            "step": step,
            "best_score": best["score"],
            "best_scores": json.dumps(best["scores"]),
            "signature": json.dumps(self._signature(len(self.plan(0)))),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(state, tmp / TRAINER_STATE_FILE)
        last, old = self.output_dir / "last", self.output_dir / ".last.old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)

    def _restore(self, optimizer, scaler, steps_per_epoch: int):
        last = self.output_dir / "last"
        if not (last / TRAINER_STATE_FILE).exists():
            raise FileNotFoundError(f"Nothing to resume: {last / TRAINER_STATE_FILE} does not exist. Train without --resume.")
        state = torch.load(last / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
        expected = self._signature(steps_per_epoch)
        saved = json.loads(state["signature"])
        if saved != expected:
            changed = sorted(k for k in expected if saved.get(k) != expected[k])
            raise ValueError(
                f"Cannot resume from {last}: {', '.join(changed)} changed since it was written "
                f"(then {[saved.get(k) for k in changed]}, now {[expected[k] for k in changed]}). "
                "Resume with the same config and data, or start a new run."
            )
        self.model.load_state_dict(load_checkpoint_file(last / MODEL_FILE))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["step"], {"score": state["best_score"], "scores": json.loads(state["best_scores"])}


def _format_score(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.4f}"


def _format_record(record: Dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']:g}", f"step {record['step']}", f"loss {record['loss']:.4f}"]
    for task, scores in record["scores"].items():
        parts.append(f"{task} strict F1 {scores['strict']['f1']:.4f} char F1 {scores['char_f1']['f1']:.4f}")
    if record["score"] is not None:
        parts.append(f"score {record['score']:.4f}" + (" (best)" if record["best"] else ""))
    return " | ".join(parts)
