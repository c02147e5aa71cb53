"""``predict --engine ray``: Ray Data with an actor pool of two pipelines gives the local
engine's rows (a local Ray with 2 CPUs, started and stopped here)."""

import configparser
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
import ray
from packaging.requirements import Requirement
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.engines import ray as engine

NOTES = {
    "MultiClinNER-es-test-disease-00001": "El paciente presenta miocarditis aguda y dolor.\n\nHoy la paciente presenta "
                                          "diabetes, con neumonía.",
    "MultiClinNER-it-test-disease-00001": "Il paziente presenta scompenso e dolore.\nOggi presenta ipertensione.",
    "MultiClinNER-ro-test-disease-00001": "Pacientul prezintă infarct acut cu durere azi.",
    "MultiClinNER-es-test-disease-00002": "La paciente presenta dolor hoy.",
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_with_two_workers_gives_the_rows_of_the_local_engine(tmp_path, local_ray, trained_checkpoint,
                                                                 tiny_base_model):
    source = tmp_path / "notes.jsonl"
    rows = [{"id": name, "text": text} for name, text in NOTES.items()]
    rows.insert(2, {"id": "MultiClinNER-es-test-disease-00001", "text": "otra vez"})  # row 3: a repeated id
    rows.append({"id": "MultiClinNER-en-test-disease-00001", "text": "The patient has asthma."})  # row 6: no head
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    args = [str(source), "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
            "--with-scores", "--batch-size", "2"]
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[1:]])
    assert local.exit_code == 1, local.output
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "ray.tsv"), *args[1:], "--engine", "ray",
                                      "--workers", "2"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in local.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: skipped {source} row 3: duplicate id 'MultiClinNER-es-test-disease-00001' (first at {source} row 1); "
        "ids name the documents in the output, so each must be unique",
        f"error: skipped {source} row 6: the model has no head for language 'en' (it serves es, it, ro); pass --fallback-lang "
        "with one of them to annotate it anyway",
    ]
    written = (tmp_path / "ray.tsv").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.tsv").read_text(encoding="utf-8")
    assert all(text in written for text in ("miocarditis aguda", "neumonía", "scompenso", "infarct acut"))


def _extra(name: str) -> list:
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    return [Requirement(line) for line in config["options.extras_require"][name].strip().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("extra", ["ray", "dev"])
def test_the_ray_extra_installs_aiohttp_which_ray_data_needs_and_ray_tested_here(extra):
    requirements = {r.name: r for r in _extra(extra)}
    assert "http" in requirements["fsspec"].extras  # fsspec's HTTP file system: aiohttp
    assert "data" in requirements["ray"].extras
    assert requirements["ray"].specifier.contains(ray.__version__)
    assert not requirements["ray"].specifier.contains("2.59.0")  # only what was tested


def test_without_aiohttp_the_ray_engine_stops_with_one_line_before_starting_ray(tmp_path, monkeypatch):
    source = tmp_path / "notes.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "dolor"}) + "\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as on a machine where it is not installed
    monkeypatch.delitem(sys.modules, "fsspec.implementations.http", raising=False)
    started = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: started.append(args))
    result = CliRunner().invoke(app, ["predict", str(source), str(tmp_path / "out.tsv"), "--lang", "es",
                                      "--engine", "ray"])
    assert result.exit_code == 2 and not started
    assert result.stderr.splitlines() == [
        "error: --engine ray needs Ray Data and aiohttp (import of aiohttp halted; None in sys.modules); pip install "
        "'.[ray]' in the dt4h_spacy folder (on every node of a cluster)."]


