"""``dt4h-spacy train CONFIG`` and ``dt4h-spacy init-checkpoint``: the command-line faces of
training, which runs on spaCy's own loop only.

``train`` is ``python -m spacy train CONFIG --output OUTPUT`` with the same overrides, plus
what the authors' data needs: ``--paths.train``/``--paths.dev`` may be folders of annotated
texts, converted first. ``init-checkpoint`` writes the checkpoint a run starts from when
there is no trained one (a base encoder with fresh heads, or a new head on a trained model).
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from spacy.cli._util import parse_config_overrides
from spacy.util import load_config
from thinc.api import Config, ConfigValidationError

from ..errors import CheckpointError
from .run import train
from .start import DEFAULT_TASKS, write_start_checkpoint

RESUME_MESSAGE = (
    "spaCy's training loop cannot resume a run (it saves no optimizer state or step). Continue from the "
    "last weights as a new run instead: --paths.checkpoint {output}/model-last and another --output (the "
    "optimizer and learning-rate schedule start afresh)."
)


def train_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="spaCy training config (configs/finetune.cfg).",
                                           show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for model-best/ and model-last/.")] = Path("training"),
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="Not for spaCy's loop: train some languages by pointing --paths.train at their data.",
        show_default=False, hidden=True)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Not possible with spaCy's loop; the error says what to "
                                                          "do instead.", hidden=True)] = False,
) -> None:
    """Fine-tune on spaCy's own loop: `python -m spacy train CONFIG --output OUTPUT`.

    Any config value can be overridden as with `spacy train`, e.g. --paths.train corpus/train
    --training.max_epochs 3. --paths.train and --paths.dev take .spacy files or folders from
    `dt4h-spacy convert`, or folders of annotated texts (.txt with a mentions.tsv, or brat
    .ann files), which are converted into OUTPUT/corpus/ first. --paths.checkpoint takes a
    checkpoint or a saved pipeline (an earlier run's model-last: a new run from its weights,
    with its own encoder config and tokenizer). Writes OUTPUT/model-best and
    OUTPUT/model-last (spaCy pipelines; `dt4h-spacy export` gives the published .pt). Exit
    code 2 for an unusable config, data or checkpoint.
    """
    if not config.is_file():
        raise typer.BadParameter(f"config file {config} not found.", param_hint="CONFIG")
    try:
        overrides = parse_config_overrides(ctx.args)
    except SystemExit as err:  # spaCy's parser exits on a malformed override
        raise typer.Exit(2) from err
    refusal = _refusal(load_config(config, interpolate=False), config, output, tasks, resume)
    if refusal:
        typer.echo(f"error: {refusal}", err=True)
        raise typer.Exit(2)
    try:
        train(config, output, overrides)
    except (ConfigValidationError, CheckpointError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"pipelines {output / 'model-best'} and {output / 'model-last'}")


def _refusal(config: Config, path: Path, output: Path, tasks: Optional[str], resume: bool) -> Optional[str]:
    """Why this run cannot start as asked, with the way out; None when it can."""
    if not ("nlp" in config and "components" in config):
        return (f"{path} is not a spaCy pipeline config (no [nlp] and [components]); the [tasks.*] format of the "
                "retired multi-task loop is gone. Use configs/finetune.cfg with --paths.train and --paths.dev "
                "(one folder of <lang>.spacy files serves every language) and --paths.checkpoint (a fresh start "
                "comes from `dt4h-spacy init-checkpoint`).")
    if tasks is not None:
        return ("--tasks does not apply to spaCy's loop: train some languages by pointing --paths.train at their "
                "<lang>.spacy files; the checkpoint's other heads are kept as they were.")
    if resume:
        return RESUME_MESSAGE.format(output=output)
    return None


def init_checkpoint_command(
    base_model: Annotated[str, typer.Argument(
        metavar="BASE_MODEL", help="Encoder config + tokenizer folder (or hub id), e.g. a saved xlm-roberta-base.",
        show_default=False)],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT_PT", help="Checkpoint file to write (.pt).",
                                           show_default=False)],
    tasks: Annotated[str, typer.Option(
        "--tasks", help="Heads, comma-separated <entity>_<lang>_ner names.")] = ",".join(DEFAULT_TASKS),
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="Start from BASE_MODEL's pretrained encoder weights (the authors' start); default: "
                             "random weights from --seed.")] = False,
    init_from: Annotated[Optional[Path], typer.Option(
        "--from", help="Keep this checkpoint's encoder and heads and add fresh heads for the --tasks it lacks.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write the checkpoint a `spacy train` run starts from (--paths.checkpoint), in the published layout."""
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter("name at least one head, e.g. disease_es_ner.", param_hint="--tasks")
    if pretrained and init_from is not None:
        raise typer.BadParameter("--from keeps that checkpoint's encoder; drop --pretrained.", param_hint="--from")
    try:
        heads = write_start_checkpoint(base_model, output, names, seed, pretrained, init_from)
    except (CheckpointError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"{output}: heads {', '.join(heads)}")


TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
