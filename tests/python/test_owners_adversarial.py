"""Owners and tokens attacked (api/tokens.py, api/auth.py, api/owners.py and every route that marks a permission or
checks an owner): what a `read`, `worker-admin` or `submit` token, no token, or a revoked one can get out of the
standalone host's app (build_app) and out of the plugin's route table (Plugin: routes that carry their checks
per handler, as inside ComfyUI, with ComfyUI's /api/... copies).

Every route is enumerated from the app's router, so a route added later is attacked too. A failing test here is a
defect of the product: none is marked xfail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import FormData, web
from conftest import free_port

from comfy_nodes.host.standalone import build_app
from comfy_nodes.service import QueueService

pytestmark = pytest.mark.asyncio

ADMIN = "admin-token-12345"
SLOW = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 30}}}
JSON = {"Content-Type": "application/json"}
SECRET_BYTES = b"\x89PNG bob's secret render"
REPO = Path(__file__).resolve().parents[2]


# ---- helpers ------------------------------------------------------------------------------------------------


def bearer(token: str | None, **extra) -> dict:
    h = dict(JSON)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(extra)
    return h


async def req(client, method, path, token=None, body=None, headers=None, data=None):
    """(status, text) of one request; the body is read (an event stream of a finished job ends by itself)."""
    hdrs = bearer(token, **(headers or {}))
    kw = {"data": data} if data is not None else {"json": body}
    resp = await client.request(method, path, headers=hdrs, **kw)
    text = (await resp.read()).decode("utf-8", "replace") if method != "HEAD" else ""
    return resp.status, text


async def jcall(client, method, path, token=None, body=None, status=200, headers=None):
    st, text = await req(client, method, path, token, body, headers)
    assert st == status, (method, path, st, text[:500])
    return json.loads(text) if text else None


def finish(service, job_id, *, fail=False, artifacts=None, outputs=None):
    """Runs job_id to an end through the store (other leases go back to pending)."""
    others = []
    lease = service.store.take("w-test", ignore_pause=True)
    while lease["job_id"] != job_id:
        others.append(lease)
        lease = service.store.take("w-test", ignore_pause=True)
    if fail:
        service.store.fail(job_id, lease["token"], {"type": "boom", "message": "it broke"}, retryable=False)
    else:
        service.store.complete(job_id, lease["token"], outputs=outputs or {}, artifacts=artifacts or [])
    for other in others:
        service.store.cancel(other["job_id"])
        service.store.retry(other["job_id"])


def write_artifact(service, job_id, name, data, mime="image/png") -> dict:
    info = service.artifacts.write(f"{job_id}/{name}", data)
    return {"path": info["path"], "size": info["size"], "sha256": info["sha256"], "mime": mime}


def all_jobs(service) -> list[dict]:
    out, cursor = [], None
    while True:
        page = service.store.list(cursor=cursor, limit=1000, newest_first=False)
        out += page["jobs"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


def job_states(service) -> dict:
    return {j["id"]: (j["state"], j.get("owner"), j.get("batch_id")) for j in all_jobs(service)}


def v2_asset_records(service) -> list[str]:
    folder = Path(service.data_dir) / "v2" / "assets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def snapshot(service, *, log_bytes=True) -> dict:
    """What a request that changes nothing leaves as it was: the jobs, the documents (tokens, templates, webhook
    deliveries...), the queue's pause, v2 asset records and (with log_bytes) every byte the store's log holds."""
    st = service.store.stats()
    snap = {
        "jobs": job_states(service),
        "docs": service.store.list_docs(limit=100_000),
        "paused": st["paused"],
        "assets": v2_asset_records(service),
    }
    if log_bytes:
        snap["log_bytes"] = st["log_bytes"]
    return snap


async def make_tokens(add) -> dict:
    tokens = {}
    for name, role in (("alice", "submit"), ("bob", "submit"), ("dash", "read"), ("ops", "worker-admin")):
        tokens[name] = await add(name, role)
    return tokens


TEMPLATE = {
    "name": "t1",
    "workflow": {"1": {"class_type": "SlowNode", "inputs": {"seconds": 30}}},
    "parameters": {"seconds": {"targets": ["1.seconds"]}},
}


async def bobs_world(client, service, tokens) -> dict:
    """Bob's things on the farm: a pending job in a batch, a finished one with an output file, a failed one, an
    upload (v2 asset), and an admin's template. Returns their ids."""
    bob = tokens["bob"]
    made = await jcall(
        client,
        "POST",
        "/comfymq/jobs",
        bob,
        {"prompt": SLOW, "count": 2, "batch_id": "bob-batch", "metadata": {"prompt_id": "bob-sweep"}},
    )
    pending = [j["id"] for j in made["jobs"]]
    done = (await jcall(client, "POST", "/comfymq/jobs", bob, {"prompt": SLOW, "metadata": {"prompt_id": "bob-done"}}))[
        "jobs"
    ][0]["id"]
    failed = (await jcall(client, "POST", "/comfymq/jobs", bob, {"prompt": SLOW}))["jobs"][0]["id"]
    art = write_artifact(service, done, "out.png", SECRET_BYTES)
    finish(service, done, artifacts=[art], outputs={"9": {"images": [{"filename": "out.png", "secret": "bob-out"}]}})
    finish(service, failed, fail=True)
    f = FormData()
    f.add_field("file", b"bob's upload", filename="b.png", content_type="application/octet-stream")
    f.add_field("content_type", "image/png")
    f.add_field("file_path", "bob.png")
    resp = await client.post(f"{client.v2}/assets", data=f, headers={"Authorization": f"Bearer {bob}"})
    assert resp.status in (200, 201), await resp.text()
    upload = (await resp.json())["id"]
    st, text = await req(client, "POST", "/comfymq/templates", ADMIN, TEMPLATE)
    assert st == 201, text
    return {
        "job": pending[0],
        "pending": pending,
        "done": done,
        "failed": failed,
        "batch": "bob-batch",
        "asset": f"asset_o{done}_0",
        "upload": upload,
        "all": pending + [done, failed],
    }


# ---- the two apps: the standalone host's and the plugin's route table ----------------------------------------


