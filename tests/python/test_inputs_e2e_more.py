"""End to end, all real processes: inputs that travel with jobs, at scale and across failures.

The cluster of test_end_to_end.py (a host; w1, a standalone worker driving ComfyUI c1; w2, this repo as c2's custom
node pack in the worker role) on one stand-in version: what is checked here is the input's path (host store, FETCH,
worker cache, upload into ComfyUI), which test_inputs_e2e.py already runs on each ComfyUI version. The ComfyUIs log
every request (--access-log), which counts the uploads into each, and take uploads up to 300 MB
(--max-upload-size, ComfyUI's flag; its default of 100 MB would refuse the 200 MB input).

The inputs are video-like files of random bytes: LoadVideo (the stand-in's, v0.8.0's shape: a `file` COMBO with
video_upload) names the file, and ProbeFileDigest shows the sha256 and size of what the worker's ComfyUI read.

- 100 jobs naming one 20 MB input: all succeed; each worker that ran them fetched it once (the host's
  inputs_served) and uploaded it into its ComfyUI once (the ComfyUI's request log).
- A 200 MB input arrives intact, and no process on its way holds it whole in memory.
- The host killed with SIGKILL while a worker fetches a large input, then restarted on its data dir: the job and
  its input are there, the job succeeds exactly once, and no half-fetched file is left on either side.
- A mask from ComfyUI's mask editor ("clipspace/... [input]") in a ComfyUI in role both, queued through its API,
  runs on the other worker (the local one drained) with the mask intact.
- An input larger than the workers' ComfyUIs take (their --max-upload-size) fails its job with input_upload_failed.
- A job with an input that failed on one worker is retried on the other (the worker keeping its input ran it:
  the retry does not wait for that one).
"""

from __future__ import annotations

import hashlib
import signal
import struct
import zlib
from pathlib import Path

import pytest
from conftest import ComfyUIs, free_port, wait_for
from conftest import http_json as http
from input_files import MIB, digest_graph, upload_file, write_random_file
from test_end_to_end import Procs, job, running_cluster

from tests.standin import versions
from tests.standin.nodes import read_png

pytestmark = pytest.mark.subprocess
TARGET = f"standin-{versions.DEFAULT}"
COMFY_FLAGS = ["--access-log", "--max-upload-size", "300"]
HEARTBEAT = 1.0  # seconds (the default): a 200 MB transfer on a loaded 2-core runner must not look like silence


@pytest.fixture
def big_cluster(tmp_path):
    with running_cluster(tmp_path, TARGET, comfy_flags=COMFY_FLAGS, heartbeat=HEARTBEAT) as running:
        yield running


# ---- helpers ------------------------------------------------------------------------------------------------


def inputs_served(base: str) -> dict:
    status, body = http(base + "/comfymq/stats")
    assert status == 200, body
    return body["broker"]["inputs_served"]


def requests_logged(comfyuis: ComfyUIs, name: str, method: str, path: str) -> int:
    """How many `method path` requests ComfyUI `name` served (its --access-log lines: "... INFO POST /upload/image
    HTTP/1.1 200 484")."""
    request = f" {method} {path} HTTP/"
    return sum("standin.access" in line and request in line for line in comfyuis.log(name).splitlines())


def comfy_of(j: dict) -> str:
    return "c1" if j.get("worker") == "w1" else "c2"


def finished(base: str, ids: list[str]) -> bool:
    return all(job(base, i)["state"] in ("succeeded", "failed", "cancelled") for i in ids)


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def leftovers(folder: Path) -> list[str]:
    """The files under folder (none when it does not exist)."""
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---- the tests ------------------------------------------------------------------------------------------------


