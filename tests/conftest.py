"""Shared fixtures: tiny offline models, built once per test session."""

import os
import signal
import subprocess
import sys
import time

# No test may touch the network. The hub libraries read these once, when first imported,
# so they are set before anything imports them (subprocesses inherit them too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path
from typing import Callable, Sequence

import pytest
import spacy
from spacy.language import Language

from dt4h_spacy.testing import (
    build_multilabel_checkpoint,
    build_stl_checkpoint,
    build_tiny_base_model,
    build_tiny_checkpoint,
    train_tiny_model,
)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """Stands in for FacebookAI/xlm-roberta-base: config.json + tokenizer files."""
    return build_tiny_base_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_base_model) -> Path:
    """A random tiny model saved as the authors save theirs."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_base_model)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, tiny_base_model) -> Path:
    """A tiny model that learned each language's own disease words (see dt4h_spacy.testing)."""
    model = train_tiny_model(tiny_base_model)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("trained") / "trained.pt", tiny_base_model, model=model)


@pytest.fixture(scope="session")
def multilabel_checkpoint(tmp_path_factory, tiny_base_model, trained_checkpoint) -> Path:
    """The trained tiny model in the multilabel layout: heads ``disease`` (tags Spanish
    diseases), ``symptom`` (Italian ones) and ``procedure`` (Romanian ones), for every language."""
    from dt4h_spacy.model import load_network

    model, _, _ = load_network(trained_checkpoint, tiny_base_model)
    return build_multilabel_checkpoint(tmp_path_factory.mktemp("multilabel") / "multilabel.pt", model)


@pytest.fixture(scope="session")
def stl_checkpoint(tmp_path_factory, tiny_base_model, trained_checkpoint) -> Path:
    """The trained Spanish head as a single-task Hugging Face folder, id2label (O, B-, I-) not sorted."""
    from dt4h_spacy.model import load_network

    model, _, _ = load_network(trained_checkpoint, tiny_base_model)
    return build_stl_checkpoint(tmp_path_factory.mktemp("stl") / "stl", tiny_base_model, model, "disease_es_ner")


@pytest.fixture(scope="session")
def make_nlp(tiny_base_model, tiny_checkpoint) -> Callable[..., Language]:
    """``make_nlp(lang, checkpoint=None, **config)``: a blank pipeline with the component."""

    def make(lang: str = "es", checkpoint: Path = None, **config) -> Language:
        nlp = spacy.blank(lang)
        cfg = {"checkpoint": str(checkpoint or tiny_checkpoint), "base_model": str(tiny_base_model)}
        nlp.add_pipe("dt4h_disease", config={**cfg, **config})
        return nlp

    return make


@pytest.fixture(scope="session")
def two_component_pipeline(tmp_path_factory, trained_checkpoint, multilabel_checkpoint, tiny_base_model) -> Path:
    """A saved ``xx`` pipeline of two components: ``disease`` (the per-language checkpoint,
    es/it/ro, spans key ``disease``) beside ``family`` (the multilabel ``disease`` head, every
    language, spans key ``family``), as a hospital combines them."""
    nlp = spacy.blank("xx")
    nlp.add_pipe("dt4h_disease", name="disease", config={
        "checkpoint": str(trained_checkpoint), "base_model": str(tiny_base_model), "spans_key": "disease"})
    nlp.add_pipe("dt4h_disease", name="family", config={
        "checkpoint": str(multilabel_checkpoint), "base_model": str(tiny_base_model), "spans_key": "family",
        "heads": ["disease"]})
    nlp.initialize()
    path = tmp_path_factory.mktemp("two") / "pipeline"
    nlp.to_disk(path)
    return path


# Runs the real CLI and, once its second part is durable, touches a marker and waits to be
# killed: SIGKILL then lands at the same point on every run.
KILL_AFTER_TWO_PARTS = """
import sys, time
from pathlib import Path
from dt4h_spacy.io.parts import Parts
marker = Path(sys.argv.pop(1))
commit = Parts.commit

def commit_then_wait(self, *args, **kwargs):
    commit(self, *args, **kwargs)
    if len(self.paths) == 2:
        marker.touch()
        time.sleep(300)

Parts.commit = commit_then_wait
from dt4h_spacy.cli import main
main()
"""


@pytest.fixture(scope="session")
def kill_after_two_parts() -> Callable[..., str]:
    """``kill_after_two_parts(args, marker, cwd=None)``: run ``dt4h-spacy ARGS`` in a new
    process, SIGKILL it once its second ``--resume`` part is committed (``marker`` is touched
    then) and return its stderr."""

    def kill(args: Sequence[str], marker: Path, cwd: Path = None) -> str:
        command = [sys.executable, "-c", KILL_AFTER_TWO_PARTS, str(marker), *map(str, args)]
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        assert marker.exists(), stderr
        return stderr

    return kill
