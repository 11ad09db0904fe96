#!/usr/bin/env python3
"""The live task list's worker: applies the changes users ask for, in the Python standard library.

Browsers submit jobs to the `tasks` queue (herald.toml). Herald has already refused any payload
its JSON Schema rejects (unknown ops, fields other than title/done/notes) and filed the job under
the user the browser signed in as. This worker:

  1. claims a job (long-poll; 204: claims again);
  2. takes the editor from the job's `user_id`, set by Herald, never from the payload;
  3. refuses (fails for good, `retry: false`, with an error the page shows) a change to a list
     that is not the editor's own, or to a task that is not in it;
  4. applies the change to the owner's feed, private-feed-tasks-<user>, over the signed feed routes
     (publish / edit with merge / move / retract), stamping `edited_by` with the editor;
  5. finishes the job with what it did.

A 409 on finish/fail means the lease went stale (the job went back to the queue and another
attempt owns it): the job is dropped here. Network errors, 429 and 5xx are retried with capped,
jittered exponential backoff. Ctrl-C / SIGTERM stops it.

    python3 examples/tasks/worker.py

Settings: HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET (the dev app by default),
TASKS_QUEUE (tasks).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from herald_api import Backoff, Herald, HeraldError, claim_jobs, is_transient  # noqa: E402

FEED_PREFIX = "private-feed-tasks-"
CLAIM_WAIT_SECS = 20  # Herald caps a claim's wait at 25 s
MAX_BACKOFF_SECS = 15.0


def log(message: str) -> None:
    print(f"[tasks-worker] {message}", file=sys.stderr, flush=True)


class Refused(Exception):
    """The change cannot be made as asked; retrying will not help. The text is shown to the user."""


def reason(e: HeraldError) -> str:
    """Herald's error text, e.g. {"error": "..."} -> "..."."""
    try:
        body = json.loads(e.text)
        return str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        return e.text.strip()[:200]


def apply(herald: Herald, editor: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Makes the change `editor` asked for; returns the job's result. Raises Refused."""
    op, owner = payload["op"], payload["list"]
    # Authority is the job's user id, attached by Herald. The payload only names the target list.
    if owner != editor:
        raise Refused(f"{editor} cannot change {owner}'s list: only its owner can")
    feed = f"/feeds/{FEED_PREFIX}{owner}"
    task = payload.get("task")
    item = f"{feed}/items/{task}"
    try:
        if op != "add":
            try:
                herald.call("GET", item)
            except HeraldError as e:
                if e.status == 404:
                    raise Refused(f"no task {task!r} in {owner}'s list") from None
                raise
        if op == "add":
            fields = payload["fields"]
            value = {"title": fields["title"], "done": fields.get("done", False), "notes": fields.get("notes", ""),
                     "created_by": editor, "edited_by": editor}
            answer = herald.call("POST", f"{feed}/items", {"value": value, **payload.get("to", {})})
            return {"op": op, "task": answer["id"]}
        if op == "edit":
            patch = {**payload["fields"], "edited_by": editor}
            herald.call("POST", f"{item}/edit", {"value": patch, "merge": True})
        elif op == "move":
            herald.call("POST", f"{item}/move", payload["to"])
        elif op == "retract":
            herald.call("POST", f"{item}/retract", {})
        return {"op": op, "task": task}
    except HeraldError as e:
        if is_transient(e):
            raise
        # E.g. a move next to a task that is not in the list, a full list, a value too large.
        raise Refused(f"could not {op}: {reason(e)}") from None


def report(herald: Herald, job: dict[str, Any], action: str, **fields: Any) -> None:
    """finish/fail with the lease; retries transient errors while the lease lasts; drops on 409."""
    delay = 0.25
    while True:
        try:
            herald.call("POST", f"/jobs/{job['id']}/{action}", {"lease": job["lease"], **fields})
            return
        except HeraldError as e:
            if e.status == 409:
                log(f"job {job['id']}: lease is stale (another attempt owns the job): dropped")
                return
            if not is_transient(e) or time.time() + delay > (job.get("lease_until") or 0) / 1000:
                log(f"job {job['id']}: {action} failed for good: {e}")
                return
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECS)


def handle(herald: Herald, job: dict[str, Any]) -> None:
    editor, payload = job.get("user_id"), job.get("payload")
    log(f"job {job['id']} from {editor}: {json.dumps(payload)}")
    try:
        if not isinstance(editor, str) or not editor:
            raise Refused("the job has no user: only signed-in users change tasks")
        if not isinstance(payload, dict) or "op" not in payload or "list" not in payload:
            raise Refused("the payload must be {op, list, ...}")  # the schema already says so
        result = apply(herald, editor, payload)
    except Refused as e:
        log(f"job {job['id']}: refused: {e}")
        report(herald, job, "fail", error=str(e), retry=False)
        return
    except HeraldError as e:  # Herald unreachable or overloaded: let the queue retry the job later
        log(f"job {job['id']}: will be retried: {e}")
        report(herald, job, "fail", error=f"temporary failure: {e}", retry=True)
        return
    report(herald, job, "finish", result=result)
    log(f"job {job['id']}: done {json.dumps(result)}")


def main() -> int:
    herald = Herald.from_env()
    queue = os.environ.get("TASKS_QUEUE", "tasks")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"claiming from queue {queue!r} at {herald.url} (app {herald.app_id})")
    try:
        for job in claim_jobs(herald, queue, log, CLAIM_WAIT_SECS, Backoff(first_secs=0.5, max_secs=MAX_BACKOFF_SECS)):
            handle(herald, job)
    except HeraldError as e:  # the claim itself was refused
        log(f"claim refused, check the URL, app id, key, secret and queue name: {e}")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
