"""The /comfymq HTTP API (comfy_nodes.api.routes) on the standalone host's app (build_app) with a real
QueueService; the worker routes with a real broker and a real WorkerClient on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from aiohttp import web
from conftest import assert_json_error, graph, now_ms, wait_for, wait_until_clock_passes

from comfy_nodes import _native as native
from comfy_nodes.api import auth, expand
from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.api.routes import add_routes
from comfy_nodes.host.standalone import build_app

pytestmark = pytest.mark.asyncio

P = "/comfymq"
JSON = {"Content-Type": "application/json"}  # what every client of the API sends on every non-GET request


async def ok(resp, status: int = 200) -> dict:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def submit(client, body) -> dict:
    return await ok(await client.post(f"{P}/jobs", json=body))


def seeds_of(service, job_id):
    return service.store.get(job_id)["prompt"]["3"]["inputs"]["seed"]


def finish(service, job_id, *, fail=False, artifacts=None, outputs=None):
    """Runs job_id to an end through the store (take until it is the one leased)."""
    lease = service.store.take("test-worker")
    assert lease is not None
    others = []
    while lease["job_id"] != job_id:
        others.append(lease)
        lease = service.store.take("test-worker")
        assert lease is not None
    if fail:
        service.store.fail(job_id, lease["token"], {"type": "boom", "message": "it broke"}, retryable=False)
    else:
        service.store.complete(job_id, lease["token"], outputs=outputs, artifacts=artifacts)
    for other in others:  # back to the queue: not this test's concern
        service.store.cancel(other["job_id"])
        service.store.retry(other["job_id"])


# ---- POST /comfymq/jobs: one job --------------------------------------------------------------------------


async def test_post_single_job_all_fields(client, service):
    wf = {"nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    before = now_ms()
    body = await submit(
        client,
        {
            "prompt": graph(5),
            "priority": 7,
            "workflow": wf,
            "max_attempts": 5,
            "timeout": 90,
            "batch_id": "my-batch.1",
            "owner": "alice",
            "metadata": {"prompt_id": "one", "create_time": 1700000000000},
        },
    )
    assert body["status"] == "queued"
    assert body["batch_id"] == "my-batch.1"
    assert "existed" not in body
    task = body["task"]  # the seed contract's view, for seed clients
    assert task["prompt"] == graph(5) and task["priority"] == 7
    assert task["metadata"] == {"prompt_id": "one", "create_time": 1700000000000}
    [entry] = body["jobs"]
    assert entry["id"] == task["id"] and entry["existed"] is False
    assert entry["state"] == "pending" and entry["prompt_id"] == "one" and entry["batch_id"] == "my-batch.1"
    assert entry["enqueued_at"] >= before - 1000
    job = service.store.get(task["id"])
    assert job["prompt"] == graph(5)
    assert job["workflow"] == wf
    assert (job["priority"], job["max_attempts"], job["timeout"], job["owner"]) == (7, 5, 90.0, "alice")


async def test_post_prompt_as_string_and_defaults(client, service):
    text = json.dumps(graph(8))
    body = await submit(client, {"prompt": text})
    assert body["task"]["prompt"] == text
    assert "batch_id" not in body
    job = service.store.get(body["task"]["id"])
    assert job["prompt"] == graph(8)
    assert (job["priority"], job["max_attempts"], job["timeout"], job["batch_id"]) == (1, 3, None, None)


async def test_same_prompt_id_returns_the_existing_job(client, service):
    first = await submit(client, {"prompt": graph(1), "metadata": {"prompt_id": "dup"}})
    again = await submit(client, {"prompt": graph(2), "priority": 9, "metadata": {"prompt_id": "dup"}})
    assert again["existed"] is True
    assert again["jobs"][0]["existed"] is True
    assert again["jobs"][0]["id"] == first["jobs"][0]["id"]
    assert again["jobs"][0]["priority"] == 1
    assert service.store.stats()["total"] == 1


async def test_concurrent_posts_with_one_prompt_id_make_one_job(client, service):
    bodies = await asyncio.gather(
        *(submit(client, {"prompt": graph(i), "metadata": {"prompt_id": "race"}}) for i in range(20))
    )
    assert len({b["jobs"][0]["id"] for b in bodies}) == 1
    assert sum(1 for b in bodies if not b["jobs"][0]["existed"]) == 1
    assert service.store.stats()["total"] == 1
    others = await asyncio.gather(*(submit(client, {"prompt": graph(i)}) for i in range(20)))
    assert len({b["jobs"][0]["id"] for b in others}) == 20
    assert service.store.stats()["total"] == 21


class CountingStore:
    """The service's store, counting the jobs of each enqueue_many() call (api/batching.py shares commits)."""

    def __init__(self, store):
        self._store = store
        self.many: list[int] = []

    def enqueue_many(self, items):
        self.many.append(len(items))
        return self._store.enqueue_many(items)

    def __getattr__(self, name):
        return getattr(self._store, name)


async def test_one_job_posts_at_once_share_commits_and_each_hears_its_own_answer(client, service):
    real = service.store
    service.store = counting = CountingStore(real)
    try:
        missing = "00000000000000ff"  # refused by the store, in the commit: it fails a shared commit for all

        async def post(i):
            body = {"prompt": graph(i), "metadata": {"prompt_id": f"p{i}"}}
            if i % 7 == 3:
                body["after"] = [missing]
            return i, await client.post(f"{P}/jobs", json=body)

        for _ in range(3):  # bursts, so that some land in a shared commit
            answers = await asyncio.gather(*(post(i) for i in range(40)))
            for i, resp in answers:
                if i % 7 == 3:
                    err = await assert_json_error(resp, 400)
                    assert err["message"].startswith(f"after: no job {missing}"), err  # its own words, no "job N:"
                    continue
                body = await ok(resp)
                job = body["jobs"][0]
                assert body["task"]["prompt"] == graph(i) and job["prompt_id"] == f"p{i}"
                assert real.get(job["id"])["prompt"] == graph(i)
        assert max(counting.many) > 1, counting.many  # (else this test showed nothing of shared commits)
        good = sum(1 for i in range(40) if i % 7 != 3)
        assert real.stats()["total"] == good  # bursts 2 and 3 found every prompt_id already queued
        again = await submit(client, {"prompt": graph(0), "metadata": {"prompt_id": "p0"}})
        assert again["existed"] is True
    finally:
        service.store = real


