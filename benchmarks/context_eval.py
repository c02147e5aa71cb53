"""dt4h_context against gold negation/uncertainty, beside negspacy's ``es_clinical`` termset.

Spanish: NUBes and IULA+ (both in Vicomtech/NUBes-negation-uncertainty-biomedical-corpus, CC BY-SA
3.0 ES; read from a local copy, never shipped). IULA+ is the IULA-SCRC clinical records
re-annotated with the NUBes guidelines, a second held-out set from other hospitals' notes. Its brat files hold one sentence a line; cues carry
``Scope`` (and ``DiscScope``) relations to the span they govern. A mention is every ``DISO``
annotation plus every other occurrence, on a word boundary, of a DISO surface form (4+
characters) annotated in the same part (so affirmed mentions are scored too: NUBes marks
findings only inside scopes). Its gold ``negated`` (``uncertain``) is whether it lies inside
the scope of a ``NegSynMarker``/``NegLexMarker`` (``UncertSynMarker``/``UncertLexMarker``).
SAMPLE-001..007 are the development part (rules were reviewed on it); SAMPLE-008..010 are
held out (scored, never looked at while writing rules), and so is IULA+.

Italian and Romanian: ``benchmarks/data/context_{it,ro}.jsonl``, sentences we wrote, one
mention each with its gold attributes, written with the rules; and
``benchmarks/data/context_{it,ro}_cases.jsonl``, 50 and 52 case-report and discharge-letter
sentences (lists, findings ruled out by imaging, test results, family, history, advice,
pseudo-triggers), several mentions each, written and annotated before the rules were looked
at and scored before any rule was changed for them; and ``context_{it,ro}_blind.jsonl``, 30
more each in other wording, written after those changes and scored before the next ones.

    python benchmarks/context_eval.py --nubes /work/data/nubes --output context_eval.json
"""

import argparse
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import spacy
from throughput import cpu_info

from dt4h_spacy.evaluate.context import evaluate_context, format_context_table
from dt4h_spacy.pipes.context.component import span_qualifiers
from dt4h_spacy.tsv import QUALIFIERS, Mention

HERE = Path(__file__).resolve().parent
DEV, HELD_OUT = [f"SAMPLE-{n:03d}" for n in range(1, 8)], [f"SAMPLE-{n:03d}" for n in range(8, 11)]
NEG, UNC = ("NegSynMarker", "NegLexMarker"), ("UncertSynMarker", "UncertLexMarker")
Item = Tuple[str, str, List[Tuple[int, int]], List[Dict[str, bool]]]  # name, sentence, spans, gold


def _ann(path: Path):
    spans, relations = {}, []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if line.startswith("T") and len(fields) >= 2 and ";" not in fields[1]:
            label, start, end = fields[1].split()
            spans[fields[0]] = (label, int(start), int(end))
        elif line.startswith("R") and len(fields) >= 2:
            kind, arg1, arg2 = fields[1].split()
            if kind in ("Scope", "DiscScope"):
                relations.append((arg1.split(":")[1], arg2.split(":")[1]))
    return spans, relations


def nubes_items(root: Path, samples: List[str]) -> List[Item]:
    """One item per NUBes sentence with at least one mention (see the module docstring)."""
    return brat_items([p for s in samples for p in sorted((root / "NUBes" / s).glob("*.ann"))])


def iula_items(root: Path) -> List[Item]:
    """IULA+ (same brat scheme as NUBes, one sentence a line)."""
    return brat_items(sorted((root / "IULA+").glob("*.ann")))


def brat_items(files: List[Path]) -> List[Item]:
    """One item per sentence (line) of ``files`` with at least one mention; DISO forms are
    collected over ``files`` together. Texts are read byte for byte, because brat offsets
    count the ``\\r`` of IULA+'s CRLF line ends."""
    parsed = [(p, p.with_suffix(".txt").read_bytes().decode("utf-8"), *_ann(p)) for p in files]
    forms = {text[s:e].lower() for _, text, spans, _ in parsed for label, s, e in spans.values()
             if label == "DISO" and e - s >= 4}
    pattern = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + r")(?!\w)",
                         re.IGNORECASE)
    items: List[Item] = []
    for path, text, spans, relations in parsed:
        scopes = {"negated": [], "uncertain": []}
        for cue, target in relations:
            if cue in spans and target in spans:
                kind = "negated" if spans[cue][0] in NEG else "uncertain" if spans[cue][0] in UNC else None
                if kind:
                    scopes[kind].append(spans[target][1:])
        mentions = sorted({(s, e) for label, s, e in spans.values() if label == "DISO"})
        taken = [False] * (len(text) + 1)
        for s, e in mentions:
            taken[s:e] = [True] * (e - s)
        for match in pattern.finditer(text):
            if not any(taken[match.start():match.end()]):
                mentions.append((match.start(), match.end()))
        offset = 0
        for number, sentence in enumerate(text.split("\n")):
            inside = [(s, e) for s, e in sorted(mentions) if offset <= s and e <= offset + len(sentence)]
            if inside:
                gold = [{kind: any(a <= s and e <= b for a, b in scopes[kind]) for kind in scopes} for s, e in inside]
                items.append((f"{path.stem}-{number}", sentence, [(s - offset, e - offset) for s, e in inside], gold))
            offset += len(sentence) + 1
    return items


