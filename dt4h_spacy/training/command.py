"""``dt4h-spacy train CONFIG``: the command-line face of :func:`dt4h_spacy.training.train`."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from spacy.cli._util import parse_config_overrides
from thinc.api import ConfigValidationError

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
    """
    from . import train

    if not config.is_file():
        raise typer.BadParameter(f"config file {config} not found.", param_hint="CONFIG")
    selected = None if tasks is None else [name.strip() for name in tasks.split(",") if name.strip()]
    try:
        overrides = parse_config_overrides(ctx.args)
    except SystemExit as err:  # spaCy's parser exits on a malformed override
        raise typer.Exit(2) from err
    try:
        result = train(config, output, overrides=overrides, tasks=selected, resume=resume)
    except (ConfigValidationError, CheckpointError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    score = "no dev data" if result.best_score is None else f"best dev score {result.best_score:.4f}"
    typer.echo(f"{result.steps} steps, {score}; checkpoint {result.best_checkpoint}")
    for name, path in result.pipelines.items():
        typer.echo(f"{name}: pipeline {path}")


TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
