"""The worker side of input files that travel with jobs (comfy_nodes/worker/inputs/), and the bridge using it.

Three parts:

* References: the stored form is found, a malformed one fails naming node and input, the prompt is rewritten
  without changing the original.
* The cache and the uploads, with a FILE SOURCE instead of the host: FolderSource lays files out like the host's
  input store (<dir>/<sha[0:2]>/<sha>) and its fetch(sha, dest) copies one (temp file, rename) and checks its
  sha256, as WorkerClient.fetch_input does. These test the cache's and the uploads' own code (eviction by bytes
  with real files, held files kept, an oversized input, temps cleaned at start, one fetch for concurrent
  requests) and the uploads into a real stand-in ComfyUI process (the loader reads the rewritten path, a name
  collision, re-uploads); not the native fetch.
* The bridge with the real native fetch: a host store + broker in this process whose input folder holds the file,
  the worker bridge on a stand-in ComfyUI. Where a test needs a fetch that is held or fails on demand, the worker
  client is the native one with fetch_input wrapped (said at each test).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import ComfyUIs, wait_for
from test_bridge import Rig, done, state

from comfy_nodes.worker.comfy_client import ComfyClient
from comfy_nodes.worker.inputs import (
    ComfyUploads,
    InputCache,
    InputFailure,
    InputRefError,
    InputResolver,
    find_input_refs,
    rewrite_prompt,
    subfolder_for,
)
from tests.standin.nodes import Image, png_bytes, read_png

aio = pytest.mark.asyncio


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref(data: bytes, name: str = "x.png") -> dict:
    """The stored form of `data` (what the host commits in the prompt)."""
    return {"comfymq_input": sha256(data), "name": name, "size": len(data)}


def picture(seed: int, width: int = 4, height: int = 3) -> bytes:
    """A PNG whose pixels depend on seed."""
    pixels = bytes((seed * 37 + i * 11) % 256 for i in range(width * height * 3))
    return png_bytes(Image(width, height, pixels=pixels))


def inverted(png: bytes) -> bytes:
    image, _ = read_png(png)
    return bytes(255 - b for b in image.pixels)


def invert_graph(value, prefix: str = "inv") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": value}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


class FolderSource:
    """A FILE SOURCE standing in for the host's input store and the native fetch (see the module docstring).

    put(data) stores a file as <dir>/<sha[0:2]>/<sha>. fetch(sha, dest) copies it to dest through a temp file
    beside it and a rename, checks its sha256 (ValueError when the source has no such file, RuntimeError on a
    checksum mismatch), and counts the calls per sha. hold() makes fetches wait until release(); fail_next(e)
    makes the next fetch raise e."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.calls: Counter = Counter()
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self.waiting = threading.Semaphore(0)  # released once per fetch that reached the gate
        self._fail: list[Exception] = []

    def put(self, data: bytes) -> str:
        sha = sha256(data)
        path = self.folder / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return sha

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def fail_next(self, error: Exception) -> None:
        self._fail.append(error)

    def fetch(self, sha: str, dest: str) -> int:
        with self._lock:
            self.calls[sha] += 1
            fail = self._fail.pop(0) if self._fail else None
        self.waiting.release()
        assert self._gate.wait(30), "a held fetch was never released"
        if fail is not None:
            raise fail
        source = self.folder / sha[:2] / sha
        if not source.is_file():
            raise ValueError(f"refused: no such input {sha}")
        tmp = Path(dest + ".part")
        shutil.copyfile(source, tmp)
        if sha256(tmp.read_bytes()) != sha:
            tmp.unlink()
            raise RuntimeError(f"checksum mismatch for {sha}")
        os.replace(tmp, dest)
        return os.path.getsize(dest)


@pytest.fixture
def source(tmp_path) -> FolderSource:
    return FolderSource(tmp_path / "host-inputs")


def open_cache(tmp_path: Path, max_bytes: int) -> InputCache:
    cache = InputCache(tmp_path / "worker" / "inputs", max_bytes)
    cache.open()
    return cache


async def use(cache: InputCache, source: FolderSource, sha: str, size: int) -> bytes:
    """Acquires, reads and releases one input; returns its bytes."""
    path = await cache.acquire(sha, size, source.fetch)
    try:
        return path.read_bytes()
    finally:
        cache.release(sha)


