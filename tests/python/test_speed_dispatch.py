"""Speed-aware dispatch (native WorkerSpeed): with a real broker and two real worker clients, one taking twice as long
per job as the other, the broker measures them (GET /comfymq/workers' `speed`) and, when both are free, hands the
next job to the faster one, though the slower one's id comes first (the order free workers were offered work in
before). Estimates for pending jobs come from the same kind of measures (GET /comfymq/jobs/{id} `estimate`)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import wait_for

from comfy_nodes.service import BrokerSettings, QueueService

PROMPT = {"1": {"class_type": "TestJob", "inputs": {"n": 1}}}


@pytest.fixture
def farm(tmp_path):
    from comfy_nodes import _native as native

    svc = QueueService(tmp_path / "farm", threads=8, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    workers = {}
    try:
        for wid in ("a-slow", "b-fast"):  # the slow one first in id order
            workers[wid] = native.WorkerClient(
                broker=svc.broker.endpoint,
                worker_id=wid,
                capabilities={"node_classes": ["TestJob"]},
                heartbeat=0.2,
                reconnect_min=0.1,
                reconnect_max=0.5,
            )
        wait_for(lambda: sum(w["online"] for w in svc.broker.workers()) == 2)
        yield svc, workers
    finally:
        for w in workers.values():
            w.close(bye=True)
        svc.close()


def serve(worker, seconds: float, stop: threading.Event, ran: list) -> None:
    while not stop.is_set():
        job = worker.next_job(0.1)
        if job is None:
            continue
        time.sleep(seconds)
        worker.complete(job["job_id"], job["token"], outputs={})
        ran.append(job["job_id"])


def test_the_faster_of_two_free_workers_gets_the_next_job(farm):
    svc, workers = farm
    stop = threading.Event()
    ran = {"a-slow": [], "b-fast": []}
    threads = [
        threading.Thread(target=serve, args=(workers["a-slow"], 0.2, stop, ran["a-slow"]), daemon=True),
        threading.Thread(target=serve, args=(workers["b-fast"], 0.1, stop, ran["b-fast"]), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(12):  # both busy: each measured on several runs
            svc.store.enqueue(PROMPT)
        wait_for(lambda: svc.store.stats()["counts"]["succeeded"] == 12, 30)
        speeds = {w["id"]: w for w in svc.broker.workers()}
        assert speeds["b-fast"]["speed"] < speeds["a-slow"]["speed"], speeds
        assert speeds["a-slow"]["speed_runs"] >= 2 and speeds["b-fast"]["speed_runs"] >= 2
        # both free now: one job at a time goes to the faster
        for i in range(5):
            before = {k: len(v) for k, v in ran.items()}
            total = sum(before.values()) + 1
            svc.store.enqueue(PROMPT)
            wait_for(lambda total=total: sum(len(v) for v in ran.values()) == total, 10)
            assert len(ran["b-fast"]) == before["b-fast"] + 1, f"job {i} went to the slower worker"
            time.sleep(0.05)  # (its READY is back before the next job arrives)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


@pytest.mark.asyncio
async def test_pending_jobs_show_their_expected_start_and_end(aiohttp_client, farm):
    import asyncio

    from comfy_nodes.host.standalone import build_app

    svc, workers = farm
    client = await aiohttp_client(build_app(svc))
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT})
    first = (await resp.json())["jobs"][0]["id"]
    resp = await client.get(f"/comfymq/jobs/{first}")
    view = (await resp.json())["job"]
    assert view["state"] != "pending" or view["estimate"] is None  # nothing measured yet: no guess
    stop = threading.Event()
    ran = {"a-slow": [], "b-fast": []}
    threads = [
        threading.Thread(target=serve, args=(workers[w], 0.1, stop, ran[w]), daemon=True) for w in ("a-slow", "b-fast")
    ]
    for t in threads:
        t.start()
    try:
        await asyncio.to_thread(wait_for, lambda: svc.store.stats()["counts"]["succeeded"] == 1, 10)
        svc.store.pause()
        resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "count": 6})
        ids = [j["id"] for j in (await resp.json())["jobs"]]
        await asyncio.to_thread(wait_for, lambda: svc.metrics.recent.times("template"), 10)
        await asyncio.sleep(1.1)  # (the estimator's picture of the farm is at most a second old)
        estimates = []
        for i, job_id in enumerate(ids):
            view = (await (await client.get(f"/comfymq/jobs/{job_id}")).json())["job"]
            e = view["estimate"]
            assert e is not None and e["ahead"] == i, view
            assert e["end"] > e["start"] and e["run_seconds"] > 0
            estimates.append(e)
        # two workers: jobs go two at a time, each later pair later
        starts = [e["start"] for e in estimates]
        assert starts == sorted(starts) and starts[-1] > starts[0]
    finally:
        svc.store.resume()
        stop.set()
        for t in threads:
            t.join(5)
