"""Training on spaCy's loop, the one training path: the alignment it trains on, the start
checkpoint (`dt4h-spacy init-checkpoint`), `dt4h-spacy train` as a thin wrapper of `spacy
train` (annotated texts converted, retired options refused with the way out), and what a
run writes (a pipeline that keeps serving the languages it did not train)."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from transformers import AutoConfig, AutoModel, AutoTokenizer
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.gold import example_units, gold_units, training_batch
from dt4h_spacy.labels import LabelScheme
from dt4h_spacy.spans import word_tokens
from dt4h_spacy.testing import LANG_TASK
from dt4h_spacy.training.spacy_loop import sentence_docs
from dt4h_spacy.tsv import read_mentions, write_mentions

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "finetune.cfg"
ES = {"disease_es_ner": LabelScheme.for_task("disease_es_ner")}
TEXTS = {
    "es": ("el paciente presenta miocarditis aguda y dolor hoy", [("miocarditis aguda", 21, 38)]),
    "it": ("il paziente con polmonite e dolore oggi", [("polmonite", 16, 25)]),
    "ro": ("pacientul prezintă pneumonie acut cu durere", [("pneumonie acut", 19, 33)]),
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ents(nlp, doc):
    return [(e.text, e.start_char, e.end_char) for e in nlp(doc).ents]


def lang_doc(lang: str, text: str) -> Doc:
    doc = spacy.blank(lang).make_doc(text)
    doc._.dt4h_lang = lang
    return doc


# ------------------------------------------------------------------ what update trains on


def example(words, tags, spaces=None) -> Example:
    vocab = spacy.blank("es").vocab
    return Example(Doc(vocab, words=words, spaces=spaces), Doc(vocab, words=words, spaces=spaces, ents=tags))


def test_word_labels_go_on_first_subwords_and_everything_else_is_ignored(tiny_base_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    words = ["Paciente", "con", "miocarditis", "aguda", "y", "scompenso"]
    tags = ["O", "O", "B-DISEASE", "I-DISEASE", "O", "O"]
    units = example_units(example(words, tags), 0, ("disease_es_ner",), ES)
    batch = training_batch(units, tokenizer, ES, 512, 128)
    word_ids = tokenizer(words, is_split_into_words=True).word_ids()  # with <s> and </s>
    assert batch.windows.cols.tolist() == [word_ids.index(i) for i in range(len(words))]
    assert batch.targets["disease_es_ner"].tolist() == [2, 2, 0, 1, 2, 2]  # B, I, O sorted
    assert batch.windows.input_ids[0].tolist() == tokenizer(words, is_split_into_words=True)["input_ids"]
    assert len(set(word_ids) - {None}) < len(word_ids) - 2, "the test needs a word split into several subwords"


def test_long_units_are_cut_into_inference_windows_with_each_word_labelled_once(tiny_base_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    words = ["miocarditis", "aguda", "y", "dolor"] * 60
    tags = ["B-DISEASE", "I-DISEASE", "O", "O"] * 60
    units = example_units(example(words, tags), 0, ("disease_es_ner",), ES)
    batch = training_batch(units, tokenizer, ES, 40, 10)
    assert batch.windows.input_ids.shape[0] > 1 and batch.windows.input_ids.shape[1] <= 40
    assert sorted(batch.targets["disease_es_ner"].tolist()) == sorted([0, 1, 2, 2] * 60)


def test_sentences_end_at_punctuation_and_line_breaks_but_never_inside_an_entity():
    words = ["Dolor", ".", "Tiene", "enf", ".", "rara", "hoy", ".", "Fiebre", "\n", "Tos"]
    tags = ["O", "O", "O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "O", "O", "O", "O", "O"]
    spaces = [False, True, True, False, False, True, False, True, False, False, False]
    eg = example(words, tags, spaces)
    units = example_units(eg, 0, ("disease_es_ner",), ES)
    assert [u.texts for u in units] == [("Dolor", "."), ("Tiene", "enf", ".", "rara", "hoy", "."), ("Fiebre",), ("Tos",)]
    assert units[1].tags == ("O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "O", "O")
    # the reader's sentence examples (unit = "sentence") cut at the same places
    assert [[t.text for t in piece if not t.is_space] for piece in sentence_docs(eg.reference)] == [
        list(u.texts) for u in units]


def test_sentence_boundaries_already_in_the_doc_win():
    doc = Doc(spacy.blank("es").vocab, words=["a", "b", ".", "c", "d"])
    for token, start in zip(doc, [True, False, False, False, True]):
        token.is_sent_start = start
    words = word_tokens(doc)
    assert [u.texts for u in gold_units(doc, words, ["O"] * 5, ("disease_es_ner",))] == [("a", "b", ".", "c"), ("d",)]


# ------------------------------------------------------------------ the start checkpoint


class AuthorsModel(torch.nn.Module):
    """The authors' MultiTaskNERModel, attribute for attribute."""

    def __init__(self, config, num_labels: Dict[str, int]):
        super().__init__()
        self.encoder = AutoModel.from_config(config)
        self.dropout = torch.nn.Dropout(0.1)
        self.classifiers = torch.nn.ModuleDict({t: torch.nn.Linear(config.hidden_size, n) for t, n in num_labels.items()})


