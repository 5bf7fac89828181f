"""Read the documents analysts have — Word, Excel, PowerPoint, OpenDocument, e-mail, EPUB, gzip — as text.

One function per format turns a file into text with **stable lines**: the same file always gives the
same text, and each unit (paragraph, sheet row, slide, message, chapter) starts on a new line, so a
line number (a citation ``[file:L12-L18]``) points at what the preview shows. Every line break is
``\n`` (U+2028 and the other breaks ``str.splitlines`` knows are turned into it, so splitting on
``\n`` and ``splitlines()`` count the same lines). How lines map:

- ``.docx`` / ``.odt``: one line per paragraph, in body order (empty paragraphs kept as empty lines,
  a line break inside a paragraph starts a new line); headings start with ``#`` per level; a table
  gives one line per row, cells separated by tabs.
- ``.xlsx`` / ``.ods``: per sheet a header line ``--- sheet N: NAME ---`` (sheets after the first
  are preceded by an empty line), then one line per non-empty row as **TSV** whose first field is
  the spreadsheet's own row number: line ``12\\tAcme\\t300`` is row 12. Runs of whitespace inside a
  cell (tabs, line breaks) become one space, so a row is always exactly one line. TSV rather than CSV: it needs no quoting,
  so ``line.split("\\t")`` is always right. Values are the cached results (formulas are not
  evaluated); ``.xlsx`` dates are ISO 8601.
- ``.pptx`` / ``.odp``: per slide ``--- slide N ---`` (slides after the first preceded by an empty
  line), then one line per non-empty paragraph of each shape in the slide's order (table rows as
  TSV); the speaker notes follow under ``--- slide N notes ---``.
- ``.eml``: ``From:``, ``To:``, ``Cc:``, ``Date:``, ``Subject:`` lines (those present), one
  ``Attachment: NAME (TYPE, SIZE)`` line per attachment (listed, never read), an empty line, then the
  text body (text/plain preferred; HTML converted to text). ``.mbox``: each message the same way
  under a ``--- message N ---`` line (messages after the first preceded by an empty line).
- ``.epub``: per chapter in spine (reading) order ``--- chapter N: PATH-IN-BOOK ---``, then the
  chapter's text (XHTML converted to text).
- ``.gz``: decompressed (never past the size limit), then read as the inner name says
  (``app.log.gz`` is a log); lines are the inner file's lines.

Every failure is an :class:`ExtractError` whose message says what is wrong and what to do; the loader
turns it into the file's error. Zip-based formats are checked before parsing: a file that is not a
ZIP package (a text file renamed ``.docx``), an encrypted or old binary Office file, and a package
that unpacks to far more XML than the size limit (a ZIP bomb) are refused with their own message.

Libraries: python-docx, openpyxl, python-pptx (MIT), odfpy (Apache-2.0), olefile (BSD) for telling an
encrypted Office file from an old binary one, defusedxml (PSF) for the EPUB container's XML, and the
standard library's ``email``, ``mailbox``, ``zipfile`` and ``gzip``. EPUB uses zipfile + defusedxml,
not ebooklib: ebooklib is AGPL-3.0 (not usable in an MIT app), and an EPUB is only a ZIP with two
small XML files naming the chapters, which are XHTML for the existing HTML-to-text converter.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.documents import (
    Document,
    LoadCancelled,
    _oserror_text,  # the loader's own wording for permission denied, not found, ...
    decode_bytes,
    format_size,
    html_to_text,
)

# The file-size cap for packed formats (their text is far smaller than the file: images, XML markup).
MAX_PACKED_BYTES = 200 * 1024 * 1024
# A ZIP package may declare at most this many times the text limit of XML (markup is verbose, but
# not this verbose): more is treated as a ZIP bomb and refused before anything is unpacked.
MAX_XML_PER_TEXT = 20
CHECK_EVERY_LINES = 2000   # how often the long loops look at the cancel token

_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"   # OLE2 compound file: old .doc/.xls/.ppt or encrypted


class ExtractError(Exception):
    """A file that cannot be read; the message (for the user) says why and what to do."""


@dataclass(frozen=True, slots=True)
class Format:
    kind: str
    what: str             # "a Word document", used in messages
    zipped: bool           # a ZIP package (checked before parsing)
    old: str = ""          # the old binary format's extension, for the "renamed" hint

    @property
    def noun(self) -> str:
        """``what`` without its article: "Word document"."""
        return self.what.split(" ", 1)[1]


FORMATS: dict[str, Format] = {
    ".docx": Format("docx", "a Word document", True, ".doc"),
    ".xlsx": Format("xlsx", "an Excel workbook", True, ".xls"),
    ".xlsm": Format("xlsx", "an Excel workbook", True, ".xls"),
    ".pptx": Format("pptx", "a PowerPoint presentation", True, ".ppt"),
    ".odt": Format("odt", "an OpenDocument text", True),
    ".ods": Format("ods", "an OpenDocument spreadsheet", True),
    ".odp": Format("odp", "an OpenDocument presentation", True),
    ".epub": Format("epub", "an EPUB book", True),
    ".eml": Format("eml", "an e-mail message", False),
    ".mbox": Format("mbox", "a mailbox", False),
}
# Kinds whose files may be as large as MAX_PACKED_BYTES (their text still counts against the text cap).
PACKED_KINDS = frozenset(f.kind for f in FORMATS.values() if f.zipped) | {"mbox"}

# What each document kind is, for the system prompt: family -> kinds. Order is the prompt's order.
FAMILIES: dict[str, tuple[str, ...]] = {
    "prose": ("text", "markdown", "html", "pdf", "docx", "odt", "epub"),
    "tables": ("csv", "tsv", "xlsx", "ods"),
    "slides": ("pptx", "odp"),
    "mail": ("eml", "mbox"),
    "logs": ("log",),
    "JSON": ("json", "jsonl"),
    "code": ("code",),
    "config and markup": ("xml", "yaml", "ini", "toml"),
}
_FAMILY_OF = {kind: family for family, kinds in FAMILIES.items() for kind in kinds}

# One or two lines per family on how to explore it (names the headers the extractors above write).
GUIDANCE: dict[str, str] = {
    "prose": ("find the parts that matter with `re` (names, terms, headings: `#` lines, `--- page N ---`, "
              "`--- chapter N ---`), then send whole sections, split at blank lines or headings, to "
              "llm_query."),
    "tables": ("read the header row, then filter, count and sum in code (the csv module, "
               "`line.split('\\t')` for TSV) rather than by sub-model."),
    "slides": ("one `--- slide N ---` section per slide, speaker notes under `--- slide N notes ---`; "
               "split on those lines and keep a slide's notes with it."),
    "mail": ("each message starts with From/To/Cc/Date/Subject lines and `Attachment:` lines (listed, not "
             "read), then an empty line and the body; mailboxes put `--- message N ---` before each. Filter "
             "on the headers in code before reading bodies."),
    "logs": ("one event per line: filter with `re` (levels, ids, time ranges) and count in code; send only "
             "matching lines with a few around them to sub-models."),
    "JSON": ("parse with `json.loads` (JSON Lines: one object per line) and select fields in code instead "
             "of reading raw text."),
    "code": "search for definitions and names with `re`; read whole functions or files, not arbitrary chunks.",
    "config and markup": "usually small: print the part you need, or parse it (xml.etree, json) for keys.",
}

# Added to a family's advice when one of these kinds is among the documents.
KIND_GUIDANCE: dict[str, str] = {
    "xlsx": ("Spreadsheets are TSV under one `--- sheet N: NAME ---` line per sheet, and the first field of "
             "each row is its row number in the sheet."),
}
KIND_GUIDANCE["ods"] = KIND_GUIDANCE["xlsx"]


def kind_family(kind: str) -> str | None:
    """The family of a document kind ("prose", "tables", "slides", "mail", "logs", ...), or None."""
    return _FAMILY_OF.get(kind)


def format_for(path: Path) -> Format | None:
    """The extracted format a file name names (``.docx``, ``.eml``, ...), or None."""
    return FORMATS.get(path.suffix.lower())


def gz_inner(path: Path) -> Path | None:
    """For ``name.ext.gz``, the inner name ``name.ext`` (None for other names and for ``.tar.gz``)."""
    if path.suffix.lower() != ".gz":
        return None
    inner = path.with_name(path.stem)
    return None if inner.suffix.lower() == ".tar" else inner


# -- output with a cap and the cancel token -----------------------------------------------------

# Everything str.splitlines() takes for a line break (Qt's preview breaks at U+2028/U+2029 too).
_BREAKS = re.compile("\r\n|[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class _Lines:
    """The extracted lines: refuses to grow past ``max_chars``; checks ``cancel`` every few lines."""

    def __init__(self, max_chars: int, cancel: CancelToken | None) -> None:
        self.lines: list[str] = []
        self.chars = 0
        self.max_chars = max_chars
        self.cancel = cancel
        self.warnings: list[str] = []

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise LoadCancelled(self.cancel.reason or "cancelled")

    def add(self, line: str) -> None:
        """Add one line (a line break inside it makes more lines: their numbers are counted the same)."""
        if _BREAKS.search(line):   # one kind of break, so split("\n") and splitlines() count alike
            line = _BREAKS.sub("\n", line)
        self.lines.append(line)
        self.chars += len(line) + 1
        if self.chars > self.max_chars:
            raise ExtractError(f"its text is over the {format_size(self.max_chars)} limit per file "
                               f"(stopped reading there); split it into smaller files")
        if len(self.lines) % CHECK_EVERY_LINES == 0:
            self.check_cancel()

    def text(self) -> str:
        return "\n".join(self.lines)


def _one_line(text: str) -> str:
    """A table cell on one line: runs of whitespace (tabs, line breaks) become one space, ends trimmed."""
    return " ".join(text.replace("\t", " ").split()) if text else ""


def _tsv(cells: list[str]) -> str:
    while cells and not cells[-1]:
        cells.pop()
    return "\t".join(cells)


# -- checks before parsing ----------------------------------------------------------------------

def _check_package(path: Path, fmt: Format, max_chars: int, source: Path | None = None) -> None:
    """Refuse what is not a sound ZIP package before handing it to a parser (``source``: where to
    read it, when not ``path`` itself)."""
    import zipfile

    src = source or path
    with open(src, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_CFB_MAGIC):
        raise ExtractError(_cfb_message(path, fmt, src))
    if not head.startswith(b"PK"):
        renamed = f" or an old {fmt.old} file" if fmt.old else ""
        raise ExtractError(f"not {fmt.what}: the file is not a ZIP package as {path.suffix.lower()} files "
                           f"are (a text file{renamed} renamed?); open it in its program and save it "
                           f"again, or give it the right extension")
    try:
        with zipfile.ZipFile(src) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise ExtractError(f"damaged or truncated {fmt.noun} (its ZIP structure "
                           f"is broken: {exc}); re-save it from its program or get a fresh copy") from None
    markup = sum(i.file_size for i in infos if i.filename.lower().endswith(
        (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx")))
    limit = max_chars * MAX_XML_PER_TEXT
    if markup > limit:
        raise ExtractError(f"unpacks to {format_size(markup)} of XML, over the {format_size(limit)} this app "
                           f"reads for one file (a ZIP bomb, or a very large document); not unpacked. "
                           f"Split it into smaller files")


def _cfb_message(path: Path, fmt: Format, source: Path | None = None) -> str:
    try:
        import olefile

        with olefile.OleFileIO(str(source or path)) as ole:
            encrypted = ole.exists("EncryptionInfo") or ole.exists("EncryptedPackage")
    except (OSError, ValueError, IndexError) as exc:  # olefile's own errors are OSError subclasses
        return (f"not {fmt.what}: it is an OLE2 compound file that cannot be read ({exc}); open it in its "
                f"program and save it as {path.suffix.lower()}")
    if encrypted:
        return (f"encrypted (password-protected) {fmt.noun}; open it with its "
                f"password and save an unprotected copy")
    old = f" (an old {fmt.old} file renamed {path.suffix.lower()}?)" if fmt.old else ""
    return (f"not {fmt.what}: it is in the old binary Office format{old}; open it and save it as "
            f"{path.suffix.lower()}")


# -- Word ----------------------------------------------------------------------------------------

def extract_docx(path: Path, out: _Lines) -> None:
    """Paragraphs and table rows of a Word document's body, in order (see the module docstring)."""
    from docx import Document as open_docx
    from docx.text.paragraph import Paragraph

    doc = open_docx(str(path))
    # Style names by id, read once: Paragraph.style looks the style up anew on every call, which made
    # a 5,000-paragraph document take 30 s instead of 1 s.
    names = {s.style_id: str(s.name or "") for s in doc.styles}
    for block in doc.iter_inner_content():
        if isinstance(block, Paragraph):
            style_id = block._p.style   # the paragraph's w:pStyle value, None for the default style
            out.add(_heading_prefix(names.get(style_id, "") if style_id else "") + block.text)
        else:
            for row in block.rows:
                out.add(_tsv([_one_line(cell.text) for cell in row.cells]))


