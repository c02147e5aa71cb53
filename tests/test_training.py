"""The multi-task trainer: alignment, the authors' loop, checkpoints, resume, pipelines."""

from pathlib import Path
from typing import Dict, List

import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from thinc.api import Config
from transformers import AutoConfig, AutoModel, AutoTokenizer
from typer.testing import CliRunner

from dt4h_spacy.cli import app
from dt4h_spacy.testing import LANG_TASK, synthetic_sentences
from dt4h_spacy.training import train
from dt4h_spacy.training.blocks import lr_factor
from dt4h_spacy.training.data import IGNORE_INDEX, Unit, doc_units, encode_examples, epoch_plan

LABEL2ID = {"B-DISEASE": 0, "I-DISEASE": 1, "O": 2}

TINY_CONFIG = """
[paths]
corpus = null
base_model = null
init_checkpoint = null

[system]
seed = 0

[model]
@architectures = "dt4h.MultiTaskTokenClassifier.v1"
base_model = ${paths.base_model}
pretrained = false
init_checkpoint = ${paths.init_checkpoint}

[tasks]

[tasks.disease_es_ner]
@readers = "dt4h.TaskCorpus.v1"
train = "${paths.corpus}/train/es.spacy"
dev = "${paths.corpus}/dev/es.spacy"

[tasks.disease_it_ner]
@readers = "dt4h.TaskCorpus.v1"
train = "${paths.corpus}/train/it.spacy"
dev = "${paths.corpus}/dev/it.spacy"

[tasks.disease_ro_ner]
@readers = "dt4h.TaskCorpus.v1"
train = "${paths.corpus}/train/ro.spacy"
dev = "${paths.corpus}/dev/ro.spacy"

[training]
@misc = "dt4h.MultiTaskTrainer.v1"
epochs = 5
batch_size = 16
max_length = 64
stride = 16
learning_rate = 0.003
cpu_threads = 1
"""

# ---------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def tokenizer(tiny_base_model):
    return AutoTokenizer.from_pretrained(tiny_base_model)


def test_word_labels_go_on_first_subwords_and_everything_else_is_ignored(tokenizer):
    words = ("Paciente", "con", "miocarditis", "aguda", "y", "scompenso")
    labels = (2, 2, 0, 1, 2, 2)
    (example,) = encode_examples(tokenizer, [Unit(words, labels)])
    word_ids = tokenizer(list(words), is_split_into_words=True).word_ids()  # with <s> and </s>
    firsts = [word_ids.index(i) for i in range(len(words))]
    expected = [IGNORE_INDEX] * len(word_ids)
    for position, label in zip(firsts, labels):
        expected[position] = label
    assert example.targets.tolist() == expected
    assert example.input_ids.tolist() == tokenizer(list(words), is_split_into_words=True)["input_ids"]
    assert len(set(word_ids) - {None}) < len(word_ids) - 2, "the test needs a word split into several subwords"


def test_long_units_are_cut_into_inference_windows_with_each_word_labelled_once(tokenizer):
    words = tuple(["miocarditis", "aguda", "y", "dolor"] * 60)
    labels = tuple([0, 1, 2, 2] * 60)
    examples = encode_examples(tokenizer, [Unit(words, labels)], max_length=40, stride=10)
    assert len(examples) > 1
    assert all(len(e.input_ids) <= 40 for e in examples)
    targets = [t for e in examples for t in e.targets.tolist() if t != IGNORE_INDEX]
    assert sorted(targets) == sorted(labels)


def _doc(lang: str, words: List[str], tags: List[str], spaces=None) -> Doc:
    return Doc(spacy.blank(lang).vocab, words=words, spaces=spaces, ents=tags)


def test_sentences_end_at_punctuation_and_line_breaks_but_never_inside_an_entity():
    words = ["Dolor", ".", "Tiene", "enf", ".", "rara", "hoy", ".", "Fiebre", "\n", "Tos"]
    tags = ["O", "O", "O", "B-DISEASE", "I-DISEASE", "I-DISEASE", "O", "O", "O", "O", "O"]
    spaces = [False, True, True, False, False, True, False, True, False, False, False]
    units = doc_units(_doc("es", words, tags, spaces), LABEL2ID, "disease_es_ner")
    assert [u.words for u in units] == [
        ("Dolor", "."), ("Tiene", "enf", ".", "rara", "hoy", "."), ("Fiebre",), ("Tos",)
    ]
    assert units[1].labels == (2, 0, 1, 1, 2, 2)
    whole = doc_units(_doc("es", words, tags, spaces), LABEL2ID, "disease_es_ner", unit="doc")
    assert len(whole) == 1 and len(whole[0].words) == 10  # the line break is not a word


