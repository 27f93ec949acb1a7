"""The live page's server: the standard library's ``ThreadingHTTPServer`` and Server-Sent
Events (no dependency, nothing to build, works offline).

Routes (every one needs ``?token=...`` or the header ``X-Cnnc-Token``):

``GET /``          the page (HTML with its script and style inlined from ``static/``)
``GET /events``    an SSE stream: the run's events, then ``views``/``panel``/``model`` data as
                   they change, ``end`` when the run is over (the stream then closes)
``GET /state``     JSON: steps, epoch, paused, ended (what the tests and scripts poll)
``POST /control``  JSON ``{"action": "pause"|"resume"|"save"|"stop"|"lr", "value": ...}``
                   (only while the run trains in this process)

Every stream has its own thread reading the run folder (:class:`cnnc.live.state.RunFollower`);
the training thread never waits for one. A client that stops reading is dropped once its
socket's send buffer fills and the write times out; at most :data:`MAX_STREAMS` streams are
served at once (more get 503), other requests answer at once.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import UsageError
from .state import MODEL, PANEL, VIEWS, RunFollower

POLL_SECONDS = 0.4  # how often a stream looks at the run folder
MAX_STREAMS = 40  # open event streams at once
MAX_BODY = 4096  # bytes of a control request
IO_TIMEOUT = 20.0  # seconds a socket may block (a slow or vanished client)
KEEPALIVE_SECONDS = 10.0  # a comment line on an idle stream, to notice a vanished client


def page_html(token: str, title: str) -> bytes:
    static = resources.files("cnnc.live") / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", (static / "live.css").read_text(encoding="utf-8"))
    html = html.replace("/*CHARTS*/", (static / "charts.js").read_text(encoding="utf-8"))
    html = html.replace("/*SCRIPT*/", (static / "live.js").read_text(encoding="utf-8"))
    html = html.replace("{{TITLE}}", _html_escape(title)).replace("{{TOKEN}}", json.dumps(token))
    return html.encode("utf-8")


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class LiveServer(ThreadingHTTPServer):
    """The page of one run. ``source``: a callable giving the run folder (None until training
    has made it); ``controls``: a :class:`cnnc.training.train.Controls` (None: a read-only
    page, as ``cnnc serve`` shows); ``status``: a callable giving the live counters."""

    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(self, source, *, host: str = "127.0.0.1", port: int = 0, controls=None, status=None,
                 title: str = "cnnc", model_info=None, token: str | None = None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        try:
            super().__init__((host, port), Handler)
        except OSError as err:
            raise UsageError(f"cannot serve the live page on {host}:{port}: {err.strerror or err}",
                             hint="pick another --port (0: any free port)") from None
        self.source, self.controls, self.status_fn = source, controls, status
        self.token = token or secrets.token_urlsafe(18)
        self.title = title
        self.model_info = model_info  # a callable giving model.json's text where the run has none
        self.closing = threading.Event()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.page = page_html(self.token, title)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/?token={self.token}"

    def start(self) -> "LiveServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="cnnc-live-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Tell the streams the run is over (they send what is left and ``end``), stop."""
        self.closing.set()
        time.sleep(2 * POLL_SECONDS)  # let the streams send the last events
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:  # no traceback for a client's mistake
        pass

    def run_dir(self) -> Path | None:
        return self.source() if callable(self.source) else self.source


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    server_version = "cnnc-live"
    sys_version = ""

    def log_message(self, format, *args) -> None:  # quiet: the terminal shows the training
        pass

    # ---- plumbing
    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8", extra=None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _authorized(self, query: dict) -> bool:
        given = self.headers.get("X-Cnnc-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.server.token.encode())

    def _route(self) -> tuple[str, dict] | None:
        try:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, max_num_fields=8)
        except ValueError:
            self._send(400, b"bad request\n")
            return None
        if not self._authorized(query):
            self._send(403, b"forbidden: this page needs the token printed by cnnc (?token=...)\n")
            return None
        return parts.path, query

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, socket.timeout, OSError):
            self.close_connection = True

    # ---- routes
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        path, _ = route
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8",
                       {"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                        "style-src 'unsafe-inline'; img-src data:; connect-src 'self'"})
        elif path == "/state":
            self._json(200, self._state())
        elif path == "/events":
            self._events()
        else:
            self._send(404, b"not found\n")

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        path, _ = route
        if path != "/control":
            self._send(404, b"not found\n")
            return
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b"a control request needs a Content-Length\n")
            return
        if not 0 < n <= MAX_BODY:
            self._send(413 if n > MAX_BODY else 400, b"bad control request size\n")
            return
        try:
            req = json.loads(self.rfile.read(n))
            action, value = req["action"], req.get("value")
            if not isinstance(action, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self._send(400, b'expected JSON {"action": ..., "value": ...}\n')
            return
        controls = self.server.controls
        if controls is None:
            self._json(409, {"error": "this page follows the run folder; the controls work on the page "
                                      "of cnnc train --live"})
            return
        if self.server.closing.is_set():
            self._json(409, {"error": "the run has ended"})
            return
        if action == "lr":
            try:
                value = float(value)
            except (TypeError, ValueError):
                self._json(400, {"error": f"the learning rate must be a number, got {value!r}"})
                return
        try:
            controls.request(action, value)
        except UsageError as err:
            self._json(400, {"error": err.message if hasattr(err, "message") else str(err)})
            return
        self._json(200, {"ok": True, "action": action, "value": value})

    def _state(self) -> dict:
        if self.server.status_fn is not None:
            return dict(self.server.status_fn(), live=True)
        follower = RunFollower(self.server.run_dir())
        state = {"steps": 0, "epoch": 0, "paused": False, "ended": False, "live": False, "started": False}
        for ev in follower.poll():
            state["started"] = True
            if ev.get("type") == "steps":
                state["steps"] = ev.get("step", 0)
                state["epoch"] = ev.get("epoch", 0)
            elif ev.get("type") == "epoch":
                state["epoch"] = ev.get("epoch", state["epoch"])
            elif ev.get("type") == "end":
                state["ended"] = True
        return state

    def _events(self) -> None:
        if self.command == "HEAD":
            self._send(200, b"", "text/event-stream")
            return
        if not self.server.streams.acquire(blocking=False):
            self._send(503, b"too many open pages\n", extra={"Retry-After": "5"})
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.close_connection = True
            self._stream()
        except (ConnectionError, TimeoutError, socket.timeout, OSError):
            pass  # the client went away: nothing to clean up but this thread
        finally:
            self.server.streams.release()

    def _emit(self, event: str, data: str) -> None:
        lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
        self.wfile.write(f"event: {event}\n{lines}\n".encode("utf-8"))

    def _stream(self) -> None:
        server = self.server
        self.wfile.write(b"retry: 2000\n\n")
        follower: RunFollower | None = None
        sent_model = False
        last_write = time.monotonic()
        ended = False
        while True:
            run = server.run_dir()
            if run is not None and (follower is None or follower.run != Path(run)):
                follower = RunFollower(run)
            closing = server.closing.is_set()
            events = follower.poll() if follower is not None else []
            if follower is not None and not sent_model:
                info = follower.read(MODEL) or (server.model_info() if server.model_info else None)
                if info:
                    self._emit("model", info)
                    sent_model = True
            views = panel = False
            batch = []
            for ev in events:
                kind = ev.get("type")
                if kind == "views":
                    views = True
                elif kind == "panel":
                    panel = True
                else:
                    batch.append(ev)
                    ended = ended or kind == "end"
            if batch:
                self._emit("events", json.dumps([e for e in batch if e.get("type") != "end"]))
            for flag, name, event in ((views, VIEWS, "views"), (panel, PANEL, "panel")):
                if flag or (follower is not None and not getattr(self, f"_sent_{event}", False)):
                    text = follower.read(name) if follower is not None else None
                    if text:
                        self._emit(event, text)
                        setattr(self, f"_sent_{event}", True)
            if ended:
                self._emit("end", json.dumps(next((e for e in batch if e.get("type") == "end"), {})))
                self.wfile.flush()
                return
            if closing:  # the run is over but wrote no end (it failed): say so once
                self._emit("end", json.dumps({"interrupted": None}))
                return
            now = time.monotonic()
            if batch or views or panel:
                last_write = now
            elif now - last_write >= KEEPALIVE_SECONDS:
                self.wfile.write(b": keepalive\n\n")
                last_write = now
            self.wfile.flush()
            server.closing.wait(POLL_SECONDS)
            if self._client_gone():
                return

    def _client_gone(self) -> bool:
        """The client closed its end (a page closed or a program that vanished)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


def warn_host(host: str) -> None:
    if not is_loopback(host):
        print(f"warning: the live page listens on {host}, not only on this machine: anyone who can "
              "reach it and has the token can pause or stop the run", file=sys.stderr)
