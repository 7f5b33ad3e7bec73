"""A worker started paused (config start_paused on a worker, `worker --start-paused`): its first HELLO says so, the
broker drains it as the panel would (it takes no job), a resume from the host lets it work, and a reconnect of the
same process does not pause it again. Real broker, real native worker clients."""

from __future__ import annotations

import pytest
from conftest import wait_for

from comfy_nodes.service import BrokerSettings, QueueService

PROMPT = {"1": {"class_type": "TestJob", "inputs": {"n": 1}}}


@pytest.fixture
def host(tmp_path):
    svc = QueueService(tmp_path / "host", threads=4, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    try:
        yield svc
    finally:
        svc.close()


def client(svc, info: dict):
    from comfy_nodes import _native as native

    return native.WorkerClient(
        broker=svc.broker.endpoint,
        worker_id="gpu-1",
        capabilities={"node_classes": ["TestJob"]},
        info=info,
        heartbeat=0.2,
        reconnect_min=0.1,
        reconnect_max=0.5,
    )


def view(svc) -> dict:
    return next((w for w in svc.broker.workers() if w["id"] == "gpu-1"), {"online": False})


def test_a_worker_started_paused_takes_nothing_until_resumed(host):
    w = client(host, {"hostname": "box", "start_paused": True})
    try:
        wait_for(lambda: view(host)["online"])
        assert view(host)["draining"] is True
        job = host.store.enqueue(PROMPT)["id"]
        assert w.next_job(0.5) is None
        assert any("draining" in r for r in host.broker.explain(job)), host.broker.explain(job)
        host.broker.drain("gpu-1", False)  # resumed from the host (panel, API)
        got = wait_for(lambda: w.next_job(0.2), 10)
        assert got["job_id"] == job
        w.complete(got["job_id"], got["token"], outputs={})
    finally:
        w.close(bye=True)
    # the same worker joining again without the flag (a reconnect of the same process) stays resumed
    w = client(host, {"hostname": "box"})
    try:
        wait_for(lambda: view(host)["online"])
        assert view(host)["draining"] is False
    finally:
        w.close(bye=True)


def test_a_bad_start_paused_value_is_ignored_and_the_worker_joins(host):
    w = client(host, {"start_paused": "yes please"})
    try:
        wait_for(lambda: view(host)["online"])
        assert view(host)["draining"] is False
    finally:
        w.close(bye=True)


def test_the_bridge_says_start_paused_on_its_first_hello_only(tmp_path):
    from comfy_nodes.worker.bridge import BridgeSettings, WorkerBridge

    b = WorkerBridge(
        BridgeSettings(
            comfy_url="http://127.0.0.1:9",
            broker="tcp://127.0.0.1:9",
            worker_id="w",
            name="w",
            work_dir=str(tmp_path / "w"),
            start_paused=True,
        )
    )
    b._client_api = {}
    assert b._hello_info({})["start_paused"] is True
    assert "start_paused" not in b._hello_info({})  # a later connection of this process: not paused again
