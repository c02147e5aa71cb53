"""Training the DT4H network: spaCy's own loop (``spacy train configs/finetune.cfg``) is the
only one.

* :mod:`.run`: :func:`train`, spaCy's ``train`` with the authors' data converted first.
* :mod:`.spacy_loop`: the reader (``dt4h.Corpus.v1``) and the authors' batch order
  (``dt4h.task_batches.v1``) a config names; the component's ``update`` does the rest.
* :mod:`.start`: the checkpoint a run starts from (``dt4h-spacy init-checkpoint``).
* :mod:`.corpora`: the authors' annotated texts → the DocBins spaCy reads.
* :mod:`.export`: a trained pipeline → the published ``.pt`` (``dt4h-spacy export``).
"""

from .corpora import convert_texts
from .export import export_checkpoint
from .run import train
from .start import start_network, write_start_checkpoint

__all__ = ["convert_texts", "export_checkpoint", "start_network", "train", "write_start_checkpoint"]
