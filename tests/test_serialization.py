"""A saved pipeline needs nothing but its own folder: no .pt, no base model, no network."""

import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap

import spacy
import torch

TEXTS = [
    "Paciente con miocarditis aguda y fibrilación auricular.",
    "Antecedentes de diabetes mellitus tipo 2,\nhipertensión arterial y dislipemia.",
]


def ents(docs):
    return [[(e.start_char, e.end_char, e.label_, round(e._.dt4h_score, 5)) for e in d.ents] for d in docs]


def test_to_disk_and_spacy_load_without_the_original_files(tmp_path, make_nlp, tiny_base_model, tiny_checkpoint, monkeypatch):
    base = shutil.copytree(tiny_base_model, tmp_path / "base")
    checkpoint = shutil.copy(tiny_checkpoint, tmp_path / "model.pt")
    nlp = make_nlp("es", checkpoint=checkpoint, base_model=str(base), orphan_i="begin", stride=32)
    expected = ents(nlp.pipe(TEXTS))
    assert any(expected)
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(base)
    (tmp_path / "model.pt").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    loaded = spacy.load(tmp_path / "pipeline")
    assert ents(loaded.pipe(TEXTS)) == expected
    component = loaded.get_pipe("dt4h_disease")
    assert component.cfg["orphan_i"] == "begin" and component.cfg["stride"] == 32
    assert component.languages == {"es": ("disease_es_ner",), "it": ("disease_it_ner",), "ro": ("disease_ro_ner",)}
    assert (tmp_path / "pipeline" / "dt4h_disease" / "model.safetensors").exists()


def test_bytes_and_pickle_round_trip(make_nlp):
    nlp = make_nlp("it")
    expected = ents(nlp.pipe(TEXTS))
    copy = spacy.blank("it").from_config(nlp.config)
    copy.from_bytes(nlp.to_bytes())
    assert ents(copy.pipe(TEXTS)) == expected
    assert ents(pickle.loads(pickle.dumps(nlp)).pipe(TEXTS)) == expected


def test_factory_is_found_through_the_entry_point_in_a_fresh_interpreter(tiny_base_model, tiny_checkpoint):
    code = textwrap.dedent(
        f"""
        import sys, spacy
        assert "dt4h_spacy" not in sys.modules
        nlp = spacy.blank("ro")
        nlp.add_pipe("dt4h_disease", config={{"checkpoint": {str(tiny_checkpoint)!r}, "base_model": {str(tiny_base_model)!r}}})
        doc = nlp("Pacient cu infarct miocardic acut.")
        print(type(nlp.get_pipe("dt4h_disease")).__module__, all(e.label_ == "DISEASE" for e in doc.ents))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["dt4h_spacy.component", "True"]


def test_a_quantized_pipeline_saves_its_fp32_weights(tmp_path, make_nlp, tiny_checkpoint):
    nlp = make_nlp("es", quantize=True)
    expected = ents(nlp.pipe(TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "pipeline" / "dt4h_disease" / "model.safetensors"))
    original = torch.load(tiny_checkpoint, weights_only=True)
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], original[k]) for k in original)
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("dt4h_disease").cfg["quantize"] is True
    assert ents(loaded.pipe(TEXTS)) == expected


def test_saved_weights_are_readable_as_the_umask_allows_like_every_other_file(tmp_path, make_nlp):
    """safetensors creates its files 0600: other users of a shared server could not load the pipeline."""
    old = os.umask(0o022)
    try:
        make_nlp("es").to_disk(tmp_path / "pipeline")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pipeline").rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == modes["meta.json"] == 0o644, modes