def test_a_hundred_jobs_share_one_input_fetched_and_uploaded_once_per_worker(big_cluster):
    base, _, comfyuis = big_cluster
    size = 20 * MIB
    src = comfyuis.tmp / "clip.mp4"
    sha = write_random_file(src, size, seed=1)
    assert upload_file(base, src, "clip.mp4") == {"sha256": sha, "size": size, "name": "clip.mp4", "existed": False}

    reference = {"comfymq_input": sha, "name": "clip.mp4"}
    tags = [str(i) for i in range(100)]  # a tag per job: each runs ProbeFileDigest (ComfyUI's cache would not)
    status, body = http(base + "/comfymq/jobs", "POST", {"prompt": digest_graph(reference), "sweep": {"2.tag": tags}})
    assert status == 200 and body["count"] == 100, body
    batch = body["batch_id"]

    def batch_done():
        status, answer = http(f"{base}/comfymq/batches/{batch}")
        assert status == 200, answer
        return answer["finished"] == 100

    wait_for(batch_done, 100, "the 100 jobs to finish", every=0.2)
    status, answer = http(f"{base}/comfymq/batches/{batch}?view=summary")
    assert status == 200, answer
    jobs = answer["jobs"]
    assert [j["state"] for j in jobs] == ["succeeded"] * 100, [(j["id"], j["state"], j["error"]) for j in jobs]
    for j in jobs:
        assert j["outputs"]["2"]["text"] == [f"{sha} {size}"], j  # what the worker's ComfyUI read, every time
    ran_on = {j["worker"] for j in jobs}
    assert ran_on <= {"w1", "w2"}, ran_on

    served = inputs_served(base)
    assert served["fetches"] == len(ran_on), (served, ran_on)  # each worker that ran jobs fetched the input once
    assert served["bytes_sent"] == served["fetches"] * size, served
    assert served["refused"] == 0, served
    for worker, comfy in (("w1", "c1"), ("w2", "c2")):
        uploads = requests_logged(comfyuis, comfy, "POST", "/upload/image")
        assert uploads == (1 if worker in ran_on else 0), f"{comfy} got {uploads} uploads; jobs ran on {ran_on}"
        if worker in ran_on:
            folder = comfyuis.input_dir(comfy) / "comfymq" / sha[:16]
            assert [p.name for p in folder.iterdir()] == ["clip.mp4"]
            assert (folder / "clip.mp4").stat().st_size == size


def test_a_200_mb_input_reaches_a_remote_worker_intact(big_cluster):
    base, procs, comfyuis = big_cluster
    size = 200 * MIB
    src = comfyuis.tmp / "big.mp4"
    sha = write_random_file(src, size, seed=2)
    assert upload_file(base, src, "big.mp4")["sha256"] == sha
    src.unlink()  # the host has it

    status, body = http(base + "/comfymq/jobs", "POST", {"prompt": digest_graph({"comfymq_input": sha})})
    assert status == 200, body
    job_id = body["jobs"][0]["id"]
    wait_for(lambda: finished(base, [job_id]), 90, "the job with the 200 MB input", every=0.2)
    done = job(base, job_id)
    assert done["state"] == "succeeded", done["error"]
    assert done["outputs"]["2"]["text"] == [f"{sha} {size}"], done["outputs"]  # read by the worker's ComfyUI
    status, full = http(f"{base}/comfymq/jobs/{job_id}")
    took = {h["worker"] for h in full["job"]["history"]}  # one worker, unless a lease was lost on the way
    served = inputs_served(base)
    assert served["fetches"] == len(took) and served["bytes_sent"] == served["fetches"] * size, (served, took)
    comfy = comfy_of(done)
    assert requests_logged(comfyuis, comfy, "POST", "/upload/image") == 1
    # No process on the way held the input whole: the host reads it in chunks (at most 64 MiB waiting to be sent),
    # the worker appends chunks to a file and uploads from it, the ComfyUI spools the upload to disk.
    peaks = {"host": peak_rss_mib(procs.procs["host"].pid), comfy: peak_rss_mib(comfyuis.procs[comfy].pid)}
    if comfy == "c1":
        peaks["w1"] = peak_rss_mib(procs.procs["w1"].pid)  # w2 runs inside c2
    assert all(peak < size / MIB for peak in peaks.values()), f"peak memory (MiB) with a 200 MiB input: {peaks}"


