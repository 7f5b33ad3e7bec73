"""Two network namespaces on a veth pair, with multicast routed between them, for tests of LAN discovery.

    with VethPair() as net:   # pytest.skip(reason) when `ip` is missing or the kernel/permissions refuse
        net.popen("a", [...])  # a process inside namespace a (10.199.<n>.1), net.run("b", [...]) inside b (.2)

Every namespace and link made is removed on exit (deleting a namespace removes its end of the veth pair).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


class VethPair:
    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.ns = {"a": f"cmq{tag}a", "b": f"cmq{tag}b"}
        self.link = {"a": f"cmq{tag}va", "b": f"cmq{tag}vb"}
        subnet = 10 + os.getpid() % 200
        self.address = {"a": f"10.199.{subnet}.1", "b": f"10.199.{subnet}.2"}
        self.made: list[str] = []

    def _must(self, *args: str) -> None:
        r = _ip(*args)
        if r.returncode != 0:
            self.close()
            pytest.skip(f"network namespaces refused here (`ip {' '.join(args)}`: {r.stderr.strip() or r.returncode})")

    def __enter__(self) -> VethPair:
        if shutil.which("ip") is None:
            pytest.skip("`ip` (iproute2) is not installed: no network namespaces to test in")
        for side in "ab":
            self._must("netns", "add", self.ns[side])
            self.made.append(self.ns[side])
        self._must("link", "add", self.link["a"], "type", "veth", "peer", "name", self.link["b"])
        for side in "ab":
            ns, link = self.ns[side], self.link[side]
            self._must("link", "set", link, "netns", ns)
            self._must("-n", ns, "addr", "add", f"{self.address[side]}/24", "dev", link)
            self._must("-n", ns, "link", "set", "lo", "up")
            self._must("-n", ns, "link", "set", link, "up", "multicast", "on")
            self._must("-n", ns, "route", "add", "224.0.0.0/4", "dev", link)
        return self

    def command(self, side: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def popen(self, side: str, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(side, argv), **kw)

    def run(self, side: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(side, argv), capture_output=True, text=True, **kw)

    def close(self) -> None:
        for ns in self.made:
            _ip("netns", "del", ns)
        self.made = []

    def __exit__(self, *exc) -> None:
        self.close()
