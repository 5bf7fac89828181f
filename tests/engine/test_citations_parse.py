"""Citations: parsing the forms models write, and the reasons an unverified one gives."""

from __future__ import annotations

from rlm_desktop.core.citations import check_citations, citations_for, parse_citations
from rlm_desktop.core.sources import SourceIndex, SourceRange
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace

DOCS = {
    "notes/a.txt": "\n".join(f"a line {i}" for i in range(1, 121)) + "\n",
    "b.txt": "\n".join(f"b line {i}" for i in range(1, 11)) + "\n",
}
PDF_TEXT = "--- page 1 ---\none\n\n--- page 2 ---\ntwo\n\n--- page 3 ---\nthree"


def _index() -> SourceIndex:
    return SourceIndex.build([("notes/a.txt", DOCS["notes/a.txt"], None), ("b.txt", DOCS["b.txt"], None),
                              ("memo.pdf", PDF_TEXT, [1, 4, 7])])


def _parsed(text: str) -> list[tuple[str, int, int, bool]]:
    return [(p.document, p.start, p.end, p.pages) for p in parse_citations(text)]


def test_parse_variants() -> None:
    assert _parsed("x [b.txt:L3-L4] y") == [("b.txt", 3, 4, False)]
    assert _parsed("[b.txt:L5]") == [("b.txt", 5, 5, False)]
    assert _parsed("[b.txt:L3–L7] [b.txt: L3 - 9] [b.txt:L9-L3]") == [
        ("b.txt", 3, 7, False), ("b.txt", 3, 9, False), ("b.txt", 3, 9, False)]
    assert _parsed("[memo.pdf p.3] [memo.pdf, pp. 2-3] [memo.pdf page 1] [memo.pdf:p2]") == [
        ("memo.pdf", 3, 3, True), ("memo.pdf", 2, 3, True), ("memo.pdf", 1, 1, True),
        ("memo.pdf", 2, 2, True)]
    assert _parsed("[notes/a.txt:L1-L2; b.txt:L5]") == [("notes/a.txt", 1, 2, False), ("b.txt", 5, 5, False)]
    assert [p.raw for p in parse_citations("[a.txt:L1-L2; b.txt:L5]")] == ["[a.txt:L1-L2]", "[b.txt:L5]"]
    assert _parsed("[`my file.txt`:L2]") == [("my file.txt", 2, 2, False)]
    # brackets that are not citations are left alone
    assert _parsed("see [1], [link](http://x), [TODO], [a.txt], [L3-L4], list[0]") == []
    assert _parsed(None) == [] and _parsed("") == []


def _check(answer: str, seen: list[SourceRange]) -> list[tuple[str, bool, str | None]]:
    return [(c.document, c.verified, c.why) for c in check_citations(parse_citations(answer), seen,
                                                                     _index(), DOCS)]


def test_verification_reasons() -> None:
    seen = [SourceRange("notes/a.txt", 10, 20), SourceRange("memo.pdf", 5, 5, page=2)]
    assert _check("[notes/a.txt:L15-L30]", seen) == [("notes/a.txt", True, None)]       # overlaps
    assert _check("[notes/a.txt:L21-L30]", seen) == [
        ("notes/a.txt", False, "no model in this run saw these lines")]
    assert _check("[notes/a.txt:L119-L121]", seen) == [
        ("notes/a.txt", False, "line range beyond the end (file has 120 lines)")]
    assert _check("[notes/a.txt:L0]", seen) == [
        ("notes/a.txt", False, "line range beyond the end (file has 120 lines)")]
    assert _check("[missing.txt:L1-L2]", seen) == [("missing.txt", False, "no such document")]
    assert _check("[memo.pdf p.2]", seen) == [("memo.pdf", True, None)]
    assert _check("[memo.pdf p.3]", seen) == [("memo.pdf", False, "no model in this run saw these lines")]
    assert _check("[memo.pdf p.4]", seen) == [("memo.pdf", False, "page beyond the end (file has 3 pages)")]
    assert _check("[b.txt p.1]", seen)[0][2].startswith("not a document with pages")


def test_names_resolve_by_unique_tail_and_context() -> None:
    seen = [SourceRange("notes/a.txt", 1, 3)]
    cites = check_citations(parse_citations("[a.txt:L2]"), seen, _index(), DOCS)
    assert (cites[0].document, cites[0].verified, cites[0].text) == ("notes/a.txt", True, "a line 2")
    one = SourceIndex.from_context(DOCS["b.txt"], name="b.txt")
    cites = check_citations(parse_citations("[context:L1-L2]"), [SourceRange("b.txt", 2, 2)], one,
                            {"b.txt": DOCS["b.txt"]})
    assert (cites[0].document, cites[0].verified, cites[0].text) == ("b.txt", True, "b line 1\nb line 2")
    c = cites[0]
    assert c.label() == "b.txt L1–L2" and c.to_dict()["start_line"] == 1


def test_quote_is_bounded() -> None:
    seen = [SourceRange("notes/a.txt", 1, 120)]
    c = check_citations(parse_citations("[notes/a.txt:L1-L100]"), seen, _index(), DOCS)[0]
    assert c.verified and c.text is not None
    assert c.text.startswith("a line 1\n") and "[… 60 more lines]" in c.text and "a line 41" not in c.text


def test_citations_from_an_old_trace_without_documents() -> None:
    tr = Trace({})
    run = tr.start_span(SpanKind.RUN, "run", None, {
        Attr.CONTEXT: {"type": "dict[str, str]", "count": 2,
                       "documents": [{"name": "notes/a.txt", "chars": 1}, {"name": "b.txt", "chars": 1}]}})
    cell = tr.start_span(SpanKind.CODE_CELL, "cell", run, {})
    tr.end_span(cell, SpanStatus.OK, {Attr.SOURCES: [{"document": "b.txt", "start_line": 2,
                                                      "end_line": 3, "page": None}]})
    tr.end_span(run, SpanStatus.OK, {Attr.ANSWER: "x [b.txt:L3] [b.txt:L9] [zzz.txt:L1] [memo.pdf p.1]"})
    got = [(c.document, c.verified, c.why) for c in citations_for(tr, run)]
    assert got == [("b.txt", True, None), ("b.txt", False, "no model in this run saw these lines"),
                   ("zzz.txt", False, "no such document"),
                   ("memo.pdf", False, "no such document")]
