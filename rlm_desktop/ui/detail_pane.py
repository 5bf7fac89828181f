"""Detail pane for the selected trace step: facts (model, tokens, cost, timings), then tabs with the
messages sent (role-labelled), the response, the highlighted code, stdout/stderr and the error.
Large payloads show a preview with "Show all"; every text has a copy button."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QPalette,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.trace import Attr, Span, SpanKind, Trace
from rlm_desktop.ui import fmt
from rlm_desktop.ui.highlighter import PygmentsHighlighter, ResponseHighlighter
from rlm_desktop.ui.icons import icon, status_icon
from rlm_desktop.ui.sources_view import sources_fact

# Each message in the Messages tab is shown up to this many characters until "Show all".
MESSAGE_PREVIEW_CHARS = 4_000
# The Sources fact lists this many ranges (the Attributes tab has them all).


def is_dark(palette: QPalette | None = None) -> bool:
    pal = palette or QGuiApplication.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < 128


class TextSection(QWidget):
    """A read-only text with Copy and, for large texts, a preview plus "Show all"."""

    def __init__(self, title: str, *, mono: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.edit = QPlainTextEdit()
        self.edit.setReadOnly(True)
        self.edit.setObjectName(f"detail_{title.lower().replace(' ', '_')}")
        self.edit.setAccessibleName(title)
        self.edit.setUndoRedoEnabled(False)
        if mono:
            self.edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
            self.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.note = QLabel()
        self.note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.show_all_btn = QPushButton("Show &all")
        self.show_all_btn.clicked.connect(self.show_all)
        self.copy_btn = QPushButton(icon("copy"), "&Copy")
        self.copy_btn.setToolTip(f"Copy the whole {title.lower()} to the clipboard")
        self.copy_btn.clicked.connect(self.copy)
        bar = QHBoxLayout()
        bar.addWidget(self.note, 1)
        bar.addWidget(self.show_all_btn)
        bar.addWidget(self.copy_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.edit, 1)
        lay.addLayout(bar)
        self._full = ""
        self._expanded = False
        self._highlight = ""
        self.highlighter: PygmentsHighlighter | None = None

    # The trace filter's text, marked where it occurs (extra selections: the syntax colours stay).
    MAX_MARKS = 1000

    def set_highlight(self, text: str) -> None:
        self._highlight = text
        self.apply_highlight()

    def apply_highlight(self) -> None:
        marks: list[QTextEdit.ExtraSelection] = []
        doc = self.edit.document()
        if self._highlight:
            fmt_ = QTextCharFormat()
            fmt_.setBackground(QColor(255, 214, 0, 160))
            fmt_.setFontWeight(QFont.Weight.Bold)
            cur = doc.find(self._highlight, 0)   # case-insensitive by default, like the filter
            while not cur.isNull() and len(marks) < self.MAX_MARKS:
                sel = QTextEdit.ExtraSelection()
                sel.cursor = cur  # type: ignore[attr-defined]
                sel.format = fmt_  # type: ignore[attr-defined]
                marks.append(sel)
                cur = doc.find(self._highlight, cur, QTextDocument.FindFlag(0))
        self.edit.setExtraSelections(marks)

    @property
    def highlight_count(self) -> int:
        return len(self.edit.extraSelections())

    @property
    def full_text(self) -> str:
        return self._full

    @property
    def truncated(self) -> bool:
        return not self._expanded and len(self._full) > fmt.PREVIEW_CHARS

    def set_text(self, text: str, *, keep_expanded: bool = False) -> None:
        if text == self._full:
            return
        self._expanded = keep_expanded and self._expanded
        self._full = text
        self._render()

    def show_all(self) -> None:
        self._expanded = True
        self._render()

    def _render(self) -> None:
        bar = self.edit.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        old = bar.value()
        n = len(self._full)
        if self.truncated:
            self.edit.setPlainText(self._full[: fmt.PREVIEW_CHARS])
            self.note.setText(f"Preview: {fmt.PREVIEW_CHARS:,} of {n:,} characters")
        else:
            self.edit.setPlainText(self._full)
            self.note.setText(f"{n:,} characters" if n > 500 else "")
        self.show_all_btn.setVisible(self.truncated)
        bar.setValue(bar.maximum() if at_end and old > 0 else old)
        self.apply_highlight()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self._full)


MESSAGE_HEAD = re.compile(r"^[A-Z_]+  \(message \d+ of \d+\)$")


class MessagesSection(TextSection):
    """The messages an llm_call sent, each headed by its role."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Messages", mono=False, parent=parent)
        self.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self._messages: list[dict[str, Any]] = []
        # Code in the messages (the model's replies) highlighted; a message head ends any fence a
        # shortened message left open.
        self.highlighter = ResponseHighlighter(self.edit.document(), dark=is_dark(), reset=MESSAGE_HEAD)

    def set_messages(self, messages: list[dict[str, Any]]) -> None:
        self._messages = messages
        self._expanded = False
        self._full = "\n\n".join(f"[{m.get('role', '?')}]\n{_content(m)}" for m in messages)
        self._render()

    def _render(self) -> None:
        self.edit.clear()
        cur = self.edit.textCursor()
        head = QTextCharFormat()
        head.setFontWeight(QFont.Weight.Bold)
        head.setForeground(self.palette().color(QPalette.ColorRole.Link))
        body = QTextCharFormat()
        cut = 0
        for i, m in enumerate(self._messages):
            role = str(m.get("role", "?"))
            text = _content(m)
            if not self._expanded and len(text) > MESSAGE_PREVIEW_CHARS:
                text = text[:MESSAGE_PREVIEW_CHARS] + f"\n[… {len(text) - MESSAGE_PREVIEW_CHARS:,} more characters]"
                cut += 1
            if i:
                cur.insertBlock()
            cur.insertText(f"{role.upper()}  (message {i + 1} of {len(self._messages)})", head)
            cur.insertBlock()
            cur.insertText(text, body)
        self.edit.moveCursor(QTextCursor.MoveOperation.Start)
        self.show_all_btn.setVisible(cut > 0)
        self.note.setText(f"{len(self._messages)} messages" + (f", {cut} shortened" if cut else ""))
        self.apply_highlight()

    @property
    def truncated(self) -> bool:
        return False


