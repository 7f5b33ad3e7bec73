"""The worker's side of pairing: makes its CURVE key pair, runs the exchange with a host over HTTP
(exchange.py), and keeps what it learned in its data folder:

  <data_dir>/paired-host.json   (mode 0600, written atomically: temp file, fsync, rename, fsync of the folder)
      {"version": 1, "host_url", "broker", "broker_public_key", "fingerprint", "worker_public_key",
       "worker_secret_key", "name", "paired_at" (ms), "leave_secret" (what tells the host this worker leaves)}

A worker started later uses it (apply_paired: the plugin's config, the CLI's `worker`) when no keys are configured;
a ComfyUI that pairs from its panel starts serving at once (membership.py). forget() removes it; tell_host() asks
the host to unpair the key first ("Leave").

Nothing the host says is trusted before it has proved it knows the code (its confirmation): a host that does not
know it (a spoofed advertisement, a man in the middle) gets nothing but one failed try of the code, and the worker
keeps nothing.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from . import exchange
from .book import Z85_KEY

FILE_NAME = "paired-host.json"
log = logging.getLogger("comfymq.pairing")


class PairingError(Exception):
    """Pairing did not happen; the message says why (and what to do)."""


@dataclass(frozen=True)
class Paired:
    host_url: str
    broker: str
    broker_public_key: str
    fingerprint: str
    worker_public_key: str
    worker_secret_key: str
    name: str
    paired_at: int
    version: int = 1
    leave_secret: str = ""  # (pairings made before it existed have none: the host's admin removes those)

    def view(self) -> dict:
        """What may be shown (no secret): host_url, broker, fingerprint, name, paired_at, worker_public_key."""
        return {
            "host_url": self.host_url,
            "broker": self.broker,
            "fingerprint": self.fingerprint,
            "name": self.name,
            "paired_at": self.paired_at,
            "worker_public_key": self.worker_public_key,
        }


MAX_ANSWER = 1 << 20  # bytes of a host's answer read at most


def _abort(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """The deadline passed: said first (fired), then the socket is shut, so whatever read waits on it returns."""
    fired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _post(url: str, body: dict, timeout: float) -> dict:
    """POSTs JSON and reads the JSON answer, all of it within `timeout` seconds (a host that trickles its answer
    is cut off at the deadline, not per read) and at most MAX_ANSWER bytes. PairingError when it does not answer
    2xx with a JSON object (the host's own message when it sent one)."""
    parts = urllib.parse.urlsplit(url)
    make = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = make(parts.hostname or "", parts.port, timeout=timeout)
    except (ValueError, OSError) as e:
        raise PairingError(f"cannot reach {url}: {e}") from None
    fired = threading.Event()
    deadline = threading.Timer(timeout, _abort, (conn, fired))
    deadline.daemon = True
    try:
        conn.connect()
        deadline.start()
        conn.request("POST", parts.path or "/", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        r = conn.getresponse()
        raw, status = r.read(MAX_ANSWER), r.status
        if fired.is_set():  # (a read cut short by the deadline returns what came)
            raise TimeoutError
    except (OSError, http.client.HTTPException, ValueError) as e:  # (TimeoutError is an OSError)
        late = fired.is_set()
        raise PairingError(f"cannot reach {url}: {'no answer within %g s' % timeout if late else e}") from None
    finally:
        deadline.cancel()
        conn.close()
    if not 200 <= status < 300:
        try:
            message = json.loads(raw[: 1 << 16])["error"]["message"]
        except Exception:  # noqa: BLE001 - not one of ours
            message = f"HTTP {status}"
        raise PairingError(f"the host refused: {message}")
    try:
        answer = json.loads(raw or b"null")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PairingError(f"{url} did not answer as a ComfyMQ host")
    return answer


def broker_address(host_url: str, port: int) -> str:
    """The broker's endpoint as this worker reaches it: the host's HTTP address's name, the broker's port."""
    host = urllib.parse.urlsplit(host_url).hostname or ""
    if not host:
        raise PairingError(f"{host_url} names no host")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def check_host_url(host_url: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+/?$", host_url or ""):
        raise PairingError(f"the host's address is an http(s) URL like http://host.lan:8188, not {host_url!r}")
    return host_url.rstrip("/")


def pair(
    host_url: str,
    code: str,
    *,
    name: str = "",
    timeout: float = 30.0,
    keypair=None,
    advertised_fingerprint: str | None = None,
) -> Paired:
    """Runs the exchange with the host at host_url (its HTTP address; the API is under /comfymq) with `code`.
    keypair: (public, secret) to pair, else a new one. PairingError when it does not pair.
    advertised_fingerprint: the one LAN discovery gave for this host (a hint): when the key the host proves has
    another, a warning says so (discovery.fingerprint_note); the pairing stands, as the host proved the code."""
    host_url = check_host_url(host_url)
    try:
        side = exchange.Side("worker", code)
    except ValueError as e:
        raise PairingError(str(e)) from None
    if keypair is None:
        from .. import native

        keypair = native.load().curve_keypair()
    public, secret = keypair
    base = host_url + "/comfymq/pairing"
    first = _post(base + "/start", {"version": exchange.VERSION, "msg": exchange.b64(side.message)}, timeout)
    try:
        session = first["session"]
        if not isinstance(session, str) or not 1 <= len(session) <= 256:
            raise exchange.BadMessage("the host's session is not one")
        keys = side.finish(session, exchange.unb64(first.get("msg"), "msg"))
    except (KeyError, exchange.BadMessage) as e:
        raise PairingError(f"the host's answer is not a pairing message: {e}") from None
    box = keys.seal("worker", {"public_key": public, "name": name})
    second = _post(
        base + "/finish",
        {"session": session, "confirm": exchange.b64(keys.confirm("worker")), "worker_key_box": exchange.b64(box)},
        timeout,
    )
    try:
        keys.check_confirm("host", exchange.unb64(second.get("confirm"), "confirm"))
    except exchange.BadMessage:
        raise PairingError(
            "the host did not prove it knows the code: it is not the host that showed it (nothing was kept)"
        ) from None
    try:
        info = keys.open("host", exchange.unb64(second.get("host_key_box"), "host_key_box"))
    except exchange.BadMessage as e:
        raise PairingError(f"the host's keys do not open: {e}") from None
    broker_key, port = info.get("broker_public_key"), info.get("broker_port")
    if not isinstance(broker_key, str) or not Z85_KEY.match(broker_key):
        raise PairingError("the host sent no broker public key")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise PairingError("the host sent no broker port")
    leave_secret = info.get("leave_secret")
    if not isinstance(leave_secret, str) or len(leave_secret) > 256:
        leave_secret = ""
    from .discovery import fingerprint_note

    note = fingerprint_note(advertised_fingerprint, exchange.fingerprint(broker_key))
    if note:
        log.warning("pairing with %s: %s", host_url, note)
    return Paired(
        host_url=host_url,
        broker=broker_address(host_url, port),
        broker_public_key=broker_key,
        fingerprint=exchange.fingerprint(broker_key),
        worker_public_key=public,
        worker_secret_key=secret,
        name=name,
        paired_at=int(time.time() * 1000),
        leave_secret=leave_secret,
    )


def tell_host(paired: Paired, timeout: float = 10.0) -> None:
    """Asks the host to unpair this worker's key (POST /comfymq/pairing/leave with the leave secret it sealed for
    it). PairingError when it cannot be told (unreachable, refused, or a pairing without a leave secret)."""
    if not paired.leave_secret:
        raise PairingError("this pairing has no leave secret (made by an older version): remove it in the host's panel")
    _post(
        paired.host_url + "/comfymq/pairing/leave",
        {"public_key": paired.worker_public_key, "secret": paired.leave_secret},
        timeout,
    )


# -- the file the worker keeps --


def paired_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / FILE_NAME


def save(data_dir: str | os.PathLike, paired: Paired) -> Path:
    """Writes the file (0600) atomically; the folder is made (0700) when missing. Returns its path."""
    folder = Path(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
    data = (json.dumps(asdict(paired), indent=2) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # (a temp file left by an earlier crash keeps its mode otherwise)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def load(data_dir: str | os.PathLike) -> Paired | None:
    """The pairing kept in data_dir, or None without one. ValueError for a file that is not one."""
    path = paired_path(data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        paired = Paired(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a pairing this version reads ({e}): pair again, or remove it") from None
    for key in (paired.broker_public_key, paired.worker_public_key, paired.worker_secret_key):
        if not isinstance(key, str) or not Z85_KEY.match(key):
            raise ValueError(f"{path} holds a key that is not one: pair again, or remove it")
    return paired


def forget(data_dir: str | os.PathLike) -> bool:
    """Removes the kept pairing ("Leave"); False when there was none."""
    try:
        paired_path(data_dir).unlink()
        return True
    except FileNotFoundError:
        return False


def apply_paired(cfg, where: dict) -> Path | None:
    """The config hook (config.load_config): when cfg.data_dir holds a pairing and the configuration names no keys
    (broker_public_key, worker_public_key, worker_secret_key), its keys and broker are used, its host_url unless
    one is configured, and the role becomes `worker` unless one is configured. Returns the file used, or None.
    ValueError for a file that is not a pairing."""
    if cfg.broker_public_key or cfg.worker_public_key or cfg.worker_secret_key:
        return None
    paired = load(cfg.data_dir)
    if paired is None:
        return None
    label = f"in {paired_path(cfg.data_dir)}"
    values = {
        "broker_public_key": paired.broker_public_key,
        "worker_public_key": paired.worker_public_key,
        "worker_secret_key": paired.worker_secret_key,
    }
    if "broker" not in where:
        values["broker"] = paired.broker
    if "host_url" not in where and cfg.host_url is None:
        values["host_url"] = paired.host_url
    if "role" not in where:
        values["role"] = "worker"
    for key, value in values.items():
        setattr(cfg, key, value)
        where[key] = label
    return paired_path(cfg.data_dir)
