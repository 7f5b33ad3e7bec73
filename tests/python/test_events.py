"""The browser event relay: job changes coalesce per job and flush as one message; a flood becomes a resync."""

from __future__ import annotations

import threading

from comfy_nodes.events import EventRelay


class Sink:
    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()

    def __call__(self, name, data):
        with self.lock:
            self.sent.append((name, data))


def test_job_changes_coalesce_per_job():
    sink = Sink()
    relay = EventRelay(sink, interval=3600)  # flushed by hand
    relay({"type": "job", "job_id": "a", "state": "pending", "from": "pending"})
    relay({"type": "job", "job_id": "a", "state": "running", "from": "pending", "worker": "w1"})
    relay({"type": "progress", "job_id": "a", "worker": "w1", "progress": {"value": 3, "max": 10}})
    relay({"type": "job", "job_id": "b", "state": "pending", "from": "pending"})
    relay.flush()
    assert len(sink.sent) == 1
    name, data = sink.sent[0]
    assert name == "comfymq.job" and data["resync"] is False
    jobs = {j["job_id"]: j for j in data["jobs"]}
    assert jobs["a"]["state"] == "running" and jobs["a"]["worker"] == "w1"
    assert jobs["a"]["progress"] == {"value": 3, "max": 10}
    assert jobs["b"]["state"] == "pending"
    relay({"type": "job", "job_id": "a", "state": "succeeded", "from": "running"})
    relay.flush()
    assert sink.sent[1][1]["jobs"] == [{"job_id": "a", "state": "succeeded", "from": "running"}]
    relay.flush()
    assert len(sink.sent) == 2, "nothing new, nothing sent"
    relay.close()


def test_a_thousand_jobs_become_one_resync_message():
    sink = Sink()
    relay = EventRelay(sink, interval=3600, max_jobs=200)
    for i in range(1000):
        relay({"type": "job", "job_id": f"{i:016x}", "state": "pending", "from": "pending"})
    relay.flush()
    assert sink.sent == [("comfymq.job", {"jobs": [], "resync": True, "changed": 1000})]
    relay.close()


def test_worker_and_queue_events_go_at_once_and_stats_at_most_each_second():
    sink = Sink()
    relay = EventRelay(sink, interval=3600)
    relay({"type": "worker", "event": "joined", "worker": {"id": "w1"}})
    relay({"type": "queue", "paused": True})
    assert sink.sent == [
        ("comfymq.worker", {"event": "joined", "worker": {"id": "w1"}}),
        ("comfymq.queue", {"paused": True}),
    ]
    relay({"type": "stats", "counts": {"pending": 1}})
    relay.flush()
    relay({"type": "stats", "counts": {"pending": 2}})
    relay.flush()  # within the same second: held back
    stats = [d for n, d in sink.sent if n == "comfymq.stats"]
    assert stats == [{"counts": {"pending": 1}}]
    relay.close()


def test_a_failing_send_does_not_stop_the_relay():
    calls = []

    def send(name, data):
        calls.append(name)
        raise ConnectionResetError("socket closed")

    relay = EventRelay(send, interval=3600)
    relay({"type": "job", "job_id": "a", "state": "pending"})
    relay.flush()
    relay({"type": "job", "job_id": "b", "state": "pending"})
    relay.flush()
    assert calls == ["comfymq.job", "comfymq.job"]
    relay.close()
