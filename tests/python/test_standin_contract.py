"""The stand-in ComfyUI (tests/standin) against recordings of the real ComfyUI v0.8.0, and its other versions.

Each test replays a recorded scenario (the same prompts, taken from the recording where it holds them) on a fresh
stand-in served by pytest-aiohttp, and compares HTTP status codes, the JSON bodies and the websocket messages
with the recording: structure (keys, list lengths, JSON types: int and float differ) and, by default, values too;
only values that legitimately differ (ids, timestamps, create_time, queue numbers, tracebacks, tensor reprs,
machine facts) are compared by type alone. `diff` reports the path of the first mismatch.

Nothing here waits for time to pass: every wait is for a message or a state, with a generous timeout; the
"running prompt" of scenario 08 is held at a step by the stand-in's step gate (state.hold_steps).
The recordings (copied from the real ComfyUI v0.8.0, see their README) live in tests/standin/recordings
(override with COMFYUI_API_RECORDINGS).

The last section pins what the stand-in serves as ComfyUI v0.3.64 and as the current ComfyUI (--comfyui-version,
tests/standin/versions.py; the README of the recordings says where each fact comes from): the jobs API with its
status filter, pagination and cancel endpoints, strict and unique prompt ids, /features and the feature_flags
handshake, /system_stats, and what the frontend's strict reading of GET /api/jobs needs.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import hashlib
import json
import os
import re
import struct
import sys
import uuid
import zlib
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from conftest import REPO_ROOT

from tests.standin import versions
from tests.standin.nodes import Image, png_bytes, png_text_chunks, read_png
from tests.standin.server import make_app

pytestmark = pytest.mark.asyncio

RECORDINGS = Path(
    os.environ.get("COMFYUI_API_RECORDINGS", Path(__file__).resolve().parents[1] / "standin" / "recordings")
)
if not (RECORDINGS / "01_empty_save.json").is_file():
    pytest.fail(
        "the ComfyUI API recordings are not at %s (set COMFYUI_API_RECORDINGS)" % RECORDINGS, pytrace=False
    )  # never skip: without them the stand-in is checked against nothing

CLIENT = "probe-client-1"  # the client id the recordings used
TIMEOUT = 20.0  # seconds; only a guard against hangs
MODELS = ["a.safetensors", "b.safetensors"]

# Values that legitimately differ between the real server and a replay: compared by type only.
LOOSE = ("**.prompt_id", "**.timestamp", "**.create_time", "**.sid")
QUEUE_ENTRY_LOOSE = ("0", "1")  # [number, prompt_id, ...]


def rec(name: str):
    return json.loads((RECORDINGS / name).read_text())


# ---- comparing with the recordings ----------------------------------------------------------------------


def jtype(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _match(pattern: tuple, path: tuple) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _match(pattern[1:], path[1:])


def _pats(patterns) -> list:
    return [tuple(p.split(".")) for p in patterns]


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, bytes) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def diff(expected, actual, *, loose=(), var_len=(), values=True, _path=(), _lp=None, _vp=None):
    """None if `actual` matches the recorded `expected`, else the first mismatch as "$.path: ...".

    Objects need the same keys, lists the same length, scalars the same JSON type and (when `values`) the same
    value. Path patterns (dot-separated segments, fnmatch per segment, "**" for any depth; list indices are
    segments): `loose` paths are compared by structure and type only (their whole subtree); `var_len` lists may
    have any length (non-empty if the recording's is) and each item is compared, by type only, with the
    recording's first item."""
    lp = _pats(loose) if _lp is None else _lp
    vp = _pats(var_len) if _vp is None else _vp
    where = "$" + "".join("." + p for p in _path)
    te, ta = jtype(expected), jtype(actual)
    if te != ta:
        return "%s: recorded %s %s, got %s %s" % (where, te, _short(expected), ta, _short(actual))
    if values and any(_match(p, _path) for p in lp):
        values = False
    if te == "object":
        if set(expected) != set(actual):
            missing = sorted(set(expected) - set(actual))
            extra = sorted(set(actual) - set(expected))
            return "%s: keys differ: missing %s, unexpected %s" % (where, missing, extra)
        for k in expected:
            d = diff(expected[k], actual[k], values=values, _path=_path + (str(k),), _lp=lp, _vp=vp)
            if d:
                return d
        return None
    if te == "list":
        if any(_match(p, _path) for p in vp):
            if bool(expected) != bool(actual):
                return "%s: recorded %d items, got %d" % (where, len(expected), len(actual))
            for i, a in enumerate(actual):
                d = diff(expected[0], a, values=False, _path=_path + (str(i),), _lp=lp, _vp=vp)
                if d:
                    return d
            return None
        if len(expected) != len(actual):
            return "%s: recorded %d items %s, got %d %s" % (
                where,
                len(expected),
                _short(expected),
                len(actual),
                _short(actual),
            )
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            d = diff(e, a, values=values, _path=_path + (str(i),), _lp=lp, _vp=vp)
            if d:
                return d
        return None
    if values and expected != actual:
        return "%s: recorded %s, got %s" % (where, _short(expected), _short(actual))
    return None


def assert_matches(expected, actual, what: str, **kw):
    d = diff(expected, actual, **kw)
    assert d is None, "%s differs from the recording: %s" % (what, d)


def recorded_ws(entries: list) -> list:
    return [e["msg"] if isinstance(e, dict) and "msg" in e else e for e in entries]


def types(messages: list) -> list:
    return [m.get("type", "binary:%s" % m.get("event_type")) for m in messages]


def assert_ws_matches(expected: list, actual: list, what: str, **kw):
    """The same message types in the same order, each message matching its recording."""
    assert types(actual) == types(expected), "%s: message types differ from the recording" % what
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        assert_matches(e, a, "%s, message %d (%s)" % (what, i, types([e])[0]), **kw)


def by_values(history: dict) -> list:
    """A history response ({prompt_id: entry}) as its entries, each keyed by its own prompt_id."""
    for pid, entry in history.items():
        assert entry["prompt"][1] == pid
    return list(history.values())


def history_loose(extra=()) -> tuple:
    """Loose paths for by_values(history): the queue number and prompt id in each entry's "prompt"."""
    return LOOSE + ("*.prompt.0", "*.prompt.1") + tuple(extra)


HISTORY_TRACEBACKS = ("*.status.messages.*.1.traceback",)


# ---- talking to the stand-in ---------------------------------------------------------------------------


def _summarize_binary(data: bytes) -> dict:
    """A binary frame in the recordings' notation."""
    (event_type,) = struct.unpack(">I", data[:4])
    out = {"binary": True, "len": len(data), "event_type": event_type}
    if event_type == 4:
        (mlen,) = struct.unpack(">I", data[4:8])
        out["metadata"] = json.loads(data[8 : 8 + mlen])
        out["payload_sig"] = data[8 + mlen : 11 + mlen].hex()
    else:
        out["image_type"] = struct.unpack(">I", data[4:8])[0]
        out["payload_sig"] = data[8:11].hex()
    return out


class WsRecorder:
    """Reads a websocket in the background; take_until() hands out messages in arrival order."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: list = []
        self.cursor = 0
        self.closed = False
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(msg.data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.messages.append(_summarize_binary(msg.data))
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()

    async def take_until(self, pred, timeout: float = TIMEOUT) -> list:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i in range(self.cursor, len(self.messages)):
                if pred(self.messages[i]):
                    out = self.messages[self.cursor : i + 1]
                    self.cursor = i + 1
                    return out
            if self.closed:
                raise AssertionError("websocket closed while waiting; got %s" % types(self.messages[self.cursor :]))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise AssertionError(
                    "no matching websocket message within %s s; got %s" % (timeout, types(self.messages[self.cursor :]))
                ) from None

    async def take(self, n: int = 1) -> list:
        """The next n messages."""
        target = self.cursor + n - 1
        return await self.take_until(lambda m: any(x is m for x in self.messages[target : target + 1]))

    async def close(self):
        await self.ws.close()
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass


def done(prompt_id):
    """The last message of a prompt with a client: executing with node null."""
    return lambda m: (
        m.get("type") == "executing" and m["data"].get("node") is None and m["data"].get("prompt_id") == prompt_id
    )


def status_is(n):
    return lambda m: m.get("type") == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == n


class Comfy:
    def __init__(self, client, app, output_dir: Path):
        self.client = client
        self.state = app["comfy"]
        self.output_dir = output_dir
        self.recorders: list = []

    async def ws(self, client_id: str | None = CLIENT, feature_flags: dict | None = None) -> WsRecorder:
        path = "/ws" + ("?clientId=%s" % client_id if client_id else "")
        ws = await self.client.ws_connect(path)
        if feature_flags is not None:
            await ws.send_str(json.dumps({"type": "feature_flags", "data": feature_flags}))
        r = WsRecorder(ws)
        self.recorders.append(r)
        return r

    async def post_prompt(self, prompt, **fields) -> tuple:
        body = {"prompt": prompt, **fields}
        resp = await self.client.post("/prompt", json=body)
        return resp.status, await resp.json()

    async def run(self, ws: WsRecorder, prompt, **fields) -> tuple:
        """Posts with client_id CLIENT and returns (post body, the websocket messages up to executing null)."""
        status, body = await self.post_prompt(prompt, client_id=CLIENT, **fields)
        assert status == 200, body
        return body, await ws.take_until(done(body["prompt_id"]))

    async def get_json(self, path: str, status: int = 200):
        resp = await self.client.get(path)
        assert resp.status == status, (path, resp.status, await resp.text())
        return await resp.json() if status == 200 else None


@pytest_asyncio.fixture
async def comfy(aiohttp_client, tmp_path):
    output_dir = tmp_path / "output"
    app = make_app(
        output_dir, models=MODELS, input_dir=tmp_path / "input", temp_dir=tmp_path / "temp", step_delay=0.005
    )
    c = Comfy(await aiohttp_client(app), app, output_dir)
    try:
        yield c
    finally:
        for r in c.recorders:
            await r.close()


# ---- the comparison itself must be able to fail ----------------------------------------------------------


async def test_diff_reports_the_first_mismatch_with_its_path():
    recorded = {"a": [1, {"b": 0.0, "c": None}], "d": "x", "prompt_id": "p1", "tb": ["f1", "f2"]}
    same = copy.deepcopy(recorded)
    assert diff(recorded, same) is None
    assert diff(recorded, {**same, "d": "y"}) == '$.d: recorded "x", got "y"'
    assert diff(recorded, {**same, "d": "y"}, values=False) is None
    assert diff(recorded, {**same, "a": [1, {"b": 0, "c": None}]}) == "$.a.1.b: recorded float 0.0, got int 0"
    assert diff(recorded, {**same, "a": [1, {"b": 0.0, "c": 1}]}).startswith("$.a.1.c: recorded null")
    assert diff(recorded, {**same, "a": [1]}).startswith("$.a: recorded 2 items")
    assert "missing ['d']" in diff(recorded, {k: v for k, v in same.items() if k != "d"})
    assert "unexpected ['e']" in diff(recorded, {**same, "e": 1})
    assert diff(recorded, {**same, "prompt_id": "p2"}).startswith("$.prompt_id")
    assert diff(recorded, {**same, "prompt_id": "p2"}, loose=LOOSE) is None
    assert diff(recorded, {**same, "prompt_id": 2}, loose=LOOSE).startswith("$.prompt_id: recorded str")
    assert diff(recorded, {**same, "tb": ["g"] * 5}, var_len=("tb",)) is None
    assert diff(recorded, {**same, "tb": []}, var_len=("tb",)).startswith("$.tb: recorded 2 items, got 0")
    assert diff(recorded, {**same, "tb": ["g", 3]}, var_len=("tb",)).startswith("$.tb.1: recorded str")
    assert diff({"x": {"y": [{"prompt_id": "a"}]}}, {"x": {"y": [{"prompt_id": "b"}]}}, loose=LOOSE) is None
    with pytest.raises(AssertionError):
        assert_ws_matches([{"type": "status", "data": {}}], [{"type": "progress", "data": {}}], "ws")


# ---- 00, 01, 01b, 02: connect, a simple prompt, /view, the same prompt again (cached) ------------------------


async def test_00_first_message_on_connect(comfy):
    ws = await comfy.ws(CLIENT)
    assert_matches(recorded_ws(rec("00_ws_on_connect.json")), await ws.take(1), "on-connect message")
    other = await comfy.ws(None)  # without clientId the server makes up a sid
    (first,) = await other.take(1)
    assert_matches(recorded_ws(rec("00_ws_on_connect.json"))[0], first, "on-connect message", loose=LOOSE)
    assert re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])


async def _scenario_01(comfy, ws, r01):
    prompt = r01["queue_right_after_post"]["queue_running"][0][2]
    comfy.state.pause()  # so the entry can be seen in the queue before it runs
    status, body = await comfy.post_prompt(prompt, client_id=CLIENT)
    assert status == r01["post_status"]
    assert_matches(r01["post_response"], body, "POST /prompt response", loose=LOOSE)
    pid = body["prompt_id"]
    queue = await comfy.get_json("/queue")
    assert queue["queue_running"] == [] and len(queue["queue_pending"]) == 1
    assert_matches(
        r01["queue_right_after_post"]["queue_running"][0],
        queue["queue_pending"][0],
        "queued entry",
        loose=QUEUE_ENTRY_LOOSE + LOOSE,
    )
    assert queue["queue_pending"][0][1] == pid
    comfy.state.resume()
    messages = await ws.take_until(done(pid))
    return pid, messages


async def test_01_empty_image_save(comfy):
    r01 = rec("01_empty_save.json")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    pid, messages = await _scenario_01(comfy, ws, r01)
    assert_ws_matches(recorded_ws(r01["ws"]), messages, "01 websocket", loose=LOOSE)
    history = await comfy.get_json("/history/%s" % pid)
    assert list(history) == [pid]
    assert_matches(by_values(r01["history"]), by_values(history), "01 history", loose=history_loose())
    assert_matches(r01["queue_after"], await comfy.get_json("/queue"), "queue after")
    png = (comfy.output_dir / "probe_00001_.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads(png_text_chunks(png)["prompt"]) == r01["queue_right_after_post"]["queue_running"][0][2]
    assert comfy.state.files_written[0]["filename"] == "probe_00001_.png"
    # every route is also under /api
    assert await comfy.get_json("/api/history/%s" % pid) == history


async def test_01b_view_serves_the_output_file(comfy):
    r01, rview = rec("01_empty_save.json"), rec("01b_view.json")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    await _scenario_01(comfy, ws, r01)
    for prefix in ("", "/api"):
        resp = await comfy.client.get(
            prefix + "/view", params={"filename": "probe_00001_.png", "subfolder": "", "type": "output"}
        )
        body = await resp.read()
        assert resp.status == rview["status"]
        for name in rview["headers"]:
            assert name in resp.headers, "header %s missing" % name
        for name in ("Content-Disposition", "Content-Type", "Content-Security-Policy", "Accept-Ranges"):
            assert resp.headers[name] == rview["headers"][name], name
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', resp.headers["Etag"])
        assert (
            int(resp.headers["Content-Length"]) == len(body) == (comfy.output_dir / "probe_00001_.png").stat().st_size
        )
        assert body[:8].hex() == rview["sig"]


async def test_02_same_prompt_again_is_cached(comfy):
    r01, r02 = rec("01_empty_save.json"), rec("02_same_again_cached.json")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    await _scenario_01(comfy, ws, r01)
    prompt = r02["queue_right_after_post"]["queue_running"][0][2]
    status, body = await comfy.post_prompt(prompt, client_id=CLIENT)
    assert status == r02["post_status"]
    assert_matches(r02["post_response"], body, "POST /prompt response", loose=LOOSE)  # number 1
    messages = await ws.take_until(done(body["prompt_id"]))
    assert_ws_matches(recorded_ws(r02["ws"]), messages, "02 websocket", loose=LOOSE)
    history = await comfy.get_json("/history/%s" % body["prompt_id"])
    assert_matches(by_values(r02["history"]), by_values(history), "02 history", loose=history_loose())
    assert sorted(os.listdir(comfy.output_dir)) == ["probe_00001_.png"]  # the cached SaveImage wrote nothing


# ---- 03: progress and a custom node; 04: a runtime error ------------------------------------------------------


async def test_03_progress_and_custom_node(comfy):
    r03 = rec("03_progress_and_custom.json")
    entry = r03["queue_right_after_post"]["queue_running"][0]
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    extra_data = {k: v for k, v in entry[3].items() if k not in ("client_id", "create_time")}
    body, messages = await comfy.run(ws, entry[2], extra_data=extra_data)
    assert_matches(r03["post_response"], body, "POST /prompt response", loose=LOOSE + ("number",))
    assert_ws_matches(recorded_ws(r03["ws"]), messages, "03 websocket", loose=LOOSE)
    history = await comfy.get_json("/history/%s" % body["prompt_id"])
    assert_matches(
        by_values(r03["history"]), by_values(history), "03 history", loose=history_loose(("*.prompt.4",))
    )  # outputs_to_execute: a set's order in ComfyUI
    assert sorted(history[body["prompt_id"]]["prompt"][4]) == sorted(entry[4])
    text = png_text_chunks((comfy.output_dir / "probe_prog_00001_.png").read_bytes())
    assert json.loads(text["workflow"]) == entry[3]["extra_pnginfo"]["workflow"]
    assert json.loads(text["prompt"]) == entry[2]


async def test_04_runtime_error(comfy):
    r04 = rec("04_runtime_error.json")
    entry = r04["queue_right_after_post"]["queue_running"][0]
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    body, messages = await comfy.run(ws, entry[2])
    error_loose = LOOSE + ("**.current_inputs.images",)  # a tensor's repr there
    assert_ws_matches(recorded_ws(r04["ws"]), messages, "04 websocket", loose=error_loose, var_len=("data.traceback",))
    history = await comfy.get_json("/history/%s" % body["prompt_id"])
    assert_matches(
        by_values(r04["history"]),
        by_values(history),
        "04 history",
        loose=history_loose(error_loose),
        var_len=HISTORY_TRACEBACKS,
    )
    assert not (comfy.output_dir / "never_00001_.png").exists()
    error = messages[-3]["data"]
    assert error["traceback"][-1].rstrip().endswith("raise RuntimeError(message)")


# ---- 05: validation failures ---------------------------------------------------------------------------

VALIDATION_CASES = {
    "05a_invalid_class.json": {"1": {"class_type": "NoSuchNode", "inputs": {}}},
    "05b_no_output_node.json": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    },
    "05c_bad_value.json": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    },
}


async def test_05_validation_failures(comfy):
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    for name, prompt in VALIDATION_CASES.items():
        r = rec(name)
        status, body = await comfy.post_prompt(prompt, client_id=CLIENT)
        assert status == r["post_status"] == 400, name
        assert body == r["post_response"], name
        assert_matches(r["queue_right_after_post"], await comfy.get_json("/queue"), name)
    # recorded "ws": [] - nothing was sent: the next message is the status of the next valid prompt
    status, body = await comfy.post_prompt(
        rec("01_empty_save.json")["queue_right_after_post"]["queue_running"][0][2], client_id=CLIENT
    )
    assert status == 200 and body["number"] == 3  # rejected prompts still used up a number, as recorded
    (first,) = await ws.take(1)
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}


async def test_05_more_validation_errors(comfy):
    """Errors the recordings don't show, in the shapes of ComfyUI's validate_inputs."""

    def save(src):
        return {"class_type": "SaveImage", "inputs": {"images": src, "filename_prefix": "x"}}

    def empty(**inputs):
        return {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0, **inputs}}

    cases = [
        ({"1": empty(width="wide"), "2": save(["1", 0])}, "invalid_input_type"),
        ({"1": empty(color=1 << 30), "2": save(["1", 0])}, "value_bigger_than_max"),
        (
            {
                "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "c.safetensors"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": save(["2", 0]),
            },
            "return_type_mismatch",
        ),
        ({"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}, "2": save(["1", 0])}, "required_input_missing"),
    ]
    for prompt, error_type in cases:
        status, body = await comfy.post_prompt(prompt)
        assert status == 400, body
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        errors = [e for n in body["node_errors"].values() for e in n["errors"]]
        assert errors and errors[0]["type"] == error_type, body
        assert set(errors[0]) == {"type", "message", "details", "extra_info"}
    status, body = await comfy.post_prompt({"1": {"inputs": {}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    resp = await comfy.client.post("/prompt", json={"client_id": "x"})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "no_prompt"


# ---- 07: assorted GET endpoints --------------------------------------------------------------------------


async def test_07_misc_get_endpoints(comfy):
    r07 = rec("07_misc_get.json")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    # the session behind 07 had run 01 .. 04 before; /history?max_items=2 returned 03's and 04's entries
    await comfy.run(ws, rec("01_empty_save.json")["queue_right_after_post"]["queue_running"][0][2])
    e03 = rec("03_progress_and_custom.json")["queue_right_after_post"]["queue_running"][0]
    await comfy.run(ws, e03[2], extra_data={"extra_pnginfo": e03[3]["extra_pnginfo"]})
    await comfy.run(ws, rec("04_runtime_error.json")["queue_right_after_post"]["queue_running"][0][2])

    machine = ("system.os", "system.ram_*", "system.python_version", "system.pytorch_version", "devices.*.*vram*")
    special = {
        "/history?max_items=2": dict(
            loose=history_loose(("**.current_inputs.images", "*.prompt.4")), var_len=HISTORY_TRACEBACKS
        ),
        "/system_stats": dict(loose=machine, var_len=("system.argv",)),
        "/probe/ping": dict(loose=("loaded_at",)),
    }
    for path, recorded in r07.items():
        resp = await comfy.client.get(path)
        assert resp.status == recorded["status"], path
        got = await resp.json()
        if path == "/history?max_items=2":
            assert_matches(by_values(recorded["json"]), by_values(got), path, **special[path])
        elif path == "/extensions":  # the recording lists the probe node's script; the stand-in has none
            assert got == []
        else:
            assert_matches(recorded["json"], got, path, **special.get(path, {}))
    assert_matches(
        rec("system_stats.json"), await comfy.get_json("/api/system_stats"), "/system_stats", **special["/system_stats"]
    )
    assert await comfy.get_json("/models/checkpoints") == MODELS
    assert await comfy.get_json("/models/loras") == []
    await comfy.get_json("/models/nonsense", status=404)


async def test_object_info_matches_the_recording(comfy):
    recorded = rec("object_info_excerpt.json")
    got = await comfy.get_json("/object_info")
    for name in ("EmptyImage", "SaveImage", "PreviewImage", "ImageInvert", "ImageScale", "KSampler"):
        assert_matches(recorded[name], got[name], "object_info %s" % name)
        assert await comfy.get_json("/api/object_info/%s" % name) == {name: got[name]}
    # COMBO choices are this instance's files: the configured models, the input folder's images
    ckpt = copy.deepcopy(recorded["CheckpointLoaderSimple"])
    ckpt["input"]["required"]["ckpt_name"][0] = MODELS
    assert_matches(ckpt, got["CheckpointLoaderSimple"], "object_info CheckpointLoaderSimple")
    for name in recorded["LoadImage"]["input"]["required"]["image"][0]:
        (Path(comfy.state.input_dir) / name).write_bytes(png_bytes(Image(2, 2)))
    assert_matches(
        recorded["LoadImage"], (await comfy.get_json("/object_info/LoadImage"))["LoadImage"], "object_info LoadImage"
    )
    assert await comfy.get_json("/object_info/NoSuchNode") == {}


# ---- 08: pending queue entries, POST /queue delete, POST /interrupt ------------------------------------------


async def test_08_queue_pending_delete_interrupt(comfy):
    r08 = rec("08_queue_pending_interrupt.json")
    mid = r08["queue_mid"]
    prompts = [mid["queue_running"][0][2]] + [e[2] for e in mid["queue_pending"]]
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    comfy.state.hold_steps(3)  # the first prompt stops after its third progress step until interrupted

    ids = []
    status, body = await comfy.post_prompt(prompts[0], client_id=CLIENT)
    assert status == 200
    ids.append(body["prompt_id"])
    messages = await ws.take_until(lambda m: m["type"] == "progress" and m["data"]["value"] == 3)
    for p in prompts[1:]:
        status, body = await comfy.post_prompt(p, client_id=CLIENT)
        assert status == 200
        ids.append(body["prompt_id"])

    queue = await comfy.get_json("/queue")
    entry_loose = (
        tuple("%s.*.%s" % (part, i) for part in ("queue_running", "queue_pending") for i in QUEUE_ENTRY_LOOSE) + LOOSE
    )
    assert_matches(mid, queue, "queue with one running and two pending", loose=entry_loose)
    assert [e[1] for e in queue["queue_running"] + queue["queue_pending"]] == ids

    resp = await comfy.client.post("/queue", json={"delete": [ids[2]]})
    assert resp.status == r08["delete_status"]
    resp = await comfy.client.post("/interrupt")
    assert resp.status == r08["interrupt_status"]
    messages += await ws.take_until(done(ids[0]))
    comfy.state.release_steps()
    messages += await ws.take_until(done(ids[1]))

    recorded = recorded_ws(r08["ws"])
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if m["type"] == "status"] == [
        m["data"]["status"]["exec_info"]["queue_remaining"] for m in recorded if m["type"] == "status"
    ]
    # status broadcasts interleave with a running prompt's events by timing; the rest is in recorded order
    assert_ws_matches(
        [m for m in recorded if m["type"] != "status"],
        [m for m in messages if m["type"] != "status"],
        "08 websocket (without status)",
        loose=LOOSE,
    )

    assert_matches(r08["queue_end"], await comfy.get_json("/queue"), "queue at the end")
    history = await comfy.get_json("/history/%s" % ids[0])
    assert_matches(
        by_values(r08["history_first"]), by_values(history), "interrupted prompt's history", loose=history_loose()
    )
    assert await comfy.get_json("/history/%s" % ids[2]) == {}


async def test_interrupt_targets_only_the_running_prompt(comfy):
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    slow = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 3600.0}}}
    status, body = await comfy.post_prompt(slow, client_id=CLIENT)
    pid = body["prompt_id"]
    await ws.take_until(lambda m: m["type"] == "executing" and m["data"]["node"] == "1")
    assert (await comfy.client.post("/interrupt", json={"prompt_id": "not-running"})).status == 200
    assert (await comfy.client.post("/api/interrupt", json={"prompt_id": pid})).status == 200
    messages = await ws.take_until(done(pid))
    assert [m["type"] for m in messages] == ["execution_interrupted", "status", "executing"]
    assert messages[0]["data"]["node_id"] == "1" and messages[0]["data"]["node_type"] == "SlowNode"
    history = (await comfy.get_json("/history/%s" % pid))[pid]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    # the flag of a wrong-target interrupt was never set, and an idle interrupt does not leak into the next prompt
    assert (await comfy.client.post("/interrupt")).status == 200
    body, messages = await comfy.run(ws, {"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0}}})
    assert messages[-3]["type"] == "execution_success"


async def test_queue_delete_and_clear_broadcast_status(comfy):
    """ComfyUI's PromptQueue: deleting the last pending entry wipes the queue (two status broadcasts)."""
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    comfy.state.pause()
    ids = []
    for i in range(4):
        prompt = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0, "tag": str(i)}}}
        status, body = await comfy.post_prompt(prompt, client_id=CLIENT)
        ids.append(body["prompt_id"])
    assert (await comfy.client.post("/queue", json={"delete": [ids[1], "unknown"]})).status == 200
    assert [e[1] for e in (await comfy.get_json("/queue"))["queue_pending"]] == [ids[0], ids[2], ids[3]]
    assert (await comfy.client.post("/api/queue", json={"clear": True})).status == 200
    assert await comfy.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    status, body = await comfy.post_prompt({"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0}}})
    assert (await comfy.client.post("/queue", json={"delete": [body["prompt_id"]]})).status == 200
    remaining = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in await ws.take(9)]
    # 4 puts, delete (one left of three), clear, put, delete of the last entry: wipe_queue's status, then its own
    assert remaining == [1, 2, 3, 4, 3, 0, 1, 0, 0]
    comfy.state.resume()
    assert await comfy.get_json("/history") == {}


async def test_caller_chosen_prompt_ids_are_accepted_even_twice(comfy):
    comfy.state.pause()
    prompt = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0}}}
    for _ in range(2):
        status, body = await comfy.post_prompt(prompt, prompt_id="my-own-id")
        assert status == 200 and body["prompt_id"] == "my-own-id"
    assert [e[1] for e in (await comfy.get_json("/queue"))["queue_pending"]] == ["my-own-id", "my-own-id"]
    comfy.state.resume()
    await comfy.state.wait_idle()
    assert list(await comfy.get_json("/history")) == ["my-own-id"]


