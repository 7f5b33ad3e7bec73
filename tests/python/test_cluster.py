"""The cluster with real processes on 127.0.0.1: a host (`python -m comfy_nodes host`: store + broker + HTTP)
and worker processes (cluster_worker.py, driving the real WorkerClient). Jobs are enqueued over HTTP, workers
are killed and frozen, the host is killed and restarted; every job must end with exactly one recorded result
whose files are the bytes a worker sent."""

import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from comfy_nodes import _native as native

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("cluster_worker.py")
HEARTBEAT = 0.2

sys.path.insert(0, str(Path(__file__).parent))
from cluster_worker import payload  # noqa: E402
from conftest import wait_for  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_prompt(seq, size=2000, sleep_ms=0, ckpt=None):
    p = {"1": {"class_type": "TestJob", "inputs": {"seq": seq, "bytes": size, "sleep_ms": sleep_ms}}}
    if ckpt:
        p["2"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}
    return p


class Host:
    def __init__(self, root: Path, curve_secret=None, allowed=()):
        self.root = root
        self.http_port = free_port()
        self.broker_port = free_port()
        self.curve_secret = curve_secret
        self.allowed = list(allowed)
        self.proc = None
        self.log = root / "host.log"

    @property
    def endpoint(self):
        return f"tcp://127.0.0.1:{self.broker_port}"

    def start(self):
        args = [
            sys.executable,
            "-m",
            "comfy_nodes",
            "host",
            "--data-dir",
            str(self.root / "data"),
            "--port",
            str(self.http_port),
            "--workers-bind",
            self.endpoint,
            "--heartbeat",
            str(HEARTBEAT),
            "--retention-days",
            "0",
        ]
        if self.curve_secret:
            # "=" form: a Z85 key may start with "-", which would read as an option
            args.append(f"--curve-secret-key={self.curve_secret}")
            args += [f"--allow-worker-key={k}" for k in self.allowed]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_for(self._healthy, 30, "the host to answer /health")
        return self

    def _healthy(self):
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def enqueue(self, prompt, **meta):
        body = json.dumps({"prompt": prompt, **({"metadata": meta} if meta else {})}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tasks", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["task"]["id"]

    def task(self, job_id):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/tasks/{job_id}", timeout=10) as r:
            return json.loads(r.read())["task"]

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def open_store(self):
        """The store itself (the host must be stopped), for what the HTTP view does not show."""
        return native.Store(str(self.root / "data" / "store"), background=False)

    def artifact(self, rel):
        return (self.root / "data" / "artifacts" / rel).read_bytes()


class Worker:
    def __init__(self, root: Path, host: Host, wid, caps=None, capacity=1, keys=None, ignore_cancel=False):
        self.id = wid
        args = [
            sys.executable,
            str(WORKER),
            "--broker",
            host.endpoint,
            "--id",
            wid,
            "--capacity",
            str(capacity),
            "--heartbeat",
            str(HEARTBEAT),
            "--out",
            str(root / f"out-{wid}"),
        ]
        if caps is not None:
            args += ["--caps", json.dumps(caps)]
        if keys:  # "=" form: a Z85 key may start with "-"
            args += [f"--broker-key={keys[0]}", f"--public-key={keys[1]}", f"--secret-key={keys[2]}"]
        if ignore_cancel:
            args.append("--ignore-cancel")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "output", "text": line.decode(errors="replace")})

    def seen(self, event, **match):
        return [e for e in self.events if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    made = {"hosts": [], "workers": []}

    def host(**kw):
        h = Host(tmp_path, **kw).start()
        made["hosts"].append(h)
        return h

    def worker(h, wid, **kw):
        w = Worker(tmp_path, h, wid, **kw)
        made["workers"].append(w)
        return w

    yield host, worker
    for w in made["workers"]:
        w.stop()
    for h in made["hosts"]:
        h.stop()


def check_exactly_once(host: Host, ids_by_seq: dict, sizes: dict):
    """After the host stopped: every job succeeded once, its one set of files is what a worker sent."""
    with host.open_store() as store:
        for seq, job_id in ids_by_seq.items():
            job = store.get(job_id, with_prompt=False)
            assert job["state"] == "succeeded", (seq, job["state"], job["error"])
            wins = [h for h in job["history"] if h["outcome"] == "succeeded"]
            assert len(wins) == 1, (seq, job["history"])
            assert len(job["artifacts"]) == 1, (seq, job["artifacts"])
            art = job["artifacts"][0]
            expected = payload(seq, sizes[seq])
            assert art["sha256"] == hashlib.sha256(expected).hexdigest()
            assert host.artifact(art["path"]) == expected


def test_two_hundred_jobs_run_exactly_once_across_workers(cluster):
    host_, worker = cluster
    host = host_()
    for i in range(3):
        worker(host, f"w{i}", capacity=2)
    rng = random.Random(1)
    sizes = {seq: (3 * (1 << 20) + 17 if seq % 25 == 0 else rng.randint(0, 5000)) for seq in range(200)}
    ids = {seq: host.enqueue(job_prompt(seq, sizes[seq], sleep_ms=rng.choice([0, 0, 20]))) for seq in range(200)}
    wait_for(lambda: all(host.task(i)["state"] == "succeeded" for i in ids.values()), 120, "200 jobs to finish")
    host.stop()
    check_exactly_once(host, ids, sizes)
    print("[ cluster ] 200 jobs, 3 workers: all succeeded exactly once, files verified")


def test_a_killed_worker_s_job_finishes_on_another_recorded_once(cluster):
    host_, worker = cluster
    host = host_()
    a = worker(host, "doomed")
    job = host.enqueue(job_prompt(1, 4000, sleep_ms=3000))
    wait_for(lambda: a.seen("job"), 20, "the first worker to start the job")
    b = worker(host, "survivor")
    a.signal(signal.SIGKILL)
    wait_for(lambda: host.task(job)["state"] == "succeeded", 30, "the job to finish elsewhere")
    task = host.task(job)
    assert task["worker"] == "survivor"
    assert task["result"]["outputs"]["9"]["worker"] == "survivor"
    host.stop()
    with host.open_store() as store:
        j = store.get(job, with_prompt=False)
        assert [h["outcome"] for h in j["history"]] == ["lease_lost", "succeeded"]
        assert len(j["artifacts"]) == 1
    del b


def test_a_frozen_worker_s_late_result_is_refused(cluster):
    host_, worker = cluster
    host = host_()
    slow = worker(host, "frozen", ignore_cancel=True)  # it will finish and send its result whatever it is told
    job = host.enqueue(job_prompt(2, 3000, sleep_ms=1000))
    wait_for(lambda: slow.seen("job"), 20, "the slow worker to start the job")
    slow.signal(signal.SIGSTOP)  # frozen for longer than its lease
    fast = worker(host, "fast")
    wait_for(lambda: host.task(job)["state"] == "succeeded", 30, "the job to finish on the other worker")
    slow.signal(signal.SIGCONT)
    wait_for(lambda: slow.seen("completed", job_id=job), 30, "the frozen worker to finish its (stale) run")
    wait_for(lambda: slow.seen("nack", job_id=job), 30, "the frozen worker's late result to be refused")
    task = host.task(job)
    assert task["worker"] == "fast"
    assert task["result"]["outputs"]["9"]["worker"] == "fast"
    assert len(task["result"]["artifacts"]) == 1
    del fast


def test_a_killed_broker_restarts_on_its_store_and_workers_come_back(cluster):
    host_, worker = cluster
    host = host_()
    workers = [worker(host, f"w{i}", capacity=2) for i in range(2)]
    sizes = {seq: 1000 + seq for seq in range(60)}
    ids = {seq: host.enqueue(job_prompt(seq, sizes[seq], sleep_ms=100)) for seq in range(60)}  # acknowledged
    wait_for(lambda: sum(host.task(i)["state"] == "succeeded" for i in ids.values()) >= 15, 60, "some jobs to finish")
    host.kill(signal.SIGKILL)
    time.sleep(0.5)
    host.start()  # same data, same ports
    wait_for(lambda: all(host.task(i)["state"] == "succeeded" for i in ids.values()), 120, "all jobs to finish")
    assert all(w.proc.poll() is None for w in workers), "workers must survive the broker restart"
    assert all(w.seen("connected") and len(w.seen("connected")) >= 2 for w in workers), "each worker reconnected"
    host.stop()
    check_exactly_once(host, ids, sizes)


def test_jobs_go_where_the_model_is_and_waiting_jobs_say_why(cluster):
    host_, worker = cluster
    host = host_()
    base = {"node_classes": ["TestJob", "CheckpointLoaderSimple"]}
    worker(host, "sd15-box", caps={**base, "combos": {"CheckpointLoaderSimple.ckpt_name": ["sd15.safetensors"]}})
    worker(host, "sdxl-box", caps={**base, "combos": {"CheckpointLoaderSimple.ckpt_name": ["sdxl.safetensors"]}})
    sdxl_job = host.enqueue(job_prompt(10, ckpt="sdxl.safetensors"))
    wait_for(lambda: host.task(sdxl_job)["state"] == "succeeded", 30, "the sdxl job")
    assert host.task(sdxl_job)["worker"] == "sdxl-box"
    flux_job = host.enqueue(job_prompt(11, ckpt="flux.safetensors"))
    # (both workers' reasons: the first answer may come while the broker still takes the job's requirements in)
    why = wait_for(lambda: len(w := host.task(flux_job).get("waiting") or []) >= 2 and w, 20, "the reasons a job waits")
    assert sorted(why) == [
        "worker sd15-box: missing checkpoint flux.safetensors",
        "worker sdxl-box: missing checkpoint flux.safetensors",
    ]
    worker(host, "flux-box", caps={**base, "combos": {"CheckpointLoaderSimple.ckpt_name": ["flux.safetensors"]}})
    wait_for(lambda: host.task(flux_job)["state"] == "succeeded", 30, "the flux job once a worker has the model")
    assert host.task(flux_job)["worker"] == "flux-box"


@pytest.mark.skipif(not native.curve_available(), reason="libzmq without CURVE")
def test_a_worker_with_the_wrong_key_never_gets_a_job(cluster):
    host_, worker = cluster
    broker_pub, broker_sec = native.curve_keypair()
    good_pub, good_sec = native.curve_keypair()
    bad_pub, bad_sec = native.curve_keypair()
    host = host_(curve_secret=broker_sec, allowed=[good_pub])
    intruder = worker(host, "intruder", keys=(broker_pub, bad_pub, bad_sec))
    trusted = worker(host, "trusted", keys=(broker_pub, good_pub, good_sec))
    ids = [host.enqueue(job_prompt(100 + i)) for i in range(10)]
    try:
        wait_for(lambda: all(host.task(i)["state"] == "succeeded" for i in ids), 30, "jobs on the trusted worker")
    except AssertionError:
        print("trusted:", trusted.events, trusted.proc.poll(), "intruder:", intruder.events, intruder.proc.poll())
        raise
    assert all(host.task(i)["worker"] == "trusted" for i in ids)
    assert not intruder.seen("job"), "no job may reach a worker with a key the broker does not allow"
    assert not intruder.seen("connected")
    try:
        wait_for(lambda: "unknown CURVE key" in host.log.read_text(), 10, "the host to log the refused key")
    except AssertionError:
        print("intruder:", intruder.events, "alive:", intruder.proc.poll())
        raise
    del trusted


def test_garbage_frames_do_not_stop_the_broker(cluster):
    zmq = pytest.importorskip("zmq")
    host_, worker = cluster
    host = host_()
    stop = threading.Event()

    def spray():
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(host.endpoint)
        rng = random.Random(3)
        sent = 0
        while not stop.is_set():
            frames = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.3:
                frames[0] = b"CMQP\x01" + bytes([rng.choice([1, 5, 8, 66])])
            s.send_multipart(frames)
            sent += 1
            time.sleep(0.001)
        s.close()
        ctx.term()

    sprayer = threading.Thread(target=spray, daemon=True)
    sprayer.start()
    worker(host, "good")
    ids = [host.enqueue(job_prompt(200 + i, 5000)) for i in range(20)]
    try:
        wait_for(lambda: all(host.task(i)["state"] == "succeeded" for i in ids), 60, "jobs amid garbage")
    finally:
        stop.set()
        sprayer.join(timeout=5)
    assert host.proc.poll() is None
