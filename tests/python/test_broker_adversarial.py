"""An attacker on the broker's port of a running host (real processes on 127.0.0.1): forged lease messages for
jobs an honest worker runs, HELLOs that take the honest worker's id, its own results replayed after they were
recorded or after the job was cancelled, and a seeded loop of mutated messages from several connections.

Every attack is counted by what it changed: a job the attacker did not hold that ended, moved or took its
outputs; an honest run that lost its lease or an attempt; the host dying or refusing its honest worker. Every
count must be 0; they are printed (`pytest -s`) for the record.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
import urllib.request
from pathlib import Path

import pytest
import zmq
from conftest import wait_for
from test_cluster import Host, Worker, cluster, job_prompt  # noqa: F401 - cluster is a fixture

pytestmark = pytest.mark.subprocess

# ---- CMQP/1 (docs/protocol.md), written by hand: what an attacker would write ---------------------------------

HELLO, READY, HEARTBEAT, PROGRESS, RESULT, FAIL, CANCELLED, CHUNK, BYE, CAPS = range(1, 11)
WELCOME, REFUSE, JOB, PING, CANCEL, ACK, NACK, CHUNK_ACK = range(64, 72)


def text(s) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<I", len(b)) + b


def frames(cmd: int, body: bytes = b"", data: bytes | None = None) -> list[bytes]:
    out = [b"CMQP" + bytes([1, cmd]), body]
    return out + [data] if data is not None else out


def hello(worker_id: str, caps: dict, held=()) -> list[bytes]:
    body = (
        text(worker_id)
        + text(worker_id)
        + text("0")
        + text("0")
        + struct.pack("<I", 1)
        + text("{}")
        + text(json.dumps(caps))
        + struct.pack("<I", len(held))
        + b"".join(struct.pack("<QQ", j, t) for j, t in held)
    )
    return frames(HELLO, body)


def lease_message(cmd: int, job: int, token: int, marker: str = "forged") -> list[bytes]:
    head = struct.pack("<QQ", job, token)
    if cmd == RESULT:
        return frames(RESULT, head + text(json.dumps({"9": {marker: True}})) + struct.pack("<I", 0))
    if cmd == FAIL:
        return frames(FAIL, head + b"\x00" + text(json.dumps({"type": marker, "message": "the attacker's error"})))
    if cmd == PROGRESS:
        return frames(PROGRESS, head + text(json.dumps({"node": marker})))
    if cmd == CANCELLED:
        return frames(CANCELLED, head)
    data = b"evil bytes"
    body = (
        head
        + struct.pack("<I", 0)
        + text("evil.png")
        + struct.pack("<QQ", len(data), 0)
        + struct.pack("<I", 0)
        + b"\x01"
        + text("0" * 64)
    )
    return frames(CHUNK, body, data)


def decode(parts: list[bytes]) -> dict:
    if len(parts) < 2 or len(parts[0]) != 6:
        return {"cmd": None}
    cmd, body = parts[0][5], parts[1]
    m = {"cmd": cmd}
    if cmd == REFUSE:
        (n,) = struct.unpack_from("<I", body)
        m["reason"] = body[4 : 4 + n].decode(errors="replace")
    elif cmd in (JOB, ACK, NACK, CANCEL):
        m["job"], m["token"] = struct.unpack_from("<QQ", body)
        if cmd == ACK:
            m["kind"] = body[16]
    return m


class Attacker:
    """One DEALER connection to the broker."""

    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.s = ctx.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(endpoint)

    def send(self, parts: list[bytes]) -> None:
        self.s.send_multipart(parts)

    def expect(self, cmd: int, timeout: float = 3.0) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.s.poll(50):
                m = decode(self.s.recv_multipart())
                if m["cmd"] == cmd:
                    return m
        return None

    def close(self):
        self.s.close()


def hex_id(job_id: str) -> int:
    return int(job_id, 16)


def get(host: Host, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{host.http_port}{path}", timeout=10) as r:
        return json.loads(r.read())


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_forged_replayed_and_mutated_broker_messages_change_nothing(cluster, tmp_path):  # noqa: F811 - the fixture
    make_host, make_worker = cluster
    host = make_host()
    make_worker(host, "honest", capacity=2)
    ctx = zmq.Context()
    through = {
        "foreign results recorded": 0,
        "honest runs disturbed": 0,
        "attempts taken": 0,
        "evictions": 0,
        "replays recorded": 0,
        "host crashes": 0,
        "honest jobs not finished": 0,
    }
    try:
        # Two long honest runs the attacker goes after.
        victims = [host.enqueue(job_prompt(seq, sleep_ms=6000)) for seq in (1, 2)]
        wait_for(lambda: all(host.task(v)["state"] == "running" for v in victims), 30, "the honest runs")

        # 1. Lease messages for the honest worker's jobs, with guessed tokens (small counters, random values).
        evil = Attacker(ctx, host.endpoint)
        evil.send(hello("attacker", {"node_classes": ["AttackerJob"]}))
        assert evil.expect(WELCOME) is not None
        rng = random.Random(19)
        guesses = list(range(1, 300)) + [rng.getrandbits(64) for _ in range(300)]
        for victim in victims:
            for token in guesses:
                for cmd in (RESULT, FAIL, PROGRESS, CANCELLED, CHUNK):
                    evil.send(lease_message(cmd, hex_id(victim), token))

        rss_before = rss_kb(host.proc.pid)
        # 1b. One connection naming ever new worker ids (each refused: the connection is someone's already), and
        #     connections with large capabilities: neither may grow the host's memory without a bound.
        flooder = Attacker(ctx, host.endpoint)
        flooder.send(hello("flooder", {"node_classes": ["AttackerJob"]}))
        assert flooder.expect(WELCOME) is not None
        for i in range(50000):
            flooder.send(hello(f"id-{i}-" + "x" * 200, {"node_classes": ["AttackerJob"]}))
        big = [Attacker(ctx, host.endpoint) for _ in range(30)]
        for i, c in enumerate(big):  # 3.7 MB of distinct capabilities each: the budget (64 MiB) takes ~17
            c.send(hello(f"big-{i}", {"node_classes": [f"{i}-{k}-" + "n" * 40 for k in range(76000)]}))
        answers: dict = {}
        end = time.monotonic() + 30
        while len(answers) < len(big) and time.monotonic() < end:
            for i, c in enumerate(big):  # heartbeats keep the welcomed ones online (and their sets held)
                c.send(frames(HEARTBEAT))
                while i not in answers and c.s.poll(0):
                    m = decode(c.s.recv_multipart())
                    if m["cmd"] in (WELCOME, REFUSE):
                        answers[i] = m["cmd"]
            time.sleep(0.05)
        counts = {cmd: list(answers.values()).count(cmd) for cmd in (WELCOME, REFUSE)}
        assert len(answers) == len(big) and counts[REFUSE] >= 5, counts  # (some time out first: freed)
        if flooder.expect(REFUSE, 10) is None:
            through["evictions"] += 1  # (the flood was not even answered)
        # 2. HELLOs that take the honest worker's id from other connections (they used to evict it and count an
        #    attempt on each of its jobs: four of them dead-lettered a job).
        for _ in range(10):
            thief = Attacker(ctx, host.endpoint)
            thief.send(hello("honest", {"node_classes": ["TestJob"]}))
            answer = thief.expect(REFUSE)
            if answer is None:
                through["evictions"] += 1
            thief.close()

        # 3. The attacker's own results, replayed: after they were recorded, and after its job was cancelled.
        #    (A new connection: the first one sent no heartbeats meanwhile, so the broker let it go.)
        #    On a loaded machine the broker may not have let the first one go yet: it answers "busy:", try again.
        welcomed = None
        end = time.monotonic() + 30
        while welcomed is None and time.monotonic() < end:
            evil = Attacker(ctx, host.endpoint)
            evil.send(hello("attacker", {"node_classes": ["AttackerJob"]}))
            welcomed = evil.expect(WELCOME)
            if welcomed is None:
                evil.close()
                time.sleep(0.5)
        assert welcomed is not None
        evil.send(frames(READY, struct.pack("<I", 1)))
        own = host.enqueue({"1": {"class_type": "AttackerJob", "inputs": {"n": 1}}})
        job = evil.expect(JOB, 10)
        assert job is not None and job["job"] == hex_id(own)
        evil.send(lease_message(RESULT, job["job"], job["token"], marker="first"))
        assert evil.expect(ACK, 10)["kind"] == 1
        for marker in ("second", "third"):
            evil.send(lease_message(RESULT, job["job"], job["token"], marker=marker))
            evil.send(lease_message(FAIL, job["job"], job["token"], marker=marker))
        evil.send(frames(READY, struct.pack("<I", 1)))
        cancelled = host.enqueue({"1": {"class_type": "AttackerJob", "inputs": {"n": 2}}})
        job2 = evil.expect(JOB, 10)
        assert job2 is not None
        req = urllib.request.Request(
            f"http://127.0.0.1:{host.http_port}/comfymq/tasks/{cancelled}/cancel",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=10).read()
        evil.send(lease_message(RESULT, job2["job"], job2["token"], marker="after-cancel"))

        # 4. A seeded mutation loop: valid messages of every kind, byte-flipped, cut, grown, split and joined, from
        #    several connections, some of which said HELLO first.
        seeds = [
            hello("mut", {"node_classes": ["TestJob"]}),
            frames(READY, struct.pack("<I", 3)),
            frames(HEARTBEAT),
            lease_message(RESULT, hex_id(victims[0]), 7),
            lease_message(FAIL, hex_id(victims[1]), 9),
            lease_message(PROGRESS, hex_id(victims[0]), 1),
            lease_message(CHUNK, hex_id(victims[1]), 3),
            lease_message(CANCELLED, hex_id(victims[0]), 5),
            frames(BYE),
            frames(CAPS, text('{"node_classes": []}')),
        ]
        conns = [Attacker(ctx, host.endpoint) for _ in range(6)]
        for c in conns[:3]:
            c.send(hello(f"mut-{id(c)}", {"node_classes": ["Nothing"]}))
        mrng = random.Random(2026)
        sent = 0
        for _ in range(4000):
            parts = [bytearray(p) for p in mrng.choice(seeds)]
            for _ in range(mrng.randint(1, 4)):
                k = mrng.randrange(len(parts))
                p = parts[k]
                op = mrng.randrange(6)
                if op == 0 and p:
                    p[mrng.randrange(len(p))] ^= 1 << mrng.randrange(8)
                elif op == 1 and p:
                    del p[mrng.randrange(len(p)) :]
                elif op == 2:
                    p.extend(os.urandom(mrng.randint(1, 64)))
                elif op == 3 and len(p) >= 4:
                    at = mrng.randrange(len(p) - 3)
                    p[at : at + 4] = struct.pack("<I", mrng.choice([0, 1, 2**31, 2**32 - 1, mrng.getrandbits(32)]))
                elif op == 4:
                    parts.append(bytearray(os.urandom(mrng.randint(0, 32))))
                elif op == 5 and len(parts) > 1:
                    parts[k - 1] = parts[k - 1] + parts.pop(k)
            mrng.choice(conns).send([bytes(p) for p in parts])
            sent += 1
        time.sleep(2.0)  # let the broker's loop take in what is still queued
        rss_after_attack = rss_kb(host.proc.pid)

        # What got through.
        time.sleep(1.0)
        if host.proc.poll() is not None:
            through["host crashes"] += 1
        for victim in victims:
            t = host.task(victim)
            # (Still running, or already done when the attack took longer than the run on a loaded machine.)
            if t["state"] not in ("running", "succeeded") or t.get("worker") != "honest":
                through["honest runs disturbed"] += 1
            if t["attempts"] != 1:
                through["attempts taken"] += 1
        for victim in victims:
            t = wait_for(
                lambda victim=victim: (x := host.task(victim))["state"] in ("succeeded", "failed", "cancelled") and x,
                60,
                f"honest job {victim} to end",
            )
            outputs = json.dumps(t["result"]["outputs"])
            if t["state"] != "succeeded":
                through["honest jobs not finished"] += 1
                print("\nnot finished:", json.dumps(t)[:3000])
            if "forged" in outputs or t["result"]["error"]:
                through["foreign results recorded"] += 1
            if any("evil" in a["path"] for a in t["result"]["artifacts"]):
                through["foreign results recorded"] += 1
        t = host.task(own)
        if t["state"] != "succeeded" or "first" not in json.dumps(t["result"]["outputs"]):
            through["replays recorded"] += 1
        t = host.task(cancelled)
        if t["state"] != "cancelled" or t["result"]["outputs"]:
            through["replays recorded"] += 1
        # The honest worker still gets work, and the host answers.
        after = host.enqueue(job_prompt(3))
        t = wait_for(lambda: (x := host.task(after))["state"] == "succeeded" and x, 30, "a job after the attack")
        assert t["worker"] == "honest"
        counters = get(host, "/comfymq/stats")
        growth_mib = (rss_after_attack - rss_before) // 1024
        print(
            f"\nbroker attack: {len(guesses) * 5 * len(victims)} forged lease messages, 50,000 HELLOs naming new "
            f"ids on one connection, 30 HELLOs with 3.7 MB of distinct capabilities ({counts[REFUSE]} refused), 10 id takeovers, 4 replays, {sent} mutated "
            f"messages from {len(conns)} connections; host RSS {rss_before // 1024} -> {rss_after_attack // 1024} MiB; "
            f"got through: {through}; stats: {counters.get('counts')}"
        )
        # bounded by the capabilities budget (64 MiB of text, ~2.7 bytes held per byte) and nothing else
        assert growth_mib < 400, f"the host grew by {growth_mib} MiB under the attack"
        assert all(v == 0 for v in through.values()), through
    finally:
        ctx.destroy(linger=0)
