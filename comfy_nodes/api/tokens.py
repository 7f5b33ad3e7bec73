"""Tokens with a name (the owner) and a role, kept hashed in the store (documents), effective at once.

  token/<sha256 of the token, hex>   {"name", "role", "created_at"}      (the token itself is never stored)
  tokenname/<name>                   the sha256 hex of its token        (one token per name; revoke by name)

Roles and what they may do (PERMISSIONS): admin (everything), submit (queue jobs; see, cancel, retry and delete
its own jobs only), worker-admin (drain and rescan workers; read), read (every GET but secrets: dashboards). The
host's configured token (COMFYMQ_TOKEN) is an admin token named "admin". With no configured token and no stored
one ever stored the API is open (as before: the site rules still apply), and every request acts as admin; once
a token has been stored it stays closed, also after the last one is revoked (CLOSED).

TokenBook.resolve(header) says who a request is: a Principal, None (a token was needed and this is not one).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass

ROLES = ("admin", "submit", "worker-admin", "read")
PERMISSIONS = {
    "admin": {"read", "submit", "workers", "admin"},
    "submit": {"read", "submit"},
    "worker-admin": {"read", "workers"},
    "read": {"read"},
}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
PREFIX, NAME_PREFIX = "token/", "tokenname/"
CLOSED = "tokenbook/closed"  # written with the first stored token: the API never opens again by itself


ADMISSION_KEYS = ("max_pending", "max_jobs_per_request")  # checked when a request queues jobs (api/owners.py)
SHARE_KEYS = ("max_running", "weight")  # fair share in the store's dispatch (service.apply_owner_policies)
LIMIT_KEYS = ADMISSION_KEYS + SHARE_KEYS  # a token's own "limits"; each wins over the host's default


@dataclass(frozen=True)
class Principal:
    name: str | None  # the owner its jobs record (None: an open API's anonymous caller)
    role: str
    open: bool = False  # no token was needed (an open API)
    limits: tuple = ()  # (key, value) pairs of the token's own ADMISSION_KEYS limits, over the host's defaults

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, ())

    @property
    def sees_all(self) -> bool:
        """Whether it sees (and, with the permission, changes) every job, not only its own."""
        return self.role != "submit"


ADMIN = Principal("admin", "admin")
OPEN = Principal(None, "admin", open=True)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_limits(limits) -> dict:
    """A token's own limits, checked: max_pending, max_jobs_per_request, max_running (whole numbers, 0 for none)
    and weight (1..1000, its share of dispatch against other owners). ValueError naming the bad one."""
    if limits is None:
        return {}
    if not isinstance(limits, dict):
        raise ValueError("limits must be an object {" + ", ".join(LIMIT_KEYS) + "}")
    out = {}
    for k, v in limits.items():
        if k not in LIMIT_KEYS:
            raise ValueError(f"unknown limit '{str(k)[:64]}' (known: {', '.join(LIMIT_KEYS)})")
        low, high = {"weight": (1, 1000), "max_running": (0, 10**6)}.get(k, (0, 10**9))
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(
                f"weight must be a whole number from 1 to 1000, got {str(v)[:32]}"
                if k == "weight"
                else f"limit {k} must be a whole number from 0 (none) to {high}, got {str(v)[:32]}"
            )
        out[k] = v
    return out


class TokenBook:
    def __init__(self, store, admin_token: str | None = None):
        self.store = store
        self.admin_token = admin_token
        self.on_change: list = []  # called (no arguments) after a token is added, changed or revoked
        self._lock = threading.Lock()
        self._had_tokens = True  # the last answer the store gave (a store that cannot answer cannot change it)
        self._asked = 0.0  # when the store last gave it (monotonic)
        self.has_tokens()  # (the first answer, while the store is surely open)

    OPEN_RECHECK = 0.5  # seconds an "open" answer is reused (tokens added through this book close it at once)

    def has_tokens(self) -> bool:
        """Whether a request needs a token. Once a token has been stored the answer is yes for good (CLOSED), so it
        is kept in memory; an open API's answer is asked again after OPEN_RECHECK (another book on the same store
        may add one). A store that cannot be read (closed, or refusing after a failed write) cannot have had a token
        stored or revoked since it last answered: that answer holds."""
        if self.admin_token or (self._had_tokens and self._asked):
            return True
        now = time.monotonic()
        if self._asked and now - self._asked < self.OPEN_RECHECK:
            return self._had_tokens
        try:
            self._had_tokens = self.store.get_doc(CLOSED) is not None or bool(
                self.store.list_docs(prefix=PREFIX, keys_only=True, limit=1)
            )
            self._asked = now
        except Exception:  # noqa: BLE001 - see above
            pass
        return self._had_tokens

    def resolve(self, given: str | None) -> Principal | None:
        """Who presents `given` (the bearer token, None when the request has none)."""
        if given is None:
            return None if self.has_tokens() else OPEN
        if self.admin_token and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), self.admin_token.encode()
        ):
            return ADMIN
        if len(given) > 1024:
            return None
        try:
            text = self.store.get_doc(PREFIX + digest(given))
        except Exception:  # noqa: BLE001 - a store that cannot be read vouches for nobody
            return None if self.has_tokens() else OPEN
        if text is None:
            return None if self.has_tokens() else OPEN  # (a stale token on an open API: still open)
        try:
            rec = json.loads(text)
            limits = tuple(sorted((k, int(v)) for k, v in (rec.get("limits") or {}).items() if k in ADMISSION_KEYS))
            return Principal(rec["name"], rec["role"], limits=limits)
        except (ValueError, KeyError, TypeError):
            return None

    # -- managing them --

    def add(self, name: str, role: str, limits: dict | None = None) -> str:
        """A new token for `name` with `role` (and limits of its own: check_limits); the token itself (shown once).
        ValueError for a bad name, role or limit, FileExistsError when the name has one."""
        limits = check_limits(limits)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name == "admin":
            raise ValueError("a token's name is 1 to 64 of A-Z a-z 0-9 _ . @ - (and not 'admin', the host's own)")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        token = "cmq_" + secrets.token_urlsafe(32)
        h = digest(token)
        with self._lock:
            if not self.store.put_doc(NAME_PREFIX + name, h, only_if_absent=True):
                raise FileExistsError(f"'{name}' has a token already: revoke it first")
            self.store.put_doc(CLOSED, "1", only_if_absent=True)  # (before the token: never open with one stored)
            self._had_tokens, self._asked = True, time.monotonic()
            rec = {"name": name, "role": role, "created_at": int(time.time() * 1000)}
            if limits:
                rec["limits"] = limits
            self.store.put_doc(PREFIX + h, json.dumps(rec))
        self._changed()
        return token

    def set_limits(self, name: str, limits: dict) -> dict:
        """Replaces `name`'s own limits (check_limits; {} for the host's defaults), at once; returns them.
        LookupError when it has no token, ValueError for a bad limit."""
        limits = check_limits(limits)
        with self._lock:
            h = self.store.get_doc(NAME_PREFIX + name) if isinstance(name, str) and NAME_RE.fullmatch(name) else None
            text = self.store.get_doc(PREFIX + h) if h is not None else None
            if text is None:
                raise LookupError(f"no token named '{name}'")
            rec = json.loads(text)
            if limits:
                rec["limits"] = limits
            else:
                rec.pop("limits", None)
            self.store.put_doc(PREFIX + h, json.dumps(rec))
        self._changed()
        return limits

    def _changed(self) -> None:
        for fn in list(self.on_change):
            fn()

    def list(self) -> list[dict]:
        out = []
        for _, text in self.store.list_docs(prefix=PREFIX, limit=100_000):
            try:
                rec = json.loads(text)
                out.append(
                    {
                        "name": rec["name"],
                        "role": rec["role"],
                        "created_at": rec.get("created_at"),
                        "limits": rec.get("limits") or {},
                    }
                )
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda r: r["name"])

    def revoke(self, name: str) -> None:
        """Revokes `name`'s token at once (LookupError when it has none)."""
        with self._lock:
            h = self.store.get_doc(NAME_PREFIX + name) if isinstance(name, str) and NAME_RE.fullmatch(name) else None
            if h is None:
                raise LookupError(f"no token named '{name}'")
            try:
                self.store.delete_doc(PREFIX + h)  # first: from now on it opens nothing
            except KeyError:
                pass
            self.store.delete_doc(NAME_PREFIX + name)
        self._changed()
