"""torch threads on a busy machine (issue 23, 8): 200 notes through ``nlp.pipe``

- ``default``: what the package does now: the cores this process may use
  (:func:`dt4h_spacy.runtime.default_threads`), OpenMP threads waiting passively (the
  package sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads);
- ``threads_1``: ``--threads 1``;
- ``old_default``: before: torch's start-up thread count, threads spinning while they wait
  (libgomp's default: torch imported before the package, ``OMP_WAIT_POLICY`` unset);

first on the machine as it is, then beside a busy-loop process per core (other work on the
host). Each run is a fresh process (the wait policy is fixed when torch loads), timed from its
first note to its last, model loading left out; rounds interleave the methods (the order
rotates) and each method's time is the median over rounds. The JSON records the CPU, the
cores, the threads each method ran and the load average at start and end. Last printed line:
the JSON (also ``--output``).

    python benchmarks/threads.py --output threads.json
"""

import argparse
import datetime
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

METHODS = ("default", "threads_1", "old_default")


def busy_loop() -> None:
    while True:
        pass


def build(workdir: Path, hidden: int, layers: int) -> None:
    import random

    import torch
    from transformers import XLMRobertaConfig

    from dt4h_spacy.model import MultiTaskTokenClassifier
    from dt4h_spacy.testing import TASKS, build_tokenizer, clinical_sentence

    base = workdir / "base"
    rng = random.Random(5)
    build_tokenizer([clinical_sentence(rng) for _ in range(300)], vocab_size=1500).save_pretrained(base)
    XLMRobertaConfig(vocab_size=1500, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                     intermediate_size=4 * hidden, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2, type_vocab_size=1).save_pretrained(base)
    model = MultiTaskTokenClassifier.from_config(XLMRobertaConfig.from_pretrained(base), {t: 3 for t in TASKS}, seed=0)
    torch.save(model.state_dict(), workdir / "model.pt")


def child(workdir: Path, method: str, notes: int) -> None:
    """One timed pass in this process; prints ``{"seconds", "words", "threads", "wait_policy"}``."""
    if method == "old_default":
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch  # noqa: F401 - loaded before the package, as the old CLI did: libgomp spins
    import dt4h_spacy  # noqa: F401 - first, as the CLI imports it (spaCy would load torch)
    import spacy
    import torch

    from dt4h_spacy.testing import clinical_case

    config = {"checkpoint": str(workdir / "model.pt"), "base_model": str(workdir / "base")}
    if method == "threads_1":
        config["num_threads"] = 1
    elif method == "old_default":
        config["num_threads"] = torch.get_num_threads()  # torch's own count, whatever the default is now
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_disease", config=config)
    texts = [clinical_case(1000 + i, paragraphs=2) for i in range(notes)]
    list(nlp.pipe(texts[:3]))
    start = time.perf_counter()
    for _ in nlp.pipe(texts):
        pass
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 2), "words": sum(len(t.split()) for t in texts),
                      "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default (spins)")}))


def rounds_of(workdir: Path, notes: int, rounds: int) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {name: [] for name in METHODS}
    for r in range(rounds):
        for name in METHODS[r % len(METHODS):] + METHODS[: r % len(METHODS)]:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
            done = subprocess.run([sys.executable, __file__, "--child", name, "--workdir", str(workdir),
                                   "--notes", str(notes)], capture_output=True, text=True, env=env, check=True)
            out[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1}/{rounds} {name}: {out[name][-1]}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workdir, args.child, args.notes)
        return
    began = time.perf_counter()
    result: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "unknown"),
        "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "encoder": {"hidden": args.hidden, "layers": args.layers}, "notes": args.notes,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build(workdir, args.hidden, args.layers)
        result["as_is"] = rounds_of(workdir, args.notes, args.rounds)
        result["load_before_busy_loops"] = [round(x, 2) for x in os.getloadavg()]
        loops = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(os.cpu_count() or 1)]
        for loop in loops:
            loop.start()
        try:
            time.sleep(2)
            result["busy_loop_per_core"] = rounds_of(workdir, args.notes, args.rounds)
        finally:
            for loop in loops:
                loop.terminate()
                loop.join()
    for phase in ("as_is", "busy_loop_per_core"):
        result[f"{phase}_median_s"] = {name: statistics.median(r["seconds"] for r in runs)
                                       for name, runs in result[phase].items()}
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
