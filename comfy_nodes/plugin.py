"""ComfyMQ inside ComfyUI: reads the configuration, starts the role's parts, registers routes and events.

Only documented extension points: routes on PromptServer.instance.routes (ComfyUI also serves them under
/api/...), events through PromptServer.instance.send_sync, folder_paths for the user and output folders (and the
input, output and temp folders, whose files upload inputs name: inputs/local_files.py, which also reads node
classes' INPUT_TYPES from nodes.NODE_CLASS_MAPPINGS), and the worker bridge talks to this ComfyUI over its public
HTTP API on loopback.

Roles: `both` (default: the host on loopback plus a local worker driving this ComfyUI), `host`, `worker`.
If anything is wrong (native module not built, bad configuration, the store locked by another process)
ComfyUI keeps running: the log says what to do and every /comfymq route answers 503 with that message.
Shutdown (atexit): the worker leaves without finishing (its lease expires and the job runs again), the
store is checkpointed and closed.
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path

from aiohttp import web

from . import __version__, native
from .config import Config, ConfigError, load_config

log = logging.getLogger("comfymq")


def add_unavailable_routes(routes: web.RouteTableDef, message: str, prefix: str = "/comfymq") -> None:
    """Every ComfyMQ route answers 503 with `message` (how to fix it)."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "unavailable", "message": message}}, status=503)

    for method in ("GET", "POST", "DELETE"):
        routes.route(method, prefix + "/{tail:.*}")(unavailable)


def comfy_listen_addresses() -> list[str]:
    """Every address this ComfyUI listens on (its --listen, a comma-separated list; "0.0.0.0,::" when given
    bare), which is where the ComfyMQ routes are reachable. Outside ComfyUI: ComfyUI's default, 127.0.0.1."""
    try:
        from comfy.cli_args import args
    except Exception:  # noqa: BLE001 - not inside ComfyUI
        return ["127.0.0.1"]
    listen = str(getattr(args, "listen", "127.0.0.1") or "127.0.0.1")
    return [a.strip() for a in listen.split(",")] or ["127.0.0.1"]


def comfy_listen_address() -> str | None:
    """The first address of comfy_listen_addresses() that is not loopback, else the first one (for the warning
    about an open bind)."""
    from .api.auth import is_loopback

    addresses = comfy_listen_addresses()
    return next((a for a in addresses if not is_loopback(a)), addresses[0])


def site_policy(cfg: Config):
    """The site rules for the routes inside this ComfyUI (api/site_policy.py): its listen addresses, plus the
    configured allowed_hosts and allowed_origins."""
    from .api.site_policy import SitePolicy

    return SitePolicy.build(comfy_listen_addresses(), cfg.allowed_hosts, cfg.allowed_origins)


def comfy_port() -> int:
    """This ComfyUI's HTTP port (its --port; 8188 outside ComfyUI), which a host inside it advertises."""
    try:
        from comfy.cli_args import args
    except Exception:  # noqa: BLE001 - not inside ComfyUI
        return 8188
    return int(getattr(args, "port", 8188) or 8188)


def own_comfy_url() -> str | None:
    """This ComfyUI's address as seen from loopback (from its command line arguments)."""
    try:
        from comfy.cli_args import args  # ComfyUI's parsed arguments
    except Exception:  # noqa: BLE001 - not inside ComfyUI
        return None
    scheme = "https" if getattr(args, "tls_keyfile", None) else "http"
    listen = str(getattr(args, "listen", "127.0.0.1") or "127.0.0.1").split(",")[0].strip()
    host = "127.0.0.1" if listen in ("", "0.0.0.0", "::", "localhost") else listen
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{getattr(args, 'port', 8188)}"


class ObjectInfoCache:
    """This ComfyUI's GET /object_info (its public API, over loopback), kept for TTL seconds; None when it does not
    answer. Awaited by the template routes, so a template's limits and choices are ComfyUI's own."""

    TTL = 300.0

    def __init__(self, url: str | None):
        self.url = url
        self._value, self._at = None, 0.0

    async def __call__(self):
        import time

        import aiohttp

        if self.url is None:
            return None
        if self._value is not None and time.monotonic() - self._at < self.TTL:
            return self._value
        try:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(self.url + "/object_info") as r:
                if r.status == 200:
                    self._value, self._at = await r.json(), time.monotonic()
        except Exception as e:  # noqa: BLE001 - limits are then the template's own
            log.warning("ComfyMQ templates: could not read %s/object_info: %s", self.url, e)
        return self._value


