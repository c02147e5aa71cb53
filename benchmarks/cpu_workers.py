"""CPU workers feeding one network process: is the main process's CPU still the limit?

With a near-free encoder (1 layer, hidden 32, as ``cpu_floor.py``) all the work is the CPU
stages around it, which is what a GPU process waits on. Same Spanish case reports, same
weights, same chunks of ``--batch-size`` documents:

- ``single``: ``nlp.pipe`` in this process, each doc reduced to its spans' rows;
- ``workers_K``: :func:`dt4h_spacy.engines.workers.pipe` with K CPU worker processes, the
  forward passes in this process (K from ``--workers``, default 1 and 2), the rows made in
  the workers (``convert``), as ``predict --cpu-workers`` sends rows back;
- ``single_docs``, ``workers_K_docs``: the same returning the Docs themselves (the workers
  pickle them back).

For each: wall seconds, this process's CPU seconds and the workers' (children's) CPU
seconds, and words per CPU-second of this process: the rate this process could sustain
if the workers had the cores they need (for ``single``, its whole work). Workers' start-up
(spawn, imports, loading the pipeline) is measured on a one-document run and reported
apart: its wall and CPU seconds are in every ``workers_*`` figure. Docs are checked identical to ``single``. The load average is recorded; wall times on
a shared machine say little, CPU seconds hold. The last printed line is one JSON object
(also written to ``--output``).
"""

import argparse
import datetime
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import spacy
import torch
from cpu_floor import build_assets
from throughput import cpu_info, make_corpus

from dt4h_spacy.engines.workers import pipe


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], List], words: int) -> Dict[str, float]:
    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    docs = run()
    wall, cpu, kids = time.perf_counter() - wall, time.process_time() - cpu, children_cpu() - kids
    return {"wall_s": wall, "main_cpu_s": cpu, "workers_cpu_s": kids, "words_per_main_cpu_s": words / cpu,
            "words_per_wall_s": words / wall, "docs": docs}


def spans(doc) -> List:
    """What a job that writes rows keeps of a doc (the worker's ``convert``)."""
    return [(s.start, s.end, s.label_, s._.dt4h_score) for s in doc.spans["dt4h"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_assets(work, 1, 32)
        nlp = spacy.blank("es")
        nlp.add_pipe("dt4h_disease", config={"checkpoint": str(work / "model.pt"), "base_model": str(work / "base"),
                                             "num_threads": 1})
        nlp.initialize()
        nlp.to_disk(work / "pipeline")
        load = functools.partial(spacy.load, str(work / "pipeline"))
        texts = [text for _, text in make_corpus(args.docs * 3, 300, 1500, seed=1)][::3]
        words = sum(len(t.split()) for t in texts)
        single = lambda: list(nlp.pipe(texts, batch_size=args.batch_size))  # noqa: E731
        methods = {"single": lambda: [spans(doc) for doc in single()], "single_docs": single}
        for k in args.workers:
            methods[f"workers_{k}"] = functools.partial(
                lambda k: list(pipe(load, texts, k, args.batch_size, convert=spans, nlp=nlp)), k)
            methods[f"workers_{k}_docs"] = functools.partial(
                lambda k: list(pipe(load, texts, k, args.batch_size, nlp=nlp)), k)
        startup = {f"workers_{k}": measure(lambda: list(pipe(load, texts[:1], k, args.batch_size, nlp=nlp)), 1)
                   for k in args.workers}
        runs: Dict[str, List[Dict]] = {name: [] for name in methods}
        for r in range(args.rounds):
            for name in list(methods)[r % len(methods):] + list(methods)[: r % len(methods)]:
                runs[name].append(measure(methods[name], words))
                print(f"  round {r + 1} {name}: {runs[name][-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        expected = runs["single"][0]["docs"]
        identical = all([r if isinstance(r, list) else spans(r) for r in run["docs"]] == expected
                        for rs in runs.values() for run in rs)
    result = {
        "benchmark": "cpu_workers", "date": datetime.date.today().isoformat(), "cpu": cpu_info(),
        "cores": os.cpu_count(), "torch": torch.__version__, "encoder": {"layers": 1, "hidden": 32},
        "docs": len(texts), "words": words, "batch_size": args.batch_size, "rounds": args.rounds,
        "methods": {name: {key: round(statistics.median(run[key] for run in rs), 3)
                           for key in ("wall_s", "main_cpu_s", "workers_cpu_s", "words_per_main_cpu_s",
                                       "words_per_wall_s")} for name, rs in runs.items()},
        "workers_startup": {name: {"wall_s": round(m["wall_s"], 1), "workers_cpu_s": round(m["workers_cpu_s"], 1)}
                            for name, m in startup.items()},
        "identical_to_single": identical,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
    }
    text = json.dumps(result)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
