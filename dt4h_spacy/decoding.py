"""Word labels → entity word ranges, with the BIO reading of the authors' script.

``orphan_i="ignore"`` (default, the authors'): ``B-X`` opens an X entity, closing any open
one; ``I-X`` extends an open X entity and is otherwise skipped; ``O`` closes.
``orphan_i="begin"`` (the conlleval reading): an ``I-X`` that cannot extend opens a new X.
"""

from typing import List, Tuple

import numpy

from .labels import BEGIN, INSIDE, LabelScheme

ORPHAN_I_MODES = ("ignore", "begin")
WordEntity = Tuple[int, int, str]


def decode_bio(label_ids: numpy.ndarray, scheme: LabelScheme, orphan_i: str = "ignore") -> List[WordEntity]:
    """``[start, end)`` word ranges with their entity type, in array steps.

    Only non-O words open or extend an entity, and an O closes one, so each run of non-O
    words is read alone. With ``orphan_i="ignore"`` an entity is opened by each ``B`` and
    reaches the last ``I`` of its type before the run's next ``B``. With ``"begin"`` the
    open type after any non-O word is its own, so an entity opens at a ``B``, at a run's
    start and where the type changes, and lasts to the next opening.
    """
    if orphan_i not in ORPHAN_I_MODES:
        raise ValueError(f"orphan_i must be one of {ORPHAN_I_MODES}, got {orphan_i!r}.")
    label_ids = numpy.asarray(label_ids)
    kinds = scheme.kinds[label_ids]
    types = scheme.type_ids[label_ids]
    tagged = numpy.flatnonzero(kinds != 0)
    if not len(tagged):
        return []
    run = numpy.cumsum(numpy.r_[True, tagged[1:] != tagged[:-1] + 1])  # run of each tagged word
    kind, kind_type = kinds[tagged], types[tagged]
    if orphan_i == "begin":
        opens = (kind == BEGIN) | numpy.r_[True, (run[1:] != run[:-1]) | (kind_type[1:] != kind_type[:-1])]
        first = numpy.flatnonzero(opens)
        last = numpy.r_[first[1:], len(tagged)] - 1
        # an opening ends where the run ends, or where the next opening is
        last = numpy.minimum(last, numpy.searchsorted(run, run[first], side="right") - 1)
        starts, ends, entity_types = tagged[first], tagged[last] + 1, kind_type[first]
    else:
        first = numpy.flatnonzero(kind == BEGIN)
        if not len(first):
            return []
        owner = numpy.searchsorted(first, numpy.arange(len(tagged)), side="right") - 1  # the last B so far
        extends = (kind == INSIDE) & (owner >= 0)
        extends[extends] &= (run[first[owner[extends]]] == run[extends]) & (kind_type[first[owner[extends]]] == kind_type[extends])
        last = first.copy()
        numpy.maximum.at(last, owner[extends], numpy.flatnonzero(extends))
        starts, ends, entity_types = tagged[first], tagged[last] + 1, kind_type[first]
    names = scheme.type_names
    return list(zip(starts.tolist(), ends.tolist(), [names[t] for t in entity_types.tolist()]))
