"""CPU workers feeding one network process: is the main process's CPU still the limit?

One process runs the network; K spawned processes do the CPU stages around it (spaCy
tokenization, words, windows, decoding, spans, rows: ``predict --cpu-workers K``). Same
case reports, same weights, same chunks of ``--batch-size`` documents, in interleaved rounds:

- ``raw``: the network process's own step alone: the windows of every chunk, prepared
  beforehand, collated, run and scattered back (:func:`dt4h_spacy.engines.steps.forward`,
  one batch plan over all of them): what the device can do, the limit;
- ``single``: ``nlp.pipe`` in this process, each doc reduced to its spans' rows;
- ``workers_K``: :func:`dt4h_spacy.engines.workers.pipe` with K CPU worker processes (K from
  ``--workers``), the forward passes in this process, the rows made in the workers.

For each: words/s (wall), this process's CPU seconds and the workers' (children's), and
the share of one core this process was busy (its CPU seconds / wall seconds): near 1 it is
the limit, well under 1 it waits on the workers (or, on a GPU, on the device). ``ours / raw``
is each method's words/s over ``raw``'s in the same round (median over rounds), the workers'
steady rate (their start-up's wall time subtracted) and ``main_cpu_over_raw`` this process's
CPU seconds over ``raw``'s: what the network process does besides the network's own step.

``--encoder tiny`` (1 layer, hidden 32: all the work is the CPU stages, which is what a GPU
waits on; the default on a CPU) or ``base`` (xlm-roberta-base's shape, random weights: the
default with ``--device cuda``, e.g. ``--device cuda --precision bf16 --workers 1 2 4 8``).
Workers' start-up (spawn, imports, loading the pipeline) is measured on a one-document run
and reported apart: it is in every ``workers_*`` wall figure. Rows are checked identical to
``single``'s (on a GPU, where windows of several chunks share a batch, scores may differ in
their last bits; the check then compares mentions). The load average is recorded. The last
printed line is one JSON object (also written to ``--output``).
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
from typing import Callable, Dict, List

import spacy
import torch
from cpu_floor import build_assets as build_tiny
from throughput import build_assets as build_base
from throughput import cpu_info, make_corpus

from dt4h_spacy.engines import steps
from dt4h_spacy.engines.workers import load_on_cpu, pipe


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], List], words: int) -> Dict:
    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    rows = run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu, kids = time.perf_counter() - wall, time.process_time() - cpu, children_cpu() - kids
    return {"wall_s": wall, "main_cpu_s": cpu, "workers_cpu_s": kids, "words_per_s": words / wall,
            "main_busy": cpu / wall, "rows": rows}


def spans(doc) -> List:
    """What a job that writes rows keeps of a doc (the worker's ``convert``)."""
    return [(s.start, s.end, s.label_, s._.dt4h_score) for s in doc.spans["dt4h"]]


def mentions(rows: List) -> List:
    return [[span[:3] for span in doc] for doc in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8, help="documents per chunk")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="K values (default 1 2; 1 2 4 8 on cuda)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--encoder", choices=("tiny", "base"), default=None)
    parser.add_argument("--layers", type=int, default=12, help="layers of --encoder base")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    encoder = args.encoder or ("base" if gpu else "tiny")
    ks = args.workers or ([1, 2, 4, 8] if gpu else [1, 2])
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if encoder == "tiny":
            build_tiny(work, 1, 32)
        else:
            build_base(work, args.layers)
        nlp = spacy.blank("es")
        nlp.add_pipe("dt4h_disease", config={"checkpoint": str(work / "model.pt"), "base_model": str(work / "base"),
                                             "num_threads": 1, "device": args.device, "precision": args.precision})
        nlp.initialize()
        nlp.to_disk(work / "pipeline")
        load = functools.partial(load_on_cpu, str(work / "pipeline"))
        texts = [text for _, text in make_corpus(args.docs * 3, 300, 1500, seed=1)][::3]
        words = sum(len(t.split()) for t in texts)
        component = nlp.get_pipe("dt4h_disease")
        chunks = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
        prepared = []
        for chunk in chunks:
            docs = [nlp.make_doc(text) for text in chunk]
            prepared.append(component.preprocess(docs, [component.heads_for(doc) for doc in docs]).window_set)
        methods: Dict[str, Callable[[], List]] = {
            "raw": lambda: steps.forward(nlp, "dt4h_disease", prepared),
            "single": lambda: [spans(doc) for doc in nlp.pipe(texts, batch_size=args.batch_size)],
        }
        for k in ks:
            methods[f"workers_{k}"] = functools.partial(
                lambda k: list(pipe(load, texts, k, args.batch_size, convert=spans, nlp=nlp)), k)
        methods["raw"]()  # warm-up: CUDA kernels, allocator
        startup = {f"workers_{k}": measure(lambda: list(pipe(load, texts[:1], k, args.batch_size, nlp=nlp)), 1)
                   for k in ks}
        runs: Dict[str, List[Dict]] = {name: [] for name in methods}
        for r in range(args.rounds):
            for name in list(methods)[r % len(methods):] + list(methods)[: r % len(methods)]:
                runs[name].append(measure(methods[name], words))
                print(f"  round {r + 1} {name}: {runs[name][-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)
        expected = runs["single"][0]["rows"]
        compare = mentions if gpu else (lambda rows: rows)
        identical = all(compare(run["rows"]) == compare(expected)
                        for name, rs in runs.items() if name != "raw" for run in rs)
    keys = ("wall_s", "main_cpu_s", "workers_cpu_s", "words_per_s", "main_busy")

    def steady(name: str, run: Dict) -> float:
        """Words/s without the workers' start-up, which a long job pays once."""
        started = startup[name]["wall_s"] if name in startup else 0.0
        return words / max(run["wall_s"] - started, 1e-9)

    result = {
        "benchmark": "cpu_workers", "date": datetime.date.today().isoformat(), "cpu": cpu_info(),
        "cores": os.cpu_count(), "torch": torch.__version__, "device": args.device, "precision": args.precision,
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "encoder": {"layers": 1, "hidden": 32} if encoder == "tiny" else {"layers": args.layers, "hidden": 768},
        "docs": len(texts), "words": words, "batch_size": args.batch_size, "rounds": args.rounds,
        "methods": {name: {key: round(statistics.median(run[key] for run in rs), 3) for key in keys}
                    for name, rs in runs.items()},
        "steady_words_per_s": {name: round(statistics.median(steady(name, run) for run in rs), 1)
                               for name, rs in runs.items() if name in startup},
        "ours_over_raw": {name: round(statistics.median(steady(name, run) / raw["words_per_s"]
                                                        for run, raw in zip(rs, runs["raw"])), 3)
                          for name, rs in runs.items() if name != "raw"},
        "main_cpu_over_raw": {name: round(statistics.median(run["main_cpu_s"] / raw["main_cpu_s"]
                                                            for run, raw in zip(rs, runs["raw"])), 3)
                              for name, rs in runs.items() if name != "raw"},
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
