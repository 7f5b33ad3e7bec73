"""The Comfy API v2's edges, in process (api/v2 on the standalone host's app with a real store on disk): what a
careless or hostile client sends gets the contract's error code and changes nothing.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from aiohttp import FormData
from comfy_low import models as contract

from comfy_nodes.host.standalone import build_app
from comfy_nodes.service import QueueService

SLOW = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 1}}}
JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture
async def api(tmp_path, aiohttp_client):
    service = QueueService(tmp_path / "data")
    client = await aiohttp_client(build_app(service))
    yield client, service
    service.close()


async def post(client, path, body, headers=None):
    resp = await client.post(path, data=json.dumps(body), headers={**JSON, **(headers or {})})
    return resp.status, await resp.json()


def total(service) -> int:
    return service.store.stats()["total"]


@pytest.mark.asyncio
async def test_bad_submissions_get_the_contracts_codes_and_queue_nothing(api):
    client, service = api
    cases = [
        ({"workflow": SLOW, "metadata": {"bad key!": "x"}}, {}, "metadata_invalid"),
        ({"workflow": SLOW, "metadata": {f"k{i}": "v" for i in range(17)}}, {}, "metadata_invalid"),
        ({"workflow": SLOW, "metadata": {"k": 5}}, {}, "metadata_invalid"),
        ({"workflow": SLOW, "metadata": "labels"}, {}, "metadata_invalid"),
        ({"workflow": SLOW, "priority": "high"}, {}, "invalid_request"),
        ({"workflow": SLOW, "priority": 2**40}, {}, "invalid_request"),
        ({"workflow": SLOW, "inputs": {}}, {}, "invalid_request"),
        ({"workflow": SLOW, "extra_data": {"api_key_comfy_org": "secret"}}, {}, "extra_data_not_supported"),
        ({"workflow": [SLOW]}, {}, "invalid_workflow"),
        ({"workflow": {"1": {"inputs": {}}}}, {}, "invalid_workflow"),
        ({"workflow": {"1": {"class_type": "X", "inputs": {"a": {"comfymq_input": "0" * 64}}}}}, {}, "missing_asset"),
        ({"workflow": SLOW}, {"Idempotency-Key": "has space"}, "invalid_request"),
        ({"workflow": SLOW}, {"Idempotency-Key": "k" * 256}, "invalid_request"),
    ]
    before = total(service)
    for body, headers, code in cases:
        status, err = await post(client, "/api/v2/jobs", body, headers)
        assert status == 422 and err["error"]["code"] == code, (body, err)
        contract.ErrorEnvelope.model_validate(err)
    asset_ref = {"__type": "core/ASSET", "info": {"id": "asset_o0123456789abcdef_0"}}
    status, err = await post(
        client, "/api/v2/jobs", {"workflow": {"1": {"class_type": "X", "inputs": {"i": asset_ref}}}}
    )
    assert status == 422 and err["error"]["code"] == "missing_asset", err
    assert total(service) == before


@pytest.mark.asyncio
async def test_a_queued_job_says_its_place(api):
    client, service = api
    ids = [(await post(client, "/api/v2/jobs", {"workflow": SLOW, "priority": p}))[1]["id"] for p in (1, 1, 5)]
    places = [(await (await client.get(f"/api/v2/jobs/{i}")).json())["queue_position"] for i in ids]
    assert places == [1, 2, 0], places  # the priority 5 job first, then by age
    status, waiting = await post(client, "/api/v2/jobs", {"workflow": SLOW})
    after = service.store.enqueue(SLOW, after=[ids[0]])["id"]
    assert (await (await client.get(f"/api/v2/jobs/{after}")).json())["queue_position"] is None


@pytest.mark.asyncio
async def test_one_key_in_flight_at_a_time_and_a_replay_is_the_same_job(api):
    client, service = api
    results = await asyncio.gather(
        *(post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "same"}) for _ in range(8))
    )
    ids = {body["id"] for status, body in results if status == 201}
    assert len(ids) == 1, results
    assert all(s == 201 or (s == 409 and b["error"]["code"] == "idempotency_conflict") for s, b in results), results
    assert total(service) == 1
    status, again = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "same"})
    assert status == 201 and again["id"] in ids


@pytest.mark.asyncio
async def test_a_key_expires_after_its_time_and_then_makes_a_new_job(api, monkeypatch):
    import comfy_nodes.api.v2 as v2

    client, service = api
    monkeypatch.setattr(v2, "KEY_TTL_MS", 300)  # the contract's 24 h, shortened
    status, first = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "k-exp"})
    status, again = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "k-exp"})
    assert status == 201 and again["id"] == first["id"]
    await asyncio.sleep(0.4)
    status, second = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "k-exp"})
    assert status == 201 and second["id"] != first["id"]
    assert service.store.get(second["id"], with_prompt=False)["prompt_id"].endswith("-g1")
    status, replay = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "k-exp"})
    assert status == 201 and replay["id"] == second["id"]  # the live use of the key
    status, err = await post(client, "/api/v2/jobs", {"workflow": {"9": SLOW["1"]}}, {"Idempotency-Key": "k-exp"})
    assert status == 422 and err["error"]["code"] == "idempotency_key_reuse"
    assert total(service) == 2


@pytest.mark.asyncio
async def test_cancel_takes_no_body_and_unknown_things_are_not_found(api):
    client, service = api
    status, job = await post(client, "/api/v2/jobs", {"workflow": SLOW})
    resp = await client.post(
        f"/api/v2/jobs/{job['id']}/cancel", data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_request"
    assert service.store.get(job["id"], with_prompt=False)["state"] == "pending", "a form post cancels nothing"
    resp = await client.post(f"/api/v2/jobs/{job['id']}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "canceled"
    for path in (
        "/api/v2/jobs/nope",
        "/api/v2/assets/asset_..%2F..%2Fetc",
        "/api/v2/assets/asset_o0123456789abcdef_9",
        "/api/v2/assets/asset_" + "0" * 32 + "/content",
    ):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found", path
    resp = await client.get("/api/v2/jobs?limit=0")
    assert resp.status == 422
    resp = await client.get("/api/v2/jobs?bogus=1")
    assert resp.status == 422


@pytest.mark.asyncio
async def test_uploads_are_bounded_and_checked(api):
    client, service = api
    form = FormData()
    form.add_field("file", b"PNGDATA", filename="a.png", content_type="image/png")
    form.add_field("content_type", "image/png")
    form.add_field("file_path", "a.png")
    form.add_field("expected_hash", "blake3:" + "0" * 64)
    resp = await client.post("/api/v2/assets", data=form)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "hash_mismatch"
    form = FormData()
    form.add_field("file", b"PNGDATA", filename="a.png", content_type="image/png")
    for i in range(60):
        form.add_field("tags", f"t{i}")
    resp = await client.post("/api/v2/assets", data=form)
    assert resp.status == 422 and "at most" in (await resp.json())["error"]["message"]
    form = FormData()
    form.add_field("file", b"PNGDATA", filename="a.png", content_type="image/png")
    form.add_field("content_type", "image/png")
    resp = await client.post("/api/v2/assets", data=form)
    assert resp.status == 422 and "file_path" in (await resp.json())["error"]["message"]
    form = FormData()
    form.add_field("file", b"PNGDATA", filename="a.png", content_type="image/png")
    form.add_field("content_type", "image/png")
    form.add_field("file_path", "a.png")
    resp = await client.post("/api/v2/assets", data=form)
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    contract.Asset.model_validate(asset)
    assert asset["url"].startswith("http://") and asset["created_new"] is True
    resp = await client.post("/api/v2/assets", data=form)
    assert resp.status == 200 and (await resp.json())["id"] == asset["id"], "the same reference: found again"
    status, minted = await post(client, "/api/v2/assets/from-hash", {"hash": asset["hash"], "file_path": "b.png"})
    assert status == 201 and minted["id"] != asset["id"]
    status, err = await post(client, "/api/v2/assets/from-hash", {"hash": "blake3:" + "1" * 64})
    assert status == 404 and err["error"]["code"] == "blob_not_found"
    resp = await client.get(f"/api/v2/assets/{asset['id']}/content", headers={"Range": "bytes=0-2"})
    assert resp.status == 206 and await resp.read() == b"PNG"
    resp = await client.delete(f"/api/v2/assets/{minted['id']}")
    assert resp.status == 204
    assert (await client.get(f"/api/v2/assets/{minted['id']}")).status == 404


@pytest.mark.asyncio
async def test_inside_comfyui_it_is_mounted_under_comfymq_with_the_token(tmp_path, aiohttp_client):
    from aiohttp import web
    from conftest import free_port

    from comfy_nodes.config import load_config
    from comfy_nodes.plugin import Plugin

    cfg = load_config(
        {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}", "COMFYMQ_TOKEN": "t" * 24},
        user_dir=str(tmp_path / "user"),
        output_dir=str(tmp_path / "out"),
    )
    plugin = Plugin(cfg)
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        client = await aiohttp_client(app)
        status, err = await post(client, "/comfymq/api/v2/jobs", {"workflow": SLOW})
        assert status == 401, err
        status, job = await post(
            client, "/comfymq/api/v2/jobs", {"workflow": SLOW}, {"Authorization": "Bearer " + "t" * 24}
        )
        assert status == 201, job
        contract.Job.model_validate(job)
        assert job["urls"]["self"] == f"/comfymq/api/v2/jobs/{job['id']}" and job["status"] == "queued"
    finally:
        plugin.close()
