"""Documents analysts have: real Word, Excel, PowerPoint, OpenDocument, mail, EPUB and gzip files, each
written here with the library made for it, loaded with their text at known line numbers; a broken
file of each kind is reported on its own row and never stops the others."""

from __future__ import annotations

import gzip
import io
import mailbox
import zipfile
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.documents import Document, LoadCancelled, kind_for, load_document, load_documents
from rlm_desktop.engine import prompts


def lines(doc: Document) -> list[str]:
    """The document's lines, numbered from 1 as a citation counts them (index 0 is unused)."""
    assert doc.error is None, doc.error
    return ["", *(doc.text or "").split("\n")]


# -- writers: each format made with its own library ----------------------------------------------

def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Quarterly report", level=1)
    d.add_paragraph("Revenue grew 12% in Q3.")
    d.add_paragraph("")
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("Region", "Total"), ("North", "300")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("Outlook", level=2)
    d.add_paragraph("Signed, Ada")
    d.save(str(path))
    return path


def make_xlsx(path: Path, rows: int = 0) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sales"
    ws["A1"], ws["B1"], ws["C1"] = "Region", "Total", "Closed"
    ws["A2"], ws["B2"], ws["C2"] = "North", 300, datetime(2025, 3, 1)
    ws["A4"], ws["B4"] = "South\tand\nislands", 125.5    # row 3 empty: row numbers stay traceable
    for i in range(rows):
        ws.append(["bulk", i, "the same words again and again"])
    notes = wb.create_sheet("Notes")
    notes["B2"] = "checked"
    notes["A3"] = True
    offset = wb.create_sheet("Offset")   # data away from A1: row and column positions still hold
    offset["C3"], offset["E5"] = "x", 2
    offset.sheet_state = "hidden"
    wb.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation

    prs = Presentation()
    s1 = prs.slides.add_slide(prs.slide_layouts[1])           # title and content
    s1.shapes.title.text = "Plan"
    s1.placeholders[1].text_frame.text = "Ship v2 in May"
    s1.notes_slide.notes_text_frame.text = "Remember the budget"
    s2 = prs.slides.add_slide(prs.slide_layouts[5])           # title only
    s2.shapes.title.text = "Risks"
    from pptx.util import Inches
    table = s2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, row in enumerate([("Risk", "Owner"), ("Supply", "Bo")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    prs.save(str(path))
    return path


def make_odt(path: Path) -> Path:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Minutes"))
    doc.text.addElement(P(text="Decision: go ahead"))
    doc.text.addElement(P(text="Next meeting in June"))
    doc.save(str(path))
    return path


def make_ods(path: Path) -> Path:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    table = Table(name="Budget")
    for values, repeat in [(["Item", "Cost"], 1), ([], 2), (["Rent", "900"], 1)]:
        row = TableRow(numberrowsrepeated=repeat) if repeat > 1 else TableRow()
        for v in values:
            cell = TableCell()
            cell.addElement(P(text=v))
            row.addElement(cell)
        table.addElement(row)
    row = TableRow()   # a cell of two paragraphs, two empty columns, a value, empties to the edge
    two = TableCell()
    two.addElement(P(text="paid"))
    two.addElement(P(text="late"))
    row.addElement(two)
    row.addElement(TableCell(numbercolumnsrepeated=2))
    last = TableCell()
    last.addElement(P(text="x"))
    row.addElement(last)
    row.addElement(TableCell(numbercolumnsrepeated=16000))
    table.addElement(row)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))
    return path


def make_odp(path: Path) -> Path:
    from odf.draw import Frame, Page, TextBox
    from odf.opendocument import OpenDocumentPresentation
    from odf.presentation import Notes
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    doc = OpenDocumentPresentation()
    layout = PageLayout(name="PL")
    doc.automaticstyles.addElement(layout)
    master = MasterPage(name="Default", pagelayoutname=layout)
    doc.masterstyles.addElement(master)
    for n, (title, note) in enumerate([("Kick-off", "say hello"), ("Timeline", "")], 1):
        page = Page(name=f"page{n}", masterpagename=master)
        frame = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        box = TextBox()
        box.addElement(P(text=title))
        frame.addElement(box)
        page.addElement(frame)
        if note:
            notes = Notes()
            nframe = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
            nbox = TextBox()
            nbox.addElement(P(text=note))
            nframe.addElement(nbox)
            notes.addElement(nframe)
            page.addElement(notes)
        doc.presentation.addElement(page)
    doc.save(str(path))
    return path