async def _standalone(aiohttp_client, tmp_path):
    """The standalone host's app with a configured admin token and four stored tokens: (client, service, tokens,
    close)."""
    service = QueueService(tmp_path / "data", threads=8)
    client = await aiohttp_client(build_app(service, token=ADMIN))
    client.v2 = "/api/v2"
    client.app_routes = client.server.app.router.routes()

    async def add(name, role):
        return (await jcall(client, "POST", "/comfymq/tokens", ADMIN, {"name": name, "role": role}, 201))["token"]

    return client, service, await make_tokens(add), service.close


def _plugin(tmp_path, token: str | None = ADMIN):
    from comfy_nodes.config import load_config
    from comfy_nodes.plugin import Plugin

    env = {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"}
    if token:
        env["COMFYMQ_TOKEN"] = token
    cfg = load_config(env, user_dir=str(tmp_path / "user"), output_dir=str(tmp_path / "output"))
    plugin = Plugin(cfg)
    routes = web.RouteTableDef()
    try:
        plugin.start(routes)
    except BaseException:
        plugin.close()
        raise
    app = web.Application()  # ComfyUI's app: none of ComfyMQ's middlewares
    app.add_routes(routes)
    app.add_routes(  # as ComfyUI's server does: the same handlers under /api
        [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
    )
    return plugin, app


async def _in_plugin(aiohttp_client, tmp_path):
    """The plugin's route table (as inside ComfyUI) with a configured admin token and four stored tokens."""
    plugin, app = _plugin(tmp_path)
    try:
        client = await aiohttp_client(app)
        client.v2 = "/comfymq/api/v2"
        client.app_routes = app.router.routes()

        async def add(name, role):
            return plugin.service.tokens.add(name, role)

        return client, plugin.service, await make_tokens(add), plugin.close
    except BaseException:
        plugin.close()
        raise


@pytest_asyncio.fixture
async def farm(aiohttp_client, tmp_path):
    client, service, tokens, close = await _standalone(aiohttp_client, tmp_path)
    yield client, service, tokens
    close()


@pytest_asyncio.fixture(params=["standalone", "plugin"])
async def any_farm(request, aiohttp_client, tmp_path):
    make = _standalone if request.param == "standalone" else _in_plugin
    client, service, tokens, close = await make(aiohttp_client, tmp_path)
    yield client, service, tokens
    close()


# ---- every route, enumerated ----------------------------------------------------------------------------------

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def route_list(client) -> list[tuple[str, str]]:
    """(method, canonical path) of every route of the app, once each, plus an OPTIONS for every path."""
    seen, out = set(), []
    for r in client.app_routes:
        canonical = r.resource.canonical if r.resource is not None else None
        if canonical is None:
            continue
        for method in (r.method, "OPTIONS"):
            if method == "*":
                method = "PATCH"
            if (method, canonical) not in seen:
                seen.add((method, canonical))
                out.append((method, canonical))
    return out


def fill(canonical: str, ids: dict) -> str:
    """A concrete path for a canonical one, naming bob's things wherever a route takes an id."""

    def one(m):
        name = m.group(1).split(":")[0]
        before = canonical[: m.start()]
        if name == "id":
            if before.endswith("/batches/"):
                return ids["batch"]
            if before.endswith("/workers/"):
                return "w1"
            if before.endswith("/assets/"):
                return ids["asset"]
            if canonical.endswith("/events"):
                return ids["done"]
            return ids["job"]
        if name == "name":
            if before.endswith("/tokens/"):
                return "bob"
            if before.endswith("/templates/"):
                return "t1"
            return "out.png"  # an artifact's name
        if name == "job":
            return ids["done"]
        if name == "sha256":
            return hashlib.sha256(b"bob's upload").hexdigest()
        if name == "hash":
            return "blake3:" + "0" * 64
        return "x"

    path = re.sub(r"\{([^}]+)\}", one, canonical)
    if path.endswith("/webhooks/deliveries"):
        path += f"?job={ids['done']}&state=all"
    return path


def is_workers_route(path: str) -> bool:
    return "/workers/" in path and "/pairing/" not in path


def is_public(path: str) -> bool:
    """The pairing exchange's two steps and a paired worker's leave take no token (the one-time code, or the leave
    secret, is their credential: pairing/routes.py). With anyone's token or none they must still change nothing
    without it: a 4xx."""
    return path.rstrip("/").endswith(("/pairing/start", "/pairing/finish", "/pairing/leave"))


async def test_a_read_token_changes_nothing_on_any_route(any_farm):
    """Every route of the app, with a `read` token: a write is a 403, and after all of them nothing changed (not one
    byte of the store's log, no document, no job, no asset record)."""
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    before = snapshot(service)
    problems = []
    for method, canonical in route_list(client):
        path = fill(canonical, ids)
        st, text = await req(client, method, path, tokens["dash"], {})
        if st >= 500:
            problems.append(f"{method} {path}: {st} {text[:200]}")
        elif is_public(path):
            if not 400 <= st < 500:
                problems.append(f"{method} {path}: a pairing step without a code got {st} {text[:200]}")
        elif method in WRITE_METHODS and st != 403:
            problems.append(f"{method} {path}: a read token got {st} (want 403) {text[:200]}")
        elif method == "OPTIONS" and 200 <= st < 300:
            problems.append(f"OPTIONS {path}: {st}")
    after = snapshot(service)
    assert not problems, "\n".join(problems)
    assert after == before, "a read token changed state"


async def test_a_worker_admin_token_changes_no_job_and_no_document(any_farm):
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    before = snapshot(service)
    problems = []
    for method, canonical in route_list(client):
        path = fill(canonical, ids)
        st, text = await req(client, method, path, tokens["ops"], {})
        if st >= 500 and not (is_workers_route(path) and st == 503):
            problems.append(f"{method} {path}: {st} {text[:200]}")
        elif is_public(path):
            if not 400 <= st < 500:
                problems.append(f"{method} {path}: a pairing step without a code got {st} {text[:200]}")
        elif method in WRITE_METHODS and not is_workers_route(path) and st != 403:
            problems.append(f"{method} {path}: a worker-admin token got {st} (want 403) {text[:200]}")
    after = snapshot(service)
    assert not problems, "\n".join(problems)
    assert after == before, "a worker-admin token changed state"


CREATES = re.compile(r"(/jobs|/tasks|/inputs|/assets|/assets/from-hash|/templates/t1/jobs)$")


async def test_a_submit_token_touches_and_learns_nothing_of_bobs_on_any_route(any_farm):
    """Alice (submit) on every route, with bob's job, batch, output, asset and deliveries in the path: nothing of
    bob's changes, and no answer she gets names one of bob's jobs or holds his output's bytes (errors may echo the id
    she sent). Admin routes are a 403."""
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    before = snapshot(service, log_bytes=False)
    problems = []
    admin_only = ("/queue/pause", "/queue/resume", "/tokens", "/webhooks", "/templates")
    for method, canonical in route_list(client):
        path = fill(canonical, ids)
        body = {} if not CREATES.search(path) else {"nothing": 1}  # (a create with a bad body creates nothing)
        st, text = await req(client, method, path, tokens["alice"], body)
        if st >= 500 and not (is_workers_route(path) and st == 503):
            problems.append(f"{method} {path}: {st} {text[:200]}")
            continue
        if 200 <= st < 300:
            named = [j for j in ids["all"] if j in text]
            if named:
                problems.append(f"{method} {path}: {st} names bob's job(s) {named}: {text[:300]}")
            if "bob's secret render" in text or "bob-out" in text:
                problems.append(f"{method} {path}: {st} holds bob's output")
            if any(k in path for k in (ids["job"], ids["done"], ids["asset"], ids["batch"])):
                problems.append(f"{method} {path}: {st} on bob's own thing (want 403/404)")
        if method in WRITE_METHODS and not CREATES.search(path) and not is_workers_route(path):
            if any(path.rstrip("/").endswith(a) or f"{a}/" in path for a in admin_only) and st != 403:
                problems.append(f"{method} {path}: {st} (an admin route: want 403)")
    after = snapshot(service, log_bytes=False)
    assert after["jobs"] == before["jobs"], "bob's jobs changed"
    assert after["docs"] == before["docs"] and after["paused"] == before["paused"]
    assert after["assets"] == before["assets"], "an asset record changed"
    assert not problems, "\n".join(problems)


async def test_no_token_and_a_wrong_one_get_401_on_every_route_but_the_health_probes(any_farm):
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    before = snapshot(service)
    problems = []
    for method, canonical in route_list(client):
        if method == "OPTIONS":
            continue
        path = fill(canonical, ids)
        for token in (None, tokens["alice"] + "x", "Bearer", tokens["alice"][:-1]):
            st, text = await req(client, method, path, token, {})
            probe = method in ("GET", "HEAD") and path.rstrip("/").endswith("/health") and "/v2/" not in path
            if is_public(path):
                if not 400 <= st < 500 or st == 401:  # (it takes no token: refused for want of a code instead)
                    problems.append(f"{method} {path}: a pairing step without a code got {st} {text[:120]}")
                continue
            if st != 401 and not (probe and st == 200):
                problems.append(f"{method} {path} token={'none' if token is None else 'wrong'}: {st} {text[:120]}")
    assert not problems, "\n".join(problems)
    assert snapshot(service) == before


# ---- a submit token and bob's jobs, one attack at a time -------------------------------------------------------


@pytest.mark.parametrize(
    "path,extra",
    [
        ("/comfymq/jobs", {}),
        ("/api/comfymq/tasks", {}),
        ("/comfymq/jobs", {"count": 2}),
        ("/tasks", None),
    ],
)
async def test_reusing_bobs_prompt_id_does_not_hand_alice_his_job(farm, path, extra):
    """The store dedups by metadata.prompt_id across all owners: alice sending bob's prompt_id must not get his job
    back ("existed": true with his id, state, batch, owner, outputs and artifacts) nor be able to name it."""
    client, service, tokens = farm
    ids = await bobs_world(client, service, tokens)
    pid = "bob-sweep" if extra and extra.get("count") else "bob-done"
    body = {"prompt": SLOW, "metadata": {"prompt_id": pid}, **(extra or {})}
    before = job_states(service)
    st, text = await req(client, "POST", path, tokens["alice"], body)
    assert st < 500, text
    leaked = [j for j in ids["all"] if j in text]
    assert not leaked, f"POST {path} with bob's prompt_id answered {st} naming bob's job(s) {leaked}: {text[:400]}"
    assert "bob-out" not in text and '"owner": "bob"' not in text, text[:400]
    for j in ids["all"]:
        assert job_states(service)[j] == before[j]


@pytest.mark.parametrize("path", ["/comfymq/jobs", "/api/comfymq/tasks"])
async def test_two_owners_racing_for_one_prompt_id_never_get_each_others_job(farm, path):
    """Alice and bob send the same new prompt_id at once, many times over: both pass the check made before either
    commits (and the host shares one commit between requests that arrive together), so one of them finds the
    other's job. That one must be a 409, never a 200 naming the other's job."""
    client, service, tokens = farm
    for i in range(25):
        body = {"prompt": SLOW, "metadata": {"prompt_id": f"race-{path[-4:]}-{i}"}}
        first = {"prompt": SLOW, "metadata": {"prompt_id": f"first-{path[-4:]}-{i}"}}  # (holds the commit: the rest
        answers = await asyncio.gather(  # come while it is out, and go together)
            req(client, "POST", path, tokens["alice"], first),
            *(req(client, "POST", path, tokens[who], body) for who in ("alice", "bob", "alice", "bob")),
        )
        answers = answers[1:]
        owners_now = {j: owner for j, (_, owner, _) in job_states(service).items()}
        for who, (st, text) in zip(("alice", "bob", "alice", "bob"), answers, strict=True):
            assert st in (200, 409), text
            if st == 200:
                named = [j for j, owner in owners_now.items() if j in text and owner != who]
                assert not named, f"{who} got {named} of another owner: {text[:300]}"


async def test_after_naming_bobs_job_tells_alice_nothing_about_it(farm):
    """`after` (and an output reference, which makes an `after`) naming bob's job: alice learns its state through the
    answer's `waiting` ("waits for job X (pending)"), the 400 for a failed one ("is failed"), and through her own job
    later. A job of another owner must be refused as one the host does not have."""
    client, service, tokens = farm
    ids = await bobs_world(client, service, tokens)
    missing = format(int(ids["job"], 16) - 1, "016x")
    assert missing not in job_states(service)
    st, _ = await req(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": SLOW, "after": [missing]})
    assert st == 400
    problems = []
    for which in ("job", "failed", "done"):
        bobs = ids[which]
        for path, body in (
            ("/comfymq/jobs", {"prompt": SLOW, "after": [bobs]}),
            ("/comfymq/templates/t1/jobs", {"params": {"seconds": 3}, "after": [bobs]}),
        ):
            st, text = await req(client, "POST", path, tokens["alice"], body)
            told = [w for w in ("pending", "running", "failed", "succeeded", "cancelled") if w in text]
            if not 400 <= st < 500 or told:  # (as for a job that does not exist: a 400 that says nothing of it)
                problems.append(f"{path} after=[bob's {which} job]: {st} {text[:300]}")
    hers = [j for j, (_, owner, _) in job_states(service).items() if owner == "alice"]
    waits = [j for j in hers if set(service.store.get(j, with_prompt=False).get("after") or []) & set(ids["all"])]
    assert not problems, "\n".join(problems) + f"\n(alice's jobs now waiting for bob's: {waits})"


async def test_alice_cannot_copy_bobs_output_into_her_job(farm):
    """An output reference ({"comfymq_output": {"job": bob's}}) or a v2 core/ASSET naming bob's output
    (asset_o<job>_<n>) copies bob's file into the input store and into alice's job: his render becomes her input."""
    client, service, tokens = farm
    ids = await bobs_world(client, service, tokens)
    before = job_states(service)
    ref = {"comfymq_output": {"job": ids["done"], "index": 0}}
    attempts = [
        ("/comfymq/jobs", {"prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": ref}}}}),
        ("/comfymq/jobs", {"prompt": SLOW, "sweep": {"1.seconds": [ref]}}),
        (
            f"{client.v2}/jobs",
            {
                "workflow": {
                    "1": {
                        "class_type": "LoadImage",
                        "inputs": {"image": {"__type": "core/ASSET", "info": {"id": ids["asset"]}}},
                    }
                }
            },
        ),
    ]
    problems = []
    for path, body in attempts:
        st, text = await req(client, "POST", path, tokens["alice"], body)
        if 200 <= st < 300:
            problems.append(f"POST {path}: {st}, a job of alice's holds bob's output: {text[:300]}")
    new = [j for j in job_states(service) if j not in before]
    assert not problems, "\n".join(problems) + f"\n(new jobs of alice's: {new})"


