"""The work around a near-free encoder: ``nlp.pipe`` against the floor any reader of spaCy words pays.

With a 1-layer, hidden-32 encoder the forward pass costs almost nothing, so what is timed is
the CPU work around it (words, sentences, windows, decoding, spans). In one process, on the
same Spanish clinical-case-like documents (``throughput.make_corpus``: multi-paragraph case
reports of 300-1,500 words) and the same weights, in interleaved rounds:

- ``floor``: spaCy's tokenizer (``nlp.make_doc``), one batched subword tokenization of every
  document's words (the fast tokenizer, ``is_split_into_words``), and the same encoder and
  head over each document's subwords once (chunks of at most 510, one per forward pass, the
  label argmax on the CPU);
- ``ours``: ``nlp.pipe`` end to end, default config.

Each round reads its documents ``--repeat`` times per method; words/s is the median over
rounds, the ratio the median of per-round ratios (target: ours / floor >= 0.75), by the
process's CPU time (``cpu_time``, the target's clock: on a shared machine the scheduler's
pauses are not charged) and by the wall clock (``wall_time``). ``--profile`` prints
cProfile's top functions of one ``ours`` round. The load average is recorded at start and end, with the CPU model and its vector flags; the
last printed line is one JSON object (also written to ``--output``).
"""

import argparse
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy
import spacy
import torch
from throughput import LABELS, cpu_info, make_corpus, one_thread, sentence_pool

from dt4h_spacy.model import MultiTaskTokenClassifier
from dt4h_spacy.testing import TASKS, build_tokenizer, tiny_config

TARGET = 0.75
TASK = "disease_es_ner"


def build_assets(workdir: Path, layers: int, hidden: int) -> None:
    """The benchmark tokenizer of ``throughput`` (clinical pieces, long words split) and a
    random ``layers``-layer, ``hidden``-wide encoder with the three heads."""
    base = workdir / "base"
    pool = [re.sub(r"([^\w\s])", r" \1 ", s) for s in sentence_pool("es")]
    common = [w for w, _ in Counter(w for s in pool for w in s.split() if len(w) <= 7).most_common(150)]
    tokenizer = build_tokenizer(pool, whole_words=common, vocab_size=1500)
    tokenizer.save_pretrained(base)
    config = tiny_config(len(tokenizer), hidden=hidden, layers=layers)
    config.save_pretrained(base)
    model = MultiTaskTokenClassifier.from_config(config, {task: len(LABELS) for task in TASKS}, seed=0).eval()
    torch.save(model.state_dict(), workdir / "model.pt")


class Floor:
    """What any reader of spaCy words pays: tokenizer, one batched subword call, one encoder
    pass over each document's subwords (no sentences, windows planning, decoding or spans)."""

    def __init__(self, nlp, tagger) -> None:
        self.nlp, self.tagger = nlp, tagger

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> int:
        tok, model = self.tagger.tokenizer, self.tagger.model
        docs = [self.nlp.make_doc(text) for text in texts]
        words = [[t.text for t in doc if not t.is_space] for doc in docs]
        batch = tok(words, is_split_into_words=True, add_special_tokens=False,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)
        size = self.tagger.max_length - 2
        labelled = 0
        for ids in batch["input_ids"]:
            for lo in range(0, len(ids), size):
                chunk = torch.tensor([[tok.cls_token_id, *ids[lo : lo + size], tok.sep_token_id]])
                hidden = model.encode(chunk, torch.ones_like(chunk))
                labelled += int(model.classifiers[TASK](hidden).argmax(-1).numpy().size)
        return labelled


def timed_both(methods: Dict[str, Callable[[int], object]], round_words: Sequence[int],
               ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Words/s of each method in each round by the wall clock and by the process's CPU time;
    the order rotates each round. On a shared machine the CPU time is what compares: a
    method the scheduler paused is not charged for the pause."""
    names = list(methods)
    wall: Dict[str, List[float]] = {name: [] for name in names}
    cpu: Dict[str, List[float]] = {name: [] for name in names}
    for r, words in enumerate(round_words):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            methods[name](r)
            wall[name].append(words / (time.perf_counter() - start))
            cpu[name].append(words / (time.process_time() - start_cpu))
            print(f"  round {r + 1}/{len(round_words)} {name}: {words / wall[name][-1]:.2f} s", file=sys.stderr,
                  flush=True)
    return wall, cpu


def profile_round(nlp, texts: Sequence[str], top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in nlp.pipe(texts):
        pass
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def benchmark(args: argparse.Namespace, workdir: Path) -> Dict:
    load_start = os.getloadavg()
    build_assets(workdir, args.layers, args.hidden)
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_disease", config={"checkpoint": str(workdir / "model.pt"), "base_model": str(workdir / "base"),
                                         "num_threads": 1})
    tagger = nlp.get_pipe("dt4h_disease").tagger
    corpus = [text for _, text in make_corpus(args.docs * 3, args.min_words, args.max_words, seed=args.seed)][::3]
    rounds = [corpus[r :: args.rounds] for r in range(args.rounds)]
    round_words = [sum(len(text.split()) for text in chunk) for chunk in rounds]
    floor = Floor(nlp, tagger)

    def ours(r: int) -> int:
        return sum(len(doc.ents) for _ in range(args.repeat) for doc in nlp.pipe(rounds[r]))

    def floor_round(r: int) -> int:
        return sum(floor(rounds[r]) for _ in range(args.repeat))

    with one_thread():
        entities = ours(0) // args.repeat
        floor(rounds[0])  # warm-up
        profile = profile_round(nlp, rounds[0], args.profile) if args.profile else None
        wall, cpu = timed_both({"ours": ours, "floor": floor_round}, [w * args.repeat for w in round_words])
    load_end = os.getloadavg()
    clocks = {}
    for clock, per_round in (("cpu_time", cpu), ("wall_time", wall)):
        ratios = [o / f for o, f in zip(per_round["ours"], per_round["floor"])]
        clocks[clock] = {
            "words_per_s": {name: round(statistics.median(v), 1) for name, v in per_round.items()},
            "ours_vs_floor": round(statistics.median(ratios), 3),
            "ratio_per_round": [round(x, 3) for x in ratios],
        }
    ratio = clocks["cpu_time"]["ours_vs_floor"]
    result = {
        "benchmark": "cpu_floor",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spacy": spacy.__version__,
        "encoder": {"layers": args.layers, "hidden": args.hidden},
        "docs": len(corpus),
        "words": sum(round_words),
        "rounds": args.rounds,
        "repeat": args.repeat,
        "entities_per_100_words_round0": round(100 * entities / round_words[0], 1),
        "clock": "cpu_time: the process's CPU seconds (other processes' load does not count); wall_time: elapsed",
        **clocks,
        "ours_vs_floor": ratio,
        "target": TARGET,
        "met": ratio >= TARGET,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
    }
    if profile:
        print(profile, file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=45)
    parser.add_argument("--min-words", type=int, default=300)
    parser.add_argument("--max-words", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=3, help="times each method reads a round's docs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--output", type=Path, help="also write the JSON result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = json.dumps(benchmark(args, Path(tmp)))
    if args.output:
        args.output.write_text(result + "\n", encoding="utf-8")
    print(result)


if __name__ == "__main__":
    main()
