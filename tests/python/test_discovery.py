"""LAN discovery (comfy_nodes/pairing/discovery.py): a host advertised here is found by browse(); a standalone host
in one network namespace is found (and paired with) from another across a veth pair; a spoofed advertisement of
the same name with another key is listed beside the real one and pairing against it without its code pairs
nothing; what is malformed is left out; a host on loopback only, without CURVE, or with discovery off does not
advertise; GET /comfymq/pairing/discover in every role. Multicast or namespaces the sandbox refuses are skipped
with the reason."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from comfy_nodes import _native as native
from comfy_nodes.pairing import client as pairing_client
from comfy_nodes.pairing import discovery
from comfy_nodes.pairing.exchange import fingerprint

sys.path.insert(0, str(Path(__file__).parent))
from netns import VethPair  # noqa: E402
from test_pairing import ADMIN, TOKEN, broker_keys, curve_service  # noqa: E402, F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not native.curve_available(), reason="libzmq without CURVE")


def multicast_refused() -> str | None:
    """Why multicast sent from this machine does not come back to it (None when it does)."""
    group, port = "239.255.77.77", 40000 + os.getpid() % 20000
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as e:
        return f"no UDP socket: {e}"
    with rx, tx:
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", port))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4sl", socket.inet_aton(group), 0))
            rx.settimeout(1.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"ping", (group, port))
            rx.recvfrom(16)
        except OSError as e:
            return f"multicast does not loop back on this machine ({e})"
    return None


def advertiser(name: str, key: str, addresses: list[str], instance: str = "") -> discovery.Advertiser:
    fp = fingerprint(key)
    a = discovery.Advertiser(
        name=name, port=8190, fingerprint=fp, version="9.9.9", addresses=addresses, instance=instance
    )
    return a.start()


# ---- (a) advertise and browse on this machine ---------------------------------------------------------------


def test_a_host_advertised_here_is_found_with_its_name_address_port_fingerprint_and_version():
    reason = multicast_refused()
    if reason:
        pytest.skip(reason)
    addresses = discovery.local_addresses(["0.0.0.0"])
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to advertise")
    name, key = f"farm-{uuid.uuid4().hex[:8]}", native.curve_keypair()[0]
    a = advertiser(name, key, addresses[:1])
    try:
        assert a.registered.wait(15), a.error
        found = [f for f in discovery.browse(2.0) if f.name == name]
        assert len(found) == 1, found
        f = found[0]
        assert (f.addresses, f.port, f.fingerprint, f.version) == (addresses[:1], 8190, fingerprint(key), "9.9.9")
        assert f.path == "/comfymq" and f.urls == [f"http://{addresses[0]}:8190"]
    finally:
        a.close()


# ---- (b) two network namespaces on a veth pair ----------------------------------------------------------------


def _discover(net: VethPair, env: dict, timeout: float = 3.0) -> list[dict]:
    r = net.run("b", [sys.executable, "-m", "comfy_nodes", "discover", "--timeout", str(timeout), "--json"],
                cwd=REPO, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.subprocess
def test_a_host_in_one_namespace_is_found_and_paired_with_from_another(tmp_path, subprocess_env):
    pub, sec = native.curve_keypair()
    with VethPair() as net:
        host_url = f"http://{net.address['a']}:8190"

        def host(*more: str) -> subprocess.Popen:
            argv = [sys.executable, "-m", "comfy_nodes", "host", "--host", "0.0.0.0", "--port", "8190",
                    "--data-dir", str(tmp_path / "host"), "--workers-bind", "tcp://0.0.0.0:5557",
                    f"--curve-secret-key={sec}", *more]  # fmt: skip
            log = open(tmp_path / "host.log", "a")  # noqa: SIM115 - closed with the process
            return net.popen("a", argv, cwd=REPO, env=subprocess_env, stdout=log, stderr=log)

        proc = host()
        try:
            found: list[dict] = []
            end = time.monotonic() + 30
            while time.monotonic() < end and not found:
                found = [f for f in _discover(net, subprocess_env) if f["fingerprint"] == fingerprint(pub)]
            assert found, (tmp_path / "host.log").read_text()[-3000:]
            f = found[0]
            assert f["addresses"] == [net.address["a"]] and f["port"] == 8190 and f["urls"] == [host_url]
            # the worker in b pairs with the address it found, with the code the host shows
            code = net.run("a", [sys.executable, "-m", "comfy_nodes", "pairing-code", "--host-url", host_url],
                           cwd=REPO, env=subprocess_env, timeout=60)  # fmt: skip
            assert code.returncode == 0, code.stderr
            paired = net.run("b", [sys.executable, "-m", "comfy_nodes", "pair", "--host", f["urls"][0],
                                   "--code", code.stdout.strip(), "--fingerprint", f["fingerprint"],
                                   "--data-dir", str(tmp_path / "w")], cwd=REPO, env=subprocess_env, timeout=60)  # fmt: skip
            assert paired.returncode == 0, paired.stderr
            assert "warning" not in paired.stderr
            assert pairing_client.load(tmp_path / "w").broker_public_key == pub
        finally:
            proc.terminate()
            proc.wait(20)
        # --no-discovery: the same host is not advertised
        proc = host("--no-discovery")
        try:
            time.sleep(3)  # (time enough to have announced itself)
            assert [f for f in _discover(net, subprocess_env) if f["fingerprint"] == fingerprint(pub)] == []
            assert "discovery is turned off" in (tmp_path / "host.log").read_text()
        finally:
            proc.terminate()
            proc.wait(20)


# ---- (c) a spoofed advertisement: the same name, another key --------------------------------------------------


def test_a_spoofed_advertisement_is_listed_beside_the_real_one_not_in_its_place():
    reason = multicast_refused()
    if reason:
        pytest.skip(reason)
    addresses = discovery.local_addresses(["0.0.0.0"])[:1]
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to advertise")
    name = f"farm-{uuid.uuid4().hex[:8]}"
    real_key, fake_key = native.curve_keypair()[0], native.curve_keypair()[0]
    real = advertiser(name, real_key, addresses)
    try:
        assert real.registered.wait(15), real.error
        # another machine that shows the same name (its DNS-SD instance is its own: one instance name is one
        # service on the LAN, and mDNS caches keep the latest answer for it)
        fake = advertiser(name, fake_key, addresses, instance=f"{name} (2)")
        try:
            assert fake.registered.wait(15), fake.error
            found = [f for f in discovery.browse(2.5) if f.name == name]
            assert sorted(f.fingerprint for f in found) == sorted([fingerprint(real_key), fingerprint(fake_key)])
            assert len({f.instance for f in found}) == 2
        finally:
            fake.close()
    finally:
        real.close()


@pytest.fixture
def fake_service(tmp_path):
    """The attacker's own host: a real ComfyMQ host with another broker key and a code of its own."""
    from comfy_nodes.service import BrokerSettings, QueueService

    svc = QueueService(
        tmp_path / "fake",
        threads=4,
        broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2, curve_secret_key=native.curve_keypair()[1]),
    )
    try:
        yield svc
    finally:
        svc.close()


