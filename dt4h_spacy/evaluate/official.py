"""MultiClinAI scoring that reproduces the official scorer's numbers exactly.

Definitions follow ``src/evaluate.py`` of the shared task's MultiClinAIEval repository:

* Prediction rows duplicated on (filename, label, start, end) count once; gold rows are
  kept as they are. With ``entity`` given, only rows of that label are scored.
* **Strict**: a gold row matches at most one prediction with the same filename, label, start
  and end. The official scorer matches greedily, first come first served; since matching is
  on the exact key, that equals ``min(#gold, #pred)`` per key, which is what we count.
* **Character-overlap F1**: the pair score of gold span g and predicted span p of the same
  file and label is the F1 of o/|p| and o/|g| with o = their overlap in characters (0
  without overlap). Recall is the mean over gold spans of their best pair score, precision
  the mean over predicted spans of theirs (no one-to-one constraint).
* Every number is rounded to 4 decimals; F1 is computed from the unrounded P and R.

Two conveniences the official scorer lacks, because they otherwise surface only as a silent
0: a file name matches with or without ``.txt`` (``convert`` accepts both), and gold and
predictions that share no document are an error rather than a score. And one option:
``only_gold_docs`` scores only the documents the gold has mentions of (predictions on a whole
extract against gold for part of it), saying how many predicted documents it left out.

The official scorer compares every pair of spans in a document; we compare only spans of
the same (file, label) group whose extents can overlap, which gives the same scores. The
only possible difference is in the last bit of a float sum (the official order of documents
is a Python set's); we sum with :func:`math.fsum`, the correctly rounded sum.
"""

import bisect
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import EvaluationError
from ..filenames import lang_from_filename
from ..io.records import Mention, sort_key
from ..io.sinks import read_output

ROUND = 4