def test_the_host_killed_during_an_input_fetch_restarts_with_the_job_and_input(big_cluster):
    base, procs, comfyuis = big_cluster
    tmp = comfyuis.tmp
    size = 200 * MIB
    src = tmp / "take.mp4"
    sha = write_random_file(src, size, seed=3)
    assert upload_file(base, src, "take.mp4")["sha256"] == sha
    src.unlink()
    graph = digest_graph({"comfymq_input": sha, "name": "take.mp4"})
    graph["3"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}}
    graph["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "once"}}
    status, body = http(base + "/comfymq/jobs", "POST", {"prompt": graph, "max_attempts": 5})
    assert status == 200, body
    job_id = body["jobs"][0]["id"]

    def fetching():
        j = job(base, job_id)
        title = (j.get("progress") or {}).get("title") or ""
        return title.startswith("fetching input") and j

    fetcher = wait_for(fetching, 30, "a worker to fetch the input", every=0.01)["worker"]
    host = procs.procs["host"]
    host.send_signal(signal.SIGSTOP)  # nothing more is sent: look at the fetch, then kill the host mid-transfer
    cache = tmp / fetcher / "worker" / "inputs"
    try:
        assert not (cache / sha[:2] / sha).exists(), "the fetch was over before the host stopped: nothing was tested"
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()

    procs.start("host-restarted", list(host.args[1:]))  # the same command line: data dir, ports
    wait_for(lambda: _answers(base + "/comfymq/health"), 30, "the restarted host")
    status, kept = http(f"{base}/comfymq/inputs/{sha}")
    assert (status, kept) == (200, {"sha256": sha, "size": size}), kept
    assert job(base, job_id)["id"] == job_id  # the acknowledged job is there
    wait_for(lambda: finished(base, [job_id]), 90, "the job after the host's restart", every=0.2)

    status, full = http(f"{base}/comfymq/jobs/{job_id}")
    assert status == 200, full
    done = full["job"]
    assert done["state"] == "succeeded", (done["error"], done["history"])
    assert done["outputs"]["2"]["text"] == [f"{sha} {size}"], done["outputs"]
    assert [h["outcome"] for h in done["history"]].count("succeeded") == 1, done["history"]
    # It ran once: an attempt whose fetch failed posted nothing to a ComfyUI, so one prompt reached one (more only
    # if a lease was lost after an attempt got its input: its run is stopped, its result refused), one image saved,
    # and the host holds one.
    past_inputs = [h for h in done["history"] if not (h.get("error") or {}).get("type", "").startswith("input_")]
    posted = sum(requests_logged(comfyuis, c, "POST", "/prompt") for c in ("c1", "c2"))
    assert 1 <= posted <= len(past_inputs), (posted, done["history"])
    saved = [p for c in ("c1", "c2") for p in comfyuis.output_dir(c).glob("once_*.png")]
    assert 1 <= len(saved) <= posted, saved
    [artifact] = done["artifacts"]
    assert [p.name for p in (tmp / "host" / "artifacts" / job_id).iterdir()] == [Path(artifact["path"]).name]
    # nothing half-written: not in the host's upload temp folder, not in either worker's fetch temp folder
    assert leftovers(tmp / "host" / "inputs" / "tmp") == []
    for worker in ("w1", "w2"):
        assert leftovers(tmp / worker / "worker" / "inputs" / "tmp") == [], worker
    final = tmp / done["worker"] / "worker" / "inputs" / sha[:2] / sha
    assert final.stat().st_size == size


def test_an_input_larger_than_the_workers_comfyui_takes_fails_the_job_saying_so(tmp_path):
    """The workers' ComfyUIs take uploads up to 1 MB (--max-upload-size 1): a 2 MiB input is refused there with a
    413, and the job fails with input_upload_failed naming the limit (docs/troubleshooting.md)."""
    with running_cluster(tmp_path, TARGET, comfy_flags=["--max-upload-size", "1"], heartbeat=HEARTBEAT) as running:
        base, _, comfyuis = running
        src = tmp_path / "long.mp4"
        sha = write_random_file(src, 2 * MIB, seed=4)
        upload_file(base, src, "long.mp4")
        prompt = digest_graph({"comfymq_input": sha, "name": "long.mp4"})
        status, body = http(base + "/comfymq/jobs", "POST", {"prompt": prompt, "max_attempts": 1})
        assert status == 200, body
        job_id = body["jobs"][0]["id"]
        wait_for(lambda: finished(base, [job_id]), 30, "the job to fail", every=0.1)
        done = job(base, job_id)
        assert done["state"] == "failed", done
        assert done["error"]["type"] == "input_upload_failed" and done["error"]["node_id"] == "1", done["error"]
        said = "node 1 input 'file': ComfyUI refused the upload of long.mp4: HTTP 413 (larger than ComfyUI's "
        assert done["error"]["message"].startswith(said + "--max-upload-size)"), done["error"]
        comfy = comfy_of(done)
        assert leftovers(comfyuis.input_dir(comfy)) == [], "a refused upload leaves nothing in ComfyUI's input folder"


def test_a_job_with_an_input_that_failed_on_one_worker_is_retried_on_the_other(big_cluster):
    base, _, comfyuis = big_cluster
    src = comfyuis.tmp / "again.mp4"
    sha = write_random_file(src, MIB, seed=5)
    upload_file(base, src, "again.mp4")
    prompt = digest_graph({"comfymq_input": sha, "name": "again.mp4"})
    prompt["3"] = {"class_type": "FailNode", "inputs": {"message": "fails on every ComfyUI"}}
    status, body = http(base + "/comfymq/jobs", "POST", {"prompt": prompt, "max_attempts": 2})
    assert status == 200, body
    job_id = body["jobs"][0]["id"]
    wait_for(lambda: finished(base, [job_id]), 10, "both attempts (the second on the other worker)", every=0.1)
    status, full = http(f"{base}/comfymq/jobs/{job_id}")
    done = full["job"]
    assert done["state"] == "failed" and done["error"]["message"] == "fails on every ComfyUI", done["error"]
    assert sorted(h["worker"] for h in done["history"]) == ["w1", "w2"], done["history"]


def _answers(url: str) -> bool:
    try:
        return http(url)[0] == 200
    except OSError:
        return False


def rgba_png(width: int, height: int, rgba: bytes) -> bytes:
    """An 8-bit RGBA PNG (colour type 6), as ComfyUI's mask editor saves a mask (the mask in the alpha channel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    stride = width * 4
    raw = b"".join(b"\x00" + rgba[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_a_clipspace_mask_queued_in_comfyui_runs_on_the_other_worker(tmp_path):
    """c0: this repo as a custom node pack in role both (host + local worker "local"); c1 driven by a standalone
    worker w1 of c0's broker. The local worker is drained, so a job queued through c0's POST /comfymq/jobs naming
    the mask editor's file runs on w1: c0's host copied the file into its input store at enqueue, w1 fetched it."""
    procs, comfyuis = Procs(tmp_path), ComfyUIs(TARGET, tmp_path)
    broker = f"tcp://127.0.0.1:{free_port()}"
    width, height = 5, 3
    alpha = bytes((i * 37 + 11) % 256 for i in range(width * height))  # the mask, in the alpha channel
    rgba = b"".join(bytes((200, 100, 50, a)) for a in alpha)
    mask_png = rgba_png(width, height, rgba)
    clipspace = comfyuis.input_dir("c0") / "clipspace"
    clipspace.mkdir(parents=True)
    (clipspace / "clipspace-mask-123.png").write_bytes(mask_png)
    both = {
        "COMFYMQ_ROLE": "both",
        "COMFYMQ_BROKER_BIND": broker,
        "COMFYMQ_WORKER_ID": "local",
        "COMFYMQ_DATA_DIR": str(tmp_path / "c0-data"),
        "COMFYMQ_HEARTBEAT": "0.2",
    }
    try:
        c0 = comfyuis.start("c0", plugin_env=both)
        c1 = comfyuis.start("c1", flags=["--access-log"])
        procs.start(
            "w1",
            ["-m", "comfy_nodes", "worker", "--comfy-url", c1, "--broker", broker, "--id", "w1"]
            + ["--data-dir", str(tmp_path / "w1"), "--heartbeat", "0.2"],
        )
        wait_for(lambda: _online(c0) == {"local", "w1"}, 60, "the local worker and w1 online")
        status, body = http(f"{c0}/comfymq/workers/local/drain", "POST", {})
        assert status == 200 and body["draining"] is True, body

        prompt = {
            "1": {
                "class_type": "LoadImageMask",
                "inputs": {"image": "clipspace/clipspace-mask-123.png [input]", "channel": "alpha"},
            },
            "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mask"}},
        }
        status, body = http(f"{c0}/comfymq/jobs", "POST", {"prompt": prompt})
        assert status == 200, body
        job_id = body["jobs"][0]["id"]
        wait_for(lambda: finished(c0, [job_id]), 60, "the mask job", every=0.1)
        status, full = http(f"{c0}/comfymq/jobs/{job_id}")
        done = full["job"]
        assert done["state"] == "succeeded", done["error"]
        assert done["worker"] == "w1"
        sha = hashlib.sha256(mask_png).hexdigest()
        assert done["inputs"] == [
            {"node": "1", "input": "image", "sha256": sha, "size": len(mask_png), "name": "clipspace-mask-123.png"}
        ], done["inputs"]
        # the mask arrived intact: w1's ComfyUI has the same bytes, and the saved grey image is 255 - alpha
        assert (comfyuis.input_dir("c1") / "comfymq" / sha[:16] / "clipspace-mask-123.png").read_bytes() == mask_png
        assert requests_logged(comfyuis, "c1", "POST", "/upload/image") == 1
        [artifact] = done["artifacts"]
        artifact_root = comfyuis.output_dir("c0") / "comfymq"
        image, _ = read_png((artifact_root / artifact["path"]).read_bytes())
        assert (image.width, image.height) == (width, height)
        assert image.pixels == bytes(v for a in alpha for v in (255 - a,) * 3)
    finally:
        procs.stop_all()
        comfyuis.stop_all()


def _online(base: str) -> set[str]:
    try:
        status, workers = http(base + "/comfymq/workers")
    except OSError:
        return set()
    return {w["id"] for w in workers if w["online"]} if status == 200 else set()
