"""Training augmentation, applied in place to a batch: random crop with zero padding,
horizontal flip."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...errors import UsageError
from .catalog import ALIASES


def random_crop(x: np.ndarray, pad: int, rng: np.random.Generator,
                scratch: np.ndarray | None = None) -> None:
    """In place: each image of ``x`` ``(B, C, H, W)`` becomes a random ``H x W`` crop of itself
    zero-padded by ``pad`` on every side (offsets uniform in ``0..2*pad``, from ``rng``).
    ``scratch``: an optional ``(C, H, W)`` array of x's dtype to avoid an allocation."""
    if pad <= 0 or len(x) == 0:
        return
    b, c, h, w = x.shape
    if pad >= h or pad >= w:
        raise UsageError(f"crop padding {pad} must be smaller than the image ({h}x{w})")
    if scratch is None:
        scratch = np.empty((c, h, w), dtype=x.dtype)
    shifts = rng.integers(-pad, pad + 1, size=(b, 2))
    for i in range(b):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        if dy == 0 and dx == 0:
            continue
        scratch.fill(0)
        # output[r, s] = input[r + dy, s + dx] where inside, else 0
        scratch[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            x[i, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        x[i] = scratch


def random_flip(x: np.ndarray, rng: np.random.Generator,
                scratch: np.ndarray | None = None, p: float = 0.5) -> None:
    """In place: mirror each image of ``x`` ``(B, C, H, W)`` left-right with probability ``p``."""
    if len(x) == 0:
        return
    if scratch is None:
        scratch = np.empty(x.shape[1:], dtype=x.dtype)
    flips = rng.random(len(x)) < p
    for i in np.flatnonzero(flips):
        scratch[...] = x[i, :, :, ::-1]
        x[i] = scratch


@dataclass(frozen=True)
class Augmentation:
    """Per-batch training augmentation: random crop with zero padding ``crop_pad`` (0 =
    off), then horizontal flip (p = 0.5). Falsy when it does nothing."""

    crop_pad: int = 0
    flip: bool = False

    def __bool__(self) -> bool:
        return self.crop_pad > 0 or self.flip

    def apply(self, x: np.ndarray, rng: np.random.Generator,
              scratch: np.ndarray | None = None) -> None:
        """Augment the batch ``x`` in place (crop offsets are drawn first, then flips)."""
        if scratch is None and self:
            scratch = np.empty(x.shape[1:], dtype=x.dtype)
        if self.crop_pad > 0:
            random_crop(x, self.crop_pad, rng, scratch)
        if self.flip:
            random_flip(x, rng, scratch)

    def describe(self) -> str:
        parts = ([f"crop(pad={self.crop_pad})"] if self.crop_pad else []) + \
                (["flip"] if self.flip else [])
        return "+".join(parts) or "none"


def augmentations_for(dataset_name: str) -> Augmentation:
    """Default training augmentation for a data set: crop(pad=4)+flip for CIFAR-10 (the
    ResNet paper's recipe); none for everything else (flipping digits or letters is
    wrong, and for unknown data sets nothing is assumed)."""
    if ALIASES.get(dataset_name.lower()) == "cifar10":
        return Augmentation(crop_pad=4, flip=True)
    return Augmentation()


def parse_augmentation(text: str) -> Augmentation:
    """Parse a flag value: ``none``, ``flip``, ``crop`` (pad 4), ``crop2``, ``crop=2``, or a
    combination joined by ``,`` or ``+`` (``crop4,flip``)."""
    crop, flip = 0, False
    t = text.strip().lower()
    if t in ("", "none", "off", "no"):
        return Augmentation()
    for part in re.split(r"[,+\s]+", t):
        if not part:
            continue
        if part == "flip":
            flip = True
            continue
        m = re.fullmatch(r"crop(?:=?(\d+))?", part)
        if m:
            crop = int(m.group(1)) if m.group(1) else 4
            continue
        raise UsageError(f"unknown augmentation {part!r} in {text!r}",
                         hint="use none, flip, crop, cropN or crop=N, joined by commas")
    return Augmentation(crop_pad=crop, flip=flip)