def test_init_checkpoint_writes_a_seeded_random_start_in_the_authors_layout(tmp_path, tiny_base_model):
    first = invoke("init-checkpoint", tiny_base_model, tmp_path / "a.pt")
    assert first.exit_code == 0 and "disease_es_ner, disease_it_ner, disease_ro_ner" in first.output, first.output
    assert invoke("init-checkpoint", tiny_base_model, tmp_path / "b.pt").exit_code == 0
    assert invoke("init-checkpoint", tiny_base_model, tmp_path / "c.pt", "--seed", 1).exit_code == 0
    a, b, c = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    authors = AuthorsModel(AutoConfig.from_pretrained(tiny_base_model), {t: 3 for t in LANG_TASK.values()})
    authors.load_state_dict(a, strict=True)


def test_init_checkpoint_from_a_saved_pretrained_encoder_keeps_its_weights(tmp_path, tiny_base_model):
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(tiny_base_model))
    encoder.save_pretrained(tmp_path / "encoder")
    AutoTokenizer.from_pretrained(tiny_base_model).save_pretrained(tmp_path / "encoder")
    result = invoke("init-checkpoint", tmp_path / "encoder", tmp_path / "start.pt", "--pretrained",
                    "--tasks", "disease_es_ner")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "start.pt", weights_only=True)
    weights = "encoder.embeddings.word_embeddings.weight"
    assert torch.equal(state[weights], encoder.state_dict()["embeddings.word_embeddings.weight"])
    assert sorted(k for k in state if k.startswith("classifiers.")) == [
        "classifiers.disease_es_ner.bias", "classifiers.disease_es_ner.weight"]
    offline = invoke("init-checkpoint", tiny_base_model, tmp_path / "x.pt", "--pretrained")  # config only
    assert offline.exit_code == 2 and "save_pretrained" in offline.output


def test_a_new_language_is_a_fresh_head_added_to_a_trained_checkpoint(tmp_path, tiny_base_model, trained_checkpoint):
    result = invoke("init-checkpoint", tiny_base_model, tmp_path / "with-en.pt", "--from", trained_checkpoint,
                    "--tasks", "disease_en_ner")
    assert result.exit_code == 0 and "disease_en_ner" in result.output, result.output
    before = torch.load(trained_checkpoint, weights_only=True)
    after = torch.load(tmp_path / "with-en.pt", weights_only=True)
    assert set(after) == set(before) | {"classifiers.disease_en_ner.weight", "classifiers.disease_en_ner.bias"}
    assert all(torch.equal(after[k], before[k]) for k in before)
    nlp = spacy.blank("xx")
    nlp.add_pipe("dt4h_disease", config={"checkpoint": str(tmp_path / "with-en.pt"), "base_model": str(tiny_base_model)})
    assert nlp.get_pipe("dt4h_disease").serves("en")


