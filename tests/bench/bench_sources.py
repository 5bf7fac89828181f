"""Benchmark: the source index on a generated 100 MB folder — its build time and memory next to
loading the same folder without it, and the cost of mapping a large prompt and a cell output.

run(args) -> dict. The folder (200 files of 0.5 MB: prose-like lines of mixed length, a few very
long lines) is written to a temporary folder first; load is ``load_documents`` (median of 2), the
build is ``SourceIndex.from_documents`` (median of 3), memory is tracemalloc's peak and what the
index keeps (numpy reports its buffers to tracemalloc). The build runs on a background thread in
the app and the CLI, so ``index_build_pct`` is CPU spent beside the load, not time a user waits.
Run alone: python -m tests.bench.bench_sources
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from rlm_desktop.core.documents import load_documents
from rlm_desktop.core.sources import SourceIndex

FILES = 200
FILE_BYTES = 500_000
# Goals on the 2-core reference machine. The build runs on a background thread when documents
# are set (loading does not wait for it); it must be done long before a first model reply arrives.
GOAL_BUILD_S = 3.0
GOAL_KEPT_SHARE = 0.55         # of the text's size
GOAL_LOCATE_CELL_MS = 50.0     # a 20 kB cell output, mapped on the event loop


def _write_folder(root: Path) -> int:
    rnd = random.Random(10)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
             for _ in range(20_000)]
    total = 0
    for f in range(FILES):
        lines: list[str] = []
        size = 0
        i = 0
        while size < FILE_BYTES:
            i += 1
            n = 300 if i % 500 == 0 else rnd.choice((0, 3, 8, 12, 14, 18))   # blank, short, long
            line = f"{i} " + " ".join(rnd.choices(words, k=n)) if n else ""
            lines.append(line)
            size += len(line) + 1
        text = "\n".join(lines) + "\n"
        (root / f"doc{f:03d}.txt").write_text(text)
        total += len(text)
    return total


def _median_time(fn: Any, n: int) -> tuple[float, Any]:
    times: list[float] = []
    out = None
    for _ in range(n):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        total = _write_folder(root)
        load_s, docs = _median_time(lambda: load_documents([root]), 2)
        build_s, index = _median_time(lambda: SourceIndex.from_documents(docs), 3)
        del index
        gc.collect()
        tracemalloc.start()
        index = SourceIndex.from_documents(docs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = index.nbytes
        texts = [d.text or "" for d in docs.documents]
        big = "\n".join(t[:20_000] for t in texts[:50])                 # a 1 MB prompt of excerpts
        cell = texts[7][1000:21_000]                                    # a 20 kB cell output
        locate_big_s, found = _median_time(lambda: index.locate(big), 3)
        locate_cell_s, _ = _median_time(lambda: index.locate(cell), 5)
        overhead = 100.0 * build_s / load_s
        return {
            "folder_mb": round(total / 1e6, 1), "documents": len(docs.documents),
            "load_s": round(load_s, 3), "index_build_s": round(build_s, 3),
            "index_build_share_of_load_pct": round(overhead, 1),
            "index_kept_mb": round(kept / 1e6, 1), "index_peak_mb": round(peak / 1e6, 1),
            "text_mb": round(sum(len(t) for t in texts) / 1e6, 1),
            "locate_1mb_prompt_ms": round(locate_big_s * 1000, 1),
            "locate_1mb_prompt_ranges": len(found),
            "locate_20kb_output_ms": round(locate_cell_s * 1000, 2),
            "ok": (build_s <= GOAL_BUILD_S and kept <= GOAL_KEPT_SHARE * total
                   and locate_cell_s * 1000 <= GOAL_LOCATE_CELL_MS and len(found) == 50),
        }


if __name__ == "__main__":
    print(json.dumps(run(argparse.Namespace()), indent=1))
