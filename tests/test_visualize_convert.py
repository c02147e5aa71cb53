"""``visualize`` and ``convert`` on tables, with predict's column options; ``convert --lang
auto/detect`` as predict routes; and no message of theirs suggests an option they reject."""

import argparse
import ast
import re
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
import spacy
import torch
import typer
from spacy.tokens import DocBin
from typer.testing import CliRunner

import dt4h_spacy
from dt4h_spacy.cli import app
from dt4h_spacy.tsv import Mention, format_mentions

ES = "La paciente presenta diabetes y neumonía desde hace meses, sin fiebre."
IT = "Il paziente presenta una cirrosi epatica e una polmonite da diversi mesi."
RO = "Pacientul prezintă pneumonie acută și diabet zaharat de câteva luni."


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def accepted(command: str) -> set:
    """Every option name the command takes (--help too)."""
    click_command = typer.main.get_command(app).commands[command]
    return {"--help"} | {name for param in click_command.params for name in param.opts if name.startswith("--")}


def assert_suggests_only_accepted_options(command: str, result) -> None:
    suggested = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.output))
    assert suggested, result.output  # the message names a way out
    assert suggested <= accepted(command), f"{command} rejects {suggested - accepted(command)}: {result.output}"


def mention(name: str, text: str, words: str, label: str = "DISEASE") -> Mention:
    start = text.index(words)
    return Mention(name, label, start, start + len(words), words)


# ----------------------------------------------------------------------------- visualize


def test_visualize_a_table_with_predicts_column_options(tmp_path, trained_checkpoint, tiny_base_model):
    table = tmp_path / "notes.csv"
    table.write_text("note_id;body;idioma\nn1;el paciente presenta miocarditis aguda y dolor hoy;es\n"
                     "n2;pacientul prezintă pneumonie acut cu durere;ro\n", encoding="utf-8")
    model = ("--checkpoint", trained_checkpoint, "--base-model", tiny_base_model)
    refused = run("visualize", table, tmp_path / "page.html", *model)
    assert refused.exit_code == 2 and "has no column 'id', 'text'" in refused.output
    assert_suggests_only_accepted_options("visualize", refused)
    result = run("visualize", table, tmp_path / "page.html", *model, "--id-column", "note_id", "--text-column", "body",
                 "--lang-column", "idioma")
    assert result.exit_code == 0, result.output
    assert "2 documents, 2 entities" in result.stdout
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "n1" in page and "n2" in page and "miocarditis aguda" in page and "pneumonie acut" in page
    missing = run("visualize", table, tmp_path / "page.html", *model, "--id-column", "note_id", "--text-column",
                  "body", "--lang-column", "lang")
    assert missing.exit_code == 2 and "--lang-column" in missing.output
    assert_suggests_only_accepted_options("visualize", missing)


def test_visualize_and_predict_declare_the_table_options_once():
    predict, visualize = (typer.main.get_command(app).commands[name] for name in ("predict", "visualize"))
    for name in ("id_column", "text_column", "lang_column", "delimiter", "encoding"):
        ours, theirs = (next(p for p in command.params if p.name == name) for command in (visualize, predict))
        assert (ours.opts, ours.help, ours.default) == (theirs.opts, theirs.help, theirs.default)