# ---- POST /comfymq/jobs: count and sweep ------------------------------------------------------------------


async def test_count_makes_copies_with_distinct_seeds_in_one_batch(client, service):
    body = await submit(client, {"prompt": graph(42), "count": 6, "metadata": {"prompt_id": "many"}})
    assert body["count"] == 6 and len(body["jobs"]) == 6
    batch = body["batch_id"]
    assert isinstance(batch, str) and batch
    ids = [j["id"] for j in body["jobs"]]
    assert len(set(ids)) == 6
    assert [j["prompt_id"] for j in body["jobs"]] == [f"many-000{i}" for i in range(1, 7)]
    assert [j["copy"] for j in body["jobs"]] == [1, 2, 3, 4, 5, 6]
    seeds = [seeds_of(service, i) for i in ids]
    assert len(set(seeds)) == 6
    assert [j["seeds"]["3.seed"] for j in body["jobs"]] == seeds
    for i in ids:
        job = service.store.get(i)
        assert job["batch_id"] == batch
        assert job["prompt"]["4"] == graph()["4"]
    # The same request again: the same jobs, nothing added.
    again = await submit(client, {"prompt": graph(42), "count": 6, "metadata": {"prompt_id": "many"}})
    assert again["existed"] is True
    assert [j["id"] for j in again["jobs"]] == ids
    assert all(j["existed"] for j in again["jobs"])
    assert again["batch_id"] == batch
    assert service.store.stats()["total"] == 6


async def test_count_without_prompt_id_and_keep_seeds(client, service):
    body = await submit(client, {"prompt": json.dumps(graph(42)), "count": 3, "keep_seeds": True})
    assert len({j["prompt_id"] for j in body["jobs"]}) == 3
    assert [seeds_of(service, j["id"]) for j in body["jobs"]] == [42, 42, 42]
    assert all("seeds" not in j for j in body["jobs"])


async def test_sweep_makes_one_job_per_combination(client, service):
    body = await submit(
        client,
        {
            "prompt": graph(42),
            "sweep": {"3.steps": [10, 20, 30], "4.ckpt_name": ["a", "b"]},
            "batch_id": "grid",
            "metadata": {"prompt_id": "sw"},
        },
    )
    assert body["batch_id"] == "grid" and body["count"] == 6
    got = []
    for entry in body["jobs"]:
        job = service.store.get(entry["id"])
        assert job["batch_id"] == "grid"
        assert job["prompt"]["3"]["inputs"]["seed"] == 42  # a sweep alone keeps the seed
        values = (job["prompt"]["3"]["inputs"]["steps"], job["prompt"]["4"]["inputs"]["ckpt_name"])
        assert entry["params"] == {"3.steps": values[0], "4.ckpt_name": values[1]}
        got.append(values)
    assert got == [(10, "a"), (10, "b"), (20, "a"), (20, "b"), (30, "a"), (30, "b")]
    assert body["jobs"][-1]["prompt_id"] == "sw-0006"


async def test_sweep_with_count(client, service):
    body = await submit(client, {"prompt": graph(), "count": 2, "sweep": {"3.steps": [1, 2, 3]}})
    assert body["count"] == 6
    jobs = [service.store.get(j["id"]) for j in body["jobs"]]
    assert len({j["batch_id"] for j in jobs}) == 1
    assert len({j["prompt"]["3"]["inputs"]["seed"] for j in jobs}) == 2  # one seed per copy, shared by the grid
    assert sorted(j["prompt"]["3"]["inputs"]["steps"] for j in jobs) == [1, 1, 2, 2, 3, 3]


