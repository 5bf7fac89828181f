"""Where a text came from: an index over the loaded documents that maps any text back to
(document, line range) — and the page for PDFs. Qt-free.

Built once per set of documents (:meth:`SourceIndex.build`, ``from_documents``, ``from_context``);
:meth:`SourceIndex.locate` maps a text (a sub-call prompt, a cell output) to
:class:`SourceRange` values. The engine records them per step as ``Attr.SOURCES``;
:mod:`rlm_desktop.core.citations` checks an answer's citations against them.

How it matches (whitespace-insensitive shingles): each document's UTF-8 bytes are stripped of ASCII
whitespace (and control characters); an *anchor* is taken at the start of every non-blank line and every ``STEP`` bytes
inside long lines, and where each non-blank line ends, keyed by a hash of the ``K`` stripped bytes from there (the window may run
into the next lines). A text is stripped the same way and hashed at *every* position, so an excerpt
that starts mid-line, re-joins lines, or changes spacing or indentation still hits the anchors it
contains. Hits on one diagonal (same document, same offset between text and document) form one
match; a match shorter than ``MIN_MATCH_BYTES`` stripped bytes (about 40 characters) is ignored, so
common short lines do not count. A line of the text that no window matched but that holds a short
excerpt (a quoted figure) is looked up verbatim, and named only when found in at most
``SHORT_MAX_HITS`` places, a bounded number of lookups per call.

Cost (``rlm-desktop bench sources``, 100 MB, 2 cores): the index keeps 12 bytes per anchor (about
two per line) plus 4 per line — under half the text's size — not the text. Building it is numpy
over the whole text (strip, hash, a radix order of the hashes): about 0.5 s, several times the
0.13 s the loader takes for the same (cached) files, so it runs on a background thread
(:class:`PendingIndex`) beside the sandbox start and the first root call. A folder indexed before
is read back from a cache file (:meth:`SourceIndex.from_documents`): what it costs is hashing the
text (XXH3-128, ~7 ms per 100 MB) to find and check it; its arrays are mapped, not read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rlm_desktop.core.documents import DocumentSet

log = logging.getLogger(__name__)

# Window hashed at each anchor (stripped bytes; a multiple of 8) and the stride of extra anchors
# inside long lines: an excerpt inside one line is found once it holds STEP + K stripped bytes.
K = 32
STEP = 48
# Matches shorter than this many non-whitespace bytes (about 40 characters) are ignored: a common
# short line, a name. One window is that long, so one hit is a match: hashes are 64-bit (a chance
# hit among millions of anchors is about 1 in 10^7 per megabyte of text).
MIN_MATCH_BYTES = K
# A window found at more places than this (a separator line, a licence header) names no source.
MAX_REPEATS = 64
# A match needs one window found at no more places than this (see locate()).
RARE_REPEATS = 8
# A bit per hash prefix (about 8 bits per anchor, at most 2^25 bits = 4 MB): a text's windows whose
# bit is clear are not looked up (most of them), so mapping a long prompt is several times faster.
_FILTER_MAX_BITS = 25
# Lines of a text that no window matched, looked up verbatim (see SourceIndex._short_lines): at
# least this many non-space characters in two or more words, attributed only when found in at
# most SHORT_MAX_HITS places; per locate() call at most SHORT_LOOKUPS lines and SHORT_SCAN_CHARS
# characters of document text searched (str.find: about 20 ms per 100 MB).
SHORT_MIN_CHARS = 12
SHORT_MAX_HITS = 2
SHORT_LOOKUPS = 8
SHORT_SCAN_CHARS = 200_000_000
# A text is hashed in pieces of this many bytes (bounded temporary memory for huge prompts).
_CHUNK = 4 * 1024 * 1024

_SPACE = np.uint8(32)     # bytes up to the space (whitespace, control characters) are skipped
_NL = np.uint8(10)
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_M4 = np.uint64(0xD6E8FEB86659FD93)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S48 = np.uint64(48)
_LOW32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class SourceRange:
    """Lines ``start_line``..``end_line`` (1-based, inclusive) of ``document``; ``page`` (1-based)
    of a PDF's first line in the range, else None; in a spreadsheet the ``sheet`` the lines are in
    and its rows ``start_row``..``end_row`` (core/sheets.py). ``to_dict`` is the trace's form."""

    document: str
    start_line: int
    end_line: int
    page: int | None = None
    end_page: int | None = None
    sheet: str | None = None
    start_row: int | None = None
    end_row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"document": self.document, "start_line": self.start_line,
                             "end_line": self.end_line, "page": self.page}
        if self.end_page is not None and self.end_page != self.page:
            d["end_page"] = self.end_page
        if self.sheet is not None:
            d["sheet"] = self.sheet
            if self.start_row is not None:
                d["start_row"], d["end_row"] = self.start_row, self.end_row
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceRange:
        def opt_int(v: Any) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None
        sheet = d.get("sheet")
        return cls(str(d["document"]), int(d["start_line"]), int(d["end_line"]),
                   opt_int(d.get("page")), opt_int(d.get("end_page")),
                   sheet if isinstance(sheet, str) else None, opt_int(d.get("start_row")),
                   opt_int(d.get("end_row")))

    def label(self) -> str:
        """``b.txt L3–L4`` (``report.pdf p.2 L40–L52``, ``book.xlsx Sales R12–R18``), as a person reads it."""
        if self.sheet is not None:
            rows = "" if self.start_row is None else f" R{self.start_row}" if \
                self.end_row in (None, self.start_row) else f" R{self.start_row}–R{self.end_row}"
            return f"{self.document} {self.sheet}{rows}"
        lines = f"L{self.start_line}" if self.start_line == self.end_line else \
            f"L{self.start_line}–L{self.end_line}"
        page = f" p.{self.page}" if self.page is not None else ""
        return f"{self.document}{page} {lines}"


