"""`spacy train configs/sample.cfg` against the authors' recipe, on the bundled sample, from
the same random weights, with the same epochs, learning rate, batch size and windows; both
best pipelines are scored by one scorer (spaCy's exact-span ents P/R/F on the dev docs,
routed by their language). Prints JSON.

The authors' recipe is a minimal reference loop kept here, not a second training path of
the package: their training notebook's loop (each epoch, every batch of one task, shuffled,
then the next task's; torch's AdamW, eps 1e-8, weight decay 0.01; cross-entropy on each
word's first subword; dropout 0.1; a dev evaluation per epoch, the best kept), written over
the component's own collation (``gold.training_batch``) and forward (``word_logits``), so
the two runs differ only in the loop and the optimizer (spaCy's loop with thinc's Adam).

Usage: ``python benchmarks/finetune_parity.py WORKDIR [--epochs 8] [--seed 0]`` (``--seed``: the
batch order and dropout of both runs; the start weights are always the sample's seed 0)
"""

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import spacy
import torch
from spacy.scorer import Scorer
from spacy.util import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sample.cfg"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def sh(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def score(nlp, dev: Path) -> dict:
    from dt4h_spacy.training.spacy_loop import dt4h_corpus

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


def authors_recipe(start: Path, base: Path, corpus: Path, epochs: int, lr: float, batch_size: int,
                   max_length: int, stride: int, output: Path, seed: int = 0) -> float:
    """The reference loop (see the module docstring); saves the best pipeline at ``output``,
    returns the training seconds (dev evaluations and saving excluded)."""
    from dt4h_spacy.gold import annotated, example_language, example_units, training_batch
    from dt4h_spacy.inference import batch_tensors
    from dt4h_spacy.training.spacy_loop import dt4h_corpus

    nlp = spacy.blank("xx")
    nlp.add_pipe("dt4h_langdetect")
    component = nlp.add_pipe("dt4h_disease", config={"checkpoint": str(start), "base_model": str(base),
                                                     "max_length": max_length, "stride": stride})
    tagger = component.tagger
    model, schemes = tagger.model, tagger.schemes
    units: Dict[str, List] = {}
    for index, eg in enumerate(dt4h_corpus(corpus / "train", unit="sentence")(nlp)):
        if annotated(eg):
            lang = example_language(eg)
            heads = component.languages[lang]
            units.setdefault(lang, []).extend(example_units(eg, index, heads, schemes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-8, weight_decay=0.01)
    rng = random.Random(seed)
    torch.manual_seed(seed)  # dropout
    best, seconds = -1.0, 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        model.dropout.p = 0.1
        for lang in sorted(units):
            order = list(range(len(units[lang])))
            rng.shuffle(order)
            for start_at in range(0, len(order), batch_size):
                batch = training_batch([units[lang][i] for i in order[start_at:start_at + batch_size]],
                                       tagger.tokenizer, schemes, max_length, stride)
                logits = model.word_logits(*batch_tensors(batch.windows, tagger.device))
                loss = sum(torch.nn.functional.cross_entropy(logits[task], torch.from_numpy(batch.targets[task]),
                                                             reduction="sum") for task in logits) / batch.n_words
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        seconds += time.perf_counter() - t0
        model.eval()
        dev = score(nlp, corpus / "dev")["ents_f"]
        if dev > best:
            best = dev
            nlp.to_disk(output)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work.resolve()
    load_start = os.getloadavg()
    base, corpus = work / "base", work / "corpus"
    sh("scripts/make_base_model.py", "sample/train", str(base))
    for split in ("train", "dev"):
        sh("-m", "dt4h_spacy", "convert", f"sample/{split}", str(corpus / split), "--mentions",
           f"sample/{split}/mentions.tsv", "--recursive", "--entity", "DISEASE", "--quiet")

    from spacy.cli.train import train as spacy_train

    from dt4h_spacy.training.spacy_loop import dt4h_corpus
    from dt4h_spacy.training.start import write_start_checkpoint

    torch.set_num_threads(1)
    write_start_checkpoint(base, work / "start.pt")  # the sample's random start (seed 0)
    sentences = list(dt4h_corpus(corpus / "train", unit="sentence")(spacy.blank("xx")))
    words = sum(len(eg.reference) - sum(t.is_space for t in eg.reference) for eg in sentences)
    config = load_config(CONFIG)
    component = config["components"]["dt4h_disease"]
    lr, size = config["training"]["optimizer"]["learn_rate"], config["training"]["batcher"]["size"]

    t0 = time.perf_counter()
    authors_s = authors_recipe(work / "start.pt", base, corpus, args.epochs, lr, size, component["max_length"],
                               component["stride"], work / "authors", args.seed)
    authors_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    spacy_train(CONFIG, work / "spacy", overrides={
        "paths.train": str(corpus / "train"), "paths.dev": str(corpus / "dev"),
        "paths.checkpoint": str(work / "start.pt"), "paths.base_model": str(base),
        "training.max_epochs": args.epochs, "system.seed": args.seed,
    })
    spacy_s = time.perf_counter() - t0

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "load_start": [round(x, 2) for x in load_start],
        "epochs": args.epochs, "seed": args.seed, "learn_rate": lr, "batch_size": size, "train_sentences": len(sentences),
        "train_words": words,
        "authors_reference": {**score(spacy.load(work / "authors"), corpus / "dev"), "train_s": round(authors_s, 1),
                              "words_per_s": round(words * args.epochs / authors_s),
                              "words_per_s_incl_eval_and_saving": round(words * args.epochs / authors_total)},
        "spacy_train": {**score(spacy.load(work / "spacy" / "model-best"), corpus / "dev"),
                        "train_s_incl_eval_and_saving": round(spacy_s, 1),
                        "words_per_s_incl_eval_and_saving": round(words * args.epochs / spacy_s)},
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["f1_difference"] = round(result["spacy_train"]["ents_f"] - result["authors_reference"]["ents_f"], 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