async def test_expansion_is_all_or_nothing(client, service):
    # The second combination cannot be stored (nested past the store's JSON depth limit): no job is added.
    deep = 1
    for _ in range(80):
        deep = [deep]
    raw = json.dumps({"prompt": graph(), "sweep": {"3.steps": [10, deep]}})
    resp = await client.post(f"{P}/jobs", data=raw, headers={"Content-Type": "application/json"})
    err = await assert_json_error(resp, 400)
    assert "job 1" in err["message"]
    # NaN is not JSON: refused before anything is planned
    raw = json.dumps({"prompt": graph(), "sweep": {"3.steps": [10, "NAN_HERE"]}}).replace('"NAN_HERE"', "NaN")
    resp = await client.post(f"{P}/jobs", data=raw, headers={"Content-Type": "application/json"})
    assert "NaN" in (await assert_json_error(resp, 400))["message"]
    assert service.store.stats()["total"] == 0
    # A prompt_id prefix whose derived ids are too long for the store: refused whole.
    resp = await client.post(f"{P}/jobs", json={"prompt": graph(), "count": 3, "metadata": {"prompt_id": "p" * 254}})
    await assert_json_error(resp, 400)
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"prompt": graph(), "bogus": 1}, "bogus"),
        ({"prompt": graph(), "client_id": "x"}, "client_id"),
        ({"prompt": graph(), "metadata": {"user": "bob"}}, "user"),
        ({"prompt": graph(), "metadata": {"prompt_id": 7}}, "prompt_id"),
        ({"prompt": graph(), "metadata": {"create_time": "now"}}, "create_time"),
        ({"prompt": "{nope"}, "JSON"),
        ({"prompt": "{nope", "count": 2}, "JSON"),
        ({"prompt": {}, "count": 2}, "no nodes"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": graph(), "priority": "high"}, "priority"),
        ({"prompt": graph(), "workflow": "text"}, "workflow"),
        ({"prompt": graph(), "workflow": [1]}, "workflow"),
        ({"prompt": graph(), "count": 0}, "count"),
        ({"prompt": graph(), "count": -1}, "count"),
        ({"prompt": graph(), "count": "3"}, "count"),
        ({"prompt": graph(), "count": 2.5}, "count"),
        ({"prompt": graph(), "count": True}, "count"),
        ({"prompt": graph(), "count": 2, "keep_seeds": "yes"}, "keep_seeds"),
        ({"prompt": graph(), "sweep": [1, 2]}, "sweep"),
        ({"prompt": graph(), "sweep": {"99.steps": [1]}}, "no node '99'"),
        ({"prompt": graph(), "sweep": {"3.nope": [1]}}, "no input 'nope'"),
        ({"prompt": graph(), "sweep": {"3.steps": []}}, "empty"),
        ({"prompt": graph(), "sweep": {"3.steps": 4}}, "list"),
        ({"prompt": graph(), "sweep": {"steps": [1]}}, "<node_id>.<input_name>"),
        ({"prompt": graph(), "max_attempts": 0}, "max_attempts"),
        ({"prompt": graph(), "max_attempts": 101}, "max_attempts"),
        ({"prompt": graph(), "max_attempts": "3"}, "max_attempts"),
        ({"prompt": graph(), "timeout": 0}, "timeout"),
        ({"prompt": graph(), "timeout": -5}, "timeout"),
        ({"prompt": graph(), "timeout": "60"}, "timeout"),
        ({"prompt": graph(), "timeout": 10**9}, "timeout"),
        ({"prompt": graph(), "batch_id": ""}, "batch_id"),
        ({"prompt": graph(), "batch_id": "a/b"}, "batch_id"),
        ({"prompt": graph(), "batch_id": 5}, "batch_id"),
        ({"prompt": graph(), "owner": 5}, "owner"),
        ({"prompt": graph(), "owner": "a\nb"}, "owner"),
    ],
)
async def test_post_rejects_bad_bodies(client, service, body, needle):
    err = await assert_json_error(await client.post(f"{P}/jobs", json=body), 400)
    assert needle in err["message"]
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "raw", [b"not json", b"", b"[1]", b"\xff\xfe", b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": NaN}}}}']
)
async def test_post_rejects_bad_json(client, service, raw):
    resp = await client.post(f"{P}/jobs", data=raw, headers={"Content-Type": "application/json"})
    await assert_json_error(resp, 400)
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": graph(), "count": expand.MAX_JOBS + 1},
        {"prompt": graph(), "sweep": {"3.steps": list(range(101)), "3.seed": list(range(100))}},
        {"prompt": graph(), "count": 101, "sweep": {"3.steps": list(range(100))}},
    ],
)
async def test_too_many_jobs_is_413(client, service, body):
    err = await assert_json_error(await client.post(f"{P}/jobs", json=body), 413)
    assert err["type"] == "too_many_jobs"
    assert str(expand.MAX_JOBS) in err["message"]
    assert service.store.stats()["total"] == 0


async def test_too_many_expanded_bytes_is_413(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_stored_bytes_per_request=2000)))
    err = await assert_json_error(await client.post(f"{P}/jobs", json={"prompt": graph(), "count": 50}), 413)
    assert "2000" in err["message"] and "max_stored_bytes_per_request" in err["message"]
    assert service.store.stats()["total"] == 0
    await submit(client, {"prompt": graph(), "count": 2})


async def test_the_limit_itself_is_accepted(client, service):
    body = await submit(client, {"prompt": graph(), "count": 100, "sweep": {"3.steps": list(range(100))}})
    assert body["count"] == expand.MAX_JOBS
    assert service.store.stats()["counts"]["pending"] == expand.MAX_JOBS


# ---- body size --------------------------------------------------------------------------------------------


async def test_oversized_bodies_are_413(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_body_bytes=1024)))
    big = {"prompt": {"1": {"class_type": "A", "inputs": {"text": "x" * 4000}}}}
    err = await assert_json_error(await client.post(f"{P}/jobs", json=big), 413)
    assert "1024" in err["message"]

    async def chunks():
        for _ in range(8):
            yield b" " * 512

    resp = await client.post(f"{P}/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    await assert_json_error(resp, 413)
    assert service.store.stats()["total"] == 0
    await submit(client, {"prompt": graph()})  # the same app still takes small bodies


async def test_oversized_content_length_is_refused_before_the_body_arrives(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_body_bytes=1024)))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /comfymq/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000000\r\n\r\n{"prompt": '
        )
        await writer.drain()
        # Only 11 of 100 MB were sent: an answer now means the server did not wait for the rest.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()
    assert service.store.stats()["total"] == 0


# ---- GET /comfymq/tasks -----------------------------------------------------------------------------------


