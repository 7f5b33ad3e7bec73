"""The host's one-time pairing codes, the limits on trying them, and the refusals it keeps for the panel.

One code is active at a time: issuing a new one voids the one before (an admin adding two workers gives each its
own code, one after the other). A code is 6 decimal digits from `secrets`, valid TTL seconds (10 minutes), and
used once: a successful pairing consumes it. It is only ever in this process's memory, never on disk.

Tries: every exchange started with a code takes one of its MAX_TRIES at once (an exchange that never finishes,
fails its confirmation or brings a replayed or tampered message keeps it), and the successful one gives it back
before the code is consumed. So however the messages are sent, replayed or interleaved, at most MAX_TRIES guesses
of a code are ever checked: one per exchange, online, as SPAKE2 allows nothing else (exchange.py). After
MAX_TRIES failed ones the code is void, and the right code is refused too.

Per source address at most PER_SOURCE attempts (starts and finishes) in WINDOW seconds, whatever the code's state;
the sources remembered are bounded (MAX_SOURCES, oldest forgotten first).

Every refusal is logged (warning) and kept, newest last, in a bounded list (MAX_REFUSALS): refusals().

Thread-safe (one lock); the clock is injectable for tests.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("comfymq.pairing")

TTL = 600.0  # seconds a code is valid
MAX_TRIES = 5  # exchanges one code may fail before it is void
PER_SOURCE = 20  # attempts per source address ...
WINDOW = 60.0  # ... in this many seconds
MAX_SOURCES = 4096
MAX_REFUSALS = 200
DIGITS = 6


class PairingRefused(Exception):
    """A pairing request refused: `status` and `type` for the HTTP answer, the message says why."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type = status, type_


@dataclass
class Code:
    code: str
    issued_at: float  # wall clock, seconds
    expires_at: float
    failures: int = 0  # exchanges that ended without pairing (or are still open: see `open`)
    open: int = 0  # exchanges started and not finished yet (each holds a try)
    used: bool = False
    void: bool = False

    @property
    def tries_left(self) -> int:
        return max(0, MAX_TRIES - self.failures - self.open)


class CodeBook:
    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._code: Code | None = None
        self._sources: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._refusals: collections.deque = collections.deque(maxlen=MAX_REFUSALS)

    # -- the admin's side --

    def issue(self) -> Code:
        """A new code, valid TTL seconds; the one before (if any) is void."""
        now = self._clock()
        code = Code(f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}", now, now + TTL)
        with self._lock:
            if self._code is not None and not self._code.used:
                self._code.void = True
            self._code = code
        log.info("pairing code issued (valid until %s)", time.strftime("%H:%M:%S", time.localtime(code.expires_at)))
        return code

    def current(self) -> dict | None:
        """The active code's state, without the code: {"expires_at" (ms), "tries_left"}; None when there is none."""
        with self._lock:
            c = self._code
            if c is None or c.used or c.void or self._clock() >= c.expires_at:
                return None
            return {"expires_at": int(c.expires_at * 1000), "tries_left": c.tries_left}

    def cancel(self) -> None:
        """Voids the active code (nothing pairs with it any more)."""
        with self._lock:
            if self._code is not None:
                self._code.void = True
            self._code = None

    # -- an exchange's side --

    def admit(self, source: str, what: str) -> None:
        """Counts one attempt from `source`; PairingRefused (429) past PER_SOURCE in WINDOW seconds."""
        now = time.monotonic()
        with self._lock:
            seen = self._sources.pop(source, None) or collections.deque()
            while seen and now - seen[0] > WINDOW:
                seen.popleft()
            self._sources[source] = seen  # (most recent last: the oldest are forgotten first)
            while len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
            if len(seen) >= PER_SOURCE:
                refused = f"{PER_SOURCE} pairing attempts from this address in {WINDOW:.0f} s: wait a minute"
            else:
                seen.append(now)
                return
        raise self.refuse(source, 429, "too_many_attempts", refused, what)

    def take(self, source: str) -> Code:
        """Starts an exchange with the active code: it holds one of the code's tries from now on. PairingRefused
        (410) when there is no usable code."""
        with self._lock:
            c = self._code
            if c is None:
                problem = "this host has no pairing code: make one on the host (panel or `pairing-code`)"
            elif c.used:
                problem = "the pairing code was used already: make a new one on the host"
            elif c.void:
                problem = f"the pairing code is void after {MAX_TRIES} failed tries: make a new one on the host"
            elif self._clock() >= c.expires_at:
                problem = "the pairing code has expired: make a new one on the host"
            elif c.tries_left == 0:
                problem = "every try of the pairing code is taken by exchanges still open: wait a minute"
            else:
                c.open += 1
                return c
        raise self.refuse(source, 410, "no_code", problem, "start")

    def fail(self, code: Code, source: str, reason: str, what: str = "finish") -> PairingRefused:
        """An exchange of `code` ended without pairing: its try is spent. Returns the refusal to raise."""
        with self._lock:
            code.open = max(0, code.open - 1)
            code.failures += 1
            if code.failures >= MAX_TRIES:
                code.void = True
            left = code.tries_left
        note = f"; the code is void now ({MAX_TRIES} failed tries)" if code.void else f"; {left} tries left"
        return self.refuse(source, 403, "pairing_failed", reason + note, what)

    def fail_current(self, source: str, reason: str, what: str) -> PairingRefused:
        """A message that belongs to no open exchange (a replayed or forged finish): it costs the active code a try."""
        with self._lock:
            c = self._code
            usable = c is not None and not (c.used or c.void) and self._clock() < c.expires_at
            if usable:
                c.open += 1
        if usable:
            return self.fail(c, source, reason, what)
        return self.refuse(source, 403, "pairing_failed", reason, what)

    def succeed(self, code: Code) -> None:
        """The exchange paired: the code is used up."""
        with self._lock:
            code.open = max(0, code.open - 1)
            code.used = True  # (kept as the active code: a later try hears it was used)

    # -- refusals --

    def refuse(self, source: str, status: int, type_: str, message: str, what: str) -> PairingRefused:
        """Logs and keeps a refusal; returns the exception for the caller to raise."""
        entry = {"at": int(self._clock() * 1000), "source": source, "step": what, "type": type_, "reason": message}
        with self._lock:
            self._refusals.append(entry)
        log.warning("pairing refused (%s from %s): %s", what, source, message)
        return PairingRefused(status, type_, message)

    def refusals(self) -> list[dict]:
        """The refusals kept, oldest first."""
        with self._lock:
            return list(self._refusals)
