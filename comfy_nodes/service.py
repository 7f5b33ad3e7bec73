"""QueueService: the host's store, artifact writer, input store and (optionally) broker, with async wrappers for
aiohttp.

Store calls block (they fsync, or wait for a group commit), so handlers run them on a thread pool: the
event loop stays free, and concurrent requests share syncs through the store's group commit. Broker events
are taken by one Python thread (the native side never calls Python) and handed to listeners.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import native
from .inputs.store import InputStore

log = logging.getLogger("comfymq.broker")


@dataclass
class BrokerSettings:
    bind: str = "tcp://127.0.0.1:5557"
    heartbeat: float = 1.0
    liveness: int = 3
    curve_secret_key: str | None = None
    allowed_worker_keys: list[str] = field(default_factory=list)
    allow_plaintext: bool = False
    max_run_time: float = 7200.0  # seconds a run may take when its job sets no timeout; 0 = no limit


class QueueService:
    def __init__(
        self,
        data_dir: str | os.PathLike,
        artifact_root: str | os.PathLike | None = None,
        *,
        broker: BrokerSettings | None = None,
        threads: int = 32,
        **store_options,
    ):
        n = native.load()
        self.data_dir = Path(data_dir)
        self.store = n.Store(str(self.data_dir / "store"), **store_options)
        root = Path(artifact_root) if artifact_root else self.data_dir / "artifacts"
        self.artifacts = n.ArtifactWriter(str(root))
        self.artifact_root = Path(self.artifacts.root)
        try:  # input files that travel with jobs (inputs/store.py); the broker reads them for workers
            self.inputs = InputStore(self.data_dir / "inputs")
        except Exception:
            self.store.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="comfymq-store")
        self.broker = None
        self._listeners: list[Callable[[dict], None]] = []
        self.webhooks = None  # webhooks/outbox.Deliverer once start_webhooks() ran
        from .templates.registry import TemplateRegistry

        self.templates = TemplateRegistry(self.store)  # the stored templates (one per store: saves in turn)
        from .api.tokens import TokenBook

        self.tokens = TokenBook(self.store)  # who a request is (api/tokens.py); the host sets its admin token
        from .api.owners import OwnerGate

        self.owner_gate = OwnerGate(self)  # owners' limits at enqueue (api/owners.py); the host sets its defaults
        # fair share in the store's dispatch (set_owner_defaults; a token's own weight / max_running win)
        self.share_defaults = {"weight": 1, "max_running": 0}
        self.tokens.on_change.append(self.apply_owner_policies)
        self.apply_owner_policies()
        self._events_thread: threading.Thread | None = None
        # -- pairing hook (pairing/): workers paired through the API are allowed besides the configured keys --
        from .pairing.book import PairedBook
        from .pairing.host import PairingHost

        self.paired = PairedBook(self.store, broker.allowed_worker_keys if broker is not None else [])
        self.pairing = PairingHost(self, self.paired)
        allowed = self.paired.allowed() if broker is not None and broker.curve_secret_key else None
        # -- end of the pairing hook --
        if broker is not None:
            try:
                self.broker = n.Broker(
                    self.store,
                    bind=broker.bind,
                    artifact_root=str(self.artifact_root),
                    heartbeat=broker.heartbeat,
                    liveness=broker.liveness,
                    curve_secret_key=broker.curve_secret_key,
                    allowed_worker_keys=allowed if allowed is not None else broker.allowed_worker_keys,  # (pairing)
                    allow_plaintext=broker.allow_plaintext,
                    max_run_time=broker.max_run_time,
                    # under CURVE, which key each worker id belongs to (kept across restarts)
                    worker_keys_path=str(self.data_dir / "worker_keys"),
                    drained_path=str(self.data_dir / "drained_workers"),  # drains outlast a restart
                    inputs_dir=str(self.data_dir / "inputs"),  # the input store's files workers fetch
                )
            except Exception:
                self.store.close()
                raise
            self.paired.broker = self.broker  # (pairing: changes apply at once from now on)
            self._events_thread = threading.Thread(target=self._pump_events, name="comfymq-events", daemon=True)
            self._events_thread.start()
        from .metrics.farm import FarmMetrics

        self.metrics = FarmMetrics(self)  # GET /comfymq/metrics; timed from broker events
        if self.broker is not None:
            self.add_listener(self.metrics)
        from .metrics.estimates import Estimator

        self.estimates = Estimator(self)  # pending jobs' expected start and end, from those run times

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        """fn(event) is called on the event thread for every broker event (keep it quick)."""
        self._listeners.append(fn)

    def _pump_events(self) -> None:
        levels = {"error": logging.ERROR, "warning": logging.WARNING}
        broker = self.broker
        while True:
            try:
                event = broker.next_event(0.5)
            except Exception:  # noqa: BLE001 - the broker was closed
                return
            if event is None:
                continue
            if event.get("type") == "log":
                log.log(levels.get(event.get("level"), logging.INFO), "%s", event.get("message"))
            elif event.get("type") == "worker":
                w = event.get("worker", {})
                log.info(
                    "worker %s %s%s",
                    w.get("id"),
                    event.get("event"),
                    f" ({event['reason']})" if event.get("reason") else "",
                )
            for fn in list(self._listeners):
                try:
                    fn(event)
                except Exception:  # noqa: BLE001 - one bad listener must not stop the others
                    log.exception("event listener failed")

    def start_webhooks(
        self, host_targets: list[str] | None = None, *, base_url: str = "", expiry_hours: float = 24.0, **options
    ):
        """Starts delivering the store's outbox (webhooks/outbox.py) with the host's secret (<data_dir>/webhook-secret,
        made once). host_targets: the config's URLs, told of every job's ending; options: Deliverer's (backoff, poll).
        Returns the Deliverer."""
        from .webhooks.outbox import Deliverer
        from .webhooks.signing import load_or_make_secret

        secret = load_or_make_secret(self.data_dir / "webhook-secret")
        self.webhooks = Deliverer(
            self.store,
            secret,
            host_targets=list(host_targets or []),
            base_url=base_url,
            expiry_hours=expiry_hours,
            **options,
        )
        self.webhooks.start()
        self.add_listener(self._kick_webhooks)
        return self.webhooks

    def _kick_webhooks(self, event: dict) -> None:
        if event.get("type") == "job" and event.get("state") in ("succeeded", "failed", "cancelled"):
            self.webhooks.kick()

    def set_owner_defaults(self, limits: dict) -> None:
        """The host's defaults for every owner (config owner_* or flags): max_pending and max_jobs_per_request at
        enqueue, max_running and weight in dispatch (0 = no limit; weight 1..1000). A token's own win."""
        from .api.tokens import ADMISSION_KEYS, SHARE_KEYS

        self.owner_gate.defaults.update({k: v for k, v in limits.items() if k in ADMISSION_KEYS})
        self.share_defaults.update({k: v for k, v in limits.items() if k in SHARE_KEYS})
        self.apply_owner_policies()

    def apply_owner_policies(self) -> None:
        """Gives the store each owner's weight and running limit: the host's defaults, and every token's own."""
        default = dict(self.share_defaults)
        by_owner = {}
        for t in self.tokens.list():
            own = {k: v for k, v in t["limits"].items() if k in default}
            if own:
                by_owner[t["name"]] = {**default, **own}
        self.store.set_owner_policies(default, by_owner)

    def waiting_reasons(self, job_id: str, owner: str | None = None) -> list[str]:
        """Why this pending job does not run yet: its owner is at its running limit; no connected worker takes it
        (the broker's words). Empty when nothing holds it back that is known."""
        reasons = []
        if owner:
            for o in self.store.owner_stats():
                if o["owner"] == owner and o["at_running_limit"]:
                    n = o["running"]
                    reasons.append(
                        f"owner '{owner}' has {n} job{'' if n == 1 else 's'} running, its limit (max_running "
                        f"{o['max_running']}): this one starts when {'it ends' if n == 1 else 'one of them ends'}"
                    )
        if self.broker is not None:
            reasons += self.broker.explain(job_id)
        return reasons

    async def call(self, fn, *args, **kwargs):
        """Runs a blocking store call on the pool; exceptions propagate unchanged."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    LOW_SPACE = 64 << 20  # free bytes under which health() says low_space (a hint for monitors, nothing more)

    def health(self) -> dict:
        """writable: whether the store takes writes (False only when store.health() says the handle is unusable,
        with the reason in problem); free_bytes / low_space: room on the store's disk, reported separately and
        never judged (a write that does not fit is a clear disk_full error of its own, and changes nothing)."""
        n = native.load()
        try:
            self.store.health()
            writable, problem = True, None
        except n.ComfyMQError as e:
            writable, problem = False, str(e)
        try:
            st = os.statvfs(self.data_dir)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        return {
            "writable": writable,
            "problem": problem,
            "free_bytes": free,
            "low_space": free is not None and free < self.LOW_SPACE,
            "data_dir": str(self.data_dir),
        }

    def close(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stop()
        self._pool.shutdown(wait=True)
        if self.broker is not None:
            self.broker.close()
            if self._events_thread is not None:
                self._events_thread.join(timeout=5)
        self.store.close()
