"""The /comfymq/pairing routes (the host's; pairing/host.py does the work):

  POST   /comfymq/pairing/start           {"msg", "version"?} -> {"session", "msg", "version"}      (no token)
  POST   /comfymq/pairing/finish          {"session", "confirm", "worker_key_box"}
                                          -> {"confirm", "host_key_box"}                         (no token)
  POST   /comfymq/pairing/leave           {"public_key", "secret"} -> {"left", "still_allowed"}: a paired worker
                                          leaving with the secret the host sealed for it             (no token)
  POST   /comfymq/pairing/code            -> {"code", "expires_at", "fingerprint"}: a new one-time code  (admin)
  GET    /comfymq/pairing                 {"enabled", "problem", "fingerprint", "broker_public_key", "code"
                                          ({"expires_at", "tries_left"} | null: never the code), "workers",
                                          "refusals" (newest first)}                             (admin)
  DELETE /comfymq/pairing/workers/{key}   unpairs a worker key (URL-encoded Z85) at once         (admin)
  GET    /comfymq/pairing/discover?timeout=S   {"hosts": [discovery.Found.as_dict()], "timeout"}: the hosts
                                          advertised on the LAN (hints; S 0.5..10, default 3)      (read; any role)

A ComfyUI that can be a worker (pairing/membership.py) has its side, "Join a farm" (add_membership_routes):

  GET    /comfymq/farm                    membership.view(): {"joined", "can_join", "why_not"}     (read)
  POST   /comfymq/farm/join               {"host_url", "code", "name"?, "fingerprint"?} -> the view   (admin)
                                          (409 "cannot_join" why not; 502 "pairing_failed" what the exchange said)
  POST   /comfymq/farm/leave              -> {"left", "host_told", "message"}                      (admin)

start, finish and leave take no API token (the code, or the leave secret, is their credential) but pass the site rules like every route. A
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


JOIN_FIELDS = {"host_url", "code", "name", "fingerprint"}


def add_membership_routes(routes: web.RouteTableDef, membership, *, prefix: str, token, site: SitePolicy | None):
    """Registers prefix + /farm, /farm/join and /farm/leave (the module doc), with the checks of
    api/guards.protect. A worker-role ComfyUI registers them before its catch-all."""
    from .client import PairingError
    from .membership import MembershipRefused

    async def view(request: web.Request) -> web.Response:
        return web.json_response(membership.view())

    async def run(fn, *args, **kwargs):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except MembershipRefused as e:
            raise ApiError(409, "cannot_join", str(e)) from None
        except PairingError as e:
            raise ApiError(502, "pairing_failed", f"not paired: {e}") from None

    @auth.requires("admin")
    async def join(request: web.Request) -> web.Response:
        body = await read_json_object(request, None)
        extra = set(body) - JOIN_FIELDS
        if extra:
            raise BadRequest(f"unknown field '{sorted(extra)[0][:64]}' (known: {', '.join(sorted(JOIN_FIELDS))})")
        for key in ("host_url", "code"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                raise BadRequest(f"{key} is required: the host's address (http://host:8188) and the code it shows")
        for key in ("name", "fingerprint"):
            if body.get(key) is not None and (not isinstance(body[key], str) or len(body[key]) > 128):
                raise BadRequest(f"{key} is text of at most 128 characters")
        from .client import check_host_url
        from .exchange import normalize_code

        try:
            check_host_url(body["host_url"].strip())
            normalize_code(body["code"])
        except (PairingError, ValueError) as e:
            raise BadRequest(str(e)) from None
        answer = await run(
            membership.join,
            body["host_url"].strip(),
            body["code"],
            name=(body.get("name") or "").strip(),
            fingerprint=body.get("fingerprint"),
        )
        return web.json_response(answer)

    @auth.requires("admin")
    async def leave(request: web.Request) -> web.Response:
        return web.json_response(await run(membership.leave))

    routes.get(prefix + "/farm")(protect(view, site=site, token=token))
    routes.post(prefix + "/farm/join")(protect(join, site=site, token=token))
    routes.post(prefix + "/farm/leave")(protect(leave, site=site, token=token))


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

    @auth.public
    async def leave(request: web.Request) -> web.Response:
        return await exchange_step(request, pairing.leave)

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
    add("POST", "/pairing/leave", leave)
    add("POST", "/pairing/code", make_code)
    routes.get(prefix + "/pairing")(protect(overview, site=site, token=token))
    add("DELETE", "/pairing/workers/{key:.+}", unpair)
