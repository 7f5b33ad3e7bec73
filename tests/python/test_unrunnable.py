"""A job no online worker can run now (issue 21 items 3 and 4): the enqueue answer says why at once, per the
host's unrunnable_jobs policy it waits ("wait", default) or is refused with a 409 and nothing queued ("refuse");
and a waiting job always says why, also when there is no worker, none online, or all are draining. Real store,
real broker, real worker client over ZeroMQ."""

from __future__ import annotations

import pytest
from conftest import wait_for

from comfy_nodes import _native as native
from comfy_nodes.host.standalone import build_app
from comfy_nodes.service import BrokerSettings, QueueService

pytestmark = pytest.mark.asyncio
P = "/comfymq"


def prompt(ckpt: str = "sd15.safetensors") -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }


CAPS = {
    "node_classes": ["CheckpointLoaderSimple", "SaveImage"],
    "combos": {"CheckpointLoaderSimple.ckpt_name": ["sd15.safetensors"]},
}


@pytest.fixture
def host(tmp_path):
    svc = QueueService(tmp_path / "host", threads=4, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    svc.store.pause()  # workers join but take nothing: what waits stays pending
    try:
        yield svc
    finally:
        svc.close()


def join(svc, worker_id="gpu-1", caps=CAPS):
    w = native.WorkerClient(broker=svc.broker.endpoint, worker_id=worker_id, capabilities=caps, heartbeat=0.2)
    wait_for(lambda: any(x["id"] == worker_id and x["online"] for x in svc.broker.workers()))
    return w


async def post(client, body, status=200):
    resp = await client.post(f"{P}/jobs", json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_the_answer_says_at_once_why_no_worker_can_run_the_job(aiohttp_client, host):
    client = await aiohttp_client(build_app(host))
    got = await post(client, {"prompt": prompt()})
    assert got["status"] == "queued"
    assert len(got["waiting"]) == 1 and "no worker has joined" in got["waiting"][0]
    w = join(host)
    try:
        got = await post(client, {"prompt": prompt("sdxl.safetensors")})
        assert got["waiting"] == ["worker gpu-1: missing checkpoint sdxl.safetensors"]
        assert (await post(client, {"prompt": prompt()}))["waiting"] == []
        # A sweep over checkpoints: what some of its jobs lack, each reason once.
        got = await post(
            client,
            {"prompt": prompt(), "sweep": {"1.ckpt_name": ["sd15.safetensors", "a.safetensors", "a.safetensors"]}},
        )
        assert got["count"] == 3 and got["waiting"] == ["worker gpu-1: missing checkpoint a.safetensors"]
        # The job record says the same while it waits.
        job = (await (await client.get(f"{P}/jobs/{got['jobs'][1]['id']}")).json())["job"]
        assert job["waiting"] == ["worker gpu-1: missing checkpoint a.safetensors"]
    finally:
        w.close(bye=True)


async def test_a_waiting_job_says_why_when_every_worker_drains_or_is_gone(aiohttp_client, host):
    client = await aiohttp_client(build_app(host))
    w = join(host)
    try:
        job_id = (await post(client, {"prompt": prompt()}))["jobs"][0]["id"]
        resp = await client.post(f"{P}/workers/gpu-1/drain", json={})
        assert resp.status == 200, await resp.text()

        async def waiting():
            return (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]["waiting"]

        for _ in range(100):
            if await waiting():
                break
        assert await waiting() == ["worker gpu-1: draining (it takes no new jobs until it is undrained)"]
        assert (await post(client, {"prompt": prompt()}))["waiting"] == [
            "worker gpu-1: draining (it takes no new jobs until it is undrained)"
        ]
    finally:
        w.close(bye=True)
    wait_for(lambda: not any(x["online"] for x in host.broker.workers()))
    assert await waiting() == ["no worker is online (offline: gpu-1)"]


async def test_a_host_that_refuses_unrunnable_jobs_answers_409_and_queues_nothing(aiohttp_client, host):
    client = await aiohttp_client(build_app(host, unrunnable="refuse"))
    w = join(host)
    try:
        resp = await client.post(f"{P}/jobs", json={"prompt": prompt("sdxl.safetensors")})
        assert resp.status == 409
        err = (await resp.json())["error"]
        assert err["type"] == "unrunnable"
        assert "sdxl.safetensors" in err["message"] and "unrunnable_jobs" in err["message"]
        assert err["waiting"] == ["worker gpu-1: missing checkpoint sdxl.safetensors"]
        # One job of a sweep nobody can run refuses the whole request: all or nothing, as ever.
        resp = await client.post(
            f"{P}/jobs", json={"prompt": prompt(), "sweep": {"1.ckpt_name": ["sd15.safetensors", "b.safetensors"]}}
        )
        assert resp.status == 409
        assert (await (await client.get(f"{P}/jobs")).json())["jobs"] == []
        # What a worker can run is queued as usual.
        assert (await post(client, {"prompt": prompt()}))["waiting"] == []
    finally:
        w.close(bye=True)


async def test_a_bad_policy_is_refused_at_once(host):
    with pytest.raises(ValueError, match="unrunnable"):
        build_app(host, unrunnable="sometimes")
