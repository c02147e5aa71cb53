"""The multi-task network: one shared encoder, one linear head per task.

Attribute names (``encoder``, ``dropout``, ``classifiers``) are the authors', so
``state_dict()`` of this module *is* the published checkpoint layout and files move freely
between their code and ours.
"""

from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast

from .checkpoint import (
    StateDict,
    _sample,
    head_sizes,
    hub_unreachable,
    is_hf_checkpoint,
    load_checkpoint_file,
    load_hf_checkpoint,
    resolve_checkpoint,
    split_state_dict,
)
from .errors import CheckpointError
from .labels import LabelScheme

IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
DEFAULT_BASE_MODEL = "FacebookAI/xlm-roberta-base"


def _skip_init() -> ContextManager:
    """transformers' switch that skips random initialisation of weights about to be replaced.

    It is private and moved in 5.0 (``modeling_utils`` → ``initialization``); without it,
    loading is only slower, so any future move costs time, never correctness.
    """
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return nullcontext()
    return no_init_weights()


def init_weights(model: "MultiTaskTokenClassifier", seed: int, std: float = 0.02) -> "MultiTaskTokenClassifier":
    """Random weights drawn from our own generator, in module-name order: the encoder as
    BERT initialises it (weights ~ N(0, std), zero biases and padding rows, unit LayerNorms),
    each head as torch initialises the authors' ``nn.Linear`` (U(±1/√fan_in)).

    transformers changes how it initialises a random model between versions, so a model
    built or trained from scratch (tests, the sample workflow, the demo) would differ with
    the installed version; this makes it a function of the seed alone.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in sorted(model.encoder.named_modules(), key=lambda item: item[0]):
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
    init_heads(model.classifiers, generator)
    return model


def init_heads(heads: Mapping[str, nn.Linear], generator: torch.Generator) -> None:
    """Each head as torch initialises the authors' ``nn.Linear`` (U(±1/√fan_in)), in name
    order, from ``generator``: also how a head added to a trained checkpoint starts."""
    with torch.no_grad():
        for _, head in sorted(heads.items()):
            bound = head.in_features ** -0.5
            head.weight.uniform_(-bound, bound, generator=generator)
            head.bias.uniform_(-bound, bound, generator=generator)


class MultiTaskTokenClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head_sizes: Mapping[str, int], dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.classifiers = nn.ModuleDict({task: nn.Linear(hidden, n) for task, n in head_sizes.items()})

    @classmethod
    def from_config(
        cls,
        config: PretrainedConfig,
        head_sizes: Mapping[str, int],
        dropout: float = 0.1,
        add_pooling_layer: bool = True,
        seed: Optional[int] = None,
    ) -> "MultiTaskTokenClassifier":
        """A new network for ``config``: random from ``seed`` (see :func:`init_weights`), or,
        with ``seed=None``, uninitialised, for weights that are loaded right after."""
        with _skip_init() if seed is None else nullcontext():
            encoder = AutoModel.from_config(config)
            if not add_pooling_layer and hasattr(encoder, "pooler"):
                encoder.pooler = None
            model = cls(encoder, head_sizes, dropout)
        return model if seed is None else init_weights(model, seed)

    @property
    def tasks(self) -> Tuple[str, ...]:
        return tuple(self.classifiers.keys())

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Contextual subword vectors, shared by every head."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def word_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        selected: Mapping[str, torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Head → fp32 logits of the words it reads: THE forward of prediction and training.

        The encoder reads the padded windows once (under whatever autocast the caller set);
        the vector of each word's first subword (``rows``, ``cols``) goes, through dropout
        (a no-op in eval mode), to the heads that read it (``selected[head]`` indexes the
        words). Heads run in fp32, so their argmax does not depend on the precision.
        """
        vectors = self.encode(input_ids, attention_mask)[rows, cols]
        with torch.autocast(input_ids.device.type, enabled=False):
            vectors = self.dropout(vectors.float())
            return {task: self.classifiers[task](vectors[index]) for task, index in selected.items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str) -> torch.Tensor:
        """Per-subword logits of one head: the authors' ``model(..., task=...)`` contract."""
        return self.classifiers[task](self.dropout(self.encode(input_ids, attention_mask)))


