"""One pipeline, many callers: threads share the loaded network, processes get a copy.

The component is meant to be thread-safe: the network loads once under a lock, and
prediction keeps no state between calls. These tests check both halves.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional, Tuple

import pytest

from dt4h_spacy.component import DiseaseRecognizer

TEXTS = [
    "Paciente con miocarditis aguda y fibrilación auricular.",
    "Antecedentes de diabetes mellitus tipo 2,\nhipertensión arterial y dislipemia.",
    "Se diagnosticó insuficiencia\r\ncardíaca congestiva con disnea de esfuerzo.",
    "",
    "«Dolor torácico» - 3 episodios [2019]; ¿infarto? ¡No!",
] * 8


def entities(docs) -> List[List[Tuple[int, int, str, float]]]:
    return [[(e.start_char, e.end_char, e.label_, round(e._.dt4h_score, 4)) for e in d.ents] for d in docs]


def test_two_threads_on_one_pipeline_match_one_thread(make_nlp):
    nlp = make_nlp("es", batch_size=2)
    expected = entities(nlp.pipe(TEXTS, batch_size=3))
    assert any(expected)
    fresh = make_nlp("es", batch_size=2)  # both threads race to load the network, too
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: entities(fresh.pipe(TEXTS, batch_size=3)), range(4)))
    assert results == [expected] * 4


class ObservedRecognizer(DiseaseRecognizer):
    """Runs ``probe`` in another thread the moment the loaded network is published.

    A thread that sees the network must also see everything loaded with it; checking at
    exactly that moment makes an ordering bug fail every time instead of once in a while.
    """

    probe: Any = None

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "_tagger" and value is not None and type(self).probe is not None:
            thread = threading.Thread(target=type(self).probe)
            thread.start()
            thread.join()


def test_a_thread_that_sees_the_network_can_use_it(make_nlp, monkeypatch):
    nlp = make_nlp("es")
    component = nlp.get_pipe("dt4h_disease")
    component.__class__ = ObservedRecognizer
    errors: List[Optional[BaseException]] = []

    def probe() -> None:
        try:
            component(nlp.make_doc("Paciente con miocarditis aguda."))
            errors.append(None)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    monkeypatch.setattr(ObservedRecognizer, "probe", staticmethod(probe))
    component.initialize()
    assert errors == [None]


# Run in its own process so that a deadlock in forked workers fails after a timeout instead
# of hanging the suite. It first annotates in-process, as a real caller would: forking after
# torch has used its thread pool is the case that can deadlock.
N_PROCESS = """
import json, sys
import spacy
import dt4h_spacy  # noqa: F401 - registers the factory
checkpoint, base_model = sys.argv[1:3]
nlp = spacy.blank("es")
nlp.add_pipe("dt4h_disease", config={"checkpoint": checkpoint, "base_model": base_model})
texts = json.loads(sys.stdin.read())
def ents(docs):
    return [[(e.start_char, e.end_char, e.label_, e._.dt4h_score) for e in d.ents] for d in docs]
print(json.dumps([ents(nlp.pipe(texts)), ents(nlp.pipe(texts, n_process=2, batch_size=4))]))
"""


def test_n_process_two_matches_one_process(tiny_checkpoint, tiny_base_model):
    command = [sys.executable, "-c", N_PROCESS, str(tiny_checkpoint), str(tiny_base_model)]
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}  # as most users run it
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env=env)
    try:
        stdout, stderr = process.communicate(json.dumps(TEXTS), timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too
        process.communicate()
        pytest.fail("nlp.pipe(n_process=2) hung: the forked workers deadlocked")
    assert process.returncode == 0, stderr
    assert "huggingface/tokenizers" not in stderr  # the fork warning of older tokenizers releases
    one, two = json.loads(stdout)
    assert any(one)
    assert [[e[:3] for e in d] for d in two] == [[e[:3] for e in d] for d in one]
    assert [e[3] for d in two for e in d] == pytest.approx([e[3] for d in one for e in d], abs=1e-5)


@pytest.mark.parametrize("user_setting", [None, "true"])
def test_forked_workers_tokenize_alone_unless_the_user_chose(monkeypatch, user_setting):
    """Older tokenizers releases (0.19 does, 0.23 no longer) print a fork warning per worker
    unless TOKENIZERS_PARALLELISM is set before the fork, so the variable itself is checked."""
    import dt4h_spacy.inference  # noqa: F401 - registers the at-fork hooks

    if user_setting is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", user_setting)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only reports what it sees
        os.write(write, os.environ.get("TOKENIZERS_PARALLELISM", "unset").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == (user_setting or "false")
    assert os.environ.get("TOKENIZERS_PARALLELISM") == user_setting  # the parent keeps its own setting