class Plugin:
    """The running parts for one role; close() is safe to call more than once."""

    def __init__(self, cfg: Config, send=None, local_files=None):
        """local_files(input_store, max_bytes) -> inputs/local_files.LocalFiles: how the host's enqueue finds the
        files upload inputs name (inside ComfyUI: comfy_local_files; None: only input references are resolved)."""
        self.cfg = cfg
        self.send = send
        self.local_files = local_files
        self.service = None
        self.relay = None
        self.bridge = None
        self.retention = None  # the hourly retention pass (host roles)
        self.advertiser = None  # LAN discovery (pairing/discovery.py; host roles)
        self.membership = None  # a farm joined from the panel (pairing/membership.py; worker roles)
        self._home = None  # the worker bridge's settings from the configuration (serve(None))
        self._serving = threading.Lock()
        self._closed = threading.Lock()

    def start(self, routes: web.RouteTableDef | None) -> None:
        n = native.load()
        cfg = self.cfg
        local_worker_keys = None
        if cfg.runs_host:
            from .service import BrokerSettings, QueueService

            allowed = list(cfg.allowed_worker_keys)
            if cfg.role == "both" and cfg.curve_secret_key:
                local_worker_keys = n.curve_keypair()  # the local worker's own pair, allowed for this run
                allowed.append(local_worker_keys[0])
            broker = BrokerSettings(
                bind=cfg.broker_bind,
                heartbeat=cfg.heartbeat,
                curve_secret_key=cfg.curve_secret_key,
                allowed_worker_keys=allowed,
                allow_plaintext=cfg.allow_plaintext,
                max_run_time=cfg.max_run_time,
            )
            self.service = QueueService(cfg.data_dir, cfg.artifact_root, broker=broker)
            report = self.service.store.recovery_report
            log.info("ComfyMQ store %s: %s", Path(cfg.data_dir) / "store", report["summary"])
            for w in report["warnings"]:
                log.warning("ComfyMQ store recovery: %s", w)
            # the outbox's deliveries (webhooks/): jobs' own targets, and the config's, told of every ending
            self.service.start_webhooks(
                cfg.webhooks,
                base_url=cfg.public_url or own_comfy_url() or "",
                expiry_hours=cfg.webhook_expiry_hours,
            )
            self.service.set_owner_defaults(
                {
                    "max_pending": cfg.owner_max_pending,
                    "max_jobs_per_request": cfg.owner_max_jobs_per_request,
                    "max_running": cfg.owner_max_running,
                    "weight": cfg.owner_weight,
                }
            )
            if cfg.start_paused:  # nothing is dispatched until someone resumes the queue
                self.service.store.pause()
                log.info("ComfyMQ: the queue starts paused (start_paused); resume it from the panel")
            if cfg.templates_dir:
                from .host.standalone import load_templates_dir

                load_templates_dir(self.service, cfg.templates_dir)
            if self.send is not None:
                from .events import EventRelay

                self.relay = EventRelay(self.send)
                self.service.add_listener(self.relay)
            # who a request is: the configured token is the admin; tokens stored in the store are looked up too
            from .config import check_token

            self.service.tokens.admin_token = check_token(cfg.token)  # (the one rule, checked again here)
            if routes is not None:
                from .api.limits import RequestLimits
                from .api.routes import add_routes

                add_routes(
                    routes,
                    self.service,
                    object_info=ObjectInfoCache(own_comfy_url()),  # templates' limits: this ComfyUI's /object_info
                    token=self.service.tokens,
                    site=site_policy(cfg),
                    limits=RequestLimits.from_config(cfg),
                    unrunnable=cfg.unrunnable_jobs,
                    local_inputs=(
                        self.local_files(self.service.inputs, cfg.max_input_bytes) if self.local_files else None
                    ),
                )
                from .pairing.routes import add_pairing_routes

                # pairing workers with a one-time code (pairing/): start and finish take no token, the rest admin
                add_pairing_routes(
                    routes,
                    self.service,
                    prefix="/comfymq",
                    token=self.service.tokens,
                    site=site_policy(cfg),
                    limits=RequestLimits.from_config(cfg),
                )
                from .pairing.routes import add_discover_route

                add_discover_route(routes, prefix="/comfymq", token=self.service.tokens, site=site_policy(cfg))
                from .api.v2 import add_v2_routes

                # the Comfy API v2 under /comfymq/api/v2: an SDK's base URL is http://<comfyui>/comfymq
                add_v2_routes(
                    routes,
                    self.service,
                    mount="/comfymq/api/v2",
                    token=self.service.tokens,
                    site=site_policy(cfg),
                    limits=RequestLimits.from_config(cfg),
                    local=self.local_files(self.service.inputs, cfg.max_input_bytes) if self.local_files else None,
                    retention_days=cfg.retention_days,
                )
            from .retention import RetentionThread

            # every hour: jobs past retention_days (when > 0), then input files no kept job names
            self.retention = RetentionThread(self.service, cfg.retention_days)
            self.retention.start()
            from .pairing.discovery import start_for_host

            # LAN discovery (a hint; pairing still needs the code): not on loopback only, not without CURVE
            self.advertiser = start_for_host(
                self.service, enabled=cfg.discovery, hosts=comfy_listen_addresses(), port=comfy_port()
            )
            log.info(
                "ComfyMQ host: workers connect to %s%s; artifacts in %s",
                self.service.broker.endpoint,
                " (CURVE)" if cfg.curve_secret_key else " (plain text)",
                self.service.artifact_root,
            )
        if cfg.runs_worker:
            from .pairing.membership import Membership

            # "Join a farm" from the panel (pairing/membership.py): swaps the bridge below without a restart
            self.membership = Membership(cfg, self.serve)
            joined = self.membership.joined
            if joined is not None and not cfg.runs_host:
                self._home = None  # the worker's settings came from its pairing: after "Leave" it serves nobody
                self.serve(joined)
            else:
                broker_addr = self.service.broker.endpoint if self.service is not None else cfg.broker
                pub, sec = local_worker_keys if local_worker_keys else (cfg.worker_public_key, cfg.worker_secret_key)
                broker_key = cfg.broker_public_key
                if local_worker_keys and cfg.curve_secret_key:
                    broker_key = n.curve_public_key(cfg.curve_secret_key)
                self._home = self._bridge_settings(broker_addr, broker_key, pub, sec, start_paused=cfg.start_paused)
                self.serve(None)
            if routes is not None and not cfg.runs_host:
                from .api.limits import RequestLimits
                from .api.status_routes import add_worker_role_routes
                from .pairing.routes import add_discover_route, add_membership_routes

                # "Join a farm": the hosts on the LAN, and joining one (before the worker role's catch-all)
                add_discover_route(routes, prefix="/comfymq", token=cfg.token, site=site_policy(cfg))
                add_membership_routes(
                    routes, self.membership, prefix="/comfymq", token=cfg.token, site=site_policy(cfg)
                )
                add_worker_role_routes(
                    routes,
                    worker_status=self.worker_status,
                    broker=lambda: self.bridge.s.broker if self.bridge is not None else cfg.broker,
                    host_url=self.forward_url,
                    token=cfg.token,
                    site=site_policy(cfg),
                    limits=RequestLimits.from_config(cfg),
                    farm=self.membership.view,
                )
        if routes is not None and cfg.runs_host:
            self._add_status_route(routes)
            if self.membership is not None:
                from .pairing.routes import add_membership_routes

                add_membership_routes(
                    routes, self.membership, prefix="/comfymq", token=self.service.tokens, site=site_policy(cfg)
                )

    def _bridge_settings(self, broker: str, broker_key, public_key, secret_key, *, start_paused=False):
        from .identity import worker_identity
        from .worker.bridge import BridgeSettings

        cfg = self.cfg
        identity = worker_identity(cfg.data_dir, cfg.worker_id or None)
        return BridgeSettings(
            comfy_url=cfg.comfy_url,
            broker=broker,
            worker_id=identity.worker_id,
            install_id=identity.install_id,
            name=cfg.worker_name,
            work_dir=str(Path(cfg.data_dir) / "worker"),
            capacity=cfg.capacity,
            heartbeat=cfg.heartbeat,
            broker_public_key=broker_key,
            public_key=public_key,
            secret_key=secret_key,
            allow_plaintext=cfg.allow_plaintext,
            plugin_version=__version__,
            input_cache_bytes=cfg.input_cache_bytes,
            start_paused=start_paused,  # (a worker's own: it joins drained)
        )

    def serve(self, paired) -> None:
        """Runs the worker bridge for `paired` (a farm joined by pairing: its broker and keys), or, with None, the
        one the configuration gives (self._home; none when that came from a pairing that was left). The bridge
        before is stopped first (a job it runs goes back to its queue when its lease ends). Blocks up to ~5 s."""
        from .worker.bridge import WorkerBridge

        with self._serving:
            old, self.bridge = self.bridge, None
            if old is not None:
                old.stop(timeout=5)
            if paired is not None:
                settings = self._bridge_settings(
                    paired.broker, paired.broker_public_key, paired.worker_public_key, paired.worker_secret_key
                )
            else:
                settings = self._home
            if settings is None or self._closed.locked():
                return
            self.bridge = WorkerBridge(settings)
            self.bridge.start()

    def role(self) -> str:
        """What this ComfyUI is now: a ComfyUI of the default role that joined a farm is a worker of it."""
        if self.membership is not None and self.membership.joined is not None:
            return "worker"
        return self.cfg.role

    def forward_url(self) -> str | None:
        """Where the worker role's "Queue (MQ)" sends jobs: host_url when the user configured it, else the joined
        farm's address (None outside a farm)."""
        cfg, membership = self.cfg, self.membership
        if membership is None:
            return cfg.host_url
        if cfg.host_url and membership.configured("host_url"):
            return cfg.host_url
        return membership.joined.host_url if membership.joined is not None else None

    def worker_status(self) -> dict | None:
        """The local worker's link and run (GET /comfymq/status), or None without one."""
        return self.bridge.status() if self.bridge is not None else None

    def _add_status_route(self, routes: web.RouteTableDef) -> None:
        from .api.status_routes import add_status_route

        add_status_route(
            routes,
            role=self.role,
            worker_status=self.worker_status,
            token=self.service.tokens if self.service is not None else self.cfg.token,
            site=site_policy(self.cfg),
            farm=self.membership.view if self.membership is not None else None,
        )

    def close(self) -> None:
        if not self._closed.acquire(blocking=False):
            return
        if self.advertiser is not None:
            self.advertiser.close()
        with self._serving:
            if self.bridge is not None:
                self.bridge.stop(timeout=5)
        if self.retention is not None:
            self.retention.stop()
        if self.relay is not None:
            self.relay.close()
        if self.service is not None:
            try:
                self.service.close()
                log.info("ComfyMQ store closed cleanly")
            except Exception as e:  # noqa: BLE001 - exiting anyway
                log.warning("ComfyMQ store close: %s", e)


