"""`python -m comfy_nodes <command>`: the standalone CLI.

  host      the store + broker + HTTP API, no ComfyUI needed (what `make run` starts)
  worker    drive a ComfyUI (any, also one without this plugin) as a worker of a host's broker
  enqueue   put an API-format workflow file into a host's queue (--priority, --count, --sweep, --input)
  status    a host's queue counts and workers
  keys      make CurveZMQ key pairs and print the lines to paste
  pair      pair this worker with a host, with the one-time code it shows (pairing/)
  pairing-code   make that code on a running host (admin)
  discover  list the ComfyMQ hosts advertised on the LAN (mDNS; hints only, pairing needs the code)
  paired    the host's paired worker keys: list, remove KEY (at once: its worker is dropped and kept out)
  leave     this worker leaves the host it paired with (the host unpairs its key; the kept keys are deleted)

Errors are one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import native
from .api.limits import RequestLimits
from .host.http_server import ServerSettings


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
    h.add_argument(
        "--artifact-root",
        default=os.environ.get("COMFYMQ_ARTIFACT_ROOT"),
        help="where output files go (default: <data-dir>/artifacts; env COMFYMQ_ARTIFACT_ROOT)",
    )
    h.add_argument("--host", default=os.environ.get("COMFYMQ_HTTP_HOST", "127.0.0.1"), help="address to listen on")
    h.add_argument("--port", type=int, default=os.environ.get("COMFYMQ_HTTP_PORT", "8190"), help="HTTP port")
    h.add_argument(
        "--retention-days",
        type=float,
        default=os.environ.get("COMFYMQ_RETENTION_DAYS", "30"),
        help="remove finished jobs after this many days (0 keeps them)",
    )
    h.add_argument(
        "--unrunnable-jobs",
        choices=("wait", "refuse"),
        default=os.environ.get("COMFYMQ_UNRUNNABLE_JOBS", "wait"),
        help="a job no online worker can run now: queue it and say why it waits (wait, default), or answer 409 "
        "(refuse); env COMFYMQ_UNRUNNABLE_JOBS",
    )
    h.add_argument(
        "--webhook",
        action="append",
        default=_env_list("COMFYMQ_WEBHOOKS"),
        help="a URL told of every job's ending (repeat; env COMFYMQ_WEBHOOKS, comma-separated); jobs may name more",
    )
    h.add_argument(
        "--webhook-expiry-hours",
        type=float,
        default=os.environ.get("COMFYMQ_WEBHOOK_EXPIRY_HOURS", "24"),
        help="how long a webhook delivery is retried before it counts as failed (env COMFYMQ_WEBHOOK_EXPIRY_HOURS)",
    )
    h.add_argument(
        "--public-url",
        default=os.environ.get("COMFYMQ_PUBLIC_URL"),
        help="this host's address in links it sends (webhooks); default http://<host>:<port> (env COMFYMQ_PUBLIC_URL)",
    )
    h.add_argument(
        "--owner-max-pending",
        type=int,
        default=int(os.environ.get("COMFYMQ_OWNER_MAX_PENDING", "0")),
        help="pending jobs one owner may have (0 = no limit; env COMFYMQ_OWNER_MAX_PENDING); tokens may set their own",
    )
    h.add_argument(
        "--owner-max-jobs-per-request",
        type=int,
        default=int(os.environ.get("COMFYMQ_OWNER_MAX_JOBS_PER_REQUEST", "0")),
        help="jobs one owner's request may make (0 = no own limit; env COMFYMQ_OWNER_MAX_JOBS_PER_REQUEST)",
    )
    h.add_argument(
        "--owner-max-running",
        type=int,
        default=int(os.environ.get("COMFYMQ_OWNER_MAX_RUNNING", "0")),
        help="jobs one owner may have running at once; the rest wait (0 = no limit; env COMFYMQ_OWNER_MAX_RUNNING)",
    )
    h.add_argument(
        "--owner-weight",
        type=int,
        default=int(os.environ.get("COMFYMQ_OWNER_WEIGHT", "1")),
        help="each owner's share of dispatch among equal-priority jobs, 1..1000 (tokens may set their own)",
    )
    h.add_argument(
        "--start-paused",
        action="store_true",
        default=os.environ.get("COMFYMQ_START_PAUSED", "").lower() in ("1", "true", "yes"),
        help="start with the queue paused: nothing is dispatched until it is resumed (env COMFYMQ_START_PAUSED)",
    )
    h.add_argument(
        "--templates-dir",
        default=os.environ.get("COMFYMQ_TEMPLATES_DIR"),
        help="a folder of template files (YAML/JSON; seed 003's config too) loaded at start (env COMFYMQ_TEMPLATES_DIR)",
    )
    h.add_argument(
        "--no-discovery",
        dest="discovery",
        action="store_false",
        default=os.environ.get("COMFYMQ_DISCOVERY", "true").lower() not in ("0", "false", "no", "off"),
        help="do not advertise this host on the LAN (mDNS); it never is when it listens on loopback only or its "
        "broker has no CURVE key (env COMFYMQ_DISCOVERY=false)",
    )
    h.add_argument(
        "--workers-bind",
        default=os.environ.get("COMFYMQ_BROKER_BIND", "tcp://127.0.0.1:5557"),
        help="where workers connect (ZeroMQ endpoint; env COMFYMQ_BROKER_BIND); 'off' runs no broker",
    )
    h.add_argument(
        "--curve-secret-key",
        default=os.environ.get("COMFYMQ_CURVE_SECRET_KEY"),
        help="the broker's CURVE secret key (env COMFYMQ_CURVE_SECRET_KEY; make one with `keys`); "
        "write --curve-secret-key=KEY, as keys may start with '-'",
    )
    h.add_argument(
        "--allow-worker-key",
        action="append",
        default=_env_list("COMFYMQ_ALLOWED_WORKER_KEYS"),
        help="a worker public key allowed to connect (repeat, as --allow-worker-key=KEY; "
        "env COMFYMQ_ALLOWED_WORKER_KEYS, comma-separated)",
    )
    h.add_argument(
        "--allow-plaintext",
        action="store_true",
        default=os.environ.get("COMFYMQ_ALLOW_PLAINTEXT") == "1",
        help="allow plain-text worker links on a non-loopback address (not recommended)",
    )
    h.add_argument(
        "--heartbeat",
        type=float,
        default=os.environ.get("COMFYMQ_HEARTBEAT", "1.0"),
        help="heartbeat interval in seconds; a worker silent for 3 of them is gone",
    )
    h.add_argument(
        "--max-run-time",
        type=float,
        default=os.environ.get("COMFYMQ_MAX_RUN_TIME", "7200"),
        help="seconds one run may take when its job sets no timeout (0 = no limit; env "
        "COMFYMQ_MAX_RUN_TIME): past it the run is cancelled and the job runs again, elsewhere first",
    )
    h.add_argument(
        "--token",
        default=os.environ.get("COMFYMQ_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on every route (env COMFYMQ_TOKEN; 8 to 1024 "
        "visible ASCII characters)",
    )
    h.add_argument(
        "--allow-host",
        action="append",
        default=_env_list("COMFYMQ_ALLOWED_HOSTS"),
        metavar="NAME",
        help="a Host name the API answers besides loopback names (repeat; '*' any; env "
        "COMFYMQ_ALLOWED_HOSTS, comma-separated). Bound to loopback, other names are refused "
        "(DNS rebinding); bound beyond loopback, any name is answered unless this is given",
    )
    h.add_argument(
        "--allow-origin",
        action="append",
        default=_env_list("COMFYMQ_ALLOWED_ORIGINS"),
        metavar="URL",
        help="a web origin (scheme://name[:port]) allowed to call the API besides its own (repeat; env "
        "COMFYMQ_ALLOWED_ORIGINS, comma-separated)",
    )
    limits, server = RequestLimits(), ServerSettings()
    for flag, env, kind, default, what in (
        ("--max-body-bytes", "COMFYMQ_MAX_BODY_BYTES", int, limits.max_body_bytes, "largest request body"),
        (
            "--max-jobs-per-request",
            "COMFYMQ_MAX_JOBS_PER_REQUEST",
            int,
            limits.max_jobs_per_request,
            "jobs one request may create with count / sweep",
        ),
        (
            "--max-stored-bytes-per-request",
            "COMFYMQ_MAX_STORED_BYTES_PER_REQUEST",
            int,
            limits.max_stored_bytes_per_request,
            "prompt + workflow bytes one request may store over its jobs",
        ),
        (
            "--max-input-bytes",
            "COMFYMQ_MAX_INPUT_BYTES",
            int,
            limits.max_input_bytes,
            "largest file one upload to POST /comfymq/inputs may be",
        ),
        (
            "--read-timeout",
            "COMFYMQ_HTTP_READ_TIMEOUT",
            float,
            limits.http_read_timeout,
            "seconds a request body may send nothing",
        ),
        (
            "--body-timeout",
            "COMFYMQ_HTTP_BODY_TIMEOUT",
            float,
            limits.http_body_timeout,
            "seconds a whole request body may take",
        ),
        (
            "--keepalive-timeout",
            "COMFYMQ_HTTP_KEEPALIVE_TIMEOUT",
            float,
            server.keepalive_timeout,
            "seconds an idle connection stays open; also the time a request's headers may take",
        ),
    ):
        h.add_argument(
            flag, type=kind, default=os.environ.get(env, str(default)), help=f"{what} (default {default}; env {env})"
        )

    w = sub.add_parser("worker", help="run jobs from a host's broker on a ComfyUI")
    w.add_argument(
        "--start-paused",
        action="store_true",
        default=os.environ.get("COMFYMQ_START_PAUSED", "").lower() in ("1", "true", "yes"),
        help="join paused (drained): take no job until resumed from the host's panel or API (env COMFYMQ_START_PAUSED)",
    )
    w.add_argument(
        "--comfy-url",
        default=os.environ.get("COMFYMQ_COMFY_URL", "http://127.0.0.1:8188"),
        help="the ComfyUI to drive (env COMFYMQ_COMFY_URL)",
    )
    w.add_argument(
        "--broker",
        default=os.environ.get("COMFYMQ_BROKER"),
        help="the host's broker (env COMFYMQ_BROKER; default: the paired host's, else tcp://127.0.0.1:5557)",
    )
    w.add_argument(
        "--id",
        default=os.environ.get("COMFYMQ_WORKER_ID"),
        help="a stable worker id (default: made once and kept in --data-dir)",
    )
    w.add_argument("--name", default=os.environ.get("COMFYMQ_WORKER_NAME"), help="display name (default: hostname)")
    w.add_argument("--data-dir", default=default_data_dir(), help="worker id and downloads in flight")
    w.add_argument(
        "--capacity",
        type=int,
        default=os.environ.get("COMFYMQ_CAPACITY", "1"),
        help="jobs run at once (ComfyUI runs one prompt at a time: keep 1)",
    )
    w.add_argument("--heartbeat", type=float, default=os.environ.get("COMFYMQ_HEARTBEAT", "1.0"))
    w.add_argument(
        "--broker-key",
        default=os.environ.get("COMFYMQ_BROKER_PUBLIC_KEY"),
        help="the broker's CURVE public key to pin (write --broker-key=KEY)",
    )
    w.add_argument("--public-key", default=os.environ.get("COMFYMQ_WORKER_PUBLIC_KEY"), help="this worker's public key")
    w.add_argument("--secret-key", default=os.environ.get("COMFYMQ_WORKER_SECRET_KEY"), help="this worker's secret key")
    w.add_argument(
        "--allow-plaintext",
        action="store_true",
        default=os.environ.get("COMFYMQ_ALLOW_PLAINTEXT") == "1",
        help="allow a plain-text link to a non-loopback broker (not recommended)",
    )
    w.add_argument("--caps-refresh", type=float, default=300.0, help="seconds between capability refreshes")
    w.add_argument(
        "--input-cache-bytes",
        type=int,
        default=os.environ.get("COMFYMQ_INPUT_CACHE_BYTES", str(20 << 30)),
        help="bytes of job input files kept for later jobs (default 20 GiB; env COMFYMQ_INPUT_CACHE_BYTES)",
    )

    e = sub.add_parser("enqueue", help="queue an API-format workflow file on a host")
    e.add_argument("file", help="workflow in API format (ComfyUI: Workflow > Export (API)); '-' reads stdin")
    e.add_argument(
        "--url", default=os.environ.get("COMFYMQ_URL", "http://127.0.0.1:8190"), help="the host's HTTP address"
    )
    e.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN"))
    e.add_argument("--priority", type=int, default=1, help="higher runs first (default 1)")
    e.add_argument("--count", type=int, default=1, help="this many copies, each with new random seeds")
    e.add_argument("--keep-seeds", action="store_true", help="copies keep the file's seeds")
    e.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NODE.INPUT=V1,V2,...",
        help="one job per value (repeat for a grid); values are JSON when they parse, else text",
    )
    e.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NODE.INPUT=PATH",
        help="upload a local file to the host and use it as that node's input, e.g. 10.image=photo.png (repeat); "
        "the job then runs on any worker",
    )
    e.add_argument("--max-attempts", type=int)
    e.add_argument("--timeout", type=float, help="seconds a run may take")

    st = sub.add_parser("status", help="a host's queue counts and workers")
    st.add_argument("--url", default=os.environ.get("COMFYMQ_URL", "http://127.0.0.1:8190"))
    st.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN"))
    st.add_argument("--json", action="store_true", help="print the raw JSON")

    t = sub.add_parser(
        "tokens",
        help="API tokens with a name and a role: add, list, set (its limits and weight), revoke (on a running host "
        "with --host-url and an admin token in COMFYMQ_TOKEN, or on the data dir when no host runs)",
    )
    t.add_argument("action", choices=("add", "list", "set", "revoke"))
    t.add_argument("name", nargs="?", help="the token's name (its owner): add, set, revoke")
    t.add_argument("--role", default="submit", choices=("admin", "submit", "worker-admin", "read"))
    t.add_argument("--max-pending", type=int, help="add, set: pending jobs this owner may have (0 = none)")
    t.add_argument("--max-jobs-per-request", type=int, help="add, set: jobs one request of this owner may make")
    t.add_argument("--max-running", type=int, help="add, set: jobs of this owner running at once (0 = none)")
    t.add_argument("--weight", type=int, help="add, set: this owner's share of dispatch against others' (1..1000)")
    t.add_argument("--host-url", default=os.environ.get("COMFYMQ_HOST_URL"), help="a running host (http://host:port)")
    t.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN"), help="an admin token for --host-url")
    t.add_argument("--data-dir", default=default_data_dir(), help="the host's data dir (no host running)")

    k = sub.add_parser("keys", help="make CurveZMQ key pairs for a broker and its workers")
    k.add_argument("--workers", type=int, default=1, help="how many worker key pairs to make")

    # -- pairing (pairing/): a worker joins a host with the one-time code the host shows --
    pr = sub.add_parser("pair", help="pair this worker with a host, with the code the host shows (pairing-code)")
    pr.add_argument("--host", required=True, help="the host's HTTP address (http://host.lan:8188, or :8190 standalone)")
    pr.add_argument("--code", required=True, help="the 6-digit code the host shows")
    pr.add_argument("--name", default=os.environ.get("COMFYMQ_WORKER_NAME"), help="this worker's name on the host")
    pr.add_argument("--data-dir", default=default_data_dir(), help="where the keys are kept (paired-host.json)")
    pr.add_argument(
        "--fingerprint", help="the fingerprint `discover` showed for this host: a warning says when its key differs"
    )
    dc = sub.add_parser("discover", help="list the ComfyMQ hosts advertised on the LAN (mDNS; hints only)")
    dc.add_argument("--timeout", type=float, default=3.0, help="seconds to listen for answers (default 3)")
    dc.add_argument("--json", action="store_true", help="print the hosts as JSON")
    pd = sub.add_parser("paired", help="the host's paired worker keys: list, remove KEY (effective at once)")
    pd.add_argument("action", choices=("list", "remove"))
    pd.add_argument("key", nargs="?", help="remove: the worker's public key (40 characters, as `list` shows it)")
    pd.add_argument("--host-url", default=os.environ.get("COMFYMQ_HOST_URL"), help="a running host (http://host:port)")
    pd.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN"), help="an admin token for --host-url")
    pd.add_argument("--data-dir", default=default_data_dir(), help="the host's data dir (no host running)")
    lv = sub.add_parser("leave", help="leave the host this worker paired with (the host unpairs its key)")
    lv.add_argument("--data-dir", default=default_data_dir(), help="where `pair` kept the keys")
    pc = sub.add_parser("pairing-code", help="make a one-time pairing code on a running host (admin)")
    pc.add_argument(
        "--host-url", default=os.environ.get("COMFYMQ_HOST_URL", "http://127.0.0.1:8190"), help="the host's address"
    )
    pc.add_argument("--token", default=os.environ.get("COMFYMQ_TOKEN"), help="an admin token (env COMFYMQ_TOKEN)")
    return p


def _env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def http_settings(args) -> dict:
    """run_host's token, site, limits and server arguments from the host command's flags; ValueError naming the
    flag's setting when one is out of range (one line, exit 1)."""
    from .api.site_policy import SitePolicy
    from .config import check_token

    try:
        token = check_token(args.token)
    except ValueError as e:
        raise ValueError(f"--token (or COMFYMQ_TOKEN): {e}") from None
    return {
        "token": token,
        "site": SitePolicy.build([args.host], args.allow_host, args.allow_origin),
        "limits": RequestLimits(
            max_body_bytes=args.max_body_bytes,
            max_jobs_per_request=args.max_jobs_per_request,
            max_stored_bytes_per_request=args.max_stored_bytes_per_request,
            max_input_bytes=args.max_input_bytes,
            http_read_timeout=args.read_timeout,
            http_body_timeout=args.body_timeout,
        ),
        "server": ServerSettings(keepalive_timeout=args.keepalive_timeout),
    }


