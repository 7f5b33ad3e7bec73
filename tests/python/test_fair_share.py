"""Fair share between owners, through the whole host: tokens with weights and running limits (api/tokens.py, PATCH
/comfymq/tokens/{name}, `tokens set`), the service handing them to the store (service.apply_owner_policies), the
store's dispatch order (native FairQueue) as a real broker hands jobs to real worker clients, and what a user sees
(`waiting` naming the running limit, the owner gauges in /comfymq/metrics)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO_ROOT as REPO
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families

from comfy_nodes.host.standalone import build_app
from comfy_nodes.service import QueueService

ADMIN = "admin-token-fair-share"
PROMPT = {"1": {"class_type": "TestJob", "inputs": {"n": 1}}}


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def queue(client, token: str, count: int) -> list[str]:
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "count": count}, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return [j["id"] for j in (await resp.json())["jobs"]]


def worker_client(service, worker_id: str):
    from comfy_nodes import _native as native

    w = native.WorkerClient(
        broker=service.broker.endpoint,
        worker_id=worker_id,
        capabilities={"node_classes": ["TestJob"]},
        heartbeat=0.2,
        reconnect_min=0.1,
        reconnect_max=0.5,
    )
    wait_for(lambda: any(x["id"] == worker_id and x["online"] for x in service.broker.workers()))
    return w


@pytest.mark.asyncio
async def test_three_owners_share_a_worker_by_their_weights_over_three_thousand_jobs(aiohttp_client, cluster):
    service, worker = cluster
    client = await aiohttp_client(build_app(service, token=ADMIN))
    tokens = {}
    for name, weight in (("ana", 1), ("ben", 2), ("cy", 3)):
        resp = await client.post(
            "/comfymq/tokens",
            json={"name": name, "role": "submit", "limits": {"weight": weight}},
            headers=auth(ADMIN),
        )
        assert resp.status == 201, await resp.text()
        tokens[name] = (await resp.json())["token"]
    service.store.pause()  # everyone's jobs are in before the first goes: the order is the store's alone
    owner_of = {}
    for name in ("ana", "ben", "cy"):  # ana's sweep first: arriving first buys no larger share
        for job_id in await queue(client, tokens[name], 3000):
            owner_of[job_id] = name
    service.store.resume()

    def run(n: int) -> list[str]:
        got = []
        while len(got) < n:
            job = worker.next_job(2.0)
            assert job is not None, f"no job after {len(got)}"
            got.append(owner_of[job["job_id"]])
            worker.complete(job["job_id"], job["token"], outputs={})
        return got

    got = Counter(await asyncio.to_thread(run, 3000))
    for name, weight in (("ana", 1), ("ben", 2), ("cy", 3)):
        want = weight / 6
        assert abs(got[name] / 3000 - want) <= want * 0.05, (name, got)


@pytest.mark.asyncio
async def test_an_owner_at_its_running_limit_waits_with_the_reason_while_others_run(aiohttp_client, cluster):
    service, w1 = cluster
    w2 = await asyncio.to_thread(worker_client, service, "w2")
    try:
        client = await aiohttp_client(build_app(service, token=ADMIN))
        ana = service.tokens.add("ana", "submit")
        ben = service.tokens.add("ben", "submit")
        resp = await client.patch("/comfymq/tokens/ana", json={"limits": {"max_running": 1}}, headers=auth(ADMIN))
        assert resp.status == 200 and (await resp.json())["limits"] == {"max_running": 1}, await resp.text()
        first, second = await queue(client, ana, 2)

        def first_taken():
            for w, o in ((w1, w2), (w2, w1)):
                job = w.next_job(0.1)
                if job is not None:
                    return job, w, o
            return None

        job, runner, other = await asyncio.to_thread(lambda: wait_for(first_taken))
        assert job["job_id"] == first
        # the other worker is free, but ana is at her limit: her second job waits, and says why
        assert await asyncio.to_thread(other.next_job, 0.5) is None
        resp = await client.get(f"/comfymq/jobs/{second}", headers=auth(ana))
        view = (await resp.json())["job"]
        assert view["state"] == "pending", view
        assert any("max_running 1" in r and "'ana' has 1 job running" in r for r in view["waiting"]), view["waiting"]
        resp = await client.get("/comfymq/metrics", headers=auth(ADMIN))
        found = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(await resp.text())
            for s in f.samples
        }
        assert found[("comfymq_owner_at_running_limit", (("owner", "ana"),))] == 1
        assert found[("comfymq_owner_jobs", (("owner", "ana"), ("state", "pending")))] == 1
        # another owner's job runs at once on the free worker
        (bens,) = await queue(client, ben, 1)
        taken = await asyncio.to_thread(lambda: wait_for(lambda: other.next_job(0.2)))
        assert taken["job_id"] == bens
        # ana's run ends: her second starts
        await asyncio.to_thread(runner.complete, job["job_id"], job["token"], outputs={})
        nxt = await asyncio.to_thread(lambda: wait_for(lambda: runner.next_job(0.2)))
        assert nxt["job_id"] == second
    finally:
        await asyncio.to_thread(w2.close, bye=True)


@pytest.mark.asyncio
async def test_raising_a_limit_lets_waiting_jobs_go_at_once(aiohttp_client, cluster):
    service, w1 = cluster
    w2 = await asyncio.to_thread(worker_client, service, "w2")
    try:
        client = await aiohttp_client(build_app(service, token=ADMIN))
        ana = service.tokens.add("ana", "submit", {"max_running": 1})
        await queue(client, ana, 2)
        await asyncio.to_thread(lambda: wait_for(lambda: service.store.stats()["counts"]["running"] == 1))
        await asyncio.sleep(0.3)
        assert service.store.stats()["counts"]["running"] == 1
        resp = await client.patch("/comfymq/tokens/ana", json={"limits": {}}, headers=auth(ADMIN))
        assert resp.status == 200
        await asyncio.to_thread(lambda: wait_for(lambda: service.store.stats()["counts"]["running"] == 2))
    finally:
        await asyncio.to_thread(w2.close, bye=True)


@pytest.mark.asyncio
async def test_bad_limits_are_refused_and_change_nothing(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, token=ADMIN))
    bob = service.tokens.add("bob", "submit", {"weight": 3})
    for body in (
        {"limits": {"weight": 0}},
        {"limits": {"weight": 1001}},
        {"limits": {"weight": True}},
        {"limits": {"max_running": -1}},
        {"limits": {"max_running": 10**7}},
        {"limits": {"speed": 2}},
        {"limits": [1]},
        {"limits": {}, "name": "x"},
        {},
    ):
        resp = await client.patch("/comfymq/tokens/bob", json=body, headers=auth(ADMIN))
        assert resp.status == 400, (body, await resp.text())
    resp = await client.patch("/comfymq/tokens/nobody", json={"limits": {}}, headers=auth(ADMIN))
    assert resp.status == 404
    resp = await client.patch("/comfymq/tokens/bob", json={"limits": {"weight": 1000}}, headers=auth(bob))
    assert resp.status == 403  # a submit token may not change its own share
    assert [t["limits"] for t in service.tokens.list()] == [{"weight": 3}]


@pytest.mark.asyncio
async def test_policies_hold_after_a_restart(tmp_path):
    svc = QueueService(tmp_path / "data", threads=4)
    try:
        svc.tokens.add("ana", "submit", {"max_running": 2, "weight": 5})
        svc.store.enqueue(PROMPT, owner="ana")
        svc.store.enqueue(PROMPT, owner="zed")
    finally:
        svc.close()
    svc = QueueService(tmp_path / "data", threads=4)
    try:
        svc.set_owner_defaults({"max_running": 7})
        stats = {o["owner"]: o for o in svc.store.owner_stats()}
        assert (stats["ana"]["weight"], stats["ana"]["max_running"]) == (5, 2)
        assert (stats["zed"]["weight"], stats["zed"]["max_running"]) == (1, 7)  # the host's default
    finally:
        svc.close()


def test_the_cli_sets_and_lists_a_token_s_weight_on_a_data_dir(tmp_path, subprocess_env):
    data = tmp_path / "data"
    run = [sys.executable, "-m", "comfy_nodes", "tokens"]
    common = ["--data-dir", str(data)]
    p = subprocess.run([*run, "add", "ana", *common], env=subprocess_env, cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [*run, "set", "ana", "--weight", "4", "--max-running", "2", *common],
        env=subprocess_env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*run, "list", *common], env=subprocess_env, cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and "ana\tsubmit\tmax_running=2 weight=4" in p.stdout, (p.stdout, p.stderr)
    p = subprocess.run(
        [*run, "set", "ana", "--weight", "0", *common], env=subprocess_env, cwd=REPO, capture_output=True, text=True
    )
    assert p.returncode != 0 and "weight" in p.stderr
    p = subprocess.run([*run, "list", *common], env=subprocess_env, cwd=REPO, capture_output=True, text=True)
    assert "max_running=2 weight=4" in p.stdout  # unchanged


def test_config_refuses_a_bad_owner_weight(tmp_path):
    from comfy_nodes.config import load_config

    cfg = tmp_path / "comfymq.toml"
    cfg.write_text("owner_weight = 0\n")
    with pytest.raises(ValueError, match="owner_weight"):
        load_config({}, toml_path=cfg)
    cfg.write_text("owner_max_running = -1\n")
    with pytest.raises(ValueError, match="owner_max_running"):
        load_config({}, toml_path=cfg)
    cfg.write_text("owner_max_running = 3\nowner_weight = 2\n")
    c = load_config({}, toml_path=cfg)
    assert (c.owner_max_running, c.owner_weight) == (3, 2)
