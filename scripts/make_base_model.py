"""Build the tiny stand-in for xlm-roberta-base that the sample workflow trains from.

The real base model is 1 GB and needs the network; the sample must run offline in minutes
on two CPU cores. This writes a directory of the same kind (XLM-R config + fast
sentencepiece-style tokenizer, no weights: the sample config sets ``pretrained = false``)
whose vocabulary is counted from the sample's training texts: frequent words whole, the
rest in pieces (so unseen words are split, as rare words are by XLM-R). Deterministic.

Usage: ``python scripts/make_base_model.py TEXTS_DIR OUT_DIR [--hidden 64] [--layers 2]``
"""

import argparse
from pathlib import Path

from dt4h_spacy.testing import build_base_model_from_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", type=Path, help="folder whose .txt files (recursively) feed the vocabulary")
    parser.add_argument("out", type=Path, help="directory to write config.json and the tokenizer files to")
    parser.add_argument("--vocab-size", type=int, default=2000, help="subword pieces besides the whole words")
    parser.add_argument("--min-word-count", type=int, default=2,
                        help="words this frequent get a piece of their own, as frequent words do in XLM-R")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    texts = [path.read_text(encoding="utf-8") for path in sorted(args.texts.rglob("*.txt"))]
    if not texts:
        parser.error(f"no .txt files under {args.texts}")
    build_base_model_from_texts(texts, args.out, args.vocab_size, args.min_word_count, args.hidden, args.layers)
    print(f"tiny base model (hidden {args.hidden}, {args.layers} layers) -> {args.out}")


if __name__ == "__main__":
    main()
