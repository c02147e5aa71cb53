"""CPU stages in K worker processes feeding the network in this one (``--cpu-workers K``).

One process runs the network's forward passes; on a GPU it would otherwise wait on the CPU
work of a single core (spaCy tokenization, words, windows, decoding, spans). Here K spawned
processes each hold the pipeline and take chunks of documents: they tokenize them, run every
pipe, and at each ``dt4h_disease`` component (``compat="words"``) send its prepared windows
to this process (:mod:`.steps`), which runs them through the component's network and sends
the probabilities back; the worker decodes and writes the spans and runs the pipes after it.
On a GPU the windows of every chunk waiting at once are batched together
(``merge``), so the device gets full batches whatever the chunk size; on a CPU each chunk
is run alone, as ``nlp.pipe`` runs it, so the results equal one process's bit for bit.
Results come back in input order. A worker that dies is reported
(:class:`~dt4h_spacy.errors.WorkerError`), never waited on; a batch the GPU has no memory
for is run again in halves (:func:`~dt4h_spacy.stages.forward_fitting`).

The pipeline must be built alike in every process, so a job says how (a picklable
:class:`Job`): :class:`TextJob` (texts → Docs, the Python interface, :func:`pipe`) or the
CLI's job over :class:`~dt4h_spacy.batch.Pipelines`. Workers load the weights memory-mapped
and never run them, so they cost little memory.
"""

import functools
import multiprocessing
import traceback
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..batch import Pipelines, load_pipeline
from ..errors import WorkerError
from ..io.records import Failure
from ..settings import CPU_STEPS
from . import steps

POLL_S = 1.0  # how often the main process looks at its workers while it waits for them
IN_FLIGHT = 2  # chunks a worker holds at once: one to work on while the other is forwarded


class Job:
    """How every process builds the pipeline, and what a worker makes of items and docs."""

    def load(self) -> Language:
        raise NotImplementedError

    def read(self, nlp: Language, items: List[Any]) -> Tuple[List[Doc], List[Any]]:
        """The docs of ``items``, and per item what :meth:`write` needs (a key, or a ready result)."""
        raise NotImplementedError

    def write(self, nlp: Language, docs: List[Doc], keys: List[Any]) -> List[Any]:
        """Per item of the chunk, its result: one list in the items' order."""
        raise NotImplementedError


class TextJob(Job):
    """Texts in; out, each annotated Doc (pickled back, spans and scores included) or what
    ``convert(doc)`` makes of it in the worker."""

    def __init__(self, load_nlp: Callable[[], Language], convert: Optional[Callable[[Doc], Any]] = None) -> None:
        self.load_nlp, self.convert = load_nlp, convert

    def load(self) -> Language:
        return self.load_nlp()

    def read(self, nlp: Language, items: List[Any]) -> Tuple[List[Doc], List[Any]]:
        return [nlp.make_doc(text) for text in items], [None] * len(items)

    def write(self, nlp: Language, docs: List[Doc], keys: List[Any]) -> List[Any]:
        return docs if self.convert is None else [self.convert(doc) for doc in docs]


class PipelinesJob(Job):
    """The CLI's job: items are documents (or failures, passed on), routed and tokenized as
    :class:`~dt4h_spacy.batch.Pipelines` does; results are annotated documents or failures."""

    def __init__(self, pipelines: Pipelines) -> None:
        p = pipelines.for_cpu_steps()  # its options are plain values: each process builds its own
        self.options = (p.lang, p.model, p.checkpoint, p.base_model, p.settings, p.fallback, p.context)
        self.pipelines: Optional[Pipelines] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"options": self.options, "pipelines": None}

    def _pipelines(self) -> Pipelines:
        if self.pipelines is None:
            self.pipelines = Pipelines(*self.options)
        return self.pipelines

    def load(self) -> Language:
        return self._pipelines().load()

    def read(self, nlp: Language, items: List[Any]) -> Tuple[List[Doc], List[Any]]:
        read = [self._pipelines().read(item) for item in items]
        return [r[0] for r in read if not isinstance(r, Failure)], [r if isinstance(r, Failure) else r[1] for r in read]

    def write(self, nlp: Language, docs: List[Doc], keys: List[Any]) -> List[Any]:
        annotated = iter(docs)
        return [key if isinstance(key, Failure) else self._pipelines().annotated(next(annotated), key) for key in keys]


