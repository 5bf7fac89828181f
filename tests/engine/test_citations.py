"""Citations and sources end to end: the scripted run of issue 10 through `rlm-desktop run --json`
(real process, real HTTP, real REPL), and the engine's per-step sources in the trace."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rlm_desktop.core.citations import citations_for, material_read_for, sources_for, steps_for
from rlm_desktop.core.exporters import export_trace
from rlm_desktop.core.sources import SourceIndex
from rlm_desktop.core.trace import Attr, SpanKind, Trace, read_trace
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.engine.run import run_rlm
from tests.engine.conftest import TEST_KEY, make_config, make_provider, route
from tests.engine.test_cli_run import _cli
from tests.fakeserver import FakeOpenAI

B_TXT = ("Board minutes, spring session.\n"
         "Attendees: the usual members.\n"
         "The launch date of the product is March 3, agreed by the board.\n"
         "Revenue grew by twelve percent over the previous quarter.\n"
         "Any other business: none.\n")
A_TXT = "Notes without anything relevant, written long before the launch was planned.\n" * 3

READ_AND_ASK = ("```repl\nlines = context['b.txt'].split('\\n')[2:4]\n"
                "part = '\\n'.join(lines)\n"
                "summary = llm_query('Summarise this passage:\\n' + part)\nprint(summary)\n```")
FINAL_CITED = ('```repl\nFINAL("The launch is on March 3 [b.txt:L3-L4], as the memo says '
               '[missing.txt:L1-L2].")\n```')


def _docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "b.txt").write_text(B_TXT)
    (d / "a.txt").write_text(A_TXT)
    return d


def test_cli_json_citations_verified_and_not_and_sources(srv: FakeOpenAI, tmp_path: Path) -> None:
    srv.handler = route([READ_AND_ASK, FINAL_CITED], sub=lambda r: "Launch March 3; revenue +12%.")
    trace_file = tmp_path / "run.jsonl"
    r = _cli("--docs", str(_docs(tmp_path)), "--query", "When is the launch?", "--base-url",
             srv.base_url, "--model", "fake-root", "--trace", str(trace_file), "--json",
             "--allow-weak-sandbox", key=TEST_KEY)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "ok"
    assert out["citations"] == [
        {"document": "b.txt", "start_line": 3, "end_line": 4, "page": None, "verified": True, "why": None},
        {"document": "missing.txt", "start_line": 1, "end_line": 2, "page": None, "verified": False,
         "why": "no such document"}]
    b = [s for s in out["sources"] if s["document"] == "b.txt"]
    assert b and any(s["start_line"] <= 3 and s["end_line"] >= 4 for s in b)
    assert not any(s["document"] == "a.txt" for s in out["sources"])      # nobody read a.txt
    assert "material_read" not in out                                    # the answer cites
    # the system prompt asked for citations, in the documented form
    system = next(m["content"] for m in srv.chat_requests[0].messages if m["role"] == "system")
    assert "[path:L12-L18]" in system
    # the trace: the sub-call step records what its model saw; the run span the checked citations
    trace = read_trace(trace_file)
    steps = steps_for(trace)
    sub = [rs for s, rs in steps if s.kind == SpanKind.SUB_CALL]
    assert sub and sub[0][0].document == "b.txt" and (sub[0][0].start_line, sub[0][0].end_line) == (3, 4)
    cites = citations_for(trace)
    assert [c.verified for c in cites] == [True, False]
    assert cites[0].text == B_TXT.split("\n")[2] + "\n" + B_TXT.split("\n")[3]   # the quoted lines
    # an old trace (no recorded citations) still gets them checked from its recorded sources
    run = trace.roots[0]
    run.attributes.pop(Attr.CITATIONS)
    old = citations_for(trace, run.id)
    assert [(c.document, c.verified, c.why) for c in old] == [
        ("b.txt", True, None), ("missing.txt", False, "no such document")]


def _run(context: dict[str, str], replies: list[str], srv: FakeOpenAI, sub: str = "ok") -> tuple[object, Trace]:
    srv.handler = route(replies, sub=lambda r: sub)
    tr = Trace({})
    index = SourceIndex.from_context(context)

    async def go() -> object:
        try:
            return await run_rlm(make_config(), context, provider=make_provider(srv), trace=tr,
                                 sources=index)
        finally:
            await aclose_clients()
    return asyncio.run(go()), tr


def test_cell_output_fed_back_is_mapped_and_reasons_for_unverified(srv: FakeOpenAI) -> None:
    ctx = {"a.txt": A_TXT, "b.txt": B_TXT}
    replies = ["```repl\nprint(context['b.txt'].split('\\n')[3])\n```",
               "FINAL(Revenue grew [b.txt:L4]; see also [b.txt:L1-L2], [b.txt:L40-L41] and "
               "[a.txt p.2].)"]
    result, tr = _run(ctx, replies, srv)
    cell = next(s for s in tr if s.kind == SpanKind.CODE_CELL)
    assert cell.attributes[Attr.SOURCES] == [{"document": "b.txt", "start_line": 4, "end_line": 4,
                                             "page": None}]
    got = [(c["document"], c["verified"], c["why"]) for c in result.citations]
    assert got == [("b.txt", True, None),
                   ("b.txt", False, "no model in this run saw these lines"),
                   ("b.txt", False, "line range beyond the end (file has 5 lines)"),
                   ("a.txt", False, "not a document with pages; cite lines, e.g. [a.txt:L1-L3]")]
    assert result.sources == [{"document": "b.txt", "start_line": 4, "end_line": 4, "page": None}]


def test_answer_without_citations_lists_material_read(srv: FakeOpenAI) -> None:
    ctx = {"a.txt": A_TXT, "b.txt": B_TXT}
    replies = ["```repl\nx = llm_query(context['b.txt'])\nprint(len(x))\n```", "FINAL(March 3.)"]
    result, tr = _run(ctx, replies, srv)
    assert result.citations == []
    assert result.material_read == [{"document": "b.txt", "start_line": 1, "end_line": 5, "page": None}]
    assert [r.document for r in material_read_for(tr)] == ["b.txt"]
    assert sources_for(tr)[0].document == "b.txt"
    md = export_trace(tr, "md")
    assert "Material read" in md and "not citations" in md and "b.txt L1–L5" in md


def test_exports_show_citations_as_footnotes_and_attributes(srv: FakeOpenAI) -> None:
    ctx = {"a.txt": A_TXT, "b.txt": B_TXT}
    result, tr = _run(ctx, [READ_AND_ASK, FINAL_CITED], srv, sub="March 3")
    quoted = B_TXT.split("\n")[2]
    md = export_trace(tr, "md")
    assert "[^1]" in md and "[^1]: b.txt L3–L4 — verified" in md and quoted in md
    assert "[^2]: missing.txt L1–L2 — not verified: no such document" in md
    html = export_trace(tr, "html")
    assert 'id="cite-1"' in html and quoted in html and "not verified: no such document" in html
    j = json.loads(export_trace(tr, "json"))
    run_attrs = j["spans"][0]["attributes"]
    assert [c["verified"] for c in run_attrs["citations"]] == [True, False]
    otlp = json.loads(export_trace(tr, "otlp"))
    spans = otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
    keys = {a["key"] for a in spans[0]["attributes"]}
    assert {"rlm.citations", "rlm.sources"} <= keys
    sub = next(s for s in spans if s["name"] == "execute_tool llm_query")
    assert "rlm.sources" in {a["key"] for a in sub["attributes"]}


def test_a_failed_index_build_loses_no_answer(srv: FakeOpenAI) -> None:
    from rlm_desktop.core.sources import PendingIndex

    def broken() -> SourceIndex:
        raise MemoryError("no room for the index")
    srv.handler = route([READ_AND_ASK, FINAL_CITED], sub=lambda r: "March 3")
    tr = Trace({})

    async def go() -> object:
        try:
            return await run_rlm(make_config(), {"b.txt": B_TXT}, provider=make_provider(srv), trace=tr,
                                 sources=PendingIndex(broken))
        finally:
            await aclose_clients()
    result = asyncio.run(go())
    assert result.status == "ok" and result.answer is not None and "March 3" in result.answer
    assert result.citations is None and not any(Attr.SOURCES in s.attributes for s in tr)


def test_a_run_without_an_answer_still_records_what_its_models_saw(srv: FakeOpenAI) -> None:
    srv.handler = route([READ_AND_ASK], sub=lambda r: "March 3")
    tr = Trace({})

    async def go() -> object:
        try:
            return await run_rlm(make_config(max_iterations=1), {"a.txt": A_TXT, "b.txt": B_TXT},
                                 provider=make_provider(srv), trace=tr,
                                 sources=SourceIndex.from_context({"a.txt": A_TXT, "b.txt": B_TXT}))
        finally:
            await aclose_clients()
    result = asyncio.run(go())
    assert result.status == "limit" and result.answer is None
    assert result.citations == [] and result.material_read is None
    assert result.sources == [{"document": "b.txt", "start_line": 3, "end_line": 4, "page": None}]


def test_models_do_not_wait_for_an_index_still_being_built(srv: FakeOpenAI, tmp_path: Path) -> None:
    """A first-time folder's index is built beside the run; the sub-call's request goes out before
    the index is ready, its sources are recorded when it is, and the answer's citations are checked
    against them — nothing is lost, nobody waited."""
    import threading

    from rlm_desktop.core.sources import PendingIndex

    released = threading.Event()
    index_ready_at_sub_call: list[bool] = []

    def slow_build() -> SourceIndex:
        assert released.wait(30), "the index build was never released"
        return SourceIndex.from_context({"a.txt": A_TXT, "b.txt": B_TXT})

    def sub(_r: object) -> str:
        index_ready_at_sub_call.append(released.is_set())
        released.set()                  # the build finishes only once the sub-call's request arrived
        return "Launch March 3; revenue +12%."

    srv.handler = route([READ_AND_ASK, FINAL_CITED], sub=sub)
    tr = Trace({})
    trace_file = tmp_path / "run.jsonl"
    from rlm_desktop.core.trace import TraceWriter
    writer = TraceWriter(trace_file, {"query": "q"}).attach(tr)

    async def go() -> object:
        try:
            return await run_rlm(make_config(), {"a.txt": A_TXT, "b.txt": B_TXT}, provider=make_provider(srv),
                                 trace=tr, sources=PendingIndex(slow_build))
        finally:
            await aclose_clients()
    result = asyncio.run(go())
    writer.close()
    assert index_ready_at_sub_call == [False]          # the request did not wait for the index
    assert result.status == "ok"
    assert [(c["document"], c["verified"]) for c in result.citations] == [("b.txt", True), ("missing.txt", False)]
    for t in (tr, read_trace(trace_file)):              # live and as written to disk
        sub_span = next(s for s in t.spans.values() if s.kind == SpanKind.SUB_CALL)
        assert sub_span.attributes[Attr.SOURCES][0]["document"] == "b.txt"
