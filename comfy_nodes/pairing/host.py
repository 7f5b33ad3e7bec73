"""The host's side of pairing: the exchanges in progress, between the one-time code (codes.py) and the paired
workers (book.py). The routes (routes.py) call start() and finish(); each raises PairingRefused (codes.py) with
the answer's status, after logging and keeping it.

Sessions: at most MAX_SESSIONS open at once, each for SESSION_TTL seconds; one not finished in time is dropped and
keeps the try it took of its code. finish() takes its session away first, so a replayed finish finds none (and costs
the code a try, like any message that belongs to no open exchange).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

from . import exchange
from .book import PairedBook, check_key, check_name
from .codes import Code, CodeBook, PairingRefused

log = logging.getLogger("comfymq.pairing")

MAX_SESSIONS = 32
SESSION_TTL = 60.0
START_FIELDS = {"version", "msg"}
FINISH_FIELDS = {"session", "confirm", "worker_key_box"}
LEAVE_FIELDS = {"public_key", "secret"}

NO_CURVE = (
    "this host's broker runs without CURVE, so a worker cannot pair with it (pairing hands out the broker's public "
    "key). Turn CURVE on: make keys with `python -m comfy_nodes keys`, set COMFYMQ_CURVE_SECRET_KEY (or "
    "--curve-secret-key=KEY on `python -m comfy_nodes host`) to the secret key it prints, and restart the host; its "
    "existing workers then need keys too (pair them, or set COMFYMQ_ALLOWED_WORKER_KEYS)"
)
NO_BROKER = "this host runs no broker (workers-bind off): there is nothing to pair with"


@dataclass
class Session:
    code: Code
    keys: exchange.Keys
    source: str
    opened: float  # monotonic


class PairingHost:
    def __init__(self, service, book: PairedBook, codes: CodeBook | None = None):
        self.service = service
        self.book = book
        self.codes = codes or CodeBook()
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    # -- what the host pairs with --

    def problem(self) -> str | None:
        """Why this host cannot pair workers now (None when it can)."""
        broker = self.service.broker
        if broker is None:
            return NO_BROKER
        if not broker.public_key:
            return NO_CURVE
        return None

    def fingerprint(self) -> str | None:
        broker = self.service.broker
        return exchange.fingerprint(broker.public_key) if broker is not None and broker.public_key else None

    def issue_code(self) -> dict:
        """A new one-time code (the one before is void): {"code", "expires_at" (ms), "fingerprint"}."""
        code = self.codes.issue()
        return {"code": code.code, "expires_at": int(code.expires_at * 1000), "fingerprint": self.fingerprint()}

    def overview(self) -> dict:
        problem = self.problem()
        broker = self.service.broker
        return {
            "enabled": problem is None,
            "problem": problem,
            "fingerprint": self.fingerprint(),
            "broker_public_key": broker.public_key if broker is not None and broker.public_key else None,
            "code": self.codes.current(),
            "workers": self.book.list(),
            "refusals": self.codes.refusals()[::-1],  # newest first
        }

    # -- the exchange --

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [(sid, s) for sid, s in self._sessions.items() if now - s.opened > SESSION_TTL]
            for sid, _ in expired:
                del self._sessions[sid]
        for _, s in expired:
            self.codes.fail(s.code, s.source, "the exchange was not finished in time", "expire")

    def start(self, source: str, body: dict) -> dict:
        """The host's SPAKE2 message for the worker's: {"session", "msg", "version"}."""
        self.codes.admit(source, "start")
        self._sweep()
        extra = set(body) - START_FIELDS
        if extra:
            raise self.codes.refuse(source, 400, "invalid_request", f"unknown field '{sorted(extra)[0][:64]}'", "start")
        if body.get("version", exchange.VERSION) != exchange.VERSION:
            raise self.codes.refuse(
                source, 400, "unsupported_version", f"this host speaks pairing version {exchange.VERSION}", "start"
            )
        try:
            msg = exchange.unb64(body.get("msg"), "msg")
        except exchange.BadMessage as e:
            raise self.codes.refuse(source, 400, "invalid_request", str(e), "start") from None
        with self._lock:
            full = len(self._sessions) >= MAX_SESSIONS
        if full:
            raise self.codes.refuse(source, 429, "too_many_attempts", "too many pairing exchanges open: wait", "start")
        code = self.codes.take(source)
        session = secrets.token_urlsafe(18)
        side = exchange.Side("host", code.code)
        try:
            keys = side.finish(session, msg)
        except exchange.BadMessage as e:
            raise self.codes.fail(code, source, str(e), "start") from None
        with self._lock:
            self._sessions[session] = Session(code, keys, source, time.monotonic())
        return {"version": exchange.VERSION, "session": session, "msg": exchange.b64(side.message)}

    def finish(self, source: str, body: dict) -> dict:
        """Checks the worker's confirmation, pairs the key its box carries, answers the host's confirmation and box:
        {"confirm", "host_key_box"}."""
        self.codes.admit(source, "finish")
        self._sweep()
        if set(body) != FINISH_FIELDS:
            raise self.codes.refuse(
                source, 400, "invalid_request", "the body is {session, confirm, worker_key_box}", "finish"
            )
        with self._lock:
            s = self._sessions.pop(body["session"], None) if isinstance(body["session"], str) else None
        if s is None:
            raise self.codes.fail_current(
                source, "no open exchange has this session (a replayed, forged or expired message)", "finish"
            )
        if s.source != source:  # (the same exchange from another address: refused, not looked into)
            raise self.codes.fail(s.code, source, "the exchange was started from another address")
        try:
            s.keys.check_confirm("worker", exchange.unb64(body["confirm"], "confirm"))
            payload = s.keys.open("worker", exchange.unb64(body["worker_key_box"], "worker_key_box"))
            public_key, name = check_key(payload.get("public_key")), check_name(payload.get("name"))
        except (exchange.BadMessage, ValueError) as e:
            raise self.codes.fail(s.code, source, str(e)) from None
        problem = self.problem()
        if problem is not None:  # (the broker went away in the meantime)
            raise self.codes.fail(s.code, source, problem)
        broker = self.service.broker
        leave_secret = secrets.token_urlsafe(32)  # the worker's proof when it leaves (leave()); kept hashed
        try:
            self.book.add(public_key, name, source, leave_secret=leave_secret)
        except Exception as e:  # noqa: BLE001 - the store refused: the worker is told, the code keeps a try spent
            log.exception("pairing: could not keep the worker's key")
            raise self.codes.fail(s.code, source, f"the host could not keep the key: {e}") from None
        self.codes.succeed(s.code)
        port = broker.endpoint.rsplit(":", 1)[-1]
        box = s.keys.seal(
            "host",
            {
                "broker_public_key": broker.public_key,
                "broker_endpoint": broker.endpoint,
                "broker_port": int(port) if port.isdigit() else None,
                "fingerprint": self.fingerprint(),
                "leave_secret": leave_secret,
            },
        )
        return {"confirm": exchange.b64(s.keys.confirm("host")), "host_key_box": exchange.b64(box)}

    def unpair(self, public_key: str) -> None:
        self.book.remove(public_key)

    def leave(self, source: str, body: dict) -> dict:
        """A paired worker leaving ("Leave" in its panel): {"public_key", "secret"} with the leave secret this host
        sealed in its box when it paired. Unpairs the key at once (book.remove); a wrong secret or a key that is not
        paired is refused (403, the same answer for both, logged and kept) and changes nothing."""
        self.codes.admit(source, "leave")
        if set(body) != LEAVE_FIELDS or not all(isinstance(body[k], str) for k in LEAVE_FIELDS):
            raise self.codes.refuse(source, 400, "invalid_request", "the body is {public_key, secret}", "leave")
        key, secret = body["public_key"], body["secret"]
        if not self.book.check_leave_secret(key, secret):
            raise self.codes.refuse(
                source, 403, "forbidden", "no paired worker has this key and leave secret: nothing changed", "leave"
            )
        try:
            self.book.remove(key)
        except LookupError:  # (removed in the meantime)
            pass
        log.info("paired worker key %s left from %s", key, source)
        return {"left": key, "still_allowed": key in self.book.configured}


__all__ = ["PairingHost", "PairingRefused"]
