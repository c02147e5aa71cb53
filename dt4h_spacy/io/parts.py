"""Durable progress of a long run, so that ``--resume`` continues it after any crash.

Annotated documents are committed in parts beside OUTPUT (``OUTPUT.parts/part-00000001.jsonl``):
each part is written to a temporary file, fsynced and renamed into place, then the folder
is fsynced, so after a power cut a part is either complete or absent. A part's first line
lists its documents (also those without mentions) and the kept columns of those that have
some (``metadata``); the rest are its mentions sorted in output order, each with every
field (its document's kept columns last). The final OUTPUT is a k-way merge of the parts
(an external merge sort in passes of :data:`FAN_IN` files), written atomically; then the
folder is removed.
``job.json`` records the settings that decide the rows, so a resume with other settings is
refused instead of mixing two runs' rows. A finished run leaves that record beside OUTPUT
(``OUTPUT.job.json``, with OUTPUT's own identity and the run's counts), so a ``--resume`` of a
finished job says so instead of annotating everything again, and one with other settings, or
of an OUTPUT changed since, is refused instead of replacing a finished OUTPUT.
"""

import hashlib
import heapq
import json
import os
import shutil
from contextlib import suppress
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from .records import Failure, Mention, mention_values, sort_key, values_mention

FAN_IN = 64
JOB_FILE = "job.json"
RECORD_SUFFIX = ".job.json"


IDENTITY_BLOCK = 1 << 20


