"""How much dt4h_context costs: words/s of the rules alone, and its share of a base-sized
NER pipeline's CPU time (dt4h_disease on a random XLM-R with base's 12 layers and 768 hidden
units, built offline; a random network costs what the trained one costs).

    OMP_NUM_THREADS=1 python benchmarks/context_speed.py --docs 24
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import spacy
from throughput import cpu_info
import torch

from dt4h_spacy.testing import build_tiny_base_model, build_tiny_checkpoint

SENTENCES = [
    "Paciente de 67 años con antecedentes de hipertensión arterial y diabetes mellitus tipo 2.",
    "Niega dolor torácico, disnea o palpitaciones.",
    "Sin fiebre ni signos de infección de la herida quirúrgica.",
    "Se descarta tromboembolismo pulmonar mediante angio-TC.",
    "Sospecha de endocarditis infecciosa, pendiente de hemocultivos.",
    "Madre con cardiopatía isquémica; padre fallecido por neoplasia de colon.",
    "En la exploración presenta edemas en miembros inferiores y crepitantes bibasales.",
    "No se puede descartar una neumonía basal derecha, por lo que se inicia antibioterapia.",
    "Se recomienda control en consultas y acudir a urgencias si presenta fiebre.",
    "Ecocardiograma: fracción de eyección conservada, sin derrame pericárdico.",
]


def note(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(sentences))


def seconds(pipe, docs) -> float:
    started = time.process_time()
    for doc in docs:
        pipe(doc)
    return time.process_time() - started



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--sentences", type=int, default=20, help="sentences per document")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    rng = random.Random(0)
    texts = [note(rng, args.sentences) for _ in range(args.docs)]
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_base_model(Path(tmp) / "base", hidden=768, layers=12)
        checkpoint = build_tiny_checkpoint(Path(tmp) / "base.pt", base)
        nlp = spacy.blank("es")
        nlp.add_pipe("dt4h_disease", config={"checkpoint": str(checkpoint), "base_model": str(base)})
        context = nlp.add_pipe("dt4h_context")
        docs = [nlp.make_doc(text) for text in texts]
        ner = nlp.get_pipe("dt4h_disease")
        ner(nlp.make_doc(texts[0]))  # load the network
        ner_seconds = seconds(ner, docs)
    words = sum(len(doc) for doc in docs)
    # The rules alone: every token of every doc a target, so every trigger's scope is checked.
    targets = []
    for doc in docs:
        copy = nlp.make_doc(doc.text)
        copy.spans["dt4h"] = [copy[i:i + 1] for i in range(len(copy))]
        targets.append(copy)
    plain = [nlp.make_doc(doc.text) for doc in docs]
    rules_seconds = min(seconds(context, plain) for _ in range(3))
    all_seconds = min(seconds(context, targets) for _ in range(3))
    context_on_ner = seconds(context, docs)
    print(f"CPU {cpu_info()['model']}, 1 torch thread, load {load_start} -> {os.getloadavg()}")
    print(f"{args.docs} docs, {words} words")
    print(f"rules, matching and scopes (no targets): {words / rules_seconds:,.0f} words/s")
    print(f"rules with every token a target:        {words / all_seconds:,.0f} words/s")
    print(f"dt4h_disease (base-sized, CPU):          {words / ner_seconds:,.0f} words/s")
    print(f"dt4h_context after it: {context_on_ner:.3f} s = {100 * context_on_ner / ner_seconds:.2f} % of NER time")


if __name__ == "__main__":
    main()
