#!/usr/bin/env python3
"""End-to-end check of Herald with the official Pusher Python server SDK (`pusher` 3.x).

Starts the real binary (HERALD_BIN, default <repo>/target/release/herald) on a loopback port with
a fresh data dir and config, connects raw WebSockets, and checks:
  * trigger from the SDK reaches a public-channel subscriber, data relayed verbatim;
  * presence subscription with a hand-made HMAC signature (cross-checked against the SDK);
  * channels_info / channel_info / users_info on that presence channel;
  * trigger with socket_id exclusion;
  * a client with the wrong secret gets HTTP 401 (pusher.errors.PusherBadAuth).
Exits non-zero on any failure and ends with a line "N passed, N failed".
"""

from __future__ import annotations

import contextlib
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
import uuid
from pathlib import Path

import pusher
import pusher.errors
from websockets.sync.client import connect

HERE = Path(__file__).resolve().parent
HERALD_BIN = Path(os.environ.get("HERALD_BIN") or (HERE / "../../target/release/herald")).resolve()
LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)")
TIMEOUT = float(os.environ.get("HERALD_TEST_TIMEOUT", "5"))

APP_ID, APP_KEY, APP_SECRET = "1", "app-key", "app-secret"

CONFIG = f"""
[server]
bind = "127.0.0.1:0"
activity_timeout_secs = 120
pong_timeout_secs = 30

[[apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"
enabled = true
client_events = true
user_signin = true
"""


