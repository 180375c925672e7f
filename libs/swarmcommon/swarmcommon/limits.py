"""Message size limits shared by every gRPC server and client.

gRPC's 4 MiB default turned valid large operations (500 tickets with long
descriptions; a page of 1,000 tickets) into RESOURCE_EXHAUSTED — after the
server had committed, so a caller saw "quota exceeded, retry" for work that
was done. A request may be up to MAX_REQUEST_BYTES; an answer is allowed to
be larger, because it echoes the request plus what the server adds (ids,
states, times), so an accepted request always gets its answer through.
"""

from __future__ import annotations

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_RESPONSE_BYTES = 128 * 1024 * 1024

# One event's data, as the events service accepts it and relays check it
# before sending (a larger one is dead-lettered, never retried forever).
MAX_EVENT_DATA_BYTES = 256 * 1024
# One Publish batch from an outbox relay: bounded by bytes as well as by
# count, so many large events never make a request the server refuses.
MAX_PUBLISH_BATCH_BYTES = 2 * 1024 * 1024
