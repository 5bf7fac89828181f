"""Spreadsheet sources and citations by sheet and row (issue 10: "the sheet/row for spreadsheets"):
real ``.xlsx`` and ``.ods`` files, written here with openpyxl and odfpy, loaded as the app loads them;
the index's line ranges get their sheet and rows (split per sheet when they cross sheets), and
``Sheet!R12-R18`` citations are checked like line citations, with reasons in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_desktop.core.citations import Citation, check_citations, parse_citations
from rlm_desktop.core.documents import load_document
from rlm_desktop.core.sheets import Workbook, Workbooks, merge_by_sheet
from rlm_desktop.core.sources import SourceIndex, SourceRange
from tests.core.workbooks import LAST_SALES_ROW, make_book_ods, make_book_xlsx, sheet_rows

MAKERS = {"book.xlsx": make_book_xlsx, "book.ods": make_book_ods}


@pytest.fixture(params=sorted(MAKERS))
def book(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(name, extracted text) of a real workbook file of each kind."""
    name = request.param
    doc = load_document(MAKERS[name](tmp_path / name), name)
    assert doc.error is None, doc.error
    return name, doc.text or ""


def line_of(text: str, sheet: str, row: int) -> int:
    """The line (1-based) holding ``row`` of ``sheet``, found by reading the text as a person would."""
    lines = text.split("\n")
    start = next(i for i, t in enumerate(lines) if t.startswith("--- sheet ") and t.endswith(f": {sheet} ---"))
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("--- sheet "):
            break
        if lines[i].split("\t", 1)[0] == str(row):
            return i + 1
    raise AssertionError(f"row {row} of {sheet} not found")


def test_the_extracted_lines_map_to_sheets_and_rows(book: tuple[str, str]) -> None:
    name, text = book
    wb = Workbook.from_text(text)
    assert wb is not None and wb.names == ["Sales", "Q1 plan", "Costs"]
    sales = wb.find("Sales")
    assert sales is not None and (sales.first_row, sales.last_row) == (1, LAST_SALES_ROW)
    assert wb.find("sales") is sales                       # names compare without case, as in Excel
    # rows 3 and 7 are empty: row 12 is not on line 12
    a, b = line_of(text, "Sales", 12), line_of(text, "Sales", 18)
    assert a != 12 and wb.lines_for(sales, 12, 18) == (a, b)
    assert wb.lines_for(sales, 7, 7) is None               # an empty row has no line
    assert wb.lines_for(sales, 49, 56) == (line_of(text, "Sales", 49), line_of(text, "Sales", 56))
    # a range of lines: its sheet and rows
    got = wb.annotate(SourceRange(name, a, b))
    assert got == [SourceRange(name, a, b, sheet="Sales", start_row=12, end_row=18)]
    assert got[0].label() == f"{name} Sales R12–R18"
    # a range crossing sheets is split per sheet; the empty line and header between belong to none
    end_sales = line_of(text, "Sales", LAST_SALES_ROW)
    plan_2 = line_of(text, "Q1 plan", 2)
    parts = wb.annotate(SourceRange(name, end_sales - 1, plan_2))
    assert [(p.sheet, p.start_row, p.end_row, p.start_line, p.end_line) for p in parts] == [
        ("Sales", 119, 120, end_sales - 1, end_sales), ("Q1 plan", 1, 2, end_sales + 2, plan_2)]
    assert "" == text.split("\n")[end_sales]               # (the line between is the empty one)
    # a text that is not a workbook's has no sheets
    assert Workbook.from_text("Region\tTotal\nNorth\t3\n") is None
    # a text that only looks like one: what is not a row number is not read as one (no crash)
    odd = Workbook.from_text("--- sheet 1: A ---\n²\tx\n99999999999999\ty\n3\tz")
    assert odd is not None and [(s.name, s.first_row, s.last_row) for s in odd.sheets] == [("A", 3, 3)]


def test_sources_carry_sheet_and_rows_only_when_known_and_survive_the_trace() -> None:
    plain = SourceRange("b.txt", 3, 4)
    assert plain.to_dict() == {"document": "b.txt", "start_line": 3, "end_line": 4, "page": None}
    r = SourceRange("book.xlsx", 11, 17, sheet="Sales", start_row=12, end_row=18)
    d = r.to_dict()
    assert d == {"document": "book.xlsx", "start_line": 11, "end_line": 17, "page": None,
                 "sheet": "Sales", "start_row": 12, "end_row": 18}
    assert SourceRange.from_dict(d) == r and SourceRange.from_dict(plain.to_dict()) == plain


