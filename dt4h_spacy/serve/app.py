"""The service's routes: the DT4H annotation service's contract, on FastAPI.

``POST /process_bulk`` takes the CogStack/NiFi envelope (``{"content": [{"id", "text",
"footer"}]}``) with the query parameters ``language``, ``entities`` and ``negation`` and
answers one DT4H CDM object per document (:mod:`dt4h_spacy.io.cdm`), in input order;
``POST /annotate`` answers ``predict``'s JSONL rows. Every request's documents go through the
:class:`~.batching.MicroBatcher`, so concurrent requests share ``nlp.pipe`` calls.

What the service refuses is said in one line naming the field (``{"error": "content[2].text:
…"}``): 400 for malformed JSON and unusable parameters, 422 for wrong types, 413 over a limit,
401 without the API key, 503 (``Retry-After``) when the queue is full, 504 past the request
timeout. No route reads or writes a file of the server, and note text is never logged unless
``--log-text``.
"""

import asyncio
import hmac
import itertools
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Set, Tuple, Union

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..batch import Pipelines, model_label, served_languages
from ..component import DiseaseRecognizer
from ..io.cdm import cdm_failure, cdm_object, concept_class
from ..io.records import AnnotatedDoc, Document, Failure, mention_record
from ..pipes.langdetect.detect import check_languages
from ..pipes.context import ContextQualifier
from ..routing import language_code
from .batching import MicroBatcher, QueueFull, Result
from .limits import ServeSettings, read_api_key

log = logging.getLogger("dt4h_spacy.serve")
RETRY_AFTER_S = 1


# ------------------------------------------------------------------------------ request bodies


class Record(BaseModel):
    """One CogStack document: ``footer`` holds its CDM record fields (patient_id, …)."""

    id: Optional[Union[StrictStr, int]] = None
    text: StrictStr
    footer: Dict[str, Any] = Field(default_factory=dict)


class Envelope(BaseModel):
    """The CogStack/NiFi bulk envelope."""

    content: List[Record] = Field(min_length=1)


class AnnotateRequest(BaseModel):
    """Texts for ``predict``'s rows; ``ids`` name them (default ``0``, ``1``, …)."""

    texts: List[StrictStr] = Field(min_length=1)
    lang: StrictStr = "auto"
    ids: Optional[List[StrictStr]] = None


# ------------------------------------------------------------------------------------ the model


class Service:
    """The model, loaded once per worker process, and what requests are checked against."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        # Both auto and detect identify a document's language in its text: service ids are not
        # MultiClinNER file names. Without the identifier, auto leaves such documents as failures.
        try:
            check_languages(["es"])
            routing = "detect"
        except ImportError:
            routing = "auto"
        self.pipelines = Pipelines(routing, settings.model, settings.checkpoint, settings.base_model,
                                   {"device": settings.device}, context={} if settings.context else None)
        self.nlp = self.pipelines.load()
        self.languages: Optional[Set[str]] = served_languages(self.nlp)
        self.labels: Tuple[str, ...] = tuple(sorted({label for _, pipe in self.nlp.pipeline
                                                     if isinstance(pipe, DiseaseRecognizer) for label in pipe.labels}))
        self.context = any(isinstance(pipe, ContextQualifier) for _, pipe in self.nlp.pipeline)
        self.model_name = model_label(settings.model, settings.checkpoint)
        self.api_key = read_api_key(settings.api_key_file) if settings.api_key_file else None
        self.batcher = MicroBatcher(self._annotate, settings.max_batch, settings.max_wait_ms / 1000,
                                    settings.queue_size)
        self._requests = itertools.count()

    def _annotate(self, documents: Sequence[Document]) -> List[Result]:
        """One result per document, in order (``Pipelines.annotate`` yields failures early)."""
        found = {result.path: result for result in self.pipelines.annotate(documents, self.settings.max_batch)}
        return [found.get(d.path) or Failure(d.path, "not annotated") for d in documents]

    def language(self, value: str, field: str = "language") -> Optional[str]:
        """The request's language code, None for auto/detect; 400 naming ``field`` otherwise."""
        code = language_code(value)
        if code is None or (self.languages is not None and code not in ("auto", "detect")
                            and code not in self.languages):
            served = ", ".join(sorted(self.languages)) if self.languages else "any language code"
            raise HTTPException(400, f"{field}: {value!r} is not served; use {served}, auto or detect.")
        return None if code in ("auto", "detect") else code

    def entity_labels(self, value: Optional[str]) -> Set[str]:
        """The model labels that ``entities`` (``disease,symptom``) asks for; all without it."""
        if value is None:
            return set(self.labels)
        names = {label: {label.lower(), concept_class(label), *concept_class(label).split("/")} for label in self.labels}
        chosen: Set[str] = set()
        for entity in (e.strip().lower() for e in value.split(",") if e.strip()):
            matched = {label for label, aliases in names.items() if entity in aliases}
            if not matched:
                known = ", ".join(sorted(label.lower() for label in self.labels))
                raise HTTPException(400, f"entities: {entity!r} is not an entity of the model; it has {known}.")
            chosen |= matched
        if not chosen:
            raise HTTPException(400, "entities: give at least one entity, e.g. entities=disease.")
        return chosen

    def check_texts(self, texts: Sequence[str], field: str, item: str) -> None:
        """413 for more documents than ``max_documents`` (naming ``field``) or a text over
        ``max_text_chars`` (naming ``item``, e.g. ``content[{}].text``)."""
        limits = self.settings
        if len(texts) > limits.max_documents:
            raise HTTPException(413, f"{field}: {len(texts)} documents, more than the limit of {limits.max_documents} "
                                     "per request (--max-documents); send them in several requests.")
        for index, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise HTTPException(413, f"{item.format(index)}: {len(text)} characters, more than the limit of "
                                         f"{limits.max_text_chars} (--max-text-chars).")

    async def run(self, route: str, documents: List[Document]) -> List[Result]:
        """The documents' results through the batcher: 503 when its queue is full, 504 after the timeout."""
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(self.batcher.submit(documents), self.settings.timeout_s)
        except QueueFull:
            raise HTTPException(503, "the service is busy: its queue is full; retry after a second.",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not annotated within the request timeout of {self.settings.timeout_s:g} s "
                                     "(--timeout).") from None
        failed = sum(isinstance(result, Failure) for result in results)
        log.info("%s: %d documents, %d characters, %d failed, %.3f s", route, len(documents),
                 sum(len(d.text) for d in documents), failed, time.perf_counter() - started)
        if self.settings.log_text:
            for document in documents:
                log.info("%s text of %s: %r", route, document.name, document.text)
        return results

    def documents(self, names: Sequence[str], texts: Sequence[str], lang: Optional[str]) -> List[Document]:
        """Documents keyed by a path unique to this request, so results find their request."""
        request = next(self._requests)
        return [Document(name, f"request {request} document {i}", text, lang)
                for i, (name, text) in enumerate(zip(names, texts))]


