"""dt4h_context: ConText qualifiers on es/it/ro mentions, rule files and their errors."""

import json
import subprocess
import sys

import pytest
import spacy

from dt4h_spacy.errors import ContextRulesError
from dt4h_spacy.pipes.context.rules import packaged_rules_path, read_rule_file

ATTRS = ("is_negated", "is_uncertain", "is_hypothetical", "is_historical", "is_family")


def qualify(text, mentions, lang="es", config=None, sentencizer=False, spans_key=None):
    """``text`` with ``mentions`` (substrings, first occurrence) as ents (or in doc.spans[spans_key]),
    through dt4h_context; returns {mention: (set of attributes, cue texts)}."""
    nlp = spacy.blank(lang)
    if sentencizer:
        nlp.add_pipe("sentencizer")
    nlp.add_pipe("dt4h_context", config=config or {})
    doc = nlp.make_doc(text)
    spans = [doc.char_span(text.index(m), text.index(m) + len(m), label="DISEASE") for m in mentions]
    if spans_key:
        doc.spans[spans_key] = spans
    else:
        doc.ents = spans
    for _, pipe in nlp.pipeline:
        doc = pipe(doc)
    found = doc.spans[spans_key] if spans_key else doc.ents
    return {span.text: ({a for a in ATTRS if span._.get(a)},
                        None if span._.dt4h_cues is None else [c.text for c in span._.dt4h_cues]) for span in found}


@pytest.mark.parametrize("text,mention,attrs,cues", [
    ("Se descartó neumonía.", "neumonía", {"is_negated"}, ["Se descartó"]),
    ("Sospecha de endocarditis.", "endocarditis", {"is_uncertain"}, ["Sospecha de"]),
    ("Madre con diabetes.", "diabetes", {"is_family"}, ["Madre con"]),
    ("Diabetes en la madre.", "Diabetes", {"is_family"}, ["madre"]),
    ("Antecedentes de infarto agudo de miocardio.", "infarto agudo de miocardio", {"is_historical"}, ["Antecedentes de"]),
    ("Se recomienda descartar tuberculosis.", "tuberculosis", {"is_hypothetical"}, ["Se recomienda descartar"]),
    ("Neumonía descartada.", "Neumonía", {"is_negated"}, ["descartada"]),
    ("Paciente con neumonía.", "neumonía", set(), []),
])
def test_spanish_triggers_set_one_attribute_and_name_their_cue(text, mention, attrs, cues):
    assert qualify(text, [mention])[mention] == (attrs, cues)


def test_a_pseudo_trigger_blocks_the_shorter_triggers_inside_it():
    found = qualify("No se descarta tromboembolismo pulmonar. Sin cambios en la estenosis aórtica.",
                    ["tromboembolismo pulmonar", "estenosis aórtica"])
    assert found["tromboembolismo pulmonar"] == ({"is_uncertain"}, ["No se descarta"])
    assert found["estenosis aórtica"] == (set(), [])


def test_scope_stops_at_terminations_other_categories_and_sentence_ends():
    found = qualify("Sin fiebre ni disnea pero con dolor torácico. Tos productiva.\nNo edemas\nvarices",
                    ["fiebre", "disnea", "dolor torácico", "Tos productiva", "edemas", "varices"])
    assert found["fiebre"] == ({"is_negated"}, ["Sin", "ni"])  # "ni" looks back too
    assert found["disnea"] == ({"is_negated"}, ["Sin", "ni"])
    assert found["dolor torácico"] == (set(), [])  # after "pero"
    assert found["Tos productiva"] == (set(), [])  # next sentence
    assert found["edemas"][0] == {"is_negated"}
    assert found["varices"] == (set(), [])  # a line break ends a sentence for our splitter
    other = qualify("Sin fiebre, probable neumonía.", ["fiebre", "neumonía"])
    assert other == {"fiebre": ({"is_negated"}, ["Sin"]), "neumonía": ({"is_uncertain"}, ["probable"])}