async def _serve(app: web.Application):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_pairing_with_the_spoofed_host_without_its_code_pairs_nothing(
    tmp_path,
    curve_service,  # noqa: F811 (the fixture)
    fake_service,
    caplog,
):
    from comfy_nodes.host.standalone import build_app

    real_runner, real_url = await _serve(build_app(curve_service, token=TOKEN))
    fake_runner, fake_url = await _serve(build_app(fake_service, token=TOKEN))
    try:
        code = curve_service.pairing.issue_code()["code"]
        fake_code = fake_service.pairing.issue_code()["code"]
        if fake_code == code:  # (one in a million: the fake's own code must differ from the one the user types)
            fake_code = fake_service.pairing.issue_code()["code"]
        fake_fp = fake_service.pairing.fingerprint()
        # the user picked the fake advertisement and typed the real host's code
        with pytest.raises(pairing_client.PairingError):
            await asyncio.to_thread(pairing_client.pair, fake_url, code, advertised_fingerprint=fake_fp)
        assert fake_service.paired.keys() == [] and curve_service.paired.keys() == []
        assert not (tmp_path / pairing_client.FILE_NAME).exists()
        assert fake_service.pairing.codes.current()["tries_left"] == 4, "it took one guess, and learned nothing"
        # the real host pairs with that code; the advertised (fake) fingerprint differs and the worker is told
        with caplog.at_level(logging.WARNING, logger="comfymq.pairing"):
            paired = await asyncio.to_thread(pairing_client.pair, real_url, code, advertised_fingerprint=fake_fp)
        assert paired.broker_public_key == curve_service.broker.public_key
        assert f"not {fake_fp} as advertised" in caplog.text
    finally:
        await real_runner.cleanup()
        await fake_runner.cleanup()


# ---- (d) who advertises -----------------------------------------------------------------------------------------


def broker(endpoint="tcp://0.0.0.0:5557", key="k" * 40):
    return SimpleNamespace(endpoint=endpoint, public_key=key)


@pytest.mark.parametrize("hosts", [["127.0.0.1"], ["::1"], ["localhost"], ["[::1]"], ["127.0.0.1", "::1"]])
def test_a_host_on_loopback_only_does_not_advertise(hosts):
    assert "loopback only" in discovery.advertise_reason(enabled=True, hosts=hosts, broker=broker())
    service = SimpleNamespace(broker=broker())
    assert discovery.start_for_host(service, enabled=True, hosts=hosts, port=8190) is None


