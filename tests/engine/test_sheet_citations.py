"""Spreadsheet citations and sources end to end (issue 10, "the sheet/row for spreadsheets"): a real
``book.xlsx`` (openpyxl) through ``rlm-desktop run --json`` against the scripted server (real process,
real HTTP, real REPL): the code sends Sales rows 12–18 to ``llm_query`` and prints the end of Sales
with the next sheet; the answer cites rows (``[book.xlsx:Sales!R12-R18]``), a misspelt sheet, a row
past the end and lines. The same with a real ``book.ods`` (odfpy) in process, and the exports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rlm_desktop.core.citations import citations_for, steps_for
from rlm_desktop.core.documents import load_document
from rlm_desktop.core.exporters import export_trace
from rlm_desktop.core.sources import SourceIndex
from rlm_desktop.core.trace import SpanKind, Trace, read_trace
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.engine.run import run_rlm
from tests.core.test_sheets import line_of
from tests.core.workbooks import LAST_SALES_ROW, make_book_ods, make_book_xlsx, sheet_rows
from tests.engine.conftest import TEST_KEY, make_config, make_provider, route
from tests.engine.test_cli_run import _cli
from tests.fakeserver import FakeOpenAI


def read_rows(name: str) -> str:
    """The first cell: Sales rows 12–18 to a sub-call; the end of Sales and the next sheet printed."""
    return ("```repl\n"
            f"text = context[{name!r}]\n"
            "sections = text.split('\\n\\n')\n"
            "sales = sections[0].split('\\n')[1:]\n"
            "part = '\\n'.join(l for l in sales if 12 <= int(l.split('\\t')[0]) <= 18)\n"
            "print(llm_query('Summarise these sales rows:\\n' + part))\n"
            "print('\\n'.join(sales[-2:]) + '\\n\\n' + sections[1])\n"
            "```")


def final_cited(name: str) -> str:
    return (f'```repl\nFINAL("Sales were steady [{name}:Sales!R12-R18]; the plan says so '
            f"[{name}:'Q1 plan'!R2]; see [{name}:Salez!R1], [{name}:Sales!R900] and [{name}:L2-L3].\")\n```")


def _book_dir(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    make_book_xlsx(d / "book.xlsx")
    (d / "b.txt").write_text("Board minutes: nothing about sales in here, only the date of the picnic.\n")
    return d


def test_cli_json_cites_sheets_and_rows_and_says_why_not(srv: FakeOpenAI, tmp_path: Path) -> None:
    docs = _book_dir(tmp_path)
    text = load_document(docs / "book.xlsx", "book.xlsx").text or ""
    srv.handler = route([read_rows("book.xlsx"), final_cited("book.xlsx")], sub=lambda r: "Steady sales.")
    trace_file = tmp_path / "run.jsonl"
    r = _cli("--docs", str(docs), "--query", "How were sales?", "--base-url", srv.base_url, "--model",
             "fake-root", "--trace", str(trace_file), "--json", "--allow-weak-sandbox", key=TEST_KEY)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "ok", out
    r12, r18 = line_of(text, "Sales", 12), line_of(text, "Sales", 18)
    plan2 = line_of(text, "Q1 plan", 2)
    assert out["citations"] == [
        {"document": "book.xlsx", "start_line": r12, "end_line": r18, "page": None, "verified": True,
         "why": None, "sheet": "Sales", "start_row": 12, "end_row": 18},
        {"document": "book.xlsx", "start_line": plan2, "end_line": plan2, "page": None, "verified": True,
         "why": None, "sheet": "Q1 plan", "start_row": 2, "end_row": 2},
        {"document": "book.xlsx", "start_line": None, "end_line": None, "page": None, "verified": False,
         "why": "no sheet 'Salez' in book.xlsx (sheets: Sales, Q1 plan, Costs)", "sheet": "Salez",
         "start_row": 1, "end_row": 1},
        {"document": "book.xlsx", "start_line": None, "end_line": None, "page": None, "verified": False,
         "why": f"row 900 is past the last row {LAST_SALES_ROW} of Sales", "sheet": "Sales",
         "start_row": 900, "end_row": 900},
        {"document": "book.xlsx", "start_line": 2, "end_line": 3, "page": None, "verified": False,
         "why": "no model in this run saw these lines", "sheet": "Sales", "start_row": 1, "end_row": 2}]
    # what the models saw, per sheet: the sub-call's rows, and the printed end of Sales and the next
    # sheet split in two (the empty line and the header between them belong to neither)
    got = [(s["sheet"], s["start_row"], s["end_row"]) for s in out["sources"] if s["document"] == "book.xlsx"]
    assert got == [("Sales", 12, 18), ("Sales", LAST_SALES_ROW - 1, LAST_SALES_ROW), ("Q1 plan", 1, 4)], got
    assert [s for s in out["sources"] if s["document"] == "b.txt"] == []
    system = next(m["content"] for m in srv.chat_requests[0].messages if m["role"] == "system")
    assert "[book.xlsx:Sales!R12-R18]" in system and "[path:L12-L18]" in system
    # the trace: the sub-call step records sheet and rows
    trace = read_trace(trace_file)
    sub = [rs for s, rs in steps_for(trace) if s.kind == SpanKind.SUB_CALL]
    assert [(x.sheet, x.start_row, x.end_row, x.label()) for x in sub[0]] == [
        ("Sales", 12, 18, "book.xlsx Sales R12–R18")]
    # the exports: a footnote in words, quoting the rows
    md = export_trace(trace, "md")
    row12 = "\t".join(str(v) for v in (12, *sheet_rows()["Sales"][12]))
    assert "[^1]: book.xlsx, Sales rows 12–18 — verified" in md and f"    > {row12}" in md
    assert "[^2]: book.xlsx, Q1 plan row 2 — verified" in md
    assert "[^3]: book.xlsx, Salez row 1 — not verified: no sheet 'Salez' in book.xlsx" in md
    assert "- book.xlsx Sales R12–R18" in md                      # sources seen by the models
    html = export_trace(trace, "html")
    assert "book.xlsx, Sales rows 12–18" in html and row12.split("\t")[2] in html
    j = json.loads(export_trace(trace, "json"))
    assert j["spans"][0]["attributes"]["citations"][0]["sheet"] == "Sales"


def test_an_ods_workbook_in_process_gets_the_same_sheets_and_rows(srv: FakeOpenAI, tmp_path: Path) -> None:
    doc = load_document(make_book_ods(tmp_path / "book.ods"), "book.ods")
    text = doc.text or ""
    ctx = {"book.ods": text, "b.txt": "Nothing relevant in this file at all, just a note to myself.\n"}
    srv.handler = route([read_rows("book.ods"), final_cited("book.ods")], sub=lambda r: "Steady.")
    tr = Trace({})

    async def go() -> object:
        try:
            return await run_rlm(make_config(), ctx, provider=make_provider(srv), trace=tr,
                                 sources=SourceIndex.from_context(ctx))
        finally:
            await aclose_clients()
    result = asyncio.run(go())
    assert result.status == "ok"
    cites = citations_for(tr)
    assert [(c.sheet, c.start_row, c.end_row, c.verified) for c in cites] == [
        ("Sales", 12, 18, True), ("Q1 plan", 2, 2, True), ("Salez", 1, 1, False), ("Sales", 900, 900, False),
        ("Sales", 1, 2, False)]
    assert cites[0].text is not None and cites[0].text.startswith("12\t")
    assert [(s["sheet"], s["start_row"], s["end_row"]) for s in result.sources] == [
        ("Sales", 12, 18), ("Sales", LAST_SALES_ROW - 1, LAST_SALES_ROW), ("Q1 plan", 1, 4)]
