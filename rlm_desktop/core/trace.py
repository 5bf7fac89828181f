"""The trace: an evented tree of spans, and its append-only JSON Lines file format (a contract).

A run produces *events* (span started / updated / ended). A :class:`Trace` applies events to an
in-memory tree and tells its listeners; the same events, one per line, are the file on disk. The
file is written append-only and flushed per event, so a crash leaves a readable prefix; the reader
rebuilds the tree and marks spans that never ended as incomplete.

Payloads that grow (a streamed response, a cell's stdout) travel as *appends* (deltas), and an LLM
call records only the messages that are new since the previous call of the same conversation
(``Attr.HISTORY_FROM`` names that call): the file grows linearly with the run.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from rlm_desktop.core.paths import open_private

FORMAT_NAME = "rlm-trace"
FORMAT_VERSION = 1


class SpanKind(StrEnum):
    RUN = "run"
    ITERATION = "iteration"
    LLM_CALL = "llm_call"
    CODE_CELL = "code_cell"
    SUB_CALL = "sub_call"
    FINAL = "final"


class SpanStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    BUDGET = "budget"


_KIND_BY_VALUE: dict[str, SpanKind] = {k.value: k for k in SpanKind}
_STATUS_BY_VALUE: dict[str, SpanStatus] = {s.value: s for s in SpanStatus}


class EventType(StrEnum):
    STARTED = "span_started"
    UPDATED = "span_updated"
    ENDED = "span_ended"


class Attr:
    """Attribute keys used across the engine, the UI and the exporters (one spelling, one place)."""

    MODEL = "model"
    PROVIDER = "provider"
    DEPTH = "depth"
    QUERY = "query"
    # llm_call: only the messages new since HISTORY_FROM's call; MESSAGE_COUNT is the full length.
    MESSAGES = "messages"
    HISTORY_FROM = "history_from"
    MESSAGE_COUNT = "message_count"
    RESPONSE = "response"          # streamed as appends, final text
    FINISH_REASON = "finish_reason"
    RESPONSE_MODEL = "response_model"  # llm_call: the model the server says answered (if it said)
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    CACHED_TOKENS = "cached_tokens"
    COST_USD = "cost_usd"          # float, or None when the model's price is unknown
    COST_KNOWN = "cost_known"      # False when any part of the cost is unknown
    CACHE_HIT = "cache_hit"
    ATTEMPTS = "attempts"
    # code_cell
    CODE = "code"
    STDOUT = "stdout"              # streamed as appends
    STDERR = "stderr"              # streamed as appends
    ERROR = "error"                # a readable error text (exception, traceback, limit reason)
    SANDBOX_RESTARTED = "sandbox_restarted"
    # sub_call
    PROMPT = "prompt"
    BATCH_INDEX = "batch_index"
    # final / run
    ANSWER = "answer"
    STOP_REASON = "stop_reason"    # e.g. "max_iterations", "budget_usd", "cancelled"
    ISOLATION = "isolation"
    # engine additions (run / llm_call / code_cell details)
    LIMITS = "limits"              # run: the RunLimits in force (dict)
    MODELS = "models"              # run: {"root": ..., "sub": ...}
    CONTEXT = "context"            # run: description of the context (type, count, sizes), never text
    DEMO = "demo"                  # run / llm_call: True for the offline demo provider
    ITERATIONS = "iterations"      # run: root iterations so far (totals also use the token keys)
    SUB_CALLS = "sub_calls"        # run: sub-calls so far (all depths)
    TOKENS_ESTIMATED = "tokens_estimated"  # llm_call: counts are chars/4 estimates (no usage given)
    RETRIES = "retries"            # llm_call: [{"attempt", "error", "wait_s"}] before the last attempt
    HISTORY_NOTE = "history_note"  # llm_call: the history was shortened before this call (how)
    VIA = "via"                    # final: "FINAL" | "FINAL_VAR" | "text"
    WARNING = "warning"            # run: a plain-language warning (e.g. USD budget not enforceable)
    TURN = "turn"                  # run: the turn's number in its session (1, 2, …)
    INTERNAL = "internal"          # code_cell: run by the app (not the model); never replayed
    REPLAY = "replay"              # run: a REPL rebuilt from recorded cells (no model request)
    REPLAY_OF = "replay_of"        # code_cell: the recorded cell this one replays
    # sources (core/sources.py, core/citations.py): [{"document", "start_line", "end_line", "page"}]
    SOURCES = "sources"            # sub_call: its prompt's; code_cell: its output fed back; run: merged
    CITATIONS = "citations"        # run: the answer's citations, checked ({..., "verified", "why", "text"})
    MATERIAL_READ = "material_read"  # run: an answer without citations: what its sub-calls saw


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One line of the trace file. ``attributes`` replace values; ``append`` extends strings."""

    type: EventType
    span_id: str
    time: float
    parent_id: str | None = None
    kind: SpanKind | None = None
    name: str | None = None
    attributes: dict[str, Any] | None = None
    append: dict[str, str] | None = None
    status: SpanStatus | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"event": self.type.value, "id": self.span_id, "t": round(self.time, 6)}
        if self.type is EventType.STARTED:
            d["parent"] = self.parent_id
            d["kind"] = str(self.kind) if self.kind else None  # str: a newer writer's kind survives
            d["name"] = self.name
        if self.attributes:
            d["attrs"] = self.attributes
        if self.append:
            d["append"] = self.append
        if self.status is not None:
            d["status"] = self.status.value
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"), default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceEvent:
        et = EventType(d["event"])
        kind = d.get("kind")
        status = d.get("status")
        return cls(
            type=et,
            span_id=str(d["id"]),
            time=float(d.get("t", 0.0)),
            parent_id=d.get("parent"),
            kind=_parse_kind(kind) if kind is not None else None,
            name=d.get("name"),
            attributes=d.get("attrs"),
            append=d.get("append"),
            status=SpanStatus(status) if status is not None else None,
        )