def _strip(data: bytes) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    return b[b > _SPACE]


def _hash_at(s: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """64-bit hashes of the K bytes of ``s`` at each position (``s`` padded by K bytes)."""
    n = len(s) - 7
    words = np.ndarray((n,), dtype="<u8", buffer=s, strides=(1,))   # unaligned 8-byte reads
    h = words[positions] * _M1
    for j, m in zip(range(8, K, 8), (_M2, _M3, _M1 ^ _M2), strict=False):
        h ^= words[positions + j] * m
    h ^= h >> _S29
    h *= _M4
    h ^= h >> _S32
    return h


def _order_by_top32(h: np.ndarray) -> np.ndarray:
    """An order of ``h`` by its top 32 bits (equal tops keep their order): two stable 16-bit
    argsorts, which numpy does as radix sorts — three to four times faster than sorting the
    64-bit hashes; :func:`_finish_sort` then sorts the few runs of equal tops."""
    lo = (h >> _S32).astype(np.uint16)
    order = np.argsort(lo, kind="stable")
    del lo
    hi = (h >> _S48).astype(np.uint16)[order]
    return order[np.argsort(hi, kind="stable")]


def _finish_sort(h: np.ndarray, a: np.ndarray) -> None:
    """Sort ``h`` (ordered by its top 32 bits) fully, ``a`` along with it, in place: only runs of
    equal top bits holding different hashes are out of order (about n²/2^33 pairs: a few hundred
    short runs for millions of hashes), so only those are sorted."""
    desc = np.flatnonzero(h[1:] < h[:-1])
    if not len(desc):
        return
    tops = np.unique(h[desc] >> _S32 << _S32)
    start = np.searchsorted(h, tops)
    size = np.searchsorted(h, tops | _LOW32, side="right") - start
    at = np.repeat(start, size) + (np.arange(int(size.sum()), dtype=np.int64)
                                   - np.repeat(np.cumsum(size) - size, size))
    o = np.argsort(h[at], kind="stable")      # runs are in order of their tops: this sorts within
    h[at] = h[at][o]
    a[at] = a[at][o]


class _Scratch:
    """Reusable work buffers, grown as needed, one per name."""

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int, dtype: type[np.generic]) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is None or len(buf) < n:
            buf = self._bufs[name] = np.empty(max(n, 1 << 16), dtype=dtype)
        return buf[:n]


def _padded(s: np.ndarray) -> np.ndarray:
    out = np.zeros(len(s) + K, dtype=np.uint8)
    out[:len(s)] = s
    return out


@dataclass(slots=True)
class _DocIndex:
    """One document's part of the index, offsets relative to its own stripped text."""

    hashes: np.ndarray
    pos: np.ndarray
    line_starts: np.ndarray
    line_count: int
    stripped: int


