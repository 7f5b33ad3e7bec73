"""One nesting limit (MAX_JSON_DEPTH) and clean node ids for every way a prompt arrives, and a job stored before
the limit existed can still be read and ends with a reason instead of wedging a worker.

A prompt sent as a JSON *string* nesting 10,000 levels used to be accepted and stored; every read of it then
answered 500 (even after a restart), and a worker that leased it stopped taking jobs for good."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, graph, http_json, wait_for

from comfy_nodes import _native as native
from comfy_nodes.service import BrokerSettings, QueueService

REPO = Path(__file__).resolve().parents[2]
LEGACY_TOOL = REPO / "build" / "comfymq_legacy_store"
LIMIT = native.MAX_JSON_DEPTH


def nested_text(levels: int) -> str:
    """An API-format prompt whose one input nests `levels` levels inside the graph, node and inputs (3)."""
    return '{"1": {"class_type": "EmptyImage", "inputs": {"x": ' + "[" * levels + "]" * levels + "}}}"


def nested_object(levels: int) -> dict:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return {"1": {"class_type": "EmptyImage", "inputs": {"x": value}}}


def names_limit(message: str) -> bool:
    return f"deeper than {LIMIT}" in message


# ---- the Python API -----------------------------------------------------------------------------------------


def test_the_store_takes_the_limit_and_refuses_one_level_more_however_the_prompt_is_given(store):
    assert LIMIT == 64
    store.enqueue(nested_text(LIMIT - 3))
    store.enqueue(nested_object(LIMIT - 3))
    for prompt in (nested_text(LIMIT - 2), nested_object(LIMIT - 2), nested_text(10000), nested_object(5000)):
        with pytest.raises(ValueError) as e:
            store.enqueue(prompt)
        assert names_limit(str(e.value)), e.value
        with pytest.raises(ValueError):
            native.validate_prompt(prompt)
    with pytest.raises(ValueError) as e:
        store.enqueue_many([{"prompt": graph(1)}, {"prompt": nested_text(10000)}])
    assert names_limit(str(e.value))
    with pytest.raises(ValueError) as e:
        store.enqueue(graph(2), workflow={"nodes": nested_object(200)})
    assert "workflow" in str(e.value) and names_limit(str(e.value))
    assert store.stats()["total"] == 2, "the refused ones changed nothing"


def test_control_characters_in_node_ids_and_class_types_are_refused_naming_the_node(store):
    for prompt, named in (
        (({"a\nb": {"class_type": "K", "inputs": {}}}), "node id 'a\\u000ab'"),
        ({"5": {"class_type": "Load\x00Image", "inputs": {}}}, "node '5'"),
        ('{"7": {"class_type": "K\\u001b[31m", "inputs": {}}}', "node '7'"),
    ):
        with pytest.raises(ValueError) as e:
            store.enqueue(prompt)
        assert named in str(e.value) and "control character" in str(e.value), e.value
    store.enqueue({"5": {"class_type": "K", "inputs": {"text": "line one\nline two"}}})  # values may have them


# ---- over HTTP: the seed contract and /comfymq, one job, a count and a sweep ------------------------------------


@pytest.mark.asyncio
async def test_every_http_way_in_answers_400_naming_the_limit_and_changes_nothing(client, service):
    c = client  # the standalone host's app (conftest)
    deep_string, deep_object = nested_text(10000), nested_object(LIMIT)
    bodies = [
        ("/tasks", {"prompt": deep_string}),
        ("/tasks", {"prompt": deep_object}),
        ("/comfymq/tasks", {"prompt": deep_string}),
        ("/comfymq/tasks", {"prompt": deep_object}),
        ("/api/comfymq/tasks", {"prompt": deep_string, "count": 3}),
        ("/comfymq/tasks", {"prompt": deep_string, "sweep": {"1.x": [1, 2]}}),
        ("/comfymq/tasks", {"prompt": graph(1), "sweep": {"3.seed": [1, nested_object(LIMIT)["1"]["inputs"]["x"]]}}),
        ("/comfymq/tasks", {"prompt": graph(1), "workflow": {"n": nested_object(LIMIT)}}),
    ]
    for path, body in bodies:
        r = await c.post(path, json=body)
        answer = await r.json()
        assert r.status == 400, (path, r.status, answer)
        assert names_limit(answer["error"]["message"]), (path, answer)
    # Deeper than Python's own JSON reader goes: still a 400 that names the limit, never a 500.
    raw = '{"prompt": {"1": {"class_type": "E", "inputs": {"x": ' + "[" * 20000 + "]" * 20000 + "}}}}"
    r = await c.post("/comfymq/tasks", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert str(LIMIT) in (await r.json())["error"]["message"]
    for path in ("/tasks", "/comfymq/tasks"):
        r = await c.post(path, json={"prompt": {"a\tb": {"class_type": "K", "inputs": {}}}})
        assert r.status == 400 and "control character" in (await r.json())["error"]["message"]
    assert service.store.stats()["total"] == 0


def test_the_cli_refuses_a_too_deep_file_with_one_line(tmp_path, subprocess_env):
    path = tmp_path / "deep.json"
    path.write_text(nested_text(20000))
    port = free_port()  # nothing listens: the file is refused before any request
    r = subprocess.run(
        [sys.executable, "-m", "comfy_nodes", "enqueue", str(path), "--url", f"http://127.0.0.1:{port}"],
        cwd=REPO,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(LIMIT) in r.stderr, r.stderr


# ---- a job stored before the limit --------------------------------------------------------------------------


def legacy_store(data_dir: Path) -> str:
    """A store at data_dir/store holding one job nesting 10,000 deep, as an older version could write it."""
    assert LEGACY_TOOL.exists(), f"{LEGACY_TOOL} is built by `make build` (CMake target comfymq_legacy_store)"
    out = subprocess.run(
        [str(LEGACY_TOOL), str(data_dir / "store"), "10000"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.subprocess
def test_a_stored_too_deep_job_is_read_without_error_and_a_worker_fails_it_and_goes_on(tmp_path, caplog):
    from test_bridge import StandIn, save_graph, start_bridge

    data = tmp_path / "host"
    poisoned = legacy_store(data)
    comfy = StandIn(tmp_path, free_port())
    comfy.start()
    service = QueueService(data, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    bridge = None
    try:
        # Reads answer (the prompt comes back as its JSON text): never an error.
        job = service.store.get(poisoned, with_prompt=True)
        assert job["state"] == "pending" and isinstance(job["prompt"], str)
        caplog.set_level("WARNING", logger="comfymq.worker")
        bridge = start_bridge(service, comfy, tmp_path)
        ended = wait_for(
            lambda: (j := service.store.get(poisoned))["state"] != "pending" and j["state"] != "running" and j,
            30,
            "the poisoned job to end",
        )
        assert ended["state"] == "failed", ended
        assert ended["attempts"] == 1, "not retried: no worker can read it"
        assert ended["error"]["type"] == "invalid_job"
        assert str(LIMIT) in ended["error"]["message"] and "w1" in ended["error"]["message"]
        wait_for(lambda: any(poisoned in r.getMessage() for r in caplog.records), 10, "the worker to log the job id")
        good = service.store.enqueue(save_graph())["id"]
        done = wait_for(
            lambda: (j := service.store.get(good))["state"] in ("succeeded", "failed") and j, 30, "the next job"
        )
        assert done["state"] == "succeeded", done["error"]
    finally:
        if bridge is not None:
            bridge.stop()
        service.close()
        comfy.kill()


@pytest.mark.subprocess
def test_a_host_on_a_store_with_a_too_deep_job_answers_every_read(tmp_path, subprocess_env):
    data = tmp_path / "host"
    poisoned = legacy_store(data)
    port = free_port()
    log = open(tmp_path / "host.log", "w")
    host = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfy_nodes",
            "host",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--workers-bind",
            "off",
            "--retention-days",
            "0",
        ],
        cwd=REPO,
        env=subprocess_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base + "/health"), 30, "the host")
        for url in (
            f"/tasks/{poisoned}",
            f"/comfymq/tasks/{poisoned}",
            f"/api/comfymq/tasks/{poisoned}",
            "/comfymq/tasks?state=pending",
            "/comfymq/tasks?prompt_id=legacy-deep",
            "/comfymq/stats",
        ):
            status, body = http_json(base + url)
            assert status == 200, (url, status, body)
        status, body = http_json(base + f"/comfymq/tasks/{poisoned}")
        assert isinstance(body["job"]["prompt"], str) and body["job"]["prompt"].startswith('{"1"')
        status, body = http_json(base + f"/comfymq/tasks/{poisoned}/cancel", "POST", {})
        assert status == 200 and body["job"]["state"] == "cancelled"
    finally:
        host.terminate()
        host.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return http_json(url)[0] in (200, 503)
    except OSError:
        return False