def test_ni_closes_a_list_longer_than_the_scope_but_looks_back_only_to_the_last_negation():
    text = "No dolor torácico , palpitaciones , sensación de mareo , malestar general ni cortejo vegetativo ."
    found = qualify(text, ["dolor torácico", "malestar general", "cortejo vegetativo"])
    assert found["malestar general"] == ({"is_negated"}, ["ni"])  # beyond the 6 tokens of "No"
    assert found["cortejo vegetativo"] == ({"is_negated"}, ["ni"])
    # Backwards, "ni" stops where "sin" begins its own scope: the polyuria is affirmed.
    found = qualify("Polaquiuria sin disuria ni tenesmo .", ["Polaquiuria", "disuria", "tenesmo"])
    assert found["Polaquiuria"] == (set(), [])
    assert found["disuria"] == ({"is_negated"}, ["sin", "ni"])


def test_the_words_a_forward_trigger_head_governs_are_qualified():
    # "sin" heads "sin signos de": a mention starting inside the phrase is still negated ...
    found = qualify("Juicio clínico : sin signos de TVP .", ["signos de TVP"])
    assert found["signos de TVP"] == ({"is_negated"}, ["sin signos de"])
    found = qualify("El EKG no presenta cambios isquémicos .", ["presenta"])
    assert found["presenta"] == ({"is_negated"}, ["no presenta"])
    # ... but not one on the head word itself, nor on the last word of a backward trigger.
    assert qualify("Sin signos de TVP .", ["Sin signos"])["Sin signos"] == (set(), [])
    assert qualify("Neumonía descartada .", ["descartada"])["descartada"] == (set(), [])


def test_spanish_ruling_out_in_the_past_negates_and_its_negation_is_uncertain():
    found = qualify("AngioTAC que descartó la presencia de TEP . Descarto la etiología coronaria .",
                    ["TEP", "etiología coronaria"])
    assert found["TEP"] == ({"is_negated"}, ["descartó"])
    assert found["etiología coronaria"] == ({"is_negated"}, ["Descarto"])
    assert qualify("No se descartó neumonía .", ["neumonía"])["neumonía"] == ({"is_uncertain"}, ["No se descartó"])
    assert qualify("Desde el ingreso , ha cedido el dolor .", ["dolor"])["dolor"] == ({"is_negated"}, ["ha cedido"])


def test_a_conjunction_ends_a_scope_unless_the_trigger_governs_a_list():
    # "niega", "se descarta" and plural backward cues govern the coordinated list ...
    found = qualify("Niega síncope y hemoptisis .", ["síncope", "hemoptisis"])
    assert found == {"síncope": ({"is_negated"}, ["Niega"]), "hemoptisis": ({"is_negated"}, ["Niega"])}
    found = qualify("Se descarta TVP y quiste de Baker .", ["quiste de Baker"])
    assert found["quiste de Baker"] == ({"is_negated"}, ["Se descarta"])
    found = qualify("Hemocultivos y urocultivos negativos .", ["Hemocultivos"])
    assert found["Hemocultivos"] == ({"is_negated"}, ["negativos"])
    # ... "no"/"sin" and a singular cue do not: after "y" comes another clause.
    found = qualify("No fiebre y el dolor en franca mejoría .", ["fiebre", "dolor"])
    assert found["fiebre"][0] == {"is_negated"} and found["dolor"] == (set(), [])
    assert qualify("Disnea y urocultivo negativo .", ["Disnea"])["Disnea"] == (set(), [])
    # A denial reads a whole list, past the default scope of 6 tokens.
    found = qualify("Niega pérdida de conciencia , cefalea , nauseas o vómitos .", ["vómitos"])
    assert found["vómitos"] == ({"is_negated"}, ["Niega"])
    # "pero" still ends a list trigger's scope.
    assert qualify("Niega disnea pero tiene tos .", ["tos"])["tos"] == (set(), [])


def test_a_zero_scope_negates_only_the_triggers_own_words():
    # "sin cambios" / "sin mejoría": the change is absent, the finding it is about is not.
    found = qualify("Sin cambios en el derrame pleural . Dolor sin mejoría de la disnea .",
                    ["cambios", "derrame pleural", "mejoría", "disnea"])
    assert found["cambios"] == ({"is_negated"}, ["Sin cambios"])
    assert found["mejoría"] == ({"is_negated"}, ["sin mejoría"])
    assert found["derrame pleural"] == (set(), []) and found["disnea"] == (set(), [])


