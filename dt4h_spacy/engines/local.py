"""The local engine: documents stream through ``nlp.pipe`` in this process (``n_process``
forks spaCy's workers, each running torch on one thread)."""

from typing import Iterable, Iterator, Set, Union

from ..batch import Pipelines
from ..io.records import AnnotatedDoc, Document, Failure
from ..io.sources import Source
from ..run import Engine


def skip_done(items: Iterable[Union[Document, Failure]], done: Set[str]) -> Iterator[Union[Document, Failure]]:
    """The items an earlier run of a ``--resume`` has not annotated yet."""
    return (item for item in items if not (isinstance(item, Document) and item.name in done))


def local_engine(pipelines: Pipelines, batch_size: int = 32, n_process: int = 1) -> Engine:
    """An engine that annotates in this process with ``pipelines``."""

    def annotate(source: Source, done: Set[str]) -> Iterator[Union[AnnotatedDoc, Failure]]:
        return pipelines.annotate(skip_done(source.documents(), done), batch_size, n_process)

    return annotate
