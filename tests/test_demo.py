"""`python -m dt4h_spacy.demo` from any directory, on the installed package (issue 23, item 13):
the sample corpus and its training config are package data, not files of the repository.

A wheel is built from a copy of the sources and installed into a folder of its own; the demo
then runs from an empty directory with only that folder on the path (about 40 s on two
busy cores, most of it the demo's training).
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("dt4h_spacy", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in")


def run(args, cwd, **env):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


def test_the_demo_trains_from_an_empty_directory_on_the_installed_package(tmp_path):
    source = tmp_path / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dt4h_spacy/configs/sample.cfg" in names and "dt4h_spacy/sample/train/mentions.tsv" in names
    assert sum(name.startswith("dt4h_spacy/sample/") and name.endswith(".txt") for name in names) == 3 * (48 + 12)
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        tmp_path)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {"PYTHONPATH": str(site)}
    where = run([sys.executable, "-c", "import dt4h_spacy; print(dt4h_spacy.__file__)"], empty, **env)
    assert where.stdout.strip().startswith(str(site))
    result = run([sys.executable, "-m", "dt4h_spacy.demo", "demo-model"], empty, **env)
    assert "checkpoint: demo-model/model.pt" in result.stdout
    state = torch.load(empty / "demo-model" / "model.pt", weights_only=True)
    assert {k.split(".")[1] for k in state if k.startswith("classifiers.")} == {
        "disease_es_ner", "disease_it_ner", "disease_ro_ner"}
    assert (empty / "demo-model" / "training" / "model-best" / "meta.json").is_file()