def test_stopping_a_treatment_negates_it_but_not_its_cause():
    found = qualify("Se suspende el tratamiento por diarrea .", ["tratamiento", "diarrea"])
    assert found == {"tratamiento": ({"is_negated"}, ["Se suspende"]), "diarrea": (set(), [])}


def test_a_form_field_answered_no_and_a_working_diagnosis():
    found = qualify("Urocultivo : negativo . Abdomen : no doloroso .", ["Urocultivo", "Abdomen"])
    assert found == {"Urocultivo": ({"is_negated"}, [": negativo ."]), "Abdomen": (set(), [])}
    found = qualify("Orientación diagnóstica : celulitis de pierna izquierda .", ["celulitis de pierna izquierda"])
    assert found["celulitis de pierna izquierda"] == ({"is_uncertain"}, ["Orientación diagnóstica :"])


def test_doc_sents_are_used_when_a_pipe_set_them():
    # The sentencizer does not split at a line break, our own splitter does.
    text = "No edemas\nvarices"
    assert qualify(text, ["varices"])["varices"][0] == set()
    assert qualify(text, ["varices"], sentencizer=True)["varices"][0] == {"is_negated"}


def test_a_doc_without_sentences_or_targets_still_works():
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_context")
    for doc in nlp.pipe(["", "  \n ", "sin fiebre"]):  # empty, whitespace only, no sentence end, no targets
        assert list(doc.ents) == []
    # No sentence punctuation and no sentence starts set: the whole doc is one sentence.
    assert qualify("sin fiebre ni disnea", ["disnea"])["disnea"] == ({"is_negated"}, ["sin", "ni"])


def test_max_scope_limits_a_forward_scope():
    text = "No se observa en la exploración física realizada hoy ninguna adenopatía."
    assert qualify(text, ["adenopatía"], config={"max_scope": 3})["adenopatía"] == ({"is_negated"}, ["ninguna"])
    text = "No se observa en la exploración física realizada hoy adenopatía."
    assert qualify(text, ["adenopatía"], config={"max_scope": None})["adenopatía"][0] == {"is_negated"}
    assert qualify(text, ["adenopatía"])["adenopatía"][0] == set()  # the default: 6 tokens
    assert qualify(text, ["adenopatía"], config={"max_scope": 3})["adenopatía"][0] == set()


def test_spans_keys_are_targets_too_and_targets_can_be_chosen():
    assert qualify("Sin neumonía.", ["neumonía"], spans_key="dt4h")["neumonía"][0] == {"is_negated"}
    custom = qualify("Sin neumonía.", ["neumonía"], spans_key="sc", config={"targets": ["sc"]})
    assert custom["neumonía"][0] == {"is_negated"}
    untouched = qualify("Sin neumonía.", ["neumonía"], spans_key="sc")
    assert untouched["neumonía"] == (set(), None)  # not a target: the defaults, cues None (never looked at)


def write_rules(path, rules, language="es"):
    lines = ",\n".join("  " + json.dumps(rule, ensure_ascii=False) for rule in rules)
    path.write_text(f'{{"language": "{language}",\n "rules": [\n{lines}\n ]}}\n', encoding="utf-8")
    return path


def test_rule_files_extend_or_replace_the_packaged_rules(tmp_path):
    extra = write_rules(tmp_path / "extra.json", [{"literal": "queda excluida", "category": "NEGATED_EXISTENCE",
                                                   "direction": "BACKWARD"}])
    text = "Neumonía queda excluida. Sin fiebre."
    assert qualify(text, ["Neumonía"])["Neumonía"][0] == set()
    extended = qualify(text, ["Neumonía", "fiebre"], config={"rule_files": [str(extra)]})
    assert extended == {"Neumonía": ({"is_negated"}, ["queda excluida"]), "fiebre": ({"is_negated"}, ["Sin"])}
    replaced = qualify(text, ["Neumonía", "fiebre"], config={"rule_files": [str(extra)], "default_rules": False})
    assert replaced == {"Neumonía": ({"is_negated"}, ["queda excluida"]), "fiebre": (set(), [])}


