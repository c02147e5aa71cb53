"""Write the bundled sample corpus: templated es/it/ro clinical notes with gold DISEASE mentions.

The notes are made up (no patient data), from a parallel disease lexicon and sentence
templates per language, so the tiny sample model has something real to learn: diseases in
varied contexts next to symptoms, procedures and drugs that are *not* diseases. A few
diseases appear only in dev, so the dev score also shows (limited) generalisation.

Deterministic: the same files on every run. Usage: ``python scripts/make_sample.py [OUT]``
(default ``sample/``); writes ``OUT/<split>/<lang>/MultiClinNER-<lang>-<split>-disease-NNNNN.txt``
and ``OUT/<split>/mentions.tsv`` (MultiClinAI columns) for the splits train and dev.
"""

import random
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from dt4h_spacy.tsv import Mention, write_mentions

DOCS = {"train": 48, "dev": 12}
DEV_ONLY = {4, 11, 18, 25, 29}  # lexicon indices never seen in training

DISEASES: Dict[str, List[str]] = {
    "es": [
        "insuficiencia cardíaca", "fibrilación auricular", "infarto agudo de miocardio", "hipertensión arterial",
        "diabetes mellitus tipo 2", "dislipemia", "miocardiopatía dilatada", "estenosis aórtica",
        "insuficiencia mitral", "endocarditis infecciosa", "pericarditis aguda", "miocarditis", "neumonía",
        "EPOC", "asma bronquial", "insuficiencia renal crónica", "anemia ferropénica", "hipotiroidismo",
        "cirrosis hepática", "tuberculosis pulmonar", "trombosis venosa profunda", "tromboembolismo pulmonar",
        "ictus isquémico", "cardiopatía isquémica", "linfoma de Hodgkin", "sarcoidosis",
        "lupus eritematoso sistémico", "artritis reumatoide", "obesidad", "hepatitis crónica",
    ],
    "it": [
        "insufficienza cardiaca", "fibrillazione atriale", "infarto miocardico acuto", "ipertensione arteriosa",
        "diabete mellito di tipo 2", "dislipidemia", "cardiomiopatia dilatativa", "stenosi aortica",
        "insufficienza mitralica", "endocardite infettiva", "pericardite acuta", "miocardite", "polmonite",
        "BPCO", "asma bronchiale", "insufficienza renale cronica", "anemia sideropenica", "ipotiroidismo",
        "cirrosi epatica", "tubercolosi polmonare", "trombosi venosa profonda", "embolia polmonare",
        "ictus ischemico", "cardiopatia ischemica", "linfoma di Hodgkin", "sarcoidosi",
        "lupus eritematoso sistemico", "artrite reumatoide", "obesità", "epatite cronica",
    ],
    "ro": [
        "insuficiență cardiacă", "fibrilație atrială", "infarct miocardic acut", "hipertensiune arterială",
        "diabet zaharat de tip 2", "dislipidemie", "cardiomiopatie dilatativă", "stenoză aortică",
        "insuficiență mitrală", "endocardită infecțioasă", "pericardită acută", "miocardită", "pneumonie",
        "BPOC", "astm bronșic", "boală cronică de rinichi", "anemie feriprivă", "hipotiroidism",
        "ciroză hepatică", "tuberculoză pulmonară", "tromboză venoasă profundă", "embolie pulmonară",
        "accident vascular cerebral ischemic", "cardiopatie ischemică", "limfom Hodgkin", "sarcoidoză",
        "lupus eritematos sistemic", "poliartrită reumatoidă", "obezitate", "hepatită cronică",
    ],
}
SYMPTOMS: Dict[str, List[str]] = {
    "es": ["dolor torácico", "disnea", "fiebre", "tos seca", "palpitaciones", "síncope",
           "edemas en miembros inferiores", "astenia", "cefalea", "náuseas", "mareo", "dolor abdominal"],
    "it": ["dolore toracico", "dispnea", "febbre", "tosse secca", "palpitazioni", "sincope",
           "edemi agli arti inferiori", "astenia", "cefalea", "nausea", "vertigini", "dolore addominale"],
    "ro": ["durere toracică", "dispnee", "febră", "tuse seacă", "palpitații", "sincopă",
           "edeme ale membrelor inferioare", "astenie", "cefalee", "greață", "amețeli", "durere abdominală"],
}
PROCEDURES: Dict[str, List[str]] = {
    "es": ["ecocardiograma", "electrocardiograma", "radiografía de tórax", "TAC torácico", "coronariografía",
           "resonancia magnética cardíaca", "analítica sanguínea", "biopsia"],
    "it": ["ecocardiogramma", "elettrocardiogramma", "radiografia del torace", "TC del torace", "coronarografia",
           "risonanza magnetica cardiaca", "esami ematochimici", "biopsia"],
    "ro": ["ecocardiografia", "electrocardiograma", "radiografia toracică", "tomografia computerizată toracică",
           "coronarografia", "rezonanța magnetică cardiacă", "analizele de sânge", "biopsia"],
}
DRUGS: Dict[str, List[str]] = {
    "es": ["furosemida", "bisoprolol", "enalapril", "metformina", "atorvastatina", "acenocumarol", "amoxicilina"],
    "it": ["furosemide", "bisoprololo", "enalapril", "metformina", "atorvastatina", "warfarin", "amoxicillina"],
    "ro": ["furosemid", "bisoprolol", "enalapril", "metformină", "atorvastatină", "acenocumarol", "amoxicilină"],
}
PATIENT: Dict[str, List[str]] = {"es": ["Varón", "Mujer"], "it": ["Uomo", "Donna"], "ro": ["Bărbat", "Femeie"]}
# {D}: a disease (annotated); {S} symptom, {P} procedure, {M} drug, {A} age, {N} days, {X} patient: not annotated.
TEMPLATES: Dict[str, List[str]] = {
    "es": [
        "{X} de {A} años con antecedentes de {D} y {D}.",
        "Acude a urgencias por {S} de {N} días de evolución.",
        "Se diagnostica {D}.",
        "Tras realizar {P} se objetiva {D}.",
        "Refiere {S} y {S} desde hace {N} días.",
        "Se inicia tratamiento con {M} por {D}.",
        "No presenta {S} ni otros síntomas.",
        "Se realiza {P} que descarta {D}.",
        "Con la sospecha de {D} se solicita {P}.",
        "Evoluciona favorablemente y se da de alta con {M}.",
        "Como antecedentes destacan {D}, {D} y {D}.",
        "Ingresa con diagnóstico de {D} complicada con {D}.",
        "A la exploración presenta {S}.",
        "Se realiza {P} que resulta normal.",
        "Durante el ingreso desarrolla {D} que se trata con {M}.",
    ],
    "it": [
        "{X} di {A} anni con anamnesi di {D} e {D}.",
        "Giunge in pronto soccorso per {S} da {N} giorni.",
        "Viene diagnosticata {D}.",
        "Alla valutazione con {P} si osserva {D}.",
        "Riferisce {S} e {S} da {N} giorni.",
        "Si inizia terapia con {M} per {D}.",
        "Non presenta {S} né altri sintomi.",
        "La valutazione con {P} esclude {D}.",
        "Nel sospetto di {D} si richiede {P}.",
        "Il decorso è favorevole e viene dimesso con {M}.",
        "In anamnesi si segnalano {D}, {D} e {D}.",
        "Ricoverato con diagnosi di {D} complicata da {D}.",
        "All'esame obiettivo presenta {S}.",
        "Si esegue {P} che risulta nella norma.",
        "Durante il ricovero sviluppa {D} trattata con {M}.",
    ],
    "ro": [
        "{X} în vârstă de {A} ani cu antecedente de {D} și {D}.",
        "Se prezintă la urgențe pentru {S} de {N} zile.",
        "Se stabilește diagnosticul de {D}.",
        "{P} evidențiază {D}.",
        "Acuză {S} și {S} de {N} zile.",
        "Se inițiază tratament cu {M} pentru {D}.",
        "Nu prezintă {S} sau alte simptome.",
        "{P} exclude {D}.",
        "Cu suspiciunea de {D} se solicită {P}.",
        "Evoluția este favorabilă și este externat cu {M}.",
        "Din antecedente reținem {D}, {D} și {D}.",
        "Este internat cu diagnosticul de {D} complicată cu {D}.",
        "La examenul clinic prezintă {S}.",
        "Se efectuează {P}, fără modificări.",
        "În timpul internării dezvoltă {D} tratată cu {M}.",
    ],
}
SLOT = re.compile(r"\{([DSPMANX])\}")


