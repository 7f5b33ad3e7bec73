"""A stand-in ComfyUI server (aiohttp), faithful to the recorded behaviour of ComfyUI v0.8.0, or of v0.3.64 or the
current ComfyUI when asked (versions.py says what differs: the jobs API and its cancel endpoints, strict prompt ids,
/system_stats, /features).

    app = make_app(output_dir, models=["a.safetensors"], node_classes=None, name="standin", comfyui_version=None)
    state = app["comfy"]            # the ComfyState: queue, history, executor, websockets, test hooks

Every route is served at /x and /api/x. Prompts run one at a time on a worker thread (like ComfyUI's
prompt_worker), which sends websocket events through one asyncio queue drained by a publisher task, so events
reach a socket in the order the worker produced them. See the README of the recordings for the contract and
tests/python/test_standin_contract.py for the checks against it.

Websocket messages of one prompt, as the recordings show them (client = the prompt's client_id):
    status (put, broadcast), status (worker took it, broadcast),
    execution_start, execution_cached {nodes: cached ids}                          -> client
    per node run:   progress_state(running) -> executing {node} -> [progress_state, progress (, binary preview)]*
                    -> executed {output} if it has UI output -> progress_state(finished)      -> client
    per cached output node: executed -> progress_state(finished, value/max ints)                -> client
    execution_success | execution_error | execution_interrupted                     -> client
    status (done, broadcast), executing {node: null, prompt_id}                     -> client
  Without a client_id: no execution_*/executing/executed messages at all, but progress_state, progress, binary
  previews and execution_interrupted go to every socket (ComfyUI sends them to sid None = broadcast).
  Cache: like ComfyUI's classic cache, a node whose inputs (and ancestors) equal a node of the previous prompt
  is not run again (a cached SaveImage writes no new file); entries not used by the current prompt are dropped.
  Interrupt: one flag, cleared when a prompt starts; nodes see it before they run, at each progress step and
  while sleeping, and stop with execution_interrupted (history status "error", completed false).

Test hooks on the state (all thread-safe):
    state.enqueue(prompt, client_id=..., prompt_id=..., extra_data=...)   same as POST /prompt -> (status, body)
    await state.wait_for_history(prompt_id)   await state.wait_idle()
    state.pause() / state.resume()            the worker takes no new prompt while paused (they stay pending)
    state.hold_steps(n) / state.allow_steps(k) / state.release_steps()
                                              step-reporting nodes (ProbeProgress, KSampler) run at most n more steps,
                                              then wait (interruptibly) for more
    state.interrupt(prompt_id=None)           as POST /interrupt
    state.files_written                       every file a node wrote: {path, filename, subfolder, type, ...}
    state.events(prompt_id=None)              every websocket message sent (also when nobody listened)
"""

from __future__ import annotations

import asyncio
import collections
import copy
import glob
import hashlib
import heapq
import inspect
import itertools
import json
import logging
import math
import mimetypes
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
import warnings
from typing import Any, NamedTuple

from aiohttp import WSCloseCode, WSMsgType, web

from . import jobs as jobs_api
from . import nodes as standin_nodes
from . import versions
from .nodes import InterruptProcessingException

log = logging.getLogger("standin")

COMFYUI_VERSION = "0.8.0"  # the default profile's (versions.DEFAULT)
MAX_UPLOAD_SIZE = versions.MAX_UPLOAD_SIZE
SERVER_FEATURES = versions.PROFILES["0.8.0"].server_features  # a state serves its profile's (state.profile)
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
]
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; "
    "connect-src 'self'; frame-src 'self'; object-src 'self';"
)
MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class CacheEntry(NamedTuple):
    ui: Any  # {"meta": ..., "output": ...} or None
    outputs: list  # the node's return values


SUCCESS, FAILURE = "success", "failure"


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def full_type_name(klass) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else module + "." + klass.__qualname__


def format_value(x):
    if x is None:
        return None
    if isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


def validate_node_input(received_type, input_type) -> bool:
    """comfy_execution.validation.validate_node_input (non-strict)."""
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    return len(received & wanted) > 0


def _call_with_env(fn, env, **kwargs):
    """Calls a node classmethod, passing `env` if it takes one (the stand-in's extension of ComfyUI's API)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "env" in params:
        kwargs["env"] = env
    return fn(**kwargs)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---- execution helpers ---------------------------------------------------------------------------------


class _Progress:
    """comfy_execution.progress: per-node progress registry that sends progress_state to the prompt's client."""

    def __init__(self, state: "ComfyState", prompt_id: str):
        self.state = state
        self.prompt_id = prompt_id
        self.nodes: dict = {}

    def _entry(self, node_id):
        if node_id not in self.nodes:
            self.nodes[node_id] = {"state": "pending", "value": 0, "max": 1}
        return self.nodes[node_id]

    def _send(self):
        active = {}
        for node_id, st in self.nodes.items():
            if st["state"] == "pending":
                continue
            active[node_id] = {
                "value": st["value"],
                "max": st["max"],
                "state": st["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
        self.state.send_sync("progress_state", {"prompt_id": self.prompt_id, "nodes": active}, self.state.client_id)

    def start(self, node_id):
        e = self._entry(node_id)
        e.update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id, value, max_value):
        e = self._entry(node_id)
        e.update(state="running", value=value, max=max_value)
        self._send()

    def finish(self, node_id):
        e = self._entry(node_id)
        e["state"] = "finished"
        e["value"] = e["max"]
        self._send()


class _ExecutionList:
    """comfy_execution.graph.ExecutionList: stages nodes whose inputs are ready, output nodes first."""

    def __init__(self, prompt: dict, classes: dict, is_cached):
        self.prompt = prompt
        self.classes = classes
        self.is_cached = is_cached
        self.pending: dict = {}
        self.block_count: dict = {}
        self.blocking: dict = {}

    def add_node(self, node_id):
        stack, links = [node_id], []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for value in self.prompt[uid].get("inputs", {}).values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], value[1], uid))
        for from_id, socket, to_id in links:
            if not self.is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self.blocking[from_id]:
                    self.blocking[from_id][to_id] = {}
                    self.block_count[to_id] += 1
                self.blocking[from_id][to_id][socket] = True

    def is_empty(self):
        return not self.pending

    def _is_output(self, node_id):
        return getattr(self.classes[self.prompt[node_id]["class_type"]], "OUTPUT_NODE", False) is True

    def stage(self):
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            return None
        for n in available:
            if self._is_output(n):
                return n
        for n in available:
            if any(self._is_output(b) for b in self.blocking[n]):
                return n
        for n in available:
            if any(self._is_output(b1) for b in self.blocking[n] for b1 in self.blocking[b]):
                return n
        return available[0]

    def complete(self, node_id):
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


