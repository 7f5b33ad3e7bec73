"""A worker process for the cluster tests: drives the real WorkerClient, and runs "TestJob" prompts itself
(no ComfyUI needed): each job writes an output file whose bytes follow from its seq, after sleeping as told,
reporting progress, honouring cancels. Prints one JSON line per thing that happens, for the test to read.

    python cluster_worker.py --broker tcp://127.0.0.1:PORT --id NAME [--caps JSON] [--capacity N]
                             [--heartbeat S] [--broker-key K --public-key K --secret-key K] [--ignore-cancel]
                             --out DIR
"""

import argparse
import hashlib
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from comfy_nodes import _native as native  # noqa: E402

LOCK = threading.Lock()


def say(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def payload(seq: int, size: int) -> bytes:
    """The bytes job `seq` produces (the test recomputes them to check what arrived)."""
    block = hashlib.sha256(str(seq).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def test_node(prompt: dict) -> dict:
    for node in prompt.values():
        if node.get("class_type") == "TestJob":
            return node["inputs"]
    return {}


def run(client, job, out: Path, cancels: dict, worker_id: str, ignore_cancel: bool):
    job_id, token = job["job_id"], job["token"]
    spec = test_node(job["prompt"])
    seq = int(spec.get("seq", 0))
    say(event="job", job_id=job_id, seq=seq, attempt=job["attempt"])
    steps = max(1, int(spec.get("sleep_ms", 0)) // 50)
    for i in range(steps):
        if cancels.get(job_id) and not ignore_cancel:
            client.confirm_cancel(job_id, token)
            say(event="cancelled", job_id=job_id)
            return
        time.sleep(int(spec.get("sleep_ms", 0)) / 1000 / steps)
        client.progress(job_id, token, {"value": i + 1, "max": steps})
    if spec.get("fail"):
        client.fail(
            job_id, token, {"type": "execution_error", "message": f"job {seq} fails on purpose"}, retryable=False
        )
        say(event="failed", job_id=job_id, seq=seq)
        return
    path = out / f"{job_id}-{token}.bin"
    path.write_bytes(payload(seq, int(spec.get("bytes", 1000))))
    client.complete(
        job_id,
        token,
        outputs={"9": {"seq": seq, "worker": worker_id}},
        files=[{"path": str(path), "name": f"out_{seq}.bin", "mime": "application/octet-stream"}],
    )
    say(event="completed", job_id=job_id, seq=seq)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--caps", default='{"node_classes": ["TestJob"]}')
    ap.add_argument("--capacity", type=int, default=1)
    ap.add_argument("--heartbeat", type=float, default=0.2)
    ap.add_argument("--broker-key")
    ap.add_argument("--public-key")
    ap.add_argument("--secret-key")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ignore-cancel", action="store_true", help="finish every job anyway (a run that cannot stop)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    client = native.WorkerClient(
        broker=a.broker,
        worker_id=a.id,
        name=a.id,
        capacity=a.capacity,
        capabilities=json.loads(a.caps),
        heartbeat=a.heartbeat,
        liveness=3,
        broker_public_key=a.broker_key,
        public_key=a.public_key,
        secret_key=a.secret_key,
        reconnect_min=0.1,
        reconnect_max=1.0,
    )
    cancels: dict[str, bool] = {}

    def events():
        while True:
            e = client.next_event(0.2)
            if e is None:
                continue
            if e["type"] == "cancel":
                cancels[e["job_id"]] = True
            say(event=e["type"], **{k: v for k, v in e.items() if k != "type"})

    threading.Thread(target=events, daemon=True).start()
    say(event="started", id=a.id)
    while True:
        job = client.next_job(0.2)
        if job is not None:
            threading.Thread(target=run, args=(client, job, out, cancels, a.id, a.ignore_cancel), daemon=True).start()


if __name__ == "__main__":
    main()
