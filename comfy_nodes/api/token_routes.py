"""Tokens over HTTP (api/tokens.py keeps them):

GET    /comfymq/whoami          {"name", "role", "open"}: who this request's token is (any token)
GET    /comfymq/tokens          {"tokens": [{"name", "role", "created_at", "limits"}]}  (admin; never the tokens)
POST   /comfymq/tokens          {"name", "role", "limits"?} -> 201 {"name", "role", "token"}  (admin; shown once)
PATCH  /comfymq/tokens/{name}   {"limits": {...}} replaces its own limits ({}: the host's) at once  (admin)
DELETE /comfymq/tokens/{name}   revoked at once (its next request is a 401)          (admin)

limits: max_pending, max_jobs_per_request (checked at enqueue: 429 owner_limit), max_running (its further jobs
wait) and weight (1..1000: its share of dispatch among equal-priority jobs); each over the host's default.
"""

from __future__ import annotations

from aiohttp import web

from .auth import principal
from .errors import ApiError, BadRequest, read_json_object
from .owners import owner_for
from .tokens import ROLES


def add_token_routes(handle, service, *, limits) -> None:
    book = service.tokens

    @handle("GET", "/whoami")
    async def whoami(request: web.Request) -> web.Response:
        who = principal(request)
        # owner: whose jobs this caller's are (a submit token's name; an admin's or an open API's: its ComfyUI user)
        owner = owner_for(request, None)
        return web.json_response({"name": who.name, "role": who.role, "open": who.open, "owner": owner})

    @handle("GET", "/tokens", "admin")
    async def list_tokens(request: web.Request) -> web.Response:
        return web.json_response({"tokens": await service.call(book.list)})

    @handle("POST", "/tokens")
    async def add_token(request: web.Request) -> web.Response:
        body = await read_json_object(request, limits)
        for k in body:
            if k not in ("name", "role", "limits"):
                raise BadRequest(f"unknown field '{str(k)[:64]}' (allowed: name, role, limits)")
        name, role, own = body.get("name"), body.get("role", "submit"), body.get("limits") or {}
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}")
        try:
            token = await service.call(book.add, name, role, own)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        except FileExistsError as e:
            raise ApiError(409, "token_exists", str(e)) from None
        return web.json_response({"name": name, "role": role, "token": token}, status=201)

    @handle("PATCH", "/tokens/{name}")
    async def set_token_limits(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await read_json_object(request, limits)
        if set(body) != {"limits"}:
            raise BadRequest('the body is {"limits": {...}} and nothing else')
        try:
            own = await service.call(book.set_limits, name, body["limits"])
        except ValueError as e:
            raise BadRequest(str(e)) from None
        except LookupError as e:
            raise ApiError(404, "not_found", str(e)[:200]) from None
        return web.json_response({"name": name, "limits": own})

    @handle("DELETE", "/tokens/{name}")
    async def revoke_token(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await service.call(book.revoke, name)
        except LookupError as e:
            raise ApiError(404, "not_found", str(e)[:200]) from None
        return web.json_response({"revoked": name})