def load_on_cpu(model: str) -> Language:
    """``spacy.load(model)`` as a worker needs it (``load_nlp=functools.partial(load_on_cpu,
    path)``): its networks' weights stay on the CPU, as stored, whatever device the saved
    config names; the forward passes run on the main process's ``nlp``."""
    return load_pipeline(model, CPU_STEPS)


def pipe(load_nlp: Callable[[], Language], texts: Iterable[str], cpu_workers: int, batch_size: int = 32,
         convert: Optional[Callable[[Doc], Any]] = None, nlp: Optional[Language] = None,
         merge: Optional[bool] = None) -> Iterator[Any]:
    """``nlp.pipe(texts, batch_size=batch_size)`` with the CPU stages in ``cpu_workers``
    processes: the same Docs, in order.

    ``load_nlp`` builds the pipeline in each worker (a module-level function or a
    ``functools.partial`` of :func:`load_on_cpu` or ``spacy.load``: spawned processes must
    import it), with its networks on the CPU; the forward passes run on ``nlp`` here
    (default: ``load_nlp()``), on its device. A Doc costs this process about as
    much to unpickle as to annotate, so to relieve it pass ``convert``, a module-level
    function run in the worker on each doc (e.g. to its entities' offsets): its results come
    back instead of the Docs. ``merge``: see :func:`run`."""
    yield from run(TextJob(load_nlp, convert), texts, cpu_workers, batch_size, None if nlp is None else lambda: nlp,
                   merge)


def run(job: Job, items: Iterable[Any], cpu_workers: int, batch_size: int = 32,
        load_nlp: Optional[Callable[[], Language]] = None, merge: Optional[bool] = None) -> Iterator[Any]:
    """Every item's result (``job.write``), in input order; the network runs here, on
    ``load_nlp()`` (default ``job.load()``, called when a worker first needs it), the rest
    in ``cpu_workers`` spawned processes. ``merge``: batch the windows of all chunks waiting
    at once for the same network (default: where that network is not on the CPU; a batch's
    composition changes the last bits of a score)."""
    if cpu_workers < 1:
        raise ValueError(f"cpu_workers must be at least 1, got {cpu_workers}.")
    context = multiprocessing.get_context("spawn")  # a fork would copy torch's threads and CUDA
    inboxes = [context.Queue() for _ in range(cpu_workers)]  # put() never blocks this process
    # One pipe per worker back: a worker killed in the middle of a message leaves an end of
    # file on its own pipe, where a shared queue would wait for the rest forever.
    pipes = [context.Pipe(duplex=False) for _ in range(cpu_workers)]
    processes = [context.Process(target=_serve, args=(job, k, inboxes[k], pipes[k][1]), daemon=True,
                                 name=f"dt4h-cpu-worker-{k}") for k in range(cpu_workers)]
    for process, (_, writer) in zip(processes, pipes):
        process.start()
        writer.close()  # the worker holds the only writing end now
    try:
        network = functools.lru_cache(maxsize=1)(load_nlp or job.load)  # loaded once, when a worker first needs it
        yield from _schedule(network, items, batch_size, inboxes, [r for r, _ in pipes], processes,
                             merge)
    finally:
        for inbox in inboxes:
            inbox.put(None)
            inbox.cancel_join_thread()  # a dead worker's inbox must not hold up this process's exit
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for reader, _ in pipes:
            reader.close()


