"""The agent template marketplace (seed §14): pure rules.

A listing publishes an agent template (`swarm_ticketing.templates`) that an
author tenant owns to other tenants. Each published version is an ordinary
template version, so an installed listing is deployed like any template.

- **Visibility.** `public`: searchable; `unlisted`: reachable by slug, never
  in search; `private`: the author's alone — NOT_FOUND to everyone else,
  like a slug that does not exist. A tenant that installed a listing keeps
  seeing it whatever the author later makes of its visibility.
- **Pricing.** Prices are whole cents in micro-dollars (1 USD = 1,000,000).
  free: 0; one_time and subscription: $0.01–$10,000; per_use: $0.01–$1.00.
  A one-time purchase is charged once per tenant (re-installing after an
  uninstall does not charge again); a subscription charges its first period
  at install (renewals are not billed yet); a per-use listing charges each
  claim that runs one of its versions.
- **Revenue split.** platform/author: one-time 20/80, per-use 25/75,
  subscription 15/85. The platform's share is rounded half up to the
  micro-dollar and the author gets the rest, so the two always sum to the
  price exactly; on whole-cent prices no rounding ever happens (a cent's
  15, 20 or 25 % is a whole number of micro-dollars).
- **Paid prompts** (any pricing but free) are stored sealed (Fernet) and are
  read only by their author and by tenants that bought them (a one-time or
  subscription purchase; a free listing's installers may read it too). A
  per-use installer never reads the prompt: it pays per run, and its agents
  get the prompt at claim time like any agent.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import jsonschema
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from swarmcommon.errors import FailedPrecondition, InvalidArgument

CENT = 10_000  # micro-dollars
PER_USE_MIN, PER_USE_MAX = CENT, 100 * CENT  # $0.01 .. $1.00
PRICE_MAX = 1_000_000 * CENT  # $10,000
MAX_TAGS = 10
TAG = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_SCHEMA_JSON = 16 * 1024
MAX_CONFIG_JSON = 16 * 1024
# What agent_template_versions.prompt holds for a sealed version: code that
# forgets to unseal shows this, never the prompt nor its ciphertext.
SEALED_PLACEHOLDER = "[sealed marketplace prompt]"

E = TypeVar("E", bound=enum.StrEnum)


class Category(enum.StrEnum):
    SECURITY = "security"
    TESTING = "testing"
    DOCUMENTATION = "documentation"
    REVIEW = "review"
    DOMAIN = "domain"
    DEVOPS = "devops"


class Visibility(enum.StrEnum):
    PRIVATE = "private"
    PUBLIC = "public"
    UNLISTED = "unlisted"


class Pricing(enum.StrEnum):
    FREE = "free"
    ONE_TIME = "one_time"
    PER_USE = "per_use"
    SUBSCRIPTION = "subscription"

    @property
    def is_paid(self) -> bool:
        return self is not Pricing.FREE


class Sort(enum.StrEnum):
    RATING = "rating"
    INSTALLS = "installs"
    RECENT = "recent"


class LedgerKind(enum.StrEnum):
    PURCHASE = "purchase"  # one-time
    SUBSCRIPTION = "subscription"  # a subscription's period
    USE = "use"  # one claim of a per-use version


PLATFORM_PERCENT = {Pricing.ONE_TIME: 20, Pricing.PER_USE: 25, Pricing.SUBSCRIPTION: 15}
LEDGER_KIND = {
    Pricing.ONE_TIME: LedgerKind.PURCHASE,
    Pricing.SUBSCRIPTION: LedgerKind.SUBSCRIPTION,
    Pricing.PER_USE: LedgerKind.USE,
}


def _choice(kind: type[E], field: str, value: str) -> E:
    try:
        return kind(value.strip().lower())
    except ValueError:
        known = ", ".join(k.value for k in kind)
        raise InvalidArgument(field, f"unknown {field} {value!r} (known: {known})") from None


def category(value: str) -> Category:
    return _choice(Category, "category", value)


def visibility(value: str) -> Visibility:
    return _choice(Visibility, "visibility", value or Visibility.PRIVATE.value)


def pricing(value: str) -> Pricing:
    return _choice(Pricing, "pricing_model", value or Pricing.FREE.value)


def sort(value: str) -> Sort:
    return _choice(Sort, "sort", value or Sort.RATING.value)


def check_price(model: Pricing, micros: int) -> int:
    field = "price_usd_micros"
    if model is Pricing.FREE:
        if micros != 0:
            raise InvalidArgument(field, f"a free template costs 0 (got {micros})")
        return 0
    low, high = (PER_USE_MIN, PER_USE_MAX) if model is Pricing.PER_USE else (CENT, PRICE_MAX)
    if not low <= micros <= high:
        raise InvalidArgument(
            field, f"a {model.value} price is {_usd(low)} to {_usd(high)} (got {micros} micro-dollars)"
        )
    if micros % CENT:
        raise InvalidArgument(field, f"must be whole cents, a multiple of {CENT} (got {micros})")
    return micros


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.2f}"


@dataclass(frozen=True)
class Split:
    price: int
    platform: int
    author: int


def split(model: Pricing, price: int) -> Split:
    """The platform's and the author's shares of `price` (micro-dollars)."""
    percent = PLATFORM_PERCENT[model]
    platform = (price * percent + 50) // 100  # half up, to the micro-dollar
    return Split(price, platform, price - platform)


def tags(values: Iterable[str]) -> tuple[str, ...]:
    out = sorted({t.strip().lower() for t in values})
    if len(out) > MAX_TAGS:
        raise InvalidArgument("tags", f"at most {MAX_TAGS} tags (got {len(out)})")
    for t in out:
        if not TAG.match(t):
            raise InvalidArgument("tags", f"{t!r}: 1-32 lowercase letters, digits and dashes")
    return tuple(out)


def config_schema(raw: str) -> dict[str, Any]:
    """The JSON Schema installers' configuration must match ('' accepts any object)."""
    field = "config_schema"
    if len(raw) > MAX_SCHEMA_JSON:
        raise InvalidArgument(field, f"at most {MAX_SCHEMA_JSON} bytes of JSON")
    try:
        schema = json.loads(raw) if raw.strip() else {"type": "object"}
    except json.JSONDecodeError as exc:
        raise InvalidArgument(field, f"not JSON: {exc.msg}") from None
    if not isinstance(schema, dict):
        raise InvalidArgument(field, "must be a JSON object (a JSON Schema)")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(field, f"not a valid JSON Schema: {exc.message}") from None
    if "$ref" in raw and any(ref for ref in _refs(schema) if not str(ref).startswith("#")):
        # No remote references: validating must never fetch anything.
        raise InvalidArgument(field, "only local references ($ref starting with '#') are allowed")
    return schema