async def test_reconnect_with_the_same_client_id_during_execution(comfy):
    old = await comfy.ws(CLIENT)
    await old.take(1)
    comfy.state.hold_steps(1)
    prompt = rec("03_progress_and_custom.json")["queue_right_after_post"]["queue_running"][0][2]
    status, body = await comfy.post_prompt(prompt, client_id=CLIENT)
    await old.take_until(lambda m: m["type"] == "progress")
    new = await comfy.ws(CLIENT)
    assert await new.take(2) == [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": CLIENT}},
        {"type": "executing", "data": {"node": "2"}},  # the node that is running, as ComfyUI sends on reconnect
    ]
    comfy.state.release_steps()
    messages = await new.take_until(done(body["prompt_id"]))
    assert [m["type"] for m in messages][-3:] == ["execution_success", "status", "executing"]
    assert old.messages[old.cursor :] == []  # the replaced socket gets nothing more


# ---- 10: binary previews, clients with and without feature flags, prompts without a client ------------------


async def test_10_clients_previews_and_no_client_prompts(comfy):
    r10 = rec("10_clients_binary.json")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ProbeProgress", "inputs": {"images": ["1", 0], "steps": 2, "preview": True}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "prev"}},
    }

    def variant(color):
        p = copy.deepcopy(prompt)
        p["1"]["inputs"]["color"] = color
        return p

    a = await comfy.ws(None)
    b = await comfy.ws("modern-1", feature_flags={"supports_preview_metadata": True})
    a_conn = await a.take(1)
    assert_matches(r10["A_on_connect"], a_conn, "A on connect", loose=LOOSE)
    assert_matches(r10["B_on_connect"], await b.take(2), "B on connect")
    a_sid = a_conn[0]["data"]["sid"]
    loose = LOOSE + ("len",)

    for who, sid, recorder, other, color in (("A", a_sid, a, b, 0), ("B", "modern-1", b, a, 1)):
        status, body = await comfy.post_prompt(variant(color), client_id=sid)
        assert status == 200
        assert_matches(r10["post_" + who], body, "post " + who, loose=LOOSE)
        assert_ws_matches(
            r10["%s_during_%s_prompt" % (who, who)],
            await recorder.take_until(done(body["prompt_id"])),
            "%s during %s's prompt" % (who, who),
            loose=loose,
        )
        o = "B" if who == "A" else "A"
        assert_ws_matches(
            r10["%s_during_%s_prompt" % (o, who)],
            await other.take_until(status_is(0)),
            "%s during %s's prompt" % (o, who),
            loose=loose,
        )

    status, body = await comfy.post_prompt(variant(2))  # no client_id: nobody gets execution events
    assert_matches(r10["post_noclient"], body, "post without client", loose=LOOSE)
    for who, recorder in (("A", a), ("B", b)):
        assert_ws_matches(
            r10["%s_during_noclient_prompt" % who],
            await recorder.take_until(status_is(0)),
            "%s during the prompt without client" % who,
            loose=loose,
        )

    status, body = await comfy.post_prompt(variant(3), front=True)
    assert_matches(r10["post_front"], body, "post with front", loose=LOOSE)  # number -3
    await comfy.state.wait_for_history(body["prompt_id"])

    resp = await comfy.client.get("/view", params={"filename": "missing.png", "type": "output"})
    assert (resp.status, await resp.text()) == (r10["view_missing"]["status"], r10["view_missing"]["body"])
    resp = await comfy.client.get("/view", params={"filename": "../../etc/passwd", "type": "output"})
    assert (resp.status, await resp.text()) == (r10["view_traversal"]["status"], r10["view_traversal"]["body"])
    resp = await comfy.client.get(
        "/view", params={"filename": "prev_00001_.png", "subfolder": "../..", "type": "output"}
    )
    assert resp.status == 403
    assert len(await comfy.get_json("/history")) == r10["history_count"]
    assert (await comfy.client.post("/history", json={"clear": True})).status == r10["history_clear_status"]
    assert await comfy.get_json("/history") == r10["history_after_clear"]