def test_merging_keeps_sheets_apart_and_joins_rows_of_one_sheet(book: tuple[str, str]) -> None:
    name, text = book
    books = Workbooks({name: text, "b.txt": "x\n"})
    end_sales = line_of(text, "Sales", LAST_SALES_ROW)
    raw = [SourceRange(name, line_of(text, "Sales", 12), line_of(text, "Sales", 14)),
           SourceRange("b.txt", 1, 1),
           SourceRange(name, line_of(text, "Sales", 15), line_of(text, "Sales", 18)),
           SourceRange(name, end_sales, line_of(text, "Q1 plan", 1))]
    ann = books.annotate(raw)
    assert books.annotate([SourceRange("b.txt", 1, 1)]) == [SourceRange("b.txt", 1, 1)]
    # one document given as a str (a context of one document): it is that workbook, whatever its name
    one = Workbooks(text).annotate([raw[0]])
    assert [(r.sheet, r.start_row, r.end_row) for r in one] == [("Sales", 12, 14)]
    assert Workbooks(text).get("context") is not None           # known by its text, not its name
    assert Workbooks({"b.txt": "x\n"}).get("b.txt") is None
    merged = merge_by_sheet(ann)
    assert [(m.document, m.sheet, m.start_row, m.end_row) for m in merged] == [
        (name, "Sales", 12, 18), (name, "Sales", 120, 120), (name, "Q1 plan", 1, 1), ("b.txt", None, None, None)]


def _check(name: str, text: str, answer: str, seen_rows: list[tuple[str, int, int]]) -> list[Citation]:
    index = SourceIndex.build([(name, text, None), ("b.txt", "one\ntwo\n", None)])
    wb = Workbook.from_text(text)
    assert wb is not None
    seen = []
    for sheet, r1, r2 in seen_rows:
        s = wb.find(sheet)
        assert s is not None
        lines = wb.lines_for(s, r1, r2)
        assert lines is not None
        seen.append(SourceRange(name, *lines))
    return check_citations(parse_citations(answer), seen, index, {name: text, "b.txt": "one\ntwo\n"})


def test_sheet_citations_are_checked_like_lines_with_reasons_in_words(book: tuple[str, str]) -> None:
    name, text = book
    answer = (f"Sales rose [{name}:Sales!R12-R18], per plan [{name}:'Q1 plan'!R2]; costs "
              f"[{name}:Costs!R3–R4] [{name}:Salez!R1] [{name}:Sales!R900] [{name}:Sales!R50-R55] "
              f"[{name}:Sales!R100-R120] [b.txt:Sheet1!R1] [{name}:L2-L3]")
    got = _check(name, text, answer, [("Sales", 10, 20), ("Q1 plan", 1, 4), ("Sales", 2, 2)])
    rows = sheet_rows()
    c = got[0]
    assert (c.verified, c.sheet, c.start_row, c.end_row) == (True, "Sales", 12, 18)
    assert (c.start_line, c.end_line) == (line_of(text, "Sales", 12), line_of(text, "Sales", 18))
    assert c.text is not None and c.text.split("\n")[0].split("\t") == [str(x) for x in (12, *rows["Sales"][12])]
    assert len(c.text.split("\n")) == 7 and c.label() == f"{name} Sales R12–R18"
    assert c.to_dict()["sheet"] == "Sales" and (c.to_dict()["start_row"], c.to_dict()["end_row"]) == (12, 18)
    plan = got[1]
    assert (plan.verified, plan.sheet, plan.start_row, plan.end_line) == (True, "Q1 plan", 2,
                                                                           line_of(text, "Q1 plan", 2))
    why = [(g.verified, g.why) for g in got[2:]]
    assert why == [
        (False, "no model in this run saw these rows"),
        (False, f"no sheet 'Salez' in {name} (sheets: Sales, Q1 plan, Costs)"),
        (False, f"row 900 is past the last row {LAST_SALES_ROW} of Sales"),
        (False, "rows 50–55 are empty in Sales"),
        (False, "no model in this run saw these rows"),
        (False, "b.txt is not a spreadsheet (it has no sheets); cite lines, e.g. [b.txt:L1-L2]"),
        (True, None)]
    # a line citation into a spreadsheet is still accepted, and says which rows it holds
    lines = got[-1]
    assert (lines.sheet, lines.start_row, lines.end_row) == ("Sales", 1, 2)
    assert got[3].sheet == "Salez" and got[3].label() == f"{name} Salez R1"


def test_sheet_citations_parse_in_the_forms_models_and_spreadsheets_write() -> None:
    text = ("[book.xlsx:Sales!R12-R18] [book.xlsx:'Q1 plan'!R3] [book.xlsx:Sales!R5] [book.xlsx: Sales ! R12–R18]"
            " [book.xlsx:'Bob''s list'!R3-5] [a.txt:L3-L4; data/x.ods:Sheet1!r4] [book.xlsx:Sales!B12:D18]"
            " [book.xlsx:Sales!$C$5] [book.xlsx:Sales!R18-R12] [book.xlsx:Sales!total] [Sales!R3]")
    got = [(p.document, p.sheet, p.start, p.end) for p in parse_citations(text)]
    assert got == [("book.xlsx", "Sales", 12, 18), ("book.xlsx", "Q1 plan", 3, 3), ("book.xlsx", "Sales", 5, 5),
                   ("book.xlsx", "Sales", 12, 18), ("book.xlsx", "Bob's list", 3, 5), ("a.txt", None, 3, 4),
                   ("data/x.ods", "Sheet1", 4, 4), ("book.xlsx", "Sales", 12, 18), ("book.xlsx", "Sales", 5, 5),
                   ("book.xlsx", "Sales", 12, 18)]
