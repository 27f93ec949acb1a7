"""Small wording helpers for messages (plain functions, no imports)."""
from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 kernel``, ``2 kernels``, ``1,200 images``: a count with its noun in the right number
    (``plural_form`` for nouns that do not take an -s)."""
    word = noun if count == 1 else (plural_form or noun + "s")
    return f"{count:,} {word}"
