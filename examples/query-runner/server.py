#!/usr/bin/env python3
"""The query runner's app backend: serves the page and signs its users in to Herald.

Python 3.11 standard library only; signatures come from examples/common/herald_api.py, the
http.server plumbing (static files, bodies, the server loop) from examples/common/app_server.py.

    GET  /            the page (static/index.html), /static/* its script and style
    GET  /config      {"herald_url", "key", "queue"}: where the page finds Herald
    POST /signin      the Herald JS client's sign-in: form socket_id and user -> {auth, user_data}

THIS IS A DEMO WITHOUT PASSWORDS: the page says which user it is (`?user=ann`) and the backend
signs it in as that user. A real app takes the user from its own session here, and only there:
Herald files every job a browser submits under the user the connection signed in as.

Settings: HERALD_URL, HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET (as herald_api.py reads
them), HERALD_PUBLIC_URL (the Herald URL browsers use; HERALD_URL by default), --port (8000;
0 picks a free one), --host (127.0.0.1). Prints "listening on http://HOST:PORT" once bound.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
from app_server import AppHandler, serve, signin_answer  # noqa: E402
from herald_api import Herald  # noqa: E402

USER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class App(AppHandler):
    static_dir = HERE / "static"
    access_log_env = "QUERY_RUNNER_ACCESS_LOG"
    herald: Herald
    public_url: str
    queue: str

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/config":
            return self.send_json(200, {"herald_url": self.public_url, "key": self.herald.key, "queue": self.queue})
        if not self.serve_static(path):
            self.not_found()

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/signin":
            return self.not_found()
        form = self.read_body()
        if form is None:
            return  # answered: too large or unreadable
        socket_id = form.get("socket_id", "")
        user = form.get("user", "")
        if not socket_id or not USER_RE.match(user):
            return self.send_json(400, {"error": "socket_id and a user name (letters, digits, - and _) are needed"})
        # Demo: no password. A real backend signs in the user of its session, never one the page names.
        return self.send_json(200, signin_answer(self.herald, socket_id, user, user))


def main() -> int:
    p = argparse.ArgumentParser(description="The query runner's app backend.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("QUERY_RUNNER_PORT", "8000")))
    p.add_argument("--queue", default=os.environ.get("HERALD_QUEUE", "queries"))
    args = p.parse_args()
    App.herald = Herald.from_env()
    App.public_url = os.environ.get("HERALD_PUBLIC_URL", App.herald.url).rstrip("/")
    App.queue = args.queue
    serve(App, args.host, args.port, lambda host, port: f"listening on http://{host}:{port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
