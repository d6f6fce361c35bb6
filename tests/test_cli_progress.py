"""The CLI's progress bar follows the stages a flow announces (validation, then sharding), one row each."""

from __future__ import annotations


def test_counter_gives_each_announced_stage_its_row(monkeypatch):
    from cxrflow_cli import progress as cli_progress
    from flows import progress

    made = []
    real = cli_progress._bar
    monkeypatch.setattr(cli_progress, "_bar", lambda *fields: made.append(real(*fields)) or made[-1])
    with cli_progress.counter("samples sharded"):
        progress.notify_stage("validation")  # nothing shown yet: the first row becomes the stage's
        progress.notify(2, 5)
        progress.notify_fields({"description": "validation: GX: sample expectations"})
        progress.notify(5, 5)
        progress.notify_stage("samples sharded")
        progress.notify(3, 10)
    rows = [(t.description, t.completed, t.total) for t in made[0].tasks]
    assert rows == [("validation: GX: sample expectations", 5, 5), ("samples sharded", 3, 10)]
    assert not progress.listeners  # the board left no listener behind


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_long_stage_prints_a_line_at_least_every_30_s():
    """No wall clock: a fake clock drives the board; the ticker's job is `tick()` once a second."""
    from cxrflow_cli.progress import PROGRESS_LINE_EVERY_S, Board

    clock, lines = _Clock(), []
    board = Board("samples sharded", bar=None, clock=clock, write=lines.append)
    board.stage("validation")
    board.update(1, 5)
    clock.now = 29.0
    board.tick()
    assert lines == []  # a short stage prints nothing
    for t in range(30, 121):  # 90 s of a stage with no update (one GX suite): the ticker alone
        clock.now = float(t)
        board.tick()
    assert len(lines) == 4 and PROGRESS_LINE_EVERY_S == 30.0  # at 30, 60, 90, 120 s
    assert lines[0].startswith("progress: validation: 1/5") and lines[-1].endswith("120s")
    board.stage("samples sharded")
    board.update(7, 10)
    clock.now = 150.0
    board.tick()
    assert lines[-1].startswith("progress: samples sharded: 7/10")


def test_training_steps_reach_the_board_as_lines_off_a_terminal():
    from cxrflow_cli.progress import Board

    clock, lines = _Clock(), []
    board = Board("training", ("loss", "sps"), bar=None, clock=clock, write=lines.append)
    for step in range(1, 4):
        clock.now = 31.0 * step
        board.step({"stage": 1, "step": step, "total_steps": 3, "loss": 1.5, "samples_per_s": 2.0})
    assert len(lines) == 3 and lines[-1].startswith("progress: stage 1: 3/3") and "loss 1.5000" in lines[-1]


def test_one_listener_list():
    from flows import progress

    assert [n for n in vars(progress) if n.endswith("listeners")] == ["listeners"]
