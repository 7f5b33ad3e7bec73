"""The Comfy API v2 in front of the whole farm (the contract: Comfy-Org/comfy-api-proxy spec/openapi.yaml; the
official SDK, PyPI comfy-sdk, drives it in tests/python/test_api_v2.py).

Mounts: the standalone host serves it at /api/v2/...; inside ComfyUI the plugin serves it at /comfymq/api/v2/...,
so an SDK's base URL is http://<comfyui>/comfymq and nothing clashes with ComfyUI's own /api/v2. Same token and site
rules as the rest of the API.

  POST   <mount>/jobs                 submit {workflow, metadata?, priority?}; Idempotency-Key: the same key and
                                      request replay the job (201, Idempotency-Replayed: true), the same key with
                                      another request is 422 idempotency_key_reuse, one in flight 409 (keys are kept
                                      as long as their job: never reused for another job)
  GET    <mount>/jobs                 newest first: ?limit=1..100 &cursor= &metadata[k]=v
  GET    <mount>/jobs/{id}            the job (poll-authoritative)
  GET    <mount>/jobs/{id}/events     SSE: status (and queue_position as it moves), progress, output; ends after
                                      the terminal status
  POST   <mount>/jobs/{id}/cancel     idempotent; answers the job
  GET    <mount>/jobs/{id}/workflow   {"workflow": the API-format graph it ran, "format": "api"}
  POST   <mount>/assets               multipart {file, content_type, file_path, expected_hash?, tags?}
  POST   <mount>/assets/from-hash     {hash: "blake3:<hex>", file_path?, tags?}
  HEAD   <mount>/assets/by-hash/{hash}
  GET    <mount>/assets/{id}          (an upload's, or a job output's asset_o<job>_<n>)
  DELETE <mount>/assets/{id}          an upload's record (its bytes stay while jobs name them)
  GET    <mount>/assets/{id}/content  the bytes (Range requests served)

Workflows name assets as {"__type": "core/ASSET", "info": {"id": "asset_..."}}: an upload becomes the input
store's stored form and travels with the job like any input; a job output's asset is that job's file (a job not
done yet is waited for, as with {"comfymq_output": ...}). Answers: views.py. Errors: {"error": {"code", "message",
"details"?}} (and `type`, the same as `code`, as on the rest of the API).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from pathlib import Path

from aiohttp import web

from ...inputs import graph as input_refs
from ...inputs.names import safe_name
from ...inputs.outputs import OutputResolver, once_per_request, waits_on
from ...webhooks.targets import notify_for
from .. import auth, owners
from ..errors import ApiError, read_json_object
from ..guards import protect, upload_route
from ..input_routes import TimedBody
from . import views
from .previews import LatestPreviews
from .records import BLAKE3, V2Records

try:  # the v2 hash; without it uploads have no hash and by-hash lookups find nothing (logged once at start)
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - blake3 comes with the test requirements
    _blake3 = None

log = logging.getLogger("comfymq.api.v2")

MAX_LABELS = 16
LABEL_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # (fullmatch: "$" would let a trailing newline through)
MAX_LABEL_VALUE = 256
KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
JOB_ID = re.compile(r"[0-9a-f]{16}")
MAX_STREAMS = 512  # SSE streams open at once
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
POLL = 1.0  # seconds: a stream reads the job at least this often (events only wake it sooner)
READ_CHUNK = 1 << 20
REQUEST_LABEL = "comfymq/request"  # the hash of the request an Idempotency-Key made the job with
KEY_TTL_MS = 24 * 3600 * 1000  # an Idempotency-Key's life (the contract's): then the same key makes a new job
MAX_KEY_GENERATIONS = 4096
MAX_FORM_PARTS = 40  # a file, its fields and tags
MAX_TAGS = 32
MAX_TAG_CHARS = 256
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}(;[ -~]{0,255})?")
# Bytes served from the API's origin never run as a page there (HTML, SVG), as on /comfymq/artifacts.
SAFE_CONTENT_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


class V2Error(ApiError):
    """A refusal with one of the contract's codes."""

    def __init__(self, status: int, code: str, message: str, *, details: dict | None = None, headers=None):
        super().__init__(status, code, message, extra={"details": details} if details else None, headers=headers)


