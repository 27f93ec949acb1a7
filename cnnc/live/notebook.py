"""``cnnc.fit(model, ..., live=True)`` in Jupyter: one output cell with the loss and accuracy
curves, redrawn in place as the run trains (an IPython display handle: no widget extension,
nothing printed twice). The curves are a small SVG made here in pure Python."""
from __future__ import annotations

import time
from html import escape
from typing import Any

from ..training.train import Hook, train

REDRAW_SECONDS = 1.0


def fit(model, *, live: bool = False, **kwargs: Any):
    """:func:`cnnc.training.train.train` (see there for every argument); ``live=True``: in a
    notebook, one output shows the curves and the progress as the run trains."""
    if not live:
        return train(model, **kwargs)
    curves = NotebookCurves(title=str(getattr(model, "filename", "")))
    hooks = list(kwargs.pop("hooks", ())) + [curves]
    try:
        result = train(model, hooks=hooks, **kwargs)
    except BaseException:
        curves.finish("stopped by an error")
        raise
    test = result.test.get("accuracy") if result.test else None
    curves.finish(("interrupted" if result.interrupted else "finished")
                  + (f"; test accuracy {test:.4f}" if test is not None else ""))
    return result


class NotebookCurves(Hook):
    """Keeps the curves of a run and shows them in one notebook output (a display handle);
    outside IPython it keeps them only (``svg()`` draws them)."""

    def __init__(self, title: str = ""):
        self.title = title
        self.train: list[tuple[float, float, float]] = []  # x (epochs), loss, accuracy
        self.val: list[tuple[float, float | None, float | None]] = []
        self.group = [0.0, 0, 0]
        self.note = "starting"
        self._last = 0.0
        self._handle = None
        try:
            from IPython.display import HTML, display

            self._HTML = HTML
            self._handle = display(HTML(self.html()), display_id=True)
        except ImportError:
            self._HTML = None

    def on_step(self, trainer, loss: float, correct: int) -> None:
        g = self.group
        g[0] += loss * trainer.batch
        g[1] += correct
        g[2] += trainer.batch
        now = time.perf_counter()
        if now - self._last >= REDRAW_SECONDS / 4 or trainer.pos.iteration == trainer.steps_per_epoch:
            x = trainer.pos.epoch + trainer.pos.iteration / max(trainer.steps_per_epoch, 1)
            self.train.append((x, g[0] / g[2], g[1] / g[2]))
            self.group = [0.0, 0, 0]
            self.note = (f"epoch {trainer.pos.epoch + 1}/{trainer.cfg.epochs}, step {trainer.pos.iteration}/"
                         f"{trainer.steps_per_epoch}")
            if now - self._last >= REDRAW_SECONDS:
                self._last = now
                self.update()

    def on_epoch(self, trainer, row: dict, val: dict | None) -> None:
        self.val.append((row["epoch"], row.get("val_loss"), row.get("val_accuracy")))
        self.note = f"epoch {row['epoch']}/{trainer.cfg.epochs} done"
        self.update()

    def finish(self, note: str) -> None:
        self.note = note
        self.update()

    def update(self) -> None:
        if self._handle is not None:
            self._handle.update(self._HTML(self.html()))

    def html(self) -> str:
        return (f'<div class="cnnc-live"><b>{escape(self.title)}</b> {escape(self.note)}<br>'
                f"{self.svg()}</div>")

    def svg(self) -> str:
        loss = _chart("loss", [(x, l) for x, l, _ in self.train], [(x, l) for x, l, _ in self.val if l is not None],
                      log=True)
        acc = _chart("accuracy", [(x, a) for x, _, a in self.train], [(x, a) for x, _, a in self.val if a is not None],
                     lo=0.0, hi=1.0)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="240" font-family="sans-serif" '
                f'font-size="11"><g>{loss}</g><g transform="translate(380,0)">{acc}</g></svg>')


def _chart(name: str, train_pts, val_pts, lo: float | None = None, hi: float | None = None,
           log: bool = False, w: int = 370, h: int = 240) -> str:
    import math

    def ty(v):
        return math.log10(max(v, 1e-8)) if log else v

    L, R, T, B = 48, 8, 22, 30
    pts = list(train_pts) + list(val_pts)
    out = [f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>',
           f'<text x="{L}" y="14" font-weight="bold">{name}</text>']
    if not pts:
        return "".join(out) + f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" fill="#888">waiting</text>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0 = ty(lo) if lo is not None else min(ty(p[1]) for p in pts)
    y1 = ty(hi) if hi is not None else max(ty(p[1]) for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1e-3

    def X(x):
        return L + (x - x0) / (x1 - x0) * (w - L - R)

    def Y(y):
        return T + (1 - (ty(y) - y0) / (y1 - y0)) * (h - T - B)

    out.append(f'<rect x="{L}" y="{T}" width="{w - L - R}" height="{h - T - B}" fill="none" stroke="#999"/>')
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        yy = T + (1 - k / 4) * (h - T - B)
        label = f"{10 ** v:.3g}" if log else f"{v:.2f}"
        out.append(f'<line x1="{L}" x2="{w - R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                   f'<text x="{L - 4}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    for k in range(5):
        v = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{X(v):.1f}" y="{h - B + 14}" text-anchor="middle">{v:.3g}</text>')
    out.append(f'<text x="{(L + w - R) / 2}" y="{h - 4}" text-anchor="middle">epoch</text>')
    for series, colour, dots in ((train_pts, "#3a7bd5", False), (val_pts, "#e8743b", True)):
        if not series:
            continue
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in series)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if dots or len(series) == 1:
            out += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{colour}"/>' for x, y in series]
    out.append(f'<rect x="{w - 150}" y="8" width="12" height="4" fill="#3a7bd5"/><text x="{w - 134}" y="13">train</text>'
               f'<rect x="{w - 96}" y="8" width="12" height="4" fill="#e8743b"/><text x="{w - 80}" y="13">validation</text>')
    return "".join(out)
