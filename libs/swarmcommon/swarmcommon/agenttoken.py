"""Agent tokens: what a guest holds instead of any platform secret.

vmhost signs each agent a short-lived Ed25519 JWT binding its tenant, agent
id and role, and renews it through Heartbeat. The guest presents it as
`authorization: Bearer <token>` on every call (and as the API key of its
LLM client). Services verify it with vmhost's public key and take tenant
and agent from it, never from the request body.

    signer = TokenSigner.from_file(pki / "agent-signing" / "key.pem", ttl=timedelta(minutes=15))
    token, expires = signer.mint(AgentIdentity("agent-1", "acme", "coder"))
    claims = TokenVerifier.from_files([pki / "agent-signing" / "public.pem"]).verify(token)

Revocation: a terminated agent's tokens stop working before they expire
through the verifier's `revoked` check (see swarmcommon.revocation).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarmcommon.clock import Clock, SystemClock
from swarmcommon.errors import Unauthenticated

ALGORITHM = "EdDSA"
ISSUER = "swarm/vmhost"
AUDIENCE = "swarm/mesh"
SIGNING_KEY_FILE, PUBLIC_KEY_FILE = "key.pem", "public.pem"
DEFAULT_TTL = timedelta(minutes=15)
# Tolerated clock difference between the signer and a verifier.
LEEWAY = timedelta(seconds=30)
# A token longer than this is refused before any parsing.
MAX_TOKEN_CHARS = 4096
# How many checked tokens a verifier remembers (a few per live agent).
CHECKED_TOKENS = 50_000


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    tenant_id: str
    role: str


@dataclass(frozen=True)
class AgentClaims:
    agent: AgentIdentity
    token_id: str
    issued_at: datetime
    expires_at: datetime

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    @property
    def tenant_id(self) -> str:
        return self.agent.tenant_id

    @property
    def role(self) -> str:
        return self.agent.role


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def write_signing_key(directory: Path) -> Path:
    """A new Ed25519 key pair as `key.pem` (owner-only) and `public.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # A new file, then renamed: an existing key file (or a leftover) would keep its own mode.
    tmp = directory / f"{SIGNING_KEY_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, directory / SIGNING_KEY_FILE)
    (directory / PUBLIC_KEY_FILE).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return directory


class TokenSigner:
    def __init__(
        self, key: Ed25519PrivateKey, *, ttl: timedelta = DEFAULT_TTL, clock: Clock | None = None
    ) -> None:
        self._key = key
        self.kid = key_id(key.public_key())
        self.ttl = ttl
        self.clock = clock or SystemClock()

    @classmethod
    def from_file(cls, path: Path | str, **kwargs: object) -> TokenSigner:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key, **kwargs)  # type: ignore[arg-type]

    def mint(self, agent: AgentIdentity) -> tuple[str, datetime]:
        now = self.clock.now().replace(microsecond=0)
        expires = now + self.ttl
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": agent.agent_id,
            "tenant": agent.tenant_id,
            "role": agent.role,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid}), expires


Revoked = Callable[[AgentClaims], bool]


class TokenVerifier:
    """Checks signature, issuer, audience, expiry and revocation; every
    failure is UNAUTHENTICATED with a reason that names it."""

    def __init__(
        self,
        public_keys: Iterable[Ed25519PublicKey],
        *,
        clock: Clock | None = None,
        revoked: Revoked | None = None,
    ) -> None:
        self._keys: Mapping[str, Ed25519PublicKey] = {key_id(k): k for k in public_keys}
        if not self._keys:
            raise ValueError("a token verifier needs at least one public key")
        self.clock = clock or SystemClock()
        self.revoked = revoked
        # Tokens whose signature and claims were checked, by their exact text:
        # an agent presents the same token on every call until it is renewed,
        # and checking an Ed25519 signature each time would cost more than the
        # call. Expiry and revocation are still checked on every call.
        self._checked: OrderedDict[str, AgentClaims] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, paths: Iterable[Path | str], **kwargs: object) -> TokenVerifier:
        keys = []
        for path in paths:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{path} is not an Ed25519 public key")
            keys.append(key)
        return cls(keys, **kwargs)  # type: ignore[arg-type]

    def verify(self, token: str) -> AgentClaims:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("agent token is too long", reason="TOKEN_MALFORMED")
        with self._lock:
            parsed = self._checked.get(token)
            if parsed is not None:
                self._checked.move_to_end(token)
        if parsed is None:
            parsed = self._check_signature(token)
            with self._lock:
                self._checked[token] = parsed
                while len(self._checked) > CHECKED_TOKENS:
                    self._checked.popitem(last=False)
        now = self.clock.now()
        if parsed.issued_at > now + LEEWAY:
            raise Unauthenticated(
                f"agent token is issued in the future ({parsed.issued_at.isoformat()})",
                reason="TOKEN_INVALID",
            )
        if now >= parsed.expires_at + LEEWAY:
            raise Unauthenticated(
                f"agent token expired at {parsed.expires_at.isoformat()}", reason="TOKEN_EXPIRED"
            )
        if self.revoked is not None and self.revoked(parsed):
            raise Unauthenticated(
                f"agent {parsed.agent_id} was terminated; its token is revoked", reason="TOKEN_REVOKED"
            )
        return parsed

    def _check_signature(self, token: str) -> AgentClaims:
        """Signature, issuer, audience and claim shapes (not time or revocation)."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthenticated("agent token is malformed", reason="TOKEN_MALFORMED") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("agent token is signed by an unknown key", reason="TOKEN_UNKNOWN_KEY")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Expiry and issue time are checked below against our clock (tests
                # move it), with LEEWAY: PyJWT would check iat against the system
                # clock with none, refusing fresh tokens of a signer a second ahead.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "jti", "iss", "aud"],
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"agent token rejected: {exc}", reason="TOKEN_INVALID") from None
        return _claims(claims)


def _claims(raw: Mapping[str, object]) -> AgentClaims:
    tenant, role, sub, jti = raw.get("tenant"), raw.get("role"), raw.get("sub"), raw.get("jti")
    iat, exp = raw.get("iat"), raw.get("exp")
    if not all(isinstance(v, str) and v for v in (tenant, role, sub, jti)):
        raise Unauthenticated("agent token lacks tenant, role, subject or id", reason="TOKEN_INVALID")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise Unauthenticated("agent token times are not integers", reason="TOKEN_INVALID")
    return AgentClaims(
        AgentIdentity(str(sub), str(tenant), str(role)),
        str(jti),
        datetime.fromtimestamp(iat, UTC),
        datetime.fromtimestamp(exp, UTC),
    )
