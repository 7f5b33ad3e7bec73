"""A worker-role ComfyUI's "Queue (MQ)" sends the files its job names to the host first (issue 22, the forward:
comfy_nodes/inputs/forward_uploads.py, api/status_routes.py).

The host is the standalone host's app (build_app) on a real store, served over HTTP; every request it gets is
recorded. The worker is the worker-role routes with a temp folder as its ComfyUI's input, output and temp folders
(and, in the last test, the plugin itself inside a ComfyUI made of stand-in `nodes` and `folder_paths` modules).
Each test looks at what the host committed and what its input store holds on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tracemalloc
import types
from pathlib import Path

import pytest
from aiohttp import web
from conftest import assert_json_error, free_port

from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.api.site_policy import SitePolicy
from comfy_nodes.api.status_routes import add_worker_role_routes
from comfy_nodes.config import load_config
from comfy_nodes.host.standalone import build_app
from comfy_nodes.inputs import forward_uploads
from comfy_nodes.inputs import graph as refs
from comfy_nodes.inputs.forward_uploads import ForwardUploads
from comfy_nodes.inputs.local_files import LocalFiles
from comfy_nodes.inputs.store import InputStore, PendingInput
from comfy_nodes.plugin import Plugin
from comfy_nodes.service import QueueService

pytestmark = pytest.mark.asyncio

TOKEN = "farm-token-1234"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
UPLOADS = {"LoadImage": {"image"}, "LoadImageMask": {"image"}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {f.name: f.read_bytes() for shard in root.iterdir() if shard.name != "tmp" for f in shard.iterdir()}


def load_image(value, node="10") -> dict:
    return {
        node: {"class_type": "LoadImage", "inputs": {"image": value}},
        "11": {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": "x"}},
    }


class Host:
    """The standalone host's app on a fresh store, with a record of every request it answered."""

    def __init__(self, service: QueueService, client):
        self.service = service
        self.client = client
        self.url = str(client.make_url("")).rstrip("/")
        self.requests: list[tuple[str, str, int, str | None]] = []  # method, path, status, Authorization

    def seen(self, method: str, path_start: str) -> list[tuple]:
        return [r for r in self.requests if r[0] == method and r[1].startswith(path_start)]

    @property
    def uploads(self) -> list[tuple]:
        return self.seen("POST", "/comfymq/inputs")

    @property
    def stored(self) -> dict[str, bytes]:
        return stored_files(self.service.data_dir / "inputs")

    def prompt(self, job_id: str) -> dict:
        return self.service.store.get(job_id, with_prompt=True)["prompt"]


async def start_host(tmp_path, aiohttp_client, *, token=TOKEN, max_input_bytes=1 << 20) -> Host:
    service = QueueService(tmp_path / "host", threads=4)
    app = build_app(service, token=token, limits=RequestLimits(max_input_bytes=max_input_bytes))
    app.on_cleanup.append(lambda _app: _close(service))
    host = None

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        host.requests.append((request.method, request.path, response.status, request.headers.get("Authorization")))

    app.on_response_prepare.append(record)
    host = Host(service, await aiohttp_client(app))
    return host


async def _close(service: QueueService) -> None:
    service.close()


@pytest.fixture
def comfy_dirs(tmp_path) -> dict[str, str]:
    """This ComfyUI's folders, with the files a canvas names."""
    dirs = {k: tmp_path / "comfy" / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["input"] / "photo.png").write_bytes(PNG)
    (dirs["input"] / "clipspace").mkdir()
    (dirs["input"] / "clipspace" / "clipspace-mask-1.png").write_bytes(b"mask" + PNG)
    (dirs["output"] / "made.png").write_bytes(b"out" + PNG)
    (tmp_path / "secret.png").write_bytes(b"secret")
    (dirs["input"] / "link.png").symlink_to(tmp_path / "secret.png")
    return {k: str(v) for k, v in dirs.items()}