def sentence(lang: str, template: str, diseases: List[str], rng: random.Random) -> Tuple[str, List[Tuple[int, int]]]:
    """Fill a template; returns the text and the (start, end) of every disease in it."""
    fillers = {"S": SYMPTOMS[lang], "P": PROCEDURES[lang], "M": DRUGS[lang], "X": PATIENT[lang]}
    picked = rng.sample(diseases, k=template.count("{D}"))
    text, spans, last = "", [], 0
    for match in SLOT.finditer(template):
        text += template[last : match.start()]
        slot = match.group(1)
        if slot == "D":
            value = picked.pop()
            spans.append((len(text), len(text) + len(value)))
        elif slot == "A":
            value = str(rng.randint(18, 92))
        elif slot == "N":
            value = str(rng.randint(2, 15))
        else:
            value = rng.choice(fillers[slot])
        text += value
        last = match.end()
    text += template[last:]
    if text[0].islower():
        text = text[0].upper() + text[1:]
    return text, spans


def document(lang: str, diseases: List[str], rng: random.Random) -> Tuple[str, List[Tuple[int, int]]]:
    """A note of 3-8 sentences, 2-5 of them with diseases, with a paragraph break now and then."""
    with_disease = [t for t in TEMPLATES[lang] if "{D}" in t]
    others = [t for t in TEMPLATES[lang] if "{D}" not in t]
    n_disease = rng.randint(2, 5)
    templates = rng.sample(with_disease, n_disease) + rng.sample(others, rng.randint(1, 3))
    rng.shuffle(templates)
    text, spans = "", []
    for k, template in enumerate(templates):
        if k:
            text += "\n" if rng.random() < 0.25 else " "
        part, part_spans = sentence(lang, template, diseases, rng)
        spans.extend((len(text) + a, len(text) + b) for a, b in part_spans)
        text += part
    return text + "\n", spans


def main(out: Path) -> None:
    for split, n_docs in DOCS.items():
        mentions = []
        for lang, lexicon in DISEASES.items():
            seen = [d for i, d in enumerate(lexicon) if i not in DEV_ONLY]
            diseases = seen if split == "train" else lexicon
            rng = random.Random(f"dt4h-sample-{split}-{lang}")
            folder = out / split / lang
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(1, n_docs + 1):
                name = f"MultiClinNER-{lang}-{split}-disease-{number:05d}"
                text, spans = document(lang, diseases, rng)
                (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
                mentions.extend(Mention(name, "DISEASE", a, b, text[a:b]) for a, b in spans)
        write_mentions(out / split / "mentions.tsv", mentions)
        print(f"{split}: {n_docs} documents per language, {len(mentions)} mentions -> {out / split}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "sample")
