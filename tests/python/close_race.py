"""Closes a Broker and a WorkerClient from one thread while another waits in next_event / next_job without
the GIL, many times over (run by test_close_race.py in its own process, so a crash is an exit code)."""

import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from comfy_nodes import _native as native  # noqa: E402


def waiter(call, out):
    try:
        out.append(call(5.0))
    except native.ComfyMQError as e:  # "closed": as good as None
        out.append(str(e))


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = native.Store(str(Path(tmp) / "store"))
        for i in range(rounds):
            broker = native.Broker(
                store, bind="tcp://127.0.0.1:*", artifact_root=str(Path(tmp) / "art"), heartbeat=0.05
            )
            worker = native.WorkerClient(broker=broker.endpoint, worker_id=f"w{i}", heartbeat=0.05)
            got: list = []
            threads = [
                threading.Thread(target=waiter, args=(broker.next_event, got)),
                threading.Thread(target=waiter, args=(worker.next_job, got)),
                threading.Thread(target=waiter, args=(worker.next_event, got)),
            ]
            for t in threads:
                t.start()
            # let them block inside the native calls, then close under them (from this thread)
            threading.Event().wait(0.002 * (i % 5))
            worker.close()
            broker.close()
            for t in threads:
                t.join(timeout=10)
                assert not t.is_alive(), "a waiting call did not return after close"
            # a call after close is a clear error, not a crash
            for call in (broker.next_event, worker.next_job):
                try:
                    call(0.01)
                except native.ComfyMQError:
                    pass
                else:
                    raise AssertionError("a call on a closed object must raise")
        store.close()
    print("ok", rounds)


if __name__ == "__main__":
    main(int(sys.argv[1]))
