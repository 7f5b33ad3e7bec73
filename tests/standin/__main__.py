"""Runs the stand-in ComfyUI: python -m tests.standin --port P --output-dir D [--models a,b] [--host H]
                                 [--with-plugin PACK_DIR ...] [--frontend | --frontend-root DIR] [--user-dir D]
                                 [--comfyui-version 0.3.64|0.8.0|current] [--max-upload-size MB]

Prints one line "READY http://HOST:PORT" on stdout once it listens (with --port 0, the port it got), then serves
until SIGINT/SIGTERM and exits 0.

--with-plugin DIR   load DIR as a ComfyUI custom node pack (repeatable), as ComfyUI loads custom_nodes/*: the pack
                    sees ComfyUI's extension points (server.PromptServer, folder_paths, comfy.cli_args, nodes;
                    see comfy_shims.py), its routes are served at /x and /api/x, its WEB_DIRECTORY at
                    /extensions/<DIR's name>/ and listed by GET /extensions. The port is bound before the pack is
                    imported, so comfy.cli_args.args.port is the real port even with --port 0. On SIGINT/SIGTERM the
                    server stops serving, then the atexit handlers the pack registered run, then it exits 0.
--frontend          serve the real ComfyUI frontend at /: the installed comfyui-frontend-package (pinned in
                    tests/requirements.txt), or the folder $STANDIN_FRONTEND_ROOT when that is set
--frontend-root DIR serve the frontend from DIR (a folder holding index.html, e.g. another version's `static`)
--user-dir DIR      ComfyUI's user folder (settings, saved workflows; default: a temporary folder)
--settings JSON     user settings to store before serving, e.g. '{"Comfy.TutorialCompleted": true}' (a fresh user
                    otherwise gets the frontend's first-run templates dialog)
--access-log        log every request ("GET /path HTTP/1.1" status bytes) on stderr, to see what a browser asks for
--comfyui-version V which ComfyUI's API to serve: 0.3.64, 0.8.0 (default) or current (the jobs API with cancel,
                    strict prompt ids, ...); default $STANDIN_COMFYUI_VERSION, else 0.8.0 (tests/standin/versions.py)
--max-upload-size MB  the largest upload (any request body) in MB, as ComfyUI's flag (default 100): larger is a 413
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from . import frontend, versions
from .server import make_app


def _csv(value: str) -> list:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.standin", description="A stand-in ComfyUI server for tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188, help="0 picks a free port (printed on the READY line)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--input-dir", default=None)
    p.add_argument("--temp-dir", default=None)
    p.add_argument("--models", default="", help="comma-separated checkpoint names, e.g. a.safetensors,b.safetensors")
    p.add_argument("--node-classes", default=None, help="comma-separated node classes to offer (default: all)")
    p.add_argument("--name", default="standin")
    p.add_argument("--step-delay", type=float, default=0.05, help="seconds per ProbeProgress step")
    p.add_argument(
        "--with-plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="PACK_DIR",
        help="load this folder as a ComfyUI custom node pack (repeatable)",
    )
    p.add_argument("--frontend", action="store_true", help="serve the installed comfyui-frontend-package at /")
    p.add_argument(
        "--frontend-root",
        default=None,
        metavar="DIR",
        help="serve the ComfyUI frontend from DIR (holds index.html); implies --frontend",
    )
    p.add_argument("--user-dir", default=None, help="ComfyUI's user folder (default: a temporary folder)")
    p.add_argument(
        "--settings",
        default=None,
        metavar="JSON",
        help="settings to store for the user before serving, e.g. '{\"Comfy.TutorialCompleted\": true}' "
        "(merged into <user dir>/default/comfy.settings.json, as POST /settings would)",
    )
    p.add_argument("--access-log", action="store_true", help="log every HTTP request on stderr (method path status)")
    p.add_argument(
        "--comfyui-version",
        default=os.environ.get(versions.ENV) or versions.DEFAULT,
        help="the ComfyUI API to imitate: %s (default $%s, else %s)"
        % (", ".join(versions.NAMES), versions.ENV, versions.DEFAULT),
    )
    p.add_argument(
        "--max-upload-size",
        type=float,
        default=versions.MAX_UPLOAD_SIZE / (1024 * 1024),
        help="the largest upload in MB, as ComfyUI's --max-upload-size (default 100)",
    )
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.frontend_root is None and args.frontend:
        args.frontend_root = os.environ.get("STANDIN_FRONTEND_ROOT") or frontend.package_web_root()
        if args.frontend_root is None:
            p.error("--frontend: comfyui-frontend-package is not installed (pip install -r tests/requirements.txt)")
    if args.frontend_root is not None and not os.path.isfile(os.path.join(args.frontend_root, "index.html")):
        p.error("--frontend-root %s: no index.html there" % args.frontend_root)
    try:
        args.comfyui_version = versions.get(args.comfyui_version).name
    except ValueError as e:
        p.error("--comfyui-version: %s" % e)
    if args.settings is not None:
        try:
            args.settings = json.loads(args.settings)
        except json.JSONDecodeError as e:
            p.error("--settings: not JSON: %s" % e)
        if not isinstance(args.settings, dict):
            p.error("--settings: expected a JSON object")
    return args


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the real port is known before packs load;
    connections made meanwhile wait in the backlog until the server starts."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(args) -> None:
    app = make_app(
        args.output_dir,
        models=_csv(args.models),
        node_classes=_csv(args.node_classes) if args.node_classes is not None else None,
        name=args.name,
        input_dir=args.input_dir,
        temp_dir=args.temp_dir,
        step_delay=args.step_delay,
        user_dir=args.user_dir,
        web_root=args.frontend_root,
        static_routes=False,
        comfyui_version=args.comfyui_version,
        max_upload_size=round(args.max_upload_size * 1024 * 1024),
    )
    if args.settings:
        frontend.store_settings(app["comfy"], args.settings)
    if args.frontend_root is not None:
        logging.getLogger("standin").info(
            "serving the ComfyUI frontend from %s (installed comfyui-frontend-package: %s)",
            args.frontend_root,
            frontend.package_version(),
        )
    sock = None
    if args.plugins:
        from .plugin_host import load_packs

        sock = _bind(args.host, args.port)
        await load_packs(app, args.plugins, listen=args.host, port=sock.getsockname()[1])
    frontend.add_static_routes(app)  # after every other route, as ComfyUI does
    access = (
        dict(access_log=logging.getLogger("standin.access"), access_log_format="%r %s %b")
        if args.access_log
        else dict(access_log=None)
    )
    runner = web.AppRunner(app, handle_signals=False, **access)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else args.port  # the real port when --port 0
    host = "[%s]" % args.host if ":" in args.host else args.host
    print("READY http://%s:%d" % (host, port), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # stops serving, closes websockets, runs the packs' atexit handlers, cleans up


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s standin[%(name)s] %(levelname)s %(message)s",
    )
    if args.access_log:
        logging.getLogger("standin.access").setLevel(logging.INFO)
    frontend.capture_logs()  # GET /internal/logs (the frontend's log panel)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
