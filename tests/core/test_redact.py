"""Credentials inside URLs (issue 8 item 9), each layer on its own: masking, the log redaction,
the provider's error scrubbing, exports of traces that hold a raw URL, profiles' validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlm_desktop.core import logs
from rlm_desktop.core.config import ProviderConfig
from rlm_desktop.core.exporters import FORMATS, export_trace
from rlm_desktop.core.profiles import ProfileError, ProviderProfile, check_url
from rlm_desktop.core.redact import is_secret_param, mask_url, mask_urls_in, strip_query, url_secrets
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pass@host/v1", "https://user:***@host/v1"),
    ("https://host/v1?api_key=abc&api-version=2024-06-01", "https://host/v1?api_key=***&api-version=2024-06-01"),
    ("https://u:p@host:8443/v1?key=a&token=b&access_token=c&sig=d&x=1",
     "https://u:***@host:8443/v1?key=***&token=***&access_token=***&sig=***&x=1"),
    ("https://ghp_tokenonly@host/v1", "https://***@host/v1"),
    ("https://h/x?X-Amz-Signature=ab&X-Amz-Credential=cd&X-Amz-Date=20240101",
     "https://h/x?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=20240101"),
    ("https://h/v1?client_secret=s&password=p&subscription-key=k",
     "https://h/v1?client_secret=***&password=***&subscription-key=***"),
    ("https://h/cb#access_token=zz&state=1", "https://h/cb#access_token=***&state=1"),
    ("https://h:99999/v1?apikey=zz", "https://h:99999/v1?apikey=***"),      # a port urlsplit refuses
    ("http://localhost:11434/v1", "http://localhost:11434/v1"),
    ("https://h/v1?api-version=2024-06-01&model=m&format=json", "https://h/v1?api-version=2024-06-01&model=m&format=json"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_secret_parameter_names() -> None:
    for name in ("api_key", "API-KEY", "x-api-key", "key", "token", "access_token", "sig", "signature",
                 "client_secret", "password", "auth", "Authorization", "session_id", "jwt"):
        assert is_secret_param(name), name
    for name in ("api-version", "api_version", "model", "format", "region", "version", "stream"):
        assert not is_secret_param(name), name


def test_url_secrets_in_every_form_and_masking_inside_text() -> None:
    url = "https://u:p%40ss%2Fword@h/v1?sig=a%2Bb&x=1"
    found = url_secrets(url)
    assert {"p%40ss%2Fword", "p@ss/word", "a%2Bb", "a+b"} <= set(found)
    assert url_secrets("https://h/v1?api-version=1") == []
    text = f"POST {url}: refused. (see {url})"
    assert mask_urls_in(text) == ("POST https://u:***@h/v1?sig=***&x=1: refused. "
                                  "(see https://u:***@h/v1?sig=***&x=1)")
    assert strip_query("http://u:p@h:1/v1?api_key=s&api-version=2") == (
        "http://u:p@h:1/v1", {"api_key": "s", "api-version": "2"})


def test_the_log_scrubs_registered_url_secrets_even_without_the_url(tmp_path: Path) -> None:
    """The log layer alone: an exception text that echoes the parts of a URL (not the URL) is
    scrubbed once the URL was registered — a ProviderConfig registers its base URL."""
    record = "connect failed: user u password pw-sekret-4417 query key qk-sekret-5521"
    assert "pw-sekret-4417" in logs.redact(record)             # unknown: nothing to go by
    ProviderConfig(id="t", name="t", base_url="https://u:pw-sekret-4417@h/v1?key=qk-sekret-5521")
    assert logs.redact(record) == ("connect failed: user u password [redacted] query key "
                                   f"{logs.REDACTED}")
    assert logs.redact("see https://a:b-unregistered@h/v1?token=t-unregistered now") == (
        "see https://a:***@h/v1?token=*** now")                # any URL in a record is masked


def test_the_log_file_never_holds_url_secrets(tmp_path: Path) -> None:
    logs.register_url("https://u:pw-sekret-8803@h/v1?api_key=qk-sekret-8804")
    path = logs.setup_logging()
    assert path is not None
    try:
        try:
            raise ConnectionError("https://u:pw-sekret-8803@h/v1?api_key=qk-sekret-8804 refused "
                                  "(pw-sekret-8803)")
        except ConnectionError:
            logging.getLogger("rlm_desktop.test").exception("call failed for qk-sekret-8804")
    finally:
        logs.shutdown_logging()
    text = path.read_text(encoding="utf-8")
    assert "call failed" in text and "refused" in text
    assert "sekret" not in text


def test_provider_errors_are_scrubbed_of_url_secrets() -> None:
    from rlm_desktop.engine.providers import scrub

    prov = ProviderConfig(id="t", name="t", base_url="https://u:pw-sekret-1@h/v1?api_key=qk-sekret-2",
                          api_key="sk-key-sekret-3")
    text = ("bad request to https://u:pw-sekret-1@h/v1/chat/completions?api_key=qk-sekret-2; "
            "key sk-key-sekret-3; pass pw-sekret-1; q qk-sekret-2")
    assert "sekret" not in scrub(text, prov)
    assert "pw-sekret-1" not in repr(prov) and "qk-sekret-2" not in repr(prov)
    assert prov.shown_url == "https://u:***@h/v1?api_key=***"


def test_exports_of_a_trace_holding_a_raw_url_show_it_masked() -> None:
    raw = "http://u:pw-sekret-6@h/v1?api_key=qk-sekret-7"
    trace = Trace({"provider": raw, "query": "q"})
    run = trace.start_span(SpanKind.RUN, "run", None, {Attr.PROVIDER: raw, Attr.QUERY: "q"})
    call = trace.start_span(SpanKind.LLM_CALL, "chat m", run, {Attr.PROVIDER: raw, Attr.MODEL: "m"})
    trace.end_span(call, SpanStatus.ERROR, {Attr.ERROR: f"cannot reach {raw}: refused",
                                            Attr.RETRIES: [{"attempt": 1, "error": f"{raw} 500", "wait_s": 0}]})
    trace.end_span(run, SpanStatus.ERROR, {Attr.ERROR: f"provider error: {raw}"})
    for fmt in FORMATS:
        text = export_trace(trace, fmt)
        assert "sekret" not in text, fmt
    doc = json.loads(export_trace(trace, "json"))
    assert doc["header"]["provider"] == "http://u:***@h/v1?api_key=***"


def test_a_profile_url_never_carries_a_secret_and_its_errors_never_repeat_one() -> None:
    with pytest.raises(ProfileError, match="must not carry a secret in its query \\(api_key\\)") as e:
        check_url("https://h/v1?api_key=qk-sekret-9&api-version=2024-06-01")
    assert "sekret" not in str(e.value)
    check_url("https://h/openai/v1?api-version=2024-06-01")     # Azure's form is fine
    with pytest.raises(ProfileError) as e:
        check_url("ftp://u:pw-sekret-10@h/v1")
    assert "sekret" not in str(e.value) and "ftp://u:***@h/v1" in str(e.value)
    prof = ProviderProfile(id="p", name="p", base_url="https://h/v1 ?token=qk-sekret-11")
    with pytest.raises(ProfileError) as e:
        check_url(prof.base_url)
    assert "sekret" not in str(e.value)