def _heading_prefix(style: str) -> str:
    if style == "Title":
        return "# "
    if style.startswith("Heading "):
        level = style[len("Heading "):]
        if level.isdigit() and 1 <= int(level) <= 9:
            return "#" * int(level) + " "
    return ""


# -- Excel ---------------------------------------------------------------------------------------

def extract_xlsx(path: Path, out: _Lines) -> None:
    """Every worksheet as TSV rows under its name; each row's first field is its row number."""
    import openpyxl

    # A file object, not a name: openpyxl refuses names without an Excel extension, and the loader
    # hands over the checked descriptor as /proc/self/fd/N.
    fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below, after the workbook
    try:
        wb = openpyxl.load_workbook(fh, read_only=True, data_only=True)
    except BaseException:
        fh.close()
        raise
    try:
        for n, ws in enumerate(wb.worksheets, 1):
            if n > 1:
                out.add("")
            hidden = "" if ws.sheet_state == "visible" else f" ({ws.sheet_state})"
            out.add(f"--- sheet {n}: {ws.title}{hidden} ---")
            ws.reset_dimensions()   # some writers store a wrong size; read what is really there
            for row_number, values in enumerate(ws.iter_rows(values_only=True), 1):
                cells = [_cell_value(v) for v in values]
                if any(cells):
                    out.add(_tsv([str(row_number), *cells]))
                elif row_number % CHECK_EVERY_LINES == 0:
                    out.check_cancel()   # long runs of empty rows add no lines
    finally:
        wb.close()
        fh.close()