def _request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _labels(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(422, "metadata_invalid", "metadata must be an object of string labels")
    if len(value) > MAX_LABELS:
        raise V2Error(422, "metadata_invalid", f"metadata holds {len(value)} labels: at most {MAX_LABELS}")
    for k, v in value.items():
        if not LABEL_KEY.fullmatch(k):
            raise V2Error(422, "metadata_invalid", f"metadata key '{k[:64]}': 1 to 64 of A-Z a-z 0-9 _ . : -")
        if not isinstance(v, str) or len(v) > MAX_LABEL_VALUE or any(ord(c) < 32 for c in v):
            raise V2Error(
                422, "metadata_invalid", f"metadata['{k}'] must be a string of at most {MAX_LABEL_VALUE} characters"
            )
    return dict(value)


class JobWatch:
    """Wakes the SSE streams of a job when the broker says something about it (its event thread -> the loop)."""

    def __init__(self):
        self.waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def __call__(self, event: dict) -> None:
        job = event.get("job_id")
        for loop, ev in list(self.waiting.get(job, ())):
            loop.call_soon_threadsafe(ev.set)

    def add(self, job: str, item) -> None:
        self.waiting.setdefault(job, set()).add(item)

    def remove(self, job: str, item) -> None:
        s = self.waiting.get(job)
        if s is not None:
            s.discard(item)
            if not s:
                self.waiting.pop(job, None)


def add_v2_routes(
    routes: web.RouteTableDef,
    service,
    *,
    mount: str,
    token: str | None,
    site,
    limits,
    local=None,
    retention_days: float = 0.0,
) -> None:
    """Registers the routes of the module doc under `mount` (/api/v2 or /comfymq/api/v2). `local`: as add_routes'
    local_inputs (inside ComfyUI). `retention_days`: the host's (a job's expires_at)."""
    records = V2Records(Path(service.data_dir) / "v2")
    outputs = OutputResolver(service.store, service.artifact_root, service.inputs, limits.max_input_bytes)
    watch = JobWatch()
    previews = LatestPreviews()
    if service.broker is not None:
        service.add_listener(previews)  # (before watch: a stream woken by a preview finds it)
        service.add_listener(watch)
    in_flight: set[str] = set()
    streams = [0]
    if _blake3 is None:
        log.warning("the blake3 package is not installed: v2 assets get no hash (pip install blake3)")

    def route(method: str, path: str, *, upload: bool = False, bodyless: bool = False, permission: str | None = None):
        """upload: a file, any Content-Type. bodyless: the SDK sends it with no body and no Content-Type (cancel,
        delete): any Content-Type passes too (site_policy.py rule 4, as for uploads), and a body is refused.
        permission: what a token needs (auth.requires; default: read for GET and HEAD, admin for the rest)."""

        def register(fn):
            handler = fn
            if bodyless:

                async def handler(request: web.Request, fn=fn):
                    if request.body_exists and await TimedBody(limits).read(lambda: request.content.read(1)):
                        raise V2Error(422, "invalid_request", "this request takes no body")
                    return await fn(request)

            if permission:
                auth.requires(permission)(handler)

            routes.route(method, mount + path)(
                protect(upload_route(handler) if upload or bodyless else handler, site=site, token=token)
            )
            return fn

        return register

    def labels_of(job: dict) -> dict:
        """A job's client labels: its stored labels but ours (keys with a "/", which clients' keys cannot hold)."""
        labels = job.get("labels")
        return {k: v for k, v in labels.items() if "/" not in k} if isinstance(labels, dict) else {}

    def origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def view(job: dict, request: web.Request, waiting=None) -> dict:
        """(Reads the store for a pending job's place: call it on the pool, or where a short read is fine.)"""
        position = service.store.queue_position(job["id"]) if job["state"] == "pending" else None
        return views.job_view(
            job,
            mount,
            labels=labels_of(job),
            retention_days=retention_days,
            origin=origin(request),
            waiting=waiting,
            queue_position=position,
        )

    async def get_job(job_id: str, with_prompt: bool = False) -> dict:
        if not JOB_ID.fullmatch(job_id):
            raise V2Error(404, "not_found", f"no job '{job_id[:64]}'")
        try:
            return await service.call(service.store.get, job_id, with_prompt=with_prompt)
        except KeyError:
            raise V2Error(404, "not_found", f"no job '{job_id}'") from None

    # -- assets as workflow inputs --

    def asset_input(value: dict, where, resolve_output) -> dict:
        info = value.get("info")
        asset_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(asset_id, str):
            raise V2Error(422, "missing_asset", f"{where}: a core/ASSET reference needs info.id")
        out = views.parse_output_asset_id(asset_id)
        if out is not None:  # a job's output: that job's file (waited for while it runs)
            return resolve_output({"comfymq_output": {"job": out[0], "index": out[1]}}, where)
        record = records.asset(asset_id)
        size = service.inputs.touch(record["sha256"]) if record else None
        if record is None or size is None:
            raise V2Error(422, "missing_asset", f"{where}: no asset '{asset_id[:64]}' on this host")
        name = Path(record.get("file_path") or "").name
        return input_refs.stored_form(record["sha256"], safe_name(name, record["sha256"], ""), size)

    def resolve_workflow(workflow: dict) -> dict:
        resolve_output = once_per_request(outputs)
        base = input_refs.value_resolver(service.inputs, local, resolve_output)

        def resolve(value, where):
            if isinstance(value, dict) and value.get("__type") == "core/ASSET":
                return asset_input(value, where, resolve_output)
            return base(value, where)

        try:
            return input_refs.rewrite_prompt(workflow, resolve)
        except input_refs.BadReference as e:
            raise V2Error(422, "missing_asset", str(e)) from None

    # -- jobs --

    @route("POST", "/jobs", permission="submit")
    async def submit(request: web.Request) -> web.Response:
        started = time.monotonic()
        resp = await submit_job(request)
        if resp.status == 201 and "Idempotency-Replayed" not in resp.headers:
            service.metrics.observe_enqueue("v2", time.monotonic() - started, 1)
        return resp

    async def submit_job(request: web.Request) -> web.Response:
        body = await read_json_object(request, limits)
        allowed = {"workflow", "metadata", "priority", "extra_data"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise V2Error(
                422, "invalid_request", f"unknown field '{extra[0][:64]}' (allowed: {', '.join(sorted(allowed))})"
            )
        workflow = body.get("workflow")
        if not isinstance(workflow, dict) or not workflow:
            raise V2Error(422, "invalid_workflow", "workflow must be an API-format graph (a non-empty object)")
        if "nodes" in workflow and "links" in workflow:
            raise V2Error(
                422, "workflow_format_ui", "this is a UI-format workflow (nodes/links): export it in API format"
            )
        if body.get("extra_data"):
            raise V2Error(
                422,
                "extra_data_not_supported",
                "extra_data (partner node keys) is not taken by this host: its workers run with their own",
            )
        priority = body.get("priority", 1)
        if isinstance(priority, bool) or not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
            raise V2Error(422, "invalid_request", "priority must be a 32-bit integer (higher runs first)")
        labels = _labels(body.get("metadata"))
        key = request.headers.get("Idempotency-Key")
        if key is not None and not KEY_RE.fullmatch(key):
            raise V2Error(422, "invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters")
        request_hash = _request_hash(body)
        owner = owners.owner_for(request, None)
        # (keys are the caller's own: another owner's same key is another key; an open API's callers share one space)
        scoped = key if key is None or owner in (None, "admin") else f"{owner}\0{key}"
        base_pid = f"v2-key-{hashlib.sha256(scoped.encode()).hexdigest()[:40]}" if key else f"v2-{uuid.uuid4().hex}"
        pid = base_pid

        def live_key() -> tuple[str, dict | None]:
            """The key's prompt_id now: its newest use younger than KEY_TTL (that job), or the first free one. A key
            expires KEY_TTL after its job was made (the contract's 24 h): then the same key makes a new job, whose
            prompt_id is the next generation ("<base>-g<n>")."""
            now = int(time.time() * 1000)
            for g in range(MAX_KEY_GENERATIONS):
                p = base_pid if g == 0 else f"{base_pid}-g{g}"
                try:
                    job = service.store.get_by_prompt_id(p, with_prompt=False)
                except KeyError:
                    return p, None
                if owner not in (None, "admin") and job.get("owner") != owner:
                    continue  # (not this owner's: a squatted id is stepped over, never replayed)
                if now - int(job.get("enqueued_at") or 0) < KEY_TTL_MS:
                    return p, job
            raise V2Error(422, "invalid_request", "this Idempotency-Key was used too many times: use a new one")

        async def replay_or_refuse() -> web.Response | None:
            try:
                job = await service.call(service.store.get_by_prompt_id, pid, with_prompt=False)
            except KeyError:
                return None
            if (job.get("labels") or {}).get(REQUEST_LABEL) != request_hash:
                raise V2Error(422, "idempotency_key_reuse", "this Idempotency-Key was used with another request")
            return web.json_response(
                await service.call(view, job, request), status=201, headers={"Idempotency-Replayed": "true"}
            )

        if key:
            if base_pid in in_flight:
                raise V2Error(
                    409,
                    "idempotency_conflict",
                    "a request with this Idempotency-Key is in flight",
                    headers={"Retry-After": "1"},
                )
            in_flight.add(base_pid)
        try:
            if key:
                pid, live = await service.call(live_key)
                if live is not None and (replayed := await replay_or_refuse()) is not None:
                    return replayed
            # a submit token names other jobs (their outputs) of its own only
            named = owners.refs_of(workflow) | {
                out[0]
                for _n, _i, v in input_refs.keyed_values(workflow, "__type")
                if v.get("__type") == "core/ASSET"
                and isinstance(v.get("info"), dict)
                and (out := views.parse_output_asset_id(str(v["info"].get("id") or ""))) is not None
            }
            await service.call(owners.check_named_jobs, service.store, request, named, "workflow")
            prompt = await service.call(resolve_workflow, workflow)
            after = waits_on(prompt)
            stored_labels = {**labels, REQUEST_LABEL: request_hash} if key else labels
            try:  # (labels and the request's hash are in the job's own record: one commit)
                async with service.owner_gate.admit(request, owner, 1):
                    result = await service.call(
                        service.store.enqueue,
                        prompt,
                        prompt_id=pid,
                        owner=owner,
                        priority=priority,
                        after=after or None,
                        labels=stored_labels or None,
                        notify=notify_for(service) or None,  # the host's webhooks (webhooks/)
                    )
            except ValueError as e:
                raise V2Error(422, "invalid_workflow", str(e)) from None
            if result["existed"] and key and (replayed := await replay_or_refuse()) is not None:
                return replayed
            job = await get_job(result["id"])
            return web.json_response(await service.call(view, job, request), status=201)
        finally:
            in_flight.discard(base_pid)

    @route("GET", "/jobs")
    async def list_jobs(request: web.Request) -> web.Response:
        filters = {}
        limit, cursor = 20, None
        for k, v in request.query.items():
            m = re.fullmatch(r"metadata\[(.+)\]", k)
            if m:
                filters[m.group(1)] = v
            elif k == "limit":
                if not re.fullmatch(r"[0-9]{1,3}", v) or not 1 <= int(v) <= 100:
                    raise V2Error(422, "invalid_request", "limit must be an integer from 1 to 100")
                limit = int(v)
            elif k == "cursor":
                if not JOB_ID.fullmatch(v):
                    raise V2Error(422, "invalid_request", "cursor must be a next_cursor this host gave")
                cursor = v
            else:
                raise V2Error(422, "invalid_request", f"unknown query parameter '{k[:64]}'")
        found, scanned = [], 0
        while len(found) < limit and scanned < 20_000:
            page = await service.call(service.store.list, cursor=cursor, limit=min(1000, max(limit, 100)))
            for job in page["jobs"]:
                scanned += 1
                cursor = job["id"]
                labels = labels_of(job) if filters else None
                if filters and any(labels.get(k) != v for k, v in filters.items()):
                    continue
                if not owners.sees(request, job):  # a submit token: its own jobs only
                    continue
                found.append(job)
                if len(found) == limit:
                    break
            if not page["next_cursor"]:
                cursor = None if len(found) < limit or found[-1]["id"] == page["jobs"][-1]["id"] else cursor
                break
        body = {"jobs": [await service.call(view, j, request) for j in found]}
        if cursor and found:
            body["next_cursor"] = found[-1]["id"]
        elif cursor and not found:  # (scanned its share without a match: the client goes on from there)
            body["next_cursor"] = cursor
        return web.json_response(body)

    @route("GET", "/jobs/{id}")
    async def get(request: web.Request) -> web.Response:
        job = await get_job(request.match_info["id"])
        owners.check_job(request, job)
        waiting = (
            await service.call(service.waiting_reasons, job["id"], job.get("owner"))
            if job["state"] == "pending"
            else None
        )
        return web.json_response(await service.call(view, job, request, waiting))

    @route("POST", "/jobs/{id}/cancel", bodyless=True, permission="submit")
    async def cancel(request: web.Request) -> web.Response:
        job = await get_job(request.match_info["id"])
        owners.check_job(request, job)
        if job["state"] in ("pending", "running"):
            try:
                await service.call(service.store.cancel, job["id"], "cancelled through the v2 API")
            except Exception:  # noqa: BLE001 - it ended meanwhile: answer what it is
                pass
            job = await get_job(job["id"])
        return web.json_response(await service.call(view, job, request))

    @route("GET", "/health")
    async def health(request: web.Request) -> web.Response:
        """Not in the contract (an extension): whether this host takes jobs, its queue and its workers."""
        h = await service.call(service.health)
        stats = await service.call(service.store.stats) if h["writable"] else None
        online = 0
        if service.broker is not None:
            online = sum(1 for w in await service.call(service.broker.workers) if w.get("online"))
        body = {
            "status": "ok" if h["writable"] else "unavailable",
            "problem": h["problem"],
            "queue": {"paused": stats["paused"], "counts": stats["counts"]} if stats else None,
            "workers": {"online": online},
        }
        return web.json_response(body, status=200 if h["writable"] else 503)

    @route("GET", "/jobs/{id}/workflow")
    async def workflow(request: web.Request) -> web.Response:
        job = await get_job(request.match_info["id"], with_prompt=True)
        owners.check_job(request, job)
        prompt = job.get("prompt")
        return web.json_response({"workflow": prompt if isinstance(prompt, dict) else {}, "format": "api"})

    @route("GET", "/jobs/{id}/events")
    async def events(request: web.Request) -> web.StreamResponse:
        job = await get_job(request.match_info["id"])
        owners.check_job(request, job)
        if streams[0] >= MAX_STREAMS:
            raise V2Error(
                429,
                "queue_full",
                f"{MAX_STREAMS} event streams are open: poll, or try again",
                headers={"Retry-After": "5"},
            )
        streams[0] += 1
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        item = (loop, wake)
        watch.add(job["id"], item)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)

            async def send(name: str, data: dict) -> None:
                await resp.write(f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())

            last_status, last_progress, sent_outputs, last_preview = None, None, 0, None
            seen: dict = {}  # the job as the stream last saw it: what changed since makes `log` lines (at connect: the
            # run under way, or how it ended)
            quiet_since = time.monotonic()
            while True:
                v = await service.call(view, job, request)
                now_status = (v["status"], v["queue_position"])
                if now_status != last_status and v["status"] not in views.TERMINAL:  # (its place moves too)
                    await send("status", {"status": v["status"], "queue_position": v["queue_position"]})
                    last_status, quiet_since = now_status, time.monotonic()
                if v["progress"] is not None and v["progress"] != last_progress:
                    await send("progress", v["progress"])
                    last_progress, quiet_since = v["progress"], time.monotonic()
                pv = previews.get(job["id"]) if v["status"] == "running" else None
                if pv is not None and pv[0] != last_preview:  # the newest one (also on connect)
                    await send("preview", pv[1])
                    last_preview, quiet_since = pv[0], time.monotonic()
                for line in views.log_lines(seen, job):
                    await send("log", line)
                seen = job
                for out in v["outputs"][sent_outputs:]:
                    await send("output", out)
                sent_outputs = len(v["outputs"])
                if v["status"] in views.TERMINAL:
                    await send("status", {"status": v["status"], "queue_position": None})
                    break
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    await resp.write(b": keepalive\n\n")
                    quiet_since = time.monotonic()
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), POLL)
                except asyncio.TimeoutError:
                    pass
                try:
                    job = await service.call(service.store.get, job["id"], with_prompt=False)
                except KeyError:  # deleted meanwhile: nothing more will come
                    break
            await resp.write_eof()
            return resp
        finally:
            watch.remove(job["id"], item)
            streams[0] -= 1

    # -- assets --

    def asset_view(record: dict, request: web.Request, *, created_new: bool | None = None) -> dict:
        out = {
            "id": record["id"],
            "hash": record.get("hash"),
            "size_bytes": record["size"],
            "content_type": record.get("content_type") or "application/octet-stream",
            "file_path": record.get("file_path"),
            "created_at": views.iso(record.get("created_ms")),
            "url": f"{origin(request)}{mount}/assets/{record['id']}/content",
            "url_expires_at": views.FAR,
            "tags": record.get("tags") or [],
        }
        if created_new is not None:
            out["created_new"] = created_new
        return out

    def mint(
        sha256: str, size: int, b3: str | None, content_type: str, file_path: str, tags: list, owner=None
    ) -> tuple[dict, bool]:
        """The asset over a stored blob: (record, already there). owner: who made it (only it, or an admin, may
        forget it)."""
        asset_id = records.asset_id(sha256, file_path, content_type)
        found = records.asset(asset_id)
        if found is not None:
            return found, True
        record = {
            "id": asset_id,
            "sha256": sha256,
            "hash": f"blake3:{b3}" if b3 else None,
            "size": size,
            "content_type": content_type,
            "file_path": file_path,
            "tags": tags,
            "created_ms": int(time.time() * 1000),
            "owner": owner,
        }
        if b3:
            records.put_blake3(b3, sha256)
        records.put_asset(record)
        return record, False

    def check_tag(tag) -> str:
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS or any(ord(c) < 32 for c in tag):
            raise V2Error(422, "invalid_request", f"a tag is a string of 1 to {MAX_TAG_CHARS} characters")
        return tag

    def check_media_type(value) -> str:
        if not isinstance(value, str) or not MEDIA_TYPE.fullmatch(value):
            raise V2Error(422, "invalid_request", "content_type must be a media type such as image/png")
        return value

    def check_path(file_path) -> str:
        if not isinstance(file_path, str) or not file_path or len(file_path) > 1024 or "\x00" in file_path:
            raise V2Error(422, "invalid_request", "file_path must be a file name or path of at most 1024 characters")
        return file_path

    @route(
        "POST", "/assets", upload=True, permission="submit"
    )  # (a file is not JSON: any Content-Type passes the site rules)
    async def upload(request: web.Request) -> web.Response:
        if request.content_type != "multipart/form-data":
            raise V2Error(
                422, "invalid_request", "send the asset as multipart/form-data (file, content_type, file_path)"
            )
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError) as e:
            raise V2Error(422, "invalid_request", f"the multipart body cannot be read: {e}") from None
        body = TimedBody(limits)  # (a stalled or endless upload gets a 408, as on POST /comfymq/inputs)
        fields: dict[str, str] = {}
        tags: list[str] = []
        stored = b3 = None
        pending = None
        parts = 0
        try:
            while (part := await body.read(reader.next)) is not None:
                parts += 1
                if parts > MAX_FORM_PARTS:
                    raise V2Error(422, "invalid_request", f"the form has more than {MAX_FORM_PARTS} fields")
                if part.name == "file":
                    if pending is not None:
                        raise V2Error(422, "invalid_request", "one file per request")
                    pending = await service.call(service.inputs.begin, limits.max_input_bytes)
                    hasher = _blake3() if _blake3 else None
                    size = 0
                    while chunk := await body.read(lambda p=part: p.read_chunk(READ_CHUNK)):
                        size += len(chunk)
                        if size > limits.max_input_bytes:
                            raise V2Error(413, "too_large", f"the file is larger than {limits.max_input_bytes} bytes")
                        await service.call(_feed, chunk, hasher, pending)
                    b3 = hasher.hexdigest() if hasher else None
                elif part.name in ("content_type", "file_path", "expected_hash", "tags"):
                    text = bytearray()
                    while chunk := await body.read(lambda p=part: p.read_chunk(4096)):
                        text += chunk
                        if len(text) > 4096:
                            raise V2Error(422, "invalid_request", f"form field '{part.name}' is too long")
                    if part.name == "tags":
                        tags.append(check_tag(text.decode("utf-8", "replace")))
                        if len(tags) > MAX_TAGS:
                            raise V2Error(422, "invalid_request", f"at most {MAX_TAGS} tags")
                    else:
                        fields[part.name] = text.decode("utf-8", "replace")
                else:
                    raise V2Error(422, "invalid_request", f"unknown form field '{str(part.name)[:64]}'")
            if pending is None:
                raise V2Error(422, "invalid_request", "the form holds no file")
            for need in ("content_type", "file_path"):
                if not fields.get(need):
                    raise V2Error(422, "invalid_request", f"the form needs {need}")
            file_path = check_path(fields["file_path"])
            check_media_type(fields["content_type"])
            expected = fields.get("expected_hash")
            if expected is not None and b3 is not None and expected != f"blake3:{b3}":
                raise V2Error(409, "hash_mismatch", f"the bytes hash to blake3:{b3}, not {expected[:80]}")
            stored = await service.call(pending.commit)
        finally:
            if pending is not None:
                pending.abort()
        record, existed = await service.call(
            mint,
            stored.sha256,
            stored.size,
            b3,
            fields["content_type"],
            file_path,
            tags,
            owners.owner_for(request, None),
        )
        status = 200 if existed or stored.existed else 201
        return web.json_response(asset_view(record, request, created_new=not stored.existed), status=status)

    def by_hash(hash_text: str) -> tuple[str, int, str] | None:
        m = BLAKE3.fullmatch(hash_text or "")
        if not m:
            return None
        sha = records.sha256_of_blake3(m.group(1))
        size = service.inputs.stat(sha) if sha else None
        return (sha, size, m.group(1)) if size is not None else None

    @route("HEAD", "/assets/by-hash/{hash}")
    async def head_by_hash(request: web.Request) -> web.Response:
        found = await service.call(by_hash, request.match_info["hash"])
        return web.Response(status=200 if found else 404)

    @route("POST", "/assets/from-hash", permission="submit")
    async def from_hash(request: web.Request) -> web.Response:
        body = await read_json_object(request, limits)
        found = await service.call(by_hash, body.get("hash") if isinstance(body.get("hash"), str) else "")
        if found is None:
            raise V2Error(404, "blob_not_found", "no blob with that hash on this host")
        sha, size, b3 = found
        file_path = check_path(body.get("file_path") or f"asset-{b3[:12]}")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            raise V2Error(422, "invalid_request", f"tags must be a list of at most {MAX_TAGS} strings")
        tags = [check_tag(t) for t in tags]
        content_type = check_media_type(body.get("content_type", "application/octet-stream"))
        record, existed = await service.call(
            mint, sha, size, b3, content_type, file_path, tags, owners.owner_for(request, None)
        )
        return web.json_response(asset_view(record, request), status=200 if existed else 201)

    async def output_record(asset_id: str, request: web.Request) -> tuple[dict, Path] | None:
        parsed = views.parse_output_asset_id(asset_id)
        if parsed is None:
            return None
        try:
            job = await service.call(service.store.get, parsed[0], with_prompt=False)
        except KeyError:
            return None
        owners.check_job(request, job)  # a submit token: its own jobs' outputs only
        arts = job.get("artifacts") or []
        if parsed[1] >= len(arts):
            return None
        a = arts[parsed[1]]
        path = (Path(service.artifact_root) / a["path"]).resolve()
        if not path.is_relative_to(Path(service.artifact_root).resolve()) or not path.is_file():
            return None  # (out of the root, gone, or not a file: no such asset)
        name = a["path"].rsplit("/", 1)[-1]
        record = {
            "id": asset_id,
            "hash": None,
            "size": a.get("size") or 0,
            "content_type": views.output_mime(a),
            "file_path": name,
            "created_ms": job.get("finished_at"),
        }
        return record, path

    async def find_asset(asset_id: str, request: web.Request) -> tuple[dict, Path]:
        out = await output_record(asset_id, request)
        if out is not None:
            return out
        record = await service.call(records.asset, asset_id)
        if record is None or service.inputs.stat(record["sha256"]) is None:
            raise V2Error(404, "not_found", f"no asset '{asset_id[:64]}'")
        return record, service.inputs.path(record["sha256"])

    def blake3_of(path: Path) -> str | None:
        if _blake3 is None:
            return None
        h = _blake3()
        try:
            with open(path, "rb") as f:
                while block := f.read(READ_CHUNK):
                    h.update(block)
        except OSError:  # gone meanwhile: the hash stays unknown (the contract allows null)
            return None
        return "blake3:" + h.hexdigest()

    @route("GET", "/assets/{id}")
    async def get_asset(request: web.Request) -> web.Response:
        record, path = await find_asset(request.match_info["id"], request)
        if record.get("hash") is None:  # a job output's: hashed now
            record = {**record, "hash": await service.call(blake3_of, path)}
        return web.json_response(asset_view(record, request))

    @route("DELETE", "/assets/{id}", bodyless=True, permission="submit")
    async def delete_asset(request: web.Request) -> web.Response:
        asset_id = request.match_info["id"]
        if views.parse_output_asset_id(asset_id) is not None:
            raise V2Error(409, "asset_in_use", "a job's output goes with its job: delete the job")
        record = await service.call(records.asset, asset_id)
        who = auth.principal(request)
        if record is not None and not who.sees_all and record.get("owner") != who.name:
            raise ApiError(403, "forbidden", f"token '{who.name}' (role {who.role}) may only delete its own uploads")
        if not await service.call(records.delete_asset, asset_id):
            raise V2Error(404, "not_found", f"no asset '{asset_id[:64]}'")
        return web.Response(status=204)

    @route("GET", "/assets/{id}/content")
    async def content(request: web.Request) -> web.StreamResponse:
        record, path = await find_asset(request.match_info["id"], request)
        media = record.get("content_type") or "application/octet-stream"
        if not MEDIA_TYPE.fullmatch(media):  # (a record from before this check)
            media = "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": media, **SAFE_CONTENT_HEADERS})


def _feed(chunk: bytes, hasher, pending) -> None:
    """One chunk of an upload: hashed (blake3) and written to its pending input (on the service's pool)."""
    if hasher is not None:
        hasher.update(chunk)
    pending.write(chunk)
