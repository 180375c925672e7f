"""The signed-in tenant's live events for the pages' refresh script.

A browser's EventSource sends the session cookie but no Authorization
header, so this relays the REST event stream (routers/webhooks.py) for the
session's caller. Events arrive unnamed (`event:` lines dropped, the type
is in the JSON), so one `message` listener sees every type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from swarm_gateway.dashboard.pages import PageRoute, viewer
from swarm_gateway.routers import webhooks

router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def _unnamed(frames: AsyncIterator[str | bytes]) -> AsyncIterator[str]:
    async for frame in frames:
        lines = (frame.decode() if isinstance(frame, bytes) else frame).split("\n")
        if "event: error" not in lines:
            lines = [line for line in lines if not line.startswith("event: ")]
        yield "\n".join(lines)


@router.get("/live/events")
async def live_events(request: Request) -> StreamingResponse:
    who = await anyio.to_thread.run_sync(viewer, request)
    upstream = await webhooks.stream_events(
        who.caller,
        request.app.state.backends,
        request.app.state.settings,
        types=[],
        since=None,
        last_event_id=None,
    )
    return StreamingResponse(
        _unnamed(upstream.body_iterator),  # type: ignore[arg-type]
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