class ExecContext:
    """What a node sees as `self.ctx` while it runs."""

    def __init__(self, state: "ComfyState", prompt_id: str, node_id: str, progress: _Progress, extra_data: dict):
        self._state = state
        self._progress = progress
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.extra_data = extra_data
        self.env = state

    def check_interrupt(self):
        self._state._check_interrupt()

    def sleep(self, seconds: float):
        self._state._interruptible_sleep(seconds)

    def wait_step(self):
        self._state._wait_step()

    def progress(self, value, total, preview: bytes | None = None):
        """comfy.utils.ProgressBar's hook: interrupt check, progress_state, progress, optional JPEG preview."""
        st = self._state
        st._check_interrupt()
        self._progress.update(self.node_id, value, total)
        client_id = st.client_id
        modern = st.client_supports_preview_metadata(client_id)
        if preview is not None and modern:
            meta = json.dumps(
                {
                    "node_id": self.node_id,
                    "prompt_id": self.prompt_id,
                    "display_node_id": self.node_id,
                    "parent_node_id": None,
                    "real_node_id": self.node_id,
                    "image_type": "image/jpeg",
                }
            ).encode()
            st.send_sync(
                BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + preview, client_id
            )
        st.send_sync(
            "progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id}, client_id
        )
        if preview is not None and not modern:
            st.send_sync(BinaryEventTypes.PREVIEW_IMAGE, struct.pack(">I", 1) + preview, client_id)

    def send(self, event, data, sid=None):
        self._state.send_sync(event, data, sid)

    def record_file(self, path, filename, subfolder, type_):
        self._state._record_file(path, filename, subfolder, type_, self.prompt_id, self.node_id)


class _Run:
    def __init__(self, prompt_id, prompt, extra_data):
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.status_messages: list = []
        self.success = True
        self.results: dict = {}
        self.ui_outputs: dict = {}
        self.executed: list = []


# ---- the server state ----------------------------------------------------------------------------------