# ---- 11: an upload and several outputs (subfolders, batches, temp previews) --------------------------------


async def test_11_sweep_upload_subfolders_batches_previews(comfy):
    r11 = rec("11_sweep.json")
    form = aiohttp.FormData()
    form.add_field("image", png_bytes(Image(4, 4, (10, 20, 30))), filename="probe_upload.png", content_type="image/png")
    resp = await comfy.client.post("/upload/image", data=form)
    assert resp.status == r11["upload_image"]["status"]
    assert await resp.json() == r11["upload_image"]["json"]

    prompt = {
        "7": {"class_type": "LoadImage", "inputs": {"image": "probe_upload.png"}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "sweep/img"}},
        "12": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 255}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "sweep/batch"}},
    }
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    body, messages = await comfy.run(ws, prompt)
    entry = (await comfy.get_json("/history/%s" % body["prompt_id"]))[body["prompt_id"]]
    assert entry["status"]["status_str"] == r11["sweep"]["status_str"]
    assert_matches(r11["sweep"]["outputs"], entry["outputs"], "sweep outputs", loose=("9.images.0.filename",))
    temp_name = entry["outputs"]["9"]["images"][0]["filename"]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", temp_name)
    assert sorted(os.listdir(comfy.output_dir / "sweep")) == ["batch_00001_.png", "batch_00002_.png", "img_00001_.png"]

    for key, params in (
        ("view_temp", {**r11["view_temp"]["params"], "filename": temp_name}),
        ("view_subfolder", r11["view_subfolder"]["params"]),
    ):
        resp = await comfy.client.get("/view", params=params)
        data = await resp.read()
        assert resp.status == r11[key]["status"] and resp.content_type == r11[key]["ctype"], key
        folder = {"temp": comfy.state.temp_dir, "output": comfy.output_dir}[params["type"]]
        assert len(data) == (Path(folder) / params["subfolder"] / params["filename"]).stat().st_size
    # the uploaded image went through LoadImage into the saved file
    saved, _ = read_png((comfy.output_dir / "sweep" / "img_00001_.png").read_bytes())
    assert saved.pixels == bytes((10, 20, 30)) * 16


