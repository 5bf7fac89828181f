"""Sheets and rows of a spreadsheet's extracted text: maps its lines to (sheet, row) and back. Qt-free.

A workbook (``.xlsx``, ``.ods``) is extracted (core/formats.py) as one ``--- sheet N: NAME ---`` line
per sheet followed by its non-empty rows as TSV lines whose first field is the sheet's own row number
(sheets after the first preceded by an empty line). :class:`Workbook` reads that line table back;
its ``annotate`` gives the document line ranges the source index found (core/sources.py) their
sheet and rows — a range crossing sheets is **split into one range per sheet** (the empty line and
the header between them belong to no rows) — and :class:`Workbooks` keeps one table per document,
built on first use from the text the models were given.
"""

from __future__ import annotations

import bisect
import re
import threading
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from rlm_desktop.core.sources import SourceRange, merge_ranges, merge_sources

_HEADER = re.compile(r"--- sheet (\d+): (.*) ---")
_STATES = (" (hidden)", " (veryHidden)")     # openpyxl's sheet_state, written after the name


def rows_text(start_row: int | None, end_row: int | None) -> str:
    """``R12–R18`` / ``R12`` (empty when no row is known)."""
    if start_row is None:
        return ""
    return f"R{start_row}" if end_row in (None, start_row) else f"R{start_row}–R{end_row}"


def sheet_label(sheet: str, start_row: int | None, end_row: int | None) -> str:
    """``Sales R12–R18`` as a person reads it (a header line only: ``Sales``)."""
    rows = rows_text(start_row, end_row)
    return f"{sheet} {rows}" if rows else sheet


def sheet_rows_words(sheet: str, start_row: int | None, end_row: int | None) -> str:
    """``Sales rows 12–18`` / ``Sales row 3`` (footnotes, where there is room for words)."""
    if start_row is None:
        return sheet
    if end_row in (None, start_row):
        return f"{sheet} row {start_row}"
    return f"{sheet} rows {start_row}–{end_row}"


@dataclass(frozen=True, slots=True)
class Sheet:
    """One sheet's section of the text: its header line and its last line (1-based, inclusive), and
    its first and last row numbers (None when it has no non-empty row)."""

    number: int
    name: str             # as the workbook names it (the " (hidden)" mark removed)
    header_line: int
    end_line: int
    first_row: int | None
    last_row: int | None


