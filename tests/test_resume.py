"""``predict --resume``: a run killed with SIGKILL after some parts were committed, then
resumed, ends with exactly the rows of an uninterrupted run; leftovers are never mixed in
without it."""

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dt4h_spacy.batch import Pipelines
from dt4h_spacy.cli import app
from dt4h_spacy.io import parts
from dt4h_spacy.io.parts import Parts
from dt4h_spacy.tsv import Mention, read_mentions, sort_key

SENTENCES = ("El paciente presenta miocarditis aguda y dolor.", "Hoy la paciente presenta diabetes, con neumonía.",
             "La paciente presenta dolor hoy.")
N_NOTES = 24

def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    """A JSONL table of clinical-case-like notes, several paragraphs each."""
    path = tmp_path_factory.mktemp("notes") / "notes.jsonl"
    rows = [{"id": f"nota-{n:03d}", "text": "\n\n".join(SENTENCES[(n + k) % 3] for k in range(n % 4 + 1))}
            for n in range(N_NOTES)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_args(trained_checkpoint, tiny_base_model):
    return ["--lang", "es", "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, notes, model_args) -> str:
    out = tmp_path_factory.mktemp("whole") / "out.tsv"
    result = run("predict", notes, out, *model_args, "--with-scores")
    assert result.exit_code == 0, result.output
    rows = read_mentions(out)
    assert {m.text for m in rows} == {"miocarditis aguda", "diabetes", "neumonía"}
    assert len({m.filename for m in rows}) == N_NOTES - 2  # two notes have none: they must count as done too
    return out.read_text(encoding="utf-8")


def test_a_run_killed_after_two_parts_resumes_to_the_rows_of_an_uninterrupted_run(
        tmp_path, notes, model_args, uninterrupted, kill_after_two_parts):
    out = tmp_path / "out.tsv"
    kill_after_two_parts(["predict", notes, out, *model_args, "--with-scores", "--commit-every", "3", "--batch-size", "2"],
                         tmp_path / "two-parts.marker")
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "out.tsv.parts").iterdir()) == [
        "job.json", "part-00000001.jsonl", "part-00000002.jsonl"]

    refused = run("predict", notes, out, *model_args, "--with-scores")
    assert refused.exit_code == 2 and "pass --resume to continue it" in refused.output and not out.exists()
    assert "Invalid value for OUTPUT:" in " ".join(refused.output.split())  # not "for --resume": none was given
    other = run("predict", notes, out, *model_args, "--resume")
    assert other.exit_code == 2 and "was written with other settings (with_scores)" in other.output

    result = run("predict", notes, out, *model_args, "--with-scores", "--resume", "--commit-every", "3")
    assert result.exit_code == 0, result.output
    assert f"resuming: 6 of {N_NOTES} documents already written" in result.stderr
    assert f"{N_NOTES} documents read, 0 failed" in result.stdout
    assert out.read_text(encoding="utf-8") == uninterrupted  # none lost, none twice, same order and scores
    assert sorted(os.listdir(tmp_path)) == ["out.tsv", "out.tsv.job.json", "two-parts.marker"]


def test_the_final_merge_is_sorted_in_passes_of_few_files(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "FAN_IN", 2)
    store = Parts(tmp_path / "out.tsv", {"job": 1})
    assert store.open(resume=False) == set()
    committed = []
    for n in range(7):
        rows = [Mention(f"doc-{(n * 5) % 7}", "DISEASE", start, start + 3, "x\ty\n\"z\"", 0.5) for start in (9, 2)]
        store.commit([f"doc-{(n * 5) % 7}"], rows)
        committed += rows
    pending = [Mention("doc-0", "DISEASE", 0, 1, "a", None)]
    assert list(store.merged(pending)) == sorted(committed + pending, key=sort_key)
    assert Parts(tmp_path / "out.tsv", {"job": 1}).open(resume=True) == {f"doc-{n}" for n in range(7)}


def test_parts_keep_the_qualifiers_and_read_parts_written_before_them(tmp_path):
    store = Parts(tmp_path / "out.jsonl", {"job": 1})
    store.open(resume=False)
    qualified = Mention("doc-1", "DISEASE", 0, 4, "asma", 0.9, negated=True, uncertain=False, family=False)
    store.commit(["doc-1"], [qualified])
    older = store.folder / "part-00000002.jsonl"
    older.write_text(json.dumps({"documents": ["doc-2"]}) + "\n" + json.dumps(["doc-2", "DISEASE", 1, 2, "a", 0.5]) + "\n",
                     encoding="utf-8")
    store.paths.append(older)
    merged = list(store.merged([]))
    assert [m.values for m in merged] == [qualified.values, Mention("doc-2", "DISEASE", 1, 2, "a", 0.5).values]