class ComfyState:
    """Everything one stand-in server holds; stored on the app as app["comfy"]."""

    def __init__(
        self,
        output_dir,
        *,
        models=None,
        node_classes=None,
        name="standin",
        input_dir=None,
        temp_dir=None,
        step_delay: float = 0.05,
        user_dir=None,
        web_root=None,
        comfyui_version=None,
        max_upload_size: int = MAX_UPLOAD_SIZE,
    ):
        self.name = name
        self.profile = versions.get(comfyui_version)  # which ComfyUI this state imitates
        self.max_upload_size = int(max_upload_size)  # bytes: the app's client_max_size (ComfyUI's --max-upload-size)
        self._owned_dirs: list = []
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        os.makedirs(self.output_dir, exist_ok=True)
        self.input_dir = self._dir_or_temp(input_dir, "input")
        self.temp_dir = self._dir_or_temp(temp_dir, "temp")
        self.user_dir = self._dir_or_temp(user_dir, "user")  # ComfyUI's user folder (settings, workflows)
        self.web_root = os.path.abspath(os.fspath(web_root)) if web_root is not None else None  # the frontend
        self.display_names: dict = {}  # NODE_DISPLAY_NAME_MAPPINGS of loaded custom node packs
        self.extension_web_dirs: dict = {}  # nodes.EXTENSION_WEB_DIRS: pack name -> its WEB_DIRECTORY
        self.loaded_module_dirs: dict = {}  # nodes.LOADED_MODULE_DIRS: pack name -> its folder
        self.models = list(models or [])
        self.step_delay = float(step_delay)
        self.csp = CONTENT_SECURITY_POLICY
        self.extra_devices: list = []  # current profile: more /system_stats devices after the primary (tests set it)
        self.node_classes = self._resolve_classes(node_classes)
        self.started_at = time.time()

        # prompt queue (execution.PromptQueue)
        self.mutex = threading.RLock()
        self._not_empty = threading.Condition(self.mutex)
        self._queue: list = []  # heap of (number, prompt_id, seq, item)
        self._seq = itertools.count()
        self.currently_running: dict = {}
        self.task_counter = 0
        self.history: dict = {}
        self.number = 0
        self._paused = False
        self._stopping = False

        # execution
        self._cv = threading.Condition()  # interrupt flag and step budget
        self._interrupted = False
        self._step_budget = None
        self._cache: dict = {}  # input signature -> CacheEntry (ComfyUI's classic cache)
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.files_written: list = []
        self._sent: collections.deque = collections.deque(maxlen=50000)

        # websockets
        self.sockets: dict = {}
        self.sockets_metadata: dict = {}
        self.closing_sockets = False  # set by shutdown: a socket that registers after it is closed at once
        self._loop = None
        self._messages = None
        self._publisher = None
        self._worker = None

    # -- set-up ------------------------------------------------------------------------------------------

    @property
    def server_features(self) -> dict:
        """GET /features and the feature_flags answer: the profile's, max_upload_size this server's."""
        return {**self.profile.server_features, "max_upload_size": self.max_upload_size}

    def _dir_or_temp(self, path, kind):
        if path is not None:
            path = os.path.abspath(os.fspath(path))
            os.makedirs(path, exist_ok=True)
            return path
        path = tempfile.mkdtemp(prefix="standin-%s-" % kind)
        self._owned_dirs.append(path)
        return path

    @staticmethod
    def _resolve_classes(node_classes) -> dict:
        if node_classes is None:
            return dict(standin_nodes.NODE_CLASSES)
        if isinstance(node_classes, dict):
            return dict(node_classes)
        out = {}
        for name in node_classes:
            if name not in standin_nodes.NODE_CLASSES:
                raise ValueError(
                    "unknown stand-in node class %r (known: %s)" % (name, ", ".join(standin_nodes.NODE_CLASSES))
                )
            out[name] = standin_nodes.NODE_CLASSES[name]
        return out

    def input_types(self, cls) -> dict:
        return _call_with_env(cls.INPUT_TYPES, self)

    async def _on_startup(self, app):
        self._loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._publisher = asyncio.ensure_future(self._publish_loop())
        self._stopping = False
        self._worker = threading.Thread(target=self._worker_main, name="standin-worker-%s" % self.name, daemon=True)
        self._worker.start()

    async def _on_shutdown(self, app):
        self.closing_sockets = True
        for ws in list(self.sockets.values()):
            try:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass

    async def _on_cleanup(self, app):
        with self.mutex:
            self._stopping = True
            self._not_empty.notify_all()
        self.interrupt_processing(True)
        if self._worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.join, 10)
        if self._publisher is not None:
            self._publisher.cancel()
            try:
                await self._publisher
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for path in self._owned_dirs:
            shutil.rmtree(path, ignore_errors=True)

    # -- messages ----------------------------------------------------------------------------------------

    def send_sync(self, event, data, sid=None):
        """PromptServer.send_sync: thread-safe; sid None broadcasts. `event` int = binary frame of that type."""
        if isinstance(event, int):
            message = ("bytes", struct.pack(">I", event) + bytes(data))
        else:
            message = ("str", json.dumps({"type": event, "data": data}))
        self._sent.append((event, message[1], sid))
        loop, queue = self._loop, self._messages
        if loop is None or queue is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (message, sid))
        except RuntimeError:  # loop closed meanwhile
            pass

    async def _publish_loop(self):
        while True:
            (kind, payload), sid = await self._messages.get()
            if sid is None:
                targets = list(self.sockets.values())
            else:
                ws = self.sockets.get(sid)
                targets = [ws] if ws is not None else []
            for ws in targets:
                try:
                    if kind == "str":
                        await ws.send_str(payload)
                    else:
                        await ws.send_bytes(payload)
                except Exception as e:  # noqa: BLE001 - like send_socket_catch_exception
                    log.debug("send error: %s", e)

    def events(self, prompt_id=None) -> list:
        """Every message sent so far (also when no socket listened), oldest first, as
        {"type", "data", "sid"} (binary frames: {"type": <int>, "bytes": ..., "sid"}); optionally only those
        whose data carries this prompt_id."""
        out = []
        for event, payload, sid in list(self._sent):
            if isinstance(event, int):
                if prompt_id is None:
                    out.append({"type": event, "bytes": payload, "sid": sid})
                continue
            msg = json.loads(payload)
            data = msg["data"]
            if prompt_id is not None and not (isinstance(data, dict) and data.get("prompt_id") == prompt_id):
                continue
            out.append({"type": msg["type"], "data": data, "sid": sid})
        return out

    def client_supports_preview_metadata(self, sid) -> bool:
        if sid is None:
            return False
        meta = self.sockets_metadata.get(sid) or {}
        return bool((meta.get("feature_flags") or {}).get("supports_preview_metadata", False))

    def get_queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.get_tasks_remaining()}}

    def queue_updated(self):
        self.send_sync("status", {"status": self.get_queue_info()})

    # -- the prompt queue --------------------------------------------------------------------------------

    def get_tasks_remaining(self) -> int:
        with self.mutex:
            return len(self._queue) + len(self.currently_running)

    def _put(self, item) -> bool:
        """Queues the entry; False (nothing queued) when the profile refuses a taken prompt id."""
        with self.mutex:
            if self.profile.strict_prompt_ids and self.prompt_id_taken(item[1]):
                return False
            heapq.heappush(self._queue, (item[0], item[1], next(self._seq), item))
            self.queue_updated()
            self._not_empty.notify()
            return True

    def _get(self):
        with self._not_empty:
            while not self._stopping and (self._paused or not self._queue):
                self._not_empty.wait()
            if self._stopping:
                return None
            item = heapq.heappop(self._queue)[3]
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            self.queue_updated()
            return item, i

    def _task_done(self, item_id, history_result, status):
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            entry = {"prompt": _jsonable(list(prompt[:5])), "outputs": {}, "status": _jsonable(status)}
            for key in SENSITIVE_EXTRA_DATA_KEYS:  # 0.3.64 kept them in queue entries, never in history
                entry["prompt"][3].pop(key, None)
            entry.update(_jsonable(history_result))
            self.history[prompt[1]] = entry
            self.queue_updated()

    def queue_snapshot(self) -> tuple[list, list]:
        """(queue_running, queue_pending) as GET /queue returns them (pending in heap order, like ComfyUI)."""
        with self.mutex:
            running = [_jsonable(list(x[:5])) for x in self.currently_running.values()]
            pending = [_jsonable(list(e[3][:5])) for e in self._queue]
            return running, pending

    def jobs_snapshot(self, prompt_id=None) -> tuple:
        """(running, queued, history) as the jobs API reads them (queue entries without their sensitive part)."""
        with self.mutex:
            running = [_jsonable(list(x[:5])) for x in self.currently_running.values()]
            queued = [_jsonable(list(e[3][:5])) for e in self._queue]
            if prompt_id is None:
                history = copy.deepcopy(self.history)
            else:
                history = {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
            return running, queued, history

    def cancel_job(self, prompt_id) -> bool:
        """POST /api/jobs/{id}/cancel (current): interrupts it if it runs, takes it off the queue if it waits;
        a finished or unknown id is a no-op. Atomic under the queue's lock. True if it acted."""
        with self.mutex:
            if any(item[1] == prompt_id for item in self.currently_running.values()):
                self.interrupt_processing(True)
                return True
            return self.delete_queue_item(prompt_id)

    def wipe_queue(self):
        with self.mutex:
            self._queue = []
            self.queue_updated()

    def delete_queue_item(self, prompt_id) -> bool:
        with self.mutex:
            for x in range(len(self._queue)):
                if self._queue[x][3][1] == prompt_id:
                    if len(self._queue) == 1:
                        self.wipe_queue()
                    else:
                        self._queue.pop(x)
                        heapq.heapify(self._queue)
                    self.queue_updated()
                    return True
        return False

    def get_history(self, prompt_id=None, max_items=None, offset=-1) -> dict:
        with self.mutex:
            if prompt_id is None:
                out, i = {}, 0
                if offset < 0 and max_items is not None:
                    offset = len(self.history) - max_items
                for k in self.history:
                    if i >= offset:
                        out[k] = copy.deepcopy(self.history[k])
                        if max_items is not None and len(out) >= max_items:
                            break
                    i += 1
                return out
            if prompt_id in self.history:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            return {}

    def wipe_history(self):
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id):
        with self.mutex:
            self.history.pop(prompt_id, None)

    # -- test hooks --------------------------------------------------------------------------------------

    def pause(self):
        """The worker takes no new prompt from the queue until resume() (a running prompt goes on)."""
        with self.mutex:
            self._paused = True

    def resume(self):
        with self.mutex:
            self._paused = False
            self._not_empty.notify_all()

    def hold_steps(self, n: int = 0):
        """Step-reporting nodes (ProbeProgress) may run at most `n` more steps, then wait for allow_steps()
        or release_steps(); an interrupt still ends the wait at once."""
        with self._cv:
            self._step_budget = int(n)
            self._cv.notify_all()

    def allow_steps(self, k: int):
        with self._cv:
            if self._step_budget is not None:
                self._step_budget += int(k)
            self._cv.notify_all()

    def release_steps(self):
        with self._cv:
            self._step_budget = None
            self._cv.notify_all()

    def interrupt(self, prompt_id=None) -> bool:
        """POST /interrupt: global, or only if `prompt_id` is the running prompt. True if a flag was set."""
        if prompt_id:
            with self.mutex:
                if not any(item[1] == prompt_id for item in self.currently_running.values()):
                    return False
                self.interrupt_processing(True)
                return True
        self.interrupt_processing(True)
        return True

    def enqueue(self, prompt, *, client_id=None, prompt_id=None, extra_data=None, number=None, front=None):
        """POST /prompt without HTTP: returns (http_status, body)."""
        body: dict = {"prompt": prompt}
        if client_id is not None:
            body["client_id"] = client_id
        if prompt_id is not None:
            body["prompt_id"] = prompt_id
        if extra_data is not None:
            body["extra_data"] = extra_data
        if number is not None:
            body["number"] = number
        if front is not None:
            body["front"] = front
        return self.post_prompt(body)

    async def wait_for_history(self, prompt_id, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            with self.mutex:
                if prompt_id in self.history:
                    return copy.deepcopy(self.history[prompt_id])
            if time.monotonic() > end:
                raise TimeoutError("prompt %s not in history after %s s" % (prompt_id, timeout))
            await asyncio.sleep(0.01)

    async def wait_idle(self, timeout: float = 30.0):
        end = time.monotonic() + timeout
        while self.get_tasks_remaining():
            if time.monotonic() > end:
                raise TimeoutError("queue not empty after %s s" % timeout)
            await asyncio.sleep(0.01)

    def _record_file(self, path, filename, subfolder, type_, prompt_id, node_id):
        with self.mutex:
            self.files_written.append(
                {
                    "path": path,
                    "filename": filename,
                    "subfolder": subfolder,
                    "type": type_,
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                }
            )

    # -- interrupt / steps (used by nodes through ExecContext) --------------------------------------------

    def interrupt_processing(self, value: bool = True):
        with self._cv:
            self._interrupted = value
            self._cv.notify_all()

    def _check_interrupt(self):
        with self._cv:
            if self._interrupted:
                self._interrupted = False
                raise InterruptProcessingException()

    def _interruptible_sleep(self, seconds: float):
        end = time.monotonic() + max(0.0, float(seconds))
        with self._cv:
            while True:
                if self._interrupted:
                    self._interrupted = False
                    raise InterruptProcessingException()
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._cv.wait(min(left, 0.05))

    def _wait_step(self):
        with self._cv:
            while True:
                if self._interrupted:
                    self._interrupted = False
                    raise InterruptProcessingException()
                if self._step_budget is None:
                    return
                if self._step_budget > 0:
                    self._step_budget -= 1
                    return
                self._cv.wait(0.05)

    # -- POST /prompt and validation (execution.validate_prompt) -------------------------------------------

    def post_prompt(self, json_data) -> tuple[int, dict]:
        if not isinstance(json_data, dict):
            json_data = {}
        with self.mutex:
            if "number" in json_data:
                number = float(json_data["number"])
            else:
                number = self.number
                if "front" in json_data and json_data["front"]:
                    number = -number
                self.number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        prompt = json_data["prompt"]
        prompt_id = json_data.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif self.profile.strict_prompt_ids and not jobs_api.valid_job_id(prompt_id):
            error = {
                "type": "invalid_prompt_id",
                "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let "
                "the server generate one",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        else:
            prompt_id = str(prompt_id)
        valid = self.validate_prompt(prompt)
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid[0]:
            log.warning("invalid prompt: %s", valid[1])
            return 400, {"error": valid[1], "node_errors": valid[3]}
        if not self.profile.queue_create_time:  # 0.3.64: 5-long entries, sensitive keys dropped in history only
            if not self._put((number, prompt_id, prompt, extra_data, valid[2])):
                return 409, self._duplicate(prompt_id)
            return 200, {"prompt_id": prompt_id, "number": number, "node_errors": valid[3]}
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        extra_data["create_time"] = _now_ms()
        if not self._put((number, prompt_id, prompt, extra_data, valid[2], sensitive)):
            return 409, self._duplicate(prompt_id)
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": valid[3]}

    @staticmethod
    def _duplicate(prompt_id) -> dict:
        error = {
            "type": "duplicate_prompt_id",
            "message": "prompt_id is already in use",
            "details": "a prompt with id %s is queued, running or in the history" % prompt_id,
            "extra_info": {"prompt_id": prompt_id},
        }
        return {"error": error, "node_errors": {}}

    def prompt_id_taken(self, prompt_id) -> bool:
        with self.mutex:
            return (
                prompt_id in self.history
                or any(item[1] == prompt_id for item in self.currently_running.values())
                or any(e[3][1] == prompt_id for e in self._queue)
            )

    def validate_prompt(self, prompt):
        """(valid, error, outputs_to_execute, node_errors) with v0.8.0's error shapes."""
        if not isinstance(prompt, dict):
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because the prompt is not an object.",
                    "details": "",
                    "extra_info": {},
                },
                [],
                {},
            )
        outputs = []
        for x in prompt:
            node = prompt[x]
            if self.profile.missing_node_type and (not isinstance(node, dict) or "class_type" not in node):
                title = (node.get("_meta") or {}).get("title") if isinstance(node, dict) else None
                return (
                    False,
                    {
                        "type": "missing_node_type",
                        "message": "Node '%s' has no class_type. The workflow may be corrupted or a custom node is "
                        "missing." % (title or "ID #%s" % x),
                        "details": "Node ID '#%s'" % x,
                        "extra_info": {"node_id": x, "class_type": None, "node_title": title},
                    },
                    [],
                    {},
                )
            if not isinstance(node, dict) or "class_type" not in node:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because a node is missing the class_type property.",
                        "details": "Node ID '#%s'" % x,
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            class_type = node["class_type"]
            cls = self.node_classes.get(class_type) if isinstance(class_type, str) else None
            if cls is None and self.profile.missing_node_type:
                title = (node.get("_meta") or {}).get("title", class_type)
                return (
                    False,
                    {
                        "type": "missing_node_type",
                        "message": "Node '%s' not found. The custom node may not be installed." % (title,),
                        "details": "Node ID '#%s'" % x,
                        "extra_info": {"node_id": x, "class_type": class_type, "node_title": title},
                    },
                    [],
                    {},
                )
            if cls is None:
                return (
                    False,
                    {
                        "type": "invalid_prompt",
                        "message": "Cannot execute because node %s does not exist." % (class_type,),
                        "details": "Node ID '#%s'" % x,
                        "extra_info": {},
                    },
                    [],
                    {},
                )
            if not isinstance(node.get("inputs", {}), dict):
                node["inputs"] = {}
            if getattr(cls, "OUTPUT_NODE", False) is True:
                outputs.append(x)
        if not outputs:
            return (
                False,
                {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
                [],
                {},
            )

        good_outputs, errors, node_errors, validated = [], [], {}, {}
        for o in outputs:
            try:
                m = self._validate_inputs(prompt, o, validated, [])
                valid, reasons = m[0], m[1]
            except Exception as ex:  # noqa: BLE001 - reported to the caller like ComfyUI does
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": full_type_name(type(ex)),
                            "traceback": traceback.format_tb(ex.__traceback__),
                        },
                    }
                ]
                validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
            else:
                errors.append((o, reasons))
                for node_id, result in validated.items():
                    if result[0] is not True and len(result[1]) > 0:
                        if node_id not in node_errors:
                            node_errors[node_id] = {
                                "errors": result[1],
                                "dependent_outputs": [],
                                "class_type": prompt[node_id]["class_type"],
                            }
                        node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join("%s: %s" % (e["message"], e["details"]) for _, errs in errors for e in errs)
            return (
                False,
                {
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": details,
                    "extra_info": {},
                },
                [],
                node_errors,
            )
        return (True, None, good_outputs, node_errors)

    @staticmethod
    def _input_info(class_inputs, name):
        for category in ("required", "optional", "hidden"):
            group = class_inputs.get(category) or {}
            if name in group:
                spec = group[name]
                if category == "hidden":
                    return spec, category, {}
                input_type = spec[0]
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                return input_type, category, extra
        return None, None, None

    def _validate_inputs(self, prompt, unique_id, validated, visiting):
        if unique_id in validated:
            return validated[unique_id]
        if unique_id in visiting:
            path = visiting[visiting.index(unique_id) :] + [unique_id]
            cycle_nodes = list(dict.fromkeys(path))
            details = " -> ".join("%s (%s)" % (n, prompt[n]["class_type"]) for n in path)
            for n in cycle_nodes:
                validated[n] = (
                    False,
                    [
                        {
                            "type": "dependency_cycle",
                            "message": "Dependency cycle detected",
                            "details": details,
                            "extra_info": {"node_id": n, "cycle_nodes": cycle_nodes},
                        }
                    ],
                    n,
                )
            return validated[unique_id]

        inputs = prompt[unique_id].get("inputs", {})
        cls = self.node_classes[prompt[unique_id]["class_type"]]
        class_inputs = self.input_types(cls)
        validate_fn = getattr(cls, "VALIDATE_INPUTS", None)
        validate_args, validate_kwargs = [], False
        if validate_fn is not None:
            spec = inspect.getfullargspec(validate_fn)
            validate_args = [a for a in spec.args if a not in ("cls", "self", "s", "env")]
            validate_kwargs = spec.varkw is not None
        errors, valid = [], True
        names = list(dict.fromkeys(list(class_inputs.get("required") or {}) + list(class_inputs.get("optional") or {})))
        for x in names:
            input_type, category, extra_info = self._input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": x,
                            "extra_info": {"input_name": x},
                        }
                    )
                continue
            val = inputs[x]
            info = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": x,
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self.node_classes[o_class_type].RETURN_TYPES[val[1]]
                if "input_types" not in validate_args and not validate_node_input(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": "%s, received_type(%s) mismatch input_type(%s)" % (x, received_type, input_type),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    visiting.append(unique_id)
                    try:
                        r = self._validate_inputs(prompt, o_id, validated, visiting)
                    finally:
                        visiting.pop()
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001
                    valid = False
                    validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": x,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": full_type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:  # noqa: BLE001
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": "Failed to convert an input value to a %s value" % (input_type,),
                            "details": "%s, %s, %s" % (x, val, ex),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue
                if x not in validate_args and not validate_kwargs:
                    try:
                        if "min" in extra_info and val < extra_info["min"]:
                            errors.append(
                                {
                                    "type": "value_smaller_than_min",
                                    "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                                    "details": x,
                                    "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                                }
                            )
                            continue
                        if "max" in extra_info and val > extra_info["max"]:
                            errors.append(
                                {
                                    "type": "value_bigger_than_max",
                                    "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                                    "details": x,
                                    "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                                }
                            )
                            continue
                    except TypeError:
                        pass
                    if isinstance(input_type, list) and val not in input_type:
                        if len(input_type) > 20:
                            list_info, input_config = "(list of length %d)" % len(input_type), None
                        else:
                            list_info, input_config = str(input_type), info
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": "%s: '%s' not in %s" % (x, val, list_info),
                                "extra_info": {"input_name": x, "input_config": input_config, "received_value": val},
                            }
                        )
                        continue

        if validate_fn is not None and (validate_args or validate_kwargs):
            filtered = {
                k: v for k, v in inputs.items() if not isinstance(v, list) and (k in validate_args or validate_kwargs)
            }
            try:
                ret = _call_with_env(validate_fn, self, **filtered)
            except Exception as ex:  # noqa: BLE001
                ret = str(ex)
            if ret is not True:
                for x in list(filtered) or [None]:
                    details = x if x is not None else ""
                    if ret is not False:
                        details = "%s - %s" % (x, ret) if x is not None else str(ret)
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": x} if x is not None else {},
                        }
                    )

        ret = validated.get(unique_id, (True, [], unique_id))
        ret = (ret[0] and valid is True and not errors, ret[1] + [e for e in errors if e not in ret[1]], unique_id)
        validated[unique_id] = ret
        return ret

    # -- the worker (main.prompt_worker + execution.PromptExecutor) ----------------------------------------

    def _worker_main(self):
        while True:
            got = self._get()
            if got is None:
                return
            item, item_id = got
            prompt_id = item[1]
            try:
                run, history_result = self._execute(item[2], prompt_id, item[3], item[4])
                status = {
                    "status_str": "success" if run.success else "error",
                    "completed": run.success,
                    "messages": run.status_messages,
                }
            except Exception:  # noqa: BLE001 - a stand-in bug must not kill the worker
                log.exception("stand-in executor failed on prompt %s", prompt_id)
                history_result = {"outputs": {}, "meta": {}}
                status = {"status_str": "error", "completed": False, "messages": []}
            self._task_done(item_id, history_result, status)
            if self.client_id is not None:
                self.send_sync("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)

    def _add_message(self, run: _Run, event, data, broadcast: bool):
        data = {**data, "timestamp": _now_ms()}
        run.status_messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.send_sync(event, data, self.client_id)

    def _is_changed(self, cls, node):
        fn = getattr(cls, "IS_CHANGED", None)
        if fn is None:
            return False
        constants = {k: v for k, v in node.get("inputs", {}).items() if not is_link(v)}
        try:
            value = _call_with_env(fn, self, **constants)
        except Exception as e:  # noqa: BLE001
            log.warning("WARNING: %s", e)
            value = float("nan")
        if isinstance(value, float) and math.isnan(value):
            return "nan:" + uuid.uuid4().hex  # never equal: never cached
        return value

    def _signatures(self, prompt) -> dict:
        """Input signatures (CacheKeySetInputSignature): a node's class, constant inputs and its ancestors'
        signatures; identical signatures share cached outputs."""
        memo: dict = {}

        def sig(node_id):
            if node_id in memo:
                return memo[node_id] or "cycle"
            memo[node_id] = None
            node = prompt[node_id]
            cls = self.node_classes[node["class_type"]]
            parts = []
            for name in sorted(node.get("inputs", {})):
                v = node["inputs"][name]
                if is_link(v) and v[0] in prompt:
                    parts.append([name, "link", sig(v[0]), v[1]])
                else:
                    parts.append([name, "value", v])
            hidden = (self.input_types(cls).get("hidden") or {}).values()
            own_id = node_id if ("UNIQUE_ID" in hidden or getattr(cls, "NOT_IDEMPOTENT", False)) else None
            text = json.dumps(
                [node["class_type"], parts, self._is_changed(cls, node), own_id], sort_keys=True, default=repr
            )
            memo[node_id] = hashlib.sha256(text.encode()).hexdigest()
            return memo[node_id]

        return {node_id: sig(node_id) for node_id in prompt}

    def _execute(self, prompt, prompt_id, extra_data, execute_outputs):
        self.interrupt_processing(False)
        self.client_id = extra_data["client_id"] if "client_id" in extra_data else None
        self.last_prompt_id = prompt_id
        run = _Run(prompt_id, prompt, extra_data)
        self._add_message(run, "execution_start", {"prompt_id": prompt_id}, broadcast=False)

        sigs = self._signatures(prompt)
        keep = set(sigs.values())
        self._cache = {k: v for k, v in self._cache.items() if k in keep}  # the classic cache: dump ASAP
        cached_nodes = [node_id for node_id in prompt if sigs[node_id] in self._cache]
        self._add_message(run, "execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        progress = _Progress(self, prompt_id)
        elist = _ExecutionList(prompt, self.node_classes, lambda n: sigs[n] in self._cache)
        current_outputs = list(prompt.keys())
        for node_id in execute_outputs:
            elist.add_node(node_id)
        while not elist.is_empty():
            node_id = elist.stage()
            if node_id is None:
                error = {
                    "node_id": next(iter(elist.pending)),
                    "exception_message": "Dependency cycle detected",
                    "exception_type": "",
                    "traceback": [],
                    "current_inputs": [],
                }
                self._handle_execution_error(run, current_outputs, error, RuntimeError("cycle"))
                run.success = False
                break
            result, error, ex = self._execute_node(run, node_id, sigs, progress)
            run.success = result != FAILURE
            if result == FAILURE:
                self._handle_execution_error(run, current_outputs, error, ex)
                break
            elist.complete(node_id)
        else:
            self._add_message(run, "execution_success", {"prompt_id": prompt_id}, broadcast=False)

        history_result = {
            "outputs": {n: ui["output"] for n, ui in run.ui_outputs.items()},
            "meta": {n: ui["meta"] for n, ui in run.ui_outputs.items()},
        }
        self.last_node_id = None
        return run, history_result

    def _input_value(self, run: _Run, sigs, link):
        from_id, socket = link
        outputs = run.results.get(from_id)
        if outputs is None:
            cached = self._cache.get(sigs[from_id])
            outputs = cached.outputs if cached is not None else None
        if outputs is None or socket >= len(outputs):
            return None
        return outputs[socket]

    def _get_input_data(self, run: _Run, node_id, cls, sigs) -> dict:
        class_inputs = self.input_types(cls)
        data = {}
        for name, value in run.prompt[node_id].get("inputs", {}).items():
            _, category, _ = self._input_info(class_inputs, name)
            if is_link(value):
                data[name] = self._input_value(run, sigs, value)
            elif category is not None:
                data[name] = value
        for name, kind in (class_inputs.get("hidden") or {}).items():
            if kind == "PROMPT":
                data[name] = run.prompt
            elif kind == "EXTRA_PNGINFO":
                data[name] = run.extra_data.get("extra_pnginfo", None)
            elif kind == "UNIQUE_ID":
                data[name] = node_id
            elif kind in ("DYNPROMPT", "EXECUTION_LIST", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
                data[name] = None
        return data

    def _execute_node(self, run: _Run, node_id, sigs, progress: _Progress):
        prompt_id = run.prompt_id
        cls = self.node_classes[run.prompt[node_id]["class_type"]]
        cached = self._cache.get(sigs[node_id])
        if cached is not None:
            if node_id not in run.ui_outputs:
                if cached.ui is not None:
                    run.ui_outputs[node_id] = copy.deepcopy(cached.ui)
                if self.client_id is not None:
                    output = cached.ui.get("output") if cached.ui is not None else None
                    self.send_sync(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": output, "prompt_id": prompt_id},
                        self.client_id,
                    )
            progress.finish(node_id)
            run.results[node_id] = cached.outputs
            return SUCCESS, None, None

        input_data = None
        try:
            progress.start(node_id)
            input_data = self._get_input_data(run, node_id, cls, sigs)
            if self.client_id is not None:
                self.last_node_id = node_id
                self.send_sync(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, self.client_id
                )
            obj = cls()
            obj.ctx = ExecContext(self, prompt_id, node_id, progress, run.extra_data)
            self._check_interrupt()  # nodes.before_node_execution()
            ret = getattr(obj, cls.FUNCTION)(**input_data)
            ui = None
            if isinstance(ret, dict):
                ui = ret.get("ui")
                result = ret.get("result")
                outputs = list(result) if result is not None else []
            elif ret is None:
                outputs = []
            else:
                outputs = list(ret)
            cache_ui = run.ui_outputs.get(node_id)
            if ui:
                meta = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
                ui = _jsonable(ui)
                run.ui_outputs[node_id] = {"meta": meta, "output": ui}
                cache_ui = {"meta": meta, "output": ui}
                if self.client_id is not None:
                    self.send_sync(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                        self.client_id,
                    )
            run.results[node_id] = outputs
            self._cache[sigs[node_id]] = CacheEntry(cache_ui, outputs)
        except InterruptProcessingException as iex:
            log.info("Processing interrupted")
            return FAILURE, {"node_id": node_id}, iex
        except Exception as ex:  # noqa: BLE001 - reported as execution_error
            typ, _, tb = sys.exc_info()
            formatted = {}
            if input_data is not None:
                formatted = {name: [format_value(v)] for name, v in input_data.items()}
            log.error("!!! Exception during processing !!! %s", ex)
            return (
                FAILURE,
                {
                    "node_id": node_id,
                    "exception_message": "{}\n{}".format(ex, ""),
                    "exception_type": full_type_name(typ),
                    "traceback": traceback.format_tb(tb),
                    "current_inputs": formatted,
                },
                ex,
            )
        progress.finish(node_id)
        run.executed.append(node_id)
        return SUCCESS, None, None

    def _handle_execution_error(self, run: _Run, current_outputs, error, ex):
        node_id = error["node_id"]
        class_type = run.prompt[node_id]["class_type"]
        if isinstance(ex, InterruptProcessingException):
            mes = {
                "prompt_id": run.prompt_id,
                "node_id": node_id,
                "node_type": class_type,
                "executed": list(run.executed),
            }
            self._add_message(run, "execution_interrupted", mes, broadcast=True)
        else:
            mes = {
                "prompt_id": run.prompt_id,
                "node_id": node_id,
                "node_type": class_type,
                "executed": list(run.executed),
                "exception_message": error["exception_message"],
                "exception_type": error["exception_type"],
                "traceback": error["traceback"],
                "current_inputs": error["current_inputs"],
                "current_outputs": list(current_outputs),
            }
            self._add_message(run, "execution_error", mes, broadcast=False)

    # -- object_info ---------------------------------------------------------------------------------------

    def node_info(self, name) -> dict:
        cls = self.node_classes[name]
        inputs = self.input_types(cls)
        returns = list(getattr(cls, "RETURN_TYPES", ()))
        info = {
            "input": _jsonable(inputs),
            "input_order": {k: list(v.keys()) for k, v in inputs.items()},
            "output": returns,
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
            "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
            "name": name,
            "display_name": (
                getattr(cls, "DISPLAY_NAME", None)
                or self.display_names.get(name)
                or standin_nodes.NODE_DISPLAY_NAMES.get(name, name)
            ),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
        for flag in ("DEPRECATED", "EXPERIMENTAL"):
            if getattr(cls, flag, False):
                info[flag.lower()] = True
        return info

    def dir_by_type(self, type_):
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(type_)

    def extension_list(self) -> list:
        """GET /extensions: the frontend's own extensions/**/*.js (when a frontend is served) and every .js file
        of each loaded pack's WEB_DIRECTORY as /extensions/<pack>/<file> (sorted; ComfyUI returns glob order)."""
        out = []
        if self.web_root is not None:
            files = glob.glob(os.path.join(glob.escape(self.web_root), "extensions", "**", "*.js"), recursive=True)
            out += sorted("/" + os.path.relpath(f, self.web_root).replace(os.sep, "/") for f in files)
        for name, directory in self.extension_web_dirs.items():
            files = glob.glob(os.path.join(glob.escape(directory), "**", "*.js"), recursive=True)
            out += sorted(
                "/extensions/" + urllib.parse.quote(name) + "/" + os.path.relpath(f, directory).replace(os.sep, "/")
                for f in files
            )
        return out

    def system_stats(self) -> dict:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            ram_total = os.sysconf("SC_PHYS_PAGES") * page
            ram_free = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            ram_total = ram_free = 0
        p = self.profile
        system = {
            "os": p.system_os,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": p.comfyui_version,
            "required_frontend_version": p.required_frontend_version,
            "installed_templates_version": p.installed_templates_version,
            "required_templates_version": p.required_templates_version,
        }
        if p.extra_system_keys:  # current: every comfy* package of requirements.txt, installed and required
            system["comfy_package_versions"] = [
                {"name": "comfyui-frontend-package", "installed": None, "required": p.required_frontend_version}
            ]
        system.update(
            python_version=sys.version,
            pytorch_version="none (ComfyUI stand-in)",
            embedded_python=False,
        )
        if p.extra_system_keys:
            system["deploy_environment"] = "local-git"
        system["argv"] = list(sys.argv)
        cpu = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
        # current lists every device, the primary first; older versions only the primary one
        devices = [cpu] + [dict(d) for d in self.extra_devices] if p.extra_system_keys else [cpu]
        return {"system": system, "devices": devices}


# ---- HTTP routes ---------------------------------------------------------------------------------------


def get_state(app_or_request) -> ComfyState:
    app = app_or_request.app if isinstance(app_or_request, web.Request) else app_or_request
    return app["comfy"]


async def _json_body(request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def websocket_handler(request):
    state = get_state(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "")
    if sid:
        state.sockets.pop(sid, None)  # reusing an existing session: the old socket gets nothing more
    else:
        sid = uuid.uuid4().hex
    state.sockets[sid] = ws
    state.sockets_metadata[sid] = {"feature_flags": {}}
    try:
        if state.closing_sockets:
            # accepted while the server shut down, after its sockets were closed: the shutdown would wait on this
            # handler until the client left, and the client may be a pack that only leaves at cleanup
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
            return ws
        try:
            await ws.send_str(json.dumps({"type": "status", "data": {"status": state.get_queue_info(), "sid": sid}}))
        except ConnectionResetError:
            if state.closing_sockets:
                return ws  # the shutdown closed it between accepting and greeting
            raise
        if state.client_id == sid and state.last_node_id is not None:
            await ws.send_str(json.dumps({"type": "executing", "data": {"node": state.last_node_id}}))
        first_message = True
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                    if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                        state.sockets_metadata[sid]["feature_flags"] = data.get("data", {}) or {}
                        await ws.send_str(json.dumps({"type": "feature_flags", "data": state.server_features}))
                    first_message = False
                except json.JSONDecodeError:
                    log.warning("Invalid JSON received from client %s: %s", sid, msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.warning("ws connection closed with exception %s", ws.exception())
    finally:
        if state.sockets.get(sid) is ws:
            state.sockets.pop(sid, None)
            state.sockets_metadata.pop(sid, None)
    return ws


async def get_embeddings(request):
    return web.json_response([])


async def get_models(request):
    return web.json_response(MODEL_FOLDERS)


async def get_models_folder(request):
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    return web.json_response(list(get_state(request).models) if folder == "checkpoints" else [])


async def get_extensions(request):
    return web.json_response(get_state(request).extension_list())


async def upload_image(request):
    state = get_state(request)
    post = await request.post()
    image = post.get("image")
    overwrite = post.get("overwrite")
    upload_type = post.get("type") or "input"
    upload_dir = state.dir_by_type(upload_type)
    if upload_dir is None or not (image is not None and getattr(image, "file", None)):
        return web.Response(status=400)
    filename = image.filename
    if not filename:
        return web.Response(status=400)
    subfolder = post.get("subfolder", "")
    full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(full_output_folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return web.Response(status=400)
    os.makedirs(full_output_folder, exist_ok=True)
    # ComfyUI compares and writes with image.file.read() (the whole file in memory); the stand-in does the same in
    # chunks, so a test's 200 MB upload costs no memory. aiohttp's post() has already spooled the file to disk.
    duplicate = False
    if overwrite not in ("true", "1"):
        stem, ext = os.path.splitext(filename)
        i = 1
        upload_digest = None
        while os.path.exists(filepath):
            if upload_digest is None:
                upload_digest = _sha256_of(image.file)
            with open(filepath, "rb") as f:
                if _sha256_of(f) == upload_digest:
                    duplicate = True
                    break
            filename = "%s (%d)%s" % (stem, i, ext)
            filepath = os.path.join(full_output_folder, filename)
            i += 1
    if not duplicate:
        image.file.seek(0)
        with open(filepath, "wb") as f:
            shutil.copyfileobj(image.file, f, 1 << 20)
    return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})


def _sha256_of(f) -> bytes:
    """The sha256 of a file object's bytes from its start, read in chunks (the file is left at its end)."""
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.digest()


def _annotated_filepath(state, name):
    for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
        if name.endswith(suffix):
            return name[: -(len(suffix) + 1)], state.dir_by_type(kind)
    return name, None


async def view_image(request):
    state = get_state(request)
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    filename, output_dir = _annotated_filepath(state, query["filename"])
    if not filename:
        return web.Response(status=400)
    if filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    if output_dir is None:
        output_dir = state.dir_by_type(query.get("type", "output"))
    if output_dir is None:
        return web.Response(status=400)
    if "subfolder" in query:
        full_output_dir = os.path.join(output_dir, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
            return web.Response(status=403)
        output_dir = full_output_dir
    filename = os.path.basename(filename)
    file = os.path.join(output_dir, filename)
    if os.path.isfile(file):
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return web.FileResponse(
            file, headers={"Content-Disposition": 'filename="%s"' % filename, "Content-Type": content_type}
        )
    return web.Response(status=404)


async def system_stats(request):
    return web.json_response(get_state(request).system_stats())


async def get_features(request):
    return web.json_response(get_state(request).server_features)


async def get_prompt(request):
    return web.json_response(get_state(request).get_queue_info())


async def get_object_info(request):
    state = get_state(request)
    out = {}
    for name in state.node_classes:
        try:
            out[name] = state.node_info(name)
        except Exception:  # noqa: BLE001 - like ComfyUI: log and leave the class out
            log.exception("[ERROR] An error occurred while retrieving information for the '%s' node.", name)
    return web.json_response(out)


async def get_object_info_node(request):
    state = get_state(request)
    name = request.match_info.get("node_class")
    out = {}
    if name in state.node_classes:
        out[name] = state.node_info(name)
    return web.json_response(out)


async def get_history(request):
    query = request.rel_url.query
    try:
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
    except ValueError:
        return web.Response(status=400)
    return web.json_response(get_state(request).get_history(max_items=max_items, offset=offset))


async def get_history_prompt_id(request):
    return web.json_response(get_state(request).get_history(prompt_id=request.match_info["prompt_id"]))


async def get_queue(request):
    running, pending = get_state(request).queue_snapshot()
    return web.json_response({"queue_running": running, "queue_pending": pending})


async def post_prompt(request):
    json_data = await _json_body(request)
    if json_data is None:
        error = {"type": "invalid_json", "message": "The request body is not JSON", "details": "", "extra_info": {}}
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    status, body = get_state(request).post_prompt(json_data)
    return web.json_response(body, status=status)


async def post_queue(request):
    state = get_state(request)
    json_data = await _json_body(request) or {}
    if json_data.get("clear"):
        state.wipe_queue()
    for prompt_id in json_data.get("delete", []) or []:
        state.delete_queue_item(prompt_id)
    return web.Response(status=200)


async def post_interrupt(request):
    json_data = await _json_body(request)
    if not isinstance(json_data, dict):
        json_data = {}
    get_state(request).interrupt(json_data.get("prompt_id"))
    return web.Response(status=200)


async def get_jobs(request):
    state = get_state(request)
    query = request.rel_url.query
    statuses = None
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        bad = [s for s in statuses if s not in state.profile.job_statuses]
        if bad:
            return web.json_response(
                {
                    "error": "Invalid status value(s): %s. Valid values: %s"
                    % (", ".join(bad), ", ".join(state.profile.job_statuses))
                },
                status=400,
            )
    sort_by = query.get("sort_by", "created_at").lower()
    sort_order = query.get("sort_order", "desc").lower()
    if sort_by not in ("created_at", "execution_duration"):
        return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
    if sort_order not in ("asc", "desc"):
        return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
    limit = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        if limit <= 0:
            return web.json_response({"error": "limit must be a positive integer"}, status=400)
    offset = 0
    if "offset" in query:
        try:
            offset = max(0, int(query["offset"]))
        except ValueError:
            return web.json_response({"error": "offset must be an integer"}, status=400)
    running, queued, history = state.jobs_snapshot()
    jobs, total = jobs_api.list_jobs(
        running,
        queued,
        history,
        state.profile,
        statuses=statuses,
        workflow_id=query.get("workflow_id"),
        sort_by=sort_by,
        sort_order=sort_order,
        limit=limit,
        offset=offset,
    )
    pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(jobs) < total}
    return web.json_response({"jobs": jobs, "pagination": pagination})


async def get_job(request):
    state = get_state(request)
    job_id = request.match_info.get("job_id")
    running, queued, history = state.jobs_snapshot(job_id)
    job = jobs_api.job_detail(job_id, running, queued, history, state.profile)
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def post_job_cancel(request):
    return web.json_response({"cancelled": get_state(request).cancel_job(request.match_info.get("job_id"))})


async def post_jobs_cancel(request):
    state = get_state(request)
    try:
        json_data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "Request body must be valid JSON"}, status=400)
    job_ids = json_data.get("job_ids") if isinstance(json_data, dict) else None
    if not isinstance(job_ids, list):
        return web.json_response({"error": "job_ids must be a list"}, status=400)
    invalid = [j if isinstance(j, str) else repr(j) for j in job_ids if not jobs_api.valid_job_id(j)]
    if invalid:
        return web.json_response({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400)
    cancelled = False
    for job_id in job_ids:
        cancelled = state.cancel_job(job_id) or cancelled
    return web.json_response({"cancelled": cancelled})


async def post_free(request):
    return web.Response(status=200)


async def post_history(request):
    state = get_state(request)
    json_data = await _json_body(request) or {}
    if json_data.get("clear"):
        state.wipe_history()
    for prompt_id in json_data.get("delete", []) or []:
        state.delete_history_item(prompt_id)
    return web.Response(status=200)


async def probe_ping(request):
    state = get_state(request)
    return web.json_response({"ok": True, "loaded_at": state.started_at, "client_id": state.client_id})


ROUTES = [
    ("GET", "/ws", websocket_handler),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_models_folder),
    ("GET", "/extensions", get_extensions),
    ("POST", "/upload/image", upload_image),
    ("GET", "/view", view_image),
    ("GET", "/system_stats", system_stats),
    ("GET", "/features", get_features),
    ("GET", "/prompt", get_prompt),
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_node),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_prompt_id),
    ("GET", "/queue", get_queue),
    ("POST", "/prompt", post_prompt),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("POST", "/history", post_history),
    ("GET", "/probe/ping", probe_ping),  # the recorded probe custom node's route
]
# ComfyUI registers these as "/api/jobs...", so with its /api copy of every route they are also at /api/api/jobs...
JOBS_ROUTES = [("GET", "/api/jobs", get_jobs), ("GET", "/api/jobs/{job_id}", get_job)]
JOBS_CANCEL_ROUTES = [
    ("POST", "/api/jobs/{job_id}/cancel", post_job_cancel),
    ("POST", "/api/jobs/cancel", post_jobs_cancel),
]


def routes_for(profile) -> list:
    """The prompt API routes of this ComfyUI version."""
    routes = list(ROUTES)
    if profile.jobs_api:
        routes[routes.index(("GET", "/object_info/{node_class}", get_object_info_node)) + 1 : 0] = JOBS_ROUTES
    if profile.jobs_cancel:
        routes[routes.index(JOBS_ROUTES[-1]) + 1 : 0] = JOBS_CANCEL_ROUTES
    return routes


@web.middleware
async def _headers_middleware(request, handler):
    """The Content-Security-Policy header the recorded server put on every response (state.csp; None: none)."""
    response = await handler(request)
    csp = get_state(request).csp
    if csp and not response.prepared:
        response.headers.setdefault("Content-Security-Policy", csp)
    return response


def add_routes(app: web.Application, routes=ROUTES):
    """Registers handlers at /x and /api/x, as ComfyUI does."""
    for method, path, handler in routes:
        for p in ("/api" + path, path):
            if method == "GET":
                app.router.add_get(p, handler)
            else:
                app.router.add_route(method, p, handler)


def make_app(
    output_dir,
    *,
    models=None,
    node_classes=None,
    name="standin",
    input_dir=None,
    temp_dir=None,
    step_delay: float = 0.05,
    user_dir=None,
    web_root=None,
    static_routes: bool = True,
    comfyui_version=None,
    max_upload_size: int = MAX_UPLOAD_SIZE,
) -> web.Application:
    """The stand-in ComfyUI as an aiohttp Application (not started).

    output_dir    where SaveImage writes (created if missing)
    models        checkpoint file names: the choices of CheckpointLoaderSimple.ckpt_name and GET /models/checkpoints
    node_classes  None (all stand-in nodes), an iterable of stand-in class names to keep, or a dict name -> class
    name          a label for this stand-in (worker thread name, logs)
    input_dir, temp_dir, user_dir  LoadImage/upload, PreviewImage and user (settings, workflows) folders (default:
                  fresh temporary folders, removed on cleanup)
    step_delay    seconds ProbeProgress sleeps per step
    web_root      a ComfyUI frontend's static folder (e.g. comfyui-frontend-package's `static`) to serve at /
                  (None: no frontend, / is a 404 as on a headless server without one)
    static_routes add the static file routes (the frontend, /extensions/<pack>/...) now; pass False when more
                  routes follow (custom node packs, see plugin_host) and call frontend.add_static_routes(app) last,
                  as ComfyUI adds its static routes after every other route
    comfyui_version  which ComfyUI to imitate: "0.3.64", "0.8.0" or "current" (None: $STANDIN_COMFYUI_VERSION,
                  else 0.8.0); see versions.py
    max_upload_size  the largest request body in bytes (ComfyUI's --max-upload-size, default 100 MB): a larger
                  upload is a 413; served as /features max_upload_size
    Besides the prompt API (ROUTES) the app has ComfyUI's user, settings, userdata, model-list, i18n, template
    and internal routes (see frontend.py), as ComfyUI always does.
    The state is app["comfy"] (a ComfyState)."""
    from . import frontend

    state = ComfyState(
        output_dir,
        models=models,
        node_classes=node_classes,
        name=name,
        input_dir=input_dir,
        temp_dir=temp_dir,
        step_delay=step_delay,
        user_dir=user_dir,
        web_root=web_root,
        comfyui_version=comfyui_version,
        max_upload_size=max_upload_size,
    )
    app = web.Application(client_max_size=state.max_upload_size, middlewares=[_headers_middleware])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aiohttp's NotAppKeyWarning for the plain string key
        app["comfy"] = state
    add_routes(app, routes_for(state.profile))
    frontend.add_app_routes(app)
    if static_routes:
        frontend.add_static_routes(app)
    app.on_startup.append(state._on_startup)
    app.on_shutdown.append(state._on_shutdown)
    app.on_cleanup.append(state._on_cleanup)
    return app
