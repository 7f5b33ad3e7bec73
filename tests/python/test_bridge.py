"""The worker bridge against a stand-in ComfyUI (a real server process speaking the recorded v0.8.0 API), with a
real host store and broker in this process and the bridge on its own thread.

Pins: validation errors fail without retry and keep node_errors; runtime errors keep exception, node and
traceback and are retried per max_attempts; progress reaches the job; a cancel interrupts the running prompt,
or deletes it from ComfyUI's queue when it is still waiting there; an unreachable ComfyUI makes the worker
leave (the job goes back to the queue) and rejoin when ComfyUI answers again; capabilities come from
/object_info, so a job needing a model this ComfyUI lacks waits with the reason.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, http_json, wait_for

from comfy_nodes.service import BrokerSettings, QueueService
from comfy_nodes.worker.bridge import BridgeSettings, WorkerBridge

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess


class StandIn:
    def __init__(self, tmp: Path, port: int, models: str = "base.safetensors"):
        self.tmp, self.port, self.models = tmp, port, models
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.standin",
                "--port",
                str(self.port),
                "--output-dir",
                str(self.tmp / "comfy-out"),
                "--models",
                self.models,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "standin.log", "a"),
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), line

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_bridge(service, comfy: StandIn, tmp: Path) -> WorkerBridge:
    """Worker w1 (gpu-1) driving `comfy` for the service's broker, with short heartbeats and backoff."""
    bridge = WorkerBridge(
        BridgeSettings(
            comfy_url=comfy.url,
            broker=service.broker.endpoint,
            worker_id="w1",
            name="gpu-1",
            work_dir=str(tmp / "w1"),
            heartbeat=0.2,
            reconnect_min=0.1,
            reconnect_max=0.5,
        )
    )
    bridge.start()
    return bridge


@pytest.fixture
def rig(tmp_path):
    comfy = StandIn(tmp_path, free_port())
    comfy.start()
    service = QueueService(tmp_path / "host", broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    bridge = start_bridge(service, comfy, tmp_path)
    wait_for(lambda: any(w["online"] for w in service.broker.workers()), what="the worker to join")
    try:
        yield service, comfy, bridge
    finally:
        bridge.stop()
        service.close()
        if comfy.proc.poll() is None:
            comfy.kill()


def state(service, job_id):
    return service.store.get(job_id, with_prompt=False)


def done(service, job_id, timeout=30.0):
    return wait_for(
        lambda: (j := state(service, job_id))["state"] in ("succeeded", "failed", "cancelled") and j,
        timeout,
        f"job {job_id} to end",
    )


def save_graph(**slow):
    g = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bridge"}},
    }
    if slow:
        g["2"] = {
            "class_type": "SlowNode",
            "inputs": {"images": ["1", 0], "seconds": slow.get("seconds", 1.0), "tag": slow.get("tag", "")},
        }
        g["3"]["inputs"]["images"] = ["2", 0]
    return g


def test_a_job_runs_and_its_png_and_outputs_are_recorded(rig):
    service, comfy, _ = rig
    jid = service.store.enqueue(
        save_graph(), workflow={"nodes": [], "links": [], "extra": {"mark": 1}}, batch_id="b1", prompt_id="b1req-0003"
    )["id"]
    j = done(service, jid)
    assert j["state"] == "succeeded", j["error"]
    assert j["worker_id"] == "w1"
    [art] = j["artifacts"]
    data = (service.artifact_root / art["path"]).read_bytes()
    assert data.startswith(b"\x89PNG")
    assert b"comfymq" in data and jid.encode() in data, "extra_pnginfo carries the job into the PNG"
    assert b'"batch_index": 2' in data and b'"batch_id": "b1"' in data, "and its place in the batch"
    assert j["outputs"]["3"]["images"][0]["filename"].startswith("bridge_")


