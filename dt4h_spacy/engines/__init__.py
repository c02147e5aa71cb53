"""Where the annotate step runs: in this process (:mod:`.local`) or on Ray (:mod:`.ray`).

An engine is a function ``(source, done) → annotated documents and failures``; it only
schedules :meth:`dt4h_spacy.batch.Pipelines.annotate`, which does the work everywhere.
"""
