"""Language identification libraries on short clinical sentences (how `--lang detect` was chosen).

Each library is restricted to the same candidates (the es-it-ro model's languages and their
neighbours) where it allows it, and scored on one-sentence clinical notes and on their first three words; the last line is JSON.
Run with the libraries installed: pip install lingua-language-detector py3langid langdetect
"""

import json
import time

SENTENCES = {
    "es": ["Paciente de 54 años con miocarditis aguda.", "Se pauta tratamiento con furosemida.",
           "Refiere disnea de esfuerzo desde hace un mes.", "Sin alergias medicamentosas conocidas.",
           "Exploración física: abdomen blando y depresible.", "Ingresa por dolor torácico opresivo.",
           "La ecocardiografía mostró derrame pericárdico.", "Antecedentes de hipertensión arterial."],
    "it": ["Paziente di 67 anni con infarto miocardico acuto.", "Si osserva fibrillazione atriale permanente.",
           "Riferisce dispnea da sforzo da un mese.", "Nessuna allergia a farmaci nota.",
           "Esame obiettivo: addome trattabile.", "Ricoverato per dolore toracico oppressivo.",
           "L'ecocardiogramma mostra versamento pericardico.", "Anamnesi di ipertensione arteriosa."],
    "ro": ["Pacient de 61 de ani cu infarct miocardic acut.", "Se constată fibrilație atrială permanentă.",
           "Acuză dispnee de efort de o lună.", "Fără alergii medicamentoase cunoscute.",
           "Examen clinic: abdomen suplu, nedureros.", "Internat pentru durere toracică.",
           "Ecocardiografia a evidențiat lichid pericardic.", "Antecedente de hipertensiune arterială."],
    "en": ["A 54-year-old patient with acute myocarditis.", "Treatment with furosemide was started.",
           "He reports shortness of breath for a month.", "No known drug allergies.",
           "Physical examination: soft, non-tender abdomen.", "Admitted for oppressive chest pain.",
           "Echocardiography showed pericardial effusion.", "History of arterial hypertension."],
    "fr": ["Patient de 54 ans avec une myocardite aiguë.", "Un traitement par furosémide est instauré.",
           "Il signale une dyspnée d'effort depuis un mois.", "Pas d'allergie médicamenteuse connue.",
           "Examen clinique : abdomen souple et dépressible.", "Hospitalisé pour douleur thoracique.",
           "L'échocardiographie montre un épanchement péricardique.", "Antécédents d'hypertension artérielle."],
    "de": ["Patient, 54 Jahre, mit akuter Myokarditis.", "Eine Behandlung mit Furosemid wurde begonnen.",
           "Er berichtet über Belastungsdyspnoe seit einem Monat.", "Keine bekannten Arzneimittelallergien.",
           "Körperliche Untersuchung: Abdomen weich.", "Aufnahme wegen drückender Brustschmerzen.",
           "Die Echokardiographie zeigte einen Perikarderguss.", "Anamnestisch arterielle Hypertonie."],
    "pt": ["Paciente de 54 anos com miocardite aguda.", "Iniciou-se tratamento com furosemida.",
           "Refere dispneia de esforço há um mês.", "Sem alergias medicamentosas conhecidas.",
           "Exame físico: abdome flácido e indolor.", "Internado por dor torácica opressiva.",
           "O ecocardiograma mostrou derrame pericárdico.", "Antecedentes de hipertensão arterial."],
    "ca": ["Pacient de 54 anys amb miocarditis aguda.", "S'inicia tractament amb furosemida.",
           "Refereix dispnea d'esforç des de fa un mes.", "Sense al·lèrgies medicamentoses conegudes.",
           "Exploració física: abdomen tou i depressible.", "Ingressa per dolor toràcic opressiu.",
           "L'ecocardiografia va mostrar vessament pericardíac.", "Antecedents d'hipertensió arterial."],
}
CANDIDATES = sorted(SENTENCES)


def lingua_detector():
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in CANDIDATES]
    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models().build()

    def detect(text):
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None

    return detect


def py3langid_detector():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    identifier.set_languages(CANDIDATES)
    return lambda text: identifier.classify(text)[0]


def langdetect_detector():
    from langdetect import DetectorFactory, detect_langs

    DetectorFactory.seed = 0  # langdetect is random unless seeded; it cannot be restricted to candidates

    def detect(text):
        for guess in detect_langs(text):
            if guess.lang in CANDIDATES:
                return guess.lang
        return None

    return detect


def main() -> None:
    results = {}
    for name, make in (("lingua", lingua_detector), ("py3langid", py3langid_detector), ("langdetect", langdetect_detector)):
        start = time.perf_counter()
        detect = make()
        loaded = time.perf_counter() - start
        items = [(lang, text) for lang, texts in SENTENCES.items() for text in texts]
        start = time.perf_counter()
        guesses = [detect(text) for _, text in items]
        per_text = (time.perf_counter() - start) / len(items)
        wrong = [(lang, guess, text) for (lang, text), guess in zip(items, guesses) if guess != lang]
        fragments = [(lang, " ".join(text.split()[:3])) for lang, text in items]
        wrong_fragments = [(lang, guess, text) for (lang, text), guess in
                           zip(fragments, [detect(text) for _, text in fragments]) if guess != lang]
        results[name] = {"correct": len(items) - len(wrong), "of": len(items),
                         "three_words_correct": len(items) - len(wrong_fragments), "load_s": round(loaded, 2),
                         "ms_per_text": round(per_text * 1000, 2), "wrong": wrong}
        print(f"{name}: {len(items) - len(wrong)}/{len(items)} sentences and "
              f"{len(items) - len(wrong_fragments)}/{len(items)} three-word fragments correct, load {loaded:.2f} s, "
              f"{per_text * 1000:.2f} ms per sentence; wrong sentences: {wrong}")
    print(json.dumps({name: {k: v for k, v in r.items() if k != "wrong"} for name, r in results.items()}))


if __name__ == "__main__":
    main()
