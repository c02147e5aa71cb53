"""Layers that do one job: typer stays in the CLI. ``batch``, ``run`` and the engines raise the
package's errors, which only the CLI turns into messages and exit codes."""

import pickle
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.errors import RunError, UsageError

WITHOUT_TYPER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import spacy  # spaCy's own CLI imports typer: it stays, where spaCy holds it
    for name in [n for n in sys.modules if n == "typer" or n.startswith("typer.")]:
        sys.modules[name] = None  # from here on, "import typer" fails as where it is not installed

    from dt4h_spacy.batch import Pipelines
    from dt4h_spacy.engines.local import local_engine
    import dt4h_spacy.engines.ray
    from dt4h_spacy import annotate_table
    from dt4h_spacy.errors import RunError, UsageError
    from dt4h_spacy.io.sources import Source
    from dt4h_spacy.io.tables import Columns
    from dt4h_spacy.run import run_job

    root, checkpoint, base = map(Path, sys.argv[1:4])
    notes = root / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "text": "El paciente presenta miocarditis aguda y dolor."}) + "\\n",
                     encoding="utf-8")
    source = Source.open(notes, Columns())
    pipelines = Pipelines("es", checkpoint=str(checkpoint), base_model=str(base))
    outcome = run_job(source, root / "out.jsonl", ".jsonl", local_engine(pipelines), {})
    print("mentions", outcome.mentions, [json.loads(line)["text"] for line in open(root / "out.jsonl")])
    print("annotate_table", annotate_table(notes, pipelines.load()).column("text").to_pylist())
    try:
        run_job(source, root / "out.html", ".html", local_engine(pipelines), {}, resume=True)
    except UsageError as err:
        print("usage", err.option)
    try:
        Pipelines("es", checkpoint=str(root / "missing.pt"), base_model=str(base)).load()
    except RunError as err:
        print("run", err.exit_code)
""")


def test_the_engines_run_job_and_report_bad_options_without_typer(tmp_path, trained_checkpoint, tiny_base_model):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TYPER, str(tmp_path), str(trained_checkpoint),
                             str(tiny_base_model)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["mentions 1 ['miocarditis aguda']", "annotate_table ['miocarditis aguda']",
                                              "usage --resume", "run 2"]


def test_the_package_errors_keep_their_option_and_exit_code_across_processes():
    """Ray sends an actor's exception to the driver pickled; the CLI needs both fields."""
    usage = pickle.loads(pickle.dumps(UsageError("bad", option="--lang")))
    run = pickle.loads(pickle.dumps(RunError("stopped", 130)))
    assert (str(usage), usage.option, str(run), run.exit_code) == ("bad", "--lang", "stopped", 130)


def test_serve_reports_a_model_that_cannot_load_in_one_line(tmp_path, tiny_base_model):
    """Loading the model raises RunError inside uvicorn's app factory; the command says it
    as predict does (exit code 2), not as a traceback."""
    result = CliRunner().invoke(app, ["serve", "--checkpoint", str(tmp_path / "missing.pt"), "--base-model",
                                      str(tiny_base_model), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: Checkpoint not found: {tmp_path / 'missing.pt'} is neither an "
                                          "existing file nor a Hugging Face repo id (owner/name)."]