def test_sentence_boundaries_already_in_the_doc_win():
    doc = _doc("es", ["a", "b", ".", "c", "d"], ["O"] * 5)
    for token, start in zip(doc, [True, False, False, False, True]):
        token.is_sent_start = start
    assert [u.words for u in doc_units(doc, LABEL2ID, "disease_es_ner")] == [("a", "b", ".", "c"), ("d",)]


def test_an_entity_label_the_head_does_not_predict_is_refused():
    doc = _doc("es", ["dolor", "fuerte"], ["B-SYMPTOM", "I-SYMPTOM"])
    with pytest.raises(ValueError, match="--entity"):
        doc_units(doc, LABEL2ID, "disease_es_ner")


def test_sequential_plan_is_the_authors_loop_one_task_after_the_other():
    plan = epoch_plan({"a": 5, "b": 3}, batch_size=2, seed=0, epoch=0)
    assert [task for task, _ in plan] == ["a", "a", "a", "b", "b"]
    for task, n in (("a", 5), ("b", 3)):
        assert sorted(i for t, batch in plan if t == task for i in batch) == list(range(n))
    assert plan == epoch_plan({"a": 5, "b": 3}, batch_size=2, seed=0, epoch=0)
    assert plan != epoch_plan({"a": 5, "b": 3}, batch_size=2, seed=0, epoch=1)


def test_temperature_sampling_evens_out_task_sizes():
    sizes = {"big": 900, "small": 100}

    def small_share(sampling: str, temperature: float = 1.0) -> float:
        plan = epoch_plan(sizes, 10, seed=3, epoch=0, sampling=sampling, temperature=temperature)
        assert len(plan) == 100  # every mode runs an epoch's worth of steps
        return sum(task == "small" for task, _ in plan) / len(plan)

    assert 0.03 <= small_share("proportional") <= 0.2
    assert 0.35 <= small_share("temperature", 1000.0) <= 0.65
    # a task drawn more often than it has batches starts a fresh pass: no empty batches
    plan = epoch_plan(sizes, 10, seed=3, epoch=0, sampling="temperature", temperature=1000.0)
    assert all(len(batch) == 10 for _, batch in plan)


def test_warmup_then_linear_decay():
    assert [lr_factor(s, 10, 0.0, "constant") for s in (0, 9)] == [1.0, 1.0]
    assert [lr_factor(s, 10, 0.2, "linear") for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


# ---------------------------------------------------------------------- a real run


def _write_corpus(root: Path, langs=("es", "it", "ro"), n_train: int = 48, n_dev: int = 16) -> Path:
    """Docs of four synthetic sentences each ("." between), per language and split."""
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        for lang in langs:
            vocab = spacy.blank(lang).vocab
            sentences = synthetic_sentences(lang, n, seed)
            docs = []
            for k in range(0, n, 4):
                words, tags = [], []
                for w, t in sentences[k : k + 4]:
                    words += w + ["."]
                    tags += t + ["O"]
                docs.append(Doc(vocab, words=words, ents=tags))
            (root / split).mkdir(parents=True, exist_ok=True)
            DocBin(docs=docs).to_disk(root / split / f"{lang}.spacy")
    return root


def _config(**overrides) -> Config:
    config = Config().from_str(TINY_CONFIG, interpolate=False)
    for key, value in overrides.items():
        section, name = key.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[name] = value
    return config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus, tiny_base_model):
    output = tmp_path_factory.mktemp("run")
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model)})
    lines: List[str] = []
    result = train(config, output, log=lines.append)
    return result, output, lines


TEXTS = {
    "es": ("el paciente presenta miocarditis aguda y dolor hoy", [("miocarditis aguda", 21, 38)]),
    "it": ("il paziente con polmonite e dolore oggi", [("polmonite", 16, 25)]),
    "ro": ("pacientul prezintă pneumonie acut cu durere", [("pneumonie acut", 19, 33)]),
}


def _ents(nlp, text: str):
    return [(e.text, e.start_char, e.end_char) for e in nlp(text).ents]


