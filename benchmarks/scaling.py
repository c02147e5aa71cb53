"""How ``dt4h-spacy predict`` scales: the local engine with 2 workers against 1, and Ray
against the local engine on the same cores.

Each configuration runs the real command in its own process on the same Parquet table of
clinical-case-like notes (paragraphs of sentences with punctuation) and the same random
xlm-roberta-shaped checkpoint; rounds are interleaved so other load on the machine hits
every configuration alike. A run's fixed cost (start-up, model load, Ray start) is measured
on a one-note table and subtracted, so words/s is the steady rate a long job sees:

- ``local_1``: ``--n-process 1 --threads 1`` (one worker, one core);
- ``local_2``: ``--n-process 2`` (two forked workers, one thread each);
- ``ray_2``: ``--engine ray --workers 2 --cpus-per-worker 1`` on a local Ray.

Targets: local_2 / local_1 near 2 on 2 free cores; ray_2 / local_2 ≥ 0.85 (Ray's overhead
≤ 15 %). The last printed line is one JSON object. ``--quick`` uses a small encoder.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pyarrow
import pyarrow.parquet
from throughput import cpu_info

from dt4h_spacy.testing import (
    build_tiny_base_model,
    build_tiny_checkpoint,
    synthetic_sentences,
)

CONFIGS: Dict[str, List[str]] = {
    "local_1": ["--n-process", "1", "--threads", "1"],
    "local_2": ["--n-process", "2"],
    "ray_2": ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"],
}


def notes(n_notes: int, seed: int = 0) -> List[Dict[str, str]]:
    """Notes of 3-5 paragraphs of 3-6 sentences each, es/it/ro in turn, ~300-600 words."""
    rows = []
    for n in range(n_notes):
        lang = ("es", "it", "ro")[n % 3]
        sentences = [" ".join(words).capitalize() + "." for words, _ in synthetic_sentences(lang, 30, seed + n)]
        paragraphs, at = [], 0
        for size in (3 + (n + k) % 4 for k in range(3 + n % 3)):
            paragraphs.append(" ".join(sentences[at: at + size]))
            at += size
        rows.append({"id": f"MultiClinNER-{lang}-bench-disease-{n:05d}", "text": "\n\n".join(paragraphs)})
    return rows


def timed(command: List[str], env: Dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def ratio(rate: Dict[str, float], over: str, under: str) -> Optional[float]:
    return round(rate[over] / rate[under], 2) if over in rate and under in rate else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small encoder (4 layers, hidden 256), 24 notes "
                                                             "(a smoke run: Ray's start-up noise swamps its work)")
    parser.add_argument("--notes", type=int, default=None, help="notes in the table (default 60; --quick: 24)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="configurations to run (default all; the ratios need their two)")
    args = parser.parse_args()
    layers, hidden = (4, 256) if args.quick else (12, 768)
    n_notes = args.notes or (24 if args.quick else 60)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dt4h-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    base = build_tiny_base_model(work / "base", hidden=hidden, layers=layers)
    checkpoint = build_tiny_checkpoint(work / "model.pt", base)
    rows = notes(n_notes)
    words = sum(len(row["text"].split()) for row in rows)
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), work / "notes.parquet")
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows[:1]), work / "one.parquet")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    load_start = os.getloadavg()[0]
    configs = {name: CONFIGS[name] for name in args.configs}
    walls: Dict[str, List[float]] = {name: [] for name in configs}
    fixed: Dict[str, List[float]] = {name: [] for name in configs}
    for round_number in range(args.rounds):
        for name, options in configs.items():
            for table, into in (("one.parquet", fixed), ("notes.parquet", walls)):
                output = work / f"{name}-{round_number}-{table}.tsv"
                command = [sys.executable, "-m", "dt4h_spacy", "predict", str(work / table), str(output), "-q",
                           "--checkpoint", str(checkpoint), "--base-model", str(base), *options]
                into[name].append(timed(command, env))
                print(f"  round {round_number + 1} {name} {table}: {into[name][-1]:.1f} s", file=sys.stderr, flush=True)
    outputs = {name: (work / f"{name}-0-notes.parquet.tsv").read_text(encoding="utf-8") for name in configs}
    rate = {name: round(words / max(statistics.median(walls[name]) - statistics.median(fixed[name]), 1e-6), 1)
            for name in configs}
    report = {
        "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "cpu": cpu_info(),
        "python": platform.python_version(), "encoder": {"layers": layers, "hidden": hidden},
        "notes": n_notes, "words": words, "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "words_per_s": rate, "fixed_cost_s": {n: round(statistics.median(v), 1) for n, v in fixed.items()},
        "work_s": {n: [round(w, 1) for w in v] for n, v in walls.items()},
        "local_2_over_local_1": ratio(rate, "local_2", "local_1"),
        "ray_2_over_local_2": ratio(rate, "ray_2", "local_2"),
        "same_rows": len(set(outputs.values())) == 1,
    }
    # At the end the 1-minute load average still counts the last configuration's two workers.
    others_end = report["load_average"][1] - 2
    busy = max(report["load_average"][0], others_end) > 0.5 * (os.cpu_count() or 1)
    report["reliable"] = not busy
    for name in configs:
        print(f"{name:8s} {rate[name]:8.1f} words/s  (fixed cost {report['fixed_cost_s'][name]} s)")
    print(f"local_2 / local_1 = {report['local_2_over_local_1']}; ray_2 / local_2 = {report['ray_2_over_local_2']} "
          f"(target >= 0.85); identical rows: {report['same_rows']}" + ("; machine busy: ratios unreliable" if busy else ""))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
