"""Assertions on gRPC statuses and their google.rpc details."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

T = TypeVar("T")


@contextmanager
def raises_status(code: grpc.StatusCode, *fragments: str) -> Iterator[list[grpc.RpcError]]:
    """Expect an RpcError with `code` whose message contains every fragment."""
    caught: list[grpc.RpcError] = []
    with pytest.raises(grpc.RpcError) as info:
        yield caught
    err = info.value
    caught.append(err)
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    for fragment in fragments:
        assert fragment in err.details(), f"{fragment!r} not in {err.details()!r}"


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def rpc_details(err: grpc.RpcError) -> dict[str, object]:
    """The google.rpc details of a rejection, by type name."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in trailers"
    found: dict[str, object] = {}
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo):
        for any_ in status.details:
            msg = kind()
            if any_.Unpack(msg):
                found[kind.DESCRIPTOR.name] = msg
    return found


def attempt(fn: Callable[[], T]) -> T | grpc.RpcError:
    """The call's answer, or its RpcError, so concurrent outcomes can be counted."""
    try:
        return fn()
    except grpc.RpcError as err:
        return err


def refusals(results: list[T | grpc.RpcError]) -> tuple[list[T], list[grpc.RpcError]]:
    ok = [r for r in results if not isinstance(r, grpc.RpcError)]
    return ok, [r for r in results if isinstance(r, grpc.RpcError)]
