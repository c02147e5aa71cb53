"""Every checkpoint layout found in the wild loads; every bad one fails with a clear message."""

import os

import pytest
import torch

from dt4h_spacy import CheckpointError
from dt4h_spacy.checkpoint import head_sizes, load_checkpoint_file, normalize_state_dict
from dt4h_spacy.testing import LAYOUTS, build_tiny_checkpoint, build_tiny_model, build_tiny_base_model

TEXT = "Paciente con miocarditis aguda y fibrilación auricular.\nDiabetes mellitus tipo 2."


def ents(doc):
    return [(e.start_char, e.end_char, e.label_, round(e._.dt4h_score, 5)) for e in doc.ents]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_entities(tmp_path, make_nlp, tiny_base_model, layout):
    path = build_tiny_checkpoint(tmp_path / f"{layout}.pt", tiny_base_model, layout=layout)
    assert ents(make_nlp("es", checkpoint=path)(TEXT)) == ents(make_nlp("es")(TEXT))


def test_legacy_heads_are_named_like_the_authors_tasks(tmp_path, tiny_base_model):
    path = build_tiny_checkpoint(tmp_path / "legacy.pt", tiny_base_model, layout="legacy")
    assert "disease_es_classifier.weight" in torch.load(path, weights_only=True)
    assert head_sizes(load_checkpoint_file(path)) == {
        "disease_es_ner": 3,
        "disease_it_ner": 3,
        "disease_ro_ner": 3,
    }


def test_safetensors_checkpoint_loads(tmp_path, make_nlp, tiny_base_model, tiny_checkpoint):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file(torch.load(tiny_checkpoint, weights_only=True), str(path))
    assert ents(make_nlp("es", checkpoint=path)(TEXT)) == ents(make_nlp("es")(TEXT))


def test_sibling_checkpoints_give_their_own_entity_type(tmp_path, make_nlp, tiny_base_model):
    path = build_tiny_checkpoint(
        tmp_path / "symptom.pt", tiny_base_model, tasks=("symptom_es_ner", "symptom_it_ner", "symptom_ro_ner")
    )
    nlp = make_nlp("it", checkpoint=path)
    doc = nlp("Paziente con dolore toracico, dispnea e febbre alta; tosse secca da tre giorni.")
    assert nlp.get_pipe("dt4h_disease").labels == ("SYMPTOM",)
    assert {e.label_ for e in doc.ents} <= {"SYMPTOM"}


def load(make_nlp, path, **config):
    return make_nlp("es", checkpoint=path, **config).get_pipe("dt4h_disease").tagger


