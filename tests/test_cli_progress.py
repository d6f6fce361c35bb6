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
    assert not progress.stage_listeners and not progress.listeners  # the bar left no listener behind
