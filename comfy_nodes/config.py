"""ComfyMQ's configuration: environment variables `COMFYMQ_*` over an optional `comfymq.toml`, over defaults.

Keys (toml name = env name without the COMFYMQ_ prefix, lower case):

  role                 both (host on loopback + a local worker; default) | host | worker
  data_dir             where the store lives (default: <ComfyUI user dir>/comfymq)
  artifact_root        where output files land (default: <ComfyUI output dir>/comfymq; a NAS path works)
  save_roots           folders the Save Image (atomic) node may save into besides ComfyUI's output folder and
                       artifact_root (list of absolute paths, or comma-separated in the env; default none): its
                       `root` input, symlinks resolved, must lie inside one of them (nodes/save_image_atomic.py)
  token                API token; every /comfymq route then needs `Authorization: Bearer <token>` (the rule for
                       tokens is check_token() below, for every way one is set)
  allowed_hosts        Host names the API answers besides loopback names (list, or comma-separated in the env;
                       "*" any); see api/site_policy.py
  allowed_origins      web origins (scheme://name[:port]) that may call the API besides its own
  max_body_bytes       largest request body (default 64 MiB)
  max_jobs_per_request jobs one request may create with count / sweep (default 10000)
  max_stored_bytes_per_request   prompt + workflow bytes one request may store over all its jobs (default 64 MiB)
  max_input_bytes      largest file one upload to POST /comfymq/inputs may be (default 2 GiB)
  http_read_timeout    seconds a request body may send nothing (default 30)
  http_body_timeout    seconds a whole request body may take (default 300)
                       (the standalone host reads these as `host` flags / the same COMFYMQ_* variables, and has
                       one more: COMFYMQ_HTTP_KEEPALIVE_TIMEOUT; inside ComfyUI its server owns the connections)
  broker_bind          host: where workers connect (default tcp://127.0.0.1:5557)
  broker               worker: the host's broker address (default tcp://127.0.0.1:5557)
  curve_secret_key     host: the broker's CURVE secret key (Z85, 40 chars)
  allowed_worker_keys  host: worker public keys allowed in (list, or comma-separated in the env)
  broker_public_key    worker: the broker's public key to pin
  worker_public_key, worker_secret_key   worker: its own key pair
  allow_plaintext      plain-text worker links off loopback (loudly logged; not recommended)
  heartbeat            seconds between heartbeats (default 1.0; dead after 3 missed)
  max_run_time         host: seconds one run may take when its job sets no timeout (default 7200; 0 = no limit):
                       past it the run is cancelled on its worker and the job runs again, elsewhere first
  worker_id, worker_name   a stable id (default: made once and kept in the data dir) and a display name
  comfy_url            worker: the ComfyUI it drives (in the plugin: its own, on loopback)
  capacity             jobs a worker runs at once (default 1: ComfyUI runs one prompt at a time)
  input_cache_bytes    worker: bytes of job input files kept in <data_dir>/worker/inputs for later jobs (default
                       20 GiB; 0 keeps none; least recently used first out; worker/inputs/cache.py)
  retention_days       finished jobs are removed after this many days (0 keeps them; default 30)
  unrunnable_jobs      host: a job no online worker can run now (a missing model or node class, no worker, all
                       draining): "wait" (default: queued, and the answer says why it waits; a worker may come)
                       or "refuse" (409 "unrunnable" with the reasons, nothing queued)
  webhooks             host: URLs told of every job's ending (list, or comma-separated in the env; each job and
                       template may name more): signed POSTs, retried until a 2xx or webhook_expiry_hours
                       (default 24) pass (webhooks/)
  public_url           host: its address as receivers of webhooks should use it in links (default: the address it
                       listens on)
  owner_max_pending    host: pending jobs one owner may have (0 = no limit; default 0): past it, 429 owner_limit
  owner_max_jobs_per_request   host: jobs one owner's request may make (0 = max_jobs_per_request only)
  owner_max_running    host: jobs one owner may have running at once (0 = no limit; default 0): past it, its
                       further jobs wait (the job's `waiting` says so) while other owners' run
  owner_weight         host: an owner's share of dispatch among pending jobs of equal priority (1..1000, default 1):
                       owners take turns in proportion to their weights (fair share)
                       (a token's own limits and weight win over these four)
  start_paused         host: the queue starts paused (nothing is dispatched until it is resumed: panel, API, CLI);
                       worker: this worker joins paused (drained: it takes no job until resumed from the host);
                       default false. Running jobs always finish; pausing stops what starts next
  templates_dir        host: a folder of template files (YAML/JSON, also seed 003's config) loaded at start
                       (templates/folder.py); each becomes (or updates) a stored template
  host_url             worker: the host's HTTP address (http://host.lan:8188, or the standalone host's); with it
                       this ComfyUI's "Queue (MQ)" sends jobs there (with `token`); without it the button is hidden

  discovery            host: advertise it on the LAN with mDNS/DNS-SD (`_comfymq._tcp`, pairing/discovery.py) so
                       workers' "Join a farm" lists it (default true); never when it listens on loopback only or its
                       broker has no CURVE key. An advertisement is a hint: pairing still needs the code

A worker paired with a host (`python -m comfy_nodes pair`) keeps its keys in <data_dir>/paired-host.json: with no
keys configured, load_config takes them (and broker, host_url, role worker, each unless configured) from it
(pairing/client.apply_paired).

The toml file is looked for at $COMFYMQ_CONFIG, else <ComfyUI user dir>/comfymq.toml, else next to this
package (the repo root). Anything wrong raises ConfigError with one line that says what and where: every message
about a value ends with where that value came from, "(in /path/comfymq.toml)" or "(from COMFYMQ_ROLE)".
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .api.limits import RequestLimits
from .api.site_policy import normalize_allowed_host, normalize_allowed_origin

ROLES = ("both", "host", "worker")
UNRUNNABLE = ("wait", "refuse")
MAX_RUN_TIME = 30 * 24 * 3600.0
MAX_INPUT_CACHE_BYTES = 1 << 50
_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_ENDPOINT = re.compile(r"^(tcp://[^\s]+:(\d+|\*)|ipc://\S+|inproc://\S+)$")


class ConfigError(ValueError):
    """Bad configuration; the message names the key and its source."""


TOKEN_MIN, TOKEN_MAX = 8, 1024
TOKEN_RULE = (
    f"an API token must be {TOKEN_MIN} to {TOKEN_MAX} visible ASCII characters (letters, digits, "
    "punctuation; no spaces): it travels in an HTTP header"
)


def check_token(token) -> str | None:
    """The one rule for an API token, whichever way it is set (--token, COMFYMQ_TOKEN, comfymq.toml, the plugin,
    build_app / add_routes): None or blank means no token; anything else must follow TOKEN_RULE, else ValueError
    saying so (never quoting the token). Returns the token without surrounding whitespace."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise ValueError(f"{TOKEN_RULE}; got a {type(token).__name__}")
    token = token.strip()
    if not token:
        return None
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        raise ValueError(
            f"{TOKEN_RULE}; this one is {len(token)} characters long (at least {TOKEN_MIN} needed)"
            if len(token) < TOKEN_MIN
            else f"{TOKEN_RULE}; this one is {len(token)} characters long"
        )
    bad = next((i for i, c in enumerate(token) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ValueError(
            f"{TOKEN_RULE}; this one has a space or another character outside that set at position {bad + 1}"
        )
    return token


@dataclass
class Config:
    role: str = "both"
    data_dir: str = ""
    artifact_root: str = ""
    save_roots: list[str] = field(default_factory=list)
    token: str | None = None
    broker_bind: str = "tcp://127.0.0.1:5557"
    broker: str = "tcp://127.0.0.1:5557"
    curve_secret_key: str | None = None
    allowed_worker_keys: list[str] = field(default_factory=list)
    broker_public_key: str | None = None
    worker_public_key: str | None = None
    worker_secret_key: str | None = None
    allow_plaintext: bool = False
    heartbeat: float = 1.0
    max_run_time: float = 7200.0
    worker_id: str = ""
    worker_name: str = ""
    comfy_url: str = "http://127.0.0.1:8188"
    capacity: int = 1
    input_cache_bytes: int = 20 << 30
    retention_days: float = 30.0
    unrunnable_jobs: str = "wait"
    host_url: str | None = None
    webhooks: list[str] = field(default_factory=list)
    webhook_expiry_hours: float = 24.0
    public_url: str | None = None
    templates_dir: str | None = None
    start_paused: bool = False
    discovery: bool = True
    owner_max_pending: int = 0
    owner_max_jobs_per_request: int = 0
    owner_max_running: int = 0
    owner_weight: int = 1
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = RequestLimits.max_body_bytes
    max_jobs_per_request: int = RequestLimits.max_jobs_per_request
    max_stored_bytes_per_request: int = RequestLimits.max_stored_bytes_per_request
    max_input_bytes: int = RequestLimits.max_input_bytes
    http_read_timeout: float = RequestLimits.http_read_timeout
    http_body_timeout: float = RequestLimits.http_body_timeout
    source: str = "defaults"  # where the values came from, for the log
    set_by: dict = field(default_factory=dict)  # key -> where its value came from ("in FILE", "from ENV_NAME")

    @property
    def runs_host(self) -> bool:
        return self.role in ("both", "host")

    @property
    def runs_worker(self) -> bool:
        return self.role in ("both", "worker")


_KEYS = {f.name: f for f in fields(Config) if f.name not in ("source", "set_by")}


def _coerce(name: str, value, where: str):
    """`value` as key `name`'s type; ConfigError naming the key and `where` (a source label, see _label)."""
    kind = _KEYS[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind == "list[str]":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise ValueError("expected a list of strings")
            return [x.strip() for x in items if x.strip()]
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value.strip() or None if "None" in kind else value.strip()
    except ValueError as e:
        raise ConfigError(f"{name}: {e} ({where})") from None


def _label(where: Mapping[str, str], *keys: str) -> str:
    """Where `keys` got their values, as ' (in /path/comfymq.toml)' or ' (from COMFYMQ_X)'; '' for defaults."""
    found = list(dict.fromkeys(where[k] for k in keys if k in where))
    return f" ({'; '.join(found)})" if found else ""


def find_toml(env: Mapping[str, str], user_dir: str | None) -> Path | None:
    if env.get("COMFYMQ_CONFIG"):
        p = Path(env["COMFYMQ_CONFIG"])
        if not p.is_file():
            raise ConfigError(f"COMFYMQ_CONFIG points at {p}, which is not a file")
        return p
    for candidate in ([Path(user_dir) / "comfymq.toml"] if user_dir else []) + [
        Path(__file__).resolve().parents[1] / "comfymq.toml"
    ]:
        if candidate.is_file():
            return candidate
    return None


def load_config(
    env: Mapping[str, str] | None = None,
    *,
    user_dir: str | None = None,
    output_dir: str | None = None,
    comfy_url: str | None = None,
    toml_path: str | os.PathLike | None = None,
) -> Config:
    """Reads and checks the configuration. user_dir/output_dir/comfy_url are ComfyUI's (for defaults)."""
    env = os.environ if env is None else env
    cfg = Config()
    sources = []
    where: dict[str, str] = {}  # key -> where its value came from, for error messages (_label)
    path = Path(toml_path) if toml_path else find_toml(env, user_dir)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
        table = data.get("comfymq", data)
        for key, value in table.items():
            if key not in _KEYS:
                raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(_KEYS))})")
            where[key] = f"in {path}"
            setattr(cfg, key, _coerce(key, value, where[key]))
        sources.append(str(path))
    env_used = False
    for key in _KEYS:
        name = "COMFYMQ_" + key.upper()
        if name in env:
            where[key] = f"from {name}"
            setattr(cfg, key, _coerce(key, env[name], where[key]))
            env_used = True
    if env_used:
        sources.append("environment")
    cfg.source = " + ".join(sources) or "defaults"

    if not cfg.data_dir:
        base = Path(user_dir) if user_dir else Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        cfg.data_dir = str(base / "comfymq")
    if not cfg.artifact_root:
        cfg.artifact_root = str(Path(output_dir) / "comfymq") if output_dir else str(Path(cfg.data_dir) / "artifacts")
    # -- pairing hook (pairing/client.py): a worker paired with a host uses the keys it keeps in its data_dir --
    from .pairing.client import apply_paired

    try:
        if apply_paired(cfg, where):
            cfg.source += f" + {Path(cfg.data_dir) / 'paired-host.json'}"
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # -- end of the pairing hook --
    if comfy_url and "COMFYMQ_COMFY_URL" not in env and not (path and "comfy_url" in _toml_keys(path)):
        cfg.comfy_url = comfy_url
        where["comfy_url"] = "from ComfyUI: its own address"
    _check(cfg, where)
    cfg.set_by = dict(where)
    if not cfg.worker_name:
        cfg.worker_name = socket.gethostname()
    return cfg