def _index_document(text: str, scratch: _Scratch) -> _DocIndex:
    data = text.encode("utf-8", "surrogatepass")
    n = len(data)
    b = np.frombuffer(data, dtype=np.uint8)
    # scratch buffers reused from document to document: a fresh array per step costs
    # more in page faults than the step itself
    keep = np.greater(b, _SPACE, out=scratch.get("keep", n, np.bool_))
    nl = np.flatnonzero(np.equal(b, _NL, out=scratch.get("nl", n, np.bool_)))
    # line i covers bytes [starts[i], starts[i+1]); its stripped length is the kept count
    starts = np.empty(len(nl) + 1, dtype=np.int64)
    starts[0] = 0
    np.add(nl, 1, out=starts[1:])
    kept_before = np.zeros(len(starts) + 1, dtype=np.int64)
    if n:
        # (uint8 → uint32 is ten times faster than summing bools into int64); a final
        # empty line (after a final newline) holds nothing
        real = starts[:len(starts) - (1 if starts[-1] >= n else 0)]
        seg = np.add.reduceat(keep.view(np.uint8), real, dtype=np.uint32)
        np.cumsum(seg, out=kept_before[1:len(real) + 1])
        kept_before[len(real) + 1:] = kept_before[len(real)]
    m = int(kept_before[-1])
    s = scratch.get("s", m + K, np.uint8)
    np.compress(keep, b, out=s[:m])
    s[m:] = 0                                         # hashed windows may read past the end
    sstart = kept_before[:-1]
    length = np.diff(kept_before)
    # anchors: every non-blank line start, then every STEP bytes while a whole window
    # fits in the line (measured on 100 MB: of 2.9 M anchors these in-line ones are 0.6 M and
    # the line-end ones below 1.1 M; without either, 4 to 6 of the source tests miss a range,
    # while the build is only 3 % or 14 % faster)
    n_per = np.where(length > 0, 1 + np.maximum(length - K, 0) // STEP, 0)
    total = int(n_per.sum())
    first = np.repeat(sstart, n_per)
    offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n_per) - n_per, n_per)
    pos = first + offs * STEP
    # ... and the window that ends each line: an excerpt that starts mid-line, or ends
    # with a short line, still holds one anchor of that line
    # (not where it is the line's last STEP anchor already)
    ends = (sstart + length - K)[(length > 0) & (sstart + length >= K)
                                 & ((length < K) | ((length - K) % STEP != 0))]
    pos = np.concatenate((pos, ends))
    pos = pos[pos + K <= m]                           # a full window only
    hashes = _hash_at(s, pos) if len(pos) else np.zeros(0, dtype=np.uint64)
    # a final newline ends the last line; it does not start another
    return _DocIndex(hashes, pos, sstart, len(starts) - (1 if data.endswith(b"\n") else 0), m)


