"""Resource names (``<collection>/<id>``, e.g. ``trainingJobs/3f2a...``, ``fisherSnapshots/9c1d...``), page
tokens, and whether a host name is loopback."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from engine import json_input
from engine.errors import FieldViolation, InvalidArgument


def resource_id(name: str, collection: str, field_path: str = "name") -> str:
    """The id in ``name``, which must be ``<collection>/<alphanumeric id>``; INVALID_ARGUMENT otherwise."""
    prefix = f"{collection}/"
    found = name[len(prefix):] if name.startswith(prefix) else ""
    if not found or not found.isalnum():
        raise InvalidArgument(
            "MALFORMED_NAME", f"{field_path} {name!r} is not a resource name like {collection}/<id>",
            violations=[FieldViolation(field_path, f"must look like {collection}/<id>")],
        )
    return found


# Ids a client chooses (a pipeline's, an online session's): lowercase letters, digits and '-', 1..40, no '-' at
# either end.
CHOSEN_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def chosen_id(name: str, collection: str, id_name: str, field_path: str = "name") -> str:
    """The id in ``name``, which must be ``<collection>/<id>`` with an id a client chose (:data:`CHOSEN_ID_RE`);
    INVALID_ARGUMENT otherwise."""
    found = name.removeprefix(f"{collection}/") if name.startswith(f"{collection}/") else ""
    if not CHOSEN_ID_RE.match(found):
        raise InvalidArgument("MALFORMED_NAME", f"{field_path} {name!r} is not a resource name like "
                                                f"{collection}/<id>",
                              violations=[FieldViolation(field_path, f"must be {collection}/{{{id_name}}}")])
    return found


def check_chosen_id(value: str, collection: str, field_path: str) -> str:
    """``value`` when it is an id a client may choose for ``collection`` (:data:`CHOSEN_ID_RE`, the bare id of a
    create request's ``<kind>_id`` field); INVALID_ARGUMENT quoting it as sent, naming its collection's prefix when
    that is what it holds too."""
    if CHOSEN_ID_RE.match(value):
        return value
    shape = "lowercase letters, digits and '-' (not at either end), 1 to 40 of them"
    prefixed = value.startswith(f"{collection}/")
    hint = f"the id alone, without '{collection}/'" if prefixed else shape
    raise InvalidArgument("MALFORMED_NAME", f"{field_path} {value!r} is not an id: {hint}",
                          violations=[FieldViolation(field_path, f"the id alone ({shape}), e.g. weekly-retrain"
                                                     if prefixed else shape)])


@dataclass(frozen=True)
class PageScope:
    """What a page token pages: one listing (``listing``, e.g. its collection) with the values of its filters.

    A token carries its scope's digest and is accepted only by that listing with those filters: its cursor (a time
    and an id) means nothing to another list, and under another filter it would silently skip items, where a token
    this server did not issue for the call is INVALID_ARGUMENT (error_reason.proto, INVALID_PAGE_TOKEN)."""

    listing: str
    filters: tuple[object, ...] = ()

    @property
    def digest(self) -> str:
        """A short, stable digest of the scope (JSON-able filters; a set of values passed sorted is order-free):
        it keeps a token opaque and short whatever the filters hold."""
        raw = json.dumps([self.listing, *self.filters], sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def encode_page_token(scope: PageScope, create_time: datetime, item_id: str) -> str:
    """An opaque cursor after the item created at ``create_time`` with id ``item_id`` (lists newest first), good
    only for the listing ``scope`` names."""
    raw = json.dumps([scope.digest, create_time.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str, scope: PageScope) -> tuple[datetime, str]:
    """The (create_time, id) cursor of a token :func:`encode_page_token` issued for ``scope``; INVALID_ARGUMENT
    otherwise: a token of another listing or filter, or one issued before tokens carried a scope (the client
    starts its listing again)."""
    try:
        digest, created, item_id = json_input.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise invalid_page_token() from exc
    if digest != scope.digest:  # issued here, for another listing or other filters
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token was issued for another listing or other filters: "
                              "send it with the filters of the request that returned it, or start again without it",
                              violations=[FieldViolation("page_token", "issued for another listing or other filters")])
    try:
        return cursor_time(created), cursor_text(item_id)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid_page_token() from exc


def invalid_page_token() -> InvalidArgument:
    """The error of a page token this server did not issue (or cannot read)."""
    return InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this server issued",
                           violations=[FieldViolation("page_token", "use next_page_token from a previous response")])


def cursor_time(value: object) -> datetime:
    """A page token's time, one PostgreSQL can hold; ValueError or OverflowError otherwise (a token is base64 JSON
    anyone can build: a time before year 1 or after 9999 in UTC would fail in the query, not as bad input)."""
    when = datetime.fromisoformat(str(value))
    if when.tzinfo is not None:
        when.astimezone(UTC)
    return when


def cursor_text(value: object) -> str:
    """A page token's text, one PostgreSQL can hold (no NUL); ValueError otherwise."""
    text = str(value)
    if "\x00" in text:
        raise ValueError("a NUL in a page token")
    return text


def cursor_int(value: object) -> int:
    """A page token's number, one PostgreSQL's integer can hold; ValueError otherwise."""
    number = int(str(value))
    if not 0 <= number < 2**31:
        raise ValueError(f"{number} is out of range")
    return number


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to listen on) is loopback only: a door there needs no token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# An adapter version: vMAJOR.MINOR, or vMAJOR.MINOR.PATCH for a patch (an online session's publication); patch 0 is
# never spelled
VERSION_RE = re.compile(
    r"^v(?P<major>[1-9][0-9]{0,5})\.(?P<minor>0|[1-9][0-9]{0,5})(?:\.(?P<patch>[1-9][0-9]{0,5}))?$"
)


def version_of(base_model: str, name: str) -> str:
    """The version in a version's serving name for ``base_model`` (``<base>@v1.2``, engine.lora.state.lora_name),
    else ``""`` (also for the other names of that base model that are not versions, such as an online session's
    live adapters)."""
    prefix = f"{base_model}@"
    suffix = name[len(prefix):] if name.startswith(prefix) else ""
    return suffix if VERSION_RE.match(suffix) else ""
