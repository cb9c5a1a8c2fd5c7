"""How to reach a server: target, bearer token, TLS (and mTLS) material, channel options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"

# Reconnect quickly after a dropped connection; gRPC's default starts at 1 s and grows to 120 s.
_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes. ``root_certificates`` None uses the system roots; cert+key enable mTLS."""

    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        # gRPC core aborts the whole process (SIGABRT) when given one without the other.
        if bool(self.client_certificate) != bool(self.client_key):
            pair = ("client_certificate", "client_key")
            given, missing = pair if self.client_certificate else pair[::-1]
            raise ValueError(f"mTLS needs a client certificate and its key: {given} without {missing}")

    @classmethod
    def from_files(
        cls,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        server_name_override: str | None = None,
    ) -> TlsConfig:
        return cls(
            root_certificates=ca.read_bytes() if ca else None,
            client_certificate=cert.read_bytes() if cert else None,
            client_key=key.read_bytes() if key else None,
            server_name_override=server_name_override,
        )


def bearer_token(token: str | None) -> str | None:
    """``token`` as the authorization header carries it: without surrounding whitespace (a token read from a file
    ends with a newline), None when nothing is left. One holding a character a gRPC header value cannot carry (a
    control character, anything but printable ASCII) raises ValueError, which names the character, never the
    token: gRPC would fail every call with an internal error."""
    return header_value(token, "the token", "a bearer token")


def header_value(value: str | None, the: str, what: str) -> str | None:
    """``value`` stripped, None when nothing is left; ValueError (naming the character, not the value) for one a
    gRPC header value cannot carry, anything but printable ASCII."""
    if value is None:
        return None
    value = value.strip()
    for position, char in enumerate(value):
        if not " " <= char <= "~":
            raise ValueError(f"{the} holds U+{ord(char):04X} at position {position}: {what} is printable ASCII (a "
                             "header value cannot carry it)")
    return value or None


def actor_name(actor: str | None) -> str | None:
    """``actor`` as the ``x-actor`` header carries it (:func:`header_value`). The server records it as who asked for
    a serving operation (activate, rollback, canaries, splits) when it has no authenticated principal; with auth on,
    the principal is recorded instead."""
    return header_value(actor, "the actor", "an actor name")


@dataclass(frozen=True)
class Connection:
    """``token`` and ``actor`` are checked and stripped as :func:`bearer_token` and :func:`actor_name` say
    (ValueError for one no header can carry)."""

    target: str = DEFAULT_TARGET
    token: str | None = None
    tls: TlsConfig | None = None
    options: Sequence[tuple[str, Any]] = field(default_factory=tuple)
    actor: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", bearer_token(self.token))
        object.__setattr__(self, "actor", actor_name(self.actor))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((("authorization", f"Bearer {self.token}"),) if self.token else ()) + (
            (("x-actor", self.actor),) if self.actor else ())

    def open(self) -> grpc.aio.Channel:
        options = list(_DEFAULT_OPTIONS) + list(self.options)
        if self.tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        if self.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name_override))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.root_certificates,
            private_key=self.tls.client_key,
            certificate_chain=self.tls.client_certificate,
        )
        return grpc.aio.secure_channel(self.target, credentials, options=options)