# ---- configuration: node classes and models -----------------------------------------------------------------


async def test_node_classes_and_models_are_per_instance(aiohttp_client, tmp_path):
    app = make_app(
        tmp_path / "o1",
        models=["only-here.safetensors"],
        node_classes=[
            "EmptyImage",
            "SaveImage",
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
        ],
        step_delay=0,
    )
    other = make_app(tmp_path / "o2", node_classes=["EmptyImage", "SaveImage"])
    c1, c2 = await aiohttp_client(app), await aiohttp_client(other)
    assert set(await (await c2.get("/object_info")).json()) == {"EmptyImage", "SaveImage"}
    info = await (await c1.get("/object_info/CheckpointLoaderSimple")).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["only-here.safetensors"]

    txt2img = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "only-here.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 3,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    resp = await c2.post("/prompt", json={"prompt": txt2img})
    assert resp.status == 400
    assert (await resp.json())["error"][
        "message"
    ] == "Cannot execute because node CheckpointLoaderSimple does not exist."
    resp = await c1.post("/prompt", json={"prompt": txt2img})
    assert resp.status == 200, await resp.text()
    pid = (await resp.json())["prompt_id"]
    entry = await app["comfy"].wait_for_history(pid)
    assert entry["status"]["status_str"] == "success", entry
    assert entry["outputs"]["9"]["images"][0]["filename"] == "ComfyUI_00001_.png"
    assert [f["filename"] for f in app["comfy"].files_written] == ["ComfyUI_00001_.png"]
    progress = [e["data"]["value"] for e in app["comfy"].events(pid) if e["type"] == "progress"]
    assert progress == [1, 2, 3]

    txt2img["4"]["inputs"]["ckpt_name"] = "elsewhere.safetensors"
    resp = await c1.post("/prompt", json={"prompt": txt2img})
    body = await resp.json()
    assert resp.status == 400
    assert body["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    assert (
        body["node_errors"]["4"]["errors"][0]["details"]
        == "ckpt_name: 'elsewhere.safetensors' not in ['only-here.safetensors']"
    )
    with pytest.raises(ValueError):
        make_app(tmp_path / "o3", node_classes=["NoSuchNode"])


