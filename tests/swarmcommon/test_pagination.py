from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageToken, page_size
from swarmcommon.settings import ServiceSettings, service_config


def test_page_token_round_trips_its_position() -> None:
    token = PageToken(["tickets", "acme", None])
    when = datetime(2030, 1, 1, tzinfo=UTC)
    encoded = token.encode([when, 3, "abc"])
    assert token.decode(encoded, (datetime, int, str)) == [when, 3, "abc"]
    assert token.decode("", (datetime, int, str)) is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("!!!", id="not-base64"),
        pytest.param("e30", id="empty-json"),
        pytest.param("bnVsbA", id="null"),
    ],
)
def test_foreign_tokens_are_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        PageToken(["x"]).decode(bad, (int,))


def test_token_for_other_filters_is_refused() -> None:
    encoded = PageToken(["tickets", "acme"]).encode([1])
    with pytest.raises(InvalidArgument, match="different query"):
        PageToken(["tickets", "other"]).decode(encoded, (int,))


def _forged(filters: list[object], key: object) -> str:
    """A token built by hand: the fingerprint is no secret."""
    fingerprint = PageToken(filters)._fingerprint
    body = json.dumps({"f": fingerprint, "k": key})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param({"a": 1}, id="object-not-list"),
        pytest.param([1], id="too-short"),
        pytest.param(["2030-01-01T00:00:00+00:00", 1, "x"], id="too-long"),
        pytest.param([1, "x"], id="number-for-time"),
        pytest.param(["yesterday", "x"], id="text-for-time"),
        pytest.param(["2030-01-01T00:00:00", "x"], id="naive-time"),
        pytest.param(["2030-01-01T00:00:00+00:00", 7], id="number-for-text"),
        pytest.param(["2030-01-01T00:00:00+00:00", ["x"]], id="list-for-text"),
        pytest.param(["2030-01-01T00:00:00+00:00", "x" * 5000], id="huge-text"),
    ],
)
def test_forged_tokens_of_the_wrong_shape_are_invalid_argument(key: object) -> None:
    token = _forged(["tickets", "acme"], key)
    with pytest.raises(InvalidArgument, match="page_token: is not a token this service issued"):
        PageToken(["tickets", "acme"]).decode(token, (datetime, str))


@pytest.mark.parametrize("key", [[True], [2**70], ["7"], [1.5]], ids=["bool", "overflow", "text", "float"])
def test_forged_integer_positions_are_refused(key: object) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        PageToken(["events"]).decode(_forged(["events"], key), (int,))


def test_page_size_defaults_caps_and_rejects_negative() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(10**6) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument, match="page_size"):
        page_size(-1)


def test_settings_read_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    class Settings(ServiceSettings):
        model_config = service_config("widgets")

    monkeypatch.setenv("SWARM_WIDGETS_DATABASE_URL", "postgresql+psycopg://db/widgets")
    monkeypatch.setenv("SWARM_WIDGETS_GRPC_MAX_WORKERS", "7")
    monkeypatch.setenv("SWARM_TICKETING_GRPC_MAX_WORKERS", "99")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://db/widgets"
    assert s.grpc_max_workers == 7
