"""The Comfy API v2 in front of the farm (api/v2), driven by the official Python SDK (comfy-sdk, pinned) as a user's
program would, against the cluster of test_end_to_end.py (a standalone host; w1 and w2 on stand-in ComfyUIs).
Every JSON answer on the way is checked against the contract's models: those the SDK generates from the synced
spec/openapi.yaml (comfy_low.models; comfy-api-proxy 0.1.6's own generated models drop the spec's `nullable` and
refuse every job not finished, so they cannot be the yardstick).

- Upload an image (blake3 dedup: the same bytes again mint no new blob), set it as a LoadImage input, run, stream
  the events (status -> ... -> succeeded, an output event), download the output (whole, and a range).
- An idempotent resubmit (same key, same request) answers the same job; the same key with another request is 422
  idempotency_key_reuse; a cancel; list (newest first, labels filter, cursor).
- Errors: a UI-format workflow, an unknown asset, an unknown job: the contract's codes.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest
from comfy_low import models as contract
from conftest import http_json as http
from test_end_to_end import running_cluster
from test_inputs_e2e import picture

from tests.standin import versions
from tests.standin.nodes import read_png

pytestmark = pytest.mark.subprocess
TARGET = f"standin-{versions.DEFAULT}"


@pytest.fixture
def v2(tmp_path, monkeypatch):
    with running_cluster(tmp_path, TARGET) as (base, procs, comfyuis):
        monkeypatch.setenv("COMFY_BASE_URL", base)
        monkeypatch.delenv("COMFY_API_KEY", raising=False)
        from comfy_sdk import Comfy

        with Comfy(timeout=30) as client:
            yield client, base, comfyuis


def check_job(body: dict) -> None:
    contract.Job.model_validate(body)


def invert(image) -> dict:
    return {
        "10": {"class_type": "LoadImage", "inputs": {"image": image}},
        "11": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "v2"}},
    }


def raw(base: str, method: str, path: str, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def test_an_sdk_program_uploads_runs_streams_and_downloads(v2, tmp_path):
    client, base, comfyuis = v2
    pic = picture(11)
    src = tmp_path / "photo.png"
    src.write_bytes(pic)
    asset = client.assets.from_file(src)
    wf = client.workflows.from_json(invert("placeholder.png"))
    wf.set_input("10", "image", asset)
    job = client.submit(wf, metadata={"client": "acme", "run": "1"})
    check_job(raw(base, "GET", f"/api/v2/jobs/{job.id}")[2])

    # the raw frames, each payload checked against its model, then the SDK's typed iterator
    kinds = {
        "status": contract.StatusEvent,
        "progress": contract.Progress,
        "output": contract.Output,
        "preview": contract.PreviewEvent,
        "log": contract.LogEvent,
    }
    frames = list(client._low.get_job_events(job.id))
    for frame in frames:
        kinds[frame.event].model_validate(frame.data)
    assert frames[-1].event == "status" and frames[-1].data["status"] == "succeeded", frames
    seen = []
    for ev in job.events():
        seen.append(type(ev).__name__ + ":" + str(getattr(ev, "status", "")))
    assert seen[-1] == "StatusChange:succeeded", seen
    assert any(s.startswith("OutputReady") for s in seen), seen
    done = job.refresh()
    assert done.status == "succeeded" and done.metadata == {"client": "acme", "run": "1"}
    [out] = done.get_outputs("13")
    data = out.to_bytes()
    image, _ = read_png(data)
    source, _ = read_png(pic)
    assert image.pixels == bytes(255 - b for b in source.pixels), "the output is the uploaded picture inverted"
    assert out.to_bytes(range=(0, 7)) == data[:8]
    status, _, body = raw(base, "GET", f"/api/v2/assets/{out.id}")
    assert status == 200, body
    contract.Asset.model_validate(body)
    assert body["hash"].startswith("blake3:") and body["size_bytes"] == len(data)

    # the same bytes again: the blob is known by its blake3 (the SDK's dedup fast path), no second upload
    again = client.assets.from_file(src)
    again.commit()
    assert again.hash == asset.hash and again.created_new in (False, None)
    status, _, body = raw(base, "GET", f"/api/v2/assets/{asset.id}")
    contract.Asset.model_validate(body)
    assert body["hash"] == "blake3:" + __import__("blake3").blake3(pic).hexdigest()
    stored = hashlib.sha256(pic).hexdigest()
    assert http(f"{base}/comfymq/inputs/{stored}")[0] == 200, "the asset is the input store's file"


def test_previews_log_lines_and_health_stream_to_an_sdk_program(v2):
    """A node that sends preview frames: the newest preview reaches the stream as `preview` events (a JPEG, base64,
    the contract's PreviewEvent), `log` lines say where and how it ran, and the SDK's typed iterator reads both;
    job lists carry no preview bytes. GET /api/v2/health (an extension) answers the queue and workers."""
    import base64

    client, base, _ = v2
    wf = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ProbeProgress", "inputs": {"images": ["1", 0], "steps": 40, "preview": True}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pv"}},
    }
    job = client.submit(client.workflows.from_json(wf))
    frames = list(client._low.get_job_events(job.id))
    previews = [f for f in frames if f.event == "preview"]
    logs = [f for f in frames if f.event == "log"]
    assert previews, [f.event for f in frames]
    for f in previews:
        contract.PreviewEvent.model_validate(f.data)
        assert f.data["content_type"] == "image/jpeg" and f.data["node_id"] == "2"
        assert base64.b64decode(f.data["data_base64"])[:3] == b"\xff\xd8\xff"
    for f in logs:
        contract.LogEvent.model_validate(f.data)
    messages = [f.data["message"] for f in logs]
    assert any(m.startswith("attempt 1 running on worker") for m in messages), messages
    assert messages[-1].startswith("succeeded on worker"), messages
    # the SDK's typed events (another workflow: ComfyUI would answer the same one from its cache, running nothing)
    wf["2"]["inputs"]["steps"] = 41
    again = client.submit(client.workflows.from_json(wf))
    kinds = {type(ev).__name__ for ev in again.events()}
    assert {"Preview", "Log", "StatusChange"} <= kinds, kinds
    status, _, listed = raw(base, "GET", "/comfymq/jobs?limit=5")
    assert status == 200 and "data_base64" not in json.dumps(listed)
    status, _, health = raw(base, "GET", "/api/v2/health")
    assert status == 200 and health["status"] == "ok" and health["workers"]["online"] == 2, health
    assert health["queue"]["counts"]["succeeded"] >= 1


def test_idempotency_cancel_list_and_errors(v2):
    client, base, _ = v2
    slow = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 30, "tag": "v2"}}}
    status, headers, first = raw(base, "POST", "/api/v2/jobs", {"workflow": slow}, {"Idempotency-Key": "k-1"})
    assert status == 201, first
    check_job(first)
    status, headers, again = raw(base, "POST", "/api/v2/jobs", {"workflow": slow}, {"Idempotency-Key": "k-1"})
    assert status == 201 and again["id"] == first["id"] and headers.get("Idempotency-Replayed") == "true"
    other = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 31, "tag": "v2"}}}
    status, _, err = raw(base, "POST", "/api/v2/jobs", {"workflow": other}, {"Idempotency-Key": "k-1"})
    assert status == 422 and err["error"]["code"] == "idempotency_key_reuse", err
    contract.ErrorEnvelope.model_validate(err)

    # the SDK with an explicit key: the same request again is the same job
    keyed = [client.submit(client.workflows.from_json(slow), idempotency_key="sdk-key-1") for _ in range(2)]
    assert keyed[0].id == keyed[1].id
    keyed[0].cancel()

    job = client.jobs.get(first["id"])
    job.cancel()
    assert job.status == "canceled", job.status
    check_job(raw(base, "POST", f"/api/v2/jobs/{first['id']}/cancel")[2])  # idempotent

    labelled = [client.submit(client.workflows.from_json(slow), metadata={"batch": "b7"}) for _ in range(3)]
    for j in labelled:
        j.cancel()
    status, _, page = raw(base, "GET", "/api/v2/jobs?limit=2&metadata%5Bbatch%5D=b7")
    assert status == 200 and [j["id"] for j in page["jobs"]] == [labelled[2].id, labelled[1].id], page
    for j in page["jobs"]:
        check_job(j)
    status, _, rest = raw(base, "GET", f"/api/v2/jobs?limit=2&metadata%5Bbatch%5D=b7&cursor={page['next_cursor']}")
    assert [j["id"] for j in rest["jobs"]] == [labelled[0].id] and "next_cursor" not in rest, rest

    for body, code in (
        ({"workflow": {"nodes": [], "links": []}}, "workflow_format_ui"),
        ({"workflow": invert({"__type": "core/ASSET", "info": {"id": "asset_" + "0" * 32}})}, "missing_asset"),
        ({"workflow": {}}, "invalid_workflow"),
        ({"workflow": slow, "webhook_url": "http://x"}, "invalid_request"),
    ):
        status, _, err = raw(base, "POST", "/api/v2/jobs", body)
        assert status == 422 and err["error"]["code"] == code, (body, err)
        contract.ErrorEnvelope.model_validate(err)
    status, _, err = raw(base, "GET", "/api/v2/jobs/0123456789abcdef")
    assert status == 404 and err["error"]["code"] == "not_found"
    assert raw(base, "HEAD", "/api/v2/assets/by-hash/blake3:" + "0" * 64)[0] == 404
