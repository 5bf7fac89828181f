"""Plain-text formatting shared by the panes: durations, tokens, costs, span statuses and previews."""

from __future__ import annotations

import time
from typing import Any

from rlm_desktop.core.status import SPAN_STATUS_EXPLANATIONS, SPAN_STATUS_WORDS
from rlm_desktop.core.trace import Attr, Span, SpanKind

# Text longer than this is shown as a preview with a "Show all" action.
PREVIEW_CHARS = 20_000

# One word per span status and its explanation, from core (the CLI and exports use the same).
STATUS_LABELS = SPAN_STATUS_WORDS
STATUS_EXPLANATIONS = SPAN_STATUS_EXPLANATIONS


def span_status(span: Span, live: bool) -> str:
    """running / incomplete (a span that never ended in a saved trace) / the status value."""
    if span.end is None:
        return "running" if live else "incomplete"
    return str(span.status.value if span.status is not None else "ok")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}:{s:02d} min"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d} h"


def span_duration(span: Span, live: bool) -> str:
    if span.end is not None:
        return fmt_duration(span.duration)
    if live:
        return fmt_duration(max(0.0, time.time() - span.start)) + "…"
    return "—"


def fmt_int(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) else ""


def fmt_tokens(attrs: dict[str, Any]) -> str:
    """"1,234 / 56" (input / output); "~" marks estimates; "" when the span has no usage."""
    tin = attrs.get(Attr.INPUT_TOKENS)
    tout = attrs.get(Attr.OUTPUT_TOKENS)
    if tin is None and tout is None:
        return ""
    mark = "~" if attrs.get(Attr.TOKENS_ESTIMATED) else ""
    return f"{mark}{fmt_int(tin or 0)} / {mark}{fmt_int(tout or 0)}"


def fmt_usd(value: float | None, known: bool = True) -> str:
    """"$0.0123"; "unknown" when the price is unknown (never shown as 0)."""
    if value is None or not known:
        return "unknown" if not value else f"≥ ${value:.4f} (part unknown)"
    if value == 0:
        return "$0"
    if value < 0.0001:
        return "< $0.0001"
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def fmt_cost(attrs: dict[str, Any]) -> str:
    if Attr.COST_USD not in attrs:
        return ""
    value = attrs.get(Attr.COST_USD)
    known = attrs.get(Attr.COST_KNOWN, value is not None)
    if value is None:
        return "unknown"
    text = fmt_usd(value, bool(known))
    # Priced from estimated tokens (the server reported no usage): an estimate too.
    return "~" + text if value and attrs.get(Attr.TOKENS_ESTIMATED) else text


def one_line(text: Any, limit: int = 80) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


_BOILERPLATE = ("try:", "else:", "finally:", "pass")


def cell_hint(code: str) -> str:
    """What a code cell does, in one line: its leading comment when it has one (models state their
    intent there), else its first line that is not an import, a comment or ``try:``."""
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].startswith("#") and lines[0].lstrip("#").strip():
        return lines[0].lstrip("#").strip()
    for ln in lines:
        if ln.startswith(("#", "import ", "from ")) or ln in _BOILERPLATE:
            continue
        return ln
    return lines[0]


def span_label(span: Span) -> str:
    """The name shown in the tree: the span's name plus a short hint of what it did."""
    a = span.attributes
    kind = span.kind
    hint = ""
    if kind == SpanKind.SUB_CALL:
        idx = a.get(Attr.BATCH_INDEX)
        name = f"{span.name} [{idx}]" if idx is not None and "[" not in span.name else span.name
        if a.get(Attr.CACHE_HIT):
            name += " (cached)"
        prompt = a.get(Attr.PROMPT)
        return f"{name}: {one_line(prompt, 60)}" if prompt else name
    if kind == SpanKind.CODE_CELL:
        hint = one_line(cell_hint(str(a.get(Attr.CODE) or "")), 60)
    elif kind == SpanKind.FINAL:
        hint = one_line(a.get(Attr.ANSWER) or "", 60)
    elif kind == SpanKind.RUN:
        q = a.get(Attr.QUERY)
        hint = one_line(q, 60) if q else ""
    return f"{span.name}: {hint}" if hint else span.name


# Attributes searched by the trace filter (names always are).
SEARCHED_ATTRS = (Attr.PROMPT, Attr.RESPONSE, Attr.CODE, Attr.STDOUT, Attr.STDERR, Attr.ERROR,
                  Attr.ANSWER, Attr.QUERY, Attr.MODEL)


def span_search_text(span: Span) -> str:
    parts = [span.name, str(span.kind)]
    a = span.attributes
    for key in SEARCHED_ATTRS:
        v = a.get(key)
        if v:
            parts.append(str(v))
    for m in a.get(Attr.MESSAGES) or ():
        if isinstance(m, dict):
            parts.append(str(m.get("content") or ""))
    return "\n".join(parts).lower()
