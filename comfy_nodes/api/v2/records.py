"""What the v2 surface keeps beside the store, durably, in <data dir>/v2/ (each file written to a temp name, synced,
renamed, its folder synced). A v2 job's labels and the hash of the request an Idempotency-Key made it with are in
the job's own record (NewJob::labels), not here.

  assets/<asset id>.json            an uploaded asset: its blob (the input store's sha256), blake3, size,
                                    content type, file path, tags, creation time
  blake3/<b3[:2]>/<b3 hex>          the input store's sha256 of a blob whose blake3 is that (the v2 hash)

Both go with their file: the retention pass (retention.py) sweeps records over files the input store swept. An
upload kept as an asset lives, like any upload, while a kept job names it or for the grace after its last use.

Asset ids are content-derived: asset_<sha256 of (blob sha256, file path, content type)[:32]>, so minting the same
reference again finds the asset it made before (the contract's "identical reference already existed").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

ASSET_ID = re.compile(r"asset_[0-9a-f]{32}")  # (fullmatch only)
BLAKE3 = re.compile(r"blake3:([0-9a-f]{64})")  # (fullmatch only)


def write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class V2Records:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- assets --
    @staticmethod
    def asset_id(sha256: str, file_path: str, content_type: str) -> str:
        return "asset_" + hashlib.sha256(f"{sha256}\0{file_path}\0{content_type}".encode()).hexdigest()[:32]

    def _asset_path(self, asset_id: str) -> Path:
        if not ASSET_ID.fullmatch(asset_id):
            raise ValueError("not an asset id")
        return self.root / "assets" / f"{asset_id}.json"

    def put_asset(self, record: dict) -> None:
        write_durably(self._asset_path(record["id"]), json.dumps(record))

    def asset(self, asset_id: str) -> dict | None:
        try:
            return _read(self._asset_path(asset_id))
        except ValueError:
            return None

    def delete_asset(self, asset_id: str) -> bool:
        try:
            path = self._asset_path(asset_id)
        except ValueError:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _blake3_path(self, b3: str) -> Path:
        return self.root / "blake3" / b3[:2] / b3

    def put_blake3(self, b3: str, sha256: str) -> None:
        path = self._blake3_path(b3)
        if not path.exists():
            write_durably(path, sha256)

    def sha256_of_blake3(self, b3: str) -> str | None:
        try:
            text = self._blake3_path(b3).read_text().strip()
        except OSError:
            return None
        return text if re.fullmatch(r"[0-9a-f]{64}", text) else None

    def sweep(self, inputs) -> int:
        """Removes the asset records and blake3 entries whose file the input store no longer has (retention swept
        it); the number of asset records removed."""
        removed = 0
        for path in (self.root / "assets").glob("asset_*.json"):
            record = _read(path)
            sha = record.get("sha256") if record else None
            if not isinstance(sha, str) or inputs.stat(sha) is None:
                path.unlink(missing_ok=True)
                removed += 1
        for path in (self.root / "blake3").glob("*/*"):
            try:
                sha = path.read_text().strip()
            except OSError:
                continue
            if not re.fullmatch(r"[0-9a-f]{64}", sha) or inputs.stat(sha) is None:
                path.unlink(missing_ok=True)
        return removed
