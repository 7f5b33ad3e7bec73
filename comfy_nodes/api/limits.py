"""How much one HTTP request may ask of the host: body size, jobs and stored bytes, and how long its body may take.

    RequestLimits()                                   the defaults below
    RequestLimits(max_jobs_per_request=500)           raises ValueError naming the field when a value is out of range

Every limit is per request; a refusal is a JSON error naming the limit (413 too large, 408 too slow). Pure data,
no aiohttp: the configuration checks values with it too. An upload (POST /comfymq/inputs) is bounded by
max_input_bytes instead of max_body_bytes (it goes to disk as it arrives), and may take http_body_timeout plus
one second per MiB it sent (api/input_routes.py).

Why these defaults (measured with bench/http_memory.py and tests/python/test_http_amplification.py, a real host
process): the store's enqueue_many holds every job's prompt and workflow text of one request at once (one commit,
all or none), and the host's peak memory grows by 2 to 3.5 bytes per byte one request stores. At these defaults
the largest requests peak a host at 175-265 MiB (idle: 42); under the old bound (512 MiB of prompt bytes, workflows
not counted) one 47 KB prompt with count 10000 peaked it at 0.9-1.3 GiB, depending on how well the text
compresses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = 64 * MIB  # one request body
    max_jobs_per_request: int = 10000  # jobs one request may create (count x sweep combinations)
    max_stored_bytes_per_request: int = 64 * MIB  # prompt + workflow bytes one request may store, over all its jobs
    max_input_bytes: int = 2 * GIB  # one file uploaded to POST /comfymq/inputs (streamed to disk, never held)
    http_read_timeout: float = 30.0  # seconds a body may go without sending a byte
    http_body_timeout: float = 300.0  # seconds a whole body may take

    def __post_init__(self):
        for name, low, high in (
            ("max_body_bytes", 1024, 1 << 40),
            ("max_jobs_per_request", 1, 100000),
            ("max_stored_bytes_per_request", 1024, 1 << 40),
            ("max_input_bytes", 1024, 1 << 40),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
        for name in ("http_read_timeout", "http_body_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and 0 < value <= 86400)
            ):
                raise ValueError(f"{name} must be more than 0 and at most 86400 seconds, got {value!r}")

    @classmethod
    def from_config(cls, cfg) -> "RequestLimits":
        """The limits named in a Config (or anything with these attributes)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})
