"""A trained ``.pt`` → one ready spaCy pipeline per task (language), and one serving them all;
and back: a pipeline's network → the published ``.pt`` layout (``dt4h-spacy export``)."""

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import spacy

from .. import __version__
from ..checkpoint import check_pipeline_folder, save_checkpoint
from ..component import FACTORY, DiseaseRecognizer
from ..errors import CheckpointError
from ..labels import entity_from_task
from .blocks import TaskCorpus

MULTILINGUAL = "multilingual"
MULTILINGUAL_LANG = "xx"  # spaCy's multi-language class: a tokenizer with no language's exceptions
PERFORMANCE_KEYS = {"strict_p": ("strict", "precision"), "strict_r": ("strict", "recall"),
                    "strict_f": ("strict", "f1"), "char_f": ("char_f1", "f1")}


def write_pipelines(
    checkpoint: Path,
    base_model: str,
    tasks: Mapping[str, TaskCorpus],
    output_dir: Path,
    scores: Optional[Mapping[str, Dict[str, Any]]] = None,
    max_length: int = 512,
    stride: int = 128,
) -> Dict[str, Path]:
    """Write ``output_dir/<task>/`` per task, and ``output_dir/multilingual/`` for several languages.

    ``<task>/`` is a blank pipeline of the task's language + ``dt4h_disease``; it holds the
    whole checkpoint (every head, like the published model) and routes its language to its
    task's head. ``multilingual/`` (spaCy language ``xx``) holds the encoder once for all
    tasks and routes each doc by ``doc._.dt4h_lang`` (else the doc's language) to its head;
    it is written when the tasks serve two or more languages, one head each (a language
    routes to one head only). Saved pipelines carry their weights, encoder config and
    tokenizer, so ``spacy.load`` and ``spacy package`` need neither the ``.pt`` nor the base
    model afterwards. Windows are cut as in training (``max_length``, ``stride``). Dev
    scores, when given, go into ``meta.json``'s ``performance`` (averaged over the tasks for
    ``multilingual/``, as the trainer's best score is). Returns folder name → path.
    """
    if Path(base_model).exists():
        base_model = str(Path(base_model).resolve())
    settings = {"checkpoint": str(Path(checkpoint).resolve()), "base_model": str(base_model),
                "max_length": max_length, "stride": stride}
    output_dir = Path(output_dir)
    written: Dict[str, Path] = {}
    routes: Dict[str, str] = {}
    for task, corpus in tasks.items():
        lang = corpus.spacy_lang(task)
        routes[lang] = task
        written[task] = _write_pipeline(lang, {lang: task}, settings, scores, output_dir / task)
    if len(routes) > 1 and len(routes) == len(tasks):
        written[MULTILINGUAL] = _write_pipeline(MULTILINGUAL_LANG, routes, settings, scores, output_dir / MULTILINGUAL)
    return written


def _write_pipeline(
    lang: str,
    routes: Dict[str, str],
    settings: Dict[str, Any],
    scores: Optional[Mapping[str, Dict[str, Any]]],
    path: Path,
) -> Path:
    """A blank ``lang`` pipeline whose ``dt4h_disease`` serves ``routes`` (language → head), saved at ``path``."""
    nlp = spacy.blank(lang)
    nlp.add_pipe(FACTORY, config={**settings, "tasks": routes})
    heads = sorted(routes.values())
    entities = sorted({entity_from_task(task).lower() for task in heads})
    nlp.meta.update(
        name="dt4h_" + "_".join(entities),
        version=__version__,
        description=f"DT4H multi-task clinical NER, head{'s' if len(heads) > 1 else ''} {', '.join(heads)}, "
                    "trained with dt4h-spacy train.",
    )
    scored = [scores[task] for task in heads if scores and scores.get(task)]
    if scored:
        nlp.meta["performance"] = {
            key: sum(s[metric][value] for s in scored) / len(scored) for key, (metric, value) in PERFORMANCE_KEYS.items()
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(path)
    return path


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
