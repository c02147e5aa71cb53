"""Throughput of the dt4h_disease component against the encoder alone and the usual alternatives.

One run, same synthetic documents, same weights (an xlm-roberta-base-shaped network with
random weights and the real 250,002-row embedding), timed in interleaved rounds so that
other load on the machine hits every method alike:

- ``raw``: encoder + head forward on exactly the windows the component builds, pre-tokenized
  and pre-padded, in the component's batches: the limit;
- ``ours``: ``nlp.pipe`` end to end, spaCy tokenization included, default config;
- ``hf``: transformers' ``pipeline("token-classification")`` on raw text, stride 128, holding
  the same encoder and the es head;
- ``per_doc``: the procedure published with the model, reimplemented: each raw text
  tokenized with overflowing windows (512, stride 128), every window padded to 512, one
  forward per window, votes per word, BIO over characters;
- ``ours_int8``: the component with ``quantize = true``; ``ours_gpu_bf16`` when CUDA exists.

Also checked, on tiny trained models: int8 entities against fp32, and entities near window
seams against a model that reads each document whole. The last printed line is one JSON
object. Run ``python benchmarks/throughput.py --quick`` for a version that takes under a
minute (about 35 s on 2 cores).
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy
import spacy
import torch
from spacy.language import Language
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, pipeline

from dt4h_spacy.inference import WordTagger
from dt4h_spacy.model import MultiTaskTokenClassifier
from dt4h_spacy.spans import word_texts, word_tokens
from dt4h_spacy.testing import (
    LANG_TASK,
    TASKS,
    build_tiny_base_model,
    build_tiny_checkpoint,
    build_tokenizer,
    synthetic_sentences,
    train_tiny_model,
)
from dt4h_spacy.windows import encode_words, make_windows, plan_batches, window_bounds

LANGS = ("es", "it", "ro")
LABELS = ("B-DISEASE", "I-DISEASE", "O")
MAX_LENGTH = 512
STRIDE = 128

# Clinical-register sentences written for this benchmark, so that documents hold long
# words that split into several subwords, as real notes do with XLM-R's vocabulary.
CLINICAL = {
    "es": (
        "Paciente de 68 años que ingresa por disnea progresiva y edemas en miembros inferiores.",
        "En la exploración física destaca crepitantes bibasales y un soplo sistólico mitral.",
        "La analítica muestra elevación de troponina, creatinina de 1,4 mg/dl y anemia normocítica.",
        "Se inicia tratamiento diurético intravenoso con buena respuesta clínica.",
        "Antecedentes personales: hipertensión arterial, dislipemia y tabaquismo activo.",
        "Al alta se pauta anticoagulación oral y seguimiento en consultas de cardiología.",
    ),
    "it": (
        "Paziente di 72 anni ricoverato per dispnea ingravescente ed edemi declivi.",
        "All'esame obiettivo si rilevano rantoli crepitanti basali e soffio sistolico.",
        "Gli esami ematochimici evidenziano aumento della troponina e insufficienza renale lieve.",
        "Si imposta terapia diuretica endovenosa con progressivo miglioramento clinico.",
        "Anamnesi patologica remota: ipertensione arteriosa, dislipidemia e fumo attivo.",
        "Alla dimissione si prescrive terapia anticoagulante orale e controllo ambulatoriale.",
    ),
    "ro": (
        "Pacient în vârstă de 70 de ani internat pentru dispnee progresivă și edeme gambiere.",
        "La examenul clinic se constată raluri crepitante bazale și suflu sistolic apical.",
        "Analizele de laborator arată troponină crescută și insuficiență renală ușoară.",
        "Se inițiază tratament diuretic intravenos cu ameliorare clinică progresivă.",
        "Antecedente personale patologice: hipertensiune arterială, dislipidemie și fumat activ.",
        "La externare se recomandă anticoagulare orală și control cardiologic periodic.",
    ),
}


# -- assets ---------------------------------------------------------------------------


def sentence_pool(lang: str) -> List[str]:
    """Clinical sentences plus the tiny lexicon's disease sentences of one language."""
    lexicon = [" ".join(words) + "." for words, _ in synthetic_sentences(lang, 40, seed=7)]
    return list(CLINICAL[lang]) + lexicon


