"""How a provider's base URL is spoken to: the URL the SDK appends paths to, the query parameters
every request carries, and the header that carries the key (Azure OpenAI: ``api-key`` and an
``api-version`` query; everyone else: ``Authorization: Bearer``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl, urlsplit, urlunsplit

AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str                                   # without query or fragment, no trailing slash
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    azure: bool = False

    def key_headers(self, key: str | None) -> dict[str, str]:
        """The header carrying ``key`` ({} without a key)."""
        if not key:
            return {}
        return {"api-key": key} if self.azure else {"Authorization": f"Bearer {key}"}

    def url(self, path: str) -> str:
        """``base_url`` + ``path`` with the endpoint's query (for requests made outside the SDK)."""
        from urllib.parse import urlencode

        full = self.base_url + "/" + path.lstrip("/")
        return full + ("?" + urlencode(dict(self.query)) if self.query else "")


def is_azure(base_url: str) -> bool:
    """Azure OpenAI: its hosts, its ``/openai/deployments/NAME`` path, or an ``api-version`` query."""
    parts = urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()
    query = dict(parse_qsl(parts.query))
    return (host.endswith(AZURE_HOST_SUFFIXES) or "/openai/deployments/" in parts.path + "/"
            or "api-version" in query)


def endpoint_for(base_url: str) -> Endpoint:
    """Split ``base_url`` into what the openai SDK takes: ``base_url`` (no query) and ``default_query``.

    The SDK appends ``/chat/completions`` to its base URL, so a query written into the URL (Azure's
    ``?api-version=2024-10-21``) must travel as ``default_query`` instead, or it would end up before
    the path. The plain AsyncOpenAI client is used for Azure too: with the deployment in the URL it
    needs nothing of AzureOpenAI but the ``api-key`` header, and one client class keeps one code path
    for streaming, retries and errors."""
    parts = urlsplit(base_url.strip())
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Endpoint(base, MappingProxyType(query), is_azure(base_url))