# ------------------------------------------------------------- dt4h-spacy train, a run


def spanish_texts(root: Path) -> Path:
    """The bundled sample's Spanish dev notes with their own mentions.tsv: the authors' format."""
    folder = root / "es-texts"
    shutil.copytree(ROOT / "sample" / "dev" / "es", folder)
    names = {p.stem for p in folder.glob("*.txt")}
    write_mentions(folder / "mentions.tsv", [m for m in read_mentions(ROOT / "sample" / "dev" / "mentions.tsv")
                                             if m.filename in names])
    return folder


@pytest.fixture(scope="module")
def spanish_run(tmp_path_factory, tiny_base_model, trained_checkpoint):
    """`dt4h-spacy train` on Spanish annotated texts alone, from the trained es/it/ro checkpoint."""
    root = tmp_path_factory.mktemp("run")
    texts = spanish_texts(root)
    output = root / "out"
    result = invoke("train", CONFIG, "--output", output, "--paths.train", texts, "--paths.dev", texts,
                    "--paths.checkpoint", trained_checkpoint, "--paths.base_model", tiny_base_model,
                    "--training.max_steps", 3, "--training.eval_frequency", 3,
                    "--training.optimizer.learn_rate", 0.0005)
    assert result.exit_code == 0, result.output
    return output


def test_annotated_texts_are_converted_before_spacys_train_reads_them(spanish_run):
    from spacy.tokens import DocBin

    for split in ("train", "dev"):
        docs = list(DocBin().from_disk(spanish_run / "corpus" / split / "es.spacy").get_docs(spacy.blank("es").vocab))
        assert len(docs) == 12 and {d._.dt4h_lang for d in docs} == {"es"} and any(d.ents for d in docs)
    assert (spanish_run / "model-best" / "config.cfg").is_file()


def test_fine_tuning_spanish_alone_writes_a_pipeline_that_still_serves_italian_and_romanian(
        spanish_run, trained_checkpoint):
    trained = spacy.load(spanish_run / "model-last")
    component = trained.get_pipe("dt4h_disease")
    assert trained.lang == "xx" and component.languages == {lang: (task,) for lang, task in LANG_TASK.items()}
    state = component.tagger.model.state_dict()
    start = torch.load(trained_checkpoint, weights_only=True)
    for task in ("disease_it_ner", "disease_ro_ner"):  # untrained heads kept exactly
        assert torch.equal(state[f"classifiers.{task}.weight"], start[f"classifiers.{task}.weight"])
    assert not torch.equal(state["classifiers.disease_es_ner.weight"], start["classifiers.disease_es_ner.weight"])
    for lang in ("it", "ro"):  # each routed to its own head by the doc's language
        text, expected = TEXTS[lang]
        assert ents(trained, lang_doc(lang, text)) == expected, lang


def test_a_new_run_continues_from_an_earlier_runs_model_last(spanish_run, tmp_path):
    """The honest replacement of --resume: --paths.checkpoint OUT/model-last starts from its weights."""
    output = tmp_path / "again"
    result = invoke("train", CONFIG, "--output", output, "--paths.train", spanish_run / "corpus" / "train",
                    "--paths.dev", spanish_run / "corpus" / "dev", "--paths.checkpoint", spanish_run / "model-last",
                    "--training.max_steps", 1, "--training.eval_frequency", 1)
    assert result.exit_code == 0, result.output
    previous = spacy.load(spanish_run / "model-last").get_pipe("dt4h_disease").tagger.model.state_dict()
    start = torch.load(output / "start" / "model.pt", weights_only=True)
    assert start.keys() == previous.keys() and all(torch.equal(start[k], previous[k]) for k in start)
    assert (output / "start" / "base" / "config.json").is_file()
    after = spacy.load(output / "model-last").get_pipe("dt4h_disease").tagger.model.state_dict()
    assert torch.equal(after["classifiers.disease_it_ner.weight"], previous["classifiers.disease_it_ner.weight"])
    assert not torch.equal(after["classifiers.disease_es_ner.weight"], previous["classifiers.disease_es_ner.weight"])


