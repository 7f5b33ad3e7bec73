"""close() of a Broker or WorkerClient while other threads wait in its blocking calls (as the plugin's event
pump does at shutdown) must never free the object under them (a use-after-free here was a SIGSEGV at exit),
and the first JSON conversions racing on two threads must not deadlock (they once did, on a static's guard)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_closing_under_waiting_calls_does_not_crash(subprocess_env):
    r = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("close_race.py")), "200"],
        cwd=REPO,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.strip() == "ok 200"
