"""Exports of a trace: one JSON document, a Markdown report, a self-contained HTML report, OTLP JSON.

Exports hold only trace content (traces never hold API keys; a provider name or error text that
holds a URL is shown with the URL's credentials masked, also from traces of older versions). Spans that never ended are marked
*incomplete* in every format. The HTML report needs no network: inline CSS, no scripts, escaped text.

Every walk over the span tree is iterative, so a trace nested thousands deep (a crafted file, a long
nested run) exports like any other. The JSON document and the HTML report keep the tree nested up
to :data:`MAX_NESTING` levels; deeper steps are listed, in order, under their ancestor at the last
nested level, each naming its real parent and depth (JSON readers such as Python's ``json`` or
serde_json stop at a few hundred levels, and a browser lays out thousands of nested boxes as a
column one character wide).
"""

from __future__ import annotations

import gc
import hashlib
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_desktop import __version__
from rlm_desktop.core.paths import write_text_atomic
from rlm_desktop.core.redact import mask_urls_in
from rlm_desktop.core.totals import Totals, Usage, _int, subtree_usage, totals
from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace

if TYPE_CHECKING:
    from rlm_desktop.core.citations import Citation

FORMATS = ("json", "markdown", "html", "otlp")
_SUFFIXES = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".html": "html",
             ".htm": "html", ".otlp": "otlp"}
INCOMPLETE = "incomplete"
# Span levels kept nested in the JSON and HTML exports. A real run nests about 4 levels per
# rlm_query depth (run > iteration > cell > sub-call > run …), so max_depth 12 still fits; below it
# a JSON document stays within ~110 levels (serde_json's default limit is 128, Python's ~1000).
MAX_NESTING = 50


class ExportError(ValueError):
    """An export was asked for in a format we do not have, or the target cannot be written."""


def export_trace(trace: Trace, fmt: str) -> str:
    """The trace as text in ``fmt`` ("json", "markdown", "html" or "otlp")."""
    fmt = fmt.lower()
    if fmt == "md":
        fmt = "markdown"
    fn = {"json": to_json, "markdown": to_markdown, "html": to_html, "otlp": to_otlp}.get(fmt)
    if fn is None:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    # Millions of short-lived dicts would trigger the cyclic GC again and again (3x slower on a
    # 100,000-span trace); they make no cycles, so it waits until the export is built.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(trace)
    finally:
        if gc_was_enabled:
            gc.enable()


def format_for_path(path: Path) -> str:
    """The export format a file name asks for (``.otlp.json`` is OTLP; ``.json`` is plain JSON)."""
    name = path.name.lower()
    if name.endswith((".otlp.json", ".otel.json")):
        return "otlp"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(f"cannot tell the export format from '{path.name}': use a name ending in "
                          f".json, .md, .html or .otlp.json, or give the format explicitly")
    return fmt


def write_export(trace: Trace, path: Path, fmt: str | None = None) -> Path:
    """Write an export next to its final name, then move it into place (never a half-written file)."""
    path = Path(path)
    return write_text_atomic(path, export_trace(trace, fmt or format_for_path(path)))


# -- facts shared by every format ---------------------------------------------------------------

# Totals come from the one totals function (core/totals.py).


def status_label(span: Span) -> str:
    """"ok" / "error" / … for an ended span, "incomplete" for one that never ended."""
    return INCOMPLETE if span.running else str(span.status or SpanStatus.OK)


def _root_run(trace: Trace) -> Span | None:
    for r in trace.roots:
        if r.kind == SpanKind.RUN:
            return r
    return trace.roots[0] if trace.roots else None


def run_query(trace: Trace) -> str:
    root = _root_run(trace)
    q = root.attributes.get(Attr.QUERY) if root else None
    return str(q if q is not None else trace.header.get("query", ""))


def run_answer(trace: Trace) -> str | None:
    """The final answer of the top-level run: its own ANSWER, else its last depth-0 final span."""
    root = _root_run(trace)
    if root is None:
        return None
    if root.attributes.get(Attr.ANSWER) is not None:
        return str(root.attributes[Attr.ANSWER])
    answer = None
    stack = list(root.children)
    while stack:
        s = stack.pop(0)
        if s.kind == SpanKind.FINAL and s.attributes.get(Attr.ANSWER) is not None:
            answer = str(s.attributes[Attr.ANSWER])
        elif s.kind == SpanKind.ITERATION:
            stack.extend(s.children)
    return answer


def _fmt_duration(span: Span) -> str:
    d = span.duration
    if d is None:
        return "—"
    return f"{d * 1000:.0f} ms" if d < 1 else f"{d:.2f} s"