def test_a_training_output_passed_as_a_model_or_checkpoint_gets_the_path_to_pass(spanish_run, tmp_path,
                                                                                 tiny_base_model):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "note.txt").write_text(TEXTS["es"][0], encoding="utf-8")
    predict = ["predict", texts, tmp_path / "out.tsv", "--lang", "es"]
    refused = invoke(*predict, "--base-model", tiny_base_model, "--checkpoint", spanish_run / "model-best")
    assert refused.exit_code == 2 and f"--model {spanish_run / 'model-best'}" in refused.output
    for command in (predict, ["visualize", texts, tmp_path / "page.html", "--lang", "es"]):
        refused = invoke(*command, "--model", spanish_run)
        assert refused.exit_code == 2 and "E053" not in refused.output, refused.output
        assert "is not a saved spaCy pipeline" in refused.output and str(spanish_run / "model-best") in refused.output
    ok = invoke(*predict, "--model", spanish_run / "model-best")
    assert ok.exit_code == 0, ok.output


def test_retired_formats_and_options_are_refused_with_the_way_out(tmp_path, tiny_base_model, tiny_checkpoint):
    old = tmp_path / "mtl.cfg"
    old.write_text('[model]\n@architectures = "dt4h.MultiTaskTokenClassifier.v1"\n\n[tasks]\n', encoding="utf-8")
    refused = invoke("train", old, "--output", tmp_path / "out")
    assert refused.exit_code == 2 and "configs/finetune.cfg" in refused.output and "init-checkpoint" in refused.output
    args = ["train", CONFIG, "--output", tmp_path / "out", "--paths.checkpoint", tiny_checkpoint]
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 2 and "cannot resume" in resumed.output
    assert f"--paths.checkpoint {tmp_path / 'out'}/model-last" in resumed.output
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_an_annotated_folder_with_a_broken_file_is_refused_before_training(tmp_path, tiny_base_model, tiny_checkpoint):
    texts = spanish_texts(tmp_path)
    next(texts.glob("*.txt")).write_bytes(b"\xff\xfe not utf-8 \xff")
    result = invoke("train", CONFIG, "--output", tmp_path / "out", "--paths.train", texts, "--paths.dev", texts,
                    "--paths.checkpoint", tiny_checkpoint, "--paths.base_model", tiny_base_model)
    assert result.exit_code == 2 and str(texts) in result.output and "dt4h-spacy convert" in result.output
    assert not (tmp_path / "out" / "model-last").exists()


def test_training_and_the_demo_need_no_cli_library():
    code = ("import sys, spacy\n"
            "for name in [n for n in sys.modules if n == 'typer' or n.startswith('typer.')]:\n"
            "    sys.modules[name] = None\n"
            "from dt4h_spacy.training import train, write_start_checkpoint\n"
            "import dt4h_spacy.demo\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_doc_in_a_language_without_a_head_stops_the_cli_run_before_any_step(tmp_path, tiny_base_model,
                                                                                tiny_checkpoint):
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    doc = nlp.make_doc("Patient with pneumonia today.")
    doc.ents = [doc.char_span(13, 22, label="DISEASE")]
    doc._.dt4h_lang = "en"
    DocBin(docs=[doc], store_user_data=True).to_disk(tmp_path / "en.spacy")
    result = invoke("train", CONFIG, "--output", tmp_path / "out", "--paths.train", tmp_path / "en.spacy",
                    "--paths.dev", tmp_path / "en.spacy", "--paths.checkpoint", tiny_checkpoint,
                    "--paths.base_model", tiny_base_model)
    assert result.exit_code == 2, result.output
    assert "training doc 0 ('Patient with pneumonia today.'…) is in 'en'" in result.output and "tasks" in result.output
    assert not (tmp_path / "out" / "model-last").exists()
