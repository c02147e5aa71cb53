"""The Ray engine: Ray tasks read INPUT's files through the local engine's reader
(:func:`~dt4h_spacy.io.tables.file_items`: same rows, same messages for malformed lines, same
``--encoding``), ``map_batches`` sends them through an actor pool of pipelines (one loaded
model per actor, CPU or GPU), and the rows stream back here, where they are checked,
committed and written exactly as by the local engine. An actor whose process dies is
restarted and its batch retried (:data:`RETRIES` times), so a lost worker loses no row.

With ``--cpu-workers K`` the pipeline is cut at its networks' forward passes
(:mod:`.steps`) into a chain of ``map_batches`` stages: CPU actors (tokenize, windows), device
actors (the forward passes, on GPUs with ``--gpus-per-worker``), CPU actors (spans, the
pipes after, the result rows), as Ray Data's batch inference chains them, so a GPU actor
does not wait on one core's CPU work (:func:`_chain`).

Ray runs on this machine unless ``--ray-address`` (or ``RAY_ADDRESS``) names a cluster;
there INPUT must be readable by every node (shared storage or object store). Order is
preserved, so each result row is its input row: row numbers in messages and the "first
id wins" rule for duplicates mean the same as with the local engine.
"""

import contextlib
import io
import json
import logging
import math
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import pyarrow
from spacy.tokens import Doc

from .. import stages
from ..batch import Pipelines, error, kept_columns, uses_context
from ..errors import RunError, UsageError
from ..io.records import AnnotatedDoc, Document, Failure, Mention, mention_values, sort_key, values_mention
from ..io.sinks import mention_table
from ..io.sources import Source
from ..io.tables import (
    Columns,
    FirstSeen,
    TableError,
    arrow_items,
    arrow_kept_schema,
    as_arrow,
    check_columns,
    file_items,
    parquet_parts,
)
from ..run import Engine
from ..textfiles import document_name, read_documents
from . import steps

READ_CPUS = 0.25
DEVICE_CHUNKS = 4  # chunks (of --batch-size documents) whose windows a device step batches together
RETRIES = 3  # restarts of a dead actor, and retries of its batch: bounded, so a batch that kills every actor ends the run
ACTOR_OPTIONS = {"max_restarts": RETRIES, "max_task_retries": RETRIES, "batch_format": "pyarrow"}  # every map_batches
DOCUMENT_ROWS = pyarrow.schema([("where", pyarrow.string()), ("error", pyarrow.string()), ("id", pyarrow.string()),
                                ("text", pyarrow.string()), ("lang", pyarrow.string()), ("metadata", pyarrow.string())])


INSTALL = "pip install '.[ray]' in the dt4h_spacy folder (on every node of a cluster)"


def _import_ray() -> Any:
    """Ray Data, and the fsspec HTTP file system it checks every input path against.

    Ray Data imports ``fsspec.implementations.http`` in several threads at once and catches
    only ``ModuleNotFoundError``; without aiohttp (which ``ray[data]`` does not install) a
    thread that finds the module half imported by another gets ``ImportError: cannot import
    name 'HTTPFileSystem'`` instead, so runs failed at random. Importing it here, once, turns
    a missing aiohttp into one clear message before Ray starts.
    """
    try:
        import fsspec.implementations.http  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RunError(f"--engine ray needs Ray Data and aiohttp ({err}); {INSTALL}.", 2) from err
    return ray