def visualize_and_convert_failures(tmp_path):
    """(command, arguments) that each fail with a message naming a way out."""
    (tmp_path / "semi.csv").write_text("id;text\nn1;asma\n", encoding="utf-8")
    (tmp_path / "cp.csv").write_bytes("id,text\nn1,neumonía\n".encode("cp1252"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "notes.txt").write_text("asma", encoding="utf-8")
    (tmp_path / "m.tsv").write_text(format_mentions([]), encoding="utf-8")
    return [
        ("--delimiter", ("semi.csv", "--delimiter", ",")),
        ("--encoding", ("cp.csv",)),
        ("--recursive", ("empty",)),
        ("--lang", ("short",)),
        ("--id-column", ("semi.csv", "--id-column", "note_id")),
        ("--text-column", ("semi.csv", "--text-column", "body")),
    ]


@pytest.mark.parametrize("command", ["visualize", "convert"])
def test_no_message_suggests_an_option_the_command_rejects(command, tmp_path, tiny_checkpoint, tiny_base_model):
    extra = {"visualize": ("--checkpoint", tiny_checkpoint, "--base-model", tiny_base_model),
             "convert": ("--mentions", tmp_path / "m.tsv")}[command]
    for option, (source, *args) in visualize_and_convert_failures(tmp_path):
        result = run(command, tmp_path / source, tmp_path / ("out.html" if command == "visualize" else "out"), *args,
                     *extra)
        assert result.exit_code != 0 and option in result.output, (option, result.output)
        assert_suggests_only_accepted_options(command, result)


def test_visualize_suggests_fallback_lang_which_it_takes(tmp_path, tiny_checkpoint, tiny_base_model):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "MultiClinNER-fr-test-disease-1.txt").write_text("Le patient a du diabète.", encoding="utf-8")
    model = ("--checkpoint", tiny_checkpoint, "--base-model", tiny_base_model)
    result = run("visualize", tmp_path / "in", tmp_path / "page.html", *model)
    assert result.exit_code == 1 and "--fallback-lang" in result.output
    assert_suggests_only_accepted_options("visualize", result)
    assert run("visualize", tmp_path / "in", tmp_path / "page.html", *model, "--fallback-lang", "es").exit_code == 0


# ------------------------------------------------------------------------------- convert


def docbin_docs(path: Path, lang: str):
    return list(DocBin().from_disk(path).get_docs(spacy.blank(lang).vocab))


def test_convert_reads_a_table_and_keeps_each_docs_language(tmp_path):
    notes = pyarrow.table({"note_id": ["a1", "a2", "a3", "a4"], "body": [ES, IT, RO, "Sin hallazgos."],
                           "lang": ["es", "it_IT", "ro", "es"]})
    pyarrow.parquet.write_table(notes, tmp_path / "notes.parquet")
    gold = [mention("a1", ES, "diabetes"), mention("a1", ES, "neumonía"), mention("a2", IT, "cirrosi epatica"),
            mention("a3", RO, "diabet zaharat"), mention("a9", ES, "fiebre", "SYMPTOM")]
    (tmp_path / "m.tsv").write_text(format_mentions(gold), encoding="utf-8")
    result = run("convert", tmp_path / "notes.parquet", tmp_path / "corpus", "--mentions", tmp_path / "m.tsv",
                 "--id-column", "note_id", "--text-column", "body", "--lang-column", "lang")
    assert result.exit_code == 1, result.output  # a9 has mentions but no row: reported, the rest written
    assert "1 mention(s) in" in result.stderr and "no row with id 'a9'" in result.stderr
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["es.spacy", "it.spacy", "ro.spacy"]
    es = docbin_docs(tmp_path / "corpus" / "es.spacy", "es")
    assert [(d.text, [e.text for e in d.ents], d._.dt4h_lang) for d in es] == [
        (ES, ["diabetes", "neumonía"], "es"), ("Sin hallazgos.", [], "es")]
    (it,) = docbin_docs(tmp_path / "corpus" / "it.spacy", "it")
    assert ([e.text for e in it.ents], it._.dt4h_lang) == (["cirrosi epatica"], "it")
    (ro,) = docbin_docs(tmp_path / "corpus" / "ro.spacy", "ro")
    assert ([e.label_ for e in ro.ents], ro._.dt4h_lang) == (["DISEASE"], "ro")


