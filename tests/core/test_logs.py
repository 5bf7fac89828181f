"""The app's own log: JSON Lines in the state folder, rotated, private, keys never in it."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from rlm_desktop.core import logs
from rlm_desktop.core.config import ProviderConfig


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def logfile():
    path = logs.setup_logging()
    assert path is not None
    yield path
    logs.shutdown_logging()


def test_records_are_json_lines_in_a_private_file_under_the_state_folder(logfile: Path) -> None:
    assert logfile == Path(os.environ["RLM_DESKTOP_HOME"]) / "state" / "rlm-desktop" / "logs" / "rlm-desktop.log"
    logging.getLogger("rlm_desktop.engine.run").info("run finished: %s", "ok", extra={"iterations": 3})
    logging.getLogger("rlm_desktop.engine.run").debug("not at the default level")
    logging.getLogger("httpx").info("a chatty library's info is not the app's business")
    recs = _records(logfile)
    assert [r["msg"] for r in recs] == ["run finished: ok"]
    assert recs[0]["level"] == "info" and recs[0]["logger"] == "rlm_desktop.engine.run"
    assert recs[0]["iterations"] == 3 and "T" in recs[0]["ts"]
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(logfile.parent.stat().st_mode) == 0o700


def test_a_resolved_key_never_reaches_the_log_even_in_a_traceback(logfile: Path) -> None:
    key = "gw-Plain7Key-NOT-IN-LOGS"          # no well-known shape: only registration can catch it
    ProviderConfig(id="gw", name="Gateway", base_url="http://127.0.0.1:9/v1", api_key=key)
    log = logging.getLogger("rlm_desktop.test")
    log.warning("sending with %s", key, extra={"header": f"Authorization: Bearer {key}"})
    try:
        raise RuntimeError(f"server said: invalid key {key}")
    except RuntimeError:
        log.exception("call failed")
    text = logfile.read_text(encoding="utf-8")
    assert key not in text
    recs = _records(logfile)
    assert recs[0]["msg"] == "sending with [redacted]"
    assert "[redacted]" in recs[0]["header"] and "invalid key [redacted]" in recs[1]["exc"]


def test_the_console_line_hides_a_registered_key_on_its_own() -> None:
    """The log layer alone (no provider scrubbing before it): message, arguments and traceback."""
    key = "gw-Console7Key-NOT-SHOWN"
    logs.register_secret(key)
    try:
        raise RuntimeError(f"server said: bad key {key}")
    except RuntimeError:
        exc_info = sys.exc_info()
    rec = logging.LogRecord("rlm_desktop.test", logging.ERROR, __file__, 1, "sending with %s", (key,), exc_info)
    text = logs.ConsoleFormatter().format(rec)
    assert key not in text
    assert "sending with [redacted]" in text and "bad key [redacted]" in text


def test_credential_shapes_are_redacted_without_registration() -> None:
    assert logs.redact("key sk-proj-abcdefghijklmnop1234 used") == "key [redacted] used"
    assert logs.redact("Authorization: Bearer abc.def-ghi_jkl") == "Authorization: Bearer [redacted]"
    assert logs.redact('{"api_key": "zzzzzzzzzzzz"}') == '{"api_key": "[redacted]"}'
    assert logs.redact("ordinary words stay, and so does sk-short") == "ordinary words stay, and so does sk-short"


def test_rotation_keeps_the_log_bounded(logfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = logging.getLogger("rlm_desktop.test")
    for _ in range(5000):
        log.info("x" * 900)
    files = sorted(logfile.parent.iterdir())
    assert [f.name for f in files] == ["rlm-desktop.log", "rlm-desktop.log.1", "rlm-desktop.log.2",
                                       "rlm-desktop.log.3"]
    assert all(f.stat().st_size <= logs.MAX_BYTES for f in files)


def test_an_unwritable_log_folder_is_said_once_and_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    monkeypatch.setenv("RLM_DESKTOP_HOME", str(blocker))
    try:
        assert logs.setup_logging(console=True) is None
        logging.getLogger("rlm_desktop.test").warning("still shown on the console")
    finally:
        logs.shutdown_logging()
    err = capsys.readouterr().err
    assert "cannot write the log file" in err and "continuing without a log file" in err
    assert "rlm-desktop: warning: still shown on the console" in err


def test_setup_twice_replaces_the_handlers(logfile: Path) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    logs.setup_logging(console=True)
    logs.setup_logging(console=True)
    assert len(root.handlers) == before + 1      # file + console, not two of each
    logs.shutdown_logging()
    assert len(root.handlers) == before - 1


def test_console_lines_erase_the_live_progress_line_only_on_a_terminal() -> None:
    rec = logging.LogRecord("rlm_desktop.x", logging.WARNING, __file__, 1, "retrying %s", ("sk-abcdefabcdef123456",), None)
    assert logs.ConsoleFormatter(tty=True).format(rec) == "\r\x1b[Krlm-desktop: warning: retrying [redacted]"
    assert logs.ConsoleFormatter(tty=False).format(rec) == "rlm-desktop: warning: retrying [redacted]"


def test_control_characters_in_records_never_act_on_a_terminal(logfile: Path) -> None:
    """Item 10: a record quoting a server or a file name: the console shows its controls as escapes;
    the file holds the exact text, with C1 and bidi controls as JSON escapes (safe to `tail -f`)."""
    evil = "bad \x1b]0;pwned\x07 \x1b[2J \x9b31m \u202e end"
    rec = logging.LogRecord("rlm_desktop.x", logging.WARNING, __file__, 1, "server said %s", (evil,), None)
    line = logs.ConsoleFormatter(tty=False).format(rec)
    assert line == "rlm-desktop: warning: server said bad \\x1b]0;pwned\\x07 \\x1b[2J \\x9b31m \\u202e end"
    logging.getLogger("rlm_desktop.test").warning("server said %s", evil)
    logs.shutdown_logging()
    raw = logfile.read_text(encoding="utf-8")
    assert not any(c in raw for c in "\x1b\x07\x9b\u202e")
    assert _records(logfile)[-1]["msg"] == f"server said {evil}"
