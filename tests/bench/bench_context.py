"""Benchmark: a 1,000-file / 100 MB folder loaded and handed to a real sandbox as ``context``.

``run(args) -> dict``: generates a deterministic folder under a temporary directory (1,000 text files
of 100 KB of ASCII prose, each different), then times

* ``load``: the real document loader (core/documents.py ``load_documents``) over the folder;
* ``sandbox``: ``Sandbox(limits, context=docs.context_value()).start()`` (the context crosses to
  the worker) and a first cell that touches every document of ``context``;

and reads the worker's peak resident memory (VmHWM in /proc/<pid>/status, the sandbox processes
found as tests/proctree.py finds them) as a multiple of the text size, and the sum over every
sandbox process (the namespace launcher too). Goals: loader + sandbox ready + first cell ≤ 2 s,
peak RSS of the sandbox's processes together ≤ 1.5× the text. Run alone: ``python -m tests.bench.bench_context``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.core.documents import load_documents
from rlm_desktop.sandbox.api import SubRequest
from rlm_desktop.sandbox.host import Sandbox
from tests.proctree import proc_status, sandbox_processes

LOAD_GOAL_S = 2.0
RSS_GOAL_X = 1.5
FILES = 1000
FILE_BYTES = 100_000

_WORDS = ("the of and to in is was for on that with as by at from his her an which are be this "
          "river ledger invoice quarterly archive meridian copper lantern harbour signal orchard "
          "granite vessel summit tariff beacon cipher delta ember falcon glacier hollow").split()


def make_folder(root: Path, files: int = FILES, file_bytes: int = FILE_BYTES, seed: int = 12) -> int:
    """Write ``files`` text files of exactly ``file_bytes`` ASCII bytes under ``root`` (in 10
    sub-folders); the same seed gives the same bytes. Returns the total size."""
    rng = random.Random(seed)
    pool_words = [rng.choice(_WORDS) for _ in range(400_000)]
    pool = " ".join(pool_words)
    lines = []
    for i in range(0, len(pool), 80):          # prose in 80-column lines
        lines.append(pool[i:i + 79])
    pool = "\n".join(lines)
    total = 0
    for i in range(files):
        sub = root / f"part{i % 10:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        head = f"Document {i:04d}: record of the {rng.choice(_WORDS)} series, seed {seed}.\n"
        start = rng.randrange(0, len(pool) - file_bytes)
        body = (head + pool[start:start + file_bytes])[:file_bytes]
        (sub / f"doc{i:04d}.txt").write_text(body, encoding="ascii")
        total += len(body)
    return total


async def _noop(req: SubRequest) -> str:
    return ""


def _kb(status: dict[str, str], key: str) -> int:
    return int(status.get(key, "0 kB").split()[0]) * 1024


async def _in_sandbox(context: str | dict[str, str]) -> dict[str, Any]:
    limits = SandboxLimits(allow_weak=True)
    t0 = time.perf_counter()
    sb = Sandbox(limits, context=context)
    report = await sb.start()
    t_start = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        r = await sb.run_cell("n_docs = len(context)\nn_chars = sum(len(v) for v in context.values())"
                              "\nprint(n_docs, n_chars)", timeout_s=60, on_request=_noop)
        t_cell = time.perf_counter() - t1
        if not r.ok:
            raise RuntimeError(f"the cell over context failed: {r.error}")
        hwm = {}
        for pid in sandbox_processes(os.getpid()):
            st = proc_status(pid)
            hwm[pid] = _kb(st, "VmHWM")
        worker = sb.pid if sb.pid in hwm else max(hwm, key=lambda p: hwm[p])
        return {"level": report.level.value, "start_s": t_start, "cell_s": t_cell,
                "printed": r.stdout.strip(), "worker_hwm": hwm.get(worker, 0),
                "all_hwm": sum(hwm.values()), "processes": len(hwm)}
    finally:
        await sb.close()


def run(args: Any = None) -> dict[str, Any]:
    repeat = int(getattr(args, "repeat", None) or 3)
    files = int(getattr(args, "files", None) or FILES)
    file_bytes = int(getattr(args, "file_bytes", None) or FILE_BYTES)
    load_s: list[float] = []
    start_s: list[float] = []
    cell_s: list[float] = []
    worker_x: list[float] = []
    all_x: list[float] = []
    level = "?"
    with tempfile.TemporaryDirectory(prefix="rlm-bench-context-") as tmp:
        folder = Path(tmp) / "docs"
        size = make_folder(folder, files, file_bytes)
        for _ in range(repeat):
            t0 = time.perf_counter()
            docs = load_documents([folder])
            load_s.append(time.perf_counter() - t0)
            if len(docs.documents) != files or docs.errors:
                raise AssertionError(f"expected {files} documents, loaded {len(docs.documents)} "
                                     f"({len(docs.errors)} errors)")
            text_chars = docs.total_chars
            m = asyncio.run(_in_sandbox(docs.context_value()))
            del docs
            if m["printed"] != f"{files} {text_chars}":
                raise AssertionError(f"the cell saw {m['printed']!r}, expected {files} {text_chars}")
            level = m["level"]
            start_s.append(m["start_s"])
            cell_s.append(m["cell_s"])
            worker_x.append(m["worker_hwm"] / text_chars)
            all_x.append(m["all_hwm"] / text_chars)
    total = [a + b + c for a, b, c in zip(load_s, start_s, cell_s, strict=True)]
    rss = statistics.median(worker_x)
    return {
        "files": files,
        "text_mb": round(size / 1e6, 1),
        "loader_s_median": round(statistics.median(load_s), 3),
        "sandbox_start_s_median": round(statistics.median(start_s), 3),
        "first_cell_s_median": round(statistics.median(cell_s), 3),
        "load_total_s_median": round(statistics.median(total), 3),
        "load_total_s_max": round(max(total), 3),
        "load_goal_s": LOAD_GOAL_S,
        "worker_peak_rss_x_text_median": round(rss, 2),
        "worker_peak_rss_x_text_max": round(max(worker_x), 2),
        "sandbox_processes_peak_rss_x_text": round(statistics.median(all_x), 2),
        "rss_goal_x_text": RSS_GOAL_X,
        "sandbox_isolation": level,
        "runs": repeat,
        # judged on every sandbox process (the namespace launcher too), not the worker alone
        "ok": statistics.median(total) <= LOAD_GOAL_S and statistics.median(all_x) <= RSS_GOAL_X,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=FILES)
    ap.add_argument("--file-bytes", type=int, default=FILE_BYTES)
    print(run(ap.parse_args()))
