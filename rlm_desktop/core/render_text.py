"""A trace as a terminal reads it: each iteration as a notebook-like cell (the model's text, the code
highlighted with pygments, the cell's output truncated with a note, sub-calls as indented one-liners
with tokens and cost), live from a trace's events or from a saved trace, in colour or plain text.

Qt-free. ``rlm-desktop run --show`` subscribes a :class:`TextRenderer` to the live trace;
``rlm-desktop show`` walks a saved trace with :func:`render_trace` (iteratively: a trace may nest
thousands deep). Text from outside (model output, code, cell output, prompts, names) goes through
:func:`_safe` before it reaches the terminal, so a model cannot send escape sequences to it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import IO, Any

from rlm_desktop.core.status import span_status_text, stop_reason_text
from rlm_desktop.core.textsafe import for_terminal
from rlm_desktop.core.totals import Totals, totals
from rlm_desktop.core.trace import Attr, EventType, Span, SpanKind, SpanStatus, Trace, TraceEvent

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_LINES = 20
_MAX_LINE_CHARS = 400            # one line of output longer than this is cut (with a note)
_MAX_INDENT = 8                  # nesting shown as margins up to here, as a number beyond
_PREVIEW_CHARS = 60              # prompt / response previews on a sub-call's one-liner

def _safe(text: Any) -> str:
    """``text`` with every character a terminal would act on shown as a visible escape (the one
    rule for the whole CLI: :func:`rlm_desktop.core.textsafe.for_terminal`)."""
    return for_terminal(str(text))


def use_color(mode: str, stream: IO[str] | Any, environ: dict[str, str] | None = None) -> bool:
    """Whether to colour ``stream``: ``always`` / ``never``, or ``auto`` = a terminal, ``NO_COLOR``
    unset or empty (no-color.org: a command-line flag overrides it) and ``TERM`` not ``dumb``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):      # a closed stream
        return False


# SGR codes for the few styles used.
_BOLD, _DIM, _RED, _GREEN, _YELLOW, _CYAN, _MAGENTA = "1", "2", "31", "32", "33", "36", "35"
_FENCE = re.compile(r"^[ \t]*```+[ \t]*(?:repl|python|py)?[ \t]*\n.*?(?:^[ \t]*```+[ \t]*$|\Z)",
                    re.DOTALL | re.MULTILINE | re.IGNORECASE)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_cost(value: float | None, known: bool = True) -> str:
    if value is None:
        return "cost unknown"
    text = f"${value:.4f}" if value < 1 else f"${value:.2f}"
    return text if known else text + " + unknown"


def _usage_text(t: Totals) -> str:
    if t.llm_calls == 0:
        return "no model call"
    if t.llm_calls == t.incomplete_spans and not (t.input_tokens or t.output_tokens):
        return "unfinished: no usage recorded"
    est = " (est.)" if t.tokens_estimated else ""
    cached = f", {t.cached_tokens:,} cached" if t.cached_tokens else ""
    return (f"{t.input_tokens:,} in{cached} / {t.output_tokens:,} out tokens{est} · "
            f"{fmt_cost(t.cost_value, t.cost_known)}")


def _status_word(span: Span) -> str:
    return span_status_text("incomplete" if span.running else str(span.status or SpanStatus.OK))


def model_text(response: str) -> str:
    """The model's prose: its reply without the code blocks (the cells show those)."""
    text = _FENCE.sub("", response)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _preview(text: Any, n: int = _PREVIEW_CHARS) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