def _toml_keys(path: Path) -> set[str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return set(data.get("comfymq", data))
    except (OSError, tomllib.TOMLDecodeError):
        return set()


def _check(cfg: Config, where: Mapping[str, str] | None = None) -> None:
    """ConfigError for the first bad value; its message ends with where the value came from (`where`: key ->
    source label, as load_config records it; keys missing from it had their defaults). A new check raises
    bad(message, key, ...) naming the keys it is about, so its message names their sources too."""
    where = where or {}

    def bad(message: str, *keys: str) -> ConfigError:
        return ConfigError(message + _label(where, *keys))

    if cfg.role not in ROLES:
        raise bad(f"role must be one of {', '.join(ROLES)}, got '{cfg.role}'", "role")
    for key in ("broker_bind", "broker"):
        if not _ENDPOINT.match(getattr(cfg, key)):
            raise bad(f"{key} must be a ZeroMQ endpoint like tcp://127.0.0.1:5557, got '{getattr(cfg, key)}'", key)
    for key in ("curve_secret_key", "broker_public_key", "worker_public_key", "worker_secret_key"):
        v = getattr(cfg, key)
        if v is not None and not _Z85.match(v):
            raise bad(f"{key} must be a 40-character Z85 CURVE key (make one with `python -m comfy_nodes keys`)", key)
    for k in cfg.allowed_worker_keys:
        if not _Z85.match(k):
            raise bad(f"allowed_worker_keys: '{k}' is not a 40-character Z85 CURVE public key", "allowed_worker_keys")
    if (cfg.worker_public_key is None) != (cfg.worker_secret_key is None):
        raise bad(
            "worker_public_key and worker_secret_key go together: set both or neither",
            "worker_public_key",
            "worker_secret_key",
        )
    if not 0.01 <= cfg.heartbeat <= 600:
        raise bad(f"heartbeat must be 0.01..600 seconds, got {cfg.heartbeat}", "heartbeat")
    if not 0 <= cfg.max_run_time <= MAX_RUN_TIME:
        raise bad(
            f"max_run_time must be 0 (no limit) to {MAX_RUN_TIME:.0f} seconds (30 days), got {cfg.max_run_time}",
            "max_run_time",
        )
    if not 1 <= cfg.capacity <= 64:
        raise bad(f"capacity must be 1..64, got {cfg.capacity}", "capacity")
    if not 0 <= cfg.input_cache_bytes <= MAX_INPUT_CACHE_BYTES:
        raise bad(f"input_cache_bytes must be 0..2^50 bytes, got {cfg.input_cache_bytes}", "input_cache_bytes")
    if cfg.retention_days < 0:
        raise bad(f"retention_days must be 0 (keep) or more, got {cfg.retention_days}", "retention_days")
    from .webhooks.targets import WebhookError, check_url

    for url in cfg.webhooks:
        try:
            check_url(url, "webhooks")
        except WebhookError as e:
            raise bad(str(e), "webhooks") from None
    if not 0 < cfg.webhook_expiry_hours <= 24 * 30:
        raise bad(
            f"webhook_expiry_hours must be more than 0 and at most 720, got {cfg.webhook_expiry_hours}",
            "webhook_expiry_hours",
        )
    for key in ("owner_max_pending", "owner_max_jobs_per_request", "owner_max_running"):
        if not 0 <= getattr(cfg, key) <= 10**6 * (1000 if key != "owner_max_running" else 1):
            raise bad(f"{key} must be 0 (no limit) or more, got {getattr(cfg, key)}", key)
    if not 1 <= cfg.owner_weight <= 1000:
        raise bad(f"owner_weight must be between 1 and 1000, got {cfg.owner_weight}", "owner_weight")
    if cfg.public_url is not None:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", cfg.public_url):
            raise bad(
                f"public_url must be an http(s) address like http://farm.lan:8188, got '{cfg.public_url}'", "public_url"
            )
        cfg.public_url = cfg.public_url.rstrip("/")
    if cfg.unrunnable_jobs not in UNRUNNABLE:
        raise bad(
            f"unrunnable_jobs must be one of {', '.join(UNRUNNABLE)}, got '{cfg.unrunnable_jobs}'", "unrunnable_jobs"
        )
    if cfg.host_url is not None:
        if not re.match(r"^https?://[^\s/?#]+/?$", cfg.host_url):
            raise bad(
                f"host_url must be an http(s) address like http://host.lan:8188, got '{cfg.host_url}'", "host_url"
            )
        cfg.host_url = cfg.host_url.rstrip("/")
    if not re.match(r"^https?://[^\s/]+", cfg.comfy_url):
        raise bad(f"comfy_url must be an http(s) URL, got '{cfg.comfy_url}'", "comfy_url")
    try:
        cfg.token = check_token(cfg.token)
    except ValueError as e:
        raise bad(f"token: {e}", "token") from None
    for f in fields(RequestLimits):  # one limit at a time, so the message names the bad one's source
        try:
            RequestLimits(**{f.name: getattr(cfg, f.name)})
        except ValueError as e:
            raise bad(str(e), f.name) from None
    try:
        RequestLimits.from_config(cfg)  # and together, should a rule ever span limits
    except ValueError as e:
        raise bad(str(e), *(f.name for f in fields(RequestLimits))) from None
    for key, normalize in (("allowed_hosts", normalize_allowed_host), ("allowed_origins", normalize_allowed_origin)):
        for value in getattr(cfg, key):
            try:
                normalize(value)
            except ValueError as e:
                raise bad(str(e), key) from None
    cfg.save_roots = [_check_save_root(r, bad) for r in cfg.save_roots]
    if cfg.worker_id and not re.match(r"^[A-Za-z0-9_.:@-]{1,128}$", cfg.worker_id):
        raise bad("worker_id may hold letters, digits and _ . : @ - (1..128 characters)", "worker_id")


def _check_save_root(root: str, bad) -> str:
    """One save_roots entry, normalized; bad(...) unless it is an absolute path (no ~, no NUL)."""
    if "\x00" in root:
        raise bad(f"save_roots: {root!r} contains a NUL byte", "save_roots")
    if not os.path.isabs(root):
        raise bad(
            f"save_roots: {root!r} is not an absolute path (write the full path of the folder; ~ is not expanded)",
            "save_roots",
        )
    return os.path.normpath(root)