def test_ray_carries_the_context_qualifiers(tmp_path, local_ray, trained_checkpoint, tiny_base_model):
    source = tmp_path / "notes.jsonl"
    notes = {"MultiClinNER-es-test-disease-00001": "El paciente presenta diabetes . Sin neumonía .",
             "MultiClinNER-ro-test-disease-00001": "Pacientul prezintă diabet . Fără pneumonie ."}
    source.write_text("".join(json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in notes.items()),
                      encoding="utf-8")
    args = ["predict", str(source), "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
            "--context"]
    assert CliRunner().invoke(app, [*args[:2], str(tmp_path / "local.jsonl"), *args[2:]]).exit_code == 0
    result = CliRunner().invoke(app, [*args[:2], str(tmp_path / "ray.jsonl"), *args[2:], "--engine", "ray"])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "ray.jsonl").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.jsonl").read_text(encoding="utf-8")
    assert {json.loads(line)["text"]: json.loads(line)["negated"] for line in written.splitlines()} == {
        "diabetes": False, "neumonía": True, "diabet": False, "pneumonie": True}


def test_ray_rows_stream_back_in_batches_so_parts_are_committed_as_they_arrive(tmp_path, local_ray, monkeypatch,
                                                                               trained_checkpoint, tiny_base_model):
    """One Parquet file used to come back as one block when the whole job ended, so no part
    was committed before that (a SIGKILL left nothing to resume)."""
    source = tmp_path / "notes.parquet"
    rows = [{"id": f"nota-{n:02d}", "text": "El paciente presenta miocarditis aguda y dolor."} for n in range(12)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    arrived = []
    results = engine._results

    def counting(batches, source):
        return results((arrived.append(batch.num_rows) or batch for batch in batches), source)

    monkeypatch.setattr(engine, "_results", counting)
    result = CliRunner().invoke(app, ["predict", str(source), str(tmp_path / "out.tsv"), "--lang", "es",
                                      "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
                                      "--engine", "ray", "--batch-size", "2", "--commit-every", "2"])
    assert result.exit_code == 0, result.output
    assert sum(arrived) == 12 and max(arrived) <= 2, arrived


def test_a_table_that_does_not_decode_under_ray_is_one_line_as_with_the_local_engine(tmp_path, local_ray):
    source = tmp_path / "export.csv"
    source.write_bytes("id;text\r\n1;dolor\r\n2;año\r\n".encode("cp1252"))
    result = CliRunner().invoke(app, ["predict", str(source), str(tmp_path / "out.tsv"), "--lang", "es",
                                      "--engine", "ray"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {source} is not valid utf-8 at byte offset 21 (line 3, byte 0xf1); pass --encoding cp1252 if it is "
        "a Windows/Latin-1 export, or re-save the file as UTF-8"]


MALFORMED = {
    ".jsonl": "".join(line + "\n" for line in [
        json.dumps({"id": "MultiClinNER-es-test-disease-00001", "text": NOTES["MultiClinNER-es-test-disease-00001"]},
                   ensure_ascii=False),
        '{"id": "MultiClinNER-es-test-disease-00003", "text": "cortada',  # row 2: malformed JSON
        "[1, 2]",  # row 3: not an object
        "",
        json.dumps({"id": "MultiClinNER-es-test-disease-00004"}),  # row 5: no text
        json.dumps({"id": "MultiClinNER-es-test-disease-00002", "text": "La paciente presenta neumonía y diabetes."},
                   ensure_ascii=False)]),
    ".csv": "id;text\r\nMultiClinNER-es-test-disease-00001;El paciente presenta miocarditis aguda y dolor.\r\n"
            "MultiClinNER-es-test-disease-00003;uno;dos\r\n"  # row 2: three fields
            "MultiClinNER-es-test-disease-00002;La paciente presenta neumonía y diabetes.\r\n",
}


@pytest.mark.parametrize("suffix", sorted(MALFORMED))
def test_ray_reads_a_table_with_malformed_lines_in_its_encoding_as_the_local_engine_does(
        suffix, tmp_path, local_ray, trained_checkpoint, tiny_base_model):
    """Ray's own JSON reader stopped at the first malformed line and read UTF-8 whatever
    --encoding said; both engines now read through one reader: same rows, same messages."""
    source = tmp_path / f"export{suffix}"
    source.write_bytes(MALFORMED[suffix].encode("cp1252"))
    args = [str(source), "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model), "--lang", "es",
            "--encoding", "cp1252", "--batch-size", "2"]
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.jsonl"), *args[1:]])
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "ray.jsonl"), *args[1:], "--engine", "ray"])
    assert (local.exit_code, result.exit_code) == (1, 1), (local.output, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in local.stderr.splitlines() if line.startswith("error:")]
    expected = {".jsonl": [f"error: skipped {source} row 2: not valid JSON (Invalid control character at: line 1 "
                           "column 62 (char 61))", f"error: skipped {source} row 3: not a JSON object",
                           f"error: skipped {source} row 5: missing text (column 'text')"],
                ".csv": [f"error: skipped {source} row 2: expected 2 fields like the header, got 3"]}[suffix]
    assert errors == expected
    written = (tmp_path / "ray.jsonl").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.jsonl").read_text(encoding="utf-8")
    assert {json.loads(line)["text"] for line in written.splitlines()} >= {"miocarditis aguda", "neumonía"}


