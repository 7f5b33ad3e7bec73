"""JSON errors for every route: {"error": {"type", "code", "message"}} (code = type) with a fitting status, never a
stack trace.

Two ways in: the json_errors middleware (the standalone host's app), and the json_handler decorator on each
/comfymq handler, so the routes answer JSON errors also when mounted on ComfyUI's own server, whose
middlewares ComfyMQ does not own. Errors of the HTTP layer itself (a bad request line, too many headers) never
reach a handler: the standalone host answers those in host/http_server.py.

Bodies are read here too (read_body): bounded in size and in time (api/limits.py), refused as they arrive.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re

from aiohttp import web

from .. import native
from .limits import RequestLimits

log = logging.getLogger("comfymq.api")


def error_response(
    status: int,
    type_: str,
    message: str,
    headers: dict | None = None,
    *,
    close: bool = False,
    extra: dict | None = None,
) -> web.Response:
    """The JSON error answer; close=True also closes the connection after it (a body left unread). extra: more
    fields of the error object (e.g. "waiting" for an unrunnable job), never replacing type or message. `code` is
    `type` again, under the name the Comfy API v2 envelope gives it (api/v2), so one answer fits both readers."""
    error = {**(extra or {}), "type": type_, "code": type_, "message": message}
    resp = web.json_response({"error": error}, status=status, headers=headers)
    if close:
        resp.force_close()
    return resp


class ApiError(Exception):
    """Raised by handlers for a refusal with its own status (404 unknown thing, 409, 413, 503 ...).
    close=True: the request's body was not read to its end, so the connection is closed after the answer."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        close: bool = False,
        extra: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.close = close
        self.extra = extra
        self.headers = headers  # sent with the answer (e.g. Retry-After)


class BadRequest(ApiError):
    """Raised by handlers for input they refuse; becomes a 400."""

    def __init__(self, message: str, type_: str = "invalid_request"):
        super().__init__(400, type_, message)


def body_limit(request: web.Request, limits: RequestLimits | None = None) -> int:
    """The largest request body accepted: max_body_bytes, and no more than the app's client_max_size (ComfyUI's
    --max-upload-size inside ComfyUI)."""
    limit = (limits or RequestLimits()).max_body_bytes
    return min(limit, request.client_max_size) if request.client_max_size else limit


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "too_large", f"request body is larger than the limit of {limit} bytes (max_body_bytes)", close=True
    )


def from_exception(e: BaseException) -> web.Response:
    """Maps an exception from a handler (or the native core) to a JSON error response."""
    if isinstance(e, ApiError):
        return error_response(e.status, e.type, str(e), e.headers, close=e.close, extra=e.extra)
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
    if e.status == 413:
        return error_response(e.status, kind, message, close=True)
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


async def read_body(request: web.Request, limits: RequestLimits | None = None, limit: int | None = None) -> bytes:
    """The request body. Refused with a 413 before it is read whole when it exceeds the limit (the smaller of
    body_limit() and `limit`): at once when Content-Length says so, else (chunked) as soon as more has arrived;
    with a 408 when the client sends no byte for http_read_timeout seconds or the whole body takes longer than
    http_body_timeout; with a 400 when its framing is broken (bad chunked encoding, cut short). After a 408 or
    413 the connection is closed: the rest of the body is never read."""
    limits = limits or RequestLimits()
    cap = body_limit(request, limits)
    if limit is not None:
        cap = min(cap, limit)
    if request.content_length is not None and request.content_length > cap:
        raise too_large(cap)
    if not request.body_exists:
        return b""
    body = bytearray()
    content = request.content
    if content.is_eof():  # the whole body has arrived (a small request's usually has): taken without a timer
        try:
            body += content.read_nowait()
        except web.RequestPayloadError as e:
            raise ApiError(400, "bad_body", f"the request body is malformed: {e}", close=True) from None
        if len(body) > cap:
            raise too_large(cap)
        if content.at_eof():
            return bytes(body)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.http_body_timeout
    while True:
        wait = min(limits.http_read_timeout, deadline - loop.time())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(request.content.readany(), wait)
        except asyncio.TimeoutError:
            whole = deadline - loop.time() <= 0
            raise ApiError(
                408,
                "timeout",
                f"the request body took longer than {limits.http_body_timeout:g} s (http_body_timeout)"
                if whole
                else f"the request body stalled: no data for {limits.http_read_timeout:g} s (http_read_timeout)",
                close=True,
            ) from None
        except web.RequestPayloadError as e:
            raise ApiError(400, "bad_body", f"the request body is malformed: {e}", close=True) from None
        if not chunk:
            break
        body.extend(chunk)
        if len(body) > cap:
            raise too_large(cap)
    return bytes(body)


def _depth_limit() -> str:
    """The store's nesting limit for JSON values (the native module's MAX_JSON_DEPTH), as text."""
    try:
        return str(native.load().MAX_JSON_DEPTH)
    except Exception:  # noqa: BLE001 - a module without it: say so plainly
        return "the allowed number of"


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are not JSON)")


def parse_json_object(raw: bytes) -> dict:
    """raw as a JSON object, or a BadRequest that says what is wrong. A string holding a lone surrogate
    (an escape such as \\ud800 without its pair) is not Unicode text: refused here, so no handler passes one on
    to the store (whose strings are UTF-8). NaN, Infinity and -Infinity (which Python's reader takes) are
    refused too: nothing that is not JSON gets stored, or answered back."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        if _SURROGATE_ESCAPE.search(raw):  # rare: check the strings only when the text has such an escape
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            "request body is not valid JSON text: it holds a lone surrogate escape (\\ud800 to "
            "\\udfff without its pair), which is not a Unicode character"
        ) from None
    except RecursionError:  # deeper than Python's own reader goes, so far deeper than the store's limit
        raise BadRequest(
            f"request body nests deeper than {_depth_limit()} levels of objects and arrays (the limit)"
        ) from None
    except Exception as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


async def read_json_object(request: web.Request, limits: RequestLimits | None = None) -> dict:
    """The request body as a JSON object, or a BadRequest that says what is wrong (413 when too large)."""
    return parse_json_object(await read_body(request, limits))


async def read_optional_json_object(
    request: web.Request, limits: RequestLimits | None = None, limit: int = 64 << 10
) -> dict:
    """Like read_json_object, but an empty body is {} (for actions whose options are all optional)."""
    raw = await read_body(request, limits, limit)
    if not raw.strip():
        return {}
    return parse_json_object(raw)
