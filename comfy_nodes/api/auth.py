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

With a TokenBook (api/tokens.py) in place of the one token, a request's bearer token says who it is (a Principal:
name and role; the configured token is the admin; stored tokens are looked up by their hash, so a revoke is
effective at once), and the handler's permission (@requires("submit"), "workers", "admin"; unmarked: "read" for
GET/HEAD, "admin" for anything else) must be one its role has: else a 403 naming what the token may not do. The
handler finds principal(request). With no token configured and none stored, every request is the open admin.

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
PRINCIPAL = "comfymq.principal"  # request key: who the request is (a TokenBook's Principal)
_PROBE_MARK = "comfymq_status_probe"
_PERMISSION_MARK = "comfymq_permission"
WHAT = {
    "read": "read this",
    "submit": "queue jobs or change them",
    "workers": "manage workers",
    "admin": "do this (it needs an admin token)",
}


def requires(permission: str):
    """Marks a handler with the permission it needs (tokens.PERMISSIONS: read, submit, workers, admin)."""

    def mark(handler):
        setattr(handler, _PERMISSION_MARK, permission)
        return handler

    return mark


# -- pairing hook (pairing/routes.py): routes whose request carries its own credential --
_PUBLIC_MARK = "comfymq_public"


def public(handler):
    """Marks a handler that needs no token: its request carries a credential of its own (the pairing exchange's
    one-time code, pairing/routes.py). The site rules still apply. Its requests are nobody (no permission)."""
    setattr(handler, _PUBLIC_MARK, True)
    return handler


def _is_public(request: web.Request, handler) -> bool:
    if not getattr(handler, _PUBLIC_MARK, False):
        return False
    from .tokens import Principal

    request[PRINCIPAL] = Principal(None, "public")
    return True


def required(request: web.Request, handler) -> str:
    mark = getattr(handler, _PERMISSION_MARK, None)
    if mark:
        return mark
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "admin"


def principal(request: web.Request):
    """Who this request is (tokens.Principal); an open API's admin when no TokenBook checked it."""
    from .tokens import OPEN

    return request.get(PRINCIPAL, OPEN)


def bearer(request: web.Request) -> str | None:
    """The bearer token the request carries; "" for an Authorization header of another scheme; None for none."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, given = header.partition(" ")
    return given.strip() if scheme.lower() == AUTH_SCHEME.lower() else ""


def book_refusal(request: web.Request, book, handler) -> web.Response | None:
    """The 401 or 403 for a request the TokenBook refuses, or None (request[PRINCIPAL] then says who it is)."""
    if request.method == "OPTIONS" or _is_public(request, handler):
        return None
    given = bearer(request)
    who = book.resolve(given)
    if who is None:
        if _probe_without_token(request, handler):
            return None
        if given is None:
            return unauthorized("this ComfyMQ API needs a token: send 'Authorization: Bearer <token>'")
        return unauthorized("the API token is wrong (or was revoked)")
    need = required(request, handler)
    if not who.may(need):
        return error_response(403, "forbidden", f"token '{who.name}' (role {who.role}) may not {WHAT.get(need, need)}")
    request[PRINCIPAL] = who
    return None


def _is_book(token) -> bool:
    return hasattr(token, "resolve") and hasattr(token, "has_tokens")


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
    given = bearer(request)
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


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


def token_middleware(token, *, prefixes: Iterable[str] | None = None):
    """An aiohttp middleware that requires the token (a str, or a TokenBook: see the module doc) on every request
    (prefixes=None) or on requests under the given path prefixes."""
    guarded = None if prefixes is None else tuple(prefixes)
    if _is_book(token):
        book = token

        @web.middleware
        async def require_book(request: web.Request, handler):
            if is_protected(request, guarded):
                denied = book_refusal(request, book, request.match_info.handler)
                if denied is not None:
                    return denied
            return await handler(request)

        return require_book
    token = _check_token(token)

    @web.middleware
    async def require_token(request: web.Request, handler):
        if is_protected(request, guarded):
            denied = refusal(request, token)
            handler_ = request.match_info.handler
            if denied is not None and not _probe_without_token(request, handler_) and not _is_public(request, handler_):
                return denied
        return await handler(request)

    return require_token


def token_guard(token):
    """A decorator for single handlers: the same check as token_middleware, for routes mounted on an app
    whose middlewares ComfyMQ does not own (ComfyUI's)."""
    if _is_book(token):
        book = token

        def decorate_book(handler):
            @functools.wraps(handler)
            async def guarded(request: web.Request):
                denied = book_refusal(request, book, handler)
                return denied if denied is not None else await handler(request)

            return guarded

        return decorate_book
    token = _check_token(token)

    def decorate(handler):
        @functools.wraps(handler)
        async def guarded(request: web.Request):
            denied = refusal(request, token)
            if denied is not None and not _probe_without_token(request, handler) and not _is_public(request, handler):
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