class SourceIndex:
    """Maps text back to documents. Build with :meth:`build` (or ``from_documents`` /
    ``from_context``); query with :meth:`locate`. Immutable once built; safe to share."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.line_counts: list[int] = []
        self.page_lines: list[list[int] | None] = []     # per document: first line of each page
        self._doc_line_base = np.zeros(1, dtype=np.int64)  # index of each doc's first line in _lines
        self._lines = np.zeros(0, dtype=np.int64)         # stripped global offset of every line
        self._hashes = np.zeros(0, dtype=np.uint64)       # sorted anchor hashes
        self._anchor_pos = np.zeros(0, dtype=np.int64)    # their stripped global offsets
        self._doc_base = np.zeros(1, dtype=np.int64)      # stripped global offset of each doc
        self._by_name: dict[str, int] = {}
        # the documents' text, for looking up short lines verbatim (the caller's strings, shared:
        # not counted in nbytes)
        self._texts: list[str] = []
        self._text_chars = 0
        self._filter = np.zeros(0, dtype=np.uint8)
        self._filter_shift = np.uint64(63)

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, documents: Iterable[tuple[str, str, Sequence[int] | None]]) -> SourceIndex:
        """Index ``(name, text, page start lines or None)`` triples (text with ``\\n`` newlines).
        (Two threads were tried: no faster on two busy cores; one keeps it predictable.)"""
        idx = cls()
        hashes: list[np.ndarray] = []
        anchors: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        line_base = [0]
        doc_base = [0]
        base = 0
        scratch = _Scratch()
        for name, text, pages in documents:
            part = _index_document(text, scratch)
            if len(part.pos):
                hashes.append(part.hashes)
                anchors.append(part.pos + base)
            lines.append(part.line_starts + base)
            idx.names.append(name)
            idx._texts.append(text)
            idx._text_chars += len(text)
            idx.line_counts.append(part.line_count)
            idx.page_lines.append(list(pages) if pages else None)
            line_base.append(line_base[-1] + len(part.line_starts))
            base += part.stripped
            doc_base.append(base)
        del scratch
        # offsets fit 32 bits below 4 GB of text: 8 bytes per anchor and 4 per line
        pos_type = np.uint32 if base < 2**32 else np.int64
        if hashes:
            h = np.concatenate(hashes)
            a = np.concatenate(anchors)
            del hashes, anchors
            order = _order_by_top32(h)
            h = h[order]
            a = a[order].astype(pos_type)
            del order
            _finish_sort(h, a)
            idx._hashes, idx._anchor_pos = h, a
            bits = min(_FILTER_MAX_BITS, max(10, (8 * len(idx._hashes)).bit_length()))
            idx._filter_shift = np.uint64(64 - bits)
            present = np.zeros(1 << bits, dtype=bool)
            present[idx._hashes >> idx._filter_shift] = True
            idx._filter = np.packbits(present, bitorder="little")
        if lines:
            idx._lines = np.concatenate(lines).astype(pos_type)
        idx._doc_line_base = np.array(line_base, dtype=np.int64)
        idx._doc_base = np.array(doc_base, dtype=np.int64)
        idx._by_name = {n: i for i, n in enumerate(idx.names)}
        return idx

    @classmethod
    def from_documents(cls, docs: DocumentSet, *, cache: bool = True) -> SourceIndex:
        """The index of loaded documents (named by ``rel_path``, as in ``context``).

        ``cache``: reuse the index built for the very same documents before (a file under the
        user cache folder named by a 128-bit hash of every name, page list and text indexed, so it
        can only be the index of exactly these documents), and keep this one there when it was built
        (written on a thread of its own, so the index is returned at once).
        Sets under ``CACHE_MIN_CHARS`` characters are built, not cached."""
        items = [(d.rel_path, d.text or "", d.page_lines) for d in docs.documents]
        if not cache or sum(len(t) for _, t, _ in items) < CACHE_MIN_CHARS:
            return cls.build(items)
        try:
            key = _content_key(items)
            path = _cache_folder() / f"{key}.idx"
        except (OSError, RuntimeError, ImportError) as exc:   # no user cache folder (no HOME, …): build only
            log.info("source index cache unavailable: %s", exc)
            return cls.build(items)
        idx = _read_cache(path, key, items)
        if idx is None:
            idx = cls.build(items)
            _write_cache_later(path, key, idx)
        return idx

    @classmethod
    def from_context(cls, context: str | dict[str, str], name: str = "context") -> SourceIndex:
        """The index of a ``context`` value (a ``str`` is one document called ``name``)."""
        if isinstance(context, str):
            return cls.build([(name, context, None)])
        return cls.build((str(k), v if isinstance(v, str) else str(v), None) for k, v in context.items())

    # -- the IndexSource protocol (a ready index is its own result) -------------------------------
    def result(self, timeout: float | None = None) -> SourceIndex:
        return self

    async def ready(self) -> SourceIndex:
        return self

    # -- facts ------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays (the documents' text is the caller's, shared)."""
        return sum(a.nbytes for a in (self._hashes, self._anchor_pos, self._lines,
                                      self._doc_line_base, self._doc_base, self._filter))

    def has(self, name: str) -> bool:
        return name in self._by_name

    def lines_of(self, name: str) -> int:
        """How many lines ``name`` has (KeyError when it is not indexed)."""
        return self.line_counts[self._by_name[name]]

    def pages_of(self, name: str) -> list[int] | None:
        """First line of each page of ``name`` (None when it has no pages)."""
        return self.page_lines[self._by_name[name]]

    def page_for(self, name: str, line: int) -> int | None:
        pages = self.pages_of(name)
        if not pages:
            return None
        return int(np.searchsorted(np.asarray(pages), line, side="right"))

    # -- matching ---------------------------------------------------------------------------------
    def locate(self, text: str) -> list[SourceRange]:
        """The document ranges ``text`` holds excerpts of, merged per document and ordered by
        document and line: excerpts of at least about 40 characters (hashed windows), and lines
        of the text that matched nothing so but are found verbatim in at most ``SHORT_MAX_HITS``
        places of the documents (a short quoted figure; see :meth:`_short_lines`)."""
        if not text:
            return []
        data = text.encode("utf-8", "surrogatepass")
        s = _strip(data)
        ranges: dict[int, list[tuple[int, int]]] = {}
        st, en, di, qs, qe = self._window_matches(s)
        for a, b, d in zip(st.tolist(), en.tolist(), di.tolist(), strict=True):
            first_line = int(np.searchsorted(self._lines, a, side="right")) - 1
            last_line = int(np.searchsorted(self._lines, b - 1, side="right")) - 1
            base = int(self._doc_line_base[d])
            ranges.setdefault(d, []).append((first_line - base + 1, last_line - base + 1))
        for d, line in self._short_lines(text, data, len(s), qs, qe):
            ranges.setdefault(d, []).append((line, line))
        out: list[SourceRange] = []
        for d in sorted(ranges):
            name = self.names[d]
            for a, b in merge_ranges(ranges[d]):
                out.append(SourceRange(name, a, b, self.page_for(name, a), self.page_for(name, b)))
        return out

    def _window_matches(self, s: np.ndarray) -> tuple[np.ndarray, ...]:
        """Matches of the stripped text ``s`` through the hashed windows: their stripped document
        ranges [start, end), documents, and stripped ranges of ``s`` [qstart, qend)."""
        empty = tuple(np.zeros(0, dtype=np.int64) for _ in range(5))
        if len(s) < MIN_MATCH_BYTES or not len(self._hashes):
            return empty
        qpos_all: list[np.ndarray] = []
        dpos_all: list[np.ndarray] = []
        rep_all: list[np.ndarray] = []
        for lo in range(0, len(s) - K + 1, _CHUNK):
            hi = min(len(s) - K + 1, lo + _CHUNK)
            part = _padded(s[lo:hi + K - 1])
            q = np.arange(hi - lo, dtype=np.int64)
            h = _hash_at(part, q)
            prefix = (h >> self._filter_shift).astype(np.int64)
            maybe = (self._filter[prefix >> 3] >> (prefix & 7).astype(np.uint8)) & 1 == 1
            q, h = q[maybe], h[maybe]
            at = np.searchsorted(self._hashes, h)
            at[at >= len(self._hashes)] = 0
            hit = self._hashes[at] == h
            if not hit.any():
                continue
            q = q[hit] + lo
            at = at[hit]
            # equal hashes (a line repeated in the documents): every anchor with that hash
            right = np.searchsorted(self._hashes, h[hit], side="right")
            counts = right - at
            counts[counts > MAX_REPEATS] = 0               # boilerplate repeated all over: no source
            rep_all.append(np.repeat(counts, counts))
            q = np.repeat(q, counts)
            if not len(q):
                continue
            firsts = np.repeat(at, counts)
            offs = np.arange(len(q), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            dpos_all.append(self._anchor_pos[firsts + offs].astype(np.int64))
            qpos_all.append(q)
        if not qpos_all:
            return empty
        q = np.concatenate(qpos_all)
        d = np.concatenate(dpos_all)
        reps = np.concatenate(rep_all)
        # one match = hits on one diagonal within one document, no gap longer than a window + STEP
        diag = d - q
        doc = np.searchsorted(self._doc_base, d, side="right") - 1
        order = np.lexsort((q, diag, doc))
        q, d, diag, doc, reps = q[order], d[order], diag[order], doc[order], reps[order]
        brk = np.ones(len(q), dtype=bool)
        brk[1:] = (diag[1:] != diag[:-1]) | (doc[1:] != doc[:-1]) | (q[1:] - q[:-1] > STEP + K)
        last = np.append(brk[1:], True)               # sorted by q within a diagonal: d rises too
        g_start = d[brk]
        g_end = d[last] + K
        g_doc = doc[brk]
        g_end = np.minimum(g_end, self._doc_base[g_doc + 1])
        # a match made only of windows found in many places (periodic text: every line ends
        # alike) is a coincidence; a real excerpt holds some window found in few places
        g_rarest = np.minimum.reduceat(reps, np.flatnonzero(brk))
        ok = (g_end - g_start >= MIN_MATCH_BYTES) & (g_rarest <= RARE_REPEATS)
        ok = (g_end - g_start >= MIN_MATCH_BYTES) & (g_rarest <= RARE_REPEATS)
        return g_start[ok], g_end[ok], g_doc[ok], q[brk][ok], q[last][ok] + K

    def _short_lines(self, text: str, data: bytes, stripped: int, qs: np.ndarray,
                     qe: np.ndarray) -> list[tuple[int, int]]:
        """(document, line) of lines of ``text`` too short for the windows, found verbatim.

        A line of the text (trimmed) qualifies when no window match covers any of it, it has
        ``SHORT_MIN_CHARS`` to ``K + STEP`` non-space bytes in at least two words (a lone word
        names no source), and it is new in this text. Each is searched for in every
        document's text (``str.find``: several GB/s) and attributed only when found in at most
        ``SHORT_MAX_HITS`` places (a date or a phrase found all over names no source). At most
        ``SHORT_LOOKUPS`` lines are looked up per call, and no more than ``SHORT_SCAN_CHARS``
        characters scanned: a few tens of milliseconds on a 100 MB folder."""
        if not self._texts or stripped < SHORT_MIN_CHARS:
            return []
        budget = min(SHORT_LOOKUPS, SHORT_SCAN_CHARS // max(1, self._text_chars))
        if budget <= 0:
            return []
        # per line of the text: its stripped start and length, and whether a window match covers
        # any of it (all in stripped bytes, as the matches are)
        b = np.frombuffer(data, dtype=np.uint8)
        kept = np.zeros(len(b) + 1, dtype=np.int64)
        np.cumsum(b > _SPACE, out=kept[1:])
        nl = np.flatnonzero(b == _NL)
        start = kept[np.concatenate(([0], nl + 1))]
        size = kept[np.concatenate((nl, [len(b)]))] - start
        cover = np.zeros(stripped + 1, dtype=np.int64)
        np.add.at(cover, qs, 1)
        np.add.at(cover, qe, -1)
        covered = np.zeros(stripped + 1, dtype=np.int64)
        np.cumsum(np.cumsum(cover)[:-1] > 0, out=covered[1:])
        candidates = np.flatnonzero((size >= SHORT_MIN_CHARS) & (size <= K + STEP)
                                    & (covered[start + size] == covered[start]))
        if not len(candidates):
            return []
        lines = text.split("\n")
        found: list[tuple[int, int]] = []
        tried: set[str] = set()
        for i in candidates.tolist():
            line = lines[i].strip()
            if len(line.split()) < 2 or line in tried:
                continue
            tried.add(line)
            hits = self._find_verbatim(line)
            if len(hits) <= SHORT_MAX_HITS:
                found.extend(hits)
            if len(tried) >= budget:
                break
        return found

    def _find_verbatim(self, needle: str) -> list[tuple[int, int]]:
        """(document, line) of each place ``needle`` (no newline) is found, stopping past
        ``SHORT_MAX_HITS`` places."""
        hits: list[tuple[int, int]] = []
        for d, doc in enumerate(self._texts):
            at = doc.find(needle)
            while at >= 0:
                hits.append((d, doc.count("\n", 0, at) + 1))
                if len(hits) > SHORT_MAX_HITS:
                    return hits
                at = doc.find(needle, at + 1)
        return hits


# -- the index cache on disk ------------------------------------------------------------------------
# Sets smaller than this are built (a few milliseconds), not cached.
CACHE_MIN_CHARS = 4_000_000
# Index files kept in the cache folder (the most recently used; about 45 % of the text's size each).
CACHE_KEEP = 8
# ... and no more bytes than this together (the newest is kept whatever its size).
CACHE_MAX_BYTES = 1 << 30
# Bump when what build() makes changes: an older file is then never read (its name differs).
_CACHE_FORMAT = f"rlm-desktop source index 2 K={K} STEP={STEP}"
_MAGIC = b"RLMSIDX\n"
_CACHE_DTYPES = ("<u8", "<u4", "<i8", "|u1")
_ARRAYS = ("_hashes", "_anchor_pos", "_lines", "_doc_line_base", "_doc_base", "_filter")


def _cache_folder() -> Path:
    from rlm_desktop.core.paths import cache_dir

    return cache_dir() / "sources"


def _content_key(items: Sequence[tuple[str, str, Sequence[int] | None]]) -> str:
    """A 128-bit XXH3 over the format and every document's name, pages and text (each
    length-prefixed), in order: the cache file of an index can only be found again by the same
    documents (an accidental collision: 1 in 2^128). XXH3 is not made to resist a forged
    collision; the cache is the user's own (0700), read only for their own documents, and the
    worst a forgery could do is point at wrong lines. 100 MB hashes in about 7 ms (SHA-256: 60).
    Raises ImportError without the ``xxhash`` package (then there is no cache)."""
    import xxhash

    digest = xxhash.xxh3_128(_CACHE_FORMAT.encode())
    for name, text, pages in items:
        head = json.dumps([name, list(pages) if pages else None]).encode("utf-8", "surrogatepass")
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(head).to_bytes(8, "little") + head + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _read_cache(path: Path, key: str,
                items: Sequence[tuple[str, str, Sequence[int] | None]]) -> SourceIndex | None:
    """The cached index at ``path`` when it is there, whole, and made for ``key`` and ``items``;
    else None (a file that does not fit is removed). Its arrays are mapped, not read: pages come
    in as lookups touch them (the index is never written to)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(16)
            if len(head) != 16 or head[:8] != _MAGIC:
                raise ValueError("not an index file")
            length = int.from_bytes(head[8:], "little")
            if length > size - 16:
                raise ValueError(f"a {length}-byte header in {size} bytes: cut short or not an index")
            meta = json.loads(fh.read(length).decode("utf-8", "surrogatepass"))
        if size != int(meta["size"]):
            raise ValueError(f"{size} bytes, not {meta['size']}: cut short")
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        arrays: dict[str, np.ndarray] = {}
        for name, (dt, off, n) in meta["arrays"].items():
            if dt not in _CACHE_DTYPES or off % 64:
                raise ValueError(f"array {name!r}: dtype {dt!r} at offset {off}")
            arrays[name] = mapped[off:off + n * np.dtype(dt).itemsize].view(dt)
            if len(arrays[name]) != n:
                raise ValueError(f"array {name!r} runs past the end")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("source index cache %s is unreadable (%s); building the index again", path.name, exc)
        _discard(path)
        return None
    names = [name for name, _, _ in items]
    pages = [list(p) if p else None for _, _, p in items]
    if (meta.get("format") != _CACHE_FORMAT or meta.get("key") != key or meta.get("names") != names
            or meta.get("pages") != pages or set(arrays) != set(_ARRAYS)
            or len(arrays["_doc_base"]) != len(names) + 1
            or len(arrays["_hashes"]) != len(arrays["_anchor_pos"])):
        log.warning("source index cache %s does not fit these documents; building the index again", path.name)
        del arrays, mapped
        _discard(path)
        return None
    idx = SourceIndex()
    for name, arr in arrays.items():
        setattr(idx, name, arr)
    idx.names = names
    idx.page_lines = pages
    idx.line_counts = [int(n) for n in meta["line_counts"]]
    idx._filter_shift = np.uint64(int(meta["filter_shift"]))
    idx._by_name = {n: i for i, n in enumerate(names)}
    idx._texts = [text for _, text, _ in items]
    idx._text_chars = sum(len(t) for t in idx._texts)
    try:
        os.utime(path)                     # most recently used: kept longest
    except OSError:
        pass                               # (a read-only cache still serves)
    return idx


_writes: set[threading.Thread] = set()
_writes_lock = threading.Lock()


def _write_cache_later(path: Path, key: str, idx: SourceIndex) -> None:
    """:func:`_write_cache` on a thread of its own (not a daemon: an exiting program finishes the
    file rather than leave a partial one)."""
    def run() -> None:
        try:
            _write_cache(path, key, idx)
        finally:
            with _writes_lock:
                _writes.discard(threading.current_thread())

    thread = threading.Thread(target=run, name="rlm-index-cache", daemon=False)
    with _writes_lock:
        _writes.add(thread)
    thread.start()


def wait_for_cache_writes(timeout: float | None = None) -> None:
    """Wait for the index files being written to the cache (tests, benchmarks)."""
    with _writes_lock:
        threads = list(_writes)
    for thread in threads:
        thread.join(timeout)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the source index cache file %s: %s", path.name, exc)


def _write_cache(path: Path, key: str, idx: SourceIndex) -> None:
    """Keep ``idx`` at ``path`` (0600 in a 0700 folder, written whole then moved into place), then
    drop all but the ``CACHE_KEEP`` most recently used index files (``CACHE_MAX_BYTES`` together).
    A failure only costs the cache.

    The file: ``_MAGIC``, the length of a JSON header, the header (what the index is of, and each
    array's dtype, offset and length), then the arrays, each at a multiple of 64 bytes."""
    from rlm_desktop.core.paths import private_dir

    arrays = [(name, np.ascontiguousarray(getattr(idx, name))) for name in _ARRAYS]
    meta: dict[str, Any] = {"format": _CACHE_FORMAT, "key": key, "names": idx.names, "pages": idx.page_lines,
                            "line_counts": idx.line_counts, "filter_shift": int(idx._filter_shift)}
    # the header's length depends on the offsets written in it: lay out after a generous guess
    guess = len(json.dumps(meta).encode("utf-8", "surrogatepass")) + 400 + 80 * len(arrays)
    off = -(-(16 + guess) // 64) * 64
    layout: dict[str, tuple[str, int, int]] = {}
    for name, arr in arrays:
        layout[name] = (arr.dtype.str, off, len(arr))
        off += -(-arr.nbytes // 64) * 64
    meta["arrays"] = layout
    meta["size"] = off
    header = json.dumps(meta).encode("utf-8", "surrogatepass")
    if 16 + len(header) > layout[arrays[0][0]][1]:
        log.warning("source index cache header did not fit; not kept")
        return
    tmp: str | None = None
    try:
        folder = private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".part", dir=folder)   # 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + len(header).to_bytes(8, "little") + header)
            for name, arr in arrays:
                fh.seek(layout[name][1])
                fh.write(memoryview(arr).cast("B"))
            fh.truncate(off)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("could not keep the source index in the cache (%s); it is built again next time", exc)
        return
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    files: list[tuple[Path, os.stat_result]] = []
    for p in folder.glob("*.idx"):
        try:
            files.append((p, p.stat()))
        except OSError:
            continue                      # removed meanwhile (another process tidying up)
    files.sort(key=lambda f: f[1].st_mtime_ns, reverse=True)
    total = 0
    for i, (old, st) in enumerate(files):
        total += st.st_size
        if i >= CACHE_KEEP or (i and total > CACHE_MAX_BYTES):
            _discard(old)


class PendingIndex:
    """A :class:`SourceIndex` being built on a background thread, so loading documents does not
    wait for it (numpy releases the GIL for most of the work). ``result()`` blocks until it is
    built; ``await ready()`` waits without blocking the event loop. A failed build raises there."""

    def __init__(self, build: Callable[[], SourceIndex]) -> None:
        self._future: concurrent.futures.Future[SourceIndex] = concurrent.futures.Future()
        threading.Thread(target=self._run, args=(build,), name="rlm-source-index", daemon=True).start()

    def _run(self, build: Callable[[], SourceIndex]) -> None:
        try:
            self._future.set_result(build())
        except BaseException as exc:   # noqa: BLE001 - handed to whoever asks for the index
            self._future.set_exception(exc)

    @property
    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> SourceIndex:
        return self._future.result(timeout)

    async def ready(self) -> SourceIndex:
        return await asyncio.wrap_future(self._future)


# What the engine is given: a built index or one being built (both have result() and ready()).
IndexSource = SourceIndex | PendingIndex


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or adjacent ranges joined: ``[(3, 4), (5, 9), (12, 12)]``."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def merge_sources(items: Iterable[SourceRange]) -> list[SourceRange]:
    """Per document (in first-seen order) the merged line ranges of ``items``."""
    per: dict[str, list[tuple[int, int]]] = {}
    pages: dict[tuple[str, int], int | None] = {}
    end_pages: dict[tuple[str, int], int | None] = {}
    for r in items:
        per.setdefault(r.document, []).append((r.start_line, r.end_line))
        pages.setdefault((r.document, r.start_line), r.page)
        end_pages[(r.document, r.end_line)] = r.end_page if r.end_page is not None else r.page
    out: list[SourceRange] = []
    for name, rs in per.items():
        for a, b in merge_ranges(rs):
            out.append(SourceRange(name, a, b, pages.get((name, a)), end_pages.get((name, b))))
    return out


__all__ = ["CACHE_KEEP", "CACHE_MAX_BYTES", "CACHE_MIN_CHARS", "IndexSource", "K", "PendingIndex", "MAX_REPEATS", "MIN_MATCH_BYTES", "RARE_REPEATS", "SHORT_LOOKUPS", "SHORT_MAX_HITS", "SHORT_MIN_CHARS", "SHORT_SCAN_CHARS", "STEP", "SourceIndex", "SourceRange", "merge_ranges", "merge_sources", "wait_for_cache_writes"]
