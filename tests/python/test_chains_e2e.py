"""End to end, all real processes: one job's output as the next job's input, queued before it exists.

The cluster of test_end_to_end.py (a host; w1, a standalone worker driving ComfyUI c1; w2, this repo as c2's custom
node pack in the worker role; only c2 has the model special.safetensors) on one stand-in version.

- generate -> upscale -> save: three jobs queued at once, the second and third naming the output of the one before
  as {"comfymq_output": {"job": id, "index": 0}}. They wait (their view says for which job), run in order, the
  first on w1 and the second on w2 (it names a model only c2 has), and the last image is the first picture scaled
  2x, pixel for pixel: each output reached the next worker's ComfyUI intact.
- A chain survives the host killed with SIGKILL in its middle (its first job done, the next one waiting for the
  only worker that can run it, drained): restarted on its data dir, the waiting jobs are there with what they wait for, and the chain completes,
  each job succeeding once; a chain whose first job fails has the rest cancelled, each saying which job it waited
  for.
"""

from __future__ import annotations

import signal

import pytest
from conftest import http_json as http
from conftest import wait_for
from test_end_to_end import job, running_cluster
from test_inputs_e2e import picture, upload

from tests.standin import versions
from tests.standin.nodes import read_png

pytestmark = pytest.mark.subprocess
TARGET = f"standin-{versions.DEFAULT}"
DONE = ("succeeded", "failed", "cancelled")


@pytest.fixture
def chain_cluster(tmp_path):
    with running_cluster(tmp_path, TARGET) as running:
        yield running


def output_of(job_id: str) -> dict:
    return {"comfymq_output": {"job": job_id, "index": 0}}


