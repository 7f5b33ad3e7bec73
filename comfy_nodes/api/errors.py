"""JSON errors for every route: {"error": {"type", "message"}} with a fitting status, never a stack trace."""

from __future__ import annotations

import logging

from aiohttp import web

from .. import native

log = logging.getLogger("comfymq.api")


def error_response(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status)


class BadRequest(Exception):
    """Raised by handlers for input they refuse; becomes a 400."""

    def __init__(self, message: str, type_: str = "invalid_request"):
        super().__init__(message)
        self.type = type_


def from_exception(e: BaseException) -> web.Response:
    """Maps an exception from a handler (or the native core) to a JSON error response."""
    if isinstance(e, BadRequest):
        return error_response(400, e.type, str(e))
    if isinstance(e, ValueError):
        return error_response(400, "invalid_request", str(e))
    if isinstance(e, KeyError):
        msg = e.args[0] if e.args else "not found"
        return error_response(404, "not_found", str(msg))
    try:
        n = native.load()
    except native.NativeUnavailable as ne:
        return error_response(503, "native_unavailable", str(ne))
    if isinstance(e, n.ConflictError):
        return error_response(409, "conflict", str(e))
    if isinstance(e, n.LeaseLostError):
        return error_response(409, "lease_lost", str(e))
    if isinstance(e, n.DiskFullError):
        return error_response(507, "disk_full", str(e))
    if isinstance(e, n.ComfyMQError):
        log.error("store error: %s", e)
        return error_response(503, "store_unavailable", str(e))
    log.exception("unexpected error in a ComfyMQ route", exc_info=e)
    return error_response(500, "internal_error", "internal error; see the host's log")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turns aiohttp's own HTTP errors (404 route, 405, 413 body too large) and handler exceptions into
    JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(e.status, "http_error")
        return error_response(e.status, kind, e.reason if e.status != 413 else
                              f"request body is larger than the limit of {request.app.get('max_body', 0)} bytes")
    except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
        return from_exception(e)


async def read_json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or a BadRequest that says what is wrong."""
    try:
        body = await request.json()
    except web.HTTPException:
        raise
    except Exception as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body
