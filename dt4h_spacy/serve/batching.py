"""Micro-batching: documents of requests that arrive together go through one ``nlp.pipe`` call.

The encoder is as fast per document on a batch of 32 as a single large request makes it, so a
request waits at most ``max_wait`` for others before its batch starts, and a batch stops at
``max_batch`` documents. The model runs in one worker thread (torch is not shared between
batches); the event loop keeps accepting requests meanwhile. The queue is bounded: a request
that finds it full is refused (:class:`QueueFull`, the service answers 503) rather than
waiting without limit.
"""

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

from ..io.records import AnnotatedDoc, Document, Failure

Result = Union[AnnotatedDoc, Failure]
Annotate = Callable[[Sequence[Document]], List[Result]]


class QueueFull(Exception):
    """No room for another request: the client should retry later."""


@dataclass
class _Job:
    documents: Sequence[Document]
    future: "asyncio.Future[List[Result]]" = field(repr=False)


def annotate_each(annotate: Annotate, documents: Sequence[Document]) -> List[Result]:
    """``annotate(documents)``, or where the batch raises, each document on its own, so a
    document that breaks the model becomes its own :class:`Failure` and the others are kept."""
    try:
        return annotate(documents)
    except Exception as err:  # noqa: BLE001 - any error of one document must not fail the others
        if len(documents) == 1:
            return [Failure(documents[0].path, f"annotation failed: {type(err).__name__}: {err}")]
    return [result for document in documents for result in annotate_each(annotate, [document])]


class MicroBatcher:
    """Gathers the documents of concurrent :meth:`submit` calls into batches for ``annotate``,
    which returns one result per document, in order."""

    def __init__(self, annotate: Annotate, max_batch: int = 32, max_wait: float = 0.01, queue_size: int = 256) -> None:
        self.annotate, self.max_batch, self.max_wait = annotate, max_batch, max_wait
        self._queue: "Optional[asyncio.Queue[Optional[_Job]]]" = None
        self._queue_size = queue_size
        self._task: "Optional[asyncio.Task[None]]" = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dt4h-model")
        self.pending = 0  # documents submitted and not answered yet
        self.in_flight = 0  # documents in the batch the model runs now
        self.batches = 0  # nlp.pipe calls so far (the service's /health shows it)

    @property
    def queued(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def start(self) -> None:
        self._queue = asyncio.Queue(self._queue_size)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued job, then stop the model thread."""
        if self._queue is not None and self._task is not None:
            await self._queue.put(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, documents: Sequence[Document]) -> List[Result]:
        """The results of ``documents``; :class:`QueueFull` when the queue has no room."""
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        job = _Job(documents, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull() from None
        self.pending += len(documents)
        try:
            return await job.future
        finally:
            self.pending -= len(documents)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            jobs = [first]
            size = len(first.documents)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait() if loop.time() >= deadline else await asyncio.wait_for(
                        self._queue.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
                size += len(job.documents)
            jobs = [job for job in jobs if not job.future.done()]  # a request that timed out is not run
            documents = [document for job in jobs for document in job.documents]
            if not documents:
                continue
            self.in_flight = len(documents)
            try:
                results = await loop.run_in_executor(self._executor, annotate_each, self.annotate, documents)
            except Exception as err:  # noqa: BLE001 - the loop must keep serving
                results = [Failure(d.path, f"annotation failed: {type(err).__name__}: {err}") for d in documents]
            finally:
                self.in_flight = 0
            self.batches += 1
            start = 0
            for job in jobs:
                end = start + len(job.documents)
                if not job.future.done():
                    job.future.set_result(results[start:end])
                start = end
