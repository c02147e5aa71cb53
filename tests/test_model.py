"""The network's own initialisation: the same weights under every transformers version.

transformers changes how it initialises a random model between versions (4.x and 5.x
differ), so fixtures built with it would test different models on different machines. CI
runs this file under the newest and the lowest supported transformers; the pinned
fingerprints are what both must give.
"""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from dt4h_spacy.model import MultiTaskTokenClassifier, _skip_init, model_from_state_dict
from dt4h_spacy.testing import build_tiny_model, train_tiny_model

RANDOM_FINGERPRINT = 19.9256
TRAINED_FINGERPRINT = 19.7322


def fingerprint(model: nn.Module) -> float:
    """Projection of all weights on a fixed random ±1 vector: moves by ~0.02 when training
    draws other dropout masks (measured 0.025), far less with another CPU's float rounding."""
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for _, param in sorted(model.named_parameters()):
        signs = torch.randint(0, 2, param.shape, generator=generator, dtype=torch.float64) * 2 - 1
        total += float((param.detach().double() * signs).sum())
    return total


def test_a_random_model_is_a_function_of_its_seed_alone(tiny_base_model):
    torch.manual_seed(123)  # whatever the global generator holds must not matter
    model = build_tiny_model(tiny_base_model, seed=0)
    torch.manual_seed(456)
    again = build_tiny_model(tiny_base_model, seed=0)
    other = build_tiny_model(tiny_base_model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(model.classifiers["disease_es_ner"].weight, other.classifiers["disease_es_ner"].weight)
    assert fingerprint(model) == pytest.approx(RANDOM_FINGERPRINT, abs=1e-3)


def test_the_encoder_starts_as_bert_and_the_heads_as_torch_linear(tiny_base_model):
    model = build_tiny_model(tiny_base_model, seed=0)
    embeddings = model.encoder.embeddings.word_embeddings
    assert torch.count_nonzero(embeddings.weight[embeddings.padding_idx]) == 0
    assert abs(float(embeddings.weight.detach().std()) - 0.02) < 0.002
    for module in model.encoder.modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
        elif isinstance(module, nn.Linear):
            assert torch.all(module.bias == 0)
    for head in model.classifiers.values():  # torch's nn.Linear default, as the authors' heads get
        bound = head.in_features ** -0.5
        assert float(head.weight.detach().abs().max()) <= bound and float(head.bias.detach().abs().max()) > 0


def test_training_is_the_same_whatever_ran_before_and_whatever_the_version(tiny_base_model):
    """Dropout draws from the trainer's own seed, not from what earlier tests left behind."""
    torch.manual_seed(1)
    first = train_tiny_model(tiny_base_model, steps=6)
    torch.manual_seed(2)
    torch.rand(1000)
    second = train_tiny_model(tiny_base_model, steps=6)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert fingerprint(first) == pytest.approx(TRAINED_FINGERPRINT, abs=1e-3)


def test_loading_skips_transformers_random_init_and_keeps_every_weight(tiny_base_model):
    from transformers import AutoConfig

    assert not isinstance(_skip_init(), nullcontext), "transformers' no_init_weights moved: loading got slower"
    model = build_tiny_model(tiny_base_model, seed=3)
    loaded = model_from_state_dict(model.state_dict(), AutoConfig.from_pretrained(tiny_base_model))
    assert isinstance(loaded, MultiTaskTokenClassifier) and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

