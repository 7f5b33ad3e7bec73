"""Webhook targets: where a job's endings go.

A request names them as `webhooks`: a list of URLs, or of {"url": URL, "events": [...]}; each URL http or https
with a host, at most MAX_URL_CHARS, no spaces or control characters, at most MAX_TARGETS per job. Events:
  job.succeeded, job.failed, job.cancelled     the job ended so (again after a retry)
  batch.finished                               every job of its batch has ended (sent with the last one's ending)
Absent `events` means all of them. The normalized form ([{"url", "events"}]) is kept in the job's labels under
LABEL, so it is committed with the job itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "batch.finished")
LABEL = "comfymq/webhooks"
MAX_TARGETS = 8
MAX_URL_CHARS = 2048


class WebhookError(ValueError):
    """A webhook target that cannot be used; the message says which and why."""


def check_url(url, where: str = "webhook") -> str:
    if not isinstance(url, str):
        raise WebhookError(f"{where}: a URL must be a string, got {type(url).__name__}")
    if not url or len(url) > MAX_URL_CHARS:
        raise WebhookError(f"{where}: a URL must be 1 to {MAX_URL_CHARS} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise WebhookError(f"{where}: the URL holds a space or a control character")
    if not url.isascii():
        raise WebhookError(
            f"{where}: the URL holds characters that are not ASCII: write the host in its xn-- (IDNA) form and "
            "percent-encode the rest"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as e:
        raise WebhookError(f"{where}: {url!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(f"{where}: only http and https URLs are called, not {parts.scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise WebhookError(f"{where}: {url!r} names no host")
    if port == 0:
        raise WebhookError(f"{where}: port 0 is not a port")
    return url


def parse_targets(value, where: str = "webhooks") -> list[dict]:
    """The normalized targets of a request's `webhooks` value (None or [] -> []). Raises WebhookError."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise WebhookError(f'{where} must be a list of URLs or of {{"url", "events"}} objects')
    if len(value) > MAX_TARGETS:
        raise WebhookError(f"{where} names {len(value)} targets: at most {MAX_TARGETS}")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            out.append({"url": check_url(item, at), "events": list(EVENTS)})
            continue
        if not isinstance(item, dict):
            raise WebhookError(f'{at} must be a URL or an object {{"url", "events"}}')
        unknown = sorted(set(item) - {"url", "events"})
        if unknown:
            raise WebhookError(f"{at}: unknown field {unknown[0]!r} (allowed: url, events)")
        events = item.get("events", list(EVENTS))
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise WebhookError(f"{at}: events must be a non-empty list of: {', '.join(EVENTS)}")
        bad = [e for e in events if e not in EVENTS]
        if bad:
            raise WebhookError(f"{at}: unknown event {bad[0]!r} (known: {', '.join(EVENTS)})")
        out.append({"url": check_url(item.get("url"), at), "events": [e for e in EVENTS if e in events]})
    return out


def merge(*lists: list[dict]) -> list[dict]:
    """Targets of several sources (job, template), one per URL (events joined), in first-seen order."""
    by_url: dict[str, set] = {}
    for targets in lists:
        for t in targets or ():
            by_url.setdefault(t["url"], set()).update(t["events"])
    return [{"url": u, "events": [e for e in EVENTS if e in ev]} for u, ev in by_url.items()][: MAX_TARGETS * 2]


def notify_for(service, targets: list[dict] | None = None) -> bool:
    """Whether a job must be enqueued with notify=True: it names targets, or the host tells its own of every job."""
    deliverer = getattr(service, "webhooks", None)
    return bool(targets) or bool(deliverer is not None and deliverer.notify_all)
