"""Bearer-token authentication for ComfyMQ's HTTP routes.

    app.middlewares.append(token_middleware(token))                                  # every route
    app.middlewares.append(token_middleware(token, prefixes=("/comfymq", "/api/comfymq")))  # only these
    add_routes(routes, service, token=token)         # or per handler (inside ComfyUI: no middleware needed)

With a token configured, a protected request needs `Authorization: Bearer <token>`; anything else is a
401 JSON error (compared in constant time). Inside ComfyUI the middleware must only guard ComfyMQ's own
paths, never ComfyUI's: give `prefixes`. A request is protected when the route it matched, or its path,
lies under a prefix (segment-wise: "/comfymq" covers "/comfymq" and "/comfymq/...", not "/comfymqx").
OPTIONS requests pass (browsers send preflights without credentials); no route answers them with a grant.

A handler marked @status_probe (the /health routes) is also called without the token, for monitors: it then finds
authorized(request) False and must answer its status only, nothing else.

The rule for what a token may be is config.check_token (one rule for every way a token is set).
insecure_bind_warning(host, token) is the line to log when a host listens beyond loopback without a token.
"""

from __future__ import annotations

import functools
import hmac
from typing import Iterable

from aiohttp import web

from ..config import TOKEN_RULE, check_token
from .errors import error_response
from .site_policy import is_loopback_name

AUTH_SCHEME = "Bearer"
AUTHORIZED = "comfymq.authorized"  # request key: False when a status probe came without the token
_PROBE_MARK = "comfymq_status_probe"


def status_probe(handler):
    """Marks a GET handler as a status probe: without the token it still runs, with authorized() False.
    (functools.wraps carries the mark through the other wrappers.)"""
    setattr(handler, _PROBE_MARK, True)
    return handler


def authorized(request: web.Request) -> bool:
    """Whether this request proved the token (always True when no token is configured)."""
    return bool(request.get(AUTHORIZED, True))


def _probe_without_token(request: web.Request, handler) -> bool:
    """A GET/HEAD of a status probe: let it run, unauthorized."""
    if request.method not in ("GET", "HEAD") or not getattr(handler, _PROBE_MARK, False):
        return False
    request[AUTHORIZED] = False
    return True


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
    return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": f'{AUTH_SCHEME} realm="comfymq"'})


def _check_token(token) -> str:
    """A guard needs a token: config.check_token's rule, and not blank."""
    checked = check_token(token)
    if checked is None:
        raise ValueError(f"{TOKEN_RULE}; got an empty one")
    return checked


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
            if denied is not None and not _probe_without_token(request, request.match_info.handler):
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
            if denied is not None and not _probe_without_token(request, handler):
                return denied
            return await handler(request)

        return guarded

    return decorate


def is_loopback(host: str | None) -> bool:
    """Whether a listen address only accepts connections from this machine ("localhost", 127.0.0.0/8, ::1);
    "" or None (every interface) and other host names (they may resolve to anything) are not."""
    if not host:
        return False
    return is_loopback_name(host.strip().strip("[]").lower())


def insecure_bind_warning(host: str | None, token: str | None) -> str | None:
    """The warning to log when the API listens beyond loopback without a token, else None."""
    if token or is_loopback(host):
        return None
    where = host or "every interface"
    return (
        f"the ComfyMQ API listens on {where} without a token: anyone who can reach this port can queue, "
        "cancel and delete jobs and read their outputs, and unless allowed_hosts names this host's names, "
        "a web page can reach it through DNS rebinding. Set a token (clients then send "
        "'Authorization: Bearer <token>') or bind to 127.0.0.1."
    )