async def test_list_filters_order_and_paging(client, service):
    a = (await submit(client, {"prompt": graph(1), "count": 3, "batch_id": "b-a"}))["jobs"]
    t_mid = now_ms()
    wait_until_clock_passes(t_mid)
    b = (await submit(client, {"prompt": graph(2), "count": 2, "batch_id": "b-b"}))["jobs"]
    single = (await submit(client, {"prompt": graph(3), "metadata": {"prompt_id": "solo"}}))["jobs"][0]
    all_ids = [j["id"] for j in a + b] + [single["id"]]
    finish(service, a[0]["id"])
    service.store.cancel(b[0]["id"])

    body = await ok(await client.get(f"{P}/jobs"))
    assert [j["id"] for j in body["jobs"]] == list(reversed(all_ids))
    assert body["next_cursor"] is None
    entry = body["jobs"][0]
    assert "prompt" not in entry and "workflow" not in entry
    for key in (
        "id",
        "state",
        "priority",
        "batch_id",
        "prompt_id",
        "create_time",
        "enqueued_at",
        "started_at",
        "finished_at",
        "attempts",
        "worker",
        "progress",
        "error",
        "artifacts",
        "outputs",
    ):
        assert key in entry

    oldest = await ok(await client.get(f"{P}/jobs?order=oldest"))
    assert [j["id"] for j in oldest["jobs"]] == all_ids

    seen, cursor = [], None
    while True:
        url = f"{P}/jobs?order=oldest&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await ok(await client.get(url))
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == all_ids

    pending = await ok(await client.get(f"{P}/jobs?state=pending"))
    assert {j["id"] for j in pending["jobs"]} == set(all_ids) - {a[0]["id"], b[0]["id"]}
    two = await ok(await client.get(f"{P}/jobs?state=succeeded,cancelled"))
    assert {j["id"] for j in two["jobs"]} == {a[0]["id"], b[0]["id"]}
    repeated = await ok(await client.get(f"{P}/jobs?state=succeeded&state=cancelled"))
    assert {j["id"] for j in repeated["jobs"]} == {a[0]["id"], b[0]["id"]}
    done = [j for j in two["jobs"] if j["id"] == a[0]["id"]][0]
    assert done["worker"] == "test-worker" and done["finished_at"] and done["started_at"]
    cancelled = [j for j in two["jobs"] if j["id"] == b[0]["id"]][0]
    assert cancelled["error"]["type"] == "cancelled"

    batch = await ok(await client.get(f"{P}/jobs?batch=b-a"))
    assert {j["id"] for j in batch["jobs"]} == {j["id"] for j in a}
    since = await ok(await client.get(f"{P}/jobs?since={t_mid + 1}"))
    assert {j["id"] for j in since["jobs"]} == {j["id"] for j in b} | {single["id"]}
    until = await ok(await client.get(f"{P}/jobs?until={t_mid + 1}"))
    assert {j["id"] for j in until["jobs"]} == {j["id"] for j in a}

    by_pid = await ok(await client.get(f"{P}/jobs?prompt_id=solo"))
    assert [j["id"] for j in by_pid["jobs"]] == [single["id"]]
    none = await ok(await client.get(f"{P}/jobs?prompt_id=nobody"))
    assert none["jobs"] == []
    filtered = await ok(await client.get(f"{P}/jobs?prompt_id=solo&state=failed"))
    assert filtered["jobs"] == []


@pytest.mark.parametrize(
    "query, needle",
    [
        ("state=bogus", "bogus"),
        ("state=", "state"),
        ("state=pending,,nope", "nope"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("since=-1", "since"),
        ("since=abc", "since"),
        ("until=1.5", "until"),
        ("cursor=xyz", "cursor"),
        ("cursor=ABCDEF0123456789", "cursor"),
        ("order=up", "order"),
        ("foo=1", "foo"),
        ("limit=1&limit=2", "limit"),
        ("batch=", "batch"),
        ("prompt_id=x&cursor=0000000000000001", "cursor"),
    ],
)
async def test_list_rejects_bad_filters(client, query, needle):
    err = await assert_json_error(await client.get(f"{P}/jobs?{query}"), 400)
    assert needle in err["message"]


# ---- GET /comfymq/tasks/{id} and transitions --------------------------------------------------------------


async def test_get_one_job_in_full(client, service):
    wf = {"nodes": [], "links": []}
    created = (await submit(client, {"prompt": graph(9), "workflow": wf}))["jobs"][0]
    body = await ok(await client.get(f"{P}/jobs/{created['id']}"))
    job = body["job"]
    assert job["id"] == created["id"]
    assert job["prompt"] == graph(9) and job["workflow"] == wf
    assert job["state"] == "pending" and job["waiting"] == []  # no broker: nothing to explain
    assert job["history"] == [] and job["lease_expires_at"] is None

    finish(service, created["id"], fail=True)
    job = (await ok(await client.get(f"{P}/jobs/{created['id']}")))["job"]
    assert job["state"] == "failed"
    assert job["error"]["type"] == "boom" and job["error"]["message"] == "it broke"
    assert len(job["history"]) == 1
    assert "waiting" not in job


@pytest.mark.parametrize("job_id", ["0000000000000001", "nope", "ABCDEF0123456789", "0" * 17])
async def test_unknown_or_malformed_ids_are_404(client, job_id):
    await submit(client, {"prompt": graph()})
    for method, url in [
        ("GET", f"{P}/jobs/{job_id}"),
        ("POST", f"{P}/jobs/{job_id}/cancel"),
        ("POST", f"{P}/jobs/{job_id}/retry"),
        ("DELETE", f"{P}/jobs/{job_id}"),
    ]:
        err = await assert_json_error(await client.request(method, url, headers=JSON), 404)
        assert err["type"] == "not_found"
        if job_id != "0000000000000001":
            assert "16 lowercase hex" in err["message"]


async def test_cancel_retry_delete_transitions(client, service):
    jid = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    # pending: cannot be retried or deleted
    err = await assert_json_error(await client.post(f"{P}/jobs/{jid}/retry", headers=JSON), 409)
    assert err["type"] == "conflict"
    await assert_json_error(await client.delete(f"{P}/jobs/{jid}", headers=JSON), 409)
    body = await ok(await client.post(f"{P}/jobs/{jid}/cancel", json={"reason": "changed my mind"}))
    assert body["job"]["state"] == "cancelled"
    assert body["job"]["error"]["message"] == "changed my mind"
    await assert_json_error(await client.post(f"{P}/jobs/{jid}/cancel", headers=JSON), 409)
    body = await ok(await client.post(f"{P}/jobs/{jid}/retry", headers=JSON))
    assert body["job"]["state"] == "pending" and body["job"]["error"] is None
    # running: can be cancelled, not deleted
    lease = service.store.take("w")
    assert lease["job_id"] == jid
    await assert_json_error(await client.delete(f"{P}/jobs/{jid}", headers=JSON), 409)
    await assert_json_error(await client.post(f"{P}/jobs/{jid}/retry", headers=JSON), 409)
    body = await ok(await client.post(f"{P}/jobs/{jid}/cancel", headers=JSON))
    assert body["job"]["state"] == "cancelled"
    with pytest.raises(native.LeaseLostError):
        service.store.complete(jid, lease["token"])
    assert (await ok(await client.delete(f"{P}/jobs/{jid}", headers=JSON))) == {"deleted": jid}
    await assert_json_error(await client.get(f"{P}/jobs/{jid}"), 404)
    await assert_json_error(await client.delete(f"{P}/jobs/{jid}", headers=JSON), 404)
    # succeeded: no cancel, no retry; delete works
    jid2 = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    finish(service, jid2)
    await assert_json_error(await client.post(f"{P}/jobs/{jid2}/cancel", headers=JSON), 409)
    await assert_json_error(await client.post(f"{P}/jobs/{jid2}/retry", headers=JSON), 409)
    await ok(await client.delete(f"{P}/jobs/{jid2}", headers=JSON))
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b'{"why": 1}', "why"),
        (b'{"reason": 5}', "reason"),
        (b"{nope", "JSON"),
        (b"[1]", "object"),
        (b'{"reason": "\\ud800"}', "surrogate"),
    ],
)  # found by the fuzzer: a 500
async def test_cancel_rejects_bad_bodies(client, service, raw, needle):
    jid = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    resp = await client.post(f"{P}/jobs/{jid}/cancel", data=raw, headers={"Content-Type": "application/json"})
    assert needle in (await assert_json_error(resp, 400))["message"]
    assert service.store.get(jid)["state"] == "pending"


