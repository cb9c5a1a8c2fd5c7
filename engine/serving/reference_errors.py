"""The reference backend's errors: an HTTP status and message, in OpenAI's error shape (as MAX Serve answers)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                409: "conflict_error", 413: "invalid_request_error", 500: "internal_server_error",
                501: "not_implemented_error"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": str(status), "message": message, "param": "", "type": _ERROR_TYPES.get(status, "error")}}


def error_response(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)

