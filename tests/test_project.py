"""``spacy project run sample``: convert → train → evaluate → package → visualize, offline.

The workflow (init-checkpoint → convert → spaCy's train → export → evaluate → package →
visualize) runs in a copy of the project files so the repository stays clean; it takes
about two minutes on two CPU cores.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly

from dt4h_spacy.tsv import read_mentions

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("project.yml", "configs", "scripts", "sample")
LANGS = ("es", "it", "ro")


def _run(args, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**env, **kwargs.pop("env", {})}, **kwargs)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    result = _run([sys.executable, "-m", "spacy", "project", "run", "sample", "."], root, timeout=1100)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def test_the_sample_model_is_clearly_above_chance_on_every_language(project):
    scores = json.loads((project / "metrics/sample/scores.json").read_text())
    assert sorted(scores["per_lang"]) == list(LANGS)
    for lang in LANGS:
        strict = scores["per_lang"][lang]["strict"]
        assert strict["f1"] > 0.6, (lang, strict)
        assert strict["tp"] + strict["fn"] == len([m for m in read_mentions(project / "sample/dev/mentions.tsv")
                                                   if f"-{lang}-" in m.filename])
    table = (project / "metrics/sample/scores.md").read_text().splitlines()
    assert table[0].startswith("| language | strict P | strict R | strict F1 | char P | char R | char F1")
    assert [row.split("|")[1].strip() for row in table[2:]] == [*LANGS, "**all**"]
    assert f"{scores['strict']['f1']:.4f}" in table[-1]


def test_the_trained_pt_is_the_authors_layout(project):
    import torch

    state = torch.load(project / "training/sample/model.pt", weights_only=True)
    heads = sorted({k.split(".")[1] for k in state if k.startswith("classifiers.")})
    assert heads == [f"disease_{lang}_ner" for lang in LANGS]
    assert all(k.startswith(("encoder.", "classifiers.")) for k in state)


def test_the_wheel_installs_and_loads_with_the_trained_entities(project, tmp_path):
    text = (project / "sample/dev/es/MultiClinNER-es-dev-disease-00001.txt").read_text(encoding="utf-8")
    expected = [(e.text, e.start_char, e.end_char) for e in spacy.load(project / "training/sample/model-best")(text).ents]
    assert expected, "the sample model should find something in this note"
    wheels = sorted((project / "packages/sample").glob("*/dist/*.whl"))
    assert [w.name for w in wheels] == ["xx_dt4h_disease-0.1.0-py3-none-any.whl"]  # one package, every language
    target = tmp_path / "site"
    install = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), *map(str, wheels)],
                   tmp_path, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    check = (
        "import json, sys, spacy\n"
        "nlp = spacy.load('xx_dt4h_disease')\n"
        "assert nlp.get_pipe('dt4h_disease').languages.keys() == {'es', 'it', 'ro'}\n"
        "print(json.dumps([(e.text, e.start_char, e.end_char) for e in nlp(sys.stdin.read()).ents]))\n"
    )
    loaded = _run([sys.executable, "-c", check], tmp_path, input=text, timeout=300,
                  env={"PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert [tuple(e) for e in json.loads(loaded.stdout)] == expected


def test_visualize_wrote_one_page_per_language_with_every_dev_document(project):
    for lang in LANGS:
        html = (project / f"metrics/sample/displacy-{lang}.html").read_text(encoding="utf-8")
        names = sorted(p.stem for p in (project / "sample/dev" / lang).glob("*.txt"))
        assert html.count("<section") == len(names) == 12
        assert all(f">{name} <small" in html for name in names)
        assert '<mark class="entity"' in html


def test_a_rerun_skips_every_step_that_is_up_to_date(project):
    result = _run([sys.executable, "-m", "spacy", "project", "run", "sample", "."], project, timeout=300)
    assert result.returncode == 0
    assert result.stdout.count("nothing changed") == 8, result.stdout


def test_real_data_assets_are_marked_extra_and_unused_by_the_sample():
    config = srsly.read_yaml(ROOT / "project.yml")
    assets = {a["dest"]: a for a in config["assets"]}
    assert "19098018" in assets["assets/multiclinai_training.zip"]["url"]
    assert "distemist" in assets["assets/distemist_zenodo.zip"]["url"]
    assert all(a.get("extra") for dest, a in assets.items() if "url" in a)
    commands = {c["name"]: c for c in config["commands"]}
    sample_deps = [d for step in config["workflows"]["sample"] for d in commands[step].get("deps", [])]
    assert not any(d.startswith("assets/") for d in sample_deps)
    assert list(config["workflows"]) == ["sample", "all"]


def test_the_bundled_sample_is_exactly_what_its_script_writes(tmp_path):
    result = _run([sys.executable, str(ROOT / "scripts/make_sample.py"), str(tmp_path)], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    bundled = sorted(p.relative_to(ROOT / "sample") for p in (ROOT / "sample").rglob("*") if p.is_file() and p.name != "README.md")
    assert written == bundled and len(written) == 3 * (48 + 12) + 2  # texts + two TSVs
    assert all((tmp_path / p).read_bytes() == (ROOT / "sample" / p).read_bytes() for p in written)