def message(subject: str, body: str, *, html: str | None = None, attach: bool = False) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.com>"
    msg["To"] = "Bob <bob@example.com>"
    msg["Cc"] = "audit@example.com"
    msg["Date"] = "Tue, 04 Mar 2025 10:00:00 +0000"
    msg["Subject"] = subject
    if body:
        msg.set_content(body)
        if html:
            msg.add_alternative(html, subtype="html")
    elif html:
        msg.set_content(html, subtype="html")
    if attach:
        msg.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="numbers.csv")
        msg.add_attachment(bytes(2048), maintype="application", subtype="pdf", filename="scan.pdf")
    return msg


def make_epub(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", (
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            '</rootfiles></container>'))
        zf.writestr("OEBPS/content.opf", (
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<manifest><item id="c2" href="text/two.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/></manifest>'
            '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'))
        zf.writestr("OEBPS/text/one.xhtml", "<html><body><h1>Chapter One</h1><p>It was a dark night.</p>"
                                            "<p>The end of one.</p></body></html>")
        zf.writestr("OEBPS/text/two.xhtml", "<html><body><h1>Chapter Two</h1><p>Morning came.</p>"
                                            "</body></html>")
    return path


# -- each kind: text at known lines --------------------------------------------------------------

def test_docx_paragraphs_headings_and_table_rows_keep_their_lines(tmp_path: Path) -> None:
    doc = load_document(make_docx(tmp_path / "report.docx"), "report.docx")
    assert doc.kind == "docx"
    assert lines(doc)[1:] == ["# Quarterly report", "Revenue grew 12% in Q3.", "", "Region\tTotal",
                              "North\t300", "## Outlook", "Signed, Ada"]
    assert doc.chars == len(doc.text or "")
    again = load_document(tmp_path / "report.docx", "report.docx")
    assert again.text == doc.text   # stable: the same file, the same text


def test_xlsx_every_sheet_as_tsv_with_its_name_and_row_numbers(tmp_path: Path) -> None:
    doc = load_document(make_xlsx(tmp_path / "sales.xlsx"), "sales.xlsx")
    assert doc.kind == "xlsx"
    assert lines(doc)[1:] == [
        "--- sheet 1: Sales ---",
        "1\tRegion\tTotal\tClosed",
        "2\tNorth\t300\t2025-03-01",
        "4\tSouth and islands\t125.5",      # row 3 is empty; a cell's tab and newline become spaces
        "",
        "--- sheet 2: Notes ---",
        "2\t\tchecked",
        "3\tTRUE",
        "",
        "--- sheet 3: Offset (hidden) ---",
        "3\t\t\tx",
        "5\t\t\t\t\t2",
    ]


def test_pptx_slide_by_slide_with_notes_marked(tmp_path: Path) -> None:
    doc = load_document(make_pptx(tmp_path / "deck.pptx"), "deck.pptx")
    assert doc.kind == "pptx"
    assert lines(doc)[1:] == ["--- slide 1 ---", "Plan", "Ship v2 in May", "--- slide 1 notes ---",
                              "Remember the budget", "", "--- slide 2 ---", "Risks", "Risk\tOwner",
                              "Supply\tBo"]


def test_opendocument_text_spreadsheet_and_presentation(tmp_path: Path) -> None:
    odt = load_document(make_odt(tmp_path / "minutes.odt"), "minutes.odt")
    assert odt.kind == "odt"
    assert lines(odt)[1:] == ["# Minutes", "Decision: go ahead", "Next meeting in June"]
    ods = load_document(make_ods(tmp_path / "budget.ods"), "budget.ods")
    assert ods.kind == "ods"
    # Two empty rows (one element repeated twice) keep the numbering: Rent is row 4.
    assert lines(ods)[1:] == ["--- sheet 1: Budget ---", "1\tItem\tCost", "4\tRent\t900",
                              "5\tpaid late\t\t\tx"]
    odp = load_document(make_odp(tmp_path / "talk.odp"), "talk.odp")
    assert odp.kind == "odp"
    assert lines(odp)[1:] == ["--- slide 1 ---", "Kick-off", "--- slide 1 notes ---", "say hello", "",
                              "--- slide 2 ---", "Timeline"]


