"""End to end on loopback, all real processes: a host (`python -m comfy_nodes host`) and two ComfyUIs: c1 driven by
a standalone worker (`python -m comfy_nodes worker`, w1), c2 with this repo loaded as its custom node pack in the
worker role (the plugin's own bridge, w2).

The ComfyUIs are the stand-in (tests/standin) imitating each ComfyUI version (0.3.64, 0.8.0, current), and a real
ComfyUI when one is given: COMFYMQ_REAL_COMFYUI=/path/to/ComfyUI COMFYMQ_REAL_COMFYUI_PYTHON=/path/to/its/python
(two instances from that folder, each with its own --base-directory; see conftest.ComfyUIs). The same checks run
on each.

50 jobs including a sweep; one worker is SIGKILLed mid-run; all 50 end succeeded exactly once with their files
on the host (bytes equal to what the ComfyUI wrote); a cancel in the middle ends cancelled on the right worker;
a job needing a model only one ComfyUI offers runs there; a job no worker can run waits with reasons; each worker
says which ComfyUI version it drives; the plugin's worker logs no "unreachable" while its ComfyUI starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ComfyUIs, comfyui_targets, free_port, wait_for
from conftest import http_json as http

from tests.standin import versions

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess


class Procs:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], ready: str | None = None) -> str | None:
        log = open(self.tmp / f"{name}.log", "w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE if ready else log, stderr=log, text=True, env=env
        )
        self.procs[name] = p
        if ready:
            line = p.stdout.readline()
            assert line.startswith(ready), (
                f"{name} did not start: {line!r}; log: {(self.tmp / f'{name}.log').read_text()}"
            )
            return line.split()[-1]
        return None

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def graph(color: int, seconds: float = 0.3, ckpt: str | None = None, prefix: str = "e2e") -> dict:
    g = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
        "2": {"class_type": "SlowNode", "inputs": {"images": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    if ckpt:
        g["4"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}
    return g


@pytest.fixture(params=comfyui_targets())
def cluster(tmp_path, request):
    with running_cluster(tmp_path, request.param) as running:
        yield running


@contextlib.contextmanager
def running_cluster(tmp_path: Path, target: str, comfy_flags=(), heartbeat: float = 0.2):
    """The cluster of this module's tests on ComfyUIs of `target` (conftest.comfyui_targets), each ComfyUI started
    with `comfy_flags` too, every process with `heartbeat` (seconds; a worker silent for 3 is gone); yields (host
    URL, Procs, ComfyUIs) once both workers are online, stops all at the end. The host is procs.procs["host"] (its
    command line: .args)."""
    procs = Procs(tmp_path)
    comfyuis = ComfyUIs(target, tmp_path)
    http_port, broker_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    broker = f"tcp://127.0.0.1:{broker_port}"
    try:
        procs.start(
            "host",
            [
                "-m",
                "comfy_nodes",
                "host",
                "--data-dir",
                str(tmp_path / "host"),
                "--port",
                str(http_port),
                "--workers-bind",
                broker,
                "--heartbeat",
                str(heartbeat),
            ],
        )
        wait_for(lambda: _ok(base + "/comfymq/health"), 30, "the host")
        # c2 loads this repo as its custom node pack, as a worker of the host (the plugin's bridge drives c2)
        plugin = {
            "COMFYMQ_ROLE": "worker",
            "COMFYMQ_BROKER": broker,
            "COMFYMQ_WORKER_ID": "w2",
            "COMFYMQ_WORKER_NAME": "gpu-w2",
            "COMFYMQ_DATA_DIR": str(tmp_path / "w2"),
            "COMFYMQ_HEARTBEAT": str(heartbeat),
        }
        c1 = comfyuis.start("c1", models=["base.safetensors"], flags=comfy_flags)
        comfyuis.start("c2", models=["base.safetensors", "special.safetensors"], plugin_env=plugin, flags=comfy_flags)
        procs.start(
            "w1",
            [
                "-m",
                "comfy_nodes",
                "worker",
                "--comfy-url",
                c1,
                "--broker",
                broker,
                "--id",
                "w1",
                "--name",
                "gpu-w1",
                "--data-dir",
                str(tmp_path / "w1"),
                "--heartbeat",
                str(heartbeat),
            ],
        )
        wait_for(lambda: sum(x["online"] for x in http(base + "/comfymq/workers")[1]) == 2, 60, "two workers")
        yield base, procs, comfyuis
    finally:
        procs.stop_all()
        comfyuis.stop_all()


def _ok(url: str) -> bool:
    try:
        return http(url)[0] == 200
    except OSError:
        return False


def job(base: str, job_id: str) -> dict:
    status, body = http(f"{base}/comfymq/tasks/{job_id}")
    assert status == 200, body
    return body.get("job", body.get("task", body))


def test_fifty_jobs_a_killed_worker_a_cancel_and_routing(cluster):
    base, procs, comfyuis = cluster
    tmp = comfyuis.tmp
    # each worker says which ComfyUI it drives (HELLO), and what of its API it found
    workers = {w["id"]: w for w in http(base + "/comfymq/workers")[1]}
    for w in (workers["w1"], workers["w2"]):
        assert w["comfyui_version"], w
        if not comfyuis.real:
            profile = versions.get(comfyuis.target.removeprefix("standin-"))
            assert w["comfyui_version"] == profile.comfyui_version
            assert w["info"]["comfyui_api"]["jobs"] is profile.jobs_api
            assert w["info"]["comfyui_api"]["jobs_cancel"] is profile.jobs_cancel
    ids: list[str] = []
    # A job needing a model only c2 (worker w2) has.
    status, body = http(base + "/comfymq/tasks", "POST", {"prompt": graph(7, ckpt="special.safetensors")})
    assert status == 200, body
    special = body["jobs"][0]["id"]
    ids.append(special)
    # A sweep of 9 (one job per color) sharing a batch.
    status, body = http(base + "/comfymq/tasks", "POST", {"prompt": graph(0), "sweep": {"1.color": list(range(1, 10))}})
    assert status == 200, body
    assert len(body["jobs"]) == 9 and body.get("batch_id")
    ids += [j["id"] for j in body["jobs"]]
    # 40 single jobs.
    for i in range(40):
        status, body = http(base + "/comfymq/tasks", "POST", {"prompt": graph(100 + i)})
        assert status == 200, body
        ids.append(body["jobs"][0]["id"])
    assert len(set(ids)) == 50
    # A long job to cancel once it runs.
    status, body = http(base + "/comfymq/tasks", "POST", {"prompt": graph(999, seconds=60), "priority": 10})
    long_id = body["jobs"][0]["id"]
    # A job nobody can run waits and says why.
    status, body = http(base + "/comfymq/tasks", "POST", {"prompt": graph(5, ckpt="missing.safetensors")})
    stuck = body["jobs"][0]["id"]

    running = wait_for(lambda: (j := job(base, long_id))["state"] == "running" and j, 60, "the long job to run")
    long_worker = running.get("worker") or running.get("worker_id")
    assert long_worker in ("w1", "w2")
    status, body = http(f"{base}/comfymq/tasks/{long_id}/cancel", "POST", {})
    assert status == 200, body
    cancelled = wait_for(lambda: (j := job(base, long_id))["state"] == "cancelled" and j, 30, "the cancel")
    assert (cancelled.get("worker") or cancelled.get("worker_id")) == long_worker

    # Kill w1 once a few jobs are done and it is running one.
    def w1_busy():
        done = sum(job(base, i)["state"] == "succeeded" for i in ids[:20])
        return done >= 5 and any(w["id"] == "w1" and w.get("running") for w in http(base + "/comfymq/workers")[1])

    wait_for(w1_busy, 90, "w1 to be busy after some jobs")
    procs.procs["w1"].send_signal(signal.SIGKILL)
    procs.procs["w1"].wait()

    def all_done():
        return all(job(base, i)["state"] in ("succeeded", "failed", "cancelled") for i in ids)

    wait_for(all_done, 240, "all 50 jobs to finish")
    jobs = [job(base, i) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 50, [(j["id"], j["state"], j.get("error")) for j in jobs]
    assert (jobs[0].get("worker") or jobs[0].get("worker_id")) == "w2", "the special-model job runs where the model is"
    art_root = tmp / "host" / "artifacts"
    for j in jobs:
        arts = j["artifacts"]
        assert len(arts) == 1, j
        data = (art_root / arts[0]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == arts[0]["sha256"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        [image] = j["outputs"]["3"]["images"]  # the file the ComfyUI of the job's worker saved
        comfy = "c1" if (j.get("worker") or j.get("worker_id")) == "w1" else "c2"
        assert (comfyuis.output_dir(comfy) / image["subfolder"] / image["filename"]).read_bytes() == data
    retried = [j for j in jobs if j["attempts"] > 1]
    assert retried, "the killed worker's job ran again elsewhere"
    stuck_job = job(base, stuck)
    assert stuck_job["state"] == "pending"
    assert any("missing.safetensors" in r for r in stuck_job.get("waiting", [])), stuck_job.get("waiting")
    # the plugin's worker started before its ComfyUI listened, and waited quietly for it
    assert "is unreachable" not in comfyuis.log("c2"), comfyuis.log("c2")[-3000:]
