"""Input files that travel with jobs (issue 22, the host's side): the input store on disk, POST/GET
/comfymq/inputs, references in prompts checked and committed in their stored form, ComfyUI's own file names
resolved from a (temp) input folder, and the retention sweep. Real store, real files, real HTTP (the standalone
host's app on an aiohttp test server); every test looks at what is on disk."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import assert_json_error

from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.api.routes import add_routes
from comfy_nodes.host.standalone import build_app, retention_round
from comfy_nodes.inputs import graph as refs
from comfy_nodes.inputs.local_files import LocalFiles, NodeUploadInputs, split_annotation, upload_inputs_of
from comfy_nodes.inputs.names import safe_name
from comfy_nodes.inputs.retention import sweep_unreferenced
from comfy_nodes.inputs.store import InputStore, InputTooLarge

P = "/comfymq"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
RAW = {"Content-Type": "application/octet-stream"}
TOKEN = "inputs-token-1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(root: Path) -> dict[str, bytes]:
    """Every stored input under root (sha256 -> bytes), checking the layout on the way."""
    found = {}
    for shard in root.iterdir():
        if shard.name == "tmp":
            continue
        for f in shard.iterdir():
            assert f.name[:2] == shard.name and len(f.name) == 64
            found[f.name] = f.read_bytes()
    return found


def temps(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


def load_image(value, node="10") -> dict:
    return {
        node: {"class_type": "LoadImage", "inputs": {"image": value}},
        "11": {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": "x"}},
    }


async def upload(client, data: bytes, name: str | None = "photo.png", status: int = 200, **kw):
    url = f"{P}/inputs" + (f"?name={name}" if name is not None else "")
    resp = await client.post(url, data=data, headers=RAW, **kw)
    assert resp.status == status, await resp.text()
    return await resp.json()


@pytest.fixture
def inputs_root(service) -> Path:
    return service.data_dir / "inputs"


# ---- the store on disk ---------------------------------------------------------------------------------------


def test_the_store_keeps_one_synced_copy_per_content(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store = InputStore(tmp_path / "inputs")
    first = store.put_stream([PNG[:100], PNG[100:]])
    assert (first.sha256, first.size, first.existed) == (sha(PNG), len(PNG), False)
    assert (tmp_path / "inputs" / sha(PNG)[:2] / sha(PNG)).read_bytes() == PNG
    assert len(synced) >= 2  # the file, and its folder
    again = store.put_file(tmp_path / "inputs" / sha(PNG)[:2] / sha(PNG))
    assert again.existed and again.sha256 == first.sha256
    assert stored_files(tmp_path / "inputs") == {sha(PNG): PNG} and temps(tmp_path / "inputs") == []
    assert store.stat(sha(PNG)) == len(PNG) and store.stat("0" * 64) is None
    with pytest.raises(ValueError):
        store.path("../" + "a" * 61)
    with pytest.raises(InputTooLarge):
        store.put_stream([b"x" * 600, b"x" * 600], max_bytes=1000)
    assert temps(tmp_path / "inputs") == [] and len(stored_files(tmp_path / "inputs")) == 1
    assert store.remove(sha(PNG)) and not store.remove(sha(PNG))


def test_a_failed_sync_leaves_nothing(tmp_path, monkeypatch):
    store = InputStore(tmp_path / "inputs")

    def fail(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        store.put_stream([PNG])
    monkeypatch.undo()
    assert temps(tmp_path / "inputs") == [] and stored_files(tmp_path / "inputs") == {}


def test_opening_removes_uploads_a_crash_left(tmp_path):
    (tmp_path / "inputs" / "tmp").mkdir(parents=True)
    (tmp_path / "inputs" / "tmp" / "abc.part").write_bytes(b"half")
    store = InputStore(tmp_path / "inputs")
    assert store.stale_removed == 1 and temps(tmp_path / "inputs") == []


def test_the_sweep_removes_only_old_unreferenced_inputs(tmp_path):
    store = InputStore(tmp_path / "inputs")
    old_used, old_unused, new_unused = (store.put_stream([bytes([i]) * 10]).sha256 for i in range(3))
    day_ago = time.time() - 2 * 24 * 3600
    for s in (old_used, old_unused):
        os.utime(store.path(s), (day_ago, day_ago))
    (tmp_path / "inputs" / "tmp" / "left.part").write_bytes(b"x")
    os.utime(tmp_path / "inputs" / "tmp" / "left.part", (day_ago, day_ago))
    assert store.sweep({old_used}) == (1, 10)
    assert set(stored_files(tmp_path / "inputs")) == {old_used, new_unused}
    assert temps(tmp_path / "inputs") == []
    # touch() is a use: an old input a job is being queued with is not swept
    os.utime(store.path(new_unused), (day_ago, day_ago))
    assert store.touch(new_unused) == 10
    assert store.sweep(set()) == (1, 10)  # old_used, no longer referenced
    assert set(stored_files(tmp_path / "inputs")) == {new_unused}
    # ... also when the job is queued while the sweep runs: it looks again right before each removal
    os.utime(store.path(new_unused), (day_ago, day_ago))
    candidates = store.unused_since(3600)
    assert candidates == {new_unused}
    store.touch(new_unused)
    assert store.remove_unused(candidates, 3600) == (0, 0)
    assert set(stored_files(tmp_path / "inputs")) == {new_unused}


# ---- names and graphs (pure) -----------------------------------------------------------------------------


def test_safe_names():
    s = "ab" * 32
    assert safe_name("photo.png", s) == "photo.png"
    assert safe_name("clipspace/clipspace-mask-123.png [input]", s) == "clipspace-mask-123.png"
    assert safe_name("..\\..\\win.png", s) == "win.png"
    assert safe_name("a:b*c?.png", s) == "a_b_c_.png"
    assert safe_name("bad\x00name.png", s) == "input-abababababab"
    assert safe_name("", s, ".png") == "input-abababababab.png"
    assert safe_name("..", s) == "input-abababababab"
    assert safe_name("CON.png", s) == "input-abababababab.png"
    assert safe_name(None, s, ".jpg") == "input-abababababab.jpg"


def test_upload_inputs_are_read_from_comfyuis_node_definitions():
    # The shapes ComfyUI v0.8.0 answers INPUT_TYPES() with (nodes.py, comfy_api's Combo.Input with upload=...).
    assert upload_inputs_of({"required": {"image": (["a.png"], {"image_upload": True})}}) == {"image"}
    assert upload_inputs_of({"required": {"image": ("COMBO", {"image_upload": True, "image_folder": "output"})}}) == {
        "image"
    }
    v3 = {"required": {"file": ("COMBO", {"options": ["v.mp4"], "video_upload": True}), "n": ("INT", {})}}
    assert upload_inputs_of(v3) == {"file"}
    assert upload_inputs_of({"optional": {"m": ("COMBO", {"file_upload": True})}}) == {"m"}
    assert upload_inputs_of({"required": {"ckpt": (["a.safetensors"],), "x": ("STRING", {"default": ""})}}) == set()

    class LoadImage:
        calls = 0

        @classmethod
        def INPUT_TYPES(cls):
            cls.calls += 1
            return {"required": {"image": (["a.png"], {"image_upload": True})}}

    class Broken:
        @classmethod
        def INPUT_TYPES(cls):
            raise RuntimeError("a custom node's bug")

    uploads = NodeUploadInputs(lambda: {"LoadImage": LoadImage, "Broken": Broken})
    assert uploads("LoadImage") == {"image"} and uploads("LoadImage") == {"image"} and LoadImage.calls == 1
    assert uploads("Broken") == set() and uploads("Unknown") == set()
    assert split_annotation("x.png [output]") == ("x.png", "output")
    assert split_annotation("sub/x.png") == ("sub/x.png", "input")


# ---- POST /comfymq/inputs, GET /comfymq/inputs/{sha256} -------------------------------------------------------


@pytest.mark.asyncio
async def test_raw_and_multipart_uploads_are_stored_once(client, inputs_root):
    got = await upload(client, PNG)
    assert got == {"sha256": sha(PNG), "size": len(PNG), "name": "photo.png", "existed": False}
    form = aiohttp.FormData()
    form.add_field("subfolder", "")
    form.add_field("type", "input")
    form.add_field("image", PNG, filename="again.png", content_type="image/png")
    form.add_field("overwrite", "true")
    resp = await client.post(f"{P}/inputs", data=form)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"sha256": sha(PNG), "size": len(PNG), "name": "again.png", "existed": True}
    assert stored_files(inputs_root) == {sha(PNG): PNG} and temps(inputs_root) == []

    other = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"w" * 5000
    form = aiohttp.FormData()
    form.add_field("file", other, filename="x.webp")
    got = await (await client.post(f"{P}/inputs?name=renamed.webp", data=form)).json()
    assert got["name"] == "renamed.webp" and not got["existed"]
    # without a name: one from the sha256 and the file's first bytes
    got = await upload(client, other, name=None)
    assert got["name"] == f"input-{sha(other)[:12]}.webp" and got["existed"]
    assert stored_files(inputs_root) == {sha(PNG): PNG, sha(other): other}

    resp = await client.get(f"{P}/inputs/{sha(PNG)}")
    assert resp.status == 200 and await resp.json() == {"sha256": sha(PNG), "size": len(PNG)}
    assert (await client.head(f"{P}/inputs/{sha(PNG)}")).status == 200
    assert (await client.head(f"{P}/inputs/{'0' * 64}")).status == 404
    err = await assert_json_error(await client.get(f"{P}/inputs/{'0' * 64}"), 404)
    assert err["type"] == "not_found"
    for bad in (sha(PNG).upper(), "..%2F..%2Fstore", sha(PNG)[:63], sha(PNG) + "0"):
        err = await assert_json_error(await client.get(f"{P}/inputs/{bad}"), 400)
        assert "64 lowercase hex" in err["message"]
    assert (await client.get(f"/api{P}/inputs/{sha(PNG)}")).status == 200


@pytest.mark.asyncio
async def test_a_chunked_upload_streams_past_the_json_body_limit(aiohttp_client, service, inputs_root):
    """The app's client_max_size (max_body_bytes) bounds JSON bodies; an upload is read as a stream, bounded by
    max_input_bytes only (aiohttp applies client_max_size to read() and post(), not to the stream)."""
    limits = RequestLimits(max_body_bytes=1024, max_input_bytes=1 << 20)
    client = await aiohttp_client(build_app(service, limits=limits))
    data = os.urandom(300_000)

    async def chunks():
        for i in range(0, len(data), 7000):
            yield data[i : i + 7000]
            await asyncio.sleep(0)

    resp = await client.post(f"{P}/inputs?name=noise.bin", data=chunks(), headers=RAW)
    assert resp.status == 200, await resp.text()
    assert stored_files(inputs_root) == {sha(data): data}
    form = aiohttp.FormData()
    form.add_field("image", data, filename="n.bin")
    assert (await client.post(f"{P}/inputs", data=form)).status == 200
    # ... and the JSON limit holds as before
    big = {"prompt": {"1": {"class_type": "A", "inputs": {"text": "x" * 4000}}}}
    err = await assert_json_error(await client.post(f"{P}/jobs", json=big), 413)
    assert "max_body_bytes" in err["message"]


@pytest.mark.asyncio
async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(aiohttp_client, service, inputs_root):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_input_bytes=4096)))
    err = await assert_json_error(await client.post(f"{P}/inputs?name=a.bin", data=b"x" * 5000, headers=RAW), 413)
    assert err["type"] == "too_large" and "4096" in err["message"] and "max_input_bytes" in err["message"]

    async def chunks():  # no Content-Length: refused as the bytes pass the limit
        for _ in range(10):
            yield b"y" * 1000

    await assert_json_error(await client.post(f"{P}/inputs", data=chunks(), headers=RAW), 413)
    form = aiohttp.FormData()
    form.add_field("image", b"z" * 5000, filename="z.png")
    await assert_json_error(await client.post(f"{P}/inputs", data=form), 413)
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []
    assert (await upload(client, b"x" * 4096))["size"] == 4096  # the limit itself is fine


@pytest.mark.asyncio
async def test_a_huge_declared_length_is_refused_before_the_body_arrives(aiohttp_client, service, inputs_root):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_input_bytes=1 << 20)))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /comfymq/inputs?name=big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000000000\r\n\r\nfirst bytes"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 413"), head
    finally:
        writer.close()
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []


@pytest.mark.asyncio
async def test_a_body_cut_short_leaves_no_file(client, inputs_root):
    for framing in (b"Content-Length: 200000\r\n", b"Transfer-Encoding: chunked\r\n"):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /comfymq/inputs?name=cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\n" + framing + b"\r\n"
        )
        part = b"c" * 50_000
        writer.write(part if framing.startswith(b"Content-Length") else b"%x\r\n" % len(part) + part + b"\r\n")
        await writer.drain()
        deadline = time.monotonic() + 10
        while not temps(inputs_root) and time.monotonic() < deadline:  # the upload is under way
            await asyncio.sleep(0.02)
        assert temps(inputs_root), "the upload never started"
        writer.close()  # the client goes away mid-body
        while temps(inputs_root) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert temps(inputs_root) == [] and stored_files(inputs_root) == {}
    assert (await upload(client, PNG))["existed"] is False  # the server serves on


@pytest.mark.asyncio
async def test_a_stalled_upload_is_408_and_leaves_nothing(aiohttp_client, service, inputs_root):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(http_read_timeout=0.3)))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /comfymq/inputs?name=slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" + b"s" * 1000
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        writer.close()
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []
    resp = await client.post(f"{P}/inputs", data=b"x", headers={"Content-Type": "multipart/mixed; boundary=q"})
    assert "multipart/form-data" in (await assert_json_error(resp, 400))["message"]


@pytest.mark.parametrize(
    "query, needle",
    [
        ("name=..%2F..%2Fetc%2Fpasswd", "is a path"),
        ("name=a%2Fb.png", "is a path"),
        ("name=..", "is a path"),
        ("name=bad%00name.png", "control character"),
        ("name=two%0Alines.png", "control character"),
        ("name=", "empty"),
        ("name=a.png&name=b.png", "more than once"),
        ("subfolder=x", "unknown query parameter 'subfolder'"),
    ],
)
@pytest.mark.asyncio
async def test_bad_names_and_parameters_are_400(client, inputs_root, query, needle):
    err = await assert_json_error(await client.post(f"{P}/inputs?{query}", data=PNG, headers=RAW), 400)
    assert needle in err["message"]
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []


def _form(*fields) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value, filename in fields:
        form.add_field(name, value, filename=filename)
    return form


@pytest.mark.parametrize(
    "fields, needle",
    [
        ([("image", PNG, "a.png"), ("file", PNG, "b.png")], "more than one file"),
        ([("image", PNG, "a.png"), ("image", b"other", "b.png")], "more than one file"),
        ([("type", "input", None)], "holds no file"),
        ([("image", PNG, "a.png"), ("evil", "x", None)], "unknown form field 'evil'"),
        ([("image", b"", "empty.png")], "empty"),
        ([("subfolder", "s" * 5000, None), ("image", PNG, "a.png")], "longer than"),
    ],
)
@pytest.mark.asyncio
async def test_bad_forms_are_400(client, inputs_root, fields, needle):
    err = await assert_json_error(await client.post(f"{P}/inputs", data=_form(*fields)), 400)
    assert needle in err["message"], err
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []


@pytest.mark.parametrize(
    "disposition, needle",
    [
        (b'filename="../../x.png"', "is a path"),
        (b'filename="C:\\\\Users\\\\x.png"', "is a path"),  # quoted-string escapes: one backslash each
        (b"filename*=UTF-8''a%0Ab.png", "control character"),
        (b"filename*=UTF-8''a%00b.png", "control character"),
    ],
)
@pytest.mark.asyncio
async def test_a_bad_multipart_filename_is_400(client, inputs_root, disposition, needle):
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; ' + disposition + b"\r\n"
        b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--XyZ--\r\n"
    )
    resp = await client.post(f"{P}/inputs", data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    err = await assert_json_error(resp, 400)
    assert needle in err["message"], err
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []


@pytest.mark.asyncio
async def test_an_empty_raw_body_is_400(client, inputs_root):
    err = await assert_json_error(await client.post(f"{P}/inputs?name=a.png", data=b"", headers=RAW), 400)
    assert "empty" in err["message"]
    assert stored_files(inputs_root) == {}


@pytest.mark.asyncio
async def test_a_full_disk_is_507_and_leaves_nothing(client, inputs_root, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    err = await assert_json_error(await client.post(f"{P}/inputs?name=a.png", data=PNG, headers=RAW), 507)
    monkeypatch.undo()
    assert err["type"] == "disk_full"
    assert stored_files(inputs_root) == {} and temps(inputs_root) == []


@pytest.mark.asyncio
async def test_uploads_pass_the_token_and_site_rules_but_not_the_json_rule(aiohttp_client, service, inputs_root):
    client = await aiohttp_client(build_app(service, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    await assert_json_error(await client.post(f"{P}/inputs?name=a.png", data=PNG, headers=RAW), 401)
    await assert_json_error(await client.get(f"{P}/inputs/{sha(PNG)}"), 401)
    resp = await client.post(
        f"{P}/inputs?name=a.png", data=PNG, headers={**RAW, **auth, "Origin": "https://evil.example"}
    )
    assert (await assert_json_error(resp, 403))["type"] == "cross_origin"
    resp = await client.post(
        f"{P}/inputs?name=a.png", data=PNG, headers={**RAW, **auth, "Sec-Fetch-Site": "cross-site"}
    )
    await assert_json_error(resp, 403)
    resp = await client.post(f"{P}/inputs?name=a.png", data=PNG, headers={**RAW, **auth, "Host": "evil.example"})
    await assert_json_error(resp, 403)
    assert stored_files(inputs_root) == {}
    # any Content-Type, and none, on the upload route only
    for headers in ({"Content-Type": "text/plain"}, {}):
        resp = await client.post(f"{P}/inputs?name=a.png", data=PNG, headers={**headers, **auth})
        assert resp.status == 200, await resp.text()
    assert stored_files(inputs_root) == {sha(PNG): PNG}
    resp = await client.post(f"{P}/queue/pause", data=b"{}", headers={"Content-Type": "text/plain", **auth})
    assert (await assert_json_error(resp, 415))["type"] == "unsupported_media_type"
    assert (await client.get(f"{P}/inputs/{sha(PNG)}", headers=auth)).status == 200


# ---- references at enqueue ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reference_is_committed_in_its_stored_form(client, service):
    await upload(client, PNG)
    ref = {"comfymq_input": sha(PNG), "name": "../sub/photo [input].png"}
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image(ref)})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    stored = {"comfymq_input": sha(PNG), "name": "photo [input].png", "size": len(PNG)}
    assert body["task"]["prompt"]["10"]["inputs"]["image"] == stored
    job_id = body["jobs"][0]["id"]
    record = service.store.get(job_id, with_prompt=True)  # what was committed with the job
    assert record["prompt"]["10"]["inputs"]["image"] == stored
    assert record["prompt"]["11"] == load_image(ref)["11"]
    view = (await (await client.get(f"{P}/jobs/{job_id}")).json())["job"]
    assert view["inputs"] == [
        {"node": "10", "input": "image", "sha256": sha(PNG), "size": len(PNG), "name": "photo [input].png"}
    ]
    listed = (await (await client.get(f"{P}/jobs")).json())["jobs"][0]
    assert "inputs" not in listed
    # a JSON-text prompt, a reference without a name, and the seed contract's route
    text = '{"10": {"class_type": "LoadImage", "inputs": {"image": {"comfymq_input": "%s"}}}}' % sha(PNG)
    resp = await client.post("/tasks", json={"prompt": text})
    assert resp.status == 200, await resp.text()
    task = (await resp.json())["task"]
    want = {"comfymq_input": sha(PNG), "name": f"input-{sha(PNG)[:12]}.png", "size": len(PNG)}
    assert task["prompt"]["10"]["inputs"]["image"] == want
    assert service.store.get(task["id"], with_prompt=True)["prompt"]["10"]["inputs"]["image"] == want
    # a prompt without references is committed as it was sent (text stays text)
    plain = '{"1": {"class_type": "A", "inputs": {"x": 1}}}'
    job = (await (await client.post(f"{P}/jobs", json={"prompt": plain})).json())["task"]
    assert job["prompt"] == plain


@pytest.mark.asyncio
async def test_references_in_a_sweep_are_resolved_per_job(client, service):
    other = PNG + b"more"
    await upload(client, PNG)
    await upload(client, other, name="b.png")
    body = {
        "prompt": load_image({"comfymq_input": sha(PNG)}),
        "sweep": {"10.image": [{"comfymq_input": sha(PNG), "name": "a.png"}, {"comfymq_input": sha(other)}]},
    }
    resp = await client.post(f"{P}/jobs", json=body)
    assert resp.status == 200, await resp.text()
    jobs = (await resp.json())["jobs"]
    committed = [service.store.get(j["id"], with_prompt=True)["prompt"]["10"]["inputs"]["image"] for j in jobs]
    assert committed == [
        {"comfymq_input": sha(PNG), "name": "a.png", "size": len(PNG)},
        {"comfymq_input": sha(other), "name": f"input-{sha(other)[:12]}.png", "size": len(other)},
    ]
    bad = {**body, "sweep": {"10.image": [{"comfymq_input": "1" * 64}]}}
    err = await assert_json_error(await client.post(f"{P}/jobs", json=bad), 400)
    assert "1" * 64 in err["message"] and "node 10 (LoadImage) input 'image'" in err["message"]
    assert service.store.stats()["total"] == 2


@pytest.mark.asyncio
async def test_an_unknown_input_is_400_and_nothing_is_queued(client, service):
    missing = "f" * 64
    for body in (
        {"prompt": load_image({"comfymq_input": missing})},
        {"prompt": load_image({"comfymq_input": missing}), "count": 3},
    ):
        err = await assert_json_error(await client.post(f"{P}/jobs", json=body), 400)
        assert err["type"] == "invalid_request"
        for part in ("node 10", "LoadImage", "'image'", missing):
            assert part in err["message"], err
    await assert_json_error(await client.post("/tasks", json={"prompt": load_image({"comfymq_input": missing})}), 400)
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "value, needle",
    [
        ({"comfymq_input": "A" * 64}, "64 lowercase hex"),
        ({"comfymq_input": "a" * 63}, "64 lowercase hex"),
        ({"comfymq_input": "../" + "a" * 61}, "64 lowercase hex"),
        ({"comfymq_input": 12}, "64 lowercase hex"),
        ({"comfymq_input": None}, "64 lowercase hex"),
        ({"comfymq_input": "a" * 64, "path": "/etc/passwd"}, "not 'path'"),
        ({"comfymq_input": "a" * 64, "name": ["x"]}, "name must be a string"),
        ({"comfymq_input": "a" * 64, "size": "12"}, "size must be"),
        ({"comfymq_input": "a" * 64, "size": -1}, "size must be"),
    ],
)
@pytest.mark.asyncio
async def test_malformed_references_are_400(client, service, value, needle):
    err = await assert_json_error(await client.post(f"{P}/jobs", json={"prompt": load_image(value)}), 400)
    assert needle in err["message"] and "node 10 (LoadImage) input 'image'" in err["message"], err
    assert service.store.stats()["total"] == 0


@pytest.mark.asyncio
async def test_a_reference_with_the_wrong_size_is_400(client, service):
    await upload(client, PNG)
    ref = {"comfymq_input": sha(PNG), "name": "a.png", "size": len(PNG) + 1}
    err = await assert_json_error(await client.post(f"{P}/jobs", json={"prompt": load_image(ref)}), 400)
    assert str(len(PNG)) in err["message"]
    ref["size"] = len(PNG)  # a stored form sent again (a job loaded back from its record) is fine
    assert (await client.post(f"{P}/jobs", json={"prompt": load_image(ref)})).status == 200


# ---- inside ComfyUI: file names of upload inputs ---------------------------------------------------------------


@pytest.fixture
def comfy_dirs(tmp_path) -> dict[str, str]:
    dirs = {k: tmp_path / "comfy" / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["input"] / "photo.png").write_bytes(PNG)
    (dirs["input"] / "sub").mkdir()
    (dirs["input"] / "sub" / "x.png").write_bytes(b"sub" + PNG)
    (dirs["input"] / "clipspace").mkdir()
    (dirs["input"] / "clipspace" / "clipspace-mask-123.png").write_bytes(b"mask" + PNG)
    (dirs["output"] / "made.png").write_bytes(b"out" + PNG)
    (tmp_path / "secret.png").write_bytes(b"secret")
    (dirs["input"] / "link.png").symlink_to(tmp_path / "secret.png")
    (dirs["input"] / "folder.png").mkdir()
    return {k: str(v) for k, v in dirs.items()}


UPLOADS = {"LoadImage": {"image"}, "LoadImageMask": {"image"}, "LoadVideo": {"file"}}


@pytest_asyncio.fixture
async def comfy_client(aiohttp_client, service, comfy_dirs):
    """The routes as the plugin mounts them inside ComfyUI, with a temp folder as ComfyUI's input folder."""
    local = LocalFiles(service.inputs, lambda c: UPLOADS.get(c, ()), comfy_dirs, max_bytes=1 << 20)
    routes = web.RouteTableDef()
    add_routes(routes, service, local_inputs=local)
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "value, data, name",
    [
        ("photo.png", PNG, "photo.png"),
        ("photo.png [input]", PNG, "photo.png"),
        ("sub/x.png", b"sub" + PNG, "x.png"),
        ("clipspace/clipspace-mask-123.png [input]", b"mask" + PNG, "clipspace-mask-123.png"),
        ("made.png [output]", b"out" + PNG, "made.png"),
    ],
)
@pytest.mark.asyncio
async def test_comfyuis_file_names_are_copied_into_the_store(comfy_client, service, value, data, name):
    resp = await comfy_client.post(f"{P}/jobs", json={"prompt": load_image(value)})
    assert resp.status == 200, await resp.text()
    job_id = (await resp.json())["jobs"][0]["id"]
    committed = service.store.get(job_id, with_prompt=True)["prompt"]
    assert committed["10"]["inputs"]["image"] == {"comfymq_input": sha(data), "name": name, "size": len(data)}
    assert stored_files(service.data_dir / "inputs") == {sha(data): data}
    # queued again: the same single copy
    assert (await comfy_client.post(f"{P}/jobs", json={"prompt": load_image(value)})).status == 200
    assert len(stored_files(service.data_dir / "inputs")) == 1