def test_resume_knows_input_and_model_by_content_not_by_the_path_given(tmp_path, notes, model_args, uninterrupted,
                                                                       monkeypatch):
    source = tmp_path / "extract.jsonl"
    shutil.copy(notes, source)
    checkpoint = Path(model_args[model_args.index("--checkpoint") + 1])
    relative = [*model_args]
    relative[relative.index("--checkpoint") + 1] = os.path.relpath(checkpoint, tmp_path)
    commit = Parts.commit

    def commit_then_stop(self, documents, mentions, *args, **kwargs):
        commit(self, documents, mentions, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Parts, "commit", commit_then_stop)
    out = tmp_path / "out.tsv"
    assert run("predict", source.name, out.name, *relative, "--with-scores", "--commit-every", "5").exit_code == 130
    monkeypatch.setattr(Parts, "commit", commit)

    shutil.copytree(tmp_path / "out.tsv.parts", tmp_path / "saved.parts")

    result = run("predict", source.resolve(), out.resolve(), *model_args, "--with-scores", "--resume")  # absolute
    assert result.exit_code == 0, result.output
    assert "resuming: 5 of" in result.stderr
    assert out.read_text(encoding="utf-8") == uninterrupted

    (tmp_path / "saved.parts").rename(tmp_path / "out.tsv.parts")  # the interrupted run again, then
    source.write_text(json.dumps({"id": "nota-000", "text": "otro extracto"}) + "\n", encoding="utf-8")  # regenerated
    refused = run("predict", source, out, *model_args, "--with-scores", "--resume")
    assert refused.exit_code == 2 and out.read_text(encoding="utf-8") == uninterrupted
    assert "has changed since the run that wrote" in refused.output
    assert "a regenerated extract?" in " ".join(refused.output.split())


def test_resume_of_a_finished_run_annotates_nothing_and_never_replaces_its_output(tmp_path, notes, model_args,
                                                                                 uninterrupted, monkeypatch):
    source, out = tmp_path / "extract.jsonl", tmp_path / "out.tsv"
    shutil.copy(notes, source)
    assert run("predict", source, out, *model_args, "--with-scores").exit_code == 0
    assert out.read_text(encoding="utf-8") == uninterrupted
    assert not (tmp_path / "out.tsv.parts").exists() and (tmp_path / "out.tsv.job.json").exists()
    written = out.stat().st_mtime_ns

    def no_model(self):
        raise AssertionError("the model was loaded: the finished job was annotated again")

    with monkeypatch.context() as patched:
        patched.setattr(Pipelines, "load", no_model)
        again = run("predict", source, out, *model_args, "--with-scores", "--resume")
        assert again.exit_code == 0, again.output
        assert f"already holds this job, finished ({N_NOTES} documents read, 0 failed" in again.stderr
        assert f"{N_NOTES} documents read, 0 failed" in again.stdout and "already in" in again.stdout
        assert out.stat().st_mtime_ns == written

        def refused(*options, because):
            result = run("predict", source, out, *model_args, *options, "--resume")
            message = " ".join(result.output.split())
            assert result.exit_code == 2 and because in message and "run without --resume" in message, result.output
            assert out.read_text(encoding="utf-8") == uninterrupted

        refused("--with-scores", "--min-score", "0.5", because="with other settings (min_score)")
        refused(because="with other settings (with_scores)")
        refused("--with-scores", "--context-columns", because="with other settings (context, with_context)")
        source.write_text(notes.read_text(encoding="utf-8") + json.dumps({"id": "extra", "text": "x"}) + "\n",
                          encoding="utf-8")
        refused("--with-scores", because="has changed since the run that wrote")
        shutil.copy(notes, source)
        refused("--with-scores", because="has changed since the run that wrote")  # same bytes, a new time
    assert run("predict", source, out, *model_args, "--with-scores").exit_code == 0  # without --resume: replaced
    assert out.read_text(encoding="utf-8") == uninterrupted

    with monkeypatch.context() as patched:
        patched.setattr(Pipelines, "load", no_model)
        assert run("predict", source, out, *model_args, "--with-scores", "--resume").exit_code == 0
        out.write_text(uninterrupted + "nota-999\tDISEASE\t0\t1\tx\t0.9\n", encoding="utf-8")
        edited = run("predict", source, out, *model_args, "--with-scores", "--resume")
        assert edited.exit_code == 2 and f"{out} has changed since the run that wrote it" in " ".join(
            edited.output.split())
        (tmp_path / "out.tsv.job.json").unlink()
        unknown = run("predict", source, out, *model_args, "--with-scores", "--resume")
        assert unknown.exit_code == 2 and "saying which run wrote it" in " ".join(unknown.output.split())
    assert out.read_text(encoding="utf-8").endswith("nota-999\tDISEASE\t0\t1\tx\t0.9\n")  # never replaced


def test_resume_of_a_finished_run_with_failures_reports_them_again(tmp_path, notes, model_args, monkeypatch):
    source, out = tmp_path / "extract.jsonl", tmp_path / "out.jsonl"
    source.write_text(notes.read_text(encoding="utf-8") + '{"id": "sin-texto"}\n', encoding="utf-8")
    first = run("predict", source, out, *model_args)
    assert first.exit_code == 1 and "missing text" in first.stderr
    monkeypatch.setattr(Pipelines, "load", lambda self: pytest.fail("annotated again"))
    again = run("predict", source, out, *model_args, "--resume")
    assert again.exit_code == 1, again.output
    assert f"row {N_NOTES + 1}: missing text" in again.stderr and f"{N_NOTES} documents read, 1 failed" in again.stdout
