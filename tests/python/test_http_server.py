"""The standalone host's HTTP server (host/http_server.py, api/errors.py read_body) with real sockets against a real
host process: slow bodies, slow headers and idle connections are cut off in bounded time, and errors of the HTTP
layer itself are the documented JSON errors."""

from __future__ import annotations

import json
import socket
import time

import pytest
from conftest import graph
from http_host import HostProcess, read_answer, request_bytes

pytestmark = pytest.mark.subprocess

P = "/comfymq"
SHORT = ("--read-timeout", "1", "--body-timeout", "3", "--keepalive-timeout", "1")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with HostProcess(tmp_path_factory.mktemp("server"), *SHORT) as h:
        yield h


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed sock (reads return b"" or reset); AssertionError after `seconds`."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        raise AssertionError(f"the connection was still open after {seconds} s") from None
    except ConnectionError:
        pass
    return time.monotonic() - start


def total_jobs(host) -> int:
    return host.json("GET", f"{P}/stats")[1]["total"]


# ---- timeouts ---------------------------------------------------------------------------------------------


def test_a_stalled_body_gets_408_and_the_connection_closes(host):
    before = total_jobs(host)
    with host.connect() as s:
        s.sendall(
            request_bytes("POST", f"{P}/jobs", None, {"Content-Type": "application/json", "Content-Length": "5000"})
            + b'{"prompt": '
        )
        t0 = time.monotonic()
        a = read_answer(s, 10)
        took = time.monotonic() - t0
        assert a.status == 408 and a.is_json_error, a
        assert "http_read_timeout" in a.json()["error"]["message"]
        assert took < 5, took  # the read timeout is 1 s; a guard against waiting for the body forever
        closed_within(s, 10)  # after aiohttp's lingering time (2 s): what still comes is read and dropped
    assert total_jobs(host) == before


def test_a_trickling_body_is_cut_off_at_the_body_timeout(host):
    """One byte every 0.3 s never trips the 1 s read timeout; the 3 s body timeout ends it."""
    with host.connect() as s:
        s.sendall(
            request_bytes("POST", "/tasks", None, {"Content-Type": "application/json", "Content-Length": "100000"})
        )
        t0 = time.monotonic()
        answer = None
        while time.monotonic() - t0 < 15:
            try:
                s.sendall(b" ")
            except OSError:
                break
            s.settimeout(0.3)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            rest = read_answer(s, 5)
            answer = data + rest.body if rest.status == 0 else data
            break
        took = time.monotonic() - t0
    assert answer is not None and b" 408 " in answer.split(b"\r\n", 1)[0], answer
    assert b"http_body_timeout" in answer
    assert 2 <= took < 10, took


def test_slow_headers_are_cut_off(host):
    """A slow-loris on the request head: a header line every 0.3 s, never the blank line."""
    with host.connect() as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        cut = False
        while time.monotonic() - t0 < 15:
            try:
                s.sendall(b"X-Slow: 1\r\n")
                s.settimeout(0.3)
                if s.recv(65536) == b"":
                    cut = True
                    break
            except socket.timeout:
                continue
            except OSError:
                cut = True
                break
        took = time.monotonic() - t0
    assert cut and took < 5, took


def test_idle_connections_are_closed(host):
    with host.connect() as s:  # never sends anything
        assert closed_within(s, 5) < 5
    with host.connect() as s:  # keep-alive: one request, then idle
        s.sendall(request_bytes("GET", "/health", headers={"Connection": "keep-alive"}))
        a = read_answer(s, 5)
        assert a.status == 200
        assert closed_within(s, 5) < 5


def test_a_connection_in_use_is_not_cut(host):
    """Requests one after another on a keep-alive connection, each within the idle timeout."""
    with host.connect() as s:
        for _ in range(4):
            s.sendall(request_bytes("GET", "/health", headers={"Connection": "keep-alive"}))
            assert read_answer(s, 5).status == 200
            time.sleep(0.5)


# ---- errors of the HTTP layer as JSON ------------------------------------------------------------------------


HEAD = b"Host: 127.0.0.1\r\nConnection: close\r\n"
BAD_REQUESTS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad method": b"G(E)T /health HTTP/1.1\r\n" + HEAD + b"\r\n",
    "bad version": b"GET /health HTTP/9.x\r\n" + HEAD + b"\r\n",
    "over-long URL": b"GET /comfymq/tasks?" + b"a" * 20000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n",
    "over-long header": b"GET /health HTTP/1.1\r\n" + HEAD + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
    "too many headers": b"GET /health HTTP/1.1\r\n" + HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n",
    "header without a colon": b"GET /health HTTP/1.1\r\n" + HEAD + b"NoColonHere\r\n\r\n",
    "NUL in a header": b"GET /health HTTP/1.1\r\n" + HEAD + b"X-A: a\x00b\r\n\r\n",
    "space before a colon": b"GET /health HTTP/1.1\r\n" + HEAD + b"X-A : b\r\n\r\n",
    "bad Content-Length": b"POST /tasks HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    b"Content-Length: abc\r\n\r\n{}",
    "two Content-Lengths": b"POST /tasks HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": b"POST /tasks HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "bad chunk size": b"POST /tasks HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "unknown transfer coding": b"POST /tasks HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: gzip\r\n\r\n{}",
    "binary": bytes(range(256)) * 4,
    "TLS hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 200,
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_http_layer_errors_are_json(host, name):
    a = host.raw(BAD_REQUESTS[name])
    assert 400 <= a.status < 500, (name, a)
    assert a.is_json_error, (name, a)
    assert "Traceback" not in a.body.decode("utf-8", "replace")


def test_the_host_keeps_serving_and_logs_no_tracebacks(host):
    for data in BAD_REQUESTS.values():
        host.raw(data)
    status, body = host.json("POST", f"{P}/jobs", {"prompt": graph()})
    assert status == 200, body
    assert "Traceback" not in host.output()


def test_a_json_body_cut_short_is_a_400_not_a_500(host):
    """The client half-closes after part of a Content-Length body."""
    with host.connect() as s:
        s.sendall(
            request_bytes("POST", "/tasks", None, {"Content-Type": "application/json", "Content-Length": "400"})
            + b'{"prompt": {'
        )
        s.shutdown(socket.SHUT_WR)
        a = read_answer(s, 10)
    assert a.status in (0, 400), a  # closed without an answer is fine too: nobody is left to read one
    if a.status:
        assert a.is_json_error and json.loads(a.body)["error"]["type"] in ("bad_body", "bad_request")
