"""``dt4h-spacy visualize``: the page's structure, and the page as a real browser renders it."""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
from spacy import displacy
from spacy.tokens import Span
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.colors import DISPLACY_COLORS

CHROMIUM = Path("/usr/bin/chromium")

TEXTS = {
    "MultiClinNER-es-dev-disease-00001": "el paciente presenta miocarditis aguda y dolor hoy",
    "MultiClinNER-es-dev-disease-00002": "la paciente presenta dolor y diabetes hoy\ncon neumonía",
    "MultiClinNER-es-dev-disease-00003": "el paciente presenta dolor hoy",
    "MultiClinNER-ro-dev-disease-00001": "pacientul prezintă pneumonie acut cu durere",
}
EXPECTED = [
    ("MultiClinNER-es-dev-disease-00001", ["miocarditis aguda"]),
    ("MultiClinNER-es-dev-disease-00002", ["diabetes", "neumonía"]),
    ("MultiClinNER-es-dev-disease-00003", []),
    ("MultiClinNER-ro-dev-disease-00001", ["pneumonie acut"]),
]


class Page(HTMLParser):
    """Sections (their h2 heading) and the mention text of each ``<mark>`` in them."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: List[Tuple[str, List[str]]] = []
        self.text: List[str] = []
        self._in_h2 = self._in_mark = self._in_label = False

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(("", []))
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "mark":
            self._in_mark = True
            self.sections[-1][1].append("")
        elif tag in ("span", "small") and (self._in_mark or self._in_h2):
            self._in_label = True

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag == "mark":
            self._in_mark = False
        elif tag in ("span", "small"):
            self._in_label = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_label:
            return
        if self._in_h2:
            name, marks = self.sections[-1]
            self.sections[-1] = ((name + data).strip(), marks)
        elif self._in_mark:
            self.sections[-1][1][-1] += data.strip()


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def page_file(tmp_path_factory, make_nlp, trained_checkpoint) -> Path:
    root = tmp_path_factory.mktemp("visualize")
    make_nlp("es", checkpoint=trained_checkpoint).to_disk(root / "pipeline")
    (root / "texts").mkdir()
    for name, text in TEXTS.items():
        (root / "texts" / f"{name}.txt").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["visualize", str(root / "texts"), str(root / "page.html"),
                                      "--model", str(root / "pipeline"), "--title", "Dev & predictions"])
    assert result.exit_code == 0, result.output
    assert "4 documents, 4 entities" in result.output
    return root / "page.html"


def test_one_section_per_document_with_its_name_and_its_mentions_marked(page_file):
    html = page_file.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    assert "<title>Dev &amp; predictions</title>" in html
    assert "<script" not in html and "http" not in html  # standalone: nothing to fetch
    assert parse(html).sections == EXPECTED


def test_documents_in_a_language_the_pipeline_does_not_serve_are_reported_and_skipped(tmp_path, make_nlp,
                                                                                     trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint, tasks={"es": "disease_es_ner"})
    nlp.to_disk(tmp_path / "pipeline")
    (tmp_path / "texts").mkdir()
    for name, text in TEXTS.items():
        (tmp_path / "texts" / f"{name}.txt").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["visualize", str(tmp_path / "texts"), str(tmp_path / "es.html"),
                                      "--model", str(tmp_path / "pipeline")])
    assert result.exit_code == 1, result.output
    assert ("MultiClinNER-ro-dev-disease-00001.txt: the model has no head for language 'ro' (it serves es)"
            in result.stderr)
    assert parse((tmp_path / "es.html").read_text(encoding="utf-8")).sections == EXPECTED[:3]


def test_visualize_takes_a_checkpoint_and_one_file(tmp_path, trained_checkpoint, tiny_base_model):
    source = tmp_path / "nota.TXT"
    source.write_text(TEXTS["MultiClinNER-ro-dev-disease-00001"], encoding="utf-8")
    result = CliRunner().invoke(app, ["visualize", str(source), str(tmp_path / "new" / "page.html"), "--lang", "RO",
                                      "--checkpoint", str(trained_checkpoint), "--base-model", str(tiny_base_model)])
    assert result.exit_code == 0, result.output
    assert parse((tmp_path / "new" / "page.html").read_text(encoding="utf-8")).sections == [("nota", ["pneumonie acut"])]


def test_displacy_colours_are_registered_for_python_and_used_by_the_page(page_file):
    nlp = spacy.blank("es")
    doc = nlp("el paciente presenta miocarditis y dolor")
    doc.ents = [Span(doc, 3, 4, label="DISEASE"), Span(doc, 5, 6, label="SYMPTOM")]
    html = displacy.render(doc, style="ent")  # no colours passed: they come from the entry point
    assert DISPLACY_COLORS["DISEASE"] in html and DISPLACY_COLORS["SYMPTOM"] in html
    assert f"background: {DISPLACY_COLORS['DISEASE']}" in page_file.read_text(encoding="utf-8")


def test_an_unloadable_model_is_exit_code_2(tmp_path):
    (tmp_path / "texts").mkdir()
    result = CliRunner().invoke(app, ["visualize", str(tmp_path / "texts"), str(tmp_path / "x.html"),
                                      "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and not (tmp_path / "x.html").exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (/usr/bin/chromium); "
                    "apt-get install -y --no-install-recommends chromium")
def test_the_page_renders_in_headless_chromium_with_the_mentions_highlighted(page_file, tmp_path):
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page_file.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse(result.stdout)
    assert dom.sections == EXPECTED
    rendered = "".join(dom.text)
    assert "prezintă" in rendered  # UTF-8 read as UTF-8 (no mojibake like "prezintÄƒ")
    assert rendered.count("DISEASE") == 4  # every mark carries its label
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
