"""The standalone host's aiohttp application and its runner.

build_app() mounts the routes on a fresh app (tests use it directly); run_host() opens the store, serves
until SIGINT/SIGTERM (host/http_server.py: timeouts, JSON errors of the HTTP layer), and closes the store
cleanly (a checkpoint, so the next start is fast). It advertises itself on the LAN (pairing/discovery.py) unless
`discovery` is off, it listens on loopback only, or its broker has no CURVE key. Once an hour it runs
retention_round() (retention.py): finished jobs past retention_days, then input files no kept job names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from aiohttp import web

from ..api.auth import insecure_bind_warning
from ..api.compat_routes import add_compat_routes
from ..api.guards import host_middlewares
from ..api.limits import RequestLimits
from ..api.routes import add_routes
from ..api.site_policy import SitePolicy
from ..api.status_routes import add_status_route
from ..api.v2 import add_v2_routes
from ..config import check_token
from ..inputs.store import DEFAULT_GRACE
from ..pairing.routes import add_discover_route, add_pairing_routes
from ..retention import retention_pass
from ..service import BrokerSettings, QueueService
from .http_server import ServerSettings, serve

log = logging.getLogger("comfymq.host")


def build_app(
    service: QueueService,
    *,
    token: str | None = None,
    site: SitePolicy | None = None,
    limits: RequestLimits | None = None,
    unrunnable: str = "wait",
) -> web.Application:
    """The host's app: the seed contract (/tasks, /health) and the /comfymq API (also under /api/comfymq, as
    inside ComfyUI). Every request passes the site rules of `site` (default: an API on loopback, nothing allowed
    on top; api/site_policy.py), then, with a token, needs `Authorization: Bearer <token>` (config.check_token's
    rule; /health answers its status without it). `limits`: api/limits.py."""
    token = check_token(token)
    site = site or SitePolicy()
    limits = limits or RequestLimits()
    service.tokens.admin_token = token  # the configured token is the admin; stored tokens are looked up too
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=host_middlewares(site, service.tokens))
    app["service"] = service
    routes = web.RouteTableDef()
    add_compat_routes(routes, service, limits)
    for prefix in ("/comfymq", "/api/comfymq"):  # site=None: the middlewares check
        add_routes(routes, service, prefix=prefix, site=None, limits=limits, unrunnable=unrunnable, seed_routes=True)
        add_status_route(routes, role="host", worker_status=lambda: None, prefix=prefix, site=None)
        add_pairing_routes(routes, service, prefix=prefix, token=None, site=None, limits=limits)  # (pairing/)
        add_discover_route(routes, prefix=prefix, token=None, site=None)  # (pairing/discovery.py)
    add_v2_routes(routes, service, mount="/api/v2", token=None, site=None, limits=limits)  # (the middlewares check)
    app.add_routes(routes)
    return app


async def retention_round(service: QueueService, days: float, input_grace: float = DEFAULT_GRACE) -> None:
    """One retention pass (retention.py) on the service's thread pool. Never raises."""
    await service.call(retention_pass, service, days, input_grace)


async def _retention_loop(service: QueueService, days: float, every: float = 3600.0) -> None:
    while True:
        await retention_round(service, days)
        await asyncio.sleep(every)


def default_public_url(host: str, port: int) -> str:
    """The host's address for links it sends out (webhooks) when the config names none."""
    name = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"http://{name}:{port}"


def load_templates_dir(service: QueueService, folder: str) -> None:
    """Loads the folder's templates into the store (templates/registry.py), logging each error with its file."""
    from ..templates.registry import load_into_store

    loaded, errors = load_into_store(service.templates, folder)
    for e in errors:
        log.error("template not loaded: %s", e)
    log.info("templates from %s: %d loaded or unchanged, %d refused", folder, loaded, len(errors))


def run_host(
    *,
    data_dir: str,
    host: str,
    port: int,
    artifact_root: str | None,
    retention_days: float,
    broker: BrokerSettings | None,
    token: str | None = None,
    site: SitePolicy | None = None,
    limits: RequestLimits | None = None,
    server: ServerSettings | None = None,
    unrunnable: str = "wait",
    webhooks: list[str] | None = None,
    webhook_expiry_hours: float = 24.0,
    public_url: str | None = None,
    templates_dir: str | None = None,
    start_paused: bool = False,
    owner_limits: dict | None = None,
    discovery: bool = True,
) -> None:
    token = check_token(token)
    site = site or SitePolicy.build([host])
    from ..webhooks.targets import parse_targets

    parse_targets(webhooks or [], "--webhook")  # a bad URL is refused before anything opens (ValueError)
    if not 0 < webhook_expiry_hours <= 720:
        raise ValueError("--webhook-expiry-hours must be more than 0 and at most 720")
    service = QueueService(data_dir, artifact_root, broker=broker)
    # the outbox's deliveries (webhooks/): jobs' own targets, and the host's, told of every ending
    service.start_webhooks(
        webhooks, base_url=public_url or default_public_url(host, port), expiry_hours=webhook_expiry_hours
    )
    if templates_dir:
        load_templates_dir(service, templates_dir)
    service.set_owner_defaults(owner_limits or {})  # owners' limits (0 = none) and weight; a token's own win
    if start_paused:  # nothing is dispatched until someone resumes the queue
        service.store.pause()
        log.info("the queue starts paused (--start-paused): resume it from the panel or POST /comfymq/queue/resume")
    report = service.store.recovery_report
    log.info("store %s: %s", service.data_dir / "store", report["summary"])
    for w in report["warnings"]:
        log.warning("store recovery: %s", w)
    if service.artifacts.stale_removed:
        log.info("removed %d stale temp files under %s", service.artifacts.stale_removed, service.artifact_root)
    if service.inputs.stale_removed:
        log.info("removed %d unfinished uploads under %s", service.inputs.stale_removed, service.inputs.tmp_dir)
    warning = insecure_bind_warning(host, token)
    if warning:
        log.warning("%s", warning)
    app = build_app(service, token=token, site=site, limits=limits, unrunnable=unrunnable)

    async def start_background(app: web.Application) -> None:
        # every hour: jobs past retention_days (when > 0), then input files no kept job names (always)
        app["retention"] = asyncio.create_task(_retention_loop(service, retention_days))
        from ..pairing.discovery import start_for_host

        # LAN discovery (a hint for workers; pairing still needs the code): returns at once, never raises
        app["advertiser"] = start_for_host(service, enabled=discovery, hosts=[host], port=port)

    async def stop(app: web.Application) -> None:
        advertiser = app.get("advertiser")
        if advertiser is not None:
            await asyncio.to_thread(advertiser.close)
        task = app.get("retention")
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        service.close()
        log.info("store closed cleanly")

    app.on_startup.append(start_background)
    app.on_cleanup.append(stop)
    if service.broker is not None:
        log.info(
            "workers connect to %s%s",
            service.broker.endpoint,
            f" (CURVE, broker public key {service.broker.public_key})"
            if service.broker.public_key
            else " (plain text)",
        )
    log.info("ComfyMQ host on http://%s:%d  (data: %s, artifacts: %s)", host, port, data_dir, service.artifact_root)
    serve(app, host, port, server or ServerSettings())  # a port that is taken raises, after the store closed
