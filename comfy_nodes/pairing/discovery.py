"""LAN discovery with mDNS/DNS-SD (the `zeroconf` package): a host advertises itself, a worker browses.

Service type `_comfymq._tcp.local.`; the instance's SRV port is the host's HTTP port, its A/AAAA records the
addresses it listens on, and its TXT record:

  name         the host's name as shown to users (at most MAX_TEXT characters)
  version      the ComfyMQ version it runs (comfy_nodes.__version__)
  fingerprint  its broker key's fingerprint as pairing shows it (exchange.fingerprint: 4 groups of 4 hex digits)
  port, path   its HTTP port and the API's path (/comfymq)

Everything found is a hint and nothing more: anyone on the LAN can advertise anything, a name and fingerprint
included. Pairing still needs the code the real host shows (a fake host that does not know it pairs nobody and
learns nothing, docs/pairing.md), and client.pair says so when the key a host proves differs from the fingerprint
its advertisement gave. browse() keeps at most MAX_SERVICES services, drops any record that is malformed (a TXT
value that is not text, too long, a bad fingerprint or port) and cuts names and versions to MAX_TEXT characters.

When a host advertises: advertise_reason() (a CURVE broker, not loopback only, discovery not turned off);
start_for_host() starts an Advertiser for a host's service. Importing this module never raises: zeroconf is
imported where it runs.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from .exchange import fingerprint as key_fingerprint

log = logging.getLogger("comfymq.discovery")

SERVICE_TYPE = "_comfymq._tcp.local."
API_PATH = "/comfymq"
MAX_SERVICES = 64  # services one browse keeps (the rest of a flood is ignored)
MAX_ADDRESSES = 8  # addresses kept per service
MAX_TEXT = 64  # characters kept of a name or version
FINGERPRINT = re.compile(r"^[0-9a-f]{4}(-[0-9a-f]{4}){3}$")
WILDCARDS = ("", "0.0.0.0", "::", "*")


class DiscoveryUnavailable(RuntimeError):
    """Browsing or advertising cannot run here (zeroconf missing, no multicast socket); the message says why."""


@dataclass(frozen=True)
class Found:
    """One advertised host, as advertised (not checked: a hint)."""

    name: str
    addresses: list[str]
    port: int
    fingerprint: str
    version: str
    path: str = API_PATH
    instance: str = ""  # the DNS-SD instance name (unique on the LAN; `name` need not be)
    urls: list[str] = field(default_factory=list)  # http://address:port per address, for `pair --host`

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "addresses": list(self.addresses),
            "port": self.port,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "path": self.path,
            "instance": self.instance,
            "urls": list(self.urls),
        }


# -- when a host advertises --


def is_loopback_only(hosts: list[str]) -> bool:
    """Whether every listen address is loopback (127.0.0.0/8, ::1, localhost): nobody on the LAN can reach it."""
    from ..api.auth import is_loopback

    return bool(hosts) and all(is_loopback(h) for h in hosts)


def advertise_reason(*, enabled: bool, hosts: list[str], broker) -> str | None:
    """Why a host with these listen addresses and this broker (service.broker) does not advertise; None when it
    does: discovery on, a CURVE broker (pairing hands out its key), neither the HTTP API nor the broker on loopback
    only (a worker elsewhere could not reach them)."""
    if not enabled:
        return "discovery is turned off (discovery = false / --no-discovery)"
    if is_loopback_only(hosts):
        return "the API listens on loopback only"
    if broker is None or not broker.public_key:
        return "the broker runs without CURVE, so workers cannot pair with it"
    endpoint_host = broker.endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    if is_loopback_only([endpoint_host]):
        return f"the broker listens on loopback only ({broker.endpoint})"
    return None


def local_addresses(hosts: list[str]) -> list[str]:
    """The addresses to advertise for these listen addresses: a wildcard stands for every non-loopback address of
    this machine's interfaces (IPv4 for 0.0.0.0, both for :: and ""), a name for what it resolves to."""
    out: list[str] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if host in WILDCARDS:
            out += _interface_addresses(v6=host != "0.0.0.0")
            continue
        try:
            out.append(str(ipaddress.ip_address(host)))
        except ValueError:
            try:
                out += [i[4][0] for i in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
            except OSError:
                continue
    kept = []
    for a in dict.fromkeys(out):
        ip = ipaddress.ip_address(a.split("%")[0])
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast):
            kept.append(str(ip))
    return kept[:MAX_ADDRESSES]


