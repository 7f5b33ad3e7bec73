"""The Comfy API v2 (api/v2) attacked, in process: the standalone host's app over a real store on disk, as in
test_api_v2_edges.py. The host is reachable by every web page its user opens (cross-site requests, DNS rebinding)
and by every machine on the LAN: nothing may change state it has no right to, wedge a handler, leak a file, or grow
memory or disk without a bound. A test marked xfail(strict=True) shows a defect that is still there.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from aiohttp import FormData
from test_api_v2_edges import post, total  # (the same helpers)

from comfy_nodes.api import v2 as v2mod
from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.host.standalone import build_app
from comfy_nodes.service import QueueService

SLOW = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 1}}}
JSON = {"Content-Type": "application/json"}
TOKEN = "t0ken-" + "x" * 24
LIMITS = RequestLimits(http_read_timeout=0.5, http_body_timeout=10.0)


class RecordingWatch(v2mod.JobWatch):
    """The JobWatch of each app built in a test, kept for inspection (the real one is a closure's local)."""

    made: list = []

    def __init__(self):
        super().__init__()
        RecordingWatch.made.append(self)


@pytest_asyncio.fixture
async def api(tmp_path, aiohttp_client, monkeypatch):
    monkeypatch.setattr(v2mod, "JobWatch", RecordingWatch)
    monkeypatch.setattr(RecordingWatch, "made", [])
    monkeypatch.setattr(v2mod, "POLL", 0.05)
    monkeypatch.setattr(v2mod, "KEEPALIVE", 0.2)
    service = QueueService(tmp_path / "data")
    client = await aiohttp_client(build_app(service, limits=LIMITS))
    client.watch = RecordingWatch.made[-1]
    yield client, service
    service.close()


@pytest_asyncio.fixture
async def locked(tmp_path, aiohttp_client):
    service = QueueService(tmp_path / "data")
    client = await aiohttp_client(build_app(service, token=TOKEN, limits=LIMITS))
    yield client, service
    service.close()


# ---- helpers ------------------------------------------------------------------------------------------------


def asset_records(service) -> list[str]:
    folder = service.data_dir / "v2" / "assets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def blobs(service) -> list[str]:
    root = service.inputs.root
    return sorted(p.name for d in root.iterdir() if d.is_dir() and len(d.name) == 2 for p in d.iterdir())


def temp_files(service) -> list[str]:
    return sorted(p.name for p in service.inputs.tmp_dir.iterdir())


def form(data=b"PNGDATA", *, content_type="image/png", file_path="a.png", **extra):
    f = FormData()
    f.add_field("file", data, filename="a.png", content_type="application/octet-stream")
    if content_type is not None:
        f.add_field("content_type", content_type)
    if file_path is not None:
        f.add_field("file_path", file_path)
    for k, v in extra.items():
        f.add_field(k, v)
    return f


async def upload(client, data=b"PNGDATA", **kw) -> dict:
    resp = await client.post("/api/v2/assets", data=form(data, **kw))
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def submit(client, workflow=SLOW, **kw) -> dict:
    status, job = await post(client, "/api/v2/jobs", {"workflow": workflow, **kw})
    assert status == 201, job
    return job


def finish(service, job_id, *, fail=False, artifacts=None, outputs=None):
    """Runs job_id to an end through the store (leases until it is the one taken; the others go back)."""
    others = []
    lease = service.store.take("w-test")
    while lease["job_id"] != job_id:
        others.append(lease)
        lease = service.store.take("w-test")
    if fail:
        service.store.fail(job_id, lease["token"], {"type": "boom", "message": "it broke"}, retryable=False)
    else:
        service.store.complete(job_id, lease["token"], outputs=outputs or {}, artifacts=artifacts or [])
    for other in others:
        service.store.cancel(other["job_id"])
        service.store.retry(other["job_id"])


def artifact(service, job_id, name, data, mime=None) -> dict:
    info = service.artifacts.write(f"{job_id}/{name}", data)
    return {"path": info["path"], "size": info["size"], "sha256": info["sha256"], **({"mime": mime} if mime else {})}


def asset_ref(asset_id) -> dict:
    return {"__type": "core/ASSET", "info": {"id": asset_id}}


def uses(asset_id_or_value) -> dict:
    value = asset_id_or_value if isinstance(asset_id_or_value, dict) else asset_ref(asset_id_or_value)
    return {"1": {"class_type": "LoadImage", "inputs": {"image": value}}}


async def raw_request(client, head: bytes, body: bytes = b"", *, wait: float = 3.0) -> bytes | None:
    """Sends head+body on a raw connection, keeps it open, and returns what came back within `wait` seconds
    (None: nothing, the handler is still waiting)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(65536), wait)
        except asyncio.TimeoutError:
            return None
    finally:
        writer.close()


async def until(check, seconds=3.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not check():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


async def next_event(resp) -> tuple[str, dict] | None:
    """The next SSE event (comments skipped); None at the end of the stream."""
    name = None
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 5)
        if not line:
            return None
        line = line.rstrip(b"\n")
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data = json.loads(line[6:])
            await resp.content.readline()
            return name, data


# ---- site rules: cross-site, rebinding, forms ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_cross_site_and_rebound_writes_are_refused_and_change_nothing(api):
    client, service = api
    job = await submit(client)
    asset = await upload(client)
    port = client.server.port
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://localhost.evil.example:{port}"},
        {"Origin": f"http://127.0.0.1:{port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": f"http://127.0.0.1:{port}"},  # (own Origin: not an allowed one)
        {"Host": f"evil.example:{port}"},
        {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},  # DNS rebinding
        {"Host": "127.0.0.1.nip.io"},
    ]
    records_before, blobs_before, jobs_before = asset_records(service), blobs(service), total(service)
    for headers in foreign:
        attempts = [
            client.post("/api/v2/jobs", data=json.dumps({"workflow": SLOW}), headers={**JSON, **headers}),
            client.post(f"/api/v2/jobs/{job['id']}/cancel", headers=headers),
            client.post(f"/api/v2/jobs/{job['id']}/cancel", headers={"Content-Type": "text/plain", **headers}),
            client.post("/api/v2/assets", data=form(b"other bytes", file_path="x.png"), headers=headers),
            client.delete(f"/api/v2/assets/{asset['id']}", headers=headers),
            client.post(
                "/api/v2/assets/from-hash",
                data=json.dumps({"hash": asset["hash"], "file_path": "y.png"}),
                headers={**JSON, **headers},
            ),
            client.get(f"/api/v2/assets/{asset['id']}/content", headers=headers),  # (a rebound page reads it)
            client.get(f"/api/v2/jobs/{job['id']}/events", headers=headers),
        ]
        for attempt in attempts:
            resp = await attempt
            err = await resp.json()
            assert resp.status == 403, (headers, resp.status, err)
            assert err["error"]["code"] in ("cross_origin", "host_not_allowed"), err
            assert "Access-Control-Allow-Origin" not in resp.headers
    # forms and bodyless fetches without Origin: not JSON -> 415 (the JSON routes), nothing queued
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": ctype} if ctype else {}
        resp = await client.post("/api/v2/jobs", data=json.dumps({"workflow": SLOW}).encode(), headers=headers)
        assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type", ctype
        resp = await client.post(
            "/api/v2/assets/from-hash", data=json.dumps({"hash": asset["hash"], "file_path": "z.png"}), headers=headers
        )
        assert resp.status == 415, ctype
    assert total(service) == jobs_before
    assert service.store.get(job["id"], with_prompt=False)["state"] == "pending"
    assert asset_records(service) == records_before and blobs(service) == blobs_before
    assert temp_files(service) == []
    # a preflight is never granted
    resp = await client.options(
        "/api/v2/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert not any(h.lower().startswith("access-control-allow") for h in resp.headers)


@pytest.mark.asyncio
async def test_with_a_token_every_v2_route_is_401_without_it(locked):
    client, service = locked
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, job = await post(client, "/api/v2/jobs", {"workflow": SLOW}, auth)
    assert status == 201, job
    resp = await client.post("/api/v2/assets", data=form(), headers=auth)
    assert resp.status == 201
    asset = await resp.json()
    h = asset["hash"].removeprefix("blake3:")
    jid, aid = job["id"], asset["id"]
    routes = [
        ("POST", "/api/v2/jobs", json.dumps({"workflow": SLOW}), JSON),
        ("GET", "/api/v2/jobs", None, {}),
        ("GET", "/api/v2/jobs?metadata[a]=b", None, {}),
        ("GET", f"/api/v2/jobs/{jid}", None, {}),
        ("GET", f"/api/v2/jobs/{jid}/events", None, {}),
        ("POST", f"/api/v2/jobs/{jid}/cancel", None, {}),
        ("GET", f"/api/v2/jobs/{jid}/workflow", None, {}),
        ("POST", "/api/v2/assets", None, {}),
        ("POST", "/api/v2/assets/from-hash", json.dumps({"hash": asset["hash"], "file_path": "q"}), JSON),
        ("HEAD", f"/api/v2/assets/by-hash/blake3:{h}", None, {}),
        ("HEAD", f"/api/v2/assets/by-hash/blake3:{'0' * 64}", None, {}),
        ("GET", f"/api/v2/assets/{aid}", None, {}),
        ("GET", f"/api/v2/assets/{aid}/content", None, {}),
        ("GET", f"/api/v2/assets/asset_o{jid}_0/content", None, {}),
        ("DELETE", f"/api/v2/assets/{aid}", None, {}),
        ("GET", "/api/v2/nothing/here", None, {}),
    ]
    for wrong in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": TOKEN}, {"Authorization": ""}):
        for method, path, data, headers in routes:
            if method == "POST" and path == "/api/v2/assets":
                data = form(b"unauthorised", file_path="u.png")
            resp = await client.request(method, path, data=data, headers={**headers, **wrong})
            assert resp.status == 401, (wrong, method, path, resp.status)
            assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), (method, path)
    assert total(service) == 1
    assert service.store.get(jid, with_prompt=False)["state"] == "pending"
    assert len(asset_records(service)) == 1 and len(blobs(service)) == 1 and temp_files(service) == []
    # the same routes with the token pass the guard
    resp = await client.head(f"/api/v2/assets/by-hash/blake3:{h}", headers=auth)
    assert resp.status == 200
    resp = await client.get(f"/api/v2/assets/{aid}/content", headers=auth)
    assert resp.status == 200 and await resp.read() == b"PNGDATA"


# ---- ids, hashes and paths -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_traversal_and_malformed_ids_find_nothing(api, tmp_path):
    client, service = api
    job = await submit(client)
    asset = await upload(client)
    (tmp_path / "data" / "v2" / "secret.json").write_text(json.dumps({"id": "x", "sha256": "0" * 64, "size": 1}))
    targets = [
        "/api/v2/assets/..%2Fsecret",
        "/api/v2/assets/..%2F..%2Fv2%2Fsecret",
        "/api/v2/assets/asset_..%2F..%2Fsecret",
        "/api/v2/assets/%2E%2E",
        "/api/v2/assets/asset_" + "0" * 32 + "%00",
        "/api/v2/assets/" + asset["id"] + "%0A",
        "/api/v2/assets/" + asset["id"].upper(),
        "/api/v2/assets/" + asset["id"].replace("a", "\uff41", 1),  # fullwidth a
        "/api/v2/assets/asset_%C3%A9" + "0" * 31,
        "/api/v2/assets/asset_o" + job["id"] + "_0",  # a pending job: no outputs
        "/api/v2/assets/asset_o" + job["id"] + "_-1",
        "/api/v2/assets/asset_o" + job["id"] + "_1e3",
        "/api/v2/assets/asset_o" + job["id"] + "_1234567",
        "/api/v2/assets/asset_o" + job["id"].upper() + "_0",
        "/api/v2/assets/asset_o..%2F..%2F..%2Fstore_0",
        "/api/v2/assets/asset_o" + "0" * 16 + "_0/content",
        "/api/v2/jobs/" + job["id"].upper(),
        "/api/v2/jobs/..%2F" + job["id"],
        "/api/v2/jobs/" + job["id"][:-1] + "\u0661",  # arabic-indic one
        "/api/v2/jobs/" + "0" * 16,
        "/api/v2/jobs/" + "0" * 16 + "/events",
        "/api/v2/jobs/" + "0" * 16 + "/workflow",
    ]
    for target in targets:
        resp = await client.get(target)
        assert resp.status == 404, (target, resp.status, await resp.text())
        assert (await resp.json())["error"]["code"] == "not_found", target
    for hash_text in (
        "..%2F..%2Fstore",
        "blake3:..%2F..%2F" + "0" * 58,
        "blake3:" + asset["hash"][7:].upper(),
        "blake3:" + asset["hash"][7:-1],
        "sha256:" + "0" * 64,
        asset["hash"][7:],
        "blake3:" + "g" * 64,
        "blake3:" + "0" * 4000,
    ):
        resp = await client.head(f"/api/v2/assets/by-hash/{hash_text}")
        assert resp.status in (404, 400), (hash_text, resp.status)
        status, err = await post(client, "/api/v2/assets/from-hash", {"hash": hash_text.replace("%2F", "/")})
        assert status == 404 and err["error"]["code"] == "blob_not_found", (hash_text, err)
    for bad in (None, 5, ["blake3:" + "0" * 64], {"h": 1}, ""):
        status, err = await post(client, "/api/v2/assets/from-hash", {"hash": bad})
        assert status in (404, 422), (bad, err)
    # deleting by a traversal id removes nothing
    for target in ("..%2Fsecret", "asset_..%2F..%2Fsecret", asset["id"] + "%0A", asset["id"][:-1]):
        resp = await client.delete(f"/api/v2/assets/{target}")
        assert resp.status == 404, target
    assert (tmp_path / "data" / "v2" / "secret.json").exists()
    assert (await client.get(f"/api/v2/assets/{asset['id']}")).status == 200


@pytest.mark.asyncio
async def test_output_assets_never_lead_outside_the_artifact_root(api, tmp_path):
    client, service = api
    job = await submit(client)
    jid = job["id"]
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    (tmp_path / "data" / "escape.png").write_bytes(b"outside the root")
    ok = artifact(service, jid, "ok.png", b"fine", "image/png")
    link = artifact(service, jid, "link.png", b"placeholder", "image/png")
    (service.artifact_root / jid / "link.png").unlink()
    (service.artifact_root / jid / "link.png").symlink_to(secret)
    outside = [
        {"path": "../escape.png", "size": 16, "sha256": "00" * 32},  # (the store records what a worker said)
        {"path": f"{jid}/../../escape.png", "size": 16, "sha256": "00" * 32},
        link,
    ]
    finish(service, jid, artifacts=[ok, *outside])
    recorded = len(service.store.get(jid, with_prompt=False)["artifacts"])
    assert recorded == 4
    resp = await client.get(f"/api/v2/assets/asset_o{jid}_0/content")
    assert resp.status == 200 and await resp.read() == b"fine"
    for i in range(1, recorded):
        for suffix in ("", "/content"):
            resp = await client.get(f"/api/v2/assets/asset_o{jid}_{i}{suffix}")
            body = await resp.read()
            assert resp.status == 404, (i, suffix, resp.status, body)
            assert b"secret" not in body and b"outside" not in body
    for index in (recorded, 999999, 1000000):
        resp = await client.get(f"/api/v2/assets/asset_o{jid}_{index}/content")
        assert resp.status == 404, index
    # an output's asset goes with its job: it is not deleted by itself
    resp = await client.delete(f"/api/v2/assets/asset_o{jid}_0")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "asset_in_use"
    assert (service.artifact_root / jid / "ok.png").exists()
    # nor is an outside file taken as another job's input
    for i in range(1, recorded):
        status, err = await post(client, "/api/v2/jobs", {"workflow": uses(f"asset_o{jid}_{i}")})
        assert status == 422 and err["error"]["code"] == "missing_asset", (i, err)
    assert blobs(service) == []


@pytest.mark.asyncio
async def test_an_output_whose_file_is_gone_or_a_folder_is_not_found(api):
    client, service = api
    jid = (await submit(client))["id"]
    gone = artifact(service, jid, "gone.png", b"soon gone", "image/png")
    folder = {"path": ".", "size": 1, "sha256": "00" * 32}
    finish(service, jid, artifacts=[gone, folder, {**folder, "path": jid}])
    (service.artifact_root / jid / "gone.png").unlink()
    problems = []
    for i in range(3):
        for suffix in ("/content", ""):
            resp = await client.get(f"/api/v2/assets/asset_o{jid}_{i}{suffix}")
            if resp.status != 404:
                problems.append((i, suffix, resp.status))
    assert problems == [], problems


@pytest.mark.asyncio
async def test_an_output_asset_id_with_a_superscript_digit_is_not_found(api):
    client, service = api
    jid = (await submit(client))["id"]
    finish(service, jid, artifacts=[artifact(service, jid, "ok.png", b"fine", "image/png")])
    bad = f"asset_o{jid}_\u00b2"
    resp = await client.get(f"/api/v2/assets/{bad}")
    assert resp.status == 404, (resp.status, await resp.text())
    resp = await client.delete(f"/api/v2/assets/{bad}")
    assert resp.status == 404, resp.status
    status, err = await post(client, "/api/v2/jobs", {"workflow": uses(bad)})
    assert status == 422 and err["error"]["code"] == "missing_asset", (status, err)


# ---- Idempotency-Key -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_idempotency_keys_cannot_be_turned_against_other_requests(api):
    client, service = api
    key = {"Idempotency-Key": "k-1"}
    status, first = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": {"a": "1"}}, key)
    assert status == 201
    other = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 2}}}
    for body in (
        {"workflow": other},
        {"workflow": SLOW},  # labels differ
        {"workflow": SLOW, "metadata": {"a": "2"}},
        {"workflow": SLOW, "metadata": {"a": "1"}, "priority": 1000},
    ):
        status, err = await post(client, "/api/v2/jobs", body, key)
        assert status == 422 and err["error"]["code"] == "idempotency_key_reuse", (body, err)
    resp = await client.post(
        "/api/v2/jobs", data=json.dumps({"workflow": SLOW, "metadata": {"a": "1"}}), headers={**JSON, **key}
    )
    assert resp.status == 201 and resp.headers.get("Idempotency-Replayed") == "true"
    assert (await resp.json())["id"] == first["id"]
    assert total(service) == 1
    # refused keys: not printable ASCII, too long, empty; nothing is queued for them
    for bad in ("\u00e9t\u00e9", "caf\u00e9", "k" * 256, "a\tb", "a b", "\x7f"):
        try:
            status, err = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": bad})
        except ValueError:  # (the client refuses to send it)
            continue
        assert status == 422 and err["error"]["code"] == "invalid_request", (bad, err)
    assert total(service) == 1
    # the reserved label that holds a key's request hash is neither settable nor visible nor filterable
    status, err = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": {"comfymq/request": "x"}})
    assert status == 422 and err["error"]["code"] == "metadata_invalid"
    assert first["metadata"] == {"a": "1"}
    stored = service.store.get(first["id"], with_prompt=False)["labels"]
    resp = await client.get("/api/v2/jobs", params={f"metadata[{v2mod.REQUEST_LABEL}]": stored[v2mod.REQUEST_LABEL]})
    assert (await resp.json())["jobs"] == []
    # a key's job cancelled: the key still answers that job, not a new one
    await client.post(f"/api/v2/jobs/{first['id']}/cancel")
    status, again = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": {"a": "1"}}, key)
    assert status == 201 and again["id"] == first["id"] and again["status"] == "canceled"
    # many distinct keys: one job each, no more; each replays
    for i in range(40):
        status, j = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": f"many-{i}"})
        assert status == 201
    for i in range(40):
        resp = await client.post(
            "/api/v2/jobs", data=json.dumps({"workflow": SLOW}), headers={**JSON, "Idempotency-Key": f"many-{i}"}
        )
        assert resp.headers.get("Idempotency-Replayed") == "true"
    assert total(service) == 41
    # a 255-character key is fine, and is not confused with a near neighbour
    long_key = "K" * 255
    status, a = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": long_key})
    status2, b = await post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": long_key[:-1] + "L"})
    assert status == status2 == 201 and a["id"] != b["id"]


@pytest.mark.asyncio
async def test_a_refused_request_does_not_burn_its_key(api):
    client, service = api
    key = {"Idempotency-Key": "first-try-refused"}
    status, err = await post(client, "/api/v2/jobs", {"workflow": uses("asset_" + "0" * 32)}, key)
    assert status == 422 and err["error"]["code"] == "missing_asset"
    status, err = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": {"bad key": "x"}}, key)
    assert status == 422
    status, job = await post(client, "/api/v2/jobs", {"workflow": SLOW}, key)
    assert status == 201, job
    assert total(service) == 1


# ---- metadata labels and list filters --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_label_abuse_is_refused(api):
    client, service = api
    cases = [
        {"a/b": "x"},
        {"comfymq/request": "0" * 64},
        {"": "x"},
        {"k" * 65: "x"},
        {"k": "v" * 257},
        {"k": "line\nbreak"},
        {"k": "nul\x00"},
        {"k": "esc\x1b[31m"},
        {"k": None},
        {"k": ["v"]},
        {"k": {"v": 1}},
        {"k\u00e9": "x"},
        {"k k": "x"},
        {"..": "x", "a\\b": "y"},
        {f"k{i}": "v" for i in range(17)},
    ]
    for metadata in cases:
        status, err = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": metadata})
        assert status == 422 and err["error"]["code"] == "metadata_invalid", (list(metadata)[:2], err)
    assert total(service) == 0


@pytest.mark.asyncio
async def test_a_label_key_with_a_trailing_newline_is_refused(api):
    client, service = api
    status, body = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": {"k\n": "x"}})
    assert status == 422 and body["error"]["code"] == "metadata_invalid", (status, body)


@pytest.mark.asyncio
async def test_labels_within_the_documented_bounds_are_stored_or_refused_as_metadata(api):
    client, service = api
    big = {f"{i:02d}" + "k" * 62: "\U0001f600" * 256 for i in range(16)}
    status, job = await post(client, "/api/v2/jobs", {"workflow": SLOW, "metadata": big})
    if status == 201:
        assert job["metadata"] == big
    else:
        assert status == 422 and job["error"]["code"] == "metadata_invalid", (status, job)
    assert total(service) == (1 if status == 201 else 0)


@pytest.mark.asyncio
async def test_list_filters_and_cursors_are_bounded(api):
    client, service = api
    for i in range(5):
        await submit(client, metadata={"n": str(i), "team": "a" if i % 2 else "b"})
    resp = await client.get("/api/v2/jobs", params={"metadata[team]": "a"})
    jobs = (await resp.json())["jobs"]
    assert resp.status == 200 and [j["metadata"]["n"] for j in jobs] == ["3", "1"]
    many = "&".join(f"metadata%5Bk{i}%5D=v" for i in range(300))
    resp = await client.get(f"/api/v2/jobs?{many}")
    assert resp.status == 200 and (await resp.json())["jobs"] == []
    for query in (
        "cursor=" + "0" * 5000,
        "cursor=..%2F..%2Fstore",
        "cursor=" + "A" * 16,
        "cursor=%00" * 16,
        "limit=101",
        "limit=-1",
        "limit=%C2%B2",  # superscript two: isdigit() but not a number
        "limit=" + "9" * 5000,
        "metadata%5B%5D=x",
        "metadata=x",
        "order=oldest",
    ):
        resp = await client.get(f"/api/v2/jobs?{query}")
        assert resp.status in (422, 400), (query, resp.status, await resp.text())
    # a well-formed cursor this host never gave: an empty page or a refusal, never a 500
    resp = await client.get("/api/v2/jobs?cursor=" + "0" * 16)
    assert resp.status in (200, 400, 404, 422), resp.status
    # paging with a filter visits every match once
    seen, cursor = [], None
    while True:
        params = {"metadata[team]": "b", "limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/v2/jobs", params=params)).json()
        seen += [j["metadata"]["n"] for j in page["jobs"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == ["4", "2", "0"]


@pytest.mark.asyncio
async def test_a_filtered_list_past_20000_jobs_does_not_pretend_to_end(api):
    client, service = api
    old = await submit(client, metadata={"needle": "yes"})
    for _ in range(21):
        service.store.enqueue_many([{"prompt": SLOW} for _ in range(1000)])
    resp = await client.get("/api/v2/jobs", params={"metadata[needle]": "yes", "limit": "1"})
    page = await resp.json()
    assert resp.status == 200
    assert [j["id"] for j in page["jobs"]] == [old["id"]] or page.get("next_cursor"), page


# ---- uploads -------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bad_uploads_leave_no_blob_no_record_no_temp_file(api):
    client, service = api
    f2 = form()
    f2.add_field("file", b"second file", filename="b.png")
    nofile = FormData()
    nofile.add_field("content_type", "image/png")
    nofile.add_field("file_path", "a.png")
    cases = [
        ("no file", nofile),
        ("two files", f2),
        ("a huge tag", form(tags="t" * 10_000)),
        ("a huge content_type", form(content_type="x/" + "y" * 5000)),
        ("a huge file_path", form(file_path="p" * 5000)),
        ("an unknown field", form(owner="me")),
        ("no content_type", form(content_type=None)),
        ("no file_path", form(file_path=None)),
        ("a NUL in file_path", form(file_path="a\x00.png")),
        ("a mismatched hash", form(expected_hash="blake3:" + "0" * 64)),
        ("a malformed hash", form(expected_hash="sha256:abc")),
    ]
    for name, body in cases:
        resp = await client.post("/api/v2/assets", data=body)
        err = await resp.json()
        assert resp.status in (409, 413, 422), (name, resp.status, err)
        if name.endswith("hash"):
            assert resp.status == 409 and err["error"]["code"] == "hash_mismatch", (name, err)
        assert asset_records(service) == [] and blobs(service) == [] and temp_files(service) == [], name
    for ctype, data in (
        ("multipart/form-data", b"--x\r\n"),  # no boundary
        ("multipart/form-data; boundary=x", b"not a multipart body at all"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nabc"),  # cut
        ("multipart/mixed; boundary=x", b"--x--\r\n"),
        ("application/json", b'{"file": "PNGDATA"}'),
        ("text/plain", b"PNGDATA"),
    ):
        resp = await client.post("/api/v2/assets", data=data, headers={"Content-Type": ctype})
        assert resp.status in (400, 408, 415, 422), (ctype, data, resp.status, await resp.text())
        assert asset_records(service) == [] and blobs(service) == [] and temp_files(service) == [], ctype


def _multipart_head(client, length: int | None, boundary: str = "bnd") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (
        f"POST /api/v2/assets HTTP/1.1\r\nHost: 127.0.0.1:{client.server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{size}\r\n"
    ).encode()


@pytest.mark.asyncio
async def test_a_stalled_upload_is_cut_off_and_leaves_nothing(api):
    client, service = api
    part = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nPARTIAL BYTES'
    for before in (b"", part[:20], part):  # stalled before the form, in a part's headers, inside the file
        answer = await raw_request(client, _multipart_head(client, 100_000), before, wait=5)
        assert answer is not None, f"the upload is still waiting after 5 s (stalled after {len(before)} bytes)"
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"timeout"' in answer
        assert await until(lambda: temp_files(service) == [])
    assert asset_records(service) == [] and blobs(service) == []


@pytest.mark.asyncio
async def test_a_stalled_body_on_a_bodyless_route_is_cut_off(api):
    client, service = api
    job = await submit(client)
    port = client.server.port
    for head in (
        f"POST /api/v2/jobs/{job['id']}/cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 10\r\n\r\n",
        f"DELETE /api/v2/assets/asset_{'0' * 32} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    ):
        answer = await raw_request(client, head.encode(), wait=3)
        assert answer is not None and answer.split(b" ", 2)[1] in (b"408", b"422"), answer
    assert service.store.get(job["id"], with_prompt=False)["state"] == "pending"


@pytest.mark.asyncio
async def test_an_upload_cut_short_leaves_no_temp_file(api):
    client, service = api
    part = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + b"x" * 70_000
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(_multipart_head(client, 1_000_000) + part)
    await writer.drain()
    assert await until(lambda: temp_files(service) != [])  # the file is being written
    writer.close()
    assert await until(lambda: temp_files(service) == [], 5), temp_files(service)
    assert asset_records(service) == [] and blobs(service) == []


@pytest.mark.asyncio
async def test_upload_limits_hold_under_a_small_max_input_bytes(tmp_path, aiohttp_client):
    service = QueueService(tmp_path / "data")
    try:
        client = await aiohttp_client(build_app(service, limits=RequestLimits(max_input_bytes=4096)))
        resp = await client.post("/api/v2/assets", data=form(b"z" * 5000))
        assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
        assert asset_records(service) == [] and blobs(service) == [] and temp_files(service) == []
        resp = await client.post("/api/v2/assets", data=form(b"z" * 4096))
        assert resp.status == 201
    finally:
        service.close()


@pytest.mark.asyncio
async def test_an_expected_hash_mismatch_leaves_no_record_and_the_right_hash_works(api):
    client, service = api
    resp = await client.post("/api/v2/assets", data=form(b"abc", expected_hash="blake3:" + "1" * 64))
    assert resp.status == 409
    assert asset_records(service) == [] and blobs(service) == [] and temp_files(service) == []
    from blake3 import blake3

    right = "blake3:" + blake3(b"abc").hexdigest()
    assert (await client.head(f"/api/v2/assets/by-hash/{right}")).status == 404, "a refused upload left its hash"
    status, err = await post(client, "/api/v2/assets/from-hash", {"hash": right})
    assert status == 404
    resp = await client.post("/api/v2/assets", data=form(b"abc", expected_hash=right))
    assert resp.status == 201 and (await resp.json())["hash"] == right


@pytest.mark.asyncio
async def test_content_never_runs_as_a_page_on_this_origin(api):
    client, service = api
    page = b"<script>fetch('/api/v2/jobs').then(r => r.text()).then(alert)</script>"
    asset = await upload(client, page, content_type="text/html", file_path="page.html")
    jid = (await submit(client))["id"]
    finish(service, jid, artifacts=[artifact(service, jid, "page.html", page)])
    for url in (f"/api/v2/assets/{asset['id']}/content", f"/api/v2/assets/asset_o{jid}_0/content"):
        resp = await client.get(url)
        assert resp.status == 200
        sandboxed = "sandbox" in resp.headers.get("Content-Security-Policy", "")
        attachment = resp.headers.get("Content-Disposition", "").startswith("attachment")
        assert resp.headers.get("X-Content-Type-Options") == "nosniff" and (sandboxed or attachment), (
            url,
            dict(resp.headers),
        )


@pytest.mark.asyncio
async def test_a_content_type_that_is_no_media_type_is_refused(api):
    client, service = api
    resp = await client.post(
        "/api/v2/assets", data=form(b"bytes", content_type="text/plain\r\nSet-Cookie: owned=1", file_path="c.txt")
    )
    stored = resp.status in (200, 201)
    broken = []
    if stored:
        asset = await resp.json()
        try:
            got = await client.get(f"/api/v2/assets/{asset['id']}/content")
            assert "Set-Cookie" not in got.headers
            broken.append(("crlf content", got.status))
        except Exception as e:  # noqa: BLE001 - aiohttp drops the connection
            broken.append(("crlf content", type(e).__name__))
    known = await upload(client, b"known bytes")
    for value in ({"not": "a string"}, ["text/html"], 5, "text/plain\nX-Evil: 1"):
        status, body = await post(
            client, "/api/v2/assets/from-hash", {"hash": known["hash"], "file_path": "f.bin", "content_type": value}
        )
        if status in (200, 201):
            broken.append(("from-hash content_type", value))
    assert not stored and broken == [], broken


@pytest.mark.asyncio
async def test_from_hash_tags_are_bounded_like_an_uploads(api):
    client, service = api
    known = await upload(client, b"known bytes")
    before = asset_records(service)
    status, body = await post(
        client,
        "/api/v2/assets/from-hash",
        {"hash": known["hash"], "file_path": "huge.bin", "tags": ["t" * 4096] * 1000},
    )
    grown = sum((service.data_dir / "v2" / "assets" / n).stat().st_size for n in asset_records(service))
    assert status == 422 and asset_records(service) == before, (status, grown)


@pytest.mark.asyncio
async def test_records_of_swept_uploads_go_with_their_bytes(api):
    from comfy_nodes.retention import retention_pass

    client, service = api
    for i in range(10):
        f = form(f"tiny {i}".encode(), file_path=f"{i}.bin")
        for t in range(32):  # (the most an upload may have, each as long as it may be)
            f.add_field("tags", f"{t:02d}" + "t" * 254)
        resp = await client.post("/api/v2/assets", data=f)
        assert resp.status == 201
    await asyncio.sleep(0.05)
    retention_pass(service, 0, input_grace=0)
    assert blobs(service) == [], "retention kept the unused uploads"
    left = sum(p.stat().st_size for p in (service.data_dir / "v2").rglob("*") if p.is_file())
    assert asset_records(service) == [] and left < 4096, (len(asset_records(service)), left)


# ---- SSE -------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_event_streams_past_the_limit_get_429_and_closed_ones_free_their_slot(api, monkeypatch):
    client, service = api
    monkeypatch.setattr(v2mod, "MAX_STREAMS", 3)
    jid = (await submit(client))["id"]
    url = f"/api/v2/jobs/{jid}/events"
    for _ in range(3):  # streams of unknown jobs hold no slot
        assert (await client.get("/api/v2/jobs/" + "0" * 16 + "/events")).status == 404
    for round_ in range(2):
        opened = []
        for _ in range(3):
            resp = await client.get(url)
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            name, data = await next_event(resp)
            assert name == "status" and data["status"] == "queued"
            opened.append(resp)
        for _ in range(5):
            resp = await client.get(url)
            assert resp.status == 429, round_
            err = await resp.json()
            assert err["error"]["code"] == "queue_full"
        assert len(client.watch.waiting.get(jid, ())) == 3
        for resp in opened:  # the clients go away mid-stream
            resp.close()
        assert await until(lambda: not client.watch.waiting, 5), client.watch.waiting
    # the slots are back: a stream follows the job to its end and leaves nothing behind
    resp = await client.get(url)
    assert resp.status == 200 and (await next_event(resp))[1]["status"] == "queued"
    await client.post(f"/api/v2/jobs/{jid}/cancel")
    assert await next_event(resp) == ("log", {"level": "info", "message": "cancelled: cancelled through the v2 API"})
    assert await next_event(resp) == ("status", {"status": "canceled", "queue_position": None})
    assert await next_event(resp) is None
    assert await until(lambda: not client.watch.waiting)


@pytest.mark.asyncio
async def test_refusals_that_ask_to_come_back_say_when(api, monkeypatch):
    client, service = api
    monkeypatch.setattr(v2mod, "MAX_STREAMS", 0)
    jid = (await submit(client))["id"]
    resp = await client.get(f"/api/v2/jobs/{jid}/events")
    assert resp.status == 429
    missing = [] if resp.headers.get("Retry-After") else ["429 queue_full"]
    # a key in flight: hold the first request inside its workflow resolution
    release, entered = asyncio.Event(), asyncio.Event()
    real_call = service.call

    async def held_call(fn, *args, **kwargs):
        if getattr(fn, "__name__", "") == "resolve_workflow" and not release.is_set():
            entered.set()
            await release.wait()
        return await real_call(fn, *args, **kwargs)

    monkeypatch.setattr(service, "call", held_call)
    first = asyncio.ensure_future(post(client, "/api/v2/jobs", {"workflow": SLOW}, {"Idempotency-Key": "held"}))
    await asyncio.wait_for(entered.wait(), 5)
    resp = await client.post(
        "/api/v2/jobs", data=json.dumps({"workflow": SLOW}), headers={**JSON, "Idempotency-Key": "held"}
    )
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "idempotency_conflict"
    if not resp.headers.get("Retry-After"):
        missing.append("409 idempotency_conflict")
    release.set()
    status, job = await first
    assert status == 201 and total(service) == 2
    assert missing == [], missing


@pytest.mark.asyncio
async def test_a_stream_of_a_job_deleted_mid_stream_ends(api):
    client, service = api
    jid = (await submit(client))["id"]
    resp = await client.get(f"/api/v2/jobs/{jid}/events")
    assert (await next_event(resp))[1]["status"] == "queued"
    service.store.cancel(jid, "gone")  # (both before the stream reads the job again)
    service.store.delete(jid)
    assert await next_event(resp) is None, "the stream of a deleted job goes on"
    assert await until(lambda: not client.watch.waiting)
    assert (await client.get(f"/api/v2/jobs/{jid}/events")).status == 404


@pytest.mark.asyncio
async def test_a_client_gone_from_a_quiet_stream_is_noticed_within_the_keepalive(api, monkeypatch):
    client, service = api
    monkeypatch.setattr(v2mod, "KEEPALIVE", 1.0)
    jid = (await submit(client))["id"]
    for _ in range(20):  # connect, read one frame, leave: again and again
        resp = await client.get(f"/api/v2/jobs/{jid}/events")
        assert resp.status == 200 and await next_event(resp)
        resp.close()
    assert await until(lambda: not client.watch.waiting, 1.0 + 2.0), "watchers outlive their clients"


# ---- core/ASSET in workflows -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asset_references_that_name_nothing_are_refused_and_queue_nothing(api):
    client, service = api
    up = await upload(client)
    jid = (await submit(client))["id"]
    finish(service, jid, artifacts=[artifact(service, jid, "ok.png", b"fine", "image/png")])
    total_before = total(service)
    bad = [
        asset_ref("asset_" + "0" * 32),
        asset_ref("asset_../../v2/assets/x"),
        asset_ref("../" + up["id"]),
        asset_ref(up["id"] + "\n"),
        asset_ref(up["id"].upper()),
        asset_ref(""),
        asset_ref(5),
        asset_ref(None),
        asset_ref({"id": up["id"]}),
        {"__type": "core/ASSET"},
        {"__type": "core/ASSET", "info": up["id"]},
        {"__type": "core/ASSET", "info": [up["id"]]},
        {"__type": "core/ASSET", "id": up["id"]},
        asset_ref(f"asset_o{jid}_1"),  # out of range
        asset_ref(f"asset_o{jid}_999999"),
        asset_ref("asset_o" + "0" * 16 + "_0"),  # no such job
        asset_ref(f"asset_o{jid.upper()}_0"),
        {"comfymq_output": {"job": jid, "index": 7}},
        {"comfymq_output": {"job": "../" + jid, "index": 0}},
        {"comfymq_input": "../../etc/passwd"},
    ]
    for value in bad:
        status, err = await post(client, "/api/v2/jobs", {"workflow": uses(value)})
        assert status == 422 and err["error"]["code"] == "missing_asset", (value, status, err)
    assert total(service) == total_before


@pytest.mark.asyncio
async def test_outputs_of_unfinished_jobs_are_waited_for_and_of_failed_ones_refused(api):
    client, service = api
    pending = (await submit(client))["id"]
    failed = (await submit(client))["id"]
    cancelled = (await submit(client))["id"]
    deleted = (await submit(client))["id"]
    finish(service, failed, fail=True)
    await client.post(f"/api/v2/jobs/{cancelled}/cancel")
    await client.post(f"/api/v2/jobs/{deleted}/cancel")
    service.store.delete(deleted)
    for dead in (failed, cancelled, deleted):
        status, err = await post(client, "/api/v2/jobs", {"workflow": uses(f"asset_o{dead}_0")})
        assert status == 422 and err["error"]["code"] == "missing_asset", (dead, err)
    # a pending job's output: the new job waits for it, and runs only after it
    waiting = await submit(client, uses(f"asset_o{pending}_0"), priority=1000)
    assert waiting["status"] == "queued" and waiting["comfymq"]["after"] == [pending]
    got = await (await client.get(f"/api/v2/jobs/{waiting['id']}")).json()
    assert got["comfymq"]["after"] == [pending]
    wf = await (await client.get(f"/api/v2/jobs/{waiting['id']}/workflow")).json()
    assert wf["workflow"]["1"]["inputs"]["image"] == {"comfymq_output": {"job": pending, "index": 0}}
    lease = service.store.take("w-order")
    assert lease["job_id"] == pending, "the waiting job (priority 1000) was dispatched before its dependency"
    assert service.store.take("w-order") is None
    service.store.fail(pending, lease["token"], {"type": "boom", "message": "no"}, retryable=False)
    job = await (await client.get(f"/api/v2/jobs/{waiting['id']}")).json()
    assert job["status"] == "canceled" and pending in job["error"]["message"], job
    # a finished job's output becomes a stored input at once
    done = (await submit(client))["id"]
    finish(service, done, artifacts=[artifact(service, done, "ok.png", b"fine", "image/png")])
    taker = await submit(client, uses(f"asset_o{done}_0"))
    assert taker["comfymq"]["after"] == []
    wf = await (await client.get(f"/api/v2/jobs/{taker['id']}/workflow")).json()
    assert "comfymq_input" in wf["workflow"]["1"]["inputs"]["image"], wf


@pytest.mark.asyncio
async def test_a_forgotten_or_vanished_upload_is_no_longer_usable(api):
    client, service = api
    a = await upload(client, b"first")
    b = await upload(client, b"second")
    assert (await client.delete(f"/api/v2/assets/{a['id']}")).status == 204
    assert (await client.delete(f"/api/v2/assets/{a['id']}")).status == 404
    sha = json.loads((service.data_dir / "v2" / "assets" / f"{b['id']}.json").read_text())["sha256"]
    service.inputs.remove(sha)
    for gone in (a["id"], b["id"]):
        status, err = await post(client, "/api/v2/jobs", {"workflow": uses(gone)})
        assert status == 422 and err["error"]["code"] == "missing_asset", err
        assert (await client.get(f"/api/v2/assets/{gone}/content")).status == 404
    assert total(service) == 0


# ---- the event loop -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queue_positions_do_not_stall_the_event_loop(api):
    client, service = api
    for k in range(0, 150_000, 10_000):  # (as many v2 submits, each with its own priority)
        service.store.enqueue_many([{"prompt": SLOW, "priority": -(k + i)} for i in range(10_000)])
    gaps, done = [], asyncio.Event()

    async def ticker():
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    resp = await client.get("/api/v2/jobs", params={"limit": "100"})
    assert resp.status == 200 and len((await resp.json())["jobs"]) == 100
    done.set()
    await tick
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s on one list request"


# ---- inside ComfyUI ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_inside_comfyui_each_v2_handler_carries_the_site_rules_and_the_token(tmp_path, aiohttp_client):
    from aiohttp import web
    from conftest import free_port

    from comfy_nodes.config import load_config
    from comfy_nodes.plugin import Plugin

    cfg = load_config(
        {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}", "COMFYMQ_TOKEN": TOKEN},
        user_dir=str(tmp_path / "user"),
        output_dir=str(tmp_path / "out"),
    )
    plugin = Plugin(cfg)
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application()  # (ComfyUI's app: none of ComfyMQ's middlewares)
        app.add_routes(routes)
        client = await aiohttp_client(app)
        m = "/comfymq/api/v2"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, job = await post(client, f"{m}/jobs", {"workflow": SLOW}, auth)
        assert status == 201, job
        resp = await client.post(f"{m}/assets", data=form(), headers=auth)
        assert resp.status == 201
        asset = await resp.json()
        port = client.server.port
        attempts = {
            "no token": ({}, 401),
            "foreign origin": ({**auth, "Origin": "http://evil.example"}, 403),
            "null origin": ({**auth, "Origin": "null"}, 403),
            "cross-site": ({**auth, "Sec-Fetch-Site": "cross-site"}, 403),
            "rebound host": ({**auth, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}, 403),
        }
        for what, (headers, want) in attempts.items():
            for method, path, data, extra in (
                ("POST", f"{m}/jobs", json.dumps({"workflow": SLOW}), JSON),
                ("POST", f"{m}/jobs/{job['id']}/cancel", None, {"Content-Type": "text/plain"}),
                ("POST", f"{m}/jobs/{job['id']}/cancel", None, {}),
                ("POST", f"{m}/assets", form(b"more", file_path="m.png"), {}),
                ("DELETE", f"{m}/assets/{asset['id']}", None, {}),
                ("POST", f"{m}/assets/from-hash", json.dumps({"hash": asset["hash"], "file_path": "n"}), JSON),
                ("HEAD", f"{m}/assets/by-hash/{asset['hash']}", None, {}),
                ("GET", f"{m}/assets/{asset['id']}/content", None, {}),
                ("GET", f"{m}/jobs/{job['id']}/events", None, {}),
                ("GET", f"{m}/jobs?metadata[a]=b", None, {}),
            ):
                resp = await client.request(method, path, data=data, headers={**extra, **headers})
                assert resp.status == want, (what, method, path, resp.status)
        assert plugin.service.store.get(job["id"], with_prompt=False)["state"] == "pending"
        assert plugin.service.store.stats()["total"] == 1
        assert len(asset_records(plugin.service)) == 1
    finally:
        plugin.close()


@pytest.mark.asyncio
async def test_an_uploads_file_path_never_becomes_a_path_in_a_workflow(api):
    client, service = api
    for i, path in enumerate(("../../../etc/passwd", "..\\..\\boot.ini", "a/b/..", "/abs/x.png", "con.png", "..")):
        asset = await upload(client, f"bytes {i}".encode(), file_path=path)
        assert asset["file_path"] == path
        job = await submit(client, uses(asset["id"]))
        wf = await (await client.get(f"/api/v2/jobs/{job['id']}/workflow")).json()
        ref = wf["workflow"]["1"]["inputs"]["image"]
        name = ref["name"]
        assert "/" not in name and "\\" not in name and name not in (".", "..") and name.strip(". "), (path, ref)
