"""Loads custom node packs into a stand-in app the way ComfyUI's start-up does.

ComfyUI's order: parse the command line (so comfy.cli_args.args.port is known), create PromptServer (its
.routes table exists, PromptServer.instance is set), import every pack in custom_nodes (nodes.init_extra_nodes:
a pack registers routes, starts threads, reads folder_paths), then PromptServer.add_routes() (every route at
/api/x and /x, then the packs' WEB_DIRECTORY folders, then the frontend's static files) and start serving.

    shims = await load_packs(app, ["/path/to/pack"], listen="127.0.0.1", port=real_port)
    frontend.add_static_routes(app)   # last
    ... serve ...

Packs run inside this process exactly as inside ComfyUI. The atexit handlers a pack registers while it is imported
are remembered and run (newest first) when the app is cleaned up: after the server has stopped listening and closed
its websockets (on_shutdown), before the stand-in's own clean-up removes its temporary folders (a pack's default
data may live in the user folder). So on SIGINT/SIGTERM a pack closes while the process is still whole; at a plain
interpreter exit concurrent.futures' executors are already shut down when atexit handlers run, and a pack's threads
that still use run_in_executor would fail there.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time

from aiohttp import web

from . import comfy_shims

log = logging.getLogger("standin.plugins")


class PackHost:
    """The loaded packs: shims (the installed ComfyUI modules), results {path: imported}, exit_handlers."""

    def __init__(self, shims: comfy_shims.Shims):
        self.shims = shims
        self.results: dict = {}
        self.exit_handlers: list = []  # (fn, args, kwargs) the packs registered with atexit

    async def on_cleanup(self, app) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Runs the packs' atexit handlers now (newest first, each once; errors are logged)."""
        while self.exit_handlers:
            fn, args, kwargs = self.exit_handlers.pop()
            atexit.unregister(fn)
            try:
                fn(*args, **kwargs)
            except Exception:  # noqa: BLE001 - like atexit: report and go on
                log.exception("atexit handler %r of a custom node pack failed", fn)


async def load_packs(app: web.Application, pack_paths, *, listen: str, port: int) -> PackHost:
    """Installs the ComfyUI shims for `app`, imports each pack folder (or .py file) like ComfyUI's
    load_custom_node (built-in node names are never replaced) and adds the routes they registered.
    `port` must be the port the server will really listen on."""
    state = app["comfy"]
    host = PackHost(comfy_shims.install(app, listen=listen, port=port))
    base_node_names = set(state.node_classes)
    import_times = []
    real_register = atexit.register

    def recording_register(fn, *args, **kwargs):
        host.exit_handlers.append((fn, args, kwargs))
        return real_register(fn, *args, **kwargs)

    atexit.register = recording_register
    try:
        for path in pack_paths:
            path = os.path.abspath(os.fspath(path))
            t0 = time.perf_counter()
            ok = await comfy_shims.load_custom_node(path, base_node_names, module_parent="custom_nodes")
            host.results[path] = ok
            import_times.append((time.perf_counter() - t0, path, ok))
    finally:
        atexit.register = real_register
    if import_times:
        log.info("Import times for custom nodes:")
        for seconds, path, ok in sorted(import_times):
            log.info("%6.1f seconds%s: %s", seconds, "" if ok else " (IMPORT FAILED)", path)
    comfy_shims.add_pack_routes(app, host.shims.prompt_server)
    app.on_cleanup.insert(0, host.on_cleanup)  # before the stand-in removes its temporary folders
    return host