def _fmt_cost(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"${v:.4f}" if v < 1 else f"${v:.2f}"
    return "unknown"


def _totals_rows(t: Totals) -> list[tuple[str, str]]:
    """The report's totals table, shared by the Markdown and HTML exports."""
    est = (f" (estimated for {t.estimated_calls} of {t.llm_calls} calls: no usage reported)"
           if t.tokens_estimated else "")
    cost = _fmt_cost(t.cost_usd) if t.llm_calls > t.cost_unknown_calls else "unknown"
    if not t.cost_known:
        cost += f" (price unknown for {t.cost_unknown_calls} calls)"
    if t.tokens_estimated and t.cost_usd:
        cost += " (estimated: priced from estimated tokens)"
    return [("Iterations", f"{t.iterations}"), ("Model calls", f"{t.llm_calls}"),
            ("Code cells", f"{t.code_cells}"), ("Sub-calls", f"{t.sub_calls}"),
            ("Input tokens", f"{t.input_tokens:,} ({t.cached_tokens:,} cached){est}"),
            ("Output tokens", f"{t.output_tokens:,}{est}"), ("Cost", cost),
            ("Errors / timeouts", f"{t.errors}"), ("Incomplete steps", f"{t.incomplete_spans}")]


def _walk(span: Span, depth: int = 0) -> Iterator[tuple[Span, int]]:
    stack = [(span, depth)]
    while stack:
        s, d = stack.pop()
        yield s, d
        stack.extend((c, d + 1) for c in reversed(s.children))


# Fields that may name a server by its URL (the CLI's --base-url) or quote one in an error text.
_URL_FIELDS = frozenset({Attr.PROVIDER, "sub_provider", "base_url", Attr.ERROR, Attr.WARNING})


def _masked(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with credentials inside URLs masked in the fields that may hold a server URL."""
    hits = [k for k in _URL_FIELDS if isinstance(attrs.get(k), str) and "://" in attrs[k]]
    retries = attrs.get(Attr.RETRIES)
    if not hits and not (isinstance(retries, list) and retries):
        return attrs
    out = dict(attrs)
    for k in hits:
        out[k] = mask_urls_in(out[k])
    if isinstance(retries, list):
        out[Attr.RETRIES] = [{**r, "error": mask_urls_in(r["error"])}
                             if isinstance(r, dict) and isinstance(r.get("error"), str) else r
                             for r in retries]
    return out


# -- JSON --------------------------------------------------------------------------------------

def _span_tree(span: Span, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": span.id, "parent": span.parent.id if span.parent is not None else None,
        "depth": depth, "kind": str(span.kind), "name": span.name, "status": status_label(span),
        "incomplete": span.running, "start": span.start, "end": span.end,
        "duration_s": None if span.duration is None else round(span.duration, 6),
        "attributes": _masked(span.attributes), "children": [],
    }
    return node


def _nested_tree(trace: Trace) -> tuple[list[dict[str, Any]], int]:
    """The span tree as nested nodes, iteratively, and the deepest level. Spans deeper than
    MAX_NESTING go into the children of their ancestor at level MAX_NESTING - 1, depth first."""
    roots: list[dict[str, Any]] = []
    deepest = 0
    stack: list[tuple[Span, int, list[dict[str, Any]]]] = [(r, 0, roots) for r in reversed(trace.roots)]
    while stack:
        s, d, host = stack.pop()
        node = _span_tree(s, d)
        host.append(node)
        if d > deepest:
            deepest = d
        kids_host = node["children"] if d < MAX_NESTING else host
        stack.extend((c, d + 1, kids_host) for c in reversed(s.children))
    return roots, deepest


def to_json(trace: Trace) -> str:
    """One JSON document: header, totals and the nested span tree (children in order)."""
    roots, deepest = _nested_tree(trace)
    # Indenting a flattened deep tree would make its deep steps mostly spaces (100 MB for 50,000
    # levels): such a document is written compact.
    indent = 1 if deepest < MAX_NESTING else None
    doc = {
        "format": "rlm-trace-export", "version": 1, "exported_by": f"rlm-desktop {__version__}",
        "header": _masked(trace.header),
        "query": run_query(trace), "answer": run_answer(trace),
        "status": status_label(_root_run(trace)) if trace.roots else INCOMPLETE,
        "totals": totals(trace).as_dict(),
        "truncated": trace.truncated, "skipped_lines": trace.skipped_lines,
        "notes": {"messages": "an llm_call's messages are those new since the call named in "
                              "history_from; follow that chain for the full conversation",
                  "incomplete": "spans with incomplete=true never ended (the run was cut short)",
                  "nesting": f"spans are nested at most {MAX_NESTING} levels deep; deeper spans are "
                             f"listed in depth-first order in the children of their ancestor at depth "
                             f"{MAX_NESTING - 1}: their 'parent' and 'depth' give their real place"},
        "spans": roots,
    }
    try:
        return json.dumps(doc, ensure_ascii=False, indent=indent, default=_json_default)
    except RecursionError:
        # An attribute value nested nearly as deep as a JSON reader accepts (a crafted file): say
        # so in place of that value rather than fail the whole export.
        for node in _iter_nodes(roots):
            try:
                json.dumps(node["attributes"], default=_json_default)
            except RecursionError:
                node["attributes"] = {"unexportable": "the attributes of this span are nested too "
                                                      "deeply to export as JSON"}
        return json.dumps(doc, ensure_ascii=False, indent=indent, default=_json_default)


def _iter_nodes(roots: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["children"])


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


# -- Markdown ----------------------------------------------------------------------------------

def _fence(text: str, lang: str = "") -> str:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip(chr(10))}\n{ticks}"


def _md_inline(text: Any) -> str:
    s = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        s = s.replace(ch, "\\" + ch)
    return s


def _usage(a: dict[str, Any]) -> str:
    parts = []
    if a.get(Attr.INPUT_TOKENS) is not None or a.get(Attr.OUTPUT_TOKENS) is not None:
        t = f"{_int(a.get(Attr.INPUT_TOKENS)):,} in / {_int(a.get(Attr.OUTPUT_TOKENS)):,} out tokens"
        if _int(a.get(Attr.CACHED_TOKENS)):
            t += f" ({_int(a.get(Attr.CACHED_TOKENS)):,} cached)"
        if a.get(Attr.TOKENS_ESTIMATED):
            t += " (estimated)"
        parts.append(t)
    if Attr.COST_USD in a:
        est = " (estimated)" if a.get(Attr.TOKENS_ESTIMATED) and a.get(Attr.COST_USD) else ""
        parts.append("cost " + _fmt_cost(a.get(Attr.COST_USD)) + est)
    if a.get(Attr.CACHE_HIT):
        parts.append("memo cache hit")
    return ", ".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False, default=_json_default)


def to_markdown(trace: Trace) -> str:
    """A readable report: query, answer, status, totals, then every iteration's calls and cells."""
    t = totals(trace)
    root = _root_run(trace)
    out: list[str] = ["# RLM Desktop run report", ""]
    out.append(f"**Query:** {_md_inline(run_query(trace))}")
    out.append("")
    if root is not None:
        st = status_label(root)
        line = f"**Status:** {st}"
        if root.attributes.get(Attr.STOP_REASON):
            line += f" — stopped by `{root.attributes[Attr.STOP_REASON]}`"
        if root.running:
            line += " — ⚠ the run never ended (the trace was cut short); incomplete steps are marked"
        out += [line, ""]
    answer = run_answer(trace)
    out += ["## Answer", "", _fence(answer, "text") if answer is not None else "_No final answer._", ""]
    out += _md_sources(trace, root)
    out += ["## Totals", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in _totals_rows(t)), ""]
    iso = trace.header.get("isolation")
    if iso:
        level = iso.get("level") if isinstance(iso, dict) else iso
        out += [f"Sandbox isolation: **{_md_inline(level)}**", ""]
    if trace.truncated or trace.skipped_lines:
        out += [f"> ⚠ The trace file was cut short or damaged ({trace.skipped_lines} unreadable lines); "
                "what follows is what could be recovered.", ""]
    out += ["## Steps", ""]
    for r in trace.roots:
        for s, depth in _walk(r):
            out += _md_span(trace, s, depth)
    return "\n".join(out).rstrip() + "\n"


def _md_span(trace: Trace, s: Span, depth: int) -> list[str]:
    a = s.attributes
    level = min(6, 3 + max(0, depth - 1))
    head = "#" * level
    mark = " ⚠ INCOMPLETE" if s.running else ("" if s.status is SpanStatus.OK else f" — {status_label(s)}")
    out: list[str] = []
    label = {SpanKind.RUN: "Run", SpanKind.ITERATION: "Iteration", SpanKind.LLM_CALL: "Model call",
             SpanKind.CODE_CELL: "Code cell", SpanKind.SUB_CALL: "Sub-call",
             SpanKind.FINAL: "Final answer"}.get(s.kind, f"Step ({s.kind})")  # type: ignore[call-overload]
    if s.kind == SpanKind.RUN and depth == 0:
        if s.running:
            out += ["_⚠ The run itself is incomplete: it never ended._", ""]
        if a.get(Attr.ERROR):
            out += [f"**Error:** {_md_inline(mask_urls_in(str(a[Attr.ERROR])))}", ""]
        return out
    out += [f"{head} {label}: {_md_inline(s.name)}{mark}", ""]
    facts = [f"duration {_fmt_duration(s)}"]
    if a.get(Attr.MODEL):
        facts.append(f"model `{_md_inline(a[Attr.MODEL])}`")
    if a.get(Attr.DEPTH):
        facts.append(f"depth {a[Attr.DEPTH]}")
    usage = _usage(a)
    if usage:
        facts.append(usage)
    out += ["_" + "; ".join(facts) + "_", ""]
    if s.running:
        out += ["> ⚠ This step never ended (the run was stopped or crashed before it finished).", ""]
    if s.kind == SpanKind.LLM_CALL:
        msgs = a.get(Attr.MESSAGES) or []
        if a.get(Attr.HISTORY_FROM):
            out += [f"Continues the conversation of call `{a[Attr.HISTORY_FROM]}`; "
                    f"new messages ({len(msgs)} of {a.get(Attr.MESSAGE_COUNT, '?')}):", ""]
        elif msgs:
            out += ["Messages sent:", ""]
        for m in msgs:
            role = m.get("role", "?") if isinstance(m, dict) else "?"
            content = _content_text(m.get("content", "")) if isinstance(m, dict) else str(m)
            out += [f"**{_md_inline(role)}:**", "", _fence(content, "text"), ""]
        if a.get(Attr.RESPONSE) is not None:
            out += ["**Response:**", "", _fence(str(a[Attr.RESPONSE]), "text"), ""]
    elif s.kind == SpanKind.CODE_CELL:
        if a.get(Attr.CODE) is not None:
            out += [_fence(str(a[Attr.CODE]), "python"), ""]
        if a.get(Attr.STDOUT):
            out += ["Output:", "", _fence(str(a[Attr.STDOUT]), "text"), ""]
        if a.get(Attr.STDERR):
            out += ["Errors (stderr):", "", _fence(str(a[Attr.STDERR]), "text"), ""]
        if a.get(Attr.SANDBOX_RESTARTED):
            out += ["_The sandbox was restarted after this cell (variables lost)._", ""]
    elif s.kind == SpanKind.SUB_CALL:
        if a.get(Attr.PROMPT) is not None:
            out += ["Prompt:", "", _fence(str(a[Attr.PROMPT]), "text"), ""]
        if a.get(Attr.RESPONSE) is not None:
            out += ["Response:", "", _fence(str(a[Attr.RESPONSE]), "text"), ""]
    elif s.kind == SpanKind.FINAL:
        if a.get(Attr.ANSWER) is not None:
            out += [_fence(str(a[Attr.ANSWER]), "text"), ""]
    elif s.kind == SpanKind.RUN:
        if a.get(Attr.QUERY):
            out += [f"Nested query: {_md_inline(a[Attr.QUERY])}", ""]
    if a.get(Attr.ERROR):
        out += ["**Error:**", "", _fence(mask_urls_in(str(a[Attr.ERROR])), "text"), ""]
    if a.get(Attr.STOP_REASON) and s.kind != SpanKind.RUN:
        out += [f"Stop reason: `{_md_inline(a[Attr.STOP_REASON])}`", ""]
    return out


def _cite_place(c: Citation) -> str:
    """Where a footnote's citation points: ``b.txt L3–L4``; in a spreadsheet ``book.xlsx, Sales rows 12–18``."""
    from rlm_desktop.core.sheets import sheet_rows_words

    if c.sheet is not None:
        return f"{c.document}, {sheet_rows_words(c.sheet, c.start_row, c.end_row)}"
    return c.label()


def _md_sources(trace: Trace, root: Span | None) -> list[str]:
    """Under the answer: its citations as footnotes (verified ones quote the lines), what the run's
    models saw, and — for an answer that cites nothing — the material its sub-calls read."""
    from rlm_desktop.core.citations import MATERIAL_READ_LABEL, citations_for, material_read_for, sources_for

    if root is None or root.kind != SpanKind.RUN:
        return []
    cites = citations_for(trace, root)
    seen = sources_for(trace, root)
    out: list[str] = []
    if cites:
        out += ["### Citations", ""]
        out += [f"{i}. `{c.raw}`[^{i}]" for i, c in enumerate(cites, 1)]
        out.append("")
        for i, c in enumerate(cites, 1):
            state = "verified" if c.verified else f"not verified: {c.why}"
            out.append(f"[^{i}]: {_cite_place(c)} — {state}")
            if c.text:
                out += ["", *("    > " + line for line in c.text.split("\n"))]
            out.append("")
    elif root.attributes.get(Attr.ANSWER) is not None and seen:
        read = material_read_for(trace, root)
        if read:
            out += ["### Material read", "", f"_{MATERIAL_READ_LABEL[0].upper()}{MATERIAL_READ_LABEL[1:]}._",
                    "", *(f"- {r.label()}" for r in read), ""]
    if seen:
        out += ["### Sources seen by the models", "", *(f"- {r.label()}" for r in seen), ""]
    return out


def _html_sources(trace: Trace, root: Span | None) -> list[str]:
    """The HTML form of :func:`_md_sources`: numbered citations with anchors and quotes."""
    from rlm_desktop.core.citations import MATERIAL_READ_LABEL, citations_for, material_read_for, sources_for

    if root is None or root.kind != SpanKind.RUN:
        return []
    cites = citations_for(trace, root)
    seen = sources_for(trace, root)
    out: list[str] = []
    if cites:
        out.append('<h3>Citations</h3><ol class="cites">')
        for i, c in enumerate(cites, 1):
            state = ("verified" if c.verified else
                     f'<span class="unverified">not verified: {_esc(c.why)}</span>')
            quote = (f'<blockquote class="quote">{_pre(c.text)}</blockquote>' if c.text else "")
            out.append(f'<li id="cite-{i}"><code>{_esc(c.raw)}</code> → {_esc(_cite_place(c))} — '
                       f"{state}{quote}</li>")
        out.append("</ol>")
    elif root.attributes.get(Attr.ANSWER) is not None and seen:
        read = material_read_for(trace, root)
        if read:
            out.append(f'<h3>Material read</h3><p class="muted">{_esc(MATERIAL_READ_LABEL)}</p><ul>'
                       + "".join(f"<li>{_esc(r.label())}</li>" for r in read) + "</ul>")
    if seen:
        out.append("<h3>Sources seen by the models</h3><ul>"
                   + "".join(f"<li>{_esc(r.label())}</li>" for r in seen) + "</ul>")
    return out


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --fg:#1d232a; --bg:#ffffff; --muted:#5d6b78; --line:#d9dee3;
  --panel:#f5f7f9; --ok:#1a7f37; --err:#c62828; --warn:#b26a00; --run:#0b62c4; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ec; --bg:#16191d; --muted:#9aa6b2;
  --line:#2e353d; --panel:#1e2328; --ok:#4cc36b; --err:#ff6b6b; --warn:#ffb74d; --run:#6cb2ff; } }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.muted { color: var(--muted); }
.query, .answer { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: .6em .9em; white-space: pre-wrap; overflow-wrap: anywhere; }
table.totals { border-collapse: collapse; } table.totals td { padding: .15em 1.2em .15em 0; }
details { border-left: 2px solid var(--line); margin: .25em 0 .25em .6em; padding-left: .7em; }
details details details details details details details details {
  margin-left: .2em; padding-left: .3em; }  /* deep runs: narrower steps keep the text readable */
summary { cursor: pointer; list-style-position: outside; }
summary .kind { font-weight: 600; } summary .meta { color: var(--muted); font-size: .9em; }
.badge { display: inline-block; font-size: .78em; padding: 0 .5em; border-radius: 9px;
  border: 1px solid currentColor; margin-left: .4em; }
.st-ok { color: var(--ok); } .st-error, .st-timeout { color: var(--err); }
.st-cancelled, .st-budget { color: var(--warn); } .st-incomplete { color: var(--run); }
.label { font-size: .85em; color: var(--muted); margin: .5em 0 .1em; }
pre.text { background: var(--panel); border: 1px solid var(--line); border-radius: 4px;
  padding: .5em .7em; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; max-height: 40em;
  overflow: auto; font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.code { border: 1px solid var(--line); border-radius: 4px; overflow: auto; max-height: 40em; }
.code pre { margin: 0; padding: .5em .7em; font: 13px/1.4 ui-monospace, Menlo, Consolas, monospace; }
.msg-role { font-weight: 600; font-size: .85em; }
.cites li { margin: .3em 0; } .unverified { color: var(--warn); }
blockquote.quote { margin: .2em 0 .4em; border-left: 3px solid var(--line); padding-left: .7em; }
.warnbox { border: 1px solid var(--warn); color: var(--warn); border-radius: 6px; padding: .4em .8em; }
"""


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _pre(text: Any) -> str:
    return f'<pre class="text">{_esc(text)}</pre>'


def _highlight(code: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    formatter = HtmlFormatter(noclasses=True, nowrap=False, style="default")
    return f'<div class="code">{highlight(code, PythonLexer(), formatter)}</div>'


def to_html(trace: Trace) -> str:
    """A self-contained report: inline CSS, pygments colours inline, a collapsible tree, no scripts."""
    t = totals(trace)
    root = _root_run(trace)
    answer = run_answer(trace)
    title = run_query(trace) or "RLM run"
    parts: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        # Defence in depth: even if something slipped through escaping, nothing may load or run.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>RLM Desktop report: {_esc(title[:120])}</title>", f"<style>{_CSS}</style>",
        "</head><body>", "<h1>RLM Desktop run report</h1>",
        f'<p class="muted">Exported by rlm-desktop {_esc(__version__)}</p>',
        "<h2>Query</h2>", f'<div class="query">{_esc(run_query(trace))}</div>',
    ]
    if root is not None:
        st = status_label(root)
        reason = root.attributes.get(Attr.STOP_REASON)
        parts.append(f'<p>Status: <span class="badge st-{_esc(st)}">{_esc(st)}</span>'
                     + (f" — stopped by <code>{_esc(reason)}</code>" if reason else "") + "</p>")
        if root.running:
            parts.append('<p class="warnbox">⚠ The run never ended (the trace was cut short). '
                         "Steps that never finished are marked <strong>incomplete</strong>.</p>")
    if trace.truncated or trace.skipped_lines:
        parts.append(f'<p class="warnbox">⚠ The trace file was cut short or damaged '
                     f"({trace.skipped_lines} unreadable lines); this is what could be recovered.</p>")
    parts.append("<h2>Answer</h2>")
    parts.append(f'<div class="answer">{_esc(answer)}</div>' if answer is not None
                 else '<p class="muted">No final answer.</p>')
    parts += _html_sources(trace, root)
    rows: list[tuple[str, Any]] = _totals_rows(t)
    iso = trace.header.get("isolation")
    if iso:
        rows.append(("Sandbox isolation", iso.get("level") if isinstance(iso, dict) else iso))
    parts.append("<h2>Totals</h2><table class=\"totals\">" + "".join(
        f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>")
    parts.append("<h2>Trace</h2>")
    _html_tree(trace, parts)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_tree(trace: Trace, out: list[str]) -> None:
    """Every span as nested ``<details>``, iteratively. Below MAX_NESTING levels the steps are
    closed at once and follow each other inside their ancestor at the last nested level."""
    close = None                                # marker: close the <details> of a nested span
    stack: list[tuple[Span, int] | None] = [(r, 0) for r in reversed(trace.roots)]
    while stack:
        item = stack.pop()
        if item is close:
            out.append("</details>")
            continue
        assert item is not None
        s, depth = item
        _html_span(s, out, depth)
        if depth < MAX_NESTING:
            if depth == MAX_NESTING - 1 and s.children:
                out.append(f'<p class="label">The steps below are nested deeper than {MAX_NESTING} '
                           "levels: they are listed in order, each naming its parent.</p>")
            stack.append(close)                 # children go inside this span's <details>
        else:
            out.append("</details>")            # listed flat: its children follow it
        stack.extend((c, depth + 1) for c in reversed(s.children))


def _html_span(s: Span, out: list[str], depth: int) -> None:
    """A span's ``<details>`` opening and content (its children and the closing tag come after)."""
    a = s.attributes
    st = status_label(s)
    meta = [_fmt_duration(s)]
    if a.get(Attr.MODEL):
        meta.append(str(a[Attr.MODEL]))
    usage = _usage(a)
    if usage:
        meta.append(usage)
    # The top-level run, its iterations and their calls and cells start open; sub-calls folded.
    opened = " open" if depth <= 2 and s.kind != SpanKind.SUB_CALL else ""
    out.append(f'<details id="{_esc(s.id)}"{opened}><summary><span class="kind">{_esc(s.kind)}</span> '
               f"{_esc(s.name)} <span class=\"badge st-{_esc(st)}\">{_esc(st)}</span> "
               f'<span class="meta">{_esc(" · ".join(meta))}</span></summary>')
    if depth >= MAX_NESTING and s.parent is not None:
        pid = s.parent.id
        out.append(f'<p class="label">Level {depth}, inside <a href="#{_esc(pid)}">{_esc(pid)}</a></p>')
    if s.running:
        out.append('<p class="warnbox">⚠ Incomplete: this step never ended.</p>')
    if s.kind == SpanKind.LLM_CALL:
        msgs = a.get(Attr.MESSAGES) or []
        if a.get(Attr.HISTORY_FROM):
            hf = str(a[Attr.HISTORY_FROM])
            out.append(f'<p class="label">Continues the conversation of <a href="#{_esc(hf)}">{_esc(hf)}</a>; '
                       f"new messages ({len(msgs)} of {_esc(a.get(Attr.MESSAGE_COUNT, '?'))}):</p>")
        elif msgs:
            out.append('<p class="label">Messages sent:</p>')
        for m in msgs:
            role = m.get("role", "?") if isinstance(m, dict) else "?"
            content = _content_text(m.get("content", "")) if isinstance(m, dict) else str(m)
            out.append(f'<div class="msg-role">{_esc(role)}</div>{_pre(content)}')
        if a.get(Attr.RESPONSE) is not None:
            out.append(f'<p class="label">Response</p>{_pre(a[Attr.RESPONSE])}')
    elif s.kind == SpanKind.CODE_CELL:
        if a.get(Attr.CODE) is not None:
            out.append('<p class="label">Code</p>' + _highlight(str(a[Attr.CODE])))
        if a.get(Attr.STDOUT):
            out.append(f'<p class="label">Output</p>{_pre(a[Attr.STDOUT])}')
        if a.get(Attr.STDERR):
            out.append(f'<p class="label">stderr</p>{_pre(a[Attr.STDERR])}')
        if a.get(Attr.SANDBOX_RESTARTED):
            out.append('<p class="label">The sandbox was restarted after this cell (variables lost).</p>')
    elif s.kind == SpanKind.SUB_CALL:
        if a.get(Attr.PROMPT) is not None:
            out.append(f'<p class="label">Prompt</p>{_pre(a[Attr.PROMPT])}')
        if a.get(Attr.RESPONSE) is not None:
            out.append(f'<p class="label">Response</p>{_pre(a[Attr.RESPONSE])}')
    elif s.kind == SpanKind.FINAL:
        if a.get(Attr.ANSWER) is not None:
            out.append(f'<p class="label">Answer</p>{_pre(a[Attr.ANSWER])}')
    elif s.kind == SpanKind.RUN and a.get(Attr.QUERY) is not None and s.parent is not None:
        out.append(f'<p class="label">Query</p>{_pre(a[Attr.QUERY])}')
    if a.get(Attr.ERROR):
        out.append(f'<p class="label">Error</p>{_pre(mask_urls_in(str(a[Attr.ERROR])))}')
    if a.get(Attr.STOP_REASON):
        out.append(f'<p class="label">Stop reason: {_esc(a[Attr.STOP_REASON])}</p>')


# -- OTLP (OpenTelemetry GenAI semantic conventions) -------------------------------------------
#
# Followed: open-telemetry/semantic-conventions docs/gen-ai/gen-ai-spans.md (inference span
# `chat {model}`, CLIENT; execute_tool span) and gen-ai-agent-spans.md (`invoke_agent`), with
# gen_ai.input.messages / gen_ai.output.messages in the shape of gen-ai-input-messages.json and
# gen-ai-output-messages.json ({"role", "parts": [{"type": "text", "content"}]}, output messages with
# a finish_reason), recorded as JSON strings (the spec allows it where a backend takes no
# structured values, and the JSON strings are what Phoenix and Langfuse parse). Each model call
# carries its whole input, rebuilt from the trace's delta chain by Trace.messages_for.
#
# One structure (the OTLP/JSON mapping of ExportTraceServiceRequest, built by otlp_request) has two
# encodings: JSON text (to_otlp) and protobuf through the OpenTelemetry project's own classes
# (otlp_protobuf_batches, for OTLP/HTTP endpoints).

_SPAN_KIND_INTERNAL = 1
_SPAN_KIND_CLIENT = 3
_STATUS_UNSET, _STATUS_OK, _STATUS_ERROR = 0, 1, 2

# gen_ai.provider.name's well-known values, by what a provider profile's name or id says.
_PROVIDER_NAMES = (("azure", "azure.ai.openai"), ("openai", "openai"), ("anthropic", "anthropic"),
                   ("bedrock", "aws.bedrock"), ("cohere", "cohere"), ("deepseek", "deepseek"),
                   ("gemini", "gcp.gemini"), ("vertex", "gcp.vertex_ai"), ("groq", "groq"),
                   ("mistral", "mistral_ai"), ("perplexity", "perplexity"), ("xai", "x_ai"),
                   ("x.ai", "x_ai"), ("watsonx", "ibm.watsonx.ai"))


def genai_provider_name(provider: Any, demo: bool = False) -> str:
    """``gen_ai.provider.name`` for a provider profile's name: a well-known value where one applies
    ("OpenAI" → ``openai``), else the name in lower case with ``_`` for other characters."""
    if demo:
        return "rlm_desktop.demo"
    name = str(provider or "").strip().lower()
    if "://" in name:   # a provider named by its URL: its host only (never credentials or query)
        from urllib.parse import urlsplit

        try:
            name = urlsplit(name).hostname or "unknown"
        except ValueError:
            name = "unknown"
    for needle, value in _PROVIDER_NAMES:
        if needle in name:
            return value
    slug = "".join(ch if ch.isalnum() or ch == "." else "_" for ch in name).strip("_")
    return slug or "unknown"


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):        # OpenAI content parts
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type", "text") == "text":
                parts.append({"type": "text", "content": str(p.get("text", ""))})
            else:
                parts.append({"type": str(p.get("type", "unknown")) if isinstance(p, dict) else "text",
                              "content": p if isinstance(p, str) else
                              json.dumps(p, ensure_ascii=False, default=_json_default)})
        return parts
    if content is None:
        return []
    return [{"type": "text", "content": json.dumps(content, ensure_ascii=False, default=_json_default)}]


def genai_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Chat messages (OpenAI form) in the GenAI input-messages form: role + parts."""
    out = []
    for m in messages:
        if isinstance(m, dict):
            out.append({"role": str(m.get("role") or "user"), "parts": _text_parts(m.get("content"))})
        else:
            out.append({"role": "user", "parts": _text_parts(str(m))})
    return out


def _any_value(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64 is a decimal string in the protobuf JSON mapping
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, bool, int, float)) for x in v):
        return {"arrayValue": {"values": [_any_value(x) for x in v]}}
    return {"stringValue": json.dumps(v, ensure_ascii=False, default=_json_default)}


class _Attrs:
    """A span's attributes in order, each key once (the first value given wins)."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}

    def put(self, key: str, v: Any) -> None:
        if key in self._items:
            return
        val = _any_value(v)
        if val is not None:
            self._items[key] = val

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def as_list(self) -> list[dict[str, Any]]:
        return [{"key": k, "value": v} for k, v in self._items.items()]


def _kv(key: str, v: Any) -> dict[str, Any] | None:
    val = _any_value(v)
    return None if val is None else {"key": key, "value": val}


def _hex_id(seed: str, nbytes: int) -> str:
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[: 2 * nbytes]


def _nanos(t: float) -> str:
    return str(int(round(t * 1_000_000_000)))


# Trace attributes an llm_call or code_cell maps onto gen_ai.* (not repeated as rlm.*).
_MAPPED = {Attr.MODEL, Attr.INPUT_TOKENS, Attr.OUTPUT_TOKENS, Attr.CACHED_TOKENS, Attr.COST_USD,
           Attr.FINISH_REASON, Attr.MESSAGES, Attr.RESPONSE, Attr.CODE, Attr.STDOUT, Attr.ERROR,
           Attr.RESPONSE_MODEL}


def _otlp_usage(attrs: _Attrs, input_tokens: Any, output_tokens: Any, cached_tokens: Any, cost: Any) -> None:
    for key, value in (("gen_ai.usage.input_tokens", input_tokens),
                       ("gen_ai.usage.output_tokens", output_tokens),
                       ("gen_ai.usage.cache_read.input_tokens", cached_tokens)):
        if isinstance(value, int) and not isinstance(value, bool):
            attrs.put(key, value)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        attrs.put("gen_ai.usage.cost", float(cost))
        attrs.put("rlm.cost_usd", float(cost))


def _otlp_span(trace: Trace, s: Span, trace_id: str, span_ids: dict[str, str], last_time: float,
               conversation: str | None, usage: dict[str, Usage]) -> dict[str, Any]:
    a = s.attributes
    attrs = _Attrs()
    kind = _SPAN_KIND_INTERNAL
    demo = bool(a.get(Attr.DEMO))
    if s.kind == SpanKind.RUN:
        name = "invoke_agent rlm"
        models = a.get(Attr.MODELS) if isinstance(a.get(Attr.MODELS), dict) else {}
        attrs.put("gen_ai.operation.name", "invoke_agent")
        attrs.put("gen_ai.agent.name", "rlm")
        if a.get(Attr.PROVIDER) or demo:
            attrs.put("gen_ai.provider.name", genai_provider_name(a.get(Attr.PROVIDER), demo))
        attrs.put("gen_ai.request.model", models.get("root"))
        attrs.put("gen_ai.conversation.id", conversation)
        t = usage[s.id]               # the run's own calls at every depth (core.totals, one pass)
        _otlp_usage(attrs, t.input_tokens, t.output_tokens, t.cached_tokens,
                    t.cost_value if t.calls else None)
    elif s.kind == SpanKind.LLM_CALL:
        model = str(a.get(Attr.MODEL) or "unknown")
        name = f"chat {model}"
        kind = _SPAN_KIND_CLIENT
        attrs.put("gen_ai.operation.name", "chat")
        attrs.put("gen_ai.provider.name", genai_provider_name(a.get(Attr.PROVIDER), demo))
        attrs.put("gen_ai.request.model", model)
        attrs.put("gen_ai.response.model", a.get(Attr.RESPONSE_MODEL))   # only when the server said
        attrs.put("gen_ai.conversation.id", conversation)
        messages = trace.messages_for(s.id)
        if messages:
            attrs.put("gen_ai.input.messages", json.dumps(genai_messages(messages), ensure_ascii=False,
                                                          default=_json_default))
        if a.get(Attr.RESPONSE) is not None:
            out = {"role": "assistant", "parts": _text_parts(str(a[Attr.RESPONSE])),
                   "finish_reason": str(a.get(Attr.FINISH_REASON) or ("stop" if not s.running
                                                                      and s.status is SpanStatus.OK
                                                                      else "error"))}
            attrs.put("gen_ai.output.messages", json.dumps([out], ensure_ascii=False))
        if a.get(Attr.FINISH_REASON):
            attrs.put("gen_ai.response.finish_reasons", [str(a[Attr.FINISH_REASON])])
        _otlp_usage(attrs, a.get(Attr.INPUT_TOKENS), a.get(Attr.OUTPUT_TOKENS), a.get(Attr.CACHED_TOKENS),
               a.get(Attr.COST_USD))
    elif s.kind == SpanKind.CODE_CELL:
        name = "execute_tool repl"
        attrs.put("gen_ai.operation.name", "execute_tool")
        attrs.put("gen_ai.tool.name", "repl")
        attrs.put("gen_ai.tool.type", "function")
        attrs.put("gen_ai.tool.call.arguments", a.get(Attr.CODE))
        attrs.put("gen_ai.tool.call.result", a.get(Attr.STDOUT))
    elif s.kind == SpanKind.SUB_CALL:
        tool = (s.name or "llm_query").split("[", 1)[0]      # llm_query_batched[3] -> llm_query_batched
        name = f"execute_tool {tool}"
        attrs.put("gen_ai.operation.name", "execute_tool")
        attrs.put("gen_ai.tool.name", tool)
        attrs.put("gen_ai.tool.type", "function")
        attrs.put("gen_ai.request.model", a.get(Attr.MODEL))
        attrs.put("gen_ai.tool.call.arguments", a.get(Attr.PROMPT))
        attrs.put("gen_ai.tool.call.result", a.get(Attr.RESPONSE))
        if not a.get(Attr.CACHE_HIT):
            t = usage[s.id]
            if t.calls:
                _otlp_usage(attrs, t.input_tokens, t.output_tokens, t.cached_tokens, t.cost_value)
    else:
        name = s.name or str(s.kind)
    attrs.put("rlm.span.kind", str(s.kind))
    attrs.put("rlm.span.id", s.id)
    attrs.put("rlm.span.name", s.name)
    for k, v in _masked(a).items():
        if k not in _MAPPED or s.kind not in (SpanKind.LLM_CALL, SpanKind.CODE_CELL):
            attrs.put(f"rlm.{k}", v)
    if s.running:
        attrs.put("rlm.incomplete", True)
        status = {"code": _STATUS_ERROR,
                  "message": "incomplete: the span never ended (the run was cut short)"}
    elif s.status is SpanStatus.OK or s.status is None:
        status = {"code": _STATUS_OK}
    else:
        attrs.put("error.type", str(s.status))
        msg = str(s.status)
        if a.get(Attr.ERROR):
            msg += ": " + mask_urls_in(str(a[Attr.ERROR]))[:500]
        status = {"code": _STATUS_ERROR, "message": msg}
    span: dict[str, Any] = {
        "traceId": trace_id, "spanId": span_ids[s.id], "name": name, "kind": kind,
        "startTimeUnixNano": _nanos(s.start),
        "endTimeUnixNano": _nanos(s.end if s.end is not None else max(last_time, s.start)),
        "attributes": attrs.as_list(), "status": status,
    }
    if s.parent is not None:
        span["parentSpanId"] = span_ids[s.parent.id]
    return span


def _otlp_parts(trace: Trace) -> tuple[dict[str, Any], dict[str, Any], Iterator[dict[str, Any]]]:
    """(resource, scope, spans one by one) of a trace's OTLP form; each top-level run (a session's
    turn) is its own OTLP trace, the turns tied together by ``gen_ai.conversation.id``."""
    first = min((s.start for s in trace.spans.values()), default=0.0)
    seed = json.dumps(trace.header, sort_keys=True, ensure_ascii=False, default=_json_default)
    base = _hex_id(f"{seed}|{first!r}", 16)
    session = trace.header.get("session")
    conversation = str(session) if session else (base if len(trace.roots) > 1 else None)
    last_time = max((max(s.start, s.end or 0.0) for s in trace.spans.values()), default=0.0)
    resource_attrs = [_kv("service.name", "rlm-desktop"), _kv("service.version", __version__),
                      _kv("rlm.query", run_query(trace))]
    iso = trace.header.get("isolation")
    if iso is not None:
        resource_attrs.append(_kv("rlm.isolation.level", iso.get("level") if isinstance(iso, dict) else iso))
    resource = {"attributes": [x for x in resource_attrs if x is not None]}
    scope = {"name": "rlm_desktop", "version": __version__}

    usage = subtree_usage(trace)

    def spans() -> Iterator[dict[str, Any]]:
        for i, root in enumerate(trace.roots):
            trace_id = base if i == 0 else _hex_id(f"{base}|{root.id}", 16)
            span_ids: dict[str, str] = {}
            for s, _ in _walk(root):
                span_ids[s.id] = _hex_id(f"{base}|{s.id}", 8)
                yield _otlp_span(trace, s, trace_id, span_ids, last_time, conversation, usage)

    return resource, scope, spans()


def otlp_request(trace: Trace) -> dict[str, Any]:
    """The trace as an ``ExportTraceServiceRequest`` in the OTLP/JSON mapping (hex ids, int64 as
    decimal strings): the one structure both encodings are made from."""
    resource, scope, spans = _otlp_parts(trace)
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": list(spans)}]}]}


def to_otlp(trace: Trace) -> str:
    """OTLP/JSON (``ExportTraceServiceRequest``) with GenAI attributes, ready for any OTLP collector."""
    return json.dumps(otlp_request(trace), ensure_ascii=False, separators=(",", ":"))  # for machines


def _pb_value(v: dict[str, Any], out: Any) -> None:
    """One OTLP/JSON AnyValue into a protobuf AnyValue (the kinds ``_any_value`` makes)."""
    (kind, x), = v.items()
    if kind == "stringValue":
        out.string_value = x
    elif kind == "intValue":
        out.int_value = int(x)
    elif kind == "doubleValue":
        out.double_value = x
    elif kind == "boolValue":
        out.bool_value = x
    elif kind == "arrayValue":
        out.array_value.SetInParent()
        for item in x["values"]:
            _pb_value(item, out.array_value.values.add())
    else:
        raise ExportError(f"unexpected OTLP value kind {kind!r}")


def _pb_span(d: dict[str, Any], span_cls: Any) -> Any:
    """One span of :func:`otlp_request`'s structure as an ``opentelemetry.proto`` Span. Fields are set
    directly (protobuf's generic JSON parser is 4x slower on a 100,000-span trace); the OTLP/JSON
    mapping's hex ids become the bytes the binary form carries."""
    span = span_cls(trace_id=bytes.fromhex(d["traceId"]), span_id=bytes.fromhex(d["spanId"]),
                    name=d["name"], kind=d["kind"], start_time_unix_nano=int(d["startTimeUnixNano"]),
                    end_time_unix_nano=int(d["endTimeUnixNano"]))
    if "parentSpanId" in d:
        span.parent_span_id = bytes.fromhex(d["parentSpanId"])
    for kv in d["attributes"]:
        attr = span.attributes.add()
        attr.key = kv["key"]
        _pb_value(kv["value"], attr.value)
    span.status.code = d["status"]["code"]
    if d["status"].get("message"):
        span.status.message = d["status"]["message"]
    return span


class OtlpUnavailable(ExportError):
    """The OpenTelemetry protobuf classes (``opentelemetry-proto``) are not installed."""


def otlp_protobuf_batches(trace: Trace, max_bytes: int = 3_000_000) -> Iterator[tuple[bytes, int]]:
    """The trace as protobuf ``ExportTraceServiceRequest`` bodies of at most about ``max_bytes``
    each (receivers cap a request's size; the Collector's default is 4 MiB), with the number of
    spans in each. Built from :func:`otlp_request`'s structure with the official classes."""
    try:
        from google.protobuf.json_format import ParseDict
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
    except ImportError as exc:
        raise OtlpUnavailable(f"sending OTLP needs the opentelemetry-proto package ({exc}); install it "
                              "with: pip install opentelemetry-proto") from None
    resource, scope, spans = _otlp_parts(trace)
    template = ParseDict({"resource": resource, "scopeSpans": [{"scope": scope}]}, ResourceSpans())
    base_size = template.ByteSize() + 16

    def request(batch: list[Any]) -> bytes:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.CopyFrom(template)
        rs.scope_spans[0].spans.extend(batch)
        return req.SerializeToString()

    batch: list[Any] = []
    size = base_size
    for d in spans:
        pb = _pb_span(d, Span)
        n = pb.ByteSize() + 8
        if batch and size + n > max_bytes:
            yield request(batch), len(batch)
            batch, size = [], base_size
        batch.append(pb)
        size += n
    if batch:
        yield request(batch), len(batch)
