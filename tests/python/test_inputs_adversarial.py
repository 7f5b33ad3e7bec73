"""A crafted prompt against the host's input references (real host process on 127.0.0.1): JSON text that hides
{"comfymq_input": sha} from a reading that differs from the store's parser (nlohmann), so the host would commit a
reference it never checked, and the broker would grant a worker FETCHes for it (its own scan is nlohmann's).

Every such prompt must be read as the store reads it: a reference to an input the host does not hold is refused
(400, naming it), never committed as it came. And one output of another job named by every value of a 10,000-value
sweep is copied into the input store once, not once per value.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from test_cluster import cluster  # noqa: F401 - cluster is a fixture
from test_inputs_api import P, finished_job_with_files, load_image

from comfy_nodes.inputs.store import InputStore

pytestmark = pytest.mark.subprocess

MISSING = hashlib.sha256(b"an input nobody uploaded").hexdigest()


def post_task(port: int, prompt) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/tasks",
        data=json.dumps({"prompt": prompt}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def node(inputs_text: str) -> str:
    return '{"1": {"class_type": "LoadImage", "inputs": {%s}}}' % inputs_text


@pytest.mark.parametrize(
    "text",
    [
        # a byte order mark: Python's json refuses the text, the store's parser skips the mark and reads it
        "\ufeff" + node('"image": {"comfymq_input": "%s", "name": "../../x"}' % MISSING),
        # the key spelled with an escape: no "comfymq_input" in the text, the same key to every parser
        node('"image": {"comfymq\\u005finput": "%s"}' % MISSING),
        node('"image": {"\\u0063omfymq_input": "%s"}' % MISSING),
        # both at once, and a duplicate key whose last value (what Python and nlohmann keep) is the reference
        "\ufeff" + node('"image": "x.png", "image": {"comfymq\\u005finput": "%s"}' % MISSING),
    ],
)
def test_a_reference_the_host_cannot_resolve_is_refused_however_the_text_spells_it(cluster, text):  # noqa: F811
    make_host, _ = cluster
    host = make_host()
    status, answer = post_task(host.http_port, text)
    assert status == 400, answer
    assert f"no stored input {MISSING}" in answer["error"]["message"], answer


# ---- another job's output, named many times in one request ------------------------------------------------------


@pytest.mark.asyncio
async def test_one_output_named_by_every_value_of_a_sweep_is_copied_once(client, service, monkeypatch):
    """10,000 sweep values naming the same output: one read of its file, not one per value (each used to copy the
    whole file into the input store again: 10,000 copies of a 2 GiB output is 20 TB of disk traffic)."""

    data = os.urandom(1 << 20)
    done = finished_job_with_files(service, {"a.png": data})
    copies = []
    real = InputStore.put_file
    monkeypatch.setattr(InputStore, "put_file", lambda self, *a, **kw: copies.append(1) or real(self, *a, **kw))
    ref = {"comfymq_output": {"job": done, "index": 0}}
    t0 = time.monotonic()
    resp = await client.post(f"{P}/jobs", json={"prompt": load_image("x.png"), "sweep": {"10.image": [ref] * 10000}})
    took = time.monotonic() - t0
    body = await resp.json()
    print(f"\n10,000 references to one 1 MiB output: {took:.2f}s, {len(copies)} copies")
    assert resp.status == 200, body
    assert len(body["jobs"]) == 10000
    assert len(copies) == 1


# ---- a web page's form aimed at the upload route ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_cross_site_form_upload_is_refused_and_stores_nothing(client, service):
    """What any page the user opens can send without CORS: a multipart form POST, with the Origin of a foreign site,
    "null" (a sandboxed frame, a data: page), only Sec-Fetch-Site, or through a rebound DNS name."""
    inputs_root = service.data_dir / "inputs"

    def form() -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("image", b"\x89PNG\r\n\x1a\nforged", filename="x.png", content_type="image/png")
        return f

    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Host": "rebound.evil.example"},
        {"Host": f"rebound.evil.example:{client.port}", "Origin": f"http://rebound.evil.example:{client.port}"},
    ):
        for query in ("", "?name=x.png"):
            resp = await client.post(f"{P}/inputs{query}", data=form(), headers=headers)
            assert resp.status == 403, (headers, await resp.text())
    stored = [p for p in inputs_root.rglob("*") if p.is_file()] if inputs_root.exists() else []
    assert stored == []
