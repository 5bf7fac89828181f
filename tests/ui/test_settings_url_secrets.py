"""A provider's base URL is saved in the preferences file, so it may carry no credential (issue 8
item 9): user info and secret query values are refused with a message that does not repeat them;
harmless parameters (Azure's api-version) are kept."""

from __future__ import annotations

import pytest

from rlm_desktop.core.profiles import ProfileError, ProviderProfile
from rlm_desktop.ui.settings import Settings


@pytest.mark.parametrize("url", ["https://gw.example.com/v1?key=qk-sekret-301",
                                 "https://gw.example.com/v1?api-version=2024-06-01&x-api-key=qk-sekret-301",
                                 "https://u:qk-sekret-301@gw.example.com/v1"])
def test_a_profile_url_with_a_credential_is_refused_and_never_saved(url: str) -> None:
    s = Settings()
    with pytest.raises(ProfileError) as e:
        s.save_profile(ProviderProfile(id="gw", name="Gateway", base_url=url))
    assert "qk-sekret-301" not in str(e.value)
    s.sync()
    saved = s.path.read_text(encoding="utf-8") if s.path.exists() else ""
    assert "qk-sekret-301" not in saved
    assert "gw" not in [p.id for p in s.providers()]


def test_a_harmless_query_is_kept() -> None:
    s = Settings()
    s.save_profile(ProviderProfile(id="az", name="Azure", base_url="https://x.openai.azure.com/openai/v1"
                                   "?api-version=2024-06-01"))
    assert s.profile("az").base_url.endswith("?api-version=2024-06-01")