def test_the_checkpoint_is_the_authors_layout_of_plain_tensors(run, tiny_base_model):
    result, _, _ = run
    state = torch.load(result.best_checkpoint, weights_only=True)
    hidden = AutoConfig.from_pretrained(tiny_base_model).hidden_size
    heads = {k for k in state if k.startswith("classifiers.")}
    assert heads == {f"classifiers.{task}.{p}" for task in LANG_TASK.values() for p in ("weight", "bias")}
    assert all(k.startswith("encoder.") for k in set(state) - heads)
    assert all(state[f"classifiers.{t}.weight"].shape == (3, hidden) for t in LANG_TASK.values())

    class AuthorsModel(torch.nn.Module):  # their MultiTaskNERModel, attribute for attribute
        def __init__(self, config, num_labels: Dict[str, int]):
            super().__init__()
            self.encoder = AutoModel.from_config(config)
            self.dropout = torch.nn.Dropout(0.1)
            self.classifiers = torch.nn.ModuleDict({t: torch.nn.Linear(config.hidden_size, n) for t, n in num_labels.items()})

    authors = AuthorsModel(AutoConfig.from_pretrained(tiny_base_model), {t: 3 for t in LANG_TASK.values()})
    authors.load_state_dict(state, strict=True)


def test_our_component_on_the_trained_pt_finds_the_trained_diseases(run, make_nlp):
    result, _, _ = run
    for lang, (text, expected) in TEXTS.items():
        assert _ents(make_nlp(lang, checkpoint=result.best_checkpoint), text) == expected, lang


def test_each_language_gets_a_loadable_pipeline_with_identical_entities(run, make_nlp):
    result, _, _ = run
    assert sorted(result.pipelines) == sorted(LANG_TASK.values()) + ["multilingual"]
    for lang, (text, expected) in TEXTS.items():
        nlp = spacy.load(result.pipelines[LANG_TASK[lang]])
        assert nlp.lang == lang and nlp.meta["name"] == "dt4h_disease"
        assert nlp.get_pipe("dt4h_disease").languages == {lang: (LANG_TASK[lang],)}
        assert _ents(nlp, text) == expected
        other = make_nlp(lang, checkpoint=result.best_checkpoint)
        for extra in ("la diabetes de hoy", "il paziente con ipertensione acuta", "azi diabet și infarct"):
            assert _ents(nlp, extra) == _ents(other, extra)


def test_one_multilingual_pipeline_holds_the_encoder_once_and_finds_what_each_language_pipeline_finds(run):
    result, output, _ = run
    path = result.pipelines["multilingual"]
    assert path == output / "pipelines" / "multilingual"
    assert [p.name for p in path.rglob("*.safetensors")] == ["model.safetensors"]
    nlp = spacy.load(path)
    assert nlp.lang == "xx" and nlp.meta["name"] == "dt4h_disease"
    assert nlp.get_pipe("dt4h_disease").languages == {lang: (task,) for lang, task in LANG_TASK.items()}
    strict_f = [result.best_scores[task]["strict"]["f1"] for task in LANG_TASK.values()]
    assert nlp.meta["performance"]["strict_f"] == pytest.approx(sum(strict_f) / 3)
    for lang, (text, expected) in TEXTS.items():
        single = spacy.load(result.pipelines[LANG_TASK[lang]])
        for sample in (text, "la diabetes de hoy", "il paziente con ipertensione acuta", "azi diabet și infarct"):
            doc = nlp.make_doc(sample)
            doc._.dt4h_lang = lang
            assert _ents(nlp, doc) == _ents(single, sample), (lang, sample)
        assert _ents(nlp, spacy.blank(lang).make_doc(text)) == expected  # or routed by the doc's language


