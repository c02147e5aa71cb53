"""The README's first command, as a new user runs it: train the demo model, annotate the examples.

The command is read from the README itself (everything after its ``pip install``), so the
two cannot drift apart; it runs in a copy of the files it reads, so the repository stays
clean.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dt4h_spacy.evaluate.official import evaluate_files
from dt4h_spacy.tsv import read_mentions

ROOT = Path(__file__).resolve().parent.parent
FILES = ("examples",)  # the demo reads the sample and its config from the package


def readme_command(heading: str) -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return next(line for line in lines[start:] if line.startswith("pip install "))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    for name in FILES:
        shutil.copytree(ROOT / name, root / name)
    steps = readme_command("Install and annotate").split(" && ")
    assert steps[0].startswith("pip install torch==2.13.0 ."), steps
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(scripts), os.environ["PATH"]])}
    for step in steps[1:]:
        args = shlex.split(step)
        if args[0] == "python":
            args[0] = sys.executable
        result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (step, result.stdout[-2000:], result.stderr[-3000:])
    return root


def test_the_demo_model_finds_diseases_a_clinician_recognises(first_run):
    found = {(m.filename, m.start, m.end, m.text) for m in read_mentions(first_run / "predictions.tsv")}
    for mention in [
        ("MultiClinNER-es-test-disease-00001", 64, 85, "hipertensión arterial"),
        ("MultiClinNER-es-test-disease-00002", 87, 91, "EPOC"),
        ("MultiClinNER-es-test-disease-00002", 210, 243, "fibrilación auricular paroxística"),
        ("MultiClinNER-ro-test-disease-00001", 63, 86, "hipertensiune arterială"),
        ("MultiClinNER-ro-test-disease-00002", 26, 51, "lupus eritematos sistemic"),
    ]:
        assert mention in found
    assert {f for f, *_ in found} >= {"MultiClinNER-es-test-disease-00001", "MultiClinNER-it-test-disease-00002",
                                      "MultiClinNER-ro-test-disease-00002"}


def test_the_readme_evaluate_command_scores_the_first_run(first_run):
    assert "dt4h-spacy evaluate examples/gold.tsv predictions.tsv" in (ROOT / "README.md").read_text(encoding="utf-8")
    scores = evaluate_files(first_run / "examples/gold.tsv", first_run / "predictions.tsv")
    assert scores["strict"]["f1"] > 0.25 and scores["char_f1"]["f1"] > 0.4, scores


def test_the_readme_test_command_is_the_one_ci_runs():
    command = readme_command("Run the whole test suite")
    assert command.startswith('pip install torch==2.13.0 -e ".[dev]" && python -m pytest')
    assert "Run the whole test suite" in (ROOT / ".ci/run").read_text(encoding="utf-8")
