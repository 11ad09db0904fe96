"""The http.server plumbing the example app backends share, in the Python standard library only.

Each reference app (chat, query-runner, tasks) has a tiny backend: it serves its page from a
static/ directory, answers a few JSON routes and signs its browsers in to Herald. This module exists
so that they do not each repeat the same handler boilerplate: sending a body or JSON, a quiet access
log, serving static files without ever leaving the static directory, reading a form (or JSON) body
of bounded size, the /signin answer, and starting a threaded server that prints where it listens.

    class Handler(AppHandler):
        static_dir = HERE / "static"
        access_log_env = "MYAPP_LOG"          # the access log is off unless this is set

        def do_GET(self) -> None:
            if not self.serve_static(urlsplit(self.path).path):
                self.not_found()

    serve(Handler, "127.0.0.1", 8000, lambda host, port: f"listening on http://{host}:{port}")
"""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from herald_api import Herald

MAX_BODY_BYTES = 4096  # a form from the Herald JS client is far smaller
TEXT_TYPES = ("application/javascript", "application/json", "image/svg+xml")


class AppHandler(BaseHTTPRequestHandler):
    """A request handler with the helpers every example backend uses; subclasses add do_GET/do_POST.

    Class attributes a subclass may set:
      static_dir      the directory serve_static() serves (nothing outside it is ever served)
      static_prefix   the URL prefix of static files ("/static/"; "/" serves the whole directory)
      content_types   {".ext": "type"}: content types that win over the mimetypes guess
      text_charset    add "; charset=utf-8" to text content types of static files
      extra_headers   headers added to every answer
      access_log_env  the environment variable that turns the access log on ("": always off)
    """

    static_dir: Path | None = None
    static_prefix = "/static/"
    content_types: dict[str, str] = {".js": "text/javascript"}
    text_charset = True
    extra_headers: dict[str, str] = {}
    access_log_env = ""

    # ----- answers ----------------------------------------------------------------------------

    def send(self, status: int, body: bytes, content_type: str) -> None:
        """Answers with `body`; never cached (the examples change while one works on them)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: Any) -> None:
        self.send(status, json.dumps(value).encode(), "application/json")

    def send_error_json(self, status: int, message: str) -> None:
        """{"error": message}: what the example pages show when a request is refused."""
        self.send_json(status, {"error": message})

    def not_found(self) -> None:
        """The 404 for an unknown route or static file (plain text; a subclass may answer JSON)."""
        self.send(404, b"not found\n", "text/plain")

    def log_message(self, format: str, *args: Any) -> None:  # quieter than the default
        if self.access_log_env and os.environ.get(self.access_log_env):
            self.access_log(format % args)

    def access_log(self, line: str) -> None:
        """Writes one access-log line (stderr, as http.server does); a subclass may reroute it."""
        super().log_message("%s", line)

    # ----- static files -----------------------------------------------------------------------

    def static_name(self, path: str) -> str | None:
        """The file under static_dir that the URL path names, or None when it names none."""
        if path in ("", "/", "/index.html"):
            return "index.html"
        if path.startswith(self.static_prefix):
            return path[len(self.static_prefix):]
        return None

    def static_file(self, name: str) -> Path | None:
        """static_dir/name when that is a file inside static_dir (after resolving "..", symlinks
        and absolute names), else None."""
        if self.static_dir is None:
            return None
        root = Path(self.static_dir).resolve()
        try:
            file = (root / name).resolve()
            if root in file.parents and file.is_file():
                return file
        except (OSError, ValueError):  # e.g. a NUL byte, a symlink loop
            pass
        return None

    def static_content_type(self, file: Path) -> str:
        content_type = self.content_types.get(file.suffix) or mimetypes.guess_type(file.name)[0] \
            or "application/octet-stream"
        if self.text_charset and (content_type.startswith("text/") or content_type in TEXT_TYPES):
            content_type += "; charset=utf-8"
        return content_type

    def serve_static(self, path: str) -> bool:
        """Answers a URL path that names a static file: with the file, or 404 when there is no such
        file. Returns False (and answers nothing) when the path is not a static one."""
        name = self.static_name(path)
        if name is None:
            return False
        file = self.static_file(name)
        if file is None:
            self.not_found()
        else:
            self.send(200, file.read_bytes(), self.static_content_type(file))
        return True

    # ----- requests ---------------------------------------------------------------------------

    def read_body(self, max_bytes: int | None = MAX_BODY_BYTES, allow_json: bool = False) -> dict[str, Any] | None:
        """The request's fields: the form (first value of each), or with allow_json the JSON object
        when the Content-Type says JSON. None after answering 413 (more than max_bytes) or 400 (a
        body that cannot be read)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error_json(400, "bad body")
            return None
        if max_bytes is not None and length > max_bytes:
            self.send_error_json(413, "too large")
            return None
        try:
            raw = self.rfile.read(length).decode() if length > 0 else ""
            if allow_json and (self.headers.get("Content-Type") or "").startswith("application/json"):
                fields = json.loads(raw or "{}")
                if not isinstance(fields, dict):
                    raise ValueError("not a JSON object")
                return fields
            return {k: v[0] for k, v in parse_qs(raw).items()}
        except (ValueError, UnicodeDecodeError):
            self.send_error_json(400, "bad body")
            return None


def signin_answer(herald: Herald, socket_id: str, user: str, name: str) -> dict[str, str]:
    """The answer to the Herald JS client's POST /signin: `user` (with a display name) on this
    connection. The app decides who the user is; Herald files the connection's jobs under it."""
    return herald.sign_in(socket_id, {"id": user, "user_info": {"name": name}})


def serve(handler: type[BaseHTTPRequestHandler], host: str, port: int,
          banner: Callable[[str, int], str]) -> None:
    """Serves until Ctrl-C, a thread per request; prints banner(host, port) once bound (port 0
    picks a free one: scripts and tests read the port from that line)."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    bound_host, bound_port = server.server_address[:2]
    print(banner(bound_host, bound_port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
