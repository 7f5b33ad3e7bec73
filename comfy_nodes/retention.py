"""Retention: finished jobs past retention_days go, then the input files no kept job names (inputs/retention.py).

retention_pass() is one pass: it blocks (purges sync, the sweep reads kept jobs' prompts) and never raises (a
failure is logged; the next pass tries again). The standalone host runs it every hour on its thread pool
(host/standalone.py); inside ComfyUI a RetentionThread runs it every hour (plugin.py), since ComfyUI's own loop is
not ours to block.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .inputs.retention import sweep_unreferenced
from .inputs.store import DEFAULT_GRACE

log = logging.getLogger("comfymq.host")

EVERY = 3600.0  # seconds between passes


def retention_pass(service, days: float, input_grace: float = DEFAULT_GRACE) -> None:
    """Jobs finished more than `days` ago go (days > 0; 0 keeps every job), then the input files no kept job names
    whose last use is more than input_grace seconds ago, then the v2 asset records (and blake3 entries) over files
    that are gone."""
    if days > 0:
        try:
            removed = service.store.purge(older_than_days=days)
            if removed:
                log.info("retention: removed %d jobs finished more than %g days ago", removed, days)
        except Exception as e:  # noqa: BLE001 - keep serving; the next pass tries again
            log.warning("retention purge failed: %s", e)
    try:
        files, freed = sweep_unreferenced(service.inputs, service.store, input_grace)
        if files:
            log.info(
                "retention: removed %d input files (%d bytes) no kept job names, unused for %g h",
                files,
                freed,
                input_grace / 3600,
            )
    except Exception as e:  # noqa: BLE001 - as above
        log.warning("input sweep failed: %s", e)
    try:  # the v2 API's asset records over files swept now (api/v2/records.py)
        from .api.v2.records import V2Records

        gone = V2Records(Path(service.data_dir) / "v2").sweep(service.inputs)
        if gone:
            log.info("retention: removed %d v2 asset records whose files are gone", gone)
    except Exception as e:  # noqa: BLE001 - as above
        log.warning("v2 asset sweep failed: %s", e)


class RetentionThread:
    """Runs retention_pass() at once and then every `every` seconds on a daemon thread, until stop()."""

    def __init__(self, service, days: float, every: float = EVERY, input_grace: float = DEFAULT_GRACE):
        self._service, self._days, self._every, self._grace = service, days, every, input_grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfymq-retention", daemon=True)
        self.passes = 0  # passes finished (for tests and logs)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends it; a pass under way finishes first (up to timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            retention_pass(self._service, self._days, self._grace)
            self.passes += 1
            self._stop.wait(self._every)