def _cell_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return _one_line(str(value))


# -- PowerPoint ----------------------------------------------------------------------------------

def extract_pptx(path: Path, out: _Lines) -> None:
    """Slide by slide: each shape's paragraphs (table rows as TSV), then the speaker notes."""
    from pptx import Presentation

    prs = Presentation(str(path))
    for n, slide in enumerate(prs.slides, 1):
        out.check_cancel()
        if n > 1:
            out.add("")
        out.add(f"--- slide {n} ---")
        for shape in slide.shapes:
            _pptx_shape(shape, out)
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            notes = [p for p in _pptx_paragraphs(frame)] if frame is not None else []
            if notes:
                out.add(f"--- slide {n} notes ---")
                for line in notes:
                    out.add(line)


def _pptx_paragraphs(frame: Any) -> Iterator[str]:
    for paragraph in frame.paragraphs:
        text = paragraph.text.replace("\v", "\n").strip()
        if text:
            yield text


def _pptx_shape(shape: Any, out: _Lines) -> None:
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):   # (shape_type raises on some shapes; the class never does)
        for child in shape.shapes:
            _pptx_shape(child, out)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            line = _tsv([_one_line(cell.text) for cell in row.cells])
            if line:
                out.add(line)
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        for text in _pptx_paragraphs(shape.text_frame):
            out.add(text)