@pytest.mark.asyncio
async def test_only_upload_inputs_of_known_classes_are_resolved(comfy_client, service):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "photo.png"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "photo.png", "channel": "alpha"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": ["2", 0]}},  # a link stays a link
    }
    resp = await comfy_client.post(
        f"{P}/jobs", json={"prompt": prompt, "sweep": {"2.image": ["photo.png", "sub/x.png"]}}
    )
    assert resp.status == 200, await resp.text()
    jobs = (await resp.json())["jobs"]
    for job, data in zip(jobs, (PNG, b"sub" + PNG), strict=True):
        committed = service.store.get(job["id"], with_prompt=True)["prompt"]
        assert committed["1"] == prompt["1"] and committed["3"] == prompt["3"]
        assert committed["2"]["inputs"]["image"]["comfymq_input"] == sha(data)
        assert committed["2"]["inputs"]["channel"] == "alpha"


@pytest.mark.parametrize(
    "value, needle",
    [
        ("missing.png", "is not in ComfyUI's input folder"),
        ("../secret.png", "leads out"),
        ("sub/../../secret.png", "leads out"),
        ("link.png", "leads out"),
        ("/etc/passwd", "absolute path"),
        ("folder.png", "is not in ComfyUI's input folder"),
        ("x.png [temp]", "is not in ComfyUI's temp folder"),
        ("", "is not a file name"),
    ],
)
@pytest.mark.asyncio
async def test_bad_file_names_are_400_naming_node_input_and_file(comfy_client, service, value, needle):
    err = await assert_json_error(await comfy_client.post(f"{P}/jobs", json={"prompt": load_image(value)}), 400)
    assert needle in err["message"], err
    assert "node 10 (LoadImage) input 'image'" in err["message"] and f"'{value}'" in err["message"]
    assert service.store.stats()["total"] == 0
    assert stored_files(service.data_dir / "inputs") == {}