def test_token_patterns_match_too(tmp_path):
    rules = write_rules(tmp_path / "p.json", [{"pattern": [{"LOWER": "hace"}, {"LIKE_NUM": True}, {"LOWER": "años"}],
                                               "category": "HISTORICAL", "direction": "BACKWARD"}])
    found = qualify("Neumonía hace 3 años.", ["Neumonía"], config={"rule_files": [str(rules)], "default_rules": False})
    assert found["Neumonía"] == ({"is_historical"}, ["hace 3 años"])


@pytest.mark.parametrize("rule,message", [
    ({"literal": "x", "category": "NEGATION", "direction": "FORWARD"}, "unknown category 'NEGATION'"),
    ({"literal": "x", "category": "NEGATED_EXISTENCE", "direction": "SIDEWAYS"}, "unknown direction 'SIDEWAYS'"),
    ({"literal": "x", "category": "NEGATED_EXISTENCE", "direction": "PSEUDO"}, "cannot have direction PSEUDO"),
    ({"pattern": [{"LOWER": {"IN": "no"}}], "category": "NEGATED_EXISTENCE", "direction": "FORWARD"},
     "malformed pattern"),
    ({"pattern": "no", "category": "NEGATED_EXISTENCE", "direction": "FORWARD"}, "pattern must be a non-empty list"),
    ({"category": "NEGATED_EXISTENCE", "direction": "FORWARD"}, 'exactly one of "literal"'),
    ({"literal": "x", "category": "FAMILY", "direction": "FORWARD", "scope": 3}, r"unknown key\(s\) \['scope'\]"),
    ({"literal": "x", "category": "FAMILY", "direction": "FORWARD", "max_scope": -1}, "max_scope must be"),
    ({"literal": "x", "category": "TERMINATE", "lists": True}, "lists is for qualifying triggers, not TERMINATE"),
    ({"literal": "x", "category": "FAMILY", "direction": "FORWARD", "conjunction": True}, "conjunction is for TERMINATE"),
    ({"literal": "x", "category": "TERMINATE", "conjunction": "yes"}, "conjunction must be true or false"),
])
def test_a_bad_rule_is_an_error_at_add_pipe_naming_file_and_line(tmp_path, rule, message):
    good = {"literal": "sin", "category": "NEGATED_EXISTENCE", "direction": "FORWARD"}
    path = write_rules(tmp_path / "bad.json", [good, good, rule])
    nlp = spacy.blank("es")
    with pytest.raises(ContextRulesError, match=rf"bad.json line 5: .*{message}"):
        nlp.add_pipe("dt4h_context", config={"rule_files": [str(path)]})


def test_invalid_json_and_missing_rules_are_named(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"language": "es",\n "rules": [\n  {"literal": "no",}\n ]}\n', encoding="utf-8")
    with pytest.raises(ContextRulesError, match=r"broken.json line 3: not valid JSON"):
        read_rule_file(broken)
    listless = tmp_path / "listless.json"
    listless.write_text('{"language": "es"}', encoding="utf-8")
    with pytest.raises(ContextRulesError, match=r"listless.json line 1: expected an object with a \"rules\" list"):
        read_rule_file(listless)
    with pytest.raises(ContextRulesError, match=r"missing.json: cannot read"):
        read_rule_file(tmp_path / "missing.json")


def test_a_language_without_rules_is_an_error_at_add_pipe():
    with pytest.raises(ContextRulesError, match=r"No context rules for language\(s\) \['en'\].*rule_files"):
        spacy.blank("en").add_pipe("dt4h_context")


def test_packaged_rule_files_are_valid_and_declare_their_language():
    for lang in ("es", "it", "ro"):
        language, rules = read_rule_file(packaged_rules_path(lang))
        assert language == lang and len(rules) > 50


