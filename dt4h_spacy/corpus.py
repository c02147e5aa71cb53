"""MultiClinNER/DisTEMIST-style annotated data → spaCy ``DocBin`` files, one per language.

Readers turn one source format into :class:`AnnotatedText` items (text + character-offset
mentions) or :class:`~dt4h_spacy.textfiles.Failure` items; :func:`build_docbins` does the
rest for every format, so adding a format means adding one reader function.

Mentions are character offsets, NER training needs token spans: a mention that does not
fall on the language tokenizer's token boundaries is snapped outwards
(``alignment_mode="expand"``), overlapping mentions are resolved with
:func:`spacy.util.filter_spans`, and everything changed or lost is counted by reason, so
nobody trains on silently broken data.
"""

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.util import filter_spans

from . import extensions  # noqa: F401 - registers doc._.dt4h_lang
from .filenames import spacy_lang
from .io.records import Failure
from .io.sources import Source
from .io.tables import Columns
from .routing import RoutingError, route_language
from .textfiles import UnreadableFile, atomic_write, document_name, find_txt_files, read_documents, read_text
from .tsv import read_mentions

BRAT_TEXTBOUND = re.compile(r"^(?P<id>T\S*)\t(?P<label>\S+) (?P<offsets>\d+ \d+(?:;\d+ \d+)*)\t(?P<text>.*)$")


@dataclass(frozen=True)
class RawMention:
    """A mention as the source gives it: character offsets into the text, end exclusive."""

    start: int
    end: int
    label: str
    text: Optional[str] = None  # the source's copy of the surface form, checked if given


@dataclass
class AnnotatedText:
    """One document of a source corpus. ``dropped`` counts mentions a reader already refused;
    ``lang`` is the language its table row gives, if any."""

    name: str
    text: str
    mentions: List[RawMention]
    dropped: Counter = field(default_factory=Counter)
    lang: Optional[str] = None


