"""The worker bridge against a stand-in ComfyUI (a real server process speaking the recorded v0.8.0 API), with a
real host store and broker in this process and the bridge on its own thread.

Pins: validation errors fail without retry and keep node_errors; runtime errors keep exception, node and
traceback and are retried per max_attempts; progress reaches the job; a cancel interrupts the running prompt,
or deletes it from ComfyUI's queue when it is still waiting there; an unreachable ComfyUI makes the worker
leave (the job goes back to the queue) and rejoin when ComfyUI answers again; capabilities come from
/object_info, so a job needing a model this ComfyUI lacks waits with the reason.

Against each ComfyUI version the stand-in imitates (0.3.64, 0.8.0, current): a worker restarted mid-job adopts the
result of its finished prompt (exactly one run on ComfyUI) or follows the prompt still running (never posted twice);
a prompt no job claims after a restart is cancelled there; a cancel goes to POST /api/jobs/{id}/cancel where ComfyUI
has it, else to /interrupt; HELLO says which ComfyUI version the worker drives; the bridge waits quietly for a
ComfyUI that is still starting; a validation error names each node once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import free_port, http_json, wait_for

from comfy_nodes.service import BrokerSettings, QueueService
from comfy_nodes.worker.bridge import BridgeSettings, WorkerBridge
from comfy_nodes.worker.runs import prompt_id_for
from tests.standin import versions

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess
VERSIONS = versions.NAMES  # "0.3.64", "0.8.0", "current"


class StandIn:
    def __init__(self, tmp: Path, port: int, models: str = "base.safetensors", version: str = versions.DEFAULT):
        self.tmp, self.port, self.models, self.version = tmp, port, models, version
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        """Starts it on its port; a start that fails (the port briefly held elsewhere on a busy machine) is tried
        twice more before the test fails with the stand-in's own words."""
        for attempt in range(3):
            if self._start_once():
                return
            time.sleep(0.5 * (attempt + 1))
        log_tail = (self.tmp / "standin.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"the stand-in did not start on port {self.port}:\n{log_tail}")

    def _start_once(self) -> bool:
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
                "--comfyui-version",
                self.version,
                "--access-log",  # every request in standin.log: which endpoints the bridge used
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "standin.log", "a"),
            text=True,
        )
        line = self.proc.stdout.readline()
        if line.startswith("READY"):
            return True
        self.proc.kill()
        self.proc.wait()
        return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def requests(self) -> list[str]:
        """Every request the stand-in served so far, as "METHOD /path" (its access log)."""
        lines = (self.tmp / "standin.log").read_text().splitlines()  # "... standin[standin.access] INFO GET /x ..."
        return [" ".join(line.split(" INFO ", 1)[1].split()[:2]) for line in lines if "[standin.access] INFO " in line]

    def history(self) -> dict:
        return http_json(self.url + "/history")[1]

    def prompts_for(self, job_id: str) -> dict:
        """The stand-in's history entries of prompts posted for this job (extra_pnginfo.comfymq names it)."""
        return {
            pid: h
            for pid, h in self.history().items()
            if ((h["prompt"][3].get("extra_pnginfo") or {}).get("comfymq") or {}).get("job_id") == job_id
        }


def start_bridge(service, comfy: StandIn, tmp: Path, **settings) -> WorkerBridge:
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
            **settings,
        )
    )
    bridge.start()
    return bridge


