"""Reading folders of clinical ``.txt`` files and writing outputs atomically.

Offsets in the MultiClinAI TSV index the characters of the file as stored, so texts are
decoded (UTF-8 unless the caller names another encoding, as hospital exports are often
cp1252) without newline translation (a CRLF file keeps its ``\\r``); only a leading
byte-order mark is dropped, because editors add it and it is not part of the text. One bad
file must never cost the others: every per-file problem becomes a :class:`Failure` that the
caller reports, and outputs are written to a temporary file that replaces the target only
once complete, so an interrupted run never leaves a truncated file that looks finished.
"""

import codecs
import os
import stat
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Tuple, Union

from .io.records import Document, Failure

TXT_SUFFIX = ".txt"
BOM = "\ufeff"


class UnreadableFile(Exception):
    """Raised by :func:`read_text` with the reason the file cannot be used."""


def is_txt(name: str) -> bool:
    """Whether a file name ends in ``.txt`` in any case: Windows exports write ``A.TXT``."""
    return name.lower().endswith(TXT_SUFFIX)


def document_name(path: Union[str, Path]) -> str:
    """The TSV ``filename`` of a text file: its name without the ``.txt`` (any case) suffix."""
    name = Path(path).name
    return name[: -len(TXT_SUFFIX)] if is_txt(name) else name


def find_txt_files(folder: Union[str, Path], recursive: bool = False) -> Tuple[List[Path], List[Failure]]:
    """Every ``*.txt`` (any case) under ``folder`` that is not a directory, sorted by relative
    path; or ``folder`` itself when it is one ``.txt`` file.

    Symlinked folders are not followed (no loops); a broken or looping link named ``*.txt``
    is returned so that reading it reports the problem instead of hiding the file. Folders
    that cannot be listed are returned as failures. Raises ``NotADirectoryError`` /
    ``FileNotFoundError`` when ``folder`` itself is unusable, since then nothing can be done.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"Input not found: {root}")
    if not root.is_dir():
        if is_txt(root.name):
            return [root], []
        raise NotADirectoryError(f"Input {root} is neither a .txt file nor a folder; pass a .txt file or the "
                                 "folder that holds the .txt files.")
    failures: List[Failure] = []
    found: List[Path] = []

    def on_error(err: OSError) -> None:
        failures.append(Failure(Path(err.filename or root), f"cannot list folder ({err.strerror or err})"))

    if recursive:
        walker: Iterable[Tuple[str, List[str], List[str]]] = os.walk(root, onerror=on_error, followlinks=False)
    else:
        try:
            names = os.listdir(root)
        except OSError as err:
            on_error(err)
            names = []
        walker = [(str(root), [], names)]
    for dirpath, _, filenames in walker:
        for name in filenames:
            path = Path(dirpath, name)
            if is_txt(name) and not path.is_dir():
                found.append(path)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found, failures


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python can decode with it; a ``LookupError`` naming common ones otherwise."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise LookupError(f"unknown encoding {encoding!r}; use e.g. utf-8, cp1252 or latin-1.") from None
    return encoding


def decoding_advice(encoding: str) -> str:
    """The way out when a file does not decode as ``encoding``."""
    if codecs.lookup(encoding).name == "utf-8":
        return "pass --encoding cp1252 if it is a Windows/Latin-1 export, or re-save the file as UTF-8"
    return "pass the encoding it was saved in with --encoding, or re-save the file as UTF-8"


def read_text(path: Union[str, Path], encoding: str = "utf-8") -> str:
    """The file's text exactly as stored (decoded with ``encoding``, newlines untouched),
    minus a leading BOM.

    Raises :class:`UnreadableFile` naming the cause; a FIFO or device named ``*.txt`` is
    refused before opening because opening it could block forever.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile("not a regular file")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise UnreadableFile(f"cannot read ({err.strerror or err})") from err
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise UnreadableFile(f"not valid {encoding.upper()} (byte 0x{data[err.start]:02x} at byte offset "
                             f"{err.start}); {decoding_advice(encoding)}") from err
    return text[1:] if text.startswith(BOM) else text


def read_documents(paths: Iterable[Path], encoding: str = "utf-8") -> Iterator[Union[Document, Failure]]:
    """Read each path lazily (see :func:`read_text`), yielding a :class:`Document` or a
    :class:`Failure` per path.

    Two files with the same name in different folders would be indistinguishable in the TSV,
    so every later one is a failure rather than silently merged with the first.
    """
    seen: Dict[str, Path] = {}
    for path in paths:
        name = document_name(path)
        if name in seen:
            yield Failure(path, f"same document name {name!r} as {seen[name]}; the TSV could not tell them apart")
            continue
        seen[name] = path
        try:
            yield Document(name, path, read_text(path, encoding))
        except UnreadableFile as err:
            yield Failure(path, str(err))


def new_file_mode(target: Path) -> int:
    """Permissions for the finished file: the target's if it exists, else the umask default."""
    with suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: Union[str, Path], binary: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one step.

    On any exception, KeyboardInterrupt included, the temporary file is removed and the
    exception propagates, so ``path`` is either the old file or the complete new one.
    Text mode writes UTF-8 with ``newline=""`` (the caller chooses line endings).
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if binary:
            handle: IO = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, new_file_mode(target))
        os.replace(tmp_name, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_name)
        raise
