"""Owners and tokens (api/tokens.py, api/owners.py): tokens with a name and a role, kept hashed in the store and
effective at once; what each role may do (403s that name it); a submit token's jobs are its own (it sees, cancels,
retries and deletes those only, in /comfymq and the v2 API alike); the CLI makes and revokes them on a data dir or
through a running host."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_asyncio
from http_host import REPO_ROOT, HostProcess

from comfy_nodes.host.standalone import build_app

ADMIN = "admin-token-12345"
PROMPT = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 30}}}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def call(client, method, path, token, body=None, status=200):
    resp = await client.request(method, path, headers=bearer(token), json=body)
    data = await resp.json()
    assert resp.status == status, (method, path, resp.status, data)
    return data


@pytest_asyncio.fixture
async def farm(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, token=ADMIN))
    tokens = {}
    for name, role in (("alice", "submit"), ("bob", "submit"), ("dash", "read"), ("ops", "worker-admin")):
        made = await call(client, "POST", "/comfymq/tokens", ADMIN, {"name": name, "role": role}, 201)
        tokens[name] = made["token"]
    return client, service, tokens


@pytest.mark.asyncio
async def test_tokens_are_stored_hashed_and_listed_without_their_secret(farm):
    client, service, tokens = farm
    listed = (await call(client, "GET", "/comfymq/tokens", ADMIN))["tokens"]
    assert [(t["name"], t["role"]) for t in listed] == [
        ("alice", "submit"),
        ("bob", "submit"),
        ("dash", "read"),
        ("ops", "worker-admin"),
    ]
    everything = repr(service.store.list_docs(limit=100_000))
    assert all(t not in everything for t in tokens.values()), "a token is in the store in clear"
    assert (await call(client, "GET", "/comfymq/whoami", tokens["alice"])) == {
        "name": "alice",
        "role": "submit",
        "open": False,
        "owner": "alice",
    }
    await call(client, "POST", "/comfymq/tokens", ADMIN, {"name": "alice", "role": "read"}, 409)
    await call(client, "POST", "/comfymq/tokens", ADMIN, {"name": "../x", "role": "read"}, 400)
    await call(client, "POST", "/comfymq/tokens", ADMIN, {"name": "eve", "role": "root"}, 400)
    await call(client, "POST", "/comfymq/tokens", tokens["dash"], {"name": "eve", "role": "admin"}, 403)


@pytest.mark.asyncio
async def test_a_submit_token_sees_and_changes_its_own_jobs_only(farm):
    client, service, tokens = farm
    a = (await call(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": PROMPT}))["jobs"][0]["id"]
    b = (await call(client, "POST", "/comfymq/jobs", tokens["bob"], {"prompt": PROMPT}))["jobs"][0]["id"]
    assert service.store.get(a, with_prompt=False)["owner"] == "alice"
    err = await call(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": PROMPT, "owner": "bob"}, 403)
    assert "as 'alice' only" in err["error"]["message"]
    # lists: own jobs only; an admin or a read token sees all
    assert [j["id"] for j in (await call(client, "GET", "/comfymq/jobs", tokens["bob"]))["jobs"]] == [b]
    assert {j["id"] for j in (await call(client, "GET", "/comfymq/jobs", tokens["dash"]))["jobs"]} == {a, b}
    for method, path in (
        ("GET", f"/comfymq/jobs/{a}"),
        ("POST", f"/comfymq/jobs/{a}/cancel"),
        ("POST", f"/comfymq/jobs/{a}/retry"),
        ("DELETE", f"/comfymq/jobs/{a}"),
        ("GET", f"/comfymq/tasks/{a}"),
        ("GET", f"/tasks/{a}"),
    ):
        err = await call(client, method, path, tokens["bob"], status=403)
        assert "its own jobs" in err["error"]["message"], err
    assert service.store.get(a, with_prompt=False)["state"] == "pending", "nothing of alice's changed"
    await call(client, "POST", f"/comfymq/jobs/{a}/cancel", tokens["alice"])
    await call(client, "POST", f"/comfymq/jobs/{a}/retry", tokens["alice"])
    # a batch is changed by its owner only
    batch = (await call(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": PROMPT, "count": 2}))["batch_id"]
    await call(client, "POST", f"/comfymq/batches/{batch}/cancel", tokens["bob"], status=403)
    await call(client, "GET", f"/comfymq/batches/{batch}", tokens["bob"], status=403)
    assert (await call(client, "POST", f"/comfymq/batches/{batch}/cancel", tokens["alice"]))["cancelled"] == 2


@pytest.mark.asyncio
async def test_each_role_may_do_what_it_is_for_and_the_refusal_says_what(farm):
    client, service, tokens = farm
    err = await call(client, "POST", "/comfymq/queue/pause", tokens["dash"], status=403)
    assert err["error"]["message"] == "token 'dash' (role read) may not do this (it needs an admin token)"
    err = await call(client, "POST", "/comfymq/jobs", tokens["dash"], {"prompt": PROMPT}, 403)
    assert "may not queue jobs" in err["error"]["message"]
    await call(client, "POST", "/comfymq/jobs", tokens["ops"], {"prompt": PROMPT}, 403)
    # worker-admin: past the token check (no broker here: 503), a submit token is not
    await call(client, "POST", "/comfymq/workers/refresh", tokens["ops"], status=503)
    err = await call(client, "POST", "/comfymq/workers/w1/drain", tokens["alice"], {"drain": True}, 403)
    assert "may not manage workers" in err["error"]["message"]
    # the webhook signing secret is the admin's; the queue's pause too
    await call(client, "GET", "/comfymq/webhooks", tokens["dash"], status=403)
    assert "secret" in await call(client, "GET", "/comfymq/webhooks", ADMIN)
    await call(client, "POST", "/comfymq/queue/pause", ADMIN)
    await call(client, "GET", "/comfymq/stats", tokens["dash"])
    # templates: made by an admin, used by a submit token
    tpl = {
        "name": "t1",
        "workflow": {"1": {"class_type": "X", "inputs": {"v": 1}}},
        "parameters": {"v": {"targets": ["1.v"]}},
    }
    await call(client, "POST", "/comfymq/templates", tokens["alice"], tpl, 403)
    await call(client, "POST", "/comfymq/templates", ADMIN, tpl, 201)
    made = await call(client, "POST", "/comfymq/templates/t1/jobs", tokens["alice"], {"params": {"v": 2}})
    assert service.store.get(made["jobs"][0]["id"], with_prompt=False)["owner"] == "alice"
    assert (await call(client, "GET", "/comfymq/templates/t1/jobs", tokens["bob"]))["jobs"] == []


@pytest.mark.asyncio
async def test_a_revoke_is_effective_at_once(farm):
    client, service, tokens = farm
    await call(client, "GET", "/comfymq/jobs", tokens["alice"])
    await call(client, "DELETE", "/comfymq/tokens/alice", ADMIN)
    err = await call(client, "GET", "/comfymq/jobs", tokens["alice"], status=401)
    assert "revoked" in err["error"]["message"]
    await call(client, "DELETE", "/comfymq/tokens/alice", ADMIN, status=404)
    # a new token for the name is another token
    fresh = (await call(client, "POST", "/comfymq/tokens", ADMIN, {"name": "alice", "role": "read"}, 201))["token"]
    assert fresh != tokens["alice"]
    await call(client, "GET", "/comfymq/jobs", tokens["alice"], status=401)
    await call(client, "GET", "/comfymq/jobs", fresh)


@pytest.mark.asyncio
async def test_the_v2_api_keeps_owners_apart(farm):
    client, service, tokens = farm
    key = {"Idempotency-Key": "same-key"}
    a = await call_v2(client, tokens["alice"], key)
    b = await call_v2(client, tokens["bob"], key)
    assert a["id"] != b["id"], "one owner's Idempotency-Key replayed another's job"
    assert (await call_v2(client, tokens["alice"], key))["id"] == a["id"]
    assert service.store.get(a["id"], with_prompt=False)["owner"] == "alice"
    resp = await client.get(f"/api/v2/jobs/{a['id']}", headers=bearer(tokens["bob"]))
    assert resp.status == 403
    resp = await client.post(f"/api/v2/jobs/{a['id']}/cancel", headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert resp.status == 403
    listed = await (await client.get("/api/v2/jobs", headers=bearer(tokens["bob"]))).json()
    assert [j["id"] for j in listed["jobs"]] == [b["id"]]


async def call_v2(client, token, headers):
    resp = await client.post("/api/v2/jobs", json={"workflow": PROMPT}, headers={**bearer(token), **headers})
    assert resp.status == 201, await resp.text()
    return await resp.json()


@pytest.mark.asyncio
async def test_an_open_api_stays_open_and_a_comfyui_user_owns_its_jobs(aiohttp_client, service):
    client = await aiohttp_client(build_app(service))
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT}, headers={"comfy-user": "carol"})
    assert resp.status == 200
    job = service.store.get((await resp.json())["jobs"][0]["id"], with_prompt=False)
    assert job["owner"] == "carol"
    me = await (await client.get("/comfymq/whoami", headers={"comfy-user": "carol"})).json()
    assert me["open"] is True and me["owner"] == "carol"
    mine = await (await client.get("/comfymq/jobs?owner=carol")).json()
    assert [j["id"] for j in mine["jobs"]] == [job["id"]]
    assert (await (await client.get("/comfymq/jobs?owner=dave")).json())["jobs"] == []
    # the first stored token closes the API at once
    service.tokens.add("root", "admin")
    assert (await client.get("/comfymq/jobs")).status == 401


def cli(*args, env_token=None):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_")}
    if env_token:
        env["COMFYMQ_TOKEN"] = env_token
    return subprocess.run(
        [sys.executable, "-m", "comfy_nodes", "tokens", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )


def test_a_host_started_paused_dispatches_nothing_until_resumed(tmp_path):
    with HostProcess(tmp_path, "--start-paused") as host:
        status, body = host.json("GET", "/comfymq/queue")
        assert status == 200 and body["paused"] is True
        assert host.json("POST", "/comfymq/queue/resume", {})[1]["paused"] is False


def test_the_cli_on_a_data_dir_and_through_a_running_host(tmp_path):
    data = tmp_path / "data"
    made = cli("add", "root", "--role", "admin", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    root = made.stdout.strip()
    alice = cli("add", "alice", "--data-dir", str(data)).stdout.strip()
    assert cli("list", "--data-dir", str(data)).stdout.split() == ["alice", "submit", "root", "admin"]
    with HostProcess(tmp_path, data_dir=data) as host:
        assert host.json("GET", "/comfymq/jobs")[0] == 401
        assert host.json("GET", "/comfymq/jobs", headers={"Authorization": f"Bearer {alice}"})[0] == 200
        busy = cli("add", "bob", "--data-dir", str(data))
        assert busy.returncode == 1 and "a host holds the store" in busy.stderr
        bob = cli("add", "bob", "--role", "read", "--host-url", host.base, env_token=root)
        assert bob.returncode == 0, bob.stderr
        assert host.json("GET", "/comfymq/jobs", headers={"Authorization": f"Bearer {bob.stdout.strip()}"})[0] == 200
        gone = cli("revoke", "alice", "--host-url", host.base, env_token=root)
        assert gone.returncode == 0, gone.stderr
        assert host.json("GET", "/comfymq/jobs", headers={"Authorization": f"Bearer {alice}"})[0] == 401
        refused = cli("add", "eve", "--role", "admin", "--host-url", host.base, env_token=alice)
        assert refused.returncode == 1 and "401" in refused.stderr


@pytest.mark.asyncio
async def test_owner_limits_refuse_with_429_and_queue_nothing(farm):
    client, service, tokens = farm
    capped = (
        await call(
            client,
            "POST",
            "/comfymq/tokens",
            ADMIN,
            {"name": "carl", "role": "submit", "limits": {"max_pending": 3, "max_jobs_per_request": 2}},
            201,
        )
    )["token"]
    await call(client, "POST", "/comfymq/jobs", capped, {"prompt": PROMPT, "count": 2})
    err = await call(client, "POST", "/comfymq/jobs", capped, {"prompt": PROMPT, "count": 3}, 429)
    assert "at most 2 jobs per request" in err["error"]["message"]
    err = await call(client, "POST", "/comfymq/jobs", capped, {"prompt": PROMPT, "count": 2}, 429)
    assert "at most 3 pending jobs (2 pending; this request adds 2)" in err["error"]["message"]
    await call(client, "POST", "/comfymq/jobs", capped, {"prompt": PROMPT})  # the third fits
    resp = await client.post("/api/v2/jobs", json={"workflow": PROMPT}, headers=bearer(capped))
    assert resp.status == 429
    assert service.store.stats()["counts"]["pending"] == 3
    # others are not held back by carl's limits; the host's defaults apply to tokens without their own
    await call(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": PROMPT, "count": 5})
    service.owner_gate.defaults["max_pending"] = 6
    err = await call(client, "POST", "/comfymq/jobs", tokens["alice"], {"prompt": PROMPT, "count": 2}, 429)
    assert "owner 'alice'" in err["error"]["message"]
    # concurrent requests cannot both pass a limit they pass only alone
    import asyncio

    service.owner_gate.defaults["max_pending"] = 0
    dora = (
        await call(
            client,
            "POST",
            "/comfymq/tokens",
            ADMIN,
            {"name": "dora", "role": "submit", "limits": {"max_pending": 4}},
            201,
        )
    )["token"]
    listed = (await call(client, "GET", "/comfymq/tokens", ADMIN))["tokens"]
    assert any(t["name"] == "dora" and t["limits"] == {"max_pending": 4} for t in listed)
    answers = await asyncio.gather(
        *(client.post("/comfymq/jobs", json={"prompt": PROMPT}, headers=bearer(dora)) for _ in range(10))
    )
    assert sorted(r.status for r in answers) == [200] * 4 + [429] * 6