@pytest.mark.asyncio
async def test_a_file_over_the_limit_is_400(aiohttp_client, service, comfy_dirs):
    local = LocalFiles(service.inputs, lambda c: UPLOADS.get(c, ()), comfy_dirs, max_bytes=1024)
    routes = web.RouteTableDef()
    add_routes(routes, service, local_inputs=local)
    app = web.Application()
    app.add_routes(routes)
    client = await aiohttp_client(app)
    err = await assert_json_error(await client.post(f"{P}/jobs", json={"prompt": load_image("photo.png")}), 400)
    assert "1024" in err["message"] and "max_input_bytes" in err["message"]
    assert stored_files(service.data_dir / "inputs") == {} and temps(service.data_dir / "inputs") == []


# ---- retention ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retention_removes_inputs_no_kept_job_names(client, service):
    inputs = service.data_dir / "inputs"
    used, unused, fresh = PNG, PNG + b"1", PNG + b"2"
    for data in (used, unused, fresh):
        await upload(client, data)
    job = await (await client.post(f"{P}/jobs", json={"prompt": load_image({"comfymq_input": sha(used)})})).json()
    job_id = job["jobs"][0]["id"]
    old = time.time() - 3 * 24 * 3600
    for data in (used, unused):
        os.utime(inputs / sha(data)[:2] / sha(data), (old, old))
    await retention_round(service, days=0)  # keeps every job; sweeps inputs all the same
    assert set(stored_files(inputs)) == {sha(used), sha(fresh)}
    # once the job is gone, its input goes too
    service.store.cancel(job_id, "done")
    service.store.delete(job_id)
    assert sweep_unreferenced(service.inputs, service.store, grace=3600) == (1, len(used))
    assert set(stored_files(inputs)) == {sha(fresh)}


