"""The session cookie: tampering, expiry, another key, and the setting's validation."""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from swarm_gateway.config import Settings
from swarm_gateway.dashboard.session import SessionCodec


def test_a_session_round_trips_and_its_csrf_token_is_checked() -> None:
    codec = SessionCodec(Fernet.generate_key().decode(), 3600)
    session = codec.new("acme", "sk_secret")
    decoded = codec.decode(codec.encode(session))
    assert decoded == session
    assert decoded.csrf_matches(session.csrf)
    assert not decoded.csrf_matches("") and not decoded.csrf_matches(session.csrf + "x")


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("not-a-token", id="garbage"),
    ],
)
def test_a_missing_or_forged_cookie_is_no_session(cookie: str | None) -> None:
    assert SessionCodec("", 3600).decode(cookie) is None


def test_a_tampered_cookie_is_no_session() -> None:
    codec = SessionCodec("", 3600)
    token = codec.encode(codec.new("acme", "sk_secret"))
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    assert codec.decode(flipped) is None


def test_another_processes_random_key_cannot_read_the_cookie() -> None:
    token = SessionCodec("", 3600).encode(SessionCodec("", 3600).new("acme", "sk_secret"))
    assert SessionCodec("", 3600).decode(token) is None


def test_an_expired_session_is_no_session() -> None:
    codec = SessionCodec("", 3600)
    session = codec.new("acme", "sk_secret")
    old = type(session)(session.tenant_id, session.api_key, session.csrf, time.time() - 1)
    assert codec.decode(codec.encode(old)) is None


def test_a_session_key_that_is_not_a_fernet_key_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="DASHBOARD_SESSION_KEY is not a Fernet key"):
        Settings(insecure_dev=True, dashboard_session_key="short")
    key = Fernet.generate_key().decode()
    assert Settings(insecure_dev=True, dashboard_session_key=key).dashboard_session_key == key