def on_disk(cache: InputCache) -> set[str]:
    return {p.name for p in cache.root.glob("??/*")}


# ---- references ------------------------------------------------------------------------------------------


def test_stored_form_references_are_found_and_the_prompt_is_rewritten_as_a_copy():
    a, b = picture(1), picture(2)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": ref(a, "a.png")}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": ref(b, "b.png"), "channel": "red"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    refs = find_input_refs(prompt)
    assert [(r.node_id, r.input_name, r.sha256, r.name, r.size) for r in refs] == [
        ("1", "image", sha256(a), "a.png", len(a)),
        ("2", "image", sha256(b), "b.png", len(b)),
    ]
    before = json.dumps(prompt, sort_keys=True)
    out = rewrite_prompt(prompt, {("1", "image"): "comfymq/x/a.png", ("2", "image"): "comfymq/y/b.png"})
    assert out["1"]["inputs"]["image"] == "comfymq/x/a.png"
    assert out["2"]["inputs"] == {"image": "comfymq/y/b.png", "channel": "red"}
    assert out["3"] is prompt["3"]
    assert json.dumps(prompt, sort_keys=True) == before, "the job's own prompt is not changed"
    assert find_input_refs(out) == []
    assert subfolder_for(sha256(a)) == "comfymq/" + sha256(a)[:16]


@pytest.mark.parametrize(
    "value,says",
    [
        ({"comfymq_input": "ABC"}, "64 lowercase hex"),
        ({"comfymq_input": "A" * 64, "name": "x.png", "size": 1}, "64 lowercase hex"),
        ({"comfymq_input": "a" * 64}, "lacks its name or size"),  # what a client writes, never rewritten by the host
        ({"comfymq_input": "a" * 64, "name": "x.png"}, "lacks its name or size"),
        ({"comfymq_input": "a" * 64, "name": "../x.png", "size": 1}, "not a single file name"),
        ({"comfymq_input": "a" * 64, "name": "sub\\x.png", "size": 1}, "not a single file name"),
        ({"comfymq_input": "a" * 64, "name": "..", "size": 1}, "not a usable file name"),
        ({"comfymq_input": "a" * 64, "name": "", "size": 1}, "non-empty"),
        ({"comfymq_input": "a" * 64, "name": "x\n.png", "size": 1}, "control character"),
        ({"comfymq_input": "a" * 64, "name": "x.png [output]", "size": 1}, "folder annotation"),
        ({"comfymq_input": "a" * 64, "name": "x" * 256, "size": 1}, "longer than 255"),
        ({"comfymq_input": "a" * 64, "name": "x.png", "size": -1}, "whole number"),
        ({"comfymq_input": "a" * 64, "name": "x.png", "size": True}, "whole number"),
        ({"comfymq_input": "a" * 64, "name": "x.png", "size": 1.5}, "whole number"),
    ],
)
def test_a_malformed_reference_names_its_node_and_input(value, says):
    prompt = {"7": {"class_type": "LoadImage", "inputs": {"image": value}}}
    with pytest.raises(InputRefError) as e:
        find_input_refs(prompt)
    assert "node 7 input 'image'" in str(e.value) and says in str(e.value), str(e.value)
    assert e.value.node_id == "7"


# ---- the cache, with a file source -------------------------------------------------------------------------


@aio
async def test_the_least_recently_used_files_go_first_when_the_bytes_pass_the_bound(tmp_path, source):
    cache = open_cache(tmp_path, 300)
    a, b, c, d = (source.put(bytes([i]) * 100) for i in range(4))
    for i, sha in enumerate((a, b, c)):
        assert await use(cache, source, sha, 100) == bytes([i]) * 100
    assert on_disk(cache) == {a, b, c} and cache.total_bytes == 300
    await use(cache, source, a, 100)  # a is used again: b is now the least recently used
    await use(cache, source, d, 100)
    assert on_disk(cache) == {a, c, d}, "b (least recently used) went to make room for d"
    assert set(cache.cached()) == {a, c, d} and cache.total_bytes == 300
    assert source.calls == Counter({a: 1, b: 1, c: 1, d: 1}), "a came from the cache the second time"
    assert await use(cache, source, b, 100) == bytes([1]) * 100
    assert source.calls[b] == 2, "b was fetched again"
    assert on_disk(cache) == {a, d, b}


