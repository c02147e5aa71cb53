"""Tiny, offline stand-ins for xlm-roberta-base and the DT4H checkpoint.

Tests (ours and users') cannot download the real 1 GB model, so these builders make a
model of the same kind in a second: a Unigram tokenizer trained on a few es/it/ro
sentences with XLM-R's special tokens and post-processor, a 2-layer random XLM-R encoder
and one head per task, saved exactly as the authors save theirs.
"""

import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

from .model import MultiTaskTokenClassifier

TASKS = ("disease_es_ner", "disease_it_ner", "disease_ro_ner")
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
LAYOUTS = ("authors", "legacy", "prefixed", "nested")

SENTENCES = (
    "Paciente de 54 años con miocarditis aguda y fibrilación auricular paroxística.",
    "Se diagnosticó insuficiencia cardíaca congestiva con disnea de esfuerzo.",
    "Antecedentes de diabetes mellitus tipo 2, hipertensión arterial y dislipemia.",
    "La ecocardiografía mostró una miocardiopatía dilatada sin derrame pericárdico.",
    "El paciente refiere dolor torácico opresivo irradiado al brazo izquierdo.",
    "Paziente di 67 anni con infarto miocardico acuto e scompenso cardiaco.",
    "Si osserva fibrillazione atriale permanente e insufficienza mitralica severa.",
    "Anamnesi di diabete mellito, ipertensione arteriosa e broncopneumopatia cronica.",
    "La risonanza ha mostrato una cardiomiopatia ipertrofica ostruttiva.",
    "Pacient în vârstă de 61 de ani cu infarct miocardic acut și fibrilație atrială.",
    "Se constată insuficiență cardiacă congestivă și hipertensiune arterială.",
    "Antecedente de diabet zaharat tip 2 și boală pulmonară obstructivă cronică.",
    "Ecocardiografia a evidențiat cardiomiopatie dilatată cu regurgitare mitrală.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation . , ; : ( ) [ ] - / % + = ' \" ? ! « »",
)

PathLike = Union[str, Path]


def build_tokenizer(
    sentences: Iterable[str] = SENTENCES, whole_words: Iterable[str] = (), vocab_size: int = 600
) -> XLMRobertaTokenizerFast:
    """An XLM-R-style sentencepiece Unigram tokenizer over ``sentences``.

    The vocabulary is counted, not trained: ``tokenizers``' trainer is not deterministic
    across runs, and tests must be. ``whole_words`` get a piece of their own, as frequent
    words do in the real XLM-R vocabulary.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    words = [f"▁{normalizer.normalize_str(w)}" for w in dict.fromkeys(whole_words)]
    pieces = _unigram_pieces(
        (normalizer.normalize_str(s) for s in sentences), vocab_size - len(SPECIAL_TOKENS) - len(words) - 1
    )
    known = {piece for piece, _ in pieces}
    lowest = min(score for _, score in pieces)
    vocab = [(token, 0.0) for token in SPECIAL_TOKENS] + pieces + [(w, lowest) for w in words if w not in known]
    vocab.append(("<mask>", 0.0))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>")))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def _unigram_pieces(sentences: Iterable[str], size: int) -> List[Tuple[str, float]]:
    """Every character, plus the most useful repeated substrings, scored by log frequency."""
    counts: Counter = Counter()
    for sentence in sentences:
        for word in sentence.split():
            word = "▁" + word
            for i in range(len(word)):
                for j in range(i + 1, min(len(word), i + 10) + 1):
                    counts[word[i:j]] += 1
    singles = sorted(p for p in counts if len(p) == 1)
    repeated = sorted((p for p in counts if len(p) > 1 and counts[p] > 1), key=lambda p: (-counts[p] * len(p), p))
    pieces = singles + repeated[: max(0, size - len(singles))]
    total = sum(counts[p] for p in pieces)
    return [(piece, math.log(counts[piece] / total)) for piece in pieces]


def tiny_config(vocab_size: int, max_positions: int = 514, hidden: int = 32, layers: int = 2) -> XLMRobertaConfig:
    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_positions,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )


def build_tiny_base_model(path: PathLike, max_positions: int = 514, hidden: int = 32, layers: int = 2) -> Path:
    """A directory that stands in for ``FacebookAI/xlm-roberta-base``: config + tokenizer."""
    path = Path(path)
    lexicon = [w for lang in DISEASES for w in DISEASES[lang] + FILLERS[lang] + (ACUTE[lang],)]
    tokenizer = build_tokenizer(SENTENCES + tuple(lexicon), whole_words=lexicon)
    tokenizer.save_pretrained(path)
    tiny_config(len(tokenizer), max_positions, hidden, layers).save_pretrained(path)
    return path


def build_base_model_from_texts(
    texts: Sequence[str], path: PathLike, vocab_size: int = 2000, min_word_count: int = 2,
    hidden: int = 64, layers: int = 2,
) -> Path:
    """A stand-in base model whose vocabulary is counted from ``texts``: words seen
    ``min_word_count`` times get a piece of their own, the rest split into pieces, as rare
    words are by XLM-R. What the sample workflow and the demo model train from."""
    counts = Counter(word for text in texts for word in re.findall(r"\w+", text))
    frequent = sorted(word for word, n in counts.items() if n >= min_word_count)
    tokenizer = build_tokenizer(sentences=texts, whole_words=frequent, vocab_size=vocab_size + len(frequent))
    path = Path(path)
    tokenizer.save_pretrained(path)
    tiny_config(len(tokenizer), hidden=hidden, layers=layers).save_pretrained(path)
    return path


def build_tiny_model(base_model: PathLike, tasks: Sequence[str] = TASKS, seed: int = 0) -> MultiTaskTokenClassifier:
    """The authors' module (encoder + dropout + ModuleDict of heads) with random weights
    drawn from ``seed`` alone, so a fixture is the same under every transformers version."""
    from .training.start import start_network

    return start_network(base_model, tasks, seed).eval()


def layout_state_dict(state: Mapping[str, torch.Tensor], layout: str = "authors") -> Dict[str, object]:
    """Re-express an authors'-layout state dict in one of the layouts found in the wild."""
    if layout == "authors":
        return dict(state)
    if layout == "legacy":
        out: Dict[str, object] = {}
        for key, value in state.items():
            if key.startswith("classifiers."):
                _, task, param = key.split(".")
                key = f"{task[: -len('_ner')]}_classifier.{param}"
            out[key] = value
        return out
    if layout == "prefixed":
        return {f"model.{key}": value for key, value in state.items()}
    if layout == "nested":
        return {"model_state_dict": dict(state), "epoch": 3}
    raise ValueError(f"Unknown layout {layout!r}; choose from {LAYOUTS}.")


