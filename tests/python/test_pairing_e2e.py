"""Pairing between real processes on loopback: a standalone host (`python -m comfy_nodes host`, CURVE on, no worker
key configured), the admin's `pairing-code`, the worker's `pair` (each its own process), then a real worker process
(cluster_worker.py, the native WorkerClient) with the kept keys runs a job at once; unpairing it while it runs a job
puts the job back in the queue and keeps the worker out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from comfy_nodes import _native as native
from comfy_nodes.pairing import client as pairing_client

sys.path.insert(0, str(Path(__file__).parent))
from conftest import wait_for  # noqa: E402
from test_cluster import Host, Worker, job_prompt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(not native.curve_available(), reason="libzmq without CURVE"),
    pytest.mark.skipif(
        not hasattr(native.Broker, "set_allowed_keys"), reason="the native Broker has no set_allowed_keys yet"
    ),
]


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "comfy_nodes", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_worker_pairs_runs_a_job_at_once_and_is_shut_out_when_unpaired(tmp_path, subprocess_env):
    broker_pub, broker_sec = native.curve_keypair()
    host = Host(tmp_path, curve_secret=broker_sec).start()
    worker = None
    try:
        url = f"http://127.0.0.1:{host.http_port}"
        made = cli("pairing-code", "--host-url", url, env=subprocess_env)
        assert made.returncode == 0, made.stderr
        code = made.stdout.strip()
        assert len(code) == 6 and code.isdigit() and "fingerprint" in made.stderr
        wrong = cli("pair", "--host", url, "--code", "000000" if code != "000000" else "111111",
                    "--data-dir", str(tmp_path / "w"), env=subprocess_env)  # fmt: skip
        assert wrong.returncode == 1 and "not paired" in wrong.stderr
        assert not (tmp_path / "w" / pairing_client.FILE_NAME).exists(), "a failed pairing keeps nothing"
        paired = cli("pair", "--host", url, "--code", code, "--name", "gpu-1", "--data-dir", str(tmp_path / "w"),
                     env=subprocess_env)  # fmt: skip
        assert paired.returncode == 0, paired.stderr
        kept = pairing_client.load(tmp_path / "w")
        assert kept.broker == host.endpoint and kept.broker_public_key == broker_pub
        # a worker started later with the kept keys joins at once (no host restart) and runs a job
        keys = (kept.broker_public_key, kept.worker_public_key, kept.worker_secret_key)
        worker = Worker(tmp_path, host, "paired-1", keys=keys)
        first = host.enqueue(job_prompt(1))
        wait_for(lambda: host.task(first)["state"] == "succeeded", 30, "the paired worker to run a job")
        assert host.task(first)["worker"] == "paired-1"
        # unpaired while it runs a long job: the job goes back, the worker stays out
        long = host.enqueue(job_prompt(2, sleep_ms=30_000))
        wait_for(lambda: worker.seen("job", seq=2), 30, "the long job to start on the paired worker")
        req = urllib.request.Request(
            f"{url}/comfymq/pairing/workers/{urllib.parse.quote(kept.worker_public_key, safe='')}",
            method="DELETE",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["unpaired"] == kept.worker_public_key
        wait_for(lambda: host.task(long)["state"] == "pending", 15, "the job to go back to the queue")
        time.sleep(3)  # (many heartbeats and reconnect attempts)
        job = host.task(long)
        assert job["state"] == "pending" and len(worker.seen("job", seq=2)) == 1, "no job reaches it again"
        assert not worker.seen("completed", seq=2)
    finally:
        if worker is not None:
            worker.stop()
        host.stop()
    print("[ pairing ] paired over HTTP, ran a job, unpaired mid-job: job back in the queue, worker kept out")
