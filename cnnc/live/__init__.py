"""Watch a network learn: the live training page (``cnnc train --live``, ``cnnc serve``) and
the notebook's live curves (``cnnc.fit(..., live=True)``).

:mod:`.state` writes a run's live state into ``<run>/live/`` (rank 0, off the training thread)
and reads it back; :mod:`.server` serves the page (``static/``) from the standard library's
HTTP server with Server-Sent Events; :mod:`.notebook` updates one notebook output cell.
This package sits beside :mod:`cnnc.tools` and :mod:`cnnc.viz` (it imports neither) and
above :mod:`cnnc.training`, whose :class:`~cnnc.training.train.Hook` it implements.
"""
from __future__ import annotations

from .session import LiveSession, serve_run

__all__ = ["LiveSession", "serve_run"]
