"""The Qt-free INI store reads what QSettings writes and writes what QSettings reads (the CLI
shares the desktop app's preferences file without importing Qt). Each direction is checked in a
fresh process, as the other front end would see it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.session.ini import IniStore

VALUES = {
    "schema_version": "1",
    "providers/_order": json.dumps(["openai", "local-1"]),
    "providers/openai": json.dumps({"name": 'Open "AI", x=1; y', "base_url": "https://h/v1?a=b;c",
                                    "note": "tab\tnew\nline back\\slash"}),
    "providers/local-1": '{"a": 1}',
    "limits/budget_usd": "2.5",
    "limits/max_tokens": "none",
    "run/memo_cache": "true",
    "choices/root_model": "llama3.1:8b",
    "t/at": "@at",
    "t/edge": " lead and trail ",
    "t/ctl": "\x01cafe\x7f",
    "t/nul": "a\x00b",
    "t/unicode": "ü日本 é",
    "t/empty": "",
    "t/quote": '"',
    "odd key/with space~": "v",
}

QT_READ = """
import json, sys
from PySide6.QtCore import QSettings
qs = QSettings(sys.argv[1], QSettings.Format.IniFormat)
print(json.dumps({k: str(qs.value(k)) for k in qs.allKeys()}))
"""

QT_WRITE = """
import json, sys
from PySide6.QtCore import QSettings
qs = QSettings(sys.argv[1], QSettings.Format.IniFormat)
for k, v in json.loads(sys.argv[2]).items():
    qs.setValue(k, v)
qs.sync()
"""


def _qt(code: str, *args: str) -> str:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_qsettings_reads_what_the_ini_store_writes(tmp_path: Path) -> None:
    path = tmp_path / "prefs.ini"
    store = IniStore(path)
    for k, v in VALUES.items():
        store.set_value(k, v)
    store.sync()
    assert json.loads(_qt(QT_READ, str(path))) == VALUES


def test_the_ini_store_reads_what_qsettings_writes(tmp_path: Path) -> None:
    path = tmp_path / "prefs.ini"
    _qt(QT_WRITE, str(path), json.dumps(VALUES))
    store = IniStore(path)
    assert {k: store.value(k) for k in VALUES} == VALUES


def test_a_write_keeps_what_the_app_wrote_meanwhile_and_removes_groups(tmp_path: Path) -> None:
    path = tmp_path / "prefs.ini"
    _qt(QT_WRITE, str(path), json.dumps({"a/x": "1", "a/y": "2", "b/z": "3"}))
    store = IniStore(path)
    _qt(QT_WRITE, str(path), json.dumps({"c/new": "from the app"}))
    store.set_value("d/mine", "cli")
    store.remove("a")
    store.sync()
    assert json.loads(_qt(QT_READ, str(path))) == {"b/z": "3", "c/new": "from the app", "d/mine": "cli"}
    assert store.child_keys("b") == ["z"]


def test_file_is_private(tmp_path: Path) -> None:
    store = IniStore(tmp_path / "sub" / "prefs.ini")
    store.set_value("k", "v")
    store.sync()
    assert (tmp_path / "sub" / "prefs.ini").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("raw", ["\udcff", "\ud800x"])
def test_a_lone_surrogate_never_breaks_the_file(tmp_path: Path, raw: str) -> None:
    # (e.g. a profile name pasted from a file name that is not UTF-8) The file stays valid UTF-8 and
    # readable by both sides; the character is kept as readable text.
    path = tmp_path / "p.ini"
    store = IniStore(path)
    store.set_value("k", raw)
    store.set_value("other", "kept")
    store.sync()
    path.read_bytes().decode("utf-8")
    assert IniStore(path).value("other") == "kept"
    assert json.loads(_qt(QT_READ, str(path)))["other"] == "kept"