@aio
async def test_files_a_running_job_holds_are_never_removed(tmp_path, source):
    cache = open_cache(tmp_path, 250)
    a, b, c = (source.put(bytes([i]) * 100) for i in range(3))
    path_a = await cache.acquire(a, 100, source.fetch)  # held, like an input of a running job
    path_b = await cache.acquire(b, 100, source.fetch)
    await use(cache, source, c, 100)  # 300 bytes > 250: only c (unheld) may go
    assert path_a.read_bytes() == bytes([0]) * 100 and path_b.read_bytes() == bytes([1]) * 100
    assert on_disk(cache) == {a, b}
    cache.release(a)  # a is free again: the least recently used free file goes when the bound needs it
    assert on_disk(cache) == {a, b}, "200 bytes fit"
    await use(cache, source, c, 100)
    assert on_disk(cache) == {b, c}
    cache.release(b)


@aio
async def test_an_input_larger_than_the_whole_bound_is_fetched_for_its_job_and_goes_after(tmp_path, source):
    cache = open_cache(tmp_path, 100)
    small = source.put(b"s" * 60)
    await use(cache, source, small, 60)
    big = source.put(b"B" * 250)
    path = await cache.acquire(big, 250, source.fetch)
    assert path.read_bytes() == b"B" * 250
    assert on_disk(cache) == {big}, "room was made: the small file went"
    cache.release(big)
    assert on_disk(cache) == set() and cache.total_bytes == 0
    zero = open_cache(tmp_path / "zero", 0)  # input_cache_bytes = 0: nothing stays between jobs
    assert await use(zero, source, small, 60) == b"s" * 60
    assert on_disk(zero) == set()


@aio
async def test_temps_are_removed_at_start_and_whole_files_are_kept_across_a_restart(tmp_path, source):
    cache = open_cache(tmp_path, 1000)
    a, b = source.put(b"a" * 100), source.put(b"b" * 100)
    await use(cache, source, a, 100)
    await use(cache, source, b, 100)
    # what a crash leaves: a fetch half-written in tmp/, under the name of an input not in the cache
    c = source.put(b"c" * 100)
    (cache.tmp / f"{c}.1234").write_bytes(b"c" * 10)
    (cache.tmp / "stray.part").write_bytes(b"x")
    old = time.time() - 3600
    os.utime(cache.path(a), (old, old))  # a was used long ago, b recently

    restarted = InputCache(cache.root, 200)
    restarted.open()
    assert list(restarted.tmp.iterdir()) == [], "half-written fetches are removed, never used"
    assert restarted.cached() == {a: 100, b: 100}
    assert await use(restarted, source, a, 100) == b"a" * 100
    assert source.calls[a] == 1, "a whole file in its place is used after a restart"
    assert await use(restarted, source, c, 100) == b"c" * 100
    assert source.calls[c] == 1, "c was fetched: its half-written temp was not taken for it"
    assert on_disk(restarted) == {a, c}, "b went: a was used after the restart, so b was the least recent"


@aio
async def test_a_fetch_that_fails_leaves_nothing(tmp_path, source):
    cache = open_cache(tmp_path, 1000)
    sha = source.put(b"good" * 10)
    (source.folder / sha[:2] / sha).write_bytes(b"evil" * 10)  # the source's bytes do not match their name
    with pytest.raises(RuntimeError, match="checksum"):
        await cache.acquire(sha, 40, source.fetch)
    with pytest.raises(ValueError, match="no such input"):
        await cache.acquire("0" * 64, 40, source.fetch)
    assert on_disk(cache) == set() and list(cache.tmp.iterdir()) == [] and cache.total_bytes == 0


