"""The standalone host's HTTP server: aiohttp's, with connection timeouts and errors of the HTTP layer as JSON.

    runner = await start(app, "127.0.0.1", 8190, ServerSettings())   # listening; runner.addresses says where
    await runner.cleanup()
    serve(app, host, port, settings)                                  # the same until SIGINT/SIGTERM (run_host)

Time bounds of a connection (request bodies are bounded in api/errors.py read_body):
  keepalive_timeout  an open connection with no request in progress is closed after this many seconds: an idle
                     keep-alive connection, and equally one whose request line and headers have not all arrived
                     (aiohttp starts the same timer when a connection opens and after each answer, and closes the
                     connection when it fires while no request is complete: a slow-loris on the headers)
  lingering_time     after answering a request whose body was not read (a refusal that left it), aiohttp reads
                     and drops what still comes for at most this long, then closes

Errors of the HTTP layer (a bad request line, an over-long URL or header, too many headers, broken framing) never
reach the app: aiohttp answers them from RequestHandler.handle_error, in plain text. JsonErrorRequestHandler
answers them as {"error": {"type", "message"}} like every route, and closes the connection as aiohttp does. The
one extension point: web.Server builds its RequestHandler in __call__, so a Server subclass builds ours, and
HostRunner makes the app's Server one of those.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from ..api.errors import error_response

log = logging.getLogger("comfymq.host")

_KINDS = {
    400: "bad_request",
    413: "too_large",
    414: "too_large",
    431: "too_large",
    500: "internal_error",
    504: "timeout",
}


@dataclass(frozen=True)
class ServerSettings:
    keepalive_timeout: float = 15.0  # seconds; see the module doc
    lingering_time: float = 2.0  # seconds
    max_line_size: int = 8190  # bytes of the request line (the URL) and of one header line
    max_field_size: int = 8190  # bytes of one header value
    max_headers: int = 128  # header lines per request
    shutdown_timeout: float = 10.0  # seconds requests in progress may take to finish at shutdown

    def __post_init__(self):
        for name in ("keepalive_timeout", "lingering_time", "shutdown_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
                raise ValueError(f"{name} must be more than 0 and at most 86400 seconds, got {value!r}")

    def handler_args(self) -> dict:
        return {
            "keepalive_timeout": self.keepalive_timeout,
            "lingering_time": self.lingering_time,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering its own errors as JSON."""

    __slots__ = ()

    def log_exception(self, *args, **kw) -> None:
        # A body whose framing or encoding breaks (bad chunks, bad gzip) fails again when aiohttp drains what is
        # left of it after the answer (its "lingering"), and aiohttp logs that as an unhandled exception with a
        # traceback. It is the client's fault and already answered (a 400): a debug line, not an error.
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            log.debug("dropped the rest of a malformed request body: %s", exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:  # the client's fault: not worth a traceback in the host's log
            log.debug("bad HTTP request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:  # an answer is already on its way: the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if status >= 500:
            text = "internal error; see the host's log" if status == 500 else "the request timed out"
        else:
            text = "the HTTP request is malformed or too large: " + (message or str(exc) or "bad request")
        resp = error_response(status, _KINDS.get(status, "http_error"), text[:512])
        resp.force_close()
        return resp


class JsonErrorServer(web.Server):
    """web.Server whose connections are JsonErrorRequestHandler."""

    __slots__ = ()  # the same layout as web.Server, so HostRunner can re-class the app's Server

    def __call__(self) -> web.RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class HostRunner(web.AppRunner):
    """web.AppRunner serving the app through a JsonErrorServer (the app's own Server, re-classed: same handler,
    request factory and settings)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer
        return server


async def start(app: web.Application, host: str | None, port: int, settings: ServerSettings) -> HostRunner:
    """Starts serving app on host:port (port 0: a free one); returns the runner (runner.addresses)."""
    runner = HostRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout, **settings.handler_args())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def serve(app: web.Application, host: str | None, port: int, settings: ServerSettings) -> None:
    """Serves app until SIGINT or SIGTERM, then shuts it down (the app's on_cleanup runs)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = await start(app, host, port, settings)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