async def test_bobs_outputs_are_not_served_to_alice_as_v2_assets(any_farm):
    """GET <v2>/assets/asset_o<bob's job>_0 and .../content: bob's output, served to alice (job ids are enqueue time
    << 16, so they are easy to guess)."""
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    st, text = await req(client, "GET", f"/comfymq/artifacts/{ids['done']}/out.png", tokens["alice"])
    assert st == 403, "the /comfymq artifact route itself refuses her (the reference behaviour)"
    for path in (f"{client.v2}/assets/{ids['asset']}", f"{client.v2}/assets/{ids['asset']}/content"):
        resp = await client.get(path, headers=bearer(tokens["alice"]))
        body = await resp.read()
        assert resp.status in (403, 404), f"GET {path} as alice: {resp.status} {body[:200]!r}"
        assert SECRET_BYTES not in body


async def test_alice_cannot_delete_bobs_upload(any_farm):
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    resp = await client.delete(
        f"{client.v2}/assets/{ids['upload']}", headers={"Authorization": f"Bearer {tokens['alice']}"}
    )
    assert resp.status in (403, 404), f"alice deleted bob's upload: {resp.status} {await resp.text()}"
    st, _ = await req(client, "GET", f"{client.v2}/assets/{ids['upload']}", tokens["bob"])
    assert st == 200, "bob's upload is gone"