async def start_worker(aiohttp_client, host: Host, comfy_dirs, *, token=TOKEN, host_url=None):
    """The worker-role routes (as the plugin mounts them) forwarding to `host`; (client, its ForwardUploads)."""
    uploads = ForwardUploads(lambda c: UPLOADS.get(c, ()), comfy_dirs)
    routes = web.RouteTableDef()
    add_worker_role_routes(
        routes,
        worker_status=lambda: None,
        broker=f"tcp://127.0.0.1:{free_port()}",
        host_url=host_url or host.url,
        token=token,
        site=SitePolicy(),
        uploads=uploads,
    )
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_client(app), uploads


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def queue(worker, body: dict, status: int = 200) -> dict:
    r = await worker.post("/comfymq/jobs", json=body, headers=AUTH)
    assert r.status == status, await r.text()
    return await r.json()


async def test_a_file_of_this_comfyui_goes_to_the_host_once_and_the_job_names_it(tmp_path, aiohttp_client, comfy_dirs):
    host = await start_host(tmp_path, aiohttp_client)
    worker, uploads = await start_worker(aiohttp_client, host, comfy_dirs)

    answer = await queue(worker, {"prompt": load_image("photo.png")})
    job_id = answer["jobs"][0]["id"]
    assert host.prompt(job_id)["10"]["inputs"]["image"] == {
        "comfymq_input": sha(PNG),
        "name": "photo.png",
        "size": len(PNG),
    }
    assert host.stored == {sha(PNG): PNG}
    assert len(host.uploads) == 1 and host.uploads[0][2] == 200
    # the token went with every request to the host: HEAD, the upload, the job
    assert {r[3] for r in host.requests} == {f"Bearer {TOKEN}"}
    assert [r[0] for r in host.requests] == ["HEAD", "POST", "POST"]

    # queued again: the host holds it, so it is asked about, not sent; the file is not hashed again either
    path = Path(comfy_dirs["input"]) / "photo.png"
    assert uploads.hashes.get(os.stat(path)) == sha(PNG)
    again = await queue(worker, {"prompt": load_image("photo.png")})
    assert host.prompt(again["jobs"][0]["id"])["10"]["inputs"]["image"]["comfymq_input"] == sha(PNG)
    assert len(host.uploads) == 1 and len(host.seen("HEAD", "/comfymq/inputs/")) == 2

    # the file changed here (another size, another mtime): its new content goes
    changed = PNG + b"edited"
    path.write_bytes(changed)
    third = await queue(worker, {"prompt": load_image("photo.png")})
    assert host.prompt(third["jobs"][0]["id"])["10"]["inputs"]["image"]["comfymq_input"] == sha(changed)
    assert len(host.uploads) == 2 and host.stored == {sha(PNG): PNG, sha(changed): changed}


@pytest.mark.parametrize(
    "value, data, name",
    [
        ("clipspace/clipspace-mask-1.png [input]", b"mask" + PNG, "clipspace-mask-1.png"),
        ("photo.png [input]", PNG, "photo.png"),
        ("made.png [output]", b"out" + PNG, "made.png"),
    ],
)
async def test_comfyuis_annotated_names_are_found_in_their_folder(
    tmp_path, aiohttp_client, comfy_dirs, value, data, name
):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    answer = await queue(worker, {"prompt": load_image(value)})
    committed = host.prompt(answer["jobs"][0]["id"])
    assert committed["10"]["inputs"]["image"] == {"comfymq_input": sha(data), "name": name, "size": len(data)}
    assert host.stored == {sha(data): data}


async def test_every_graph_of_a_request_is_rewritten_and_each_file_sent_once(tmp_path, aiohttp_client, comfy_dirs):
    """A sweep over file names with copies, a prompt given as JSON text, the same file in two nodes, a value already
    in reference form, and a file name in an input that takes no upload."""
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    r = await host.client.post("/comfymq/inputs?name=ref.png", data=b"ref" + PNG, headers=AUTH)
    assert r.status == 200
    reference = {"comfymq_input": sha(b"ref" + PNG), "name": "ref.png"}
    host.requests.clear()
    prompt = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "12": {"class_type": "LoadImageMask", "inputs": {"image": "photo.png", "channel": "alpha"}},
        "13": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "14": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "made.png [output]"}},
    }
    body = {
        "prompt": json.dumps(prompt),
        "sweep": {"10.image": ["photo.png", "clipspace/clipspace-mask-1.png [input]"]},
        "count": 2,
    }
    answer = await queue(worker, body)
    assert len(answer["jobs"]) == 4
    mask = b"mask" + PNG
    seen = []
    for job in answer["jobs"]:
        committed = host.prompt(job["id"])
        seen.append(committed["10"]["inputs"]["image"]["comfymq_input"])
        assert committed["12"]["inputs"]["image"] == {"comfymq_input": sha(PNG), "name": "photo.png", "size": len(PNG)}
        assert committed["12"]["inputs"]["channel"] == "alpha"
        assert committed["13"]["inputs"]["image"] == {**reference, "size": len(PNG) + 3}
        assert committed["14"]["inputs"]["ckpt_name"] == "made.png [output]"  # not an upload input
    assert sorted(seen) == sorted([sha(PNG), sha(PNG), sha(mask), sha(mask)])
    # two files of this ComfyUI, each asked about and sent once; the reference was neither
    assert len(host.uploads) == 2 and len(host.seen("HEAD", "/comfymq/inputs/")) == 2
    assert set(host.stored) == {sha(PNG), sha(mask), sha(b"ref" + PNG)}


