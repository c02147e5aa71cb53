"""One path for every annotation run: source → engine (annotate in batches) → sink.

``predict`` and ``visualize`` both call :func:`run_job`; the engine (local, Ray) only
decides where the annotate step runs. Mention outputs are committed in durable parts as the
run goes (:mod:`dt4h_spacy.io.parts`), so a crash costs at most ``commit_every`` documents
or :data:`COMMIT_SECONDS` of work and ``--resume`` continues; OUTPUT itself appears only
when complete, with ``OUTPUT.job.json`` saying which job it holds, so a ``--resume`` of a
finished job annotates nothing.
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set, Union

from tqdm import tqdm

from .batch import report_failures
from .errors import RunError, UsageError, WorkerError
from .io.parts import Parts, PartsError, finished, parts_folder, record_finished
from .io.cdm import write_cdm_jsonl
from .io.records import AnnotatedDoc, Failure, Mention
from .io.sinks import CDM_SUFFIX, MENTION_WRITERS, write_html
from .io.sources import Source
from .io.tables import TableError

COMMIT_SECONDS = 60.0

Engine = Callable[[Source, Set[str]], Iterator[Union[AnnotatedDoc, Failure]]]


@dataclass
class Outcome:
    """What a run did, for the command's summary."""

    read: int = 0
    mentions: int = 0
    failures: List[Failure] = field(default_factory=list)
    documents: List[AnnotatedDoc] = field(default_factory=list)
    already_complete: bool = False  # a --resume found OUTPUT holding this job, finished: nothing was annotated


def run_job(source: Source, output: Path, kind: str, engine: Engine, job: Dict[str, Any], *, with_scores: bool = False,
            with_context: bool = False, resume: bool = False, commit_every: int = 256, quiet: bool = False, title: Callable[[], str] = str,
            spans: bool = False, model_name: str = "dt4h_disease") -> Outcome:
    """Annotate ``source`` with ``engine`` and write OUTPUT as ``kind`` (see
    :func:`~dt4h_spacy.io.sinks.output_kind`).

    ``job`` holds the settings that decide the rows, so a ``--resume`` with other settings is
    refused; ``with_context`` writes the qualifier columns; ``title`` gives an HTML page's title, ``spans`` draws all its spans stacked; ``model_name`` is a CDM
    file's ``service_model``. Ctrl-C raises :class:`~dt4h_spacy.errors.RunError` (exit code 130) with OUTPUT
    unchanged; committed parts are kept for ``--resume``. Bad options raise :class:`~dt4h_spacy.errors.UsageError`.
    """
    html = kind == ".html"
    cdm = kind == CDM_SUFFIX
    if (html or cdm) and resume:
        raise UsageError(f"--resume needs a .tsv, .jsonl or .parquet OUTPUT; {'an HTML page' if html else 'a CDM file'} "
                         "is written whole.", option="--resume")
    parts = Parts(output, {**job, "output": str(output.resolve()), "with_scores": with_scores})
    record = {**parts.job, "with_context": with_context}  # what OUTPUT.job.json says of a finished run
    try:
        if resume and not parts.folder.exists():
            found = finished(output, record)
            if found is not None:
                return _already_complete(output, found)
        done = set() if html or cdm else parts.open(resume)
    except PartsError as err:  # without --resume: OUTPUT's leftover parts, which --resume would continue
        raise UsageError(str(err), option="--resume" if resume else "OUTPUT") from err
    if resume:
        total = source.total
        if total is None:
            total = sum(1 for _ in source.documents())
        print(f"resuming: {len(done)} of {total} documents already written", file=sys.stderr, flush=True)
    outcome = Outcome(read=len(done))
    unit = "file" if source.columns is None else "document"

    def annotated(progress: tqdm) -> Iterator[AnnotatedDoc]:
        """The engine's documents, counting them and keeping its failures in ``outcome``."""
        for result in engine(source, done):
            progress.update(1)
            if isinstance(result, Failure):
                outcome.failures.append(result)
                continue
            outcome.read += 1
            yield result

    try:
        with tqdm(total=source.total, initial=len(done), unit=unit, file=sys.stderr,
                  disable=quiet or not sys.stderr.isatty()) as progress:
            if html:
                outcome.documents = list(annotated(progress))
            elif cdm:
                try:
                    outcome.mentions = write_cdm_jsonl(output, annotated(progress), model_name, with_context)
                except OSError as err:
                    raise RunError(f"cannot write {output}: {err}", 1) from err
            else:
                pending = _commit_parts(annotated(progress), parts, commit_every)
        report_failures(outcome.failures)
        if html and not outcome.documents:
            raise RunError(f"no document of {source.path} could be annotated; nothing written.", 1)
        try:
            if html:
                write_html(output, outcome.documents, title(), spans)
                outcome.mentions = sum(len(d.mentions) for d in outcome.documents)
            elif not cdm:
                outcome.mentions = MENTION_WRITERS[kind](output, parts.merged(pending), with_scores,
                                                         source.kept_schema(), with_context)
                record_finished(output, record, outcome.read, outcome.mentions, outcome.failures)
        except OSError as err:
            raise RunError(f"cannot write {output}: {err}", 1) from err
    except TableError as err:  # text that does not decode, found after the first rows
        raise RunError(str(err), 2) from None
    except RunError as err:  # the engine stopped (e.g. Ray workers that kept dying): committed parts stay
        raise RunError(f"{err}{_kept(output)}", err.exit_code) from None
    except WorkerError as err:  # a --cpu-workers process died: committed parts stay
        raise RunError(f"{err}{_kept(output)}", 1) from None
    except KeyboardInterrupt:
        raise RunError(f"interrupted; {output} was not written (a previous file there is unchanged){_kept(output)}.",
                       130) from None
    parts.remove()
    return outcome


def _already_complete(output: Path, record: Dict[str, Any]) -> Outcome:
    """The outcome a finished run recorded, for a ``--resume`` that finds its OUTPUT complete."""
    failures = [Failure(path, reason) for path, reason in record["failures"]]
    print(f"{output} already holds this job, finished ({record['documents']} documents read, {len(failures)} failed, "
          f"{record['mentions']} mentions); nothing to annotate (run without --resume to annotate again).",
          file=sys.stderr, flush=True)
    report_failures(failures)
    return Outcome(read=record["documents"], mentions=record["mentions"], failures=failures, already_complete=True)


def _kept(output: Path) -> str:
    """Where a stopped run's committed documents are, and how to continue (none: empty)."""
    if not parts_folder(output).exists():
        return ""
    return f"; the documents done are kept in {parts_folder(output)}: run again with --resume to continue"


def _commit_parts(documents: Iterator[AnnotatedDoc], parts: Parts, commit_every: int) -> List[Mention]:
    """Commit the mentions of ``documents`` to ``parts`` every ``commit_every`` documents or
    :data:`COMMIT_SECONDS`; returns the mentions not committed yet."""
    pending_names: List[str] = []
    pending: List[Mention] = []
    pending_metadata: Dict[str, Any] = {}
    last_commit = time.monotonic()
    for result in documents:
        pending_names.append(result.name)
        pending.extend(result.mentions)
        if result.metadata:
            pending_metadata[result.name] = result.metadata
        if len(pending_names) >= commit_every or time.monotonic() - last_commit >= COMMIT_SECONDS:
            parts.commit(pending_names, pending, pending_metadata)
            pending_names, pending, pending_metadata, last_commit = [], [], {}, time.monotonic()
    return pending