_plugin: Plugin | None = None


def setup_in_comfyui() -> Plugin | None:
    """Called from the pack's __init__ when ComfyUI imports it. Never raises."""
    global _plugin
    try:
        import folder_paths
        from server import PromptServer  # ComfyUI's server module
    except Exception:  # noqa: BLE001 - imported outside ComfyUI (tests, tools): nothing to wire
        return None
    routes = PromptServer.instance.routes
    try:
        native.load()
        cfg = load_config(
            user_dir=folder_paths.get_user_directory(),
            output_dir=folder_paths.get_output_directory(),
            comfy_url=own_comfy_url(),
        )
    except native.NativeUnavailable as e:  # the pack's __init__ has logged the build instruction
        add_unavailable_routes(routes, str(e))
        return None
    except ConfigError as e:
        msg = f"ComfyMQ is off because of its configuration: {e}"
        log.error("%s", msg)
        add_unavailable_routes(routes, msg)
        return None
    from .inputs.local_files import comfy_local_files

    plugin = Plugin(cfg, send=PromptServer.instance.send_sync, local_files=comfy_local_files)
    try:
        plugin.start(routes)
    except Exception as e:  # noqa: BLE001 - e.g. the store is locked by another ComfyUI, the port is taken
        msg = f"ComfyMQ could not start ({cfg.role} role, config from {cfg.source}): {e}"
        log.error("%s", msg)
        plugin.close()
        add_unavailable_routes(routes, msg)
        return None
    if cfg.runs_host:
        from .api.auth import insecure_bind_warning

        warning = insecure_bind_warning(comfy_listen_address(), cfg.token)
        if warning:
            log.warning("%s", warning)
    log.info("ComfyMQ %s started as '%s' (config from %s)", __version__, cfg.role, cfg.source)
    atexit.register(plugin.close)
    _plugin = plugin
    return plugin
