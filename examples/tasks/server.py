#!/usr/bin/env python3
"""The live task list's backend, in the Python standard library only.

It serves the page (static/), tells it where Herald is (/config.json), and answers the Herald JS
client's two signing requests (the http.server plumbing is examples/common/app_server.py's):

  POST /signin  socket_id, user           -> {"auth", "user_data"} for a team member
  POST /auth    socket_id, channel_name, user
                                          -> {"auth"} for private-feed-tasks-<member> of the team

THIS IS A DEMO WITHOUT PASSWORDS: the page says who it is (`?user=ann`) and the backend believes
it. A real backend takes the user from its own session cookie at these two routes; nothing else
changes (Herald, the worker and the page stay the same).

It changes no task itself: users' changes are jobs that worker.py applies. With --seed it fills
the lists of members that have none yet, so a first start has something to show.

    python3 examples/tasks/server.py --port 8080 --seed

Settings: HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET (the dev app by default),
TASKS_TEAM (comma-separated member ids, default ann,bob,cai), HERALD_PUBLIC_URL (Herald as the
browser reaches it, default HERALD_URL).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from app_server import AppHandler, serve, signin_answer  # noqa: E402
from herald_api import Herald, HeraldError  # noqa: E402

STATIC = HERE / "static"
FEED_PREFIX = "private-feed-tasks-"

SEED = {
    "ann": [("Write the release notes", ""), ("Review Bob's pull request", "the login fix")],
    "bob": [("Fix the login bug", "users with + in their e-mail"), ("Update dependencies", "")],
    "cai": [("Plan the team offsite", "")],
}


def team_from_env() -> list[str]:
    return [m.strip() for m in os.environ.get("TASKS_TEAM", "ann,bob,cai").split(",") if m.strip()]


def log(message: str) -> None:
    print(f"[tasks-server] {message}", file=sys.stderr, flush=True)


class App:
    def __init__(self, herald: Herald, team: list[str], public_url: str) -> None:
        self.herald = herald
        self.team = team
        self.public_url = public_url

    def signin(self, form: dict[str, str]) -> tuple[int, dict]:
        user = form.get("user", "")
        if user not in self.team:
            return 403, {"error": f"{user!r} is not on the team"}
        # The user id Herald puts on this connection, and so on every job it submits.
        return 200, signin_answer(self.herald, form.get("socket_id", ""), user, user.title())

    def auth(self, form: dict[str, str]) -> tuple[int, dict]:
        user, channel = form.get("user", ""), form.get("channel_name", "")
        member = channel[len(FEED_PREFIX):] if channel.startswith(FEED_PREFIX) else None
        # Team members read every member's list; nobody else reads any, and no other channel is signed.
        if user not in self.team or member not in self.team:
            return 403, {"error": f"{user!r} may not subscribe to {channel!r}"}
        return 200, self.herald.authorize_channel(form.get("socket_id", ""), channel)

    def config(self) -> dict:
        return {"herald": self.public_url, "key": self.herald.key, "team": self.team, "feed_prefix": FEED_PREFIX}

    def seed(self, wait_secs: float = 30) -> None:
        """Gives every seeded member with an empty list a few tasks (waits for Herald to be up)."""
        deadline = time.monotonic() + wait_secs
        for member in self.team:
            channel = FEED_PREFIX + member
            while True:
                try:
                    feed = self.herald.call("GET", f"/feeds/{channel}")
                    break
                except HeraldError as e:
                    if e.status != 0 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            if feed.get("items"):
                continue
            for title, notes in SEED.get(member, []):
                value = {"title": title, "done": False, "notes": notes, "created_by": member, "edited_by": member}
                self.herald.call("POST", f"/feeds/{channel}/items", {"value": value})
            log(f"seeded {channel}")


def make_handler(app: App) -> type[AppHandler]:
    class Handler(AppHandler):
        server_version = "tasks-example"
        static_dir = STATIC
        static_prefix = "/"  # the page's files sit next to it: /app.js, /style.css
        text_charset = False
        access_log_env = "TASKS_VERBOSE"

        def access_log(self, line: str) -> None:
            log(line)

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/config.json":
                return self.send_json(200, app.config())
            if not self.serve_static(path):
                self.not_found()

        def do_POST(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            form = self.read_body()
            if form is None:
                return  # answered: too large or unreadable
            if path == "/signin":
                return self.send_json(*app.signin(form))
            if path == "/auth":
                return self.send_json(*app.auth(form))
            return self.send_error_json(404, "not found")

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description="The live task list's backend (a demo without passwords).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("TASKS_PORT", "8080")), help="0: any free port")
    p.add_argument("--seed", action="store_true", help="give empty lists a few demo tasks")
    args = p.parse_args()
    herald = Herald.from_env()
    app = App(herald, team_from_env(), os.environ.get("HERALD_PUBLIC_URL", herald.url))
    if args.seed:
        app.seed()
    serve(make_handler(app), args.host, args.port,
          lambda host, port: f"tasks app on http://{host}:{port}/?user={app.team[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
