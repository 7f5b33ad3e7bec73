"""Delivery records: one store document per delivery (a webhook request to make, until 2xx or expiry).

  key    webhook/<job id>/<delivery id>
  id     <13-digit ms>-<job id>.<n>   the outbox entry it comes from and the target's place (n), so the same
                                      ending always makes the same ids (after a restart too)
  value  {"id", "job", "event", "url", "state", "attempts", "created_at", "next_at", "last_at", "last_status",
          "last_error", "expires_at"}   times in ms since the epoch
  state  pending (to send; retrying once attempts > 0) | delivered (a 2xx came back) | failed (expired unanswered)

Records outlive their job's outbox entry so GET /comfymq/webhooks/deliveries can list them, and go after
RECORD_DAYS (Deliverer.prune).
"""

from __future__ import annotations

import json

PREFIX = "webhook/"
STATES = ("pending", "delivered", "failed")
RECORD_DAYS = 7.0
LIST_SCAN = 20000  # records one listing looks through at most (a page of matches is found among them)


def key(job_id: str, delivery_id: str) -> str:
    return f"{PREFIX}{job_id}/{delivery_id}"


def load(value: str) -> dict | None:
    try:
        rec = json.loads(value)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def public_view(rec: dict) -> dict:
    """What the API shows of a record (all of it; URLs may hold a receiver's token, and the API needs ours)."""
    view = {k: rec.get(k) for k in ("id", "job", "event", "url", "state", "attempts", "last_status", "last_error")}
    for k in ("created_at", "next_at", "last_at", "expires_at"):
        view[k] = rec.get(k)
    if view["state"] == "pending" and (rec.get("attempts") or 0) > 0:
        view["state"] = "retrying"
    return view


def redacted(view: dict) -> dict:
    """A delivery as a token other than an admin sees it: its URL cut to scheme, host and port (a receiver's URL
    may carry its own secret, and the host's own targets are the admin's to know)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(view.get("url") or "")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        short = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/…"
    except ValueError:
        short = "…"
    return {**view, "url": short}


def for_job(store, job_id: str) -> list[dict]:
    """The delivery records of one job, oldest first (at most 100)."""
    out = []
    for _, value in store.list_docs(prefix=f"{PREFIX}{job_id}/", limit=100):
        rec = load(value)
        if rec is not None:
            out.append(public_view(rec))
    return out


def listing(store, *, states: set[str], job: str | None, after: str, limit: int) -> tuple[list[dict], str | None]:
    """Records whose shown state is in `states` (pending, retrying, delivered, failed), of one job or all, in key
    order after the cursor `after` (a key); returns them and the next cursor (None at the end). Looks at no more
    than LIST_SCAN records per call, so a cursor may come back with fewer than `limit` matches."""
    prefix = f"{PREFIX}{job}/" if job else PREFIX
    found: list[dict] = []
    scanned = 0
    cursor = after
    while len(found) < limit and scanned < LIST_SCAN:
        page = store.list_docs(prefix=prefix, after=cursor, limit=min(1000, LIST_SCAN - scanned))
        if not page:
            return found, None
        for k, value in page:
            scanned += 1
            cursor = k
            rec = load(value)
            if rec is not None and public_view(rec)["state"] in states:
                found.append(public_view(rec))
                if len(found) >= limit:
                    break
    return found, cursor
