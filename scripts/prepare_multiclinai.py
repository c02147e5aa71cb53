"""Lay out the downloaded MultiClinAI training set like the bundled sample, with a dev split.

The shared task ships no dev set (the authors trained on train+val of their k-fold split),
and Zenodo's archive nests zip files, so this finds, in the archive or folder given (zips
inside are opened too), every MultiClinNER-named ``.txt`` of the chosen languages whose name
contains ``--name-contains`` (the entity, because each entity's corpus has its own text
versions) and none of ``--exclude`` (the unannotated test and background sets), plus every
``.tsv`` of mentions. Documents go to dev by a hash of their name (stable across runs and
machines), the rest to train.

Usage: ``python scripts/prepare_multiclinai.py ARCHIVE OUT [--langs es,it,ro] [--entity DISEASE]``
Writes ``OUT/{train,dev}/<lang>/<name>.txt`` and ``OUT/{train,dev}/mentions.tsv``.
"""

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from dt4h_spacy.filenames import lang_from_filename
from dt4h_spacy.textfiles import document_name
from dt4h_spacy.tsv import Mention, parse_mentions, write_mentions


def files(source: Path) -> Iterator[Tuple[str, bytes]]:
    """(name, content) of every file in a folder or zip, descending into nested zips."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            yield from _expand(path.name, path.read_bytes())
    else:
        yield from _expand(source.name, source.read_bytes())


def _expand(name: str, data: bytes) -> Iterator[Tuple[str, bytes]]:
    if not name.lower().endswith(".zip"):
        yield name, data
        return
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if not info.is_dir() and "__MACOSX" not in info.filename:
                yield from _expand(Path(info.filename).name, archive.read(info))


def is_dev(name: str, fraction: float) -> bool:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the downloaded archive (zip) or an unpacked folder")
    parser.add_argument("out", type=Path)
    parser.add_argument("--langs", default="es,it,ro")
    parser.add_argument("--entity", default="DISEASE", help="mention label to keep")
    parser.add_argument("--name-contains", default="disease", help="keep texts whose name contains this")
    parser.add_argument("--exclude", default="test,background", help="skip texts whose name contains any of these")
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    args = parser.parse_args()
    langs = set(args.langs.split(","))
    excluded = [word for word in args.exclude.lower().split(",") if word]
    texts: Dict[str, str] = {}
    mentions: List[Mention] = []
    for name, data in files(args.source):
        lower = name.lower()
        if lower.endswith(".txt") and lang_from_filename(name) in langs and args.name_contains.lower() in lower \
                and not any(word in lower for word in excluded):
            texts[document_name(name)] = data.decode("utf-8-sig")
        elif lower.endswith(".tsv"):
            rows = parse_mentions(io.StringIO(data.decode("utf-8-sig"), newline=""), source=name, aliases=True)
            mentions.extend(m for m in rows if m.label == args.entity)
    if not texts:
        print(f"error: no {sorted(langs)} texts named like MultiClinNER-<lang>-…-{args.name_contains}-… "
              f"in {args.source}", file=sys.stderr)
        return 1
    by_doc: Dict[str, List[Mention]] = {}
    for mention in mentions:
        by_doc.setdefault(document_name(mention.filename), []).append(mention)
    for split in ("train", "dev"):
        names = sorted(n for n in texts if is_dev(n, args.dev_fraction) == (split == "dev"))
        for name in names:
            folder = args.out / split / str(lang_from_filename(name))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.txt").write_text(texts[name], encoding="utf-8", newline="")
        kept = [m for n in names for m in by_doc.get(n, [])]
        (args.out / split).mkdir(parents=True, exist_ok=True)
        write_mentions(args.out / split / "mentions.tsv", kept)
        print(f"{split}: {len(names)} documents, {len(kept)} {args.entity} mentions -> {args.out / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
