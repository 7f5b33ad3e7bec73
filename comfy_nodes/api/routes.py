"""The /comfymq HTTP API: queueing (with copies and parameter sweeps), job records, batches, the queue's
pause switch, workers, stats, health and artifact downloads.

add_routes(routes, service, prefix="/comfymq") registers the handlers on a route table: ComfyUI's
PromptServer.instance.routes (which also serves them under /api/...) or a fresh app's (the standalone host,
tests). Every handler applies the site rules (Host, Origin, Content-Type: api/site_policy.py) and the token, and
answers errors as JSON {"error": {"type", "message"}} by itself (api/guards.py), so it needs no middleware of
ComfyUI's. Blocking store and broker calls run on the service's thread pool.

  POST   /comfymq/jobs                  queue one job, or many (count, sweep) committed all-or-nothing
  GET    /comfymq/jobs                  list: ?state=a,b &batch= &since= &until= (enqueue time, ms) &cursor=
                                        &limit=1..1000 &order=newest|oldest &prompt_id=
  GET    /comfymq/jobs/{id}             one job in full (prompt, workflow, history; `waiting` and `estimate` when
                                        pending: metrics/estimates.py)
  POST   /comfymq/jobs/{id}/cancel      pending|running -> cancelled   (body optional: {"reason": str})
  POST   /comfymq/jobs/{id}/retry       failed|cancelled -> pending
  DELETE /comfymq/jobs/{id}             removes a finished job's record (its files stay)
  (/comfymq/tasks... is the same API under its earlier name, kept for existing clients)
  GET    /comfymq/queue                 {"paused", "counts"};  POST /comfymq/queue/pause | /resume
  GET    /comfymq/batches/{id}          counts per state, total, done fraction, job ids (?cursor= &limit=
                                        &view=ids|summary)
  POST   /comfymq/batches/{id}/cancel   cancels every pending/running job of the batch, in one commit
  GET    /comfymq/workers               the broker's workers as a JSON list ([] without a broker)
  POST   /comfymq/workers/{id}/drain    body optional {"drain": false} to undrain
  POST   /comfymq/workers/refresh       asks workers for their capabilities again (body optional
                                        {"worker_id": id})
  GET    /comfymq/stats                 store stats + paused + workers online/busy/draining + broker
                                        {endpoint, public_key} | null
  GET    /comfymq/health                200 when the store takes writes, else 503; also without the token
                                        (then {"status"} only, for monitors)
  GET    /comfymq/artifacts/{job}/{name}  a file recorded on that job
  GET    /comfymq/openapi.json          the API described (OpenAPI 3.1: api/openapi.py)
  POST   /comfymq/inputs                upload a file a job uses (api/input_routes.py); GET /comfymq/inputs/{sha256}

POST /comfymq/jobs body (unknown keys are a 400 naming the key):
  prompt        API-format graph, JSON string or object (required)
  priority      int, default 1 (higher first)
  metadata      {"prompt_id"?, "create_time"?} only
  workflow      UI-format graph (object), kept so the job can be loaded back into the canvas
  count         1..max_jobs_per_request copies (10000); with count > 1 each copy gets fresh random seeds
  keep_seeds    true: copies keep the prompt's seeds
  sweep         {"<node_id>.<input>": [values...]}: one job per combination
  max_attempts  1..100 (default 3);  timeout: seconds per run (null = none);  owner: str
  batch_id      [A-Za-z0-9][A-Za-z0-9._:-]{0,127}; jobs of a count/sweep request get a new one if not given
  after         [job ids] (at most 64): the jobs run only once each of these has succeeded, and are cancelled
                (saying which) should one fail, be cancelled or deleted; a job that has failed or been cancelled, or
                one the host does not have, is a 400. An output reference to a job not done yet adds that job.
One request may create at most max_jobs_per_request jobs storing at most max_stored_bytes_per_request bytes of
prompts and workflows (api/limits.py): more is a 413 naming the limit, and nothing is queued.
A repeated metadata.prompt_id returns the existing job ("existed": true). With count or sweep the given
prompt_id is a prefix: job i (1-based) gets "<prompt_id>-0001"..., so the same request sent again returns
the same jobs; without one each job gets a fresh uuid4.
Answer: {"status": "queued", "jobs": [...], "waiting": [...], "batch_id"?, "existed"?}; a single job also comes
as "task" (the seed contract's view) and its "jobs" entry is the summary view. "waiting" says why no online worker
can run the job(s) now (no worker has joined or is online, a missing model or node class, all capable workers
draining; [] when one can): the job still waits for a worker that may come. With unrunnable="refuse" (config
unrunnable_jobs) such a request is a 409 {"error": {"type": "unrunnable", "message", "waiting"}} instead, and
nothing is queued.
A node input {"comfymq_input": "<sha256>", "name"?} names an uploaded file: it must be stored (else a 400 naming the
node, class_type, input and sha256) and is committed in its stored form, {"comfymq_input", "name", "size"}
(inputs/graph.py). Inside ComfyUI an upload input naming a file in ComfyUI's folders (LoadImage "photo.png") is
copied into the input store and committed the same way (inputs/local_files.py). A node input {"comfymq_output":
{"job": id, "index": N | "filename": name}} takes another job's output (inputs/outputs.py): a finished one's
file is stored at once; for one still pending or running the new job waits for it (its `after`).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import mimetypes
import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from .. import native
from ..inputs import graph as input_refs
from ..inputs.outputs import OutputResolver, is_output_reference, once_per_request, waits_on
from ..webhooks import deliveries as webhook_deliveries
from ..webhooks.targets import LABEL as WEBHOOKS_LABEL
from ..webhooks.targets import MAX_TARGETS, WebhookError, merge, notify_for, parse_targets
from . import auth, openapi, owners
from . import expand as ex
from .batching import Batcher, Outcome
from .compat_routes import health_status, parse_task, task_view
from .errors import ApiError, BadRequest, parse_json_object, read_body, read_optional_json_object
from .guards import protect
from .input_routes import add_input_routes
from .limits import RequestLimits
from .site_policy import SitePolicy
from .template_routes import add_template_routes
from .token_routes import add_token_routes
from .views import full_view, summary_view
from .webhook_routes import add_webhook_routes

log = logging.getLogger("comfymq.api")

TASK_FIELDS = (
    "prompt",
    "priority",
    "metadata",
    "workflow",
    "count",
    "keep_seeds",
    "sweep",
    "max_attempts",
    "timeout",
    "batch_id",
    "owner",
    "after",
    "webhooks",
)
MAX_AFTER = 64  # jobs one job may wait for (the store's kMaxAfter)
LIST_PARAMS = ("state", "batch", "since", "until", "cursor", "limit", "order", "prompt_id", "owner")
BATCH_PARAMS = ("cursor", "limit", "view")
JOB_ID_RE = re.compile(r"^[0-9a-f]{16}$")
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MS_RE = re.compile(r"^[0-9]{1,16}$")
MAX_TIMEOUT = 30 * 24 * 3600
MAX_OWNER = 256
WAIT_CHECKS = 64  # jobs of one request whose prompts the answer's `waiting` hint looks at
OWN_SCAN = 20_000  # jobs one list call of a submit token looks through for its own


# ---- input checks ----------------------------------------------------------------------------------------


def check_job_id(job_id: str) -> str:
    if not JOB_ID_RE.match(job_id):
        raise ApiError(404, "not_found", f"no job '{job_id[:64]}' (job ids are 16 lowercase hex digits)")
    return job_id


def check_batch_id(value) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"batch_id must be a string, got {type(value).__name__}")
    if not BATCH_ID_RE.match(value):
        raise BadRequest(
            "batch_id must be 1 to 128 characters: letters, digits and . _ : - (starting with a letter or digit)"
        )
    return value


class Submission:
    """A checked POST /comfymq/jobs body."""

    def __init__(self, body: dict, limits: RequestLimits | None = None):
        self.limits = limits or RequestLimits()
        for key in body:
            if key not in TASK_FIELDS:
                raise BadRequest(f"unknown field '{key}' (allowed: {', '.join(TASK_FIELDS)})")
        seed = parse_task({k: body[k] for k in ("prompt", "priority", "metadata") if k in body})
        self.prompt = seed["prompt"]
        self.priority = seed["priority"]
        self.metadata = seed["metadata"]
        meta = self.metadata or {}
        pid = meta.get("prompt_id")
        if pid is not None and not isinstance(pid, str):
            raise BadRequest(f"metadata.prompt_id must be a string, got {type(pid).__name__}")
        self.prompt_id = pid or None
        self.workflow = body.get("workflow")
        if self.workflow is not None and not isinstance(self.workflow, dict):
            raise BadRequest(
                f"workflow must be an object (ComfyUI's UI-format graph), got {type(self.workflow).__name__}"
            )
        try:
            self.count = ex.check_count(body.get("count"), self.limits.max_jobs_per_request)
        except ex.TooManyJobs as e:
            raise ApiError(413, "too_many_jobs", str(e)) from None
        except ex.ExpansionError as e:
            raise BadRequest(str(e)) from None
        self.keep_seeds = body.get("keep_seeds", False)
        if not isinstance(self.keep_seeds, bool):
            raise BadRequest(f"keep_seeds must be true or false, got {type(self.keep_seeds).__name__}")
        self.sweep = body.get("sweep")
        if self.sweep == {}:  # sweeps nothing: a plain request
            self.sweep = None
        if self.sweep is not None and not isinstance(self.sweep, dict):
            raise BadRequest(
                f'sweep must be an object {{"<node_id>.<input>": [values...]}}, got {type(self.sweep).__name__}'
            )
        ma = body.get("max_attempts", 3)
        if isinstance(ma, bool) or not isinstance(ma, int):
            raise BadRequest(f"max_attempts must be an integer, got {type(ma).__name__}")
        if not 1 <= ma <= 100:
            raise BadRequest("max_attempts must be between 1 and 100")
        self.max_attempts = ma
        timeout = body.get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise BadRequest(f"timeout must be a number of seconds, got {type(timeout).__name__}")
            if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
                raise BadRequest(f"timeout must be more than 0 and at most {MAX_TIMEOUT} seconds (30 days)")
        self.timeout = timeout
        batch = body.get("batch_id")
        self.batch_id = check_batch_id(batch) if batch is not None else None
        owner = body.get("owner")
        if owner is not None:
            if not isinstance(owner, str):
                raise BadRequest(f"owner must be a string, got {type(owner).__name__}")
            if len(owner.encode("utf-8", "surrogatepass")) > MAX_OWNER or any(ord(c) < 32 for c in owner):
                raise BadRequest(f"owner must be at most {MAX_OWNER} bytes without control characters")
        self.owner = owner
        after = body.get("after", [])
        if not isinstance(after, list) or not all(isinstance(a, str) and JOB_ID_RE.match(a) for a in after):
            raise BadRequest("after must be a list of job ids (16 lowercase hex digits each)")
        if len(set(after)) > MAX_AFTER:
            raise BadRequest(f"after names {len(set(after))} jobs: a job may wait for at most {MAX_AFTER}")
        self.after = sorted(set(after))
        try:
            self.webhooks = parse_targets(body.get("webhooks"))
        except WebhookError as e:
            raise BadRequest(str(e)) from None
        self.labels = {WEBHOOKS_LABEL: self.webhooks} if self.webhooks else {}
        self.notify = bool(self.webhooks)  # (the route sets it too when the host has webhooks of its own)

    def after_for(self, prompt) -> list[str]:
        """The jobs a job of this request waits for: `after`, and the unfinished jobs its output references name."""
        waits = waits_on(prompt)
        if not waits:
            return self.after
        after = sorted(set(self.after) | set(waits))
        if len(after) > MAX_AFTER:
            raise BadRequest(f"the job would wait for {len(after)} jobs: at most {MAX_AFTER}")
        return after

    @property
    def expands(self) -> bool:
        return self.count > 1 or self.sweep is not None

    def common(self) -> dict:
        """enqueue() arguments every job of this request shares."""
        common = {
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "owner": self.owner,
        }
        if self.labels:
            common["labels"] = self.labels
        if self.notify:
            common["notify"] = True
        return common


def graph_text(prompt):
    """A prompt as the JSON text the store is handed: what the native module makes of a dict (json.dumps,
    ensure_ascii=False, allow_nan=False), made once by a caller that hands it over more than once. A value that is not
    JSON stays as it is, for the native module to refuse in its own words."""
    if not isinstance(prompt, dict):
        return prompt
    try:
        return json.dumps(prompt, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return prompt


def _text_bytes(value) -> int:
    """Bytes of value as JSON text (its size only: whether the store takes it is the store's to say)."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def stored_bytes_per_job(prompt: dict, axes, seeded: int, workflow_text: str | None) -> int:
    """An upper bound of the prompt + workflow bytes one job of this expansion stores: the prompt as the store is
    handed it (json.dumps, as the native module turns a dict into text), plus the longest value of every sweep
    axis and a full-width seed for each of `seeded` seed inputs, plus the workflow text. Computed before any job
    is built, so a refusal costs nothing."""
    text = _text_bytes(prompt)
    extra = sum(max(_text_bytes(v) for v in a.values) for a in axes) + seeded * len(str(ex.SEED_LIMIT))
    return text + extra + (len(workflow_text.encode("utf-8", "surrogatepass")) if workflow_text else 0)


def plan_jobs(sub: Submission) -> tuple[list[dict], list[dict], str]:
    """The enqueue_many() dicts for an expanding request, the per-job extras for the answer, and the batch
    id. Runs on the pool (it parses and copies prompts). The jobs share every node they do not change, and the
    workflow text, so what this holds stays small next to what the store is handed; the limits bound the rest
    before anything is built (TooManyJobs)."""
    n = native.load()
    n.validate_prompt(sub.prompt)  # the core's own message, not one per copy
    prompt = ex.prompt_object(sub.prompt)
    axes = ex.parse_sweep(prompt, sub.sweep)
    total = ex.job_count(sub.count, axes, sub.limits.max_jobs_per_request)
    workflow_text = None
    if sub.workflow is not None:
        try:
            workflow_text = json.dumps(sub.workflow, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise BadRequest(f"workflow is not valid JSON: {e}") from None
    swept = {(a.node_id, a.input) for a in axes}
    seeded = 0 if sub.keep_seeds or sub.count == 1 else len(ex.seed_inputs(prompt, exclude=swept))
    per_job = stored_bytes_per_job(prompt, axes, seeded, workflow_text)
    if sub.labels:  # kept in every job's record too (webhook targets, the template and its params)
        per_job += _text_bytes(sub.labels)
    ex.check_size(per_job, total, sub.limits.max_stored_bytes_per_request)
    jobs = ex.expand(
        prompt, count=sub.count, axes=axes, keep_seeds=sub.keep_seeds, max_jobs=sub.limits.max_jobs_per_request
    )
    batch_id = sub.batch_id or uuid.uuid4().hex
    # "<prefix>-0001"...: the suffix is the job's place in its batch (the worker passes it to the Job Info node).
    ids = ex.derived_prompt_ids(sub.prompt_id or uuid.uuid4().hex, total)
    create_time = (sub.metadata or {}).get("create_time")
    common = sub.common()
    items, extras = [], []
    for job, pid in zip(jobs, ids, strict=True):
        item = {"prompt": job.prompt, "prompt_id": pid, "batch_id": batch_id, **common}
        after = sub.after_for(job.prompt)
        if after:
            item["after"] = after
        if workflow_text is not None:
            item["workflow"] = workflow_text
        if create_time is not None:
            item["metadata"] = {"create_time": create_time}
        items.append(item)
        extra = {}
        if axes:
            extra["params"] = job.params
        if sub.count > 1:
            extra["copy"] = job.copy + 1
        if job.seeds:
            extra["seeds"] = job.seeds
        extras.append(extra)
    return items, extras, batch_id


def _one_value(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter '{name}' is given more than once")
    return values[0] if values else None


def _check_params(request: web.Request, allowed: tuple[str, ...]) -> None:
    for key in request.query:
        if key not in allowed:
            raise BadRequest(f"unknown query parameter '{key}' (allowed: {', '.join(allowed)})")


def _limit(request: web.Request, default: int, maximum: int = 1000) -> int:
    raw = _one_value(request, "limit")
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw.strip()):
        raise BadRequest(f"limit must be an integer from 1 to {maximum}, got '{raw[:32]}'")
    value = int(raw)
    if not 1 <= value <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}, got {value}")
    return value


def _cursor(request: web.Request) -> str | None:
    raw = _one_value(request, "cursor")
    if raw is None or raw == "":
        return None
    if not JOB_ID_RE.match(raw):
        raise BadRequest(f"cursor '{raw[:32]}' is not a job id (use next_cursor from the previous page)")
    return raw


def parse_list_query(request: web.Request) -> dict:
    _check_params(request, LIST_PARAMS)
    q: dict = {}
    states = [s.strip() for v in request.query.getall("state", []) for s in v.split(",") if s.strip()]
    if request.query.getall("state", []) and not states:
        raise BadRequest("state is empty (give one or more of: " + ", ".join(native.load().JOB_STATES) + ")")
    for s in states:
        if s not in native.load().JOB_STATES:
            raise BadRequest(f"unknown state '{s[:32]}' (allowed: {', '.join(native.load().JOB_STATES)})")
    if states:
        q["state"] = sorted(set(states))
    batch = _one_value(request, "batch")
    if batch is not None:
        if not batch:
            raise BadRequest("batch is empty")
        q["batch_id"] = batch
    owner = _one_value(request, "owner")
    if owner is not None:
        if not owner or len(owner) > MAX_OWNER:
            raise BadRequest(f"owner must be 1 to {MAX_OWNER} characters")
        q["owner"] = owner
    for name in ("since", "until"):
        raw = _one_value(request, name)
        if raw is not None:
            if not MS_RE.match(raw.strip()):
                raise BadRequest(
                    f"{name} must be a time in milliseconds since the epoch (an integer >= 0), got '{raw[:32]}'"
                )
            q[name] = int(raw)
    q["cursor"] = _cursor(request)
    q["limit"] = _limit(request, 100)
    order = _one_value(request, "order") or "newest"
    if order not in ("newest", "oldest"):
        raise BadRequest(f"order must be 'newest' or 'oldest', got '{order[:32]}'")
    q["newest_first"] = order == "newest"
    pid = _one_value(request, "prompt_id")
    if pid is not None:
        q["prompt_id"] = pid
    return q


def _matches(job: dict, q: dict) -> bool:
    if "state" in q and job["state"] not in q["state"]:
        return False
    if "batch_id" in q and job.get("batch_id") != q["batch_id"]:
        return False
    if "since" in q and job["enqueued_at"] < q["since"]:
        return False
    if "until" in q and job["enqueued_at"] >= q["until"]:
        return False
    return True


def _safe_relative(name: str) -> bool:
    """A relative path with no '..', no empty or '.' part, no NUL or backslash, not absolute."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or len(name) > 4096:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def resolve_artifact(root: Path, relative: str) -> Path | None:
    """root/relative as a real path inside root's real path and a regular file, else None (symlinks that
    lead out of the root, missing files, directories)."""
    if not _safe_relative(relative):
        return None
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, relative))
    if not full.startswith(base.rstrip(os.sep) + os.sep) or not os.path.isfile(full):
        return None
    return Path(full)


def resolve_inputs(
    prompt,
    sweep,
    store,
    local: input_refs.ValueResolver | None = None,
    outputs: input_refs.ValueResolver | None = None,
) -> tuple:
    """(prompt, sweep) as the host commits them: every input reference in its stored form, and with `local`, upload
    inputs naming a file in ComfyUI's folders too (inputs/graph.py); sweep values in the place they go. A
    BadReference (a 400) names the node, its class_type, the input and the sha256 or file. Runs on the pool (it
    reads and copies files). With `outputs`, another job's output too (inputs/outputs.py: one not done yet stays a
    reference, which makes the job wait for it). A sweep that does not fit the prompt is left for the expansion
    to refuse."""
    return _resolve_inputs(prompt, sweep, store, local, outputs)


def _resolve_inputs(prompt, sweep, store, local, outputs) -> tuple:
    outputs = once_per_request(outputs)  # an output named by many values is copied once
    prompt = input_refs.resolve_prompt(prompt, store, local, outputs)
    if not isinstance(sweep, dict) or not sweep or (local is None and not _mentions_inputs(sweep)):
        return prompt, sweep
    try:
        graph = ex.prompt_object(prompt)
        axes = ex.parse_sweep(graph, sweep)
    except ex.ExpansionError:
        return prompt, sweep
    resolve = input_refs.value_resolver(store, local, outputs)
    out = None
    for axis in axes:
        class_type = graph[axis.node_id].get("class_type")
        where = input_refs.Place(axis.node_id, class_type if isinstance(class_type, str) else "?", axis.input)
        values = [resolve(v, where) for v in axis.values]
        if any(a is not b for a, b in zip(values, axis.values, strict=True)):
            out = out if out is not None else dict(sweep)
            out[axis.key] = values
    return prompt, sweep if out is None else out


def _mentions_inputs(sweep: dict) -> bool:
    return any(
        input_refs.is_reference(v) or is_output_reference(v)
        for values in sweep.values()
        if isinstance(values, list)
        for v in values
    )


# ---- routes ----------------------------------------------------------------------------------------------


LOOPBACK_ONLY = SitePolicy()


def add_routes(
    routes: web.RouteTableDef,
    service,
    *,
    prefix: str = "/comfymq",
    token: str | None = None,
    site: SitePolicy | None = LOOPBACK_ONLY,
    limits: RequestLimits | None = None,
    unrunnable: str = "wait",
    local_inputs: input_refs.ValueResolver | None = None,
    seed_routes: bool = False,
    object_info=None,
) -> None:
    """Registers the /comfymq API (see the module doc) on `routes`, answering from `service`.

    Every handler itself applies the site rules of `site` (api/site_policy.py; default: an API on loopback with
    nothing allowed on top) and, with a token, requires `Authorization: Bearer <token>` (401 otherwise): inside
    ComfyUI that guards these routes, and their /api/... copies, without a middleware on ComfyUI's app. site=None
    leaves the site rules to the app's own middleware (the standalone host). `limits`: api/limits.py.
    `unrunnable`: "wait" queues a job no online worker can run now (its answer's `waiting` says why), "refuse"
    answers 409 "unrunnable" with the reasons and queues nothing (config key unrunnable_jobs). `local_inputs`:
    inside ComfyUI, inputs/local_files.LocalFiles, so upload inputs naming a file in ComfyUI's folders are copied
    into the input store at enqueue (input references are resolved in every case: resolve_inputs). `seed_routes`:
    the app serves the seed contract (/tasks, /health) too, which GET <prefix>/openapi.json then describes.
    `object_info`: an async callable giving a ComfyUI's /object_info (or None), for templates' limits."""
    if unrunnable not in ("wait", "refuse"):
        raise ValueError(f"unrunnable must be 'wait' or 'refuse', got {unrunnable!r}")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    store_call = service.call
    limits = limits or RequestLimits()
    add_input_routes(routes, service, prefix=prefix, token=token, site=site, limits=limits)
    add_webhook_routes(routes, service, prefix=prefix, token=token, site=site)
    # another job's output named as an input: copied into the input store at enqueue (inputs/outputs.py)
    job_outputs = OutputResolver(service.store, service.artifact_root, service.inputs, limits.max_input_bytes)

    def handle(method: str, path: str, permission: str | None = None):
        """Registers fn at prefix + path; a /jobs path also at /tasks, the API's earlier name (same handler).
        permission: what a token needs (auth.requires; default: read for GET, admin for the rest)."""
        paths = [path] + (["/tasks" + path[len("/jobs") :]] if path.startswith("/jobs") else [])

        def register(fn):
            if permission:
                auth.requires(permission)(fn)
            wrapped = protect(fn, site=site, token=token)
            for p in paths:
                if method == "GET":
                    routes.get(prefix + p)(wrapped)  # HEAD too
                else:
                    routes.route(method, prefix + p)(wrapped)
            return fn

        return register

    def why_unrunnable(prompts: list) -> list[str]:
        """Why no online worker can run these prompts now (each reason once; [] when one can run each, or
        without a broker). Refusing checks them all; waiting checks the first WAIT_CHECKS (the answer's hint)."""
        if service.broker is None:
            return []
        reasons: dict[str, None] = {}
        for prompt in prompts if unrunnable == "refuse" else prompts[:WAIT_CHECKS]:
            for r in service.broker.explain_prompt(prompt):
                reasons.setdefault(r)
        return list(reasons)

    def why_waiting(after: list[str]) -> list[str]:
        """The jobs among `after` that have not succeeded yet, as waiting reasons (the broker's words)."""
        reasons = []
        for job in lookup_jobs(after).values():
            if job["state"] != "succeeded":
                reasons.append(f"waits for job {job['id']} ({job['state']}) to succeed")
        return reasons

    def unrunnable_reasons(prompts: list, after: list[str] = ()) -> list[str]:
        """Why the job(s) will not run at once: the jobs they wait for, then why no online worker can run them. Only
        the second makes a job unrunnable (refused with unrunnable="refuse"). Blocking: on the pool."""
        waiting = why_unrunnable(prompts)
        if waiting and unrunnable == "refuse":
            raise ApiError(
                409,
                "unrunnable",
                "no online worker can run this job, and this host refuses such jobs (unrunnable_jobs = refuse): "
                + "; ".join(waiting[:5]),
                extra={"waiting": waiting},
            )
        return (why_waiting(list(after)) if after else []) + waiting

    async def unrunnable_check(prompts: list, after: list[str] = ()) -> list[str]:
        return await store_call(unrunnable_reasons, prompts, list(after))

    async def get_job(job_id: str, with_prompt: bool = False) -> dict:
        return await store_call(service.store.get, job_id, with_prompt=with_prompt)

    def broker_or_503():
        if service.broker is None:
            raise ApiError(503, "no_broker", "this host runs no broker: there are no workers to manage")
        return service.broker

    async def workers_list() -> list:
        if service.broker is None:
            return []
        return await store_call(service.broker.workers)

    def lookup_jobs(ids: list[str]) -> dict[str, dict]:
        """The jobs that still exist among ids (one pool call for many reads)."""
        found = {}
        for job_id in ids:
            try:
                found[job_id] = service.store.get(job_id, with_prompt=False)
            except KeyError:
                pass
        return found

    async def batch_jobs(batch_id: str, states=None) -> list[dict]:
        jobs, cursor = [], None
        while True:
            page = await store_call(
                service.store.list, batch_id=batch_id, state=states, cursor=cursor, limit=1000, newest_first=False
            )
            jobs.extend(page["jobs"])
            cursor = page["next_cursor"]
            if not cursor:
                return jobs

    # -- tasks --

    @handle("GET", "/metrics")
    async def metrics(request: web.Request) -> web.Response:
        text = await store_call(service.metrics.scrape)
        return web.Response(
            text=text, content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-store"}
        )

    @handle("POST", "/jobs", "submit")
    async def post_tasks(request: web.Request) -> web.Response:
        started = time.monotonic()
        answer = await enqueue_jobs(request)
        service.metrics.observe_enqueue("jobs", time.monotonic() - started, answer.get("count") or len(answer["jobs"]))
        return web.json_response(answer)

    def check_names(request: web.Request, sub: Submission) -> None:
        """What a request names that must not be another owner's (a submit token's jobs, batch and prompt_ids are its
        own), then its input references in their stored form (resolve_inputs). Blocking: on the pool."""
        if not owners.lists_all(request):  # what it names of others' (jobs, a batch, prompt_ids) is not its own
            named = set(sub.after) | owners.refs_of(sub.prompt, sub.sweep)
            owners.check_named_jobs(service.store, request, named, "after")
            owners.check_batch(service.store, request, sub.batch_id)
        if sub.prompt_id:
            owners.check_prompt_ids(service.store, request, [sub.prompt_id])
        sub.prompt, sub.sweep = resolve_inputs(sub.prompt, sub.sweep, service.inputs, local_inputs, job_outputs)

    def plan_single(request: web.Request, sub: Submission) -> tuple:
        """A one-job request checked and resolved (check_names): (its prompt as the JSON text the store takes, the
        jobs it waits for, why it will not run at once: a 409 when this host refuses unrunnable jobs). Blocking: on
        the pool."""
        check_names(request, sub)
        after = sub.after_for(sub.prompt)
        text = graph_text(sub.prompt)  # once, for the broker's check and the commit (each would make its own)
        return text, after, unrunnable_reasons([text])

    def job_item(sub: Submission, prompt, after: list[str]) -> dict:
        """The enqueue() arguments of a one-job request (an enqueue_many() item); prompt: plan_single's text."""
        return {
            "prompt": prompt,
            "workflow": sub.workflow,
            "metadata": sub.metadata,
            "batch_id": sub.batch_id,
            "after": after or None,
            **sub.common(),
        }

    def read_new(results: list[dict]) -> dict[str, dict]:
        """The jobs one enqueue_many() made, read in one call: one commit gives its new jobs consecutive ids, so they
        are the page after the id before the first (what is not there as expected is left to read_back)."""
        new = [r["id"] for r in results if not r["existed"]][:1000]
        if len(new) < 2:
            return {}
        page = service.store.list(cursor=f"{int(new[0], 16) - 1:016x}", limit=len(new), newest_first=False)
        wanted = set(new)
        return {j["id"]: j for j in page["jobs"] if j["id"] in wanted}

    def read_back(result: dict, waiting: list[str], job: dict | None = None) -> tuple[dict, list[str]]:
        """The job an enqueue made or found (read now unless given), with why it waits."""
        if job is None:
            job = service.store.get(result["id"], with_prompt=False)
        if job.get("after"):  # (the job's own: an existing job keeps the `after` it was queued with)
            waiting = why_waiting(job["after"]) + waiting
        return job, waiting

    def commit_single(sub: Submission, prompt, after: list[str], waiting: list[str]) -> tuple[dict, dict, list[str]]:
        """Enqueues a request planned by plan_single (durable when it returns) and reads the job back. Blocking: on
        the pool."""
        item = job_item(sub, prompt, after)
        del item["prompt"]
        result = service.store.enqueue(prompt, **item)
        return (result, *read_back(result, waiting))

    def enqueue_singles(entries: list[tuple[web.Request, Submission]]) -> list[Outcome]:
        """plan_single and commit_single for the one-job requests of a batch (api/batching.py), in one trip to the
        pool: the planned ones enqueued in one commit (enqueue_many: one sync), each read back. Each request gets what
        it would get alone: its own refusal; should the shared commit refuse a job (all or none: it then changed
        nothing), each commits alone (value (None, plan): commit_single's arguments) and hears its own answer.
        Blocking: on the pool."""
        outcomes: list[Outcome | None] = [None] * len(entries)
        planned = []
        for i, (request, sub) in enumerate(entries):
            try:
                planned.append((i, sub, *plan_single(request, sub)))
            except Exception as e:  # noqa: BLE001 - its own refusal, raised in its own request
                outcomes[i] = Outcome(error=e)
        if len(planned) == 1:
            i, sub, *plan = planned[0]
            try:
                outcomes[i] = Outcome(commit_single(sub, *plan))
            except Exception as e:  # noqa: BLE001
                outcomes[i] = Outcome(error=e)
        elif planned:
            try:
                results = service.store.enqueue_many([job_item(*p[1:4]) for p in planned])
            except (ValueError, native.load().DiskFullError):  # one job refused (or too much at once) fails the
                for i, _sub, *plan in planned:  # commit for all and changes nothing: each commits alone
                    outcomes[i] = Outcome((None, plan))
                return outcomes
            except Exception as e:  # noqa: BLE001 - the store's own failure: each request hears it
                for i, *_plan in planned:
                    outcomes[i] = Outcome(error=e)
                return outcomes
            jobs = read_new(results)
            for (i, _sub, _text, _after, waiting), result in zip(planned, results, strict=True):
                try:
                    outcomes[i] = Outcome((result, *read_back(result, waiting, jobs.get(result["id"]))))
                except Exception as e:  # noqa: BLE001
                    outcomes[i] = Outcome(error=e)
        return outcomes

    singles = Batcher(store_call, enqueue_singles)

    async def enqueue_jobs(request: web.Request) -> dict:
        raw = await read_body(request, limits)
        sub = Submission(parse_json_object(raw), limits)
        sub.owner = owners.owner_for(request, sub.owner)  # a submit token's jobs are its own
        sub.notify = notify_for(service, sub.webhooks)
        if not sub.expands:
            if service.owner_gate.applies(request, sub.owner):  # its limits are checked and held around the commit
                planned = await store_call(plan_single, request, sub)
                async with service.owner_gate.admit(request, sub.owner, 1):
                    result, job, waiting = await store_call(commit_single, sub, *planned)
            else:  # the same steps in one trip to the pool, shared with the requests that came meanwhile
                done = await singles.submit((request, sub), len(raw))
                if done[0] is None:  # the shared commit refused another job: this one commits alone
                    done = await store_call(commit_single, sub, *done[1])
                result, job, waiting = done
            if result["existed"]:
                owners.check_found(request, [job])
            entry = summary_view(job, prefix)
            entry["existed"] = result["existed"]
            body = {
                "status": "queued",
                "task": task_view(job, prompt=sub.prompt),
                "jobs": [entry],
                "waiting": waiting,
            }
            if job.get("batch_id"):
                body["batch_id"] = job["batch_id"]
            if result["existed"]:
                body["existed"] = True
            return body
        await store_call(check_names, request, sub)
        try:
            items, extras, batch_id = await store_call(plan_jobs, sub)
        except ex.TooManyJobs as e:
            raise ApiError(413, "too_many_jobs", str(e)) from None
        if sub.prompt_id and not owners.lists_all(request):
            await store_call(owners.check_prompt_ids, service.store, request, [i["prompt_id"] for i in items])
        after = sorted({a for item in items[:WAIT_CHECKS] for a in item.get("after", ())})
        waiting = await unrunnable_check([item["prompt"] for item in items], after)
        async with service.owner_gate.admit(request, sub.owner, len(items)):
            results = await store_call(service.store.enqueue_many, items)
        entries = []
        for item, extra, r in zip(items, extras, results, strict=True):
            entry = {
                "id": r["id"],
                "state": "pending",
                "prompt_id": item["prompt_id"],
                "batch_id": batch_id,
                "existed": r["existed"],
                **extra,
            }
            entries.append(entry)
        existed = [e for e in entries if e["existed"]]
        if existed:  # show what is really there, not what was asked for
            found = await store_call(lookup_jobs, [e["id"] for e in existed])
            owners.check_found(request, found.values())
            for e in existed:
                job = found.get(e["id"])
                if job is not None:  # else deleted in the meantime
                    e.update(state=job["state"], prompt_id=job["prompt_id"], batch_id=job.get("batch_id"))
        body = {
            "status": "queued",
            "batch_id": entries[0]["batch_id"] if existed else batch_id,
            "count": len(entries),
            "jobs": entries,
            "waiting": waiting,
        }
        if existed and len(existed) == len(entries):
            body["existed"] = True
        return body

    async def submit_rendered(request, prompts, body, labels, template_hooks, combos) -> dict:
        """Queues the prompts a template made (one per parameter combination) as POST /comfymq/jobs would, `body`
        holding that request's other fields (count, priority, ...), in one commit and one batch; each job's labels
        get labels[i] and the webhooks of the request and the template."""
        subs = [Submission({**body, "prompt": p}, limits) for p in prompts]
        if not owners.lists_all(request):  # what it names of others' is not its own (as on POST /comfymq/jobs)
            named = set(subs[0].after).union(*(owners.refs_of(p) for p in prompts))
            await store_call(owners.check_named_jobs, service.store, request, named, "after")
            await store_call(owners.check_batch, service.store, request, subs[0].batch_id)
        total = sum(s.count for s in subs)
        if total > limits.max_jobs_per_request:
            raise ApiError(413, "too_many_jobs", f"{total} jobs: at most {limits.max_jobs_per_request} per request")
        hooks = merge(subs[0].webhooks, template_hooks)
        if len(hooks) > MAX_TARGETS:
            raise BadRequest(
                f"the template and the request name {len(hooks)} webhook targets together: at most {MAX_TARGETS}"
            )
        items, extras = [], []
        for sub, label, params in zip(subs, labels, combos, strict=True):
            sub.prompt, _ = await store_call(
                resolve_inputs, sub.prompt, None, service.inputs, local_inputs, job_outputs
            )
            sub.labels = {**label, **({WEBHOOKS_LABEL: hooks} if hooks else {})}
            sub.notify = notify_for(service, hooks)
            try:
                planned, extra, _ = await store_call(plan_jobs, sub)
            except ex.TooManyJobs as e:
                raise ApiError(413, "too_many_jobs", str(e)) from None
            for x in extra:
                x["params"] = params
            items += planned
            extras += extra
        after = sorted({a for item in items[:WAIT_CHECKS] for a in item.get("after", ())})
        waiting = await unrunnable_check([item["prompt"] for item in items], after)
        async with service.owner_gate.admit(request, subs[0].owner, len(items)):
            results = await store_call(service.store.enqueue_many, items)
        entries = [
            {
                "id": r["id"],
                "state": "pending",
                "prompt_id": item["prompt_id"],
                "batch_id": item["batch_id"],
                "existed": r["existed"],
                **extra,
            }
            for item, extra, r in zip(items, extras, results, strict=True)
        ]
        return {
            "status": "queued",
            "batch_id": items[0]["batch_id"],
            "count": len(entries),
            "jobs": entries,
            "waiting": waiting,
        }

    add_template_routes(handle, service, prefix=prefix, limits=limits, object_info=object_info, submit=submit_rendered)
    add_token_routes(handle, service, limits=limits)

    api_document = openapi.document("/comfymq", seed_routes=seed_routes)

    @handle("GET", "/openapi.json")
    async def openapi_document(request: web.Request) -> web.Response:
        return web.json_response(api_document)

    @handle("GET", "/jobs")
    async def list_tasks(request: web.Request) -> web.Response:
        q = parse_list_query(request)
        if "prompt_id" in q:
            if q["cursor"]:
                raise BadRequest("prompt_id finds at most one job: it takes no cursor")
            try:
                job = await store_call(service.store.get_by_prompt_id, q["prompt_id"], with_prompt=False)
                jobs = [job] if _matches(job, q) and owners.sees(request, job) else []
            except KeyError:
                jobs = []
            return web.json_response({"jobs": [summary_view(j, prefix) for j in jobs], "next_cursor": None})
        if not owners.lists_all(request) or "owner" in q:  # its own jobs only, or one owner's: page by page
            found, cursor = await store_call(own_jobs, request, q)
            return web.json_response({"jobs": [summary_view(j, prefix) for j in found], "next_cursor": cursor})
        page = await store_call(
            service.store.list,
            state=q.get("state"),
            batch_id=q.get("batch_id"),
            since=q.get("since"),
            until=q.get("until"),
            cursor=q["cursor"],
            limit=q["limit"],
            newest_first=q["newest_first"],
        )
        return web.json_response(
            {"jobs": [summary_view(j, prefix) for j in page["jobs"]], "next_cursor": page["next_cursor"]}
        )

    def own_jobs(request: web.Request, q: dict) -> tuple[list, str | None]:
        """The list's page for a submit token (its own jobs) or of one owner (?owner=), among at most OWN_SCAN jobs
        per call (a cursor then goes on from the last one looked at)."""
        found, scanned, cursor = [], 0, q["cursor"]
        while len(found) < q["limit"] and scanned < OWN_SCAN:
            page = service.store.list(
                state=q.get("state"),
                batch_id=q.get("batch_id"),
                since=q.get("since"),
                until=q.get("until"),
                cursor=cursor,
                limit=1000,
                newest_first=q["newest_first"],
            )
            for j in page["jobs"]:
                scanned += 1
                cursor = j["id"]
                if owners.sees(request, j) and q.get("owner") in (None, j.get("owner")):
                    found.append(j)
                    if len(found) >= q["limit"]:
                        return found, j["id"]
            if not page["next_cursor"]:
                return found, None
        return found, cursor

    async def job_for(request: web.Request, job_id: str, with_prompt: bool = False) -> dict:
        """The job, once the request's token may see it (a submit token: its own only)."""
        job = await get_job(job_id, with_prompt=with_prompt)
        owners.check_job(request, job)
        return job

    @handle("GET", "/jobs/{id}")
    async def get_task(request: web.Request) -> web.Response:
        job = await job_for(request, check_job_id(request.match_info["id"]), with_prompt=True)
        view = full_view(job, prefix)
        if job["state"] == "pending":
            try:
                view["waiting"] = await store_call(service.waiting_reasons, job["id"], job.get("owner"))
            except Exception as e:  # noqa: BLE001 - the record is still worth answering with
                log.debug("explain %s failed: %s", job["id"], e)
                view["waiting"] = []
            if not view["waiting"] and job.get("after"):  # (no broker to say it: the jobs it waits for)
                view["waiting"] = await store_call(why_waiting, job["after"])
            view["estimate"] = await store_call(service.estimates.estimate, job)  # null: nothing measured yet
        view["webhooks"] = await store_call(webhook_deliveries.for_job, service.store, job["id"])
        if auth.principal(request).role != "admin":  # receivers' URLs are the admin's to know in full
            view["webhooks"] = [webhook_deliveries.redacted(d) for d in view["webhooks"]]
        return web.json_response({"job": view})

    @handle("POST", "/jobs/{id}/cancel", "submit")
    async def cancel_task(request: web.Request) -> web.Response:
        job_id = check_job_id(request.match_info["id"])
        await job_for(request, job_id)
        body = await read_optional_json_object(request, limits)
        for key in body:
            if key != "reason":
                raise BadRequest(f"unknown field '{key}' (allowed: reason)")
        reason = body.get("reason", "cancelled over the API")
        if not isinstance(reason, str):
            raise BadRequest(f"reason must be a string, got {type(reason).__name__}")
        await store_call(service.store.cancel, job_id, reason)
        return web.json_response({"job": summary_view(await get_job(job_id), prefix)})

    @handle("POST", "/jobs/{id}/retry", "submit")
    async def retry_task(request: web.Request) -> web.Response:
        job_id = check_job_id(request.match_info["id"])
        job = await job_for(request, job_id)
        await read_optional_json_object(request, limits)
        async with service.owner_gate.admit(request, job.get("owner"), 1):  # a retry makes a pending job again
            await store_call(service.store.retry, job_id)
        return web.json_response({"job": summary_view(await get_job(job_id), prefix)})

    @handle("DELETE", "/jobs/{id}", "submit")
    async def delete_task(request: web.Request) -> web.Response:
        job_id = check_job_id(request.match_info["id"])
        await job_for(request, job_id)
        if service.webhooks is not None:  # its last ending's deliveries made first: they need its labels
            try:
                await store_call(service.webhooks.settle, job_id)
            except Exception as e:  # noqa: BLE001 - the delete goes on; the Deliverer tells the host's own targets
                log.warning("webhooks of job %s before its delete: %s", job_id, e)
        await store_call(service.store.delete, job_id)
        return web.json_response({"deleted": job_id})

    # -- queue --

    async def paused_answer() -> web.Response:
        stats = await store_call(service.store.stats)
        return web.json_response({"paused": stats["paused"], "counts": stats["counts"]})

    @handle("GET", "/queue")
    async def queue_state(request: web.Request) -> web.Response:
        return await paused_answer()

    @handle("POST", "/queue/pause")
    async def pause(request: web.Request) -> web.Response:
        await store_call(service.store.pause)
        return await paused_answer()

    @handle("POST", "/queue/resume")
    async def resume(request: web.Request) -> web.Response:
        await store_call(service.store.resume)
        return await paused_answer()

    # -- batches --

    @handle("GET", "/batches/{id}")
    async def get_batch(request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        _check_params(request, BATCH_PARAMS)
        cursor = _cursor(request)
        limit = _limit(request, 1000)
        view = _one_value(request, "view") or "ids"
        if view not in ("ids", "summary"):
            raise BadRequest(f"view must be 'ids' or 'summary', got '{view[:32]}'")
        jobs = await batch_jobs(batch_id)
        if not jobs:
            raise ApiError(404, "not_found", f"no batch '{batch_id[:128]}'")
        for j in jobs:  # a submit token: its own batches only
            owners.check_job(request, j)
        counts = {s: 0 for s in native.load().JOB_STATES}
        for j in jobs:
            counts[j["state"]] += 1
        finished = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        ids = [j["id"] for j in jobs]  # ascending: ids follow enqueue order
        start = bisect.bisect_right(ids, cursor) if cursor else 0
        page = jobs[start : start + limit]
        more = start + limit < len(jobs)
        body = {
            "batch_id": batch_id,
            "total": len(jobs),
            "counts": counts,
            "finished": finished,
            "done_fraction": finished / len(jobs),
            "enqueued_at": min(j["enqueued_at"] for j in jobs),
            "finished_at": max(j["finished_at"] or 0 for j in jobs) if finished == len(jobs) else None,
            "jobs": [j["id"] for j in page] if view == "ids" else [summary_view(j, prefix) for j in page],
            "next_cursor": page[-1]["id"] if more and page else None,
        }
        return web.json_response(body)

    @handle("POST", "/batches/{id}/cancel", "submit")
    async def cancel_batch(request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        await read_optional_json_object(request, limits)
        if not (await store_call(service.store.list, batch_id=batch_id, limit=1))["jobs"]:
            raise ApiError(404, "not_found", f"no batch '{batch_id[:128]}'")
        if not owners.lists_all(request):  # a submit token cancels a batch of its own jobs only
            for j in await batch_jobs(batch_id, ["pending", "running"]):
                owners.check_job(request, j)
        # one commit: every pending or running job of the batch is cancelled, or (on an error) none is
        cancelled = await store_call(service.store.cancel_batch, batch_id, f"batch {batch_id} cancelled")
        return web.json_response({"batch_id": batch_id, "cancelled": len(cancelled), "jobs": cancelled})

    # -- workers --

    @handle("GET", "/workers")
    async def workers(request: web.Request) -> web.Response:
        return web.json_response(await workers_list())

    @handle("POST", "/workers/refresh", "workers")
    async def refresh_workers(request: web.Request) -> web.Response:
        body = await read_optional_json_object(request, limits)
        for key in body:
            if key != "worker_id":
                raise BadRequest(f"unknown field '{key}' (allowed: worker_id)")
        worker_id = body.get("worker_id")
        if worker_id is not None and not isinstance(worker_id, str):
            raise BadRequest(f"worker_id must be a string, got {type(worker_id).__name__}")
        broker = broker_or_503()
        try:
            await store_call(broker.refresh_capabilities, worker_id)
        except KeyError:
            raise ApiError(404, "not_found", f"no worker '{worker_id}'") from None
        return web.json_response({"refreshing": worker_id if worker_id else "all"})

    @handle("POST", "/workers/{id}/drain", "workers")
    async def drain_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["id"]
        body = await read_optional_json_object(request, limits)
        for key in body:
            if key != "drain":
                raise BadRequest(f"unknown field '{key}' (allowed: drain)")
        drain = body.get("drain", True)
        if not isinstance(drain, bool):
            raise BadRequest(f"drain must be true or false, got {type(drain).__name__}")
        broker = broker_or_503()
        try:
            await store_call(broker.drain, worker_id, drain)
        except KeyError:
            raise ApiError(404, "not_found", f"no worker '{worker_id[:128]}'") from None
        return web.json_response({"worker_id": worker_id, "draining": drain})

    # -- stats, health --

    def broker_info() -> dict | None:
        if service.broker is None:
            return None
        c = service.broker.counters()
        return {
            "endpoint": service.broker.endpoint,
            "public_key": service.broker.public_key,
            # input files sent to workers (fetches = inputs fetched from their start; refused = FETCHes refused)
            "inputs_served": {k: c.get(f"input_{k}", 0) for k in ("fetches", "chunks", "bytes_sent", "refused")},
        }

    def worker_summary(ws: list) -> dict:
        online = [w for w in ws if w.get("online")]
        return {
            "online": len(online),
            "busy": sum(1 for w in online if w.get("running")),
            "draining": sum(1 for w in online if w.get("draining")),
            "capacity": sum(int(w.get("capacity") or 0) for w in online),
            "running": sum(len(w.get("running") or []) for w in online),
            "offline": len(ws) - len(online),
        }

    @handle("GET", "/stats")
    async def stats(request: web.Request) -> web.Response:
        body = dict(await store_call(service.store.stats))
        body["workers"] = worker_summary(await workers_list())
        body["broker"] = broker_info()
        body.update(await store_call(service.metrics.stats))  # throughput, per worker, per template (metrics/)
        return web.json_response(body)

    @handle("GET", "/health")
    @auth.status_probe
    async def health(request: web.Request) -> web.Response:
        h = await store_call(service.health)
        status = 200 if h["writable"] else 503
        if not auth.authorized(request):  # a monitor without the token: the status, nothing else
            return web.json_response({"status": health_status(h)}, status=status)
        stats = await store_call(service.store.stats) if h["writable"] else None
        body = {
            "status": health_status(h),
            "queue": h,
            "stats": stats,
            "paused": stats["paused"] if stats else None,
            "workers": worker_summary(await workers_list()) if service.broker is not None else None,
        }
        return web.json_response(body, status=status)

    # -- artifacts --

    @handle("GET", "/artifacts/{job}/{name:.+}")
    async def artifact(request: web.Request) -> web.StreamResponse:
        job_id, name = request.match_info["job"], request.match_info["name"]
        missing = ApiError(404, "not_found", f"job {job_id[:64]} has no artifact '{name[:256]}'")
        if not JOB_ID_RE.match(job_id) or not _safe_relative(name):
            raise missing
        job = await job_for(request, job_id)
        recorded = next((a for a in job.get("artifacts") or [] if a.get("path") in (f"{job_id}/{name}", name)), None)
        if recorded is None:
            raise missing
        path = await store_call(resolve_artifact, service.artifact_root, recorded["path"])
        if path is None:
            raise missing
        mime = recorded.get("mime") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        filename = name.rsplit("/", 1)[-1]
        headers = {
            "Content-Type": mime,
            "X-Content-Type-Options": "nosniff",
            # Files come from workers: never let one run as a page on this origin (HTML, SVG).
            "Content-Security-Policy": "sandbox",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "no-cache",
        }
        return web.FileResponse(path, headers=headers)