def _one_line(err: BaseException) -> str:
    """A failure inside Ray as one line: the last ``SomeError: message`` line of its cause (a
    worker's traceback ends with the exception, then Ray's retry notes), else its last line."""
    cause = getattr(err, "cause", None) or err
    lines = [line for line in str(cause).strip().splitlines() if line.strip()] or [type(cause).__name__]
    named = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b[^:]*: ", line)]
    return (named or lines)[-1]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """For ``-q``: what Ray's C++ parts write straight to file descriptor 2 (the driver's core
    worker, the raylet and GCS it starts: ``logging.cc``/``core_worker`` lines that no Python
    logging level reaches) goes to the null device while Ray runs; Python's ``sys.stderr``,
    where the engine's own messages go, keeps the terminal. Ray's own log files are unchanged."""
    sys.stderr.flush()
    saved = os.dup(2)
    kept = None
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's or caller's own stream
        real = False
    if real:
        kept = sys.stderr
        sys.stderr = open(os.dup(saved), "w", encoding=kept.encoding, errors=kept.errors, buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if kept is not None:
            sys.stderr.close()
            sys.stderr = kept


class _NoErrors(logging.Filter):
    """Keeps Ray's own ERROR records (with their tracebacks) off stderr: the engine reports
    each failure itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _document_row(item: Union[Document, Failure]) -> Dict[str, Any]:
    """A document (kept columns as JSON, as the results carry them) or a failure as a row of :data:`DOCUMENT_ROWS`."""
    if isinstance(item, Failure):
        return {"where": str(item.path), "error": item.reason}
    metadata = json.dumps(item.metadata, ensure_ascii=False, default=str) if item.metadata else None
    return {"where": str(item.path), "id": item.name, "text": item.text, "lang": item.lang, "metadata": metadata}


def read_files(batch: pyarrow.Table, source: Source, rows: int) -> Iterator[pyarrow.Table]:
    """The documents and failures of the table files a batch names (column ``file``), as
    blocks of ``rows`` rows: read by :func:`~dt4h_spacy.io.tables.file_items`, as the local
    engine reads them, and streamed (a generator), so a large file is never held whole."""
    assert source.columns is not None
    for file in batch.column("file").to_pylist():
        block: List[Dict[str, Any]] = []
        for item in file_items(Path(file), source.columns, source.encoding, source.delimiter):
            block.append(_document_row(item))
            if len(block) == rows:
                yield pyarrow.Table.from_pylist(block, schema=DOCUMENT_ROWS)
                block = []
        if block:
            yield pyarrow.Table.from_pylist(block, schema=DOCUMENT_ROWS)


RESULT_ROWS = pyarrow.schema([("id", pyarrow.string()), ("where", pyarrow.string()), ("error", pyarrow.string()),
                              ("done", pyarrow.bool_()), ("mentions", pyarrow.string()), ("metadata", pyarrow.string()),
                              ("messages", pyarrow.string())])  # an actor's result per input row, read by _results


def _input_rows(rows: List[Dict[str, Any]], source: Source, done: Set[str],
                ) -> Tuple[List[Dict[str, Any]], List[Union[Document, Failure]]]:
    """A batch of input rows (documents read by :func:`read_files`, or the paths of text
    files, read here) as one result row each, not yet annotated, and the documents (or
    failures) to annotate: ``item.path`` is the index of its result row; a document done by
    an earlier run is left out."""
    results: List[Dict[str, Any]] = [
        {"id": None, "where": row.get("path", row.get("where")), "error": None, "done": False, "mentions": "[]",
         "metadata": row.get("metadata"), "messages": None} for row in rows]
    if source.columns is None:
        items = [Document(item.name, str(index), item.text) if isinstance(item, Document) else
                 Failure(str(index), item.reason)
                 for index, item in enumerate(read_documents([Path(row["path"]) for row in rows], source.encoding))]
    else:
        items = [Failure(str(index), row["error"]) if row["error"] is not None else
                 Document(row["id"], str(index), row["text"], row["lang"], json.loads(row["metadata"] or "{}"))
                 for index, row in enumerate(rows)]
    todo: List[Union[Document, Failure]] = []
    for item in items:
        if isinstance(item, Document):
            result = results[int(item.path)]
            result["id"] = item.name
            result["done"] = item.name in done
            if result["done"]:
                continue
        todo.append(item)
    return results, todo


def _set_result(results: List[Dict[str, Any]], item: Union[AnnotatedDoc, Failure]) -> None:
    """An annotated document's mentions (as JSON), or a failure's reason, in its result row."""
    if isinstance(item, Failure):
        results[int(item.path)]["error"] = item.reason
    else:
        results[int(item.path)]["mentions"] = json.dumps(
            [mention_values(m, with_name=False) for m in item.mentions], ensure_ascii=False, default=str)


def _result_table(results: List[Dict[str, Any]], messages: str) -> pyarrow.Table:
    """The result rows, the batch's warnings with the first (an actor's stderr is not the user's)."""
    if results:
        results[0]["messages"] = messages or None
    return pyarrow.Table.from_pylist(results, schema=RESULT_ROWS)


class PipelineActor:
    """One pipeline per Ray actor; ``__call__`` annotates a batch of input rows (documents
    read by :func:`read_files`, or the paths of text files) and returns one result row per
    input row (a failure's reason, or the mentions as JSON)."""

    def __init__(self, pipelines: Pipelines, source: Source, done: Set[str], batch_size: int) -> None:
        self.pipelines, self.source, self.done, self.batch_size = pipelines, source, done, batch_size

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        results, todo = _input_rows(batch.to_pylist(), self.source, self.done)
        messages = io.StringIO()
        with contextlib.redirect_stderr(messages):
            for item in self.pipelines.annotate(todo, self.batch_size):
                _set_result(results, item)
        return _result_table(results, messages.getvalue())


# ------------------------------------------------------------------- the CPU → device chain


@dataclass
class _Chunk:
    """A batch of input rows on its way through the chain (:func:`_chain`), pickled into one
    row between stages. The windows the device reads travel apart, in the row's own column."""

    results: List[Dict[str, Any]]  # one result row per input row (see _input_rows)
    keys: List[Any]  # per doc, what Pipelines.annotated needs; ``key[1]`` is its result row
    langs: List[str]  # per doc, the language whose vocab restores it
    docs: List[bytes]  # Doc.to_bytes: a doc travels without its vocab
    paused: Optional[steps.Paused]  # where the docs wait, its windows left out (they are the row's "windows")
    messages: str = ""


CHUNK_ROWS = pyarrow.schema([("chunk", pyarrow.binary()), ("windows", pyarrow.binary()), ("probs", pyarrow.binary())])


def _chunk_table(chunks: List[_Chunk], windows: List[Optional[stages.WindowSet]]) -> pyarrow.Table:
    return pyarrow.Table.from_pydict(
        {"chunk": [pickle.dumps(c) for c in chunks],
         "windows": [None if w is None else pickle.dumps(w) for w in windows], "probs": [None] * len(chunks)},
        schema=CHUNK_ROWS)


class _CpuStep:
    """A CPU actor of the chain: the pipeline without its networks' forward passes (weights on
    the CPU, never run). The first step reads input rows and tokenizes them; every step runs
    the pipes up to the next ``dt4h_disease`` (its windows prepared) or, the last, to the end,
    where the documents' result rows are made."""

    def __init__(self, pipelines: Pipelines, source: Source, done: Set[str], first: bool, last: bool) -> None:
        self.pipelines, self.source, self.done, self.first, self.last = pipelines, source, done, first, last
        self.nlp = pipelines.load()
        steps.check_cpu_steps(self.nlp)

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        chunks: List[_Chunk] = []
        windows: List[Optional[stages.WindowSet]] = []
        results: List[pyarrow.Table] = []
        for row in ([batch] if self.first else batch.to_pylist()):
            messages = io.StringIO()
            with contextlib.redirect_stderr(messages):
                chunk, docs, probs = self._read(row)
                docs, paused = steps.advance(self.nlp, docs, chunk.paused, probs)
            messages_so_far = chunk.messages + messages.getvalue()
            if self.last:
                for doc, key in zip(docs, chunk.keys):
                    _set_result(chunk.results, self.pipelines.annotated(doc, key))
                results.append(_result_table(chunk.results, messages_so_far))
                continue
            assert paused is not None, "the chain has a device step for each dt4h_disease component"
            windows.append(paused.window_set if paused.served else None)
            kept = replace(paused, prepared=stages.Prepared(paused.prepared.docs, []))
            chunks.append(replace(chunk, docs=[doc.to_bytes() for doc in docs], paused=kept, messages=messages_so_far))
        if self.last:
            return pyarrow.concat_tables(results) if results else RESULT_ROWS.empty_table()
        return _chunk_table(chunks, windows)

    def _read(self, row: Any) -> Tuple[_Chunk, List[Doc], Optional[steps.Probs]]:
        """A chunk, its docs and the probabilities the device step found for them: from input
        rows (the first step: ``row`` is the whole batch, one chunk) or from a chunk row."""
        if self.first:
            results, todo = _input_rows(row.to_pylist(), self.source, self.done)
            docs, keys = [], []
            for item in todo:
                read = self.pipelines.read(item)
                if isinstance(read, Failure):
                    _set_result(results, read)
                else:
                    docs.append(read[0])
                    keys.append(read[1])
            return _Chunk(results, keys, [doc._.dt4h_lang for doc in docs], [], None), docs, None
        chunk: _Chunk = pickle.loads(row["chunk"])
        docs = [self.pipelines.restore(data, lang) for data, lang in zip(chunk.docs, chunk.langs)]
        return chunk, docs, [] if row["probs"] is None else pickle.loads(row["probs"])


class _DeviceStep:
    """A device actor of the chain: component ``name``'s forward pass over the windows of every
    chunk in its batch together (batched across them), the probabilities into each chunk's row;
    the rest of the row passes through unread."""

    def __init__(self, pipelines: Pipelines, name: str) -> None:
        self.nlp, self.name = pipelines.load(), name

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        sets = [None if data is None else pickle.loads(data) for data in batch.column("windows").to_pylist()]
        asking = [k for k, window_set in enumerate(sets) if window_set is not None]
        probs: List[Optional[bytes]] = [None] * len(sets)
        for k, found in zip(asking, steps.forward(self.nlp, self.name, [sets[k] for k in asking])):
            probs[k] = pickle.dumps(found)
        return batch.set_column(batch.schema.get_field_index("probs"), "probs", pyarrow.array(probs, pyarrow.binary()))


class AnnotateMentions:
    """A Ray Data UDF for your own pipelines: rows of documents in, ``predict``'s Parquet rows
    out (one per mention: ``id, label, start, end, text, score``, the qualifiers with
    ``context=True``, then ``keep_columns`` in their types), through the CLI's own path
    (:class:`~dt4h_spacy.batch.Pipelines`, the table readers' row checks, the Parquet row builder)::

        ds = ray.data.read_parquet("notes/").map_batches(
            AnnotateMentions, fn_constructor_kwargs={"model": "my_pipeline", "keep_columns": ["patient_id"]},
            batch_size=64, batch_format="pyarrow", concurrency=4)

    Each actor loads the model once (``model``: a saved pipeline; or ``checkpoint`` and
    ``base_model``; ``settings`` are the component's config, e.g. ``device="cuda"``). A row
    that cannot be annotated (no id or text, a language no head serves, an id repeated within
    its batch) is reported on the actor's stderr and left out, as ``predict`` skips it.
    """

    def __init__(self, model: Optional[str] = None, checkpoint: Optional[str] = None,
                 base_model: Optional[str] = None, *, lang: str = "auto", fallback_lang: Optional[str] = None,
                 id_column: str = "id", text_column: str = "text", lang_column: Optional[str] = None,
                 keep_columns: Sequence[str] = (), context: bool = False, batch_size: int = 32,
                 **settings: Any) -> None:
        self.columns = Columns(id_column, text_column, lang_column, kept_columns(",".join(keep_columns)))
        self.pipelines = Pipelines(lang, model, checkpoint, base_model, settings, fallback_lang,
                                   {"rule_files": []} if context else None)
        self.with_context = uses_context(self.pipelines.load())
        self.batch_size = batch_size

    def __call__(self, batch: Any) -> pyarrow.Table:
        table = as_arrow(batch)
        check_columns(table.schema.names, self.columns, "the batch")
        mentions: List[Mention] = []
        for item in self.pipelines.annotate(arrow_items(table, self.columns, "batch"), self.batch_size):
            if isinstance(item, Failure):
                error(f"skipped {item}")
            else:
                mentions.extend(item.mentions)
        return mention_table(sorted(mentions, key=sort_key), arrow_kept_schema(table.schema, self.columns),
                             self.with_context)


def _dataset(ray: Any, source: Source, batch_size: int) -> Any:
    """INPUT as a Ray dataset: the paths of text files (read by the actors), or a table's
    documents, one read task per file (:func:`read_files`). Reading reserves a quarter CPU per
    task, so an actor pool that takes every CPU cannot starve it."""
    if source.columns is None:
        return ray.data.from_items([{"path": str(p)} for p in source.paths])
    files = ray.data.from_items([{"file": str(p)} for p in parquet_parts(source.path)])
    return files.map_batches(read_files, fn_kwargs={"source": source, "rows": batch_size}, batch_size=1,
                             batch_format="pyarrow", num_cpus=READ_CPUS)


def _package_error(err: BaseException, wrapper: type) -> Optional[BaseException]:
    """The package's own error (a table that stops decoding, an unusable model or option)
    that a Ray task or actor raised, found in the chain of ``wrapper`` exceptions (Ray's) that
    carry it."""
    seen: Set[int] = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (TableError, UsageError, RunError)) and not isinstance(current, wrapper):
            return current
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


