"""The /comfymq/pairing routes (the host's; pairing/host.py does the work):

  POST   /comfymq/pairing/start           {"msg", "version"?} -> {"session", "msg", "version"}      (no token)
  POST   /comfymq/pairing/finish          {"session", "confirm", "worker_key_box"}
                                          -> {"confirm", "host_key_box"}                         (no token)
  POST   /comfymq/pairing/code            -> {"code", "expires_at", "fingerprint"}: a new one-time code  (admin)
  GET    /comfymq/pairing                 {"enabled", "problem", "fingerprint", "broker_public_key", "code"
                                          ({"expires_at", "tries_left"} | null: never the code), "workers",
                                          "refusals" (newest first)}                             (admin)
  DELETE /comfymq/pairing/workers/{key}   unpairs a worker key (URL-encoded Z85) at once         (admin)
  GET    /comfymq/pairing/discover?timeout=S   {"hosts": [discovery.Found.as_dict()], "timeout"}: the hosts
                                          advertised on the LAN (hints; S 0.5..10, default 3)      (read; any role)

start and finish take no API token (the code is their credential) but pass the site rules like every route. A
host whose broker has no CURVE key answers them, and /code, 409 saying how to turn CURVE on. /discover needs no
host (a worker-role ComfyUI's panel uses it: add_discover_route); one browse runs at a time, and a machine where
mDNS cannot run answers 503 "discovery_unavailable".
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..api import auth
from ..api.errors import ApiError, BadRequest, read_json_object
from ..api.guards import protect
from ..api.site_policy import SitePolicy
from .codes import PairingRefused


def _source(request: web.Request) -> str:
    return request.remote or "unknown"


def add_discover_route(routes: web.RouteTableDef, *, prefix: str, token, site: SitePolicy | None) -> None:
    """Registers GET prefix + /pairing/discover (the module doc), with the checks of api/guards.protect. Needs no
    host: a worker-role ComfyUI registers it before its catch-all."""
    from .discovery import DiscoveryUnavailable, browse

    one_at_a_time = asyncio.Lock()

    async def discover(request: web.Request) -> web.Response:
        raw = request.query.get("timeout", "3")
        try:
            timeout = float(raw)
        except ValueError:
            raise BadRequest("timeout is a number of seconds, 0.5 to 10") from None
        if not 0.5 <= timeout <= 10:
            raise BadRequest("timeout is a number of seconds, 0.5 to 10")
        async with one_at_a_time:
            try:
                found = await asyncio.to_thread(browse, timeout)
            except DiscoveryUnavailable as e:
                raise ApiError(503, "discovery_unavailable", f"cannot browse the LAN here: {e}") from None
        return web.json_response({"hosts": [f.as_dict() for f in found], "timeout": timeout})

    routes.get(prefix + "/pairing/discover")(protect(discover, site=site, token=token))


def add_pairing_routes(
    routes: web.RouteTableDef, service, *, prefix: str, token, site: SitePolicy | None, limits=None
) -> None:
    """Registers the routes under prefix + /pairing, with the checks of api/guards.protect (site rules, token)."""
    pairing = service.pairing

    def available() -> None:
        problem = pairing.problem()
        if problem is not None:
            raise ApiError(409, "pairing_unavailable", problem)

    async def exchange_step(request: web.Request, step) -> web.Response:
        available()
        body = await read_json_object(request, limits)
        try:
            # (SPAKE2 takes a few milliseconds of CPU; the store write of finish runs on the pool)
            answer = await service.call(step, _source(request), body)
        except PairingRefused as e:
            raise ApiError(e.status, e.type, str(e)) from None
        return web.json_response(answer)

    @auth.public
    async def start(request: web.Request) -> web.Response:
        return await exchange_step(request, pairing.start)

    @auth.public
    async def finish(request: web.Request) -> web.Response:
        return await exchange_step(request, pairing.finish)

    @auth.requires("admin")
    async def make_code(request: web.Request) -> web.Response:
        available()
        return web.json_response(pairing.issue_code(), status=201)

    @auth.requires("admin")
    async def overview(request: web.Request) -> web.Response:
        return web.json_response(await service.call(pairing.overview))

    @auth.requires("admin")
    async def unpair(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if len(key) != 40:
            raise BadRequest("the key is a worker's 40-character Z85 public key, URL-encoded")
        try:
            await service.call(pairing.unpair, key)
        except LookupError as e:
            raise ApiError(404, "not_found", str(e)) from None
        # (a key also in the configuration's allowed_worker_keys stays allowed: the configuration says so)
        return web.json_response({"unpaired": key, "still_allowed": key in pairing.book.configured})

    def add(method: str, path: str, handler) -> None:
        routes.route(method, prefix + path)(protect(handler, site=site, token=token))

    add("POST", "/pairing/start", start)
    add("POST", "/pairing/finish", finish)
    add("POST", "/pairing/code", make_code)
    routes.get(prefix + "/pairing")(protect(overview, site=site, token=token))
    add("DELETE", "/pairing/workers/{key:.+}", unpair)
