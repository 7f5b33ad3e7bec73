"""The plugin's wiring (comfy_nodes/plugin.py) for each role, against a stand-in ComfyUI process.

Role `both`: the routes answer on a fresh aiohttp app, a job enqueued through them runs on the local worker
driving the stand-in, the browser events go out through the send function (as PromptServer.send_sync), and
close() leaves quickly with the store closed cleanly. A failing start leaves 503 routes that say why.
"""

from __future__ import annotations

import asyncio
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


async def test_a_worker_role_comfyui_says_whose_worker_it_is_and_queues_on_its_host(tmp_path, standin, aiohttp_client):
    """Issue 21 item 5: a worker-role ComfyUI used to answer its panel 404 ("not installed") and its Queue (MQ)
    405. Now /comfymq/status says whose worker it is and how its link stands, and with host_url set a job
    queued here goes to the host (with the farm's token) and runs on this very worker."""
    token = "farm-token-1234"
    host_env = {
        "COMFYMQ_ROLE": "host",
        "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}",
        "COMFYMQ_HEARTBEAT": "0.2",
        "COMFYMQ_TOKEN": token,
    }
    host_cfg = load_config(host_env, user_dir=str(tmp_path / "host"), output_dir=str(tmp_path / "host-out"))
    host = Plugin(host_cfg)
    host_routes = web.RouteTableDef()
    host.start(host_routes)
    auth = {"Authorization": f"Bearer {token}"}
    worker = None
    try:
        host_app = web.Application()
        host_app.add_routes(host_routes)
        host_client = await aiohttp_client(host_app)
        status = await (await host_client.get("/comfymq/status", headers=auth)).json()
        assert status["role"] == "host" and status["hosts_queue"] is True and status["worker"] is None
        assert status["queue"] == {"target": "local", "host_url": None}

        host_url = str(host_client.make_url("")).rstrip("/")
        worker_env = {
            "COMFYMQ_ROLE": "worker",
            "COMFYMQ_BROKER": host.service.broker.endpoint,
            "COMFYMQ_HEARTBEAT": "0.2",
            "COMFYMQ_TOKEN": token,
            "COMFYMQ_HOST_URL": host_url,
            "COMFYMQ_WORKER_NAME": "gpu-box",
        }
        worker_cfg = load_config(
            worker_env, user_dir=str(tmp_path / "w"), output_dir=str(tmp_path / "w-out"), comfy_url=standin
        )
        worker = Plugin(worker_cfg)
        worker_routes = web.RouteTableDef()
        worker.start(worker_routes)
        worker_app = web.Application()
        worker_app.add_routes(worker_routes)
        client = await aiohttp_client(worker_app)

        assert (await client.get("/comfymq/status")).status == 401, "the worker's routes need the token too"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = await (await client.get("/comfymq/status", headers=auth)).json()
            if status["worker"]["link"] == "connected":
                break
            await asyncio.sleep(0.1)
        assert status["role"] == "worker" and status["hosts_queue"] is False
        assert status["queue"] == {"target": "remote", "host_url": host_url}
        w = status["worker"]
        assert w["link"] == "connected" and w["name"] == "gpu-box" and w["broker"] == host.service.broker.endpoint
        assert w["refused"] is None and w["running"] == []

        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fwd"}},
        }
        r = await client.post("/comfymq/jobs", json={"prompt": prompt}, headers=auth)
        assert r.status == 200, await r.text()
        answer = await r.json()
        assert answer["status"] == "queued" and answer["waiting"] == []
        jid = answer["jobs"][0]["id"]
        while time.monotonic() < deadline:
            job = (await (await host_client.get(f"/comfymq/jobs/{jid}", headers=auth)).json())["job"]
            if job["state"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.1)
        assert job["state"] == "succeeded" and job["worker"] == w["id"], job

        # The host's own answers pass through as they are (a 400 stays a 400)...
        r = await client.post("/comfymq/jobs", json={"prompt": {"1": "no"}}, headers=auth)
        assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request"
        # ... and everything else of the queue says where the queue is.
        r = await client.get("/comfymq/jobs", headers=auth)
        assert r.status == 409
        err = (await r.json())["error"]
        assert err["type"] == "worker_role" and host_url in err["message"]
    finally:
        if worker is not None:
            worker.close()
        host.close()


async def test_a_worker_without_host_url_hides_its_queue_button(tmp_path, aiohttp_client):
    env = {"COMFYMQ_ROLE": "worker", "COMFYMQ_BROKER": f"tcp://127.0.0.1:{free_port()}", "COMFYMQ_HEARTBEAT": "0.2"}
    cfg = load_config(
        env, user_dir=str(tmp_path / "w"), output_dir=str(tmp_path / "out"), comfy_url=f"http://127.0.0.1:{free_port()}"
    )
    worker = Plugin(cfg)
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        client = await aiohttp_client(app)
        status = await (await client.get("/comfymq/status")).json()
        assert status["queue"] == {"target": None, "host_url": None}
        assert status["worker"]["link"] in ("connecting", "disconnected")
        r = await client.post("/comfymq/jobs", json={"prompt": {}})
        assert r.status == 409
        err = (await r.json())["error"]
        assert err["type"] == "worker_role" and cfg.broker in err["message"] and "host_url" in err["message"]
        # The site rules hold here too: a cross-site page cannot use it.
        r = await client.post("/comfymq/jobs", json={}, headers={"Origin": "https://evil.example"})
        assert r.status == 403
    finally:
        worker.close()


