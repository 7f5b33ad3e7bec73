"""Seed 000's contract (simple_local_mqServer), answered unchanged by the standalone host (compatibility routes):

  POST /tasks   {"prompt": <graph as JSON string or object>, "priority": int = 1,
                 "metadata": {"prompt_id"?, "create_time"?}}  -> {"status": "queued", "task": {...}}
  GET  /tasks/{id}                                             -> the task
  GET  /health                                                 -> 200 when the store takes writes, else 503

Only prompt, priority and metadata are accepted; metadata only prompt_id and create_time (missing ones are
filled in). Any other key is a 400 naming it. The same prompt_id again returns the existing task. An input
reference in the prompt ({"comfymq_input": sha256}, an addition of ComfyMQ's) is checked and committed in its
stored form, as on POST /comfymq/jobs.

/health answers {"status": "ok" | "unavailable", "queue": {"writable", "problem", "free_bytes", "low_space",
"data_dir"}, "stats"}: 503 only when the store cannot take a write; free space is reported, never judged. With
a token configured it also answers without the token, then {"status"} only (for monitors).
"""

from __future__ import annotations

import time

from aiohttp import web

from ..inputs.graph import resolve_prompt
from ..webhooks.targets import notify_for
from . import auth, owners
from .errors import BadRequest, read_json_object
from .limits import RequestLimits

TASK_FIELDS = ("prompt", "priority", "metadata")
METADATA_FIELDS = ("prompt_id", "create_time")


def parse_task(body: dict) -> dict:
    """Checks a seed task body; returns enqueue() keyword arguments. Raises BadRequest naming the problem."""
    for key in body:
        if key not in TASK_FIELDS:
            raise BadRequest(f"unknown field '{key}' (allowed: {', '.join(TASK_FIELDS)})")
    if "prompt" not in body:
        raise BadRequest("prompt is required: a ComfyUI API-format workflow, as a JSON string or object")
    prompt = body["prompt"]
    if not isinstance(prompt, (str, dict)):
        raise BadRequest(f"prompt must be a JSON string or object, got {type(prompt).__name__}")
    priority = body.get("priority", 1)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise BadRequest(f"priority must be an integer, got {type(priority).__name__}")
    if not -(2**31) <= priority < 2**31:
        raise BadRequest("priority is out of range (32-bit integer)")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise BadRequest(f"metadata must be an object, got {type(metadata).__name__}")
        for key in metadata:
            if key not in METADATA_FIELDS:
                raise BadRequest(f"metadata key '{key}' is not allowed (allowed: {', '.join(METADATA_FIELDS)})")
    return {"prompt": prompt, "priority": priority, "metadata": metadata}


def task_view(job: dict, prompt=None) -> dict:
    """A job as the seed contract shows a task: prompt, priority, metadata, plus id and state."""
    return {
        "id": job["id"],
        "prompt": prompt if prompt is not None else job.get("prompt"),
        "priority": job["priority"],
        "metadata": {"prompt_id": job["prompt_id"], "create_time": job["create_time"]},
        "state": job["state"],
        "enqueued_at": job["enqueued_at"],
        "result": {
            "outputs": job["outputs"],
            "artifacts": job["artifacts"],
            "error": job["error"],
            "finished_at": job["finished_at"],
        },
    }


def health_status(h: dict) -> str:
    """The one word a /health answer leads with: "ok" when the store takes writes, else "unavailable"."""
    return "ok" if h["writable"] else "unavailable"


def add_compat_routes(routes: web.RouteTableDef, service, limits: RequestLimits | None = None) -> None:
    """The seed routes, for an app whose middlewares apply the site rules, the token and JSON errors
    (host/standalone.py)."""
    limits = limits or RequestLimits()

    @routes.post("/tasks")
    @auth.requires("submit")
    async def post_task(request: web.Request) -> web.Response:
        started = time.monotonic()
        args = parse_task(await read_json_object(request, limits))
        owner = owners.owner_for(request, None)
        if owner:
            args["owner"] = owner
        pid = (args.get("metadata") or {}).get("prompt_id") if isinstance(args.get("metadata"), dict) else None
        if notify_for(service):  # the host's webhooks (webhooks/)
            args["notify"] = True

        def check() -> None:
            if pid:
                owners.check_prompt_ids(service.store, request, [pid])
            # input references ({"comfymq_input": sha256}) are checked and stored as on POST /comfymq/jobs
            args["prompt"] = resolve_prompt(args["prompt"], service.inputs)

        def commit() -> tuple[dict, dict]:
            result = service.store.enqueue(**args)
            return result, service.store.get(result["id"], with_prompt=False)

        def check_and_commit() -> tuple[dict, dict]:
            check()
            return commit()

        if service.owner_gate.applies(request, args.get("owner")):  # its limits are held around the commit
            await service.call(check)
            async with service.owner_gate.admit(request, args.get("owner"), 1):
                result, job = await service.call(commit)
        else:  # in one trip to the pool: each costs the event loop about as much as a small request
            result, job = await service.call(check_and_commit)
        if result["existed"]:
            owners.check_found(request, [job])
        body = {"status": "queued", "task": task_view(job, prompt=args["prompt"])}
        service.metrics.observe_enqueue("tasks", time.monotonic() - started, 0 if result["existed"] else 1)
        if result["existed"]:
            body["existed"] = True
        return web.json_response(body)

    @routes.get("/tasks/{id}")
    async def get_task(request: web.Request) -> web.Response:
        job = await service.call(service.store.get, request.match_info["id"], with_prompt=True)
        owners.check_job(request, job)
        task = task_view(job)
        task["worker"] = job["worker_id"]
        task["attempts"] = job["attempts"]
        if job["state"] == "pending":
            task["waiting"] = await service.call(service.waiting_reasons, job["id"], job.get("owner"))
        return web.json_response({"task": task})

    @routes.get("/health")
    @auth.status_probe
    async def health(request: web.Request) -> web.Response:
        h = await service.call(service.health)
        status = 200 if h["writable"] else 503
        if not auth.authorized(request):  # a monitor without the token: the status, nothing else
            return web.json_response({"status": health_status(h)}, status=status)
        stats = await service.call(service.store.stats) if h["writable"] else None
        body = {"status": health_status(h), "queue": h, "stats": stats}
        return web.json_response(body, status=status)
