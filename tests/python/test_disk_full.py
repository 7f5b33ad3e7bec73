"""A full disk on a real file system: a tiny tmpfs, mounted in a private mount namespace (so it vanishes with
the process whatever happens). The store answers DiskFullError and changes nothing, keeps everything it had,
and works again once space frees; an artifact that does not fit leaves no file behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).with_name("disk_full_scenario.py")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1) to mount a private tmpfs"
)
def test_disk_full_on_a_real_file_system(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"mount -t tmpfs -o size=3m tmpfs {mnt} && exec {sys.executable} {SCENARIO} {mnt}"
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"[ disk full ] {report}")
    assert report["acked_before_full"] > 10
    assert "no space" in report["error"].lower() or "quota" in report["error"].lower()
    assert report["healthy_when_full"] is True
    assert report["total_when_full"] == report["acked_before_full"]
    assert report["readable_when_full"] is True
    assert report["second_attempt"] == "disk_full"
    assert report["artifact"] == "DiskFullError"
    assert report["artifact_files_left"] == []
    assert report["works_after_space_freed"] is True
    assert report["lost_after_reopen"] == 0
    assert report["total_after_reopen"] == report["acked_before_full"] + 1


def test_a_second_process_gets_a_clear_lock_error(tmp_path):
    from comfy_nodes import _native as native

    store_dir = str(tmp_path / "store")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from comfy_nodes import _native as n; "
            "s = n.Store(sys.argv[2]); print('open', flush=True); sys.stdin.read()",
            str(Path(__file__).resolve().parents[2]),
            store_dir,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(native.StoreLockedError) as e:
            native.Store(store_dir)
        assert f"pid {holder.pid}" in str(e.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with native.Store(store_dir):  # released when the holder exits
        pass
