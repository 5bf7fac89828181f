"""Load files and folders into the REPL's ``context``: text, HTML, source code and PDF, per-file errors.

Word, Excel, PowerPoint, OpenDocument, e-mail, EPUB and gzip are read by core/formats.py, hooked in
:func:`kind_for` and :func:`load_document`.

Nothing here raises for a bad file: each problem (binary, unreadable, bad encoding, malformed or
encrypted PDF, too large, symlink loop, permission denied, a link out of the chosen folder) becomes a
:class:`Document` with ``error`` set, and a doubtful decode keeps its text with ``warning`` set.
Results are ordered by relative path.

Only what the user chose is read: a link inside a chosen folder whose target lies outside it is
reported on its own row and not followed (unless ``follow_outside_links``); a file picked directly is
read even when it is a link. The check is made when scanning and again on the opened file.

File names that are not valid UTF-8 (Python holds their bytes as lone surrogates, PEP 383) are shown
and used as ``context`` keys with those bytes as ``\\xNN`` escapes (:func:`display_name`); the
real path stays in :attr:`Document.path`.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

from rlm_desktop.core.cancel import CancelToken

# Per-file caps. Text above the cap is refused (not cut: a silently cut document gives wrong answers).
MAX_TEXT_BYTES = 50 * 1024 * 1024
MAX_PDF_BYTES = 200 * 1024 * 1024

# Folders that are tooling, not documents: skipped like hidden entries (and counted).
SKIP_DIR_NAMES = frozenset({
    ".git", ".hg", ".svn", ".bzr", "node_modules", "__pycache__", ".venv", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".idea", ".vscode",
})
SKIP_FILE_NAMES = frozenset({"Thumbs.db", "desktop.ini", ".DS_Store"})

_TEXT_KINDS: dict[str, str] = {
    ".txt": "text", ".text": "text", ".log": "log", ".md": "markdown", ".markdown": "markdown",
    ".rst": "text", ".adoc": "text", ".org": "text", ".tex": "text", ".bib": "text",
    ".srt": "text", ".vtt": "text",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".geojson": "json", ".ipynb": "json",
    ".xml": "xml", ".svg": "xml", ".rss": "xml", ".atom": "xml", ".xsd": "xml",
    ".yaml": "yaml", ".yml": "yaml", ".ini": "ini", ".cfg": "ini", ".conf": "ini",
    ".properties": "ini", ".toml": "toml", ".env.example": "ini",
    ".html": "html", ".htm": "html", ".xhtml": "html",
}
_CODE_EXTS = frozenset("""
.py .pyi .pyw .js .mjs .cjs .jsx .ts .tsx .java .kt .kts .scala .groovy .gradle .c .h .cc .cpp .cxx
.hpp .hh .hxx .cs .fs .go .rs .rb .php .swift .m .mm .r .jl .lua .pl .pm .hs .ml .mli .ex .exs .erl
.hrl .clj .cljs .edn .dart .zig .nim .v .sv .vhd .vhdl .f .f90 .f95 .for .pas .sql .sh .bash .zsh
.fish .ps1 .psm1 .bat .cmd .awk .sed .css .scss .sass .less .vue .svelte .elm .proto .graphql .gql
.tf .hcl .cmake .mk .nix .dockerfile .asm .s .vb .vbs .coffee .cr .d .ada .adb .ads .lisp .el
.scm .rkt .sol
""".split())
_CODE_NAMES = frozenset({"Makefile", "makefile", "GNUmakefile", "Dockerfile", "Containerfile",
                         "CMakeLists.txt", "Rakefile", "Gemfile", "Justfile", "Vagrantfile",
                         "Jenkinsfile", "Procfile"})
# Formats we recognise but do not read: a precise message beats "binary file".
_UNSUPPORTED: dict[str, str] = {
    ".docx": "a Word document", ".doc": "a Word document", ".odt": "an OpenDocument text",
    ".rtf": "an RTF document", ".xlsx": "an Excel workbook", ".xls": "an Excel workbook",
    ".ods": "an OpenDocument spreadsheet", ".pptx": "a PowerPoint file", ".ppt": "a PowerPoint file",
    ".odp": "an OpenDocument presentation", ".epub": "an EPUB book",
    ".png": "an image", ".jpg": "an image", ".jpeg": "an image", ".gif": "an image",
    ".bmp": "an image", ".tif": "an image", ".tiff": "an image", ".webp": "an image",
    ".heic": "an image", ".ico": "an image",
    ".zip": "an archive", ".gz": "an archive", ".tgz": "an archive", ".bz2": "an archive",
    ".xz": "an archive", ".7z": "an archive", ".rar": "an archive", ".tar": "an archive",
    ".zst": "an archive",
    ".mp3": "an audio file", ".wav": "an audio file", ".flac": "an audio file", ".ogg": "an audio file",
    ".m4a": "an audio file", ".mp4": "a video", ".mov": "a video", ".mkv": "a video",
    ".avi": "a video", ".webm": "a video",
    ".exe": "a program", ".dll": "a library", ".so": "a library", ".dylib": "a library",
    ".o": "an object file", ".a": "a library", ".class": "compiled Java", ".jar": "a Java archive",
    ".pyc": "compiled Python", ".whl": "a Python wheel",
    ".sqlite": "a database", ".sqlite3": "a database", ".db": "a database",
    ".parquet": "a Parquet file", ".feather": "an Arrow file", ".pkl": "a pickle",
    ".npy": "a NumPy array", ".npz": "NumPy arrays", ".h5": "an HDF5 file", ".ttf": "a font",
    ".otf": "a font", ".woff": "a font", ".woff2": "a font", ".iso": "a disk image",
    ".dmg": "a disk image",
}

ProgressCallback = Callable[[int, int, str], None]


class LoadCancelled(Exception):
    """Raised by :func:`scan_paths` / :func:`load_documents` when their CancelToken is cancelled."""


OUTSIDE_HINT = ("add it directly to load it, or allow links out of folders (Settings → Sandbox, or "
                "--follow-outside-links)")


def outside_link_message(is_dir: bool) -> str:
    """The row text of a link whose target lies outside the chosen folder."""
    what = "a folder" if is_dir else "a file"
    return f"link to {what} outside the folder — not loaded; {OUTSIDE_HINT}"


class _Refused(OSError):
    """A file that must not be read as it stands; ``str(exc)`` is the row's message."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def display_name(name: str) -> str:
    """``name`` as shown and used as a ``context`` key: a valid string whatever the file system gave.

    Bytes of a name that are not UTF-8 reach Python as lone surrogates (U+DC80–U+DCFF); they become
    ``\\xNN`` escapes of the byte (``report-\\xff.txt``, Python's ``backslashreplace`` form), any
    other lone surrogate (a Windows name) ``\\udXXX``. Readable and reversible to the bytes; the
    file itself is opened through :attr:`Document.path`, and two names that would show alike are
    numbered like any other clash.
    """
    if name.isascii() or _SURROGATE.search(name) is None:
        return name
    return _SURROGATE.sub(_escape_surrogate, name)


