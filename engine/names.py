"""Resource names: ``<collection>/<id>`` (e.g. ``trainingJobs/3f2a...``, ``fisherSnapshots/9c1d...``)."""

from __future__ import annotations

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
