"""The worker bridge: runs jobs from the broker on one ComfyUI, through its public API only.

For each job: POST /prompt with a prompt id the bridge mints from the job's id, attempt and lease token
(runs.prompt_id_for: a canonical lowercase UUID, as newer ComfyUIs require) and records first in its work dir
(runs.RunRecords), for its own client_id (stable for this worker, runs.client_id_for); extra_data.extra_pnginfo
carries the UI workflow and a `comfymq` entry {job_id, attempt, batch_id, batch_index, prompt_id} so saved PNGs
and the Job Info node see them. Then follow /ws for execution_start / executing / progress / executed /
execution_success / execution_error / execution_interrupted, read /history/{prompt_id} at the end, download every
output file the history names (type "output") via /view, and hand outputs and files to the native worker client,
which streams the files to the host and re-sends after reconnects.

Input files that travel with the job (the prompt names them in the host's stored form): before the prompt is posted
(and before its run record is written), each is fetched from the host into the worker's cache, uploaded into
ComfyUI's input folder and named in the prompt there (inputs/resolver.py). A malformed or refused input fails the
job without a retry; a fetch that failed otherwise (the link was lost, it timed out) fails it for a retry; a cancel
while the inputs are fetched ends the job cancelled, with nothing posted. Nothing runs with an input missing.

A job that comes back to this worker under a new lease (the worker restarted, or left the broker and joined again)
while the record of an earlier run is there: the bridge asks ComfyUI what became of that prompt (the jobs API
where ComfyUI has it, else /history and /queue), and only if the prompt is the one it posted for this job
(extra_pnginfo.comfymq names the job and attempt): finished with success -> its outputs are this run's result (no
second run); still queued or running -> followed to its end (not posted again); failed, interrupted or unknown ->
run afresh. Never a result from a prompt that did not succeed. A prompt of such a record that no job claims soon
after the worker joined is cancelled on ComfyUI (it would only hold ComfyUI up).

Outcomes: HTTP 400 from /prompt (validation) -> failed, not retried, with ComfyUI's node_errors kept (the message
names each node and reason once); execution_error -> failed with exception, node and traceback, retried per
max_attempts; interrupted by a cancel -> cancel confirmed (the cancel goes to POST /api/jobs/{id}/cancel where
ComfyUI has it, else /queue delete and POST /interrupt with the prompt id); ComfyUI unreachable -> the worker
leaves the broker (its job returns to the queue without an attempt counted), says so in the log and its state,
and rejoins once ComfyUI answers again. At start ComfyUI may not listen yet (inside ComfyUI the plugin starts
before its server): the bridge waits quietly for up to start_grace seconds before it calls ComfyUI unreachable.

HELLO carries the ComfyUI version (/system_stats system.comfyui_version) and the host facts say which of its APIs
the bridge found (info.comfyui_api); when ComfyUI comes back from a restart as another version, the worker joins
again to say so.

The bridge runs its own asyncio loop on its own thread, so it never blocks ComfyUI's server loop. The blocking
native calls (next_job, next_event; the GIL released by the native side) run on two plain threads that feed
the loop, not on an executor: at interpreter exit executors refuse work before atexit handlers run, and the
bridge must still be able to leave cleanly then.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import platform
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import native
from . import capabilities as caps_mod
from . import comfy_client as cc
from . import previews
from .comfy_client import FEATURE_FLAGS, ComfyClient, ComfyUnreachable, PromptExists, PromptRejected
from .inputs import InputCache, InputFailure, InputResolver, PreparedInputs
from .runs import RunRecords, client_id_for, prompt_id_for

log = logging.getLogger("comfymq.worker")

FILE_KEYS_SKIPPED_TYPES = ("temp", "input")  # previews and inputs are not results
PREVIEW_EVENT = "comfymq_preview"  # a preview frame, as the bridge hands it to its run (previews.py)
PREVIEW_EVERY = 1.0  # seconds between previews sent to the host per run


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
    install_id: str = ""  # random per installation (identity.py): the broker tells a restart from an id clash
    caps_refresh: float = 300.0  # seconds between /object_info checks (models added or removed)
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    start_grace: float = 60.0  # seconds ComfyUI may take to listen at start before it is called unreachable
    orphan_grace: float = 30.0  # seconds after joining before an earlier run's prompt no job claimed is cancelled
    record_max_age: float = 86400.0  # seconds a run record nobody claimed is kept
    input_cache_bytes: int = 20 << 30  # bytes of job input files kept in <work_dir>/inputs (inputs/cache.py)
    start_paused: bool = False  # join drained (takes no job until resumed from the host), once per process


@dataclass
class _Run:
    job: dict
    prompt_id: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_reason: str | None = None
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: str | None = None  # "adopted" / "followed": the prompt was posted by an earlier run of this worker


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
        self._rejoin: str | None = None  # why this link must be said again (ComfyUI came back as another version)
        self._records = RunRecords(Path(settings.work_dir) / "runs")
        self._inputs = InputResolver(InputCache(Path(settings.work_dir) / "inputs", settings.input_cache_bytes))
        self._inputs_said: list[str] = []  # what update_inputs last told the host this worker keeps
        self._claimed: set[str] = set()  # jobs whose run record this process has taken over
        self._acks: dict[str, int] = {}  # job_id -> token of a result handed over, until the host answers
        self._comfyui_version = ""  # the version the current HELLO says
        self._client_api: dict = {}  # what ComfyUI offered when this link was made (host facts: comfyui_api)
        self._checks: set[asyncio.Task] = set()  # version re-checks in flight (kept referenced until done)
        self.state = {
            "comfy_url": settings.comfy_url,
            "broker": settings.broker,
            "comfyui": "unknown",
            "connected": False,
            "running": None,
            "message": "starting",
        }

    # ---- lifecycle -------------------------------------------------------------------------------------

    def status(self) -> dict:
        """For the worker-role panel (GET /comfymq/status): the link to the broker (connecting | connected |
        refused | disconnected, with the refusal's words), the ComfyUI it drives, and what it runs."""
        state = dict(self.state)
        link: dict = {}
        wc = self._wc
        if wc is not None:
            try:
                link = wc.state()
            except Exception:  # noqa: BLE001 - closing under us: the bridge's own state still answers
                link = {}
        refused = link.get("refused")
        connected = bool(link.get("connected", state.get("connected")))
        running = list(self._by_job) or ([state["running"]] if state.get("running") else [])
        return {
            "id": self.s.worker_id,
            "name": self.s.name,
            "broker": self.s.broker,
            "link": _link_state(connected, bool(refused), wc is not None),
            "refused": refused,
            "comfyui": state.get("comfyui"),
            "comfyui_version": self._comfyui_version or None,
            "message": state.get("message"),
            "running": [str(j) for j in running],
            "reconnects": int(link.get("reconnects", 0) or 0),
        }

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
        try:
            self._inputs.cache.open()
        except OSError as e:  # jobs with input files fail (retried elsewhere) until it can be read
            log.error("could not open the input cache in %s: %s", self._inputs.cache.root, e)
        try:
            pruned = self._records.prune(self.s.record_max_age)
            if pruned:
                log.info("forgot %d run records older than %g s that no job claimed", pruned, self.s.record_max_age)
        except OSError as e:
            log.warning("could not read the run records in %s: %s", self._records.folder, e)
        client = ComfyClient(
            self.s.comfy_url, client_id=client_id_for(self.s.worker_id, self.s.install_id, self.s.comfy_url)
        )
        delay, said = 1.0, None
        # Until ComfyUI first answers, within start_grace: it is starting (inside ComfyUI the plugin starts before
        # ComfyUI's server listens), so wait quietly, saying so once at info level.
        grace_until = time.monotonic() + self.s.start_grace
        try:
            while not self._stop.is_set():
                try:
                    stats = await client.system_stats()
                    self._caps = caps_mod.from_object_info(await client.object_info())
                    await client.probe()
                except ComfyUnreachable as e:
                    if grace_until is not None and time.monotonic() < grace_until:
                        if said is None:
                            said = f"waiting for ComfyUI at {self.s.comfy_url} to answer (it may still be starting)"
                            log.info("%s", said)
                        self.state.update(comfyui="starting", message=said)
                        await self._sleep(0.5)
                        continue
                    msg = f"ComfyUI at {self.s.comfy_url} is unreachable ({e}); not taking jobs until it answers"
                    if msg != said:
                        log.warning("%s", msg)
                        said = msg
                    self.state.update(comfyui="unreachable", message=msg)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay, said, grace_until = 1.0, None, None
                self.state.update(comfyui="ok")
                await self._serve(n, client, stats)
                if self._rejoin and not self._stop.is_set():
                    log.info("the ComfyMQ worker joins the broker again: %s", self._rejoin)
                    self.state.update(message=f"joining again: {self._rejoin}")
                elif self._unhealthy and not self._stop.is_set():
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

    def _hello_info(self, stats: dict) -> dict:
        """What HELLO carries besides the protocol's fields: the host facts, and start_paused on this process's first
        connection only (the broker drains a worker that says it; a later reconnect must not drain it again)."""
        info = self._host_facts(stats)
        if self.s.start_paused and not getattr(self, "_paused_sent", False):
            info["start_paused"] = True
            self._paused_sent = True
        return info

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
            # which of ComfyUI's APIs this worker found and uses (the version itself goes in HELLO)
            "comfyui_api": {
                "jobs": bool(self._client_api.get("jobs")),
                "jobs_cancel": bool(self._client_api.get("jobs_cancel")),
                "features": sorted(self._client_api.get("features") or {}),
            },
        }

    async def _serve(self, n, client: ComfyClient, stats: dict) -> None:
        self._unreachable = None
        self._unhealthy = None
        self._rejoin = None
        self._claimed = set()
        version = _version(stats)
        self._comfyui_version = version
        self._client_api = {
            "jobs": client.jobs_api,
            "jobs_cancel": client.jobs_cancel,
            "features": client.server_features,
        }
        try:
            wc = n.WorkerClient(
                broker=self.s.broker,
                worker_id=self.s.worker_id,
                name=self.s.name,
                capacity=self.s.capacity,
                capabilities=self._caps,
                info=self._hello_info(stats),
                plugin_version=self.s.plugin_version,
                comfyui_version=version,
                heartbeat=self.s.heartbeat,
                liveness=3,
                broker_public_key=self.s.broker_public_key,
                public_key=self.s.public_key,
                secret_key=self.s.secret_key,
                allow_plaintext=self.s.allow_plaintext,
                reconnect_min=self.s.reconnect_min,
                reconnect_max=self.s.reconnect_max,
                install_id=self.s.install_id,
            )
        except (ValueError, n.ComfyMQError) as e:
            log.error("cannot start the ComfyMQ worker: %s", e)
            self.state.update(message=f"cannot start: {e}")
            await self._stop.wait()
            return
        self._wc = wc
        self._inputs_said = []  # a new client: it has been told nothing yet
        self._say_inputs_kept(wc)
        log.info(
            "worker %s drives ComfyUI %s at %s (%s; %s) for broker %s",
            self.s.worker_id,
            version or "(version unknown)",
            self.s.comfy_url,
            caps_mod.summary(self._caps),
            "jobs API" + (" with cancel" if client.jobs_cancel else "") if client.jobs_api else "no jobs API",
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
            asyncio.create_task(self._orphans(client, done), name="orphan sweeper"),
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
            while not self._stop.is_set() and not self._unreachable and not self._unhealthy and not self._rejoin:
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
            # Leaving because ComfyUI is gone, came back as another version (its queue went with it) or the bridge
            # broke: say BYE so the broker requeues our job now. Stopping: no BYE; the lease runs out (a restart
            # with the same worker id keeps what it still holds).
            wc.close(bye=bool(self._unreachable or self._unhealthy or self._rejoin))
            self._wc = None
            self.state.update(connected=False, running=None)

    # ---- background tasks --------------------------------------------------------------------------------

    async def _ws_loop(self, client: ComfyClient, ready: asyncio.Event, done: asyncio.Event) -> None:
        """Routes websocket events to the run they concern; reconnects when the socket drops."""
        failures, connections = 0, 0
        while not done.is_set():
            try:
                async with client.websocket() as ws:
                    await ws.send_json({"type": "feature_flags", "data": FEATURE_FLAGS})  # first message only
                    ready.set()
                    failures = 0
                    connections += 1
                    if connections > 1:  # the socket dropped: was ComfyUI restarted, perhaps as another version?
                        check = asyncio.create_task(self._recheck_comfyui(client))
                        self._checks.add(check)
                        check.add_done_callback(self._checks.discard)
                    async for msg in ws:
                        if msg.type.name == "BINARY":
                            self._route_preview(msg.data)
                            continue
                        if msg.type.name != "TEXT":
                            continue
                        try:
                            event = msg.json()
                        except ValueError:
                            continue
                        data = event.get("data") or {}
                        if event.get("type") == "feature_flags" and isinstance(data, dict):
                            client.server_features = data  # ComfyUI's answer to the handshake
                            continue
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

    def _route_preview(self, frame: bytes) -> None:
        """A preview frame to the run it belongs to (by its metadata's prompt_id, or the only run there is)."""
        p = previews.parse(frame)
        if p is None:
            return
        run = self._runs.get(p["prompt_id"]) if p["prompt_id"] else None
        if run is None and p["prompt_id"] is None and len(self._runs) == 1:
            run = next(iter(self._runs.values()))
        if run is not None:
            run.events.put_nowait({"type": PREVIEW_EVENT, "data": p})

    async def _recheck_comfyui(self, client: ComfyClient) -> None:
        """After the websocket came back: if ComfyUI now says another version, find out what it offers and join the
        broker again, so HELLO says the version this worker drives."""
        try:
            version = _version(await client.system_stats())
            if version and version != self._comfyui_version:
                await client.probe()
                self._rejoin = self._rejoin or f"ComfyUI at {self.s.comfy_url} is now version {version} (was " + (
                    f"{self._comfyui_version})" if self._comfyui_version else "unknown)"
                )
        except ComfyUnreachable:
            pass  # the next request that fails says so
        except Exception:  # noqa: BLE001 - a check, never a reason to stop
            log.debug("could not re-check ComfyUI's version", exc_info=True)

    async def _orphans(self, client: ComfyClient, done: asyncio.Event) -> None:
        """orphan_grace after joining: a prompt an earlier run of this worker posted, for a job that did not come
        back here, is cancelled on ComfyUI if it still waits or runs there (the job runs elsewhere; it would only
        hold this ComfyUI up). Its record stays (for a while) if the prompt ended: the job may still come back."""
        try:
            await asyncio.wait_for(done.wait(), self.s.orphan_grace)
            return
        except asyncio.TimeoutError:
            pass
        for record in self._records.all():
            job_id = record["job_id"]
            if job_id in self._claimed or job_id in self._by_job or record.get("comfy_url") != self.s.comfy_url:
                continue
            try:
                state, extra, _ = await client.prompt_state(record["prompt_id"])
                if state in (cc.PENDING, cc.RUNNING) and _posted_for(extra, record):
                    how = await client.cancel(record["prompt_id"])
                    log.info(
                        "cancelled prompt %s on ComfyUI (%s): an earlier run of job %s that did not come back here",
                        record["prompt_id"],
                        how,
                        job_id,
                    )
                    self._records.drop(job_id, record.get("token"))
                elif state == cc.UNKNOWN:
                    self._records.drop(job_id, record.get("token"))
            except ComfyUnreachable:
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - housekeeping
                log.exception("could not check the earlier prompt of job %s", job_id)

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
            token = self._acks.pop(e.get("job_id"), None)
            if token is not None:  # the host has the result (or refused it for good): its prompt is not needed
                self._records.drop(e.get("job_id"), token)
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
        run = _Run(job=job, prompt_id=prompt_id_for(job_id, job.get("attempt"), token))
        posted_attempt = job.get("attempt")
        self._by_job[job_id] = run
        self.state.update(running=job_id)
        # The run record goes once the job's end is reported, except a result: that one keeps it until the host
        # acks (_on_event). Left to ComfyUI's unreachability or a stop, it stays for the job's return.
        drop_record = False
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
        inputs: PreparedInputs | None = None
        try:
            earlier = await self._earlier_run(client, run)
            if earlier is not None:
                posted_attempt = earlier.get("attempt")
            if run.resumed is None:
                inputs = await self._prepare_inputs(wc, client, run)
                self._say_inputs_kept(wc)  # fetched (or evicted) some: jobs naming them come here first
                if inputs is None:  # failed or cancelled: already reported
                    return
                prompt = inputs.prompt
            self._runs[run.prompt_id] = run
            # Before anything reaches ComfyUI: which prompt this lease's run is (whole or absent on disk).
            self._records.put(job_id, posted_attempt, token, run.prompt_id, self.s.comfy_url)
            if run.resumed == "adopted":
                await self._report_success(wc, client, run)
                return
            if run.resumed is None:
                try:
                    await client.submit(prompt, prompt_id=run.prompt_id, extra_pnginfo=pnginfo)
                except PromptExists:
                    # A newer ComfyUI has this lease's prompt already (a post that landed though its answer was
                    # lost): follow it rather than run it twice.
                    log.info("job %s: ComfyUI already has its prompt %s; following it", job_id, run.prompt_id)
                except PromptRejected as e:
                    error = {
                        "type": "validation_error",
                        "message": e.summary(),
                        "details": {"error": e.error, "node_errors": e.node_errors},
                    }
                    if e.node_id is not None:
                        error["node_id"] = e.node_id
                    drop_record = True
                    wc.fail(job_id, token, error, retryable=False)
                    return
            outcome, data = await self._follow(wc, client, run)
            if outcome == "success":
                await self._report_success(wc, client, run)
                return
            drop_record = True
            if outcome == "error":
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
            self._unreachable = str(e)  # _serve leaves; BYE returns the job to the queue (and likely back here)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one job's bug must not stop the worker
            log.exception("job %s failed in the worker bridge", job_id)
            drop_record = True
            try:
                wc.fail(job_id, token, {"type": "worker_error", "message": f"{type(e).__name__}: {e}"}, retryable=True)
            except Exception:  # noqa: BLE001
                pass
        finally:
            if inputs is not None:
                inputs.release()
            if drop_record:
                self._records.drop(job_id, token)
            self._runs.pop(run.prompt_id, None)
            self._by_job.pop(job_id, None)
            if self.state.get("running") == job_id:
                self.state.update(running=None)

    def _say_inputs_kept(self, wc) -> None:
        """Tells the host which inputs this worker keeps (the 4096 most recently used) when that changed; the
        native client says it again after every reconnect."""
        kept = self._inputs.cache.recent(4096)
        if kept == self._inputs_said or not hasattr(wc, "update_inputs"):
            return
        try:
            wc.update_inputs(kept)
            self._inputs_said = kept
        except Exception as e:  # noqa: BLE001 - a preference only: jobs still run anywhere
            log.warning("could not tell the host which inputs this worker keeps: %s", e)

    async def _prepare_inputs(self, wc, client: ComfyClient, run: _Run) -> PreparedInputs | None:
        """The job's prompt with its input files put into ComfyUI (inputs/resolver.py), or None when the job ended
        here: failed (an input malformed or refused: not retried; a fetch that failed otherwise, or an upload
        ComfyUI refused: retried) or cancelled while its inputs were fetched (nothing posted)."""
        job_id, token = run.job["job_id"], run.job["token"]
        prompt = run.job["prompt"]

        def fetch(sha256: str, dest: str) -> int:  # on a fetch thread
            fetch_input = getattr(wc, "fetch_input", None)
            if fetch_input is None:
                raise RuntimeError("this worker's native module cannot fetch inputs (rebuild it: python install.py)")
            return fetch_input(job_id, token, sha256, dest)

        def progress(ref, done: int, total: int) -> None:
            spec = prompt.get(ref.node_id) if ref is not None else None
            spec = spec if isinstance(spec, dict) else {}
            try:
                wc.progress(
                    job_id,
                    token,
                    {
                        "node": ref.node_id if ref is not None else None,
                        "class_type": spec.get("class_type"),
                        "title": f"fetching input {ref.name}" if ref is not None else "inputs ready",
                        "value": done,
                        "max": max(1, total),
                        "nodes_done": 0,
                        "nodes_total": max(1, len(prompt)),
                    },
                )
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

        task = asyncio.ensure_future(self._inputs.prepare(prompt, client, fetch, progress))
        cancelled = asyncio.ensure_future(run.cancel_event.wait())
        try:
            await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the bridge stops: the task releases what it holds
            task.cancel()
            cancelled.cancel()
            raise
        cancelled.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if run.cancel_event.is_set():
            if not task.cancelled() and task.exception() is None:
                task.result().release()
            log.info("job %s was cancelled while its input files were fetched; nothing was posted", job_id)
            wc.confirm_cancel(job_id, token)
            return None
        try:
            return task.result()
        except InputFailure as e:
            log.warning("job %s cannot run here: %s", job_id, e)
            wc.fail(job_id, token, e.error, retryable=e.retryable)
            return None

    async def _report_success(self, wc, client: ComfyClient, run: _Run) -> None:
        """Hands the prompt's outputs to the client as the job's result; the run record stays until the host acks
        it (a restart before then adopts the same prompt's outputs again)."""
        job_id, token = run.job["job_id"], run.job["token"]
        if await self._finish(wc, client, run):
            self._acks[job_id] = token
        else:
            self._records.drop(job_id, token)

    async def _earlier_run(self, client: ComfyClient, run: _Run) -> dict | None:
        """If this worker posted a prompt for this job before (its run record), asks ComfyUI what became of it:
        finished with success -> run.resumed = "adopted"; still queued or running -> "followed"; in both cases
        run.prompt_id becomes that prompt and the record is returned. Otherwise (no record, another ComfyUI, a
        prompt that failed, was interrupted, is unknown there, or was not posted for this job) None: run afresh."""
        job_id = run.job["job_id"]
        record = self._records.get(job_id)
        if record is None or record.get("comfy_url") != self.s.comfy_url:
            return None
        self._claimed.add(job_id)
        state, extra, _ = await client.prompt_state(record["prompt_id"])
        if state == cc.UNKNOWN:
            log.info(
                "job %s is back (attempt %s); ComfyUI does not know its earlier prompt %s: running it again",
                job_id,
                run.job.get("attempt"),
                record["prompt_id"],
            )
            return None
        if not _posted_for(extra, record):
            log.warning(
                "job %s: ComfyUI's prompt %s is not the one this worker posted for it; running the job again",
                job_id,
                record["prompt_id"],
            )
            return None
        if state == cc.SUCCESS:
            run.resumed = "adopted"
        elif state in (cc.PENDING, cc.RUNNING):
            run.resumed = "followed"
        else:
            log.info(
                "job %s is back (attempt %s); its earlier prompt %s ended %s on ComfyUI: running it again",
                job_id,
                run.job.get("attempt"),
                record["prompt_id"],
                "with an error" if state == cc.ERROR else "interrupted",
            )
            return None
        run.prompt_id = record["prompt_id"]
        log.info(
            "job %s is back (attempt %s): %s its earlier prompt %s (%s on ComfyUI) instead of running it again",
            job_id,
            run.job.get("attempt"),
            "adopting the result of" if run.resumed == "adopted" else "following",
            run.prompt_id,
            {cc.SUCCESS: "finished", cc.PENDING: "queued", cc.RUNNING: "running"}[state],
        )
        return record

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
        last_preview = 0.0
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
                # POST /api/jobs/{id}/cancel where ComfyUI has it, else /queue delete + POST /interrupt
                if await client.cancel(run.prompt_id) == "dequeued":
                    return "cancelled", {}
            getter = asyncio.ensure_future(run.events.get())
            canceller = asyncio.ensure_future(run.cancel_event.wait())
            try:
                finished, _ = await asyncio.wait({getter, canceller}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the bridge stops: leave no waiter behind on the closing loop
                getter.cancel()
                canceller.cancel()
                raise
            canceller.cancel()
            if getter not in finished:
                getter.cancel()
                if canceller in finished:
                    continue
                # Quiet for a while: did we miss the end (websocket drop; a prompt an earlier run of this worker
                # posted), or did ComfyUI lose the prompt?
                state, _, h = await client.prompt_state(run.prompt_id)
                if h is None and state == cc.UNKNOWN:
                    h = await client.history(run.prompt_id)  # it may have ended between the two looks
                if h is not None:
                    return self._outcome_from_history(h, interrupted_by_us)
                if state == cc.UNKNOWN:
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
            elif kind == PREVIEW_EVENT:
                # at most one per PREVIEW_EVERY seconds, in the next progress message only (the host keeps the last)
                now = time.monotonic()
                if now - last_preview >= PREVIEW_EVERY:
                    last_preview = now
                    progress["preview"] = {
                        "node_id": data.get("node_id") or progress["node"],
                        "content_type": data["content_type"],
                        "data_base64": base64.b64encode(data["data"]).decode("ascii"),
                    }
                    send(True)
                    progress.pop("preview", None)
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
        for message in reversed(status.get("messages") or []):
            kind, data = (
                (message[0], message[1]) if isinstance(message, (list, tuple)) and len(message) > 1 else (None, {})
            )
            data = data if isinstance(data, dict) else {}
            if kind == "execution_success":
                return "success", data
            if kind == "execution_error":
                return "error", data
            if kind == "execution_interrupted":
                return ("cancelled" if interrupted_by_us else "interrupted"), data
        if cc.history_outcome(h) == cc.SUCCESS:
            return "success", {}
        return "error", {"exception_message": "ComfyUI reported an error without details"}

    async def _finish(self, wc, client: ComfyClient, run: _Run) -> bool:
        """Downloads the prompt's outputs and hands them over as the job's result (True), or fails the job when an
        output file is gone (False)."""
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
                        return False
                    add(str(dest), name)
        self._uploads[job_id] = folder
        wc.complete(job_id, token, outputs=outputs, files=files)
        if not files:
            self._uploads.pop(job_id, None)
            shutil.rmtree(folder, ignore_errors=True)
        return True


def _version(stats) -> str:
    """ComfyUI's version from /system_stats ("" when it does not say: versions before it was added)."""
    system = stats.get("system") if isinstance(stats, dict) else None
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    return str(version) if version else ""


def _posted_for(extra_data, record: dict) -> bool:
    """Was this prompt (its extra_data) posted by this worker for the record's job and attempt? The prompt id is
    this worker's own, but v0.8.0 and older let anyone post under any id, so the bridge checks before it trusts."""
    pnginfo = extra_data.get("extra_pnginfo") if isinstance(extra_data, dict) else None
    mine = pnginfo.get("comfymq") if isinstance(pnginfo, dict) else None
    return (
        isinstance(mine, dict)
        and mine.get("job_id") == record.get("job_id")
        and str(mine.get("attempt")) == str(record.get("attempt"))
    )


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


def _link_state(connected: bool, refused: bool, started: bool) -> str:
    """The panel's one word for the link: connected, refused (the broker said no), connecting (not started
    yet) or disconnected (started, now trying again)."""
    if connected:
        return "connected"
    if refused:
        return "refused"
    return "disconnected" if started else "connecting"