class Herald:
    """The server process, started on 127.0.0.1:0; stopped by its PID."""

    def __init__(self) -> None:
        if not HERALD_BIN.exists():
            raise SystemExit(f"herald binary not found at {HERALD_BIN} (set HERALD_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="herald-py-"))
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
        try:
            self.port = found.get(timeout=20)
        except queue.Empty:
            self.stop()
            raise SystemExit("herald did not report its port:\n" + "\n".join(self.lines))

    def _pump(self, stream, found: queue.Queue[int]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            m = LISTEN_RE.search(line)
            if m:
                found.put(int(m.group(2)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """Raw Pusher protocol 7 WebSocket client."""

    def __init__(self, port: int, key: str = APP_KEY) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(
            f"ws://127.0.0.1:{port}/app/{key}?protocol=7&client=python&version=1.0",
            open_timeout=TIMEOUT,
        ))
        self.frames: list[dict] = []
        established = self.expect(lambda f: f["event"] == "pusher:connection_established")
        self.socket_id = established["data"]["socket_id"]
        assert re.fullmatch(r"\d+\.\d+", self.socket_id), self.socket_id

    def send(self, obj: dict) -> None:
        self.ws.send(json.dumps(obj))

    def expect(self, pred, timeout: float = TIMEOUT) -> dict:
        """Returns the first frame (already buffered or arriving) that matches pred."""
        for i, f in enumerate(self.frames):
            if pred(f):
                return self.frames.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; frames: {self.frames}")
            raw = self.ws.recv(timeout=left)
            f = json.loads(raw)
            f["raw_data"] = f.get("data")
            if isinstance(f.get("data"), str):
                try:
                    f["data"] = json.loads(f["data"])
                except ValueError:
                    pass
            if pred(f):
                return f
            self.frames.append(f)

    def subscribe(self, channel: str, auth: str | None = None, channel_data: str | None = None) -> dict:
        data = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send({"event": "pusher:subscribe", "data": data})
        f = self.expect(lambda f: f.get("channel") == channel and f["event"] in (
            "pusher_internal:subscription_succeeded", "pusher:subscription_error"))
        assert f["event"] == "pusher_internal:subscription_succeeded", f
        return f

    def ping(self) -> None:
        self.send({"event": "pusher:ping", "data": {}})
        self.expect(lambda f: f["event"] == "pusher:pong")

    def close(self) -> None:
        self._stack.close()


def presence_auth(socket_id: str, channel: str, channel_data: str) -> str:
    sig = hmac.new(APP_SECRET.encode(), f"{socket_id}:{channel}:{channel_data}".encode(), hashlib.sha256).hexdigest()
    return f"{APP_KEY}:{sig}"


def main() -> int:
    herald = Herald()
    clients: list[Client] = []
    results: list[tuple[str, str | None]] = []

    def check(name: str, fn) -> None:
        try:
            fn()
            results.append((name, None))
            print(f"ok - {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, f"{type(e).__name__}: {e}"))
            print(f"not ok - {name}\n{traceback.format_exc()}")

    sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=herald.port, ssl=False)
    tag = uuid.uuid4().hex[:8]
    public = f"py-public-{tag}"
    presence = f"presence-py-{tag}"

    def new_client() -> Client:
        c = Client(herald.port)
        clients.append(c)
        return c

    def test_trigger() -> None:
        c = new_client()
        c.subscribe(public)
        sdk.trigger(public, "my-event", {"hello": "world", "n": 1})
        f = c.expect(lambda f: f["event"] == "my-event" and f.get("channel") == public)
        assert f["data"] == {"hello": "world", "n": 1}, f
        assert isinstance(f["raw_data"], str), "channel event data is a JSON string"
        sdk.trigger([public], "text-event", "plain text")
        g = c.expect(lambda f: f["event"] == "text-event")
        assert g["raw_data"] == "plain text", g

    def test_presence_queries() -> None:
        alice, bob1, bob2 = new_client(), new_client(), new_client()
        for client, user in ((alice, "alice"), (bob1, "bob"), (bob2, "bob")):
            channel_data = json.dumps({"user_id": user, "user_info": {"name": user.title()}})
            auth = presence_auth(client.socket_id, presence, channel_data)
            # the hand-made signature is the one the official SDK produces
            sdk_auth = sdk.authenticate(presence, client.socket_id, json.loads(channel_data))
            assert sdk_auth["auth"] == presence_auth(client.socket_id, presence, sdk_auth["channel_data"]), sdk_auth
            ok = client.subscribe(presence, auth=auth, channel_data=channel_data)
            assert ok["data"]["presence"]["hash"][user] == {"name": user.title()}, ok
        added = alice.expect(lambda f: f["event"] == "pusher_internal:member_added")
        assert added["data"] == {"user_id": "bob", "user_info": {"name": "Bob"}}, added

        infos = sdk.channels_info(prefix_filter="presence-py-", attributes=["user_count"])
        assert infos == {"channels": {presence: {"user_count": 2}}}, infos
        info = sdk.channel_info(presence, attributes=["user_count"])
        assert info == {"occupied": True, "user_count": 2}, info
        users = sdk.users_info(presence)
        assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"], users
        everything = sdk.channels_info()
        assert presence in everything["channels"] and public in everything["channels"], everything
        empty = sdk.channel_info(f"presence-py-empty-{tag}")
        assert empty == {"occupied": False}, empty

    def test_socket_exclusion() -> None:
        a, b = new_client(), new_client()
        ch = f"py-excl-{tag}"
        a.subscribe(ch)
        b.subscribe(ch)
        sdk.trigger(ch, "not-for-a", {}, socket_id=a.socket_id)
        b.expect(lambda f: f["event"] == "not-for-a")
        sdk.trigger(ch, "barrier", {})
        a.expect(lambda f: f["event"] == "barrier")
        assert not any(f["event"] == "not-for-a" for f in a.frames), a.frames

    def test_bad_secret() -> None:
        bad = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret="wrong-secret", host="127.0.0.1",
                            port=herald.port, ssl=False)
        for call in (lambda: bad.trigger(public, "x", {}), lambda: bad.channels_info(),
                     lambda: bad.channel_info(presence, attributes=["user_count"])):
            try:
                call()
            except pusher.errors.PusherBadAuth:
                continue
            raise AssertionError("a request signed with the wrong secret was accepted")
        unknown_key = pusher.Pusher(app_id=APP_ID, key="no-such-key", secret=APP_SECRET, host="127.0.0.1",
                                    port=herald.port, ssl=False)
        try:
            unknown_key.trigger(public, "x", {})
        except pusher.errors.PusherBadAuth:
            pass
        else:
            raise AssertionError("a request with an unknown key was accepted")

    try:
        check("trigger reaches a raw WebSocket subscriber", test_trigger)
        check("presence: HMAC auth, channels_info, channel_info, users_info", test_presence_queries)
        check("trigger with socket_id excludes that connection", test_socket_exclusion)
        check("wrong secret / unknown key → HTTP 401 (PusherBadAuth)", test_bad_secret)
    finally:
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        herald.stop()

    failed = sum(1 for _, err in results if err)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