class TextRenderer:
    """Turns span starts and ends into text blocks written to ``write``.

    Use it as a trace listener (``trace.subscribe(renderer)``) for a live run, or let
    :func:`render_trace` drive :meth:`start` / :meth:`end` over a saved trace.
    """

    def __init__(self, write: Callable[[str], Any], *, color: bool = False, max_depth: int | None = None,
                 output_lines: int = DEFAULT_OUTPUT_LINES, flush: Callable[[], Any] | None = None) -> None:
        self._write = write
        self._flush = flush
        self.color = color
        self.max_depth = max_depth
        self.output_lines = max(1, output_lines)
        self._nest: dict[str, int] = {}       # span id -> sub-call nesting (shown spans only)
        self._hidden: set[str] = set()        # spans not shown (their descendants neither)
        self._muted: set[str] = set()         # shown, but their descendants are not (a REPL replay)
        self._iteration_no: dict[str, int] = {}
        self.stopped = False                  # live: the output went away; the run goes on without it

    # -- styling -------------------------------------------------------------------------------
    def _st(self, text: str, *codes: str) -> str:
        if not self.color or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def _emit(self, lines: Iterable[str]) -> None:
        block = "".join(line + "\n" for line in lines)
        if block:
            self._write(block)
            if self._flush is not None:
                self._flush()

    def _highlight(self, code: str) -> list[str]:
        code = _safe(code).rstrip("\n")
        if not self.color:
            return code.split("\n")
        from pygments import highlight
        from pygments.formatters import TerminalFormatter
        from pygments.lexers import PythonLexer

        return highlight(code, PythonLexer(), TerminalFormatter(bg="dark")).rstrip("\n").split("\n")

    def _clip(self, text: str, indent: str, *codes: str, limit: int | None = None) -> list[str]:
        """``text`` as indented lines, at most ``limit`` of them, the cut stated."""
        limit = self.output_lines if limit is None else limit
        lines = _safe(text).rstrip("\n").split("\n")
        out: list[str] = []
        for line in lines[:limit]:
            if len(line) > _MAX_LINE_CHARS:
                line = line[:_MAX_LINE_CHARS] + self._st(f" … ({len(line) - _MAX_LINE_CHARS:,} more "
                                                          "characters on this line)", _DIM)
            out.append(indent + self._st(line, *codes))
        if len(lines) > limit:
            rest = lines[limit:]
            chars = sum(len(x) + 1 for x in rest)
            out.append(indent + self._st(f"… {len(rest):,} more lines ({chars:,} characters) not shown; "
                                         "`rlm-desktop export TRACE` has everything", _DIM))
        return out

    # -- structure -----------------------------------------------------------------------------
    def _indent(self, nest: int) -> str:
        if nest <= _MAX_INDENT:
            return "│ " * nest
        return "│ " * 2 + f"┆{nest}┆ " + "│ "   # thousands deep: the level as a number, not a margin

    def start(self, span: Span) -> bool:
        """Show what is known when ``span`` starts; False when it (and its subtree) is not shown."""
        parent = span.parent
        if parent is not None and (parent.id in self._hidden or parent.id in self._muted
                                   or parent.id not in self._nest):
            self._hidden.add(span.id)
            return False
        nest = 0 if parent is None else self._nest[parent.id] + (1 if parent.kind == SpanKind.SUB_CALL else 0)
        if self.max_depth is not None and nest > self.max_depth:
            self._hidden.add(span.id)
            return False
        self._nest[span.id] = nest
        ind = self._indent(nest)
        a = span.attributes
        kind = span.kind
        if kind == SpanKind.RUN:
            if a.get(Attr.REPLAY):
                self._emit([self._st(f"{ind}── rebuilding the REPL from recorded cells (no model request)",
                                     _DIM)])
                self._muted.add(span.id)           # its replayed cells are not news
                return True
            query = _safe(_preview(a.get(Attr.QUERY) or "", 200))
            if parent is None:
                turn = a.get(Attr.TURN)
                title = f"turn {turn}" if isinstance(turn, int) else "run"
                models = a.get(Attr.MODELS) if isinstance(a.get(Attr.MODELS), dict) else {}
                lines = ["", self._st(f"══ {title}: {query}", _BOLD)]
                if models:
                    lines.append(self._st(f"   root model {_safe(models.get('root'))}, sub-calls "
                                          f"{_safe(models.get('sub'))}", _DIM))
                self._emit(lines)
            else:
                self._emit([self._st(f"{ind}▸ nested run (depth {_int(a.get(Attr.DEPTH))}): {query}",
                                     _MAGENTA)])
        elif kind == SpanKind.ITERATION:
            n = sum(1 for c in parent.children[: span.index + 1] if c.kind == SpanKind.ITERATION) \
                if parent is not None else 1
            self._iteration_no[span.id] = n
            self._emit(["", self._st(f"{ind}── iteration {n} ", _CYAN, _BOLD)
                        + self._st("─" * 30, _CYAN)])
        elif kind == SpanKind.CODE_CELL and not a.get(Attr.INTERNAL) and a.get(Attr.CODE) is not None:
            lines = [self._st(f"{ind}  ▶ {_safe(span.name)}", _DIM)]
            lines += [f"{ind}  {self._st('│', _DIM)} {line}" for line in self._highlight(str(a[Attr.CODE]))]
            self._emit(lines)
        return True

    def end(self, span: Span) -> None:
        """Show what ``span`` produced (output, answer, tokens, cost) now that it has ended."""
        if span.id in self._hidden:
            self._hidden.discard(span.id)
            return
        nest = self._nest.pop(span.id, None)
        if nest is None:
            return
        ind = self._indent(nest)
        a = span.attributes
        kind = span.kind
        problem = span.running or span.status not in (None, SpanStatus.OK)
        if kind == SpanKind.LLM_CALL:
            if span.parent is not None and span.parent.kind == SpanKind.SUB_CALL:
                return                              # the sub-call's one-liner says it
            lines: list[str] = []
            text = model_text(str(a.get(Attr.RESPONSE) or ""))
            if text:
                lines += self._clip(text, f"{ind}  ")
            meta = f"{_safe(a.get(Attr.MODEL) or '?')} · {_usage_text(totals(span))} · " \
                   f"{fmt_duration(span.duration)}"
            if problem:
                meta += f" · {_status_word(span)}"
            lines.append(self._st(f"{ind}  ({meta})", *((_RED,) if problem else (_DIM,))))
            if a.get(Attr.ERROR):
                lines += self._clip(str(a[Attr.ERROR]), f"{ind}  ✗ ", _RED)
            self._emit(lines)
        elif kind == SpanKind.CODE_CELL:
            if a.get(Attr.INTERNAL):
                if problem or a.get(Attr.ERROR):
                    self._emit(self._clip(str(a.get(Attr.ERROR) or _status_word(span)),
                                          f"{ind}  ✗ {_safe(span.name)}: ", _RED, limit=3))
                return
            lines = []
            if a.get(Attr.STDOUT):
                lines += self._clip(str(a[Attr.STDOUT]), f"{ind}    ")
            if a.get(Attr.STDERR):
                lines += self._clip(str(a[Attr.STDERR]), f"{ind}    ", _RED)
            if a.get(Attr.ERROR) and a.get(Attr.ERROR) != a.get(Attr.STDERR):
                lines += self._clip(str(a[Attr.ERROR]), f"{ind}    ✗ ", _RED)
            if problem:
                lines.append(self._st(f"{ind}    cell {_status_word(span)} after "
                                      f"{fmt_duration(span.duration)}", _RED))
            if a.get(Attr.SANDBOX_RESTARTED):
                lines.append(self._st(f"{ind}    the sandbox was restarted after this cell "
                                      "(variables lost)", _YELLOW))
            self._emit(lines)
        elif kind == SpanKind.SUB_CALL:
            self._emit([self._sub_call_line(span, ind, problem, nest)])
        elif kind == SpanKind.FINAL:
            answer = a.get(Attr.ANSWER)
            if answer is not None:
                via = f" ({_safe(a.get(Attr.VIA))})" if a.get(Attr.VIA) else ""
                body = self._clip(str(answer), f"{ind}  ", limit=10_000 if nest == 0 else None)
                self._emit([self._st(f"{ind}✔ final answer{via}:", _GREEN, _BOLD), *body])
        elif kind == SpanKind.RUN:
            if span.id in self._muted:
                self._muted.discard(span.id)
                return
            t = self._totals(span, nest)
            word = _status_word(span)
            why = stop_reason_text(a.get(Attr.STOP_REASON)) if problem else ""
            head = "══" if nest == 0 and span.parent is None else f"{ind}◂"
            sums = (f"{t.iterations} iterations · {t.sub_calls} sub-calls · {_usage_text(t)}"
                    if t is not None else "tokens and cost in the levels above")
            line = f"{head} {word}{': ' + _safe(why) if why else ''} · {sums} · {fmt_duration(span.duration)}"
            lines = [self._st(line, _RED if problem else _GREEN, *((_BOLD,) if nest == 0 else ()))]
            if problem and a.get(Attr.ERROR):
                lines += self._clip(str(a[Attr.ERROR]), f"{ind}  ✗ ", _RED, limit=5)
            self._emit(lines)

    def _totals(self, span: Span, nest: int) -> Totals | None:
        """The subtree's totals, or None where summing them would make a deep trace quadratic (below
        the first levels, each nested run would walk everything under it again; the levels above
        show those tokens and costs included)."""
        if nest <= _MAX_INDENT or all(not c.children for c in span.children):
            return totals(span)
        return None

    def _sub_call_line(self, span: Span, ind: str, problem: bool, nest: int) -> str:
        a = span.attributes
        model = a.get(Attr.MODEL)
        if a.get(Attr.CACHE_HIT):
            usage = "cached (memo: no model call)"
        else:
            t = self._totals(span, nest)
            usage = _usage_text(t) if t is not None else "tokens and cost in the levels above"
        response = a.get(Attr.RESPONSE)
        if response is None:
            for c in span.children:
                if c.kind == SpanKind.LLM_CALL and c.attributes.get(Attr.RESPONSE) is not None:
                    response = c.attributes[Attr.RESPONSE]
                elif c.kind == SpanKind.RUN and c.attributes.get(Attr.ANSWER) is not None:
                    response = c.attributes[Attr.ANSWER]
        parts = [f"{ind}  ↳ {_safe(span.name)}"]
        if model:
            parts.append(_safe(model))
        parts += [usage, fmt_duration(span.duration)]
        head = " · ".join(parts)
        if problem:
            head += f" · {_status_word(span)}"
        text = self._st(head, _RED if problem else _DIM)
        if a.get(Attr.PROMPT) is not None:
            text += f"  {_safe(_preview(a[Attr.PROMPT]))}"
        if response is not None:
            text += self._st(" → ", _DIM) + _safe(_preview(response))
        elif problem and a.get(Attr.ERROR):
            text += self._st(" ✗ " + _safe(_preview(a[Attr.ERROR], 120)), _RED)
        return text

    # -- live ----------------------------------------------------------------------------------
    def __call__(self, ev: TraceEvent, span: Span) -> None:
        """A trace listener: render a live run as its spans start and end.

        The run matters more than its display: when the output is gone (``run --show | head``) or a
        step cannot be shown, it says so in the log once and stops showing; the run goes on."""
        if self.stopped:
            return
        try:
            if ev.type is EventType.STARTED:
                self.start(span)
            elif ev.type is EventType.ENDED:
                self.end(span)
        except OSError as exc:
            self.stopped = True
            log.warning("--show: the output is closed (%s); the run goes on, its trace is complete", exc)
        except Exception:
            self.stopped = True
            log.exception("--show could not show step %s; the run goes on, its trace is complete", span.id)