@dataclass
class LangStats:
    """What happened to the mentions of one language, for the summary the user reads."""

    documents: int = 0
    mentions: int = 0
    entities: int = 0
    snapped: int = 0
    reanchored: int = 0
    dropped: Counter = field(default_factory=Counter)
    mismatches: List[str] = field(default_factory=list)  # "file start-end: ..." per dropped or moved mention

    def summary(self) -> str:
        parts = [f"{self.documents} documents, {self.mentions} mentions -> {self.entities} entities",
                 f"{self.snapped} snapped to token boundaries"]
        dropped = sum(self.dropped.values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
        parts.append(f"{dropped} dropped" + (f" ({reasons})" if reasons else ""))
        if self.reanchored:
            parts.append(f"{self.reanchored} moved to the nearest exact occurrence of their text")
        return ", ".join(parts)


@dataclass
class Conversion:
    """Docs per language plus the accounting of every file and mention."""

    docs: Dict[str, List[Doc]] = field(default_factory=dict)
    stats: Dict[str, LangStats] = field(default_factory=lambda: defaultdict(LangStats))
    failures: List[Failure] = field(default_factory=list)


def read_tsv_corpus(txt_dir: Path, mentions_tsv: Path, recursive: bool = False,
                    encoding: str = "utf-8") -> Iterator[Union[AnnotatedText, Failure]]:
    """A folder of ``.txt`` (decoded with ``encoding``), or a table of documents, plus one
    mention TSV: :func:`read_source_corpus` of INPUT as ``predict`` opens it (a table with the
    default ``id`` and ``text`` columns)."""
    return read_source_corpus(Source.open(Path(txt_dir), Columns(), recursive, encoding), mentions_tsv)


def read_source_corpus(source: Source, mentions_tsv: Path) -> Iterator[Union[AnnotatedText, Failure]]:
    """The documents of ``source`` (``.txt`` files, or a table's rows: id, text and the
    language column's value, read exactly as by ``predict``) plus one mention TSV (MultiClinAI
    or DisTEMIST columns) whose offsets index the decoded texts.

    The TSV's ``filename`` names a file (with ``.txt`` or not) or a table row's id. Mentions of
    a document that is not in INPUT are reported as a failure of that name, since they cannot
    be placed in any text. Raises :class:`~dt4h_spacy.tsv.TSVError` for a malformed TSV.
    """
    rows = read_mentions(mentions_tsv, aliases=True)
    by_name: Dict[str, List[RawMention]] = defaultdict(list)
    for row in rows:
        by_name[document_name(row.filename)].append(RawMention(row.start, row.end, row.label, row.text))
    for item in source.documents():
        if isinstance(item, Failure):
            yield item
            by_name.pop(document_name(item.path), None)  # lost with their file, already reported
            continue
        yield AnnotatedText(item.name, item.text, by_name.pop(item.name, []), lang=item.lang)
    for name, mentions in sorted(by_name.items()):
        missing = f"no {name}.txt in {source.path}" if source.columns is None else \
            f"no row with id {name!r} in {source.path}"
        yield Failure(Path(name), f"{len(mentions)} mention(s) in {mentions_tsv} but {missing}")


def parse_brat(ann: str) -> Tuple[List[RawMention], Counter]:
    """Text-bound (``T``) annotations of a brat ``.ann``; other kinds (relations, notes…) are ignored.

    Discontinuous mentions (``10 15;20 25``) cannot be one entity span, so they are dropped.
    """
    mentions: List[RawMention] = []
    dropped: Counter = Counter()
    # split on "\n" only: str.splitlines would also split inside texts holding U+2028, \x1c…
    for number, line in enumerate(ann.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.startswith("T"):
            continue
        match = BRAT_TEXTBOUND.match(line)
        if match is None:
            raise ValueError(f"line {number}: malformed text-bound annotation {line[:60]!r}")
        if ";" in match.group("offsets"):
            dropped["discontinuous"] += 1
            continue
        start, end = (int(n) for n in match.group("offsets").split())
        mentions.append(RawMention(start, end, match.group("label"), match.group("text")))
    return mentions, dropped


def read_brat_corpus(folder: Path, recursive: bool = False, encoding: str = "utf-8") -> Iterator[Union[AnnotatedText, Failure]]:
    """brat standoff: each ``x.txt`` with its ``x.ann`` beside it (a missing ``.ann`` is a failure).

    ``encoding`` decodes the ``.txt`` files; ``.ann`` files are UTF-8, as brat writes them.
    """
    paths, failures = find_txt_files(folder, recursive)
    yield from failures
    for item in read_documents(paths, encoding):
        if isinstance(item, Failure):
            yield item
            continue
        ann_path = item.path.with_suffix(".ann")
        try:
            mentions, dropped = parse_brat(read_text(ann_path))
        except (UnreadableFile, ValueError) as err:
            yield Failure(ann_path, str(err))
            continue
        yield AnnotatedText(item.name, item.text, mentions, dropped)


def _iob_sentence(rows: List[Tuple[int, str, int, int, str]], name: str) -> AnnotatedText:
    """One sentence of token rows ``(line, tag, start, end, token)`` as text plus mentions.

    The text is the tokens joined by one space wherever the source offsets leave a gap, so
    it never depends on offsets agreeing with token lengths. An ``I-`` tag that does not
    continue an entity of its type starts one, as in CoNLL evaluation.
    """
    text = ""
    mentions: List[RawMention] = []
    open_label, open_start = None, 0
    previous_end: Optional[int] = None
    text_end = 0  # where the previous token ended in ``text``: an entity closes there
    for line, tag, start, end, token in rows:
        if previous_end is not None and start > previous_end:
            text += " "
        token_start = len(text)
        text += token
        previous_end = end
        prefix, _, label = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I") or not label):
            raise ValueError(f"line {line}: tag {tag!r} is not IOB (O, B-<label>, I-<label>)")
        if open_label is not None and (tag == "O" or prefix == "B" or label != open_label):
            mentions.append(RawMention(open_start, text_end, open_label))
            open_label = None
        if tag != "O" and open_label is None:
            open_label, open_start = label, token_start
        text_end = len(text)
    if open_label is not None:
        mentions.append(RawMention(open_start, len(text), open_label))
    return AnnotatedText(name, text, mentions)


def read_iob_csv(path: Path) -> Iterator[Union[AnnotatedText, Failure]]:
    """The DT4H authors' token-per-row CSV: ``ner,start,end,token``, no header, one sentence
    per block (blank or empty-field lines in between). Each sentence becomes one text named
    ``<file stem>#<n>``; a CSV that cannot be parsed is one failure naming its line.
    ``path`` may be a CSV file or a folder of them (read in name order).
    """
    paths = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    for csv_path in paths:
        try:
            sentences = list(_iob_sentences(csv_path))
        except (UnreadableFile, ValueError) as err:
            yield Failure(csv_path, str(err))
            continue
        yield from sentences


def _iob_sentences(path: Path) -> Iterator[AnnotatedText]:
    rows: List[Tuple[int, str, int, int, str]] = []
    count = 0
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    for fields in reader:
        number = reader.line_num
        if not fields or all(not field for field in fields):
            if rows:
                count += 1
                yield _iob_sentence(rows, f"{path.stem}#{count}")
                rows = []
            continue
        if len(fields) != 4:
            raise ValueError(f"line {number}: expected 4 fields (ner,start,end,token), got {len(fields)}")
        tag, start, end, token = fields
        try:
            rows.append((number, tag.strip(), int(float(start)), int(float(end)), token))
        except ValueError:
            raise ValueError(f"line {number}: start/end {start!r}, {end!r} are not character offsets") from None
    if rows:
        yield _iob_sentence(rows, f"{path.stem}#{count + 1}")


def _trim_space(span: Span) -> Span:
    """Without whitespace tokens (``\\r\\n``, a second space) at its edges: they are no part of a mention."""
    start, end = span.start, span.end
    while start < end and span.doc[start].is_space:
        start += 1
    while end > start and span.doc[end - 1].is_space:
        end -= 1
    return Span(span.doc, start, end, label=span.label)


def _same_text(a: str, b: str) -> bool:
    """Equal up to whitespace: TSV exports often flatten a mention's line break or tab."""
    return a == b or a.split() == b.split()


def _nearest_occurrence(text: str, mention: RawMention) -> Optional[int]:
    """Start of the exact occurrence of the mention's text closest to its given start."""
    assert mention.text is not None
    starts = [m.start() for m in re.finditer(re.escape(mention.text), text)] if mention.text else []
    return min(starts, key=lambda start: (abs(start - mention.start), start), default=None)


def annotate_doc(doc: Doc, mentions: Iterable[RawMention], stats: LangStats, name: str = "",
                 reanchor: bool = False) -> Doc:
    """Set ``doc.ents`` from character mentions, counting snapped and dropped ones in ``stats``.

    A mention whose source text differs from the document at its offsets is dropped and
    listed in ``stats.mismatches`` (training on it would teach the wrong words); with
    ``reanchor`` it is moved to the nearest exact occurrence of its text, if there is one.
    """
    text = doc.text
    spans: List[Span] = []
    seen = set()
    for mention in mentions:
        stats.mentions += 1
        if mention.start < 0 or mention.end > len(text) or mention.end <= mention.start:
            stats.dropped["outside the text"] += 1
            continue
        found = text[mention.start:mention.end]
        if mention.text is not None and not _same_text(found, mention.text):
            where = f"{name} {mention.start}-{mention.end}: the source says {mention.text!r}, the text has {found!r}"
            start = _nearest_occurrence(text, mention) if reanchor else None
            if start is None:
                stats.dropped["text differs from the file at its offsets"] += 1
                stats.mismatches.append(f"{where}; dropped")
                continue
            mention = RawMention(start, start + len(mention.text), mention.label, mention.text)
            stats.reanchored += 1
            stats.mismatches.append(f"{where}; moved to {mention.start}-{mention.end}")
        span = doc.char_span(mention.start, mention.end, label=mention.label, alignment_mode="expand")
        span = _trim_space(span) if span is not None else None
        if span is None or len(span) == 0:
            stats.dropped["only whitespace"] += 1
            continue
        if (span.start_char, span.end_char) != (mention.start, mention.end):
            stats.snapped += 1
        key = (span.start, span.end, span.label_)
        if key in seen:
            stats.dropped["duplicate"] += 1
            continue
        seen.add(key)
        spans.append(span)
    kept = filter_spans(spans)
    if len(kept) < len(spans):
        stats.dropped["overlapping a longer mention"] += len(spans) - len(kept)
    doc.ents = kept
    stats.entities += len(kept)
    return doc


def build_docbins(items: Iterable[Union[AnnotatedText, Failure]], lang: str = "auto",
                  entity: Optional[str] = None, reanchor: bool = False) -> Conversion:
    """Tokenize each document with its language's spaCy tokenizer and set its entities.

    Each document's language is chosen as ``predict`` chooses it
    (:func:`~dt4h_spacy.routing.route_language`): its table row's, else ``lang``, else
    (``"auto"``) the one of its MultiClinNER name, else (``"auto"``, ``"detect"``) the one
    detected in its text; a document with none is a failure saying to pass ``lang``.
    ``entity`` keeps only that label; ``reanchor``: see :func:`annotate_doc`.
    Raises ``ValueError`` for a language spaCy has no tokenizer for.
    """
    result = Conversion()
    tokenizers: Dict[str, Language] = {}
    for item in items:
        if isinstance(item, Failure):
            result.failures.append(item)
            continue
        try:
            doc_lang = route_language(item.name, item.text, item.lang, lang)
        except RoutingError as err:
            result.failures.append(Failure(Path(item.name), str(err)))
            continue
        if doc_lang not in tokenizers:
            try:
                tokenizers[doc_lang] = spacy.blank(spacy_lang(doc_lang))
            except ImportError as err:
                raise ValueError(f"spaCy has no tokenizer for language {doc_lang!r} (document {item.name}); "
                                 "pass --lang with a language spaCy knows.") from err
        stats = result.stats[doc_lang]
        stats.documents += 1
        stats.dropped.update(item.dropped)
        stats.mentions += sum(item.dropped.values())
        mentions = item.mentions
        if entity:
            mentions = [m for m in item.mentions if m.label == entity]
            if len(mentions) < len(item.mentions):
                stats.dropped[f"label other than {entity}"] += len(item.mentions) - len(mentions)
                stats.mentions += len(item.mentions) - len(mentions)
        doc = annotate_doc(tokenizers[doc_lang].make_doc(item.text), mentions, stats, item.name, reanchor)
        doc._.dt4h_lang = doc_lang  # a DocBin does not keep the language; merged corpora need it
        result.docs.setdefault(doc_lang, []).append(doc)
    return result


def write_docbins(conversion: Conversion, output_dir: Path) -> Dict[str, Path]:
    """Write ``<output_dir>/<lang>.spacy`` for each language, atomically; returns the paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    for doc_lang, docs in sorted(conversion.docs.items()):
        path = output_dir / f"{doc_lang}.spacy"
        with atomic_write(path, binary=True) as handle:
            handle.write(DocBin(docs=docs, store_user_data=True).to_bytes())
        written[doc_lang] = path
    return written

