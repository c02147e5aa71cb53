"""Word lists → per-word label probabilities, many documents per forward pass."""

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy
import torch
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from .allocator import keep_freed_memory
from .labels import LabelScheme
from .model import MultiTaskTokenClassifier
from . import stages
from .runtime import auto_precision, default_threads
from .windows import Window, WindowBatch, collate_windows, encode_words, make_windows

ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # "auto": see runtime.auto_precision

TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"

_forked = False
_set_for_fork = False


def _note_fork() -> None:
    global _forked
    _forked = True


def _before_fork() -> None:
    """Tell the Rust tokenizers that forked workers tokenize alone, unless the user chose.

    A child forked after the tokenizer used its thread pool otherwise prints "The current
    process just got forked…" once per worker; the variable set before the fork silences it
    and has the child tokenize on one thread, which is what it would fall back to anyway.
    """
    global _set_for_fork
    if TOKENIZERS_PARALLELISM not in os.environ:
        os.environ[TOKENIZERS_PARALLELISM] = "false"
        _set_for_fork = True


def _after_fork_in_parent() -> None:
    """The parent keeps its parallel tokenizer: undo what :func:`_before_fork` set."""
    global _set_for_fork
    if _set_for_fork:
        os.environ.pop(TOKENIZERS_PARALLELISM, None)
        _set_for_fork = False


# A child forked after torch used its OpenMP thread pool hangs in its first multi-threaded
# op (GNU libgomp is not fork-safe), as in spaCy's nlp.pipe(n_process=k) on Linux.
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_note_fork)


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present); CUDA that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available; use device='cpu'.")
    return device


def max_positions(config: PretrainedConfig) -> int:
    """Usable positions: RoBERTa-style models reserve ``pad_token_id + 1`` of them."""
    positions = int(config.max_position_embeddings)
    if config.model_type in ROBERTA_LIKE:
        positions -= int(config.pad_token_id or 0) + 1
    return positions


def default_batch_size(device: torch.device) -> int:
    """Windows per forward pass when the config says null. A GPU needs batches to be busy; on a
    CPU one window per pass measured 1.2x faster than batches of 32 (2 cores, base-sized
    encoder: larger attention tensors leave the caches), and the windows are packed anyway."""
    return 1 if device.type == "cpu" else 32


