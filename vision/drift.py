"""Data drift between a model version's reference frames and a site's recent frames, with Evidently.

Reference: what serving would have recorded for the version's held-out frames at training time (the
artifact `reference.json`). Current: what serving recorded for the site's last frames. Both are rows of
the same columns: the image-quality features (brightness, contrast, sharpness, colour), the
prediction's confidence and class, the novelty score and whether the frame was unfamiliar (the
novelty rate). Evidently's data drift preset tests each column (Kolmogorov-Smirnov on numbers,
chi-square on the class, a Z-test on the unfamiliar share) and the site has drifted when at least a
given share of the columns drift. The HTML report is Evidently's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vision.quality import FEATURES

NUMERICAL = (*FEATURES, "confidence", "novelty")
CATEGORICAL = ("label", "unfamiliar")
# Per-column p-value below which Evidently calls the column drifted. Stricter than its 0.05 default:
# the quality columns move together (brightness and the colour means), so one chance finding would
# otherwise drag several columns over with it; a real shift gives p-values far below either.
DEFAULT_P_VALUE = 0.01


@dataclass
class ColumnDrift:
    column: str
    column_type: str  # numerical or categorical
    stattest: str
    threshold: float | None
    score: float | None
    drifted: bool


@dataclass
class DriftResult:
    drifted: bool
    drift_share: float  # of the checked columns, the share that drifted
    columns: list[ColumnDrift]
    reference_frames: int
    current_frames: int
    unfamiliar_rate_reference: float | None
    unfamiliar_rate_current: float | None
    html: bytes = field(repr=False, default=b"")

    @property
    def drifted_columns(self) -> int:
        return sum(c.drifted for c in self.columns)


def _frame(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    import pandas as pd

    data: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            value = row.get(c)
            if c == "unfamiliar":
                value = "yes" if value else "no"
            data[c].append(value)
    return pd.DataFrame(data)


def _rate(rows: Sequence[dict[str, Any]]) -> float | None:
    flags = [bool(r.get("unfamiliar")) for r in rows if r.get("unfamiliar") is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


def checked_columns(current: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(numerical, categorical) columns to test. The novelty columns only when every current frame has
    them: predictions recorded before novelty existed (or by an uncalibrated version) carry none."""
    has_novelty = all(r.get("novelty") is not None for r in current)
    numerical = [c for c in NUMERICAL if has_novelty or c != "novelty"]
    categorical = [c for c in CATEGORICAL if has_novelty or c != "unfamiliar"]
    return numerical, categorical


def check_drift(reference: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]], *, column_share: float,
                p_value: float = DEFAULT_P_VALUE, title: str = "Sightline drift check") -> DriftResult:
    """Run Evidently's data drift preset on the two sets of rows; the verdict is drift when at least
    `column_share` of the checked columns drifted."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical, categorical = checked_columns(current)
    columns = [*numerical, *categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(columns=columns, drift_share=column_share, num_method="ks",
                             per_column_method={"unfamiliar": "z"} if "unfamiliar" in columns else None,
                             threshold=p_value)
    report = Report([preset], include_tests=True)
    snapshot = report.run(Dataset.from_pandas(_frame(current, columns), data_definition=definition),
                          Dataset.from_pandas(_frame(reference, columns), data_definition=definition), name=title)
    result = snapshot.dict()
    scores: dict[str, tuple[str, float | None, float | None]] = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            value = metric.get("value")
            scores[config["column"]] = (str(config.get("method") or ""), config.get("threshold"),
                                        float(value) if isinstance(value, int | float) else None)
    failed: dict[str, bool] = {}
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift"):
            failed[params["column"]] = str(test["status"]).endswith("FAIL")
    drift = [ColumnDrift(c, "numerical" if c in numerical else "categorical", scores.get(c, ("", None, None))[0],
                         scores.get(c, ("", None, None))[1], scores.get(c, ("", None, None))[2], failed.get(c, False))
             for c in columns]
    share = sum(c.drifted for c in drift) / len(drift)
    return DriftResult(
        drifted=share >= column_share, drift_share=round(share, 4), columns=drift,
        reference_frames=len(reference), current_frames=len(current),
        unfamiliar_rate_reference=_rate(reference), unfamiliar_rate_current=_rate(current),
        html=snapshot.get_html_str(as_iframe=False).encode(),
    )