# ---- queue ------------------------------------------------------------------------------------------------


async def test_pause_and_resume(client, service):
    await submit(client, {"prompt": graph()})
    assert (await ok(await client.get(f"{P}/queue")))["paused"] is False
    body = await ok(await client.post(f"{P}/queue/pause", headers=JSON))
    assert body["paused"] is True and body["counts"]["pending"] == 1
    assert (await ok(await client.post(f"{P}/queue/pause", headers=JSON)))["paused"] is True  # idempotent
    assert service.store.paused is True
    assert service.store.take("w") is None
    assert (await ok(await client.get(f"{P}/stats")))["paused"] is True
    assert (await ok(await client.post(f"{P}/queue/resume", headers=JSON)))["paused"] is False
    assert service.store.take("w") is not None
    await assert_json_error(await client.get(f"{P}/queue/pause"), 405)


# ---- batches ----------------------------------------------------------------------------------------------


async def test_batch_progress_and_paging(client, service):
    body = await submit(client, {"prompt": graph(), "count": 5})
    batch, ids = body["batch_id"], [j["id"] for j in body["jobs"]]
    b = await ok(await client.get(f"{P}/batches/{batch}"))
    assert b["total"] == 5 and b["counts"]["pending"] == 5 and b["finished"] == 0
    assert b["done_fraction"] == 0 and b["finished_at"] is None
    assert b["jobs"] == ids and b["next_cursor"] is None
    finish(service, ids[0])
    finish(service, ids[1], fail=True)
    service.store.take("w")  # one running
    b = await ok(await client.get(f"{P}/batches/{batch}"))
    assert b["counts"] == {"pending": 2, "running": 1, "succeeded": 1, "failed": 1, "cancelled": 0}
    assert b["finished"] == 2 and b["done_fraction"] == pytest.approx(0.4)

    first = await ok(await client.get(f"{P}/batches/{batch}?limit=3"))
    assert first["jobs"] == ids[:3] and first["next_cursor"] == ids[2]
    rest = await ok(await client.get(f"{P}/batches/{batch}?limit=3&cursor={first['next_cursor']}"))
    assert rest["jobs"] == ids[3:] and rest["next_cursor"] is None
    summary = await ok(await client.get(f"{P}/batches/{batch}?view=summary&limit=2"))
    assert [j["id"] for j in summary["jobs"]] == ids[:2]
    assert summary["jobs"][0]["state"] == "succeeded"

    await assert_json_error(await client.get(f"{P}/batches/nope"), 404)
    for q in ("limit=0", "cursor=zz", "view=all", "x=1"):
        await assert_json_error(await client.get(f"{P}/batches/{batch}?{q}"), 400)


async def test_batch_cancel(client, service):
    body = await submit(client, {"prompt": graph(), "count": 5, "batch_id": "to-cancel"})
    ids = [j["id"] for j in body["jobs"]]
    other = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    finish(service, ids[0])
    lease = service.store.take("w")
    assert lease["job_id"] == ids[1]
    result = await ok(await client.post(f"{P}/batches/to-cancel/cancel", headers=JSON))
    assert result["cancelled"] == 4
    assert result["jobs"] == ids[1:]  # oldest first
    again = await ok(await client.post(f"{P}/batches/to-cancel/cancel", headers=JSON))
    assert again["cancelled"] == 0 and again["jobs"] == []
    states = [service.store.get(i)["state"] for i in ids]
    assert states == ["succeeded"] + ["cancelled"] * 4
    assert service.store.get(other)["state"] == "pending"
    b = await ok(await client.get(f"{P}/batches/to-cancel"))
    assert b["done_fraction"] == 1.0 and b["finished_at"] is not None
    again = await ok(await client.post(f"{P}/batches/to-cancel/cancel", headers=JSON))
    assert again["cancelled"] == 0
    await assert_json_error(await client.post(f"{P}/batches/nope/cancel", headers=JSON), 404)


