"""Bearer-token authentication for ComfyMQ's HTTP routes.

    app.middlewares.append(token_middleware(token))                                  # every route
    app.middlewares.append(token_middleware(token, prefixes=("/comfymq", "/api/comfymq")))  # only these
    add_routes(routes, service, token=token)         # or per handler (inside ComfyUI: no middleware needed)

With a token configured, a protected request needs `Authorization: Bearer <token>`; anything else is a
401 JSON error (compared in constant time). Inside ComfyUI the middleware must only guard ComfyMQ's own
paths, never ComfyUI's: give `prefixes`. A request is protected when the route it matched, or its path,
lies under a prefix (segment-wise: "/comfymq" covers "/comfymq" and "/comfymq/...", not "/comfymqx").
CORS preflights (OPTIONS) pass: browsers send them without credentials.

insecure_bind_warning(host, token) is the line to log when a host listens beyond loopback without a token.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from typing import Iterable

from aiohttp import web

from .errors import error_response

AUTH_SCHEME = "Bearer"


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def is_protected(request: web.Request, prefixes: tuple[str, ...] | None) -> bool:
    if prefixes is None:
        return True
    paths = [request.path, request.raw_path.split("?", 1)[0]]
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    if canonical:
        paths.append(canonical)
    return any(_under(p, prefix) for p in paths for prefix in prefixes)


def token_matches(request: web.Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (constant-time comparison)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def unauthorized(message: str) -> web.Response:
    return error_response(401, "unauthorized", message,
                          headers={"WWW-Authenticate": f'{AUTH_SCHEME} realm="comfymq"'})


def _check_token(token) -> str:
    if not isinstance(token, str) or not token.strip():
        raise ValueError("the API token must be a non-empty string")
    return token.strip()


def refusal(request: web.Request, token: str) -> web.Response | None:
    """The 401 answer for a request without the right token, or None when it may pass."""
    if request.method == "OPTIONS":
        return None
    if "Authorization" not in request.headers:
        return unauthorized("this ComfyMQ API needs a token: send 'Authorization: Bearer <token>'")
    if not token_matches(request, token):
        return unauthorized("the API token is wrong")
    return None


def token_middleware(token: str, *, prefixes: Iterable[str] | None = None):
    """An aiohttp middleware that requires the token on every request (prefixes=None) or on requests under
    the given path prefixes."""
    token = _check_token(token)
    guarded = None if prefixes is None else tuple(prefixes)

    @web.middleware
    async def require_token(request: web.Request, handler):
        if is_protected(request, guarded):
            denied = refusal(request, token)
            if denied is not None:
                return denied
        return await handler(request)

    return require_token


def token_guard(token: str):
    """A decorator for single handlers: the same check as token_middleware, for routes mounted on an app
    whose middlewares ComfyMQ does not own (ComfyUI's)."""
    token = _check_token(token)

    def decorate(handler):
        @functools.wraps(handler)
        async def guarded(request: web.Request):
            denied = refusal(request, token)
            return denied if denied is not None else await handler(request)

        return guarded

    return decorate


def is_loopback(host: str | None) -> bool:
    """Whether host only accepts connections from this machine ("localhost", 127.0.0.0/8, ::1)."""
    if not host:
        return False  # "" binds every interface
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def insecure_bind_warning(host: str | None, token: str | None) -> str | None:
    """The warning to log when the API listens beyond loopback without a token, else None."""
    if token or is_loopback(host):
        return None
    where = host or "every interface"
    return (f"the ComfyMQ API listens on {where} without a token: anyone who can reach this port can queue, "
            "cancel and delete jobs and read their outputs. Set a token (clients then send "
            "'Authorization: Bearer <token>') or bind to 127.0.0.1.")
