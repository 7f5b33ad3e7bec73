"""/health (seed /health, /comfymq/health, /api/comfymq/health): 503 only when the store cannot take a write;
free space is reported beside it, never judged; with a token, a monitor without it gets the status and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from aiohttp import web
from conftest import REPO_ROOT, free_port, graph
from http_host import Endpoint, request_bytes

from comfy_nodes.api.routes import add_routes
from comfy_nodes.host.standalone import build_app

P = "/comfymq"
JSON = {"Content-Type": "application/json"}
TOKEN = "health-check-token"
HEALTH_PATHS = ("/health", f"{P}/health", f"/api{P}/health")


# ---- a monitor without the token ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_with_a_token_health_answers_a_monitor_its_status_only(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, token=TOKEN))
    r = await client.post(f"{P}/jobs", json={"prompt": graph()}, headers={"Authorization": f"Bearer {TOKEN}"})
    jid = (await r.json())["jobs"][0]["id"]
    for path in HEALTH_PATHS:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic eDp5"}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 200, (path, await resp.text())
            text = await resp.text()
            assert await resp.json() == {"status": "ok"}, (path, text)
            assert jid not in text and str(service.data_dir) not in text
            assert (await client.head(path, headers=headers)).status == 200
        full = await (await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert full["status"] == "ok" and full["queue"]["writable"] is True
        assert full["stats"]["counts"]["pending"] == 1
        # only reading the status is open: anything else on the path still needs the token
        assert (await client.post(path, headers=JSON)).status == 401
    assert (await client.get(f"{P}/stats")).status == 401


@pytest.mark.asyncio
async def test_an_unavailable_store_says_so_to_a_monitor_without_details(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, token=TOKEN))
    service.store.close()
    for path in HEALTH_PATHS:
        resp = await client.get(path)
        assert resp.status == 503
        assert await resp.json() == {"status": "unavailable"}
        full = await (await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert full["status"] == "unavailable" and "closed" in full["queue"]["problem"]


@pytest.mark.asyncio
async def test_inside_comfyui_health_is_open_for_status_only(aiohttp_client, service):
    routes = web.RouteTableDef()
    add_routes(routes, service, token=TOKEN)
    app = web.Application()
    app.add_routes(routes)
    app.add_routes(
        [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
    )
    client = await aiohttp_client(app)
    for path in (f"{P}/health", f"/api{P}/health"):
        assert await (await client.get(path)).json() == {"status": "ok"}
        assert "queue" in await (await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).json()
        # the site rules still come first
        assert (await client.get(path, headers={"Host": "evil.example"})).status == 403
    assert (await client.get(f"{P}/jobs")).status == 401


@pytest.mark.asyncio
async def test_without_a_token_health_answers_in_full(client):
    body = await (await client.get("/health")).json()
    assert set(body) == {"status", "queue", "stats"}
    q = body["queue"]
    assert q["writable"] is True and q["problem"] is None
    assert isinstance(q["free_bytes"], int) and isinstance(q["low_space"], bool)


# ---- a disk with little room: writes succeed, so health says ok --------------------------------------------


@pytest.mark.subprocess
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs root, unshare(1) and nsenter(1) for a private tmpfs",
)
def test_little_free_space_is_reported_not_judged(tmp_path):
    """A 12 MiB tmpfs (under the 16 MiB the old check wanted): 200 while writes succeed, also when the disk is
    full (writable says whether the store takes writes; free_bytes how much room is left), and 200 again, with
    the room back, after space frees."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = free_port()
    script = (
        f"mount -t tmpfs -o size=12m tmpfs {mnt} && head -c 3145728 /dev/zero > {mnt}/filler && "
        f"exec {sys.executable} -m comfy_nodes host --data-dir {mnt}/data --port {port} --workers-bind off"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
    log = open(tmp_path / "host.log", "wb")
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host = Endpoint(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                first = host.raw(request_bytes("GET", "/health"), timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "host.log").read_text()
                time.sleep(0.05)
        assert first.status == 200, first.body
        q = first.json()["queue"]
        assert q["writable"] is True and q["free_bytes"] < 16 << 20 and q["low_space"] is True
        status, _ = host.json("POST", f"{P}/jobs", {"prompt": graph()})
        assert status == 200

        refused = None
        for _ in range(64):  # fill the disk through the API: prompts that do not compress
            pad = os.urandom(400_000).hex()
            status, body = host.json(
                "POST", f"{P}/jobs", {"prompt": {"1": {"class_type": "A", "inputs": {"pad": pad}}}}
            )
            if status != 200:
                refused = (status, body)
                break
        assert refused is not None and refused[0] == 507, refused
        assert refused[1]["error"]["type"] == "disk_full"
        full = host.json("GET", "/health")
        assert full[0] == 200, full
        # the handle still takes writes (a write that does not fit is refused and changes nothing)
        assert full[1]["queue"]["writable"] is True and full[1]["queue"]["free_bytes"] < 16 << 20

        subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "rm", str(mnt / "filler")], check=True)
        status, body = host.json("POST", f"{P}/jobs", {"prompt": graph(2)})
        assert status == 200, body
        after = host.json("GET", f"{P}/health")
        assert after[0] == 200 and after[1]["status"] == "ok"
        assert after[1]["queue"]["free_bytes"] >= full[1]["queue"]["free_bytes"] + (2 << 20)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
