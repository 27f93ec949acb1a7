"""The live state of a training run, on disk in ``<run>/live/``: written by rank 0's
:class:`LiveWriter` (a :class:`cnnc.training.train.Hook`), read by :class:`RunFollower` (the
page's server, in the training process or in ``cnnc serve``).

Files (all small, all UTF-8 JSON):

``events.jsonl``
    append-only, one JSON object per line, each line written with one ``write`` on a file
    opened with ``O_APPEND``: a reader sees whole lines, or a last line without its newline
    that it leaves for later. ``type`` is ``start`` (config, steps per epoch, class names),
    ``steps`` (a group of steps: mean loss and accuracy, images/s, position), ``epoch`` (the
    history row and the validation confusion matrix), ``control`` (pause, resume, save, stop,
    lr: what the page asked for), ``views`` / ``panel`` (the file of that name was replaced)
    and ``end``.
``model.json``
    the summary table (``cnnc check``'s text), the drawing (SVG), the class names; once.
``views.json``
    the latest activation maps of the fixed validation images (per-map min-max normalized
    greyscale, base64 bytes), per-layer min/max, the first conv's filters and gradients;
    replaced whole (written to a temporary name, then renamed) every couple of seconds.
``panel.json``
    the test panel: a few dozen validation images with their top-3 classes; replaced at
    each epoch's end.

The training thread only copies arrays (an inference forward of 4 images now and then) and
puts them on a queue; normalizing, tiling, base64 and JSON and every file write happen on
the writer's own thread, which never blocks training: if it falls behind, views are dropped.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from ..training.train import Hook

LIVE = "live"
EVENTS = "events.jsonl"
MODEL = "model.json"
VIEWS = "views.json"
PANEL = "panel.json"

STEP_GROUP_SECONDS = 0.5  # a `steps` event at most this often
VIEW_SECONDS = 2.0  # activation maps at most this often...
VIEW_BUDGET = 0.02  # ...and at most this share of the training time
MAX_MAPS = 64  # activation maps shown per layer
MAX_FILTERS = 96  # filter tiles (filter x input channel) shown


def live_dir(run: str | Path) -> Path:
    return Path(run) / LIVE


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary name and a rename (readers see the old
    file or the new one, never half; no fsync: the live state is a view, not the run)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode("ascii")


def normalized_maps(a: np.ndarray) -> np.ndarray:
    """Each map (last two axes) min-max scaled to 0..255 as uint8 (a constant map: 0)."""
    a = np.asarray(a, np.float32)
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.round((a - lo) / span * 255.0).astype(np.uint8)


def image_pixels(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Network inputs (N, C, H, W) as displayable uint8 (N, H, W, C) min-max scaled per
    image, and the channel count shown (1 or 3)."""
    x = np.asarray(x, np.float32)
    if x.ndim == 3:  # (N, C, L): sequences as one-row images
        x = x[:, :, None, :]
    if x.shape[1] != 3:
        x = x[:, :1]
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    px = np.round((x - lo) / np.where(hi > lo, hi - lo, 1.0) * 255).astype(np.uint8)
    return px.transpose(0, 2, 3, 1), px.shape[1]


