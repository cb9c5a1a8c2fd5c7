"""What the server's interceptors share: rebuilding a method handler around a wrapped behaviour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# wrap(behaviour, response_streaming) -> the behaviour to serve instead
Wrap = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def rebuild_handler(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Wrap, *, request_deserializer: Callable[[bytes], Any] | None = None
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same RPC (serializers, arity) with its behaviour passed through ``wrap`` (and, if given, another
    request deserializer)."""
    common = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **common)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **common)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **common)
    assert handler.stream_stream is not None  # a method handler has exactly one behaviour
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **common)