def test_the_sweep_reads_every_page_of_kept_jobs(service):
    store = service.inputs
    kept = [store.put_stream([PNG + bytes([i])]).sha256 for i in range(5)]
    for i, s in enumerate(kept):
        prompt = load_image(refs.stored_form(s, "a.png", len(PNG) + 1))
        for k in range(3):  # more jobs than one page holds
            service.store.enqueue({**prompt, "99": {"class_type": "Note", "inputs": {"n": i * 3 + k}}})
    lone = store.put_stream([b"lone"]).sha256
    old = time.time() - 3 * 24 * 3600
    for s in [*kept, lone]:
        os.utime(store.path(s), (old, old))
    from comfy_nodes.inputs import retention

    assert retention.referenced_among(service.store, {*kept, lone}, page=2) == set(kept)
    assert sweep_unreferenced(store, service.store) == (1, 4)
    assert set(stored_files(store.root)) == set(kept)


def test_max_input_bytes_is_a_config_key(tmp_path):
    from comfy_nodes.config import ConfigError, load_config

    cfg = load_config({"COMFYMQ_MAX_INPUT_BYTES": "4096"}, user_dir=str(tmp_path))
    assert RequestLimits.from_config(cfg).max_input_bytes == 4096
    assert load_config({}, user_dir=str(tmp_path)).max_input_bytes == 2 << 30
    with pytest.raises(ConfigError, match=r"max_input_bytes must be an integer from 1024.*COMFYMQ_MAX_INPUT_BYTES"):
        load_config({"COMFYMQ_MAX_INPUT_BYTES": "10"}, user_dir=str(tmp_path))