def build_tiny_checkpoint(
    path: PathLike,
    base_model: PathLike,
    tasks: Sequence[str] = TASKS,
    seed: int = 0,
    layout: str = "authors",
    model: Optional[MultiTaskTokenClassifier] = None,
) -> Path:
    """Save a (random or given) tiny model as ``torch.save(state_dict)``, in ``layout``."""
    model = model if model is not None else build_tiny_model(base_model, tasks, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(layout_state_dict(model.state_dict(), layout), path)
    return path


# -- a model that has learned something --------------------------------------------------

DISEASES: Dict[str, Tuple[str, ...]] = {
    "es": ("miocarditis", "diabetes", "neumonía"),
    "it": ("scompenso", "ipertensione", "polmonite"),
    "ro": ("infarct", "diabet", "pneumonie"),
}
FILLERS: Dict[str, Tuple[str, ...]] = {
    "es": ("el", "paciente", "presenta", "con", "de", "la", "dolor", "hoy", "y"),
    "it": ("il", "paziente", "presenta", "con", "di", "la", "dolore", "oggi", "e"),
    "ro": ("pacientul", "prezintă", "cu", "de", "la", "durere", "azi", "și", "un"),
}
ACUTE = {"es": "aguda", "it": "acuta", "ro": "acut"}
LANG_TASK = {"es": "disease_es_ner", "it": "disease_it_ner", "ro": "disease_ro_ner"}


def synthetic_sentences(lang: str, n: int, seed: int = 0) -> list:
    """Word lists with BIO tags: one or two diseases of ``lang`` among filler words.

    Two diseases and a filler word of the other languages appear untagged, so a head learns
    its own diseases rather than "any disease" or "any word it has not seen".
    """
    rng = random.Random(f"{lang}-{seed}")
    other_diseases = [d for other in DISEASES if other != lang for d in DISEASES[other]]
    other_fillers = [f for other in FILLERS if other != lang for f in FILLERS[other]]
    data = []
    for _ in range(n):
        words = [rng.choice(FILLERS[lang]) for _ in range(rng.randint(4, 9))]
        tags = ["O"] * len(words)
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(words) + 1)
            if rng.random() < 0.5:
                words[i:i] = [rng.choice(DISEASES[lang]), ACUTE[lang]]
                tags[i:i] = ["B-DISEASE", "I-DISEASE"]
            else:
                words[i:i] = [rng.choice(DISEASES[lang])]
                tags[i:i] = ["B-DISEASE"]
        for others in (other_diseases, other_diseases, other_fillers):
            i = rng.randrange(len(words) + 1)
            words[i:i] = [rng.choice(others)]
            tags[i:i] = ["O"]
        data.append((words, tags))
    return data