def test_eml_headers_attachments_listed_and_plain_body_preferred(tmp_path: Path) -> None:
    path = tmp_path / "audit.eml"
    path.write_bytes(message("Audit done", "Hello team,\nThe audit is done.\n",
                             html="<p>HTML <b>version</b></p>", attach=True).as_bytes())
    doc = load_document(path, "audit.eml")
    assert doc.kind == "eml"
    assert lines(doc)[1:] == [
        "From: Ada Lovelace <ada@example.com>", "To: Bob <bob@example.com>", "Cc: audit@example.com",
        "Date: Tue, 04 Mar 2025 10:00:00 +0000", "Subject: Audit done",
        "Attachment: numbers.csv (text/csv, 8 B)", "Attachment: scan.pdf (application/pdf, 2.0 KB)",
        "", "Hello team,", "The audit is done."]
    assert "HTML" not in (doc.text or "")   # the attachment's and the alternative's content: not read

    html_only = tmp_path / "news.eml"
    html_only.write_bytes(message("News", "", html="<html><body><p>First <i>item</i></p>"
                                                   "<script>x()</script><p>Second</p></body></html>")
                          .as_bytes())
    assert lines(load_document(html_only, "news.eml"))[-3:] == ["First item", "", "Second"]


def test_mbox_each_message_under_its_own_header(tmp_path: Path) -> None:
    path = tmp_path / "inbox.mbox"
    box = mailbox.mbox(str(path))
    box.add(message("One", "first body\n"))
    box.add(message("Two", "second body\n", attach=True))
    box.close()
    doc = load_document(path, "inbox.mbox")
    assert doc.kind == "mbox"
    got = lines(doc)
    assert got[1] == "--- message 1 ---" and got[6] == "Subject: One" and got[8] == "first body"
    assert got[9] == "" and got[10] == "--- message 2 ---" and got[15] == "Subject: Two"
    assert got[16] == "Attachment: numbers.csv (text/csv, 8 B)" and got[-1] == "second body"


def test_epub_chapters_in_spine_order(tmp_path: Path) -> None:
    doc = load_document(make_epub(tmp_path / "novel.epub"), "novel.epub")
    assert doc.kind == "epub"
    assert lines(doc)[1:] == ["--- chapter 1: OEBPS/text/one.xhtml ---", "Chapter One", "",
                              "It was a dark night.", "", "The end of one.", "",
                              "--- chapter 2: OEBPS/text/two.xhtml ---", "Chapter Two", "",
                              "Morning came."]


def test_gz_is_read_as_its_inner_name_says(tmp_path: Path) -> None:
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(b"09:00 INFO start\n09:01 ERROR disk full\n"))
    assert kind_for(path) == "log" and kind_for(tmp_path / "page.html.gz") == "html"
    assert kind_for(tmp_path / "backup.tar.gz") == "unsupported"
    doc = load_document(path, "app.log.gz")
    assert doc.kind == "log" and lines(doc)[1:3] == ["09:00 INFO start", "09:01 ERROR disk full"]
    assert doc.size_bytes == path.stat().st_size   # the file's size, not the decompressed one


# -- bad files: one per kind, each reported on its own row ----------------------------------------

def encrypted_xlsx(path: Path, source: Path) -> Path:
    from msoffcrypto.format.ooxml import OOXMLFile

    with open(source, "rb") as fh:
        OOXMLFile(fh).encrypt("secret", out := io.BytesIO())
    path.write_bytes(out.getvalue())
    return path


