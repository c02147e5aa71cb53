"""``evaluate-context``: how well are mentions qualified (negated, uncertain, ...)?

Only mentions present in both files are scored (same document, same character offsets;
labels may differ, so gold from another annotation scheme can be used), because what is
measured is the qualifier, not the NER. For each of :data:`~dt4h_spacy.tsv.QUALIFIERS` a
true value is the positive class; a mention whose value is unknown on either side (an empty
cell) is left out of that attribute's count. Scores are given per language (from the
MultiClinNER file name or a ``lang`` field, else ``all`` only) and over all mentions.

Readers: a mention TSV with qualifier columns (``predict --context-columns``), the JSONL or
Parquet of ``predict --context`` (``id`` or ``filename``, ``start``, ``end``, the qualifier fields), or
brat standoff (a ``.ann`` file or a folder of them) whose attribute lines (``A1\\tNegated T3``)
name the qualifier: Negated/Negation, Uncertain/Uncertainty/Speculated/Possible, Hypothetical,
Historical, Family (a brat gold marks only true values: the others are false).
"""

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..errors import EvaluationError, RecordError
from ..filenames import lang_from_filename
from ..textfiles import document_name
from ..io.records import QUALIFIERS, Mention
from ..io.sinks import read_jsonl, read_parquet
from ..tsv import TSVError, parse_flag, read_mentions

BRAT_ATTRIBUTES = {"negated": "negated", "negation": "negated", "uncertain": "uncertain",
                   "uncertainty": "uncertain", "speculated": "uncertain", "speculation": "uncertain",
                   "possible": "uncertain", "hypothetical": "hypothetical", "historical": "historical",
                   "family": "family", "experiencer": "family"}
_TEXTBOUND = re.compile(r"^(?P<id>T\S*)\t(?P<label>\S+) (?P<start>\d+) (?:\d+;\d+ )*(?P<end>\d+)\t(?P<text>.*)$")
_ATTRIBUTE = re.compile(r"^A\S*\t(?P<name>\S+) (?P<target>T\S+)(?: (?P<value>\S+))?\s*$")
FALSE_ATTRIBUTE_VALUES = ("false", "no", "0", "affirmed", "present", "patient")

Key = Tuple[str, int, int]


def _brat_file(path: Path) -> List[Mention]:
    name = document_name(path.name[:-4] if path.name.endswith(".ann") else path.name)
    spans: Dict[str, Tuple[str, int, int, str]] = {}
    flags: Dict[str, Dict[str, bool]] = defaultdict(dict)
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        line = line.rstrip("\r")
        if line.startswith("T"):
            match = _TEXTBOUND.match(line)
            if match is None:
                raise EvaluationError(f"{path} line {number}: malformed text-bound annotation {line[:60]!r}")
            spans[match["id"]] = (match["label"], int(match["start"]), int(match["end"]), match["text"])
        elif line.startswith("A"):
            match = _ATTRIBUTE.match(line)
            if match is None:
                raise EvaluationError(f"{path} line {number}: malformed attribute {line[:60]!r}; expected e.g. "
                                      "'A1<TAB>Negated T3'")
            attribute = BRAT_ATTRIBUTES.get(match["name"].lower())
            if attribute is not None:
                value = (match["value"] or "true").lower() not in FALSE_ATTRIBUTE_VALUES
                flags[match["target"]][attribute] = flags[match["target"]].get(attribute, False) or value
    return [Mention(name, label, start, end, text, **{q: flags[tid].get(q, False) for q in QUALIFIERS})
            for tid, (label, start, end, text) in spans.items()]


def _qualified_row(row: Mapping[str, Any], where: str) -> Mention:
    """A JSONL object as a qualified mention: labels may be missing (another annotation scheme),
    qualifiers may be written as text, a ``lang`` field names the language."""
    name = row.get("id", row.get("filename"))
    try:
        start, end = int(row["start"]), int(row["end"])
    except (ValueError, KeyError, TypeError) as err:
        raise EvaluationError(f"{where}: not a mention object with id (or filename), start and end "
                              f"({type(err).__name__}: {err})") from None
    flags = {q: _flag(row.get(q), q, where) for q in QUALIFIERS}
    return Mention(document_name(str(name)), str(row.get("label", "")), start, end, str(row.get("text", "")),
                   metadata={"lang": row["lang"]} if row.get("lang") else None, **flags)


