"""A live page for one training run in this process (``cnnc train --live``), or for a run
folder (``cnnc serve``)."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from .server import LiveServer, warn_host
from .state import LiveWriter, model_info


class LiveSession:
    """The writer hook and the server of ``cnnc train --live``: ``hooks`` go to
    :func:`cnnc.training.train.train`, ``bind(trainer)`` is not needed (the writer learns the
    run folder and the controls from the first step), ``close(result)`` after training."""

    def __init__(self, model, *, host: str = "127.0.0.1", port: int = 0, log=None):
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.writer = LiveWriter(model)
        self.server = LiveServer(lambda: self.writer.run_dir, host=host, port=port,
                                 controls=_LateControls(self.writer), status=self.writer.status,
                                 title=Path(model.filename).name)
        warn_host(host)

    @property
    def hooks(self) -> list:
        return [self.writer]

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "LiveSession":
        self.server.start()
        self.log(f"live page: {self.url}")
        return self

    def close(self, result=None, error: str | None = None) -> None:
        """The run ended (however): write its end, let open pages see it, stop serving."""
        try:
            self.writer.close(result, error)
        finally:
            self.server.close()


class _LateControls:
    """The trainer's :class:`~cnnc.training.train.Controls`, once training has started."""

    def __init__(self, writer: LiveWriter):
        self.writer = writer
        self._lock = threading.Lock()

    def request(self, action, value=None) -> None:
        from ..errors import UsageError

        t = self.writer.trainer
        if t is None:
            raise UsageError("training has not started yet (kernels may be compiling); try again")
        if self.writer.ended:
            raise UsageError("the run has ended")
        if t.world.size > 1 and action in ("pause", "resume", "lr"):
            raise UsageError(f"{action} works on a single-process run only (the {t.world.size} ranks "
                             "would drift apart); save and stop work")
        t.controls.request(action, value)


def serve_run(run: str | Path, *, host: str = "127.0.0.1", port: int = 0, log=None) -> LiveServer:
    """A read-only page of a run folder: a finished run, or one that trains in another process
    (it follows ``<run>/live/``); a run trained without ``--live`` shows its history."""
    from ..errors import UsageError

    folder = Path(run)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{run}: no such run folder")
    if not ((folder / "live").is_dir() or (folder / "history.json").exists()
            or any(folder.glob("*.npz")) or any(folder.glob("*.safetensors"))):
        raise UsageError(f"{run}: not a run folder (no live/, history.json or checkpoint)",
                         hint="give a folder made by cnnc train, e.g. runs/digits")

    def info():
        return _model_from_checkpoint(folder)

    server = LiveServer(folder, host=host, port=port, title=folder.name, model_info=info)
    warn_host(host)
    return server


def _model_from_checkpoint(folder: Path) -> str | None:
    """model.json's text for a run trained without --live: the model compiled from the
    checkpoint's copy of its source."""
    import json

    from ..compiler import compile as compile_text
    from ..training.runs import find_checkpoint, load_training_checkpoint

    try:
        _, meta = load_training_checkpoint(find_checkpoint(folder), named=folder)
        model = compile_text(meta["model_text"], filename=meta.get("model_file") or "<model>",
                             input=tuple(meta["input_shape"]), classes=meta.get("classes"))
        return json.dumps(model_info(model))
    except Exception:  # noqa: BLE001  (a page without the model table is still a page)
        return None