# ---- python -m tests.standin ------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_module_runs_and_prints_ready(tmp_path, subprocess_env):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.standin",
        "--port",
        "0",
        "--output-dir",
        str(tmp_path / "out"),
        "--models",
        "x.safetensors,y.safetensors",
        cwd=str(REPO_ROOT),
        env=subprocess_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
        m = re.fullmatch(r"READY (http://127\.0\.0\.1:(\d+))\n", line)
        assert m and int(m.group(2)) > 0, line
        base = m.group(1)
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/api/object_info/CheckpointLoaderSimple") as resp:
                info = await resp.json()
            assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
                "x.safetensors",
                "y.safetensors",
            ]
            async with session.ws_connect(base + "/ws?clientId=" + CLIENT) as ws:
                first = await ws.receive_json(timeout=TIMEOUT)
                assert_matches(recorded_ws(rec("00_ws_on_connect.json"))[0], first, "on-connect message")
                prompt = rec("01_empty_save.json")["queue_right_after_post"]["queue_running"][0][2]
                async with session.post(base + "/prompt", json={"prompt": prompt, "client_id": CLIENT}) as resp:
                    assert resp.status == 200
                    pid = (await resp.json())["prompt_id"]
                seen = []
                while not (seen and seen[-1]["type"] == "executing" and seen[-1]["data"]["node"] is None):
                    seen.append(await ws.receive_json(timeout=TIMEOUT))
                assert_ws_matches(
                    recorded_ws(rec("01_empty_save.json")["ws"]), seen, "01 over a real socket", loose=LOOSE
                )
                assert seen[-1]["data"]["prompt_id"] == pid
        assert (tmp_path / "out" / "probe_00001_.png").is_file()
    finally:
        if proc.returncode is None:
            proc.terminate()
        rc = await asyncio.wait_for(proc.wait(), TIMEOUT)
        err = (await proc.stderr.read()).decode(errors="replace")
    assert rc == 0, err


