#!/usr/bin/env python3
"""The query runner's worker: claims SQL queries from Herald's `queries` queue and runs them.

Python 3.11 standard library only; signed HTTP calls go through examples/common/herald_api.py.

On start it creates and seeds a local SQLite database (a `sales` table: one year of orders,
deterministic) unless it exists. A job's payload is {"sql": "SELECT ...", "title"?: "..."}. The
query runs for real, month by month, to stand in for a slow warehouse: after month k the worker
runs the query over January..k (a temporary view `sales` over the months done so far), reports
progress {"pct", "step", "steps", "rows"} and waits `--step-secs` (2.5 s by default, so a job
takes ~30 s). After December the result is the query's answer over the whole year; the job is
finished with {"columns", "rows" (at most --max-rows), "row_count", "truncated"}.

Only reads are allowed: the database is opened read-only and an authorizer refuses anything but
SELECT, reads and functions; a statement that runs longer than --query-timeout is interrupted.
A query that fails (bad SQL, a write) fails the job for good (retry: false).

    python3 worker.py                      # HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET
    python3 worker.py --step-secs 0.3      # a fast job (tests)

What it handles:
  * 204 from claim (nothing within the wait): claims again.
  * 409 on a report: the lease is stale (this worker was too slow or away, the job went back to
    the queue and another attempt owns it): the job is dropped, not retried.
  * Herald unreachable, 429, 5xx: retried with exponential backoff and jitter (capped at 10 s); a
    report is retried only while the lease lasts.
  * kill -9 of the worker: nothing to do here; the lease runs out, Herald puts the job back in the
    queue, and the next worker that claims it runs it from the start.
  * Ctrl-C / SIGTERM: stops at once when idle; while running a job, stops after it (again: now).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from herald_api import Backoff, Herald, HeraldError, claim_jobs, is_transient  # noqa: E402

CLAIM_WAIT_SECS = 20  # Herald caps a claim's wait at 25 s
MAX_BACKOFF_SECS = 10.0
MONTHS = 12
RESULT_MAX_BYTES = 6000  # a job update (payload + result) must fit the app's max_payload_bytes
REGIONS = ["North", "South", "East", "West", "Central"]
PRODUCTS = [("Widget", 12.5), ("Gadget", 30.0), ("Doohickey", 7.25), ("Gizmo", 55.0),
            ("Sprocket", 3.1), ("Thingamajig", 18.0), ("Whatsit", 9.9), ("Contraption", 120.0)]


def log(message: str) -> None:
    print(f"[query-worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


class StaleLease(Exception):
    """409: another attempt owns the job now (or it was cancelled)."""


class QueryError(Exception):
    """The query cannot run (bad SQL, not read-only, too slow): retrying will not help."""


# ---------------------------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------------------------

def seed(db_path: Path, rows: int = 24000) -> None:
    """Creates the sales database (deterministic) unless it exists; atomic against a second worker."""
    if db_path.exists():
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f"{db_path.name}.{os.getpid()}.tmp")
    rng = random.Random(2024)
    con = sqlite3.connect(tmp)
    with con:
        con.execute("""CREATE TABLE sales (
            id INTEGER PRIMARY KEY, day TEXT NOT NULL, month INTEGER NOT NULL,
            region TEXT NOT NULL, product TEXT NOT NULL, quantity INTEGER NOT NULL,
            unit_price REAL NOT NULL, amount REAL NOT NULL)""")
        batch = []
        for i in range(1, rows + 1):
            month = rng.randint(1, MONTHS)
            day = f"2024-{month:02d}-{rng.randint(1, 28):02d}"
            product, price = rng.choice(PRODUCTS)
            quantity = rng.randint(1, 20)
            batch.append((i, day, month, rng.choice(REGIONS), product, quantity, price, round(quantity * price, 2)))
        con.executemany("INSERT INTO sales VALUES (?,?,?,?,?,?,?,?)", batch)
        con.execute("CREATE INDEX sales_month ON sales(month)")
    con.close()
    os.replace(tmp, db_path)  # another worker seeding at once writes the same data
    log(f"seeded {db_path} with {rows} sales")


ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
           getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def read_only(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in ALLOWED else sqlite3.SQLITE_DENY


READ_RE = re.compile(r"^\s*(select|with|values)\b", re.IGNORECASE)


def run_step(con: sqlite3.Connection, sql: str, month: int, timeout: float) -> tuple[list[str], list[Any]]:
    """Runs `sql` over January..`month`: a temporary view `sales` hides the table main.sales."""
    if not READ_RE.match(sql):  # a clearer message; the read-only connection and authorizer decide
        raise QueryError("only SELECT queries run here (the database is read-only)")
    con.set_authorizer(None)
    con.execute("DROP VIEW IF EXISTS temp.sales")
    con.execute(f"CREATE TEMP VIEW sales AS SELECT * FROM main.sales WHERE month <= {int(month)}")
    deadline = time.monotonic() + timeout
    con.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10000)
    con.set_authorizer(read_only)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    except sqlite3.Error as e:
        text = "the query took too long" if "interrupted" in str(e) else str(e)
        raise QueryError(text) from None
    except sqlite3.Warning as e:  # e.g. "You can only execute one statement at a time."
        raise QueryError(str(e)) from None
    finally:
        con.set_authorizer(None)
        con.set_progress_handler(None, 0)
    if not columns:
        raise QueryError("the statement returns no columns; write a SELECT")
    return columns, rows


def bounded_result(columns: list[str], rows: list[Any], max_rows: int) -> dict[str, Any]:
    """The job's result: at most max_rows rows and RESULT_MAX_BYTES of JSON."""
    kept = [list(r) for r in rows[:max_rows]]
    result = {"columns": columns, "rows": kept, "row_count": len(rows), "truncated": len(kept) < len(rows)}
    while kept and len(json.dumps(result, default=str)) > RESULT_MAX_BYTES:
        kept.pop()
        result["truncated"] = True
    return json.loads(json.dumps(result, default=str))  # bytes, dates... as text