def _chain(ray: Any, dataset: Any, pipelines: Pipelines, source: Source, done: Set[str], batch_size: int,
           cpu_workers: int, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> Any:
    """``dataset`` through the CPU → device chain: a CPU step (``cpu_workers`` actors: read,
    tokenize, run the pipes, prepare windows), then for each ``dt4h_disease`` component a device
    step (``workers`` actors with ``gpus_per_worker`` GPUs: its forward passes, the windows of
    :data:`DEVICE_CHUNKS` chunks batched together) and a CPU step (spans, the pipes after it;
    the last makes the result rows). Chunks are pickled between our own actors of this job."""
    names = pipelines.device_components()
    cpu_side = pipelines.for_cpu_steps()

    def cpu_step(data: Any, first: bool, last: bool) -> Any:
        return data.map_batches(
            _CpuStep, fn_constructor_kwargs={"pipelines": cpu_side, "source": source, "done": done if first else set(),
                                             "first": first, "last": last},
            batch_size=batch_size if first else 1, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpu_workers),
            num_cpus=cpus_per_worker, **ACTOR_OPTIONS)

    dataset = cpu_step(dataset, True, not names)
    for k, name in enumerate(names):
        dataset = dataset.map_batches(
            _DeviceStep, fn_constructor_kwargs={"pipelines": pipelines, "name": name}, batch_size=DEVICE_CHUNKS,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers), num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker, **ACTOR_OPTIONS)
        dataset = cpu_step(dataset, False, k == len(names) - 1)
    return dataset