# -- saved traces ------------------------------------------------------------------------------

def turn_roots(trace: Trace, turn: int | None = None) -> list[Span]:
    """The trace's top-level spans, or only the run of session turn ``turn`` (replays left out)."""
    if turn is None:
        return list(trace.roots)
    return [r for r in trace.roots if r.kind == SpanKind.RUN and r.attributes.get(Attr.TURN) == turn
            and not r.attributes.get(Attr.REPLAY)]


def is_problem(span: Span) -> bool:
    """An error, a timeout, a limit, or a step that never ended (what ``--errors`` shows)."""
    return span.running or span.status in (SpanStatus.ERROR, SpanStatus.TIMEOUT, SpanStatus.BUDGET) \
        or bool(span.attributes.get(Attr.ERROR))


def problem_paths(roots: Iterable[Span]) -> set[str]:
    """Ids of the problem spans and of every span above one (computed without recursion)."""
    keep: set[str] = set()
    stack = list(roots)
    while stack:
        s = stack.pop()
        if is_problem(s):
            p: Span | None = s
            while p is not None and p.id not in keep:
                keep.add(p.id)
                p = p.parent
        stack.extend(s.children)
    return keep


def render_trace(trace: Trace, write: Callable[[str], Any], *, color: bool = False,
                 max_depth: int | None = None, errors_only: bool = False, turn: int | None = None,
                 output_lines: int = DEFAULT_OUTPUT_LINES) -> int:
    """Write a saved trace as :class:`TextRenderer` shows a live one. Returns the number of top-level
    spans shown (0: no such turn). With ``errors_only``, only the paths to failed, timed-out, limited or
    unfinished steps (each run's header and summary stay)."""
    roots = turn_roots(trace, turn)
    keep = problem_paths(roots) if errors_only else None
    r = TextRenderer(write, color=color, max_depth=max_depth, output_lines=output_lines)
    for root in roots:
        if keep is not None and root.id not in keep:
            keep.add(root.id)
            r.start(root)
            r._emit([r._st("  no errors, timeouts or unfinished steps", _GREEN)])
            r.end(root)
            continue
        stack: list[tuple[Span, bool]] = [(root, True)]
        while stack:                          # iterative: a trace may nest thousands deep
            span, entering = stack.pop()
            if not entering:
                r.end(span)
                continue
            if keep is not None and span.id not in keep:
                continue
            if not r.start(span):
                continue
            stack.append((span, False))
            stack.extend((c, True) for c in reversed(span.children))
    return len(roots)


