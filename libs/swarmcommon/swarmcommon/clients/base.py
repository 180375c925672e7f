"""What every typed client shares: its channel, its stub, health, close."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from swarmcommon.clients.channel import DEFAULT_TIMEOUT, MetadataSource, ServiceChannel
from swarmcommon.tls import ClientTls


class ServiceClient:
    # The generated stub class of the service (e.g. QuotaServiceStub).
    stub_class: ClassVar[Any]

    def __init__(
        self,
        target: str,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        metadata: MetadataSource | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.channel = ServiceChannel(target, default_timeout=default_timeout, metadata=metadata, tls=tls)
        self.stub = self.stub_class(self.channel.unary)

    @property
    def target(self) -> str:
        return self.channel.target

    def health(self, timeout: float = 2.0) -> str:
        """SERVING, NOT_SERVING, or the status code that kept the peer from answering."""
        return self.channel.health(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
