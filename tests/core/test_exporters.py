"""Exporters: JSON, Markdown, HTML and OTLP from real traces; escaping, incomplete spans, no keys; CLI."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.cli import main as cli_main
from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits
from rlm_desktop.core.exporters import (
    ExportError,
    export_trace,
    format_for_path,
    to_otlp,
    totals,
    write_export,
)
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter, read_trace

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def make_trace(path: Path, *, cut: bool = False) -> Trace:
    """A run with every kind, hostile text everywhere, an unknown price and (optionally) a cut."""
    trace = Trace()
    writer = TraceWriter(path, {"query": "q " + EVIL}).attach(trace)
    t = 1_700_000_000.0
    run = trace.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "Who was late? " + EVIL, Attr.DEPTH: 0,
                                                       Attr.MODELS: {"root": "gpt-x", "sub": "mini"}}, now=t)
    trace.update_header({"isolation": {"level": "strong"}})
    it1 = trace.start_span(SpanKind.ITERATION, "iteration 1", run, now=t + 0.1)
    c1 = trace.start_span(SpanKind.LLM_CALL, "chat gpt-x", it1, {
        Attr.MODEL: "gpt-x", Attr.MESSAGE_COUNT: 2,
        Attr.MESSAGES: [{"role": "system", "content": "sys " + EVIL}, {"role": "user", "content": "go"}]},
        now=t + 0.2)
    trace.update_span(c1, append={Attr.RESPONSE: "Looking.\n```repl\nprint('````')\n```"}, now=t + 0.3)
    trace.end_span(c1, SpanStatus.OK, {Attr.INPUT_TOKENS: 100, Attr.OUTPUT_TOKENS: 20, Attr.CACHED_TOKENS: 64,
                                       Attr.COST_USD: 0.0125, Attr.COST_KNOWN: True,
                                       Attr.FINISH_REASON: "stop"}, now=t + 1.0)
    cell = trace.start_span(SpanKind.CODE_CELL, "cell", it1,
                            {Attr.CODE: "x = '" + EVIL + "'\nprint(len(context))  # ````"}, now=t + 1.1)
    trace.update_span(cell, append={Attr.STDOUT: "42 " + EVIL + "\n"}, now=t + 1.2)
    sub = trace.start_span(SpanKind.SUB_CALL, "llm_query", cell, {Attr.PROMPT: "summarise " + EVIL,
                                                                  Attr.MODEL: "mini", Attr.BATCH_INDEX: 0},
                           now=t + 1.3)
    c2 = trace.start_span(SpanKind.LLM_CALL, "chat mini", sub, {
        Attr.MODEL: "mini", Attr.MESSAGES: [{"role": "user", "content": "summarise"}]}, now=t + 1.4)
    trace.end_span(c2, SpanStatus.OK, {Attr.RESPONSE: "ACME", Attr.INPUT_TOKENS: 50, Attr.OUTPUT_TOKENS: 5,
                                       Attr.COST_USD: None, Attr.COST_KNOWN: False}, now=t + 1.5)
    trace.end_span(sub, SpanStatus.OK, now=t + 1.6)
    bad = trace.start_span(SpanKind.SUB_CALL, "rlm_query", cell, {Attr.PROMPT: "deeper"}, now=t + 1.7)
    trace.end_span(bad, SpanStatus.ERROR, {Attr.ERROR: "boom " + EVIL}, now=t + 1.8)
    trace.end_span(cell, SpanStatus.OK, now=t + 2.0)
    trace.end_span(it1, SpanStatus.OK, now=t + 2.1)
    it2 = trace.start_span(SpanKind.ITERATION, "iteration 2", run, now=t + 2.2)
    c3 = trace.start_span(SpanKind.LLM_CALL, "chat gpt-x", it2, {
        Attr.MODEL: "gpt-x", Attr.HISTORY_FROM: c1, Attr.MESSAGE_COUNT: 4,
        Attr.MESSAGES: [{"role": "assistant", "content": "Looking."}, {"role": "user", "content": "42"}]},
        now=t + 2.3)
    if cut:
        trace.update_span(c3, append={Attr.RESPONSE: "FINAL(AC"}, now=t + 2.4)
        writer.close()
        return trace
    trace.end_span(c3, SpanStatus.OK, {Attr.RESPONSE: "FINAL(ACME)", Attr.INPUT_TOKENS: 200,
                                       Attr.OUTPUT_TOKENS: 10, Attr.COST_USD: 0.02}, now=t + 3.0)
    fin = trace.start_span(SpanKind.FINAL, "final", it2, {Attr.ANSWER: "ACME " + EVIL}, now=t + 3.1)
    trace.end_span(fin, SpanStatus.OK, now=t + 3.2)
    trace.end_span(it2, SpanStatus.OK, now=t + 3.3)
    trace.end_span(run, SpanStatus.OK, {Attr.STOP_REASON: "final"}, now=t + 3.4)
    writer.close()
    return trace


@pytest.fixture()
def trace(tmp_path: Path) -> Trace:
    make_trace(tmp_path / "t.jsonl")
    return read_trace(tmp_path / "t.jsonl")


@pytest.fixture()
def cut_trace(tmp_path: Path) -> Trace:
    make_trace(tmp_path / "cut.jsonl", cut=True)
    return read_trace(tmp_path / "cut.jsonl")


def test_totals_count_each_model_call_once(trace: Trace) -> None:
    t = totals(trace)
    assert (t.llm_calls, t.code_cells, t.sub_calls, t.iterations) == (3, 1, 2, 2)
    assert (t.input_tokens, t.output_tokens, t.cached_tokens) == (350, 35, 64)
    assert t.cost_usd == pytest.approx(0.0325)
    assert t.cost_unknown_calls == 1 and not t.cost_known
    assert t.errors == 1 and t.incomplete_spans == 0


# -- JSON ----------------------------------------------------------------------------------------

def test_estimated_tokens_and_the_cost_priced_from_them_are_labelled(tmp_path: Path) -> None:
    """A server that reports no usage: its tokens are chars/4 estimates, and so is their price."""
    trace = Trace()
    writer = TraceWriter(tmp_path / "e.jsonl", {"query": "q"}).attach(trace)
    run = trace.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "q"}, now=1.0)
    measured = trace.start_span(SpanKind.LLM_CALL, "chat a", run, {Attr.MODEL: "a"}, now=1.1)
    trace.end_span(measured, SpanStatus.OK, {Attr.INPUT_TOKENS: 10, Attr.OUTPUT_TOKENS: 2,
                                             Attr.COST_USD: 0.01, Attr.COST_KNOWN: True}, now=1.2)
    guessed = trace.start_span(SpanKind.LLM_CALL, "chat b", run, {Attr.MODEL: "b"}, now=1.3)
    trace.end_span(guessed, SpanStatus.OK, {Attr.INPUT_TOKENS: 400, Attr.OUTPUT_TOKENS: 30,
                                            Attr.COST_USD: 0.5, Attr.COST_KNOWN: True,
                                            Attr.TOKENS_ESTIMATED: True}, now=1.4)
    trace.end_span(run, SpanStatus.OK, now=1.5)
    writer.close()
    back = read_trace(tmp_path / "e.jsonl")
    t = totals(back)
    assert t.estimated_calls == 1 and t.tokens_estimated
    assert json.loads(export_trace(back, "json"))["totals"]["tokens_estimated"] is True
    md = export_trace(back, "markdown")
    assert "| Input tokens | 410 (0 cached) (estimated for 1 of 2 calls: no usage reported) |" in md
    assert "$0.5100 (estimated: priced from estimated tokens)" in md
    assert "cost $0.5000 (estimated)" in md and "cost $0.0100 (estimated)" not in md
    html = export_trace(back, "html")
    assert "estimated for 1 of 2 calls" in html and "priced from estimated tokens" in html
    plain = read_trace(tmp_path / "e.jsonl")
    plain.spans[guessed].attributes.pop(Attr.TOKENS_ESTIMATED)
    assert "estimated" not in export_trace(plain, "markdown")


def test_json_is_one_nested_document(trace: Trace) -> None:
    doc = json.loads(export_trace(trace, "json"))
    assert doc["format"] == "rlm-trace-export"
    assert doc["header"]["isolation"] == {"level": "strong"}
    assert doc["answer"] == "ACME " + EVIL and doc["status"] == "ok"
    assert doc["totals"]["llm_calls"] == 3 and doc["totals"]["cost_known"] is False
    [run] = doc["spans"]
    assert run["kind"] == "run" and [c["name"] for c in run["children"]] == ["iteration 1", "iteration 2"]
    cell = run["children"][0]["children"][1]
    assert cell["kind"] == "code_cell" and [c["name"] for c in cell["children"]] == ["llm_query", "rlm_query"]
    assert cell["children"][0]["children"][0]["attributes"][Attr.COST_USD] is None
    assert cell["children"][1]["status"] == "error"
    assert cell["attributes"][Attr.STDOUT] == "42 " + EVIL + "\n"
    assert cell["duration_s"] == pytest.approx(0.9)

    def count(nodes: list[dict[str, Any]]) -> int:
        return sum(1 + count(n["children"]) for n in nodes)
    assert count(doc["spans"]) == len(trace)


def test_json_marks_incomplete(cut_trace: Trace) -> None:
    doc = json.loads(export_trace(cut_trace, "json"))
    assert doc["status"] == "incomplete" and doc["answer"] is None
    [run] = doc["spans"]
    assert run["incomplete"] is True and run["end"] is None
    last_call = run["children"][1]["children"][0]
    assert last_call["incomplete"] is True and last_call["status"] == "incomplete"
    assert last_call["attributes"][Attr.RESPONSE] == "FINAL(AC"
    assert doc["totals"]["incomplete_spans"] == 3


# -- Markdown ------------------------------------------------------------------------------------

def test_markdown_report_reads_well(trace: Trace) -> None:
    md = export_trace(trace, "markdown")
    assert md.startswith("# RLM Desktop run report\n")
    assert "**Query:** Who was late? \\<script\\>" in md
    assert "## Answer" in md and "ACME " + EVIL in md  # inside a fence, verbatim
    assert "| Model calls | 3 |" in md and "| Input tokens | 350 (64 cached) |" in md
    assert "price unknown for 1 calls" in md
    assert "### Iteration: iteration 1" in md and "### Iteration: iteration 2" in md
    assert "#### Code cell: cell" in md
    # Code containing a four-backtick run gets a longer fence, so the report's structure holds.
    assert "`````python\nx = '" in md
    assert "Output:" in md and "42 " + EVIL in md
    assert "boom " + EVIL in md and "— error" in md
    assert "Continues the conversation of call `s3`" in md
    assert "INCOMPLETE" not in md


def test_markdown_marks_incomplete(cut_trace: Trace) -> None:
    md = export_trace(cut_trace, "md")
    assert "**Status:** incomplete" in md and "never ended" in md
    assert "#### Model call: chat gpt-x ⚠ INCOMPLETE" in md
    assert "_No final answer._" in md


# -- HTML ----------------------------------------------------------------------------------------

class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.open_details = 0
        self.max_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag == "details":
            self.open_details += 1
            self.max_depth = max(self.max_depth, self.open_details)

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.open_details -= 1


def test_html_is_self_contained_and_escaped(trace: Trace) -> None:
    page = export_trace(trace, "html")
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags and "img" not in p.tags and "link" not in p.tags
    assert not any(k.startswith("on") for k, _ in p.attrs)
    # No resource from elsewhere: links only to anchors in the page, nothing loaded by URL.
    for key, value in p.attrs:
        if key in ("href", "src", "action"):
            assert (value or "").startswith("#"), (key, value)
    assert not re.search(r"url\(|@import|https?://", page.replace("http-equiv", ""))
    assert "default-src 'none'" in page  # CSP: nothing may load or run even if escaping failed
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # A collapsible tree: run > iteration > cell > sub-call > model call, balanced.
    assert p.open_details == 0 and p.max_depth == 5
    assert page.count("<details") == len(trace)
    # pygments colours are inline (no stylesheet classes needed).
    code_block = page[page.index('<div class="code">'):]
    assert 'style="color: #' in code_block[:2000]
    assert "ACME &lt;script&gt;" in page


def test_html_hostile_span_ids_and_kinds_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "evil.jsonl"
    path.write_text(
        json.dumps({"format": "rlm-trace", "version": 1}) + "\n"
        + json.dumps({"event": "span_started", "id": 'x"><script>1</script>', "parent": None,
                      "kind": "<b onmouseover=alert(1)>", "name": "<i>n</i>", "t": 1.0}) + "\n",
        encoding="utf-8")
    page = export_trace(read_trace(path), "html")
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags and "b" not in p.tags and "i" not in p.tags
    assert not any(k.startswith("on") for k, _ in p.attrs)
    assert "Incomplete: this step never ended" in page


def test_html_marks_incomplete(cut_trace: Trace) -> None:
    page = export_trace(cut_trace, "html")
    assert "The run never ended" in page
    assert page.count("⚠ Incomplete: this step never ended.") == 3
    assert 'class="badge st-incomplete">incomplete<' in page


# -- OTLP ----------------------------------------------------------------------------------------

def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for kv in span["attributes"]:
        (vtype, value), = kv["value"].items()
        out[kv["key"]] = value
    return out


def test_otlp_follows_the_genai_conventions(trace: Trace) -> None:
    doc = json.loads(export_trace(trace, "otlp"))
    [rs] = doc["resourceSpans"]
    res = {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "rlm-desktop"}
    [ss] = rs["scopeSpans"]
    assert ss["scope"]["name"] == "rlm_desktop"
    spans = ss["spans"]
    assert len(spans) == len(trace)
    trace_ids = {s["traceId"] for s in spans}
    assert len(trace_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", trace_ids.pop())
    ids = {s["spanId"] for s in spans}
    assert len(ids) == len(spans) and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    for s in spans:
        assert isinstance(s["startTimeUnixNano"], str) and s["startTimeUnixNano"].isdigit()
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"])
        assert "parentSpanId" not in s or s["parentSpanId"] in ids
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    [run] = by_name["invoke_agent rlm"]
    assert "parentSpanId" not in run and _attrs(run)["gen_ai.operation.name"] == "invoke_agent"
    assert run["startTimeUnixNano"] == "1700000000000000000"
    chat = by_name["chat gpt-x"][0]
    a = _attrs(chat)
    assert chat["kind"] == 3  # CLIENT
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-x"
    assert a["gen_ai.usage.input_tokens"] == "100" and a["gen_ai.usage.output_tokens"] == "20"
    assert a["gen_ai.usage.cache_read.input_tokens"] == "64"
    assert a["gen_ai.usage.cost"] == pytest.approx(0.0125)
    assert a["gen_ai.response.finish_reasons"] == {"values": [{"stringValue": "stop"}]}
    assert json.loads(a["gen_ai.input.messages"])[0] == {"role": "system",
                                                         "parts": [{"type": "text", "content": "sys " + EVIL}]}
    assert chat["status"] == {"code": 1}
    mini = _attrs(by_name["chat mini"][0])
    assert "gen_ai.usage.cost" not in mini  # unknown price: no cost, not 0
    [cell] = by_name["execute_tool repl"]
    ca = _attrs(cell)
    assert ca["gen_ai.operation.name"] == "execute_tool" and ca["gen_ai.tool.name"] == "repl"
    assert ca["gen_ai.tool.call.arguments"].startswith("x = '")
    [failed] = by_name["execute_tool rlm_query"]
    assert failed["status"]["code"] == 2 and "boom" in failed["status"]["message"]
    assert _attrs(failed)["error.type"] == "error"
    sub = by_name["execute_tool llm_query"][0]
    assert by_name["chat mini"][0]["parentSpanId"] == sub["spanId"] and sub["parentSpanId"] == cell["spanId"]


def test_otlp_is_deterministic_and_marks_incomplete(cut_trace: Trace) -> None:
    assert to_otlp(cut_trace) == to_otlp(cut_trace)
    spans = json.loads(to_otlp(cut_trace))["resourceSpans"][0]["scopeSpans"][0]["spans"]
    incomplete = [s for s in spans if _attrs(s).get("rlm.incomplete") is True]
    assert len(incomplete) == 3
    last = max(int(s["startTimeUnixNano"]) for s in spans)
    for s in incomplete:
        assert s["status"]["code"] == 2 and s["status"]["message"].startswith("incomplete")
        assert int(s["endTimeUnixNano"]) >= last  # ends at the last moment the trace knows of


# -- files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [("r.json", "json"), ("r.md", "markdown"), ("r.html", "html"),
                                           ("r.otlp.json", "otlp"), ("r.OTLP", "otlp"), ("R.HTM", "html")])
def test_format_from_file_name(name: str, fmt: str) -> None:
    assert format_for_path(Path(name)) == fmt


def test_write_export_and_errors(trace: Trace, tmp_path: Path) -> None:
    out = write_export(trace, tmp_path / "sub" / "report.html")
    assert out.read_text(encoding="utf-8") == export_trace(trace, "html")
    write_export(trace, tmp_path / "x.txt", "markdown")
    assert (tmp_path / "x.txt").read_text(encoding="utf-8").startswith("# RLM Desktop run report")
    with pytest.raises(ExportError, match="cannot tell the export format"):
        write_export(trace, tmp_path / "report.pdf")
    with pytest.raises(ExportError, match="unknown export format 'yaml'"):
        export_trace(trace, "yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "t.jsonl", "x.txt"]  # no temp leftovers


# -- no secrets ----------------------------------------------------------------------------------

CANARY = "sk-canary-7f3a9c1e5b2d4f60a8e1"


def test_exports_of_a_real_run_never_contain_the_api_key(fake_openai: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_desktop.engine.run import run_rlm

    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    fake_openai.api_key = CANARY
    fake_openai.script("Let me look.\n```repl\nprint(context[:20])\n```",
                       "FINAL(the answer is 7)")
    provider = ProviderConfig(id="canary", name="Canary server", base_url=fake_openai.base_url,
                              api_key=CANARY, root_model="m", sub_model="m", max_retries=0)
    trace = Trace()
    path = tmp_path / "run.jsonl"
    writer = TraceWriter(path, {"query": "what?"}).attach(trace)
    config = RunConfig(query="what is the answer?", root_model="m", sub_model="m",
                       limits=RunLimits(max_iterations=4))
    result = asyncio.run(run_rlm(config, "the answer is 7 " * 10, provider=provider, trace=trace))
    writer.close()
    assert result.status == "ok" and result.answer == "the answer is 7"
    assert fake_openai.requests[0].authorization == f"Bearer {CANARY}"  # the key really was used
    back = read_trace(path)
    assert CANARY not in path.read_text(encoding="utf-8")
    for fmt in ("json", "markdown", "html", "otlp"):
        text = export_trace(back, fmt)
        assert CANARY not in text and "canary-7f3a" not in text, fmt
        assert "the answer is 7" in text


# -- CLI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "markdown", "html", "otlp"])
def test_cli_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    make_trace(tmp_path / "t.jsonl")
    assert cli_main(["export", str(tmp_path / "t.jsonl"), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out == export_trace(read_trace(tmp_path / "t.jsonl"), fmt)


def test_cli_export_to_file_infers_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_trace(tmp_path / "t.jsonl")
    assert cli_main(["export", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "r.otlp.json")]) == 0
    assert "resourceSpans" in json.loads((tmp_path / "r.otlp.json").read_text(encoding="utf-8"))
    assert capsys.readouterr().out == ""


def test_cli_export_cut_trace_notes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_trace(tmp_path / "cut.jsonl", cut=True)
    assert cli_main(["export", str(tmp_path / "cut.jsonl"), "-f", "md"]) == 0
    captured = capsys.readouterr()
    assert "INCOMPLETE" in captured.out and "cut short" in captured.err


@pytest.mark.parametrize(("setup", "expected"), [
    ("missing", "no such file"),
    ("folder", "is a folder"),
    ("text", "not an RLM Desktop trace"),
    ("newer", "Update RLM Desktop"),
])
def test_cli_export_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                      expected: str) -> None:
    target = tmp_path / "x.jsonl"
    if setup == "folder":
        target.mkdir()
    elif setup == "text":
        target.write_text("hello\n")
    elif setup == "newer":
        target.write_text(json.dumps({"format": "rlm-trace", "version": 99}) + "\n")
    assert cli_main(["export", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlm-desktop export: ") and expected in err and err.count("\n") == 1


def test_cli_export_unwritable_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_trace(tmp_path / "t.jsonl")
    (tmp_path / "file").write_text("x")
    assert cli_main(["export", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "file" / "r.md")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_export_rejects_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_trace(tmp_path / "t.jsonl")
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", str(tmp_path / "t.jsonl"), "--format", "pdf"])
    assert exc.value.code == 2


def test_header_only_trace_exports_in_every_format(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"format": "rlm-trace", "version": 1, "query": "nothing ran"}) + "\n")
    trace = read_trace(path)
    assert json.loads(export_trace(trace, "json"))["spans"] == []
    assert "nothing ran" in export_trace(trace, "markdown")
    assert "nothing ran" in export_trace(trace, "html")
    otlp = json.loads(export_trace(trace, "otlp"))
    assert otlp["resourceSpans"][0]["scopeSpans"][0]["spans"] == []
