"""Input files for jobs: uploaded to the host's input store (inputs/store.py), referred to in graphs by SHA-256.

  POST      /comfymq/inputs            the file as multipart/form-data (field `image`, as ComfyUI's /upload/image,
                                       or `file`; its fields `subfolder`, `type`, `overwrite` are ignored) or as
                                       the raw body (any Content-Type); ?name=photo.png names it (else the
                                       multipart filename, else input-<sha256[:12]>). Answer 200
                                       {"sha256", "size", "name", "existed"}
  GET|HEAD  /comfymq/inputs/{sha256}   {"sha256", "size"}, or 404

A job then refers to the file as {"comfymq_input": "<sha256>", "name": "photo.png"} in a node input (graph.py).

The body goes to disk as it arrives (a megabyte at a time, on the service's pool), its SHA-256 computed on the way;
it is never held whole. Bounds: the file at most max_input_bytes (a Content-Length that says more is a 413
before anything is read; a body that grows past it, a 413 as soon as it does), not max_body_bytes nor the app's
client_max_size (aiohttp applies that to read() and post() only, never to request.content or a multipart part's
read_chunk(), which this reads). Time: no byte for http_read_timeout seconds is a 408, and so is a body that
takes longer than http_body_timeout plus one second per MiB it sent (a slow-loris gets nowhere, a large file on
a slow link gets its time). Every refusal, and a body cut short, leaves nothing behind: the temp file is removed;
refusals after the body was opened close the connection.

The upload route takes any Content-Type (guards.upload_route: a file is not JSON); the other site rules and the
token apply as on every route.
"""

from __future__ import annotations

import asyncio
import errno

from aiohttp import BodyPartReader, web

from ..inputs.names import check_upload_name, fallback_name, sniff_extension
from ..inputs.store import InputTooLarge, check_sha256
from . import auth
from .errors import ApiError, BadRequest
from .guards import protect, upload_route
from .limits import RequestLimits
from .site_policy import SitePolicy

MIB = 1 << 20
WRITE_BLOCK = MIB  # bytes gathered before each write on the pool
READ_CHUNK = 1 << 16  # bytes asked of a multipart part at a time
FORM_OVERHEAD = 64 << 10  # bytes a multipart body may hold besides its file (boundaries, part headers, fields)
FIELD_BYTES = 4096  # the most of one ignored text field
MAX_PARTS = 16
FILE_FIELDS = ("image", "file")
IGNORED_FIELDS = ("subfolder", "type", "overwrite")
UPLOAD_PARAMS = ("name",)
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _refuse(message: str, type_: str = "invalid_request", status: int = 400) -> ApiError:
    """A refusal once the body was opened: the rest of it is never read, so the connection is closed."""
    return ApiError(status, type_, message, close=True)


def _too_large(limit: int) -> ApiError:
    return _refuse(
        f"the file is larger than the limit of {limit} bytes (max_input_bytes)", type_="too_large", status=413
    )


class TimedBody:
    """Reads a request body within the time bounds of the module doc."""

    def __init__(self, limits: RequestLimits):
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.received = 0

    async def read(self, read):
        """await read(), bounded in time; bytes read count towards the allowance."""
        deadline = self.start + self.limits.http_body_timeout + self.received / MIB
        wait = min(self.limits.http_read_timeout, deadline - self.loop.time())
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            got = await asyncio.wait_for(read(), wait)
        except asyncio.TimeoutError:
            stalled = deadline - self.loop.time() > 0
            raise _refuse(
                f"the upload stalled: no data for {self.limits.http_read_timeout:g} s (http_read_timeout)"
                if stalled
                else f"the upload took longer than {self.limits.http_body_timeout:g} s (http_body_timeout) plus one "
                "second per MiB sent",
                type_="timeout",
                status=408,
            ) from None
        except (web.RequestPayloadError, ConnectionError, ValueError) as e:  # ValueError: a malformed multipart
            raise _refuse(f"the request body is malformed or cut short: {e}", type_="bad_body") from None
        if isinstance(got, (bytes, bytearray)):
            self.received += len(got)
        return got


def _one_param(request: web.Request, name: str) -> str | None:
    for key in request.query:
        if key not in UPLOAD_PARAMS:
            raise _refuse(f"unknown query parameter '{key[:64]}' (allowed: {', '.join(UPLOAD_PARAMS)})")
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _refuse(f"query parameter '{name}' is given more than once")
    return values[0] if values else None


def _checked_name(name: str, source: str) -> str:
    try:
        return check_upload_name(name)
    except ValueError as e:
        raise _refuse(f"{source}: {e}") from None