def _check_resources(ray: Any, pools: int, cpus_per_worker: float, gpus: float) -> None:
    """On a Ray this engine started, refuse a job whose first actors cannot all start (Ray
    would wait for them forever): one actor of each of ``pools`` pools, beside the CPU that
    Ray Data's task cutting the input into ``--batch-size`` blocks takes."""
    have = ray.cluster_resources()
    cpus = pools * cpus_per_worker + 1
    if have.get("CPU", 0.0) + 1e-9 < cpus:
        most = math.floor((have.get("CPU", 0.0) - 1) / pools * 100) / 100
        advice = f"lower --cpus-per-worker to {most:g} or less" if most > 0 else "run it on a machine with more CPUs"
        raise UsageError(f"the Ray actors need {cpus:g} CPUs ({pools} pool(s) of --cpus-per-worker "
                         f"{cpus_per_worker:g}, and one for cutting the input into batches), this machine's Ray has "
                         f"{have.get('CPU', 0.0):g}; {advice}", option="--cpus-per-worker")
    if gpus and have.get("GPU", 0.0) + 1e-9 < gpus:
        raise UsageError(f"--gpus-per-worker {gpus:g}, but this machine's Ray has {have.get('GPU', 0.0):g} GPUs; "
                         "drop --gpus-per-worker and --device cuda, or join a cluster with GPUs (--ray-address)",
                         option="--gpus-per-worker")