async def test_the_plugin_copies_the_files_upload_inputs_name_into_its_input_store(tmp_path, aiohttp_client):
    """Issue 22: inside ComfyUI (here: a temp folder as its input folder), a LoadImage naming a file of the mask
    editor is queued with the stored form of that file, so any worker can run the job; the upload route is mounted
    too, and ComfyUI's client_max_size does not bound it."""
    from comfy_nodes.inputs.local_files import LocalFiles

    comfy_input = tmp_path / "comfy-input"
    (comfy_input / "clipspace").mkdir(parents=True)
    (comfy_input / "clipspace" / "mask.png").write_bytes(b"\x89PNG\r\n\x1a\nmask")
    env = {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"}
    cfg = load_config(env, user_dir=str(tmp_path / "user"), output_dir=str(tmp_path / "output"))

    def local_files(store, max_bytes):
        assert max_bytes == cfg.max_input_bytes
        return LocalFiles(store, lambda c: {"image"} if c == "LoadImage" else (), {"input": str(comfy_input)})

    plugin = Plugin(cfg, local_files=local_files)
    routes = web.RouteTableDef()
    plugin.start(routes)
    try:
        app = web.Application(client_max_size=1024)  # ComfyUI's --max-upload-size does not bound the route
        app.add_routes(routes)
        client = await aiohttp_client(app)
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "clipspace/mask.png [input]"}}}
        r = await client.post("/comfymq/jobs", json={"prompt": prompt})
        assert r.status == 200, await r.text()
        job = (await (await client.get(f"/comfymq/jobs/{(await r.json())['jobs'][0]['id']}")).json())["job"]
        ref = job["prompt"]["1"]["inputs"]["image"]
        assert ref["name"] == "mask.png" and ref["size"] == 12
        stored = Path(cfg.data_dir) / "inputs" / ref["comfymq_input"][:2] / ref["comfymq_input"]
        assert stored.read_bytes() == b"\x89PNG\r\n\x1a\nmask"
        assert job["inputs"] == [
            {"node": "1", "input": "image", "sha256": ref["comfymq_input"], "size": 12, "name": "mask.png"}
        ]
        r = await client.post("/comfymq/inputs?name=big.bin", data=b"b" * 5000)
        assert r.status == 200, await r.text()
        r = await client.post("/comfymq/jobs", json={"prompt": {"1": {**prompt["1"], "inputs": {"image": "gone.png"}}}})
        assert r.status == 400 and "gone.png" in (await r.json())["error"]["message"]
    finally:
        plugin.close()


async def test_a_worker_role_comfyui_answers_uploads_409(tmp_path, aiohttp_client):
    env = {"COMFYMQ_ROLE": "worker", "COMFYMQ_BROKER": f"tcp://127.0.0.1:{free_port()}", "COMFYMQ_HEARTBEAT": "0.2"}
    cfg = load_config(
        env, user_dir=str(tmp_path / "w"), output_dir=str(tmp_path / "out"), comfy_url=f"http://127.0.0.1:{free_port()}"
    )
    worker = Plugin(cfg)
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        client = await aiohttp_client(app)
        for headers in ({"Content-Type": "application/octet-stream"}, {"Content-Type": "multipart/form-data; b=x"}):
            r = await client.post("/comfymq/inputs?name=a.png", data=b"x" * 1000, headers=headers)
            assert r.status == 409 and (await r.json())["error"]["type"] == "worker_role"
        r = await client.get("/comfymq/inputs/" + "a" * 64)
        assert r.status == 409 and (await r.json())["error"]["type"] == "worker_role"
        assert not (Path(cfg.data_dir) / "inputs").exists()  # a worker keeps no input store of a host
        r = await client.post("/comfymq/inputs", data=b"x", headers={"Origin": "https://evil.example"})
        assert r.status == 403
    finally:
        worker.close()


async def test_inside_comfyui_retention_runs_at_start_and_sweeps_inputs_no_job_names(tmp_path):
    """In role host the plugin runs retention on a thread of its own (ComfyUI's loop is not ours): at start, then
    hourly. An input file no kept job names and unused for longer than the grace goes; one a job names stays, as does
    a fresh one."""
    import os

    from comfy_nodes.inputs.store import DEFAULT_GRACE, InputStore

    env = {"COMFYMQ_ROLE": "host", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"}
    cfg = load_config(env, user_dir=str(tmp_path / "user"), output_dir=str(tmp_path / "output"))
    # Before the plugin starts: three stored inputs, two of them last used long ago, one named by a pending job.
    inputs = InputStore(Path(cfg.data_dir) / "inputs")
    old, named, fresh = (inputs.put_stream([f"input {i}".encode()]) for i in range(3))
    long_ago = time.time() - DEFAULT_GRACE - 3600
    for stored in (old, named):
        os.utime(inputs.path(stored.sha256), (long_ago, long_ago))
    store = native.load().Store(str(Path(cfg.data_dir) / "store"))
    ref = {"comfymq_input": named.sha256, "name": "named.png", "size": named.size}
    store.enqueue({"1": {"class_type": "LoadImage", "inputs": {"image": ref}}})
    store.close()

    plugin = Plugin(cfg)
    plugin.start(None)
    try:
        deadline = time.monotonic() + 10
        while plugin.retention.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plugin.retention.passes >= 1
        assert inputs.stat(old.sha256) is None, "unused, named by no job, past the grace: swept"
        assert inputs.stat(named.sha256) == named.size and inputs.stat(fresh.sha256) == fresh.size
    finally:
        plugin.close()
    assert not plugin.retention._thread.is_alive()
