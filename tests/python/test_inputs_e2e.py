"""End to end, all real processes: a job's input file travels with it to a worker whose ComfyUI never had it.

The cluster of test_end_to_end.py (a host, `python -m comfy_nodes host`; w1, a standalone worker driving ComfyUI c1;
w2, this repo as c2's custom node pack in the worker role), on each ComfyUI the suite runs against (the stand-in of
each version, and a real ComfyUI when COMFYMQ_REAL_COMFYUI is set).

Two PNGs with the same name and other bytes are uploaded to the host (POST /comfymq/inputs); LoadImage ->
ImageInvert -> SaveImage jobs name them as {"comfymq_input": sha256, "name": ...}. The host commits the stored form;
whichever worker takes a job fetches the file over its ZeroMQ link (the native fetch), uploads it into its ComfyUI
and runs the job. Each output image equals that of the same graph run on a third ComfyUI with the file put directly
into its input folder: the same PNG chunks but for the text ones (those carry the prompt, which names the file by
another path, and the job's ids).
"""

from __future__ import annotations

import hashlib
import json
import struct
import urllib.parse
import urllib.request

import pytest
from conftest import http_json, wait_for
from test_end_to_end import cluster, job  # noqa: F401 - cluster is the fixture these tests run on

from tests.standin.nodes import Image, png_bytes

pytestmark = pytest.mark.subprocess
TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def picture(seed: int, width: int = 9, height: int = 7) -> bytes:
    pixels = bytes((seed * 53 + i * 7) % 256 for i in range(width * height * 3))
    return png_bytes(Image(width, height, pixels=pixels))


def invert_graph(image, prefix: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def upload(base: str, data: bytes, name: str) -> dict:
    """POST /comfymq/inputs?name=... with the file as the raw body."""
    req = urllib.request.Request(
        f"{base}/comfymq/inputs?{urllib.parse.urlencode({'name': name})}",
        data=data,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def image_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks (kind, data) but the text ones."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind not in TEXT_CHUNKS:
            out.append((kind, png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def run_directly(comfyuis, name: str, url: str, image: str, prefix: str) -> bytes:
    """Runs the graph on a ComfyUI through its own /prompt (no ComfyMQ); returns the PNG it saved."""
    status, body = http_json(url + "/prompt", "POST", {"prompt": invert_graph(image, prefix)})
    assert status == 200, body
    pid = body["prompt_id"]
    entry = wait_for(lambda: http_json(f"{url}/history/{pid}")[1].get(pid), 60, "the direct run")
    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = entry["outputs"]["3"]["images"]
    return (comfyuis.output_dir(name) / saved["subfolder"] / saved["filename"]).read_bytes()


def test_an_input_travels_with_its_job_to_a_worker_whose_comfyui_never_had_it(cluster):  # noqa: F811
    base, _, comfyuis = cluster
    first, second = picture(1), picture(2)
    stored = [upload(base, data, "photo.png") for data in (first, second)]
    for data, answer in zip((first, second), stored, strict=True):
        assert answer["sha256"] == hashlib.sha256(data).hexdigest() and answer["size"] == len(data), answer
    contents = {a["sha256"]: data for a, data in zip(stored, (first, second), strict=True)}

    ids = []
    for i, answer in enumerate(stored + stored):  # each content twice: the second time may come from a cache
        reference = {"comfymq_input": answer["sha256"], "name": "photo.png"}
        status, body = http_json(base + "/comfymq/tasks", "POST", {"prompt": invert_graph(reference, f"in{i}")})
        assert status == 200, body
        ids.append(body["jobs"][0]["id"])

    def all_done():
        return all(job(base, i)["state"] in ("succeeded", "failed", "cancelled") for i in ids)

    wait_for(all_done, 120, "the jobs with inputs to finish")
    jobs = [job(base, i) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 4, [(j["id"], j["state"], j.get("error")) for j in jobs]

    # the same graph on a third ComfyUI that has the files in its input folder
    direct = comfyuis.start("c3")
    comfyuis.input_dir("c3").mkdir(parents=True, exist_ok=True)
    expected = {}
    for k, (sha, data) in enumerate(contents.items()):
        (comfyuis.input_dir("c3") / f"direct{k}.png").write_bytes(data)
        expected[sha] = run_directly(comfyuis, "c3", direct, f"direct{k}.png", f"direct{k}")
    assert image_chunks(expected[stored[0]["sha256"]]) != image_chunks(expected[stored[1]["sha256"]])

    art_root = comfyuis.tmp / "host" / "artifacts"
    for j, answer in zip(jobs, stored + stored, strict=True):
        sha = answer["sha256"]
        status, full = http_json(f"{base}/comfymq/jobs/{j['id']}")  # the full view: the prompt the host committed
        assert status == 200, full
        committed = full["job"]["prompt"]["1"]["inputs"]["image"]
        assert committed == {"comfymq_input": sha, "name": "photo.png", "size": len(contents[sha])}, committed
        [art] = j["artifacts"]
        data = (art_root / art["path"]).read_bytes()
        assert image_chunks(data) == image_chunks(expected[sha]), f"job {j['id']}: not the image of its own input"
        # the worker's ComfyUI got the file in the input's own folder, the bytes the host stored
        comfy = "c1" if (j.get("worker") or j.get("worker_id")) == "w1" else "c2"
        uploaded = comfyuis.input_dir(comfy) / "comfymq" / sha[:16] / "photo.png"
        assert uploaded.read_bytes() == contents[sha], uploaded
