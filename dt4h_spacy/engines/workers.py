"""CPU stages in K worker processes feeding the network in this one (``--cpu-workers K``).

One process runs the network's forward passes; on a GPU it would otherwise wait on the CPU
work of a single core (spaCy tokenization, words, windows, decoding, spans). Here K spawned
processes each hold the pipeline and take chunks of documents: they tokenize them, run every
pipe, and for each ``dt4h_disease`` component (``compat="words"``) send its prepared windows
(:func:`~dt4h_spacy.stages.preprocess`) to this process, which runs them through the
component's network (windows of the chunk's documents batched together) and sends the
probabilities back; the worker decodes and writes the spans and runs the pipes after it.
Results come back in input order, identical to one process's. A worker that dies is
reported (:class:`~dt4h_spacy.errors.WorkerError`), never waited on.

The pipeline must be built alike in every process, so a job says how (a picklable
:class:`Job`): :class:`TextJob` (texts → Docs, the Python interface, :func:`pipe`) or the
CLI's job over :class:`~dt4h_spacy.batch.Pipelines`. Workers load the weights memory-mapped
and never run them, so they cost little memory.
"""

import multiprocessing
import traceback
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .. import stages
from ..batch import Pipelines
from ..component import DiseaseRecognizer
from ..errors import WorkerError
from ..io.records import Failure

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
        p = pipelines  # its options are plain values: each process builds its own
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


def pipe(load_nlp: Callable[[], Language], texts: Iterable[str], cpu_workers: int, batch_size: int = 32,
         convert: Optional[Callable[[Doc], Any]] = None, nlp: Optional[Language] = None) -> Iterator[Any]:
    """``nlp.pipe(texts, batch_size=batch_size)`` with the CPU stages in ``cpu_workers``
    processes: the same Docs, in order.

    ``load_nlp`` builds the pipeline in each worker (a module-level function or a
    ``functools.partial`` of ``spacy.load``: spawned processes must import it); the forward
    passes run on ``nlp`` here (default: ``load_nlp()``). A Doc costs this process about as
    much to unpickle as to annotate, so to relieve it pass ``convert``, a module-level
    function run in the worker on each doc (e.g. to its entities' offsets): its results come
    back instead of the Docs."""
    yield from run(TextJob(load_nlp, convert), texts, cpu_workers, batch_size, None if nlp is None else lambda: nlp)


def run(job: Job, items: Iterable[Any], cpu_workers: int, batch_size: int = 32,
        load_nlp: Optional[Callable[[], Language]] = None) -> Iterator[Any]:
    """Every item's result (``job.write``), in input order; the network runs here, on
    ``load_nlp()`` (default ``job.load()``, called when a worker first needs it), the rest
    in ``cpu_workers`` spawned processes."""
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
        yield from _schedule(load_nlp or job.load, items, batch_size, inboxes, [r for r, _ in pipes], processes)
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


def _check_pipeline(nlp: Language) -> None:
    for name, component in nlp.pipeline:
        if isinstance(component, DiseaseRecognizer) and component.settings.compat != "words":
            raise ValueError(f"CPU workers run the words reading; component {name!r} has compat="
                             f"{component.settings.compat!r}. Run it without cpu workers.")


def _schedule(load_nlp: Callable[[], Language], items: Iterable[Any], batch_size: int, inboxes: List[Any],
              readers: List[Connection], processes: List[Any]) -> Iterator[Any]:
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
        kind, worker, chunk_id, payload = _receive(readers, processes)
        if kind == "forward":
            name, windows, heads, n_words = payload
            tagger = load_nlp().get_pipe(name).tagger
            tagger.ready()
            inboxes[worker].put(("resume", chunk_id, stages.run_windows(tagger, windows, heads, n_words)))
        elif kind == "done":
            busy[worker] -= 1
            done[chunk_id] = payload
            while emitted in done:
                yield from done.pop(emitted)
                emitted += 1
        else:
            raise WorkerError(f"CPU worker {worker} failed: {payload}")


def _receive(readers: List[Connection], processes: List[Any]) -> Tuple[str, int, int, Any]:
    """The next message of any worker; a worker that died meanwhile is an error, not a wait."""
    while True:
        for ready in wait(readers, timeout=POLL_S):
            k = readers.index(ready)
            try:
                return ready.recv()
            except (EOFError, OSError):
                processes[k].join(timeout=POLL_S)
                raise WorkerError(
                    f"CPU worker {k} (pid {processes[k].pid}) died with exit code {processes[k].exitcode}; its "
                    "documents were not annotated (if memory ran out, use fewer --cpu-workers)") from None


def _serve(job: Job, worker: int, inbox: Any, outbox: Connection) -> None:
    """A worker's loop: start chunks, resume them when their probabilities come back."""
    try:
        nlp = job.load()
        _check_pipeline(nlp)
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
    """One chunk through the pipeline; pauses at each ``dt4h_disease`` for the network."""
    docs, keys = job.read(nlp, items)
    for name, component in nlp.pipeline:
        if isinstance(component, DiseaseRecognizer):
            heads = [component.heads_for(doc) for doc in docs]
            served = [i for i, doc_heads in enumerate(heads) if doc_heads]
            if served:
                prepared = component.preprocess([docs[i] for i in served], [heads[i] for i in served])
                # the windows only: the words' texts stay here
                probs = yield ("forward", (name, prepared.windows, [d.heads for d in prepared.docs],
                                           [d.n_words for d in prepared.docs]))
                component.set_annotations(docs, component.batch_of(len(docs), served, prepared, probs))
        else:
            docs = list(component.pipe(docs)) if hasattr(component, "pipe") else [component(doc) for doc in docs]
    yield ("done", job.write(nlp, docs, keys))
