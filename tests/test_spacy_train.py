"""`python -m spacy train configs/finetune.cfg` fine-tunes dt4h_disease on spaCy's own loop
(issue 24): convert → train → evaluate → package → load, offline, on a tiny checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from dt4h_spacy.errors import TrainingDataError
from dt4h_spacy.training.spacy_loop import dt4h_corpus, task_batches

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "finetune.cfg"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run(*args, cwd):
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The bundled sample as `dt4h-spacy convert` writes it: a folder of <lang>.spacy per split."""
    root = tmp_path_factory.mktemp("corpus")
    for split in ("train", "dev"):
        run("dt4h_spacy", "convert", str(ROOT / "sample" / split), str(root / split), "--mentions",
            str(ROOT / "sample" / split / "mentions.tsv"), "--recursive", "--entity", "DISEASE", cwd=root)
    return root


def ents_f(cwd, pipeline, data):
    out = Path(cwd) / f"scores-{Path(pipeline).name}.json"
    run("spacy", "evaluate", str(pipeline), str(data), "--output", str(out), cwd=cwd)
    return json.loads(out.read_text())["ents_f"]


def test_convert_keeps_each_docs_language(corpus):
    nlp = spacy.blank("xx")
    for lang in ("es", "it", "ro"):
        docs = list(DocBin().from_disk(corpus / "train" / f"{lang}.spacy").get_docs(nlp.vocab))
        assert docs and {doc._.dt4h_lang for doc in docs} == {lang}


def test_the_chain_runs_offline_and_fine_tuning_beats_the_start(corpus, tmp_path, tiny_checkpoint, tiny_base_model):
    paths = ["--paths.train", str(corpus / "train"), "--paths.dev", str(corpus / "dev"),
             "--paths.checkpoint", str(tiny_checkpoint), "--paths.base_model", str(tiny_base_model)]
    run("spacy", "debug", "config", str(CONFIG), *paths, cwd=tmp_path)
    run("spacy", "train", str(CONFIG), *paths, "--output", str(tmp_path / "out"), "--training.max_epochs", "3",
        "--training.eval_frequency", "30", "--training.optimizer.learn_rate", "0.002", cwd=tmp_path)
    best = tmp_path / "out" / "model-best"
    # The starting checkpoint in the same pipeline, saved untrained, scored the same way.
    start = spacy.blank("xx")
    start.add_pipe("dt4h_langdetect")
    start.add_pipe("dt4h_disease", config={"checkpoint": str(tiny_checkpoint), "base_model": str(tiny_base_model)})
    start.to_disk(tmp_path / "start")
    before, after = ents_f(tmp_path, tmp_path / "start", corpus / "dev"), ents_f(tmp_path, best, corpus / "dev")
    assert after > before + 0.05, (before, after)

    (tmp_path / "pkg").mkdir()
    run("spacy", "package", str(best), str(tmp_path / "pkg"), "--build", "sdist", "--force", cwd=tmp_path)
    # Back to the published layout: a plain state dict the authors' code and our component load.
    run("dt4h_spacy", "export", str(best), str(tmp_path / "model.pt"), "--base-model-dir", str(tmp_path / "base"),
        cwd=tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"encoder", "classifiers"}
    assert {k.split(".")[1] for k in state if k.startswith("classifiers.")} == {
        "disease_es_ner", "disease_it_ner", "disease_ro_ner"}
    trained = spacy.load(best)
    exported = spacy.blank("xx")
    exported.add_pipe("dt4h_langdetect")
    exported.add_pipe("dt4h_disease", config={"checkpoint": str(tmp_path / "model.pt"),
                                              "base_model": str(tmp_path / "base")})
    dev = list(dt4h_corpus(corpus / "dev" / "it.spacy")(trained))
    same = [[(e.start, e.end, e.label_) for e in nlp(eg.predicted.copy()).ents] for nlp in (trained, exported)
            for eg in dev[:4]]
    assert same[:4] == same[4:] and any(same[:4])
    assert list((tmp_path / "pkg").glob("*/dist/*.tar.gz"))
    # A fresh process, without the training inputs: the pipeline carries its network.
    moved = tmp_path / "moved"
    best.rename(moved)
    tiny_text = "Paciente con neumonía grave y diabetes mellitus tipo dos."
    code = f"import spacy; doc = spacy.load({str(moved)!r})({tiny_text!r}); print(doc._.dt4h_lang, len(doc.ents) >= 0)"
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.split() == ["es", "True"], result.stderr[-2000:]


def spanish_examples(nlp, corpus, n=4):
    reader = dt4h_corpus(corpus / "train" / "es.spacy", unit="sentence")
    return [eg for _, eg in zip(range(n), reader(nlp))]


