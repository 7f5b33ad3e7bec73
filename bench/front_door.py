"""What the HTTP front door costs per job: POST /comfymq/tasks on a real standalone host (`python -m comfy_nodes
host`, its store on a temp dir, every check of a real request: site rules, token book, owners, input references,
limits, the durable commit) against a bare aiohttp handler that only parses the same JSON body and answers, measured
in the same run, by the same client, at 1, 16 and 64 concurrent clients. One JSON line per figure, as `make bench`
prints them; never asserts (target: the host at >= 0.8x the bare handler at each concurrency, issue 24).

    .venv/bin/python bench/front_door.py [--seconds 2] [--rounds 3] [--clients 1,16,64] [--compare DIR]

--compare DIR also runs a host from another checkout of this repository (its comfy_nodes, with this one's native
module when it has none), measured in the same rounds: figures before and after a change (rows *_compare).

Processes (each its own interpreter, the same Python and asyncio's default event loop):
  host     python -m comfy_nodes host (with its broker on loopback, no workers: what is measured is the front door and
           the store's commit, not a run)
  bare     this file --serve bare: aiohttp, one route, json.loads of the body and a small JSON answer, access log off
           as on the host
  canned   this file --serve canned: a raw asyncio server answering each request with fixed bytes, no HTTP parsing;
           the client against it is the client's own ceiling (figure client_ceiling_per_s_<n>c)
  client   this file --client: n keep-alive connections on raw asyncio sockets, one request in flight on each, the
           request bytes built once; counts answers in a timed window, checks each is a 200

Each round measures bare and host back to back (their order alternating by round), so noise from other work on the
machine lands on both; a figure is the median of the rounds (best in `best`, every round in `rounds`). After the run
the host's stats must count every job it acknowledged (jobs_committed): a 2xx means committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
PATH = "/comfymq/tasks"
BODY = json.dumps({"prompt": PROMPT}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the servers ------------------------------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """The baseline: aiohttp with one handler that parses the JSON body and answers."""
    from aiohttp import web

    answered = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal answered
        body = json.loads(await request.read())
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": "prompt is required"}, status=400)
        answered += 1
        return web.json_response({"status": "queued", "task": {"id": f"{answered:016x}", "state": "pending"}})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/comfymq/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_canned(port: int) -> None:
    """The client's ceiling: answers each request (headers plus Content-Length bytes) with fixed bytes."""
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n" + b'{"status": "queued"}'
    )

    class Canned(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, bytearray()

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                i = head.find(b"content-length:")
                n = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
                if len(self.buf) < end + 4 + n:
                    return
                del self.buf[: end + 4 + n]
                self.t.write(answer)

    async def main():
        server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


# ---- the client -------------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time."""

    def __init__(self, run: "Run"):
        self.run, self.buf, self.sent = run, bytearray(), 0.0

    def connection_made(self, transport):
        self.t = transport
        self.send()

    def send(self):
        if self.run.stopping:
            self.run.idle()
            return
        self.sent = time.perf_counter()
        self.t.write(self.run.request)

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end])
        i = head.lower().find(b"content-length:")
        n = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
        if len(self.buf) < end + 4 + n:
            return
        status = head[9:12]
        body = bytes(self.buf[end + 4 : end + 4 + n])
        del self.buf[: end + 4 + n]
        self.run.answered(status, body, time.perf_counter() - self.sent)
        self.send()

    def connection_lost(self, exc):
        if not self.run.stopping:
            self.run.failed(f"connection lost: {exc}")
            self.run.idle()


class Run:
    def __init__(self, request: bytes, conns: int):
        self.request, self.conns = request, conns
        self.stopping = False
        self.counting = False
        self.ok = self.counted = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.done = asyncio.get_running_loop().create_future()
        self.idle_conns = 0

    def answered(self, status: bytes, body: bytes, seconds: float):
        if status[:1] != b"2":
            self.failed(f"HTTP {status.decode()}: {body[:200].decode(errors='replace')}")
            return
        self.ok += 1
        if self.counting:
            self.counted += 1
            self.latencies.append(seconds)

    def failed(self, why: str):
        if len(self.errors) < 5:
            self.errors.append(why)

    def idle(self):
        self.idle_conns += 1
        if self.idle_conns >= self.conns and not self.done.done():
            self.done.set_result(None)


async def drive(port: int, conns: int, seconds: float, warmup: float) -> dict:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    run = Run(head + BODY, conns)
    transports = []
    for _ in range(conns):
        t, _ = await loop.create_connection(lambda: Conn(run), "127.0.0.1", port)
        transports.append(t)
    await asyncio.sleep(warmup)
    run.counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    run.counting = False
    took = time.perf_counter() - t0
    run.stopping = True
    try:
        await asyncio.wait_for(run.done, 30)
    finally:
        for t in transports:
            t.close()
    lat = sorted(run.latencies)
    return {
        "rate": run.counted / took,
        "ok": run.ok,
        "errors": run.errors,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else None,
    }


def client_main(port: int, conns: int, seconds: float, warmup: float) -> None:
    print(json.dumps(asyncio.run(drive(port, conns, seconds, warmup))), flush=True)


