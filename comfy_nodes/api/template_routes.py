"""Templates on the /comfymq API (templates/: definitions, schema, rendering; templates/registry.py: the store):

  GET    /comfymq/templates                  {"templates": [summary]}, by name
  POST   /comfymq/templates                  a template (+ "webhooks", + "object_info": ComfyUI's /object_info, or
                                             the part of it its nodes use, for limits and choices) -> 201; 409 if
                                             the name is taken
  GET    /comfymq/templates/{name}           the latest version (?version=N: that one), with its versions
  PUT    /comfymq/templates/{name}           a new version (or the first); the same text again makes none
  DELETE /comfymq/templates/{name}           gone (its versions stay readable by number while kept)
  GET    /comfymq/templates/{name}/schema    a JSON Schema (2020-12) of its parameters (the panel's form)
  POST   /comfymq/templates/{name}/jobs      {"params", "sweep": {param: [values]}, "count", "priority",
                                             "max_attempts", "timeout", "batch_id", "owner", "webhooks", "keep_seeds",
                                             "after", "version"} -> the jobs, as POST /comfymq/jobs answers
  GET    /comfymq/templates/{name}/jobs      its jobs, newest first (?cursor=&limit=), looked for among the newest
                                             JOB_SCAN jobs per call
Limits and choices come from the request's object_info, else from the host's own ComfyUI (inside ComfyUI), else
only what the template declares. Errors are 400 naming the file or request, the template and the parameter.
A job made from a template records it in its labels: {"comfymq/template": {"name", "version", "params"}}.
"""

from __future__ import annotations

import json
import re
import uuid

from aiohttp import web

from ..templates.errors import TemplateError
from ..templates.registry import summary_of
from ..templates.render import render
from ..templates.render import sweep as sweep_params
from ..templates.schema import json_schema
from . import expand as ex
from . import owners
from .errors import ApiError, BadRequest, read_json_object

TEMPLATE_LABEL = "comfymq/template"
JOB_FIELDS = (
    "params",
    "owner",
    "sweep",
    "count",
    "priority",
    "max_attempts",
    "timeout",
    "batch_id",
    "owner",
    "webhooks",
    "keep_seeds",
    "after",
    "version",
)
JOB_SCAN = 5000
MAX_LABEL_PARAMS = 4096  # bytes of params kept in a job's labels (more: the names only)
VERSION_RE = re.compile(r"[1-9][0-9]{0,7}")
B3_RE = re.compile(r"blake3:[0-9a-f]{64}")
SHA_RE = re.compile(r"(sha256:)?[0-9a-f]{64}")
ASSET_RE = re.compile(r"asset_[0-9a-f]{32}")


def full(rec: dict) -> dict:
    t = rec["template"]
    return {
        **summary_of(rec),
        "workflow": t["workflow"],
        "parameters": t["parameters"],
        "webhooks": rec.get("webhooks", []),
    }