def _interface_addresses(v6: bool) -> list[str]:
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(ip.ip)
            elif v6:
                out.append(ip.ip[0])
    return out


# -- advertising --


class Advertiser:
    """Advertises one host until close(). start() returns at once: zeroconf runs on a thread of its own (so a
    caller inside an event loop is never blocked), and a failure is logged, never raised. A name already taken on
    the LAN may get a suffix (the TXT name stays as given). instance: the DNS-SD instance label (default: name)."""

    def __init__(
        self, *, name: str, port: int, fingerprint: str, version: str, addresses: list[str], instance: str = ""
    ):
        if not addresses:
            raise ValueError("nothing to advertise: no address")
        if not FINGERPRINT.match(fingerprint):
            raise ValueError("the fingerprint is not one pairing shows (4 groups of 4 hex digits)")
        self.name = name[:MAX_TEXT] or "comfymq"
        self.instance = (instance or self.name)[:MAX_TEXT]
        self.port, self.fingerprint, self.version = port, fingerprint, version[:MAX_TEXT]
        self.addresses = addresses[:MAX_ADDRESSES]
        self.registered = threading.Event()  # set once the service is announced
        self.error: str | None = None
        self._zc = None
        self._info = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def service_info(self):
        from zeroconf import ServiceInfo

        label = re.sub(r"[^\w .()-]", "-", self.instance)[:MAX_TEXT] or "comfymq"
        return ServiceInfo(
            SERVICE_TYPE,
            f"{label}.{SERVICE_TYPE}",
            port=self.port,
            parsed_addresses=self.addresses,
            server=f"comfymq-{re.sub(r'[^A-Za-z0-9-]', '-', label)[:40]}-{socket.gethostname()[:20] or 'host'}.local.",
            properties={
                "name": self.name,
                "version": self.version,
                "fingerprint": self.fingerprint,
                "port": str(self.port),
                "path": API_PATH,
            },
        )

    def start(self) -> Advertiser:
        self._thread = threading.Thread(target=self._run, name="comfymq-advertise", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            from zeroconf import IPVersion, Zeroconf

            v6 = any(":" in a for a in self.addresses)
            zc = Zeroconf(ip_version=IPVersion.All if v6 else IPVersion.V4Only)
            info = self.service_info()
            with self._lock:
                if self._closed:
                    zc.close()
                    return
                self._zc, self._info = zc, info
            zc.register_service(info, allow_name_change=True)
            self.registered.set()
            log.info("advertising %s on the LAN (%s, port %d)", info.name, ", ".join(self.addresses), self.port)
        except Exception as e:  # noqa: BLE001 - discovery is a convenience: the host runs without it
            self.error = f"{type(e).__name__}: {e}"
            log.warning("ComfyMQ: LAN discovery is off: could not advertise this host (%s)", self.error)

    def close(self, timeout: float = 5.0) -> None:
        """Withdraws the advertisement (goodbye packets) and stops zeroconf; safe to call more than once."""
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self._closed = True
            zc, info, self._zc = self._zc, self._info, None
        if zc is None:
            return
        try:
            if self.registered.is_set():
                zc.unregister_service(info)
        except Exception as e:  # noqa: BLE001 - closing anyway
            log.debug("discovery: unregister: %s", e)
        finally:
            zc.close()


def start_for_host(service, *, enabled: bool, hosts: list[str], port: int, name: str = "") -> Advertiser | None:
    """Starts advertising the host of `service` (its broker's key) listening on `hosts` at HTTP `port`, unless
    advertise_reason() gives a reason (logged). Returns the Advertiser to close(), or None."""
    from .. import __version__

    reason = advertise_reason(enabled=enabled, hosts=hosts, broker=service.broker)
    if reason is None:
        try:
            addresses = local_addresses(hosts)
        except Exception as e:  # noqa: BLE001 - ifaddr missing or failing
            addresses, reason = [], f"its addresses cannot be listed ({e})"
        if not addresses and reason is None:
            reason = "no address to advertise"
    if reason is not None:
        log.info("ComfyMQ: not advertised on the LAN: %s", reason)
        return None
    return Advertiser(
        name=name or socket.gethostname(),
        port=port,
        fingerprint=key_fingerprint(service.broker.public_key),
        version=__version__,
        addresses=addresses,
    ).start()


# -- browsing --


def _text(props: dict, key: str) -> str | None:
    value = props.get(key.encode())
    if not isinstance(value, bytes):
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def parse_info(info) -> Found | None:
    """A Found from a resolved ServiceInfo, or None when any part of it is malformed."""
    props = info.properties or {}
    name, version, fp, path = (_text(props, k) for k in ("name", "version", "fingerprint", "path"))
    if name is None or version is None or fp is None or not FINGERPRINT.match(fp):
        return None
    if path is None and b"path" in props:
        return None
    path = path or API_PATH
    if not path.startswith("/") or ".." in path or len(path) > MAX_TEXT or not re.match(r"^[\w/.-]+$", path):
        return None
    port = info.port
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    addresses = []
    for a in info.parsed_scoped_addresses()[: MAX_ADDRESSES * 2]:
        try:
            ip = ipaddress.ip_address(a.split("%")[0])
        except ValueError:
            continue
        if not (ip.is_unspecified or ip.is_multicast):
            addresses.append(a)
    addresses = addresses[:MAX_ADDRESSES]
    if not addresses:
        return None
    urls = [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses if "%" not in a]
    return Found(
        name=name[:MAX_TEXT],
        addresses=addresses,
        port=port,
        fingerprint=fp,
        version=version[:MAX_TEXT],
        path=path,
        instance=str(info.name)[: MAX_TEXT * 4],
        urls=urls,
    )


def browse(timeout: float = 3.0, *, limit: int = MAX_SERVICES) -> list[Found]:
    """The ComfyMQ hosts that answer on the LAN within `timeout` seconds (plus at most 2 s resolving them), at
    most `limit` (<= MAX_SERVICES) of them, sorted by name; malformed ones are left out. Blocks: call it off an
    event loop's thread. DiscoveryUnavailable when zeroconf cannot run here."""
    try:
        from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
    except ImportError as e:
        raise DiscoveryUnavailable(f"the zeroconf package is not installed ({e})") from None
    limit = max(0, min(limit, MAX_SERVICES))
    names: dict[str, None] = {}
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            return
        with lock:
            if len(names) < limit and len(name) <= 255:
                names[name] = None

    try:
        zc = Zeroconf()
    except OSError as e:
        raise DiscoveryUnavailable(f"no multicast socket for mDNS here: {e}") from None
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        time.sleep(max(0.0, timeout))
        browser.cancel()
        found: dict[str, Found] = {}
        deadline = time.monotonic() + 2.0
        with lock:
            wanted = list(names)
        for name in wanted:
            info = ServiceInfo(SERVICE_TYPE, name)
            if not info.load_from_cache(zc):
                left = deadline - time.monotonic()
                if left <= 0 or not info.request(zc, min(left, 1.0) * 1000):
                    continue
            one = parse_info(info)
            if one is not None:
                found[name] = one
        return sorted(found.values(), key=lambda f: (f.name.lower(), f.instance))
    finally:
        zc.close()


def fingerprint_note(advertised: str | None, proved: str) -> str | None:
    """What to tell the user when the fingerprint an advertisement gave differs from the one the paired host's key
    has (client.pair: the key box, opened only after the host proved the code); None when they agree or none was
    advertised."""
    if not advertised or advertised == proved:
        return None
    return (
        f"the host's key has fingerprint {proved}, not {advertised} as advertised on the LAN: the advertisement you "
        "picked was not this host's (pairing is safe: the host proved the code; check the fingerprint the host shows)"
    )
