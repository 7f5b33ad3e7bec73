"""Runs the stand-in ComfyUI: python -m tests.standin --port P --output-dir D [--models a,b] [--host H]

Prints one line "READY http://HOST:PORT" on stdout once it listens (with --port 0, the port it got), then serves
until SIGINT/SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

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
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


async def _serve(args) -> None:
    app = make_app(args.output_dir, models=_csv(args.models),
                   node_classes=_csv(args.node_classes) if args.node_classes is not None else None,
                   name=args.name, input_dir=args.input_dir, temp_dir=args.temp_dir, step_delay=args.step_delay)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
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
        await runner.cleanup()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s standin[%(name)s] %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