# ---- versions: the jobs API of v0.8.0 (recorded), v0.3.64 and the current ComfyUI (tests/standin/versions.py) -------

SLOW = {"1": {"class_type": "SlowNode", "inputs": {"seconds": 3600.0, "tag": "slow"}}}
JOB_KEYS_FINISHED = {"id", "status", "priority", "create_time", "execution_start_time", "execution_end_time"}


@pytest_asyncio.fixture
async def comfy_of(aiohttp_client, tmp_path):
    """comfy_of(version) -> a Comfy (as the `comfy` fixture) imitating that ComfyUI version."""
    made = []

    async def make(version):
        out = tmp_path / ("output-" + version)
        app = make_app(
            out, models=MODELS, input_dir=tmp_path / "input", temp_dir=tmp_path / "temp", comfyui_version=version
        )
        c = Comfy(await aiohttp_client(app), app, out)
        made.append(c)
        return c

    yield make
    for c in made:
        c.state.release_steps()
        c.state.interrupt()
        for r in c.recorders:
            await r.close()


def frontend_accepts_jobs_list(body) -> bool:
    """The ComfyUI frontend's zJobsListResponse (jobTypes.ts): an empty queue is shown when this fails."""
    number = (int, float)
    if not (isinstance(body, dict) and isinstance(body.get("jobs"), list) and isinstance(body.get("pagination"), dict)):
        return False
    p = body["pagination"]
    if not all(isinstance(p.get(k), number) and not isinstance(p.get(k), bool) for k in ("offset", "limit", "total")):
        return False
    if not isinstance(p.get("has_more"), bool):
        return False
    statuses = {"pending", "in_progress", "completed", "failed", "cancelled"}
    return all(
        isinstance(j.get("id"), str) and j.get("status") in statuses and isinstance(j.get("create_time"), number)
        for j in body["jobs"]
    )


async def test_12_jobs_api_matches_the_recording(comfy):
    """v0.8.0 (the default): GET /api/jobs, its status filter's error and a missing job, as recorded."""
    calls = {c["request"]["path"]: c for c in rec("12_upload_and_jobs.json")["calls"]}
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    prompt = rec("01_empty_save.json")["queue_right_after_post"]["queue_running"][0][2]
    await comfy.run(ws, prompt)
    await comfy.run(ws, {**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "color": 7}}})
    for path in ("/api/jobs?limit=1", "/api/jobs?status=bogus", "/api/jobs/00000000-0000-0000-0000-000000000000"):
        recorded = calls[path]
        resp = await comfy.client.get(path)
        assert resp.status == recorded["status"], path
        loose = ("jobs.*.id", "jobs.*.priority", "jobs.*.*_time", "jobs.*.outputs_count", "jobs.*.preview_output.*")
        assert_matches(json.loads(recorded["body"]), await resp.json(), path, loose=loose + ("pagination.total",))
    assert (await comfy.client.get("/jobs?limit=1")).status == 404, "only under /api (and /api/api)"
    assert (await comfy.client.get("/api/api/jobs?limit=1")).status == 200


async def test_12_upload_into_a_subfolder_and_view_it_by_type_input(comfy):
    """POST /upload/image with type=input into a subfolder, as recorded: the same name with the same bytes keeps
    the name (nothing written), other bytes get "probe (1).png", overwrite=true replaces; no image is a 400. Then
    GET /view?type=input serves the file, and a missing one is a 404."""
    calls = rec("12_upload_and_jobs.json")["calls"]
    first, second = png_bytes(Image(3, 2, (10, 20, 30))), png_bytes(Image(3, 2, (40, 50, 60)))
    content = {
        "first upload": first,
        "same name, same bytes": first,
        "same name, other bytes": second,
        "same name, other bytes, overwrite=true": second,
    }
    uploads = [c for c in calls if c["request"]["path"] == "/upload/image"]
    assert [c.get("description") for c in uploads] == [*content, "no image field"]
    folder = None
    for call in uploads:
        fields = call["request"]["form"] or {"subfolder": "rec_none"}
        form = aiohttp.FormData()
        for key, value in fields.items():
            if key == "image":
                form.add_field("image", content[call["description"]], filename="probe.png", content_type="image/png")
            else:
                form.add_field(key, value)
        resp = await comfy.client.post("/upload/image", data=form)
        assert resp.status == call["status"], call["description"]
        if call["status"] == 200:
            assert await resp.json() == json.loads(call["body"]), call["description"]
            folder = Path(comfy.state.input_dir) / fields["subfolder"]
        else:
            assert await resp.read() == call["body"].encode()
    assert sorted(os.listdir(folder)) == ["probe (1).png", "probe.png"]
    assert (folder / "probe.png").read_bytes() == second, "overwrite=true replaced it"
    assert (folder / "probe (1).png").read_bytes() == second

    views = [c for c in calls if c["request"]["path"].startswith("/view")]
    assert [c["status"] for c in views] == [200, 404]
    for call in views:
        resp = await comfy.client.get(call["request"]["path"])
        assert resp.status == call["status"], call["request"]["path"]
        if call["status"] == 200:
            assert await resp.read() == second
            assert resp.content_type == "image/png"
    head = await comfy.client.head(views[0]["request"]["path"])
    assert head.status == 200 and head.content_length == len(second), "HEAD answers with the file's size"


async def test_loaders_take_a_path_in_a_subfolder_of_input(comfy):
    """ComfyUI v0.8.0's LoadImage and LoadImageMask take "sub/dir/name.png" (folder_paths.get_annotated_filepath
    joins it to the input folder; their VALIDATE_INPUTS replaces the check against the listing); LoadImageMask reads
    one channel (alpha inverted) and MaskToImage shows it as grey."""
    width, height = 2, 1
    rgba = bytes((200, 100, 50, 255, 10, 20, 30, 0))  # two pixels, the second transparent
    form = aiohttp.FormData()
    form.add_field("subfolder", "comfymq/0123456789abcdef")
    form.add_field("type", "input")
    form.add_field("image", _rgba_png(width, height, rgba), filename="x.png", content_type="image/png")
    resp = await comfy.client.post("/upload/image", data=form)
    assert await resp.json() == {"name": "x.png", "subfolder": "comfymq/0123456789abcdef", "type": "input"}
    path = "comfymq/0123456789abcdef/x.png"
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": path}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": path, "channel": "red"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "red"}},
        "6": {"class_type": "LoadImageMask", "inputs": {"image": path, "channel": "alpha"}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "alpha"}},
    }
    body, _ = await comfy.run(ws, prompt)
    entry = (await comfy.get_json("/history/%s" % body["prompt_id"]))[body["prompt_id"]]
    assert entry["status"]["status_str"] == "success", entry["status"]

    def saved(prefix):
        return read_png((comfy.output_dir / ("%s_00001_.png" % prefix)).read_bytes())[0].pixels

    assert saved("loaded") == bytes((200, 100, 50, 10, 20, 30))
    assert saved("red") == bytes((200,) * 3 + (10,) * 3)
    assert saved("alpha") == bytes((0,) * 3 + (255,) * 3)
    # a missing file fails validation, as in ComfyUI ("Invalid image file: ...")
    missing = {"1": {"class_type": "LoadImage", "inputs": {"image": "comfymq/0123456789abcdef/missing.png"}}}
    status, answer = await comfy.post_prompt({**missing, "2": prompt["2"]})
    assert status == 400 and "Invalid image file" in json.dumps(answer["node_errors"]["1"]), answer
    info = (await comfy.get_json("/object_info/LoadImageMask"))["LoadImageMask"]
    assert info["input"]["required"]["channel"] == [["alpha", "red", "green", "blue"]]
    assert info["input"]["required"]["image"][1] == {"image_upload": True}
    assert info["output"] == ["MASK"] and info["category"] == "mask"


