"""fp32, bf16 (``precision = "bf16"``: torch.autocast on the CPU) and int8 (``quantize =
true``: dynamic quantization) on this CPU, and what ``precision = "auto"`` picks here.

One process, interleaved rounds (each round runs every method on the same documents, the
order rotating), so other load on the machine hits every method alike; a ratio is the median
of the per-round ratios. Two encoders:

- ``base``: xlm-roberta-base's width (hidden 768, 12 heads, FFN 3072) with ``--layers`` layers
  (default 4) and random weights, on clinical-case-like documents: the speed that matters;
- ``tiny``: the trained tiny model of the test suite (hidden 32): speed and entity agreement.

Entity agreement against fp32 (identical ``(start, end, label)`` over the larger of the two
sets) on the trained tiny model for its own synthetic case reports (es/it/ro) and for real
Spanish clinical text (NUBes sentences, ``--nubes``; skipped when absent), and on the
base-width encoder (its random weights tag arbitrary words, which stresses the numerics: a
word whose labels are nearly tied flips first). The JSON records the CPU, its flags, the load
average at start and end, and torch's threads. Last printed line: the JSON (also ``--output``).

    python benchmarks/precision.py --output precision.json
"""

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import spacy
import torch
from spacy.language import Language
from transformers import XLMRobertaConfig

from dt4h_spacy.model import MultiTaskTokenClassifier
from dt4h_spacy.runtime import auto_precision
from dt4h_spacy.testing import (
    TASKS,
    build_tiny_base_model,
    build_tiny_checkpoint,
    build_tokenizer,
    clinical_case,
    clinical_sentence,
    train_tiny_model,
)
from throughput import cpu_info  # this folder: the CPU's model and the flags that decide int8 and bf16

METHODS = {"fp32": {}, "bf16": {"precision": "bf16"}, "int8": {"quantize": True}}
LABELS = ("B-DISEASE", "I-DISEASE", "O")


def build_base(workdir: Path, layers: int) -> Path:
    """A base-width encoder with random weights and a small clinical tokenizer (the
    embedding's size does not change the speed of the layers)."""
    base = workdir / "base"
    rng = random.Random(3)
    pool = [clinical_sentence(rng, lang) for lang in ("es", "it", "ro") for _ in range(200)]
    build_tokenizer(pool, vocab_size=2000).save_pretrained(base)
    XLMRobertaConfig(vocab_size=2000, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2, type_vocab_size=1).save_pretrained(base)
    config = XLMRobertaConfig.from_pretrained(base)
    model = MultiTaskTokenClassifier.from_config(config, {task: len(LABELS) for task in TASKS}, seed=0).eval()
    torch.save(model.state_dict(), workdir / "base.pt")
    return base


def pipelines(lang: str, checkpoint: Path, base: Path) -> Dict[str, Language]:
    nlps = {}
    for name, config in METHODS.items():
        nlps[name] = spacy.blank(lang)
        nlps[name].add_pipe("dt4h_disease", config={"checkpoint": str(checkpoint), "base_model": str(base), **config})
    return nlps


def entities(nlp: Language, texts: Sequence[str]) -> List[set]:
    return [{(e.start_char, e.end_char, e.label_) for e in doc.spans["dt4h"]} for doc in nlp.pipe(texts)]


def agreement(nlps: Dict[str, Language], texts: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per method, its entities identical to fp32's."""
    reference = entities(nlps["fp32"], texts)
    out = {}
    for name in ("bf16", "int8"):
        same = total = 0
        for ref, got in zip(reference, entities(nlps[name], texts)):
            same += len(ref & got)
            total += max(len(ref), len(got))
        out[name] = {"entities": total, "identical": same, "identical_fraction": round(same / max(total, 1), 4)}
    return out


def timed_rounds(methods: Dict[str, Callable[[int], None]], rounds: int, words: Sequence[int]) -> Dict[str, List[float]]:
    """Words/s of each method per round; the order rotates from round to round."""
    names = list(methods)
    seconds: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            methods[name](r)
            seconds[name].append(time.perf_counter() - start)
            print(f"  round {r + 1}/{rounds} {name}: {seconds[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return {name: [w / s for w, s in zip(words, seconds[name])] for name in names}


def speed(nlps: Dict[str, Language], docs: Sequence[str], rounds: int) -> Dict[str, object]:
    chunks = [docs[r::rounds] for r in range(rounds)]
    words = [sum(len(t.split()) for t in chunk) for chunk in chunks]
    for nlp in nlps.values():
        list(nlp.pipe([docs[0][:300]]))  # warm-up: load the network, first autocast
    per_round = timed_rounds({name: (lambda r, nlp=nlp: list(nlp.pipe(chunks[r]))) for name, nlp in nlps.items()},
                             rounds, words)
    ratios = {f"{name}_vs_fp32": [a / b for a, b in zip(per_round[name], per_round["fp32"])] for name in ("bf16", "int8")}
    return {
        "words_per_s": {name: round(statistics.median(v), 1) for name, v in per_round.items()},
        "ratio": {name: round(statistics.median(v), 3) for name, v in ratios.items()},
        "ratio_range": {name: [round(min(v), 3), round(max(v), 3)] for name, v in ratios.items()},
        "words": sum(words),
    }


def nubes_texts(root: Path, limit: int) -> List[str]:
    """Real Spanish clinical text: NUBes notes cut into documents of 20 lines."""
    lines = [line for path in sorted((root / "NUBes").glob("SAMPLE-*/*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["\n".join(lines[i:i + 20]) for i in range(0, min(len(lines), limit * 20), 20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--docs", type=int, default=24, help="documents per encoder, split over the rounds")
    parser.add_argument("--paragraphs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--nubes", type=Path, default=Path(os.environ.get("NUBES", "/work/data/nubes")))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    load_start = os.getloadavg()
    began = time.perf_counter()
    cpu = cpu_info()
    result: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu["model"], "cpu_flags": cpu["flags"], "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "auto_picks": auto_precision(torch.device("cpu")), "load_start": [round(x, 2) for x in load_start],
    }
    langs = ("es", "it", "ro")
    docs = [clinical_case(100 + i, paragraphs=args.paragraphs, lang=langs[i % 3]) for i in range(args.docs)]
    es_docs = [d for i, d in enumerate(docs) if i % 3 == 0]
    nubes = nubes_texts(args.nubes, 40) if (args.nubes / "NUBes").is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = build_base(work, args.layers)
        big = pipelines("es", work / "base.pt", base)
        result["base"] = {"layers": args.layers, "hidden": 768, **speed(big, docs, args.rounds),
                          "agreement_random_weights": agreement(big, es_docs + nubes[:8])}
        tiny_base = build_tiny_base_model(work / "tiny_base")
        checkpoint = build_tiny_checkpoint(work / "tiny.pt", tiny_base, model=train_tiny_model(tiny_base))
        tiny = {lang: pipelines(lang, checkpoint, tiny_base) for lang in langs}
        result["tiny"] = {"hidden": 32, **speed(tiny["es"], docs * 2, args.rounds),
                          "agreement_case_reports": {lang: agreement(tiny[lang], [clinical_case(11 + i, 8, lang)
                                                                                  for i in range(10)])
                                                     for lang in langs}}
        if nubes:
            result["tiny"]["agreement_nubes_es"] = agreement(tiny["es"], nubes)
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