# ---- the run ----------------------------------------------------------------------------------------------


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_healthy(port: int, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"front_door bench: the {what} server exited ({proc.returncode})")
        try:
            http_json(f"http://127.0.0.1:{port}/comfymq/health")
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"front_door bench: the {what} server did not start")


def wait_listening(port: int) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("front_door bench: the canned server did not start")


def start_host(repo: Path, data: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfy_nodes", "host", "--data-dir", str(data)]
        + ["--port", str(port), "--workers-bind", f"tcp://127.0.0.1:{free_port()}"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    return proc, port


def measure(port: int, conns: int, seconds: float, warmup: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(port), "--conns", str(conns)]
        + ["--seconds", str(seconds), "--warmup", str(warmup)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def emit(metric: str, value, unit: str, baseline: str | None = None, baseline_value=None, **more) -> None:
    row = {"bench": "front_door", "metric": metric, "value": round(value, 3), "unit": unit}
    if baseline is not None:
        row.update(baseline=baseline, baseline_value=round(baseline_value, 3))
        row["ratio"] = round(value / baseline_value, 3) if baseline_value else None
    row.update(more)
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one measured window")
    ap.add_argument("--warmup", type=float, default=0.3, help="seconds of each window's start not counted")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--serve", choices=("bare", "canned"))
    ap.add_argument("--client", type=int, metavar="PORT")
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--port", type=int)
    ap.add_argument("--compare", type=Path, metavar="DIR", help="also measure the host of this checkout")
    args = ap.parse_args()
    if args.serve == "bare":
        return serve_bare(args.port)
    if args.serve == "canned":
        return serve_canned(args.port)
    if args.client:
        return client_main(args.client, args.conns, args.seconds, args.warmup)

    clients = [int(c) for c in args.clients.split(",")]
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="comfymq-bench-front-") as d:
        tmp = Path(d)
        try:
            bare_port, canned_port = free_port(), free_port()
            host, host_port = start_host(REPO, tmp / "host", tmp / "host.log")
            procs.append(host)
            hosts = {"host": host_port}
            if args.compare:
                if not list((args.compare / "comfy_nodes").glob("_native*.so")):
                    for so in (REPO / "comfy_nodes").glob("_native*.so"):
                        (args.compare / "comfy_nodes" / so.name).symlink_to(so)
                other, hosts["compare"] = start_host(args.compare, tmp / "compare", tmp / "compare.log")
                procs.append(other)
                wait_healthy(hosts["compare"], other, "compared host")
            for kind, port in (("bare", bare_port), ("canned", canned_port)):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--serve", kind, "--port", str(port)],
                        stdout=subprocess.DEVNULL,
                        stderr=open(tmp / f"{kind}.log", "w"),
                    )
                )
            wait_healthy(host_port, host, "host")
            wait_healthy(bare_port, procs[-2], "bare")
            wait_listening(canned_port)
            acknowledged = 0
            for conns in clients:
                figures: dict[str, list[dict]] = {k: [] for k in ("bare", *hosts, "canned")}
                for r in range(args.rounds):
                    order = [("bare", bare_port), *hosts.items()]
                    if r % 2:
                        order.reverse()
                    for kind, port in order + [("canned", canned_port)]:
                        m = measure(port, conns, args.seconds, args.warmup)
                        if m["errors"]:
                            raise SystemExit(f"front_door bench: {kind} at {conns} clients: {m['errors']}")
                        if kind == "host":
                            acknowledged += m["ok"]
                        figures[kind].append(m)
                med = {k: statistics.median(m["rate"] for m in v) for k, v in figures.items()}
                best = {k: max(m["rate"] for m in v) for k, v in figures.items()}
                rounds = {k: [round(m["rate"]) for m in v] for k, v in figures.items()}
                p50 = statistics.median(m["p50_ms"] for m in figures["host"])
                p50_bare = statistics.median(m["p50_ms"] for m in figures["bare"])
                emit(f"bare_json_per_s_{conns}c", med["bare"], "req/s", best=round(best["bare"]), rounds=rounds["bare"])
                emit(
                    f"tasks_submit_per_s_{conns}c",
                    med["host"],
                    "jobs/s",
                    f"bare_json_per_s_{conns}c",
                    med["bare"],
                    target=">= 0.8",
                    best=round(best["host"]),
                    best_ratio=round(best["host"] / best["bare"], 3),
                    rounds=rounds["host"],
                )
                emit(f"tasks_submit_p50_ms_{conns}c", p50, "ms", f"bare_json_p50_ms_{conns}c", p50_bare)
                if "compare" in figures:
                    emit(
                        f"tasks_submit_per_s_{conns}c_compare",
                        med["compare"],
                        "jobs/s",
                        f"bare_json_per_s_{conns}c",
                        med["bare"],
                        checkout=str(args.compare),
                        best=round(best["compare"]),
                        rounds=rounds["compare"],
                    )
                emit(
                    f"client_ceiling_per_s_{conns}c",
                    med["canned"],
                    "req/s",
                    f"bare_json_per_s_{conns}c",
                    med["bare"],
                    rounds=rounds["canned"],
                )
            stats = http_json(f"http://127.0.0.1:{host_port}/comfymq/stats")
            emit("jobs_committed", stats["total"], "jobs", "jobs_acknowledged", acknowledged)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