def add_template_routes(handle, service, *, prefix: str, limits, object_info, submit) -> None:
    """Registers the module's routes with `handle` (routes.py's: site rules and token). object_info: an async
    callable giving ComfyUI's /object_info or None. submit(request, prompts, body, labels, template_hooks, combos)
    -> the answer of POST /comfymq/jobs for those prompts (routes.py)."""
    registry = service.templates  # one per store: its lock orders the saves of every route table
    call = service.call

    def name_of(request: web.Request) -> str:
        return request.match_info["name"]

    async def infos(body: dict):
        """The /object_info limits come from: this host's own ComfyUI (inside ComfyUI: exact, and what its worker
        runs), else the request's (a browser's copy, whose big integers JavaScript may have rounded)."""
        given = body.pop("object_info", None)
        if given is not None and not isinstance(given, dict):
            raise BadRequest("object_info must be an object (ComfyUI's /object_info, or the part of it used)")
        own = await object_info() if object_info else None
        return own if own else given

    def template_error(e: TemplateError) -> ApiError:
        return ApiError(400, "invalid_template", str(e), extra={"template": e.template, "parameter": e.parameter})

    async def get_record(name: str, version: str | None = None) -> dict:
        if version is not None and not VERSION_RE.fullmatch(version):
            raise BadRequest("version must be a positive integer")
        rec = await call(registry.get, name, int(version) if version else None)
        if rec is None:
            raise ApiError(404, "not_found", f"no template '{name[:64]}'" + (f" version {version}" if version else ""))
        return rec

    @handle("GET", "/templates")
    async def list_templates(request: web.Request) -> web.Response:
        return web.json_response({"templates": await call(registry.list)})

    async def save(request: web.Request, must_exist, name: str | None) -> tuple[dict, str]:
        body = await read_json_object(request, limits)
        if name is not None:
            if body.setdefault("name", name) != name:
                raise BadRequest(f"the body names template '{str(body['name'])[:64]}', the path '{name[:64]}'")
        info = await infos(body)
        try:
            return await call(registry.save, body, object_info=info, source="api", must_exist=must_exist)
        except TemplateError as e:
            raise template_error(e) from None
        except FileExistsError as e:
            raise ApiError(409, "template_exists", str(e)) from None

    @handle("POST", "/templates")
    async def create(request: web.Request) -> web.Response:
        rec, _ = await save(request, False, None)
        return web.json_response({"template": full(rec), "result": "created"}, status=201)

    @handle("GET", "/templates/{name}")
    async def get_template(request: web.Request) -> web.Response:
        for k in request.query:
            if k != "version":
                raise BadRequest(f"unknown query parameter '{k[:64]}' (allowed: version)")
        rec = await get_record(name_of(request), request.query.get("version"))
        view = full(rec)
        view["versions"] = await call(registry.versions, rec["template"]["name"])
        return web.json_response({"template": view})

    @handle("PUT", "/templates/{name}")
    async def put_template(request: web.Request) -> web.Response:
        rec, result = await save(request, None, name_of(request))
        return web.json_response({"template": full(rec), "result": result}, status=201 if result == "created" else 200)

    @handle("DELETE", "/templates/{name}")
    async def delete_template(request: web.Request) -> web.Response:
        try:
            version = await call(registry.delete, name_of(request))
        except LookupError as e:
            raise ApiError(404, "not_found", str(e)[:200]) from None
        return web.json_response({"deleted": name_of(request), "version": version})

    @handle("GET", "/templates/{name}/schema")
    async def schema(request: web.Request) -> web.Response:
        rec = await get_record(name_of(request), request.query.get("version"))
        return web.json_response(json_schema(rec["template"]))

    def asset_resolver(value, pname):
        """An image/video/audio parameter's value as the input it becomes: a v2 asset (id or blake3 hash) or an
        input store sha256 -> a stored-input reference; a file name or a reference object: as it is."""
        from .v2.records import V2Records

        records = V2Records(service.data_dir / "v2")
        sha = None
        if isinstance(value, dict):
            if "asset_id" in value or "asset_hash" in value:
                value = value.get("asset_id") or value.get("asset_hash")
            else:
                return value
        if not isinstance(value, str):
            return value
        if B3_RE.fullmatch(value):
            sha = records.sha256_of_blake3(value.split(":", 1)[1])
        elif ASSET_RE.fullmatch(value):
            rec = records.asset(value)
            sha = rec["sha256"] if rec else None
            if sha is None:
                raise TemplateError(f"no asset '{value}' on this host", template=None, parameter=pname)
        elif SHA_RE.fullmatch(value):
            sha = value.rsplit(":", 1)[-1]
        else:
            return value  # a file name ComfyUI's input folder has (inside ComfyUI it travels too)
        if sha is None:
            raise TemplateError(f"no asset with hash {value} on this host", parameter=pname)
        return {"comfymq_input": sha}

    @handle("POST", "/templates/{name}/jobs", "submit")
    async def template_jobs(request: web.Request) -> web.Response:
        body = await read_json_object(request, limits)
        body["owner"] = owners.owner_for(request, body.get("owner"))  # a submit token's jobs are its own
        for k in body:
            if k not in JOB_FIELDS:
                raise BadRequest(f"unknown field '{str(k)[:64]}' (allowed: {', '.join(JOB_FIELDS)})")
        version = body.pop("version", None)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise BadRequest("version must be a positive integer")
        rec = await get_record(name_of(request), str(version) if version else None)
        template = rec["template"]
        params = body.pop("params", {})
        if not isinstance(params, dict):
            raise BadRequest("params must be an object {parameter: value}")
        swept = body.pop("sweep", None)
        if swept is not None and not isinstance(swept, dict):
            raise BadRequest("sweep must be an object {parameter: [values]}")
        count = body.get("count", 1)
        try:
            count = ex.check_count(count, limits.max_jobs_per_request)
        except (ex.TooManyJobs, ex.ExpansionError) as e:
            raise BadRequest(str(e)) from None
        try:
            combos = (
                sweep_params(template, params, swept, limit=max(1, limits.max_jobs_per_request // count))
                if swept
                else [params]
            )
        except TemplateError as e:
            raise template_error(e) from None
        labels = []
        for p in combos:
            text = json.dumps(p, ensure_ascii=False)
            shown = p if len(text.encode()) <= MAX_LABEL_PARAMS else {"names": sorted(p)}
            labels.append({TEMPLATE_LABEL: {"name": template["name"], "version": rec["version"], "params": shown}})
        # Bounded before anything is rendered: every job holds about the template's workflow and its parameters.
        per_job = (
            len(json.dumps(template["workflow"], ensure_ascii=False).encode())
            + max(len(json.dumps(p, ensure_ascii=False).encode()) for p in combos)
            + len(json.dumps([rec.get("webhooks") or [], body.get("webhooks") or []], ensure_ascii=False).encode())
        )
        try:
            ex.check_size(per_job, len(combos) * count, limits.max_stored_bytes_per_request)
        except ex.TooManyJobs as e:
            raise ApiError(413, "too_many_jobs", str(e)) from None
        body.setdefault("batch_id", f"tpl-{template['name'][:40]}-{uuid.uuid4().hex[:12]}")
        try:
            prompts = await call(lambda: [render(template, p, resolve_asset=asset_resolver) for p in combos])
        except TemplateError as e:
            raise template_error(e) from None
        answer = await submit(request, prompts, body, labels, rec.get("webhooks") or [], combos)
        answer["template"] = {"name": template["name"], "version": rec["version"]}
        return web.json_response(answer)

    @handle("GET", "/templates/{name}/jobs")
    async def jobs_of(request: web.Request) -> web.Response:
        name = name_of(request)
        for k in request.query:
            if k not in ("cursor", "limit"):
                raise BadRequest(f"unknown query parameter '{k[:64]}' (allowed: cursor, limit)")
        raw = request.query.get("limit", "50")
        if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= 500:
            raise BadRequest("limit must be 1..500")
        cursor = request.query.get("cursor") or None
        if cursor is not None and not re.fullmatch(r"[0-9a-f]{16}", cursor):
            raise BadRequest("cursor is not one this API gave")

        def scan():
            from .views import summary_view

            found, scanned, cur = [], 0, cursor
            while scanned < JOB_SCAN and len(found) < int(raw):
                page = service.store.list(cursor=cur, limit=500, newest_first=True)
                for j in page["jobs"]:
                    scanned += 1
                    t = (j.get("labels") or {}).get(TEMPLATE_LABEL)
                    if isinstance(t, dict) and t.get("name") == name and owners.sees(request, j):
                        view = summary_view(j, prefix)
                        view["template"] = t
                        found.append(view)
                        if len(found) >= int(raw):
                            return found, j["id"]
                cur = page["next_cursor"]
                if not cur:
                    return found, None
            return found, cur

        found, next_cursor = await call(scan)
        return web.json_response({"jobs": found, "next_cursor": next_cursor})
