"""The one codec between proto enums and domain `StrEnum`s.

Proto enums follow Buf style (`TICKET_STATE_QUARANTINED`, zero value
`TICKET_STATE_UNSPECIFIED`); domain enums hold the lower-case suffix
(`TicketState.QUARANTINED == "quarantined"`), which is also what the
database stores and what JSON shows. One codec per pair, built once at
import:

    STATE = EnumCodec(pb.TicketState, TicketState)
    STATE.to_proto(TicketState.READY)          # pb.TICKET_STATE_READY
    STATE.from_proto("filter.state", 3)        # TicketState.READY, or None for UNSPECIFIED
    STATE.required("state", 0)                 # InvalidArgument: state: is required

Building the codec checks that every domain member has a proto value, so a
state added on one side only fails at import rather than at the first call.

Where there is no domain enum (the gateway's JSON models spell values as
strings), `ProtoNames` gives the same lower-case spellings both ways:

    ProtoNames(pb.TicketState).number("ready")   # pb.TICKET_STATE_READY; "" or None is 0
    ProtoNames(pb.TicketState).name(3)           # "ready"
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

from swarmcommon.errors import InvalidArgument

E = TypeVar("E", bound=enum.StrEnum)


def _prefix(proto_enum: Any) -> str:
    unspecified = dict((n, name) for name, n in proto_enum.items()).get(0, "")
    if not unspecified.endswith("_UNSPECIFIED"):
        raise ValueError(f"{proto_enum.DESCRIPTOR.name}: value 0 must be *_UNSPECIFIED")
    return str(unspecified.removesuffix("UNSPECIFIED"))


class ProtoNames:
    """A proto enum's values by their lower-case suffix, for JSON and query strings."""

    def __init__(self, proto_enum: Any) -> None:
        prefix = _prefix(proto_enum)
        self._names: dict[int, str] = {
            int(n): str(name).removeprefix(prefix).lower() for name, n in proto_enum.items() if n != 0
        }
        self._numbers = {name: n for n, name in self._names.items()}

    def name(self, number: int) -> str:
        """The spelling of `number` ("" for UNSPECIFIED)."""
        return self._names.get(number, "")

    def number(self, name: str | None) -> int:
        """The number of `name`; None or "" is UNSPECIFIED. Callers validate names
        first (the gateway's models allow only known ones), so an unknown one is a bug."""
        return self._numbers[name] if name else 0


class EnumCodec(Generic[E]):  # noqa: UP046 - Python 3.11 has no PEP 695 syntax
    def __init__(self, proto_enum: Any, domain: type[E], *, prefix: str | None = None) -> None:
        names: dict[int, str] = {number: name for name, number in proto_enum.items()}
        if prefix is None:
            prefix = _prefix(proto_enum)
        self.prefix = prefix
        self.domain = domain
        self._to_domain: dict[int, E] = {}
        self._to_proto: dict[E, int] = {}
        for number, name in names.items():
            if number == 0:
                continue
            member = domain(name.removeprefix(prefix).lower())
            self._to_domain[number] = member
            self._to_proto[member] = number
        missing = [m.value for m in domain if m not in self._to_proto]
        if missing:
            raise ValueError(f"{domain.__name__}: no proto value for {', '.join(missing)}")

    def to_proto(self, value: E | None) -> int:
        """The proto number; None is the UNSPECIFIED zero value."""
        return 0 if value is None else self._to_proto[value]

    def from_proto(self, field: str, number: int) -> E | None:
        """The domain member; None for UNSPECIFIED; an unknown number names `field`."""
        if number == 0:
            return None
        try:
            return self._to_domain[number]
        except KeyError:
            raise InvalidArgument(field, f"unknown value {number}") from None

    def required(self, field: str, number: int) -> E:
        """Like from_proto, but UNSPECIFIED is refused."""
        value = self.from_proto(field, number)
        if value is None:
            raise InvalidArgument(field, "is required")
        return value

    def from_name(self, field: str, name: str) -> E:
        """A member by its domain value (`"ready"`), e.g. from a query string."""
        try:
            return self.domain(name)
        except ValueError:
            allowed = ", ".join(m.value for m in self.domain)
            raise InvalidArgument(field, f"unknown value {name[:64]!r} (one of: {allowed})") from None
