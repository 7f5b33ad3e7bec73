"""A big farm for the scale test of the panel (tests/browser/scale.test.mjs) and bench/panel_scale.py.

    python tests/browser/scale_farm.py fill DATA_DIR --jobs 100000
        fills DATA_DIR/store (no host may have it open) with jobs in mixed states, quickly: enqueue_many in
        chunks, whole batches cancelled in one commit each, jobs taken and completed or failed from threads (so
        their commits share syncs). Prints one JSON line: the counts per state and the seconds it took.
    python tests/browser/scale_farm.py workers BROKER --count 300
        connects that many light workers (native WorkerClients in this one process) to BROKER, each taking only
        no-op jobs (class ScaleNoOp) and completing them at once; prints "WORKERS n" once all said hello, then
        runs until stdin closes or SIGTERM.
    python tests/browser/scale_farm.py storm URL --rate 200 --seconds 5
        changes jobs through the host's HTTP API at about `rate` job changes a second: no-op jobs queued (each
        is then taken and completed by the workers: three changes) and filled pending jobs cancelled (one).
        Prints one JSON line with what it did.

The filled pending jobs name a node class nobody has (ScaleFill), so they wait (with a reason) whatever workers
join; the no-op jobs of the storm name ScaleNoOp, which only the light workers offer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from comfy_nodes import native  # noqa: E402

FILL_CLASS = "ScaleFill"
NOOP_CLASS = "ScaleNoOp"
CHUNK = 1000
# of every 20 jobs: 6 pending, 9 succeeded, 2 failed, 3 cancelled (a finished job has no running share: the
# storm makes running ones)
MIX = {"pending": 6, "succeeded": 9, "failed": 2, "cancelled": 3}


def fill_prompt(i: int) -> dict:
    return {"1": {"class_type": FILL_CLASS, "inputs": {"seed": i, "text": f"scale job {i}"}}}


def noop_prompt(i: int) -> dict:
    return {"1": {"class_type": NOOP_CLASS, "inputs": {"seed": i}}}


def fill(data_dir: str, jobs: int, threads: int = 32) -> dict:
    """Fills data_dir/store with `jobs` jobs in the MIX; returns {state: count, jobs, seconds}.

    Each chunk of 1,000 is cut into 20 batches of one state each (the state of a batch moves with the chunk), so
    the states interleave along the list. Cancelled batches are cancelled in one commit each. The jobs to finish
    are queued at priority 5, above every job left pending (1 to 3), so each take hands out one of them."""
    t0 = time.perf_counter()
    store = native.load().Store(str(Path(data_dir) / "store"))
    counts = dict.fromkeys(MIX, 0)
    plan = [state for state, share in MIX.items() for _ in range(share)]
    parts = len(plan)
    outcome: dict[str, str] = {}
    made = chunk = 0
    while made < jobs:
        n = min(CHUNK, jobs - made)
        entries, states = [], []
        for k in range(n):
            part = k * parts // n
            state = plan[(part + chunk) % parts]
            finish = state in ("succeeded", "failed")
            entries.append(
                {
                    "prompt": fill_prompt(made + k),
                    "priority": 5 if finish else 1 + (made + k) % 3,
                    "batch_id": f"scale-{chunk:04d}-{part:02d}",
                }
            )
            states.append(state)
        for r, state in zip(store.enqueue_many(entries), states, strict=True):
            counts[state] += 1
            if state in ("succeeded", "failed"):
                outcome[r["id"]] = state
        for part in range(parts):
            if plan[(part + chunk) % parts] == "cancelled":
                store.cancel_batch(f"scale-{chunk:04d}-{part:02d}", "cancelled by the scale fill")
        made += n
        chunk += 1

    left = {"n": len(outcome)}
    lock = threading.Lock()

    def finisher(w: int) -> None:
        while True:
            with lock:
                if left["n"] <= 0:
                    return
                left["n"] -= 1
            lease = store.take(f"fill-{w}", lease=600, ignore_pause=True)
            if lease is None:
                raise RuntimeError("the fill ran out of jobs to finish")
            job_id, token = lease["job_id"], lease["token"]
            if outcome.get(job_id) == "succeeded":
                store.complete(job_id, token, outputs={"1": {"text": ["ok"]}})
            elif outcome.get(job_id) == "failed":
                error = {
                    "type": "execution_error",
                    "message": f"ScaleFill failed on purpose ({job_id})",
                    "node_id": "1",
                }
                store.fail(job_id, token, error, retryable=False)
            else:
                raise RuntimeError(f"the fill took {job_id}, a job meant to stay pending")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(finisher, range(threads)))
    store.checkpoint()
    store.close()
    return {**counts, "jobs": jobs, "seconds": round(time.perf_counter() - t0, 2)}


def run_workers(broker: str, count: int) -> None:
    """`count` light workers on one process: one thread each, blocked in next_job (the GIL released)."""
    n = native.load()
    caps = {"node_classes": [NOOP_CLASS], "combos": {}}
    stop = threading.Event()
    clients = [
        n.WorkerClient(
            broker=broker,
            worker_id=f"scale-w{i:03d}",
            name=f"scale-gpu-{i:03d}",
            capabilities=caps,
            info={
                "hostname": f"rack{i // 40}-node{i % 40}",
                "os": "Linux",
                "ram_total": 64 << 30,
                "devices": [{"name": "NVIDIA L40S", "type": "cuda", "vram_total": 48 << 30, "vram_free": 40 << 30}],
            },
            plugin_version="scale",
            comfyui_version="0.8.0",
            heartbeat=1.0,
        )
        for i in range(count)
    ]

    def serve(wc) -> None:
        while not stop.is_set():
            try:
                job = wc.next_job(timeout=0.5)
                if job is not None:
                    wc.complete(job["job_id"], job["token"], outputs={})
                while wc.next_event(timeout=0) is not None:
                    pass
            except Exception as e:  # noqa: BLE001 - one worker's trouble is reported, the others go on
                print(f"worker: {e}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=serve, args=(wc,), daemon=True) for wc in clients]
    for t in threads:
        t.start()
    end = time.monotonic() + 60
    while sum(1 for wc in clients if wc.state().get("connected")) < count:
        if time.monotonic() > end:
            raise SystemExit(f"only {sum(1 for wc in clients if wc.state().get('connected'))} of {count} connected")
        time.sleep(0.1)
    print(f"WORKERS {count}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    for t in threads:
        t.join(timeout=2)
    for wc in clients:
        wc.close(bye=True)


def _call(url: str, method: str = "GET", body=None, token: str = "") -> dict:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    if method == "POST" and body is None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def storm(url: str, rate: float, seconds: float, token: str = "") -> dict:
    """About `rate` job changes a second for `seconds`: half from no-op jobs queued (three changes each once
    the light workers ran them: pending, running, succeeded), half from cancelling the newest filled pending
    jobs (the ones a panel shows first). Returns what was done and the achieved rate."""
    pending = [
        j["id"]
        for j in _call(f"{url}/comfymq/jobs?state=pending&limit=1000", token=token)["jobs"]
        if j.get("batch_id", "").startswith("scale-")
    ]
    tick = 0.05
    cancels_per_tick = rate / 2 * tick
    noop_per_tick = rate / 2 / 3 * tick
    done = {"queued": 0, "cancelled": 0, "errors": 0}
    lock = threading.Lock()

    def cancel(job_id: str) -> None:
        try:
            _call(f"{url}/comfymq/jobs/{job_id}/cancel", "POST", token=token)
            key = "cancelled"
        except Exception:  # noqa: BLE001 - counted
            key = "errors"
        with lock:
            done[key] += 1

    def queue(k: int, seed: int) -> None:
        try:
            _call(f"{url}/comfymq/jobs", "POST", {"prompt": noop_prompt(seed), "count": k}, token=token)
            key, n = "queued", k
        except Exception:  # noqa: BLE001 - counted
            key, n = "errors", 1
        with lock:
            done[key] += n

    t0 = time.monotonic()
    owed_cancels = owed_noops = 0.0
    pool = ThreadPoolExecutor(8)
    ticks = 0
    while time.monotonic() - t0 < seconds:
        owed_cancels += cancels_per_tick
        owed_noops += noop_per_tick
        while owed_cancels >= 1 and pending:
            pool.submit(cancel, pending.pop(0))
            owed_cancels -= 1
        if owed_noops >= 1:
            k = int(owed_noops)
            pool.submit(queue, k, ticks)
            owed_noops -= k
        ticks += 1
        time.sleep(max(0.0, t0 + ticks * tick - time.monotonic()))
    pool.shutdown(wait=True, cancel_futures=True)  # what the host did not take in time is not sent
    took = time.monotonic() - t0
    changes = done["cancelled"] + 3 * done["queued"]
    return {**done, "seconds": round(took, 2), "changes": changes, "changes_per_s": round(changes / took, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("data_dir")
    f.add_argument("--jobs", type=int, default=100_000)
    w = sub.add_parser("workers")
    w.add_argument("broker")
    w.add_argument("--count", type=int, default=300)
    s = sub.add_parser("storm")
    s.add_argument("url")
    s.add_argument("--rate", type=float, default=200)
    s.add_argument("--seconds", type=float, default=5)
    s.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN", ""))
    args = ap.parse_args()
    if args.cmd == "fill":
        print(json.dumps(fill(args.data_dir, args.jobs)), flush=True)
    elif args.cmd == "workers":
        run_workers(args.broker, args.count)
    else:
        print(json.dumps(storm(args.url, args.rate, args.seconds, args.token)), flush=True)


if __name__ == "__main__":
    main()
