"""``dt4h-spacy serve`` (issue 26): a real uvicorn server on 127.0.0.1 and a real HTTP client.

Every wait is bounded in count and time; the servers are started once per module.
"""

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest
from fastapi import HTTPException
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.io.cdm import concept_class
from dt4h_spacy.io.sinks import AnnotatedDoc
from dt4h_spacy.serve.app import Service
from dt4h_spacy.serve.batching import MicroBatcher
from dt4h_spacy.serve.limits import ServeSettings
from dt4h_spacy.textfiles import Document

KEY = "s3cret-key"
NOTES = [
    {"id": "nota-1", "text": "El paciente presenta miocarditis aguda y dolor.", "patient_id": "1001",
     "admission_id": "A-7"},
    {"id": "nota-2", "text": "La paciente presenta dolor hoy.", "patient_id": "1002", "admission_id": "A-8"},
    {"id": "nota-3", "text": "Hoy la paciente presenta diabetes, con neumonía.", "patient_id": "1001",
     "admission_id": "A-9"},
]
EXPECTED = [("nota-1", "miocarditis aguda"), ("nota-3", "diabetes"), ("nota-3", "neumonía")]
STARTUP_S = 120


class Server:
    """``dt4h-spacy serve`` in a subprocess on a free port (uvicorn's ``--port 0``, read from its log)."""

    def __init__(self, args: List[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "dt4h_spacy", "serve", "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: List[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                if re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(STARTUP_S):
            self.stop()
            raise AssertionError("server did not start:\n" + "".join(self.lines))
        port = next(re.search(r"127\.0\.0\.1:(\d+)", line).group(1) for line in self.lines if "Uvicorn running" in line)
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def model_args(checkpoint: Path, base: Path) -> List[str]:
    return ["--checkpoint", str(checkpoint), "--base-model", str(base)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_checkpoint, tiny_base_model) -> Iterator[Server]:
    key_file = tmp_path_factory.mktemp("key") / "key.txt"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    running = Server([*model_args(trained_checkpoint, tiny_base_model), "--context", "--api-key-file", str(key_file),
                      "--max-body-bytes", "65536", "--max-text-chars", "5000"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        yield http


def envelope(notes: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"content": [{"id": n["id"], "text": n["text"], "footer": {k: n[k] for k in ("patient_id", "admission_id")
                                                                       if k in n}} for n in notes]}


def annotations(answer: List[Dict[str, Any]]) -> List[tuple]:
    return [(o["nlp_output"]["record_metadata"]["record_id"], a["concept_class"], a["start_offset"], a["end_offset"],
             a["concept_mention_string"], a["negation"]) for o in answer for a in o["nlp_output"]["annotations"]]


def without_dates(objects: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    for o in objects:
        o["nlp_output"]["record_metadata"].pop("nlp_processing_date")
    return objects


def test_root_health_and_docs(server, client):
    assert httpx.get(server.url + "/", timeout=10).text == "OK"  # open without the key: liveness probes
    health = client.get("/health").json()
    assert health["model_loaded"] and health["languages"] == ["es", "it", "ro"] and health["negation"] is True
    assert health["entities"] == ["disease"]
    assert client.get("/docs").status_code == 200
    cross_site = client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in cross_site.headers  # CORS off
    assert "/process_bulk" in client.get("/openapi.json").json()["paths"]


def test_the_readme_example_gets_cdm_objects(client):
    lines = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## Serving"))
    command = next(line for line in lines[start:] if line.startswith("pip install ") and "dt4h-spacy serve" in line)
    curl = shlex.split(next(line for line in lines[start:] if line.startswith("curl ")))
    url = next(part for part in curl if part.startswith("http://"))
    assert "--host 127.0.0.1 --port 8080" in command and url.startswith("http://127.0.0.1:8080/")
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    assert all(option in help_text for option in re.findall(r"--[a-z-]+", command.split("dt4h-spacy serve")[1]))
    answer = client.post(url[len("http://127.0.0.1:8080"):], content=curl[curl.index("-d") + 1].encode(),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    (only,) = answer.json()
    assert only["nlp_output"]["processing_success"] is True
    assert only["nlp_output"]["record_metadata"]["patient_id"] == "P-17"
    assert {a["negation"] for a in only["nlp_output"]["annotations"]} <= {"yes", "no"}


def test_the_api_key_is_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        answer = httpx.post(server.url + "/process_bulk", json=envelope(NOTES), headers=headers, timeout=10)
        assert answer.status_code == 401 and "authorization" in answer.json()["error"]
        assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_cdm_answers_equal_predicts_rows(client, tmp_path, trained_checkpoint, tiny_base_model):
    table = tmp_path / "notes.jsonl"
    table.write_text("".join(json.dumps(n, ensure_ascii=False) + "\n" for n in NOTES), encoding="utf-8")
    args = ["--lang", "es", *model_args(trained_checkpoint, tiny_base_model), "--context", "-q"]
    for output in ("rows.jsonl", "out.cdm.jsonl"):
        result = CliRunner().invoke(app, ["predict", str(table), str(tmp_path / output), *args])
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == EXPECTED

    answer = client.post("/process_bulk", params={"language": "es", "entities": "disease", "negation": "true"},
                         json=envelope(NOTES))
    assert answer.status_code == 200, answer.text
    objects = answer.json()
    assert [o["nlp_output"]["record_metadata"]["record_id"] for o in objects] == ["nota-1", "nota-2", "nota-3"]
    assert annotations(objects) == [(r["id"], concept_class(r["label"]), r["start"], r["end"], r["text"],
                                     "yes" if r["negated"] else "no") for r in rows]
    assert [a["extraction_confidence"] for o in objects for a in o["nlp_output"]["annotations"]] == \
        pytest.approx([r["score"] for r in rows])
    metadata = objects[2]["nlp_output"]["record_metadata"]
    assert (metadata["patient_id"], metadata["admission_id"], metadata["text"]) == ("1001", "A-9", NOTES[2]["text"])
    assert all(o["nlp_output"]["processing_success"] for o in objects)

    # predict's CDM file holds the same objects, record fields from the table's columns
    written = [json.loads(line) for line in (tmp_path / "out.cdm.jsonl").read_text(encoding="utf-8").splitlines()]
    assert without_dates(written) == without_dates(objects)

    # negation=false (the default): not assessed, null
    plain = client.post("/process_bulk", params={"language": "es"}, json=envelope(NOTES)).json()
    assert {a[5] for a in annotations(plain)} == {None}


def test_predict_refuses_cdm_objects_from_the_ray_engine(tmp_path, trained_checkpoint, tiny_base_model):
    table = tmp_path / "notes.jsonl"
    table.write_text(json.dumps(NOTES[0]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(table), str(tmp_path / "out.cdm.jsonl"), "--engine", "ray",
                                      *model_args(trained_checkpoint, tiny_base_model)])
    assert result.exit_code == 2 and "--engine local" in result.output, result.output  # Ray results carry no text
    assert not (tmp_path / "out.cdm.jsonl").exists()


def test_annotate_answers_predicts_rows(client, tmp_path, trained_checkpoint, tiny_base_model):
    folder = tmp_path / "notes"
    folder.mkdir()
    for note in NOTES:
        (folder / f"{note['id']}.txt").write_text(note["text"], encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "rows.jsonl"), "--lang", "es", "--context",
                                      *model_args(trained_checkpoint, tiny_base_model), "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    answer = client.post("/annotate", json={"texts": [n["text"] for n in NOTES], "lang": "es",
                                            "ids": [n["id"] for n in NOTES]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"rows": rows, "failures": []}


def test_a_failing_document_does_not_fail_the_others(client):
    notes = [NOTES[0], {"id": "short", "text": "¿?"}, NOTES[2]]  # no letters: its language cannot be identified
    objects = client.post("/process_bulk", params={"language": "auto"}, json=envelope(notes)).json()
    assert [o["nlp_output"]["processing_success"] for o in objects] == [True, False, True]
    assert "short" in [o["nlp_output"]["record_metadata"]["record_id"] for o in objects]
    assert objects[1]["nlp_output"]["annotations"] == [] and objects[1]["nlp_output"]["processing_message"]
    assert [(a[0], a[4]) for a in annotations(objects)] == EXPECTED


@pytest.mark.parametrize("request_args, status, field", [
    ({"content": b'{"content": [{"text": "dolor"', "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ({"json": {"content": [{"id": "a"}]}}, 422, "content[0].text"),
    ({"json": {"content": [{"id": "a", "text": 5}]}}, 422, "content[0].text"),
    ({"json": {"content": [{"text": "dolor", "footer": "x"}]}}, 422, "content[0].footer"),
    ({"json": {"content": []}}, 422, "content"),
    ({"json": {"notes": []}}, 422, "content"),
    ({"json": envelope(NOTES), "params": {"language": "fr"}}, 400, "language"),
    ({"json": envelope(NOTES), "params": {"language": "es", "entities": "tumour"}}, 400, "entities"),
    ({"json": envelope(NOTES), "params": {"negation": "maybe"}}, 422, "negation"),
    ({"json": {"content": [{"text": "dolor " * 1000}]}}, 413, "content[0].text"),
    ({"json": {"content": [{"text": "dolor " * 800}] * 20}}, 413, "body"),
])
def test_bad_input_is_refused_naming_the_field_and_the_server_keeps_serving(client, request_args, status, field):
    answer = client.post("/process_bulk", **request_args)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"].startswith(field), answer.json()
    assert client.post("/process_bulk", params={"language": "es"}, json=envelope(NOTES[:1])).status_code == 200


def test_annotate_refuses_wrong_types(client):
    for body, field in (({"texts": "dolor"}, "texts"), ({"texts": ["a", 3]}, "texts[1]"),
                        ({"texts": ["a"], "lang": "xx"}, "lang")):
        answer = client.post("/annotate", json=body)
        assert answer.status_code in (400, 422) and field in answer.json()["error"], answer.text


def test_16_concurrent_clients_get_the_sequential_answers(server, client):
    texts = [f"{NOTES[i % 3]['text']} Nota {i}." for i in range(50)]
    expected = {}
    for i, text in enumerate(texts):
        answer = client.post("/process_bulk", params={"language": "es"}, json={"content": [{"id": str(i), "text": text}]})
        expected[i] = annotations(answer.json())
    batches_before = client.get("/health").json()["batches"]

    def one_client(number: int) -> Dict[int, list]:
        got = {}
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            for i in range(50):
                index = (i + number) % 50
                answer = http.post("/process_bulk", params={"language": "es"},
                                   json={"content": [{"id": str(index), "text": texts[index]}]})
                assert answer.status_code == 200, answer.text
                got[index] = annotations(answer.json())
        return got

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one_client, range(16), timeout=300))
    assert all(got == expected for got in answers)
    batches = client.get("/health").json()["batches"] - batches_before - 1
    assert batches < 16 * 50  # requests were gathered into shared nlp.pipe calls


def test_sigterm_drains_the_accepted_requests(trained_checkpoint, tiny_base_model):
    # one batch of everything that arrives within 3 s: SIGTERM comes while all of it waits
    running = Server([*model_args(trained_checkpoint, tiny_base_model), "--max-batch", "1024", "--max-wait-ms", "3000"])
    try:
        notes = [{"id": f"{n['id']}-{i}", "text": n["text"]} for i in range(11) for n in NOTES][:32]

        def post() -> httpx.Response:
            return httpx.post(running.url + "/process_bulk", params={"language": "es"}, json=envelope(notes),
                              timeout=120)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post) for _ in range(8)]
            for _ in range(200):  # until the server holds all eight requests, at most 10 s
                health = httpx.get(running.url + "/health", timeout=10).json()
                if health["pending"] == 8 * 32:
                    break
                time.sleep(0.05)
            assert health["pending"] == 8 * 32 and health["batches"] == 0, health
            running.process.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=120) for f in futures]
        assert [a.status_code for a in answers] == [200] * 8
        assert all(len(a.json()) == 32 and a.json() == answers[0].json() for a in answers[1:])
        assert running.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn ends by the signal it drained for
        assert "Finished server process" in running.log()
        assert "miocarditis" not in running.log()  # note text is not logged
    finally:
        running.stop()


# ------------------------------------------------------------------ the micro-batcher alone


def _documents(count: int, prefix: str = "d") -> List[Document]:
    return [Document(f"{prefix}{i}", f"{prefix}{i}", f"text {prefix}{i}") for i in range(count)]


def _echo(calls: List[int], release: threading.Event = None):
    def annotate(documents):
        calls.append(len(documents))
        if release is not None:
            assert release.wait(10)
        return [AnnotatedDoc(d.name, d.text, "es", []) for d in documents]
    return annotate


def test_concurrent_submissions_share_one_call_and_get_their_own_results():
    calls: List[int] = []

    async def scenario():
        batcher = MicroBatcher(_echo(calls), max_batch=32, max_wait=0.2)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(_documents(2, f"r{r}-")) for r in range(5)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert calls == [10]
    assert [[d.name for d in result] for result in results] == [[f"r{r}-0", f"r{r}-1"] for r in range(5)]


def test_a_request_that_timed_out_while_queued_is_never_run():
    calls: List[int] = []
    release = threading.Event()

    async def scenario():
        batcher = MicroBatcher(_echo(calls, release), max_batch=1, max_wait=0, queue_size=4)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit(_documents(1, "a")))
        waiting = asyncio.ensure_future(batcher.submit(_documents(1, "b")))
        for _ in range(100):  # until the model thread holds a and b waits behind it, at most 1 s
            if batcher.in_flight and batcher.queued:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(waiting, 0.05)
        release.set()
        first = await running
        await batcher.stop()
        return first

    assert [d.name for d in asyncio.run(scenario())] == ["a0"]
    assert calls == [1]  # b was given up before its turn: never annotated


def test_a_request_past_its_timeout_is_answered_504():
    class Slow:
        async def submit(self, documents):
            await asyncio.sleep(5)

    service = Service.__new__(Service)  # only run()'s mapping is under test: no model needed
    service.settings, service.batcher = ServeSettings(timeout_s=0.05), Slow()
    started = time.monotonic()
    with pytest.raises(HTTPException) as caught:
        asyncio.run(service.run("annotate", [Document("0", "0", "dolor")]))
    assert caught.value.status_code == 504 and "--timeout" in caught.value.detail
    assert time.monotonic() - started < 2
