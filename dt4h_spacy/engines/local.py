"""The local engine: documents stream through ``nlp.pipe`` in this process (``n_process``
forks spaCy's workers, each running torch on one thread), or (``cpu_workers``) through CPU
worker processes feeding the network in this one."""

from typing import Iterable, Iterator, Set, Union

from ..batch import Pipelines
from ..io.records import AnnotatedDoc, Document, Failure
from ..io.sources import Source
from ..run import Engine
from .workers import PipelinesJob
from .workers import run as run_workers


def skip_done(items: Iterable[Union[Document, Failure]], done: Set[str]) -> Iterator[Union[Document, Failure]]:
    """The items an earlier run of a ``--resume`` has not annotated yet."""
    return (item for item in items if not (isinstance(item, Document) and item.name in done))


def local_engine(pipelines: Pipelines, batch_size: int = 32, n_process: int = 1, cpu_workers: int = 0) -> Engine:
    """An engine that annotates in this process with ``pipelines``; with ``cpu_workers``, the
    CPU stages run in that many processes feeding the network here (:mod:`.workers`)."""

    def annotate(source: Source, done: Set[str]) -> Iterator[Union[AnnotatedDoc, Failure]]:
        items = skip_done(source.documents(), done)
        if cpu_workers:
            return run_workers(PipelinesJob(pipelines), items, cpu_workers, batch_size, pipelines.load)
        return pipelines.annotate(items, batch_size, n_process)

    return annotate
