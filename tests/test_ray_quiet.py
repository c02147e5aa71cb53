"""``predict --engine ray -q`` (issue 23, 9): Ray's own lines (Python INFO/WARNING, the C++
core worker's ``logging.cc``/``core_worker`` lines written straight to file descriptor 2)
stay off stderr, while the engine's own error lines still reach it. Run in a subprocess, as a
user runs it, so the native writes to the real stderr are seen (about a minute: Ray starts)."""

import json
import os
import re
import subprocess
import sys

RAY_LINE = re.compile(r"logging\.cc|core_worker|RAY_BACKEND_LOG_LEVEL|\bINFO\b|\bWARNING\b|\[\d{4}-\d\d-\d\d .*\] |"
                      r"Traceback|ray\.data|Dataset|Starting|Registered")


def test_quiet_ray_run_leaves_only_the_engines_own_error_lines_on_stderr(tmp_path, trained_checkpoint,
                                                                         tiny_base_model):
    source = tmp_path / "notes.jsonl"
    rows = [{"id": "a", "text": "El paciente presenta miocarditis aguda y dolor."},
            {"id": "a", "text": "otra vez"},
            {"id": "b", "text": "Hoy la paciente presenta diabetes, con neumonía."}]
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "dt4h_spacy", "predict", str(source), str(tmp_path / "out.tsv"), "--lang", "es",
         "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model), "--engine", "ray",
         "--workers", "1", "-q"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: skipped {source} row 2: duplicate id 'a' (first at {source} row 1); ids name the documents in the "
        "output, so each must be unique"], result.stderr
    assert not RAY_LINE.search(result.stderr)
    assert result.stdout == ""
    assert {"miocarditis aguda", "neumonía"} <= {line.split("\t")[-1] for line in
                                                 (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()}