# ---- another job's output as an input -------------------------------------------------------------------------


def finished_job_with_files(service, files: dict[str, bytes], state: str = "succeeded", outputs=None) -> str:
    """A job run through the store as a worker would: its files written under the artifact root, then recorded."""
    # (first in line, whatever else the test queued)
    job_id = service.store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}}, priority=1000)["id"]
    lease = service.store.take("w1")
    assert lease is not None and lease["job_id"] == job_id
    artifacts = []
    for name, data in files.items():
        path = service.artifact_root / job_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        artifacts.append({"path": f"{job_id}/{name}", "size": len(data), "sha256": sha(data), "mime": "image/png"})
    if state == "succeeded":
        service.store.complete(job_id, lease["token"], outputs=outputs or {}, artifacts=artifacts)
    else:
        service.store.fail(job_id, lease["token"], {"type": "execution_error", "message": "boom"}, retryable=False)
    return job_id


@pytest.mark.asyncio
async def test_another_jobs_output_is_taken_as_an_input_once_it_has_succeeded(client, service, inputs_root):
    first, second = PNG, PNG + b"\x00second"
    done = finished_job_with_files(service, {"a.png": first, "b.png": second})
    # by index and by file name: each becomes the stored form of that file, copied into the input store
    for spec, data, name in (({"index": 1}, second, "b.png"), ({"filename": "a.png"}, first, "a.png")):
        ref = {"comfymq_output": {"job": done, **spec}}
        resp = await client.post(f"{P}/jobs", json={"prompt": load_image(ref)})
        assert resp.status == 200, await resp.text()
        job_id = (await resp.json())["jobs"][0]["id"]
        stored = {"comfymq_input": sha(data), "name": name, "size": len(data)}
        assert service.store.get(job_id, with_prompt=True)["prompt"]["10"]["inputs"]["image"] == stored
        assert (inputs_root / sha(data)[:2] / sha(data)).read_bytes() == data
    # by output node: the files it reported, in order
    shown = {"9": {"images": [{"filename": "b.png", "subfolder": "", "type": "output"}, {"filename": "a.png"}]}}
    by_node = finished_job_with_files(service, {"a.png": first, "b.png": second}, outputs=shown)
    for extra, data in (({}, second), ({"index": 1}, first)):
        ref = {"comfymq_output": {"job": by_node, "node": "9", **extra}}
        resp = await client.post(f"{P}/jobs", json={"prompt": load_image(ref)})
        assert resp.status == 200, await resp.text()
        job_id = (await resp.json())["jobs"][0]["id"]
        assert service.store.get(job_id, with_prompt=True)["prompt"]["10"]["inputs"]["image"]["comfymq_input"] == sha(
            data
        )
    # the same output again: still one copy in the store
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image({"comfymq_output": {"job": done, "index": 0}})})
    assert resp.status == 200
    assert sorted(stored_files(inputs_root)) == sorted([sha(first), sha(second)])