def test_a_training_folder_passed_as_a_model_or_checkpoint_gets_the_path_to_pass(run, tmp_path, tiny_base_model):
    _, output, _ = run
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "note.txt").write_text(TEXTS["es"][0], encoding="utf-8")
    predict = ["predict", str(texts), str(tmp_path / "out.tsv"), "--lang", "es"]
    checkpoint = [*predict, "--base-model", str(tiny_base_model), "--checkpoint"]
    ok = CliRunner().invoke(app, [*checkpoint, str(output / "last")])  # its trainer_state.pt is no checkpoint
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(app, [*checkpoint, str(output)])
    assert refused.exit_code == 2 and f"pass {output / 'best' / 'model.pt'}" in refused.output
    pipeline = output / "pipelines" / "disease_es_ner"
    refused = CliRunner().invoke(app, [*checkpoint, str(pipeline)])
    assert refused.exit_code == 2 and f"--model {pipeline}" in refused.output and "spacy.load" in refused.output
    for command in (predict, ["visualize", str(texts), str(tmp_path / "page.html"), "--lang", "es"]):
        refused = CliRunner().invoke(app, [*command, "--model", str(output)])
        assert refused.exit_code == 2 and "E053" not in refused.output, refused.output
        assert "is not a saved spaCy pipeline" in refused.output and str(pipeline) in refused.output
        assert str(output / "pipelines" / "multilingual") in refused.output


def test_dev_scores_are_logged_each_epoch_and_the_best_is_kept(run):
    import json

    result, output, lines = run
    records = [json.loads(line) for line in (output / "scores.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [9, 18, 27, 36, 45]  # 3 tasks x 3 batches of 16 sentences, 5 epochs
    for record in records:
        assert set(record["scores"]) == set(LANG_TASK.values())
        for scores in record["scores"].values():
            assert set(scores) == {"strict", "char_f1"}
    assert result.best_score == max(r["score"] for r in records) > 0.8
    assert len(lines) == 5 and "disease_es_ner strict F1" in lines[0]
    assert (output / "config.cfg").is_file() and (output / "last" / "trainer_state.pt").is_file()


def test_same_seed_same_weights(run, tmp_path, corpus, tiny_base_model):
    result, _, _ = run
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model)})
    again = train(config, tmp_path, log=lambda line: None)
    first, second = (torch.load(p, weights_only=True) for p in (result.last_checkpoint, again.last_checkpoint))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


class Interrupt(Exception):
    pass


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, corpus, tiny_base_model):
    # evaluating every 5 steps (9 per epoch) lets the run stop mid-epoch
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model),
                        "training.epochs": 2, "training.eval_frequency": 5})
    straight = train(config, tmp_path / "straight", log=lambda line: None)

    def stop(line: str) -> None:
        if "step 5 " in line:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path / "resumed", log=stop)
    resumed = train(config, tmp_path / "resumed", resume=True, log=lambda line: None)
    a, b = (torch.load(r.last_checkpoint, weights_only=True) for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.steps == straight.steps == 18
    assert resumed.best_score == straight.best_score


def test_resume_refuses_a_changed_config(tmp_path, corpus, tiny_base_model):
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model), "training.epochs": 1})
    train(config, tmp_path, log=lambda line: None)
    with pytest.raises(ValueError, match="batch_size"):
        train(config, tmp_path, resume=True, overrides={"training.batch_size": 8}, log=lambda line: None)


def test_fine_tuning_keeps_every_head_and_a_new_language_is_a_config_section(run, tmp_path, tiny_base_model):
    result, _, _ = run
    corpus = _write_corpus(tmp_path / "corpus", langs=("es",), n_train=16, n_dev=8)
    for split in ("train", "dev"):  # English-task data: any annotated word lists will do here
        (corpus / split / "es.spacy").rename(corpus / split / "en.spacy")
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model),
                        "paths.init_checkpoint": str(result.best_checkpoint), "training.epochs": 1})
    del config["tasks"]["disease_it_ner"], config["tasks"]["disease_ro_ner"], config["tasks"]["disease_es_ner"]
    config["tasks"]["disease_en_ner"] = {"@readers": "dt4h.TaskCorpus.v1", "train": f"{corpus}/train/en.spacy",
                                         "dev": f"{corpus}/dev/en.spacy"}
    tuned = train(config, tmp_path / "out", log=lambda line: None)
    before = torch.load(result.best_checkpoint, weights_only=True)
    after = torch.load(tuned.best_checkpoint, weights_only=True)
    assert set(after) == set(before) | {"classifiers.disease_en_ner.weight", "classifiers.disease_en_ner.bias"}
    for task in LANG_TASK.values():  # heads without data are kept as they were
        assert torch.equal(after[f"classifiers.{task}.weight"], before[f"classifiers.{task}.weight"])
    assert not torch.equal(after["encoder.embeddings.word_embeddings.weight"], before["encoder.embeddings.word_embeddings.weight"])
    assert list(tuned.pipelines) == ["disease_en_ner"]  # one language: no multilingual pipeline
    nlp = spacy.load(tuned.pipelines["disease_en_ner"])
    assert nlp.lang == "en" and nlp.get_pipe("dt4h_disease").languages == {"en": ("disease_en_ner",)}


