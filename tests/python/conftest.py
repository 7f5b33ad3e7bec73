"""Shared set-up for ComfyMQ's Python tests.

* The repo root goes on sys.path so tests import `comfy_nodes...` exactly as `python -m comfy_nodes` does.
* The compiled core (comfy_nodes._native) must load: if it does not, the run stops at once with the build
  instruction from comfy_nodes.native. These tests are never skipped for a missing build.
* Async HTTP tests use pytest-aiohttp's `aiohttp_client` fixture under pytest-asyncio (strict mode: the async
  test modules mark themselves with `pytest.mark.asyncio`), so no ini file is needed.
* Every test gets a generous default timeout (pytest-timeout) so a hang fails instead of blocking the run.
* ComfyUIs (end of file) starts the ComfyUIs the end-to-end suite runs against: the stand-in of each version it
  imitates, and a real ComfyUI when COMFYMQ_REAL_COMFYUI (its folder) and COMFYMQ_REAL_COMFYUI_PYTHON are set.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from comfy_nodes import native as _native_loader  # noqa: E402

try:
    _NATIVE = _native_loader.load()
    _NATIVE_ERROR: str | None = None
except _native_loader.NativeUnavailable as _e:  # the message is the build instruction
    _NATIVE = None
    _NATIVE_ERROR = str(_e)

DEFAULT_TEST_TIMEOUT = 120  # seconds; only a guard against hangs, never a speed assertion


def pytest_configure(config):
    config.addinivalue_line("markers", "subprocess: the test starts Python subprocesses")
    config.addinivalue_line("markers", "wheel: the built wheel; `make test-wheel` sets COMFYMQ_TEST_WHEEL")
    # The host stores plain string keys on its aiohttp app (app["service"]); aiohttp suggests web.AppKey.
    # Harmless, and not what these tests check, so it is kept out of every test's output.
    config.addinivalue_line("filterwarnings", "ignore::aiohttp.web.NotAppKeyWarning")


def pytest_sessionstart(session):
    if _NATIVE_ERROR is not None:
        pytest.exit(
            "ComfyMQ's Python tests need the compiled core (comfy_nodes._native) and do not skip without it.\n"
            + _NATIVE_ERROR,
            returncode=3,
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


# ---- helpers shared by the test modules ----------------------------------------------------------------

GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "model": ["4", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
}


def graph(seed: int = 42) -> dict:
    """A small valid API-format graph; `seed` makes graphs distinguishable."""
    g = json.loads(json.dumps(GRAPH))
    g["3"]["inputs"]["seed"] = seed
    return g


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until_clock_passes(ms: int, deadline_s: float = 5.0) -> None:
    """Polls the wall clock until it is strictly later than `ms` (so time-bounded queries are exact)."""
    end = time.monotonic() + deadline_s
    while now_ms() <= ms:
        if time.monotonic() > end:
            raise AssertionError(f"the wall clock did not pass {ms} within {deadline_s} s")
        time.sleep(0.001)


@pytest.fixture(scope="session")
def native():
    """The compiled core module (comfy_nodes._native)."""
    assert _NATIVE is not None  # pytest_sessionstart stopped the run otherwise
    return _NATIVE


@pytest.fixture
def store_dir(tmp_path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def store(native, store_dir):
    """An open Store in a fresh directory, closed after the test (closing twice is harmless)."""
    s = native.Store(store_dir)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def subprocess_env() -> dict:
    """Environment for child Pythons: no inherited PYTHONPATH or ComfyMQ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---- helpers for tests that run real processes on loopback ------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn, timeout: float = 30.0, what: str = "condition", every: float = 0.05):
    """Polls fn() until it returns something true and returns that; AssertionError after timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http_json(url: str, method: str = "GET", body=None, timeout: float = 30.0):
    """(status, JSON body) of one request; HTTP errors are answers too, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ---- the standalone host's app on a fresh QueueService, for HTTP tests (pytest-aiohttp) --------------------


@pytest.fixture
def service(tmp_path):
    """A QueueService (store + artifact writer, no broker) in a fresh directory."""
    from comfy_nodes.service import QueueService

    svc = QueueService(tmp_path / "data", threads=8)
    try:
        yield svc
    finally:
        svc.close()


@pytest_asyncio.fixture
async def client(aiohttp_client, service):
    """A test client of the standalone host's app (build_app) on `service`."""
    from comfy_nodes.host.standalone import build_app

    return await aiohttp_client(build_app(service))