def marking(actor: type, marks: Path) -> type:
    """``actor`` that notes its process id and batch number in ``marks`` as each batch starts, then takes a while."""
    marks.mkdir()

    class Marking(actor):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            (marks / f"{os.getpid()}-{self.calls}").touch()
            time.sleep(0.3)
            return super().__call__(batch)

    return Marking


def kill_in_the_second_batch(marks: Path):
    """A thread that SIGKILLs the first actor (see :func:`marking`) to start its second batch; the pids killed."""
    killed = []

    def kill():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            second = [name for name in os.listdir(marks) if name.endswith("-2")]
            if second:
                pid = int(second[0].split("-")[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill, daemon=True)
    watcher.start()
    return watcher, killed


def test_a_ray_worker_killed_mid_job_is_restarted_and_the_rows_are_those_of_an_uninterrupted_run(
        tmp_path, local_ray, monkeypatch, trained_checkpoint, tiny_base_model):
    """SIGKILL of the actor's process (not the driver's) while it holds a batch: Ray restarts
    the actor and retries the batch; nothing is lost or written twice."""
    source = tmp_path / "notes.parquet"
    rows = [{"id": f"nota-{n:02d}", "text": text} for n, text in enumerate(
        ["El paciente presenta miocarditis aguda y dolor.", "La paciente presenta neumonía y diabetes."] * 10)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    marks = tmp_path / "marks"
    monkeypatch.setattr(engine, "PipelineActor", marking(engine.PipelineActor, marks))
    watcher, killed = kill_in_the_second_batch(marks)
    args = [str(source), "--lang", "es", "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
            "--batch-size", "2", "--with-scores"]
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "ray.tsv"), *args[1:], "--engine", "ray"])
    watcher.join()
    assert result.exit_code == 0, result.output
    assert killed, "the actor was not killed"
    assert {int(name.split("-")[0]) for name in os.listdir(marks)} - set(killed), "no actor took over"
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[1:]])
    assert local.exit_code == 0, local.output
    written = (tmp_path / "ray.tsv").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.tsv").read_text(encoding="utf-8")
    assert written.count("miocarditis aguda") == 10 and written.count("neumonía") == 10


