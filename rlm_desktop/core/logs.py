"""The app's log: JSON Lines in the user's state folder, rotated, with secrets redacted.

One record per line (``ts``, ``level``, ``logger``, ``msg``, optional ``exc`` and any ``extra``
fields), so a log can be read by a person and filtered with ``jq``. What goes in: runs started and
finished (ids, models, limits, outcome, spend), provider retries and failures, sandbox restarts and
protocol violations, and internal errors with their tracebacks. What never goes in: API keys (every
key the app resolves is registered here and replaced by ``[redacted]`` in every record, traceback
text included; well-known key shapes are redacted even when unregistered), credentials inside URLs
(every base URL's secret parts are registered the same way, and any URL in a record is shown
masked, see :mod:`rlm_desktop.core.redact`), document text, prompts and answers (those live in the
trace, which the user controls).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.paths import log_dir, private_dir
from rlm_desktop.core.redact import mask_urls_in, url_secrets
from rlm_desktop.core.textsafe import for_terminal, json_for_terminal

LOG_FILE = "rlm-desktop.log"
MAX_BYTES = 1_000_000
BACKUPS = 3
REDACTED = "[redacted]"

# Shapes of credentials worth hiding even if nobody registered them.
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),                    # OpenAI / OpenRouter / Anthropic style
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/\-]{8,}=*"),  # Authorization header values
    re.compile(r"(?i)(\b(?:api[_-]?key|x-api-key)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{8,}"),
)
_SHORTEST_SECRET = 6           # shorter values would redact ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_installed: list[logging.Handler] = []


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log record (called for every key the app resolves)."""
    if value and len(value.strip()) >= _SHORTEST_SECRET:
        with _lock:
            _secrets.add(value.strip())


def register_url(url: str | None) -> None:
    """Never let the credentials inside ``url`` (user info, secret query values) reach a log record
    (called for every base URL the app is given)."""
    if url:
        for part in url_secrets(url):
            register_secret(part)


def redact(text: str) -> str:
    """``text`` with registered secrets, credentials inside URLs and credential-shaped strings
    replaced."""
    text = mask_urls_in(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for s in known:
        if s in text:
            text = text.replace(s, REDACTED)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
    return text


_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; every string passes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}" + time.strftime("%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = redact(v) if isinstance(v, str) else v
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = redact(record.exc_text)
        # The same JSON, with C1 and bidi controls as escapes: `tail -f` of the log stays harmless.
        return json_for_terminal(json.dumps(out, ensure_ascii=False, default=str))


class ConsoleFormatter(logging.Formatter):
    """``rlm-desktop: warning: …`` on stderr for headless use, redacted like the file and with control
    characters neutralised (:func:`~rlm_desktop.core.textsafe.for_terminal`). On a terminal
    the line first erases the CLI's live progress line (which redraws itself on its next update)."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.prefix = "\r\x1b[K" if tty else ""

    def format(self, record: logging.LogRecord) -> str:
        # A record may quote a server or a file name: its control characters are shown, not run.
        text = (f"{self.prefix}rlm-desktop: {record.levelname.lower()}: "
                f"{for_terminal(redact(record.getMessage()))}")
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + for_terminal(redact(self.formatException(record.exc_info)))
        return text


def log_file() -> Path:
    return log_dir() / LOG_FILE


def setup_logging(*, console: bool = False, level: int = logging.INFO) -> Path | None:
    """Send the app's records to the rotating JSON log (and warnings to stderr when ``console``).

    Idempotent: a second call replaces what the first installed (the folder may have changed).
    Returns the log file, or None when its folder cannot be written (then it says so on stderr
    once and the app goes on without a file log)."""
    shutdown_logging()
    root = logging.getLogger()
    path: Path | None = log_file()
    handlers: list[logging.Handler] = []
    try:
        assert path is not None
        private_dir(path.parent)   # 0700, and state/rlm-desktop above it too
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                  encoding="utf-8", delay=False)
        os.chmod(path, 0o600)
        fh.setFormatter(JsonFormatter())
        fh.setLevel(level)
        handlers.append(fh)
    except OSError as exc:
        print(f"rlm-desktop: warning: cannot write the log file {path} ({exc.strerror or exc}); "
              "continuing without a log file.", file=sys.stderr)
        path = None
    if console:
        ch = logging.StreamHandler(sys.stderr)
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        ch.setFormatter(ConsoleFormatter(tty))
        ch.setLevel(logging.WARNING)
        handlers.append(ch)
    app_logger = logging.getLogger("rlm_desktop")
    app_logger.setLevel(min(level, logging.INFO))
    with _lock:
        for h in handlers:
            root.addHandler(h)
            _installed.append(h)
    return path


def shutdown_logging() -> None:
    """Flush and detach what :func:`setup_logging` installed."""
    root = logging.getLogger()
    with _lock:
        for h in _installed:
            root.removeHandler(h)
            h.close()
        _installed.clear()


__all__ = ["JsonFormatter", "log_file", "redact", "register_secret", "register_url", "setup_logging",
           "shutdown_logging"]