@pytest.mark.parametrize(
    "value, needle",
    [
        ("missing.png", "is not in ComfyUI's input folder"),
        ("../secret.png", "leads out"),
        ("clipspace/../../secret.png", "leads out"),
        ("link.png", "leads out"),
        ("/etc/passwd", "absolute path"),
        ("gone.png [temp]", "is not in ComfyUI's temp folder"),
    ],
)
async def test_a_file_that_is_not_here_is_a_400_and_nothing_reaches_the_host(
    tmp_path, aiohttp_client, comfy_dirs, value, needle
):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    body = {"prompt": load_image("photo.png"), "sweep": {"10.image": ["photo.png", value]}}
    r = await worker.post("/comfymq/jobs", json=body, headers=AUTH)
    err = await assert_json_error(r, 400)
    assert err["type"] == "invalid_request" and needle in err["message"]
    assert "node 10 (LoadImage) input 'image'" in err["message"] and f"'{value}'" in err["message"]
    # in the host's own words (inside ComfyUI, the host refuses the same name with the same message)
    scratch = InputStore(tmp_path / "scratch")
    local = LocalFiles(scratch, lambda c: UPLOADS.get(c, ()), comfy_dirs)
    with pytest.raises(refs.BadReference) as host_says:
        refs.resolve_prompt(load_image(value), scratch, local)
    assert err["message"] == str(host_says.value)
    assert host.requests == [] and host.stored == {}
    assert host.service.store.stats()["total"] == 0


async def test_an_unreadable_file_is_a_400_in_the_hosts_words(tmp_path, aiohttp_client, comfy_dirs, monkeypatch):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    locked = os.path.realpath(Path(comfy_dirs["input"]) / "photo.png")

    def no_read(path, *args, **kwargs):  # as a file without read permission (the tests may run as root)
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(forward_uploads, "open", no_read, raising=False)
    err = await assert_json_error(
        await worker.post("/comfymq/jobs", json={"prompt": load_image("photo.png")}, headers=AUTH), 400
    )
    assert err["message"] == (
        "node 10 (LoadImage) input 'image': file 'photo.png' cannot be read (Permission denied); nothing was queued"
    )
    assert host.requests == []


async def test_a_file_over_the_hosts_limit_is_a_413_with_the_hosts_message(tmp_path, aiohttp_client, comfy_dirs):
    host = await start_host(tmp_path, aiohttp_client, max_input_bytes=1024)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    err = await assert_json_error(
        await worker.post("/comfymq/jobs", json={"prompt": load_image("photo.png")}, headers=AUTH), 413
    )
    assert err["type"] == "too_large"
    assert "node 10 (LoadImage) input 'image'" in err["message"] and "'photo.png'" in err["message"]
    assert "larger than the limit of 1024 bytes (max_input_bytes)" in err["message"]  # the host's words
    assert [r[2] for r in host.uploads] == [413]
    assert host.seen("POST", "/comfymq/jobs") == [] and host.stored == {}
    assert host.service.store.stats()["total"] == 0


async def test_the_host_refusing_the_token_is_a_502_and_nothing_is_sent(tmp_path, aiohttp_client, comfy_dirs):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs, token="not-the-farm-token")
    r = await worker.post(
        "/comfymq/jobs",
        json={"prompt": load_image("photo.png")},
        headers={"Authorization": "Bearer not-the-farm-token"},
    )
    err = await assert_json_error(r, 502)
    assert err["type"] == "host_token" and "'photo.png'" in err["message"]
    assert [r[2] for r in host.requests] == [401]  # the HEAD; no upload, no job
    assert host.stored == {}