# ---------------------------------------------------------------------------------------------
# Herald
# ---------------------------------------------------------------------------------------------

class Job:
    """One claimed job and the reports that quote its lease."""

    def __init__(self, herald: Herald, claimed: dict[str, Any]) -> None:
        self.herald = herald
        self.id: str = claimed["id"]
        self.payload: Any = claimed.get("payload")
        self.attempts: int = claimed.get("attempts", 1)
        self.lease: str = claimed["lease"]
        self.lease_until: float = (claimed.get("lease_until") or 0) / 1000
        self.claimed_at = time.time()

    def report(self, action: str, **fields: Any) -> dict[str, Any]:
        """POST /jobs/{id}/{action} with the lease, retrying transient errors while the lease lasts."""
        backoff = Backoff(first_secs=0.25, max_secs=MAX_BACKOFF_SECS)
        while True:
            try:
                answer = self.herald.call("POST", f"/jobs/{self.id}/{action}", {"lease": self.lease, **fields})
                job = (answer or {}).get("job") or {}
                if job.get("lease_until"):
                    self.lease_until = job["lease_until"] / 1000
                return job
            except HeraldError as e:
                if e.status == 409:
                    raise StaleLease(e.text.strip()) from None
                if not is_transient(e):
                    raise
                pause = backoff.delay()
                if time.time() + pause >= self.lease_until:
                    raise StaleLease(f"{action} kept failing until the lease ran out ({e})") from None
                log(f"job {self.id}: {action} failed ({e}); retrying in {pause:.2f}s")
                time.sleep(pause)

    def keep_alive(self, needed_secs: float) -> None:
        """Renews the lease when it would run out before the next step is done."""
        if self.lease_until - time.time() < needed_secs * 2 + 1:
            self.report("extend")


