"""The README's first run: a small model trained on the bundled sample, offline.

The published checkpoint needs the network. So that the first ``dt4h-spacy predict`` shows
mentions a clinician recognises rather than a random model's noise, this trains a model of
the same kind from what the package ships (the sample and ``configs/sample.cfg`` are package
data, so it runs from any directory), exactly as the ``sample`` workflow of ``project.yml``
does: a tiny base model counted from the sample's training texts, a random start checkpoint
(``dt4h-spacy init-checkpoint``), the sample converted to DocBins, and spaCy's own
``train``. About a minute on two CPU cores.

Usage: ``python -m dt4h_spacy.demo OUTPUT_DIR [--sample DIR] [--config CFG]``, then predict
with ``--checkpoint OUTPUT_DIR/model.pt --base-model OUTPUT_DIR/base`` (the published
layout) or ``--model OUTPUT_DIR/training/model-best`` (the spaCy pipeline).
"""

import argparse
import sys
from pathlib import Path
from typing import Tuple

from .testing import build_base_model_from_texts
from .training.corpora import MENTIONS_FILE, convert_texts
from .training.export import export_checkpoint
from .training.run import train
from .training.start import write_start_checkpoint

PACKAGE = Path(__file__).resolve().parent
SAMPLE = PACKAGE / "sample"
CONFIG = PACKAGE / "configs" / "sample.cfg"
SPLITS = ("train", "dev")


def build_demo_model(directory: Path, sample: Path = SAMPLE, config: Path = CONFIG) -> Tuple[Path, Path]:
    """Train on ``sample`` (``train``/``dev`` folders with ``mentions.tsv``); returns the
    checkpoint (the authors' ``.pt`` layout) and the base model directory. The pipeline
    itself is ``directory/training/model-best``."""
    missing = [str(p) for p in (config, *(sample / split / MENTIONS_FILE for split in SPLITS)) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found; pass --sample and --config.")
    directory = Path(directory)
    texts = [path.read_text(encoding="utf-8") for path in sorted((sample / "train").rglob("*.txt"))]
    base = build_base_model_from_texts(texts, directory / "base")
    start = directory / "start.pt"
    write_start_checkpoint(base, start)
    for split in SPLITS:
        convert_texts(sample / split, directory / "corpus" / split)
    overrides = {"paths.train": str(directory / "corpus" / "train"), "paths.dev": str(directory / "corpus" / "dev"),
                 "paths.checkpoint": str(start), "paths.base_model": str(base)}
    train(config, directory / "training", overrides)
    checkpoint = directory / "model.pt"
    export_checkpoint(directory / "training" / "model-best", checkpoint)
    return checkpoint, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for model.pt, base/ and the training run")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="the sample corpus (default: the bundled one)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the training config (default: sample.cfg)")
    args = parser.parse_args()
    try:
        checkpoint, base = build_demo_model(args.output, args.sample, args.config)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"checkpoint: {checkpoint}\nbase model: {base}\npipeline: {args.output / 'training' / 'model-best'}")


if __name__ == "__main__":
    main()
