"""The plugin's wiring (comfy_nodes/plugin.py) for each role, against a stand-in ComfyUI process.

Role `both`: the routes answer on a fresh aiohttp app, a job enqueued through them runs on the local worker
driving the stand-in, the browser events go out through the send function (as PromptServer.send_sync), and
close() leaves quickly with the store closed cleanly. A failing start leaves 503 routes that say why.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from conftest import free_port

from comfy_nodes import native
from comfy_nodes.config import load_config
from comfy_nodes.plugin import Plugin, add_unavailable_routes

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.asyncio, pytest.mark.subprocess]


@pytest.fixture
def standin(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.standin", "--port", "0", "--output-dir", str(tmp_path / "out")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    yield line.split()[-1]
    p.terminate()
    p.wait(timeout=10)


async def test_role_both_runs_a_job_through_its_routes_and_closes_cleanly(tmp_path, standin, aiohttp_client):
    env = {"COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}", "COMFYMQ_HEARTBEAT": "0.2"}
    cfg = load_config(env, user_dir=str(tmp_path / "user"), output_dir=str(tmp_path / "output"), comfy_url=standin)
    sent = []
    plugin = Plugin(cfg, send=lambda name, data: sent.append((name, data)))
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        client = await aiohttp_client(app)
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plug"}},
        }
        r = await client.post("/comfymq/jobs", json={"prompt": prompt})
        assert r.status == 200, await r.text()
        jid = (await r.json())["jobs"][0]["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = (await (await client.get(f"/comfymq/jobs/{jid}")).json())["job"]
            if job["state"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.1)
        assert job["state"] == "succeeded", job.get("error")
        art = job["artifacts"][0]
        assert (Path(cfg.artifact_root) / art["path"]).read_bytes().startswith(b"\x89PNG")
        assert Path(cfg.artifact_root) == tmp_path / "output" / "comfymq", "artifacts default under ComfyUI's output"
        workers = await (await client.get("/comfymq/workers")).json()
        assert [w["online"] for w in workers] == [True]
        await asyncio.sleep(0.6)  # one relay flush
        names = {n for n, _ in sent}
        assert "comfymq.job" in names and "comfymq.worker" in names
        states = {j.get("state") for n, d in sent if n == "comfymq.job" for j in d["jobs"]}
        assert "succeeded" in states
    finally:
        t0 = time.monotonic()
        plugin.close()
        took = time.monotonic() - t0
    assert took < 15, f"close took {took:.1f}s"  # a guard against a hang, not a speed check
    plugin.close()  # twice is fine
    # The store was closed (its lock released): it opens again at once.
    n = native.load()
    n.Store(str(Path(cfg.data_dir) / "store")).close()


async def test_a_failing_start_leaves_routes_that_say_why(tmp_path, aiohttp_client):
    n = native.load()
    held = n.Store(str(tmp_path / "user" / "comfymq" / "store"))  # another ComfyUI holds the store
    try:
        cfg = load_config(
            {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"},
            user_dir=str(tmp_path / "user"),
            output_dir=str(tmp_path / "output"),
        )
        plugin = Plugin(cfg)
        with pytest.raises(n.StoreLockedError) as e:
            plugin.start(web.RouteTableDef())
        plugin.close()
        routes = web.RouteTableDef()
        add_unavailable_routes(routes, f"ComfyMQ could not start: {e.value}")
        app = web.Application()
        app.add_routes(routes)
        client = await aiohttp_client(app)
        for method, path in (("GET", "/comfymq/jobs"), ("POST", "/comfymq/jobs"), ("DELETE", "/comfymq/jobs/x")):
            r = await client.request(method, path)
            assert r.status == 503
            body = await r.json()
            assert body["error"]["type"] == "unavailable" and "could not start" in body["error"]["message"]
    finally:
        held.close()


async def test_the_plugins_routes_apply_the_site_rules_and_limits_of_its_config(tmp_path, aiohttp_client):
    """Inside ComfyUI no middleware of ours runs: the routes the plugin registers check each request themselves,
    with the configuration's allowed_hosts and limits (also on ComfyUI's /api copies)."""
    env = {
        "COMFYMQ_ROLE": "host",
        "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}",
        "COMFYMQ_ALLOWED_HOSTS": "comfy.lan",
        "COMFYMQ_MAX_JOBS_PER_REQUEST": "3",
        "COMFYMQ_TOKEN": "plugin-token",
    }
    cfg = load_config(env, user_dir=str(tmp_path / "user"), output_dir=str(tmp_path / "output"))
    plugin = Plugin(cfg)
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        app.add_routes(
            [web.route(r.method, "/api" + r.path, r.handler, **r.kwargs) for r in routes if isinstance(r, web.RouteDef)]
        )  # as ComfyUI's server does
        client = await aiohttp_client(app)
        good = {"Authorization": "Bearer plugin-token", "Content-Type": "application/json"}
        for prefix in ("/comfymq", "/api/comfymq"):
            r = await client.get(f"{prefix}/tasks", headers={**good, "Host": "evil.example:8188"})
            assert r.status == 403 and (await r.json())["error"]["type"] == "host_not_allowed"
            assert (await client.get(f"{prefix}/tasks", headers={**good, "Host": "comfy.lan:8188"})).status == 200
            r = await client.post(f"{prefix}/queue/pause", headers={"Authorization": "Bearer plugin-token"})
            assert r.status == 415
            r = await client.post(
                f"{prefix}/tasks", headers=good, json={"prompt": {"1": {"class_type": "A", "inputs": {}}}, "count": 4}
            )
            assert r.status == 413 and "max_jobs_per_request" in (await r.json())["error"]["message"]
            assert (await client.get(f"{prefix}/health")).status == 200  # a monitor, without the token
    finally:
        plugin.close()


async def test_a_plugin_token_follows_the_one_rule(tmp_path):
    cfg = load_config(
        {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"},
        user_dir=str(tmp_path / "user"),
        output_dir=str(tmp_path / "output"),
    )
    cfg.token = "short"  # set after the configuration was checked: the routes check it again
    plugin = Plugin(cfg)
    try:
        with pytest.raises(ValueError, match="at least 8"):
            plugin.start(web.RouteTableDef())
    finally:
        plugin.close()
