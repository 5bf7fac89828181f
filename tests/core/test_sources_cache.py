"""The source index's cache on disk: a folder indexed before is not indexed again, and the cache
can never give the index of other text (its file is named by a 128-bit hash of what was indexed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from rlm_desktop.core import sources
from rlm_desktop.core.documents import DocumentSet, load_documents
from rlm_desktop.core.sources import SourceIndex, SourceRange

LINES = [f"Line {i}: the shipment of lot {i * 37} left the Rotterdam depot on schedule." for i in range(1, 401)]


@pytest.fixture(autouse=True)
def _cache_small_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "CACHE_MIN_CHARS", 0)      # cache even these small test folders


def _folder(tmp_path: Path, text: str) -> DocumentSet:
    folder = tmp_path / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text(text)
    (folder / "other.txt").write_text("An unrelated note about the canteen menu for the week of May 4.\n")
    return load_documents([folder])


def _cache_files() -> list[Path]:
    sources.wait_for_cache_writes()
    return sorted(sources._cache_folder().glob("*.idx"))


def test_a_folder_indexed_before_is_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _folder(tmp_path, "\n".join(LINES) + "\n")
    first = SourceIndex.from_documents(docs)
    [cached] = _cache_files()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700

    def no_build(*_: object) -> SourceIndex:
        raise AssertionError("the index was built again instead of read from the cache")
    monkeypatch.setattr(SourceIndex, "build", no_build)
    again = SourceIndex.from_documents(load_documents([tmp_path / "docs"]))
    for name in sources._ARRAYS:
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert again.names == first.names and again.line_counts == first.line_counts
    assert again.locate("\n".join(LINES[199:201])) == [SourceRange("log.txt", 200, 201)]


def test_a_changed_document_is_indexed_again_never_served_stale(tmp_path: Path) -> None:
    docs = _folder(tmp_path, "\n".join(LINES) + "\n")
    SourceIndex.from_documents(docs)
    # the same file, same size, same modification time: only the text differs (lines 200 and 201 swapped)
    path = tmp_path / "docs" / "log.txt"
    st = path.stat()
    swapped = LINES[:199] + [LINES[200], LINES[199]] + LINES[201:]
    path.write_text("\n".join(swapped) + "\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    idx = SourceIndex.from_documents(load_documents([tmp_path / "docs"]))
    assert idx.locate(LINES[199]) == [SourceRange("log.txt", 201, 201)]
    assert len(_cache_files()) == 2


def test_a_broken_or_foreign_cache_file_is_replaced_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    docs = _folder(tmp_path, "\n".join(LINES) + "\n")
    SourceIndex.from_documents(docs)
    [cached] = _cache_files()
    whole = cached.read_bytes()
    for broken in (b"RLMSIDX\n not really an index", whole[:len(whole) // 2], whole[:20]):
        cached.write_bytes(broken)
        caplog.clear()
        idx = SourceIndex.from_documents(docs)
        assert idx.locate(LINES[10] + "\n" + LINES[11]) == [SourceRange("log.txt", 11, 12)]
        assert "unreadable" in caplog.text
        assert _cache_files() == [cached] and cached.read_bytes() == whole      # written again
    # another folder's index put under this folder's name: its key does not match, it is not used
    other = _folder(tmp_path / "b", "\n".join(reversed(LINES)) + "\n")
    SourceIndex.from_documents(other)
    files = _cache_files()
    foreign = next(p for p in files if p != cached)
    os.replace(foreign, cached)
    caplog.clear()
    idx = SourceIndex.from_documents(docs)
    assert idx.locate(LINES[10] + "\n" + LINES[11]) == [SourceRange("log.txt", 11, 12)]
    assert "does not fit" in caplog.text


def test_only_the_most_recently_used_indexes_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "CACHE_KEEP", 2)
    for i in range(4):
        SourceIndex.from_documents(_folder(tmp_path / str(i), f"version {i}\n" + "\n".join(LINES)))
        if i == 1:
            kept = _cache_files()
    assert len(_cache_files()) == 2 and not set(kept) & set(_cache_files())
    newest = _cache_files()
    monkeypatch.setattr(sources, "CACHE_MAX_BYTES", 1)        # room for the newest alone
    SourceIndex.from_documents(_folder(tmp_path / "4", "version 4\n" + "\n".join(LINES)))
    [only] = _cache_files()
    assert only not in newest


def test_an_unwritable_cache_only_costs_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setattr(sources, "_cache_folder", lambda: blocker / "sources")
    idx = SourceIndex.from_documents(_folder(tmp_path, "\n".join(LINES) + "\n"))
    assert idx.locate(LINES[5]) == [SourceRange("log.txt", 6, 6)]


def test_pages_survive_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.core.pdfs import make_pdf

    pdf = make_pdf(tmp_path / "memo.pdf", ["First page says the budget is forty thousand euros.",
                                          "Second page: the audit found two missing invoices from May."])
    docs = load_documents([pdf])
    SourceIndex.from_documents(docs)
    assert len(_cache_files()) == 1

    def no_build(*_: object) -> SourceIndex:
        raise AssertionError("the index was built again instead of read from the cache")
    monkeypatch.setattr(SourceIndex, "build", no_build)
    idx = SourceIndex.from_documents(load_documents([pdf]))
    assert idx.pages_of("memo.pdf") == docs.documents[0].page_lines
    assert idx.locate("the audit found two missing invoices from May.") == [
        SourceRange("memo.pdf", 5, 5, page=2, end_page=2)]