async def test_video_and_audio_loaders_have_v080_shapes_and_name_their_file(comfy):
    """ComfyUI v0.8.0's LoadVideo and LoadAudio are V3 nodes: their file input is ("COMBO", {"multiselect": false,
    "options": [...], "video_upload" | "audio_upload": true}) listing input files by MIME type; the stand-in's
    outputs are the file itself, which ProbeFileDigest shows as "<sha256> <size>"."""
    data = bytes(range(256)) * 40
    form = aiohttp.FormData()
    form.add_field("subfolder", "comfymq/00112233445566ff")
    form.add_field("type", "input")
    form.add_field("image", data, filename="clip.mp4", content_type="video/mp4")
    resp = await comfy.client.post("/upload/image", data=form)
    assert await resp.json() == {"name": "clip.mp4", "subfolder": "comfymq/00112233445566ff", "type": "input"}
    (Path(comfy.state.input_dir) / "song.mp3").write_bytes(b"ID3")
    (Path(comfy.state.input_dir) / "clip.mp4").write_bytes(b"")
    (Path(comfy.state.input_dir) / "notes.txt").write_bytes(b"")
    video = (await comfy.get_json("/object_info/LoadVideo"))["LoadVideo"]
    audio = (await comfy.get_json("/object_info/LoadAudio"))["LoadAudio"]
    options = {"multiselect": False, "options": ["clip.mp4"], "video_upload": True}
    assert video["input"]["required"] == {"file": ["COMBO", options]}
    assert video["output"] == ["VIDEO"] and video["category"] == "image/video"
    options = {"multiselect": False, "options": ["clip.mp4", "song.mp3"], "audio_upload": True}
    assert audio["input"]["required"] == {"audio": ["COMBO", options]}
    assert audio["output"] == ["AUDIO"] and audio["category"] == "audio"
    path = "comfymq/00112233445566ff/clip.mp4"
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": path}},
        "2": {"class_type": "ProbeFileDigest", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": path}},
        "4": {"class_type": "ProbeFileDigest", "inputs": {"audio": ["3", 0], "tag": "audio"}},
    }
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    body, _ = await comfy.run(ws, prompt)
    entry = (await comfy.get_json("/history/%s" % body["prompt_id"]))[body["prompt_id"]]
    shown = "%s %d" % (hashlib.sha256(data).hexdigest(), len(data))
    assert entry["outputs"] == {"2": {"text": [shown]}, "4": {"text": [shown]}}, entry["outputs"]
    missing = {"1": {"class_type": "LoadVideo", "inputs": {"file": "comfymq/none.mp4"}}, "2": prompt["2"]}
    status, answer = await comfy.post_prompt(missing)
    assert status == 400 and "Invalid video file" in json.dumps(answer["node_errors"]["1"]), answer


async def test_uploads_larger_than_max_upload_size_are_refused(aiohttp_client, tmp_path):
    """ComfyUI's --max-upload-size (MB) is its app's client_max_size: a larger upload is a 413, nothing is written;
    /features says the limit."""
    app = make_app(tmp_path / "out", input_dir=tmp_path / "in", max_upload_size=64 * 1024)
    client = await aiohttp_client(app)
    assert (await (await client.get("/features")).json())["max_upload_size"] == 64 * 1024
    for size, status in ((60 * 1024, 200), (70 * 1024, 413)):
        form = aiohttp.FormData()
        form.add_field("image", b"x" * size, filename=f"f{size}.bin", content_type="application/octet-stream")
        resp = await client.post("/upload/image", data=form)
        assert resp.status == status, await resp.text()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [f"f{60 * 1024}.bin"]


