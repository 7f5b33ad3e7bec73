"""The OpenAPI paths and schemas of templates (api/template_routes.py), webhooks (api/webhook_routes.py) and
tokens (api/token_routes.py), for api/openapi.py's document."""

from __future__ import annotations

from .openapi import ERRORS, JOB_ID, MS, NOT_FOUND, _json, _nullable, _obj, _op, _path_param, _query, _ref

_ = ERRORS  # (the shared error answers come with every _op)

TEMPLATE_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
PARAM_TYPES = ["string", "integer", "number", "boolean", "combo", "image", "video", "audio"]
EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "batch.finished"]


def schemas() -> dict:
    target = {
        "anyOf": [
            {"type": "string", "format": "uri", "description": "an http(s) URL: every event"},
            _obj({"url": {"type": "string"}}, {"events": {"type": "array", "items": {"enum": EVENTS}}}),
        ]
    }
    parameter = _obj(
        {"type": {"enum": PARAM_TYPES}, "targets": {"type": "array", "items": {"type": "string"}}},
        {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "default": {},
            "min": {"type": "number"},
            "max": {"type": "number"},
            "step": {"type": "number"},
            "choices": {"type": "array"},
            "multiline": {"type": "boolean"},
        },
    )
    summary = _obj(
        {
            "name": TEMPLATE_NAME,
            "version": {"type": "integer", "minimum": 1},
            "description": {"type": "string"},
            "category": {"type": "string"},
            "parameters": {"type": "object"},
            "created_at": MS,
            "source": {"type": ["string", "null"]},
        }
    )
    full = _obj(
        {**summary["properties"], "workflow": {"type": "object"}, "webhooks": {"type": "array", "items": target}},
        {"versions": {"type": "array", "items": {"type": "object"}}},
    )
    full["properties"]["parameters"] = {"type": "object", "additionalProperties": _ref("TemplateParameter")}
    delivery = _obj(
        {
            "id": {"type": "string"},
            "job": JOB_ID,
            "event": {"enum": EVENTS},
            "url": {"type": "string"},
            "state": {"enum": ["pending", "retrying", "delivered", "failed"]},
            "attempts": {"type": "integer"},
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "created_at": MS,
            "next_at": MS,
            "last_at": MS,
            "expires_at": MS,
        }
    )
    return {
        "WebhookTarget": target,
        "TemplateParameter": parameter,
        "TemplateSummary": summary,
        "Template": full,
        "TemplateDefinition": _obj(
            {"name": TEMPLATE_NAME, "workflow": {"type": "object", "description": "an API-format graph"}},
            {
                "description": {"type": "string"},
                "category": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "description": "name -> {type, targets: ['node.input'], default, min, max, step, choices}, or "
                    "seed 003's {node_id, input_name, default_value}",
                },
                "webhooks": {"type": "array", "items": target},
                "object_info": {"type": "object", "description": "ComfyUI's /object_info (or part) for limits"},
            },
        ),
        "TemplateJobs": _obj(
            {},
            {
                "params": {"type": "object"},
                "sweep": {"type": "object", "additionalProperties": {"type": "array"}},
                "count": {"type": "integer", "minimum": 1},
                "priority": {"type": "integer"},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "timeout": {"type": ["number", "null"]},
                "batch_id": {"type": "string"},
                "owner": {"type": "string"},
                "webhooks": {"type": "array", "items": target},
                "keep_seeds": {"type": "boolean"},
                "after": {"type": "array", "items": JOB_ID},
                "version": {"type": "integer", "minimum": 1},
            },
            additionalProperties=False,
        ),
        "WebhookDelivery": delivery,
    }


