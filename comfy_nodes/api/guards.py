"""The checks every ComfyMQ request passes before its handler, in one order: site rules (site_policy.py: Host,
Origin, Sec-Fetch-Site, Content-Type), then the token (auth.py), then the handler with JSON errors (errors.py).

    app = web.Application(middlewares=host_middlewares(site, token))     # the standalone host: every route
    routes.get(path)(protect(handler, site=site, token=token))            # inside ComfyUI: per handler
    routes.post(path)(protect(upload_route(handler), site=site, token=token))   # a file upload: any Content-Type

Inside ComfyUI no middleware of ComfyMQ's runs (the app is ComfyUI's), so each handler carries the checks itself
and its /api/... copy, which ComfyUI registers with the same handler, carries them too.
"""

from __future__ import annotations

import functools
import logging

from aiohttp import web

from . import auth
from .errors import error_response, json_errors, json_handler
from .site_policy import SitePolicy, refusal

log = logging.getLogger("comfymq.api")
_reported: set = set()  # refusals logged as warnings: each kind and value once, at most 256 (later ones at debug)
_MAX_REPORTED = 256


_ANY_CONTENT_TYPE = "comfymq_any_content_type"


def upload_route(handler):
    """Marks a handler as an upload route: any Content-Type passes the site rules (site_policy.py, rule 4).
    (functools.wraps carries the mark through the other wrappers, so the app's middleware sees it too.)"""
    setattr(handler, _ANY_CONTENT_TYPE, True)
    return handler


def _is_upload_route(handler) -> bool:
    return bool(getattr(handler, _ANY_CONTENT_TYPE, False))


def site_refusal(request: web.Request, policy: SitePolicy, handler=None) -> web.Response | None:
    """The JSON refusal for a request the site rules refuse, or None. handler: the one the request is for (an
    upload_route takes any Content-Type). A request that carries a webhook signature was made by a ComfyMQ
    host's webhook sender (webhooks/outbox.py): refused, so a job's webhook URL cannot make a host call its own API
    (or another host's) with the rights of whoever may reach it."""
    if "webhook-signature" in request.headers:
        log.warning("refused %s %s from %s: a webhook request", request.method, request.path[:200], request.remote)
        return error_response(
            403, "webhook_request", "this API takes no webhook requests (a job's webhook pointed at it)", close=True
        )
    headers = request.headers
    judged = tuple(tuple(headers.getall(name, ())) for name in _JUDGED)
    any_type = _is_upload_route(handler)
    if sum(len(v) for values in judged for v in values) <= _CACHED_CHARS:
        r = _cached_refusal(policy, request.method, judged, any_type)
    else:
        r = refusal(policy, request.method, headers, lambda name: headers.getall(name, []), any_content_type=any_type)
    if r is None:
        return None
    key = (r.type, request.headers.get("Host"), request.headers.get("Origin"))
    level = logging.DEBUG if key in _reported or len(_reported) >= _MAX_REPORTED else logging.WARNING
    if len(_reported) < _MAX_REPORTED:  # values come from clients: never let them grow the set further
        _reported.add(key)
    log.log(level, "refused %s %s from %s: %s", request.method, request.path[:200], request.remote, r.message)
    # a refused request is never read on: close the connection rather than drain a body nobody wants
    return error_response(r.status, r.type, r.message, close=request.body_exists)


_JUDGED = ("Host", "Origin", "Sec-Fetch-Site", "Content-Type")  # the headers site_policy.refusal reads
_CACHED_CHARS = 512  # judged headers up to this size are looked up in a small cache: clients repeat them


@functools.lru_cache(maxsize=256)
def _cached_refusal(policy: SitePolicy, method: str, judged: tuple, any_type: bool):
    """site_policy.refusal for these values of the _JUDGED headers (a pure function of them: cached)."""
    values = dict(zip(_JUDGED, judged, strict=True))
    return refusal(policy, method, {}, lambda name: list(values[name]), any_content_type=any_type)


def site_middleware(policy: SitePolicy):
    """An aiohttp middleware applying the site rules to every request of the app (the outermost check)."""

    @web.middleware
    async def check_site(request: web.Request, handler):
        denied = site_refusal(request, policy, request.match_info.handler)
        return denied if denied is not None else await handler(request)

    return check_site


def site_guard(policy: SitePolicy):
    """A decorator applying the site rules to one handler (routes on an app whose middlewares are not ours)."""

    def decorate(handler):
        @functools.wraps(handler)
        async def guarded(request: web.Request):
            denied = site_refusal(request, policy, handler)
            return denied if denied is not None else await handler(request)

        return guarded

    return decorate


def host_middlewares(site: SitePolicy, token) -> list:
    """The standalone host's middlewares, outermost first: site rules, token (a str or a TokenBook), JSON errors."""
    chain = [site_middleware(site)]
    if token is not None:
        chain.append(auth.token_middleware(token))
    chain.append(json_errors)
    return chain


def protect(handler, *, site: SitePolicy | None, token: str | None):
    """handler with the checks of host_middlewares applied by itself, in the same order. site=None leaves the
    site rules to the app's middleware (the standalone host); token=None means no token."""
    wrapped = json_handler(handler)
    if token is not None:
        wrapped = auth.token_guard(token)(wrapped)
    if site is not None:
        wrapped = site_guard(site)(wrapped)
    return wrapped
