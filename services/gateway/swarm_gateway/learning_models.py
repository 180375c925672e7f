"""REST resources for learnings and codebase conventions (seed §13)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm_gateway.models import Request, Text, ts
from swarmcommon.enums import ProtoNames

LEARNING_KIND = ProtoNames(lpb.LearningKind)
CONVENTION_ORIGIN = ProtoNames(lpb.ConventionOrigin)


class ConventionCreate(Request):
    category: Annotated[str, Field(default="general", pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "general"
    content: Text = Field(min_length=1, max_length=1000, description="How things are done here")


class ConventionPublic(BaseModel):
    id: str
    project_id: str | None
    origin: str
    category: str
    content: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, c: lpb.Convention) -> ConventionPublic:
        return cls(
            id=c.id,
            project_id=c.project_id or None,
            origin=CONVENTION_ORIGIN.name(c.origin),
            category=c.category,
            content=c.content,
            created_at=ts(c.create_time, c.HasField("create_time")),
        )


class ConventionPage(BaseModel):
    items: list[ConventionPublic]
    next_page_token: str


class LearningPublic(BaseModel):
    id: str
    project_id: str | None
    kind: str
    source: str
    content: str
    ticket_id: str | None
    uses: int
    successes: int
    failures: int
    effectiveness: float
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, x: lpb.Learning) -> LearningPublic:
        return cls(
            id=x.id,
            project_id=x.project_id or None,
            kind=LEARNING_KIND.name(x.kind),
            source=x.source,
            content=x.content,
            ticket_id=x.ticket_id or None,
            uses=x.uses,
            successes=x.successes,
            failures=x.failures,
            effectiveness=x.effectiveness,
            created_at=ts(x.create_time, x.HasField("create_time")),
            updated_at=ts(x.update_time, x.HasField("update_time")),
        )


class LearningPage(BaseModel):
    items: list[LearningPublic]
    next_page_token: str


class Deleted(BaseModel):
    id: str
    deleted: bool = True