def test_broken_files_are_reported_per_file_and_never_stop_the_others(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "docs"
    good.mkdir()
    bad.mkdir()
    (bad / "zz-fine.txt").write_text("still loaded\n")
    half = {name: make(good / name).read_bytes() for name, make in [
        ("a.docx", make_docx), ("a.xlsx", make_xlsx), ("a.pptx", make_pptx), ("a.odt", make_odt),
        ("a.ods", make_ods), ("a.odp", make_odp), ("a.epub", make_epub)]}
    for name, data in half.items():
        (bad / f"truncated{Path(name).suffix}").write_bytes(data[: len(data) // 2])
    (bad / "notes.docx").write_text("just a text file, renamed\n")
    encrypted_xlsx(bad / "locked.xlsx", good / "a.xlsx")
    (bad / "binary.eml").write_bytes(bytes(range(256)))
    (bad / "plain.eml").write_text("no headers here\njust text\n")
    (bad / "notmail.mbox").write_text("Subject: no From_ line first\n\nbody\n")
    with zipfile.ZipFile(bad / "nobook.epub", "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    gz = gzip.compress(b"line\n" * 1000)
    (bad / "cut.log.gz").write_bytes(gz[: len(gz) // 2])
    (bad / "fake.log.gz").write_text("not compressed at all\n")
    (bad / "bomb.txt.gz").write_bytes(gzip.compress(b"a" * 3_000_000))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b" " * 25_000_000)
    (bad / "bomb.docx").write_bytes(bomb.getvalue())

    ds = load_documents([bad], max_bytes=1_000_000)
    assert [d.rel_path for d in ds.documents] == ["zz-fine.txt"]
    errors = {d.rel_path: d.error or "" for d in ds.errors}
    expected = {
        "truncated.docx": "damaged or truncated Word document",
        "truncated.xlsx": "damaged or truncated Excel workbook",
        "truncated.pptx": "damaged or truncated PowerPoint presentation",
        "truncated.odt": "damaged or truncated OpenDocument text",
        "truncated.ods": "damaged or truncated OpenDocument spreadsheet",
        "truncated.odp": "damaged or truncated OpenDocument presentation",
        "truncated.epub": "damaged or truncated EPUB book",
        "notes.docx": "not a Word document: the file is not a ZIP package",
        "locked.xlsx": "encrypted (password-protected) Excel workbook",
        "binary.eml": "binary file",
        "plain.eml": "not an e-mail message",
        "notmail.mbox": "not an mbox mailbox",
        "nobook.epub": "META-INF/container.xml is missing",
        "cut.log.gz": "truncated gzip file",
        "fake.log.gz": "not a gzip file",
        "bomb.txt.gz": "decompresses to over the 976.6 KB limit",
        "bomb.docx": "over the 19.1 MB this app reads for one file (a ZIP bomb",
    }
    assert set(errors) == set(expected)
    for name, text in expected.items():
        assert text in errors[name], (name, errors[name])


def test_damaged_ole2_file_is_not_called_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "old.xlsx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))   # OLE2 magic, nothing behind
    doc = load_document(path, "old.xlsx")
    assert "OLE2 compound file that cannot be read" in (doc.error or "")
    assert "encrypted" not in (doc.error or "")


# -- limits and cancel ---------------------------------------------------------------------------

def test_extracted_text_over_the_limit_is_refused_not_cut(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "big.xlsx", rows=5000)
    assert path.stat().st_size < 100_000
    doc = load_document(path, "big.xlsx", max_bytes=100_000)
    assert doc.text is None and "over the 97.7 KB limit per file" in (doc.error or "")


def test_cancel_stops_inside_a_long_workbook(tmp_path: Path) -> None:
    make_xlsx(tmp_path / "big.xlsx", rows=5000)
    token = CancelToken()

    def progress(done: int, total: int, rel: str) -> None:
        if rel == "big.xlsx":
            token.cancel("user")   # after the loader's own check: only the row loop can see it

    with pytest.raises(LoadCancelled):
        load_documents([tmp_path / "big.xlsx"], cancel=token, progress=progress)


# -- the system prompt describes the documents by kind ---------------------------------------------

def test_system_prompt_describes_kinds_with_guidance_and_is_deterministic(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_xlsx(folder / "sales.xlsx")
    make_pptx(folder / "deck.pptx")
    make_docx(folder / "report.docx")
    (folder / "app.log.gz").write_bytes(gzip.compress(b"09:00 INFO start\n"))
    (folder / "data.json").write_text('{"a": 1}')
    box = mailbox.mbox(str(folder / "inbox.mbox"))
    box.add(message("One", "body\n"))
    box.close()

    def prompt() -> str:
        ds = load_documents([folder])
        assert not ds.errors
        info = prompts.describe_context(ds.context_value())
        return prompts.system_prompt(info, sub_model="s", depth=0, max_depth=1, max_iterations=5,
                                     max_output_chars=1000, cell_timeout_s=5, max_sub_calls=5)

    first = prompt()
    assert first == prompt()   # same documents, byte-identical prompt
    assert "- prose (1: docx 1) —" in first and "- tables (1: xlsx 1) —" in first
    assert "- slides (1: pptx 1) —" in first and "`--- slide N notes ---`" in first
    assert "- mail (1: mbox 1) —" in first and "- logs (1: log 1) —" in first
    assert "- JSON (1: json 1) —" in first and "row number" in first
    # Families appear in a fixed order, whatever the documents' names.
    order = [first.index(f"- {f} (") for f in ("prose", "tables", "slides", "mail", "logs", "JSON")]
    assert order == sorted(order)
    assert "- code (" not in first
    # Spreadsheet advice only where there are spreadsheets: a CSV has no sheet headers or row numbers.
    csv_only = prompts.kinds_description(prompts.describe_context({"a.csv": "x,y", "b.tsv": "x"}))
    assert "- tables (2: csv 1, tsv 1) — read the header row" in csv_only and "sheet" not in csv_only
    # A single document described with the kind the loader detected; plain text gets no kind block.
    one = prompts.describe_context("x", kinds={"sales.xlsx": "xlsx"})
    assert "- tables (1: xlsx 1)" in prompts.kinds_description(one)
    assert prompts.kinds_description(prompts.describe_context("x")) == ""


def test_eml_defective_header_shown_as_written_and_unknown_charset_read_with_a_warning(
        tmp_path: Path) -> None:
    path = tmp_path / "odd.eml"
    path.write_bytes(b"From: =?utf-8?q?Z=C3=BCrich?= <z@example.ch>\nTo: <<<bad@@\nSubject: Odd\n"
                     b"Content-Type: text/plain; charset=nonexistent\n\nprice 5 \xe9\n")
    doc = load_document(path, "odd.eml")
    assert lines(doc)[1:] == ["From: Zürich <z@example.ch>", "To: <<<bad@@", "Subject: Odd", "",
                              "price 5 é"]
    assert "could not be decoded as declared" in (doc.warning or "") and "cp1252" in (doc.warning or "")


def test_every_line_break_is_a_newline_so_line_numbers_agree_however_counted(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_paragraph("left\u2028right")      # Word's line separator; Qt's preview breaks there too
    d.add_paragraph("after\x85next")
    d.add_paragraph("last")
    d.save(str(tmp_path / "breaks.docx"))
    doc = load_document(tmp_path / "breaks.docx", "breaks.docx")
    assert lines(doc)[1:] == ["left", "right", "after", "next", "last"]
    assert (doc.text or "").split("\n") == (doc.text or "").splitlines()


@pytest.mark.parametrize("maker,name", [(make_docx, "r.docx"), (make_xlsx, "r.xlsx")])
def test_an_office_file_swapped_for_an_outside_link_after_the_scan_is_not_read(
        tmp_path: Path, maker: object, name: str) -> None:
    # Office parsers read the descriptor the loader opened and checked, not the name again: a link
    # swapped in between the scan and the load (to a workbook outside the folder) is refused.
    from rlm_desktop.core.documents import scan_paths

    root, outside = tmp_path / "chosen", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    maker(root / name)                                  # type: ignore[operator]
    maker(outside / name)                               # type: ignore[operator]
    scan = scan_paths([root])
    (root / name).unlink()
    (root / name).symlink_to(outside / name)
    ds = load_documents(scan)
    assert [d.rel_path for d in ds.documents] == []
    assert "outside the folder" in (ds.errors[0].error or "")