async def test_bobs_batch_stays_bobs(any_farm):
    """Alice queues into bob's batch_id (a plain job, a template job): bob must still see and cancel his batch, and
    his cancel must not cancel alice's job; alice's cancel of the batch is a 403 that changes nothing."""
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    hers = []
    for path, body in (
        ("/comfymq/jobs", {"prompt": SLOW, "batch_id": ids["batch"]}),
        ("/comfymq/jobs", {"prompt": SLOW, "batch_id": ids["batch"], "count": 2}),
        ("/comfymq/templates/t1/jobs", {"params": {"seconds": 3}, "batch_id": ids["batch"]}),
    ):
        st, text = await req(client, "POST", path, tokens["alice"], body)
        assert st < 500, text
        if st == 200:
            hers += [j["id"] for j in json.loads(text)["jobs"]]
    st, text = await req(client, "POST", f"/comfymq/batches/{ids['batch']}/cancel", tokens["alice"], {})
    assert st == 403, text
    assert all(job_states(service)[j][0] == "pending" for j in ids["pending"])
    st, text = await req(client, "GET", f"/comfymq/batches/{ids['batch']}", tokens["bob"])
    assert st == 200, f"bob can no longer see his own batch once alice joined it (alice's jobs {hers}): {st} {text}"
    assert not [j for j in hers if j in text], "bob's batch view shows alice's jobs"
    st, text = await req(client, "POST", f"/comfymq/batches/{ids['batch']}/cancel", tokens["bob"], {})
    assert st == 200, text
    assert all(job_states(service)[j][0] == "pending" for j in hers), "bob's batch cancel cancelled alice's jobs"


