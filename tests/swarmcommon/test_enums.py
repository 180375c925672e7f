"""The one proto <-> StrEnum codec."""

from __future__ import annotations

import enum

import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmcommon.enums import EnumCodec, ProtoNames
from swarmcommon.errors import InvalidArgument


class State(enum.StrEnum):
    BLOCKED = "blocked"
    READY = "ready"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    QUARANTINED = "quarantined"
    CANCELLED = "cancelled"


STATE = EnumCodec(pb.TicketState, State)


def test_every_member_round_trips() -> None:
    for member in State:
        number = STATE.to_proto(member)
        assert pb.TicketState.Name(number) == "TICKET_STATE_" + member.value.upper()
        assert STATE.from_proto("state", number) is member


def test_unspecified_is_none_or_refused_when_required() -> None:
    assert STATE.from_proto("state", 0) is None
    assert STATE.to_proto(None) == 0
    with pytest.raises(InvalidArgument, match="state: is required"):
        STATE.required("state", 0)


def test_unknown_numbers_and_names_name_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"filter\.state: unknown value 99"):
        STATE.from_proto("filter.state", 99)
    with pytest.raises(InvalidArgument, match=r"state: unknown value 'redy' \(one of: blocked, ready"):
        STATE.from_name("state", "redy")
    assert STATE.from_name("state", "done") is State.DONE


def test_a_member_missing_on_either_side_fails_at_construction() -> None:
    class Fewer(enum.StrEnum):
        READY = "ready"

    class More(enum.StrEnum):
        BLOCKED = "blocked"
        READY = "ready"
        ASSIGNED = "assigned"
        IN_PROGRESS = "in_progress"
        DONE = "done"
        QUARANTINED = "quarantined"
        CANCELLED = "cancelled"
        ARCHIVED = "archived"

    with pytest.raises(ValueError):
        EnumCodec(pb.TicketState, Fewer)
    with pytest.raises(ValueError, match="no proto value for archived"):
        EnumCodec(pb.TicketState, More)


def test_proto_names_spell_values_both_ways() -> None:
    names = ProtoNames(pb.TicketState)
    assert names.number("in_progress") == pb.TICKET_STATE_IN_PROGRESS
    assert names.name(pb.TICKET_STATE_IN_PROGRESS) == "in_progress"
    assert names.number("") == names.number(None) == 0
    assert names.name(0) == ""
    assert [names.name(STATE.to_proto(m)) for m in State] == [m.value for m in State]
