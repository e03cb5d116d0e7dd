"""`sightline retrain` follows a run with a progress bar (epoch, loss, ETA) from the workflow's
`progress` query until the run closes."""

from __future__ import annotations

from typing import Any, cast

from api.services.retraining import RetrainingService
from cli import retrain
from workflows.retraining_types import RetrainingProgress, TrainingProgress


class ScriptedRun:
    """Answers `progress` as a run would over its life: snapshot, three epochs, done."""

    def __init__(self) -> None:
        self.states: list[tuple[str, RetrainingProgress | None]] = [
            ("running", None),
            ("running", RetrainingProgress("snapshot", "snap-1")),
            *(("running", RetrainingProgress("training", "snap-1", TrainingProgress(
                epoch=e, epochs=3, step=e * 10, steps=30, loss=1.0 / e, eta_s=(3 - e) * 5.0)))
              for e in (1, 2, 3)),
            ("completed", RetrainingProgress("done", "snap-1", TrainingProgress(epoch=3, epochs=3, step=30, steps=30),
                                             candidate_version="v9", outcome="candidate")),
        ]
        self.asked = 0

    async def progress(self, workflow_id: str) -> tuple[str, Any]:
        state = self.states[min(self.asked, len(self.states) - 1)]
        self.asked += 1
        return state


async def test_the_cli_follows_a_run_until_it_closes(capsys):
    run = ScriptedRun()
    state, progress = await retrain.follow(cast(RetrainingService, run), "retraining-snap-1", poll_s=0)
    assert state == "completed" and progress.candidate_version == "v9"
    assert run.asked == len(run.states)
    shown = capsys.readouterr().out
    assert "epoch 3/3" in shown and "100%" in shown


def test_the_bar_shows_epoch_loss_and_eta():
    fields = retrain._describe("running", RetrainingProgress("training", "s", TrainingProgress(
        epoch=2, epochs=6, step=20, steps=60, loss=0.12345, eta_s=41.6)))
    assert fields == {"description": "training", "loss": "0.1235", "eta": "42s", "epoch": "2/6"}
    assert retrain._describe("running", None)["description"] == "running"
