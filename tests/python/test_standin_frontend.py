"""The stand-in ComfyUI as a browser sees it: the real frontend, our repo loaded as a custom node pack, and a real
ComfyMQ host + local worker behind it (role `both`), all in one `python -m tests.standin` process.

The pack is loaded from <tmp>/custom_nodes/ComfyMQ (a symlink to the repo), as ComfyUI loads custom_nodes/*, so
its web folder is served as /extensions/ComfyMQ/... . No browser here: HTTP and websocket only (the browser tests
live in tests/browser/).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yarl
from conftest import REPO_ROOT

pytestmark = [pytest.mark.subprocess]

PACK = "ComfyMQ"
TIMEOUT = 60.0  # seconds; only a guard against hangs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frontend_installed() -> bool:
    from tests.standin.frontend import package_web_root

    return package_web_root() is not None


class StandIn:
    """One `python -m tests.standin --with-plugin ... --frontend` process."""

    def __init__(self, tmp: Path, *extra: str):
        self.tmp = tmp
        (tmp / "custom_nodes").mkdir(parents=True, exist_ok=True)
        self.pack_dir = tmp / "custom_nodes" / PACK
        if not self.pack_dir.exists():
            self.pack_dir.symlink_to(REPO_ROOT, target_is_directory=True)
        self.artifact_root = tmp / "artifacts"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
        env.update(
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
            COMFYMQ_DATA_DIR=str(tmp / "comfymq"),
            COMFYMQ_ARTIFACT_ROOT=str(self.artifact_root),
            COMFYMQ_BROKER_BIND=f"tcp://127.0.0.1:{free_port()}",
            COMFYMQ_HEARTBEAT="0.2",
        )
        self.log_path = tmp / "standin.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.standin",
                "--port",
                "0",
                "--output-dir",
                str(tmp / "output"),
                "--user-dir",
                str(tmp / "user"),
                "--with-plugin",
                str(self.pack_dir),
                "--frontend",
                "--verbose",
                *extra,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"READY (http://127\.0\.0\.1:\d+)\n", line)
        if not m:
            self.stop()
            raise AssertionError(f"the stand-in did not start: {line!r}\n{self.log_text()}")
        self.url = m.group(1)

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()
        return rc


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    if not frontend_installed():
        pytest.fail(
            "comfyui-frontend-package is not installed: pip install -r tests/requirements.txt", pytrace=False
        )  # never skip: the browser tests depend on it
    s = StandIn(tmp_path_factory.mktemp("standin-frontend"))
    try:
        yield s
    finally:
        s.stop()


async def get(session, url, status=200):
    async with session.get(url) as r:
        body = await r.read()
        assert r.status == status, (url, r.status, body[:300])
        return r, body


async def get_json(session, url, status=200):
    r, body = await get(session, url, status)
    return json.loads(body)


async def send_json(session, method, url, payload, status=200):
    async with session.request(method, url, json=payload) as r:
        body = await r.read()
        assert r.status == status, (method, url, r.status, body[:300])
        return json.loads(body) if body else None


# ---- the frontend and the pack's web folder ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_index_and_frontend_assets_are_served(standin):
    async with aiohttp.ClientSession() as s:
        r, body = await get(s, standin.url + "/")
        assert r.content_type == "text/html"
        assert r.headers.get("Cache-Control") == "no-store, must-revalidate"
        html = body.decode()
        assert '<div id="vue-app">' in html
        scripts = re.findall(r'src="\./(assets/[^"]+\.js)"', html)
        assert scripts, html
        for path in scripts + re.findall(r'href="\./(assets/[^"]+\.js)"', html):
            r, _ = await get(s, f"{standin.url}/{path}")
            assert r.content_type == "text/javascript", path
        r, _ = await get(s, standin.url + "/materialdesignicons.min.css")
        assert r.content_type == "text/css"
        await get(s, standin.url + "/no/such/file.js", status=404)
        for raw in (
            "/extensions/%2e%2e/%2e%2e/index.html",
            f"/extensions/{PACK}/..%2F__init__.py",
            "/assets/..%2F..%2F..%2F__init__.py",
        ):  # sent as is: nothing outside the served folders
            await get(s, yarl.URL(standin.url + raw, encoded=True), status=404)


@pytest.mark.asyncio
async def test_extensions_list_every_js_file_of_the_pack(standin):
    expected = sorted(
        f"/extensions/{PACK}/" + p.relative_to(REPO_ROOT / "js").as_posix() for p in (REPO_ROOT / "js").rglob("*.js")
    )  # whatever js/ holds today
    async with aiohttp.ClientSession() as s:
        listed = await get_json(s, standin.url + "/api/extensions")
        assert listed == await get_json(s, standin.url + "/extensions")
        assert all(isinstance(x, str) and x.startswith("/extensions/") for x in listed)
        ours = sorted(x for x in listed if x.startswith(f"/extensions/{PACK}/"))
        assert ours == expected
        assert any(x.startswith("/extensions/core/") for x in listed)  # the frontend's own (it skips them)
        for url in ours:
            r, body = await get(s, standin.url + url)
            assert r.content_type == "text/javascript", url
            rel = url[len(f"/extensions/{PACK}/") :]
            assert body == (REPO_ROOT / "js" / rel).read_bytes()


@pytest.mark.asyncio
async def test_object_info_lists_the_packs_nodes_next_to_the_builtin_ones(standin):
    async with aiohttp.ClientSession() as s:
        info = await get_json(s, standin.url + "/api/object_info")
    assert info["SaveImage"]["python_module"] == "nodes"
    ours = {k: v for k, v in info.items() if v["python_module"] == f"custom_nodes.{PACK}"}
    assert "ComfyMQSaveImageAtomic" in ours, sorted(info)
    node = ours["ComfyMQSaveImageAtomic"]
    assert node["category"] == "ComfyMQ" and node["output_node"] is True
    assert node["display_name"] != "ComfyMQSaveImageAtomic"  # from the pack's NODE_DISPLAY_NAME_MAPPINGS


# ---- the plugin's host and local worker ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_answers_from_the_plugins_host(standin):
    async with aiohttp.ClientSession() as s:
        for path in ("/api/comfymq/health", "/comfymq/health"):
            body = await get_json(s, standin.url + path)
            assert body["status"] == "ok", body
            assert body["queue"]["writable"] is True


@pytest.mark.asyncio
async def test_a_queued_prompt_runs_on_the_local_worker_against_this_standin(standin):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0x3366CC}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "frontend-test"}},
    }
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(standin.url + "/ws?clientId=browser-test") as ws:
            first = await ws.receive_json(timeout=TIMEOUT)
            assert first["type"] == "status" and first["data"]["sid"] == "browser-test"
            body = await send_json(s, "POST", standin.url + "/api/comfymq/jobs", {"prompt": prompt})
            job_id = body["jobs"][0]["id"]

            events = []
            deadline = time.monotonic() + TIMEOUT
            while True:
                msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                if event["type"] == "comfymq.job":
                    events.append(event["data"])
                    if any(
                        j.get("job_id") == job_id and j.get("state") == "succeeded"
                        for j in event["data"].get("jobs", [])
                    ):
                        break
                assert time.monotonic() < deadline, f"no comfymq.job 'succeeded' event for {job_id}: {events}"
        assert all(isinstance(e.get("jobs"), list) and isinstance(e.get("resync"), bool) for e in events)

        job = await get_json(s, f"{standin.url}/api/comfymq/jobs/{job_id}")
        job = job.get("job", job.get("task", job))
        assert job["state"] == "succeeded", job
        arts = job["artifacts"]
        assert len(arts) == 1, job
        data = (standin.artifact_root / arts[0]["path"]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert hashlib.sha256(data).hexdigest() == arts[0]["sha256"]

        # It really ran on this stand-in: its history has the prompt, its output folder the file.
        history = await get_json(s, standin.url + "/api/history")
        saved = [img for h in history.values() for out in h["outputs"].values() for img in out.get("images", [])]
        assert any(img["filename"].startswith("frontend-test") for img in saved), history


# ---- what the frontend asks for at start-up -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_startup_endpoints_users_settings_userdata(standin):
    u = standin.url
    async with aiohttp.ClientSession() as s:
        users = await get_json(s, u + "/api/users")
        assert users["storage"] == "server" and isinstance(users["migrated"], bool)

        # settings: one at a time, in bulk, all
        await send_json(s, "POST", u + "/api/settings/Comfy.TestSetting", {"a": [1, 2]})
        assert await get_json(s, u + "/api/settings/Comfy.TestSetting") == {"a": [1, 2]}
        assert await get_json(s, u + "/api/settings/Comfy.Unknown") is None
        await send_json(s, "POST", u + "/api/settings", {"Comfy.Other": 5, "Comfy.TutorialCompleted": True})
        settings = await get_json(s, u + "/settings")
        assert settings["Comfy.TestSetting"] == {"a": [1, 2]} and settings["Comfy.Other"] == 5
        assert (await get_json(s, u + "/api/users"))["migrated"] is True  # the user folder exists now
        on_disk = json.loads((standin.tmp / "user" / "default" / "comfy.settings.json").read_text())
        assert on_disk == settings

        # userdata: save a workflow, list it (v1 and v2), read it, move it, delete it
        await get(s, u + "/api/userdata?dir=workflows", status=404)  # no such folder yet (the frontend: [])
        await get(s, u + "/api/userdata", status=400)
        workflow = {"last_node_id": 0, "nodes": [], "links": [], "version": 0.4}
        async with s.post(
            u + "/api/userdata/workflows%2Fmy%20flow.json?overwrite=true&full_info=true", data=json.dumps(workflow)
        ) as r:
            assert r.status == 200
            info = await r.json()
        assert info["path"] == "workflows/my flow.json" and info["size"] == len(json.dumps(workflow))
        assert await get_json(s, u + "/api/userdata?dir=workflows") == ["my flow.json"]
        full = await get_json(s, u + "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
        assert [x["path"] for x in full] == ["my flow.json"] and {"size", "modified", "created"} <= set(full[0])
        assert await get_json(s, u + "/api/userdata?dir=workflows&split=true") == [["my flow.json", "my flow.json"]]
        v2 = await get_json(s, u + "/api/v2/userdata?path=workflows")
        assert [(x["name"], x["type"], x["path"]) for x in v2] == [("my flow.json", "file", "workflows/my flow.json")]
        root = await get_json(s, u + "/api/v2/userdata")
        assert ("workflows", "directory") in [(x["name"], x["type"]) for x in root]
        assert await get_json(s, u + "/api/userdata/workflows%2Fmy%20flow.json") == workflow
        async with s.post(u + "/api/userdata/workflows%2Fmy%20flow.json?overwrite=false", data=b"{}") as r:
            assert r.status == 409
        moved = await send_json(s, "POST", u + "/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Fb.json", None)
        assert moved == "workflows/b.json"
        async with s.delete(u + "/api/userdata/workflows%2Fb.json") as r:
            assert r.status == 204
        await get(s, u + "/api/userdata/workflows%2Fb.json", status=404)
        await get(s, u + "/api/userdata/..%2F..%2Fescape.json", status=403)


@pytest.mark.asyncio
async def test_startup_endpoints_the_rest(standin):
    u = standin.url
    async with aiohttp.ClientSession() as s:
        assert await get_json(s, u + "/api/i18n") == {}
        assert await get_json(s, u + "/api/workflow_templates") == {}
        assert await get_json(s, u + "/api/global_subgraphs") == {}
        assert await get_json(s, u + "/api/embeddings") == []
        assert (await get_json(s, u + "/api/features"))["supports_preview_metadata"] is True
        stats = await get_json(s, u + "/api/system_stats")
        assert stats["system"]["comfyui_version"] == "0.8.0"
        assert stats["system"]["required_frontend_version"] == "1.35.9"
        folders = await get_json(s, u + "/api/experiment/models")
        assert folders[0]["name"] == "checkpoints" and isinstance(folders[0]["folders"], list)
        assert "configs" not in [f["name"] for f in folders]
        assert await get_json(s, u + "/api/experiment/models/checkpoints") == []
        await get(s, u + "/api/experiment/models/nonsense", status=404)
        assert set(await get_json(s, u + "/api/queue")) == {"queue_running", "queue_pending"}
        assert isinstance(await get_json(s, u + "/api/history?max_items=64"), dict)
        raw = await get_json(s, u + "/internal/logs/raw")
        assert isinstance(raw["entries"], list) and set(raw["size"]) == {"cols", "rows"}
        assert any("ComfyMQ" in e["m"] for e in raw["entries"])  # the plugin's start-up lines
        assert isinstance(await get_json(s, u + "/internal/logs"), str)
        async with s.patch(u + "/internal/logs/subscribe", json={"clientId": "x", "enabled": True}) as r:
            assert r.status == 200
        paths = await get_json(s, u + "/internal/folder_paths")
        assert paths["custom_nodes"] == [str(standin.tmp / "custom_nodes")]
        assert isinstance(await get_json(s, u + "/internal/files/output"), list)
        await get(s, u + "/internal/files/elsewhere", status=400)
        await get(s, u + "/templates/index.json", status=404)  # no templates package: the frontend shows none


# ---- shutdown -------------------------------------------------------------------------------------------------


def test_sigterm_stops_serving_and_closes_the_plugin_cleanly(tmp_path):
    s = StandIn(tmp_path)
    try:
        with urllib_open(s.url + "/api/comfymq/health") as r:
            assert r.status == 200
    finally:
        rc = s.stop()
    log = s.log_text()
    assert rc == 0, log
    assert "ComfyMQ store closed cleanly" in log, log
    assert "Traceback" not in log, log


def urllib_open(url):
    import urllib.request

    return urllib.request.urlopen(url, timeout=TIMEOUT)


def test_a_plain_standin_has_no_frontend_and_no_pack(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.standin", "--port", "0", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().split()[-1]
        import urllib.error

        with pytest.raises(urllib.error.HTTPError) as e:
            urllib_open(url + "/")
        assert e.value.code == 404
        with urllib_open(url + "/api/extensions") as r:
            assert json.loads(r.read()) == []
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib_open(url + "/api/comfymq/health")
        assert e.value.code == 404
        with urllib_open(url + "/api/users") as r:  # ComfyUI's user routes are always there
            assert json.loads(r.read())["storage"] == "server"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
        proc.stderr.close()