def test_tasks_trains_only_the_named_heads_without_the_other_languages_data(run, tmp_path, tiny_base_model):
    result, _, _ = run
    corpus = _write_corpus(tmp_path / "corpus", langs=("es", "it"), n_train=16, n_dev=8)  # no ro data at all
    config_path = tmp_path / "tiny.cfg"
    config_path.write_text(TINY_CONFIG, encoding="utf-8")
    args = ["train", str(config_path), "--output", str(tmp_path / "out"), "--paths.corpus", str(corpus),
            "--paths.base_model", str(tiny_base_model), "--paths.init_checkpoint", str(result.best_checkpoint),
            "--training.epochs", "1"]
    tuned = CliRunner().invoke(app, [*args, "--tasks", "disease_es_ner,disease_it_ner"])
    assert tuned.exit_code == 0, tuned.output
    before = torch.load(result.best_checkpoint, weights_only=True)
    after = torch.load(tmp_path / "out" / "best" / "model.pt", weights_only=True)
    assert set(after) == set(before)  # the untrained ro head is kept, as it was
    assert torch.equal(after["classifiers.disease_ro_ner.weight"], before["classifiers.disease_ro_ner.weight"])
    assert not torch.equal(after["classifiers.disease_es_ner.weight"], before["classifiers.disease_es_ner.weight"])
    assert sorted(p.name for p in (tmp_path / "out" / "pipelines").iterdir()) == ["disease_es_ner", "disease_it_ner", "multilingual"]
    multilingual = spacy.load(tmp_path / "out" / "pipelines" / "multilingual")
    assert multilingual.get_pipe("dt4h_disease").languages == {"es": ("disease_es_ner",), "it": ("disease_it_ner",)}
    assert sorted(Config().from_disk(tmp_path / "out" / "config.cfg", interpolate=False)["tasks"]) == ["disease_es_ner", "disease_it_ner"]
    unknown = CliRunner().invoke(app, [*args, "--tasks", "disease_es_ner,disease_en_ner"])
    assert unknown.exit_code == 2
    assert "['disease_en_ner']" in unknown.output and "['disease_es_ner', 'disease_it_ner', 'disease_ro_ner']" in unknown.output


def test_bad_settings_and_missing_data_are_reported(tmp_path, corpus, tiny_base_model):
    base = {"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model)}
    with pytest.raises(Exception, match="task_sampling"):
        train(_config(**base, **{"training.task_sampling": "round-robin"}), tmp_path)
    with pytest.raises(FileNotFoundError, match="dt4h-spacy convert"):
        train(_config(**{**base, "paths.corpus": str(tmp_path / "nowhere")}), tmp_path)
    with pytest.raises(Exception, match="pretrained = false"):
        train(_config(**base, **{"model.pretrained": True}), tmp_path)


def test_the_train_command_takes_overrides_like_spacy_train(tmp_path, corpus, tiny_base_model):
    config_path = tmp_path / "tiny.cfg"
    config_path.write_text(TINY_CONFIG, encoding="utf-8")
    args = ["train", str(config_path), "--output", str(tmp_path / "out"), "--paths.corpus", str(corpus),
            "--paths.base_model", str(tiny_base_model), "--training.epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "disease_ro_ner: pipeline" in result.output
    assert len((tmp_path / "out" / "scores.jsonl").read_text().splitlines()) == 1
    bad = CliRunner().invoke(app, args[:-2] + ["--training.unit", "paragraph"])
    assert bad.exit_code == 2 and "unit" in bad.output


def test_without_dev_data_the_last_weights_are_the_result(tmp_path, corpus, tiny_base_model):
    config = _config(**{"paths.corpus": str(corpus), "paths.base_model": str(tiny_base_model), "training.epochs": 1})
    for task in LANG_TASK.values():
        config["tasks"][task]["dev"] = None
    result = train(config, tmp_path, log=lambda line: None)
    assert result.best_score is None
    assert result.best_checkpoint.read_bytes() == result.last_checkpoint.read_bytes()
    assert "performance" not in spacy.load(result.pipelines["disease_es_ner"]).meta