def test_missing_file(make_nlp, tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load(make_nlp, tmp_path / "nope.pt")


def test_random_bytes_and_truncated_files(make_nlp, tmp_path, tiny_checkpoint):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint|not a plain state dict"):
        load(make_nlp, junk)
    data = tiny_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    for cut in (10, 100, 1000, 5000, len(data) // 2, len(data) - 10):  # the unpickler fails differently at each
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load(make_nlp, truncated)


def test_not_a_multitask_checkpoint_shows_what_was_found(make_nlp, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"bert.embeddings.weight": torch.zeros(2, 2), "classifier.weight": torch.zeros(3, 2)}, path)
    with pytest.raises(CheckpointError, match=r"not a DT4H multi-task checkpoint.*bert\.embeddings\.weight"):
        load(make_nlp, path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        normalize_state_dict([1, 2, 3])


def test_missing_and_unexpected_encoder_keys_are_listed(make_nlp, tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    dropped = {k: v for k, v in state.items() if ".layer.1." not in k}
    torch.save(dropped, tmp_path / "dropped.pt")
    with pytest.raises(CheckpointError, match=r"Missing from the checkpoint: \['encoder\.layer\.1\."):
        load(make_nlp, tmp_path / "dropped.pt")
    extra = {**state, "encoder.encoder.layer.7.output.dense.weight": torch.zeros(32, 64)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"not expected: \['encoder\.layer\.7\.output\.dense\.weight'\]"):
        load(make_nlp, tmp_path / "extra.pt")


def test_head_width_must_match_the_encoder(make_nlp, tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["classifiers.disease_es_ner.weight"] = torch.zeros(3, 48)
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match=r"disease_es_ner.*\(3, 48\).*hidden size is 32"):
        load(make_nlp, tmp_path / "wide.pt")


def test_encoder_of_another_size_is_refused(make_nlp, tmp_path):
    other = build_tiny_base_model(tmp_path / "big", hidden=48)
    path = build_tiny_checkpoint(tmp_path / "big.pt", other)
    with pytest.raises(CheckpointError, match="do not belong together|do not fit"):
        load(make_nlp, path)


def test_unknown_task_lists_the_available_heads(make_nlp):
    with pytest.raises(CheckpointError, match=r"disease_en_ner.*'disease_es_ner', 'disease_it_ner', 'disease_ro_ner'"):
        load(make_nlp, None, tasks={"en": "disease_en_ner"})


def test_labels_override_must_fit_the_head(make_nlp):
    with pytest.raises(ValueError, match="predicts 3 labels but 2 were given"):
        load(make_nlp, None, labels=["B-DISEASE", "O"])
    nlp = make_nlp("es", labels=["B-ILLNESS", "I-ILLNESS", "O"])
    assert {e.label_ for e in nlp(TEXT).ents} <= {"ILLNESS"}


def test_base_model_without_tokenizer(make_nlp, tmp_path, tiny_base_model):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((tiny_base_model / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="has no tokenizer files.*save_pretrained"):
        load(make_nlp, None, base_model=str(bare))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load(make_nlp, None, base_model=str(empty))


def test_offline_hub_name_says_how_to_pass_a_local_path(make_nlp, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time, so not via the env
    with pytest.raises(CheckpointError, match="local path"):
        load(make_nlp, "BSC-NLP4BIA/not-a-cached-model")


@pytest.mark.parametrize("offline_mode", [True, False])
def test_an_unreachable_hub_base_model_fails_at_once_naming_every_way_to_pass_a_directory(
    make_nlp, monkeypatch, tiny_checkpoint, offline_mode
):
    """Not after half a minute of the hub libraries' retries: they are not even asked."""
    import socket

    import transformers
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    def not_asked(*args, **kwargs):
        raise AssertionError("the hub libraries were asked")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline_mode)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_asked)
    with pytest.raises(CheckpointError) as caught:
        load(make_nlp, tiny_checkpoint, base_model="FacebookAI/xlm-roberta-base")
    message = str(caught.value)
    assert "'FacebookAI/xlm-roberta-base': it is not in the local Hugging Face cache and the Hub cannot be reached" in message
    assert "`base_model`" in message and "--base-model DIR" in message and "--paths.base_model DIR" in message
    assert ".." not in message


class Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_never_runs_by_default(make_nlp, tmp_path, tiny_checkpoint):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    state = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "evil.pt"
    torch.save({**state, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle"):
        load(make_nlp, path)
    assert not marker.exists()


def test_full_module_pickle_loads_only_with_explicit_opt_in(make_nlp, tmp_path, tiny_base_model):
    path = tmp_path / "module.pt"
    torch.save(build_tiny_model(tiny_base_model), path)
    with pytest.raises(CheckpointError, match="refused.*allow_unsafe_pickle"):
        load(make_nlp, path)
    tagger = load(make_nlp, path, allow_unsafe_pickle=True)
    assert set(tagger.schemes) == {"disease_es_ner", "disease_it_ner", "disease_ro_ner"}


def test_hub_checkpoint_is_the_repo_named_pt_then_the_only_pt(monkeypatch, tmp_path, tiny_checkpoint):
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError

    from dt4h_spacy.checkpoint import resolve_checkpoint

    asked = []

    def fake_download(repo_id, filename):
        asked.append(filename)
        if filename == "model_v2.pt":
            return str(tiny_checkpoint)
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    monkeypatch.setattr("dt4h_spacy.checkpoint.hub_unreachable", lambda repo_id, filename: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: ["README.md", "model_v2.pt"])
    assert resolve_checkpoint("BSC-NLP4BIA/DT4H_XLM-R_mtl_es-it-ro_disease") == tiny_checkpoint
    assert asked == ["DT4H_XLM-R_mtl_es-it-ro_disease.pt", "model_v2.pt"]
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: ["a.pt", "b.pt"])
    with pytest.raises(CheckpointError, match=r"2 \.pt files.*checkpoint_file"):
        resolve_checkpoint("owner/repo")


def test_a_folder_resolves_to_its_one_checkpoint_or_says_which_path_to_pass(tmp_path, tiny_checkpoint):
    from dt4h_spacy.checkpoint import resolve_checkpoint

    training = tmp_path / "training"
    for sub in ("best", "last"):
        (training / sub).mkdir(parents=True)
        (training / sub / "model.pt").write_bytes(tiny_checkpoint.read_bytes())
    (training / "last" / "trainer_state.pt").write_bytes(b"optimizer state")
    (training / "config.cfg").write_text("[training]\n")
    pipeline = training / "pipelines" / "disease_es_ner"
    (pipeline / "dt4h_disease").mkdir(parents=True)
    for name in ("config.cfg", "meta.json"):
        (pipeline / name).write_text("{}")
    (pipeline / "dt4h_disease" / "model.safetensors").write_bytes(b"weights")

    assert resolve_checkpoint(str(training / "last")) == training / "last" / "model.pt"
    with pytest.raises(CheckpointError, match=rf"holds no checkpoint file.*train. output folder: pass {training}/best/model\.pt"):
        resolve_checkpoint(str(training))
    with pytest.raises(CheckpointError, match=rf"saved spaCy pipeline.*--model {pipeline} \(CLI\) or spacy\.load"):
        resolve_checkpoint(str(pipeline))
    with pytest.raises(CheckpointError, match=rf"holds saved spaCy pipelines.*{pipeline}"):
        resolve_checkpoint(str(training / "pipelines"))
    (tmp_path / "two").mkdir()
    for name in ("a.pt", "b.bin"):
        (tmp_path / "two" / name).write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"holds 2 checkpoint files \(\['a\.pt', 'b\.bin'\]\); pass the path of one file"):
        resolve_checkpoint(str(tmp_path / "two"))