@pytest.mark.asyncio
async def test_an_output_that_is_not_there_is_refused_and_nothing_is_queued(client, service):
    done = finished_job_with_files(service, {"a.png": PNG})
    failed = finished_job_with_files(service, {}, state="failed")
    running = service.store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}})["id"]
    assert service.store.take("w1")["job_id"] == running
    before = service.store.stats()["total"]
    cases = [
        ({"job": failed, "index": 0}, 400, "ended failed"),
        ({"job": "0" * 16, "index": 0}, 400, "does not have"),
        ({"job": done, "index": 1}, 400, "none at index 1"),
        ({"job": done, "filename": "nope.png"}, 400, "no output file named nope.png"),
        ({"job": done}, 400, "by index, by filename or by node"),
        ({"job": done, "index": 0, "filename": "a.png"}, 400, "by index, by filename or by node"),
        ({"job": done, "node": "9", "filename": "a.png"}, 400, "by index, by filename or by node"),
        ({"job": done, "node": "9"}, 400, "node 9 of job"),
        ({"job": done, "node": 9}, 400, "the id of an output node"),
        ({"job": done, "index": -1}, 400, "whole number"),
        ({"job": done, "index": 0, "path": "/etc/passwd"}, 400, "job (a job id) and index, filename or node only"),
        ({"job": ["x"], "index": 0}, 400, "job (a job id)"),
    ]
    for spec, status, needle in cases:
        resp = await client.post(f"{P}/jobs", json={"prompt": load_image({"comfymq_output": spec})})
        body = await resp.json()
        assert resp.status == status, (spec, body)
        assert needle in body["error"]["message"] and "node 10 (LoadImage) input 'image'" in body["error"]["message"]
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image({"comfymq_output": "x", "extra": 1})})
    assert resp.status == 400
    assert service.store.stats()["total"] == before, "nothing was queued"