def clinical_sentence(rng: random.Random, lang: str = "es") -> str:
    """One case-report sentence of ``lang``'s tiny-model words: capitalized, with diseases
    bare, with their acute form, in parentheses, quotes or hyphenated, and a final mark."""
    words = [rng.choice(FILLERS[lang]) for _ in range(rng.randint(5, 14))]
    for _ in range(rng.randint(1, 3)):
        disease = rng.choice(DISEASES[lang])
        form = rng.choice(["{}", "{} " + ACUTE[lang], "({})", "«{}»", '"{}",', "{};", "{}-" + rng.choice(DISEASES[lang])])
        words.insert(rng.randrange(len(words) + 1), form.format(disease))
    return " ".join(words).capitalize() + rng.choice([".", ".", ":", "!", " ..."])


def clinical_case(seed: int, paragraphs: int = 6, lang: str = "es") -> str:
    """A case report of the tiny model's words: paragraphs of 3-7 sentences, mixed line
    endings, and sometimes a disease on the last line, so mentions may end a text or cross
    lines; several encoder windows long from about 30 paragraphs on."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [clinical_sentence(rng, lang) for _ in range(rng.randint(3, 7))]
        out.append(rng.choice([" ", "\n", "  "]).join(sentences))
    return rng.choice(["\n\n", "\n", "\r\n"]).join(out) + rng.choice(["", "\n", f" {DISEASES[lang][1]}\n"])


def _passage(sentences: Sequence[Tuple[List[str], List[str]]]) -> Tuple[List[str], List[str]]:
    words: List[str] = []
    tags: List[str] = []
    for sentence_words, sentence_tags in sentences:
        words += [*sentence_words, "."]
        tags += [*sentence_tags, "O"]
    return words, tags


def train_tiny_model(base_model: PathLike, steps: int = 200, seed: int = 0) -> MultiTaskTokenClassifier:
    """Teach a tiny model each head's own disease words, in a few seconds on a CPU.

    A fixture builder, not a training path: it needs what the component's ``update`` does
    not give, so it keeps the few lines of the authors' step. Whole four-sentence passages
    are one sequence (``update`` trains sentence by sentence), so a word reads the same in a
    short window as in a whole document, which the window-seam tests rely on; and the
    generator's words stay exactly as they were (some tags are an ``I-`` after an ``O``,
    which a spaCy ``Doc`` cannot hold), so the fixtures' weights, and the spans the tests
    assert, do not move. It shares the windows and padding of prediction and ``spacy train``.
    """
    from transformers import AutoTokenizer

    from .labels import default_labels
    from .windows import encode_words, make_windows, pad_ids

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = build_tiny_model(base_model, TASKS, seed).train()
    label_ids = {label: i for i, label in enumerate(default_labels("disease_es_ner"))}
    batches = []
    for lang, task in LANG_TASK.items():
        sentences = synthetic_sentences(lang, 96, seed)
        # 48 single sentences and 12 passages of four: the model also sees full stops and
        # long contexts, so a word reads the same in a short window as in a whole document.
        examples = sentences[:48] + [_passage(sentences[i:i + 4]) for i in range(48, 96, 4)]
        windows = make_windows(encode_words(tokenizer, [words for words, _ in examples]), 512, 128,
                               tokenizer.cls_token_id, tokenizer.sep_token_id)
        ids, mask = pad_ids([window.input_ids for window in windows], tokenizer.pad_token_id)
        targets = numpy.full(ids.shape, -100, dtype=numpy.int64)  # the loss looks at first subwords only
        for row, window in enumerate(windows):
            tags = numpy.array([label_ids[tag] for tag in examples[window.doc][1]], dtype=numpy.int64)
            targets[row, window.positions] = tags[window.words]
        batches.append((task, torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(targets)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # One thread: the same weights on every machine, and for a model this small two threads
    # mostly wait for each other (measured 5x slower on a busy 2-core CPU). Dropout draws
    # from a generator seeded here, not from whatever earlier code left in torch's global
    # one, so the weights do not depend on which tests ran before in the same process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in range(steps):
                task, ids, mask, targets = batches[step % len(batches)]
                optimizer.zero_grad(set_to_none=True)
                logits = model(ids, mask, task)
                torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                  ignore_index=-100).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


# -- the rest of the family: multilabel and single-task checkpoints ------------------------

FAMILY_HEADS = {"disease_es_ner": "disease", "disease_it_ner": "symptom", "disease_ro_ner": "procedure"}


def build_multilabel_checkpoint(
    path: PathLike, model: MultiTaskTokenClassifier, renames: Mapping[str, str] = FAMILY_HEADS
) -> Path:
    """``model`` saved as the multilingual multilabel checkpoint is: heads named by entity type
    alone (``classifiers.disease``, ``.symptom``, ``.procedure``), each serving every language.

    With the trained tiny model the ``disease`` head tags Spanish diseases, ``symptom``
    Italian ones and ``procedure`` Romanian ones, so each head's spans are known exactly.
    """
    state: Dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("classifiers."):
            _, task, param = key.split(".")
            if task not in renames:
                continue
            key = f"classifiers.{renames[task]}.{param}"
        state[key] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def build_stl_checkpoint(
    path: PathLike, base_model: PathLike, model: MultiTaskTokenClassifier, task: str,
    labels: Sequence[str] = ("O", "B-DISEASE", "I-DISEASE"),
) -> Path:
    """One head of ``model`` as a single-task Hugging Face checkpoint (``save_pretrained`` of
    ``XLMRobertaForTokenClassification`` + tokenizer), its labels listed in ``labels`` order
    (not sorted, unlike the ``.pt`` heads) and the head's rows permuted to match, so it tags
    exactly what ``task`` tags."""
    from transformers import AutoConfig, AutoTokenizer, XLMRobertaForTokenClassification

    from .labels import default_labels

    config = AutoConfig.from_pretrained(base_model)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    stl = XLMRobertaForTokenClassification(config)
    order = [default_labels(task).index(label) for label in labels]
    head = model.classifiers[task]
    state = {f"roberta.{k}": v for k, v in model.encoder.state_dict().items() if not k.startswith("pooler.")}
    state.update({"classifier.weight": head.weight[order], "classifier.bias": head.bias[order]})
    stl.load_state_dict(state, strict=False)
    path = Path(path)
    stl.save_pretrained(path)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(path)
    return path


# -- a negation tagger in BSC's format (dt4h_context's backend="tagger") ---------------------

NEGATION_TAGS = ("O", "B-NEG", "I-NEG", "B-NSCO", "I-NSCO", "B-UNC", "I-UNC", "B-USCO", "I-USCO")
NEGATION_CUES = {"sin": "NEG", "posible": "UNC"}


def negation_sentences(n: int, seed: int = 0) -> List[Tuple[List[str], List[str]]]:
    """Spanish filler sentences where ``sin`` negates and ``posible`` makes uncertain the disease
    after it (cue ``B-NEG``/``B-UNC``, disease ``B-NSCO``/``B-USCO``); other diseases are affirmed."""
    rng = random.Random(f"negation-{seed}")
    data = []
    for _ in range(n):
        words = [rng.choice(FILLERS["es"]) for _ in range(rng.randint(3, 7))]
        tags = ["O"] * len(words)
        i = rng.randrange(len(words) + 1)
        cue = rng.choice([None, "sin", "posible"])
        disease = [rng.choice(DISEASES["es"])]
        if cue is None:
            words[i:i] = disease
            tags[i:i] = ["O"]
        else:
            scope = "NSCO" if NEGATION_CUES[cue] == "NEG" else "USCO"
            words[i:i] = [cue, *disease]
            tags[i:i] = [f"B-{NEGATION_CUES[cue]}", f"B-{scope}"]
        data.append((words, tags))
    return data


def build_negation_tagger(path: PathLike, base_model: PathLike, steps: int = 150, seed: int = 0) -> Path:
    """A tiny token-classification model in the BSC negation tagger's format, trained for
    seconds on :func:`negation_sentences`, saved with ``save_pretrained`` (safetensors)."""
    from transformers import AutoTokenizer, XLMRobertaForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    config = tiny_config(len(tokenizer))
    config.num_labels = len(NEGATION_TAGS)
    config.id2label = dict(enumerate(NEGATION_TAGS))
    config.label2id = {tag: i for i, tag in enumerate(NEGATION_TAGS)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = XLMRobertaForTokenClassification(config).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            data = negation_sentences(256, seed)
            for step in range(steps):
                batch = data[(step * 16) % len(data):][:16]
                encoded = tokenizer([w for w, _ in batch], is_split_into_words=True, padding=True, return_tensors="pt")
                labels = torch.full(encoded["input_ids"].shape, -100)
                for row, (_, tags) in enumerate(batch):
                    seen = set()
                    for position, word in enumerate(encoded.word_ids(row)):
                        if word is not None and word not in seen:
                            seen.add(word)
                            labels[row, position] = config.label2id[tags[word]]
                loss = model(**encoded, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    path = Path(path)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