async def test_lists_and_filters_show_alice_none_of_bobs_jobs(any_farm):
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    mine = (await jcall(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": SLOW, "batch_id": "alice-b"}))[
        "jobs"
    ][0]["id"]
    v2 = f"{client.v2}/jobs"
    await jcall(client, "POST", v2, tokens["bob"], {"workflow": SLOW, "metadata": {"project": "x"}}, 201)
    for path in (
        "/comfymq/jobs",
        "/comfymq/jobs?prompt_id=bob-done",
        "/comfymq/jobs?prompt_id=bob-sweep-0001",
        "/comfymq/jobs?owner=bob",
        "/comfymq/jobs?batch=bob-batch",
        "/comfymq/jobs?state=succeeded,failed,pending,cancelled,running&order=oldest",
        "/api/comfymq/tasks?owner=bob",
        "/comfymq/templates/t1/jobs",
        f"{v2}",
        f"{v2}?metadata[project]=x",
    ):
        st, text = await req(client, "GET", path, tokens["alice"])
        assert st == 200, (path, text)
        body = json.loads(text)
        assert not [j for j in ids["all"] if j in text], f"{path} shows bob's jobs to alice"
        assert all(j.get("owner") in (None, "alice") for j in body.get("jobs", [])), (path, text[:300])
    assert mine in (await req(client, "GET", "/comfymq/jobs", tokens["alice"]))[1]
    st, _ = await req(client, "GET", "/comfymq/webhooks/deliveries?state=all", tokens["alice"])
    assert st == 400
    for job in (ids["done"], ids["failed"]):
        st, _ = await req(client, "GET", f"/comfymq/webhooks/deliveries?state=all&job={job}", tokens["alice"])
        assert st == 403


async def test_a_comfy_user_header_never_changes_a_submit_tokens_owner(any_farm):
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    spoof = {"comfy-user": "bob"}
    me = await jcall(client, "GET", "/comfymq/whoami", tokens["alice"], headers=spoof)
    assert me["name"] == "alice" and me["owner"] == "alice"
    made = []
    made.append(
        (await jcall(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": SLOW}, headers=spoof))["jobs"][0][
            "id"
        ]
    )
    made.append(
        (
            await jcall(
                client, "POST", "/comfymq/templates/t1/jobs", tokens["alice"], {"params": {"seconds": 2}}, headers=spoof
            )
        )["jobs"][0]["id"]
    )
    made.append(
        (await jcall(client, "POST", f"{client.v2}/jobs", tokens["alice"], {"workflow": SLOW}, 201, headers=spoof))[
            "id"
        ]
    )
    for j in made:
        assert service.store.get(j, with_prompt=False)["owner"] == "alice"
    st, text = await req(client, "GET", "/comfymq/jobs?owner=bob", tokens["alice"], headers=spoof)
    assert st == 200 and json.loads(text)["jobs"] == []
    st, _ = await req(client, "POST", f"/comfymq/jobs/{ids['job']}/cancel", tokens["alice"], {}, headers=spoof)
    assert st == 403
    assert service.store.get(ids["job"], with_prompt=False)["state"] == "pending"


@pytest.mark.parametrize("owner", ["bob", "Alice", "alice ", " alice", "alice\u200b", "аlice", "admin", None, ""])
async def test_an_owner_field_cannot_impersonate(farm, owner):
    """owner in POST /comfymq/jobs and template jobs: anything but alice's own name (or none) is a 403; v2 metadata
    `owner` is a label, never the owner."""
    client, service, tokens = farm
    await jcall(client, "POST", "/comfymq/templates", ADMIN, TEMPLATE, 201)
    for path, body in (
        ("/comfymq/jobs", {"prompt": SLOW, "owner": owner}),
        ("/comfymq/templates/t1/jobs", {"params": {"seconds": 1}, "owner": owner}),
    ):
        st, text = await req(client, "POST", path, tokens["alice"], body)
        if owner in (None, ""):
            assert st == 200, text
            for j in json.loads(text)["jobs"]:
                assert service.store.get(j["id"], with_prompt=False)["owner"] == "alice"
        else:
            assert st == 403, (path, owner, st, text)
    st, text = await req(
        client, "POST", "/api/v2/jobs", tokens["alice"], {"workflow": SLOW, "metadata": {"owner": "bob"}}
    )
    if st == 201:
        assert service.store.get(json.loads(text)["id"], with_prompt=False)["owner"] == "alice"
    assert all(j[1] == "alice" for j in job_states(service).values())


async def test_an_idempotency_key_cannot_be_squatted_through_a_v1_prompt_id(farm):
    """v2 keys become prompt_ids ("v2-key-" + sha256(owner NUL key)[:40]) in the one prompt_id space POST
    /comfymq/jobs writes to as well: alice, knowing bob's key, takes its prompt_id first and bob's every submit with
    that key is then a 422 idempotency_key_reuse (and were the hashes equal, his replay would be her job)."""
    client, service, tokens = farm
    key = "nightly-2024-06-01"
    squat = "v2-key-" + hashlib.sha256(f"bob\0{key}".encode()).hexdigest()[:40]
    st, text = await req(
        client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": SLOW, "metadata": {"prompt_id": squat}}
    )
    resp = await client.post(
        "/api/v2/jobs", json={"workflow": SLOW}, headers={**bearer(tokens["bob"]), "Idempotency-Key": key}
    )
    text = await resp.text()
    assert resp.status == 201, f"bob's first submit with his own key: {resp.status} {text}"
    assert service.store.get(json.loads(text)["id"], with_prompt=False)["owner"] == "bob"


# ---- header and path tricks ------------------------------------------------------------------------------------


async def raw(client, head: str | bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request written to the socket as given; (status, whole answer)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write((head.encode("latin-1") if isinstance(head, str) else head) + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
    finally:
        writer.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else 0), data


def head_of(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if method in WRITE_METHODS:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_authorization_header_tricks_never_raise_a_tokens_rights(any_farm):
    client, service, tokens = any_farm
    alice, dash = tokens["alice"], tokens["dash"]
    problems = []
    pause = ("POST", "/comfymq/queue/pause")
    cases = {
        "read then admin": [("Authorization", f"Bearer {dash}"), ("Authorization", f"Bearer {ADMIN}")],
        "submit then admin": [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {ADMIN}")],
        "admin after a bad one": [("Authorization", "Bearer nope-nope-nope"), ("Authorization", f"Bearer {ADMIN}")],
        "admin in another header": [("Authorization", f"Bearer {dash}"), ("X-Authorization", f"Bearer {ADMIN}")],
        "two tokens in one": [("Authorization", f"Bearer {dash} {ADMIN}")],
        "two tokens comma": [("Authorization", f"Bearer {dash}, Bearer {ADMIN}")],
        "admin as the scheme": [("Authorization", f"{ADMIN} {dash}")],
        "admin in basic": [("Authorization", f"Basic {ADMIN}")],
        "read with tab": [("Authorization", f"Bearer\t{ADMIN}")],
    }
    for what, headers in cases.items():
        st, data = await raw(client, head_of(*pause, headers, b"{}"), b"{}")
        if st not in (400, 401, 403):
            problems.append(f"{what}: {st} {data[:300]!r}")
    assert not service.store.stats()["paused"], "a header trick paused the queue"
    # spellings a client may send: the token works as itself (never more)
    for spelled in (f"bearer {dash}", f"BEARER {dash}", f"Bearer   {dash}   ", f"Bearer {dash}\t"):
        st, data = await raw(client, head_of("GET", "/comfymq/whoami", [("Authorization", spelled)]))
        if st != 200 or b'"role": "read"' not in data:
            problems.append(f"{spelled!r}: {st} {data[-200:]!r}")
        st, data = await raw(client, head_of(*pause, [("Authorization", spelled)], b"{}"), b"{}")
        if st != 403:
            problems.append(f"{spelled!r} pause: {st}")
    # bytes no token holds: a 401 (or the parser's 400), never a 500 nor a grant
    for what, value in (
        ("non-ascii", "Bearer ünïcødé-tøken".encode("utf-8")),
        ("latin-1 byte", b"Bearer tok\xffen-12345"),
        ("admin with a NUL", f"Bearer {ADMIN}\x00".encode()),
        ("admin + newline-ish", f"Bearer {ADMIN}\x0b".encode()),
        ("admin twice", f"Bearer {ADMIN}{ADMIN}".encode()),
        ("long", b"Bearer " + b"a" * 2000),
        ("huge", b"Bearer " + b"a" * 100_000),
    ):
        head = head_of(*pause, []).encode()[:-2] + b"Authorization: " + value + b"\r\n\r\n"
        st, data = await raw(client, head, b"{}")
        if st not in (400, 401, 431):
            problems.append(f"{what}: {st} {data[:200]!r}")
    # a token followed by CRLF and a folded line (obs-fold): never the admin
    st, data = await raw(client, head_of(*pause, [("Authorization", f"Bearer {dash}\r\n {ADMIN}")], b"{}"), b"{}")
    if st not in (400, 401, 403):
        problems.append(f"obs-fold: {st} {data[:200]!r}")
    assert not service.store.stats()["paused"], "a header trick paused the queue"
    assert not problems, "\n".join(problems)


async def test_path_spellings_never_get_past_a_tokens_role(any_farm):
    """Mirrors (/api/comfymq), aliases (/tasks), trailing slashes, doubled slashes, percent-encoding, case, HEAD and
    OPTIONS: a read token pauses nothing, alice cancels none of bob's jobs."""
    client, service, tokens = any_farm
    ids = await bobs_world(client, service, tokens)
    job = ids["job"]
    enc = "".join(f"%{ord(c):02x}" for c in job)
    problems = []
    for method, path, who in (
        ("POST", "/comfymq/queue/pause", "dash"),
        ("POST", "/api/comfymq/queue/pause", "dash"),
        ("POST", "/comfymq/queue/pause/", "dash"),
        ("POST", "//comfymq/queue/pause", "dash"),
        ("POST", "/comfymq//queue/pause", "dash"),
        ("POST", "/comfymq/queue/%70ause", "dash"),
        ("POST", "/comfymq/queue/pause%2f", "dash"),
        ("POST", "/COMFYMQ/queue/pause", "dash"),
        ("POST", "/comfymq/./queue/pause", "dash"),
        ("POST", "/comfymq/x/../queue/pause", "dash"),
        ("POST", "/comfymq/queue/pause?x=1", "ops"),
        ("PUT", "/comfymq/queue/pause", "alice"),
        ("PATCH", "/comfymq/queue/pause", "alice"),
        ("OPTIONS", "/comfymq/queue/pause", "alice"),
        ("POST", "/comfymq/queue/pause", "alice"),
        ("POST", f"/comfymq/jobs/{job}/cancel", "dash"),
        ("POST", f"/comfymq/jobs/{job}/cancel", "alice"),
        ("POST", f"/comfymq/tasks/{job}/cancel", "alice"),
        ("POST", f"/api/comfymq/tasks/{job}/cancel", "alice"),
        ("POST", f"/comfymq/jobs/{enc}/cancel", "alice"),
        ("POST", f"/comfymq/jobs/{job}/cancel/", "alice"),
        ("POST", f"/comfymq/jobs/{job}%2fcancel", "alice"),
        ("DELETE", f"/comfymq/jobs/{job}", "alice"),
        ("DELETE", f"/api/comfymq/tasks/{job}", "alice"),
        ("POST", f"/comfymq/batches/{ids['batch']}/cancel", "alice"),
        ("POST", f"/api/comfymq/batches/{ids['batch']}/cancel", "alice"),
        ("POST", f"{client.v2}/jobs/{job}/cancel", "alice"),
        ("POST", f"/api{client.v2}/jobs/{job}/cancel", "alice"),
        ("DELETE", "/comfymq/tokens/bob", "alice"),
        ("DELETE", "/comfymq/tokens/%62ob", "dash"),
        ("DELETE", "/api/comfymq/tokens/bob", "ops"),
        ("POST", "/comfymq/tokens", "alice"),
        ("DELETE", "/comfymq/templates/t1", "alice"),
        ("PUT", "/comfymq/templates/t1", "alice"),
    ):
        st, data = await raw(client, head_of(method, path, [("Authorization", f"Bearer {tokens[who]}")], b"{}"), b"{}")
        if 200 <= st < 300 or st >= 500:
            problems.append(f"{method} {path} as {who}: {st} {data[-200:]!r}")
    assert not problems, "\n".join(problems)
    assert not service.store.stats()["paused"]
    assert all(job_states(service)[j][0] == "pending" for j in ids["pending"])
    assert {t["name"] for t in service.tokens.list()} >= {"alice", "bob", "dash", "ops"}
    assert service.templates.get("t1", None) is not None


# ---- token names, revokes, open and closed ---------------------------------------------------------------------


async def test_token_names_that_look_like_other_things(farm):
    client, service, tokens = farm
    refused = [
        "admin",
        "аdmin",
        "admin ",
        " admin",
        "adm\u200bin",
        "a" * 65,
        "../x",
        "a/b",
        "",
        ".x",
        "-x",
        "x\n",
        "x:y",
    ]
    for name in refused:
        st, text = await req(client, "POST", "/comfymq/tokens", ADMIN, {"name": name, "role": "admin"})
        assert st == 400, (name, st, text)
    for bad in (None, 5, ["x"], {"a": 1}):
        st, _ = await req(client, "POST", "/comfymq/tokens", ADMIN, {"name": bad, "role": "read"})
        assert st == 400, bad
    # names that are allowed are what they say: "Admin" is a name, not the admin; a long name is kept whole
    made = await jcall(client, "POST", "/comfymq/tokens", ADMIN, {"name": "Admin", "role": "submit"}, 201)
    me = await jcall(client, "GET", "/comfymq/whoami", made["token"])
    assert me == {**me, "name": "Admin", "role": "submit", "owner": "Admin"}
    admins = (await jcall(client, "POST", "/comfymq/jobs", ADMIN, {"prompt": SLOW}))["jobs"][0]["id"]
    assert service.store.get(admins, with_prompt=False)["owner"] == "admin"
    st, _ = await req(client, "GET", f"/comfymq/jobs/{admins}", made["token"])
    assert st == 403, "a submit token named 'Admin' sees the admin's jobs"
    await jcall(client, "POST", "/comfymq/queue/pause", made["token"], {}, 403)
    long = "L" + "x" * 63
    made = await jcall(client, "POST", "/comfymq/tokens", ADMIN, {"name": long, "role": "read"}, 201)
    assert (await jcall(client, "GET", "/comfymq/whoami", made["token"]))["name"] == long
    # the CLI-side book refuses the same names
    for name in refused:
        with pytest.raises(ValueError):
            service.tokens.add(name, "admin")
    # revoking by a name that is no name never reaches another document
    for name in ("..", "admin", "token", "%2e%2e", "bob%2f..%2falice"):
        st, _ = await req(client, "DELETE", f"/comfymq/tokens/{name}", ADMIN)
        assert st in (404, 405), name
    assert {"alice", "bob", "dash", "ops"} <= {t["name"] for t in service.tokens.list()}


async def test_a_revoked_token_never_comes_back_with_more_rights(aiohttp_client, tmp_path):
    """No configured token; an admin and a submit token stored (the farm is closed). Revoke alice, then the admin
    (rotating it): the store holds no token, so TokenBook.resolve answers OPEN for every presented token, alice's
    revoked one included, and she is an admin: she may pause the queue and make herself an admin token."""
    service = QueueService(tmp_path / "data")
    try:
        client = await aiohttp_client(build_app(service))
        root = service.tokens.add("root", "admin")
        alice = service.tokens.add("alice", "submit")
        await jcall(client, "POST", "/comfymq/queue/pause", alice, {}, 403)
        await jcall(client, "DELETE", "/comfymq/tokens/alice", root)
        st, _ = await req(client, "GET", "/comfymq/jobs", alice)
        assert st == 401
        await jcall(client, "DELETE", "/comfymq/tokens/root", root)  # the admin rotates its token...
        st, text = await req(client, "POST", "/comfymq/queue/pause", alice, {})
        assert st == 401, f"alice's revoked submit token paused the queue: {st} {text}"
        st, text = await req(client, "POST", "/comfymq/tokens", alice, {"name": "eve", "role": "admin"})
        assert st == 401, f"alice's revoked submit token made an admin token: {st} {text}"
    finally:
        service.close()


async def test_a_revoke_racing_requests_lets_none_through_after_it(farm):
    client, service, tokens = farm
    alice = tokens["alice"]
    stop = asyncio.Event()
    results = []

    async def hammer():
        while not stop.is_set():
            started = asyncio.get_running_loop().time()
            st, _ = await req(client, "POST", "/comfymq/jobs", alice, {"prompt": SLOW})
            results.append((st, started))

    tasks = [asyncio.create_task(hammer()) for _ in range(4)]
    await asyncio.sleep(0.2)
    await jcall(client, "DELETE", "/comfymq/tokens/alice", ADMIN)
    revoked_at = asyncio.get_running_loop().time()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    assert {st for st, _ in results} <= {200, 401}, results
    late = [(st, t) for st, t in results if st == 200 and t > revoked_at]
    assert not late, f"requests answered 200 after the revoke: {late[:5]}"
    n = sum(1 for j in all_jobs(service) if j.get("owner") == "alice")
    assert n == sum(1 for st, _ in results if st == 200), "a job was queued for a request that got no 200"


async def test_the_first_token_closes_an_open_plugin_at_once(aiohttp_client, tmp_path):
    """Inside ComfyUI without COMFYMQ_TOKEN the API is open; the first stored token closes every route of the plugin
    (and the /api copies) at once, and a comfy-user header is no way back in."""
    plugin, app = _plugin(tmp_path, token=None)
    try:
        client = await aiohttp_client(app)
        st, _ = await req(client, "POST", "/comfymq/jobs", None, {"prompt": SLOW})
        assert st == 200
        alice = plugin.service.tokens.add("alice", "submit")
        for path in ("/comfymq/jobs", "/api/comfymq/jobs", "/comfymq/api/v2/jobs", "/api/comfymq/api/v2/jobs"):
            st, _ = await req(client, "GET", path, None, headers={"comfy-user": "alice"})
            assert st == 401, path
        st, _ = await req(client, "POST", "/comfymq/queue/pause", None, {}, headers={"comfy-user": "admin"})
        assert st == 401
        st, _ = await req(client, "POST", "/comfymq/tokens", alice, {"name": "eve", "role": "admin"})
        assert st == 403
        # the open API's jobs (no owner) are not alice's
        assert (await jcall(client, "GET", "/comfymq/jobs", alice))["jobs"] == []
    finally:
        plugin.close()


# ---- secrets -----------------------------------------------------------------------------------------------------


async def test_a_tokens_secret_is_never_in_an_answer_a_log_or_the_data_dir(farm, caplog):
    client, service, tokens = farm
    caplog.set_level(logging.DEBUG)
    alice = tokens["alice"]
    answers = []
    for method, path, token, body in (
        ("GET", "/comfymq/whoami", alice, None),
        ("GET", "/comfymq/tokens", ADMIN, None),
        ("GET", "/comfymq/tokens", alice, None),
        ("POST", "/comfymq/tokens", alice, {"name": "eve", "role": "admin"}),
        ("POST", "/comfymq/tokens", ADMIN, {"name": "alice", "role": "admin"}),
        ("POST", "/comfymq/queue/pause", alice, {}),
        ("GET", "/comfymq/jobs", alice + "x", None),
        ("GET", "/comfymq/jobs", alice[:-1], None),
        ("POST", "/comfymq/jobs", alice, {"prompt": SLOW, "owner": "bob"}),
        ("POST", "/comfymq/jobs", alice, {"prompt": SLOW, "bogus": 1}),
        ("GET", "/comfymq/openapi.json", alice, None),
        ("GET", "/comfymq/stats", alice, None),
        ("GET", "/comfymq/health", None, None),
        ("GET", "/comfymq/webhooks", ADMIN, None),
    ):
        st, text = await req(client, method, path, token, body)
        answers.append(text)
    for h in (f"Basic {alice}", f"Token {alice}", f"Bearer {alice} extra"):
        resp = await client.get("/comfymq/jobs", headers={"Authorization": h})
        answers.append(await resp.text())
    # the host's own admin token, too, is in no answer; each secret only in the answer that made it
    secrets_ = list(tokens.values()) + [ADMIN]
    everything = "\n".join(answers)
    assert not [s for s in secrets_ if s in everything], "a token's secret is in an answer"
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert not [s for s in secrets_ if s in logged], "a token's secret is in the log"
    assert not [s for s in secrets_ if s in repr(service.store.list_docs(limit=100_000))]
    service.store.checkpoint()
    leaked = []
    for p in Path(service.data_dir).rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            leaked += [str(p) for s in secrets_ if s.encode() in data]
    assert not leaked, f"a token's secret is written in clear: {leaked}"


async def test_the_cli_shows_a_token_once_and_never_again(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_")}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "comfy_nodes", "tokens", *args, "--data-dir", str(tmp_path / "d")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("add", "carol", "--role", "submit")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token and token not in made.stderr
    listed = cli("list")
    assert listed.returncode == 0 and token not in listed.stdout + listed.stderr
    assert "carol" in listed.stdout
    again = cli("add", "carol")
    assert again.returncode != 0 and token not in again.stdout + again.stderr
    bad = cli("revoke", token[:40])  # a secret pasted as a name: the error must not make it a log line either
    assert bad.returncode != 0
    for p in (tmp_path / "d").rglob("*"):
        if p.is_file():
            assert token.encode() not in p.read_bytes(), p


async def test_the_webhook_secret_is_in_no_answer_to_a_token_that_is_not_an_admin(any_farm):
    """GET /comfymq/webhooks holds the host's signing secret (whsec_...) and its own targets: an admin's only. Every
    GET and HEAD route, with a read, a worker-admin and a submit token, answers neither."""
    client, service, tokens = any_farm
    if service.webhooks is None:
        service.start_webhooks(["http://127.0.0.1:9/hook?key=host-target-secret"], base_url="http://127.0.0.1")
    ids = await bobs_world(client, service, tokens)
    info = await jcall(client, "GET", "/comfymq/webhooks", ADMIN)
    secret = info["secret"]
    assert secret and secret.startswith("whsec_")
    problems = []
    for who in ("dash", "ops", "alice"):
        for method, canonical in route_list(client):
            if method not in ("GET", "HEAD"):
                continue
            path = fill(canonical, ids)
            st, text = await req(client, method, path, tokens[who])
            if secret in text or secret.split("_", 1)[1] in text:
                problems.append(f"{method} {path} as {who}: {st} holds the webhook secret")
            if "/webhooks" in path and not path.split("?")[0].endswith("/deliveries") and st != 403:
                problems.append(f"{method} {path} as {who}: {st} (want 403)")
    assert not problems, "\n".join(problems)


async def test_an_owners_max_pending_holds_through_retries(farm):
    """A submit token with limits {"max_pending": 1}: past it a new job is a 429. Cancelling a job and retrying it
    later puts it back to pending past the limit unless retry is admitted like an enqueue."""
    client, service, tokens = farm
    capped = (
        await jcall(
            client,
            "POST",
            "/comfymq/tokens",
            ADMIN,
            {"name": "capped", "role": "submit", "limits": {"max_pending": 1}},
            201,
        )
    )["token"]
    first = (await jcall(client, "POST", "/comfymq/jobs", capped, {"prompt": SLOW}))["jobs"][0]["id"]
    st, text = await req(client, "POST", "/comfymq/jobs", capped, {"prompt": SLOW})
    assert st == 429, text
    await jcall(client, "POST", f"/comfymq/jobs/{first}/cancel", capped, {})
    await jcall(client, "POST", "/comfymq/jobs", capped, {"prompt": SLOW})
    st, text = await req(client, "POST", f"/comfymq/jobs/{first}/retry", capped, {})
    pending = [j for j in all_jobs(service) if j.get("owner") == "capped" and j["state"] == "pending"]
    assert len(pending) <= 1, f"retry took 'capped' past max_pending 1: {st} {text[:200]} ({len(pending)} pending)"


async def test_the_hosts_own_webhook_targets_are_not_shown_to_a_submit_token(tmp_path, aiohttp_client):
    """The host's targets (config webhooks: URLs that may hold a receiver's token) are shown in GET /comfymq/webhooks,
    an admin's only. Every job's ending is delivered to them too, and a job's deliveries (GET /comfymq/jobs/{id}
    `webhooks`, GET /comfymq/webhooks/deliveries?job=) show each delivery's URL: alice's own job shows her the
    host's targets."""
    service = QueueService(tmp_path / "data")
    try:
        client = await aiohttp_client(build_app(service, token=ADMIN))
        service.start_webhooks(
            ["http://127.0.0.1:9/hook?key=host-target-secret"], base_url="http://127.0.0.1", poll=0.05, backoff=(60,)
        )
        alice = (await jcall(client, "POST", "/comfymq/tokens", ADMIN, {"name": "alice", "role": "submit"}, 201))[
            "token"
        ]
        mine = (await jcall(client, "POST", "/comfymq/jobs", alice, {"prompt": SLOW}))["jobs"][0]["id"]
        finish(service, mine)
        service.webhooks.kick()
        for _ in range(100):
            listed = await jcall(client, "GET", f"/comfymq/webhooks/deliveries?state=all&job={mine}", ADMIN)
            if listed["deliveries"]:
                break
            await asyncio.sleep(0.05)
        assert listed["deliveries"], "no delivery was made for the host's target"
        seen = []
        for path in (f"/comfymq/jobs/{mine}", f"/comfymq/webhooks/deliveries?state=all&job={mine}"):
            st, text = await req(client, "GET", path, alice)
            assert st == 200, text
            if "host-target-secret" in text:
                seen.append(path)
        assert not seen, f"alice (submit) sees the host's own webhook URL in {seen}"
    finally:
        service.close()
