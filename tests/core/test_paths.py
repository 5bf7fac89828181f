"""Per-user folders (platformdirs, XDG, RLM_DESKTOP_HOME) and the privacy of what the app writes there."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from platformdirs.macos import MacOS
from platformdirs.windows import Windows

from rlm_desktop.core.exporters import write_export
from rlm_desktop.core.paths import (
    APP_ID,
    app_dirs,
    cache_dir,
    data_dir,
    log_dir,
    open_private,
    private_dir,
    traces_dir,
    write_text_atomic,
)
from rlm_desktop.core.trace import SpanKind, SpanStatus, Trace, TraceWriter


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that hides nothing, so the modes checked are the ones the code asks for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- where -------------------------------------------------------------------------------------

def test_linux_folders_follow_the_xdg_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RLM_DESKTOP_HOME")
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    assert data_dir() == tmp_path / "xdg_data_home" / APP_ID
    assert traces_dir() == tmp_path / "xdg_data_home" / APP_ID / "traces"
    assert cache_dir() == tmp_path / "xdg_cache_home" / APP_ID
    assert log_dir() == tmp_path / "xdg_state_home" / APP_ID / "logs"   # where the README says
    # Unset: the XDG defaults under the home folder.
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / APP_ID
    assert cache_dir() == tmp_path / "home" / ".cache" / APP_ID


def test_rlm_desktop_home_overrides_every_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLM_DESKTOP_HOME", str(tmp_path / "h"))
    d = app_dirs(MacOS(APP_ID, appauthor=False))   # it wins over any platform
    assert d.data == tmp_path / "h" / "data" / APP_ID and d.cache == tmp_path / "h" / "cache" / APP_ID
    assert d.log == tmp_path / "h" / "state" / APP_ID / "logs"
    assert data_dir() == d.data


def test_macos_folders_are_the_platformdirs_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RLM_DESKTOP_HOME")
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):   # platformdirs reads them on
        monkeypatch.delenv(var)                                         # macOS too, when set
    monkeypatch.setenv("HOME", str(tmp_path))
    mac = MacOS(APP_ID, appauthor=False)
    d = app_dirs(mac)
    lib = tmp_path / "Library"
    assert d.data == lib / "Application Support" / APP_ID == Path(mac.user_data_dir)
    assert d.cache == lib / "Caches" / APP_ID == Path(mac.user_cache_dir)   # not in Application Support
    assert d.log == lib / "Logs" / APP_ID == Path(mac.user_log_dir)
    assert not lib.exists()   # asking creates nothing


def test_windows_folders_are_the_platformdirs_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_DESKTOP_HOME")
    local = r"C:\Users\ann\AppData\Local"
    monkeypatch.setenv("WIN_PD_OVERRIDE_LOCAL_APPDATA", local)   # platformdirs' own override
    win = Windows(APP_ID, appauthor=False)
    d = app_dirs(win)
    assert str(d.data) == win.user_data_dir and str(d.data).startswith(local)
    assert str(d.data).endswith(APP_ID)
    assert str(d.cache) == win.user_cache_dir and str(d.cache).endswith("Cache")
    assert str(d.log) == win.user_log_dir and str(d.log).endswith("Logs")
    assert "Roaming" not in str(d.data)   # traces can be large: local, not roaming


def test_the_default_platform_is_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_DESKTOP_HOME")
    assert data_dir() == Path(platformdirs.user_data_dir(APP_ID, appauthor=False))
    assert cache_dir() == Path(platformdirs.user_cache_dir(APP_ID, appauthor=False))


# -- private -----------------------------------------------------------------------------------

def _one_span_trace(path: Path) -> Path:
    trace = Trace({"query": "what is in my files?"})
    w = TraceWriter(path, trace.header).attach(trace)
    trace.end_span(trace.start_span(SpanKind.RUN, "run"), SpanStatus.OK)
    w.close()
    return path


def test_traces_and_their_folders_are_private(loose_umask: None) -> None:
    path = _one_span_trace(traces_dir() / "run-1.jsonl")
    assert mode(path) == 0o600
    assert mode(traces_dir()) == 0o700 and mode(data_dir()) == 0o700


def test_an_older_app_folder_is_made_private(loose_umask: None) -> None:
    # An earlier version made the folders 0755 and the traces 0644.
    traces_dir().mkdir(parents=True, mode=0o755)
    os.chmod(data_dir(), 0o755)
    old = traces_dir() / "old.jsonl"
    old.write_text("{}\n")
    os.chmod(old, 0o644)
    _one_span_trace(old)   # rewritten in place: the file keeps its inode, loses its wide mode
    assert mode(old) == 0o600
    assert mode(traces_dir()) == 0o700 and mode(data_dir()) == 0o700
    # The folders above the app's own are not the app's to change.
    assert mode(data_dir().parent) == stat.S_IMODE(os.stat(data_dir().parent).st_mode)


def test_a_trace_where_the_user_asks_is_private_but_their_folder_is_left_alone(
        tmp_path: Path, loose_umask: None) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    path = _one_span_trace(mine / "new" / "deeper" / "t.jsonl")
    assert mode(path) == 0o600
    assert mode(mine / "new") == 0o700 and mode(mine / "new" / "deeper") == 0o700   # made by us
    assert mode(mine) == 0o755                                                      # theirs


def test_open_private_appends_and_tightens(tmp_path: Path, loose_umask: None) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text("one\n")
    os.chmod(p, 0o644)
    with open_private(p, "a") as fh:
        fh.write("two\n")
    assert p.read_text() == "one\ntwo\n" and mode(p) == 0o600
    with pytest.raises(ValueError, match="mode"):
        open_private(p, "r")
    assert private_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and mode(tmp_path / "a") == 0o700


def test_exports_are_private(tmp_path: Path, loose_umask: None) -> None:
    assert mode(write_text_atomic(tmp_path / "x.md", "text")) == 0o600
    trace = Trace({"query": "q"})
    trace.end_span(trace.start_span(SpanKind.RUN, "run"), SpanStatus.OK)
    assert mode(write_export(trace, tmp_path / "report.html")) == 0o600


def test_the_log_folder_and_the_folder_above_it_are_private(loose_umask: None) -> None:
    from rlm_desktop.core.logs import setup_logging, shutdown_logging

    try:
        path = setup_logging()
    finally:
        shutdown_logging()
    assert path is not None and path.parent == log_dir()
    assert mode(path) == 0o600 and mode(log_dir()) == 0o700 and mode(log_dir().parent) == 0o700


def test_exports_of_a_trace_with_lone_surrogates_are_written(tmp_path: Path) -> None:
    import json

    # read_trace gives back what the writer was handed, lone surrogates included; every export
    # format must then still write (it failed with UnicodeEncodeError).
    trace = Trace({"query": "report-\udcff.txt \ud800"})
    run = trace.start_span(SpanKind.RUN, "run \udcff", None, {"query": "q \udcff"})
    trace.end_span(run, SpanStatus.OK)
    for name in ("x.json", "x.md", "x.html", "x.otlp.json"):
        out = write_export(trace, tmp_path / name)
        text = out.read_bytes().decode("utf-8")       # valid UTF-8
        assert "\\udcff" in text, name               # the escape, readable
    data = json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))
    assert "report-\udcff.txt \ud800" in json.dumps(data, ensure_ascii=False)   # the same string back
