"""In-process progress listeners (e.g. the CLI's progress bar), called with (done, total).

Kept in its own module and reached as `progress.notify(...)`: a flow function is pickled by value when it
travels to worker processes, and a module reference pickles by name, so the listeners never travel.
"""

from __future__ import annotations

from collections.abc import Callable

listeners: list[Callable[[int, int], None]] = []


def notify(done: int, total: int) -> None:
    for listener in listeners:
        listener(done, total)


# Per-step rows of a training run ({stage, step, total_steps, loss, samples_per_s, ...}), same pattern.
step_listeners: list[Callable[[dict], None]] = []


def notify_step(row: dict) -> None:
    for listener in step_listeners:
        listener(row)


# Extra figures for the current bar (e.g. {"cost": "$0.12"}; "description" renames it), same pattern.
field_listeners: list[Callable[[dict], None]] = []


def notify_fields(fields: dict) -> None:
    for listener in field_listeners:
        listener(fields)


# A new stage of the same command (validation, then sharding): the CLI starts a new bar row. Same pattern.
stage_listeners: list[Callable[[str], None]] = []


def notify_stage(description: str) -> None:
    for listener in stage_listeners:
        listener(description)