@dataclass
class WordTagger:
    """A loaded network with its tokenizer and the label scheme of each head."""

    model: MultiTaskTokenClassifier
    tokenizer: PreTrainedTokenizerFast
    schemes: Dict[str, LabelScheme]
    max_length: int = 512
    stride: int = 128
    batch_size: Optional[int] = None
    max_batch_subwords: Optional[int] = 16384
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    quantize: bool = False
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        check_speed_options(self.device, self.precision, self.quantize, self.num_threads)
        if self.precision == "auto":
            self.precision = auto_precision(self.device, self.quantize)
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.device)
        limit = max_positions(self.model.encoder.config)
        if self.max_length > limit:
            raise ValueError(
                f"max_length {self.max_length} exceeds the encoder's {limit} positions; "
                f"set max_length <= {limit}."
            )
        for task, scheme in self.schemes.items():
            width = self.model.classifiers[task].out_features
            if len(scheme.labels) != width:
                raise ValueError(
                    f"Head {task!r} predicts {width} labels but {len(scheme.labels)} were given "
                    f"({list(scheme.labels)}). Fix the `labels` config to list exactly {width} labels "
                    "in id order."
                )
        self.model.to(self.device).eval()
        if self.device.type == "cpu":
            keep_freed_memory()
        # What `state_dict` saves after int8 quantization replaced the encoder's Linear layers:
        # the fp32 weights (the tensors are shared, so this costs no copy). Unquantized, the
        # live weights are saved, as training may have changed them.
        self._fp32_state: Optional[Dict[str, torch.Tensor]] = None
        if self.quantize:
            self._fp32_state = dict(self.model.state_dict(keep_vars=False))
            quantize_linear_layers(self.model.encoder)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The network's fp32 weights in the authors' layout, whatever ``quantize`` did."""
        return dict(self._fp32_state if self._fp32_state is not None else self.model.state_dict())

    def predict(
        self,
        docs: Sequence[Sequence[str]],
        tasks: Sequence[str],
        sentence_starts: Optional[Sequence[Optional[numpy.ndarray]]] = None,
    ) -> List[numpy.ndarray]:
        """One ``(n_words, n_labels)`` float32 probability array per document, from head ``tasks[i]``."""
        heads = [(t,) for t in tasks]
        return [probs[task] for probs, task in zip(self.predict_heads(docs, heads, sentence_starts), tasks)]

    def predict_heads(
        self,
        docs: Sequence[Sequence[str]],
        heads: Sequence[Sequence[str]],
        sentence_starts: Optional[Sequence[Optional[numpy.ndarray]]] = None,
    ) -> List[Dict[str, numpy.ndarray]]:
        """Per document, head → ``(n_words, n_labels)`` float32 probabilities, for each of
        ``heads[i]``. Every head of a window reads the same encoder pass.

        ``sentence_starts[d]`` flags the words of document ``d`` that open a sentence, so
        whole sentences are packed into windows (see :func:`~dt4h_spacy.windows.make_windows`);
        without it a document is read as one sentence. A word with no subword (the tokenizer
        dropped every character) is certain ``O``.
        """
        self.ready()
        encoded = encode_words(self.tokenizer, docs)
        windows = make_windows(
            encoded, self.max_length, self.stride, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id,
            sentence_starts,
        )
        return stages.run_windows(self, windows, [tuple(h) for h in heads], [len(words) for words in docs])

    def ready(self) -> None:
        """Threads as configured and eval mode (training, the component's update, leaves it in
        train mode): called once before :meth:`forward` runs a document set's batches."""
        self._set_threads()
        self.model.eval()

    @torch.inference_mode()
    def forward(self, batch: WindowBatch) -> Dict[str, numpy.ndarray]:
        """The device stage: head → float32 probabilities of the words of ``batch`` it reads."""
        return {task: torch.softmax(logits, dim=-1).cpu().numpy() for task, logits in self._word_logits(batch).items()}

    @torch.inference_mode()
    def window_logits(
        self, input_ids: numpy.ndarray, attention_mask: numpy.ndarray, positions: Sequence[numpy.ndarray],
        heads: Sequence[Sequence[str]],
    ) -> List[Dict[str, numpy.ndarray]]:
        """Per given window ``w``, head → float32 logits at ``positions[w]``, for each of ``heads[w]``.

        For readers that cut their own windows (``compat="authors"``): rows of ``input_ids``
        (padded on the right) are run padded to their full width, through the one collation,
        ``batch_size`` windows (at most ``max_batch_subwords`` ids) per forward pass.
        """
        self.ready()
        n_windows, length = input_ids.shape
        per_batch = self.batch_size
        if self.max_batch_subwords is not None:
            per_batch = max(1, min(per_batch, self.max_batch_subwords // max(length, 1)))
        windows = [Window(w, input_ids[w, : int(attention_mask[w].sum())], positions[w],
                          numpy.arange(len(positions[w]))) for w in range(n_windows)]
        out: List[Dict[str, numpy.ndarray]] = [{} for _ in windows]
        for lo in range(0, n_windows, per_batch):
            members = windows[lo : lo + per_batch]
            batch = collate_windows(members, [heads[w.doc] for w in members], self.tokenizer.pad_token_id, length)
            for task, logits in self._word_logits(batch).items():
                task_logits = logits.cpu().numpy()
                start = 0
                for r in batch.members[task]:
                    n = len(members[r].positions)
                    out[lo + r][task] = task_logits[start : start + n]
                    start += n
        return out

    def _word_logits(self, batch: WindowBatch) -> Dict[str, torch.Tensor]:
        with self._autocast():
            return self.model.word_logits(*batch_tensors(batch, self.device))

    def _set_threads(self) -> None:
        """Apply ``num_threads``, by default the cores this process may use (see
        :func:`~dt4h_spacy.runtime.default_threads`); in a forked worker, one thread (see ``_note_fork``)."""
        wanted = 1 if _forked else self.num_threads or min(torch.get_num_threads(), default_threads())
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _autocast(self) -> ContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def batch_tensors(batch: WindowBatch, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """:meth:`~dt4h_spacy.model.MultiTaskTokenClassifier.word_logits`' arguments on ``device``."""
    put = lambda array: torch.from_numpy(array).to(device)  # noqa: E731
    selected = {task: put(index) for task, index in batch.selected.items()}
    return put(batch.input_ids), put(batch.attention_mask), put(batch.rows), put(batch.cols), selected


def check_speed_options(device: torch.device, precision: str, quantize: bool, num_threads: Optional[int]) -> None:
    """Refuse combinations that would silently do nothing or run slower than fp32."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device (device is {device.type!r}). On CPU use "
            "precision='bf16' (CPUs with AVX512-BF16/AMX) or quantize=true."
        )
    if quantize and device.type != "cpu":
        raise ValueError(
            f"quantize=true is int8 dynamic quantization for CPU; device is {device.type!r}. "
            "On GPU use precision='bf16' or 'fp16' instead."
        )
    if quantize and precision not in ("fp32", "auto"):
        raise ValueError(f"Choose quantize=true or precision={precision!r}, not both.")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1 (or null: the cores this process may use), got {num_threads}.")


def quantize_linear_layers(module: torch.nn.Module) -> None:
    """int8 dynamic quantization of every ``nn.Linear`` in ``module``, in place.

    The heads stay fp32: they are tiny, and exact heads keep the label argmax stable.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:
        raise RuntimeError(
            f"quantize=true needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
            "does not have; set quantize=false."
        ) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao points to torchao; it still works
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