# ---- workers, stats, health -------------------------------------------------------------------------------


async def test_worker_routes_without_a_broker(client):
    assert await ok(await client.get(f"{P}/workers")) == []
    err = await assert_json_error(await client.post(f"{P}/workers/w1/drain", headers=JSON), 503)
    assert err["type"] == "no_broker"
    await assert_json_error(await client.post(f"{P}/workers/refresh", headers=JSON), 503)
    stats = await ok(await client.get(f"{P}/stats"))
    assert stats["workers"]["online"] == 0 and stats["broker"] is None


async def test_worker_routes_with_a_broker(aiohttp_client, cluster):
    service, worker = cluster
    client = await aiohttp_client(build_app(service))
    [w] = await ok(await client.get(f"{P}/workers"))
    assert w["id"] == "w1" and w["online"] is True and w["draining"] is False

    stats = await ok(await client.get(f"{P}/stats"))
    assert stats["broker"] == {
        "endpoint": service.broker.endpoint,
        "public_key": None,
        "inputs_served": {"fetches": 0, "chunks": 0, "bytes_sent": 0, "refused": 0},
    }
    assert stats["workers"]["online"] == 1 and stats["workers"]["busy"] == 0 and stats["workers"]["capacity"] == 1

    assert await ok(await client.post(f"{P}/workers/w1/drain", headers=JSON)) == {"worker_id": "w1", "draining": True}
    await asyncio.to_thread(wait_for, lambda: service.broker.workers()[0]["draining"])
    assert (await ok(await client.get(f"{P}/workers")))[0]["draining"] is True
    assert (await ok(await client.get(f"{P}/stats")))["workers"]["draining"] == 1
    assert (await ok(await client.post(f"{P}/workers/w1/drain", json={"drain": False})))["draining"] is False
    await asyncio.to_thread(wait_for, lambda: not service.broker.workers()[0]["draining"])

    await assert_json_error(await client.post(f"{P}/workers/nobody/drain", headers=JSON), 404)
    await assert_json_error(await client.post(f"{P}/workers/w1/drain", json={"drain": "no"}), 400)
    await assert_json_error(await client.post(f"{P}/workers/w1/drain", json={"x": 1}), 400)
    assert (await ok(await client.post(f"{P}/workers/refresh", headers=JSON)))["refreshing"] == "all"
    assert (await ok(await client.post(f"{P}/workers/refresh", json={"worker_id": "w1"})))["refreshing"] == "w1"
    await assert_json_error(await client.post(f"{P}/workers/refresh", json={"worker_id": "nobody"}), 404)

    # A job no connected worker can run says why.
    jid = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    job = (await ok(await client.get(f"{P}/jobs/{jid}")))["job"]
    assert job["state"] == "pending"
    assert any("KSampler" in reason for reason in job["waiting"]), job["waiting"]

    health = await ok(await client.get(f"{P}/health"))
    assert health["workers"]["online"] == 1


async def test_stats_and_health(client, service):
    await submit(client, {"prompt": graph(), "count": 3})
    stats = await ok(await client.get(f"{P}/stats"))
    assert stats["counts"]["pending"] == 3 and stats["total"] == 3 and stats["paused"] is False
    health = await ok(await client.get(f"{P}/health"))
    assert health["status"] == "ok" and health["queue"]["writable"] is True
    assert health["stats"]["counts"]["pending"] == 3 and health["paused"] is False
    service.store.close()
    resp = await client.get(f"{P}/health")
    assert resp.status == 503
    assert (await resp.json())["status"] == "unavailable"
    err = await assert_json_error(await client.get(f"{P}/stats"), 503)
    assert err["type"] == "store_unavailable"


# ---- artifacts --------------------------------------------------------------------------------------------


def record_artifacts(service, job_id, files):
    """Writes files {relative path under the job: (bytes, mime)} and records them on job_id."""
    arts = []
    for rel, (data, mime) in files.items():
        info = service.artifacts.write(f"{job_id}/{rel}", data)
        arts.append({"path": info["path"], "size": info["size"], "sha256": info["sha256"], "mime": mime})
    finish(service, job_id, artifacts=arts, outputs={"9": {"images": list(files)}})


async def test_artifacts_are_streamed(client, service):
    jid = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
    record_artifacts(
        service,
        jid,
        {
            "out 1.png": (png, "image/png"),
            "sub/data.json": (b'{"a": 1}', None),
            "page.html": (b"<script>alert(1)</script>", None),
        },
    )
    job = (await ok(await client.get(f"{P}/jobs/{jid}")))["job"]
    urls = {a["path"].split("/", 1)[1]: a["url"] for a in job["artifacts"]}
    assert urls["out 1.png"] == f"{P}/artifacts/{jid}/out%201.png"
    resp = await client.get(urls["out 1.png"])
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert await resp.read() == png
    resp = await client.get(urls["sub/data.json"])
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert await resp.read() == b'{"a": 1}'
    resp = await client.get(urls["page.html"])
    assert resp.status == 200 and resp.headers["Content-Security-Policy"] == "sandbox"
    # the list view carries the same urls
    listed = (await ok(await client.get(f"{P}/jobs")))["jobs"][0]
    assert {a["url"] for a in listed["artifacts"]} == set(urls.values())
    # also under /api/comfymq, as inside ComfyUI
    assert (await client.get(f"/api{urls['out 1.png']}")).status == 200


