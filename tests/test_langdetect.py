"""Routing documents by their detected language: ``--lang detect``/``auto`` and the
``dt4h_langdetect`` pipe."""

import builtins

import pytest
import spacy
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.pipes.langdetect.detect import Undetectable, detect_language, route
from dt4h_spacy.tsv import read_mentions

# Short clinical notes, paragraphs and punctuation included; the disease words are the ones
# the trained tiny model knows, so every head finds something in its own language.
NOTES = {
    "es": "El paciente presenta miocarditis aguda y dolor torácico desde hoy.\n\n"
          "Antecedentes de diabetes; se descarta neumonía en la radiografía de tórax.",
    "it": "Il paziente presenta scompenso e dolore toracico da oggi.\n\n"
          "Anamnesi di ipertensione acuta; la radiografia del torace esclude la polmonite.",
    "ro": "Pacientul prezintă infarct acut și durere toracică de azi.\n\n"
          "Antecedente de diabet; radiografia toracică exclude pneumonie.",
    "en": "The patient presents with acute myocarditis and chest pain since this morning.\n\n"
          "History of diabetes; the chest radiograph rules out pneumonia.",
}
NAMES = {"es": "nota_0001.txt", "it": "referto-b.txt", "ro": "fisa 3.txt", "en": "discharge.txt"}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for lang, text in NOTES.items():
        (folder / NAMES[lang]).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("lang, text", [
    ("es", "Se pauta tratamiento con furosemida."), ("it", "Riferisce dispnea da sforzo da un mese."),
    ("ro", "Fără alergii medicamentoase cunoscute."), ("en", "Admitted for oppressive chest pain."),
    ("fr", "Pas d'allergie médicamenteuse connue."), ("de", "Keine bekannten Arzneimittelallergien."),
    ("pt", "Iniciou-se tratamento com furosemida."), ("ca", "Sense al·lèrgies medicamentoses conegudes."),
])
def test_detects_one_sentence_clinical_notes_among_neighbours(lang, text):
    assert detect_language(text) == lang


def test_too_short_a_text_is_undetectable_rather_than_guessed():
    with pytest.raises(Undetectable, match=r"too little text .*\(6 letters, at least 12 needed\)"):
        detect_language("asma  12 mg.")


def test_route_follows_lang_then_names_then_text():
    def unread():
        pytest.fail("the text must not be read")

    assert route("nota.txt", unread, "es") == "es"
    assert route("MultiClinNER-ro-test-disease-1.txt", unread, "auto") == "ro"
    assert route("nota.txt", lambda: NOTES["it"], "auto") == "it"
    assert route("MultiClinNER-ro-test-disease-1.txt", lambda: NOTES["en"], "detect") == "en"
    failed = route("nota.txt", lambda: "asma", "auto")
    assert isinstance(failed, Undetectable) and "no MultiClinNER name" in str(failed) and "--lang es" in str(failed)


def test_predict_detect_gives_the_rows_of_explicit_runs_and_reports_english(
        mixed_folder, tmp_path, trained_checkpoint, tiny_base_model):
    model = ("--checkpoint", trained_checkpoint, "--base-model", tiny_base_model)
    result = run("predict", mixed_folder, tmp_path / "detect.tsv", "--lang", "detect", *model)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        (f"error: skipped {mixed_folder / NAMES['en']}: the model has no head for language 'en' (it serves es, it, "
         "ro); pass --fallback-lang with one of them to annotate it anyway")]
    expected = []
    for lang in ("es", "it", "ro"):
        one = tmp_path / lang
        one.mkdir()
        (one / NAMES[lang]).write_text(NOTES[lang], encoding="utf-8")
        explicit = run("predict", one, tmp_path / f"{lang}.tsv", "--lang", lang, *model)
        assert explicit.exit_code == 0, explicit.output
        expected += read_mentions(tmp_path / f"{lang}.tsv")
    rows = read_mentions(tmp_path / "detect.tsv")
    assert rows == sorted(expected, key=lambda m: (m.filename, m.start))
    assert {(m.filename, m.text) for m in rows} >= {
        ("nota_0001", "miocarditis aguda"), ("referto-b", "scompenso"), ("fisa 3", "infarct acut")}


