"""The estimate a call is held at: input counted from the request, output
from the p90 of recent calls capped by max_tokens (max_tokens without
history), input priced as cache writes when the request asks for caching."""

from __future__ import annotations

from swarm_telemetry.prices import price_of
from swarm_telemetry.proxy.estimate import IMAGE_TOKENS, estimate, input_tokens, p90

SONNET = price_of("anthropic", "claude-sonnet-4-5")
assert SONNET is not None


def body(text: str = "x" * 400, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_input_is_counted_from_every_prompt_field() -> None:
    assert input_tokens(body("x" * 400)) == 1 + 100  # "user" and the text
    with_system = body("x" * 400, system="y" * 40, tools=[{"name": "grep", "description": "z" * 80}])
    assert input_tokens(with_system) == 101 + 10 + 1 + 20
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 10**6}}
    assert input_tokens({"messages": [{"role": "user", "content": [image]}]}) == 1 + IMAGE_TOKENS


def test_p90_is_nearest_rank() -> None:
    assert p90([]) is None
    assert p90([5]) == 5
    assert p90(list(range(1, 11))) == 9
    assert p90([100] * 9 + [5000]) == 100  # one long answer in ten does not move it


def test_output_is_max_tokens_without_history_and_the_p90_capped_by_it_with() -> None:
    assert estimate(SONNET, body(), 4096, []).output_tokens == 4096
    assert estimate(SONNET, body(), 4096, [200, 300, 250]).output_tokens == 300
    assert estimate(SONNET, body(), 128, [200, 300, 250]).output_tokens == 128
    guess = estimate(SONNET, body(), 4096, [300])
    assert guess.cost_usd_micros == 101 * 3 + 300 * 15


def test_a_caching_request_prices_its_input_as_cache_writes() -> None:
    cached = body(system=[{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}])
    guess = estimate(SONNET, cached, 100, [100])
    # "user", the text, then the system block: "text", its text, "ephemeral".
    assert guess.caching and guess.input_tokens == 1 + 100 + 1 + 100 + 3
    assert guess.cost_usd_micros == round(205 * 3.75 + 100 * 15)