# -- OpenDocument --------------------------------------------------------------------------------

_ODF_MIME = {"odt": "application/vnd.oasis.opendocument.text",
             "ods": "application/vnd.oasis.opendocument.spreadsheet",
             "odp": "application/vnd.oasis.opendocument.presentation"}


def extract_odf(path: Path, out: _Lines, kind: str) -> None:
    """OpenDocument text (paragraphs), spreadsheet (TSV per sheet) or presentation (per slide)."""
    from odf.opendocument import load

    doc = load(str(path))
    mime = str(doc.mimetype or "")
    if not mime.startswith(_ODF_MIME[kind]):
        raise ExtractError(f"its content is '{mime or 'unknown'}', not {FORMATS['.' + kind].what}; give it "
                           f"the right extension")
    if kind == "odt":
        _odf_blocks(doc.text, out)
    elif kind == "ods":
        _ods_sheets(doc.spreadsheet, out)
    else:
        _odp_slides(doc.presentation, out)


def _odf_elements(node: Any) -> Iterator[Any]:
    for child in node.childNodes:
        if child.nodeType == child.ELEMENT_NODE:
            yield child


def _odf_text(node: Any) -> str:
    from odf import teletype

    return str(teletype.extractText(node))


def _odf_blocks(node: Any, out: _Lines, *, skip_empty: bool = False) -> None:
    """Paragraphs and headings in document order (tables as TSV rows), descending into containers."""
    from odf.namespaces import PRESENTATIONNS, TABLENS, TEXTNS

    for el in _odf_elements(node):
        ns, name = el.qname
        if ns == TEXTNS and name in ("p", "h"):
            text = _odf_text(el)
            if skip_empty and not text.strip():
                continue
            prefix = ""
            if name == "h":
                level = str(el.getAttrNS(TEXTNS, "outline-level") or "1")
                prefix = "#" * (int(level) if level.isdigit() and 0 < int(level) < 10 else 1) + " "
            out.add(prefix + text)
        elif ns == TABLENS and name == "table":
            for row, repeat in _ods_rows(el):
                line = _tsv(_ods_cells(row))
                for _ in range(repeat if line else 0):   # empty rows of a text's table add no lines
                    out.add(line)
        elif (ns == TEXTNS and name in ("tracked-changes", "sequence-decls", "variable-decls")) or \
                (ns == PRESENTATIONNS and name == "notes"):
            continue   # deleted text, declarations; slide notes are written after the slide
        else:
            _odf_blocks(el, out, skip_empty=skip_empty)