async def assert_json_error(resp, status: int) -> dict:
    """Checks the response is `status` with {"error": {"type": str, "code": the same, "message": str}} and no stack
    trace; returns the error."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"type", "code", "message"} and err["code"] == err["type"]
    assert isinstance(err["type"], str) and err["type"]
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    return err


# ---- ComfyUIs for the end-to-end suite: the stand-in of each version, or a real ComfyUI -------------------------

STANDIN_VERSIONS = ("0.3.64", "0.8.0", "current")  # tests/standin/versions.py
# A real ComfyUI folder (and the python that runs it): the end-to-end suite then runs against it as well.
REAL_COMFYUI = os.environ.get("COMFYMQ_REAL_COMFYUI", "")
REAL_COMFYUI_PYTHON = os.environ.get("COMFYMQ_REAL_COMFYUI_PYTHON", "")
TEST_NODES_PACK = REPO_ROOT / "tests" / "standin" / "real_comfyui_pack"  # SlowNode, FailNode for a real ComfyUI


def comfyui_targets() -> list[str]:
    """What the end-to-end suite runs against: "standin-<version>" for each stand-in version, and "real" when
    COMFYMQ_REAL_COMFYUI names a ComfyUI folder."""
    return [f"standin-{v}" for v in STANDIN_VERSIONS] + (["real"] if REAL_COMFYUI else [])


class ComfyUIs:
    """Starts ComfyUI instances for one test, all of one target (see comfyui_targets):

        comfyuis = ComfyUIs("standin-current", tmp_path)
        url = comfyuis.start("c1", models=["base.safetensors"])                        # plain ComfyUI
        url = comfyuis.start("c2", models=[...], plugin_env={"COMFYMQ_ROLE": "worker", ...})  # + this repo as a pack
        url = comfyuis.start("c3", flags=["--max-upload-size", "300"])                 # more of ComfyUI's flags

    A stand-in is `python -m tests.standin --comfyui-version V` (with `--with-plugin <repo>`). A real ComfyUI runs
    `main.py --cpu` from COMFYMQ_REAL_COMFYUI with COMFYMQ_REAL_COMFYUI_PYTHON, each instance in its own
    --base-directory under the test's temporary folder: custom_nodes there links the test nodes (SlowNode,
    FailNode) and, for a plugin instance, this repo; models/checkpoints holds empty files named as `models`.
    Nothing is written into the ComfyUI folder itself. output_dir(name) is where an instance saves files,
    input_dir(name) where it keeps uploaded ones (what LoadImage reads). `flags` go on the command line as they are
    (`--max-upload-size MB` both take; `--access-log` is the stand-in's alone)."""

    def __init__(self, target: str, tmp: Path):
        self.target, self.tmp = target, tmp
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def real(self) -> bool:
        return self.target == "real"

    def output_dir(self, name: str) -> Path:
        return self.tmp / (f"comfy-{name}" if self.real else f"out-{name}") / ("output" if self.real else "")

    def input_dir(self, name: str) -> Path:
        return self.tmp / (f"comfy-{name}" if self.real else f"in-{name}") / ("input" if self.real else "")

    def log(self, name: str) -> str:
        path = self.tmp / f"comfy-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str, *, models=(), plugin_env: dict | None = None, flags=(), timeout: float = 180.0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_")}
        env.update(PYTHONUNBUFFERED="1", **(plugin_env or {}))
        log = open(self.tmp / f"comfy-{name}.log", "w")
        if not self.real:
            version = self.target.removeprefix("standin-")
            args = [sys.executable, "-m", "tests.standin", "--port", "0", "--output-dir", str(self.output_dir(name))]
            args += ["--input-dir", str(self.input_dir(name))]
            args += ["--models", ",".join(models), "--comfyui-version", version]
            if plugin_env is not None:
                args += ["--with-plugin", str(REPO_ROOT)]
            args += list(flags)
            p = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
            self.procs[name] = p
            line = p.stdout.readline()
            assert line.startswith("READY"), f"stand-in {name} did not start: {line!r}; log: {self.log(name)}"
            return line.split()[-1]
        base = self.tmp / f"comfy-{name}"
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / "comfymq_test_nodes").symlink_to(TEST_NODES_PACK, target_is_directory=True)
        if plugin_env is not None:
            (base / "custom_nodes" / "comfymq").symlink_to(REPO_ROOT, target_is_directory=True)
        (base / "models" / "checkpoints").mkdir(parents=True)
        for model in models:
            (base / "models" / "checkpoints" / model).write_bytes(b"")
        port = free_port()
        args = [REAL_COMFYUI_PYTHON or sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
        args += ["--base-directory", str(base), "--disable-auto-launch", *flags]
        if "--disable-api-nodes" in (Path(REAL_COMFYUI) / "comfy" / "cli_args.py").read_text(errors="replace"):
            args.append("--disable-api-nodes")  # no internet, a quicker start
        self.procs[name] = p = subprocess.Popen(args, cwd=REAL_COMFYUI, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"

        def answers():
            assert p.poll() is None, f"ComfyUI {name} exited with {p.returncode}; log: {self.log(name)[-3000:]}"
            try:
                return http_json(url + "/system_stats", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout, f"the real ComfyUI {name} to answer", every=0.5)
        return url

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT if self.real else signal.SIGTERM)  # ComfyUI exits cleanly on Ctrl+C
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def cluster(tmp_path):
    """A QueueService with a real broker on 127.0.0.1 and one real native WorkerClient ("w1", node class TestJob)
    joined to it: (service, worker)."""
    from comfy_nodes import _native as native
    from comfy_nodes.service import BrokerSettings, QueueService

    svc = QueueService(tmp_path / "cluster", threads=8, broker=BrokerSettings(bind="tcp://127.0.0.1:0", heartbeat=0.2))
    worker = native.WorkerClient(
        broker=svc.broker.endpoint,
        worker_id="w1",
        name="box",
        capabilities={"node_classes": ["TestJob"]},
        heartbeat=0.2,
        reconnect_min=0.1,
        reconnect_max=0.5,
    )
    try:
        wait_for(lambda: any(w["id"] == "w1" and w["online"] for w in svc.broker.workers()))
        yield svc, worker
    finally:
        worker.close(bye=True)
        svc.close()


@pytest.fixture
def standin(tmp_path):
    """A ComfyUI stand-in (tests/standin) on a free port, outputs in tmp_path/out: its URL. For tests whose plugin or
    worker bridge drives a ComfyUI."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.standin", "--port", "0", "--output-dir", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    yield line.split()[-1]
    p.terminate()
    p.wait(timeout=10)
