"""The seed HTTP contract (POST /tasks, GET /tasks/{id}, GET /health) on the standalone host's app.

The app is built exactly as the host builds it (comfy_nodes.host.standalone.build_app with a QueueService);
the last test starts the real host as a subprocess.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import REPO_ROOT, assert_json_error, graph, now_ms

from comfy_nodes.api.limits import RequestLimits
from comfy_nodes.host.standalone import build_app

asyncio_mark = pytest.mark.asyncio


async def post_task(client, body) -> dict:
    resp = await client.post("/tasks", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


# ---- POST /tasks ------------------------------------------------------------------------------------------


@asyncio_mark
async def test_post_prompt_as_json_string(client, service):
    text = json.dumps(graph(11))
    before = now_ms()
    body = await post_task(
        client, {"prompt": text, "priority": 4, "metadata": {"prompt_id": "p-1", "create_time": 1700000000000}}
    )
    assert body["status"] == "queued"
    assert "existed" not in body
    task = body["task"]
    assert isinstance(task["id"], str) and len(task["id"]) == 16
    assert task["prompt"] == text  # echoed as sent
    assert task["priority"] == 4
    assert task["metadata"] == {"prompt_id": "p-1", "create_time": 1700000000000}
    assert task["state"] == "pending"
    assert task["enqueued_at"] >= before - 1000
    # It really is in the store, with the graph parsed.
    job = service.store.get(task["id"])
    assert job["prompt"] == graph(11)
    assert job["priority"] == 4


@asyncio_mark
async def test_post_prompt_as_object(client, service):
    body = await post_task(client, {"prompt": graph(12), "priority": -3})
    task = body["task"]
    assert task["prompt"] == graph(12)
    assert task["priority"] == -3
    assert service.store.get(task["id"])["prompt"] == graph(12)


@asyncio_mark
async def test_post_defaults_priority_and_fills_metadata(client):
    before = now_ms()
    body = await post_task(client, {"prompt": graph()})
    after = now_ms()
    task = body["task"]
    assert task["priority"] == 1
    meta = task["metadata"]
    assert set(meta) == {"prompt_id", "create_time"}
    assert uuid.UUID(meta["prompt_id"]).version == 4
    assert before - 1000 <= meta["create_time"] <= after + 1000
    # Partial metadata: the missing key is filled in, the given one kept.
    t2 = (await post_task(client, {"prompt": graph(), "metadata": {"create_time": 5}}))["task"]
    assert t2["metadata"]["create_time"] == 5
    assert uuid.UUID(t2["metadata"]["prompt_id"]).version == 4
    t3 = (await post_task(client, {"prompt": graph(), "metadata": {"prompt_id": "only-id"}}))["task"]
    assert t3["metadata"]["prompt_id"] == "only-id"
    assert before - 1000 <= t3["metadata"]["create_time"] <= now_ms() + 1000


@asyncio_mark
async def test_same_prompt_id_returns_existing_task(client, service):
    first = await post_task(client, {"prompt": graph(1), "metadata": {"prompt_id": "dup"}})
    again = await post_task(client, {"prompt": graph(2), "priority": 9, "metadata": {"prompt_id": "dup"}})
    assert again["existed"] is True
    assert again["task"]["id"] == first["task"]["id"]
    assert again["task"]["priority"] == 1  # the existing task, unchanged
    assert service.store.stats()["total"] == 1
    assert service.store.get(first["task"]["id"])["prompt"] == graph(1)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"prompt": graph(), "metadata": {"prompt_id": "x", "user": "bob"}}, "user"),
        ({"prompt": graph(), "metadata": {"client_id": "c"}}, "client_id"),
        ({"prompt": graph(), "extra_data": {}}, "extra_data"),
        ({"prompt": graph(), "client_id": "abc"}, "client_id"),
        ({"prompt": "{not json"}, "JSON"),
        ({"prompt": "[1, 2]"}, "prompt"),
        ({"prompt": "{}"}, "no nodes"),
        ({"prompt": {"1": {"inputs": {}}}}, "class_type"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": graph(), "priority": "high"}, "priority"),
        ({"prompt": graph(), "priority": True}, "priority"),
        ({"prompt": graph(), "priority": 1.5}, "priority"),
        ({"prompt": graph(), "priority": 2**40}, "priority"),
        ({"priority": 1}, "prompt"),
        ({}, "prompt"),
        ({"prompt": graph(), "metadata": "p-1"}, "metadata"),
        ({"prompt": graph(), "metadata": {"prompt_id": 7}}, "prompt_id"),
        ({"prompt": graph(), "metadata": {"create_time": "now"}}, "create_time"),
    ],
)
@asyncio_mark
async def test_post_rejects_bad_bodies(client, service, body, needle):
    resp = await client.post("/tasks", json=body)
    err = await assert_json_error(resp, 400)
    assert needle in err["message"]
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"prompt": "\\ud800"}',
        '{"prompt": {"1": {"class_type": "\\ud800", "inputs": {}}}}',
        '{"prompt": {"1": {"class_type": "A", "inputs": {}}}, "metadata": {"prompt_id": "\\ud800"}}',
    ],
    ids=["prompt-string", "prompt-object", "metadata"],
)
@asyncio_mark
async def test_post_lone_surrogate_is_400(client, service, raw):
    resp = await client.post("/tasks", data=raw.encode(), headers={"Content-Type": "application/json"})
    await assert_json_error(resp, 400)
    assert service.store.stats()["total"] == 0


@asyncio_mark
async def test_post_nan_is_400_without_stack_trace(client, service):
    raw = b'{"prompt": {"1": {"class_type": "A", "inputs": {"x": NaN}}}}'
    resp = await client.post("/tasks", data=raw, headers={"Content-Type": "application/json"})
    err = await assert_json_error(resp, 400)
    assert ".py(" not in err["message"] and "At:" not in err["message"]
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize("raw", [b"not json at all", b'{"prompt": ', b"", b"\xff\xfe\x00"])
@asyncio_mark
async def test_post_non_json_body(client, service, raw):
    resp = await client.post("/tasks", data=raw, headers={"Content-Type": "application/json"})
    err = await assert_json_error(resp, 400)
    assert "JSON" in err["message"]
    assert service.store.stats()["total"] == 0


@pytest.mark.parametrize("payload, kind", [([{"prompt": graph()}], "list"), ("a string", "str"), (3, "int")])
@asyncio_mark
async def test_post_json_non_object_body(client, service, payload, kind):
    resp = await client.post("/tasks", json=payload)
    err = await assert_json_error(resp, 400)
    assert "object" in err["message"] and kind in err["message"]
    assert service.store.stats()["total"] == 0


@asyncio_mark
async def test_body_larger_than_limit_is_413(aiohttp_client, service):
    client = await aiohttp_client(build_app(service, limits=RequestLimits(max_body_bytes=1024)))
    big = {"prompt": {"1": {"class_type": "A", "inputs": {"text": "x" * 4000}}}}
    resp = await client.post("/tasks", json=big)
    err = await assert_json_error(resp, 413)
    assert "1024" in err["message"]
    assert service.store.stats()["total"] == 0
    # A body under the limit still works on the same app.
    ok = await client.post("/tasks", json={"prompt": graph()})
    assert ok.status == 200


# ---- GET --------------------------------------------------------------------------------------------------


@asyncio_mark
async def test_get_task(client, service):
    text = json.dumps(graph(21))
    created = (await post_task(client, {"prompt": text, "priority": 6, "metadata": {"prompt_id": "g-1"}}))["task"]
    resp = await client.get(f"/tasks/{created['id']}")
    assert resp.status == 200
    task = (await resp.json())["task"]
    assert task["id"] == created["id"]
    assert task["prompt"] == graph(21)  # stored graphs come back as objects
    assert task["priority"] == 6
    assert task["metadata"] == created["metadata"]
    assert task["state"] == "pending"
    assert task["result"] == {"outputs": None, "artifacts": [], "error": None, "finished_at": None}

    # After a worker finishes it, the result shows up.
    lease = service.store.take("w")
    service.store.complete(
        created["id"],
        lease["token"],
        outputs={"9": {"images": ["a.png"]}},
        artifacts=[{"path": "a.png", "size": 1, "sha256": "00" * 32}],
    )
    task = (await (await client.get(f"/tasks/{created['id']}")).json())["task"]
    assert task["state"] == "succeeded"
    assert task["result"]["outputs"] == {"9": {"images": ["a.png"]}}
    assert task["result"]["artifacts"][0]["path"] == "a.png"
    assert task["result"]["finished_at"] is not None


@pytest.mark.parametrize("job_id", ["0000000000000001", "nope", "ABCDEF0123456789"])
@asyncio_mark
async def test_get_unknown_task_is_404(client, job_id):
    await post_task(client, {"prompt": graph()})
    resp = await client.get(f"/tasks/{job_id}")
    err = await assert_json_error(resp, 404)
    assert err["type"] == "not_found"


@asyncio_mark
async def test_health(client, service):
    await post_task(client, {"prompt": graph()})
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["queue"]["writable"] is True
    assert body["stats"]["counts"]["pending"] == 1


@asyncio_mark
async def test_health_when_store_is_closed_is_503(client, service):
    service.store.close()
    resp = await client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert "closed" in body["queue"]["problem"]


@asyncio_mark
async def test_unknown_route_and_method(client):
    err = await assert_json_error(await client.get("/no/such/route"), 404)
    assert err["type"] == "not_found"
    err = await assert_json_error(await client.delete("/tasks", headers={"Content-Type": "application/json"}), 405)
    assert err["type"] == "method_not_allowed"


# ---- the real host ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Host:
    def __init__(self, data_dir, env):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comfy_nodes",
                "host",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--workers-bind",
                "tcp://127.0.0.1:*",
            ],
            cwd=str(REPO_ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 15.0) -> dict:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"host exited with {self.proc.returncode}: {self.output()}")
            try:
                status, body = _request("GET", self.base + "/health")
                if status == 200:
                    return body
                last = (status, body)
            except OSError as e:  # not listening yet
                last = e
            time.sleep(0.05)
        raise AssertionError(f"host did not answer /health within {timeout} s (last: {last})")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.mark.subprocess
def test_real_host_serves_and_keeps_tasks_across_restart(tmp_path, subprocess_env):
    data_dir = tmp_path / "host-data"
    host = Host(data_dir, subprocess_env)
    try:
        health = host.wait_healthy()
        assert health["status"] == "ok"
        status, body = _request(
            "POST",
            host.base + "/tasks",
            {"prompt": json.dumps(graph(77)), "priority": 3, "metadata": {"prompt_id": "real-1"}},
        )
        assert status == 200, body
        task_id = body["task"]["id"]
        status, body = _request("POST", host.base + "/tasks", {"prompt": graph(), "bogus": 1})
        assert status == 400 and "bogus" in body["error"]["message"]
        rc = host.stop()
        out = host.output()
        assert rc == 0, out
        assert "store closed cleanly" in out
    finally:
        host.kill()

    again = Host(data_dir, subprocess_env)
    try:
        again.wait_healthy()
        status, body = _request("GET", f"{again.base}/tasks/{task_id}")
        assert status == 200, body
        task = body["task"]
        assert task["id"] == task_id
        assert task["prompt"] == graph(77)
        assert task["priority"] == 3
        assert task["metadata"]["prompt_id"] == "real-1"
        assert task["state"] == "pending"
        assert again.stop() == 0, again.output()
    finally:
        again.kill()
