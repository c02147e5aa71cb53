"""A pipeline cut at its networks' forward passes: CPU steps between device steps.

A set of docs goes through the pipes in order; at each ``dt4h_disease`` component it pauses
with its windows prepared (:class:`Paused`, the CPU stage
:func:`~dt4h_spacy.stages.preprocess`), the network reads them wherever it runs (this
process, the main process of ``--cpu-workers``, a GPU actor under Ray:
:func:`~dt4h_spacy.stages.run_sets`), and :func:`advance` goes on from there with the
probabilities: spans, then the pipes up to the next pause. Both engines that run the
device apart (:mod:`.workers`, :mod:`.ray`) walk the pipeline with these two functions, so
they give what ``nlp.pipe`` gives.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from .. import stages
from ..component import DiseaseRecognizer

Probs = List[Dict[str, numpy.ndarray]]  # per served doc, head → (n_words, n_labels) probabilities


@dataclass(frozen=True)
class Paused:
    """A set of docs waiting for component ``name`` (at ``position`` in the pipeline) to read
    the windows of its ``served`` docs (indices into the set)."""

    position: int
    name: str
    served: List[int]
    prepared: stages.Prepared

    @property
    def window_set(self) -> stages.WindowSet:
        """What the device needs: the windows only, not the words' texts."""
        return self.prepared.window_set


def check_cpu_steps(nlp: Language) -> None:
    """Refuse a pipeline that a process of CPU steps cannot run: a ``dt4h_disease`` component
    reading the raw text (``compat="authors"``: its own windows, run whole), or one that would
    load its network onto a GPU in that process, which never runs it."""
    for name, component in nlp.pipeline:
        if not isinstance(component, DiseaseRecognizer):
            continue
        settings = component.settings
        if settings.compat != "words":
            raise ValueError(f"CPU workers run the words reading; component {name!r} has compat="
                             f"{settings.compat!r}. Run it without cpu workers.")
        if settings.device != "cpu":
            raise ValueError(f"component {name!r} would load its network on {settings.device!r} in every CPU worker, "
                             "which only prepares windows and decodes; load the workers' pipeline on the CPU, e.g. "
                             "functools.partial(dt4h_spacy.engines.workers.load_on_cpu, path), and run the network on "
                             "the device with nlp=")


def advance(nlp: Language, docs: List[Doc], paused: Optional[Paused] = None,
            probs: Optional[Probs] = None) -> Tuple[List[Doc], Optional[Paused]]:
    """Finish ``paused`` with the network's ``probs`` (its spans written), then run the pipes
    after it up to the next ``dt4h_disease`` component: the docs, paused there with their
    windows prepared, or ``None`` once the pipeline has run to its end. A pause may serve no
    doc (none in a language of its heads); it is finished with no probabilities."""
    start = 0
    if paused is not None:
        component = nlp.pipeline[paused.position][1]
        component.set_annotations(docs, component.batch_of(len(docs), paused.served, paused.prepared, probs or []))
        start = paused.position + 1
    for position in range(start, len(nlp.pipeline)):
        name, component = nlp.pipeline[position]
        if isinstance(component, DiseaseRecognizer):
            heads = [component.heads_for(doc) for doc in docs]
            served = [i for i, doc_heads in enumerate(heads) if doc_heads]
            prepared = component.preprocess([docs[i] for i in served], [heads[i] for i in served])
            return docs, Paused(position, name, served, prepared)
        docs = list(component.pipe(docs)) if hasattr(component, "pipe") else [component(doc) for doc in docs]
    return docs, None


def forward(nlp: Language, name: str, sets: Sequence[stages.WindowSet]) -> List[Probs]:
    """The device step of component ``name`` for several paused sets: their windows in one
    batch plan on its network, each set's probabilities back."""
    tagger = nlp.get_pipe(name).tagger
    tagger.ready()
    return stages.run_sets(tagger, sets)