class Workbook:
    """The sheets of one spreadsheet's extracted text and the row number of each line."""

    def __init__(self, sheets: list[Sheet], rows: array) -> None:
        self.sheets = sheets
        self._rows = rows              # rows[i] = row number of line i + 1 (0: not a row line)
        self._headers = [s.header_line for s in sheets]

    @classmethod
    def from_text(cls, text: str) -> Workbook | None:
        """The table of ``text`` (extracted from a workbook), or None when it is not one (its first
        line is not a sheet header)."""
        if not text.startswith("--- sheet 1: "):
            return None
        rows = array("i")
        sheets: list[Sheet] = []
        cur: list[object] | None = None      # number, name, header line, last line, first, last row

        def close() -> None:
            if cur is not None:
                sheets.append(Sheet(*cur))  # type: ignore[arg-type]
        for i, line in enumerate(text.split("\n"), 1):
            head, tab, _ = line.partition("\t")
            if tab and head.isascii() and head.isdigit() and len(head) <= 9 and cur is not None:
                r = int(head)
                rows.append(r)
                cur[3] = i
                if cur[4] is None:
                    cur[4] = r
                cur[5] = r
                continue
            rows.append(0)
            m = _HEADER.fullmatch(line) if line.startswith("--- sheet ") else None
            if m is not None:
                close()
                name = m.group(2)
                for state in _STATES:
                    name = name.removesuffix(state)
                cur = [int(m.group(1)), name, i, i, None, None]
        close()
        return cls(sheets, rows) if sheets else None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sheets]

    def find(self, name: str) -> Sheet | None:
        """The sheet called ``name`` (exactly; else the one whose name differs only in case, as
        spreadsheet programs compare names)."""
        for s in self.sheets:
            if s.name == name:
                return s
        folded = [s for s in self.sheets if s.name.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def split(self, a: int, b: int) -> list[tuple[Sheet, int, int, int | None, int | None]]:
        """Lines ``a``..``b`` per sheet: ``(sheet, first line, last line, first row, last row)`` for
        each sheet the range touches (rows None when it holds only the sheet's header line)."""
        out: list[tuple[Sheet, int, int, int | None, int | None]] = []
        i = max(bisect.bisect_right(self._headers, a) - 1, 0)
        for s in self.sheets[i:]:
            if s.header_line > b:
                break
            lo, hi = max(a, s.header_line), min(b, s.end_line)
            if lo > hi:
                continue
            out.append((s, lo, hi, *self._rows_in(lo, hi)))
        return out

    def _rows_in(self, lo: int, hi: int) -> tuple[int | None, int | None]:
        first = next((self._rows[i - 1] for i in range(lo, hi + 1) if self._rows[i - 1]), None)
        if first is None:
            return None, None
        last = next(self._rows[i - 1] for i in range(hi, lo - 1, -1) if self._rows[i - 1])
        return first, last

    def lines_for(self, sheet: Sheet, start_row: int, end_row: int) -> tuple[int, int] | None:
        """The lines holding rows ``start_row``..``end_row`` of ``sheet`` (None: all those rows are empty)."""
        lo, hi = sheet.header_line + 1, sheet.end_line     # rows rise with lines inside a sheet
        a = bisect.bisect_left(self._rows, start_row, lo - 1, hi)
        b = bisect.bisect_right(self._rows, end_row, lo - 1, hi)
        return (a + 1, b) if a < b else None

    def annotate(self, r: SourceRange) -> list[SourceRange]:
        """``r`` with its sheet and rows; one range per sheet when it crosses sheets (the lines between
        sheets dropped). ``r`` unchanged when it touches no sheet."""
        parts = self.split(r.start_line, r.end_line)
        if not parts:
            return [r]
        return [replace(r, start_line=lo, end_line=hi, sheet=s.name, start_row=r1, end_row=r2)
                for s, lo, hi, r1, r2 in parts]


class Workbooks:
    """The :class:`Workbook` of each spreadsheet among ``texts`` (name → text; a single ``str`` is
    the one document, whatever it is called), each built on first use and kept. A spreadsheet is
    known by its text (it starts with the first sheet's header), so a workbook passed to the Python
    API as a plain ``context`` string counts too. Thread-safe."""

    def __init__(self, texts: str | Mapping[str, str] | None) -> None:
        self._texts = texts
        self._built: dict[str, Workbook | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Workbook | None:
        if self._texts is None:
            return None
        with self._lock:
            if name not in self._built:
                text = self._texts if isinstance(self._texts, str) else self._texts.get(name)
                self._built[name] = Workbook.from_text(text) if isinstance(text, str) else None
            return self._built[name]

    def built(self, ranges: Iterable[SourceRange]) -> bool:
        """Whether annotating ``ranges`` needs no sheet table still to be read (cheap to do inline)."""
        return all(r.document in self._built for r in ranges)

    def annotate(self, ranges: Iterable[SourceRange]) -> list[SourceRange]:
        """Each range in a spreadsheet with its sheet and rows (split per sheet); others as they are."""
        out: list[SourceRange] = []
        for r in ranges:
            wb = self.get(r.document) if r.sheet is None else None
            out.extend(wb.annotate(r) if wb is not None else [r])
        return out


def merge_by_sheet(items: Iterable[SourceRange]) -> list[SourceRange]:
    """:func:`~rlm_desktop.core.sources.merge_sources` that keeps sheets apart: ranges of one sheet
    merge (their rows the smallest and largest of the parts), ranges of two sheets never do. Per
    document in first-seen order, then by line."""
    items = list(items)
    order: dict[str, int] = {}
    for r in items:
        order.setdefault(r.document, len(order))
    out = merge_sources(r for r in items if r.sheet is None)
    per: dict[tuple[str, str], list[SourceRange]] = {}
    for r in items:
        if r.sheet is not None:
            per.setdefault((r.document, r.sheet), []).append(r)
    for (doc, sheet), rs in per.items():
        for a, b in merge_ranges((r.start_line, r.end_line) for r in rs):
            inside = sorted((r for r in rs if a <= r.start_line and r.end_line <= b),
                            key=lambda r: r.start_line)
            firsts = [r.start_row for r in inside if r.start_row is not None]
            lasts = [r.end_row for r in inside if r.end_row is not None]
            out.append(SourceRange(doc, a, b, inside[0].page, inside[-1].end_page, sheet=sheet,
                                   start_row=min(firsts) if firsts else None,
                                   end_row=max(lasts) if lasts else None))
    out.sort(key=lambda r: (order[r.document], r.start_line))
    return out


__all__ = ["Sheet", "Workbook", "Workbooks", "merge_by_sheet",
           "rows_text", "sheet_label", "sheet_rows_words"]
