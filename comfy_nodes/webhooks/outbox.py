"""The Deliverer: turns the store's outbox into signed webhook requests, at least once.

For each outbox/ document (a notify job's ending, committed with the ending itself) it
  1. makes the delivery records (deliveries.py) of every target that wants that event: the job's own targets
     (its labels, targets.LABEL) then the host's (config `webhooks`), and batch.finished ones when no job of the
     job's batch is pending or running any more (once per batch and URL: a webhookbatch/ marker);
     put with only_if_absent and with ids fixed by the ending, so doing it again after a crash makes nothing new;
  2. sends each record that is due (POST, JSON body, Standard Webhooks headers, at most TIMEOUT seconds, no
     redirects followed, at most 64 KiB of the answer read), recording the outcome: a 2xx -> delivered; anything
     else -> retried after BACKOFF (with jitter) until expires_at -> failed;
  3. removes the outbox document once every record it made has ended (delivered or failed).
A crash anywhere in between repeats a step, never skips one: a receiver may see a delivery twice (same
webhook-id), never not at all while it answers within the expiry.

One thread scans; sends run on a small pool. It wakes every POLL seconds, and at once on kick() (the host calls it
when a job ends).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ..api.views import summary_view
from . import deliveries, signing
from .targets import LABEL, parse_targets

log = logging.getLogger("comfymq.webhooks")

POLL = 1.0
TIMEOUT = 10.0  # per connect / read
TOTAL_TIMEOUT = 30.0  # one whole request and its answer
MAX_ANSWER = 64 << 10
BACKOFF = (5, 30, 120, 600, 1800, 3600)  # seconds after the 1st, 2nd, ... failed attempt (then 3600 each)
SCAN = 256  # outbox entries one pass looks at
SENDERS = 4
PRUNE_EVERY = 3600.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Deliverer:
    def __init__(
        self,
        store,
        secret: str,
        *,
        host_targets: list[dict] | None = None,
        base_url: str = "",
        expiry_hours: float = 24.0,
        prefix: str = "/comfymq",
        backoff: tuple = BACKOFF,
        poll: float = POLL,
    ):
        self.store = store
        self.secret = secret
        self.host_targets = parse_targets(host_targets or [], "config webhooks")
        self.base_url = base_url.rstrip("/")
        self.expiry_ms = int(expiry_hours * 3600 * 1000)
        self.prefix = prefix
        self.backoff = tuple(backoff)
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="comfymq-webhook")
        self._inflight: set[str] = set()  # record keys being sent
        self._made: set[str] = set()  # outbox keys whose records this process has made (or found made)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="comfymq-webhooks", daemon=True)
        self._last_prune = 0.0
        self.sent = 0  # requests made (for tests and logs)

    @property
    def notify_all(self) -> bool:
        """Whether every job must be enqueued with notify=True (the host names targets of its own)."""
        return bool(self.host_targets)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the scan --

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception as e:  # noqa: BLE001 - a closed store ends it; anything else: next pass
                if self._stop.is_set():
                    return
                log.warning("webhook pass failed: %s", e)
            self._wake.wait(self.poll)

    def run_once(self) -> int:
        """One pass over the outbox; returns how many sends it started."""
        started = 0
        for key, value in self.store.list_docs(prefix="outbox/", limit=SCAN):
            if self._stop.is_set():
                break
            started += self._entry(key, value)
        if time.monotonic() - self._last_prune > PRUNE_EVERY:
            self._last_prune = time.monotonic()
            self.prune()
        return started

    def _entry(self, key: str, value: str) -> int:
        try:
            ending = json.loads(value)
            job_id, state = ending["job"], ending["state"]
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed outbox entry %s", key)
            self.store.delete_doc(key)
            return 0
        suffix = key[len("outbox/") :]
        if key not in self._made:  # once per process: a crash half way through making them is made good here
            self._make_records(job_id, state, suffix, ending)
            self._made.add(key)
        records = self.store.list_docs(prefix=f"{deliveries.PREFIX}{job_id}/{suffix}.", limit=100)
        started, open_ = 0, 0
        now = now_ms()
        for rkey, rvalue in records:
            rec = deliveries.load(rvalue)
            if rec is None or rec.get("state") != "pending":
                continue
            open_ += 1
            if rec.get("next_at", 0) <= now:
                started += self._send_later(rkey, rec)
        if open_ == 0:
            try:
                self.store.delete_doc(key)
            except KeyError:
                pass
            self._made.discard(key)
        return started

    def _make_records(self, job_id: str, state: str, suffix: str, ending: dict) -> None:
        try:
            job = self.store.get(job_id, with_prompt=False)
        except KeyError:
            job = None
        own = []
        if job is not None:
            try:
                own = parse_targets((job.get("labels") or {}).get(LABEL), "job webhooks")
            except ValueError:
                own = []
        targets = own + [t for t in self.host_targets if t["url"] not in {o["url"] for o in own}]
        event = f"job.{state}"
        created = now_ms()
        made = []
        for n, t in enumerate(targets):
            if event in t["events"]:
                made.append((f"{suffix}.{n}", event, t["url"]))
            if "batch.finished" in t["events"] and job is not None and job.get("batch_id"):
                delivery_id = f"{suffix}.b{n}"
                if self._batch_finished(job["batch_id"], t["url"], deliveries.key(job_id, delivery_id)):
                    made.append((delivery_id, "batch.finished", t["url"]))
        # Marker of "nothing to send": an outbox entry with no record ends at once (next pass sees none open).
        for delivery_id, ev, url in made:
            rec = {
                "id": delivery_id,
                "job": job_id,
                "event": ev,
                "url": url,
                "state": "pending",
                "attempts": 0,
                "created_at": created,
                "next_at": created,
                "last_at": None,
                "last_status": None,
                "last_error": None,
                "expires_at": created + self.expiry_ms,
                "ended_at": ending.get("at"),
            }
            if ev == "batch.finished":
                rec["batch_id"] = job["batch_id"]
            self.store.put_doc(deliveries.key(job_id, delivery_id), json.dumps(rec), only_if_absent=True)

    def _batch_finished(self, batch_id: str, url: str, record_key: str) -> bool:
        """Whether this ending is the one that tells `url` its batch finished: no job of the batch is pending or
        running, and no other ending has claimed it (a webhookbatch/ marker naming the record it made)."""
        page = self.store.list(batch_id=batch_id, state=["pending", "running"], limit=1)
        if page["jobs"]:
            return False
        marker = "webhookbatch/" + hashlib.sha256(f"{batch_id}\n{url}".encode()).hexdigest()[:40]
        if self.store.put_doc(marker, json.dumps({"at": now_ms(), "record": record_key}), only_if_absent=True):
            return True
        claimed = deliveries.load(self.store.get_doc(marker) or "") or {}
        return claimed.get("record") == record_key  # ours, from before a crash

    # -- sending --

    def _send_later(self, rkey: str, rec: dict) -> int:
        with self._lock:
            if rkey in self._inflight:
                return 0
            self._inflight.add(rkey)
        try:
            self._pool.submit(self._send, rkey, rec)
        except RuntimeError:  # the pool is shut down: stopping
            with self._lock:
                self._inflight.discard(rkey)
            return 0
        return 1

    def _send(self, rkey: str, rec: dict) -> None:
        try:
            now = now_ms()
            if now >= rec["expires_at"] and rec["attempts"] > 0:
                rec.update(state="failed", last_error=(rec.get("last_error") or "") + " (expired)")
                self.store.put_doc(rkey, json.dumps(rec))
                return
            body = json.dumps(self.payload(rec), separators=(",", ":")).encode()
            status, error = post(rec["url"], body, signing.headers(self.secret, rec["id"], now // 1000, body))
            self.sent += 1
            rec["attempts"] += 1
            rec["last_at"] = now_ms()
            rec["last_status"] = status
            rec["last_error"] = error
            if status is not None and 200 <= status < 300:
                rec["state"] = "delivered"
            else:
                delay = self.backoff[min(rec["attempts"] - 1, len(self.backoff) - 1)] if self.backoff else 0
                next_at = rec["last_at"] + int(delay * 1000 * random.uniform(0.9, 1.1))
                if next_at >= rec["expires_at"]:
                    rec["state"] = "failed"
                    log.warning(
                        "webhook %s to %s failed for good after %d attempts: %s",
                        rec["id"],
                        rec["url"],
                        rec["attempts"],
                        error or status,
                    )
                rec["next_at"] = next_at
            self.store.put_doc(rkey, json.dumps(rec))
        except Exception as e:  # noqa: BLE001 - the record stays pending: the next pass tries again
            if not self._stop.is_set():
                log.warning("webhook %s: %s", rec.get("id"), e)
        finally:
            with self._lock:
                self._inflight.discard(rkey)
            self._wake.set()  # its outbox entry may be done now

    def payload(self, rec: dict) -> dict:
        at = rec.get("ended_at") or rec["created_at"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at / 1000)) + f".{at % 1000:03d}Z"
        if rec["event"] == "batch.finished":
            return {"type": rec["event"], "timestamp": stamp, "data": self._batch_data(rec["batch_id"])}
        try:
            job = self.store.get(rec["job"], with_prompt=False)
        except KeyError:
            return {"type": rec["event"], "timestamp": stamp, "data": {"id": rec["job"], "deleted": True}}
        data = summary_view(job, self.prefix)
        for a in data["artifacts"]:
            a["url"] = self.base_url + a["url"]
        data["url"] = f"{self.base_url}{self.prefix}/jobs/{job['id']}"
        data["metadata"] = {k: v for k, v in (job.get("labels") or {}).items() if not k.startswith("comfymq/")}
        return {"type": rec["event"], "timestamp": stamp, "data": data}

    def _batch_data(self, batch_id: str) -> dict:
        counts: dict[str, int] = {}
        ids: list[str] = []
        cursor = None
        while True:
            page = self.store.list(batch_id=batch_id, cursor=cursor, limit=1000, newest_first=False)
            for j in page["jobs"]:
                counts[j["state"]] = counts.get(j["state"], 0) + 1
                if len(ids) < 1000:
                    ids.append(j["id"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        return {
            "batch_id": batch_id,
            "count": sum(counts.values()),
            "counts": counts,
            "jobs": ids,
            "url": f"{self.base_url}{self.prefix}/batches/{batch_id}",
        }

    # -- upkeep --

    def prune(self, days: float = deliveries.RECORD_DAYS) -> int:
        """Removes ended delivery records and batch markers older than `days`; returns how many."""
        cutoff = now_ms() - int(days * 86400 * 1000)
        removed = 0
        for prefix in (deliveries.PREFIX, "webhookbatch/"):
            after = ""
            while True:
                page = self.store.list_docs(prefix=prefix, after=after, limit=1000)
                if not page:
                    break
                for k, v in page:
                    after = k
                    rec = deliveries.load(v) or {}
                    ended = rec.get("state", "delivered") != "pending"
                    if ended and (rec.get("last_at") or rec.get("created_at") or rec.get("at") or 0) < cutoff:
                        try:
                            self.store.delete_doc(k)
                            removed += 1
                        except KeyError:
                            pass
        return removed


def post(url: str, body: bytes, headers: dict) -> tuple[int | None, str | None]:
    """POSTs body to url once; (status, None) when an answer came, (None, why) when none did. Redirects are not
    followed (a 3xx is an answer that is not a 2xx)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        try:
            hdrs = dict(headers)
            hdrs["user-agent"] = "ComfyMQ-Webhooks/1"
            if parts.username is not None:
                import base64

                cred = f"{parts.username}:{parts.password or ''}".encode()
                hdrs["authorization"] = "Basic " + base64.b64encode(cred).decode()
            # The whole exchange within TOTAL_TIMEOUT: a receiver that trickles its answer gets cut off.
            watchdog = threading.Timer(TOTAL_TIMEOUT, _cut, (conn,))
            watchdog.start()
            try:
                conn.request("POST", path, body=body, headers=hdrs)
                resp = conn.getresponse()
                resp.read(MAX_ANSWER)
            finally:
                watchdog.cancel()
            return resp.status, None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"[:500]


def _cut(conn) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