@aio
async def test_concurrent_requests_for_one_input_fetch_it_once(tmp_path, source):
    cache = open_cache(tmp_path, 1000)
    sha = source.put(b"z" * 300)
    source.hold()
    joined = []
    waiters = [
        asyncio.ensure_future(cache.acquire(sha, 300, source.fetch, on_fetch=lambda i=i: joined.append(i)))
        for i in range(4)
    ]
    await asyncio.to_thread(source.waiting.acquire, True, 10)  # the one fetch reached the source
    await asyncio.sleep(0.1)
    assert sorted(joined) == [0, 1, 2, 3], "every caller was told it waits for a fetch"
    source.release()
    paths = await asyncio.gather(*waiters)
    assert source.calls[sha] == 1
    assert {p.read_bytes() for p in paths} == {b"z" * 300}
    for _ in waiters:
        cache.release(sha)


@aio
async def test_when_a_shared_fetch_fails_the_waiters_fetch_for_themselves(tmp_path, source):
    """The first job's fetch may fail for that job alone (its lease ended): the others try with their own."""
    cache = open_cache(tmp_path, 1000)
    sha = source.put(b"w" * 50)
    source.hold()
    source.fail_next(ValueError("refused: not this job's input"))
    first = asyncio.ensure_future(cache.acquire(sha, 50, source.fetch))
    await asyncio.to_thread(source.waiting.acquire, True, 10)
    second = asyncio.ensure_future(cache.acquire(sha, 50, source.fetch))
    await asyncio.sleep(0.05)
    source.release()
    with pytest.raises(ValueError, match="not this job's"):
        await first
    assert (await second).read_bytes() == b"w" * 50
    assert source.calls[sha] == 2
    cache.release(sha)