def _ods_rows(table: Any) -> Iterator[tuple[Any, int]]:
    """A table's rows in order with their repeat counts (rows may sit in header/group elements)."""
    from odf.namespaces import TABLENS

    for el in _odf_elements(table):
        ns, name = el.qname
        if ns != TABLENS:
            continue
        if name == "table-row":
            rep = str(el.getAttrNS(TABLENS, "number-rows-repeated") or "1")
            yield el, int(rep) if rep.isdigit() else 1
        elif name in ("table-header-rows", "table-rows", "table-row-group"):
            yield from _ods_rows(el)


def _ods_cells(row: Any) -> list[str]:
    from odf.namespaces import TABLENS, TEXTNS

    runs: list[tuple[str, int]] = []
    for el in _odf_elements(row):
        ns, name = el.qname
        if ns != TABLENS or name not in ("table-cell", "covered-table-cell"):
            continue
        # A cell's paragraphs are joined with spaces (extractText would glue them together).
        paragraphs = [_odf_text(p) for p in _odf_elements(el) if p.qname[0] == TEXTNS]
        text = _one_line(" ".join(paragraphs))
        rep = str(el.getAttrNS(TABLENS, "number-columns-repeated") or "1")
        runs.append((text, int(rep) if rep.isdigit() else 1))
    while runs and not runs[-1][0]:
        runs.pop()   # empty cells repeated to the sheet's edge (16,384 columns): not expanded
    return [text for text, n in runs for _ in range(n)]


