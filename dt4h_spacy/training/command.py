"""``dt4h-spacy train CONFIG``: the command-line face of :func:`dt4h_spacy.training.train`.

A spaCy pipeline config (one with ``[nlp]`` and ``[components]``, e.g. ``configs/finetune.cfg``)
runs on spaCy's own loop instead (:func:`spacy_train`), so our CLI reaches the same training
path as ``python -m spacy train``.
"""

from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional

import typer
from spacy.cli._util import parse_config_overrides
from spacy.util import load_config
from thinc.api import Config, ConfigValidationError

from ..errors import CheckpointError


def train_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Training config (see configs/mtl_disease.cfg).",
                                           show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for checkpoints, scores and pipelines.")] = Path("training"),
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="Train only these heads, comma-separated names of [tasks.*] sections (e.g. disease_es_ner); "
                        "only their data is read. Default: every task of the config.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/last/ (same config and data).")] = False,
) -> None:
    """Train the multi-task model: one shared encoder, one head per [tasks.*] section.

    Any config value can be overridden like with `spacy train`, e.g. --training.epochs 3
    --paths.corpus corpus. Writes OUTPUT/best/model.pt and OUTPUT/last/model.pt (the
    authors' .pt layout), OUTPUT/scores.jsonl, a spaCy pipeline per task in
    OUTPUT/pipelines/<task>/ and, for two or more languages, one pipeline serving them all in
    OUTPUT/pipelines/multilingual/. Exit code 2 for an unusable config, data or base model.
    A spaCy pipeline config (configs/finetune.cfg) runs on spaCy's own loop, as
    `python -m spacy train CONFIG --output OUTPUT` would: OUTPUT/model-best and
    OUTPUT/model-last; --tasks and --resume do not apply to it.
    """
    from . import train

    if not config.is_file():
        raise typer.BadParameter(f"config file {config} not found.", param_hint="CONFIG")
    selected = None if tasks is None else [name.strip() for name in tasks.split(",") if name.strip()]
    try:
        overrides = parse_config_overrides(ctx.args)
    except SystemExit as err:  # spaCy's parser exits on a malformed override
        raise typer.Exit(2) from err
    if is_pipeline_config(load_config(config, interpolate=False)):
        spacy_train(config, output, overrides, tasks=selected, resume=resume)
        return
    try:
        result = train(config, output, overrides=overrides, tasks=selected, resume=resume)
    except (ConfigValidationError, CheckpointError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    score = "no dev data" if result.best_score is None else f"best dev score {result.best_score:.4f}"
    typer.echo(f"{result.steps} steps, {score}; checkpoint {result.best_checkpoint}")
    for name, path in result.pipelines.items():
        typer.echo(f"{name}: pipeline {path}")


def is_pipeline_config(config: Config) -> bool:
    """Whether ``config`` describes a spaCy pipeline (``spacy train``'s format) rather than our
    multi-task trainer's (``[model]``, ``[tasks.*]``)."""
    return "nlp" in config and "components" in config


def spacy_train(config: Path, output: Path, overrides: Dict[str, Any], *, tasks: Optional[List[str]],
                resume: bool) -> None:
    """Run spaCy's own ``train`` on a pipeline config, the CLI's overrides applied.

    ``--tasks`` and ``--resume`` belong to the multi-task trainer; with a pipeline config they
    are refused rather than ignored, each naming spaCy's way to the same end.
    """
    from spacy.cli.train import train as spacy_cli_train

    if tasks is not None:
        typer.echo("error: --tasks applies to a [tasks.*] config; with a pipeline config, train some languages "
                   "by pointing --paths.train at their <lang>.spacy files.", err=True)
        raise typer.Exit(2)
    if resume:
        typer.echo("error: --resume applies to a [tasks.*] config; with a pipeline config, continue from a saved "
                   "pipeline with `dt4h-spacy export OUTPUT/model-last model.pt` and --paths.checkpoint model.pt.",
                   err=True)
        raise typer.Exit(2)
    try:
        spacy_cli_train(config, output, overrides=overrides)
    except (ConfigValidationError, CheckpointError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"pipelines {output / 'model-best'} and {output / 'model-last'}")


TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
