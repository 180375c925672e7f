"""The LLM price table, versioned, per token type.

Prices are US dollars per million tokens, from Anthropic's published model
pricing (anthropic.com/pricing and the Claude docs' "Pricing" page, as of
November 2025): base input, 5-minute cache writes (1.25x input), cache
reads (0.1x input) and output. Long-context (>200k input tokens) surcharges
and batch discounts are not modelled. A dollar per million tokens is one
micro-dollar per token, so cost in micro-dollars is tokens x price, exact
in Decimal and rounded once per record.

A model is matched by its alias or its dated id (`<alias>-YYYYMMDD`,
`<alias>-latest`); anything else is unknown: recorded at zero cost and
flagged, never priced by a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

PRICE_VERSION = "anthropic-2025-11"


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal


def _p(input_: str, output: str, cache_write: str, cache_read: str) -> ModelPrice:
    return ModelPrice(Decimal(input_), Decimal(output), Decimal(cache_write), Decimal(cache_read))


# alias -> price; a dated id or "-latest" of an alias has the alias's price.
ANTHROPIC: dict[str, ModelPrice] = {
    "claude-opus-4-5": _p("5", "25", "6.25", "0.50"),
    "claude-opus-4-1": _p("15", "75", "18.75", "1.50"),
    "claude-opus-4-0": _p("15", "75", "18.75", "1.50"),
    "claude-opus-4": _p("15", "75", "18.75", "1.50"),
    "claude-sonnet-4-5": _p("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-0": _p("3", "15", "3.75", "0.30"),
    "claude-sonnet-4": _p("3", "15", "3.75", "0.30"),
    "claude-3-7-sonnet": _p("3", "15", "3.75", "0.30"),
    "claude-3-5-sonnet": _p("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": _p("1", "5", "1.25", "0.10"),
    "claude-3-5-haiku": _p("0.80", "4", "1", "0.08"),
    "claude-3-opus": _p("15", "75", "18.75", "1.50"),
    "claude-3-haiku": _p("0.25", "1.25", "0.30", "0.03"),
}
_DATED = re.compile(r"^(?P<alias>.+?)(-\d{8}|-latest)?$")


def price_of(provider: str, model: str) -> ModelPrice | None:
    if provider != "anthropic":
        return None
    match = _DATED.match(model)
    return ANTHROPIC.get(match.group("alias")) if match else None


def cost_usd_micros(
    price: ModelPrice, input_tokens: int, output_tokens: int, cache_write_tokens: int, cache_read_tokens: int
) -> int:
    total = (
        price.input * input_tokens
        + price.output * output_tokens
        + price.cache_write * cache_write_tokens
        + price.cache_read * cache_read_tokens
    )
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))
