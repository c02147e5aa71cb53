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
    """``[start, end)`` word ranges with their entity type."""
    if orphan_i not in ORPHAN_I_MODES:
        raise ValueError(f"orphan_i must be one of {ORPHAN_I_MODES}, got {orphan_i!r}.")
    kinds = scheme.kinds[label_ids]
    types = scheme.types
    entities: List[WordEntity] = []
    open_type, start, end = "", -1, -1
    previous = -2
    # Only non-O words can open or extend an entity; a gap between them is an O, which closes.
    for i in numpy.flatnonzero(kinds != 0).tolist():
        if i != previous + 1 and open_type:
            entities.append((start, end, open_type))
            open_type = ""
        previous = i
        kind, etype = kinds[i], types[label_ids[i]]
        if kind == INSIDE and open_type == etype:
            end = i + 1
        elif kind == BEGIN or (kind == INSIDE and orphan_i == "begin"):
            if open_type:
                entities.append((start, end, open_type))
            open_type, start, end = etype, i, i + 1
    if open_type:
        entities.append((start, end, open_type))
    return entities
