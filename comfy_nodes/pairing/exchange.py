"""The pairing exchange's cryptography, for both sides (docs/pairing.md has it as a grammar).

SPAKE2 (the `spake2` package, Ed25519 group) with the code as the password: the worker is side A
(idA "comfymq-worker"), the host side B (idB "comfymq-host"). Each side sends one message; each derives a 32-byte
key that agrees only when both used the same code. Someone who sees or forwards the messages learns nothing of the
code, and one who takes part gets one guess per exchange, checked by the other side online (codes.py counts them).

From the SPAKE2 key, with HKDF-SHA256 salted with the transcript (a hash of the version, the session id and both
SPAKE2 messages), four keys: each side's confirmation key and each side's box key. As magic-wormhole does, each
side proves it holds the key before anything is trusted:

  worker confirm = HMAC-SHA256(worker confirm key, "worker" || transcript)
  host confirm   = HMAC-SHA256(host confirm key,   "host"   || transcript)

A box is ChaCha20-Poly1305 under that side's box key (12 random bytes of nonce, then the sealed JSON), the
transcript as associated data: the worker's carries its CURVE public key and name, the host's its broker's public
key and port. A message changed in flight, taken from another exchange or sent again fails the confirmation or the
box: BadMessage. Everything travels as base64 (standard alphabet) in JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

VERSION = 1
LABEL = b"comfymq-pairing-v1"
WORKER_ID, HOST_ID = b"comfymq-worker", b"comfymq-host"
MAX_MESSAGE = 4096  # bytes of any decoded field: SPAKE2 messages are 33, boxes a few hundred


class BadMessage(ValueError):
    """A pairing message that is malformed, tampered with, replayed, or made with another code."""


def normalize_code(code: str) -> bytes:
    """The password the code stands for: its digits (spaces and dashes typed between them are ignored).
    ValueError when it is not 6 digits."""
    digits = "".join(ch for ch in str(code) if ch not in " -")
    if len(digits) != 6 or not digits.isascii() or not digits.isdigit():
        raise ValueError("a pairing code is 6 digits, as the host shows it")
    return digits.encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE * 2:
        raise BadMessage(f"{what} must be base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadMessage(f"{what} is not valid base64") from None


def transcript(session: str, msg_worker: bytes, msg_host: bytes) -> bytes:
    h = hashlib.sha256(LABEL)
    for part in (session.encode(), msg_worker, msg_host):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


@dataclass(frozen=True)
class Keys:
    transcript: bytes
    worker_confirm: bytes
    host_confirm: bytes
    worker_box: bytes
    host_box: bytes

    @classmethod
    def derive(cls, shared: bytes, transcript_: bytes) -> Keys:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        def one(label: str) -> bytes:
            return HKDF(hashes.SHA256(), 32, salt=transcript_, info=LABEL + b" " + label.encode()).derive(shared)

        return cls(transcript_, one("worker confirm"), one("host confirm"), one("worker box"), one("host box"))

    def confirm(self, side: str) -> bytes:
        key = self.worker_confirm if side == "worker" else self.host_confirm
        return hmac.new(key, side.encode() + self.transcript, hashlib.sha256).digest()

    def check_confirm(self, side: str, given: bytes) -> None:
        if not hmac.compare_digest(self.confirm(side), given):
            raise BadMessage(f"the {side}'s confirmation does not match: another code, or a changed message")

    def seal(self, side: str, payload: dict) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        nonce = os.urandom(12)
        key = self.worker_box if side == "worker" else self.host_box
        data = json.dumps(payload, separators=(",", ":")).encode()
        return nonce + ChaCha20Poly1305(key).encrypt(nonce, data, self.transcript)

    def open(self, side: str, box: bytes) -> dict:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        key = self.worker_box if side == "worker" else self.host_box
        if len(box) < 12 + 16:
            raise BadMessage(f"the {side}'s key box is too short")
        try:
            data = ChaCha20Poly1305(key).decrypt(box[:12], box[12:], self.transcript)
            payload = json.loads(data)
        except InvalidTag:
            raise BadMessage(
                f"the {side}'s key box does not open: it was changed, or sealed under another key"
            ) from None
        except ValueError:
            raise BadMessage(f"the {side}'s key box holds no JSON") from None
        if not isinstance(payload, dict):
            raise BadMessage(f"the {side}'s key box holds no object")
        return payload


class Side:
    """One side's SPAKE2 state: Side("worker", code) or Side("host", code); .message is what it sends."""

    def __init__(self, side: str, code: str):
        from spake2 import SPAKE2_A, SPAKE2_B

        self.side = side
        cls = SPAKE2_A if side == "worker" else SPAKE2_B
        self._spake = cls(normalize_code(code), idA=WORKER_ID, idB=HOST_ID)
        self.message = self._spake.start()

    def finish(self, session: str, other: bytes) -> Keys:
        """The keys, from the other side's message; BadMessage when it is not a SPAKE2 message of the other side
        (a reflected one included)."""
        from spake2.spake2 import SPAKEError

        if len(other) > MAX_MESSAGE:
            raise BadMessage("the SPAKE2 message is too long")
        try:
            shared = self._spake.finish(other)
        except (SPAKEError, ValueError, TypeError, AssertionError) as e:
            raise BadMessage(f"not a SPAKE2 message of the other side ({type(e).__name__})") from None
        mine, theirs = (self.message, other) if self.side == "worker" else (other, self.message)
        return Keys.derive(shared, transcript(session, mine, theirs))


def fingerprint(public_key: str) -> str:
    """A broker public key's short form, shown on the host and checked on the worker: the first 8 bytes of its
    SHA-256 as 4 groups of 4 hex digits."""
    h = hashlib.sha256(public_key.encode("ascii")).hexdigest()[:16]
    return "-".join(h[i : i + 4] for i in range(0, 16, 4))
