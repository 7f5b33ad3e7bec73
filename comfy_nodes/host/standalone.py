"""The standalone host's aiohttp application and its runner.

build_app() mounts the routes on a fresh app (tests use it directly); run_host() opens the store, serves
until SIGINT/SIGTERM, and closes the store cleanly (a checkpoint, so the next start is fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from ..api.auth import insecure_bind_warning, token_middleware
from ..api.errors import json_errors
from ..api.routes import add_routes
from ..api.seed_routes import add_seed_routes
from ..service import BrokerSettings, QueueService

log = logging.getLogger("comfymq.host")

DEFAULT_MAX_BODY = 64 << 20


def build_app(service: QueueService, *, max_body: int = DEFAULT_MAX_BODY,
              token: str | None = None) -> web.Application:
    """The host's app: the seed contract (/tasks, /health) and the /comfymq API (also under /api/comfymq, as
    inside ComfyUI). With a token, every route needs `Authorization: Bearer <token>`."""
    middlewares = [json_errors]
    if token is not None:
        middlewares.insert(0, token_middleware(token))  # outermost: nothing runs for a request without it
    app = web.Application(client_max_size=max_body, middlewares=middlewares)
    app["max_body"] = max_body
    app["service"] = service
    routes = web.RouteTableDef()
    add_seed_routes(routes, service)
    add_routes(routes, service, prefix="/comfymq")
    add_routes(routes, service, prefix="/api/comfymq")
    app.add_routes(routes)
    return app


async def _retention_loop(service: QueueService, days: float, every: float = 3600.0) -> None:
    while True:
        try:
            removed = await service.call(service.store.purge, older_than_days=days)
            if removed:
                log.info("retention: removed %d jobs finished more than %g days ago", removed, days)
        except Exception as e:  # noqa: BLE001 - keep serving; the next round tries again
            log.warning("retention purge failed: %s", e)
        await asyncio.sleep(every)


def run_host(*, data_dir: str, host: str, port: int, artifact_root: str | None, retention_days: float,
             broker: BrokerSettings | None, token: str | None = None) -> None:
    service = QueueService(data_dir, artifact_root, broker=broker)
    report = service.store.recovery_report
    log.info("store %s: %s", service.data_dir / "store", report["summary"])
    for w in report["warnings"]:
        log.warning("store recovery: %s", w)
    if service.artifacts.stale_removed:
        log.info("removed %d stale temp files under %s", service.artifacts.stale_removed, service.artifact_root)
    warning = insecure_bind_warning(host, token)
    if warning:
        log.warning("%s", warning)
    app = build_app(service, token=token)

    async def start_background(app: web.Application) -> None:
        if retention_days > 0:
            app["retention"] = asyncio.create_task(_retention_loop(service, retention_days))

    async def stop(app: web.Application) -> None:
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
        log.info("workers connect to %s%s", service.broker.endpoint,
                 f" (CURVE, broker public key {service.broker.public_key})" if service.broker.public_key else
                 " (plain text)")
    log.info("ComfyMQ host on http://%s:%d  (data: %s, artifacts: %s)", host, port, data_dir, service.artifact_root)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
