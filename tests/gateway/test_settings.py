"""Gateway settings refuse to start with a placeholder admin token."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pydantic
import pytest
import yaml

from swarm_gateway.config import Settings
from tests.support.mesh import Mesh

ROOT = Path(__file__).resolve().parents[2]


def _shipped_admin_token() -> str:
    secret = yaml.safe_load((ROOT / "deploy/k8s/base/gateway/secret.yaml").read_text())
    token: str = secret["stringData"]["token"]
    return token


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("PLACEHOLDER-anything", id="placeholder-prefix"),
        pytest.param("placeholder-lower-case-token", id="placeholder-lower"),
        pytest.param("please-change-me-before-use", id="change-me"),
        pytest.param("admin", id="short-default"),
        pytest.param("changeme", id="changeme"),
    ],
)
def test_placeholder_admin_tokens_are_refused(token: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="SWARM_GATEWAY_ADMIN_TOKEN") as refused:
        Settings(admin_token=token)
    assert "input_value" not in str(refused.value), "the refusal must not echo the secret"


def test_the_admin_token_shipped_in_deploy_k8s_is_refused() -> None:
    shipped = _shipped_admin_token()
    with pytest.raises(pydantic.ValidationError, match="placeholder") as refused:
        Settings(admin_token=shipped)
    assert shipped not in str(refused.value)


def test_a_random_admin_token_and_an_empty_one_are_accepted() -> None:
    assert Settings(admin_token=uuid.uuid4().hex).admin_token
    assert Settings(admin_token="").admin_token == ""


def test_the_gateway_does_not_start_with_the_shipped_token() -> None:
    env = {**os.environ, "SWARM_GATEWAY_ADMIN_TOKEN": _shipped_admin_token(), "SWARM_GATEWAY_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "swarm_gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SWARM_GATEWAY_ADMIN_TOKEN" in done.stderr and "placeholder" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_an_empty_admin_token_disables_the_admin_surface(mesh: Mesh) -> None:
    with mesh.gateway(admin_token="") as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        for headers in ({}, {"Authorization": f"Bearer {mesh.app.state.settings.admin_token}"}):
            r = http.get("/admin/tenants", headers=headers)
            assert r.status_code == 403, r.text
            assert "disabled" in r.json()["error"]["message"]
