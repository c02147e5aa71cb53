"""Throughput of the dt4h_disease component against the encoder alone and the usual alternatives.

One run, same clinical-case-like documents, same weights (an xlm-roberta-base-shaped network
with random weights and the real 250,002-row embedding), timed in interleaved rounds so that
other load on the machine hits every method alike:

- ``raw``: encoder + head forward on exactly the windows and batches the component builds,
  pre-tokenized and pre-padded: the limit;
- ``ours``: ``nlp.pipe`` end to end, spaCy tokenization included, default config;
- ``simple``: a plain loop that feeds each document's subwords once, in chunks of at most
  510 subwords cut at word boundaries, one chunk per forward pass, no padding;
- ``hf``: transformers' ``pipeline("token-classification")`` on raw text, stride 128, holding
  the same encoder and the es head;
- ``per_doc``: the procedure published with the model, run by the package's own
  ``dt4h_spacy.authors`` (``compat="authors"``) one document and one padded 512-subword
  window per forward pass, as the authors' script does;
- ``ours_int8``: the component with ``quantize = true`` (CPU only).

Words/s is the median over rounds. Each round holds different documents, so a ratio is the
median of the per-round ratios (two methods on the same documents); ``ratio_per_round`` and
each target's ``round_range`` show the spread, inside which a target met or missed is noise.

``--device cuda --precision bf16`` runs every method on the GPU under bf16 autocast. Also
measured: subwords through the encoder per document subword, and, on tiny trained models,
int8 entities against fp32, entities near window seams of an over-long sentence against a
model that reads it whole, and how the two reading modes (``words``, ``authors``) agree.
The load average is recorded at start and end; ratios measured on a busy machine (other
processes' load above half a core per core: at the end, the run's own threads are subtracted)
are marked ``"reliable": false``. The last printed line is one JSON object (also written to
``--output``). ``--quick``: a 2-layer smoke run of under a minute.
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
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy
import spacy
import torch
import transformers
from spacy.language import Language
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, pipeline

from dt4h_spacy.allocator import keep_freed_memory
from dt4h_spacy.authors import authors_entities
from dt4h_spacy.inference import WordTagger
from dt4h_spacy.model import MultiTaskTokenClassifier
from dt4h_spacy.runtime import cpu_flags
from dt4h_spacy.sentences import sentence_starts
from dt4h_spacy.spans import word_texts, word_tokens
from dt4h_spacy.testing import (
    LANG_TASK,
    TASKS,
    build_tiny_base_model,
    build_tiny_checkpoint,
    build_tokenizer,
    clinical_case,
    clinical_sentence,
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
    """What the benchmark tokenizer's vocabulary is counted from: the clinical sentences and
    case-report sentences of the tiny lexicon."""
    rng = random.Random(7)
    return list(CLINICAL[lang]) + [clinical_sentence(rng, lang) for _ in range(40)]


def make_corpus(n_docs: int, min_words: int, max_words: int, seed: int = 0) -> List[Tuple[str, str]]:
    """``(lang, text)`` case reports of ``min_words``–``max_words`` words: paragraphs of 3–7
    sentences (the clinical ones above and :func:`~dt4h_spacy.testing.clinical_sentence`'s,
    with parentheses, quotes, colons), separated by blank lines or line breaks."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        lang = LANGS[i % len(LANGS)]
        target = rng.randint(min_words, max_words)
        paragraphs: List[str] = []
        n_words = 0
        while n_words < target:
            sentences = [
                rng.choice(CLINICAL[lang]) if rng.random() < 0.5 else clinical_sentence(rng, lang)
                for _ in range(rng.randint(3, 7))
            ]
            paragraphs.append(" ".join(sentences))
            n_words += sum(len(sentence.split()) for sentence in sentences)
        docs.append((lang, rng.choice(["\n\n", "\n"]).join(paragraphs)))
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
        self.subwords = self.padded = 0
        self.batches: List[Tuple[torch.Tensor, torch.Tensor, str]] = []
        for lang, nlp in nlps.items():
            spacy_docs = [nlp.make_doc(text) for doc_lang, text in docs if doc_lang == lang]
            words = [word_tokens(doc) for doc in spacy_docs]
            windows = make_windows(
                encode_words(tok, [word_texts(doc, w) for doc, w in zip(spacy_docs, words)]),
                tagger.max_length, tagger.stride, tok.cls_token_id, tok.sep_token_id,
                [sentence_starts(doc, w) for doc, w in zip(spacy_docs, words)],
            )
            for batch in plan_batches(windows, tagger.batch_size, tagger.max_batch_subwords):
                longest = max(len(windows[i].input_ids) for i in batch)
                ids = torch.full((len(batch), longest), tok.pad_token_id)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : len(windows[i].input_ids)] = torch.from_numpy(windows[i].input_ids)
                    mask[row, : len(windows[i].input_ids)] = 1
                self.subwords += int(mask.sum())
                self.padded += mask.numel()
                self.batches.append((ids.to(tagger.device), mask.to(tagger.device), LANG_TASK[lang]))

    @torch.inference_mode()
    def __call__(self) -> None:
        model = self.tagger.model
        for ids, mask, task in self.batches:
            with self.tagger._autocast():
                hidden = model.encode(ids, mask)
            model.classifiers[task](hidden.float()).argmax(-1).cpu()


