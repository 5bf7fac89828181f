"""rlm_desktop.evaluation sits above engine and below cli/ui: it never imports either."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_evaluation_imports_neither_cli_nor_ui() -> None:
    offenders = []
    for py in (ROOT / "rlm_desktop" / "evaluation").rglob("*.py"):
        for n, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"\s*(from|import)\s+rlm_desktop\.(cli|ui)\b", line):
                offenders.append(f"{py.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