def test_the_public_udf_in_a_users_own_map_batches_gives_the_rows_of_engine_ray(tmp_path, local_ray,
                                                                                trained_checkpoint, tiny_base_model):
    source = tmp_path / "notes.parquet"
    rows = [{"id": name, "text": text, "patient_id": n} for n, (name, text) in enumerate(NOTES.items())]
    rows.append({"id": "MultiClinNER-en-test-disease-00001", "text": "The patient has asthma.", "patient_id": 9})
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    model = {"checkpoint": str(trained_checkpoint), "base_model": str(tiny_base_model)}
    result = CliRunner().invoke(app, ["predict", str(source), str(tmp_path / "ray.parquet"), "--checkpoint",
                                      model["checkpoint"], "--base-model", model["base_model"], "--keep-columns",
                                      "patient_id", "--context", "--engine", "ray", "--batch-size", "2"])
    assert result.exit_code == 1, result.output  # the English row
    dataset = ray.data.read_parquet(str(source)).map_batches(
        engine.AnnotateMentions, fn_constructor_kwargs={**model, "keep_columns": ["patient_id"], "context": True},
        batch_size=2, batch_format="pyarrow", concurrency=1)  # one CPU for it, one for reading (of 2)
    mine = pyarrow.concat_tables(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    expected = pyarrow.parquet.read_table(tmp_path / "ray.parquet")
    assert mine.schema == expected.schema
    key = [("id", "ascending"), ("start", "ascending"), ("end", "ascending"), ("label", "ascending")]
    assert mine.sort_by(key).equals(expected.sort_by(key))
    assert {"miocarditis aguda", "scompenso", "infarct acut"} <= set(mine.column("text").to_pylist())


def test_a_batch_that_kills_every_ray_worker_stops_the_run_with_its_parts_kept_for_resume(
        tmp_path, local_ray, monkeypatch, trained_checkpoint, tiny_base_model):
    """Retries are bounded, so a batch whose worker dies every time (say, out of memory)
    ends the run in one line, never a hang; what was committed stays and --resume finishes
    with the rows of an uninterrupted run."""
    source = tmp_path / "notes.parquet"
    rows = [{"id": f"nota-{n:02d}", "text": "El paciente presenta miocarditis aguda y dolor."} for n in range(16)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)

    class Dying(engine.PipelineActor):
        """Its process dies on the batch holding nota-13, every time."""

        def __call__(self, batch):
            if "nota-13" in batch.column("id").to_pylist():
                os._exit(1)
            time.sleep(0.2)
            return super().__call__(batch)

    monkeypatch.setattr(engine, "RETRIES", 1)
    monkeypatch.setattr(engine, "PipelineActor", Dying)
    args = [str(source), str(tmp_path / "out.tsv"), "--lang", "es", "--checkpoint", str(trained_checkpoint),
            "--base-model", str(tiny_base_model), "--batch-size", "2", "--commit-every", "2", "--engine", "ray"]
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the Ray workers failed: "), errors
    assert errors[0].endswith(f"; the documents done are kept in {tmp_path / 'out.tsv.parts'}: run again with "
                              "--resume to continue"), errors
    assert not (tmp_path / "out.tsv").exists()
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, ["predict", *args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[2:-2]])
    assert local.exit_code == 0, local.output
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8") == (tmp_path / "local.tsv").read_text(encoding="utf-8")


def test_an_actors_warnings_reach_the_user_as_the_local_engines_do_even_with_q(tmp_path, local_ray,
                                                                               two_component_pipeline):
    source = tmp_path / "notes.jsonl"
    rows = [{"id": "note-es", "text": "El paciente presenta miocarditis aguda.", "lang": "es"},
            {"id": "note-en", "text": "The patient has asthma.", "lang": "en"}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    args = [str(source), "--model", str(two_component_pipeline), "--lang-column", "lang", "-q"]
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[1:]])
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "ray.tsv"), *args[1:], "--engine", "ray"])
    assert (local.exit_code, result.exit_code) == (0, 0), result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [line for line in local.stderr.splitlines() if line.startswith("warning:")]
    assert warned == ["warning: note-en is in en, which the disease component(s) have no head for; annotated by "
                      "family only"]
    assert "RayDeprecationWarning" not in result.stderr
    assert (tmp_path / "ray.tsv").read_text(encoding="utf-8") == (tmp_path / "local.tsv").read_text(encoding="utf-8")


CHAIN = ["--cpu-workers", "1", "--cpus-per-worker", "0.2"]  # five pools (CPU, device, CPU, device, CPU) fit 2 CPUs


