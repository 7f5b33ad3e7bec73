"""`python -m comfy_nodes pair --host URL --code CODE [--name NAME] [--fingerprint FP]`,
`pairing-code --host-url URL` and `discover [--timeout S] [--json]` (the hosts advertised on the LAN: hints)."""

from __future__ import annotations

import json
import socket
import sys
import time

from .client import PairingError, pair, save


def discover(args) -> None:
    """Lists the hosts found within --timeout seconds, one a line (or --json), with the `pair` line for each."""
    from .discovery import DiscoveryUnavailable, browse

    if not 0 < args.timeout <= 60:
        raise ValueError("--timeout must be more than 0 and at most 60 seconds")
    try:
        found = browse(args.timeout)
    except DiscoveryUnavailable as e:
        raise ValueError(f"cannot browse the LAN: {e}") from None
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
        return
    if not found:
        print(f"no ComfyMQ host answered within {args.timeout:g} s", file=sys.stderr)
        return
    for f in found:
        print(f"{f.name}  {', '.join(f.addresses)}  port {f.port}  fingerprint {f.fingerprint}  version {f.version}")
        if f.urls:
            print(f"    pair: python -m comfy_nodes pair --host {f.urls[0]} --fingerprint {f.fingerprint} --code CODE")
    print("(advertisements are hints: compare the fingerprint with the one the host shows)", file=sys.stderr)


def run(args) -> None:
    """Errors are ValueError (one line on stderr, exit 1)."""
    if args.command == "discover":
        discover(args)
        return
    if args.command == "pair":
        from .discovery import fingerprint_note

        try:
            paired = pair(args.host, args.code, name=args.name or socket.gethostname())
        except PairingError as e:
            raise ValueError(f"not paired: {e}") from None
        path = save(args.data_dir, paired)
        print(f"paired with {paired.host_url}: broker {paired.broker}, fingerprint {paired.fingerprint}")
        note = fingerprint_note(getattr(args, "fingerprint", None), paired.fingerprint)
        if note:
            print(f"warning: {note}", file=sys.stderr)
        print(f"keys kept in {path}; start the worker with the same --data-dir", file=sys.stderr)
        return
    from ..remote import call

    answer = call(args.host_url.rstrip("/") + "/comfymq/pairing/code", "POST", {}, token=args.token)
    until = time.strftime("%H:%M:%S", time.localtime(answer["expires_at"] / 1000))
    print(answer["code"])
    print(
        f"(one-time code, valid until {until}; this host's fingerprint: {answer.get('fingerprint')})", file=sys.stderr
    )
