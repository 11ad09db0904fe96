#!/usr/bin/env python3
"""The query runner's app backend: serves the page and signs its users in to Herald.

Python 3.11 standard library only; signatures come from examples/common/herald_api.py.

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
import json
import mimetypes
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
sys.path.insert(0, str(HERE.parent / "common"))
from herald_api import Herald  # noqa: E402

USER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class App(BaseHTTPRequestHandler):
    herald: Herald
    public_url: str
    queue: str

    def log_message(self, format: str, *args: object) -> None:  # quieter than the default
        if os.environ.get("QUERY_RUNNER_ACCESS_LOG"):
            super().log_message(format, *args)

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: object) -> None:
        self.send(status, json.dumps(value).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/config":
            return self.send_json(200, {"herald_url": self.public_url, "key": self.herald.key, "queue": self.queue})
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        if path not in ("/", "/index.html") and not path.startswith("/static/"):
            return self.send(404, b"not found\n", "text/plain")
        file = (STATIC / name).resolve()
        if STATIC not in file.parents or not file.is_file():
            return self.send(404, b"not found\n", "text/plain")
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix == ".js":
            content_type = "text/javascript"
        return self.send(200, file.read_bytes(), f"{content_type}; charset=utf-8")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/signin":
            return self.send(404, b"not found\n", "text/plain")
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4096:
            return self.send_json(413, {"error": "too large"})
        form = parse_qs(self.rfile.read(length).decode(errors="replace"))
        socket_id = (form.get("socket_id") or [""])[0]
        user = (form.get("user") or [""])[0]
        if not socket_id or not USER_RE.match(user):
            return self.send_json(400, {"error": "socket_id and a user name (letters, digits, - and _) are needed"})
        # Demo: no password. A real backend signs in the user of its session, never one the page names.
        return self.send_json(200, self.herald.sign_in(socket_id, {"id": user, "user_info": {"name": user}}))


def main() -> int:
    p = argparse.ArgumentParser(description="The query runner's app backend.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("QUERY_RUNNER_PORT", "8000")))
    p.add_argument("--queue", default=os.environ.get("HERALD_QUEUE", "queries"))
    args = p.parse_args()
    App.herald = Herald.from_env()
    App.public_url = os.environ.get("HERALD_PUBLIC_URL", App.herald.url).rstrip("/")
    App.queue = args.queue
    server = ThreadingHTTPServer((args.host, args.port), App)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
