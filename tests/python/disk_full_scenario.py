"""Runs inside a private mount namespace with a tiny tmpfs at argv[1] (see test_disk_full.py): fills the disk
through the store and the artifact writer and prints what happened as one JSON line."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from comfy_nodes import _native as native  # noqa: E402


def main() -> None:
    root = Path(sys.argv[1])
    filler = root / "filler.bin"
    filler.write_bytes(b"f" * (1 << 20))  # room we can give back later
    report = {}
    store = native.Store(str(root / "store"), segment_bytes=64 << 10, background=False)
    acked = []
    error = None
    for i in range(100000):
        try:
            acked.append(
                store.enqueue(
                    {"1": {"class_type": "EmptyImage", "inputs": {"seq": i, "pad": "p" * 2000}}}, prompt_id=f"p{i}"
                )["id"]
            )
        except native.DiskFullError as e:
            error = str(e)
            break
    report["acked_before_full"] = len(acked)
    report["error"] = error
    report["healthy_when_full"] = True
    try:
        store.health()
    except native.ComfyMQError:
        report["healthy_when_full"] = False
    report["total_when_full"] = store.stats()["total"]
    report["readable_when_full"] = store.get(acked[0])["prompt"]["1"]["inputs"]["seq"] == 0
    try:
        store.enqueue({"1": {"class_type": "EmptyImage", "inputs": {"seq": -1, "pad": "p" * 2000}}}, prompt_id="late")
        report["second_attempt"] = "accepted"
    except native.DiskFullError:
        report["second_attempt"] = "disk_full"
    # An artifact that does not fit: an error, and no file (whole or temp) is left behind.
    writer = native.ArtifactWriter(str(root / "art"))
    try:
        writer.write("job/big.bin", b"a" * (2 << 20))
        report["artifact"] = "written"
    except native.ComfyMQError as e:
        report["artifact"] = type(e).__name__
    report["artifact_files_left"] = sorted(os.listdir(root / "art" / "job")) if (root / "art" / "job").exists() else []
    # Space frees: it works again.
    filler.unlink()
    store.enqueue({"1": {"class_type": "EmptyImage", "inputs": {"seq": -2}}}, prompt_id="after")
    report["works_after_space_freed"] = True
    store.close()
    with native.Store(str(root / "store"), background=False) as again:
        ids = {j["id"] for j in again.list(limit=1000)["jobs"]}
        cursor = None
        ids = set()
        while True:
            page = again.list(limit=1000, cursor=cursor)
            ids.update(j["id"] for j in page["jobs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        report["lost_after_reopen"] = len([a for a in acked if a not in ids])
        report["total_after_reopen"] = again.stats()["total"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
