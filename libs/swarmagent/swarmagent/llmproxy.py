"""The anthropic client a guest with an agent token uses: the platform's LLM
proxy (SWARM_LLM_BASE_URL, telemetry's Messages-API endpoint) with the
agent token as the API key. The guest holds no provider key; the proxy
checks the budget, forwards with the platform's key and records the usage.

Over HTTPS the proxy presents telemetry's workload certificate (names
"telemetry" and the addresses it was issued for), while the guest dials the
bridge address. The client therefore trusts only the mesh CA
(SWARM_AGENT_CA_FILE) and checks the certificate for the proxy's name
(SNI and hostname check, like the guest's gRPC channels' server-name
override), whatever address it dials.

The token is renewed by every heartbeat: TrackedLLM passes the current one
with each call (`with_options(api_key=…)`), so this client's own key is
only the token it started with.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anthropic

from swarmagent.credentials import AgentCredentials

LLM_BASE_URL_ENV = "SWARM_LLM_BASE_URL"
# The name the proxy's certificate is checked for: telemetry serves it.
SERVER_NAME_ENV, DEFAULT_SERVER_NAME = "SWARM_LLM_SERVER_NAME", "telemetry"


class NoProxy(ValueError):
    """An agent with a token has no LLM proxy to call."""


def _with_server_name(name: str) -> Callable[[Any], None]:
    def hook(request: Any) -> None:
        # httpcore's request extension: the TLS server name sent and checked.
        request.extensions["sni_hostname"] = name

    return hook


def proxy_client(
    env: Mapping[str, str], credentials: AgentCredentials, max_retries: int = 2
) -> anthropic.Anthropic:
    """The SDK pointed at the LLM proxy with the agent's token."""
    base_url = env.get(LLM_BASE_URL_ENV, "")
    if not base_url:
        # Never the SDK's default (the provider itself): the token is not a provider key.
        raise NoProxy(
            f"{LLM_BASE_URL_ENV} is not set: an agent with a token calls the LLM only through the "
            "platform's LLM proxy (vmhost's LLM_PROXY_URL)"
        )
    http_client: anthropic.DefaultHttpxClient | None = None
    if base_url.startswith("https://") and credentials.ca_file:
        tls = ssl.create_default_context(cafile=credentials.ca_file)
        name = env.get(SERVER_NAME_ENV) or DEFAULT_SERVER_NAME
        http_client = anthropic.DefaultHttpxClient(
            verify=tls, event_hooks={"request": [_with_server_name(name)]}
        )
    return anthropic.Anthropic(
        base_url=base_url, api_key=credentials.token, http_client=http_client, max_retries=max_retries
    )
