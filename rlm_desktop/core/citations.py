"""Citations in an answer (``[path:L12-L18]``, ``[file.pdf p.3]``, ``[book.xlsx:Sales!R12-R18]``) and what a run's models saw,
read from a trace and checked. Qt-free; the API the CLI, the exporters and the GUI use:

- :func:`sources_for(trace, run_span)` — per document the merged line ranges the run's models saw
  (every step's ``Attr.SOURCES`` in the run's subtree, any depth).
- :func:`steps_for(trace, run_span)` — ``(span, ranges)`` per step that saw documents (for "seen
  by" lists).
- :func:`citations_for(trace, run_span)` — the answer's citations, each with ``verified`` and, if
  not, ``why``; the run span's recorded ``Attr.CITATIONS`` when present (they carry the quoted
  lines), else computed from the answer and the recorded sources (old traces: what cannot be
  checked without the documents is said in ``why``).
- :func:`material_read_for(trace, run_span)` — for an answer without citations: what its sub-calls
  saw, labelled "material read" (not a citation).
- :func:`parse_citations(text)` / :func:`check_citations(...)` — the pieces, for the engine.

A citation is verified when its document exists, its range exists, and some model in the run saw
text from it (its range overlaps a recorded source). Unverified citations are kept, with why. A
spreadsheet's rows (``Sheet!R12-R18``, ``'Sheet name'!R3``) are mapped to the lines that hold them
(core/sheets.py) and checked like lines: the sheet exists, the rows exist, a model saw them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm_desktop.core.sheets import Workbooks, merge_by_sheet, sheet_label
from rlm_desktop.core.sources import SourceRange
from rlm_desktop.core.trace import Attr, Span, SpanKind, Trace

if TYPE_CHECKING:
    from rlm_desktop.core.sources import SourceIndex

# A quoted passage stored on a verified citation is cut to this many lines / characters.
QUOTE_MAX_LINES = 40
QUOTE_MAX_CHARS = 4000
MATERIAL_READ_LABEL = "material read (passages the sub-calls saw; not citations by the model)"

_BRACKET = re.compile(r"\[([^\[\]\n]{1,500})\]")
_LINES = re.compile(r"^\s*(?P<doc>.+?)\s*:\s*L(?P<a>\d+)(?:\s*[-–—]\s*L?(?P<b>\d+))?\s*$")
# ``book.xlsx:Sales!R12-R18``, ``book.xlsx:'Q1 plan'!R3`` (a quote inside a quoted name doubled, as
# spreadsheet programs write it), ``R12–18``; a cell or cell range as spreadsheets write them
# (``Sales!B12:D18``, ``Sales!$C$5``) names its rows too.
_ROWS = re.compile(r"^\s*(?P<doc>.+?)\s*:\s*(?:'(?P<quoted>(?:[^']|'')+)'|(?P<sheet>[^'!:\[\]][^!:\[\]]*?))\s*!"
                   r"\s*\$?[A-Z]{0,3}\$?(?P<a>\d+)(?:\s*[-–—:]\s*\$?[A-Z]{0,3}\$?(?P<b>\d+))?\s*$", re.IGNORECASE)
_PAGE = re.compile(r"^\s*(?P<doc>.+?)\s*(?:[,:]\s*|\s+)(?:p\.?|pp\.?|page)\s*(?P<a>\d+)"
                   r"(?:\s*[-–—]\s*(?P<b>\d+))?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Citation:
    """One citation of the answer as written (``raw``), where it points and whether it holds.

    ``start_line``/``end_line`` are None for a page citation that could not be resolved to lines;
    ``why`` says why an unverified citation fails; ``text`` holds the quoted lines when verified.
    In a spreadsheet, ``sheet`` and ``start_row``..``end_row`` (as cited, or of the cited lines).
    """

    raw: str
    document: str
    start_line: int | None
    end_line: int | None
    page: int | None
    verified: bool
    why: str | None = None
    text: str | None = None
    end_page: int | None = None
    sheet: str | None = None
    start_row: int | None = None
    end_row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"raw": self.raw, "document": self.document, "start_line": self.start_line,
                             "end_line": self.end_line, "page": self.page, "verified": self.verified,
                             "why": self.why}
        if self.end_page is not None and self.end_page != self.page:
            d["end_page"] = self.end_page
        if self.sheet is not None:
            d["sheet"] = self.sheet
            if self.start_row is not None:
                d["start_row"], d["end_row"] = self.start_row, self.end_row
        if self.text is not None:
            d["text"] = self.text
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Citation:
        def opt_int(v: Any) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None
        return cls(str(d.get("raw") or ""), str(d.get("document") or ""), opt_int(d.get("start_line")),
                   opt_int(d.get("end_line")), opt_int(d.get("page")), bool(d.get("verified")),
                   d.get("why") if isinstance(d.get("why"), str) else None,
                   d.get("text") if isinstance(d.get("text"), str) else None, opt_int(d.get("end_page")),
                   d.get("sheet") if isinstance(d.get("sheet"), str) else None,
                   opt_int(d.get("start_row")), opt_int(d.get("end_row")))

    def label(self) -> str:
        """``b.txt L3–L4`` / ``report.pdf p.3`` / ``book.xlsx Sales R12–R18``, as a person reads it."""
        if self.sheet is not None:
            return f"{self.document} {sheet_label(self.sheet, self.start_row, self.end_row)}"
        if self.start_line is None:
            return f"{self.document} p.{self.page}" if self.page is not None else self.document
        lines = f"L{self.start_line}" if self.start_line == self.end_line else \
            f"L{self.start_line}–L{self.end_line}"
        return f"{self.document} {lines}" if self.page is None else f"{self.document} p.{self.page} {lines}"


@dataclass(frozen=True, slots=True)
class ParsedCitation:
    raw: str
    document: str
    start: int
    end: int
    pages: bool          # start/end are pages, not lines
    sheet: str | None = None   # start/end are rows of this sheet


def parse_citations(text: str | None) -> list[ParsedCitation]:
    """Every citation in ``text``, in order: ``[a.txt:L12-L18]``, ``[a.txt:L5]``, ``[a.txt:L3–4]``,
    ``[f.pdf p.3]``, ``[f.pdf, pp. 2-3]``, ``[book.xlsx:Sales!R12-R18]``, ``[book.xlsx:'Q1 plan'!R3]``
    (``Sales!B12:D18``, a cell range, cites rows 12–18), several in one bracket (``[a.txt:L1-L2; b.txt:L5]``).
    A bracket that is not a citation (``[1]``, a Markdown link's text) is left alone; a
    reversed range (``L9-L3``) is read in order."""
    out: list[ParsedCitation] = []
    if not text:
        return out
    for m in _BRACKET.finditer(text):
        for part in re.split(r"[;]", m.group(1)):
            lm = _LINES.match(part)
            rm = None if lm else _ROWS.match(part)
            pm = None if lm or rm else _PAGE.match(part)
            hit = lm or rm or pm
            if hit is None:
                continue
            sheet = None
            if rm is not None:
                sheet = (rm.group("quoted").replace("''", "'") if rm.group("quoted") is not None
                         else rm.group("sheet").strip())
            doc = hit.group("doc").strip().strip("`'\"")
            if not doc:
                continue
            a = int(hit.group("a"))
            b = int(hit.group("b")) if hit.group("b") else a
            a, b = min(a, b), max(a, b)
            raw = f"[{part.strip()}]" if ";" in m.group(1) else m.group(0)
            out.append(ParsedCitation(raw, doc, a, b, pm is not None, sheet))
    return out


def _resolve_name(name: str, names: Iterable[str]) -> str | None:
    """The indexed document a cited name means: exact, ``context`` for a single document, or the
    one document whose path ends with it (``b.txt`` for ``docs/b.txt``)."""
    names = list(names)
    if name in names:
        return name
    if name == "context" and len(names) == 1:
        return names[0]
    tail = [n for n in names if n.endswith("/" + name.removeprefix("./"))]
    return tail[0] if len(tail) == 1 else None


def _overlaps(doc: str, a: int, b: int, seen: Iterable[SourceRange]) -> bool:
    return any(r.document == doc and r.start_line <= b and a <= r.end_line for r in seen)


def _quote(text: str, a: int, b: int) -> str:
    lines = text.split("\n", b)[a - 1:b]
    cut = ""
    if len(lines) > QUOTE_MAX_LINES:
        cut = f"\n[… {len(lines) - QUOTE_MAX_LINES} more lines]"
        lines = lines[:QUOTE_MAX_LINES]
    out = "\n".join(lines)
    if len(out) > QUOTE_MAX_CHARS:
        out, cut = out[:QUOTE_MAX_CHARS], f"[… {len(out) - QUOTE_MAX_CHARS:,} more characters]"
        out += "\n"
    return out + cut


def check_citations(parsed: Iterable[ParsedCitation], seen: list[SourceRange], index: SourceIndex,
                    texts: dict[str, str] | None = None, workbooks: Workbooks | None = None) -> list[Citation]:
    """Check each citation against the documents (``index``) and what the run's models saw
    (``seen``); with ``texts`` (name → text) a verified citation carries the quoted lines, and a
    spreadsheet's rows can be checked (``workbooks``: the sheets of ``texts``, built when not given)."""
    if workbooks is None:
        workbooks = Workbooks(texts)
    out: list[Citation] = []
    for p in parsed:
        name = _resolve_name(p.document, index.names)
        if name is None:
            if p.sheet is not None:
                out.append(Citation(p.raw, p.document, None, None, None, False, "no such document",
                                    sheet=p.sheet, start_row=p.start, end_row=p.end))
                continue
            out.append(Citation(p.raw, p.document, None if p.pages else p.start,
                                None if p.pages else p.end, p.start if p.pages else None, False,
                                "no such document"))
            continue
        n_lines = index.lines_of(name)
        page: int | None = None
        end_page: int | None = None
        sheet: str | None = None
        rows: tuple[int | None, int | None] = (None, None)
        if p.sheet is not None:
            got = _sheet_lines(p, name, workbooks, n_lines, texts is not None)
            if isinstance(got, Citation):
                out.append(got)
                continue
            a, b, sheet = got
            rows = (p.start, p.end)
            page, end_page = index.page_for(name, a), index.page_for(name, b)
        elif p.pages:
            pages = index.pages_of(name)
            page, end_page = p.start, p.end
            if not pages:
                out.append(Citation(p.raw, name, None, None, page, False,
                                    "not a document with pages; cite lines, e.g. "
                                    f"[{name}:L1-L{min(n_lines, 5)}]", end_page=end_page))
                continue
            if p.end > len(pages):
                out.append(Citation(p.raw, name, None, None, page, False,
                                    f"page beyond the end (file has {len(pages)} "
                                    f"page{'s' if len(pages) != 1 else ''})", end_page=end_page))
                continue
            a = pages[p.start - 1]
            b = pages[p.end] - 1 if p.end < len(pages) else n_lines
        else:
            a, b = p.start, p.end
            if a < 1 or b > n_lines:
                out.append(Citation(p.raw, name, a, b, None, False,
                                    f"line range beyond the end (file has {n_lines} "
                                    f"line{'s' if n_lines != 1 else ''})"))
                continue
            page, end_page = index.page_for(name, a), index.page_for(name, b)
            wb = workbooks.get(name)
            parts = wb.split(a, b) if wb is not None else []
            if len(parts) == 1:                 # lines inside one sheet: say which rows they are
                sheet, rows = parts[0][0].name, (parts[0][3], parts[0][4])
        if not _overlaps(name, a, b, seen):
            out.append(Citation(p.raw, name, a, b, page, False, "no model in this run saw these lines"
                                if sheet is None or p.sheet is None else "no model in this run saw these rows",
                                end_page=end_page, sheet=sheet, start_row=rows[0], end_row=rows[1]))
            continue
        text = _quote(texts[name], a, b) if texts is not None and name in texts else None
        out.append(Citation(p.raw, name, a, b, page, True, None, text, end_page=end_page, sheet=sheet,
                            start_row=rows[0], end_row=rows[1]))
    return out


def _sheet_lines(p: ParsedCitation, name: str, workbooks: Workbooks, n_lines: int,
                 have_texts: bool) -> tuple[int, int, str] | Citation:
    """The lines holding the cited rows of ``p`` (a sheet citation) and the sheet's name as the
    workbook spells it, or the unverified citation saying why there are none."""
    def fail(why: str, sheet: str | None = p.sheet) -> Citation:
        return Citation(p.raw, name, None, None, None, False, why, sheet=sheet, start_row=p.start,
                        end_row=p.end)
    assert p.sheet is not None
    wb = workbooks.get(name)
    if wb is None:
        if not have_texts:
            return fail("the rows cannot be checked without the document's text")
        return fail(f"{name} is not a spreadsheet (it has no sheets); cite lines, e.g. "
                    f"[{name}:L1-L{max(min(n_lines, 5), 1)}]")
    sheet = wb.find(p.sheet)
    if sheet is None:
        return fail(f"no sheet '{p.sheet}' in {name} (sheets: {', '.join(wb.names)})")
    if p.start < 1:
        return fail("rows count from 1 (there is no row 0)", sheet.name)
    if sheet.last_row is None:
        return fail(f"sheet {sheet.name} of {name} has no rows (it is empty)", sheet.name)
    if p.end > sheet.last_row:
        return fail(f"row {p.end} is past the last row {sheet.last_row} of {sheet.name}", sheet.name)
    lines = wb.lines_for(sheet, p.start, p.end)
    if lines is None:
        rows = f"row {p.start} is" if p.start == p.end else f"rows {p.start}–{p.end} are"
        return fail(f"{rows} empty in {sheet.name}", sheet.name)
    return lines[0], lines[1], sheet.name


# -- reading a trace ---------------------------------------------------------------------------

def _subtree(span: Span) -> Iterator[Span]:
    return span.walk()


def _run(trace: Trace, run_span: str | Span | None) -> Span | None:
    if isinstance(run_span, Span):
        return run_span
    if run_span is not None:
        return trace.get(run_span)
    runs = [r for r in trace.roots if r.kind == SpanKind.RUN]
    return runs[-1] if runs else None


def _ranges(value: Any) -> list[SourceRange]:
    out: list[SourceRange] = []
    for d in value if isinstance(value, list) else []:
        try:
            out.append(SourceRange.from_dict(d))
        except (KeyError, TypeError, ValueError):
            continue          # a hand-edited or foreign trace: skip what is not a range
    return out


def steps_for(trace: Trace, run_span: str | Span | None = None) -> list[tuple[Span, list[SourceRange]]]:
    """Each step of the run (any depth) whose model saw documents, with what it saw, in order."""
    run = _run(trace, run_span)
    if run is None:
        return []
    return [(s, _ranges(s.attributes[Attr.SOURCES])) for s in _subtree(run)
            if s is not run and s.kind != SpanKind.RUN and s.attributes.get(Attr.SOURCES)]


def sources_for(trace: Trace, run_span: str | Span | None = None) -> list[SourceRange]:
    """Per document the merged line ranges the run's models saw (``run_span``: the turn's run span
    or its id; default the last top-level run)."""
    return merge_by_sheet(r for _, rs in steps_for(trace, run_span) for r in rs)


def material_read_for(trace: Trace, run_span: str | Span | None = None) -> list[SourceRange]:
    """What the run's sub-calls saw (merged): listed under an answer that cites nothing."""
    return merge_by_sheet(r for s, rs in steps_for(trace, run_span) if s.kind == SpanKind.SUB_CALL
                          for r in rs)


def citations_for(trace: Trace, run_span: str | Span | None = None) -> list[Citation]:
    """The answer's citations, checked. Recorded ones (with quotes) when the run span has them;
    else (an old trace) computed from its answer and recorded sources, without the documents."""
    run = _run(trace, run_span)
    if run is None:
        return []
    recorded = run.attributes.get(Attr.CITATIONS)
    if isinstance(recorded, list):
        return [Citation.from_dict(d) for d in recorded if isinstance(d, dict)]
    answer = run.attributes.get(Attr.ANSWER)
    seen = sources_for(trace, run)
    ctx = run.attributes.get(Attr.CONTEXT)
    listed = [str(d.get("name")) for d in (ctx.get("documents") or [])
              if isinstance(d, dict)] if isinstance(ctx, dict) else []
    complete = isinstance(ctx, dict) and len(listed) == ctx.get("count")
    out: list[Citation] = []
    for p in parse_citations(str(answer) if answer is not None else None):
        names = listed or sorted({r.document for r in seen})
        name = _resolve_name(p.document, names) or _resolve_name(p.document, [r.document for r in seen])
        page = p.start if p.pages else None
        a, b = (None, None) if p.pages else (p.start, p.end)
        if p.sheet is not None:
            out.append(Citation(p.raw, name or p.document, None, None, None, False,
                                "no such document" if name is None and complete else
                                "sheet citations need the documents to check (this trace has no record)",
                                sheet=p.sheet, start_row=p.start, end_row=p.end))
        elif name is None:
            why = "no such document" if complete else "no model in this run saw this document"
            out.append(Citation(p.raw, p.document, a, b, page, False, why))
        elif p.pages or a is None or b is None:
            out.append(Citation(p.raw, name, a, b, page, False,
                                "page citations need the documents to check (this trace has no record)"))
        elif _overlaps(name, a, b, seen):
            out.append(Citation(p.raw, name, a, b, page, True, None))
        else:
            out.append(Citation(p.raw, name, a, b, page, False, "no model in this run saw these lines"))
    return out


def run_sources_attrs(trace: Trace, run_span: str, answer: str | None, index: SourceIndex,
                      texts: dict[str, str] | None, workbooks: Workbooks | None = None) -> dict[str, Any]:
    """What the engine records on a run span when it ends: ``Attr.SOURCES`` (merged), and
    ``Attr.CITATIONS`` (checked) or, for an answer without any, ``Attr.MATERIAL_READ``."""
    seen = sources_for(trace, run_span)
    cites = check_citations(parse_citations(answer), seen, index, texts, workbooks)
    attrs: dict[str, Any] = {Attr.SOURCES: [r.to_dict() for r in seen],
                             Attr.CITATIONS: [c.to_dict() for c in cites]}
    if answer is not None and not cites:
        attrs[Attr.MATERIAL_READ] = [r.to_dict() for r in material_read_for(trace, run_span)]
    return attrs


__all__ = ["MATERIAL_READ_LABEL", "Citation", "ParsedCitation", "check_citations", "citations_for",
           "material_read_for", "parse_citations", "run_sources_attrs", "sources_for", "steps_for"]