def paths(p: str) -> dict:
    name = _path_param("name", TEMPLATE_NAME)
    saved = _json(_obj({"template": _ref("Template"), "result": {"enum": ["created", "updated", "unchanged"]}}))
    conflict = {"409": {"$ref": "#/components/responses/Conflict"}}
    return {
        p + "/templates": {
            "get": _op(
                "listTemplates",
                "the stored templates (latest versions)",
                {"200": _json(_obj({"templates": {"type": "array", "items": _ref("TemplateSummary")}}))},
            ),
            "post": _op(
                "createTemplate",
                "stores a new template (version 1)",
                {"201": saved, **conflict},
                body=_ref("TemplateDefinition"),
            ),
        },
        p + "/templates/{name}": {
            "get": _op(
                "getTemplate",
                "a template (latest, or ?version=N) with its versions",
                {"200": _json(_obj({"template": _ref("Template")})), **NOT_FOUND},
                params=[name, _query("version", {"type": "integer", "minimum": 1})],
            ),
            "put": _op(
                "putTemplate",
                "a new version (the same text again makes none)",
                {"200": saved, "201": saved},
                body=_ref("TemplateDefinition"),
                params=[name],
            ),
            "delete": _op(
                "deleteTemplate",
                "deletes it (a tombstone version)",
                {"200": _json(_obj({"deleted": {"type": "string"}, "version": {"type": "integer"}})), **NOT_FOUND},
                params=[name],
            ),
        },
        p + "/templates/{name}/schema": {
            "get": _op(
                "templateSchema",
                "a JSON Schema (2020-12) of its parameters",
                {"200": _json({"type": "object"}), **NOT_FOUND},
                params=[name, _query("version", {"type": "integer", "minimum": 1})],
            )
        },
        p + "/templates/{name}/jobs": {
            "post": _op(
                "templateJobs",
                "queues jobs from it: params (request > template default > workflow), count, sweep",
                {"200": _json(_ref("Queued")), "413": {"$ref": "#/components/responses/TooLarge"}, **NOT_FOUND},
                body=_ref("TemplateJobs"),
                params=[name],
            ),
            "get": _op(
                "templateJobList",
                "its jobs, newest first",
                {
                    "200": _json(
                        _obj({"jobs": {"type": "array", "items": _ref("JobSummary")}, "next_cursor": _nullable(JOB_ID)})
                    )
                },
                params=[name, _query("cursor", JOB_ID), _query("limit", {"type": "integer", "minimum": 1})],
            ),
        },
        p + "/whoami": {
            "get": _op(
                "whoami",
                "who this request's token is",
                {
                    "200": _json(
                        _obj(
                            {
                                "name": {"type": ["string", "null"]},
                                "role": {"type": "string"},
                                "open": {"type": "boolean"},
                            }
                        )
                    )
                },
            )
        },
        p + "/tokens": {
            "get": _op(
                "listTokens",
                "the stored tokens (names and roles; never the tokens)",
                {"200": _json(_obj({"tokens": {"type": "array", "items": {"type": "object"}}}))},
            ),
            "post": _op(
                "addToken",
                "makes a token (shown once)",
                {
                    "201": _json(
                        _obj({"name": {"type": "string"}, "role": {"type": "string"}, "token": {"type": "string"}})
                    ),
                    "409": {"$ref": "#/components/responses/Conflict"},
                },
                body=_obj(
                    {"name": {"type": "string"}}, {"role": {"enum": ["admin", "submit", "worker-admin", "read"]}}
                ),
            ),
        },
        p + "/tokens/{name}": {
            "patch": _op(
                "setTokenLimits",
                "replaces a token's own limits and weight (max_pending, max_jobs_per_request, max_running, weight)",
                {"200": _json(_obj({"name": {"type": "string"}, "limits": {"type": "object"}})), **NOT_FOUND},
                params=[_path_param("name")],
                body=_obj({"limits": {"type": "object"}}),
            ),
            "delete": _op(
                "revokeToken",
                "revokes a token at once",
                {"200": _json(_obj({"revoked": {"type": "string"}})), **NOT_FOUND},
                params=[_path_param("name")],
            ),
        },
        p + "/webhooks": {
            "get": _op(
                "webhooks",
                "the host's webhook targets, secret and outbox size",
                {
                    "200": _json(
                        _obj(
                            {
                                "enabled": {"type": "boolean"},
                                "targets": {"type": "array"},
                                "secret": {"type": ["string", "null"]},
                                "outbox": {"type": "integer"},
                            }
                        )
                    )
                },
            )
        },
        p + "/webhooks/deliveries": {
            "get": _op(
                "webhookDeliveries",
                "delivery records (failed ones by default)",
                {
                    "200": _json(
                        _obj(
                            {
                                "deliveries": {"type": "array", "items": _ref("WebhookDelivery")},
                                "next_cursor": {"type": ["string", "null"]},
                            }
                        )
                    )
                },
                params=[
                    _query(
                        "state", {"type": "string"}, "pending, retrying, delivered, failed (comma-separated) or all"
                    ),
                    _query("job", JOB_ID),
                    _query("cursor", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                ],
            )
        },
    }
