"""The /comfymq API described: an OpenAPI 3.1 document, served at GET <prefix>/openapi.json.

document() builds it. It describes every route the host registers (tests/python/test_openapi.py checks both ways
against the routes of the standalone host and of the plugin inside ComfyUI, and validates real answers against its
schemas): the /comfymq API, its earlier name /comfymq/tasks (deprecated copies of the /comfymq/jobs operations),
the seed contract (/tasks, /health) of the standalone host, and ComfyUI's convention of serving every /comfymq
route under /api too (`x-comfymq-mirrors`). docs/http-api.md is the prose; this is the shapes.

Schemas follow the views (api/views.py, routes.py): required keys are what every answer carries; objects allow
more keys (answers grow, additively).
"""

from __future__ import annotations

import copy

from .. import __version__

JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "16 lowercase hex digits, time-ordered"}
MS = {"type": ["integer", "null"], "description": "milliseconds since the epoch"}
STATES = ["pending", "running", "succeeded", "failed", "cancelled"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "") -> dict:
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


def _obj(required: dict, optional: dict | None = None, **more) -> dict:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        **more,
    }


ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
}
NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}


def _schemas() -> dict:
    artifact = _obj(
        {
            "path": {"type": "string"},
            "size": {"type": ["integer", "null"]},
            "sha256": {"type": ["string", "null"]},
            "mime": {"type": ["string", "null"]},
            "url": {"type": "string", "description": "where GET /comfymq/artifacts/{job}/{name} serves it"},
        }
    )
    summary = _obj(
        {
            "id": JOB_ID,
            "state": {"enum": STATES},
            "priority": {"type": "integer"},
            "batch_id": {"type": ["string", "null"]},
            "prompt_id": {"type": ["string", "null"]},
            "owner": {"type": ["string", "null"]},
            "create_time": MS,
            "enqueued_at": MS,
            "updated_at": MS,
            "started_at": MS,
            "finished_at": MS,
            "attempts": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "timeout": {"type": ["number", "null"], "description": "seconds one run may take"},
            "worker": {"type": ["string", "null"]},
            "progress": {"type": ["object", "null"]},
            "after": {"type": "array", "items": JOB_ID, "description": "the jobs it waits for"},
            "error": {
                "anyOf": [
                    {"type": "null"},
                    _obj({"type": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]}}),
                ]
            },
            "outputs": {"type": ["object", "null"]},
            "artifacts": {"type": "array", "items": _ref("Artifact")},
        }
    )
    full = copy.deepcopy(summary)
    full["properties"].update(
        {
            "prompt": {"type": ["object", "string", "null"]},
            "workflow": {"type": ["object", "string", "null"]},
            "history": {"type": "array", "items": {"type": "object"}},
            "lease_expires_at": MS,
            "inputs": {"type": "array", "items": {"type": "object", "required": ["node", "input"]}},
            "waiting": {"type": "array", "items": {"type": "string"}, "description": "pending jobs: why it waits"},
            "estimate": {
                "type": ["object", "null"],
                "description": "pending jobs: expected start and end (ms since the epoch) from measured run times",
                "properties": {
                    "start": {"type": "integer"},
                    "end": {"type": "integer"},
                    "ahead": {"type": "integer"},
                    "run_seconds": {"type": "number"},
                },
            },
            "webhooks": {"type": "array", "items": _ref("WebhookDelivery"), "description": "its deliveries"},
        }
    )
    full["required"] += ["prompt", "workflow", "history", "lease_expires_at", "inputs"]
    worker = _obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "online": {"type": "boolean"},
            "draining": {"type": "boolean"},
            "capacity": {"type": "integer"},
            "running": {"type": "array", "items": JOB_ID},
        }
    )
    worker_summary = _obj(
        {k: {"type": "integer"} for k in ("online", "busy", "draining", "capacity", "running", "offline")}
    )
    store_stats = _obj(
        {
            "counts": _obj({s: {"type": "integer"} for s in STATES}),
            "total": {"type": "integer"},
            "waiting": {"type": "integer"},
            "oldest_pending_age": {"type": "number"},
            "finished_last_minute": {"type": "integer"},
            "finished_last_hour": {"type": "integer"},
            "paused": {"type": "boolean"},
        }
    )
    return {
        "Error": _obj(
            {
                "error": _obj(
                    {"type": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}},
                    additionalProperties=True,
                )
            }
        ),
        "Artifact": artifact,
        "JobSummary": summary,
        "Job": full,
        "JobList": _obj({"jobs": {"type": "array", "items": _ref("JobSummary")}, "next_cursor": _nullable(JOB_ID)}),
        "Submission": _obj(
            {"prompt": {"type": ["object", "string"], "description": "an API-format graph"}},
            {
                "priority": {"type": "integer"},
                "metadata": _obj({}, {"prompt_id": {"type": "string"}, "create_time": {"type": "number"}}),
                "workflow": {"type": "object"},
                "count": {"type": "integer", "minimum": 1},
                "keep_seeds": {"type": "boolean"},
                "sweep": {"type": "object", "additionalProperties": {"type": "array"}},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "timeout": {"type": ["number", "null"]},
                "batch_id": {"type": "string"},
                "owner": {"type": "string"},
                "after": {"type": "array", "items": JOB_ID, "maxItems": 64},
                "webhooks": {"type": "array", "items": _ref("WebhookTarget"), "maxItems": 8},
            },
            additionalProperties=False,
        ),
        "Queued": _obj(
            {
                "status": {"const": "queued"},
                "jobs": {"type": "array", "items": {"type": "object", "required": ["id", "state"]}},
                "waiting": {"type": "array", "items": {"type": "string"}},
            },
            {
                "task": {"type": "object"},
                "batch_id": {"type": ["string", "null"]},
                "count": {"type": "integer"},
                "existed": {"type": "boolean"},
            },
        ),
        "JobAnswer": _obj({"job": _ref("JobSummary")}),
        "Queue": _obj({"paused": {"type": "boolean"}, "counts": store_stats["properties"]["counts"]}),
        "Batch": _obj(
            {
                "batch_id": {"type": "string"},
                "total": {"type": "integer"},
                "counts": store_stats["properties"]["counts"],
                "finished": {"type": "integer"},
                "done_fraction": {"type": "number"},
                "enqueued_at": MS,
                "finished_at": MS,
                "jobs": {"type": "array", "items": {"anyOf": [JOB_ID, _ref("JobSummary")]}},
                "next_cursor": _nullable(JOB_ID),
            }
        ),
        "Worker": worker,
        "WorkerSummary": worker_summary,
        "StoreStats": store_stats,
        "Stats": {
            "allOf": [
                _ref("StoreStats"),
                _obj({"workers": _ref("WorkerSummary"), "broker": {"type": ["object", "null"]}}),
            ]
        },
        "Health": _obj(
            {"status": {"enum": ["ok", "unavailable"]}},
            {
                "queue": {"type": "object"},
                "stats": {"anyOf": [{"type": "null"}, _ref("StoreStats")]},
                "paused": {"type": ["boolean", "null"]},
                "workers": {"anyOf": [{"type": "null"}, _ref("WorkerSummary")]},
            },
        ),
        "Status": _obj(
            {
                "role": {"enum": ["both", "host", "worker"]},
                "version": {"type": "string"},
                "hosts_queue": {"type": "boolean"},
                "worker": {"type": ["object", "null"]},
                "queue": {"type": "object"},
            },
            {"farm": _nullable(_ref("Farm"))},
        ),
        "StoredInput": _obj(
            {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer"}},
            {"name": {"type": "string"}, "existed": {"type": "boolean"}},
        ),
    }


