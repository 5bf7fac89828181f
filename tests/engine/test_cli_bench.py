"""`rlm-desktop bench`: discovery, errors, the table; the engine benchmark runs (no timing asserted)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