def ray_engine(pipelines: Pipelines, batch_size: int = 32, workers: int = 1, gpus_per_worker: float = 0.0,
               cpus_per_worker: float = 1.0, address: Optional[str] = None, quiet: bool = False,
               cpu_workers: int = 0) -> Engine:
    """An engine that runs ``pipelines`` on ``workers`` Ray actors, each reserving
    ``cpus_per_worker`` CPUs (its torch threads, unless ``--threads`` says otherwise) and
    ``gpus_per_worker`` GPUs; with ``cpu_workers``, the actors only run the networks' forward
    passes, fed by a chain of CPU actors (``cpu_workers`` per CPU step, :func:`_chain`), so a
    GPU is not held by the CPU work of one core. Ray is started here (or joined at
    ``address``) if it is not running in this process yet."""
    ray = _import_ray()
    if pipelines.settings.get("num_threads") is None:
        pipelines.settings["num_threads"] = max(1, int(cpus_per_worker))
    if cpu_workers and pipelines.settings.get("compat", "words") != "words":
        raise UsageError("--cpu-workers runs the words reading; drop --compat authors, or --cpu-workers.",
                         option="--cpu-workers")
    pools = 1 + 2 * len(pipelines.device_components()) if cpu_workers else 1

    def annotate(source: Source, done: Set[str]) -> Iterator[Union[AnnotatedDoc, Failure]]:
        with _native_stderr_silenced() if quiet else contextlib.nullcontext():
            yield from _annotate(source, done)

    def _annotate(source: Source, done: Set[str]) -> Iterator[Union[AnnotatedDoc, Failure]]:
        started = not ray.is_initialized()
        if started:
            if quiet:  # -q: Ray's own INFO/WARNING lines stay in Ray's log files
                for name in ("ray", "ray.data"):
                    logging.getLogger(name).setLevel(logging.ERROR)
            ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
                     logging_level=logging.ERROR if quiet else logging.INFO)
        for name in ("ray", "ray.data"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(_NoErrors())
        try:
            if started and address is None:
                _check_resources(ray, pools, cpus_per_worker, gpus_per_worker)
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False
            with warnings.catch_warnings():  # Ray takes the restart bounds only this way until 2.64 (setup.cfg: <2.64)
                warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
                dataset = _dataset(ray, source, batch_size).repartition(target_num_rows_per_block=batch_size)
                if cpu_workers:
                    dataset = _chain(ray, dataset, pipelines, source, done, batch_size, cpu_workers, workers,
                                     cpus_per_worker, gpus_per_worker)
                else:
                    dataset = dataset.map_batches(
                        PipelineActor, fn_constructor_kwargs={"pipelines": pipelines, "source": source, "done": done,
                                                              "batch_size": batch_size},
                        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
                        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, **ACTOR_OPTIONS)
            yield from _results(dataset.iter_batches(batch_size=None, batch_format="pyarrow"), source)
        except ImportError as err:
            raise RunError(f"Ray Data could not import what it needs ({err}); {INSTALL}.", 2) from None
        except ray.exceptions.RayError as err:
            own = _package_error(err, ray.exceptions.RayError)
            if own is not None:  # as the local engine raises it
                raise own from None
            cause = getattr(err, "cause", None)
            advice = f"; {INSTALL}" if isinstance(cause, ImportError) else ""
            raise RunError(f"the Ray workers failed: {_one_line(err)}{advice}", 2) from None
        finally:
            if started:
                ray.shutdown()

    return annotate


def _results(batches: Iterator[pyarrow.Table], source: Source) -> Iterator[Union[AnnotatedDoc, Failure]]:
    """The result rows as the local engine gives them: failures named by file or table row,
    later copies of an id refused, documents done by an earlier run left out."""
    first_seen = FirstSeen()
    for batch in batches:
        for row in batch.to_pylist():
            if row.get("messages"):  # what the actor warned while annotating this batch, as the local engine shows it
                print(row["messages"], end="", file=sys.stderr, flush=True)
            where = row["where"]
            if row["error"] is not None:
                yield Failure(where, row["error"])
                continue
            checked = first_seen(Document(row["id"] if source.columns is not None else document_name(where), where, ""))
            if isinstance(checked, Failure):
                yield checked
            elif not row["done"]:
                metadata = json.loads(row["metadata"]) if row["metadata"] else {}
                mentions = [values_mention(values, checked.name) for values in json.loads(row["mentions"])]
                yield AnnotatedDoc(checked.name, "", "", mentions, metadata=metadata)