def test_the_cpu_to_device_chain_gives_the_rows_and_messages_of_one_process(tmp_path, local_ray,
                                                                            two_component_pipeline):
    """``--cpu-workers`` under Ray: CPU actors tokenize and prepare windows, device actors run
    each component's network (the windows of several chunks together), CPU actors write the
    spans, qualify them and make the rows; a table with a malformed line, a repeated id and a
    language only one component serves."""
    source = tmp_path / "notes.jsonl"
    rows = [{"id": name, "text": text, "lang": name.split("-")[1]} for name, text in NOTES.items()]
    rows.insert(1, {"id": "MultiClinNER-es-test-disease-00001", "text": "otra vez", "lang": "es"})
    rows.append({"id": "note-en", "text": "The patient has asthma.", "lang": "en"})
    rows.append({"id": "note-negated", "text": "El paciente presenta diabetes . Sin neumonía .", "lang": "es"})
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines.insert(3, '{"id": "cortada", "text": "sin')
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    args = [str(source), "--model", str(two_component_pipeline), "--lang-column", "lang", "--context-columns",
            "--with-scores", "--batch-size", "2", "-q"]
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[1:]])
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "chain.tsv"), *args[1:], "--engine", "ray",
                                      *CHAIN])
    assert (local.exit_code, result.exit_code) == (1, 1), result.output
    said = [line for line in result.stderr.splitlines() if line.startswith(("error:", "warning:"))]
    assert said == [line for line in local.stderr.splitlines() if line.startswith(("error:", "warning:"))]
    assert len(said) == 3 and "annotated by family only" in said[0], said
    written = (tmp_path / "chain.tsv").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.tsv").read_text(encoding="utf-8")
    assert all(text in written for text in ("miocarditis aguda", "scompenso", "infarct acut", "\ttrue"))


def test_a_device_actor_killed_mid_job_in_the_chain_loses_nothing(tmp_path, local_ray, monkeypatch,
                                                                  trained_checkpoint, tiny_base_model):
    source = tmp_path / "notes.parquet"
    rows = [{"id": f"nota-{n:02d}", "text": text} for n, text in enumerate(
        ["El paciente presenta miocarditis aguda y dolor.", "La paciente presenta neumonía y diabetes."] * 12)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    marks = tmp_path / "marks"
    monkeypatch.setattr(engine, "DEVICE_CHUNKS", 1)
    monkeypatch.setattr(engine, "_DeviceStep", marking(engine._DeviceStep, marks))
    watcher, killed = kill_in_the_second_batch(marks)
    args = [str(source), "--lang", "es", "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model),
            "--batch-size", "2", "--with-scores"]
    result = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "chain.tsv"), *args[1:], "--engine", "ray",
                                      *CHAIN])
    watcher.join()
    assert result.exit_code == 0, result.output
    assert killed and {int(name.split("-")[0]) for name in os.listdir(marks)} - set(killed), "no actor took over"
    local = CliRunner().invoke(app, ["predict", args[0], str(tmp_path / "local.tsv"), *args[1:]])
    assert local.exit_code == 0, local.output
    written = (tmp_path / "chain.tsv").read_text(encoding="utf-8")
    assert written == (tmp_path / "local.tsv").read_text(encoding="utf-8")
    assert written.count("miocarditis aguda") == 12 and written.count("neumonía") == 12


class FakeRay:
    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


def test_a_chain_whose_actors_cannot_all_start_on_this_machine_is_refused_not_left_waiting():
    with pytest.raises(engine.UsageError, match=r"need 4 CPUs \(3 pool\(s\) of --cpus-per-worker 1, and one for "
                                                r"cutting the input into batches\), this machine's Ray has 2; lower "
                                                r"--cpus-per-worker to 0.33 or less"):
        engine._check_resources(FakeRay(CPU=2.0), 3, 1.0, 0.0)
    with pytest.raises(engine.UsageError, match=r"--gpus-per-worker 1, but this machine's Ray has 0 GPUs"):
        engine._check_resources(FakeRay(CPU=16.0), 3, 1.0, 1.0)
    engine._check_resources(FakeRay(CPU=2.0, GPU=1.0), 3, 0.25, 1.0)
