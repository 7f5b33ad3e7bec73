"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread that records every request and
answers as told (a status per request, or hangs), and checks signatures with the Standard Webhooks library.

    with Receiver() as r:
        r.answers = [500, 500]      # the first two requests get 500, then 200
        ...
        r.wait(lambda reqs: len(reqs) >= 3)
        r.verified(secret)          # every request's signature checked; returns the parsed bodies
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []  # {"path", "headers" (lower-case names), "body" (bytes)}
        self.answers: list[int] = []  # statuses for the next requests (then 200)
        self.hang = threading.Event()  # while set, requests are read and then held unanswered
        self._cv = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._cv:
                    receiver.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver._cv.notify_all()
                while receiver.hang.is_set():
                    time.sleep(0.05)
                    if getattr(receiver, "_closing", False):
                        return
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing = True
        self.hang.clear()
        self.server.shutdown()
        self.server.server_close()

    def wait(self, predicate, timeout: float = 30.0) -> list[dict]:
        end = time.monotonic() + timeout
        with self._cv:
            while not predicate(self.requests):
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the receiver did not see what was awaited; it got {len(self.requests)}")
                self._cv.wait(left)
            return list(self.requests)

    def verified(self, secret: str) -> list[dict]:
        """Every request so far checked with the Standard Webhooks reference library; their parsed bodies."""
        from standardwebhooks.webhooks import Webhook

        hook = Webhook(secret)
        out = []
        for r in list(self.requests):
            out.append(hook.verify(r["body"], r["headers"]))
        return out


def bodies(requests: list[dict]) -> list[dict]:
    return [json.loads(r["body"]) for r in requests]
