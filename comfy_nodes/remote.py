"""The CLI's client side: `enqueue` and `status` against a host's HTTP API (standard library only, but for the
native module's nesting limit named in one error). `enqueue --input NODE.INPUT=PATH` uploads the file to the
host's POST /comfymq/inputs (streamed from disk) and sets that input to a reference to it (inputs/graph.py).

Errors become ValueError with one line (the CLI prints it and exits 1): the host's JSON error message when it
answered, or why it could not be reached.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if method != "GET":  # the host refuses a state-changing request without it, body or not (site_policy.py)
        req.add_header("Content-Type", "application/json")
    return _answer(req, url, token, timeout)


def _answer(req: urllib.request.Request, url: str, token: str | None, timeout: float):
    """The JSON answer to req; ValueError with one line for an HTTP error or an unreachable host."""
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read()).get("error", {})
            msg = f"{err.get('type', 'error')}: {err.get('message', '')}"
        except (ValueError, AttributeError):
            msg = e.reason
        raise ValueError(f"the host answered HTTP {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ValueError(f"cannot reach the host at {url}: {getattr(e, 'reason', e)}") from None


def _sweep_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sweep(items: list[str]) -> dict:
    sweep = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values:
            raise ValueError(f"--sweep wants NODE.INPUT=V1,V2,..., got '{item}'")
        sweep[key.strip()] = [_sweep_value(v.strip()) for v in values.split(",")]
    return sweep


def load_prompt_file(path: str) -> dict:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    except RecursionError:  # deeper than Python's reader goes: far past the host's limit, so not sent at all
        from . import native

        raise ValueError(
            f"{path} nests deeper than {native.load().MAX_JSON_DEPTH} levels of objects and arrays (the limit)"
        ) from None
    if isinstance(doc, dict) and "nodes" in doc and "links" in doc:
        raise ValueError(f"{path} is a UI workflow; export it in API format (Workflow > Export (API)) and use that")
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict):
        return doc  # {"prompt": ..., "workflow"?: ...}
    return {"prompt": doc}


UPLOAD_TIMEOUT = 600.0  # seconds without progress an upload may wait (the host syncs a large file before answering)


def parse_inputs(items: list[str], prompt) -> list[tuple[str, str, str]]:
    """--input NODE.INPUT=PATH items as (node_id, input, path), checked against the prompt (the node and its
    input exist, the file is a readable file) before anything is sent. A node id may hold dots: the split whose
    node is in the prompt wins."""
    found = []
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or "." not in key or not path:
            raise ValueError(f"--input wants NODE.INPUT=PATH, got '{item}'")
        if not isinstance(prompt, dict):
            raise ValueError("--input needs an API-format graph (an object of nodes)")
        splits = [(key[:i], key[i + 1 :]) for i, c in enumerate(key) if c == "."]
        node_id, name = next(((n, i) for n, i in splits if n in prompt and i), splits[0])
        node = prompt.get(node_id)
        if not isinstance(node, dict):
            raise ValueError(f"--input {key}: the graph has no node '{node_id}'")
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise ValueError(f"--input {key}: node '{node_id}' has no input '{name}' (its inputs: {known})")
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ValueError(f"--input {key}: cannot read the file {path}")
        found.append((node_id, name, path))
    return found


def upload_file(base_url: str, path: str, token: str | None = None) -> dict:
    """POSTs the file at path to <base_url>/comfymq/inputs, streamed from disk; the host's answer
    {"sha256", "size", "name", "existed"}."""
    name = os.path.basename(path)
    url = f"{base_url}/comfymq/inputs?name={urllib.parse.quote(name, safe='')}"
    with open(path, "rb") as f:
        req = urllib.request.Request(url, data=f, method="POST")  # http.client sends a file in blocks
        req.add_header("Content-Type", "application/octet-stream")
        req.add_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        req.add_header("Accept", "application/json")
        return _answer(req, url, token, UPLOAD_TIMEOUT)


def attach_inputs(body: dict, items: list[str], base_url: str, token: str | None) -> None:
    """Uploads each --input file and sets its node input to a reference to it (checked first, all of them)."""
    prompt = body.get("prompt")
    for node_id, name, path in parse_inputs(items, prompt):
        stored = upload_file(base_url, path, token)
        prompt[node_id]["inputs"][name] = {"comfymq_input": stored["sha256"], "name": stored["name"]}


def enqueue_file(args) -> None:
    body = load_prompt_file(args.file)
    base = args.url.rstrip("/")
    if args.input:
        attach_inputs(body, args.input, base, args.token)
    body["priority"] = args.priority
    if args.count != 1:
        body["count"] = args.count
    if args.keep_seeds:
        body["keep_seeds"] = True
    if args.sweep:
        body["sweep"] = parse_sweep(args.sweep)
    if args.max_attempts is not None:
        body["max_attempts"] = args.max_attempts
    if args.timeout is not None:
        body["timeout"] = args.timeout
    answer = call(base + "/comfymq/jobs", "POST", body, args.token)
    jobs = answer.get("jobs") or ([answer["task"]] if answer.get("task") else [])
    batch = answer.get("batch_id")
    print(f"queued {len(jobs)} job{'s' if len(jobs) != 1 else ''}" + (f" (batch {batch})" if batch else ""))
    for j in jobs[:20]:
        print(f"  {j.get('id')}{'  (already queued)' if j.get('existed') else ''}")
    if len(jobs) > 20:
        print(f"  ... and {len(jobs) - 20} more")


def print_status(args) -> None:
    base = args.url.rstrip("/")
    stats = call(base + "/comfymq/stats", token=args.token)
    workers = call(base + "/comfymq/workers", token=args.token)
    if args.json:
        print(json.dumps({"stats": stats, "workers": workers}, indent=2))
        return
    counts = stats.get("counts", {})
    print("queue: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ("  (PAUSED)" if stats.get("paused") else ""))
    if not workers:
        print("workers: none connected")
    for w in workers:
        state = "online" if w.get("online") else f"offline ({w.get('left_reason', '')})"
        running = ", ".join(w.get("running") or []) or "idle"
        print(f"  {w.get('name')} [{w.get('id')}] {state}{' draining' if w.get('draining') else ''}: {running}")


def _limits_text(limits) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((limits or {}).items()))


def open_host_store(data_dir: str):
    """The store in a host's data dir, for the CLI's commands that work on it when no host runs (tokens, paired
    keys). ValueError when a host holds it: go through that host with --host-url instead."""
    from pathlib import Path

    from . import native

    n = native.load()
    try:
        return n.Store(str(Path(data_dir) / "store"))
    except n.StoreLockedError:
        raise ValueError(
            f"a host holds the store in {data_dir}: give --host-url (and an admin token in COMFYMQ_TOKEN)"
        ) from None


def manage_tokens(args) -> None:
    """`tokens add NAME --role ROLE | list | set NAME [limits] | revoke NAME`: over a running host's API (--host-url,
    an admin token), or on the data dir's store when no host runs (a host that holds it: use --host-url). `add`
    prints the new token once, on its own line; `set` replaces the token's own limits and weight with those given
    (none given: the host's defaults again)."""
    if args.action in ("add", "set", "revoke") and not args.name:
        raise ValueError(f"tokens {args.action} needs a NAME")
    limits = {
        k: getattr(args, k)
        for k in ("max_pending", "max_jobs_per_request", "max_running", "weight")
        if getattr(args, k) is not None
    }
    shown = "  ".join(f"{k}={v}" for k, v in limits.items())
    if args.host_url:
        base = args.host_url.rstrip("/") + "/comfymq/tokens"
        if args.action == "add":
            body = {"name": args.name, "role": args.role, **({"limits": limits} if limits else {})}
            answer = call(base, "POST", body, token=args.token)
            print(answer["token"])
            print(f"(token '{answer['name']}', role {answer['role']}: shown this once)", file=sys.stderr)
        elif args.action == "list":
            for t in call(base, token=args.token)["tokens"]:
                print(f"{t['name']}\t{t['role']}\t{_limits_text(t.get('limits'))}".rstrip())
        elif args.action == "set":
            call(f"{base}/{urllib.parse.quote(args.name, safe='')}", "PATCH", {"limits": limits}, token=args.token)
            print(f"{args.name}: {shown or 'the host defaults'}", file=sys.stderr)
        else:
            call(f"{base}/{urllib.parse.quote(args.name, safe='')}", "DELETE", token=args.token)
            print(f"revoked {args.name}", file=sys.stderr)
        return
    from .api.tokens import TokenBook

    with open_host_store(args.data_dir) as store:
        book = TokenBook(store)
        if args.action == "add":
            try:
                print(book.add(args.name, args.role, limits))
            except FileExistsError as e:
                raise ValueError(str(e)) from None
            print(f"(token '{args.name}', role {args.role}: shown this once)", file=sys.stderr)
        elif args.action == "list":
            for t in book.list():
                print(f"{t['name']}\t{t['role']}\t{_limits_text(t.get('limits'))}".rstrip())
        elif args.action == "set":
            try:
                book.set_limits(args.name, limits)
            except LookupError as e:
                raise ValueError(str(e)) from None
            print(f"{args.name}: {shown or 'the host defaults'}", file=sys.stderr)
        else:
            try:
                book.revoke(args.name)
            except LookupError as e:
                raise ValueError(str(e)) from None
            print(f"revoked {args.name}", file=sys.stderr)
