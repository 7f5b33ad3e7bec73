"""The crash tests seen from Python: a real process using the store through the Python face is killed with
SIGKILL at random moments; after each kill the store must open with every acknowledged change exactly once.
COMFYMQ_SIGKILL_TRIALS sets the number of kills (make soak runs more)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfy_nodes import _native as native

WRITER = Path(__file__).with_name("crash_writer.py")
TRIALS = int(os.environ.get("COMFYMQ_SIGKILL_TRIALS", "40"))


def read_acks(text: str, acks: dict, deleted: set) -> int:
    n = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # the last line may be cut by the kill
        kind, seq = parts[0], int(parts[1])
        if kind == "D":
            deleted.add(seq)
        elif kind == "E":
            acks.setdefault(seq, "E")
            n += 1
        else:
            acks[seq] = kind
            n += 1
    return n


def check(store, acks: dict, deleted: set) -> dict:
    seen: dict[int, list] = {}
    cursor = None
    while True:
        page = store.list(limit=1000, cursor=cursor, newest_first=False, with_prompt=True)
        for j in page["jobs"]:
            seq = j["prompt"]["1"]["inputs"]["seq"]
            assert j["prompt_id"] == f"p{seq}", f"half-made job {j['id']}: prompt_id {j['prompt_id']} for seq {seq}"
            if j["state"] == "succeeded":
                assert j["outputs"] == {"2": {"seq": seq}}, f"half-made outputs for seq {seq}"
            seen.setdefault(seq, []).append(j)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    tally = {"lost": 0, "duplicated": 0}
    for jobs in seen.values():
        tally["duplicated"] += len(jobs) - 1
    for seq, kind in acks.items():
        if seq in deleted:
            continue
        jobs = seen.get(seq)
        if not jobs:
            tally["lost"] += 1
        elif kind == "C" and jobs[0]["state"] != "succeeded":
            tally["lost"] += 1
        elif kind == "X" and jobs[0]["state"] != "cancelled":
            tally["lost"] += 1
    return tally


@pytest.mark.timeout(max(120, TRIALS * 3))  # a hang guard that grows with the soak's trial count
def test_sigkill_during_python_writes(tmp_path):
    rng = random.Random(7)
    store_dir = str(tmp_path / "store")
    acks: dict[int, str] = {}
    deleted: set[int] = set()
    totals = {"trials": 0, "acknowledged": 0, "lost": 0, "duplicated": 0}
    for trial in range(TRIALS):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), store_dir, str((trial + 1) * 10_000_000), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        # Wait until it is really working (its first acknowledgement), then kill it at a random moment.
        # Unbuffered: readline() must not pull later lines into a buffer communicate() would never see.
        first = proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        totals["acknowledged"] += read_acks(first.decode() + rest.decode(), acks, deleted)
        totals["trials"] += 1
        with native.Store(store_dir, background=False) as store:
            tally = check(store, acks, deleted)
        totals["lost"] += tally["lost"]
        totals["duplicated"] += tally["duplicated"]
        assert tally == {"lost": 0, "duplicated": 0}, f"trial {trial}: {tally}"
    print(
        f"[ python sigkill ] trials={totals['trials']} acknowledged={totals['acknowledged']} "
        f"lost={totals['lost']} duplicated={totals['duplicated']}"
    )
    assert totals["acknowledged"] > 0
