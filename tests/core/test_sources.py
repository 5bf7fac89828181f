"""The source index: texts a model is given are mapped back to (document, line range, page)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_desktop.core.documents import load_documents
from rlm_desktop.core.sources import SourceIndex, SourceRange, merge_ranges, merge_sources
from tests.core.pdfs import make_pdf

REPORT = "\n".join([
    "Quarterly report of the northern division",                      # 1
    "",                                                               # 2
    "Revenue rose by twelve percent compared with the last quarter.",  # 3
    "Costs were flat; headcount grew by three engineers in Oslo.",     # 4
    "The launch of the new product is planned for March 3.",          # 5
    "ok",                                                             # 6
    "Risks: the supplier in Lyon may deliver the casings late again.",  # 7
    "A very long paragraph line follows, " + "with many clauses that keep going, " * 12 + "end.",  # 8
    "Signed, the board.",                                             # 9
])
NOTES = "\n".join(f"Note {i}: nothing about revenue here, only meeting logistics and room {i * 7}."
                  for i in range(1, 21)) + "\n"


def _index() -> SourceIndex:
    return SourceIndex.build([("report.txt", REPORT, None), ("sub/notes.md", NOTES, None)])


def _lines(text: str, a: int, b: int) -> str:
    return "\n".join(text.split("\n")[a - 1:b])


def test_exact_lines_are_found_with_document_and_range() -> None:
    idx = _index()
    assert idx.locate("Summarise:\n" + _lines(REPORT, 3, 5)) == [SourceRange("report.txt", 3, 5)]
    assert idx.locate(_lines(NOTES, 10, 12)) == [SourceRange("sub/notes.md", 10, 12)]
    assert idx.lines_of("report.txt") == 9 and idx.lines_of("sub/notes.md") == 20


def test_excerpt_starting_and_ending_mid_line_counts_the_partial_lines() -> None:
    idx = _index()
    text = _lines(REPORT, 3, 5)
    assert idx.locate(text[20:-10]) == [SourceRange("report.txt", 3, 5)]


def test_whitespace_changed_and_rejoined_lines_still_match() -> None:
    idx = _index()
    rejoined = " ".join(REPORT.split("\n")[2:5])                   # lines 3–5 on one line
    assert idx.locate(rejoined) == [SourceRange("report.txt", 3, 5)]
    spaced = "\n".join("    " + line.replace(" ", "  ") for line in REPORT.split("\n")[3:5])
    assert idx.locate(spaced) == [SourceRange("report.txt", 4, 5)]
    assert idx.locate(_lines(REPORT, 3, 4).replace("\n", "\r\n\t")) == [SourceRange("report.txt", 3, 4)]


def test_slice_inside_one_long_line_is_found() -> None:
    idx = _index()
    line8 = REPORT.split("\n")[7]
    assert idx.locate(line8[150:300]) == [SourceRange("report.txt", 8, 8)]


def test_tiny_and_foreign_matches_are_ignored() -> None:
    idx = _index()
    assert idx.locate("ok") == []                                     # under SHORT_MIN_CHARS
    assert idx.locate("Quarterly") == [] and idx.locate("  Risks:\n") == []   # a lone word
    assert idx.locate("An unrelated text that appears in none of the documents at all.") == []
    assert idx.locate("") == []


def test_short_unique_excerpts_are_attributed() -> None:
    idx = _index()
    # whole short lines and a short piece of a line (under the ~40 characters a window needs)
    assert idx.locate("Signed, the board.") == [SourceRange("report.txt", 9, 9)]
    assert idx.locate("Revenue rose by twelve") == [SourceRange("report.txt", 3, 3)]
    assert idx.locate("Answer so far:\n  planned for March 3.\nnothing else") == [SourceRange("report.txt", 5, 5)]
    assert idx.locate("room 133.") == []                              # under SHORT_MIN_CHARS non-space
    assert idx.locate("logistics and room 133.") == [SourceRange("sub/notes.md", 19, 19)]
    # beside a long excerpt found through the windows: both
    text = _lines(REPORT, 3, 4) + "\n" + "Signed, the board."
    assert idx.locate(text) == [SourceRange("report.txt", 3, 4), SourceRange("report.txt", 9, 9)]


def test_common_short_strings_name_no_source() -> None:
    figures = "\n".join(f"2025-01-31 closed ticket {i:04d} for the east region" for i in range(500))
    idx = SourceIndex.build([("tickets.log", figures, None), ("memo.txt", "Net revenue 4.2 M in Q3 2025\n", None)])
    assert idx.locate("2025-01-31 closed ticket") == []              # found 500 times
    assert idx.locate("for the east region") == []
    assert idx.locate("revenue 4.2 M in Q3") == [SourceRange("memo.txt", 1, 1)]
    assert idx.locate("ticket 0417 for the east") == [SourceRange("tickets.log", 418, 418)]
    # found in two places: both named; in three: none
    two = SourceIndex.build([("a.txt", "x\nthe unit price was 12.50 EUR\n", None),
                             ("b.txt", "the unit price was 12.50 EUR\n", None)])
    assert two.locate("the unit price was 12.50 EUR") == [SourceRange("a.txt", 2, 2), SourceRange("b.txt", 1, 1)]
    three = SourceIndex.build([(f"{n}.txt", "the unit price was 12.50 EUR\n", None) for n in "abc"])
    assert three.locate("the unit price was 12.50 EUR") == []


def test_short_lookups_are_bounded_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_desktop.core import sources

    idx = _index()
    text = "Signed, the board.\nRevenue rose by twelve"
    assert idx.locate(text) == [SourceRange("report.txt", 3, 3), SourceRange("report.txt", 9, 9)]
    monkeypatch.setattr(sources, "SHORT_LOOKUPS", 1)
    assert idx.locate(text) == [SourceRange("report.txt", 9, 9)]     # the first line only
    monkeypatch.setattr(sources, "SHORT_LOOKUPS", 8)
    monkeypatch.setattr(sources, "SHORT_SCAN_CHARS", len(REPORT + NOTES) - 1)   # not one full scan
    assert idx.locate(text) == []


def test_periodic_boilerplate_does_not_invent_sources() -> None:
    lines = [f"row {i:04d} | status=ok | owner=ops-team | region=eu-west-1 | tier=gold" for i in range(300)]
    idx = SourceIndex.build([("rows.log", "\n".join(lines), None), ("other.txt", REPORT, None)])
    # two real rows: found where they are, not at the other 298 alike rows
    assert idx.locate("\n".join(lines[100:102])) == [SourceRange("rows.log", 101, 102)]
    # only the common tail of the rows: no source
    assert idx.locate("status=ok | owner=ops-team | region=eu-west-1 | tier=gold") == []


def test_lines_that_end_alike_are_not_chained_into_false_ranges() -> None:
    lines = [f"entry {i} of the register, kept with enough words to matter here" for i in range(1, 13)]
    idx = SourceIndex.build([("register.txt", "\n".join(lines), None)])
    # the shared ending of every line must not chain line k's end to line k+1's end elsewhere
    assert idx.locate(" ".join(lines[4:6])) == [SourceRange("register.txt", 5, 6)]


def test_same_passage_in_two_documents_names_both() -> None:
    shared = "This paragraph was copied verbatim into two different files of the folder."
    idx = SourceIndex.build([("a.txt", "intro\n" + shared + "\n", None), ("b.txt", shared + "\nend\n", None)])
    assert idx.locate(shared) == [SourceRange("a.txt", 2, 2), SourceRange("b.txt", 1, 1)]


def test_non_ascii_and_single_str_context() -> None:
    text = "Überschrift\nDie Straße nach Zürich ist im März gesperrt, sagt das Amt.\nschluss\n"
    idx = SourceIndex.from_context(text)
    assert idx.names == ["context"]
    assert idx.locate("…gesperrt? " + text.split("\n")[1]) == [SourceRange("context", 2, 2)]
    assert idx.locate("Zitat:\nnach Zürich ist im März\n") == [SourceRange("context", 2, 2)]   # a short one


def test_pdf_pages_from_the_loader(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "memo.pdf", ["First page says the budget is forty thousand euros.",
                                          None,
                                          "Third page: the audit found two missing invoices from May."])
    docs = load_documents([pdf])
    doc = docs.documents[0]
    assert doc.page_lines == [1, 4, 7]      # marker, text, blank line per page
    idx = SourceIndex.from_documents(docs)
    found = idx.locate("the audit found two missing invoices from May.")   # a line's tail
    assert found == [SourceRange("memo.pdf", 8, 8, page=3, end_page=3)]
    assert found[0].to_dict() == {"document": "memo.pdf", "start_line": 8, "end_line": 8, "page": 3}
    assert idx.page_for("memo.pdf", 2) == 1 and idx.page_for("memo.pdf", 4) == 2
    whole = idx.locate(doc.text or "")
    assert whole == [SourceRange("memo.pdf", 1, 8, page=1, end_page=3)]


def test_merging_ranges() -> None:
    assert merge_ranges([(5, 9), (3, 4), (12, 12), (8, 10)]) == [(3, 10), (12, 12)]
    merged = merge_sources([SourceRange("a", 3, 4), SourceRange("b", 1, 1), SourceRange("a", 5, 6),
                            SourceRange("a", 9, 9)])
    assert merged == [SourceRange("a", 3, 6), SourceRange("a", 9, 9), SourceRange("b", 1, 1)]


def test_index_is_small_next_to_the_text() -> None:
    big = "\n".join(f"line {i}: some ordinary words that make a line of prose text" for i in range(20_000))
    idx = SourceIndex.build([("big.txt", big, None)])
    assert idx.nbytes < len(big) * 0.55      # about two anchors (12 bytes each) per 60-character line
    assert idx.locate(_lines(big, 15_000, 15_003)) == [SourceRange("big.txt", 15_000, 15_003)]


def test_pending_index_builds_in_the_background_and_reports_a_failure() -> None:
    import asyncio

    import pytest

    from rlm_desktop.core.sources import PendingIndex

    pending = PendingIndex(lambda: SourceIndex.build([("report.txt", REPORT, None)]))
    assert pending.result(timeout=30).locate(_lines(REPORT, 3, 4)) == [SourceRange("report.txt", 3, 4)]
    assert asyncio.run(pending.ready()) is pending.result() and pending.done

    def broken() -> SourceIndex:
        raise MemoryError("no room for the index")
    failed = PendingIndex(broken)
    with pytest.raises(MemoryError, match="no room"):
        failed.result(timeout=30)


def test_hash_order_is_a_full_sort_even_where_top_bits_collide() -> None:
    import numpy as np

    from rlm_desktop.core import sources

    rng = np.random.default_rng(10)
    for _ in range(50):
        n = int(rng.integers(1, 3000))
        # few distinct top-32 values, so runs of equal tops with different low bits are common
        h = ((rng.integers(0, 40, n).astype(np.uint64) << np.uint64(32))
             | rng.integers(0, 12, n).astype(np.uint64))
        h[rng.random(n) < 0.3] |= np.uint64(0xFFFF_0000_0000_0000)
        a = np.arange(n, dtype=np.int64)
        order = sources._order_by_top32(h)
        hs, as_ = h[order], a[order]
        sources._finish_sort(hs, as_)
        assert np.array_equal(hs, np.sort(h))
        assert np.array_equal(h[as_], hs)        # positions moved with their hashes