@pytest.mark.asyncio
async def test_a_job_naming_an_unfinished_jobs_output_waits_for_it(client, service):
    running = service.store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}})["id"]
    lease = service.store.take("w1")
    assert lease["job_id"] == running
    ref = {"comfymq_output": {"job": running, "filename": "a.png"}}
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image(ref)})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["waiting"][0] == f"waits for job {running} (running) to succeed"
    job_id = body["jobs"][0]["id"]
    assert body["jobs"][0]["after"] == [running]
    job = service.store.get(job_id, with_prompt=True)
    assert job["after"] == [running] and job["prompt"]["10"]["inputs"]["image"] == ref  # committed as it is
    resp = await client.get(f"{P}/jobs/{job_id}")
    view = (await resp.json())["job"]
    assert {"node": "10", "input": "image", "output_of": {"job": running, "filename": "a.png"}} in view["inputs"]
    assert view["after"] == [running]
    # a sweep over two unfinished jobs' outputs: each job waits for its own
    other = service.store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}})["id"]
    refs = [{"comfymq_output": {"job": j, "index": 0}} for j in (running, other)]
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image(refs[0]), "sweep": {"10.image": refs}})
    body = await resp.json()
    assert resp.status == 200, body
    afters = sorted(service.store.get(e["id"], with_prompt=False)["after"] for e in body["jobs"])
    assert afters == sorted([[running], [other]])
    # the job it waits for fails: every job waiting for it is cancelled, saying which
    service.store.fail(running, lease["token"], {"type": "execution_error", "message": "boom"}, retryable=False)
    cancelled = service.store.get(job_id, with_prompt=False)
    assert cancelled["state"] == "cancelled"
    assert cancelled["error"]["message"] == f"it waits for job {running}, which failed"


