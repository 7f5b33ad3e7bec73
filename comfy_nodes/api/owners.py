"""Whose job it is: the owner a new job records, and what a token of role `submit` may see and change (its own
jobs only). Every other role sees every job (what it may change is its role's permission: api/tokens.py).

    owner_for(request, asked)    the owner a job queued by this request records
    check_job(request, job)      403 unless the request's principal may see / touch this job
    sees(request, job)           the same as a bool (for filtering lists)
    lists_all(request)           whether lists go unfiltered

Inside ComfyUI, a ComfyUI user (its --multi-user `comfy-user` header) is the owner of what an admin or an open API's
caller queues without naming one.
"""

from __future__ import annotations

import re

from aiohttp import web

from .auth import principal
from .errors import ApiError, BadRequest

COMFY_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_OWNER = 256


def owner_for(request: web.Request, asked) -> str | None:
    who = principal(request)
    if asked is not None and not isinstance(asked, str):
        raise BadRequest(f"owner must be a string, got {type(asked).__name__}")
    if not who.sees_all:  # a submit token: its jobs are its own
        if asked not in (None, "", who.name):
            raise ApiError(403, "forbidden", f"token '{who.name}' (role {who.role}) queues jobs as '{who.name}' only")
        return who.name
    if asked:
        return asked
    user = request.headers.get("comfy-user")
    if user and COMFY_USER.fullmatch(user):
        return user
    return who.name  # "admin" for the host's token; None for an open API


def sees(request: web.Request, job: dict) -> bool:
    who = principal(request)
    return who.sees_all or job.get("owner") == who.name


def lists_all(request: web.Request) -> bool:
    return principal(request).sees_all


def check_job(request: web.Request, job: dict) -> None:
    if not sees(request, job):
        who = principal(request)
        raise ApiError(403, "forbidden", f"token '{who.name}' (role {who.role}) may only see and change its own jobs")
