"""A trained ``.pt`` → one ready spaCy pipeline per task (language)."""

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import spacy

from .. import __version__
from ..labels import entity_from_task
from .blocks import TaskCorpus


def write_pipelines(
    checkpoint: Path,
    base_model: str,
    tasks: Mapping[str, TaskCorpus],
    output_dir: Path,
    scores: Optional[Mapping[str, Dict[str, Any]]] = None,
    max_length: int = 512,
    stride: int = 128,
) -> Dict[str, Path]:
    """Write ``output_dir/<task>/``: a blank pipeline of the task's language + ``dt4h_disease``.

    The pipeline holds the whole checkpoint (every head, like the published model) and routes
    its language to its task's head. Saved pipelines carry their weights, encoder config and
    tokenizer, so ``spacy.load`` and ``spacy package`` need neither the ``.pt`` nor the base
    model afterwards. Windows are cut as in training (``max_length``, ``stride``). Dev scores,
    when given, go into ``meta.json``'s ``performance``.
    """
    if Path(base_model).exists():
        base_model = str(Path(base_model).resolve())
    written: Dict[str, Path] = {}
    for task, corpus in tasks.items():
        lang = corpus.spacy_lang(task)
        nlp = spacy.blank(lang)
        nlp.add_pipe(
            "dt4h_disease",
            config={
                "checkpoint": str(Path(checkpoint).resolve()),
                "base_model": str(base_model),
                "tasks": {lang: task},
                "max_length": max_length,
                "stride": stride,
            },
        )
        nlp.meta.update(
            name=f"dt4h_{entity_from_task(task).lower()}",
            version=__version__,
            description=f"DT4H multi-task clinical NER, head {task}, trained with dt4h-spacy train.",
        )
        task_scores = (scores or {}).get(task)
        if task_scores:
            nlp.meta["performance"] = {
                "strict_p": task_scores["strict"]["precision"],
                "strict_r": task_scores["strict"]["recall"],
                "strict_f": task_scores["strict"]["f1"],
                "char_f": task_scores["char_f1"]["f1"],
            }
        path = Path(output_dir) / task
        path.parent.mkdir(parents=True, exist_ok=True)
        nlp.to_disk(path)
        written[task] = path
    return written
