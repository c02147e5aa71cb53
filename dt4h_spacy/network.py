"""The torch network as a thinc ``Model``, so spaCy's training loop can update it.

``spacy train`` drives a component through thinc: ``model.begin_update`` for the forward
pass, the returned callback for the backward pass and ``model.finish_update(optimizer)``
for the step, so the ``[training.optimizer]`` (learning-rate schedules, gradient clipping,
averaging) and ``accumulate_gradient`` apply unchanged. The wrapper is thinc's
``PyTorchWrapper_v2`` around the module's one forward,
:meth:`~dt4h_spacy.model.MultiTaskTokenClassifier.word_logits`, with thinc's mixed precision
and gradient scaler on a GPU. Logits stay torch tensors, so the loss is computed by torch on
whatever device the network is on.
"""

from typing import Any, Callable, Dict, Tuple

import torch
from thinc.api import ArgsKwargs, Model, PyTorchGradScaler, PyTorchWrapper_v2

from .inference import batch_tensors
from .model import MultiTaskTokenClassifier
from .windows import WindowBatch

Logits = Dict[str, torch.Tensor]


class _WordLogits(torch.nn.Module):
    """``word_logits`` as the module's ``forward``, which is what the shim calls."""

    def __init__(self, network: MultiTaskTokenClassifier) -> None:
        super().__init__()
        self.network = network

    def forward(self, input_ids, attention_mask, rows, cols, selected) -> Tuple[torch.Tensor, ...]:
        logits = self.network.word_logits(input_ids, attention_mask, rows, cols, selected)
        return tuple(logits[task] for task in selected)


def thinc_network(network: MultiTaskTokenClassifier, device: torch.device) -> Model[WindowBatch, Logits]:
    """A thinc model of ``network`` (shared, not copied: the component predicts with it too)."""
    on_gpu = device.type == "cuda"
    return PyTorchWrapper_v2(
        _WordLogits(network),
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        mixed_precision=on_gpu,
        grad_scaler=PyTorchGradScaler(enabled=on_gpu),
        device=device,
    )


def _convert_inputs(model: Model, batch: WindowBatch, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    device = model.shims[0].device
    return ArgsKwargs(args=batch_tensors(batch, device), kwargs={}), lambda d_inputs: None


def _convert_outputs(model: Model, inputs_outputs: Tuple[WindowBatch, Any], is_train: bool) -> Tuple[Logits, Callable]:
    batch, outputs = inputs_outputs
    tasks = list(batch.selected)
    logits = dict(zip(tasks, outputs))

    def backprop(d_logits: Logits) -> ArgsKwargs:
        return ArgsKwargs(
            args=(tuple(logits[task] for task in tasks),),
            kwargs={"grad_tensors": tuple(d_logits[task] for task in tasks)},
        )

    return logits, backprop


def unloaded_network() -> Model:
    """What a component's ``model`` is before its network is loaded: a thinc model that
    refuses to run, rather than a load as a side effect of looking."""

    def forward(model: Model, X: Any, is_train: bool) -> Tuple[Any, Callable]:
        raise RuntimeError("The DT4H network is not loaded yet: call nlp.initialize() or annotate a doc first.")

    return Model("dt4h_network_unloaded", forward)
