"""Webhooks on the /comfymq API (webhooks/ does the work):

  GET /comfymq/webhooks               {"enabled", "targets" (the host's own), "secret" (whsec_..., to verify
                                      signatures), "signature", "outbox" (endings not yet fully delivered)}
  GET /comfymq/webhooks/deliveries    delivery records: ?state=failed (default) | pending | retrying | delivered |
                                      all (comma-separated for several) &job=<id> &cursor= &limit= (1..500, 100)
                                      -> {"deliveries": [...], "next_cursor"}
A job's own deliveries are also in GET /comfymq/jobs/{id} as `webhooks`. Jobs name targets with `webhooks` on
POST /comfymq/jobs (webhooks/targets.py).
"""

from __future__ import annotations

import re

from aiohttp import web

from ..webhooks import deliveries
from . import auth, owners
from .errors import ApiError, BadRequest
from .guards import protect
from .site_policy import SitePolicy

SHOWN_STATES = ("pending", "retrying", "delivered", "failed")
JOB_ID_RE = re.compile(r"[0-9a-f]{16}")
CURSOR_RE = re.compile(r"webhook/[0-9a-f]{16}/[0-9]{13}-[0-9a-f]{16}\.b?[0-9]{1,2}")


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter '{name}' is given more than once")
    return values[0] if values else None


def add_webhook_routes(
    routes: web.RouteTableDef, service, *, prefix: str, token: str | None, site: SitePolicy | None
) -> None:
    async def info(request: web.Request) -> web.Response:
        deliverer = service.webhooks
        stats = await service.call(service.store.stats)
        return web.json_response(
            {
                "enabled": deliverer is not None,
                "targets": deliverer.host_targets if deliverer is not None else [],
                "secret": deliverer.secret if deliverer is not None else None,
                "signature": "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature v1 (HMAC-SHA256 "
                "over '<id>.<timestamp>.<body>' with the secret's base64-decoded bytes after 'whsec_')",
                "outbox": stats.get("outbox", 0),
            }
        )

    async def listing(request: web.Request) -> web.Response:
        for k in request.query:
            if k not in ("state", "job", "cursor", "limit"):
                raise BadRequest(f"unknown query parameter '{k}' (allowed: state, job, cursor, limit)")
        state = _one(request, "state") or "failed"
        states = set(SHOWN_STATES) if state == "all" else set(state.split(","))
        bad = sorted(states - set(SHOWN_STATES))
        if bad:
            raise BadRequest(f"unknown state '{bad[0]}' (known: {', '.join(SHOWN_STATES)}, all)")
        job = _one(request, "job")
        if job is not None and not JOB_ID_RE.fullmatch(job):
            raise BadRequest("job must be a job id (16 lowercase hex digits)")
        if not owners.lists_all(request):  # a submit token: the deliveries of one of its own jobs
            if job is None:
                raise BadRequest("give job=<one of your jobs' ids>: this token sees its own jobs' deliveries only")
            try:
                owners.check_job(request, await service.call(service.store.get, job, with_prompt=False))
            except KeyError:
                raise ApiError(404, "not_found", f"no job {job}") from None
        cursor = _one(request, "cursor") or ""
        if cursor and not CURSOR_RE.fullmatch(cursor):
            raise BadRequest("cursor is not one this API gave")
        raw = _one(request, "limit") or "100"
        if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= 500:
            raise BadRequest("limit must be 1..500")
        found, next_cursor = await service.call(
            deliveries.listing, service.store, states=states, job=job, after=cursor, limit=int(raw)
        )
        if auth.principal(request).role != "admin":  # receivers' URLs are the admin's to know in full
            found = [deliveries.redacted(d) for d in found]
        return web.json_response({"deliveries": found, "next_cursor": next_cursor})

    routes.get(prefix + "/webhooks")(protect(auth.requires("admin")(info), site=site, token=token))  # (the secret)
    routes.get(prefix + "/webhooks/deliveries")(protect(listing, site=site, token=token))
