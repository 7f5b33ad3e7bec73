"""The API described (api/openapi.py): a valid OpenAPI 3.1 document, served at /comfymq/openapi.json, naming every
route the standalone host and the plugin register and no other, whose schemas real answers satisfy, and whose
paths the prose (docs/http-api.md) names.

- The document passes openapi-spec-validator (pinned in tests/requirements.txt).
- Routes: the standalone host's app and a host-role and a worker-role plugin's route tables, each (method, path)
  against the document both ways (HEAD comes with GET; /api/comfymq/... is the /api mirror the document declares).
- Answers: a run through the standalone host (queue one and many, list, get, cancel, retry, delete, batches,
  queue, workers, stats, health with and without the token, status, inputs, artifacts' 404, the seed contract)
  validates every JSON answer against the schema of its operation and status code (jsonschema, Draft 2020-12).
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web
from openapi_spec_validator import validate

from comfy_nodes.api.openapi import document
from comfy_nodes.config import load_config
from comfy_nodes.host.standalone import build_app
from comfy_nodes.plugin import Plugin
from comfy_nodes.service import QueueService

REPO = Path(__file__).resolve().parents[2]
TOKEN = "openapi-test-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOC = document()


def documented(doc: dict) -> set[tuple[str, str]]:
    return {
        (m.upper(), p)
        for p, ops in doc["paths"].items()
        for m in ops
        if m in ("get", "post", "put", "patch", "delete", "head")
    }


def registered(routes) -> set[tuple[str, str]]:
    """(method, path) of an app's routes or a route table, HEAD folded into GET, {name:.+} as {name}, /api/comfymq
    as /comfymq (the mirror the document declares)."""
    out = set()
    for r in routes:
        method = getattr(r, "method", None)
        path = getattr(r, "path", None)
        if path is None:
            info = r.resource.get_info()
            path = info.get("path") or info.get("formatter")
        if method is None:
            continue
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)
        for mirror in DOC["x-comfymq-mirrors"]:
            if path.startswith(mirror + "/comfymq"):
                path = path[len(mirror) :]
        out.add((method, path))
    return {(m, p) for m, p in out if not (m == "HEAD" and ("GET", p) in out)}  # (HEAD comes with every GET)


def test_the_document_is_valid_openapi_3_1():
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")
    ids = [op["operationId"] for ops in DOC["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), "operationIds are unique"


def test_the_standalone_host_registers_exactly_the_documented_routes(tmp_path):
    service = QueueService(tmp_path / "data")
    try:
        app = build_app(service, token=TOKEN)
        assert registered(app.router.routes()) == documented(DOC)
    finally:
        service.close()


def test_the_plugins_routes_are_documented_and_a_host_role_registers_them_all(tmp_path):
    from conftest import free_port

    host_cfg = load_config(
        {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"},
        user_dir=str(tmp_path / "host"),
        output_dir=str(tmp_path / "out"),
    )
    host = Plugin(host_cfg)
    routes = web.RouteTableDef()
    host.start(routes)
    try:
        seedless = documented(document(seed_routes=False, farm_routes=False))
        assert registered(routes) == seedless, "inside ComfyUI: the /comfymq API, without the seed contract"
    finally:
        host.close()
    both_cfg = load_config(
        {"COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"},
        user_dir=str(tmp_path / "both"),
        output_dir=str(tmp_path / "bout"),
    )
    both = Plugin(both_cfg)
    routes = web.RouteTableDef()
    both.start(routes)
    try:
        inside = documented(document(seed_routes=False))
        assert registered(routes) == inside, "the default role: the host's routes and joining a farm"
    finally:
        both.close()
    worker_cfg = load_config(
        {"COMFYMQ_ROLE": "worker", "COMFYMQ_BROKER": "tcp://127.0.0.1:9", "COMFYMQ_HOST_URL": "http://127.0.0.1:9"},
        user_dir=str(tmp_path / "worker"),
        output_dir=str(tmp_path / "wout"),
    )
    worker = Plugin(worker_cfg)
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        # (besides the catch-all that answers the host's other routes 409, as the document's description says)
        catch_all = {(m, "/comfymq/{tail}") for m in ("GET", "POST", "DELETE")}
        assert catch_all <= registered(routes)
        inside = documented(document(seed_routes=False))
        assert registered(routes) - catch_all <= inside, "a worker-role ComfyUI's routes are documented ones"
        assert ("POST", "/comfymq/jobs") in registered(routes)
    finally:
        worker.close()


def test_the_prose_names_every_documented_path():
    prose = (REPO / "docs" / "http-api.md").read_text()
    missing = [p for p in DOC["paths"] if "/comfymq/tasks" not in p and "/api/v2" not in p and p not in prose]
    assert missing == [], f"docs/http-api.md does not name {missing}"


# ---- answers against the schemas ----------------------------------------------------------------------------


def _inline(schema, seen=()):
    """The schema with every #/components/... $ref replaced by what it names."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            assert ref not in seen, f"recursive {ref}"
            node = DOC
            for part in ref[2:].split("/"):
                node = node[part]
            return _inline(node, (*seen, ref))
        return {k: _inline(v, seen) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, seen) for v in schema]
    return schema


def operation_for(method: str, path: str) -> dict:
    """The documented operation a request path matches (its template's {params} taking one segment, {name} of an
    artifact the rest)."""
    for template, ops in DOC["paths"].items():
        pattern = (
            "^"
            + re.sub(r"\\\{(\w+)\\\}", lambda m: "(.+)" if m.group(1) == "name" else "([^/]+)", re.escape(template))
            + "$"
        )
        if re.match(pattern, path) and method.lower() in ops:
            return ops[method.lower()]
    raise AssertionError(f"{method} {path} matches no documented operation")


