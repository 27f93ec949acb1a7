"""A headless Chromium page driven over the DevTools protocol, for tests/test_live.py: the
standard library only (a minimal websocket client: text frames, client-side masking), so the
tests need no CDP package. ``Page(chromium, url, profile)`` opens the page; ``js(expr)``
evaluates JavaScript in it and returns the value; ``screenshot(path)``; ``close()``."""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
class Page:
    """One page of a headless Chromium started for it."""

    def __init__(self, exe, url, profile):
        self.sock = None
        self.proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                      "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--window-size=1400,1900", url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._connect()
        except BaseException:  # no Chromium left behind
            self.close()
            raise
        self.next_id = 0

    def _connect(self) -> None:
        port = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1)); break
        assert port, "chromium printed no DevTools address"
        # keep reading its stderr: a full pipe would stall the browser
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=60).read())
        ws = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        path = ws.split(f":{port}", 1)[1]
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536
                               else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            c = self.sock.recv(n - len(buf))
            if not c:
                raise ConnectionError("DevTools closed")
            buf += c
        return buf

    def _recv(self):
        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            parts.append(self._exact(n))
            if b0 & 0x80:
                return b"".join(parts).decode()

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def wait(self, expression, timeout=60.0):
        """The value of ``expression`` once it is truthy."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"never true in the page: {expression}")

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            if self.sock is not None:
                self.sock.close()
        finally:
            self.proc.kill()
            self.proc.wait()
