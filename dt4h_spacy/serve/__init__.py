"""``dt4h-spacy serve``: the annotation service (DT4H/CogStack contract) on FastAPI + uvicorn.

:mod:`.limits` holds the service's settings and limits, :mod:`.batching` gathers concurrent
requests into one ``nlp.pipe`` call, :mod:`.app` the routes. Needs ``dt4h_spacy[serve]``.
"""