@dataclass
class _Tally:
    """Counts and per-span best scores of some documents, summed before turning into metrics."""

    tp: int = 0
    n_gold: int = 0
    n_pred: int = 0
    gold_scores: List[float] = field(default_factory=list)
    pred_scores: List[float] = field(default_factory=list)

    def add(self, other: "_Tally") -> None:
        self.tp += other.tp
        self.n_gold += other.n_gold
        self.n_pred += other.n_pred
        self.gold_scores.extend(other.gold_scores)
        self.pred_scores.extend(other.pred_scores)

    def metrics(self) -> Dict[str, Dict[str, Any]]:
        return {"strict": strict_metrics(self.tp, self.n_pred - self.tp, self.n_gold - self.tp),
                "char_f1": char_metrics(self.gold_scores, self.pred_scores)}


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def strict_metrics(tp: int, fp: int, fn: int) -> Dict[str, Any]:
    """P, R, F1 (rounded) with the counts, under the official key names."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(precision, ROUND), "recall": round(recall, ROUND),
            "f1": round(_f1(precision, recall), ROUND), "tp": tp, "fp": fp, "fn": fn}


def char_metrics(gold_scores: Sequence[float], pred_scores: Sequence[float]) -> Dict[str, Any]:
    """Mean best pair score of gold spans (recall) and of predicted spans (precision)."""
    recall = math.fsum(gold_scores) / len(gold_scores) if gold_scores else 0.0
    precision = math.fsum(pred_scores) / len(pred_scores) if pred_scores else 0.0
    return {"precision": round(precision, ROUND), "recall": round(recall, ROUND),
            "f1": round(_f1(precision, recall), ROUND), "n_gold": len(gold_scores), "n_pred": len(pred_scores)}


def pair_score(gold: Tuple[int, int], pred: Tuple[int, int]) -> float:
    """Character-overlap F1 of two spans ``(start, end)``; same arithmetic as the official one."""
    overlap = min(gold[1], pred[1]) - max(gold[0], pred[0])
    if overlap <= 0:
        return 0.0
    recall = overlap / (gold[1] - gold[0])
    precision = overlap / (pred[1] - pred[0])
    return 2 * precision * recall / (precision + recall)


def _best_scores(spans: List[Tuple[int, int]], others: List[Tuple[int, int]], spans_are_gold: bool) -> List[float]:
    """For each span, its best pair score with any of ``others`` (same file and label).

    Only spans that start before this one ends can overlap it; we scan those back from the
    latest start and stop once no earlier span reaches this span's start.
    """
    ordered = sorted(others)
    starts = [start for start, _ in ordered]
    reach: List[int] = []  # reach[i]: the largest end among ordered[:i + 1]
    for _, end in ordered:
        reach.append(max(end, reach[-1]) if reach else end)
    best: List[float] = []
    for span in spans:
        top = 0.0
        i = bisect.bisect_left(starts, span[1]) - 1
        while i >= 0 and reach[i] > span[0]:
            score = pair_score(span, ordered[i]) if spans_are_gold else pair_score(ordered[i], span)
            top = max(top, score)
            i -= 1
        best.append(top)
    return best


def _tally_group(gold: List[Tuple[int, int]], pred: List[Tuple[int, int]]) -> _Tally:
    """Score one (filename, label) group; ``pred`` is already deduplicated."""
    pred_counts = Counter(pred)
    tp = sum(min(count, pred_counts[span]) for span, count in Counter(gold).items())
    return _Tally(tp=tp, n_gold=len(gold), n_pred=len(pred),
                  gold_scores=_best_scores(gold, pred, spans_are_gold=True),
                  pred_scores=_best_scores(pred, gold, spans_are_gold=False))


def _dedupe(mentions: Iterable[Mention]) -> List[Mention]:
    seen = set()
    unique = []
    for mention in mentions:
        if mention.key not in seen:
            seen.add(mention.key)
            unique.append(mention)
    return unique


def _document(mention: Mention) -> Mention:
    """The mention with its file named as the document, without ``.txt``."""
    return replace(mention, filename=mention.filename[:-4]) if mention.filename.endswith(".txt") else mention


def _scored(gold: Iterable[Mention], pred: Iterable[Mention], entity: Optional[str],
            only_gold_docs: bool = False) -> Tuple[List[Mention], List[Mention]]:
    """The rows that are scored: files named without ``.txt``, predictions counted once,
    only those of documents with gold mentions (``only_gold_docs``), only ``entity``'s rows
    when one is given."""
    gold = [_document(m) for m in gold]
    pred = _dedupe(_document(m) for m in pred)
    if only_gold_docs:
        pred = _in_gold_docs(gold, pred)[0]
    if entity:
        gold = [m for m in gold if m.label == entity]
        pred = [m for m in pred if m.label == entity]
    return gold, pred


def _in_gold_docs(gold: List[Mention], pred: List[Mention]) -> Tuple[List[Mention], List[Mention]]:
    """``pred`` split into the mentions of documents the gold has mentions of, and the rest."""
    documents = {m.filename for m in gold}
    return [m for m in pred if m.filename in documents], [m for m in pred if m.filename not in documents]


def _check_inputs(gold: List[Mention], pred: List[Mention], entity: Optional[str],
                  gold_labels: Iterable[str], pred_labels: Iterable[str]) -> None:
    """Refuse or warn about the mistakes that otherwise show up only as a silent 0."""
    if entity:
        for side, rows, labels in (("gold", gold, gold_labels), ("prediction", pred, pred_labels)):
            present = sorted(set(labels))
            if not rows and present:
                warnings.warn(f"No {side} rows have label {entity!r} (labels present: {', '.join(present)}); "
                              "check --entity, labels are case-sensitive.", stacklevel=3)
    gold_files = {m.filename for m in gold}
    pred_files = {m.filename for m in pred}
    if gold_files and pred_files and not gold_files & pred_files:
        raise EvaluationError(
            f"Gold and predictions share no document (gold e.g. {min(gold_files)!r}, predictions e.g. "
            f"{min(pred_files)!r}): they are not about the same texts. Check that both files come from "
            "the same folder of documents."
        )


def evaluate(gold: List[Mention], pred: List[Mention], entity: Optional[str] = None,
             only_gold_docs: bool = False) -> Dict[str, Any]:
    """Official MultiClinAI metrics of ``pred`` against ``gold`` plus per-language/per-file ones.

    Returns ``{"entity", "strict": {precision, recall, f1, tp, fp, fn}, "char_f1":
    {precision, recall, f1, n_gold, n_pred}, "per_lang": {lang: {"strict", "char_f1"}},
    "per_label": {label: {"strict", "char_f1"}}, "per_file": {filename: {"strict", "char_f1"}}}``.
    ``per_lang`` covers files whose name carries a MultiClinNER language code; other files
    count only in the totals. Spans match only spans of their own label, so without
    ``entity`` the totals are the micro average over the labels (as the official scorer
    computes them on a file of several labels).
    File names are compared without ``.txt``. Raises :class:`EvaluationError` when gold and
    predictions share no document; warns (``UserWarning``) when ``entity`` matches no row.
    ``only_gold_docs`` scores only the predictions on documents the gold has mentions of and
    adds ``"left_out": {"documents", "mentions"}``: the predicted documents (and their
    mentions, counted once) it left out.
    """
    gold_labels = [m.label for m in gold]
    pred_labels = [m.label for m in pred]
    every_gold = [_document(m) for m in gold]
    gold, pred = _scored(gold, pred, entity)
    _check_inputs(gold, pred, entity, gold_labels, pred_labels)
    left_out: List[Mention] = []
    if only_gold_docs:
        pred, left_out = _in_gold_docs(every_gold, pred)

    groups: Dict[Tuple[str, str], Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]] = defaultdict(lambda: ([], []))
    for mention in gold:
        groups[(mention.filename, mention.label)][0].append((mention.start, mention.end))
    for mention in pred:
        groups[(mention.filename, mention.label)][1].append((mention.start, mention.end))

    per_file: Dict[str, _Tally] = defaultdict(_Tally)
    per_label: Dict[str, _Tally] = defaultdict(_Tally)
    for (filename, label), (gold_spans, pred_spans) in sorted(groups.items()):
        tally = _tally_group(gold_spans, pred_spans)
        per_file[filename].add(tally)
        per_label[label].add(tally)

    total = _Tally()
    per_lang: Dict[str, _Tally] = defaultdict(_Tally)
    for filename in sorted(per_file):
        total.add(per_file[filename])
        lang = lang_from_filename(filename)
        if lang is not None:
            per_lang[lang].add(per_file[filename])

    result: Dict[str, Any] = {"entity": entity}
    result.update(total.metrics())
    result["per_lang"] = {lang: per_lang[lang].metrics() for lang in sorted(per_lang)}
    result["per_label"] = {label: per_label[label].metrics() for label in sorted(per_label)}
    result["per_file"] = {name: per_file[name].metrics() for name in sorted(per_file)}
    if only_gold_docs:
        result["left_out"] = {"documents": len({m.filename for m in left_out}), "mentions": len(left_out)}
    return result


def evaluate_files(gold_path: Union[str, Path], pred_path: Union[str, Path], entity: Optional[str] = None,
                   only_gold_docs: bool = False) -> Dict[str, Any]:
    """:func:`evaluate` on two files as ``predict`` writes them (see
    :func:`~dt4h_spacy.io.sinks.read_output`): TSV in the MultiClinAI or DisTEMIST columns as
    ``convert`` reads them, ``.jsonl`` or ``.parquet``; raises
    :class:`~dt4h_spacy.tsv.TSVError` or :class:`~dt4h_spacy.errors.RecordError` for bad rows."""
    return evaluate(read_output(Path(gold_path)), read_output(Path(pred_path)), entity, only_gold_docs)


TABLE_COLUMNS = ("strict P", "strict R", "strict F1", "char P", "char R", "char F1", "gold", "predicted")


def format_table(result: Dict[str, Any]) -> str:
    """Strict and character-overlap P/R/F1 per language, then all together, as a Markdown
    table: readable in a terminal and pasted as is into a report. With several labels, a
    second table gives each label and their micro average."""
    tables = [_table("language", [*result["per_lang"].items(), ("**all**", result)])]
    if len(result.get("per_label", {})) > 1:
        tables.append(_table("label", [*result["per_label"].items(), ("**micro**", result)]))
    if "left_out" in result:
        left_out = result["left_out"]
        tables.append(f"Scored only the documents with gold mentions (--only-gold-docs): {left_out['documents']} "
                      f"predicted document(s) with {left_out['mentions']} mention(s) left out.\n")
    return "\n".join(tables)


def _table(first: str, rows: Sequence[Tuple[str, Dict[str, Any]]]) -> str:
    lines = [f"| {first} | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, metrics in rows:
        strict, char = metrics["strict"], metrics["char_f1"]
        values = [strict["precision"], strict["recall"], strict["f1"], char["precision"], char["recall"], char["f1"]]
        cells = [f"{v:.4f}" for v in values] + [str(char["n_gold"]), str(char["n_pred"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def strict_errors(gold: List[Mention], pred: List[Mention], entity: Optional[str] = None,
                  only_gold_docs: bool = False) -> List[Tuple[str, Mention]]:
    """The strict score's mistakes, for error analysis: ``("FP", m)`` for a prediction that
    matches no gold mention, ``("FN", m)`` for a gold mention no prediction matches; sorted
    by document and offset. Rows are taken as :func:`evaluate` scores them (:func:`_scored`)."""
    gold, pred = _scored(gold, pred, entity, only_gold_docs)
    unmatched_gold = Counter(m.key for m in gold)
    unmatched_pred = Counter(m.key for m in pred)
    matched = unmatched_gold & unmatched_pred
    unmatched_gold -= matched
    unmatched_pred -= matched
    errors: List[Tuple[str, Mention]] = []
    for kind, mentions, unmatched in (("FN", gold, unmatched_gold), ("FP", pred, unmatched_pred)):
        for mention in reversed(mentions):  # the last copies of a duplicated gold key are the missed ones
            if unmatched[mention.key]:
                unmatched[mention.key] -= 1
                errors.append((kind, mention))
    return sorted(errors, key=lambda error: (sort_key(error[1]), error[0]))
