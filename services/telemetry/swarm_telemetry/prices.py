"""The LLM price table, versioned, per token type.

Prices are US dollars per million tokens: base input, 5-minute cache writes,
cache reads and output, from Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing; the 5.5-generation rows
as summarised from that page in October 2026). Not modelled: 1-hour cache
writes (billed here as 5-minute writes), batch discounts, and long-context
surcharges, except Haiku 5.5's published prompt-size tier. A dollar per
million tokens is one micro-dollar per token, so cost in micro-dollars is
tokens x price, exact in Decimal and rounded once per record.

A model is matched by its alias or its dated id (`<alias>-YYYYMMDD`,
`<alias>-latest`); anything else (including models newer than this table,
such as the 5.2 generation) is unknown: recorded at zero cost and flagged,
never priced by a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

PRICE_VERSION = "anthropic-2026-10"


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal
    # Prompts (input + cache tokens) above this many tokens use `long_prompt`.
    long_prompt_over: int | None = None
    long_prompt: ModelPrice | None = None


def _p(input_: str, output: str, cache_write: str, cache_read: str) -> ModelPrice:
    return ModelPrice(Decimal(input_), Decimal(output), Decimal(cache_write), Decimal(cache_read))


_FABLE_5_1 = _p("10", "50", "12.50", "0.25")
_FABLE_5 = _p("10", "50", "12.50", "1")
_OPUS_NEW = _p("5", "25", "6.25", "0.50")
_OPUS_OLD = _p("15", "75", "18.75", "1.50")
_SONNET = _p("3", "15", "3.75", "0.30")

# alias -> price; a dated id or "-latest" of an alias has the alias's price.
ANTHROPIC: dict[str, ModelPrice] = {
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": _p("4", "20", "5", "0.20"),
    "claude-opus-5": _OPUS_NEW,
    "claude-opus-4-8": _OPUS_NEW,
    "claude-opus-4-7": _OPUS_NEW,
    "claude-opus-4-6": _OPUS_NEW,
    "claude-opus-4-5": _OPUS_NEW,
    "claude-opus-4-1": _OPUS_OLD,
    "claude-opus-4-0": _OPUS_OLD,
    "claude-opus-4": _OPUS_OLD,
    "claude-3-opus": _OPUS_OLD,
    "claude-sonnet-5-5": _p("2", "10", "2.50", "0.10"),
    "claude-sonnet-5": _p("2", "10", "2.50", "0.20"),
    "claude-sonnet-4-6": _SONNET,
    "claude-sonnet-4-5": _SONNET,
    "claude-sonnet-4-0": _SONNET,
    "claude-sonnet-4": _SONNET,
    "claude-3-7-sonnet": _SONNET,
    "claude-3-5-sonnet": _SONNET,
    "claude-haiku-5-5": ModelPrice(
        Decimal("0.10"),
        Decimal("0.50"),
        Decimal("0.125"),
        Decimal("0.01"),
        long_prompt_over=100_000,
        long_prompt=_p("0.50", "2.50", "0.625", "0.05"),
    ),
    "claude-haiku-4-5": _p("1", "5", "1.25", "0.10"),
    "claude-3-5-haiku": _p("0.80", "4", "1", "0.08"),
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
    prompt = input_tokens + cache_write_tokens + cache_read_tokens
    if (
        price.long_prompt is not None
        and price.long_prompt_over is not None
        and prompt > price.long_prompt_over
    ):
        price = price.long_prompt
    total = (
        price.input * input_tokens
        + price.output * output_tokens
        + price.cache_write * cache_write_tokens
        + price.cache_read * cache_read_tokens
    )
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))