class Simple:
    """Each document's subwords once: chunks of at most 510 subwords cut at word boundaries,
    one chunk per forward pass, no padding; the plain loop that computes least."""

    def __init__(self, tagger: WordTagger):
        self.tagger = tagger

    def chunks(self, text: str) -> List[List[int]]:
        tok = self.tagger.tokenizer
        enc = tok(text, add_special_tokens=False, return_attention_mask=False, verbose=False)
        ids, word_ids = enc["input_ids"], numpy.array([-1 if w is None else w for w in enc.word_ids()])
        word_starts = numpy.flatnonzero(numpy.r_[True, word_ids[1:] != word_ids[:-1]])
        size = self.tagger.max_length - 2
        out, lo = [], 0
        while lo < len(ids):
            hi = len(ids) if lo + size >= len(ids) else int(word_starts[numpy.searchsorted(word_starts, lo + size, side="right") - 1])
            hi = hi if hi > lo else lo + size  # a single word longer than a chunk
            out.append([tok.cls_token_id, *ids[lo:hi], tok.sep_token_id])
            lo = hi
        return out

    @torch.inference_mode()
    def __call__(self, docs: Sequence[Tuple[str, str]]) -> int:
        model, device, found = self.tagger.model, self.tagger.device, 0
        for lang, text in docs:
            for chunk in self.chunks(text):
                ids = torch.tensor([chunk], device=device)
                with self.tagger._autocast():
                    hidden = model.encode(ids, torch.ones_like(ids))
                found += int((model.classifiers[LANG_TASK[lang]](hidden.float()).argmax(-1) == 0).sum().cpu())
        return found


