"""The host's paired workers, kept as store documents, and the broker's allow-list they feed.

  paired/<worker public key, Z85>   {"public_key", "name", "paired_at" (ms), "source" (the address it paired from),
                                     "leave_hash" (SHA-256 hex of the secret the worker proves it is leaving with;
                                     never listed)}

The allow-list is always the configured keys (`allowed_worker_keys`, and in the plugin's `both` role its local
worker's key: BrokerSettings.allowed_worker_keys) followed by every paired key. QueueService gives it to the broker
when it starts; add() and remove() give it again through Broker.set_allowed_keys, effective at once (a removed key's
connected worker is dropped, its jobs go back to the queue, and it cannot connect again). A paired key that is also
configured stays allowed after remove(): the configuration says so.

Thread-safe: one lock around each change and its apply.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time

log = logging.getLogger("comfymq.pairing")

PREFIX = "paired/"
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
MAX_NAME = 64
MAX_PAIRED = 10_000


def check_key(key) -> str:
    if not isinstance(key, str) or not Z85_KEY.match(key):
        raise ValueError("a worker's public key is a 40-character Z85 CURVE key")
    return key


def check_name(name) -> str:
    if name is None or name == "":
        return ""
    if not isinstance(name, str) or len(name) > MAX_NAME or any(not c.isprintable() for c in name):
        raise ValueError(f"a worker's name is at most {MAX_NAME} printable characters")
    return name.strip()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


class PairedBook:
    def __init__(self, store, configured_keys: list[str] | None = None, broker=None):
        self.store = store
        self.configured = list(dict.fromkeys(configured_keys or []))
        self.broker = broker  # set by QueueService once its broker runs (None: nothing to apply)
        self._lock = threading.Lock()

    def list(self) -> list[dict]:
        out = []
        for _, text in self.store.list_docs(prefix=PREFIX, limit=MAX_PAIRED):
            try:
                rec = json.loads(text)
                out.append({k: rec.get(k) for k in ("public_key", "name", "paired_at", "source")})
            except (ValueError, TypeError, AttributeError):
                continue
        for rec in out:
            rec["configured"] = rec["public_key"] in self.configured
        return sorted(out, key=lambda r: r.get("paired_at") or 0)

    def keys(self) -> list[str]:
        return [k[len(PREFIX) :] for k, _ in self.store.list_docs(prefix=PREFIX, keys_only=True, limit=MAX_PAIRED)]

    def allowed(self) -> list[str]:
        """The allow-list: the configured keys, then the paired ones."""
        return list(dict.fromkeys(self.configured + self.keys()))

    def add(self, public_key: str, name: str, source: str, leave_secret: str | None = None) -> dict:
        """Pairs a worker key (again: its record is replaced) and applies the allow-list. leave_secret: what the
        worker may later leave with (check_leave_secret); kept as its hash only."""
        rec = {
            "public_key": check_key(public_key),
            "name": check_name(name),
            "paired_at": int(time.time() * 1000),
            "source": str(source)[:128],
        }
        if leave_secret:
            rec["leave_hash"] = _hash(leave_secret)
        with self._lock:
            if len(self.keys()) >= MAX_PAIRED and self.store.get_doc(PREFIX + public_key) is None:
                raise ValueError(f"this host has {MAX_PAIRED} paired workers: remove some first")
            self.store.put_doc(PREFIX + public_key, json.dumps(rec))  # durable first, then effective
            self.apply()
        log.info("paired worker %r (key %s) from %s", rec["name"], public_key, source)
        return rec

    def check_leave_secret(self, public_key: str, secret: str) -> bool:
        """Whether `public_key` is paired with the leave secret `secret` (compared in constant time)."""
        if not isinstance(public_key, str) or not Z85_KEY.match(public_key) or not isinstance(secret, str):
            return False
        text = self.store.get_doc(PREFIX + public_key)
        try:
            kept = json.loads(text).get("leave_hash") if text else None
        except (ValueError, AttributeError):
            kept = None
        return isinstance(kept, str) and hmac.compare_digest(kept, _hash(secret[:256]))

    def remove(self, public_key: str) -> None:
        """Unpairs a key at once (LookupError when it is not paired)."""
        with self._lock:
            if not isinstance(public_key, str) or self.store.get_doc(PREFIX + public_key) is None:
                raise LookupError("no paired worker has this key")
            self.store.delete_doc(PREFIX + public_key)
            self.apply()
        log.info("unpaired worker key %s", public_key)

    def apply(self) -> bool:
        """Gives the broker the allow-list; False when it cannot take one at run time (no broker, no CURVE, or a
        native module without set_allowed_keys: the list then takes effect at the next start)."""
        broker = self.broker
        if broker is None or not getattr(broker, "public_key", None):
            return False
        setter = getattr(broker, "set_allowed_keys", None)
        if setter is None:
            log.warning("this build's broker cannot change its allowed keys at run time: the change applies at restart")
            return False
        setter(self.allowed())
        return True