# ------------------------------------------------------------------------------------ guard


class Guard:
    """ASGI middleware in front of the routes: the API key (constant-time comparison; ``GET /``
    stays open for liveness probes), then the body limit, counted on the bytes received, so a
    chunked upload cannot pass it either."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, api_key: Optional[str]) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected is not None and not (scope["method"] == "GET" and scope["path"] == "/"):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                await JSONResponse({"error": "authorization: missing or wrong API key; send 'Authorization: "
                                             "Bearer KEY'."}, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        too_large = JSONResponse({"error": f"body: larger than the limit of {self.max_body_bytes} bytes "
                                           "(--max-body-bytes)."}, 413)
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await too_large(scope, receive, send)
            return
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _field(location: Sequence[Any]) -> str:
    """``("body", "content", 2, "text")`` → ``content[2].text``; ``("query", "negation")`` → ``negation``."""
    parts = list(location[1:]) if location and location[0] in ("body", "query") else list(location)
    parts = parts or ["body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---------------------------------------------------------------------------------------- app


def create_app(settings: ServeSettings) -> FastAPI:
    """The service, with its model loaded (once: this runs once per worker process)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        yield
        await service.batcher.stop()  # uvicorn has let in-flight requests finish (SIGTERM drains)

    app = FastAPI(title="dt4h-spacy", version=__version__, lifespan=lifespan,
                  description="Clinical NER (DT4H) as a service: the DT4H annotation service's contract.")
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes, api_key=service.api_key)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, err.status_code, getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return JSONResponse({"error": f"body: malformed JSON ({reason})."}, 400)
        message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
        return JSONResponse({"error": message}, 422)

    @app.get("/", response_class=PlainTextResponse, summary="Liveness: OK")
    async def root() -> str:
        return "OK"

    @app.get("/health", summary="The model, its languages and labels, the queue")
    async def health() -> Dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "model": service.model_name, "version": __version__,
                "languages": None if service.languages is None else sorted(service.languages),
                "entities": [label.lower() for label in service.labels], "negation": service.context,
                "queued": service.batcher.queued, "pending": service.batcher.pending, "in_flight": service.batcher.in_flight,
                "batches": service.batcher.batches}

    @app.post("/process_bulk", summary="CogStack envelope in, DT4H CDM objects out (input order)")
    async def process_bulk(
        envelope: Envelope,
        language: str = Query("auto", description="es, it, ro …; auto or detect: identified per document"),
        entities: Optional[str] = Query(None, description="Comma-separated, e.g. disease,symptom. Default: all"),
        negation: bool = Query(False, description="Report negation/uncertainty (needs dt4h_context: serve "
                                                  "--context); null when not assessed"),
    ) -> List[Dict[str, Any]]:
        code = service.language(language)
        labels = service.entity_labels(entities)
        texts = [record.text for record in envelope.content]
        service.check_texts(texts, "content", "content[{}].text")
        names = [str(i if record.id is None else record.id) for i, record in enumerate(envelope.content)]
        results = await service.run("process_bulk", service.documents(names, texts, code))
        qualifiers = negation and service.context
        answers = []
        for record, name, result in zip(envelope.content, names, results):
            if isinstance(result, Failure):
                answers.append(cdm_failure(record.text, name, result.reason, service.model_name, record.footer))
                continue
            kept = AnnotatedDoc(result.name, result.text, result.lang, [m for m in result.mentions if m.label in labels])
            answers.append(cdm_object(kept, service.model_name, qualifiers, record.footer))
        return answers

    @app.post("/annotate", summary="Texts in, predict's JSONL rows out")
    async def annotate(body: AnnotateRequest) -> Dict[str, Any]:
        code = service.language(body.lang, "lang")
        if body.ids is not None and len(body.ids) != len(body.texts):
            raise HTTPException(422, f"ids: {len(body.ids)} ids for {len(body.texts)} texts; give one per text.")
        service.check_texts(body.texts, "texts", "texts[{}]")
        names = body.ids or [str(i) for i in range(len(body.texts))]
        results = await service.run("annotate", service.documents(names, body.texts, code))
        rows = [mention_record(m, with_context=service.context) for r in results if isinstance(r, AnnotatedDoc)
                for m in r.mentions]
        failures = [{"id": name, "error": r.reason} for name, r in zip(names, results) if isinstance(r, Failure)]
        return {"rows": rows, "failures": failures}

    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory (``serve --workers N`` imports it in each worker); the service's log
    lines (counts and timings) go to stderr beside uvicorn's."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return create_app(ServeSettings.from_environment())
