#!/usr/bin/env python3
"""A Herald job worker in plain Python: `requests`, hashlib and hmac, no Pusher SDK.

It long-polls one queue for a job, reports progress while it works, and finishes the job with a
result. The "work" is a stand-in: it sums `payload["numbers"]` in two halves, reporting progress
after each, and finishes with {"sum": ..., "count": ...}. Replace `work()` with yours.

    pip install requests
    python worker.py --queue reports

Settings come from flags or the environment (flags win):
    HERALD_URL         --url         http://127.0.0.1:6001
    HERALD_APP_ID      --app-id      1
    HERALD_APP_KEY     --key         herald-dev-key
    HERALD_APP_SECRET  --secret      herald-dev-secret
    HERALD_QUEUE       --queue       reports
                       --max-jobs N  exit after N jobs (finished, failed or lost); default: run forever
                       --step-secs S pretend each half of the work takes S seconds (default 0.5)

What it handles:
  * 204 from claim (nothing arrived within the wait): claims again.
  * 409 on a report: the lease is stale (this worker was too slow, the job went back to the queue
    and another worker has it). The job is dropped, not retried: the newer attempt owns it.
  * Network errors, 429 and 5xx: retried with exponential backoff (capped); a report is retried
    only while the lease lasts.
  * A payload the work cannot use: failed for good (retry: false), so it is not claimed again.
  * Ctrl-C / SIGTERM: while waiting for a job, stops at once; while working, finishes the job
    first. A second Ctrl-C quits immediately (the job comes back after its lease runs out).
Other 4xx answers to a claim (wrong credentials: 401, unknown queue: 404) are a configuration
error: the worker says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import signal
import sys
import time
from typing import Any

import requests

CLAIM_WAIT_SECS = 20  # the server caps a claim's wait at 25 s
MAX_BACKOFF_SECS = 30.0


class StaleLease(Exception):
    """409: the job was handed to another worker after this worker's lease ran out."""


class Refused(Exception):
    """A 4xx answer that retrying will not change."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text.strip()}")
        self.status = status


class Transient(Exception):
    """A network error, 429 or 5xx: worth retrying after a pause."""


def log(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


class Herald:
    """Signed requests to one app's HTTP API (Pusher request signing, auth_version 1.0)."""

    def __init__(self, url: str, app_id: str, key: str, secret: str) -> None:
        self.url = url.rstrip("/")
        self.app_id = app_id
        self.key = key
        self.secret = secret.encode()
        self.http = requests.Session()

    def sign(self, method: str, path: str, body: bytes) -> str:
        """The query string: auth params (+ body_md5 when there is a body) and their signature."""
        params = {
            "auth_key": self.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
        }
        if body:
            params["body_md5"] = hashlib.md5(body).hexdigest()
        query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        to_sign = f"{method}\n{path}\n{query}".encode()
        signature = hmac.new(self.secret, to_sign, hashlib.sha256).hexdigest()
        return f"{query}&auth_signature={signature}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        """Sends a signed request to /apps/{id}{path}; returns (status, parsed JSON or None).

        Raises Transient for network errors, 429 and 5xx; StaleLease for 409; Refused for other 4xx.
        """
        path = f"/apps/{self.app_id}{path}"
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        url = f"{self.url}{path}?{self.sign(method, path, data)}"
        try:
            response = self.http.request(
                method, url, data=data or None, timeout=timeout,
                headers={"Content-Type": "application/json"} if data else None,
            )
        except requests.RequestException as e:
            # (the exception's text holds the whole signed URL: the name says enough)
            raise Transient(f"{type(e).__name__} from {self.url}") from e
        status = response.status_code
        if status == 409:
            raise StaleLease(response.text.strip())
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status}: {response.text.strip()}")
        if status >= 400:
            raise Refused(status, response.text)
        if status == 204 or not response.content:
            return status, None
        try:
            return status, response.json()
        except ValueError as e:
            raise Transient(f"HTTP {status} with a body that is not JSON: {response.text[:200]!r}") from e


class Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to MAX_BACKOFF_SECS."""

    def __init__(self) -> None:
        self.failures = 0

    def delay(self) -> float:
        self.failures += 1
        base = min(MAX_BACKOFF_SECS, 0.5 * 2 ** (self.failures - 1))
        return base / 2 + random.uniform(0, base / 2)

    def reset(self) -> None:
        self.failures = 0


class Stop:
    """Ctrl-C / SIGTERM: the first asks to stop (at once when idle), the second quits now."""

    def __init__(self) -> None:
        self.requested = False
        self.idle = True  # waiting for a job, not holding one
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, _frame: Any) -> None:
        if self.requested or self.idle:
            self.requested = True
            raise KeyboardInterrupt
        self.requested = True
        log(f"{signal.Signals(signum).name}: finishing the current job, then stopping (again to quit now)")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))


