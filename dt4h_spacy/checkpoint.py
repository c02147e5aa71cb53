"""Reading and writing DT4H multi-task checkpoints.

The published ``.pt`` is ``torch.save(model.state_dict())`` of a module with an
``encoder`` (a transformers ``AutoModel``) and ``classifiers`` (an ``nn.ModuleDict`` of one
``nn.Linear`` per task). Older exports name heads ``<prefix>_classifier`` and wrappers add a
``model.`` prefix or nest the dict; :func:`normalize_state_dict` maps all of them onto the
authors' layout so the rest of the package sees exactly one. A single-task Hugging Face
checkpoint (``save_pretrained`` of ``AutoModelForTokenClassification``: ``config.json`` with
``id2label``, weights, tokenizer) is mapped onto it too, as one head named by its entity
type (:func:`load_hf_checkpoint`).
"""

import json
import os
import pickle
import re
import socket
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch

from .errors import CheckpointError
from .textfiles import new_file_mode

ENCODER_PREFIX = "encoder."
HEAD_PREFIX = "classifiers."
NESTING_KEYS = ("state_dict", "model_state_dict", "model")
WRAPPER_PREFIXES = ("model.", "module.")
LEGACY_HEAD = re.compile(r"^(?P<prefix>.+)_classifier\.(?P<param>weight|bias)$")
MODERN_HEAD = re.compile(r"^classifiers\.(?P<task>[^.]+)\.(?P<param>weight|bias)$")
WEIGHT_SUFFIXES = (".pt", ".bin", ".safetensors")
TRAINER_STATE_FILE = "trainer_state.pt"  # the retired training loop's resumable state beside last/model.pt: not weights
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_HEAD_PREFIX = "classifier."

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]


def load_checkpoint_file(path: PathLike, allow_unsafe_pickle: bool = False, mmap: bool = False) -> StateDict:
    """Load a ``.pt``/``.bin``/``.safetensors`` file into the authors' key layout.

    ``torch.load`` runs with ``weights_only=True`` unless the caller opts in, because a
    pickled checkpoint from the internet can execute arbitrary code when unpickled.
    ``mmap`` maps a (zip-format) ``.pt`` instead of reading it: a model that adopts the
    tensors then costs no second copy, but the file must not be overwritten in place while
    it is in use.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint file not found: {path}. Pass the path of the DT4H .pt file "
            "(config `checkpoint`), or a Hugging Face repo id when online."
        )
    if path.is_dir():
        raise CheckpointError(f"Checkpoint {path} is a directory; pass the .pt file inside it.")
    return normalize_state_dict(_read_tensors(path, allow_unsafe_pickle, mmap), source=str(path))


def _read_tensors(path: Path, allow_unsafe_pickle: bool, mmap: bool) -> Any:
    """What a weights file holds, as safetensors or ``torch.load`` (see :func:`load_checkpoint_file`) reads it."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path} is empty (0 bytes): the download or copy did not finish; fetch it again.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    return _torch_load(path, allow_unsafe_pickle, mmap and zipfile.is_zipfile(path))


def _torch_load(path: Path, allow_unsafe_pickle: bool, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle, mmap=mmap)
    except pickle.UnpicklingError as err:
        if allow_unsafe_pickle:
            raise CheckpointError(f"{path} could not be unpickled: {err}") from err
        raise CheckpointError(
            f"{path} is not a plain state dict: loading it needs full unpickling, which can run "
            "arbitrary code hidden in the file. It was refused. If you trust the file's source, "
            "set the component config `allow_unsafe_pickle = true` (in Python or a pipeline config), or "
            "better, re-save it once with torch.save(model.state_dict(), path), which the command line loads."
        ) from err
    except Exception as err:  # a corrupt file can make the unpickler fail in any way (IndexError, KeyError, …)
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or not a .pt file?): "
            f"{type(err).__name__}: {err}"
        ) from err


def is_hf_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a folder written by transformers' ``save_pretrained``: a config and weights."""
    return path.is_dir() and (path / HF_CONFIG).is_file() and any((path / name).is_file() for name in HF_WEIGHTS)