def add_input_routes(
    routes: web.RouteTableDef,
    service,
    *,
    prefix: str,
    token: str | None,
    site: SitePolicy | None,
    limits: RequestLimits,
) -> None:
    """Registers the routes of the module doc at prefix + /inputs, answering from service.inputs (an InputStore)
    on service.call's pool, with the checks of guards.protect."""
    store = service.inputs
    limit = limits.max_input_bytes

    async def stream_to_store(body: TimedBody, read) -> tuple:
        """Writes the chunks read() gives, until b"", into a new input; (its PendingInput, not committed yet, and
        its first bytes). The temp file is removed on any error."""
        pending = await service.call(store.begin, limit)
        try:
            size, head, buf = 0, b"", bytearray()
            while True:
                chunk = await body.read(read)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if len(head) < 16:
                    head += bytes(chunk[: 16 - len(head)])
                buf += chunk
                if len(buf) >= WRITE_BLOCK:
                    await service.call(pending.write, buf)
                    buf = bytearray()
            if size == 0:
                raise _refuse("the file is empty: send its bytes (the raw body, or a multipart field image or file)")
            if buf:
                await service.call(pending.write, buf)
            return pending, head
        except BaseException:
            pending.abort()
            raise

    async def read_form(request: web.Request, body: TimedBody):
        """(PendingInput, first bytes, filename) of the one file of a multipart/form-data body."""
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError) as e:
            raise _refuse(f"the multipart body cannot be read: {e}", type_="bad_body") from None
        found = None
        parts = 0
        try:
            while True:
                part = await body.read(reader.next)
                if part is None:
                    break
                parts += 1
                if parts > MAX_PARTS:
                    raise _refuse(f"the form has more than {MAX_PARTS} fields")
                if not isinstance(part, BodyPartReader):
                    raise _refuse("the form holds a nested multipart body: send one file in a field image or file")
                field = part.name
                if field in FILE_FIELDS:
                    if found is not None:
                        raise _refuse("the form holds more than one file: send one file per request")
                    encoding = (part.headers.get("Content-Transfer-Encoding") or "binary").strip().lower()
                    if encoding not in ("binary", "8bit", "7bit"):
                        raise _refuse(f"the file's Content-Transfer-Encoding '{encoding[:32]}' is not supported")
                    filename = part.filename
                    if filename is not None:
                        try:
                            filename = check_upload_name(filename)
                        except ValueError as e:
                            raise _refuse(f"the form's filename: {e}") from None
                    pending, head = await stream_to_store(body, lambda p=part: p.read_chunk(READ_CHUNK))
                    found = (pending, head, filename)
                elif field in IGNORED_FIELDS:
                    seen = 0
                    while chunk := await body.read(lambda p=part: p.read_chunk(READ_CHUNK)):
                        seen += len(chunk)
                        if seen > FIELD_BYTES:
                            raise _refuse(f"the form field '{field}' is longer than {FIELD_BYTES} bytes")
                else:
                    shown = "(no name)" if field is None else f"'{field[:64]}'"
                    raise _refuse(
                        f"unknown form field {shown} (allowed: the file as {' or '.join(FILE_FIELDS)}; "
                        f"{', '.join(IGNORED_FIELDS)} are ignored)"
                    )
        except BaseException:
            if found is not None:
                found[0].abort()
            raise
        if found is None:
            raise _refuse(f"the form holds no file: send it in a field named {' or '.join(FILE_FIELDS)}")
        return found

    async def upload(request: web.Request) -> web.Response:
        name = _one_param(request, "name")
        if name is not None:
            name = _checked_name(name, "?name=")
        form = request.content_type == "multipart/form-data"
        if request.content_type.startswith("multipart/") and not form:
            raise _refuse(f"a {request.content_type[:64]} body is not taken: send multipart/form-data or the raw file")
        declared = request.content_length
        if declared is not None and declared > limit + (FORM_OVERHEAD if form else 0):
            raise _too_large(limit)
        body = TimedBody(limits)
        if form:
            pending, head, filename = await read_form(request, body)
            name = name or filename
        else:
            if not request.body_exists:
                raise BadRequest("the body is empty: send the file's bytes (or a multipart/form-data form)")
            pending, head = await stream_to_store(body, request.content.readany)
            if declared is not None and "Content-Encoding" not in request.headers and body.received != declared:
                pending.abort()  # (aiohttp reports a short body as an error already: this is a second guard)
                raise _refuse("the body is cut short: fewer bytes came than Content-Length said", "bad_body")
        try:
            stored = await service.call(pending.commit)
        finally:
            pending.abort()  # nothing after a commit; else the temp file goes
        return web.json_response(
            {
                "sha256": stored.sha256,
                "size": stored.size,
                "name": name or fallback_name(stored.sha256, sniff_extension(head)),
                "existed": stored.existed,
            }
        )

    async def guarded_upload(request: web.Request) -> web.Response:
        try:
            return await upload(request)
        except InputTooLarge:
            raise _too_large(limit) from None
        except OSError as e:
            if e.errno in DISK_FULL:
                raise ApiError(
                    507, "disk_full", f"the disk is full: the file was not stored ({e.strerror})", close=True
                ) from None
            raise

    async def stat_input(request: web.Request) -> web.Response:
        sha = request.match_info["sha256"]
        try:
            check_sha256(sha)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        # Asking for an input marks it used: a client (or a worker-role ComfyUI) that found it here and skips the
        # upload names it in a job soon, and the retention sweep must not take it meanwhile.
        size = await service.call(store.touch, sha)
        if size is None:
            raise ApiError(404, "not_found", f"no stored input {sha}")
        return web.json_response({"sha256": sha, "size": size})

    routes.post(prefix + "/inputs")(
        protect(upload_route(auth.requires("submit")(guarded_upload)), site=site, token=token)
    )
    routes.get(prefix + "/inputs/{sha256}")(protect(stat_input, site=site, token=token))
