"""What keeping freed buffers (``dt4h_spacy.allocator``) is worth to a CPU forward pass.

Each measurement runs in its own process, because the malloc setting is process-wide and
cannot be undone: ``default`` leaves glibc as it starts, ``kept`` calls
``keep_freed_memory()`` first. Both run a random xlm-roberta-base-shaped encoder on the same
512-subword windows, one per forward pass (the CPU default), in fp32 and with int8 dynamic
quantization; processes alternate so that other load hits both alike. Reported: median ms per
window, minor page faults per window, peak RSS, and kept/default speed-ups. The last printed
line is one JSON object.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import torch
from throughput import base_config, cpu_info
from transformers import XLMRobertaModel

from dt4h_spacy.allocator import ENVIRONMENT, keep_freed_memory
from dt4h_spacy.inference import quantize_linear_layers

MODES = ("default", "kept")
PRECISIONS = ("fp32", "int8")


def child(mode: str, precision: str, layers: int, windows: int) -> Dict[str, float]:
    if mode == "kept" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() had no effect here (not glibc, or MALLOC_* / LD_PRELOAD set).")
    torch.manual_seed(0)
    model = XLMRobertaModel(base_config(layers), add_pooling_layer=False).eval()
    if precision == "int8":
        quantize_linear_layers(model)
    ids = torch.randint(5, 250000, (1, 512))
    times = []
    with torch.inference_mode():
        model(input_ids=ids)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(windows):
            start = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {
        "ms_per_window": 1000 * statistics.median(times),
        "faults_per_window": faults / windows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--windows", type=int, default=8, help="timed forward passes per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.layers, args.windows)))
        return

    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    runs: Dict[str, List[Dict[str, float]]] = {f"{m}_{p}": [] for p in PRECISIONS for m in MODES}
    load_start = os.getloadavg()[0]
    for r in range(args.rounds):
        for precision in PRECISIONS:
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, precision, "--layers", str(args.layers),
                     "--windows", str(args.windows)],
                    env=env, capture_output=True, text=True, check=True,
                )
                runs[f"{mode}_{precision}"].append(json.loads(out.stdout.splitlines()[-1]))
                print(f"  round {r + 1}/{args.rounds} {mode} {precision}: {runs[f'{mode}_{precision}'][-1]}",
                      file=sys.stderr, flush=True)
    summary = {
        name: {key: round(statistics.median(run[key] for run in results), 1) for key in results[0]}
        for name, results in runs.items()
    }
    speedup = {
        precision: round(summary[f"default_{precision}"]["ms_per_window"] / summary[f"kept_{precision}"]["ms_per_window"], 3)
        for precision in PRECISIONS
    }
    int8 = {mode: round(summary[f"{mode}_fp32"]["ms_per_window"] / summary[f"{mode}_int8"]["ms_per_window"], 3)
            for mode in MODES}
    print(json.dumps({
        "summary": summary,
        "kept_vs_default": speedup,
        "int8_vs_fp32": int8,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
        "cpu": cpu_info(),
        "layers": args.layers,
        "windows_per_process": args.windows,
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