async def test_artifact_path_checks(client, service, tmp_path):
    jid = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    other = (await submit(client, {"prompt": graph()}))["jobs"][0]["id"]
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    record_artifacts(service, other, {"theirs.png": (b"theirs", "image/png")})
    # a file in the job's folder that is not on its record, and a recorded one that is a symlink out
    service.artifacts.write(f"{jid}/unrecorded.png", b"not recorded")
    info = service.artifacts.write(f"{jid}/link.png", b"placeholder")
    link = service.artifact_root / jid / "link.png"
    link.unlink()
    link.symlink_to(secret)
    gone = service.artifacts.write(f"{jid}/gone.png", b"soon gone")
    finish(
        service,
        jid,
        artifacts=[
            {"path": info["path"], "size": info["size"], "sha256": info["sha256"]},
            {"path": gone["path"], "size": gone["size"], "sha256": gone["sha256"]},
            {"path": "../escape.png", "size": 1, "sha256": "00" * 32},
        ],
    )
    (service.artifact_root / jid / "gone.png").unlink()
    (tmp_path / "data" / "escape.png").write_bytes(b"outside the root")

    for path in [
        f"{jid}/unrecorded.png",
        f"{jid}/link.png",
        f"{jid}/gone.png",
        f"{jid}/theirs.png",
        f"{jid}/..%2Fescape.png",
        f"{jid}/..%2F..%2Fsecret.txt",
        f"{jid}/a%00b.png",
        f"{jid}/..%5Cescape.png",
        f"{jid}/%2Fetc%2Fpasswd",
        f"{jid}/./link.png",
        "0000000000000001/x.png",
        "nothex/x.png",
        f"{other}/nothing.png",
    ]:
        resp = await client.get(f"{P}/artifacts/{path}")
        err = await assert_json_error(resp, 404)
        assert err["type"] == "not_found", path
    assert (await client.get(f"{P}/artifacts/{other}/theirs.png")).status == 200
    # raw request targets, as sent (a client library would normalise the dots away)
    for target in [
        f"{P}/artifacts/{jid}/../../secret.txt",
        f"{P}/artifacts/{jid}/%2e%2e/%2e%2e/secret.txt",
        f"{P}/artifacts/{jid}/..%2f..%2fsecret.txt",
        f"{P}/artifacts/{jid}//etc/passwd",
    ]:
        status, head = await raw_get(client, target)
        assert status == 404, (target, head)


async def raw_get(client, target: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]), data


# ---- auth -------------------------------------------------------------------------------------------------