def test_discovery_off_no_curve_or_a_loopback_broker_do_not_advertise():
    assert "turned off" in discovery.advertise_reason(enabled=False, hosts=["0.0.0.0"], broker=broker())
    assert "CURVE" in discovery.advertise_reason(enabled=True, hosts=["0.0.0.0"], broker=broker(key=None))
    assert "CURVE" in discovery.advertise_reason(enabled=True, hosts=["0.0.0.0"], broker=None)
    local = broker("tcp://127.0.0.1:5557")
    assert "broker listens on loopback" in discovery.advertise_reason(enabled=True, hosts=["0.0.0.0"], broker=local)
    assert discovery.advertise_reason(enabled=True, hosts=["0.0.0.0"], broker=broker()) is None
    assert discovery.advertise_reason(enabled=True, hosts=["127.0.0.1", "0.0.0.0"], broker=broker()) is None


def test_the_config_key_and_the_host_flag_turn_it_off(tmp_path, monkeypatch):
    from conftest import free_port

    from comfy_nodes import plugin
    from comfy_nodes.cli import build_parser
    from comfy_nodes.config import load_config

    assert build_parser().parse_args(["host"]).discovery is True
    assert build_parser().parse_args(["host", "--no-discovery"]).discovery is False
    assert load_config({}, user_dir=str(tmp_path / "d")).discovery is True
    monkeypatch.setattr(plugin, "comfy_listen_addresses", lambda: ["0.0.0.0"])
    started = []
    monkeypatch.setattr(discovery.Advertiser, "start", lambda self: started.append(self) or self)
    for value, advertised in (("false", False), ("true", True)):
        cfg = load_config(
            {
                "COMFYMQ_ROLE": "host",
                "COMFYMQ_DISCOVERY": value,
                "COMFYMQ_BROKER_BIND": f"tcp://0.0.0.0:{free_port()}",
                "COMFYMQ_CURVE_SECRET_KEY": native.curve_keypair()[1],
            },
            user_dir=str(tmp_path / value),
        )
        assert cfg.discovery is advertised
        p = plugin.Plugin(cfg)
        p.start(None)
        try:
            assert (p.advertiser is not None) is advertised
        finally:
            p.close()
    assert len(started) == 1 and started[0].port == 8188


# ---- malformed records ------------------------------------------------------------------------------------------


def info(**props):
    base = {b"name": b"farm", b"version": b"0.1.0", b"fingerprint": b"abcd-0123-4567-89ab", b"path": b"/comfymq"}
    base.update(props.pop("txt", {}))
    return SimpleNamespace(
        properties=base,
        port=props.get("port", 8190),
        name="farm._comfymq._tcp.local.",
        parsed_scoped_addresses=lambda: props.get("addresses", ["192.0.2.9"]),
    )


def test_malformed_records_are_left_out_and_long_values_cut():
    assert discovery.parse_info(info()).urls == ["http://192.0.2.9:8190"]
    for bad in (
        info(txt={b"fingerprint": b"not-a-fingerprint"}),
        info(txt={b"fingerprint": None}),
        info(txt={b"name": b"\xff\xfe"}),
        info(txt={b"name": b"line\nbreak"}),
        info(txt={b"path": b"/../\x00"}),
        info(port=0),
        info(addresses=[]),
        info(addresses=["0.0.0.0", "224.0.0.251"]),
    ):
        assert discovery.parse_info(bad) is None
    long = discovery.parse_info(info(txt={b"name": b"n" * 500, b"version": b"v" * 500}, addresses=["192.0.2.1"] * 20))
    assert len(long.name) == len(long.version) == discovery.MAX_TEXT
    assert len(long.addresses) == discovery.MAX_ADDRESSES


def test_what_a_browse_keeps_is_bounded():
    assert discovery.MAX_SERVICES == 64
    assert discovery.browse(0.2, limit=0) == []


# ---- GET /comfymq/pairing/discover ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_discover_route_answers_in_a_host_and_in_a_worker_role(
    tmp_path,
    aiohttp_client,
    curve_service,  # noqa: F811 (the fixture)
):
    from comfy_nodes.config import load_config
    from comfy_nodes.host.standalone import build_app
    from comfy_nodes.plugin import Plugin

    client = await aiohttp_client(build_app(curve_service, token=TOKEN))
    r = await client.get("/comfymq/pairing/discover?timeout=0.5", headers=ADMIN)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["timeout"] == 0.5 and isinstance(body["hosts"], list)
    assert (await client.get("/comfymq/pairing/discover?timeout=99", headers=ADMIN)).status == 400
    assert (await client.get("/comfymq/pairing/discover?timeout=x", headers=ADMIN)).status == 400
    assert (await client.get("/comfymq/pairing/discover")).status == 401
    worker = Plugin(
        load_config({"COMFYMQ_ROLE": "worker", "COMFYMQ_BROKER": "tcp://127.0.0.1:9"}, user_dir=str(tmp_path / "w"))
    )
    routes = web.RouteTableDef()
    worker.start(routes)
    try:
        app = web.Application()
        app.add_routes(routes)
        wclient = await aiohttp_client(app)
        r = await wclient.get("/comfymq/pairing/discover?timeout=0.5")
        assert r.status == 200, await r.text()  # (not the worker role's 409: no host needed)
        assert (await wclient.get("/comfymq/jobs")).status == 409
    finally:
        worker.close()