def test_a_spanish_corpus_trains_only_the_spanish_head(make_nlp, corpus):
    nlp = make_nlp("xx")
    component = nlp.get_pipe("dt4h_disease")
    examples = spanish_examples(nlp, corpus)
    optimizer = nlp.initialize(lambda: examples)
    before = {k: v.clone() for k, v in component.tagger.model.state_dict().items()}
    for _ in range(3):
        losses = nlp.update(examples, sgd=optimizer)
    assert losses["dt4h_disease"] > 0
    after = component.tagger.model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert {k.split(".")[1] for k in changed if k.startswith("classifiers.")} == {"disease_es_ner"}
    assert any(k.startswith("encoder.") for k in changed)


def test_the_authors_batch_order_all_of_one_language_then_the_next(make_nlp, corpus):
    nlp = make_nlp("xx")
    examples = []
    for lang in ("ro", "es", "it"):
        examples += list(dt4h_corpus(corpus / "dev" / f"{lang}.spacy", unit="sentence")(nlp))
    batches = list(task_batches(size=5)(examples))
    langs = [{eg.predicted._.dt4h_lang for eg in batch} for batch in batches]
    assert all(len(batch_langs) == 1 for batch_langs in langs)
    order = [batch_langs.pop() for batch_langs in langs]
    assert order == sorted(order) and set(order) == {"es", "it", "ro"}
    assert sum(len(b) for b in batches) == len(examples) and max(len(b) for b in batches) == 5


def example(nlp, text, ents, lang="es", words=None, spaces=None):
    reference = Doc(nlp.vocab, words=words, spaces=spaces) if words else nlp.make_doc(text)
    reference.ents = [reference.char_span(a, b, label=label) for a, b, label in ents]
    reference._.dt4h_lang = lang
    predicted = nlp.make_doc(reference.text)
    predicted._.dt4h_lang = lang
    return Example(predicted, reference)


@pytest.mark.parametrize("case, message", [
    ("language", r"training doc 1 .* is in 'en', which no head"),
    ("alignment", r"training doc 0 .*gold span 'neumo' .* does not start and end on a token"),
    ("label", r"gold entity label\(s\) \['SYMPTOM'\] are predicted by none of its heads"),
    ("empty", r"holds no document"),
])
def test_bad_training_data_is_refused_before_any_step(make_nlp, case, message):
    nlp = make_nlp("xx")
    good = example(nlp, "Paciente con neumonía.", [(13, 21, "DISEASE")])
    if case == "language":
        examples = [good, example(nlp, "Patient with pneumonia.", [], lang="en")]
    elif case == "alignment":  # the corpus split "neumonía" in two; the pipeline's tokenizer does not
        examples = [example(nlp, "", [(13, 18, "DISEASE")], words=["Paciente", "con", "neumo", "nía."],
                            spaces=[True, True, False, False])]
    elif case == "label":
        examples = [example(nlp, "Paciente con fiebre.", [(13, 19, "SYMPTOM")])]
    else:
        examples = []
    with pytest.raises(TrainingDataError, match=message):
        nlp.initialize(lambda: examples)


def test_checkpoint_heads_that_do_not_match_the_labels_option_are_refused_at_initialize(make_nlp):
    nlp = make_nlp("xx", labels=["O", "B-DISEASE"])
    with pytest.raises(ValueError, match="Fix the `labels` config"):
        nlp.initialize(lambda: [])


def test_dt4h_spacy_train_runs_a_pipeline_config_on_spacys_loop(corpus, tmp_path, tiny_checkpoint, tiny_base_model):
    """`dt4h-spacy train configs/finetune.cfg` is `spacy train` with the same overrides: it writes
    model-best/model-last, whose network moved from the checkpoint it started from."""
    from typer.testing import CliRunner

    from dt4h_spacy.cli import app

    args = ["train", str(CONFIG), "--output", str(tmp_path / "out"), "--paths.train", str(corpus / "dev" / "es.spacy"),
            "--paths.dev", str(corpus / "dev" / "es.spacy"), "--paths.checkpoint", str(tiny_checkpoint),
            "--paths.base_model", str(tiny_base_model), "--training.max_steps", "2", "--training.eval_frequency", "2",
            "--training.optimizer.learn_rate", "0.002"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    trained = spacy.load(tmp_path / "out" / "model-last").get_pipe("dt4h_disease").tagger.model.state_dict()
    start = torch.load(tiny_checkpoint, weights_only=True)
    assert not torch.equal(trained["classifiers.disease_es_ner.weight"], start["classifiers.disease_es_ner.weight"])
    assert torch.equal(trained["classifiers.disease_it_ner.weight"], start["classifiers.disease_it_ner.weight"])
    assert (tmp_path / "out" / "model-best" / "config.cfg").is_file()
    for option, hint in (("--resume", "--paths.checkpoint"), ("--tasks=disease_es_ner", "--paths.train")):
        refused = CliRunner().invoke(app, [*args, option])
        assert refused.exit_code == 2 and hint in refused.output, refused.output
