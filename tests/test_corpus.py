"""convert: annotated texts → DocBins, with every snapped or dropped mention counted."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from dt4h_spacy.corpus import (
    AnnotatedText, LangStats, RawMention, annotate_doc, build_docbins, parse_brat, read_brat_corpus,
    read_iob_csv, read_tsv_corpus, write_docbins,
)
from dt4h_spacy.textfiles import Failure
from dt4h_spacy.tsv import TSVError, read_mentions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEADER = "filename\tlabel\tstart_span\tend_span\ttext\n"
ES = "MultiClinNER-es-train-disease-00001"
TEXT = "Paciente con diabetes tipo 2.\r\nSin fiebre ni asma."


def ents(doc):
    return [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]


def annotate(text, mentions, lang="es", reanchor=False):
    stats = LangStats()
    doc = annotate_doc(spacy.blank(lang).make_doc(text), mentions, stats, "doc", reanchor)
    return doc, stats


def test_aligned_mentions_are_kept_as_they_are():
    doc, stats = annotate(TEXT, [RawMention(13, 28, "DISEASE", "diabetes tipo 2"), RawMention(45, 49, "DISEASE")])
    assert ents(doc) == [("diabetes tipo 2", "DISEASE", 13, 28), ("asma", "DISEASE", 45, 49)]
    assert (stats.mentions, stats.entities, stats.snapped, sum(stats.dropped.values())) == (2, 2, 0, 0)


def test_offsets_after_crlf_index_the_text_as_stored():
    start = TEXT.index("fiebre")
    doc, _ = annotate(TEXT, [RawMention(start, start + 6, "DISEASE", "fiebre")])
    assert ents(doc) == [("fiebre", "DISEASE", 35, 41)]


def test_mentions_inside_tokens_are_snapped_outwards_and_counted():
    # "iabetes tip" cuts two tokens: expanded to "diabetes tipo".
    doc, stats = annotate(TEXT, [RawMention(14, 25, "DISEASE")])
    assert ents(doc) == [("diabetes tipo", "DISEASE", 13, 26)]
    assert stats.snapped == 1 and stats.entities == 1


def test_expansion_does_not_pull_in_whitespace_tokens():
    text = "con  asma"  # the double space makes a whitespace token
    doc, stats = annotate(text, [RawMention(4, 9, "DISEASE")])
    assert ents(doc) == [("asma", "DISEASE", 5, 9)]
    assert stats.snapped == 1


def test_broken_mentions_are_dropped_with_reasons():
    doc, stats = annotate(TEXT, [
        RawMention(13, 21, "DISEASE"),  # diabetes
        RawMention(13, 28, "DISEASE"),  # diabetes tipo 2: longer, wins the overlap
        RawMention(13, 28, "DISEASE"),  # exact duplicate
        RawMention(45, 80, "DISEASE"),  # past the end of the text
        RawMention(29, 31, "DISEASE"),  # only "\r\n"
    ])
    assert ents(doc) == [("diabetes tipo 2", "DISEASE", 13, 28)]
    assert stats.dropped == {"overlapping a longer mention": 1, "duplicate": 1, "outside the text": 1,
                             "only whitespace": 1}
    assert stats.mentions == 5 and stats.entities == 1


def test_a_mention_whose_text_differs_from_the_file_is_dropped_and_listed():
    doc, stats = annotate(TEXT, [RawMention(13, 21, "DISEASE", "diabetis"), RawMention(13, 21, "DISEASE", "diabetes")])
    assert ents(doc) == [("diabetes", "DISEASE", 13, 21)]
    assert stats.dropped == {"text differs from the file at its offsets": 1}
    assert stats.mismatches == ["doc 13-21: the source says 'diabetis', the text has 'diabetes'; dropped"]


def test_reanchor_moves_a_shifted_mention_to_the_nearest_exact_occurrence():
    text = "asma. Paciente con asma y diabetes; asma."
    doc, stats = annotate(text, [RawMention(17, 21, "DISEASE", "asma"), RawMention(0, 3, "DISEASE", "tos")],
                          reanchor=True)
    assert ents(doc) == [("asma", "DISEASE", 19, 23)]  # the occurrence 2 characters away, not 17 or 19 away
    assert stats.reanchored == 1 and stats.dropped == {"text differs from the file at its offsets": 1}
    assert stats.mismatches[0].endswith("moved to 19-23")


def test_whitespace_flattened_by_the_export_is_not_a_mismatch():
    doc, stats = annotate("tiene diabetes\nmellitus hoy", [RawMention(6, 23, "DISEASE", "diabetes mellitus")])
    assert len(doc.ents) == 1 and not stats.dropped


def make_tsv_corpus(tmp_path, rows):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / f"{ES}.txt").write_bytes(TEXT.encode())
    (folder / "MultiClinNER-it-train-disease-00001.txt").write_bytes("Paziente con asma.".encode())
    (tmp_path / "mentions.tsv").write_text(HEADER + "".join(rows))
    return folder, tmp_path / "mentions.tsv"


def test_tsv_corpus_to_docbins_per_language(tmp_path):
    folder, tsv = make_tsv_corpus(tmp_path, [
        f"{ES}.txt\tDISEASE\t13\t28\tdiabetes tipo 2\n",  # filename with .txt is accepted
        f"{ES}\tSYMPTOM\t35\t41\tfiebre\n",
        "MultiClinNER-it-train-disease-00001\tDISEASE\t13\t17\tasma\n",
    ])
    conversion = build_docbins(read_tsv_corpus(folder, tsv), entity="DISEASE")
    assert conversion.failures == []
    assert sorted(conversion.docs) == ["es", "it"]
    assert ents(conversion.docs["es"][0]) == [("diabetes tipo 2", "DISEASE", 13, 28)]
    assert conversion.stats["es"].dropped == {"label other than DISEASE": 1}
    assert conversion.stats["es"].mentions == 2

    written = write_docbins(conversion, tmp_path / "out")
    assert written == {"es": tmp_path / "out" / "es.spacy", "it": tmp_path / "out" / "it.spacy"}
    docs = list(DocBin().from_disk(written["it"]).get_docs(spacy.blank("it").vocab))
    assert [d.text for d in docs] == ["Paziente con asma."]
    assert ents(docs[0]) == [("asma", "DISEASE", 13, 17)]


def test_mentions_of_missing_files_are_failures_not_silence(tmp_path):
    folder, tsv = make_tsv_corpus(tmp_path, ["MultiClinNER-es-train-disease-00099\tDISEASE\t0\t4\tasma\n"])
    conversion = build_docbins(read_tsv_corpus(folder, tsv))
    assert [(f.path.name, f.reason) for f in conversion.failures] == [
        ("MultiClinNER-es-train-disease-00099",
         f"1 mention(s) in {tsv} but no MultiClinNER-es-train-disease-00099.txt in {folder}")]
    assert len(conversion.docs["es"]) == 1  # the other files are still converted


def test_undecodable_text_and_nameless_language_are_failures(tmp_path):
    folder, tsv = make_tsv_corpus(tmp_path, [])
    (folder / "MultiClinNER-ro-train-disease-00001.txt").write_bytes(b"Pacient cu \xff")
    (folder / "notes.txt").write_text("asma")
    conversion = build_docbins(read_tsv_corpus(folder, tsv))
    reasons = {f.path.name: f.reason for f in conversion.failures}
    assert reasons["MultiClinNER-ro-train-disease-00001.txt"].startswith("not valid UTF-8 (byte 0xff")
    assert reasons["notes"].startswith("no MultiClinNER name like") and "pass the language, e.g. --lang es" in \
        reasons["notes"]
    assert sorted(conversion.docs) == ["es", "it"]


def test_explicit_language_overrides_file_names(tmp_path):
    folder, tsv = make_tsv_corpus(tmp_path, [])
    (folder / "notes.txt").write_text("asma")
    conversion = build_docbins(read_tsv_corpus(folder, tsv), lang="ro")
    assert list(conversion.docs) == ["ro"] and len(conversion.docs["ro"]) == 3


def test_malformed_mentions_tsv_raises(tmp_path):
    folder, tsv = make_tsv_corpus(tmp_path, [f"{ES}\tDISEASE\t9\t3\tx\n"])
    with pytest.raises(TSVError, match="line 2: end_span"):
        build_docbins(read_tsv_corpus(folder, tsv))


def test_parse_brat_keeps_text_bound_annotations():
    ann = "T1\tDISEASE 13 21\tdiabetes\n#1\tAnnotatorNotes T1\tnota\nT2\tDISEASE 0 4;9 12\tPaci con\nR1\tRel Arg1:T1 Arg2:T2\n"
    mentions, dropped = parse_brat(ann)
    assert mentions == [RawMention(13, 21, "DISEASE", "diabetes")]
    assert dropped == {"discontinuous": 1}
    # Only "\n" ends a line: a text holding U+2028 stays one annotation.
    assert parse_brat("T1\tDISEASE 0 3\ta\u2028b\r\n")[0] == [RawMention(0, 3, "DISEASE", "a\u2028b")]
    with pytest.raises(ValueError, match="line 1: malformed"):
        parse_brat("T1\tDISEASE 13\tdiabetes\n")


def test_brat_folder(tmp_path):
    (tmp_path / f"{ES}.txt").write_bytes(TEXT.encode())
    (tmp_path / f"{ES}.ann").write_text("T1\tDISEASE 13 21\tdiabetes\nT2\tDISEASE 0 4;9 12\tPaci con\n")
    (tmp_path / "MultiClinNER-es-train-disease-00002.txt").write_text("Sin hallazgos.")
    conversion = build_docbins(read_brat_corpus(tmp_path))
    assert [(f.path.name, f.reason.split(" (")[0]) for f in conversion.failures] == [
        ("MultiClinNER-es-train-disease-00002.ann", "cannot read")]
    assert ents(conversion.docs["es"][0]) == [("diabetes", "DISEASE", 13, 21)]
    assert conversion.stats["es"].dropped == {"discontinuous": 1}
    assert conversion.stats["es"].mentions == 2


def test_failures_pass_through_build_docbins():
    conversion = build_docbins([Failure(Path("a.txt"), "gone"), AnnotatedText(ES, "asma", [RawMention(0, 4, "DISEASE")])])
    assert [str(f) for f in conversion.failures] == ["a.txt: gone"]
    assert ents(conversion.docs["es"][0]) == [("asma", "DISEASE", 0, 4)]


def test_bundled_examples_convert_without_loss():
    conversion = build_docbins(read_tsv_corpus(EXAMPLES, EXAMPLES / "gold.tsv"))
    assert conversion.failures == []
    gold = read_mentions(EXAMPLES / "gold.tsv")
    assert sum(s.entities for s in conversion.stats.values()) == len(gold)
    assert all(s.snapped == 0 and not s.dropped and not s.mismatches for s in conversion.stats.values())
    assert {lang: len(docs) for lang, docs in conversion.docs.items()} == {"es": 2, "it": 2, "ro": 3}


IOB = (
    "O,0,8,Paciente\nO,9,12,con\nB-DISEASE,13,21,diabetes\nI-DISEASE,22,26,tipo\nI-DISEASE,27,28,2\nO,28,29,.\n"
    "\n"
    'I-DISEASE,30,34,asma\nO,34,35,","\nB-DISEASE,36,40,gota\nB-DISEASE,41,46,lupus\n'
    ",,,\n"  # an all-empty row also ends a sentence (the authors' NaN separator)
    "O,0,3,Sin\n"
)


def test_iob_csv_sentences_become_texts_with_mentions(tmp_path):
    (tmp_path / "es-disease-fold_1-train.csv").write_text(IOB)
    items = list(read_iob_csv(tmp_path / "es-disease-fold_1-train.csv"))
    assert [(i.name, i.text) for i in items] == [
        ("es-disease-fold_1-train#1", "Paciente con diabetes tipo 2."),
        ("es-disease-fold_1-train#2", "asma, gota lupus"),
        ("es-disease-fold_1-train#3", "Sin"),
    ]
    assert items[0].mentions == [RawMention(13, 28, "DISEASE")]
    # An orphan I- starts a mention; B- right after a mention starts another.
    assert items[1].mentions == [RawMention(0, 4, "DISEASE"), RawMention(6, 10, "DISEASE"), RawMention(11, 16, "DISEASE")]
    conversion = build_docbins(items, lang="es")
    assert [ents(d) for d in conversion.docs["es"]] == [
        [("diabetes tipo 2", "DISEASE", 13, 28)],
        [("asma", "DISEASE", 0, 4), ("gota", "DISEASE", 6, 10), ("lupus", "DISEASE", 11, 16)],
        [],
    ]


def test_iob_folder_with_a_bad_csv_still_reads_the_others(tmp_path):
    (tmp_path / "a.csv").write_text(IOB)
    (tmp_path / "b.csv").write_text("O,0,3,Sin\nX-DISEASE,4,8,asma\n")
    (tmp_path / "c.csv").write_text("O,0,3\n")
    items = list(read_iob_csv(tmp_path))
    failures = [str(i) for i in items if isinstance(i, Failure)]
    assert failures == [
        f"{tmp_path / 'b.csv'}: line 2: tag 'X-DISEASE' is not IOB (O, B-<label>, I-<label>)",
        f"{tmp_path / 'c.csv'}: line 1: expected 4 fields (ner,start,end,token), got 3",
    ]
    assert len(items) == 5