def load_network(
    checkpoint: Union[str, Path],
    base_model: Optional[Union[str, Path]] = None,
    checkpoint_file: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    allow_unsafe_pickle: bool = False,
    mmap: bool = False,
) -> Tuple[MultiTaskTokenClassifier, PreTrainedTokenizerFast, Dict[str, LabelScheme]]:
    """Checkpoint → ``(network, tokenizer, head → label scheme)``: the one way every caller loads one.

    A DT4H ``.pt`` takes its encoder config and tokenizer from ``base_model`` (default
    xlm-roberta-base) and sorted BIO labels from its head names; a single-task
    ``save_pretrained`` checkpoint is its own base model (unless ``base_model`` is given) and
    takes its labels from ``config.id2label``. ``labels`` overrides either, for every head.
    """
    path = resolve_checkpoint(str(checkpoint), checkpoint_file)
    listed: Dict[str, Tuple[str, ...]] = {}
    if is_hf_checkpoint(path):
        state, listed = load_hf_checkpoint(path, allow_unsafe_pickle, mmap)
        base_model = base_model or path
    else:
        state = load_checkpoint_file(path, allow_unsafe_pickle, mmap)
    config, tokenizer = load_base_model(base_model or DEFAULT_BASE_MODEL)
    model = model_from_state_dict(state, config)
    schemes = {task: LabelScheme(tuple(labels) if labels else listed[task]) if task in listed
               else LabelScheme.for_task(task, labels) for task in model.tasks}
    return model, tokenizer, schemes


def model_from_state_dict(state: StateDict, config: PretrainedConfig) -> MultiTaskTokenClassifier:
    """Build the network for ``config`` and load ``state``, failing loudly on any mismatch."""
    encoder_state, heads = split_state_dict(state)
    sizes = head_sizes(state)
    for task, params in heads.items():
        weight = params.get("weight")
        if weight is None or "bias" not in params:
            raise CheckpointError(f"Head {task!r} is incomplete: it needs both weight and bias.")
        if weight.dim() != 2 or weight.shape[1] != config.hidden_size:
            raise CheckpointError(
                f"Head {task!r} has weight shape {tuple(weight.shape)}, but the encoder's hidden size "
                f"is {config.hidden_size}. The checkpoint and `base_model` do not belong together."
            )
    has_pooler = any(k.startswith("pooler.") for k in encoder_state)
    model = MultiTaskTokenClassifier.from_config(config, sizes, add_pooling_layer=has_pooler)
    try:
        missing, unexpected = _adopt(model.encoder, encoder_state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(
            f"The checkpoint's encoder weights do not fit the `base_model` config "
            f"({config.model_type}, hidden {config.hidden_size}, {config.num_hidden_layers} layers): {err}"
        ) from err
    missing = [k for k in missing if k not in IGNORED_BUFFERS]
    unexpected = [k for k in unexpected if k not in IGNORED_BUFFERS]
    if missing or unexpected:
        raise CheckpointError(
            "The checkpoint's encoder does not match the `base_model` architecture "
            f"({config.model_type}, {config.num_hidden_layers} layers). "
            f"Missing from the checkpoint: {_sample(dict.fromkeys(missing))}; "
            f"not expected: {_sample(dict.fromkeys(unexpected))}. "
            "Use the base model the checkpoint was trained from."
        )
    for task, params in heads.items():
        _adopt(model.classifiers[task], params, strict=True)
    return model.eval()


def _adopt(module: nn.Module, state: StateDict, strict: bool):
    """Load by taking the checkpoint's tensors rather than copying them.

    A memory-mapped checkpoint then stays mapped: loading costs no second copy of the
    weights, and pages are read (and shared between processes) only as they are used.
    """
    own = module.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state.items()}
    return module.load_state_dict(state, strict=strict, assign=True)


def load_base_model(name_or_path: Union[str, Path]) -> Tuple[PretrainedConfig, PreTrainedTokenizerFast]:
    """Encoder config and fast tokenizer from a local directory or a hub name."""
    source = str(name_or_path)
    local = Path(source).expanduser()
    if local.exists():
        missing = [name for name, found in _local_files(local).items() if not found]
        if missing:
            raise CheckpointError(
                f"base_model directory {local} has no {' and no '.join(missing)}. It must hold the "
                "encoder's config.json and tokenizer files (AutoConfig/AutoTokenizer.save_pretrained)."
            )
    elif hub_unreachable(source, "config.json"):
        raise CheckpointError(_offline_message(source, "files", "it is not in the local Hugging Face cache "
                                                                "and the Hub cannot be reached"))
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise CheckpointError(_offline_message(source, "config.json", err)) from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except Exception as err:  # transformers raises many types for absent or broken files
        raise CheckpointError(_offline_message(source, "tokenizer files", err)) from err
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(
            f"base_model {source} has no fast tokenizer (tokenizer.json); word alignment needs one."
        )
    return config, tokenizer


def _local_files(directory: Path) -> Dict[str, bool]:
    return {
        "config.json": (directory / "config.json").is_file(),
        "tokenizer files (tokenizer.json or sentencepiece.bpe.model)": any(
            (directory / name).is_file() for name in ("tokenizer.json", "sentencepiece.bpe.model")
        ),
    }


def _offline_message(source: str, what: str, err: object) -> str:
    return (
        f"Could not load the {what} of base_model {source!r}: {str(err).rstrip('. ')}. If you are "
        "offline, save the base model's config and tokenizer to a directory once "
        "(AutoConfig/AutoTokenizer `.save_pretrained(dir)`) and pass that directory as `base_model` "
        "(CLI: --base-model DIR; train: --paths.base_model DIR)."
    )

