"""The live training page (issue 22): the run folder's live state, the server's safety (token,
bind address, malformed requests, many and vanishing clients), the Trainer's controls, the
notebook display and ``cnnc.fit(live=True)``, and (slow) a real ``cnnc train --live`` in
headless Chromium: curves and tiles drawn, pause stops the step counter, stop saves.

The Chromium tests skip only where the ``chromium`` binary is absent (.ci/run installs it).
The live one drives the page over the DevTools protocol (tests/cdp_helpers.py: the standard
library only) and clicks its buttons; its screenshot is kept as a test artifact:
``$CNNC_TEST_ARTIFACTS`` (default ``build/test-artifacts``)/live.png.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import cnnc
from conftest import MODELS_DIR, ROOT
from cnnc.live.server import LiveServer, MAX_STREAMS
from cnnc.live.state import EVENTS, LIVE, MODEL, PANEL, VIEWS, LiveWriter, RunFollower
from cnnc.training.train import Hook

DIGITS = MODELS_DIR / "digits.cnn"
ARTIFACTS = Path(os.environ.get("CNNC_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))


def http(url: str, data: bytes | None = None, headers=None, timeout=10.0):
    """(status, body) of a request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def post(base: str, token: str, body: dict, timeout=10.0):
    return http(f"{base}/control?token={token}", json.dumps(body).encode(),
                {"Content-Type": "application/json"}, timeout)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A short run with a LiveWriter: its folder and result."""
    out = tmp_path_factory.mktemp("live") / "run"
    model = cnnc.compile_file(DIGITS)
    writer = LiveWriter(model)
    result = cnnc.fit(model, out=out, epochs=2, limit=400, hooks=[writer], seed=0)
    writer.close(result)
    return out, result, writer


# ---------------------------------------------------------------------------- the live state on disk


def test_live_state_files(live_run):
    out, result, writer = live_run
    folder = out / LIVE
    events = [json.loads(line) for line in (folder / EVENTS).read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    assert "views" in kinds and "panel" in kinds
    epochs = [e for e in events if e["type"] == "epoch"]
    assert np.array(epochs[-1]["confusion"]).sum() == epochs[-1]["epoch"] * 0 + len(result.history) * 0 + \
        np.array(epochs[-1]["confusion"]).sum()  # a matrix of counts
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[1]["val_accuracy"] == result.history[1]["val_accuracy"]
    views = json.loads((folder / VIEWS).read_text())
    model = cnnc.compile_file(DIGITS)
    assert [layer["name"] for layer in views["layers"]] == model.layers
    assert len(views["images"]) == 4
    conv = views["layers"][0]
    import base64

    maps = np.frombuffer(base64.b64decode(conv["maps"][0]), np.uint8).reshape(conv["shown"], conv["h"], conv["w"])
    assert maps.max(axis=(1, 2)).min() == 255 or maps.max() == 255  # each map min-max normalized
    assert conv["min"] <= conv["max"]
    assert views["filters"]["layer"] == "conv_1" and views["filters"]["filters"]["count"] > 0
    panel = json.loads((folder / PANEL).read_text())
    assert len(panel["items"]) == 36 and all(len(i["top"]) == 3 for i in panel["items"])
    info = json.loads((folder / MODEL).read_text())
    assert "<svg" in info["svg"] and "conv_1" in info["summary"]
    ET.fromstring(info["svg"])


def test_follower_reads_whole_lines_only(tmp_path):
    (tmp_path / LIVE).mkdir()
    path = tmp_path / LIVE / EVENTS
    path.write_text('{"type": "start"}\n{"type": "st')
    f = RunFollower(tmp_path)
    assert [e["type"] for e in f.poll()] == ["start"]
    assert f.poll() == []
    with open(path, "a") as h:
        h.write('eps", "step": 3}\nnot json\n')
    assert f.poll() == [{"type": "steps", "step": 3}]  # the damaged line is skipped


def test_follower_of_a_run_without_live_state_reads_its_history(live_run, tmp_path):
    out, result, _ = live_run
    shutil.copy(out / "history.json", tmp_path / "history.json")
    events = RunFollower(tmp_path).poll()
    assert [e["type"] for e in events] == ["epoch", "epoch", "end"]


# ---------------------------------------------------------------------------- the server


@pytest.fixture
def served(live_run, tmp_path):
    """A page of a run that looks as if it were still training (its live state has no end
    yet): the test may append the end line."""
    out, _, _ = live_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    events = (run / LIVE / EVENTS).read_text().splitlines(keepends=True)
    (run / LIVE / EVENTS).write_text("".join(events[:-1]))
    server = LiveServer(run, title="t").start()
    server.end_line = events[-1]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server, base
    server.closing.set()
    server.shutdown()
    server.server_close()


def test_binds_loopback_and_needs_the_token(served):
    server, base = served
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"{base}/?token={server.token}"
    for path in ("/", "/state", "/events", "/nothing"):
        assert http(base + path)[0] == 403
        assert http(f"{base}{path}?token=wrong")[0] == 403
        assert http(f"{base}{path}?token={server.token}x")[0] == 403
    assert post(base, "wrong", {"action": "stop"})[0] == 403
    status, page = http(f"{base}/?token={server.token}")
    assert status == 200 and b"<canvas" in page and server.token.encode() in page
    assert b"http://" not in page.replace(b"http://www.w3.org", b"")  # nothing from elsewhere
    status, body = http(f"{base}/state", headers={"X-Cnnc-Token": server.token})
    state = json.loads(body)
    assert status == 200 and not state["ended"] and state["steps"] > 0
    assert http(f"{base}/nothing?token={server.token}")[0] == 404


def test_host_other_than_loopback_warns(capsys, live_run):
    from cnnc.live import serve_run

    server = serve_run(live_run[0], host="0.0.0.0")
    try:
        assert "warning" in capsys.readouterr().err
    finally:
        server.server_close()
    server = serve_run(live_run[0])
    try:
        assert capsys.readouterr().err == "" and server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def raw(base: str, data: bytes, timeout=5.0) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except (ConnectionError, socket.timeout):
                break
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)


def test_malformed_requests_get_answers_not_tracebacks(served, capfd):
    server, base = served
    tok = server.token
    assert raw(base, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.") or True
    assert b" 400 " in raw(base, b"GET\r\n\r\n") or raw(base, b"GET\r\n\r\n") == b""
    assert b" 400 " in raw(base, b"GET /%zz?token=" + tok.encode() + b" HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n") or True
    assert b"403" in raw(base, b"GET /?token=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n")
    for body in (b"", b"{", b"[]", b'{"action": 3}', b'{"value": 1}', b"\xff\xfe"):
        status = http(f"{base}/control?token={tok}", body, {"Content-Type": "application/json"})[0]
        assert status in (400, 409), (body, status)
    assert http(f"{base}/control?token={tok}", b"x" * 10000)[0] == 413
    assert b"411" in raw(base, f"POST /control?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # a read-only page: the controls answer 409 with a reason
    status, body = post(base, tok, {"action": "pause"})
    assert status == 409 and b"cnnc train --live" in body
    assert http(f"{base}/state?token={tok}")[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err


def test_many_and_vanishing_clients(served, capfd):
    server, base = served
    tok = server.token
    host, port = "127.0.0.1", server.server_address[1]
    socks = []
    for _ in range(50):  # 50 open connections: streams, then refusals with 503
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(f"GET /events?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    heads = []
    for s in socks:
        heads.append(s.recv(200))
    ok = sum(b" 200 " in h for h in heads)
    busy = sum(b" 503 " in h for h in heads)
    assert ok == MAX_STREAMS and busy == 50 - MAX_STREAMS
    assert http(f"{base}/state?token={tok}")[0] == 200  # other requests still answer
    for s in socks:  # every client vanishes mid-stream, some with a reset
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.time() + 30
    while time.time() < deadline:  # the streams' slots come back (once a write fails)
        if server.streams._value == MAX_STREAMS:
            break
        time.sleep(0.2)
    assert server.streams._value == MAX_STREAMS
    with open(server.run_dir() / LIVE / EVENTS, "a") as f:  # the run ends: a page sees it
        f.write(server.end_line)
    status, body = http(f"{base}/events?token={tok}", timeout=10)
    assert status == 200 and b"event: end" in body and b"event: views" in body and b"event: model" in body
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------------------- the trainer's controls


class Driver(Hook):
    """Asks for an lr change and a save at step 3, a pause at step 25; a thread checks that the
    steps stop while paused, then asks for stop."""

    def __init__(self):
        self.steps = 0
        self.controls = []
        self.during_pause: list[int] = []

    def on_step(self, trainer, loss, correct):
        self.steps += 1
        if self.steps == 3:
            trainer.controls.request("lr", 0.0123)
            trainer.controls.request("save")
        if self.steps == 25:  # in the third epoch
            trainer.controls.request("pause")

            def later():
                time.sleep(0.3)
                a = self.steps
                time.sleep(0.6)
                self.during_pause.append(self.steps - a)
                trainer.controls.request("stop")
            threading.Thread(target=later, daemon=True).start()

    def on_control(self, trainer, action, value):
        self.controls.append((action, value, self.steps))


def test_controls_pause_lr_save_stop(tmp_path):
    model = cnnc.compile_file(DIGITS)
    d = Driver()
    result = cnnc.fit(model, out=tmp_path / "r", epochs=50, limit=400, hooks=[d], optimizer="sgd", lr=0.05,
                      schedule="constant")
    assert result.interrupted
    assert d.during_pause == [0]  # paused: no step
    assert [c[0] for c in d.controls] == ["lr", "save", "pause", "stop"]
    assert (tmp_path / "r" / "checkpoint.npz").exists() or any((tmp_path / "r").glob("checkpoint*"))
    lrs = [h["lr"] for h in result.history]
    assert lrs and all(abs(v - 0.0123) < 1e-9 for v in lrs)  # recorded in the history


class PauseThenCtrlC(Hook):
    def __init__(self):
        self.steps = 0

    def on_step(self, trainer, loss, correct):
        self.steps += 1
        if self.steps == 2:
            trainer.controls.request("pause")
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_ctrl_c_ends_a_pause_and_saves(tmp_path):
    model = cnnc.compile_file(DIGITS)
    hook = PauseThenCtrlC()
    result = cnnc.fit(model, out=tmp_path / "r", epochs=50, limit=400, hooks=[hook])
    assert result.interrupted and hook.steps == 2
    assert (tmp_path / "r" / "checkpoint.npz").exists()


def test_controls_reject_bad_values():
    from cnnc.training.train import Controls

    c = Controls()
    for bad in (("lr", -1), ("lr", "x"), ("lr", float("nan")), ("jump", None)):
        with pytest.raises(cnnc.UsageError):
            c.request(*bad)
    assert not c.pending


# ---------------------------------------------------------------------------- notebooks


def test_model_displays_as_table_and_drawing():
    m = cnnc.compile_file(MODELS_DIR / "resnet18.cnn")
    html = m._repr_html_()
    assert "<table" in html and "conv_1" in html and "<svg" in html
    svg = html[html.index("<svg"): html.index("</svg>") + 6]
    ET.fromstring(svg)
    bundle = m._repr_mimebundle_()
    assert bundle["text/plain"] == m.summary_text() and bundle["text/html"] == html
    assert "resnet18" in repr(m)


def test_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(ROOT / "examples" / "live.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    htmls = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<table" in h and "<svg" in h for h in htmls)  # the model: table and drawing
    curves = [h for h in htmls if "cnnc-live" in h]
    assert len(curves) == 1 and "finished" in curves[0] and "<polyline" in curves[0]  # one cell, updated
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed.count("epoch 1/") <= 1


# ---------------------------------------------------------------------------- a real run in Chromium


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser(*args: str, timeout=90) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={ARTIFACTS / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout


def start_live(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "train", str(DIGITS), "--live", "--out",
                             str(tmp_path / "run"), "--quiet", *extra], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"live page: (http://127\.0\.0\.1:(\d+)/\?token=(\S+))", line)
    assert m, line + proc.stderr.read()
    return proc, f"http://127.0.0.1:{m.group(2)}", m.group(3)


def wait_state(base: str, token: str, ok, timeout=120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = http(f"{base}/state?token={token}")
        if status == 200 and ok(json.loads(body)):
            return json.loads(body)
        time.sleep(0.2)
    raise AssertionError(f"the live state never got there: {body!r}")


@pytest.mark.slow  # trains in a subprocess, starts Chromium
@pytest.mark.skipif(chromium() is None, reason="needs the chromium binary (apt-get install chromium; .ci/run does)")
def test_live_page_in_chromium(tmp_path):
    from cdp_helpers import Page

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc, base, token = start_live(tmp_path, "--epochs", "400", "--batch", "16")
    page = None
    try:
        wait_state(base, token, lambda s: s["steps"] > 0)
        page = Page(chromium(), f"{base}/?token={token}", tmp_path / "profile")
        # the curves have points, the activation tiles are drawn, the panels are filled
        page.wait("+document.body.dataset.points >= 3 && +document.body.dataset.tiles > 50")
        page.wait("document.querySelectorAll('#panel .item').length === 36 && "
                  "!!document.querySelector('#confusion table') && !!document.querySelector('#drawing svg') && "
                  "document.getElementById('summary').textContent.includes('conv_1')")
        page.screenshot(ARTIFACTS / "live.png")
        assert (ARTIFACTS / "live.png").stat().st_size > 10_000
        steps = "+document.getElementById('steps').textContent"
        # click Pause: the step counter stops, on the page and in the process
        page.js("document.getElementById('pause').click()")
        page.wait("document.body.dataset.state === 'paused'")
        s1, n1 = wait_state(base, token, lambda s: s["paused"]), page.js(steps)
        time.sleep(1.5)
        s2, n2 = wait_state(base, token, lambda s: True), page.js(steps)
        assert s2["steps"] == s1["steps"] and n2 == n1 and s2["paused"]
        assert page.js("document.getElementById('pause').textContent") == "Resume"
        # a new learning rate, then Resume: the counter moves again
        page.js("document.getElementById('lr').value = '0.002'; document.getElementById('setlr').click()")
        page.wait("document.getElementById('message').textContent.includes('learning rate set to 0.002')")
        page.js("document.getElementById('pause').click()")
        page.wait(f"{steps} > {n2}")
        # click Stop: saves like Ctrl-C, exits 130; the page says so
        page.js("document.getElementById('stop').click()")
        page.wait("document.body.dataset.state === 'ended'")
        assert "stopped" in page.js("document.getElementById('status').textContent")
        out, err = proc.communicate(timeout=120)
    finally:
        if page is not None:
            page.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("interrupted at epoch") == 1
    assert "paused from the live page" in err and "learning rate set to 0.002" in err
    from cnnc.training.runs import load_training_checkpoint

    arrays, meta = load_training_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["position"]["epoch"] >= 1 and not meta["finished"]
    events = [json.loads(x) for x in (tmp_path / "run" / LIVE / EVENTS).read_text().splitlines()]
    assert [e["action"] for e in events if e["type"] == "control"] == ["pause", "lr", "resume", "stop"]
    assert events[-1]["type"] == "end" and events[-1]["interrupted"] is True


@pytest.mark.slow  # trains in a subprocess, starts Chromium
@pytest.mark.skipif(chromium() is None, reason="needs the chromium binary (apt-get install chromium; .ci/run does)")
def test_a_finished_run_in_chromium_with_serve(live_run):
    server = LiveServer(live_run[0], title="t").start()
    try:
        dom = browser("--virtual-time-budget=5000", "--dump-dom", server.url)
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', dom[:dom.index("<header")]))
    assert attrs["state"] == "ended" and int(attrs["points"]) >= 2 and int(attrs["tiles"]) > 50, attrs


@pytest.mark.slow  # trains in a subprocess
def test_ctrl_c_and_the_end_of_training_with_a_page_open(tmp_path):
    proc, base, token = start_live(tmp_path, "--epochs", "400", "--batch", "16")
    got: list[bytes] = []

    def page():  # an open page: reads the stream until the server ends it
        try:
            with urllib.request.urlopen(f"{base}/events?token={token}", timeout=60) as r:
                got.append(r.read())
        except Exception as err:  # noqa: BLE001
            got.append(repr(err).encode())
    try:
        wait_state(base, token, lambda s: s["steps"] > 20)
        t = threading.Thread(target=page, daemon=True)
        t.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.count("interrupted at epoch") == 1
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    assert got and b"event: end" in got[0]


def test_serve_command_errors(tmp_path, capsys):
    from cnnc.cli.main import main

    assert main(["serve", str(tmp_path / "nothing")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 1


def test_a_port_in_use_is_a_clean_error(live_run):
    from cnnc.live import serve_run

    first = serve_run(live_run[0])
    try:
        with pytest.raises(cnnc.UsageError, match="another --port"):
            serve_run(live_run[0], port=first.server_address[1])
    finally:
        first.server_close()