def load_then(image, then: dict, prefix: str, model: str | None = None) -> dict:
    """LoadImage(image) -> `then` (a node taking the image as "image") -> SaveImage; with `model`, a checkpoint
    loader naming it too (routing: only a worker with that model takes the job)."""
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {**then, "inputs": {**then["inputs"], "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    if model:
        graph["4"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}}
    return graph


INVERT = {"class_type": "ImageInvert", "inputs": {}}
SCALE_2X = {
    "class_type": "ImageScale",
    "inputs": {"upscale_method": "nearest-exact", "width": 18, "height": 14, "crop": "disabled"},
}


def queue(base: str, graph: dict, **extra) -> str:
    status, body = http(base + "/comfymq/jobs", "POST", {"prompt": graph, **extra})
    assert status == 200, body
    return body["jobs"][0]["id"]


def drain(base: str, worker: str, on: bool = True) -> None:
    status, body = http(f"{base}/comfymq/workers/{worker}/drain", "POST", {"drain": on})
    assert status == 200, body


def full(base: str, job_id: str) -> dict:
    status, body = http(f"{base}/comfymq/jobs/{job_id}")
    assert status == 200, body
    return body["job"]


def answers(url: str) -> bool:
    try:
        return http(url, timeout=2)[0] == 200
    except OSError:  # not listening yet
        return False


def worker_of(j: dict) -> str | None:
    return j.get("worker") or j.get("worker_id")


def scaled_2x(pixels: bytes, width: int, height: int) -> bytes:
    """Nearest neighbour at twice the size, written out independently of the stand-in's node."""
    out = bytearray()
    for y in range(2 * height):
        for x in range(2 * width):
            i = ((y // 2) * width + x // 2) * 3
            out += pixels[i : i + 3]
    return bytes(out)


def test_generate_upscale_save_queued_at_once_runs_in_order_across_two_workers(chain_cluster):
    base, _procs, comfyuis = chain_cluster
    pic = picture(5)
    stored = upload(base, pic, "start.png")
    drain(base, "w2")  # the first job runs on w1
    first = queue(base, load_then({"comfymq_input": stored["sha256"], "name": "start.png"}, INVERT, "gen"))
    second = queue(base, load_then(output_of(first), SCALE_2X, "up", model="special.safetensors"))
    # (by output node: the file SaveImage "3" of the second job reported)
    third = queue(base, load_then({"comfymq_output": {"job": second, "node": "3"}}, INVERT, "final"))
    waiting = full(base, third)
    assert waiting["after"] == [second]
    assert waiting["state"] == "pending" and waiting["waiting"] == [f"waits for job {second} (pending) to succeed"]
    assert {"node": "1", "input": "image", "output_of": {"job": second, "node": "3"}} in waiting["inputs"]

    wait_for(lambda: job(base, first)["state"] in DONE, 60, "the first job")
    assert job(base, first)["state"] == "succeeded", job(base, first)
    assert job(base, second)["state"] == "pending", "it waits for w2, the only worker with its model"
    drain(base, "w2", False)
    wait_for(lambda: job(base, third)["state"] in DONE, 90, "the chain")
    jobs = [full(base, j) for j in (first, second, third)]
    assert [j["state"] for j in jobs] == ["succeeded"] * 3, [(j["id"], j["state"], j["error"]) for j in jobs]
    assert worker_of(jobs[0]) == "w1" and worker_of(jobs[1]) == "w2", [worker_of(j) for j in jobs]
    assert jobs[1]["started_at"] >= jobs[0]["finished_at"] and jobs[2]["started_at"] >= jobs[1]["finished_at"]

    art_root = comfyuis.tmp / "host" / "artifacts"
    [final] = jobs[2]["artifacts"]
    image, _ = read_png((art_root / final["path"]).read_bytes())
    source, _ = read_png(pic)
    assert (image.width, image.height) == (18, 14)
    assert image.pixels == scaled_2x(source.pixels, source.width, source.height), "not the first picture scaled 2x"
    # The second job's worker got the first job's file as it was recorded, by content.
    [made] = jobs[0]["artifacts"]
    c2_input = comfyuis.input_dir("c2") / "comfymq" / made["sha256"][:16]
    assert [p.read_bytes() for p in c2_input.iterdir()] == [(art_root / made["path"]).read_bytes()]


def test_a_chain_survives_the_host_killed_in_its_middle_and_a_failure_cancels_the_rest(chain_cluster):
    base, procs, comfyuis = chain_cluster
    pic = upload(base, picture(6), "start.png")
    start = {"comfymq_input": pic["sha256"], "name": "start.png"}
    drain(base, "w1")
    drain(base, "w2")  # nothing runs while the chains are queued
    a = queue(base, load_then(start, INVERT, "a"))
    b = queue(base, load_then(output_of(a), SCALE_2X, "b", model="special.safetensors"))  # w2 only: drained
    c = queue(base, load_then(output_of(b), INVERT, "c"))
    doomed = queue(
        base, load_then(start, {"class_type": "ProbeFail", "inputs": {"message": "no"}}, "x"), max_attempts=1
    )
    after_doomed = queue(base, load_then(output_of(doomed), INVERT, "y"))
    last = queue(base, {"1": {"class_type": "EmptyImage", "inputs": {}}}, after=[after_doomed, c])
    drain(base, "w1", False)
    wait_for(lambda: job(base, a)["state"] == "succeeded", 60, "the chain's first job")
    assert job(base, b)["state"] == "pending"

    host = procs.procs["host"]
    host.send_signal(signal.SIGKILL)  # in the middle of the chain: its first job done, the next one waiting
    host.wait()
    procs.start("host-restarted", list(host.args[1:]))  # the same command line: data dir, ports, drains kept
    wait_for(lambda: answers(base + "/comfymq/health"), 30, "the restarted host")
    for j, waits in ((b, [a]), (c, [b]), (after_doomed, [doomed]), (last, sorted([after_doomed, c]))):
        view = full(base, j)
        assert view["after"] == waits, view
    wait_for(lambda: {w["id"] for w in http(base + "/comfymq/workers")[1] if w["online"]} == {"w1", "w2"}, 30, "w1, w2")
    drain(base, "w2", False)
    wait_for(lambda: all(job(base, j)["state"] in DONE for j in (a, b, c, doomed, after_doomed, last)), 90, "all")
    for j in (a, b, c):  # each ran to success once, and made one file
        view = full(base, j)
        assert view["state"] == "succeeded", (view["error"], view["history"])
        assert [h["outcome"] for h in view["history"]].count("succeeded") == 1, view["history"]
        assert len(view["artifacts"]) == 1, view["artifacts"]
    assert len(list(comfyuis.output_dir("c1").glob("c_*.png")) + list(comfyuis.output_dir("c2").glob("c_*.png"))) == 1
    assert job(base, doomed)["state"] == "failed"
    cancelled = full(base, after_doomed)
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"]["message"] == f"it waits for job {doomed}, which failed"
    assert full(base, last)["error"]["message"] == f"it waits for job {after_doomed}, which was cancelled"
    # retrying a job whose input job failed is refused, saying why
    status, body = http(f"{base}/comfymq/jobs/{after_doomed}/retry", "POST")
    assert status == 409 and f"it waits for job {doomed}, which failed" in body["error"]["message"], body