def _rows(path: Path) -> List[Mention]:
    """A ``.jsonl`` or ``.parquet`` of mention rows (predict's, or any with its columns)."""
    reader = read_parquet if path.suffix.lower() == ".parquet" else read_jsonl
    try:
        return reader(path, _qualified_row)
    except RecordError as err:
        raise EvaluationError(str(err)) from None


def _flag(value: Any, column: str, where: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    try:
        return parse_flag(str(value), column, where)
    except TSVError as err:
        raise EvaluationError(str(err)) from None


def read_qualified(path: Union[str, Path]) -> List[Mention]:
    """The mentions of ``path`` with their qualifiers: brat (``.ann`` or a folder), ``.jsonl``,
    ``.parquet``, else TSV."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.ann"))
        if not files:
            raise EvaluationError(f"{path}: a folder must hold brat .ann files")
        return [m for file in files for m in _brat_file(file)]
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".ann":
        return _brat_file(path)
    if path.suffix.lower() in (".jsonl", ".parquet"):
        return _rows(path)
    try:
        mentions = read_mentions(path, aliases=True)
    except TSVError as err:
        raise EvaluationError(str(err)) from None
    return [replace(m, filename=document_name(m.filename)) for m in mentions]


def _language(mention: Mention) -> Optional[str]:
    if mention.metadata and mention.metadata.get("lang"):
        return str(mention.metadata["lang"])
    return lang_from_filename(mention.filename)


def _prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def evaluate_context(gold: Iterable[Mention], pred: Iterable[Mention]) -> Dict[str, Any]:
    """P/R/F1 (and counts) of each qualifier per language and over ``all``, on the mentions in both."""
    gold_by: Dict[Key, Mention] = {(m.filename, m.start, m.end): m for m in gold}
    pred_by: Dict[Key, Mention] = {(m.filename, m.start, m.end): m for m in pred}
    shared = sorted(set(gold_by) & set(pred_by))
    if not shared:
        raise EvaluationError("gold and predictions share no mention (same document name and offsets); check that "
                              "both files describe the same documents")
    counts: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: {q: [0, 0, 0, 0] for q in QUALIFIERS})
    sizes: Dict[str, int] = defaultdict(int)
    for key in shared:
        g, p = gold_by[key], pred_by[key]
        groups = ["all"] + [lang for lang in [_language(g) or _language(p)] if lang]
        for group in groups:
            sizes[group] += 1
            for q in QUALIFIERS:
                expected, found = getattr(g, q), getattr(p, q)
                if expected is None or found is None:
                    continue
                cell = counts[group][q]
                cell[0 if expected and found else 1 if found else 2 if expected else 3] += 1
    result: Dict[str, Any] = {"mentions": {"gold": len(gold_by), "pred": len(pred_by), "shared": len(shared)},
                              "per_lang": {}}
    for group in sorted(counts, key=lambda g: (g != "all", g)):
        result["per_lang"][group] = {"mentions": sizes[group], **{
            q: {**_prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "gold_true": tp + fn}
            for q, (tp, fp, fn, tn) in counts[group].items()}}
    return result


def format_context_table(result: Mapping[str, Any]) -> str:
    """A Markdown table: one row per language and qualifier with gold positives, P, R, F1."""
    lines = ["| lang | attribute | gold true | P | R | F1 |", "|---|---|---:|---:|---:|---:|"]
    for group, scores in result["per_lang"].items():
        for q in QUALIFIERS:
            s = scores[q]
            if s["tp"] + s["fp"] + s["fn"] == 0:  # nothing to find and nothing found
                continue
            lines.append(f"| {group} | {q} | {s['gold_true']} | {s['precision']:.3f} | {s['recall']:.3f} | "
                         f"{s['f1']:.3f} |")
    m = result["mentions"]
    lines.append(f"\n{m['shared']} mentions in both files (gold {m['gold']}, predicted {m['pred']}).")
    return "\n".join(lines) + "\n"