def test_saved_pipeline_keeps_its_rules_without_the_rule_files(tmp_path):
    extra = write_rules(tmp_path / "extra.json", [{"literal": "queda excluida", "category": "NEGATED_EXISTENCE",
                                                   "direction": "BACKWARD"}])
    nlp = spacy.blank("es")
    nlp.add_pipe("dt4h_context", config={"rule_files": [str(extra)]})
    nlp.to_disk(tmp_path / "pipeline")
    extra.unlink()
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {"dt4h_context": {"rule_files": []}}})
    doc = loaded.make_doc("Neumonía queda excluida.")
    doc.ents = [doc.char_span(0, 8, label="DISEASE")]
    assert loaded(doc).ents[0]._.is_negated
    copy = spacy.blank("es").add_pipe("dt4h_context", config={"default_rules": True})
    copy.from_bytes(loaded.get_pipe("dt4h_context").to_bytes())
    assert copy.rules == loaded.get_pipe("dt4h_context").rules
    # Every key survives the round trip ("lists", "conjunction", a zero max_scope), not only the phrases.
    assert loaded.get_pipe("dt4h_context").rules == nlp.get_pipe("dt4h_context").rules


def test_the_factory_is_found_through_its_entry_point_without_importing_the_package():
    code = ("import spacy; nlp = spacy.blank('es'); nlp.add_pipe('dt4h_context'); "
            "doc = nlp.make_doc('sin fiebre'); doc.ents = [doc.char_span(4, 10, label='X')]; "
            "print(nlp(doc).ents[0]._.is_negated)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "True\n"


@pytest.mark.parametrize("lang,text,mention,attrs,cues", [
    ("it", "Il paziente nega dolore toracico.", "dolore toracico", {"is_negated"}, ["nega"]),
    ("it", "Non escluso un infarto miocardico.", "infarto miocardico", {"is_uncertain"}, ["Non escluso"]),
    ("it", "Sospetta polmonite, ma senza febbre.", "polmonite", {"is_uncertain"}, ["Sospetta"]),
    ("it", "Madre affetta da diabete mellito.", "diabete mellito", {"is_family"}, ["Madre"]),
    ("it", "Pregresso infarto miocardico.", "infarto miocardico", {"is_historical"}, ["Pregresso"]),
    ("it", "Embolia polmonare esclusa.", "Embolia polmonare", {"is_negated"}, ["esclusa"]),
    ("ro", "Fără semne de infarct miocardic.", "infarct miocardic", {"is_negated"}, ["Fără semne de"]),
    ("ro", "Fara semne de infarct miocardic.", "infarct miocardic", {"is_negated"}, ["Fara semne de"]),
    ("ro", "Suspiciune de endocardită.", "endocardită", {"is_uncertain"}, ["Suspiciune de"]),
    ("ro", "Hipertensiune arterială în antecedente.", "Hipertensiune arterială", {"is_historical"}, ["în antecedente"]),
    ("ro", "Mama cu diabet zaharat.", "diabet zaharat", {"is_family"}, ["Mama"]),
    ("ro", "Nu se poate exclude o pneumonie.", "pneumonie", {"is_uncertain"}, ["Nu se poate exclude"]),
    # A capitalised predicate opening a sentence governs what follows; so does a participle before an article.
    ("it", "Esclusa dissecazione aortica.", "dissecazione aortica", {"is_negated"}, ["Esclusa"]),
    ("it", "Assenti soffi cardiaci.", "soffi cardiaci", {"is_negated"}, ["Assenti"]),
    ("it", "Alla TC esclusa la presenza di ascessi.", "ascessi", {"is_negated"}, ["esclusa la"]),
    ("it", "Tonsillectomia in età infantile.", "Tonsillectomia", {"is_historical"}, ["in età infantile"]),
    ("it", "Eventuale comparsa di febbre va segnalata.", "febbre", {"is_hypothetical"}, ["Eventuale comparsa di"]),
    ("ro", "S-a exclus pancreatita acută.", "pancreatita acută", {"is_negated"}, ["S-a exclus"]),
    # ... but not under a modal: that ruling-out is uncertain.
    ("it", "Non può essere esclusa una miocardite.", "miocardite", {"is_uncertain"}, ["Non può essere esclusa"]),
    ("it", "Nel caso in cui compaia febbre, ricontattare.", "febbre", {"is_hypothetical"}, ["Nel caso in cui"]),
    ("ro", "Apariția eventuală a edemelor va fi semnalată.", "edemelor", {"is_hypothetical"},
     ["Apariția eventuală a"]),
])
def test_italian_and_romanian_triggers(lang, text, mention, attrs, cues):
    assert qualify(text, [mention], lang=lang)[mention] == (attrs, cues)


@pytest.mark.parametrize("lang,text,before,after", [
    ("it", "Non febbre ma tosse.", "febbre", "tosse"),
    ("ro", "Nu prezintă febră dar acuză tuse.", "febră", "tuse"),
    ("it", "Non febbre; tosse produttiva.", "febbre", "tosse produttiva"),
    ("ro", "Fără febră; tuse productivă.", "febră", "tuse productivă"),
])
def test_terminations_in_italian_and_romanian(lang, text, before, after):
    found = qualify(text, [before, after], lang=lang)
    assert found[before][0] == {"is_negated"} and found[after] == (set(), [])


def test_an_xx_pipeline_reads_each_doc_with_its_languages_rules():
    nlp = spacy.blank("xx")
    nlp.add_pipe("dt4h_context")
    doc = nlp.make_doc("nega febbre")
    doc._.dt4h_lang = "it"
    doc.ents = [doc.char_span(5, 11, label="X")]
    assert nlp(doc).ents[0]._.is_negated
    doc = nlp.make_doc("nega febbre")
    doc._.dt4h_lang = "es"  # "nega" is no Spanish trigger
    doc.ents = [doc.char_span(5, 11, label="X")]
    assert not nlp(doc).ents[0]._.is_negated
    doc = nlp.make_doc("fără febră")  # no language set: every language's rules
    doc.ents = [doc.char_span(5, 10, label="X")]
    assert nlp(doc).ents[0]._.is_negated


def test_after_dt4h_disease_the_predicted_mentions_are_qualified(make_nlp, trained_checkpoint):
    nlp = make_nlp("es", checkpoint=trained_checkpoint)
    nlp.add_pipe("dt4h_context")
    doc = nlp("el paciente presenta diabetes . sin neumonía .")
    found = {span.text: (span._.is_negated, [c.text for c in span._.dt4h_cues]) for span in doc.spans["dt4h"]}
    assert found == {"diabetes": (False, []), "neumonía": (True, ["sin"])}
    assert [e._.is_negated for e in doc.ents] == [False, True]


@pytest.fixture(scope="module")
def negation_tagger(tmp_path_factory, tiny_base_model):
    from dt4h_spacy.testing import build_negation_tagger

    return build_negation_tagger(tmp_path_factory.mktemp("negation-tagger"), tiny_base_model)


def test_the_tagger_backend_reads_negation_and_uncertainty_scopes(negation_tagger):
    text = "el paciente presenta diabetes hoy\nla paciente sin neumonía\nposible miocarditis con dolor"
    found = qualify(text, ["diabetes", "neumonía", "miocarditis"],
                    config={"backend": "tagger", "tagger_model": str(negation_tagger)})
    assert found == {"diabetes": (set(), []), "neumonía": ({"is_negated"}, ["sin"]),
                     "miocarditis": ({"is_uncertain"}, ["posible"])}
    # the rules still decide the other attributes
    family = qualify("madre con diabetes", ["diabetes"], config={"backend": "tagger",
                                                                  "tagger_model": str(negation_tagger)})
    assert family["diabetes"][0] == {"is_family"}


def test_the_tagger_hub_id_offline_is_a_clear_error_at_add_pipe(monkeypatch):
    from dt4h_spacy.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"'BSC-NLP4BIA/negation-tagger' is not in the local Hugging Face cache"):
        spacy.blank("es").add_pipe("dt4h_context", config={"backend": "tagger"})


def test_who_and_when_do_not_end_a_negation():
    found = qualify("Sin antecedentes de asma. Cediendo el dolor abdominal.", ["asma", "dolor abdominal"])
    assert found["asma"] == ({"is_negated", "is_historical"}, ["Sin", "antecedentes de"])
    assert found["dolor abdominal"] == ({"is_negated"}, ["Cediendo"])