# -- two runs side by side ---------------------------------------------------------------------

def _fmt_fact(name: str, v: Any) -> str:
    if v is None:
        return "unknown" if name == "cost_usd" else "—"
    if name == "cost_usd":
        return f"${v:.4f}"
    if name == "duration_s":
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return _safe(v)


def _fmt_delta(name: str, a: Any, d: Any) -> str:
    if d is None:
        return ""
    if d == 0:
        return "="
    text = (f"{d:+.4f}" if name == "cost_usd" else f"{d:+,.2f}" if name == "duration_s"
            else f"{d:+,}")
    if isinstance(a, (int, float)) and a:
        text += f" ({d / a:+.0%})"
    return text


def _wrap_marked(words: list[tuple[str, bool]], width: int, mark: Callable[[str], str]) -> list[str]:
    """Greedy wrap of (word, marked) pairs into lines of at most ``width`` visible characters."""
    lines: list[str] = []
    cur: list[str] = []
    used = 0
    for word, marked in words:
        vis = len(word)
        if cur and used + 1 + vis > width:
            lines.append(" ".join(cur))
            cur, used = [], 0
        cur.append(mark(word) if marked else word)
        used += vis + (1 if used else 0)
    if cur:
        lines.append(" ".join(cur))
    return lines


def render_comparison(cmp: Any, *, color: bool = False, width: int = 100) -> str:
    """A :class:`rlm_desktop.core.compare.Comparison` as a table with deltas, then the answers side
    by side with their differences marked (``[-A only-]`` / ``{+B only+}``, or red / green)."""
    from rlm_desktop.core.compare import NUMERIC, stop_text

    r = TextRenderer(lambda s: None, color=color)
    a, b, delta = cmp.a, cmp.b, cmp.delta
    rows: list[tuple[str, str, str, str]] = [("", "A", "B", "Δ (B − A)")]
    rows.append(("run", _safe(_preview(a.label, 40)), _safe(_preview(b.label, 40)), ""))
    rows.append(("status", _safe(stop_text(a)), _safe(stop_text(b)),
                 "≠" if "status" in delta["changed"] or "stop_reason" in delta["changed"] else "="))
    for name, label in NUMERIC:
        va, vb = getattr(a, name), getattr(b, name)
        if name == "cost_usd":
            if va is not None and not a.cost_known:
                label += " *"
            if vb is not None and not b.cost_known:
                label += " *"
        rows.append((label, _fmt_fact(name, va), _fmt_fact(name, vb), _fmt_delta(name, va, delta[name])))
    for name, label in (("root_model", "root model"), ("sub_model", "sub model")):
        rows.append((label, _fmt_fact(name, getattr(a, name)), _fmt_fact(name, getattr(b, name)),
                     "≠" if name in delta["changed"] else "="))
    rows.append(("models called", _safe(", ".join(a.models)) or "—", _safe(", ".join(b.models)) or "—",
                 "≠" if "models" in delta["changed"] else "="))
    same_limits = differing = 0
    for k in sorted(set(a.limits) | set(b.limits)):
        va, vb = a.limits.get(k), b.limits.get(k)
        if va == vb:
            same_limits += 1
            continue
        d = _delta(va, vb)
        differing += 1
        rows.append((f"limit {_safe(k)}", _fmt_fact(k, va), _fmt_fact(k, vb),
                     _fmt_delta(k, va, d) if d is not None else "≠"))
    if same_limits:
        rows.append((f"{'other ' if differing else ''}limits", f"{same_limits} the same", "", "="))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out: list[str] = []
    if a.query != b.query:
        out += [r._st("The two runs asked different questions:", _YELLOW),
                f"  A: {_safe(_preview(a.query, width - 5))}", f"  B: {_safe(_preview(b.query, width - 5))}",
                ""]
    else:
        out += [r._st(f"Question: {_safe(_preview(a.query, width - 10))}", _BOLD), ""]
    for i, row in enumerate(rows):
        line = "  ".join(cell.ljust(widths[j]) if j < 3 else cell for j, cell in enumerate(row)).rstrip()
        if i == 0:
            line = r._st(line, _BOLD)
        elif row[3] not in ("", "="):
            line = r._st(line, _YELLOW)
        out.append(line)
    for f, name in ((a, "A"), (b, "B")):
        for note in f.notes:
            out.append(r._st(f"note ({name}): {_safe(note)}", _DIM))
    if any(x.cost_usd is not None and not x.cost_known for x in (a, b)):
        out.append(r._st("* part of this cost is unknown (a model without a price)", _DIM))
    out.append("")
    col = max(20, (width - 3) // 2)
    if delta["answers_equal"]:
        out.append(r._st("Answers: identical", _GREEN, _BOLD))
        out += [f"  {line}" for line in _wrap_marked([(_safe(w), False) for w in (a.answer or "—").split()],
                                                     width - 2, str)]
        return "\n".join(out) + "\n"
    out.append(r._st(f"Answers (word similarity {cmp.similarity:.0%}):", _BOLD))
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    for op in cmp.answer_diff:
        if op["op"] == "equal":
            left += [(_safe(w), False) for w in op["a"].split()]
            right += [(_safe(w), False) for w in op["b"].split()]
            continue
        a_words = [_safe(w) for w in op["a"].split()]
        b_words = [_safe(w) for w in op["b"].split()]
        if not color:                       # plain text: brackets mark the stretch
            if a_words:
                a_words[0] = "[-" + a_words[0]
                a_words[-1] += "-]"
            if b_words:
                b_words[0] = "{+" + b_words[0]
                b_words[-1] += "+}"
        left += [(w, True) for w in a_words]
        right += [(w, True) for w in b_words]
    if a.answer is None:
        left = [("(no answer)", False)]
    if b.answer is None:
        right = [("(no answer)", False)]
    ll = _wrap_marked(left, col, lambda w: r._st(w, _RED, "1"))
    rl = _wrap_marked(right, col, lambda w: r._st(w, _GREEN, "1"))
    vis = re.compile(r"\x1b\[[0-9;]*m")
    out.append(r._st("A".ljust(col) + " │ B", _DIM))
    for i in range(max(len(ll), len(rl))):
        lt = ll[i] if i < len(ll) else ""
        rt = rl[i] if i < len(rl) else ""
        pad = col - len(vis.sub("", lt))
        out.append(lt + " " * max(0, pad) + r._st(" │ ", _DIM) + rt)
    return "\n".join(out) + "\n"


def _delta(a: Any, b: Any) -> float | int | None:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) \
            or not isinstance(b, (int, float)):
        return None
    d = b - a
    return round(d, 6) if isinstance(d, float) else d