async def test_a_host_failing_to_store_the_file_is_a_502_with_its_answer(
    tmp_path, aiohttp_client, comfy_dirs, monkeypatch
):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PendingInput, "write", disk_full)  # the host's store, in this process
    err = await assert_json_error(
        await worker.post("/comfymq/jobs", json={"prompt": load_image("photo.png")}, headers=AUTH), 502
    )
    assert err["type"] == "host_upload" and "HTTP 507" in err["message"] and "the disk is full" in err["message"]
    assert "'photo.png'" in err["message"]
    assert host.seen("POST", "/comfymq/jobs") == [] and host.service.store.stats()["total"] == 0


async def test_an_unreachable_host_is_a_502_naming_the_file(tmp_path, aiohttp_client, comfy_dirs):
    host = await start_host(tmp_path, aiohttp_client)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs, host_url=f"http://127.0.0.1:{free_port()}")
    err = await assert_json_error(
        await worker.post("/comfymq/jobs", json={"prompt": load_image("photo.png")}, headers=AUTH), 502
    )
    assert err["type"] == "host_unreachable" and "'photo.png'" in err["message"]


async def test_a_large_file_is_streamed_not_held(tmp_path, aiohttp_client, comfy_dirs):
    """32 MiB go through hashing and the upload (and the host's store, in this process) while no more than a few
    MiB are allocated at once."""
    big = Path(comfy_dirs["input"]) / "big.png"
    block = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for _ in range(32):
            f.write(block)
    host = await start_host(tmp_path, aiohttp_client, max_input_bytes=64 << 20)
    worker, _ = await start_worker(aiohttp_client, host, comfy_dirs)
    tracemalloc.start()
    try:
        answer = await queue(worker, {"prompt": load_image("big.png")})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ref = host.prompt(answer["jobs"][0]["id"])["10"]["inputs"]["image"]
    assert ref["size"] == 32 << 20 and ref["comfymq_input"] == sha(block * 32)
    assert peak < 12 << 20, f"peak {peak >> 20} MiB: the file was held whole somewhere"


async def test_the_plugins_worker_role_sends_the_files_inside_comfyui(
    tmp_path, aiohttp_client, comfy_dirs, monkeypatch
):
    """The plugin's own wiring (no uploads argument): inside ComfyUI, the node classes of its `nodes` module say
    which inputs take a file, its `folder_paths` where files are."""

    class LoadImage:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": (["photo.png"], {"image_upload": True})}}

    nodes = types.ModuleType("nodes")
    nodes.NODE_CLASS_MAPPINGS = {"LoadImage": LoadImage}
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_input_directory = lambda: comfy_dirs["input"]
    folder_paths.get_output_directory = lambda: comfy_dirs["output"]
    folder_paths.get_temp_directory = lambda: comfy_dirs["temp"]
    monkeypatch.setitem(sys.modules, "nodes", nodes)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)

    host = await start_host(tmp_path, aiohttp_client)
    env = {
        "COMFYMQ_ROLE": "worker",
        "COMFYMQ_BROKER": f"tcp://127.0.0.1:{free_port()}",
        "COMFYMQ_HEARTBEAT": "0.2",
        "COMFYMQ_TOKEN": TOKEN,
        "COMFYMQ_HOST_URL": host.url,
    }
    cfg = load_config(
        env,
        user_dir=str(tmp_path / "w"),
        output_dir=str(tmp_path / "w-out"),
        comfy_url=f"http://127.0.0.1:{free_port()}",
    )
    plugin = Plugin(cfg)
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        worker = await aiohttp_client(app)
        answer = await queue(worker, {"prompt": load_image("clipspace/clipspace-mask-1.png [input]")})
        data = b"mask" + PNG
        committed = host.prompt(answer["jobs"][0]["id"])
        assert committed["10"]["inputs"]["image"] == {
            "comfymq_input": sha(data),
            "name": "clipspace-mask-1.png",
            "size": len(data),
        }
        assert host.stored == {sha(data): data} and len(host.uploads) == 1
    finally:
        plugin.close()
