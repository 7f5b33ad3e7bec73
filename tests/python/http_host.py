"""Test helpers for HTTP tests against a real standalone host process (`python -m comfy_nodes host`) on loopback:
start it on a free port with any flags, send raw bytes and read the answer, read its peak memory.

    with HostProcess(tmp_path, "--token=sekrit-token") as host:
        answer = host.raw(b"GET /health HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")   # Answer(status, headers, body)
        status, body = host.json("POST", "/comfymq/tasks", {"prompt": ...})
        host.peak_rss_kib()

sized_prompt(n) makes a realistic API-format graph of about n bytes of JSON, for tests of request sizes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
JSON_HEADERS = {"Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int  # 0: the connection closed without an answer
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self):
        return json.loads(self.body)

    @property
    def is_json_error(self) -> bool:
        """{"error": {"type": str, "code": the same, "message": str}} with a JSON content type, and nothing else."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        try:
            body = json.loads(self.body)
        except ValueError:
            return False
        err = body.get("error") if isinstance(body, dict) else None
        return (
            set(body) == {"error"}
            and isinstance(err, dict)
            and set(err) == {"type", "code", "message"}
            and err["code"] == err["type"]
            and all(isinstance(err[k], str) and err[k] for k in ("type", "message"))
        )


def read_answer(sock: socket.socket, timeout: float, head: bool = False) -> Answer:
    """One HTTP/1.1 answer from sock (Content-Length or connection close); status 0 if none came. head: the
    answer to a HEAD request (headers only, whatever Content-Length says)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    top, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return Answer(0, {}, data)
    lines = top.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return Answer(0, {}, data)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = 0 if head else int(headers.get("content-length", "-1"))
    try:
        while length < 0 or len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except (socket.timeout, ConnectionError):
        pass
    return Answer(status, headers, rest[:length] if length >= 0 else rest)


def request_bytes(
    method: str, path: str, body: bytes | None = None, headers: dict | None = None, host: str = "127.0.0.1"
) -> bytes:
    """A well-formed HTTP/1.1 request (Connection: close) as bytes; headers may override Host."""
    h = {"Host": host, "Connection": "close"}
    h.update(headers or {})
    if body is not None:
        h["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Endpoint:
    """Requests to an HTTP server on 127.0.0.1:port, one connection each."""

    def __init__(self, port: int):
        self.port = port

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def raw(self, data: bytes, timeout: float = 10.0) -> Answer:
        """Sends data on a new connection and reads one answer."""
        with self.connect() as s:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered (and closed) before all of it went out: the answer is still there to read
            return read_answer(s, timeout, head=data.startswith(b"HEAD "))

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60.0
    ) -> Answer:
        return self.raw(request_bytes(method, path, body, headers), timeout)

    def json(self, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 60.0):
        """(status, parsed JSON) of a request as our clients send it (Content-Type on every non-GET)."""
        h = dict(JSON_HEADERS) if method != "GET" else {}
        h.update(headers or {})
        raw = json.dumps(body).encode() if body is not None else None
        a = self.request(method, path, raw, h, timeout)
        return a.status, (json.loads(a.body) if a.body else None)


class HostProcess(Endpoint):
    """`python -m comfy_nodes host` on 127.0.0.1 and a free port (no broker unless flags give one), with its
    output in <tmp>/host-<port>.log."""

    def __init__(self, tmp: Path, *flags: str, env: dict | None = None, data_dir: Path | None = None):
        super().__init__(_free_port())
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(data_dir or tmp / f"host-{self.port}")
        self.log_path = Path(tmp) / f"host-{self.port}.log"
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMQ_") and k != "PYTHONPATH"}
        run_env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        run_env.update(env or {})
        args = ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        if not any(f.startswith("--workers-bind") for f in flags):
            args += ["--workers-bind", "off"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comfy_nodes", "host", *args, *flags],
            cwd=REPO_ROOT,
            env=run_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> "HostProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"the host exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.raw(request_bytes("GET", "/health"), timeout=2).status in (200, 401, 503):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the host did not answer within {timeout} s:\n{self.output()}")

    def peak_rss_kib(self) -> int:
        """The host process's peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


# ---- prompts of a given size -----------------------------------------------------------------------------


def api_prompt(text_bytes: int) -> dict:
    """A realistic API graph whose prompt text makes it about text_bytes long (quotes in it, as real prompts
    have, so the request body escapes them)."""
    words = " ".join(f'"w{i}"' for i in range(text_bytes // 5))[:text_bytes]
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 5,
                "steps": 20,
                "cfg": 7.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": words, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "amp"}},
    }


def sized_prompt(total_bytes: int) -> dict:
    """api_prompt() grown until its JSON text is just under total_bytes."""
    base = len(json.dumps(api_prompt(0)))
    g = api_prompt(max(0, total_bytes - base - 16))
    while (over := len(json.dumps(g)) - total_bytes) > 0:  # a character takes one or two bytes as JSON
        g["6"]["inputs"]["text"] = g["6"]["inputs"]["text"][:-over]
    return g
