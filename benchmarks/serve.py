"""``dt4h-spacy serve`` throughput against ``nlp.pipe`` on the same notes (issue 26).

Starts the real service (uvicorn, one worker, one torch thread) on 127.0.0.1 and measures
requests/s and words/s for 1-note and 32-note ``POST /process_bulk`` requests, sent by one
client and by several concurrent ones, against the same notes annotated in this process by
``Pipelines.annotate`` (``nlp.pipe``, batch 32, one torch thread), and the mean documents per
``nlp.pipe`` call the micro-batcher made. The load average at start and end and the CPU are
recorded. Each round measures ``nlp.pipe`` and then every request shape, so each ratio compares
measurements minutes apart, not runs under different loads; the medians of the rounds are
reported, with the range of the ratios.

    python benchmarks/serve.py --checkpoint demo/model.pt --base-model demo/base [--notes 256]

(``python -m dt4h_spacy.demo demo`` builds that model offline.) Not a test.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from throughput import cpu_info  # noqa: E402

from dt4h_spacy.batch import Pipelines  # noqa: E402
from dt4h_spacy.textfiles import Document  # noqa: E402


def sample_notes(sample: Path, lang: str, count: int) -> List[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(sample.rglob(f"*/{lang}/*.txt"))]
    if not texts:
        sys.exit(f"error: no {lang} .txt files under {sample}; pass --sample.")
    return [texts[i % len(texts)] for i in range(count)]


def words(texts: List[str]) -> int:
    return sum(len(text.split()) for text in texts)


def start_server(args: List[str], log: Path) -> "tuple[subprocess.Popen, str]":
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "dt4h_spacy", "serve", "--port", "0", *args],
                                   stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return process, f"http://127.0.0.1:{found.group(1)}"
        if process.poll() is not None:
            sys.exit(log.read_text())
        time.sleep(0.2)
    process.kill()
    sys.exit("the server did not start within 180 s")


def measure(url: str, texts: List[str], per_request: int, clients: int, lang: str) -> Dict[str, Any]:
    """Send ``texts`` in requests of ``per_request`` notes from ``clients`` concurrent clients."""
    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    batches_before = httpx.get(url + "/health", timeout=30).json()["batches"]

    def client(number: int) -> int:
        sent = 0
        with httpx.Client(base_url=url, timeout=600) as http:
            for chunk in chunks[number::clients]:
                body = {"content": [{"id": str(i), "text": text} for i, text in enumerate(chunk)]}
                answer = http.post("/process_bulk", params={"language": lang}, json=body)
                answer.raise_for_status()
                sent += 1
        return sent

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        sent = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - started
    batches = httpx.get(url + "/health", timeout=30).json()["batches"] - batches_before
    return {"notes_per_request": per_request, "clients": clients, "requests": sent, "seconds": round(seconds, 2),
            "requests_per_s": round(sent / seconds, 2), "words_per_s": round(words(texts) / seconds, 1),
            "docs_per_pipe_call": round(len(texts) / max(batches, 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--sample", type=Path, default=Path("sample"))
    parser.add_argument("--lang", default="es")
    parser.add_argument("--notes", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    texts = sample_notes(args.sample, args.lang, args.notes)
    load_start = os.getloadavg()
    pipelines = Pipelines(args.lang, checkpoint=args.checkpoint, base_model=args.base_model,
                          settings={"device": "cpu", "num_threads": 1})
    documents = [Document(str(i), str(i), text) for i, text in enumerate(texts)]
    list(pipelines.annotate(documents[:8], 32))  # warm-up
    shapes = [(1, 1), (1, args.clients), (32, 1), (32, 4)]
    rounds: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(["--checkpoint", args.checkpoint, "--base-model", args.base_model],
                                    Path(folder) / "server.log")
        try:
            measure(url, texts[:16], 1, 4, args.lang)  # warm-up
            for _ in range(args.rounds):  # nlp.pipe and every request shape in each round: ratios within a round
                started = time.perf_counter()
                assert len(list(pipelines.annotate(documents, 32))) == len(texts)
                pipe_seconds = time.perf_counter() - started
                runs = [measure(url, texts, per_request, clients, args.lang) for per_request, clients in shapes]
                pipe_words = words(texts) / pipe_seconds
                for run in runs:
                    run["words_vs_nlp_pipe"] = round(run["words_per_s"] / pipe_words, 2)
                rounds.append({"nlp_pipe_words_per_s": round(pipe_words, 1), "serve": runs})
        finally:
            process.terminate()
            process.wait(60)
    summary = []
    for index, (per_request, clients) in enumerate(shapes):
        of_shape = [r["serve"][index] for r in rounds]
        summary.append({"notes_per_request": per_request, "clients": clients,
                        **{key: statistics.median(run[key] for run in of_shape)
                           for key in ("requests_per_s", "words_per_s", "words_vs_nlp_pipe", "docs_per_pipe_call")},
                        "words_vs_nlp_pipe_range": [min(r["words_vs_nlp_pipe"] for r in of_shape),
                                                    max(r["words_vs_nlp_pipe"] for r in of_shape)]})
    baseline = {"words_per_s": statistics.median(r["nlp_pipe_words_per_s"] for r in rounds)}
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_info()["model"], "cpus": os.cpu_count(),
              "torch_threads": 1, "notes": len(texts), "words": words(texts), "rounds": rounds,
              "load_average": {"start": [round(x, 2) for x in load_start],
                               "end": [round(x, 2) for x in os.getloadavg()]},
              "nlp_pipe": baseline, "median": summary}
    print(json.dumps(report, indent=2))
    print(f"\nmedians of {len(rounds)} rounds")
    print("| request | clients | requests/s | words/s | vs nlp.pipe (range) | docs per nlp.pipe call |")
    print("|---|---|---|---|---|---|")
    for run in summary:
        low, high = run["words_vs_nlp_pipe_range"]
        print(f"| {run['notes_per_request']} note(s) | {run['clients']} | {run['requests_per_s']} | "
              f"{run['words_per_s']} | {run['words_vs_nlp_pipe']} ({low}-{high}) | {run['docs_per_pipe_call']} |")
    print(f"| nlp.pipe (batch 32) | - | - | {baseline['words_per_s']} | 1.00 | 32 |")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
