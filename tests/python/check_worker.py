#!/usr/bin/env python3
"""End-to-end check of the example job worker, examples/worker-python/worker.py.

Starts the real binary (HERALD_BIN, default <repo>/target/release/herald) on a loopback port with
a fresh data dir and a config declaring a queue, submits jobs over signed HTTP (signed here, apart
from the worker's own signing), runs the worker as a subprocess, and checks through the API what
became of each job:
  * five jobs: `--max-jobs 5` finishes each with the right sum, after two progress reports;
  * a payload the work cannot use is failed for good (not retried);
  * a job cancelled under the worker (its next report gets 409) is dropped, and the next one done;
  * Ctrl-C while the worker waits for a job stops it promptly with status 0;
  * a worker with the wrong secret exits with status 2 instead of retrying forever.
Exits non-zero on any failure and ends with a line "N passed, N failed".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
HERALD_BIN = Path(os.environ.get("HERALD_BIN") or (HERE / "../../target/release/herald")).resolve()
WORKER = (HERE / "../../examples/worker-python/worker.py").resolve()
LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)")
WORKER_TIMEOUT = float(os.environ.get("HERALD_WORKER_TIMEOUT", "60"))

APP_ID, APP_KEY, APP_SECRET = "1", "worker-key", "worker-secret"
QUEUE = "reports"

# The worker checks the numbers itself; this schema only asks for the field, so that the
# "bad payload" check can reach the worker.
CONFIG = f"""
[[apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"

[[apps.queues]]
name = "{QUEUE}"
schema = '{{"type":"object","required":["numbers"]}}'
lease_secs = 30
max_attempts = 3
retry_backoff_secs = 1
"""


class Herald:
    """The server process, started on 127.0.0.1:0; stopped by its PID."""

    def __init__(self) -> None:
        if not HERALD_BIN.exists():
            raise SystemExit(f"herald binary not found at {HERALD_BIN} (set HERALD_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="herald-worker-"))
        config = self.dir / "herald.toml"
        config.write_text(CONFIG)
        self.proc = subprocess.Popen(
            [str(HERALD_BIN), "serve", "--bind", "127.0.0.1:0",
             "--data-dir", str(self.dir / "data"), "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.lines: list[str] = []
        found: queue.Queue[int] = queue.Queue()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream, found), daemon=True).start()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.port = found.get(timeout=0.2)
                break
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    time.sleep(0.2)  # let the pumps collect the last lines
                    self.stop()
                    raise SystemExit("herald did not report its port:\n" + "\n".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}"

    def _pump(self, stream, found: queue.Queue[int]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            m = LISTEN_RE.search(line)
            if m:
                found.put(int(m.group(2)))

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A signed request to /apps/{id}{path}; returns (status, parsed JSON or text)."""
        path = f"/apps/{APP_ID}{path}"
        data = b"" if body is None else json.dumps(body).encode()
        params = {"auth_key": APP_KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
        if data:
            params["body_md5"] = hashlib.md5(data).hexdigest()
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        signature = hmac.new(APP_SECRET.encode(), f"{method}\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()
        response = requests.request(method, f"{self.url}{path}?{query}&auth_signature={signature}",
                                    data=data or None, timeout=10)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_command(*args: str) -> list[str]:
    return [sys.executable, str(WORKER), "--queue", QUEUE, "--step-secs", "0", *args]


def worker_env(herald: Herald, secret: str = APP_SECRET) -> dict[str, str]:
    return {**os.environ, "HERALD_URL": herald.url, "HERALD_APP_ID": APP_ID,
            "HERALD_APP_KEY": APP_KEY, "HERALD_APP_SECRET": secret}


def run_worker(herald: Herald, *args: str, secret: str = APP_SECRET) -> subprocess.CompletedProcess[str]:
    """Runs the worker to completion (bounded by WORKER_TIMEOUT); its log is echoed on failure."""
    return subprocess.run(worker_command(*args), env=worker_env(herald, secret), capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT)


def submit(herald: Herald, payload: Any, user: str | None = None) -> str:
    status, body = herald.api("POST", f"/queues/{QUEUE}/jobs", {"payload": payload, "user_id": user})
    assert status == 201, (status, body)
    return body["job"]["id"]


def job(herald: Herald, job_id: str) -> dict[str, Any]:
    status, body = herald.api("GET", f"/jobs/{job_id}")
    assert status == 200, (status, body)
    return body["job"]


def counts(herald: Herald) -> dict[str, int]:
    status, body = herald.api("GET", f"/queues/{QUEUE}")
    assert status == 200, (status, body)
    return body["counts"]


def main() -> int:
    if not WORKER.exists():
        raise SystemExit(f"worker not found at {WORKER}")
    herald = Herald()
    results: list[tuple[str, str | None]] = []

    def check(name: str, fn) -> None:
        try:
            fn()
            results.append((name, None))
            print(f"ok - {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, f"{type(e).__name__}: {e}"))
            print(f"not ok - {name}\n{traceback.format_exc()}")

    def test_five_jobs() -> None:
        payloads = [[1, 2, 3], [10, 20, 30, 40], [], [7], [-5, 2.5, 100]]
        ids = [submit(herald, {"numbers": numbers}, user="ann" if i == 0 else None)
               for i, numbers in enumerate(payloads)]
        done = run_worker(herald, "--max-jobs", "5")
        assert done.returncode == 0, f"worker exited {done.returncode}:\n{done.stderr}"
        for job_id, numbers in zip(ids, payloads):
            got = job(herald, job_id)
            assert got["state"] == "succeeded", (got, done.stderr)
            assert got["result"] == {"sum": sum(numbers), "count": len(numbers)}, got
            assert got["progress"] == {"done": len(numbers), "total": len(numbers)}, got
            assert got["attempts"] == 1, got
            # submit, claim, two progress reports, finish
            assert got["version"] == 5, got
        c = counts(herald)
        assert (c["succeeded"], c["queued"], c["running"]) == (5, 0, 0), c

    def test_bad_payload() -> None:
        job_id = submit(herald, {"numbers": "one, two"})
        done = run_worker(herald, "--max-jobs", "1")
        assert done.returncode == 0, f"worker exited {done.returncode}:\n{done.stderr}"
        got = job(herald, job_id)
        assert got["state"] == "failed", (got, done.stderr)
        assert "numbers" in (got["error"] or ""), got
        assert got["attempts"] == 1, got

    def test_stale_lease() -> None:
        cancelled = submit(herald, {"numbers": [1, 2]})
        proc = subprocess.Popen(worker_command("--max-jobs", "2", "--step-secs", "1"), env=worker_env(herald),
                                stderr=subprocess.PIPE, text=True)
        try:
            # The worker is in its first second of work on the job: cancel it under the worker,
            # whose next report then gets 409.
            deadline = time.monotonic() + 10
            while job(herald, cancelled)["state"] != "running":
                assert time.monotonic() < deadline, "the worker did not claim the job"
                time.sleep(0.02)
            status, body = herald.api("POST", f"/jobs/{cancelled}/cancel", {})
            assert status == 200, (status, body)
            following = submit(herald, {"numbers": [3, 4]})
            _, log_text = proc.communicate(timeout=WORKER_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{log_text}"
        assert "lease lost" in log_text, log_text
        dropped = job(herald, cancelled)
        assert (dropped["state"], dropped["result"]) == ("cancelled", None), dropped
        done = job(herald, following)
        assert (done["state"], done["result"]) == ("succeeded", {"sum": 7, "count": 2}), (done, log_text)

    def test_ctrl_c_while_idle() -> None:
        proc = subprocess.Popen(worker_command(), env=worker_env(herald), stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # printed once the signal handlers are in place
            assert "claiming from queue" in first, first
            time.sleep(0.5)  # now inside the claim's long-poll
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=5)
            rest = proc.stderr.read()
            assert code == 0, f"exit {code}: {first}{rest}"
            assert time.monotonic() - started < 3, "did not stop promptly"
            assert "Traceback" not in rest, rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_wrong_secret() -> None:
        done = run_worker(herald, "--max-jobs", "1", secret="not-the-secret")
        assert done.returncode == 2, f"worker exited {done.returncode}:\n{done.stderr}"
        assert "401" in done.stderr, done.stderr

    try:
        check("five jobs: the worker finishes each with the right sum and progress", test_five_jobs)
        check("a payload the work cannot use is failed for good", test_bad_payload)
        check("a job whose lease went stale (409) is dropped, the next one done", test_stale_lease)
        check("Ctrl-C while waiting for a job stops the worker at once, status 0", test_ctrl_c_while_idle)
        check("wrong secret: the worker exits with status 2", test_wrong_secret)
    finally:
        herald.stop()

    failed = sum(1 for _, err in results if err)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
