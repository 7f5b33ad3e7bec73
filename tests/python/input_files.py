"""Helpers for the end-to-end tests and the bench of input files that travel with jobs (test_inputs_e2e_more.py,
bench/input_latency.py): large files that are never held whole in memory, and the graph that reads one.

    sha = write_random_file(path, 200 << 20, seed=1)     # pseudo-random bytes, written 1 MiB at a time
    upload_file(base, path, "clip.mp4")                  # POST /comfymq/inputs, the file streamed as the body
    digest_graph({"comfymq_input": sha})                 # LoadVideo -> ProbeFileDigest (the stand-in's nodes)
"""

from __future__ import annotations

import hashlib
import json
import random
import urllib.parse
import urllib.request
from pathlib import Path

MIB = 1 << 20


def write_random_file(path: Path, size: int, seed: int) -> str:
    """Writes `size` pseudo-random bytes to path in 1 MiB pieces; returns their sha256."""
    rng, digest = random.Random(seed), hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(MIB, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def upload_file(base: str, path: Path, name: str) -> dict:
    """POST /comfymq/inputs?name=... with the file streamed as the raw body; the host's answer."""
    with open(path, "rb") as f:
        req = urllib.request.Request(
            f"{base}/comfymq/inputs?{urllib.parse.urlencode({'name': name})}",
            data=f,
            method="POST",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status == 200
            return json.loads(r.read())


def digest_graph(file, tag: str = "") -> dict:
    """LoadVideo names `file` (a reference, or a file in ComfyUI's input folder); ProbeFileDigest shows
    "<sha256> <size>" of what ComfyUI read (ui text of node "2"). Another `tag` defeats ComfyUI's cache."""
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": file}},
        "2": {"class_type": "ProbeFileDigest", "inputs": {"video": ["1", 0], "tag": tag}},
    }