def _ods_sheets(body: Any, out: _Lines) -> None:
    from odf.namespaces import TABLENS

    n = 0
    for table in _odf_elements(body):
        if table.qname != (TABLENS, "table"):
            continue
        n += 1
        if n > 1:
            out.add("")
        out.add(f"--- sheet {n}: {table.getAttrNS(TABLENS, 'name') or n} ---")
        row_number = 0
        for row, repeat in _ods_rows(table):
            line = _tsv(_ods_cells(row))
            if not line:
                row_number += repeat   # an empty stretch, maybe a million rows: counted, not written
                out.check_cancel()
                continue
            for _ in range(repeat):
                row_number += 1
                out.add(f"{row_number}\t{line}")


def _odp_slides(body: Any, out: _Lines) -> None:
    from odf.namespaces import DRAWNS, PRESENTATIONNS

    n = 0
    for page in _odf_elements(body):
        if page.qname != (DRAWNS, "page"):
            continue
        n += 1
        out.check_cancel()
        if n > 1:
            out.add("")
        out.add(f"--- slide {n} ---")
        _odf_blocks(page, out, skip_empty=True)
        for notes in _odf_elements(page):
            if notes.qname == (PRESENTATIONNS, "notes"):
                body_lines = _Lines(out.max_chars, out.cancel)
                _odf_blocks(notes, body_lines, skip_empty=True)
                if body_lines.lines:
                    out.add(f"--- slide {n} notes ---")
                    for line in body_lines.lines:
                        out.add(line)


# -- e-mail --------------------------------------------------------------------------------------

_MAIL_HEADERS = ("From", "To", "Cc", "Date", "Subject")


def extract_eml(data: bytes, out: _Lines) -> None:
    """One message: headers, attachments listed, then the text body (see the module docstring)."""
    if b"\x00" in data[:65536]:
        raise ExtractError("binary file (contains NUL bytes), not an e-mail message")
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)  # policy.default builds EmailMessage
    headers = _mail_headers(msg)
    if not any(name in headers for name in ("From", "To", "Date", "Subject")):
        raise ExtractError("not an e-mail message: it has no From, To, Date or Subject header; if it is "
                           "plain text, give it a .txt extension")
    _write_message(msg, headers, out)


def _mail_headers(msg: EmailMessage) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _MAIL_HEADERS:
        try:
            value: Any = msg.get(name)
            if getattr(value, "defects", None):   # e.g. a broken address list: the parse loses parts
                raise ValueError("defective header")
        except (ValueError, TypeError, IndexError, LookupError):   # show it as written instead
            value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        if value is not None:
            found[name] = _one_line(str(value))
    return found


def _write_message(msg: EmailMessage, headers: Mapping[str, str], out: _Lines) -> None:
    for name in _MAIL_HEADERS:
        if name in headers:
            out.add(f"{name}: {headers[name]}")
    body = msg.get_body(preferencelist=("plain", "html"))
    for part in _attachments(msg, body):
        name = part.get_filename() or "(no name)"
        out.add(f"Attachment: {_one_line(name)} ({part.get_content_type()}, {format_size(_part_size(part))})")
    out.add("")
    if body is None:
        out.add("(no text body)")
        return
    text = _part_text(body, out)
    if body.get_content_subtype() == "html":
        text = html_to_text(text)
    out.add(text.replace("\r\n", "\n").strip("\n"))


def _attachments(part: Message, body: Message | None) -> Iterator[EmailMessage]:
    """Every leaf part that is not the body nor an alternative text of it (attached mails are leaves)."""
    if part is body:
        return
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts() if isinstance(part, EmailMessage) else []:
            yield from _attachments(sub, body)
        return
    assert isinstance(part, EmailMessage)
    if (part.get_content_type() in ("text/plain", "text/html") and not part.get_filename()
            and part.get_content_disposition() != "attachment"):
        return   # the other alternative of the body, or inline text of the message itself
    yield part