class Job:
    """One claimed job: its id, payload and lease, and the reports that quote the lease."""

    def __init__(self, herald: Herald, claimed: dict[str, Any]) -> None:
        self.herald = herald
        self.id: str = claimed["id"]
        self.payload: Any = claimed.get("payload")
        self.attempts: int = claimed.get("attempts", 1)
        self.lease: str = claimed["lease"]
        self.lease_until_ms: int = claimed.get("lease_until") or 0

    def report(self, action: str, **fields: Any) -> dict[str, Any]:
        """POSTs /jobs/{id}/{action} with the lease; retries transient errors while the lease lasts.

        Raises StaleLease (409) or Refused; returns the job as the server now has it. (A retried
        finish whose first try did land is also answered 409: the job is no longer running.)
        """
        backoff = Backoff()
        while True:
            try:
                _, answer = self.herald.call("POST", f"/jobs/{self.id}/{action}", {"lease": self.lease, **fields})
                job = (answer or {}).get("job") or {}
                self.lease_until_ms = job.get("lease_until") or self.lease_until_ms
                return job
            except Transient as e:
                pause = backoff.delay()
                if time.time() + pause >= self.lease_until_ms / 1000:
                    raise StaleLease(f"{action} kept failing until the lease ran out ({e})") from e
                log(f"job {self.id}: {action} failed ({e}); retrying in {pause:.1f}s")
                time.sleep(pause)

    def progress(self, progress: Any) -> None:
        self.report("progress", progress=progress)

    def keep_alive(self, needed_secs: float) -> None:
        """Extends the lease if it would run out within `needed_secs`."""
        if self.lease_until_ms / 1000 - time.time() < needed_secs + 5:
            self.report("extend")


class BadPayload(Exception):
    """The payload cannot be worked on; retrying will not help."""


def work(job: Job, step_secs: float) -> dict[str, Any]:
    """The stand-in for real work: sums payload["numbers"] in two halves, with progress reports."""
    numbers = job.payload.get("numbers") if isinstance(job.payload, dict) else None
    if not isinstance(numbers, list) or not all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
    ):
        raise BadPayload('the payload must be {"numbers": [<number>, ...]}')
    half = len(numbers) // 2
    total = 0
    for done, chunk in ((half, numbers[:half]), (len(numbers), numbers[half:])):
        job.keep_alive(step_secs)
        time.sleep(step_secs)  # pretend this is slow
        total += sum(chunk)
        job.progress({"done": done, "total": len(numbers)})
    return {"sum": total, "count": len(numbers)}


def run(args: argparse.Namespace) -> int:
    herald = Herald(args.url, args.app_id, args.key, args.secret)
    stop = Stop()
    backoff = Backoff()
    handled = 0
    log(f"claiming from queue {args.queue!r} at {herald.url} (app {herald.app_id})")
    try:
        while not stop.requested and (args.max_jobs is None or handled < args.max_jobs):
            # Idle: a Ctrl-C here interrupts the long-poll at once.
            stop.idle = True
            try:
                _, answer = herald.call("POST", f"/queues/{args.queue}/claim", {"wait_secs": CLAIM_WAIT_SECS},
                                        timeout=CLAIM_WAIT_SECS + 10)
            except Transient as e:
                pause = backoff.delay()
                log(f"claim failed ({e}); retrying in {pause:.1f}s")
                stop.sleep(pause)
                continue
            except Refused as e:
                log(f"claim refused, check the URL, app id, key, secret and queue name: {e}")
                return 2
            backoff.reset()
            if answer is None:  # 204: nothing within the wait
                continue
            claimed = answer.get("job") if isinstance(answer, dict) else None
            if not isinstance(claimed, dict) or not isinstance(claimed.get("id"), str) or "lease" not in claimed:
                log(f"a claim answered something that is not a job: {answer!r}")
                continue
            stop.idle = False
            handle(Job(herald, claimed), args.step_secs)
            handled += 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130 if not stop.idle else 0
    log(f"stopping after {handled} job(s)")
    return 0


def handle(job: Job, step_secs: float) -> None:
    """Works on one claimed job and reports how it ended; never raises for the job's own faults."""
    log(f"job {job.id}: claimed (attempt {job.attempts}), payload {json.dumps(job.payload)}")
    try:
        try:
            result = work(job, step_secs)
        except BadPayload as e:
            job.report("fail", error=str(e), retry=False)
            log(f"job {job.id}: failed for good: {e}")
            return
        except (StaleLease, Refused):
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the work: let the queue retry it later
            job.report("fail", error=f"{type(e).__name__}: {e}", retry=True)
            log(f"job {job.id}: failed, will be retried: {e}")
            return
        job.report("finish", result=result)
        log(f"job {job.id}: finished with {json.dumps(result)}")
    except StaleLease as e:
        log(f"job {job.id}: lease lost, dropping the job (another worker has it, or it was cancelled): {e}")
    except Refused as e:
        log(f"job {job.id}: report refused, dropping the job: {e}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="A Herald job worker (plain HTTP, no SDK).")
    p.add_argument("--url", default=env("HERALD_URL", "http://127.0.0.1:6001"))
    p.add_argument("--app-id", default=env("HERALD_APP_ID", "1"))
    p.add_argument("--key", default=env("HERALD_APP_KEY", "herald-dev-key"))
    p.add_argument("--secret", default=env("HERALD_APP_SECRET", "herald-dev-secret"))
    p.add_argument("--queue", default=env("HERALD_QUEUE", "reports"))
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="exit after N jobs")
    p.add_argument("--step-secs", type=float, default=0.5, metavar="S",
                   help="how long each half of the stand-in work takes")
    args = p.parse_args(argv)
    if args.max_jobs is not None and args.max_jobs < 1:
        p.error("--max-jobs must be at least 1")
    if args.step_secs < 0:
        p.error("--step-secs must not be negative")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