def hf_pipeline(tagger: WordTagger):
    """transformers' token-classification pipeline around our encoder and es head (no copy)."""
    config = tagger.model.encoder.config.to_dict()
    config.update(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    with torch.device("meta"):
        model = XLMRobertaForTokenClassification(XLMRobertaConfig(**config))
    model.roberta = tagger.model.encoder
    model.classifier = tagger.model.classifiers["disease_es_ner"]
    model.dropout = torch.nn.Dropout(0.0)
    return pipeline(
        "token-classification", model=model.eval(), tokenizer=tagger.tokenizer, aggregation_strategy="first",
        stride=STRIDE, device=tagger.device,
    )


def run_hf(pipe, tagger: WordTagger, docs: Sequence[Tuple[str, str]]) -> int:
    with tagger._autocast():
        return sum(len(found) for found in pipe([text for _, text in docs]))


def per_doc_tagger(tagger: WordTagger) -> WordTagger:
    """The shared network, one window per forward pass: the authors' script's schedule."""
    return WordTagger(
        model=tagger.model, tokenizer=tagger.tokenizer, schemes=tagger.schemes, max_length=MAX_LENGTH, stride=STRIDE,
        batch_size=1, device=tagger.device, precision=tagger.precision,
    )


def run_per_doc(tagger: WordTagger, docs: Sequence[Tuple[str, str]]) -> int:
    """The authors' procedure (``dt4h_spacy.authors``), one document at a time; entity count."""
    return sum(len(authors_entities(tagger, [text], [(LANG_TASK[lang],)])[0]) for lang, text in docs)


# -- timing ---------------------------------------------------------------------------


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_info() -> Dict[str, object]:
    """The CPU's model and the vector flags that decide what int8 and bf16 gain on it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "flags": None}
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    present = cpu_flags()  # the reader precision="auto" decides by
    return {"model": model.group(1).strip() if model else platform.machine(),
            "flags": [flag for flag in CPU_FLAGS if flag in present]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_rounds(
    methods: Dict[str, Callable[[int], object]], round_words: Sequence[int], done: Dict[Tuple[str, int], float]
) -> Dict[str, List[float]]:
    """Words/s of each method in each round; the order rotates, pairs in ``done`` are reused.

    Each round runs every method on the same documents back to back, so the ratio of two
    methods within one round is a paired measurement; the median over rounds drops rounds
    that other load on a shared machine slowed down.
    """
    names = list(methods)
    for r in range(len(round_words)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if (name, r) not in done:
                start = time.perf_counter()
                methods[name](r)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                done[(name, r)] = time.perf_counter() - start
            print(f"  round {r + 1}/{len(round_words)} {name}: {done[(name, r)]:.2f} s", file=sys.stderr, flush=True)
    return {name: [round_words[r] / done[(name, r)] for r in range(len(round_words))] for name in names}


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


def long_lexicon_docs(lang: str, n_docs: int, n_sentences: int, seed: int, stop: str = ".") -> List[str]:
    """Documents of the tiny lexicon's sentences; with ``stop=""`` each is one long sentence."""
    sentences = synthetic_sentences(lang, n_docs * n_sentences, seed=seed)
    return [
        " ".join(" ".join(words) + stop for words, _ in sentences[i * n_sentences : (i + 1) * n_sentences])
        for i in range(n_docs)
    ]


def tiny_trained(workdir: Path, name: str, max_positions: int = 514) -> Tuple[Path, Path]:
    base = build_tiny_base_model(workdir / f"{name}_base", max_positions=max_positions)
    return base, build_tiny_checkpoint(workdir / f"{name}.pt", base, model=train_tiny_model(base))


def int8_agreement(workdir: Path) -> Dict[str, float]:
    """Entities of the trained tiny model with and without int8 dynamic quantization."""
    base, checkpoint = tiny_trained(workdir, "tiny_trained")
    same = total = 0
    for lang in LANGS:
        texts = [clinical_case(11 + i, paragraphs=8, lang=lang) for i in range(10)]
        nlps = [spacy.blank(lang) for _ in range(2)]
        for nlp, quantize in zip(nlps, (False, True)):
            nlp.add_pipe("dt4h_disease", config={"checkpoint": str(checkpoint), "base_model": str(base), "quantize": quantize})
        for fp32, int8 in zip(*(entity_set(nlp, texts) for nlp in nlps)):
            same += len(fp32 & int8)
            total += max(len(fp32), len(int8))
    return {"entities": total, "identical": same, "identical_fraction": round(same / max(total, 1), 4)}


def seam_check(workdir: Path, docs: int = 6) -> Dict[str, float]:
    """An over-long sentence in windows (64 subwords, stride 16) against one whole-text window,
    on a trained model: the only text still read in overlapping windows."""
    base, checkpoint = tiny_trained(workdir, "seam", max_positions=8194)
    counts = Counter()
    for lang in LANGS:
        texts = long_lexicon_docs(lang, docs // len(LANGS), 150, seed=3, stop="")
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
    """Characters of words within 8 subwords of a window cut (the doc is one sentence)."""
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


class EncoderCount:
    """Counts the subwords (and padded positions) every forward pass of ``encoder`` reads.
    ``padded_only`` counts from the input's shape alone: no device sync inside a timed run."""

    def __init__(self, encoder: torch.nn.Module, padded_only: bool = False):
        self.subwords = self.padded = 0
        self.padded_only = padded_only
        self.handle = encoder.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.padded += ids.numel()
        if not self.padded_only:
            mask = kwargs.get("attention_mask")
            self.subwords += int(mask.sum()) if mask is not None else ids.numel()

    def close(self) -> Dict[str, int]:
        self.handle.remove()
        return {"subwords": self.subwords, "padded": self.padded}


def reading_modes(workdir: Path, n_docs: int = 4) -> Dict[str, object]:
    """``words`` and ``authors`` on the trained tiny model, on case reports several 512-subword
    windows long: how many mentions agree exactly, and subwords read per document subword."""
    base, checkpoint = tiny_trained(workdir, "modes")
    out: Dict[str, object] = {}
    total = Counter()
    for lang in LANGS:
        texts = [clinical_case(100 + i, paragraphs=40, lang=lang) for i in range(n_docs)]
        found = {}
        for mode in ("words", "authors"):
            nlp = spacy.blank(lang)
            nlp.add_pipe("dt4h_disease", config={"checkpoint": str(checkpoint), "base_model": str(base), "compat": mode})
            tagger = nlp.get_pipe("dt4h_disease").tagger
            count = EncoderCount(tagger.model.encoder)
            docs = list(nlp.pipe(texts))
            read = count.close()
            total[f"{mode}_subwords"] += read["subwords"]
            total[f"{mode}_padded"] += read["padded"]
            found[mode] = [
                {(e.start_char, e.end_char) for e in doc.ents} if mode == "words" else {(s, e) for s, e, _, _ in doc._.dt4h_chars}
                for doc in docs
            ]
        same = sum(len(w & a) for w, a in zip(found["words"], found["authors"]))
        union = sum(len(w | a) for w, a in zip(found["words"], found["authors"]))
        words, authors = (sum(len(d) for d in found[m]) for m in ("words", "authors"))
        out[lang] = {"words_mentions": words, "authors_mentions": authors, "identical": same,
                     "strict_f1_between": round(2 * same / max(words + authors, 1), 4)}
        total["same"] += same
        total["union"] += union
        total["document_subwords"] += sum(len(tagger.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for t in texts)
    doc_subwords = total["document_subwords"]
    out["subwords_per_document_subword"] = {
        "words": round(total["words_subwords"] / doc_subwords, 3),
        "words_padded": round(total["words_padded"] / doc_subwords, 3),
        "authors": round(total["authors_subwords"] / doc_subwords, 3),
        "authors_padded": round(total["authors_padded"] / doc_subwords, 3),
    }
    out["docs_per_language"] = n_docs
    return out


# -- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-layer encoder, 6 short docs: under a minute")
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--min-words", type=int, default=300)
    parser.add_argument("--max-words", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--output", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--no-checks", action="store_true", help="skip the tiny-model quality checks")
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
        result = json.dumps(benchmark(args, workdir))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(result + "\n", encoding="utf-8")
    print(result)


TARGETS = {"ours_vs_raw": 1 / 1.05, "ours_vs_simple": 1.0, "ours_vs_per_doc": 1.35, "ours_vs_hf": 1.35, "int8_vs_fp32": 1.8}


def benchmark(args: argparse.Namespace, workdir: Path) -> Dict:
    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    cpu = args.device == "cpu"
    marker = workdir / f"built-{args.layers}-layers"
    if not marker.exists():
        subprocess.run([sys.executable, __file__, "--build-only", str(workdir), "--layers", str(args.layers)], check=True)
        marker.touch()
    corpus = make_corpus(args.docs, args.min_words, args.max_words)
    n_words = sum(len(text.split()) for _, text in corpus)
    rounds = [corpus[r :: args.rounds] for r in range(args.rounds)]
    warmup = [(lang, text[:400]) for lang, text in corpus[:3]]

    # The component alone runs round 0 first, so the peak RSS so far is its own.
    nlps = make_nlps(workdir, device=args.device, precision=args.precision)
    shared = nlps["es"].get_pipe("dt4h_disease").tagger
    run_ours(nlps, warmup)
    count = EncoderCount(shared.model.encoder)
    start = time.perf_counter()
    run_ours(nlps, rounds[0])
    done = {("ours", 0): time.perf_counter() - start}
    counted_round0 = count.close()
    rss_ours = peak_rss_mb()

    raws = [Raw(shared, nlps, chunk) for chunk in rounds]
    assert counted_round0 == {"subwords": raws[0].subwords, "padded": raws[0].padded}, "raw must replay ours' batches"
    simple = Simple(shared)
    per_doc = per_doc_tagger(shared)
    per_doc_read: Dict[int, int] = {}

    def run_per_doc_counted(r: int) -> None:
        """The authors' windows padded to 512, counted from their own forward passes."""
        count = EncoderCount(shared.model.encoder, padded_only=True)
        run_per_doc(per_doc, rounds[r])
        per_doc_read[r] = count.close()["padded"]
    hf = hf_pipeline(shared)
    methods: Dict[str, Callable[[int], object]] = {
        "ours": lambda r: run_ours(nlps, rounds[r]),
        "raw": lambda r: raws[r](),
        "simple": lambda r: simple(rounds[r]),
        "hf": lambda r: run_hf(hf, shared, rounds[r]),
        "per_doc": run_per_doc_counted,
    }
    if cpu and args.precision == "fp32":
        int8 = make_nlps(workdir, quantize=True)
        methods["ours_int8"] = lambda r: run_ours(int8, rounds[r])
        run_ours(int8, warmup)
    Raw(shared, nlps, warmup)()
    simple(warmup), run_hf(hf, shared, warmup), run_per_doc(per_doc, warmup)
    round_words = [sum(len(text.split()) for _, text in chunk) for chunk in rounds]
    per_round = timed_rounds(methods, round_words, done)
    wps = {name: round(statistics.median(v), 1) for name, v in per_round.items()}
    load_end = os.getloadavg()[0]

    document_subwords = sum(len(shared.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for _, t in corpus)
    ours_subwords = sum(r.subwords for r in raws)
    per_doc_subwords = sum(per_doc_read.values())
    simple_subwords = sum(len(c) for _, text in corpus for c in simple.chunks(text))
    pairs = {"ours_vs_raw": ("ours", "raw"), "ours_vs_simple": ("ours", "simple"), "ours_vs_hf": ("ours", "hf"),
             "ours_vs_per_doc": ("ours", "per_doc"), "int8_vs_fp32": ("ours_int8", "ours")}
    pairs = {name: pair for name, pair in pairs.items() if pair[0] in wps}
    # Rounds hold different documents, so two methods are compared within each round (the
    # same words) and the median taken over rounds; the spread shows what is noise.
    ratio_rounds = {name: [round(x / y, 3) for x, y in zip(per_round[a], per_round[b])] for name, (a, b) in pairs.items()}
    ratio = {name: round(statistics.median(values), 3) for name, values in ratio_rounds.items()}
    # At the end the 1-minute load average still counts this run's own torch threads.
    others_end = load_end - (torch.get_num_threads() if cpu else 1)
    busy = max(load_start, others_end) > 0.5 * (os.cpu_count() or 1)
    checks = {}
    if not args.no_checks:
        with one_thread():
            checks = {"seam_check": seam_check(workdir), "reading_modes": reading_modes(workdir)}
            if "ours_int8" in wps:
                checks["int8_agreement"] = int8_agreement(workdir)
    return {
        "words_per_s": wps,
        "ratio": ratio,
        "ratio_per_round": ratio_rounds,
        "targets": {
            name: {"value": ratio[name], "target": round(target, 3), "met": ratio[name] >= target,
                   "round_range": [min(ratio_rounds[name]), max(ratio_rounds[name])]}
            for name, target in TARGETS.items() if name in ratio
        },
        "reliable": cpu and not busy or not cpu,
        "load_average_1min": {"start": load_start, "end": load_end, "end_others": round(others_end, 2),
                              "cpus": os.cpu_count()},
        "encoder_subwords_per_document_subword": {
            "ours": round(ours_subwords / document_subwords, 3),
            "ours_padded": round(sum(r.padded for r in raws) / document_subwords, 3),
            "simple": round(simple_subwords / document_subwords, 3),
            "per_doc": round(per_doc_subwords / document_subwords, 3),
        },
        "peak_rss_mb": round(rss_ours, 1),
        **checks,
        "corpus": {
            "docs": len(corpus),
            "words": n_words,
            "document_subwords": document_subwords,
            "ours_subwords": ours_subwords,
            "ours_windows": sum(len(b[0]) for r in raws for b in r.batches),
            "per_doc_subwords": per_doc_subwords,
        },
        "model": {"layers": args.layers, "hidden": 768, "heads": 12, "vocab": 250002, "weights": "random"},
        "machine": {
            "device": args.device,
            "precision": args.precision,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "spacy": spacy.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu": cpu_info(),
            "malloc_keeps_freed_memory": keep_freed_memory() if cpu else None,  # the CPU tagger set it
        },
        "rounds": args.rounds,
        "date": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - began, 1),
    }


if __name__ == "__main__":
    main()