def _part_size(part: EmailMessage) -> int:
    """The attachment's size in bytes once decoded (its content is not otherwise read)."""
    if part.is_multipart():   # an attached message (message/rfc822): its own size
        inner = part.get_payload(0)
        return len(inner.as_bytes()) if isinstance(inner, Message) else 0
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def _part_text(part: EmailMessage, out: _Lines) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError, UnicodeError) as exc:   # unknown charset, bad encoding
        raw = part.get_payload(decode=True)
        dec = decode_bytes(raw if isinstance(raw, bytes) else str(part.get_payload()).encode())
        out.warnings.append(f"a message body could not be decoded as declared ({exc}); "
                            + (f"read as {dec.encoding}" if dec.text is not None else "not shown"))
        return dec.text if dec.text is not None else f"(body not shown: {dec.error})"


def extract_mbox(path: Path, out: _Lines) -> None:
    """Every message of an mbox mailbox under a ``--- message N ---`` line."""
    import mailbox

    with open(path, "rb") as fh:
        head = fh.read(5)
    if head != b"From ":
        raise ExtractError("not an mbox mailbox: it must start with a 'From ' line (a single message is "
                           "an .eml file)")
    box = mailbox.mbox(str(path), create=False)
    try:
        for n, key in enumerate(box.iterkeys(), 1):
            out.check_cancel()
            if n > 1:
                out.add("")
            out.add(f"--- message {n} ---")
            msg = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
            assert isinstance(msg, EmailMessage)
            mark = len(out.lines)
            try:
                _write_message(msg, _mail_headers(msg), out)
            except (ExtractError, LoadCancelled):
                raise
            except Exception as exc:  # noqa: BLE001 - one malformed message must not lose the others
                del out.lines[mark:]
                out.add(f"(this message could not be read: {type(exc).__name__}: {exc})")
                out.warnings.append("some messages could not be read; they are marked in the text")
        if not out.lines:
            raise ExtractError("the mailbox has no messages")
    finally:
        box.close()


# -- EPUB ----------------------------------------------------------------------------------------

_CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF_NS = "{http://www.idpf.org/2007/opf}"


def extract_epub(path: Path, out: _Lines) -> None:
    """Chapters in spine (reading) order, each XHTML converted to text under its own header line."""
    import zipfile

    from defusedxml import ElementTree

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "META-INF/container.xml" not in names:
            raise ExtractError("not an EPUB book: META-INF/container.xml is missing; re-export the book")
        root = ElementTree.fromstring(zf.read("META-INF/container.xml"))
        rootfile = root.find(f".//{_CONTAINER_NS}rootfile")
        opf_path = rootfile.get("full-path") if rootfile is not None else None
        if not opf_path or opf_path not in names:
            raise ExtractError("not an EPUB book: its package file (OPF) is missing; re-export the book")
        opf = ElementTree.fromstring(zf.read(opf_path))
        base = posixpath.dirname(opf_path)
        manifest = {item.get("id"): item.get("href") or ""
                    for item in opf.iter(f"{_OPF_NS}item")}
        spine = [ref.get("idref") for ref in opf.iter(f"{_OPF_NS}itemref")]
        if not spine:
            raise ExtractError("the EPUB book has no chapters in its spine; re-export the book")
        missing: list[str] = []
        for n, idref in enumerate(spine, 1):
            href = manifest.get(idref)
            name = posixpath.normpath(posixpath.join(base, unquote(href.split("#")[0]))) if href else ""
            if n > 1:
                out.add("")
            out.add(f"--- chapter {n}: {name or idref} ---")
            if name not in names:
                missing.append(name or str(idref))
                continue
            dec = decode_bytes(zf.read(name))
            text = html_to_text(dec.text or "")
            if text:
                out.add(text)
        if missing:
            out.warnings.append(f"{len(missing)} chapter(s) named in the book are missing from it: "
                                f"{', '.join(missing[:5])}")


# -- gzip ----------------------------------------------------------------------------------------