@pytest.mark.asyncio
async def test_after_runs_a_job_once_the_jobs_it_names_have_succeeded(client, service):
    first = service.store.enqueue({"1": {"class_type": "SaveImage", "inputs": {}}})["id"]
    prompt = {"1": {"class_type": "SaveImage", "inputs": {}}}
    resp = await client.post(f"{P}/jobs", json={"prompt": prompt, "after": [first, first]})
    body = await resp.json()
    assert resp.status == 200, body
    second = body["jobs"][0]["id"]
    assert body["jobs"][0]["after"] == [first]
    assert body["waiting"][0] == f"waits for job {first} (pending) to succeed"
    resp = await client.get(f"{P}/jobs/{second}")
    assert (await resp.json())["job"]["waiting"] == [f"waits for job {first} (pending) to succeed"]
    lease = service.store.take("w1")
    assert lease["job_id"] == first and service.store.take("w2") is None  # the second waits
    service.store.complete(first, lease["token"], outputs={})
    assert service.store.take("w2")["job_id"] == second
    before = service.store.stats()["total"]
    failed = finished_job_with_files(service, {}, state="failed")
    for after, needle in (
        ([failed], "is failed"),
        (["0" * 15 + "1"], "no job 0000000000000001"),
        (["nope"], "after must be a list of job ids"),
        ("x", "after must be a list of job ids"),
        ([f"{i:016x}" for i in range(1, 66)], "at most 64"),
    ):
        resp = await client.post(f"{P}/jobs", json={"prompt": prompt, "after": after})
        body = await resp.json()
        assert resp.status == 400, (after, body)
        assert needle in body["error"]["message"], body
    assert service.store.stats()["total"] == before + 1  # the failed job only: nothing was queued