def _rgba_png(width: int, height: int, rgba: bytes) -> bytes:
    """An 8-bit RGBA PNG (colour type 6)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    stride = width * 4
    raw = b"".join(b"\x00" + rgba[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def test_v080_jobs_of_queued_running_and_interrupted_prompts(comfy_of):
    """v0.8.0 as checked against a running one: no cancel endpoints, "failed" for an interrupted prompt, duplicates
    accepted (the later one's history replaces the earlier's)."""
    comfy = await comfy_of("0.8.0")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    status, body = await comfy.post_prompt(SLOW, client_id=CLIENT)
    running = body["prompt_id"]
    await ws.take_until(lambda m: m["type"] == "executing" and m["data"].get("node") == "1")
    status, body = await comfy.post_prompt({"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0}}})
    pending = body["prompt_id"]
    job = await comfy.get_json("/api/jobs/" + running)
    assert set(job) == {"id", "status", "priority", "create_time", "outputs_count"} and job["status"] == "in_progress"
    job = await comfy.get_json("/api/jobs/" + pending)
    assert job["status"] == "pending" and job["outputs_count"] == 0 and "workflow" not in job
    body = await comfy.get_json("/api/jobs?status=in_progress,pending&limit=200&offset=0")
    assert [j["id"] for j in body["jobs"]] == [pending, running] and frontend_accepts_jobs_list(body)
    resp = await comfy.client.get("/api/jobs?status=cancelled")
    assert (
        resp.status == 400 and "Valid values: pending, in_progress, completed, failed" in (await resp.json())["error"]
    )
    assert (await comfy.client.post("/api/jobs/%s/cancel" % running, json={})).status in (404, 405)
    assert (await comfy.client.post("/api/jobs/cancel", json={"job_ids": [running]})).status in (404, 405)
    assert (await comfy.client.post("/interrupt", json={"prompt_id": running})).status == 200
    await ws.take_until(done(running))
    job = await comfy.get_json("/api/jobs/" + running)
    assert job["status"] == "failed" and job["execution_status"]["status_str"] == "error"
    assert set(job) >= JOB_KEYS_FINISHED | {"outputs", "execution_status", "workflow"}
    status, again = await comfy.post_prompt(
        {"1": {"class_type": "SlowNode", "inputs": {"seconds": 0.0}}}, prompt_id=running
    )
    assert status == 200 and again["prompt_id"] == running


async def test_v0364_has_no_jobs_api_and_its_own_system_stats(comfy_of):
    comfy = await comfy_of("0.3.64")
    assert (await comfy.client.get("/api/jobs?limit=1")).status == 404
    assert (await comfy.client.get("/api/jobs/00000000-0000-0000-0000-000000000000")).status == 404
    stats = await comfy.get_json("/system_stats")
    assert stats["system"]["os"] == os.name and stats["system"]["comfyui_version"] == "0.3.64"
    assert list(stats["system"]) == list(rec("system_stats.json")["system"])  # the same keys as v0.8.0's
    assert len(stats["devices"]) == 1
    features = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}
    assert await comfy.get_json("/features") == features
    ws = await comfy.ws(CLIENT, feature_flags={"supports_preview_metadata": True})
    assert [m["type"] for m in await ws.take(2)] == ["status", "feature_flags"]
    assert ws.messages[1]["data"] == features
    comfy.state.pause()
    for _ in range(2):  # any id, duplicates too
        status, body = await comfy.post_prompt(SLOW, prompt_id="not-a-uuid", client_id=CLIENT)
        assert status == 200 and body["prompt_id"] == "not-a-uuid"
    queue = await comfy.get_json("/queue")
    assert [len(e) for e in queue["queue_pending"]] == [5, 5]
    assert all("create_time" not in e[3] for e in queue["queue_pending"])
    comfy.state.wipe_queue()
    comfy.state.resume()


async def test_current_jobs_api_filters_pages_and_the_frontend_reads_it(comfy_of):
    comfy = await comfy_of("current")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    done_ids = []
    for color in range(3):  # three completed prompts
        g = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "jobs"}},
        }
        body, _ = await comfy.run(ws, g)
        done_ids.append(body["prompt_id"])
    status, body = await comfy.post_prompt(SLOW, client_id=CLIENT)  # one interrupted: "cancelled"
    cancelled = body["prompt_id"]
    await ws.take_until(lambda m: m["type"] == "executing" and m["data"].get("node") == "1")
    assert (await comfy.client.post("/api/interrupt", json={"prompt_id": cancelled})).status == 200
    await ws.take_until(done(cancelled))

    page = await comfy.get_json("/api/jobs?status=completed,failed,cancelled&limit=2&offset=0")
    assert frontend_accepts_jobs_list(page)
    assert [j["id"] for j in page["jobs"]] == [cancelled, done_ids[2]]  # newest first
    assert page["pagination"] == {"offset": 0, "limit": 2, "total": 4, "has_more": True}
    page = await comfy.get_json("/api/jobs?status=completed,failed,cancelled&limit=2&offset=2")
    assert [j["id"] for j in page["jobs"]] == [done_ids[1], done_ids[0]] and page["pagination"]["has_more"] is False
    only = await comfy.get_json("/api/jobs?status=cancelled&limit=10")
    assert [j["id"] for j in only["jobs"]] == [cancelled] and only["jobs"][0]["status"] == "cancelled"
    asc = await comfy.get_json("/api/jobs?sort_order=asc&limit=10")
    assert [j["id"] for j in asc["jobs"]] == done_ids + [cancelled]
    job = asc["jobs"][0]
    assert job["outputs_count"] == 1 and job["previewable_outputs_count"] == 1
    assert job["preview_output"]["mediaType"] == "images" and job["preview_output"]["nodeId"] == "2"
    for path, message in (
        ("/api/jobs?limit=0", "limit must be a positive integer"),
        ("/api/jobs?limit=x", "limit must be an integer"),
        ("/api/jobs?offset=x", "offset must be an integer"),
        ("/api/jobs?sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"),
        ("/api/jobs?sort_order=up", "sort_order must be 'asc' or 'desc'"),
    ):
        resp = await comfy.client.get(path)
        assert resp.status == 400 and await resp.json() == {"error": message}, path
    resp = await comfy.client.get("/api/jobs?status=bogus")
    assert (await resp.json())["error"].endswith("Valid values: pending, in_progress, completed, failed, cancelled")
    assert (await comfy.get_json("/api/jobs?limit=1&offset=-5"))["pagination"]["offset"] == 0
    assert (await comfy.get_json("/api/jobs"))["pagination"]["limit"] is None  # why the frontend always sends one


async def test_current_cancel_endpoints_and_strict_prompt_ids(comfy_of):
    comfy = await comfy_of("current")
    ws = await comfy.ws(CLIENT)
    await ws.take(1)
    running, pending, later = (str(uuid.uuid4()) for _ in range(3))
    status, body = await comfy.post_prompt(SLOW, client_id=CLIENT, prompt_id=running)
    assert status == 200 and body["prompt_id"] == running
    await ws.take_until(lambda m: m["type"] == "executing" and m["data"].get("node") == "1")
    await comfy.post_prompt(SLOW, prompt_id=pending)
    await comfy.post_prompt(SLOW, prompt_id=later)

    job = await comfy.get_json("/api/jobs/" + pending)  # a queued job's detail carries its prompt
    assert job["status"] == "pending" and job["workflow"]["prompt"] == SLOW
    assert job["workflow"]["extra_data"]["create_time"] == job["create_time"]
    # a taken id: queued, running, or (below) finished -> 409, nothing queued
    for taken in (running, pending):
        status, body = await comfy.post_prompt(SLOW, prompt_id=taken)
        assert status == 409 and body["error"]["type"] == "duplicate_prompt_id" and body["node_errors"] == {}
    for bad in ("not-a-uuid", running.upper(), "{%s}" % running, 12):
        status, body = await comfy.post_prompt(SLOW, prompt_id=bad)
        assert status == 400 and body["error"]["type"] == "invalid_prompt_id", bad

    resp = await comfy.client.post("/api/jobs/%s/cancel" % pending, json={})
    assert resp.status == 200 and await resp.json() == {"cancelled": True}
    assert pending not in [e[1] for e in (await comfy.get_json("/queue"))["queue_pending"]]
    assert await comfy.get_json("/history/" + pending) == {}, "dequeued: it never runs"
    for body, status, answer in (
        ("not json", 400, {"error": "Request body must be valid JSON"}),
        ({"job_ids": running}, 400, {"error": "job_ids must be a list"}),
        ({"job_ids": [running, "x", 3]}, 400, {"error": "job_ids contains invalid id(s)", "invalid_ids": ["x", "3"]}),
    ):
        kw = {"data": body} if isinstance(body, str) else {"json": body}
        resp = await comfy.client.post("/api/jobs/cancel", **kw)
        assert resp.status == status and await resp.json() == answer
    resp = await comfy.client.post("/api/jobs/cancel", json={"job_ids": [running, later]})
    assert await resp.json() == {"cancelled": True}
    await ws.take_until(done(running))
    assert (await comfy.get_json("/api/jobs/" + running))["status"] == "cancelled"
    resp = await comfy.client.post("/api/jobs/%s/cancel" % running, json={})  # finished: a no-op
    assert await resp.json() == {"cancelled": False}
    resp = await comfy.client.post("/api/jobs/%s/cancel" % uuid.uuid4(), json={})  # unknown: a no-op
    assert await resp.json() == {"cancelled": False}
    assert (await comfy.post_prompt(SLOW, prompt_id=running))[0] == 409, "finished ids stay taken"
    assert await comfy.get_json("/queue") == {"queue_running": [], "queue_pending": []}


async def test_current_features_system_stats_and_validation_errors(comfy_of):
    comfy = await comfy_of("current")
    features = await comfy.get_json("/features")
    assert features["supports_preview_metadata"] is True and features["node_replacements"] is True
    ws = await comfy.ws(CLIENT, feature_flags={"supports_preview_metadata": True})
    assert [m["type"] for m in await ws.take(2)] == ["status", "feature_flags"]
    assert ws.messages[1]["data"] == features
    comfy.state.extra_devices = [{"name": "cuda:1 spare", "type": "cuda", "index": 1, "vram_total": 8, "vram_free": 4}]
    stats = await comfy.get_json("/system_stats")
    assert stats["system"]["comfyui_version"] == versions.CURRENT_VERSION
    assert {"comfy_package_versions", "deploy_environment"} <= set(stats["system"])
    assert [d["type"] for d in stats["devices"]] == ["cpu", "cuda"], "every device, the primary first"
    status, body = await comfy.post_prompt({"5": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "X"}}})
    assert status == 400 and body["error"]["type"] == "missing_node_type"
    assert body["error"]["extra_info"] == {"node_id": "5", "class_type": "NoSuchNode", "node_title": "X"}


@pytest.mark.subprocess
async def test_module_takes_a_comfyui_version(tmp_path, subprocess_env):
    """--comfyui-version and $STANDIN_COMFYUI_VERSION pick the API; a wrong one is refused with the choices."""
    base = [sys.executable, "-m", "tests.standin", "--port", "0", "--output-dir", str(tmp_path / "out")]
    bad = await asyncio.create_subprocess_exec(
        *base, "--comfyui-version", "9.9", cwd=str(REPO_ROOT), env=subprocess_env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(bad.communicate(), TIMEOUT)
    assert bad.returncode == 2 and b"0.3.64, 0.8.0, current" in err
    proc = await asyncio.create_subprocess_exec(
        *base,
        cwd=str(REPO_ROOT),
        env={**subprocess_env, "STANDIN_COMFYUI_VERSION": "current"},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
        url = line.split()[-1]
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/system_stats") as resp:
                assert (await resp.json())["system"]["comfyui_version"] == versions.CURRENT_VERSION
            async with session.post(url + "/api/jobs/cancel", json={"job_ids": []}) as resp:
                assert await resp.json() == {"cancelled": False}
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), TIMEOUT)
