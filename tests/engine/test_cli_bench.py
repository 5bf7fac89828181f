"""`rlm-desktop bench`: discovery, errors, the table; the engine benchmark runs (no timing asserted)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.cli import bench


def test_discovers_the_checkout_benchmarks_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    found = bench.discover(bench.bench_dir())
    assert "engine" in found
    assert bench.handle(argparse.Namespace(names=["no-such-bench"], json=False)) == 2
    assert "unknown benchmark 'no-such-bench'" in capsys.readouterr().err


def test_without_a_source_checkout_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "bench_dir", lambda: tmp_path / "site-packages" / "tests" / "bench")
    assert bench.handle(argparse.Namespace(names=[], json=False)) == 2
    assert "need a source checkout" in capsys.readouterr().err


def test_table_shows_units_from_the_keys() -> None:
    table = bench.format_table({"x": {"name": "x", "overhead_ms_median": 1.5, "file_mb": 3, "runs": 2000,
                                      "ok": False}})
    assert "x  [GOAL MISSED]" in table and "overhead median" in table and "1.5 ms" in table
    assert "file" in table and "3 MB" in table and "2,000" in table


def test_engine_benchmark_runs_the_real_loop() -> None:
    bench_engine = bench._load("engine", bench.discover(bench.bench_dir())["engine"])
    figures = bench_engine.run(argparse.Namespace(iterations=4, repeat=1))
    assert figures["iterations_per_run"] == 4 and figures["overhead_ms_median"] >= 0
    assert figures["cell_roundtrip_ms_median"] > 0 and isinstance(figures["ok"], bool)


def _bench(name: str) -> Any:
    return bench._load(name, bench.discover(bench.bench_dir())[name])


def test_context_benchmark_folder_is_deterministic_and_sized(tmp_path: Path) -> None:
    import hashlib

    mod = _bench("context")

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.txt")):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
        return h.hexdigest()

    sizes = [mod.make_folder(tmp_path / d, 30, 5_000, seed=3) for d in ("a", "b")]
    assert sizes == [150_000, 150_000]
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert all(p.stat().st_size == 5_000 for p in (tmp_path / "a").rglob("*.txt"))
    assert len({p.read_bytes() for p in (tmp_path / "a").rglob("*.txt")}) == 30    # all different
    assert mod.make_folder(tmp_path / "c", 30, 5_000, seed=4) == 150_000
    assert digest(tmp_path / "c") != digest(tmp_path / "a")


def test_the_new_benchmarks_run_small() -> None:
    """context, fanout, output and official (our side) at toy sizes: they run end to end and
    report their figures (no timing asserted)."""
    ctx = _bench("context").run(argparse.Namespace(repeat=1, files=20, file_bytes=2_000))
    assert ctx["files"] == 20 and ctx["worker_peak_rss_x_text_median"] > 0
    fan = _bench("fanout").run(argparse.Namespace(prompts=8, concurrency=4, latency=0.01, repeat=1))
    assert fan["ideal_s"] == 0.02 and fan["cell_s_median"] > 0 and isinstance(fan["ok"], bool)
    out = _bench("output").run(argparse.Namespace(cells=1))
    assert out["output_bytes"] == 1_000_000 and out["cell_1mb_ms_median"] > 0
    off = _bench("official").run(argparse.Namespace(runs=1, rounds=1))
    assert off["iterations"] == 10 and off["ours_root_gap_ms_median"] > 0
    assert off["floor_root_gap_ms_median"] > 0 and off["ours_x_floor"] > 0
