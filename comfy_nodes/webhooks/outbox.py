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

One thread runs it all on its own asyncio loop: the scan (store calls, quick) and the sends (aiohttp), at most
MAX_INFLIGHT at once and PER_TARGET to one host and port, each bounded by TOTAL_TIMEOUT, so receivers that never
answer hold up nothing but their own deliveries. It wakes every POLL seconds, and at once on kick() (the host
calls it when a job ends).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import threading
import time
from urllib.parse import urlsplit

import aiohttp

from ..api.views import summary_view
from . import deliveries, signing
from .targets import LABEL, parse_targets

log = logging.getLogger("comfymq.webhooks")

POLL = 1.0
TIMEOUT = 10.0  # per connect / read
TOTAL_TIMEOUT = 15.0  # one whole request and the answer's status line and headers (its body is not read)
BACKOFF = (5, 30, 120, 600, 1800, 3600)  # seconds after the 1st, 2nd, ... failed attempt (then 3600 each)
SCAN = 256  # outbox entries one pass looks at
MAX_INFLIGHT = 64  # sends at once
PER_TARGET = 4  # sends at once to one host and port: a receiver that never answers holds up only its own
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
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # set by kick() (any thread) and by a send that ended
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._inflight: set[str] = set()  # record keys being sent
        self._per_target: dict[str, int] = {}  # "host:port" -> sends in flight there
        self._made: set[str] = set()  # outbox keys whose records this process has made (or found made)
        self._thread = threading.Thread(target=self._run, name="comfymq-webhooks", daemon=True)
        self._last_prune = 0.0
        self._cursor = ""  # the outbox key the last pass ended at ("" = from the start)
        self.more = False
        self.sent = 0  # requests made (for tests and logs)

    @property
    def notify_all(self) -> bool:
        """Whether every job must be enqueued with notify=True (the host names targets of its own)."""
        return bool(self.host_targets)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Wakes the scan now (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closed: stopping
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the scan and the sends under way (a send cut short leaves its delivery pending: it is made again after
        the next start, with the same webhook-id; at least once)."""
        self._stop.set()
        self.kick()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def settle(self, job_id: str) -> None:
        """Makes the delivery records of the job's last ending now, if its outbox entry is still there: called before
        the job is deleted (the records name their targets, which the job's labels hold until then). The ending's
        key is in the job's notify/ document (its last ending's time)."""
        at = self.store.get_doc(f"notify/{job_id}")
        if not at:
            return
        key = f"outbox/{int(at):013d}-{job_id}"
        value = self.store.get_doc(key)
        if value is not None:
            ending = json.loads(value)
            self._make_records(job_id, ending["state"], key[len("outbox/") :], ending)
            self._made.add(key)

    # -- the scan --

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, sock_connect=TIMEOUT, sock_read=TIMEOUT)
        connector = aiohttp.TCPConnector(limit=MAX_INFLIGHT, limit_per_host=PER_TARGET, force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                while not self._stop.is_set():
                    self._wake.clear()
                    try:
                        self.run_once()
                    except Exception as e:  # noqa: BLE001 - a closed store ends it; anything else: next pass
                        if self._stop.is_set():
                            break
                        log.warning("webhook pass failed: %s", e)
                        self.more = False
                    if self.more:
                        await asyncio.sleep(0)  # (let sends run between passes)
                        continue
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except asyncio.TimeoutError:
                        pass
            finally:
                for task in list(self._tasks):
                    task.cancel()
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)

    def run_once(self) -> int:
        """One pass over the next SCAN outbox entries (round robin: a pass goes on after the last one's last entry,
        and from the start once it reached the end), so endings behind many undeliverable ones are not held back;
        returns how many sends it started. self.more: the pass stopped short of the end (the next one follows at
        once)."""
        started = 0
        page = self.store.list_docs(prefix="outbox/", after=self._cursor, limit=SCAN)
        self.more = len(page) == SCAN
        self._cursor = page[-1][0] if self.more else ""
        for key, value in page:
            if self._stop.is_set():
                break
            try:
                started += self._entry(key, value)
            except Exception as e:  # noqa: BLE001 - one entry that cannot be handled now holds up no other
                if self._stop.is_set():
                    break
                log.warning("webhook outbox entry %s: %s", key, e)
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
        """Starts sending one delivery (on the loop; called from the scan, in the loop's thread), unless it is being
        sent, or MAX_INFLIGHT sends run, or PER_TARGET run to its host and port (the next pass tries again)."""
        if self._loop is None:
            return 0
        parts = urlsplit(rec["url"])
        target = f"{(parts.hostname or '').lower()}:{parts.port}"
        if (
            rkey in self._inflight
            or len(self._inflight) >= MAX_INFLIGHT
            or self._per_target.get(target, 0) >= PER_TARGET
        ):
            return 0
        self._inflight.add(rkey)
        self._per_target[target] = self._per_target.get(target, 0) + 1
        task = self._loop.create_task(self._send(rkey, rec, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 1

    def _done(self, rkey: str, target: str) -> None:
        self._inflight.discard(rkey)
        left = self._per_target.get(target, 1) - 1
        if left > 0:
            self._per_target[target] = left
        else:
            self._per_target.pop(target, None)

    async def _send(self, rkey: str, rec: dict, target: str) -> None:
        try:
            now = now_ms()
            if now >= rec["expires_at"] and rec["attempts"] > 0:
                rec.update(state="failed", last_error=(rec.get("last_error") or "") + " (expired)")
                self.store.put_doc(rkey, json.dumps(rec))
                return
            body = json.dumps(self.payload(rec), separators=(",", ":")).encode()
            status, error = await self._post(
                rec["url"], body, signing.headers(self.secret, rec["id"], now // 1000, body)
            )
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
            self._done(rkey, target)
            if self._wake is not None:
                self._wake.set()  # its outbox entry may be done now

    async def _post(self, url: str, body: bytes, headers: dict) -> tuple[int | None, str | None]:
        """POSTs body to url once; (status, None) when an answer came, (None, why) when none did within
        TOTAL_TIMEOUT. Redirects are not followed (a 3xx is an answer that is not a 2xx); the answer's body is not
        read. A user:password in the URL is sent as Basic auth."""
        hdrs = {**headers, "user-agent": "ComfyMQ-Webhooks/1"}
        try:
            assert self._session is not None
            async with self._session.post(url, data=body, headers=hdrs, allow_redirects=False) as resp:
                status = resp.status
            return status, None if 200 <= status < 300 else f"HTTP {status}"
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            return None, f"no answer within {TOTAL_TIMEOUT:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return None, f"{type(e).__name__}: {e}"[:500]

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
