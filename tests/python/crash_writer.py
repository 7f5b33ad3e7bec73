"""A process for the crash tests: drives a store through the Python face and prints one line per
acknowledged change (after the call returned), until it is killed.

    python crash_writer.py STORE_DIR SEQ_BASE SEED

Lines: "E <seq>" enqueued, "C <seq>" completed, "X <seq>" cancelled, "D <seq>" delete issued (printed
before the call: the job may be gone whether or not the delete was acknowledged).
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from comfy_nodes import _native as native  # noqa: E402


def prompt(seq: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"seq": seq, "pad": "p" * (seq % 700)}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }


def main() -> None:
    store_dir, base, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = native.Store(store_dir, segment_bytes=256 << 10, checkpoint_every_bytes=1 << 20, reopen_lease_grace=0)
    seq = base
    out = sys.stdout
    while True:
        op = rng.random()
        if op < 0.45:
            store.enqueue(prompt(seq), prompt_id=f"p{seq}", priority=rng.randint(0, 2))
            out.write(f"E {seq}\n")
            out.flush()
            seq += 1
        elif op < 0.55:
            jobs = [{"prompt": prompt(seq + i), "prompt_id": f"p{seq + i}"} for i in range(rng.randint(2, 10))]
            store.enqueue_many(jobs)
            out.write("".join(f"E {seq + i}\n" for i in range(len(jobs))))
            out.flush()
            seq += len(jobs)
        elif op < 0.85:
            lease = store.take("py-worker")
            if lease is None:
                continue
            s = lease["job"]["prompt"]["1"]["inputs"]["seq"]
            if rng.random() < 0.8:
                store.complete(lease["job_id"], lease["token"], outputs={"2": {"seq": s}})
                out.write(f"C {s}\n")
                out.flush()
            else:
                store.fail(lease["job_id"], lease["token"], {"type": "execution_error", "message": "x"})
        elif op < 0.93:
            page = store.list(state="pending", limit=3, with_prompt=True)["jobs"]
            if page:
                j = page[0]
                store.cancel(j["id"], "test")
                out.write(f"X {j['prompt']['1']['inputs']['seq']}\n")
                out.flush()
        elif op < 0.97:
            page = store.list(state="succeeded", limit=2, with_prompt=True)["jobs"]
            if page:
                out.write(f"D {page[0]['prompt']['1']['inputs']['seq']}\n")
                out.flush()
                store.delete(page[0]["id"])
        else:
            store.checkpoint() if rng.random() < 0.7 else store.compact()


if __name__ == "__main__":
    main()
