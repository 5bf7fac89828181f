"""`rlm-desktop run` over hostile folders: links out of the folder never reach the server unless asked
for (flag or the app's setting), and a file name that is not UTF-8 runs to the end with a readable trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rlm_desktop.core.trace import Attr, SpanKind, read_trace
from tests.engine.conftest import route
from tests.fakeserver import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA"
SECRET_DIR_TEXT = "contents of a folder out of reach"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)          # carries the temporary XDG / RLM_DESKTOP_HOME of the test
    env.pop("OPENAI_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "rlm_desktop", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)


def _run(srv: FakeOpenAI, docs: Path, trace: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One run whose model prints the whole context (so whatever was loaded reaches the server)."""
    srv.requests.clear()
    srv.handler = route(["```repl\nprint(sorted(context))\nprint(context)\n```", "FINAL(done)"])
    return _cli("--docs", str(docs), "--query", "What is in these files?", "--base-url", srv.base_url,
                "--model", "fake-root", "--trace", str(trace), "--allow-weak-sandbox", *extra)


def _sent(srv: FakeOpenAI) -> str:
    return json.dumps([r.body for r in srv.requests], ensure_ascii=False)


def _hostile(tmp_path: Path) -> Path:
    (tmp_path / "secret" / "dir").mkdir(parents=True)
    (tmp_path / "secret" / "id_rsa").write_text(SECRET)
    (tmp_path / "secret" / "dir" / "inner.txt").write_text(SECRET_DIR_TEXT)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.txt").write_text("The launch is on March 3.\n")
    (docs / "notes.md").symlink_to(tmp_path / "secret" / "id_rsa")
    (docs / "linked").symlink_to(tmp_path / "secret" / "dir", target_is_directory=True)
    (docs / "same.txt").symlink_to("report.txt")               # a link that stays inside
    return docs


def test_links_out_of_the_folder_never_reach_the_server(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    docs = _hostile(tmp_path)
    r = _run(fake_openai, docs, tmp_path / "t1.jsonl")
    assert r.returncode == 0, r.stderr
    assert "skipped notes.md: link to a file outside the folder — not loaded" in r.stderr
    assert "skipped linked: link to a folder outside the folder — not loaded" in r.stderr
    sent = _sent(fake_openai)
    assert "The launch is on March 3." in sent and "same.txt" in sent   # the run did see the folder
    assert SECRET not in sent and SECRET_DIR_TEXT not in sent
    assert SECRET not in (tmp_path / "t1.jsonl").read_text(encoding="utf-8")

    # The flag follows them: the same run now sends both targets (it is the flag that changed).
    r = _run(fake_openai, docs, tmp_path / "t2.jsonl", "--follow-outside-links")
    assert r.returncode == 0, r.stderr
    sent = _sent(fake_openai)
    assert SECRET in sent and SECRET_DIR_TEXT in sent and "outside the folder" not in r.stderr


def test_the_apps_setting_follows_them_too_and_says_so(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    from rlm_desktop.ui.settings import Settings

    docs = _hostile(tmp_path)
    s = Settings()
    s.set_follow_outside_links(True)
    r = _run(fake_openai, docs, tmp_path / "t.jsonl")
    assert r.returncode == 0, r.stderr
    assert "following links that lead out of the --docs folders (the app's setting)" in r.stderr
    assert SECRET in _sent(fake_openai)


def test_a_file_name_that_is_not_utf8_runs_to_the_end(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in ((b"report-\xff.txt", "Revenue grew 12%."), (b"ok.txt", "fine")):
        with open(os.path.join(os.fsencode(docs), name), "wb") as fh:
            fh.write(text.encode())
    trace_file = tmp_path / "t.jsonl"
    r = _run(fake_openai, docs, trace_file)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "done"
    assert "report-\\\\xff.txt" in _sent(fake_openai)          # the model sees the escaped name
    trace_file.read_bytes().decode("utf-8")                  # valid UTF-8 throughout
    trace = read_trace(trace_file)
    assert trace.skipped_lines == 0 and not trace.truncated
    cell = next(s for s in trace if s.kind == SpanKind.CODE_CELL)
    assert "'report-\\\\xff.txt'" in cell.attributes[Attr.STDOUT]   # repr of the key, as printed
    assert "Revenue grew 12%." in cell.attributes[Attr.STDOUT]


def test_a_query_that_is_not_utf8_is_a_usage_error_not_a_crash(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # A Latin-1 terminal sends "café" as b"caf\xe9": Python holds the byte as a lone surrogate, which
    # no request can carry (it failed mid-run: "internal error: UnicodeEncodeError", exit 1).
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT)
    fake_openai.handler = route(["FINAL(done)"])
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"rlm_desktop", b"run", b"--docs",
                        os.fsencode(tmp_path / "d"), b"--query", b"caf\xe9 ?", b"--base-url",
                        fake_openai.base_url.encode(), b"--model", b"m", b"--allow-weak-sandbox"],
                       cwd=ROOT, env=env, capture_output=True, timeout=90)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, err
    assert "--query is not valid UTF-8 text (byte e9 at character 4)" in err and "Traceback" not in err
    assert fake_openai.requests == []