def work(job: Job, con: sqlite3.Connection, args: argparse.Namespace) -> dict[str, Any]:
    sql = job.payload.get("sql") if isinstance(job.payload, dict) else None
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError('the payload must be {"sql": "SELECT ..."}')
    columns: list[str] = []
    rows: list[Any] = []
    for month in range(1, MONTHS + 1):
        job.keep_alive(args.step_secs + 0.5)
        started = time.monotonic()
        columns, rows = run_step(con, sql, month, args.query_timeout)
        time.sleep(max(0.0, args.step_secs - (time.monotonic() - started)))  # the "slow warehouse"
        if month < MONTHS:
            job.report("progress", progress={"pct": round(100 * month / MONTHS), "step": month,
                                             "steps": MONTHS, "rows": len(rows)})
    return bounded_result(columns, rows, args.max_rows)


def handle(job: Job, con: sqlite3.Connection, args: argparse.Namespace) -> None:
    """Runs one claimed job and reports how it ended; never raises for the job's own faults."""
    log(f"job {job.id}: claimed (attempt {job.attempts}): {json.dumps(job.payload)[:200]}")
    try:
        try:
            result = work(job, con, args)
        except QueryError as e:
            job.report("fail", error=str(e), retry=False)
            log(f"job {job.id}: failed for good: {e}")
            return
        job.report("finish", result=result)
        log(f"job {job.id}: finished, {result['row_count']} row(s)")
    except StaleLease as e:
        log(f"job {job.id}: lease lost, dropping the job (another attempt owns it): {e}")
    except HeraldError as e:
        log(f"job {job.id}: report refused, dropping the job: {e}")


class Stop:
    """Ctrl-C / SIGTERM: stop at once when idle; after the current job otherwise (twice: now)."""

    def __init__(self) -> None:
        self.requested = False
        self.idle = True
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, _signum: int, _frame: Any) -> None:
        if self.requested or self.idle:
            self.requested = True
            raise KeyboardInterrupt
        self.requested = True
        log("finishing the current job, then stopping (again to quit now)")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def run(args: argparse.Namespace) -> int:
    db_path = Path(args.db).resolve()
    seed(db_path)
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    herald = Herald.from_env()
    stop = Stop()
    log(f"claiming from queue {args.queue!r} at {herald.url} (app {herald.app_id}), database {db_path}")
    print("ready", flush=True)  # for scripts and tests: the worker is about to claim
    try:
        for claimed in claim_jobs(herald, args.queue, log, CLAIM_WAIT_SECS,
                                  Backoff(first_secs=0.25, max_secs=MAX_BACKOFF_SECS),
                                  sleep=stop.sleep, running=lambda: not stop.requested):
            stop.idle = False
            handle(Job(herald, claimed), con, args)
            stop.idle = True
    except HeraldError as e:  # the claim itself was refused
        log(f"claim refused; check HERALD_URL, HERALD_APP_ID/KEY/SECRET and the queue name: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 0 if stop.idle else 130
    log("stopped")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The query runner's worker (Herald jobs, SQLite).")
    p.add_argument("--queue", default=os.environ.get("HERALD_QUEUE", "queries"))
    p.add_argument("--db", default=os.environ.get("QUERY_RUNNER_DB", str(HERE / ".data" / "sales.sqlite3")),
                   help="the SQLite database (created and seeded when missing)")
    p.add_argument("--step-secs", type=float, default=2.5, metavar="S",
                   help="how long each of the 12 monthly steps takes at least (default 2.5: ~30 s a job)")
    p.add_argument("--max-rows", type=int, default=50, help="rows kept in a result (default 50)")
    p.add_argument("--query-timeout", type=float, default=10.0, metavar="S",
                   help="interrupt one step's statement after S seconds")
    args = p.parse_args(argv)
    if args.step_secs < 0 or args.max_rows < 1:
        p.error("--step-secs must not be negative and --max-rows must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
