"""`rlm-desktop provider …` in-process (in-memory keyring): add/list/remove, set-key from stdin,
test and models against the scripted server, exit codes and messages."""

from __future__ import annotations

import io
import json

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from rlm_desktop.cli import EXIT_FAILURE, EXIT_OK, EXIT_PROVIDER, EXIT_USAGE, main
from rlm_desktop.ui.settings import Settings
from tests.fakeserver import FakeOpenAI

KEY = "sk-cli-SECRET-a8d3f0e1"


class _Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RLM_DESKTOP_KEY_MYGW", raising=False)


def _set_key(monkeypatch: pytest.MonkeyPatch, pid: str, text: str) -> int:
    monkeypatch.setattr("sys.stdin", _Stdin(text))
    return main(["provider", "set-key", pid])


def test_add_list_set_key_remove(memory_keyring: KeyringBackend, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provider", "add", "mygw", "--preset", "custom", "--base-url", "http://127.0.0.1:1/v1",
                 "--name", "Work gateway", "--model", "big", "--sub-model", "small"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "added provider 'mygw'" in out and "set-key mygw" in out
    prof = Settings().profile("mygw")
    assert (prof.name, prof.root_model, prof.sub_model, prof.needs_key) == ("Work gateway", "big", "small", True)

    assert main(["provider", "list", "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["demo", "mygw"] and rows[1]["key"] == "MISSING"

    assert _set_key(monkeypatch, "mygw", KEY + "\n") == EXIT_OK
    out = capsys.readouterr().out
    assert memory_keyring.entries[("rlm-desktop", "mygw")] == KEY
    assert KEY not in out and KEY[-4:] in out
    assert main(["provider", "list"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "stored in the system keyring" in out and KEY not in out
    assert KEY not in Settings().path.read_text()

    assert main(["provider", "remove", "mygw"]) == EXIT_OK
    assert ("rlm-desktop", "mygw") not in memory_keyring.entries
    assert [p.id for p in Settings().providers()] == ["demo"]


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provider", "add", "gw", "--preset", "custom"]) == EXIT_USAGE
    assert "--base-url is required" in capsys.readouterr().err
    assert main(["provider", "add", "Bad Id", "--preset", "openai"]) == EXIT_USAGE
    assert "lower-case" in capsys.readouterr().err
    assert main(["provider", "add", "gw", "--preset", "custom", "--base-url", "ftp://x"]) == EXIT_USAGE
    assert main(["provider", "add", "oa", "--preset", "openai"]) == EXIT_OK
    assert main(["provider", "add", "oa", "--preset", "openai"]) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert main(["provider", "remove", "nope"]) == EXIT_USAGE
    assert main(["provider", "remove", "demo"]) == EXIT_USAGE
    assert _set_key(monkeypatch, "nope", KEY) == EXIT_USAGE
    assert _set_key(monkeypatch, "oa", "") == EXIT_USAGE
    assert "nothing was stored" in capsys.readouterr().err
    assert _set_key(monkeypatch, "oa", "one\ntwo\n") == EXIT_USAGE
    with pytest.raises(SystemExit) as ei:      # argparse: unknown preset, missing id
        main(["provider", "add", "x", "--preset", "nope"])
    assert ei.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as ei:      # a key is never an argument
        main(["provider", "set-key", "oa", KEY])
    assert ei.value.code == EXIT_USAGE


def test_set_key_without_keyring_says_so(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provider", "add", "mygw", "--preset", "custom", "--base-url", "http://h/v1"]) == EXIT_OK
    keyring.set_keyring(fail.Keyring())
    assert _set_key(monkeypatch, "mygw", KEY) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "No secure keyring" in err and "RLM_DESKTOP_KEY_MYGW" in err and KEY not in err
    assert "<ID>" not in err
    assert "From the command line, set RLM_DESKTOP_KEY_MYGW in the environment of `rlm-desktop run " \
           "--provider mygw`" in err


def test_test_and_models_against_the_scripted_server(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAI(api_key=KEY, models=["gpt-4o-mini", "local-x"]) as srv:
        assert main(["provider", "add", "mygw", "--preset", "custom", "--base-url", srv.base_url,
                     "--model", "gpt-4o-mini"]) == EXIT_OK
        assert main(["provider", "test", "mygw"]) == EXIT_USAGE          # no key yet
        assert "set-key mygw" in capsys.readouterr().err
        assert _set_key(monkeypatch, "mygw", "sk-wrong-000000000") == EXIT_OK
        assert main(["provider", "test", "mygw"]) == EXIT_PROVIDER
        err = capsys.readouterr().err
        assert "Bad key" in err and "sk-wrong" not in err
        assert _set_key(monkeypatch, "mygw", KEY) == EXIT_OK
        assert main(["provider", "test", "mygw"]) == EXIT_OK
        assert "Connected" in capsys.readouterr().out
        assert main(["provider", "models", "mygw", "--save"]) == EXIT_OK
        assert capsys.readouterr().out.split() == ["gpt-4o-mini", "local-x"]
        assert srv.requests[-1].authorization == f"Bearer {KEY}"
    prof = Settings().profile("mygw")
    assert prof.models == ("gpt-4o-mini", "local-x") and "gpt-4o-mini" in prof.prices
    assert "local-x" not in prof.prices                # unknown price stays unknown


def test_ollama_profile_never_sends_a_key(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-never-sent-00")
    with FakeOpenAI() as srv:
        assert main(["provider", "add", "local", "--preset", "ollama", "--base-url", srv.base_url]) == EXIT_OK
        assert main(["provider", "models", "local"]) == EXIT_OK
        assert all(r.authorization is None for r in srv.requests) and len(srv.requests) == 2
