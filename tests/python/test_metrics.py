"""GET /comfymq/metrics (comfy_nodes/metrics/): the Prometheus text format, read with Prometheus' own parser
(prometheus_client, pinned), with figures that follow what really happened: jobs queued over HTTP, run by a real
worker client over a real broker (one succeeds, one fails for good, one is left waiting), and the exposition's
own rules (escaped label values, bounded series)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from comfy_nodes.host.standalone import build_app
from comfy_nodes.metrics.exposition import MAX_SERIES, Counter, Histogram, render
from comfy_nodes.service import QueueService

PROMPT = {"1": {"class_type": "TestJob", "inputs": {"n": 1}}}


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out")


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of every sample in the text, parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.mark.asyncio
async def test_the_figures_follow_what_happened(aiohttp_client, cluster):
    service, worker = cluster
    client = await aiohttp_client(build_app(service))
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "count": 3})
    assert resp.status == 200, await resp.text()
    # the worker (capacity 1) takes one at a time: succeed the first, fail the second for good
    first = await asyncio.to_thread(lambda: wait_for(lambda: worker.next_job(0.2)))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(worker.complete, first["job_id"], first["token"], outputs={})
    second = await asyncio.to_thread(lambda: wait_for(lambda: worker.next_job(0.2)))
    await asyncio.to_thread(
        worker.fail, second["job_id"], second["token"], {"type": "boom", "message": "no"}, retryable=False
    )
    await asyncio.to_thread(wait_for, lambda: service.store.stats()["counts"]["failed"] == 1)
    await asyncio.to_thread(
        wait_for, lambda: service.metrics.run.render() and "failed" in "".join(service.metrics.run.render())
    )

    resp = await client.get("/comfymq/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    found = samples(await resp.text())
    assert value(found, "comfymq_jobs", state="succeeded") == 1
    assert value(found, "comfymq_jobs", state="failed") == 1
    assert value(found, "comfymq_jobs", state="running") + value(found, "comfymq_jobs", state="pending") == 1
    owned = {dict(k[1])["state"]: v for k, v in found.items() if k[0] == "comfymq_owner_jobs"}
    assert sum(owned.values()) == 1  # the third job, pending or running, of the open API's nameless owner
    assert value(found, "comfymq_run_seconds_count", worker="w1", outcome="succeeded") == 1
    assert value(found, "comfymq_run_seconds_count", worker="w1", outcome="failed") == 1
    assert value(found, "comfymq_run_seconds_sum", worker="w1", outcome="succeeded") >= 0.05
    assert value(found, "comfymq_queue_wait_seconds_count", worker="w1") >= 2
    assert value(found, "comfymq_dead_letters_total", worker="w1") == 1
    assert value(found, "comfymq_enqueue_seconds_count", api="jobs") == 1
    assert value(found, "comfymq_enqueued_jobs_total", api="jobs") == 3
    assert value(found, "comfymq_workers", state="online") == 1
    assert value(found, "comfymq_worker_running_jobs", worker="w1") in (0, 1)
    assert value(found, "comfymq_broker_dispatched_total") >= 2
    # the store's own syncs: at least the enqueue's, the leases' and the endings' commits, each timed
    syncs = value(found, "comfymq_store_fsync_seconds_count")
    assert syncs >= 3 and value(found, "comfymq_store_fsync_seconds_bucket", le="+Inf") == syncs
    assert 0 < value(found, "comfymq_store_fsync_seconds_sum") < syncs * 5
    assert value(found, "comfymq_broker_messages_in_total") > 0
    assert value(found, "comfymq_store_writable") == 1
    assert value(found, "comfymq_disk_free_bytes") > 0
    assert value(found, "comfymq_job_transitions_total", to="succeeded") == 1
    # GET /comfymq/stats: seed 001's throughput, and wait / run per worker and per graph shape (no template here)
    stats = await (await client.get("/comfymq/stats")).json()
    assert stats["throughput"]["last_minute"] == 2 and stats["throughput"]["last_day_by_state"] == {
        "succeeded": 1,
        "failed": 1,
    }
    w1 = stats["per_worker"]["w1"]
    assert w1["wait"]["count"] >= 2 and w1["run"]["count"] == 1 and w1["run"]["p95"] >= 0.05
    [shape] = stats["per_template"]
    assert shape.startswith("TestJob#")
    # a histogram's buckets add up (cumulative, +Inf = count)
    le = {dict(k[1])["le"]: v for k, v in found.items() if k[0] == "comfymq_queue_wait_seconds_bucket"}
    assert le["+Inf"] == value(found, "comfymq_queue_wait_seconds_count", worker="w1")
    assert sorted(le.values()) == [le[k] for k in sorted(le, key=lambda x: float(x))]


@pytest.mark.asyncio
async def test_without_a_broker_and_with_the_token(aiohttp_client, tmp_path):
    svc = QueueService(tmp_path / "d", threads=2)
    try:
        client = await aiohttp_client(build_app(svc, token="metrics-token-123"))
        assert (await client.get("/comfymq/metrics")).status == 401
        resp = await client.get("/comfymq/metrics", headers={"Authorization": "Bearer metrics-token-123"})
        found = samples(await resp.text())
        assert value(found, "comfymq_jobs", state="pending") == 0
        assert not any(k[0].startswith("comfymq_broker_") for k in found)
    finally:
        svc.close()


def test_label_values_are_escaped_and_series_bounded():
    c = Counter("comfymq_t", "t", ("worker",))
    c.inc('evil"\n\\name')
    for i in range(MAX_SERIES + 50):
        c.inc(f"w{i}")
    h = Histogram("comfymq_h", "h", ("worker",), buckets=(1, 2))
    h.observe(1.5, "a")
    h.observe(float("nan"), "a")  # not a number: not counted
    found = samples(render([c, h]))
    assert value(found, "comfymq_t_total", worker='evil"\n\\name') == 1
    assert value(found, "comfymq_t_total", worker="overflow") >= 50
    assert len([k for k in found if k[0] == "comfymq_t_total"]) == MAX_SERIES + 1
    assert value(found, "comfymq_h_bucket", worker="a", le="1.0") == 0
    assert value(found, "comfymq_h_bucket", worker="a", le="2.0") == 1
    assert value(found, "comfymq_h_count", worker="a") == 1


def test_recent_windows_and_percentiles():
    from comfy_nodes.metrics.recent import RecentStats, graph_shape

    r = RecentStats()
    now = 1_000_000 * 60.0
    r.ended("succeeded", now - 10)  # this minute
    r.ended("failed", now - 30 * 60)  # this hour
    r.ended("succeeded", now - 5 * 3600)  # this day
    r.ended("succeeded", now - 2 * 86400)  # older: gone
    t = r.throughput(now)
    assert (t["last_minute"], t["last_hour"], t["last_day"]) == (1, 2, 3)
    for v in range(1, 101):
        r.sample("worker", "w", "run", float(v))
    s = r.times("worker")["w"]["run"]
    assert s == {"count": 100, "mean": 50.5, "p95": 95.0}
    assert graph_shape({"1": {"class_type": "B"}, "2": {"class_type": "A"}}).startswith("A+B#")
    assert graph_shape("not a graph") is None
