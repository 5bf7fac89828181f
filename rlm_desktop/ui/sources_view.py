"""Where an answer came from, in the window: the answer's citations made into in-app links
(``rlmcite:N``, handled by the app; nothing external is ever loaded) and the *Sources* list under
the answer — each cited source (verified ✓ / unverified ⚠ with the reason in words) and the
material the run's models read without citing it, each with the steps that saw it.

The data comes from :mod:`rlm_desktop.core.citations` (Qt-free); this module only shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from rlm_desktop.core.citations import (
    Citation,
    citations_for,
    material_read_for,
    parse_citations,
    sources_for,
    steps_for,
)
from rlm_desktop.core.sources import SourceRange
from rlm_desktop.core.trace import Span, SpanKind, Trace

CITE_SCHEME = "rlmcite"
VERIFIED_MARK = "✓"
UNVERIFIED_MARK = "⚠"
READ_LABEL = "Read by the models, not cited"
# Same bracket the parser reads (core.citations); a bracket holding no citation is left alone.
_BRACKET = re.compile(r"\[([^\[\]\n]{1,500})\]")
# Code (fenced blocks, inline spans): a citation there stays text (a link would show as its syntax).
_CODE = re.compile(r"^ {0,3}(```|~~~).*?(?:^ {0,3}\1[^\n]*$|\Z)|(`+)[^`].*?\2", re.MULTILINE | re.DOTALL)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


@dataclass(frozen=True, slots=True)
class SourceTarget:
    """A place to show in the document preview: ``document`` (as cited or recorded), lines
    ``start_line``..``end_line`` (None when only a page is known), ``page``; ``cited`` when it is
    an answer's citation; ``sheet`` and its rows in a spreadsheet (lines unknown: the sheet's header)."""

    document: str
    start_line: int | None
    end_line: int | None
    page: int | None = None
    cited: bool = False
    sheet: str | None = None
    start_row: int | None = None
    end_row: int | None = None

    @classmethod
    def of(cls, c: Citation) -> SourceTarget:
        return cls(c.document, c.start_line, c.end_line, c.page, cited=True, sheet=c.sheet,
                   start_row=c.start_row, end_row=c.end_row)

    @classmethod
    def of_range(cls, r: SourceRange) -> SourceTarget:
        return cls(r.document, r.start_line, r.end_line, r.page, sheet=r.sheet, start_row=r.start_row,
                   end_row=r.end_row)


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def link_citations(answer: str, cites: list[Citation]) -> str:
    """``answer`` (Markdown) with each citation made a link ``rlmcite:N`` (N: its index in
    ``cites``, in the order the parser finds them) and an unverified one followed by
    "⚠ unverified". The link text is the citation as written, brackets included."""
    if not cites:
        return answer
    out: list[str] = []
    last = 0
    n = 0
    code = [c.span() for c in _CODE.finditer(answer)]
    for m in _BRACKET.finditer(answer):
        parts = parse_citations(m.group(0))
        if not parts or n >= len(cites):
            continue
        if any(a <= m.start() < b for a, b in code):
            n += len(parts)          # counted (the parser saw it) but left as code: shown as written
            continue
        links: list[str] = []
        for p in parts:
            if n >= len(cites):
                break
            c = cites[n]
            text = p.raw if p.raw.startswith("[") else f"[{p.raw}]"
            link = f"[{_md_escape(text)}]({CITE_SCHEME}:{n})"
            if not c.verified:
                link += f" {UNVERIFIED_MARK} *unverified*"
            links.append(link)
            n += 1
        out.append(answer[last:m.start()])
        out.append(" ".join(links))
        last = m.end()
    out.append(answer[last:])
    return "".join(out)


def cite_index(href: str) -> int | None:
    """N of an ``rlmcite:N`` link, else None (any other link is not the app's)."""
    scheme, _, rest = href.partition(":")
    if scheme != CITE_SCHEME or not rest.isdigit():
        return None
    return int(rest)


def step_label(span: Span) -> str:
    """How a step reads in the Sources list: its kind and name."""
    kind = str(span.kind.value if isinstance(span.kind, SpanKind) else span.kind).replace("_", "-")
    return f"{kind}: {span.name}" if span.name and span.name != kind else kind


def range_text(r: SourceRange) -> str:
    """``L3–L4`` (``p.2 L40–L52``; in a spreadsheet ``Sales R12–R18``): a range without its document."""
    return r.label().removeprefix(r.document).strip()


def ranges_text(ranges: list[SourceRange]) -> str:
    """``L3–L4, L20–L31`` (of one document; a spreadsheet's ``Sales R12–R18, Costs R2``)."""
    return ", ".join(range_text(r) for r in ranges)


def saw_text(ranges: list[SourceRange]) -> str:
    """``saw b.txt L3–L4, book.xlsx Sales R12–R18`` (what a step's model saw, per document)."""
    by_doc: dict[str, list[SourceRange]] = {}
    for r in ranges:
        by_doc.setdefault(r.document, []).append(r)
    return "saw " + "; ".join(f"{doc} {ranges_text(rs)}" for doc, rs in by_doc.items()) if by_doc else ""


SOURCES_SHOWN = 12        # ranges named in the detail pane's Sources fact (the rest counted)
SOURCES_IN_TREE = 2       # ranges named after a step's name in the trace tree


def sources_fact(value: Any, shown: int = SOURCES_SHOWN) -> str:
    """What a step's model saw of the documents (``Attr.SOURCES``), as a person reads it:
    ``saw contracts/acme.md L120–L188; book.xlsx Sales R12–R18`` (the first ``shown`` ranges,
    the rest counted)."""
    ranges = []
    for d in value if isinstance(value, list) else []:
        try:
            ranges.append(SourceRange.from_dict(d))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue          # a hand-edited or foreign trace: what is not a range is not shown
    more = len(ranges) - shown
    text = saw_text(ranges[:shown])
    return f"{text} … and {more} more range{'s' if more != 1 else ''}" if more > 0 else text


class SourcesView(QTreeWidget):
    """The *Sources* list of one run: "Cited" (each citation, ✓ verified or ⚠ unverified with why)
    and "Read by the models, not cited" (per document the lines read), each with the steps that saw
    it. Activating a source emits ``source_activated(SourceTarget)``; a step ``step_activated(Span)``."""

    source_activated = Signal(object)     # SourceTarget
    step_activated = Signal(object)       # Span

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("answerSources")
        self.setAccessibleName("Sources")
        self.setHeaderLabels(["Sources"])
        self.setRootIsDecorated(True)
        self.setUniformRowHeights(True)
        self.setWordWrap(False)
        self.setToolTip("Where the answer came from. Activate a source to show it in the document "
                        "preview; a step to select it in the trace.")
        self.itemActivated.connect(self._on_item)
        self.itemClicked.connect(self._on_item)
        self.cites: list[Citation] = []

    def set_run(self, trace: Trace | None, run: Span | str | None) -> None:
        """Show the sources of ``run`` (a run span or its id) in ``trace``; None clears."""
        self.clear()
        self.cites = []
        if trace is None or run is None:
            self.setHeaderLabels(["Sources"])
            return
        self.cites = citations_for(trace, run)
        steps = steps_for(trace, run)
        seen = sources_for(trace, run)
        if self.cites:
            ok = sum(c.verified for c in self.cites)
            head = QTreeWidgetItem(self, [f"Cited ({ok} of {len(self.cites)} verified)"])
            for c in self.cites:
                if c.verified:
                    text = f"{VERIFIED_MARK} {c.label()} — verified"
                else:
                    text = f"{UNVERIFIED_MARK} {c.label()} — unverified: {c.why or 'not checked'}"
                it = QTreeWidgetItem(head, [text])
                it.setData(0, Qt.ItemDataRole.UserRole, SourceTarget.of(c))
                it.setToolTip(0, f"{text}: a model in this run saw these lines"
                              + (f"\n\n{c.text}" if c.text else "") if c.verified else text)
                if c.start_line is not None and c.end_line is not None:
                    self._add_steps(it, steps, c.document, c.start_line, c.end_line)
            head.setExpanded(True)
        read = seen if self.cites else (material_read_for(trace, run) or seen)
        if read:
            by_doc: dict[str, list[SourceRange]] = {}
            for r in read:
                by_doc.setdefault(r.document, []).append(r)
            head = QTreeWidgetItem(self, [f"{READ_LABEL} ({len(by_doc)} document"
                                          f"{'s' if len(by_doc) != 1 else ''})"])
            head.setToolTip(0, "Passages the run's models saw. These are not citations: the answer "
                               "does not claim them as its source.")
            for doc, rs in by_doc.items():
                it = QTreeWidgetItem(head, [f"{doc} {ranges_text(rs)} — read, not cited"])
                it.setData(0, Qt.ItemDataRole.UserRole, SourceTarget.of_range(rs[0]))
                it.setToolTip(0, f"the run's models {saw_text(rs)} (not a citation)")
                for r in rs:
                    self._add_steps(it, steps, doc, r.start_line, r.end_line)
            head.setExpanded(True)
        if not self.cites and not read:
            QTreeWidgetItem(self, ["No citations, and no model in this run read the documents."])
        n = len(self.cites)
        self.setHeaderLabels([f"Sources — {n} citation{'s' if n != 1 else ''}" if n else "Sources"])

    def _add_steps(self, item: QTreeWidgetItem, steps: list[tuple[Span, list[SourceRange]]],
                   doc: str, a: int, b: int) -> None:
        have = {item.child(i).data(0, Qt.ItemDataRole.UserRole).id for i in range(item.childCount())}
        for span, rs in steps:
            hit = [r for r in rs if r.document == doc and r.start_line <= b and a <= r.end_line]
            if not hit or span.id in have:
                continue
            have.add(span.id)
            child = QTreeWidgetItem(item, [f"seen by {step_label(span)} ({ranges_text(hit)})"])
            child.setData(0, Qt.ItemDataRole.UserRole, span)
            child.setToolTip(0, f"This step's model {saw_text(hit)}. Select the step in the trace.")

    def items(self) -> list[QTreeWidgetItem]:
        """Every row, depth first (for tests and accessibility checks)."""
        out: list[QTreeWidgetItem] = []

        def walk(it: QTreeWidgetItem) -> None:
            out.append(it)
            for i in range(it.childCount()):
                walk(it.child(i))
        for i in range(self.topLevelItemCount()):
            walk(self.topLevelItem(i))
        return out

    def _on_item(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        data = item.data(0, Qt.ItemDataRole.UserRole)
        if isinstance(data, SourceTarget):
            self.source_activated.emit(data)
        elif isinstance(data, Span):
            self.step_activated.emit(data)


__all__ = ["CITE_SCHEME", "READ_LABEL", "SourceTarget", "SourcesView", "cite_index", "link_citations",
           "range_text", "ranges_text", "saw_text", "step_label"]