def _content(m: dict[str, Any]) -> str:
    c = m.get("content")
    if isinstance(c, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in c)
    return "" if c is None else str(c)


class DetailPane(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("detailPane")
        self._span: Span | None = None
        self._trace: Trace | None = None
        self._live = False

        self.title = QLabel("Select a step in the trace to see its detail.")
        self.title.setObjectName("detailTitle")
        self.title.setWordWrap(True)
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.1)
        self.title.setFont(f)
        self.status_icon = QLabel()

        self.facts = QFormLayout()
        self.facts.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fact_labels: dict[str, QLabel] = {}
        for key in ("Kind", "Status", "Model", "Tokens", "Cost", "Timing", "Details", "Sources"):
            lbl = QLabel()
            lbl.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lbl.setWordWrap(True)
            self.fact_labels[key] = lbl
            self.facts.addRow(key + ":", lbl)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("detailTabs")
        self.messages = MessagesSection()
        self.prompt = TextSection("Prompt", mono=False)
        self.prompt.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.response = TextSection("Response", mono=False)
        self.response.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.response.highlighter = ResponseHighlighter(self.response.edit.document(), dark=is_dark())
        self.code = TextSection("Code")
        self.code.highlighter = PygmentsHighlighter(self.code.edit.document(), dark=is_dark())
        self.stdout = TextSection("Stdout")
        self.stderr = TextSection("Stderr")
        self.error = TextSection("Error", mono=False)
        self.error.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.answer = TextSection("Answer", mono=False)
        self.answer.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.raw = TextSection("Attributes")
        self.sections = [self.messages, self.prompt, self.response, self.code, self.stdout,
                         self.stderr, self.error, self.answer, self.raw]
        for s in self.sections:
            self.tabs.addTab(s, s.title)

        head = QHBoxLayout()
        head.addWidget(self.status_icon)
        head.addWidget(self.title, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(head)
        lay.addLayout(self.facts)
        lay.addWidget(self.tabs, 1)
        self.show_span(None, None)

    def set_highlight(self, text: str) -> None:
        """Mark ``text`` (the trace filter's text) wherever it occurs in the step's texts."""
        for section in self.sections:
            section.set_highlight(text)

    def update_palette(self) -> None:
        for section in (self.code, self.response, self.messages):
            if section.highlighter is not None:
                section.highlighter.set_dark(is_dark())

    @property
    def span(self) -> Span | None:
        return self._span

    def show_span(self, span: Span | None, trace: Trace | None, *, live: bool = False) -> None:
        same = span is not None and self._span is span
        self._span, self._trace, self._live = span, trace, live
        for i in range(self.tabs.count()):
            self.tabs.setTabVisible(i, False)
        if span is None:
            self.title.setText("Select a step in the trace to see its detail.")
            self.status_icon.clear()
            for lbl in self.fact_labels.values():
                lbl.setText("")
            for key in self.fact_labels:
                self._row_visible(key, False)
            return
        a = span.attributes
        status = fmt.span_status(span, live)
        self.title.setText(fmt.one_line(fmt.span_label(span), 160))
        self.status_icon.setPixmap(status_icon(status).pixmap(20, 20))
        self._set("Kind", f"{span.kind}  ·  id {span.id}" + (f"  ·  depth {a[Attr.DEPTH]}"
                                                              if a.get(Attr.DEPTH) is not None else ""))
        reason = a.get(Attr.STOP_REASON)
        self._set("Status", fmt.STATUS_LABELS.get(status, status)
                  + (f"  ({reason})" if reason else "") + " — " + fmt.STATUS_EXPLANATIONS.get(status, ""))
        model = a.get(Attr.MODEL)
        models = a.get(Attr.MODELS)
        if not model and isinstance(models, dict):
            model = f"root {models.get('root')}, sub {models.get('sub')}"
        if model and a.get(Attr.PROVIDER):
            model = f"{model}  ({a[Attr.PROVIDER]})"
        if a.get(Attr.DEMO):
            model = f"{model}  — offline demo, no model" if model else "offline demo, no model"
        self._set("Model", str(model or ""))
        if Attr.INPUT_TOKENS in a or Attr.OUTPUT_TOKENS in a:
            est = " (estimated)" if a.get(Attr.TOKENS_ESTIMATED) else ""
            self._set("Tokens", f"input {fmt.fmt_int(a.get(Attr.INPUT_TOKENS, 0))}, cached "
                                f"{fmt.fmt_int(a.get(Attr.CACHED_TOKENS, 0))}, output "
                                f"{fmt.fmt_int(a.get(Attr.OUTPUT_TOKENS, 0))}{est}")
        else:
            self._set("Tokens", "")
        self._set("Cost", fmt.fmt_cost(a))
        started = time.strftime("%H:%M:%S", time.localtime(span.start))
        ended = time.strftime("%H:%M:%S", time.localtime(span.end)) if span.end else "—"
        self._set("Timing", f"started {started}, ended {ended}, took {fmt.span_duration(span, live) or '—'}")
        details = []
        if a.get(Attr.ATTEMPTS) and a.get(Attr.ATTEMPTS) != 1:
            details.append(f"{a[Attr.ATTEMPTS]} attempts")
        for r in a.get(Attr.RETRIES) or []:
            details.append(f"retry after: {r.get('error')} (waited {r.get('wait_s')} s)")
        if a.get(Attr.CACHE_HIT):
            details.append("answered from the memo cache")
        if a.get(Attr.SANDBOX_RESTARTED):
            details.append("the REPL was restarted (variables lost)")
        if a.get(Attr.HISTORY_NOTE):
            details.append(str(a[Attr.HISTORY_NOTE]))
        iso = a.get(Attr.ISOLATION)
        if isinstance(iso, dict):
            details.append(f"sandbox isolation: {iso.get('level')} — {iso.get('summary', '')}")
        if a.get(Attr.WARNING):
            details.append(str(a[Attr.WARNING]))
        if a.get(Attr.FINISH_REASON) and a.get(Attr.FINISH_REASON) != "stop":
            details.append(f"finish reason: {a[Attr.FINISH_REASON]}")
        self._set("Details", "\n".join(details))
        self._set("Sources", sources_fact(a.get(Attr.SOURCES)))

        first_visible = None
        if span.kind == SpanKind.LLM_CALL and trace is not None:
            msgs = trace.messages_for(span.id)
            if not same or len(msgs) != len(self.messages._messages):
                self.messages.set_messages(msgs)
            first_visible = first_visible or self._show(self.messages, bool(msgs))
        first_visible = self._text(self.prompt, a.get(Attr.PROMPT), same) or first_visible
        resp = self._text(self.response, a.get(Attr.RESPONSE), same)
        code = self._text(self.code, a.get(Attr.CODE), same)
        out = self._text(self.stdout, a.get(Attr.STDOUT), same)
        self._text(self.stderr, a.get(Attr.STDERR), same)
        err = self._text(self.error, a.get(Attr.ERROR), same)
        ans = self._text(self.answer, a.get(Attr.ANSWER) or a.get(Attr.QUERY), same)
        if span.kind == SpanKind.RUN and a.get(Attr.QUERY) and not a.get(Attr.ANSWER):
            self.tabs.setTabText(self.tabs.indexOf(self.answer), "Query")
        else:
            self.tabs.setTabText(self.tabs.indexOf(self.answer), "Answer")
        self.raw.set_text(json.dumps(_raw_attrs(a), indent=2, ensure_ascii=False, default=str),
                          keep_expanded=same)
        self._show(self.raw, True)
        if not same:
            preferred = [err if span.status is not None and str(span.status) != "ok" else None,
                         code, resp, ans, out, first_visible]
            for w in preferred:
                if w is not None:
                    self.tabs.setCurrentWidget(w)
                    break
            else:
                self.tabs.setCurrentWidget(self.raw)

    def _row_visible(self, key: str, on: bool) -> None:
        self.facts.setRowVisible(self.fact_labels[key], on)

    def _set(self, key: str, text: str) -> None:
        self.fact_labels[key].setText(text)
        self._row_visible(key, bool(text))

    def _show(self, section: TextSection, on: bool) -> TextSection | None:
        self.tabs.setTabVisible(self.tabs.indexOf(section), on)
        return section if on else None

    def _text(self, section: TextSection, value: Any, same: bool) -> TextSection | None:
        if value in (None, ""):
            return self._show(section, False)
        section.set_text(value if isinstance(value, str) else json.dumps(value, indent=2, default=str),
                         keep_expanded=same)
        return self._show(section, True)


def _raw_attrs(a: dict[str, Any]) -> dict[str, Any]:
    """Attributes for the raw view, long strings and message lists shortened."""
    out: dict[str, Any] = {}
    for k, v in a.items():
        if k == Attr.MESSAGES and isinstance(v, list):
            out[k] = f"[{len(v)} new messages — see the Messages tab]"
        elif isinstance(v, str) and len(v) > 300:
            out[k] = v[:300] + f"… [{len(v):,} characters]"
        else:
            out[k] = v
    return out