def print_keys(n, workers: int) -> None:
    if not n.curve_available():
        raise ValueError("this libzmq has no CURVE support (it needs libsodium)")
    broker_pub, broker_sec = n.curve_keypair()
    pairs = [n.curve_keypair() for _ in range(workers)]
    print("# On the host (keep the secret key secret):")
    print(f"COMFYMQ_CURVE_SECRET_KEY='{broker_sec}'")
    print(f"COMFYMQ_ALLOWED_WORKER_KEYS='{','.join(p for p, _ in pairs)}'")
    for i, (pub, sec) in enumerate(pairs, 1):
        print(f"\n# On worker {i}:")
        print(f"COMFYMQ_BROKER_PUBLIC_KEY='{broker_pub}'")
        print(f"COMFYMQ_WORKER_PUBLIC_KEY='{pub}'")
        print(f"COMFYMQ_WORKER_SECRET_KEY='{sec}'")


def run_worker(args) -> None:
    import signal

    from . import __version__
    from .identity import worker_identity
    from .worker.bridge import BridgeSettings, WorkerBridge

    if args.capacity < 1:
        raise ValueError("--capacity must be at least 1")
    if args.input_cache_bytes < 0:
        raise ValueError("--input-cache-bytes must be 0 or more")
    if (args.public_key is None) != (args.secret_key is None):
        raise ValueError("--public-key and --secret-key go together")
    # -- pairing hook: no keys given, and `pair` kept some in --data-dir: use them (and the broker it names) --
    from .pairing.client import load as load_paired

    paired = None if args.public_key or args.broker_key else load_paired(args.data_dir)
    if paired is not None:
        args.broker_key, args.public_key, args.secret_key = (
            paired.broker_public_key,
            paired.worker_public_key,
            paired.worker_secret_key,
        )
        args.broker = args.broker or paired.broker
        logging.getLogger("comfymq").info("paired with %s (broker key %s)", paired.host_url, paired.fingerprint)
    args.broker = args.broker or "tcp://127.0.0.1:5557"
    identity = worker_identity(args.data_dir, args.id or None)
    bridge = WorkerBridge(
        BridgeSettings(
            comfy_url=args.comfy_url,
            broker=args.broker,
            worker_id=identity.worker_id,
            install_id=identity.install_id,
            name=args.name or __import__("socket").gethostname(),
            work_dir=str(Path(args.data_dir) / "worker"),
            capacity=args.capacity,
            heartbeat=args.heartbeat,
            broker_public_key=args.broker_key,
            public_key=args.public_key,
            secret_key=args.secret_key,
            allow_plaintext=args.allow_plaintext,
            plugin_version=__version__,
            caps_refresh=args.caps_refresh,
            input_cache_bytes=args.input_cache_bytes,
            start_paused=args.start_paused,
        )
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: bridge.stop(timeout=0))
    logging.getLogger("comfymq").info("worker for %s on %s; Ctrl+C stops", args.broker, args.comfy_url)
    bridge.run_forever()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        n = native.load()
        if args.command == "host":
            from .host.standalone import run_host
            from .service import BrokerSettings

            broker = None
            if args.workers_bind != "off":
                broker = BrokerSettings(
                    bind=args.workers_bind,
                    heartbeat=args.heartbeat,
                    curve_secret_key=args.curve_secret_key or None,
                    allowed_worker_keys=args.allow_worker_key,
                    allow_plaintext=args.allow_plaintext,
                    max_run_time=args.max_run_time,
                )
            run_host(
                data_dir=args.data_dir,
                host=args.host,
                port=args.port,
                artifact_root=args.artifact_root,
                retention_days=args.retention_days,
                broker=broker,
                unrunnable=args.unrunnable_jobs,
                webhooks=args.webhook,
                webhook_expiry_hours=args.webhook_expiry_hours,
                public_url=args.public_url,
                templates_dir=args.templates_dir,
                start_paused=args.start_paused,
                discovery=args.discovery,
                owner_limits={
                    "max_pending": max(0, args.owner_max_pending),
                    "max_jobs_per_request": max(0, args.owner_max_jobs_per_request),
                    "max_running": max(0, args.owner_max_running),
                    "weight": args.owner_weight,
                },
                **http_settings(args),
            )
        elif args.command == "worker":
            run_worker(args)
        elif args.command == "enqueue":
            from .remote import enqueue_file

            enqueue_file(args)
        elif args.command == "status":
            from .remote import print_status

            print_status(args)
        elif args.command == "keys":
            print_keys(n, args.workers)
        elif args.command in ("pair", "pairing-code", "discover", "paired", "leave"):
            from .pairing.cli import run

            run(args)
        elif args.command == "tokens":
            from .remote import manage_tokens

            manage_tokens(args)
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