def _refs(node: Any) -> Iterable[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def validate_config(schema: dict[str, Any], raw: str) -> dict[str, Any]:
    """An installer's configuration, checked against the listing's schema."""
    field = "config"
    if len(raw) > MAX_CONFIG_JSON:
        raise InvalidArgument(field, f"at most {MAX_CONFIG_JSON} bytes of JSON")
    try:
        config = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidArgument(field, f"not JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise InvalidArgument(field, "must be a JSON object")
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise InvalidArgument(field, f"config at {where}: {first.message}", path=where)
    return config


def may_read_prompt(viewer: str, author: str, model: Pricing, installed: bool, purchased: bool) -> bool:
    """Whether `viewer` may read the listing's prompts (see the module's doc)."""
    if viewer == author:
        return True
    return installed and (purchased or model is Pricing.FREE)


# -- sealing paid prompts -------------------------------------------------------------------


class PromptSealer:
    """Fernet over the configured key(s): the first seals, any opens (rotation)."""

    def __init__(self, keys: Sequence[str]) -> None:
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys if k.strip()]
        except ValueError:
            raise InvalidArgument(
                "marketplace_key", "a Fernet key: 32 url-safe base64-encoded bytes"
            ) from None

    @property
    def can_seal(self) -> bool:
        return bool(self._fernets)

    def require(self) -> None:
        """FAILED_PRECONDITION unless a key is configured to seal with."""
        if not self._fernets:
            raise FailedPrecondition(
                "paid templates need a marketplace key: set SWARM_TICKETING_MARKETPLACE_KEY "
                "(or SWARM_TICKETING_MARKETPLACE_KEY_FILE) on ticketing",
                setting="marketplace_key",
            )

    def seal(self, prompt: str) -> str:
        self.require()
        return self._fernets[0].encrypt(prompt.encode()).decode()

    def open(self, sealed: str) -> str | None:
        if not self._fernets:
            return None
        try:
            return MultiFernet(self._fernets).decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None


class Keyring:
    """Every key this process was started with, for reading sealed prompts
    where no server object reaches (the claim path's version cache). Several
    servers in one process (the tests) each add theirs."""

    def __init__(self) -> None:
        self._sealers: list[PromptSealer] = []

    def add(self, sealer: PromptSealer) -> None:
        if sealer.can_seal:
            self._sealers.append(sealer)

    def open(self, sealed: str) -> str:
        for sealer in self._sealers:
            prompt = sealer.open(sealed)
            if prompt is not None:
                return prompt
        raise FailedPrecondition(
            "a sealed marketplace prompt cannot be opened: ticketing lacks the marketplace key it was "
            "sealed with (SWARM_TICKETING_MARKETPLACE_KEY)"
        )


KEYRING = Keyring()


# -- what the store hands out ---------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    id: str
    slug: str
    template_id: str
    agent_type: str
    author_tenant_id: str
    name: str
    description: str
    category: Category
    tags: tuple[str, ...]
    visibility: Visibility
    pricing: Pricing
    price_usd_micros: int
    config_schema: dict[str, Any]
    version: int
    install_count: int
    rating_sum: int
    rating_count: int
    created_at: datetime
    updated_at: datetime

    @property
    def rating_average(self) -> float:
        return round(self.rating_sum / self.rating_count, 2) if self.rating_count else 0.0


@dataclass(frozen=True)
class Installation:
    id: str
    listing_id: str
    slug: str
    tenant_id: str
    version: int
    config: dict[str, Any]
    purchase_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class Review:
    id: str
    listing_id: str
    tenant_id: str
    rating: int
    title: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class LedgerEntry:
    id: str
    listing_id: str
    buyer_tenant_id: str
    author_tenant_id: str
    kind: LedgerKind
    price_usd_micros: int
    platform_usd_micros: int
    author_usd_micros: int
    version_id: str | None
    ticket_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class Detail:
    """A listing as one tenant sees it: its installation, and the latest
    version's prompt only if it may read it ("" otherwise)."""

    listing: Listing
    installation: Installation | None
    prompt: str
    prompt_visible: bool
    model: str


@dataclass(frozen=True)
class ListingFields:
    """What an author states of a listing, checked (PUT replaces them all)."""

    name: str
    description: str
    category: Category
    tags: tuple[str, ...]
    visibility: Visibility
    pricing: Pricing
    price_usd_micros: int
    config_schema: dict[str, Any]


@dataclass(frozen=True)
class Draft:
    """A version to publish: the template version's content."""

    prompt: str
    model: str
    parameters: dict[str, Any]
    tools: dict[str, Any]
