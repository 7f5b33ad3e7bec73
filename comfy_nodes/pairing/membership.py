"""This ComfyUI's place in a farm it joined from its panel ("Join a farm" / "Leave"), without a restart.

join() pairs with a host (client.pair), keeps the pairing in <data_dir>/paired-host.json (client.save), then calls
serve(paired): the plugin stops its worker bridge and starts one to the farm's broker with the paired keys.
leave() tells the host (client.tell_host: the key is unpaired there at once), forgets the file, and calls
serve(None): the bridge goes back to what the configuration says (in the default role, this ComfyUI's own queue).
A restart finds the same state: config.load_config takes a kept pairing (client.apply_paired).

Who may join (why_not() says why not, and join() refuses with it):
  - a worker-role ComfyUI, or one whose role is not set (the default `both`: its own queue stays on disk, and
    gets no worker of its own while it serves the farm);
  - not a ComfyUI whose role is set to host or both: a restart would not keep it a worker;
  - not one whose CURVE keys are configured: the configuration wins at the next start.

One join or leave at a time: a second one waits for the first (up to BUSY_WAIT seconds, then MembershipRefused);
each blocks for the exchange and the bridge swap (stopping a bridge may take seconds), so the routes run them off
the event loop. What view() says changes only once the swap is done: "joined" means serving that farm.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from . import client
from .client import Paired, PairingError

log = logging.getLogger("comfymq.pairing")

KEY_SETTINGS = ("broker_public_key", "worker_public_key", "worker_secret_key")
BUSY_WAIT = 30.0  # seconds a join or leave waits for the one under way


class MembershipRefused(Exception):
    """A join or leave that this ComfyUI cannot do now (the message says why); nothing changed."""


class Membership:
    def __init__(self, cfg, serve: Callable[[Paired | None], None]):
        """cfg: the plugin's Config (its set_by says who set each key); serve(paired): swaps the worker bridge
        (paired None: back to the configured one)."""
        self.cfg = cfg
        self.serve = serve
        self.set_by = cfg.set_by
        self._busy = threading.Lock()
        self._current: Paired | None = None
        try:
            self._current = client.load(cfg.data_dir)
        except ValueError as e:  # (load_config refused it already when it was read at start)
            log.warning("%s", e)

    @property
    def paired_file(self) -> Path:
        return client.paired_path(self.cfg.data_dir)

    def configured(self, key: str) -> str | None:
        """Where `key` was set by the user (a file or the environment), None when by nobody or by the pairing."""
        source = self.set_by.get(key)
        if source is None or source == f"in {self.paired_file}":
            return None
        return source

    def why_not(self) -> str | None:
        """Why this ComfyUI cannot join a farm (None when it can)."""
        role_source = self.configured("role")
        if role_source and self.cfg.role != "worker" and not self.joined:
            return (
                f"role is set to {self.cfg.role} ({role_source}): a ComfyUI joins a farm as a worker; set role = "
                "worker, or remove the setting, then join"
            )
        for key in KEY_SETTINGS:
            source = self.configured(key)
            if source:
                return f"this worker's keys are configured ({key} {source}): remove them to pair from the panel"
        return None

    @property
    def joined(self) -> Paired | None:
        return self._current

    def view(self) -> dict:
        """GET /comfymq/farm and the status's `farm`: {"joined": Paired.view() | None, "can_join", "why_not"}."""
        why = self.why_not()
        current = self._current
        return {"joined": current.view() if current else None, "can_join": why is None, "why_not": why}

    def join(
        self, host_url: str, code: str, *, name: str = "", fingerprint: str | None = None, timeout: float = 30.0
    ) -> dict:
        """Pairs with the host at host_url with `code`, keeps it, serves the farm. MembershipRefused when this
        ComfyUI may not join or is in a farm already, PairingError when the exchange fails (nothing is kept)."""
        if not self._busy.acquire(timeout=BUSY_WAIT):
            raise MembershipRefused("a join or leave is under way: wait for it")
        try:
            why = self.why_not()
            if why is not None:
                raise MembershipRefused(why)
            if self._current is not None:
                raise MembershipRefused(
                    f"this ComfyUI is in the farm at {self._current.host_url} already: leave it first"
                )
            paired = client.pair(
                host_url, code, name=name or self.cfg.worker_name, timeout=timeout, advertised_fingerprint=fingerprint
            )
            client.save(self.cfg.data_dir, paired)
            try:
                self.serve(paired)
            finally:
                self._current = paired  # (kept on disk: a restart serves it, whatever the swap did)
            log.info("ComfyMQ joined the farm at %s (fingerprint %s)", paired.host_url, paired.fingerprint)
            return self.view()
        finally:
            self._busy.release()

    def leave(self, *, timeout: float = 10.0) -> dict:
        """Tells the host (best effort), forgets the pairing, goes back to the configured bridge. Answers
        {"left": the pairing's view, "host_told": bool, "message"}; MembershipRefused when not in a farm."""
        if not self._busy.acquire(timeout=BUSY_WAIT):
            raise MembershipRefused("a join or leave is under way: wait for it")
        try:
            current = self._current
            if current is None:
                raise MembershipRefused("this ComfyUI is not in a farm it joined by pairing")
            try:
                client.tell_host(current, timeout=timeout)
                told, message = True, f"the host at {current.host_url} unpaired this worker"
            except PairingError as e:
                told = False
                message = (
                    f"the host at {current.host_url} could not be told ({e}): its admin can remove this worker's key "
                    "there (it is useless without the secret key, which is deleted here)"
                )
                log.warning("ComfyMQ leaving the farm: %s", message)
            client.forget(self.cfg.data_dir)
            try:
                self.serve(None)
            finally:
                self._current = None
            log.info("ComfyMQ left the farm at %s", current.host_url)
            return {"left": current.view(), "host_told": told, "message": message}
        finally:
            self._busy.release()


__all__ = ["Membership", "MembershipRefused", "PairingError"]