class LiveWriter(Hook):
    """Writes the live state of a run (rank 0's hook). ``run_dir`` is the trainer's run
    folder, known from its first step; ``status()`` is the in-process server's fast view."""

    def __init__(self, model, images: int = 4, panel: int = 36, summary: dict | None = None):
        self.model = model
        self.images, self.panel_size = images, panel
        self.summary = summary  # {"text": ..., "svg": ...}; made on the writer thread if None
        self.run_dir: Path | None = None
        self.steps = 0  # optimizer steps seen in this process
        self.epoch = 0
        self.paused = False
        self.ended = False
        self.trainer = None
        self._queue: queue.Queue = queue.Queue(maxsize=256)
        self._thread = threading.Thread(target=self._work, name="cnnc-live-writer", daemon=True)
        self._group = [0.0, 0, 0]  # loss sum, correct, images since the last steps event
        self._group_t = self._rate_t = time.perf_counter()
        self._rate_images = 0
        self._next_views = 0.0
        self._views_pending = threading.Event()
        self._layers: list[str] | None = None
        self._conv: str | None = None
        self._no_views = False  # set when a view failed: the page goes on without them
        self._fd: int | None = None
        self.errors = 0
        self.hook_seconds = 0.0  # time the training thread spent in this hook
        self.writer_seconds = 0.0  # CPU time of the writer thread

    # ---- the training thread
    def on_step(self, trainer, loss: float, correct: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        g = self._group
        g[0] += loss * trainer.batch
        g[1] += correct
        g[2] += trainer.batch
        if self.trainer is None:
            self._begin(trainer)
        if now - self._group_t >= STEP_GROUP_SECONDS:
            self._flush_steps(trainer, now)
        if now >= self._next_views and not self._views_pending.is_set():
            self._capture_views(trainer)
            self._next_views = time.perf_counter() + max(VIEW_SECONDS, (time.perf_counter() - now) / VIEW_BUDGET)
        self.hook_seconds += time.perf_counter() - now

    def _flush_steps(self, trainer, now: float) -> None:
        """A ``steps`` event for the steps since the last one (none if there were none)."""
        g = self._group
        if g[2] == 0:
            return
        rate = g[2] / max(now - self._group_t, 1e-9)
        self._put(("steps", {"step": self.steps, "epoch": trainer.pos.epoch, "iteration": trainer.pos.iteration,
                             "steps_per_epoch": trainer.steps_per_epoch, "loss": g[0] / g[2],
                             "accuracy": g[1] / g[2], "images_per_s": rate,
                             "lr": trainer.schedule.lr(trainer.pos.epoch, max(trainer.pos.iteration - 1, 0))
                             * trainer.controls.lr_scale, "seconds": trainer.pos.seconds}))
        self._group, self._group_t = [0.0, 0, 0], now

    def on_epoch(self, trainer, row: dict, val: dict | None) -> None:
        t = time.perf_counter()
        self._on_epoch(trainer, row, val)
        self.hook_seconds += time.perf_counter() - t

    def _on_epoch(self, trainer, row: dict, val: dict | None) -> None:
        self._flush_steps(trainer, time.perf_counter())  # an epoch shorter than a step group counts too
        self.epoch = trainer.pos.epoch
        event = dict(row)
        event["confusion"] = val["confusion"] if val else None
        event["epochs"] = trainer.cfg.epochs
        self._put(("epoch", event))
        self._capture_panel(trainer)
        if trainer.pos.epoch >= trainer.cfg.epochs and not self._views_pending.is_set():
            self._capture_views(trainer)  # the maps of the final weights (else: on their schedule)

    def on_control(self, trainer, action: str, value) -> None:
        self.paused = trainer.controls.paused
        said = {"pause": "paused from the live page (resume there; Ctrl-C saves and stops)",
                "resume": "resumed from the live page",
                "save": f"saved a checkpoint from the live page at epoch {trainer.pos.epoch + 1}, "
                        f"step {trainer.pos.iteration}",
                "stop": "stopping: asked by the live page"}.get(action)
        if said and (action not in ("pause", "resume") or trainer.world.size == 1):
            trainer.log(said)
        self._put(("control", {"action": action, "value": value, "step": self.steps,
                               "epoch": trainer.pos.epoch, "iteration": trainer.pos.iteration,
                               "paused": self.paused, "lr_scale": trainer.controls.lr_scale}))

    def _begin(self, trainer) -> None:
        self.trainer = trainer
        self.run_dir = trainer.out_dir
        if self.run_dir is None:  # nowhere to write: watch nothing
            self.on_step = self.on_epoch = self.on_control = lambda *a: None  # type: ignore[method-assign]
            return
        data = trainer.data
        pool_x = data.x_val if len(data.x_val) else data.x_train
        pool_y = data.y_val if len(data.x_val) else data.y_train
        self._x = np.ascontiguousarray(pool_x[: self.images])
        self._y = np.asarray(pool_y[: self.images])
        self._px = np.ascontiguousarray(pool_x[: self.panel_size])
        self._py = np.asarray(pool_y[: self.panel_size])
        a = self.model.analysis
        self._layers = [n for n in a.order]
        self._conv = next((n for n in a.order if a.layer(n).type.has_filters), None)
        cfg = trainer.cfg
        start = {"model": self.model.filename, "epochs": cfg.epochs, "batch": trainer.batch,
                 "steps_per_epoch": trainer.steps_per_epoch, "class_names": list(data.class_names),
                 "data": data.name, "lr": cfg.learning_rate, "optimizer": cfg.optimizer,
                 "epoch": trainer.pos.epoch, "iteration": trainer.pos.iteration, "ranks": trainer.world.size,
                 "history": list(trainer.history), "time": time.time()}
        self._thread.start()
        self._put(("start", start))
        self._capture_views(trainer)
        self._capture_panel(trainer)
        self._next_views = time.perf_counter() + VIEW_SECONDS

    def _capture_views(self, trainer) -> None:
        """Copies of what the views show (one inference forward of the fixed images)."""
        net = trainer.net
        if not len(self._x) or len(net.input_shape) != 3 or self._no_views:
            return
        try:
            acts = net.layer_outputs(self._x, self._layers)  # the last one: the logits
            filt = grad = None
            if self._conv is not None:
                filt = net.get(self._conv, "w")
                grad = net.grads[self._conv]["w"].copy()
        except Exception as err:  # noqa: BLE001  (the page loses its views, the run goes on)
            self._no_views = True
            self._put(("warning", {"message": f"no activation views: {err}"}))
            return
        self._views_pending.set()
        self._put(("views", {"acts": acts, "filters": filt, "grads": grad,
                             "step": self.steps, "epoch": trainer.pos.epoch}))

    def _capture_panel(self, trainer) -> None:
        if not len(self._px) or self._no_views:
            return
        try:
            probs = trainer.net.predict_proba(self._px)
        except Exception:  # noqa: BLE001  (as for the views)
            return
        self._put(("panel", {"probs": probs, "epoch": trainer.pos.epoch}))

    def _put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer fell behind: lose this item, never wait
            if item[0] == "views":
                self._views_pending.clear()

    def close(self, result=None, error: str | None = None) -> None:
        """The run ended: an ``end`` event, then wait (briefly) for the writer to finish."""
        if self.trainer is None or self.ended:
            self.ended = True
            return
        self.ended = True
        end = {"interrupted": bool(result.interrupted) if result is not None else None,
               "test": {k: v for k, v in (result.test or {}).items() if k != "confusion"} if result else None,
               "error": error, "steps": self.steps, "time": time.time(),
               "hook_seconds": round(self.hook_seconds, 4),
               "train_seconds": round(self.trainer.pos.seconds, 3)}
        try:
            self._queue.put(("end", end), timeout=5)
            self._queue.put(None, timeout=5)
        except queue.Full:
            return
        self._thread.join(timeout=10)

    def status(self) -> dict:
        t = self.trainer
        return {"steps": self.steps, "epoch": self.epoch, "paused": self.paused, "ended": self.ended,
                "iteration": t.pos.iteration if t else 0, "started": t is not None}

    # ---- the writer thread
    def _work(self) -> None:
        folder = live_dir(self.run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(folder / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._write_model(folder)
            while True:
                item = self._queue.get()
                if item is None:
                    return
                kind, payload = item
                t = time.thread_time()
                try:
                    if kind == "views":
                        replace_file(folder / VIEWS, json.dumps(self._render_views(payload)))
                        self._views_pending.clear()
                        self._append({"type": "views", "step": payload["step"]})
                    elif kind == "panel":
                        replace_file(folder / PANEL, json.dumps(self._render_panel(payload)))
                        self._append({"type": "panel", "epoch": payload["epoch"]})
                    else:
                        payload["type"] = kind
                        self._append(payload)
                except (OSError, ValueError, TypeError):
                    self.errors += 1
                    self._views_pending.clear()
                self.writer_seconds += time.thread_time() - t
        finally:
            os.close(self._fd)

    def _append(self, event: dict) -> None:
        event.setdefault("t", time.time())
        os.write(self._fd, (json.dumps(event, default=_plain) + "\n").encode("utf-8"))

    def _write_model(self, folder: Path) -> None:
        info = self.summary or model_info(self.model)
        replace_file(folder / MODEL, json.dumps(info))

    def _render_views(self, p: dict) -> dict:
        names = list(self.trainer.data.class_names)
        px, channels = image_pixels(self._x)
        out = {"step": p["step"], "epoch": p["epoch"], "images": [], "layers": [], "filters": None}
        probs = softmax(p["acts"][self._layers[-1]])
        for i in range(len(self._x)):
            top = int(np.argmax(probs[i]))
            out["images"].append({"pixels": b64(px[i]), "h": px.shape[1], "w": px.shape[2], "c": channels,
                                  "label": _name(names, self._y[i]), "predicted": _name(names, top),
                                  "probability": float(probs[i][top])})
        for layer in self._layers:
            a = np.asarray(p["acts"][layer], np.float32)
            shape = list(a.shape[1:])
            if a.ndim == 2:  # (N, features): one strip per image
                a = a[:, None, None, :]
            elif a.ndim == 3:  # (N, C, L): one-row maps
                a = a[:, :, None, :]
            shown = a[:, :MAX_MAPS]
            maps = normalized_maps(shown)
            out["layers"].append({"name": layer, "shape": shape, "min": float(a.min()), "max": float(a.max()),
                                  "maps": [b64(maps[i]) for i in range(len(maps))], "count": int(a.shape[1]),
                                  "shown": int(shown.shape[1]), "h": int(a.shape[2]), "w": int(a.shape[3])})
        if p["filters"] is not None:
            out["filters"] = {"layer": self._conv, **_filter_tiles(p["filters"], "filters"),
                              **_filter_tiles(p["grads"], "grads")}
        return out

    def _render_panel(self, p: dict) -> dict:
        names = list(self.trainer.data.class_names)
        px, channels = image_pixels(self._px)
        items = []
        for i, probs in enumerate(p["probs"]):
            order = np.argsort(-probs)[:3]
            items.append({"pixels": b64(px[i]), "label": _name(names, self._py[i]),
                          "correct": bool(order[0] == self._py[i]),
                          "top": [[_name(names, k), float(probs[k])] for k in order]})
        return {"epoch": p["epoch"], "h": px.shape[1], "w": px.shape[2], "c": channels, "items": items}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64).reshape(len(logits), -1)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _filter_tiles(w: np.ndarray, key: str) -> dict:
    """Filters (F, C, KH, KW) as tiles: RGB per filter where C == 3, else one grey tile per
    (filter, channel) pair; each tile min-max normalized (as ConvNetJS shows them)."""
    w = np.asarray(w, np.float32)
    if w.ndim == 3:  # 1-D conv (F, C, K)
        w = w[:, :, None, :]
    f, c, kh, kw = w.shape
    lo, hi = float(w.min()), float(w.max())
    if c == 3:
        t = w.reshape(f, 3, kh * kw)
        mn, mx = t.min(axis=(1, 2), keepdims=True), t.max(axis=(1, 2), keepdims=True)
        t = np.round((t - mn) / np.where(mx > mn, mx - mn, 1) * 255).astype(np.uint8)
        tiles = t.reshape(f, 3, kh, kw).transpose(0, 2, 3, 1)[:MAX_FILTERS]
        channels = 3
    else:
        tiles = normalized_maps(w.reshape(f * c, kh, kw))[:MAX_FILTERS]
        channels = 1
    return {key: {"tiles": b64(tiles), "count": int(len(tiles)), "total": int(f * (1 if c == 3 else c)),
                  "h": kh, "w": kw, "c": channels, "min": lo, "max": hi}}


def _name(names: list[str], c) -> str:
    c = int(c)
    return names[c] if c < len(names) else str(c)


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON")


def model_info(model) -> dict:
    """The summary table (text and rows), the drawing (SVG) of a model."""
    from ..lang.layout import svg

    try:
        drawing = svg(model.analysis)
    except Exception as err:  # a drawing problem must not cost the live page  # noqa: BLE001
        drawing = f"<p>no drawing: {err}</p>"
    return {"file": model.filename, "summary": model.summary_text(), "svg": drawing}


# ---------------------------------------------------------------------------
# reading a run folder
# ---------------------------------------------------------------------------


class RunFollower:
    """Reads a run folder's live state as it grows: ``poll()`` returns the events appended
    since the last call (whole lines only). A run trained without ``--live`` has no
    ``live/`` folder: its ``history.json`` stands in (one ``epoch`` event per row)."""

    def __init__(self, run: Path | None):
        self.run = Path(run) if run is not None else None
        self.offset = 0
        self._history_sent = False

    def poll(self) -> list[dict]:
        if self.run is None:
            return []
        path = live_dir(self.run) / EVENTS
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self._history_events()
        except OSError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in chunk[: end + 1].splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a damaged line (a crash mid-write): skip it
        return events

    def _history_events(self) -> list[dict]:
        if self._history_sent or not (self.run / "history.json").exists():
            return []
        try:
            rows = json.loads((self.run / "history.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        self._history_sent = True
        return [{"type": "epoch", **row} for row in rows] + [{"type": "end", "interrupted": None}]

    def read(self, name: str) -> str | None:
        if self.run is None:
            return None
        try:
            return (live_dir(self.run) / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