def test_convert_reads_a_semicolon_csv_table_in_its_encoding(tmp_path):
    (tmp_path / "notes.csv").write_bytes(f"id;text\nb1;{ES}\n".encode("cp1252"))
    (tmp_path / "m.tsv").write_text(format_mentions([mention("b1", ES, "neumonía")]), encoding="utf-8")
    result = run("convert", tmp_path / "notes.csv", tmp_path / "corpus", "--mentions", tmp_path / "m.tsv",
                 "--lang", "es", "--encoding", "cp1252")
    assert result.exit_code == 0, result.output
    (doc,) = docbin_docs(tmp_path / "corpus" / "es.spacy", "es")
    assert [e.text for e in doc.ents] == ["neumonía"] and doc._.dt4h_lang == "es"


def test_convert_a_table_needs_mentions(tmp_path):
    (tmp_path / "notes.csv").write_text(f"id,text\nb1,{ES}\n", encoding="utf-8")
    result = run("convert", tmp_path / "notes.csv", tmp_path / "corpus")
    assert result.exit_code == 2 and "a table's mentions come from --mentions MENTIONS.tsv" in result.output
    assert_suggests_only_accepted_options("convert", result)


@pytest.mark.parametrize("lang", ["auto", "detect"])
def test_convert_lang_auto_and_detect_route_as_predict_does(tmp_path, lang):
    folder = tmp_path / "txt"
    folder.mkdir()
    texts = {"nota-1": ES, "nota-2": IT, "MultiClinNER-ro-train-disease-1": RO, "nota-3": "asma"}
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    gold = [mention("nota-1", ES, "diabetes"), mention("nota-2", IT, "cirrosi epatica"),
            mention("MultiClinNER-ro-train-disease-1", RO, "pneumonie acută")]
    (tmp_path / "m.tsv").write_text(format_mentions(gold), encoding="utf-8")
    result = run("convert", folder, tmp_path / "corpus", "--mentions", tmp_path / "m.tsv", "--lang", lang)
    assert result.exit_code == 1, result.output  # "asma" is too short to tell: reported, the rest written
    reason = "no MultiClinNER name" if lang == "auto" else "too little text"
    assert f"skipped nota-3: {reason}" in result.stderr
    assert "pass the language, e.g. --lang es" in result.stderr
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["es.spacy", "it.spacy", "ro.spacy"]
    for code, words in (("es", "diabetes"), ("it", "cirrosi epatica"), ("ro", "pneumonie acută")):
        (doc,) = docbin_docs(tmp_path / "corpus" / f"{code}.spacy", code)
        assert [e.text for e in doc.ents] == [words] and doc._.dt4h_lang == code


# ------------------------------------------------------------- every message of the package

NOT_COMMAND_OPTIONS = {"--sample", "--config"}  # python -m dt4h_spacy.demo's own (argparse) options
SPACY_OVERRIDES = ("--paths", "--training", "--code")  # spaCy's config overrides and its train option


def test_every_option_a_message_names_is_one_a_command_takes():
    cli = typer.main.get_command(app)
    taken = {"--help"} | {o for p in cli.params for o in p.opts}
    taken |= {o for command in cli.commands.values() for p in command.params for o in p.opts}
    named = {}
    for path in Path(dt4h_spacy.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value):
                    named.setdefault(option, path.name)
    phantom = {o: where for o, where in named.items()
               if o not in taken | NOT_COMMAND_OPTIONS and not o.startswith(SPACY_OVERRIDES)}
    assert not phantom, f"messages name options no command takes: {phantom}"


@pytest.mark.parametrize("command", ["predict", "visualize"])
def test_a_checkpoint_that_needs_unpickling_names_no_option_the_command_rejects(command, tmp_path, tiny_base_model):
    torch.save({"weights": argparse.Namespace(layers=1)}, tmp_path / "pickled.pt")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "MultiClinNER-es-test-disease-1.txt").write_text("Paciente con asma.", encoding="utf-8")
    out = tmp_path / ("out.tsv" if command == "predict" else "page.html")
    result = run(command, tmp_path / "in", out, "--checkpoint", tmp_path / "pickled.pt", "--base-model",
                 tiny_base_model)
    assert result.exit_code == 2 and "is not a plain state dict" in result.output and "re-save it" in result.output
    suggested = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.output))
    assert suggested <= accepted(command), result.output