def written_items(name: str) -> List[Item]:
    """Sentences we wrote, ``benchmarks/data/context_<name>.jsonl``: either one ``mention`` with
    its attributes as fields, or ``mentions`` mapping each mention (its first occurrence in the
    text) to the list of its true attributes."""
    items = []
    for number, line in enumerate((HERE / "data" / f"context_{name}.jsonl").read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        mentions = row.get("mentions") or {row["mention"]: [q for q in QUALIFIERS if row.get(q)]}
        spans, gold = [], []
        for mention, true in mentions.items():
            start = row["text"].index(mention)
            spans.append((start, start + len(mention)))
            gold.append({q: q in true for q in QUALIFIERS})
        items.append((f"{name}-{number}", row["text"], spans, gold))
    return items


def run(nlp, items: List[Item], qualify, lang: str) -> Tuple[List[Mention], List[Mention], float, int]:
    """Gold and predicted mentions of ``items`` (each sentence one doc, mentions as doc.ents)."""
    gold, pred, seconds, words = [], [], 0.0, 0
    for name, sentence, spans, flags in items:
        doc = nlp.make_doc(sentence)
        ents = [doc.char_span(s, e, label="DISEASE", alignment_mode="expand") for s, e in spans]
        doc.ents = spacy.util.filter_spans(ents)
        started = time.perf_counter()
        for _, pipe in nlp.pipeline:
            doc = pipe(doc)
        seconds += time.perf_counter() - started
        words += len(doc)
        by_offsets = {(ent.start_char, ent.end_char): ent for ent in doc.ents}
        for (s, e), expected in zip(spans, flags):
            ent = by_offsets.get((doc.char_span(s, e, alignment_mode="expand").start_char,
                                  doc.char_span(s, e, alignment_mode="expand").end_char))
            if ent is None:
                continue
            meta = {"lang": lang}
            gold.append(Mention(name, "DISEASE", s, e, sentence[s:e], metadata=meta, **expected))
            pred.append(Mention(name, "DISEASE", s, e, sentence[s:e], metadata=meta, **qualify(ent)))
    return gold, pred, seconds, words


def ours(lang: str):
    nlp = spacy.blank(lang)
    nlp.add_pipe("dt4h_context")
    return nlp, span_qualifiers


def negspacy_es():
    from negspacy.negation import Negex  # noqa: F401 - registers the factory
    from negspacy.termsets import termset

    nlp = spacy.blank("es")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("negex", config={"neg_termset": termset("es_clinical").get_patterns()})
    return nlp, lambda ent: {"negated": bool(ent._.negex), "uncertain": None, "hypothetical": None,
                             "historical": None, "family": None}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nubes", type=Path, default=Path(os.environ.get("NUBES", "/work/data/nubes")))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    report: Dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_info()["model"],
                                 "load_start": load, "results": {}}
    sets = {"es-dev (NUBes 001-007)": ("es", nubes_items(args.nubes, DEV)),
            "es-held-out (NUBes 008-010)": ("es", nubes_items(args.nubes, HELD_OUT)),
            "es-held-out (IULA+)": ("es", iula_items(args.nubes)),
            "it (ours)": ("it", written_items("it")), "ro (ours)": ("ro", written_items("ro")),
            "it (new cases)": ("it", written_items("it_cases")), "ro (new cases)": ("ro", written_items("ro_cases")),
            "it (blind)": ("it", written_items("it_blind")), "ro (blind)": ("ro", written_items("ro_blind"))}
    for title, (lang, items) in sets.items():
        systems = {"dt4h_context": ours(lang)}
        if lang == "es":
            systems["negspacy es_clinical"] = negspacy_es()
        for system, (nlp, qualify) in systems.items():
            gold, pred, seconds, words = run(nlp, items, qualify, lang)
            result = evaluate_context(gold, pred)
            result["words_per_second"] = words / seconds if seconds else None
            report["results"][f"{title} / {system}"] = result
            print(f"## {title} / {system}: {len(items)} sentences, {len(gold)} mentions, "
                  f"{words / seconds:,.0f} words/s\n")
            print(format_context_table(result))
    report["load_end"] = os.getloadavg()
    print(f"load {report['load_start']} -> {report['load_end']}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
