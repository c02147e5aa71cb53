"""Score a trained pipeline (or every pipeline in a folder) on the dev texts of its languages:
the project's evaluate step.

PIPELINE is a saved pipeline (``spacy train``'s ``OUTPUT/model-best``) or a folder of them.
Each pipeline annotates the .txt files (searched recursively) of the
languages it serves, as ``dt4h-spacy predict`` would; a file already annotated by an earlier
pipeline (in name order: ``disease_es_ner`` before ``multilingual``) is not annotated again.
All predictions are scored together against the gold TSV with the official MultiClinAI
metrics, per language and overall.

Usage: ``python scripts/evaluate_pipelines.py PIPELINE TEXTS_DIR GOLD_TSV OUT_DIR [--entity DISEASE]``
Writes ``OUT_DIR/predictions.tsv``, ``OUT_DIR/scores.json`` (official keys + per_lang) and
``OUT_DIR/scores.md`` (the per-language table).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List

import spacy

from dt4h_spacy.batch import Pipelines, served_languages
from dt4h_spacy.evaluate.official import evaluate, format_table
from dt4h_spacy.filenames import lang_from_filename
from dt4h_spacy.textfiles import Failure, document_name, find_txt_files, read_documents
from dt4h_spacy.tsv import Mention, read_mentions, write_mentions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", type=Path, help="a saved pipeline (OUTPUT/model-best) or a folder of them")
    parser.add_argument("texts", type=Path, help="folder of dev .txt files (MultiClinNER names), searched recursively")
    parser.add_argument("gold", type=Path, help="gold MultiClinAI TSV of those texts")
    parser.add_argument("out", type=Path, help="folder for predictions.tsv, scores.json and scores.md")
    parser.add_argument("--entity", default=None, help="score only this label (e.g. DISEASE)")
    args = parser.parse_args()
    pipelines = ([args.pipelines] if (args.pipelines / "config.cfg").is_file()
                 else sorted(p for p in args.pipelines.iterdir() if (p / "config.cfg").is_file()))
    if not pipelines:
        parser.error(f"no pipelines (folders with config.cfg) in {args.pipelines}")
    paths, failures = find_txt_files(args.texts, recursive=True)
    predicted: List[Mention] = []
    for path in pipelines:
        pipeline = Pipelines.of(spacy.load(path))
        served = served_languages(pipeline.load())
        own = [txt for txt in paths if served is None or lang_from_filename(txt.name) in served]
        annotated = set()
        for item in pipeline.annotate(read_documents(own)):
            if isinstance(item, Failure):
                failures.append(item)
            else:
                predicted.extend(item.mentions)
                annotated.add(item.name)
        print(f"{path.name}: {len(annotated)} documents annotated")
        failed = {failure.path for failure in failures}
        paths = [txt for txt in paths if document_name(txt) not in annotated and txt not in failed]
    failures.extend(Failure(txt, "no pipeline serves its language (or the name carries none)") for txt in paths)
    for failure in failures:
        print(f"error: skipped {failure}", file=sys.stderr)
    result = evaluate(read_mentions(args.gold), predicted, args.entity)
    args.out.mkdir(parents=True, exist_ok=True)
    write_mentions(args.out / "predictions.tsv", predicted)
    scores = {key: value for key, value in result.items() if key != "per_file"}
    (args.out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    table = format_table(result)
    (args.out / "scores.md").write_text(table, encoding="utf-8")
    print(table, end="")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