def _parse_kind(value: str) -> SpanKind | str:
    try:
        return SpanKind(value)
    except ValueError:
        return value  # a newer writer's kind: keep it rather than lose the span


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


@dataclass(slots=True, eq=False)
class Span:
    id: str
    parent_id: str | None
    kind: SpanKind | str
    name: str
    start: float
    end: float | None = None
    status: SpanStatus | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[Span] = field(default_factory=list)
    parent: Span | None = field(default=None, repr=False)
    index: int = 0  # position among the parent's children (children are only ever appended)

    @property
    def running(self) -> bool:
        """True while the span has not ended (in a file read back: it never ended = incomplete)."""
        return self.end is None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    def walk(self) -> Iterator[Span]:
        stack = [self]
        while stack:
            s = stack.pop()
            yield s
            stack.extend(reversed(s.children))


Listener = Callable[[TraceEvent, Span], None]


class Trace:
    """An evented tree of spans. Not thread-safe: one thread owns a Trace and applies events.

    The engine owns one Trace per top-level run; the GUI mirrors it by applying the same events
    (delivered across threads) to its own Trace, whose listeners drive the Qt adapter.
    """

    def __init__(self, header: dict[str, Any] | None = None) -> None:
        self.header: dict[str, Any] = dict(header or {})
        self.spans: dict[str, Span] = {}
        self.roots: list[Span] = []
        self._listeners: list[Listener] = []
        self._header_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._next_id = 1
        self._id_lock = threading.Lock()
        self.skipped_lines = 0      # filled by the reader: lines it could not parse
        self.truncated = False      # filled by the reader: the last line was cut short

    # -- listening ---------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe_header(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._header_listeners.append(listener)

    def update_header(self, attributes: dict[str, Any]) -> None:
        """Record run-level facts learned after the run began (e.g. the sandbox isolation level).

        In the file they become a ``header_updated`` line the reader merges into the header.
        """
        self.header.update(attributes)
        for listener in list(self._header_listeners):
            listener(dict(attributes))

    # -- producing ---------------------------------------------------------------------------
    def new_id(self) -> str:
        with self._id_lock:
            sid = f"s{self._next_id}"
            self._next_id += 1
        return sid

    def start_span(
        self,
        kind: SpanKind,
        name: str,
        parent_id: str | None = None,
        attributes: dict[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> str:
        sid = self.new_id()
        self.apply(TraceEvent(EventType.STARTED, sid, time.time() if now is None else now,
                              parent_id=parent_id, kind=kind, name=name,
                              attributes=dict(attributes) if attributes else None))
        return sid

    def update_span(self, span_id: str, attributes: dict[str, Any] | None = None,
                    append: dict[str, str] | None = None, *, now: float | None = None) -> None:
        if not attributes and not append:
            return
        self.apply(TraceEvent(EventType.UPDATED, span_id, time.time() if now is None else now,
                              attributes=dict(attributes) if attributes else None,
                              append=dict(append) if append else None))

    def end_span(self, span_id: str, status: SpanStatus, attributes: dict[str, Any] | None = None,
                 *, now: float | None = None) -> None:
        self.apply(TraceEvent(EventType.ENDED, span_id, time.time() if now is None else now,
                              attributes=dict(attributes) if attributes else None, status=status))

    def end_open_spans(self, status: SpanStatus, *, reason: str | None = None) -> int:
        """End every span still running (deepest first). Used on cancel and on fatal errors."""
        open_spans = [s for s in self.spans.values() if s.end is None]
        depths = _depths(open_spans)
        open_spans.sort(key=lambda s: depths[s.id], reverse=True)
        attrs = {Attr.ERROR: reason} if reason else None
        for s in open_spans:
            self.end_span(s.id, status, attrs)
        return len(open_spans)

    # -- applying ----------------------------------------------------------------------------
    def apply(self, ev: TraceEvent) -> Span:
        """Apply one event to the tree, then tell the listeners. Returns the span touched."""
        if ev.type is EventType.STARTED:
            if ev.span_id in self.spans:
                raise ValueError(f"span {ev.span_id} started twice")
            parent = self.spans.get(ev.parent_id) if ev.parent_id else None
            span = Span(ev.span_id, ev.parent_id if parent else None,
                        ev.kind or "unknown", ev.name or "", ev.time,
                        attributes=dict(ev.attributes) if ev.attributes else {}, parent=parent)
            self.spans[span.id] = span
            siblings = parent.children if parent is not None else self.roots
            span.index = len(siblings)
            siblings.append(span)
            self._bump_id(span.id)
        else:
            span = self.spans.get(ev.span_id)
            if span is None:
                raise KeyError(f"event for unknown span {ev.span_id}")
            if ev.attributes:
                span.attributes.update(ev.attributes)
            if ev.append:
                for k, v in ev.append.items():
                    prev = span.attributes.get(k)
                    span.attributes[k] = (prev if isinstance(prev, str) else "") + v
            if ev.type is EventType.ENDED:
                span.end = ev.time
                span.status = ev.status or SpanStatus.OK
        for listener in list(self._listeners):
            listener(ev, span)
        return span

    def _load_dicts(self, items: Iterable[Any]) -> int:
        """Apply decoded trace lines straight to the tree (the reader's fast path; no listeners).

        Same rules as :meth:`apply`; returns how many items could not be used.
        """
        spans = self.spans
        roots = self.roots
        kinds = _KIND_BY_VALUE
        statuses = _STATUS_BY_VALUE
        bad = 0
        for d in items:
            if not isinstance(d, dict):
                bad += 1
                continue
            et = d.get("event")
            try:
                if et == "span_started":
                    sid = str(d["id"])
                    attrs = d.get("attrs")
                    if sid in spans or (attrs is not None and not isinstance(attrs, dict)):
                        bad += 1
                        continue
                    pid = d.get("parent")
                    parent = spans.get(pid) if pid else None
                    kind = d.get("kind")
                    span = Span(sid, pid if parent is not None else None,
                                kinds.get(kind, kind) if kind is not None else "unknown",
                                d.get("name") or "", float(d.get("t", 0.0)),
                                attributes=dict(attrs) if attrs else {}, parent=parent)
                    siblings = parent.children if parent is not None else roots
                    span.index = len(siblings)
                    siblings.append(span)
                    spans[sid] = span
                elif et == "span_updated" or et == "span_ended":
                    span = spans.get(str(d["id"]))
                    attrs = d.get("attrs")
                    append = d.get("append")
                    status = d.get("status")
                    if (span is None or (attrs is not None and not isinstance(attrs, dict))
                            or (append is not None and not isinstance(append, dict))
                            or (status is not None and status not in statuses)):
                        bad += 1
                        continue
                    if append and not all(isinstance(v, str) for v in append.values()):
                        bad += 1
                        continue
                    end = float(d.get("t", 0.0)) if et == "span_ended" else None
                    if attrs:
                        span.attributes.update(attrs)
                    if append:
                        a = span.attributes
                        for k, v in append.items():
                            prev = a.get(k)
                            a[k] = (prev if isinstance(prev, str) else "") + v
                    if end is not None:
                        span.end = end
                        span.status = statuses[status] if status is not None else SpanStatus.OK
                elif et == "header_updated":
                    attrs = d.get("attrs")
                    if isinstance(attrs, dict):
                        self.header.update(attrs)
                    elif attrs is not None:
                        bad += 1
                else:
                    bad += 1
            except (KeyError, ValueError, TypeError):
                bad += 1
        for sid in spans:
            if sid.startswith("s") and sid[1:].isdigit():
                n = int(sid[1:]) + 1
                if n > self._next_id:
                    self._next_id = n
        return bad

    def _bump_id(self, sid: str) -> None:
        if sid.startswith("s") and sid[1:].isdigit():
            n = int(sid[1:]) + 1
            if n > self._next_id:
                self._next_id = n

    # -- reading -----------------------------------------------------------------------------
    def get(self, span_id: str) -> Span | None:
        return self.spans.get(span_id)

    def __iter__(self) -> Iterator[Span]:
        for r in self.roots:
            yield from r.walk()

    def __len__(self) -> int:
        return len(self.spans)

    def messages_for(self, span_id: str) -> list[dict[str, Any]]:
        """The full message list an llm_call sent, rebuilt from the chain of HISTORY_FROM deltas."""
        chain: list[Span] = []
        seen: set[str] = set()
        span = self.spans.get(span_id)
        while span is not None and span.id not in seen:
            seen.add(span.id)
            chain.append(span)
            prev = span.attributes.get(Attr.HISTORY_FROM)
            span = self.spans.get(prev) if prev else None
        messages: list[dict[str, Any]] = []
        for s in reversed(chain):
            messages.extend(s.attributes.get(Attr.MESSAGES) or [])
        return messages


def _depths(spans: Iterable[Span]) -> dict[str, int]:
    """Depth of each of ``spans`` (root = 0), each ancestor chain climbed once: linear in the
    tree even when it nests thousands deep (climbing from each span would be quadratic)."""
    known: dict[str, int] = {}
    for span in spans:
        chain: list[Span] = []
        s: Span | None = span
        while s is not None and s.id not in known:
            chain.append(s)
            s = s.parent
        d = known[s.id] if s is not None else -1
        for c in reversed(chain):
            d += 1
            known[c.id] = d
    return known


# -- files -------------------------------------------------------------------------------------

# Characters ``json.dumps(..., ensure_ascii=False)`` leaves raw that must not be raw in a line of the
# file: lone surrogates (UTF-8 cannot encode them: a file name with an undecodable byte, a model's
# broken escape) and the characters other line readers split on (``str.splitlines``: NEL, U+2028,
# U+2029). JSON's own escapes (``\\uXXXX``) carry them exactly; control characters below U+0020,
# NUL among them, are escaped by ``json`` itself.
_UNSAFE_IN_LINE = re.compile("[\u0085\u2028\u2029\ud800-\udfff]")


def _escape_unsafe(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def _has_separator(line: str) -> bool:
    # Three substring tests cost next to nothing (none at all on Latin-1 text); a regex over a
    # megabyte of non-ASCII text costs more than json.dumps made it.
    return "\u2028" in line or "\u2029" in line or "\x85" in line


def safe_json_line(line: str) -> str:
    """``line`` (JSON text from ``json.dumps``) with every character that could break or split the
    line in a UTF-8 file written as a ``\\uXXXX`` escape: it reads back to the same string.

    Such characters can only stand inside JSON strings (the rest of ``json.dumps`` output is ASCII),
    where the escape means the same character. ASCII lines, the usual case, are returned at once.
    """
    if line.isascii() or _UNSAFE_IN_LINE.search(line) is None:
        return line
    return _UNSAFE_IN_LINE.sub(_escape_unsafe, line)


def encode_json_line(line: str) -> bytes:
    """``safe_json_line(line) + "\\n"`` as UTF-8, paying for the escaping only when it is needed."""
    if line.isascii():
        return (line + "\n").encode("ascii")
    if _has_separator(line):
        line = _UNSAFE_IN_LINE.sub(_escape_unsafe, line)
    try:
        return (line + "\n").encode("utf-8")
    except UnicodeEncodeError:   # lone surrogates
        return (_UNSAFE_IN_LINE.sub(_escape_unsafe, line) + "\n").encode("utf-8")


class TraceWriter:
    """Appends a trace's events to a JSON Lines file, one flushed line per event.

    Subscribe it to a Trace (``trace.subscribe(writer)``). Thread-safe for concurrent writers. Any
    string can be written (lone surrogates, control characters, NUL, U+2028 …): see
    :func:`safe_json_line`; :func:`read_trace` gives the same strings back (a surrogate *pair* held as
    two code points comes back as the one character it encodes — JSON cannot tell them apart). The
    file is private (0600) and new folders for it 0700: it holds document text and prompts.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = open_private(self.path, "wb")
        head = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **header}
        self._write(json.dumps(head, ensure_ascii=False, default=_json_default))

    @classmethod
    def append_to(cls, path: str | os.PathLike[str]) -> TraceWriter:
        """A writer that adds events to an existing trace file (a session's next turn in a new
        process); its header stays as it is. Read the file first, so new span ids follow its own."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self._lock = threading.Lock()
        cut = False
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                cut = fh.read(1) != b"\n"
        self._fh = open_private(self.path, "ab")
        if cut:                                    # the last line was cut (a crash): start a new one
            self._fh.write(b"\n")
            self._fh.flush()
        return self

    def __call__(self, ev: TraceEvent, span: Span | None = None) -> None:
        self._write(ev.to_json())

    def attach(self, trace: Trace) -> TraceWriter:
        """Write every event and header update of ``trace`` from now on."""
        trace.subscribe(self)
        trace.subscribe_header(self.write_header_update)
        return self

    def write_header_update(self, attributes: dict[str, Any]) -> None:
        """Record run-level facts learned after the header was written (e.g. the isolation level)."""
        self._write(json.dumps({"event": "header_updated", "attrs": attributes},
                               ensure_ascii=False, default=_json_default))

    def _write(self, line: str) -> None:
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(encode_json_line(line))
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TraceFormatError(ValueError):
    """The file is not an rlm-trace (or is from a newer, incompatible version)."""


def iter_trace_lines(lines: Iterable[str]) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """Yield (parsed-or-None, raw) per non-empty line."""
    for raw in lines:
        if not raw.strip():
            continue
        try:
            yield json.loads(raw), raw
        except json.JSONDecodeError:
            yield None, raw


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Rebuild a Trace from a file. Tolerates a cut-short last line and unknown or bad lines.

    Spans that never ended stay ``running`` (shown as incomplete); ``trace.truncated`` tells
    whether the last line was cut, ``trace.skipped_lines`` how many lines could not be used.
    Fast path: lines are decoded in batches and applied straight to the tree (no listeners exist
    yet), so a 100,000-span file opens well within the GUI's 2 s budget.
    """
    p = Path(path)
    with open(p, encoding="utf-8", errors="replace", newline="") as fh:
        first = fh.readline()
        try:
            header = json.loads(first) if first.strip() else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise TraceFormatError(f"{p.name} is not an RLM Desktop trace (no rlm-trace header)")
        version = header.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise TraceFormatError(
                f"{p.name} is trace format version {version}; this app reads up to "
                f"{FORMAT_VERSION}. Update RLM Desktop to open it.")
        body = fh.read()
    trace = Trace(header)
    lines = body.split("\n")
    del body
    tail = lines.pop()  # "" when the file ends with a newline; else a line cut short
    trace.truncated = bool(tail.strip())
    # Hundreds of thousands of new dicts would trigger the cyclic GC over and over (it more than
    # doubles the time); nothing here makes cycles worth collecting before we are done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        bad = trace._load_dicts(_decode_lines(lines))
        if trace.truncated:
            try:
                last = json.loads(tail)
            except json.JSONDecodeError:
                last = None  # the cut line is reported as `truncated`, not as a bad line
            if last is not None:
                bad += trace._load_dicts([last])
    finally:
        if gc_was_enabled:
            gc.enable()
    trace.skipped_lines = bad
    return trace


_BATCH = 2048


def _decode_lines(lines: list[str]) -> Iterator[Any]:
    """Parse JSON lines in batches (one ``json.loads`` per batch); a bad batch goes line by line.

    Yields one item per non-blank line: the parsed value, or None for a line that is not JSON.
    """
    lines = [ln for ln in lines if ln.strip()]
    loads = json.loads
    for i in range(0, len(lines), _BATCH):
        chunk = lines[i:i + _BATCH]
        try:
            values = loads("[" + ",".join(chunk) + "]")
        except (json.JSONDecodeError, RecursionError):
            values = None
        if isinstance(values, list) and len(values) == len(chunk):
            yield from values
            continue
        for raw in chunk:
            try:
                yield loads(raw)
            except (json.JSONDecodeError, RecursionError):
                yield None