def _schedule(load_nlp: Callable[[], Language], items: Iterable[Any], batch_size: int, inboxes: List[Any],
              readers: List[Connection], processes: List[Any], merge: Optional[bool]) -> Iterator[Any]:
    """Hand chunks to the least busy worker, forward what they prepare, yield results in order."""
    chunks = iter(lambda it=iter(items): list(islice(it, batch_size)), [])
    busy = [0] * len(inboxes)
    done: Dict[int, List[Any]] = {}
    sent = emitted = 0
    exhausted = False
    while True:
        while not exhausted and min(busy) < IN_FLIGHT:
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
                break
            worker = busy.index(min(busy))
            inboxes[worker].put(("start", sent, chunk))
            busy[worker] += 1
            sent += 1
        if emitted == sent and exhausted:
            return
        waiting: Dict[str, List[Tuple[int, int, Any]]] = {}  # component → (worker, chunk, windows) asking for it
        for kind, worker, chunk_id, payload in _receive(readers, processes):
            if kind == "forward":
                name, windows = payload
                waiting.setdefault(name, []).append((worker, chunk_id, windows))
            elif kind == "done":
                busy[worker] -= 1
                done[chunk_id] = payload
            else:
                raise WorkerError(f"CPU worker {worker} failed: {payload}")
        for name, asking in waiting.items():
            nlp = load_nlp()
            for group in _forward_groups(nlp, name, asking, merge):
                for (worker, chunk_id, _), probs in zip(group, steps.forward(nlp, name, [a[2] for a in group])):
                    inboxes[worker].put(("resume", chunk_id, probs))
        while emitted in done:
            yield from done.pop(emitted)
            emitted += 1


def _forward_groups(nlp: Language, name: str, asking: List[Tuple[int, int, Any]],
                    merge: Optional[bool]) -> List[List[Tuple[int, int, Any]]]:
    """The requests for component ``name`` run together: all of them when merging, else one by one."""
    if merge is None:
        merge = nlp.get_pipe(name).tagger.device.type != "cpu"
    return [asking] if merge else [[request] for request in asking]


def _receive(readers: List[Connection], processes: List[Any]) -> List[Tuple[str, int, int, Any]]:
    """The messages the workers have sent, at least one (waiting for it); a worker that died
    meanwhile is an error, not a wait."""
    received: List[Tuple[str, int, int, Any]] = []
    timeout: Optional[float] = POLL_S
    while True:
        ready = wait(readers, timeout=timeout)
        for reader in ready:
            k = readers.index(reader)
            try:
                received.append(reader.recv())
            except (EOFError, OSError):
                processes[k].join(timeout=POLL_S)
                raise WorkerError(
                    f"CPU worker {k} (pid {processes[k].pid}) died with exit code {processes[k].exitcode}; its "
                    "documents were not annotated (if memory ran out, use fewer --cpu-workers)") from None
        if received and not ready:
            return received
        if received:
            timeout = 0  # take what else is there already, without waiting


def _serve(job: Job, worker: int, inbox: Any, outbox: Connection) -> None:
    """A worker's loop: start chunks, resume them when their probabilities come back."""
    try:
        nlp = job.load()
        steps.check_cpu_steps(nlp)
        pending: Dict[int, Generator] = {}
        while True:
            message = inbox.get()
            if message is None:
                return
            kind, chunk_id, payload = message
            if kind == "start":
                pending[chunk_id] = _chunk(job, nlp, payload)
                step = next(pending[chunk_id])
            else:
                step = pending[chunk_id].send(payload)
            if step[0] == "done":
                del pending[chunk_id]
            outbox.send((step[0], worker, chunk_id, step[1]))
    except Exception:  # noqa: BLE001 - any failure is the main process's to report
        outbox.send(("error", worker, -1, traceback.format_exc(limit=8).strip().splitlines()[-1]))


def _chunk(job: Job, nlp: Language, items: List[Any]) -> Generator[Tuple[str, Any], Any, None]:
    """One chunk through the pipeline; pauses at each ``dt4h_disease`` that serves one of its
    docs, for the network in the main process."""
    docs, keys = job.read(nlp, items)
    docs, paused = steps.advance(nlp, docs)
    while paused is not None:
        probs = (yield ("forward", (paused.name, paused.window_set))) if paused.served else []
        docs, paused = steps.advance(nlp, docs, paused, probs)
    yield ("done", job.write(nlp, docs, keys))
