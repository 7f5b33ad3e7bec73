"""Which requests a web page on another site, or a DNS-rebound name, could make, and so are refused.

A browser lets any web page send "simple" requests to any address, the user's own loopback included: a form POST
(enctype text/plain or form-urlencoded), a bodyless fetch POST, an image GET. With DNS rebinding a page can even
read the answers: its own name (evil.example) resolves to 127.0.0.1 for a moment, so the browser treats the API as
same-origin, and the request arrives with `Host: evil.example:8190`. The rules, for every request, in this order:

  1. Host. A host whose API listens on loopback only answers requests addressed to a loopback name (localhost,
     *.localhost, 127.0.0.0/8, ::1; any port) or to a name in allowed_hosts. A host listening beyond loopback answers
     any Host, unless allowed_hosts is set: then those names, loopback names and IP address literals (an IP literal
     cannot be rebound: the browser connects to exactly that address). allowed_hosts "*" allows every name.
     A request without Host (HTTP/1.0 tools) passes: no browser sends one. -> 403 host_not_allowed
  2. Origin. When present it must be the request's own origin (the Host's name and port) or one of allowed_origins
     (scheme://name[:port]). `Origin: null` (sandboxed frames, file: pages, redirects) is foreign. -> 403 cross_origin
  3. Sec-Fetch-Site: cross-site is refused unless the Origin is an allowed one. -> 403 cross_origin
  4. A state-changing request (any method but GET, HEAD and OPTIONS) needs `Content-Type: application/json`
     (parameters such as charset allowed), with or without a body: a page can send that header to another origin
     only after a CORS preflight, and this API grants no preflight (it never answers Access-Control-Allow-*).
     -> 415 unsupported_media_type
     Upload routes (POST /comfymq/inputs: a file is not JSON) skip this rule (refusal(..., any_content_type=True)),
     and so do the v2 routes the official SDK calls with no body and no Content-Type (cancel, asset delete: api/v2),
     which refuse a body.
     What it guards against, a form a page on another site submits, rules 2 and 3 refuse in every browser that
     sends Origin on every POST and Sec-Fetch-Site (all current ones); an upload queues nothing by itself, and
     the job that uses it is a JSON request again.

Names are compared without DNS: resolving a name is exactly what rebinding subverts. Pure logic (no aiohttp): the
HTTP glue is in guards.py, the configuration checks allowed_hosts / allowed_origins with these functions.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Mapping

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_MEDIA_TYPE = "application/json"
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?$")
_SHOWN = 128  # characters of a refused header value quoted back


@dataclass(frozen=True)
class Refusal:
    status: int
    type: str
    message: str


def _shown(value: str) -> str:
    value = "".join(c if " " <= c < "\x7f" else "?" for c in value)
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "..."


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header as (name, port): the name lower case, without brackets or a trailing dot; None if malformed."""
    m = _HOST_RE.match(value.strip())
    if not m:
        return None
    name, port = m.group(1).lower(), m.group(2)
    if name.startswith("["):
        name = name[1:-1]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    name = name.rstrip(".")
    if not name or (port is not None and not 0 < int(port) < 65536):
        return None
    return name, int(port) if port is not None else None


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback_name(name: str) -> bool:
    """localhost, *.localhost (browsers never ask DNS for those), 127.0.0.0/8, ::1 (also IPv4-mapped)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def normalize_allowed_host(entry: str) -> str:
    """An allowed_hosts entry as compared: a name or IP address without a port, lower case; "*" for any.
    ValueError naming the entry otherwise."""
    text = entry.strip().lower()
    if text == "*":
        return text
    parsed = split_host(text)
    if parsed is None or parsed[1] is not None:
        raise ValueError(
            f"allowed_hosts: '{_shown(entry)}' is not a host name or IP address (give it without a "
            "port or scheme, e.g. comfy.lan or 192.168.1.5; '*' allows any)"
        )
    return parsed[0]


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """An Origin value as (scheme, name, port), the port filled in from the scheme; None when it is not one
    ("null", a path, another scheme, a bad port)."""
    try:
        u = urllib.parse.urlsplit(value.strip())
        port = u.port
    except ValueError:
        return None
    if (
        u.scheme not in DEFAULT_PORTS
        or not u.hostname
        or u.path not in ("", "/")
        or u.query
        or u.fragment
        or u.username is not None
        or u.password is not None
    ):
        return None
    name = u.hostname.lower().rstrip(".")
    return u.scheme, name, port if port is not None else DEFAULT_PORTS[u.scheme]


def normalize_allowed_origin(entry: str) -> tuple[str, str, int]:
    """An allowed_origins entry (scheme://name[:port]) as compared; ValueError naming the entry otherwise."""
    parsed = parse_origin(entry)
    if parsed is None:
        raise ValueError(
            f"allowed_origins: '{_shown(entry)}' is not an origin (give scheme://name[:port], e.g. "
            "https://comfy.example.com)"
        )
    return parsed


@dataclass(frozen=True)
class SitePolicy:
    """The rules above for one server: where its API listens and what was allowed on top."""

    loopback_only: bool = True
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[tuple[str, str, int], ...] = ()

    @classmethod
    def build(
        cls, listen: Iterable[str | None], allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()
    ) -> "SitePolicy":
        """The policy for an API listening on every address in `listen` ("" or None: every interface).
        ValueError naming a bad allowed_hosts / allowed_origins entry."""
        addresses = list(listen)
        loopback = bool(addresses) and all(a and is_loopback_name(a.strip().strip("[]").lower()) for a in addresses)
        # ("" or None: every interface; a host name other than localhost may resolve to anything)
        return cls(
            loopback_only=loopback,
            allowed_hosts=tuple(dict.fromkeys(normalize_allowed_host(h) for h in allowed_hosts)),
            allowed_origins=tuple(dict.fromkeys(normalize_allowed_origin(o) for o in allowed_origins)),
        )

    def host_allowed(self, name: str) -> bool:
        if "*" in self.allowed_hosts or name in self.allowed_hosts or is_loopback_name(name):
            return True
        if self.loopback_only:
            return False
        return not self.allowed_hosts or _ip(name) is not None

    def describe_hosts(self) -> str:
        names = "loopback names (localhost, 127.0.0.1, [::1])"
        if not self.loopback_only:
            names += ", IP addresses"
        if self.allowed_hosts:
            names += " and " + ", ".join(self.allowed_hosts)
        return names


def refusal(
    policy: SitePolicy, method: str, headers: Mapping[str, str], getall=None, *, any_content_type: bool = False
) -> Refusal | None:
    """The refusal for a request (its method and headers), or None when it may pass. `getall(name)` lists every
    value of a header (for a repeated Content-Type); without it, headers[name] is taken as the only one.
    any_content_type: an upload route, which rule 4 does not apply to."""
    getall = getall or (lambda name: [headers[name]] if name in headers else [])
    host_values = getall("Host")
    own = None
    if host_values:
        parsed = split_host(host_values[0]) if len(host_values) == 1 else None
        if parsed is None:
            return Refusal(400, "bad_host", f"the Host header '{_shown(', '.join(host_values))}' is not a host name")
        if not policy.host_allowed(parsed[0]):
            return Refusal(
                403,
                "host_not_allowed",
                f"this ComfyMQ API answers only requests addressed to {policy.describe_hosts()}, not to "
                f"Host '{_shown(host_values[0])}' (a guard against DNS rebinding). If that name is really "
                "this host's, add it to allowed_hosts (COMFYMQ_ALLOWED_HOSTS, or `host --allow-host NAME`)",
            )
        own = parsed
    origin_values = getall("Origin")
    allowed_origin = False
    if origin_values:
        origin = parse_origin(origin_values[0]) if len(origin_values) == 1 else None
        allowed_origin = origin is not None and origin in policy.allowed_origins
        same = (
            origin is not None
            and own is not None
            and origin[1] == own[0]
            and origin[2] == (own[1] if own[1] is not None else DEFAULT_PORTS[origin[0]])
        )
        if not (same or allowed_origin):
            return Refusal(
                403,
                "cross_origin",
                f"a request from Origin '{_shown(', '.join(origin_values))}' is refused: it is not this "
                "API's own origin. To allow a web origin, add it to allowed_origins "
                "(COMFYMQ_ALLOWED_ORIGINS, or `host --allow-origin URL`)",
            )
    fetch_site = getall("Sec-Fetch-Site")
    if any(v.strip().lower() == "cross-site" for v in fetch_site) and not allowed_origin:
        return Refusal(
            403,
            "cross_origin",
            "a cross-site request (Sec-Fetch-Site: cross-site) is refused. To "
            "allow a web origin, add it to allowed_origins (COMFYMQ_ALLOWED_ORIGINS, or "
            "`host --allow-origin URL`)",
        )
    if method.upper() not in SAFE_METHODS and not any_content_type:
        types = getall("Content-Type")
        media = types[0].split(";", 1)[0].strip().lower() if len(types) == 1 else None
        if media != JSON_MEDIA_TYPE:
            got = f"'{_shown(', '.join(types))}'" if types else "none"
            return Refusal(
                415,
                "unsupported_media_type",
                f"{method.upper()} requests to this API need 'Content-Type: application/json', also "
                f"without a body (got {got}): web pages on other sites cannot send that header",
            )
    return None
