"""Faults: bad configs and checkpoints get one clear error; the batch command survives bad
files, huge files and Ctrl-C without losing good results or leaving a partial output.

(Checkpoint faults already covered by test_checkpoint.py are not repeated here.)
"""

import builtins
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List

import numpy
import pytest
import torch
from typer.testing import CliRunner

from dt4h_spacy import CheckpointError, textfiles
from dt4h_spacy.cli import app
from dt4h_spacy.io.records import span_mention
from dt4h_spacy.textfiles import read_text
from dt4h_spacy.tsv import Mention, read_mentions
from dt4h_spacy.windows import EncodedWords, make_windows


def load(make_nlp, **config):
    return make_nlp("es", **config).get_pipe("dt4h_disease").tagger


# ---------------------------------------------------------------- checkpoints and configs


def test_empty_checkpoint_file_says_the_copy_is_incomplete(make_nlp, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\).*fetch it again"):
        load(make_nlp, checkpoint=tmp_path / "empty.pt")


def test_head_without_bias_is_named(make_nlp, tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    del state["classifiers.disease_it_ner.bias"]
    torch.save(state, tmp_path / "nobias.pt")
    with pytest.raises(CheckpointError, match="Head 'disease_it_ner' is incomplete: it needs both weight and bias"):
        load(make_nlp, checkpoint=tmp_path / "nobias.pt")


@pytest.mark.parametrize("labels, message", [
    (["DISEASE", "O", "I-DISEASE"], "Label 'DISEASE' is not BIO"),
    (["B-DISEASE", "I-DISEASE", "I-DISEASE"], "Labels must be unique"),
    (["B-DISEASE", "I-DISEASE", "B-SYMPTOM"], "Labels must include 'O'"),  # was: tuple.index(x) mid-batch
])
def test_labels_config_errors_name_the_rule(make_nlp, labels, message):
    with pytest.raises(ValueError, match=message):
        load(make_nlp, labels=labels)


@pytest.mark.parametrize("config, message", [
    ({"max_length": 32, "stride": 30}, r"stride \(30\) must be at least 0 and smaller than max_length - 2 \(30\)"),
    ({"stride": 600}, r"stride \(600\) must be .* smaller than max_length - 2 \(510\)"),
    ({"stride": -1}, r"stride \(-1\) must be at least 0"),
    ({"max_length": 2, "stride": 0}, r"max_length \(2\) at least 3"),
    ({"max_batch_subwords": 0}, "max_batch_subwords must be at least 1"),
])
def test_window_settings_that_cannot_work_are_refused_at_add_pipe(make_nlp, config, message):
    """Not on the first document: a bad config fails where it is written."""
    with pytest.raises(ValueError, match=message):
        make_nlp("es", **config)


def test_folder_with_several_checkpoints_asks_for_one(make_nlp, tmp_path, tiny_checkpoint):
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(tiny_checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match=r"holds 2 checkpoint files \(\['a.pt', 'b.pt'\]\); pass the path of one"):
        load(make_nlp, checkpoint=tmp_path)


# ------------------------------------------------------------------------- long inputs


def test_window_planning_memory_is_linear_in_the_document():
    """Regression: choosing each word's window built a windows x words matrix (5 MB file: OOM)."""
    n = 60_000  # the old code peaked near 400 MB here; a 5 MB file needed tens of GB
    encoded = EncodedWords(numpy.arange(n) % 500 + 5, numpy.arange(n))
    tracemalloc.start()
    try:
        windows = make_windows([encoded], 512, 128, 0, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30e6
    assert numpy.array_equal(numpy.sort(numpy.concatenate([w.words for w in windows])), numpy.arange(n))


# ------------------------------------------------------------------- the batch command

GOOD = {
    "nota1.txt": "Paciente con miocarditis aguda y diabetes mellitus.\r\nSin fiebre.",
    "nota2.txt": "Antecedentes: neumonía (2019);\u00a0dolor torácico 😀 hoy.",
    "vacía.txt": "",
}


def five_megabytes() -> str:
    """A long record: ~40k words spread over 5 MB, the last ones after the 5,000,000th character."""
    line = "el paciente presenta miocarditis aguda con diabetes y dolor hoy.\n"
    padding = "\t" + " " * 400 + "\n"
    text = (line * 3 + padding) * 2400
    return text + " " * (5_000_000 - len(text)) + "\n" + line * 3


@pytest.fixture
def faulty_folder(tmp_path) -> Path:
    """Good files next to one of every kind of bad entry."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in GOOD.items():
        (folder / name).write_bytes(text.encode())
    (folder / "grande.txt").write_text(five_megabytes(), encoding="utf-8")
    (folder / "latin1.txt").write_bytes("Paciente con neumonía".encode("latin-1"))
    (folder / "locked.txt").write_text("Paciente con asma.")  # made unreadable by the test
    (folder / "x.txt").mkdir()  # a folder, not a document: neither read nor reported
    (folder / "x.txt" / "dentro.txt").write_text("diabetes")
    os.symlink("loop.txt", folder / "loop.txt")  # a symlink that points at itself
    os.symlink(folder, folder / "x.txt" / "back")  # a folder loop, seen only with --recursive
    os.mkfifo(folder / "pipe.txt")  # opening it would block forever
    if Path("/proc/self/mem").exists():
        os.symlink("/proc/self/mem", folder / "io-error.txt")  # a regular file whose read() fails (EIO), even for root
    return folder


def deny(monkeypatch, path: Path) -> None:
    """``chmod 000`` cannot stop root, so make the OS answer EACCES for ``path`` as it would."""

    def guarded_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(textfiles, "open", guarded_open, raising=False)


def expected_mentions(make_nlp, folder: Path, names) -> List[Mention]:
    nlp = make_nlp("es")
    nlp.max_length = 10**8
    rows = []
    for name in names:
        doc = nlp(read_text(folder / name))
        rows += [span_mention(name[:-4], e) for e in doc.ents]
    return sorted(rows, key=lambda m: (m.filename, m.start, m.end))


@pytest.mark.parametrize("recursive", [False, True])
def test_predict_keeps_every_good_file_and_reports_every_bad_one(
    faulty_folder, tmp_path, make_nlp, tiny_checkpoint, tiny_base_model, monkeypatch, recursive
):
    deny(monkeypatch, faulty_folder / "locked.txt")
    out = tmp_path / "out.tsv"
    args = ["predict", faulty_folder, out, "--lang", "es", "--checkpoint", tiny_checkpoint,
            "--base-model", tiny_base_model] + (["--recursive"] if recursive else [])
    result = CliRunner().invoke(app, [str(a) for a in args])

    assert result.exit_code == 1, result.output
    reasons: Dict[str, str] = {
        "latin1.txt": "not valid UTF-8 (byte 0xed at byte offset 19)",
        "locked.txt": "cannot read (Permission denied)",
        "loop.txt": "cannot read (Too many levels of symbolic links)",
        "pipe.txt": "not a regular file",
    }
    if (faulty_folder / "io-error.txt").is_symlink():
        reasons["io-error.txt"] = "cannot read (Input/output error)"
    for name, reason in reasons.items():
        assert f"error: skipped {faulty_folder / name}: {reason}" in result.stderr
    assert result.stderr.count("error: skipped") == len(reasons)
    good = sorted(GOOD) + ["grande.txt"]
    assert f"{len(good) + recursive} files read, {len(reasons)} failed" in result.stdout

    rows = read_mentions(out)
    assert [r for r in rows if r.filename != "dentro"] == expected_mentions(make_nlp, faulty_folder, good)
    assert {r.filename for r in rows} >= {"nota1", "nota2", "grande"}
    assert max(r.end for r in rows if r.filename == "grande") > 5_000_000
    assert sorted(os.listdir(tmp_path)) == ["in", "out.tsv", "out.tsv.job.json"]


def test_text_over_a_mixed_pipelines_length_limit_is_one_failure(tmp_path, make_nlp):
    """A --model pipeline with other components keeps spaCy's limit: the long file is reported."""
    nlp = make_nlp("es")
    nlp.add_pipe("sentencizer", first=True)
    nlp.to_disk(tmp_path / "pipeline")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "corta.txt").write_text(GOOD["nota1.txt"])
    (folder / "larga.txt").write_text("asma " * 200_001)
    out = tmp_path / "out.tsv"
    result = CliRunner().invoke(app, ["predict", str(folder), str(out), "--model", str(tmp_path / "pipeline"),
                                      "--lang", "es"])
    assert result.exit_code == 1, result.output
    assert f"error: skipped {folder / 'larga.txt'}: [E088] Text of length 1000005 exceeds maximum" in result.stderr
    assert "1 files read, 1 failed" in result.stdout
    assert {r.filename for r in read_mentions(out)} == {"corta"}


# ------------------------------------------------------------------------------ Ctrl-C

# Runs the real CLI in its own process and stops at a chosen stage until a signal arrives,
# so the SIGINT lands at exactly that stage on every run. Terminals deliver SIGINT to a
# Python that raises KeyboardInterrupt; a test runner may have set it to "ignore".
STOP_AT_STAGE = """
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
marker, stage = Path(sys.argv.pop(1)), sys.argv.pop(1)

def stop():
    marker.touch()
    time.sleep(120)

if stage == "annotating":
    from dt4h_spacy.component import DiseaseRecognizer
    annotate = DiseaseRecognizer.set_annotations
    DiseaseRecognizer.set_annotations = lambda self, docs, batch: (annotate(self, docs, batch), stop())
else:  # writing: the output's temporary file is written, about to replace the target
    os.fsync = lambda fd: stop()
from dt4h_spacy.cli import main
main()
"""


def test_ctrl_c_leaves_no_partial_output(tmp_path, tiny_checkpoint, tiny_base_model):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        (folder / f"nota{i:02}.txt").write_text("Paciente con miocarditis aguda y diabetes mellitus.\n")
    runs = {}
    for stage in ("annotating", "writing"):
        out_dir = tmp_path / stage
        out_dir.mkdir()
        if stage == "writing":
            (out_dir / "out.tsv").write_text("previous complete output\n")
        command = [sys.executable, "-c", STOP_AT_STAGE, str(tmp_path / f"{stage}.marker"), stage, "predict",
                   str(folder), str(out_dir / "out.tsv"), "--lang", "es", "--batch-size", "4",
                   "--checkpoint", str(tiny_checkpoint), "--base-model", str(tiny_base_model)]
        runs[stage] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for stage, process in runs.items():
        marker = tmp_path / f"{stage}.marker"
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            process.kill()
            pytest.fail(f"{stage}: the run never reached the stage: {process.communicate()}")
        if stage == "writing":
            assert [n for n in os.listdir(tmp_path / stage) if n.endswith(".tmp")], "not interrupted mid-write"
        process.send_signal(signal.SIGINT)
    for stage, process in runs.items():
        try:
            _, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"{stage}: still running 300 s after Ctrl-C: {process.communicate()}")
        assert process.returncode == 130, stderr
        assert "interrupted;" in stderr and "was not written" in stderr
    assert os.listdir(tmp_path / "annotating") == []
    assert os.listdir(tmp_path / "writing") == ["out.tsv"]
    assert (tmp_path / "writing" / "out.tsv").read_text() == "previous complete output\n"
