"""Who this worker is: its worker id and its installation id, kept in the data dir across restarts.

A worker id is made once (`<data_dir>/worker_id`) so that a restart finds its leases again. A copied ComfyUI
folder, or a disk image, would carry that file and make two workers say HELLO as one id. So the id is bound to
the place it was made: `<data_dir>/worker_install` holds a random installation id and a fingerprint of this
machine (/etc/machine-id) and of the data dir's real path. When the fingerprint no longer matches (the folder was
copied or moved elsewhere) a new worker id and installation id are made, and the log says so. An id set by hand
(COMFYMQ_WORKER_ID) is kept, but two installations using it while both run are refused by the broker as an id
clash, with what to do (native/src/net/broker_workers.cc).

The files are written atomically, readable by their owner only. Neither the installation id nor the fingerprint
is shown anywhere; the broker only compares installation ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("comfymq")

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


@dataclass(frozen=True)
class WorkerIdentity:
    worker_id: str
    install_id: str


def machine_id() -> str:
    """This machine's id where the OS keeps one (systemd's machine-id), else ""."""
    for name in _MACHINE_ID_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return ""


def fingerprint(data_dir: str | os.PathLike) -> str:
    """What a copy of the data dir does not share: the machine's id and the dir's real path."""
    where = os.path.realpath(data_dir)
    return hashlib.sha256(f"{machine_id()}\0{where}".encode()).hexdigest()[:32]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_fields(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def new_worker_id() -> str:
    return re.sub(r"[^A-Za-z0-9_.:@-]", "-", f"{socket.gethostname()[:48]}-{uuid.uuid4().hex[:8]}")


def worker_identity(data_dir: str | os.PathLike, explicit_id: str | None = None) -> WorkerIdentity:
    """This installation's worker id (explicit_id when given) and installation id, made or re-made as the module
    docstring says."""
    data = Path(data_dir)
    id_path, install_path = data / "worker_id", data / "worker_install"
    here = fingerprint(data) if data.exists() else None
    if here is None:
        data.mkdir(parents=True, exist_ok=True)
        here = fingerprint(data)
    try:
        kept_id = id_path.read_text().strip()
    except OSError:
        kept_id = ""
    fields = _read_fields(install_path)
    install = fields.get("install", "")
    copied = bool(install) and fields.get("bound") != here
    if copied or not re.fullmatch(r"[0-9a-f]{32}", install):
        if copied:
            log.warning(
                "ComfyMQ: %s was made for another machine or folder (a copied ComfyUI folder or disk image): "
                "this installation gets its own worker id%s",
                install_path,
                "" if explicit_id else " (the copied one stays with the original)",
            )
        install = secrets.token_hex(16)
        _write_private(install_path, f"install={install}\nbound={here}\n")
        if copied:
            kept_id = ""
    worker_id = explicit_id or kept_id
    if not worker_id:
        worker_id = new_worker_id()
    if not explicit_id and worker_id != kept_id:
        _write_private(id_path, worker_id + "\n")
    return WorkerIdentity(worker_id, install)