class Rig:
    """A stand-in ComfyUI of one version, a host (store + broker) and worker w1; the worker can be restarted."""

    def __init__(self, tmp: Path, version: str = versions.DEFAULT):
        self.tmp, self.version = tmp, version
        self.comfy = StandIn(tmp, free_port(), version=version)
        self.comfy.start()
        self.service = QueueService(tmp / "host", broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
        self.bridges: list[WorkerBridge] = []
        self.start_worker()

    @property
    def bridge(self) -> WorkerBridge:
        return self.bridges[-1]

    def start_worker(self, **settings) -> WorkerBridge:
        """Starts w1 (the same id and work dir each time: a restart of the same worker) and waits for it to join."""
        joined = [w["connected_at"] for w in self.service.broker.workers() if w["online"]]
        self.bridges.append(start_bridge(self.service, self.comfy, self.tmp, **settings))
        wait_for(
            lambda: any(w["online"] and w["connected_at"] not in joined for w in self.service.broker.workers()),
            what="the worker to join",
        )
        return self.bridge

    def kill_worker(self) -> None:
        """The worker's process ends mid-job: no BYE, nothing more to ComfyUI (its prompt runs on there)."""
        self.bridge.stop()

    def close(self) -> None:
        for b in self.bridges:
            b.stop()
        self.service.close()
        if self.comfy.proc.poll() is None:
            self.comfy.kill()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    try:
        yield r.service, r.comfy, r.bridge
    finally:
        r.close()


@pytest.fixture
def vrig(tmp_path, request):
    """A Rig of the ComfyUI version the test is parametrized with (indirect), else 0.8.0."""
    r = Rig(tmp_path, getattr(request, "param", versions.DEFAULT))
    try:
        yield r
    finally:
        r.close()


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


# ---- the ComfyUI versions: restarts, cancels, HELLO ------------------------------------------------------------


def running_prompt(rig: Rig, job_id: str) -> str:
    """Waits until the job's prompt runs on the stand-in; returns its prompt id."""
    run = wait_for(lambda: rig.bridge._by_job.get(job_id), 20, "the bridge's run")

    def running():
        q = http_json(rig.comfy.url + "/queue")[1]
        return any(e[1] == run.prompt_id for e in q["queue_running"]) and run.prompt_id

    return wait_for(running, 20, "the prompt to run on the stand-in")


@pytest.mark.parametrize("vrig", ["0.3.64", "current"], indirect=True)
def test_a_worker_restarted_mid_job_adopts_its_finished_prompt_exactly_once(vrig):
    """The worker dies while its prompt runs; the prompt finishes on ComfyUI meanwhile; the restarted worker gets the
    job again (a new lease), finds that prompt (jobs API on current, /history on 0.3.64) and sends its outputs as the
    result: one run on ComfyUI, one artifact, the bytes ComfyUI wrote."""
    service, comfy = vrig.service, vrig.comfy
    jid = service.store.enqueue(save_graph(seconds=1.0, tag="adopt-" + vrig.version))["id"]
    run = wait_for(lambda: vrig.bridge._by_job.get(jid), 20, "the bridge's run")
    pid = running_prompt(vrig, jid)
    assert pid == prompt_id_for(jid, run.job["attempt"], run.job["token"]), "the prompt id is minted from the lease"
    assert str(uuid.UUID(pid)) == pid, "a canonical lowercase UUID"
    vrig.kill_worker()
    wait_for(lambda: pid in comfy.history(), 20, "the prompt to finish on ComfyUI while no worker follows it")
    assert state(service, jid)["state"] in ("running", "pending")

    vrig.start_worker()
    j = done(service, jid)
    assert j["state"] == "succeeded", j["error"]
    assert list(comfy.prompts_for(jid)) == [pid], "ComfyUI ran the job once: the finished prompt was adopted"
    [art] = j["artifacts"]
    [image] = comfy.history()[pid]["outputs"]["3"]["images"]
    written = (vrig.tmp / "comfy-out" / image["subfolder"] / image["filename"]).read_bytes()
    assert (service.artifact_root / art["path"]).read_bytes() == written
    assert hashlib.sha256(written).hexdigest() == art["sha256"]
    assert [r for r in comfy.requests() if r.startswith("POST /prompt")] == ["POST /prompt"], "posted once"


@pytest.mark.parametrize("vrig", ["0.8.0"], indirect=True)
def test_a_prompt_still_running_after_a_restart_is_followed_not_posted_again(vrig):
    service, comfy = vrig.service, vrig.comfy
    jid = service.store.enqueue(save_graph(seconds=5, tag="follow"))["id"]  # (time to rejoin on a loaded machine)
    pid = running_prompt(vrig, jid)
    vrig.kill_worker()
    vrig.start_worker()
    run = wait_for(lambda: vrig.bridge._by_job.get(jid), 20, "the restarted worker to take the job again")
    assert run.prompt_id == pid and run.resumed == "followed"
    assert pid not in comfy.history(), "still running on ComfyUI when the restarted worker took the job"
    j = done(service, jid)
    assert j["state"] == "succeeded", j["error"]
    assert list(comfy.prompts_for(jid)) == [pid]
    assert [r for r in comfy.requests() if r.startswith("POST /prompt")] == ["POST /prompt"]


@pytest.mark.parametrize("vrig", ["current"], indirect=True)
def test_after_a_restart_a_prompt_no_job_claims_is_cancelled_on_comfyui(vrig):
    """The job was cancelled while its worker was down: it never comes back, so the restarted worker stops the prompt
    it left running on ComfyUI (after orphan_grace), instead of letting it hold ComfyUI up."""
    service, comfy = vrig.service, vrig.comfy
    jid = service.store.enqueue(save_graph(seconds=60, tag="orphan"))["id"]
    pid = running_prompt(vrig, jid)
    vrig.kill_worker()
    service.store.cancel(jid, "cancelled while the worker was down")
    vrig.start_worker(orphan_grace=0.5)
    wait_for(lambda: pid in comfy.history(), 20, "the orphaned prompt to be stopped")
    messages = [m[0] for m in comfy.history()[pid]["status"]["messages"]]
    assert "execution_interrupted" in messages
    assert f"POST /api/jobs/{pid}/cancel" in comfy.requests()


@pytest.mark.parametrize(
    "vrig,endpoint",
    [("0.3.64", "POST /interrupt"), ("0.8.0", "POST /interrupt"), ("current", "POST /api/jobs/{pid}/cancel")],
    indirect=["vrig"],
)
def test_a_cancel_uses_the_jobs_api_where_comfyui_has_it_else_interrupt(vrig, endpoint):
    service, comfy = vrig.service, vrig.comfy
    jid = service.store.enqueue(save_graph(seconds=30, tag="cancel-" + vrig.version))["id"]
    pid = running_prompt(vrig, jid)
    service.store.cancel(jid, "user asked")
    assert done(service, jid)["state"] == "cancelled"
    wait_for(lambda: pid in comfy.history(), 20, "the running prompt to be interrupted")
    assert "execution_interrupted" in [m[0] for m in comfy.history()[pid]["status"]["messages"]]
    used = comfy.requests()
    assert endpoint.format(pid=pid) in used
    other = "POST /interrupt" if "cancel" in endpoint else "/cancel"
    assert not [r for r in used if other in r], used


@pytest.mark.parametrize("vrig", VERSIONS, indirect=True)
def test_hello_says_which_comfyui_the_worker_drives(vrig):
    profile = versions.get(vrig.version)
    [w] = vrig.service.broker.workers()
    assert w["comfyui_version"] == profile.comfyui_version  # what the panel's workers view shows
    api = w["info"]["comfyui_api"]
    assert api["jobs"] is profile.jobs_api and api["jobs_cancel"] is profile.jobs_cancel
    assert "supports_preview_metadata" in api["features"]
    # and it runs jobs there
    assert done(vrig.service, vrig.service.store.enqueue(save_graph())["id"])["state"] == "succeeded"


def test_the_worker_waits_quietly_for_a_comfyui_that_is_still_starting(tmp_path, caplog):
    """Inside ComfyUI the plugin starts before ComfyUI's server listens: no "unreachable" warning for that."""
    caplog.set_level("INFO", logger="comfymq.worker")
    comfy = StandIn(tmp_path, free_port())
    service = QueueService(tmp_path / "host", broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    bridge = start_bridge(service, comfy, tmp_path)
    try:
        time.sleep(1.5)  # what ComfyUI takes to load its nodes before it listens (here: a stand-in that starts late)
        comfy.start()
        wait_for(lambda: any(w["online"] for w in service.broker.workers()), 20, "the worker to join")
        said = [r for r in caplog.records if r.name == "comfymq.worker"]
        assert not [r for r in said if r.levelname == "WARNING"], [r.getMessage() for r in said]
        waiting = [r for r in said if "waiting for ComfyUI" in r.getMessage()]
        assert len(waiting) == 1 and waiting[0].levelname == "INFO"
    finally:
        bridge.stop()
        service.close()
        if comfy.proc is not None and comfy.proc.poll() is None:
            comfy.kill()


def test_a_validation_error_names_each_node_and_reason_once(rig):
    service, _, _ = rig
    g = save_graph()
    g["1"]["inputs"].update(width=0, height=0)
    del g["3"]["inputs"]["filename_prefix"]  # the output node's own error: ComfyUI says it twice (details, node_errors)
    jid = service.store.enqueue(g, max_attempts=3)["id"]
    assert done(service, jid)["state"] == "failed"
    message = service.store.get(jid)["error"]["message"]
    assert message.count("node 1 (EmptyImage)") == 1, message
    assert message.count("node 3 (SaveImage)") == 1, message
    assert message.count("filename_prefix") == 1, message
    assert "[width]" in message and "[height]" in message


@pytest.mark.parametrize("vrig", ["0.3.64"], indirect=True)
def test_a_comfyui_restarted_as_another_version_is_announced_again(vrig):
    """ComfyUI is upgraded under a connected worker (a quick restart: the websocket comes back at once): the worker
    joins again, so HELLO and the workers view say the version it now drives, and it uses the API that one has."""
    service, comfy = vrig.service, vrig.comfy
    first = service.broker.workers()[0]["connected_at"]
    comfy.kill()
    comfy.version = "current"
    comfy.start()
    w = wait_for(
        lambda: (ws := service.broker.workers()) and ws[0]["online"] and ws[0]["connected_at"] > first and ws[0],
        20,
        "the worker to join again",
    )
    assert w["comfyui_version"] == versions.CURRENT_VERSION and w["info"]["comfyui_api"]["jobs_cancel"] is True
    jid = service.store.enqueue(save_graph(seconds=30, tag="after-upgrade"))["id"]
    pid = running_prompt(vrig, jid)
    service.store.cancel(jid)
    wait_for(lambda: f"POST /api/jobs/{pid}/cancel" in comfy.requests(), 20, "the cancel through the jobs API")