def make_corpus(n_docs: int, min_words: int, max_words: int, seed: int = 0) -> List[Tuple[str, str]]:
    """``(lang, text)`` documents of ``min_words``–``max_words`` words, paragraphs on new lines."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        lang = LANGS[i % len(LANGS)]
        pool = sentence_pool(lang)
        target = rng.randint(min_words, max_words)
        paragraphs: List[str] = []
        sentences: List[str] = []
        n_words = 0
        while n_words < target:
            sentence = rng.choice(pool)
            sentences.append(sentence)
            n_words += len(sentence.split())
            if len(sentences) >= rng.randint(3, 6):
                paragraphs.append(" ".join(sentences))
                sentences = []
        paragraphs.append(" ".join(sentences))
        docs.append((lang, "\n".join(p for p in paragraphs if p)))
    return docs


def base_config(layers: int) -> XLMRobertaConfig:
    """xlm-roberta-base's shape; ``layers`` is lowered only for ``--quick``."""
    return XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )


def build_assets(workdir: Path, layers: int) -> None:
    """Tokenizer, config and random base-sized checkpoint; run in a child to keep RSS honest."""
    base = workdir / "base"
    # Pieces are counted on text with punctuation set apart, so that, as in XLM-R's vocabulary,
    # no piece glues punctuation to a word and "▁." is a piece of its own. Whole-word pieces
    # only for the short common words: long clinical words split into several subwords.
    pool = [re.sub(r"([^\w\s])", r" \1 ", s) for lang in LANGS for s in sentence_pool(lang)]
    common = [w for w, _ in Counter(w for s in pool for w in s.split() if len(w) <= 7).most_common(150)]
    tokenizer = build_tokenizer(pool, whole_words=common, vocab_size=1500)
    tokenizer.save_pretrained(base)
    config = base_config(layers)
    config.save_pretrained(base)
    model = MultiTaskTokenClassifier.from_config(config, {task: len(LABELS) for task in TASKS}, seed=0).eval()
    torch.save(model.state_dict(), workdir / "model.pt")


# -- the methods ----------------------------------------------------------------------


def make_nlps(workdir: Path, **config) -> Dict[str, Language]:
    """One pipeline per language, all holding one loaded network, as a multilingual service would."""
    nlps = {}
    for lang in LANGS:
        nlps[lang] = spacy.blank(lang)
        cfg = {"checkpoint": str(workdir / "model.pt"), "base_model": str(workdir / "base"), **config}
        nlps[lang].add_pipe("dt4h_disease", config=cfg)
    first = nlps[LANGS[0]].get_pipe("dt4h_disease")
    for nlp in nlps.values():
        component = nlp.get_pipe("dt4h_disease")
        component._tagger, component._routes = first.tagger, first._routes
    return nlps


def run_ours(nlps: Dict[str, Language], docs: Sequence[Tuple[str, str]]) -> int:
    """``nlp.pipe`` per language, as a user would; returns the number of entities."""
    found = 0
    for lang, nlp in nlps.items():
        found += sum(len(d.ents) for d in nlp.pipe([text for doc_lang, text in docs if doc_lang == lang]))
    return found


class Raw:
    """The windows and batches the component builds (per language, as ``run_ours`` calls it),
    pre-built and pre-padded, so that only the encoder and head forward is timed."""

    def __init__(self, tagger: WordTagger, nlps: Dict[str, Language], docs: Sequence[Tuple[str, str]]):
        self.tagger = tagger
        tok = tagger.tokenizer
        self.n_subwords = 0
        self.batches: List[Tuple[torch.Tensor, torch.Tensor, str]] = []
        for lang, nlp in nlps.items():
            words = [[t.text for t in nlp.make_doc(text) if not t.is_space] for doc_lang, text in docs if doc_lang == lang]
            windows = make_windows(encode_words(tok, words), tagger.max_length, tagger.stride, tok.cls_token_id, tok.sep_token_id)
            self.n_subwords += sum(len(w.input_ids) for w in windows)
            for batch in plan_batches(windows, tagger.batch_size, tagger.max_batch_subwords):
                longest = max(len(windows[i].input_ids) for i in batch)
                ids = torch.full((len(batch), longest), tok.pad_token_id)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : len(windows[i].input_ids)] = torch.from_numpy(windows[i].input_ids)
                    mask[row, : len(windows[i].input_ids)] = 1
                self.batches.append((ids, mask, LANG_TASK[lang]))

    @torch.inference_mode()
    def __call__(self) -> None:
        model = self.tagger.model
        for ids, mask, task in self.batches:
            model.classifiers[task](model.encode(ids, mask))


