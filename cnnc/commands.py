"""Commands that run networks (train, eval, predict, bench); filled in with the runtime."""
from __future__ import annotations


def add_runtime_commands(sub, model_args) -> None:
    return None


def run_command(args) -> int:
    raise AssertionError(args.command)
