"""`python -m comfy_nodes pair --host URL --code CODE [--name NAME] [--fingerprint FP]`,
`pairing-code --host-url URL`, `discover [--timeout S] [--json]` (the hosts advertised on the LAN: hints),
`paired list|remove KEY [--host-url URL | --data-dir DIR]` (the host's side) and `leave [--data-dir DIR]` (the
worker's)."""

from __future__ import annotations

import json
import socket
import sys
import time

from .client import PairingError, pair, save


def manage_paired(args) -> None:
    """Lists the host's paired keys (key, name, paired at, from) or removes one: through a running host
    (--host-url, admin token), else on its data dir (no host may hold the store)."""
    import urllib.parse

    if args.action == "remove" and not args.key:
        raise ValueError("paired remove needs the worker's KEY (as `paired list` shows it)")
    if args.host_url:
        from ..remote import call

        base = args.host_url.rstrip("/") + "/comfymq/pairing"
        if args.action == "list":
            _print_paired(call(base, token=args.token)["workers"])
        else:
            answer = call(f"{base}/workers/{urllib.parse.quote(args.key, safe='')}", "DELETE", token=args.token)
            _removed(args.key, answer.get("still_allowed"))
        return
    from ..remote import open_host_store
    from .book import PairedBook

    with open_host_store(args.data_dir) as store:
        book = PairedBook(store)
        if args.action == "list":
            _print_paired(book.list())
            return
        try:
            book.remove(args.key)
        except LookupError as e:
            raise ValueError(str(e)) from None
        _removed(args.key, False)


def _print_paired(workers: list[dict]) -> None:
    if not workers:
        print("no paired workers", file=sys.stderr)
    for w in workers:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime((w.get("paired_at") or 0) / 1000))
        print(f"{w['public_key']}\t{w.get('name') or '-'}\t{when}\t{w.get('source') or '-'}")


def _removed(key: str, still_allowed) -> None:
    print(f"unpaired {key}", file=sys.stderr)
    if still_allowed:
        print("(it stays allowed: the host's configuration lists it in allowed_worker_keys)", file=sys.stderr)


def leave(args) -> None:
    """Tells the host (best effort) and deletes the kept keys."""
    from .client import forget, load, tell_host

    kept = load(args.data_dir)  # (ValueError for a file that is not a pairing: one line, exit 1)
    if kept is None:
        raise ValueError(f"no pairing is kept in {args.data_dir}")
    try:
        tell_host(kept)
        print(f"the host at {kept.host_url} unpaired this worker", file=sys.stderr)
    except PairingError as e:
        print(f"warning: the host at {kept.host_url} was not told ({e}): remove the key there "
              f"({kept.worker_public_key})", file=sys.stderr)  # fmt: skip
    forget(args.data_dir)
    print(f"left {kept.host_url}; the keys in {args.data_dir} are deleted", file=sys.stderr)


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
    if args.command == "paired":
        manage_paired(args)
        return
    if args.command == "leave":
        leave(args)
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
