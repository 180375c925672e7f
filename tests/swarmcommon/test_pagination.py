from __future__ import annotations

import pytest

from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageToken, page_size
from swarmcommon.settings import ServiceSettings, service_config


def test_page_token_round_trips_its_position() -> None:
    token = PageToken(["tickets", "acme", None])
    encoded = token.encode(["2030-01-01T00:00:00+00:00", 3, "abc"])
    assert token.decode(encoded) == ["2030-01-01T00:00:00+00:00", 3, "abc"]
    assert token.decode("") is None


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
        PageToken(["x"]).decode(bad)


def test_token_for_other_filters_is_refused() -> None:
    encoded = PageToken(["tickets", "acme"]).encode([1])
    with pytest.raises(InvalidArgument, match="different query"):
        PageToken(["tickets", "other"]).decode(encoded)


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
