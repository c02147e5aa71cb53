"""Shared fixtures: tiny offline models, built once per test session."""

import os

# No test may touch the network. The hub libraries read these once, when first imported,
# so they are set before anything imports them (subprocesses inherit them too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path
from typing import Callable

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
