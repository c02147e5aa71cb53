"""`spacy train configs/finetune.cfg` against the authors' recipe (`dt4h-spacy train
configs/sample.cfg`), on the bundled sample, from the same random weights, with the same
epochs, learning rate, batch size and windows; both best pipelines are scored by one scorer
(spaCy's exact-span ents P/R/F on the dev docs, routed by their language). Prints JSON.

Usage: ``python benchmarks/finetune_parity.py WORKDIR [--epochs 8]``
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import spacy
from spacy.scorer import Scorer

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def sh(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def score(pipeline: Path, dev: Path) -> dict:
    from dt4h_spacy.training.spacy_loop import dt4h_corpus

    nlp = spacy.load(pipeline)
    examples = list(dt4h_corpus(dev)(nlp))
    for example in examples:
        example.predicted = nlp(example.predicted)
    by_lang = {}
    for lang in sorted({eg.reference._.dt4h_lang for eg in examples}):
        subset = [eg for eg in examples if eg.reference._.dt4h_lang == lang]
        by_lang[lang] = round(Scorer.score_spans(subset, "ents")["ents_f"], 4)
    total = Scorer.score_spans(examples, "ents")
    return {"ents_p": round(total["ents_p"], 4), "ents_r": round(total["ents_r"], 4),
            "ents_f": round(total["ents_f"], 4), "by_lang": by_lang}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    work = args.work.resolve()
    load_start = os.getloadavg()
    base, corpus = work / "base", work / "corpus"
    sh("scripts/make_base_model.py", "sample/train", str(base))
    for split in ("train", "dev"):
        sh("-m", "dt4h_spacy", "convert", f"sample/{split}", str(corpus / split), "--mentions",
           f"sample/{split}/mentions.tsv", "--recursive", "--entity", "DISEASE", "--quiet")

    from dt4h_spacy.checkpoint import save_checkpoint
    from dt4h_spacy.labels import default_labels
    from dt4h_spacy.training import train as authors_train
    from dt4h_spacy.training.blocks import ModelSpec
    from dt4h_spacy.training.spacy_loop import dt4h_corpus
    from spacy.cli.train import train as spacy_train

    tasks = ["disease_es_ner", "disease_it_ner", "disease_ro_ner"]
    # The random start of the authors' loop (configs/sample.cfg: pretrained = false, seed 0).
    model, _ = ModelSpec(str(base), pretrained=False).build({t: len(default_labels(t)) for t in tasks}, seed=0)
    save_checkpoint(model.state_dict(), work / "start.pt")

    sentences = list(dt4h_corpus(corpus / "train", unit="sentence")(spacy.blank("xx")))
    words = sum(len(eg.reference) - sum(t.is_space for t in eg.reference) for eg in sentences)
    by_lang = {}
    for eg in sentences:
        by_lang[eg.reference._.dt4h_lang] = by_lang.get(eg.reference._.dt4h_lang, 0) + 1
    steps_per_epoch = sum(math.ceil(n / 16) for n in by_lang.values())

    t0 = time.perf_counter()
    authors_train(ROOT / "configs" / "sample.cfg", work / "authors",
                  overrides={"paths.corpus": str(corpus), "paths.base_model": str(base),
                             "training.epochs": args.epochs}, log=lambda line: None)
    authors_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    spacy_train(ROOT / "configs" / "finetune.cfg", work / "spacy", overrides={
        "paths.train": str(corpus / "train"), "paths.dev": str(corpus / "dev"),
        "paths.checkpoint": str(work / "start.pt"), "paths.base_model": str(base),
        "training.max_epochs": args.epochs, "training.eval_frequency": steps_per_epoch,
        "training.batcher.size": 16, "training.optimizer.learn_rate": 0.002,
        "components.dt4h_disease.max_length": 256, "components.dt4h_disease.stride": 64,
    })
    spacy_s = time.perf_counter() - t0

    result = {
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"), "load_start": [round(x, 2) for x in load_start],
        "epochs": args.epochs, "train_sentences": len(sentences), "train_words": words,
        "authors": {**score(work / "authors" / "pipelines" / "multilingual", corpus / "dev"),
                    "train_s": round(authors_s, 1), "words_per_s": round(words * args.epochs / authors_s)},
        "spacy_train": {**score(work / "spacy" / "model-best", corpus / "dev"),
                        "train_s": round(spacy_s, 1), "words_per_s": round(words * args.epochs / spacy_s)},
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["f1_difference"] = round(result["spacy_train"]["ents_f"] - result["authors"]["ents_f"], 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
