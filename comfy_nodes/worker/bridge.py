"""The worker bridge: runs jobs from the broker on one ComfyUI, through its public API only.

For each job: POST /prompt (own client_id; extra_data.extra_pnginfo carries the UI workflow and a `comfymq`
entry {job_id, attempt, batch_id, batch_index, prompt_id} so saved PNGs and the Job Info node see them),
follow /ws for execution_start / executing / progress / executed / execution_success / execution_error /
execution_interrupted, read /history/{prompt_id} at the end, download every output file the history names
(type "output") via /view, and hand outputs and files to the native worker client, which streams the files
to the host and re-sends after reconnects.

Outcomes: HTTP 400 from /prompt (validation) -> failed, not retried, with ComfyUI's node_errors kept;
execution_error -> failed with exception, node and traceback, retried per max_attempts; interrupted by a
cancel -> cancel confirmed; ComfyUI unreachable -> the worker leaves the broker (its job returns to the queue
without an attempt counted), says so in the log and its state, and rejoins once ComfyUI answers again.

The bridge runs its own asyncio loop on its own thread, so it never blocks ComfyUI's server loop. The blocking
native calls (next_job, next_event; the GIL released by the native side) run on two plain threads that feed
the loop, not on an executor: at interpreter exit executors refuse work before atexit handlers run, and the
bridge must still be able to leave cleanly then.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import platform
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import native
from . import capabilities as caps_mod
from .comfy_client import ComfyClient, ComfyUnreachable, PromptRejected

log = logging.getLogger("comfymq.worker")

FILE_KEYS_SKIPPED_TYPES = ("temp", "input")  # previews and inputs are not results


@dataclass
class BridgeSettings:
    comfy_url: str
    broker: str
    worker_id: str
    name: str
    work_dir: str
    capacity: int = 1
    heartbeat: float = 1.0
    broker_public_key: str | None = None
    public_key: str | None = None
    secret_key: str | None = None
    allow_plaintext: bool = False
    plugin_version: str = ""
    caps_refresh: float = 300.0  # seconds between /object_info checks (models added or removed)
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0


@dataclass
class _Run:
    job: dict
    prompt_id: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_reason: str | None = None
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerBridge:
    def __init__(self, settings: BridgeSettings):
        self.s = settings
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._runs: dict[str, _Run] = {}  # prompt_id -> run
        self._by_job: dict[str, _Run] = {}
        self._uploads: dict[str, Path] = {}  # job_id -> its download dir, until the host acks
        self._wc = None
        self._caps: dict = {}
        self._unreachable: str | None = None
        self._unhealthy: str | None = None  # why this link must be left (a part of the bridge broke)
        self.state = {
            "comfy_url": settings.comfy_url,
            "broker": settings.broker,
            "comfyui": "unknown",
            "connected": False,
            "running": None,
            "message": "starting",
        }

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="comfymq-worker", daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Runs in the calling thread until stop() (the standalone CLI)."""
        self._thread_main()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops taking jobs and leaves; a job in flight is left to its lease (it returns to the queue)."""
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception:  # noqa: BLE001 - a worker thread must not die silently
            log.exception("the ComfyMQ worker stopped on an unexpected error")
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    # ---- main loop: wait for ComfyUI, join the broker, serve, repeat -------------------------------------

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        if self._stopping:
            return
        n = native.load()
        Path(self.s.work_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(self.s.work_dir).glob("job-*"):  # downloads of an earlier run: re-made on re-send
            shutil.rmtree(stale, ignore_errors=True)
        client = ComfyClient(self.s.comfy_url)
        delay, said = 1.0, None
        try:
            while not self._stop.is_set():
                try:
                    stats = await client.system_stats()
                    self._caps = caps_mod.from_object_info(await client.object_info())
                except ComfyUnreachable as e:
                    msg = f"ComfyUI at {self.s.comfy_url} is unreachable ({e}); not taking jobs until it answers"
                    if msg != said:
                        log.warning("%s", msg)
                        said = msg
                    self.state.update(comfyui="unreachable", message=msg)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay, said = 1.0, None
                self.state.update(comfyui="ok")
                await self._serve(n, client, stats)
                if self._unhealthy and not self._stop.is_set():
                    log.error(
                        "the ComfyMQ worker left the broker because %s; its jobs go to other workers; joining again",
                        self._unhealthy,
                    )
                    self.state.update(message=f"left: {self._unhealthy}")
                    await self._sleep(1.0)
                elif self._unreachable and not self._stop.is_set():
                    log.warning(
                        "ComfyUI at %s stopped answering (%s): left the broker; its job returns to the "
                        "queue; waiting for ComfyUI",
                        self.s.comfy_url,
                        self._unreachable,
                    )
                    self.state.update(comfyui="unreachable", message=self._unreachable)
                    await self._sleep(1.0)
        finally:
            await client.close()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _host_facts(self, stats: dict) -> dict:
        system = stats.get("system", {}) if isinstance(stats, dict) else {}
        devices = [
            {k: d.get(k) for k in ("name", "type", "vram_total", "vram_free")}
            for d in (stats.get("devices") or [])
            if isinstance(d, dict)
        ]
        return {
            "hostname": socket.gethostname(),
            "os": system.get("os") or platform.system(),
            "python": system.get("python_version"),
            "pytorch": system.get("pytorch_version"),
            "ram_total": system.get("ram_total"),
            "devices": devices,
            "comfy_url": self.s.comfy_url,
        }

    async def _serve(self, n, client: ComfyClient, stats: dict) -> None:
        self._unreachable = None
        self._unhealthy = None
        version = (stats.get("system") or {}).get("comfyui_version", "") if isinstance(stats, dict) else ""
        try:
            wc = n.WorkerClient(
                broker=self.s.broker,
                worker_id=self.s.worker_id,
                name=self.s.name,
                capacity=self.s.capacity,
                capabilities=self._caps,
                info=self._host_facts(stats),
                plugin_version=self.s.plugin_version,
                comfyui_version=str(version or ""),
                heartbeat=self.s.heartbeat,
                liveness=3,
                broker_public_key=self.s.broker_public_key,
                public_key=self.s.public_key,
                secret_key=self.s.secret_key,
                allow_plaintext=self.s.allow_plaintext,
                reconnect_min=self.s.reconnect_min,
                reconnect_max=self.s.reconnect_max,
            )
        except (ValueError, n.ComfyMQError) as e:
            log.error("cannot start the ComfyMQ worker: %s", e)
            self.state.update(message=f"cannot start: {e}")
            await self._stop.wait()
            return
        self._wc = wc
        log.info(
            "worker %s drives ComfyUI %s (%s) for broker %s",
            self.s.worker_id,
            self.s.comfy_url,
            caps_mod.summary(self._caps),
            self.s.broker,
        )
        self.state.update(message="serving")
        loop = asyncio.get_running_loop()
        jobs: asyncio.Queue = asyncio.Queue()
        events: asyncio.Queue = asyncio.Queue()
        pumps_stop = threading.Event()

        def broken(reason: str) -> None:  # from a pump thread: leave the broker (BYE) and join again
            def mark() -> None:
                self._unhealthy = self._unhealthy or reason

            try:
                loop.call_soon_threadsafe(mark)
            except RuntimeError:  # the loop is gone
                pass

        pumps = [
            threading.Thread(
                target=_pump,
                args=(wc.next_job, jobs, loop, pumps_stop, "job pump", broken),
                daemon=True,
                name="comfymq-jobs",
            ),
            threading.Thread(
                target=_pump,
                args=(wc.next_event, events, loop, pumps_stop, "event pump", broken),
                daemon=True,
                name="comfymq-worker-events",
            ),
        ]
        for t in pumps:
            t.start()
        done = asyncio.Event()
        ws_ready = asyncio.Event()
        tasks = [
            asyncio.create_task(self._ws_loop(client, ws_ready, done), name="websocket follower"),
            asyncio.create_task(self._event_loop(wc, client, events), name="event handler"),
            asyncio.create_task(self._caps_loop(wc, client, done), name="capability refresher"),
        ]
        runs: set[asyncio.Task] = set()
        # wait for ComfyUI's websocket (up to 10 s), but not past a stop
        ready, stopping = asyncio.create_task(ws_ready.wait()), asyncio.create_task(self._stop.wait())
        await asyncio.wait({ready, stopping}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for t in (ready, stopping):
            t.cancel()
        if not ws_ready.is_set() and not self._stop.is_set():
            self._unreachable = "its websocket did not open"
        try:
            while not self._stop.is_set() and not self._unreachable and not self._unhealthy:
                try:
                    job = await asyncio.wait_for(jobs.get(), 0.25)
                except asyncio.TimeoutError:
                    for t in tasks:  # a background task that ended by itself is a broken bridge
                        if t.done() and not t.cancelled() and t.exception() is not None:
                            self._unhealthy = f"its {t.get_name()} failed: {t.exception()!r}"
                    continue
                t = asyncio.create_task(self._run_job(wc, client, job))
                runs.add(t)
                t.add_done_callback(runs.discard)
        finally:
            done.set()
            for t in tasks + list(runs):
                t.cancel()
            for t in tasks + list(runs):
                try:
                    await t
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            self._runs.clear()
            self._by_job.clear()
            pumps_stop.set()
            for t in pumps:
                t.join(2)
            # Leaving because ComfyUI is gone or the bridge broke: say BYE so the broker requeues our job now.
            # Stopping: no BYE; the lease runs out (a restart with the same worker id keeps what it still holds).
            wc.close(bye=bool(self._unreachable or self._unhealthy))
            self._wc = None
            self.state.update(connected=False, running=None)

    # ---- background tasks --------------------------------------------------------------------------------

    async def _ws_loop(self, client: ComfyClient, ready: asyncio.Event, done: asyncio.Event) -> None:
        """Routes websocket events to the run they concern; reconnects when the socket drops."""
        failures = 0
        while not done.is_set():
            try:
                async with client.websocket() as ws:
                    ready.set()
                    failures = 0
                    async for msg in ws:
                        if msg.type.name != "TEXT":
                            continue  # binary preview frames
                        try:
                            event = msg.json()
                        except ValueError:
                            continue
                        data = event.get("data") or {}
                        run = self._runs.get(data.get("prompt_id")) if isinstance(data, dict) else None
                        if run is not None:
                            run.events.put_nowait(event)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - aiohttp errors, refused connections
                failures += 1
                if failures >= 5:
                    self._unreachable = f"its websocket keeps failing: {e}"
                    return
            await asyncio.sleep(min(0.2 * 2**failures, 2.0))

    async def _event_loop(self, wc, client: ComfyClient, events: asyncio.Queue) -> None:
        while True:
            e = await events.get()
            try:
                await self._on_event(wc, client, e)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one event's bug must not end the handling of the others
                log.exception("the worker bridge could not handle the event %r", e)

    async def _on_event(self, wc, client: ComfyClient, e: dict) -> None:
        kind = e.get("type")
        if kind == "cancel":
            run = self._by_job.get(e.get("job_id"))
            # The lease, not the job: a cancel of an earlier run must not stop a later run of the same job.
            if run is not None and run.job.get("token") == e.get("token") and run.cancel_reason is None:
                run.cancel_reason = e.get("reason") or "cancelled"
                run.cancel_event.set()
        elif kind in ("ack", "nack"):
            path = self._uploads.pop(e.get("job_id"), None)
            if kind == "ack" and e.get("kind") == "resend_files" and path is not None:
                self._uploads[e["job_id"]] = path  # the client sends them again
            elif path is not None:
                shutil.rmtree(path, ignore_errors=True)
            if kind == "nack":
                log.warning("the host refused the result of job %s: %s", e.get("job_id"), e.get("reason"))
        elif kind == "connected":
            self.state.update(connected=True)
            log.info("worker %s joined the broker %s", self.s.worker_id, self.s.broker)
        elif kind in ("disconnected", "refused"):
            self.state.update(connected=False, message=f"{kind}: {e.get('reason')}")
            log.warning("broker link %s: %s (retry in %ss)", kind, e.get("reason"), e.get("retry_in"))
        elif kind == "caps_request":
            await self._refresh_caps(wc, client, force=True)
        elif kind == "log":
            log.log(logging.WARNING if e.get("level") == "warning" else logging.INFO, "%s", e.get("message"))

    async def _caps_loop(self, wc, client: ComfyClient, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), self.s.caps_refresh)
            except asyncio.TimeoutError:
                try:
                    await self._refresh_caps(wc, client)
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("could not refresh capabilities")

    async def _refresh_caps(self, wc, client: ComfyClient, force: bool = False) -> None:
        try:
            caps = caps_mod.from_object_info(await client.object_info())
        except ComfyUnreachable as e:
            log.warning("could not refresh capabilities: %s", e)
            return
        if force or caps != self._caps:
            self._caps = caps
            wc.update_capabilities(caps)
            log.info("capabilities refreshed: %s", caps_mod.summary(caps))

    # ---- one job ---------------------------------------------------------------------------------------

    async def _run_job(self, wc, client: ComfyClient, job: dict) -> None:
        job_id, token = job["job_id"], job["token"]
        extra = job.get("extra") or {}
        prompt = job["prompt"]
        run = _Run(job=job, prompt_id=str(uuid.uuid4()))
        self._runs[run.prompt_id] = run
        self._by_job[job_id] = run
        self.state.update(running=job_id)
        pnginfo = {
            "comfymq": {
                "job_id": job_id,
                "attempt": job.get("attempt"),
                "batch_id": extra.get("batch_id"),
                "batch_index": _batch_index(extra),
                "prompt_id": extra.get("prompt_id"),
            }
        }
        if job.get("workflow"):
            pnginfo["workflow"] = job["workflow"]
        try:
            try:
                await client.submit(prompt, prompt_id=run.prompt_id, extra_pnginfo=pnginfo)
            except PromptRejected as e:
                wc.fail(
                    job_id,
                    token,
                    {
                        "type": "validation_error",
                        "message": e.summary(),
                        "details": {"error": e.error, "node_errors": e.node_errors},
                    },
                    retryable=False,
                )
                return
            outcome, data = await self._follow(wc, client, run)
            if outcome == "success":
                await self._finish(wc, client, run)
            elif outcome == "error":
                tb = data.get("traceback")
                wc.fail(
                    job_id,
                    token,
                    {
                        "type": data.get("exception_type") or "execution_error",
                        "message": (data.get("exception_message") or "execution failed").strip(),
                        "node_id": str(data.get("node_id") or ""),
                        "traceback": "".join(tb) if isinstance(tb, list) else str(tb or ""),
                        "details": {"node_type": data.get("node_type"), "executed": data.get("executed")},
                    },
                    retryable=True,
                )
            elif outcome == "cancelled":
                wc.confirm_cancel(job_id, token)
            elif outcome == "interrupted":
                wc.fail(
                    job_id,
                    token,
                    {
                        "type": "interrupted",
                        "message": "the run was interrupted on the worker's ComfyUI (not by ComfyMQ)",
                        "node_id": str(data.get("node_id") or ""),
                    },
                    retryable=True,
                )
            elif outcome == "lost":
                wc.fail(
                    job_id, token, {"type": "comfyui_lost_prompt", "message": data.get("message", "")}, retryable=True
                )
        except ComfyUnreachable as e:
            self._unreachable = str(e)  # _serve leaves; BYE returns the job to the queue
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one job's bug must not stop the worker
            log.exception("job %s failed in the worker bridge", job_id)
            try:
                wc.fail(job_id, token, {"type": "worker_error", "message": f"{type(e).__name__}: {e}"}, retryable=True)
            except Exception:  # noqa: BLE001
                pass
        finally:
            self._runs.pop(run.prompt_id, None)
            self._by_job.pop(job_id, None)
            if self.state.get("running") == job_id:
                self.state.update(running=None)

    async def _follow(self, wc, client: ComfyClient, run: _Run) -> tuple[str, dict]:
        """Waits for the prompt's end; forwards progress; carries a cancel to ComfyUI."""
        job_id, token = run.job["job_id"], run.job["token"]
        prompt = run.job["prompt"]
        total = max(1, len(prompt))
        done_nodes: set[str] = set()
        progress = {
            "node": None,
            "class_type": None,
            "title": None,
            "value": 0,
            "max": 1,
            "nodes_done": 0,
            "nodes_total": total,
        }
        last_sent = 0.0
        interrupted_by_us = False

        def send(force: bool) -> None:
            nonlocal last_sent
            now = time.monotonic()
            if force or now - last_sent >= 0.2:
                last_sent = now
                progress["nodes_done"] = len(done_nodes)
                try:
                    wc.progress(job_id, token, dict(progress))
                except Exception:  # noqa: BLE001 - progress is best effort
                    pass

        while True:
            if run.cancel_event.is_set() and not interrupted_by_us:
                interrupted_by_us = True
                where = await client.where(run.prompt_id)
                if where == "pending":
                    await client.delete_queued(run.prompt_id)
                    if await client.where(run.prompt_id) == "absent" and await client.history(run.prompt_id) is None:
                        return "cancelled", {}
                await client.interrupt(run.prompt_id)
            getter = asyncio.ensure_future(run.events.get())
            canceller = asyncio.ensure_future(run.cancel_event.wait())
            finished, _ = await asyncio.wait({getter, canceller}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            canceller.cancel()
            if getter not in finished:
                getter.cancel()
                if canceller in finished:
                    continue
                # Quiet for a while: did we miss the end (websocket drop), or did ComfyUI lose the prompt?
                h = await client.history(run.prompt_id)
                if h is not None:
                    return self._outcome_from_history(h, interrupted_by_us)
                if await client.where(run.prompt_id) == "absent":
                    h = await client.history(run.prompt_id)
                    if h is not None:
                        return self._outcome_from_history(h, interrupted_by_us)
                    if interrupted_by_us:
                        return "cancelled", {}
                    return "lost", {"message": "the prompt vanished from ComfyUI's queue (was ComfyUI restarted?)"}
                continue
            event = getter.result()
            kind, data = event.get("type"), event.get("data") or {}
            if kind == "execution_cached":
                done_nodes.update(str(x) for x in data.get("nodes") or [])
            elif kind == "executing":
                node = data.get("node")
                if progress["node"] is not None:
                    done_nodes.add(str(progress["node"]))
                if node is None:
                    continue
                spec = prompt.get(str(node)) or {}
                progress.update(
                    node=str(node),
                    class_type=spec.get("class_type"),
                    title=(spec.get("_meta") or {}).get("title") or spec.get("class_type"),
                    value=0,
                    max=1,
                )
                send(True)
            elif kind == "progress":
                progress.update(value=data.get("value", 0), max=data.get("max", 1))
                if data.get("node") is not None and str(data.get("node")) != progress["node"]:
                    spec = prompt.get(str(data["node"])) or {}
                    progress.update(
                        node=str(data["node"]),
                        class_type=spec.get("class_type"),
                        title=(spec.get("_meta") or {}).get("title") or spec.get("class_type"),
                    )
                send(data.get("value") == data.get("max"))
            elif kind == "executed":
                done_nodes.add(str(data.get("node")))
            elif kind == "execution_success":
                return "success", data
            elif kind == "execution_error":
                return "error", data
            elif kind == "execution_interrupted":
                return ("cancelled" if interrupted_by_us else "interrupted"), data

    @staticmethod
    def _outcome_from_history(h: dict, interrupted_by_us: bool) -> tuple[str, dict]:
        status = h.get("status") or {}
        for kind, data in reversed(status.get("messages") or []):
            if kind == "execution_success":
                return "success", data
            if kind == "execution_error":
                return "error", data
            if kind == "execution_interrupted":
                return ("cancelled" if interrupted_by_us else "interrupted"), data
        if status.get("status_str") == "success" or status.get("completed"):
            return "success", {}
        return "error", {"exception_message": "ComfyUI reported an error without details"}

    async def _finish(self, wc, client: ComfyClient, run: _Run) -> None:
        job_id, token = run.job["job_id"], run.job["token"]
        h = None
        for _ in range(50):  # history is written right after execution_success; allow a moment
            h = await client.history(run.prompt_id)
            if h is not None:
                break
            await asyncio.sleep(0.05)
        outputs = (h or {}).get("outputs") or {}
        folder = Path(self.s.work_dir) / f"job-{job_id}-{token}"
        folder.mkdir(parents=True, exist_ok=True)
        files, names = [], set()

        def unique(name: str, node_id: str) -> str:
            """The artifact name for an output file: its base name, prefixed by the node id if taken."""
            name = Path(name).name
            if name in names:
                name = f"{node_id}_{name}"
            names.add(name)
            return name

        def add(path: str, name: str) -> None:
            files.append({"path": path, "name": name, "mime": _mime(name)})

        # Files our Save Image (atomic) node wrote say where they are: on this machine they are sent from
        # there (no download), including ones under a root /view cannot serve.
        local: dict[tuple[str, str], str] = {}
        for node_id, out in outputs.items():
            for item in (out.get("comfymq_files") or []) if isinstance(out, dict) else []:
                path = item.get("full_path") if isinstance(item, dict) else None
                if not path or not Path(path).is_file():
                    continue
                if item.get("in_output_dir"):
                    local[(str(item.get("subfolder") or ""), str(item.get("name")))] = path
                else:
                    add(path, unique(str(item.get("name") or Path(path).name), str(node_id)))
        for node_id, out in outputs.items():
            if not isinstance(out, dict):
                continue
            for key, items in out.items():
                if not isinstance(items, list) or key == "comfymq_files":
                    continue
                for item in items:
                    if (
                        not (isinstance(item, dict) and item.get("filename"))
                        or item.get("type") in FILE_KEYS_SKIPPED_TYPES
                    ):
                        continue
                    mine = local.get((str(item.get("subfolder") or ""), str(item["filename"])))
                    if mine is not None:
                        add(mine, unique(str(item["filename"]), str(node_id)))
                        continue
                    name = unique(str(item["filename"]), str(node_id))
                    dest = folder / name
                    try:
                        await client.download(item, dest)
                    except FileNotFoundError as e:
                        wc.fail(
                            job_id,
                            token,
                            {"type": "output_missing", "message": str(e), "node_id": str(node_id)},
                            retryable=True,
                        )
                        shutil.rmtree(folder, ignore_errors=True)
                        return
                    add(str(dest), name)
        self._uploads[job_id] = folder
        wc.complete(job_id, token, outputs=outputs, files=files)
        if not files:
            self._uploads.pop(job_id, None)
            shutil.rmtree(folder, ignore_errors=True)


def _batch_index(extra: dict) -> int | None:
    """A batch job's place in its batch (0-based): the API names them "<prefix>-0001", "<prefix>-0002", ..."""
    pid = str(extra.get("prompt_id") or "")
    head, sep, tail = pid.rpartition("-")
    if not extra.get("batch_id") or not sep or not tail.isdigit() or len(tail) < 4:
        return None
    return int(tail) - 1


def _pump(
    fetch, queue: asyncio.Queue, loop: asyncio.AbstractEventLoop, stop: threading.Event, what: str, broken
) -> None:
    """Moves what a blocking native call returns (next_job / next_event, 0.25 s at a time) into the loop.

    Never ends silently: a job the client could not hand over (ValueError naming the job, which the client
    failed) is logged and the pump goes on; any other error is logged and reported through broken(reason), so
    the bridge leaves the broker (BYE: its jobs go elsewhere) instead of holding them without running them."""
    while not stop.is_set():
        try:
            item = fetch(0.25)
        except ValueError as e:
            log.error("the worker's %s skipped a job: %s", what, e)
            continue
        except Exception as e:  # noqa: BLE001 - the client was closed, or broke
            if not stop.is_set():
                log.error("the worker's %s stopped: %s: %s", what, type(e).__name__, e)
                broken(f"its {what} stopped ({type(e).__name__}: {e})")
            return
        if item is None:
            continue
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone
            return


def _mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
