"""The host's webhook secret and the Standard Webhooks signature (standardwebhooks.com).

Every request carries
  webhook-id         the delivery's id: the same on every retry of it, so a receiver drops what it has seen
  webhook-timestamp  seconds since the epoch when this attempt was sent
  webhook-signature  "v1,<base64 HMAC-SHA256(secret, f'{id}.{timestamp}.{body}')>"
The secret is "whsec_<base64 of 32 random bytes>", made once per host and kept in <data_dir>/webhook-secret
(readable by the user only); GET /comfymq/webhooks shows it to a caller with the API's token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

PREFIX = "whsec_"


def load_or_make_secret(path: str | os.PathLike) -> str:
    """The secret kept at path, made there first (0600, written whole: temp file, fsync, rename) if missing."""
    path = Path(path)
    try:
        text = path.read_text("ascii").strip()
        if text.startswith(PREFIX) and len(base64.b64decode(text[len(PREFIX) :], validate=True)) >= 24:
            return text
    except (OSError, ValueError):
        pass
    text = PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    from ..durable import sync_dir

    sync_dir(path.parent)
    return text


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
