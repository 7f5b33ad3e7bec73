"""`python -m comfy_nodes <command>`: the standalone CLI.

  host    the store + HTTP API, no ComfyUI needed (what `make run` starts)

Errors are one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import native


def default_data_dir() -> str:
    if os.environ.get("COMFYMQ_DATA_DIR"):
        return os.environ["COMFYMQ_DATA_DIR"]
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "comfymq")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfy_nodes", description="ComfyMQ: a durable job queue for ComfyUI.")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("host", help="run the standalone host (store + HTTP API)")
    h.add_argument("--data-dir", default=default_data_dir(), help="where the store lives (env COMFYMQ_DATA_DIR)")
    h.add_argument("--artifact-root", default=os.environ.get("COMFYMQ_ARTIFACT_ROOT"),
                   help="where output files go (default: <data-dir>/artifacts; env COMFYMQ_ARTIFACT_ROOT)")
    h.add_argument("--host", default=os.environ.get("COMFYMQ_HTTP_HOST", "127.0.0.1"), help="address to listen on")
    h.add_argument("--port", type=int, default=int(os.environ.get("COMFYMQ_HTTP_PORT", "8190")), help="HTTP port")
    h.add_argument("--retention-days", type=float, default=float(os.environ.get("COMFYMQ_RETENTION_DAYS", "30")),
                   help="remove finished jobs after this many days (0 keeps them)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        n = native.load()
        if args.command == "host":
            from .host.standalone import run_host

            run_host(data_dir=args.data_dir, host=args.host, port=args.port, artifact_root=args.artifact_root,
                     retention_days=args.retention_days)
        return 0
    except native.NativeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback
        if "n" in locals() and isinstance(e, (n.ComfyMQError, ValueError, KeyError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