async def checked(client, method: str, path: str, *, status: int | None = None, **kw):
    """Sends the request and validates its JSON answer against the schema of its operation and status."""
    kw.setdefault("headers", {**AUTH, **({"Content-Type": "application/json"} if method != "GET" else {})})
    resp = await client.request(method, path, **kw)
    if status is not None:
        assert resp.status == status, (method, path, await resp.text())
    op = operation_for(method, path.split("?")[0].replace("/api/comfymq", "/comfymq"))
    answers = op["responses"]
    answer = _inline(answers.get(str(resp.status)) or {})
    assert answer, f"{method} {path} answered {resp.status}, which its operation does not document"
    content = answer.get("content", {}).get("application/json")
    if content is not None:
        body = await resp.json()
        jsonschema.Draft202012Validator(content["schema"]).validate(body)
        return resp, body
    return resp, None


@pytest_asyncio.fixture
async def host(tmp_path, aiohttp_client):
    service = QueueService(tmp_path / "data")
    client = await aiohttp_client(build_app(service, token=TOKEN))
    yield client, service
    service.close()


PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}, "2": {"class_type": "SaveImage", "inputs": {}}}


@pytest.mark.asyncio
async def test_answers_satisfy_the_documented_schemas(host):
    client, service = host
    _, one = await checked(client, "POST", "/comfymq/jobs", json={"prompt": PROMPT}, status=200)
    jid = one["jobs"][0]["id"]
    _, many = await checked(client, "POST", "/comfymq/jobs", json={"prompt": PROMPT, "count": 3}, status=200)
    batch = many["batch_id"]
    await checked(client, "POST", "/comfymq/jobs", json={"prompt": PROMPT, "after": [jid]}, status=200)
    await checked(client, "POST", "/comfymq/jobs", json={"prompt": PROMPT, "bogus": 1}, status=400)
    await checked(client, "GET", "/comfymq/jobs?limit=2", status=200)
    await checked(client, "GET", f"/comfymq/jobs/{jid}", status=200)
    await checked(client, "GET", "/comfymq/jobs/0123456789abcdef", status=404)
    await checked(client, "GET", f"/api/comfymq/tasks/{jid}", status=200)
    await checked(client, "GET", f"/comfymq/batches/{batch}?view=summary", status=200)
    await checked(client, "GET", f"/comfymq/batches/{batch}", status=200)
    await checked(client, "POST", f"/comfymq/batches/{batch}/cancel", status=200)
    await checked(client, "POST", f"/comfymq/jobs/{jid}/cancel", json={"reason": "test"}, status=200)
    await checked(client, "POST", f"/comfymq/jobs/{jid}/cancel", status=409)
    await checked(client, "POST", f"/comfymq/jobs/{jid}/retry", status=200)
    await checked(client, "DELETE", f"/comfymq/jobs/{jid}", status=409)  # pending again: not finished
    await checked(client, "GET", "/comfymq/queue", status=200)
    await checked(client, "POST", "/comfymq/queue/pause", status=200)
    await checked(client, "POST", "/comfymq/queue/resume", status=200)
    await checked(client, "GET", "/comfymq/workers", status=200)
    await checked(client, "POST", "/comfymq/workers/refresh", status=503)  # no broker here
    await checked(client, "POST", "/comfymq/workers/w1/drain", status=503)
    await checked(client, "GET", "/comfymq/stats", status=200)
    await checked(client, "GET", "/comfymq/health", status=200)
    await checked(client, "GET", "/comfymq/health", headers={}, status=200)  # a monitor: {status} only
    await checked(client, "GET", "/comfymq/jobs", headers={}, status=401)
    await checked(client, "GET", "/comfymq/status", status=200)
    _, stored = await checked(
        client,
        "POST",
        "/comfymq/inputs?name=a.png",
        data=b"\x89PNG....",
        status=200,
        headers={**AUTH, "Content-Type": "application/octet-stream"},
    )
    await checked(client, "GET", f"/comfymq/inputs/{stored['sha256']}", status=200)
    await checked(client, "GET", "/comfymq/inputs/" + "0" * 64, status=404)
    await checked(client, "GET", f"/comfymq/artifacts/{jid}/none.png", status=404)
    _, doc = await checked(client, "GET", "/comfymq/openapi.json", status=200)
    assert doc == DOC
    _, task = await checked(client, "POST", "/tasks", json={"prompt": PROMPT}, status=200)
    await checked(client, "GET", f"/tasks/{task['task']['id']}", status=200)
    await checked(client, "GET", "/health", status=200)


def test_the_schemas_have_teeth():
    """What the answers are checked against refuses what an answer must never be."""
    summary = _inline({"$ref": "#/components/schemas/JobSummary"})
    good = {
        "id": "0123456789abcdef",
        "state": "pending",
        "priority": 1,
        "batch_id": None,
        "prompt_id": "p",
        "owner": None,
        "create_time": 1,
        "enqueued_at": 1,
        "updated_at": 1,
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
        "max_attempts": 3,
        "timeout": None,
        "worker": None,
        "progress": None,
        "after": [],
        "error": None,
        "outputs": None,
        "artifacts": [],
    }
    jsonschema.Draft202012Validator(summary).validate(good)
    for bad in ({**good, "state": "done"}, {**good, "id": "XYZ"}, {k: v for k, v in good.items() if k != "after"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(summary).validate(bad)