def hf_pipeline(tagger: WordTagger):
    """transformers' token-classification pipeline around our encoder and es head (no copy)."""
    config = tagger.model.encoder.config.to_dict()
    config.update(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    with torch.device("meta"):
        model = XLMRobertaForTokenClassification(XLMRobertaConfig(**config))
    model.roberta = tagger.model.encoder
    model.classifier = tagger.model.classifiers["disease_es_ner"]
    model.dropout = torch.nn.Dropout(0.0)
    return pipeline(
        "token-classification", model=model.eval(), tokenizer=tagger.tokenizer, aggregation_strategy="first", stride=STRIDE, device="cpu"
    )


def run_hf(pipe, docs: Sequence[Tuple[str, str]]) -> int:
    return sum(len(found) for found in pipe([text for _, text in docs]))


def run_per_doc(tagger: WordTagger, docs: Sequence[Tuple[str, str]]) -> int:
    """The authors' one-document-at-a-time procedure, written anew; returns entity count."""
    return sum(len(per_doc_entities(tagger, text, LANG_TASK[lang])) for lang, text in docs)


@torch.inference_mode()
def per_doc_entities(tagger: WordTagger, text: str, task: str) -> List[Tuple[int, int]]:
    enc = tagger.tokenizer(
        text,
        truncation=True,
        max_length=MAX_LENGTH,
        stride=STRIDE,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
        return_tensors="pt",
    )
    votes: Dict[Tuple[int, int], List[str]] = defaultdict(list)
    for w in range(enc["input_ids"].shape[0]):
        logits = tagger.model(enc["input_ids"][w : w + 1], enc["attention_mask"][w : w + 1], task)
        predicted = logits[0].argmax(-1).tolist()
        offsets = enc["offset_mapping"][w].tolist()
        spans: Dict[int, List[int]] = {}
        for i, word in enumerate(enc.word_ids(w)):
            if word is not None:
                spans.setdefault(word, [i, i])[1] = i
        for first, last in spans.values():
            start, end = offsets[first][0], offsets[last][1]
            if end > start:
                votes[(start, end)].append(LABELS[predicted[first]])
    entities: List[Tuple[int, int]] = []
    current = None
    for span in sorted(votes):
        counts = Counter(votes[span]).most_common()
        best = [label for label, n in counts if n == counts[0][1]]
        label = next((l for l in best if l != "O"), best[0])
        if label.startswith("B-"):
            entities.append(current) if current else None
            current = list(span)
        elif label.startswith("I-") and current:
            current[1] = span[1]
        elif label == "O" and current:
            entities.append(current)
            current = None
    if current:
        entities.append(current)
    return [trim_punct(text, s, e) for s, e in entities]


def trim_punct(text: str, start: int, end: int) -> Tuple[int, int]:
    while start < end and (text[start].isspace() or unicodedata.category(text[start]).startswith("P")):
        start += 1
    while start < end and (text[end - 1].isspace() or unicodedata.category(text[end - 1]).startswith("P")):
        end -= 1
    return start, end


# -- timing ---------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_rounds(
    methods: Dict[str, Callable[[int], object]], round_words: Sequence[int], done: Dict[Tuple[str, int], float]
) -> Dict[str, float]:
    """Median words/s of each method over rounds; the order rotates, pairs in ``done`` are reused.

    Each round runs every method on the same documents back to back, and the median drops
    rounds that other load on a shared machine slowed down.
    """
    names = list(methods)
    for r in range(len(round_words)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if (name, r) not in done:
                start = time.perf_counter()
                methods[name](r)
                done[(name, r)] = time.perf_counter() - start
            print(f"  round {r + 1}/{len(round_words)} {name}: {done[(name, r)]:.2f} s", file=sys.stderr, flush=True)
    return {name: statistics.median(round_words[r] / done[(name, r)] for r in range(len(round_words))) for name in names}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread, above all on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- quality checks on tiny trained models ---------------------------------------------


def entity_set(nlp: Language, texts: Sequence[str]) -> List[set]:
    return [{(e.start_char, e.end_char) for e in doc.ents} for doc in nlp.pipe(texts)]


def long_lexicon_docs(lang: str, n_docs: int, n_sentences: int, seed: int) -> List[str]:
    sentences = synthetic_sentences(lang, n_docs * n_sentences, seed=seed)
    return [
        " ".join(" ".join(words) + "." for words, _ in sentences[i * n_sentences : (i + 1) * n_sentences])
        for i in range(n_docs)
    ]


def int8_agreement(workdir: Path) -> Dict[str, float]:
    """Entities of the trained tiny model with and without int8 dynamic quantization."""
    base = build_tiny_base_model(workdir / "tiny_base")
    checkpoint = build_tiny_checkpoint(workdir / "tiny_trained.pt", base, model=train_tiny_model(base))
    same = total = 0
    for lang in LANGS:
        texts = long_lexicon_docs(lang, 10, 20, seed=11)
        nlps = [spacy.blank(lang) for _ in range(2)]
        for nlp, quantize in zip(nlps, (False, True)):
            nlp.add_pipe("dt4h_disease", config={"checkpoint": str(checkpoint), "base_model": str(base), "quantize": quantize})
        for fp32, int8 in zip(*(entity_set(nlp, texts) for nlp in nlps)):
            same += len(fp32 & int8)
            total += max(len(fp32), len(int8))
    return {"entities": total, "identical": same, "identical_fraction": round(same / max(total, 1), 4)}


def seam_check(workdir: Path, docs: int = 6) -> Dict[str, float]:
    """Windowed (64 subwords, stride 16) against one whole-text window, on a trained model."""
    base = build_tiny_base_model(workdir / "seam_base", max_positions=8194)
    checkpoint = build_tiny_checkpoint(workdir / "seam.pt", base, model=train_tiny_model(base))
    counts = Counter()
    for lang in LANGS:
        texts = long_lexicon_docs(lang, docs // len(LANGS), 150, seed=3)
        whole, windowed = (spacy.blank(lang) for _ in range(2))
        cfg = {"checkpoint": str(checkpoint), "base_model": str(base)}
        whole.add_pipe("dt4h_disease", config={**cfg, "max_length": 8192})
        windowed.add_pipe("dt4h_disease", config={**cfg, "max_length": 64, "stride": 16})
        tagger = windowed.get_pipe("dt4h_disease").tagger
        for text, reference, found in zip(texts, entity_set(whole, texts), entity_set(windowed, texts)):
            doc = windowed.make_doc(text)
            near = near_seam_chars(tagger, doc)
            for start, end in reference:
                kind = "identical" if (start, end) in found else (
                    "split" if sum(start <= s and e <= end for s, e in found) > 1 else "lost_or_changed"
                )
                counts[f"whole_{kind}"] += 1
                if near[start:end].any():
                    counts[f"near_seam_{kind}"] += 1
            counts["windowed_entities"] += len(found)
            counts["windowed_extra"] += len(found - reference)
            counts["windows"] += len(make_windows(encode_words(tagger.tokenizer, [[t.text for t in doc if not t.is_space]]), 64, 16, 0, 2))
    whole_total = sum(v for k, v in counts.items() if k.startswith("whole_"))
    near_total = sum(v for k, v in counts.items() if k.startswith("near_seam_"))
    return {
        **counts,
        "identical_fraction": round(counts["whole_identical"] / max(whole_total, 1), 4),
        "near_seam_identical_fraction": round(counts["near_seam_identical"] / max(near_total, 1), 4),
    }


def near_seam_chars(tagger: WordTagger, doc) -> numpy.ndarray:
    """Characters of words within 8 subwords of a window cut."""
    idx = word_tokens(doc)
    (enc,) = encode_words(tagger.tokenizer, [word_texts(doc, idx)])
    n = len(enc.subword_ids)
    bounds = window_bounds(n, tagger.max_length - 2, tagger.stride)
    cuts = numpy.array([b for window in bounds for b in window if 0 < b < n] or [-100])
    close = numpy.abs(enc.first_subword[:, None] - cuts[None, :]).min(axis=1) <= 8
    near = numpy.zeros(len(doc.text) + 1, dtype=bool)
    for word in idx[close & (enc.first_subword >= 0)].tolist():
        near[doc[word].idx : doc[word].idx + len(doc[word])] = True
    return near


# -- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-layer encoder, 6 short docs: under a minute")
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--min-words", type=int, default=300)
    parser.add_argument("--max-words", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the built model here")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_assets(args.build_only, args.layers)
        return
    if args.quick:
        args.docs, args.min_words, args.max_words, args.layers, args.rounds = 6, 150, 500, 2, 3
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(benchmark(args, workdir)))


def benchmark(args: argparse.Namespace, workdir: Path) -> Dict:
    began = time.perf_counter()
    marker = workdir / f"built-{args.layers}-layers"
    if not marker.exists():
        subprocess.run([sys.executable, __file__, "--build-only", str(workdir), "--layers", str(args.layers)], check=True)
        marker.touch()
    corpus = make_corpus(args.docs, args.min_words, args.max_words)
    n_words = sum(len(text.split()) for _, text in corpus)
    rounds = [corpus[r :: args.rounds] for r in range(args.rounds)]
    warmup = [(lang, text[:400]) for lang, text in corpus[:3]]

    # The component alone runs round 0 first, so the peak RSS so far is its own.
    nlps = make_nlps(workdir)
    shared = nlps["es"].get_pipe("dt4h_disease").tagger
    run_ours(nlps, warmup)
    start = time.perf_counter()
    run_ours(nlps, rounds[0])
    done = {("ours", 0): time.perf_counter() - start}
    rss_ours = peak_rss_mb()

    raws = [Raw(shared, nlps, chunk) for chunk in rounds]
    hf = hf_pipeline(shared)
    int8 = make_nlps(workdir, quantize=True)
    methods: Dict[str, Callable[[int], object]] = {
        "ours": lambda r: run_ours(nlps, rounds[r]),
        "raw": lambda r: raws[r](),
        "hf": lambda r: run_hf(hf, rounds[r]),
        "per_doc": lambda r: run_per_doc(shared, rounds[r]),
        "ours_int8": lambda r: run_ours(int8, rounds[r]),
    }
    Raw(shared, nlps, warmup)()
    run_hf(hf, warmup), run_per_doc(shared, warmup), run_ours(int8, warmup)
    round_words = [sum(len(text.split()) for _, text in chunk) for chunk in rounds]
    wps = {name: round(v, 1) for name, v in timed_rounds(methods, round_words, done).items()}
    if torch.cuda.is_available():
        gpu = make_nlps(workdir, device="cuda", precision="bf16")
        run_ours(gpu, warmup)
        start = time.perf_counter()
        run_ours(gpu, corpus)
        wps["ours_gpu_bf16"] = round(n_words / (time.perf_counter() - start), 1)
    with one_thread():
        checks = {"int8": int8_agreement(workdir), "seam": seam_check(workdir)}
    return {
        "words_per_s": wps,
        "ratio": {
            "ours_vs_raw": round(wps["ours"] / wps["raw"], 3),
            "ours_vs_hf": round(wps["ours"] / wps["hf"], 3),
            "ours_vs_per_doc": round(wps["ours"] / wps["per_doc"], 3),
            "int8_vs_fp32": round(wps["ours_int8"] / wps["ours"], 3),
        },
        "peak_rss_mb": round(rss_ours, 1),
        "int8_agreement": checks["int8"],
        "seam_check": checks["seam"],
        "corpus": {
            "docs": len(corpus),
            "words": n_words,
            "subwords_in_windows": sum(r.n_subwords for r in raws),
            "per_doc_subwords": sum(per_doc_windows(shared, text) for _, text in corpus) * MAX_LENGTH,
        },
        "model": {"layers": args.layers, "hidden": 768, "heads": 12, "vocab": 250002, "weights": "random"},
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "load_average_1min": os.getloadavg()[0],
        "rounds": args.rounds,
        "date": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - began, 1),
    }


def per_doc_windows(tagger: WordTagger, text: str) -> int:
    enc = tagger.tokenizer(text, truncation=True, max_length=MAX_LENGTH, stride=STRIDE, return_overflowing_tokens=True)
    return len(enc["input_ids"])


if __name__ == "__main__":
    main()
