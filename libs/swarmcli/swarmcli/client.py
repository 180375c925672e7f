"""The one HTTP client every command uses: the gateway's base URL, a bearer
credential, an Idempotency-Key on every write, and one way of failing.

A gateway error (its body is `{"error": {"status", "message", "field", ...}}`,
or FastAPI's `{"detail": [...]}` for a malformed request) is printed as one
line on stderr and exits 1; so is a gateway that cannot be reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import typer

# Answers the gateway documents as "retry": the same Idempotency-Key makes a
# retried write happen once.
RETRY_STATUSES = {502, 503, 504}
RETRIES = 2
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` on stderr; the caller raises what this returns."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def usage_error(message: str) -> typer.Exit:
    """A command used wrongly (exit 2, as for a bad flag); the caller raises it."""
    return fail(message, code=2)


def error_message(response: httpx.Response) -> str:
    """The gateway's own words for a failed answer, on one line."""
    prefix = f"{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return f"{prefix} {response.reason_phrase}: {text[0][:300]}" if text else prefix
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        message = f"{prefix} {err.get('status', '')}: {err.get('message', '')}"
        if err.get("field") and str(err["field"]) not in message:
            message += f" (field {err['field']})"
        retry = response.headers.get("Retry-After")
        if response.status_code == 429 and retry:
            message += f"; retry after {retry}s"
        return message
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        problems = [
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}"
            for d in body["detail"]
            if isinstance(d, dict)
        ]
        return f"{prefix} invalid request: {'; '.join(problems)}"
    return f"{prefix}: {str(body)[:300]}"


class Api:
    """The gateway at `base_url`, as the holder of `token` (an API key, or the
    admin token for /admin routes)."""

    def __init__(self, base_url: str, token: str, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.base_url = base_url
        headers = {"User-Agent": "swarm-cli/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """The answer to one call; exits 1 with the gateway's message on an
        error status (unless the status is in `allow`) or when unreachable."""
        headers = {}
        if method != "GET":
            headers["Idempotency-Key"] = f"cli-{uuid.uuid4()}"
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "", [])}
        for attempt in range(RETRIES + 1):
            with self.translate_errors():
                response = self.http.request(method, path, json=json, params=clean, headers=headers)
            if response.status_code not in RETRY_STATUSES or attempt == RETRIES:
                break
        if response.is_success or response.status_code in allow:
            return response
        raise fail(error_message(response))

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {}).json()

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body).json()

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).json()

    def delete(self, path: str) -> Any:
        response = self.request("DELETE", path)
        return response.json() if response.content else None

    def pages(self, path: str, limit: int, **params: Any) -> dict[str, Any]:
        """Up to `limit` items of a paged listing (0: all of them), as one
        page in the gateway's shape: {"items": [...], "next_page_token": ...}."""
        items: list[Any] = []
        token = ""
        while True:
            want = 0 if not limit else min(1000, limit - len(items))
            page = self.get(path, **params, page_size=want or None, page_token=token)
            items.extend(page["items"])
            token = page.get("next_page_token", "")
            if not token or (limit and len(items) >= limit):
                return {**page, "items": items, "next_page_token": token}

    @contextmanager
    def stream(self, path: str, params: dict[str, Any], headers: dict[str, str]) -> Iterator[Iterator[str]]:
        """The lines of a long-lived answer (Server-Sent Events): no read timeout."""
        clean = {k: v for k, v in params.items() if v not in (None, "", [])}
        timeout = httpx.Timeout(TIMEOUT.connect, read=None)
        with (
            self.translate_errors(),
            self.http.stream("GET", path, params=clean, headers=headers, timeout=timeout) as response,
        ):
            if not response.is_success:
                response.read()
                raise fail(error_message(response))
            yield response.iter_lines()

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Transport failures as one line naming the URL, never a traceback."""
        try:
            yield
        except httpx.ConnectError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc) or "cannot connect"
            raise fail(f"cannot reach the gateway at {self.base_url}: {reason}") from None
        except httpx.TimeoutException:
            raise fail(f"the gateway at {self.base_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise fail(f"talking to the gateway at {self.base_url} failed: {exc}") from None