@dataclass(slots=True)
class Document:
    """One file: its text (``None`` when it could not be used, then ``error`` says why)."""

    path: Path
    rel_path: str
    kind: str
    size_bytes: int = 0
    text: str | None = None
    chars: int = 0
    encoding: str | None = None
    error: str | None = None
    warning: str | None = None
    pages: int | None = None
    # PDFs: the 1-based line where each page starts in ``text`` (its "--- page N ---" line), so a
    # line range maps to pages (core/sources.py).
    page_lines: list[int] | None = None

    @property
    def est_tokens(self) -> int:
        """An estimate (characters / 4), not a tokenizer count."""
        return (self.chars + 3) // 4

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass(slots=True)
class ScanResult:
    """The files a set of paths expands to (ordered by ``rel_path``) and the paths that failed."""

    files: list[tuple[Path, str]]
    errors: list[Document]
    total_bytes: int
    skipped: list[str] = field(default_factory=list)  # hidden / tooling entries, not entered
    # rel_path -> real path of the chosen folder the file must still lie in when it is read
    # (files found by walking a folder, unless outside links are followed).
    confine: dict[str, str] = field(default_factory=dict)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


@dataclass
class DocumentSet:
    """Loaded documents (ordered by ``rel_path``), per-path errors and what was skipped."""

    documents: list[Document] = field(default_factory=list)
    errors: list[Document] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.documents = sorted(self.documents, key=lambda d: d.rel_path)
        self.errors = sorted(self.errors, key=lambda d: d.rel_path)

    @property
    def total_files(self) -> int:
        return len(self.documents)

    @property
    def total_chars(self) -> int:
        return sum(d.chars for d in self.documents)

    @property
    def total_bytes(self) -> int:
        return sum(d.size_bytes for d in self.documents)

    @property
    def est_tokens(self) -> int:
        return sum(d.est_tokens for d in self.documents)

    @property
    def warnings(self) -> list[Document]:
        return [d for d in self.documents if d.warning]

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    def context_value(self) -> str | dict[str, str]:
        """The REPL's ``context``: the text for one document, else ``{rel_path: text}`` in order."""
        if len(self.documents) == 1:
            return self.documents[0].text or ""
        return {d.rel_path: d.text or "" for d in self.documents}

    def describe(self, max_listed: int = 200) -> dict[str, Any]:
        """Facts about ``context`` for the system prompt (type, count, sizes; no document text)."""
        value_type = "str" if len(self.documents) == 1 else "dict[str, str]"
        listed = [{"path": d.rel_path, "kind": d.kind, "chars": d.chars}
                  for d in self.documents[:max_listed]]
        out: dict[str, Any] = {
            "type": value_type,
            "count": len(self.documents),
            "total_chars": self.total_chars,
            "documents": listed,
        }
        if len(self.documents) > max_listed:
            out["not_listed"] = len(self.documents) - max_listed
        if self.errors:
            out["unreadable"] = [{"path": d.rel_path, "error": d.error} for d in self.errors[:50]]
        return out

    def summary(self) -> str:
        """One human line: counts, size, errors, skipped entries."""
        parts = [f"{self.total_files} document{'s' if self.total_files != 1 else ''}",
                 f"{self.total_chars:,} characters (~{self.est_tokens:,} tokens, estimated)"]
        if self.errors:
            parts.append(f"{len(self.errors)} not loaded")
        if self.warnings:
            parts.append(f"{len(self.warnings)} with warnings")
        if self.skipped:
            parts.append(f"{len(self.skipped)} hidden or tooling entries skipped")
        return ", ".join(parts)


