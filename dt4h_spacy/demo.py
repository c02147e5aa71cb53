"""The README's first run: a small model trained on the bundled sample, offline.

The published checkpoint needs the network. So that the first ``dt4h-spacy predict`` shows
mentions a clinician recognises rather than a random model's noise, this trains a model of
the same kind from what the repository ships, exactly as the ``sample`` workflow of
``project.yml`` does: a tiny base model counted from the sample's training texts, the
sample converted to DocBins, and the multi-task trainer with ``configs/sample.cfg``.
About a minute on two CPU cores.

Usage: ``python -m dt4h_spacy.demo OUTPUT_DIR [--sample sample] [--config configs/sample.cfg]``
(from the repository root), then predict with ``--checkpoint OUTPUT_DIR/model.pt
--base-model OUTPUT_DIR/base``.
"""

import argparse
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional, Tuple

from .corpus import build_docbins, read_tsv_corpus, write_docbins
from .testing import build_base_model_from_texts
from .training import train

SPLITS = ("train", "dev")


def build_demo_model(
    directory: Path, sample: Path = Path("sample"), config: Path = Path("configs/sample.cfg"),
    log: Optional[Callable[[str], None]] = None,
) -> Tuple[Path, Path]:
    """Train on ``sample`` (``train``/``dev`` folders with ``mentions.tsv``); returns the
    checkpoint (the authors' ``.pt`` layout) and the base model directory."""
    missing = [str(p) for p in (config, *(sample / split / "mentions.tsv" for split in SPLITS)) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found. Run this from the repository root (it reads the bundled "
            "sample/ and configs/sample.cfg), or pass --sample and --config."
        )
    directory = Path(directory)
    texts = [path.read_text(encoding="utf-8") for path in sorted((sample / "train").rglob("*.txt"))]
    base = build_base_model_from_texts(texts, directory / "base")
    for split in SPLITS:
        conversion = build_docbins(read_tsv_corpus(sample / split, sample / split / "mentions.tsv", recursive=True))
        if conversion.failures:
            raise ValueError(f"{sample / split}: {conversion.failures[0]}")
        write_docbins(conversion, directory / "corpus" / split)
    result = train(config, directory / "training", log=log,
                   overrides={"paths.corpus": str(directory / "corpus"), "paths.base_model": str(base)})
    checkpoint = directory / "model.pt"
    shutil.copyfile(result.best_checkpoint, checkpoint)
    return checkpoint, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for model.pt, base/ and the training run")
    parser.add_argument("--sample", type=Path, default=Path("sample"), help="the bundled sample corpus")
    parser.add_argument("--config", type=Path, default=Path("configs/sample.cfg"), help="the training config")
    args = parser.parse_args()
    try:
        checkpoint, base = build_demo_model(args.output, args.sample, args.config,
                                            log=lambda line: print(line, file=sys.stderr))
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"checkpoint: {checkpoint}\nbase model: {base}")


if __name__ == "__main__":
    main()