async def test_token_protects_every_route(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, token="s3cret-token"))
    good = {"Authorization": "Bearer s3cret-token"}
    for method, url in [
        ("GET", f"{P}/stats"),
        ("GET", f"{P}/jobs"),
        ("POST", f"{P}/jobs"),
        ("POST", "/tasks"),
        ("GET", "/tasks/0000000000000001"),
        ("GET", "/no/such/route"),
        ("GET", f"/api{P}/stats"),
        ("POST", f"{P}/health"),
        ("POST", "/health"),
    ]:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic czNjcmV0"},
            {"Authorization": "s3cret-token"},
            {"Authorization": "Bearer s3cret-token-and-more"},
        ):
            resp = await client.request(method, url, headers=headers, json={"prompt": graph()})
            err = await assert_json_error(resp, 401)
            assert err["type"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert service.store.stats()["total"] == 0
    assert (await client.get(f"{P}/stats", headers=good)).status == 200
    assert (await client.get("/health", headers=good)).status == 200
    assert (await client.get(f"{P}/stats", headers={"Authorization": "bearer s3cret-token"})).status == 200
    body = await ok(await client.post(f"{P}/jobs", json={"prompt": graph()}, headers=good))
    seed = await ok(await client.post("/tasks", json={"prompt": graph()}, headers=good))
    assert (await ok(await client.get(f"/tasks/{body['task']['id']}", headers=good)))["task"]["state"] == "pending"
    assert seed["status"] == "queued"
    await assert_json_error(await client.get("/no/such/route", headers=good), 404)


async def test_token_middleware_with_prefixes_leaves_other_routes_alone(aiohttp_client, service):
    async def comfy_own(request):
        return web.json_response({"comfyui": True})

    routes = web.RouteTableDef()
    routes.get("/prompt")(comfy_own)
    routes.get("/comfymqx")(comfy_own)
    add_routes(routes, service, prefix="/comfymq")
    add_routes(routes, service, prefix="/api/comfymq")
    app = web.Application(middlewares=[auth.token_middleware("tok-tok-tok", prefixes=("/comfymq", "/api/comfymq"))])
    app.add_routes(routes)
    client = await aiohttp_client(app)
    assert (await client.get("/prompt")).status == 200
    assert (await client.get("/comfymqx")).status == 200
    await assert_json_error(await client.get(f"{P}/stats"), 401)
    await assert_json_error(await client.get(f"/api{P}/stats"), 401)
    await assert_json_error(await client.get("/%63omfymq/stats"), 401)
    assert (await client.get(f"{P}/stats", headers={"Authorization": "Bearer tok-tok-tok"})).status == 200
    assert (await client.options(f"{P}/stats")).status != 401  # CORS preflights carry no credentials


async def test_add_routes_with_a_token_guards_each_handler(aiohttp_client, service):
    """As inside ComfyUI: routes on a table ComfyUI also copies under /api, no middleware of ours."""

    async def comfy_own(request):
        return web.json_response({"comfyui": True})

    routes = web.RouteTableDef()
    routes.get("/prompt")(comfy_own)
    add_routes(routes, service, token="sekrit-token")
    app = web.Application()
    app.add_routes(routes)
    app.add_routes(
        [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
    )  # what ComfyUI's server does
    client = await aiohttp_client(app)
    assert (await client.get("/prompt")).status == 200
    assert (await client.get("/api/prompt")).status == 200
    good = {"Authorization": "Bearer sekrit-token"}
    for url in (f"{P}/stats", f"/api{P}/stats", f"{P}/jobs/0000000000000001"):
        await assert_json_error(await client.get(url), 401)
        await assert_json_error(await client.get(url, headers={"Authorization": "Bearer nope"}), 401)
    resp = await client.post(f"{P}/jobs", json={"prompt": graph()})
    await assert_json_error(resp, 401)
    assert service.store.stats()["total"] == 0
    assert (await client.get(f"/api{P}/stats", headers=good)).status == 200
    await submit_with(client, {"prompt": graph()}, good)
    await assert_json_error(await client.get(f"{P}/jobs/0000000000000001", headers=good), 404)


async def submit_with(client, body, headers) -> dict:
    return await ok(await client.post(f"{P}/jobs", json=body, headers=headers))


async def test_token_middleware_refuses_an_empty_token():
    for bad in ("", "   ", None):
        with pytest.raises(ValueError):
            auth.token_middleware(bad)


@pytest.mark.parametrize(
    "host, token, warns",
    [
        ("127.0.0.1", None, False),
        ("127.0.0.2", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("[::1]", None, False),
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("", None, True),
        (None, None, True),
        ("192.168.1.20", None, True),
        ("nas.local", None, True),
        ("0.0.0.0", "tok", False),
        ("192.168.1.20", "tok", False),
    ],
)
async def test_insecure_bind_warning(host, token, warns):
    text = auth.insecure_bind_warning(host, token)
    if warns:
        assert isinstance(text, str) and "token" in text
    else:
        assert text is None


# ---- mounted without the host's middleware (as inside ComfyUI) ---------------------------------------------


async def test_routes_answer_json_errors_without_middleware(aiohttp_client, service):
    routes = web.RouteTableDef()
    add_routes(routes, service)
    app = web.Application(client_max_size=2048)
    app.add_routes(routes)
    client = await aiohttp_client(app)
    await assert_json_error(await client.get(f"{P}/jobs/0000000000000001"), 404)
    await assert_json_error(await client.post(f"{P}/jobs", data=b"{nope", headers=JSON), 400)
    err = await assert_json_error(await client.post(f"{P}/jobs", json={"prompt": graph(), "x": "y" * 4000}), 413)
    assert "2048" in err["message"]
    await assert_json_error(await client.get(f"{P}/jobs?limit=0"), 400)
    body = await submit(client, {"prompt": graph()})
    assert body["jobs"][0]["state"] == "pending"


# ---- the seed contract on the same app --------------------------------------------------------------------


async def test_seed_contract_is_still_answered(client, service):
    seed = await ok(await client.post("/tasks", json={"prompt": graph(3), "metadata": {"prompt_id": "s-1"}}))
    jid = seed["task"]["id"]
    assert (await ok(await client.get(f"/tasks/{jid}")))["task"]["metadata"]["prompt_id"] == "s-1"
    assert (await ok(await client.get("/health")))["status"] == "ok"
    # the seed route keeps its own contract: no count there
    err = await assert_json_error(await client.post("/tasks", json={"prompt": graph(), "count": 2}), 400)
    assert "count" in err["message"]
    # the same job is visible through both APIs, and prompt_ids are shared
    again = await submit(client, {"prompt": graph(), "metadata": {"prompt_id": "s-1"}})
    assert again["existed"] is True and again["jobs"][0]["id"] == jid
    assert (await ok(await client.get(f"/api{P}/jobs/{jid}")))["job"]["prompt"] == graph(3)


@pytest.mark.parametrize(
    "path, body",
    [
        (f"{P}/jobs", b'{"prompt": {"1": {"class_type": "A", "inputs": {}}}, "owner": "\\udfff"}'),
        (f"{P}/jobs", b'{"prompt": {"1": {"class_type": "A", "inputs": {}}}, "metadata": {"prompt_id": "\\ud800"}}'),
        ("/tasks", b'{"prompt": {"\\ud800": {"class_type": "A", "inputs": {}}}}'),
        (f"{P}/workers/refresh", b'{"worker_id": "\\udc00"}'),
    ],
)
async def test_lone_surrogates_are_refused_as_bad_json(client, service, path, body):
    """A JSON escape of half a surrogate pair is not a character: never handed to the store (a 500 before)."""
    err = await assert_json_error(await client.post(path, data=body, headers=JSON), 400)
    assert "surrogate" in err["message"]
    assert service.store.stats()["total"] == 0
    emoji = await client.post(
        f"{P}/jobs",
        data=b'{"prompt": {"1": {"class_type": "A", "inputs": {}}}, "owner": "\\ud83d\\ude00"}',
        headers=JSON,
    )
    assert emoji.status == 200  # a whole pair is a character


async def test_the_jobs_api_answers_under_its_earlier_name_too(client, service):
    """/comfymq/jobs is the API's name; /comfymq/tasks (and /api/comfymq/tasks) are the same handlers, kept for
    clients written against it."""
    created = await ok(await client.post(f"{P}/tasks", json={"prompt": graph(7)}))
    jid = created["jobs"][0]["id"]
    for base in (f"{P}/jobs", f"{P}/tasks", "/api/comfymq/jobs", "/api/comfymq/tasks"):
        assert (await ok(await client.get(f"{base}/{jid}")))["job"]["id"] == jid
        assert [j["id"] for j in (await ok(await client.get(base)))["jobs"]] == [jid]
    await ok(await client.post(f"{P}/tasks/{jid}/cancel", json={}))
    assert (await ok(await client.post(f"{P}/jobs/{jid}/retry", json={})))["job"]["state"] == "pending"
    await ok(await client.post(f"{P}/jobs/{jid}/cancel", json={}))
    assert (await ok(await client.delete(f"{P}/tasks/{jid}", headers={"Content-Type": "application/json"})))[
        "deleted"
    ] == jid
