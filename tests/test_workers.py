"""CPU stages in worker processes feeding the network in the main one (``--cpu-workers``).

Spawned workers import torch and load the pipeline, so each test here takes 20-40 s on
2 cores; they are few.
"""

import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import spacy
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.engines import steps, workers
from dt4h_spacy.engines.workers import load_on_cpu, pipe
from dt4h_spacy.errors import WorkerError
from dt4h_spacy.testing import clinical_case
from dt4h_spacy.tsv import read_mentions


def spans_of(docs):
    return [[(s.start, s.end, s.label_, s._.dt4h_score) for s in d.spans["dt4h"]] + [d.text] for d in docs]


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=48, stride=8, batch_size=4)
    nlp.add_pipe("dt4h_context")
    nlp.initialize()
    path = tmp_path_factory.mktemp("workers") / "pipeline"
    nlp.to_disk(path)
    return path


def test_workers_give_the_single_process_docs_in_input_order(saved_pipeline):
    texts = [clinical_case(seed, paragraphs=3 + seed % 4) for seed in range(30)] + ["", "diabetes", " \n"]
    nlp = spacy.load(saved_pipeline)
    expected = spans_of(nlp.pipe(texts, batch_size=3))  # the same docs share each forward pass
    load = functools.partial(spacy.load, saved_pipeline)
    got = list(pipe(load, texts, cpu_workers=2, batch_size=3))  # 11 chunks over 2 workers, out of step
    assert spans_of(got) == expected
    assert [[s._.is_negated for s in d.spans["dt4h"]] for d in got] == [[s._.is_negated for s in d.spans["dt4h"]]
                                                                     for d in nlp.pipe(texts, batch_size=3)]
    assert sum(len(d.spans["dt4h"]) for d in got) >= 30, "the trained model should find diseases"
    assert not multiprocessing.active_children(), "the workers are gone once the results are"


@pytest.fixture(scope="module")
def one_window_pipeline(tmp_path_factory, make_nlp, trained_checkpoint):
    """One window per forward pass (the CPU's default) and ``device = "auto"``, saved."""
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=48, stride=8, device="auto")
    nlp.add_pipe("dt4h_context")
    nlp.initialize()
    path = tmp_path_factory.mktemp("one_window") / "pipeline"
    nlp.to_disk(path)
    return path


def test_the_windows_of_chunks_waiting_together_are_batched_together_for_the_device(one_window_pipeline,
                                                                                     monkeypatch):
    """``merge`` (on by default where the network is on a GPU): the main process runs the
    windows of every chunk that waits for it in one batch plan. One window per pass keeps
    each window's result bit for bit, so the docs equal one process's."""
    texts = [clinical_case(seed, paragraphs=2 + seed % 3) for seed in range(16)]
    nlp = spacy.load(one_window_pipeline)
    expected = spans_of(nlp.pipe(texts, batch_size=2))
    sets_per_pass = []
    forward = steps.forward
    monkeypatch.setattr(steps, "forward", lambda *args: sets_per_pass.append(len(args[2])) or forward(*args))
    receive, gathered = workers._receive, []

    def gathering(readers, processes):
        """The first time, waits until two chunks ask for the network, as on a busy GPU."""
        got = receive(readers, processes)
        deadline = time.monotonic() + 120
        while not gathered and sum(m[0] == "forward" for m in got) < 2 and time.monotonic() < deadline:
            got += receive(readers, processes)
        gathered.append(True)
        return got

    monkeypatch.setattr(workers, "_receive", gathering)
    got = list(pipe(functools.partial(load_on_cpu, str(one_window_pipeline)), texts, cpu_workers=2, batch_size=2,
                    merge=True))
    assert spans_of(got) == expected
    assert max(sets_per_pass) >= 2 and sum(sets_per_pass) == 8, sets_per_pass  # 8 chunks, fewer passes


def test_a_workers_pipeline_that_would_put_its_network_on_a_gpu_is_refused_with_the_way_out(one_window_pipeline):
    with pytest.raises(WorkerError, match=r"CPU worker \d failed: ValueError: component 'dt4h_disease' would load its "
                                          r"network on 'auto' in every CPU worker.*load_on_cpu"):
        list(pipe(functools.partial(spacy.load, one_window_pipeline), ["Paciente con diabetes."], cpu_workers=1))


def test_a_worker_that_dies_is_reported_not_waited_on(saved_pipeline):
    texts = [clinical_case(seed, paragraphs=4) for seed in range(40)]
    results = pipe(functools.partial(spacy.load, saved_pipeline), texts, cpu_workers=2, batch_size=2)
    next(results)
    victim = next(p for p in multiprocessing.active_children() if p.name == "dt4h-cpu-worker-1")
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"CPU worker 1 \(pid \d+\) died with exit code -9"):
        list(results)
    assert not multiprocessing.active_children()


@pytest.fixture
def corpus(tmp_path):
    """Spanish and Italian case reports, and one file that does not decode."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(9):
        lang = ("es", "it")[i % 2]
        (folder / f"MultiClinNER-{lang}-test-disease-{i:05d}.txt").write_text(clinical_case(i, 4, lang), "utf-8")
    (folder / "MultiClinNER-es-test-disease-00099.txt").write_bytes(b"Paciente con \xff\xfe asma")
    return folder


def test_predict_cpu_workers_writes_the_rows_of_one_process(tmp_path, corpus, trained_checkpoint, tiny_base_model):
    """With workers in its own process, as a user runs it; the corpus holds one undecodable file (exit code 1)."""
    options = ["--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model), "--batch-size", "2"]
    single = CliRunner().invoke(app, ["predict", str(corpus), str(tmp_path / "one.tsv"), *options])
    assert single.exit_code == 1, single.output
    command = [sys.executable, "-m", "dt4h_spacy", "predict", str(corpus), str(tmp_path / "workers.tsv"), *options,
               "--cpu-workers", "2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "00099.txt: not valid UTF-8" in result.stderr, result.stderr
    rows = (tmp_path / "workers.tsv").read_text(encoding="utf-8")
    assert rows == (tmp_path / "one.tsv").read_text(encoding="utf-8")
    assert len(read_mentions(tmp_path / "workers.tsv")) > 10


def test_cpu_workers_refuse_the_authors_reading(tmp_path, corpus, tiny_checkpoint, tiny_base_model):
    result = CliRunner().invoke(app, ["predict", str(corpus), str(tmp_path / "o.tsv"), "--checkpoint",
                                      str(tiny_checkpoint), "--base-model", str(tiny_base_model), "--cpu-workers",
                                      "2", "--compat", "authors"])
    assert result.exit_code == 2 and "--cpu-workers runs the words reading" in result.output
