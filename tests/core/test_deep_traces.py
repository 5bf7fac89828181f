"""Traces nested thousands deep (issue 8 item 11): read back and exported to every format without
RecursionError, and the JSON and HTML exports stay readable (nesting capped, nothing lost)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.exporters import FORMATS, MAX_NESTING, export_trace, write_export
from rlm_desktop.core.trace import SpanKind, SpanStatus, Trace, read_trace

DEEP = 50_000
_KINDS = ("iteration", "code_cell", "sub_call", "run")


def write_deep_trace(path: Path, depth: int = DEEP, *, open_from: int | None = None) -> Path:
    """A crafted trace file: ``depth`` spans, each the only child of the one before (s1 is the
    run). Spans from ``open_from`` on never end (a cut-short file). Written line by line."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": "rlm-trace", "version": 1, "query": "how deep?"}) + "\n")
        for i in range(1, depth + 1):
            kind = "run" if i == 1 else _KINDS[i % 4]
            attrs: dict[str, Any] = {"depth": i // 4}
            if kind == "code_cell" and i % 1000 == 3:      # a few cells: pygments is not the subject
                attrs["code"] = f"x = {i}\nprint(x)"
                attrs["stdout"] = f"{i}\n"
            elif kind == "sub_call":
                attrs["prompt"] = f"level {i}"
            fh.write(json.dumps({"event": "span_started", "id": f"s{i}", "t": float(i),
                                 "parent": f"s{i - 1}" if i > 1 else None, "kind": kind,
                                 "name": f"step {i}", "attrs": attrs}) + "\n")
        for i in range(depth, 0, -1):
            if open_from is not None and i >= open_from:
                continue
            end_attrs = {"answer": "deep"} if i == 1 else None
            fh.write(json.dumps({"event": "span_ended", "id": f"s{i}", "t": float(2 * depth - i),
                                 "status": "ok", **({"attrs": end_attrs} if end_attrs else {})}) + "\n")
    return path


@pytest.fixture(scope="module")
def deep_trace(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    return read_trace(write_deep_trace(tmp_path_factory.mktemp("deep") / "deep.jsonl"))


def _json_depth(doc: Any) -> int:
    """Nesting levels of a decoded JSON value (iteratively)."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def test_a_deep_file_is_read_back_whole(deep_trace: Trace) -> None:
    assert len(deep_trace) == DEEP and deep_trace.skipped_lines == 0
    order = [s.id for s in deep_trace]                      # Trace.__iter__ walks the tree
    assert order == [f"s{i}" for i in range(1, DEEP + 1)]
    last = deep_trace.get(f"s{DEEP}")
    assert last is not None and last.parent is not None and last.parent.id == f"s{DEEP - 1}"


def test_json_export_of_a_deep_trace_nests_at_most_max_nesting_and_loses_nothing(deep_trace: Trace) -> None:
    text = export_trace(deep_trace, "json")
    doc = json.loads(text)                                   # Python's own reader can read it
    assert doc["answer"] == "deep" and doc["totals"]["sub_calls"] == DEEP // 4
    nodes: dict[str, dict[str, Any]] = {}
    stack = [(n, None) for n in doc["spans"]]
    while stack:
        node, shown_under = stack.pop()
        nodes[node["id"]] = node
        node["_under"] = shown_under
        stack.extend((c, node["id"]) for c in node["children"])
    assert len(nodes) == DEEP
    for i in (1, 2, MAX_NESTING, MAX_NESTING + 1, MAX_NESTING + 2, DEEP):
        n = nodes[f"s{i}"]
        assert n["depth"] == i - 1 and n["parent"] == (f"s{i - 1}" if i > 1 else None)
        assert n["name"] == f"step {i}" and n["status"] == "ok"
    # nested up to the cap, then listed in order under the ancestor at the last nested level
    assert nodes[f"s{MAX_NESTING}"]["_under"] == f"s{MAX_NESTING - 1}"
    assert nodes[f"s{MAX_NESTING + 1}"]["_under"] == f"s{MAX_NESTING}"
    assert nodes[f"s{DEEP}"]["_under"] == f"s{MAX_NESTING}"
    flat = [c["id"] for c in nodes[f"s{MAX_NESTING}"]["children"]]
    assert flat == [f"s{i}" for i in range(MAX_NESTING + 1, DEEP + 1)]
    assert _json_depth(doc) <= 2 * MAX_NESTING + 10
    assert "nested at most" in doc["notes"]["nesting"]


class _DetailsDepth(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.depth = self.deepest = 0
        self.ids: list[str] = []
        self.unbalanced = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "details":
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
            self.ids.append(dict(attrs).get("id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.depth -= 1
            self.unbalanced |= self.depth < 0


def test_html_export_of_a_deep_trace_is_balanced_and_capped(deep_trace: Trace) -> None:
    text = export_trace(deep_trace, "html")
    p = _DetailsDepth()
    p.feed(text)
    p.close()
    assert p.depth == 0 and not p.unbalanced
    assert p.deepest == MAX_NESTING + 1          # nested to the cap; each deeper step is one box
    assert p.ids == [f"s{i}" for i in range(1, DEEP + 1)]
    assert f'inside <a href="#s{DEEP - 1}">s{DEEP - 1}</a>' in text
    assert "nested deeper than" in text


def test_markdown_and_otlp_exports_of_a_deep_trace(deep_trace: Trace) -> None:
    md = export_trace(deep_trace, "markdown")
    assert f"step {DEEP}" in md and "```text\ndeep\n```" in md
    spans = json.loads(export_trace(deep_trace, "otlp"))["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == DEEP
    by_name = {next(a["value"]["stringValue"] for a in s["attributes"] if a["key"] == "rlm.span.id"): s
               for s in spans}
    assert by_name[f"s{DEEP}"]["parentSpanId"] == by_name[f"s{DEEP - 1}"]["spanId"]


def test_every_format_of_a_deep_cut_short_trace_writes(tmp_path: Path) -> None:
    trace = read_trace(write_deep_trace(tmp_path / "cut.jsonl", 5_000, open_from=4_000))
    assert sum(1 for s in trace if s.running) == 1_001
    for fmt in FORMATS:
        out = write_export(trace, tmp_path / f"deep.{fmt}", fmt)
        assert out.stat().st_size > 0
    doc = json.loads((tmp_path / "deep.json").read_text(encoding="utf-8"))
    assert doc["totals"]["incomplete_spans"] == 1_001


def test_ending_the_open_spans_of_a_deep_live_trace_goes_deepest_first() -> None:
    trace = Trace({})
    parent = None
    for i in range(3_000):
        parent = trace.start_span(SpanKind.SUB_CALL if i else SpanKind.RUN, f"l{i}", parent)
    ended: list[str] = []
    trace.subscribe(lambda ev, span: ended.append(span.name))
    assert trace.end_open_spans(SpanStatus.CANCELLED, reason="stop") == 3_000
    assert ended == [f"l{i}" for i in range(2_999, -1, -1)]
    assert all(s.status is SpanStatus.CANCELLED for s in trace)