def content_identity(value: Optional[str]) -> Any:
    """What a ``--resume`` compares for an input or model named by ``value``: for a file its
    size, modification time and a hash of its first and last MB (a Parquet file's metadata
    is in its last bytes); for a folder each file's relative name, size and modification
    time; a name that is no path (a hub id, an installed package) as given. Paths are
    resolved first, so ``m.pt`` and ``/abs/m.pt`` are one model, and a file regenerated
    under the same name is another."""
    if value is None:
        return None
    path = Path(value)
    if not path.exists():
        return value
    path = path.resolve()
    if path.is_dir():
        found = {}
        for dirpath, _, names in os.walk(path):
            for name in names:
                with suppress(OSError):
                    info = os.stat(os.path.join(dirpath, name))
                    found[Path(dirpath, name).relative_to(path).as_posix()] = [info.st_size, info.st_mtime_ns]
        return {"folder": str(path), "files": dict(sorted(found.items()))}
    info = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(IDENTITY_BLOCK))
        if info.st_size > IDENTITY_BLOCK:
            handle.seek(max(IDENTITY_BLOCK, info.st_size - IDENTITY_BLOCK))
            digest.update(handle.read(IDENTITY_BLOCK))
    return {"file": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256_ends": digest.hexdigest()}


class PartsError(ValueError):
    """Leftovers that cannot be used as asked; the message names the folder and the way out."""


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def job_record(output: Path) -> Path:
    """Where a finished run into ``output`` records its job (see :func:`record_finished`)."""
    return output.with_name(output.name + RECORD_SUFFIX)


def changed_settings(saved: Mapping[str, Any], job: Mapping[str, Any]) -> List[str]:
    """The names of the settings whose values differ between two jobs."""
    return sorted(k for k in set(saved) | set(job) if saved.get(k) != job.get(k))


def _placed_elsewhere(job: Mapping[str, Any]) -> Dict[str, Any]:
    """``job`` without OUTPUT's path: a record moved with its OUTPUT still describes it."""
    return {key: value for key, value in json.loads(json.dumps(job, default=str)).items() if key != "output"}


def _output_identity(output: Path) -> Dict[str, Any]:
    return {key: value for key, value in content_identity(str(output)).items() if key != "file"}


def record_finished(output: Path, job: Mapping[str, Any], documents: int, mentions: int,
                    failures: Iterable[Failure]) -> None:
    """Record beside the just written ``output`` which job it holds (and its counts), durably."""
    record = {"job": job, "output_content": _output_identity(output), "documents": documents,
              "mentions": mentions, "failures": [[str(f.path), f.reason] for f in failures]}
    target = job_record(output)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(record, indent=1, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    _fsync_folder(target.parent)


def finished(output: Path, job: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The record of the finished run of ``job`` that ``output`` holds (its ``documents``,
    ``mentions`` and ``failures``); None when there is no ``output``. Raises
    :class:`PartsError` when ``output`` exists but is not that: written with other settings or
    input, changed since, or with no record of its run."""
    if not output.exists():
        return None
    again = f"run without --resume to annotate again (replacing {output}), or give another OUTPUT"
    try:
        record = json.loads(job_record(output).read_text(encoding="utf-8"))
        saved = record["job"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PartsError(f"{output} exists, with neither {parts_folder(output).name} of an interrupted run to "
                         f"continue nor {job_record(output).name} saying which run wrote it; {again}.") from None
    changed = changed_settings(_placed_elsewhere(saved), _placed_elsewhere(job))
    if "input_content" in changed and "input" not in changed:
        raise PartsError(f"INPUT {saved['input']} has changed since the run that wrote {output} (its size, time or "
                         f"bytes differ: a regenerated extract?); {again}.")
    if changed:
        raise PartsError(f"{output} was written by a finished run with other settings ({', '.join(changed)}); "
                         f"{again}.")
    if record.get("output_content") != _output_identity(output):
        raise PartsError(f"{output} has changed since the run that wrote it (its size, time or bytes differ); {again}.")
    return record


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_run(path: Path, documents: Iterable[str], mentions: Iterable[Mention],
               metadata: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
    header: Dict[str, Any] = {"documents": list(documents)}
    if metadata:
        header["metadata"] = dict(metadata)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(header, ensure_ascii=False, default=str) + "\n")
        for m in mentions:
            handle.write(json.dumps(mention_values(m), ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read_header(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.loads(handle.readline())


def _read_documents(path: Path) -> List[str]:
    return _read_header(path)["documents"]


def _read_mentions(path: Path) -> Iterator[Mention]:
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            yield values_mention(json.loads(line))


class Parts:
    """The committed parts of one run into OUTPUT."""

    def __init__(self, output: Path, job: Dict[str, Any]) -> None:
        self.folder = parts_folder(output)
        self.job = job
        self.paths: List[Path] = []

    def open(self, resume: bool) -> Set[str]:
        """The documents already committed (empty for a new run). Without ``resume``,
        leftovers of an earlier run are refused, never mixed in nor silently deleted."""
        if not self.folder.exists():
            return set()
        if not resume:
            raise PartsError(f"{self.folder} holds the progress of an interrupted run into the same OUTPUT; pass "
                             f"--resume to continue it, or delete that folder to start over.")
        saved = self.job
        with suppress(OSError, ValueError):  # no job.json yet: the first part was never committed
            saved = json.loads((self.folder / JOB_FILE).read_text(encoding="utf-8"))
        if saved != self.job:
            changed = changed_settings(saved, self.job)
            if "input_content" in changed and "input" not in changed:
                raise PartsError(f"INPUT {saved['input']} has changed since the run that wrote {self.folder} (its "
                                 "size, time or bytes differ: a regenerated extract?); resuming would mix rows of "
                                 "two extracts, so delete that folder to start over.")
            raise PartsError(f"{self.folder} was written with other settings ({', '.join(changed)}); resume with "
                             "the same options, or delete that folder to start over.")
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink()
        shutil.rmtree(self.folder / "merge", ignore_errors=True)
        self.paths = sorted(self.folder.glob("part-*.jsonl"))
        return {name for path in self.paths for name in _read_documents(path)}

    def commit(self, documents: List[str], mentions: List[Mention],
               metadata: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        """Make ``documents`` (with their ``mentions`` and kept columns, ``metadata`` by
        document name) durable: after this returns, a crash does not lose them."""
        if not self.folder.exists():
            self.folder.mkdir()
        if not (self.folder / JOB_FILE).exists():
            with open(self.folder / JOB_FILE, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.job, indent=1) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        number = int(self.paths[-1].stem.split("-")[1]) + 1 if self.paths else 1
        target = self.folder / f"part-{number:08d}.jsonl"
        temporary = target.with_suffix(".tmp")
        _write_run(temporary, documents, sorted(mentions, key=sort_key), metadata)
        os.replace(temporary, target)
        _fsync_folder(self.folder)
        self.paths.append(target)

    def metadata(self) -> Iterator[Tuple[str, Mapping[str, Any]]]:
        """(document, kept columns) of every committed document that has kept columns."""
        for path in self.paths:
            yield from _read_header(path).get("metadata", {}).items()

    def merged(self, pending: List[Mention]) -> Iterator[Mention]:
        """Every committed mention and ``pending``, in output order; at most :data:`FAN_IN`
        files are open at a time."""
        runs = list(self.paths)
        scratch = self.folder / "merge"
        level = 0
        while len(runs) >= FAN_IN:
            scratch.mkdir(parents=True, exist_ok=True)
            merged: List[Path] = []
            for i in range(0, len(runs), FAN_IN):
                target = scratch / f"{level}-{i // FAN_IN}.jsonl"
                group = runs[i: i + FAN_IN]
                _write_run(target, [], heapq.merge(*map(_read_mentions, group), key=sort_key))
                merged.append(target)
            runs, level = merged, level + 1
        return heapq.merge(*map(_read_mentions, runs), sorted(pending, key=sort_key), key=sort_key)

    def remove(self) -> None:
        """Drop the parts once OUTPUT holds them all."""
        shutil.rmtree(self.folder, ignore_errors=True)
