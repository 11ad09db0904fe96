"""The few calls an app backend makes to Herald, in the Python standard library only.

Herald speaks the Pusher HTTP API, so any Pusher server SDK publishes events; this module exists
because the example backends also use Herald's own routes (jobs, feeds, read cursors) and should
run with nothing installed. It signs requests (Pusher request signing, auth_version 1.0) and
answers the browser's channel and sign-in authorisation requests. For the workers it also says
which failures are worth retrying (is_transient), how long to wait before the next try (Backoff),
and claims jobs from a queue one after another (claim_jobs).

    herald = Herald.from_env()
    herald.call("POST", "/events", {"name": "message", "channels": ["chat"], "data": "{}"})
    auth = herald.authorize_channel(socket_id, "private-chat")        # -> {"auth": "key:sig"}
    auth = herald.sign_in(socket_id, {"id": "alice"})                  # -> {"auth", "user_data"}
    for job in claim_jobs(herald, "queries", log=print): ...          # {"id", "lease", "payload", ...}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any


class HeraldError(Exception):
    """Herald answered with a status of 400 or more (or could not be reached: status 0)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"Herald answered HTTP {status}: {text.strip()[:300]}")
        self.status = status
        self.text = text


class Herald:
    """Signed requests to one app's HTTP API, and the signatures a browser asks the backend for."""

    def __init__(self, url: str, app_id: str, key: str, secret: str,
                 encryption_master_key: bytes | None = None) -> None:
        self.url = url.rstrip("/")
        self.app_id = app_id
        self.key = key
        self._secret = secret.encode()
        self._master_key = encryption_master_key

    @classmethod
    def from_env(cls) -> "Herald":
        """HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET (the dev app's by default)
        and, for encrypted channels, HERALD_ENCRYPTION_MASTER_KEY_BASE64 (32 bytes)."""
        master = os.environ.get("HERALD_ENCRYPTION_MASTER_KEY_BASE64")
        return cls(
            os.environ.get("HERALD_URL", "http://127.0.0.1:6001"),
            os.environ.get("HERALD_APP_ID", "1"),
            os.environ.get("HERALD_APP_KEY", "herald-dev-key"),
            os.environ.get("HERALD_APP_SECRET", "herald-dev-secret"),
            base64.b64decode(master) if master else None,
        )

    def _hmac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def signed_query(self, method: str, path: str, body: bytes, params: dict[str, str] | None = None) -> str:
        """The query string for a request: its own params, auth params, body_md5 and signature."""
        query = dict(params or {})
        query.update(auth_key=self.key, auth_timestamp=str(int(time.time())), auth_version="1.0")
        if body:
            query["body_md5"] = hashlib.md5(body).hexdigest()
        text = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
        signature = self._hmac("\n".join((method, path, text)))
        return f"{text}&auth_signature={signature}"

    def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
             timeout: float = 10) -> Any:
        """Sends a signed request to /apps/{id}{path}; returns the parsed JSON answer (None when
        empty). Raises HeraldError for an answer of 400 or more, or when Herald cannot be reached."""
        full_path = f"/apps/{self.app_id}{path}"
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        url = f"{self.url}{full_path}?{self.signed_query(method, full_path, data, params)}"
        request = urllib.request.Request(url, data=data or None, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise HeraldError(e.code, e.read().decode(errors="replace")) from None
        except (urllib.error.URLError, OSError) as e:
            # (the error's text can hold the signed URL: the type says enough)
            raise HeraldError(0, f"{type(e).__name__} reaching {self.url}") from None
        return json.loads(raw) if raw else None

    def publish(self, channels: list[str], name: str, data: Any, **extra: Any) -> Any:
        """POST /events: `data` is sent as JSON text, as pusher-js expects; `extra` adds fields
        such as socket_id (to leave out the sender) or count_unread."""
        body = {"name": name, "channels": channels, "data": json.dumps(data), **extra}
        return self.call("POST", "/events", body)

    def authorize_channel(self, socket_id: str, channel: str, channel_data: Any = None) -> dict[str, str]:
        """The answer to pusher-js's channel authorisation request for a private, presence or
        private-encrypted channel (the caller decides whether this user may join)."""
        text = f"{socket_id}:{channel}"
        answer: dict[str, str] = {}
        if channel_data is not None:
            answer["channel_data"] = json.dumps(channel_data, separators=(",", ":"))
            text += f":{answer['channel_data']}"
        answer["auth"] = f"{self.key}:{self._hmac(text)}"
        if channel.startswith("private-encrypted-"):
            if self._master_key is None:
                raise ValueError("encrypted channels need HERALD_ENCRYPTION_MASTER_KEY_BASE64")
            secret = hashlib.sha256(channel.encode() + self._master_key).digest()
            answer["shared_secret"] = base64.b64encode(secret).decode()
        return answer

    def sign_in(self, socket_id: str, user: dict[str, Any]) -> dict[str, str]:
        """The answer to pusher-js's user sign-in request: `user` must hold a string "id"."""
        user_data = json.dumps(user, separators=(",", ":"))
        signature = self._hmac(f"{socket_id}::user::{user_data}")
        return {"auth": f"{self.key}:{signature}", "user_data": user_data}


def is_transient(e: HeraldError) -> bool:
    """Worth retrying: Herald could not be reached (status 0), is overloaded (429) or failed (5xx)."""
    return e.status == 0 or e.status == 429 or e.status >= 500


class Backoff:
    """Exponential backoff with jitter: first_secs, twice that, ... up to max_secs, each delay
    drawn from its upper half so that workers failing together do not retry together."""

    def __init__(self, first_secs: float = 0.25, max_secs: float = 10.0) -> None:
        self.first_secs = first_secs
        self.max_secs = max_secs
        self.failures = 0

    def delay(self) -> float:
        """The pause before the next try (counts one more failure)."""
        self.failures += 1
        base = min(self.max_secs, self.first_secs * 2 ** (self.failures - 1))
        return base / 2 + random.uniform(0, base / 2)

    def reset(self) -> None:
        """After a success: the next failure waits first_secs again."""
        self.failures = 0


def claim_jobs(herald: Herald, queue: str, log: Callable[[str], None], wait_secs: float = 20,
               backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep,
               running: Callable[[], bool] = lambda: True) -> Iterator[dict[str, Any]]:
    """Claims jobs from `queue` one after another while running(), yielding each claimed job (a
    dict with at least "id" and "lease"). A claim waits up to wait_secs for a job (Herald caps it at
    25 s); nothing within the wait (204) claims again. Herald unreachable, 429 or 5xx: logs, waits
    backoff.delay() with sleep() and claims again. Any other failure (wrong URL, app, key, secret
    or queue name) raises HeraldError: retrying would not help."""
    backoff = backoff or Backoff()
    while running():
        try:
            answer = herald.call("POST", f"/queues/{queue}/claim", {"wait_secs": wait_secs},
                                 timeout=wait_secs + 10)
        except HeraldError as e:
            if not is_transient(e):
                raise
            pause = backoff.delay()
            log(f"claim failed ({e}); retrying in {pause:.2f}s")
            sleep(pause)
            continue
        backoff.reset()
        job = (answer or {}).get("job")  # None: 204, nothing within the wait
        if isinstance(job, dict) and "lease" in job:
            yield job
