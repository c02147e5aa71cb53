"""The service's bounds that the end-to-end tests of test_serve.py do not reach: a full
queue is refused at once (503 + Retry-After), never left waiting; a document that breaks the
model fails alone inside a merged batch; ``--workers 2`` serves the same answers from two
processes; ``--log-text`` is the only way note text reaches the log. Every wait is bounded."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import httpx
import pytest
from fastapi import HTTPException

from dt4h_spacy.serve.app import Service
from dt4h_spacy.serve.batching import MicroBatcher, QueueFull
from dt4h_spacy.serve.limits import ServeSettings
from dt4h_spacy.textfiles import Document, Failure

NOTE = "El paciente presenta miocarditis aguda y dolor."


def test_a_full_queue_refuses_at_once_and_the_queued_requests_are_answered():
    release = threading.Event()
    seen: List[List[str]] = []

    def annotate(documents):
        assert release.wait(10), "the test never released the model"
        seen.append([d.text for d in documents])
        return [Failure(d.path, "done " + d.text) for d in documents]

    async def main():
        batcher = MicroBatcher(annotate, max_batch=1, max_wait=0.0, queue_size=1)
        await batcher.start()
        running = asyncio.create_task(batcher.submit([Document("a", "a", "A")]))
        for _ in range(200):  # until the model thread holds A, at most 2 s
            if batcher.in_flight:
                break
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.submit([Document("b", "b", "B")]))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(QueueFull):  # A runs, B fills the queue of one
            await batcher.submit([Document("c", "c", "C")])
        refused_in = time.monotonic() - started
        release.set()
        answers = await asyncio.gather(running, queued)
        await batcher.stop()
        return answers, refused_in

    (first, second), refused_in = asyncio.run(main())
    assert refused_in < 0.5  # refused, not held until the model is free
    assert [r.reason for r in first] == ["done A"] and [r.reason for r in second] == ["done B"]
    assert seen == [["A"], ["B"]]


def test_queue_full_is_answered_503_with_retry_after():
    class Full:
        async def submit(self, documents):
            raise QueueFull()

    service = Service.__new__(Service)  # only run()'s mapping is under test: no model needed
    service.settings, service.batcher = ServeSettings(timeout_s=5), Full()
    with pytest.raises(HTTPException) as caught:
        asyncio.run(service.run("annotate", [Document("0", "0", NOTE)]))
    assert caught.value.status_code == 503 and caught.value.headers == {"Retry-After": "1"}


def test_one_broken_document_fails_alone_in_a_merged_batch():
    def annotate(documents):
        if any(d.text == "boom" for d in documents):
            raise RuntimeError("the model broke")
        return [Failure(d.path, "fine " + d.text) for d in documents]

    async def main():
        batcher = MicroBatcher(annotate, max_batch=8, max_wait=0.2, queue_size=8)
        await batcher.start()
        answers = await asyncio.gather(batcher.submit([Document("a", "a", "x"), Document("b", "b", "boom")]),
                                       batcher.submit([Document("c", "c", "y")]))
        batches = batcher.batches
        await batcher.stop()
        return answers, batches

    (one, two), batches = asyncio.run(main())
    assert batches == 1  # both requests went into one call
    assert [r.reason for r in one] == ["fine x", "annotation failed: RuntimeError: the model broke"]
    assert [r.reason for r in two] == ["fine y"]


def start(args: List[str], log: Path) -> "tuple[subprocess.Popen, str]":
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as handle:  # a file, not an unread pipe, which would block the server when full
        process = subprocess.Popen([sys.executable, "-m", "dt4h_spacy", "serve", "--port", "0", *args],
                                   stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found and log.read_text(errors="replace").count("Application startup complete") >= 2:
            return process, f"http://127.0.0.1:{found.group(1)}"
        if process.poll() is not None:
            raise AssertionError(log.read_text())
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start within 180 s:\n" + log.read_text())


def test_two_workers_answer_alike_and_only_log_text_logs_the_note(tmp_path, trained_checkpoint, tiny_base_model):
    log = tmp_path / "server.log"
    process, url = start(["--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
                          "--workers", "2", "--log-text"], log)
    try:
        answers = [httpx.post(url + "/annotate", json={"texts": [NOTE], "lang": "es"}, timeout=60).json()
                   for _ in range(12)]  # new connections; which worker takes each is the kernel's choice
        assert all(a == answers[0] for a in answers)
        assert [r["text"] for r in answers[0]["rows"]] == ["miocarditis aguda"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    text = log.read_text(errors="replace")
    assert len(set(re.findall(r"Started server process \[(\d+)\]", text))) == 2  # two workers, each with the model
    assert NOTE in text  # --log-text: the note is logged (test_serve.py checks that it is not without it)