def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip ``data``, never past ``max_bytes`` (a decompression bomb stops there)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(max_bytes + 1)
    except gzip.BadGzipFile as exc:
        raise ExtractError(f"not a gzip file ({exc}); if it is plain text, remove the .gz extension") from None
    except EOFError:
        raise ExtractError("truncated gzip file (it ends before its end marker); get a complete copy") from None
    except zlib.error as exc:
        raise ExtractError(f"damaged gzip file ({exc}); get a fresh copy") from None
    if len(out) > max_bytes:
        raise ExtractError(f"decompresses to over the {format_size(max_bytes)} limit per file (stopped "
                           f"there: a decompression bomb, or a very large file); decompress it and split it")
    return out


# -- entry point ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Extracted:
    text: str
    warning: str | None = None


_EXTRACTORS: dict[str, Callable[[Path, _Lines], None]] = {
    "docx": extract_docx,
    "xlsx": extract_xlsx,
    "pptx": extract_pptx,
    "odt": lambda p, out: extract_odf(p, out, "odt"),
    "ods": lambda p, out: extract_odf(p, out, "ods"),
    "odp": lambda p, out: extract_odf(p, out, "odp"),
    "epub": extract_epub,
    "eml": lambda p, out: extract_eml(p.read_bytes(), out),
    "mbox": extract_mbox,
}


def extract(path: Path, *, max_chars: int, cancel: CancelToken | None = None,
            source: Path | None = None) -> Extracted:
    """The text of ``path`` (a format in :data:`FORMATS`), read from ``source`` when given (the
    loader passes the descriptor it opened and checked, as ``/proc/self/fd/N``). Raises ExtractError
    or LoadCancelled only."""
    fmt = format_for(path)
    if fmt is None:
        raise ExtractError(f"{path.suffix or 'this'} files are not read by this extractor")
    out = _Lines(max_chars, cancel)
    try:
        if fmt.zipped:
            _check_package(path, fmt, max_chars, source)
        _EXTRACTORS[fmt.kind](source or path, out)
    except (ExtractError, LoadCancelled):
        raise
    except OSError as exc:   # e.g. permission denied on open, after stat() worked
        raise ExtractError(_oserror_text(exc)) from None
    except MemoryError:
        raise ExtractError("too large to read in the memory available; split it into smaller files") from None
    except Exception as exc:  # noqa: BLE001 - parsers raise many kinds on malformed input; reported per file
        raise ExtractError(f"malformed {fmt.noun}, cannot be read "
                           f"({type(exc).__name__}: {exc}); re-save it from its program") from None
    text = out.text()
    warning = "; ".join(dict.fromkeys(out.warnings)) or None
    if not text.strip():
        warning = "; ".join(w for w in (warning, "no text found in it") if w)
    return Extracted(text, warning)


def load_into(doc: Document, max_chars: int, cancel: CancelToken | None, inside: str | None = None) -> None:
    """Fill ``doc`` (a file in :data:`FORMATS`) with its text, or its error. Raises only LoadCancelled.

    The file is opened once through :func:`open_document_file` (which refuses a file that is no
    longer inside the chosen folder ``inside`` — a link swapped in after the scan) and the parsers
    read that very descriptor (``/proc/self/fd/N``); where there is no ``/proc`` they read the path
    just checked."""
    from rlm_desktop.core.documents import open_document_file

    try:
        with open_document_file(doc.path, inside) as fh:
            fd_path = Path(f"/proc/self/fd/{fh.fileno()}")
            source = fd_path if os.path.exists(fd_path) else None
            got = extract(doc.path, max_chars=max_chars, cancel=cancel, source=source)
    except OSError as exc:
        doc.error = str(exc) if not exc.strerror else _oserror_text(exc)
        return
    except ExtractError as exc:
        doc.error = str(exc)
        return
    doc.text = got.text
    doc.chars = len(got.text)
    doc.warning = got.warning


__all__ = ["FAMILIES", "FORMATS", "GUIDANCE", "KIND_GUIDANCE", "PACKED_KINDS", "ExtractError", "Extracted", "extract",
           "format_for", "gunzip", "gz_inner", "kind_family", "load_into"]