@aio
async def test_a_caller_cancelled_during_a_fetch_stops_waiting_and_the_file_still_lands(tmp_path, source):
    cache = open_cache(tmp_path, 1000)
    sha = source.put(b"c" * 70)
    source.hold()
    caller = asyncio.ensure_future(cache.acquire(sha, 70, source.fetch))
    await asyncio.to_thread(source.waiting.acquire, True, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    source.release()
    await asyncio.to_thread(wait_for, lambda: sha in cache.cached(), 10, "the fetch to finish")
    assert await use(cache, source, sha, 70) == b"c" * 70
    assert source.calls[sha] == 1


# ---- uploads into a real stand-in ComfyUI, and the rewritten prompt run there ------------------------------------


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """One stand-in ComfyUI (v0.8.0) process for this module's upload tests: (its URL, its input folder,
    its output folder)."""
    comfyuis = ComfyUIs("standin-0.8.0", tmp_path_factory.mktemp("comfy"))
    try:
        url = comfyuis.start("c1")
        yield url, comfyuis.input_dir("c1"), comfyuis.output_dir("c1")
    finally:
        comfyuis.stop_all()


async def run_on(client: ComfyClient, prompt: dict, output: Path) -> bytes:
    """Posts the prompt and returns the pixels of the PNG its node 3 saved."""
    pid = await client.submit(prompt, prompt_id=str(uuid.uuid4()), extra_pnginfo={})
    for _ in range(400):
        h = await client.history(pid)
        if h is not None:
            break
        await asyncio.sleep(0.05)
    assert h is not None and h["status"]["status_str"] == "success", h
    [image] = h["outputs"]["3"]["images"]
    return read_png((output / image["subfolder"] / image["filename"]).read_bytes())[0].pixels


@aio
async def test_an_input_is_uploaded_into_its_own_folder_and_the_loader_reads_it(tmp_path, source, comfy):
    url, input_dir, output_dir = comfy
    data = picture(10)
    sha = source.put(data)
    resolver = InputResolver(open_cache(tmp_path, 1 << 20))
    prompt = invert_graph(ref(data))
    seen = []
    async with ComfyClient(url) as client:
        prepared = await resolver.prepare(prompt, client, source.fetch, lambda r, d, t: seen.append((r, d, t)))
        value = prepared.prompt["1"]["inputs"]["image"]
        assert value == f"comfymq/{sha[:16]}/x.png"
        assert prompt["1"]["inputs"]["image"] == ref(data), "the job's prompt is left as it was"
        assert (input_dir / "comfymq" / sha[:16] / "x.png").read_bytes() == data
        assert await run_on(client, prepared.prompt, output_dir) == inverted(data)
        prepared.release()
    assert [(r.name if r else None, d, t) for r, d, t in seen] == [
        ("x.png", 0, len(data)),
        ("x.png", len(data), len(data)),
        (None, len(data), len(data)),
    ], "progress: the fetch starts, ends, all inputs are in"


@aio
async def test_the_same_name_with_other_bytes_in_another_job_gets_its_own_file(tmp_path, source, comfy):
    url, input_dir, output_dir = comfy
    first, second = picture(21), picture(22)
    assert first != second
    for data in (first, second):
        source.put(data)
    resolver = InputResolver(open_cache(tmp_path, 1 << 20))
    async with ComfyClient(url) as client:
        one = await resolver.prepare(invert_graph(ref(first, "same.png")), client, source.fetch)
        two = await resolver.prepare(invert_graph(ref(second, "same.png")), client, source.fetch)
        v1, v2 = one.prompt["1"]["inputs"]["image"], two.prompt["1"]["inputs"]["image"]
        assert v1 != v2 and v1.endswith("/same.png") and v2.endswith("/same.png")
        assert (input_dir / v1).read_bytes() == first and (input_dir / v2).read_bytes() == second
        assert await run_on(client, one.prompt, output_dir) == inverted(first)
        assert await run_on(client, two.prompt, output_dir) == inverted(second)
        one.release()
        two.release()


@aio
async def test_uploading_again_is_idempotent_and_a_file_gone_from_comfyui_is_uploaded_again(tmp_path, source, comfy):
    url, input_dir, output_dir = comfy
    data = picture(30)
    sha = source.put(data)
    folder = input_dir / "comfymq" / sha[:16]
    cache = open_cache(tmp_path, 1 << 20)
    uploads = ComfyUploads()
    resolver = InputResolver(cache, uploads)
    async with ComfyClient(url) as client:
        values = []
        for _ in range(2):
            prepared = await resolver.prepare(invert_graph(ref(data, "again.png")), client, source.fetch)
            values.append(prepared.prompt["1"]["inputs"]["image"])
            prepared.release()
        assert values[0] == values[1] and uploads.uploads == 1, "ComfyUI still has it: no second upload"
        # a new worker process (nothing remembered) uploads again: ComfyUI keeps the name, writes nothing new
        fresh = InputResolver(cache, ComfyUploads())
        again = await fresh.prepare(invert_graph(ref(data, "again.png")), client, source.fetch)
        assert again.prompt["1"]["inputs"]["image"] == values[0]
        again.release()
        assert sorted(os.listdir(folder)) == ["again.png"]
        # the file was removed from ComfyUI's input folder (or ComfyUI came back with another one): uploaded again
        (folder / "again.png").unlink()
        back = await resolver.prepare(invert_graph(ref(data, "again.png")), client, source.fetch)
        assert uploads.uploads == 2 and (folder / "again.png").read_bytes() == data
        assert await run_on(client, back.prompt, output_dir) == inverted(data)
        back.release()
    assert source.calls[sha] == 1, "fetched from the host once; the cache served the rest"


@aio
async def test_the_name_comfyui_answers_is_the_one_the_prompt_uses(tmp_path, source, comfy):
    """Other bytes already sit under the name in the input's folder (a file ComfyUI left half-written, or someone
    else's): ComfyUI stores the upload as "taken (1).png", and the prompt names that file."""
    url, input_dir, output_dir = comfy
    data = picture(40)
    sha = source.put(data)
    folder = input_dir / "comfymq" / sha[:16]
    folder.mkdir(parents=True)
    (folder / "taken.png").write_bytes(data[:20])
    resolver = InputResolver(open_cache(tmp_path, 1 << 20))
    async with ComfyClient(url) as client:
        prepared = await resolver.prepare(invert_graph(ref(data, "taken.png")), client, source.fetch)
        assert prepared.prompt["1"]["inputs"]["image"] == f"comfymq/{sha[:16]}/taken (1).png"
        assert await run_on(client, prepared.prompt, output_dir) == inverted(data)
        prepared.release()


@aio
async def test_one_input_named_by_two_nodes_is_fetched_and_uploaded_once(tmp_path, source, comfy):
    url, input_dir, output_dir = comfy
    data = picture(50)
    sha = source.put(data)
    uploads = ComfyUploads()
    resolver = InputResolver(open_cache(tmp_path, 1 << 20), uploads)
    prompt = invert_graph(ref(data, "twice.png"))
    prompt["4"] = {"class_type": "LoadImageMask", "inputs": {"image": ref(data, "twice.png"), "channel": "red"}}
    async with ComfyClient(url) as client:
        prepared = await resolver.prepare(prompt, client, source.fetch)
    assert prepared.prompt["1"]["inputs"]["image"] == prepared.prompt["4"]["inputs"]["image"]
    assert source.calls[sha] == 1 and uploads.uploads == 1
    prepared.release()


@aio
async def test_failures_say_whether_the_job_may_run_again(tmp_path, source):
    data = picture(60)
    source.put(data)
    resolver = InputResolver(open_cache(tmp_path, 1 << 20))
    async with ComfyClient("http://127.0.0.1:9") as nowhere:  # never reached: each fails before an upload

        async def failure(prompt, fetch=source.fetch) -> InputFailure:
            with pytest.raises(InputFailure) as e:
                await resolver.prepare(prompt, nowhere, fetch)
            return e.value

        bad = await failure(invert_graph({"comfymq_input": sha256(data)}))
        assert (bad.kind, bad.retryable, bad.node_id) == ("input_invalid", False, "1")
        refused = await failure(invert_graph(ref(b"not stored")))
        assert (refused.kind, refused.retryable) == ("input_refused", False)
        assert "no such input" in str(refused) and refused.error["node_id"] == "1"

        def lost(sha, dest):  # what the native fetch says when a restarted host does not know the worker yet
            raise RuntimeError("the link to the host was lost (refused by the broker: unknown worker: say HELLO first)")

        unavailable = await failure(invert_graph(ref(b"elsewhere")), lost)
        assert (unavailable.kind, unavailable.retryable) == ("input_unavailable", True)
        assert "link to the host was lost" in str(unavailable)
        wrong_size = await failure(invert_graph({**ref(data), "size": len(data) + 1}))
        assert (wrong_size.kind, wrong_size.retryable) == ("input_invalid", False)
        assert f"has {len(data)} bytes" in str(wrong_size)
    assert resolver.cache._held == Counter(), "a failed prepare holds nothing"


# ---- the bridge, with the real native fetch from a host in this process --------------------------------------


def host_input(service, data: bytes) -> str:
    """Puts a file where the host's broker serves inputs from (the input store's layout)."""
    sha = sha256(data)
    path = Path(service.data_dir) / "inputs" / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def artifact_pixels(service, job: dict) -> bytes:
    [art] = job["artifacts"]
    return read_png((service.artifact_root / art["path"]).read_bytes())[0].pixels


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_a_job_with_an_input_runs_on_a_comfyui_that_never_had_it(rig):
    service, comfy = rig.service, rig.comfy
    data = picture(70)
    sha = host_input(service, data)
    jid = service.store.enqueue(invert_graph(ref(data, "photo.png")))["id"]
    j = done(service, jid)
    assert j["state"] == "succeeded", j["error"]
    assert artifact_pixels(service, j) == inverted(data)
    cached = rig.tmp / "w1" / "inputs" / sha[:2] / sha
    assert cached.read_bytes() == data, "the worker's cache has it for later jobs"
    requests = comfy.requests()
    assert requests.index("POST /upload/image") < requests.index("POST /prompt")
    [entry] = comfy.prompts_for(jid).values()
    assert entry["prompt"][2]["1"]["inputs"]["image"] == f"comfymq/{sha[:16]}/photo.png"
    # a second job with the same input: served from the worker's cache, nothing uploaded again
    again = service.store.enqueue(invert_graph(ref(data, "photo.png"), prefix="again"))["id"]
    assert done(service, again)["state"] == "succeeded"
    assert comfy.requests().count("POST /upload/image") == 1


def test_an_input_the_host_does_not_have_fails_the_job_without_a_retry(rig):
    service = rig.service
    jid = service.store.enqueue(invert_graph(ref(picture(71), "gone.png")), max_attempts=3)["id"]
    j = done(service, jid)
    assert j["state"] == "failed" and j["attempts"] == 1
    error = service.store.get(jid)["error"]
    assert error["type"] == "input_refused" and error["node_id"] == "1", error
    assert "gone.png" in error["message"]
    assert "POST /prompt" not in rig.comfy.requests()


def test_a_malformed_reference_fails_the_job_without_a_retry(rig):
    service = rig.service
    jid = service.store.enqueue(invert_graph({"comfymq_input": "f" * 64, "name": "a/b.png", "size": 1}))["id"]
    j = done(service, jid)
    assert j["state"] == "failed" and j["attempts"] == 1
    error = service.store.get(jid)["error"]
    assert error["type"] == "input_invalid" and "node 1 input 'image'" in error["message"], error


class WrappedFetch:
    """The native worker client with fetch_input wrapped: hold() makes fetches wait (after `started` is set) until
    release(); fail_next(e) makes the next one raise e instead of fetching. Otherwise the native fetch runs."""

    def __init__(self):
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.failures: list[Exception] = []
        self.calls = 0

    def install(self, monkeypatch) -> None:
        from comfy_nodes import native as loader
        from comfy_nodes.worker import bridge as bridge_module

        real = loader.load()
        wrapper = self

        class Client(real.WorkerClient):
            def fetch_input(self, job_id, token, sha256, dest, *, timeout=600.0):
                wrapper.calls += 1
                wrapper.started.set()
                assert wrapper.gate.wait(30), "a held fetch was never released"
                if wrapper.failures:
                    raise wrapper.failures.pop(0)
                return super().fetch_input(job_id, token, sha256, dest, timeout=timeout)

        class Native:
            def __getattr__(self, name):
                return Client if name == "WorkerClient" else getattr(real, name)

        monkeypatch.setattr(bridge_module.native, "load", lambda: Native())


@pytest.fixture
def wrapped_rig(tmp_path, monkeypatch):
    fetch = WrappedFetch()
    fetch.install(monkeypatch)
    r = Rig(tmp_path)
    try:
        yield r, fetch
    finally:
        fetch.gate.set()
        r.close()


def test_a_fetch_that_fails_on_the_way_is_retried(wrapped_rig):
    """(native fetch wrapped: its first call fails as a lost link does)"""
    rig, fetch = wrapped_rig
    from comfy_nodes import native as loader

    fetch.failures.append(loader.load().ComfyMQError("the link to the host was lost during the fetch"))
    data = picture(72)
    host_input(rig.service, data)
    jid = rig.service.store.enqueue(invert_graph(ref(data)), max_attempts=2)["id"]
    j = done(rig.service, jid)
    assert j["state"] == "succeeded" and j["attempts"] == 2, j
    first = rig.service.store.get(jid)["history"][0]
    assert "input_unavailable" in json.dumps(first) and "link to the host was lost" in json.dumps(first), first
    assert artifact_pixels(rig.service, j) == inverted(data)


def test_a_job_cancelled_while_its_input_is_fetched_posts_nothing(wrapped_rig):
    """(native fetch wrapped: held at its start until the cancel has gone through)"""
    rig, fetch = wrapped_rig
    data = picture(73)
    host_input(rig.service, data)
    fetch.gate.clear()
    jid = rig.service.store.enqueue(invert_graph(ref(data)))["id"]
    assert fetch.started.wait(20), "the fetch started"
    record = rig.tmp / "w1" / "runs" / f"{jid}.json"
    assert not record.exists(), "no run record before the inputs are ready"
    rig.service.store.cancel(jid, "user asked")
    assert state(rig.service, jid)["state"] == "cancelled"
    wait_for(lambda: jid not in rig.bridge._by_job, 20, "the bridge to end the run")
    fetch.gate.set()
    time.sleep(0.5)  # the held fetch ends now (refused or done): still nothing may reach ComfyUI
    requests = rig.comfy.requests()
    assert "POST /prompt" not in requests and "POST /upload/image" not in requests, requests
    assert not record.exists()
    # the worker goes on taking jobs
    other = rig.service.store.enqueue(invert_graph(ref(data), prefix="next"))["id"]
    assert done(rig.service, other)["state"] == "succeeded"
