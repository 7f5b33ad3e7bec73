"""JSON errors for every route: {"error": {"type", "message"}} with a fitting status, never a stack trace.

Two ways in: the json_errors middleware (the standalone host's app), and the json_handler decorator on each
/comfymq handler, so the routes answer JSON errors also when mounted on ComfyUI's own server, whose
middlewares ComfyMQ does not own.
"""

from __future__ import annotations

import functools
import json
import logging

from aiohttp import web

from .. import native

log = logging.getLogger("comfymq.api")


def error_response(status: int, type_: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status, headers=headers)


class ApiError(Exception):
    """Raised by handlers for a refusal with its own status (404 unknown thing, 409, 413, 503 ...)."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type_


class BadRequest(ApiError):
    """Raised by handlers for input they refuse; becomes a 400."""

    def __init__(self, message: str, type_: str = "invalid_request"):
        super().__init__(400, type_, message)


def body_limit(request: web.Request) -> int:
    """The largest request body this app accepts (the standalone host's max_body, else client_max_size)."""
    try:
        configured = request.app.get("max_body")
    except Exception:  # noqa: BLE001 - an app without the key (ComfyUI's)
        configured = None
    return int(configured or request.client_max_size or 0)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"request body is larger than the limit of {limit} bytes")


def from_exception(e: BaseException) -> web.Response:
    """Maps an exception from a handler (or the native core) to a JSON error response."""
    if isinstance(e, ApiError):
        return error_response(e.status, e.type, str(e))
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


def from_http_exception(request: web.Request, e: web.HTTPException) -> web.Response:
    kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(e.status, "http_error")
    message = e.reason if e.status != 413 else f"request body is larger than the limit of {body_limit(request)} bytes"
    return error_response(e.status, kind, message)


async def _answer_json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Runs handler(request); HTTP errors (>= 400) and exceptions become JSON error responses."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return from_http_exception(request, e)
    except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
        return from_exception(e)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turns aiohttp's own HTTP errors (404 route, 405, 413 body too large) and handler exceptions into
    JSON errors."""
    return await _answer_json_errors(request, handler)


def json_handler(handler):
    """Decorates a route handler so every error it raises becomes a JSON error response (inside ComfyUI,
    where our middleware is not installed)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request):
        return await _answer_json_errors(request, handler)

    return wrapped


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The request body, refused with a 413 before it is read whole when it exceeds the limit: at once when
    Content-Length says so, else (chunked) as soon as more than the limit has arrived."""
    app_limit = body_limit(request)
    limit = app_limit if limit is None else (min(limit, app_limit) if app_limit else limit)
    if limit and request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    if not request.body_exists:
        return b""
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        body.extend(chunk)
        if limit and len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def parse_json_object(raw: bytes) -> dict:
    """raw as a JSON object, or a BadRequest that says what is wrong."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except Exception as e:  # json.JSONDecodeError, UnicodeDecodeError, RecursionError
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


async def read_json_object(request: web.Request, limit: int | None = None) -> dict:
    """The request body as a JSON object, or a BadRequest that says what is wrong (413 when too large)."""
    return parse_json_object(await read_body(request, limit))


async def read_optional_json_object(request: web.Request, limit: int = 64 << 10) -> dict:
    """Like read_json_object, but an empty body is {} (for actions whose options are all optional)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    return parse_json_object(raw)