def test_fallback_language_annotates_a_language_without_head(mixed_folder, tmp_path, trained_checkpoint,
                                                            tiny_base_model):
    (mixed_folder / "MultiClinNER-es-test-disease-7.txt").write_text("asma", encoding="utf-8")
    result = run("predict", mixed_folder, tmp_path / "out.tsv", "--fallback-lang", "ES", "--checkpoint",
                 trained_checkpoint, "--base-model", tiny_base_model)  # --lang auto: a name, else detection
    assert result.exit_code == 0, result.output
    assert "warning: discharge is in en, which the model has no head for; annotated as es (--fallback-lang)" in result.stderr
    assert "5 files read, 0 failed" in result.stdout
    refused = run("predict", mixed_folder, tmp_path / "x.tsv", "--fallback-lang", "en", "--checkpoint",
                  trained_checkpoint, "--base-model", tiny_base_model)
    assert refused.exit_code == 2 and "no head for language 'en'" in refused.output


def test_without_py3langid_detect_is_an_option_error_and_auto_a_file_error(monkeypatch, mixed_folder, tmp_path):
    real_import = builtins.__import__

    def no_py3langid(name, *args, **kwargs):
        if name.startswith("py3langid"):
            raise ImportError("No module named 'py3langid'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_py3langid)
    detect = run("predict", mixed_folder, tmp_path / "out.tsv", "--lang", "detect")
    assert detect.exit_code == 2 and "pip install py3langid" in detect.output
    auto = run("predict", mixed_folder, tmp_path / "out.tsv", "--checkpoint", tmp_path / "missing.pt")
    assert auto.exit_code == 1 and auto.stderr.count("needs py3langid") == 4


def test_langdetect_pipe_routes_an_xx_pipeline_like_per_language_pipelines(make_nlp, trained_checkpoint):
    nlp = make_nlp("xx", checkpoint=trained_checkpoint)
    nlp.add_pipe("dt4h_langdetect", first=True, config={"languages": ["es", "it", "ro", "en"], "fallback": "es"})
    for lang in ("es", "it", "ro"):
        doc = nlp(NOTES[lang])
        alone = make_nlp("xx", checkpoint=trained_checkpoint)(_with_lang(nlp, NOTES[lang], lang))
        assert doc._.dt4h_lang == lang and doc.ents
        assert [(e.text, e.label_) for e in doc.ents] == [(e.text, e.label_) for e in alone.ents]
    assert nlp("asma")._.dt4h_lang == "es"  # too short: the fallback
    kept = _with_lang(nlp, NOTES["it"], "ro")
    assert nlp.get_pipe("dt4h_langdetect")(kept)._.dt4h_lang == "ro"  # set by the user: kept
    with pytest.raises(ValueError, match=r"cannot identify \['xx'\]"):
        spacy.blank("xx").add_pipe("dt4h_langdetect", config={"languages": ["xx"]})


def _with_lang(nlp, text, lang):
    doc = nlp.make_doc(text)
    doc._.dt4h_lang = lang
    return doc


def test_serving_language_prefers_the_head_then_its_spacy_spelling_then_the_fallback():
    from dt4h_spacy.pipes.langdetect.detect import serving_language

    assert serving_language("es", {"es", "it"}, None) == "es"
    assert serving_language("en", None, None) == "en"  # a head for every language
    assert serving_language("cs", {"cz", "en"}, "en") == "cz"  # MultiClinNER writes Czech cz
    assert serving_language("fr", {"es"}, "es") == "es" and serving_language("fr", {"es"}, None) is None


def test_the_bundled_configs_pipes_need_only_what_the_package_installs():
    """The README's first command trains the demo from configs/sample.cfg in a fresh venv: a pipe
    there whose library sits in an extra fails before the first step."""
    import configparser
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parent.parent
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    installed = {Requirement(line).name for line in setup["options"]["install_requires"].splitlines()
                 if line.strip() and not line.lstrip().startswith("#")}
    for config in sorted((root / "dt4h_spacy" / "configs").glob("*.cfg")):
        if "dt4h_langdetect" in spacy.util.load_config(config)["nlp"]["pipeline"]:
            assert "py3langid" in installed, config.name
