"""The CLI's client side: `enqueue` and `status` against a host's HTTP API (standard library only, but for the
native module's nesting limit named in one error).

Errors become ValueError with one line (the CLI prints it and exits 1): the host's JSON error message when it
answered, or why it could not be reached.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if method != "GET":  # the host refuses a state-changing request without it, body or not (site_policy.py)
        req.add_header("Content-Type", "application/json")
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


def enqueue_file(args) -> None:
    body = load_prompt_file(args.file)
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
    answer = call(args.url.rstrip("/") + "/comfymq/jobs", "POST", body, args.token)
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
