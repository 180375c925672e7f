"""What a call will probably cost, before it is made.

Input tokens are counted from the request locally (no count_tokens round
trip to the provider): about four characters a token over every string the
request sends (system, messages, tools, including keys' values such as
roles), a flat 1,600 tokens per image (Anthropic's ceiling for an image
that is not downscaled), and base64 documents at four characters a token
(an over-estimate). Expected output tokens are the p90 of the tenant's
recent calls to the same model, capped by `max_tokens`; without history,
`max_tokens`. When the request asks for prompt caching, its input is priced
as a cache write (the dearest way input is billed), so the estimate stays an
upper bound for the input side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swarm_telemetry.prices import ModelPrice, cost_usd_micros

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1600
# The request fields whose content the model reads.
PROMPT_FIELDS = ("system", "messages", "tools", "tool_choice")


@dataclass(frozen=True)
class Estimate:
    input_tokens: int
    output_tokens: int
    # Input priced as cache writes (the request carries cache_control).
    caching: bool
    cost_usd_micros: int


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _tokens(value: Any) -> int:
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list):
        return sum(_tokens(v) for v in value)
    if not isinstance(value, dict):
        return 0
    source = value.get("source")
    if value.get("type") == "image" and isinstance(source, dict) and source.get("type") in ("base64", "url"):
        return IMAGE_TOKENS
    return sum(_tokens(v) for v in value.values())


def input_tokens(body: dict[str, Any]) -> int:
    return sum(_tokens(body.get(field)) for field in PROMPT_FIELDS)


def _caches(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_caches(v) for v in value.values())
    if isinstance(value, list):
        return any(_caches(v) for v in value)
    return False


def p90(samples: Sequence[int]) -> int | None:
    """The nearest-rank 90th percentile; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def estimate(
    price: ModelPrice, body: dict[str, Any], max_tokens: int, recent_output: Sequence[int]
) -> Estimate:
    tokens_in = input_tokens(body)
    expected = p90(recent_output)
    tokens_out = max_tokens if expected is None else min(expected, max_tokens)
    caching = _caches(body)
    cost = cost_usd_micros(price, 0 if caching else tokens_in, tokens_out, tokens_in if caching else 0, 0)
    # Quota holds positive amounts; a call is never free.
    return Estimate(tokens_in, tokens_out, caching, max(cost, 1))