def hf_labels(config: Mapping[str, Any], source: str) -> Tuple[str, ...]:
    """Label strings in id order, as ``config.json`` lists them in ``id2label`` (else ``label2id``).

    The order is the checkpoint's own; it is not assumed sorted, because training code
    other than the authors' numbers labels as it likes.
    """
    id2label = {int(i): label for i, label in (config.get("id2label") or {}).items()}
    if not id2label:
        id2label = {int(i): label for label, i in (config.get("label2id") or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise CheckpointError(
            f"{source} has no usable id2label (ids must be 0..n-1; found {sorted(id2label)}). A token-classification "
            "checkpoint must list its labels in config.json; set config.id2label and save it again."
        )
    return tuple(id2label[i] for i in range(len(id2label)))


def hf_head_name(labels: Sequence[str]) -> str:
    """The head of a single-task checkpoint is named by its entity types (``disease``), so its
    spans carry them as labels and it serves every language, as a multilabel head does."""
    return "_".join(sorted({label[2:].lower() for label in labels if label != "O"})) or "ner"


def load_hf_checkpoint(
    folder: PathLike, allow_unsafe_pickle: bool = False, mmap: bool = False
) -> Tuple[StateDict, Dict[str, Tuple[str, ...]]]:
    """A ``save_pretrained`` token-classification folder as ``(state dict in the authors' layout,
    head → labels in id order)``.

    The encoder's keys lose the model's base prefix (``roberta.``, ``bert.``, …: the one
    every non-classifier key shares) and the ``classifier`` becomes the head.
    """
    folder = Path(folder)
    source = str(folder)
    try:
        config = json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / HF_CONFIG} is not a readable JSON config: {err}") from err
    labels = hf_labels(config, source)
    weights = next(folder / name for name in HF_WEIGHTS if (folder / name).is_file())
    raw = _read_tensors(weights, allow_unsafe_pickle, mmap)
    head_keys = {k for k in raw if k.startswith(HF_HEAD_PREFIX)}
    if {f"{HF_HEAD_PREFIX}weight", f"{HF_HEAD_PREFIX}bias"} - head_keys:
        raise CheckpointError(
            f"{weights} has no token-classification head ('classifier.weight' and 'classifier.bias'); "
            f"found {_sample(raw)}. Pass a checkpoint saved from AutoModelForTokenClassification."
        )
    encoder = {k: v for k, v in raw.items() if k not in head_keys}
    prefixes = {k.split(".", 1)[0] for k in encoder}
    if len(prefixes) == 1 and all("." in k for k in encoder):
        encoder = {k.split(".", 1)[1]: v for k, v in encoder.items()}
    head = hf_head_name(labels)
    state = {f"{ENCODER_PREFIX}{k}": v for k, v in encoder.items()}
    state.update({f"{HEAD_PREFIX}{head}.{k[len(HF_HEAD_PREFIX):]}": raw[k] for k in head_keys})
    width = int(state[f"{HEAD_PREFIX}{head}.weight"].shape[0])
    if width != len(labels):
        raise CheckpointError(
            f"{source}: the classifier predicts {width} labels but config.json lists {len(labels)} "
            f"({list(labels)}); the config does not belong to these weights."
        )
    return state, {head: labels}


def normalize_state_dict(raw: Any, source: str = "checkpoint") -> StateDict:
    """Return ``encoder.*`` + ``classifiers.<task>.weight|bias`` keys, whatever the export."""
    if isinstance(raw, torch.nn.Module):
        raw = raw.state_dict()
    for key in NESTING_KEYS:
        if isinstance(raw, Mapping) and key in raw and isinstance(raw[key], (Mapping, torch.nn.Module)):
            return normalize_state_dict(raw[key], source)
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(
            f"{source} does not hold a state dict (found {type(raw).__name__}). Expected the "
            "dict written by torch.save(model.state_dict())."
        )
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    tensors = _strip_wrapper_prefix(tensors)
    normalized: StateDict = {}
    for key, value in tensors.items():
        legacy = LEGACY_HEAD.match(key)
        if legacy and not key.startswith(ENCODER_PREFIX):
            key = f"{HEAD_PREFIX}{legacy.group('prefix')}_ner.{legacy.group('param')}"
        normalized[key] = value
    if not any(k.startswith(ENCODER_PREFIX) for k in normalized) or not head_sizes(normalized):
        raise CheckpointError(
            f"{source} is not a DT4H multi-task checkpoint: expected keys 'encoder.*' and "
            f"'classifiers.<task>.weight' (or '<task>_classifier.weight'); found {_sample(normalized)}."
        )
    return normalized


def _strip_wrapper_prefix(tensors: StateDict) -> StateDict:
    for prefix in WRAPPER_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            return _strip_wrapper_prefix({k[len(prefix):]: v for k, v in tensors.items()})
    return tensors


def head_sizes(state: StateDict) -> Dict[str, int]:
    """Task name → number of labels, for every complete head in the state dict."""
    sizes: Dict[str, int] = {}
    for key, value in state.items():
        match = MODERN_HEAD.match(key)
        if match and match.group("param") == "weight" and value.dim() == 2:
            if f"{HEAD_PREFIX}{match.group('task')}.bias" in state:
                sizes[match.group("task")] = int(value.shape[0])
    return dict(sorted(sizes.items()))


def split_state_dict(state: StateDict) -> Tuple[StateDict, Dict[str, StateDict]]:
    """Separate encoder weights (prefix removed) from per-task head weights."""
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    heads: Dict[str, StateDict] = {}
    for key, value in state.items():
        match = MODERN_HEAD.match(key)
        if match:
            heads.setdefault(match.group("task"), {})[match.group("param")] = value
    return encoder, heads


def save_checkpoint(state: Mapping[str, torch.Tensor], path: PathLike) -> Path:
    """Write a state dict in the authors' layout: ``.pt`` via torch, else safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        mode = new_file_mode(path)
        save_file(plain, str(path))
        os.chmod(path, mode)  # safetensors creates its files 0600: others could not load a shared pipeline
    else:
        torch.save(plain, path)
    return path


def resolve_checkpoint(name_or_path: str, filename: Optional[str] = None) -> Path:
    """A local file, a folder holding one checkpoint, a ``save_pretrained`` folder (returned as is), or
    the ``.pt`` of a Hugging Face repo (downloaded and cached; a repo without one, but with a
    ``config.json``, is a single-task checkpoint and downloaded whole)."""
    local = Path(name_or_path).expanduser()
    if local.exists():
        return local if is_hf_checkpoint(local) or not local.is_dir() else checkpoint_in_folder(local)
    if not _looks_like_repo_id(name_or_path):
        raise CheckpointError(
            f"Checkpoint not found: {name_or_path} is neither an existing file nor a Hugging Face "
            "repo id (owner/name)."
        )
    return _download_checkpoint(name_or_path, filename)


def checkpoint_in_folder(folder: Path) -> Path:
    """The folder's only weights file; otherwise an error naming the file (or option) to use instead.

    Output folders of the retired ``dt4h-spacy train`` loop hold ``last/trainer_state.pt``
    (optimizer state, not weights), so it is never counted: ``last/`` resolves to its
    ``model.pt``. Users most often
    pass a training output folder or a saved pipeline, so those get their own way out.
    """
    candidates = sorted(
        p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.name != TRAINER_STATE_FILE and p.is_file()
    )
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        found = f"Directory {folder} holds {len(candidates)} checkpoint files ({[p.name for p in candidates]})"
    else:
        found = f"Directory {folder} holds no checkpoint file ({', '.join(WEIGHT_SUFFIXES)})"
    if (folder / "best" / "model.pt").is_file():
        way_out = (
            f"it is a `dt4h-spacy train` output folder: pass {folder / 'best' / 'model.pt'} (best dev score) "
            f"or {folder / 'last' / 'model.pt'} (last step)"
        )
    elif (folder / "config.cfg").is_file() or (folder / "meta.json").is_file():
        way_out = (
            f"it is a saved spaCy pipeline, which carries its own weights: use it with --model {folder} "
            f"(CLI) or spacy.load({str(folder)!r}) instead of as a checkpoint"
        )
    elif pipelines := pipelines_in(folder):
        way_out = f"it holds saved spaCy pipelines: use one with --model (CLI) or spacy.load: {_listing(pipelines)}"
    else:
        way_out = "pass the path of one file"
    raise CheckpointError(f"{found}; {way_out}.")


def is_spacy_pipeline(folder: Path) -> bool:
    """Whether ``spacy.load`` can read the folder: it needs both ``config.cfg`` and ``meta.json``."""
    return (folder / "config.cfg").is_file() and (folder / "meta.json").is_file()


def pipelines_in(folder: Path) -> List[Path]:
    """Saved spaCy pipelines one or two levels below ``folder`` (a training output's ``model-best``)."""
    found = {meta.parent for pattern in ("*/meta.json", "*/*/meta.json") for meta in folder.glob(pattern)}
    return sorted(p for p in found if is_spacy_pipeline(p))


def check_pipeline_folder(folder: Path) -> None:
    """Refuse an existing folder ``spacy.load`` cannot read, naming the pipelines inside it.

    spaCy would only say ``[E053] Could not read meta.json``; the usual mistake is passing
    a training output folder, whose pipelines sit in ``model-best/`` and ``model-last/``. Anything else
    (a pipeline, an installed package's name) is left to ``spacy.load``.
    """
    if not folder.is_dir() or is_spacy_pipeline(folder):
        return
    pipelines = pipelines_in(folder)
    if pipelines:
        way_out = f"It holds these pipelines; pass one of them: {_listing(pipelines)}."
    else:
        way_out = (
            "Pass a folder written by nlp.to_disk, such as OUTPUT/model-best of `spacy train` "
            "(a .pt checkpoint is not a pipeline)."
        )
    raise CheckpointError(f"{folder} is not a saved spaCy pipeline (it lacks config.cfg or meta.json). {way_out}")


def _listing(paths: List[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _looks_like_repo_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.endswith((".pt", ".bin"))


def hub_unreachable(repo_id: str, filename: str) -> bool:
    """True when ``filename`` of ``repo_id`` is not in the local cache and cannot be fetched:
    offline mode, or no connection to the hub within seconds. Asked before the hub libraries,
    whose retries take half a minute to give up."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return False
    if constants.HF_HUB_OFFLINE:
        return True
    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443), timeout=3).close()
    except OSError:
        return True
    return False


def _download_checkpoint(repo_id: str, filename: Optional[str]) -> Path:
    """The repo's ``.pt``: ``filename``, else ``<repo name>.pt`` (how BSC names them), else the only one.

    Asking for a named file first lets a cached copy serve offline (``HF_HUB_OFFLINE=1``),
    where listing the repo would need the network.
    """
    from huggingface_hub import hf_hub_download, list_repo_files, snapshot_download
    from huggingface_hub.utils import EntryNotFoundError

    if hub_unreachable(repo_id, filename or f"{repo_id.split('/')[-1]}.pt"):
        raise CheckpointError(
            f"The checkpoint {repo_id!r} is not in the local Hugging Face cache and the Hub cannot be "
            "reached (offline). Download the .pt file once and pass its local path as `checkpoint` "
            "(CLI: --checkpoint path/to/model.pt)."
        )
    try:
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename))
        try:
            return Path(hf_hub_download(repo_id, f"{repo_id.split('/')[-1]}.pt"))
        except EntryNotFoundError:
            files = list_repo_files(repo_id)
            weights = [f for f in files if f.endswith(".pt")]
        if not weights and HF_CONFIG in files:
            return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]))
        if len(weights) != 1:
            raise CheckpointError(
                f"Hugging Face repo {repo_id} has {len(weights)} .pt files ({weights}); "
                "name one with the config `checkpoint_file`."
            )
        return Path(hf_hub_download(repo_id, weights[0]))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"Could not fetch the checkpoint {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: "
            f"{err}). Offline? Download the .pt file once and pass its local path as `checkpoint` "
            "(CLI: --checkpoint path/to/model.pt)."
        ) from err


def _sample(state: Mapping[str, Any], limit: int = 6) -> List[str]:
    keys = list(state)
    return keys[:limit] + ([f"... ({len(keys) - limit} more)"] if len(keys) > limit else [])
