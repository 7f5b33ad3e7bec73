"""Webhooks (comfy_nodes/webhooks/): a job's endings reach the URLs it, its template or the host names, signed
(checked with the Standard Webhooks reference library), retried with the same webhook-id until a 2xx or expiry,
listed when they fail, and delivered after a kill -9 of the host between the commit and the send."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from webhook_receiver import Receiver

from comfy_nodes.webhooks import deliveries, signing
from comfy_nodes.webhooks.outbox import Deliverer

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}
FAST = {"backoff": (0.05,), "poll": 0.05}


def finish(service, job_id, *, fail=False):
    lease = service.store.take("w1")
    assert lease is not None and lease["job_id"] == job_id
    if fail:
        service.store.fail(job_id, lease["token"], {"type": "boom", "message": "it broke"}, retryable=False)
    else:
        service.store.complete(
            job_id,
            lease["token"],
            outputs={"2": {"images": [{"filename": "a.png"}]}},
            artifacts=[{"path": f"{job_id}/a.png", "size": 3, "sha256": "0" * 64, "mime": "image/png"}],
        )


async def until(predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def post(client, path, body, status=200):
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == status, text
    return json.loads(text)


@pytest.mark.asyncio
async def test_a_job_s_ending_is_posted_signed_with_its_summary_and_links(client, service):
    service.start_webhooks([], base_url="http://farm.lan:8190", **FAST)
    with Receiver() as r:
        body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": [r.url]})
        job_id = body["jobs"][0]["id"]
        assert service.store.list_docs(prefix="notify/") == [(f"notify/{job_id}", "")]
        await asyncio.to_thread(finish, service, job_id)
        await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1)
        [payload] = r.verified(service.webhooks.secret)
        assert payload["type"] == "job.succeeded"
        data = payload["data"]
        assert data["id"] == job_id and data["state"] == "succeeded" and data["worker"] == "w1"
        assert data["url"] == f"http://farm.lan:8190/comfymq/jobs/{job_id}"
        assert data["artifacts"][0]["url"] == f"http://farm.lan:8190/comfymq/artifacts/{job_id}/a.png"
        assert r.requests[0]["headers"]["webhook-id"].endswith(f"-{job_id}.0")
        assert r.requests[0]["headers"]["user-agent"].startswith("ComfyMQ")
        # the outbox entry goes once delivered; the job's view shows the delivery
        await until(lambda: not service.store.list_docs(prefix="outbox/"))
        view = await (await client.get(f"/comfymq/jobs/{job_id}")).json()
        [d] = view["job"]["webhooks"]
        assert d["state"] == "delivered" and d["attempts"] == 1 and d["last_status"] == 200 and d["url"] == r.url


@pytest.mark.asyncio
async def test_a_tampered_body_or_another_secret_does_not_verify(client, service):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    service.start_webhooks([], **FAST)
    with Receiver() as r:
        body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": [r.url]})
        await asyncio.to_thread(service.store.cancel, body["jobs"][0]["id"])
        [req] = await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1)
        Webhook(service.webhooks.secret).verify(req["body"], req["headers"])
        with pytest.raises(WebhookVerificationError):
            Webhook(service.webhooks.secret).verify(req["body"].replace(b"cancelled", b"succeeded"), req["headers"])
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.load_or_make_secret(service.data_dir / "other-secret")).verify(req["body"], req["headers"])
    # the secret is made once and kept (user-only file)
    path = service.data_dir / "webhook-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.load_or_make_secret(path) == service.webhooks.secret
    info = await (await client.get("/comfymq/webhooks")).json()
    assert info["secret"] == service.webhooks.secret and info["enabled"] is True


@pytest.mark.asyncio
async def test_failures_are_retried_with_the_same_id_until_a_2xx(client, service):
    service.start_webhooks([], **FAST)
    with Receiver() as r:
        r.answers = [500, 503, 302]  # a redirect is not followed: not a 2xx
        body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": [r.url]})
        job_id = body["jobs"][0]["id"]
        await asyncio.to_thread(finish, service, job_id, fail=True)
        reqs = await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 4)
        assert len({q["headers"]["webhook-id"] for q in reqs}) == 1
        assert all(p["type"] == "job.failed" for p in r.verified(service.webhooks.secret))
        await until(lambda: not service.store.list_docs(prefix="outbox/"))
        [d] = (await (await client.get(f"/comfymq/jobs/{job_id}")).json())["job"]["webhooks"]
        assert d["state"] == "delivered" and d["attempts"] == 4
        await asyncio.sleep(0.3)
        assert len(r.requests) == 4  # nothing after the 2xx


@pytest.mark.asyncio
async def test_an_unanswered_delivery_expires_and_is_listed_as_failed(client, service):
    service.start_webhooks([], expiry_hours=0.5 / 3600, **FAST)  # half a second
    with Receiver() as r:
        r.answers = [500] * 1000
        body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": [r.url]})
        job_id = body["jobs"][0]["id"]
        await asyncio.to_thread(service.store.cancel, job_id)
        await until(lambda: not service.store.list_docs(prefix="outbox/"))
        listing = await (await client.get("/comfymq/webhooks/deliveries")).json()
        [d] = listing["deliveries"]
        assert d["job"] == job_id and d["state"] == "failed" and d["last_status"] == 500 and d["attempts"] >= 2
        assert d["event"] == "job.cancelled"
        other = await (await client.get("/comfymq/webhooks/deliveries?state=delivered")).json()
        assert other["deliveries"] == []
        resp = await client.get("/comfymq/webhooks/deliveries?state=bogus")
        assert resp.status == 400
        resp = await client.get("/comfymq/webhooks/deliveries?cursor=../../x")
        assert resp.status == 400


@pytest.mark.asyncio
async def test_a_receiver_that_is_down_is_retried_then_reached(client, service):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    service.start_webhooks([], **FAST)
    body = await post(client, "/comfymq/jobs", {"prompt": PROMPT, "webhooks": [f"http://127.0.0.1:{port}/hook"]})
    job_id = body["jobs"][0]["id"]
    await asyncio.to_thread(service.store.cancel, job_id)
    await until(lambda: service.webhooks.sent >= 2)
    listing = await (await client.get(f"/comfymq/webhooks/deliveries?state=retrying&job={job_id}")).json()
    [d] = listing["deliveries"]
    assert d["last_status"] is None and "Connect" in d["last_error"], d["last_error"]


@pytest.mark.parametrize(
    "hooks, message",
    [
        (["ftp://example.com/x"], "only http and https"),
        (["javascript:alert(1)"], "only http and https"),
        (["file:///etc/passwd"], "only http and https"),
        (["http:///nohost"], "names no host"),
        (["http://a b/"], "space"),
        (["http://x/" + "a" * 3000], "1 to 2048"),
        (["http://x:99999/"], "not a URL"),
        ([{"url": "http://x/", "events": ["job.exploded"]}], "unknown event"),
        ([{"url": "http://x/", "events": []}], "non-empty"),
        ([{"url": "http://x/", "secret": "s"}], "unknown field"),
        (["http://x/"] * 9, "at most 8"),
        ("http://x/", "must be a list"),
        ([42], "a URL or an object"),
    ],
)
@pytest.mark.asyncio
async def test_bad_targets_are_refused_and_queue_nothing(client, service, hooks, message):
    before = service.store.stats()["total"]
    resp = await client.post("/comfymq/jobs", json={"prompt": PROMPT, "webhooks": hooks})
    assert resp.status == 400
    assert message in (await resp.json())["error"]["message"]
    assert service.store.stats()["total"] == before


@pytest.mark.asyncio
async def test_the_host_s_own_targets_hear_every_job_from_every_api(client, service):
    with Receiver() as r:
        service.start_webhooks([r.url], **FAST)
        a = (await post(client, "/comfymq/jobs", {"prompt": PROMPT}))["jobs"][0]["id"]
        b = (await post(client, "/tasks", {"prompt": PROMPT}))["task"]["id"]
        c = (await post(client, "/api/v2/jobs", {"workflow": PROMPT}, status=201))["id"]
        for job_id in (a, b, c):
            await asyncio.to_thread(service.store.cancel, job_id)
        await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 3)
        seen = sorted(p["data"]["id"] for p in r.verified(service.webhooks.secret))
        assert seen == sorted([a, b, c])


@pytest.mark.asyncio
async def test_batch_finished_is_sent_once_when_the_last_job_ends(client, service):
    with Receiver() as r:
        service.start_webhooks([], **FAST)
        body = await post(
            client,
            "/comfymq/jobs",
            {"prompt": PROMPT, "count": 3, "webhooks": [{"url": r.url, "events": ["batch.finished"]}]},
        )
        ids = [j["id"] for j in body["jobs"]]
        await asyncio.to_thread(finish, service, ids[0])
        await asyncio.to_thread(service.store.cancel, ids[1])
        await asyncio.sleep(0.5)
        assert r.requests == []  # one job still pending: no batch event, and no job events were asked for
        await asyncio.to_thread(finish, service, ids[2], fail=True)
        await asyncio.to_thread(r.wait, lambda reqs: len(reqs) >= 1)
        await asyncio.sleep(0.5)
        [payload] = r.verified(service.webhooks.secret)
        assert payload["type"] == "batch.finished"
        assert payload["data"]["batch_id"] == body["batch_id"] and payload["data"]["count"] == 3
        assert payload["data"]["counts"] == {"succeeded": 1, "cancelled": 1, "failed": 1}


def test_a_crash_while_making_deliveries_makes_them_again_not_twice(service):
    """The Deliverer dies after making some records: a new one (a restart) makes the rest and sends each once."""
    with Receiver() as r:
        job = service.store.enqueue(
            PROMPT,
            notify=True,
            labels={
                "comfymq/webhooks": [
                    {"url": r.url + "?a", "events": ["job.cancelled"]},
                    {"url": r.url + "?b", "events": ["job.cancelled"]},
                ]
            },
        )
        service.store.cancel(job["id"])
        [(key, value)] = service.store.list_docs(prefix="outbox/")
        first = Deliverer(service.store, "whsec_" + "A" * 44, poll=0.05, backoff=(0.05,))
        first._make_records(job["id"], "cancelled", key[len("outbox/") :], json.loads(value))
        # as if it died after the first record: remove the second
        recs = service.store.list_docs(prefix=f"webhook/{job['id']}/")
        service.store.delete_doc(recs[1][0])
        second = Deliverer(service.store, "whsec_" + "A" * 44, poll=0.05, backoff=(0.05,))
        second.start()
        try:
            r.wait(lambda reqs: len(reqs) >= 2)
            time.sleep(0.3)
            assert sorted(q["path"] for q in r.requests) == ["/hook?a", "/hook?b"]
        finally:
            second.stop()


def test_kill_9_between_the_commit_and_the_send_delivers_after_restart(tmp_path):
    """The host is killed while its first request hangs unanswered; after a restart the same delivery (same
    webhook-id) is made again and answered, and the outbox is empty."""
    from http_host import HostProcess

    data = tmp_path / "data"
    with Receiver() as r:
        r.hang.set()
        host = HostProcess(tmp_path, f"--webhook={r.url}", data_dir=data)
        try:
            status, body = host.json("POST", "/comfymq/jobs", {"prompt": PROMPT})
            assert status == 200, body
            job_id = body["jobs"][0]["id"]
            status, _ = host.json("POST", f"/comfymq/jobs/{job_id}/cancel", {})
            assert status == 200
            r.wait(lambda reqs: len(reqs) >= 1)
            host.proc.kill()
            host.proc.wait(timeout=10)
        finally:
            host.stop()
        first_id = r.requests[0]["headers"]["webhook-id"]
        r.hang.clear()
        with HostProcess(tmp_path, f"--webhook={r.url}", data_dir=data) as again:
            reqs = r.wait(lambda reqs: len(reqs) >= 2)
            assert reqs[1]["headers"]["webhook-id"] == first_id
            secret = (data / "webhook-secret").read_text().strip()
            assert all(p["data"]["id"] == job_id for p in r.verified(secret))
            end = time.monotonic() + 20
            while time.monotonic() < end:
                _, info = again.json("GET", "/comfymq/webhooks")
                if info["outbox"] == 0:
                    break
                time.sleep(0.1)
            assert info["outbox"] == 0
            _, view = again.json("GET", f"/comfymq/jobs/{job_id}")
            assert view["job"]["webhooks"][0]["state"] == "delivered"


@pytest.mark.asyncio
async def test_a_webhook_pointed_at_the_host_s_own_api_changes_nothing(aiohttp_server, service):
    """A job's webhook URL naming the host's own API (here: pause the queue): the request the host's sender makes
    carries a webhook signature, and the API refuses every such request (403), so it changes nothing."""
    from comfy_nodes.host.standalone import build_app

    server = await aiohttp_server(build_app(service))
    service.start_webhooks([], **FAST)
    own = f"http://127.0.0.1:{server.port}/comfymq/queue/pause"
    from aiohttp import ClientSession

    async with ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{server.port}/comfymq/jobs",
            json={"prompt": PROMPT, "webhooks": [own]},
        ) as resp:
            assert resp.status == 200, await resp.text()
            job_id = (await resp.json())["jobs"][0]["id"]
    await asyncio.to_thread(service.store.cancel, job_id)
    await until(lambda: service.webhooks.sent >= 1)
    await asyncio.sleep(0.2)
    assert service.store.paused is False
    [d] = await asyncio.to_thread(deliveries.for_job, service.store, job_id)
    assert d["last_status"] == 403
