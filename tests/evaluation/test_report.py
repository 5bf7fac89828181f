"""The report: the terminal table, and the self-contained HTML whose SVG charts plot accuracy and
cost against context size per method."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rlm_desktop.evaluation.report import chart, table, to_html
from rlm_desktop.evaluation.runner import EvalOutcome, ItemResult, Row


def _rows() -> list[Row]:
    return [Row("needle", 8_000, "rlm", 2, 1.0, 0.02, input_tokens=900, output_tokens=50, seconds=1.5),
            Row("needle", 8_000, "direct", 2, 1.0, 0.01, input_tokens=4_000, output_tokens=10),
            Row("needle", 64_000, "rlm", 2, 0.5, 0.04, cost_known=False, input_tokens=1_200),
            Row("needle", 64_000, "direct", 0, None, None, skipped=2,
                note="skipped: does not fit: ~17,000 tokens, estimated, > the 8,000-token window")]


def test_table_lines_up_and_marks_unknown_and_skipped() -> None:
    text = table(_rows())
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["task", "size", "method", "items"]
    assert len({len(line.split("  ")[0]) for line in lines[2:]}) == 1
    assert "$0.0400+?" in lines[4]                          # part of the cost unknown
    assert re.search(r"direct\s+0\s+-\s+-\s+-\s+-\s+-\s+0\s+skipped: does not fit", lines[5])


def test_chart_plots_each_method_at_its_sizes() -> None:
    svg = chart("acc", _rows(), "accuracy", y_label="accuracy", y_max=1.0)
    rlm = re.search(r'<polyline points="([^"]+)"[^>]*stroke="#2563eb"', svg)
    assert rlm is not None
    (x1, y1), (x2, y2) = [tuple(map(float, p.split(","))) for p in rlm.group(1).split()]
    assert x2 > x1 and y2 > y1                 # 64k is to the right; 0.5 is lower than 1.0
    assert svg.count('fill="none" stroke="#ea580c"') == 2   # direct: its one point (8k) + legend
    assert "stroke-dasharray" not in svg       # one point, no line: the 64k direct run was skipped


def test_html_is_self_contained(tmp_path: Path) -> None:
    item = ItemResult("needle", 8_000, 0, "rlm", "ok", 1.0, "42", "42", "exact",
                      trace=str(tmp_path / "traces" / "needle-8k-001-rlm.jsonl"))
    page = to_html(EvalOutcome([item], _rows(), "budget: stopped", 4, ["a note"]),
                   {"provider": "P", "root_model": "m", "sub_model": "s", "seed": 1}, tmp_path)
    assert page.count("<svg") == 2 and "<script" not in page
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert "href='traces/needle-8k-001-rlm.jsonl'" in page           # relative: the folder can move
    assert "Stopped early (budget: stopped)" in page and "a note" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(to_html(EvalOutcome([], _rows(), None, 4, []),
                            {"provider": "P", "root_model": "m", "sub_model": "s", "seed": 1}, tmp_path))
    # Its own profile in the temporary folder, no password store, no D-Bus: a browser left to its
    # defaults writes under ~/.config and starts the user's keyring through D-Bus activation.
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["HOME"] = str(tmp_path / "home")
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--password-store=basic", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert dom.count("<svg") == 2 and dom.count("<polyline") >= 2 and "needle: accuracy" in dom
