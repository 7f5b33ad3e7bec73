"""Joining a farm from a ComfyUI's panel, without a restart (pairing/membership.py, POST /comfymq/farm/join and
/leave): real plugins (a host with CURVE, a worker-role ComfyUI, a ComfyUI of the default role), a real ComfyUI
stand-in each worker drives, real broker sockets. A wrong code keeps nothing; the right one makes the worker serve
the farm at once and run its job; Leave unpairs the key on the host (with the secret the host sealed for it) and the
worker stops serving; a ComfyUI whose role or keys are configured is told why it cannot join."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import free_port

from comfy_nodes import _native as native
from comfy_nodes.config import load_config
from comfy_nodes.pairing import client as pairing_client
from comfy_nodes.plugin import Plugin

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(not native.curve_available(), reason="libzmq without CURVE"),
]
PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "farm"}},
}


async def serve(routes: web.RouteTableDef, aiohttp_client):
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_client(app)


async def until(fn, timeout=30.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest_asyncio.fixture
async def farm(tmp_path, aiohttp_client):
    """A host-role plugin with CURVE (no worker of its own) and its HTTP client."""
    _, secret = native.curve_keypair()
    env = {
        "COMFYMQ_ROLE": "host",
        "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}",
        "COMFYMQ_HEARTBEAT": "0.2",
        "COMFYMQ_CURVE_SECRET_KEY": secret,
    }
    cfg = load_config(env, user_dir=str(tmp_path / "host"), output_dir=str(tmp_path / "host-out"))
    host = Plugin(cfg)
    routes = web.RouteTableDef()
    host.start(routes)
    try:
        http = await serve(routes, aiohttp_client)
        http.plugin = host
        http.url = str(http.make_url("")).rstrip("/")
        yield http
    finally:
        host.close()


async def new_code(farm) -> str:
    r = await farm.post("/comfymq/pairing/code", json={})
    assert r.status == 201, await r.text()
    return (await r.json())["code"]


async def job_state(farm, jid: str) -> dict:
    return (await (await farm.get(f"/comfymq/jobs/{jid}")).json())["job"]


async def enqueue(http) -> str:
    r = await http.post("/comfymq/jobs", json={"prompt": PROMPT})
    assert r.status == 200, await r.text()
    return (await r.json())["jobs"][0]["id"]


async def status(http, **kw) -> dict:
    r = await http.get("/comfymq/status", **kw)
    assert r.status == 200, await r.text()
    return await r.json()


def worker_plugin(tmp_path, standin, name: str, **env) -> Plugin:
    base = {"COMFYMQ_HEARTBEAT": "0.2", "COMFYMQ_WORKER_NAME": name}
    base.update(env)
    cfg = load_config(base, user_dir=str(tmp_path / name), output_dir=str(tmp_path / f"{name}-out"), comfy_url=standin)
    return Plugin(cfg)


@pytest.mark.asyncio
async def test_a_worker_role_comfyui_joins_serves_at_once_and_leaves(tmp_path, standin, farm, aiohttp_client):
    # a worker-role ComfyUI with nothing configured but its role (its broker names a port nobody listens on)
    worker = worker_plugin(
        tmp_path, standin, "gpu-box", COMFYMQ_ROLE="worker", COMFYMQ_BROKER=f"tcp://127.0.0.1:{free_port()}"
    )
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        http = await serve(routes, aiohttp_client)
        s = await status(http)
        assert s["role"] == "worker" and s["farm"] == {"joined": None, "can_join": True, "why_not": None}

        # a wrong code: refused, nothing kept, still not in a farm
        code = await new_code(farm)
        wrong = "000000" if code != "000000" else "111111"
        r = await http.post("/comfymq/farm/join", json={"host_url": farm.url, "code": wrong})
        assert r.status == 502 and (await r.json())["error"]["type"] == "pairing_failed"
        assert not (Path(worker.cfg.data_dir) / pairing_client.FILE_NAME).exists()
        assert (await status(http))["farm"]["joined"] is None
        # bad input: a clear 400, nothing tried
        for body in ({"host_url": "ftp://x", "code": code}, {"host_url": farm.url, "code": "12ab56"},
                     {"host_url": farm.url}, {"host_url": farm.url, "code": code, "evil": 1}):  # fmt: skip
            r = await http.post("/comfymq/farm/join", json=body)
            assert r.status == 400, (body, await r.text())

        # the right code: paired, kept (0600), and serving the farm without a restart
        r = await http.post("/comfymq/farm/join", json={"host_url": farm.url, "code": code})
        assert r.status == 200, await r.text()
        joined = (await r.json())["joined"]
        overview = await (await farm.get("/comfymq/pairing")).json()
        assert joined["host_url"] == farm.url and joined["fingerprint"] == overview["fingerprint"]
        assert joined["name"] == "gpu-box" and "worker_secret_key" not in joined
        kept = Path(worker.cfg.data_dir) / pairing_client.FILE_NAME
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert [w["name"] for w in overview["workers"]] == ["gpu-box"]
        assert "leave_hash" not in json.dumps(overview), "the host never shows the leave secret's hash"
        s = await until(lambda: _connected(http), what="the worker to connect to the farm's broker")
        assert s["worker"]["broker"] == farm.plugin.service.broker.endpoint
        assert s["queue"] == {"target": "remote", "host_url": farm.url}
        jid = await enqueue(farm)
        job = await until(lambda: _ended(farm, jid), what="the farm's job to run on the joined worker")
        assert job["state"] == "succeeded" and job["worker"] == s["worker"]["id"], job

        # joining again while in a farm: refused, nothing changes
        r = await http.post("/comfymq/farm/join", json={"host_url": farm.url, "code": await new_code(farm)})
        assert r.status == 409 and "leave it first" in (await r.json())["error"]["message"]

        # Leave: the host unpairs the key at once, the worker stops serving, the kept keys are gone
        r = await http.post("/comfymq/farm/leave", json={})
        assert r.status == 200, await r.text()
        left = await r.json()
        assert left["host_told"] is True and left["left"]["host_url"] == farm.url
        assert (await (await farm.get("/comfymq/pairing")).json())["workers"] == []
        assert not kept.exists()
        s = await status(http)
        assert s["farm"]["joined"] is None and s["farm"]["can_join"] is True
        assert s["worker"] is None or s["worker"]["link"] != "connected"
        later = await enqueue(farm)
        await asyncio.sleep(1.5)
        assert (await job_state(farm, later))["state"] == "pending", "nobody serves the farm after leaving"
        r = await http.post("/comfymq/farm/leave", json={})
        assert r.status == 409, "leaving twice: not in a farm"
    finally:
        worker.close()


async def _connected(http):
    s = await status(http)
    return s if s["worker"] and s["worker"]["link"] == "connected" and s["farm"]["joined"] else None


async def _ended(farm, jid):
    job = await job_state(farm, jid)
    return job if job["state"] in ("succeeded", "failed") else None


@pytest.mark.asyncio
async def test_a_comfyui_of_the_default_role_joins_as_a_worker_and_gets_its_own_queue_back(
    tmp_path, standin, farm, aiohttp_client
):
    me = worker_plugin(tmp_path, standin, "studio-pc", COMFYMQ_BROKER_BIND=f"tcp://127.0.0.1:{free_port()}")
    assert me.cfg.role == "both"
    routes = web.RouteTableDef()
    me.start(routes)
    try:
        http = await serve(routes, aiohttp_client)
        s = await status(http)
        assert s["role"] == "both" and s["farm"]["can_join"] is True
        r = await http.post("/comfymq/farm/join", json={"host_url": farm.url, "code": await new_code(farm)})
        assert r.status == 200, await r.text()
        s = await until(lambda: _connected(http), what="the default-role ComfyUI to serve the farm")
        # it is the farm's worker now; its own queue stays on disk and its queue button is off
        assert s["role"] == "worker" and s["hosts_queue"] is False and s["queue"]["target"] is None
        own = await enqueue(http)  # (its own queue's route still answers: the job waits for its worker)
        jid = await enqueue(farm)
        job = await until(lambda: _ended(farm, jid), what="the farm's job")
        assert job["state"] == "succeeded"
        assert (await job_state(http, own))["state"] == "pending"
        # leaving gives it its own worker back: the job that waited runs here
        r = await http.post("/comfymq/farm/leave", json={})
        assert r.status == 200 and (await r.json())["host_told"] is True
        s = await status(http)
        assert s["role"] == "both" and s["queue"]["target"] == "local"
        job = await until(lambda: _ended(http, own), what="its own queue's job after leaving")
        assert job["state"] == "succeeded"
    finally:
        me.close()


@pytest.mark.asyncio
async def test_a_comfyui_whose_role_or_keys_are_configured_is_told_why_it_cannot_join(
    tmp_path, standin, farm, aiohttp_client
):
    pub, sec = native.curve_keypair()
    cases = [
        ({"COMFYMQ_ROLE": "both", "COMFYMQ_BROKER_BIND": f"tcp://127.0.0.1:{free_port()}"}, "role is set to both"),
        (
            {
                "COMFYMQ_ROLE": "worker",
                "COMFYMQ_BROKER": f"tcp://127.0.0.1:{free_port()}",
                "COMFYMQ_BROKER_PUBLIC_KEY": pub,
                "COMFYMQ_WORKER_PUBLIC_KEY": pub,
                "COMFYMQ_WORKER_SECRET_KEY": sec,
            },
            "keys are configured",
        ),
    ]
    for i, (env, why) in enumerate(cases):
        p = worker_plugin(tmp_path, standin, f"cfg-{i}", **env)
        routes = web.RouteTableDef()
        p.start(routes)
        try:
            http = await serve(routes, aiohttp_client)
            farm_view = (await status(http))["farm"]
            assert farm_view["can_join"] is False and why in farm_view["why_not"], farm_view
            code = await new_code(farm)
            r = await http.post("/comfymq/farm/join", json={"host_url": farm.url, "code": code})
            assert r.status == 409 and why in (await r.json())["error"]["message"]
            assert (await (await farm.get("/comfymq/pairing")).json())["workers"] == []
            assert not (Path(p.cfg.data_dir) / pairing_client.FILE_NAME).exists()
        finally:
            p.close()
    # a host-role ComfyUI has no farm to join
    assert (await status(farm))["farm"] is None


@pytest.mark.asyncio
async def test_join_and_leave_need_the_token_and_pass_the_site_rules(tmp_path, standin, farm, aiohttp_client):
    token = "worker-admin-token-123"
    worker = worker_plugin(
        tmp_path, standin, "locked", COMFYMQ_ROLE="worker", COMFYMQ_TOKEN=token,
        COMFYMQ_BROKER=f"tcp://127.0.0.1:{free_port()}",
    )  # fmt: skip
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        http = await serve(routes, aiohttp_client)
        code = await new_code(farm)
        body = {"host_url": farm.url, "code": code}
        assert (await http.post("/comfymq/farm/join", json=body)).status == 401
        assert (await http.post("/comfymq/farm/leave", json={})).status == 401
        r = await http.post(
            "/comfymq/farm/join",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Origin": "http://evil.example"},
        )
        assert r.status == 403, "a cross-site page cannot make this ComfyUI join a farm"
        assert (await (await farm.get("/comfymq/pairing")).json())["workers"] == []
        r = await http.post("/comfymq/farm/join", json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, await r.text()
    finally:
        worker.close()


@pytest.mark.asyncio
async def test_the_host_unpairs_on_leave_only_with_the_secret_it_sealed(farm):
    """POST /comfymq/pairing/leave needs no token: the leave secret is its credential. A wrong secret, another
    key, or a malformed body changes nothing and is kept among the refusals."""
    code = await new_code(farm)
    pub, sec = native.curve_keypair()
    paired = await asyncio.to_thread(pairing_client.pair, farm.url, code, name="w", keypair=(pub, sec))
    assert paired.leave_secret
    other_pub, _ = native.curve_keypair()
    for body, status_code in (
        ({"public_key": pub, "secret": "guess"}, 403),
        ({"public_key": other_pub, "secret": paired.leave_secret}, 403),
        ({"public_key": pub}, 400),
        ({"public_key": pub, "secret": 5}, 400),
    ):
        r = await farm.post("/comfymq/pairing/leave", json=body)
        assert r.status == status_code, (body, await r.text())
    overview = await (await farm.get("/comfymq/pairing")).json()
    assert [w["public_key"] for w in overview["workers"]] == [pub]
    assert sum(1 for x in overview["refusals"] if x["step"] == "leave") == 4
    await asyncio.to_thread(pairing_client.tell_host, paired)
    assert (await (await farm.get("/comfymq/pairing")).json())["workers"] == []


def test_the_cli_lists_and_removes_paired_keys_and_a_worker_leaves(tmp_path, subprocess_env):
    """`paired list|remove` on a host's data dir (no host running) and `leave` (its host unreachable: the keys are
    deleted anyway and it says so)."""
    n = native
    data = tmp_path / "host"
    from comfy_nodes.pairing.book import PairedBook

    pub, _ = n.curve_keypair()
    with n.Store(str(data / "store")) as store:
        PairedBook(store).add(pub, "gpu-7", "10.0.0.7")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "comfy_nodes", *args], cwd=REPO, env=subprocess_env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    listed = cli("paired", "list", "--data-dir", str(data))
    assert listed.returncode == 0 and pub in listed.stdout and "gpu-7" in listed.stdout, listed
    assert cli("paired", "remove", "--data-dir", str(data)).returncode == 1, "remove needs a KEY"
    missing = cli("paired", "remove", "not-a-key", "--data-dir", str(data))
    assert missing.returncode == 1 and "no paired worker" in missing.stderr
    removed = cli("paired", "remove", pub, "--data-dir", str(data))
    assert removed.returncode == 0 and "unpaired" in removed.stderr, removed
    assert "gpu-7" not in cli("paired", "list", "--data-dir", str(data)).stdout

    wdir = tmp_path / "worker"
    wpub, wsec = n.curve_keypair()
    pairing_client.save(
        wdir,
        pairing_client.Paired(
            host_url=f"http://127.0.0.1:{free_port()}", broker="tcp://127.0.0.1:1", broker_public_key=wpub,
            fingerprint="x", worker_public_key=wpub, worker_secret_key=wsec, name="w", paired_at=0,
            leave_secret="s" * 20,
        ),
    )  # fmt: skip
    left = cli("leave", "--data-dir", str(wdir))
    assert left.returncode == 0 and "was not told" in left.stderr and wpub in left.stderr, left
    assert not (wdir / pairing_client.FILE_NAME).exists()
    again = cli("leave", "--data-dir", str(wdir))
    assert again.returncode == 1 and "no pairing" in again.stderr


def test_a_host_that_trickles_its_answer_is_cut_off_at_the_deadline(tmp_path):
    """A hostile or broken "host" that sends its answer a byte at a time cannot hold a join (and its thread) past
    the exchange's timeout: the deadline covers the whole answer, not each read. Nothing is kept."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()
    errors: list[OSError] = []

    def trickle():
        while not stop.is_set():
            try:
                server.settimeout(0.2)
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(None)  # (an accepted socket takes the listening one's timeout)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(0.2)
            except OSError as e:
                errors.append(e)
            conn.close()

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(pairing_client.PairingError, match="no answer within 1 s"):
            pairing_client.pair(url, "123456", timeout=1.0, keypair=native.curve_keypair())
        assert time.monotonic() - t0 < 10, "a guard against a hang, not a speed check"
    finally:
        stop.set()
        t.join(5)
        server.close()
