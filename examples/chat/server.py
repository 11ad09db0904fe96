#!/usr/bin/env python3
"""Team chat backend for Herald, in the Python standard library only.

The browser talks to Herald directly for everything live (one connection per tab, over WebSocket
or HTTP long-polling) and to this backend for everything that must be decided or kept:

  GET  /                         the page (static/index.html; ?user=ann picks the demo user)
  GET  /api/me?user=U            who U is, the groups and topics U follows, U's DMs, Herald's address
  POST /auth, /signin            signatures for the Herald JS client (only members of a group get
                                 its topic channels; a DM channel only its two users)
  GET  /api/topics/T/messages    a topic's messages (oldest first)
  POST /api/messages             post to a topic: parse, store (SQLite), record mentions, publish
  GET  /api/mentions?user=U      the messages that mention U
  GET  /api/dms/P/messages       U's conversation with P
  POST /api/dms/P                send P a direct message (published sealed on a private-encrypted channel)
  GET  /users/U                  a user's (tiny) profile page, where mention links point

There are no passwords: the user is whoever the page says it is. It is a demo; a real app takes
the user from its session.

Signatures come from examples/common/herald_api.py, the http.server plumbing (static files,
bodies, the server loop) from examples/common/app_server.py.

Run with `./run` (Herald and this backend), or alone:
  python3 server.py --port 8000 --db /tmp/chat.sqlite3
with HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET and
HERALD_ENCRYPTION_MASTER_KEY_BASE64 in the environment.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
sys.path.insert(0, str(HERE))

from app_server import AppHandler, serve, signin_answer  # noqa: E402
from herald_api import Herald, HeraldError  # noqa: E402
import parse  # noqa: E402
import secretbox  # noqa: E402

STATIC = HERE / "static"

# The demo's fixed users, groups and topics. cy is not in "ops": Herald never lets cy's page join
# an ops topic, because /auth refuses to sign it.
USERS = {"ann": "Ann", "bob": "Bob", "cy": "Cy"}
GROUPS = {
    "general": {"name": "General", "members": ["ann", "bob", "cy"], "topics": {"lobby": "Lobby", "design": "Design"}},
    "ops": {"name": "Ops", "members": ["ann", "bob"], "topics": {"deploys": "Deploys", "incidents": "Incidents"}},
}
MAX_MESSAGE_CHARS = 2000


def topic_channel(group: str, topic: str) -> str:
    """Topics are presence channels: Herald then stamps client events (typing) with the sender's
    signed user id, and the page can show who is here."""
    return f"presence-topic-{group}.{topic}"


def dm_pair(a: str, b: str) -> str:
    return ".".join(sorted((a, b)))


def dm_channel(a: str, b: str) -> str:
    return f"private-encrypted-dm-{dm_pair(a, b)}"


def topic_of_channel(channel: str) -> tuple[str, str] | None:
    prefix = "presence-topic-"
    if not channel.startswith(prefix) or "." not in channel:
        return None
    group, topic = channel[len(prefix):].split(".", 1)
    if group in GROUPS and topic in GROUPS[group]["topics"]:
        return group, topic
    return None


def may_join(user: str, channel: str) -> bool:
    """Who may subscribe to what: the one decision Herald leaves to the app."""
    found = topic_of_channel(channel)
    if found:
        return user in GROUPS[found[0]]["members"]
    prefix = "private-encrypted-dm-"
    if channel.startswith(prefix):
        pair = channel[len(prefix):].split(".")
        return len(pair) == 2 and pair[0] != pair[1] and user in pair and all(p in USERS for p in pair) \
            and channel == dm_channel(*pair)
    return False


class Store:
    """The app's own data: raw text and node list of every message, and who was mentioned where."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        self.db.executescript("""
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                channel TEXT NOT NULL,          -- a topic's or a DM's Herald channel
                author TEXT NOT NULL,
                raw TEXT NOT NULL,              -- what the user typed
                nodes TEXT NOT NULL,            -- the parsed node list (JSON)
                html TEXT NOT NULL,             -- the node list as escaped HTML, for non-DOM consumers
                action_id TEXT,
                serial INTEGER,                 -- the Herald serial it was published with
                created_at REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS messages_channel ON messages (channel, id);
            CREATE TABLE IF NOT EXISTS mentions (
                message_id INTEGER NOT NULL REFERENCES messages (id),
                user TEXT NOT NULL,
                PRIMARY KEY (user, message_id));
        """)

    def add(self, channel: str, author: str, raw: str, nodes: list, action_id: str | None) -> dict[str, Any]:
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO messages (channel, author, raw, nodes, html, action_id, created_at) VALUES (?,?,?,?,?,?,?)",
                (channel, author, raw, json.dumps(nodes), parse.to_html(nodes), action_id, time.time()))
            message_id = cur.lastrowid
            for user in parse.mentioned(nodes):
                self.db.execute("INSERT OR IGNORE INTO mentions (message_id, user) VALUES (?, ?)", (message_id, user))
        return self.get(message_id)

    def set_serial(self, message_id: int, serial: int | None) -> None:
        with self.lock:
            self.db.execute("UPDATE messages SET serial = ? WHERE id = ?", (serial, message_id))

    def get(self, message_id: int) -> dict[str, Any]:
        with self.lock:
            return self.row(self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone())

    @staticmethod
    def row(r: sqlite3.Row) -> dict[str, Any]:
        return {"id": r["id"], "channel": r["channel"], "author": r["author"], "name": USERS.get(r["author"], r["author"]),
                "text": r["raw"], "nodes": json.loads(r["nodes"]), "html": r["html"], "action_id": r["action_id"],
                "serial": r["serial"], "ts": r["created_at"]}

    def messages(self, channel: str, limit: int = 200) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM (SELECT * FROM messages WHERE channel = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                (channel, limit)).fetchall()
        return [self.row(r) for r in rows]

    def mentions(self, user: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT m.* FROM mentions x JOIN messages m ON m.id = x.message_id WHERE x.user = ? ORDER BY m.id DESC LIMIT ?",
                (user, limit)).fetchall()
        return [self.row(r) for r in rows]


class Chat:
    def __init__(self, herald: Herald, store: Store, public_herald_url: str) -> None:
        self.herald = herald
        self.store = store
        self.public_herald_url = public_herald_url

    def me(self, user: str) -> dict[str, Any]:
        groups = [{"id": gid, "name": g["name"], "topics": [
            {"id": f"{gid}.{tid}", "name": tname, "channel": topic_channel(gid, tid)} for tid, tname in g["topics"].items()]}
            for gid, g in GROUPS.items() if user in g["members"]]
        dms = [{"peer": p, "name": USERS[p], "channel": dm_channel(user, p)} for p in USERS if p != user]
        return {"user": user, "name": USERS[user], "users": USERS, "groups": groups, "dms": dms,
                "herald": {"url": self.public_herald_url, "key": self.herald.key}}

    def post(self, user: str, topic_id: str, text: str, action_id: str | None) -> dict[str, Any]:
        group, _, topic = topic_id.partition(".")
        channel = topic_channel(group, topic)
        if not topic_of_channel(channel) or not may_join(user, channel):
            raise PermissionError(f"{user} may not post to {topic_id}")
        members = {u: USERS[u] for u in GROUPS[group]["members"]}
        nodes = parse.parse(text, members)           # only members of the group can be mentioned
        message = self.store.add(channel, user, text, nodes, action_id)
        event = {k: v for k, v in message.items() if k != "html"}
        event["topic"] = topic_id
        # count_unread: the message counts as unread for every member until they read past it.
        answer = self.herald.publish([channel], "message", event, count_unread=True)
        serial = (answer or {}).get("serials", {}).get(channel)
        self.store.set_serial(message["id"], serial)
        message["serial"] = serial
        # Each mentioned user hears of it on their own stream (every tab, resumable).
        for mentioned in parse.mentioned(nodes):
            if mentioned != user:
                self.herald.publish([f"#server-to-user-{mentioned}"], "mention", {**event, "serial": serial})
        return message

    def send_dm(self, user: str, peer: str, text: str, action_id: str | None) -> dict[str, Any]:
        if peer not in USERS or peer == user:
            raise PermissionError("no such conversation")
        channel = dm_channel(user, peer)
        nodes = parse.parse(text, {u: USERS[u] for u in (user, peer)})
        message = self.store.add(channel, user, text, nodes, action_id)
        event = {k: v for k, v in message.items() if k != "html"}
        event["peer"] = peer
        # Sealed with the channel's shared secret: Herald relays and stores only ciphertext.
        shared = self.herald.authorize_channel("0.0", channel)["shared_secret"]
        answer = self.herald.publish([channel], "message", secretbox.encrypt_event(shared, event), count_unread=True)
        serial = (answer or {}).get("serials", {}).get(channel)
        self.store.set_serial(message["id"], serial)
        message["serial"] = serial
        return message


def make_handler(chat: Chat) -> type[AppHandler]:
    class Handler(AppHandler):
        server_version = "herald-chat/1"
        protocol_version = "HTTP/1.1"
        static_dir = STATIC
        content_types = {".js": "application/javascript", ".svg": "image/svg+xml"}
        extra_headers = {"X-Content-Type-Options": "nosniff"}
        access_log_env = "CHAT_LOG"

        def not_found(self) -> None:
            self.send_error_json(404, "not found")

        def user(self, fields: dict[str, Any]) -> str | None:
            user = fields.get("user") or self.headers.get("X-Demo-User")
            return user if user in USERS else None

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = url.path
            try:
                if self.serve_static(path):
                    return None
                if path.startswith("/users/"):
                    who = unquote(path[len("/users/"):])
                    if who not in USERS:
                        return self.send_error_json(404, "no such user")
                    page = f"<!doctype html><meta charset=utf-8><title>{html.escape(USERS[who])}</title>" \
                           f"<h1>{html.escape(USERS[who])}</h1><p>@{html.escape(who)}</p>"
                    return self.send(200, page.encode(), "text/html; charset=utf-8")
                user = self.user(query)
                if path == "/healthz":
                    return self.send_json(200, {"ok": True})
                if user is None:
                    return self.send_error_json(401, "who are you? (?user=ann|bob|cy)")
                if path == "/api/me":
                    return self.send_json(200, chat.me(user))
                if path == "/api/mentions":
                    return self.send_json(200, {"mentions": chat.store.mentions(user)})
                if path.startswith("/api/topics/") and path.endswith("/messages"):
                    topic_id = unquote(path[len("/api/topics/"):-len("/messages")])
                    group, _, topic = topic_id.partition(".")
                    channel = topic_channel(group, topic)
                    if not may_join(user, channel):
                        return self.send_error_json(403, "not a member")
                    return self.send_json(200, {"messages": chat.store.messages(channel)})
                if path.startswith("/api/dms/") and path.endswith("/messages"):
                    peer = unquote(path[len("/api/dms/"):-len("/messages")])
                    if peer not in USERS or peer == user:
                        return self.send_error_json(404, "no such conversation")
                    return self.send_json(200, {"messages": chat.store.messages(dm_channel(user, peer))})
                return self.send_error_json(404, "not found")
            except HeraldError as e:
                return self.send_error_json(502, str(e))

        def do_POST(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            fields = self.read_body(max_bytes=None, allow_json=True)
            if fields is None:
                return None  # answered: 400 bad body
            user = self.user(fields)
            if user is None:
                return self.send_error_json(401, "who are you?")
            try:
                if path == "/auth":
                    channel = str(fields.get("channel_name", ""))
                    socket_id = str(fields.get("socket_id", ""))
                    if not may_join(user, channel):
                        return self.send_error_json(403, f"{user} may not join {channel}")
                    presence = {"user_id": user, "user_info": {"name": USERS[user]}} if channel.startswith("presence-") else None
                    return self.send_json(200, chat.herald.authorize_channel(socket_id, channel, presence))
                if path == "/signin":
                    return self.send_json(200, signin_answer(chat.herald, str(fields.get("socket_id", "")), user, USERS[user]))
                text = str(fields.get("text", "")).strip()
                action_id = fields.get("action_id")
                action_id = str(action_id)[:100] if action_id else None
                if path in ("/api/messages",) or path.startswith("/api/dms/"):
                    if not text:
                        return self.send_error_json(400, "empty message")
                    if len(text) > MAX_MESSAGE_CHARS:
                        return self.send_error_json(413, f"at most {MAX_MESSAGE_CHARS} characters")
                if path == "/api/messages":
                    return self.send_json(200, {"message": chat.post(user, str(fields.get("topic", "")), text, action_id)})
                if path.startswith("/api/dms/"):
                    peer = unquote(path[len("/api/dms/"):])
                    return self.send_json(200, {"message": chat.send_dm(user, peer, text, action_id)})
                return self.send_error_json(404, "not found")
            except PermissionError as e:
                return self.send_error_json(403, str(e))
            except HeraldError as e:
                return self.send_error_json(502, str(e))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHAT_PORT", "8000")))
    parser.add_argument("--db", default=os.environ.get("CHAT_DB", str(HERE / ".data" / "chat.sqlite3")),
                        help="SQLite file holding the messages (created if missing)")
    parser.add_argument("--herald-public-url", default=os.environ.get("HERALD_PUBLIC_URL"),
                        help="Herald's address as browsers reach it (default: HERALD_URL)")
    args = parser.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("HERALD_ENCRYPTION_MASTER_KEY_BASE64"):  # a clear message, not a failed DM later
        sys.exit("HERALD_ENCRYPTION_MASTER_KEY_BASE64 (32 random bytes, base64) is needed for DMs")
    herald = Herald.from_env()
    chat = Chat(herald, Store(args.db), args.herald_public_url or herald.url)
    serve(make_handler(chat), args.host, args.port,
          lambda host, port: f"chat backend on http://{host}:{port}/ (Herald at {herald.url}, app {herald.app_id})")


if __name__ == "__main__":
    main()
