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

import asyncio
import contextlib
import re

from aiohttp import web

from .auth import principal
from .errors import ApiError, BadRequest

COMFY_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


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


def limits_of(request: web.Request, defaults: dict) -> dict:
    """The limits that hold for this request's owner: its token's own, else the host's defaults (0 = none)."""
    out = dict(defaults)
    out.update(dict(principal(request).limits))
    return out


def check_owner_limits(store, owner: str | None, limits: dict, adding: int) -> None:
    """429 when `adding` jobs more would take `owner` past its limits (max_jobs_per_request; max_pending, counted
    among the pending jobs, looked through only while a limit applies and until the count passes it)."""
    if owner is None:
        return
    per_request = limits.get("max_jobs_per_request") or 0
    if per_request and adding > per_request:
        raise ApiError(
            429, "owner_limit", f"owner '{owner}' may queue at most {per_request} jobs per request (this one: {adding})"
        )
    max_pending = limits.get("max_pending") or 0
    if not max_pending:
        return
    pending, cursor = 0, None
    while True:
        page = store.list(state=["pending"], cursor=cursor, limit=1000, newest_first=False)
        pending += sum(1 for j in page["jobs"] if j.get("owner") == owner)
        if pending + adding > max_pending:
            raise ApiError(
                429,
                "owner_limit",
                f"owner '{owner}' may have at most {max_pending} pending jobs ({pending} pending; this request adds "
                f"{adding})",
                headers={"Retry-After": "30"},
            )
        cursor = page["next_cursor"]
        if not cursor:
            return


class OwnerGate:
    """Admits an owner's enqueue under its limits (check_owner_limits), one admission at a time while a limit
    applies, so two requests at once cannot both pass a limit they pass only alone. defaults: the host's
    (config owner_max_pending, owner_max_jobs_per_request; 0 = none); a token's own limits win."""

    def __init__(self, service):
        self.service = service
        self.defaults = {"max_pending": 0, "max_jobs_per_request": 0}
        self._lock = asyncio.Lock()

    def applies(self, request: web.Request, owner: str | None) -> bool:
        """Whether a limit holds for this owner's enqueue (else admit() lets it through at once, and a caller may
        run its enqueue without it)."""
        return owner is not None and any(limits_of(request, self.defaults).values())

    @contextlib.asynccontextmanager
    async def admit(self, request: web.Request, owner: str | None, jobs: int):
        if not self.applies(request, owner):
            yield
            return
        limits = limits_of(request, self.defaults)
        async with self._lock:
            await self.service.call(check_owner_limits, self.service.store, owner, limits, jobs)
            yield


def refs_of(prompt, sweep=None) -> set[str]:
    """The jobs a prompt's output references (and a sweep's values') name."""
    from ..inputs.outputs import waits_on

    named = set(waits_on(prompt))
    if isinstance(sweep, dict):
        values = [v for vs in sweep.values() if isinstance(vs, list) for v in vs]
        named |= set(waits_on({"sweep": {"class_type": "sweep", "inputs": {str(i): v for i, v in enumerate(values)}}}))
    return named


def check_named_jobs(store, request: web.Request, ids, what: str) -> None:
    """For a submit token: every job `ids` names (after, output references) is one of its own; another owner's is
    refused as a job that is not there (its state is not the caller's to learn)."""
    if lists_all(request):
        return
    for job_id in sorted(ids)[:1000]:
        try:
            job = store.get(job_id, with_prompt=False)
        except (KeyError, ValueError):
            continue  # (the usual refusal of a missing job comes later, the same for everyone)
        if not sees(request, job):
            raise BadRequest(f"{what}: no job {job_id} to name (it is not in the store)")


def check_prompt_ids(store, request: web.Request, prompt_ids) -> None:
    """For a submit token: a prompt_id another owner's job has is refused (409) without saying whose or which job;
    prompt_ids starting with "v2-" are the v2 API's (its Idempotency-Keys) for everyone."""
    for pid in prompt_ids:
        if isinstance(pid, str) and pid.startswith("v2-"):
            raise BadRequest("prompt_ids starting with 'v2-' are the v2 API's: choose another")
    if lists_all(request):
        return
    for pid in list(prompt_ids)[:100_000]:
        if not pid:
            continue
        try:
            job = store.get_by_prompt_id(pid, with_prompt=False)
        except KeyError:
            continue
        if not sees(request, job):
            raise ApiError(409, "prompt_id_taken", f"the prompt_id '{str(pid)[:64]}' is taken: choose another")


def check_found(request: web.Request, jobs) -> None:
    """After an enqueue answered "existed": for a submit token, each job it found by prompt_id is its own. (Two
    owners' requests with one prompt_id at once both pass check_prompt_ids, which runs before either commits: the
    later one finds the earlier one's job, and is refused here as it would have been a moment later.)"""
    if lists_all(request):
        return
    for job in jobs:
        if job is not None and not sees(request, job):
            pid = str(job.get("prompt_id") or "")[:64]
            raise ApiError(409, "prompt_id_taken", f"the prompt_id '{pid}' is taken: choose another")


def check_batch(store, request: web.Request, batch_id: str | None) -> None:
    """For a submit token: a batch_id that holds another owner's jobs is refused (409)."""
    if not batch_id or lists_all(request):
        return
    cursor = None
    while True:
        page = store.list(batch_id=batch_id, cursor=cursor, limit=1000, newest_first=False)
        if any(not sees(request, j) for j in page["jobs"]):
            raise ApiError(409, "batch_taken", f"the batch_id '{batch_id[:64]}' is taken: choose another")
        cursor = page["next_cursor"]
        if not cursor:
            return
