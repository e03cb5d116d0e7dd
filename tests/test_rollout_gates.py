"""The rule that judges a rollout stage (workflows.rollout_types.judge), on figures alone: each gate
fails on its own; the shadow stage's agreement with production is overruled only when enough reviewed
labels show the candidate corrected less often than production (a model retrained after drift disagrees
with the drifted production by design); rollouts begun before that rule keep the old one."""

from __future__ import annotations

import pytest

from workflows.rollout_types import GateThresholds, Stage, StageKind, StageMetrics, judge

SHADOW = Stage(StageKind.SHADOW, 0.5, 100, 0.0)
CANARY = Stage(StageKind.CANARY, 0.25, 100, 0.0)
T = GateThresholds()


def healthy(**changes: object) -> StageMetrics:
    figures: dict[str, object] = dict(frames=200, p95_infer_ms=8.0, compared=200, agreement=0.97, unfamiliar_rate=0.0,
                                      production_unfamiliar_rate=0.0, low_confidence_rate=0.05,
                                      production_low_confidence_rate=0.05)
    return StageMetrics(**{**figures, **changes})  # type: ignore[arg-type]


def failed(stage: Stage, m: StageMetrics, **kw: bool) -> set[str]:
    gate = judge(stage, m, T, "2026-12-02T00:00:00+00:00", **kw)
    assert gate.passed == (not any(not c.passed for c in gate.checks))
    return {c.name for c in gate.checks if not c.passed}


def test_a_healthy_stage_passes_and_each_gate_fails_on_its_own():
    assert failed(SHADOW, healthy()) == set() and failed(CANARY, healthy()) == set()
    assert failed(CANARY, healthy(errors=10, error_rate=0.05)) == {"error_rate"}
    assert failed(CANARY, healthy(p95_infer_ms=2500.0)) == {"p95_infer_ms"}
    assert failed(SHADOW, healthy(agreement=0.3)) == {"agreement"}
    assert failed(CANARY, healthy(unfamiliar_rate=0.2)) == {"unfamiliar_rate"}
    assert failed(CANARY, healthy(low_confidence_rate=0.4)) == {"low_confidence_rate"}
    assert failed(CANARY, healthy(labelled=40, correction_rate=0.3, production_correction_rate=0.1)) == {
        "correction_rate"}


def test_agreement_is_judged_in_the_shadow_stage_only():
    assert failed(CANARY, healthy(agreement=0.1)) == set()


@pytest.mark.parametrize(("labelled", "mine", "theirs", "overruled"), [
    (40, 0.02, 0.70, True),     # retrained after drift: reviewers side with the candidate
    (40, 0.70, 0.70, False),    # no better than production by the labels
    (40, 0.75, 0.05, False),    # worse (trained on shuffled labels): corrected far more often
    (5, 0.00, 0.70, False),     # too few labels to say
    (40, 0.02, None, False),    # production's answers unlabelled: nothing to compare
])
def test_the_reviewers_can_overrule_a_disagreement(labelled, mine, theirs, overruled):
    m = healthy(agreement=0.24, labelled=labelled, correction_rate=mine, production_correction_rate=theirs)
    assert ("agreement" not in failed(SHADOW, m)) is overruled
    # Rollouts begun before the rule (their histories replay with it off) judge agreement alone.
    assert "agreement" in failed(SHADOW, m, reviews_overrule_agreement=False)