def test_validation_errors_fail_without_retry_and_keep_node_errors(rig):
    service, _, _ = rig
    g = save_graph()
    g["1"]["inputs"]["width"] = 0
    jid = service.store.enqueue(g, max_attempts=3)["id"]
    j = done(service, jid)
    assert j["state"] == "failed" and j["attempts"] == 1
    full = service.store.get(jid)
    assert full["error"]["type"] == "validation_error"
    assert "width" in full["error"]["message"]
    details = full["error"]["details"]
    details = json.loads(details) if isinstance(details, str) else details
    assert "1" in details["node_errors"]


def test_runtime_errors_keep_node_and_traceback_and_are_retried(rig):
    service, _, _ = rig
    g = {"1": {"class_type": "FailNode", "inputs": {"message": "kaboom at run time"}}}
    jid = service.store.enqueue(g, max_attempts=2)["id"]
    wait_for(
        lambda: state(service, jid)["state"] == "failed" and state(service, jid)["attempts"] == 2, 30, "two attempts"
    )
    full = service.store.get(jid)
    assert "kaboom at run time" in full["error"]["message"]
    assert full["error"]["node_id"] == "1"
    assert full["error"]["traceback"]
    assert len(full["history"]) == 2


def test_progress_reaches_the_job_and_a_cancel_interrupts_the_running_prompt(rig):
    service, comfy, _ = rig
    jid = service.store.enqueue(save_graph(seconds=30, tag="cancel-me"))["id"]
    wait_for(
        lambda: (state(service, jid).get("progress") or {}).get("class_type") == "SlowNode",
        20,
        "progress naming the executing node",
    )
    service.store.cancel(jid, "user asked")
    j = done(service, jid)
    assert j["state"] == "cancelled"

    # The store ends the job at once; the worker then stops the prompt on its ComfyUI.
    def interrupted():
        history = http_json(comfy.url + "/history")[1]
        return [h for h in history.values() if any(m[0] == "execution_interrupted" for m in h["status"]["messages"])]

    assert len(wait_for(interrupted, 20, "the stand-in's running prompt to be interrupted")) == 1
    assert http_json(comfy.url + "/queue")[1]["queue_running"] == []


def test_a_cancel_while_queued_in_comfyui_deletes_it_there(rig):
    service, comfy, _ = rig
    blocker = http_json(comfy.url + "/prompt", "POST", {"prompt": save_graph(seconds=30, tag="someone else")})[1][
        "prompt_id"
    ]
    jid = service.store.enqueue(save_graph(tag="mine", seconds=0.01))["id"]
    wait_for(lambda: len(http_json(comfy.url + "/queue")[1]["queue_pending"]) == 1, 20, "our prompt to wait in ComfyUI")
    service.store.cancel(jid)
    assert done(service, jid)["state"] == "cancelled"
    wait_for(lambda: http_json(comfy.url + "/queue")[1]["queue_pending"] == [], 10, "it to leave ComfyUI's queue")
    running = http_json(comfy.url + "/queue")[1]["queue_running"]
    assert [e[1] for e in running] == [blocker], "someone else's prompt was not touched"
    http_json(comfy.url + "/interrupt", "POST", {})


def test_an_unreachable_comfyui_returns_the_job_and_the_worker_rejoins(rig):
    service, comfy, bridge = rig
    jid = service.store.enqueue(save_graph(seconds=1.5, tag="survive"))["id"]
    wait_for(lambda: state(service, jid)["state"] == "running", 20, "the job to run")
    comfy.kill()
    wait_for(lambda: not any(w["online"] for w in service.broker.workers()), 20, "the worker to leave")
    wait_for(lambda: state(service, jid)["state"] == "pending", 20, "the job back in the queue")
    assert bridge.state["comfyui"] == "unreachable"
    comfy.start()
    j = done(service, jid, 60)
    assert j["state"] == "succeeded", j["error"]
    assert bridge.state["comfyui"] == "ok"


