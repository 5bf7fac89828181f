"""Spreadsheets for the sheet/row tests, written with the libraries made for them (openpyxl, odfpy):
``book.xlsx`` / ``book.ods`` with a *Sales* sheet (rows 1–120, rows 3, 7 and 50–55 empty), a sheet
whose name has spaces (*Q1 plan*) and a *Costs* sheet."""

from __future__ import annotations

import random
from pathlib import Path

SHEETS = ("Sales", "Q1 plan", "Costs")
LAST_SALES_ROW = 120
EMPTY_SALES_ROWS = frozenset({3, 7, *range(50, 56)})
WORDS = ("late", "early", "paid", "open", "disputed", "shipped", "returned", "weather", "strike", "audit",
         "discount", "renewal", "pilot", "bulk", "urgent", "partial", "credit", "invoice", "refund", "trial")
CITIES = ("Oslo", "Lyon", "Porto", "Graz", "Turku", "Cork", "Brno", "Gent", "Pula", "Bari", "Vigo")


def sales_row(i: int) -> list[str | int]:
    """Row ``i`` of Sales (row 1 is the header); distinct words so each row's text is its own."""
    if i == 1:
        return ["Region", "Customer", "Amount", "Note"]
    rnd = random.Random(i)
    return [rnd.choice(CITIES), f"customer {rnd.randrange(10_000)} of {rnd.choice(CITIES)}",
            rnd.randrange(1000), " ".join(rnd.choice(WORDS) for _ in range(6))]


def sheet_rows() -> dict[str, dict[int, list[str | int]]]:
    """Sheet name → row number → the cells (only non-empty rows)."""
    sales = {i: sales_row(i) for i in range(1, LAST_SALES_ROW + 1) if i not in EMPTY_SALES_ROWS}
    plan = {1: ["Goal", "Owner"], 2: ["open two stores in the north before the summer", "Ada Lovelace"],
            4: ["hire a regional manager for the southern branches", "Grace Hopper"]}
    costs = {i: [f"cost line {i} for the warehouse in {CITIES[i % len(CITIES)]}", i * 41 % 500]
             for i in range(2, 31)}
    costs[1] = ["Item", "Cost"]
    return {"Sales": sales, "Q1 plan": plan, "Costs": dict(sorted(costs.items()))}


def make_book_xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    first = True
    for name, rows in sheet_rows().items():
        ws = wb.active if first else wb.create_sheet(name)
        ws.title = name
        first = False
        for r, cells in rows.items():
            for c, v in enumerate(cells, 1):
                ws.cell(row=r, column=c, value=v)
    wb.save(str(path))
    return path


def make_book_ods(path: Path) -> Path:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    for name, rows in sheet_rows().items():
        table = Table(name=name)
        last = max(rows)
        r = 1
        while r <= last:
            if r not in rows:               # a run of empty rows as one repeated element
                n = 1
                while r + n <= last and r + n not in rows:
                    n += 1
                table.addElement(TableRow(numberrowsrepeated=n) if n > 1 else TableRow())
                r += n
                continue
            row = TableRow()
            for v in rows[r]:
                cell = TableCell()
                cell.addElement(P(text=str(v)))
                row.addElement(cell)
            table.addElement(row)
            r += 1
        doc.spreadsheet.addElement(table)
    doc.save(str(path))
    return path