def _nullable(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


def _op(op_id: str, summary: str, responses: dict, *, body: dict | None = None, params=(), **more) -> dict:
    op = {"operationId": op_id, "summary": summary, "responses": {**responses, **ERRORS}, **more}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def _path_param(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


REASON_BODY = _obj({}, {"reason": {"type": "string"}})


def _jobs_paths(base: str, op_prefix: str, deprecated: bool) -> dict:
    """The /jobs operations under `base` (/comfymq/jobs, or its earlier name /comfymq/tasks)."""
    more = (
        {"deprecated": True, "description": "the earlier name of the /jobs route; the same handler"}
        if deprecated
        else {}
    )
    job_id = _path_param("id", JOB_ID)
    return {
        base: {
            "post": _op(
                f"{op_prefix}enqueue",
                "queue one job, or many (count, sweep), all or nothing",
                {
                    "200": _json(_ref("Queued")),
                    "409": {"$ref": "#/components/responses/Conflict"},
                    "413": {"$ref": "#/components/responses/TooLarge"},
                },
                body=_ref("Submission"),
                **more,
            ),
            "get": _op(
                f"{op_prefix}listJobs",
                "list jobs, newest first by default",
                {"200": _json(_ref("JobList"))},
                params=[
                    _query("state", {"type": "string"}, "comma-separated states"),
                    _query("batch", {"type": "string"}),
                    _query("since", {"type": "integer"}, "enqueue time lower bound (ms)"),
                    _query("until", {"type": "integer"}, "enqueue time upper bound (ms)"),
                    _query("cursor", JOB_ID),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _query("order", {"enum": ["newest", "oldest"]}),
                    _query("prompt_id", {"type": "string"}),
                ],
                **more,
            ),
        },
        base + "/{id}": {
            "get": _op(
                f"{op_prefix}getJob",
                "one job in full",
                {"200": _json(_obj({"job": _ref("Job")})), **NOT_FOUND},
                params=[job_id],
                **more,
            ),
            "delete": _op(
                f"{op_prefix}deleteJob",
                "removes a finished job's record",
                {
                    "200": _json(_obj({"deleted": JOB_ID})),
                    "409": {"$ref": "#/components/responses/Conflict"},
                    **NOT_FOUND,
                },
                params=[job_id],
                **more,
            ),
        },
        base + "/{id}/cancel": {
            "post": _op(
                f"{op_prefix}cancelJob",
                "pending | running -> cancelled",
                {"200": _json(_ref("JobAnswer")), "409": {"$ref": "#/components/responses/Conflict"}, **NOT_FOUND},
                body=REASON_BODY,
                params=[job_id],
                **more,
            ),
        },
        base + "/{id}/retry": {
            "post": _op(
                f"{op_prefix}retryJob",
                "failed | cancelled -> pending",
                {"200": _json(_ref("JobAnswer")), "409": {"$ref": "#/components/responses/Conflict"}, **NOT_FOUND},
                params=[job_id],
                **more,
            ),
        },
    }


def _v2_paths(m: str) -> dict:
    """The Comfy API v2 under mount `m` (api/v2): its shapes are the contract's (Comfy-Org/comfy-api-proxy
    spec/openapi.yaml), referenced here, not repeated."""
    contract = {"description": "the contract's shape (Comfy API v2)", "content": {"application/json": {"schema": {}}}}
    job_id = _path_param("id", JOB_ID)
    asset_id = _path_param("id")
    v2 = {"tags": ["v2"]}
    return {
        m + "/jobs": {
            "post": _op("v2PostJobs", "submit a workflow (Idempotency-Key honoured)", {"201": contract}, **v2),
            "get": _op("v2ListJobs", "jobs, newest first (limit, cursor, metadata[k]=v)", {"200": contract}, **v2),
        },
        m + "/jobs/{id}": {"get": _op("v2GetJob", "a job", {"200": contract, **NOT_FOUND}, params=[job_id], **v2)},
        m + "/health": {
            "get": _op(
                "v2Health",
                "an extension: whether the host takes jobs, its queue's counts, its online workers",
                {"200": _json({"type": "object"}), "503": _json({"type": "object"})},
                **v2,
            )
        },
        m + "/jobs/{id}/events": {
            "get": _op(
                "v2JobEvents",
                "live events (SSE): status, progress, preview, output, log",
                {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}, **NOT_FOUND},
                params=[job_id],
                **v2,
            )
        },
        m + "/jobs/{id}/cancel": {
            "post": _op("v2CancelJob", "cancel (idempotent)", {"200": contract, **NOT_FOUND}, params=[job_id], **v2)
        },
        m + "/jobs/{id}/workflow": {
            "get": _op("v2JobWorkflow", "the graph it ran", {"200": contract, **NOT_FOUND}, params=[job_id], **v2)
        },
        m + "/assets": {
            "post": _op("v2PostAssets", "upload an asset (multipart)", {"200": contract, "201": contract}, **v2)
        },
        m + "/assets/from-hash": {
            "post": _op(
                "v2AssetFromHash",
                "mint an asset over known bytes",
                {"200": contract, "201": contract, **NOT_FOUND},
                **v2,
            )
        },
        m + "/assets/by-hash/{hash}": {
            "head": _op(
                "v2HeadAssetByHash",
                "whether a blob is known",
                {"200": {"description": "known"}, **NOT_FOUND},
                params=[_path_param("hash")],
                **v2,
            )
        },
        m + "/assets/{id}": {
            "get": _op("v2GetAsset", "an asset", {"200": contract, **NOT_FOUND}, params=[asset_id], **v2),
            "delete": _op(
                "v2DeleteAsset",
                "forget an uploaded asset",
                {"204": {"description": "deleted"}, **NOT_FOUND},
                params=[asset_id],
                **v2,
            ),
        },
        m + "/assets/{id}/content": {
            "get": _op(
                "v2AssetContent",
                "the bytes (Range served)",
                {
                    "200": {"description": "the bytes", "content": {"application/octet-stream": {}}},
                    "206": {"description": "a range", "content": {"application/octet-stream": {}}},
                    **NOT_FOUND,
                },
                params=[asset_id],
                **v2,
            )
        },
    }


def document(
    prefix: str = "/comfymq", *, seed_routes: bool = True, v2_mount: str | None = None, farm_routes: bool | None = None
) -> dict:
    """The OpenAPI 3.1 document of the API under `prefix`; with `seed_routes`, the standalone host's /tasks and
    /health (the seed contract) too; the Comfy API v2 under `v2_mount` (default: /api/v2 on the standalone host,
    /comfymq/api/v2 inside ComfyUI); with `farm_routes` (default: inside ComfyUI, not seed_routes) the /farm routes
    of a ComfyUI that can join a farm (the default and worker roles)."""
    p = prefix
    paths = {}
    paths.update(_v2_paths(v2_mount or ("/api/v2" if seed_routes else p + "/api/v2")))
    paths.update(_jobs_paths(p + "/jobs", "", False))
    from . import openapi_templates  # (it builds on this module's helpers)

    paths.update(openapi_templates.paths(p))
    from . import openapi_pairing  # (pairing/routes.py)

    paths.update(openapi_pairing.paths(p))
    if farm_routes if farm_routes is not None else not seed_routes:
        paths.update(openapi_pairing.farm_paths(p))
    paths.update(_jobs_paths(p + "/tasks", "tasks_", True))
    paths.update(
        {
            p + "/queue": {
                "get": _op("getQueue", "paused or not, and counts per state", {"200": _json(_ref("Queue"))})
            },
            p + "/queue/pause": {"post": _op("pauseQueue", "dispatch nothing new", {"200": _json(_ref("Queue"))})},
            p + "/queue/resume": {"post": _op("resumeQueue", "dispatch again", {"200": _json(_ref("Queue"))})},
            p + "/batches/{id}": {
                "get": _op(
                    "getBatch",
                    "a batch's counts and jobs",
                    {"200": _json(_ref("Batch")), **NOT_FOUND},
                    params=[
                        _path_param("id"),
                        _query("cursor", JOB_ID),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _query("view", {"enum": ["ids", "summary"]}),
                    ],
                )
            },
            p + "/batches/{id}/cancel": {
                "post": _op(
                    "cancelBatch",
                    "cancels every pending or running job of the batch, in one commit",
                    {
                        "200": _json(
                            _obj(
                                {
                                    "batch_id": {"type": "string"},
                                    "cancelled": {"type": "integer"},
                                    "jobs": {"type": "array", "items": JOB_ID},
                                }
                            )
                        ),
                        **NOT_FOUND,
                    },
                    body=REASON_BODY,
                    params=[_path_param("id")],
                )
            },
            p + "/workers": {
                "get": _op(
                    "listWorkers", "the broker's workers", {"200": _json({"type": "array", "items": _ref("Worker")})}
                )
            },
            p + "/workers/refresh": {
                "post": _op(
                    "refreshWorkers",
                    "asks workers for their capabilities again",
                    {
                        "200": _json(_obj({"refreshing": {"type": "string"}})),
                        "503": {"$ref": "#/components/responses/Unavailable"},
                    },
                    body=_obj({}, {"worker_id": {"type": "string"}}),
                )
            },
            p + "/workers/{id}/drain": {
                "post": _op(
                    "drainWorker",
                    "stops (or resumes) giving jobs to a worker",
                    {
                        "200": _json(_obj({"worker_id": {"type": "string"}, "draining": {"type": "boolean"}})),
                        "503": {"$ref": "#/components/responses/Unavailable"},
                        **NOT_FOUND,
                    },
                    body=_obj({}, {"drain": {"type": "boolean"}}),
                    params=[_path_param("id")],
                )
            },
            p + "/stats": {
                "get": _op("getStats", "the store's figures, workers and broker", {"200": _json(_ref("Stats"))})
            },
            p + "/health": {
                "get": _op(
                    "getHealth",
                    "200 when the store takes writes, else 503; without the token {status} only",
                    {"200": _json(_ref("Health")), "503": _json(_ref("Health"), "the store does not take writes")},
                    security=[{}, {"bearer": []}],
                )
            },
            p + "/status": {
                "get": _op("getStatus", "this ComfyMQ's role and its worker", {"200": _json(_ref("Status"))})
            },
            p + "/artifacts/{job}/{name}": {
                "get": _op(
                    "getArtifact",
                    "a file recorded on a job (Range requests served)",
                    {
                        "200": {"description": "the file", "content": {"application/octet-stream": {}}},
                        "206": {"description": "a range of it", "content": {"application/octet-stream": {}}},
                        **NOT_FOUND,
                    },
                    params=[_path_param("job", JOB_ID), _path_param("name")],
                )
            },
            p + "/inputs": {
                "post": {
                    **_op(
                        "uploadInput",
                        "stores a file jobs can name by its sha256 (multipart, or a raw body with ?name=)",
                        {"200": _json(_ref("StoredInput")), "413": {"$ref": "#/components/responses/TooLarge"}},
                        params=[_query("name", {"type": "string"})],
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {"schema": {"type": "object"}},
                            "application/octet-stream": {"schema": {}},
                        },
                    },
                }
            },
            p + "/inputs/{sha256}": {
                "get": _op(
                    "getInput",
                    "whether the host keeps an input (and marks it used)",
                    {"200": _json(_ref("StoredInput")), **NOT_FOUND},
                    params=[_path_param("sha256", {"type": "string", "pattern": "^[0-9a-f]{64}$"})],
                )
            },
            p + "/openapi.json": {"get": _op("getOpenApi", "this document", {"200": _json({"type": "object"})})},
            p + "/metrics": {
                "get": _op(
                    "metrics",
                    "the farm's metrics in the Prometheus text format",
                    {"200": {"description": "text/plain; version=0.0.4", "content": {"text/plain": {}}}},
                )
            },
        }
    )
    if seed_routes:
        paths.update(
            {
                "/tasks": {
                    "post": _op(
                        "seedEnqueue",
                        "seed 000's contract: queue one job (prompt, priority, metadata)",
                        {"200": _json(_obj({"status": {"const": "queued"}, "task": {"type": "object"}}))},
                        body=_obj(
                            {"prompt": {"type": ["object", "string"]}},
                            {"priority": {"type": "integer"}, "metadata": {"type": "object"}},
                        ),
                    )
                },
                "/tasks/{id}": {
                    "get": _op(
                        "seedGetTask",
                        "seed 000's contract: one task",
                        {"200": _json(_obj({"task": {"type": "object"}})), **NOT_FOUND},
                        params=[_path_param("id", JOB_ID)],
                    )
                },
                "/health": {
                    "get": _op(
                        "seedHealth",
                        "seed 000's contract: 200 when the store takes writes",
                        {"200": _json(_ref("Health")), "503": _json(_ref("Health"))},
                        security=[{}, {"bearer": []}],
                    )
                },
            }
        )
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ComfyMQ",
            "version": __version__,
            "description": (
                "A durable, distributed job queue for ComfyUI. The prose: docs/http-api.md. A ComfyUI in the worker "
                "role serves GET /comfymq/status, POST /comfymq/jobs (forwarded to its host), the /comfymq/farm routes, GET "
                "/comfymq/pairing/discover and POST /comfymq/inputs "
                "(409), and answers every other /comfymq route 409: the queue is on its host."
            ),
        },
        "x-comfymq-mirrors": ["/api"],  # every path under `prefix` is also served under /api + prefix
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the host's token, when it has one"}
            },
            "schemas": {**_schemas(), **openapi_templates.schemas(), **openapi_pairing.schemas()},
            "responses": {
                name: {"description": desc, **error}
                for name, desc in (
                    ("BadRequest", "the request is not valid: the message says what and where"),
                    ("Unauthorized", "no token, or not this host's"),
                    ("Forbidden", "refused by the site rules (Host, Origin, Sec-Fetch-Site)"),
                    ("UnsupportedMediaType", "a POST, PUT or DELETE without Content-Type: application/json"),
                    ("NotFound", "no such job, batch, worker, input or file"),
                    ("Conflict", "not in a state that allows it (or unrunnable, with `waiting`)"),
                    ("TooLarge", "over a limit the message names"),
                    ("Unavailable", "this host runs no broker"),
                )
            },
        },
    }
