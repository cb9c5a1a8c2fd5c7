"""Request decoding: the one place where a request's bytes become a message, for every RPC.

gRPC decodes a request before any interceptor or servicer code runs, and answers UNKNOWN,
naming the parser's exception, when the bytes are not a message of the method's type. So the
error interceptor (``server/errors.py``) rebuilds every method handler with
:func:`checked_deserializer`, which never raises: it returns the message, or a
:class:`RefusedRequest` holding the ``InvalidArgument`` to answer with. The interceptor raises
that error where the servicer would have received the request (a unary request) or the next
message of a client stream, so it leaves like every other engine error.

What every request of every RPC is checked for here, so that no servicer has to:

- its bytes decode as the method's request type (protobuf also checks strings are UTF-8):
  otherwise ``MALFORMED_REQUEST``;
- no string field anywhere in it (nested messages, repeated fields, map keys and values)
  holds U+0000: otherwise ``INVALID_CHARACTER`` naming the field. PostgreSQL text cannot store
  it, a file path cannot contain it, and no field of this API has a use for it.

The U+0000 check costs nothing when the encoded request holds no zero byte at all, which no
string with U+0000 can avoid (its UTF-8 is a zero byte); otherwise see ``nul_field``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from engine.errors import FieldViolation, InvalidArgument

NUL = "\x00"


@dataclass(frozen=True)
class RefusedRequest:
    """What the deserializer hands on instead of a request it refused."""

    error: InvalidArgument


def checked_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserialize`` (a generated ``Request.FromString``) made total: a message or a RefusedRequest."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return RefusedRequest(_malformed(deserialize, exc))
        if isinstance(message, Message):
            path = nul_field(message, data)
            if path is not None:
                return RefusedRequest(InvalidArgument(
                    "INVALID_CHARACTER", f"{path} holds a NUL character (U+0000), which no field accepts",
                    violations=[FieldViolation(path, "must not contain NUL (U+0000)")],
                ))
        return message

    return decode


def _malformed(deserialize: Callable[[bytes], Any], exc: Exception) -> InvalidArgument:
    message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "the method's request type"
    detail = str(exc).rsplit(": ", 1)[-1][:120]  # protobuf's own words, e.g. "Wire format was corrupt"
    return InvalidArgument(
        "MALFORMED_REQUEST", f"the request is not a valid {name} message ({detail})",
        metadata={"message_type": name},
    )


def check(request: Any) -> Any:
    """The request itself, or raise the error of a refused one."""
    if isinstance(request, RefusedRequest):
        raise request.error
    return request


async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream whose refused messages raise their error when they are reached."""
    async for request in requests:
        if isinstance(request, RefusedRequest):
            raise request.error
        yield request


# ---- the U+0000 check --------------------------------------------------------------------------------
#
# Reading every string field of a message from Python costs about 3 us an event of a feedback batch, some
# 10% of the server's whole work on it (bench messages with dwell times, whose doubles hold zero bytes). So
# the check first lets protobuf (C) keep the strings alone: a request is parsed again as its "string
# shadow", a message type with the same field numbers declaring only the string fields (as bytes) and the
# messages leading to them; everything else becomes unknown fields, which are discarded, and the rest is
# serialised again (about 0.7 us an event, all in C). A zero byte in that can only be a U+0000 in a string
# or the zero length of an empty string or message, so only then are the request's fields searched one by
# one (``_locate``), which also names the field.


def nul_field(message: Message, data: bytes | None = None) -> str | None:
    """The path of the first string field of ``message`` holding U+0000 (e.g. ``events[3].labels['k']``), or None.

    ``data``, the message's encoding, saves encoding it again.
    """
    data = message.SerializeToString() if data is None else data
    if NUL_BYTE not in data:
        return None
    shadow = _shadow_class(message.DESCRIPTOR)
    if shadow is None:
        return None
    try:
        strings = shadow.FromString(data)
        strings.DiscardUnknownFields()
        if NUL_BYTE not in strings.SerializeToString():
            return None
    except DecodeError:  # cannot happen for bytes the real type parsed; search the slow way then
        pass
    return _locate(message, "")


NUL_BYTE = NUL.encode()
_SHADOWS = descriptor_pool.DescriptorPool()


@cache
def _shadow_class(descriptor: Descriptor) -> type[Message] | None:
    """The string shadow of a message type (see above), or None when it holds no string at all."""
    package = "shadow_" + descriptor.full_name.replace(".", "_")
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto3")
    names: dict[str, str] = {}
    if not _add_shadow(descriptor, file, names, _holds_strings(descriptor, frozenset())):
        return None
    _SHADOWS.Add(file)
    return message_factory.GetMessageClass(_SHADOWS.FindMessageTypeByName(f"{package}.{names[descriptor.full_name]}"))


def _holds_strings(descriptor: Descriptor, visiting: frozenset[str]) -> bool:
    if descriptor.full_name in visiting:
        return False  # counted where the cycle began
    inner = visiting | {descriptor.full_name}
    return any(
        field.type == FieldDescriptor.TYPE_STRING
        or (field.type == FieldDescriptor.TYPE_MESSAGE and _holds_strings(_message_type(field), inner))
        for field in descriptor.fields
    )


def _add_shadow(descriptor: Descriptor, file: descriptor_pb2.FileDescriptorProto, names: dict[str, str],
                holds: bool) -> bool:
    """Declare the shadow of ``descriptor`` in ``file`` (once); False if it has nothing to declare."""
    if not holds:
        return False
    if descriptor.full_name in names:
        return True
    name = names[descriptor.full_name] = f"M{len(names)}"
    shadow = file.message_type.add(name=name)
    for field in descriptor.fields:
        label = FieldDescriptor.LABEL_REPEATED if field.is_repeated else FieldDescriptor.LABEL_OPTIONAL
        if field.type == FieldDescriptor.TYPE_STRING:
            shadow.field.add(name=field.name, number=field.number, type=FieldDescriptor.TYPE_BYTES, label=label)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target = _message_type(field)
            if _add_shadow(target, file, names, _holds_strings(target, frozenset())
                           or target.full_name in names):
                shadow.field.add(name=field.name, number=field.number, type=FieldDescriptor.TYPE_MESSAGE,
                                 type_name=f".{file.package}.{names[target.full_name]}", label=label)
    return True


def _message_type(field: FieldDescriptor) -> Descriptor:
    """The type of a message field (the stubs allow None: what ``message_type`` is for any other field)."""
    assert field.message_type is not None
    return field.message_type


def _locate(message: Message, prefix: str) -> str | None:
    """The slow, exact search, run only once a U+0000 is known to be there."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for i, text in enumerate(values):
                if NUL in text:
                    return f"{path}[{i}]" if field.is_repeated else path
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _message_type(field).GetOptions().map_entry:
                for key in value:
                    shown = _shown_key(key)
                    if isinstance(key, str) and NUL in key:
                        return f"{path}[{shown}]"
                    item = value[key]
                    if isinstance(item, str) and NUL in item:
                        return f"{path}[{shown}]"
                    if isinstance(item, Message) and (found := _locate(item, f"{path}[{shown}].")):
                        return found
            elif field.is_repeated:
                for i, item in enumerate(value):
                    if found := _locate(item, f"{path}[{i}]."):
                        return found
            elif found := _locate(value, f"{path}."):
                return found
    return None


def _shown_key(key: Any) -> str:
    text = repr(key) if isinstance(key, str) else str(key)
    return text if len(text) <= 40 else text[:37] + "..."