# -- scanning ----------------------------------------------------------------------------------

def _is_skipped_name(name: str, is_dir: bool) -> bool:
    if name.startswith("."):
        return True
    return name in SKIP_DIR_NAMES if is_dir else name in SKIP_FILE_NAMES


def _error_doc(path: Path, rel: str, message: str, kind: str = "error", size: int = 0) -> Document:
    return Document(path=path, rel_path=rel, kind=kind, size_bytes=size, error=message)


def _oserror_text(exc: OSError) -> str:
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, PermissionError):
        return "permission denied: RLM Desktop may not read it (check its permissions or owner)"
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link points (through other links) back to itself; skipped"
    if isinstance(exc, FileNotFoundError):
        return "not found: it was moved or deleted"
    return f"cannot be read: {exc.strerror or exc}"


def _special_kind(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def scan_paths(paths: Iterable[str | os.PathLike[str]], *, include_hidden: bool = False,
               cancel: CancelToken | None = None, follow_outside_links: bool = False) -> ScanResult:
    """Expand files and folders (recursively) into ``(path, rel_path)`` pairs, without reading them.

    A single folder's files are named relative to it; with several inputs each folder's files are
    prefixed with the folder's name. Links (to files or folders, at any depth, chains of links) are
    followed while their target lies inside the chosen folder they were found in; one whose target
    lies outside is reported as an error row and skipped, unless ``follow_outside_links``. A file
    given directly is taken even when it is a link. A link back into a folder being walked (a loop)
    or to a folder already walked is reported instead. Hidden entries and tooling folders (``.git``,
    ``node_modules``, ...) are skipped and listed in ``skipped``, unless named explicitly or
    ``include_hidden`` is set. Raises :class:`LoadCancelled` when cancelled.
    """
    inputs = [Path(p) for p in paths]
    single_folder = len(inputs) == 1
    files: list[tuple[Path, str, str | None]] = []   # (path, rel, folder it must stay in)
    errors: list[Document] = []
    skipped: list[str] = []
    total = 0
    walked: dict[tuple[int, int], str] = {}  # (dev, inode) of each folder entered -> its rel path
    confine: str | None = None   # real path of the chosen folder being walked (None: not confined)

    def check_cancel() -> None:
        if cancel is not None and cancel.cancelled:
            raise LoadCancelled(cancel.reason or "cancelled")

    def add_file(p: Path, rel: str, st: os.stat_result) -> None:
        nonlocal total
        special = _special_kind(st.st_mode)
        if special is not None:
            errors.append(_error_doc(p, rel, f"not a regular file ({special}); skipped"))
            return
        files.append((p, rel, confine))
        total += st.st_size

    def walk(folder: Path, rel_prefix: str, ancestors: tuple[tuple[int, int], ...]) -> None:
        check_cancel()
        try:
            with os.scandir(folder) as it:
                # Real entries before links, so a folder is named by its own path, not an alias's.
                entries = sorted(it, key=lambda e: (_is_link(e), e.name))
        except OSError as exc:
            errors.append(_error_doc(folder, rel_prefix or display_name(folder.name),
                                     "folder " + _oserror_text(exc)))
            return
        for entry in entries:
            check_cancel()
            name = display_name(entry.name)
            rel = f"{rel_prefix}/{name}" if rel_prefix else name
            p = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links
            except OSError as exc:
                errors.append(_error_doc(p, rel, _oserror_text(exc)))
                continue
            if not include_hidden and _is_skipped_name(entry.name, is_dir):
                skipped.append(rel + ("/" if is_dir else ""))
                continue
            try:
                st = entry.stat()  # follows links
            except OSError as exc:
                if is_link and isinstance(exc, FileNotFoundError):
                    target = _readlink(p)
                    errors.append(_error_doc(p, rel, f"broken symlink: its target {target} does not exist"))
                else:
                    errors.append(_error_doc(p, rel, _oserror_text(exc)))
                continue
            if is_link and confine is not None and not _within(os.path.realpath(p), confine):
                errors.append(_error_doc(p, rel, outside_link_message(stat.S_ISDIR(st.st_mode)),
                                         kind="link"))
                continue
            if stat.S_ISDIR(st.st_mode):
                visit_dir(p, rel, st, ancestors, is_link)
            else:
                add_file(p, rel, st)

    def visit_dir(p: Path, rel: str, st: os.stat_result, ancestors: tuple[tuple[int, int], ...],
                  is_link: bool) -> None:
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            errors.append(_error_doc(p, rel, f"symlink loop: {rel} points back to the folder "
                                             f"'{walked.get(key) or '.'}' that contains it; skipped"))
            return
        if key in walked:
            errors.append(_error_doc(p, rel, f"same folder as '{walked[key] or '.'}' (reached through "
                                             f"a link); its files are loaded once"))
            return
        walked[key] = rel or display_name(p.resolve().name)
        walk(p, rel, (*ancestors, key))

    for p in inputs:
        check_cancel()
        shown = display_name(p.name)
        try:
            st = p.stat()
        except OSError as exc:
            if p.is_symlink() and isinstance(exc, FileNotFoundError):
                errors.append(_error_doc(p, shown, f"broken symlink: its target {_readlink(p)} "
                                                   f"does not exist"))
            else:
                errors.append(_error_doc(p, shown or display_name(str(p)), _oserror_text(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            prefix = "" if single_folder else (display_name(p.resolve().name) or "root")
            # The folder the user chose, as it really is (it may itself be a link they picked).
            confine = None if follow_outside_links else os.path.realpath(p)
            visit_dir(p, prefix, st, (), False)
            confine = None
        else:
            add_file(p, shown, st)   # chosen directly: read even when it is a link

    # Unique relative names (two inputs may share a name), then a deterministic order.
    seen: dict[str, int] = {}
    unique: list[tuple[Path, str]] = []
    confined: dict[str, str] = {}
    for p, rel, inside in files:
        n = seen.get(rel, 0) + 1
        seen[rel] = n
        name = rel if n == 1 else _numbered(rel, n)
        unique.append((p, name))
        if inside is not None:
            confined[name] = inside
    unique.sort(key=lambda item: item[1])
    errors.sort(key=lambda d: d.rel_path)
    return ScanResult(files=unique, errors=errors, total_bytes=total, skipped=sorted(skipped),
                      confine=confined)


def _within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies inside it (both from realpath)."""
    path, folder = os.path.normcase(path), os.path.normcase(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _fd_real_path(fd: int) -> str | None:
    """The real path of the file open on ``fd``, asked of the kernel where it can tell (Linux
    ``/proc/self/fd``, macOS ``F_GETPATH``); None where it cannot."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real.startswith("/"):
            return real.removesuffix(" (deleted)")
    except OSError:
        pass
    try:
        import fcntl

        getpath = getattr(fcntl, "F_GETPATH", None)
        if getpath is not None:
            raw = fcntl.fcntl(fd, getpath, bytes(4096))
            return os.fsdecode(raw.split(b"\0", 1)[0])
    except (ImportError, OSError):
        pass
    return None


def open_document_file(path: Path, inside: str | None = None) -> IO[bytes]:
    """Open a document for reading, refusing what the scan would have refused by now.

    Not blocking on a FIFO swapped in since the scan (``O_NONBLOCK``, then the file must be a
    regular file); with ``inside`` (the real path of the chosen folder), the file actually opened
    must lie inside it — checked on the open descriptor, so a link swapped in after the check cannot
    redirect the read. Raises OSError (a refusal's ``str`` is the row's message).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        special = _special_kind(st.st_mode)
        if special is not None or stat.S_ISDIR(st.st_mode):
            raise _Refused(f"not a regular file ({special or 'a folder'}); skipped")
        if inside is not None:
            real = _fd_real_path(fd)
            if real is None:   # no kernel answer: the real path must name this very file
                real = os.path.realpath(path)
                there = os.stat(real)
                if (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
                    raise _Refused("the file changed while it was being opened; add it again")
            if not _within(real, inside):
                raise _Refused(outside_link_message(False))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return True


def _numbered(rel: str, n: int) -> str:
    stem, dot, ext = rel.rpartition(".")
    if dot and "/" not in ext and stem:
        return f"{stem} ({n}).{ext}"
    return f"{rel} ({n})"


def _readlink(p: Path) -> str:
    try:
        return f"'{os.readlink(p)}'"
    except OSError:
        return "(unreadable)"


# -- decoding ----------------------------------------------------------------------------------

_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)


@dataclass(slots=True)
class Decoded:
    text: str | None
    encoding: str | None
    warning: str | None = None
    error: str | None = None


# Every byte that is not a control character in the binary check (tab, LF, FF, CR and ESC are text):
# deleting these leaves exactly the control bytes.
_NOT_CONTROL = bytes(b for b in range(256) if b >= 32 or b in (9, 10, 12, 13, 27))


def decode_bytes(data: bytes) -> Decoded:
    """Decode file bytes: BOM, then UTF-16 by NUL pattern, then UTF-8, then cp1252 / Latin-1 (warned).

    Binary data (NUL bytes or many control characters) is refused with an error, not guessed.
    """
    if not data:
        return Decoded("", "utf-8")
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                return Decoded(data[len(bom):].decode(codec), label)
            except UnicodeDecodeError as exc:
                return Decoded(None, None, error=f"starts with a {label} byte-order mark but is not valid "
                                                 f"{label} (byte {exc.start + len(bom)}); re-save it as UTF-8")
    utf16 = _guess_utf16(data)
    if utf16 is not None:
        codec, label = utf16
        try:
            return Decoded(data.decode(codec), label,
                           warning=f"no byte-order mark; read as {label} from its byte pattern")
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: fall through to the binary check
    sample = data[:65536]
    if b"\x00" in sample:
        return Decoded(None, None, error="binary file (contains NUL bytes); not a text document")
    controls = len(sample.translate(None, _NOT_CONTROL))    # C speed: 64 KB per file adds up
    if controls > max(8, len(sample) // 10):
        return Decoded(None, None, error="binary file (mostly control bytes); not a text document")
    try:
        return Decoded(data.decode("utf-8"), "UTF-8")
    except UnicodeDecodeError as exc:
        where = exc.start
    try:
        text = data.decode("cp1252")
        return Decoded(text, "cp1252", warning=(
            f"not valid UTF-8 (first bad byte at offset {where}); decoded as Windows-1252 (cp1252) — "
            f"check accented characters, or re-save the file as UTF-8"))
    except UnicodeDecodeError:
        return Decoded(data.decode("latin-1"), "latin-1", warning=(
            f"not valid UTF-8 (first bad byte at offset {where}) nor Windows-1252; decoded as "
            f"Latin-1 (ISO-8859-1) — some characters may be wrong; re-save the file as UTF-8"))


def _guess_utf16(data: bytes) -> tuple[str, str] | None:
    """UTF-16 without a BOM: mostly-ASCII text has a NUL in every other byte."""
    sample = data[:4096]
    n = len(sample) // 2
    if n < 2 or len(data) % 2:
        return None
    even_nul = sample[0:2 * n:2].count(0)
    odd_nul = sample[1:2 * n:2].count(0)
    if odd_nul >= 0.7 * n and even_nul <= 0.1 * n:
        return "utf-16-le", "UTF-16 LE"
    if even_nul >= 0.7 * n and odd_nul <= 0.1 * n:
        return "utf-16-be", "UTF-16 BE"
    return None


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


# -- HTML --------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    _DROP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _KEEP_IN_HEAD = frozenset({"title"})
    _BLOCK = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article",
                        "header", "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5",
                        "h6", "pre", "blockquote", "hr", "dt", "dd", "dl", "figure", "figcaption",
                        "title", "form", "fieldset", "address", "details", "summary", "caption"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._drop_depth = 0
        self._pre_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in ("pre", "textarea"):
            self._pre_depth += 1
        elif tag in self._DROP:
            self._drop_depth += 1
        if tag in self._BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("\t")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in ("pre", "textarea") and self._pre_depth:
            self._pre_depth -= 1
        elif tag in self._DROP and self._drop_depth:
            self._drop_depth -= 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._drop_depth and not self._in_title:
            return
        if not self._pre_depth:  # outside <pre>, runs of whitespace (newlines too) are one space
            data = _WS.sub(" ", data)
            if not self.parts or self.parts[-1].endswith(("\n", " ", "\t")):
                data = data.lstrip(" ")
            if not data:
                return
        self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.rstrip() for line in raw.split("\n")]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip("\n")


def html_to_text(html: str) -> str:
    """Visible text of an HTML page (scripts, styles and markup dropped; entities resolved)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()


# -- PDF ---------------------------------------------------------------------------------------

def _load_pdf(path: Path, doc: Document, cancel: CancelToken | None, inside: str | None = None) -> None:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on sloppy files are noise here
    try:   # read through the checked opener (pypdf reads a whole file into memory from a path too)
        with open_document_file(path, inside) as fh:
            data = fh.read()
    except OSError as exc:
        doc.error = _oserror_text(exc)
        return
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except DependencyError as exc:
                doc.error = (f"encrypted PDF that needs an extra library to decrypt ({exc}); save an "
                             f"unprotected copy")
                return
            except (NotImplementedError, PyPdfError) as exc:
                doc.error = f"encrypted PDF that cannot be opened ({exc}); save an unprotected copy"
                return
            if not ok:
                doc.error = ("encrypted PDF (password protected); open it in a PDF viewer and save an "
                             "unprotected copy or export it as text")
                return
        pages = reader.pages
        n = len(pages)
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on malformed input; reported
        doc.error = f"malformed PDF, cannot be read ({type(exc).__name__}: {exc}); re-export or repair it"
        return
    doc.pages = n
    if n == 0:
        doc.error = "PDF has no pages; nothing to read"
        return
    page_texts: list[str] = []
    bad_pages: list[int] = []
    for i in range(n):
        if cancel is not None and cancel.cancelled:
            raise LoadCancelled(cancel.reason or "cancelled")
        try:
            page_text = pages[i].extract_text() or ""
        except Exception:  # noqa: BLE001 - one broken page must not lose the others; reported below
            bad_pages.append(i + 1)
            page_text = ""
        page_texts.append(_normalise_newlines(page_text).strip())
    if not any(page_texts):
        if bad_pages:
            doc.error = f"malformed PDF: none of its {n} pages could be read; re-export or repair it"
        else:
            doc.error = (f"no extractable text in {n} page{'s' if n != 1 else ''} (a scanned or "
                         f"image-only PDF?); run OCR on it first")
        return
    if n == 1:
        body = page_texts[0]
        doc.page_lines = [1]
    else:
        body = "\n\n".join(f"--- page {i + 1} ---\n{t}" for i, t in enumerate(page_texts))
        line = 1
        doc.page_lines = []
        for t in page_texts:     # each page: its marker line, its text's lines, one blank line
            doc.page_lines.append(line)
            line += 3 + t.count("\n")
    doc.text = body
    doc.encoding = None
    if bad_pages:
        shown = ", ".join(map(str, bad_pages[:10])) + (" …" if len(bad_pages) > 10 else "")
        doc.warning = f"{len(bad_pages)} of {n} pages could not be read (pages {shown})"


# -- loading -----------------------------------------------------------------------------------

def kind_for(path: Path) -> str:
    """The document kind from the file name: text kinds, "code", "pdf", or "unknown"."""
    name = path.name
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return "pdf"
    if name in _CODE_NAMES:
        return "code"
    if suffix in _TEXT_KINDS:
        return _TEXT_KINDS[suffix]
    if suffix in _CODE_EXTS:
        return "code"
    from rlm_desktop.core import formats  # imported here: it imports this module
    if (fmt := formats.format_for(path)) is not None:
        return fmt.kind
    if (inner := formats.gz_inner(path)) is not None and formats.format_for(inner) is None \
            and (inner_kind := kind_for(inner)) not in ("pdf", "unsupported"):
        return "text" if inner_kind == "unknown" else inner_kind  # app.log.gz is a log
    if suffix in _UNSUPPORTED:
        return "unsupported"
    return "unknown"


def supported_suffixes() -> list[str]:
    """The file extensions read as documents (text kinds, code, PDF and core/formats.py's), sorted."""
    from rlm_desktop.core import formats  # imported here: it imports this module

    return sorted({*_TEXT_KINDS, *_CODE_EXTS, ".pdf", *formats.FORMATS, ".gz"})


def load_document(path: Path, rel_path: str, *, max_bytes: int | None = None,
                  cancel: CancelToken | None = None, inside: str | None = None) -> Document:
    """Read one file into a :class:`Document`. Never raises for a bad file (only LoadCancelled).

    ``inside``: the real path of the chosen folder the file was found in (``ScanResult.confine``);
    a file that is no longer inside it when read (a link swapped in) is refused, not read. Every
    reader here opens the file through :func:`open_document_file` (which checks that on the open
    descriptor) and hands the bytes on; a reader added here must do the same.
    """
    path = Path(path)
    kind = kind_for(path)
    doc = Document(path=path, rel_path=rel_path, kind=kind)
    try:
        st = path.stat()
    except OSError as exc:
        doc.error = _oserror_text(exc)
        return doc
    doc.size_bytes = st.st_size
    special = _special_kind(st.st_mode)
    if special is not None:
        doc.error = f"not a regular file ({special}); skipped"
        return doc
    if stat.S_ISDIR(st.st_mode):
        doc.error = "is a folder; load it as a folder"
        return doc
    if kind == "unsupported":
        what = _UNSUPPORTED[path.suffix.lower()]
        doc.error = (f"{what} ({path.suffix.lower()}) is not supported; export it as text, "
                     f"Markdown, CSV or PDF")
        return doc
    from rlm_desktop.core import formats  # imported here: it imports this module
    cap = max_bytes if max_bytes is not None else (
        MAX_PDF_BYTES if kind == "pdf" else formats.MAX_PACKED_BYTES if kind in formats.PACKED_KINDS
        else MAX_TEXT_BYTES)
    if st.st_size > cap:
        doc.error = (f"too large: {_fmt_bytes(st.st_size)}, over the {_fmt_bytes(cap)} limit per file; "
                     f"split it into smaller files")
        return doc
    if kind == "pdf":
        _load_pdf(path, doc, cancel, inside)
        if doc.text is not None:
            doc.chars = len(doc.text)
        return doc
    if formats.format_for(path) is not None:  # Office, OpenDocument, mail, EPUB: see core/formats.py
        formats.load_into(doc, max_bytes if max_bytes is not None else MAX_TEXT_BYTES, cancel, inside)
        return doc
    try:
        with open_document_file(path, inside) as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        doc.error = _oserror_text(exc)
        return doc
    if len(data) > cap:  # grew while we looked
        doc.error = f"too large: over the {_fmt_bytes(cap)} limit per file; split it into smaller files"
        return doc
    doc.size_bytes = len(data)
    if formats.gz_inner(path) is not None:  # decompressed up to the limit, then read as the inner name says
        try:
            data = formats.gunzip(data, max_bytes if max_bytes is not None else MAX_TEXT_BYTES)
        except formats.ExtractError as exc:
            doc.error = str(exc)
            return doc
    if kind == "unknown" and data.startswith(b"%PDF-"):
        doc.kind = "pdf"
        _load_pdf(path, doc, cancel, inside)
        doc.chars = len(doc.text) if doc.text is not None else 0
        return doc
    dec = decode_bytes(data)
    if dec.error:
        doc.error = dec.error
        if kind == "unknown":
            doc.kind = "binary"
        return doc
    text = _normalise_newlines(dec.text or "")
    if kind == "html":
        text = html_to_text(text)
    elif kind == "unknown":
        doc.kind = "text"
    doc.text = text
    doc.chars = len(text)
    doc.encoding = dec.encoding
    doc.warning = dec.warning
    if not data:
        doc.warning = "empty file"
    return doc


def load_documents(paths: Iterable[str | os.PathLike[str]] | ScanResult, *,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                   include_hidden: bool = False, max_bytes: int | None = None,
                   follow_outside_links: bool = False) -> DocumentSet:
    """Scan ``paths`` (or use a ready :class:`ScanResult`) and load every file.

    ``progress(done, total, rel_path)`` is called before each file (from the calling thread) and
    once at the end; ``cancel`` is checked between files and PDF pages (raises LoadCancelled).
    ``follow_outside_links``: see :func:`scan_paths` (the one rule for the app and the CLI).
    """
    scan = paths if isinstance(paths, ScanResult) else scan_paths(
        paths, include_hidden=include_hidden, cancel=cancel, follow_outside_links=follow_outside_links)
    docs: list[Document] = []
    errors: list[Document] = list(scan.errors)
    total = len(scan.files)
    for i, (p, rel) in enumerate(scan.files):
        if cancel is not None and cancel.cancelled:
            raise LoadCancelled(cancel.reason or "cancelled")
        if progress is not None:
            progress(i, total, rel)
        doc = load_document(p, rel, max_bytes=max_bytes, cancel=cancel, inside=scan.confine.get(rel))
        (errors if doc.error else docs).append(doc)
    if progress is not None:
        progress(total, total, "")
    return DocumentSet(documents=docs, errors=errors, skipped=list(scan.skipped))


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def format_size(n: int) -> str:
    """Human size (``1.5 MB``, ``904 B``) as shown next to documents."""
    return f"{n} B" if 0 <= n < 1024 else _fmt_bytes(n)


__all__: Sequence[str] = (
    "Document", "DocumentSet", "LoadCancelled", "ScanResult", "decode_bytes", "display_name",
    "format_size", "html_to_text", "kind_for", "load_document", "load_documents",
    "open_document_file", "outside_link_message", "scan_paths", "supported_suffixes",
)