def test_capabilities_come_from_object_info(rig):
    service, _, _ = rig
    [w] = service.broker.workers()
    assert w["node_classes"] >= 10 and w["models"] >= 1  # counts, from the stand-in's /object_info
    g = save_graph()
    g["9"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}
    jid = service.store.enqueue(g)["id"]
    reasons = wait_for(lambda: service.waiting_reasons(jid), 10, "a reason")
    assert any("other.safetensors" in r for r in reasons), reasons
    g["9"]["inputs"]["ckpt_name"] = "base.safetensors"
    ok = service.store.enqueue(g)["id"]
    assert done(service, ok)["state"] == "succeeded"
    assert state(service, jid)["state"] == "pending"


def test_capabilities_are_refreshed_on_demand(rig, caplog):
    service, _, _ = rig
    caplog.set_level("INFO", logger="comfymq.worker")
    service.broker.refresh_capabilities()  # what POST /comfymq/workers/refresh does
    wait_for(
        lambda: any("capabilities refreshed" in r.getMessage() for r in caplog.records),
        10,
        "the worker to re-read /object_info",
    )


def test_a_cancel_for_an_earlier_run_does_not_stop_a_later_run_of_the_same_job(rig):
    """CANCEL is matched by the lease (job id + token): a stale one, still queued when the same job came back to
    this worker under a new token, must not stop the new run."""
    service, _, bridge = rig
    jid = service.store.enqueue(save_graph(seconds=2, tag="second-run"))["id"]
    wait_for(lambda: state(service, jid)["state"] == "running", 20, "the job to run")
    run = wait_for(lambda: bridge._by_job.get(jid), 10, "the bridge's run")
    token = run.job["token"]
    # What a cancel of an earlier run (another token) looks like when it reaches the bridge now.
    stale = {"type": "cancel", "job_id": jid, "token": token ^ 0x5A5A, "reason": "an old run's cancel"}
    asyncio.run_coroutine_threadsafe(bridge._on_event(bridge._wc, None, stale), bridge._loop).result(5)
    j = done(service, jid)
    assert j["state"] == "succeeded", j["error"]
    assert run.cancel_reason is None


def test_a_worker_client_that_breaks_under_the_bridge_is_left_with_a_bye_and_the_bridge_rejoins(rig, caplog):
    """No exception ends the job pump silently: a pump that cannot go on is logged, the bridge says BYE (its jobs
    go elsewhere) and joins again with a new client."""
    service, _, bridge = rig
    caplog.set_level("ERROR", logger="comfymq.worker")
    first = service.broker.workers()[0]["connected_at"]
    bridge._wc.close(bye=False)  # the client dies under the running pumps
    wait_for(lambda: any("job pump stopped" in r.getMessage() for r in caplog.records), 10, "the pump's log line")
    wait_for(
        lambda: (ws := service.broker.workers()) and ws[0]["online"] and ws[0]["connected_at"] > first,
        30,
        "the worker to join again",
    )
    jid = service.store.enqueue(save_graph())["id"]
    assert done(service, jid)["state"] == "succeeded"


def test_the_pump_logs_a_job_the_client_could_not_hand_over_and_goes_on(caplog):
    """The binding fails a job Python cannot read and raises ValueError naming it: the pump logs it and keeps
    taking jobs (it used to end there, silently)."""
    import threading

    from comfy_nodes.worker.bridge import _pump

    caplog.set_level("ERROR", logger="comfymq.worker")
    given = iter([ValueError("job 0123456789abcdef: worker could not read the job (failed it)"), {"job_id": "x"}])
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    broken = []

    def fetch(timeout):
        item = next(given, None)
        if isinstance(item, Exception):
            raise item
        if item is None:
            stop.set()
        return item

    t = threading.Thread(target=_pump, args=(fetch, queue, loop, stop, "job pump", broken.append))
    t.start()
    t.join(5)
    loop.run_until_complete(asyncio.sleep(0))
    assert queue.get_nowait() == {"job_id": "x"}, "the pump went on after the bad job"
    assert any("0123456789abcdef" in r.getMessage() for r in caplog.records)
    assert broken == []
    loop.close()
