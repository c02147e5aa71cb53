"""A device without memory for a batch: the batch again in halves, or the run stopped with its
committed parts kept for ``--resume``. CUDA's out-of-memory error is raised by a stand-in of
the network here (no GPU in CI); everything around it is the package's real path."""

import numpy
import pytest
import torch
from typer.testing import CliRunner

from dt4h_spacy import stages
from dt4h_spacy.cli import app
from dt4h_spacy.errors import DeviceMemoryError
from dt4h_spacy.inference import WordTagger
from dt4h_spacy.testing import clinical_case

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)"


def limit_windows(monkeypatch, most: int, calls: list) -> None:
    """Every forward pass of more than ``most`` windows fails as CUDA fails (``most=0``: all)."""
    forward = WordTagger._word_logits

    def fitting(self, batch):
        calls.append(len(batch.input_ids))
        if len(batch.input_ids) > most:
            raise torch.cuda.OutOfMemoryError(OOM)
        return forward(self, batch)

    monkeypatch.setattr(WordTagger, "_word_logits", fitting)


def probabilities(nlp, texts):
    component = nlp.get_pipe("dt4h_disease")
    docs = [nlp.make_doc(text) for text in texts]
    prepared = component.preprocess(docs, [("disease_es_ner",)] * len(docs))
    component.tagger.ready()
    return stages.run(component.tagger, prepared)


def test_a_batch_without_device_memory_runs_again_in_halves_with_the_same_probabilities(
        make_nlp, trained_checkpoint, monkeypatch):
    texts = [clinical_case(seed, paragraphs=4) for seed in range(6)]
    one_by_one = probabilities(make_nlp("es", checkpoint=trained_checkpoint, max_length=40, stride=8, batch_size=1),
                               texts)
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=40, stride=8, batch_size=8)
    calls: list = []
    limit_windows(monkeypatch, 1, calls)
    shrunk = r"ran out of memory on a batch of 8 windows .* batches now hold at most 4 window"
    with pytest.warns(RuntimeWarning, match=shrunk):
        got = probabilities(nlp, texts)
    assert all(numpy.array_equal(a[k], b[k]) for a, b in zip(got, one_by_one) for k in a)
    assert calls[0] == 8 and max(calls[1:]) <= 4, calls
    assert nlp.get_pipe("dt4h_disease").tagger.batch_size == 1  # halved down to what fits


def test_one_window_without_device_memory_is_an_error_naming_the_way_out(make_nlp, trained_checkpoint, monkeypatch):
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=40, stride=8, batch_size=1)
    limit_windows(monkeypatch, 0, [])
    with pytest.raises(DeviceMemoryError, match=r"has no memory for one window of \d+ subwords \(CUDA out of "
                                                r"memory\. Tried to allocate 2\.00 GiB .*\); free the device .* "
                                                r"lower max_length"):
        probabilities(nlp, [clinical_case(0)])


def test_run_sets_batches_across_sets_and_gives_each_set_its_own_probabilities(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint, max_length=40, stride=8, batch_size=1)
    component = nlp.get_pipe("dt4h_disease")
    sets = []
    for first in (0, 3, 5):
        docs = [nlp.make_doc(clinical_case(seed, paragraphs=2)) for seed in range(first, first + 3 - first % 2)]
        sets.append(component.preprocess(docs, [("disease_es_ner",)] * len(docs)))
    component.tagger.ready()
    together = stages.run_sets(component.tagger, [p.window_set for p in sets])
    apart = [stages.run(component.tagger, p) for p in sets]
    assert [len(s) for s in together] == [len(p.docs) for p in sets]
    assert all(numpy.array_equal(a[k], b[k]) for t, s in zip(together, apart) for a, b in zip(t, s) for k in a)


def test_a_run_stopped_by_device_memory_keeps_its_parts_and_resume_ends_it_exactly(
        tmp_path, trained_checkpoint, tiny_base_model, monkeypatch):
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(8):
        (folder / f"MultiClinNER-es-test-disease-{i:05d}.txt").write_text(clinical_case(i, 2), encoding="utf-8")
    args = [str(folder), str(tmp_path / "out.tsv"), "--checkpoint", str(trained_checkpoint), "--base-model",
            str(tiny_base_model), "--batch-size", "2", "--commit-every", "2", "--with-scores"]
    forward = WordTagger._word_logits
    passes: list = []

    def failing_after_a_while(self, batch):  # the device fills up (another job) after some batches
        passes.append(1)
        if len(passes) > 4:
            raise torch.cuda.OutOfMemoryError(OOM)
        return forward(self, batch)

    monkeypatch.setattr(WordTagger, "_word_logits", failing_after_a_while)
    stopped = CliRunner().invoke(app, ["predict", *args])
    assert stopped.exit_code == 1, stopped.output
    assert stopped.stderr.splitlines()[-1].startswith("error: the cpu device has no memory for one window of ")
    assert stopped.stderr.splitlines()[-1].endswith(
        f"; the documents done are kept in {tmp_path / 'out.tsv.parts'}: run again with --resume to continue")
    assert (tmp_path / "out.tsv.parts").is_dir() and not (tmp_path / "out.tsv").exists()
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, ["predict", *args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: " in resumed.stderr and "resuming: 0 of" not in resumed.stderr
    whole = CliRunner().invoke(app, ["predict", *args[:1], str(tmp_path / "whole.tsv"), *args[2:]])
    assert whole.exit_code == 0, whole.output
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8") == (tmp_path / "whole.tsv").read_text(encoding="utf-8")
